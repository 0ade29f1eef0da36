//! A small YAML document tree that keeps the source position of every node and
//! mapping key, so validation errors can point at `file:line:column`.
//!
//! Built on the event stream of `saphyr-parser` rather than a serde deserializer
//! because serde-based loaders drop positions and silently merge duplicate keys.

use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;

/// 1-based line and column in the source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, counting from 1.
    pub line: usize,
    /// Column, counting from 1.
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The value of a YAML node; scalars are typed as YAML 1.2's core schema reads them.
#[derive(Clone, Debug, PartialEq)]
pub enum Yaml {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A floating-point number, including `.inf` and `.nan`.
    Float(f64),
    /// Any other scalar, and every quoted one.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in source order; keys are unique.
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key (keys are always scalars, taken as text).
    pub key: String,
    /// Where the key is written.
    pub key_pos: Pos,
    /// The value.
    pub value: Node,
}

/// A YAML value with the position it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Yaml,
    /// Where the value starts in the source.
    pub pos: Pos,
}

impl Node {
    /// A node holding `value`, placed at `pos`.
    pub fn new(value: Yaml, pos: Pos) -> Node {
        Node { value, pos }
    }
    /// The string, if the node is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The entries, if the node is a mapping.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Yaml::Map(m) => Some(m),
            _ => None,
        }
    }
    /// The entry for `key`, if the node is a mapping that has one.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }
    /// Short description of the node's type for error messages.
    pub fn kind(&self) -> &'static str {
        self.value.kind()
    }
    /// Plain-data view (used for hashing and for ops' parameters).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as V;
        match &self.value {
            Yaml::Null => V::Null,
            Yaml::Bool(b) => V::Bool(*b),
            Yaml::Int(i) => V::from(*i),
            Yaml::Float(f) => serde_json::Number::from_f64(*f).map(V::Number).unwrap_or(V::Null),
            Yaml::Str(s) => V::String(s.clone()),
            Yaml::Seq(items) => V::Array(items.iter().map(Node::to_json).collect()),
            Yaml::Map(entries) => V::Object(entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect()),
        }
    }
    /// Inverse of [`Node::to_json`], every node placed at `pos`.
    pub fn from_json(v: &serde_json::Value, pos: Pos) -> Node {
        use serde_json::Value as V;
        let value = match v {
            V::Null => Yaml::Null,
            V::Bool(b) => Yaml::Bool(*b),
            V::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Int(i),
                None => Yaml::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            V::String(s) => Yaml::Str(s.clone()),
            V::Array(a) => Yaml::Seq(a.iter().map(|x| Node::from_json(x, pos)).collect()),
            V::Object(o) => Yaml::Map(
                o.iter().map(|(k, x)| Entry { key: k.clone(), key_pos: pos, value: Node::from_json(x, pos) }).collect(),
            ),
        };
        Node { value, pos }
    }
    /// Scalar rendered as text, for string interpolation and instance keys.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Yaml::Null => Some("null".into()),
            Yaml::Bool(b) => Some(b.to_string()),
            Yaml::Int(i) => Some(i.to_string()),
            Yaml::Float(f) => Some(format_float(*f)),
            Yaml::Str(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl Yaml {
    /// Short description of the value's type for error messages: `a string`, `a list`.
    pub fn kind(&self) -> &'static str {
        match self {
            Yaml::Null => "null",
            Yaml::Bool(_) => "a boolean",
            Yaml::Int(_) => "an integer",
            Yaml::Float(_) => "a float",
            Yaml::Str(_) => "a string",
            Yaml::Seq(_) => "a list",
            Yaml::Map(_) => "a mapping",
        }
    }
}

/// Shortest text that parses back to the same f64 (so `1e-3` and `0.001` agree).
pub fn format_float(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 { format!("{f:.1}") } else { format!("{f}") }
}

/// A YAML syntax error, or a document this loader refuses (see [`parse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong, for people.
    pub message: String,
}

/// Most nodes (scalars, lists, mappings and mapping keys, counting every copy an
/// alias makes) one document may expand to. Real pipelines have a few thousand;
/// the limit stops "billion laughs" alias bombs before they exhaust memory.
pub const MAX_NODES: usize = 1_000_000;

/// Parses one YAML document. Duplicate mapping keys, non-scalar keys, tags,
/// multiple documents and documents expanding past [`MAX_NODES`] nodes are errors.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            // `[train[0]]` and `[${var}]` are common slips: inside a flow list `[`
            // and `{` open nested collections.
            let hint = if e.info().contains("flow sequence") || e.info().contains("flow mapping") {
                " (inside [...] a `[`, `{` or `${...}` starts a nested collection: quote the item, e.g. [\"train[0]\"], or write the list one `- item` per line)"
            } else {
                ""
            };
            YamlError { pos: Pos { line: e.marker().line(), col: e.marker().col() + 1 }, message: format!("invalid YAML: {}{hint}", e.info()) }
        })?;
        let pos = Pos { line: span.start.line(), col: span.start.col() + 1 };
        builder.event(event, pos)?;
    }
    match builder.docs.len() {
        0 => Err(YamlError { pos: Pos { line: 1, col: 1 }, message: "the file is empty".into() }),
        1 => Ok(builder.docs.pop().unwrap()),
        _ => Err(YamlError {
            pos: builder.second_doc_pos,
            message: "expected a single YAML document, found several (remove the `---` separator)".into(),
        }),
    }
}

/// Collections under construction; the last field is the node count when the
/// collection started, so its expanded size is known when it ends.
enum Frame {
    Seq(Vec<Node>, Pos, usize, usize),
    Map(Vec<Entry>, Pos, usize, Option<(String, Pos)>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    /// Anchored nodes with their expanded node counts.
    anchors: HashMap<usize, (Node, usize)>,
    second_doc_pos: Pos,
    /// Nodes produced so far, aliases counted at their expanded size.
    nodes: usize,
    /// Expanded size of the node being pushed (for anchors).
    last_size: usize,
}

fn tag_error(pos: Pos, tag: &saphyr_parser::Tag) -> YamlError {
    // The parser resolves the `!!` shorthand; show the tag as written.
    let handle = if tag.handle == "tag:yaml.org,2002:" { "!!" } else { tag.handle.as_str() };
    YamlError { pos, message: format!("YAML tags are not supported (found `{handle}{}`)", tag.suffix) }
}

impl Builder {
    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), YamlError> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                if self.docs.len() == 1 {
                    self.second_doc_pos = pos;
                }
                Ok(())
            }
            Event::Alias(id) => {
                let size = self
                    .anchors
                    .get(&id)
                    .map(|(_, size)| *size)
                    .ok_or(YamlError { pos, message: "alias refers to an unknown anchor".into() })?;
                // Checked before copying, so a bomb fails fast instead of allocating.
                self.count(size, pos)?;
                let value = self.anchors[&id].0.value.clone();
                self.last_size = size;
                self.push(Node { value, pos }, 0)
            }
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(tag_error(pos, &tag));
                }
                self.count(1, pos)?;
                let value =
                    if style == ScalarStyle::Plain { resolve_plain(&text) } else { Yaml::Str(text.into_owned()) };
                self.last_size = 1;
                self.push(Node { value, pos }, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(tag_error(pos, &tag));
                }
                self.count(1, pos)?;
                self.stack.push(Frame::Seq(Vec::new(), pos, anchor, self.nodes - 1));
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(tag_error(pos, &tag));
                }
                self.count(1, pos)?;
                self.stack.push(Frame::Map(Vec::new(), pos, anchor, None, self.nodes - 1));
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq(items, p, anchor, start)) => {
                    self.last_size = self.nodes - start;
                    self.push(Node { value: Yaml::Seq(items), pos: p }, anchor)
                }
                _ => Err(YamlError { pos, message: "unbalanced sequence".into() }),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map(entries, p, anchor, _, start)) => {
                    self.last_size = self.nodes - start;
                    self.push(Node { value: Yaml::Map(entries), pos: p }, anchor)
                }
                _ => Err(YamlError { pos, message: "unbalanced mapping".into() }),
            },
        }
    }

    /// Adds `n` nodes to the document's total, failing at `pos` past [`MAX_NODES`].
    fn count(&mut self, n: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos,
                message: format!(
                    "the document expands past the limit of {MAX_NODES} YAML nodes (aliases count at their expanded size)"
                ),
            });
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), self.last_size));
        }
        match self.stack.last_mut() {
            None => {
                self.docs.push(node);
                Ok(())
            }
            Some(Frame::Seq(items, ..)) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map(entries, _, _, pending, _)) => match pending.take() {
                None => {
                    let key = match &node.value {
                        Yaml::Str(s) => s.clone(),
                        Yaml::Int(_) | Yaml::Float(_) | Yaml::Bool(_) | Yaml::Null => node.scalar_text().unwrap(),
                        _ => {
                            return Err(YamlError {
                                pos: node.pos,
                                message: "mapping keys must be plain strings".into(),
                            });
                        }
                    };
                    if let Some(prev) = entries.iter().find(|e| e.key == key) {
                        return Err(YamlError {
                            pos: node.pos,
                            message: format!("duplicate key `{key}` (first defined at line {})", prev.key_pos.line),
                        });
                    }
                    *pending = Some((key, node.pos));
                    Ok(())
                }
                Some((key, key_pos)) => {
                    entries.push(Entry { key, key_pos, value: node });
                    Ok(())
                }
            },
        }
    }
}

/// YAML 1.2 core schema resolution of plain scalars.
fn resolve_plain(s: &str) -> Yaml {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Yaml::Null,
        "true" | "True" | "TRUE" => return Yaml::Bool(true),
        "false" | "False" | "FALSE" => return Yaml::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Yaml::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Yaml::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Yaml::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Yaml::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Yaml::Int(i);
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return Yaml::Int(i);
    }
    if is_core_float(digits)
        && let Ok(f) = s.parse::<f64>()
    {
        return Yaml::Float(f);
    }
    Yaml::Str(s.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && !(a.is_empty() && b.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
        }
    };
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let n = parse("a: 1\nb:\n  - 1e-3\n  - '2'\n  - x\nc: null\n").unwrap();
        let m = n.as_map().unwrap();
        assert_eq!(m[0].key_pos, Pos { line: 1, col: 1 });
        assert_eq!(m[0].value.value, Yaml::Int(1));
        let Yaml::Seq(items) = &m[1].value.value else { panic!() };
        assert_eq!(items[0].value, Yaml::Float(0.001));
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
        assert_eq!(items[1].value, Yaml::Str("2".into()));
        assert_eq!(m[2].value.value, Yaml::Null);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos.line, 3);
        assert!(e.message.contains("duplicate key `a`"), "{}", e.message);
    }

    #[test]
    fn anchors_and_aliases() {
        let n = parse("x: &v [1, 2]\ny: *v\n").unwrap();
        assert_eq!(n.get("x").unwrap().value.value, n.get("y").unwrap().value.value);
    }

    #[test]
    fn alias_bombs_fail_fast_at_the_alias() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 10].join(", ");
            text.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
        }
        // Refused at the alias that crosses the limit, before expanding it.
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("expands past the limit of 1000000"), "{}", e.message);
        // Level f (line 6) holds 10 copies of e (111,111 nodes each): the 9th crosses.
        assert_eq!(e.pos.line, 6, "{e:?}");
        // A moderately aliased document is fine.
        assert!(parse("a: &a [1, 2, 3]\nb: &b [*a, *a, *a]\nc: [*b, *b]\n").is_ok());
    }

    #[test]
    fn tags_on_collections_are_errors() {
        for (text, tag) in [
            ("a: !!map {b: 1}\n", "!!map"),
            ("a: !foo {b: 1}\n", "!foo"),
            ("a: !custom [1]\n", "!custom"),
            ("!!seq\n- 1\n", "!!seq"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.message.contains("YAML tags are not supported") && e.message.contains(tag),
                "{text}: {}",
                e.message
            );
        }
        let e = parse("x: 1\na: !foo {b: 1}\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 4 });
    }

    #[test]
    fn float_text_is_canonical() {
        assert_eq!(format_float(1.0), "1.0");
        assert_eq!(format_float(0.001), "0.001");
        assert_eq!(format_float(1e-3), format_float(0.001));
    }
}
