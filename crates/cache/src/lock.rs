//! Per-key locks shared by processes (and hosts, on a shared filesystem).
//!
//! A lock is a JSON file (`locks/<key>.lock`) created exclusively (`O_EXCL`). Its
//! holder rewrites the heartbeat in it every [`LockTiming::heartbeat`]. A lock is
//! stale when its holder is a dead process on this host, or when its heartbeat is
//! older than [`LockTiming::stale_after`] (holders on other hosts; this assumes the
//! hosts' clocks agree to well within that time).
//!
//! Breaking a stale lock is serialized through a short-lived breaker file
//! (`<key>.lock.break`): the breaker re-reads the lock under it and removes it only
//! if it is still the very holder it judged stale. Without that, a waiter that
//! judged an old holder stale could delete the lock a faster waiter had just
//! taken, and two processes would compute the same key.

use crate::error::{IoContext, Result};
use crate::files::sibling;
use crate::host::{hostname, pid_alive, unique_token};
use crate::key::Key;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// How often a holder refreshes its heartbeat by default.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How old a heartbeat must be before the lock counts as abandoned by default.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Heartbeat period and staleness threshold of a cache's locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTiming {
    /// How often a holder rewrites its heartbeat (default [`HEARTBEAT_EVERY`]).
    pub heartbeat: Duration,
    /// Heartbeat age after which a lock or lease counts as abandoned (default
    /// [`STALE_AFTER`]); must be well over twice `heartbeat`.
    pub stale_after: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming { heartbeat: HEARTBEAT_EVERY, stale_after: STALE_AFTER }
    }
}

/// Who holds a lock; this is the content of the lock file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    /// Process id of the holder, on `host`.
    pub pid: u32,
    /// Host name of the holder (see [`hostname`]).
    pub host: String,
    /// When the lock was taken, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// When the holder last refreshed the lock, in seconds since the Unix epoch.
    pub heartbeat_unix: f64,
    /// Distinguishes holders with the same pid (threads of one process, reused pids).
    #[serde(default)]
    pub token: String,
}

impl LockInfo {
    fn new_for_us() -> LockInfo {
        let now = now_unix();
        LockInfo {
            pid: std::process::id(),
            host: hostname(),
            started_unix: now,
            heartbeat_unix: now,
            token: unique_token(),
        }
    }

    /// Stale under the default timing.
    pub fn is_stale(&self) -> bool {
        self.is_stale_after(STALE_AFTER)
    }

    /// Stale: the holder is a dead process on this host, or its heartbeat is
    /// older than `stale_after`.
    pub(crate) fn is_stale_after(&self, stale_after: Duration) -> bool {
        if self.host == hostname() && !pid_alive(self.pid) {
            return true;
        }
        self.heartbeat_age_secs() > stale_after.as_secs_f64()
    }

    /// Seconds since the holder last refreshed the lock (negative if clocks disagree).
    pub fn heartbeat_age_secs(&self) -> f64 {
        now_unix() - self.heartbeat_unix
    }

    fn same_holder(&self, other: &LockInfo) -> bool {
        self.token == other.token
            && self.pid == other.pid
            && self.host == other.host
            && self.started_unix == other.started_unix
    }
}

pub(crate) fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub(crate) fn read_info(path: &Path) -> Option<LockInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// What a lock path holds right now.
#[derive(Debug)]
pub(crate) enum Holder {
    Absent,
    /// Unparsable: being written this instant, or torn by a crash.
    Unreadable {
        age: Option<Duration>,
    },
    Held(LockInfo),
}

pub(crate) fn holder(path: &Path) -> Holder {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Holder::Absent,
        Ok(bytes) => match serde_json::from_slice::<LockInfo>(&bytes) {
            Ok(info) => Holder::Held(info),
            Err(_) => Holder::Unreadable { age: file_age(path) },
        },
        Err(_) => Holder::Unreadable { age: file_age(path) },
    }
}

pub(crate) fn file_age(path: &Path) -> Option<Duration> {
    std::fs::symlink_metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
}

impl Holder {
    pub(crate) fn is_stale(&self, timing: LockTiming) -> bool {
        match self {
            Holder::Absent => false,
            Holder::Unreadable { age } => age.is_some_and(|a| a > timing.stale_after),
            Holder::Held(info) => info.is_stale_after(timing.stale_after),
        }
    }

    fn same_as(&self, other: &Holder) -> bool {
        match (self, other) {
            (Holder::Held(a), Holder::Held(b)) => a.same_holder(b),
            (Holder::Unreadable { .. }, Holder::Unreadable { .. }) => true,
            _ => false,
        }
    }
}

/// Creates `path` exclusively with `info` in it; `Ok(false)` if it already exists.
fn create_exclusive(path: &Path, info: &LockInfo) -> Result<bool> {
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut f) => {
            let written = f.write_all(&serde_json::to_vec(info).unwrap()).and_then(|()| f.sync_all());
            if let Err(e) = written {
                let _ = std::fs::remove_file(path);
                return Err(e).ctx("writing lock", path);
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).ctx("creating lock", path),
    }
}

fn remove_if_ours(path: &Path, token: &str) {
    if read_info(path).is_some_and(|cur| cur.token == token) {
        let _ = std::fs::remove_file(path);
    }
}

/// The breaker file of a lock, held for the milliseconds a break takes.
struct Breaker {
    path: PathBuf,
    token: String,
}

impl Breaker {
    fn acquire(path: PathBuf, timing: LockTiming) -> Result<Option<Breaker>> {
        let info = LockInfo::new_for_us();
        if create_exclusive(&path, &info)? {
            return Ok(Some(Breaker { path, token: info.token }));
        }
        // A breaker that died mid-break leaves its file behind. Move it aside under a
        // unique name; if what we moved turns out to be a live breaker, put it back
        // (hard_link never overwrites).
        let judged = holder(&path);
        if !judged.is_stale(timing) {
            return Ok(None);
        }
        let grave = sibling(&path, &format!("stale.{}", unique_token()));
        if std::fs::rename(&path, &grave).is_ok() {
            if !judged.same_as(&holder(&grave)) {
                let _ = std::fs::hard_link(&grave, &path);
            }
            let _ = std::fs::remove_file(&grave);
        }
        if create_exclusive(&path, &info)? {
            return Ok(Some(Breaker { path, token: info.token }));
        }
        Ok(None)
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        remove_if_ours(&self.path, &self.token);
    }
}

/// Removes the lock at `path` if it is stale; true if it is gone now.
pub(crate) fn break_if_stale(path: &Path, timing: LockTiming) -> Result<bool> {
    let judged = holder(path);
    if !judged.is_stale(timing) {
        return Ok(matches!(judged, Holder::Absent));
    }
    let Some(_breaker) = Breaker::acquire(sibling(path, "break"), timing)? else {
        return Ok(false);
    };
    // Under the breaker nobody else removes the lock, so if it is still the holder
    // we judged, it is still stale and no one else's fresh lock.
    let now = holder(path);
    if !judged.same_as(&now) || !now.is_stale(timing) {
        return Ok(matches!(now, Holder::Absent));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).ctx("breaking stale lock", path),
    }
}

/// Holds a lock until dropped; a background thread keeps its heartbeat fresh.
pub struct LockGuard {
    path: PathBuf,
    info: LockInfo,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LockGuard {
    fn start(path: &Path, info: LockInfo, timing: LockTiming) -> LockGuard {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let (path, mut info) = (path.to_path_buf(), info.clone());
            std::thread::Builder::new()
                .name("saepipe-lock-heartbeat".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(timing.heartbeat) {
                        // Only refresh while the file is still ours; the temp file +
                        // rename means readers never see a torn lock.
                        if read_info(&path).is_some_and(|cur| cur.token == info.token) {
                            info.heartbeat_unix = now_unix();
                            let tmp = sibling(&path, &format!("hb.{}", info.token));
                            if std::fs::write(&tmp, serde_json::to_vec(&info).unwrap()).is_ok()
                                && std::fs::rename(&tmp, &path).is_err()
                            {
                                let _ = std::fs::remove_file(&tmp);
                            }
                        }
                    }
                })
                .ok()
        };
        LockGuard { path: path.to_path_buf(), info, stop: Some(stop), thread }
    }

    /// The lock as taken (pid, host, start time, token).
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// False once the lock file is no longer ours, which happens only if another
    /// process judged this holder stale (e.g. it was suspended past `stale_after`).
    pub fn still_held(&self) -> bool {
        read_info(&self.path).is_some_and(|cur| cur.token == self.info.token)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take()); // wakes the heartbeat thread at once
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        remove_if_ours(&self.path, &self.info.token);
    }
}

pub(crate) fn try_acquire(path: &Path, timing: LockTiming) -> Result<Option<LockGuard>> {
    let info = LockInfo::new_for_us();
    if create_exclusive(path, &info)? {
        return Ok(Some(LockGuard::start(path, info, timing)));
    }
    if break_if_stale(path, timing)? && create_exclusive(path, &info)? {
        return Ok(Some(LockGuard::start(path, info, timing)));
    }
    Ok(None)
}

impl crate::Cache {
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

    /// Whether `key`'s lock (given as the key's hex) is held by a live holder.
    pub(crate) fn lock_is_live(&self, key_hex: &str) -> bool {
        let h = holder(&self.root().join("locks").join(format!("{key_hex}.lock")));
        !matches!(h, Holder::Absent) && !h.is_stale(self.lock_timing())
    }
}

/// Lease files of `key` (`leases/<key>.<token>.lease`) whose holders are alive.
pub(crate) fn live_leases(root: &Path, timing: LockTiming, key: &Key) -> usize {
    let prefix = format!("{key}.");
    let Ok(rd) = std::fs::read_dir(root.join("leases")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".lease") && !holder(&e.path()).is_stale(timing)
        })
        .count()
}

/// A reader's hold on one generation of an artifact: while it lives (and its
/// holder's heartbeat is fresh), a rebuild, `--force`, `cache rm` or gc never
/// deletes the generation it points at. Taken before the generation is
/// resolved, so a replacement that happens in between sees the lease.
pub struct Lease {
    key: Key,
    dir: PathBuf,
    manifest: crate::Manifest,
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
    pub fn manifest(&self) -> &crate::Manifest {
        &self.manifest
    }

    /// Re-hashes the leased generation's files against its manifest, except
    /// those `skip` names (files their readers verify as they read them), and
    /// says what is damaged; empty when everything matches.
    pub fn damaged_files(&self, skip: &dyn Fn(&str) -> bool) -> Vec<String> {
        let files: Vec<crate::FileEntry> = self.manifest.files.iter().filter(|f| !skip(&f.path)).cloned().collect();
        crate::store::check_files(&self.dir, &files, crate::VerifyMode::Full)
    }
}

impl crate::Cache {
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
                return Err(crate::CacheError::Io {
                    action: "creating lease",
                    path,
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                });
            }
            Some(LockGuard::start(&path, info, self.lock_timing()))
        };
        // Resolve the generation only now that the lease is visible.
        let Some(g) = crate::store::current_generation(self.root(), key) else { return Ok(None) };
        let dir = g.dir(self.root(), key);
        match crate::Manifest::read_in(&dir) {
            Ok(Some(m)) if m.key == *key => Ok(Some(Lease { key: *key, dir, manifest: m, _file: file })),
            Ok(_) | Err(crate::CacheError::Manifest { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Readers currently holding a lease on `key` (live holders only).
    pub fn live_leases(&self, key: &Key) -> usize {
        live_leases(self.root(), self.lock_timing(), key)
    }
}
