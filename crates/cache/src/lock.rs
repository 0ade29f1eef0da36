//! Per-key locks shared by processes (and hosts, on a shared filesystem).
//!
//! A lock is a file created exclusively. Its holder rewrites a heartbeat into it
//! every [`HEARTBEAT_EVERY`]; a lock is stale when its holder is a dead process on
//! this host or its heartbeat is older than [`STALE_AFTER`].

use crate::error::{IoContext, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
pub const STALE_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub pid: u32,
    pub host: String,
    pub started_unix: f64,
    pub heartbeat_unix: f64,
    /// Distinguishes two holders with the same pid (threads of one process).
    pub token: String,
}

pub(crate) fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub(crate) fn unique_token() -> String {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&now_unix().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    h.finalize().to_hex()[..16].to_string()
}

pub(crate) fn read_info(path: &Path) -> Option<LockInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl LockInfo {
    pub fn is_stale(&self) -> bool {
        if self.host == hostname() && !pid_alive(self.pid) {
            return true;
        }
        now_unix() - self.heartbeat_unix > STALE_AFTER.as_secs_f64()
    }
}

/// Holds a lock until dropped; a background thread keeps its heartbeat fresh.
pub struct LockGuard {
    path: PathBuf,
    token: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    info: Arc<Mutex<LockInfo>>,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_info(path: &Path, info: &LockInfo) -> std::io::Result<()> {
    // Rewrite via a temp file so a reader never sees a torn lock file.
    let tmp = path.with_extension(format!("hb.{}", info.token));
    std::fs::write(&tmp, serde_json::to_vec(info).unwrap())?;
    std::fs::rename(&tmp, path)
}

pub(crate) fn try_acquire(path: &Path) -> Result<Option<LockGuard>> {
    let now = now_unix();
    let info = LockInfo { pid: std::process::id(), host: hostname(), started_unix: now, heartbeat_unix: now, token: unique_token() };
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(&serde_json::to_vec(&info).unwrap()).ctx("writing lock", path)?;
            f.sync_all().ctx("syncing lock", path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Break it if stale; the rename makes exactly one breaker win.
            match read_info(path) {
                Some(holder) if holder.is_stale() => {
                    let grave = path.with_extension(format!("stale.{}", unique_token()));
                    if std::fs::rename(path, &grave).is_ok() {
                        // Re-check what we moved: if it was refreshed meanwhile, put it back.
                        let moved = read_info(&grave);
                        if moved.as_ref().is_some_and(|m| !m.is_stale()) {
                            let _ = std::fs::rename(&grave, path);
                        } else {
                            let _ = std::fs::remove_file(&grave);
                        }
                    }
                    return Ok(None);
                }
                None => {
                    // Unreadable: either being written right now or left torn by a crash.
                    let age = std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > STALE_AFTER) {
                        let _ = std::fs::remove_file(path);
                    }
                    return Ok(None);
                }
                Some(_) => return Ok(None),
            }
        }
        Err(e) => return Err(e).ctx("creating lock", path),
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(info.clone()));
    let thread = {
        let (stop, shared, path) = (stop.clone(), shared.clone(), path.to_path_buf());
        std::thread::spawn(move || {
            let step = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(step);
                waited += step;
                if waited >= HEARTBEAT_EVERY {
                    waited = Duration::ZERO;
                    let mut i = shared.lock().unwrap();
                    // Only refresh while the file is still ours.
                    if read_info(&path).is_some_and(|cur| cur.token == i.token) {
                        i.heartbeat_unix = now_unix();
                        let _ = write_info(&path, &i);
                    }
                }
            }
        })
    };
    Ok(Some(LockGuard { path: path.to_path_buf(), token: info.token.clone(), stop, thread: Some(thread), info: shared }))
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = &self.info;
        if read_info(&self.path).is_some_and(|cur| cur.token == self.token) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
