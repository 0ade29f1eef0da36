//! Typed parameter schemas that every op declares, and the checker that
//! validates a stage's YAML parameters against them.

use super::yaml::{Node, Yaml};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    Str,
    /// A shell command line (accepted where a string is). `${...}` values
    /// interpolated into it are inserted single-quoted for POSIX `sh`, so a
    /// value is always one word and never shell syntax.
    ShellCommand,
    Int,
    Float,
    Bool,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
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

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub required: bool,
    pub default: Option<Value>,
    /// Whether the value is part of the cache key. Device choice, thread counts and
    /// progress settings do not change results and so do not change the key.
    pub in_key: bool,
    pub doc: &'static str,
    /// Inclusive bounds of every integer in the value (an `Int` or a list of them),
    /// checked when the pipeline is validated.
    pub range: Option<(i64, i64)>,
}

impl ParamSpec {
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, required: true, default: None, in_key: true, doc, range: None }
    }
    pub fn optional(name: &'static str, ty: ParamType, default: Value, doc: &'static str) -> Self {
        ParamSpec { name, ty, required: false, default: Some(default), in_key: true, doc, range: None }
    }
    /// Optional with no default: absent stays absent.
    pub fn maybe(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, required: false, default: None, in_key: true, doc, range: None }
    }
    pub fn not_in_key(mut self) -> Self {
        self.in_key = false;
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

/// [`check`] against the parameter's type, then its [`ParamSpec::range`].
pub fn check_param(node: &Node, spec: &ParamSpec) -> Result<Node, (super::yaml::Pos, String)> {
    let node = check(node, &spec.ty)?;
    if let Some((lo, hi)) = spec.range {
        check_range(&node, lo, hi, spec)?;
    }
    Ok(node)
}

fn check_range(node: &Node, lo: i64, hi: i64, spec: &ParamSpec) -> Result<(), (super::yaml::Pos, String)> {
    match &node.value {
        Yaml::Int(i) if *i < lo || *i > hi => {
            Err((node.pos, format!("{i} is out of range (expected {})", spec.describe_range().unwrap_or_default())))
        }
        Yaml::Seq(items) => items.iter().try_for_each(|i| check_range(i, lo, hi, spec)),
        Yaml::Map(entries) => entries.iter().try_for_each(|e| check_range(&e.value, lo, hi, spec)),
        _ => Ok(()),
    }
}

/// Checks `node` against `ty`; on success returns the normalized value (integers
/// given for floats become floats so `1` and `1.0` hash alike), else a message.
pub fn check(node: &Node, ty: &ParamType) -> Result<Node, (super::yaml::Pos, String)> {
    // A shell command line is a string to the user writing one.
    let expected = if *ty == ParamType::ShellCommand { ParamType::Str.describe() } else { ty.describe() };
    let bad = |node: &Node| Err((node.pos, format!("expected {expected}, found {}", describe_found(node))));
    let v = match (ty, &node.value) {
        (ParamType::Any, _) => node.value.clone(),
        (ParamType::Str | ParamType::ShellCommand | ParamType::Path | ParamType::Artifact, Yaml::Str(_)) => {
            node.value.clone()
        }
        (ParamType::Str | ParamType::ShellCommand, Yaml::Int(_) | Yaml::Float(_)) => {
            Yaml::Str(node.scalar_text().unwrap())
        }
        (ParamType::Int, Yaml::Int(_)) => node.value.clone(),
        (ParamType::Int, Yaml::Float(f)) if f.fract() == 0.0 && f.abs() < 9e15 => Yaml::Int(*f as i64),
        (ParamType::Float, Yaml::Int(i)) => Yaml::Float(*i as f64),
        (ParamType::Float, Yaml::Float(_)) => node.value.clone(),
        (ParamType::Bool, Yaml::Bool(_)) => node.value.clone(),
        (ParamType::Enum(options), Yaml::Str(s)) => {
            if options.contains(&s.as_str()) {
                node.value.clone()
            } else {
                let help = super::diag::did_you_mean(s, options.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err((node.pos, format!("`{s}` is not one of {}{help}", options.join(", "))));
            }
        }
        (ParamType::Artifacts, Yaml::Str(_)) => node.value.clone(),
        (ParamType::Artifacts, Yaml::Seq(items)) => {
            Yaml::Seq(items.iter().map(|i| check(i, &ParamType::Artifact)).collect::<Result<_, _>>()?)
        }
        (ParamType::List(t), Yaml::Seq(items)) => {
            Yaml::Seq(items.iter().map(|i| check(i, t)).collect::<Result<_, _>>()?)
        }
        (ParamType::Map(t), Yaml::Map(entries)) => Yaml::Map(
            entries
                .iter()
                .map(|e| Ok(super::yaml::Entry { key: e.key.clone(), key_pos: e.key_pos, value: check(&e.value, t)? }))
                .collect::<Result<_, _>>()?,
        ),
        _ => return bad(node),
    };
    Ok(Node { value: v, pos: node.pos })
}

fn describe_found(node: &Node) -> String {
    match &node.value {
        Yaml::Str(s) => format!("the string `{s}`"),
        Yaml::Int(i) => format!("the integer {i}"),
        Yaml::Float(f) => format!("the number {f}"),
        Yaml::Bool(b) => format!("the boolean {b}"),
        other => other.kind().to_string(),
    }
}
