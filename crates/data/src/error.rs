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
    /// A store shard whose bytes differ from what `store.json` records (size or
    /// blake3): the store is damaged; nothing decoded from the shard was used.
    #[error(
        "{path}: the activation store is damaged: this shard's content does not match store.json (expected {expected}, found {found}); its bytes were not used (remove the store so it is computed again)"
    )]
    Damaged { path: PathBuf, expected: String, found: String },
    /// A NaN or infinite activation handed to the store writer (or a value beyond the
    /// float16 range in a float16 store), refused unless `WriterOptions::allow_nonfinite`.
    #[error(
        "{path}: hook `{hook}` has a non-finite value ({value}) at store row {row}; the store refuses NaN and infinite activations (WriterOptions::allow_nonfinite stores them)"
    )]
    NonFinite { path: PathBuf, hook: String, row: u64, value: String },
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
