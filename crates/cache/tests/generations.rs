//! Generations and reader leases: a rebuild or removal never deletes what a
//! reader is using; `verify_all` sees every entry of `artifacts/`.

use saepipe_cache::{Cache, Key, LockTiming, Manifest, ManifestDraft, VerifyMode};
use std::collections::HashSet;
use std::time::Duration;

fn key(n: u32) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(&n.to_le_bytes());
    Key::from_hasher(h)
}

fn stage(cache: &Cache, k: &Key, content: &[u8]) -> saepipe_cache::Staging {
    let s = cache.begin(k).unwrap();
    std::fs::write(s.dir().join("data.bin"), content).unwrap();
    s
}

fn draft() -> ManifestDraft {
    ManifestDraft { op: "test".into(), op_version: 1, stage: "s".into(), ..Default::default() }
}

fn publish(cache: &Cache, k: &Key, content: &[u8]) -> Manifest {
    stage(cache, k, content).commit(draft()).unwrap()
}

fn generations(cache: &Cache) -> usize {
    std::fs::read_dir(cache.root().join("generations")).unwrap().count()
}

#[test]
fn a_forced_rebuild_keeps_the_leased_generation_readable_until_released() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(1);
    publish(&c, &k, b"first");
    let lease = c.lease(&k).unwrap().unwrap();
    let old_dir = lease.dir().to_path_buf();
    assert_eq!(std::fs::read(old_dir.join("data.bin")).unwrap(), b"first");
    assert_eq!(c.live_leases(&k), 1);

    // A forced rebuild publishes a new generation over the valid one.
    let m = stage(&c, &k, b"second").commit_replacing(draft()).unwrap();
    assert_eq!(c.lookup(&k).unwrap().unwrap(), m);
    assert_eq!(std::fs::read(c.artifact_dir(&k).join("data.bin")).unwrap(), b"second");
    assert_eq!(std::fs::read(old_dir.join("data.bin")).unwrap(), b"first", "the reader's generation is untouched");
    assert_eq!(generations(&c), 2);

    // gc keeps the leased old generation; once released, it goes.
    let keep: HashSet<Key> = [k].into();
    c.gc(&keep, false).unwrap();
    assert!(old_dir.exists(), "gc must not delete a leased generation");
    drop(lease);
    assert_eq!(c.live_leases(&k), 0);
    let fast = Cache::open(t.path())
        .unwrap()
        .with_lock_timing(LockTiming { heartbeat: Duration::from_millis(10), stale_after: Duration::from_millis(50) });
    std::thread::sleep(Duration::from_millis(100));
    let r = fast.gc(&keep, false).unwrap();
    assert!(r.removed.iter().any(|(w, _)| w.starts_with("retired generation")), "{:?}", r.removed);
    assert!(!old_dir.exists());
    assert_eq!(generations(&c), 1);
    assert!(c.verify(&k, VerifyMode::Full).unwrap().ok);
}

#[test]
fn an_unleased_replaced_generation_is_deleted_at_once() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(2);
    publish(&c, &k, b"first");
    let old = c.generation_dir(&k).unwrap();
    stage(&c, &k, b"second").commit_replacing(draft()).unwrap();
    assert!(!old.exists());
    assert_eq!(generations(&c), 1);
    // Without replacing, a second commit keeps the first.
    stage(&c, &k, b"third").commit(draft()).unwrap();
    assert_eq!(std::fs::read(c.artifact_dir(&k).join("data.bin")).unwrap(), b"second");
    assert_eq!(generations(&c), 1);
    assert_eq!(std::fs::read_dir(c.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn remove_while_leased_keeps_the_generation_for_its_reader() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(3);
    publish(&c, &k, b"data");
    let lease = c.lease(&k).unwrap().unwrap();
    c.remove(&k).unwrap();
    assert!(c.lookup(&k).unwrap().is_none(), "removed for everyone who looks it up");
    assert!(c.lease(&k).unwrap().is_none());
    assert_eq!(std::fs::read(lease.dir().join("data.bin")).unwrap(), b"data", "but its reader still reads");
    assert_eq!(lease.manifest().key, k);
}

#[test]
fn plain_artifact_directories_are_adopted_as_generations() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(4);
    publish(&c, &k, b"old layout");
    // Rewrite it as the layout before generations: a plain directory in artifacts/.
    let generation = c.generation_dir(&k).unwrap();
    let link = c.artifact_dir(&k);
    std::fs::remove_file(&link).unwrap();
    std::fs::rename(&generation, &link).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().is_dir());
    assert!(c.lookup(&k).unwrap().is_some(), "plain directories are served");
    let c = Cache::open(t.path()).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "reopening adopts it");
    assert!(c.verify(&k, VerifyMode::Full).unwrap().ok);
    assert_eq!(std::fs::read(link.join("data.bin")).unwrap(), b"old layout");
}

#[test]
fn verify_all_reports_damaged_and_missing_manifests_and_dangling_links() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let (ok, garbage, missing, dangling) = (key(5), key(6), key(7), key(8));
    for k in [ok, garbage, missing, dangling] {
        publish(&c, &k, b"x");
    }
    std::fs::write(c.artifact_dir(&garbage).join("_manifest.json"), b"garbage").unwrap();
    std::fs::remove_file(c.artifact_dir(&missing).join("_manifest.json")).unwrap();
    std::fs::remove_dir_all(c.generation_dir(&dangling).unwrap()).unwrap();
    std::fs::create_dir(c.root().join("artifacts").join("not-a-key")).unwrap();
    let reports = c.verify_all(VerifyMode::Full).unwrap();
    assert_eq!(reports.len(), 5);
    let bad: Vec<&str> = reports.iter().filter(|(_, r)| !r.ok).map(|(n, _)| n.as_str()).collect();
    assert_eq!(bad.len(), 4, "{reports:?}");
    let problem = |k: &Key| reports.iter().find(|(n, _)| *n == k.to_string()).unwrap().1.problems.join("; ");
    assert!(problem(&garbage).contains("manifest.json unreadable"));
    assert!(problem(&missing).contains("manifest.json is missing"));
    assert!(problem(&dangling).contains("missing generation"));
    assert!(reports.iter().any(|(n, r)| n == "not-a-key" && !r.ok));
    // The listing used by `cache ls` shows only the valid one.
    assert_eq!(c.list().unwrap().len(), 1);
}
