//! Feature density: histogram of log10 firing frequency per SAE.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::axis::{Axis, nice_step};
use crate::error::{Result, invalid};
use crate::render::{
    DrawResult, Figure, FigureOptions, LegendEntry, LineKind, Painter, build_chart, de, legend_strip, no_data_figure,
    render, resolve, title_area,
};
use crate::style::{self, Marker};
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

/// Figure 5: histogram of log10 firing frequency, one outlined series per SAE. Dead
/// features (frequency 0) cannot be placed on a log axis; their count is in the legend
/// and in the plot data (`n_dead`).
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
        .with("sae", Column::Str(d_sae))
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
    let painter = Density { title: &title, hists, lo, width, max_count };
    render(name, title.clone(), opts, &painter, data, None)
}

struct Density<'a> {
    title: &'a str,
    hists: Vec<(String, Vec<i64>, i64, usize)>,
    lo: f64,
    width: f64,
    max_count: i64,
}

impl Painter for Density<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let area = title_area(root, self.title)?;
        let legend: Vec<LegendEntry> = self
            .hists
            .iter()
            .enumerate()
            .map(|(i, (name, _, dead, n))| LegendEntry {
                label: format!("{name} ({dead} dead of {n})"),
                color: style::categorical(i),
                line: LineKind::Patch,
                marker: Marker::None,
            })
            .collect();
        let area = legend_strip(&area, &legend)?;
        let decades = -self.lo;
        let x = Axis::linear_fixed(self.lo, 0.0, if decades > 6.0 { 1.0 } else { 0.5 });
        let top = self.max_count as f64 * 1.08;
        let y = Axis::linear_fixed(0.0, top, nice_step(top / 6.0));
        let mut chart = build_chart(
            &area,
            None,
            &x,
            &y,
            "log10 firing frequency (fraction of tokens)",
            "features per bin (count)",
            24,
        )?;
        for (i, (_, counts, _, _)) in self.hists.iter().enumerate() {
            let color = style::categorical(i);
            // Step outline: each bin contributes its two top corners.
            let mut pts = Vec::with_capacity(2 * counts.len() + 2);
            pts.push((self.lo, 0.0));
            for (b, &c) in counts.iter().enumerate() {
                let x0 = self.lo + b as f64 * self.width;
                pts.push((x0, c as f64));
                pts.push((x0 + self.width, c as f64));
            }
            pts.push((0.0, 0.0));
            chart
                .draw_series(
                    AreaSeries::new(pts, 0.0, color.mix(0.18)).border_style(ShapeStyle::from(&color).stroke_width(2)),
                )
                .map_err(de)?;
        }
        Ok(())
    }
}
