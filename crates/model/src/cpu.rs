//! [`CpuOps`]: the forward's device operations on the CPU, over the rayon
//! pool: the `gemm` crate's GEMM, vectorized row kernels ([`crate::linalg`])
//! and attention as three parallel steps (scores by strided SGEMM, causal
//! softmax, values). Buffers are plain `Vec<f32>` and weight matrices keep the
//! TransformerLens [in, out] layout, so a [`crate::Model`]'s parameters are
//! used in place.
//!
//! This is also the reference the CUDA kernels are tested against.

use crate::linalg::{SharedMut, fast_exp, gelu_inplace, layer_norm, log_sum_exp, matmul_bias, rms_norm, silu_inplace};
use rayon::prelude::*;
use saepipe_core::compute::{Activation, ComputeError, DeviceOps, Heads, Result, ScoreOpts, check_len};

/// [`DeviceOps`] on the CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuOps;

impl DeviceOps for CpuOps {
    type F = Vec<f32>;
    type I = Vec<i32>;

    fn device(&self) -> String {
        "cpu".into()
    }
    fn alloc(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0f32; n])
    }
    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }
    fn upload_i32(&self, host: &[i32]) -> Result<Vec<i32>> {
        Ok(host.to_vec())
    }
    fn download(&self, buf: &Vec<f32>, n: usize) -> Result<Vec<f32>> {
        check_len("download", buf.len(), n)?;
        Ok(buf[..n].to_vec())
    }
    fn download_owned(&self, mut buf: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        check_len("download", buf.len(), n)?;
        buf.truncate(n);
        Ok(buf)
    }
    fn write(&self, buf: &mut Vec<f32>, host: &[f32]) -> Result<()> {
        check_len("write", buf.len(), host.len())?;
        buf[..host.len()].copy_from_slice(host);
        Ok(())
    }
    fn host_mut<'b>(&self, buf: &'b mut Vec<f32>) -> Option<&'b mut [f32]> {
        Some(buf)
    }
    fn copy_range(&self, src: &Vec<f32>, offset: usize, n: usize, dst: &mut Vec<f32>) -> Result<()> {
        check_len("copy source", src.len(), offset + n)?;
        check_len("copy destination", dst.len(), n)?;
        dst[..n].copy_from_slice(&src[offset..offset + n]);
        Ok(())
    }
    fn matrix(&self, w: &[f32], k: usize, n: usize) -> Result<Vec<f32>> {
        check_len("weight matrix", w.len(), k * n)?;
        Ok(w[..k * n].to_vec())
    }
    fn linear(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        out: &mut Vec<f32>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        check_len("linear input", x.len(), m * k)?;
        check_len("linear weight", w.len(), k * n)?;
        check_len("linear output", out.len(), m * n)?;
        if let Some(b) = bias {
            check_len("linear bias", b.len(), n)?;
        }
        matmul_bias(&x[..m * k], &w[..k * n], bias.map(|b| &b[..n]), &mut out[..m * n], m, k, n);
        Ok(())
    }
    fn layer_norm(
        &self,
        x: &Vec<f32>,
        rows: usize,
        d: usize,
        eps: f32,
        affine: Option<(&Vec<f32>, &Vec<f32>)>,
        out: &mut Vec<f32>,
        scale: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("layer_norm", x.len().min(out.len()), rows * d)?;
        check_len("layer_norm scale", scale.len(), rows)?;
        if let Some((w, b)) = affine {
            check_len("layer_norm affine", w.len().min(b.len()), d)?;
        }
        let affine = affine.map(|(w, b)| (&w[..d], &b[..d]));
        layer_norm(&x[..rows * d], d, eps, affine, &mut out[..rows * d], &mut scale[..rows]);
        Ok(())
    }
    fn rms_norm(
        &self,
        x: &Vec<f32>,
        rows: usize,
        d: usize,
        eps: f32,
        weight: Option<&Vec<f32>>,
        out: &mut Vec<f32>,
        scale: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("rms_norm", x.len().min(out.len()), rows * d)?;
        check_len("rms_norm scale", scale.len(), rows)?;
        if let Some(w) = weight {
            check_len("rms_norm weight", w.len(), d)?;
        }
        rms_norm(&x[..rows * d], d, eps, weight.map(|w| &w[..d]), &mut out[..rows * d], &mut scale[..rows]);
        Ok(())
    }
    fn scale_shift(&self, x: &mut Vec<f32>, rows: usize, d: usize, w: &Vec<f32>, b: &Vec<f32>) -> Result<()> {
        check_len("scale_shift", x.len(), rows * d)?;
        check_len("scale_shift affine", w.len().min(b.len()), d)?;
        x[..rows * d].par_chunks_mut(d).for_each(|row| {
            for i in 0..d {
                row[i] = row[i] * w[i] + b[i];
            }
        });
        Ok(())
    }
    fn activation(&self, x: &mut Vec<f32>, n: usize, act: Activation) -> Result<()> {
        check_len("activation", x.len(), n)?;
        match act {
            Activation::GeluNew => gelu_inplace(&mut x[..n], false),
            Activation::Gelu => gelu_inplace(&mut x[..n], true),
            Activation::Relu => x[..n].par_chunks_mut(8192).for_each(|c| c.iter_mut().for_each(|x| *x = x.max(0.0))),
            Activation::Silu => silu_inplace(&mut x[..n]),
        }
        Ok(())
    }
    fn gated_activation(&self, gate: &mut Vec<f32>, linear: &Vec<f32>, n: usize, act: Activation) -> Result<()> {
        check_len("gated_activation", gate.len().min(linear.len()), n)?;
        self.activation(gate, n, act)?;
        gate[..n]
            .par_chunks_mut(8192)
            .zip(linear[..n].par_chunks(8192))
            .for_each(|(g, l)| g.iter_mut().zip(l).for_each(|(g, l)| *g *= l));
        Ok(())
    }
    fn soft_cap(&self, x: &mut Vec<f32>, n: usize, cap: f32) -> Result<()> {
        check_len("soft_cap", x.len(), n)?;
        x[..n].par_chunks_mut(8192).for_each(|c| c.iter_mut().for_each(|x| *x = soft_cap(*x, cap)));
        Ok(())
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, n: usize) -> Result<()> {
        check_len("add", x.len().min(y.len()), n)?;
        x[..n]
            .par_chunks_mut(8192)
            .zip(y[..n].par_chunks(8192))
            .for_each(|(a, y)| a.iter_mut().zip(y).for_each(|(a, y)| *a += y));
        Ok(())
    }
    fn rotary(&self, x: &mut Vec<f32>, shape: Heads, rot: usize, base: f32) -> Result<()> {
        check_len("rotary", x.len(), shape.len())?;
        if rot > shape.d_head {
            return Err(ComputeError::Shape(format!("rotary over {rot} of {} dimensions per head", shape.d_head)));
        }
        rotary(&mut x[..shape.len()], shape, rot, base);
        Ok(())
    }
    fn rotary_freqs(&self, x: &mut Vec<f32>, shape: Heads, rot: usize, inv_freq: &Vec<f32>) -> Result<()> {
        check_len("rotary", x.len(), shape.len())?;
        check_len("rotary frequencies", inv_freq.len(), rot / 2)?;
        if rot > shape.d_head || !rot.is_multiple_of(2) {
            return Err(ComputeError::Shape(format!("rotary over {rot} of {} dimensions per head", shape.d_head)));
        }
        let inv: Vec<f64> = inv_freq[..rot / 2].iter().map(|&f| f as f64).collect();
        rotary_with(&mut x[..shape.len()], shape, rot, &inv);
        Ok(())
    }
    fn repeat_heads(&self, x: &Vec<f32>, shape: Heads, groups: usize, out: &mut Vec<f32>) -> Result<()> {
        check_len("repeat_heads input", x.len(), shape.len())?;
        check_len("repeat_heads output", out.len(), shape.len() * groups)?;
        let (nh, dh) = (shape.heads, shape.d_head);
        let rows = shape.batch * shape.ctx;
        out[..rows * nh * groups * dh]
            .par_chunks_mut(nh * groups * dh)
            .zip(x[..rows * nh * dh].par_chunks(nh * dh))
            .for_each(|(o, row)| {
                for (h, dst) in o.chunks_mut(dh).enumerate() {
                    let src = h / groups;
                    dst.copy_from_slice(&row[src * dh..(src + 1) * dh]);
                }
            });
        Ok(())
    }
    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        shape: Heads,
        opts: ScoreOpts,
        z: &mut Vec<f32>,
        scores: Option<&mut Vec<f32>>,
        pattern: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let sq = shape.scores_len();
        let mut p = vec![0f32; sq];
        self.attention_scores(q, k, shape, opts, &mut p)?;
        if let Some(s) = scores {
            self.write(s, &p)?;
        }
        self.causal_softmax(&mut p, shape.batch * shape.heads * shape.ctx, shape.ctx)?;
        if let Some(out) = pattern {
            self.write(out, &p)?;
        }
        self.attention_values(&p, v, shape, z)
    }
    fn split_attention(&self) -> bool {
        true
    }
    fn attention_scores(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        shape: Heads,
        opts: ScoreOpts,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("attention queries and keys", q.len().min(k.len()), shape.len())?;
        check_len("attention scores", out.len(), shape.scores_len())?;
        attention_scores(q, k, shape, opts, &mut out[..shape.scores_len()]);
        Ok(())
    }
    fn causal_softmax(&self, x: &mut Vec<f32>, rows: usize, ctx: usize) -> Result<()> {
        check_len("causal softmax", x.len(), rows * ctx)?;
        softmax_causal(&mut x[..rows * ctx], ctx);
        Ok(())
    }
    fn attention_values(&self, pattern: &Vec<f32>, v: &Vec<f32>, shape: Heads, z: &mut Vec<f32>) -> Result<()> {
        check_len("attention pattern", pattern.len(), shape.scores_len())?;
        check_len("attention values and output", v.len().min(z.len()), shape.len())?;
        attention_values(pattern, v, shape, z);
        Ok(())
    }
    fn gather_rows(&self, w: &Vec<f32>, idx: &Vec<i32>, rows: usize, d: usize, out: &mut Vec<f32>) -> Result<()> {
        check_len("gather_rows indices", idx.len(), rows)?;
        check_len("gather_rows output", out.len(), rows * d)?;
        let have = w.len() / d.max(1);
        if let Some(&i) = idx[..rows].iter().find(|&&i| i < 0 || i as usize >= have) {
            return Err(ComputeError::Shape(format!("gather_rows: row {i} of a table of {have}")));
        }
        out[..rows * d]
            .par_chunks_mut(d)
            .zip(idx[..rows].par_iter())
            .for_each(|(row, &i)| row.copy_from_slice(&w[i as usize * d..(i as usize + 1) * d]));
        Ok(())
    }
    fn token_ce(
        &self,
        logits: &Vec<f32>,
        rows: usize,
        vocab: usize,
        target: &Vec<i32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("token_ce logits", logits.len(), rows * vocab)?;
        check_len("token_ce targets", target.len(), rows)?;
        check_len("token_ce output", out.len(), rows)?;
        if let Some(&t) = target[..rows].iter().find(|&&t| t >= vocab as i32) {
            return Err(ComputeError::Shape(format!("token_ce: target {t} outside a vocabulary of {vocab}")));
        }
        out[..rows].par_iter_mut().enumerate().for_each(|(r, o)| {
            let t = target[r];
            *o = if t < 0 {
                0.0
            } else {
                let row = &logits[r * vocab..(r + 1) * vocab];
                log_sum_exp(row) - row[t as usize]
            };
        });
        Ok(())
    }
    fn loss_block_rows(&self) -> usize {
        // Large enough that each pass over W_U feeds many rows.
        256
    }
}

/// NeoX half-split rotary on the first `rot` dims of every head, in place.
fn rotary(x: &mut [f32], shape: Heads, rot: usize, base: f32) {
    let half = rot / 2;
    let inv_freq: Vec<f64> = (0..half).map(|i| (base as f64).powf(-((2 * i) as f64) / rot as f64)).collect();
    rotary_with(x, shape, rot, &inv_freq);
}

/// Half-split rotary on the first `rot` dims of every head with the given
/// inverse frequencies, in place.
fn rotary_with(x: &mut [f32], shape: Heads, rot: usize, inv_freq: &[f64]) {
    let Heads { ctx, heads: nh, d_head: dh, .. } = shape;
    let half = rot / 2;
    x.par_chunks_mut(nh * dh).enumerate().for_each(|(bt, row)| {
        let t = (bt % ctx) as f64;
        for h in 0..nh {
            let head = &mut row[h * dh..(h + 1) * dh];
            for i in 0..half {
                let (s, c) = (t * inv_freq[i]).sin_cos();
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * c as f32 - x2 * s as f32;
                head[i + half] = x2 * c as f32 + x1 * s as f32;
            }
        }
    });
}

/// `cap · tanh(x / cap)`; infinities unchanged.
fn soft_cap(x: f32, cap: f32) -> f32 {
    if x.is_finite() { cap * (x / cap).tanh() } else { x }
}

/// scores[b,h,t,s] = q[b,t,h]·k[b,s,h] · scale (soft-capped when asked) for
/// the keys the query sees, −inf for the others (`opts`).
fn attention_scores(q: &[f32], k: &[f32], shape: Heads, opts: ScoreOpts, out: &mut [f32]) {
    let scale = opts.scale;
    let Heads { ctx, heads: nh, d_head: dh, .. } = shape;
    let row = (nh * dh) as isize;
    out.par_chunks_mut(ctx * ctx).enumerate().for_each(|(bh, sc)| {
        let (b, h) = (bh / nh, bh % nh);
        let off = b * ctx * nh * dh + h * dh;
        // SAFETY: q/k head slices are strided views inside the buffers (row stride nh·dh),
        // whose lengths the caller checked against `shape`.
        unsafe {
            matrixmultiply::sgemm(
                ctx,
                dh,
                ctx,
                scale,
                q.as_ptr().add(off),
                row,
                1,
                k.as_ptr().add(off),
                1,
                row,
                0.0,
                sc.as_mut_ptr(),
                ctx as isize,
                1,
            );
        }
        for t in 0..ctx {
            let row = &mut sc[t * ctx..(t + 1) * ctx];
            if let Some(cap) = opts.soft_cap {
                row[..=t].iter_mut().for_each(|x| *x = soft_cap(*x, cap));
            }
            row[..opts.first_key(t)].fill(f32::NEG_INFINITY);
            row[t + 1..].fill(f32::NEG_INFINITY);
        }
    });
}

fn softmax_causal(p: &mut [f32], ctx: usize) {
    p.par_chunks_mut(ctx).enumerate().for_each(|(i, row)| {
        let t = i % ctx;
        let mx = row[..=t].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in &mut row[..=t] {
            *x = if *x == f32::NEG_INFINITY { 0.0 } else { fast_exp(*x - mx) };
            sum += *x;
        }
        let inv = 1.0 / sum;
        row[..=t].iter_mut().for_each(|x| *x *= inv);
        row[t + 1..].iter_mut().for_each(|x| *x = 0.0);
    });
}

/// z[b,t,h] = Σ_s pattern[b,h,t,s] · v[b,s,h].
fn attention_values(p: &[f32], v: &[f32], shape: Heads, z: &mut [f32]) {
    let Heads { batch, ctx, heads: nh, d_head: dh } = shape;
    let row = (nh * dh) as isize;
    let zp = SharedMut(z.as_mut_ptr());
    (0..batch * nh).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / nh, bh % nh);
        let off = b * ctx * nh * dh + h * dh;
        // SAFETY: each (b, h) writes only its own strided head slice of z; the
        // caller checked the buffers against `shape`.
        unsafe {
            matrixmultiply::sgemm(
                ctx,
                ctx,
                dh,
                1.0,
                p.as_ptr().add(bh * ctx * ctx),
                ctx as isize,
                1,
                v.as_ptr().add(off),
                row,
                1,
                0.0,
                zp.ptr().add(off),
                row,
                1,
            );
        }
    });
}
