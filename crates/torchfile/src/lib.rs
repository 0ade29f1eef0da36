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

use memmap2::Mmap;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// Most operations one unpickle may run: opcodes plus the items copied by
/// opcodes that rebuild containers from others (call arguments, sets,
/// `OrderedDict`, BUILD). Bounds time and the working memory.
pub const MAX_PICKLE_OPS: u64 = 10_000_000;

/// Most bytes one opcode may read (a string, bytes, long integer or text
/// line), whatever length it declares.
pub const MAX_OPCODE_BYTES: usize = 256 << 20;

/// Most items in one list, tuple, set or dict (pairs).
pub const MAX_CONTAINER_LEN: usize = 1_000_000;

/// Most levels of lists, tuples, dicts and objects nested in one another in a
/// value; a cyclic value is refused by this limit too. Bounds the recursion of
/// any walk of a [`Value`].
pub const MAX_DEPTH: usize = 200;

/// Most nodes in a value counted as a tree, a shared object once per
/// reference: bounds every walk of a [`Value`].
pub const MAX_VALUE_NODES: u64 = 10_000_000;

/// Most bytes of text and binary data (strings, bytes, global and class
/// names, tensor storage keys and shapes) in a value counted as a tree, and
/// most such bytes allocated while unpickling.
pub const MAX_VALUE_BYTES: u64 = 256 << 20;

/// Most dimensions of a tensor (most torch operations stop at 64 as well).
pub const MAX_TENSOR_DIMS: usize = 64;

/// Most elements [`TorchArchive::tensor_f32`] returns for a view that has more
/// elements than its storage (a broadcast view with stride 0). Other views are
/// bounded by the file's size.
pub const MAX_BROADCAST_ELEMENTS: usize = 1 << 24;

/// Errors of the reader. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a `torch.save` zip archive this reader understands
    /// (not a zip, legacy serialization, no `data.pkl`, big-endian, …).
    #[error("{file}: {message}")]
    NotArchive { file: String, message: String },
    /// The pickle or a tensor inside the archive is malformed or unsupported.
    #[error("{file}: {message}")]
    Pickle { file: String, message: String },
    #[error("pickle in {file} asks for forbidden global {global}")]
    ForbiddenGlobal { file: String, global: String },
}

pub type Result<T> = std::result::Result<T, TorchFileError>;

/// How permissive the unpickler is. Neither mode ever runs code from the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpickleOptions {
    /// Accept globals outside the tensor/container allow-list as inert names,
    /// and rebuild class instances as [`Value::Object`]: from `NEWOBJ` /
    /// `NEWOBJ_EX` (what `object.__reduce_ex__` emits for protocol ≥ 2), from
    /// `REDUCE` of `copyreg._reconstructor` or `copyreg.__newobj__` (protocols
    /// 0/1), with the state of a following `BUILD` stored as data.
    ///
    /// A plain `REDUCE` of such a global (`os.system('…')`, or a class with a
    /// custom `__reduce__`) is still an error naming the global: a REDUCE is a
    /// function call, and there is no way to tell data-building calls from
    /// harmful ones by name, so rather than turning it into an object that
    /// merely looks like an instance, the file is refused. Nothing is executed
    /// either way; the error keeps the invariant that every `Value::Object`
    /// stands for an instance constructed the way Python's default pickling does.
    pub allow_objects: bool,
}

/// Element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
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
    pub storage_key: String,
    pub dtype: StorageDtype,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// The unpickled object tree. Containers are `Arc`s: an object the pickle
/// references more than once is one allocation, shared by every reference.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Arc<[Value]>),
    Tuple(Arc<[Value]>),
    /// Insertion-ordered (dict and OrderedDict).
    Dict(Arc<[(Value, Value)]>),
    Tensor(TensorRef),
    /// An allowed non-callable global such as `torch.float32`, as `module.name`
    /// (in object mode also any other class or function referenced as data).
    Global(String),
    /// An instance of a class rebuilt in object mode, never constructed:
    /// `class` is `module.Name`, `args` the arguments `__new__` would have got,
    /// `state` what `BUILD` would have passed to `__setstate__` (usually a dict
    /// of attributes; [`Value::None`] when there was no BUILD).
    Object { class: String, args: Arc<[Value]>, state: Arc<Value> },
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
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_tensor(&self) -> Option<&TensorRef> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// Callables and classes the unpickler may resolve.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Allowed {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(StorageDtype),
    /// `torch.float32` and friends: kept as a name.
    TorchDtype,
    /// `torch.device('cpu')` → the string "cpu".
    TorchDevice,
    /// `_codecs.encode(str, 'latin1')`: how protocol 2 pickles bytes.
    CodecsEncode,
    /// `builtins.set` / `frozenset`, rebuilt as lists.
    Set,
    /// Object mode: `copyreg._reconstructor(cls, base, state)`.
    Reconstructor,
    /// Object mode: `copyreg.__newobj__(cls, *args)`.
    NewObj,
    /// Object mode: any other global, kept as its name and never called.
    Inert,
}

fn allowed_global(module: &str, name: &str) -> Option<Allowed> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Allowed::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Allowed::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Allowed::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Allowed::RebuildParameterWithState,
        ("torch", "device") => Allowed::TorchDevice,
        ("_codecs", "encode") => Allowed::CodecsEncode,
        ("builtins" | "__builtin__", "set" | "frozenset") => Allowed::Set,
        ("torch", n) => {
            if let Some(d) = StorageDtype::from_storage_class(n) {
                Allowed::Storage(d)
            } else if matches!(
                n,
                "float64" | "float32" | "float16" | "bfloat16" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool" | "float" | "double" | "half" | "long" | "int"
            ) {
                Allowed::TorchDtype
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// Working value. Containers are shared so the memo sees later mutations, and
/// leaves are shared so a memo reference never copies a string.
#[derive(Clone)]
enum W {
    /// Kept inline: most opcodes push one, and they cost no allocation.
    Scalar(Scalar),
    /// A string, bytes or tensor.
    Leaf(Rc<Value>),
    List(Rc<RefCell<Vec<W>>>),
    /// Never mutated; in a RefCell only so [`Arena`] can empty it.
    Tuple(Rc<RefCell<Vec<W>>>),
    Dict(Rc<RefCell<Vec<(W, W)>>>),
    Global(Allowed, Rc<str>),
    /// The result of a persistent load: (storage key, dtype).
    Storage(Rc<str>, StorageDtype),
    /// Object mode: an instance (shared so BUILD after a memo PUT is seen).
    Object(Rc<RefCell<Obj>>),
    Mark,
}

#[derive(Clone, Copy)]
enum Scalar {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Scalar {
    fn value(self) -> Value {
        match self {
            Scalar::None => Value::None,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::Int(i),
            Scalar::Float(f) => Value::Float(f),
        }
    }
}

struct Obj {
    class: Rc<str>,
    args: Vec<W>,
    state: W,
}

fn leaf(v: Value) -> W {
    match v {
        Value::None => W::Scalar(Scalar::None),
        Value::Bool(b) => W::Scalar(Scalar::Bool(b)),
        Value::Int(i) => W::Scalar(Scalar::Int(i)),
        Value::Float(f) => W::Scalar(Scalar::Float(f)),
        other => W::Leaf(Rc::new(other)),
    }
}

impl W {
    fn int(&self) -> Option<i64> {
        match self {
            W::Scalar(Scalar::Int(i)) => Some(*i),
            W::Scalar(Scalar::Bool(b)) => Some(*b as i64),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            W::Leaf(v) => v.as_str(),
            _ => None,
        }
    }
    fn is_none(&self) -> bool {
        matches!(self, W::Scalar(Scalar::None))
    }
    fn is_tensor(&self) -> bool {
        matches!(self, W::Leaf(v) if matches!(**v, Value::Tensor(_)))
    }
    fn is_empty_dict(&self) -> bool {
        matches!(self, W::Dict(d) if d.borrow().is_empty())
    }
    /// The items of a tuple or list, copied (and counted as such).
    fn items(&self, budget: &mut Budget) -> std::result::Result<Option<Vec<W>>, String> {
        match self {
            W::Tuple(t) | W::List(t) => {
                let t = t.borrow();
                budget.ops(t.len())?;
                Ok(Some(t.clone()))
            }
            _ => Ok(None),
        }
    }
}

/// A short rendering of a working value for error messages. Never a full walk:
/// the value may be cyclic or a DAG with an enormous expansion.
fn brief(w: &W) -> String {
    fn text(s: &str) -> String {
        let mut t: String = s.chars().take(40).collect();
        if t.len() < s.len() {
            t.push('…');
        }
        t
    }
    fn go(w: &W, top: bool) -> String {
        match w {
            W::Scalar(x) => format!("{:?}", x.value()),
            W::Leaf(v) => match &**v {
                Value::Str(s) => format!("'{}'", text(s)),
                Value::Bytes(b) => format!("<{} bytes>", b.len()),
                Value::Tensor(_) => "<tensor>".into(),
                other => format!("{other:?}"),
            },
            W::List(l) | W::Tuple(l) if top => {
                let l = l.borrow();
                let mut parts: Vec<String> = l.iter().take(6).map(|w| go(w, false)).collect();
                if l.len() > 6 {
                    parts.push(format!("… {} items", l.len()));
                }
                let (open, close) = if matches!(w, W::List(_)) { ('[', ']') } else { ('(', ')') };
                format!("{open}{}{close}", parts.join(", "))
            }
            W::List(_) => "[…]".into(),
            W::Tuple(_) => "(…)".into(),
            W::Dict(_) => "{…}".into(),
            W::Global(_, name) => text(name),
            W::Storage(key, _) => format!("<storage {}>", text(key)),
            W::Object(o) => format!("<{} object>", text(&o.borrow().class)),
            W::Mark => "MARK".into(),
        }
    }
    go(w, true)
}

/// Counts work against [`MAX_PICKLE_OPS`] and [`MAX_VALUE_BYTES`] while unpickling.
#[derive(Default)]
struct Budget {
    ops: u64,
    bytes: u64,
}

impl Budget {
    fn ops(&mut self, n: usize) -> std::result::Result<(), String> {
        self.ops += n as u64;
        if self.ops > MAX_PICKLE_OPS {
            return Err(format!("pickle needs more than {MAX_PICKLE_OPS} operations (opcodes plus container items copied), the limit MAX_PICKLE_OPS"));
        }
        Ok(())
    }
    fn bytes(&mut self, n: usize) -> std::result::Result<(), String> {
        self.bytes += n as u64;
        if self.bytes > MAX_VALUE_BYTES {
            return Err(format!("pickle allocates more than {MAX_VALUE_BYTES} bytes of text and data, the limit MAX_VALUE_BYTES"));
        }
        Ok(())
    }
}

fn check_len(n: usize, what: &str) -> std::result::Result<(), String> {
    if n > MAX_CONTAINER_LEN {
        return Err(format!("{what} of {n} items is over the limit of {MAX_CONTAINER_LEN} items per container (MAX_CONTAINER_LEN)"));
    }
    Ok(())
}

/// Holds every container made while unpickling and empties them all when
/// dropped. A hostile pickle can nest containers a million deep (a recursive
/// drop would overflow the stack) or make cycles (which would leak); emptying
/// each container while all of them are still held here drops nothing but
/// leaves.
#[derive(Default)]
struct Arena(Vec<W>);

impl Arena {
    fn add(&mut self, w: W) -> W {
        self.0.push(w.clone());
        w
    }
    fn list(&mut self, items: Vec<W>) -> W {
        self.add(W::List(Rc::new(RefCell::new(items))))
    }
    fn tuple(&mut self, items: Vec<W>) -> W {
        self.add(W::Tuple(Rc::new(RefCell::new(items))))
    }
    fn dict(&mut self, pairs: Vec<(W, W)>) -> W {
        self.add(W::Dict(Rc::new(RefCell::new(pairs))))
    }
    fn object(&mut self, class: &Rc<str>, args: Vec<W>) -> W {
        self.add(W::Object(Rc::new(RefCell::new(Obj { class: class.clone(), args, state: leaf(Value::None) }))))
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for w in &self.0 {
            match w {
                W::List(l) | W::Tuple(l) => {
                    let items = l.try_borrow_mut().map(|mut l| std::mem::take(&mut *l));
                    drop(items);
                }
                W::Dict(d) => {
                    let pairs = d.try_borrow_mut().map(|mut d| std::mem::take(&mut *d));
                    drop(pairs);
                }
                W::Object(o) => {
                    let parts = o.try_borrow_mut().map(|mut o| (std::mem::take(&mut o.args), std::mem::replace(&mut o.state, W::Mark)));
                    drop(parts);
                }
                _ => {}
            }
        }
    }
}

/// Size of a value counted as a tree.
#[derive(Clone, Copy)]
struct Size {
    nodes: u64,
    bytes: u64,
    /// Levels of containers, 0 for a leaf.
    height: usize,
}

/// Converts the working value into a [`Value`]: first counts it as a tree
/// against [`MAX_VALUE_NODES`], [`MAX_VALUE_BYTES`] and [`MAX_DEPTH`], then
/// builds it with one allocation per shared container, so a refused value
/// costs nothing to find out.
#[derive(Default)]
struct Convert {
    /// Container address → size of its tree.
    sizes: HashMap<usize, Size>,
    /// Container address → its value.
    done: HashMap<usize, Value>,
}

/// The address of a container, which identifies it while unpickling.
fn address(w: &W) -> Option<usize> {
    Some(match w {
        W::List(l) | W::Tuple(l) => Rc::as_ptr(l) as *const () as usize,
        W::Dict(d) => Rc::as_ptr(d) as *const () as usize,
        W::Object(o) => Rc::as_ptr(o) as *const () as usize,
        _ => return None,
    })
}

impl Convert {
    fn value(&mut self, w: &W) -> std::result::Result<Value, String> {
        self.size(w, 0)?;
        Ok(self.build(w))
    }

    /// Size of `w` at `depth` containers below the root.
    fn size(&mut self, w: &W, depth: usize) -> std::result::Result<Size, String> {
        let leaf = |bytes: usize| Ok(Size { nodes: 1, bytes: bytes as u64, height: 0 });
        let too_deep = || format!("value nests more than {MAX_DEPTH} levels deep (or is cyclic), the limit MAX_DEPTH");
        let key = match w {
            W::Leaf(v) => {
                return leaf(match &**v {
                    Value::Str(s) => s.len(),
                    Value::Bytes(b) => b.len(),
                    Value::Tensor(t) => t.storage_key.len() + 16 * t.shape.len(),
                    _ => 0,
                })
            }
            W::Scalar(_) => return leaf(0),
            W::Global(_, name) => return leaf(name.len()),
            W::Storage(key, _) => return Err(format!("bare storage `{key}` outside a tensor")),
            W::Mark => return Err("unbalanced MARK".into()),
            _ => address(w).expect("a container"),
        };
        if let Some(&size) = self.sizes.get(&key) {
            // Counted before, maybe higher up: its subtree must fit here too.
            if depth + size.height > MAX_DEPTH {
                return Err(too_deep());
            }
            return Ok(size);
        }
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let mut size = Size { nodes: 1, bytes: 0, height: 1 };
        let mut add = |this: &mut Convert, w: &W| -> std::result::Result<(), String> {
            let child = this.size(w, depth + 1)?;
            size.nodes += child.nodes;
            size.bytes += child.bytes;
            size.height = size.height.max(child.height + 1);
            if size.nodes > MAX_VALUE_NODES {
                return Err(format!("value has more than {MAX_VALUE_NODES} nodes counted as a tree (a shared object once per reference), the limit MAX_VALUE_NODES"));
            }
            if size.bytes > MAX_VALUE_BYTES {
                return Err(format!("value has more than {MAX_VALUE_BYTES} bytes of text and data counted as a tree (a shared object once per reference), the limit MAX_VALUE_BYTES"));
            }
            Ok(())
        };
        match w {
            W::List(l) | W::Tuple(l) => l.borrow().iter().try_for_each(|w| add(self, w))?,
            W::Dict(d) => d.borrow().iter().try_for_each(|(k, v)| add(self, k).and_then(|_| add(self, v)))?,
            W::Object(o) => {
                let o = o.borrow();
                // The class name counts as a leaf.
                add(self, &W::Global(Allowed::Inert, o.class.clone()))?;
                o.args.iter().try_for_each(|w| add(self, w))?;
                add(self, &o.state)?;
            }
            _ => unreachable!("leaves return above"),
        }
        self.sizes.insert(key, size);
        Ok(size)
    }

    /// Builds a value [`Convert::size`] accepted (so finite and not too deep).
    fn build(&mut self, w: &W) -> Value {
        let Some(key) = address(w) else {
            return match w {
                W::Scalar(x) => x.value(),
                W::Leaf(v) => Value::clone(v),
                W::Global(_, name) => Value::Global(name.to_string()),
                _ => unreachable!("refused by size"),
            };
        };
        if let Some(v) = self.done.get(&key) {
            return v.clone();
        }
        let v = match w {
            W::List(l) => Value::List(l.borrow().iter().map(|w| self.build(w)).collect()),
            W::Tuple(t) => Value::Tuple(t.borrow().iter().map(|w| self.build(w)).collect()),
            W::Dict(d) => Value::Dict(d.borrow().iter().map(|(k, v)| (self.build(k), self.build(v))).collect()),
            W::Object(o) => {
                let o = o.borrow();
                Value::Object { class: o.class.to_string(), args: o.args.iter().map(|w| self.build(w)).collect(), state: Arc::new(self.build(&o.state)) }
            }
            _ => unreachable!("leaves return above"),
        };
        self.done.insert(key, v.clone());
        v
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.data.len() - self.pos < n {
            return Err("truncated pickle".into());
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// The `n` bytes an opcode declares, checked before anything is allocated.
    fn payload(&mut self, n: u64, op: &str) -> std::result::Result<&'a [u8], String> {
        if n > MAX_OPCODE_BYTES as u64 {
            return Err(format!("{op} declares {n} bytes, over the limit of {MAX_OPCODE_BYTES} bytes per opcode (MAX_OPCODE_BYTES)"));
        }
        let left = self.data.len() - self.pos;
        if n > left as u64 {
            return Err(format!("{op} declares {n} bytes but only {left} remain in the pickle"));
        }
        self.take(n as usize)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn line(&mut self) -> std::result::Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&c| c == b'\n').ok_or("truncated pickle (missing newline)")?;
        if end > MAX_OPCODE_BYTES {
            return Err(format!("text line of {end} bytes, over the limit of {MAX_OPCODE_BYTES} bytes per opcode (MAX_OPCODE_BYTES)"));
        }
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "non-UTF-8 text in pickle".to_string())
    }
    fn utf8(&mut self, n: u64, op: &str) -> std::result::Result<String, String> {
        std::str::from_utf8(self.payload(n, op)?).map(str::to_string).map_err(|_| "invalid UTF-8 string in pickle".to_string())
    }
}

/// Little-endian two's-complement integer of LONG1/LONG4.
fn long_from_bytes(b: &[u8]) -> std::result::Result<i64, String> {
    if b.is_empty() {
        return Ok(0);
    }
    if b.len() > 8 {
        // Allow sign-extension bytes beyond 8.
        let neg = b[b.len() - 1] & 0x80 != 0;
        if b[8..].iter().any(|&x| x != if neg { 0xff } else { 0 }) {
            return Err("integer does not fit in 64 bits".into());
        }
        return long_from_bytes(&b[..8]);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut buf = [if neg { 0xff } else { 0 }; 8];
    buf[..b.len()].copy_from_slice(b);
    Ok(i64::from_le_bytes(buf))
}

/// Unpickles `data` in the default (strict) mode; `source` names the file in
/// errors. Tensors come back as [`TensorRef`]s into the archive's storages.
pub fn unpickle(data: &[u8], source: &str) -> Result<Value> {
    unpickle_with(data, source, UnpickleOptions::default())
}

/// Unpickles `data` with explicit [`UnpickleOptions`].
pub fn unpickle_with(data: &[u8], source: &str, opts: UnpickleOptions) -> Result<Value> {
    let err = |message: String| TorchFileError::Pickle { file: source.to_string(), message };
    // Declared first so it is dropped last, after everything that refers to it.
    let mut arena = Arena::default();
    let mut budget = Budget::default();
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<W> = Vec::new();
    let mut memo: HashMap<u32, W> = HashMap::new();
    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| err("stack underflow".into()))?
        };
    }
    let pop_mark = |stack: &mut Vec<W>| -> std::result::Result<Vec<W>, String> {
        let m = stack.iter().rposition(|w| matches!(w, W::Mark)).ok_or("MARK missing")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    let pairs = |items: Vec<W>, what: &str| -> std::result::Result<Vec<(W, W)>, String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!("{what} with an odd number of items"));
        }
        let mut it = items.into_iter();
        Ok(std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect())
    };
    loop {
        let op = r.u8().map_err(err)?;
        budget.ops(1).map_err(|m| err(format!("{m} (at byte {})", r.pos - 1)))?;
        match op {
            0x80 => {
                r.u8().map_err(err)?; // PROTO
            }
            0x95 => {
                r.u64().map_err(err)?; // FRAME
            }
            b'.' => break, // STOP
            b'(' => stack.push(W::Mark),
            b'0' => {
                pop!();
            }
            b'1' => {
                pop_mark(&mut stack).map_err(err)?;
            }
            b'2' => {
                let top = stack.last().cloned().ok_or_else(|| err("stack underflow".into()))?;
                stack.push(top);
            }
            b'N' => stack.push(leaf(Value::None)),
            0x88 => stack.push(leaf(Value::Bool(true))),
            0x89 => stack.push(leaf(Value::Bool(false))),
            b'J' => {
                let v = r.u32().map_err(err)? as i32;
                stack.push(leaf(Value::Int(v as i64)));
            }
            b'K' => {
                let v = r.u8().map_err(err)?;
                stack.push(leaf(Value::Int(v as i64)));
            }
            b'M' => {
                let v = r.u16().map_err(err)?;
                stack.push(leaf(Value::Int(v as i64)));
            }
            0x8a => {
                let n = r.u8().map_err(err)?;
                let v = long_from_bytes(r.payload(n.into(), "LONG1").map_err(err)?).map_err(err)?;
                stack.push(leaf(Value::Int(v)));
            }
            0x8b => {
                let n = r.u32().map_err(err)?;
                let v = long_from_bytes(r.payload(n.into(), "LONG4").map_err(err)?).map_err(err)?;
                stack.push(leaf(Value::Int(v)));
            }
            b'I' => {
                let line = r.line().map_err(err)?;
                let v = match line {
                    "01" => Value::Bool(true),
                    "00" => Value::Bool(false),
                    s => Value::Int(s.parse().map_err(|_| err(format!("bad INT `{s}`")))?),
                };
                stack.push(leaf(v));
            }
            b'L' => {
                let line = r.line().map_err(err)?;
                let v = line.trim_end_matches('L').parse().map_err(|_| err(format!("bad LONG `{line}`")))?;
                stack.push(leaf(Value::Int(v)));
            }
            b'G' => {
                let b = r.take(8).map_err(err)?;
                stack.push(leaf(Value::Float(f64::from_be_bytes(b.try_into().unwrap()))));
            }
            b'F' => {
                let line = r.line().map_err(err)?;
                stack.push(leaf(Value::Float(line.parse().map_err(|_| err(format!("bad FLOAT `{line}`")))?)));
            }
            0x8c | b'X' | 0x8d => {
                let (n, name) = match op {
                    0x8c => (r.u8().map_err(err)?.into(), "SHORT_BINUNICODE"),
                    b'X' => (r.u32().map_err(err)?.into(), "BINUNICODE"),
                    _ => (r.u64().map_err(err)?, "BINUNICODE8"),
                };
                let s = r.utf8(n, name).map_err(err)?;
                budget.bytes(s.len()).map_err(err)?;
                stack.push(leaf(Value::Str(s)));
            }
            b'U' | b'T' => {
                // SHORT_BINSTRING / BINSTRING (Python 2 str): decoded as latin-1/ASCII text.
                let (n, name) = if op == b'U' { (r.u8().map_err(err)?.into(), "SHORT_BINSTRING") } else { (r.u32().map_err(err)?.into(), "BINSTRING") };
                let b = r.payload(n, name).map_err(err)?;
                budget.bytes(2 * b.len()).map_err(err)?;
                stack.push(leaf(Value::Str(b.iter().map(|&c| c as char).collect())));
            }
            b'C' | b'B' | 0x8e => {
                let (n, name) = match op {
                    b'C' => (r.u8().map_err(err)?.into(), "SHORT_BINBYTES"),
                    b'B' => (r.u32().map_err(err)?.into(), "BINBYTES"),
                    _ => (r.u64().map_err(err)?, "BINBYTES8"),
                };
                let b = r.payload(n, name).map_err(err)?;
                budget.bytes(b.len()).map_err(err)?;
                stack.push(leaf(Value::Bytes(b.to_vec())));
            }
            b'}' => stack.push(arena.dict(Vec::new())),
            b']' | 0x8f => stack.push(arena.list(Vec::new())), // EMPTY_SET kept as a list
            b')' => stack.push(arena.tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack).map_err(err)?;
                check_len(items.len(), "tuple").map_err(err)?;
                stack.push(arena.tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(err("stack underflow".into()));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(arena.tuple(items));
            }
            b'l' | 0x91 => {
                // LIST, FROZENSET
                let items = pop_mark(&mut stack).map_err(err)?;
                check_len(items.len(), "list").map_err(err)?;
                stack.push(arena.list(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack).map_err(err)?;
                let items = pairs(items, "DICT").map_err(err)?;
                check_len(items.len(), "dict").map_err(err)?;
                stack.push(arena.dict(items));
            }
            b'a' => {
                let v = pop!();
                match stack.last() {
                    Some(W::List(l)) => {
                        let mut l = l.borrow_mut();
                        check_len(l.len() + 1, "list").map_err(err)?;
                        l.push(v);
                    }
                    _ => return Err(err("APPEND to a non-list".into())),
                }
            }
            b'e' | 0x90 => {
                // APPENDS, ADDITEMS
                let items = pop_mark(&mut stack).map_err(err)?;
                match stack.last() {
                    Some(W::List(l)) => {
                        let mut l = l.borrow_mut();
                        check_len(l.len() + items.len(), "list").map_err(err)?;
                        l.extend(items);
                    }
                    _ => return Err(err("APPENDS to a non-list".into())),
                }
            }
            b's' | b'u' => {
                // SETITEM, SETITEMS
                let items = if op == b's' {
                    let v = pop!();
                    let k = pop!();
                    vec![(k, v)]
                } else {
                    let items = pop_mark(&mut stack).map_err(err)?;
                    pairs(items, "SETITEMS").map_err(err)?
                };
                match stack.last() {
                    Some(W::Dict(d)) => {
                        let mut d = d.borrow_mut();
                        check_len(d.len() + items.len(), "dict").map_err(err)?;
                        d.extend(items);
                    }
                    _ => return Err(err(format!("{} on a non-dict", if op == b's' { "SETITEM" } else { "SETITEMS" }))),
                }
            }
            b'q' | b'r' | 0x94 | b'p' => {
                let i = match op {
                    b'q' => r.u8().map_err(err)?.into(),
                    b'r' => r.u32().map_err(err)?,
                    0x94 => memo.len() as u32,
                    _ => r.line().map_err(err)?.parse().map_err(|_| err("bad PUT index".into()))?,
                };
                memo.insert(i, stack.last().cloned().ok_or_else(|| err("stack underflow".into()))?);
            }
            b'h' | b'j' | b'g' => {
                let i = match op {
                    b'h' => r.u8().map_err(err)?.into(),
                    b'j' => r.u32().map_err(err)?,
                    _ => r.line().map_err(err)?.parse().map_err(|_| err("bad GET index".into()))?,
                };
                stack.push(memo.get(&i).cloned().ok_or_else(|| err(format!("memo entry {i} missing")))?);
            }
            b'c' => {
                let module = r.line().map_err(err)?;
                let name = r.line().map_err(err)?;
                budget.bytes(module.len() + name.len()).map_err(err)?;
                stack.push(resolve(module, name, source, opts)?);
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                match (module.str(), name.str()) {
                    (Some(m), Some(n)) => {
                        // The strings may be memoized and used again and again.
                        budget.bytes(m.len() + n.len()).map_err(err)?;
                        stack.push(resolve(m, n, source, opts)?);
                    }
                    _ => return Err(err("STACK_GLOBAL needs two strings".into())),
                }
            }
            b'Q' => {
                // BINPERSID: torch's ('storage', storage_type, key, location, numel).
                let pid = pop!();
                stack.push(persistent_load(&pid, &mut budget).map_err(err)?);
            }
            b'R' => {
                // REDUCE: call an allowed global with an argument tuple.
                let args = pop!();
                let f = pop!();
                let args = args.items(&mut budget).map_err(err)?.ok_or_else(|| err("call arguments are not a tuple".into()))?;
                stack.push(call(&f, args, &mut arena, &mut budget).map_err(err)?);
            }
            0x81 | 0x92 => {
                // NEWOBJ: cls.__new__(cls, *args); NEWOBJ_EX adds keyword arguments.
                let kwargs = if op == 0x92 { Some(pop!()) } else { None };
                let args = pop!();
                let cls = pop!();
                let args = args.items(&mut budget).map_err(err)?.ok_or_else(|| err("NEWOBJ arguments are not a tuple".into()))?;
                if kwargs.is_some_and(|kw| !kw.is_empty_dict()) {
                    return Err(err("NEWOBJ_EX with keyword arguments is not supported".into()));
                }
                match &cls {
                    W::Global(Allowed::Inert, name) => stack.push(arena.object(name, args)),
                    // Allowed classes (OrderedDict, …) built the same way as a call.
                    W::Global(..) => stack.push(call(&cls, args, &mut arena, &mut budget).map_err(err)?),
                    _ => return Err(err("NEWOBJ of a non-class".into())),
                }
            }
            b'b' => {
                // BUILD: no __setstate__ code runs; objects keep their state as data,
                // everything else accepts only trivial states.
                let state = pop!();
                match stack.last().ok_or_else(|| err("stack underflow".into()))? {
                    W::Object(o) => {
                        let mut o = o.borrow_mut();
                        match (&o.state, &state) {
                            // The same dict again adds nothing.
                            (W::Dict(old), W::Dict(new)) if Rc::ptr_eq(old, new) => {}
                            // A second BUILD of a dict state adds attributes, as setattr would.
                            (W::Dict(old), W::Dict(new)) => {
                                let new = new.borrow();
                                budget.ops(new.len()).map_err(err)?;
                                let mut old = old.borrow_mut();
                                check_len(old.len() + new.len(), "object state").map_err(err)?;
                                old.extend(new.iter().cloned());
                            }
                            _ => o.state = state,
                        }
                    }
                    _ if state.is_none() => {}
                    // A dict subclass's state is its attributes (e.g. a state dict's
                    // `_metadata`), not items: dropped.
                    W::Dict(_) if matches!(state, W::Dict(_)) => {}
                    t if t.is_tensor() && state.is_empty_dict() => {}
                    t if t.is_tensor() && matches!(&state, W::Tuple(s) if s.borrow().iter().all(|w| w.is_none() || w.is_empty_dict())) => {}
                    _ => return Err(err("BUILD with a non-trivial object state is not supported".into())),
                }
            }
            other => return Err(err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", r.pos - 1))),
        }
    }
    let top = stack.pop().ok_or_else(|| err("empty pickle".into()))?;
    Convert::default().value(&top).map_err(err)
}

fn resolve(module: &str, name: &str, source: &str, opts: UnpickleOptions) -> Result<W> {
    let file = Path::new(source).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| source.to_string());
    let global = format!("{module}.{name}");
    if let Some(a) = allowed_global(module, name) {
        return Ok(W::Global(a, global.into()));
    }
    if !opts.allow_objects {
        return Err(TorchFileError::ForbiddenGlobal { file, global });
    }
    // Object mode: a name is only ever data here. `call` refuses Inert globals,
    // so resolving one cannot lead to running it.
    let kind = match (module, name) {
        ("copyreg" | "copy_reg", "_reconstructor") => Allowed::Reconstructor,
        ("copyreg" | "copy_reg", "__newobj__") => Allowed::NewObj,
        _ => Allowed::Inert,
    };
    Ok(W::Global(kind, global.into()))
}

fn persistent_load(pid: &W, budget: &mut Budget) -> std::result::Result<W, String> {
    let items = pid.items(budget)?.ok_or("persistent id is not a tuple")?;
    if let [kind, W::Global(Allowed::Storage(dtype), _), key, _location, _numel] = items.as_slice()
        && let (Some("storage"), Some(key)) = (kind.str(), key.str())
    {
        budget.bytes(key.len())?;
        return Ok(W::Storage(key.into(), *dtype));
    }
    Err(format!("unsupported persistent id {}", brief(pid)))
}

/// `shape` in an error message, shortened.
fn dims(shape: &[usize]) -> String {
    if shape.len() <= 8 {
        format!("{shape:?}")
    } else {
        format!("{:?} (… {} dimensions)", &shape[..8], shape.len())
    }
}

/// Element count and last element reached of a strided view, when both fit in
/// `usize` (the last element is `None` for an empty view).
fn view_extent(offset: usize, shape: &[usize], stride: &[usize]) -> Option<(usize, Option<usize>)> {
    let numel = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n))?;
    if numel == 0 {
        return Some((0, None));
    }
    let last = shape.iter().zip(stride).try_fold(offset, |a, (&n, &s)| (n - 1).checked_mul(s).and_then(|x| a.checked_add(x)))?;
    Some((numel, Some(last)))
}

fn call(f: &W, args: Vec<W>, arena: &mut Arena, budget: &mut Budget) -> std::result::Result<W, String> {
    let W::Global(kind, name) = f else {
        return Err(format!("calling a non-global ({})", brief(f)));
    };
    let mut usizes = |w: &W| -> std::result::Result<Vec<usize>, String> {
        w.items(budget)?.ok_or("tensor size/stride is not a tuple")?.iter().map(|x| x.int().filter(|&i| i >= 0).map(|i| i as usize).ok_or_else(|| "bad tensor size/stride".to_string())).collect()
    };
    match kind {
        Allowed::OrderedDict => {
            let mut d = Vec::new();
            if let Some(init) = args.first() {
                // OrderedDict([(k, v), ...])
                for pair in init.items(budget)?.ok_or("OrderedDict argument is not a list")? {
                    match pair.items(budget)?.as_deref() {
                        Some([k, v]) => d.push((k.clone(), v.clone())),
                        _ => return Err("OrderedDict item is not a pair".into()),
                    }
                }
            }
            Ok(arena.dict(d))
        }
        Allowed::RebuildTensorV2 => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err(format!("{name} called with {} arguments", args.len()));
            };
            let W::Storage(key, dtype) = storage else {
                return Err(format!("{name}: first argument is not a storage"));
            };
            let shape = usizes(size)?;
            let stride = usizes(stride)?;
            if shape.len() != stride.len() {
                return Err(format!("{name}: size and stride differ in rank"));
            }
            if shape.len() > MAX_TENSOR_DIMS {
                return Err(format!("tensor on storage `{key}` has {} dimensions, over the limit of {MAX_TENSOR_DIMS} (MAX_TENSOR_DIMS)", shape.len()));
            }
            let offset = offset.int().filter(|&i| i >= 0).ok_or("bad storage offset")? as usize;
            // Sizes the file only claims: they must at least be computable.
            if view_extent(offset, &shape, &stride).and_then(|(_, last)| last.unwrap_or(0).checked_add(1)?.checked_mul(8)).is_none() {
                return Err(format!("tensor on storage `{key}` with size {}, stride {} and offset {offset}: its element count or extent overflows", dims(&shape), dims(&stride)));
            }
            budget.bytes(key.len() + 16 * shape.len())?;
            Ok(leaf(Value::Tensor(TensorRef { storage_key: key.to_string(), dtype: *dtype, offset, shape, stride })))
        }
        Allowed::RebuildParameter | Allowed::RebuildParameterWithState => match args.first() {
            Some(t) if t.is_tensor() => Ok(t.clone()),
            _ => Err(format!("{name}: first argument is not a tensor")),
        },
        Allowed::TorchDevice => {
            let device = match args.as_slice() {
                [s] => s.str().map(str::to_string),
                [s, i] => match (s.str(), i) {
                    (Some(s), W::Scalar(Scalar::None)) => Some(s.to_string()),
                    // torch.device('cuda', 0) → "cuda:0"
                    (Some(s), W::Scalar(Scalar::Int(i))) => Some(format!("{s}:{i}")),
                    _ => None,
                },
                _ => None,
            };
            let device = device.ok_or("torch.device needs a string")?;
            budget.bytes(device.len())?;
            Ok(leaf(Value::Str(device)))
        }
        Allowed::CodecsEncode => match args.first().and_then(W::str) {
            Some(s) => {
                budget.bytes(s.len())?;
                Ok(leaf(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())))
            }
            None => Err("_codecs.encode needs a string".into()),
        },
        Allowed::Set => {
            let items = match args.first() {
                Some(w) => w.items(budget)?.unwrap_or_default(),
                None => Vec::new(),
            };
            Ok(arena.list(items))
        }
        Allowed::Reconstructor => match args.as_slice() {
            // copyreg._reconstructor(cls, base, state): `state` is the value
            // handed to base.__init__ for builtin bases; kept as the argument.
            [W::Global(Allowed::Inert, cls), W::Global(..), state] => {
                let args = if state.is_none() { Vec::new() } else { vec![state.clone()] };
                Ok(arena.object(cls, args))
            }
            _ => Err(format!("{name}: expected (class, base, state) arguments")),
        },
        Allowed::NewObj => match args.split_first() {
            Some((W::Global(Allowed::Inert, cls), rest)) => Ok(arena.object(cls, rest.to_vec())),
            _ => Err(format!("{name}: first argument is not a class")),
        },
        Allowed::Inert => Err(format!(
            "REDUCE calls `{name}`, which this reader never does (object mode rebuilds class instances only from NEWOBJ and copyreg constructors)"
        )),
        Allowed::Storage(_) | Allowed::TorchDtype => Err(format!("{name} is not callable here")),
    }
}


/// A `torch.save` zip archive, memory-mapped: its unpickled root object and
/// access to the tensors it references.
pub struct TorchArchive {
    path: PathBuf,
    mmap: Mmap,
    /// storage key → (byte offset, byte length) inside the file.
    storages: HashMap<String, (usize, usize)>,
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
        let mut zip = zip::ZipArchive::new(Cursor::new(&mmap[..])).map_err(|e| fail(format!("not a torch zip archive: {e}")))?;
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
        let storages = entries.iter().filter_map(|(n, s, l)| n.strip_prefix(&data_prefix).map(|k| (k.to_string(), (*s, *l)))).collect();
        let root = unpickle_with(&mmap[start..start + len], &path.display().to_string(), opts)?;
        Ok(TorchArchive { path: path.into(), mmap, storages, root })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor's elements converted to f32, row-major in its shape
    /// (non-contiguous views are gathered). The view the pickle declares is
    /// checked against the storage record in the file first.
    pub fn tensor_f32(&self, t: &TensorRef, name: &str) -> Result<Vec<f32>> {
        let fail = |message: String| TorchFileError::Pickle { file: self.path.display().to_string(), message: format!("tensor `{name}`: {message}") };
        let &(start, len) = self.storages.get(&t.storage_key).ok_or_else(|| fail(format!("storage `{}` missing from the archive", t.storage_key)))?;
        let bytes = &self.mmap[start..start + len];
        let es = t.dtype.size();
        let held = bytes.len() / es;
        if t.shape.len() != t.stride.len() {
            return Err(fail("size and stride differ in rank".into()));
        }
        if t.shape.len() > MAX_TENSOR_DIMS {
            return Err(fail(format!("{} dimensions, over the limit of {MAX_TENSOR_DIMS} (MAX_TENSOR_DIMS)", t.shape.len())));
        }
        let (numel, last) = view_extent(t.offset, &t.shape, &t.stride)
            .ok_or_else(|| fail(format!("size {}, stride {} and offset {}: its element count or extent overflows", dims(&t.shape), dims(&t.stride), t.offset)))?;
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        if last >= held {
            return Err(fail(format!("view reaches element {last} of storage `{}`, which holds {held} elements ({} bytes in the file)", t.storage_key, bytes.len())));
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
            out.extend(bytes[t.offset * 4..(t.offset + numel) * 4].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_global_is_named_and_never_called() {
        // protocol 2: GLOBAL 'os system', ('echo hi',), REDUCE, STOP
        let p = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        let e = unpickle(p, "dir/pytorch_model.bin").unwrap_err().to_string();
        assert_eq!(e, "pickle in pytorch_model.bin asks for forbidden global os.system");
        let p = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.";
        let e = unpickle(p, "x.pt").unwrap_err().to_string();
        assert!(e.contains("forbidden global builtins.eval"), "{e}");
    }

    #[test]
    fn plain_containers_and_shared_memo() {
        // {'a': [1, -2, 3.5, 'x', None, True], 'b': <same list>} with the list
        // memoized while still empty, then filled: the memo must see the appends.
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b']', b'q', 1, b'(', b'K', 1, b'J'];
        p.extend((-2i32).to_le_bytes());
        p.push(b'G');
        p.extend(3.5f64.to_be_bytes());
        p.extend([b'X', 1, 0, 0, 0, b'x', b'N', 0x88, b'e', b'X', 1, 0, 0, 0, b'b', b'h', 1, b'u', b'.']);
        let v = unpickle(&p, "t").unwrap();
        let list = Value::List(vec![Value::Int(1), Value::Int(-2), Value::Float(3.5), Value::Str("x".into()), Value::None, Value::Bool(true)].into());
        assert_eq!(v.get("a"), Some(&list));
        assert_eq!(v.get("b"), Some(&list));
        // One list, referenced twice: not copied.
        let (Some(Value::List(a)), Some(Value::List(b))) = (v.get("a"), v.get("b")) else { unreachable!() };
        assert!(Arc::ptr_eq(a, b));
    }

    const OBJ: UnpickleOptions = UnpickleOptions { allow_objects: true };

    /// `pickle.dumps({"a": c, "b": c}, protocol)` of a dataclass instance
    /// `cfgmod.Cfg(d_in=4, hook="blocks.0.hook_x", dtype=torch.float32)`.
    const DATACLASS_P2: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01ccfgmod\nCfg\nq\x02)\x81q\x03}q\x04(X\x04\x00\x00\x00d_inq\x05K\x04X\x04\x00\x00\x00hookq\x06X\x0f\x00\x00\x00blocks.0.hook_xq\x07X\x05\x00\x00\x00dtypeq\x08ctorch\nfloat32\nq\tubX\x01\x00\x00\x00bq\nh\x03u.";
    const DATACLASS_P1: &[u8] = b"}q\x00(X\x01\x00\x00\x00aq\x01ccopy_reg\n_reconstructor\nq\x02(ccfgmod\nCfg\nq\x03c__builtin__\nobject\nq\x04Ntq\x05Rq\x06}q\x07(X\x04\x00\x00\x00d_inq\x08K\x04X\x04\x00\x00\x00hookq\tX\x0f\x00\x00\x00blocks.0.hook_xq\nX\x05\x00\x00\x00dtypeq\x0bctorch\nfloat32\nq\x0cubX\x01\x00\x00\x00bq\rh\x06u.";

    #[test]
    fn default_mode_rejects_unknown_classes_by_name() {
        let e = unpickle(DATACLASS_P2, "cfg.pt").unwrap_err().to_string();
        assert_eq!(e, "pickle in cfg.pt asks for forbidden global cfgmod.Cfg");
        let e = unpickle(DATACLASS_P1, "cfg.pt").unwrap_err().to_string();
        assert!(e.ends_with("forbidden global copy_reg._reconstructor"), "{e}");
        let p = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        assert!(matches!(unpickle(p, "x").unwrap_err(), TorchFileError::ForbiddenGlobal { global, .. } if global == "os.system"));
    }

    #[test]
    fn object_mode_rebuilds_dataclasses_as_inert_objects() {
        for (proto, bytes) in [(2, DATACLASS_P2), (1, DATACLASS_P1)] {
            let v = unpickle_with(bytes, "cfg.pt", OBJ).unwrap();
            let a = v.get("a").unwrap();
            assert_eq!(a.class(), Some("cfgmod.Cfg"), "protocol {proto}");
            assert_eq!(a.get("d_in"), Some(&Value::Int(4)));
            assert_eq!(a.get("hook").and_then(Value::as_str), Some("blocks.0.hook_x"));
            assert_eq!(a.get("dtype"), Some(&Value::Global("torch.float32".into())));
            // The memoized instance is the same object, BUILD state included.
            assert_eq!(v.get("b"), Some(a));
            let Value::Object { args, state, .. } = a else { unreachable!() };
            assert!(args.is_empty());
            let Some(Value::Object { state: b_state, .. }) = v.get("b") else { unreachable!() };
            assert!(Arc::ptr_eq(state, b_state));
        }
    }

    #[test]
    fn object_mode_never_calls_anything() {
        // os.system('echo hi') through REDUCE: refused, naming the global.
        // (Nothing could run anyway: no code path calls into Python.)
        let p = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        let e = unpickle_with(p, "evil.pt", OBJ).unwrap_err().to_string();
        assert!(e.starts_with("evil.pt: REDUCE calls `os.system`, which this reader never does"), "{e}");
        // builtins.eval('…') through STACK_GLOBAL + REDUCE, protocol 4.
        let p = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x94\x85\x94R\x94.";
        let e = unpickle_with(p, "evil.pt", OBJ).unwrap_err().to_string();
        assert!(e.contains("REDUCE calls `builtins.eval`"), "{e}");
        // A class with a custom __reduce__ (cls, args) is a call too: refused.
        let p = b"\x80\x02cenum_mod\nColor\nK\x01\x85R.";
        let e = unpickle_with(p, "x.pt", OBJ).unwrap_err().to_string();
        assert!(e.contains("REDUCE calls `enum_mod.Color`"), "{e}");
        // A bare reference to a function is only a name.
        let p = b"\x80\x02cos\nsystem\n.";
        assert_eq!(unpickle_with(p, "x.pt", OBJ).unwrap(), Value::Global("os.system".into()));
        // NEWOBJ of a function gives an inert object with the arguments as data,
        // which is what it is: Python would call os.system.__new__, not os.system.
        let p = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00hi\x85\x81.";
        assert_eq!(unpickle_with(p, "x.pt", OBJ).unwrap(), Value::Object { class: "os.system".into(), args: vec![Value::Str("hi".into())].into(), state: Arc::new(Value::None) });
    }

    #[test]
    fn torch_devices_and_dtypes_are_plain_values() {
        // {'d': torch.device('cuda', 0), 'e': torch.device('cpu'), 't': torch.bfloat16}
        let p = b"\x80\x02}(X\x01\x00\x00\x00dctorch\ndevice\nX\x04\x00\x00\x00cudaK\x00\x86RX\x01\x00\x00\x00ectorch\ndevice\nX\x03\x00\x00\x00cpu\x85RX\x01\x00\x00\x00tctorch\nbfloat16\nu.";
        for opts in [UnpickleOptions::default(), OBJ] {
            let v = unpickle_with(p, "x", opts).unwrap();
            assert_eq!(v.get("d").and_then(Value::as_str), Some("cuda:0"));
            assert_eq!(v.get("e").and_then(Value::as_str), Some("cpu"));
            assert_eq!(v.get("t"), Some(&Value::Global("torch.bfloat16".into())));
        }
    }

    #[test]
    fn long_integers() {
        assert_eq!(long_from_bytes(&[0xff]).unwrap(), -1);
        assert_eq!(long_from_bytes(&[0x00, 0x01]).unwrap(), 256);
        assert_eq!(long_from_bytes(&[0x00, 0x00, 0x00, 0x00, 0x01]).unwrap(), 1 << 32);
        assert!(long_from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }
}
