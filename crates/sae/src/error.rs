//! The crate's error type.

use std::path::PathBuf;

/// Errors of the sparse-coder crate. Every variant names the file, tensor,
/// field or dimension involved.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file (e.g. `cfg.json`) does not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A configuration field is missing or has a wrong value.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The field's name.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A directory or file in no supported format.
    #[error("{path}: unsupported format: {found}")]
    UnsupportedFormat {
        /// The directory or file.
        path: PathBuf,
        /// What was found instead.
        found: String,
    },
    /// A required tensor is absent.
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor {
        /// The tensor file.
        file: String,
        /// The tensor's name.
        name: String,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape {
        /// The tensor file.
        file: String,
        /// The tensor's name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype that cannot be read as f32.
    #[error("{file}: tensor `{name}` has unsupported dtype {dtype} (f32, f64, f16 and bf16 are supported)")]
    BadDtype {
        /// The tensor file.
        file: String,
        /// The tensor's name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// The bytes are not a valid safetensors file.
    #[error("{file}: not a readable safetensors file: {message}")]
    Safetensors {
        /// The file.
        file: String,
        /// The reader's message.
        message: String,
    },
    /// A flat `[n, d]` input whose length is not `n · d`.
    #[error("input has {found} values, not a multiple of {what} = {expected} (n = {n})")]
    InputShape {
        /// Name of the expected row width (`d_in`, `d_out`, …).
        what: &'static str,
        /// The row width.
        expected: usize,
        /// Number of values given.
        found: usize,
        /// Number of rows claimed.
        n: usize,
    },
    /// Any other invalid argument or configuration, described in full.
    #[error("{0}")]
    Invalid(String),
    /// Training produced a non-finite loss or gradient norm.
    #[error("training diverged at step {step}: {what} is {value}")]
    NonFinite {
        /// The step at which it happened (0-based).
        step: u64,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The value (NaN or ±∞).
        value: f64,
    },
    /// A training backend's device operation failed.
    #[error("training on the device: {0}")]
    Compute(#[from] saepipe_core::compute::ComputeError),
}

/// Result with a [`SaeError`].
pub type Result<T> = std::result::Result<T, SaeError>;

impl SaeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SaeError::Io { path: path.into(), source }
    }
    pub(crate) fn config(path: impl Into<PathBuf>, field: &str, message: impl Into<String>) -> Self {
        SaeError::Config { path: path.into(), field: field.to_string(), message: message.into() }
    }
}
