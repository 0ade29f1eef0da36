//! Every tensor of one pretrained coder's file as f32, whatever the container
//! (safetensors, npz, torch.save), taken out by name with its shape checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Result, SaeError};
use crate::st::StFile;

/// Every tensor of one file as f32, whatever the container.
pub(super) struct Tensors {
    file: PathBuf,
    map: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Tensors {
    pub(super) fn safetensors(path: &Path) -> Result<Tensors> {
        let f = StFile::open(path)?;
        let mut map = BTreeMap::new();
        for n in f.names() {
            let shape = f.shape(&n)?;
            let data = f.f32(&n, None)?;
            map.insert(n, (shape, data));
        }
        Ok(Tensors { file: path.into(), map })
    }

    pub(super) fn npz(path: &Path) -> Result<Tensors> {
        let map = crate::format::npz::read_npz(path)?.into_iter().map(|(k, a)| (k, (a.shape, a.data))).collect();
        Ok(Tensors { file: path.into(), map })
    }

    pub(super) fn torch(path: &Path) -> Result<Tensors> {
        use saepipe_torchfile::{TorchArchive, Value as P};
        let a = TorchArchive::open(path).map_err(|e| crate::format::transcoder_pt::torch_error(path, e))?;
        let P::Dict(items) = &a.root else {
            return Err(SaeError::UnsupportedFormat {
                path: path.into(),
                found: "a torch.save file whose top level is not a dict of tensors".into(),
            });
        };
        let mut map = BTreeMap::new();
        for (k, v) in items.iter() {
            if let (P::Str(name), P::Tensor(t)) = (k, v) {
                let data = a.tensor_f32(t, name).map_err(|e| crate::format::transcoder_pt::torch_error(path, e))?;
                map.insert(name.clone(), (t.shape.clone(), data));
            }
        }
        Ok(Tensors { file: path.into(), map })
    }

    pub(super) fn name(&self) -> String {
        self.file.display().to_string()
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(super) fn rename(&mut self, from: &str, to: &str) {
        if let Some(v) = self.map.remove(from) {
            self.map.insert(to.to_string(), v);
        }
    }

    pub(super) fn missing(&self, name: &str) -> SaeError {
        SaeError::MissingTensor {
            file: format!("{} (it holds [{}])", self.name(), self.map.keys().cloned().collect::<Vec<_>>().join(", ")),
            name: name.into(),
        }
    }

    pub(super) fn dims2(&self, name: &str) -> Result<[usize; 2]> {
        let (shape, _) = self.map.get(name).ok_or_else(|| self.missing(name))?;
        match shape[..] {
            [a, b] => Ok([a, b]),
            _ => Err(SaeError::BadShape {
                file: self.name(),
                name: name.into(),
                expected: vec![0, 0],
                found: shape.clone(),
            }),
        }
    }

    pub(super) fn take(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (shape, data) = self.map.remove(name).ok_or_else(|| self.missing(name))?;
        if shape != expected {
            return Err(SaeError::BadShape {
                file: self.name(),
                name: name.into(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        Ok(data)
    }

    pub(super) fn take_any(&mut self, name: &str) -> Result<Vec<f32>> {
        self.map.remove(name).map(|(_, d)| d).ok_or_else(|| self.missing(name))
    }

    /// The stored `[rows, cols]` tensor, transposed to `[cols, rows]`.
    pub(super) fn transposed(&mut self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        Ok(saepipe_core::compute::transpose(&self.take(name, &[rows, cols])?, rows, cols))
    }
}
