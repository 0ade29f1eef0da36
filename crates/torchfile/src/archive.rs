//! [`TorchArchive`]: the zip container, its storages and tensor views.

use crate::{
    MAX_BROADCAST_ELEMENTS, MAX_TENSOR_DIMS, Result, StorageDtype, TensorRef, TorchFileError, UnpickleOptions, Value,
    dims, unpickle_with, view_extent,
};
use memmap2::Mmap;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// A `torch.save` zip archive, memory-mapped: its unpickled root object and
/// access to the tensors it references.
pub struct TorchArchive {
    path: PathBuf,
    mmap: Mmap,
    /// storage key → (byte offset, byte length) inside the file.
    storages: HashMap<String, (usize, usize)>,
    /// The unpickled `data.pkl`: what `torch.load` would return, with tensors
    /// as [`Value::Tensor`] references into this archive.
    pub root: Value,
}

impl TorchArchive {
    /// Opens an archive with the default (strict) unpickler.
    pub fn open(path: &Path) -> Result<TorchArchive> {
        TorchArchive::open_with(path, UnpickleOptions::default())
    }

    /// Opens an archive with explicit [`UnpickleOptions`].
    pub fn open_with(path: &Path, opts: UnpickleOptions) -> Result<TorchArchive> {
        let io = |source| TorchFileError::Io { path: path.into(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: checkpoint files are not modified while they are read.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let fail = |message: String| TorchFileError::NotArchive { file: path.display().to_string(), message };
        if mmap.len() >= 2 && mmap[0] == 0x80 && mmap[..].starts_with(&[0x80, 0x02, 0x8a]) {
            return Err(fail("legacy (pre-1.6, non-zip) torch serialization is not supported; re-save the checkpoint with a recent torch or as safetensors".into()));
        }
        let mut zip =
            zip::ZipArchive::new(Cursor::new(&mmap[..])).map_err(|e| fail(format!("not a torch zip archive: {e}")))?;
        let mut pkl = None;
        let mut entries = Vec::new();
        for i in 0..zip.len() {
            let f = zip.by_index_raw(i).map_err(|e| fail(e.to_string()))?;
            let name = f.name().to_string();
            if f.compression() != zip::CompressionMethod::Stored {
                return Err(fail(format!("entry `{name}` is compressed; torch archives store entries uncompressed")));
            }
            let (start, len) = (f.data_start(), f.size());
            if start.checked_add(len).is_none_or(|end| end > mmap.len() as u64) {
                return Err(fail(format!("entry `{name}` extends past the end of the file")));
            }
            let (start, len) = (start as usize, len as usize);
            if name.ends_with("data.pkl") && name.matches('/').count() <= 1 {
                pkl = Some((name[..name.len() - "data.pkl".len()].to_string(), start, len));
            }
            entries.push((name, start, len));
        }
        let (prefix, start, len) = pkl.ok_or_else(|| fail("no data.pkl inside the archive".into()))?;
        let byteorder = format!("{prefix}byteorder");
        if entries.iter().any(|(n, s, l)| *n == byteorder && &mmap[*s..*s + *l] != b"little") {
            return Err(fail("big-endian torch archives are not supported".into()));
        }
        let data_prefix = format!("{prefix}data/");
        let storages = entries
            .iter()
            .filter_map(|(n, s, l)| n.strip_prefix(&data_prefix).map(|k| (k.to_string(), (*s, *l))))
            .collect();
        let root = unpickle_with(&mmap[start..start + len], &path.display().to_string(), opts)?;
        Ok(TorchArchive { path: path.into(), mmap, storages, root })
    }

    /// The file this archive was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor's elements converted to f32, row-major in its shape
    /// (non-contiguous views are gathered). The view the pickle declares is
    /// checked against the storage record in the file first.
    pub fn tensor_f32(&self, t: &TensorRef, name: &str) -> Result<Vec<f32>> {
        let fail = |message: String| TorchFileError::Pickle {
            file: self.path.display().to_string(),
            message: format!("tensor `{name}`: {message}"),
        };
        let &(start, len) = self
            .storages
            .get(&t.storage_key)
            .ok_or_else(|| fail(format!("storage `{}` missing from the archive", t.storage_key)))?;
        let bytes = &self.mmap[start..start + len];
        let es = t.dtype.size();
        let held = bytes.len() / es;
        if t.shape.len() != t.stride.len() {
            return Err(fail("size and stride differ in rank".into()));
        }
        if t.shape.len() > MAX_TENSOR_DIMS {
            return Err(fail(format!(
                "{} dimensions, over the limit of {MAX_TENSOR_DIMS} (MAX_TENSOR_DIMS)",
                t.shape.len()
            )));
        }
        let (numel, last) = view_extent(t.offset, &t.shape, &t.stride).ok_or_else(|| {
            fail(format!(
                "size {}, stride {} and offset {}: its element count or extent overflows",
                dims(&t.shape),
                dims(&t.stride),
                t.offset
            ))
        })?;
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        if last >= held {
            return Err(fail(format!(
                "view reaches element {last} of storage `{}`, which holds {held} elements ({} bytes in the file)",
                t.storage_key,
                bytes.len()
            )));
        }
        if numel > held && numel > MAX_BROADCAST_ELEMENTS {
            return Err(fail(format!(
                "view of {numel} elements repeats elements of a storage holding {held}, more than the {MAX_BROADCAST_ELEMENTS} elements such a view may have (MAX_BROADCAST_ELEMENTS)"
            )));
        }
        let read = |i: usize| -> f32 {
            let b = &bytes[i * es..(i + 1) * es];
            match t.dtype {
                StorageDtype::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
                StorageDtype::F32 => f32::from_le_bytes(b.try_into().unwrap()),
                StorageDtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                StorageDtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                StorageDtype::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f32,
                StorageDtype::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f32,
                StorageDtype::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
                StorageDtype::I8 => b[0] as i8 as f32,
                StorageDtype::U8 | StorageDtype::Bool => b[0] as f32,
            }
        };
        let mut out = Vec::with_capacity(numel);
        let contiguous = {
            let mut expect = 1;
            t.shape.iter().zip(&t.stride).rev().all(|(&n, &s)| {
                let ok = n == 1 || s == expect;
                expect *= n;
                ok
            })
        };
        if contiguous && t.dtype == StorageDtype::F32 {
            out.extend(
                bytes[t.offset * 4..(t.offset + numel) * 4]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        } else if contiguous {
            out.extend((t.offset..t.offset + numel).map(read));
        } else {
            let mut idx = vec![0usize; t.shape.len()];
            for _ in 0..numel {
                out.push(read(t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>()));
                for d in (0..idx.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < t.shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
        }
        Ok(out)
    }
}
