//! Helpers for tests that drive the real `saepipe` binary: running it, and
//! reading what a run left in its cache (statuses, artifact contents).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with no cache, remote or progress settings inherited from the
/// environment, and a quick Slurm poll.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saepipe"));
    c.env_remove("SAEPIPE_CACHE")
        .env_remove("SAEPIPE_REMOTE")
        .env("SAEPIPE_QUIET", "1")
        .env("SAEPIPE_SLURM_POLL_MS", "200");
    c
}

/// Runs `saepipe ARGS` in `dir`.
pub fn run(args: &[&str], dir: &Path) -> Output {
    bin().args(args).current_dir(dir).output().unwrap()
}

/// Runs `saepipe ARGS` in `dir`, failing the test with its output if it fails;
/// returns stdout.
pub fn run_ok(args: &[&str], dir: &Path) -> String {
    let out = run(args, dir);
    assert!(
        out.status.success(),
        "saepipe {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every artifact of a cache: key → (file → blake3 of its bytes), manifests included.
pub fn artifacts(cache: &Path) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(cache.join("artifacts")) else { return out };
    for e in dir {
        let e = e.unwrap();
        let mut files = Vec::new();
        for f in std::fs::read_dir(e.path()).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                let hash = blake3::hash(&std::fs::read(f.path()).unwrap()).to_hex().to_string();
                files.push((f.file_name().to_string_lossy().into_owned(), hash));
            }
        }
        files.sort();
        out.push((e.file_name().to_string_lossy().into_owned(), files));
    }
    out.sort();
    out
}

/// [`artifacts`] without the manifests (which record when and how fast a stage ran).
pub fn payloads(cache: &Path) -> Vec<(String, Vec<(String, String)>)> {
    artifacts(cache)
        .into_iter()
        .map(|(k, files)| {
            (
                k,
                files
                    .into_iter()
                    .filter(|(name, _)| !["_manifest.json", "manifest.json"].contains(&name.as_str()))
                    .collect(),
            )
        })
        .collect()
}

/// The newest run record's (instance, status) pairs, sorted.
pub fn statuses(cache: &Path) -> Vec<(String, String)> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(cache.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    runs.sort();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.last().unwrap().join("run.json")).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["instance"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect();
    out.sort();
    out
}

/// `[("a", s), ("b", s)]`: both stages of the two-stage test pipelines ended with status `s`.
pub fn both(status: &str) -> Vec<(String, String)> {
    vec![("a".into(), status.into()), ("b".into(), status.into())]
}

/// The Python of the dataset readers' virtualenv (pandas, pyarrow, polars,
/// DuckDB, datasets) from $SAEPIPE_READERS_PYTHON. `None`, with a note that
/// `what` is skipped, when it is not set; under CI=true (scripts/test.sh sets it)
/// its absence fails the test.
pub fn readers_python(what: &str) -> Option<PathBuf> {
    match std::env::var_os("SAEPIPE_READERS_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "SAEPIPE_READERS_PYTHON is not set; scripts/test.sh installs the readers (scripts/py_readers_venv.sh) and sets it"
        ),
        None => {
            println!(
                "SKIPPED: {what}: SAEPIPE_READERS_PYTHON is not set (run \
                 `export SAEPIPE_READERS_PYTHON=$(scripts/py_readers_venv.sh target/readers-venv)` or scripts/test.sh)"
            );
            None
        }
    }
}
