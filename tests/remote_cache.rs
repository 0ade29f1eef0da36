//! Remote caches through the real binary: a run pushes what it computes, a run
//! on an empty cache pulls everything back (verified, byte-identical), push and
//! pull killed with SIGKILL leave nothing half-visible and resume, and S3
//! credentials come from the environment (moto's server, started here).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
mod cli;
#[path = "../crates/remote/tests/support/mod.rs"]
mod support;
use cli::*;

const PIPELINE: &str = r#"
version: 1
name: remote
vars:
  shards: 3
  shard_bytes: 4096
stages:
  a:
    op: debug_shards
    seed: 7
    shards: ${shards}
    shard_bytes: ${shard_bytes}
  b:
    op: debug_shards
    inputs: [a]
    shards: 2
"#;

#[test]
fn a_run_pushes_and_a_fresh_cache_pulls_everything_back() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), PIPELINE).unwrap();
    let remote = format!("file://{}", t.path().join("remote").display());
    run_ok(&["run", "p.yaml", "--cache-dir", "c1", "--remote", &remote], t.path());
    assert_eq!(statuses(&t.path().join("c1")), both("ran"));
    let listed = run_ok(&["cache", "ls", "--remote", &remote], t.path());
    assert!(listed.contains("2 artifacts on"), "{listed}");

    // A second person (empty cache): everything comes from the remote, verified.
    run_ok(&["run", "p.yaml", "--cache-dir", "c2", "--remote", &remote], t.path());
    assert_eq!(statuses(&t.path().join("c2")), both("pulled"));
    assert_eq!(artifacts(&t.path().join("c2")), artifacts(&t.path().join("c1")), "byte-identical");
    let verified = run_ok(&["cache", "--cache-dir", "c2", "verify"], t.path());
    assert!(verified.contains("2 verified, 0 corrupt"), "{verified}");

    // Pull-only never pushes; with the remote turned off nothing is pulled.
    run_ok(
        &["run", "p.yaml", "--cache-dir", "c3", "--set", "shards=4", "--remote", &remote, "--remote-policy", "pull"],
        t.path(),
    );
    assert!(run_ok(&["cache", "ls", "--remote", &remote], t.path()).contains("2 artifacts on"));
    run_ok(&["run", "p.yaml", "--cache-dir", "c4", "--remote", &remote, "--remote-policy", "none"], t.path());
    assert_eq!(statuses(&t.path().join("c4")), both("ran"));

    // cache push/pull by pipeline: c3's artifacts go up, then down into c5.
    let pushed =
        run_ok(&["cache", "--cache-dir", "c3", "push", "p.yaml", "--set", "shards=4", "--remote", &remote], t.path());
    assert!(pushed.contains("2 pushed, 0 already on"), "{pushed}");
    let pulled =
        run_ok(&["cache", "--cache-dir", "c5", "pull", "p.yaml", "--set", "shards=4", "--remote", &remote], t.path());
    assert!(pulled.contains("2 pulled, 0 already local"), "{pulled}");
    assert_eq!(artifacts(&t.path().join("c5")), artifacts(&t.path().join("c3")));
    let check = run_ok(&["cache", "verify", "--remote", &remote], t.path());
    assert!(check.contains("4 verified on") && check.contains(", 0 corrupt"), "{check}");
}

#[test]
fn a_damaged_remote_artifact_is_never_used() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), PIPELINE).unwrap();
    let root = t.path().join("remote");
    let remote = root.to_str().unwrap().to_string();
    run_ok(&["run", "p.yaml", "--cache-dir", "c1", "--remote", &remote], t.path());
    // Flip one byte of every blob.
    for d in std::fs::read_dir(root.join("blobs")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let mut b = std::fs::read(&p).unwrap();
            if !b.is_empty() {
                b[0] ^= 1;
                std::fs::write(&p, b).unwrap();
            }
        }
    }
    let check = run(&["cache", "verify", "--remote", &remote], t.path());
    assert_eq!(check.status.code(), Some(3));
    // The run notices, computes instead, and ends with correct artifacts.
    run_ok(&["run", "p.yaml", "--cache-dir", "c2", "--remote", &remote, "--remote-policy", "pull"], t.path());
    assert_eq!(statuses(&t.path().join("c2")), both("ran"));
    assert_eq!(payloads(&t.path().join("c2")), payloads(&t.path().join("c1")));
    let log = std::fs::read_dir(t.path().join("c2/runs")).unwrap().next().unwrap().unwrap().path();
    let text: String = std::fs::read_dir(log.join("logs"))
        .map(|d| d.map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap_or_default()).collect())
        .unwrap_or_default();
    assert!(text.contains("is damaged"), "the stage log says why it did not pull: {text}");
}

/// SIGKILL at several points of a push and of a pull: the other side never
/// shows a partial artifact, and the next attempt completes it.
#[test]
fn killed_push_and_pull_resume_and_never_show_partial_artifacts() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), PIPELINE).unwrap();
    let remote = t.path().join("remote").to_str().unwrap().to_string();
    // 24 shards of 8 MiB: a push or pull takes long enough to be interrupted.
    let big = ["--set", "shards=24", "--set", "shard_bytes=8388608"];
    let mut args = vec!["run", "p.yaml", "--cache-dir", "c1"];
    args.extend(big);
    run_ok(&args, t.path());
    // The big artifact: the one with the most bytes.
    let key_a = artifacts(&t.path().join("c1"))
        .into_iter()
        .max_by_key(|(k, _)| dir_size(&t.path().join("c1/artifacts").join(k)))
        .expect("artifacts")
        .0;

    let kill_after = |args: &[&str], ms: u64| {
        let mut child =
            bin().args(args).current_dir(t.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
    };
    let remote_has = || run_ok(&["cache", "ls", "--remote", &remote], t.path()).contains(&key_a[..16]);
    for ms in [150, 400, 800] {
        kill_after(&["cache", "--cache-dir", "c1", "push", &key_a, "--remote", &remote], ms);
        if remote_has() {
            // Finished before the kill: what is there must be whole.
            let v = run(&["cache", "verify", &key_a, "--remote", &remote], t.path());
            assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
        }
    }
    let pushed = run_ok(&["cache", "--cache-dir", "c1", "push", &key_a, "--remote", &remote], t.path());
    assert!(pushed.contains("1 pushed") || pushed.contains("1 already on"), "{pushed}");
    run_ok(&["cache", "verify", &key_a, "--remote", &remote], t.path());

    for ms in [150, 400, 800] {
        kill_after(&["cache", "--cache-dir", "c2", "pull", &key_a, "--remote", &remote], ms);
        let local = t.path().join("c2/artifacts").join(&key_a);
        if local.exists() {
            let v = run(&["cache", "--cache-dir", "c2", "verify", &key_a], t.path());
            assert!(v.status.success(), "a visible local artifact is whole");
        }
    }
    let t0 = Instant::now();
    let pulled = run_ok(&["cache", "--cache-dir", "c2", "pull", &key_a, "--remote", &remote], t.path());
    assert!(pulled.contains("1 pulled") || pulled.contains("1 already local"), "{pulled} after {:?}", t0.elapsed());
    run_ok(&["cache", "--cache-dir", "c2", "verify", &key_a], t.path());
    let a1: Vec<_> = artifacts(&t.path().join("c1")).into_iter().filter(|(k, _)| *k == key_a).collect();
    let a2: Vec<_> = artifacts(&t.path().join("c2")).into_iter().filter(|(k, _)| *k == key_a).collect();
    assert_eq!(a1, a2);
}

/// The pipeline names an S3 remote; credentials and endpoint come from the
/// standard AWS environment variables, never from the pipeline.
#[test]
fn s3_remote_from_the_pipeline_with_environment_credentials() {
    let Some(moto) = support::Moto::start(&[]) else { return };
    moto.create_bucket("team");
    let t = tempfile::tempdir().unwrap();
    let yaml = format!("{PIPELINE}cache:\n  remote: s3://team/saepipe\n");
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let with_env = |args: &[&str], cache: &str| {
        let mut c = bin();
        c.args(args)
            .args(["--cache-dir", cache])
            .current_dir(t.path())
            .env("AWS_ACCESS_KEY_ID", "env-key-id")
            .env("AWS_SECRET_ACCESS_KEY", "env-secret-value")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &moto.endpoint);
        let out = c.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(!text.contains("env-secret-value"), "a secret in the output: {text}");
        text
    };
    with_env(&["run", "p.yaml"], "c1");
    with_env(&["run", "p.yaml"], "c2");
    assert_eq!(statuses(&t.path().join("c2")), both("pulled"));
    assert_eq!(artifacts(&t.path().join("c2")), artifacts(&t.path().join("c1")));
    for dir in ["c1", "c2"] {
        for f in walk(&t.path().join(dir)) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("env-secret-value"),
                "credentials written to {}",
                f.display()
            );
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    walk(dir).iter().map(|f| f.metadata().map(|m| m.len()).unwrap_or(0)).sum()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn cache_settings_are_checked_with_locations() {
    let t = tempfile::tempdir().unwrap();
    let yaml = format!("{PIPELINE}cache:\n  remot: s3://b/p\n  push: maybe\n");
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let out = run(&["validate", "p.yaml"], t.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.yaml:") && err.contains("unknown cache setting `remot`"), "{err}");
    assert!(err.contains("did you mean `remote`?"), "{err}");
    assert!(err.contains("expected true or false"), "{err}");
    assert!(err.contains("`cache:` needs `remote: URL`"), "{err}");
}
