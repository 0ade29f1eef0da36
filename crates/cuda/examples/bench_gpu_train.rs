//! TopK SAE training throughput: the trainer's step over the GPU backend vs
//! the CPU backend on the same machine (same config, same batches).
//!
//! cargo run --release -p saepipe-cuda --example bench_gpu_train -- [d_sae ...]
//! Environment: BENCH_D_IN (512), BENCH_K (32), BENCH_BATCH (4096),
//! BENCH_GPU_STEPS (30), BENCH_CPU_STEPS (2; 0 skips the CPU).

use saepipe_cuda::{Gpu, GpuTrain};
use saepipe_sae::train::{TrainArch, TrainConfig, Trainer};
use std::sync::Arc;
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Synthetic activations: a few shared directions plus noise and a mean offset.
fn batches(count: usize, n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let dirs: Vec<f32> = (0..16 * d).map(|_| next()).collect();
    (0..count)
        .map(|_| {
            let mut x = vec![0f32; n * d];
            for row in x.chunks_mut(d) {
                let (a, b) = ((next().abs() * 16.0) as usize % 16, next());
                for (i, v) in row.iter_mut().enumerate() {
                    *v = 0.5 * next() + 2.0 * b * dirs[a * d + i] + 0.1;
                }
            }
            x
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let d_saes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let d_saes = if d_saes.is_empty() { vec![16384, 32768] } else { d_saes };
    let (d, k, n) = (env("BENCH_D_IN", 512), env("BENCH_K", 32), env("BENCH_BATCH", 4096));
    let (gpu_steps, cpu_steps) = (env("BENCH_GPU_STEPS", 30), env("BENCH_CPU_STEPS", 2));
    let gpu = Arc::new(Gpu::new(0, None)?);
    let name = gpu.ctx.name().unwrap_or_default();
    println!(
        "device: {name}; dense GEMM: {}; CPU threads: {}",
        if gpu.blas().is_some() { "cuBLAS SGEMM (f32)" } else { "saepipe GEMM kernel (f32)" },
        rayon_threads()
    );
    let data = batches(8, n, d, 42);
    for &d_sae in &d_saes {
        let cfg = TrainConfig { arch: TrainArch::TopK { k }, d_sae, lr: 2e-4, seed: 1, ..TrainConfig::default() };
        let cpu = Trainer::new(cfg, d, d, &data[0], None)?;
        let state = cpu.state()?;
        let mut gt = Trainer::restore(state.clone())?.move_to(|s, t| GpuTrain::new(gpu.clone(), s, t))?;
        for x in data.iter().take(3) {
            gt.step(x, None, n)?;
        }
        gpu.synchronize()?;
        let t = Instant::now();
        let mut last = None;
        for i in 0..gpu_steps {
            last = Some(gt.step(&data[i % data.len()], None, n)?);
        }
        gpu.synchronize()?;
        let gpu_s = t.elapsed().as_secs_f64() / gpu_steps as f64;
        let st = last.expect("at least one step");
        let flops = 2.0 * (n * d * d_sae) as f64;
        println!(
            "d_in {d} d_sae {d_sae} k {k} batch {n}: GPU {:.2} ms/step = {:.1} steps/s = {:.0} tokens/s (encoder GEMM alone at this rate: {:.1} TFLOP/s); loss {:.4} l0 {:.1}",
            gpu_s * 1e3,
            1.0 / gpu_s,
            n as f64 / gpu_s,
            flops / gpu_s / 1e12,
            st.loss,
            st.l0
        );
        if cpu_steps > 0 {
            let mut cpu = Trainer::restore(state)?;
            cpu.step(&data[0], None, n)?;
            let t = Instant::now();
            for i in 0..cpu_steps {
                cpu.step(&data[(i + 1) % data.len()], None, n)?;
            }
            let cpu_s = t.elapsed().as_secs_f64() / cpu_steps as f64;
            println!(
                "d_in {d} d_sae {d_sae} k {k} batch {n}: CPU {:.1} ms/step = {:.2} steps/s = {:.0} tokens/s; GPU/CPU speed-up {:.1}x",
                cpu_s * 1e3,
                1.0 / cpu_s,
                n as f64 / cpu_s,
                cpu_s / gpu_s
            );
        }
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
