//! `plot`: figures (SVG + PNG + the plotted numbers as Parquet) and one
//! self-contained HTML report from the tables of `match_features`, `evaluate`
//! and `train_sae` stages, linked to the pages of `inspect_features` and
//! `feature_journey` stages.
//! Every input kind is optional; a figure is drawn when the inputs it needs are
//! present.
//!
//! Artifact layout: `report.html`, `figures/<name>.svg|png`, `data/<name>.parquet`.
//!
//! The report is interactive in a browser (each figure's numbers are embedded
//! as JSON and drawn by an inline script: hover values, box zoom, legend
//! toggles); the static SVG stays in the page (shown with scripts off, or with
//! the "static figure" button) and in `figures/` for papers.

use super::match_features::revision_step;
use super::table::{Table, read_parquet};
use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, StageCtx};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_report as rep;
use saepipe_report::{Cell, Figure, FigureOptions, Link, Report};
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

fn save_figure(ctx: &StageCtx, fig: &Figure, report: &mut Report, figures: &mut Vec<String>) -> Result<()> {
    let out = &ctx.out_dir;
    std::fs::create_dir_all(out.join("figures"))?;
    std::fs::write(out.join("figures").join(format!("{}.svg", fig.name)), &fig.svg)?;
    std::fs::write(out.join("figures").join(format!("{}.png", fig.name)), &fig.png)?;
    ctx.write_table(&fig.data, &format!("data/{}.parquet", fig.name))?;
    report.add_figure(fig);
    figures.push(fig.name.clone());
    Ok(())
}

fn num(x: f64) -> Cell {
    Cell::Number(x)
}

/// An integer cell, "–" when absent.
fn int(x: Option<i64>) -> Cell {
    x.map_or(Cell::Number(f64::NAN), Cell::Int)
}

/// Step of a checkpoint as the figures want it (u64); NaN steps are left out.
fn step_u64(s: f64) -> Option<u64> {
    (s.is_finite() && s >= 0.0).then_some(s as u64)
}

/// Everything the report knows about one coder: one row of the metrics table.
#[derive(Default)]
struct CoderRow {
    step: Option<i64>,
    architecture: String,
    d_sae: Option<i64>,
    tokens: Option<i64>,
    l0: Option<f64>,
    mse: Option<f64>,
    ev: Option<f64>,
    ce_clean: Option<f64>,
    ce_spliced: Option<f64>,
    score: Option<f64>,
    dead_fraction: Option<f64>,
}

/// `(stage, op, key, saepipe version)` of an input artifact, from its manifest.
fn describe_input(ctx: &StageCtx, dir: &Path) -> (String, String, String, String) {
    let m = saepipe_cache::Manifest::read_in(dir).ok().flatten();
    let stage =
        ctx.producer(dir).map(str::to_string).or_else(|| m.as_ref().map(|m| m.stage.clone())).unwrap_or_default();
    match m {
        Some(m) => (stage, m.op, m.key.to_string(), m.saepipe_version),
        None => (stage, String::new(), crate::engine::artifact_key(dir), String::new()),
    }
}

fn fmt_list(v: &[f64]) -> String {
    v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
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
        3
    }
    fn summary(&self) -> &'static str {
        "figures (SVG, PNG, Parquet data) and a self-contained, interactive HTML report"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["report.html", "figures", "data"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::maybe("matches", Artifacts, "match_features stages").labelled(),
            ParamSpec::maybe("evaluations", Artifacts, "evaluate stages").labelled(),
            ParamSpec::maybe("training", Artifacts, "train_sae stages (loss curves, per-checkpoint losses, densities)")
                .labelled(),
            ParamSpec::maybe(
                "features",
                Artifacts,
                "inspect_features and feature_journey stages: their reports are linked",
            )
            .labelled(),
            ParamSpec::optional("title", Str, json!("saepipe report"), "report title"),
            ParamSpec::optional(
                "pipeline",
                Str,
                json!(""),
                "the pipeline's name and file, shown in the report's provenance",
            ),
            ParamSpec::optional("heatmap_bins", Int, json!(20), "similarity bins of the matching heatmap")
                .range(1, 10_000),
        ]
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let (matches, evals, training, features) = (
            ctx.input_list("matches").to_vec(),
            ctx.input_list("evaluations").to_vec(),
            ctx.input_list("training").to_vec(),
            ctx.input_list("features").to_vec(),
        );
        if matches.is_empty() && evals.is_empty() && training.is_empty() {
            bail!("nothing to plot: give at least one of `matches`, `evaluations`, `training`");
        }
        let opts = FigureOptions::default();
        let mut report = Report::new(p.str("title")?);
        let mut figures = Vec::new();
        let trained: Vec<Trained> = training.iter().map(|d| read_trained(d, ctx.producer(d))).collect::<Result<_>>()?;
        let mut coders: BTreeMap<String, CoderRow> = BTreeMap::new();
        for t in &trained {
            let s = &t.summary;
            let f = |k: &str| s["final"][k].as_f64();
            coders.insert(
                t.label.clone(),
                CoderRow {
                    step: step_u64(t.step).map(|s| s as i64),
                    architecture: s["architecture"].as_str().unwrap_or("").into(),
                    d_sae: s["d_sae"].as_i64(),
                    tokens: s["tokens"].as_i64(),
                    l0: f("l0"),
                    mse: f("mse"),
                    ev: f("explained_variance"),
                    dead_fraction: s["dead_fraction"].as_f64(),
                    ..Default::default()
                },
            );
        }

        let mut links = Vec::new();
        for dir in &features {
            let (stage, _, key, _) = describe_input(ctx, dir);
            let short = &key[..key.len().min(12)];
            let pages = [
                ("report.html", "feature report"),
                ("dashboards/index.html", "feature dashboards"),
                ("journey/index.html", "feature journeys"),
            ];
            for (rel, what) in pages {
                if dir.join(rel).is_file() {
                    links.push(Link {
                        label: format!("{what} ({stage})"),
                        href: super::links::artifact_link(ctx, dir, rel, 0),
                        note: format!("stage {stage}, artifact {short}…"),
                    });
                }
            }
        }
        if !links.is_empty() {
            report.add_links("Related reports", links)?;
        }

        let mut thresholds_plotted = Vec::new();
        for dir in &matches {
            let summary = read_parquet(&dir.join("summary.parquet"))?;
            let pairs = read_parquet(&dir.join("pairs.parquet"))?;
            let (labels, steps) = (summary.strings("coder")?, summary.f64("step")?);
            let mut threshold_cols: Vec<(f64, String)> = summary
                .columns
                .iter()
                .filter_map(|(n, _)| {
                    n.strip_prefix("fraction_within_").and_then(|d| d.parse().ok()).map(|d| (d, n.clone()))
                })
                .collect();
            threshold_cols.sort_by(|a, b| a.0.total_cmp(&b.0));
            thresholds_plotted = threshold_cols.iter().map(|(d, _)| *d).collect();
            let mut rows = Vec::new();
            for (d, col) in &threshold_cols {
                for (s, f) in steps.iter().zip(summary.f64(col)?) {
                    if let Some(step) = step_u64(*s) {
                        rows.push(rep::MatchedFraction { step, threshold: *d, fraction: f });
                    }
                }
            }
            for (label, s) in labels.iter().zip(&steps) {
                let row = coders.entry(label.clone()).or_default();
                row.step = row.step.or(step_u64(*s).map(|s| s as i64));
            }
            report.add_section(
                "Feature matching across checkpoints",
                "Each checkpoint's SAE is matched one-to-one onto the reference SAE (maximum total similarity, certified optimal). A reference feature counts as matched at distance d when 1 - similarity <= d; fractions are over the reference features that are alive on the sampled tokens.",
            );
            save_figure(ctx, &rep::matched_fraction_vs_step(&rows, &opts)?, &mut report, &mut figures)?;

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
            save_figure(ctx, &fig, &mut report, &mut figures)?;

            let mut cells = Vec::new();
            let (dead, matched, median) =
                (summary.f64("dead")?, summary.f64("n_matched")?, summary.f64("median_similarity")?);
            for i in 0..summary.rows() {
                let mut row = vec![
                    Cell::Text(labels[i].clone()),
                    int(step_u64(steps[i]).map(|s| s as i64)),
                    Cell::Int(dead[i] as i64),
                    Cell::Int(matched[i] as i64),
                    num(median[i]),
                ];
                for (_, col) in &threshold_cols {
                    row.push(num(summary.f64(col)?[i]));
                }
                cells.push(row);
            }
            let mut header: Vec<String> =
                ["coder", "step", "dead", "matched", "median similarity"].map(String::from).to_vec();
            // Narrow headers keep all nine threshold columns on screen; the caption says what they are.
            header.extend(threshold_cols.iter().map(|(d, _)| format!("≤ {d}")));
            report.add_table("Matching summary (≤ d: fraction matched within distance d)", &header, cells)?;
        }

        let mut coder_points = Vec::new();
        let mut clean_ce = Vec::new();
        let mut densities = Vec::new();
        for dir in &evals {
            let m = read_parquet(&dir.join("metrics.parquet"))?;
            let (names, kinds) = (m.strings("coder")?, m.strings("kind")?);
            let (l0, ce, ce_clean, ev, mse, score) = (
                m.f64("l0")?,
                m.f64("ce_spliced")?,
                m.f64("ce_clean")?,
                m.f64("explained_variance")?,
                m.f64("mse")?,
                m.f64("ce_loss_score")?,
            );
            let arch = m.strings("architecture").ok();
            let d_sae = m.f64("d_sae").ok();
            for i in 0..m.rows() {
                coder_points.push(rep::CoderPoint {
                    family: if kinds[i] == "transcoder" { "transcoder".into() } else { "SAE".into() },
                    label: names[i].clone(),
                    l0: l0[i],
                    ce_loss: ce[i],
                    ce_loss_score: score[i],
                });
                clean_ce.push(ce_clean[i]);
                let row = coders.entry(names[i].clone()).or_default();
                (row.l0, row.mse, row.ev) = (Some(l0[i]), Some(mse[i]), Some(ev[i]));
                (row.ce_clean, row.ce_spliced, row.score) = (Some(ce_clean[i]), Some(ce[i]), Some(score[i]));
                if row.architecture.is_empty()
                    && let Some(a) = &arch
                {
                    row.architecture = a[i].clone();
                }
                if let Some(d) = &d_sae {
                    row.d_sae = row.d_sae.or(Some(d[i] as i64));
                }
            }
            if let Ok(f) = read_parquet(&dir.join("features.parquet")) {
                let (c, d) = (f.strings("coder")?, f.f64("density")?);
                for name in names.iter() {
                    let firing_fraction = c.iter().zip(&d).filter(|(x, _)| *x == name).map(|(_, &v)| v).collect();
                    densities.push(rep::FeatureDensity { name: name.clone(), firing_fraction });
                }
            }
        }
        let step_of = |label: &str| coders.get(label).and_then(|r| r.step).map(|s| s as u64);

        if !coders.is_empty() {
            report.add_section(
                "Coders per checkpoint",
                if evals.is_empty() {
                    "Metrics of each coder at the end of its training."
                } else {
                    "Each coder evaluated on held-out tokens, spliced into the language model it was trained on (for a checkpoint study: its own LM checkpoint). CE clean is the LM's own loss without a coder; the CE loss score is 1 when the splice costs nothing and 0 when it is as bad as zero-ablating the hook."
                },
            );
        }
        let ce_rows: Vec<rep::CheckpointCe> = coders
            .iter()
            .filter(|(_, r)| r.ce_clean.is_some())
            .filter_map(|(l, r)| {
                Some(rep::CheckpointCe {
                    step: step_of(l)?,
                    ce_clean: r.ce_clean?,
                    ce_spliced: r.ce_spliced.unwrap_or(f64::NAN),
                    ce_loss_score: r.score.unwrap_or(f64::NAN),
                })
            })
            .collect();
        let mut distinct_steps: Vec<u64> = ce_rows.iter().map(|r| r.step).collect();
        distinct_steps.dedup();
        if ce_rows.len() > 1 && distinct_steps.len() == ce_rows.len() {
            save_figure(ctx, &rep::ce_per_checkpoint(&ce_rows, &opts)?, &mut report, &mut figures)?;
        }
        let losses: Vec<rep::CheckpointLosses> = coders
            .iter()
            .filter_map(|(l, r)| {
                Some(rep::CheckpointLosses {
                    step: step_of(l)?,
                    mse: r.mse.unwrap_or(f64::NAN),
                    l0: r.l0.unwrap_or(f64::NAN),
                    explained_variance: r.ev.unwrap_or(f64::NAN),
                })
            })
            .collect();
        if losses.len() > 1 {
            save_figure(ctx, &rep::sae_losses_per_checkpoint(&losses, &opts)?, &mut report, &mut figures)?;
        }
        // Different LMs (checkpoints) have different clean losses; the reference line
        // is only meaningful when they agree.
        let clean =
            (!clean_ce.is_empty() && clean_ce.iter().all(|&c| (c - clean_ce[0]).abs() < 1e-9)).then(|| clean_ce[0]);
        // A frontier across different LMs compares unlike losses: leave it to the
        // table (CE loss score is the comparable number there).
        if !coder_points.is_empty() && clean.is_some() {
            save_figure(ctx, &rep::sparsity_faithfulness(&coder_points, clean, &opts)?, &mut report, &mut figures)?;
        }
        // The score is comparable across LMs; a frontier needs coders of different L0.
        let scored: Vec<f64> =
            coder_points.iter().filter(|c| c.l0.is_finite() && c.ce_loss_score.is_finite()).map(|c| c.l0).collect();
        if scored.iter().any(|&l0| (l0 - scored[0]).abs() > 1e-9) {
            save_figure(ctx, &rep::ce_loss_score_frontier(&coder_points, &opts)?, &mut report, &mut figures)?;
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
            // One ridge per coder, in checkpoint order.
            densities.sort_by_key(|d| (step_of(&d.name).unwrap_or(u64::MAX), d.name.clone()));
            let height = (140 + 48 * densities.len() as u32).clamp(opts.height, 4000);
            let fig = rep::feature_density(&densities, &opts.clone().with_size(opts.width, height))?;
            save_figure(ctx, &fig, &mut report, &mut figures)?;
        }
        if !coders.is_empty() {
            let mut rows: Vec<(&String, &CoderRow)> = coders.iter().collect();
            rows.sort_by_key(|(l, r)| (r.step.unwrap_or(i64::MAX), (*l).clone()));
            let opt = |v: Option<f64>| num(v.unwrap_or(f64::NAN));
            let cells = rows
                .iter()
                .map(|(label, r)| {
                    vec![
                        Cell::Text((*label).clone()),
                        int(r.step),
                        Cell::Text(r.architecture.clone()),
                        int(r.d_sae),
                        int(r.tokens),
                        opt(r.l0),
                        opt(r.mse),
                        opt(r.ev),
                        opt(r.ce_clean),
                        opt(r.ce_spliced),
                        opt(r.score),
                        opt(r.dead_fraction),
                    ]
                })
                .collect();
            let source = if evals.is_empty() { "last training step" } else { "held-out evaluation" };
            report.add_table(
                format!("Coder metrics ({source}; training tokens and dead fraction from training)"),
                &[
                    "coder",
                    "step",
                    "architecture",
                    "d_sae",
                    "training tokens",
                    "L0",
                    "MSE",
                    "explained variance",
                    "CE clean (LM alone)",
                    "CE spliced",
                    "CE loss score",
                    "dead fraction",
                ],
                cells,
            )?;
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
            save_figure(ctx, &rep::training_curves(&curves, &opts)?, &mut report, &mut figures)?;
        }

        // Provenance: what made this report, and from which artifacts. Nothing that
        // depends on where or when it ran (paths, clocks): the report is part of a
        // content-addressed artifact and must be byte-identical on every rerun.
        let meta = |k: &str| ctx.table_metadata.get(k).cloned().unwrap_or_default();
        let pipeline = p.str("pipeline").unwrap_or("").to_string();
        let mut facts = vec![
            ("saepipe version".to_string(), meta("saepipe.version")),
            (
                "pipeline".to_string(),
                if pipeline.is_empty() { "(not given: set `pipeline:` on the plot stage)".into() } else { pipeline },
            ),
            ("plot stage".to_string(), ctx.instance.clone()),
            ("plot artifact key".to_string(), meta("saepipe.key")),
        ];
        if !thresholds_plotted.is_empty() {
            facts.push(("matched-fraction thresholds".into(), fmt_list(&thresholds_plotted)));
        }
        facts.push(("similarity heat map bins".into(), p.usize("heatmap_bins")?.to_string()));
        let params: BTreeMap<&String, &Value> = p.0.iter().filter(|(_, v)| !v.is_null()).collect();
        facts.push(("plot parameters".into(), serde_json::to_string(&params)?));
        for dir in &matches {
            if let Ok(Some(m)) = saepipe_cache::Manifest::read_in(dir) {
                facts.push((format!("{} parameters", m.stage), serde_json::to_string(&m.params)?));
            }
        }
        report.add_facts("Provenance", facts);
        let mut inputs = Vec::new();
        for (label, dirs) in
            [("matches", &matches), ("evaluations", &evals), ("training", &training), ("features", &features)]
        {
            for dir in dirs {
                let (stage, op, key, version) = describe_input(ctx, dir);
                inputs.push(vec![
                    Cell::Text(label.into()),
                    Cell::Text(stage),
                    Cell::Text(op),
                    Cell::Text(key),
                    Cell::Text(version),
                ]);
            }
        }
        report.add_table("Input artifacts", &["input", "stage", "op", "key", "made by saepipe"], inputs)?;

        ctx.write_output("report.html", report.to_html().as_bytes())?;
        let out = ctx.out_dir.join("report.html");
        ctx.logln(format!("report: {}", out.display()));
        Ok(json!({ "figures": figures, "report": "report.html" }))
    }
}
