//! Deterministic generators shared with the Python fixture and benchmark scripts.
//!
//! `unit(seed, k)` is a counter-based SplitMix64 stream mapped to an f32 in [0, 1)
//! with 24 random bits, so numpy can reproduce every value bit-exactly
//! (`scripts/fixtures/matching_scipy.py` implements the same functions). The
//! mixing function is saepipe's one generator, [`saepipe_core::rng`].

use crate::sparse::CsrActivations;
use saepipe_core::rng::SplitMix64;

/// The SplitMix64 output function ([`saepipe_core::rng::mix64`]), under the
/// name the Python scripts use.
pub use saepipe_core::rng::mix64 as splitmix64;

const SEED_MUL: u64 = 0xD1B5_4A32_D192_ED03;

/// Where stream `seed` starts counting.
fn stream_start(seed: u64) -> u64 {
    seed.wrapping_mul(SEED_MUL)
}

/// The `k`-th 64-bit value of stream `seed`.
#[inline]
pub fn bits(seed: u64, k: u64) -> u64 {
    splitmix64(stream_start(seed).wrapping_add(k))
}

/// The `k`-th f32 in [0, 1) of stream `seed` (24 random bits, exact in f32).
#[inline]
pub fn unit(seed: u64, k: u64) -> f32 {
    (bits(seed, k) >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// Structured test instances for the assignment solvers, `n_rows x n_cols` row-major.
///
/// - `uniform`: i.i.d. U[0,1).
/// - `ties`: U[0,1) quantized to {0, 0.25, 0.5, 0.75} (many equal optima).
/// - `perm_noise`: 0.25 U[0,1) plus 0.75 on a hidden permutation.
/// - `sparse`: U[0,1) kept with probability 5%, else exactly 0.
pub fn test_matrix(kind: &str, seed: u64, n_rows: usize, n_cols: usize) -> Option<Vec<f32>> {
    let nc = n_cols as u64;
    let cell = |i: usize, j: usize| i as u64 * nc + j as u64;
    let mut m = vec![0f32; n_rows * n_cols];
    match kind {
        "uniform" => {
            for i in 0..n_rows {
                for j in 0..n_cols {
                    m[i * n_cols + j] = unit(seed, cell(i, j));
                }
            }
        }
        "ties" => {
            for i in 0..n_rows {
                for j in 0..n_cols {
                    m[i * n_cols + j] = (unit(seed, cell(i, j)) * 4.0).floor() * 0.25;
                }
            }
        }
        "perm_noise" => {
            // Column order by the keys of stream seed+7 (stable argsort).
            let mut order: Vec<u32> = (0..n_cols as u32).collect();
            order.sort_by_key(|&j| bits(seed.wrapping_add(7), j as u64));
            for i in 0..n_rows {
                let target = order[i % n_cols.max(1)] as usize;
                for j in 0..n_cols {
                    let noise = 0.25f32 * unit(seed, cell(i, j));
                    m[i * n_cols + j] = if j == target { noise + 0.75f32 } else { noise };
                }
            }
        }
        "sparse" => {
            for i in 0..n_rows {
                for j in 0..n_cols {
                    let keep = unit(seed.wrapping_add(1), cell(i, j)) < 0.05;
                    m[i * n_cols + j] = if keep { unit(seed, cell(i, j)) } else { 0.0 };
                }
            }
        }
        _ => return None,
    }
    Some(m)
}

/// Stream `seed` read sequentially (its `k`-th draw is [`bits`]`(seed, k)`), for
/// synthetic data.
#[derive(Debug, Clone)]
pub struct SplitMix(SplitMix64);

impl SplitMix {
    /// Stream `seed` from its start.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::counter(stream_start(seed)))
    }
    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn f64(&mut self) -> f64 {
        self.0.uniform()
    }
    /// A number in `0..n`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// A standard normal draw.
    pub fn gauss(&mut self) -> f64 {
        self.0.normal()
    }
}

/// Parameters of a synthetic pair of SAEs over the same tokens.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// Tokens (rows) of both activation sets.
    pub n_tokens: usize,
    /// Features of each SAE.
    pub n_features: usize,
    /// Mean number of active A features per token.
    pub l0: usize,
    /// Fraction of A features that never fire.
    pub dead_frac: f64,
    /// Probability that B's counterpart fires where an A feature fires.
    pub keep_prob: f64,
    /// Relative multiplicative noise on B's counterpart values.
    pub value_noise: f64,
    /// Extra unrelated active B features per token.
    pub extra_b: usize,
    /// Fraction of A features whose B counterpart is another A feature's counterpart
    /// (two A features absorbed into one B feature), so matches contend.
    pub merge_frac: f64,
    /// Seed of the stream every draw comes from.
    pub seed: u64,
}

impl SyntheticSpec {
    /// A spec with the default shape parameters (L0 32, 1% dead, 85% kept, …).
    pub fn new(n_tokens: usize, n_features: usize, seed: u64) -> Self {
        Self {
            n_tokens,
            n_features,
            l0: 32,
            dead_frac: 0.01,
            keep_prob: 0.85,
            value_noise: 0.3,
            extra_b: 4,
            merge_frac: 0.1,
            seed,
        }
    }
}

/// A synthetic pair (A, B, hidden map A feature -> B feature). Feature firing
/// rates follow a power law (a few frequent features, a long tail of rare ones) and
/// values are log-normal; B's feature `perm[f]` is a noisy copy of A's feature `f`
/// (dropped with prob. 1 - keep_prob, value jittered) plus unrelated extra firings;
/// a `merge_frac` share of A features instead copy into a random other feature's
/// counterpart, leaving some B features with only unrelated firings.
pub fn synthetic_pair(spec: &SyntheticSpec) -> (CsrActivations, CsrActivations, Vec<u32>) {
    let d = spec.n_features;
    let mut rng = SplitMix::new(spec.seed);
    // Power-law weights over a random rank order; dead features get weight 0.
    let mut rank: Vec<u32> = (0..d as u32).collect();
    for k in (1..d).rev() {
        rank.swap(k, rng.below(k as u64 + 1) as usize);
    }
    let mut cdf = vec![0f64; d];
    let mut acc = 0.0;
    for f in 0..d {
        let dead = rng.f64() < spec.dead_frac;
        let w = if dead { 0.0 } else { 1.0 / (rank[f] as f64 + 20.0).powf(0.9) };
        acc += w;
        cdf[f] = acc;
    }
    let total = acc;
    let mut perm: Vec<u32> = (0..d as u32).collect();
    for k in (1..d).rev() {
        perm.swap(k, rng.below(k as u64 + 1) as usize);
    }
    let mut target = perm.clone();
    for t in target.iter_mut() {
        if rng.f64() < spec.merge_frac {
            *t = perm[rng.below(d as u64) as usize];
        }
    }
    let sample = |rng: &mut SplitMix| -> usize {
        let x = rng.f64() * total;
        cdf.partition_point(|&c| c <= x).min(d - 1)
    };
    let (mut a_ptr, mut a_idx, mut a_val) = (vec![0usize], Vec::new(), Vec::new());
    let (mut b_ptr, mut b_idx, mut b_val) = (vec![0usize], Vec::new(), Vec::new());
    let mut seen_a = vec![u32::MAX; d];
    let mut seen_b = vec![u32::MAX; d];
    let spread = (spec.l0 / 2).max(1) as u64;
    for t in 0..spec.n_tokens {
        let tt = t as u32;
        let k = (spec.l0 as u64 - spread / 2 + rng.below(spread + 1)) as usize;
        let start_a = a_idx.len();
        for _ in 0..k {
            let f = sample(&mut rng);
            if seen_a[f] == tt || cdf[f] == if f == 0 { 0.0 } else { cdf[f - 1] } {
                continue;
            }
            seen_a[f] = tt;
            a_idx.push(f as u32);
            a_val.push((0.5 * rng.gauss()).exp() as f32);
        }
        for p in start_a..a_idx.len() {
            if rng.f64() < spec.keep_prob {
                let g = target[a_idx[p] as usize] as usize;
                if seen_b[g] == tt {
                    continue;
                }
                seen_b[g] = tt;
                b_idx.push(g as u32);
                let jitter = (1.0 + spec.value_noise * rng.gauss()).max(0.05);
                b_val.push((a_val[p] as f64 * jitter) as f32);
            }
        }
        for _ in 0..spec.extra_b {
            let g = perm[sample(&mut rng)] as usize;
            if seen_b[g] == tt {
                continue;
            }
            seen_b[g] = tt;
            b_idx.push(g as u32);
            b_val.push((0.5 * rng.gauss()).exp() as f32);
        }
        a_ptr.push(a_idx.len());
        b_ptr.push(b_idx.len());
    }
    let a = CsrActivations::new("synthetic A", spec.n_tokens, d, a_ptr, a_idx, a_val).expect("valid synthetic A");
    let b = CsrActivations::new("synthetic B", spec.n_tokens, d, b_ptr, b_idx, b_val).expect("valid synthetic B");
    (a, b, target)
}
