//! GPT-2 checkpoints (HF `GPT2LMHeadModel`). HF stores Conv1D weights as [in, out],
//! which is already TransformerLens's x·W layout.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::params::{LayerParams, Params, transpose};
use crate::weights::TensorFiles;

fn columns(m: &[f32], rows: usize, cols: usize, start: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * width);
    for r in 0..rows {
        out.extend_from_slice(&m[r * cols + start..r * cols + start + width]);
    }
    out
}

/// Reads a GPT-2 checkpoint into unprocessed TransformerLens-layout [`Params`],
/// splitting the fused `c_attn` into W_Q, W_K, W_V; the unembedding is the
/// transposed `wte` unless the config unties it and `lm_head.weight` exists.
pub(crate) fn load(cfg: &ModelConfig, t: &TensorFiles) -> Result<Params> {
    let (d, v, f) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    // Some checkpoints (the original `gpt2` repo) omit the `transformer.` prefix.
    let p = if t.contains("transformer.wte.weight") { "transformer." } else { "" };
    let g = |name: &str, shape: &[usize]| t.get(&format!("{p}{name}"), shape);
    let w_e = g("wte.weight", &[v, d])?;
    let w_pos = Some(g("wpe.weight", &[cfg.n_ctx, d])?);
    let mut layers = Vec::new();
    for l in 0..cfg.n_layers {
        let h = |s: &str| format!("h.{l}.{s}");
        let c_attn = g(&h("attn.c_attn.weight"), &[d, 3 * d])?;
        let c_attn_b = g(&h("attn.c_attn.bias"), &[3 * d])?;
        layers.push(LayerParams {
            ln1: Some((g(&h("ln_1.weight"), &[d])?, g(&h("ln_1.bias"), &[d])?)),
            w_q: columns(&c_attn, d, 3 * d, 0, d),
            w_k: columns(&c_attn, d, 3 * d, d, d),
            w_v: columns(&c_attn, d, 3 * d, 2 * d, d),
            b_q: c_attn_b[..d].to_vec(),
            b_k: c_attn_b[d..2 * d].to_vec(),
            b_v: c_attn_b[2 * d..].to_vec(),
            q_norm: None,
            k_norm: None,
            w_o: g(&h("attn.c_proj.weight"), &[d, d])?,
            b_o: g(&h("attn.c_proj.bias"), &[d])?,
            ln1_post: None,
            ln2: Some((g(&h("ln_2.weight"), &[d])?, g(&h("ln_2.bias"), &[d])?)),
            w_gate: None,
            w_in: g(&h("mlp.c_fc.weight"), &[d, f])?,
            b_in: g(&h("mlp.c_fc.bias"), &[f])?,
            w_out: g(&h("mlp.c_proj.weight"), &[f, d])?,
            b_out: g(&h("mlp.c_proj.bias"), &[d])?,
            ln2_post: None,
        });
    }
    let ln_final = Some((g("ln_f.weight", &[d])?, g("ln_f.bias", &[d])?));
    let w_u = if !cfg.tie_word_embeddings && t.contains("lm_head.weight") {
        transpose(&t.get("lm_head.weight", &[v, d])?, v, d)
    } else {
        transpose(&w_e, v, d)
    };
    Ok(Params { w_e, w_pos, layers, ln_final, w_u, b_u: vec![0.0; v] })
}

/// HF tensor names and shapes (`transformers` naming, untied lm_head omitted when tied).
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, v, f) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let mut t = vec![
        ("transformer.wte.weight".to_string(), vec![v, d]),
        ("transformer.wpe.weight".to_string(), vec![cfg.n_ctx, d]),
    ];
    for l in 0..cfg.n_layers {
        for (n, s) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, f]),
            ("mlp.c_fc.bias", vec![f]),
            ("mlp.c_proj.weight", vec![f, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            t.push((format!("transformer.h.{l}.{n}"), s));
        }
    }
    t.push(("transformer.ln_f.weight".into(), vec![d]));
    t.push(("transformer.ln_f.bias".into(), vec![d]));
    if !cfg.tie_word_embeddings {
        t.push(("lm_head.weight".into(), vec![v, d]));
    }
    t
}
