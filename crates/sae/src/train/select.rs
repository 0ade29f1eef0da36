//! Selection of the active latents: pre-activations of a block of rows, the
//! per-row ReLU / top-k sets, BatchTopK's batch-wide top k·n, and the AuxK
//! latents among the dead ones.

use rayon::prelude::*;

use super::{CpuTrain, Csr, TrainArch};
use crate::coder::topk_indices;
use crate::linalg::{self, MatRef};

impl CpuTrain {
    /// Pre-activations of a block of rows `[rows, d_sae]`.
    pub(super) fn pre_block(&self, xin: &[f32], rows: usize, pre: &mut Vec<f32>) {
        let (d_in, d_sae) = (self.d_in, self.d_sae);
        pre.resize(rows * d_sae, 0.0);
        linalg::gemm_serial(
            MatRef::row_major(xin, rows, d_in),
            MatRef::row_major(&self.params.enc, d_sae, d_in).t(),
            pre,
            0.0,
        );
        for r in pre.chunks_exact_mut(d_sae) {
            r.iter_mut().zip(&self.params.b_enc).for_each(|(v, b)| *v += b);
        }
    }

    /// Selects active latents (and AuxK latents) for every row.
    /// Returns (active: values f, aux: values pre).
    pub(super) fn select(&self, xin: &[f32], n: usize, dead: &[bool], k_aux: usize) -> (Csr, Csr) {
        let (d_in, d_sae) = (self.d_in, self.d_sae);
        let arch = self.cfg.arch.clone();
        // BatchTopK keeps up to `cand` candidates per row in the first pass.
        let cand = match arch {
            TrainArch::BatchTopK { k, .. } => (4 * k).min(d_sae),
            _ => 0,
        };
        let dead_ids: Vec<u32> = (0..d_sae as u32).filter(|&j| dead[j as usize]).collect();
        let blocks: Vec<(Csr, Csr)> = xin
            .par_chunks(linalg::rows_per_task(n, d_sae) * d_in)
            .map_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(pre, sel, vals), xb| {
                    let rows = xb.len() / d_in;
                    self.pre_block(xb, rows, pre);
                    let mut act = Csr::new();
                    let mut aux = Csr::new();
                    for r in 0..rows {
                        let p = &pre[r * d_sae..(r + 1) * d_sae];
                        match arch {
                            TrainArch::Standard { .. } => {
                                for (j, &v) in p.iter().enumerate() {
                                    if v > 0.0 {
                                        act.idx.push(j as u32);
                                        act.val.push(v);
                                    }
                                }
                            }
                            TrainArch::TopK { k } => push_top(p, k, sel, &mut act),
                            TrainArch::BatchTopK { .. } => push_top(p, cand, sel, &mut act),
                            // Trained through the JumpReLU kernel; the
                            // active set is pre > θ.
                            TrainArch::JumpRelu { .. } => {
                                let thr = &self.params.b_enc[d_sae..];
                                for (j, (&v, &t)) in p.iter().zip(thr).enumerate() {
                                    if v > t {
                                        act.idx.push(j as u32);
                                        act.val.push(v);
                                    }
                                }
                            }
                        }
                        act.push_row();
                        if k_aux > 0 {
                            push_top_aux(p, k_aux, &dead_ids, vals, sel, &mut aux);
                        }
                        aux.push_row();
                    }
                    (act, aux)
                },
            )
            .collect();
        let mut act = Csr::new();
        let mut aux = Csr::new();
        for (a, x) in blocks {
            act.append(a);
            aux.append(x);
        }
        if let TrainArch::BatchTopK { k, .. } = arch {
            act = self.batch_select(xin, n, k, cand, act);
        }
        (act, aux)
    }

    /// Global top k·n of the batch from per-row candidate lists (each row's
    /// `cand` largest positive values). A row whose whole candidate list is
    /// above the provisional threshold may hold more: it is recomputed in
    /// full, and the threshold taken again over the completed lists (it can
    /// only rise, so the other lists stay complete).
    fn batch_select(&self, xin: &[f32], n: usize, k: usize, cand: usize, rowcand: Csr) -> Csr {
        let d_sae = self.d_sae;
        let total = k * n;
        let kth = |vals: &[f32]| -> f32 {
            if vals.len() <= total {
                return 0.0;
            }
            let mut all = vals.to_vec();
            let (_, t, _) = all.select_nth_unstable_by(total - 1, |a, b| b.total_cmp(a));
            *t
        };
        let tau0 = kth(&rowcand.val);
        let incomplete: Vec<usize> = (0..n)
            .filter(|&r| {
                let rg = rowcand.row(r);
                rg.len() == cand && cand < d_sae && rowcand.val[rg].iter().all(|&v| v >= tau0)
            })
            .collect();
        let lists = if incomplete.is_empty() {
            rowcand
        } else {
            let full: Vec<(Vec<u32>, Vec<f32>)> = incomplete
                .par_iter()
                .map(|&r| {
                    let mut pre = Vec::new();
                    self.pre_block(&xin[r * self.d_in..(r + 1) * self.d_in], 1, &mut pre);
                    let idx: Vec<u32> =
                        (0..d_sae as u32).filter(|&j| pre[j as usize] > 0.0 && pre[j as usize] >= tau0).collect();
                    let val = idx.iter().map(|&j| pre[j as usize]).collect();
                    (idx, val)
                })
                .collect();
            let mut out = Csr::new();
            let mut fi = 0;
            for r in 0..n {
                if fi < incomplete.len() && incomplete[fi] == r {
                    out.idx.extend_from_slice(&full[fi].0);
                    out.val.extend_from_slice(&full[fi].1);
                    fi += 1;
                } else {
                    let rg = rowcand.row(r);
                    out.idx.extend_from_slice(&rowcand.idx[rg.clone()]);
                    out.val.extend_from_slice(&rowcand.val[rg]);
                }
                out.push_row();
            }
            out
        };
        let tau = kth(&lists.val);
        let mut out = Csr::new();
        for r in 0..n {
            for i in lists.row(r) {
                if lists.val[i] > 0.0 && lists.val[i] >= tau {
                    out.idx.push(lists.idx[i]);
                    out.val.push(lists.val[i]);
                }
            }
            out.push_row();
        }
        out
    }
}

/// Pushes the top `k` positive values of `p` (ascending index order).
fn push_top(p: &[f32], k: usize, sel: &mut Vec<u32>, out: &mut Csr) {
    topk_indices(p, k, sel);
    let start = out.idx.len();
    out.idx.extend(sel.iter().copied().filter(|&j| p[j as usize] > 0.0));
    out.idx[start..].sort_unstable();
    for i in start..out.idx.len() {
        out.val.push(p[out.idx[i] as usize]);
    }
}

/// Pushes the `k` largest pre-activations among the dead latents `dead_ids`
/// (values may be negative). `vals` and `sel` are scratch.
fn push_top_aux(p: &[f32], k: usize, dead_ids: &[u32], vals: &mut Vec<f32>, sel: &mut Vec<u32>, out: &mut Csr) {
    vals.clear();
    vals.extend(dead_ids.iter().map(|&j| p[j as usize]));
    topk_indices(vals, k, sel);
    let start = out.idx.len();
    out.idx.extend(sel.iter().map(|&i| dead_ids[i as usize]));
    out.idx[start..].sort_unstable();
    for i in start..out.idx.len() {
        out.val.push(p[out.idx[i] as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::{lcg, randomize};
    use crate::train::{BDecInit, TrainConfig, Trainer};

    #[test]
    fn batch_topk_selection_is_exact_when_rows_are_unbalanced() {
        let (d, d_sae, n, k) = (8, 20, 10, 1);
        let mut s = 5u64;
        // The last row is scaled up so it holds far more than its candidate
        // share (4k = 4) of the batch's top k·n.
        let mut x: Vec<f32> = (0..n * d).map(|_| lcg(&mut s)).collect();
        x[(n - 1) * d..].iter_mut().for_each(|v| *v *= 100.0);
        let cfg = TrainConfig {
            arch: TrainArch::BatchTopK { k, threshold_lr: 0.01 },
            d_sae,
            b_dec_init: BDecInit::Zeros,
            ..Default::default()
        };
        let mut t = Trainer::new(cfg, d, d, &x, None).unwrap();
        randomize(&mut t, 3);
        let xin = t.ops.encoder_input(&x);
        let (act, _) = t.ops.select(&xin, n, &vec![false; d_sae], 0);
        let mut pre = Vec::new();
        t.ops.pre_block(&xin, n, &mut pre);
        let mut all: Vec<(f32, usize)> =
            pre.iter().copied().enumerate().filter(|(_, v)| *v > 0.0).map(|(i, v)| (v, i)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut want: Vec<usize> = all[..k * n].iter().map(|p| p.1).collect();
        want.sort();
        let mut got: Vec<usize> = (0..n)
            .flat_map(|r| act.row(r).map(move |i| (r, i)))
            .map(|(r, i)| r * d_sae + act.idx[i] as usize)
            .collect();
        got.sort();
        assert_eq!(got, want);
        let top_row_count = act.row(n - 1).len();
        assert!(top_row_count > 4, "the test must exercise the recomputation path ({top_row_count})");
    }
}
