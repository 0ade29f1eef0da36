//! JumpReLU training, following SAELens 6's `JumpReLUTrainingSAE`
//! (`sae_lens/saes/jumprelu_sae.py`) driven by its `SAETrainer`.
//!
//! Forward, per token t and latent j, with `pre = (x − b_dec)·W_enc + b_enc`:
//! `f_tj = pre_tj · H(pre_tj − θ_j)`, `ŷ_t = Σ_j f_tj W_dec_j + b_dec`.
//!
//! Loss: `mse + c · mean_t s_t (+ c_pre · mean_t Σ_{j dead} ReLU(θ_j − pre_tj) ‖W_dec_j‖)`
//! with the per-token sparsity `s_t` of [`JumpReluSparsityLoss`]: `L0_t`,
//! `Σ_j tanh(a · f_tj ‖W_dec_j‖)` or `2/T · (L0_t − T)²`, where
//! `L0_t = Σ_j H(pre_tj − θ_j)`.
//!
//! Backward: the true gradients of the MSE, tanh and pre-activation terms,
//! plus SAELens's straight-through pseudo-derivatives with the rectangle
//! kernel `K(u) = 1[−½ < u < ½]`, `u = (pre − θ) / bandwidth`:
//! - JumpReLU: `∂f/∂θ = −(θ / bandwidth) · K(u)` (and `∂f/∂pre = H(pre − θ)`);
//! - step function (the L0 count): `∂H/∂θ = −K(u) / bandwidth`.
//!
//! With `ste_to_input` both also reach `pre` with the opposite sign
//! (`∂/∂pre = −∂/∂θ`), as in SAELens. Only entries that are active, inside
//! the kernel's window, or (pre-activation loss) dead and below θ carry a
//! gradient; they are collected per row (the row kernel [`JumpKernel`] of
//! the shared chunked driver), and chunks where they are dense go through
//! GEMMs instead.

use rayon::prelude::*;

use super::driver::{LatentGrads, LatentRows, RowKernel, RowTerms, SparseRow};
use super::sparse::Entry;
use super::{CpuTrain, Csr, JumpReluSparsityLoss, Params, TrainArch};
use crate::error::{Result, SaeError};
use crate::linalg;

/// The JumpReLU hyper-parameters the forward/backward needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct JumpCfg {
    bw: f32,
    mode: JumpReluSparsityLoss,
    tanh_scale: f32,
    target_l0: f32,
    pre_act: Option<f32>,
    ste_to_input: bool,
}

/// Checks the JumpReLU hyper-parameters (names as in the serialised config).
pub(super) fn validate(arch: &TrainArch, d_sae: usize) -> Result<()> {
    let TrainArch::JumpRelu {
        l0_coefficient,
        bandwidth,
        initial_threshold,
        sparsity_loss_mode,
        tanh_scale,
        target_l0,
        pre_act_loss_coefficient,
        ..
    } = *arch
    else {
        return Ok(());
    };
    let bad = |what: &str, v: f32, need: &str| {
        Err(SaeError::Invalid(format!("train config: jumprelu {what} = {v} must be {need}")))
    };
    if !(l0_coefficient.is_finite() && l0_coefficient >= 0.0) {
        return bad("l0_coefficient", l0_coefficient, "finite and >= 0");
    }
    if !(bandwidth.is_finite() && bandwidth > 0.0) {
        return bad("bandwidth", bandwidth, "finite and > 0");
    }
    if !(initial_threshold.is_finite() && initial_threshold >= 0.0) {
        return bad("initial_threshold", initial_threshold, "finite and >= 0");
    }
    if let Some(c) = pre_act_loss_coefficient {
        if !(c.is_finite() && c >= 0.0) {
            return bad("pre_act_loss_coefficient", c, "finite and >= 0");
        }
    }
    match sparsity_loss_mode {
        JumpReluSparsityLoss::Tanh if !(tanh_scale.is_finite() && tanh_scale > 0.0) => {
            bad("tanh_scale", tanh_scale, "finite and > 0")
        }
        JumpReluSparsityLoss::Quadratic => match target_l0 {
            None => {
                Err(SaeError::Invalid("train config: jumprelu sparsity_loss_mode quadratic needs target_l0".into()))
            }
            Some(t) if !(t > 0.0 && t <= d_sae as f32) => bad("target_l0", t, &format!("in (0, d_sae = {d_sae}]")),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// One (row, latent) entry's share of the backward pass and of the losses.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Terms {
    /// dL/dpre.
    dpre: f32,
    /// dL/dθ_j (pseudo-derivatives plus the pre-activation loss).
    dthr: f32,
    /// Coefficient of `W_dec_j / ‖W_dec_j‖` in dL/dW_dec_j (the tanh and
    /// pre-activation terms depend on the decoder norms).
    ncoef: f32,
    /// tanh(a · f ‖W_dec_j‖) (tanh mode, active entries).
    tanh: f32,
    /// ReLU(θ − pre) ‖W_dec_j‖ (pre-activation loss).
    pre_loss: f32,
}

impl JumpCfg {
    /// d(per-token sparsity loss)/d(L0_t): what the step function's
    /// straight-through estimator receives, before `c / n`.
    fn step_grad(&self, l0: f32) -> f32 {
        match self.mode {
            JumpReluSparsityLoss::Step => 1.0,
            JumpReluSparsityLoss::Quadratic => 4.0 / self.target_l0 * (l0 - self.target_l0),
            JumpReluSparsityLoss::Tanh => 0.0,
        }
    }

    /// Per-token sparsity loss from the L0 count (tanh mode: 0 here, its
    /// terms are summed per entry).
    fn row_loss(&self, l0: f32) -> f64 {
        let (l0, t) = (l0 as f64, self.target_l0 as f64);
        match self.mode {
            JumpReluSparsityLoss::Step => l0,
            JumpReluSparsityLoss::Quadratic => 2.0 / t * (l0 - t).powi(2),
            JumpReluSparsityLoss::Tanh => 0.0,
        }
    }

    /// Whether `pre` lies in the rectangle kernel's window around `th`.
    #[inline]
    fn in_window(&self, pre: f32, th: f32) -> bool {
        let u = (pre - th) / self.bw;
        u > -0.5 && u < 0.5
    }

    /// Gradient terms of one entry. `cn` = c / n, `pcn` = c_pre / n,
    /// `step_g` = [`Self::step_grad`] of the row; `s_mse` returns
    /// `W_dec_j · g_t` (the MSE's dL/df) and is called only when needed.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn terms(
        &self,
        pre: f32,
        th: f32,
        norm: f32,
        dead: bool,
        cn: f32,
        pcn: f32,
        step_g: f32,
        s_mse: impl FnOnce() -> f32,
    ) -> Terms {
        let mut t = Terms::default();
        let active = pre > th;
        let window = self.in_window(pre, th);
        if active || window {
            // dL/df.
            let mut s = s_mse();
            if self.mode == JumpReluSparsityLoss::Tanh {
                if active {
                    let a = (self.tanh_scale * pre * norm).tanh();
                    let d = 1.0 - a * a;
                    t.tanh = a;
                    s += cn * self.tanh_scale * norm * d;
                    t.ncoef += cn * self.tanh_scale * pre * d;
                } else {
                    s += cn * self.tanh_scale * norm;
                }
            }
            if active {
                t.dpre = s;
            }
            if window {
                // JumpReLU's estimator (θ/ε)·K·dL/df and the step function's
                // (1/ε)·K·dL/dH, both entering dL/dθ with a minus sign.
                let ste = th / self.bw * s + cn * step_g / self.bw;
                t.dthr = -ste;
                if self.ste_to_input {
                    t.dpre += ste;
                }
            }
        }
        if dead && pcn != 0.0 {
            let r = th - pre;
            if r > 0.0 {
                let w = pcn * norm;
                t.dthr += w;
                t.dpre -= w;
                t.ncoef += pcn * r;
                t.pre_loss = r * norm;
            }
        }
        t
    }
}

impl CpuTrain {
    /// The JumpReLU hyper-parameters (`None` for other architectures).
    pub(super) fn jump_cfg(&self) -> Option<JumpCfg> {
        match self.cfg.arch {
            TrainArch::JumpRelu {
                bandwidth,
                sparsity_loss_mode,
                tanh_scale,
                target_l0,
                pre_act_loss_coefficient,
                ste_to_input,
                ..
            } => Some(JumpCfg {
                bw: bandwidth,
                mode: sparsity_loss_mode,
                tanh_scale,
                target_l0: target_l0.unwrap_or(1.0),
                pre_act: pre_act_loss_coefficient,
                ste_to_input,
            }),
            _ => None,
        }
    }

    /// Per row: the active entries (pre > θ, values = pre) and the other
    /// entries the backward needs (values = pre): inside the kernel window,
    /// or dead and below θ when the pre-activation loss is on.
    fn select_jump(&self, jc: &JumpCfg, xin: &[f32], n: usize, dead: &[bool]) -> (Csr, Csr) {
        let (d_in, d_sae) = (self.d_in, self.d_sae);
        let thr = &self.params.b_enc[d_sae..];
        let pre_act = jc.pre_act.is_some_and(|c| c != 0.0);
        let blocks: Vec<(Csr, Csr)> = xin
            .par_chunks(linalg::rows_per_task(n, d_sae) * d_in)
            .map_init(Vec::new, |pre, xb| {
                let rows = xb.len() / d_in;
                self.pre_block(xb, rows, pre);
                let mut act = Csr::new();
                let mut ext = Csr::new();
                for r in 0..rows {
                    let p = &pre[r * d_sae..(r + 1) * d_sae];
                    for (j, (&v, &th)) in p.iter().zip(thr).enumerate() {
                        if v > th {
                            act.idx.push(j as u32);
                            act.val.push(v);
                        } else if jc.in_window(v, th) || (pre_act && dead[j] && th - v > 0.0) {
                            ext.idx.push(j as u32);
                            ext.val.push(v);
                        }
                    }
                    act.push_row();
                    ext.push_row();
                }
                (act, ext)
            })
            .collect();
        let mut act = Csr::new();
        let mut ext = Csr::new();
        for (a, e) in blocks {
            act.append(a);
            ext.append(e);
        }
        (act, ext)
    }
}

/// [`RowKernel`] of JumpReLU. Active entries are `pre > θ` (values pre);
/// the other entries (values pre) are those inside the kernel window or,
/// with the pre-activation loss, dead and below θ. Its per-latent
/// accumulator is dL/dθ.
pub(super) struct JumpKernel<'a> {
    tr: &'a CpuTrain,
    jc: JumpCfg,
    /// θ, `[d_sae]`.
    thr: &'a [f32],
    dead: &'a [bool],
    dec_norms: &'a [f32],
    /// Sparsity coefficient at this step.
    coef: f32,
    /// `coef / n`.
    cn: f32,
    /// Pre-activation loss coefficient / n (0 without it).
    pcn: f32,
}

impl<'a> JumpKernel<'a> {
    /// The kernel for a batch of `n` rows with sparsity coefficient `coef`.
    pub(super) fn new(
        tr: &'a CpuTrain,
        jc: JumpCfg,
        n: usize,
        coef: f32,
        dead: &'a [bool],
        dec_norms: &'a [f32],
    ) -> Self {
        let inv_n = 1.0 / n as f32;
        JumpKernel {
            tr,
            jc,
            thr: &tr.params.b_enc[tr.d_sae..],
            dead,
            dec_norms,
            coef,
            cn: coef * inv_n,
            pcn: jc.pre_act.unwrap_or(0.0) * inv_n,
        }
    }

    /// Terms of entry `i` of `c` (row with step gradient `sg`); `s_mse`
    /// gives the MSE's dL/df when needed.
    #[inline]
    fn term(&self, c: &Csr, i: usize, sg: f32, s_mse: impl FnOnce(usize) -> f32) -> Terms {
        let j = c.idx[i] as usize;
        self.jc.terms(c.val[i], self.thr[j], self.dec_norms[j], self.dead[j], self.cn, self.pcn, sg, || s_mse(j))
    }
}

impl RowKernel for JumpKernel<'_> {
    type Term = Terms;

    fn select(&self, xin: &[f32], m: usize) -> (Csr, Csr) {
        self.tr.select_jump(&self.jc, xin, m, self.dead)
    }

    fn record(&self, act: &Csr, ext: &Csr, r: usize, idx: &mut Vec<u32>) {
        // The kinks of the true loss: the active set, and the
        // pre-activation loss's ReLU(θ − pre) > 0 entries.
        idx.extend(act.idx[act.row(r)].iter());
        for i in ext.row(r) {
            let j = ext.idx[i] as usize;
            if self.pcn != 0.0 && self.dead[j] && self.thr[j] - ext.val[i] > 0.0 {
                idx.push(ext.idx[i]);
            }
        }
    }

    fn dense(&self, act: &Csr, ext: &Csr, m: usize) -> bool {
        (act.idx.len() + ext.idx.len()).saturating_mul(self.tr.dense_above_one_in) > m * self.tr.d_sae
    }

    fn dense_rows(
        &self,
        act: &Csr,
        ext: &Csr,
        _a_dense: &[f32],
        dp: &mut [f32],
        sums: &mut [f64; 2],
        thr_grad: &mut [f32],
    ) -> Vec<f32> {
        let (d_sae, jc) = (self.tr.d_sae, &self.jc);
        // dp holds dL/df of the MSE; each row becomes dL/dpre.
        let rows: Vec<(Vec<Terms>, Vec<Terms>, f64, f64)> = dp
            .par_chunks_mut(d_sae)
            .enumerate()
            .map(|(r, dr)| {
                let l0 = act.row(r).len() as f32;
                let sg = jc.step_grad(l0);
                let mut row_sparsity = jc.row_loss(l0);
                let mut row_pre = 0f64;
                let ta: Vec<Terms> = act.row(r).map(|i| self.term(act, i, sg, |j| dr[j])).collect();
                let te: Vec<Terms> = ext.row(r).map(|i| self.term(ext, i, sg, |j| dr[j])).collect();
                for t in ta.iter().chain(&te) {
                    row_sparsity += t.tanh as f64;
                    row_pre += t.pre_loss as f64;
                }
                dr.iter_mut().for_each(|v| *v = 0.0);
                for (i, t) in act.row(r).zip(&ta) {
                    dr[act.idx[i] as usize] = t.dpre;
                }
                for (i, t) in ext.row(r).zip(&te) {
                    dr[ext.idx[i] as usize] = t.dpre;
                }
                (ta, te, row_sparsity, row_pre)
            })
            .collect();
        let mut ncoef = vec![0f32; d_sae];
        for (r, (ta, te, rs, rp)) in rows.iter().enumerate() {
            for (c, ts) in [(act, ta), (ext, te)] {
                for (i, t) in c.row(r).zip(ts) {
                    let j = c.idx[i] as usize;
                    thr_grad[j] += t.dthr;
                    ncoef[j] += t.ncoef;
                }
            }
            sums[0] += rs;
            sums[1] += rp;
        }
        ncoef
    }

    fn sparse_row(&self, row: SparseRow<'_>, out: &mut RowTerms<Terms>) {
        let SparseRow { act, ext, r, g, .. } = row;
        let (d_out, jc) = (self.tr.d_out, &self.jc);
        let dec = &self.tr.params.dec;
        let l0 = act.row(r).len() as f32;
        let sg = jc.step_grad(l0);
        out.sums[0] += jc.row_loss(l0);
        for (c, ts) in [(act, &mut out.act), (ext, &mut out.ext)] {
            for i in c.row(r) {
                let t = self.term(c, i, sg, |j| linalg::dot(&dec[j * d_out..(j + 1) * d_out], g));
                out.sums[0] += t.tanh as f64;
                out.sums[1] += t.pre_loss as f64;
                ts.push(t);
            }
        }
    }

    fn latent(&self, j: usize, ents: &[Entry<Terms>], rows: &LatentRows<'_>, gr: LatentGrads<'_>) {
        let (d_in, d_out) = (self.tr.d_in, self.tr.d_out);
        let mut nc = 0f32;
        for e in ents {
            let r = e.row as usize;
            // The activation f (0 for inactive entries).
            let f = if e.ext { 0.0 } else { e.val };
            if f != 0.0 {
                linalg::axpy(f, &rows.g[r * d_out..(r + 1) * d_out], gr.dec);
            }
            if e.term.dpre != 0.0 {
                linalg::axpy(e.term.dpre, &rows.x[r * d_in..(r + 1) * d_in], gr.enc);
                *gr.b_enc += e.term.dpre;
            }
            *gr.acc += e.term.dthr;
            nc += e.term.ncoef;
        }
        if nc != 0.0 && self.dec_norms[j] > 0.0 {
            let w = &self.tr.params.dec[j * d_out..(j + 1) * d_out];
            linalg::axpy(nc / self.dec_norms[j], w, gr.dec);
        }
    }

    fn finish(&self, grads: &mut Params, thr_grad: &[f32]) {
        // θ's gradient follows the bias's (see `Params::b_enc`).
        grads.b_enc[self.tr.d_sae..].copy_from_slice(thr_grad);
    }

    fn loss_coefficients(&self) -> [f64; 2] {
        [self.coef as f64, self.jc.pre_act.unwrap_or(0.0) as f64]
    }
}

#[cfg(test)]
mod tests;
