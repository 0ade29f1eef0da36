//! The language-model forward pass on the GPU, with every TransformerLens hook.
//!
//! [`LmForward`] is written once against [`LmOps`], the handful of device
//! operations a forward needs. [`GpuOps`] runs them as the kernels of
//! kernels/lm.cu plus cuBLAS; [`crate::lm_reference::HostOps`] runs them on the
//! host with the kernels' exact semantics, which serves as the CPU reference
//! of each LM kernel and lets the forward's orchestration (buffer layouts,
//! transposes, hook order, early stops) be checked against the CPU model on
//! machines without a GPU.
//!
//! Hooks work as on the CPU: a captured hook's tensor is copied to the host, a
//! replaced one goes to the host, through the caller's function and back.
//! Replacing `attn.hook_attn_scores` or `attn.hook_pattern` is refused (the
//! attention kernel fuses scores, softmax and the value product).

use crate::error::{CudaError, Result};
use crate::kernels::{Gpu, NULL, grid_1d, per_row};
use cudarc::driver::{CudaSlice, LaunchConfig};
use saepipe_model::params::transpose;
use saepipe_model::{Activation, LnHook, Model, ModelConfig, ModelError, RunOutput, RunRequest, Runner};
use std::sync::Arc;

/// The device operations of a forward pass. `F` holds f32 values, `I` i32.
pub trait LmOps {
    type F;
    type I;
    fn alloc(&self, n: usize) -> Result<Self::F>;
    fn upload(&self, host: &[f32]) -> Result<Self::F>;
    fn upload_i32(&self, host: &[i32]) -> Result<Self::I>;
    /// The first `n` values of `buf`.
    fn download(&self, buf: &Self::F, n: usize) -> Result<Vec<f32>>;
    /// Overwrites the first `host.len()` values of `buf`.
    fn write(&self, buf: &mut Self::F, host: &[f32]) -> Result<()>;
    /// dst[..n] = src[offset..offset + n], on the device.
    fn copy_range(&self, src: &Self::F, offset: usize, n: usize, dst: &mut Self::F) -> Result<()>;
    /// `c [m, n] = a [m, k] · b [n, k]ᵀ (+ bias [n])`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_nt_bias(
        &self,
        a: &Self::F,
        b: &Self::F,
        bias: Option<&Self::F>,
        c: &mut Self::F,
        m: usize,
        n: usize,
        k: usize,
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
    /// x = x · w + b per row.
    fn scale_shift(&self, x: &mut Self::F, rows: usize, d: usize, w: &Self::F, b: &Self::F) -> Result<()>;
    fn activation(&self, x: &mut Self::F, n: usize, act: Activation) -> Result<()>;
    /// x += y over `n` values.
    fn add(&self, x: &mut Self::F, y: &Self::F, n: usize) -> Result<()>;
    /// GPT-NeoX half-split rotary on the first `rot` dims of each head of x [batch, ctx, heads, d_head].
    #[allow(clippy::too_many_arguments)]
    fn rotary(
        &self,
        x: &mut Self::F,
        batch: usize,
        ctx: usize,
        heads: usize,
        d_head: usize,
        rot: usize,
        base: f32,
    ) -> Result<()>;
    /// Causal softmax attention; `scale` multiplies q·k. Scores (−inf above the
    /// diagonal) and the pattern [batch, heads, ctx, ctx] are written when given.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::F,
        k: &Self::F,
        v: &Self::F,
        batch: usize,
        ctx: usize,
        heads: usize,
        d_head: usize,
        scale: f32,
        z: &mut Self::F,
        scores: Option<&mut Self::F>,
        pattern: Option<&mut Self::F>,
    ) -> Result<()>;
    /// `out [rows, d] = w[idx[r], :]`.
    fn gather_rows(&self, w: &Self::F, idx: &Self::I, rows: usize, d: usize, out: &mut Self::F) -> Result<()>;
    /// `out [rows] = logsumexp(logits[r]) − logits[r, target[r]]`; 0 where target < 0.
    fn token_ce(&self, logits: &Self::F, rows: usize, vocab: usize, target: &Self::I, out: &mut Self::F) -> Result<()>;
}

/// [`LmOps`] on a CUDA device: kernels/lm.cu and cuBLAS SGEMM.
#[derive(Clone)]
pub struct GpuOps(pub Arc<Gpu>);

impl LmOps for GpuOps {
    type F = CudaSlice<f32>;
    type I = CudaSlice<i32>;
    fn alloc(&self, n: usize) -> Result<Self::F> {
        self.0.zeros(n)
    }
    fn upload(&self, host: &[f32]) -> Result<Self::F> {
        self.0.upload(host)
    }
    fn upload_i32(&self, host: &[i32]) -> Result<Self::I> {
        self.0.upload(host)
    }
    fn download(&self, buf: &Self::F, n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; n];
        self.0.stream.memcpy_dtoh(&buf.slice(..n), &mut out)?;
        Ok(out)
    }
    fn write(&self, buf: &mut Self::F, host: &[f32]) -> Result<()> {
        let mut view = buf.slice_mut(..host.len());
        self.0.stream.memcpy_htod(host, &mut view)?;
        Ok(())
    }
    fn copy_range(&self, src: &Self::F, offset: usize, n: usize, dst: &mut Self::F) -> Result<()> {
        if offset + n > src.len() || n > dst.len() {
            return Err(CudaError::Shape(format!(
                "copy of {n} values at {offset}: buffers of {} and {}",
                src.len(),
                dst.len()
            )));
        }
        let mut to = dst.slice_mut(..n);
        self.0.stream.memcpy_dtod(&src.slice(offset..offset + n), &mut to)?;
        Ok(())
    }
    fn gemm_nt_bias(
        &self,
        a: &Self::F,
        b: &Self::F,
        bias: Option<&Self::F>,
        c: &mut Self::F,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        self.0.gemm_nt_bias(a, b, bias, c, m, n, k)
    }
    fn layer_norm(
        &self,
        x: &Self::F,
        rows: usize,
        d: usize,
        eps: f32,
        affine: Option<(&Self::F, &Self::F)>,
        out: &mut Self::F,
        scale: &mut Self::F,
    ) -> Result<()> {
        let g = &self.0;
        let (w, b) = affine.map_or((NULL, NULL), |(w, b)| (g.ptr(w), g.ptr(b)));
        g.launch_lm(
            "layer_norm",
            per_row(rows, 256),
            &[g.ptr(x), rows.into(), d.into(), eps.into(), w, b, g.ptr(out), g.ptr(scale)],
        )
    }
    fn scale_shift(&self, x: &mut Self::F, rows: usize, d: usize, w: &Self::F, b: &Self::F) -> Result<()> {
        let g = &self.0;
        g.launch_lm("scale_shift_rows", grid_1d(rows * d), &[g.ptr(x), rows.into(), d.into(), g.ptr(w), g.ptr(b)])
    }
    fn activation(&self, x: &mut Self::F, n: usize, act: Activation) -> Result<()> {
        let name = match act {
            Activation::GeluNew => "gelu_tanh",
            Activation::Gelu => "gelu_erf",
            Activation::Relu => "relu_inplace",
        };
        self.0.launch_lm(name, grid_1d(n), &[self.0.ptr(x), crate::kernels::Arg::U64(n as u64)])
    }
    fn add(&self, x: &mut Self::F, y: &Self::F, n: usize) -> Result<()> {
        self.0.launch_lm("add_inplace", grid_1d(n), &[self.0.ptr(x), self.0.ptr(y), crate::kernels::Arg::U64(n as u64)])
    }
    fn rotary(
        &self,
        x: &mut Self::F,
        batch: usize,
        ctx: usize,
        heads: usize,
        d_head: usize,
        rot: usize,
        base: f32,
    ) -> Result<()> {
        let g = &self.0;
        g.launch_lm(
            "rotary_neox",
            grid_1d(batch * ctx * heads * (rot / 2)),
            &[g.ptr(x), batch.into(), ctx.into(), heads.into(), d_head.into(), rot.into(), base.into()],
        )
    }
    fn attention(
        &self,
        q: &Self::F,
        k: &Self::F,
        v: &Self::F,
        batch: usize,
        ctx: usize,
        heads: usize,
        d_head: usize,
        scale: f32,
        z: &mut Self::F,
        scores: Option<&mut Self::F>,
        pattern: Option<&mut Self::F>,
    ) -> Result<()> {
        let g = &self.0;
        // The kernel keeps one query's scores in shared memory.
        if ctx * 4 > 48 * 1024 {
            return Err(CudaError::Unsupported(format!("attention over a context of {ctx} tokens (at most 12288)")));
        }
        let cfg = LaunchConfig {
            grid_dim: (ctx as u32, heads as u32, batch as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: (ctx * 4) as u32,
        };
        let scores = scores.map_or(NULL, |s| g.ptr(s));
        let pattern = pattern.map_or(NULL, |p| g.ptr(p));
        g.launch_lm(
            "causal_attention",
            cfg,
            &[
                g.ptr(q),
                g.ptr(k),
                g.ptr(v),
                ctx.into(),
                heads.into(),
                d_head.into(),
                scale.into(),
                g.ptr(z),
                scores,
                pattern,
            ],
        )
    }
    fn gather_rows(&self, w: &Self::F, idx: &Self::I, rows: usize, d: usize, out: &mut Self::F) -> Result<()> {
        let g = &self.0;
        g.launch_lm("gather_rows", grid_1d(rows * d), &[g.ptr(w), g.ptr(idx), rows.into(), d.into(), g.ptr(out)])
    }
    fn token_ce(&self, logits: &Self::F, rows: usize, vocab: usize, target: &Self::I, out: &mut Self::F) -> Result<()> {
        let g = &self.0;
        g.launch_lm(
            "token_ce",
            per_row(rows, 256),
            &[g.ptr(logits), rows.into(), vocab.into(), g.ptr(target), g.ptr(out)],
        )
    }
}

struct Layer<F> {
    ln1: Option<(F, F)>,
    /// Projections stored as [out, in] (the layout `gemm_nt_bias` reads).
    w_q: F,
    b_q: F,
    w_k: F,
    b_k: F,
    w_v: F,
    b_v: F,
    w_o: F,
    b_o: F,
    ln2: Option<(F, F)>,
    w_in: F,
    b_in: F,
    w_out: F,
    b_out: F,
}

/// A model's weights on a device and the forward pass over them.
pub struct LmForward<O: LmOps> {
    pub ops: O,
    cfg: ModelConfig,
    ln_hook: LnHook,
    device: String,
    /// [d_vocab, d_model]
    w_e: O::F,
    /// [n_ctx, d_model]
    w_pos: Option<O::F>,
    layers: Vec<Layer<O::F>>,
    ln_final: Option<(O::F, O::F)>,
    /// W_U transposed: [d_vocab, d_model].
    w_u: O::F,
    b_u: O::F,
}

/// The GPU forward pass.
pub type GpuModel = LmForward<GpuOps>;

impl GpuModel {
    /// Copies `model`'s (processed) weights to the GPU.
    pub fn on_gpu(gpu: Arc<Gpu>, model: &Model) -> Result<GpuModel> {
        let device = format!("cuda:{}", gpu.ctx.ordinal());
        LmForward::new(GpuOps(gpu), model, device)
    }
}

/// Rows of logits made at once when only the loss is wanted (bounds memory at
/// rows × d_vocab floats).
const LOSS_ROWS: usize = 1024;

impl<O: LmOps> LmForward<O> {
    pub fn new(ops: O, model: &Model, device: String) -> Result<LmForward<O>> {
        let cfg = model.cfg.clone();
        let p = &model.params;
        let (d, hd, f) = (cfg.d_model, cfg.n_heads * cfg.d_head, cfg.d_mlp);
        let pair = |a: &Option<(Vec<f32>, Vec<f32>)>| -> Result<Option<(O::F, O::F)>> {
            a.as_ref().map(|(w, b)| Ok((ops.upload(w)?, ops.upload(b)?))).transpose()
        };
        let mut layers = Vec::with_capacity(p.layers.len());
        for lp in &p.layers {
            layers.push(Layer {
                ln1: pair(&lp.ln1)?,
                w_q: ops.upload(&transpose(&lp.w_q, d, hd))?,
                b_q: ops.upload(&lp.b_q)?,
                w_k: ops.upload(&transpose(&lp.w_k, d, hd))?,
                b_k: ops.upload(&lp.b_k)?,
                w_v: ops.upload(&transpose(&lp.w_v, d, hd))?,
                b_v: ops.upload(&lp.b_v)?,
                w_o: ops.upload(&transpose(&lp.w_o, hd, d))?,
                b_o: ops.upload(&lp.b_o)?,
                ln2: pair(&lp.ln2)?,
                w_in: ops.upload(&transpose(&lp.w_in, d, f))?,
                b_in: ops.upload(&lp.b_in)?,
                w_out: ops.upload(&transpose(&lp.w_out, f, d))?,
                b_out: ops.upload(&lp.b_out)?,
            });
        }
        Ok(LmForward {
            w_e: ops.upload(&p.w_e)?,
            w_pos: p.w_pos.as_ref().map(|w| ops.upload(w)).transpose()?,
            ln_final: pair(&p.ln_final)?,
            w_u: ops.upload(&transpose(&p.w_u, d, cfg.d_vocab))?,
            b_u: ops.upload(&p.b_u)?,
            layers,
            ln_hook: model.ln_hook,
            cfg,
            device,
            ops,
        })
    }

    /// Gives a hook its turn: a replacement goes through the host and back, a
    /// capture is copied to the host.
    fn visit(
        &self,
        req: &mut RunRequest,
        out: &mut RunOutput,
        name: &str,
        buf: &mut O::F,
        shape: &[usize],
    ) -> Result<()> {
        let capture = req.capture.contains(name);
        let replace = req.replace.get_mut(name);
        if !capture && replace.is_none() {
            return Ok(());
        }
        let mut host = self.ops.download(buf, shape.iter().product())?;
        if let Some(f) = replace {
            f(&mut host, shape);
            self.ops.write(buf, &host)?;
        }
        if capture {
            out.captured.insert(name.to_string(), (shape.to_vec(), host));
        }
        Ok(())
    }

    fn wants(req: &RunRequest, name: &str) -> bool {
        req.capture.contains(name) || req.replace.contains_key(name)
    }

    /// LayerNorm of `x` into `out` with the hook semantics of `self.ln_hook`.
    #[allow(clippy::too_many_arguments)]
    fn ln(
        &self,
        x: &O::F,
        affine: Option<&(O::F, O::F)>,
        prefix: &str,
        req: &mut RunRequest,
        ro: &mut RunOutput,
        out: &mut O::F,
        scale: &mut O::F,
        batch: usize,
        ctx: usize,
    ) -> Result<()> {
        let (d, n) = (self.cfg.d_model, batch * ctx);
        let name = format!("{prefix}.hook_normalized");
        // The hook sees the value before the affine: apply it separately.
        let split = affine.is_some() && self.ln_hook == LnHook::PreAffine && Self::wants(req, &name);
        let fused = if split { None } else { affine.map(|(w, b)| (w, b)) };
        self.ops.layer_norm(x, n, d, self.cfg.eps, fused, out, scale)?;
        self.visit(req, ro, &format!("{prefix}.hook_scale"), scale, &[batch, ctx, 1])?;
        self.visit(req, ro, &name, out, &[batch, ctx, d])?;
        if let (true, Some((w, b))) = (split, affine) {
            self.ops.scale_shift(out, n, d, w, b)?;
        }
        Ok(())
    }

    /// Blocks `start..` on `resid` (the value entering block `start`), then the head.
    fn run_blocks(
        &self,
        mut resid: O::F,
        start: usize,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
    ) -> Result<RunOutput> {
        let cfg = &self.cfg;
        let ops = &self.ops;
        let (d, nh, dh, f) = (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp);
        let (hd, n) = (nh * dh, batch * ctx);
        let mut ro = RunOutput::default();
        let stop = req.stop_at_layer.unwrap_or(cfg.n_layers).min(cfg.n_layers);
        let need = saepipe_model::needs(req, stop, cfg.n_layers);
        for l in start..stop {
            for h in ["attn.hook_attn_scores", "attn.hook_pattern"] {
                let name = format!("blocks.{l}.{h}");
                if req.replace.contains_key(&name) {
                    return Err(CudaError::Unsupported(format!(
                        "replacing {name} (the attention kernel fuses scores, softmax and values); run this stage with device: cpu"
                    )));
                }
            }
        }
        let (mut x, mut scale) = (ops.alloc(n * d)?, ops.alloc(n)?);
        let (mut q, mut k, mut v, mut z) =
            (ops.alloc(n * hd)?, ops.alloc(n * hd)?, ops.alloc(n * hd)?, ops.alloc(n * hd)?);
        let (mut attn_out, mut mlp_out) = (ops.alloc(n * d)?, ops.alloc(n * d)?);
        let mut hidden: Option<O::F> = None;
        let sq = batch * nh * ctx * ctx;
        for l in start..stop {
            if need.done_before(l) {
                return Ok(ro);
            }
            let lp = &self.layers[l];
            let pre = |h: &str| format!("blocks.{l}.{h}");
            self.visit(req, &mut ro, &pre("hook_resid_pre"), &mut resid, &[batch, ctx, d])?;
            if need.done_after_resid_pre(l) {
                return Ok(ro);
            }
            self.ln(&resid, lp.ln1.as_ref(), &pre("ln1"), req, &mut ro, &mut x, &mut scale, batch, ctx)?;
            let qkv_shape = [batch, ctx, nh, dh];
            ops.gemm_nt_bias(&x, &lp.w_q, Some(&lp.b_q), &mut q, n, hd, d)?;
            ops.gemm_nt_bias(&x, &lp.w_k, Some(&lp.b_k), &mut k, n, hd, d)?;
            ops.gemm_nt_bias(&x, &lp.w_v, Some(&lp.b_v), &mut v, n, hd, d)?;
            self.visit(req, &mut ro, &pre("attn.hook_q"), &mut q, &qkv_shape)?;
            self.visit(req, &mut ro, &pre("attn.hook_k"), &mut k, &qkv_shape)?;
            self.visit(req, &mut ro, &pre("attn.hook_v"), &mut v, &qkv_shape)?;
            if cfg.rotary_dim > 0 {
                ops.rotary(&mut q, batch, ctx, nh, dh, cfg.rotary_dim, cfg.rotary_base)?;
                ops.rotary(&mut k, batch, ctx, nh, dh, cfg.rotary_dim, cfg.rotary_base)?;
                self.visit(req, &mut ro, &pre("attn.hook_rot_q"), &mut q, &qkv_shape)?;
                self.visit(req, &mut ro, &pre("attn.hook_rot_k"), &mut k, &qkv_shape)?;
            }
            let mut s = if cfg.scale_attn_weights { (dh as f32).sqrt() } else { 1.0 };
            if cfg.scale_attn_by_inverse_layer_idx {
                s *= (l + 1) as f32;
            }
            let (scores_name, pattern_name) = (pre("attn.hook_attn_scores"), pre("attn.hook_pattern"));
            let mut scores = if req.capture.contains(&scores_name) { Some(ops.alloc(sq)?) } else { None };
            let mut pattern = if req.capture.contains(&pattern_name) { Some(ops.alloc(sq)?) } else { None };
            ops.attention(&q, &k, &v, batch, ctx, nh, dh, 1.0 / s, &mut z, scores.as_mut(), pattern.as_mut())?;
            let sq_shape = [batch, nh, ctx, ctx];
            if let Some(buf) = scores.as_mut() {
                self.visit(req, &mut ro, &scores_name, buf, &sq_shape)?;
            }
            if let Some(buf) = pattern.as_mut() {
                self.visit(req, &mut ro, &pattern_name, buf, &sq_shape)?;
            }
            self.visit(req, &mut ro, &pre("attn.hook_z"), &mut z, &qkv_shape)?;
            ops.gemm_nt_bias(&z, &lp.w_o, Some(&lp.b_o), &mut attn_out, n, d, hd)?;
            self.visit(req, &mut ro, &pre("hook_attn_out"), &mut attn_out, &[batch, ctx, d])?;
            // GPT-2: the MLP reads resid_mid = resid_pre + attn_out. GPT-NeoX
            // (parallel): it reads resid_pre, and both outputs are added after.
            if !cfg.parallel {
                ops.add(&mut resid, &attn_out, n * d)?;
                self.visit(req, &mut ro, &pre("hook_resid_mid"), &mut resid, &[batch, ctx, d])?;
            }
            self.ln(&resid, lp.ln2.as_ref(), &pre("ln2"), req, &mut ro, &mut x, &mut scale, batch, ctx)?;
            let hidden = match &mut hidden {
                Some(h) => h,
                None => hidden.insert(ops.alloc(n * f)?),
            };
            ops.gemm_nt_bias(&x, &lp.w_in, Some(&lp.b_in), hidden, n, f, d)?;
            self.visit(req, &mut ro, &pre("mlp.hook_pre"), hidden, &[batch, ctx, f])?;
            ops.activation(hidden, n * f, cfg.act)?;
            self.visit(req, &mut ro, &pre("mlp.hook_post"), hidden, &[batch, ctx, f])?;
            ops.gemm_nt_bias(hidden, &lp.w_out, Some(&lp.b_out), &mut mlp_out, n, d, f)?;
            self.visit(req, &mut ro, &pre("hook_mlp_out"), &mut mlp_out, &[batch, ctx, d])?;
            if cfg.parallel {
                ops.add(&mut resid, &attn_out, n * d)?;
            }
            ops.add(&mut resid, &mlp_out, n * d)?;
            self.visit(req, &mut ro, &pre("hook_resid_post"), &mut resid, &[batch, ctx, d])?;
        }
        if !need.head {
            return Ok(ro);
        }
        drop((q, k, v, z, attn_out, mlp_out, hidden));
        self.ln(&resid, self.ln_final.as_ref(), "ln_final", req, &mut ro, &mut x, &mut scale, batch, ctx)?;
        self.visit(req, &mut ro, "unembed.hook_in", &mut x, &[batch, ctx, d])?;
        self.head(x, tokens, batch, ctx, req, &mut ro)?;
        Ok(ro)
    }

    /// Logits and per-token loss from the final normalized residual `xf`.
    fn head(
        &self,
        xf: O::F,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
        ro: &mut RunOutput,
    ) -> Result<()> {
        let (ops, d, vocab, n) = (&self.ops, self.cfg.d_model, self.cfg.d_vocab, batch * ctx);
        let want_loss = req.want_loss && ctx >= 2;
        if req.want_loss && ctx < 2 {
            ro.loss_per_token = Some(Vec::new());
        }
        // Target of row b·ctx + t is token t + 1 of sequence b; none at the last position.
        let targets: Vec<i32> = if want_loss {
            (0..n).map(|g| if g % ctx == ctx - 1 { -1 } else { tokens[g + 1] as i32 }).collect()
        } else {
            Vec::new()
        };
        let mut per_row = Vec::new();
        if req.want_logits || Self::wants(req, "unembed.hook_out") {
            let mut logits = ops.alloc(n * vocab)?;
            ops.gemm_nt_bias(&xf, &self.w_u, Some(&self.b_u), &mut logits, n, vocab, d)?;
            self.visit(req, ro, "unembed.hook_out", &mut logits, &[batch, ctx, vocab])?;
            if want_loss {
                let (t, mut out) = (ops.upload_i32(&targets)?, ops.alloc(n)?);
                ops.token_ce(&logits, n, vocab, &t, &mut out)?;
                per_row = ops.download(&out, n)?;
            }
            if req.want_logits {
                ro.logits = Some(ops.download(&logits, n * vocab)?);
            }
        } else if want_loss {
            // Loss only: logits a block of rows at a time, never [n, vocab] at once.
            let rows = LOSS_ROWS.min(n);
            let (mut x_blk, mut logits, mut out) = (ops.alloc(rows * d)?, ops.alloc(rows * vocab)?, ops.alloc(rows)?);
            for r0 in (0..n).step_by(rows) {
                let m = rows.min(n - r0);
                ops.copy_range(&xf, r0 * d, m * d, &mut x_blk)?;
                ops.gemm_nt_bias(&x_blk, &self.w_u, Some(&self.b_u), &mut logits, m, vocab, d)?;
                let t = ops.upload_i32(&targets[r0..r0 + m])?;
                ops.token_ce(&logits, m, vocab, &t, &mut out)?;
                per_row.extend(ops.download(&out, m)?);
            }
        }
        if want_loss {
            ro.loss_per_token = Some((0..batch).flat_map(|b| per_row[b * ctx..b * ctx + ctx - 1].to_vec()).collect());
        }
        Ok(())
    }

    fn embed(
        &self,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
        ro: &mut RunOutput,
    ) -> Result<O::F> {
        let (ops, d, n) = (&self.ops, self.cfg.d_model, batch * ctx);
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut resid = ops.alloc(n * d)?;
        ops.gather_rows(&self.w_e, &ops.upload_i32(&ids)?, n, d, &mut resid)?;
        self.visit(req, ro, "hook_embed", &mut resid, &[batch, ctx, d])?;
        if let Some(w_pos) = &self.w_pos {
            let positions: Vec<i32> = (0..n).map(|i| (i % ctx) as i32).collect();
            let mut pos = ops.alloc(n * d)?;
            ops.gather_rows(w_pos, &ops.upload_i32(&positions)?, n, d, &mut pos)?;
            self.visit(req, ro, "hook_pos_embed", &mut pos, &[batch, ctx, d])?;
            ops.add(&mut resid, &pos, n * d)?;
        }
        Ok(resid)
    }
}

fn backend(e: CudaError) -> ModelError {
    match e {
        CudaError::Shape(m) => ModelError::Input(m),
        other => ModelError::Backend(other.to_string()),
    }
}

/// Outputs of the embedding and the blocks merged (the embedding hooks are
/// visited before the blocks run).
fn merged(mut first: RunOutput, rest: RunOutput) -> RunOutput {
    first.captured.extend(rest.captured);
    first.logits = rest.logits;
    first.loss_per_token = rest.loss_per_token;
    first
}

impl<O: LmOps> Runner for LmForward<O> {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn device(&self) -> String {
        self.device.clone()
    }
    fn run(&self, tokens: &[u32], batch: usize, ctx: usize, req: &mut RunRequest) -> saepipe_model::Result<RunOutput> {
        saepipe_model::check_run_inputs(&self.cfg, tokens, batch, ctx, req)?;
        let mut ro = RunOutput::default();
        let resid = self.embed(tokens, batch, ctx, req, &mut ro).map_err(backend)?;
        let rest = self.run_blocks(resid, 0, tokens, batch, ctx, req).map_err(backend)?;
        Ok(merged(ro, rest))
    }
    fn run_from(
        &self,
        resid: Vec<f32>,
        layer: usize,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
    ) -> saepipe_model::Result<RunOutput> {
        saepipe_model::check_run_from_inputs(&self.cfg, &resid, layer, tokens, batch, ctx, req)?;
        let on_device = self.ops.upload(&resid).map_err(backend)?;
        self.run_blocks(on_device, layer, tokens, batch, ctx, req).map_err(backend)
    }
}
