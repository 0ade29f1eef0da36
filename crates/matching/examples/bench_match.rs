//! Feature-matching benchmark on synthetic sparse activations.
//!
//!   cargo run --release -p saepipe-matching --example bench_match -- gen DIR N_FEATURES [N_TOKENS]
//!   cargo run --release -p saepipe-matching --example bench_match -- match DIR [TOP_M]
//!
//! `gen` writes DIR/a.bin and DIR/b.bin (versioned CSR format, see
//! `CsrActivations::write_binary`): N_TOKENS (default 100000) tokens, L0 ~ 32, SAE B's
//! features are noisy copies of A's under a hidden permutation. `match` reads them and
//! runs activation similarity + certified sparse assignment, printing timings, peak RSS
//! and a JSON line. `scripts/bench/matching_scipy.py` runs the scipy route on the same files.
//!
//!   cargo run --release -p saepipe-matching --example bench_match -- decoder N_FEATURES D_IN
//!
//! times decoder-cosine matching (blocked GEMM top-m + certified sparse assignment) on
//! random decoders where B's rows are noisy, permuted copies of A's.

use saepipe_matching::CsrActivations;
use saepipe_matching::assignment::{SparseOptions, solve_sparse_certified};
use saepipe_matching::rng::{SyntheticSpec, synthetic_pair};
use saepipe_matching::similarity::{ActivationOracle, SimilarityKind, SimilarityOracle, candidate_graph};
use std::path::Path;
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_match gen DIR N_FEATURES [N_TOKENS] | bench_match match DIR [TOP_M] | bench_match decoder N_FEATURES D_IN";
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let dir = Path::new(args.get(2).expect(usage));
            let n_features: usize = args.get(3).expect(usage).parse().expect("N_FEATURES");
            let n_tokens: usize = args.get(4).map_or(100_000, |s| s.parse().expect("N_TOKENS"));
            std::fs::create_dir_all(dir).expect("create output dir");
            let t = Instant::now();
            let (a, b, _) = synthetic_pair(&SyntheticSpec::new(n_tokens, n_features, 2024));
            a.write_binary(&dir.join("a.bin")).unwrap();
            b.write_binary(&dir.join("b.bin")).unwrap();
            println!(
                "generated {n_tokens} tokens x {n_features} features: nnz A {} B {} ({:.1} s)",
                a.nnz(),
                b.nnz(),
                t.elapsed().as_secs_f64()
            );
        }
        Some("match") => {
            let dir = Path::new(args.get(2).expect(usage));
            let top_m: usize = args.get(3).map_or(32, |s| s.parse().expect("TOP_M"));
            let a = CsrActivations::read_binary(&dir.join("a.bin")).unwrap();
            let b = CsrActivations::read_binary(&dir.join("b.bin")).unwrap();
            let rss_loaded = peak_rss_mb();
            let t0 = Instant::now();
            let (sa, sb) = (a.feature_stats(), b.feature_stats());
            let (ac, bc) = (a.to_csc(), b.to_csc());
            let live = |s: &[saepipe_matching::FeatureStats]| s.iter().filter(|x| !x.is_dead()).count();
            // Rows = the side with fewer live features.
            let oracle = if live(&sa) <= live(&sb) {
                ActivationOracle::new(SimilarityKind::Activations, &ac, &sa, &b, &bc, &sb).unwrap()
            } else {
                ActivationOracle::new(SimilarityKind::Activations, &bc, &sb, &a, &ac, &sa).unwrap()
            };
            let g = candidate_graph(&oracle, top_m);
            let t_sim = t0.elapsed().as_secs_f64();
            let edges = g.n_edges();
            let t1 = Instant::now();
            let opts = SparseOptions { top_m, ..Default::default() };
            let sol = solve_sparse_certified(&oracle, g, &opts).unwrap();
            let t_assign = t1.elapsed().as_secs_f64();
            let total_time = t0.elapsed().as_secs_f64();
            let peak = peak_rss_mb();
            println!(
                "ours: {} x {} live features ({} dead A, {} dead B), {} tokens, {} candidate edges",
                oracle.n_rows(),
                oracle.n_cols(),
                sa.len() - live(&sa),
                sb.len() - live(&sb),
                a.n_tokens,
                edges
            );
            println!(
                "ours: similarity {t_sim:.2} s, assignment+certificate {t_assign:.2} s, total {total_time:.2} s, \
                 peak RSS {peak:.0} MB (after loading inputs {rss_loaded:.0} MB)"
            );
            println!(
                "ours: total similarity {:.6}, dual bound {:.6}, certified {}, solves {}, enlarged rows {}, fallback rows {}",
                sol.total, sol.dual_bound, sol.certified, sol.solves, sol.enlarged_rows, sol.fallback_rows
            );
            for (k, r) in sol.rounds.iter().enumerate() {
                println!(
                    "ours: solve {}: {} edges, augmenting paths {:.3} s, completion+certificate {:.3} s, {} violations",
                    k + 1,
                    r.edges,
                    r.solve_seconds,
                    r.check_seconds,
                    r.violations
                );
            }
            println!(
                "{{\"n_features\": {}, \"seconds\": {total_time:.4}, \"similarity_seconds\": {t_sim:.4}, \"assignment_seconds\": {t_assign:.4}, \"peak_rss_mb\": {peak:.1}, \"total\": {:.9}, \"certified\": {}}}",
                a.n_features, sol.total, sol.certified
            );
        }
        Some("decoder") => {
            let n: usize = args.get(2).expect(usage).parse().expect("N_FEATURES");
            let d: usize = args.get(3).expect(usage).parse().expect("D_IN");
            let mut rng = saepipe_matching::rng::SplitMix::new(7);
            let wa: Vec<f32> = (0..n * d).map(|_| rng.gauss() as f32).collect();
            let mut perm: Vec<usize> = (0..n).collect();
            for k in (1..n).rev() {
                perm.swap(k, rng.below(k as u64 + 1) as usize);
            }
            let mut wb = vec![0f32; n * d];
            for f in 0..n {
                for k in 0..d {
                    wb[perm[f] * d + k] = wa[f * d + k] + 0.7 * rng.gauss() as f32;
                }
            }
            let w = |name, data| saepipe_matching::DenseWeights { name, data, n_features: n, d, feature_major: true };
            let a = saepipe_matching::SaeInputs { name: "A", acts: None, w_dec: Some(w("A", &wa)), w_enc: None };
            let b = saepipe_matching::SaeInputs { name: "B", acts: None, w_dec: Some(w("B", &wb)), w_enc: None };
            let cfg = saepipe_matching::MatchConfig {
                kind: SimilarityKind::Decoder,
                strategy: saepipe_matching::Strategy::Sparse,
                ..Default::default()
            };
            let t = Instant::now();
            let r = saepipe_matching::match_features(&a, &b, &cfg).unwrap();
            let hits = (0..n).filter(|&f| r.a_to_b[f] == Some(perm[f] as u32)).count();
            println!(
                "decoder {n} x {n}, d_in {d}: {:.2} s, peak RSS {:.0} MB, certified {}, solves {}, total {:.4}, hidden permutation recovered {hits}/{n}",
                t.elapsed().as_secs_f64(),
                peak_rss_mb(),
                r.certified,
                r.solves,
                r.total
            );
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
