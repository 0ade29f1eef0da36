//! Content fingerprints of files outside the cache (corpora, model weights),
//! memoized by (path, size, mtime, inode) so a large file is hashed once.

use crate::error::{IoContext, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Serialize, Deserialize, PartialEq)]
struct MemoEntry {
    path: String,
    size: u64,
    mtime_ns: i128,
    inode: u64,
    blake3: String,
}

/// blake3 of a file's content: memory-mapped and multithreaded for large files.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path).ctx("hashing", path)?;
    Ok(h.finalize().to_hex().to_string())
}

pub(crate) fn memo_key(path: &Path) -> String {
    blake3::hash(path.as_os_str().as_encoded_bytes()).to_hex()[..32].to_string()
}

impl crate::Cache {
    /// blake3 hex of the file's content (memoized).
    pub fn fingerprint_file(&self, path: &Path) -> Result<String> {
        let canon = std::fs::canonicalize(path).ctx("resolving", path)?;
        let meta = std::fs::metadata(&canon).ctx("reading metadata of", &canon)?;
        let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        let memo_path = self.root().join("fingerprints").join(format!("{}.json", memo_key(&canon)));
        let wanted = |e: &MemoEntry| e.path == canon.to_string_lossy() && e.size == meta.len() && e.mtime_ns == mtime_ns && e.inode == meta.ino();
        if let Some(entry) = std::fs::read(&memo_path).ok().and_then(|b| serde_json::from_slice::<MemoEntry>(&b).ok()) {
            if wanted(&entry) {
                return Ok(entry.blake3);
            }
        }
        let blake3 = hash_file(&canon)?;
        self.stats.files_hashed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = MemoEntry { path: canon.to_string_lossy().into_owned(), size: meta.len(), mtime_ns, inode: meta.ino(), blake3: blake3.clone() };
        // Atomic replace; a failure to memoize only costs a re-hash next time.
        let tmp = memo_path.with_extension(format!("tmp.{}", crate::lock::unique_token()));
        if std::fs::write(&tmp, serde_json::to_vec(&entry).unwrap()).is_ok() && std::fs::rename(&tmp, &memo_path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(blake3)
    }

    /// Stable hash over the sorted relative paths and contents of a directory tree.
    pub fn fingerprint_dir(&self, dir: &Path) -> Result<String> {
        let mut files = Vec::new();
        crate::store::walk_files(dir, dir, &mut files)?;
        files.sort();
        let mut h = blake3::Hasher::new();
        h.update(b"saepipe-dir-v1\n");
        for rel in files {
            let fp = self.fingerprint_file(&dir.join(&rel))?;
            h.update(rel.as_bytes());
            h.update(b"\0");
            h.update(fp.as_bytes());
            h.update(b"\n");
        }
        Ok(h.finalize().to_hex().to_string())
    }
}
