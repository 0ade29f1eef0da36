//! Downloading an artifact into the local cache: ranged GETs in parallel into
//! a resumable download folder, every file checked against the manifest's
//! blake3, then one atomic publish.

use crate::error::{IoContext, RemoteError, Result};
use crate::{Progress, Remote};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use saepipe_cache::{Cache, FileEntry, Key, Manifest};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes per ranged GET.
pub(crate) const RANGE: u64 = 8 << 20;
/// Ranged GETs of one file in flight at once.
const RANGES_IN_FLIGHT: usize = 8;
/// Files downloaded at once.
const FILES_IN_FLIGHT: usize = 2;

/// What a pull did.
#[derive(Clone, Debug)]
pub struct PullOutcome {
    /// The manifest of the artifact now in the local cache.
    pub manifest: Manifest,
    /// Bytes downloaded by this pull.
    pub downloaded_bytes: u64,
    /// Bytes kept from an earlier, interrupted pull.
    pub resumed_bytes: u64,
    /// The artifact was already in the local cache; nothing was downloaded.
    pub already_local: bool,
}

impl Remote {
    /// The manifest of `key` on the remote, checked like a local one; `None`
    /// if the remote has no artifact for the key.
    pub fn manifest(&self, key: &Key) -> Result<Option<Manifest>> {
        Ok(self.manifest_bytes(key)?.map(|(m, _)| m))
    }

    pub(crate) fn manifest_bytes(&self, key: &Key) -> Result<Option<(Manifest, Vec<u8>)>> {
        let path = self.layout.manifest(key);
        let bytes = self.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let Some(bytes) = bytes.map_err(|e| self.store_err("reading", &path, &e))? else { return Ok(None) };
        let origin = PathBuf::from(format!("{}/{path}", self.display()));
        let m = Manifest::parse(&bytes, &origin)?;
        if m.key != *key {
            return Err(RemoteError::Damaged {
                where_: format!("remote `{}`", self.display()),
                file: path.to_string(),
                expected: format!("a manifest of {key}"),
                actual: format!("a manifest of {}", m.key),
            });
        }
        Ok(Some((m, bytes.to_vec())))
    }

    /// Downloads `key` into `cache` and publishes it there, after checking every
    /// file's blake3. Callers that may race another pull of the same key into
    /// the same cache hold the key's lock (the engine and `saepipe cache pull` do). A pull killed at any point leaves nothing published; the
    /// next pull keeps the ranges already on disk. A damaged remote object is
    /// reported (after one fresh download of it) and never published.
    pub fn pull(&self, cache: &Cache, key: &Key, progress: Progress) -> Result<PullOutcome> {
        if let Some(manifest) = cache.lookup(key)? {
            return Ok(PullOutcome { manifest, downloaded_bytes: 0, resumed_bytes: 0, already_local: true });
        }
        let (manifest, _) = self
            .manifest_bytes(key)?
            .ok_or_else(|| RemoteError::Missing { remote: self.display().to_string(), key: key.to_string() })?;
        let work = cache.download_dir(key)?;
        let total = manifest.total_bytes;
        let done = AtomicU64::new(0);
        let resumed = AtomicU64::new(0);
        let downloaded = AtomicU64::new(0);
        let counters = Counters { done: &done, resumed: &resumed, downloaded: &downloaded, total, progress };
        self.block_on(
            futures::stream::iter(manifest.files.iter())
                .map(|f| self.fetch_verified(&work, f, &counters))
                .buffer_unordered(FILES_IN_FLIGHT)
                .try_collect::<Vec<()>>(),
        )?;
        let staging = cache.begin(key)?;
        for f in &manifest.files {
            let from = work.join(&f.path);
            let to = staging.dir().join(&f.path);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).io("creating", parent)?;
            }
            std::fs::rename(&from, &to).io("moving downloaded file", &from)?;
        }
        let published = staging.commit_fetched(manifest)?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(PullOutcome {
            manifest: published,
            downloaded_bytes: downloaded.load(Ordering::Relaxed),
            resumed_bytes: resumed.load(Ordering::Relaxed),
            already_local: false,
        })
    }

    /// Downloads one file (resuming) and checks it; a mismatch gets one fresh
    /// download before it is reported as damage on the remote.
    async fn fetch_verified(&self, work: &Path, entry: &FileEntry, c: &Counters<'_, '_>) -> Result<()> {
        let path = work.join(&entry.path);
        for attempt in 0..2 {
            self.fetch_file(&path, entry, c).await?;
            let p = path.clone();
            let actual = tokio::task::spawn_blocking(move || saepipe_cache::hash_file(&p)).await.map_err(|e| {
                RemoteError::Io { action: "hashing", path: path.clone(), source: std::io::Error::other(e) }
            })??;
            if actual == entry.blake3 {
                return Ok(());
            }
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(ranges_file(&path));
            if attempt == 1 {
                return Err(RemoteError::Damaged {
                    where_: format!("remote `{}`", self.display()),
                    file: format!("{} (object {})", entry.path, self.layout.blob(&entry.blake3)),
                    expected: entry.blake3.clone(),
                    actual,
                });
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Brings `path` to the blob's full content with ranged GETs, skipping the
    /// ranges an earlier attempt recorded as written.
    async fn fetch_file(&self, path: &Path, entry: &FileEntry, c: &Counters<'_, '_>) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).io("creating", parent)?;
        }
        let ranges_path = ranges_file(path);
        let complete = !ranges_path.exists() && std::fs::metadata(path).is_ok_and(|m| m.len() == entry.size);
        if complete {
            c.add_resumed(entry.size);
            return Ok(());
        }
        let chunks = entry.size.div_ceil(RANGE);
        let have: BTreeSet<u64> = if std::fs::metadata(path).is_ok_and(|m| m.len() == entry.size) {
            std::fs::read_to_string(&ranges_path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter(|&i| i < chunks)
                .collect()
        } else {
            BTreeSet::new()
        };
        let file =
            std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path).io("creating", path)?;
        file.set_len(entry.size).io("sizing", path)?;
        let mut ranges =
            std::fs::OpenOptions::new().create(true).append(true).open(&ranges_path).io("creating", &ranges_path)?;
        for &i in &have {
            c.add_resumed(chunk_len(i, entry.size));
        }
        let object = self.layout.blob(&entry.blake3);
        let missing: Vec<u64> = (0..chunks).filter(|i| !have.contains(i)).collect();
        let mut fetched = futures::stream::iter(missing)
            .map(|i| {
                let (store, object) = (&self.store, &object);
                async move {
                    let start = i * RANGE;
                    let bytes = store.get_range(object, start..start + chunk_len(i, entry.size)).await?;
                    Ok::<_, object_store::Error>((i, bytes))
                }
            })
            .buffer_unordered(RANGES_IN_FLIGHT);
        // Written here, one chunk at a time, so the ranges file lists only
        // chunks whose bytes were written before it.
        while let Some(r) = fetched.next().await {
            let (i, bytes) = r.map_err(|e| self.store_err("downloading", &object, &e))?;
            if bytes.len() as u64 != chunk_len(i, entry.size) {
                return Err(RemoteError::Damaged {
                    where_: format!("remote `{}`", self.display()),
                    file: format!("{} (object {object})", entry.path),
                    expected: format!("{} bytes at offset {}", chunk_len(i, entry.size), i * RANGE),
                    actual: format!("{} bytes", bytes.len()),
                });
            }
            file.write_all_at(&bytes, i * RANGE).io("writing", path)?;
            writeln!(ranges, "{i}").io("writing", &ranges_path)?;
            c.add_downloaded(bytes.len() as u64);
        }
        file.sync_all().io("syncing", path)?;
        std::fs::remove_file(&ranges_path).io("removing", &ranges_path)?;
        Ok(())
    }
}

fn ranges_file(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".saepipe-ranges");
    path.with_file_name(name)
}

fn chunk_len(i: u64, size: u64) -> u64 {
    RANGE.min(size - i * RANGE)
}

struct Counters<'a, 'p> {
    done: &'a AtomicU64,
    resumed: &'a AtomicU64,
    downloaded: &'a AtomicU64,
    total: u64,
    progress: Progress<'p>,
}

impl Counters<'_, '_> {
    fn add_resumed(&self, n: u64) {
        self.resumed.fetch_add(n, Ordering::Relaxed);
        (self.progress)(self.done.fetch_add(n, Ordering::Relaxed) + n, self.total);
    }
    fn add_downloaded(&self, n: u64) {
        self.downloaded.fetch_add(n, Ordering::Relaxed);
        (self.progress)(self.done.fetch_add(n, Ordering::Relaxed) + n, self.total);
    }
}
