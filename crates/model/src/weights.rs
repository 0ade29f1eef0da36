//! Reading checkpoint tensors, converted to f32: `model.safetensors`, sharded
//! safetensors (`model.safetensors.index.json`), and PyTorch's
//! `pytorch_model.bin` / sharded `pytorch_model.bin.index.json` through the
//! restricted unpickler in [`crate::pickle`]. Files are memory-mapped; a tensor
//! is only converted when an architecture asks for it.

use crate::error::{ModelError, Result};
use crate::pickle::{TensorRef, TorchArchive, Value};
use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

enum Source {
    Safetensors { path: PathBuf, mmap: Mmap, header_len: usize, meta: Metadata },
    Torch { archive: TorchArchive, tensors: HashMap<String, TensorRef> },
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Safetensors { path, .. } => path,
            Source::Torch { archive, .. } => archive.path(),
        }
    }
    fn names(&self) -> Vec<String> {
        match self {
            Source::Safetensors { meta, .. } => meta.tensors().into_keys().collect(),
            Source::Torch { tensors, .. } => tensors.keys().cloned().collect(),
        }
    }
}

/// The tensors of an HF model directory's checkpoint (one file or several
/// shards, safetensors or PyTorch), memory-mapped and indexed by HF tensor
/// name. A tensor is read and converted to f32 only when asked for.
pub struct TensorFiles {
    sources: Vec<Source>,
    /// tensor name → index into `sources`.
    index: HashMap<String, usize>,
}

fn map(path: &Path) -> Result<Mmap> {
    let f = std::fs::File::open(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    // SAFETY: checkpoint files are not modified while a model loads.
    unsafe { Mmap::map(&f) }.map_err(|source| ModelError::Io { path: path.into(), source })
}

/// The distinct shard files named by an HF `*.index.json`.
fn shards(index_path: &Path) -> Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string(index_path).map_err(|source| ModelError::Io { path: index_path.into(), source })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config { path: index_path.into(), message: format!("invalid JSON: {e}") })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config { path: index_path.into(), message: "missing `weight_map`".into() })?;
    let mut files: Vec<String> = map.values().filter_map(|s| s.as_str().map(str::to_string)).collect();
    files.sort();
    files.dedup();
    let dir = index_path.parent().unwrap_or(Path::new("."));
    for f in &files {
        if f.contains('/') || f.contains('\\') || f.starts_with("..") {
            return Err(ModelError::Config {
                path: index_path.into(),
                message: format!("shard name `{f}` must be a plain file name"),
            });
        }
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

fn open_safetensors(path: PathBuf) -> Result<Source> {
    let mmap = map(&path)?;
    let bad = |e: safetensors::SafeTensorError| ModelError::Safetensors {
        file: path.display().to_string(),
        message: e.to_string(),
    };
    // Full validation once (offsets inside the file), then keep only the header.
    SafeTensors::deserialize(&mmap).map_err(bad)?;
    let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(bad)?;
    Ok(Source::Safetensors { path, mmap, header_len, meta })
}

fn open_torch(path: PathBuf) -> Result<Source> {
    let archive = TorchArchive::open(&path)?;
    let fail = |message: String| ModelError::Pickle { file: path.display().to_string(), message };
    let items = archive.root.as_dict().ok_or_else(|| fail("top-level object is not a state dict".into()))?;
    let mut tensors = HashMap::new();
    for (k, v) in items {
        match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => {
                tensors.insert(name.clone(), t.clone());
            }
            (Value::Str(name), _) => return Err(fail(format!("state dict entry `{name}` is not a tensor"))),
            _ => return Err(fail("state dict has a non-string key".into())),
        }
    }
    Ok(Source::Torch { archive, tensors })
}

/// The weight files of an HF model directory, in the order a load reads them.
pub struct WeightFiles {
    /// The index JSON of a sharded checkpoint.
    pub index: Option<PathBuf>,
    /// Every file holding tensors (one, or the shards the index names).
    pub tensors: Vec<PathBuf>,
    safetensors: bool,
}

impl WeightFiles {
    /// Every file a load reads besides `config.json`: what a cache key of a
    /// stage that loads the model must fingerprint.
    pub fn all(&self) -> Vec<PathBuf> {
        self.index.iter().chain(&self.tensors).cloned().collect()
    }
}

/// Which weight files a load of `dir` uses (safetensors preferred, as
/// `transformers` does): the one list both loading and cache keys rely on.
pub fn weight_files(dir: &Path) -> Result<WeightFiles> {
    let candidates = [
        ("model.safetensors", true, false),
        ("model.safetensors.index.json", true, true),
        ("pytorch_model.bin", false, false),
        ("pytorch_model.bin.index.json", false, true),
    ];
    let Some((name, safetensors, sharded)) = candidates.into_iter().find(|(n, ..)| dir.join(n).is_file()) else {
        return Err(ModelError::Input(format!(
            "{}: no weights found (looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)",
            dir.display()
        )));
    };
    let path = dir.join(name);
    Ok(if sharded {
        WeightFiles { tensors: shards(&path)?, index: Some(path), safetensors }
    } else {
        WeightFiles { index: None, tensors: vec![path], safetensors }
    })
}

impl TensorFiles {
    /// Opens the weights of an HF model directory, preferring safetensors.
    pub fn open(dir: &Path) -> Result<TensorFiles> {
        let files = weight_files(dir)?;
        let open: fn(PathBuf) -> Result<Source> = if files.safetensors { open_safetensors } else { open_torch };
        let paths = files.tensors;
        let mut sources = Vec::new();
        let mut index = HashMap::new();
        for p in paths {
            let s = open(p)?;
            for n in s.names() {
                index.insert(n, sources.len());
            }
            sources.push(s);
        }
        Ok(TensorFiles { sources, index })
    }

    /// Whether any of the files holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Every tensor name in the checkpoint, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The first of `names` that exists, as f32, checked against `shape`.
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        let name = names
            .iter()
            .find(|n| self.index.contains_key(**n))
            .ok_or_else(|| ModelError::MissingTensor { file: self.describe(), name: names.join("` or `") })?;
        self.get(name, shape)
    }

    fn describe(&self) -> String {
        self.sources.iter().map(|s| s.path().display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.sources[*self.index.get(name)?] {
            Source::Safetensors { meta, .. } => meta.info(name).map(|i| i.shape.clone()),
            Source::Torch { tensors, .. } => tensors.get(name).map(|t| t.shape.clone()),
        }
    }

    /// A tensor as f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { file: self.describe(), name: name.into() })?;
        let src = &self.sources[i];
        let file = src.path().display().to_string();
        let found = self.shape(name).unwrap_or_default();
        if found != shape {
            return Err(ModelError::BadShape { file, name: name.into(), expected: shape.to_vec(), found });
        }
        match src {
            Source::Safetensors { mmap, header_len, meta, .. } => {
                let info = meta.info(name).expect("indexed tensor");
                let (a, b) = info.data_offsets;
                let data = &mmap[8 + header_len + a..8 + header_len + b];
                Ok(match info.dtype {
                    Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                    Dtype::F16 => {
                        data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                    }
                    Dtype::BF16 => {
                        data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                    }
                    other => return Err(ModelError::BadDtype { file, name: name.into(), dtype: format!("{other:?}") }),
                })
            }
            Source::Torch { archive, tensors } => {
                let t = &tensors[name];
                use crate::pickle::StorageDtype as D;
                if !matches!(t.dtype, D::F32 | D::F16 | D::BF16 | D::F64) {
                    return Err(ModelError::BadDtype { file, name: name.into(), dtype: format!("{:?}", t.dtype) });
                }
                archive.tensor_f32(t, name)
            }
        }
    }
}
