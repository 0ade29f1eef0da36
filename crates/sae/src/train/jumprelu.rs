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
//! gradient; they are collected per row like the ReLU path's active entries,
//! and chunks where they are dense go through GEMMs instead.

use rayon::prelude::*;

use super::*;

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
struct Terms {
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

/// One (row, latent) entry in the per-latent lists of the sparse path.
#[derive(Clone, Copy, Default)]
struct JEntry {
    row: u32,
    /// The activation f (0 for inactive entries).
    f: f32,
    t: Terms,
}

/// Per-row-block output of the sparse path.
struct JRows {
    g: Vec<f32>,
    act: Vec<Terms>,
    ext: Vec<Terms>,
    mse: f64,
    var: f64,
    sparsity: f64,
    pre_loss: f64,
}

impl Trainer {
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

    /// [`Trainer::forward_backward`] for JumpReLU; `coef` is the sparsity
    /// coefficient at this step. Fills `grads`, θ's gradient in
    /// `grads.b_enc[d_sae..]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_backward_jump(
        &self,
        jc: &JumpCfg,
        x: &[f32],
        y: &[f32],
        n: usize,
        coef: f32,
        dead: &[bool],
        grads: &mut Params,
        keep_selection: bool,
    ) -> FbOut {
        let (d_in, d_out, d_sae) = (self.d_in, self.d_out, self.d_sae);
        let p = &self.params;
        let thr = &p.b_enc[d_sae..];
        let StepInputs { xin, dec_norms, skip_out, ybar } = self.step_inputs(x, y, n, grads);

        let chunk = self.chunk_rows(n);
        let inv_n = 1.0 / n as f32;
        let cn = coef * inv_n;
        let pcn = jc.pre_act.unwrap_or(0.0) * inv_n;
        let mut out = FbOut::new(n, d_sae, d_out, keep_selection);
        let (mut mse, mut sparsity, mut pre_loss, mut var, mut nnz) = (0f64, 0f64, 0f64, 0f64, 0usize);
        let mut thr_grad = vec![0f32; d_sae];
        let mut c0 = 0;
        while c0 < n {
            let c1 = (c0 + chunk).min(n);
            let m = c1 - c0;
            let xc = &xin[c0 * d_in..c1 * d_in];
            let (act, ext) = self.select_jump(jc, xc, m, dead);
            nnz += act.idx.len();
            for (&j, &v) in act.idx.iter().zip(&act.val) {
                out.fire_count[j as usize] += 1;
                out.min_pos = out.min_pos.min(v);
            }
            if let Some((ptr, idx)) = &mut out.selection {
                // The kinks of the true loss: the active set, and the
                // pre-activation loss's ReLU(θ − pre) > 0 entries.
                for r in 0..m {
                    idx.extend(act.idx[act.row(r)].iter());
                    for i in ext.row(r) {
                        let j = ext.idx[i] as usize;
                        if pcn != 0.0 && dead[j] && thr[j] - ext.val[i] > 0.0 {
                            idx.push(ext.idx[i]);
                        }
                    }
                    ptr.push(idx.len());
                }
            }
            let entries = act.idx.len() + ext.idx.len();
            let g0 = out.g.len();

            if entries.saturating_mul(self.dense_above_one_in) > m * d_sae {
                // Dense: ŷ, g and dL/df for every entry through GEMMs.
                let mut a_dense = vec![0f32; m * d_sae];
                for r in 0..m {
                    for i in act.row(r) {
                        a_dense[r * d_sae + act.idx[i] as usize] = act.val[i];
                    }
                }
                out.g.resize(g0 + m * d_out, 0.0);
                let skip = (!skip_out.is_empty()).then(|| &skip_out[c0 * d_out..c1 * d_out]);
                let (se, sv) = dense_decode_error(
                    &a_dense,
                    m,
                    p,
                    d_sae,
                    d_out,
                    skip,
                    &y[c0 * d_out..c1 * d_out],
                    &ybar,
                    inv_n,
                    &mut out.g[g0..],
                );
                mse += se;
                var += sv;
                let g = &out.g[g0..];
                // dp = g · W_decᵀ (dL/df of the MSE), then overwritten per row
                // with dL/dpre.
                let mut dp = vec![0f32; m * d_sae];
                linalg::gemm(MatRef::row_major(g, m, d_out), MatRef::row_major(&p.dec, d_sae, d_out).t(), &mut dp, 0.0);
                let rows: Vec<(Vec<Terms>, Vec<Terms>, f64, f64)> = dp
                    .par_chunks_mut(d_sae)
                    .enumerate()
                    .map(|(r, dr)| {
                        let l0 = act.row(r).len() as f32;
                        let sg = jc.step_grad(l0);
                        let mut row_sparsity = jc.row_loss(l0);
                        let mut row_pre = 0f64;
                        let term = |i: usize, c: &Csr| {
                            let j = c.idx[i] as usize;
                            jc.terms(c.val[i], thr[j], dec_norms[j], dead[j], cn, pcn, sg, || dr[j])
                        };
                        let ta: Vec<Terms> = act.row(r).map(|i| term(i, &act)).collect();
                        let te: Vec<Terms> = ext.row(r).map(|i| term(i, &ext)).collect();
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
                    for (c, ts) in [(&act, ta), (&ext, te)] {
                        for (i, t) in c.row(r).zip(ts) {
                            let j = c.idx[i] as usize;
                            thr_grad[j] += t.dthr;
                            ncoef[j] += t.ncoef;
                        }
                    }
                    sparsity += rs;
                    pre_loss += rp;
                }
                linalg::gemm(
                    MatRef::row_major(&a_dense, m, d_sae).t(),
                    MatRef::row_major(g, m, d_out),
                    &mut grads.dec,
                    1.0,
                );
                linalg::gemm(MatRef::row_major(&dp, m, d_sae).t(), MatRef::row_major(xc, m, d_in), &mut grads.enc, 1.0);
                for dr in dp.chunks_exact(d_sae) {
                    grads.b_enc[..d_sae].iter_mut().zip(dr).for_each(|(b, v)| *b += v);
                }
                for (j, &c) in ncoef.iter().enumerate() {
                    if c != 0.0 && dec_norms[j] > 0.0 {
                        let w = &p.dec[j * d_out..(j + 1) * d_out];
                        linalg::axpy(c / dec_norms[j], w, &mut grads.dec[j * d_out..(j + 1) * d_out]);
                    }
                }
            } else {
                // Sparse: per row block, the residual gradient and each
                // entry's terms; then per latent, its gradient rows.
                let blocks: Vec<JRows> = (0..m.div_ceil(ROW_BLOCK))
                    .into_par_iter()
                    .map(|bi| {
                        let r0 = bi * ROW_BLOCK;
                        let r1 = (r0 + ROW_BLOCK).min(m);
                        let mut o = JRows {
                            g: vec![0.0; (r1 - r0) * d_out],
                            act: Vec::with_capacity(act.ptr[r1] - act.ptr[r0]),
                            ext: Vec::with_capacity(ext.ptr[r1] - ext.ptr[r0]),
                            mse: 0.0,
                            var: 0.0,
                            sparsity: 0.0,
                            pre_loss: 0.0,
                        };
                        let mut yhat = vec![0f32; d_out];
                        for r in r0..r1 {
                            let gr = c0 + r;
                            let skip = (!skip_out.is_empty()).then(|| &skip_out[gr * d_out..(gr + 1) * d_out]);
                            let g = &mut o.g[(r - r0) * d_out..(r - r0 + 1) * d_out];
                            let (se, sv) = sparse_decode_error_row(
                                p,
                                &act,
                                r,
                                d_out,
                                skip,
                                &y[gr * d_out..(gr + 1) * d_out],
                                &ybar,
                                inv_n,
                                &mut yhat,
                                g,
                            );
                            o.mse += se;
                            o.var += sv;
                            let g = &o.g[(r - r0) * d_out..(r - r0 + 1) * d_out];
                            let l0 = act.row(r).len() as f32;
                            let sg = jc.step_grad(l0);
                            o.sparsity += jc.row_loss(l0);
                            for (c, ts) in [(&act, &mut o.act), (&ext, &mut o.ext)] {
                                for i in c.row(r) {
                                    let j = c.idx[i] as usize;
                                    let w = &p.dec[j * d_out..(j + 1) * d_out];
                                    let t = jc.terms(c.val[i], thr[j], dec_norms[j], dead[j], cn, pcn, sg, || {
                                        linalg::dot(w, g)
                                    });
                                    o.sparsity += t.tanh as f64;
                                    o.pre_loss += t.pre_loss as f64;
                                    ts.push(t);
                                }
                            }
                        }
                        o
                    })
                    .collect();
                let mut t_act = Vec::with_capacity(act.idx.len());
                let mut t_ext = Vec::with_capacity(ext.idx.len());
                for o in blocks {
                    out.g.extend(o.g);
                    t_act.extend(o.act);
                    t_ext.extend(o.ext);
                    mse += o.mse;
                    var += o.var;
                    sparsity += o.sparsity;
                    pre_loss += o.pre_loss;
                }
                let g = &out.g[g0..];

                // Per-latent lists (counting sort, stable in row order).
                let mut counts = vec![0usize; d_sae + 1];
                for &j in act.idx.iter().chain(&ext.idx) {
                    counts[j as usize + 1] += 1;
                }
                for j in 0..d_sae {
                    counts[j + 1] += counts[j];
                }
                let mut fill = counts.clone();
                let mut list = vec![JEntry::default(); entries];
                for r in 0..m {
                    for (c, ts, is_act) in [(&act, &t_act, true), (&ext, &t_ext, false)] {
                        for i in c.row(r) {
                            let j = c.idx[i] as usize;
                            list[fill[j]] = JEntry { row: r as u32, f: if is_act { c.val[i] } else { 0.0 }, t: ts[i] };
                            fill[j] += 1;
                        }
                    }
                }
                let (gb_enc, _) = grads.b_enc.split_at_mut(d_sae);
                grads
                    .enc
                    .par_chunks_mut(d_in)
                    .zip(grads.dec.par_chunks_mut(d_out))
                    .zip(gb_enc.par_iter_mut())
                    .zip(thr_grad.par_iter_mut())
                    .enumerate()
                    .for_each(|(j, (((ge, gd), gb), gt))| {
                        let ents = &list[counts[j]..counts[j + 1]];
                        if ents.is_empty() {
                            return;
                        }
                        let mut nc = 0f32;
                        for e in ents {
                            let r = e.row as usize;
                            if e.f != 0.0 {
                                linalg::axpy(e.f, &g[r * d_out..(r + 1) * d_out], gd);
                            }
                            if e.t.dpre != 0.0 {
                                linalg::axpy(e.t.dpre, &xc[r * d_in..(r + 1) * d_in], ge);
                                *gb += e.t.dpre;
                            }
                            *gt += e.t.dthr;
                            nc += e.t.ncoef;
                        }
                        if nc != 0.0 && dec_norms[j] > 0.0 {
                            let w = &p.dec[j * d_out..(j + 1) * d_out];
                            linalg::axpy(nc / dec_norms[j], w, gd);
                        }
                    });
            }
            let g = &out.g[g0..];
            for r in g.chunks_exact(d_out) {
                linalg::axpy(1.0, r, &mut grads.b_dec);
            }
            if let Some(gs) = &mut grads.skip {
                linalg::gemm(
                    MatRef::row_major(g, m, d_out).t(),
                    MatRef::row_major(&x[c0 * d_in..c1 * d_in], m, d_in),
                    gs,
                    1.0,
                );
            }
            c0 = c1;
        }
        grads.b_enc[d_sae..].copy_from_slice(&thr_grad);
        // Input side of b_dec: −Σ_j (Σ_t dpre_tj) enc_j.
        if self.cfg.apply_b_dec_to_input && !self.cfg.transcoder {
            for j in 0..d_sae {
                let gb = grads.b_enc[j];
                if gb != 0.0 {
                    linalg::axpy(-gb, &p.enc[j * d_in..(j + 1) * d_in], &mut grads.b_dec);
                }
            }
        }
        let nf = n as f64;
        out.parts = LossParts {
            mse: mse / nf,
            l1: coef as f64 * sparsity / nf,
            auxk: jc.pre_act.unwrap_or(0.0) as f64 * pre_loss / nf,
            l0: nnz as f64 / nf,
            explained_variance: if var > 0.0 { 1.0 - mse / var } else { 0.0 },
        };
        out
    }
}
