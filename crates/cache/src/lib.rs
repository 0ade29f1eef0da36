//! saepipe's content-addressed, crash-safe artifact cache.
//!
//! Artifacts are directories named by a blake3 key, published atomically
//! (staging directory → fsync → manifest → rename). Per-key locks with heartbeats
//! make several processes (or hosts on a shared filesystem) compute each key once.
//! Stages keep resumable progress in a partial area keyed the same way.

mod error;
mod fingerprint;
mod gc;
mod key;
mod lock;
mod manifest;
mod store;

pub use error::{CacheError, Result};
pub use fingerprint::hash_file;
pub use gc::GcReport;
pub use key::Key;
pub use lock::{HEARTBEAT_EVERY, LockGuard, LockInfo, STALE_AFTER, hostname, pid_alive};
pub use manifest::{FileEntry, MANIFEST_FILE, MANIFEST_FORMAT_VERSION, Manifest, ManifestDraft};
pub use store::{ArtifactSummary, CACHE_FORMAT_VERSION, Cache, FingerprintStats, Staging, VerifyMode, VerifyReport};
