//! Errors of the cache; each names the file or key involved.

use std::path::PathBuf;

/// Everything that can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A filesystem call failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the cache was doing, e.g. `"writing"`, `"listing"`.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS reported.
        source: std::io::Error,
    },
    /// The cache directory itself is unusable: an unknown layout version or an
    /// unreadable `saepipe-cache.json`.
    #[error("cache {root}: {message}")]
    Format {
        /// The cache root.
        root: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// No published artifact matches a key prefix (the normalized prefix).
    #[error("no artifact key starts with `{0}`")]
    NoSuchKey(String),
    /// A key prefix matches several published artifacts: (prefix, how many).
    #[error("key prefix `{0}` is ambiguous ({1} artifacts match); give more characters")]
    AmbiguousKey(String, usize),
    /// Text that should be a full key is not 64 lowercase hex characters.
    #[error("`{0}` is not a cache key (expected 64 lowercase hexadecimal characters)")]
    BadKey(String),
    /// Text that should be a key prefix is empty, too long or not hexadecimal.
    #[error("`{0}` is not a key prefix (expected 1 to 64 hexadecimal characters)")]
    BadKeyPrefix(String),
    /// A `_manifest.json` is malformed, of an unknown version or lists an unsafe path.
    #[error("manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A staged artifact holds something that cannot be published.
    #[error("artifact payload {path}: {message}")]
    Payload {
        /// The staged file or directory involved, or the artifact link when publishing failed.
        path: PathBuf,
        /// Why it cannot be published.
        message: String,
    },
    /// An external input cannot be fingerprinted (not a regular file or
    /// directory, a non-UTF-8 name, or it kept changing while being hashed).
    #[error("{path}: {message}")]
    Fingerprint {
        /// The file or directory being fingerprinted.
        path: PathBuf,
        /// Why it cannot be.
        message: String,
    },
}

/// Result of cache operations.
pub type Result<T> = std::result::Result<T, CacheError>;

pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| CacheError::Io { action, path: path.to_path_buf(), source })
    }
}
