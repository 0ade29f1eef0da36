//! [`HostOps`]: the LM kernels' semantics on the host, written plainly (f64
//! accumulation, no tiling). It is the CPU reference each kernel of
//! kernels/lm.cu is tested against, and running [`crate::lm::LmForward`] over
//! it checks the GPU forward's orchestration against the CPU model without a GPU.

use crate::error::{CudaError, Result};
use crate::lm::LmOps;
use saepipe_model::Activation;

#[derive(Clone, Copy, Debug, Default)]
pub struct HostOps;

fn check(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(CudaError::Shape(format!("{what}: buffer of {have} values, {need} needed")));
    }
    Ok(())
}

/// GPT-2's tanh-approximated GELU.
pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + (0.7978845608028654 * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// Exact GELU, x·Φ(x), through an erf accurate to ~1e-15.
pub fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        // Maclaurin series: converges quickly for |x| < 3.
        let (mut sum, mut term) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Asymptotic expansion of erfc for large |x|.
        let x2 = x * x;
        let tail = (-x2).exp() / (x.abs() * std::f64::consts::PI.sqrt()) * (1.0 - 0.5 / x2 + 0.75 / (x2 * x2));
        x.signum() * (1.0 - tail)
    }
}

impl LmOps for HostOps {
    type F = Vec<f32>;
    type I = Vec<i32>;
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
        check("download", buf.len(), n)?;
        Ok(buf[..n].to_vec())
    }
    fn write(&self, buf: &mut Vec<f32>, host: &[f32]) -> Result<()> {
        check("write", buf.len(), host.len())?;
        buf[..host.len()].copy_from_slice(host);
        Ok(())
    }
    fn copy_range(&self, src: &Vec<f32>, offset: usize, n: usize, dst: &mut Vec<f32>) -> Result<()> {
        check("copy_range source", src.len(), offset + n)?;
        check("copy_range destination", dst.len(), n)?;
        dst[..n].copy_from_slice(&src[offset..offset + n]);
        Ok(())
    }
    fn gemm_nt_bias(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        c: &mut Vec<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        check("gemm a", a.len(), m * k)?;
        check("gemm b", b.len(), n * k)?;
        check("gemm c", c.len(), m * n)?;
        for i in 0..m {
            let ar = &a[i * k..(i + 1) * k];
            for j in 0..n {
                let br = &b[j * k..(j + 1) * k];
                let dot: f64 = ar.iter().zip(br).map(|(x, y)| *x as f64 * *y as f64).sum();
                c[i * n + j] = dot as f32 + bias.map_or(0.0, |b| b[j]);
            }
        }
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
        check("layer_norm", x.len().min(out.len()), rows * d)?;
        check("layer_norm scale", scale.len(), rows)?;
        for r in 0..rows {
            let row = &x[r * d..(r + 1) * d];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let s = (var + eps as f64).sqrt();
            scale[r] = s as f32;
            for c in 0..d {
                let y = ((row[c] as f64 - mean) / s) as f32;
                out[r * d + c] = match affine {
                    Some((w, b)) => y * w[c] + b[c],
                    None => y,
                };
            }
        }
        Ok(())
    }
    fn scale_shift(&self, x: &mut Vec<f32>, rows: usize, d: usize, w: &Vec<f32>, b: &Vec<f32>) -> Result<()> {
        check("scale_shift", x.len(), rows * d)?;
        for (i, v) in x[..rows * d].iter_mut().enumerate() {
            *v = *v * w[i % d] + b[i % d];
        }
        Ok(())
    }
    fn activation(&self, x: &mut Vec<f32>, n: usize, act: Activation) -> Result<()> {
        check("activation", x.len(), n)?;
        let f: fn(f32) -> f32 = match act {
            Activation::GeluNew => gelu_tanh,
            Activation::Gelu => gelu_erf,
            Activation::Relu => |v| v.max(0.0),
        };
        x[..n].iter_mut().for_each(|v| *v = f(*v));
        Ok(())
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, n: usize) -> Result<()> {
        check("add", x.len().min(y.len()), n)?;
        x[..n].iter_mut().zip(y).for_each(|(a, b)| *a += b);
        Ok(())
    }
    fn rotary(
        &self,
        x: &mut Vec<f32>,
        batch: usize,
        ctx: usize,
        heads: usize,
        d_head: usize,
        rot: usize,
        base: f32,
    ) -> Result<()> {
        check("rotary", x.len(), batch * ctx * heads * d_head)?;
        let half = rot / 2;
        for b in 0..batch {
            for t in 0..ctx {
                for h in 0..heads {
                    let o = ((b * ctx + t) * heads + h) * d_head;
                    for p in 0..half {
                        let angle = t as f64 * (base as f64).powf(-2.0 * p as f64 / rot as f64);
                        let (x1, x2) = (x[o + p] as f64, x[o + p + half] as f64);
                        x[o + p] = (x1 * angle.cos() - x2 * angle.sin()) as f32;
                        x[o + p + half] = (x2 * angle.cos() + x1 * angle.sin()) as f32;
                    }
                }
            }
        }
        Ok(())
    }
    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        batch: usize,
        ctx: usize,
        heads: usize,
        d_head: usize,
        scale: f32,
        z: &mut Vec<f32>,
        mut scores: Option<&mut Vec<f32>>,
        mut pattern: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let n = batch * ctx * heads * d_head;
        check("attention", q.len().min(k.len()).min(v.len()).min(z.len()), n)?;
        for b in 0..batch {
            for h in 0..heads {
                for t in 0..ctx {
                    let qo = ((b * ctx + t) * heads + h) * d_head;
                    let s: Vec<f64> = (0..=t)
                        .map(|u| {
                            let ko = ((b * ctx + u) * heads + h) * d_head;
                            (0..d_head).map(|i| q[qo + i] as f64 * k[ko + i] as f64).sum::<f64>() * scale as f64
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let tot: f64 = e.iter().sum();
                    let base = ((b * heads + h) * ctx + t) * ctx;
                    for u in 0..ctx {
                        if let Some(sc) = scores.as_deref_mut() {
                            sc[base + u] = if u <= t { s[u] as f32 } else { f32::NEG_INFINITY };
                        }
                        if let Some(p) = pattern.as_deref_mut() {
                            p[base + u] = if u <= t { (e[u] / tot) as f32 } else { 0.0 };
                        }
                    }
                    for i in 0..d_head {
                        z[qo + i] = (0..=t)
                            .map(|u| e[u] / tot * v[((b * ctx + u) * heads + h) * d_head + i] as f64)
                            .sum::<f64>() as f32;
                    }
                }
            }
        }
        Ok(())
    }
    fn gather_rows(&self, w: &Vec<f32>, idx: &Vec<i32>, rows: usize, d: usize, out: &mut Vec<f32>) -> Result<()> {
        check("gather_rows", out.len(), rows * d)?;
        for r in 0..rows {
            let i = idx[r] as usize;
            check("gather_rows source", w.len(), (i + 1) * d)?;
            out[r * d..(r + 1) * d].copy_from_slice(&w[i * d..(i + 1) * d]);
        }
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
        check("token_ce", logits.len(), rows * vocab)?;
        for r in 0..rows {
            out[r] = if target[r] < 0 {
                0.0
            } else {
                let row = &logits[r * vocab..(r + 1) * vocab];
                let mx = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
                let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
                (lse - row[target[r] as usize] as f64) as f32
            };
        }
        Ok(())
    }
}
