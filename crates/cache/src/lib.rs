//! saepipe's content-addressed, crash-safe artifact cache.
//!
//! Layout under the cache root:
//!
//! ```text
//! artifacts/<key>               link to the artifact's current generation
//! generations/<key>.<nonce>/    a published generation: payload files + _manifest.json (immutable)
//! leases/<key>.<token>.lease    readers' leases (json: pid, host, heartbeat)
//! tmp/<key>.<pid>.<host>-<nonce>/  staging directories (never visible as artifacts)
//! partial/<key>/                resumable progress of a stage (shards, checkpoints)
//! locks/<key>.lock              per-key lock (json: pid, host, started, heartbeat)
//! fingerprints/<hash>.json      memo of external file fingerprints
//! runs/                         run records, written by the engine
//! CACHEDIR.TAG, saepipe-cache.json ({"format_version": 2})
//! ```
//!
//! Artifacts are published atomically: payload files are written into a staging
//! directory, hashed and fsynced, `_manifest.json` is written last, and the
//! directory is renamed into `generations/` and linked from `artifacts/<key>`. An
//! entry there without a valid manifest is treated as absent. Published
//! generations are never modified; a rebuild links a new generation and the old
//! one is deleted only when no reader holds a lease on the key. Per-key locks with heartbeats let several
//! processes (or hosts on a shared filesystem) agree that each key is computed
//! once; locks of dead holders are detected and broken safely.
//!
//! The manifest's name starts with `_` so that pyarrow (and pandas) skip it: an
//! artifact of Parquet files opens with pyarrow, pandas, polars or DuckDB as it
//! is. Artifacts published before that (`manifest.json`) are still read.

#![warn(missing_docs)]

mod access;
pub mod checkpoint;
mod error;
mod files;
mod fingerprint;
mod gc;
mod host;
mod key;
mod lock;
mod manifest;
mod store;

pub use access::Lease;
pub use error::{CacheError, Result};
pub use fingerprint::{FingerprintStats, hash_file};
pub use gc::GcReport;
pub use host::{HOSTNAME_ENV, hostname, pid_alive};
pub use key::{KEY_HEX_LEN, Key};
pub use lock::{HEARTBEAT_EVERY, LockGuard, LockInfo, LockTiming, STALE_AFTER};
pub use manifest::{FileEntry, LEGACY_MANIFEST_FILE, MANIFEST_FILE, MANIFEST_FORMAT_VERSION, Manifest, ManifestDraft};
pub use store::{ArtifactSummary, CACHE_FORMAT_VERSION, CACHE_MARKER_FILE, Cache, Staging, VerifyMode, VerifyReport};
