//! Hub datasets as corpora (`corpus: hf-dataset:<org>/<name>[@rev][/split]`),
//! through a local fake hub: the split's Parquet files are downloaded into the
//! HF cache layout once, the tokens are identical to the same rows read from
//! local Parquet files, a later run needs no network (`HF_HUB_OFFLINE=1`), and
//! a missing split or dataset says what exists and how to fetch it.

#[path = "../crates/model/tests/support/fake_hub.rs"]
mod fake_hub;

use fake_hub::{FakeHub, Fault, Repo};
use saepipe_data::table::{Column, Table, write_parquet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The toy corpus's documents, `n` of them from `skip`.
fn documents(skip: usize, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("models/toy-grammar/corpus-train.jsonl")).unwrap();
    text.lines()
        .skip(skip)
        .take(n)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}

fn parquet_bytes(docs: Vec<String>, dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let ids = (0..docs.len() as i64).collect();
    write_parquet(&Table::default().with("id", Column::I64(ids)).with("text", Column::Str(docs)), &path).unwrap();
    std::fs::read(path).unwrap()
}

const TRAIN: [&str; 2] = ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"];

/// A dataset repository `acme/tiny` with a two-file train split and a test split,
/// as `datasets.push_to_hub` lays them out; the same train files are also left
/// in `local/` for the comparison.
fn start_hub(dir: &Path) -> FakeHub {
    let local = dir.join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut files = BTreeMap::new();
    files.insert("README.md".to_string(), b"---\nlicense: mit\n---\n".to_vec());
    files.insert(format!("data/{}", TRAIN[0]), parquet_bytes(documents(0, 300), &local, TRAIN[0]));
    files.insert(format!("data/{}", TRAIN[1]), parquet_bytes(documents(300, 300), &local, TRAIN[1]));
    let test = parquet_bytes(documents(600, 200), dir, "test.parquet");
    files.insert("data/test-00000-of-00001.parquet".to_string(), test);
    FakeHub::start(Repo {
        repo: "datasets/acme/tiny",
        sha: "89abcdef0123456789abcdef0123456789abcdef",
        files,
        lfs: &[".parquet"],
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

fn pipeline(dir: &Path, name: &str, corpus: &str) {
    let yaml = format!(
        "version: 1\nname: {name}\nstages:\n  tokens:\n    op: tokenize\n    corpus: {corpus}\n    tokenizer: {}\n    context_size: 32\n",
        repo_root().join("models/toy-grammar/step2000/tokenizer.json").display()
    );
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

/// The token ids of the `tokens` stage's table in the cache under `dir`.
fn tokens(dir: &Path, pipeline: &str) -> Vec<u32> {
    let o = saepipe(dir, &["path", &format!("{pipeline}.yaml"), "tokens.tokens.parquet"], &[("HF_HUB_OFFLINE", "1")]);
    assert!(o.status.success(), "{}", text(&o));
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    saepipe_data::TokenTableReader::open(&path).unwrap().read_all().unwrap()
}

#[test]
fn hub_dataset_split_tokenizes_like_the_same_local_parquet_files() {
    let t = tempfile::tempdir().unwrap();
    let hub = start_hub(t.path());
    let online = [("HF_ENDPOINT", hub.url.as_str())];
    pipeline(t.path(), "hub", "hf-dataset:acme/tiny");
    pipeline(t.path(), "local", "local");

    // `fetch` on a login node brings exactly the train split's files.
    let o = saepipe(t.path(), &["fetch", "hub.yaml"], &online);
    assert!(o.status.success(), "{}", text(&o));
    let snap = t.path().join("hub/datasets--acme--tiny/snapshots/89abcdef0123456789abcdef0123456789abcdef");
    for f in TRAIN {
        assert!(snap.join("data").join(f).is_file(), "{}", text(&o));
    }
    assert!(!snap.join("data/test-00000-of-00001.parquet").exists(), "only the asked split is downloaded");
    let refs = std::fs::read_to_string(t.path().join("hub/datasets--acme--tiny/refs/main")).unwrap();
    assert_eq!(refs, "89abcdef0123456789abcdef0123456789abcdef");
    let requests = hub.requests().len();

    // The run needs no network, and its tokens equal the local files'.
    let o = saepipe(t.path(), &["run", "hub.yaml"], &[("HF_HUB_OFFLINE", "1")]);
    assert!(o.status.success(), "{}", text(&o));
    let o = saepipe(t.path(), &["run", "local.yaml"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(hub.requests().len(), requests, "the offline run asked the hub nothing");
    let (from_hub, from_files) = (tokens(t.path(), "hub"), tokens(t.path(), "local"));
    assert!(from_hub.len() > 1000, "{} tokens", from_hub.len());
    assert_eq!(from_hub, from_files);

    // Another split is another corpus; a split the repository lacks says which exist.
    pipeline(t.path(), "test_split", "hf-dataset:acme/tiny@main/test");
    let o = saepipe(t.path(), &["run", "test_split.yaml"], &online);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(tokens(t.path(), "test_split"), from_hub);
    pipeline(t.path(), "no_split", "hf-dataset:acme/tiny/validation");
    let o = saepipe(t.path(), &["run", "no_split.yaml"], &online);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("no Parquet file of split `validation`") && out.contains("splits found: train, test"),
        "{out}"
    );
}

#[test]
fn a_missing_dataset_offline_or_malformed_reference_fails_clearly() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path(), "p", "hf-dataset:acme/absent");
    let o = saepipe(t.path(), &["run", "p.yaml"], &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(o.status.code(), Some(1), "a runtime error, as for a model missing offline: {}", text(&o));
    let out = text(&o);
    assert!(out.contains("HF_HUB_OFFLINE is set") && out.contains("--repo-type dataset"), "{out}");

    pipeline(t.path(), "bad", "hf-dataset:acme");
    let o = saepipe(t.path(), &["validate", "bad.yaml"], &[]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("bad.yaml") && out.contains("corpus") && out.contains("hf-dataset:<org>/<name>"), "{out}");
}
