//! Model parameters in TransformerLens's layout (so weight processing and hook
//! semantics follow TransformerLens exactly), all f32, row-major.
//!
//! The same structure holds a copy on a device: `T` is the backend's buffer
//! type ([`DeviceOps::F`]), and weight matrices are in the layout the backend's
//! matrix product reads ([`DeviceOps::matrix`]). On the host `T = Vec<f32>`
//! and the matrices stay [in, out], which is the CPU backend's own layout.

use crate::config::ModelConfig;
use saepipe_core::compute::{DeviceOps, Result};

pub use saepipe_core::compute::transpose;

/// One transformer block's parameters.
#[derive(Clone, Debug)]
pub struct LayerParams<T = Vec<f32>> {
    /// The attention's LayerNorm affine (weight, bias), each `[d_model]`
    /// (TransformerLens `ln1`; an RMSNorm's bias is zero); `None` once folded
    /// into the following weights.
    pub ln1: Option<(T, T)>,
    /// [d_model, n_heads * d_head]: q = x · W_Q + b_Q (heads contiguous).
    pub w_q: T,
    /// [n_heads * d_head]: query bias.
    pub b_q: T,
    /// [d_model, n_kv_heads * d_head]: key weight, laid out like `w_q` (fewer
    /// heads under grouped-query attention).
    pub w_k: T,
    /// [n_kv_heads * d_head]: key bias.
    pub b_k: T,
    /// [d_model, n_kv_heads * d_head]: value weight, laid out like `w_k`.
    pub w_v: T,
    /// [n_kv_heads * d_head]: value bias; zero once folded into `b_o`.
    pub b_v: T,
    /// `[d_head]`: the RMSNorm weight applied to every query head after the
    /// projection (QK-norm: Qwen3, Gemma 3); `None` without QK-norm. Never
    /// folded (the rotary embedding sits between it and the scores).
    pub q_norm: Option<T>,
    /// `[d_head]`: the same for every key head.
    pub k_norm: Option<T>,
    /// [n_heads * d_head, d_model]: attention output, attn_out = z · W_O + b_O.
    pub w_o: T,
    /// `[d_model]`: attention output bias.
    pub b_o: T,
    /// The RMSNorm (weight, zero bias) of the attention output before it joins
    /// the residual (Gemma; TransformerLens `ln1_post`, never folded); `None`
    /// for other families.
    pub ln1_post: Option<(T, T)>,
    /// The MLP's LayerNorm affine (weight, bias), each `[d_model]` (TransformerLens
    /// `ln2`); `None` once folded into `w_in` and `b_in`.
    pub ln2: Option<(T, T)>,
    /// [d_model, d_mlp]: a gated MLP's gate (`mlp.hook_pre` = x · W_gate);
    /// `None` for a plain MLP.
    pub w_gate: Option<T>,
    /// [d_model, d_mlp] (a gated MLP's linear half: `mlp.hook_pre_linear`)
    pub w_in: T,
    /// `[d_mlp]`: MLP input bias (`mlp.hook_pre` = x · W_in + b_in).
    pub b_in: T,
    /// [d_mlp, d_model]
    pub w_out: T,
    /// `[d_model]`: MLP output bias.
    pub b_out: T,
    /// The RMSNorm of the MLP output (Gemma; TransformerLens `ln2_post`,
    /// never folded); `None` for other families.
    pub ln2_post: Option<(T, T)>,
}

/// A model's parameters.
#[derive(Clone, Debug)]
pub struct Params<T = Vec<f32>> {
    /// [d_vocab, d_model]
    pub w_e: T,
    /// [n_ctx, d_model] for learned positions.
    pub w_pos: Option<T>,
    /// The transformer blocks, `n_layers` of them, in order.
    pub layers: Vec<LayerParams<T>>,
    /// The final LayerNorm affine (weight, bias), each `[d_model]`, before the
    /// unembedding; `None` once folded into `w_u` and `b_u`.
    pub ln_final: Option<(T, T)>,
    /// [d_model, d_vocab]
    pub w_u: T,
    /// `[d_vocab]`: unembedding bias; zero as loaded, changed by weight processing.
    pub b_u: T,
}

impl Params {
    /// A copy on the device of `ops`, each matrix in the layout its products read.
    pub fn to_device<O: DeviceOps>(&self, cfg: &ModelConfig, ops: &O) -> Result<Params<O::F>> {
        let (d, hd, kv, f) = (cfg.d_model, cfg.n_heads * cfg.d_head, cfg.kv_width(), cfg.d_mlp);
        let pair = |a: &Option<(Vec<f32>, Vec<f32>)>| -> Result<Option<(O::F, O::F)>> {
            a.as_ref().map(|(w, b)| Ok((ops.upload(w)?, ops.upload(b)?))).transpose()
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for lp in &self.layers {
            layers.push(LayerParams {
                ln1: pair(&lp.ln1)?,
                w_q: ops.matrix(&lp.w_q, d, hd)?,
                b_q: ops.upload(&lp.b_q)?,
                w_k: ops.matrix(&lp.w_k, d, kv)?,
                b_k: ops.upload(&lp.b_k)?,
                w_v: ops.matrix(&lp.w_v, d, kv)?,
                b_v: ops.upload(&lp.b_v)?,
                q_norm: lp.q_norm.as_ref().map(|w| ops.upload(w)).transpose()?,
                k_norm: lp.k_norm.as_ref().map(|w| ops.upload(w)).transpose()?,
                w_o: ops.matrix(&lp.w_o, hd, d)?,
                b_o: ops.upload(&lp.b_o)?,
                ln1_post: pair(&lp.ln1_post)?,
                ln2: pair(&lp.ln2)?,
                w_gate: lp.w_gate.as_ref().map(|w| ops.matrix(w, d, f)).transpose()?,
                w_in: ops.matrix(&lp.w_in, d, f)?,
                b_in: ops.upload(&lp.b_in)?,
                w_out: ops.matrix(&lp.w_out, f, d)?,
                b_out: ops.upload(&lp.b_out)?,
                ln2_post: pair(&lp.ln2_post)?,
            });
        }
        Ok(Params {
            w_e: ops.upload(&self.w_e)?,
            w_pos: self.w_pos.as_ref().map(|w| ops.upload(w)).transpose()?,
            layers,
            ln_final: pair(&self.ln_final)?,
            w_u: ops.matrix(&self.w_u, d, cfg.d_vocab)?,
            b_u: ops.upload(&self.b_u)?,
        })
    }
}
