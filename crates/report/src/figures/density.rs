//! Feature density: histogram of log10 firing frequency per SAE.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::axis::Axis;
use crate::error::{Result, invalid};
use crate::render::{
    DrawResult, Figure, FigureOptions, Painter, build_chart, de, no_data_figure, render, resolve, title_area,
};
use crate::style;
use saepipe_core::table::{Column, Table};

/// Per-feature firing frequency of one SAE (fraction of tokens on which it is active).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDensity {
    /// The SAE's name in the legend.
    pub name: String,
    /// One value in [0, 1] per feature; 0 for a dead feature.
    pub firing_fraction: Vec<f64>,
}

const NAME: &str = "feature_density";
const BINS_PER_DECADE: f64 = 10.0;
/// Frequencies below this are put in the first bin (no real sample resolves them).
const FLOOR_LOG10: f64 = -10.0;

/// Figure 5: histogram of log10 firing frequency as a ridgeline, one row per SAE in
/// the given order (each row scaled to its own tallest bin). Dead features
/// (frequency 0) cannot be placed on a log axis; their count is in the row label and
/// in the plot data (`n_dead`).
pub fn feature_density(saes: &[FeatureDensity], opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, NAME, "Feature density (firing frequency per feature)")?;
    let mut min_log = 0.0f64;
    for s in saes {
        for (j, &f) in s.firing_fraction.iter().enumerate() {
            if !(0.0..=1.0).contains(&f) {
                return Err(invalid(
                    &name,
                    "firing_fraction",
                    format!("SAE `{}`, feature {j}: {f} is outside [0, 1]", s.name),
                ));
            }
            if f > 0.0 {
                min_log = min_log.min(f.log10());
            }
        }
    }
    let lo = (min_log.max(FLOOR_LOG10) * 2.0).floor() / 2.0;
    let lo = lo.min(-1.0);
    let n_bins = ((0.0 - lo) * BINS_PER_DECADE).round() as usize;
    let width = -lo / n_bins as f64;

    let mut hists = Vec::new();
    let (mut d_sae, mut d_lo, mut d_hi, mut d_count, mut d_dead, mut d_n) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in saes {
        let mut counts = vec![0i64; n_bins];
        let mut dead = 0i64;
        for &f in &s.firing_fraction {
            if f == 0.0 {
                dead += 1;
                continue;
            }
            let b = (((f.log10().max(lo) - lo) / width).floor() as usize).min(n_bins - 1);
            counts[b] += 1;
        }
        for (b, &c) in counts.iter().enumerate() {
            d_sae.push(s.name.clone());
            d_lo.push(lo + b as f64 * width);
            d_hi.push(lo + (b + 1) as f64 * width);
            d_count.push(c);
            d_dead.push(dead);
            d_n.push(s.firing_fraction.len() as i64);
        }
        hists.push((s.name.clone(), counts, dead, s.firing_fraction.len()));
    }
    let data = Table::default()
        .with("coder", Column::Str(d_sae))
        .with("log10_freq_lo", Column::F64(d_lo))
        .with("log10_freq_hi", Column::F64(d_hi))
        .with("count", Column::I64(d_count))
        .with("n_dead", Column::I64(d_dead))
        .with("n_features", Column::I64(d_n));
    let max_count = hists.iter().flat_map(|h| h.1.iter()).copied().max().unwrap_or(0);
    if max_count == 0 {
        let reason = if saes.iter().all(|s| s.firing_fraction.is_empty()) {
            "no feature densities were given".to_string()
        } else {
            let dead: i64 = hists.iter().map(|h| h.2).sum();
            format!("all {dead} features are dead (firing frequency 0)")
        };
        return no_data_figure(name, title, opts, &reason, data);
    }
    let spec = serde_json::json!({
        "kind": "ridgeline",
        "title": title,
        "x_label": "log10 firing frequency (fraction of tokens)",
        "edges": (0..=n_bins).map(|b| lo + b as f64 * width).collect::<Vec<_>>(),
        "rows": hists.iter().enumerate().map(|(i, (name, counts, dead, n))| serde_json::json!({
            "name": name, "counts": counts, "dead": dead, "n": n,
            "color": crate::interactive::hex(style::categorical(i)),
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let painter = Density { title: &title, hists, lo, width };
    Ok(render(name, title.clone(), opts, &painter, data, None)?.with_interactive(spec))
}

struct Density<'a> {
    title: &'a str,
    hists: Vec<(String, Vec<i64>, i64, usize)>,
    lo: f64,
    width: f64,
}

/// Height of one ridge in rows (a little overlap keeps tall ridges readable).
const RIDGE: f64 = 0.92;

impl Painter for Density<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let area = title_area(root, self.title)?;
        let n = self.hists.len();
        // One row per coder, top to bottom in the given order; each ridge is scaled
        // to its own tallest bin (shapes compare; counts are in the data and on hover).
        let labels: Vec<String> = self
            .hists
            .iter()
            .rev()
            .map(
                |(name, _, dead, total)| {
                    if *dead > 0 { format!("{name} ({dead}/{total} dead)") } else { name.clone() }
                },
            )
            .collect();
        let y = Axis::categorical(labels, n);
        let decades = -self.lo;
        let x = Axis::linear_fixed(self.lo, 0.0, if decades > 6.0 { 1.0 } else { 0.5 });
        let mut chart = build_chart(&area, None, &x, &y, "log10 firing frequency (fraction of tokens)", "", 24)?;
        for (i, (_, counts, _, _)) in self.hists.iter().enumerate() {
            let row = (n - 1 - i) as f64;
            let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
            let color = style::categorical(i);
            let mut pts = Vec::with_capacity(2 * counts.len() + 2);
            pts.push((self.lo, row));
            for (b, &c) in counts.iter().enumerate() {
                let x0 = self.lo + b as f64 * self.width;
                let h = row + RIDGE * c as f64 / max;
                pts.push((x0, h));
                pts.push((x0 + self.width, h));
            }
            pts.push((0.0, row));
            chart
                .draw_series(
                    AreaSeries::new(pts, row, color.mix(0.35)).border_style(ShapeStyle::from(&color).stroke_width(2)),
                )
                .map_err(de)?;
        }
        Ok(())
    }
}
