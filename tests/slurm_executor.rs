//! The Slurm executor through the real binary on a real Slurm (the one-node
//! cluster scripts/test.sh starts; SLURM_CONF). Without it these tests say so
//! and skip, except under `CI=true`, where they fail.

#[path = "support/cli.rs"]
mod cli;
use cli::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn cluster() -> bool {
    match std::env::var("SLURM_CONF") {
        Ok(conf) if Path::new(&conf).exists() => true,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("SLURM_CONF is not set; scripts/test.sh starts a local Slurm and sets it")
        }
        _ => {
            eprintln!("SKIPPED: no local Slurm (SLURM_CONF unset; run through scripts/test.sh)");
            false
        }
    }
}

const CHAIN: &str = r#"
version: 1
name: chain
vars:
  delay: 0
  shards: 4
stages:
  a:
    op: debug_shards
    seed: 3
    shards: ${shards}
    delay_ms: ${delay}
  b:
    op: debug_shards
    inputs: [a]
    shards: 2
"#;

/// The job records of a cache: (record file, job id).
fn job_records(cache: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<(PathBuf, u64)> = std::fs::read_dir(cache.join("jobs"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".slurm.json"))
                .map(|p| {
                    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                    let id = v["job_id"].as_u64().unwrap();
                    (p, id)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn a_slurm_run_equals_a_local_run_and_reruns_submit_nothing() {
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    run_ok(&["run", "p.yaml", "--cache-dir", "local"], t.path());
    run_ok(&["run", "p.yaml", "--cache-dir", "cluster", "--executor", "slurm"], t.path());
    let cluster = t.path().join("cluster");
    assert_eq!(statuses(&cluster), both("ran"));
    assert_eq!(payloads(&cluster), payloads(&t.path().join("local")), "byte-identical to a local run");
    let jobs = job_records(&cluster);
    assert_eq!(jobs.len(), 2, "one job per stage: {jobs:?}");
    assert_ne!(jobs[0].1, jobs[1].1);

    run_ok(&["run", "p.yaml", "--cache-dir", "cluster", "--executor", "slurm"], t.path());
    assert_eq!(statuses(&cluster), both("hit"));
    assert_eq!(job_records(&cluster), jobs, "nothing was submitted again");
}

/// The driver is SIGKILLed while stage `a` runs as a job; started again, it
/// attaches to that job instead of submitting a second one.
#[test]
fn a_killed_driver_attaches_to_its_running_job() {
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    let slow = ["--set", "delay=500", "--set", "shards=10"];
    let mut args = vec!["run", "p.yaml", "--cache-dir", "c", "--executor", "slurm"];
    args.extend(slow);
    let mut driver =
        bin().args(&args).current_dir(t.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let cache = t.path().join("c");
    let t0 = Instant::now();
    while job_records(&cache).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no job was submitted");
        std::thread::sleep(Duration::from_millis(50));
    }
    driver.kill().unwrap();
    driver.wait().unwrap();
    let before = job_records(&cache);
    assert_eq!(before.len(), 1);

    run_ok(&args, t.path());
    assert_eq!(statuses(&cache), both("ran"));
    let after = job_records(&cache);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&before[0]), "stage a kept its job {}: {after:?}", before[0].1);
    let mut runs: Vec<PathBuf> = std::fs::read_dir(cache.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    runs.sort();
    let log = std::fs::read_to_string(runs.last().unwrap().join("logs/a.log")).unwrap();
    assert!(log.contains(&format!("attached to Slurm job {}", before[0].1)), "{log}");
}

#[test]
fn slurm_settings_are_checked_and_refusals_name_the_stage() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("typo.yaml"),
        format!("{CHAIN}executor: slurm\nslurm:\n  partiton: gpu\n  time: 4h\n"),
    )
    .unwrap();
    let out = bin().args(["validate", "typo.yaml"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.yaml:") && err.contains("did you mean `partition`"), "{err}");
    assert!(err.contains("`time: 4h` is not a Slurm time limit"), "{err}");

    if !cluster() {
        return;
    }
    std::fs::write(t.path().join("bad.yaml"), format!("{CHAIN}slurm:\n  partition: no-such-partition\n")).unwrap();
    let out = bin().args(["run", "bad.yaml", "--executor", "slurm"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stage `a`") && err.contains("Invalid partition name specified"), "{err}");
}
