//! Llama 2/3/3.1/3.2, Mistral, Qwen2/2.5 and Qwen3 checkpoints (HF
//! `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`,
//! `Qwen3ForCausalLM`: the same tensor names and forward; Qwen2's query, key
//! and value projections have biases, Qwen3 normalizes each query and key head). PyTorch Linear weights are [out, in] and are
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

/// The configuration of a `llama`, `mistral`, `qwen2` or `qwen3` config.json, in either dialect
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
                    let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, .. } = scaling else {
                        unreachable!("built as Llama3 above")
                    };
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
    // Qwen2 always has q/k/v biases and never an output bias; it declares its
    // window with `use_sliding_window` (off by default).
    let is = |model_type: &str, arch: &str| {
        v.get("model_type").and_then(Value::as_str) == Some(model_type)
            || v.get("architectures").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == arch))
    };
    let qwen2 = is("qwen2", "Qwen2ForCausalLM");
    // Qwen3: an RMSNorm on every query and key head; like Qwen2, its window
    // applies only with `use_sliding_window`.
    let qwen3 = is("qwen3", "Qwen3ForCausalLM");
    let sliding_window =
        if (qwen2 || qwen3) && !bool_or(v, "use_sliding_window", false) { None } else { sliding_window };
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
        local_attention: None,
        query_pre_attn_scalar: None,
        attn_soft_cap: None,
        final_soft_cap: None,
        post_norms: false,
        qk_norm: qwen3,
        parallel: false,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        attention_bias: qwen2 || bool_or(v, "attention_bias", false),
        attn_out_bias: !qwen2 && bool_or(v, "attention_bias", false),
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
    let out_bias = |name: &str, n: usize| if cfg.attn_out_bias { g(name, &[n]) } else { Ok(vec![0f32; n]) };
    let norm = |name: &str| -> Result<Option<(Vec<f32>, Vec<f32>)>> { Ok(Some((g(name, &[d])?, vec![0f32; d]))) };
    // Qwen3's QK-norm: one RMSNorm weight over d_head, shared by every head.
    let qk_norm = |name: &str| if cfg.qk_norm { g(name, &[cfg.d_head]).map(Some) } else { Ok(None) };
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
            q_norm: qk_norm(&h("self_attn.q_norm.weight"))?,
            k_norm: qk_norm(&h("self_attn.k_norm.weight"))?,
            w_o: lin(&h("self_attn.o_proj.weight"), d, hd)?,
            b_o: out_bias(&h("self_attn.o_proj.bias"), d)?,
            ln1_post: None,
            ln2: norm(&h("post_attention_layernorm.weight"))?,
            w_gate: Some(lin(&h("mlp.gate_proj.weight"), f, d)?),
            w_in: lin(&h("mlp.up_proj.weight"), f, d)?,
            b_in: vec![0f32; f],
            w_out: lin(&h("mlp.down_proj.weight"), d, f)?,
            b_out: vec![0f32; d],
            ln2_post: None,
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
            ]);
        }
        if cfg.attn_out_bias {
            per.push(("self_attn.o_proj.bias", vec![d]));
        }
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

    /// Llama 3.2 1B's config.json as the hub ships it.
    fn llama_3_2_1b() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
            "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
            "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
            "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
            "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
            "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256
        })
    }

    fn parse(v: &Value) -> crate::Result<ModelConfig> {
        ModelConfig::from_json(v, Path::new("models/x/config.json"))
    }

    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(((*g as f64) - w).abs() <= 1e-6 * w.abs(), "inv_freq[{i}] = {g}, transformers: {w}");
        }
    }

    #[test]
    fn llama_3_2_config_and_rope_frequencies() {
        let c = parse(&llama_3_2_1b()).unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!((c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_head), (2048, 16, 32, 8, 64));
        assert_eq!((c.d_mlp, c.d_vocab, c.rotary_dim, c.rotary_base), (8192, 128256, 64, 500000.0));
        assert_eq!((c.tie_word_embeddings, c.attention_bias, c.gated_mlp, c.eps), (true, false, true, 1e-5));
        assert_eq!((c.bos_token_id, c.eos_token_id), (Some(128000), Some(128001)));
        assert_eq!(
            c.rope_scaling,
            Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            })
        );
        // transformers 5.23's `ROPE_INIT_FUNCTIONS["llama3"]` for this config
        // (every third of the 32 frequencies, and the band edges).
        let f = c.rope_inv_freq();
        let picks = [0, 1, 3, 14, 15, 16, 17, 18, 31];
        let want = [
            1.0,
            0.663601279258728,
            0.2922278344631195,
            0.0032114461064338684,
            0.0012905480107292533,
            0.000429556705057621,
            9.708286233944818e-05,
            1.9461638657958247e-05,
            9.418306490260875e-08,
        ];
        close(&picks.map(|i| f[i]), &want);
    }

    /// The same settings in transformers ≥ 5's spelling (`rope_parameters`
    /// holding the theta and the scaling), and the pre-4.45 `type` key.
    #[test]
    fn rope_dialects_agree() {
        let hub = parse(&llama_3_2_1b()).unwrap();
        let mut v5 = llama_3_2_1b();
        let o = v5.as_object_mut().unwrap();
        let mut rope = o.remove("rope_scaling").unwrap();
        rope["rope_theta"] = o.remove("rope_theta").unwrap();
        o.insert("rope_parameters".into(), rope);
        assert_eq!(parse(&v5).unwrap(), hub);
        let mut old = llama_3_2_1b();
        let s = old["rope_scaling"].as_object_mut().unwrap();
        s.remove("rope_type");
        s.insert("type".into(), "llama3".into());
        assert_eq!(parse(&old).unwrap(), hub);
        // The fixture's rope (transformers' values for its config).
        let mut small = llama_3_2_1b();
        small["hidden_size"] = 32.into();
        small["num_attention_heads"] = 4.into();
        small["num_key_value_heads"] = 2.into();
        small["head_dim"] = 8.into();
        small["rope_theta"] = 10000.0.into();
        small["rope_scaling"]["factor"] = 8.0.into();
        small["rope_scaling"]["original_max_position_embeddings"] = 64.into();
        close(
            &parse(&small).unwrap().rope_inv_freq(),
            &[1.0, 0.013042256236076355, 0.0012499999720603228, 0.0001250000059371814],
        );
    }

    #[test]
    fn unsupported_settings_are_named() {
        let err = |f: &dyn Fn(&mut Value)| {
            let mut v = llama_3_2_1b();
            f(&mut v);
            parse(&v).unwrap_err().to_string()
        };
        let e = err(&|v| v["rope_scaling"]["rope_type"] = "yarn".into());
        assert!(e.contains("config.json") && e.contains("rope scaling type `yarn` is not supported"), "{e}");
        let e = err(&|v| v["mlp_bias"] = true.into());
        assert!(e.contains("mlp_bias: true is not supported"), "{e}");
        let e = err(&|v| v["num_key_value_heads"] = 5.into());
        assert!(e.contains("32 attention heads are not a multiple of 5 key/value heads"), "{e}");
        let e = err(&|v| v["hidden_act"] = "swiglu2".into());
        assert!(e.contains("unsupported activation `swiglu2`"), "{e}");
        let e = err(&|v| {
            v.as_object_mut().unwrap().remove("head_dim");
            v["hidden_size"] = 2050.into();
        });
        assert!(e.contains("hidden size 2050 is not divisible by 32 attention heads"), "{e}");
        let e = err(&|v| v["rope_scaling"]["high_freq_factor"] = 0.5.into());
        assert!(e.contains("low_freq_factor < high_freq_factor"), "{e}");
        let e = err(&|v| {
            v.as_object_mut().unwrap().remove("architectures");
            v["model_type"] = "mamba".into();
        });
        assert!(e.contains("unsupported architecture `mamba` (its `model_type`"), "{e}");
        assert!(e.contains("qwen3, gemma2, gemma3_text"), "{e}");
        // Without `architectures`, the model_type decides; Mistral defaults.
        let mut v = llama_3_2_1b();
        v.as_object_mut().unwrap().remove("architectures");
        v["model_type"] = "mistral".into();
        v["sliding_window"] = 4096.into();
        let c = parse(&v).unwrap();
        assert_eq!((c.arch, c.sliding_window), (Arch::Llama, Some(4096)));
    }
}
