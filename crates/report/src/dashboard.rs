//! Offline feature dashboards in the spirit of sae_vis and Neuronpedia: one
//! self-contained HTML page per feature (top-activating contexts coloured by
//! activation, samples from activation intervals, a histogram, density, logit
//! effects), a searchable and sortable index, and the journey of a feature
//! through training checkpoints (its match and contexts at each step, side by side).
//!
//! Pages take plain data (token texts with their activations) and return HTML
//! with inline CSS, JavaScript and SVG only: nothing is fetched, so they open
//! from a file, a copied artifact or an archive. Every coloured token carries
//! its activation in `data-act` (and a hover title).

use std::fmt::Write as _;

/// One token of a context and the feature's activation on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The token's text as the tokenizer decodes it on its own.
    pub text: String,
    /// The feature's activation on this token (0 where it does not fire).
    pub act: f32,
}

/// A window of tokens around one activating token.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    /// The window, in order.
    pub tokens: Vec<Token>,
    /// Index in `tokens` of the token the example is about.
    pub focus: usize,
}

/// Examples drawn from one activation interval (sae_vis's quantile groups).
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalSample {
    /// Lower bound of the interval (inclusive).
    pub lo: f32,
    /// Upper bound (exclusive, except for the top interval).
    pub hi: f32,
    /// Share of the feature's firings that fall in the interval.
    pub share: f64,
    /// The sampled examples, strongest first.
    pub contexts: Vec<Context>,
}

/// A token whose logit the decoder direction moves, and by how much.
#[derive(Clone, Debug, PartialEq)]
pub struct LogitToken {
    /// The token's text.
    pub text: String,
    /// `W_dec[f] · W_U[:, token]`.
    pub effect: f32,
}

/// One labelled number shown in a page's header (density, matched similarity, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    /// What the number is.
    pub label: String,
    /// Its value, already formatted.
    pub value: String,
}

/// Everything one feature's page shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeaturePage {
    /// Page title, e.g. `reference · feature 17`.
    pub title: String,
    /// Header facts, in order.
    pub facts: Vec<Fact>,
    /// Counts of nonzero activations in equal bins over (0, `hist_max`].
    pub histogram: Vec<u64>,
    /// Upper end of the histogram.
    pub hist_max: f32,
    /// Activation that gives a token full colour (the feature's maximum).
    pub scale: f32,
    /// Top-activating contexts, strongest first.
    pub top: Vec<Context>,
    /// Samples from activation intervals, highest interval first.
    pub intervals: Vec<IntervalSample>,
    /// Tokens whose logits the decoder direction raises most.
    pub promoted: Vec<LogitToken>,
    /// Tokens whose logits it lowers most.
    pub suppressed: Vec<LogitToken>,
    /// Extra tables (caption, column names, rows of cell texts), e.g. the
    /// feature's matches in other coders.
    pub tables: Vec<(String, Vec<String>, Vec<Vec<String>>)>,
    /// Link back to the index (relative), if any.
    pub index_href: Option<String>,
}

/// One row of an index page: cell texts, the link of the row, and the text
/// the search box matches against.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexRow {
    /// Relative link to the row's page.
    pub href: String,
    /// One text per column; numeric columns sort numerically.
    pub cells: Vec<String>,
    /// Extra text the search box matches (e.g. the top tokens, in full).
    pub search: String,
}

/// One checkpoint's column of a journey page.
#[derive(Clone, Debug, PartialEq)]
pub struct JourneyColumn {
    /// Column heading, e.g. `train[step16]`.
    pub heading: String,
    /// Facts under the heading (step, matched feature, similarity, density).
    pub facts: Vec<Fact>,
    /// Activation that gives a token full colour in this column.
    pub scale: f32,
    /// The matched feature's top contexts at this checkpoint (empty if unmatched).
    pub contexts: Vec<Context>,
    /// Shown instead of contexts when there are none.
    pub empty_note: String,
    /// Background tint of the heading from the similarity, in [0, 1] (None: grey).
    pub tint: Option<f64>,
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#fafafa;color:#222}\
main{max-width:1200px;margin:0 auto;padding:16px 24px}h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #ddd}\
.facts{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}.fact{background:#fff;border:1px solid #ddd;border-radius:6px;padding:4px 10px}\
.fact b{display:block;font-size:.75em;color:#666;font-weight:normal}\
.ctx{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #e4e4e4;border-radius:4px;padding:3px 6px;margin:3px 0;line-height:1.6}\
.ctx .v{float:right;color:#888;font-size:11px;margin-left:8px}\
.t{border-radius:2px}.t.f{outline:1.5px solid #b00;font-weight:bold}.t:hover{outline:1px solid #000}\
table{border-collapse:collapse;background:#fff;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
th{background:#f0f0f0;cursor:pointer;user-select:none}.cols{display:flex;gap:16px;flex-wrap:wrap}.cols>div{flex:1;min-width:300px}\
.iv{color:#555;font-size:.9em;margin:10px 0 2px}input.search{font-size:14px;padding:4px 8px;width:320px;margin:6px 0}\
.journey{display:flex;gap:10px;overflow-x:auto;padding-bottom:8px}.step{flex:0 0 240px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}\
.step h3{font-size:.95em;margin:0 0 4px;padding:3px 6px;border-radius:4px}.step .facts{gap:4px}.step .fact{padding:2px 6px;font-size:12px}\
.note{color:#888;font-style:italic}a{color:#0645ad}";

/// Sorting (click a heading; numbers sort numerically) and filtering (the box
/// matches the row's text) for every `table.sortable`. With `#selftest` in the
/// URL the page exercises both and writes the outcome to `body[data-selftest]`
/// (`ok` or what failed), for the browser test.
const JS: &str = "function num(s){var v=parseFloat(s);return isNaN(v)?null:v}\
document.querySelectorAll('table.sortable').forEach(function(t){var hs=t.tHead.rows[0].cells;\
for(let i=0;i<hs.length;i++){let asc=false;hs[i].addEventListener('click',function(){asc=!asc;\
var rows=Array.from(t.tBodies[0].rows);rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent,\
nx=num(x),ny=num(y);var c=(nx!==null&&ny!==null)?nx-ny:x.localeCompare(y);return asc?c:-c});\
rows.forEach(function(r){t.tBodies[0].appendChild(r)})})}});\
var q=document.getElementById('q');if(q){q.addEventListener('input',function(){var s=q.value.toLowerCase();\
document.querySelectorAll('table.sortable tbody tr').forEach(function(r){\
r.style.display=(r.textContent+' '+(r.dataset.search||'')).toLowerCase().indexOf(s)>=0?'':'none'})})}\
document.body.setAttribute('data-interactive','ready');\
if(location.hash==='#selftest'){document.body.setAttribute('data-selftest',selftest())}\
function selftest(){var t=document.querySelector('table.sortable');if(!t)return 'ok';\
var rows=function(){return Array.from(t.tBodies[0].rows)},n=rows().length;if(!n)return 'empty table';\
t.tHead.rows[0].cells[0].click();var v=rows().map(function(r){return num(r.cells[0].textContent)});\
for(var i=1;i<v.length;i++){if(v[i]!==null&&v[i-1]!==null&&v[i]<v[i-1])return 'sort: '+v.join(',')}\
if(q){var shown=function(){return rows().filter(function(r){return r.style.display!=='none'}).length};\
var go=function(s){q.value=s;q.dispatchEvent(new Event('input'))};go('zqzq no such text');\
if(shown()!==0)return 'a search for absent text left '+shown()+' of '+n+' rows';go(rows()[0].cells[0].textContent);\
if(shown()<1)return 'search lost the first row';go('');if(shown()!==n)return 'clearing the search shows '+shown()+' of '+n}\
return 'ok'}";

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        let rep = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&#39;",
            _ => {
                o.push(c);
                continue;
            }
        };
        o.push_str(rep);
    }
    o
}

/// A number with about four significant digits, for tables and headers.
pub fn short(v: f64) -> String {
    if v.is_nan() {
        return "–".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 4) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn head(h: &mut String, title: &str) {
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
}

fn tail(h: &mut String) {
    let _ = write!(h, "<script>{JS}</script>\n</main>\n</body>\n</html>\n");
}

fn facts(h: &mut String, facts: &[Fact]) {
    h.push_str("<div class=\"facts\">");
    for f in facts {
        let _ = write!(h, "<div class=\"fact\"><b>{}</b>{}</div>", escape(&f.label), escape(&f.value));
    }
    h.push_str("</div>\n");
}

/// The background of a token with activation `act` on a scale whose top is `scale`.
fn colour(act: f32, scale: f32) -> String {
    if act <= 0.0 || scale <= 0.0 {
        return String::new();
    }
    let a = (act / scale).clamp(0.0, 1.0);
    format!(" style=\"background:rgba(255,{},0,{:.3})\"", (140.0 - 60.0 * a) as u8, 0.12 + 0.88 * a)
}

/// Token text made visible: newlines and tabs as symbols, nothing empty.
fn visible(text: &str) -> String {
    let t = text.replace('\n', "↵").replace('\t', "⇥");
    if t.is_empty() { "∅".into() } else { t }
}

/// One context as a line of coloured tokens; hovering a token shows its activation.
pub fn context_html(h: &mut String, c: &Context, scale: f32) {
    let focus_act = c.tokens.get(c.focus).map_or(0.0, |t| t.act);
    let _ = write!(h, "<div class=\"ctx\"><span class=\"v\">{}</span>", short(focus_act as f64));
    for (i, t) in c.tokens.iter().enumerate() {
        let class = if i == c.focus { "t f" } else { "t" };
        let _ = write!(
            h,
            "<span class=\"{class}\" data-act=\"{}\" title=\"{}: {}\"{}>{}</span>",
            t.act,
            escape(&format!("{:?}", t.text)),
            short(t.act as f64),
            colour(t.act, scale),
            escape(&visible(&t.text))
        );
    }
    h.push_str("</div>\n");
}

/// An inline SVG bar chart of `counts` over equal bins of (0, `max`].
pub fn histogram_svg(counts: &[u64], max: f32) -> String {
    let (w, ht, pad_l, pad_b) = (520.0, 170.0, 44.0, 28.0);
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = counts.len().max(1) as f64;
    let bw = (w - pad_l - 8.0) / n;
    let plot_h = ht - pad_b - 8.0;
    let mut s = format!(
        "<svg width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"activation histogram\">"
    );
    let _ = write!(
        s,
        "<line x1=\"{pad_l}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#888\"/><line x1=\"{pad_l}\" y1=\"8\" x2=\"{pad_l}\" y2=\"{y}\" stroke=\"#888\"/>",
        y = ht - pad_b,
        x2 = w - 8.0
    );
    for (i, &c) in counts.iter().enumerate() {
        let bh = plot_h * c as f64 / top;
        let x = pad_l + i as f64 * bw;
        let (lo, hi) = (max as f64 * i as f64 / n, max as f64 * (i + 1) as f64 / n);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#e8822a\"><title>({}, {}]: {c}</title></rect>",
            x + 0.5,
            ht - pad_b - bh,
            (bw - 1.0).max(0.5),
            bh,
            short(lo),
            short(hi)
        );
    }
    let text = |s: &mut String, x: f64, y: f64, anchor: &str, t: &str| {
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#444\">{}</text>",
            escape(t)
        );
    };
    text(&mut s, pad_l, ht - pad_b + 14.0, "start", "0");
    text(&mut s, (pad_l + w - 8.0) / 2.0, ht - pad_b + 14.0, "middle", &short(max as f64 / 2.0));
    text(&mut s, w - 8.0, ht - pad_b + 14.0, "end", &short(max as f64));
    text(&mut s, (pad_l + w - 8.0) / 2.0, ht - 2.0, "middle", "activation (nonzero only)");
    text(&mut s, pad_l - 4.0, 16.0, "end", &(top as u64).to_string());
    text(&mut s, pad_l - 4.0, ht - pad_b, "end", "0");
    s.push_str("</svg>");
    s
}

/// A table; `caption` empty when a heading above already names it.
fn table(h: &mut String, caption: &str, columns: &[String], rows: &[Vec<String>], sortable: bool) {
    let _ = write!(h, "<table{}>", if sortable { " class=\"sortable\"" } else { "" });
    if !caption.is_empty() {
        let _ = write!(h, "<caption>{}</caption>", escape(caption));
    }
    h.push_str("<thead><tr>");
    for c in columns {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr></thead><tbody>\n");
    for r in rows {
        h.push_str("<tr>");
        for c in r {
            let class = if c.parse::<f64>().is_ok() { " class=\"n\"" } else { "" };
            let _ = write!(h, "<td{class}>{}</td>", escape(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
}

fn logit_list(h: &mut String, caption: &str, tokens: &[LogitToken]) {
    let rows: Vec<Vec<String>> = tokens.iter().map(|t| vec![format!("{:?}", t.text), short(t.effect as f64)]).collect();
    table(h, caption, &["token".into(), "logit effect".into()], &rows, false);
}

/// One feature's dashboard page.
pub fn feature_page(p: &FeaturePage) -> String {
    let mut h = String::with_capacity(32 * 1024);
    head(&mut h, &p.title);
    if let Some(href) = &p.index_href {
        let _ = writeln!(h, "<p><a href=\"{}\">← all features</a></p>", escape(href));
    }
    facts(&mut h, &p.facts);
    h.push_str("<div class=\"cols\"><div>\n<h2>Activation histogram</h2>\n");
    h.push_str(&histogram_svg(&p.histogram, p.hist_max));
    h.push_str("</div>\n<div>\n");
    if !p.promoted.is_empty() || !p.suppressed.is_empty() {
        h.push_str("<h2>Logit effects of the decoder direction</h2>\n<div class=\"cols\"><div>");
        logit_list(&mut h, "promoted (positive)", &p.promoted);
        h.push_str("</div><div>");
        logit_list(&mut h, "suppressed (negative)", &p.suppressed);
        h.push_str("</div></div>\n");
    }
    for (caption, columns, rows) in &p.tables {
        let _ = writeln!(h, "<h2>{}</h2>", escape(caption));
        table(&mut h, "", columns, rows, true);
    }
    h.push_str("</div></div>\n<h2>Top activations</h2>\n");
    if p.top.is_empty() {
        h.push_str("<p class=\"note\">The feature never fires on the scanned tokens.</p>\n");
    }
    for c in &p.top {
        context_html(&mut h, c, p.scale);
    }
    if !p.intervals.is_empty() {
        h.push_str("<h2>Samples from activation intervals</h2>\n");
    }
    for iv in &p.intervals {
        let _ = writeln!(
            h,
            "<div class=\"iv\">interval [{}, {}) · {:.1}% of firings · {} sample(s)</div>",
            short(iv.lo as f64),
            short(iv.hi as f64),
            100.0 * iv.share,
            iv.contexts.len()
        );
        for c in &iv.contexts {
            context_html(&mut h, c, p.scale);
        }
    }
    tail(&mut h);
    h
}

/// A searchable, sortable index: a search box filtering rows by their text,
/// and a table whose first column links to each row's page.
pub fn index_page(title: &str, intro: &str, columns: &[String], rows: &[IndexRow]) -> String {
    let mut h = String::with_capacity(16 * 1024);
    head(&mut h, title);
    let _ = writeln!(h, "<p>{}</p>", escape(intro));
    h.push_str(
        "<input id=\"q\" class=\"search\" type=\"search\" placeholder=\"filter by feature id or token text\">\n",
    );
    let _ = write!(h, "<table class=\"sortable\"><thead><tr>");
    for c in columns {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr></thead><tbody>\n");
    for r in rows {
        let _ = write!(h, "<tr data-search=\"{}\">", escape(&r.search));
        for (i, c) in r.cells.iter().enumerate() {
            let class = if c.parse::<f64>().is_ok() { " class=\"n\"" } else { "" };
            if i == 0 {
                let _ = write!(h, "<td{class}><a href=\"{}\">{}</a></td>", escape(&r.href), escape(c));
            } else {
                let _ = write!(h, "<td{class}>{}</td>", escape(c));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
    tail(&mut h);
    h
}

/// One followed feature's journey: a column per checkpoint, side by side, under
/// links to the index and to `links` (label, href), e.g. the feature's dashboard.
pub fn journey_page(
    title: &str,
    header: &[Fact],
    index_href: Option<&str>,
    links: &[(String, String)],
    columns: &[JourneyColumn],
) -> String {
    let mut h = String::with_capacity(32 * 1024);
    head(&mut h, title);
    let mut nav: Vec<String> = index_href
        .map(|href| format!("<a href=\"{}\">← all followed features</a>", escape(href)))
        .into_iter()
        .collect();
    nav.extend(links.iter().map(|(label, href)| format!("<a href=\"{}\">{}</a>", escape(href), escape(label))));
    if !nav.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", nav.join(" · "));
    }
    facts(&mut h, header);
    // Columns need the full width of the window.
    h.push_str("<style>main{max-width:none}</style>\n<div class=\"journey\">\n");
    for c in columns {
        let tint = match c.tint {
            // Red (0) through yellow to green (1).
            Some(s) => format!(" style=\"background:hsl({:.0},65%,82%)\"", 120.0 * s.clamp(0.0, 1.0)),
            None => " style=\"background:#eee\"".into(),
        };
        let _ = writeln!(h, "<div class=\"step\"><h3{tint}>{}</h3>", escape(&c.heading));
        facts(&mut h, &c.facts);
        if c.contexts.is_empty() {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(&c.empty_note));
        }
        for ctx in &c.contexts {
            context_html(&mut h, ctx, c.scale);
        }
        h.push_str("</div>\n");
    }
    h.push_str("</div>\n");
    tail(&mut h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            tokens: vec![Token { text: "a<b".into(), act: 0.0 }, Token { text: "\n".into(), act: 1.5 }],
            focus: 1,
        }
    }

    #[test]
    fn tokens_carry_their_activation_and_are_escaped() {
        let mut h = String::new();
        context_html(&mut h, &ctx(), 3.0);
        assert!(h.contains("data-act=\"0\"") && h.contains("data-act=\"1.5\""), "{h}");
        assert!(h.contains("a&lt;b") && h.contains("↵") && h.contains("class=\"t f\""), "{h}");
        assert!(h.contains("background:rgba"), "{h}");
    }

    #[test]
    fn pages_are_self_contained() {
        let page = feature_page(&FeaturePage {
            title: "x".into(),
            histogram: vec![1, 3, 0, 2],
            hist_max: 2.0,
            scale: 2.0,
            top: vec![ctx()],
            ..Default::default()
        });
        assert_eq!(page.matches("<rect").count(), 4);
        let index = index_page(
            "i",
            "intro",
            &["feature".into()],
            &[IndexRow { href: "feature_1.html".into(), cells: vec!["1".into()], search: "tok".into() }],
        );
        for p in [page, index] {
            assert!(!p.contains("src=") && !p.contains("http"), "{p}");
        }
        assert_eq!(short(0.123456), "0.1235");
        assert_eq!(short(1234.0), "1234");
        assert_eq!(short(f64::NAN), "–");
    }
}
