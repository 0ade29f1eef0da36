//! Adam with bias correction and global-norm gradient clipping.

use rayon::prelude::*;

use saepipe_core::train::AdamStep;

use super::{CpuTrain, Params};

/// Elements per parallel task of the element-wise passes; the partial sums
/// of [`grad_norm`] are taken over these blocks, so it fixes the rounding.
const CHUNK: usize = 4096;

impl CpuTrain {
    /// One Adam update of every parameter with the gradient `g · clip`.
    pub(super) fn adam(&mut self, g: &Params, a: &AdamStep) {
        let (b1, b2, eps, clip, lr) = (a.beta1, a.beta2, a.eps, a.clip, a.lr);
        let (bc1, bc2) = a.bias_corrections();
        let upd = |p: &mut Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, g: &Vec<f32>| {
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for i in 0..p.len() {
                        let gi = g[i] * clip;
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        p[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                    }
                });
        };
        let (p, m, v) = (&mut self.params, &mut self.adam_m, &mut self.adam_v);
        upd(&mut p.enc, &mut m.enc, &mut v.enc, &g.enc);
        upd(&mut p.b_enc, &mut m.b_enc, &mut v.b_enc, &g.b_enc);
        upd(&mut p.dec, &mut m.dec, &mut v.dec, &g.dec);
        upd(&mut p.b_dec, &mut m.b_dec, &mut v.b_dec, &g.b_dec);
        if let (Some(p), Some(m), Some(v), Some(g)) = (&mut p.skip, &mut m.skip, &mut v.skip, &g.skip) {
            upd(p, m, v, g);
        }
    }
}

/// Global L2 norm of all gradient tensors, summed in f64 in a fixed order.
pub(super) fn grad_norm(g: &Params) -> f64 {
    let part = |v: &[f32]| -> f64 {
        let chunks: Vec<f64> = v.par_chunks(CHUNK).map(|c| c.iter().map(|x| (*x as f64) * (*x as f64)).sum()).collect();
        chunks.iter().sum()
    };
    g.tensors().iter().map(|(_, v)| part(v)).sum::<f64>().sqrt()
}
