use std::path::{Path, PathBuf};

/// Errors of the data layer. Every variant names the file (and where it
/// applies the hook, field or line) it is about.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A filesystem call failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS reported.
        source: std::io::Error,
    },
    /// A corpus file or pattern is missing, empty or has a malformed document.
    #[error("{path}: {message}")]
    Corpus {
        /// The corpus file (or the pattern given).
        path: PathBuf,
        /// What is wrong, with the line or column where it applies.
        message: String,
    },
    /// A tokenizer or its special-token files cannot be used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file (or `tokenizer_config.json`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The Parquet or Arrow library refused a file.
    #[error("{path}: not a readable Parquet file: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// A file of a remote store could not be fetched (after the source's retries).
    #[error("{path}: {message}")]
    Fetch {
        /// The remote file.
        path: PathBuf,
        /// What went wrong on the way.
        message: String,
    },
    /// A token table or activation store does not have the layout saepipe writes.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
    /// A file of a format version this saepipe does not read.
    #[error("{path}: format version {found} is not supported (this saepipe reads {kind} format version {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The format (`tokens`, `activations`).
        kind: &'static str,
        /// The version the file has (or `(missing)`).
        found: String,
        /// The version this saepipe reads.
        supported: u32,
    },
    /// A requested hook is not in the store.
    #[error("{path}: no activations for hook `{hook}` (this store has: {available})")]
    MissingHook {
        /// The store's index (`_store.json`).
        path: PathBuf,
        /// The hook asked for.
        hook: String,
        /// The store's hooks, comma-separated.
        available: String,
    },
    /// A hook column has another width than recorded or expected.
    #[error("{path}: hook `{hook}` has width {found}, expected {expected}")]
    Shape {
        /// The shard, or the directory of the store being written.
        path: PathBuf,
        /// The hook.
        hook: String,
        /// The width expected.
        expected: usize,
        /// The width found.
        found: usize,
    },
    /// An option value is invalid (context size, compression level, special token).
    #[error("invalid {what}: {message}")]
    Config {
        /// The option.
        what: &'static str,
        /// Why it is invalid.
        message: String,
    },
    /// A store shard whose bytes differ from what the store index records (size or
    /// blake3): the store is damaged; nothing decoded from the shard was used.
    #[error(
        "{path}: the activation store is damaged: this shard's content does not match the store index (expected {expected}, found {found}); its bytes were not used (remove the store so it is computed again)"
    )]
    Damaged {
        /// The shard file.
        path: PathBuf,
        /// What the store index records (the size or the blake3).
        expected: String,
        /// What the file has.
        found: String,
    },
    /// A NaN or infinite activation handed to the store writer (or a value beyond the
    /// float16 range in a float16 store), refused unless `WriterOptions::allow_nonfinite`.
    #[error(
        "{path}: hook `{hook}` has a non-finite value ({value}) at store row {row}; the store refuses NaN and infinite activations (WriterOptions::allow_nonfinite stores them)"
    )]
    NonFinite {
        /// The directory of the store being written.
        path: PathBuf,
        /// The hook the value belongs to.
        hook: String,
        /// Store row of the value.
        row: u64,
        /// The value as printed (`NaN`, `inf`, or the out-of-range number).
        value: String,
    },
}

/// Result of the data layer.
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
