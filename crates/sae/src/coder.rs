//! The [`SparseCoder`]: one type for SAEs, transcoders and skip transcoders of
//! every supported architecture, with batched multithreaded inference.

use rayon::prelude::*;

use crate::arch::{Activation, LN_EPS, Normalization};
use crate::error::{Result, SaeError};
use crate::linalg::{self, MatRef, ROW_BLOCK};
use crate::meta::Metadata;

/// Per-row sparse latent activations (CSR): row `r` owns
/// `idx[row_ptr[r]..row_ptr[r+1]]` and the matching `val`, indices ascending,
/// only non-zero activations stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseActs {
    /// Number of latents (the column count of the dense form).
    pub d_sae: usize,
    /// Row offsets `[n_rows + 1]`, starting at 0.
    pub row_ptr: Vec<usize>,
    /// Latent index of each stored activation.
    pub idx: Vec<u32>,
    /// Value of each stored activation.
    pub val: Vec<f32>,
}

impl SparseActs {
    /// No rows.
    pub fn empty(d_sae: usize) -> Self {
        SparseActs { d_sae, row_ptr: vec![0], idx: Vec::new(), val: Vec::new() }
    }
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.row_ptr.len() - 1
    }
    /// Number of stored (non-zero) activations.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }
    /// Latents and values of row `r`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_ptr[r], self.row_ptr[r + 1]);
        (&self.idx[a..b], &self.val[a..b])
    }
    /// Mean number of active latents per row.
    pub fn mean_l0(&self) -> f64 {
        if self.n_rows() == 0 { 0.0 } else { self.nnz() as f64 / self.n_rows() as f64 }
    }
    /// Dense `[n_rows, d_sae]`, row-major, zeros where nothing is stored.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n_rows() * self.d_sae];
        for r in 0..self.n_rows() {
            let (ix, vs) = self.row(r);
            let o = &mut out[r * self.d_sae..(r + 1) * self.d_sae];
            for (&i, &v) in ix.iter().zip(vs) {
                o[i as usize] = v;
            }
        }
        out
    }
    /// Builds sparse rows from a dense `[n, d_sae]` matrix (zeros dropped).
    pub fn from_dense(dense: &[f32], d_sae: usize) -> Self {
        let mut s = SparseActs::empty(d_sae);
        for row in dense.chunks_exact(d_sae) {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    s.idx.push(j as u32);
                    s.val.push(v);
                }
            }
            s.row_ptr.push(s.idx.len());
        }
        s
    }
    fn append(&mut self, other: SparseActs) {
        let base = self.idx.len();
        self.row_ptr.extend(other.row_ptr[1..].iter().map(|p| p + base));
        self.idx.extend(other.idx);
        self.val.extend(other.val);
    }
}

/// A sparse coder: SAE (output = reconstruction of the input hook), transcoder
/// (output hook differs, `d_out` may differ from `d_in`) or skip transcoder.
///
/// Tensors use SAELens v6 names and layouts, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseCoder {
    /// Latent activation function and its parameters.
    pub activation: Activation,
    /// Input width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Output width (= `d_in` for SAEs).
    pub d_out: usize,
    /// `[d_in, d_sae]`
    pub w_enc: Vec<f32>,
    /// `[d_sae]`; empty for gated coders (they use `b_gate`/`b_mag`).
    pub b_enc: Vec<f32>,
    /// `[d_sae, d_out]`
    pub w_dec: Vec<f32>,
    /// `[d_out]`
    pub b_dec: Vec<f32>,
    /// `[d_out, d_in]`, skip transcoders only.
    pub w_skip: Option<Vec<f32>>,
    /// Subtract `b_dec` from the (normalized) input before encoding (SAEs only).
    pub apply_b_dec_to_input: bool,
    /// Run-time input normalization.
    pub normalize: Normalization,
    /// True when the output hook differs from the input hook. Transcoders never
    /// undo the input normalization on their output (SAELens semantics).
    pub transcoder: bool,
    /// Provenance (model, hooks, dataset, …).
    pub metadata: Metadata,
    /// log10(firing frequency + 1e-10) per latent, when known.
    pub log_sparsity: Option<Vec<f32>>,
}

struct RowNorm {
    /// For ConstantNormRescale: the factor applied; for LayerNorm: (mu, std).
    a: f32,
    b: f32,
}

impl SparseCoder {
    /// This coder as the tensors of a plain TopK SAE (what the GPU encoder
    /// takes), or `None` when it is something else: another activation, a
    /// transcoder, a skip connection or an input normalization done at run time.
    pub fn as_topk_sae(&self) -> Option<saepipe_core::compute::TopKSae<'_>> {
        let Activation::TopK { k } = self.activation else { return None };
        let plain = !self.transcoder
            && self.d_in == self.d_out
            && self.w_skip.is_none()
            && matches!(self.normalize, Normalization::None | Normalization::ExpectedAverageOnlyIn);
        plain.then_some(saepipe_core::compute::TopKSae {
            d_in: self.d_in,
            d_sae: self.d_sae,
            k,
            w_enc: &self.w_enc,
            b_enc: &self.b_enc,
            w_dec: &self.w_dec,
            b_dec: &self.b_dec,
            b_dec_on_input: self.apply_b_dec_to_input,
        })
    }
}

/// Sparse rows computed by a backend, as activations of `csr.cols` latents.
impl From<saepipe_core::compute::Csr> for SparseActs {
    fn from(csr: saepipe_core::compute::Csr) -> SparseActs {
        SparseActs { d_sae: csr.cols, row_ptr: csr.row_ptr, idx: csr.idx, val: csr.val }
    }
}

impl SparseCoder {
    /// Checks every tensor length against the dimensions.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, found: usize, expected: usize| {
            Err(SaeError::Invalid(format!(
                "sparse coder tensor `{what}` has {found} values, expected {expected} (d_in {}, d_sae {}, d_out {})",
                self.d_in, self.d_sae, self.d_out
            )))
        };
        if self.d_in == 0 || self.d_sae == 0 || self.d_out == 0 {
            return Err(SaeError::Invalid(format!(
                "sparse coder dimensions must be positive (d_in {}, d_sae {}, d_out {})",
                self.d_in, self.d_sae, self.d_out
            )));
        }
        if self.w_enc.len() != self.d_in * self.d_sae {
            return bad("W_enc", self.w_enc.len(), self.d_in * self.d_sae);
        }
        if self.w_dec.len() != self.d_sae * self.d_out {
            return bad("W_dec", self.w_dec.len(), self.d_sae * self.d_out);
        }
        if self.b_dec.len() != self.d_out {
            return bad("b_dec", self.b_dec.len(), self.d_out);
        }
        match &self.activation {
            Activation::Gated { b_gate, b_mag, r_mag } => {
                for (n, t) in [("b_gate", b_gate), ("b_mag", b_mag), ("r_mag", r_mag)] {
                    if t.len() != self.d_sae {
                        return bad(n, t.len(), self.d_sae);
                    }
                }
            }
            other => {
                if self.b_enc.len() != self.d_sae {
                    return bad("b_enc", self.b_enc.len(), self.d_sae);
                }
                match other {
                    Activation::JumpRelu { threshold } if threshold.len() != self.d_sae => {
                        return bad("threshold", threshold.len(), self.d_sae);
                    }
                    Activation::TopK { k } | Activation::GroupMax { k } if *k == 0 || *k > self.d_sae => {
                        return Err(SaeError::Invalid(format!("k = {k} must be in 1..={}", self.d_sae)));
                    }
                    Activation::GroupMax { k } if self.d_sae % k != 0 => {
                        return Err(SaeError::Invalid(format!(
                            "groupmax needs d_sae ({}) divisible by k ({k})",
                            self.d_sae
                        )));
                    }
                    _ => {}
                }
            }
        }
        if let Some(w) = &self.w_skip {
            if w.len() != self.d_out * self.d_in {
                return bad("W_skip", w.len(), self.d_out * self.d_in);
            }
        }
        if self.apply_b_dec_to_input && self.d_in != self.d_out {
            return Err(SaeError::Invalid(format!(
                "apply_b_dec_to_input needs d_in == d_out (d_in {}, d_out {})",
                self.d_in, self.d_out
            )));
        }
        if let Some(s) = &self.log_sparsity {
            if s.len() != self.d_sae {
                return bad("sparsity", s.len(), self.d_sae);
            }
        }
        Ok(())
    }

    /// SAELens architecture name of this coder. Transcoders with a TopK or
    /// gated encoder have no SAELens class; they get saepipe names
    /// (`topk_transcoder`, `topk_skip_transcoder`, ...).
    pub fn architecture_name(&self) -> String {
        let fam = match &self.activation {
            Activation::Relu => "standard",
            Activation::TopK { .. } => "topk",
            Activation::JumpRelu { .. } => "jumprelu",
            Activation::Gated { .. } => "gated",
            Activation::GroupMax { .. } => "groupmax",
        };
        if !self.transcoder && self.w_skip.is_none() {
            return fam.to_string();
        }
        let tc = if self.w_skip.is_some() { "skip_transcoder" } else { "transcoder" };
        if fam == "standard" { tc.to_string() } else { format!("{fam}_{tc}") }
    }

    /// Whether SAELens (6.54) has an inference class for
    /// [`architecture_name`](Self::architecture_name), so that
    /// `SAE.load_from_disk` loads the directory saepipe writes. TopK and gated
    /// transcoders and GroupMax coders have none.
    pub fn loads_in_saelens(&self) -> bool {
        const REGISTERED: [&str; 8] = [
            "standard",
            "gated",
            "topk",
            "jumprelu",
            "transcoder",
            "skip_transcoder",
            "jumprelu_transcoder",
            "jumprelu_skip_transcoder",
        ];
        REGISTERED.contains(&self.architecture_name().as_str())
    }

    /// Whether the output is another hook than the input (transcoders and
    /// skip transcoders).
    pub fn is_transcoder(&self) -> bool {
        self.transcoder || self.w_skip.is_some()
    }

    fn check_input(&self, x: &[f32], n: usize) -> Result<()> {
        if x.len() != n * self.d_in {
            return Err(SaeError::InputShape { what: "d_in", expected: self.d_in, found: x.len(), n });
        }
        Ok(())
    }

    fn row_norm(&self, x: &[f32]) -> RowNorm {
        match self.normalize {
            Normalization::ConstantNormRescale => {
                let nrm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
                RowNorm { a: (self.d_in as f32).sqrt() / nrm, b: 0.0 }
            }
            Normalization::LayerNorm => {
                let d = x.len() as f32;
                let mu = x.iter().sum::<f32>() / d;
                let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / (d - 1.0).max(1.0);
                RowNorm { a: mu, b: var.sqrt() }
            }
            _ => RowNorm { a: 1.0, b: 0.0 },
        }
    }

    /// The encoder's input for one row: normalized, minus `b_dec` if configured.
    fn prepare_row(&self, x: &[f32], out: &mut [f32]) {
        let rn = self.row_norm(x);
        match self.normalize {
            Normalization::ConstantNormRescale => out.iter_mut().zip(x).for_each(|(o, v)| *o = v * rn.a),
            Normalization::LayerNorm => out.iter_mut().zip(x).for_each(|(o, v)| *o = (v - rn.a) / (rn.b + LN_EPS)),
            _ => out.copy_from_slice(x),
        }
        if self.apply_b_dec_to_input {
            out.iter_mut().zip(&self.b_dec).for_each(|(o, b)| *o -= b);
        }
    }

    /// Encodes one block of rows into sparse activations.
    fn encode_block(
        &self,
        x: &[f32],
        rows: usize,
        pre: &mut Vec<f32>,
        xin: &mut Vec<f32>,
        sel: &mut Vec<u32>,
    ) -> SparseActs {
        let (d_in, d_sae) = (self.d_in, self.d_sae);
        xin.resize(rows * d_in, 0.0);
        for r in 0..rows {
            self.prepare_row(&x[r * d_in..(r + 1) * d_in], &mut xin[r * d_in..(r + 1) * d_in]);
        }
        pre.resize(rows * d_sae, 0.0);
        linalg::gemm_serial(MatRef::row_major(xin, rows, d_in), MatRef::row_major(&self.w_enc, d_in, d_sae), pre, 0.0);
        let mut out = SparseActs::empty(d_sae);
        for r in 0..rows {
            let p = &mut pre[r * d_sae..(r + 1) * d_sae];
            match &self.activation {
                Activation::Gated { b_gate, b_mag, r_mag } => {
                    for j in 0..d_sae {
                        let xw = p[j];
                        if xw + b_gate[j] > 0.0 {
                            let mag = xw * r_mag[j].exp() + b_mag[j];
                            if mag > 0.0 {
                                out.idx.push(j as u32);
                                out.val.push(mag);
                            }
                        }
                    }
                }
                act => {
                    p.iter_mut().zip(&self.b_enc).for_each(|(v, b)| *v += b);
                    select_row(act, p, sel, &mut out.idx, &mut out.val);
                }
            }
            out.row_ptr.push(out.idx.len());
        }
        out
    }

    /// Encodes `n` rows of `x` (`[n, d_in]`) into sparse latent activations.
    pub fn encode(&self, x: &[f32], n: usize) -> Result<SparseActs> {
        self.check_input(x, n)?;
        let rows = linalg::rows_per_task(n, self.d_sae);
        let blocks: Vec<SparseActs> = x
            .par_chunks(rows * self.d_in)
            .map_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(pre, xin, sel), xb| self.encode_block(xb, xb.len() / self.d_in, pre, xin, sel),
            )
            .collect();
        let mut out = SparseActs::empty(self.d_sae);
        for b in blocks {
            out.append(b);
        }
        Ok(out)
    }

    /// Dense latent activations `[n, d_sae]`.
    pub fn encode_dense(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        Ok(self.encode(x, n)?.to_dense())
    }

    /// Decodes sparse activations to `[n, d_out]`. `x_in` (the raw coder input,
    /// `[n, d_in]`) is required by skip transcoders and by SAEs whose input
    /// normalization must be undone on the output.
    pub fn decode(&self, acts: &SparseActs, x_in: Option<&[f32]>) -> Result<Vec<f32>> {
        let n = acts.n_rows();
        if acts.d_sae != self.d_sae {
            return Err(SaeError::Invalid(format!(
                "activations have d_sae {}, the coder has {}",
                acts.d_sae, self.d_sae
            )));
        }
        if let Some(&bad) = acts.idx.iter().find(|&&i| i as usize >= self.d_sae) {
            return Err(SaeError::Invalid(format!("latent index {bad} out of range (d_sae {})", self.d_sae)));
        }
        let needs_x = self.w_skip.is_some()
            || (!self.is_transcoder()
                && matches!(self.normalize, Normalization::ConstantNormRescale | Normalization::LayerNorm));
        if let Some(x) = x_in {
            self.check_input(x, n)?;
        } else if needs_x {
            return Err(SaeError::Invalid(format!(
                "decoding this {} coder (normalize_activations {}, skip {}) needs the raw input x_in",
                self.architecture_name(),
                self.normalize.as_str(),
                self.w_skip.is_some()
            )));
        }
        let d_out = self.d_out;
        let mut out = vec![0f32; n * d_out];
        out.par_chunks_mut(ROW_BLOCK * d_out).enumerate().for_each(|(bi, ob)| {
            for (rr, o) in ob.chunks_exact_mut(d_out).enumerate() {
                let r = bi * ROW_BLOCK + rr;
                o.copy_from_slice(&self.b_dec);
                let (ix, vs) = acts.row(r);
                for (&j, &v) in ix.iter().zip(vs) {
                    let j = j as usize;
                    linalg::axpy(v, &self.w_dec[j * d_out..(j + 1) * d_out], o);
                }
                if needs_x && !self.is_transcoder() {
                    let x = &x_in.unwrap()[r * self.d_in..(r + 1) * self.d_in];
                    let rn = self.row_norm(x);
                    match self.normalize {
                        Normalization::ConstantNormRescale => o.iter_mut().for_each(|v| *v /= rn.a),
                        Normalization::LayerNorm => o.iter_mut().for_each(|v| *v = *v * rn.b + rn.a),
                        _ => {}
                    }
                }
            }
        });
        if let (Some(ws), Some(x)) = (&self.w_skip, x_in) {
            linalg::gemm(
                MatRef::row_major(x, n, self.d_in),
                MatRef::row_major(ws, d_out, self.d_in).t(),
                &mut out,
                1.0,
            );
        }
        Ok(out)
    }

    /// Encode then decode: `(activations, output [n, d_out])`.
    pub fn forward(&self, x: &[f32], n: usize) -> Result<(SparseActs, Vec<f32>)> {
        let acts = self.encode(x, n)?;
        let out = self.decode(&acts, Some(x))?;
        Ok((acts, out))
    }

    /// Norms of the decoder rows `[d_sae]`.
    pub fn decoder_norms(&self) -> Vec<f32> {
        self.w_dec.chunks_exact(self.d_out).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).collect()
    }

    /// Folds SAELens's `rescale_acts_by_decoder_norm` into the weights so the
    /// decoder rows become unit norm and outputs are unchanged.
    pub fn fold_decoder_norms(&mut self) {
        let norms: Vec<f32> = self.decoder_norms().into_iter().map(|v| v.max(1e-8)).collect();
        for (j, &nj) in norms.iter().enumerate() {
            self.w_dec[j * self.d_out..(j + 1) * self.d_out].iter_mut().for_each(|v| *v /= nj);
            if !self.b_enc.is_empty() {
                self.b_enc[j] *= nj;
            }
            if let Activation::JumpRelu { threshold } = &mut self.activation {
                threshold[j] *= nj;
            }
            if let Activation::Gated { b_gate, b_mag, .. } = &mut self.activation {
                b_gate[j] *= nj;
                b_mag[j] *= nj;
            }
        }
        for row in self.w_enc.chunks_exact_mut(self.d_sae) {
            row.iter_mut().zip(&norms).for_each(|(v, n)| *v *= n);
        }
    }
}

/// Applies a (non-gated) activation to one row of pre-activations (bias
/// already added), appending the non-zero outputs in ascending index order.
pub(crate) fn select_row(act: &Activation, p: &[f32], sel: &mut Vec<u32>, idx: &mut Vec<u32>, val: &mut Vec<f32>) {
    match act {
        Activation::Relu => {
            for (j, &v) in p.iter().enumerate() {
                if v > 0.0 {
                    idx.push(j as u32);
                    val.push(v);
                }
            }
        }
        Activation::JumpRelu { threshold } => {
            for (j, (&v, &t)) in p.iter().zip(threshold).enumerate() {
                if v > t && v > 0.0 {
                    idx.push(j as u32);
                    val.push(v);
                }
            }
        }
        Activation::TopK { k } => {
            let start = idx.len();
            topk_indices(p, *k, sel);
            for &j in sel.iter() {
                let v = p[j as usize];
                if v > 0.0 {
                    idx.push(j);
                }
            }
            idx[start..].sort_unstable();
            for i in start..idx.len() {
                val.push(p[idx[i] as usize]);
            }
        }
        Activation::GroupMax { k } => {
            let g = p.len() / k;
            for grp in 0..*k {
                let s = &p[grp * g..(grp + 1) * g];
                let (mut bj, mut bv) = (0usize, f32::NEG_INFINITY);
                for (j, &v) in s.iter().enumerate() {
                    if v > bv {
                        bv = v;
                        bj = j;
                    }
                }
                if bv > 0.0 {
                    idx.push((grp * g + bj) as u32);
                    val.push(bv);
                }
            }
        }
        Activation::Gated { .. } => unreachable!("gated activations are applied by the caller"),
    }
}

/// Indices of the `k` largest values of `p` (unordered).
///
/// The minimum over k disjoint groups of each group's maximum is a lower
/// bound of the k-th largest value (the k maxima are k distinct elements), so
/// one vectorisable pass of group maxima and one filtering pass leave a small
/// candidate set for partial selection. NaNs are never selected over numbers.
pub(crate) fn topk_indices(p: &[f32], k: usize, sel: &mut Vec<u32>) {
    sel.clear();
    let len = p.len();
    let k = k.min(len);
    if k == 0 {
        return;
    }
    if k == len {
        sel.extend(0..len as u32);
        return;
    }
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    if len >= 8 * k {
        let g = len / k;
        let mut bound = f32::INFINITY;
        for grp in 0..k {
            let end = if grp + 1 == k { len } else { (grp + 1) * g };
            bound = bound.min(max_ignoring_nan(&p[grp * g..end]));
        }
        sel.extend((0..len as u32).filter(|&j| key(p[j as usize]) >= bound));
    } else {
        sel.extend(0..len as u32);
    }
    if sel.len() > k {
        sel.select_nth_unstable_by(k - 1, |&a, &b| key(p[b as usize]).total_cmp(&key(p[a as usize])));
        sel.truncate(k);
    }
}

/// Maximum of a slice, NaNs ignored (−∞ for an all-NaN or empty slice).
/// Eight independent lanes so the loop vectorises.
fn max_ignoring_nan(s: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = s.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            // A comparison with NaN is false, so NaNs never replace the lane.
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(rest) {
        if v > m {
            m = v;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_matches_sorting() {
        let mut s = 1u64;
        for &(len, k) in &[(100usize, 3usize), (1000, 32), (64, 8), (10, 10), (37, 1), (500, 200)] {
            let p: Vec<f32> = (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / 1e6 - 8.0
                })
                .collect();
            let mut sel = Vec::new();
            topk_indices(&p, k, &mut sel);
            let mut got: Vec<f32> = sel.iter().map(|&j| p[j as usize]).collect();
            got.sort_by(|a, b| b.total_cmp(a));
            let mut all = p.clone();
            all.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(got, all[..k].to_vec(), "len {len} k {k}");
        }
        // NaN is never chosen over a number.
        let p = [1.0, f32::NAN, 3.0, 2.0, 0.5, -1.0, f32::NAN, 0.0, 4.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8];
        let mut sel = Vec::new();
        topk_indices(&p, 2, &mut sel);
        sel.sort();
        assert_eq!(sel, vec![2, 8]);
    }
}
