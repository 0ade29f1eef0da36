//! EleutherAI sparsify directories: `cfg.json` (SparseCoderConfig fields plus
//! `d_in`) + `sae.safetensors` with `encoder.weight [d_sae, d_in]`,
//! `encoder.bias [d_sae]`, `W_dec [d_sae, d_out]`, `b_dec [d_out]` and, with
//! `skip_connection`, `W_skip [d_out, d_in]`.
//!
//! Forward (sparsify `SparseCoder`): x' = x − b_dec unless `transcode`;
//! pre = ReLU(x'·encoderᵀ + bias); top-k (or groupmax) of pre;
//! out = Σ acts·W_dec + b_dec (+ x·W_skipᵀ).

use std::path::Path;

use serde_json::Value;

use crate::arch::{Activation, Normalization};
use crate::coder::SparseCoder;
use crate::error::{Result, SaeError};
use crate::meta::Metadata;
use crate::st::StFile;

/// Config file of a sparsify directory.
pub const CFG_FILE: &str = "cfg.json";
/// Weights file of a sparsify directory.
pub const WEIGHTS_FILE: &str = "sae.safetensors";

/// Reads an EleutherAI sparsify directory (`cfg.json` + `sae.safetensors`).
pub fn read_sparsify(dir: &Path) -> Result<SparseCoder> {
    let cfg_path = dir.join(CFG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| SaeError::io(&cfg_path, e))?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| SaeError::Json { path: cfg_path.clone(), source: e })?;
    let obj = cfg.as_object().ok_or_else(|| SaeError::config(&cfg_path, "<root>", "expected a JSON object"))?;
    let get_u = |key: &str| obj.get(key).and_then(Value::as_u64).map(|v| v as usize);
    let d_in = get_u("d_in").ok_or_else(|| SaeError::config(&cfg_path, "d_in", "missing or not an integer"))?;
    let k = get_u("k").unwrap_or(32);
    let num_latents = get_u("num_latents").unwrap_or(0);
    let d_sae = if num_latents > 0 { num_latents } else { d_in * get_u("expansion_factor").unwrap_or(32) };
    let transcode = obj.get("transcode").and_then(Value::as_bool).unwrap_or(false);
    let activation = match obj.get("activation").and_then(Value::as_str).unwrap_or("topk") {
        "topk" => Activation::TopK { k },
        "groupmax" => Activation::GroupMax { k },
        other => {
            return Err(SaeError::config(
                &cfg_path,
                "activation",
                format!("`{other}` is not supported (topk, groupmax)"),
            ));
        }
    };

    let wpath = dir.join(WEIGHTS_FILE);
    let w = StFile::open(&wpath)?;
    let enc = w.f32("encoder.weight", Some(&[d_sae, d_in]))?;
    let b_enc = w.f32("encoder.bias", Some(&[d_sae]))?;
    let dec_shape = w.shape("W_dec")?;
    if dec_shape.len() != 2 || dec_shape[0] != d_sae {
        return Err(SaeError::BadShape {
            file: w.name.clone(),
            name: "W_dec".into(),
            expected: vec![d_sae, d_in],
            found: dec_shape,
        });
    }
    let d_out = dec_shape[1];
    let w_dec = w.f32("W_dec", Some(&[d_sae, d_out]))?;
    let b_dec = w.f32("b_dec", Some(&[d_out]))?;
    let w_skip = if w.has("W_skip") { Some(w.f32("W_skip", Some(&[d_out, d_in]))?) } else { None };

    // encoder.weight is [d_sae, d_in]; the coder keeps SAELens's [d_in, d_sae].
    let mut w_enc = vec![0f32; d_in * d_sae];
    for j in 0..d_sae {
        for i in 0..d_in {
            w_enc[i * d_sae + j] = enc[j * d_in + i];
        }
    }
    let mut metadata = Metadata::default();
    if let Some(name) = dir.file_name().and_then(|s| s.to_str()) {
        metadata.extra.insert("sparsify_hookpoint".into(), Value::String(name.into()));
    }
    metadata.extra.insert("sparsify_cfg".into(), cfg.clone());
    let coder = SparseCoder {
        activation,
        d_in,
        d_sae,
        d_out,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        w_skip,
        apply_b_dec_to_input: !transcode,
        normalize: Normalization::None,
        transcoder: transcode,
        metadata,
        log_sparsity: None,
    };
    coder.validate().map_err(|e| SaeError::config(&cfg_path, "<weights>", e.to_string()))?;
    Ok(coder)
}
