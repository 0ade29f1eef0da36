//! Next-token loss and KL divergence to the clean model, averaged over the
//! counted tokens (SAELens `get_downstream_reconstruction_metrics`).

use rayon::prelude::*;

/// Running mean of a per-token quantity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mean {
    pub sum: f64,
    pub n: u64,
}

impl Mean {
    pub fn add(&mut self, o: Mean) {
        self.sum += o.sum;
        self.n += o.n;
    }
    pub fn value(&self) -> f64 {
        if self.n == 0 { f64::NAN } else { self.sum / self.n as f64 }
    }
}

/// CE of a run: `loss` is [batch, ctx − 1]; position t is counted when the
/// token at t (the one doing the predicting) is counted, as in SAELens.
pub fn ce(loss: &[f32], keep: &[bool], ctx: usize) -> Mean {
    let mut m = Mean::default();
    if ctx < 2 {
        return m;
    }
    for (b, row) in loss.chunks_exact(ctx - 1).enumerate() {
        for (t, &l) in row.iter().enumerate() {
            if keep[b * ctx + t] {
                m.sum += l as f64;
                m.n += 1;
            }
        }
    }
    m
}

/// Row-wise log-softmax of `[n, vocab]` logits.
pub fn log_softmax(logits: &[f32], vocab: usize) -> Vec<f32> {
    let mut out = logits.to_vec();
    out.par_chunks_mut(vocab).for_each(|row| {
        let lse = log_sum_exp(row);
        row.iter_mut().for_each(|v| *v -= lse);
    });
    out
}

fn log_sum_exp(row: &[f32]) -> f32 {
    let mx = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let s: f64 = row.iter().map(|&x| ((x - mx) as f64).exp()).sum();
    mx + s.ln() as f32
}

/// Σ over counted rows of KL(clean ‖ new) = Σ_v p_v (log p_v − log q_v).
pub fn kl(clean_logp: &[f32], new_logits: &[f32], vocab: usize, keep: &[bool]) -> Mean {
    // Summed in row order (not a parallel reduction): reproducible to the bit.
    let per_row: Vec<f64> = clean_logp
        .par_chunks(vocab)
        .zip(new_logits.par_chunks(vocab))
        .enumerate()
        .filter(|(r, _)| keep[*r])
        .map(|(_, (lp, z))| {
            let lse = log_sum_exp(z) as f64;
            lp.iter()
                .zip(z)
                .map(|(&lp, &z)| {
                    let lp = lp as f64;
                    let p = lp.exp();
                    if p == 0.0 { 0.0 } else { p * (lp - (z as f64 - lse)) }
                })
                .sum::<f64>()
        })
        .collect();
    Mean { sum: per_row.iter().sum(), n: keep.iter().filter(|&&k| k).count() as u64 }
}

/// Clean, spliced and zero-ablation means of CE and KL for one coder.
#[derive(Clone, Copy, Debug, Default)]
pub struct Downstream {
    pub ce_clean: Mean,
    pub ce_spliced: Mean,
    pub ce_zero: Mean,
    pub kl_spliced: Mean,
    pub kl_zero: Mean,
}

/// How splicing a coder in changes the model's predictions (means over counted positions).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DownstreamMetrics {
    /// Next-token cross-entropy of the unmodified model (nats).
    pub ce_clean: f64,
    /// The same with the coder's output in place of the hook's value.
    pub ce_spliced: f64,
    /// The same with the hook set to 0.
    pub ce_zero_ablation: f64,
    /// (CE_zero − CE_spliced) / (CE_zero − CE_clean): 1 is perfect, 0 no better than zeros.
    pub ce_loss_score: f64,
    /// KL(p_clean ‖ p_spliced) of the next-token distributions.
    pub kl_spliced: f64,
    /// KL(p_clean ‖ p_zero).
    pub kl_zero_ablation: f64,
    /// (KL_zero − KL_spliced) / KL_zero.
    pub kl_div_score: f64,
}

impl Downstream {
    pub fn finish(&self) -> DownstreamMetrics {
        let (clean, spliced, zero) = (self.ce_clean.value(), self.ce_spliced.value(), self.ce_zero.value());
        let (kls, klz) = (self.kl_spliced.value(), self.kl_zero.value());
        DownstreamMetrics {
            ce_clean: clean,
            ce_spliced: spliced,
            ce_zero_ablation: zero,
            ce_loss_score: (zero - spliced) / (zero - clean),
            kl_spliced: kls,
            kl_zero_ablation: klz,
            kl_div_score: (klz - kls) / klz,
        }
    }
}
