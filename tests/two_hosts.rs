//! Two hosts sharing one cache directory, simulated with Linux namespaces: each
//! driver runs under `unshare --uts --pid` with a host name of its own, so both
//! drivers are pid 1 on different "hosts" and only the lock files' contents and
//! the file system tell them apart. Needs root (as scripts/test.sh runs); without
//! the privilege the tests say so and skip, except under `CI=true`.

#[path = "support/cli.rs"]
mod cli;
use cli::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn namespaces_available() -> bool {
    let ok = Command::new("unshare")
        .args(["--uts", "--pid", "--fork", "sh", "-c", "hostname probe-host"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("`unshare --uts --pid` is not permitted here; the two-host tests need root");
        }
        eprintln!("SKIPPED: `unshare --uts --pid` is not permitted (run as root, as scripts/test.sh does)");
    }
    ok
}

/// `saepipe ARGS` as pid 1 of a new PID namespace on a host named `host`.
fn on_host(host: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let exe = env!("CARGO_BIN_EXE_saepipe");
    let mut c = Command::new("unshare");
    c.args(["--uts", "--pid", "--fork", "--kill-child", "sh", "-c", "hostname \"$0\" && exec \"$@\"", host, exe])
        .args(args)
        .current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env_remove(saepipe_cache::HOSTNAME_ENV)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn finish(c: Child) -> String {
    let o = c.wait_with_output().unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    text
}

/// Stage instances a run's summary reports as computed by it (from the start
/// or resumed from the partial work another host left).
fn ran(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(" ran ") || l.contains(" resumed "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|s| s.starts_with("s[") || s == "a" || s == "b")
        .collect()
}

const SIX: &str = "version: 1\nname: split\nstages:\n  s:\n    op: debug_shards\n    foreach: [1, 2, 3, 4, 5, 6]\n    seed: ${item}\n    shards: 4\n    delay_ms: 150\n";

#[test]
fn two_hosts_on_one_cache_compute_each_stage_once() {
    if !namespaces_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), SIX).unwrap();
    let a = on_host("host-a", t.path(), &["run", "p.yaml", "--jobs", "1"], &[]);
    std::thread::sleep(Duration::from_millis(100));
    let b = on_host("host-b", t.path(), &["run", "p.yaml", "--jobs", "1"], &[]);
    let (out_a, out_b) = (finish(a), finish(b));
    let mut all: Vec<String> = ran(&out_a).into_iter().chain(ran(&out_b)).collect();
    all.sort();
    assert_eq!(all, ["s[1]", "s[2]", "s[3]", "s[4]", "s[5]", "s[6]"], "each stage once:\n{out_a}\n{out_b}");
    assert!(!ran(&out_a).is_empty() && !ran(&out_b).is_empty(), "both hosts computed:\n{out_a}\n{out_b}");
    // Same bytes as one host alone.
    run_ok(&["run", "p.yaml", "--cache-dir", "alone"], t.path());
    assert_eq!(payloads(&t.path().join("cache")), payloads(&t.path().join("alone")));
}

#[test]
fn a_killed_hosts_lock_is_broken_by_the_other_host_and_a_live_one_is_not() {
    if !namespaces_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("p.yaml"),
        "version: 1\nname: one\nstages:\n  a:\n    op: debug_shards\n    seed: 5\n    shards: 40\n    delay_ms: 100\n",
    )
    .unwrap();
    // Locks go stale after 2 s without a rewrite (heartbeats every ~130 ms).
    let fast = [("SAEPIPE_LOCK_TIMEOUT", "2")];
    let lock_of = |dir: &Path| -> Option<serde_json::Value> {
        let locks = std::fs::read_dir(dir.join("cache/locks")).ok()?;
        locks
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".lock"))
            .and_then(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
    };

    // host-a computes; host-b, started meanwhile, waits past several stale periods and reuses a's work.
    let a = on_host("host-a", t.path(), &["run", "p.yaml"], &fast);
    let t0 = Instant::now();
    let holder = loop {
        if let Some(h) = lock_of(t.path()) {
            break h;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "host-a never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((holder["host"].as_str(), holder["pid"].as_u64()), (Some("host-a"), Some(1)));
    let b = on_host("host-b", t.path(), &["run", "p.yaml"], &fast);
    let (out_a, out_b) = (finish(a), finish(b));
    assert_eq!((ran(&out_a), ran(&out_b)), (vec!["a".to_string()], vec![]), "{out_a}\n{out_b}");
    assert!(out_b.lines().any(|l| l.starts_with("a ") && l.contains(" hit ")), "{out_b}");

    // host-a is killed mid-stage (the whole namespace goes); host-b breaks its lock once it stops being rewritten.
    std::fs::remove_dir_all(t.path().join("cache")).unwrap();
    let mut a = on_host("host-a", t.path(), &["run", "p.yaml"], &fast);
    let t0 = Instant::now();
    while lock_of(t.path()).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "host-a never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    a.kill().unwrap(); // unshare: its namespace's pid 1 dies with it
    a.wait().unwrap();
    let out_b = finish(on_host("host-b", t.path(), &["run", "p.yaml"], &fast));
    assert_eq!(ran(&out_b), ["a"], "{out_b}");
    assert!(out_b.contains("waiting for pid 1 on host-a"), "host-b saw the dead host's lock first: {out_b}");
    run_ok(&["run", "p.yaml", "--cache-dir", "alone"], t.path());
    assert_eq!(payloads(&t.path().join("cache")), payloads(&t.path().join("alone")), "byte-identical after the break");
}
