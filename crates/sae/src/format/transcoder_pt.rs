//! The transcoder paper's files (jacobdunefsky/transcoder_circuits, e.g. the
//! hub repo `pchlenski/gpt2-transcoders`): one `torch.save` archive per coder
//! holding `{"cfg": <sae_training.config.LanguageModelSAERunnerConfig>,
//! "state_dict": {W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_out],
//! b_dec [d_in], b_dec_out [d_out] (transcoders only)}}`.
//!
//! The archive is read by the non-executing unpickler of `saepipe-torchfile`
//! in object mode: the config dataclass comes back as inert data, and no code
//! named by the file is run.
//!
//! Forward pass of the paper's `SparseAutoencoder`:
//! acts = ReLU((x − b_dec)·W_enc + b_enc); out = acts·W_dec + b_dec_out for
//! transcoders, + b_dec for plain SAEs (`is_transcoder` false).
//!
//! Plain SAEs map onto a [`SparseCoder`] directly (`apply_b_dec_to_input`).
//! A transcoder has two decoder biases, the input-side `b_dec` and the output
//! bias `b_dec_out`; [`SparseCoder`] has one (the output bias). The input-side
//! bias is folded into the encoder bias, b_enc' = b_enc − b_dec·W_enc
//! (accumulated in f64), which gives the same pre-activations up to rounding;
//! the coder's `b_dec` is `b_dec_out`. This is also the SAELens `transcoder`
//! layout, so such a coder can be written as a SAELens directory unchanged.

use std::path::Path;

use saepipe_torchfile::{StorageDtype, TorchArchive, TorchFileError, UnpickleOptions, Value};
use serde_json::{Map, Value as Json};

use crate::arch::{Activation, Normalization};
use crate::coder::SparseCoder;
use crate::error::{Result, SaeError};
use crate::meta::Metadata;

/// The file name extensions routed to this reader by [`crate::format::detect_format`].
pub const EXTENSIONS: &[&str] = &["pt", "pth"];

pub(crate) fn torch_error(path: &Path, e: TorchFileError) -> SaeError {
    match e {
        TorchFileError::Io { path, source } => SaeError::Io { path, source },
        TorchFileError::NotArchive { message, .. } => SaeError::UnsupportedFormat {
            path: path.into(),
            found: format!("a torch pickle file that is not a readable torch.save zip archive ({message})"),
        },
        other => SaeError::Invalid(other.to_string()),
    }
}

/// Short description of a value, for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Dict(items) => {
            let keys: Vec<String> = items
                .iter()
                .map(|(k, _)| match k {
                    Value::Str(s) => format!("`{s}`"),
                    other => describe(other),
                })
                .collect();
            format!("a dict with keys [{}]", keys.join(", "))
        }
        Value::Object { class, .. } => format!("an object of class {class}"),
        Value::Tensor(t) => format!("a tensor of shape {:?}", t.shape),
        Value::List(_) => "a list".into(),
        Value::Tuple(_) => "a tuple".into(),
        Value::Str(_) => "a string".into(),
        Value::None => "None".into(),
        _ => "a scalar".into(),
    }
}

/// A pickled value as JSON (for the coder's metadata): tensors and bytes are
/// summarised, dtypes and other globals become their names.
fn to_json(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(format!("<{} bytes>", b.len())),
        Value::List(items) | Value::Tuple(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Dict(items) => Json::Object(
            items
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Tensor(t) => Json::String(format!("<tensor {:?}>", t.shape)),
        Value::Global(name) => Json::String(name.clone()),
        Value::Object { class, state, .. } => {
            let mut m = Map::new();
            m.insert("__class__".into(), Json::String(class.clone()));
            if let Json::Object(fields) = to_json(state) {
                m.extend(fields);
            }
            Json::Object(m)
        }
    }
}

/// Reads a transcoder-paper `.pt` file (a transcoder or a plain SAE).
pub fn load_transcoder_pt(path: &Path) -> Result<SparseCoder> {
    let archive =
        TorchArchive::open_with(path, UnpickleOptions { allow_objects: true }).map_err(|e| torch_error(path, e))?;
    let file = path.display().to_string();
    let root = &archive.root;
    let shape_err = |what: String| SaeError::config(path, "<root>", what);
    if root.as_dict().is_none() {
        return Err(shape_err(format!(
            "expected a dict with `cfg` and `state_dict` (a transcoder_circuits save_model file), found {}",
            describe(root)
        )));
    }
    let (cfg, sd) = match (root.get("cfg"), root.get("state_dict")) {
        (Some(c), Some(s)) => (c, s),
        (None, _) | (_, None) => {
            let missing = if root.get("cfg").is_none() { "cfg" } else { "state_dict" };
            return Err(SaeError::config(
                path,
                missing,
                format!(
                    "missing: expected a dict with `cfg` and `state_dict` (a transcoder_circuits save_model file), found {}",
                    describe(root)
                ),
            ));
        }
    };
    if !matches!(cfg, Value::Object { .. } | Value::Dict(_)) {
        return Err(SaeError::config(
            path,
            "cfg",
            format!("expected the run config (an object or dict), found {}", describe(cfg)),
        ));
    }
    if sd.as_dict().is_none() {
        return Err(SaeError::config(
            path,
            "state_dict",
            format!("expected a dict of tensors, found {}", describe(sd)),
        ));
    }

    let field = |k: &str| cfg.get(k).filter(|v| !matches!(v, Value::None));
    let cfg_usize = |k: &str| -> Result<Option<usize>> {
        match field(k) {
            None => Ok(None),
            Some(v) => v.as_i64().filter(|&i| i > 0).map(|i| Some(i as usize)).ok_or_else(|| {
                SaeError::config(
                    path,
                    &format!("cfg.{k}"),
                    format!("expected a positive integer, found {}", describe(v)),
                )
            }),
        }
    };
    let cfg_str = |k: &str| field(k).and_then(Value::as_str).map(str::to_string);

    let tensor = |name: &str| -> Result<&saepipe_torchfile::TensorRef> {
        match sd.get(name) {
            Some(Value::Tensor(t)) => Ok(t),
            Some(other) => Err(SaeError::config(
                path,
                &format!("state_dict.{name}"),
                format!("expected a tensor, found {}", describe(other)),
            )),
            None => Err(SaeError::MissingTensor { file: file.clone(), name: name.into() }),
        }
    };
    let read = |name: &str, expected: &[usize]| -> Result<Vec<f32>> {
        let t = tensor(name)?;
        if t.shape != expected {
            return Err(SaeError::BadShape {
                file: file.clone(),
                name: name.into(),
                expected: expected.to_vec(),
                found: t.shape.clone(),
            });
        }
        if !matches!(t.dtype, StorageDtype::F32 | StorageDtype::F64 | StorageDtype::F16 | StorageDtype::BF16) {
            return Err(SaeError::BadDtype { file: file.clone(), name: name.into(), dtype: format!("{:?}", t.dtype) });
        }
        archive.tensor_f32(t, name).map_err(|e| torch_error(path, e))
    };

    // Dimensions: from the config where it has them, else from W_enc / W_dec.
    let enc_shape = tensor("W_enc")?.shape.clone();
    let d_in = match cfg_usize("d_in")? {
        Some(d) => d,
        None if enc_shape.len() == 2 => enc_shape[0],
        None => {
            return Err(SaeError::config(path, "cfg.d_in", "missing, and W_enc is not a matrix"));
        }
    };
    let d_sae = match cfg_usize("d_sae")? {
        Some(d) => d,
        None if enc_shape.len() == 2 => enc_shape[1],
        None => {
            return Err(SaeError::config(path, "cfg.d_sae", "missing, and W_enc is not a matrix"));
        }
    };
    let transcoder = match field("is_transcoder") {
        Some(v) => v.as_bool().ok_or_else(|| {
            SaeError::config(path, "cfg.is_transcoder", format!("expected a boolean, found {}", describe(v)))
        })?,
        None => sd.get("b_dec_out").is_some(),
    };
    let d_out = if transcoder { cfg_usize("d_out")?.unwrap_or(d_in) } else { d_in };

    let w_enc = read("W_enc", &[d_in, d_sae])?;
    let b_enc = read("b_enc", &[d_sae])?;
    let w_dec = read("W_dec", &[d_sae, d_out])?;
    let b_dec_in = read("b_dec", &[d_in])?;
    let (b_enc, b_dec) = if transcoder {
        let b_out = read("b_dec_out", &[d_out])?;
        // b_enc' = b_enc − b_dec·W_enc: the input-side bias moves into the encoder.
        let mut folded: Vec<f64> = b_enc.iter().map(|&b| b as f64).collect();
        for (i, &bi) in b_dec_in.iter().enumerate() {
            if bi != 0.0 {
                let row = &w_enc[i * d_sae..(i + 1) * d_sae];
                folded.iter_mut().zip(row).for_each(|(f, &w)| *f -= bi as f64 * w as f64);
            }
        }
        (folded.into_iter().map(|v| v as f32).collect(), b_out)
    } else {
        (b_enc, b_dec_in)
    };

    let mut meta = Map::new();
    let put = |m: &mut Map<String, Json>, k: &str, v: Option<Json>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put(&mut meta, "model_name", cfg_str("model_name").map(Json::String));
    put(&mut meta, "hook_name", cfg_str("hook_point").map(Json::String));
    put(&mut meta, "hook_head_index", field("hook_point_head_index").and_then(Value::as_i64).map(Json::from));
    if transcoder {
        put(&mut meta, "hook_name_out", cfg_str("out_hook_point").map(Json::String));
    }
    put(&mut meta, "context_size", field("context_size").and_then(Value::as_i64).map(Json::from));
    put(&mut meta, "dataset_path", cfg_str("dataset_path").map(Json::String));
    let mut metadata = Metadata::from_json_map(&meta);
    let mut source = Map::new();
    source.insert("format".into(), Json::String("transcoder_circuits .pt".into()));
    if let Some(name) = path.file_name().and_then(|s| s.to_str()) {
        source.insert("file".into(), Json::String(name.into()));
    }
    if let Some(class) = cfg.class() {
        source.insert("cfg_class".into(), Json::String(class.into()));
    }
    if transcoder {
        source.insert("b_dec_folded_into_b_enc".into(), Json::Bool(true));
    }
    metadata.extra.insert("transcoder_pt".into(), Json::Object(source));
    metadata.extra.insert("transcoder_pt_cfg".into(), to_json(cfg));

    let coder = SparseCoder {
        activation: Activation::Relu,
        d_in,
        d_sae,
        d_out,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        w_skip: None,
        apply_b_dec_to_input: !transcoder,
        normalize: Normalization::None,
        transcoder,
        metadata,
        log_sparsity: None,
    };
    coder.validate().map_err(|e| SaeError::config(path, "<weights>", e.to_string()))?;
    Ok(coder)
}
