//! Per-key locks shared by processes (and hosts, on a shared filesystem).
//!
//! A lock is a JSON file (`locks/<key>.lock`) created exclusively (`O_EXCL`). Its
//! holder rewrites it (temporary file + rename) every [`LockTiming::heartbeat`].
//! A lock is stale when its holder is a dead process on this host, or when it has
//! not been rewritten for [`LockTiming::stale_after`]. For a holder on another
//! host that age is measured on the file system's clock, not on either host's:
//! the lock file's modification time against that of a probe file created next
//! to it now (on NFS the server sets both), so hosts whose clocks disagree by
//! seconds or hours never break each other's live locks.
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
    pub(crate) fn new_for_us() -> LockInfo {
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

/// Now, on the clock of the file system holding `dir`: the modification time
/// of a probe file created there (`None` where nothing can be created).
pub(crate) fn fs_now(dir: &Path) -> Option<std::time::SystemTime> {
    let probe = dir.join(format!(".clock.{}", unique_token()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).ok()?;
    let now = file.metadata().and_then(|m| m.modified()).ok();
    drop(file);
    let _ = std::fs::remove_file(&probe);
    now
}

/// How long ago the file at `path` was last written, on its file system's clock.
fn fs_age(path: &Path) -> Option<Duration> {
    let written = std::fs::symlink_metadata(path).and_then(|m| m.modified()).ok()?;
    let now = fs_now(path.parent()?)?;
    Some(now.duration_since(written).unwrap_or(Duration::ZERO))
}

impl Holder {
    /// Whether the holder of the lock (or lease) at `path` is gone: a dead
    /// process on this host, a holder here whose heartbeat stopped (e.g.
    /// suspended), or a file nobody rewrote for `stale_after` on the file
    /// system's clock (holders on other hosts, unreadable files).
    pub(crate) fn is_stale(&self, path: &Path, timing: LockTiming) -> bool {
        match self {
            Holder::Absent => false,
            Holder::Held(info) if info.host == hostname() => info.is_stale_after(timing.stale_after),
            Holder::Held(info) => match fs_age(path) {
                Some(age) => age > timing.stale_after,
                // A file system we cannot write to: the holder's own clock.
                None => info.is_stale_after(timing.stale_after),
            },
            Holder::Unreadable { age } => fs_age(path).or(*age).is_some_and(|a| a > timing.stale_after),
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
pub(crate) fn create_exclusive(path: &Path, info: &LockInfo) -> Result<bool> {
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
        if !judged.is_stale(&path, timing) {
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
    if !judged.is_stale(path, timing) {
        return Ok(matches!(judged, Holder::Absent));
    }
    let Some(_breaker) = Breaker::acquire(sibling(path, "break"), timing)? else {
        return Ok(false);
    };
    // Under the breaker nobody else removes the lock, so if it is still the holder
    // we judged, it is still stale and no one else's fresh lock.
    let now = holder(path);
    if !judged.same_as(&now) || !now.is_stale(path, timing) {
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
    pub(crate) fn start(path: &Path, info: LockInfo, timing: LockTiming) -> LockGuard {
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

/// Lease files of `key` (`leases/<key>.<token>.lease`) whose holders are alive.
pub(crate) fn live_leases(root: &Path, timing: LockTiming, key: &Key) -> usize {
    let prefix = format!("{key}.");
    let Ok(rd) = std::fs::read_dir(root.join("leases")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".lease") && !holder(&e.path()).is_stale(&e.path(), timing)
        })
        .count()
}
