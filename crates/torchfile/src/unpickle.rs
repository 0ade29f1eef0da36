//! The restricted pickle virtual machine: interprets the opcodes itself,
//! resolves globals only through the allow-list in [`globals`], and never runs
//! code named by the file.

mod globals;
mod working;

use self::globals::{Allowed, allowed_global, call};
use self::working::{Arena, Budget, Convert, W, brief, check_len, leaf};
use crate::{MAX_OPCODE_BYTES, Result, TorchFileError, Value};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

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
            return Err(format!(
                "{op} declares {n} bytes, over the limit of {MAX_OPCODE_BYTES} bytes per opcode (MAX_OPCODE_BYTES)"
            ));
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
            return Err(format!(
                "text line of {end} bytes, over the limit of {MAX_OPCODE_BYTES} bytes per opcode (MAX_OPCODE_BYTES)"
            ));
        }
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "non-UTF-8 text in pickle".to_string())
    }
    fn utf8(&mut self, n: u64, op: &str) -> std::result::Result<String, String> {
        std::str::from_utf8(self.payload(n, op)?)
            .map(str::to_string)
            .map_err(|_| "invalid UTF-8 string in pickle".to_string())
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
/// errors. Tensors come back as [`TensorRef`](crate::TensorRef)s into the archive's storages.
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
                let (n, name) = if op == b'U' {
                    (r.u8().map_err(err)?.into(), "SHORT_BINSTRING")
                } else {
                    (r.u32().map_err(err)?.into(), "BINSTRING")
                };
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
                let args = args
                    .items(&mut budget)
                    .map_err(err)?
                    .ok_or_else(|| err("call arguments are not a tuple".into()))?;
                stack.push(call(&f, args, &mut arena, &mut budget).map_err(err)?);
            }
            0x81 | 0x92 => {
                // NEWOBJ: cls.__new__(cls, *args); NEWOBJ_EX adds keyword arguments.
                let kwargs = if op == 0x92 { Some(pop!()) } else { None };
                let args = pop!();
                let cls = pop!();
                let args = args
                    .items(&mut budget)
                    .map_err(err)?
                    .ok_or_else(|| err("NEWOBJ arguments are not a tuple".into()))?;
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
                    t if t.is_tensor()
                        && matches!(&state, W::Tuple(s) if s.borrow().iter().all(|w| w.is_none() || w.is_empty_dict())) =>
                        {}
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
    let file =
        Path::new(source).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| source.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let list = Value::List(
            vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Float(3.5),
                Value::Str("x".into()),
                Value::None,
                Value::Bool(true),
            ]
            .into(),
        );
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
        assert!(
            matches!(unpickle(p, "x").unwrap_err(), TorchFileError::ForbiddenGlobal { global, .. } if global == "os.system")
        );
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
        assert_eq!(
            unpickle_with(p, "x.pt", OBJ).unwrap(),
            Value::Object {
                class: "os.system".into(),
                args: vec![Value::Str("hi".into())].into(),
                state: Arc::new(Value::None)
            }
        );
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
