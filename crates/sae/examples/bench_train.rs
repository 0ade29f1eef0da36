//! Training throughput of the TopK trainer (k = 32, d_in = 512) at d_sae 8192
//! and 32768, and of ReLU + L1 at d_sae 8192, on random activations, in tokens
//! per second.
//!
//!     cargo run --release -p saepipe-sae --example bench_train [-- steps batch]
//!
//! Compare with `scripts/bench/sae_train_saelens.py` (SAELens on the same data).

use std::time::Instant;

use rayon::prelude::*;

use saepipe_sae::linalg::{self, MatRef};
use saepipe_sae::{TrainArch, TrainConfig, Trainer};

fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n * d)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Sum of two uniforms: cheap, roughly bell-shaped.
            let a = (s >> 40) as f32 / (1u64 << 24) as f32;
            let b = ((s >> 16) & 0xFFFFFF) as f32 / (1u64 << 24) as f32;
            a + b - 1.0
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let steps = args.first().copied().unwrap_or(10);
    let batch = args.get(1).copied().unwrap_or(4096);
    let d_in = 512;
    println!("threads: {}", rayon::current_num_threads());
    let cases = [("TopK k=32", 8192usize), ("TopK k=32", 32768), ("ReLU+L1", 8192)];
    for (name, d_sae) in cases {
        let arch = if name.starts_with("TopK") {
            TrainArch::TopK { k: 32 }
        } else {
            TrainArch::Standard { l1_coefficient: 5.0, l1_warmup_steps: 0 }
        };
        let cfg = TrainConfig { arch, d_sae, lr: 2e-4, seed: 0, ..Default::default() };
        let mut t = Trainer::new(cfg, d_in, d_in, &data(batch, d_in, 0), None).unwrap();
        let batches: Vec<Vec<f32>> = (0..2).map(|i| data(batch, d_in, i as u64 + 1)).collect();
        t.step(&batches[0], None, batch).unwrap(); // warm-up
        let start = Instant::now();
        let mut last = None;
        for i in 0..steps {
            last = Some(t.step(&batches[i % 2], None, batch).unwrap());
        }
        let secs = start.elapsed().as_secs_f64();
        let s = last.unwrap();
        // The dense encoder GEMM alone, the floor of a step's cost.
        let w = data(d_sae, d_in, 9);
        let mut pre = vec![0f32; batch * d_sae];
        let g0 = Instant::now();
        for i in 0..steps {
            {
                let rows = linalg::rows_per_task(batch, d_sae);
                pre.par_chunks_mut(rows * d_sae).zip(batches[i % 2].par_chunks(rows * d_in)).for_each(|(c, a)| {
                    linalg::gemm_serial(
                        MatRef::row_major(a, c.len() / d_sae, d_in),
                        MatRef::row_major(&w, d_sae, d_in).t(),
                        c,
                        0.0,
                    )
                });
            }
        }
        let gemm_secs = g0.elapsed().as_secs_f64();
        println!(
            "  encoder GEMM alone: {:.0} tokens/s ({:.1} GFLOP/s)",
            (steps * batch) as f64 / gemm_secs,
            (2 * steps * batch * d_in * d_sae) as f64 / gemm_secs / 1e9
        );
        println!(
            "{name} d_in={d_in} d_sae={d_sae} batch={batch}: {:.0} tokens/s ({steps} steps in {secs:.2}s; last mse {:.4}, l0 {})",
            (steps * batch) as f64 / secs,
            s.mse,
            s.l0
        );
    }
}
