//! The typed parameter schema every op declares: each parameter's type,
//! default, range, documentation and whether it is part of the cache key.
//! (`pipeline::check` checks a stage's YAML values against it.)

use serde_json::Value;

/// The type of a parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    /// A string.
    Str,
    /// A shell command line (accepted where a string is). `${...}` values
    /// interpolated into it are inserted single-quoted for POSIX `sh`, so a
    /// value is always one word and never shell syntax.
    ShellCommand,
    /// An integer (`i64`).
    Int,
    /// A number; integers are accepted and normalized to floats, so `1` and `1.0` give the same key.
    Float,
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// A list of values of one type.
    List(Box<ParamType>),
    /// A mapping with string keys and values of one type.
    Map(Box<ParamType>),
    /// Free-form data (hashed as given).
    Any,
    /// A reference to one stage instance's output: `stage`, `stage[key]`, `stage.output`.
    Artifact,
    /// References to several outputs: a list of references, or a fan-in `stage[*]`.
    Artifacts,
    /// A file or directory outside the cache; hashed by content so the same data at
    /// another path (another user, another machine) gives the same cache key.
    Path,
}

impl ParamType {
    /// The type in words, for error messages and `saepipe ops`: `a list of integers`.
    pub fn describe(&self) -> String {
        match self {
            ParamType::Str => "a string".into(),
            ParamType::ShellCommand => "a shell command line".into(),
            ParamType::Int => "an integer".into(),
            ParamType::Float => "a number".into(),
            ParamType::Bool => "a boolean".into(),
            ParamType::Enum(options) => format!("one of {}", options.join(", ")),
            ParamType::List(t) => format!("a list of {}", t.describe_plural()),
            ParamType::Map(t) => format!("a mapping of names to {}", t.describe_plural()),
            ParamType::Any => "any value".into(),
            ParamType::Artifact => "a stage reference (`stage`, `stage[key]` or `stage.output`)".into(),
            ParamType::Artifacts => "stage references (a list, or `stage[*]`)".into(),
            ParamType::Path => "a path to a file or directory".into(),
        }
    }
    fn describe_plural(&self) -> String {
        match self {
            ParamType::Str => "strings".into(),
            ParamType::ShellCommand => "shell command lines".into(),
            ParamType::Int => "integers".into(),
            ParamType::Float => "numbers".into(),
            ParamType::Bool => "booleans".into(),
            ParamType::Artifact => "stage references".into(),
            ParamType::Path => "paths".into(),
            other => other.describe(),
        }
    }
    /// Does a value of this type contain stage references?
    pub fn has_refs(&self) -> bool {
        match self {
            ParamType::Artifact | ParamType::Artifacts => true,
            ParamType::List(t) | ParamType::Map(t) => t.has_refs(),
            _ => false,
        }
    }
}

/// One parameter of an op: name, type, default, range, documentation and
/// whether it is part of the cache key.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// The parameter's key in the stage's YAML mapping.
    pub name: &'static str,
    /// The type its value must have.
    pub ty: ParamType,
    /// Whether a stage must give it (a required parameter has no default).
    pub required: bool,
    /// The value used when the stage does not give one; `None` leaves it absent.
    pub default: Option<Value>,
    /// Whether the value is part of the cache key. Device choice, thread counts and
    /// progress settings do not change results and so do not change the key.
    pub in_key: bool,
    /// One-line documentation, shown by `saepipe ops`.
    pub doc: &'static str,
    /// Inclusive bounds of every integer in the value (an `Int` or a list of them),
    /// checked when the pipeline is validated.
    pub range: Option<(i64, i64)>,
    /// For stage references: whether the referred stages' names appear in the op's
    /// outputs (coder labels in tables and reports). They are then part of the
    /// cache key, so renaming a coder stage reuses its artifact but reruns the
    /// stages that label it. See [`labelled`](Self::labelled).
    pub labelled: bool,
}

impl ParamSpec {
    /// A required parameter, part of the cache key.
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, required: true, default: None, in_key: true, doc, range: None, labelled: false }
    }
    /// An optional parameter with a `default`, part of the cache key.
    pub fn optional(name: &'static str, ty: ParamType, default: Value, doc: &'static str) -> Self {
        ParamSpec { name, ty, required: false, default: Some(default), in_key: true, doc, range: None, labelled: false }
    }
    /// Optional with no default: absent stays absent.
    pub fn maybe(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, required: false, default: None, in_key: true, doc, range: None, labelled: false }
    }
    /// Leaves the parameter out of the cache key: for settings that do not change the
    /// result (device, threads, progress), so changing them reuses cached artifacts.
    pub fn not_in_key(mut self) -> Self {
        self.in_key = false;
        self
    }
    /// The names of the stages this reference parameter names are written into
    /// the op's outputs (the `coder` column, report labels), so they enter the
    /// cache key: content alone would let an artifact labelled by another
    /// pipeline's stage names be reused.
    pub fn labelled(mut self) -> Self {
        self.labelled = true;
        self
    }
    /// Integers must lie in `min..=max`.
    pub fn range(mut self, min: i64, max: i64) -> Self {
        self.range = Some((min, max));
        self
    }
    /// Integers must be at least `min`.
    pub fn min(self, min: i64) -> Self {
        self.range(min, i64::MAX)
    }
    /// The range in words (`at least 1`, `2 to 1048576`), for messages and `saepipe ops`.
    pub fn describe_range(&self) -> Option<String> {
        self.range.map(|(lo, hi)| match (lo, hi) {
            (lo, i64::MAX) => format!("at least {lo}"),
            (i64::MIN, hi) => format!("at most {hi}"),
            (lo, hi) => format!("{lo} to {hi}"),
        })
    }
}

/// The scheme of a path parameter naming a Hugging Face hub dataset split
/// instead of a local file (`hf-dataset:<org>/<name>[@rev][/split]`): such a
/// value is not resolved against the pipeline's folder, and enters the key
/// through the op's external inputs (the files it resolves to).
pub const HUB_DATASET_SCHEME: &str = "hf-dataset:";

/// Whether a path parameter's value names a hub dataset (see [`HUB_DATASET_SCHEME`]).
pub fn is_hub_dataset(value: &str) -> bool {
    value.starts_with(HUB_DATASET_SCHEME)
}
