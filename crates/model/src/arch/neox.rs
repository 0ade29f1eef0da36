//! GPT-NeoX / Pythia checkpoints (HF `GPTNeoXForCausalLM`). The fused QKV weight
//! is [3·d, d] with rows ordered (head, q/k/v, d_head); PyTorch Linear weights
//! are [out, in] and are transposed into TransformerLens's x·W layout.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::params::{LayerParams, Params, transpose};
use crate::weights::TensorFiles;

/// Reads a GPT-NeoX checkpoint into unprocessed TransformerLens-layout
/// [`Params`]: the per-head interleaved QKV is split into W_Q, W_K, W_V and
/// every Linear weight is transposed; there are no position embeddings.
pub(crate) fn load(cfg: &ModelConfig, t: &TensorFiles) -> Result<Params> {
    let (d, v, f, nh, dh) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp, cfg.n_heads, cfg.d_head);
    let g = |name: &str, shape: &[usize]| t.get(&format!("gpt_neox.{name}"), shape);
    let w_e = g("embed_in.weight", &[v, d])?;
    let mut layers = Vec::new();
    for l in 0..cfg.n_layers {
        let h = |s: &str| format!("layers.{l}.{s}");
        let qkv = g(&h("attention.query_key_value.weight"), &[3 * d, d])?;
        // transformers >= 5 may drop the attention biases (`attention_bias: false`).
        let bias = |name: &str, n: usize| if cfg.attention_bias { g(name, &[n]) } else { Ok(vec![0f32; n]) };
        let qkv_b = bias(&h("attention.query_key_value.bias"), 3 * d)?;
        // Split one of q/k/v out of the interleaved rows into [d_in, heads*d_head].
        let part = |which: usize| {
            let mut w = vec![0f32; d * nh * dh];
            let mut b = vec![0f32; nh * dh];
            for head in 0..nh {
                for i in 0..dh {
                    let row = head * 3 * dh + which * dh + i;
                    for m in 0..d {
                        w[m * nh * dh + head * dh + i] = qkv[row * d + m];
                    }
                    b[head * dh + i] = qkv_b[row];
                }
            }
            (w, b)
        };
        let (w_q, b_q) = part(0);
        let (w_k, b_k) = part(1);
        let (w_v, b_v) = part(2);
        layers.push(LayerParams {
            ln1: Some((g(&h("input_layernorm.weight"), &[d])?, g(&h("input_layernorm.bias"), &[d])?)),
            w_q,
            b_q,
            w_k,
            b_k,
            w_v,
            b_v,
            q_norm: None,
            k_norm: None,
            w_o: transpose(&g(&h("attention.dense.weight"), &[d, d])?, d, d),
            b_o: bias(&h("attention.dense.bias"), d)?,
            ln1_post: None,
            ln2: Some((g(&h("post_attention_layernorm.weight"), &[d])?, g(&h("post_attention_layernorm.bias"), &[d])?)),
            w_gate: None,
            w_in: transpose(&g(&h("mlp.dense_h_to_4h.weight"), &[f, d])?, f, d),
            b_in: g(&h("mlp.dense_h_to_4h.bias"), &[f])?,
            w_out: transpose(&g(&h("mlp.dense_4h_to_h.weight"), &[d, f])?, d, f),
            b_out: g(&h("mlp.dense_4h_to_h.bias"), &[d])?,
            ln2_post: None,
        });
    }
    let ln_final = Some((g("final_layer_norm.weight", &[d])?, g("final_layer_norm.bias", &[d])?));
    // The hub's Pythia files call the unembedding `embed_out`; transformers >= 5.14 `lm_head`.
    let w_u = transpose(&t.get_any(&["embed_out.weight", "lm_head.weight"], &[v, d])?, v, d);
    Ok(Params { w_e, w_pos: None, layers, ln_final, w_u, b_u: vec![0.0; v] })
}

/// HF tensor names and shapes (the hub's Pythia naming: `embed_out`).
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, v, f) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let mut t = vec![("gpt_neox.embed_in.weight".to_string(), vec![v, d])];
    for l in 0..cfg.n_layers {
        let mut per = vec![
            ("input_layernorm.weight", vec![d]),
            ("input_layernorm.bias", vec![d]),
            ("post_attention_layernorm.weight", vec![d]),
            ("post_attention_layernorm.bias", vec![d]),
            ("attention.query_key_value.weight", vec![3 * d, d]),
            ("attention.dense.weight", vec![d, d]),
            ("mlp.dense_h_to_4h.weight", vec![f, d]),
            ("mlp.dense_h_to_4h.bias", vec![f]),
            ("mlp.dense_4h_to_h.weight", vec![d, f]),
            ("mlp.dense_4h_to_h.bias", vec![d]),
        ];
        if cfg.attention_bias {
            per.push(("attention.query_key_value.bias", vec![3 * d]));
            per.push(("attention.dense.bias", vec![d]));
        }
        t.extend(per.into_iter().map(|(n, s)| (format!("gpt_neox.layers.{l}.{n}"), s)));
    }
    t.push(("gpt_neox.final_layer_norm.weight".into(), vec![d]));
    t.push(("gpt_neox.final_layer_norm.bias".into(), vec![d]));
    t.push(("embed_out.weight".into(), vec![v, d]));
    t
}
