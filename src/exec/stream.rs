//! Activation stores read in place from the run's remote (`stream: true`):
//! the store's files are fetched one shard at a time (the next one prefetched
//! while the current one is decoded), each checked against the remote
//! manifest's blake3 before the reader decodes a byte of it, and kept in the
//! local cache's bounded chunk cache (`streamed/`, `SAEPIPE_STREAM_CACHE_GB`,
//! default 8) for later passes. The reader decodes the same bytes as from a
//! local copy, so batches, and hence results, are identical.

use crate::engine::RemoteSettings;
use saepipe_cache::{Cache, Key};
use saepipe_data::activations::ShardInfo;
use saepipe_data::{DataError, LEGACY_STORE_INDEX_FILE, STORE_INDEX_FILE, StoreSource};
use saepipe_remote::{ChunkCache, Remote, RemoteError, StreamedArtifact};
use std::path::PathBuf;
use std::sync::Arc;

/// Default size of the chunk cache, in GB.
const DEFAULT_CHUNK_CACHE_GB: f64 = 8.0;

/// Bytes the chunk cache may hold: `SAEPIPE_STREAM_CACHE_GB` (0 keeps nothing).
fn chunk_budget() -> u64 {
    let gb = std::env::var("SAEPIPE_STREAM_CACHE_GB")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|g| g.is_finite() && *g >= 0.0)
        .unwrap_or(DEFAULT_CHUNK_CACHE_GB);
    (gb * 1e9) as u64
}

/// An activation store on the remote, as the store reader sees it.
pub struct RemoteStore {
    artifact: StreamedArtifact,
    location: PathBuf,
}

/// Opens the store of `key` on the run's remote for reading in place.
pub fn open(settings: &RemoteSettings, cache: &Cache, key: &Key) -> Result<Arc<RemoteStore>, RemoteError> {
    let remote = Arc::new(Remote::open(&settings.url)?);
    let chunks = ChunkCache::new(&cache.streamed_dir()?, chunk_budget());
    let artifact = StreamedArtifact::open(remote, key, Some(chunks))?;
    let location = PathBuf::from(artifact.location());
    Ok(Arc::new(RemoteStore { artifact, location }))
}

/// The size of `key`'s artifact on the run's remote, if the remote has it.
pub fn on_remote(settings: &RemoteSettings, key: &Key) -> Result<Option<u64>, RemoteError> {
    Ok(Remote::open(&settings.url)?.manifest(key)?.map(|m| m.total_bytes))
}

impl RemoteStore {
    /// How the store is named in messages and in the stage's `inputs`.
    pub fn location(&self) -> PathBuf {
        self.location.clone()
    }

    fn read(&self, file: &str, buf: Vec<u8>) -> saepipe_data::Result<Vec<u8>> {
        let path = self.location.join(file);
        self.artifact.read(file, buf).map_err(|e| match e {
            RemoteError::Damaged { expected, actual, .. } => {
                DataError::Damaged { path, expected: format!("blake3 {expected}"), found: format!("blake3 {actual}") }
            }
            other => DataError::Fetch { path, message: other.to_string() },
        })
    }
}

impl StoreSource for RemoteStore {
    fn location(&self) -> PathBuf {
        self.location.clone()
    }

    fn index(&self) -> saepipe_data::Result<(PathBuf, String)> {
        let m = self.artifact.manifest();
        let name = [STORE_INDEX_FILE, LEGACY_STORE_INDEX_FILE]
            .into_iter()
            .find(|f| m.file(f).is_some())
            .unwrap_or(STORE_INDEX_FILE);
        let path = self.location.join(name);
        let bytes = self.read(name, Vec::new())?;
        let text = String::from_utf8(bytes)
            .map_err(|_| DataError::Format { path: path.clone(), message: "not UTF-8 text".into() })?;
        Ok((path, text))
    }

    /// The shard's bytes, checked against the remote manifest (size, blake3)
    /// and against what the store index records for it.
    fn load(&self, shard: &ShardInfo, buf: Vec<u8>) -> saepipe_data::Result<bytes::Bytes> {
        let path = self.location.join(&shard.file);
        let entry = self.artifact.manifest().file(&shard.file).ok_or_else(|| DataError::Format {
            path: path.clone(),
            message: "listed in the store index but not in the artifact's manifest".into(),
        })?;
        if entry.size != shard.bytes {
            return Err(DataError::Damaged {
                path,
                expected: format!("{} bytes", shard.bytes),
                found: format!("{} bytes", entry.size),
            });
        }
        saepipe_data::source::check_blake3(&path, shard, &entry.blake3)?;
        Ok(bytes::Bytes::from(self.read(&shard.file, buf)?))
    }

    fn prefetch(&self, shard: &ShardInfo) {
        self.artifact.prefetch(&shard.file);
    }
}
