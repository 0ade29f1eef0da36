//! The HTML report is self-contained, escaped and well-formed enough to open offline.

use base64::Engine as _;
use saepipe_report::{Cell, Figure, FigureOptions, Report, ReportError, synthetic};

fn figures() -> Vec<Figure> {
    let o = FigureOptions::default();
    let (p, c) = synthetic::coder_sweep();
    vec![
        saepipe_report::sparsity_faithfulness(&p, Some(c), &o).unwrap(),
        saepipe_report::sae_losses_per_checkpoint(&synthetic::checkpoint_losses(1), &o).unwrap(),
        saepipe_report::training_curves(&[], &o).unwrap(),
    ]
}

/// Every "http://" or "https://" in `html` sits inside an `xmlns…="…"` attribute.
fn external_refs(html: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, _) in html.match_indices("http") {
        let rest = &html[i..];
        if !(rest.starts_with("http://") || rest.starts_with("https://")) {
            continue;
        }
        let before = &html[..i];
        let attr_start = before.rfind(' ').map_or(0, |p| p + 1);
        let attr = &before[attr_start..];
        if !(attr.starts_with("xmlns") && attr.ends_with("=\"")) {
            bad.push(html[attr_start..(i + 40).min(html.len())].to_string());
        }
    }
    bad
}

fn full_report() -> (Report, Vec<Figure>) {
    let figs = figures();
    let mut r = Report::new("Sweep <pythia-410m> & friends");
    r.add_section("Setup", "Layer 15, d_sae 32768.\n\nCE in nats/token; <b>not</b> bold.");
    for f in &figs {
        r.add_figure(f);
    }
    r.add_table(
        "Sweep results",
        &["coder", "L0", "CE", "tokens"],
        vec![
            vec![Cell::from("sae_a"), 505.0.into(), 3.337.into(), 25_600u64.into()],
            vec![Cell::from("sae_b"), f64::NAN.into(), 1.5e-7.into(), 0i64.into()],
        ],
    )
    .unwrap();
    (r, figs)
}

#[test]
fn html_is_self_contained() {
    let (r, figs) = full_report();
    let html = r.to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(external_refs(&html), Vec::<String>::new());
    for forbidden in ["<script src", "<link", "<img src=\"http", "@import", "<?xml", "fetch(", "XMLHttpRequest"] {
        assert!(!html.contains(forbidden), "HTML contains {forbidden:?}");
    }
    assert_eq!(html.matches("<div class=\"plot\"><svg").count(), figs.len());
    assert_eq!(html.matches("</svg>").count(), figs.len());
    for f in &figs {
        assert!(html.contains(&format!("id=\"fig-{}\"", f.name.replace('_', "-"))), "{}", f.name);
    }
    assert!(html.contains("<style>") && html.contains("td.num"));
    assert!(html.contains("(no data: no training steps were logged)"));
}

#[test]
fn detector_catches_external_references() {
    assert_eq!(external_refs("<svg xmlns=\"http://www.w3.org/2000/svg\">").len(), 0);
    assert_eq!(external_refs("<img src=\"https://cdn.example/x.png\">").len(), 1);
    assert_eq!(external_refs("see http://example.org").len(), 1);
}

#[test]
fn text_is_escaped_and_paragraphs_split() {
    let (r, _) = full_report();
    let html = r.to_html();
    assert!(html.contains("<title>Sweep &lt;pythia-410m&gt; &amp; friends</title>"));
    assert!(html.contains("<p>CE in nats/token; &lt;b&gt;not&lt;/b&gt; bold.</p>"));
    assert!(html.contains("<p>Layer 15, d_sae 32768.</p>"));
    assert!(!html.contains("<b>not</b>"));
}

#[test]
fn tables_format_cells_and_reject_ragged_rows() {
    let (r, _) = full_report();
    let html = r.to_html();
    assert!(html.contains("<caption>Sweep results</caption>"));
    assert!(html.contains("<th>coder</th><th>L0</th><th>CE</th><th>tokens</th>"));
    assert!(html.contains("<td class=\"num\">505</td><td class=\"num\">3.337</td><td class=\"num\">25600</td>"));
    assert!(html.contains("<td class=\"num\">–</td><td class=\"num\">1.500e-7</td>"));
    let mut r = Report::new("t");
    let e = r.add_table("bad", &["a", "b"], vec![vec![Cell::from(1i64)]]).unwrap_err();
    assert!(matches!(e, ReportError::Table { .. }));
    assert!(e.to_string().contains("row 0 has 1 cells, the header has 2 columns"), "{e}");
}

#[test]
fn png_links_embed_the_exact_png() {
    let (r, figs) = full_report();
    let html = r.to_html();
    let marker = "download=\"sparsity_faithfulness.png\" href=\"data:image/png;base64,";
    let start = html.find(marker).expect("PNG link") + marker.len();
    let end = start + html[start..].find('"').unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(&html[start..end]).unwrap();
    assert_eq!(bytes, figs[0].png);

    let mut small = Report::new("small").with_png_links(false);
    small.add_figure(&figs[0]);
    assert!(!small.to_html().contains("data:image/png"));
}

#[test]
fn anchors_are_unique_and_output_deterministic() {
    let figs = figures();
    let mut r = Report::new("t");
    r.add_section("Results", "a").add_section("Results", "b").add_figure(&figs[0]).add_figure(&figs[0]);
    let html = r.to_html();
    assert!(html.contains("id=\"results\"") && html.contains("id=\"results-2\""));
    assert!(html.contains("id=\"fig-sparsity-faithfulness\"") && html.contains("id=\"fig-sparsity-faithfulness-2\""));
    assert_eq!(html, r.to_html());
}

#[test]
fn study_report_has_one_metrics_table_charts_provenance_and_links() {
    let html = synthetic::study_report().unwrap().to_html();
    assert_eq!(html.matches("<caption>").count(), 1, "one table for all coders");
    assert_eq!(html.matches("<script type=\"application/json\" class=\"chart-spec\">").count(), 6);
    assert_eq!(html.matches("<script>").count(), 1, "the chart module is inlined once");
    // Integers in the table, never `1024.0`.
    assert!(html.contains("<td class=\"num\">143000</td>") && !html.contains("143000.0"));
    for d in ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"] {
        assert!(html.contains(&format!("distance ≤ {d}")), "{d}");
    }
    assert!(html.contains("<h2>Provenance</h2>") && html.contains("<dt>pipeline</dt>"));
    assert!(html.contains("href=\"../features/report.html\""));
    assert_eq!(external_refs(&html), Vec::<String>::new());
}

#[test]
fn links_must_be_local() {
    let mut r = Report::new("t");
    let l = |href: &str| vec![saepipe_report::Link { label: "x".into(), href: href.into(), note: String::new() }];
    assert!(r.add_links("Related", l("https://example.org/x.html")).is_err());
    assert!(r.add_links("Related", l("../../artifacts/abc/report.html")).is_ok());
}
