//! Loading a pipeline file: YAML → validated, expanded stage instances.
//!
//! Every phase collects diagnostics instead of stopping at the first problem, so
//! a user sees all errors of a file at once.

use super::check;
use super::dag;
use super::diag::Diagnostics;
use super::interp::{Scope, interpolate, interpolate_typed};
use super::refs::{self, Selector};
use super::types::{InputRef, Instance, Pipeline, StageDef, Target};
use super::yaml::{self, Entry, Node, Pos, Yaml};
use crate::engine::{OpRegistry, ParamType, Params};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The pipeline file format this saepipe reads: files must say `version: 1`.
pub const FORMAT_VERSION: i64 = 1;
const TOP_LEVEL_KEYS: &[&str] =
    &["version", "name", "description", "vars", "defaults", "cache_dir", "cache", "executor", "slurm", "stages"];
const STAGE_KEYS: &[&str] = &["op", "foreach", "matrix", "needs", "description", "slurm"];

/// Command-line overrides of a pipeline's `vars:` (`--set`, `--params`), applied while loading.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `--set name=value` overrides (value parsed as YAML).
    pub sets: Vec<String>,
    /// A YAML mapping of variable overrides.
    pub params_file: Option<PathBuf>,
}

/// Why [`load`] or [`load_str`] produced no pipeline.
#[derive(Debug)]
pub enum LoadError {
    /// The pipeline file or params file (the path) could not be read.
    Io(PathBuf, std::io::Error),
    /// The file was read but is invalid: every problem found, with positions.
    Invalid(Diagnostics),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(p, e) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    saepipe_core::suggest::path_hint(p)
                } else {
                    String::new()
                };
                write!(f, "error: cannot read pipeline file {}: {e}{hint}", p.display())
            }
            LoadError::Invalid(d) => write!(f, "{d}"),
        }
    }
}
impl std::error::Error for LoadError {}

/// Reads and loads the pipeline file at `path`; its stages may use the ops of `ops`.
pub fn load(ops: &OpRegistry, path: &Path, opts: &LoadOptions) -> Result<Pipeline, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
    let overrides = match &opts.params_file {
        Some(p) => Some((p.clone(), std::fs::read_to_string(p).map_err(|e| LoadError::Io(p.clone(), e))?)),
        None => None,
    };
    load_str(ops, path, &text, opts, overrides.as_ref().map(|(p, t)| (p.as_path(), t.as_str())))
}

/// Loads pipeline `text` (read from `path`, which names it in diagnostics and
/// anchors relative paths), with an optional params file's name and text.
pub fn load_str(
    ops: &OpRegistry,
    path: &Path,
    text: &str,
    opts: &LoadOptions,
    params_file: Option<(&Path, &str)>,
) -> Result<Pipeline, LoadError> {
    let file = path.display().to_string();
    let mut d = Diagnostics::new(file.clone());
    let root = match yaml::parse(text) {
        Ok(r) => r,
        Err(e) => {
            d.error(e.pos, None, None, e.message);
            return Err(LoadError::Invalid(d));
        }
    };
    let Some(top) = root.as_map() else {
        d.error(
            root.pos,
            None,
            None,
            format!("a pipeline file must be a mapping with `version` and `stages`, found {}", root.kind()),
        );
        return Err(LoadError::Invalid(d));
    };
    for e in top {
        if !TOP_LEVEL_KEYS.contains(&e.key.as_str()) {
            d.unknown(e.key_pos, None, None, "top-level key", &e.key, TOP_LEVEL_KEYS.iter().copied());
        }
    }
    match root.get("version") {
        None => {
            d.error(
                root.pos,
                None,
                None,
                format!("missing `version` (this saepipe reads `version: {FORMAT_VERSION}`)"),
            );
        }
        Some(e) if e.value.value != Yaml::Int(FORMAT_VERSION) => {
            d.error(
                e.value.pos,
                None,
                Some("version"),
                format!(
                    "unsupported pipeline version {} (this saepipe reads version {FORMAT_VERSION})",
                    e.value.scalar_text().unwrap_or_else(|| e.value.kind().into())
                ),
            );
        }
        _ => {}
    }
    let name = match root.get("name") {
        Some(e) => e.value.as_str().map(str::to_string).unwrap_or_else(|| {
            d.error(e.value.pos, None, Some("name"), "expected a string");
            String::new()
        }),
        None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into()),
    };
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    let cache_dir = root.get("cache_dir").and_then(|e| match e.value.as_str() {
        Some(s) => Some(base_dir.join(s)),
        None => {
            d.error(e.value.pos, None, Some("cache_dir"), "expected a path string");
            None
        }
    });

    let (remote, team_cache) = super::run_settings::load_cache_section(&root, &base_dir, &mut d);
    let (executor_slurm, slurm) = super::run_settings::load_executor(&root, &mut d);
    let (vars, overridden) = super::vars::load_vars(&root, opts, params_file, &mut d);
    let defaults = load_defaults(ops, &root, &mut d);

    let mut p = Pipeline {
        file: path.to_path_buf(),
        name,
        base_dir,
        cache_dir,
        remote,
        team_cache,
        executor_slurm,
        slurm,
        stages: Vec::new(),
        instances: Vec::new(),
        ops: ops.clone(),
    };
    // Raw (unresolved) references per instance, resolved once all stages are known.
    let mut raw_refs: Vec<Vec<(String, String, Pos)>> = Vec::new();
    let mut raw_needs: Vec<Vec<(String, Pos)>> = Vec::new();
    match root.get("stages") {
        None => {
            d.error(root.pos, None, None, "missing `stages`");
        }
        Some(e) => match e.value.as_map() {
            None => {
                d.error(
                    e.value.pos,
                    None,
                    Some("stages"),
                    format!("expected a mapping of stage names to stages, found {}", e.value.kind()),
                );
            }
            Some([]) => {
                d.error(e.value.pos, None, Some("stages"), "the pipeline has no stages");
            }
            Some(stages) => {
                for st in stages {
                    load_stage(st, &vars, &defaults, &mut p, &mut raw_refs, &mut raw_needs, &mut d);
                }
            }
        },
    }
    check_defaults_used(&defaults, &p, &mut d);
    resolve_refs(&mut p, &raw_refs, &raw_needs, &mut d);
    if d.is_empty() {
        dag::check_acyclic(&p, &mut d);
    }
    if d.is_empty() {
        Ok(p)
    } else {
        d.sort();
        d.name_overrides(text, &overridden);
        Err(LoadError::Invalid(d))
    }
}

/// `defaults:` holds parameters for every stage whose op accepts them, and
/// per-op mappings (`train_sae: {lr: ...}`).
struct Defaults {
    global: Vec<Entry>,
    per_op: HashMap<String, Vec<Entry>>,
}

fn load_defaults(ops: &OpRegistry, root: &Node, d: &mut Diagnostics) -> Defaults {
    let mut out = Defaults { global: Vec::new(), per_op: HashMap::new() };
    let Some(e) = root.get("defaults") else { return out };
    let Some(m) = e.value.as_map() else {
        d.error(e.value.pos, None, Some("defaults"), format!("expected a mapping, found {}", e.value.kind()));
        return out;
    };
    for entry in m {
        if let Some(op) = ops.find(&entry.key) {
            match entry.value.as_map() {
                Some(params) => {
                    let specs = op.params();
                    for p in params {
                        if !specs.iter().any(|s| s.name == p.key) {
                            d.unknown(
                                p.key_pos,
                                None,
                                Some(&format!("defaults.{}", entry.key)),
                                &format!("parameter of op `{}`", op.name()),
                                &p.key,
                                specs.iter().map(|s| s.name),
                            );
                        }
                    }
                    out.per_op.insert(entry.key.clone(), params.to_vec());
                }
                None => {
                    d.error(
                        entry.value.pos,
                        None,
                        Some(&format!("defaults.{}", entry.key)),
                        "per-op defaults must be a mapping of parameters",
                    );
                }
            }
        } else {
            out.global.push(entry.clone());
        }
    }
    out
}

fn check_defaults_used(defaults: &Defaults, p: &Pipeline, d: &mut Diagnostics) {
    for e in &defaults.global {
        let used = p.stages.iter().any(|s| s.op.params().iter().any(|spec| spec.name == e.key));
        if !used && !p.stages.is_empty() {
            let mut all: Vec<&'static str> =
                p.stages.iter().flat_map(|s| s.op.params().into_iter().map(|x| x.name)).collect();
            all.sort_unstable();
            all.dedup();
            d.unknown(
                e.key_pos,
                None,
                Some("defaults"),
                "default (not a parameter of any op in this pipeline, nor an op name)",
                &e.key,
                all,
            );
        }
    }
}

/// One expansion of a stage: its instance key and loop values.
struct Expansion {
    key: Option<String>,
    item: Option<Node>,
    matrix: Option<BTreeMap<String, Node>>,
}

fn expansions(stage: &str, body: &Node, vars: &BTreeMap<String, Node>, d: &mut Diagnostics) -> Option<Vec<Expansion>> {
    let scope = Scope { vars, item: None, key: None, matrix: None };
    let foreach = body.get("foreach");
    let matrix = body.get("matrix");
    if let (Some(_), Some(m)) = (foreach, matrix) {
        d.error(m.key_pos, Some(stage), Some("matrix"), "a stage takes `foreach` or `matrix`, not both");
        return None;
    }
    let mut out = Vec::new();
    if let Some(f) = foreach {
        let list = match interpolate(&f.value, &scope) {
            Ok(n) => n,
            Err((pos, msg)) => {
                d.error(pos, Some(stage), Some("foreach"), msg);
                return None;
            }
        };
        let Yaml::Seq(items) = &list.value else {
            d.error(
                list.pos,
                Some(stage),
                Some("foreach"),
                format!("expected a list to iterate over, found {}", list.kind()),
            );
            return None;
        };
        if items.is_empty() {
            d.error(list.pos, Some(stage), Some("foreach"), "the list is empty, so the stage would have no instances");
            return None;
        }
        for (i, item) in items.iter().enumerate() {
            let key = match &item.value {
                Yaml::Map(_) => item
                    .get("key")
                    .or_else(|| item.get("name"))
                    .and_then(|e| e.value.scalar_text())
                    .unwrap_or_else(|| i.to_string()),
                Yaml::Seq(_) => i.to_string(),
                _ => item.scalar_text().unwrap(),
            };
            out.push(Expansion { key: Some(key), item: Some(item.clone()), matrix: None });
        }
    } else if let Some(m) = matrix {
        let Some(axes) = m.value.as_map() else {
            d.error(
                m.value.pos,
                Some(stage),
                Some("matrix"),
                format!("expected a mapping of names to lists, found {}", m.value.kind()),
            );
            return None;
        };
        let mut combos: Vec<Vec<(String, Node)>> = vec![Vec::new()];
        for axis in axes {
            let values = match interpolate(&axis.value, &scope) {
                Ok(n) => n,
                Err((pos, msg)) => {
                    d.error(pos, Some(stage), Some(&format!("matrix.{}", axis.key)), msg);
                    return None;
                }
            };
            let Yaml::Seq(values) = values.value else {
                d.error(
                    axis.value.pos,
                    Some(stage),
                    Some(&format!("matrix.{}", axis.key)),
                    "expected a list of values",
                );
                return None;
            };
            if values.is_empty() {
                d.error(axis.value.pos, Some(stage), Some(&format!("matrix.{}", axis.key)), "the list is empty");
                return None;
            }
            combos = combos
                .into_iter()
                .flat_map(|c| values.iter().map(move |v| [c.clone(), vec![(axis.key.clone(), v.clone())]].concat()))
                .collect();
        }
        for combo in combos {
            let key = combo
                .iter()
                .map(|(k, v)| format!("{k}={}", v.scalar_text().unwrap_or_else(|| "?".into())))
                .collect::<Vec<_>>()
                .join(",");
            out.push(Expansion { key: Some(key), item: None, matrix: Some(combo.into_iter().collect()) });
        }
    } else {
        out.push(Expansion { key: None, item: None, matrix: None });
    }
    let mut seen = HashMap::new();
    for e in &out {
        let k = e.key.clone().unwrap_or_default();
        if k.contains(['[', ']']) {
            d.error(body.pos, Some(stage), None, format!("instance key `{k}` may not contain `[` or `]`"));
            return None;
        }
        if seen.insert(k.clone(), ()).is_some() {
            d.error(body.pos, Some(stage), None, format!("two instances would both be named `{stage}[{k}]`; give list items distinct values or a `key:` field"));
            return None;
        }
    }
    Some(out)
}

fn load_stage(
    st: &Entry,
    vars: &BTreeMap<String, Node>,
    defaults: &Defaults,
    p: &mut Pipeline,
    raw_refs: &mut Vec<Vec<(String, String, Pos)>>,
    raw_needs: &mut Vec<Vec<(String, Pos)>>,
    d: &mut Diagnostics,
) {
    let name = st.key.as_str();
    if !refs::valid_stage_name(name) {
        d.error(st.key_pos, Some(name), None, "stage names may contain only letters, digits, `_` and `-`");
        return;
    }
    let Some(body) = st.value.as_map() else {
        d.error(
            st.value.pos,
            Some(name),
            None,
            format!("a stage must be a mapping with an `op`, found {}", st.value.kind()),
        );
        return;
    };
    let op = match st.value.get("op") {
        None => {
            d.error(st.key_pos, Some(name), None, "missing `op`");
            return;
        }
        Some(e) => match e.value.as_str() {
            None => {
                d.error(e.value.pos, Some(name), Some("op"), "expected the name of an op");
                return;
            }
            Some(op_name) => match p.ops.find(op_name) {
                Some(op) => op,
                None => {
                    d.unknown(e.value.pos, Some(name), None, "op", op_name, p.ops.visible().map(|o| o.name()));
                    return;
                }
            },
        },
    };
    let specs = op.params();
    for e in body {
        if !STAGE_KEYS.contains(&e.key.as_str()) && !specs.iter().any(|s| s.name == e.key) {
            let mut names: Vec<&str> = specs.iter().map(|s| s.name).collect();
            names.extend(STAGE_KEYS);
            d.unknown(e.key_pos, Some(name), None, &format!("parameter of op `{}`", op.name()), &e.key, names);
        }
    }
    let Some(exps) = expansions(name, &st.value, vars, d) else { return };
    let expanded = exps[0].key.is_some();
    let slurm = st.value.get("slurm").map(|e| super::run_settings::load_slurm(e, Some(name), d)).unwrap_or_default();
    let mut def = StageDef { name: name.to_string(), op, pos: st.key_pos, instances: Vec::new(), expanded, slurm };
    for exp in exps {
        let id = match &exp.key {
            Some(k) => format!("{name}[{k}]"),
            None => name.to_string(),
        };
        let scope = Scope { vars, item: exp.item.as_ref(), key: exp.key.as_deref(), matrix: exp.matrix.as_ref() };
        let mut params = BTreeMap::new();
        let mut refs_here = Vec::new();
        // Where each parameter (and each item of a list) was written, for the op's own checks.
        let mut positions: BTreeMap<&str, (Pos, Vec<Pos>)> = BTreeMap::new();
        for spec in &specs {
            let given = body.iter().find(|e| e.key == spec.name).map(|e| e.value.clone()).or_else(|| {
                let per_op = defaults.per_op.get(op.name()).and_then(|m| m.iter().find(|e| e.key == spec.name));
                per_op.or_else(|| defaults.global.iter().find(|e| e.key == spec.name)).map(|e| e.value.clone())
            });
            let Some(raw) = given else {
                if spec.required {
                    d.error(
                        st.key_pos,
                        Some(&id),
                        Some(spec.name),
                        format!("missing required parameter ({}: {})", spec.ty.describe(), spec.doc),
                    );
                } else if let Some(def) = &spec.default {
                    params.insert(spec.name.to_string(), def.clone());
                }
                continue;
            };
            let node = match interpolate_typed(&raw, &spec.ty, &scope) {
                Ok(n) => n,
                Err((pos, msg)) => {
                    d.error(pos, Some(&id), Some(spec.name), msg);
                    continue;
                }
            };
            let node = match check::check_param(&node, spec) {
                Ok(n) => n,
                Err((pos, msg)) => {
                    d.error(pos, Some(&id), Some(spec.name), msg);
                    continue;
                }
            };
            let items = match &node.value {
                Yaml::Seq(items) => items.iter().map(|i| i.pos).collect(),
                _ => Vec::new(),
            };
            positions.insert(spec.name, (node.pos, items));
            collect_refs(&node, &spec.ty, spec.name, &mut refs_here);
            let mut value = node.to_json();
            absolutize_paths(&mut value, &spec.ty, &p.base_dir);
            params.insert(spec.name.to_string(), value);
        }
        let params = Params(params);
        for (param, index, msg) in op.check_params(&params, &p.base_dir) {
            let pos = positions
                .get(param)
                .map(|(pos, items)| index.and_then(|i| items.get(i).copied()).unwrap_or(*pos))
                .unwrap_or(st.key_pos);
            d.error(pos, Some(&id), Some(param), msg);
        }
        let mut needs = Vec::new();
        if let Some(e) = st.value.get("needs") {
            match interpolate(&e.value, &scope).map(|n| n.value) {
                Ok(Yaml::Seq(items)) => {
                    for i in items {
                        match i.as_str() {
                            Some(s) => needs.push((s.to_string(), i.pos)),
                            None => {
                                d.error(i.pos, Some(&id), Some("needs"), "expected a stage reference");
                            }
                        }
                    }
                }
                Ok(Yaml::Str(s)) => needs.push((s, e.value.pos)),
                Ok(_) => {
                    d.error(e.value.pos, Some(&id), Some("needs"), "expected a list of stage references");
                }
                Err((pos, msg)) => {
                    d.error(pos, Some(&id), Some("needs"), msg);
                }
            }
        }
        def.instances.push(p.instances.len());
        p.instances.push(Instance {
            id,
            stage: name.to_string(),
            key: exp.key.clone(),
            op,
            params,
            inputs: Vec::new(),
            needs: Vec::new(),
            pos: st.key_pos,
        });
        raw_refs.push(refs_here);
        raw_needs.push(needs);
    }
    p.stages.push(def);
}

/// Records (label, reference text, position) for every reference inside a checked value.
fn collect_refs(node: &Node, ty: &ParamType, label: &str, out: &mut Vec<(String, String, Pos)>) {
    match (ty, &node.value) {
        (ParamType::Artifact | ParamType::Artifacts, Yaml::Str(s)) => {
            out.push((label.to_string(), s.clone(), node.pos))
        }
        (ParamType::Artifacts, Yaml::Seq(items)) => {
            for i in items {
                collect_refs(i, &ParamType::Artifact, label, out);
            }
        }
        (ParamType::List(t), Yaml::Seq(items)) if t.has_refs() => {
            for i in items {
                collect_refs(i, t, label, out);
            }
        }
        (ParamType::Map(t), Yaml::Map(entries)) if t.has_refs() => {
            for e in entries {
                collect_refs(&e.value, t, &format!("{label}.{}", e.key), out);
            }
        }
        _ => {}
    }
}

fn absolutize_paths(v: &mut Value, ty: &ParamType, base: &Path) {
    match (ty, v) {
        (ParamType::Path, Value::String(s)) if !crate::engine::is_hub_dataset(s) => {
            let expanded = expand_home(s);
            let path = base.join(expanded);
            *s = std::path::absolute(&path).unwrap_or(path).display().to_string();
        }
        (ParamType::List(t), Value::Array(items)) => items.iter_mut().for_each(|i| absolutize_paths(i, t, base)),
        (ParamType::Map(t), Value::Object(m)) => m.values_mut().for_each(|i| absolutize_paths(i, t, base)),
        _ => {}
    }
}

fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(s),
    }
}

fn resolve_refs(
    p: &mut Pipeline,
    raw_refs: &[Vec<(String, String, Pos)>],
    raw_needs: &[Vec<(String, Pos)>],
    d: &mut Diagnostics,
) {
    let stage_names: Vec<String> = p.stages.iter().map(|s| s.name.clone()).collect();
    for i in 0..p.instances.len() {
        let mut inputs: Vec<InputRef> = Vec::new();
        for (label, text, pos) in &raw_refs[i] {
            if let Some(targets) = resolve_one(p, i, text, *pos, Some(label), &stage_names, d) {
                match inputs.iter_mut().find(|r| &r.label == label) {
                    Some(r) => r.targets.extend(targets),
                    None => inputs.push(InputRef { label: label.clone(), targets }),
                }
            }
        }
        let mut needs = Vec::new();
        for (text, pos) in &raw_needs[i] {
            if let Some(targets) = resolve_one(p, i, text, *pos, Some("needs"), &stage_names, d) {
                needs.extend(targets.into_iter().map(|t| t.instance));
            }
        }
        p.instances[i].inputs = inputs;
        p.instances[i].needs = needs;
    }
}

fn resolve_one(
    p: &Pipeline,
    from: usize,
    text: &str,
    pos: Pos,
    label: Option<&str>,
    stage_names: &[String],
    d: &mut Diagnostics,
) -> Option<Vec<Target>> {
    let me = &p.instances[from];
    let r = match refs::parse(text) {
        Ok(r) => r,
        Err(msg) => {
            d.error(pos, Some(&me.id), label, msg);
            return None;
        }
    };
    let Some(stage) = p.stages.iter().find(|s| s.name == r.stage) else {
        d.unknown(pos, Some(&me.id), label, "stage", &r.stage, stage_names.iter().map(String::as_str));
        return None;
    };
    if let Some(out) = &r.output {
        let outs = stage.op.outputs();
        if !outs.contains(&out.as_str()) {
            if outs.is_empty() {
                d.error(
                    pos,
                    Some(&me.id),
                    label,
                    format!(
                        "op `{}` of stage `{}` has no named outputs, so `.{out}` cannot be referenced",
                        stage.op.name(),
                        stage.name
                    ),
                );
            } else {
                d.unknown(
                    pos,
                    Some(&me.id),
                    label,
                    &format!("output of op `{}`", stage.op.name()),
                    out,
                    outs.iter().copied(),
                );
            }
            return None;
        }
    }
    let keys: Vec<&str> = stage.instances.iter().filter_map(|&j| p.instances[j].key.as_deref()).collect();
    let chosen: Vec<usize> = match &r.selector {
        Selector::All => stage.instances.clone(),
        Selector::Key(k) => {
            if !stage.expanded {
                d.error(
                    pos,
                    Some(&me.id),
                    label,
                    format!(
                        "stage `{}` has no `foreach`/`matrix`, so it has no instance `[{k}]`; write `{}`",
                        stage.name, stage.name
                    ),
                );
                return None;
            }
            match stage.instances.iter().find(|&&j| p.instances[j].key.as_deref() == Some(k.as_str())) {
                Some(&j) => vec![j],
                None => {
                    d.unknown(pos, Some(&me.id), label, &format!("instance of stage `{}`", stage.name), k, keys);
                    return None;
                }
            }
        }
        Selector::Implicit => {
            if !stage.expanded {
                stage.instances.clone()
            } else if let Some(&j) =
                me.key.as_ref().and_then(|k| stage.instances.iter().find(|&&j| p.instances[j].key.as_ref() == Some(k)))
            {
                vec![j]
            } else {
                d.error(
                    pos,
                    Some(&me.id),
                    label,
                    format!(
                        "stage `{}` has {} instances; say which: `{}[KEY]`, or `{}[*]` for all of them",
                        stage.name,
                        stage.instances.len(),
                        stage.name,
                        stage.name
                    ),
                )
                .help = Some(format!("instances: {}", keys.join(", ")));
                return None;
            }
        }
    };
    if chosen.contains(&from) {
        d.error(pos, Some(&me.id), label, "a stage cannot use its own output");
        return None;
    }
    Some(chosen.into_iter().map(|j| Target { instance: j, output: r.output.clone() }).collect())
}
