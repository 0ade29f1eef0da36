use std::path::{Path, PathBuf};

/// Errors of the data layer. Every variant names the file (and where it
/// applies the hook, field or line) it is about.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Corpus { path: PathBuf, message: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: not a readable Parquet file: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: format version {found} is not supported (this saepipe reads {kind} format version {supported})")]
    UnsupportedVersion { path: PathBuf, kind: &'static str, found: String, supported: u32 },
    #[error("{path}: no activations for hook `{hook}` (this store has: {available})")]
    MissingHook { path: PathBuf, hook: String, available: String },
    #[error("{path}: hook `{hook}` has width {found}, expected {expected}")]
    Shape { path: PathBuf, hook: String, expected: usize, found: usize },
    #[error("invalid {what}: {message}")]
    Config { what: &'static str, message: String },
}

pub type Result<T> = std::result::Result<T, DataError>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}

pub(crate) fn pq(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> DataError + '_ {
    move |e| DataError::Parquet { path: path.to_path_buf(), message: e.to_string() }
}

pub(crate) fn arrow(path: &Path) -> impl Fn(arrow_schema::ArrowError) -> DataError + '_ {
    move |e| DataError::Parquet { path: path.to_path_buf(), message: e.to_string() }
}

pub(crate) fn format(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Format { path: path.to_path_buf(), message: message.into() }
}
