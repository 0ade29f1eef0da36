//! Several real processes (and threads) on one cache: locks, stale-lock breaking,
//! heartbeats and concurrent publishing.
//!
//! Child processes are this test binary run again with `--ignored --exact
//! child_role`; environment variables select what the child does.

use saepipe_cache::{Cache, HOSTNAME_ENV, Key, LockInfo, LockTiming, Manifest, ManifestDraft, VerifyMode};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ROLE: &str = "SAEPIPE_CACHE_TEST_ROLE";
const DIR: &str = "SAEPIPE_CACHE_TEST_DIR";
const FAST: &str = "SAEPIPE_CACHE_TEST_FAST_LOCKS";

fn key(n: u32) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(&n.to_le_bytes());
    Key::from_hasher(h)
}

/// Heartbeats every 100 ms, stale after 1.5 s (15 missed beats, so a loaded
/// machine does not flake): lets a test outlive `stale_after` quickly.
fn fast() -> LockTiming {
    LockTiming { heartbeat: Duration::from_millis(100), stale_after: Duration::from_millis(1500) }
}

fn open(dir: &Path, fast_locks: bool) -> Cache {
    let c = Cache::open(&dir.join("cache")).unwrap();
    if fast_locks { c.with_lock_timing(fast()) } else { c }
}

/// A child process that is killed if the test fails before waiting for it.
struct Kid(Child);

impl std::ops::Deref for Kid {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kid {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(role: &str, dir: &Path, envs: &[(&str, &str)]) -> Kid {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Kid(cmd.spawn().unwrap())
}

/// Polls for `path` to exist (a child's signal); panics after a generous bound so a
/// broken child cannot hang the suite.
fn wait_for(path: &Path, child: &mut Kid) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited ({status}) before creating {}", path.display());
        }
        assert!(Instant::now() < deadline, "no {} after 60 s", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn payload() -> Vec<u8> {
    (0..2_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect()
}

/// The child side of the tests below; does nothing unless run by them.
#[test]
#[ignore = "child process of the multi-process tests"]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let c = open(&dir, std::env::var(FAST).is_ok());
    let me = std::process::id();
    match role.as_str() {
        // Take the lock of key 1, say so, and hold it until told to release.
        "hold" => {
            let g = c.lock(&key(1), &mut |_| {}).unwrap();
            std::fs::write(dir.join("ready"), me.to_string()).unwrap();
            // Bounded, so a child orphaned by a crashed test run ends by itself.
            let give_up = Instant::now() + Duration::from_secs(120);
            while !dir.join("release").exists() {
                assert!(Instant::now() < give_up, "never told to release");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(g.still_held());
            std::fs::write(dir.join("released"), b"").unwrap();
            drop(g);
        }
        // Take the lock of key 2 five times; inside, nobody else may be inside.
        "exclusive" => {
            for round in 0..5 {
                let g = c.lock(&key(2), &mut |_| {}).unwrap();
                let inside = dir.join("inside");
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&inside)
                    .expect("two lock holders at once");
                let mut log = std::fs::OpenOptions::new().append(true).create(true).open(dir.join("log")).unwrap();
                std::io::Write::write_all(&mut log, format!("{me} {round}\n").as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                std::fs::remove_file(&inside).unwrap();
                drop(g);
            }
        }
        // Publish key 3 with the same payload as every other committer.
        "commit" => {
            let s = c.begin(&key(3)).unwrap();
            std::fs::create_dir_all(s.dir().join("shards")).unwrap();
            std::fs::write(s.dir().join("shards/0.bin"), payload()).unwrap();
            std::fs::write(s.dir().join("meta.json"), b"{\"rows\": 2}").unwrap();
            std::fs::write(dir.join("go-ready").join(me.to_string()), b"").unwrap();
            let give_up = Instant::now() + Duration::from_secs(120);
            while !dir.join("go").exists() {
                assert!(Instant::now() < give_up, "never told to go");
                std::thread::sleep(Duration::from_millis(1));
            }
            let m = s
                .commit(ManifestDraft { op: "test".into(), stage: format!("writer {me}"), ..Default::default() })
                .unwrap();
            std::fs::write(dir.join("out").join(format!("{me}.json")), serde_json::to_vec(&m).unwrap()).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_second_process_waits_until_the_first_releases() {
    let t = tempfile::tempdir().unwrap();
    let mut child = spawn("hold", t.path(), &[]);
    wait_for(&t.path().join("ready"), &mut child);
    let c = open(t.path(), false);
    assert!(c.try_lock(&key(1)).unwrap().is_none(), "held by a live process");
    assert_eq!(c.lock_holder(&key(1)).unwrap().pid, child.id());

    let waiting = AtomicBool::new(false);
    let (calls, released_first) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut calls = Vec::<LockInfo>::new();
            let g = c
                .lock(&key(1), &mut |info| {
                    calls.push(info.clone());
                    waiting.store(true, Ordering::SeqCst);
                })
                .unwrap();
            let released_first = t.path().join("released").exists();
            drop(g);
            (calls, released_first)
        });
        while !waiting.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::write(t.path().join("release"), b"").unwrap();
        h.join().unwrap()
    });
    assert!(released_first, "the lock was granted only after the holder released it");
    assert_eq!(calls.len(), 1, "on_wait is called once");
    assert_eq!((calls[0].pid, calls[0].host.as_str()), (child.id(), saepipe_cache::hostname().as_str()));
    assert!(child.wait().unwrap().success());
    assert!(!c.root().join("locks").join(format!("{}.lock", key(1))).exists(), "released locks leave no file");
}

#[test]
fn the_lock_of_a_killed_process_is_broken() {
    let t = tempfile::tempdir().unwrap();
    let mut child = spawn("hold", t.path(), &[]);
    wait_for(&t.path().join("ready"), &mut child);
    let c = open(t.path(), false);
    assert!(c.try_lock(&key(1)).unwrap().is_none());
    child.kill().unwrap(); // SIGKILL: no destructor runs, the lock file stays
    child.wait().unwrap();
    let leftover = c.lock_holder(&key(1)).expect("the dead holder's lock file is still there");
    assert_eq!(leftover.pid, child.id());
    assert!(leftover.is_stale(), "a dead pid on this host makes the lock stale at once");
    let g = c.try_lock(&key(1)).unwrap().expect("stale lock broken");
    assert_eq!(c.lock_holder(&key(1)).unwrap().pid, std::process::id());
    assert!(g.still_held());
}

#[test]
fn heartbeats_keep_a_lock_alive_and_a_frozen_holder_loses_it() {
    let t = tempfile::tempdir().unwrap();
    // The child poses as another host, so only its heartbeat can keep its lock alive.
    let mut child = spawn("hold", t.path(), &[(FAST, "1"), (HOSTNAME_ENV, "some-other-node")]);
    wait_for(&t.path().join("ready"), &mut child);
    let c = open(t.path(), true);
    let first = c.lock_holder(&key(1)).unwrap();
    assert_eq!(first.host, "some-other-node");
    // Hold for two stale periods: every attempt must fail.
    let until = Instant::now() + fast().stale_after * 2;
    while Instant::now() < until {
        assert!(c.try_lock(&key(1)).unwrap().is_none(), "a heartbeating lock was broken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let later = c.lock_holder(&key(1)).unwrap();
    assert_eq!(later.token, first.token);
    assert!(
        later.heartbeat_unix > first.heartbeat_unix + 1.0,
        "heartbeat refreshed: {} -> {}",
        first.heartbeat_unix,
        later.heartbeat_unix
    );

    // Freeze the holder (as a hung or partitioned node): its heartbeat stops and the lock goes stale.
    // SAFETY: plain signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let g = loop {
        if let Some(g) = c.try_lock(&key(1)).unwrap() {
            break g;
        }
        assert!(Instant::now() < deadline, "a lock without heartbeats was never broken");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(g.still_held());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Locks of holders on other hosts are judged on the file system's clock:
/// a host whose clock runs an hour behind writes heartbeats that look an
/// hour old, and one whose clock runs ahead writes heartbeats from the
/// future. Neither clock matters, only when the file was last rewritten.
#[test]
fn locks_of_other_hosts_age_on_the_file_system_clock_not_theirs() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), false);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let write = |n: u32, host: &str, heartbeat: f64| {
        let info = LockInfo {
            pid: 1,
            host: host.into(),
            started_unix: heartbeat,
            heartbeat_unix: heartbeat,
            token: format!("t{n}"),
        };
        let path = c.root().join("locks").join(format!("{}.lock", key(n)));
        std::fs::write(&path, serde_json::to_vec(&info).unwrap()).unwrap();
        path
    };
    // Just rewritten by a host whose clock is an hour slow: alive.
    write(3, "slow-clock-node", now - 3600.0);
    assert!(c.try_lock(&key(3)).unwrap().is_none(), "a live lock was broken because its host's clock is slow");
    assert!(c.lock_is_held(&key(3)));
    // Not rewritten for 40 s (well past stale_after) by a host whose clock is an hour fast: gone.
    let path = write(4, "fast-clock-node", now + 3600.0);
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(40)).unwrap();
    drop(f);
    assert!(!c.lock_is_held(&key(4)));
    let g = c.try_lock(&key(4)).unwrap().expect("the abandoned lock is broken at once");
    assert!(g.still_held());
    // The clock probes leave nothing behind.
    let names: Vec<String> = std::fs::read_dir(c.root().join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".clock.")), "{names:?}");
}

#[test]
fn processes_racing_to_break_a_stale_lock_still_take_turns() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), false);
    // A lock left by a dead process: all four children find it stale at once.
    let dead_pid = {
        let mut p = Command::new("true").spawn().unwrap();
        p.wait().unwrap();
        p.id()
    };
    let stale = LockInfo {
        pid: dead_pid,
        host: saepipe_cache::hostname(),
        started_unix: 1.0,
        heartbeat_unix: 1.0,
        token: "old".into(),
    };
    std::fs::write(c.root().join("locks").join(format!("{}.lock", key(2))), serde_json::to_vec(&stale).unwrap())
        .unwrap();
    let children: Vec<Kid> = (0..4).map(|_| spawn("exclusive", t.path(), &[])).collect();
    for mut ch in children {
        assert!(ch.wait().unwrap().success(), "a child saw two holders at once (or failed)");
    }
    let log = std::fs::read_to_string(t.path().join("log")).unwrap();
    assert_eq!(log.lines().count(), 20, "{log}");
    assert!(!t.path().join("inside").exists());
    assert!(c.lock_holder(&key(2)).is_none(), "the stale lock was broken and every holder released");
    let leftovers: Vec<_> =
        std::fs::read_dir(c.root().join("locks")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn threads_take_turns_on_a_lock() {
    let t = tempfile::tempdir().unwrap();
    let c = open(t.path(), false);
    let inside = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let c = open(t.path(), false);
                for _ in 0..5 {
                    let _g = c.lock(&key(4), &mut |_| {}).unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "two threads hold the lock");
                    std::thread::sleep(Duration::from_millis(2));
                    inside.store(false, Ordering::SeqCst);
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(rounds.load(Ordering::SeqCst), 20);
    assert!(c.try_lock(&key(4)).unwrap().is_some());
}

#[test]
fn concurrent_commits_from_processes_publish_one_artifact() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("out")).unwrap();
    std::fs::create_dir_all(t.path().join("go-ready")).unwrap();
    let mut children: Vec<Kid> = (0..4).map(|_| spawn("commit", t.path(), &[])).collect();
    // Release all writers at once, after each has staged its files.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(t.path().join("go-ready")).unwrap().count() < children.len() {
        for ch in &mut children {
            assert!(ch.try_wait().unwrap().is_none(), "a writer exited early");
        }
        assert!(Instant::now() < deadline, "writers never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(t.path().join("go"), b"").unwrap();
    for ch in &mut children {
        assert!(ch.wait().unwrap().success());
    }
    let c = open(t.path(), false);
    let published = c.lookup(&key(3)).unwrap().unwrap();
    assert!(published.stage.starts_with("writer "));
    let results: Vec<Manifest> = std::fs::read_dir(t.path().join("out"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(|m| *m == published), "every writer returns the one published manifest");
    assert_eq!(published.file("shards/0.bin").unwrap().blake3, blake3::hash(&payload()).to_hex().to_string());
    assert!(c.verify(&key(3), VerifyMode::Full).unwrap().ok);
    assert_eq!(std::fs::read_dir(c.root().join("tmp")).unwrap().count(), 0, "losers' staging is gone");
    assert_eq!(c.list().unwrap().len(), 1);
}
