//! Training loss curves of several SAE/transcoder runs.

use crate::axis::Axis;
use crate::error::{Result, invalid};
use crate::figures::matching::PanelGrid;
use crate::render::{
    Figure, FigureOptions, LegendEntry, LineKind, LinePanel, LineSpec, decimate, no_data_figure, render, resolve,
};
use crate::style::{self, Marker};
use saepipe_core::table::{Column, Table};

/// The training log of one run, column by column. A metric that the run did not log is
/// an empty vector; otherwise every column has one value per logged step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainingCurve {
    /// The run's name in the legend.
    pub run: String,
    /// Name of the sparsity term in `sparsity_loss`, e.g. `"L1"` or `"AuxK"`.
    pub sparsity_loss_name: String,
    /// Training step of each logged value.
    pub step: Vec<u64>,
    /// Reconstruction MSE loss.
    pub mse: Vec<f64>,
    /// The sparsity (or auxiliary) loss term.
    pub sparsity_loss: Vec<f64>,
    /// Mean number of active features per token.
    pub l0: Vec<f64>,
    /// Fraction of features counted as dead at that step, in [0, 1].
    pub dead_fraction: Vec<f64>,
}

const NAME: &str = "training_curves";

/// Colours repeat after ten runs; later runs are dashed so they stay distinguishable.
fn line_kind(i: usize) -> LineKind {
    if i < style::N_CATEGORICAL { LineKind::Solid } else { LineKind::Dashed }
}
/// Points per drawn line; the plot data keeps every logged step.
const MAX_DRAWN_POINTS: usize = 1500;

/// Figure 6: MSE, sparsity loss (L1/AuxK), L0 and dead fraction vs. training step, one
/// line per run, as a 2 × 2 grid with a shared legend.
pub fn training_curves(runs: &[TrainingCurve], opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, NAME, "SAE training curves")?;
    for r in runs {
        let n = r.step.len();
        for (col, len) in [
            ("mse", r.mse.len()),
            ("sparsity_loss", r.sparsity_loss.len()),
            ("l0", r.l0.len()),
            ("dead_fraction", r.dead_fraction.len()),
        ] {
            if len != 0 && len != n {
                return Err(invalid(&name, col, format!("run `{}`: {len} values for {n} steps", r.run)));
            }
        }
        if let Some((j, v)) =
            r.dead_fraction.iter().enumerate().find(|(_, v)| v.is_finite() && !(0.0..=1.0).contains(*v))
        {
            return Err(invalid(&name, "dead_fraction", format!("run `{}`, row {j}: {v} is outside [0, 1]", r.run)));
        }
    }
    let col = |v: &Vec<f64>, n: usize| {
        if v.is_empty() { vec![f64::NAN; n] } else { v.clone() }
    };
    let mut data = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in runs {
        let n = r.step.len();
        data.0.extend(std::iter::repeat_n(r.run.clone(), n));
        data.1.extend(r.step.iter().map(|&s| s as i64));
        data.2.extend(col(&r.mse, n));
        data.3.extend(col(&r.sparsity_loss, n));
        data.4.extend(col(&r.l0, n));
        data.5.extend(col(&r.dead_fraction, n));
    }
    let any_finite = [&data.2, &data.3, &data.4, &data.5].iter().any(|c| c.iter().any(|v| v.is_finite()));
    let table = Table::default()
        .with("coder", Column::Str(data.0))
        .with("step", Column::I64(data.1))
        .with("mse", Column::F64(data.2))
        .with("sparsity_loss", Column::F64(data.3))
        .with("l0", Column::F64(data.4))
        .with("dead_fraction", Column::F64(data.5));
    if !any_finite {
        let reason = if runs.iter().all(|r| r.step.is_empty()) {
            "no training steps were logged"
        } else {
            "no finite loss values were logged"
        };
        return no_data_figure(name, title, opts, reason, table);
    }

    let x = Axis::linear(
        runs.iter().flat_map(|r| r.step.iter()).map(|&s| s as f64).fold(f64::INFINITY, f64::min),
        runs.iter().flat_map(|r| r.step.iter()).map(|&s| s as f64).fold(f64::NEG_INFINITY, f64::max),
        5,
    );
    let mut sparsity_names: Vec<&str> = Vec::new();
    for r in runs.iter().filter(|r| !r.sparsity_loss.is_empty()) {
        let n = if r.sparsity_loss_name.is_empty() { "sparsity" } else { r.sparsity_loss_name.as_str() };
        if !sparsity_names.contains(&n) {
            sparsity_names.push(n);
        }
    }
    let sparsity_title = if sparsity_names.is_empty() {
        "Sparsity loss".to_string()
    } else {
        format!("{} loss", sparsity_names.join(" / "))
    };

    type Get = fn(&TrainingCurve) -> &Vec<f64>;
    let panel = |caption: String, y_desc: &str, get: Get, log_ratio: f64, fixed_unit: bool| {
        let vals = runs.iter().flat_map(|r| get(r).iter().copied());
        let y = if fixed_unit {
            let max = vals.filter(|v| v.is_finite()).fold(0.0f64, f64::max);
            Axis::linear(0.0, max.max(0.01), 5)
        } else {
            Axis::auto(vals, log_ratio)
        };
        let lines = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pts: Vec<(f64, f64)> =
                    r.step.iter().zip(get(r)).map(|(&s, &v)| (x.fwd(s as f64), y.fwd(v))).collect();
                LineSpec {
                    name: r.run.clone(),
                    color: style::categorical(i),
                    marker: Marker::None,
                    line: line_kind(i),
                    points: decimate(&pts, MAX_DRAWN_POINTS),
                }
            })
            .collect();
        LinePanel {
            caption: Some(caption),
            x: x.clone(),
            x_desc: "training step".into(),
            y_desc: format!("{y_desc}{}", y.description_suffix()),
            y,
            lines,
        }
    };
    // TopK runs log L0 = k at every step: flat lines say nothing, so the panel is
    // left out (and the title says why) when every run's L0 is constant.
    let flat_l0 = runs.iter().all(|r| {
        let v: Vec<f64> = r.l0.iter().copied().filter(|x| x.is_finite()).collect();
        v.iter().all(|&x| (x - v[0]).abs() <= 1e-3 * v[0].abs().max(1.0))
    }) && runs.iter().any(|r| r.l0.iter().any(|x| x.is_finite()));
    // A term that is 0 at every logged step (AuxK with no dead latents, a run
    // without dead features) draws a flat line at 0: left out, and said so.
    let all_zero = |get: Get| {
        runs.iter().any(|r| get(r).iter().any(|x| x.is_finite()))
            && runs.iter().all(|r| get(r).iter().all(|&x| !x.is_finite() || x == 0.0))
    };
    let (zero_sparsity, zero_dead) = (all_zero(|r| &r.sparsity_loss), all_zero(|r| &r.dead_fraction));
    let mut notes = Vec::new();
    let mut panels = vec![panel("Reconstruction MSE".into(), "loss", |r| &r.mse, 10.0, false)];
    if zero_sparsity {
        notes.push(format!("The {sparsity_title} is 0 at every logged step, so it is not plotted."));
    } else {
        panels.push(panel(sparsity_title, "loss", |r| &r.sparsity_loss, 10.0, false));
    }
    if flat_l0 {
        notes.push("Every run's L0 is constant (TopK: L0 = k), so it is not plotted; the table has it.".into());
    } else {
        panels.push(panel("L0".into(), "features/token", |r| &r.l0, 10.0, false));
    }
    if zero_dead {
        notes.push("No feature was dead at any logged step, so the dead fraction is not plotted.".into());
    } else {
        panels.push(panel("Dead features".into(), "fraction", |r| &r.dead_fraction, 0.0, true));
    }
    let title = if flat_l0 { format!("{title} (L0 constant: TopK)") } else { title };
    let note = notes.join(" ");
    let cols = match panels.len() {
        1 => 1,
        3 => 3,
        _ => 2,
    };
    let legend = runs
        .iter()
        .enumerate()
        .map(|(i, r)| LegendEntry {
            label: r.run.clone(),
            color: style::categorical(i),
            line: line_kind(i),
            marker: Marker::None,
        })
        .collect();
    let spec = super::matching::grid_json(&title, &panels, cols, &note);
    Ok(render(name, title.clone(), opts, &PanelGrid { title: &title, legend, panels, cols }, table, None)?
        .with_interactive(spec))
}
