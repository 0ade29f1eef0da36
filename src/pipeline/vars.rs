//! A pipeline's variables: its `vars:` with the overrides of a params file
//! and of `--set`, and where each overridden value came from.

use super::diag::Diagnostics;
use super::spec::LoadOptions;
use super::yaml::{self, Node, Pos, Yaml};
use std::collections::BTreeMap;
use std::path::Path;

/// The pipeline's variables with the command line's and params file's
/// overrides applied, and for each overridden variable where its value came from.
pub(super) fn load_vars(
    root: &Node,
    opts: &LoadOptions,
    params_file: Option<(&Path, &str)>,
    d: &mut Diagnostics,
) -> (BTreeMap<String, Node>, BTreeMap<String, String>) {
    let mut vars = BTreeMap::new();
    let mut overridden = BTreeMap::new();
    if let Some(e) = root.get("vars") {
        match e.value.as_map() {
            Some(m) => {
                for v in m {
                    vars.insert(v.key.clone(), v.value.clone());
                }
            }
            None => {
                d.error(
                    e.value.pos,
                    None,
                    Some("vars"),
                    format!("expected a mapping of variable names to values, found {}", e.value.kind()),
                );
            }
        }
    }
    let known: Vec<String> = vars.keys().cloned().collect();
    let mut set_var = |d: &mut Diagnostics, file: &str, pos: Pos, name: &str, value: Node, origin: String| {
        if known.iter().any(|k| k == name) {
            vars.insert(name.to_string(), value);
            overridden.insert(name.to_string(), origin);
        } else {
            let mut sub = Diagnostics::new(file);
            sub.unknown(pos, None, None, "variable", name, known.iter().map(String::as_str));
            let mut item = sub.items.pop().unwrap();
            item.message.push_str(" (overrides may only set variables declared under `vars:`)");
            d.items.push(item);
        }
    };
    if let Some((pf, text)) = params_file {
        let pf_name = pf.display().to_string();
        match yaml::parse(text) {
            Ok(n) => match n.as_map() {
                Some(m) => {
                    for e in m {
                        let origin = format!("{pf_name}:{}", e.key_pos.line);
                        set_var(d, &pf_name, e.key_pos, &e.key, e.value.clone(), origin);
                    }
                }
                None => d.items.push(diag_in(
                    &pf_name,
                    n.pos,
                    "a params file must be a mapping of variable names to values",
                )),
            },
            Err(e) => d.items.push(diag_in(&pf_name, e.pos, &e.message)),
        }
    }
    for (i, s) in opts.sets.iter().enumerate() {
        let origin = format!("--set #{}", i + 1);
        let pos = Pos { line: 1, col: 1 };
        match s.split_once('=') {
            Some((name, value)) => match yaml::parse(value) {
                Ok(n) => {
                    let n = Node::new(relative_to_cwd(n.value), pos);
                    set_var(d, &origin, pos, name.trim(), n, format!("`--set {s}`"))
                }
                Err(_) => {
                    let node = Node::new(Yaml::Str(value.to_string()), pos);
                    set_var(d, &origin, pos, name.trim(), node, format!("`--set {s}`"))
                }
            },
            None => d.items.push(diag_in(&origin, pos, &format!("`{s}` is not of the form NAME=VALUE"))),
        }
    }
    (vars, overridden)
}

/// A `--set` value naming a file or folder that exists relative to the
/// current directory (a string with a `/` or a `.` in it) means that one,
/// as paths typed in a shell do; other values stay as written (paths in the
/// pipeline resolve against the pipeline's folder).
fn relative_to_cwd(value: Yaml) -> Yaml {
    match value {
        Yaml::Str(v)
            if (v.contains('/') || v.contains('.')) && !Path::new(&v).is_absolute() && Path::new(&v).exists() =>
        {
            match std::path::absolute(&v) {
                Ok(abs) => Yaml::Str(abs.display().to_string()),
                Err(_) => Yaml::Str(v),
            }
        }
        other => other,
    }
}

fn diag_in(file: &str, pos: Pos, message: &str) -> super::diag::Diagnostic {
    super::diag::Diagnostic {
        file: file.to_string(),
        pos,
        stage: None,
        param: None,
        message: message.to_string(),
        help: None,
        instances: 1,
    }
}
