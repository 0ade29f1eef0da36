//! Reading the files of an artifact on the remote in place, without pulling
//! the artifact: what streaming an activation store shard by shard rests on.
//!
//! A file is fetched whole with ranged GETs in parallel, checked against the
//! manifest's blake3 before anyone sees a byte of it, and kept in a bounded
//! local chunk cache (files named by their blake3, the least recently used
//! dropped first) so a second pass reads it from disk. [`prefetch`] starts
//! fetching the next file in the background while the current one is used.
//!
//! [`prefetch`]: StreamedArtifact::prefetch

use crate::error::{RemoteError, Result};
use crate::{Remote, pull::RANGE};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use saepipe_cache::{FileEntry, Key, Manifest};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Ranged GETs of one streamed file in flight at once.
const RANGES_IN_FLIGHT: usize = 8;

/// Local copies of streamed files, by blake3, within a byte budget.
#[derive(Clone, Debug)]
pub struct ChunkCache {
    dir: PathBuf,
    budget: u64,
}

impl ChunkCache {
    /// A chunk cache in `dir` (shared safely by processes: files appear by
    /// atomic rename and are checked by hash when read) holding at most
    /// `budget` bytes; a file larger than the budget is not kept.
    pub fn new(dir: &Path, budget: u64) -> ChunkCache {
        ChunkCache { dir: dir.into(), budget }
    }

    fn path(&self, blake3: &str) -> PathBuf {
        self.dir.join(blake3)
    }

    /// Reads the cached copy of `entry` into `buf` (reused) if one of the right
    /// size is there (its hash is the caller's to check); says whether it did.
    /// Reading marks it recently used.
    fn get(&self, entry: &FileEntry, buf: &mut Vec<u8>) -> bool {
        use std::io::Read;
        let Ok(mut file) = std::fs::File::open(self.path(&entry.blake3)) else { return false };
        if !file.metadata().is_ok_and(|m| m.len() == entry.size) {
            return false;
        }
        buf.clear();
        buf.reserve_exact(entry.size as usize);
        if file.read_to_end(buf).is_err() {
            return false;
        }
        let _ = file.set_modified(std::time::SystemTime::now());
        true
    }

    fn has(&self, entry: &FileEntry) -> bool {
        std::fs::metadata(self.path(&entry.blake3)).is_ok_and(|m| m.len() == entry.size)
    }

    fn forget(&self, blake3: &str) {
        let _ = std::fs::remove_file(self.path(blake3));
    }

    /// Keeps a verified copy, then drops the least recently used files until
    /// the cache is within its budget. Failures only cost a later refetch.
    fn put(&self, blake3: &str, bytes: &[u8]) {
        if bytes.len() as u64 > self.budget || std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let tmp = self.dir.join(format!(".{blake3}.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes));
        if written.is_err() || std::fs::rename(&tmp, self.path(blake3)).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.evict(blake3);
    }

    fn evict(&self, keep: &str) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(crate::layout::is_blake3_hex))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.budget {
                break;
            }
            if path.file_name().is_some_and(|n| n == keep) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

type Fetch = tokio::task::JoinHandle<Result<Vec<u8>, object_store::Error>>;

/// An artifact on the remote whose files are read in place (see the module docs).
pub struct StreamedArtifact {
    remote: Arc<Remote>,
    manifest: Manifest,
    chunks: Option<ChunkCache>,
    /// Background fetches started by `prefetch`, by blake3.
    pending: Mutex<HashMap<String, Fetch>>,
}

impl std::fmt::Debug for StreamedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedArtifact").field("location", &self.location()).finish()
    }
}

async fn fetch_object(
    store: Arc<dyn ObjectStore>,
    object: object_store::path::Path,
    size: u64,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, object_store::Error> {
    buf.clear();
    buf.reserve_exact(size as usize);
    let ranges = size.div_ceil(RANGE);
    // In order, so the bytes are appended as they come and memory stays at
    // one file plus the ranges in flight.
    let mut parts = futures::stream::iter(0..ranges)
        .map(|i| {
            let (store, object) = (store.clone(), object.clone());
            async move { store.get_range(&object, i * RANGE..(i * RANGE + RANGE).min(size)).await }
        })
        .buffered(RANGES_IN_FLIGHT);
    while let Some(part) = parts.try_next().await? {
        buf.extend_from_slice(&part);
    }
    Ok(buf)
}

impl StreamedArtifact {
    /// The artifact of `key` on `remote`, read in place, keeping fetched files
    /// in `chunks`. [`RemoteError::Missing`] if the remote does not have it.
    pub fn open(remote: Arc<Remote>, key: &Key, chunks: Option<ChunkCache>) -> Result<StreamedArtifact> {
        let manifest = remote
            .manifest(key)?
            .ok_or_else(|| RemoteError::Missing { remote: remote.display().to_string(), key: key.to_string() })?;
        Ok(StreamedArtifact { remote, manifest, chunks, pending: Mutex::new(HashMap::new()) })
    }

    /// The artifact's manifest, as the remote holds it.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// How messages name the artifact: the remote and the key.
    pub fn location(&self) -> String {
        format!("{}/artifacts/{}", self.remote.display(), self.manifest.key)
    }

    fn entry(&self, file: &str) -> Result<&FileEntry> {
        self.manifest.file(file).ok_or_else(|| RemoteError::Damaged {
            where_: format!("remote `{}`", self.remote.display()),
            file: file.to_string(),
            expected: "a file of the artifact".into(),
            actual: format!("no such file in the manifest of {}", self.manifest.key),
        })
    }

    /// Starts fetching `file` in the background unless it is fetched already,
    /// in the chunk cache, or not in the artifact.
    pub fn prefetch(&self, file: &str) {
        let Ok(entry) = self.entry(file) else { return };
        if self.chunks.as_ref().is_some_and(|c| c.has(entry)) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.contains_key(&entry.blake3) {
            return;
        }
        let object = self.remote.layout.blob(&entry.blake3);
        let task = self.remote.spawn(fetch_object(self.remote.store.clone(), object, entry.size, Vec::new()));
        pending.insert(entry.blake3.clone(), task);
    }

    /// The whole of `file`, in `buf` (a buffer to reuse), checked against the
    /// manifest's blake3: from a prefetch, the chunk cache, or the remote. A
    /// damaged copy in the chunk cache is dropped and refetched; damage on the
    /// remote gets one fresh download before it is reported, and is never returned.
    pub fn read(&self, file: &str, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let entry = self.entry(file)?.clone();
        let object = self.remote.layout.blob(&entry.blake3);
        let fetched = |buf: Vec<u8>| {
            self.remote
                .block_on(fetch_object(self.remote.store.clone(), object.clone(), entry.size, buf))
                .map_err(|e| self.remote.store_err("downloading", &object, &e))
        };
        let task = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&entry.blake3);
        let (mut bytes, mut from_remote) = match task {
            Some(task) => {
                let r = self.remote.block_on(task).map_err(|e| RemoteError::Io {
                    action: "fetching",
                    path: PathBuf::from(self.location()).join(file),
                    source: std::io::Error::other(e),
                })?;
                (r.map_err(|e| self.remote.store_err("downloading", &object, &e))?, true)
            }
            None if self.chunks.as_ref().is_some_and(|c| c.get(&entry, &mut buf)) => (buf, false),
            None => (fetched(buf)?, true),
        };
        for attempt in 0..2 {
            let actual = blake3::hash(&bytes).to_hex().to_string();
            if actual == entry.blake3 && bytes.len() as u64 == entry.size {
                if from_remote && let Some(c) = &self.chunks {
                    c.put(&entry.blake3, &bytes);
                }
                return Ok(bytes);
            }
            if !from_remote {
                if let Some(c) = &self.chunks {
                    c.forget(&entry.blake3);
                }
            } else if attempt == 1 {
                return Err(RemoteError::Damaged {
                    where_: format!("remote `{}`", self.remote.display()),
                    file: format!("{file} (object {object})"),
                    expected: entry.blake3.clone(),
                    actual,
                });
            }
            bytes = fetched(bytes)?;
            from_remote = true;
        }
        unreachable!("the second attempt returns")
    }
}

impl Drop for StreamedArtifact {
    fn drop(&mut self) {
        for (_, task) in self.pending.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8]) -> FileEntry {
        FileEntry { path: "f".into(), size: bytes.len() as u64, blake3: blake3::hash(bytes).to_hex().to_string() }
    }

    #[test]
    fn chunk_cache_stays_within_its_budget_dropping_the_least_recently_used() {
        let t = tempfile::tempdir().unwrap();
        let c = ChunkCache::new(t.path(), 250);
        let files: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        let entries: Vec<FileEntry> = files.iter().map(|f| entry(f)).collect();
        c.put(&entries[0].blake3, &files[0]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.put(&entries[1].blake3, &files[1]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Reading the first makes the second the least recently used.
        let mut buf = Vec::new();
        assert!(c.get(&entries[0], &mut buf) && buf == files[0]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.put(&entries[2].blake3, &files[2]);
        assert!(c.has(&entries[0]) && !c.has(&entries[1]) && c.has(&entries[2]));
        // Too large for the budget: not kept, nothing else dropped.
        let big = vec![9u8; 300];
        c.put(&entry(&big).blake3, &big);
        assert!(!c.has(&entry(&big)) && c.has(&entries[0]));
        let names: Vec<String> =
            std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }
}
