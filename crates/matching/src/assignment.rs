//! Exact one-to-one assignment maximizing total similarity.
//!
//! Both solvers are shortest-augmenting-path (Jonker–Volgenant style) solvers that
//! keep dual potentials: each free row is added by a Dijkstra search over reduced
//! costs, potentials are updated from the search distances, and the path is flipped.
//! The dense one scans full rows (O(n) per step); the sparse one runs on a candidate
//! graph with a binary heap and is followed by a certificate checked against the
//! full (implicit) similarity matrix.

use crate::similarity::{Background, CandidateGraph, RowCandidates, RowScratch, SimilarityOracle, row_candidates};
use crate::{Error, Result};
use rayon::prelude::*;
use std::collections::BinaryHeap;

const NONE: u32 = u32::MAX;

/// Result of the dense solver. Duals are in the maximization sense:
/// `u[i] + v[j] >= sim[i][j]` for all pairs, with equality on assigned pairs.
#[derive(Debug, Clone)]
pub struct DenseSolution {
    /// Column of each row (`None` only for rows left over when `n_rows > n_cols`).
    pub row_to_col: Vec<Option<u32>>,
    /// Total similarity of the assignment.
    pub total: f64,
    /// Row duals.
    pub u: Vec<f64>,
    /// Column duals.
    pub v: Vec<f64>,
}

/// Maximizes the total similarity of a one-to-one assignment on a dense row-major
/// `n_rows x n_cols` matrix. With `n_rows <= n_cols` every row is assigned, otherwise
/// every column is (the same problem as `scipy.optimize.linear_sum_assignment(maximize=True)`).
pub fn solve_dense_max(sim: &[f32], n_rows: usize, n_cols: usize) -> Result<DenseSolution> {
    if sim.len() != n_rows * n_cols {
        return Err(Error::MatrixShape { rows: n_rows, cols: n_cols, expected: n_rows * n_cols, got: sim.len() });
    }
    if let Some(k) = sim.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite { row: k / n_cols, col: k % n_cols, value: sim[k] as f64 });
    }
    if n_rows <= n_cols {
        let (c4r, u, v) = sap_dense(n_rows, n_cols, |i, j| -(sim[i * n_cols + j] as f64));
        let total = c4r.iter().enumerate().map(|(i, &j)| sim[i * n_cols + j as usize] as f64).sum();
        Ok(DenseSolution {
            row_to_col: c4r.into_iter().map(Some).collect(),
            total,
            u: u.into_iter().map(|x| -x).collect(),
            v: v.into_iter().map(|x| -x).collect(),
        })
    } else {
        // Solve the transpose so the search always runs over the smaller side.
        let (c4r, u, v) = sap_dense(n_cols, n_rows, |j, i| -(sim[i * n_cols + j] as f64));
        let mut row_to_col = vec![None; n_rows];
        let mut total = 0.0;
        for (j, &i) in c4r.iter().enumerate() {
            row_to_col[i as usize] = Some(j as u32);
            total += sim[i as usize * n_cols + j] as f64;
        }
        Ok(DenseSolution {
            row_to_col,
            total,
            u: v.into_iter().map(|x| -x).collect(),
            v: u.into_iter().map(|x| -x).collect(),
        })
    }
}

/// Min-cost SAP on an implicit dense matrix, `nr <= nc`. Returns the column of each row
/// and min-sense potentials (reduced cost `c - u - v >= 0`).
fn sap_dense(nr: usize, nc: usize, cost: impl Fn(usize, usize) -> f64) -> (Vec<u32>, Vec<f64>, Vec<f64>) {
    let mut u = vec![0f64; nr];
    let mut v = vec![0f64; nc];
    let mut col4row = vec![NONE; nr];
    let mut row4col = vec![NONE; nc];
    let mut spc = vec![f64::INFINITY; nc];
    let mut path = vec![NONE; nc];
    let mut sr = vec![false; nr];
    let mut scn = vec![false; nc];
    let mut remaining: Vec<u32> = Vec::with_capacity(nc);
    for cur in 0..nr {
        remaining.clear();
        // Reverse order so that ties favour low column ids when swap-removing.
        remaining.extend((0..nc as u32).rev());
        spc.fill(f64::INFINITY);
        sr.fill(false);
        scn.fill(false);
        let mut min_val = 0f64;
        let mut i = cur;
        let sink = loop {
            sr[i] = true;
            let mut lowest = f64::INFINITY;
            let mut index = usize::MAX;
            let ui = u[i];
            for (it, &jj) in remaining.iter().enumerate() {
                let j = jj as usize;
                let r = min_val + cost(i, j) - ui - v[j];
                if r < spc[j] {
                    path[j] = i as u32;
                    spc[j] = r;
                }
                if spc[j] < lowest || (spc[j] == lowest && row4col[j] == NONE) {
                    lowest = spc[j];
                    index = it;
                }
            }
            min_val = lowest;
            let j = remaining.swap_remove(index) as usize;
            scn[j] = true;
            if row4col[j] == NONE {
                break j;
            }
            i = row4col[j] as usize;
        };
        u[cur] += min_val;
        for k in 0..nr {
            if sr[k] && k != cur {
                u[k] += min_val - spc[col4row[k] as usize];
            }
        }
        for j in 0..nc {
            if scn[j] {
                v[j] -= min_val - spc[j];
            }
        }
        let mut j = sink;
        loop {
            let i = path[j] as usize;
            row4col[j] = i as u32;
            let prev = col4row[i];
            col4row[i] = j as u32;
            if i == cur {
                break;
            }
            j = prev as usize;
        }
    }
    (col4row, u, v)
}

/// Options of the certified sparse solver.
#[derive(Debug, Clone)]
pub struct SparseOptions {
    /// Candidates kept per row initially (also the minimum when a row is enlarged).
    pub top_m: usize,
    /// Maximum number of enlarge-and-resolve rounds after the first solve.
    pub max_rounds: usize,
    /// Absolute tolerance of the dual feasibility check; the primal/dual gap tolerance
    /// is `tol * max(1, |dual|)`.
    pub tol: f64,
    /// Rows left on their zero-similarity fallback are completed with a dense solve on
    /// the exact leftover block when it has at most this many entries, else in order.
    pub completion_max_entries: usize,
}

impl Default for SparseOptions {
    fn default() -> Self {
        Self { top_m: 32, max_rounds: 6, tol: 1e-6, completion_max_entries: 1 << 24 }
    }
}

/// Result of the certified sparse solver (maximization-sense duals over real columns).
#[derive(Debug, Clone)]
pub struct SparseSolution {
    /// Column of each row; every row is assigned (`n_rows <= n_cols`).
    pub row_to_col: Vec<Option<u32>>,
    /// Exact similarity of each row's assigned pair.
    pub pair_sims: Vec<f32>,
    /// Total exact similarity of the assignment.
    pub total: f64,
    /// Dual objective `sum u + sum v`: an upper bound on the optimum whenever the duals
    /// are feasible.
    pub dual_bound: f64,
    /// The duals are feasible for the FULL similarity matrix and `total == dual_bound`
    /// (within tolerance): the assignment is optimal.
    pub certified: bool,
    /// Number of solves performed (1 = no enlargement needed).
    pub solves: usize,
    /// Rows whose candidate list was enlarged by the certificate loop.
    pub enlarged_rows: usize,
    /// Dual violations found by the last check.
    pub violations: usize,
    /// Rows that the last solve left on the zero-similarity fallback (completed afterwards).
    pub fallback_rows: usize,
    /// Row duals.
    pub u: Vec<f64>,
    /// Column duals.
    pub v: Vec<f64>,
    /// Per solve: candidate edges, seconds in the augmenting-path solve, seconds in
    /// completion + certificate check, violations found.
    pub rounds: Vec<RoundStats>,
    /// The candidate graph of the last solve.
    pub graph: CandidateGraph,
}

/// Statistics of one solve of the certificate loop.
#[derive(Debug, Clone, Copy)]
pub struct RoundStats {
    /// Candidate edges the solve ran on.
    pub edges: usize,
    /// Seconds in the augmenting-path solve.
    pub solve_seconds: f64,
    /// Seconds in completion and the certificate check.
    pub check_seconds: f64,
    /// Dual violations the check found.
    pub violations: usize,
}

#[derive(PartialEq)]
struct HeapItem {
    d: f64,
    assigned: bool,
    j: u32,
}
impl Eq for HeapItem {}
impl Ord for HeapItem {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the smallest distance (then free
        // columns, then low ids) pops first.
        o.d.total_cmp(&self.d).then(o.assigned.cmp(&self.assigned)).then(o.j.cmp(&self.j))
    }
}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Min-cost shortest-augmenting-path state on a candidate graph. Every row `i` also has
/// a private dummy column `n_cols + i` at similarity 0, so every row is always
/// assignable and a full solve computes a maximum-weight matching of the candidate
/// graph. Potentials are min-sense (`cost - u - v >= 0` on every edge of an assigned
/// row, tight on assigned edges, `v <= 0`, and `v = 0` on free columns).
struct Sap {
    nc: usize,
    u: Vec<f64>,
    v: Vec<f64>,
    col4row: Vec<u32>,
    row4col: Vec<u32>,
}

impl Sap {
    fn new(nr: usize, nc: usize) -> Self {
        Self { nc, u: vec![0.0; nr], v: vec![0.0; nc + nr], col4row: vec![NONE; nr], row4col: vec![NONE; nc + nr] }
    }

    /// Frees `rows` (whose edges changed) for re-insertion, keeping every other
    /// assignment: a freed column's potential is reset to 0, and any assigned row that
    /// this makes dual-infeasible is freed too (transitively).
    fn release(&mut self, g: &CandidateGraph, rows: &[usize]) -> Vec<u32> {
        let nc = self.nc;
        // Column -> (row, similarity) adjacency of the candidate graph.
        let mut ptr = vec![0usize; nc + 1];
        for &j in &g.cols {
            ptr[j as usize + 1] += 1;
        }
        for j in 0..nc {
            ptr[j + 1] += ptr[j];
        }
        let mut next = ptr[..nc].to_vec();
        let mut adj = vec![(0u32, 0f32); g.cols.len()];
        for i in 0..g.n_rows {
            let (cols, sims) = g.row(i);
            for (&j, &s) in cols.iter().zip(sims) {
                adj[next[j as usize]] = (i as u32, s);
                next[j as usize] += 1;
            }
        }
        let mut released = vec![false; g.n_rows];
        let mut out = Vec::new();
        let mut queue: Vec<u32> = Vec::new();
        let mut free_row = |i: usize, sap: &mut Sap, out: &mut Vec<u32>, queue: &mut Vec<u32>| {
            if released[i] {
                return;
            }
            released[i] = true;
            out.push(i as u32);
            let j = sap.col4row[i];
            if j != NONE {
                sap.col4row[i] = NONE;
                sap.row4col[j as usize] = NONE;
                if sap.v[j as usize] != 0.0 {
                    sap.v[j as usize] = 0.0;
                    queue.push(j);
                }
            }
        };
        for &i in rows {
            free_row(i, self, &mut out, &mut queue);
        }
        while let Some(j) = queue.pop() {
            let j = j as usize;
            if j >= nc {
                continue; // a dummy column only belongs to its own (already freed) row
            }
            for &(k, s) in &adj[ptr[j]..ptr[j + 1]] {
                let k = k as usize;
                if self.col4row[k] != NONE && -(s as f64) - self.u[k] - self.v[j] < -1e-12 {
                    free_row(k, self, &mut out, &mut queue);
                }
            }
        }
        out
    }

    /// Inserts the free `rows` one augmenting path at a time.
    fn augment(&mut self, g: &CandidateGraph, rows: &[u32]) {
        let nc = self.nc;
        let ncol = self.v.len();
        let Sap { u, v, col4row, row4col, .. } = self;
        let mut dist = vec![f64::INFINITY; ncol];
        let mut path = vec![NONE; ncol];
        let mut scanned = vec![false; ncol];
        let mut touched: Vec<u32> = Vec::new();
        let mut sr: Vec<u32> = Vec::new();
        let mut sc: Vec<u32> = Vec::new();
        let mut heap: BinaryHeap<HeapItem> = BinaryHeap::new();
        // Rows with the strongest best candidate go first: they mostly get their first
        // choice, and the weaker rows that contend later lose less, which keeps the
        // Dijkstra searches (bounded by the path length) small.
        let mut order = rows.to_vec();
        order.sort_by(|&a, &b| g.row_max[b as usize].total_cmp(&g.row_max[a as usize]).then(a.cmp(&b)));
        for &cur in &order {
            let cur = cur as usize;
            let mut min_val = 0f64;
            let mut i = cur;
            let sink = loop {
                sr.push(i as u32);
                let ui = u[i];
                let (cols, sims) = g.row(i);
                let edges = cols.iter().map(|&j| j as usize).zip(sims.iter().map(|&s| -(s as f64)));
                for (j, cost) in edges.chain(std::iter::once((nc + i, 0.0))) {
                    if scanned[j] {
                        continue;
                    }
                    let r = min_val + cost - ui - v[j];
                    if r < dist[j] {
                        if dist[j] == f64::INFINITY {
                            touched.push(j as u32);
                        }
                        dist[j] = r;
                        path[j] = i as u32;
                        heap.push(HeapItem { d: r, assigned: row4col[j] != NONE, j: j as u32 });
                    }
                }
                let j = loop {
                    // The private dummy column is always reachable, so the heap cannot run dry.
                    let it = heap.pop().expect("augmenting search ran out of columns");
                    let j = it.j as usize;
                    if !scanned[j] && it.d <= dist[j] {
                        break j;
                    }
                };
                min_val = dist[j];
                scanned[j] = true;
                sc.push(j as u32);
                if row4col[j] == NONE {
                    break j;
                }
                i = row4col[j] as usize;
            };
            u[cur] += min_val;
            for &k in &sr {
                let k = k as usize;
                if k != cur {
                    u[k] += min_val - dist[col4row[k] as usize];
                }
            }
            for &j in &sc {
                v[j as usize] -= min_val - dist[j as usize];
            }
            let mut j = sink;
            loop {
                let i = path[j] as usize;
                row4col[j] = i as u32;
                let prev = col4row[i];
                col4row[i] = j as u32;
                if i == cur {
                    break;
                }
                j = prev as usize;
            }
            for &j in &touched {
                dist[j as usize] = f64::INFINITY;
                scanned[j as usize] = false;
            }
            touched.clear();
            sr.clear();
            sc.clear();
            heap.clear();
        }
    }
}

/// Solves the assignment on a candidate graph, then certifies it against the full
/// similarity matrix of `oracle`: the duals must satisfy `u_i + v_j >= sim_ij` for EVERY
/// pair (listed, truncated or background) and `v_j >= 0`, and the exact total must equal
/// `sum u + sum v`. By weak duality that proves no one-to-one assignment of all rows
/// scores higher. Rows with violated pairs get their exact candidate list enlarged
/// (doubled, plus every violating pair) and the problem is solved again.
///
/// Requires `n_rows <= n_cols`. For similarities that are never negative (activation
/// cosine) a failure can always be repaired by enlarging; where unlisted similarities
/// can be negative (Pearson background, decoder cosines) rows left on the fallback may
/// leave a primal/dual gap, which is reported as `certified = false`.
pub fn solve_sparse_certified(
    oracle: &dyn SimilarityOracle,
    mut graph: CandidateGraph,
    opts: &SparseOptions,
) -> Result<SparseSolution> {
    let (nr, nc) = (oracle.n_rows(), oracle.n_cols());
    if nr > nc {
        return Err(Error::Config(format!(
            "sparse solver needs n_rows <= n_cols (got {nr} x {nc}); swap the two sides"
        )));
    }
    if graph.n_rows != nr || graph.n_cols != nc {
        return Err(Error::Config(format!(
            "candidate graph is {} x {} but the similarity oracle is {nr} x {nc}",
            graph.n_rows, graph.n_cols
        )));
    }
    if let Some(k) = graph.sims.iter().position(|x| !x.is_finite()) {
        let row = graph.row_ptr.partition_point(|&p| p <= k) - 1;
        return Err(Error::NonFinite { row, col: graph.cols[k] as usize, value: graph.sims[k] as f64 });
    }
    let mut solves = 0;
    let mut enlarged = vec![false; nr];
    let mut rounds = Vec::new();
    let mut sap = Sap::new(nr, nc);
    let mut pending: Vec<u32> = (0..nr as u32).collect();
    loop {
        solves += 1;
        let t0 = std::time::Instant::now();
        // After the first solve only the released rows are re-inserted (warm start).
        sap.augment(&graph, &pending);
        let (c4r, umin, vmin) = (&sap.col4row, &sap.u, &sap.v);
        let solve_seconds = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let mut u: Vec<f64> = umin.iter().map(|x| -x).collect();
        let v: Vec<f64> = vmin[..nc].iter().map(|x| -x).collect();
        let mut row_to_col: Vec<Option<u32>> = vec![None; nr];
        let mut pair_sims = vec![0f32; nr];
        let mut fallback = Vec::new();
        for i in 0..nr {
            let j = c4r[i] as usize;
            if j < nc {
                row_to_col[i] = Some(j as u32);
                let (cols, sims) = graph.row(i);
                let k = cols.iter().position(|&c| c as usize == j).expect("assigned edge is listed");
                pair_sims[i] = sims[k];
            } else {
                fallback.push(i);
                // A fallback row's dual is <= 0 (tight against its zero dummy); raising it
                // to 0 keeps every listed constraint and makes sum u + sum v equal the
                // listed total, since unassigned real columns keep v = 0.
                u[i] = u[i].max(0.0);
            }
        }
        complete_fallback(oracle, &fallback, &mut row_to_col, &mut pair_sims, opts.completion_max_entries);
        let total: f64 = pair_sims.iter().map(|&s| s as f64).sum();
        let dual_bound: f64 = u.iter().sum::<f64>() + v.iter().sum::<f64>();
        let violations = check_duals(oracle, &graph, &u, &v, opts.tol);
        // Column duals must be >= 0 (columns may stay unassigned); the solver keeps them
        // so, and a negative one is counted as a violation that enlarging cannot fix.
        let neg_v = v.iter().filter(|&&x| x < -opts.tol).count();
        let n_viol: usize = violations.iter().map(|(_, p)| p.len()).sum::<usize>() + neg_v;
        let gap_ok = (dual_bound - total).abs() <= opts.tol * dual_bound.abs().max(1.0);
        let certified = n_viol == 0 && gap_ok;
        rounds.push(RoundStats {
            edges: graph.n_edges(),
            solve_seconds,
            check_seconds: t1.elapsed().as_secs_f64(),
            violations: n_viol,
        });
        if certified || n_viol == neg_v || solves > opts.max_rounds {
            return Ok(SparseSolution {
                row_to_col,
                pair_sims,
                total,
                dual_bound,
                certified,
                solves,
                enlarged_rows: enlarged.iter().filter(|&&e| e).count(),
                violations: n_viol,
                fallback_rows: fallback.len(),
                u,
                v,
                rounds,
                graph,
            });
        }
        // Enlarge every violating row with its exact similarities and resolve.
        let mut rows: Vec<RowCandidates> = (0..nr).map(|i| graph.row_candidates(i)).collect();
        let updates: Vec<(usize, RowCandidates)> = violations
            .into_par_iter()
            .map_init(RowScratch::default, |sc, (i, mut viol)| {
                let m = (2 * rows[i].entries.len()).max(opts.top_m).max(1);
                let mut rc = row_candidates(oracle, i, m, sc);
                // Add the most violated pairs, not all of them: a row left on its
                // fallback violates against every cheap column, and listing them all
                // would make the next solve slow; further rounds add more if needed.
                let slack = |&(j, s): &(u32, f32)| s as f64 - u[i] - v[j as usize];
                viol.sort_unstable_by(|a, b| slack(b).total_cmp(&slack(a)).then(a.0.cmp(&b.0)));
                viol.truncate(m);
                for (j, s) in viol {
                    if !rc.entries.iter().any(|&(c, _)| c == j) {
                        rc.entries.push((j, s));
                    }
                }
                (i, rc)
            })
            .collect();
        let changed: Vec<usize> = updates.iter().map(|(i, _)| *i).collect();
        for (i, rc) in updates {
            enlarged[i] = true;
            rows[i] = rc;
        }
        graph = CandidateGraph::from_rows(nc, rows);
        pending = sap.release(&graph, &changed);
    }
}

/// Assigns rows left on the fallback to still-free real columns, using exact similarities.
fn complete_fallback(
    oracle: &dyn SimilarityOracle,
    fallback: &[usize],
    row_to_col: &mut [Option<u32>],
    pair_sims: &mut [f32],
    max_entries: usize,
) {
    if fallback.is_empty() {
        return;
    }
    let nc = oracle.n_cols();
    let mut used = vec![false; nc];
    for j in row_to_col.iter().flatten() {
        used[*j as usize] = true;
    }
    let free: Vec<u32> = (0..nc as u32).filter(|&j| !used[j as usize]).collect();
    let (k, f) = (fallback.len(), free.len());
    if k * f <= max_entries {
        let mut pos = vec![u32::MAX; nc];
        for (q, &j) in free.iter().enumerate() {
            pos[j as usize] = q as u32;
        }
        let bg = oracle.background();
        let mut block = vec![0f32; k * f];
        block.par_chunks_mut(f).zip(fallback.par_iter()).for_each_init(
            || (RowScratch::default(), Vec::new()),
            |(sc, buf), (row, &i)| {
                for (q, x) in row.iter_mut().enumerate() {
                    *x = bg.value(i, free[q] as usize);
                }
                buf.clear();
                oracle.row_entries(i, sc, buf);
                for &(j, s) in buf.iter() {
                    let q = pos[j as usize];
                    if q != u32::MAX {
                        row[q as usize] = s;
                    }
                }
            },
        );
        let sol = solve_dense_max(&block, k, f).expect("finite completion block");
        for (r, &i) in fallback.iter().enumerate() {
            let q = sol.row_to_col[r].expect("k <= f") as usize;
            row_to_col[i] = Some(free[q]);
            pair_sims[i] = block[r * f + q];
        }
    } else {
        for (r, &i) in fallback.iter().enumerate() {
            row_to_col[i] = Some(free[r]);
            pair_sims[i] = oracle.pair(i, free[r] as usize);
        }
    }
}

/// Dual feasibility over the full matrix. Returns, per violating row, the violating
/// (column, exact similarity) pairs.
fn check_duals(
    oracle: &dyn SimilarityOracle,
    g: &CandidateGraph,
    u: &[f64],
    v: &[f64],
    tol: f64,
) -> Vec<(usize, Vec<(u32, f32)>)> {
    let nc = g.n_cols;
    let bg = oracle.background();
    // Columns by increasing v: the cheapest columns to violate come first.
    let mut v_order: Vec<u32> = (0..nc as u32).collect();
    v_order.sort_unstable_by(|&a, &b| v[a as usize].total_cmp(&v[b as usize]));
    let v_min = v_order.first().map_or(0.0, |&j| v[j as usize]);
    (0..g.n_rows)
        .into_par_iter()
        .map_init(
            || (RowScratch::default(), Vec::new()),
            |(sc, buf), i| {
                let ui = u[i];
                let mut viol = Vec::new();
                let (cols, sims) = g.row(i);
                for (&j, &s) in cols.iter().zip(sims) {
                    if ui + v[j as usize] + tol < s as f64 {
                        viol.push((j, s));
                    }
                }
                let bound = g.bound[i];
                if bound == f32::NEG_INFINITY || ui + v_min + tol >= bound as f64 {
                    return (i, viol);
                }
                // The cheap bound is not enough: check the exact row.
                buf.clear();
                oracle.row_entries(i, sc, buf);
                for &(j, s) in buf.iter() {
                    if ui + v[j as usize] + tol < s as f64 && !viol.iter().any(|&(c, _)| c == j) {
                        viol.push((j, s));
                    }
                }
                if buf.len() < nc {
                    let mut listed: Vec<u32> = buf.iter().map(|&(j, _)| j).collect();
                    listed.sort_unstable();
                    let is_listed = |j: u32| listed.binary_search(&j).is_ok();
                    match bg {
                        Background::None => {}
                        Background::Zero => {
                            for &j in &v_order {
                                if ui + v[j as usize] + tol >= 0.0 {
                                    break;
                                }
                                if !is_listed(j) {
                                    viol.push((j, 0.0));
                                }
                            }
                        }
                        Background::RankOne { .. } => {
                            if ui + v_min + tol < bg.row_max(i) as f64 {
                                for j in 0..nc as u32 {
                                    let b = bg.value(i, j as usize);
                                    if ui + v[j as usize] + tol < b as f64 && !is_listed(j) {
                                        viol.push((j, b));
                                    }
                                }
                            }
                        }
                    }
                }
                (i, viol)
            },
        )
        .filter(|(_, v)| !v.is_empty())
        .collect()
}
