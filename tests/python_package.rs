//! The Python package (`python/`): installed offline with pip into a
//! temporary directory, its unittest suite (`python/tests`) runs against a
//! cache this test fills by running a small pipeline with the real binary,
//! and checks what the package reads against what saepipe itself says: each
//! instance's key (`saepipe path`), the store's rows (saepipe's reader), each
//! coder's latents and outputs (saepipe's coder) on store rows, and the
//! evaluate stage's metrics.
//!
//! The Python (numpy, pyarrow, pandas) comes from the virtualenv
//! scripts/py_readers_venv.sh makes (scripts/test.sh sets
//! `SAEPIPE_READERS_PYTHON`). Without it the test says so and skips, except
//! under `CI=true`, where it fails.

#[path = "support/cli.rs"]
mod cli;
use cli::*;
use saepipe_data::ActivationReader;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const HOOK: &str = "blocks.1.hook_resid_pre";
const MLP: &str = "blocks.0.hook_mlp_out";
const ARCHS: [&str; 4] = ["topk", "standard", "batchtopk", "jumprelu"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn saepipe(dir: &Path, args: &[&str]) -> String {
    let out = bin().args(args).current_dir(dir).env("SAEPIPE_MODELS", repo().join("models")).output().unwrap();
    assert!(out.status.success(), "saepipe {args:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tokens, an f32 store of two hooks and an f16 store of one, an SAE of each
/// architecture train_sae makes, a transcoder, and an evaluation of the SAEs
/// on the store's own tokens with every token counted.
fn pipeline(dir: &Path) {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    let model = "toy/toy-grammar@step2000";
    let yaml = format!(
        "version: 1
name: python-package
vars:
  max_tokens: 2048
stages:
  tokens:
    op: tokenize
    corpus: {corpus}
    tokenizer: {model}
    context_size: 32
    max_tokens: ${{max_tokens}}
  acts:
    op: collect_activations
    model: {model}
    tokens: tokens
    hooks: [{HOOK}, {MLP}]
    shard_tokens: 512
    batch_size: 8
  acts16:
    op: collect_activations
    model: {model}
    tokens: tokens
    hooks: [{HOOK}]
    dtype: f16
    shard_tokens: 768
    batch_size: 8
  sae:
    op: train_sae
    foreach: [{archs}]
    architecture: ${{item}}
    activations: acts
    hook: {HOOK}
    d_sae: 64
    k: 4
    batch_size: 256
    total_tokens: 2048
    log_every: 1
  tc:
    op: train_sae
    activations: acts
    hook: {MLP}
    hook_out: {HOOK}
    architecture: standard
    d_sae: 64
    batch_size: 256
    total_tokens: 2048
  evaluate:
    op: evaluate
    model: {model}
    tokens: tokens
    saes: sae[*]
    exclude_special_tokens: false
",
        corpus = corpus.display(),
        archs = ARCHS.join(", "),
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

/// Rows of `hook`'s store, as saepipe's reader gives them: (rows, d, values, tokens).
fn read_store(dir: &Path, hook: &str) -> (usize, usize, Vec<f32>, Vec<u32>) {
    let reader = ActivationReader::open(dir, &[hook]).unwrap();
    let d = reader.widths()[0];
    let (mut values, mut tokens) = (Vec::new(), Vec::new());
    for b in reader.batches(1000) {
        let b = b.unwrap();
        values.extend_from_slice(&b.hooks[0]);
        tokens.extend_from_slice(&b.token);
    }
    assert_eq!(values.len() as u64, reader.total_rows() * d as u64);
    (reader.total_rows() as usize, d, values, tokens)
}

fn store_expectation(dir: &Path, hooks: &[&str], dtype: &str) -> Value {
    let (rows, d, values, tokens) = read_store(dir, HOOK);
    let rows_at: BTreeMap<String, &[f32]> =
        [0, 1, 511, 512, 1000, rows - 1].iter().map(|&r| (r.to_string(), &values[r * d..(r + 1) * d])).collect();
    json!({
        "rows": rows, "hooks": hooks, "dtype": dtype, "rows_at": rows_at,
        "sum": values.iter().map(|&v| v as f64).sum::<f64>(), "tokens": &tokens[..100],
    })
}

/// What saepipe's own coder makes of the first 48 rows of its input hook.
fn coder_expectation(artifact: &Path, store: &Path) -> Value {
    let coder = saepipe_sae::load_coder(&artifact.join("sae")).unwrap();
    let hook = coder.metadata.hook_name.clone().unwrap();
    let (_, d, values, _) = read_store(store, &hook);
    let n = 48;
    let x = &values[..n * d];
    let (acts, out) = coder.forward(x, n).unwrap();
    let rows = |v: &[f32], w: usize| v.chunks(w).map(|r| r.to_vec()).collect::<Vec<_>>();
    json!({
        "architecture": coder.architecture_name(), "d_in": coder.d_in, "d_sae": coder.d_sae, "d_out": coder.d_out,
        "hook_name": hook, "x": rows(x, d), "latents": rows(&acts.to_dense(), coder.d_sae),
        "out": rows(&out, coder.d_out), "nnz": acts.nnz(),
    })
}

#[test]
fn python_package_reads_what_saepipe_wrote() {
    let Some(python) = readers_python("the Python package tests") else { return };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();

    // Installed offline (no index, no build tools fetched) into a folder of its own.
    let site = dir.join("site");
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index", "--no-deps", "--target"])
        .arg(&site)
        .arg(repo().join("python"))
        .output()
        .unwrap();
    assert!(out.status.success(), "pip install ./python failed:\n{}", text(&out));
    assert!(site.join("saepipe/coder.py").is_file() && !site.join("saepipe/tests").exists());

    pipeline(dir);
    saepipe(dir, &["run", "p.yaml", "-q"]);
    let mut instances = vec!["tokens".to_string(), "acts".into(), "acts16".into(), "tc".into(), "evaluate".into()];
    instances.extend(ARCHS.iter().map(|a| format!("sae[{a}]")));
    let mut keys = BTreeMap::new();
    let mut artifact = BTreeMap::new();
    for inst in &instances {
        let path = PathBuf::from(saepipe(dir, &["path", "p.yaml", inst]).trim());
        keys.insert(inst.clone(), path.file_name().unwrap().to_string_lossy().into_owned());
        artifact.insert(inst.clone(), path);
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(artifact["sae[topk]"].join("_manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(artifact["sae[topk]"].join("summary.json")).unwrap()).unwrap();

    let acts = &artifact["acts"];
    let mut coders = BTreeMap::new();
    for inst in instances.iter().filter(|i| i.starts_with("sae[") || *i == "tc") {
        coders.insert(inst.clone(), coder_expectation(&artifact[inst], acts));
    }
    assert_eq!(coders["tc"]["architecture"], "transcoder");
    assert_eq!(coders["sae[batchtopk]"]["architecture"], "jumprelu", "batchtopk is saved for inference as JumpReLU");

    let expect = json!({
        "cache": dir.join("cache"), "pipeline": dir.join("p.yaml"), "pipeline_name": "python-package", "hook": HOOK,
        "keys": keys, "files": {"sae[topk]": files}, "losses_rows": summary["steps"],
        "stores": {
            "acts": store_expectation(acts, &[HOOK, MLP], "f32"),
            "acts16": store_expectation(&artifact["acts16"], &[HOOK], "f16"),
        },
        "coders": coders,
        "evaluated": ARCHS.iter().map(|a| format!("sae[{a}]")).collect::<Vec<_>>(),
    });
    let expect_file = dir.join("expect.json");
    std::fs::write(&expect_file, serde_json::to_vec(&expect).unwrap()).unwrap();

    // In the pipeline's folder with no $SAEPIPE_CACHE, so `Cache()` is ./cache as for the CLI.
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(repo().join("python/tests"))
        .arg("-t")
        .arg(repo().join("python"))
        .current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SAEPIPE_TEST_EXPECT", &expect_file)
        .env("SAEPIPE_TEST_SITE", &site)
        .env("SAEPIPE_BIN", env!("CARGO_BIN_EXE_saepipe"))
        .env("SAEPIPE_MODELS", repo().join("models"))
        .env("SAEPIPE_QUIET", "1")
        .output()
        .unwrap();
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "the Python package's tests failed:\n{report}");
    assert!(!report.contains("skipped"), "no Python test may skip here:\n{report}");
}
