//! `saepipe fetch` on a login node, then the run with no network: every model
//! and tokenizer a pipeline needs comes from a (local, fake) Hugging Face hub
//! into the local cache once, and `HF_HUB_OFFLINE=1 saepipe run` needs nothing
//! more.

#[path = "../crates/model/tests/support/fake_hub.rs"]
mod fake_hub;

use fake_hub::{FakeHub, Fault, Repo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The embedded toy model served as `acme/toy` (weights through LFS).
fn start_hub() -> FakeHub {
    let dir = repo_root().join("models/toy-grammar/step2000");
    let files: BTreeMap<String, Vec<u8>> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    FakeHub::start(Repo {
        repo: "acme/toy",
        sha: "0123456789abcdef0123456789abcdef01234567",
        files,
        lfs: &[".safetensors"],
        fault: Fault::None,
    })
}

fn saepipe(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saepipe"));
    c.args(args)
        .current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env("HF_HUB_CACHE", dir.join("hub"))
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn fetch_then_run_offline() {
    let hub = start_hub();
    let t = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1\nname: offline\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: acme/toy\n    context_size: 32\n    max_tokens: 512\n  acts:\n    op: collect_activations\n    model: acme/toy\n    tokens: tokens\n    hooks: [blocks.0.hook_resid_pre]\n",
        repo_root().join("models/toy-grammar/corpus-train.jsonl").display()
    );
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let offline = [("HF_HUB_OFFLINE", "1")];

    // Offline and not fetched: the run cannot start, and says how to get the model.
    let o = saepipe(t.path(), &["run", "p.yaml"], &offline);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("acme/toy"), "{}", text(&o));

    let online = [("HF_ENDPOINT", hub.url.as_str())];
    let o = saepipe(t.path(), &["fetch", "p.yaml"], &online);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("tokens.tokenizer") && out.contains("acts.model/model.safetensors"), "{out}");
    assert!(out.contains("3 external input(s)"), "the tokenizer, config and weights: {out}");
    let downloads =
        |hub: &FakeHub| hub.requests().iter().filter(|r| r.path.contains("/resolve/") || r.host == "lfs").count();
    let fetched = downloads(&hub);
    assert!(fetched >= 3, "config, tokenizer and weights came from the hub: {:?}", hub.requests());

    // The run, offline, computes both stages from the local copies.
    let o = saepipe(t.path(), &["run", "p.yaml"], &offline);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.lines().any(|l| l.starts_with("acts ") && l.contains(" ran ")), "{out}");

    // Fetching again downloads nothing.
    let o = saepipe(t.path(), &["fetch", "p.yaml"], &online);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(downloads(&hub), fetched, "{:?}", hub.requests());
}
