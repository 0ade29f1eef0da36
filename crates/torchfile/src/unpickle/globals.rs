//! The globals the unpickler may resolve, and what calling them builds.

use super::working::{Arena, Budget, Scalar, W, brief, leaf};
use crate::{MAX_TENSOR_DIMS, StorageDtype, TensorRef, Value, dims, view_extent};

/// Callables and classes the unpickler may resolve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Allowed {
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

pub(super) fn allowed_global(module: &str, name: &str) -> Option<Allowed> {
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
                "float64"
                    | "float32"
                    | "float16"
                    | "bfloat16"
                    | "int64"
                    | "int32"
                    | "int16"
                    | "int8"
                    | "uint8"
                    | "bool"
                    | "float"
                    | "double"
                    | "half"
                    | "long"
                    | "int"
            ) {
                Allowed::TorchDtype
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

pub(super) fn call(f: &W, args: Vec<W>, arena: &mut Arena, budget: &mut Budget) -> std::result::Result<W, String> {
    let W::Global(kind, name) = f else {
        return Err(format!("calling a non-global ({})", brief(f)));
    };
    let mut usizes = |w: &W| -> std::result::Result<Vec<usize>, String> {
        w.items(budget)?
            .ok_or("tensor size/stride is not a tuple")?
            .iter()
            .map(|x| {
                x.int().filter(|&i| i >= 0).map(|i| i as usize).ok_or_else(|| "bad tensor size/stride".to_string())
            })
            .collect()
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
                return Err(format!(
                    "tensor on storage `{key}` has {} dimensions, over the limit of {MAX_TENSOR_DIMS} (MAX_TENSOR_DIMS)",
                    shape.len()
                ));
            }
            let offset = offset.int().filter(|&i| i >= 0).ok_or("bad storage offset")? as usize;
            // Sizes the file only claims: they must at least be computable.
            if view_extent(offset, &shape, &stride)
                .and_then(|(_, last)| last.unwrap_or(0).checked_add(1)?.checked_mul(8))
                .is_none()
            {
                return Err(format!(
                    "tensor on storage `{key}` with size {}, stride {} and offset {offset}: its element count or extent overflows",
                    dims(&shape),
                    dims(&stride)
                ));
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
