//! Cache keys. A stage instance's key is blake3 over its canonical recipe: op
//! name and version, parameters that affect the result, the keys of its input
//! artifacts and content fingerprints of external files. Keys never depend on
//! outputs, so every key of a pipeline is known before anything runs.

use crate::engine::{NotDownloaded, ParamType};
use crate::pipeline::{Instance, Pipeline, dag};
use anyhow::{Context, Result, bail};
use saepipe_cache::{Cache, Key};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The recipe of one stage instance: everything its cache key is a hash of.
/// Stored with each artifact and in the run index, so a later plan can say what
/// changed ([`KeyMaterial::diff`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// Name of the op.
    pub op: String,
    /// The op's implementation version ([`Op::version`](crate::engine::Op::version)); bumping it invalidates old artifacts.
    pub op_version: u32,
    /// The parameters that are part of the key (those not marked `not_in_key`), as validated.
    pub params: BTreeMap<String, Value>,
    /// Input label → keys of the artifacts it reads (`KEY` or `KEY/output`).
    pub inputs: BTreeMap<String, Vec<String>>,
    /// External file label → content fingerprint.
    pub external: BTreeMap<String, String>,
    /// Input label → the names of the stages it refers to, for the inputs whose
    /// names the op writes into its outputs ([`ParamSpec::labelled`](crate::engine::ParamSpec::labelled)).
    /// Left out of the hashed recipe when empty, so other ops' keys are unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Vec<String>>,
}

impl KeyMaterial {
    /// The cache key: blake3 of a version tag and the canonical JSON of the recipe.
    pub fn key(&self) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(b"saepipe-key-v1\n");
        h.update(canonical_json(&serde_json::to_value(self).expect("key material serializes")).as_bytes());
        Key::from_hasher(h)
    }

    /// Human-readable differences from an older recipe of the same stage instance.
    pub fn diff(&self, old: &KeyMaterial) -> Vec<String> {
        let mut out = Vec::new();
        if self.op != old.op {
            out.push(format!("op changed: {} -> {}", old.op, self.op));
        }
        if self.op_version != old.op_version {
            out.push(format!("op `{}` implementation version {} -> {}", self.op, old.op_version, self.op_version));
        }
        diff_maps("parameter", &old.params, &self.params, |v| short(&canonical_json(v)), &mut out);
        diff_maps(
            "input",
            &old.inputs,
            &self.inputs,
            |v| v.iter().map(|k| k.get(..12).unwrap_or(k).to_string()).collect::<Vec<_>>().join(","),
            &mut out,
        );
        diff_maps("external file", &old.external, &self.external, |v| v.get(..12).unwrap_or(v).to_string(), &mut out);
        diff_maps("input names of", &old.labels, &self.labels, |v| v.join(","), &mut out);
        out
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s.to_string() }
}

fn diff_maps<T: PartialEq>(
    what: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    show: impl Fn(&T) -> String,
    out: &mut Vec<String>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{what} `{k}` added ({})", show(v))),
            Some(o) if o != v => out.push(format!("{what} `{k}` changed: {} -> {}", show(o), show(v))),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{what} `{k}` removed"));
    }
}

/// JSON with object keys sorted at every level and no whitespace, independent of
/// how the map type of serde_json happens to be configured.
pub fn canonical_json(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    s
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Number(n) if n.is_f64() => out.push_str(&crate::pipeline::yaml::format_float(n.as_f64().unwrap())),
        other => out.push_str(&other.to_string()),
    }
}

/// Fingerprints a file or directory by content (memoized by the cache).
pub fn fingerprint(cache: &Cache, path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{} does not exist or cannot be read", path.display()))?;
    if meta.is_dir() { Ok(cache.fingerprint_dir(path)?) } else { Ok(cache.fingerprint_file(path)?) }
}

/// External-input label of a reference not yet downloaded (its value says which).
pub const PENDING: &str = "(not downloaded)";

impl KeyMaterial {
    /// Why this key is only a placeholder (a reference not yet downloaded, here
    /// or upstream), if it is one.
    pub fn pending(&self) -> Option<&str> {
        self.external.get(PENDING).map(String::as_str)
    }
}

/// Computes the recipe of every instance, in dependency order.
pub fn materials(p: &Pipeline, cache: &Cache) -> Result<Vec<(KeyMaterial, Key)>> {
    let order = dag::topo_order(p);
    let mut out: Vec<Option<(KeyMaterial, Key)>> = vec![None; p.instances.len()];
    for i in order {
        let inst = &p.instances[i];
        let m = material(p, inst, cache, &out).with_context(|| format!("stage `{}`", inst.id))?;
        let k = m.key();
        out[i] = Some((m, k));
    }
    Ok(out.into_iter().map(|x| x.expect("topological order covers every instance")).collect())
}

fn material(p: &Pipeline, inst: &Instance, cache: &Cache, done: &[Option<(KeyMaterial, Key)>]) -> Result<KeyMaterial> {
    let specs = inst.op.params();
    let mut params = BTreeMap::new();
    let mut external = BTreeMap::new();
    for spec in specs.iter().filter(|s| s.in_key) {
        let Some(v) = inst.params.0.get(spec.name) else { continue };
        if spec.ty.has_refs() {
            continue; // represented by the input keys
        }
        let v = replace_paths(v, &spec.ty, spec.name, cache, &mut external)?;
        params.insert(spec.name.to_string(), v);
    }
    match inst.op.external_inputs(&inst.params, &p.base_dir) {
        Ok(list) => {
            for (label, path) in list {
                external.insert(label, fingerprint(cache, &path)?);
            }
        }
        // A read-only command: the key is unknown until the download (a placeholder
        // that matches no artifact), and the plan says why.
        Err(e) => match e.chain().find_map(|c| c.downcast_ref::<NotDownloaded>()) {
            Some(nd) => {
                external.insert(PENDING.to_string(), nd.to_string());
            }
            None => return Err(e),
        },
    }
    let mut inputs = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for r in &inst.inputs {
        if specs.iter().any(|s| s.name == r.label && s.labelled) {
            labels.insert(r.label.clone(), r.targets.iter().map(|t| p.instances[t.instance].id.clone()).collect());
        }
        let keys = r
            .targets
            .iter()
            .map(|t| {
                let k = done[t.instance].as_ref().expect("dependencies are keyed first").1.to_string();
                match &t.output {
                    Some(o) => format!("{k}/{o}"),
                    None => k,
                }
            })
            .collect();
        inputs.insert(r.label.clone(), keys);
        if !external.contains_key(PENDING)
            && let Some(why) = r.targets.iter().find_map(|t| done[t.instance].as_ref().and_then(|(m, _)| m.pending()))
        {
            external.insert(PENDING.to_string(), why.to_string());
        }
    }
    Ok(KeyMaterial { op: inst.op.name().to_string(), op_version: inst.op.version(), params, inputs, external, labels })
}

/// Path parameters enter the key by content, not by where the file happens to be.
fn replace_paths(
    v: &Value,
    ty: &ParamType,
    label: &str,
    cache: &Cache,
    external: &mut BTreeMap<String, String>,
) -> Result<Value> {
    Ok(match (ty, v) {
        // A hub dataset's files enter the key through the op's external inputs.
        (ParamType::Path, Value::String(s)) if crate::engine::is_hub_dataset(s) => v.clone(),
        (ParamType::Path, Value::String(s)) => {
            let fp = fingerprint(cache, &PathBuf::from(s)).with_context(|| format!("parameter `{label}`"))?;
            external.insert(label.to_string(), fp.clone());
            Value::String(format!("content:{fp}"))
        }
        (ParamType::List(t), Value::Array(items)) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| replace_paths(x, t, &format!("{label}[{i}]"), cache, external))
                .collect::<Result<_>>()?,
        ),
        (ParamType::Map(t), Value::Object(m)) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), replace_paths(x, t, &format!("{label}.{k}"), cache, external)?)))
                .collect::<Result<_>>()?,
        ),
        (ParamType::Path, other) => bail!("parameter `{label}`: expected a path, found {other}"),
        (_, other) => other.clone(),
    })
}
