//! The chunked forward/backward shared by every architecture.
//!
//! [`CpuTrain::forward_backward`] runs over a batch in chunks of rows: it
//! selects each chunk's entries, decodes, forms the residual gradient
//! `g = 2(ŷ − y)/n` and accumulates every gradient, either through dense
//! GEMMs (chunks where many latents are active) or sparsely, per row and
//! then per latent. What an architecture adds (which entries a row selects,
//! each entry's share of the losses and gradients) is a [`RowKernel`]:
//! [`ReluTopK`](super::topk::ReluTopK) for ReLU + L1, TopK and BatchTopK,
//! [`JumpKernel`](super::jumprelu::JumpKernel) for JumpReLU.
//!
//! Every reduction has a fixed order that does not depend on the thread
//! count: row blocks are reduced in order, and each latent's gradient rows
//! are accumulated by one task in row order.

use rayon::prelude::*;
use saepipe_core::train::StepBatch;

use super::jumprelu::JumpKernel;
use super::sparse::{Entry, by_latent};
use super::topk::ReluTopK;
use super::{CpuTrain, Csr, LossParts, Params, TrainArch};
use crate::linalg::{self, MatRef, ROW_BLOCK};

/// Chunks where more than one entry in this many is selected train through
/// dense GEMMs instead of the sparse gather/scatter path.
pub(super) const DENSE_ABOVE_ONE_IN: usize = 16;

/// What every training step computes first; see [`CpuTrain::step_inputs`].
pub(super) struct StepInputs {
    /// Encoder input rows `[n, d_in]`.
    pub(super) xin: Vec<f32>,
    /// `‖W_dec_j‖`, `[d_sae]`.
    pub(super) dec_norms: Vec<f32>,
    /// Skip-connection output `[n, d_out]` (empty without one).
    pub(super) skip_out: Vec<f32>,
    /// Mean target `[d_out]` (explained variance).
    pub(super) ybar: Vec<f64>,
}

/// Result of [`CpuTrain::forward_backward`].
pub(super) struct FbOut {
    pub(super) parts: LossParts,
    /// Rows on which each latent was active.
    pub(super) fire_count: Vec<u64>,
    /// Smallest active value (BatchTopK threshold update).
    pub(super) min_pos: f32,
    /// Row pointers and latents (active, then those at the architecture's
    /// other kinks, per row), when requested.
    pub(super) selection: Option<(Vec<usize>, Vec<u32>)>,
    /// Residual gradient `g = 2e/n`, `[n, d_out]`.
    pub(super) g: Vec<f32>,
}

impl FbOut {
    /// Empty outputs of a step over `n` rows.
    fn new(n: usize, d_sae: usize, d_out: usize, keep_selection: bool) -> FbOut {
        FbOut {
            parts: LossParts { mse: 0.0, l1: 0.0, auxk: 0.0, l0: 0.0, explained_variance: 0.0 },
            fire_count: vec![0; d_sae],
            min_pos: f32::INFINITY,
            selection: keep_selection.then(|| (vec![0], Vec::new())),
            g: Vec::with_capacity(n * d_out),
        }
    }
}

/// One row of the sparse path, as a [`RowKernel`] sees it.
pub(super) struct SparseRow<'a> {
    /// Active entries of the chunk (values f).
    pub(super) act: &'a Csr,
    /// The architecture's other entries of the chunk.
    pub(super) ext: &'a Csr,
    /// Row within the chunk.
    pub(super) r: usize,
    /// Row within the batch.
    pub(super) batch_row: usize,
    /// Residual gradient of the row, `[d_out]`.
    pub(super) g: &'a [f32],
    /// Reconstruction ŷ of the row, `[d_out]`.
    pub(super) yhat: &'a [f32],
    /// Target of the row, `[d_out]`.
    pub(super) y: &'a [f32],
    /// The row's second residual gradient, `[d_out]` when
    /// [`RowKernel::aux_rows`], else empty.
    pub(super) h: &'a mut [f32],
    /// `[d_out]` of scratch when [`RowKernel::aux_rows`], else empty.
    pub(super) scratch: &'a mut [f32],
}

/// What a [`RowKernel`] returns from the rows of a sparse block.
pub(super) struct RowTerms<T> {
    /// Terms of the active entries, in CSR order.
    pub(super) act: Vec<T>,
    /// Terms of the other entries, in CSR order.
    pub(super) ext: Vec<T>,
    /// The two raw loss sums (see [`RowKernel::loss_coefficients`]).
    pub(super) sums: [f64; 2],
}

/// The rows of a chunk a latent's gradient is built from.
pub(super) struct LatentRows<'a> {
    /// Residual gradients `[m, d_out]`.
    pub(super) g: &'a [f32],
    /// Second residual gradients `[m, d_out]` (or empty).
    pub(super) h: &'a [f32],
    /// Encoder inputs `[m, d_in]`.
    pub(super) x: &'a [f32],
}

/// One latent's gradients.
pub(super) struct LatentGrads<'a> {
    /// dL/d(encoder row) `[d_in]`.
    pub(super) enc: &'a mut [f32],
    /// dL/d(decoder row) `[d_out]`.
    pub(super) dec: &'a mut [f32],
    /// dL/db_enc.
    pub(super) b_enc: &'a mut f32,
    /// The kernel's own per-latent accumulator over the batch.
    pub(super) acc: &'a mut f32,
}

/// The architecture-specific part of [`CpuTrain::forward_backward`].
pub(super) trait RowKernel: Sync {
    /// Backward terms of one selected entry, from the row pass to the
    /// latent pass.
    type Term: Copy + Default + Send + Sync;

    /// A selection over the whole batch at once, sliced per chunk (and the
    /// batch is then one chunk); `None`: selected per chunk.
    fn select_batch(&self, _xin: &[f32], _n: usize) -> Option<(Csr, Csr)> {
        None
    }

    /// The active entries (values f) and the other entries that carry a
    /// gradient of the `m` encoder-input rows `xin`.
    fn select(&self, xin: &[f32], m: usize) -> (Csr, Csr);

    /// Appends the latents of row `r` at which the true loss has kinks.
    fn record(&self, act: &Csr, ext: &Csr, r: usize, idx: &mut Vec<u32>);

    /// Whether a chunk of `m` rows goes through dense GEMMs.
    fn dense(&self, act: &Csr, ext: &Csr, m: usize) -> bool;

    /// Dense chunk: `dp` (`[m, d_sae]`) holds the MSE's dL/df `g · W_decᵀ`
    /// and becomes dL/dpre; adds to the loss sums and `per_latent`. Returns
    /// per-latent coefficients of `W_dec_j / ‖W_dec_j‖` to add to dL/dW_dec
    /// after the GEMMs (or nothing).
    fn dense_rows(
        &self,
        act: &Csr,
        ext: &Csr,
        a_dense: &[f32],
        dp: &mut [f32],
        sums: &mut [f64; 2],
        per_latent: &mut [f32],
    ) -> Vec<f32>;

    /// Whether sparse rows need a second residual gradient `h` (AuxK).
    fn aux_rows(&self) -> bool {
        false
    }

    /// Sparse path: the terms of one row's entries, from its residual
    /// gradient (and fills `h` when [`Self::aux_rows`]).
    fn sparse_row(&self, row: SparseRow<'_>, out: &mut RowTerms<Self::Term>);

    /// Sparse path: accumulates latent `j`'s gradients from its entries
    /// (in row order).
    fn latent(&self, j: usize, ents: &[Entry<Self::Term>], rows: &LatentRows<'_>, grads: LatentGrads<'_>);

    /// After the last chunk, with the per-latent accumulators.
    fn finish(&self, grads: &mut Params, per_latent: &[f32]);

    /// Factors turning the two loss sums into [`LossParts::l1`] and
    /// [`LossParts::auxk`] (times 1/n).
    fn loss_coefficients(&self) -> [f64; 2];
}

/// The batch-wide inputs of [`CpuTrain::drive`]'s chunks.
struct Batch<'a> {
    /// Targets `[n, d_out]` (scaled).
    y: &'a [f32],
    inputs: &'a StepInputs,
    /// 1 / n.
    inv_n: f32,
    d_out: usize,
}

impl Batch<'_> {
    /// Skip-connection output of rows `r0..r1` (`None` without one).
    fn skip(&self, r0: usize, r1: usize) -> Option<&[f32]> {
        let s = &self.inputs.skip_out;
        (!s.is_empty()).then(|| &s[r0 * self.d_out..r1 * self.d_out])
    }
}

/// Rows `c0..c0 + m` of the batch with their selection.
struct Chunk<'a> {
    c0: usize,
    m: usize,
    /// Encoder inputs of the rows, `[m, d_in]`.
    xc: &'a [f32],
    act: Csr,
    ext: Csr,
}

/// Running sums of [`CpuTrain::drive`] over the chunks of a batch.
struct Running {
    /// Σ squared error.
    mse: f64,
    /// Σ squared deviation of y from its mean.
    var: f64,
    /// The kernel's two loss sums.
    sums: [f64; 2],
    /// The kernel's per-latent accumulators `[d_sae]`.
    per_latent: Vec<f32>,
}

/// Per-row-block output of the sparse path.
struct Block<T> {
    g: Vec<f32>,
    h: Vec<f32>,
    terms: RowTerms<T>,
    mse: f64,
    var: f64,
}

/// Dense decode of a chunk: g = b_dec + a·W_dec (+ the skip output), then in
/// place g ← 2(ŷ − y)/n, the MSE gradient wrt ŷ. Returns the summed squared
/// error and the summed squared deviation of y from `ybar` (explained variance).
#[allow(clippy::too_many_arguments)]
fn dense_decode_error(
    a_dense: &[f32],
    m: usize,
    p: &Params,
    d_sae: usize,
    d_out: usize,
    skip: Option<&[f32]>,
    y: &[f32],
    ybar: &[f64],
    inv_n: f32,
    g: &mut [f32],
) -> (f64, f64) {
    for row in g.chunks_exact_mut(d_out) {
        row.copy_from_slice(&p.b_dec);
    }
    linalg::gemm(MatRef::row_major(a_dense, m, d_sae), MatRef::row_major(&p.dec, d_sae, d_out), g, 1.0);
    if let Some(skip) = skip {
        linalg::axpy(1.0, skip, g);
    }
    let (mut mse, mut var) = (0f64, 0f64);
    for (gr, yr) in g.chunks_exact_mut(d_out).zip(y.chunks_exact(d_out)) {
        let (se, sv) = residual_grad_row(gr, yr, ybar, inv_n);
        mse += se;
        var += sv;
    }
    (mse, var)
}

/// Sparse decode of row `r` of `act` into `yhat` (b_dec + Σ val·W_dec[idx],
/// plus the skip output), then `g` as [`residual_grad_row`] of it (`yhat` is
/// kept for the AuxK residual).
#[allow(clippy::too_many_arguments)]
fn sparse_decode_error_row(
    p: &Params,
    act: &Csr,
    r: usize,
    d_out: usize,
    skip: Option<&[f32]>,
    yr: &[f32],
    ybar: &[f64],
    inv_n: f32,
    yhat: &mut [f32],
    g: &mut [f32],
) -> (f64, f64) {
    yhat.copy_from_slice(&p.b_dec);
    for i in act.row(r) {
        let j = act.idx[i] as usize;
        linalg::axpy(act.val[i], &p.dec[j * d_out..(j + 1) * d_out], yhat);
    }
    if let Some(skip) = skip {
        linalg::axpy(1.0, skip, yhat);
    }
    g.copy_from_slice(yhat);
    residual_grad_row(g, yr, ybar, inv_n)
}

/// One row holding ŷ becomes the MSE gradient 2(ŷ − y)/n in place; returns the
/// squared error and the squared deviation of y from `ybar` (explained variance).
fn residual_grad_row(g: &mut [f32], yr: &[f32], ybar: &[f64], inv_n: f32) -> (f64, f64) {
    let (mut se, mut sv) = (0f64, 0f64);
    for d in 0..g.len() {
        let e = g[d] - yr[d];
        se += (e as f64) * (e as f64);
        g[d] = 2.0 * e * inv_n;
        sv += (yr[d] as f64 - ybar[d]).powi(2);
    }
    (se, sv)
}

impl CpuTrain {
    /// What every training step computes first: the encoder input, decoder row
    /// norms, the skip connection's output, the mean target (for explained
    /// variance); and zeroed gradients.
    fn step_inputs(&self, x: &[f32], y: &[f32], n: usize, grads: &mut Params) -> StepInputs {
        let (d_in, d_out) = (self.d_in, self.d_out);
        let p = &self.params;
        let xin = self.encoder_input(x);
        let dec_norms: Vec<f32> =
            p.dec.chunks_exact(d_out).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
        let mut skip_out = vec![0f32; if p.skip.is_some() { n * d_out } else { 0 }];
        if let Some(ws) = &p.skip {
            linalg::gemm(MatRef::row_major(x, n, d_in), MatRef::row_major(ws, d_out, d_in).t(), &mut skip_out, 0.0);
        }
        let mut ybar = vec![0f64; d_out];
        for r in y.chunks_exact(d_out) {
            ybar.iter_mut().zip(r).for_each(|(a, b)| *a += *b as f64);
        }
        ybar.iter_mut().for_each(|v| *v /= n as f64);
        grads.enc.par_iter_mut().for_each(|v| *v = 0.0);
        grads.dec.par_iter_mut().for_each(|v| *v = 0.0);
        grads.b_enc.iter_mut().for_each(|v| *v = 0.0);
        grads.b_dec.iter_mut().for_each(|v| *v = 0.0);
        if let Some(gs) = &mut grads.skip {
            gs.iter_mut().for_each(|v| *v = 0.0);
        }
        StepInputs { xin, dec_norms, skip_out, ybar }
    }

    /// Encoder input rows: x − b_dec for SAEs with apply_b_dec_to_input.
    pub(super) fn encoder_input(&self, x: &[f32]) -> Vec<f32> {
        let mut xin = x.to_vec();
        if self.cfg.apply_b_dec_to_input && !self.cfg.transcoder {
            let b = &self.params.b_dec;
            xin.par_chunks_mut(self.d_in).for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v -= b));
        }
        xin
    }

    /// Rows processed together in [`Self::forward_backward`]. TopK keeps
    /// k entries per row, so the whole batch is one chunk; ReLU selections
    /// (and JumpReLU's) can hold half of all latents per row early in
    /// training, so they are processed in chunks that bound the scratch memory.
    fn chunk_rows(&self, n: usize) -> usize {
        if let Some(c) = self.chunk_rows_override {
            return c.max(1);
        }
        let bounded = ((1usize << 24) / self.d_sae.max(1)).max(4 * ROW_BLOCK);
        match self.cfg.arch {
            TrainArch::Standard { .. } | TrainArch::JumpRelu { .. } => bounded.min(n),
            _ => n,
        }
    }

    /// Forward and backward over a (scaled) batch `x` → `y` with the terms
    /// of `b` (rows, dead latents, AuxK, sparsity coefficient). Fills
    /// `grads`. `fixed_resid` replaces the residual seen by the AuxK term
    /// (gradient checks of its stop-gradient); `keep_selection` returns the
    /// selected (row, latent) sets.
    pub(super) fn forward_backward(
        &self,
        x: &[f32],
        y: &[f32],
        b: &StepBatch<'_>,
        grads: &mut Params,
        fixed_resid: Option<&[f32]>,
        keep_selection: bool,
    ) -> FbOut {
        let n = b.n;
        let inputs = self.step_inputs(x, y, n, grads);
        match self.jump_cfg() {
            Some(jc) => {
                let k = JumpKernel::new(self, jc, n, b.sparsity_coefficient, b.dead, &inputs.dec_norms);
                self.drive(&k, x, y, n, &inputs, grads, keep_selection)
            }
            None => {
                let k = ReluTopK::new(self, b, &inputs.dec_norms, fixed_resid);
                self.drive(&k, x, y, n, &inputs, grads, keep_selection)
            }
        }
    }

    /// The chunked driver of [`Self::forward_backward`] with the row kernel `k`.
    #[allow(clippy::too_many_arguments)]
    fn drive<K: RowKernel>(
        &self,
        k: &K,
        x: &[f32],
        y: &[f32],
        n: usize,
        inputs: &StepInputs,
        grads: &mut Params,
        keep_selection: bool,
    ) -> FbOut {
        let (d_in, d_out, d_sae) = (self.d_in, self.d_out, self.d_sae);
        let xin = &inputs.xin;
        let global = k.select_batch(xin, n);
        let chunk = if global.is_some() { n } else { self.chunk_rows(n) };
        let batch = Batch { y, inputs, inv_n: 1.0 / n as f32, d_out };
        let mut out = FbOut::new(n, d_sae, d_out, keep_selection);
        let mut run = Running { mse: 0.0, var: 0.0, sums: [0.0; 2], per_latent: vec![0.0; d_sae] };
        let mut nnz = 0usize;
        let mut c0 = 0;
        while c0 < n {
            let c1 = (c0 + chunk).min(n);
            let m = c1 - c0;
            let xc = &xin[c0 * d_in..c1 * d_in];
            let (act, ext) = match &global {
                Some((a, e)) => (a.slice(c0, c1), e.slice(c0, c1)),
                None => k.select(xc, m),
            };
            nnz += act.idx.len();
            for (&j, &v) in act.idx.iter().zip(&act.val) {
                out.fire_count[j as usize] += 1;
                out.min_pos = out.min_pos.min(v);
            }
            if let Some((ptr, idx)) = &mut out.selection {
                for r in 0..m {
                    k.record(&act, &ext, r, idx);
                    ptr.push(idx.len());
                }
            }
            let ch = Chunk { c0, m, xc, act, ext };
            let g0 = out.g.len();
            if k.dense(&ch.act, &ch.ext, m) {
                out.g.resize(g0 + m * d_out, 0.0);
                self.dense_chunk(k, &batch, &ch, &mut out.g[g0..], grads, &mut run);
            } else {
                self.sparse_chunk(k, &batch, &ch, &mut out.g, grads, &mut run);
            }
            // Output side of b_dec: Σ_t g_t.
            let g = &out.g[g0..];
            for r in g.chunks_exact(d_out) {
                linalg::axpy(1.0, r, &mut grads.b_dec);
            }
            if let Some(gs) = &mut grads.skip {
                // dL/dW_skip += gᵀ · x  ([d_out, m] · [m, d_in])
                linalg::gemm(
                    MatRef::row_major(g, m, d_out).t(),
                    MatRef::row_major(&x[c0 * d_in..c1 * d_in], m, d_in),
                    gs,
                    1.0,
                );
            }
            c0 = c1;
        }
        k.finish(grads, &run.per_latent);
        // Input side of b_dec: −Σ_j (Σ_t dpre_tj) enc_j.
        if self.cfg.apply_b_dec_to_input && !self.cfg.transcoder {
            for j in 0..d_sae {
                let gb = grads.b_enc[j];
                if gb != 0.0 {
                    linalg::axpy(-gb, &self.params.enc[j * d_in..(j + 1) * d_in], &mut grads.b_dec);
                }
            }
        }
        let nf = n as f64;
        let [c_l1, c_aux] = k.loss_coefficients();
        let (mse, var) = (run.mse, run.var);
        out.parts = LossParts {
            mse: mse / nf,
            l1: c_l1 * run.sums[0] / nf,
            auxk: c_aux * run.sums[1] / nf,
            l0: nnz as f64 / nf,
            explained_variance: if var > 0.0 { 1.0 - mse / var } else { 0.0 },
        };
        out
    }

    /// A chunk with many selected entries, through dense GEMMs (they beat
    /// the per-latent gather/scatter of [`Self::sparse_chunk`] there; same
    /// maths). Fills `g` (`[m, d_out]`) with the residual gradient.
    fn dense_chunk<K: RowKernel>(
        &self,
        k: &K,
        b: &Batch<'_>,
        ch: &Chunk<'_>,
        g: &mut [f32],
        grads: &mut Params,
        run: &mut Running,
    ) {
        let (d_in, d_out, d_sae) = (self.d_in, self.d_out, self.d_sae);
        let (p, dec_norms) = (&self.params, &b.inputs.dec_norms);
        let (act, m, c0) = (&ch.act, ch.m, ch.c0);
        let mut a_dense = vec![0f32; m * d_sae];
        for r in 0..m {
            for i in act.row(r) {
                a_dense[r * d_sae + act.idx[i] as usize] = act.val[i];
            }
        }
        let (se, sv) = dense_decode_error(
            &a_dense,
            m,
            p,
            d_sae,
            d_out,
            b.skip(c0, c0 + m),
            &b.y[c0 * d_out..(c0 + m) * d_out],
            &b.inputs.ybar,
            b.inv_n,
            g,
        );
        run.mse += se;
        run.var += sv;
        let g = &*g;
        let mut dp = vec![0f32; m * d_sae];
        linalg::gemm(MatRef::row_major(g, m, d_out), MatRef::row_major(&p.dec, d_sae, d_out).t(), &mut dp, 0.0);
        let ncoef = k.dense_rows(act, &ch.ext, &a_dense, &mut dp, &mut run.sums, &mut run.per_latent);
        linalg::gemm(MatRef::row_major(&a_dense, m, d_sae).t(), MatRef::row_major(g, m, d_out), &mut grads.dec, 1.0);
        linalg::gemm(MatRef::row_major(&dp, m, d_sae).t(), MatRef::row_major(ch.xc, m, d_in), &mut grads.enc, 1.0);
        for dr in dp.chunks_exact(d_sae) {
            grads.b_enc[..d_sae].iter_mut().zip(dr).for_each(|(b, v)| *b += v);
        }
        for (j, &c) in ncoef.iter().enumerate() {
            if c != 0.0 && dec_norms[j] > 0.0 {
                let w = &p.dec[j * d_out..(j + 1) * d_out];
                linalg::axpy(c / dec_norms[j], w, &mut grads.dec[j * d_out..(j + 1) * d_out]);
            }
        }
    }

    /// A chunk with few selected entries: per row block (in parallel), the
    /// residual gradient and each entry's terms; then per latent (in
    /// parallel), its gradient rows. Appends the residual gradient
    /// (`[m, d_out]`) to `g_out`.
    fn sparse_chunk<K: RowKernel>(
        &self,
        k: &K,
        b: &Batch<'_>,
        ch: &Chunk<'_>,
        g_out: &mut Vec<f32>,
        grads: &mut Params,
        run: &mut Running,
    ) {
        let (d_in, d_out, d_sae) = (self.d_in, self.d_out, self.d_sae);
        let p = &self.params;
        let (act, ext, m, c0) = (&ch.act, &ch.ext, ch.m, ch.c0);
        let aux_rows = k.aux_rows();
        let blocks: Vec<Block<K::Term>> = (0..m.div_ceil(ROW_BLOCK))
            .into_par_iter()
            .map(|bi| {
                let r0 = bi * ROW_BLOCK;
                let r1 = (r0 + ROW_BLOCK).min(m);
                let mut o = Block {
                    g: vec![0.0; (r1 - r0) * d_out],
                    h: vec![0.0; if aux_rows { (r1 - r0) * d_out } else { 0 }],
                    terms: RowTerms {
                        act: Vec::with_capacity(act.ptr[r1] - act.ptr[r0]),
                        ext: Vec::with_capacity(ext.ptr[r1] - ext.ptr[r0]),
                        sums: [0.0; 2],
                    },
                    mse: 0.0,
                    var: 0.0,
                };
                let mut yhat = vec![0f32; d_out];
                let mut scratch = vec![0f32; if aux_rows { d_out } else { 0 }];
                for r in r0..r1 {
                    let gr = c0 + r;
                    let yr = &b.y[gr * d_out..(gr + 1) * d_out];
                    let rows = (r - r0) * d_out..(r - r0 + 1) * d_out;
                    let (se, sv) = sparse_decode_error_row(
                        p,
                        act,
                        r,
                        d_out,
                        b.skip(gr, gr + 1),
                        yr,
                        &b.inputs.ybar,
                        b.inv_n,
                        &mut yhat,
                        &mut o.g[rows.clone()],
                    );
                    o.mse += se;
                    o.var += sv;
                    let row = SparseRow {
                        act,
                        ext,
                        r,
                        batch_row: gr,
                        g: &o.g[rows.clone()],
                        yhat: &yhat,
                        y: yr,
                        h: if aux_rows { &mut o.h[rows] } else { &mut [] },
                        scratch: &mut scratch,
                    };
                    k.sparse_row(row, &mut o.terms);
                }
                o
            })
            .collect();
        let g0 = g_out.len();
        let mut h = Vec::with_capacity(if aux_rows { m * d_out } else { 0 });
        let mut t_act = Vec::with_capacity(act.idx.len());
        let mut t_ext = Vec::with_capacity(ext.idx.len());
        for o in blocks {
            g_out.extend(o.g);
            h.extend(o.h);
            t_act.extend(o.terms.act);
            t_ext.extend(o.terms.ext);
            run.mse += o.mse;
            run.var += o.var;
            run.sums[0] += o.terms.sums[0];
            run.sums[1] += o.terms.sums[1];
        }
        let rows = LatentRows { g: &g_out[g0..], h: &h, x: ch.xc };
        let (counts, list) = by_latent(d_sae, act, &t_act, ext, &t_ext);
        let (gb_enc, _) = grads.b_enc.split_at_mut(d_sae);
        grads
            .enc
            .par_chunks_mut(d_in)
            .zip(grads.dec.par_chunks_mut(d_out))
            .zip(gb_enc.par_iter_mut())
            .zip(run.per_latent.par_iter_mut())
            .enumerate()
            .for_each(|(j, (((enc, dec), b_enc), acc))| {
                let ents = &list[counts[j]..counts[j + 1]];
                if !ents.is_empty() {
                    k.latent(j, ents, &rows, LatentGrads { enc, dec, b_enc, acc });
                }
            });
    }
}
