//! SAELens directories: `cfg.json` + `sae_weights.safetensors`
//! (+ `sparsity.safetensors`). Reads v6 configs and pre-6.0 flat configs;
//! writes v6.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::arch::{Activation, Normalization};
use crate::coder::SparseCoder;
use crate::error::{Result, SaeError};
use crate::meta::Metadata;
use crate::st::{self, Out, StFile};

/// Config file of a SAELens directory.
pub const CFG_FILE: &str = "cfg.json";
/// Weights file of a SAELens directory.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
/// Optional firing-sparsity file of a SAELens directory (key `sparsity`).
pub const SPARSITY_FILE: &str = "sparsity.safetensors";

/// The SAELens config version saepipe writes (the v6 layout with a nested
/// `metadata` block). SAELens treats configs without a version >= 6 as
/// pre-6.0 flat configs, so the version is always written.
pub const WRITTEN_SAELENS_VERSION: &str = "6.0.0";

/// Keys of a pre-6.0 flat config that describe the coder itself; every other
/// key is provenance and goes to [`Metadata`].
const STRUCTURAL_KEYS: &[&str] = &[
    "architecture",
    "d_in",
    "d_sae",
    "d_out",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "activation_fn",
    "activation_fn_str",
    "activation_fn_kwargs",
    "k",
    "finetuning_scaling_factor",
    "rescale_acts_by_decoder_norm",
    "hook_point",
    "hook_point_head_index",
];

fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| SaeError::io(path, e))?;
    match serde_json::from_str::<Value>(&text).map_err(|e| SaeError::Json { path: path.into(), source: e })? {
        Value::Object(m) => Ok(m),
        _ => Err(SaeError::config(path, "<root>", "expected a JSON object")),
    }
}

fn usize_field(cfg: &Map<String, Value>, path: &Path, key: &str) -> Result<usize> {
    match cfg.get(key) {
        Some(v) => v
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| SaeError::config(path, key, format!("expected a non-negative integer, found {v}"))),
        None => Err(SaeError::config(path, key, "missing")),
    }
}

fn parse_version(v: &str) -> Option<u64> {
    v.trim_start_matches('v').split(['.', '-']).next()?.parse().ok()
}

/// Reads a SAELens SAE or transcoder directory.
pub fn read_saelens(dir: &Path) -> Result<SparseCoder> {
    let cfg_path = dir.join(CFG_FILE);
    let raw = read_json(&cfg_path)?;
    let version = raw
        .get("sae_lens_version")
        .or_else(|| raw.get("metadata").and_then(|m| m.get("sae_lens_version")))
        .and_then(Value::as_str)
        .map(str::to_string);
    let pre6 = version.as_deref().and_then(parse_version).is_none_or(|major| major < 6);
    let (cfg, metadata) = if pre6 { flat_to_v6(&raw) } else { split_v6(&raw) };
    let p = cfg_path.as_path();

    let arch = cfg.get("architecture").and_then(Value::as_str).unwrap_or("standard").to_string();
    let d_in = usize_field(&cfg, p, "d_in")?;
    let d_sae = usize_field(&cfg, p, "d_sae")?;
    let normalize = match cfg.get("normalize_activations") {
        None | Some(Value::Null) => Normalization::None,
        Some(Value::Bool(b)) => {
            if *b {
                Normalization::ExpectedAverageOnlyIn
            } else {
                Normalization::None
            }
        }
        Some(Value::String(s)) => Normalization::parse(s).ok_or_else(|| {
            SaeError::config(
                p,
                "normalize_activations",
                format!("`{s}` is not supported (none, expected_average_only_in, constant_norm_rescale, layer_norm)"),
            )
        })?,
        Some(v) => return Err(SaeError::config(p, "normalize_activations", format!("unexpected value {v}"))),
    };

    let (family, transcoder, skip) = match arch.as_str() {
        "standard" | "relu" => ("relu", false, false),
        "topk" => ("topk", false, false),
        "jumprelu" | "batchtopk" => ("jumprelu", false, false),
        "gated" => ("gated", false, false),
        "groupmax" => ("groupmax", false, false),
        "transcoder" => ("relu", true, false),
        "skip_transcoder" => ("relu", true, true),
        "jumprelu_transcoder" => ("jumprelu", true, false),
        "jumprelu_skip_transcoder" => ("jumprelu", true, true),
        "topk_transcoder" => ("topk", true, false),
        "topk_skip_transcoder" => ("topk", true, true),
        "gated_transcoder" => ("gated", true, false),
        "gated_skip_transcoder" => ("gated", true, true),
        other => {
            return Err(SaeError::UnsupportedFormat {
                path: cfg_path.clone(),
                found: format!(
                    "SAELens architecture `{other}` (supported: standard, topk, batchtopk, jumprelu, gated, transcoder, skip_transcoder, jumprelu_transcoder, jumprelu_skip_transcoder)"
                ),
            });
        }
    };
    let d_out = if transcoder { usize_field(&cfg, p, "d_out")? } else { d_in };
    let apply_b_dec_to_input =
        if transcoder { false } else { cfg.get("apply_b_dec_to_input").and_then(Value::as_bool).unwrap_or(true) };
    let k = || -> Result<usize> {
        let k = usize_field(&cfg, p, "k").or_else(|_| {
            cfg.get("k").and_then(Value::as_f64).map(|x| x as usize).ok_or_else(|| SaeError::config(p, "k", "missing"))
        })?;
        if k == 0 || k > d_sae {
            return Err(SaeError::config(p, "k", format!("{k} is not in 1..={d_sae}")));
        }
        Ok(k)
    };

    let wpath = dir.join(WEIGHTS_FILE);
    let w = StFile::open(&wpath)?;
    let w_enc = w.f32("W_enc", Some(&[d_in, d_sae]))?;
    let mut w_dec = w.f32("W_dec", Some(&[d_sae, d_out]))?;
    let b_dec = w.f32("b_dec", Some(&[d_out]))?;
    let vec_sae = |name: &str| w.f32(name, Some(&[d_sae]));
    let (activation, b_enc) = match family {
        "relu" => (Activation::Relu, vec_sae("b_enc")?),
        "topk" => (Activation::TopK { k: k()? }, vec_sae("b_enc")?),
        "groupmax" => (Activation::GroupMax { k: k()? }, vec_sae("b_enc")?),
        "jumprelu" => (Activation::JumpRelu { threshold: vec_sae("threshold")? }, vec_sae("b_enc")?),
        "gated" => (
            Activation::Gated { b_gate: vec_sae("b_gate")?, b_mag: vec_sae("b_mag")?, r_mag: vec_sae("r_mag")? },
            Vec::new(),
        ),
        _ => unreachable!(),
    };
    let w_skip = if skip { Some(w.f32("W_skip", Some(&[d_out, d_in]))?) } else { None };

    // Old SAELens fine-tuned a per-latent scale applied before the decoder;
    // folding it into W_dec rows keeps the outputs and activations unchanged.
    if w.has("scaling_factor") {
        let s = vec_sae("scaling_factor")?;
        if s.iter().any(|&v| v != 1.0) {
            for (j, &sj) in s.iter().enumerate() {
                w_dec[j * d_out..(j + 1) * d_out].iter_mut().for_each(|v| *v *= sj);
            }
        }
    }

    let log_sparsity = read_sparsity(dir, d_sae)?;
    let mut coder = SparseCoder {
        activation,
        d_in,
        d_sae,
        d_out,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        w_skip,
        apply_b_dec_to_input,
        normalize,
        transcoder,
        metadata,
        log_sparsity,
    };
    if family == "topk" && cfg.get("rescale_acts_by_decoder_norm").and_then(Value::as_bool) == Some(true) {
        coder.fold_decoder_norms();
    }
    coder.validate().map_err(|e| SaeError::config(p, "<weights>", e.to_string()))?;
    Ok(coder)
}

fn read_sparsity(dir: &Path, d_sae: usize) -> Result<Option<Vec<f32>>> {
    let sp = dir.join(SPARSITY_FILE);
    if !sp.exists() {
        return Ok(None);
    }
    let f = StFile::open(&sp)?;
    let name = if f.has("sparsity") { "sparsity" } else { "log_feature_sparsity" };
    Ok(Some(f.f32(name, Some(&[d_sae]))?))
}

/// Splits a v6 config into the coder fields and its metadata block.
fn split_v6(raw: &Map<String, Value>) -> (Map<String, Value>, Metadata) {
    let meta = raw.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut cfg = raw.clone();
    cfg.remove("metadata");
    let mut metadata = Metadata::from_json_map(&meta);
    if let Some(r) = raw.get("reshape_activations").and_then(Value::as_str) {
        if r != "none" {
            metadata.extra.insert("reshape_activations".into(), Value::String(r.into()));
        }
    }
    (cfg, metadata)
}

/// Maps a pre-6.0 flat config to v6 fields and metadata.
fn flat_to_v6(raw: &Map<String, Value>) -> (Map<String, Value>, Metadata) {
    let mut cfg = Map::new();
    let mut meta = Map::new();
    for (k, v) in raw {
        match k.as_str() {
            "hook_point" => {
                meta.insert("hook_name".into(), v.clone());
            }
            "hook_point_head_index" => {
                meta.insert("hook_head_index".into(), v.clone());
            }
            "hook_point_out" => {
                meta.insert("hook_name_out".into(), v.clone());
            }
            key if STRUCTURAL_KEYS.contains(&key) => {
                cfg.insert(k.clone(), v.clone());
            }
            _ => {
                meta.insert(k.clone(), v.clone());
            }
        }
    }
    let act = cfg
        .get("activation_fn")
        .or_else(|| cfg.get("activation_fn_str"))
        .and_then(Value::as_str)
        .unwrap_or("relu")
        .to_string();
    if !cfg.contains_key("architecture") {
        cfg.insert("architecture".into(), Value::String("standard".into()));
    }
    if act == "topk" {
        if let Some(k) = cfg.get("activation_fn_kwargs").and_then(|kw| kw.get("k")).cloned() {
            cfg.insert("architecture".into(), Value::String("topk".into()));
            cfg.insert("k".into(), k);
        }
    } else if act != "relu" && cfg.get("architecture").and_then(Value::as_str) == Some("standard") {
        // e.g. "tanh-relu": keep it visible so the reader rejects it by name.
        cfg.insert("architecture".into(), Value::String(format!("standard/{act}")));
    }
    (cfg, Metadata::from_json_map(&meta))
}

/// Writes a coder as a SAELens v6 directory (created if needed).
pub fn write_saelens(coder: &SparseCoder, dir: &Path) -> Result<()> {
    coder.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| SaeError::io(dir, e))?;
    let mut meta = coder.metadata.to_json_map();
    let reshape = meta.remove("reshape_activations").unwrap_or_else(|| json!("none"));
    meta.entry("sae_lens_version").or_insert_with(|| json!(WRITTEN_SAELENS_VERSION));
    meta.insert("saepipe_version".into(), json!(env!("CARGO_PKG_VERSION")));
    if !coder.loads_in_saelens() {
        // Said in the file itself, for whoever opens it without saepipe.
        meta.insert(
            "saepipe_saelens_note".into(),
            json!(format!(
                "SAELens has no `{}` architecture, so SAE.load_from_disk cannot load this directory; saepipe loads it, and the tensors follow the SAELens layout of the same encoder (W_enc, b_enc, W_dec, b_dec; d_out for the output side)",
                coder.architecture_name()
            )),
        );
    }
    let mut cfg = Map::new();
    cfg.insert("architecture".into(), json!(coder.architecture_name()));
    cfg.insert("d_in".into(), json!(coder.d_in));
    cfg.insert("d_sae".into(), json!(coder.d_sae));
    cfg.insert("dtype".into(), json!("float32"));
    cfg.insert("device".into(), json!("cpu"));
    cfg.insert("apply_b_dec_to_input".into(), json!(coder.apply_b_dec_to_input && !coder.is_transcoder()));
    cfg.insert("normalize_activations".into(), json!(coder.normalize.as_str()));
    cfg.insert("reshape_activations".into(), reshape);
    if coder.is_transcoder() {
        cfg.insert("d_out".into(), json!(coder.d_out));
    }
    match &coder.activation {
        Activation::TopK { k } | Activation::GroupMax { k } => {
            cfg.insert("k".into(), json!(k));
            cfg.insert("rescale_acts_by_decoder_norm".into(), json!(false));
        }
        _ => {}
    }
    cfg.insert("metadata".into(), Value::Object(meta));
    let cfg_path = dir.join(CFG_FILE);
    let text = serde_json::to_string_pretty(&Value::Object(cfg)).expect("JSON of plain values");
    std::fs::write(&cfg_path, text).map_err(|e| SaeError::io(&cfg_path, e))?;

    let (d_in, d_sae, d_out) = (coder.d_in, coder.d_sae, coder.d_out);
    let mut t: Vec<(String, Out)> = vec![
        ("W_enc".into(), Out::F32(vec![d_in, d_sae], coder.w_enc.clone())),
        ("W_dec".into(), Out::F32(vec![d_sae, d_out], coder.w_dec.clone())),
        ("b_dec".into(), Out::F32(vec![d_out], coder.b_dec.clone())),
    ];
    match &coder.activation {
        Activation::Gated { b_gate, b_mag, r_mag } => {
            t.push(("b_gate".into(), Out::F32(vec![d_sae], b_gate.clone())));
            t.push(("b_mag".into(), Out::F32(vec![d_sae], b_mag.clone())));
            t.push(("r_mag".into(), Out::F32(vec![d_sae], r_mag.clone())));
        }
        other => {
            t.push(("b_enc".into(), Out::F32(vec![d_sae], coder.b_enc.clone())));
            if let Activation::JumpRelu { threshold } = other {
                t.push(("threshold".into(), Out::F32(vec![d_sae], threshold.clone())));
            }
        }
    }
    if let Some(ws) = &coder.w_skip {
        t.push(("W_skip".into(), Out::F32(vec![d_out, d_in], ws.clone())));
    }
    st::write(&dir.join(WEIGHTS_FILE), t, None)?;
    if let Some(s) = &coder.log_sparsity {
        st::write(&dir.join(SPARSITY_FILE), vec![("sparsity".into(), Out::F32(vec![d_sae], s.clone()))], None)?;
    }
    Ok(())
}

/// `log10(freq + 1e-10)` per latent, the value SAELens stores as `sparsity`.
pub fn log_sparsity_from_freq(freq: &[f64]) -> Vec<f32> {
    freq.iter().map(|f| (f + 1e-10).log10() as f32).collect()
}
