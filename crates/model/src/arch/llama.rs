//! Llama 2/3/3.1/3.2 and Mistral checkpoints (HF `LlamaForCausalLM`,
//! `MistralForCausalLM`). PyTorch Linear weights are [out, in] and are
//! transposed into TransformerLens's x·W layout; keys and values have
//! `num_key_value_heads` heads (grouped-query attention). RMSNorm has a weight
//! and no bias: the bias half of the loaded norm pairs is zero.

use crate::config::{
    Arch, MAX_CONTEXT, MAX_HEADS, MAX_HIDDEN_SIZE, MAX_INTERMEDIATE_SIZE, MAX_LAYERS, MAX_VOCAB, ModelConfig, Norm,
    RopeScaling, activation, bool_or, bounded, check_max,
};
use crate::error::{ModelError, Result};
use crate::params::{LayerParams, Params, transpose};
use crate::weights::TensorFiles;
use serde_json::Value;
use std::path::Path;

/// The configuration of a `llama` or `mistral` config.json, in either dialect
/// of the rotary settings: `rope_theta` + `rope_scaling` (transformers < 5 and
/// the hub's files) or `rope_parameters` (transformers >= 5).
pub(crate) fn config(v: &Value, path: &Path) -> Result<ModelConfig> {
    let bad = |message: String| ModelError::Config { path: path.into(), message };
    let d_model = bounded(v, path, "hidden_size", MAX_HIDDEN_SIZE)?;
    let n_heads = bounded(v, path, "num_attention_heads", MAX_HEADS)?;
    let n_kv_heads = match v.get("num_key_value_heads").filter(|x| !x.is_null()) {
        Some(_) => bounded(v, path, "num_key_value_heads", MAX_HEADS)?,
        None => n_heads,
    };
    let d_head = match v.get("head_dim").filter(|x| !x.is_null()) {
        Some(_) => bounded(v, path, "head_dim", MAX_HIDDEN_SIZE)?,
        None => {
            if n_heads == 0 || d_model % n_heads != 0 {
                return Err(bad(format!("hidden size {d_model} is not divisible by {n_heads} attention heads")));
            }
            d_model / n_heads
        }
    };
    let f64_of = |x: Option<&Value>, key: &str| -> Result<Option<f64>> {
        match x {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| bad(format!("field `{key}` must be a number"))),
        }
    };
    let rope = v.get("rope_parameters").filter(|r| !r.is_null());
    let theta = match f64_of(v.get("rope_theta"), "rope_theta")? {
        Some(t) => t,
        None => f64_of(rope.and_then(|r| r.get("rope_theta")), "rope_parameters.rope_theta")?.unwrap_or(10000.0),
    };
    // `rope_scaling` (older files) or `rope_parameters` (transformers >= 5)
    // hold the scaling; `type` is the pre-4.45 spelling of `rope_type`.
    let scaling = v.get("rope_scaling").filter(|s| !s.is_null()).or(rope);
    let rope_scaling = match scaling {
        None => None,
        Some(s) => {
            let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
            match kind {
                "default" => None,
                "llama3" => {
                    let field = |k: &str| -> Result<f64> {
                        f64_of(s.get(k), &format!("rope_scaling.{k}"))?
                            .ok_or_else(|| bad(format!("rope_scaling of type llama3 lacks `{k}`")))
                    };
                    let scaling = RopeScaling::Llama3 {
                        factor: field("factor")?,
                        low_freq_factor: field("low_freq_factor")?,
                        high_freq_factor: field("high_freq_factor")?,
                        original_max_position_embeddings: field("original_max_position_embeddings")?,
                    };
                    let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, .. } = scaling;
                    if factor <= 0.0 || low_freq_factor <= 0.0 || high_freq_factor <= low_freq_factor {
                        return Err(bad(format!(
                            "rope_scaling of type llama3 needs factor > 0 and 0 < low_freq_factor < high_freq_factor (got {factor}, {low_freq_factor}, {high_freq_factor})"
                        )));
                    }
                    Some(scaling)
                }
                other => {
                    return Err(bad(format!(
                        "rope scaling type `{other}` is not supported (default and llama3 are; TransformerLens has no other)"
                    )));
                }
            }
        }
    };
    if bool_or(v, "mlp_bias", false) {
        return Err(bad(
            "mlp_bias: true is not supported (TransformerLens's gated MLP has no gate bias to hold it)".into()
        ));
    }
    let sliding_window = match v.get("sliding_window").filter(|x| !x.is_null()) {
        Some(x) => Some(
            x.as_u64()
                .map(|w| w as usize)
                .filter(|&w| w > 0)
                .ok_or_else(|| bad("field `sliding_window` must be a positive integer or null".into()))?,
        ),
        None => None,
    };
    let act = activation(v.get("hidden_act").and_then(Value::as_str).unwrap_or("silu"), path)?;
    let eps = f64_of(v.get("rms_norm_eps"), "rms_norm_eps")?.unwrap_or(1e-6) as f32;
    let tok = |k: &str| {
        let x = v.get(k)?;
        x.as_u64().or_else(|| x.as_array()?.first()?.as_u64()).map(|x| x as u32)
    };
    Ok(ModelConfig {
        arch: Arch::Llama,
        d_model,
        n_layers: bounded(v, path, "num_hidden_layers", MAX_LAYERS)?,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: bounded(v, path, "intermediate_size", MAX_INTERMEDIATE_SIZE)?,
        d_vocab: bounded(v, path, "vocab_size", MAX_VOCAB)?,
        n_ctx: check_max(
            v.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(2048) as usize,
            path,
            "max_position_embeddings",
            MAX_CONTEXT,
        )?,
        eps,
        norm: Norm::RmsNorm,
        act,
        gated_mlp: true,
        rotary_dim: d_head,
        rotary_base: theta as f32,
        rope_scaling,
        sliding_window,
        parallel: false,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        attention_bias: bool_or(v, "attention_bias", false),
        tie_word_embeddings: bool_or(v, "tie_word_embeddings", false),
        bos_token_id: tok("bos_token_id"),
        eos_token_id: tok("eos_token_id"),
    })
}

/// Reads a Llama or Mistral checkpoint into unprocessed TransformerLens-layout
/// [`Params`]: every Linear weight transposed, the RMSNorm weights paired with
/// zero biases, the MLP's `gate_proj` as W_gate and `up_proj` as W_in; the
/// unembedding is `lm_head` unless the config ties it to the embedding.
pub(crate) fn load(cfg: &ModelConfig, t: &TensorFiles) -> Result<Params> {
    let (d, v, f) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let (hd, kv) = (cfg.n_heads * cfg.d_head, cfg.kv_width());
    let g = |name: &str, shape: &[usize]| t.get(&format!("model.{name}"), shape);
    // A Linear [out, in] as TransformerLens's [in, out].
    let lin =
        |name: &str, out: usize, inp: usize| -> Result<Vec<f32>> { Ok(transpose(&g(name, &[out, inp])?, out, inp)) };
    let bias = |name: &str, n: usize| if cfg.attention_bias { g(name, &[n]) } else { Ok(vec![0f32; n]) };
    let norm = |name: &str| -> Result<Option<(Vec<f32>, Vec<f32>)>> { Ok(Some((g(name, &[d])?, vec![0f32; d]))) };
    let w_e = g("embed_tokens.weight", &[v, d])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let h = |s: &str| format!("layers.{l}.{s}");
        layers.push(LayerParams {
            ln1: norm(&h("input_layernorm.weight"))?,
            w_q: lin(&h("self_attn.q_proj.weight"), hd, d)?,
            b_q: bias(&h("self_attn.q_proj.bias"), hd)?,
            w_k: lin(&h("self_attn.k_proj.weight"), kv, d)?,
            b_k: bias(&h("self_attn.k_proj.bias"), kv)?,
            w_v: lin(&h("self_attn.v_proj.weight"), kv, d)?,
            b_v: bias(&h("self_attn.v_proj.bias"), kv)?,
            w_o: lin(&h("self_attn.o_proj.weight"), d, hd)?,
            b_o: bias(&h("self_attn.o_proj.bias"), d)?,
            ln2: norm(&h("post_attention_layernorm.weight"))?,
            w_gate: Some(lin(&h("mlp.gate_proj.weight"), f, d)?),
            w_in: lin(&h("mlp.up_proj.weight"), f, d)?,
            b_in: vec![0f32; f],
            w_out: lin(&h("mlp.down_proj.weight"), d, f)?,
            b_out: vec![0f32; d],
        });
    }
    let ln_final = norm("norm.weight")?;
    let w_u = if cfg.tie_word_embeddings {
        transpose(&w_e, v, d)
    } else {
        transpose(&t.get("lm_head.weight", &[v, d])?, v, d)
    };
    Ok(Params { w_e, w_pos: None, layers, ln_final, w_u, b_u: vec![0.0; v] })
}

/// HF tensor names and shapes (`lm_head` omitted when tied).
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, v, f) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let (hd, kv) = (cfg.n_heads * cfg.d_head, cfg.kv_width());
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, d])];
    for l in 0..cfg.n_layers {
        let mut per = vec![
            ("input_layernorm.weight", vec![d]),
            ("self_attn.q_proj.weight", vec![hd, d]),
            ("self_attn.k_proj.weight", vec![kv, d]),
            ("self_attn.v_proj.weight", vec![kv, d]),
            ("self_attn.o_proj.weight", vec![d, hd]),
            ("post_attention_layernorm.weight", vec![d]),
            ("mlp.gate_proj.weight", vec![f, d]),
            ("mlp.up_proj.weight", vec![f, d]),
            ("mlp.down_proj.weight", vec![d, f]),
        ];
        if cfg.attention_bias {
            per.extend([
                ("self_attn.q_proj.bias", vec![hd]),
                ("self_attn.k_proj.bias", vec![kv]),
                ("self_attn.v_proj.bias", vec![kv]),
                ("self_attn.o_proj.bias", vec![d]),
            ]);
        }
        t.extend(per.into_iter().map(|(n, s)| (format!("model.layers.{l}.{n}"), s)));
    }
    t.push(("model.norm.weight".into(), vec![d]));
    if !cfg.tie_word_embeddings {
        t.push(("lm_head.weight".into(), vec![v, d]));
    }
    t
}
