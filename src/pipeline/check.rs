//! Checking a stage's YAML parameter values against the op's declared schema
//! ([`ParamSpec`]): types, enum options (with did-you-mean) and integer ranges.

use super::yaml::{Entry, Node, Pos, Yaml};
use crate::engine::schema::{ParamSpec, ParamType};

/// [`check`] against the parameter's type, then its [`ParamSpec::range`].
pub fn check_param(node: &Node, spec: &ParamSpec) -> Result<Node, (Pos, String)> {
    let node = check(node, &spec.ty)?;
    if let Some((lo, hi)) = spec.range {
        check_range(&node, lo, hi, spec)?;
    }
    Ok(node)
}

fn check_range(node: &Node, lo: i64, hi: i64, spec: &ParamSpec) -> Result<(), (Pos, String)> {
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
pub fn check(node: &Node, ty: &ParamType) -> Result<Node, (Pos, String)> {
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
                let help = saepipe_core::suggest::hint(s, options.iter().copied());
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
                .map(|e| Ok(Entry { key: e.key.clone(), key_pos: e.key_pos, value: check(&e.value, t)? }))
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
