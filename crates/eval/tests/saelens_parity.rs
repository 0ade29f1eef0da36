//! Every metric equals SAELens `run_evals` (SAEs) or the same formulas on a
//! TransformerLens hook-replacement run (the transcoder), on the embedded toy
//! model with fixtures from scripts/fixtures/eval_saelens.py.

use saepipe_eval::{CoderReport, EvalError, EvalOptions, NamedCoder, evaluate};
use saepipe_model::{LoadOptions, Model, Processing};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saelens")
}

fn model() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/toy-grammar/step2000");
    Model::load(&dir, &LoadOptions { processing: Some(Processing::NONE), ..Default::default() }).unwrap()
}

fn read_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap()
}

fn coder(name: &str) -> NamedCoder {
    NamedCoder::new(name, saepipe_sae::load_coder(&fixtures().join("coders").join(name)).unwrap())
}

const CODERS: [&str; 4] = ["standard_mlp1", "topk_mlp1", "jumprelu_resid1", "transcoder_mlp1"];

fn metric(r: &CoderReport, name: &str) -> f64 {
    let (m, d) = (&r.recon, &r.downstream);
    match name {
        "l0" => m.l0,
        "l0_with_bos" => m.l0_with_bos,
        "l1" => m.l1,
        "mse" => m.mse,
        "cosine_similarity" => m.cosine_similarity,
        "l2_norm_in" => m.l2_norm_in,
        "l2_norm_out" => m.l2_norm_out,
        "l2_ratio" => m.l2_ratio,
        "relative_reconstruction_bias" => m.relative_reconstruction_bias,
        "explained_variance" => m.explained_variance,
        "explained_variance_legacy" => m.explained_variance_legacy,
        "n_tokens" => m.n_tokens as f64,
        "ce_clean" => d.ce_clean,
        "ce_spliced" => d.ce_spliced,
        "ce_zero_ablation" => d.ce_zero_ablation,
        "ce_loss_score" => d.ce_loss_score,
        "kl_spliced" => d.kl_spliced,
        "kl_zero_ablation" => d.kl_zero_ablation,
        "kl_div_score" => d.kl_div_score,
        other => panic!("unknown metric {other}"),
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-6)
}

#[test]
fn every_metric_equals_saelens() {
    let tokens = read_json("tokens.json");
    let expected = read_json("expected.json");
    let ctx = tokens["context_size"].as_u64().unwrap() as usize;
    let ids: Vec<u32> = tokens["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let opts = EvalOptions {
        batch_size: tokens["batch_size"].as_u64().unwrap() as usize,
        exclude_tokens: tokens["exclude_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect(),
        dense_threshold: 0.1,
    };
    let coders: Vec<NamedCoder> = CODERS.iter().map(|c| coder(c)).collect();
    let eval = evaluate(&model(), &ids, ctx, &coders, &opts, &mut |_| {}).unwrap();
    let mut failures = Vec::new();
    let mut worst = (0f64, String::new());
    for r in &eval.coders {
        let want = &expected["coders"][&r.label];
        let source = want["source"].as_str().unwrap();
        for (name, v) in want.as_object().unwrap() {
            let Some(v) = v.as_f64() else { continue };
            let got = metric(r, name);
            let rel = (got - v).abs() / v.abs().max(1e-6);
            if rel > worst.0 {
                worst = (rel, format!("{} {name}", r.label));
            }
            if !close(got, v, 1e-4) {
                failures.push(format!("{} {name}: saepipe {got} vs {source} {v}", r.label));
            }
        }
        let feats = &expected["features"][&r.label];
        for (name, got) in [
            ("density", &r.features.density),
            ("mean_activation", &r.features.mean_activation),
            ("max_activation", &r.features.max_activation),
        ] {
            let want: Vec<f64> = feats[name].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(got.len(), want.len());
            for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                if (g - w).abs() > 1e-4 * w.abs().max(1e-3) {
                    failures.push(format!("{} feature {j} {name}: saepipe {g} vs {w}", r.label));
                }
            }
        }
        let dead = want_count(feats, |d| d == 0.0);
        let dense = want_count(feats, |d| d > 0.1);
        assert_eq!((r.dead_features, r.dense_features), (dead, dense), "{}", r.label);
    }
    eprintln!("largest relative difference to the reference: {:.2e} ({})", worst.0, worst.1);
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    let tc = eval.coders.iter().find(|r| r.label == "transcoder_mlp1").unwrap();
    assert_eq!(
        (tc.kind, tc.hook_in.as_str(), tc.hook_out.as_str()),
        ("transcoder", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")
    );
}

fn want_count(feats: &Value, f: impl Fn(f64) -> bool) -> u64 {
    feats["density"].as_array().unwrap().iter().filter(|d| f(d.as_f64().unwrap())).count() as u64
}

/// Evaluating coders together gives each the numbers it gets alone.
#[test]
fn a_sweep_equals_coders_evaluated_alone() {
    let tokens = read_json("tokens.json");
    let ids: Vec<u32> = tokens["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let opts = EvalOptions { batch_size: 8, exclude_tokens: vec![0], dense_threshold: 0.1 };
    let m = model();
    let all: Vec<NamedCoder> = CODERS.iter().map(|c| coder(c)).collect();
    let together = evaluate(&m, &ids[..256], 32, &all, &opts, &mut |_| {}).unwrap();
    for (name, r) in CODERS.iter().zip(&together.coders) {
        let alone = evaluate(&m, &ids[..256], 32, &[coder(name)], &opts, &mut |_| {}).unwrap();
        assert_eq!(serde_json::to_value(r).unwrap(), serde_json::to_value(&alone.coders[0]).unwrap(), "{name}");
    }
}

#[test]
fn a_coder_of_the_wrong_width_is_named_with_its_hook() {
    let mut c = coder("topk_mlp1");
    c.label = "narrow".into();
    c.coder.metadata.hook_name = Some("blocks.1.mlp.hook_post".into());
    let err = evaluate(&model(), &[0; 64], 32, &[coder("standard_mlp1"), c], &EvalOptions::default(), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, EvalError::Setup { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("`narrow`")
            && msg.contains("blocks.1.mlp.hook_post")
            && msg.contains("d_in 64")
            && msg.contains("256"),
        "{msg}"
    );

    let mut t = coder("transcoder_mlp1");
    t.coder.metadata.hook_name_out = None;
    let msg = evaluate(&model(), &[0; 64], 32, &[t], &EvalOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(msg.contains("transcoder_mlp1") && msg.contains("hook_name_out"), "{msg}");
}
