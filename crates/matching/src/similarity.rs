//! Feature similarities between two SAEs, exposed as an oracle over the matching
//! problem (rows = live A features, columns = live B features) that yields exact
//! rows, exact pairs, and a sparse top-m candidate graph.

use crate::sparse::{CscActivations, CsrActivations, FeatureStats};
use crate::{Error, Result};
use rayon::prelude::*;

/// Which similarity the features are matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityKind {
    /// Uncentered cosine of activation vectors over the same tokens.
    Activations,
    /// Pearson correlation of activation vectors over the same tokens.
    Pearson,
    /// Cosine of decoder rows (`W_dec[f, :]`).
    Decoder,
    /// Cosine of encoder columns (`W_enc[:, f]`).
    Encoder,
}

impl SimilarityKind {
    /// The kind as written in pipelines and outputs (`"activations"`, `"pearson"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Activations => "activations",
            Self::Pearson => "pearson",
            Self::Decoder => "decoder",
            Self::Encoder => "encoder",
        }
    }
}

/// Value of the similarity at columns a row does not list explicitly.
#[derive(Debug, Clone, Copy)]
pub enum Background<'a> {
    /// Every column is listed by `row_entries`.
    None,
    /// Unlisted columns have similarity exactly 0 (features that never co-fire).
    Zero,
    /// Unlisted (i, j) have similarity `-r[i] * s[j]` (Pearson of never co-firing features).
    RankOne {
        /// Per-row factor, one per problem row.
        r: &'a [f32],
        /// Per-column factor, one per problem column.
        s: &'a [f32],
        /// Smallest value of `s`.
        s_min: f32,
        /// Largest value of `s`.
        s_max: f32,
    },
}

impl Background<'_> {
    /// The background similarity of pair (i, j) (0 for [`Background::None`]).
    #[inline]
    pub fn value(&self, i: usize, j: usize) -> f32 {
        match *self {
            Background::None | Background::Zero => 0.0,
            Background::RankOne { r, s, .. } => -r[i] * s[j],
        }
    }
    /// Upper bound of the background over all columns of row `i` (`-inf` when there is none).
    #[inline]
    pub fn row_max(&self, i: usize) -> f32 {
        match *self {
            Background::None => f32::NEG_INFINITY,
            Background::Zero => 0.0,
            Background::RankOne { r, s_min, s_max, .. } => {
                if r[i] >= 0.0 {
                    -r[i] * s_min
                } else {
                    -r[i] * s_max
                }
            }
        }
    }
}

/// Per-thread scratch for row computations: a dense accumulator whose slots carry the
/// stamp of the row that last touched them, so nothing needs resetting between rows.
#[derive(Debug, Default)]
pub struct RowScratch {
    acc: Vec<(f64, u32)>,
    stamp: u32,
    touched: Vec<u32>,
}

/// Exact similarities of a matching problem.
pub trait SimilarityOracle: Sync {
    /// Rows of the problem (live A features).
    fn n_rows(&self) -> usize;
    /// Columns of the problem (live B features).
    fn n_cols(&self) -> usize;
    /// Appends the explicitly listed exact similarities of row `i` as (column, similarity);
    /// every other column has the value given by [`SimilarityOracle::background`].
    fn row_entries(&self, i: usize, scratch: &mut RowScratch, out: &mut Vec<(u32, f32)>);
    /// The similarity of every (row, column) that `row_entries` does not list.
    fn background(&self) -> Background<'_>;
    /// Exact similarity of one pair.
    fn pair(&self, i: usize, j: usize) -> f32;
}

/// Activation similarity (uncentered cosine or Pearson) from sparse activations.
///
/// Rows are the live (firing) features of A, columns the live features of B.
pub struct ActivationOracle<'a> {
    pearson: bool,
    a_csc: &'a CscActivations,
    b_csc: &'a CscActivations,
    /// B's CSR with feature ids replaced by problem columns (dead features dropped), so
    /// the inner loop has one indirection less.
    b_row_ptr: Vec<usize>,
    b_ent: Vec<(u32, f32)>,
    /// Problem row -> A feature id.
    pub row_feature: Vec<u32>,
    /// Problem column -> B feature id.
    pub col_feature: Vec<u32>,
    /// Cosine: 1/||a_i||; Pearson: 1/(sqrt(N) sigma_i).
    scale_a: Vec<f64>,
    scale_b: Vec<f64>,
    /// Pearson: sum_i / (sqrt(N) sqrt(N) sigma_i) so that corr = S_ab*scale_a*scale_b - r_i*s_j.
    r: Vec<f32>,
    s: Vec<f32>,
    s_min: f32,
    s_max: f32,
}

/// Live feature ids (count > 0).
pub(crate) fn live_features(stats: &[FeatureStats]) -> Vec<u32> {
    stats.iter().enumerate().filter(|(_, s)| !s.is_dead()).map(|(f, _)| f as u32).collect()
}

impl<'a> ActivationOracle<'a> {
    /// `a_csc`, `b_csr`, `b_csc` must be activations over the same tokens; stats from
    /// [`CsrActivations::feature_stats`]. Dead features are excluded from rows/columns.
    pub fn new(
        kind: SimilarityKind,
        a_csc: &'a CscActivations,
        a_stats: &[FeatureStats],
        b_csr: &CsrActivations,
        b_csc: &'a CscActivations,
        b_stats: &[FeatureStats],
    ) -> Result<Self> {
        let pearson = match kind {
            SimilarityKind::Activations => false,
            SimilarityKind::Pearson => true,
            k => {
                return Err(Error::Config(format!("ActivationOracle cannot compute `{}` similarity", k.name())));
            }
        };
        if a_csc.n_tokens != b_csr.n_tokens {
            return Err(Error::Mismatch { what: "number of tokens".into(), a: a_csc.n_tokens, b: b_csr.n_tokens });
        }
        if a_stats.len() != a_csc.n_features || b_stats.len() != b_csr.n_features {
            return Err(Error::Config("feature stats do not match the activation matrices".into()));
        }
        let row_feature = live_features(a_stats);
        let col_feature = live_features(b_stats);
        let mut col_of_b = vec![u32::MAX; b_csr.n_features];
        for (c, &f) in col_feature.iter().enumerate() {
            col_of_b[f as usize] = c as u32;
        }
        let n = a_csc.n_tokens as f64;
        // sigma' = sqrt(sum_sq - sum^2/N) = sqrt(N) * std; constant features get scale 0,
        // so their correlation with anything is defined as 0.
        let centered = |st: &FeatureStats| {
            let var = st.sum_sq - st.sum * st.sum / n;
            if var > 1e-12 * st.sum_sq.max(f64::MIN_POSITIVE) { 1.0 / var.sqrt() } else { 0.0 }
        };
        let (scale_a, scale_b, r, s): (Vec<f64>, Vec<f64>, Vec<f32>, Vec<f32>) = if pearson {
            let sa: Vec<f64> = row_feature.iter().map(|&f| centered(&a_stats[f as usize])).collect();
            let sb: Vec<f64> = col_feature.iter().map(|&f| centered(&b_stats[f as usize])).collect();
            let r =
                row_feature.iter().zip(&sa).map(|(&f, &k)| (a_stats[f as usize].sum * k / n.sqrt()) as f32).collect();
            let s =
                col_feature.iter().zip(&sb).map(|(&f, &k)| (b_stats[f as usize].sum * k / n.sqrt()) as f32).collect();
            (sa, sb, r, s)
        } else {
            let inv = |st: &FeatureStats| if st.l2 > 0.0 { 1.0 / st.l2 } else { 0.0 };
            (
                row_feature.iter().map(|&f| inv(&a_stats[f as usize])).collect(),
                col_feature.iter().map(|&f| inv(&b_stats[f as usize])).collect(),
                Vec::new(),
                Vec::new(),
            )
        };
        let s_min = s.iter().copied().fold(f32::INFINITY, f32::min);
        let s_max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut b_row_ptr = Vec::with_capacity(b_csr.n_tokens + 1);
        let mut b_ent = Vec::with_capacity(b_csr.nnz());
        b_row_ptr.push(0);
        for t in 0..b_csr.n_tokens {
            let (idx, val) = b_csr.row(t);
            for (&f, &x) in idx.iter().zip(val) {
                let c = col_of_b[f as usize];
                if c != u32::MAX {
                    b_ent.push((c, x));
                }
            }
            b_row_ptr.push(b_ent.len());
        }
        Ok(Self {
            pearson,
            a_csc,
            b_csc,
            b_row_ptr,
            b_ent,
            row_feature,
            col_feature,
            scale_a,
            scale_b,
            r,
            s,
            s_min,
            s_max,
        })
    }

    #[inline]
    fn finish(&self, i: usize, j: usize, sum_ab: f64) -> f32 {
        let v = sum_ab * self.scale_a[i] * self.scale_b[j];
        if self.pearson { (v - self.r[i] as f64 * self.s[j] as f64) as f32 } else { v as f32 }
    }
}

impl SimilarityOracle for ActivationOracle<'_> {
    fn n_rows(&self) -> usize {
        self.row_feature.len()
    }
    fn n_cols(&self) -> usize {
        self.col_feature.len()
    }

    /// Sparse product: over the tokens where A feature i fires, over B's active
    /// features at that token, accumulate a*b into a sparse accumulator.
    fn row_entries(&self, i: usize, sc: &mut RowScratch, out: &mut Vec<(u32, f32)>) {
        let nc = self.n_cols();
        if sc.acc.len() != nc || sc.stamp == u32::MAX {
            sc.acc = vec![(0.0, 0); nc];
            sc.stamp = 0;
        }
        sc.stamp += 1;
        let stamp = sc.stamp;
        sc.touched.clear();
        let (toks, avals) = self.a_csc.col(self.row_feature[i] as usize);
        for (k, (&t, &a)) in toks.iter().zip(avals).enumerate() {
            // The tokens of a rare feature are scattered, so each B row is a cache miss:
            // prefetch the row pointers and rows of tokens a few steps ahead.
            if let Some(&t2) = toks.get(k + PREFETCH_ROWS) {
                prefetch(self.b_row_ptr.as_ptr().wrapping_add(t2 as usize));
            }
            if let Some(&t1) = toks.get(k + PREFETCH_ROWS / 2) {
                let p = self.b_row_ptr[t1 as usize];
                let e = self.b_row_ptr[t1 as usize + 1];
                // One 64-byte line holds 8 entries.
                for q in (p..e).step_by(8) {
                    prefetch(self.b_ent.as_ptr().wrapping_add(q));
                }
            }
            let (s, e) = (self.b_row_ptr[t as usize], self.b_row_ptr[t as usize + 1]);
            let a = a as f64;
            for &(c, b) in &self.b_ent[s..e] {
                let slot = &mut sc.acc[c as usize];
                if slot.1 != stamp {
                    *slot = (0.0, stamp);
                    sc.touched.push(c);
                }
                slot.0 += a * b as f64;
            }
        }
        for &c in &sc.touched {
            out.push((c, self.finish(i, c as usize, sc.acc[c as usize].0)));
        }
    }

    fn background(&self) -> Background<'_> {
        if self.pearson {
            Background::RankOne { r: &self.r, s: &self.s, s_min: self.s_min, s_max: self.s_max }
        } else {
            Background::Zero
        }
    }

    fn pair(&self, i: usize, j: usize) -> f32 {
        let (ta, va) = self.a_csc.col(self.row_feature[i] as usize);
        let (tb, vb) = self.b_csc.col(self.col_feature[j] as usize);
        let (mut p, mut q, mut acc) = (0, 0, 0f64);
        while p < ta.len() && q < tb.len() {
            match ta[p].cmp(&tb[q]) {
                std::cmp::Ordering::Less => p += 1,
                std::cmp::Ordering::Greater => q += 1,
                std::cmp::Ordering::Equal => {
                    acc += va[p] as f64 * vb[q] as f64;
                    p += 1;
                    q += 1;
                }
            }
        }
        self.finish(i, j, acc)
    }
}

/// Cosine similarity of dense feature vectors (decoder rows or encoder columns).
pub struct DenseCosineOracle {
    d: usize,
    /// L2-normalized feature vectors, row-major (n_rows x d); zero vectors stay zero.
    a: Vec<f32>,
    b: Vec<f32>,
    /// Problem row -> A feature id.
    pub row_feature: Vec<u32>,
    /// Problem column -> B feature id.
    pub col_feature: Vec<u32>,
}

/// Feature vectors in row-major layout `[n_features, d]` (W_dec), or column-major
/// `[d, n_features]` (W_enc): `feature_major = false` means features are columns.
#[derive(Debug, Clone, Copy)]
pub struct DenseWeights<'a> {
    /// Name used in error messages.
    pub name: &'a str,
    /// `n_features * d` values in the layout `feature_major` says.
    pub data: &'a [f32],
    /// Number of features (`d_sae`).
    pub n_features: usize,
    /// Length of each feature vector (`d_in`).
    pub d: usize,
    /// `true`: `[n_features, d]` row-major (W_dec); `false`: `[d, n_features]` (W_enc).
    pub feature_major: bool,
}

impl DenseWeights<'_> {
    fn check(&self) -> Result<()> {
        if self.data.len() != self.n_features * self.d {
            let (rows, cols) = if self.feature_major { (self.n_features, self.d) } else { (self.d, self.n_features) };
            return Err(Error::WeightShape {
                name: self.name.to_string(),
                rows,
                cols,
                expected: rows * cols,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    /// Normalized vectors of the selected features, feature-major.
    fn normalized(&self, features: &[u32]) -> Vec<f32> {
        let d = self.d;
        let mut out = vec![0f32; features.len() * d];
        out.par_chunks_mut(d.max(1)).zip(features.par_iter()).for_each(|(dst, &f)| {
            let f = f as usize;
            for (k, x) in dst.iter_mut().enumerate() {
                *x = if self.feature_major { self.data[f * d + k] } else { self.data[k * self.n_features + f] };
            }
            let n = dst.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            if n > 0.0 {
                let inv = (1.0 / n) as f32;
                dst.iter_mut().for_each(|x| *x *= inv);
            }
        });
        out
    }
}

impl DenseCosineOracle {
    /// Oracle over the given feature subsets (e.g. the live features of each SAE).
    pub fn new(a: DenseWeights<'_>, a_features: Vec<u32>, b: DenseWeights<'_>, b_features: Vec<u32>) -> Result<Self> {
        a.check()?;
        b.check()?;
        if a.d != b.d {
            return Err(Error::Mismatch { what: "weight vector dimension d".into(), a: a.d, b: b.d });
        }
        for (w, fs) in [(&a, &a_features), (&b, &b_features)] {
            if let Some(&f) = fs.iter().find(|&&f| f as usize >= w.n_features) {
                return Err(Error::Config(format!(
                    "feature {f} out of range for `{}` ({} features)",
                    w.name, w.n_features
                )));
            }
        }
        Ok(Self {
            d: a.d,
            a: a.normalized(&a_features),
            b: b.normalized(&b_features),
            row_feature: a_features,
            col_feature: b_features,
        })
    }

    /// Top-m candidate graph from a blocked GEMM: `block_rows` rows of the similarity
    /// matrix are materialized at a time per thread, never the whole matrix.
    pub fn candidate_graph(&self, m: usize, block_rows: usize) -> CandidateGraph {
        let (nr, nc, d) = (self.n_rows(), self.n_cols(), self.d);
        let br = block_rows.max(1);
        let blocks: Vec<Vec<RowCandidates>> = (0..nr.div_ceil(br))
            .into_par_iter()
            .map(|blk| {
                let r0 = blk * br;
                let rows = br.min(nr - r0);
                let mut c = vec![0f32; rows * nc];
                if d > 0 && nc > 0 {
                    // SAFETY: pointers and strides describe in-bounds row-major buffers:
                    // A block rows x d, B^T d x nc (B is nc x d), C rows x nc.
                    unsafe {
                        matrixmultiply::sgemm(
                            rows,
                            d,
                            nc,
                            1.0,
                            self.a.as_ptr().add(r0 * d),
                            d as isize,
                            1,
                            self.b.as_ptr(),
                            1,
                            d as isize,
                            0.0,
                            c.as_mut_ptr(),
                            nc as isize,
                            1,
                        );
                    }
                }
                let mut heap = TopM::new(m);
                (0..rows)
                    .map(|k| {
                        heap.clear(r0 + k);
                        for (j, &v) in c[k * nc..(k + 1) * nc].iter().enumerate() {
                            heap.push(v, j as u32);
                        }
                        heap.finish(f32::NEG_INFINITY)
                    })
                    .collect()
            })
            .collect();
        CandidateGraph::from_rows(nc, blocks.into_iter().flatten())
    }
}

impl SimilarityOracle for DenseCosineOracle {
    fn n_rows(&self) -> usize {
        self.row_feature.len()
    }
    fn n_cols(&self) -> usize {
        self.col_feature.len()
    }
    fn row_entries(&self, i: usize, _sc: &mut RowScratch, out: &mut Vec<(u32, f32)>) {
        let d = self.d;
        let a = &self.a[i * d..(i + 1) * d];
        for j in 0..self.n_cols() {
            out.push((j as u32, dot(a, &self.b[j * d..(j + 1) * d])));
        }
    }
    fn background(&self) -> Background<'_> {
        Background::None
    }
    fn pair(&self, i: usize, j: usize) -> f32 {
        let d = self.d;
        dot(&self.a[i * d..(i + 1) * d], &self.b[j * d..(j + 1) * d])
    }
}

const PREFETCH_ROWS: usize = 16;

#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint and never faults, even for out-of-range addresses.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // 8 partial sums so the compiler vectorizes without reassociation flags.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Candidates of one row: the top-m listed entries (descending), the largest
/// similarity of the row, and an upper bound on every similarity not kept.
#[derive(Debug, Clone)]
pub(crate) struct RowCandidates {
    pub(crate) entries: Vec<(u32, f32)>,
    pub(crate) row_max: f32,
    pub(crate) bound: f32,
}

/// Sparse candidate graph: for each row, listed (column, similarity) edges with exact
/// similarities, the row maximum, and an upper bound on every unlisted similarity
/// (`-inf` when the row lists every column).
#[derive(Debug, Clone)]
pub struct CandidateGraph {
    /// Rows of the problem.
    pub n_rows: usize,
    /// Columns of the problem.
    pub n_cols: usize,
    /// `n_rows + 1` offsets into `cols`/`sims`.
    pub row_ptr: Vec<usize>,
    /// Column of each edge.
    pub cols: Vec<u32>,
    /// Exact similarity of each edge.
    pub sims: Vec<f32>,
    /// Largest similarity of each row, listed or not.
    pub row_max: Vec<f32>,
    /// Upper bound on each row's unlisted similarities (`-inf` when it lists every column).
    pub bound: Vec<f32>,
}

impl CandidateGraph {
    pub(crate) fn from_rows(n_cols: usize, rows: impl IntoIterator<Item = RowCandidates>) -> Self {
        let mut g = CandidateGraph {
            n_rows: 0,
            n_cols,
            row_ptr: vec![0],
            cols: Vec::new(),
            sims: Vec::new(),
            row_max: Vec::new(),
            bound: Vec::new(),
        };
        for r in rows {
            g.push_row(&r);
        }
        g
    }

    fn push_row(&mut self, r: &RowCandidates) {
        for &(j, s) in &r.entries {
            self.cols.push(j);
            self.sims.push(s);
        }
        self.row_ptr.push(self.cols.len());
        self.row_max.push(r.row_max);
        self.bound.push(r.bound);
        self.n_rows += 1;
    }

    /// Number of listed edges over all rows.
    pub fn n_edges(&self) -> usize {
        self.cols.len()
    }

    /// The (columns, similarities) listed for row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.row_ptr[i], self.row_ptr[i + 1]);
        (&self.cols[s..e], &self.sims[s..e])
    }

    pub(crate) fn row_candidates(&self, i: usize) -> RowCandidates {
        let (c, s) = self.row(i);
        RowCandidates {
            entries: c.iter().copied().zip(s.iter().copied()).collect(),
            row_max: self.row_max[i],
            bound: self.bound[i],
        }
    }
}

/// Bounded min-heap keeping the m+1 largest values (the (m+1)-th is the bound on
/// everything dropped).
struct TopM {
    m: usize,
    row: u64,
    heap: Vec<(f32, u32)>,
}

impl TopM {
    fn new(m: usize) -> Self {
        Self { m, row: 0, heap: Vec::with_capacity(m + 2) }
    }
    /// Starts a new row; `row` seeds the tie-breaking order.
    fn clear(&mut self, row: usize) {
        self.heap.clear();
        self.row = row as u64;
    }
    /// Ties are broken by a per-row hash of the column, so rows with many equal
    /// similarities do not all keep the same (lowest-id) columns and contend for them.
    #[inline]
    fn tie_key(&self, j: u32) -> u64 {
        crate::rng::splitmix64((self.row << 32) | j as u64)
    }
    #[inline]
    fn less(&self, a: (f32, u32), b: (f32, u32)) -> bool {
        a.0 < b.0 || (a.0 == b.0 && self.tie_key(a.1) > self.tie_key(b.1))
    }
    #[inline]
    fn push(&mut self, v: f32, j: u32) {
        let cap = self.m + 1;
        if self.heap.len() < cap {
            self.heap.push((v, j));
            let mut k = self.heap.len() - 1;
            while k > 0 {
                let p = (k - 1) / 2;
                if self.less(self.heap[k], self.heap[p]) {
                    self.heap.swap(k, p);
                    k = p;
                } else {
                    break;
                }
            }
        } else if self.less(self.heap[0], (v, j)) {
            self.heap[0] = (v, j);
            let n = self.heap.len();
            let mut k = 0;
            loop {
                let (l, r) = (2 * k + 1, 2 * k + 2);
                let mut s = k;
                if l < n && self.less(self.heap[l], self.heap[s]) {
                    s = l;
                }
                if r < n && self.less(self.heap[r], self.heap[s]) {
                    s = r;
                }
                if s == k {
                    break;
                }
                self.heap.swap(k, s);
                k = s;
            }
        }
    }
    /// `bg_max`: upper bound of the background on columns never pushed (or -inf).
    fn finish(&mut self, bg_max: f32) -> RowCandidates {
        let mut v = std::mem::take(&mut self.heap);
        v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(self.tie_key(a.1).cmp(&self.tie_key(b.1))));
        let mut bound = bg_max;
        if v.len() > self.m {
            bound = bound.max(v[self.m].0);
            v.truncate(self.m);
        }
        let row_max = v.first().map_or(bg_max, |x| x.0.max(bg_max));
        let entries = v.iter().map(|&(s, j)| (j, s)).collect();
        self.heap = v;
        self.heap.clear();
        RowCandidates { entries, row_max, bound }
    }
}

/// Top-m candidates of every row of an oracle, computed in parallel over rows.
pub fn candidate_graph(oracle: &dyn SimilarityOracle, m: usize) -> CandidateGraph {
    let nc = oracle.n_cols();
    let bg = oracle.background();
    let rows: Vec<RowCandidates> = (0..oracle.n_rows())
        .into_par_iter()
        .map_init(
            || (RowScratch::default(), Vec::new(), TopM::new(m)),
            |(sc, buf, heap), i| {
                buf.clear();
                oracle.row_entries(i, sc, buf);
                heap.clear(i);
                for &(j, v) in buf.iter() {
                    heap.push(v, j);
                }
                let bg_max = if buf.len() < nc { bg.row_max(i) } else { f32::NEG_INFINITY };
                heap.finish(bg_max)
            },
        )
        .collect();
    CandidateGraph::from_rows(nc, rows)
}

/// Exact row `i` candidates, keeping the top `m` (used to enlarge a row after a
/// failed certificate).
pub(crate) fn row_candidates(oracle: &dyn SimilarityOracle, i: usize, m: usize, sc: &mut RowScratch) -> RowCandidates {
    let mut buf = Vec::new();
    oracle.row_entries(i, sc, &mut buf);
    let mut heap = TopM::new(m);
    heap.clear(i);
    for &(j, v) in &buf {
        heap.push(v, j);
    }
    let bg_max = if buf.len() < oracle.n_cols() { oracle.background().row_max(i) } else { f32::NEG_INFINITY };
    heap.finish(bg_max)
}

/// The full similarity matrix (n_rows x n_cols, row-major f32); only for sizes that fit
/// a memory budget.
pub fn dense_matrix(oracle: &dyn SimilarityOracle) -> Vec<f32> {
    let (nr, nc) = (oracle.n_rows(), oracle.n_cols());
    let mut m = vec![0f32; nr * nc];
    let bg = oracle.background();
    if nc == 0 {
        return m;
    }
    m.par_chunks_mut(nc).enumerate().for_each_init(
        || (RowScratch::default(), Vec::new()),
        |(sc, buf), (i, row)| {
            for (j, x) in row.iter_mut().enumerate() {
                *x = bg.value(i, j);
            }
            buf.clear();
            oracle.row_entries(i, sc, buf);
            for &(j, v) in buf.iter() {
                row[j as usize] = v;
            }
        },
    );
    m
}

/// An explicit dense similarity matrix as an oracle (for small problems and tests).
/// With `zero_background`, rows list only their non-zero entries and the remaining
/// columns are the exact-zero background, as for activation similarities.
#[derive(Debug, Clone)]
pub struct MatrixOracle {
    /// Rows.
    pub n_rows: usize,
    /// Columns.
    pub n_cols: usize,
    /// `n_rows * n_cols` similarities, row-major.
    pub data: Vec<f32>,
    /// Treat zeros as the [`Background::Zero`] instead of listing them.
    pub zero_background: bool,
}

impl MatrixOracle {
    /// Checks that `data` holds `n_rows * n_cols` values.
    pub fn new(n_rows: usize, n_cols: usize, data: Vec<f32>, zero_background: bool) -> Result<Self> {
        if data.len() != n_rows * n_cols {
            return Err(Error::MatrixShape { rows: n_rows, cols: n_cols, expected: n_rows * n_cols, got: data.len() });
        }
        Ok(Self { n_rows, n_cols, data, zero_background })
    }

    /// The same problem with rows and columns swapped.
    pub fn transposed(&self) -> Self {
        let (nr, nc) = (self.n_rows, self.n_cols);
        let mut t = vec![0f32; nr * nc];
        for i in 0..nr {
            for j in 0..nc {
                t[j * nr + i] = self.data[i * nc + j];
            }
        }
        Self { n_rows: nc, n_cols: nr, data: t, zero_background: self.zero_background }
    }
}

impl SimilarityOracle for MatrixOracle {
    fn n_rows(&self) -> usize {
        self.n_rows
    }
    fn n_cols(&self) -> usize {
        self.n_cols
    }
    fn row_entries(&self, i: usize, _sc: &mut RowScratch, out: &mut Vec<(u32, f32)>) {
        let row = &self.data[i * self.n_cols..(i + 1) * self.n_cols];
        for (j, &x) in row.iter().enumerate() {
            if !self.zero_background || x != 0.0 {
                out.push((j as u32, x));
            }
        }
    }
    fn background(&self) -> Background<'_> {
        if self.zero_background { Background::Zero } else { Background::None }
    }
    fn pair(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.n_cols + j]
    }
}
