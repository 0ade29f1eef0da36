//! The stages across model families: for a tiny random model of every family
//! the runtime loads (the golden-test models of crates/model, whose hooks match
//! TransformerLens), a pipeline tokenizes, collects activations, trains an SAE
//! and a transcoder, evaluates them spliced into the model, matches and
//! inspects features, through the real binary. The stored activations equal
//! the model's own hook values for the same tokens.

use std::path::{Path, PathBuf};

#[path = "support/cli.rs"]
mod cli;
use cli::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The families, by the fixture directory of their tiny model.
const FAMILIES: [&str; 8] = ["gpt2", "neox", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3"];

const HOOK: &str = "blocks.1.hook_resid_pre";

fn pipeline(model: &Path) -> String {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    format!(
        r#"version: 1
name: family
stages:
  tokens:
    op: tokenize
    corpus: {corpus}
    tokenizer: toy/toy-grammar@step2000
    context_size: 16
    max_tokens: 1024
  acts:
    op: collect_activations
    model: {model}
    tokens: tokens
    hooks: [{HOOK}, blocks.0.ln2.hook_normalized, blocks.0.hook_mlp_out]
    batch_size: 8
  sae:
    op: train_sae
    activations: acts
    hook: {HOOK}
    d_sae: 64
    k: 4
    batch_size: 128
  transcoder:
    op: train_sae
    activations: acts
    hook: blocks.0.ln2.hook_normalized
    hook_out: blocks.0.hook_mlp_out
    architecture: jumprelu
    d_sae: 64
    batch_size: 128
  evaluate:
    op: evaluate
    model: {model}
    tokens: tokens
    saes: [sae, transcoder]
    batch_size: 8
  match:
    op: match_features
    reference: sae
    reference_activations: acts
    saes: [sae]
    activations: [acts]
  inspect:
    op: inspect_features
    sae: sae
    activations: acts
    tokenizer: toy/toy-grammar@step2000
    n_features: 4
"#,
        corpus = corpus.display(),
        model = model.display()
    )
}

#[test]
fn every_family_runs_every_stage() {
    let t = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let model = repo().join("crates/model/tests/fixtures/tl").join(family);
        let dir = t.path().join(family);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.yaml"), pipeline(&model)).unwrap();
        let out = bin()
            .args(["run", "p.yaml"])
            .current_dir(&dir)
            .env("SAEPIPE_MODELS", repo().join("models"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{family}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let st = statuses(&dir.join("cache"));
        assert!(st.iter().all(|(_, s)| s == "ran"), "{family}: {st:?}");
        let loaded = saepipe_model::Model::load(&model, &Default::default()).unwrap();
        check_store_matches_model(family, &loaded, &artifact_of(&dir.join("cache"), "acts"));
        let eval = artifact_of(&dir.join("cache"), "evaluate");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(eval.join("_manifest.json")).unwrap()).unwrap();
        let text = manifest["metrics"].to_string();
        assert!(!text.contains("NaN") && !text.contains("null,"), "{family}: evaluate metrics {text}");
    }
}

/// The artifact directory of a stage.
fn artifact_of(cache: &Path, stage: &str) -> PathBuf {
    for e in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let dir = e.unwrap().path();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
        if m["stage"] == stage {
            return dir;
        }
    }
    panic!("no artifact of stage {stage}");
}

/// The store's first context equals the model's hooks run on its tokens.
fn check_store_matches_model(family: &str, model: &saepipe_model::Model, store: &Path) {
    let reader = saepipe_data::ActivationReader::open(store, &[HOOK]).unwrap();
    let first = reader.batches(16).next().unwrap().unwrap();
    assert!(first.pos.iter().enumerate().all(|(i, &p)| p as usize == i), "{family}: one context per batch");
    let tokens: Vec<u32> = first.token.clone();
    let mut req = saepipe_model::RunRequest::default();
    req.capture.insert(HOOK.to_string());
    let out = model.run(&tokens, 1, tokens.len(), &mut req).unwrap();
    let (_, want) = &out.captured[HOOK];
    let got = &first.hooks[0];
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs() / b.abs().max(1e-3)).fold(0f32, f32::max);
    assert!(worst < 1e-4, "{family}: stored {HOOK} differs from the model's by {worst:e} (relative)");
}
