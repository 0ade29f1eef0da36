//! HF `config.json` → the runtime's model configuration.

use crate::error::{ModelError, Result};
use serde_json::Value;
use std::path::Path;

/// The supported model families, from `config.json`'s `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// GPT-2 (`gpt2`, HF `GPT2LMHeadModel`): learned positions, sequential residual.
    Gpt2,
    /// GPT-NeoX and Pythia (`gpt_neox`, HF `GPTNeoXForCausalLM`): rotary
    /// positions, usually a parallel residual.
    NeoX,
    /// Llama 2/3/3.1/3.2, Mistral and Qwen2/2.5 (`llama` / `mistral` /
    /// `qwen2`, HF `LlamaForCausalLM` / `MistralForCausalLM` /
    /// `Qwen2ForCausalLM`): RMSNorm, a gated (SwiGLU) MLP, grouped-query
    /// attention and rotary positions on every dimension (with Llama 3's
    /// `rope_scaling` when the config has it); Qwen2 adds q/k/v biases,
    /// Qwen3 (`qwen3`, `Qwen3ForCausalLM`) an RMSNorm on each query and key
    /// head (`qk_norm`).
    Llama,
    /// Gemma 2 (`gemma2`, HF `Gemma2ForCausalLM`): the Llama layout with
    /// (1 + w) RMSNorms before and after attention and MLP, the embedding
    /// scaled by √d_model, GeGLU, `query_pre_attn_scalar`, attention and final
    /// logit soft-capping, and sliding-window attention on alternate layers.
    Gemma2,
    /// Gemma 3, text-only (`gemma3_text`, HF `Gemma3ForCausalLM`): Gemma 2
    /// without soft-capping, with QK-norm, and local (sliding-window) layers
    /// with their own rotary base, five to each global layer.
    Gemma3,
}

/// The HF `architectures` values this runtime loads, with their families.
pub const SUPPORTED_ARCHITECTURES: &[(&str, Arch)] = &[
    ("GPT2LMHeadModel", Arch::Gpt2),
    ("GPTNeoXForCausalLM", Arch::NeoX),
    ("LlamaForCausalLM", Arch::Llama),
    ("MistralForCausalLM", Arch::Llama),
    ("Qwen2ForCausalLM", Arch::Llama),
    ("Qwen3ForCausalLM", Arch::Llama),
    ("Gemma2ForCausalLM", Arch::Gemma2),
    ("Gemma3ForCausalLM", Arch::Gemma3),
];

/// The normalization before attention, MLP and unembedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// LayerNorm: centered, scaled, then `· w + b` (GPT-2, GPT-NeoX).
    LayerNorm,
    /// RMSNorm: scaled by the root mean square, then `· w`; no centering, no
    /// bias (Llama, Mistral).
    RmsNorm,
}

/// Rescaled rotary frequencies (HF `rope_scaling` / `rope_parameters`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1's NTK-by-parts scaling (`rope_type: llama3`): wavelengths
    /// longer than `original_max_position_embeddings / low_freq_factor` are
    /// divided by `factor`, shorter than `… / high_freq_factor` kept, and the
    /// ones between interpolated.
    Llama3 {
        /// `factor`
        factor: f64,
        /// `low_freq_factor`
        low_freq_factor: f64,
        /// `high_freq_factor`
        high_freq_factor: f64,
        /// `original_max_position_embeddings`
        original_max_position_embeddings: f64,
    },
    /// Linear position interpolation (`rope_type: linear`): every frequency
    /// divided by `factor` (Gemma 3's global layers).
    Linear {
        /// `factor`
        factor: f64,
    },
}

/// Sliding-window ("local") attention on some layers (Gemma 2 and 3): each
/// token of such a layer attends to at most `window` tokens, itself included.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalAttention {
    /// `sliding_window`
    pub window: usize,
    /// Per layer, whether it is local (HF `layer_types`: `sliding_attention`).
    pub layers: Vec<bool>,
    /// The rotary base of local layers when it differs from the global one
    /// (Gemma 3's `rope_local_base_freq`); local layers never get `rope_scaling`.
    pub rotary_base: Option<f32>,
}

/// The MLP non-linearity (a tensor-level kind shared with the compute backends).
pub use saepipe_core::compute::Activation;

/// A model's architecture and sizes, read from an HF `config.json` (either
/// architecture's field names) and named as TransformerLens names them.
///
/// [`ModelConfig::from_json`] guarantees `d_model = n_heads · d_head`, an even
/// `rotary_dim`, positive `n_layers`, `d_vocab` and `d_mlp`, and sizes within
/// bounds that keep their products from overflowing.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Which architecture's tensor names and forward pass apply.
    pub arch: Arch,
    /// Width of the residual stream (`n_embd` / `hidden_size`).
    pub d_model: usize,
    /// Number of transformer blocks (`n_layer` / `num_hidden_layers`).
    pub n_layers: usize,
    /// Attention heads per block (`n_head` / `num_attention_heads`).
    pub n_heads: usize,
    /// Key and value heads per block (`num_key_value_heads`, grouped-query
    /// attention); `n_heads` for multi-head attention. Divides `n_heads`.
    pub n_kv_heads: usize,
    /// Width of one attention head: `d_model / n_heads`, or the config's `head_dim`.
    pub d_head: usize,
    /// Hidden width of the MLP (`n_inner`, default 4·d_model / `intermediate_size`).
    pub d_mlp: usize,
    /// Vocabulary size (`vocab_size`); token ids are `0..d_vocab`.
    pub d_vocab: usize,
    /// Maximum context length (`n_positions` / `max_position_embeddings`).
    /// GPT-2's positions are learned, so its runs cannot be longer.
    pub n_ctx: usize,
    /// Normalization epsilon (`layer_norm_epsilon` / `layer_norm_eps`, default
    /// 1e-5; `rms_norm_eps`, default 1e-6).
    pub eps: f32,
    /// LayerNorm or RMSNorm.
    pub norm: Norm,
    /// The MLP non-linearity (`activation_function` / `hidden_act`).
    pub act: Activation,
    /// Gated MLP: hidden = act(x·W_gate) · (x·W_in + b_in) (Llama's SwiGLU).
    pub gated_mlp: bool,
    /// Rotary dimensions per head (GPT-NeoX); 0 for learned positions.
    pub rotary_dim: usize,
    /// Rotary frequency base θ (`rotary_emb_base` / `rope_theta`, default
    /// 10000); unused when `rotary_dim` is 0.
    pub rotary_base: f32,
    /// Rescaled rotary frequencies (Llama 3.1's `rope_scaling`), if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Mistral's `sliding_window`: each token attends to at most this many
    /// (itself included). Runs are limited to contexts this long, where the
    /// window changes nothing.
    pub sliding_window: Option<usize>,
    /// Gemma's sliding-window layers, if any (run at any context length).
    pub local_attention: Option<LocalAttention>,
    /// Attention scores are divided by √`query_pre_attn_scalar` instead of
    /// √d_head (Gemma's `query_pre_attn_scalar`).
    pub query_pre_attn_scalar: Option<f32>,
    /// Attention scores soft-capped at this value before masking (Gemma 2's
    /// `attn_logit_softcapping`).
    pub attn_soft_cap: Option<f32>,
    /// Logits soft-capped at this value (Gemma 2's `final_logit_softcapping`).
    pub final_soft_cap: Option<f32>,
    /// RMSNorms after attention and after the MLP, before their outputs join
    /// the residual (Gemma 2/3; TransformerLens `ln1_post`, `ln2_post`).
    pub post_norms: bool,
    /// An RMSNorm over each query and key head, after the projections and
    /// before the rotary embedding (Qwen3, Gemma 3; TransformerLens
    /// `attn.q_norm`, `attn.k_norm`).
    pub qk_norm: bool,
    /// Attention and MLP read the same residual (GPT-NeoX `use_parallel_residual`).
    pub parallel: bool,
    /// GPT-2 `scale_attn_weights`: divide attention scores by sqrt(d_head).
    pub scale_attn_weights: bool,
    /// GPT-2 `scale_attn_by_inverse_layer_idx`: also divide block `l`'s
    /// attention scores by `l + 1`.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// GPT-NeoX `attention_bias` (transformers >= 5), Llama `attention_bias`
    /// (default false): query, key and value biases exist (Qwen2: always).
    pub attention_bias: bool,
    /// The attention output projection has a bias: with `attention_bias`,
    /// except for Qwen2 (biased q/k/v, unbiased output).
    pub attn_out_bias: bool,
    /// HF `tie_word_embeddings`: the unembedding is the transposed token
    /// embedding. GPT-2 (default true) reads `lm_head.weight` only when it is
    /// false; GPT-NeoX always reads its own unembedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id, when the config declares one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id, when the config declares one.
    pub eos_token_id: Option<u32>,
}

pub(crate) fn get<'a>(v: &'a Value, path: &Path, key: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| ModelError::Config { path: path.into(), message: format!("missing field `{key}`") })
}

fn usize_of(v: &Value, path: &Path, key: &str) -> Result<usize> {
    get(v, path, key)?.as_u64().map(|x| x as usize).ok_or_else(|| ModelError::Config {
        path: path.into(),
        message: format!("field `{key}` must be a non-negative integer"),
    })
}

/// Upper bounds on the sizes a `config.json` may declare: far above any model this
/// runtime can hold, low enough that products of sizes cannot overflow or request
/// absurd allocations.
pub(crate) const MAX_HIDDEN_SIZE: usize = 65_536;
pub(crate) const MAX_LAYERS: usize = 1_024;
pub(crate) const MAX_HEADS: usize = 1_024;
pub(crate) const MAX_VOCAB: usize = 10_000_000;
pub(crate) const MAX_CONTEXT: usize = 1_048_576;
pub(crate) const MAX_INTERMEDIATE_SIZE: usize = 1_048_576;

/// [`usize_of`] that also fails, naming the field, above `max`.
pub(crate) fn bounded(v: &Value, path: &Path, key: &str, max: usize) -> Result<usize> {
    check_max(usize_of(v, path, key)?, path, key, max)
}

pub(crate) fn check_max(x: usize, path: &Path, key: &str, max: usize) -> Result<usize> {
    if x > max {
        return Err(ModelError::Config {
            path: path.into(),
            message: format!("field `{key}` is {x}, above the supported maximum of {max}"),
        });
    }
    Ok(x)
}

/// LayerNorm epsilon under either spelling (`layer_norm_epsilon`, `layer_norm_eps`).
fn ln_eps(v: &Value) -> f32 {
    v.get("layer_norm_epsilon").or_else(|| v.get("layer_norm_eps")).and_then(Value::as_f64).unwrap_or(1e-5) as f32
}

pub(crate) fn bool_or(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

pub(crate) fn activation(name: &str, path: &Path) -> Result<Activation> {
    match name {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluNew),
        "gelu" => Ok(Activation::Gelu),
        "relu" => Ok(Activation::Relu),
        "silu" | "swish" => Ok(Activation::Silu),
        other => Err(ModelError::Config { path: path.into(), message: format!("unsupported activation `{other}`") }),
    }
}

impl ModelConfig {
    /// Reads and parses the `config.json` at `path` (see [`from_json`](Self::from_json)).
    /// An unreadable file is [`ModelError::Io`], invalid JSON [`ModelError::Config`].
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Config { path: path.into(), message: format!("invalid JSON: {e}") })?;
        Self::from_json(&v, path)
    }

    /// Parses an HF config; `path` names the file in errors. An unknown
    /// `model_type` is [`ModelError::UnknownArchitecture`], a missing, oversized
    /// or inconsistent field [`ModelError::Config`].
    pub fn from_json(v: &Value, path: &Path) -> Result<ModelConfig> {
        let cfg = Self::parse(v, path)?;
        let bad = |message: String| Err(ModelError::Config { path: path.into(), message });
        // Llama's and Gemma's parsers check the division when the config gives no head_dim.
        if cfg.n_heads == 0
            || cfg.d_head == 0
            || (matches!(cfg.arch, Arch::Gpt2 | Arch::NeoX) && cfg.d_model % cfg.n_heads != 0)
        {
            return bad(format!("hidden size {} is not divisible by {} attention heads", cfg.d_model, cfg.n_heads));
        }
        if cfg.n_kv_heads == 0 || cfg.n_heads % cfg.n_kv_heads != 0 {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                cfg.n_heads, cfg.n_kv_heads
            ));
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
        let model_type = family(v, path)?;
        // Llama 3 lists several end-of-sequence tokens; the first is the one a
        // tokenizer appends.
        let tok = |k: &str| {
            let x = v.get(k)?;
            x.as_u64().or_else(|| x.as_array()?.first()?.as_u64()).map(|x| x as u32)
        };
        match model_type {
            Arch::Llama => crate::arch::llama::config(v, path),
            Arch::Gemma2 | Arch::Gemma3 => crate::arch::gemma::config(v, path, model_type),
            Arch::Gpt2 => {
                // `reorder_and_upcast_attn` only changes where HF upcasts to f32 in
                // half precision; this runtime computes in f32 throughout, so it is accepted.
                let d_model = bounded(v, path, "n_embd", MAX_HIDDEN_SIZE)?;
                let n_heads = bounded(v, path, "n_head", MAX_HEADS)?;
                let d_mlp = match v.get("n_inner").and_then(Value::as_u64) {
                    Some(x) => {
                        check_max(usize::try_from(x).unwrap_or(usize::MAX), path, "n_inner", MAX_INTERMEDIATE_SIZE)?
                    }
                    None => 4 * d_model,
                };
                Ok(ModelConfig {
                    arch: Arch::Gpt2,
                    d_model,
                    n_layers: bounded(v, path, "n_layer", MAX_LAYERS)?,
                    n_heads,
                    n_kv_heads: n_heads,
                    d_head: d_model.checked_div(n_heads).unwrap_or(0),
                    d_mlp,
                    d_vocab: bounded(v, path, "vocab_size", MAX_VOCAB)?,
                    n_ctx: bounded(v, path, "n_positions", MAX_CONTEXT)?,
                    eps: ln_eps(v),
                    norm: Norm::LayerNorm,
                    act: activation(v.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new"), path)?,
                    gated_mlp: false,
                    rotary_dim: 0,
                    rotary_base: 0.0,
                    rope_scaling: None,
                    sliding_window: None,
                    local_attention: None,
                    query_pre_attn_scalar: None,
                    attn_soft_cap: None,
                    final_soft_cap: None,
                    post_norms: false,
                    qk_norm: false,
                    parallel: false,
                    scale_attn_weights: bool_or(v, "scale_attn_weights", true),
                    scale_attn_by_inverse_layer_idx: bool_or(v, "scale_attn_by_inverse_layer_idx", false),
                    attention_bias: true,
                    attn_out_bias: true,
                    tie_word_embeddings: bool_or(v, "tie_word_embeddings", true),
                    bos_token_id: tok("bos_token_id"),
                    eos_token_id: tok("eos_token_id"),
                })
            }
            Arch::NeoX => {
                let d_model = bounded(v, path, "hidden_size", MAX_HIDDEN_SIZE)?;
                let n_heads = bounded(v, path, "num_attention_heads", MAX_HEADS)?;
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
                if let Some(t) =
                    rope.and_then(|r| r.get("rope_type")).and_then(Value::as_str).filter(|t| *t != "default")
                {
                    return Err(ModelError::Config {
                        path: path.into(),
                        message: format!("rope_type `{t}` is not supported (only default rotary)"),
                    });
                }
                if v.get("rope_scaling").is_some_and(|s| !s.is_null()) {
                    return Err(ModelError::Config {
                        path: path.into(),
                        message: "rope_scaling is not supported (only default rotary)".into(),
                    });
                }
                if !(0.0..=1.0).contains(&pct) {
                    return Err(ModelError::Config {
                        path: path.into(),
                        message: format!("rotary fraction {pct} is outside [0, 1]"),
                    });
                }
                Ok(ModelConfig {
                    arch: Arch::NeoX,
                    d_model,
                    n_layers: bounded(v, path, "num_hidden_layers", MAX_LAYERS)?,
                    n_heads,
                    n_kv_heads: n_heads,
                    d_head,
                    d_mlp: bounded(v, path, "intermediate_size", MAX_INTERMEDIATE_SIZE)?,
                    d_vocab: bounded(v, path, "vocab_size", MAX_VOCAB)?,
                    n_ctx: bounded(v, path, "max_position_embeddings", MAX_CONTEXT)?,
                    eps: ln_eps(v),
                    norm: Norm::LayerNorm,
                    act: activation(v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu"), path)?,
                    gated_mlp: false,
                    rotary_dim: (pct * d_head as f64) as usize,
                    rotary_base: base as f32,
                    rope_scaling: None,
                    sliding_window: None,
                    local_attention: None,
                    query_pre_attn_scalar: None,
                    attn_soft_cap: None,
                    final_soft_cap: None,
                    post_norms: false,
                    qk_norm: false,
                    parallel: bool_or(v, "use_parallel_residual", true),
                    scale_attn_weights: true,
                    scale_attn_by_inverse_layer_idx: false,
                    attention_bias: bool_or(v, "attention_bias", true),
                    attn_out_bias: bool_or(v, "attention_bias", true),
                    tie_word_embeddings: bool_or(v, "tie_word_embeddings", false),
                    bos_token_id: tok("bos_token_id"),
                    eos_token_id: tok("eos_token_id"),
                })
            }
        }
    }

    /// Key/value width of a block: `n_kv_heads · d_head`.
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.d_head
    }

    /// The sliding window of block `l`, if it is a local layer.
    pub fn window(&self, l: usize) -> Option<usize> {
        self.local_attention.as_ref().filter(|a| a.layers.get(l).copied().unwrap_or(false)).map(|a| a.window)
    }

    /// The rotary inverse frequencies of local layers (see
    /// [`LocalAttention::rotary_base`]): plain base^(−2i/rotary_dim), never rescaled.
    pub fn rope_inv_freq_local(&self) -> Vec<f32> {
        let base = self.local_attention.as_ref().and_then(|a| a.rotary_base).unwrap_or(self.rotary_base);
        let rot = self.rotary_dim;
        (0..rot / 2).map(|i| 1.0 / (base.powf((2 * i) as f32 / rot as f32))).collect()
    }

    /// The rotary inverse frequencies, `[rotary_dim / 2]`: base^(−2i/rotary_dim),
    /// rescaled as `rope_scaling` says (computed as transformers does, in f32).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let rot = self.rotary_dim;
        let plain = (0..rot / 2).map(|i| 1.0 / (self.rotary_base.powf((2 * i) as f32 / rot as f32)));
        match self.rope_scaling {
            None => plain.collect(),
            Some(RopeScaling::Linear { factor }) => plain.map(|f| f / factor as f32).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let (factor, lo, hi, old) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    original_max_position_embeddings as f32,
                );
                let (low_wavelen, high_wavelen) = (old / lo, old / hi);
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - lo) / (hi - lo);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// The family of a config: from `architectures` when it names one (an unknown
/// one is an error naming it and the supported list), else from `model_type`.
fn family(v: &Value, path: &Path) -> Result<Arch> {
    let supported = || SUPPORTED_ARCHITECTURES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    if let Some(archs) = v.get("architectures").and_then(Value::as_array) {
        let names: Vec<&str> = archs.iter().filter_map(Value::as_str).collect();
        if let Some(&(_, arch)) = names.iter().find_map(|n| SUPPORTED_ARCHITECTURES.iter().find(|(s, _)| s == n)) {
            return Ok(arch);
        }
        if !names.is_empty() {
            return Err(ModelError::UnknownArchitecture {
                path: path.into(),
                name: names.join("`, `"),
                field: "architectures",
                supported: supported(),
            });
        }
    }
    match get(v, path, "model_type")?.as_str().unwrap_or_default() {
        "gpt2" => Ok(Arch::Gpt2),
        "gpt_neox" => Ok(Arch::NeoX),
        "llama" | "mistral" | "qwen2" | "qwen3" => Ok(Arch::Llama),
        "gemma2" => Ok(Arch::Gemma2),
        "gemma3_text" => Ok(Arch::Gemma3),
        other => Err(ModelError::UnknownArchitecture {
            path: path.into(),
            name: other.to_string(),
            field: "model_type",
            supported: "gpt2, gpt_neox, llama, mistral, qwen2, qwen3, gemma2, gemma3_text".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn neox() -> Value {
        json!({"model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
               "intermediate_size": 256, "vocab_size": 100, "max_position_embeddings": 128})
    }

    #[test]
    fn oversized_fields_are_errors_naming_file_and_field() {
        let path = Path::new("models/x/config.json");
        assert!(ModelConfig::from_json(&neox(), path).is_ok());
        for (key, value) in [
            ("hidden_size", json!(2147483648u64)),
            ("num_hidden_layers", json!(1_000_000)),
            ("num_attention_heads", json!(4096)),
            ("vocab_size", json!(1u64 << 40)),
            ("max_position_embeddings", json!(1u64 << 30)),
            ("intermediate_size", json!(1u64 << 32)),
        ] {
            let mut v = neox();
            v[key] = value;
            let e = ModelConfig::from_json(&v, path).unwrap_err().to_string();
            assert!(
                e.contains("config.json")
                    && e.contains(&format!("field `{key}`"))
                    && e.contains("above the supported maximum"),
                "{key}: {e}"
            );
        }
        let gpt2 = json!({"model_type": "gpt2", "n_embd": 2147483648u64, "n_head": 4, "n_layer": 2, "vocab_size": 100, "n_positions": 128});
        let e = ModelConfig::from_json(&gpt2, path).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("field `n_embd`"), "{e}");
        let mut v = neox();
        v["num_attention_heads"] = json!(3);
        let e = ModelConfig::from_json(&v, path).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("not divisible"), "{e}");
    }
}
