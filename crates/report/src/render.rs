//! Figure type, the two-backend render pipeline and the layout pieces shared by figures.

use plotters::chart::ChartContext;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{Axis, AxisRange};
use crate::error::{ReportError, Result};
use crate::style::{self, Marker};
use saepipe_core::table::Table;

/// Size and naming of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureOptions {
    /// Pixel width of the PNG and of the SVG canvas.
    pub width: u32,
    /// Pixel height of the PNG and of the SVG canvas.
    pub height: u32,
    /// Replaces the figure's default title.
    pub title: Option<String>,
    /// Replaces the figure's default file stem (e.g. to tell layers apart).
    pub name: Option<String>,
}

impl Default for FigureOptions {
    fn default() -> Self {
        FigureOptions { width: 900, height: 560, title: None, name: None }
    }
}

impl FigureOptions {
    /// These options with another pixel size.
    pub fn with_size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// These options with the title replaced.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// These options with the file stem replaced.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// A rendered figure: the same drawing as SVG text and PNG bytes, plus its numbers.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem, e.g. `matched_fraction` (→ `matched_fraction.svg`, `.png`, `.parquet`).
    pub name: String,
    /// The title drawn above the plot.
    pub title: String,
    /// Pixel width.
    pub width: u32,
    /// Pixel height.
    pub height: u32,
    /// Standalone SVG document.
    pub svg: String,
    /// RGB, 8-bit PNG of `width` × `height` pixels.
    pub png: Vec<u8>,
    /// The plotted numbers in long format.
    pub data: Table,
    /// `Some(reason)` when the input had nothing to plot and the figure is a "no data"
    /// placeholder.
    pub no_data: Option<String>,
    /// The plotted numbers as a JSON chart description for the report's interactive
    /// layer (hover values, zoom, series toggles); `None` for "no data" figures.
    pub interactive: Option<String>,
}

impl Figure {
    pub(crate) fn with_interactive(mut self, spec: String) -> Self {
        if self.no_data.is_none() {
            self.interactive = Some(spec);
        }
        self
    }
}

pub(crate) const MIN_SIZE: (u32, u32) = (320, 240);
pub(crate) const MAX_SIZE: u32 = 8192;

pub(crate) type DrawResult = std::result::Result<(), String>;

/// Something that can draw itself on any plotters backend.
pub(crate) trait Painter {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

pub(crate) fn de<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// Resolved name and title for a figure.
pub(crate) fn resolve(opts: &FigureOptions, default_name: &str, default_title: &str) -> Result<(String, String)> {
    let name = opts.name.clone().unwrap_or_else(|| default_name.to_string());
    let title = opts.title.clone().unwrap_or_else(|| default_title.to_string());
    let bad = |option: &str, reason: String| ReportError::InvalidOptions {
        figure: name.clone(),
        option: option.into(),
        reason,
    };
    for (option, v, min) in [("width", opts.width, MIN_SIZE.0), ("height", opts.height, MIN_SIZE.1)] {
        if v < min || v > MAX_SIZE {
            return Err(bad(option, format!("{v} px is outside {min}..={MAX_SIZE}")));
        }
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err(bad("name", format!("{name:?} must be non-empty ASCII letters, digits, '_', '-' or '.'")));
    }
    Ok((name, title))
}

/// Draws `painter` on the SVG and bitmap backends and packs the result.
pub(crate) fn render(
    name: String,
    title: String,
    opts: &FigureOptions,
    painter: &impl Painter,
    data: Table,
    no_data: Option<String>,
) -> Result<Figure> {
    style::ensure_fonts()?;
    debug_assert!(data.is_rectangular());
    let (w, h) = (opts.width, opts.height);
    let fail = |backend: &'static str| {
        let figure = name.clone();
        move |message: String| ReportError::Render { figure, backend, message }
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(de).map_err(fail("SVG"))?;
        painter.paint(&root).map_err(fail("SVG"))?;
        root.present().map_err(de).map_err(fail("SVG"))?;
    }

    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(de).map_err(fail("PNG"))?;
        painter.paint(&root).map_err(fail("PNG"))?;
        root.present().map_err(de).map_err(fail("PNG"))?;
    }
    let png = encode_png(&rgb, w, h).map_err(|message| ReportError::Png { figure: name.clone(), message })?;
    Ok(Figure { name, title, width: w, height: h, svg, png, data, no_data, interactive: None })
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Balanced);
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Layout pieces

pub(crate) const TITLE_HEIGHT: u32 = 40;

/// Draws the figure title and returns the area below it.
pub(crate) fn title_area<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, String> {
    let (top, rest) = root.split_vertically(TITLE_HEIGHT);
    let (w, h) = top.dim_in_pixel();
    let st = style::text_style(style::TITLE_SIZE, style::TEXT).pos(Pos::new(HPos::Center, VPos::Center));
    top.draw(&Text::new(title.to_string(), (w as i32 / 2, h as i32 / 2 + 4), st)).map_err(de)?;
    Ok(rest)
}

/// A "no data" placeholder: the title plus the reason, centred in a frame.
pub(crate) struct NoData<'a> {
    pub title: &'a str,
    pub reason: &'a str,
}

impl Painter for NoData<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let area = title_area(root, self.title)?;
        let (w, h) = area.dim_in_pixel();
        let (w, h) = (w as i32, h as i32);
        area.draw(&Rectangle::new([(40, 10), (w - 40, h - 30)], ShapeStyle::from(&style::GRID_MAJOR).stroke_width(2)))
            .map_err(de)?;
        let big = style::text_style(24.0, style::REFERENCE).pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new("No data".to_string(), (w / 2, h / 2 - 24), big)).map_err(de)?;
        let small = style::text_style(style::DESC_SIZE, style::REFERENCE).pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new(self.reason.to_string(), (w / 2, h / 2 + 12), small)).map_err(de)?;
        Ok(())
    }
}

pub(crate) fn no_data_figure(
    name: String,
    title: String,
    opts: &FigureOptions,
    reason: &str,
    data: Table,
) -> Result<Figure> {
    let painter = NoData { title: &title, reason };
    render(name.clone(), title.clone(), opts, &painter, data, Some(reason.to_string()))
}

/// How a legend entry's swatch looks.
#[derive(Debug, Clone)]
pub(crate) struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
    pub line: LineKind,
    pub marker: Marker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    Solid,
    Dashed,
    /// A filled box (histograms, areas).
    Patch,
}

const SWATCH_W: i32 = 28;
const ENTRY_GAP: i32 = 22;
const LEGEND_ROW_H: i32 = 22;

/// Lays the legend out in centred rows above the plot (never on top of data) and
/// returns the area left for the plot.
pub(crate) fn legend_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> std::result::Result<DrawingArea<DB, Shift>, String> {
    if entries.is_empty() {
        return Ok(area.clone());
    }
    let st = style::text_style(style::LEGEND_SIZE, style::TEXT);
    let (avail, avail_h) = area.dim_in_pixel();
    let avail = avail as i32 - 40;
    // The legend may take at most a quarter of the height; what does not fit is summarised
    // in a last "+N more" entry (the plot data has every series).
    let max_rows = ((avail_h as i32 / 4) / LEGEND_ROW_H).max(1) as usize;
    let mut entries: Vec<LegendEntry> =
        entries.iter().map(|e| LegendEntry { label: shorten(&e.label, MAX_LABEL_CHARS), ..e.clone() }).collect();
    for keep in (0..=entries.len()).rev() {
        let mut trial: Vec<LegendEntry> = entries[..keep].to_vec();
        if keep < entries.len() {
            trial.push(LegendEntry {
                label: format!("+{} more", entries.len() - keep),
                color: style::REFERENCE,
                line: LineKind::Patch,
                marker: Marker::None,
            });
        }
        if legend_rows(area, &trial, &st, avail)?.len() <= max_rows || keep == 0 {
            entries = trial;
            break;
        }
    }
    let rows = legend_rows(area, &entries, &st, avail)?;
    let height = rows.len() as i32 * LEGEND_ROW_H + 8;
    let (strip, rest) = area.split_vertically(height as u32);
    let (sw, _) = strip.dim_in_pixel();
    for (r, row) in rows.iter().enumerate() {
        let total: i32 = row.iter().map(|&(_, w)| w).sum::<i32>() + ENTRY_GAP * (row.len() as i32 - 1);
        let mut x = (sw as i32 - total) / 2;
        let y = r as i32 * LEGEND_ROW_H + LEGEND_ROW_H / 2 + 2;
        for &(i, ew) in row {
            let e = &entries[i];
            draw_swatch(&strip, e, x, y)?;
            let tst = st.pos(Pos::new(HPos::Left, VPos::Center));
            strip.draw(&Text::new(e.label.clone(), (x + SWATCH_W + 6, y), tst)).map_err(de)?;
            x += ew + ENTRY_GAP;
        }
    }
    Ok(rest)
}

const MAX_LABEL_CHARS: usize = 44;

/// Cuts the middle out of long labels: run names differ at both ends (prefix, seed).
fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let a: String = s.chars().take(head).collect();
    let b: String = s.chars().skip(n - tail).collect();
    format!("{a}…{b}")
}

/// Flow layout: rows of (entry index, entry width).
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    st: &TextStyle<'_>,
    avail: i32,
) -> std::result::Result<Vec<Vec<(usize, i32)>>, String> {
    let mut rows: Vec<Vec<(usize, i32)>> = vec![Vec::new()];
    let mut row_w = 0;
    for (i, e) in entries.iter().enumerate() {
        let (tw, _) = area.estimate_text_size(&e.label, st).map_err(de)?;
        let ew = SWATCH_W + 6 + tw as i32;
        let add = if rows.last().unwrap().is_empty() { ew } else { ew + ENTRY_GAP };
        if row_w + add > avail && !rows.last().unwrap().is_empty() {
            rows.push(Vec::new());
            row_w = ew;
        } else {
            row_w += add;
        }
        rows.last_mut().unwrap().push((i, ew));
    }
    Ok(rows)
}

fn draw_swatch<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>, e: &LegendEntry, x: i32, y: i32) -> DrawResult {
    let line = ShapeStyle::from(&e.color).stroke_width(2);
    match e.line {
        LineKind::Solid => {
            a.draw(&PathElement::new(vec![(x, y), (x + SWATCH_W, y)], line)).map_err(de)?;
        }
        LineKind::Dashed => {
            for s in [0, 11, 22] {
                a.draw(&PathElement::new(vec![(x + s, y), (x + (s + 6).min(SWATCH_W), y)], line)).map_err(de)?;
            }
        }
        LineKind::Patch => {
            a.draw(&Rectangle::new([(x + 2, y - 7), (x + SWATCH_W - 2, y + 7)], e.color.mix(0.35).filled()))
                .map_err(de)?;
            a.draw(&Rectangle::new([(x + 2, y - 7), (x + SWATCH_W - 2, y + 7)], line)).map_err(de)?;
        }
    }
    draw_marker_px(a, e.marker, (x + SWATCH_W / 2, y), e.color)
}

fn draw_marker_px<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>, m: Marker, p: (i32, i32), c: RGBColor) -> DrawResult {
    match m {
        Marker::None => Ok(()),
        Marker::Circle => a.draw(&Circle::new(p, 4, c.filled())).map_err(de),
        Marker::Triangle => a.draw(&TriangleMarker::new(p, 6, c.filled())).map_err(de),
        Marker::Square => a.draw(&Rectangle::new([(p.0 - 4, p.1 - 4), (p.0 + 4, p.1 + 4)], c.filled())).map_err(de),
        Marker::Diamond => a
            .draw(&Polygon::new(vec![(p.0, p.1 - 6), (p.0 + 5, p.1), (p.0, p.1 + 6), (p.0 - 5, p.1)], c.filled()))
            .map_err(de),
    }
}

// ---------------------------------------------------------------------------------------
// Line panels

pub(crate) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<AxisRange, AxisRange>>;

/// One line (with optional markers) in transformed coordinates; NaN breaks the line.
#[derive(Debug, Clone)]
pub(crate) struct LineSpec {
    /// Series name (legend label) in the interactive chart.
    pub name: String,
    pub color: RGBColor,
    pub marker: Marker,
    pub line: LineKind,
    pub points: Vec<(f64, f64)>,
}

/// A panel: axes, descriptions and lines.
#[derive(Clone)]
pub(crate) struct LinePanel {
    pub caption: Option<String>,
    pub x: Axis,
    pub y: Axis,
    pub x_desc: String,
    pub y_desc: String,
    pub lines: Vec<LineSpec>,
}

/// Builds a chart with styled mesh on `area`.
pub(crate) fn build_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: Option<&str>,
    x: &Axis,
    y: &Axis,
    x_desc: &str,
    y_desc: &str,
    right_margin: u32,
) -> std::result::Result<Chart<'a, DB>, String> {
    let tick = style::text_style(style::TICK_SIZE, style::TICK_TEXT);
    let mut widest = 0u32;
    for &t in &y.major {
        let (w, _) = area.estimate_text_size(&y.label(t), &tick).map_err(de)?;
        widest = widest.max(w);
    }
    let y_area = widest + 12 + if y_desc.is_empty() { 0 } else { style::DESC_SIZE as u32 + 14 };
    let x_area = 26 + if x_desc.is_empty() { 0 } else { style::DESC_SIZE as u32 + 12 };
    // The rotated y description must fit the plot height, or it runs into other panels.
    let (_, h) = area.dim_in_pixel();
    let room = h.saturating_sub(x_area + if caption.is_some() { 40 } else { 14 });
    let y_desc = fit_text(area, y_desc, &style::text_style(style::DESC_SIZE, style::TEXT), room)?;
    let mut b = ChartBuilder::on(area);
    b.margin_top(10).margin_right(right_margin).margin_left(6).margin_bottom(4);
    b.x_label_area_size(x_area).y_label_area_size(y_area);
    if let Some(c) = caption {
        b.caption(c, style::text_style(style::PANEL_TITLE_SIZE, style::TEXT));
    }
    let mut chart = b.build_cartesian_2d(x.coord(), y.coord()).map_err(de)?;
    let xf = |t: &f64| x.label(*t);
    let yf = |t: &f64| y.label(*t);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc.as_str())
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(tick)
        .axis_desc_style(style::text_style(style::DESC_SIZE, style::TEXT))
        .bold_line_style(style::GRID_MAJOR)
        .light_line_style(style::GRID_MINOR)
        .axis_style(ShapeStyle::from(&style::REFERENCE).stroke_width(1))
        .draw()
        .map_err(de)?;
    Ok(chart)
}

/// `text`, or a shorter form of it that is at most `max_px` wide: first without the
/// "(log scale)" note, then cut with an ellipsis.
fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    st: &TextStyle<'_>,
    max_px: u32,
) -> std::result::Result<String, String> {
    let fits = |t: &str| area.estimate_text_size(t, st).map(|(w, _)| w <= max_px).map_err(de);
    if text.is_empty() || fits(text)? {
        return Ok(text.to_string());
    }
    let short = text.replace(" (log scale)", " (log)");
    if fits(&short)? {
        return Ok(short);
    }
    let bare = text.replace(" (log scale)", "");
    if fits(&bare)? {
        return Ok(bare);
    }
    let short = bare;
    let mut n = short.chars().count();
    while n > 4 {
        n -= 1;
        let cut = shorten(&short, n);
        if fits(&cut)? {
            return Ok(cut);
        }
    }
    Ok(String::new())
}

pub(crate) fn draw_lines<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, lines: &[LineSpec]) -> DrawResult {
    for l in lines {
        let stroke = ShapeStyle::from(&l.color).stroke_width(2);
        for seg in finite_segments(&l.points) {
            match l.line {
                LineKind::Solid => {
                    chart.draw_series(std::iter::once(PathElement::new(seg.clone(), stroke))).map_err(de)?;
                }
                LineKind::Dashed => {
                    chart.draw_series(DashedLineSeries::new(seg.clone(), 8, 5, stroke)).map_err(de)?;
                }
                LineKind::Patch => {}
            }
        }
        draw_markers(
            chart,
            l.marker,
            l.color,
            l.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()),
        )?;
    }
    Ok(())
}

pub(crate) fn draw_markers<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    m: Marker,
    c: RGBColor,
    pts: impl Iterator<Item = (f64, f64)> + Clone,
) -> DrawResult {
    let fill = c.filled();
    match m {
        Marker::None => {}
        Marker::Circle => {
            chart.draw_series(pts.map(|p| Circle::new(p, 4, fill))).map_err(de)?;
        }
        Marker::Triangle => {
            chart.draw_series(pts.map(|p| TriangleMarker::new(p, 6, fill))).map_err(de)?;
        }
        Marker::Square => {
            chart
                .draw_series(pts.map(|p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], fill)))
                .map_err(de)?;
        }
        Marker::Diamond => {
            chart
                .draw_series(
                    pts.map(|p| EmptyElement::at(p) + Polygon::new(vec![(0, -6), (5, 0), (0, 6), (-5, 0)], fill)),
                )
                .map_err(de)?;
        }
    }
    Ok(())
}

/// Splits a polyline at non-finite points so gaps in the data stay visible.
pub(crate) fn finite_segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl LinePanel {
    pub fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, right_margin: u32) -> DrawResult {
        let mut chart =
            build_chart(area, self.caption.as_deref(), &self.x, &self.y, &self.x_desc, &self.y_desc, right_margin)?;
        draw_lines(&mut chart, &self.lines)
    }
}

/// Keeps at most `max` points by striding (long training logs would bloat the SVG);
/// the first and last point are always kept.
pub(crate) fn decimate<T: Copy>(v: &[T], max: usize) -> Vec<T> {
    if v.len() <= max || max < 2 {
        return v.to_vec();
    }
    let stride = (v.len() - 1) as f64 / (max - 1) as f64;
    (0..max).map(|i| v[((i as f64 * stride).round() as usize).min(v.len() - 1)]).collect()
}
