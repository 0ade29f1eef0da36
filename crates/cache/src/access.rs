//! How a [`Cache`] hands out its per-key locks and its readers' leases,
//! on top of the lock files of `lock` (which know nothing of the cache).

use crate::error::{CacheError, IoContext, Result};
use crate::host::unique_token;
use crate::key::Key;
use crate::lock::{Holder, LockGuard, LockInfo, create_exclusive, holder, live_leases, read_info, try_acquire};
use crate::manifest::{FileEntry, Manifest};
use crate::store::{Cache, VerifyMode, check_files, current_generation};
use std::path::{Path, PathBuf};
use std::time::Duration;

impl Cache {
    pub(crate) fn lock_path(&self, key: &Key) -> PathBuf {
        self.root().join("locks").join(format!("{key}.lock"))
    }

    /// Takes the lock of `key` if it is free (or stale); never waits.
    pub fn try_lock(&self, key: &Key) -> Result<Option<LockGuard>> {
        try_acquire(&self.lock_path(key), self.lock_timing())
    }

    /// Blocks until the lock of `key` is ours. `on_wait` is called once, with the
    /// current holder, when waiting starts. Polls with a backoff of 50 ms to 500 ms.
    pub fn lock(&self, key: &Key, on_wait: &mut dyn FnMut(&LockInfo)) -> Result<LockGuard> {
        let path = self.lock_path(key);
        let mut backoff = Duration::from_millis(50);
        let mut told = false;
        loop {
            if let Some(g) = try_acquire(&path, self.lock_timing())? {
                return Ok(g);
            }
            if !told {
                told = read_info(&path).map(|info| on_wait(&info)).is_some();
            }
            // Jitter keeps several waiters from polling in lockstep.
            let jitter = 0.8 + 0.4 * (u64::from_str_radix(&unique_token()[..4], 16).unwrap_or(0) as f64 / 65535.0);
            std::thread::sleep(backoff.mul_f64(jitter));
            backoff = (backoff * 3 / 2).min(Duration::from_millis(500));
        }
    }

    /// The current holder of `key`'s lock, if it is held and readable (stale or not).
    pub fn lock_holder(&self, key: &Key) -> Option<LockInfo> {
        read_info(&self.lock_path(key))
    }

    /// Whether someone (another driver, another host) holds `key`'s lock and
    /// is alive: a scheduler takes other ready stages first.
    pub fn lock_is_held(&self, key: &Key) -> bool {
        self.lock_is_live(&key.to_string())
    }

    /// Whether `key`'s lock (given as the key's hex) is held by a live holder.
    pub(crate) fn lock_is_live(&self, key_hex: &str) -> bool {
        let path = self.root().join("locks").join(format!("{key_hex}.lock"));
        let h = holder(&path);
        !matches!(h, Holder::Absent) && !h.is_stale(&path, self.lock_timing())
    }
}

/// A reader's hold on one generation of an artifact: while it lives (and its
/// holder's heartbeat is fresh), a rebuild, `--force`, `cache rm` or gc never
/// deletes the generation it points at. Taken before the generation is
/// resolved, so a replacement that happens in between sees the lease.
pub struct Lease {
    key: Key,
    dir: PathBuf,
    manifest: Manifest,
    /// `None` on a read-only cache, where no one can delete anything anyway.
    _file: Option<LockGuard>,
}

impl Lease {
    /// The leased artifact's key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The generation's directory: every path under it stays valid while the lease lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest of the leased generation.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Re-hashes the leased generation's files against its manifest, except
    /// those `skip` names (files their readers verify as they read them), and
    /// says what is damaged; empty when everything matches.
    pub fn damaged_files(&self, skip: &dyn Fn(&str) -> bool) -> Vec<String> {
        let files: Vec<FileEntry> = self.manifest.files.iter().filter(|f| !skip(&f.path)).cloned().collect();
        check_files(&self.dir, &files, VerifyMode::Full)
    }
}

impl Cache {
    /// Leases the current generation of `key` for reading; `None` if the key has
    /// no valid published artifact.
    pub fn lease(&self, key: &Key) -> Result<Option<Lease>> {
        let file = if self.read_only() {
            None
        } else {
            let dir = self.root().join("leases");
            std::fs::create_dir_all(&dir).ctx("creating", &dir)?;
            let info = LockInfo::new_for_us();
            let path = dir.join(format!("{key}.{}.lease", info.token));
            if !create_exclusive(&path, &info)? {
                return Err(CacheError::Io {
                    action: "creating lease",
                    path,
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                });
            }
            Some(LockGuard::start(&path, info, self.lock_timing()))
        };
        // Resolve the generation only now that the lease is visible.
        let Some(g) = current_generation(self.root(), key) else { return Ok(None) };
        let dir = g.dir(self.root(), key);
        match Manifest::read_in(&dir) {
            Ok(Some(m)) if m.key == *key => Ok(Some(Lease { key: *key, dir, manifest: m, _file: file })),
            Ok(_) | Err(CacheError::Manifest { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Readers currently holding a lease on `key` (live holders only).
    pub fn live_leases(&self, key: &Key) -> usize {
        live_leases(self.root(), self.lock_timing(), key)
    }
}
