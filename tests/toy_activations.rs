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
    Command::new(env!("CARGO_BIN_EXE_saepipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env("SAEPIPE_MODELS", repo().join("models"))
        .output()
        .unwrap()
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
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
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
    let reader =
        ActivationReader::open(&store, &["blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"]).unwrap().sequential();
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
    let mut req = RunRequest {
        capture: ["blocks.1.hook_resid_pre".into(), "blocks.0.hook_mlp_out".into()].into(),
        ..Default::default()
    };
    let direct = model.run(&tokens, 64, 32, &mut req).unwrap();
    assert_eq!(stored[0], direct.captured["blocks.1.hook_resid_pre"].1, "resid_pre differs from the runtime");
    assert_eq!(stored[1], direct.captured["blocks.0.hook_mlp_out"].1, "mlp_out differs from the runtime");

    // A rerun is all hits.
    let out = saepipe(t.path(), &["run", "p.yaml"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().filter(|l| l.starts_with("tokens ") || l.starts_with("acts ")).all(|l| l.contains("hit")),
        "{table}"
    );
}

#[test]
fn unknown_hook_names_fail_with_a_suggestion() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path(), "[blocks.1.hook_resid_pr]");
    let out = saepipe(t.path(), &["run", "p.yaml", "-q"]);
    // Caught when the pipeline is loaded (invalid input, exit 2), before anything runs.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown hook point `blocks.1.hook_resid_pr` (did you mean `blocks.1.hook_resid_pre`?)"),
        "{err}"
    );
    assert!(
        !t.path().join("cache/artifacts").exists()
            || std::fs::read_dir(t.path().join("cache/artifacts")).unwrap().count() == 0,
        "nothing ran"
    );
}

fn shards_in_partial(cache: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(cache.join("partial")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            std::fs::read_dir(e.path())
                .map(|d| {
                    d.filter_map(|f| f.ok()).filter(|f| f.file_name().to_string_lossy().ends_with(".parquet")).count()
                })
                .unwrap_or(0)
        })
        .sum()
}

/// Every shard file of a store, by name, with its bytes.
fn store_files(store: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

/// The toy pipeline made big and slow enough (one context per forward pass,
/// 16 shards) to be interrupted between shards. Batch size is not part of the key.
fn slow_pipeline(dir: &Path) {
    pipeline(dir, "[blocks.1.hook_resid_pre]");
    let yaml = std::fs::read_to_string(dir.join("p.yaml")).unwrap();
    let yaml = yaml
        .replace("max_tokens: 2048", "max_tokens: 32768")
        .replace("shard_tokens: 512", "shard_tokens: 2048")
        .replace("batch_size: 8", "batch_size: 1");
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

#[test]
fn killed_collection_resumes_and_gives_identical_shards() {
    let reference = tempfile::tempdir().unwrap();
    slow_pipeline(reference.path());
    let out = saepipe(reference.path(), &["run", "p.yaml", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = store_files(&artifact_of(&reference.path().join("cache"), "acts"));
    assert_eq!(want.len(), 16);

    let t = tempfile::tempdir().unwrap();
    slow_pipeline(t.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_saepipe"))
        .args(["run", "p.yaml", "-q"])
        .current_dir(t.path())
        .env("SAEPIPE_MODELS", repo().join("models"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while shards_in_partial(&t.path().join("cache")) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "collection finished before it could be interrupted");
        assert!(std::time::Instant::now() < deadline, "no shard written");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let out = saepipe(t.path(), &["run", "p.yaml"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.lines().any(|l| l.starts_with("acts ") && l.contains("resumed")), "{table}");
    let got = store_files(&artifact_of(&t.path().join("cache"), "acts"));
    if got != want {
        let summary = |v: &[(String, Vec<u8>)]| {
            v.iter()
                .map(|(n, b)| format!("{n}:{}:{}", b.len(), &blake3::hash(b).to_hex()[..8]))
                .collect::<Vec<_>>()
                .join(" ")
        };
        eprintln!(
            "want {}\ngot  {}\nrun output {}",
            summary(&want),
            summary(&got),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(got == want, "resumed store differs from an uninterrupted one");
}
