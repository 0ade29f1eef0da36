//! Row kernel of ReLU + L1 (`standard`), TopK and BatchTopK.
//!
//! The active entries are the selected latents (values f = pre); the other
//! entries are the AuxK latents (values pre): per row, the `k_aux` largest
//! pre-activations among the dead latents, whose decoder rows are fitted to
//! the residual `y − ŷ` (held constant), scaled by
//! `aux_k_coefficient · min(n_dead / k_aux, 1)`. The L1 term of `standard`
//! is `λ · mean_t Σ_j f_tj ‖W_dec_j‖`.

use rayon::prelude::*;
use saepipe_core::train::StepBatch;

use super::driver::{LatentGrads, LatentRows, RowKernel, RowTerms, SparseRow};
use super::sparse::Entry;
use super::{CpuTrain, Csr, Params, TrainArch};
use crate::linalg;

/// [`RowKernel`] of ReLU + L1, TopK and BatchTopK. Its entry term is dL/dpre.
pub(super) struct ReluTopK<'a> {
    tr: &'a CpuTrain,
    dead: &'a [bool],
    dec_norms: &'a [f32],
    /// Replaces the residual seen by the AuxK term (gradient checks).
    fixed_resid: Option<&'a [f32]>,
    /// L1 coefficient λ at this step (0 unless `standard`).
    l1c: f32,
    inv_n: f32,
    standard: bool,
    batch_topk: bool,
    use_aux: bool,
    /// AuxK latents per row (0 without AuxK).
    k_aux: usize,
    /// Coefficient of the AuxK term.
    aux_scale: f32,
}

impl<'a> ReluTopK<'a> {
    /// The kernel for the batch `b` (its rows, dead latents, AuxK term and
    /// L1 coefficient).
    pub(super) fn new(
        tr: &'a CpuTrain,
        b: &StepBatch<'a>,
        dec_norms: &'a [f32],
        fixed_resid: Option<&'a [f32]>,
    ) -> Self {
        let standard = matches!(tr.cfg.arch, TrainArch::Standard { .. });
        // ReLU + L1 has no AuxK term.
        let aux = if standard { None } else { b.aux };
        ReluTopK {
            tr,
            dead: b.dead,
            dec_norms,
            fixed_resid,
            l1c: if standard { b.sparsity_coefficient } else { 0.0 },
            inv_n: 1.0 / b.n as f32,
            standard,
            batch_topk: matches!(tr.cfg.arch, TrainArch::BatchTopK { .. }),
            use_aux: aux.is_some(),
            k_aux: aux.map_or(0, |a| a.k_aux),
            aux_scale: aux.map_or(0.0, |a| a.scale),
        }
    }

    /// Decoder row `j`.
    fn w(&self, j: usize) -> &[f32] {
        let d_out = self.tr.d_out;
        &self.tr.params.dec[j * d_out..(j + 1) * d_out]
    }
}

impl RowKernel for ReluTopK<'_> {
    type Term = f32;

    fn select_batch(&self, xin: &[f32], n: usize) -> Option<(Csr, Csr)> {
        // BatchTopK selects over the whole batch at once.
        self.batch_topk.then(|| self.tr.select(xin, n, self.dead, self.k_aux))
    }

    fn select(&self, xin: &[f32], m: usize) -> (Csr, Csr) {
        self.tr.select(xin, m, self.dead, self.k_aux)
    }

    fn record(&self, act: &Csr, aux: &Csr, r: usize, idx: &mut Vec<u32>) {
        idx.extend(act.idx[act.row(r)].iter());
        idx.extend(aux.idx[aux.row(r)].iter());
    }

    fn dense(&self, act: &Csr, _aux: &Csr, m: usize) -> bool {
        // ReLU early in training fires on a large share of latents.
        self.standard && act.idx.len().saturating_mul(self.tr.dense_above_one_in) > m * self.tr.d_sae
    }

    fn dense_rows(
        &self,
        act: &Csr,
        _aux: &Csr,
        a_dense: &[f32],
        dpre: &mut [f32],
        sums: &mut [f64; 2],
        sum_f: &mut [f32],
    ) -> Vec<f32> {
        let (d_sae, dec_norms, l1c, inv_n) = (self.tr.d_sae, self.dec_norms, self.l1c, self.inv_n);
        for (&j, &v) in act.idx.iter().zip(&act.val) {
            sums[0] += (v * dec_norms[j as usize]) as f64;
        }
        // dL/dpre on active entries (ReLU: exactly the positive ones), 0 elsewhere.
        dpre.par_chunks_mut(d_sae).zip(a_dense.par_chunks(d_sae)).for_each(|(dr, ar)| {
            for j in 0..d_sae {
                dr[j] = if ar[j] > 0.0 { dr[j] + l1c * dec_norms[j] * inv_n } else { 0.0 };
            }
        });
        // Column sums of the activations feed the L1 decoder-norm term
        // (applied once, in `finish`).
        for ar in a_dense.chunks_exact(d_sae) {
            sum_f.iter_mut().zip(ar).for_each(|(s, v)| *s += v);
        }
        Vec::new()
    }

    fn aux_rows(&self) -> bool {
        self.use_aux
    }

    fn sparse_row(&self, row: SparseRow<'_>, out: &mut RowTerms<f32>) {
        let SparseRow { act, ext: aux, r, batch_row, g, yhat, y, h, scratch: a } = row;
        let (d_out, dec_norms) = (self.tr.d_out, self.dec_norms);
        if self.standard {
            for i in act.row(r) {
                out.sums[0] += (act.val[i] * dec_norms[act.idx[i] as usize]) as f64;
            }
        }
        for i in act.row(r) {
            let j = act.idx[i] as usize;
            let mut dp = linalg::dot(self.w(j), g);
            if self.standard {
                dp += self.l1c * dec_norms[j] * self.inv_n;
            }
            out.act.push(dp);
        }
        if self.use_aux {
            a.iter_mut().for_each(|v| *v = 0.0);
            for i in aux.row(r) {
                linalg::axpy(aux.val[i], self.w(aux.idx[i] as usize), a);
            }
            // a − (y − ŷ) = a + e, with e treated as a constant.
            let mut ae = 0f64;
            for d in 0..d_out {
                let e = match self.fixed_resid {
                    Some(fr) => fr[batch_row * d_out + d],
                    None => yhat[d] - y[d],
                };
                let v = a[d] + e;
                ae += (v as f64) * (v as f64);
                h[d] = 2.0 * self.aux_scale * v * self.inv_n;
            }
            out.sums[1] += ae;
            for i in aux.row(r) {
                out.ext.push(linalg::dot(self.w(aux.idx[i] as usize), h));
            }
        }
    }

    fn latent(&self, j: usize, ents: &[Entry<f32>], rows: &LatentRows<'_>, gr: LatentGrads<'_>) {
        let (d_in, d_out) = (self.tr.d_in, self.tr.d_out);
        let mut sum_f = 0f32;
        for e in ents {
            let r = e.row as usize;
            let src = if e.ext { &rows.h[r * d_out..(r + 1) * d_out] } else { &rows.g[r * d_out..(r + 1) * d_out] };
            linalg::axpy(e.val, src, gr.dec);
            linalg::axpy(e.term, &rows.x[r * d_in..(r + 1) * d_in], gr.enc);
            *gr.b_enc += e.term;
            if !e.ext {
                sum_f += e.val;
            }
        }
        if self.standard && sum_f != 0.0 && self.dec_norms[j] > 0.0 {
            linalg::axpy(self.l1c * self.inv_n * sum_f / self.dec_norms[j], self.w(j), gr.dec);
        }
    }

    fn finish(&self, grads: &mut Params, sum_f_dense: &[f32]) {
        if !self.standard {
            return;
        }
        let d_out = self.tr.d_out;
        for (j, &sum_f) in sum_f_dense.iter().enumerate() {
            if sum_f != 0.0 && self.dec_norms[j] > 0.0 {
                linalg::axpy(
                    self.l1c * self.inv_n * sum_f / self.dec_norms[j],
                    self.w(j),
                    &mut grads.dec[j * d_out..(j + 1) * d_out],
                );
            }
        }
    }

    fn loss_coefficients(&self) -> [f64; 2] {
        [self.l1c as f64, self.aux_scale as f64]
    }
}
