//! Small safetensors helpers: read tensors as f32 with shape checks, write f32.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Result, SaeError};

/// An opened safetensors file (the bytes are kept in memory).
pub struct StFile {
    /// The path it was opened from, as shown in error messages.
    pub name: String,
    bytes: Vec<u8>,
}

impl StFile {
    /// Reads and validates the file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| SaeError::io(path, e))?;
        let f = StFile { name: path.display().to_string(), bytes };
        f.parse()?;
        Ok(f)
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| SaeError::Safetensors { file: self.name.clone(), message: e.to_string() })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.parse().map(|s| s.names().into_iter().map(String::from).collect()).unwrap_or_default();
        v.sort();
        v
    }

    /// Whether a tensor `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.parse().map(|s| s.tensor(name).is_ok()).unwrap_or(false)
    }

    /// The string metadata of the header (`__metadata__`), if any.
    pub fn metadata(&self) -> Option<HashMap<String, String>> {
        let (_, m) = SafeTensors::read_metadata(&self.bytes).ok()?;
        m.metadata().clone()
    }

    /// Shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let st = self.parse()?;
        let t = st.tensor(name).map_err(|_| SaeError::MissingTensor { file: self.name.clone(), name: name.into() })?;
        Ok(t.shape().to_vec())
    }

    /// Reads a float tensor as f32. `expected` is checked when given.
    pub fn f32(&self, name: &str, expected: Option<&[usize]>) -> Result<Vec<f32>> {
        let st = self.parse()?;
        let t = st.tensor(name).map_err(|_| SaeError::MissingTensor { file: self.name.clone(), name: name.into() })?;
        if let Some(e) = expected {
            if t.shape() != e {
                return Err(SaeError::BadShape {
                    file: self.name.clone(),
                    name: name.into(),
                    expected: e.to_vec(),
                    found: t.shape().to_vec(),
                });
            }
        }
        let d = t.data();
        Ok(match t.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(SaeError::BadDtype {
                    file: self.name.clone(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                });
            }
        })
    }

    /// Reads an integer tensor (i64/u64/i32/u32) as u64.
    pub fn u64(&self, name: &str) -> Result<Vec<u64>> {
        let st = self.parse()?;
        let t = st.tensor(name).map_err(|_| SaeError::MissingTensor { file: self.name.clone(), name: name.into() })?;
        let d = t.data();
        Ok(match t.dtype() {
            Dtype::U64 | Dtype::I64 => d.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect(),
            other => {
                return Err(SaeError::BadDtype {
                    file: self.name.clone(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                });
            }
        })
    }

    /// Reads an F64 tensor exactly.
    pub fn f64(&self, name: &str) -> Result<Vec<f64>> {
        let st = self.parse()?;
        let t = st.tensor(name).map_err(|_| SaeError::MissingTensor { file: self.name.clone(), name: name.into() })?;
        match t.dtype() {
            Dtype::F64 => Ok(t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()),
            other => {
                Err(SaeError::BadDtype { file: self.name.clone(), name: name.into(), dtype: format!("{other:?}") })
            }
        }
    }
}

/// Owned tensor to write.
pub enum Out {
    /// f32 data with its shape.
    F32(Vec<usize>, Vec<f32>),
    /// f64 data with its shape.
    F64(Vec<usize>, Vec<f64>),
    /// u64 data with its shape.
    U64(Vec<usize>, Vec<u64>),
}

/// Writes tensors (sorted by name by the format) with optional string metadata.
pub fn write(path: &Path, tensors: Vec<(String, Out)>, metadata: Option<HashMap<String, String>>) -> Result<()> {
    let bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| match t {
            Out::F32(s, v) => (n, Dtype::F32, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Out::F64(s, v) => (n, Dtype::F64, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Out::U64(s, v) => (n, Dtype::U64, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        })
        .collect();
    let name = path.display().to_string();
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| SaeError::Safetensors { file: name.clone(), message: format!("tensor `{n}`: {e}") })
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| SaeError::Safetensors { file: name.clone(), message: e.to_string() })?;
    // Write to a temporary name first so a crash never leaves a torn file.
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| SaeError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SaeError::io(path, e))
}
