//! Push and pull through real remotes: a `file://` directory and moto's S3
//! server. Every case checks what a user relies on: the pulled artifact is the
//! pushed one byte for byte, damage is caught and never published, interrupted
//! transfers resume, and concurrent pushers cannot corrupt a key.

mod support;

use saepipe_cache::Key;
use saepipe_remote::{Remote, RemoteError, no_progress};
use std::collections::HashSet;
use std::time::Duration;
use support::*;

/// Files of the test artifact: one large enough for multipart upload and
/// several ranged GETs, a small one in a subfolder, an empty one.
fn sample_files(seed: u64) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("shard-00000.parquet", bytes(seed, (20 << 20) + 37)),
        ("meta/store.json", bytes(seed + 1, 1000)),
        ("empty.txt", Vec::new()),
    ]
}

/// Push from one cache, pull into another: same manifest, same bytes; pushing
/// again and pulling again are no-ops.
fn round_trip(remote: &Remote) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, cb) = (cache_in(a.path()), cache_in(b.path()));
    let k = key("round trip");
    publish(&ca, &k, &sample_files(7));

    let pushed = remote.push(&ca, &k, &no_progress).unwrap();
    assert!(!pushed.already_on_remote);
    assert_eq!(pushed.uploaded_files, 3);
    assert!(remote.has(&k).unwrap());
    let again = remote.push(&ca, &k, &no_progress).unwrap();
    assert!(again.already_on_remote);
    assert_eq!(again.uploaded_bytes, 0);

    let pulled = remote.pull(&cb, &k, &no_progress).unwrap();
    assert!(!pulled.already_local);
    assert_eq!(pulled.downloaded_bytes, pulled.manifest.total_bytes);
    assert_eq!(pulled.manifest, ca.lookup(&k).unwrap().unwrap(), "the manifest travels unchanged");
    assert_eq!(read_artifact(&cb, &k), read_artifact(&ca, &k));
    assert!(cb.verify(&k, saepipe_cache::VerifyMode::Full).unwrap().ok);
    assert!(remote.pull(&cb, &k, &no_progress).unwrap().already_local);

    let listed = remote.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, k);
    assert!(remote.verify(&k, &no_progress).unwrap().problems.is_empty());

    // A second artifact sharing a file uploads only the new one.
    let k2 = key("round trip 2");
    let mut files = sample_files(7);
    files[1].1 = bytes(99, 500);
    publish(&ca, &k2, &files);
    let p2 = remote.push(&ca, &k2, &no_progress).unwrap();
    assert_eq!((p2.uploaded_files, p2.skipped_files), (1, 2));
}

#[test]
fn file_remote_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("remote").display());
    round_trip(&Remote::open(&url).unwrap());
    // A plain path works as well.
    let plain = Remote::open(dir.path().join("remote").to_str().unwrap()).unwrap();
    assert_eq!(plain.list().unwrap().len(), 2);
}

#[test]
fn s3_round_trip_on_moto() {
    let Some(moto) = Moto::start(&[]) else { return };
    moto.create_bucket("team-cache");
    let remote = Remote::open_with_options("s3://team-cache/saepipe", &moto.options()).unwrap();
    round_trip(&remote);
}

/// An artifact published before the manifest was named `_manifest.json`
/// pushes as it is (the remote keeps the manifest's bytes) and is pulled under
/// the current name.
#[test]
fn artifacts_with_the_old_manifest_name_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::open(dir.path().join("remote").to_str().unwrap()).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, cb) = (cache_in(a.path()), cache_in(b.path()));
    let k = key("old manifest name");
    publish(&ca, &k, &sample_files(5));
    let generation = ca.generation_dir(&k).unwrap();
    std::fs::rename(generation.join("_manifest.json"), generation.join("manifest.json")).unwrap();
    let old_bytes = std::fs::read(generation.join("manifest.json")).unwrap();

    assert_eq!(remote.push(&ca, &k, &no_progress).unwrap().uploaded_files, 3);
    let pulled = remote.pull(&cb, &k, &no_progress).unwrap();
    assert_eq!(pulled.manifest, ca.lookup(&k).unwrap().unwrap());
    let there = cb.artifact_dir(&k);
    assert_eq!(std::fs::read(there.join("_manifest.json")).unwrap(), old_bytes, "same bytes, new name");
    assert!(!there.join("manifest.json").exists());
    assert_eq!(read_artifact(&cb, &k), read_artifact(&ca, &k));
    assert!(cb.verify(&k, saepipe_cache::VerifyMode::Full).unwrap().ok);
}

/// A flipped byte in a blob on the remote: pull refuses (after one fresh
/// download), publishes nothing, and verify names the file.
#[test]
fn damaged_blob_is_never_published() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("remote");
    let remote = Remote::open(root.to_str().unwrap()).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, cb) = (cache_in(a.path()), cache_in(b.path()));
    let k = key("damaged");
    publish(&ca, &k, &sample_files(3));
    remote.push(&ca, &k, &no_progress).unwrap();

    let m = ca.lookup(&k).unwrap().unwrap();
    let shard = m.file("meta/store.json").unwrap();
    let blob = root.join("blobs").join(&shard.blake3[..2]).join(&shard.blake3);
    let mut content = std::fs::read(&blob).unwrap();
    content[10] ^= 0x01;
    std::fs::write(&blob, &content).unwrap();

    match remote.pull(&cb, &k, &no_progress) {
        Err(RemoteError::Damaged { file, .. }) => assert!(file.contains("meta/store.json"), "{file}"),
        other => panic!("expected a damage error, got {other:?}"),
    }
    assert!(cb.lookup(&k).unwrap().is_none(), "nothing published");
    let report = remote.verify(&k, &no_progress).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("meta/store.json"));
}

/// A pull interrupted after some ranges keeps them: the next pull downloads
/// only the rest. A recorded range whose bytes are wrong (a crash between
/// writing and syncing) is caught by the hash check and fetched again.
#[test]
fn interrupted_pull_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::open(dir.path().join("remote").to_str().unwrap()).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, cb) = (cache_in(a.path()), cache_in(b.path()));
    let k = key("resume");
    let files = sample_files(5);
    publish(&ca, &k, &files);
    remote.push(&ca, &k, &no_progress).unwrap();

    // What a pull killed after its first two 8 MiB ranges of the shard leaves.
    let work = cb.download_dir(&k).unwrap();
    let mut partial = files[0].1.clone();
    partial[(16 << 20)..].fill(0);
    std::fs::write(work.join("shard-00000.parquet"), &partial).unwrap();
    std::fs::write(work.join("shard-00000.parquet.saepipe-ranges"), "0\n1\n").unwrap();

    let pulled = remote.pull(&cb, &k, &no_progress).unwrap();
    assert_eq!(pulled.resumed_bytes, 16 << 20);
    assert_eq!(pulled.downloaded_bytes, pulled.manifest.total_bytes - (16 << 20));
    assert_eq!(read_artifact(&cb, &k), read_artifact(&ca, &k));
    assert!(!work.exists(), "the download folder is cleared after publishing");

    // Recorded but wrong: one fresh download, then the right bytes.
    let (c, ck) = (tempfile::tempdir().unwrap(), key("resume"));
    let cc = cache_in(c.path());
    let work = cc.download_dir(&ck).unwrap();
    std::fs::write(work.join("shard-00000.parquet"), vec![0u8; files[0].1.len()]).unwrap();
    std::fs::write(work.join("shard-00000.parquet.saepipe-ranges"), "0\n").unwrap();
    remote.pull(&cc, &ck, &no_progress).unwrap();
    assert_eq!(read_artifact(&cc, &ck), read_artifact(&ca, &k));
}

/// A push that died before its manifest: the artifact is not visible, and the
/// next push uploads only the missing blobs.
#[test]
fn interrupted_push_is_invisible_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("remote");
    let remote = Remote::open(root.to_str().unwrap()).unwrap();
    let a = tempfile::tempdir().unwrap();
    let ca = cache_in(a.path());
    let k = key("push resume");
    publish(&ca, &k, &sample_files(11));
    remote.push(&ca, &k, &no_progress).unwrap();
    // Take away the manifest and one blob: the state a push killed midway leaves.
    let m = ca.lookup(&k).unwrap().unwrap();
    std::fs::remove_file(root.join("artifacts").join(format!("{k}.json"))).unwrap();
    let gone = m.file("meta/store.json").unwrap();
    std::fs::remove_file(root.join("blobs").join(&gone.blake3[..2]).join(&gone.blake3)).unwrap();

    assert!(!remote.has(&k).unwrap());
    assert!(remote.list().unwrap().is_empty());
    let b = tempfile::tempdir().unwrap();
    assert!(matches!(remote.pull(&cache_in(b.path()), &k, &no_progress), Err(RemoteError::Missing { .. })));

    let again = remote.push(&ca, &k, &no_progress).unwrap();
    assert_eq!((again.uploaded_files, again.skipped_files), (1, 2));
    assert_eq!(again.uploaded_bytes, gone.size);
}

/// A damaged local file is never uploaded.
#[test]
fn damaged_local_file_is_not_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::open(dir.path().join("remote").to_str().unwrap()).unwrap();
    let a = tempfile::tempdir().unwrap();
    let ca = cache_in(a.path());
    let k = key("local damage");
    publish(&ca, &k, &sample_files(13));
    let path = ca.artifact_dir(&k).join("shard-00000.parquet");
    let mut content = std::fs::read(&path).unwrap();
    content[(17 << 20) + 5] ^= 0x80;
    std::fs::write(&path, &content).unwrap();
    match remote.push(&ca, &k, &no_progress) {
        Err(RemoteError::Damaged { file, .. }) => assert_eq!(file, "shard-00000.parquet"),
        other => panic!("expected a damage error, got {other:?}"),
    }
    assert!(!remote.has(&k).unwrap());
}

/// Two hosts pushing the same key at once (different bytes, as two runs of a
/// nondeterministic stage would make): exactly one manifest wins, and it is
/// complete and verifies.
fn concurrent_pushers(remote_of: &dyn Fn() -> Remote) {
    for round in 0..3 {
        let k = key(&format!("contended {round}"));
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let caches: Vec<_> = dirs.iter().map(|d| cache_in(d.path())).collect();
        for (i, c) in caches.iter().enumerate() {
            publish(c, &k, &sample_files(100 + i as u64));
        }
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = caches
                .iter()
                .map(|c| {
                    let remote = remote_of();
                    s.spawn(move || remote.push(c, &k, &no_progress).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = outcomes.iter().filter(|o| !o.already_on_remote).count();
        assert_eq!(winners, 1, "exactly one manifest is published: {outcomes:?}");
        let remote = remote_of();
        assert!(remote.verify(&k, &no_progress).unwrap().problems.is_empty());
        let winner = caches.iter().zip(&outcomes).find(|(_, o)| !o.already_on_remote).unwrap().0;
        let c = tempfile::tempdir().unwrap();
        let cc = cache_in(c.path());
        remote.pull(&cc, &k, &no_progress).unwrap();
        assert_eq!(read_artifact(&cc, &k), read_artifact(winner, &k));
    }
}

#[test]
fn concurrent_pushers_file_remote() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("remote").to_str().unwrap().to_string();
    concurrent_pushers(&|| Remote::open(&url).unwrap());
}

#[test]
fn concurrent_pushers_s3() {
    let Some(moto) = Moto::start(&[]) else { return };
    moto.create_bucket("contended");
    concurrent_pushers(&|| Remote::open_with_options("s3://contended/c", &moto.options()).unwrap());
}

/// A remote that refuses access: a clear error naming the remote, never the
/// secret.
#[test]
fn refused_access_names_the_remote_not_the_secret() {
    // With INITIAL_NO_AUTH_ACTION_COUNT=0 moto checks every request's credentials.
    let Some(moto) = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else { return };
    let remote = Remote::open_with_options("s3://locked/cache", &moto.options()).unwrap();
    let a = tempfile::tempdir().unwrap();
    let ca = cache_in(a.path());
    let k = key("refused");
    publish(&ca, &k, &[("x.bin", bytes(1, 100))]);
    let err = remote.push(&ca, &k, &no_progress).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("s3://locked/cache"), "{text}");
    assert!(!text.contains("testing-secret-key"), "{text}");
    let err = remote.pull(&ca, &key("other"), &no_progress).unwrap_err().to_string();
    assert!(err.contains("s3://locked/cache") && !err.contains("testing-secret-key"), "{err}");
}

/// gc removes unwanted artifacts and blobs nothing lists, but keeps young
/// unlisted blobs (a push in progress) and everything a kept artifact needs.
#[test]
fn gc_keeps_what_is_wanted() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::open(dir.path().join("remote").to_str().unwrap()).unwrap();
    let a = tempfile::tempdir().unwrap();
    let ca = cache_in(a.path());
    let (keep, drop_) = (key("keep"), key("drop"));
    publish(&ca, &keep, &[("a.bin", bytes(1, 1000)), ("shared.bin", bytes(2, 1000))]);
    publish(&ca, &drop_, &[("b.bin", bytes(3, 1000)), ("shared.bin", bytes(2, 1000))]);
    remote.push(&ca, &keep, &no_progress).unwrap();
    remote.push(&ca, &drop_, &no_progress).unwrap();
    let wanted: HashSet<Key> = [keep].into();

    let young = remote.gc(Some(&wanted), Duration::from_secs(3600), false).unwrap();
    assert_eq!(young.artifacts, vec![drop_]);
    assert_eq!((young.blobs, young.young_blobs_kept), (0, 1), "b.bin is young: kept");
    let dry = remote.gc(Some(&wanted), Duration::ZERO, true).unwrap();
    assert_eq!(dry.blobs, 1);
    assert_eq!(remote.gc(Some(&wanted), Duration::ZERO, false).unwrap().bytes, 1000);
    assert_eq!(remote.list().unwrap().len(), 1);
    assert!(remote.verify(&keep, &no_progress).unwrap().problems.is_empty());
}

/// The premise of the concurrent-pusher guarantee on S3: a create-only put of
/// an existing object is refused by the server (If-None-Match: *).
#[test]
fn s3_create_only_put_is_refused_when_the_object_exists() {
    use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
    let Some(moto) = Moto::start(&[]) else { return };
    moto.create_bucket("conditional");
    let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name("conditional").with_allow_http(true);
    for (k, v) in moto.options() {
        b = b.with_config(k.parse().unwrap(), v);
    }
    let store = b.build().unwrap();
    let path = object_store::path::Path::from("artifacts/x.json");
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.put_opts(&path, PutPayload::from_static(b"first"), create())).unwrap();
    let second = rt.block_on(store.put_opts(&path, PutPayload::from_static(b"second"), create()));
    assert!(matches!(second, Err(object_store::Error::AlreadyExists { .. })), "{second:?}");
}
