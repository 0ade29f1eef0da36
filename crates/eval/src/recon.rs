//! Reconstruction, sparsity and per-feature statistics of one coder, streamed
//! over batches. Definitions follow SAELens `get_sparsity_and_variance_metrics`
//! (docs/evaluate.md lists them); sums are kept in f64.

use rayon::prelude::*;
use saepipe_sae::SparseActs;

/// Per-row sums over the counted (non-excluded) rows of one batch. Rows are
/// computed in parallel and summed in row order, so results do not depend on
/// thread scheduling.
#[derive(Default, Clone, Copy)]
struct RowSums {
    n: u64,
    l0: f64,
    l1: f64,
    /// Σ‖x − x̂‖²
    sse: f64,
    /// Σ‖x‖²
    sq_in: f64,
    norm_in: f64,
    norm_out: f64,
    ratio: f64,
    cos: f64,
    /// Σ‖x̂‖² and Σ x·x̂ (relative reconstruction bias of the batch)
    sq_out: f64,
    dot: f64,
}

impl RowSums {
    fn add(mut self, o: RowSums) -> RowSums {
        self.n += o.n;
        self.l0 += o.l0;
        self.l1 += o.l1;
        self.sse += o.sse;
        self.sq_in += o.sq_in;
        self.norm_in += o.norm_in;
        self.norm_out += o.norm_out;
        self.ratio += o.ratio;
        self.cos += o.cos;
        self.sq_out += o.sq_out;
        self.dot += o.dot;
        self
    }
}

pub struct Recon {
    d: usize,
    total: RowSums,
    /// All rows, excluded ones included (`l0_with_bos`).
    rows_all: u64,
    l0_all: f64,
    /// Σx per dimension over counted rows (explained variance).
    sum_x: Vec<f64>,
    /// Per-batch relative reconstruction bias, averaged over batches at the end.
    rrb: Vec<f64>,
    /// Σ over counted rows of the per-batch-mean ("legacy") explained variance.
    ev_legacy: f64,
    count: Vec<u64>,
    sum_act: Vec<f64>,
    max_act: Vec<f32>,
}

/// Final values; NaN where nothing was counted.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReconMetrics {
    /// Tokens counted (special tokens excluded).
    pub n_tokens: u64,
    /// All tokens evaluated.
    pub n_tokens_total: u64,
    /// Mean number of non-zero latents per token.
    pub l0: f64,
    /// `l0` over all tokens, special tokens included.
    pub l0_with_bos: f64,
    /// Mean Σ|f| of the latents per token.
    pub l1: f64,
    /// Mean ‖x − x̂‖² per token, summed over dimensions.
    pub mse: f64,
    /// Mean cos(x, x̂) (0 for a zero vector).
    pub cosine_similarity: f64,
    /// Mean ‖x‖.
    pub l2_norm_in: f64,
    /// Mean ‖x̂‖.
    pub l2_norm_out: f64,
    /// Mean ‖x̂‖/‖x‖ (‖x‖ < 1e-4 counts as 1).
    pub l2_ratio: f64,
    /// E‖x̂‖² / E⟨x, x̂⟩ within each batch, averaged over batches.
    pub relative_reconstruction_bias: f64,
    /// 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²) over all counted tokens.
    pub explained_variance: f64,
    /// Mean over tokens of 1 − ‖x − x̂‖² / ‖x − mean_batch(x)‖² (SAELens before its fix).
    pub explained_variance_legacy: f64,
}

/// Per-latent statistics over the counted tokens, indexed by latent.
#[derive(Clone, Debug, Default)]
pub struct FeatureStats {
    /// Fraction of counted tokens on which the feature is non-zero.
    pub density: Vec<f64>,
    /// Mean activation over the tokens where the feature is non-zero (0 if never).
    pub mean_activation: Vec<f64>,
    /// Largest activation (0 if never active).
    pub max_activation: Vec<f64>,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

impl Recon {
    pub fn new(d_out: usize, d_sae: usize) -> Recon {
        Recon {
            d: d_out,
            total: RowSums::default(),
            rows_all: 0,
            l0_all: 0.0,
            sum_x: vec![0.0; d_out],
            rrb: Vec::new(),
            ev_legacy: 0.0,
            count: vec![0; d_sae],
            sum_act: vec![0.0; d_sae],
            max_act: vec![f32::NEG_INFINITY; d_sae],
        }
    }

    /// One batch: `x` the true activations at the output hook, `x_hat` the
    /// coder's output, `acts` its latents, `keep[r]` whether row r is counted.
    pub fn add_batch(&mut self, x: &[f32], x_hat: &[f32], acts: &SparseActs, keep: &[bool]) {
        let d = self.d;
        self.rows_all += keep.len() as u64;
        self.l0_all += acts.nnz() as f64;
        let sums = (0..keep.len())
            .into_par_iter()
            .filter(|&r| keep[r])
            .map(|r| {
                let (xr, hr) = (&x[r * d..(r + 1) * d], &x_hat[r * d..(r + 1) * d]);
                let (_, vals) = acts.row(r);
                let sq_in = dot(xr, xr);
                let sq_out = dot(hr, hr);
                let xy = dot(xr, hr);
                let sse: f64 = xr.iter().zip(hr).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
                let (ni, no) = (sq_in.sqrt(), sq_out.sqrt());
                // SAELens: inputs with norm below 1e-4 count as norm 1 in the ratio.
                let ratio = no / if ni < 1e-4 { 1.0 } else { ni };
                // Zero-norm vectors give cosine 0 here (NaN in SAELens).
                let cos = if ni > 0.0 && no > 0.0 { xy / (ni * no) } else { 0.0 };
                RowSums {
                    n: 1,
                    l0: vals.len() as f64,
                    l1: vals.iter().map(|v| v.abs() as f64).sum(),
                    sse,
                    sq_in,
                    norm_in: ni,
                    norm_out: no,
                    ratio,
                    cos,
                    sq_out,
                    dot: xy,
                }
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(RowSums::default(), RowSums::add);
        if sums.n == 0 {
            return;
        }
        // Batch mean of x over counted rows: the per-batch variance of the legacy metric.
        let mut mean = vec![0f64; d];
        for r in (0..keep.len()).filter(|&r| keep[r]) {
            for (m, &v) in mean.iter_mut().zip(&x[r * d..(r + 1) * d]) {
                *m += v as f64;
            }
        }
        self.sum_x.iter_mut().zip(&mean).for_each(|(s, m)| *s += m);
        mean.iter_mut().for_each(|m| *m /= sums.n as f64);
        self.ev_legacy += (0..keep.len())
            .into_par_iter()
            .filter(|&r| keep[r])
            .map(|r| {
                let (xr, hr) = (&x[r * d..(r + 1) * d], &x_hat[r * d..(r + 1) * d]);
                let var: f64 = xr.iter().zip(&mean).map(|(&a, m)| (a as f64 - m).powi(2)).sum();
                let sse: f64 = xr.iter().zip(hr).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
                1.0 - sse / var
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum::<f64>();
        self.rrb.push((sums.sq_out / sums.n as f64) / (sums.dot / sums.n as f64));
        self.total = self.total.add(sums);
        for r in (0..keep.len()).filter(|&r| keep[r]) {
            let (idx, vals) = acts.row(r);
            for (&j, &v) in idx.iter().zip(vals) {
                let j = j as usize;
                self.count[j] += 1;
                self.sum_act[j] += v as f64;
                self.max_act[j] = self.max_act[j].max(v);
            }
        }
    }

    pub fn finish(&self) -> (ReconMetrics, FeatureStats) {
        let t = &self.total;
        let n = t.n as f64;
        let mean = |s: f64| if t.n == 0 { f64::NAN } else { s / n };
        // Explained variance over all counted tokens: 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²).
        let total_var = mean(t.sq_in) - self.sum_x.iter().map(|s| (s / n).powi(2)).sum::<f64>();
        let mse = mean(t.sse);
        let explained_variance =
            if total_var < 1e-10 { if mse < 1e-10 { 1.0 } else { 0.0 } } else { 1.0 - mse / total_var };
        let metrics = ReconMetrics {
            n_tokens: t.n,
            n_tokens_total: self.rows_all,
            l0: mean(t.l0),
            l0_with_bos: if self.rows_all == 0 { f64::NAN } else { self.l0_all / self.rows_all as f64 },
            l1: mean(t.l1),
            mse,
            cosine_similarity: mean(t.cos),
            l2_norm_in: mean(t.norm_in),
            l2_norm_out: mean(t.norm_out),
            l2_ratio: mean(t.ratio),
            relative_reconstruction_bias: if self.rrb.is_empty() {
                f64::NAN
            } else {
                self.rrb.iter().sum::<f64>() / self.rrb.len() as f64
            },
            explained_variance,
            explained_variance_legacy: mean(self.ev_legacy),
        };
        let features = FeatureStats {
            density: self.count.iter().map(|&c| if t.n == 0 { 0.0 } else { c as f64 / n }).collect(),
            mean_activation: self
                .count
                .iter()
                .zip(&self.sum_act)
                .map(|(&c, &s)| if c == 0 { 0.0 } else { s / c as f64 })
                .collect(),
            max_activation: self
                .count
                .iter()
                .zip(&self.max_act)
                .map(|(&c, &m)| if c == 0 { 0.0 } else { m as f64 })
                .collect(),
        };
        (metrics, features)
    }
}
