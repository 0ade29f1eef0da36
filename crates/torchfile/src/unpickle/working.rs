//! Working values of the unpickler, the budget and arena that bound them, and
//! their conversion into a [`Value`].

use super::globals::Allowed;
use crate::{MAX_CONTAINER_LEN, MAX_DEPTH, MAX_PICKLE_OPS, MAX_VALUE_BYTES, MAX_VALUE_NODES, StorageDtype, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Working value. Containers are shared so the memo sees later mutations, and
/// leaves are shared so a memo reference never copies a string.
#[derive(Clone)]
pub(super) enum W {
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
pub(super) enum Scalar {
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

pub(super) struct Obj {
    pub(super) class: Rc<str>,
    pub(super) args: Vec<W>,
    pub(super) state: W,
}

pub(super) fn leaf(v: Value) -> W {
    match v {
        Value::None => W::Scalar(Scalar::None),
        Value::Bool(b) => W::Scalar(Scalar::Bool(b)),
        Value::Int(i) => W::Scalar(Scalar::Int(i)),
        Value::Float(f) => W::Scalar(Scalar::Float(f)),
        other => W::Leaf(Rc::new(other)),
    }
}

impl W {
    pub(super) fn int(&self) -> Option<i64> {
        match self {
            W::Scalar(Scalar::Int(i)) => Some(*i),
            W::Scalar(Scalar::Bool(b)) => Some(*b as i64),
            _ => None,
        }
    }
    pub(super) fn str(&self) -> Option<&str> {
        match self {
            W::Leaf(v) => v.as_str(),
            _ => None,
        }
    }
    pub(super) fn is_none(&self) -> bool {
        matches!(self, W::Scalar(Scalar::None))
    }
    pub(super) fn is_tensor(&self) -> bool {
        matches!(self, W::Leaf(v) if matches!(**v, Value::Tensor(_)))
    }
    pub(super) fn is_empty_dict(&self) -> bool {
        matches!(self, W::Dict(d) if d.borrow().is_empty())
    }
    /// The items of a tuple or list, copied (and counted as such).
    pub(super) fn items(&self, budget: &mut Budget) -> std::result::Result<Option<Vec<W>>, String> {
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
pub(super) fn brief(w: &W) -> String {
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
pub(super) struct Budget {
    ops: u64,
    bytes: u64,
}

impl Budget {
    pub(super) fn ops(&mut self, n: usize) -> std::result::Result<(), String> {
        self.ops += n as u64;
        if self.ops > MAX_PICKLE_OPS {
            return Err(format!(
                "pickle needs more than {MAX_PICKLE_OPS} operations (opcodes plus container items copied), the limit MAX_PICKLE_OPS"
            ));
        }
        Ok(())
    }
    pub(super) fn bytes(&mut self, n: usize) -> std::result::Result<(), String> {
        self.bytes += n as u64;
        if self.bytes > MAX_VALUE_BYTES {
            return Err(format!(
                "pickle allocates more than {MAX_VALUE_BYTES} bytes of text and data, the limit MAX_VALUE_BYTES"
            ));
        }
        Ok(())
    }
}

pub(super) fn check_len(n: usize, what: &str) -> std::result::Result<(), String> {
    if n > MAX_CONTAINER_LEN {
        return Err(format!(
            "{what} of {n} items is over the limit of {MAX_CONTAINER_LEN} items per container (MAX_CONTAINER_LEN)"
        ));
    }
    Ok(())
}

/// Holds every container made while unpickling and empties them all when
/// dropped. A hostile pickle can nest containers a million deep (a recursive
/// drop would overflow the stack) or make cycles (which would leak); emptying
/// each container while all of them are still held here drops nothing but
/// leaves.
#[derive(Default)]
pub(super) struct Arena(Vec<W>);

impl Arena {
    fn add(&mut self, w: W) -> W {
        self.0.push(w.clone());
        w
    }
    pub(super) fn list(&mut self, items: Vec<W>) -> W {
        self.add(W::List(Rc::new(RefCell::new(items))))
    }
    pub(super) fn tuple(&mut self, items: Vec<W>) -> W {
        self.add(W::Tuple(Rc::new(RefCell::new(items))))
    }
    pub(super) fn dict(&mut self, pairs: Vec<(W, W)>) -> W {
        self.add(W::Dict(Rc::new(RefCell::new(pairs))))
    }
    pub(super) fn object(&mut self, class: &Rc<str>, args: Vec<W>) -> W {
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
                    let parts = o
                        .try_borrow_mut()
                        .map(|mut o| (std::mem::take(&mut o.args), std::mem::replace(&mut o.state, W::Mark)));
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
pub(super) struct Convert {
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
    pub(super) fn value(&mut self, w: &W) -> std::result::Result<Value, String> {
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
                });
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
                return Err(format!(
                    "value has more than {MAX_VALUE_NODES} nodes counted as a tree (a shared object once per reference), the limit MAX_VALUE_NODES"
                ));
            }
            if size.bytes > MAX_VALUE_BYTES {
                return Err(format!(
                    "value has more than {MAX_VALUE_BYTES} bytes of text and data counted as a tree (a shared object once per reference), the limit MAX_VALUE_BYTES"
                ));
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
                Value::Object {
                    class: o.class.to_string(),
                    args: o.args.iter().map(|w| self.build(w)).collect(),
                    state: Arc::new(self.build(&o.state)),
                }
            }
            _ => unreachable!("leaves return above"),
        };
        self.done.insert(key, v.clone());
        v
    }
}
