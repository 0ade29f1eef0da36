//! Self-contained HTML report: inline CSS, inline SVG figures, optional base64 PNG links.
//! Nothing is fetched from the network when the file is opened.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::error::{ReportError, Result};
use crate::render::Figure;

/// A table cell. Numbers are right-aligned and formatted compactly; NaN shows as "–".
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text, left-aligned.
    Text(String),
    /// A float.
    Number(f64),
    /// An integer.
    Int(i64),
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Number(v)
    }
}
impl From<f32> for Cell {
    fn from(v: f32) -> Self {
        Cell::Number(v as f64)
    }
}
impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        i64::try_from(v).map(Cell::Int).unwrap_or(Cell::Number(v as f64))
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::from(v as u64)
    }
}
impl From<i32> for Cell {
    fn from(v: i32) -> Self {
        Cell::Int(v as i64)
    }
}

#[derive(Debug, Clone)]
enum Block {
    Section {
        heading: String,
        text: String,
    },
    Figure {
        name: String,
        title: String,
        svg: String,
        png: Option<Vec<u8>>,
        no_data: Option<String>,
        interactive: Option<String>,
    },
    Table {
        caption: String,
        columns: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Links {
        heading: String,
        links: Vec<Link>,
    },
    Facts {
        heading: String,
        facts: Vec<(String, String)>,
    },
}

/// A link to another file (another report), with a note shown after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The link text.
    pub label: String,
    /// A relative path (or `file:` URL); never a network address.
    pub href: String,
    /// Plain text after the link (e.g. which stage and key it comes from).
    pub note: String,
}

/// An HTML report assembled block by block, in order.
#[derive(Debug, Clone)]
pub struct Report {
    title: String,
    blocks: Vec<Block>,
    png_links: bool,
}

impl Report {
    /// An empty report titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Report { title: title.into(), blocks: Vec::new(), png_links: true }
    }

    /// Whether each figure gets a "PNG" download link carrying the PNG as a base64 data
    /// URI (default: on; turn off to keep the HTML small).
    pub fn with_png_links(mut self, on: bool) -> Self {
        self.png_links = on;
        self
    }

    /// A heading and plain text (blank lines separate paragraphs; no markup is
    /// interpreted).
    pub fn add_section(&mut self, heading: impl Into<String>, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Section { heading: heading.into(), text: text.into() });
        self
    }

    /// A figure, inline as SVG (with its PNG as a link if enabled).
    pub fn add_figure(&mut self, fig: &Figure) -> &mut Self {
        self.blocks.push(Block::Figure {
            name: fig.name.clone(),
            title: fig.title.clone(),
            svg: fig.svg.clone(),
            png: self.png_links.then(|| fig.png.clone()),
            no_data: fig.no_data.clone(),
            interactive: fig.interactive.clone(),
        });
        self
    }

    /// A heading and a list of links to other local files (e.g. the reports of other
    /// stages). Links to network addresses are refused: the report must open offline.
    pub fn add_links(&mut self, heading: impl Into<String>, links: Vec<Link>) -> Result<&mut Self> {
        let heading = heading.into();
        if let Some(l) = links.iter().find(|l| l.href.contains("://") && !l.href.starts_with("file://")) {
            return Err(ReportError::Table { caption: heading, reason: format!("`{}` is not a local path", l.href) });
        }
        self.blocks.push(Block::Links { heading, links });
        Ok(self)
    }

    /// A heading and name–value pairs (provenance: versions, stages, keys, parameters).
    pub fn add_facts(&mut self, heading: impl Into<String>, facts: Vec<(String, String)>) -> &mut Self {
        self.blocks.push(Block::Facts { heading: heading.into(), facts });
        self
    }

    /// A table; every row must have one cell per column.
    pub fn add_table<S: AsRef<str>>(
        &mut self,
        caption: impl Into<String>,
        columns: &[S],
        rows: Vec<Vec<Cell>>,
    ) -> Result<&mut Self> {
        let caption = caption.into();
        if columns.is_empty() {
            return Err(ReportError::Table { caption, reason: "no columns".into() });
        }
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != columns.len()) {
            return Err(ReportError::Table {
                caption,
                reason: format!("row {i} has {} cells, the header has {} columns", r.len(), columns.len()),
            });
        }
        let columns = columns.iter().map(|c| c.as_ref().to_string()).collect();
        self.blocks.push(Block::Table { caption, columns, rows });
        Ok(self)
    }

    /// The whole document. Deterministic: the same report gives the same bytes.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(64 * 1024);
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        let _ = writeln!(h, "<title>{}</title>", esc(&self.title));
        let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>\n<main>");
        let _ = writeln!(h, "<h1>{}</h1>", esc(&self.title));

        let ids = self.block_ids();
        let toc: Vec<(usize, String)> = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| match b {
                Block::Section { heading, .. } => (i, heading.clone()),
                Block::Figure { title, .. } => (i, format!("Figure: {title}")),
                Block::Table { caption, .. } => (i, format!("Table: {caption}")),
                Block::Links { heading, .. } | Block::Facts { heading, .. } => (i, heading.clone()),
            })
            .collect();
        if toc.len() > 1 {
            h.push_str("<nav><h2>Contents</h2><ol>\n");
            for (i, label) in &toc {
                let _ = writeln!(h, "<li><a href=\"#{}\">{}</a></li>", ids[*i], esc(label));
            }
            h.push_str("</ol></nav>\n");
        }

        for (i, b) in self.blocks.iter().enumerate() {
            let id = &ids[i];
            match b {
                Block::Section { heading, text } => {
                    let _ = writeln!(h, "<section id=\"{id}\">\n<h2>{}</h2>", esc(heading));
                    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
                        let _ = writeln!(h, "<p>{}</p>", esc(&para.split_whitespace().collect::<Vec<_>>().join(" ")));
                    }
                    h.push_str("</section>\n");
                }
                Block::Figure { name, title, svg, png, no_data, interactive } => {
                    let _ = writeln!(h, "<figure id=\"{id}\">\n<div class=\"plot\">{}</div>", inline_svg(svg));
                    if let Some(spec) = interactive {
                        // `</` would end the script element early.
                        let _ = writeln!(
                            h,
                            "<script type=\"application/json\" class=\"chart-spec\">{}</script>",
                            spec.replace("</", "<\\/")
                        );
                    }
                    let _ = write!(h, "<figcaption>{}", esc(title));
                    if let Some(reason) = no_data {
                        let _ = write!(h, " <span class=\"nodata\">(no data: {})</span>", esc(reason));
                    }
                    if let Some(png) = png {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
                        let _ = write!(
                            h,
                            " <a class=\"png\" download=\"{}.png\" href=\"data:image/png;base64,{b64}\">PNG</a>",
                            esc(name)
                        );
                    }
                    h.push_str("</figcaption>\n</figure>\n");
                }
                Block::Table { caption, columns, rows } => {
                    let _ =
                        writeln!(h, "<div class=\"table\" id=\"{id}\"><table>\n<caption>{}</caption>", esc(caption));
                    h.push_str("<thead><tr>");
                    for c in columns {
                        let _ = write!(h, "<th>{}</th>", esc(c));
                    }
                    h.push_str("</tr></thead>\n<tbody>\n");
                    for r in rows {
                        h.push_str("<tr>");
                        for c in r {
                            match c {
                                Cell::Text(s) => {
                                    let _ = write!(h, "<td>{}</td>", esc(s));
                                }
                                Cell::Int(v) => {
                                    let _ = write!(h, "<td class=\"num\">{v}</td>");
                                }
                                Cell::Number(v) => {
                                    let _ = write!(h, "<td class=\"num\">{}</td>", fmt_cell(*v));
                                }
                            }
                        }
                        h.push_str("</tr>\n");
                    }
                    h.push_str("</tbody>\n</table></div>\n");
                }
                Block::Links { heading, links } => {
                    let _ = writeln!(h, "<section id=\"{id}\" class=\"links\">\n<h2>{}</h2>\n<ul>", esc(heading));
                    for l in links {
                        let _ = writeln!(
                            h,
                            "<li><a href=\"{}\">{}</a> <span class=\"note\">{}</span></li>",
                            esc(&l.href),
                            esc(&l.label),
                            esc(&l.note)
                        );
                    }
                    h.push_str("</ul>\n</section>\n");
                }
                Block::Facts { heading, facts } => {
                    let _ = writeln!(h, "<section id=\"{id}\" class=\"facts\">\n<h2>{}</h2>\n<dl>", esc(heading));
                    for (k, v) in facts {
                        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
                    }
                    h.push_str("</dl>\n</section>\n");
                }
            }
        }
        let _ = writeln!(h, "<footer>saepipe report · saepipe-report {}</footer>", env!("CARGO_PKG_VERSION"));
        if self.blocks.iter().any(|b| matches!(b, Block::Figure { interactive: Some(_), .. })) {
            let _ = writeln!(h, "<script>{}</script>", SCRIPT.replace("</", "<\\/"));
        }
        h.push_str("</main>\n</body>\n</html>\n");
        h
    }

    /// Unique, stable anchor ids derived from headings.
    fn block_ids(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.blocks
            .iter()
            .map(|b| {
                let base = match b {
                    Block::Section { heading, .. } => slug(heading),
                    Block::Figure { name, .. } => format!("fig-{}", slug(name)),
                    Block::Table { caption, .. } => format!("table-{}", slug(caption)),
                    Block::Links { heading, .. } | Block::Facts { heading, .. } => slug(heading),
                };
                let mut id = base.clone();
                let mut k = 2;
                while !seen.insert(id.clone()) {
                    id = format!("{base}-{k}");
                    k += 1;
                }
                id
            })
            .collect()
    }
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "s".into() } else { out }
}

/// HTML text/attribute escaping.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The SVG element without an XML prolog, so it can sit inside HTML.
fn inline_svg(svg: &str) -> &str {
    let s = svg.trim_start();
    if s.starts_with("<?xml")
        && let Some(end) = s.find("?>")
    {
        return s[end + 2..].trim_start();
    }
    s
}

fn fmt_cell(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "–".into()
        } else if v > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 1000.0 {
        format!("{v:.1}")
    } else {
        crate::axis::trim_num(v, 4)
    }
}

/// The interactive layer: inline, no network, no libraries.
const SCRIPT: &str = include_str!("../assets/report.js");

const CSS: &str = r#"
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1d2329;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
  box-shadow: 0 0 0 1px #e3e6ea; min-height: 100vh; box-sizing: border-box; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.6em; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.4em; border-bottom: 1px solid #e3e6ea; padding-bottom: 0.2em; }
nav ol { margin: 0; padding-left: 1.4em; columns: 2; column-gap: 2.5em; }
nav li { break-inside: avoid; overflow-wrap: anywhere; }
nav h2 { font-size: 1.05em; border: 0; }
a { color: #2c5d8f; }
figure { margin: 1.6em 0; }
.plot svg { display: block; max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
figcaption { font-size: 0.92em; color: #4a545e; margin-top: 0.4em; }
figcaption .png { margin-left: 0.6em; font-size: 0.9em; }
.nodata { color: #a33; }
.table { overflow-x: auto; margin: 1.4em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.4em; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e7e9ec; text-align: left; }
th { vertical-align: bottom; }
thead th { border-bottom: 2px solid #c9ced4; background: #f3f5f7; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
footer { margin-top: 3em; font-size: 0.8em; color: #8a939c; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; font-size: 0.9em; }
dt { font-weight: 600; color: #4a545e; }
dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
.links .note { color: #6a747e; font-size: 0.9em; }
figure.live > .plot { display: none; }
figure.live.show-static > .plot { display: block; }
figure.live.show-static > .chart { display: none; }
.chart { position: relative; }
.chart-bar { display: flex; flex-wrap: wrap; gap: 4px 6px; margin-bottom: 6px; }
.chart-bar button, .chart-static { font: inherit; font-size: 0.85em; border: 1px solid #c9ced4; background: #fff;
  border-radius: 4px; padding: 1px 8px; cursor: pointer; }
.chart-legend[aria-pressed=false] { opacity: 0.4; text-decoration: line-through; }
.chart-legend .sw { display: inline-block; width: 14px; height: 4px; margin-right: 6px; vertical-align: middle; }
.chart-reset { margin-left: auto; }
.chart-static { margin-left: 0.8em; }
.chart-grid { display: grid; gap: 6px; }
.chart-note { font-size: 0.88em; color: #4a545e; margin: 2px 0 6px; }
.chart-svg { display: block; max-width: 100%; user-select: none; font-size: 12px; }
.chart-svg .frame { fill: none; stroke: #888; }
.chart-svg .grid { stroke: #e3e3e3; }
.chart-svg .base { stroke: #bbb; }
.chart-svg .tick { fill: #333; font-size: 11.5px; }
.chart-svg .tick.dead { fill: #a33; font-size: 10px; }
.chart-svg .ct { font-weight: 600; font-size: 13.5px; }
.chart-svg .al { font-size: 12.5px; fill: #222; }
.chart-svg .series { fill: none; stroke-width: 2; }
.chart-svg .hl { fill: none; stroke-width: 2; }
.chart-svg .zoombox { fill: rgba(44, 93, 143, 0.12); stroke: #2c5d8f; }
.chart-svg .ridge { fill-opacity: 0.4; stroke-width: 1.5; }
.chart-tip { position: absolute; pointer-events: none; background: rgba(255, 255, 255, 0.96); border: 1px solid #9aa3ad;
  border-radius: 4px; padding: 4px 8px; font-size: 0.85em; box-shadow: 0 2px 6px rgba(0, 0, 0, 0.15); white-space: nowrap; }
"#;
