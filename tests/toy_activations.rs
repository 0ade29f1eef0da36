//! The tokenize → collect_activations path on the embedded toy model: the stored
//! activations equal the model runtime's hook values for the same tokens, a rerun
//! is all cache hits, and bad hook names fail validation-time clearly.

use saepipe_data::{ActivationReader, TokenTableReader};
use saepipe_model::{LoadOptions, Model, RunRequest};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn saepipe(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_saepipe")).args(args).current_dir(dir).env_remove("RUST_BACKTRACE").env("SAEPIPE_MODELS", repo().join("models")).output().unwrap()
}

fn pipeline(dir: &Path, hooks: &str) {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "version: 1\nname: toy\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 2048\n  acts:\n    op: collect_activations\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    hooks: {hooks}\n    shard_tokens: 512\n    batch_size: 8\n",
            corpus.display()
        ),
    )
    .unwrap();
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

#[test]
fn stored_activations_equal_the_model_runtime() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path(), "[blocks.1.hook_resid_pre, blocks.0.hook_mlp_out]");
    let out = saepipe(t.path(), &["run", "p.yaml", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cache = t.path().join("cache");
    let tokens = TokenTableReader::open(&artifact_of(&cache, "tokens").join("tokens.parquet")).unwrap();
    assert_eq!(tokens.meta.context_size, 32);
    let tokens = tokens.read_all().unwrap();
    assert_eq!(tokens.len(), 2048);
    assert!(tokens.chunks(32).all(|c| c[0] == 0), "every context starts with BOS");

    let store = artifact_of(&cache, "acts");
    let reader = ActivationReader::open(&store, &["blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"]).unwrap().sequential();
    assert_eq!(reader.total_rows(), 2048);
    let mut stored: Vec<Vec<f32>> = vec![Vec::new(), Vec::new()];
    let mut stored_tokens = Vec::new();
    for b in reader.batches(300) {
        let b = b.unwrap();
        stored_tokens.extend(b.token);
        for (i, h) in b.hooks.into_iter().enumerate() {
            stored[i].extend(h);
        }
    }
    assert_eq!(stored_tokens, tokens);
    let model = Model::load(&repo().join("models/toy-grammar/step2000"), &LoadOptions::default()).unwrap();
    let mut req = RunRequest { capture: ["blocks.1.hook_resid_pre".into(), "blocks.0.hook_mlp_out".into()].into(), ..Default::default() };
    let direct = model.run(&tokens, 64, 32, &mut req).unwrap();
    assert_eq!(stored[0], direct.captured["blocks.1.hook_resid_pre"].1, "resid_pre differs from the runtime");
    assert_eq!(stored[1], direct.captured["blocks.0.hook_mlp_out"].1, "mlp_out differs from the runtime");

    // A rerun is all hits.
    let out = saepipe(t.path(), &["run", "p.yaml"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().filter(|l| l.starts_with("tokens ") || l.starts_with("acts ")).all(|l| l.contains("hit")), "{table}");
}

#[test]
fn unknown_hook_names_fail_with_a_suggestion() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path(), "[blocks.1.hook_resid_pr]");
    let out = saepipe(t.path(), &["run", "p.yaml", "-q"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown hook point `blocks.1.hook_resid_pr` (did you mean `blocks.1.hook_resid_pre`?)"), "{err}");
}
