//! Fingerprints of external files and directories, and their memo.

use saepipe_cache::Cache;
use std::time::{Duration, SystemTime};

fn set_mtime(path: &std::path::Path, t: SystemTime) {
    std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

#[test]
fn file_fingerprints_are_memoized_until_the_file_changes() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(&t.path().join("cache")).unwrap();
    let f = t.path().join("weights.bin");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&f, &content).unwrap();
    let h1 = c.fingerprint_file(&f).unwrap();
    assert_eq!(h1, blake3::hash(&content).to_hex().to_string());
    assert_eq!((c.stats.files_hashed(), c.stats.bytes_hashed()), (1, 300_000));
    assert_eq!(c.fingerprint_file(&f).unwrap(), h1);
    assert_eq!((c.stats.files_hashed(), c.stats.memo_hits()), (1, 1), "second call served from the memo");
    // The memo is on disk: a fresh handle on the cache does not re-read the file either.
    let c2 = Cache::open(&t.path().join("cache")).unwrap();
    assert_eq!(c2.fingerprint_file(&f).unwrap(), h1);
    assert_eq!(c2.stats.files_hashed(), 0);
    // Through another spelling of the path (relative parts, a symlink): same memo entry.
    std::os::unix::fs::symlink(&f, t.path().join("link.bin")).unwrap();
    assert_eq!(c.fingerprint_file(&t.path().join(".").join("link.bin")).unwrap(), h1);
    assert_eq!(c.stats.files_hashed(), 1);

    // A new mtime alone forces a re-hash (same result).
    set_mtime(&f, SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(c.fingerprint_file(&f).unwrap(), h1);
    assert_eq!(c.stats.files_hashed(), 2);
    // New size.
    std::fs::write(&f, b"short").unwrap();
    assert_eq!(c.fingerprint_file(&f).unwrap(), blake3::hash(b"short").to_hex().to_string());
    assert_eq!(c.stats.files_hashed(), 3);
    // Same size and the old mtime restored: the ctime still gives the rewrite away.
    let old = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::write(&f, b"SHORT").unwrap();
    set_mtime(&f, old);
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 5);
    assert_eq!(c.fingerprint_file(&f).unwrap(), blake3::hash(b"SHORT").to_hex().to_string());
    assert_eq!(c.stats.files_hashed(), 4);
}

#[test]
fn a_corrupt_memo_is_ignored_and_rewritten() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(&t.path().join("cache")).unwrap();
    let f = t.path().join("data.txt");
    std::fs::write(&f, b"corpus").unwrap();
    let h = c.fingerprint_file(&f).unwrap();
    let memos: Vec<_> = std::fs::read_dir(c.root().join("fingerprints")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(memos.len(), 1, "exactly the memo, no temporaries left");
    let name = memos[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        name,
        format!("{}.json", blake3::hash(f.canonicalize().unwrap().as_os_str().as_encoded_bytes()).to_hex())
    );
    std::fs::write(&memos[0], b"{\"path\": tru").unwrap();
    assert_eq!(c.fingerprint_file(&f).unwrap(), h);
    assert_eq!(c.stats.files_hashed(), 2);
    let memo: serde_json::Value = serde_json::from_slice(&std::fs::read(&memos[0]).unwrap()).unwrap();
    assert_eq!(memo["blake3"], h.as_str());
    assert_eq!(c.fingerprint_file(&f).unwrap(), h);
    assert_eq!(c.stats.files_hashed(), 2, "the rewritten memo is used");
}

#[test]
fn directory_fingerprints_depend_on_names_and_contents_only() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(&t.path().join("cache")).unwrap();
    for d in ["x", "y"] {
        std::fs::create_dir_all(t.path().join(d).join("sub/deeper")).unwrap();
        std::fs::write(t.path().join(d).join("sub/a.txt"), b"a").unwrap();
        std::fs::write(t.path().join(d).join("sub/deeper/b.txt"), b"b").unwrap();
        std::fs::write(t.path().join(d).join("top.bin"), vec![5u8; 10_000]).unwrap();
    }
    let fp = |d: &str| c.fingerprint_dir(&t.path().join(d)).unwrap();
    let x = fp("x");
    assert_eq!(x, fp("y"), "location does not matter");
    assert_eq!(x.len(), 64);
    let hashed = c.stats.files_hashed();
    assert_eq!(fp("x"), x);
    assert_eq!(c.stats.files_hashed(), hashed, "file fingerprints come from the memo");

    std::fs::write(t.path().join("y/sub/a.txt"), b"A").unwrap();
    assert_ne!(fp("y"), x, "content matters");
    std::fs::write(t.path().join("y/sub/a.txt"), b"a").unwrap();
    assert_eq!(fp("y"), x);
    std::fs::rename(t.path().join("y/sub/a.txt"), t.path().join("y/sub/c.txt")).unwrap();
    assert_ne!(fp("y"), x, "names matter");
    std::fs::rename(t.path().join("y/sub/c.txt"), t.path().join("y/sub/a.txt")).unwrap();
    std::fs::create_dir_all(t.path().join("y/empty")).unwrap();
    assert_eq!(fp("y"), x, "empty directories do not count");

    // Linked files and directories are followed (as in model snapshot folders); cycles are skipped.
    std::fs::create_dir_all(t.path().join("z")).unwrap();
    std::os::unix::fs::symlink(t.path().join("x/sub"), t.path().join("z/sub")).unwrap();
    std::os::unix::fs::symlink(t.path().join("x/top.bin"), t.path().join("z/top.bin")).unwrap();
    assert_eq!(fp("z"), x);
    std::os::unix::fs::symlink(t.path().join("x"), t.path().join("x/sub/loop")).unwrap();
    assert_eq!(fp("x"), x, "a link back to an enclosing directory is skipped");

    let e = c.fingerprint_file(&t.path().join("x")).unwrap_err().to_string();
    assert!(e.contains("is a directory"), "{e}");
    let e = c.fingerprint_dir(&t.path().join("x/top.bin")).unwrap_err().to_string();
    assert!(e.contains("is not a directory"), "{e}");
    let e = c.fingerprint_file(&t.path().join("missing.bin")).unwrap_err().to_string();
    assert!(e.contains("missing.bin"), "{e}");
}
