use std::path::PathBuf;

/// Everything that can fail while reading, downloading or running a model.
/// Each message names what it is about: the file, tensor, hook point or hub
/// repository.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A `config.json` or a sharded checkpoint's `*.index.json` is not valid
    /// JSON, lacks a field, or declares something this runtime does not support
    /// (a size above the supported maximum, an unknown activation, rope scaling).
    #[error("{path}: {message}")]
    Config {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it, naming the field.
        message: String,
    },
    /// `config.json` names a model family this runtime does not load (its
    /// `architectures`, or its `model_type` when it has none).
    #[error("{path}: unsupported architecture `{name}` (its `{field}`; supported: {supported})")]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// What the config names, e.g. `MambaForCausalLM`.
        name: String,
        /// The field naming it: `architectures` or `model_type`.
        field: &'static str,
        /// The supported values.
        supported: String,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor {
        /// The checkpoint files searched, comma-separated.
        file: String,
        /// The HF tensor name; alternatives are joined by `` ` or ` ``.
        name: String,
    },
    /// A tensor's stored shape differs from the one the configuration implies.
    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape {
        /// The checkpoint file holding the tensor.
        file: String,
        /// The HF tensor name.
        name: String,
        /// The shape `config.json` implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype the loader does not convert (it reads
    /// f32, f16 and bf16, and f64 from PyTorch files).
    #[error("{file}: tensor `{name}` has unsupported dtype {dtype} (f32, f16 and bf16 are supported)")]
    BadDtype {
        /// The checkpoint file holding the tensor.
        file: String,
        /// The HF tensor name.
        name: String,
        /// The stored dtype, as its reader names it.
        dtype: String,
    },
    /// A safetensors file fails validation (header, or data offsets outside the file).
    #[error("{file}: not a readable safetensors file: {message}")]
    Safetensors {
        /// The file.
        file: String,
        /// The `safetensors` crate's error.
        message: String,
    },
    /// A `torch.save` archive is not a valid zip, its pickle is malformed, or
    /// its root object is not a state dict of named tensors.
    #[error("{file}: {message}")]
    Pickle {
        /// The file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// A pickle refers to a global outside the restricted unpickler's
    /// allow-list (something loading it in Python would call); nothing was run.
    #[error("pickle in {file} asks for forbidden global {global}")]
    ForbiddenGlobal {
        /// The file.
        file: String,
        /// The global, as `module.name` (e.g. `os.system`).
        global: String,
    },
    /// A hook point name this model does not have.
    #[error("unknown hook point `{name}`{hint}")]
    UnknownHook {
        /// The name asked for.
        name: String,
        /// Appended to the message: the closest valid name, or why the layer
        /// is out of range; empty when there is nothing to suggest.
        hint: String,
    },
    /// Input from the caller that does not fit the model or cannot be used:
    /// token ids or batch shapes, `stop_at_layer`, a malformed model
    /// reference, a directory without weights, a model missing from the cache.
    #[error("{0}")]
    Input(String),
    /// A failure of a non-CPU forward pass (e.g. the CUDA runtime).
    #[error("{0}")]
    Backend(String),
    /// Fetching from the Hugging Face hub failed: the revision did not
    /// resolve, a download failed, or the commit lacks the files asked for.
    #[error("model {repo}@{revision}: {message}")]
    Hub {
        /// The repository, `org/name`.
        repo: String,
        /// The revision asked for (branch, tag or commit).
        revision: String,
        /// What failed (an HTTP error, a missing file, an offline cache).
        message: String,
    },
}

/// The result of the model runtime's operations.
pub type Result<T> = std::result::Result<T, ModelError>;
