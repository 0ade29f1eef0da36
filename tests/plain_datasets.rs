//! Artifacts as plain datasets: a published activation store and an exported
//! one open with pandas, pyarrow, polars, DuckDB and Hugging Face `datasets`
//! as they are, with the rows and values saepipe's own reader gives; `saepipe
//! export` describes what it writes and refuses what it must; artifacts published under the old file
//! names (`manifest.json`, `store.json`) are still read, reused and exported.
//!
//! The Python readers come from the virtualenv scripts/py_readers_venv.sh
//! makes (scripts/test.sh sets `SAEPIPE_READERS_PYTHON`). Without it the
//! Python check says so and skips, except under `CI=true`, where it fails.

#[path = "support/cli.rs"]
mod cli;
use cli::*;
use saepipe_data::ActivationReader;
use std::path::{Path, PathBuf};
use std::process::Output;

const HOOK: &str = "blocks.1.hook_resid_pre";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn saepipe(dir: &Path, args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env("SAEPIPE_MODELS", repo().join("models"))
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = saepipe(dir, args);
    assert!(out.status.success(), "saepipe {args:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Tokens, an activation store of two hooks (four shards) and a tiny SAE on it.
fn pipeline(dir: &Path) {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "version: 1\nname: plain\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 2048\n  acts:\n    op: collect_activations\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    hooks: [{HOOK}, blocks.0.hook_mlp_out]\n    shard_tokens: 512\n    batch_size: 8\n  sae:\n    op: train_sae\n    activations: acts\n    hook: {HOOK}\n    d_sae: 64\n    k: 4\n    batch_size: 256\n    total_tokens: 2048\n",
            corpus.display()
        ),
    )
    .unwrap();
}

/// The artifact directory (`cache/artifacts/<key>`) of a stage, and its key.
fn artifact_of(cache: &Path, stage: &str) -> (PathBuf, String) {
    for e in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let dir = e.unwrap().path();
        let manifest = ["_manifest.json", "manifest.json"].iter().find_map(|n| std::fs::read(dir.join(n)).ok());
        let m: serde_json::Value = serde_json::from_slice(&manifest.unwrap()).unwrap();
        if m["stage"] == stage {
            return (dir, m["key"].as_str().unwrap().to_string());
        }
    }
    panic!("no artifact for stage {stage}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Rows of a store and the first row's values of `HOOK`, as saepipe reads them.
fn saepipe_view(store: &Path) -> (u64, Vec<f32>) {
    let reader = ActivationReader::open(store, &[HOOK]).unwrap();
    let first = reader.batches(1).next().unwrap().unwrap();
    (reader.total_rows(), first.hooks[0].clone())
}

/// Opens a directory with each reader and checks rows and the first value.
const READERS_CHECK: &str = r#"
import json, sys
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import polars as pl
import duckdb

path, hook, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
first = np.array(json.loads(sys.argv[4]), dtype=np.float32)

def same(x, what):
    x = np.asarray(x, dtype=np.float32)
    assert x.shape == first.shape and np.array_equal(x, first), f"{what}: first {hook} value {x[:4]}... != saepipe's {first[:4]}..."

df = pd.read_parquet(path)
assert len(df) == rows, f"pandas.read_parquet: {len(df)} rows, saepipe {rows}"
assert list(df.columns[:3]) == ["seq", "pos", "token"], list(df.columns)
same(df[hook].iloc[0], "pandas.read_parquet")

d = ds.dataset(path)
assert all(f.endswith(".parquet") for f in d.files), f"pyarrow.dataset picked up {d.files}"
assert d.count_rows() == rows, f"pyarrow.dataset: {d.count_rows()} rows"
col = d.to_table(columns=[hook]).column(hook).combine_chunks()
same(col.flatten().to_numpy().reshape(-1, col.type.list_size)[0], "pyarrow.dataset")

files = path + "/*.parquet"
p = pl.read_parquet(files, columns=[hook])
assert p.height == rows, f"polars.read_parquet: {p.height} rows"
same(p[hook].to_numpy()[0], "polars.read_parquet")
lazy = pl.scan_parquet(files)
assert lazy.select(pl.len()).collect().item() == rows, "polars.scan_parquet rows"
same(lazy.select(hook).head(1).collect()[hook].to_numpy()[0], "polars.scan_parquet")

n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{files}')").fetchall()[0][0]
assert n == rows, f"duckdb: {n} rows"
v = duckdb.sql(f"SELECT \"{hook}\" FROM read_parquet('{files}') ORDER BY seq, pos LIMIT 1").fetchall()[0][0]
same(v, "duckdb")

from datasets import load_dataset
hf = load_dataset("parquet", data_files=files, split="train")
assert hf.num_rows == rows, f"datasets.load_dataset: {hf.num_rows} rows"
same(hf[0][hook], "datasets.load_dataset")
print(f"{path}: {rows} rows; pandas, pyarrow.dataset, polars, duckdb and datasets agree with saepipe")
"#;

/// The readers' Python, with Hugging Face `datasets` kept offline and its
/// cache in `hf_home` (a test directory, not the user's).
fn offline_python(python: &Path, hf_home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(python);
    c.env("HF_HOME", hf_home).env("HF_HUB_OFFLINE", "1").env("HF_DATASETS_OFFLINE", "1");
    c
}

fn check_with_python(python: &Path, script: &Path, store: &Path) {
    let (rows, first) = saepipe_view(store);
    let out = offline_python(python, &script.parent().unwrap().join("hf"))
        .arg(script)
        .args([store.to_str().unwrap(), HOOK, &rows.to_string(), &serde_json::to_string(&first).unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "the Python readers disagree on {}:\n{}", store.display(), text(&out));
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn published_and_exported_stores_open_with_python_dataset_readers() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path());
    ok(t.path(), &["run", "p.yaml", "acts", "-q"]);
    let (store, key) = artifact_of(&t.path().join("cache"), "acts");
    // Only shards and `_` files: nothing a dataset reader would take for data.
    for name in names(&store) {
        assert!(name.starts_with('_') || (name.starts_with("shard-") && name.ends_with(".parquet")), "{name}");
    }
    let exported = t.path().join("export");
    ok(t.path(), &["export", &key[..10], exported.to_str().unwrap()]);
    let Some(python) = readers_python("the Python dataset readers check") else { return };
    let script = t.path().join("readers_check.py");
    std::fs::write(&script, READERS_CHECK).unwrap();
    check_with_python(&python, &script, &store);
    check_with_python(&python, &script, &exported);

    // The README's own snippet runs as written.
    let readme = std::fs::read_to_string(exported.join("_README.md")).unwrap();
    let snippet = readme.split("```python\n").nth(1).unwrap().split("```").next().unwrap();
    std::fs::write(
        t.path().join("readme_snippet.py"),
        format!("{snippet}\nassert acts.shape == (2048, 64) and data.num_rows == 2048\n"),
    )
    .unwrap();
    let out =
        offline_python(&python, &t.path().join("hf")).arg("readme_snippet.py").current_dir(t.path()).output().unwrap();
    assert!(out.status.success(), "the README's snippet fails:\n{snippet}\n{}", text(&out));
}

#[test]
fn export_describes_each_kind_of_artifact() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path());
    ok(t.path(), &["run", "p.yaml", "-q"]);
    let cache = t.path().join("cache");

    // An activation store: payload hard-linked, README and JSON description.
    let (store, key) = artifact_of(&cache, "acts");
    let out = ok(t.path(), &["export", &key[..12], "acts-out"]);
    assert!(out.contains(&format!("exported {key} to acts-out")) && out.contains("hard-linked"), "{out}");
    let dir = t.path().join("acts-out");
    let mut want: Vec<String> = names(&store).into_iter().filter(|n| n != "_manifest.json").collect();
    want.extend(["_README.md".to_string(), "_saepipe.json".to_string()]);
    want.sort();
    assert_eq!(names(&dir), want);
    let d = json(&dir.join("_saepipe.json"));
    assert_eq!((d["format"].as_str(), d["kind"].as_str()), (Some("saepipe-export"), Some("activation_store")));
    assert_eq!(d["artifact"]["key"], key.as_str());
    assert_eq!(d["artifact"]["op"], "collect_activations");
    let s = &d["activation_store"];
    assert_eq!((s["model"].as_str(), s["revision"].as_str()), (Some("toy/toy-grammar@step2000"), Some("step2000")));
    assert_eq!(s["hooks"][0], serde_json::json!({"name": HOOK, "d": 64}));
    assert_eq!((s["dtype"].as_str(), s["rows"].as_u64(), s["shards"].as_u64()), (Some("float32"), Some(2048), Some(4)));
    assert_eq!(s["tokenizer"]["tokenizer"], "toy/toy-grammar@step2000");
    assert_eq!(s["tokenizer"]["mode"], "saelens");
    for f in d["files"].as_array().unwrap() {
        let bytes = std::fs::read(dir.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), f["blake3"].as_str().unwrap(), "{f}");
    }
    let readme = std::fs::read_to_string(dir.join("_README.md")).unwrap();
    for needle in
        ["`toy/toy-grammar`", "`step2000`", HOOK, "float32", "2048", "pd.read_parquet", "duckdb", "pl.read_parquet"]
    {
        assert!(readme.contains(needle), "README lacks {needle}:\n{readme}");
    }
    // Hard links by default; `--copy` copies.
    use std::os::unix::fs::MetadataExt;
    let nlink = |p: &Path| std::fs::metadata(p).unwrap().nlink();
    assert!(nlink(&dir.join("shard-00000.parquet")) > 1);
    let out = ok(t.path(), &["export", &key, "copied", "--copy"]);
    assert!(out.contains("0 hard-linked"), "{out}");
    assert_eq!(nlink(&t.path().join("copied/shard-00000.parquet")), 1);

    // An SAE (SAELens layout plus its loss table) and a token table.
    let (_, sae) = artifact_of(&cache, "sae");
    ok(t.path(), &["export", &sae, "sae-out"]);
    let d = json(&t.path().join("sae-out/_saepipe.json"));
    assert_eq!(d["kind"], "sparse_coder");
    let coder = &d["coders"][0];
    assert_eq!((coder["dir"].as_str(), coder["weights"].as_str()), (Some("sae"), Some("sae_weights.safetensors")));
    assert_eq!((coder["summary"]["d_in"].as_u64(), coder["summary"]["d_sae"].as_u64()), (Some(64), Some(64)));
    assert_eq!(coder["summary"]["hook_name"], HOOK);
    assert!(
        t.path().join("sae-out/sae/cfg.json").is_file()
            && t.path().join("sae-out/sae/sae_weights.safetensors").is_file()
    );
    assert!(d["tables"].as_array().unwrap().iter().any(|x| x["path"] == "losses.parquet"));
    assert!(std::fs::read_to_string(t.path().join("sae-out/_README.md")).unwrap().contains("SAE.load_from_disk"));

    let (_, tokens) = artifact_of(&cache, "tokens");
    ok(t.path(), &["export", &tokens, "tokens-out"]);
    let d = json(&t.path().join("tokens-out/_saepipe.json"));
    assert_eq!(d["kind"], "tables");
    assert_eq!(d["tables"][0]["path"], "tokens.parquet");
    assert_eq!(d["tables"][0]["rows"], 64);
    assert_eq!(
        d["tables"][0]["columns"][1],
        serde_json::json!({"name": "tokens", "type": "fixed_size_list<uint32>[32]"})
    );
}

#[test]
fn export_refuses_non_empty_directories_unknown_keys_and_the_cache() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path());
    ok(t.path(), &["run", "p.yaml", "tokens", "-q"]);
    let (_, key) = artifact_of(&t.path().join("cache"), "tokens");

    let busy = t.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"mine").unwrap();
    let o = saepipe(t.path(), &["export", &key, "busy"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("cannot export to busy: the directory is not empty (it holds `notes.txt`)"), "{err}");
    assert_eq!(names(&busy), ["notes.txt"], "nothing written into it");
    assert_eq!(std::fs::read(busy.join("notes.txt")).unwrap(), b"mine");

    std::fs::write(t.path().join("a-file"), b"x").unwrap();
    let err = text(&saepipe(t.path(), &["export", &key, "a-file"]));
    assert!(err.contains("cannot export to a-file: it exists and is not a directory"), "{err}");

    let o = saepipe(t.path(), &["export", "0123abcd", "fresh"]);
    assert!(!o.status.success());
    let err = text(&o);
    assert!(
        err.contains("cannot export `0123abcd`") && err.contains("no artifact key starts with `0123abcd`"),
        "{err}"
    );
    assert!(!t.path().join("fresh").exists(), "nothing created for an unknown key");
    let err = text(&saepipe(t.path(), &["export", "not-hex", "fresh"]));
    assert!(err.contains("`not-hex` is not a key prefix"), "{err}");

    let o = saepipe(t.path(), &["export", &key, "cache/mine"]);
    assert!(text(&o).contains("is inside the cache"), "{}", text(&o));
    assert!(!t.path().join("cache/mine").exists(), "the directory it made is removed again");
}

/// Rewrites a published store as saepipe wrote it before the metadata files
/// were renamed: `manifest.json` (listing `store.json`) and `store.json`, in a
/// cache of layout version 1.
fn make_legacy(cache: &Path, store: &Path) {
    let generation = std::fs::canonicalize(store).unwrap();
    std::fs::rename(generation.join("_store.json"), generation.join("store.json")).unwrap();
    let mut m = json(&generation.join("_manifest.json"));
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == "_store.json" {
            f["path"] = "store.json".into();
        }
    }
    m["files"].as_array_mut().unwrap().sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    std::fs::write(generation.join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    std::fs::remove_file(generation.join("_manifest.json")).unwrap();
    std::fs::write(cache.join("saepipe-cache.json"), b"{\"format_version\": 1}\n").unwrap();
}

#[test]
fn artifacts_published_under_the_old_names_still_read() {
    let t = tempfile::tempdir().unwrap();
    pipeline(t.path());
    ok(t.path(), &["run", "p.yaml", "acts", "-q"]);
    let cache = t.path().join("cache");
    let (store, key) = artifact_of(&cache, "acts");
    let before = saepipe_view(&store);
    make_legacy(&cache, &store);
    assert_eq!(
        names(&store).iter().filter(|n| n.ends_with(".json")).collect::<Vec<_>>(),
        ["manifest.json", "store.json"]
    );

    let out = ok(t.path(), &["cache", "verify"]);
    assert!(out.contains("2 verified, 0 corrupt"), "{out}");
    assert_eq!(json(&cache.join("saepipe-cache.json"))["format_version"], 2, "the cache is marked as the new layout");
    assert_eq!(saepipe_view(&store), before, "saepipe reads the old store index");
    // The old store is reused (a hit), and a stage reading it trains on it.
    ok(t.path(), &["run", "p.yaml", "-q"]);
    let status = statuses(&cache);
    assert!(status.contains(&("acts".to_string(), "hit".to_string())), "{status:?}");
    assert!(status.contains(&("sae".to_string(), "ran".to_string())), "{status:?}");
    assert!(store.join("manifest.json").is_file(), "the old artifact was kept, not rebuilt");

    // Exported, its index gets the new name, so the export is a plain dataset too.
    ok(t.path(), &["export", &key, "old-out"]);
    let dir = t.path().join("old-out");
    assert!(dir.join("_store.json").is_file() && !dir.join("store.json").exists());
    let d = json(&dir.join("_saepipe.json"));
    assert!(d["files"].as_array().unwrap().iter().any(|f| f["path"] == "_store.json"));
    assert_eq!(saepipe_view(&dir), before);
    if let Some(python) = readers_python("the Python dataset readers check") {
        let script = t.path().join("readers_check.py");
        std::fs::write(&script, READERS_CHECK).unwrap();
        check_with_python(&python, &script, &dir);
    }
}
