//! Looking after a remote: listing its artifacts, verifying them byte for byte,
//! and collecting garbage (artifacts no longer wanted, blobs no artifact lists).

use crate::error::Result;
use crate::layout::Layout;
use crate::{Progress, Remote};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};
use saepipe_cache::Key;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// One artifact on a remote, from its manifest.
#[derive(Clone, Debug)]
pub struct RemoteArtifact {
    /// Its key.
    pub key: Key,
    /// The op that made it.
    pub op: String,
    /// The stage instance that made it.
    pub stage: String,
    /// Sum of its files' sizes.
    pub total_bytes: u64,
    /// When it was first published (Unix seconds).
    pub created_unix: f64,
}

/// The result of checking one artifact on a remote.
#[derive(Clone, Debug)]
pub struct RemoteVerifyReport {
    /// The artifact checked.
    pub key: Key,
    /// What is wrong; empty when every blob is present with the right bytes.
    pub problems: Vec<String>,
}

/// What a remote gc removed, or would remove in a dry run.
#[derive(Clone, Debug, Default)]
pub struct RemoteGcReport {
    /// Artifacts (manifests) removed.
    pub artifacts: Vec<Key>,
    /// Blobs removed (no remaining artifact lists them).
    pub blobs: usize,
    /// Bytes of the removed blobs.
    pub bytes: u64,
    /// Unlisted blobs kept because they are younger than the grace period
    /// (probably a push in progress).
    pub young_blobs_kept: usize,
}

impl Remote {
    /// Every artifact on the remote, by key.
    pub fn list(&self) -> Result<Vec<RemoteArtifact>> {
        let mut out = Vec::new();
        for key in self.keys()? {
            if let Some(m) = self.manifest(&key)? {
                out.push(RemoteArtifact {
                    key,
                    op: m.op,
                    stage: m.stage,
                    total_bytes: m.total_bytes,
                    created_unix: m.created_unix,
                });
            }
        }
        Ok(out)
    }

    fn keys(&self) -> Result<Vec<Key>> {
        let prefix = self.layout.artifacts();
        let metas: Vec<ObjectMeta> = self
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .map_err(|e| self.store_err("listing", &prefix, &e))?;
        let mut keys: Vec<Key> = metas.iter().filter_map(|m| Layout::key_of_manifest(&m.location)).collect();
        keys.sort_by_key(|k| k.to_string());
        Ok(keys)
    }

    /// Downloads every blob of `key` and checks its size and blake3 (nothing is
    /// written to disk). `progress` gets bytes checked.
    pub fn verify(&self, key: &Key, progress: Progress) -> Result<RemoteVerifyReport> {
        let Some(m) = self.manifest(key)? else {
            return Ok(RemoteVerifyReport { key: *key, problems: vec!["no manifest on the remote".into()] });
        };
        let mut problems = Vec::new();
        let mut done = 0u64;
        for f in &m.files {
            let object = self.layout.blob(&f.blake3);
            let checked = self.block_on(async {
                let mut stream = self.store.get(&object).await?.into_stream();
                let mut hasher = blake3::Hasher::new();
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    hasher.update(&chunk);
                    n += chunk.len() as u64;
                    progress(done + n, m.total_bytes);
                }
                Ok::<_, object_store::Error>((n, hasher.finalize().to_hex().to_string()))
            });
            match checked {
                Ok((n, hash)) if n == f.size && hash == f.blake3 => {}
                Ok((n, hash)) => problems.push(format!(
                    "`{}` (object {object}) is damaged: {n} bytes with blake3 {hash}, the manifest says {} bytes with {}",
                    f.path, f.size, f.blake3
                )),
                Err(object_store::Error::NotFound { .. }) => {
                    problems.push(format!("`{}` (object {object}) is missing", f.path))
                }
                Err(e) => return Err(self.store_err("reading", &object, &e)),
            }
            done += f.size;
        }
        Ok(RemoteVerifyReport { key: *key, problems })
    }

    /// Removes the artifacts not in `keep` (all are kept when `keep` is `None`),
    /// then every blob no remaining artifact lists and that is older than
    /// `grace` (younger unlisted blobs may belong to a push in progress). With
    /// `dry_run`, only reports.
    pub fn gc(&self, keep: Option<&HashSet<Key>>, grace: Duration, dry_run: bool) -> Result<RemoteGcReport> {
        let mut report = RemoteGcReport::default();
        let mut referenced: HashSet<String> = HashSet::new();
        for key in self.keys()? {
            let wanted = keep.is_none_or(|k| k.contains(&key));
            if !wanted {
                report.artifacts.push(key);
                if !dry_run {
                    let path = self.layout.manifest(&key);
                    match self.block_on(self.store.delete(&path)) {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(self.store_err("deleting", &path, &e)),
                    }
                }
                continue;
            }
            // A manifest that cannot be read protects nothing; it is reported by verify.
            if let Ok(Some(m)) = self.manifest(&key) {
                referenced.extend(m.files.into_iter().map(|f| f.blake3));
            }
        }
        let blobs = self.layout.blobs();
        let metas: Vec<ObjectMeta> = self
            .block_on(self.store.list(Some(&blobs)).try_collect())
            .map_err(|e| self.store_err("listing", &blobs, &e))?;
        let now = std::time::SystemTime::now();
        let mut doomed = Vec::new();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for meta in metas {
            let Some(hash) = Layout::hash_of_blob(&meta.location) else { continue };
            if referenced.contains(&hash) {
                continue;
            }
            let age = now.duration_since(meta.last_modified.into()).unwrap_or_default();
            if age < grace {
                report.young_blobs_kept += 1;
                continue;
            }
            sizes.insert(hash, meta.size);
            doomed.push(meta.location);
        }
        report.blobs = doomed.len();
        report.bytes = sizes.values().sum();
        if !dry_run {
            let store = &self.store;
            self.block_on(
                futures::stream::iter(doomed)
                    .map(|p| async move {
                        match store.delete(&p).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                            Err(e) => Err((p, e)),
                        }
                    })
                    .buffer_unordered(8)
                    .try_collect::<Vec<()>>(),
            )
            .map_err(|(p, e)| self.store_err("deleting", &p, &e))?;
        }
        Ok(report)
    }
}
