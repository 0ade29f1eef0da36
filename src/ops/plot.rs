//! `plot`: figures (SVG + PNG + the plotted numbers as Parquet) and one
//! self-contained HTML report from the tables of `match_features`, `evaluate`
//! and `train_sae` stages. Every input kind is optional; a figure is drawn
//! when the inputs it needs are present.
//!
//! Artifact layout: `report.html`, `figures/<name>.svg|png`, `data/<name>.parquet`.

use super::match_features::revision_step;
use super::table::{Table, read_parquet, write_parquet};
use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, StageCtx};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_report as rep;
use saepipe_report::{Cell, Figure, FigureOptions, Report};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The `plot` op: figures and an HTML report from the tables of other stages.
pub struct PlotOp;

/// What one `train_sae` artifact contributes.
struct Trained {
    label: String,
    step: f64,
    summary: Value,
    losses: Table,
    density: Option<Vec<f64>>,
}

fn read_trained(dir: &Path, producer: Option<&str>) -> Result<Trained> {
    let summary: Value = serde_json::from_slice(
        &std::fs::read(dir.join("summary.json"))
            .with_context(|| format!("{} is not a train_sae artifact (no summary.json)", dir.display()))?,
    )?;
    let coder = load_trained_coder(dir)?;
    let label = coder_label(&coder, dir, producer);
    let step = revision_step(summary["model"].as_str().unwrap_or(""));
    let losses = read_parquet(&dir.join("losses.parquet"))?;
    let density = coder.log_sparsity.as_ref().map(|l| l.iter().map(|&x| 10f64.powf(x as f64)).collect());
    Ok(Trained { label, step, summary, losses, density })
}

fn save_figure(out: &Path, fig: &Figure, report: &mut Report) -> Result<()> {
    std::fs::create_dir_all(out.join("figures"))?;
    std::fs::create_dir_all(out.join("data"))?;
    std::fs::write(out.join("figures").join(format!("{}.svg", fig.name)), &fig.svg)?;
    std::fs::write(out.join("figures").join(format!("{}.png", fig.name)), &fig.png)?;
    write_parquet(&fig.data, &out.join("data").join(format!("{}.parquet", fig.name)))?;
    report.add_figure(fig);
    Ok(())
}

fn num(x: f64) -> Cell {
    Cell::Number(x)
}

/// Step of a checkpoint as the figures want it (u64); NaN steps are left out.
fn step_u64(s: f64) -> Option<u64> {
    (s.is_finite() && s >= 0.0).then_some(s as u64)
}

impl Op for PlotOp {
    fn name(&self) -> &'static str {
        "plot"
    }
    /// Seconds of work: not worth a wait in the queue.
    fn slurm_defaults(&self, _params: &super::Params) -> saepipe_slurm::SlurmSettings {
        saepipe_slurm::SlurmSettings { local: Some(true), ..Default::default() }
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "figures (SVG, PNG, Parquet data) and a self-contained HTML report"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["report.html", "figures", "data"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::maybe("matches", Artifacts, "match_features stages"),
            ParamSpec::maybe("evaluations", Artifacts, "evaluate stages"),
            ParamSpec::maybe("training", Artifacts, "train_sae stages (loss curves, per-checkpoint losses, densities)"),
            ParamSpec::optional("title", Str, json!("saepipe report"), "report title"),
            ParamSpec::optional("heatmap_bins", Int, json!(20), "similarity bins of the matching heatmap")
                .range(1, 10_000),
        ]
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let (matches, evals, training) = (
            ctx.input_list("matches").to_vec(),
            ctx.input_list("evaluations").to_vec(),
            ctx.input_list("training").to_vec(),
        );
        if matches.is_empty() && evals.is_empty() && training.is_empty() {
            bail!("nothing to plot: give at least one of `matches`, `evaluations`, `training`");
        }
        let out = ctx.out_dir.clone();
        let opts = FigureOptions::default();
        let mut report = Report::new(p.str("title")?);
        let mut figures = Vec::new();
        let trained: Vec<Trained> = training.iter().map(|d| read_trained(d, ctx.producer(d))).collect::<Result<_>>()?;
        let step_of: BTreeMap<String, f64> = trained.iter().map(|t| (t.label.clone(), t.step)).collect();

        for dir in &matches {
            let summary = read_parquet(&dir.join("summary.parquet"))?;
            let pairs = read_parquet(&dir.join("pairs.parquet"))?;
            let (labels, steps) = (summary.strings("coder")?, summary.f64("step")?);
            let threshold_cols: Vec<(f64, String)> = summary
                .columns
                .iter()
                .filter_map(|(n, _)| {
                    n.strip_prefix("fraction_within_").and_then(|d| d.parse().ok()).map(|d| (d, n.clone()))
                })
                .collect();
            let mut rows = Vec::new();
            for (d, col) in &threshold_cols {
                for (s, f) in steps.iter().zip(summary.f64(col)?) {
                    if let Some(step) = step_u64(*s) {
                        rows.push(rep::MatchedFraction { step, threshold: *d, fraction: f });
                    }
                }
            }
            report.add_section(
                "Feature matching across checkpoints",
                "Each checkpoint's SAE is matched one-to-one onto the reference SAE (maximum total similarity, certified optimal). A reference feature counts as matched at distance d when 1 - similarity <= d; fractions are over the reference features that are alive on the sampled tokens.",
            );
            let fig = rep::matched_fraction_vs_step(&rows, &opts)?;
            save_figure(&out, &fig, &mut report)?;
            figures.push(fig.name.clone());

            let (pair_sae, sims) = (pairs.strings("coder")?, pairs.f64("similarity")?);
            let mut per_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for (label, s) in labels.iter().zip(&steps) {
                if let Some(step) = step_u64(*s) {
                    per_step.insert(
                        step,
                        pair_sae.iter().zip(&sims).filter(|(l, _)| *l == label).map(|(_, &x)| x).collect(),
                    );
                }
            }
            let cps: Vec<rep::CheckpointSimilarities> = per_step
                .into_iter()
                .map(|(step, similarities)| rep::CheckpointSimilarities { step, similarities })
                .collect();
            let fig = rep::similarity_heatmap(&cps, p.usize("heatmap_bins")?, &opts)?;
            save_figure(&out, &fig, &mut report)?;
            figures.push(fig.name.clone());

            let mut cells = Vec::new();
            for i in 0..summary.rows() {
                let mut row = vec![
                    Cell::Text(labels[i].clone()),
                    num(steps[i]),
                    Cell::Int(summary.f64("dead")?[i] as i64),
                    Cell::Int(summary.f64("n_matched")?[i] as i64),
                    num(summary.f64("median_similarity")?[i]),
                ];
                for (_, col) in &threshold_cols {
                    row.push(num(summary.f64(col)?[i]));
                }
                cells.push(row);
            }
            let mut header: Vec<String> =
                ["SAE", "step", "dead", "matched", "median similarity"].map(String::from).to_vec();
            header.extend(threshold_cols.iter().map(|(d, _)| format!("within {d}")));
            report.add_table("Matching summary", &header, cells)?;
        }

        let mut coder_points = Vec::new();
        let mut clean_ce = Vec::new();
        let mut eval_losses = Vec::new();
        let mut densities = Vec::new();
        if !evals.is_empty() {
            report.add_section(
                "Evaluation",
                "Metrics of each coder on held-out tokens, with the coder spliced into the language model.",
            );
        }
        for dir in &evals {
            let m = read_parquet(&dir.join("metrics.parquet"))?;
            let (coders, kinds) = (m.strings("coder")?, m.strings("kind")?);
            let (l0, ce, ce_clean, ev, mse, score) = (
                m.f64("l0")?,
                m.f64("ce_spliced")?,
                m.f64("ce_clean")?,
                m.f64("explained_variance")?,
                m.f64("mse")?,
                m.f64("ce_loss_score")?,
            );
            let mut cells = Vec::new();
            for i in 0..m.rows() {
                coder_points.push(rep::CoderPoint {
                    family: if kinds[i] == "transcoder" { "transcoder".into() } else { "SAE".into() },
                    label: coders[i].clone(),
                    l0: l0[i],
                    ce_loss: ce[i],
                });
                clean_ce.push(ce_clean[i]);
                if let Some(step) = step_of.get(&coders[i]).copied().and_then(step_u64) {
                    eval_losses.push(rep::CheckpointLosses { step, mse: mse[i], l0: l0[i], explained_variance: ev[i] });
                }
                cells.push(vec![
                    Cell::Text(coders[i].clone()),
                    Cell::Text(kinds[i].clone()),
                    num(l0[i]),
                    num(mse[i]),
                    num(ev[i]),
                    num(ce_clean[i]),
                    num(ce[i]),
                    num(score[i]),
                ]);
            }
            report.add_table(
                "Coder metrics",
                &["coder", "kind", "L0", "MSE", "explained variance", "CE clean", "CE spliced", "CE loss score"],
                cells,
            )?;
            if let Ok(f) = read_parquet(&dir.join("features.parquet")) {
                let (c, d) = (f.strings("coder")?, f.f64("density")?);
                for name in coders.iter() {
                    let firing_fraction = c.iter().zip(&d).filter(|(x, _)| *x == name).map(|(_, &v)| v).collect();
                    densities.push(rep::FeatureDensity { name: name.clone(), firing_fraction });
                }
            }
        }
        // Different LMs (checkpoints) have different clean losses; the reference line
        // is only meaningful when they agree.
        let clean =
            (!clean_ce.is_empty() && clean_ce.iter().all(|&c| (c - clean_ce[0]).abs() < 1e-9)).then(|| clean_ce[0]);
        // A frontier across different LMs compares unlike losses: leave it to the
        // table (CE loss score is the comparable number there).
        if !coder_points.is_empty() && clean.is_some() {
            let fig = rep::sparsity_faithfulness(&coder_points, clean, &opts)?;
            save_figure(&out, &fig, &mut report)?;
            figures.push(fig.name.clone());
        }
        // Per-checkpoint losses: from evaluation when present, else the end of training.
        if eval_losses.is_empty() {
            for t in &trained {
                if let Some(step) = step_u64(t.step) {
                    let f = &t.summary["final"];
                    eval_losses.push(rep::CheckpointLosses {
                        step,
                        mse: f["mse"].as_f64().unwrap_or(f64::NAN),
                        l0: f["l0"].as_f64().unwrap_or(f64::NAN),
                        explained_variance: f["explained_variance"].as_f64().unwrap_or(f64::NAN),
                    });
                }
            }
        }
        if eval_losses.len() > 1 {
            let fig = rep::sae_losses_per_checkpoint(&eval_losses, &opts)?;
            save_figure(&out, &fig, &mut report)?;
            figures.push(fig.name.clone());
        }
        if densities.is_empty() {
            densities = trained
                .iter()
                .filter_map(|t| {
                    t.density
                        .clone()
                        .map(|firing_fraction| rep::FeatureDensity { name: t.label.clone(), firing_fraction })
                })
                .collect();
        }
        if !densities.is_empty() {
            let fig = rep::feature_density(&densities, &opts)?;
            save_figure(&out, &fig, &mut report)?;
            figures.push(fig.name.clone());
        }
        if !trained.is_empty() {
            report.add_section(
                "Training",
                "Loss curves of every trained coder (one row of losses.parquet per logged step).",
            );
            let curves: Vec<rep::TrainingCurve> = trained
                .iter()
                .map(|t| -> Result<rep::TrainingCurve> {
                    let l = &t.losses;
                    let l1 = l.f64("l1")?;
                    // The `l1` column is the sparsity penalty: L1 for standard SAEs, the L0 loss for JumpReLU.
                    let penalty = if t.summary["architecture"] == "jumprelu" { "L0 loss" } else { "L1" };
                    let (name, sparsity) =
                        if l1.iter().any(|x| x.is_finite()) { (penalty, l1) } else { ("AuxK", l.f64("auxk")?) };
                    Ok(rep::TrainingCurve {
                        run: t.label.clone(),
                        sparsity_loss_name: name.into(),
                        step: l.f64("step")?.iter().map(|&s| s as u64).collect(),
                        mse: l.f64("mse")?,
                        sparsity_loss: sparsity,
                        l0: l.f64("l0")?,
                        dead_fraction: l.f64("dead_fraction")?,
                    })
                })
                .collect::<Result<_>>()?;
            let fig = rep::training_curves(&curves, &opts)?;
            save_figure(&out, &fig, &mut report)?;
            figures.push(fig.name.clone());
            let cells = trained
                .iter()
                .map(|t| {
                    let s = &t.summary;
                    let f = |k: &str| num(s["final"][k].as_f64().unwrap_or(f64::NAN));
                    vec![
                        Cell::Text(t.label.clone()),
                        Cell::Text(s["architecture"].as_str().unwrap_or("").into()),
                        Cell::Int(s["d_sae"].as_i64().unwrap_or(0)),
                        Cell::Int(s["tokens"].as_i64().unwrap_or(0)),
                        f("mse"),
                        f("l0"),
                        f("explained_variance"),
                        num(s["dead_fraction"].as_f64().unwrap_or(f64::NAN)),
                    ]
                })
                .collect();
            report.add_table(
                "Trained coders (last training step)",
                &["coder", "architecture", "d_sae", "tokens", "MSE", "L0", "explained variance", "dead fraction"],
                cells,
            )?;
        }
        ctx.write_output("report.html", report.to_html().as_bytes())?;
        ctx.logln(format!("report: {}", out.join("report.html").display()));
        Ok(json!({ "figures": figures, "report": "report.html" }))
    }
}
