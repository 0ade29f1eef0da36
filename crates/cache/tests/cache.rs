//! Cache behaviour: atomic publishing, verification, concurrent writers and
//! lockers (threads and real processes), stale locks, gc and fingerprint memos.

use saepipe_cache::{Cache, Key, LockInfo, ManifestDraft, VerifyMode};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn key(n: u8) -> Key {
    Key::from_hasher({
        let mut h = blake3::Hasher::new();
        h.update(&[n]);
        h
    })
}

fn publish(cache: &Cache, k: &Key, content: &[u8]) -> saepipe_cache::Manifest {
    let s = cache.begin(k).unwrap();
    std::fs::create_dir_all(s.dir().join("sub")).unwrap();
    std::fs::write(s.dir().join("sub/data.bin"), content).unwrap();
    std::fs::write(s.dir().join("meta.json"), b"{}").unwrap();
    s.commit(ManifestDraft { op: "test".into(), stage: "s".into(), ..Default::default() }).unwrap()
}

#[test]
fn commit_lookup_and_key_text() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(1);
    assert!(c.lookup(&k).unwrap().is_none());
    let m = publish(&c, &k, b"hello");
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.total_bytes, 7);
    assert_eq!(c.lookup(&k).unwrap().unwrap(), m);
    assert_eq!(k.to_string().parse::<Key>().unwrap(), k);
    assert_eq!(c.resolve_prefix(&k.to_string()[..6]).unwrap(), k);
    assert!("xyz".parse::<Key>().is_err());
    assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0, "staging is gone after commit");
}

#[test]
fn uncommitted_staging_and_manifestless_dirs_are_invisible() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(2);
    {
        let s = c.begin(&k).unwrap();
        std::fs::write(s.dir().join("x"), b"partial").unwrap();
    }
    assert!(c.lookup(&k).unwrap().is_none());
    assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
    std::fs::create_dir_all(c.artifact_dir(&k)).unwrap();
    std::fs::write(c.artifact_dir(&k).join("x"), b"torn").unwrap();
    assert!(c.lookup(&k).unwrap().is_none(), "a directory without manifest is not an artifact");
    publish(&c, &k, b"ok");
    assert!(c.lookup(&k).unwrap().is_some());
}

#[test]
fn verify_detects_truncation_bitflips_and_missing_files() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(3);
    publish(&c, &k, &vec![7u8; 4096]);
    assert!(c.verify(&k, VerifyMode::Full).unwrap().ok);
    let data = c.artifact_dir(&k).join("sub/data.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    assert!(c.verify(&k, VerifyMode::Quick).unwrap().ok, "same size: quick cannot see it");
    let r = c.verify(&k, VerifyMode::Full).unwrap();
    assert!(!r.ok && r.problems[0].contains("content hash"), "{:?}", r.problems);
    std::fs::write(&data, &bytes[..100]).unwrap();
    let r = c.verify(&k, VerifyMode::Quick).unwrap();
    assert!(r.problems[0].contains("size 100 != manifest 4096"), "{:?}", r.problems);
    std::fs::remove_file(&data).unwrap();
    assert!(c.verify(&k, VerifyMode::Quick).unwrap().problems[0].contains("missing"));
    std::fs::write(c.artifact_dir(&k).join("manifest.json"), b"garbage").unwrap();
    assert!(!c.verify(&k, VerifyMode::Quick).unwrap().ok);
    assert!(c.lookup(&k).unwrap().is_none());
}

#[test]
fn concurrent_commits_of_one_key_agree() {
    let t = tempfile::tempdir().unwrap();
    let k = key(4);
    let manifests: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| publish(&Cache::open(t.path()).unwrap(), &k, b"same"))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let c = Cache::open(t.path()).unwrap();
    let published = c.lookup(&k).unwrap().unwrap();
    assert!(manifests.iter().all(|m| m.files == published.files));
    assert!(c.verify(&k, VerifyMode::Full).unwrap().ok);
    assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn lock_excludes_threads_and_waits() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(5);
    let g = c.try_lock(&k).unwrap().expect("free lock");
    assert!(c.try_lock(&k).unwrap().is_none());
    let waited = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut told: Option<LockInfo> = None;
            let start = Instant::now();
            let _g2 = c.lock(&k, &mut |i| told = Some(i.clone())).unwrap();
            (start.elapsed(), told)
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(g);
        h.join().unwrap()
    });
    assert!(waited.0 >= Duration::from_millis(250));
    assert_eq!(waited.1.unwrap().pid, std::process::id());
}

#[test]
fn lock_held_across_heartbeats_stays_valid() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(6);
    let _g = c.try_lock(&k).unwrap().unwrap();
    let path = t.path().join("locks").join(format!("{k}.lock"));
    let before: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(2600));
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(after["heartbeat_unix"].as_f64() > before["heartbeat_unix"].as_f64(), "heartbeat refreshed");
    assert!(c.try_lock(&k).unwrap().is_none());
}

/// Child role: take the lock of key 7 and sleep until killed.
#[test]
fn child_hold_lock() {
    let Ok(dir) = std::env::var("SAEPIPE_CACHE_TEST_CHILD") else { return };
    let c = Cache::open(std::path::Path::new(&dir)).unwrap();
    let _g = c.lock(&key(7), &mut |_| {}).unwrap();
    std::fs::write(std::path::Path::new(&dir).join("child-ready"), b"").unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn lock_of_killed_process_is_broken() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_hold_lock", "--nocapture"])
        .env("SAEPIPE_CACHE_TEST_CHILD", t.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.path().join("child-ready").exists() {
        assert!(Instant::now() < deadline, "child never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(c.try_lock(&key(7)).unwrap().is_none(), "held by a live process");
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    let _g = c.lock(&key(7), &mut |_| {}).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "a dead holder's lock is broken at once");
}

#[test]
fn gc_keeps_reached_and_removes_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let (a, b) = (key(8), key(9));
    publish(&c, &a, b"keep");
    publish(&c, &b, b"drop");
    std::fs::create_dir_all(t.path().join("tmp/deadbeef.999999999.x")).unwrap();
    std::fs::write(c.partial_dir(&b).unwrap().join("shard"), b"x").unwrap();
    let keep: HashSet<Key> = [a].into();
    let dry = c.gc(&keep, true).unwrap();
    assert_eq!(dry.removed.len(), 3, "{:?}", dry.removed);
    assert!(c.lookup(&b).unwrap().is_some(), "dry run deletes nothing");
    let real = c.gc(&keep, false).unwrap();
    assert_eq!(real.kept, 1);
    assert!(c.lookup(&a).unwrap().is_some() && c.lookup(&b).unwrap().is_none());
    assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(t.path().join("partial")).unwrap().count(), 0);
}

#[test]
fn fingerprints_are_memoized_and_notice_changes() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(&t.path().join("cache")).unwrap();
    let f = t.path().join("weights.bin");
    std::fs::write(&f, vec![1u8; 100_000]).unwrap();
    let h1 = c.fingerprint_file(&f).unwrap();
    let h2 = c.fingerprint_file(&f).unwrap();
    assert_eq!(h1, h2);
    assert_eq!(c.stats.files_hashed.load(Ordering::Relaxed), 1, "second call served from the memo");
    assert_eq!(h1, blake3::hash(&vec![1u8; 100_000]).to_hex().to_string());
    std::fs::write(&f, vec![2u8; 100_001]).unwrap();
    assert_ne!(c.fingerprint_file(&f).unwrap(), h1);
    assert_eq!(c.stats.files_hashed.load(Ordering::Relaxed), 2);
    // Directories hash by relative path and content, not by location.
    for d in ["x", "y"] {
        std::fs::create_dir_all(t.path().join(d).join("sub")).unwrap();
        std::fs::write(t.path().join(d).join("sub/a.txt"), b"a").unwrap();
    }
    assert_eq!(c.fingerprint_dir(&t.path().join("x")).unwrap(), c.fingerprint_dir(&t.path().join("y")).unwrap());
    std::fs::write(t.path().join("y/sub/a.txt"), b"b").unwrap();
    assert_ne!(c.fingerprint_dir(&t.path().join("x")).unwrap(), c.fingerprint_dir(&t.path().join("y")).unwrap());
}

#[test]
fn unknown_cache_format_is_rejected() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("saepipe-cache.json"), b"{\"format_version\": 99}").unwrap();
    let e = Cache::open(t.path()).err().unwrap().to_string();
    assert!(e.contains("cache format version 99 is not supported"), "{e}");
}
