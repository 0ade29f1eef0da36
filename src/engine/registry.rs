//! [`OpRegistry`]: the stage kinds a pipeline may use, by name.
//!
//! The engine never names a stage kind itself: the binary builds the registry
//! from `ops` and hands it to loading and execution; tests build one of fake
//! ops.

use super::op::Op;

/// The ops available to pipelines, in the order `saepipe ops` lists them.
#[derive(Clone, Default)]
pub struct OpRegistry {
    ops: Vec<&'static dyn Op>,
}

/// A stage kind the registry does not know; says the closest name when one is
/// a plausible typo.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown op `{name}`{hint}")]
pub struct UnknownOp {
    /// The name that was asked for.
    pub name: String,
    /// ` (did you mean `x`?)`, or empty.
    pub hint: String,
}

impl OpRegistry {
    /// A registry of `ops`.
    ///
    /// # Panics
    /// If two ops share a name (a programming error: a name must select one op).
    pub fn new(ops: impl IntoIterator<Item = &'static dyn Op>) -> Self {
        let ops: Vec<&'static dyn Op> = ops.into_iter().collect();
        for (i, op) in ops.iter().enumerate() {
            assert!(!ops[..i].iter().any(|o| o.name() == op.name()), "two ops are named `{}`", op.name());
        }
        OpRegistry { ops }
    }

    /// The op named `name`.
    pub fn find(&self, name: &str) -> Option<&'static dyn Op> {
        self.ops.iter().copied().find(|op| op.name() == name)
    }

    /// The op named `name`, or an error that suggests the closest visible name.
    pub fn get(&self, name: &str) -> Result<&'static dyn Op, UnknownOp> {
        self.find(name).ok_or_else(|| UnknownOp {
            name: name.to_string(),
            hint: saepipe_core::suggest::hint(name, self.visible().map(|o| o.name())),
        })
    }

    /// Every op, hidden ones included.
    pub fn iter(&self) -> impl Iterator<Item = &'static dyn Op> + '_ {
        self.ops.iter().copied()
    }

    /// The ops users see (`saepipe ops`, did-you-mean): all but the hidden ones.
    pub fn visible(&self) -> impl Iterator<Item = &'static dyn Op> + '_ {
        self.iter().filter(|o| !o.hidden())
    }

    /// How many ops, hidden ones included.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the registry has no op.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl std::fmt::Debug for OpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ops.iter().map(|o| o.name())).finish()
    }
}

impl<'a> IntoIterator for &'a OpRegistry {
    type Item = &'static dyn Op;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, &'static dyn Op>>;
    fn into_iter(self) -> Self::IntoIter {
        self.ops.iter().copied()
    }
}

impl IntoIterator for OpRegistry {
    type Item = &'static dyn Op;
    type IntoIter = std::vec::IntoIter<&'static dyn Op>;
    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StageCtx;
    use anyhow::Result;
    use serde_json::Value;

    struct Named(&'static str, bool);
    impl Op for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "test op"
        }
        fn params(&self) -> Vec<crate::engine::ParamSpec> {
            Vec::new()
        }
        fn hidden(&self) -> bool {
            self.1
        }
        fn run(&self, _ctx: &mut StageCtx) -> Result<Value> {
            Ok(Value::Null)
        }
    }

    static TRAIN: Named = Named("train_sae", false);
    static PLOT: Named = Named("plot", false);
    static SECRET: Named = Named("plots", true);

    #[test]
    fn finds_by_name_and_suggests_only_visible_ops() {
        let r = OpRegistry::new([&TRAIN as &dyn Op, &PLOT, &SECRET]);
        assert_eq!(r.find("plot").map(|o| o.name()), Some("plot"));
        assert_eq!(r.find("plots").map(|o| o.name()), Some("plots"));
        assert_eq!(r.get("trian_sae").unwrap_err().to_string(), "unknown op `trian_sae` (did you mean `train_sae`?)");
        assert_eq!(r.get("evaluate").unwrap_err().to_string(), "unknown op `evaluate`");
        assert_eq!(r.visible().map(|o| o.name()).collect::<Vec<_>>(), ["train_sae", "plot"]);
        assert_eq!((&r).into_iter().count(), 3);
    }

    #[test]
    #[should_panic(expected = "two ops are named `plot`")]
    fn rejects_duplicate_names() {
        OpRegistry::new([&PLOT as &dyn Op, &PLOT]);
    }
}
