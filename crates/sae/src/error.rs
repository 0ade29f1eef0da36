use std::path::PathBuf;

/// Errors of the sparse-coder crate. Every variant names the file, tensor,
/// field or dimension involved.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: field `{field}`: {message}")]
    Config { path: PathBuf, field: String, message: String },
    #[error("{path}: unsupported format: {found}")]
    UnsupportedFormat { path: PathBuf, found: String },
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor { file: String, name: String },
    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape { file: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{file}: tensor `{name}` has unsupported dtype {dtype} (f32, f64, f16 and bf16 are supported)")]
    BadDtype { file: String, name: String, dtype: String },
    #[error("{file}: not a readable safetensors file: {message}")]
    Safetensors { file: String, message: String },
    #[error("input has {found} values, not a multiple of {what} = {expected} (n = {n})")]
    InputShape { what: &'static str, expected: usize, found: usize, n: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("training diverged at step {step}: {what} is {value}")]
    NonFinite { step: u64, what: &'static str, value: f64 },
}

pub type Result<T> = std::result::Result<T, SaeError>;

impl SaeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SaeError::Io { path: path.into(), source }
    }
    pub(crate) fn config(path: impl Into<PathBuf>, field: &str, message: impl Into<String>) -> Self {
        SaeError::Config { path: path.into(), field: field.to_string(), message: message.into() }
    }
}
