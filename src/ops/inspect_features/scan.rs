//! The activation scan shared by `inspect_features` and `feature_journey`.
//!
//! Three passes over the first `n` rows of an activation store, so memory stays
//! bounded at real scale (d_sae 16k–65k, millions of tokens):
//!
//! 1. [`stats`]: every feature's firing count, sum and maximum, and the token
//!    ids and sequence ids of the scanned rows (12 bytes a row).
//! 2. [`details`]: for the chosen features only, the top examples (a bounded
//!    heap), a histogram over (0, max], and a deterministic sample of examples
//!    from equal-width activation intervals (sae_vis's quantile groups), all
//!    streamed: no per-firing values are kept.
//! 3. The context windows of the kept examples: only the batches holding
//!    window rows are read back, and only those rows are encoded again, to
//!    colour every token of each window by the feature's activation.

use super::super::StageCtx;
use anyhow::{Context as _, Result, bail};
use saepipe_data::ActivationReader;
use saepipe_sae::SparseCoder;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::path::Path;

/// Rows read per batch.
const BATCH: usize = 4096;

/// An f32 under IEEE total order, so activations can sit in a heap.
#[derive(Clone, Copy, Debug)]
pub struct OrdF32(pub f32);
impl PartialEq for OrdF32 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Opens the store of input directory `dir` at the coder's hook, checking the width.
pub fn open(ctx: &StageCtx, dir: &Path, coder: &SparseCoder, label: &str) -> Result<ActivationReader> {
    let hook = coder.metadata.hook_name.clone().with_context(|| format!("SAE `{label}` does not name its hook"))?;
    let reader = ActivationReader::from_source(ctx.store_source(dir), &[hook.as_str()])
        .with_context(|| format!("SAE `{label}` reads hook `{hook}`"))?
        .sequential();
    if reader.widths()[0] != coder.d_in {
        bail!(
            "SAE `{label}` has d_in {} but `{hook}` in {} has width {}",
            coder.d_in,
            dir.display(),
            reader.widths()[0]
        );
    }
    Ok(reader)
}

/// Pass 1: per-feature statistics over the first rows of a store.
pub struct Stats {
    /// Rows scanned.
    pub n: usize,
    /// Firing count per feature.
    pub count: Vec<u64>,
    /// Sum of activations per feature.
    pub sum: Vec<f64>,
    /// Maximum activation per feature (0 for dead features).
    pub max: Vec<f32>,
    /// Sequence id of each scanned row.
    pub seq: Vec<u64>,
    /// Token id of each scanned row.
    pub tokens: Vec<u32>,
}

impl Stats {
    /// Firing fraction of feature `f`.
    pub fn density(&self, f: usize) -> f64 {
        self.count[f] as f64 / self.n.max(1) as f64
    }
    /// Mean activation of `f` over the tokens it fires on (0 if dead).
    pub fn mean(&self, f: usize) -> f64 {
        if self.count[f] > 0 { self.sum[f] / self.count[f] as f64 } else { 0.0 }
    }
    /// The rows `[lo, hi)` around row `r` within its own sequence.
    pub fn window(&self, r: usize, left: usize, right: usize) -> (usize, usize) {
        let lo = (r.saturating_sub(left)..r).find(|&i| self.seq[i] == self.seq[r]).unwrap_or(r);
        let hi = (r + 1..(r + 1 + right).min(self.n))
            .take_while(|&i| self.seq[i] == self.seq[r])
            .last()
            .map_or(r + 1, |i| i + 1);
        (lo, hi)
    }
}

/// Calls `f(first_row, batch, activations)` on each encoded batch of the first `n` rows.
fn each_batch(
    ctx: &StageCtx,
    reader: &ActivationReader,
    coder: &SparseCoder,
    n: usize,
    what: &str,
    mut f: impl FnMut(usize, &saepipe_data::Batch, &saepipe_sae::SparseActs),
) -> Result<()> {
    ctx.progress.set_total(n as u64, what);
    let mut done = 0;
    for b in reader.batches(BATCH) {
        if ctx.cancelled() {
            return Err(super::super::StageStop::Interrupted.into());
        }
        let b = b?;
        let take = b.rows.min(n - done);
        let acts = coder.encode(&b.hooks[0][..take * coder.d_in], take)?;
        f(done, &b, &acts);
        done += take;
        ctx.progress.set_position(done as u64);
        if done == n {
            break;
        }
    }
    Ok(())
}

/// Pass 1 over the first `n_tokens` rows (fewer if the store is shorter).
pub fn stats(ctx: &StageCtx, reader: &ActivationReader, coder: &SparseCoder, n_tokens: usize) -> Result<Stats> {
    let n = n_tokens.min(reader.total_rows() as usize);
    let d = coder.d_sae;
    let mut s = Stats {
        n,
        count: vec![0; d],
        sum: vec![0.0; d],
        max: vec![0.0; d],
        seq: Vec::with_capacity(n),
        tokens: Vec::with_capacity(n),
    };
    each_batch(ctx, reader, coder, n, "tokens (statistics)", |_, b, acts| {
        let take = acts.n_rows();
        for r in 0..take {
            let (idx, val) = acts.row(r);
            for (&f, &v) in idx.iter().zip(val) {
                let f = f as usize;
                s.count[f] += 1;
                s.sum[f] += v as f64;
                s.max[f] = s.max[f].max(v);
            }
        }
        s.seq.extend_from_slice(&b.seq[..take]);
        s.tokens.extend_from_slice(&b.token[..take]);
    })?;
    Ok(s)
}

/// What pass 2 keeps per chosen feature.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    /// Distinct top examples.
    pub top_k: usize,
    /// Equal-width activation intervals over (0, max] to sample from (0: none).
    pub intervals: usize,
    /// Examples sampled per interval.
    pub per_interval: usize,
    /// Histogram bins over (0, max].
    pub bins: usize,
    /// Tokens of context before the example's token.
    pub left: usize,
    /// Tokens of context after it.
    pub right: usize,
}

/// One example: a row where the feature fires, with its context window.
#[derive(Clone, Debug)]
pub struct Example {
    /// Row of the store.
    pub row: usize,
    /// The feature's activation on that row.
    pub activation: f32,
    /// First row of the window.
    pub lo: usize,
    /// One past the last row of the window.
    pub hi: usize,
    /// The feature's activation on each row of the window (filled by pass 3).
    pub acts: Vec<f32>,
}

/// Examples sampled from one activation interval `[lo, hi)` (the last one closed).
#[derive(Clone, Debug)]
pub struct Interval {
    /// Lower bound.
    pub lo: f32,
    /// Upper bound.
    pub hi: f32,
    /// Firings of the feature in the interval.
    pub count: u64,
    /// The sample, strongest first.
    pub examples: Vec<Example>,
}

/// What the dashboards show of one chosen feature.
#[derive(Clone, Debug)]
pub struct Detail {
    /// The feature index.
    pub feature: usize,
    /// Maximum activation (the top of the histogram and the colour scale).
    pub max: f32,
    /// Distinct top examples, strongest first.
    pub top: Vec<Example>,
    /// Interval samples, lowest interval first.
    pub intervals: Vec<Interval>,
    /// Histogram counts over equal bins of (0, max].
    pub histogram: Vec<u64>,
}

/// The bin of `v` among `bins` equal bins of (0, max]: `[max·i/bins, max·(i+1)/bins)`, the last closed.
pub fn bin_of(v: f32, max: f32, bins: usize) -> usize {
    if max <= 0.0 { 0 } else { (((v / max) * bins as f32) as usize).min(bins - 1) }
}

/// The bounds of bin `i` of `bins` over (0, max].
pub fn bin_bounds(i: usize, max: f32, bins: usize) -> (f32, f32) {
    (max * i as f32 / bins as f32, max * (i + 1) as f32 / bins as f32)
}

/// A fixed pseudo-random rank of (feature, row): interval samples are the
/// rows with the smallest ranks, so they do not depend on batch sizes.
fn sample_rank(feature: usize, row: usize) -> u64 {
    let mut z = (row as u64) ^ ((feature as u64) << 40) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pass 2 (and 3): top examples, histograms and interval samples of `features`,
/// with per-token activations over each example's context window.
pub fn details(
    ctx: &StageCtx,
    reader: &ActivationReader,
    coder: &SparseCoder,
    stats: &Stats,
    features: &[usize],
    want: Want,
) -> Result<Vec<Detail>> {
    let mut slot = vec![usize::MAX; coder.d_sae];
    for (i, &f) in features.iter().enumerate() {
        slot[f] = i;
    }
    let bins = want.bins.max(1);
    let per = want.intervals;
    // Extra top candidates: identical contexts give identical activations and are dropped below.
    let keep = 4 * want.top_k.max(1);
    let mut top: Vec<BinaryHeap<Reverse<(OrdF32, usize)>>> = features.iter().map(|_| BinaryHeap::new()).collect();
    let mut hist: Vec<Vec<u64>> = features.iter().map(|_| vec![0; bins]).collect();
    let mut counts: Vec<Vec<u64>> = features.iter().map(|_| vec![0; per]).collect();
    let mut samples: Vec<Vec<BinaryHeap<(u64, usize, OrdF32)>>> =
        features.iter().map(|_| (0..per).map(|_| BinaryHeap::new()).collect()).collect();
    each_batch(ctx, reader, coder, stats.n, "tokens (examples)", |start, _, acts| {
        for r in 0..acts.n_rows() {
            let (idx, val) = acts.row(r);
            for (&f, &v) in idx.iter().zip(val) {
                let i = slot[f as usize];
                if i == usize::MAX {
                    continue;
                }
                let (f, row, max) = (f as usize, start + r, stats.max[f as usize]);
                let heap = &mut top[i];
                if heap.len() < keep {
                    heap.push(Reverse((OrdF32(v), row)));
                } else if heap.peek().is_some_and(|Reverse((w, _))| v > w.0) {
                    heap.pop();
                    heap.push(Reverse((OrdF32(v), row)));
                }
                hist[i][bin_of(v, max, bins)] += 1;
                if per > 0 {
                    let j = bin_of(v, max, per);
                    counts[i][j] += 1;
                    let s = &mut samples[i][j];
                    s.push((sample_rank(f, row), row, OrdF32(v)));
                    if s.len() > want.per_interval {
                        s.pop();
                    }
                }
            }
        }
    })?;

    let example = |row: usize, v: f32| {
        let (lo, hi) = stats.window(row, want.left, want.right);
        Example { row, activation: v, lo, hi, acts: Vec::new() }
    };
    let mut out = Vec::with_capacity(features.len());
    for (i, &f) in features.iter().enumerate() {
        let mut cand: Vec<(f32, usize)> = top[i].iter().map(|Reverse((v, r))| (v.0, *r)).collect();
        cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut seen = HashSet::new();
        let chosen: Vec<Example> = cand
            .into_iter()
            .map(|(v, r)| example(r, v))
            .filter(|e| seen.insert((e.row - e.lo, &stats.tokens[e.lo..e.hi])))
            .take(want.top_k)
            .collect();
        let intervals = (0..per)
            .map(|j| {
                let (lo, hi) = bin_bounds(j, stats.max[f], per);
                let mut ex: Vec<Example> = samples[i][j].iter().map(|&(_, r, v)| example(r, v.0)).collect();
                ex.sort_by(|a, b| b.activation.total_cmp(&a.activation).then(a.row.cmp(&b.row)));
                Interval { lo, hi, count: counts[i][j], examples: ex }
            })
            .collect();
        out.push(Detail {
            feature: f,
            max: stats.max[f],
            top: chosen,
            intervals,
            histogram: std::mem::take(&mut hist[i]),
        });
    }
    fill_windows(ctx, reader, coder, stats.n, &slot, &mut out)?;
    Ok(out)
}

/// Pass 3: the features' activations on every row of every example's window.
fn fill_windows(
    ctx: &StageCtx,
    reader: &ActivationReader,
    coder: &SparseCoder,
    n: usize,
    slot: &[usize],
    details: &mut [Detail],
) -> Result<()> {
    let needed: BTreeSet<usize> = details
        .iter()
        .flat_map(|d| d.top.iter().chain(d.intervals.iter().flat_map(|iv| &iv.examples)))
        .flat_map(|e| e.lo..e.hi)
        .collect();
    // Row → (feature, activation) of the chosen features firing there.
    let mut fired: BTreeMap<usize, Vec<(u32, f32)>> = BTreeMap::new();
    let last = needed.last().map_or(0, |&r| r + 1);
    ctx.progress.set_total(last as u64, "tokens (contexts)");
    let mut start = 0;
    for b in reader.batches(BATCH) {
        if start >= last.min(n) {
            break;
        }
        if ctx.cancelled() {
            return Err(super::super::StageStop::Interrupted.into());
        }
        let b = b?;
        let take = b.rows.min(n - start);
        let rows: Vec<usize> = needed.range(start..start + take).copied().collect();
        if !rows.is_empty() {
            let d = coder.d_in;
            let mut x = Vec::with_capacity(rows.len() * d);
            for &r in &rows {
                x.extend_from_slice(&b.hooks[0][(r - start) * d..(r - start + 1) * d]);
            }
            let acts = coder.encode(&x, rows.len())?;
            for (k, &r) in rows.iter().enumerate() {
                let (idx, val) = acts.row(k);
                let kept: Vec<(u32, f32)> = idx
                    .iter()
                    .zip(val)
                    .filter(|&(&f, _)| slot[f as usize] != usize::MAX)
                    .map(|(&f, &v)| (f, v))
                    .collect();
                fired.insert(r, kept);
            }
        }
        start += take;
        ctx.progress.set_position(start as u64);
    }
    for d in details.iter_mut() {
        let f = d.feature as u32;
        for e in d.top.iter_mut().chain(d.intervals.iter_mut().flat_map(|iv| iv.examples.iter_mut())) {
            e.acts = (e.lo..e.hi)
                .map(|r| fired.get(&r).and_then(|v| v.iter().find(|x| x.0 == f)).map_or(0.0, |x| x.1))
                .collect();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_zero_to_max() {
        let bins: Vec<usize> = [0.5, 1.0, 2.0, 4.0, 4.0].iter().map(|&v| bin_of(v, 4.0, 4)).collect();
        assert_eq!(bins, vec![0, 1, 2, 3, 3]); // [0,1) [1,2) [2,3) [3,4]
        assert_eq!(bin_bounds(1, 4.0, 4), (1.0, 2.0));
        assert_eq!(bin_of(1.0, 0.0, 3), 0);
    }

    #[test]
    fn windows_stay_in_their_sequence() {
        let s =
            Stats { n: 6, count: vec![], sum: vec![], max: vec![], seq: vec![0, 0, 1, 1, 1, 2], tokens: vec![0; 6] };
        assert_eq!(s.window(3, 5, 5), (2, 5));
        assert_eq!(s.window(2, 1, 0), (2, 3));
        assert_eq!(s.window(5, 2, 2), (5, 6));
    }
}
