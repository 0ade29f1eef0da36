//! [`GpuOps`]: the device operations of the language-model forward
//! ([`DeviceOps`]) on a CUDA device, as the kernels of kernels/lm.cu plus
//! cuBLAS. The forward itself is written once, in `saepipe-model`, over that
//! trait (`saepipe_model::DeviceModel<GpuOps>` is the model on the GPU).
//!
//! Attention is one fused kernel (scores, softmax and values), so the split
//! steps are not offered: a hook may capture the scores or the pattern but not
//! replace them.

use crate::error::CudaError;
use crate::kernels::{Arg, Gpu, NULL, grid_1d, per_row};
use cudarc::driver::{CudaSlice, LaunchConfig};
use saepipe_core::compute::{Activation, ComputeError, DeviceOps, Heads, Result, ScoreOpts, transpose};
use std::sync::Arc;

/// [`DeviceOps`] on a CUDA device: kernels/lm.cu and cuBLAS SGEMM. Weight
/// matrices are stored transposed ([out, in], the layout `gemm_nt_bias` reads).
#[derive(Clone)]
pub struct GpuOps(pub Arc<Gpu>);

impl GpuOps {
    /// The operations on `gpu`.
    pub fn new(gpu: Arc<Gpu>) -> GpuOps {
        GpuOps(gpu)
    }
}

impl DeviceOps for GpuOps {
    type F = CudaSlice<f32>;
    type I = CudaSlice<i32>;
    fn device(&self) -> String {
        format!("cuda:{}", self.0.ctx.ordinal())
    }
    fn alloc(&self, n: usize) -> Result<Self::F> {
        Ok(self.0.zeros(n)?)
    }
    fn upload(&self, host: &[f32]) -> Result<Self::F> {
        Ok(self.0.upload(host)?)
    }
    fn upload_i32(&self, host: &[i32]) -> Result<Self::I> {
        Ok(self.0.upload(host)?)
    }
    fn download(&self, buf: &Self::F, n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; n];
        self.0.stream.memcpy_dtoh(&buf.slice(..n), &mut out).map_err(CudaError::from)?;
        Ok(out)
    }
    fn write(&self, buf: &mut Self::F, host: &[f32]) -> Result<()> {
        let mut view = buf.slice_mut(..host.len());
        self.0.stream.memcpy_htod(host, &mut view).map_err(CudaError::from)?;
        Ok(())
    }
    fn copy_range(&self, src: &Self::F, offset: usize, n: usize, dst: &mut Self::F) -> Result<()> {
        if offset + n > src.len() || n > dst.len() {
            return Err(ComputeError::Shape(format!(
                "copy of {n} values at {offset}: buffers of {} and {}",
                src.len(),
                dst.len()
            )));
        }
        let mut to = dst.slice_mut(..n);
        self.0.stream.memcpy_dtod(&src.slice(offset..offset + n), &mut to).map_err(CudaError::from)?;
        Ok(())
    }
    fn matrix(&self, w: &[f32], k: usize, n: usize) -> Result<Self::F> {
        Ok(self.0.upload(&transpose(w, k, n))?)
    }
    fn linear(
        &self,
        x: &Self::F,
        w: &Self::F,
        bias: Option<&Self::F>,
        out: &mut Self::F,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        Ok(self.0.gemm_nt_bias(x, w, bias, out, m, n, k)?)
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
        Ok(g.launch_lm(
            "layer_norm",
            per_row(rows, 256),
            &[g.ptr(x), rows.into(), d.into(), eps.into(), w, b, g.ptr(out), g.ptr(scale)],
        )?)
    }
    fn rms_norm(
        &self,
        x: &Self::F,
        rows: usize,
        d: usize,
        eps: f32,
        weight: Option<&Self::F>,
        out: &mut Self::F,
        scale: &mut Self::F,
    ) -> Result<()> {
        let g = &self.0;
        let w = weight.map_or(NULL, |w| g.ptr(w));
        Ok(g.launch_lm(
            "rms_norm",
            per_row(rows, 256),
            &[g.ptr(x), rows.into(), d.into(), eps.into(), w, g.ptr(out), g.ptr(scale)],
        )?)
    }
    fn scale_shift(&self, x: &mut Self::F, rows: usize, d: usize, w: &Self::F, b: &Self::F) -> Result<()> {
        let g = &self.0;
        Ok(g.launch_lm("scale_shift_rows", grid_1d(rows * d), &[g.ptr(x), rows.into(), d.into(), g.ptr(w), g.ptr(b)])?)
    }
    fn activation(&self, x: &mut Self::F, n: usize, act: Activation) -> Result<()> {
        let name = match act {
            Activation::GeluNew => "gelu_tanh",
            Activation::Gelu => "gelu_erf",
            Activation::Relu => "relu_inplace",
            Activation::Silu => "silu_inplace",
        };
        Ok(self.0.launch_lm(name, grid_1d(n), &[self.0.ptr(x), Arg::U64(n as u64)])?)
    }
    fn gated_activation(&self, gate: &mut Self::F, linear: &Self::F, n: usize, act: Activation) -> Result<()> {
        let g = &self.0;
        // The codes of `lm_act` in kernels/lm.cu.
        let code: i32 = match act {
            Activation::GeluNew => 0,
            Activation::Gelu => 1,
            Activation::Relu => 2,
            Activation::Silu => 3,
        };
        Ok(g.launch_lm("gated_act", grid_1d(n), &[g.ptr(gate), g.ptr(linear), Arg::U64(n as u64), code.into()])?)
    }
    fn soft_cap(&self, x: &mut Self::F, n: usize, cap: f32) -> Result<()> {
        Ok(self.0.launch_lm("soft_cap_inplace", grid_1d(n), &[self.0.ptr(x), Arg::U64(n as u64), cap.into()])?)
    }
    fn add(&self, x: &mut Self::F, y: &Self::F, n: usize) -> Result<()> {
        Ok(self.0.launch_lm("add_inplace", grid_1d(n), &[self.0.ptr(x), self.0.ptr(y), Arg::U64(n as u64)])?)
    }
    fn rotary(&self, x: &mut Self::F, shape: Heads, rot: usize, base: f32) -> Result<()> {
        let g = &self.0;
        let Heads { batch, ctx, heads, d_head } = shape;
        Ok(g.launch_lm(
            "rotary_neox",
            grid_1d(batch * ctx * heads * (rot / 2)),
            &[g.ptr(x), batch.into(), ctx.into(), heads.into(), d_head.into(), rot.into(), base.into()],
        )?)
    }
    fn rotary_freqs(&self, x: &mut Self::F, shape: Heads, rot: usize, inv_freq: &Self::F) -> Result<()> {
        let g = &self.0;
        let Heads { batch, ctx, heads, d_head } = shape;
        if rot > d_head || !rot.is_multiple_of(2) || inv_freq.len() < rot / 2 {
            return Err(ComputeError::Shape(format!("rotary over {rot} of {d_head} dimensions per head")));
        }
        Ok(g.launch_lm(
            "rotary_freqs",
            grid_1d(batch * ctx * heads * (rot / 2)),
            &[g.ptr(x), batch.into(), ctx.into(), heads.into(), d_head.into(), rot.into(), g.ptr(inv_freq)],
        )?)
    }
    fn repeat_heads(&self, x: &Self::F, shape: Heads, groups: usize, out: &mut Self::F) -> Result<()> {
        let g = &self.0;
        let Heads { batch, ctx, heads, d_head } = shape;
        if x.len() < shape.len() || out.len() < shape.len() * groups {
            return Err(ComputeError::Shape(format!(
                "repeat_heads: buffers of {} and {} values for {} and {}",
                x.len(),
                out.len(),
                shape.len(),
                shape.len() * groups
            )));
        }
        Ok(g.launch_lm(
            "repeat_heads",
            grid_1d(shape.len() * groups),
            &[g.ptr(x), Arg::U64((batch * ctx) as u64), heads.into(), d_head.into(), groups.into(), g.ptr(out)],
        )?)
    }
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
    ) -> Result<()> {
        let g = &self.0;
        let Heads { batch, ctx, heads, d_head } = shape;
        // The kernel keeps one query's scores in shared memory.
        if ctx * 4 > 48 * 1024 {
            return Err(
                CudaError::Unsupported(format!("attention over a context of {ctx} tokens (at most 12288)")).into()
            );
        }
        let cfg = LaunchConfig {
            grid_dim: (ctx as u32, heads as u32, batch as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: (ctx * 4) as u32,
        };
        let scores = scores.map_or(NULL, |s| g.ptr(s));
        let pattern = pattern.map_or(NULL, |p| g.ptr(p));
        Ok(g.launch_lm(
            "causal_attention",
            cfg,
            &[
                g.ptr(q),
                g.ptr(k),
                g.ptr(v),
                ctx.into(),
                heads.into(),
                d_head.into(),
                opts.scale.into(),
                opts.soft_cap.unwrap_or(0.0).into(),
                // No window: 0 (a window longer than the context changes nothing).
                (opts.window.unwrap_or(0).min(ctx) as i32).into(),
                g.ptr(z),
                scores,
                pattern,
            ],
        )?)
    }
    fn gather_rows(&self, w: &Self::F, idx: &Self::I, rows: usize, d: usize, out: &mut Self::F) -> Result<()> {
        let g = &self.0;
        Ok(g.launch_lm("gather_rows", grid_1d(rows * d), &[g.ptr(w), g.ptr(idx), rows.into(), d.into(), g.ptr(out)])?)
    }
    fn token_ce(&self, logits: &Self::F, rows: usize, vocab: usize, target: &Self::I, out: &mut Self::F) -> Result<()> {
        let g = &self.0;
        Ok(g.launch_lm(
            "token_ce",
            per_row(rows, 256),
            &[g.ptr(logits), rows.into(), vocab.into(), g.ptr(target), g.ptr(out)],
        )?)
    }
}
