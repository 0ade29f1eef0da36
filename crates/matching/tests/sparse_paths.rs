//! Sparse similarities against dense references, sparse vs dense assignment,
//! the optimality certificate, dead features and the end-to-end matcher.

use saepipe_matching::assignment::{SparseOptions, solve_dense_max, solve_sparse_certified};
use saepipe_matching::rng::{SplitMix, SyntheticSpec, synthetic_pair, test_matrix};
use saepipe_matching::similarity::{ActivationOracle, DenseWeights, SimilarityOracle, candidate_graph, dense_matrix};
use saepipe_matching::{
    CsrActivations, MatchConfig, MatrixOracle, SaeInputs, SimilarityKind, Strategy, match_features, summarize,
};

/// Random sparse activations with some dead and some constant-ish features.
fn random_acts(name: &str, n_tokens: usize, n_features: usize, p: f64, seed: u64) -> (CsrActivations, Vec<f32>) {
    let mut rng = SplitMix::new(seed);
    let mut dense = vec![0f32; n_tokens * n_features];
    for t in 0..n_tokens {
        for f in 0..n_features {
            // Features 0 and 1 never fire (dead); the rest fire with probability p.
            if f >= 2 && rng.f64() < p {
                dense[t * n_features + f] = (rng.f64() * 3.0 + 0.01) as f32;
            }
        }
    }
    (CsrActivations::from_dense(name, n_tokens, n_features, &dense).unwrap(), dense)
}

fn dense_reference(a: &[f32], b: &[f32], n: usize, fa: usize, fb: usize, pearson: bool) -> Vec<Vec<f64>> {
    let col = |m: &[f32], f: usize, d: usize| -> Vec<f64> { (0..n).map(|t| m[t * d + f] as f64).collect() };
    (0..fa)
        .map(|i| {
            let x = col(a, i, fa);
            (0..fb)
                .map(|j| {
                    let y = col(b, j, fb);
                    let (mx, my) = if pearson {
                        (x.iter().sum::<f64>() / n as f64, y.iter().sum::<f64>() / n as f64)
                    } else {
                        (0.0, 0.0)
                    };
                    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
                    for t in 0..n {
                        xy += (x[t] - mx) * (y[t] - my);
                        xx += (x[t] - mx) * (x[t] - mx);
                        yy += (y[t] - my) * (y[t] - my);
                    }
                    if xx > 0.0 && yy > 0.0 { xy / (xx.sqrt() * yy.sqrt()) } else { 0.0 }
                })
                .collect()
        })
        .collect()
}

#[test]
fn sparse_similarity_equals_dense_reference() {
    let (n, fa, fb) = (200, 23, 31);
    let (a, da) = random_acts("A", n, fa, 0.15, 1);
    let (b, db) = random_acts("B", n, fb, 0.1, 2);
    let (sa, sb) = (a.feature_stats(), b.feature_stats());
    let (a_csc, b_csc) = (a.to_csc(), b.to_csc());
    for (kind, pearson) in [(SimilarityKind::Activations, false), (SimilarityKind::Pearson, true)] {
        let oracle = ActivationOracle::new(kind, &a_csc, &sa, &b, &b_csc, &sb).unwrap();
        assert_eq!(oracle.n_rows(), fa - 2, "dead features excluded from rows");
        assert_eq!(oracle.n_cols(), fb - 2);
        let reference = dense_reference(&da, &db, n, fa, fb, pearson);
        let m = dense_matrix(&oracle);
        let g = candidate_graph(&oracle, 5);
        for i in 0..oracle.n_rows() {
            let fi = oracle.row_feature[i] as usize;
            let mut best = f64::NEG_INFINITY;
            for j in 0..oracle.n_cols() {
                let fj = oracle.col_feature[j] as usize;
                let r = reference[fi][fj];
                best = best.max(r);
                let got = m[i * oracle.n_cols() + j] as f64;
                assert!((got - r).abs() < 1e-5, "{kind:?} ({fi},{fj}): sparse {got} vs dense {r}");
                assert!((oracle.pair(i, j) as f64 - r).abs() < 1e-5, "{kind:?} pair ({fi},{fj})");
            }
            // Candidate graph: top-5 exact values, row max, and a valid bound on the rest.
            let (cols, sims) = g.row(i);
            assert_eq!(cols.len(), 5);
            assert!((g.row_max[i] as f64 - best).abs() < 1e-5);
            let listed: Vec<usize> = cols.iter().map(|&c| c as usize).collect();
            for (k, &c) in listed.iter().enumerate() {
                assert!((sims[k] as f64 - reference[fi][oracle.col_feature[c] as usize]).abs() < 1e-5);
            }
            for j in (0..oracle.n_cols()).filter(|j| !listed.contains(j)) {
                let r = reference[fi][oracle.col_feature[j] as usize];
                assert!(r <= g.bound[i] as f64 + 1e-6, "unlisted {r} above bound {}", g.bound[i]);
                assert!(r <= sims[4] as f64 + 1e-6, "unlisted value larger than a kept one");
            }
        }
    }
}

#[test]
fn csr_csc_stats_and_binary_roundtrip() {
    let (a, dense) = random_acts("A", 50, 9, 0.3, 3);
    let csc = a.to_csc();
    let stats = a.feature_stats();
    for f in 0..9 {
        let (toks, vals) = csc.col(f);
        assert!(toks.windows(2).all(|w| w[0] < w[1]), "tokens sorted in column {f}");
        let expect: Vec<(u32, f32)> =
            (0..50).filter(|&t| dense[t * 9 + f] != 0.0).map(|t| (t as u32, dense[t * 9 + f])).collect();
        let got: Vec<(u32, f32)> = toks.iter().copied().zip(vals.iter().copied()).collect();
        assert_eq!(got, expect);
        let l2 = expect.iter().map(|x| (x.1 as f64).powi(2)).sum::<f64>().sqrt();
        assert!((stats[f].l2 - l2).abs() < 1e-9);
        assert_eq!(stats[f].count as usize, expect.len());
        assert!((stats[f].density - expect.len() as f64 / 50.0).abs() < 1e-12);
        assert_eq!(stats[f].is_dead(), f < 2);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("acts.bin");
    a.write_binary(&p).unwrap();
    let back = CsrActivations::read_binary(&p).unwrap();
    assert_eq!((back.row_ptr, back.indices, back.values), (a.row_ptr.clone(), a.indices.clone(), a.values.clone()));
    // Unknown versions are rejected with a message naming the file.
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = 9;
    std::fs::write(&p, &bytes).unwrap();
    let err = CsrActivations::read_binary(&p).unwrap_err().to_string();
    assert!(err.contains("version 9") && err.contains("acts.bin"), "{err}");
    // Invalid CSR is rejected with the input named.
    let err = CsrActivations::new("acts_x", 1, 3, vec![0, 2], vec![1, 1], vec![1.0, 2.0]).unwrap_err().to_string();
    assert!(err.contains("acts_x") && err.contains("listed twice"), "{err}");
    let err = CsrActivations::new("acts_y", 1, 3, vec![0, 1], vec![3], vec![1.0]).unwrap_err().to_string();
    assert!(err.contains("feature index 3"), "{err}");
}

#[test]
fn certificate_rejects_truncated_candidates_and_retry_fixes_it() {
    // Top-1 candidates: both rows want column 0; the graph optimum (0.9 + completion 0.1)
    // is not the true optimum 0.8 + 0.85.
    let o = MatrixOracle::new(2, 2, vec![0.9, 0.8, 0.85, 0.1], false).unwrap();
    let no_retry = SparseOptions { top_m: 1, max_rounds: 0, ..Default::default() };
    let s = solve_sparse_certified(&o, candidate_graph(&o, 1), &no_retry).unwrap();
    assert!(!s.certified);
    assert!(s.violations > 0);
    assert!((s.total - 1.0).abs() < 1e-6, "{}", s.total);
    let retry = SparseOptions { top_m: 1, ..Default::default() };
    let s = solve_sparse_certified(&o, candidate_graph(&o, 1), &retry).unwrap();
    assert!(s.certified);
    assert!(s.solves >= 2 && s.enlarged_rows >= 1);
    assert!((s.total - 1.65).abs() < 1e-6, "{}", s.total);

    // Same at scale, with an exact-zero background: a 300x300 sparse instance.
    let m = test_matrix("sparse", 77, 300, 300).unwrap();
    let best = solve_dense_max(&m, 300, 300).unwrap().total;
    let o = MatrixOracle::new(300, 300, m, true).unwrap();
    let s = solve_sparse_certified(&o, candidate_graph(&o, 1), &no_retry).unwrap();
    assert!(!s.certified && s.total < best - 1e-3, "truncated solve {} vs optimum {best}", s.total);
    assert!(s.violations > 0, "infeasible duals are reported");
    let s = solve_sparse_certified(&o, candidate_graph(&o, 1), &retry).unwrap();
    assert!(s.certified);
    assert!((s.total - best).abs() <= 1e-6 * best, "{} vs {best}", s.total);
}

fn acts_inputs<'a>(name: &'a str, acts: &'a CsrActivations) -> SaeInputs<'a> {
    SaeInputs { name, acts: Some(acts), w_dec: None, w_enc: None }
}

#[test]
fn sparse_path_equals_dense_path_on_activations() {
    let mut spec = SyntheticSpec::new(3000, 400, 11);
    spec.dead_frac = 0.05;
    spec.l0 = 12;
    let (a, b, _) = synthetic_pair(&spec);
    for kind in [SimilarityKind::Activations, SimilarityKind::Pearson] {
        let dense = MatchConfig { kind, strategy: Strategy::Dense, ..Default::default() };
        let sparse = MatchConfig { kind, strategy: Strategy::Sparse, top_m: 4, ..Default::default() };
        let rd = match_features(&acts_inputs("A", &a), &acts_inputs("B", &b), &dense).unwrap();
        let rs = match_features(&acts_inputs("A", &a), &acts_inputs("B", &b), &sparse).unwrap();
        assert_eq!((rd.method, rs.method), ("dense", "sparse"));
        assert!(rs.certified, "{kind:?}: sparse path not certified (total {}, bound {})", rs.total, rs.dual_bound);
        assert!(
            (rd.total - rs.total).abs() <= 1e-6 * rd.total.abs().max(1.0),
            "{kind:?}: dense {} sparse {}",
            rd.total,
            rs.total
        );
        assert!(rs.candidate_edges < 400 * 400 / 10, "sparse path stayed sparse");
    }
}

#[test]
fn dead_features_are_reported_and_never_matched() {
    let mut spec = SyntheticSpec::new(2000, 300, 5);
    spec.dead_frac = 0.2;
    spec.l0 = 10;
    let (a, b, _) = synthetic_pair(&spec);
    for strategy in [Strategy::Dense, Strategy::Sparse] {
        let cfg = MatchConfig { strategy, top_m: 8, ..Default::default() };
        let r = match_features(&acts_inputs("A", &a), &acts_inputs("B", &b), &cfg).unwrap();
        let stats_a = a.feature_stats();
        let stats_b = b.feature_stats();
        let n_dead_a = stats_a.iter().filter(|s| s.count == 0).count();
        assert!(n_dead_a > 20, "fixture has dead features");
        for f in 0..300 {
            assert_eq!(r.dead_a[f], stats_a[f].count == 0);
            assert_eq!(r.dead_b[f], stats_b[f].count == 0);
            if r.dead_a[f] {
                assert_eq!(r.a_to_b[f], None, "dead A feature {f} matched");
            }
            if let Some(g) = r.a_to_b[f] {
                assert!(!r.dead_b[g as usize], "A feature {f} matched to dead B feature {g}");
            }
        }
        let live_a = 300 - n_dead_a;
        let live_b = r.dead_b.iter().filter(|d| !**d).count();
        assert_eq!(r.a_to_b.iter().flatten().count(), live_a.min(live_b));
        let (summary, rows) = summarize(&r, &saepipe_matching::DEFAULT_DISTANCE_THRESHOLDS, None).unwrap();
        assert_eq!(summary.dead_a, n_dead_a);
        assert_eq!(rows.len(), 300);
        assert!(rows.iter().all(|row| row.dead_a == (row.feature_b.is_none() && row.dead_a)));
    }
}

#[test]
fn rectangular_live_sets_swap_sides() {
    // A has more live features than B: every live B feature gets a partner.
    let (a, _) = random_acts("A", 300, 40, 0.1, 8);
    let (b, _) = random_acts("B", 300, 25, 0.1, 9);
    let rd = match_features(
        &acts_inputs("A", &a),
        &acts_inputs("B", &b),
        &MatchConfig { strategy: Strategy::Dense, ..Default::default() },
    )
    .unwrap();
    let rs = match_features(
        &acts_inputs("A", &a),
        &acts_inputs("B", &b),
        &MatchConfig { strategy: Strategy::Sparse, top_m: 3, ..Default::default() },
    )
    .unwrap();
    assert!(rs.certified);
    assert!((rd.total - rs.total).abs() < 1e-6 * rd.total);
    for r in [&rd, &rs] {
        assert_eq!(r.a_to_b.iter().flatten().count(), 23);
        let mut seen = std::collections::HashSet::new();
        assert!(r.a_to_b.iter().flatten().all(|g| seen.insert(*g)), "one-to-one");
    }
    // Cross-check with a dense solve on the dense reference matrix.
    let (sa, sb) = (a.feature_stats(), b.feature_stats());
    let (ac, bc) = (a.to_csc(), b.to_csc());
    let o = ActivationOracle::new(SimilarityKind::Activations, &ac, &sa, &b, &bc, &sb).unwrap();
    let m = dense_matrix(&o);
    let d = solve_dense_max(&m, o.n_rows(), o.n_cols()).unwrap();
    assert!((d.total - rd.total).abs() < 1e-6 * d.total);
}

#[test]
fn decoder_and_encoder_similarity_sparse_equals_dense() {
    let (n, d) = (300, 24);
    let mut rng = SplitMix::new(42);
    let wa: Vec<f32> = (0..n * d).map(|_| rng.gauss() as f32).collect();
    // B's feature perm[f] is a noisy copy of A's feature f.
    let mut perm: Vec<usize> = (0..n).collect();
    for k in (1..n).rev() {
        perm.swap(k, rng.below(k as u64 + 1) as usize);
    }
    let mut wb = vec![0f32; n * d];
    for f in 0..n {
        let noise = if f % 3 == 0 { 2.0 } else { 0.3 };
        for k in 0..d {
            wb[perm[f] * d + k] = wa[f * d + k] + noise * rng.gauss() as f32;
        }
    }
    let transpose = |w: &[f32]| -> Vec<f32> {
        let mut t = vec![0f32; n * d];
        for f in 0..n {
            for k in 0..d {
                t[k * n + f] = w[f * d + k];
            }
        }
        t
    };
    let (ea, eb) = (transpose(&wa), transpose(&wb));
    let dec = |name, w| DenseWeights { name, data: w, n_features: n, d, feature_major: true };
    let enc = |name, w| DenseWeights { name, data: w, n_features: n, d, feature_major: false };
    let a = SaeInputs { name: "A", acts: None, w_dec: Some(dec("A.W_dec", &wa)), w_enc: Some(enc("A.W_enc", &ea)) };
    let b = SaeInputs { name: "B", acts: None, w_dec: Some(dec("B.W_dec", &wb)), w_enc: Some(enc("B.W_enc", &eb)) };
    let mut totals = Vec::new();
    for kind in [SimilarityKind::Decoder, SimilarityKind::Encoder] {
        let rd =
            match_features(&a, &b, &MatchConfig { kind, strategy: Strategy::Dense, ..Default::default() }).unwrap();
        let rs = match_features(
            &a,
            &b,
            &MatchConfig { kind, strategy: Strategy::Sparse, top_m: 4, gemm_block_rows: 37, ..Default::default() },
        )
        .unwrap();
        assert!(rs.certified, "{kind:?} sparse not certified: total {} bound {}", rs.total, rs.dual_bound);
        assert!((rd.total - rs.total).abs() < 1e-5 * rd.total, "{kind:?}: {} vs {}", rd.total, rs.total);
        // The low-noise two thirds of the hidden permutation are recovered.
        let hits = (0..n).filter(|&f| f % 3 != 0 && rd.a_to_b[f] == Some(perm[f] as u32)).count();
        assert_eq!(hits, (0..n).filter(|f| f % 3 != 0).count());
        totals.push(rd.total);
    }
    // W_enc is W_dec transposed here, so both kinds agree.
    assert!((totals[0] - totals[1]).abs() < 1e-4);
    // Summary with decoder cosines.
    let r = match_features(&a, &b, &MatchConfig { kind: SimilarityKind::Decoder, ..Default::default() }).unwrap();
    let (s, rows) = summarize(&r, &[0.1, 0.5], Some((dec("A.W_dec", &wa), dec("B.W_dec", &wb)))).unwrap();
    for row in &rows {
        assert!((row.decoder_cosine.unwrap() - row.similarity.unwrap()).abs() < 1e-5);
    }
    assert_eq!(s.n_matched, n);
    assert!(s.thresholds[0].fraction <= s.thresholds[1].fraction);
    // Missing inputs are named.
    let err = match_features(&a, &b, &MatchConfig::default()).unwrap_err().to_string();
    assert!(err.contains("activations") && err.contains("SAE A"), "{err}");
}

#[test]
fn summary_thresholds_and_median() {
    let o = MatrixOracle::new(
        4,
        4,
        vec![
            0.95, 0.0, 0.0, 0.0, //
            0.0, 0.75, 0.0, 0.0, //
            0.0, 0.0, 0.45, 0.0, //
            0.0, 0.0, 0.0, 0.05,
        ],
        true,
    )
    .unwrap();
    let s = solve_sparse_certified(&o, candidate_graph(&o, 2), &SparseOptions::default()).unwrap();
    assert!(s.certified);
    let r = saepipe_matching::MatchResult {
        kind: SimilarityKind::Activations,
        method: "sparse",
        n_features_a: 5,
        n_features_b: 4,
        stats_a: None,
        stats_b: None,
        dead_a: vec![false, false, false, false, true],
        dead_b: vec![false; 4],
        a_to_b: s.row_to_col.iter().copied().chain([None]).collect(),
        similarity: s.pair_sims.iter().map(|&x| Some(x)).chain([None]).collect(),
        total: s.total,
        dual_bound: s.dual_bound,
        certified: s.certified,
        solves: s.solves,
        enlarged_rows: 0,
        candidate_edges: 0,
    };
    let (sum, rows) = summarize(&r, &[0.1, 0.3, 0.5, 0.7, 0.9], None).unwrap();
    let fr: Vec<f64> = sum.thresholds.iter().map(|t| t.fraction).collect();
    assert_eq!(fr, vec![0.25, 0.5, 0.5, 0.75, 0.75]);
    assert!((sum.median_similarity.unwrap() - 0.6).abs() < 1e-6);
    assert_eq!(sum.dead_a, 1);
    assert_eq!(rows[4].feature_b, None);
    assert!(rows[4].dead_a);
}

#[test]
fn all_dead_or_empty_inputs_match_nothing() {
    let a = CsrActivations::new("A", 3, 4, vec![0, 0, 0, 0], vec![], vec![]).unwrap();
    let (b, _) = random_acts("B", 3, 5, 0.9, 4);
    for strategy in [Strategy::Dense, Strategy::Sparse] {
        let cfg = MatchConfig { strategy, ..Default::default() };
        let r = match_features(&acts_inputs("A", &a), &acts_inputs("B", &b), &cfg).unwrap();
        assert!(r.dead_a.iter().all(|&d| d));
        assert!(r.a_to_b.iter().all(|m| m.is_none()));
        assert_eq!(r.total, 0.0);
        assert!(r.certified);
        let r = match_features(&acts_inputs("B", &b), &acts_inputs("A", &a), &cfg).unwrap();
        assert!(r.a_to_b.iter().all(|m| m.is_none()));
    }
    // Token counts must agree.
    let (c, _) = random_acts("C", 4, 5, 0.5, 4);
    let err =
        match_features(&acts_inputs("A", &a), &acts_inputs("C", &c), &MatchConfig::default()).unwrap_err().to_string();
    assert!(err.contains("number of tokens"), "{err}");
}
