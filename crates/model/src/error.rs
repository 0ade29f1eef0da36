use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unsupported architecture `{0}` (supported: gpt2, gpt_neox)")]
    UnknownArchitecture(String),
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor { file: String, name: String },
    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape { file: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{file}: tensor `{name}` has unsupported dtype {dtype} (f32, f16 and bf16 are supported)")]
    BadDtype { file: String, name: String, dtype: String },
    #[error("{file}: not a readable safetensors file: {message}")]
    Safetensors { file: String, message: String },
    #[error("{file}: {message}")]
    Pickle { file: String, message: String },
    #[error("pickle in {file} asks for forbidden global {global}")]
    ForbiddenGlobal { file: String, global: String },
    #[error("unknown hook point `{name}`{hint}")]
    UnknownHook { name: String, hint: String },
    #[error("{0}")]
    Input(String),
    /// A failure of a non-CPU forward pass (e.g. the CUDA runtime).
    #[error("{0}")]
    Backend(String),
    #[error("model {repo}@{revision}: {message}")]
    Hub { repo: String, revision: String, message: String },
}

pub type Result<T> = std::result::Result<T, ModelError>;
