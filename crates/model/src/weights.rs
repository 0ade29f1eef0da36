//! Reading checkpoint tensors: `model.safetensors` or sharded safetensors
//! (`model.safetensors.index.json`), memory-mapped, converted to f32.

use crate::error::{ModelError, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct TensorFiles {
    files: Vec<(PathBuf, Mmap)>,
    /// tensor name → index into `files`.
    index: HashMap<String, usize>,
}

fn map(path: &Path) -> Result<Mmap> {
    let f = std::fs::File::open(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    // SAFETY: checkpoint files are not modified while a model loads.
    unsafe { Mmap::map(&f) }.map_err(|source| ModelError::Io { path: path.into(), source })
}

impl TensorFiles {
    pub fn open(dir: &Path) -> Result<TensorFiles> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io { path: index_path.clone(), source })?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config { path: index_path.clone(), message: e.to_string() })?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::Config { path: index_path.clone(), message: "missing `weight_map`".into() })?;
            let mut shards: Vec<String> = map.values().filter_map(|s| s.as_str().map(str::to_string)).collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if dir.join("pytorch_model.bin").exists() || dir.join("pytorch_model.bin.index.json").exists() {
            return Err(ModelError::Input(format!(
                "{}: only pytorch_model*.bin weights found; saepipe reads safetensors checkpoints (convert with `safetensors` or use a revision that ships model.safetensors)",
                dir.display()
            )));
        } else {
            return Err(ModelError::Input(format!("{}: no model.safetensors or model.safetensors.index.json", dir.display())));
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for p in paths {
            let m = map(&p)?;
            let st = SafeTensors::deserialize(&m).map_err(|e| ModelError::Safetensors { file: p.display().to_string(), message: e.to_string() })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((p, m));
        }
        Ok(TensorFiles { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The first of `names` that exists, as f32, checked against `shape`.
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        let name = names.iter().find(|n| self.index.contains_key(**n)).ok_or_else(|| ModelError::MissingTensor { file: self.describe(), name: names.join("` or `") })?;
        self.get(name, shape)
    }

    fn describe(&self) -> String {
        self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self.index.get(name).ok_or_else(|| ModelError::MissingTensor { file: self.describe(), name: name.into() })?;
        let (path, mmap) = &self.files[i];
        let file = path.display().to_string();
        let st = SafeTensors::deserialize(mmap).map_err(|e| ModelError::Safetensors { file: file.clone(), message: e.to_string() })?;
        let t = st.tensor(name).map_err(|e| ModelError::Safetensors { file: file.clone(), message: e.to_string() })?;
        if t.shape() != shape {
            return Err(ModelError::BadShape { file, name: name.into(), expected: shape.to_vec(), found: t.shape().to_vec() });
        }
        let data = t.data();
        Ok(match t.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(ModelError::BadDtype { file, name: name.into(), dtype: format!("{other:?}") }),
        })
    }
}
