//! Keys, publishing, lookup, verification, listing, removal and gc, within one process.

use saepipe_cache::{Cache, CacheError, Key, Manifest, ManifestDraft, VerifyMode};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

fn key(n: u32) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(&n.to_le_bytes());
    Key::from_hasher(h)
}

fn draft(stage: &str) -> ManifestDraft {
    ManifestDraft { op: "test".into(), op_version: 1, stage: stage.into(), ..Default::default() }
}

fn publish(cache: &Cache, k: &Key, content: &[u8]) -> Manifest {
    let s = cache.begin(k).unwrap();
    std::fs::create_dir_all(s.dir().join("sub")).unwrap();
    std::fs::write(s.dir().join("sub/data.bin"), content).unwrap();
    std::fs::write(s.dir().join("meta.json"), b"{}").unwrap();
    s.commit(draft("s")).unwrap()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn key_text_forms() {
    let k = key(1);
    let hex = k.to_string();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(hex, blake3::hash(&1u32.to_le_bytes()).to_hex().to_string());
    assert_eq!(hex.parse::<Key>().unwrap(), k);
    assert_eq!(k.short(), hex[..12]);
    assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{hex}\""));
    assert_eq!(serde_json::from_str::<Key>(&format!("\"{hex}\"")).unwrap(), k);
    for bad in ["", "xyz", &hex[..63], &format!("{hex}0"), &hex.to_uppercase(), &format!("g{}", &hex[1..])] {
        assert!(matches!(bad.parse::<Key>(), Err(CacheError::BadKey(_))), "{bad:?} parsed");
    }
    assert!(serde_json::from_str::<Key>("\"abc\"").is_err());
    assert_eq!(Key::parse_prefix(" ABC12 ").unwrap(), "abc12");
    for bad in ["", "xyz", &format!("{hex}0")] {
        assert!(matches!(Key::parse_prefix(bad), Err(CacheError::BadKeyPrefix(_))), "{bad:?} accepted");
    }
}

#[test]
fn open_creates_layout_and_rejects_other_versions() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("c");
    let c = Cache::open(&root).unwrap();
    for d in ["artifacts", "tmp", "partial", "locks", "fingerprints", "runs"] {
        assert!(root.join(d).is_dir(), "{d}");
    }
    assert_eq!(c.run_dir(), c.root().join("runs"));
    assert!(
        std::fs::read_to_string(root.join("CACHEDIR.TAG"))
            .unwrap()
            .starts_with("Signature: 8a477f597d28d172789f06886806bc55")
    );
    let marker = |root: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join("saepipe-cache.json")).unwrap()).unwrap()
    };
    assert_eq!(marker(&root)["format_version"], 2);
    Cache::open(&root).unwrap();

    // A version 1 cache (manifests named `manifest.json`) opens and is marked 2,
    // so that a saepipe knowing only version 1 refuses it.
    std::fs::write(root.join("saepipe-cache.json"), b"{\"format_version\": 1}").unwrap();
    Cache::open(&root).unwrap();
    assert_eq!(marker(&root)["format_version"], 2);

    std::fs::write(root.join("saepipe-cache.json"), b"{\"format_version\": 99}").unwrap();
    let e = Cache::open(&root).err().unwrap().to_string();
    assert!(e.contains("cache format version 99 is not supported") && e.contains(&root.display().to_string()), "{e}");
    std::fs::write(root.join("saepipe-cache.json"), b"not json").unwrap();
    let e = Cache::open(&root).err().unwrap().to_string();
    assert!(e.contains("saepipe-cache.json is unreadable"), "{e}");
}

#[test]
fn commit_then_lookup_round_trips_the_manifest() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let (k, input) = (key(1), key(100));
    assert!(c.lookup(&k).unwrap().is_none());
    let s = c.begin(&k).unwrap();
    assert!(s.dir().starts_with(t.path().canonicalize().unwrap().join("tmp")));
    std::fs::create_dir_all(s.dir().join("shards")).unwrap();
    std::fs::write(s.dir().join("shards/00001.bin"), vec![3u8; 5000]).unwrap();
    std::fs::write(s.dir().join("shards/00000.bin"), b"first").unwrap();
    std::fs::create_dir_all(s.dir().join("empty")).unwrap();
    let d = ManifestDraft {
        op: "activations".into(),
        op_version: 3,
        stage: "acts.layer6".into(),
        params: serde_json::json!({"hook": "blocks.6.hook_resid_post", "tokens": 1000000, "lr": 0.1}),
        inputs: BTreeMap::from([("tokens".to_string(), input)]),
        external: BTreeMap::from([("weights".to_string(), "ab".repeat(32))]),
        metrics: serde_json::json!({"rows": 2}),
        started_unix: 1_700_000_000.25,
        seconds: 12.5,
        resumed: true,
    };
    let m = s.commit(d.clone()).unwrap();
    assert_eq!((m.key, m.op.as_str(), m.op_version, m.stage.as_str()), (k, "activations", 3, "acts.layer6"));
    assert_eq!((&m.params, &m.inputs, &m.external, &m.metrics), (&d.params, &d.inputs, &d.external, &d.metrics));
    assert_eq!((m.started_unix, m.seconds, m.resumed), (d.started_unix, d.seconds, true));
    assert_eq!(m.format_version, 1);
    assert_eq!(m.saepipe_version, env!("CARGO_PKG_VERSION"));
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["shards/00000.bin", "shards/00001.bin"], "sorted, '/'-separated, no manifest");
    assert_eq!(m.file("shards/00001.bin").unwrap().blake3, blake3::hash(&[3u8; 5000]).to_hex().to_string());
    assert_eq!(m.total_bytes, 5005);
    assert!(m.created_unix >= m.started_unix);

    assert_eq!(c.lookup(&k).unwrap().unwrap(), m);
    let on_disk: Manifest =
        serde_json::from_slice(&std::fs::read(c.artifact_dir(&k).join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk, m);
    assert!(!c.artifact_dir(&k).join("manifest.json").exists(), "written under the new name only");
    assert!(c.artifact_dir(&k).join("empty").is_dir(), "empty directories are published too");
    assert_eq!(count(&t.path().join("tmp")), 0, "staging is gone after commit");
    assert!(c.verify(&k, VerifyMode::Full).unwrap().ok);

    let listed = c.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key, listed[0].bytes, listed[0].stage.as_str(), listed[0].op.as_str()),
        (k, 5005, "acts.layer6", "activations")
    );
}

#[test]
fn prefixes_resolve_to_exactly_one_published_artifact() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let a = key(1);
    // Find a second key sharing a's first hex digit, and one that shares none of it.
    let b = (2..).map(key).find(|k| k.to_string()[..1] == a.to_string()[..1]).unwrap();
    publish(&c, &a, b"a");
    publish(&c, &b, b"b");
    let common = &a.to_string()[..1];
    assert!(matches!(c.resolve_prefix(common), Err(CacheError::AmbiguousKey(_, 2))));
    let e = c.resolve_prefix(common).unwrap_err().to_string();
    assert!(e.contains("ambiguous") && e.contains("2 artifacts"), "{e}");
    let (ahex, bhex) = (a.to_string(), b.to_string());
    let unique = (1..64).map(|n| &ahex[..n]).find(|p| !bhex.starts_with(p)).unwrap().to_string();
    assert_eq!(c.resolve_prefix(&unique).unwrap(), a);
    assert_eq!(c.resolve_prefix(&unique.to_uppercase()).unwrap(), a);
    assert_eq!(c.resolve_prefix(&b.to_string()).unwrap(), b);
    let other = (3..).map(key).find(|k| !k.to_string().starts_with(common)).unwrap();
    assert!(matches!(c.resolve_prefix(&other.to_string()[..8]), Err(CacheError::NoSuchKey(_))));
    assert!(matches!(c.resolve_prefix("not-hex"), Err(CacheError::BadKeyPrefix(_))));
    // A directory without a manifest is not an artifact, so it does not make a prefix ambiguous.
    std::fs::create_dir_all(c.artifact_dir(&other)).unwrap();
    assert!(matches!(c.resolve_prefix(&other.to_string()[..8]), Err(CacheError::NoSuchKey(_))));
}

#[test]
fn uncommitted_staging_and_manifestless_dirs_are_invisible() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(2);
    {
        let s = c.begin(&k).unwrap();
        std::fs::write(s.dir().join("x"), b"partial").unwrap();
        assert_eq!(count(&t.path().join("tmp")), 1);
    }
    assert!(c.lookup(&k).unwrap().is_none());
    assert_eq!(count(&t.path().join("tmp")), 0, "dropped staging is removed");
    assert_eq!(count(&t.path().join("artifacts")), 0);

    std::fs::create_dir_all(c.artifact_dir(&k).join("d")).unwrap();
    std::fs::write(c.artifact_dir(&k).join("d/x"), b"torn").unwrap();
    assert!(c.lookup(&k).unwrap().is_none(), "a directory without manifest is not an artifact");
    assert!(c.list().unwrap().is_empty());
    assert!(!c.verify(&k, VerifyMode::Quick).unwrap().ok);
    let m = publish(&c, &k, b"ok");
    assert_eq!(c.lookup(&k).unwrap().unwrap(), m, "commit replaces the damaged leftover");
    assert!(!c.artifact_dir(&k).join("d/x").exists());
    assert!(c.verify(&k, VerifyMode::Full).unwrap().ok);
}

#[test]
fn manifests_for_other_keys_or_versions_are_not_artifacts() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let (a, b) = (key(3), key(4));
    publish(&c, &a, b"x");
    // A copy under the wrong name must not be served for that name.
    std::fs::create_dir_all(c.artifact_dir(&b)).unwrap();
    std::fs::copy(c.artifact_dir(&a).join("_manifest.json"), c.artifact_dir(&b).join("_manifest.json")).unwrap();
    assert!(c.lookup(&b).unwrap().is_none());
    assert!(c.verify(&b, VerifyMode::Quick).unwrap().problems.iter().any(|p| p.contains("is for key")));

    let mpath = c.artifact_dir(&a).join("_manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    v["format_version"] = 7.into();
    std::fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(c.lookup(&a).unwrap().is_none());
    let r = c.verify(&a, VerifyMode::Quick).unwrap();
    assert!(
        r.problems[0].contains("_manifest.json unreadable: manifest format version 7 is not supported"),
        "{:?}",
        r.problems
    );

    v["format_version"] = 1.into();
    v["files"][0]["path"] = "../../escape".into();
    std::fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(c.lookup(&a).unwrap().is_none(), "paths outside the artifact are refused");
}

#[test]
fn verify_detects_truncation_bitflips_missing_extra_files_and_garbage_manifests() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(5);
    publish(&c, &k, &vec![7u8; 4096]);
    let quick = |c: &Cache| c.verify(&k, VerifyMode::Quick).unwrap();
    let full = |c: &Cache| c.verify(&k, VerifyMode::Full).unwrap();
    assert!(quick(&c).ok && full(&c).ok && full(&c).problems.is_empty());
    assert_eq!(full(&c).key, k);

    let data = c.artifact_dir(&k).join("sub/data.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0x10;
    std::fs::write(&data, &bytes).unwrap();
    assert!(quick(&c).ok, "same size: quick cannot see a flipped byte");
    let r = full(&c);
    assert!(
        !r.ok && r.problems.len() == 1 && r.problems[0].starts_with("file sub/data.bin: blake3 mismatch"),
        "{:?}",
        r.problems
    );
    bytes[1000] ^= 0x10;
    std::fs::write(&data, &bytes).unwrap();
    assert!(full(&c).ok, "restored content verifies again");

    std::fs::write(c.artifact_dir(&k).join("stray.txt"), b"?").unwrap();
    assert!(quick(&c).ok);
    assert_eq!(full(&c).problems, ["file stray.txt: not in the manifest"]);
    std::fs::remove_file(c.artifact_dir(&k).join("stray.txt")).unwrap();

    std::fs::write(&data, &bytes[..1200]).unwrap();
    for r in [quick(&c), full(&c)] {
        assert_eq!(r.problems, ["file sub/data.bin: size 1200 != manifest 4096"]);
    }
    std::fs::remove_file(&data).unwrap();
    for r in [quick(&c), full(&c)] {
        assert_eq!(r.problems, ["file sub/data.bin: missing"]);
    }
    std::fs::write(c.artifact_dir(&k).join("_manifest.json"), b"garbage").unwrap();
    for r in [quick(&c), full(&c)] {
        assert!(!r.ok && r.problems[0].starts_with("_manifest.json unreadable: "), "{:?}", r.problems);
    }
    assert!(c.lookup(&k).unwrap().is_none());
    std::fs::remove_file(c.artifact_dir(&k).join("_manifest.json")).unwrap();
    assert_eq!(quick(&c).problems, ["_manifest.json is missing"]);
    c.remove(&k).unwrap();
    assert_eq!(quick(&c).problems, ["artifact is missing"]);
}

#[test]
fn commit_refuses_links_and_own_manifests_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(6);
    let s = c.begin(&k).unwrap();
    std::fs::write(s.dir().join("real"), b"x").unwrap();
    std::os::unix::fs::symlink("real", s.dir().join("link")).unwrap();
    let e = s.commit(draft("s")).unwrap_err().to_string();
    assert!(e.contains("link") && e.contains("symbolic links cannot be published"), "{e}");
    for name in ["_manifest.json", "manifest.json"] {
        let s = c.begin(&k).unwrap();
        std::fs::write(s.dir().join(name), b"{}").unwrap();
        let e = s.commit(draft("s")).unwrap_err().to_string();
        assert!(e.contains(&format!("{name} is written by the cache")), "{e}");
    }
    assert!(c.lookup(&k).unwrap().is_none());
    assert_eq!(count(&t.path().join("tmp")), 0);
    assert_eq!(count(&t.path().join("artifacts")), 0);
}

#[test]
fn artifacts_with_the_old_manifest_name_are_still_artifacts() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let (old, other) = (key(20), key(21));
    let m = publish(&c, &old, b"old");
    publish(&c, &other, b"other");
    // As saepipe wrote artifacts before the manifest was named `_manifest.json`.
    let dir = c.generation_dir(&old).unwrap();
    std::fs::rename(dir.join("_manifest.json"), dir.join("manifest.json")).unwrap();

    assert_eq!(c.lookup(&old).unwrap().unwrap(), m);
    assert_eq!(c.resolve_prefix(&old.to_string()[..10]).unwrap(), old);
    assert_eq!(c.list().unwrap().len(), 2);
    assert!(c.verify(&old, VerifyMode::Full).unwrap().ok, "its manifest is not an unlisted file");
    assert_eq!(c.lease(&old).unwrap().unwrap().manifest(), &m);
    // A second writer of the key finds it published and keeps it.
    let s = c.begin(&old).unwrap();
    std::fs::write(s.dir().join("f"), b"new").unwrap();
    assert_eq!(s.commit(draft("again")).unwrap(), m);
    assert!(c.artifact_dir(&old).join("manifest.json").is_file());
    // gc keeps it when reached and removes it as an artifact (not as damage) otherwise.
    assert!(c.gc(&HashSet::from([old, other]), false).unwrap().removed.is_empty());
    let report = c.gc(&HashSet::from([other]), false).unwrap();
    assert_eq!(report.removed.len(), 1, "{:?}", report.removed);
    assert!(report.removed[0].0.starts_with(&format!("artifact {}", old.short())), "{:?}", report.removed);
}

#[test]
fn a_second_commit_of_a_published_key_keeps_the_first() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(7);
    let s1 = c.begin(&k).unwrap();
    let s2 = c.begin(&k).unwrap();
    std::fs::write(s1.dir().join("f"), b"one").unwrap();
    std::fs::write(s2.dir().join("f"), b"two").unwrap();
    let m1 = s1.commit(draft("first")).unwrap();
    let m2 = s2.commit(draft("second")).unwrap();
    assert_eq!(m2, m1, "the loser gets the published manifest");
    assert_eq!(c.lookup(&k).unwrap().unwrap().stage, "first");
    assert_eq!(std::fs::read(c.artifact_dir(&k).join("f")).unwrap(), b"one");
    assert_eq!(count(&t.path().join("tmp")), 0);
}

#[test]
fn concurrent_commits_of_one_key_from_threads_agree() {
    let t = tempfile::tempdir().unwrap();
    let k = key(8);
    let manifests: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> =
            (0..8).map(|_| s.spawn(|| publish(&Cache::open(t.path()).unwrap(), &k, &vec![9u8; 100_000]))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let c = Cache::open(t.path()).unwrap();
    let published = c.lookup(&k).unwrap().unwrap();
    assert!(manifests.iter().all(|m| m.files == published.files && m.key == k));
    assert!(manifests.contains(&published), "one caller's manifest is the published one");
    assert!(c.verify(&k, VerifyMode::Full).unwrap().ok);
    assert_eq!(count(&t.path().join("tmp")), 0);
    assert_eq!(count(&t.path().join("artifacts")), 1);
}

#[test]
fn remove_and_partial_dirs() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let k = key(9);
    publish(&c, &k, b"x");
    c.remove(&k).unwrap();
    assert!(c.lookup(&k).unwrap().is_none());
    assert!(!c.artifact_dir(&k).exists());
    assert_eq!(count(&t.path().join("tmp")), 0);
    c.remove(&k).unwrap(); // removing a missing artifact is fine

    let p = c.partial_dir(&k).unwrap();
    assert_eq!(p, c.root().join("partial").join(k.to_string()));
    std::fs::write(p.join("shard-0"), b"progress").unwrap();
    assert_eq!(c.partial_dir(&k).unwrap(), p);
    assert!(p.join("shard-0").exists(), "partial_dir keeps existing progress");
    c.clear_partial(&k).unwrap();
    assert!(!p.exists());
    c.clear_partial(&k).unwrap();
    assert_eq!(count(&t.path().join("tmp")), 0);
}

#[test]
fn gc_dry_run_reports_and_real_run_removes() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    let (keep_me, drop_me, locked, stale_owner) = (key(10), key(11), key(12), key(13));
    publish(&c, &keep_me, b"keep");
    publish(&c, &drop_me, &vec![1u8; 1000]);
    publish(&c, &locked, b"locked");
    let _live_lock = c.try_lock(&locked).unwrap().unwrap();
    // A staging dir of a dead process, one of this (live) process, and a manifest-less artifact dir.
    let dead_pid = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let dead_tmp = t.path().join(format!("tmp/{stale_owner}.{dead_pid}.x"));
    std::fs::create_dir_all(&dead_tmp).unwrap();
    std::fs::write(dead_tmp.join("half"), vec![0u8; 300]).unwrap();
    let live = c.begin(&stale_owner).unwrap();
    std::fs::create_dir_all(c.artifact_dir(&stale_owner)).unwrap();
    // Partial progress: unreached (removed), reached (kept), unreached but locked (kept).
    std::fs::write(c.partial_dir(&drop_me).unwrap().join("shard"), b"xx").unwrap();
    std::fs::write(c.partial_dir(&keep_me).unwrap().join("shard"), b"xx").unwrap();
    std::fs::write(c.partial_dir(&locked).unwrap().join("shard"), b"xx").unwrap();
    // A lock left by the dead process.
    let stale_lock = t.path().join(format!("locks/{drop_me}.lock"));
    std::fs::write(
        &stale_lock,
        format!(
            r#"{{"pid":{dead_pid},"host":"{}","started_unix":1.0,"heartbeat_unix":1.0}}"#,
            saepipe_cache::hostname()
        ),
    )
    .unwrap();

    let keep: HashSet<Key> = [keep_me].into();
    let dry = c.gc(&keep, true).unwrap();
    let what: Vec<&str> = dry.removed.iter().map(|(w, _)| w.as_str()).collect();
    assert!(dry.dry_run);
    assert_eq!(what.len(), 5, "{what:?}");
    assert!(
        what.iter().any(|w| w.starts_with(&format!("artifact {}", drop_me.short())) && w.contains("test s")),
        "{what:?}"
    );
    assert!(what.iter().any(|w| w.starts_with("damaged artifact directory")), "{what:?}");
    assert!(what.iter().any(|w| w.starts_with("stale temporary")), "{what:?}");
    assert!(what.iter().any(|w| w.starts_with(&format!("partial progress {}", drop_me.short()))), "{what:?}");
    assert!(what.iter().any(|w| w.starts_with("stale lock")), "{what:?}");
    assert_eq!(dry.kept, 2);
    let artifact_bytes = dry.removed.iter().find(|(w, _)| w.starts_with("artifact")).unwrap().1;
    assert!(artifact_bytes > 1000, "sizes are reported, manifest included: {artifact_bytes}");
    assert_eq!(dry.removed.iter().find(|(w, _)| w.starts_with("stale temporary")).unwrap().1, 300);
    assert!(
        c.lookup(&drop_me).unwrap().is_some() && dead_tmp.exists() && stale_lock.exists(),
        "a dry run deletes nothing"
    );

    let real = c.gc(&keep, false).unwrap();
    assert!(!real.dry_run);
    assert_eq!(real.removed, dry.removed);
    assert_eq!(real.bytes(), dry.bytes());
    assert_eq!(real.kept, 2);
    assert!(c.lookup(&keep_me).unwrap().is_some() && c.lookup(&locked).unwrap().is_some());
    assert!(c.lookup(&drop_me).unwrap().is_none() && !c.artifact_dir(&drop_me).exists());
    assert!(!c.artifact_dir(&stale_owner).exists() && !dead_tmp.exists() && !stale_lock.exists());
    assert!(live.dir().exists(), "a live writer's staging survives");
    assert!(c.root().join("partial").join(keep_me.to_string()).exists());
    assert!(c.root().join("partial").join(locked.to_string()).exists());
    assert!(!c.root().join("partial").join(drop_me.to_string()).exists());
    assert!(c.try_lock(&locked).unwrap().is_none(), "the live lock survives");
    assert!(c.gc(&keep, false).unwrap().removed.is_empty(), "nothing left to collect");
}
