//! Model parameters in TransformerLens's layout (so weight processing and hook
//! semantics follow TransformerLens exactly), all f32, row-major.

#[derive(Clone, Debug)]
pub struct LayerParams {
    /// LayerNorm affine; `None` once folded into the following weights.
    pub ln1: Option<(Vec<f32>, Vec<f32>)>,
    /// [d_model, n_heads * d_head]: q = x · W_Q + b_Q (heads contiguous).
    pub w_q: Vec<f32>,
    pub b_q: Vec<f32>,
    pub w_k: Vec<f32>,
    pub b_k: Vec<f32>,
    pub w_v: Vec<f32>,
    pub b_v: Vec<f32>,
    /// [n_heads * d_head, d_model]
    pub w_o: Vec<f32>,
    pub b_o: Vec<f32>,
    pub ln2: Option<(Vec<f32>, Vec<f32>)>,
    /// [d_model, d_mlp]
    pub w_in: Vec<f32>,
    pub b_in: Vec<f32>,
    /// [d_mlp, d_model]
    pub w_out: Vec<f32>,
    pub b_out: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Params {
    /// [d_vocab, d_model]
    pub w_e: Vec<f32>,
    /// [n_ctx, d_model] for learned positions.
    pub w_pos: Option<Vec<f32>>,
    pub layers: Vec<LayerParams>,
    pub ln_final: Option<(Vec<f32>, Vec<f32>)>,
    /// [d_model, d_vocab]
    pub w_u: Vec<f32>,
    pub b_u: Vec<f32>,
}

/// Transpose of a row-major [rows, cols] matrix.
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}
