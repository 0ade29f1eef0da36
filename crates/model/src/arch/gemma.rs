//! Gemma 2 and Gemma 3 (text-only) checkpoints (HF `Gemma2ForCausalLM`,
//! `Gemma3ForCausalLM`): the Llama tensor layout without biases, with four
//! RMSNorms per block (`input_layernorm` → TransformerLens `ln1`,
//! `post_attention_layernorm` → `ln1_post`, `pre_feedforward_layernorm` →
//! `ln2`, `post_feedforward_layernorm` → `ln2_post`) and, for Gemma 3, a
//! QK-norm (`self_attn.q_norm`, `self_attn.k_norm`).
//!
//! As TransformerLens's `convert_gemma_weights` does, every Gemma RMSNorm
//! weight w is loaded as 1 + w (Gemma multiplies by 1 + w), and the token
//! embedding is scaled by √d_model (so `hook_embed` is the scaled embedding);
//! the tied unembedding is the unscaled embedding.

use crate::config::{
    Arch, LocalAttention, MAX_CONTEXT, MAX_HEADS, MAX_HIDDEN_SIZE, MAX_INTERMEDIATE_SIZE, MAX_LAYERS, MAX_VOCAB,
    ModelConfig, Norm, RopeScaling, activation, bool_or, bounded, check_max,
};
use crate::error::{ModelError, Result};
use crate::params::{LayerParams, Params, transpose};
use crate::weights::TensorFiles;
use serde_json::Value;
use std::path::Path;

/// The configuration of a `gemma2` or `gemma3_text` config.json, in the
/// dialects of transformers 4 (`rope_theta`, `rope_local_base_freq`,
/// `rope_scaling`, `sliding_window_pattern`) and 5 (`rope_parameters`, per
/// layer type for Gemma 3; `layer_types`).
pub(crate) fn config(v: &Value, path: &Path, arch: Arch) -> Result<ModelConfig> {
    let bad = |message: String| ModelError::Config { path: path.into(), message };
    let gemma3 = arch == Arch::Gemma3;
    let f64_of = |x: Option<&Value>, key: &str| -> Result<Option<f64>> {
        match x {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| bad(format!("field `{key}` must be a number"))),
        }
    };
    let d_model = bounded(v, path, "hidden_size", MAX_HIDDEN_SIZE)?;
    let n_heads = bounded(v, path, "num_attention_heads", MAX_HEADS)?;
    let n_kv_heads = match v.get("num_key_value_heads").filter(|x| !x.is_null()) {
        Some(_) => bounded(v, path, "num_key_value_heads", MAX_HEADS)?,
        None => n_heads,
    };
    // transformers' default head_dim for both families.
    let d_head = match v.get("head_dim").filter(|x| !x.is_null()) {
        Some(_) => bounded(v, path, "head_dim", MAX_HIDDEN_SIZE)?,
        None => 256,
    };
    let n_layers = bounded(v, path, "num_hidden_layers", MAX_LAYERS)?;
    if bool_or(v, "attention_bias", false) {
        return Err(bad("attention_bias: true is not supported (Gemma checkpoints have no biases)".into()));
    }
    if bool_or(v, "use_bidirectional_attention", false) {
        return Err(bad("use_bidirectional_attention: true is not supported (only causal language models are)".into()));
    }
    let positive = |key: &str| -> Result<Option<f32>> {
        match f64_of(v.get(key), key)? {
            Some(x) if x > 0.0 => Ok(Some(x as f32)),
            Some(x) => Err(bad(format!("field `{key}` must be positive or null (got {x})"))),
            None => Ok(None),
        }
    };
    // transformers' defaults: Gemma 2 soft-caps (50 and 30), Gemma 3 does not.
    let soft_cap = |key: &str, gemma2_default: f32| -> Result<Option<f32>> {
        match v.get(key) {
            None if !gemma3 => Ok(Some(gemma2_default)),
            _ => positive(key),
        }
    };
    let attn_soft_cap = soft_cap("attn_logit_softcapping", 50.0)?;
    let final_soft_cap = soft_cap("final_logit_softcapping", 30.0)?;
    let query_pre_attn_scalar = Some(positive("query_pre_attn_scalar")?.unwrap_or(256.0));

    // Which layers are local (sliding-window): `layer_types` when present;
    // else Gemma 2 alternates (even layers local) and Gemma 3 makes every
    // `sliding_window_pattern`-th layer (default 6) global.
    let layers: Vec<bool> = match v.get("layer_types").and_then(Value::as_array) {
        Some(types) => {
            if types.len() != n_layers {
                return Err(bad(format!("layer_types lists {} layers, the model has {n_layers}", types.len())));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => {
                        Err(bad(format!("layer type {t} is not supported (sliding_attention and full_attention are)")))
                    }
                })
                .collect::<Result<_>>()?
        }
        None if gemma3 => {
            let pattern = v.get("sliding_window_pattern").and_then(Value::as_u64).unwrap_or(6).max(1) as usize;
            (0..n_layers).map(|i| (i + 1) % pattern != 0).collect()
        }
        None => (0..n_layers).map(|i| i % 2 == 0).collect(),
    };
    let window = match v.get("sliding_window") {
        None => Some(4096),
        Some(Value::Null) => None,
        Some(x) => Some(
            x.as_u64()
                .map(|w| w as usize)
                .filter(|&w| w > 0)
                .ok_or_else(|| bad("field `sliding_window` must be a positive integer or null".into()))?,
        ),
    };

    // Rotary bases: Gemma 2 one; Gemma 3 a global one (with an optional
    // linear scaling) and a local one.
    let rope = v.get("rope_parameters").filter(|r| !r.is_null());
    let (global_rope, local_rope) = match rope {
        Some(r) if gemma3 && (r.get("full_attention").is_some() || r.get("sliding_attention").is_some()) => {
            (r.get("full_attention"), r.get("sliding_attention"))
        }
        Some(r) => (Some(r), None),
        None => (None, None),
    };
    let theta = |params: Option<&Value>, top_key: &str, default: f64| -> Result<f64> {
        Ok(match f64_of(params.and_then(|r| r.get("rope_theta")), "rope_parameters.rope_theta")? {
            Some(t) => t,
            None => f64_of(v.get(top_key), top_key)?.unwrap_or(default),
        })
    };
    let rotary_base = theta(global_rope, "rope_theta", if gemma3 { 1_000_000.0 } else { 10_000.0 })?;
    let local_base = theta(local_rope, "rope_local_base_freq", 10_000.0)?;
    let scaling = v.get("rope_scaling").filter(|s| !s.is_null()).or(global_rope);
    let rope_scaling = match scaling {
        None => None,
        Some(s) => match s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default") {
            "default" => None,
            "linear" if gemma3 => {
                let factor = f64_of(s.get("factor"), "rope_scaling.factor")?
                    .filter(|&f| f > 0.0)
                    .ok_or_else(|| bad("rope_scaling of type linear needs a positive `factor`".into()))?;
                Some(RopeScaling::Linear { factor })
            }
            other => {
                return Err(bad(format!(
                    "rope scaling type `{other}` is not supported for {} (default{} is)",
                    if gemma3 { "Gemma 3" } else { "Gemma 2" },
                    if gemma3 { " and linear" } else { "" }
                )));
            }
        },
    };
    if let Some(s) = local_rope.and_then(|r| r.get("rope_type")).and_then(Value::as_str).filter(|t| *t != "default") {
        return Err(bad(format!(
            "rope scaling type `{s}` on sliding-attention layers is not supported (only default)"
        )));
    }
    let local_attention = window.filter(|_| layers.iter().any(|&l| l)).map(|window| LocalAttention {
        window,
        layers,
        rotary_base: gemma3.then_some(local_base as f32),
    });
    let act_name = v.get("hidden_activation").or_else(|| v.get("hidden_act")).and_then(Value::as_str);
    let act = activation(act_name.unwrap_or("gelu_pytorch_tanh"), path)?;
    let tok = |k: &str| {
        let x = v.get(k)?;
        x.as_u64().or_else(|| x.as_array()?.first()?.as_u64()).map(|x| x as u32)
    };
    Ok(ModelConfig {
        arch,
        d_model,
        n_layers,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: bounded(v, path, "intermediate_size", MAX_INTERMEDIATE_SIZE)?,
        d_vocab: bounded(v, path, "vocab_size", MAX_VOCAB)?,
        n_ctx: check_max(
            v.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(8192) as usize,
            path,
            "max_position_embeddings",
            MAX_CONTEXT,
        )?,
        eps: f64_of(v.get("rms_norm_eps"), "rms_norm_eps")?.unwrap_or(1e-6) as f32,
        norm: Norm::RmsNorm,
        act,
        gated_mlp: true,
        rotary_dim: d_head,
        rotary_base: rotary_base as f32,
        rope_scaling,
        sliding_window: None,
        local_attention,
        query_pre_attn_scalar,
        attn_soft_cap,
        final_soft_cap,
        post_norms: true,
        qk_norm: gemma3,
        parallel: false,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        attention_bias: false,
        attn_out_bias: false,
        tie_word_embeddings: bool_or(v, "tie_word_embeddings", true),
        bos_token_id: tok("bos_token_id"),
        eos_token_id: tok("eos_token_id"),
    })
}

/// Reads a Gemma 2 or Gemma 3 checkpoint into unprocessed TransformerLens-layout
/// [`Params`] (see the module documentation).
pub(crate) fn load(cfg: &ModelConfig, t: &TensorFiles) -> Result<Params> {
    let (d, v, f) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let (hd, kv) = (cfg.n_heads * cfg.d_head, cfg.kv_width());
    let g = |name: &str, shape: &[usize]| t.get(&format!("model.{name}"), shape);
    let lin =
        |name: &str, out: usize, inp: usize| -> Result<Vec<f32>> { Ok(transpose(&g(name, &[out, inp])?, out, inp)) };
    // Gemma's RMSNorm multiplies by 1 + w.
    let one_plus = |name: &str, n: usize| -> Result<Vec<f32>> { Ok(g(name, &[n])?.iter().map(|w| 1.0 + w).collect()) };
    let norm = |name: &str| -> Result<Option<(Vec<f32>, Vec<f32>)>> { Ok(Some((one_plus(name, d)?, vec![0f32; d]))) };
    let qk_norm = |name: &str| if cfg.qk_norm { one_plus(name, cfg.d_head).map(Some) } else { Ok(None) };
    let embed = g("embed_tokens.weight", &[v, d])?;
    // transformers scales the embedding by √d_model in the model's dtype;
    // TransformerLens folds the same factor into W_E.
    let scale = (d as f64).sqrt() as f32;
    let w_e = embed.iter().map(|x| x * scale).collect();
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let h = |s: &str| format!("layers.{l}.{s}");
        layers.push(LayerParams {
            ln1: norm(&h("input_layernorm.weight"))?,
            w_q: lin(&h("self_attn.q_proj.weight"), hd, d)?,
            b_q: vec![0f32; hd],
            w_k: lin(&h("self_attn.k_proj.weight"), kv, d)?,
            b_k: vec![0f32; kv],
            w_v: lin(&h("self_attn.v_proj.weight"), kv, d)?,
            b_v: vec![0f32; kv],
            q_norm: qk_norm(&h("self_attn.q_norm.weight"))?,
            k_norm: qk_norm(&h("self_attn.k_norm.weight"))?,
            w_o: lin(&h("self_attn.o_proj.weight"), d, hd)?,
            b_o: vec![0f32; d],
            ln1_post: norm(&h("post_attention_layernorm.weight"))?,
            ln2: norm(&h("pre_feedforward_layernorm.weight"))?,
            w_gate: Some(lin(&h("mlp.gate_proj.weight"), f, d)?),
            w_in: lin(&h("mlp.up_proj.weight"), f, d)?,
            b_in: vec![0f32; f],
            w_out: lin(&h("mlp.down_proj.weight"), d, f)?,
            b_out: vec![0f32; d],
            ln2_post: norm(&h("post_feedforward_layernorm.weight"))?,
        });
    }
    let ln_final = norm("norm.weight")?;
    let w_u = if cfg.tie_word_embeddings {
        transpose(&embed, v, d)
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
            ("pre_feedforward_layernorm.weight", vec![d]),
            ("mlp.gate_proj.weight", vec![f, d]),
            ("mlp.up_proj.weight", vec![f, d]),
            ("mlp.down_proj.weight", vec![d, f]),
            ("post_feedforward_layernorm.weight", vec![d]),
        ];
        if cfg.qk_norm {
            per.extend([("self_attn.q_norm.weight", vec![cfg.d_head]), ("self_attn.k_norm.weight", vec![cfg.d_head])]);
        }
        t.extend(per.into_iter().map(|(n, s)| (format!("model.layers.{l}.{n}"), s)));
    }
    t.push(("model.norm.weight".into(), vec![d]));
    if !cfg.tie_word_embeddings {
        t.push(("lm_head.weight".into(), vec![v, d]));
    }
    t
}

#[cfg(test)]
mod tests {
    use crate::config::{Arch, ModelConfig, RopeScaling};
    use serde_json::{Value, json};
    use std::path::Path;

    fn parse(v: &Value) -> crate::Result<ModelConfig> {
        ModelConfig::from_json(v, Path::new("models/x/config.json"))
    }

    /// Gemma 2 2B's config.json as the hub ships it (transformers 4.42).
    fn gemma_2_2b() -> Value {
        json!({
            "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
            "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
            "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
            "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2",
            "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
            "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
            "torch_dtype": "float32", "transformers_version": "4.42.4", "use_cache": true, "vocab_size": 256000
        })
    }

    /// Gemma 3 1B's config.json as the hub ships it (transformers 4.50).
    fn gemma_3_1b() -> Value {
        json!({
            "architectures": ["Gemma3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
            "attn_logit_softcapping": null, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
            "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912,
            "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
            "num_hidden_layers": 26, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256,
            "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": null, "rope_theta": 1000000,
            "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
            "transformers_version": "4.50.0.dev0", "use_cache": true, "vocab_size": 262144
        })
    }

    #[test]
    fn gemma_2_2b_config() {
        let c = parse(&gemma_2_2b()).unwrap();
        assert_eq!(c.arch, Arch::Gemma2);
        assert_eq!((c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_head), (2304, 26, 8, 4, 256));
        assert_eq!((c.attn_soft_cap, c.final_soft_cap, c.query_pre_attn_scalar), (Some(50.0), Some(30.0), Some(256.0)));
        assert_eq!((c.post_norms, c.qk_norm, c.tie_word_embeddings, c.rotary_base), (true, false, true, 10000.0));
        // HF makes even layers sliding (TransformerLens: ["local", "global"] * 13).
        let locals: Vec<usize> = (0..26).filter(|&l| c.window(l).is_some()).collect();
        assert_eq!(locals, (0..26).step_by(2).collect::<Vec<_>>());
        assert_eq!(c.window(0), Some(4096));
        // transformers 5's spelling of the same file.
        let mut v5 = gemma_2_2b();
        let o = v5.as_object_mut().unwrap();
        o.remove("rope_theta");
        o.insert("rope_parameters".into(), json!({"rope_theta": 10000.0, "rope_type": "default"}));
        o.insert(
            "layer_types".into(),
            json!((0..26).map(|i| if i % 2 == 0 { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>()),
        );
        assert_eq!(parse(&v5).unwrap(), c);
    }

    #[test]
    fn gemma_3_1b_config() {
        let c = parse(&gemma_3_1b()).unwrap();
        assert_eq!(c.arch, Arch::Gemma3);
        assert_eq!((c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_head), (1152, 26, 4, 1, 256));
        assert_eq!((c.attn_soft_cap, c.final_soft_cap, c.qk_norm, c.post_norms), (None, None, true, true));
        // Every sixth layer is global: 5, 11, 17, 23 (TransformerLens's attn_types).
        let globals: Vec<usize> = (0..26).filter(|&l| c.window(l).is_none()).collect();
        assert_eq!(globals, vec![5, 11, 17, 23]);
        assert_eq!(c.window(0), Some(512));
        assert_eq!((c.rotary_base, c.local_attention.as_ref().unwrap().rotary_base), (1_000_000.0, Some(10000.0)));
        let (g, l) = (c.rope_inv_freq(), c.rope_inv_freq_local());
        assert_eq!((g.len(), g[0], l[0]), (128, 1.0, 1.0));
        assert!((l[64] / 0.01 - 1.0).abs() < 1e-6 && (g[64] / 0.001 - 1.0).abs() < 1e-6, "{} {}", l[64], g[64]);
        // Gemma 3 4B's text config: linear scaling on global layers only.
        let mut v = gemma_3_1b();
        v["rope_scaling"] = json!({"factor": 8.0, "rope_type": "linear"});
        let c4 = parse(&v).unwrap();
        assert_eq!(c4.rope_scaling, Some(RopeScaling::Linear { factor: 8.0 }));
        assert_eq!((c4.rope_inv_freq()[0], c4.rope_inv_freq_local()[0]), (0.125, 1.0));
        // transformers 5's spelling: rope_parameters per layer type.
        let mut v5 = gemma_3_1b();
        let o = v5.as_object_mut().unwrap();
        for k in ["rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"] {
            o.remove(k);
        }
        o.insert(
            "rope_parameters".into(),
            json!({"full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
                   "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}}),
        );
        o.insert(
            "layer_types".into(),
            json!(
                (0..26)
                    .map(|i| if (i + 1) % 6 == 0 { "full_attention" } else { "sliding_attention" })
                    .collect::<Vec<_>>()
            ),
        );
        assert_eq!(parse(&v5).unwrap(), c);
    }

    #[test]
    fn unsupported_gemma_settings_are_named() {
        let err = |base: Value, f: &dyn Fn(&mut Value)| {
            let mut v = base;
            f(&mut v);
            parse(&v).unwrap_err().to_string()
        };
        let e = err(gemma_2_2b(), &|v| v["attention_bias"] = true.into());
        assert!(e.contains("attention_bias: true is not supported"), "{e}");
        let e = err(gemma_3_1b(), &|v| v["use_bidirectional_attention"] = true.into());
        assert!(e.contains("use_bidirectional_attention: true is not supported"), "{e}");
        let e = err(gemma_2_2b(), &|v| v["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0}));
        assert!(e.contains("rope scaling type `linear` is not supported for Gemma 2"), "{e}");
        let e = err(gemma_3_1b(), &|v| v["layer_types"] = json!(["sliding_attention"]));
        assert!(e.contains("layer_types lists 1 layers, the model has 26"), "{e}");
        let e = err(gemma_3_1b(), &|v| v["layer_types"] = json!(vec!["chunked_attention"; 26]));
        assert!(e.contains("layer type \"chunked_attention\" is not supported"), "{e}");
        let e = err(gemma_2_2b(), &|v| v["attn_logit_softcapping"] = (-1.0).into());
        assert!(e.contains("`attn_logit_softcapping` must be positive or null"), "{e}");
        // Without `architectures`, the model_type decides.
        let mut v = gemma_3_1b();
        v.as_object_mut().unwrap().remove("architectures");
        assert_eq!(parse(&v).unwrap().arch, Arch::Gemma3);
    }
}
