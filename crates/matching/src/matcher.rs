//! End-to-end matching of two SAEs: stats and dead features, similarity, assignment.

use crate::assignment::{SparseOptions, solve_dense_max, solve_sparse_certified};
use crate::similarity::{
    self, ActivationOracle, DenseCosineOracle, DenseWeights, SimilarityKind, SimilarityOracle, live_features,
};
use crate::sparse::{CsrActivations, FeatureStats};
use crate::{Error, Result};

/// How the assignment is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Dense when the similarity matrix fits `dense_budget_bytes` and the smaller side
    /// is at most `dense_max_n`, sparse otherwise.
    Auto,
    /// Dense f32 similarity matrix + dense solver (exact, no certificate needed).
    Dense,
    /// Top-m candidate graph + sparse solver + certificate.
    Sparse,
}

/// Settings of [`match_features`]; the defaults suit SAEs of up to ~100k features.
#[derive(Debug, Clone)]
pub struct MatchConfig {
    /// Which similarity between features is maximized.
    pub kind: SimilarityKind,
    /// Dense or sparse assignment (or chosen by size).
    pub strategy: Strategy,
    /// Candidates kept per feature in the sparse path (at least 1).
    pub top_m: usize,
    /// Largest dense similarity matrix (f32, live rows x live columns) `Auto` builds, in bytes.
    pub dense_budget_bytes: u64,
    /// The dense solver is O(n^3) in the worst case; above this size Auto goes sparse.
    pub dense_max_n: usize,
    /// See [`SparseOptions::max_rounds`].
    pub max_rounds: usize,
    /// See [`SparseOptions::tol`].
    pub tol: f64,
    /// Rows of the decoder/encoder similarity materialized per thread at a time.
    pub gemm_block_rows: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            kind: SimilarityKind::Activations,
            strategy: Strategy::Auto,
            top_m: 32,
            dense_budget_bytes: 1 << 30,
            dense_max_n: 2048,
            max_rounds: 6,
            tol: 1e-6,
            gemm_block_rows: 256,
        }
    }
}

/// What is known about one SAE. Activations (over the same tokens for both SAEs) are
/// needed for `activations`/`pearson` and, when given, define dead features for every
/// kind; `w_dec` (`[d_sae, d_in]`) for `decoder`; `w_enc` (`[d_in, d_sae]`) for `encoder`.
#[derive(Debug, Clone, Copy)]
pub struct SaeInputs<'a> {
    /// Name used in error messages.
    pub name: &'a str,
    /// Feature activations over the token sample (the same tokens for both SAEs).
    pub acts: Option<&'a CsrActivations>,
    /// Decoder weights, one row of `d_in` per feature.
    pub w_dec: Option<DenseWeights<'a>>,
    /// Encoder weights, one column of `d_in` per feature.
    pub w_enc: Option<DenseWeights<'a>>,
}

/// Matching of reference SAE A onto SAE B.
#[derive(Debug, Clone)]
pub struct MatchResult {
    /// The similarity that was maximized.
    pub kind: SimilarityKind,
    /// "dense" or "sparse".
    pub method: &'static str,
    /// Features (`d_sae`) of SAE A.
    pub n_features_a: usize,
    /// Features (`d_sae`) of SAE B.
    pub n_features_b: usize,
    /// Per-feature statistics of A, when its activations were given.
    pub stats_a: Option<Vec<FeatureStats>>,
    /// Per-feature statistics of B, when its activations were given.
    pub stats_b: Option<Vec<FeatureStats>>,
    /// Features of A that never fire on the sample; they are excluded from matching
    /// (all false without activations).
    pub dead_a: Vec<bool>,
    /// Dead features of B, as for `dead_a`.
    pub dead_b: Vec<bool>,
    /// Matched B feature of each A feature (None: dead, or unmatched because B has
    /// fewer live features).
    pub a_to_b: Vec<Option<u32>>,
    /// Similarity of each A feature's matched pair.
    pub similarity: Vec<Option<f32>>,
    /// Sum of the matched pairs' similarities.
    pub total: f64,
    /// Upper bound on the optimal total from the duals (equals `total` when certified).
    pub dual_bound: f64,
    /// The assignment is proven optimal over the full similarity matrix.
    pub certified: bool,
    /// Assignment solves run (1 for the dense path).
    pub solves: usize,
    /// Rows whose candidate lists the sparse path had to enlarge.
    pub enlarged_rows: usize,
    /// Similarities the solver saw: candidate edges (sparse) or rows x columns (dense).
    pub candidate_edges: usize,
}

fn side_stats(s: &SaeInputs<'_>, n_features: usize) -> Result<Option<Vec<FeatureStats>>> {
    match s.acts {
        Some(a) if a.n_features != n_features => Err(Error::InvalidActivations {
            name: s.name.to_string(),
            msg: format!("{} features in activations but {n_features} in the weights", a.n_features),
        }),
        Some(a) => Ok(Some(a.feature_stats())),
        None => Ok(None),
    }
}

fn n_features_of(s: &SaeInputs<'_>, kind: SimilarityKind, side: char) -> Result<usize> {
    let kname = kind.name();
    match kind {
        SimilarityKind::Activations | SimilarityKind::Pearson => {
            s.acts.map(|a| a.n_features).ok_or(Error::MissingInput { kind: kname, needs: "activations", side })
        }
        SimilarityKind::Decoder => {
            s.w_dec.map(|w| w.n_features).ok_or(Error::MissingInput { kind: kname, needs: "W_dec", side })
        }
        SimilarityKind::Encoder => {
            s.w_enc.map(|w| w.n_features).ok_or(Error::MissingInput { kind: kname, needs: "W_enc", side })
        }
    }
}

/// Matches the features of `a` (reference) onto `b`, maximizing total similarity
/// one-to-one over live features.
pub fn match_features(a: &SaeInputs<'_>, b: &SaeInputs<'_>, cfg: &MatchConfig) -> Result<MatchResult> {
    if cfg.top_m == 0 {
        return Err(Error::Config("top_m must be at least 1".into()));
    }
    let na = n_features_of(a, cfg.kind, 'A')?;
    let nb = n_features_of(b, cfg.kind, 'B')?;
    match (a.acts, b.acts) {
        (Some(x), Some(y)) if x.n_tokens != y.n_tokens => {
            return Err(Error::Mismatch { what: "number of tokens".into(), a: x.n_tokens, b: y.n_tokens });
        }
        _ => {}
    }
    let stats_a = side_stats(a, na)?;
    let stats_b = side_stats(b, nb)?;
    let dead = |st: &Option<Vec<FeatureStats>>, n: usize| match st {
        Some(s) => s.iter().map(|x| x.is_dead()).collect(),
        None => vec![false; n],
    };
    let (dead_a, dead_b): (Vec<bool>, Vec<bool>) = (dead(&stats_a, na), dead(&stats_b, nb));
    let live = |d: &[bool]| -> Vec<u32> { (0..d.len() as u32).filter(|&f| !d[f as usize]).collect() };
    let (live_a, live_b) = (live(&dead_a), live(&dead_b));
    // The solvers assign every row: put the side with fewer live features on the rows.
    let swap = live_a.len() > live_b.len();
    let (rs, cs) = if swap { (b, a) } else { (a, b) };
    let (r_stats, c_stats) = if swap { (&stats_b, &stats_a) } else { (&stats_a, &stats_b) };
    let (r_live, c_live) = if swap { (&live_b, &live_a) } else { (&live_a, &live_b) };

    let r_csc;
    let c_csc;
    let dense_box;
    let oracle: Box<dyn SimilarityOracle + '_>;
    let mut dense_oracle: Option<&DenseCosineOracle> = None;
    match cfg.kind {
        SimilarityKind::Activations | SimilarityKind::Pearson => {
            let (ra, ca) = (rs.acts.expect("checked"), cs.acts.expect("checked"));
            r_csc = ra.to_csc();
            c_csc = ca.to_csc();
            let (rst, cst) = (r_stats.as_ref().expect("acts given"), c_stats.as_ref().expect("acts given"));
            debug_assert_eq!(&live_features(rst), r_live);
            oracle = Box::new(ActivationOracle::new(cfg.kind, &r_csc, rst, ca, &c_csc, cst)?);
        }
        SimilarityKind::Decoder | SimilarityKind::Encoder => {
            let dec = cfg.kind == SimilarityKind::Decoder;
            let (rw, cw) = if dec { (rs.w_dec, cs.w_dec) } else { (rs.w_enc, cs.w_enc) };
            let (rw, cw) = (rw.expect("checked"), cw.expect("checked"));
            dense_box = DenseCosineOracle::new(rw, r_live.clone(), cw, c_live.clone())?;
            dense_oracle = Some(&dense_box);
            oracle = Box::new(DenseRef(&dense_box));
        }
    }
    let (nr, nc) = (oracle.n_rows(), oracle.n_cols());
    let use_dense = match cfg.strategy {
        Strategy::Dense => true,
        Strategy::Sparse => false,
        Strategy::Auto => (nr as u64) * (nc as u64) * 4 <= cfg.dense_budget_bytes && nr <= cfg.dense_max_n,
    };
    // (row, column, similarity) of each assigned pair.
    let pairs: Vec<(usize, usize, f32)>;
    let (total, dual_bound, certified, solves, enlarged, edges): (f64, f64, bool, usize, usize, usize);
    if use_dense {
        let m = similarity::dense_matrix(oracle.as_ref());
        let sol = solve_dense_max(&m, nr, nc)?;
        pairs = sol
            .row_to_col
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|j| (i, j as usize, m[i * nc + j as usize])))
            .collect();
        total = sol.total;
        dual_bound = sol.u.iter().sum::<f64>() + sol.v.iter().sum::<f64>();
        (certified, solves, enlarged, edges) = (true, 1, 0, nr * nc);
    } else {
        let graph = match dense_oracle {
            Some(d) => d.candidate_graph(cfg.top_m, cfg.gemm_block_rows),
            None => similarity::candidate_graph(oracle.as_ref(), cfg.top_m),
        };
        let opts = SparseOptions { top_m: cfg.top_m, max_rounds: cfg.max_rounds, tol: cfg.tol, ..Default::default() };
        let sol = solve_sparse_certified(oracle.as_ref(), graph, &opts)?;
        pairs = sol
            .row_to_col
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|j| (i, j as usize, sol.pair_sims[i])))
            .collect();
        (total, dual_bound, certified, solves, enlarged, edges) =
            (sol.total, sol.dual_bound, sol.certified, sol.solves, sol.enlarged_rows, sol.graph.n_edges());
    }
    let mut a_to_b = vec![None; na];
    let mut similarity = vec![None; na];
    for (i, j, s) in pairs {
        let (fr, fc) = (r_live[i] as usize, c_live[j] as usize);
        let (fa, fb) = if swap { (fc, fr) } else { (fr, fc) };
        a_to_b[fa] = Some(fb as u32);
        similarity[fa] = Some(s);
    }
    Ok(MatchResult {
        kind: cfg.kind,
        method: if use_dense { "dense" } else { "sparse" },
        n_features_a: na,
        n_features_b: nb,
        stats_a,
        stats_b,
        dead_a,
        dead_b,
        a_to_b,
        similarity,
        total,
        dual_bound,
        certified,
        solves,
        enlarged_rows: enlarged,
        candidate_edges: edges,
    })
}

/// Borrowing adapter so the dense oracle can be used both as a trait object and for
/// its GEMM candidate path.
struct DenseRef<'a>(&'a DenseCosineOracle);

impl SimilarityOracle for DenseRef<'_> {
    fn n_rows(&self) -> usize {
        self.0.n_rows()
    }
    fn n_cols(&self) -> usize {
        self.0.n_cols()
    }
    fn row_entries(&self, i: usize, sc: &mut similarity::RowScratch, out: &mut Vec<(u32, f32)>) {
        self.0.row_entries(i, sc, out)
    }
    fn background(&self) -> similarity::Background<'_> {
        self.0.background()
    }
    fn pair(&self, i: usize, j: usize) -> f32 {
        self.0.pair(i, j)
    }
}
