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
    /// GPT-2 `scale_attn_weights`: divide attention scores by sqrt(d_head).
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    /// GPT-NeoX `attention_bias` (transformers >= 5): QKV and output biases exist.
    pub attention_bias: bool,
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

/// LayerNorm epsilon under either spelling (`layer_norm_epsilon`, `layer_norm_eps`).
fn ln_eps(v: &Value) -> f32 {
    v.get("layer_norm_epsilon").or_else(|| v.get("layer_norm_eps")).and_then(Value::as_f64).unwrap_or(1e-5) as f32
}

fn bool_or(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
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

    /// Parses an HF config; `path` names the file in errors.
    pub fn from_json(v: &Value, path: &Path) -> Result<ModelConfig> {
        let cfg = Self::parse(v, path)?;
        let bad = |message: String| Err(ModelError::Config { path: path.into(), message });
        if cfg.n_heads == 0 || cfg.d_model % cfg.n_heads != 0 {
            return bad(format!("hidden size {} is not divisible by {} attention heads", cfg.d_model, cfg.n_heads));
        }
        if cfg.rotary_dim % 2 != 0 {
            return bad(format!("rotary dimension {} must be even", cfg.rotary_dim));
        }
        if cfg.n_layers == 0 || cfg.d_vocab == 0 || cfg.d_mlp == 0 {
            return bad("n_layers, vocab_size and the MLP width must be positive".into());
        }
        Ok(cfg)
    }

    fn parse(v: &Value, path: &Path) -> Result<ModelConfig> {
        let model_type = get(v, path, "model_type")?.as_str().unwrap_or_default();
        let tok = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as u32);
        match model_type {
            "gpt2" => {
                // `reorder_and_upcast_attn` only changes where HF upcasts to f32 in
                // half precision; this runtime computes in f32 throughout, so it is accepted.
                let d_model = usize_of(v, path, "n_embd")?;
                let n_heads = usize_of(v, path, "n_head")?;
                let d_mlp = v.get("n_inner").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(4 * d_model);
                Ok(ModelConfig {
                    arch: Arch::Gpt2,
                    d_model,
                    n_layers: usize_of(v, path, "n_layer")?,
                    n_heads,
                    d_head: d_model.checked_div(n_heads).unwrap_or(0),
                    d_mlp,
                    d_vocab: usize_of(v, path, "vocab_size")?,
                    n_ctx: usize_of(v, path, "n_positions")?,
                    eps: ln_eps(v),
                    act: activation(v.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new"), path)?,
                    rotary_dim: 0,
                    rotary_base: 0.0,
                    parallel: false,
                    scale_attn_weights: bool_or(v, "scale_attn_weights", true),
                    scale_attn_by_inverse_layer_idx: bool_or(v, "scale_attn_by_inverse_layer_idx", false),
                    attention_bias: true,
                    tie_word_embeddings: bool_or(v, "tie_word_embeddings", true),
                    bos_token_id: tok("bos_token_id"),
                    eos_token_id: tok("eos_token_id"),
                })
            }
            "gpt_neox" => {
                let d_model = usize_of(v, path, "hidden_size")?;
                let n_heads = usize_of(v, path, "num_attention_heads")?;
                let d_head = d_model.checked_div(n_heads).unwrap_or(0);
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
                if let Some(t) = rope.and_then(|r| r.get("rope_type")).and_then(Value::as_str).filter(|t| *t != "default") {
                    return Err(ModelError::Config { path: path.into(), message: format!("rope_type `{t}` is not supported (only default rotary)") });
                }
                if v.get("rope_scaling").is_some_and(|s| !s.is_null()) {
                    return Err(ModelError::Config { path: path.into(), message: "rope_scaling is not supported (only default rotary)".into() });
                }
                if !(0.0..=1.0).contains(&pct) {
                    return Err(ModelError::Config { path: path.into(), message: format!("rotary fraction {pct} is outside [0, 1]") });
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
                    eps: ln_eps(v),
                    act: activation(v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu"), path)?,
                    rotary_dim: (pct * d_head as f64) as usize,
                    rotary_base: base as f32,
                    parallel: bool_or(v, "use_parallel_residual", true),
                    scale_attn_weights: true,
                    scale_attn_by_inverse_layer_idx: false,
                    attention_bias: bool_or(v, "attention_bias", true),
                    tie_word_embeddings: bool_or(v, "tie_word_embeddings", false),
                    bos_token_id: tok("bos_token_id"),
                    eos_token_id: tok("eos_token_id"),
                })
            }
            other => Err(ModelError::UnknownArchitecture(other.to_string())),
        }
    }
}
