//! HF `config.json` → the runtime's model configuration.

use crate::error::{ModelError, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Gpt2,
    NeoX,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// tanh approximation (GPT-2's `gelu_new`).
    GeluNew,
    /// exact erf GELU.
    Gelu,
    Relu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub d_vocab: usize,
    pub n_ctx: usize,
    pub eps: f32,
    pub act: Activation,
    /// Rotary dimensions per head (GPT-NeoX); 0 for learned positions.
    pub rotary_dim: usize,
    pub rotary_base: f32,
    /// Attention and MLP read the same residual (GPT-NeoX `use_parallel_residual`).
    pub parallel: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

fn get<'a>(v: &'a Value, path: &Path, key: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| ModelError::Config { path: path.into(), message: format!("missing field `{key}`") })
}

fn usize_of(v: &Value, path: &Path, key: &str) -> Result<usize> {
    get(v, path, key)?.as_u64().map(|x| x as usize).ok_or_else(|| ModelError::Config { path: path.into(), message: format!("field `{key}` must be a non-negative integer") })
}

fn f64_or(v: &Value, key: &str, default: f64) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(default)
}

fn activation(name: &str, path: &Path) -> Result<Activation> {
    match name {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluNew),
        "gelu" => Ok(Activation::Gelu),
        "relu" => Ok(Activation::Relu),
        other => Err(ModelError::Config { path: path.into(), message: format!("unsupported activation `{other}`") }),
    }
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config { path: path.into(), message: format!("invalid JSON: {e}") })?;
        Self::from_json(&v, path)
    }

    pub fn from_json(v: &Value, path: &Path) -> Result<ModelConfig> {
        let model_type = get(v, path, "model_type")?.as_str().unwrap_or_default();
        let tok = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as u32);
        match model_type {
            "gpt2" => {
                if v.get("reorder_and_upcast_attn").and_then(Value::as_bool) == Some(true) {
                    // Only changes numerics in reduced precision; we compute in f32 throughout.
                }
                if v.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
                    return Err(ModelError::Config { path: path.into(), message: "scale_attn_weights: false is not supported".into() });
                }
                let d_model = usize_of(v, path, "n_embd")?;
                let n_heads = usize_of(v, path, "n_head")?;
                let d_mlp = v.get("n_inner").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(4 * d_model);
                Ok(ModelConfig {
                    arch: Arch::Gpt2,
                    d_model,
                    n_layers: usize_of(v, path, "n_layer")?,
                    n_heads,
                    d_head: d_model / n_heads,
                    d_mlp,
                    d_vocab: usize_of(v, path, "vocab_size")?,
                    n_ctx: usize_of(v, path, "n_positions")?,
                    eps: f64_or(v, "layer_norm_epsilon", 1e-5) as f32,
                    act: activation(v.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new"), path)?,
                    rotary_dim: 0,
                    rotary_base: 0.0,
                    parallel: false,
                    scale_attn_by_inverse_layer_idx: v.get("scale_attn_by_inverse_layer_idx").and_then(Value::as_bool).unwrap_or(false),
                    tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(true),
                    bos_token_id: tok("bos_token_id"),
                    eos_token_id: tok("eos_token_id"),
                })
            }
            "gpt_neox" => {
                let d_model = usize_of(v, path, "hidden_size")?;
                let n_heads = usize_of(v, path, "num_attention_heads")?;
                let d_head = d_model / n_heads;
                // Two dialects: the hub's Pythia files (rotary_pct, rotary_emb_base) and
                // transformers >= 5 (rope_parameters.partial_rotary_factor, rope_theta).
                let rope = v.get("rope_parameters");
                let pct = v
                    .get("rotary_pct")
                    .and_then(Value::as_f64)
                    .or_else(|| rope.and_then(|r| r.get("partial_rotary_factor")).and_then(Value::as_f64))
                    .or_else(|| v.get("partial_rotary_factor").and_then(Value::as_f64))
                    .unwrap_or(1.0);
                let base = v
                    .get("rotary_emb_base")
                    .and_then(Value::as_f64)
                    .or_else(|| rope.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
                    .or_else(|| v.get("rope_theta").and_then(Value::as_f64))
                    .unwrap_or(10000.0);
                if let Some(t) = rope.and_then(|r| r.get("rope_type")).and_then(Value::as_str) {
                    if t != "default" {
                        return Err(ModelError::Config { path: path.into(), message: format!("rope_type `{t}` is not supported (only default rotary)") });
                    }
                }
                Ok(ModelConfig {
                    arch: Arch::NeoX,
                    d_model,
                    n_layers: usize_of(v, path, "num_hidden_layers")?,
                    n_heads,
                    d_head,
                    d_mlp: usize_of(v, path, "intermediate_size")?,
                    d_vocab: usize_of(v, path, "vocab_size")?,
                    n_ctx: usize_of(v, path, "max_position_embeddings")?,
                    eps: f64_or(v, "layer_norm_eps", 1e-5) as f32,
                    act: activation(v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu"), path)?,
                    rotary_dim: (pct * d_head as f64) as usize,
                    rotary_base: base as f32,
                    parallel: v.get("use_parallel_residual").and_then(Value::as_bool).unwrap_or(true),
                    scale_attn_by_inverse_layer_idx: false,
                    tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
                    bos_token_id: tok("bos_token_id"),
                    eos_token_id: tok("eos_token_id"),
                })
            }
            other => Err(ModelError::UnknownArchitecture(other.to_string())),
        }
    }
}
