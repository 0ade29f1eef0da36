//! Uploading a finished artifact: blobs first (skipping those already there),
//! each checked against the manifest while it is read, then the manifest with a
//! create-only put.

use crate::error::{IoContext, RemoteError, Result};
use crate::layout::{LAYOUT_VERSION, is_blake3_hex};
use crate::{Progress, Remote};
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use saepipe_cache::{Cache, FileEntry, Key, Manifest};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt;

/// Files up to this size go in one PUT; larger ones as multipart uploads.
const SINGLE_PUT_MAX: u64 = 16 << 20;
/// Multipart part size (S3 allows 5 MiB to 5 GiB; 10,000 parts at most, so
/// 16 MiB parts carry files up to 160 GB).
const PART_SIZE: usize = 16 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Files uploaded at once.
const FILES_IN_FLIGHT: usize = 4;

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushOutcome {
    /// The artifact pushed.
    pub key: Key,
    /// Files uploaded by this push.
    pub uploaded_files: usize,
    /// Bytes uploaded by this push.
    pub uploaded_bytes: u64,
    /// Files whose blob was already on the remote (an earlier, interrupted push
    /// or another artifact with the same file).
    pub skipped_files: usize,
    /// The manifest was already on the remote: another pusher published the key
    /// first (or an earlier push finished), so nothing was changed.
    pub already_on_remote: bool,
}

impl Remote {
    /// Uploads the local artifact `key` of `cache`. The artifact is leased while
    /// it is read, so a rebuild or gc on this host cannot delete it mid-push.
    /// A local file that no longer matches its manifest is never uploaded.
    pub fn push(&self, cache: &Cache, key: &Key, progress: Progress) -> Result<PushOutcome> {
        let lease = cache.lease(key)?.ok_or_else(|| RemoteError::Config {
            remote: self.display().to_string(),
            message: format!("cannot push {key}: it is not in the local cache {}", cache.root().display()),
        })?;
        let mut outcome =
            PushOutcome { key: *key, uploaded_files: 0, uploaded_bytes: 0, skipped_files: 0, already_on_remote: false };
        if self.has(key)? {
            outcome.already_on_remote = true;
            return Ok(outcome);
        }
        let manifest = lease.manifest();
        if let Some(f) = manifest.files.iter().find(|f| !is_blake3_hex(&f.blake3)) {
            return Err(RemoteError::Damaged {
                where_: format!("local cache {}", cache.root().display()),
                file: f.path.clone(),
                expected: "a blake3".into(),
                actual: f.blake3.clone(),
            });
        }
        // The bytes as published (under the manifest's old name in artifacts of older versions).
        let manifest_path = Manifest::path_in(lease.dir());
        let manifest_bytes = std::fs::read(&manifest_path).io("reading", &manifest_path)?;
        let total = manifest.total_bytes;
        let done = AtomicU64::new(0);
        let local = format!("local cache {}", cache.root().display());
        self.block_on(async {
            self.write_marker().await?;
            let results: Vec<bool> = futures::stream::iter(manifest.files.iter())
                .map(|f| self.upload_blob(lease.dir(), f, &local, &done, total, progress))
                .buffered(FILES_IN_FLIGHT) // in order: results pair with manifest.files
                .try_collect()
                .await?;
            for (uploaded, f) in results.iter().zip(&manifest.files) {
                if *uploaded {
                    outcome.uploaded_files += 1;
                    outcome.uploaded_bytes += f.size;
                } else {
                    outcome.skipped_files += 1;
                }
            }
            // Every blob is on the remote: now the manifest may become visible.
            let path = self.layout.manifest(key);
            let create = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.store.put_opts(&path, PutPayload::from(manifest_bytes), create).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    outcome.already_on_remote = true;
                    Ok(())
                }
                Err(e) => Err(self.store_err("uploading", &path, &e)),
            }
        })?;
        drop(lease);
        Ok(outcome)
    }

    /// Whether the remote has a (complete) artifact for `key`.
    pub fn has(&self, key: &Key) -> Result<bool> {
        let path = self.layout.manifest(key);
        self.block_on(async {
            match self.store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.store_err("looking up", &path, &e)),
            }
        })
    }

    /// Writes the layout marker unless it is there.
    async fn write_marker(&self) -> Result<()> {
        let path = self.layout.marker();
        let body = serde_json::json!({ "format": "saepipe-remote", "layout_version": LAYOUT_VERSION });
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(body.to_string().into_bytes()), create).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.store_err("uploading", &path, &e)),
        }
    }

    /// Uploads one payload file as its blob unless a blob of its size is there.
    /// Returns whether it uploaded. The bytes are hashed as they are read and
    /// the upload is abandoned if they do not match the manifest.
    async fn upload_blob(
        &self,
        dir: &Path,
        entry: &FileEntry,
        local: &str,
        done: &AtomicU64,
        total: u64,
        progress: Progress<'_>,
    ) -> Result<bool> {
        let object = self.layout.blob(&entry.blake3);
        match self.store.head(&object).await {
            Ok(meta) if meta.size == entry.size => {
                progress(done.fetch_add(entry.size, Ordering::Relaxed) + entry.size, total);
                return Ok(false);
            }
            // A blob of the wrong size can only be damage: replace it.
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store_err("looking up", &object, &e)),
        }
        let path = dir.join(&entry.path);
        let mut file = tokio::fs::File::open(&path).await.io("opening", &path)?;
        let damaged = |actual: String| RemoteError::Damaged {
            where_: local.to_string(),
            file: entry.path.clone(),
            expected: entry.blake3.clone(),
            actual,
        };
        let mut hasher = blake3::Hasher::new();
        if entry.size <= SINGLE_PUT_MAX {
            let mut bytes = Vec::with_capacity(entry.size as usize);
            file.read_to_end(&mut bytes).await.io("reading", &path)?;
            hasher.update(&bytes);
            let actual = hasher.finalize().to_hex().to_string();
            if actual != entry.blake3 || bytes.len() as u64 != entry.size {
                return Err(damaged(actual));
            }
            self.store
                .put(&object, PutPayload::from(bytes))
                .await
                .map_err(|e| self.store_err("uploading", &object, &e))?;
            progress(done.fetch_add(entry.size, Ordering::Relaxed) + entry.size, total);
            return Ok(true);
        }
        let mut upload =
            self.store.put_multipart(&object).await.map_err(|e| self.store_err("starting upload of", &object, &e))?;
        let mut in_flight = FuturesUnordered::new();
        let mut read = 0u64;
        let result: Result<()> = async {
            loop {
                let mut part = Vec::with_capacity(PART_SIZE);
                let n = (&mut file).take(PART_SIZE as u64).read_to_end(&mut part).await.io("reading", &path)?;
                if n == 0 {
                    break;
                }
                hasher.update(&part);
                read += n as u64;
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(r) = in_flight.next().await {
                        let r: object_store::Result<()> = r;
                        r.map_err(|e| self.store_err("uploading", &object, &e))?;
                    }
                }
                let len = n as u64;
                let fut = upload.put_part(PutPayload::from(part));
                in_flight.push(async move {
                    fut.await?;
                    progress(done.fetch_add(len, Ordering::Relaxed) + len, total);
                    Ok::<_, object_store::Error>(())
                });
            }
            while let Some(r) = in_flight.next().await {
                r.map_err(|e| self.store_err("uploading", &object, &e))?;
            }
            let actual = hasher.finalize().to_hex().to_string();
            if actual != entry.blake3 || read != entry.size {
                return Err(damaged(actual));
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                upload.complete().await.map_err(|e| self.store_err("finishing upload of", &object, &e))?;
                Ok(true)
            }
            Err(e) => {
                let _ = upload.abort().await;
                Err(e)
            }
        }
    }
}
