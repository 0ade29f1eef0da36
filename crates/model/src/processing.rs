//! TransformerLens weight processing (what `HookedTransformer.from_pretrained`
//! does by default, and `from_pretrained_no_processing` skips). Each step leaves
//! log-probabilities unchanged but changes what some hook points contain.

use crate::config::{ModelConfig, Norm};
use crate::params::Params;

/// Which TransformerLens weight-processing steps a load applies, one flag per
/// step. [`Processing::FULL`] and [`Processing::NONE`] are the two presets;
/// [`Processing::parse`] reads the textual form pipelines use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Processing {
    /// Fold each LayerNorm's affine into the weights that read it.
    pub fold_ln: bool,
    /// Make every write to the residual stream mean-zero over d_model.
    pub center_writing_weights: bool,
    /// Subtract the mean over the vocabulary from the unembedding.
    pub center_unembed: bool,
    /// Fold the value biases into the attention output bias.
    pub fold_value_biases: bool,
}

impl Processing {
    /// `HookedTransformer.from_pretrained` defaults.
    pub const FULL: Processing =
        Processing { fold_ln: true, center_writing_weights: true, center_unembed: true, fold_value_biases: true };
    /// `from_pretrained_no_processing`.
    pub const NONE: Processing =
        Processing { fold_ln: false, center_writing_weights: false, center_unembed: false, fold_value_biases: false };

    /// Parses a processing setting: `none`, `full` (alias `transformer_lens`,
    /// `from_pretrained`'s defaults) or steps joined by `+`, e.g.
    /// `fold_ln+center_unembed`. Steps other than `fold_ln` need `fold_ln`:
    /// TransformerLens 3.x changes the model's function when they run without
    /// it, so there is nothing equivalent to reproduce.
    pub fn parse(text: &str) -> Result<Processing, String> {
        match text.trim() {
            "none" => return Ok(Processing::NONE),
            "full" | "transformer_lens" => return Ok(Processing::FULL),
            _ => {}
        }
        let mut p = Processing::NONE;
        for step in text.split('+').map(str::trim) {
            let flag = match step {
                "fold_ln" => &mut p.fold_ln,
                "center_writing_weights" => &mut p.center_writing_weights,
                "center_unembed" => &mut p.center_unembed,
                "fold_value_biases" => &mut p.fold_value_biases,
                other => {
                    return Err(format!(
                        "unknown weight-processing step `{other}` in `{text}`: use none, full (= transformer_lens), or steps joined by `+` from fold_ln, center_writing_weights, center_unembed, fold_value_biases"
                    ));
                }
            };
            *flag = true;
        }
        if !p.fold_ln && p != Processing::NONE {
            return Err(format!(
                "weight processing `{text}` needs fold_ln as well (e.g. `fold_ln+{text}`): TransformerLens applies the other steps only to a model with folded LayerNorms"
            ));
        }
        Ok(p)
    }
}

/// LayerNorm: b += ln_b · W;  W = diag(ln_w) · W, then each column centered
/// over the input dim. RMSNorm (no bias, no centering of its input): only
/// W = diag(ln_w) · W, as TransformerLens folds RMS norms.
fn fold_into(ln: &(Vec<f32>, Vec<f32>), norm: Norm, w: &mut [f32], b: &mut [f32], d_in: usize, d_out: usize) {
    let (lw, lb) = ln;
    if norm == Norm::LayerNorm {
        for j in 0..d_out {
            let mut acc = 0f64;
            for i in 0..d_in {
                acc += lb[i] as f64 * w[i * d_out + j] as f64;
            }
            b[j] += acc as f32;
        }
    }
    for i in 0..d_in {
        for j in 0..d_out {
            w[i * d_out + j] *= lw[i];
        }
    }
    if norm == Norm::LayerNorm {
        center_columns(w, d_in, d_out);
    }
}

/// Subtracts from every column its mean over rows (the d_model input axis): a
/// normalized input has zero mean, so this does not change outputs.
fn center_columns(w: &mut [f32], rows: usize, cols: usize) {
    for j in 0..cols {
        let mean = (0..rows).map(|i| w[i * cols + j] as f64).sum::<f64>() / rows as f64;
        for i in 0..rows {
            w[i * cols + j] -= mean as f32;
        }
    }
}

/// Subtracts from every row its mean (over the last axis).
fn center_rows(w: &mut [f32], cols: usize) {
    for row in w.chunks_mut(cols) {
        let mean = row.iter().map(|&x| x as f64).sum::<f64>() / cols as f64;
        row.iter_mut().for_each(|x| *x -= mean as f32);
    }
}

/// The steps a load carries out for `cfg` when `asked` is requested: as
/// TransformerLens, it skips center_writing_weights on RMSNorm models (their
/// normalization does not remove the mean, so centering would change them),
/// and center_unembed on models with final logit soft-capping (Gemma 2:
/// soft-capping is not invariant under adding a constant to the logits;
/// `HookedTransformer.from_pretrained`'s rule). Gemma's norms after attention
/// and MLP (`ln1_post`, `ln2_post`) and QK-norm weights are never folded.
pub fn effective(cfg: &ModelConfig, asked: Processing) -> Processing {
    Processing {
        center_writing_weights: asked.center_writing_weights && cfg.norm == Norm::LayerNorm,
        center_unembed: asked.center_unembed && cfg.final_soft_cap.is_none(),
        ..asked
    }
}

/// Applies the steps of `opts` to host parameters, in TransformerLens's order:
/// fold_ln, center_writing_weights, center_unembed, fold_value_biases (only
/// those [`effective`] keeps for the model).
pub(crate) fn apply(cfg: &ModelConfig, p: &mut Params, opts: Processing) {
    let opts = effective(cfg, opts);
    let (d, hd, kv, f, v) = (cfg.d_model, cfg.n_heads * cfg.d_head, cfg.kv_width(), cfg.d_mlp, cfg.d_vocab);
    let norm = cfg.norm;
    if opts.fold_ln {
        for l in &mut p.layers {
            if let Some(ln) = l.ln1.take() {
                fold_into(&ln, norm, &mut l.w_q, &mut l.b_q, d, hd);
                fold_into(&ln, norm, &mut l.w_k, &mut l.b_k, d, kv);
                fold_into(&ln, norm, &mut l.w_v, &mut l.b_v, d, kv);
            }
            if let Some(ln) = l.ln2.take() {
                fold_into(&ln, norm, &mut l.w_in, &mut l.b_in, d, f);
                if let Some(w_gate) = &mut l.w_gate {
                    // The gate has no bias; an RMSNorm has none to fold.
                    fold_into(&ln, norm, w_gate, &mut vec![0f32; f], d, f);
                }
            }
        }
        if let Some(ln) = p.ln_final.take() {
            fold_into(&ln, norm, &mut p.w_u, &mut p.b_u, d, v);
        }
    }
    if opts.center_writing_weights {
        center_rows(&mut p.w_e, d);
        if let Some(w) = &mut p.w_pos {
            center_rows(w, d);
        }
        for l in &mut p.layers {
            center_rows(&mut l.w_o, d);
            center_rows(&mut l.b_o, d);
            center_rows(&mut l.w_out, d);
            center_rows(&mut l.b_out, d);
        }
    }
    if opts.center_unembed {
        center_rows(&mut p.w_u, v);
        center_rows(&mut p.b_u, v);
    }
    if opts.fold_value_biases {
        // Query head h reads value head h / groups (grouped-query attention).
        let (dh, groups) = (cfg.d_head, cfg.n_heads / cfg.n_kv_heads);
        for l in &mut p.layers {
            // b_O += Σ_h b_V[h / groups] · W_O[h]; b_V = 0.
            for j in 0..d {
                let mut acc = 0f64;
                for i in 0..hd {
                    let bv = l.b_v[(i / dh / groups) * dh + i % dh];
                    acc += bv as f64 * l.w_o[i * d + j] as f64;
                }
                l.b_o[j] += acc as f32;
            }
            l.b_v.iter_mut().for_each(|x| *x = 0.0);
        }
    }
}
