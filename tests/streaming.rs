//! Streaming activation stores from a remote (`stream: true`): a run on an
//! empty cache leaves the store on the remote ("on remote"), trains the SAE
//! and matches features reading it shard by shard, and ends with artifacts
//! byte-identical to a run on a local copy; a damaged chunk-cache copy is
//! refetched, a damaged remote shard is reported and never used. Over a
//! `file://` remote and over S3 (moto's server, started here).

use std::path::{Path, PathBuf};
use std::process::Output;

#[path = "support/cli.rs"]
mod cli;
#[path = "../crates/remote/tests/support/mod.rs"]
mod support;
use cli::*;

const HOOK: &str = "blocks.1.hook_resid_pre";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Tokens, a store of eight shards, an SAE trained for two passes over it
/// (shuffled), and a match of the SAE against itself on activations.
fn write_pipeline(dir: &Path) {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    let yaml = format!(
        r#"version: 1
name: streaming
vars:
  stream: false
stages:
  tokens:
    op: tokenize
    corpus: {corpus}
    tokenizer: toy/toy-grammar@step2000
    context_size: 32
    max_tokens: 4096
  acts:
    op: collect_activations
    model: toy/toy-grammar@step2000
    tokens: tokens
    hooks: [{HOOK}]
    shard_tokens: 512
    batch_size: 8
  sae:
    op: train_sae
    activations: acts
    hook: {HOOK}
    d_sae: 64
    k: 4
    batch_size: 256
    total_tokens: 8192
    shuffle_buffer: 700
    stream: ${{stream}}
  match:
    op: match_features
    reference: sae
    reference_activations: acts
    saes: [sae]
    activations: [acts]
    n_tokens: 3000
    stream: ${{stream}}
"#,
        corpus = corpus.display()
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

struct Env<'a> {
    dir: &'a Path,
    vars: Vec<(String, String)>,
}

impl Env<'_> {
    fn saepipe(&self, args: &[&str]) -> Output {
        let mut c = bin();
        c.args(args).current_dir(self.dir).env("SAEPIPE_MODELS", repo().join("models"));
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.saepipe(args);
        assert!(out.status.success(), "saepipe {args:?} failed:\n{}", text(&out));
        text(&out)
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The payload files (name → blake3) of the artifact of `stage`, found by its manifest.
fn payload_of(cache: &Path, stage: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let dir = e.unwrap().path();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
        if m["stage"] != stage {
            continue;
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for f in std::fs::read_dir(&d).unwrap() {
                let p = f.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().unwrap() != "_manifest.json" {
                    let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
                    files.push((rel, blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string()));
                }
            }
        }
    }
    assert!(!files.is_empty(), "no artifact of stage {stage} in {}", cache.display());
    files.sort();
    files
}

fn has_stage(cache: &Path, stage: &str) -> bool {
    std::fs::read_dir(cache.join("artifacts")).into_iter().flatten().any(|e| {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path().join("_manifest.json")).unwrap()).unwrap();
        m["stage"] == stage
    })
}

fn status(cache: &Path, stage: &str) -> String {
    statuses(cache).into_iter().find(|(s, _)| s == stage).map(|(_, st)| st).unwrap_or_default()
}

fn chunk_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("streamed")).into_iter().flatten().map(|e| e.unwrap().path()).collect()
}

/// The whole scenario against `remote` (a URL the environment `env` can reach).
fn streaming_scenario(env: &Env, remote: &str) {
    write_pipeline(env.dir);
    // Publisher: the store (and tokens) go to the remote; the SAE and match stay local.
    env.ok(&["run", "p.yaml", "acts", "--cache-dir", "c1", "--remote", remote]);
    env.ok(&["run", "p.yaml", "--cache-dir", "c1"]);

    // A second person streams: the store is never downloaded.
    let pull = ["--remote", remote, "--remote-policy", "pull"];
    let mut args = vec!["run", "p.yaml", "--cache-dir", "c2", "--set", "stream=true"];
    args.extend(pull);
    env.ok(&args);
    assert_eq!(status(&env.dir.join("c2"), "acts"), "on remote");
    assert_eq!(status(&env.dir.join("c2"), "sae"), "ran");
    assert_eq!(status(&env.dir.join("c2"), "match"), "ran");
    assert!(!has_stage(&env.dir.join("c2"), "acts"), "the streamed store was downloaded");
    for stage in ["sae", "match"] {
        assert_eq!(payload_of(&env.dir.join("c2"), stage), payload_of(&env.dir.join("c1"), stage), "{stage}");
    }
    let shards = chunk_files(&env.dir.join("c2"));
    assert_eq!(shards.len(), 9, "eight shards and the index kept in the chunk cache: {shards:?}");

    // A damaged chunk-cache copy is noticed and refetched; results unchanged.
    for f in &shards {
        let mut b = std::fs::read(f).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
        std::fs::write(f, b).unwrap();
    }
    let mut again = args.clone();
    again.extend(["--force", "sae"]);
    env.ok(&again);
    assert_eq!(payload_of(&env.dir.join("c2"), "sae"), payload_of(&env.dir.join("c1"), "sae"));

    // With no chunk cache, nothing is kept locally, and the result is the same.
    let mut no_chunks = Env { dir: env.dir, vars: env.vars.clone() };
    no_chunks.vars.push(("SAEPIPE_STREAM_CACHE_GB".into(), "0".into()));
    let mut c3 = vec!["run", "p.yaml", "--cache-dir", "c3", "--set", "stream=true"];
    c3.extend(pull);
    no_chunks.ok(&c3);
    assert!(chunk_files(&env.dir.join("c3")).is_empty());
    assert_eq!(payload_of(&env.dir.join("c3"), "sae"), payload_of(&env.dir.join("c1"), "sae"));
}

#[test]
fn streaming_from_a_file_remote_equals_local_training_and_never_uses_damage() {
    let t = tempfile::tempdir().unwrap();
    let env = Env { dir: t.path(), vars: Vec::new() };
    let root = t.path().join("remote");
    let remote = format!("file://{}", root.display());
    streaming_scenario(&env, &remote);

    // Flip one byte of every blob on the remote: a fresh streaming run fails
    // on the first shard it reads, naming it, and publishes nothing.
    for d in std::fs::read_dir(root.join("blobs")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let mut b = std::fs::read(&p).unwrap();
            let at = b.len() / 3;
            b[at] ^= 1;
            std::fs::write(&p, b).unwrap();
        }
    }
    let out = env.saepipe(&[
        "run",
        "p.yaml",
        "sae",
        "--cache-dir",
        "c4",
        "--set",
        "stream=true",
        "--remote",
        &remote,
        "--remote-policy",
        "pull",
    ]);
    assert!(!out.status.success());
    let logs = run_logs(&t.path().join("c4"));
    assert!(logs.contains("is damaged") || text(&out).contains("is damaged"), "{}\n{logs}", text(&out));
    assert!(!has_stage(&t.path().join("c4"), "sae"));
}

#[test]
fn streaming_from_s3_equals_local_training() {
    let Some(moto) = support::Moto::start(&[]) else { return };
    moto.create_bucket("team");
    let t = tempfile::tempdir().unwrap();
    let vars = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "testing-key-id".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "testing-secret-key".to_string()),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL".to_string(), moto.endpoint.clone()),
    ];
    streaming_scenario(&Env { dir: t.path(), vars }, "s3://team/saepipe");
}

fn run_logs(cache: &Path) -> String {
    let mut out = String::new();
    for run in std::fs::read_dir(cache.join("runs")).into_iter().flatten() {
        for f in std::fs::read_dir(run.unwrap().path().join("logs")).into_iter().flatten() {
            out.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap_or_default());
        }
    }
    out
}
