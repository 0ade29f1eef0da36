//! Who and where this process is: the host name recorded in locks, whether a
//! pid is alive, and names unique across threads, processes and hosts.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable that overrides the host name recorded in locks (for
/// hosts that share a name, e.g. containers, on one filesystem).
pub const HOSTNAME_ENV: &str = "SAEPIPE_CACHE_HOSTNAME";

/// This machine's host name as recorded in lock files (`SAEPIPE_CACHE_HOSTNAME` if set).
pub fn hostname() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        if let Some(name) = std::env::var(HOSTNAME_ENV).ok().filter(|n| !n.is_empty()) {
            return name;
        }
        let mut buf = [0u8; 256];
        // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return "unknown-host".into();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
    .clone()
}

/// 8 hex characters identifying this host in staging directory names.
pub(crate) fn host_tag() -> String {
    blake3::hash(hostname().as_bytes()).to_hex()[..8].to_string()
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// 16 hex characters, unique across threads, processes and hosts.
pub(crate) fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(hostname().as_bytes());
    h.update(&std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let mut entropy = [0u8; 16];
    if getrandom::fill(&mut entropy).is_ok() {
        h.update(&entropy);
    }
    h.finalize().to_hex()[..16].to_string()
}
