//! Errors of the cache; each names the file or key involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cache {root}: {message}")]
    Format { root: PathBuf, message: String },
    #[error("no artifact key starts with `{0}`")]
    NoSuchKey(String),
    #[error("key prefix `{0}` is ambiguous ({1} artifacts match); give more characters")]
    AmbiguousKey(String, usize),
    #[error("`{0}` is not a cache key (expected 64 lowercase hexadecimal characters)")]
    BadKey(String),
    #[error("`{0}` is not a key prefix (expected 1 to 64 hexadecimal characters)")]
    BadKeyPrefix(String),
    #[error("manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    /// A staged artifact holds something that cannot be published.
    #[error("artifact payload {path}: {message}")]
    Payload { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Fingerprint { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, CacheError>;

pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| CacheError::Io { action, path: path.to_path_buf(), source })
    }
}
