//! The `evaluate` stage end to end: pipelines/sparsity_sweep.yaml on the embedded
//! toy model (trained SAEs and a transcoder plus a coder given by path), its
//! tables, agreement with the library on the same tokens, cache hits on rerun,
//! and a clear error for a coder that does not fit its hook.

use saepipe::ops::table::Table;
use saepipe_data::TokenTableReader;
use saepipe_eval::{EvalOptions, NamedCoder, evaluate};
use saepipe_model::{LoadOptions, Model};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_coder(name: &str) -> PathBuf {
    repo().join("crates/eval/tests/fixtures/saelens/coders").join(name)
}

fn saepipe(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_saepipe")).args(args).current_dir(dir).env_remove("RUST_BACKTRACE").env("SAEPIPE_MODELS", repo().join("models")).output().unwrap()
}

fn artifact_of(cache: &Path, stage: &str) -> PathBuf {
    for e in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let dir = e.unwrap().path();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        if m["stage"] == stage {
            return dir;
        }
    }
    panic!("no artifact for {stage}");
}

/// The sweep pipeline shrunk to the toy model (layer 1, d_sae 64, a few thousand tokens).
fn toy_sweep_args(extra: &Path) -> Vec<String> {
    let models = repo().join("models/toy-grammar");
    [
        "model=toy/toy-grammar@step2000".to_string(),
        format!("corpus={}", models.join("corpus-train.jsonl").display()),
        format!("eval_corpus={}", models.join("corpus-eval.jsonl").display()),
        "layer=1".into(),
        "context_size=32".into(),
        "train_tokens=16384".into(),
        "sae_tokens=16384".into(),
        "d_sae=64".into(),
        "sae_ks=[4,8]".into(),
        "transcoder_ks=[8]".into(),
        "lr=0.001".into(),
        "batch_size=512".into(),
        "eval_batch_size=8".into(),
        "eval_tokens=2048".into(),
        format!("extra_coders=[{}]", extra.display()),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

#[test]
fn the_sweep_pipeline_runs_on_the_toy_model() {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("pipelines/sparsity_sweep.yaml"), t.path().join("sweep.yaml")).unwrap();
    let extra = fixture_coder("standard_mlp1");
    let mut args: Vec<String> = vec!["run".into(), "sweep.yaml".into(), "-q".into()];
    args.extend(toy_sweep_args(&extra));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = saepipe(t.path(), &argv);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let cache = t.path().join("cache");
    let dir = artifact_of(&cache, "evaluate");
    let m = Table::read_parquet(&dir.join("metrics.parquet")).unwrap();
    assert_eq!(m.rows(), 4);
    let kinds = m.strings("kind").unwrap();
    assert_eq!(kinds.iter().filter(|k| *k == "transcoder").count(), 1, "{kinds:?}");
    let coders = m.strings("coder").unwrap();
    assert!(coders.contains(&"standard_mlp1".to_string()), "{coders:?}");
    for col in ["l0", "l0_with_bos", "l1", "mse", "cosine_similarity", "l2_ratio", "relative_reconstruction_bias", "explained_variance", "explained_variance_legacy", "ce_clean", "ce_spliced", "ce_zero_ablation", "ce_loss_score", "kl_spliced", "kl_zero_ablation", "kl_div_score", "dead_features", "dense_features"] {
        let v = m.f64(col).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{col}: {v:?}");
    }
    for col in ["architecture", "hook_in", "hook_out", "excluded_tokens"] {
        m.strings(col).unwrap();
    }
    assert!(m.strings("excluded_tokens").unwrap().iter().all(|e| e == "0"));
    let hook_in = m.strings("hook_in").unwrap();
    let tc = kinds.iter().position(|k| k == "transcoder").unwrap();
    assert_eq!(hook_in[tc], "blocks.1.ln2.hook_normalized");
    // Every coder sees the same clean model.
    let clean = m.f64("ce_clean").unwrap();
    assert!(clean.iter().all(|&c| c == clean[0]));

    let f = Table::read_parquet(&dir.join("features.parquet")).unwrap();
    assert_eq!(f.rows(), 3 * 64 + 128);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["tokens"], 2048);

    // The stage equals the library on the same tokens.
    let tokens_dir = artifact_of(&cache, "eval_tokens");
    let reader = TokenTableReader::open(&tokens_dir.join("tokens.parquet")).unwrap();
    let ctx = reader.meta.context_size;
    let tokens = reader.read_all().unwrap();
    let model = Model::load(&repo().join("models/toy-grammar/step2000"), &LoadOptions::default()).unwrap();
    let coder = NamedCoder { label: "standard_mlp1".into(), coder: saepipe_sae::load_coder(&extra).unwrap() };
    let opts = EvalOptions { batch_size: 8, exclude_tokens: vec![0], dense_threshold: 0.1 };
    let direct = evaluate(&model, &tokens[..2048], ctx, &[coder], &opts, &mut |_| {}).unwrap();
    let row = coders.iter().position(|c| c == "standard_mlp1").unwrap();
    assert_eq!(m.f64("ce_spliced").unwrap()[row], direct.coders[0].downstream.ce_spliced);
    assert_eq!(m.f64("explained_variance").unwrap()[row], direct.coders[0].recon.explained_variance);
    assert_eq!(m.f64("l0").unwrap()[row], direct.coders[0].recon.l0);

    // A rerun is all hits.
    let argv: Vec<&str> = args.iter().filter(|a| *a != "-q").map(String::as_str).collect();
    let out = saepipe(t.path(), &argv);
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("evaluate ")).collect();
    assert!(!rows.is_empty() && rows.iter().all(|l| l.contains("hit")), "{table}");
}

#[test]
fn a_coder_that_does_not_fit_its_hook_fails_naming_both() {
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("wide_sae");
    std::fs::create_dir(&bad).unwrap();
    let src = fixture_coder("topk_mlp1");
    std::fs::copy(src.join("sae_weights.safetensors"), bad.join("sae_weights.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(src.join("cfg.json")).unwrap().replace("blocks.1.hook_mlp_out", "blocks.1.mlp.hook_post");
    std::fs::write(bad.join("cfg.json"), cfg).unwrap();
    std::fs::write(
        t.path().join("p.yaml"),
        format!(
            "version: 1\nname: bad\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 256\n  evaluate:\n    op: evaluate\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    paths: [wide_sae]\n",
            repo().join("models/toy-grammar/corpus-eval.jsonl").display()
        ),
    )
    .unwrap();
    let out = saepipe(t.path(), &["run", "p.yaml", "-q"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("coder `wide_sae`: d_in 64 does not match the width 256 of hook `blocks.1.mlp.hook_post`"), "{err}");
}
