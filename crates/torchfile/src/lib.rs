//! saepipe-torchfile: a restricted, non-executing reader of PyTorch files
//! (`torch.save` zip archives: `<prefix>/data.pkl` + `<prefix>/data/<storage key>`).
//!
//! The unpickler interprets the pickle opcodes itself and never calls into any
//! code named by the file. By default it only resolves the globals needed to
//! rebuild tensors and plain containers; any other global (`os.system`,
//! `builtins.eval`, …) is rejected with an error naming it. The result is a
//! generic [`Value`] tree (dicts, lists, strings, numbers, tensor references).
//!
//! With [`UnpickleOptions::allow_objects`], instances of unknown classes — such
//! as the config dataclass stored next to the weights in `{cfg, state_dict}`
//! coder files — come back as inert [`Value::Object`]s (class name, constructor
//! arguments and the state BUILD gave them) instead of failing; see
//! [`UnpickleOptions`] for exactly what that mode accepts.
//!
//! # Limits
//!
//! Files are untrusted, so everything the reader spends on one is bounded, and
//! going past a bound is an error that names the file, the limit and what
//! exceeded it (never an abort, a panic or an allocation the file only claims):
//!
//! - [`MAX_PICKLE_OPS`] (10 million) opcodes run plus container items copied;
//! - [`MAX_OPCODE_BYTES`] (256 MiB) read by one opcode; a declared length
//!   beyond the rest of the pickle is an error as well;
//! - [`MAX_CONTAINER_LEN`] (1 million) items in one list, tuple, set or dict;
//! - [`MAX_DEPTH`] (200) levels of nesting in the value, cycles refused;
//! - [`MAX_VALUE_NODES`] (10 million) nodes and [`MAX_VALUE_BYTES`] (256 MiB)
//!   of text and data in the value counted as a tree, and at most
//!   [`MAX_VALUE_BYTES`] of text and data allocated while unpickling;
//! - [`MAX_TENSOR_DIMS`] (64) dimensions per tensor, whose element count and
//!   extent must fit in `usize`; [`TorchArchive::tensor_f32`] also checks the
//!   view against its storage record in the file, and returns at most
//!   [`MAX_BROADCAST_ELEMENTS`] (16 Mi) elements for a view larger than its
//!   storage.
//!
//! An object the pickle references more than once (memo GETs) stays one
//! allocation in the result: [`Value`] containers are `Arc`s, so the value is a
//! DAG as large as the pickle's working set, not its expansion into a tree.
//! Walking it as a tree (as `Debug`, `PartialEq` or a conversion to JSON do)
//! visits shared parts once per reference, which is what [`MAX_VALUE_NODES`],
//! [`MAX_VALUE_BYTES`] and [`MAX_DEPTH`] bound.

#![warn(missing_docs)]

mod archive;
mod limits;
mod unpickle;

pub use archive::TorchArchive;
pub use limits::{
    MAX_BROADCAST_ELEMENTS, MAX_CONTAINER_LEN, MAX_DEPTH, MAX_OPCODE_BYTES, MAX_PICKLE_OPS, MAX_TENSOR_DIMS,
    MAX_VALUE_BYTES, MAX_VALUE_NODES,
};
pub use unpickle::{UnpickleOptions, unpickle, unpickle_with};

use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the reader. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        source: std::io::Error,
    },
    /// The file is not a `torch.save` zip archive this reader understands
    /// (not a zip, legacy serialization, no `data.pkl`, big-endian, …).
    #[error("{file}: {message}")]
    NotArchive {
        /// The file, as given.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The pickle or a tensor inside the archive is malformed or unsupported.
    /// Also the error for going past one of the crate's limits (the message
    /// names the limit).
    #[error("{file}: {message}")]
    Pickle {
        /// The file (or the `source` name given to [`unpickle`]).
        file: String,
        /// What is wrong, naming the tensor or opcode involved.
        message: String,
    },
    /// The pickle references a global this reader refuses to resolve: a
    /// callable outside the tensor-rebuilding allow-list, or (without
    /// [`UnpickleOptions::allow_objects`]) any unknown class.
    #[error("pickle in {file} asks for forbidden global {global}")]
    ForbiddenGlobal {
        /// The file (or the `source` name given to [`unpickle`]).
        file: String,
        /// The global as `module.name`, e.g. `builtins.eval`.
        global: String,
    },
}

/// Result of this crate's readers.
pub type Result<T> = std::result::Result<T, TorchFileError>;

/// Element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    /// `torch.float64` (`DoubleStorage`).
    F64,
    /// `torch.float32` (`FloatStorage`).
    F32,
    /// `torch.float16` (`HalfStorage`).
    F16,
    /// `torch.bfloat16` (`BFloat16Storage`).
    BF16,
    /// `torch.int64` (`LongStorage`).
    I64,
    /// `torch.int32` (`IntStorage`).
    I32,
    /// `torch.int16` (`ShortStorage`).
    I16,
    /// `torch.int8` (`CharStorage`).
    I8,
    /// `torch.uint8` (`ByteStorage`).
    U8,
    /// `torch.bool` (`BoolStorage`), one byte per element.
    Bool,
}

impl StorageDtype {
    fn from_storage_class(name: &str) -> Option<StorageDtype> {
        Some(match name {
            "DoubleStorage" => StorageDtype::F64,
            "FloatStorage" => StorageDtype::F32,
            "HalfStorage" => StorageDtype::F16,
            "BFloat16Storage" => StorageDtype::BF16,
            "LongStorage" => StorageDtype::I64,
            "IntStorage" => StorageDtype::I32,
            "ShortStorage" => StorageDtype::I16,
            "CharStorage" => StorageDtype::I8,
            "ByteStorage" => StorageDtype::U8,
            "BoolStorage" => StorageDtype::Bool,
            _ => return None,
        })
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F64 | StorageDtype::I64 => 8,
            StorageDtype::F32 | StorageDtype::I32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 | StorageDtype::I16 => 2,
            StorageDtype::I8 | StorageDtype::U8 | StorageDtype::Bool => 1,
        }
    }
}

/// A tensor inside a torch archive: a strided view of one storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// Name of the storage's entry under `<prefix>/data/` in the archive.
    pub storage_key: String,
    /// Element type of the storage (and so of the view).
    pub dtype: StorageDtype,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Size of each dimension (torch's `size()`); empty for a scalar.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// The unpickled object tree. Containers are `Arc`s: an object the pickle
/// references more than once is one allocation, shared by every reference.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Python `None`.
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int` (a pickled integer that does not fit in `i64` is an error).
    Int(i64),
    /// Python `float`.
    Float(f64),
    /// Python `str`.
    Str(String),
    /// Python `bytes`.
    Bytes(Vec<u8>),
    /// Python `list`; sets and frozensets also come back as lists.
    List(Arc<[Value]>),
    /// Python `tuple`.
    Tuple(Arc<[Value]>),
    /// Insertion-ordered (dict and OrderedDict).
    Dict(Arc<[(Value, Value)]>),
    /// A tensor (`torch._utils._rebuild_tensor_v2`), not yet read: see
    /// [`TorchArchive::tensor_f32`].
    Tensor(TensorRef),
    /// An allowed non-callable global such as `torch.float32`, as `module.name`
    /// (in object mode also any other class or function referenced as data).
    Global(String),
    /// An instance of a class rebuilt in object mode, never constructed:
    /// `class` is `module.Name`, `args` the arguments `__new__` would have got,
    /// `state` what `BUILD` would have passed to `__setstate__` (usually a dict
    /// of attributes; [`Value::None`] when there was no BUILD).
    Object {
        /// `module.Name` of the class.
        class: String,
        /// Arguments `__new__` (or the reduce call) would have got.
        args: Arc<[Value]>,
        /// What `BUILD` would have passed to `__setstate__`.
        state: Arc<Value>,
    },
}

impl Value {
    /// Looks a string key up in a dict, or an attribute up in an object's
    /// state (a dict, or the `(dict, slots)` pair of classes with `__slots__`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v),
            Value::Object { state, .. } => match state.as_ref() {
                Value::Tuple(parts) if parts.len() == 2 => parts[0].get(key).or_else(|| parts[1].get(key)),
                other => other.get(key),
            },
            _ => None,
        }
    }
    /// The class name of an object.
    pub fn class(&self) -> Option<&str> {
        match self {
            Value::Object { class, .. } => Some(class),
            _ => None,
        }
    }
    /// The text of a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// A [`Value::Float`], or a [`Value::Int`] converted to `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    /// A [`Value::Int`], or a [`Value::Bool`] as 0/1 (Python's `bool` is an `int`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    /// The value of a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The tensor reference of a [`Value::Tensor`].
    pub fn as_tensor(&self) -> Option<&TensorRef> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }
    /// The (key, value) pairs of a [`Value::Dict`], in insertion order.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// `shape` in an error message, shortened.
fn dims(shape: &[usize]) -> String {
    if shape.len() <= 8 { format!("{shape:?}") } else { format!("{:?} (… {} dimensions)", &shape[..8], shape.len()) }
}

/// Element count and last element reached of a strided view, when both fit in
/// `usize` (the last element is `None` for an empty view).
fn view_extent(offset: usize, shape: &[usize], stride: &[usize]) -> Option<(usize, Option<usize>)> {
    let numel = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n))?;
    if numel == 0 {
        return Some((0, None));
    }
    let last = shape
        .iter()
        .zip(stride)
        .try_fold(offset, |a, (&n, &s)| (n - 1).checked_mul(s).and_then(|x| a.checked_add(x)))?;
    Some((numel, Some(last)))
}
