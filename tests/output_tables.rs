//! Every Parquet file a pipeline writes, read from Python the ways researchers
//! read them: pyarrow, pandas, polars and DuckDB agree on the rows and columns of
//! each; each footer names the saepipe version, op, stage and cache key (and the
//! model, revision and hook where the rows are about one); the shared columns
//! follow docs/formats.md (`step` int64, ids and counts integers, `coder`
//! string, no `run`/`sae`).
//!
//! The pipeline runs every stage kind that writes a table on the embedded toy
//! LM family: tokenize, collect_activations, train_sae (an SAE and a
//! transcoder), evaluate, match_features, inspect_features, feature_journey and
//! plot. The Python side needs the readers' virtualenv
//! (`export SAEPIPE_READERS_PYTHON=$(scripts/py_readers_venv.sh target/readers-venv)`;
//! scripts/test.sh sets it); without it the test stops after the run, unless
//! CI=true, where it fails.

#[path = "support/cli.rs"]
mod cli;

use cli::readers_python;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const PIPELINE: &str = r#"
version: 1
name: output_tables
vars:
  model: toy/toy-grammar
  checkpoints: [step256, step2000]
  hook: blocks.1.hook_resid_pre
defaults:
  train_sae:
    activations: acts[*]
    architecture: topk
    d_sae: 32
    k: 4
    batch_size: 256
    total_tokens: 8192
    seed: 3
stages:
  tokens:
    op: tokenize
    corpus: CORPUS
    tokenizer: ${model}@step2000
    context_size: 32
    max_tokens: 4096
  acts:
    op: collect_activations
    foreach: ${checkpoints}
    model: ${model}@${item}
    tokens: tokens
    hooks: [blocks.1.hook_resid_pre, blocks.1.ln2.hook_normalized, blocks.1.hook_mlp_out]
  train:
    op: train_sae
    foreach: ${checkpoints}
    activations: acts[${item}]
    hook: ${hook}
  transcoder:
    op: train_sae
    activations: acts[step2000]
    hook: blocks.1.ln2.hook_normalized
    hook_out: blocks.1.hook_mlp_out
  evaluate:
    op: evaluate
    foreach: ${checkpoints}
    model: ${model}@${item}
    tokens: tokens
    saes: ["train[${item}]"]
    max_tokens: 1024
  match:
    op: match_features
    reference: train[step2000]
    reference_activations: acts[step2000]
    saes: ["train[step256]"]
    activations: ["acts[step256]"]
    n_tokens: 2048
  features:
    op: inspect_features
    sae: train[step2000]
    activations: acts[step2000]
    tokenizer: ${model}@step2000
    model: ${model}@step2000
    n_features: 4
    n_tokens: 2048
  journey:
    op: feature_journey
    matches: match
    reference: train[step2000]
    reference_activations: acts[step2000]
    saes: ["train[step256]"]
    activations: ["acts[step256]"]
    tokenizer: ${model}@step2000
    n_features: 2
    n_tokens: 2048
  report:
    op: plot
    matches: [match]
    evaluations: evaluate[*]
    training: ["train[*]", transcoder]
    features: [features, journey]
"#;

/// Reads every `.parquet` of every published artifact with each reader and
/// checks footers and column conventions; prints `{op: files}` as JSON.
const READ_ALL: &str = r#"
import json, os, sys
import duckdb, pandas as pd, polars as pl, pyarrow as pa, pyarrow.parquet as pq

arts = os.path.join(sys.argv[1], "artifacts")
ABOUT_ONE_MODEL = {"collect_activations", "train_sae", "evaluate", "match_features", "inspect_features"}
# Ids and counts (docs/formats.md): integers in every table that has them.
INTEGERS = {"feature", "reference_feature", "matched_feature", "rank", "bin", "seq", "pos", "d_sae", "n_tokens",
            "dead_features", "dense_features", "example", "offset", "interval", "count"}
problems, files = [], {}
for key in sorted(os.listdir(arts)):
    m = json.load(open(os.path.join(arts, key, "_manifest.json")))
    for f in m["files"]:
        rel = f["path"]
        if not rel.endswith(".parquet"):
            continue
        where = f"{m['stage']}/{rel}"
        path = os.path.join(arts, key, rel)
        md = pq.read_metadata(path)
        kv = {k.decode(): v.decode() for k, v in (md.metadata or {}).items()}
        want = {"saepipe.op": m["op"], "saepipe.stage": m["stage"], "saepipe.key": key}
        for k, v in want.items():
            if kv.get(k) != v:
                problems.append(f"{where}: footer {k} = {kv.get(k)!r}, expected {v!r}")
        if not kv.get("saepipe.version"):
            problems.append(f"{where}: no saepipe.version in the footer")
        if m["op"] in ABOUT_ONE_MODEL and kv.get("saepipe.model") != "toy/toy-grammar":
            problems.append(f"{where}: footer saepipe.model = {kv.get('saepipe.model')!r}")
        if m["op"] == "collect_activations" and not kv.get("saepipe.revision", "").startswith("step"):
            problems.append(f"{where}: footer saepipe.revision = {kv.get('saepipe.revision')!r}")
        n = md.num_rows
        table = pq.read_table(path)
        frame = pd.read_parquet(path)
        polars = pl.read_parquet(path)
        counted = duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0]
        duck_cols = duckdb.sql(f"SELECT * FROM read_parquet('{path}') LIMIT 0").columns
        rows = {"footer": n, "pyarrow": table.num_rows, "pandas": len(frame), "polars": polars.height, "duckdb": counted}
        if len(set(rows.values())) != 1:
            problems.append(f"{where}: row counts differ {rows}")
        cols = {"pyarrow": table.column_names, "pandas": list(frame.columns), "polars": polars.columns, "duckdb": duck_cols}
        if any(c != table.column_names for c in cols.values()):
            problems.append(f"{where}: column names differ {cols}")
        schema = table.schema
        if "step" in schema.names and schema.field("step").type != pa.int64():
            problems.append(f"{where}: step is {schema.field('step').type}, expected int64")
        for c in schema.names:
            if c in INTEGERS and not pa.types.is_integer(schema.field(c).type):
                problems.append(f"{where}: {c} is {schema.field(c).type}, expected an integer")
        if "coder" in schema.names and schema.field("coder").type not in (pa.string(), pa.large_string()):
            problems.append(f"{where}: coder is {schema.field('coder').type}, expected string")
        for old in ("run", "sae"):
            if old in schema.names:
                problems.append(f"{where}: column `{old}` (the coder column is `coder`)")
        files[m["op"]] = files.get(m["op"], 0) + 1
if problems:
    sys.exit("\n".join(problems))
print(json.dumps(files))
"#;

/// Runs `saepipe ARGS` in `dir`; returns stdout, failing the test if it fails.
fn saepipe(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_saepipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env_remove("SAEPIPE_REMOTE")
        .env("SAEPIPE_QUIET", "1")
        .env("SAEPIPE_MODELS", repo().join("models"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "saepipe {args:?} failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Writes `pipeline` (PIPELINE or a variant) as `dir/name` and runs it.
fn run_pipeline(dir: &Path, name: &str, pipeline: &str) {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    std::fs::write(dir.join(name), pipeline.replace("CORPUS", corpus.to_str().unwrap())).unwrap();
    saepipe(dir, &["run", name]);
}

/// The artifact directories of every stage of `op` in the cache of `dir`.
fn artifacts_of(dir: &Path, op: &str) -> Vec<PathBuf> {
    let arts = dir.join("cache/artifacts");
    let mut found = Vec::new();
    for e in std::fs::read_dir(arts).unwrap() {
        let d = e.unwrap().path();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("_manifest.json")).unwrap()).unwrap();
        if m["op"] == op {
            found.push(d);
        }
    }
    found
}

#[test]
fn every_output_table_reads_in_pyarrow_pandas_polars_and_duckdb_with_its_provenance() {
    let t = tempfile::tempdir().unwrap();
    run_pipeline(t.path(), "p.yaml", PIPELINE);
    let Some(python) = readers_python("output_tables (Python part)") else { return };
    let script = t.path().join("read_all.py");
    std::fs::write(&script, READ_ALL).unwrap();
    let out = Command::new(python).arg(&script).arg(t.path().join("cache")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the readers disagree with saepipe's conventions:\n{stderr}");
    let files: BTreeMap<String, u64> = serde_json::from_str(stdout.trim()).unwrap();
    // Every op that writes tables was read: tokens, shards, losses, metrics and
    // features, pairs and summary, examples and contexts, journeys, figure data.
    let ops = [
        "tokenize",
        "collect_activations",
        "train_sae",
        "evaluate",
        "match_features",
        "inspect_features",
        "feature_journey",
        "plot",
    ];
    for op in ops {
        assert!(files.get(op).is_some_and(|&n| n > 0), "no table of {op} was read: {files:?}");
    }
    eprintln!("tables read per op: {files:?}");
}

/// A coder stage renamed in the pipeline keeps its cache key (the name is not
/// part of it), so the coders are reused; every table and report downstream
/// names them as the pipeline that asked does, not as the cache first saw them.
#[test]
fn coders_reused_from_the_cache_are_labelled_by_the_stage_that_asked() {
    let t = tempfile::tempdir().unwrap();
    run_pipeline(t.path(), "p.yaml", PIPELINE);
    let coders = artifacts_of(t.path(), "train_sae").len();
    let renamed = PIPELINE.replace("  train:\n", "  sae:\n").replace("train[", "sae[");
    assert!(renamed.contains("  sae:\n") && !renamed.contains("train["));
    run_pipeline(t.path(), "q.yaml", &renamed);
    assert_eq!(artifacts_of(t.path(), "train_sae").len(), coders, "the renamed coder stages trained again");

    let table = |target: &str| {
        let path = saepipe(t.path(), &["path", "q.yaml", target]);
        saepipe::ops::table::read_parquet(Path::new(path.trim())).unwrap()
    };
    assert_eq!(table("evaluate[step256].metrics.parquet").strings("coder").unwrap(), ["sae[step256]"]);
    let pairs = table("match.pairs.parquet").strings("coder").unwrap();
    assert!(!pairs.is_empty() && pairs.iter().all(|c| c == "sae[step256]"), "{pairs:?}");
    let journey = table("journey.journey.parquet").strings("coder").unwrap();
    assert!(journey.iter().all(|c| c == "sae[step256]"), "{journey:?}");
    let curves = table("report.data/training_curves.parquet").strings("coder").unwrap();
    assert!(curves.iter().any(|c| c == "sae[step2000]"), "{curves:?}");
    assert!(curves.iter().all(|c| !c.starts_with("train")), "{curves:?}");
    let report = std::fs::read_to_string(saepipe(t.path(), &["path", "q.yaml", "report.report.html"]).trim()).unwrap();
    assert!(report.contains("sae[step256]") && !report.contains("train[step256]"), "labels of the first pipeline");
}
