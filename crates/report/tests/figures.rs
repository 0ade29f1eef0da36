//! Every figure renders SVG and PNG from realistic synthetic data; empty, NaN and
//! malformed inputs give a "no data" figure or a clear error.

use saepipe_report::{
    CheckpointLosses, CheckpointSimilarities, CoderPoint, Column, DEFAULT_DISTANCE_THRESHOLDS, FeatureDensity, Figure,
    FigureOptions, MatchedFraction, ReportError, TrainingCurve, ce_loss_score_frontier, feature_density,
    matched_fraction_vs_step, matched_fractions, sae_losses_per_checkpoint, similarity_heatmap, sparsity_faithfulness,
    synthetic, training_curves,
};

struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

fn decode(png_bytes: &[u8]) -> Decoded {
    let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = dec.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Decoded { width: info.width, height: info.height, rgb: buf }
}

impl Decoded {
    fn px(&self, x: u32, y: u32) -> (u8, u8, u8) {
        let i = ((y * self.width + x) * 3) as usize;
        (self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
    }

    /// Pixels darker than `lum` in rows `y0..y1`.
    fn dark_pixels(&self, y0: u32, y1: u32, lum: u32) -> usize {
        (y0..y1)
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let (r, g, b) = self.px(x, y);
                (r as u32 + g as u32 + b as u32) / 3 < lum
            })
            .count()
    }

    fn distinct_colors(&self) -> usize {
        let mut set = std::collections::HashSet::new();
        for c in self.rgb.chunks_exact(3) {
            set.insert((c[0], c[1], c[2]));
        }
        set.len()
    }
}

/// Checks shared by every rendered figure.
fn check_figure(fig: &Figure, opts: &FigureOptions, must_contain: &[&str]) {
    assert!(fig.no_data.is_none(), "{}: unexpected no-data figure: {:?}", fig.name, fig.no_data);
    assert!(fig.svg.starts_with("<svg"), "{}: SVG does not start with <svg", fig.name);
    assert!(fig.svg.contains(&format!("viewBox=\"0 0 {} {}\"", opts.width, opts.height)), "{}", fig.name);
    assert!(fig.svg.trim_end().ends_with("</svg>"));
    for s in must_contain.iter().chain(std::iter::once(&fig.title.as_str())) {
        assert!(fig.svg.contains(s), "{}: SVG lacks {s:?}", fig.name);
    }
    let img = decode(&fig.png);
    assert_eq!((img.width, img.height), (opts.width, opts.height), "{}", fig.name);
    // The title band holds rendered glyphs: the embedded font works without system fonts.
    assert!(img.dark_pixels(0, 36, 120) > 100, "{}: no title text in PNG", fig.name);
    // Lines, markers or cells in colour, not just black on white.
    assert!(img.distinct_colors() > 20, "{}: only {} colours", fig.name, img.distinct_colors());
    assert!(fig.data.is_rectangular(), "{}: ragged plot data", fig.name);
    assert!(fig.data.rows() > 0, "{}: empty plot data", fig.name);
}

fn opts() -> FigureOptions {
    FigureOptions::default()
}

fn fractions() -> Vec<MatchedFraction> {
    synthetic::checkpoint_similarities(1024, 1)
        .iter()
        .flat_map(|c| matched_fractions(c.step, &c.similarities, &DEFAULT_DISTANCE_THRESHOLDS))
        .collect()
}

#[test]
fn matched_fraction_figure() {
    let rows = fractions();
    let fig = matched_fraction_vs_step(&rows, &opts()).unwrap();
    check_figure(
        &fig,
        &opts(),
        &[
            "LM training step (log scale)",
            "fraction of reference features matched",
            "distance ≤ 0.1",
            "distance ≤ 0.5",
            "distance ≤ 0.9",
            "100000",
        ],
    );
    // All nine thresholds of the study, steps written as integers.
    for d in ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"] {
        assert!(fig.svg.contains(&format!("distance ≤ {d}")), "threshold {d} missing");
    }
    assert!(!fig.svg.contains("100k") && !fig.svg.contains("1.02k"));
    let spec: serde_json::Value = serde_json::from_str(fig.interactive.as_deref().unwrap()).unwrap();
    assert_eq!(spec["kind"], "lines");
    assert_eq!(spec["panels"][0]["series"].as_array().unwrap().len(), 9);
    assert_eq!(spec["panels"][0]["x"]["int"], true);
    assert_eq!(fig.name, "matched_fraction");
    assert_eq!(fig.data.column_names(), ["step", "threshold", "fraction"]);
    assert_eq!(fig.data.rows(), rows.len());
}

#[test]
fn matched_fractions_counts_distance_and_dead() {
    let sims = [1.0, 0.95, 0.6, f64::NAN];
    let r = matched_fractions(7, &sims, &[0.1, 0.5, 0.9]);
    let f: Vec<f64> = r.iter().map(|m| m.fraction).collect();
    assert_eq!(f, [0.5, 0.75, 0.75]);
    assert!(r.iter().all(|m| m.step == 7));
    assert!(matched_fractions(0, &[], &[0.1])[0].fraction.is_nan());
}

#[test]
fn heatmap_figure_and_binning() {
    let sims = synthetic::checkpoint_similarities(1024, 2);
    let fig = similarity_heatmap(&sims, 20, &opts()).unwrap();
    check_figure(&fig, &opts(), &["matched cosine similarity", "LM training step (checkpoint)", "sqrt scale"]);
    assert_eq!(fig.data.rows(), sims.len() * 20);
    let Some(Column::F64(frac)) = fig.data.get("fraction") else { panic!("fraction column") };
    for c in frac.chunks(20) {
        let s: f64 = c.iter().sum();
        assert!((s - 1.0).abs() < 1e-9, "per-checkpoint fractions sum to {s}");
    }
    // The reference checkpoint matches itself: all mass in the top bin (similarity 1.0).
    let last = &frac[frac.len() - 20..];
    assert_eq!(last[19], 1.0);

    let exact = [CheckpointSimilarities { step: 5, similarities: vec![0.0, 0.05, 0.5, 1.0, f64::NAN] }];
    let fig = similarity_heatmap(&exact, 10, &opts()).unwrap();
    let Some(Column::I64(count)) = fig.data.get("count") else { panic!("count column") };
    assert_eq!(count, &vec![2, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    let Some(Column::I64(unmatched)) = fig.data.get("n_unmatched") else { panic!() };
    assert!(unmatched.iter().all(|&u| u == 1));
}

#[test]
fn heatmap_rejects_bad_input() {
    let dup = [
        CheckpointSimilarities { step: 1, similarities: vec![0.5] },
        CheckpointSimilarities { step: 1, similarities: vec![0.5] },
    ];
    let e = similarity_heatmap(&dup, 10, &opts()).unwrap_err();
    assert!(e.to_string().contains("step 1 appears twice"), "{e}");
    let bad = [CheckpointSimilarities { step: 3, similarities: vec![0.2, 1.7] }];
    let e = similarity_heatmap(&bad, 10, &opts()).unwrap_err();
    assert!(matches!(e, ReportError::InvalidData { .. }) && e.to_string().contains("feature 1"), "{e}");
    let e = similarity_heatmap(&[], 0, &opts()).unwrap_err();
    assert!(matches!(e, ReportError::InvalidOptions { .. }), "{e}");
}

#[test]
fn losses_figure() {
    let rows = synthetic::checkpoint_losses(3);
    let fig = sae_losses_per_checkpoint(&rows, &opts()).unwrap();
    check_figure(
        &fig,
        &opts(),
        &[
            "Reconstruction MSE",
            "Explained variance",
            "mean squared error",
            "active features per token",
            "LM training step",
        ],
    );
    assert_eq!(fig.data.column_names(), ["step", "mse", "l0", "explained_variance"]);
}

#[test]
fn losses_with_gaps_still_render() {
    let mut rows = synthetic::checkpoint_losses(3);
    rows[3].mse = f64::NAN;
    rows[5].l0 = f64::NAN;
    let fig = sae_losses_per_checkpoint(&rows, &opts()).unwrap();
    assert!(fig.no_data.is_none());
    let nan_rows: Vec<CheckpointLosses> = (0..3)
        .map(|s| CheckpointLosses { step: s, mse: f64::NAN, l0: f64::NAN, explained_variance: f64::NAN })
        .collect();
    let fig = sae_losses_per_checkpoint(&nan_rows, &opts()).unwrap();
    assert!(fig.no_data.is_some());
    assert_eq!(fig.data.rows(), 3);
}

#[test]
fn frontier_figure() {
    let (points, clean) = synthetic::coder_sweep();
    let fig = sparsity_faithfulness(&points, Some(clean), &opts()).unwrap();
    check_figure(
        &fig,
        &opts(),
        &[
            "L0, active features per token (log scale)",
            "CE loss with coder spliced in (nats/token)",
            "SAE (4)",
            "transcoder (5)",
            "clean LM (no coder)",
        ],
    );
    let Some(Column::Str(fam)) = fig.data.get("family") else { panic!() };
    assert_eq!(fam.iter().filter(|f| *f == "SAE").count(), 4);
    // Without the clean reference and with L0 = 0 (linear axis) it still renders.
    let mut p = points.clone();
    p[0].l0 = 0.0;
    let fig = sparsity_faithfulness(&p, None, &opts()).unwrap();
    assert!(!fig.svg.contains("clean LM"));
    assert!(fig.svg.contains("L0, active features per token") && !fig.svg.contains("log scale"));
}

#[test]
fn frontier_rejects_negative_l0() {
    let p = [CoderPoint { family: "SAE".into(), label: "bad".into(), l0: -1.0, ce_loss: 3.0, ce_loss_score: 0.9 }];
    let e = sparsity_faithfulness(&p, None, &opts()).unwrap_err();
    assert!(e.to_string().contains("coder `bad`") && e.to_string().contains("l0"), "{e}");
    let e = ce_loss_score_frontier(&p, &opts()).unwrap_err();
    assert!(e.to_string().contains("coder `bad`") && e.to_string().contains("l0"), "{e}");
}

#[test]
fn score_frontier_figure() {
    let (mut points, _) = synthetic::coder_sweep();
    let fig = ce_loss_score_frontier(&points, &opts()).unwrap();
    check_figure(
        &fig,
        &opts(),
        &[
            "L0, active features per token (log scale)",
            "CE loss score (1 = clean LM, 0 = zero ablation)",
            "SAE (4)",
            "transcoder (5)",
            "clean LM (score 1)",
        ],
    );
    let Some(Column::F64(score)) = fig.data.get("ce_loss_score") else { panic!() };
    assert_eq!(score, &points.iter().map(|p| p.ce_loss_score).collect::<Vec<_>>());
    // A coder without a score stays in the data but not in the plot; none at all: no data.
    points[0].ce_loss_score = f64::NAN;
    let fig = ce_loss_score_frontier(&points, &opts()).unwrap();
    assert!(fig.no_data.is_none() && fig.svg.contains("SAE (3)"));
    points.iter_mut().for_each(|p| p.ce_loss_score = f64::NAN);
    assert!(ce_loss_score_frontier(&points, &opts()).unwrap().no_data.is_some());
    points[1].ce_loss_score = f64::INFINITY;
    let e = ce_loss_score_frontier(&points, &opts()).unwrap_err();
    assert!(e.to_string().contains("ce_loss_score"), "{e}");
}

#[test]
fn density_figure_counts_dead_separately() {
    let d = synthetic::feature_densities(4096, 4);
    let fig = feature_density(&d, &opts()).unwrap();
    check_figure(&fig, &opts(), &["log10 firing frequency (fraction of tokens)", "dead)"]);
    let Some(Column::Str(sae)) = fig.data.get("coder") else { panic!() };
    let Some(Column::I64(count)) = fig.data.get("count") else { panic!() };
    let Some(Column::I64(dead)) = fig.data.get("n_dead") else { panic!() };
    for s in &d {
        let rows: Vec<usize> = (0..sae.len()).filter(|&i| sae[i] == s.name).collect();
        let binned: i64 = rows.iter().map(|&i| count[i]).sum();
        let n_dead = dead[rows[0]];
        assert_eq!(n_dead as usize, s.firing_fraction.iter().filter(|&&f| f == 0.0).count());
        assert_eq!(binned + n_dead, s.firing_fraction.len() as i64, "{}", s.name);
        assert!(fig.svg.contains(&format!("{} ({n_dead}/4096 dead)", s.name)));
    }
}

#[test]
fn density_edge_cases() {
    let all_dead = [FeatureDensity { name: "x".into(), firing_fraction: vec![0.0; 10] }];
    let fig = feature_density(&all_dead, &opts()).unwrap();
    assert!(fig.no_data.as_deref().unwrap().contains("all 10 features are dead"));
    let fig = feature_density(&[], &opts()).unwrap();
    assert!(fig.no_data.is_some());
    let bad = [FeatureDensity { name: "sae3".into(), firing_fraction: vec![0.1, f64::NAN] }];
    let e = feature_density(&bad, &opts()).unwrap_err();
    assert!(e.to_string().contains("SAE `sae3`, feature 1"), "{e}");
}

#[test]
fn training_figure() {
    let runs = synthetic::training_runs(10_000, 10, 5);
    let fig = training_curves(&runs, &opts()).unwrap();
    check_figure(
        &fig,
        &opts(),
        &["L1 / AuxK loss", "Dead features", "training step", "features/token", "l1_5", "topk_32"],
    );
    let total: usize = runs.iter().map(|r| r.step.len()).sum();
    assert_eq!(fig.data.rows(), total, "plot data keeps every logged step");
    // Drawn lines are thinned: the SVG stays small for long logs.
    assert!(fig.svg.len() < 400_000, "SVG is {} bytes", fig.svg.len());
}

#[test]
fn training_terms_that_stay_zero_are_named_not_drawn() {
    let mut runs = synthetic::training_runs(2_000, 4, 2);
    for r in &mut runs {
        r.sparsity_loss_name = "AuxK".into();
        r.sparsity_loss.iter_mut().for_each(|v| *v = 0.0);
        r.dead_fraction.iter_mut().for_each(|v| *v = 0.0);
    }
    let fig = training_curves(&runs, &opts()).unwrap();
    let spec = fig.interactive.clone().unwrap_or_default();
    assert!(spec.contains("\"title\":\"Reconstruction MSE\""), "{spec}");
    for gone in ["AuxK loss", "Dead features"] {
        assert!(!spec.contains(&format!("\"title\":\"{gone}\"")), "the {gone} panel is still drawn");
    }
    assert!(spec.contains("The AuxK loss is 0 at every logged step"), "{spec}");
    assert!(spec.contains("No feature was dead at any logged step"), "{spec}");
    // One dead fraction above zero brings its panel back.
    runs[0].dead_fraction[1] = 0.01;
    let spec = training_curves(&runs, &opts()).unwrap().interactive.unwrap_or_default();
    assert!(spec.contains("\"title\":\"Dead features\""), "{spec}");
}

#[test]
fn training_validation_and_missing_metrics() {
    let mut r = TrainingCurve { run: "r1".into(), step: vec![0, 1, 2], mse: vec![1.0, 0.5], ..Default::default() };
    let e = training_curves(std::slice::from_ref(&r), &opts()).unwrap_err();
    assert!(e.to_string().contains("run `r1`: 2 values for 3 steps") && e.to_string().contains("mse"), "{e}");
    // Only MSE logged: the other metrics are NaN columns, the figure renders.
    r.mse.push(0.25);
    let fig = training_curves(&[r], &opts()).unwrap();
    assert!(fig.no_data.is_none());
    let Some(Column::F64(l0)) = fig.data.get("l0") else { panic!() };
    assert!(l0.iter().all(|v| v.is_nan()));
    let fig = training_curves(&[], &opts()).unwrap();
    assert!(fig.no_data.is_some());
}

#[test]
fn empty_inputs_give_no_data_figures() {
    let figs = [
        matched_fraction_vs_step(&[], &opts()).unwrap(),
        similarity_heatmap(&[], 20, &opts()).unwrap(),
        sae_losses_per_checkpoint(&[], &opts()).unwrap(),
        sparsity_faithfulness(&[], Some(3.3), &opts()).unwrap(),
        ce_loss_score_frontier(&[], &opts()).unwrap(),
        feature_density(&[], &opts()).unwrap(),
        training_curves(&[], &opts()).unwrap(),
    ];
    for f in &figs {
        assert!(f.no_data.is_some(), "{}", f.name);
        assert!(f.svg.contains("No data"), "{}", f.name);
        let img = decode(&f.png);
        assert_eq!((img.width, img.height), (900, 560));
        assert!(f.data.is_rectangular());
    }
    let nan = [MatchedFraction { step: 0, threshold: 0.1, fraction: f64::NAN }];
    assert!(matched_fraction_vs_step(&nan, &opts()).unwrap().no_data.is_some());
}

#[test]
fn invalid_values_are_errors_not_panics() {
    let bad = [MatchedFraction { step: 10, threshold: 0.3, fraction: 1.5 }];
    let e = matched_fraction_vs_step(&bad, &opts()).unwrap_err();
    assert!(e.to_string().contains("step 10") && e.to_string().contains("fraction"), "{e}");
    let bad = [MatchedFraction { step: 10, threshold: f64::NAN, fraction: 0.5 }];
    assert!(matched_fraction_vs_step(&bad, &opts()).is_err());
    let e = matched_fraction_vs_step(&fractions(), &opts().with_size(100, 100)).unwrap_err();
    assert!(matches!(e, ReportError::InvalidOptions { ref option, .. } if option == "width"), "{e}");
    let e = matched_fraction_vs_step(&fractions(), &opts().with_name("a/b")).unwrap_err();
    assert!(matches!(e, ReportError::InvalidOptions { ref option, .. } if option == "name"), "{e}");
}

#[test]
fn options_size_title_and_name() {
    let o = FigureOptions::default()
        .with_size(640, 400)
        .with_title("Layer 3 <resid_pre> & co")
        .with_name("layer3_fraction");
    let fig = matched_fraction_vs_step(&fractions(), &o).unwrap();
    assert_eq!((fig.name.as_str(), fig.width, fig.height), ("layer3_fraction", 640, 400));
    let img = decode(&fig.png);
    assert_eq!((img.width, img.height), (640, 400));
    // Text is escaped in the SVG.
    assert!(fig.svg.contains("Layer 3 &lt;resid_pre&gt; &amp; co"));
    assert!(!fig.svg.contains("<resid_pre>"));
}

#[test]
fn rendering_is_deterministic() {
    let (p, c) = synthetic::coder_sweep();
    let a = sparsity_faithfulness(&p, Some(c), &opts()).unwrap();
    let b = sparsity_faithfulness(&p, Some(c), &opts()).unwrap();
    assert_eq!(a.svg, b.svg);
    assert_eq!(a.png, b.png);
}

#[test]
fn constant_topk_l0_is_not_a_flat_panel() {
    let mut rows = synthetic::checkpoint_losses(3);
    for r in &mut rows {
        r.l0 = 8.0;
    }
    let fig = sae_losses_per_checkpoint(&rows, &opts()).unwrap();
    assert!(fig.title.contains("L0 = 8 throughout"), "{}", fig.title);
    assert!(!fig.svg.contains("active features per token"));
    let spec: serde_json::Value = serde_json::from_str(fig.interactive.as_deref().unwrap()).unwrap();
    assert_eq!(spec["panels"].as_array().unwrap().len(), 2);
    assert!(spec["note"].as_str().unwrap().contains("TopK"));
}

#[test]
fn ce_per_checkpoint_figure() {
    let rows = synthetic::checkpoint_ce(2);
    let fig = saepipe_report::ce_per_checkpoint(&rows, &opts()).unwrap();
    check_figure(&fig, &opts(), &["LM cross-entropy loss", "CE loss score", "LM alone (ce_clean)", "ce_spliced"]);
    assert_eq!(fig.data.column_names(), ["step", "ce_clean", "ce_spliced", "ce_loss_score"]);
    let mut twice = rows.clone();
    twice[1].step = twice[0].step;
    assert!(saepipe_report::ce_per_checkpoint(&twice, &opts()).unwrap_err().to_string().contains("appears twice"));
}

#[test]
fn heatmap_steps_are_integers_and_hover_data_is_embedded() {
    let sims = synthetic::checkpoint_similarities(256, 1);
    let fig = similarity_heatmap(&sims, 20, &opts()).unwrap();
    let spec: serde_json::Value = serde_json::from_str(fig.interactive.as_deref().unwrap()).unwrap();
    let labels: Vec<&str> = spec["x_labels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(labels.contains(&"1000") && labels.contains(&"143000"), "{labels:?}");
    assert_eq!(spec["values"].as_array().unwrap().len(), sims.len());
    assert_eq!(spec["counts"][0].as_array().unwrap().len(), 20);
}
