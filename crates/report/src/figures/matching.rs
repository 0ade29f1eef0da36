//! Figures of the feature-matching-through-training workflow: matched fraction per
//! threshold, matched-similarity heatmap, SAE losses per checkpoint.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{Axis, nice_step, trim_num};
use crate::error::{ReportError, Result, invalid};
use crate::interactive;
use crate::render::{
    DrawResult, Figure, FigureOptions, LegendEntry, LineKind, LinePanel, LineSpec, Painter, build_chart, de,
    legend_strip, no_data_figure, render, resolve, title_area,
};
use crate::style::{self, Marker};
use saepipe_core::table::{Column, Table};

/// Distance thresholds of the checkpoint-matching study (distance = 1 − cosine
/// similarity): 0.1 … 0.9 in steps of 0.1.
pub const DEFAULT_DISTANCE_THRESHOLDS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Fraction of the reference SAE's features matched at one checkpoint and threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchedFraction {
    /// LM training step of the checkpoint whose SAE was matched against the reference.
    pub step: u64,
    /// Distance threshold (distance = 1 − similarity of the assigned pair).
    pub threshold: f64,
    /// Matched reference features / all reference features, in [0, 1]; NaN = missing.
    pub fraction: f64,
}

/// Computes [`MatchedFraction`] rows from the assigned-pair similarities of one
/// checkpoint (one entry per reference feature). A feature is matched at threshold `d`
/// when `1 − similarity ≤ d`; non-finite similarities (dead or unassigned features)
/// never match but still count in the denominator.
pub fn matched_fractions(step: u64, similarities: &[f64], thresholds: &[f64]) -> Vec<MatchedFraction> {
    thresholds
        .iter()
        .map(|&threshold| {
            let n = similarities.len();
            let matched = similarities.iter().filter(|s| s.is_finite() && 1.0 - **s <= threshold + 1e-12).count();
            let fraction = if n == 0 { f64::NAN } else { matched as f64 / n as f64 };
            MatchedFraction { step, threshold, fraction }
        })
        .collect()
}

const FRACTION_NAME: &str = "matched_fraction";

/// Figure 1: fraction of reference features matched vs. LM training step, one line per
/// distance threshold. The step axis is symlog (log10(1 + step)) when checkpoints span
/// orders of magnitude, so step 0 is shown.
pub fn matched_fraction_vs_step(rows: &[MatchedFraction], opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, FRACTION_NAME, "Reference features matched through LM training")?;
    for (i, r) in rows.iter().enumerate() {
        if !r.threshold.is_finite() {
            return Err(invalid(&name, "threshold", format!("row {i}: threshold is {}", r.threshold)));
        }
        if r.fraction.is_finite() && !(-1e-9..=1.0 + 1e-9).contains(&r.fraction) {
            return Err(invalid(
                &name,
                "fraction",
                format!("row {i} (step {}): {} is outside [0, 1]", r.step, r.fraction),
            ));
        }
        if r.fraction.is_infinite() {
            return Err(invalid(&name, "fraction", format!("row {i} (step {}): infinite", r.step)));
        }
    }
    let mut sorted = rows.to_vec();
    sorted.sort_by(|a, b| a.threshold.total_cmp(&b.threshold).then(a.step.cmp(&b.step)));
    let data = Table::default()
        .with("step", Column::I64(sorted.iter().map(|r| r.step as i64).collect()))
        .with("threshold", Column::F64(sorted.iter().map(|r| r.threshold).collect()))
        .with("fraction", Column::F64(sorted.iter().map(|r| r.fraction).collect()));
    if !sorted.iter().any(|r| r.fraction.is_finite()) {
        return no_data_figure(name, title, opts, "no finite matched fractions were given", data);
    }

    let thresholds = super::sorted_unique(sorted.iter().map(|r| r.threshold).collect());
    let x = Axis::checkpoint_steps(sorted.iter().filter(|r| r.fraction.is_finite()).map(|r| r.step as f64));
    let n = thresholds.len();
    let mut lines = Vec::new();
    let mut legend = Vec::new();
    for (i, &t) in thresholds.iter().enumerate() {
        let color = style::sequential(i, n);
        let points = sorted.iter().filter(|r| r.threshold == t).map(|r| (x.fwd(r.step as f64), r.fraction)).collect();
        let label = format!("distance ≤ {}", trim_num(t, 3));
        lines.push(LineSpec { name: label.clone(), color, marker: Marker::Circle, line: LineKind::Solid, points });
        legend.push(LegendEntry { label, color, line: LineKind::Solid, marker: Marker::Circle });
    }
    let panel = LinePanel {
        caption: None,
        x_desc: format!("LM training step{}", x.description_suffix()),
        x,
        y: Axis::linear_fixed(-0.02, 1.02, 0.2),
        y_desc: "fraction of reference features matched".into(),
        lines,
    };
    let spec = single_panel_json(&title, &panel, "");
    Ok(render(name, title.clone(), opts, &SinglePanel { title: &title, legend, panel }, data, None)?
        .with_interactive(spec))
}

/// The interactive description of a one-panel line figure.
pub(crate) fn single_panel_json(title: &str, panel: &LinePanel, note: &str) -> String {
    let names: Vec<String> = panel.lines.iter().map(|l| l.name.clone()).collect();
    interactive::lines_json(title, vec![interactive::panel_json(panel, &names, "")], 1, note)
}

/// The interactive description of a grid of line panels.
pub(crate) fn grid_json(title: &str, panels: &[LinePanel], cols: usize, note: &str) -> String {
    let v = panels
        .iter()
        .map(|p| {
            let names: Vec<String> = p.lines.iter().map(|l| l.name.clone()).collect();
            interactive::panel_json(p, &names, "")
        })
        .collect();
    interactive::lines_json(title, v, cols, note)
}

/// Title, legend strip and one line panel.
pub(crate) struct SinglePanel<'a> {
    pub title: &'a str,
    pub legend: Vec<LegendEntry>,
    pub panel: LinePanel,
}

impl Painter for SinglePanel<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let area = title_area(root, self.title)?;
        let area = legend_strip(&area, &self.legend)?;
        self.panel.draw(&area, 24)
    }
}

/// Similarities of the assigned pairs between one checkpoint's SAE and the reference SAE
/// (one per reference feature; NaN for dead/unassigned features).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSimilarities {
    /// Training step of the LM checkpoint.
    pub step: u64,
    /// One similarity in [-1, 1] (or NaN) per reference feature.
    pub similarities: Vec<f64>,
}

const HEATMAP_NAME: &str = "matched_similarity_heatmap";

/// Figure 2: histogram of matched similarity per checkpoint as a heatmap (x: checkpoint,
/// y: similarity bin, colour: fraction of that checkpoint's matched features), with a
/// colour bar. Non-finite similarities (dead/unassigned) are left out of the fractions
/// and counted in the plot data (`n_unmatched`).
pub fn similarity_heatmap(
    checkpoints: &[CheckpointSimilarities],
    n_bins: usize,
    opts: &FigureOptions,
) -> Result<Figure> {
    let (name, title) = resolve(opts, HEATMAP_NAME, "Matched-feature similarity through LM training")?;
    if !(1..=500).contains(&n_bins) {
        return Err(ReportError::InvalidOptions {
            figure: name,
            option: "n_bins".into(),
            reason: format!("{n_bins} is outside 1..=500"),
        });
    }
    let mut cps: Vec<&CheckpointSimilarities> = checkpoints.iter().collect();
    cps.sort_by_key(|c| c.step);
    if let Some(w) = cps.windows(2).find(|w| w[0].step == w[1].step) {
        return Err(invalid(&name, "step", format!("checkpoint step {} appears twice", w[0].step)));
    }
    let mut min = 0.0f64;
    for c in &cps {
        for (j, &s) in c.similarities.iter().enumerate() {
            if s.is_finite() && !(-1.0 - 1e-6..=1.0 + 1e-6).contains(&s) {
                return Err(invalid(
                    &name,
                    "similarities",
                    format!("step {}, feature {j}: {s} is not a cosine similarity", c.step),
                ));
            }
            if s.is_finite() {
                min = min.min(s);
            }
        }
    }
    // Bins span [lo, 1]: 0 unless some similarity is negative (decoder cosines can be),
    // then down to the next multiple of 0.1.
    let lo = ((min * 10.0).floor() / 10.0).max(-1.0);
    let width = (1.0 - lo) / n_bins as f64;
    // counts[c][b], fraction of the checkpoint's finite similarities.
    let mut grid = Vec::with_capacity(cps.len());
    let (mut d_step, mut d_lo, mut d_hi, mut d_count, mut d_frac, mut d_unmatched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in &cps {
        let mut counts = vec![0i64; n_bins];
        let mut finite = 0i64;
        for &s in &c.similarities {
            if s.is_finite() {
                let b = (((s - lo) / width).floor().max(0.0) as usize).min(n_bins - 1);
                counts[b] += 1;
                finite += 1;
            }
        }
        let unmatched = c.similarities.len() as i64 - finite;
        let fracs: Vec<f64> =
            counts.iter().map(|&k| if finite > 0 { k as f64 / finite as f64 } else { f64::NAN }).collect();
        for b in 0..n_bins {
            d_step.push(c.step as i64);
            d_lo.push(lo + b as f64 * width);
            d_hi.push(lo + (b + 1) as f64 * width);
            d_count.push(counts[b]);
            d_frac.push(fracs[b]);
            d_unmatched.push(unmatched);
        }
        grid.push(fracs);
    }
    let data = Table::default()
        .with("step", Column::I64(d_step))
        .with("bin_lo", Column::F64(d_lo))
        .with("bin_hi", Column::F64(d_hi))
        .with("count", Column::I64(d_count))
        .with("fraction", Column::F64(d_frac))
        .with("n_unmatched", Column::I64(d_unmatched));
    let vmax = grid.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
    if vmax <= 0.0 {
        let reason =
            if cps.is_empty() { "no checkpoints were given" } else { "no checkpoint has a finite matched similarity" };
        return no_data_figure(name, title, opts, reason, data);
    }
    let labels: Vec<String> = cps.iter().map(|c| c.step.to_string()).collect();
    let counts: Vec<Vec<i64>> = grid.iter().enumerate().map(|(i, _)| d_count_of(&data, i * n_bins, n_bins)).collect();
    let unmatched: Vec<i64> =
        cps.iter().map(|c| c.similarities.iter().filter(|s| !s.is_finite()).count() as i64).collect();
    let spec = serde_json::json!({
        "kind": "heatmap",
        "title": title,
        "x_label": "LM training step (checkpoint)",
        "y_label": "matched cosine similarity",
        "value_label": "fraction of the checkpoint's matched features",
        "x_labels": labels.clone(),
        "y_edges": (0..=n_bins).map(|b| lo + b as f64 * width).collect::<Vec<_>>(),
        "values": grid.iter().map(|col| col.iter().map(|&v| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null }).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "counts": counts,
        "unmatched": unmatched,
        "vmax": vmax,
        "colors": (0..=8).map(|k| interactive::hex(style::viridis(k as f64 / 8.0))).collect::<Vec<_>>(),
        "sqrt": true,
    })
    .to_string();
    let painter = Heatmap { title: &title, labels, grid, lo, width, vmax };
    Ok(render(name, title.clone(), opts, &painter, data, None)?.with_interactive(spec))
}

fn d_count_of(data: &Table, start: usize, n: usize) -> Vec<i64> {
    match data.columns.iter().find(|(c, _)| c == "count") {
        Some((_, Column::I64(v))) => v[start..start + n].to_vec(),
        _ => vec![0; n],
    }
}

struct Heatmap<'a> {
    title: &'a str,
    labels: Vec<String>,
    grid: Vec<Vec<f64>>,
    lo: f64,
    width: f64,
    vmax: f64,
}

const COLORBAR_W: u32 = 130;

impl Painter for Heatmap<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let area = title_area(root, self.title)?;
        let (w, _) = area.dim_in_pixel();
        let (main, _) = area.split_horizontally(w.saturating_sub(COLORBAR_W));
        // ~60 px per label keeps step labels from colliding.
        let max_labels = ((w.saturating_sub(COLORBAR_W + 100)) / 60).max(2) as usize;
        let x = Axis::categorical(self.labels.clone(), max_labels);
        let y = Axis::linear_fixed(self.lo, 1.0, if self.lo < -0.4 { 0.2 } else { 0.1 });
        let mut chart =
            build_chart(&main, None, &x, &y, "LM training step (checkpoint)", "matched cosine similarity", 10)?;
        let no_match = RGBColor(0xe4, 0xe4, 0xe4);
        for (i, fracs) in self.grid.iter().enumerate() {
            chart
                .draw_series(fracs.iter().enumerate().map(|(b, &f)| {
                    let c = if f.is_finite() { style::viridis(color_pos(f, self.vmax)) } else { no_match };
                    let y0 = self.lo + b as f64 * self.width;
                    Rectangle::new([(i as f64, y0), (i as f64 + 1.0, y0 + self.width)], c.filled())
                }))
                .map_err(de)?;
        }
        let (px, py) = chart.plotting_area().get_pixel_range();
        let (ox, oy) = root.get_base_pixel();
        colorbar(
            root,
            px.end - ox + 22,
            (py.start - oy, py.end - oy),
            self.vmax,
            "fraction of checkpoint's matched features (sqrt scale)",
        )
    }
}

/// Colour position of a fraction: square-root scale (matplotlib's PowerNorm(0.5)), so
/// the thin tails of the histograms stay visible next to a dominant bin.
fn color_pos(f: f64, vmax: f64) -> f64 {
    (f / vmax).clamp(0.0, 1.0).sqrt()
}

/// Vertical viridis colour bar for 0..vmax at pixel column `x0`, spanning rows `ys`.
fn colorbar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    x0: i32,
    ys: (i32, i32),
    vmax: f64,
    desc: &str,
) -> DrawResult {
    const BAR_W: i32 = 20;
    const BANDS: i32 = 64;
    let (top, bottom) = ys;
    let h = (bottom - top).max(1) as f64;
    for k in 0..BANDS {
        let y1 = bottom as f64 - h * k as f64 / BANDS as f64;
        let y0 = bottom as f64 - h * (k + 1) as f64 / BANDS as f64;
        let c = style::viridis((k as f64 + 0.5) / BANDS as f64);
        root.draw(&Rectangle::new([(x0, y0.floor() as i32), (x0 + BAR_W, y1.ceil() as i32)], c.filled()))
            .map_err(de)?;
    }
    root.draw(&Rectangle::new([(x0, top), (x0 + BAR_W, bottom)], ShapeStyle::from(&style::REFERENCE).stroke_width(1)))
        .map_err(de)?;
    let step = nice_step(vmax / 6.0);
    let tick = style::text_style(style::TICK_SIZE, style::TICK_TEXT).pos(Pos::new(HPos::Left, VPos::Center));
    let mut widest = 0;
    let mut k = 0.0;
    while k * step <= vmax * (1.0 + 1e-9) {
        let v = k * step;
        let y = bottom - (color_pos(v, vmax) * h).round() as i32;
        root.draw(&PathElement::new(vec![(x0 + BAR_W, y), (x0 + BAR_W + 5, y)], style::REFERENCE)).map_err(de)?;
        let label = trim_num(v, 4);
        widest = widest.max(root.estimate_text_size(&label, &tick).map_err(de)?.0 as i32);
        root.draw(&Text::new(label, (x0 + BAR_W + 8, y), tick.clone())).map_err(de)?;
        k += 1.0;
    }
    let desc_style = style::text_style(style::DESC_SIZE, style::TEXT)
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(desc.to_string(), (x0 + BAR_W + 16 + widest + 10, (top + bottom) / 2), desc_style))
        .map_err(de)?;
    Ok(())
}

/// SAE metrics of one checkpoint's SAE (evaluated on its own LM checkpoint).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointLosses {
    /// Training step of the LM checkpoint.
    pub step: u64,
    /// Mean squared reconstruction error.
    pub mse: f64,
    /// Mean number of active features per token.
    pub l0: f64,
    /// `1 − Σ‖x − x̂‖² / Σ‖x − E[x]‖²`.
    pub explained_variance: f64,
}

const LOSSES_NAME: &str = "sae_losses_per_checkpoint";

/// Figure 3: SAE MSE, L0 and explained variance per LM checkpoint, as three panels that
/// share the step axis. NaN values leave gaps.
pub fn sae_losses_per_checkpoint(rows: &[CheckpointLosses], opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, LOSSES_NAME, "SAE quality per LM checkpoint")?;
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| r.step);
    for r in &rows {
        for (field, v) in [("mse", r.mse), ("l0", r.l0)] {
            if v < 0.0 || v.is_infinite() {
                return Err(invalid(&name, field, format!("step {}: {v} is not a valid {field}", r.step)));
            }
        }
        if r.explained_variance.is_infinite() || r.explained_variance > 1.0 + 1e-9 {
            return Err(invalid(&name, "explained_variance", format!("step {}: {} > 1", r.step, r.explained_variance)));
        }
    }
    let data = Table::default()
        .with("step", Column::I64(rows.iter().map(|r| r.step as i64).collect()))
        .with("mse", Column::F64(rows.iter().map(|r| r.mse).collect()))
        .with("l0", Column::F64(rows.iter().map(|r| r.l0).collect()))
        .with("explained_variance", Column::F64(rows.iter().map(|r| r.explained_variance).collect()));
    let any = rows.iter().any(|r| r.mse.is_finite() || r.l0.is_finite() || r.explained_variance.is_finite());
    if !any {
        return no_data_figure(name, title, opts, "no checkpoint has a finite MSE, L0 or explained variance", data);
    }
    let x = Axis::checkpoint_steps(rows.iter().map(|r| r.step as f64));
    let x_desc = format!("LM training step{}", x.description_suffix());
    let metric = |i: usize, caption: &str, y_desc: &str, get: fn(&CheckpointLosses) -> f64, log_ratio: f64| {
        step_panel(&rows, &x, &x_desc, i, caption, y_desc, get, log_ratio)
    };
    // TopK SAEs have L0 = k at every checkpoint: a flat panel says nothing, so it
    // is left out and the constant is named in the title instead.
    let l0s: Vec<f64> = rows.iter().map(|r| r.l0).filter(|v| v.is_finite()).collect();
    let constant_l0 = !l0s.is_empty() && l0s.iter().all(|&v| (v - l0s[0]).abs() <= 1e-3 * l0s[0].abs().max(1.0));
    let mut panels = vec![metric(0, "Reconstruction MSE", "mean squared error", |r| r.mse, 30.0)];
    let mut note = String::new();
    if constant_l0 && rows.len() > 1 {
        note = format!("L0 is {} at every checkpoint (TopK: L0 = k), so it is not plotted.", trim_num(l0s[0], 2));
    } else {
        panels.push(metric(1, "L0", "active features per token", |r| r.l0, 30.0));
    }
    panels.push(metric(3, "Explained variance", "fraction of variance", |r| r.explained_variance, f64::INFINITY));
    let cols = panels.len();
    let title = if note.is_empty() { title } else { format!("{title} (L0 = {} throughout)", trim_num(l0s[0], 2)) };
    let spec = grid_json(&title, &panels, cols, &note);
    let painter = PanelGrid { title: &title, legend: Vec::new(), panels, cols };
    Ok(render(name, title.clone(), opts, &painter, data, None)?.with_interactive(spec))
}

/// A one-series panel of a per-checkpoint metric.
#[allow(clippy::too_many_arguments)]
fn step_panel<R>(
    rows: &[R],
    x: &Axis,
    x_desc: &str,
    i: usize,
    caption: &str,
    y_desc: &str,
    get: impl Fn(&R) -> f64,
    log_ratio: f64,
) -> LinePanel
where
    R: HasStep,
{
    let y = Axis::auto(rows.iter().map(&get), log_ratio);
    let points = rows.iter().map(|r| (x.fwd(r.step() as f64), y.fwd(get(r)))).collect();
    LinePanel {
        caption: Some(caption.to_string()),
        x: x.clone(),
        x_desc: x_desc.to_string(),
        y_desc: format!("{y_desc}{}", y.description_suffix()),
        y,
        lines: vec![LineSpec {
            name: caption.to_string(),
            color: style::categorical(i),
            marker: Marker::Circle,
            line: LineKind::Solid,
            points,
        }],
    }
}

pub(crate) trait HasStep {
    fn step(&self) -> u64;
}
impl HasStep for CheckpointLosses {
    fn step(&self) -> u64 {
        self.step
    }
}
impl HasStep for CheckpointCe {
    fn step(&self) -> u64 {
        self.step
    }
}

/// The language model's loss with and without one checkpoint's coder spliced in
/// (each coder evaluated on its own LM checkpoint).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointCe {
    /// Training step of the LM checkpoint.
    pub step: u64,
    /// The LM's own cross-entropy loss (nats/token), no coder (`ce_clean`).
    pub ce_clean: f64,
    /// Cross-entropy with the coder's reconstruction spliced in (`ce_spliced`).
    pub ce_spliced: f64,
    /// `(ce_ablated − ce_spliced) / (ce_ablated − ce_clean)`: 1 = lossless splice.
    pub ce_loss_score: f64,
}

const CE_NAME: &str = "ce_per_checkpoint";

/// Figure 4: the LM's own loss (clean) and its loss with the checkpoint's coder
/// spliced in, and the CE loss score, per LM checkpoint. NaN values leave gaps.
pub fn ce_per_checkpoint(rows: &[CheckpointCe], opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, CE_NAME, "LM loss and coder CE loss score per checkpoint")?;
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| r.step);
    if let Some(w) = rows.windows(2).find(|w| w[0].step == w[1].step) {
        return Err(invalid(&name, "step", format!("checkpoint step {} appears twice", w[0].step)));
    }
    for r in &rows {
        for (field, v) in [("ce_clean", r.ce_clean), ("ce_spliced", r.ce_spliced)] {
            if v < 0.0 || v.is_infinite() {
                return Err(invalid(&name, field, format!("step {}: {v} is not a CE loss", r.step)));
            }
        }
        if r.ce_loss_score.is_infinite() {
            return Err(invalid(&name, "ce_loss_score", format!("step {}: infinite", r.step)));
        }
    }
    let data = Table::default()
        .with("step", Column::I64(rows.iter().map(|r| r.step as i64).collect()))
        .with("ce_clean", Column::F64(rows.iter().map(|r| r.ce_clean).collect()))
        .with("ce_spliced", Column::F64(rows.iter().map(|r| r.ce_spliced).collect()))
        .with("ce_loss_score", Column::F64(rows.iter().map(|r| r.ce_loss_score).collect()));
    if !rows.iter().any(|r| r.ce_clean.is_finite() || r.ce_spliced.is_finite() || r.ce_loss_score.is_finite()) {
        return no_data_figure(name, title, opts, "no checkpoint has a finite CE loss", data);
    }
    let x = Axis::checkpoint_steps(rows.iter().map(|r| r.step as f64));
    let x_desc = format!("LM training step{}", x.description_suffix());
    let y = Axis::auto(rows.iter().flat_map(|r| [r.ce_clean, r.ce_spliced]), 30.0);
    let line = |name: &str, i: usize, kind: LineKind, marker: Marker, get: fn(&CheckpointCe) -> f64| LineSpec {
        name: name.to_string(),
        color: style::categorical(i),
        marker,
        line: kind,
        points: rows.iter().map(|r| (x.fwd(r.step as f64), y.fwd(get(r)))).collect(),
    };
    let losses = LinePanel {
        caption: Some("LM cross-entropy loss".into()),
        x: x.clone(),
        x_desc: x_desc.clone(),
        y_desc: format!("nats/token{}", y.description_suffix()),
        lines: vec![
            line("LM alone (ce_clean)", 2, LineKind::Solid, Marker::Circle, |r| r.ce_clean),
            line("coder spliced in (ce_spliced)", 1, LineKind::Dashed, Marker::Triangle, |r| r.ce_spliced),
        ],
        y,
    };
    let score =
        step_panel(&rows, &x, &x_desc, 4, "CE loss score", "1 = lossless splice", |r| r.ce_loss_score, f64::INFINITY);
    let legend = losses
        .lines
        .iter()
        .map(|l| LegendEntry { label: l.name.clone(), color: l.color, line: l.line, marker: l.marker })
        .collect();
    let panels = vec![losses, score];
    let spec = grid_json(&title, &panels, 2, "");
    let painter = PanelGrid { title: &title, legend, panels, cols: 2 };
    Ok(render(name, title.clone(), opts, &painter, data, None)?.with_interactive(spec))
}

/// Title, shared legend strip and a grid of line panels.
pub(crate) struct PanelGrid<'a> {
    pub title: &'a str,
    pub legend: Vec<LegendEntry>,
    pub panels: Vec<LinePanel>,
    pub cols: usize,
}

impl Painter for PanelGrid<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let area = title_area(root, self.title)?;
        let area = legend_strip(&area, &self.legend)?;
        let rows = self.panels.len().div_ceil(self.cols);
        let cells = area.split_evenly((rows, self.cols));
        for (i, (panel, cell)) in self.panels.iter().zip(cells.iter()).enumerate() {
            // Panels share the x axis: describe it on the bottom row only.
            if i / self.cols + 1 < rows {
                LinePanel { x_desc: String::new(), ..panel.clone() }.draw(cell, 14)?;
            } else {
                panel.draw(cell, 14)?;
            }
        }
        Ok(())
    }
}
