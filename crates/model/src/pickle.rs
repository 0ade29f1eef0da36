//! PyTorch checkpoints (`torch.save` zip archives) through the restricted,
//! non-executing unpickler of the `saepipe-torchfile` crate, with its errors as
//! [`ModelError`]s. The reader lives in its own small crate so the sparse-coder
//! crate can read `{cfg, state_dict}` coder files without depending on the model
//! runtime.

use crate::error::{ModelError, Result};
use std::path::Path;

pub use saepipe_torchfile::{StorageDtype, TensorRef, TorchFileError, UnpickleOptions, Value};

impl From<TorchFileError> for ModelError {
    fn from(e: TorchFileError) -> Self {
        match e {
            TorchFileError::Io { path, source } => ModelError::Io { path, source },
            TorchFileError::NotArchive { file, message } | TorchFileError::Pickle { file, message } => {
                ModelError::Pickle { file, message }
            }
            TorchFileError::ForbiddenGlobal { file, global } => ModelError::ForbiddenGlobal { file, global },
        }
    }
}

/// Unpickles `data` in the default (strict) mode; `source` names the file in errors.
pub fn unpickle(data: &[u8], source: &str) -> Result<Value> {
    Ok(saepipe_torchfile::unpickle(data, source)?)
}

/// Unpickles `data` with explicit options.
pub fn unpickle_with(data: &[u8], source: &str, opts: UnpickleOptions) -> Result<Value> {
    Ok(saepipe_torchfile::unpickle_with(data, source, opts)?)
}

/// A `torch.save` zip archive, memory-mapped: its unpickled root object
/// (`archive.root`, through `Deref`) and access to the tensors it references.
pub struct TorchArchive(saepipe_torchfile::TorchArchive);

impl std::ops::Deref for TorchArchive {
    type Target = saepipe_torchfile::TorchArchive;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl TorchArchive {
    /// Memory-maps and unpickles the archive at `path` in the default (strict)
    /// mode: only tensor-rebuilding globals and plain containers are accepted.
    pub fn open(path: &Path) -> Result<TorchArchive> {
        Ok(TorchArchive(saepipe_torchfile::TorchArchive::open(path)?))
    }

    /// [`open`](Self::open) with explicit unpickler options, e.g.
    /// `allow_objects` for files that pickle plain config objects.
    pub fn open_with(path: &Path, opts: UnpickleOptions) -> Result<TorchArchive> {
        Ok(TorchArchive(saepipe_torchfile::TorchArchive::open_with(path, opts)?))
    }

    /// The file this archive was opened from.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The tensor's elements converted to f32, row-major in its shape
    /// (non-contiguous views are gathered).
    pub fn tensor_f32(&self, t: &TensorRef, name: &str) -> Result<Vec<f32>> {
        Ok(self.0.tensor_f32(t, name)?)
    }

    /// The `saepipe-torchfile` archive this wraps, whose errors are
    /// [`TorchFileError`]s rather than [`ModelError`]s.
    pub fn into_inner(self) -> saepipe_torchfile::TorchArchive {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_model_error_variants_and_messages() {
        let p = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        let e = unpickle(p, "dir/pytorch_model.bin").unwrap_err();
        assert!(matches!(e, ModelError::ForbiddenGlobal { .. }));
        assert_eq!(e.to_string(), "pickle in pytorch_model.bin asks for forbidden global os.system");
        // Object mode still refuses to call it.
        let e = unpickle_with(p, "x.pt", UnpickleOptions { allow_objects: true }).unwrap_err();
        assert!(matches!(&e, ModelError::Pickle { .. }) && e.to_string().contains("os.system"), "{e}");
        let e = unpickle(b"\x80\x02", "y.pt").unwrap_err();
        assert_eq!(e.to_string(), "y.pt: truncated pickle");
    }
}
