//! Deterministic synthetic inputs shaped like real runs (Pythia-style checkpoint steps,
//! published L0/CE numbers, log-normal feature densities), for demos and tests.

use crate::figures::coders::CoderPoint;
use crate::figures::density::FeatureDensity;
use crate::figures::matching::{CheckpointLosses, CheckpointSimilarities};
use crate::figures::training::TrainingCurve;
use saepipe_core::rng::SplitMix64;

/// A Pythia-like checkpoint schedule: 0, 1, 2, 4, …, 512, then 1000 … 143000.
pub fn pythia_steps() -> Vec<u64> {
    let mut s = vec![0];
    s.extend((0..10).map(|i| 1u64 << i));
    s.extend([1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000, 143000]);
    s
}

fn progress(step: u64) -> f64 {
    let t = (step as f64).ln_1p() / std::f64::consts::LN_10;
    1.0 / (1.0 + (-(t - 3.3) * 2.2).exp())
}

/// Matched similarities of `d_sae` reference features per checkpoint; the last
/// checkpoint is the reference itself (all similarities 1). Early checkpoints have a few
/// dead features (NaN).
pub fn checkpoint_similarities(d_sae: usize, seed: u64) -> Vec<CheckpointSimilarities> {
    let mut rng = SplitMix64::new(seed);
    let steps = pythia_steps();
    let last = *steps.last().unwrap();
    steps
        .into_iter()
        .map(|step| {
            let p = progress(step);
            let similarities = (0..d_sae)
                .map(|_| {
                    if step == last {
                        return 1.0;
                    }
                    if rng.uniform() < 0.04 * (1.0 - p) {
                        return f64::NAN;
                    }
                    let mean = 0.12 + 0.8 * p;
                    (mean + (0.08 + 0.1 * p * (1.0 - p)) * rng.normal()).clamp(0.0, 1.0)
                })
                .collect();
            CheckpointSimilarities { step, similarities }
        })
        .collect()
}

/// SAE losses per checkpoint: MSE falls, L0 rises then settles, EV improves.
pub fn checkpoint_losses(seed: u64) -> Vec<CheckpointLosses> {
    let mut rng = SplitMix64::new(seed);
    pythia_steps()
        .into_iter()
        .map(|step| {
            let p = progress(step);
            CheckpointLosses {
                step,
                mse: 0.004 + 0.05 * (1.0 - p) * (1.0 + 0.05 * rng.normal()),
                l0: 12.0 + 60.0 * p + 3.0 * rng.normal(),
                explained_variance: 0.55 + 0.35 * p + 0.01 * rng.normal(),
            }
        })
        .collect()
}

/// The Pythia-410m layer-15 sweep (DESIGN.md §1), with the clean CE loss; CE
/// loss scores against a zero-ablation CE loss of 7.5 nats.
pub fn coder_sweep() -> (Vec<CoderPoint>, f64) {
    let (clean, zero) = (3.3215, 7.5);
    let point = |family: &str, label: String, l0: f64, ce: f64| CoderPoint {
        family: family.into(),
        label,
        l0,
        ce_loss: ce,
        ce_loss_score: (zero - ce) / (zero - clean),
    };
    let mut v = Vec::new();
    for (l0, ce) in [(505.0, 3.337), (110.0, 3.351), (55.0, 3.360), (31.0, 3.368)] {
        v.push(point("SAE", format!("sae_l0_{l0}"), l0, ce));
    }
    for (l0, ce) in [(204.0, 3.341), (148.0, 3.344), (83.0, 3.349), (44.0, 3.355), (27.0, 3.368)] {
        v.push(point("transcoder", format!("tc_l0_{l0}"), l0, ce));
    }
    (v, clean)
}

/// Log-normal firing frequencies with a share of dead features per SAE.
pub fn feature_densities(d_sae: usize, seed: u64) -> Vec<FeatureDensity> {
    let mut rng = SplitMix64::new(seed);
    [("L1 λ=5", -2.6, 0.7, 0.02), ("L1 λ=10", -3.2, 0.9, 0.09), ("TopK k=32", -2.3, 0.5, 0.004)]
        .into_iter()
        .map(|(name, mu, sd, dead)| FeatureDensity {
            name: name.to_string(),
            firing_fraction: (0..d_sae)
                .map(|_| if rng.uniform() < dead { 0.0 } else { 10f64.powf((mu + sd * rng.normal()).min(-0.05)) })
                .collect(),
        })
        .collect()
}

/// Three training runs logged every `every` steps up to `steps`: two L1 SAEs and a TopK
/// SAE with an AuxK loss.
pub fn training_runs(steps: u64, every: u64, seed: u64) -> Vec<TrainingCurve> {
    let mut rng = SplitMix64::new(seed);
    let mut runs = Vec::new();
    for (run, kind, final_mse, final_l0, dead_final) in
        [("l1_5", "L1", 0.06, 60.0, 0.02), ("l1_10", "L1", 0.09, 28.0, 0.08), ("topk_32", "AuxK", 0.05, 32.0, 0.01)]
    {
        let mut c = TrainingCurve { run: run.into(), sparsity_loss_name: kind.into(), ..Default::default() };
        let mut s = 0;
        while s <= steps {
            let t = s as f64 / steps as f64;
            let decay = (-(s as f64) / (0.08 * steps as f64)).exp();
            let noise = 1.0 + 0.04 * rng.normal();
            c.step.push(s);
            c.mse.push((final_mse + 0.9 * decay) * noise);
            if kind == "AuxK" {
                c.sparsity_loss.push((0.02 + 0.3 * decay) * noise);
                c.l0.push(final_l0);
            } else {
                c.sparsity_loss.push((0.15 + 1.2 * (1.0 - decay) * (-(t * 3.0)).exp() + 0.1 * decay) * noise);
                c.l0.push((final_l0 + 1500.0 * decay) * noise);
            }
            c.dead_fraction.push(dead_final * (1.0 - (-3.0 * t).exp()));
            s += every;
        }
        runs.push(c);
    }
    runs
}

/// CE losses per checkpoint: the LM's own loss falls with training, the splice costs
/// a little, the CE loss score rises.
pub fn checkpoint_ce(seed: u64) -> Vec<crate::figures::matching::CheckpointCe> {
    let mut rng = SplitMix64::new(seed);
    pythia_steps()
        .into_iter()
        .map(|step| {
            let p = progress(step);
            let ce_clean = 10.8 - 7.4 * p + 0.02 * rng.normal();
            let score = 0.6 + 0.35 * p + 0.01 * rng.normal();
            crate::figures::matching::CheckpointCe {
                step,
                ce_clean,
                ce_spliced: ce_clean + (1.0 - score) * 1.5,
                ce_loss_score: score,
            }
        })
        .collect()
}

/// A report shaped like the checkpoint-matching study's (every figure kind, one
/// metrics table, provenance and links), from synthetic numbers: for demos and for
/// the browser test.
pub fn study_report() -> crate::Result<crate::Report> {
    use crate::{Cell, FigureOptions, Link, Report, figures};
    let opts = FigureOptions::default();
    let sims = checkpoint_similarities(1024, 1);
    let fractions: Vec<_> = sims
        .iter()
        .flat_map(|c| {
            figures::matching::matched_fractions(
                c.step,
                &c.similarities,
                &figures::matching::DEFAULT_DISTANCE_THRESHOLDS,
            )
        })
        .collect();
    let mut losses = checkpoint_losses(2);
    for l in &mut losses {
        l.l0 = 32.0; // TopK
    }
    let ce = checkpoint_ce(5);
    let steps = pythia_steps();
    let densities: Vec<FeatureDensity> = steps
        .iter()
        .step_by(2)
        .enumerate()
        .map(|(i, s)| {
            let mut d = feature_densities(2048, 10 + i as u64)[i % 3].clone();
            d.name = format!("train[step{s}]");
            d
        })
        .collect();
    let runs = training_runs(4000, 20, 4);

    let mut r = Report::new("Feature matching across checkpoints (synthetic)");
    r.add_links(
        "Related reports",
        vec![Link {
            label: "feature report".into(),
            href: "../features/report.html".into(),
            note: "(stage features, key 0123abcd…)".into(),
        }],
    )?;
    r.add_section("Feature matching across checkpoints", "Synthetic numbers shaped like a Pythia checkpoint study.");
    r.add_figure(&figures::matching::matched_fraction_vs_step(&fractions, &opts)?);
    r.add_figure(&figures::matching::similarity_heatmap(&sims, 20, &opts)?);
    r.add_section("Evaluation", "Each coder spliced into its own LM checkpoint.");
    r.add_figure(&figures::matching::ce_per_checkpoint(&ce, &opts)?);
    r.add_figure(&figures::matching::sae_losses_per_checkpoint(&losses, &opts)?);
    r.add_figure(&figures::density::feature_density(&densities, &opts.clone().with_size(900, 640))?);
    let rows = steps
        .iter()
        .zip(&ce)
        .zip(&losses)
        .map(|((s, c), l)| {
            vec![
                Cell::Text(format!("train[step{s}]")),
                Cell::Int(*s as i64),
                Cell::Text("topk".into()),
                Cell::Int(4096),
                l.l0.into(),
                l.mse.into(),
                l.explained_variance.into(),
                c.ce_clean.into(),
                c.ce_spliced.into(),
                c.ce_loss_score.into(),
            ]
        })
        .collect();
    r.add_table(
        "Coder metrics",
        &[
            "coder",
            "step",
            "architecture",
            "d_sae",
            "L0",
            "MSE",
            "explained variance",
            "CE clean",
            "CE spliced",
            "CE loss score",
        ],
        rows,
    )?;
    r.add_section("Training", "Loss curves of every trained coder.");
    r.add_figure(&figures::training::training_curves(&runs, &opts)?);
    r.add_facts(
        "Provenance",
        vec![
            ("saepipe".into(), "0.0.0 (synthetic)".into()),
            ("pipeline".into(), "checkpoint_matching".into()),
            ("thresholds".into(), "0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9".into()),
        ],
    );
    Ok(r)
}
