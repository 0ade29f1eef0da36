//! Content fingerprints of files outside the cache (corpora, model weights).
//!
//! A file's fingerprint is the blake3 of its content, memoized in
//! `fingerprints/<blake3(canonical path)>.json` together with the file's size,
//! mtime, ctime and inode, so a large file is hashed once until it changes.
//! Like any stat-based memo, a rewrite that keeps size and all timestamps within
//! the filesystem's timestamp granularity goes unnoticed.

use crate::error::{CacheError, IoContext, Result};
use crate::files::write_atomically;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a cache's fingerprinting since it was opened (`Cache::stats`).
#[derive(Default, Debug)]
pub struct FingerprintStats {
    /// Files actually read and hashed (memo misses).
    pub files_hashed: AtomicU64,
    /// Bytes read by those hashes.
    pub bytes_hashed: AtomicU64,
    /// Fingerprints served from the memo without reading the file.
    pub memo_hits: AtomicU64,
}

impl FingerprintStats {
    /// Files read and hashed so far (memo misses).
    pub fn files_hashed(&self) -> u64 {
        self.files_hashed.load(Ordering::Relaxed)
    }
    /// Bytes read by those hashes.
    pub fn bytes_hashed(&self) -> u64 {
        self.bytes_hashed.load(Ordering::Relaxed)
    }
    /// Fingerprints served from the memo without reading the file.
    pub fn memo_hits(&self) -> u64 {
        self.memo_hits.load(Ordering::Relaxed)
    }
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            inode: meta.ino(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MemoEntry {
    path: String,
    stamp: Stamp,
    blake3: String,
}

/// blake3 hex of a file's content, memory-mapped and hashed on all cores.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path).ctx("hashing", path)?;
    Ok(h.finalize().to_hex().to_string())
}

/// The fingerprint memo of a cache: its `fingerprints/` directory and counters.
pub(crate) struct Memo<'a> {
    pub(crate) dir: PathBuf,
    pub(crate) stats: &'a FingerprintStats,
}

impl Memo<'_> {
    fn memo_path(&self, canonical: &Path) -> PathBuf {
        let name = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
        self.dir.join(format!("{name}.json"))
    }

    /// blake3 hex of a file's content, from the memo when its stamp is unchanged.
    pub(crate) fn file(&self, path: &Path) -> Result<String> {
        let canon = std::fs::canonicalize(path).ctx("resolving", path)?;
        let mut meta = std::fs::metadata(&canon).ctx("reading metadata of", &canon)?;
        if !meta.is_file() {
            let what =
                if meta.is_dir() { "is a directory (fingerprint it as a directory)" } else { "is not a regular file" };
            return Err(CacheError::Fingerprint { path: canon, message: what.into() });
        }
        let memo_path = self.memo_path(&canon);
        let canon_str = canon.to_string_lossy().into_owned();
        let memo = std::fs::read(&memo_path).ok().and_then(|b| serde_json::from_slice::<MemoEntry>(&b).ok());
        if let Some(entry) = memo.filter(|e| e.path == canon_str && e.stamp == Stamp::of(&meta)) {
            self.stats.memo_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(entry.blake3);
        }
        // Re-stat after hashing: a file that changed meanwhile may have been read
        // half old, half new, and must not be memoized under either stamp.
        for _ in 0..3 {
            let blake3 = hash_file(&canon)?;
            self.stats.files_hashed.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_hashed.fetch_add(meta.len(), Ordering::Relaxed);
            let after = std::fs::metadata(&canon).ctx("reading metadata of", &canon)?;
            if Stamp::of(&after) == Stamp::of(&meta) {
                let entry = MemoEntry { path: canon_str, stamp: Stamp::of(&meta), blake3: blake3.clone() };
                // A failure to memoize only costs a re-hash next time.
                let _ = write_atomically(&memo_path, &serde_json::to_vec(&entry).unwrap());
                return Ok(blake3);
            }
            meta = after;
        }
        Err(CacheError::Fingerprint { path: canon, message: "the file kept changing while it was being hashed".into() })
    }

    /// Hash of a directory tree's relative paths and file fingerprints.
    pub(crate) fn dir(&self, dir: &Path) -> Result<String> {
        let canon = std::fs::canonicalize(dir).ctx("resolving", dir)?;
        if !std::fs::metadata(&canon).ctx("reading metadata of", &canon)?.is_dir() {
            return Err(CacheError::Fingerprint { path: canon, message: "is not a directory".into() });
        }
        let mut files = Vec::new();
        collect_files(&canon, "", &mut vec![canon.clone()], &mut files)?;
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let prints = files.par_iter().map(|(_, path)| self.file(path)).collect::<Result<Vec<_>>>()?;
        let mut h = blake3::Hasher::new();
        h.update(b"saepipe-dir-v1\n");
        for ((rel, _), fp) in files.iter().zip(prints) {
            h.update(rel.as_bytes());
            h.update(b"\0");
            h.update(fp.as_bytes());
            h.update(b"\n");
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

/// Files under `dir` as (relative path, path), following symlinks; `ancestors`
/// holds the canonical directories on the current path, to skip link cycles.
fn collect_files(
    dir: &Path,
    prefix: &str,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx("listing", dir)? {
        let entry = entry.ctx("listing", dir)?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(CacheError::Fingerprint { path, message: "file name is not valid UTF-8".into() });
        };
        let rel = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let meta = std::fs::metadata(&path).ctx("reading metadata of (a broken link?)", &path)?;
        if meta.is_dir() {
            let canon = std::fs::canonicalize(&path).ctx("resolving", &path)?;
            if ancestors.contains(&canon) {
                continue;
            }
            ancestors.push(canon);
            collect_files(&path, &rel, ancestors, out)?;
            ancestors.pop();
        } else if meta.is_file() {
            out.push((rel, path));
        } else {
            return Err(CacheError::Fingerprint { path, message: "is neither a regular file nor a directory".into() });
        }
    }
    Ok(())
}
