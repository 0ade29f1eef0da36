//! `${...}` interpolation of variables and loop values into stage parameters.
//!
//! A value that is exactly `${name}` is replaced by the variable's value with its
//! type (a list stays a list); `${name}` inside a longer string inserts its text.
//! `$${` writes a literal `${`.
//!
//! Into a parameter of type [`ParamType::ShellCommand`] (see [`interpolate_typed`])
//! every value is inserted single-quoted for POSIX `sh` (`'` becomes `'\''`),
//! so a value is one word and never parsed as shell syntax: `echo ${msg}` prints
//! the value verbatim, whatever it contains.

use super::yaml::{Entry, Node, Pos, Yaml};
use crate::engine::ParamType;
use saepipe_core::suggest::hint;
use std::collections::BTreeMap;

pub struct Scope<'a> {
    pub vars: &'a BTreeMap<String, Node>,
    /// The current `foreach` element.
    pub item: Option<&'a Node>,
    /// The instance key of the current `foreach`/`matrix` expansion.
    pub key: Option<&'a str>,
    pub matrix: Option<&'a BTreeMap<String, Node>>,
}

impl Scope<'_> {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vars.keys().cloned().collect();
        if self.item.is_some() {
            names.push("item".into());
        }
        if self.key.is_some() {
            names.push("key".into());
        }
        if let Some(m) = self.matrix {
            names.extend(m.keys().map(|k| format!("matrix.{k}")));
        }
        names
    }

    fn lookup(&self, expr: &str, pos: Pos) -> Result<Node, (Pos, String)> {
        let expr = expr.trim();
        let found = if expr == "item" {
            self.item.cloned()
        } else if let Some(field) = expr.strip_prefix("item.") {
            self.item.and_then(|i| i.get(field)).map(|e| e.value.clone())
        } else if expr == "key" {
            self.key.map(|k| Node::new(Yaml::Str(k.to_string()), pos))
        } else if let Some(name) = expr.strip_prefix("matrix.") {
            self.matrix.and_then(|m| m.get(name)).cloned()
        } else {
            let name = expr.strip_prefix("vars.").unwrap_or(expr);
            self.vars.get(name).cloned()
        };
        found.map(|n| with_pos(n, pos)).ok_or_else(|| {
            let names = self.names();
            let mut msg = if (expr == "item" || expr.starts_with("item.")) && self.item.is_none() {
                format!("`${{{expr}}}` is only defined inside a stage with `foreach`")
            } else {
                format!("undefined variable `{expr}`")
            };
            msg.push_str(&hint(expr, names.iter().map(String::as_str)));
            (pos, msg)
        })
    }
}

/// Places every node of a substituted value at the position where it was used.
fn with_pos(mut node: Node, pos: Pos) -> Node {
    node.pos = pos;
    match &mut node.value {
        Yaml::Seq(items) => {
            for i in items.iter_mut() {
                *i = with_pos(i.clone(), pos);
            }
        }
        Yaml::Map(entries) => {
            for e in entries.iter_mut() {
                e.key_pos = pos;
                e.value = with_pos(e.value.clone(), pos);
            }
        }
        _ => {}
    }
    node
}

/// Interpolates a parameter's value knowing its type: into a shell command line
/// values go in shell-quoted; everything else as [`interpolate`].
pub fn interpolate_typed(node: &Node, ty: &ParamType, scope: &Scope) -> Result<Node, (Pos, String)> {
    match (ty, &node.value) {
        (ParamType::ShellCommand, Yaml::Str(s)) if s.contains("${") => interpolate_str(s, node.pos, scope, true),
        _ => interpolate(node, scope),
    }
}

/// `s` single-quoted for POSIX `sh`: one word whatever it contains.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub fn interpolate(node: &Node, scope: &Scope) -> Result<Node, (Pos, String)> {
    match &node.value {
        Yaml::Str(s) if s.contains("${") => interpolate_str(s, node.pos, scope, false),
        Yaml::Seq(items) => {
            Ok(Node::new(Yaml::Seq(items.iter().map(|i| interpolate(i, scope)).collect::<Result<_, _>>()?), node.pos))
        }
        Yaml::Map(entries) => Ok(Node::new(
            Yaml::Map(
                entries
                    .iter()
                    .map(|e| Ok(Entry { key: e.key.clone(), key_pos: e.key_pos, value: interpolate(&e.value, scope)? }))
                    .collect::<Result<_, _>>()?,
            ),
            node.pos,
        )),
        _ => Ok(node.clone()),
    }
}

/// `shell`: insert each value shell-quoted (one word), and do no
/// whole-value substitution (the result is always a command line string).
fn interpolate_str(s: &str, pos: Pos, scope: &Scope, shell: bool) -> Result<Node, (Pos, String)> {
    // Whole-value substitution keeps the variable's type.
    if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')).filter(|_| !shell)
        && !inner.contains(['{', '}', '$'])
    {
        return scope.lookup(inner, pos);
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or((pos, format!("unterminated `${{` in `{s}`")))?;
            let value = scope.lookup(&tail[..end], pos)?;
            let text = value.scalar_text().ok_or((
                pos,
                format!("`${{{}}}` is {} and cannot be inserted into the string `{s}`", &tail[..end], value.kind()),
            ))?;
            // Lists are refused here too (not inserted as several quoted words):
            // one `${...}` is always exactly one shell word.
            out.push_str(&if shell { shell_quote(&text) } else { text });
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Node::new(Yaml::Str(out), pos))
}
