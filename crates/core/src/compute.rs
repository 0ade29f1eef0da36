//! The compute seam: the device operations a language-model forward pass is
//! written against ([`DeviceOps`]), and the tensor-level types they share.
//!
//! The forward itself lives once in `saepipe-model`, generic over
//! [`DeviceOps`]; the CPU implementation sits next to it and the CUDA one in
//! `saepipe-cuda` (kernels/*.cu and cuBLAS). Nothing here knows about models
//! or sparse coders: only buffers, shapes and element-wise kinds.
//!
//! Tensors are row-major f32 (i32 for indices). A backend's buffer type is
//! opaque to the forward; it may be larger than the tensor it holds, so every
//! operation is told how many values to use.

/// Errors of a device operation.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// Buffers or shapes that do not fit the operation.
    #[error("{0}")]
    Shape(String),
    /// An operation this backend does not implement (the message says what to use instead).
    #[error("{0}")]
    Unsupported(String),
    /// A failure of the device itself (driver, library, kernel launch).
    #[error("{0}")]
    Device(String),
}

/// Result of a device operation.
pub type Result<T> = std::result::Result<T, ComputeError>;

/// An element-wise MLP non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// tanh approximation (GPT-2's `gelu_new`).
    GeluNew,
    /// exact erf GELU.
    Gelu,
    /// max(x, 0).
    Relu,
    /// x · sigmoid(x) (SiLU / swish; Llama's and Mistral's gated MLPs).
    Silu,
}

/// The shape of multi-head attention tensors: q, k, v and z are
/// [batch, ctx, heads, d_head]; scores and patterns [batch, heads, ctx, ctx].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub ctx: usize,
    /// Attention heads.
    pub heads: usize,
    /// Dimensions per head.
    pub d_head: usize,
}

impl Heads {
    /// Values of one of q, k, v or z.
    pub fn len(&self) -> usize {
        self.batch * self.ctx * self.heads * self.d_head
    }
    /// Whether the tensors are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values of the attention scores or pattern.
    pub fn scores_len(&self) -> usize {
        self.batch * self.heads * self.ctx * self.ctx
    }
}

/// How attention scores are made from queries and keys: `q·kᵀ · scale`,
/// then soft-capped (`cap · tanh(s / cap)`, Gemma 2's
/// `attn_logit_softcapping`) when `soft_cap` is set, then masked (−inf)
/// above the diagonal and, with a sliding `window`, where the key is `window`
/// or more tokens before the query (each query sees at most `window` keys,
/// itself included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreOpts {
    /// Factor on q·kᵀ (1/√d_head usually).
    pub scale: f32,
    /// Soft cap applied to the scaled scores before masking.
    pub soft_cap: Option<f32>,
    /// Sliding attention window, in tokens (the query included).
    pub window: Option<usize>,
}

impl ScoreOpts {
    /// Plain causal attention scaled by `scale`.
    pub fn scaled(scale: f32) -> ScoreOpts {
        ScoreOpts { scale, soft_cap: None, window: None }
    }
    /// Whether the key at position `s` is masked for the query at `t`.
    pub fn masked(&self, t: usize, s: usize) -> bool {
        s > t || self.window.is_some_and(|w| t - s >= w)
    }
    /// The first key position the query at `t` sees.
    pub fn first_key(&self, t: usize) -> usize {
        self.window.map_or(0, |w| (t + 1).saturating_sub(w))
    }
}

/// Number of values of a tensor of `shape`.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A [`ComputeError::Shape`] unless a buffer of `have` values holds the `need` an operation uses.
pub fn check_len(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(ComputeError::Shape(format!("{what}: buffer of {have} values, {need} needed")));
    }
    Ok(())
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

/// The device operations of a language-model forward pass.
///
/// `F` holds f32 values, `I` i32 values. Weight matrices go through
/// [`DeviceOps::matrix`] once, so each backend keeps them in the layout its
/// matrix product reads; every other buffer is plain row-major.
///
/// Attention comes in two forms: the fused [`DeviceOps::attention`], which
/// every backend implements, and the three steps scores → causal softmax →
/// values, which a backend offers when [`DeviceOps::split_attention`] is true.
/// Only the split form lets a hook replace the scores or the pattern.
pub trait DeviceOps {
    /// A buffer of f32 values on the device.
    type F;
    /// A buffer of i32 values on the device.
    type I;

    /// Where the operations run, for logs ("cpu", "cuda:0").
    fn device(&self) -> String;
    /// A zeroed buffer of `n` values.
    fn alloc(&self, n: usize) -> Result<Self::F>;
    /// A buffer holding `host`.
    fn upload(&self, host: &[f32]) -> Result<Self::F>;
    /// An index buffer holding `host`.
    fn upload_i32(&self, host: &[i32]) -> Result<Self::I>;
    /// The first `n` values of `buf`.
    fn download(&self, buf: &Self::F, n: usize) -> Result<Vec<f32>>;
    /// The first `n` values of `buf`, which is consumed (host backends hand
    /// the buffer over without a copy).
    fn download_owned(&self, buf: Self::F, n: usize) -> Result<Vec<f32>> {
        self.download(&buf, n)
    }
    /// Overwrites the first `host.len()` values of `buf`.
    fn write(&self, buf: &mut Self::F, host: &[f32]) -> Result<()>;
    /// The values of `buf` in place, for backends whose buffers live in host
    /// memory (saves the copy out and back when a hook edits a tensor).
    fn host_mut<'b>(&self, buf: &'b mut Self::F) -> Option<&'b mut [f32]> {
        let _ = buf;
        None
    }
    /// `dst[..n] = src[offset..offset + n]`, on the device.
    fn copy_range(&self, src: &Self::F, offset: usize, n: usize, dst: &mut Self::F) -> Result<()>;
    /// A weight matrix given row-major [k, n] (the product is `x · W`), in the
    /// layout [`DeviceOps::linear`] reads.
    fn matrix(&self, w: &[f32], k: usize, n: usize) -> Result<Self::F>;
    /// `out [m, n] = x [m, k] · w (+ bias [n])`, `w` made by [`DeviceOps::matrix`].
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        x: &Self::F,
        w: &Self::F,
        bias: Option<&Self::F>,
        out: &mut Self::F,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()>;
    /// `out = LayerNorm(x) [· w + b]` row by row; `scale [rows] = sqrt(var + eps)`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        x: &Self::F,
        rows: usize,
        d: usize,
        eps: f32,
        affine: Option<(&Self::F, &Self::F)>,
        out: &mut Self::F,
        scale: &mut Self::F,
    ) -> Result<()>;
    /// `out = x / scale [· w]` row by row with `scale [rows] = sqrt(mean(x²) + eps)`
    /// (RMSNorm, TransformerLens's `hook_scale`); no centering, no bias.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm(
        &self,
        x: &Self::F,
        rows: usize,
        d: usize,
        eps: f32,
        weight: Option<&Self::F>,
        out: &mut Self::F,
        scale: &mut Self::F,
    ) -> Result<()>;
    /// `x = x · w + b` per row of `d` values.
    fn scale_shift(&self, x: &mut Self::F, rows: usize, d: usize, w: &Self::F, b: &Self::F) -> Result<()>;
    /// `act` over the first `n` values of `x`, in place.
    fn activation(&self, x: &mut Self::F, n: usize, act: Activation) -> Result<()>;
    /// Gated linear unit over the first `n` values: `gate = act(gate) · linear`
    /// (a gated MLP's hidden layer; SwiGLU with [`Activation::Silu`]).
    fn gated_activation(&self, gate: &mut Self::F, linear: &Self::F, n: usize, act: Activation) -> Result<()>;
    /// `x = cap · tanh(x / cap)` over the first `n` values, in place (Gemma 2's
    /// final logit soft-capping); infinite values stay as they are.
    fn soft_cap(&self, x: &mut Self::F, n: usize, cap: f32) -> Result<()>;
    /// `x += y` over `n` values.
    fn add(&self, x: &mut Self::F, y: &Self::F, n: usize) -> Result<()>;
    /// GPT-NeoX half-split rotary embedding of the first `rot` dimensions of
    /// each head of `x` [batch, ctx, heads, d_head], positions 0..ctx, in place.
    fn rotary(&self, x: &mut Self::F, shape: Heads, rot: usize, base: f32) -> Result<()>;
    /// Half-split rotary embedding of the first `rot` dimensions of each head
    /// of `x` [batch, ctx, heads, d_head], positions 0..ctx, in place, with the
    /// given inverse frequencies `inv_freq [rot / 2]`: pair (i, i + rot/2) of
    /// position t turns by `t · inv_freq[i]`. Frequencies come from the model
    /// (plain base^(−2i/rot), or rescaled as Llama 3's `rope_scaling` does).
    fn rotary_freqs(&self, x: &mut Self::F, shape: Heads, rot: usize, inv_freq: &Self::F) -> Result<()>;
    /// Grouped-query attention's keys and values for every query head:
    /// `out [batch, ctx, heads · groups, d_head]` where head `h` is head
    /// `h / groups` of `x [batch, ctx, heads, d_head]` (`shape` describes `x`;
    /// TransformerLens's `repeat_interleave`).
    fn repeat_heads(&self, x: &Self::F, shape: Heads, groups: usize, out: &mut Self::F) -> Result<()>;
    /// Fused causal softmax attention: `z = softmax(scores) · v` with the
    /// scores made as `opts` says. The scores (−inf where masked) and the
    /// pattern are written when given.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::F,
        k: &Self::F,
        v: &Self::F,
        shape: Heads,
        opts: ScoreOpts,
        z: &mut Self::F,
        scores: Option<&mut Self::F>,
        pattern: Option<&mut Self::F>,
    ) -> Result<()>;
    /// Whether [`DeviceOps::attention_scores`], [`DeviceOps::causal_softmax`]
    /// and [`DeviceOps::attention_values`] are implemented.
    fn split_attention(&self) -> bool {
        false
    }
    /// `scores [batch, heads, ctx, ctx]` as `opts` says (−inf where masked).
    fn attention_scores(
        &self,
        q: &Self::F,
        k: &Self::F,
        shape: Heads,
        opts: ScoreOpts,
        scores: &mut Self::F,
    ) -> Result<()> {
        let _ = (q, k, shape, opts, scores);
        Err(unsupported_split(&self.device()))
    }
    /// Softmax of each row `t` of `x` [rows, ctx] over its first t + 1 values
    /// (row index modulo ctx; −inf among them count as 0); zeros after them. In place.
    fn causal_softmax(&self, x: &mut Self::F, rows: usize, ctx: usize) -> Result<()> {
        let _ = (x, rows, ctx);
        Err(unsupported_split(&self.device()))
    }
    /// `z [batch, ctx, heads, d_head] = pattern · v` per head.
    fn attention_values(&self, pattern: &Self::F, v: &Self::F, shape: Heads, z: &mut Self::F) -> Result<()> {
        let _ = (pattern, v, shape, z);
        Err(unsupported_split(&self.device()))
    }
    /// `out [rows, d] = w[idx[r], :]`.
    fn gather_rows(&self, w: &Self::F, idx: &Self::I, rows: usize, d: usize, out: &mut Self::F) -> Result<()>;
    /// `out [rows] = logsumexp(logits[r]) − logits[r, target[r]]`; 0 where target < 0.
    fn token_ce(&self, logits: &Self::F, rows: usize, vocab: usize, target: &Self::I, out: &mut Self::F) -> Result<()>;
    /// Rows of logits made at once when only the loss is wanted (bounds
    /// memory at rows × d_vocab values).
    fn loss_block_rows(&self) -> usize {
        1024
    }
}

fn unsupported_split(device: &str) -> ComputeError {
    ComputeError::Unsupported(format!("attention in separate steps (scores, softmax, values) on {device}"))
}

/// A TopK sparse autoencoder as tensors: what the GPU encoder needs of a coder.
#[derive(Clone, Copy, Debug)]
pub struct TopKSae<'a> {
    /// Input (and output) width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Latents kept per row.
    pub k: usize,
    /// Encoder, [d_in, d_sae] (SAELens layout).
    pub w_enc: &'a [f32],
    /// Encoder bias, `[d_sae]`.
    pub b_enc: &'a [f32],
    /// Decoder, [d_sae, d_in].
    pub w_dec: &'a [f32],
    /// Decoder bias, `[d_in]`.
    pub b_dec: &'a [f32],
    /// Whether `b_dec` is subtracted from the input before encoding.
    pub b_dec_on_input: bool,
}

/// Sparse rows in compressed form: row `r` holds `idx[row_ptr[r]..row_ptr[r + 1]]`
/// (increasing column order) with the matching `val`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csr {
    /// Number of columns.
    pub cols: usize,
    /// Row starts, one more than the rows.
    pub row_ptr: Vec<usize>,
    /// Column of each stored value.
    pub idx: Vec<u32>,
    /// Stored values.
    pub val: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_transpose() {
        let h = Heads { batch: 2, ctx: 3, heads: 4, d_head: 5 };
        assert_eq!((h.len(), h.scores_len(), h.is_empty()), (120, 72, false));
        assert_eq!(numel(&[2, 3, 4]), 24);
        assert!(check_len("x", 3, 4).unwrap_err().to_string().contains("buffer of 3 values, 4 needed"));
        check_len("x", 4, 4).unwrap();
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
