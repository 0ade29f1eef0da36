//! TopK SAE inference throughput, "encode + top-k + decode" entirely on the
//! GPU (`GpuTopKSae::forward_on_device`: centre, SGEMM + bias, per-row top-k
//! with ReLU, sparse decode + b_dec), with the same cost model as its PyTorch
//! baseline scripts/bench/gpu_encode_torch.py (run both with
//! scripts/bench/gpu_encode.sh).
//!
//! cargo run --release -p saepipe-cuda --example bench_gpu_encode -- [d_in,d_sae,k ...]
//!
//! Shapes default to 768,32768,32 and 2048,131072,64.
//! Environment: BENCH_BATCH (4096 tokens per batch), BENCH_WARMUP (5),
//! BENCH_ITERS (20), BENCH_CHECK_ROWS (8 rows of the first batch checked
//! against the CPU coder; 0 skips the check), BENCH_CHECK_TOL (1e-3, max
//! relative difference allowed; 1e-2 with TF32), BENCH_TF32=1 (encoder GEMM
//! on TF32 tensor cores), BENCH_PEAK_TFLOPS (67, H100 SXM f32
//! non-tensor), BENCH_PEAK_TF32_TFLOPS (494, H100 SXM TF32 tensor, dense),
//! BENCH_PEAK_TBPS (3.35, H100 SXM HBM3).
//!
//! Synthetic data (deterministic, xorshift): activations are a few shared
//! directions plus noise and a mean offset (as bench_gpu_train); the decoder
//! has unit-norm random rows, W_enc = W_decᵀ, small random b_enc, b_dec ≈ 0.1.
//! Without a GPU (or its driver) this exits with status 1 and says why.
//!
//! Output: one `RESULT impl=saepipe d_in=… d_sae=… k=… batch=… ms=… tok_s=…`
//! line per shape, with the achieved encoder-GEMM TFLOP/s and the modelled
//! memory traffic as fractions of the peaks.

use cudarc::driver::CudaSlice;
use saepipe_cuda::{DeviceSpec, Gpu, GpuTopKSae};
use saepipe_sae::{Activation, Metadata, Normalization, SparseCoder};
use std::time::Instant;

type BoxError = Box<dyn std::error::Error>;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

struct Rng(u64);
impl Rng {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Synthetic activations: a few shared directions plus noise and a mean offset.
fn batches(count: usize, n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = Rng(seed | 1);
    let dirs: Vec<f32> = (0..16 * d).map(|_| r.next()).collect();
    (0..count)
        .map(|_| {
            let mut x = vec![0f32; n * d];
            for row in x.chunks_mut(d) {
                let (a, b) = ((r.next().abs() * 16.0) as usize % 16, r.next());
                for (i, v) in row.iter_mut().enumerate() {
                    *v = 0.5 * r.next() + 2.0 * b * dirs[a * d + i] + 0.1;
                }
            }
            x
        })
        .collect()
}

/// A TopK SAE for the CPU coder (SAELens layouts: W_enc [d_in, d_sae], W_dec [d_sae, d_in]).
fn synthetic_coder(d_in: usize, d_sae: usize, k: usize, seed: u64) -> SparseCoder {
    let mut r = Rng(seed | 1);
    let mut w_dec: Vec<f32> = (0..d_sae * d_in).map(|_| r.next()).collect();
    for row in w_dec.chunks_mut(d_in) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut w_enc = vec![0f32; d_in * d_sae];
    for (j, row) in w_dec.chunks(d_in).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            w_enc[i * d_sae + j] = v;
        }
    }
    let b_enc = (0..d_sae).map(|_| 0.01 * r.next()).collect();
    let b_dec = (0..d_in).map(|_| 0.1 + 0.01 * r.next()).collect();
    SparseCoder {
        activation: Activation::TopK { k },
        d_in,
        d_sae,
        d_out: d_in,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        w_skip: None,
        apply_b_dec_to_input: true,
        normalize: Normalization::None,
        transcoder: false,
        metadata: Metadata::default(),
        log_sparsity: None,
    }
}

/// Peak rates of the roofline, overridable by environment variables.
struct Peaks {
    f32_tflops: f64,
    tf32_tflops: f64,
    tbps: f64,
}

/// The cost model shared with scripts/bench/gpu_encode_torch.py: encoder GEMM
/// FLOPs, and the minimum bytes an unfused implementation moves: read x, read
/// W_enc, write + read the pre-activations, gather k W_dec rows per token (no
/// cache reuse assumed), write the output.
fn cost(n: usize, d_in: usize, d_sae: usize, k: usize) -> (f64, f64) {
    let (n, d_in, d_sae, k) = (n as f64, d_in as f64, d_sae as f64, k as f64);
    let flops = 2.0 * n * d_in * d_sae;
    let bytes = 4.0 * (n * d_in + d_in * d_sae + 2.0 * n * d_sae + n * k * d_in + n * d_in);
    (flops, bytes)
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize), BoxError> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("shape `{s}`: {e} (expected d_in,d_sae,k)"))?;
    match v[..] {
        [d_in, d_sae, k] if d_in > 0 && d_sae > 0 && k > 0 && k <= d_sae => Ok((d_in, d_sae, k)),
        _ => Err(format!("shape `{s}`: expected d_in,d_sae,k with 0 < k <= d_sae").into()),
    }
}

/// Max |a − b| over max |b| (as crates/cuda/tests/gpu_kernels.rs).
fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    (a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale) as f64
}

/// Compares `rows` rows of the GPU result (idx/val [n,k], out [n,d_in]) with
/// the CPU coder on the same input. A row whose selected latents differ from
/// the CPU's passes only when the difference is a near-tie at the k-th value
/// (f32 rounding) and its values and output match a CPU recomputation for
/// the GPU's own selection. Errors when the GPU result is wrong.
#[allow(clippy::too_many_arguments)]
fn check(
    coder: &SparseCoder,
    x: &[f32],
    n: usize,
    k: usize,
    idx: &[i32],
    val: &[f32],
    out: &[f32],
    rows: usize,
    tol: f64,
) -> Result<String, BoxError> {
    let (d, d_sae) = (coder.d_in, coder.d_sae);
    let rows = rows.min(n);
    let picks: Vec<usize> = (0..rows).map(|i| if rows == 1 { 0 } else { i * (n - 1) / (rows - 1) }).collect();
    let xs: Vec<f32> = picks.iter().flat_map(|&r| x[r * d..(r + 1) * d].iter().copied()).collect();
    let (acts, want) = coder.forward(&xs, rows)?;
    let (mut ties, mut err_val, mut err_out) = (0usize, 0f64, 0f64);
    for (i, &r) in picks.iter().enumerate() {
        let xr = &x[r * d..(r + 1) * d];
        // Pre-activation of latent j for this row, in f64.
        let pre = |j: usize| -> f64 {
            (0..d).map(|t| (xr[t] as f64 - coder.b_dec[t] as f64) * coder.w_enc[t * d_sae + j] as f64).sum::<f64>()
                + coder.b_enc[j] as f64
        };
        let (ri, rv) = (&idx[r * k..(r + 1) * k], &val[r * k..(r + 1) * k]);
        if let Some(&bad) = ri.iter().find(|&&j| j < 0 || j as usize >= d_sae) {
            return Err(format!("GPU row {r} holds latent index {bad} (d_sae {d_sae})").into());
        }
        // GPU rows keep k entries in increasing index order, negatives clamped to
        // 0; the CPU CSR keeps the positive ones in increasing index order.
        let (gi, gv): (Vec<u32>, Vec<f32>) =
            ri.iter().zip(rv).filter(|&(_, &v)| v > 0.0).map(|(&j, &v)| (j as u32, v)).unzip();
        let (wi, wv) = acts.row(i);
        let got_out = &out[r * d..(r + 1) * d];
        if gi == wi {
            err_val = err_val.max(max_rel(&gv, wv));
            err_out = err_out.max(max_rel(got_out, &want[i * d..(i + 1) * d]));
            continue;
        }
        // Different selections: a near-tie only if every latent the GPU kept
        // instead of a CPU one has (nearly) the same pre-activation.
        let only_gpu: Vec<f64> = gi.iter().filter(|j| !wi.contains(j)).map(|&j| pre(j as usize)).collect();
        let only_cpu: Vec<f64> = wi.iter().filter(|j| !gi.contains(j)).map(|&j| pre(j as usize)).collect();
        let scale = wv.iter().fold(1e-6f64, |m, &v| m.max(v.abs() as f64));
        let worst_gpu = only_gpu.iter().copied().fold(f64::INFINITY, f64::min);
        let best_cpu = only_cpu.iter().copied().fold(0f64, f64::max);
        if only_gpu.len() + only_cpu.len() > 4 || (best_cpu - worst_gpu) / scale > tol {
            return Err(format!("GPU row {r} selects latents {gi:?}, the CPU coder {wi:?} (not a near-tie)").into());
        }
        ties += 1;
        let want_v: Vec<f32> = gi.iter().map(|&j| pre(j as usize).max(0.0) as f32).collect();
        let mut want_o: Vec<f32> = coder.b_dec.clone();
        for (&j, &v) in gi.iter().zip(&want_v) {
            want_o.iter_mut().zip(&coder.w_dec[j as usize * d..(j as usize + 1) * d]).for_each(|(o, w)| *o += v * w);
        }
        err_val = err_val.max(max_rel(&gv, &want_v));
        err_out = err_out.max(max_rel(got_out, &want_o));
    }
    let summary = format!(
        "{rows} rows vs CPU coder: max rel diff values {err_val:.2e}, output {err_out:.2e}; near-tie rows selecting different latents {ties}"
    );
    if err_val > tol || err_out > tol || !err_val.is_finite() || !err_out.is_finite() {
        return Err(format!("GPU result does not match the CPU coder ({summary}; tolerance {tol:e})").into());
    }
    Ok(summary)
}

fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: bench_gpu_encode [d_in,d_sae,k ...]   (see the doc comment at the top of this example for the environment variables)"
        );
        return Ok(());
    }
    let shapes = if args.is_empty() {
        vec![(768, 32768, 32), (2048, 131072, 64)]
    } else {
        args.iter().map(|a| parse_shape(a)).collect::<Result<Vec<_>, _>>()?
    };
    let n: usize = env("BENCH_BATCH", 4096);
    let (warmup, iters): (usize, usize) = (env("BENCH_WARMUP", 5), env("BENCH_ITERS", 20).max(1));
    let tf32 = std::env::var("BENCH_TF32").is_ok_and(|v| v == "1");
    // TF32 rounds GEMM inputs to a 10-bit mantissa: a looser default check.
    let (check_rows, tol): (usize, f64) =
        (env("BENCH_CHECK_ROWS", 8), env("BENCH_CHECK_TOL", if tf32 { 1e-2 } else { 1e-3 }));
    let peaks = Peaks {
        f32_tflops: env("BENCH_PEAK_TFLOPS", 67.0),
        tf32_tflops: env("BENCH_PEAK_TF32_TFLOPS", 494.0),
        tbps: env("BENCH_PEAK_TBPS", 3.35),
    };
    if n == 0 {
        return Err("BENCH_BATCH must be > 0".into());
    }
    println!(
        "peaks: f32 non-tensor {} TFLOP/s (BENCH_PEAK_TFLOPS), TF32 tensor dense {} TFLOP/s (BENCH_PEAK_TF32_TFLOPS), HBM {} TB/s (BENCH_PEAK_TBPS); defaults are H100 SXM",
        peaks.f32_tflops, peaks.tf32_tflops, peaks.tbps
    );
    println!("cost model: FLOPs = encoder GEMM 2·n·d_in·d_sae; bytes = 4·(x + W_enc + 2·pre + n·k W_dec rows + out)");
    // Check for the driver first: cudarc's loader panics when libcuda is absent.
    DeviceSpec::Cuda(0).resolve()?;
    let gpu = Gpu::new(0, None)?;
    // BENCH_TF32=1: the encoder GEMM on TF32 tensor cores (as torch with --tf32).
    if tf32 {
        gpu.set_precision(saepipe_cuda::Precision::Tf32);
    }
    let name = gpu.ctx.name().unwrap_or_default();
    println!(
        "device: {name}; dense GEMM: {}; batch {n} tokens, {warmup} warm-up + {iters} timed iterations",
        match (gpu.blas().is_some(), gpu.precision()) {
            (true, saepipe_cuda::Precision::Tf32) => "cuBLAS GEMM on TF32 tensor cores",
            (true, _) => "cuBLAS SGEMM (f32, no TF32)",
            _ => "saepipe GEMM kernel (f32)",
        }
    );
    for (d_in, d_sae, k) in shapes {
        let t0 = Instant::now();
        let data = batches(4, n, d_in, 42);
        let coder = synthetic_coder(d_in, d_sae, k, 7);
        let sae = GpuTopKSae::upload(&gpu, &coder.w_enc, &coder.b_enc, &coder.w_dec, &coder.b_dec, d_in, d_sae, k)?;
        let xs: Vec<CudaSlice<f32>> = data.iter().map(|x| gpu.upload(x)).collect::<Result<_, _>>()?;
        let mut centered = gpu.zeros::<f32>(n * d_in)?;
        let mut pre = gpu.zeros::<f32>(n * d_sae)?;
        let mut idx = gpu.zeros::<i32>(n * k)?;
        let mut val = gpu.zeros::<f32>(n * k)?;
        let mut out = gpu.zeros::<f32>(n * d_in)?;
        gpu.synchronize()?;
        let setup_s = t0.elapsed().as_secs_f64();

        // Correctness on the first batch before any timing.
        sae.forward_on_device(&gpu, &xs[0], n, &mut centered, &mut pre, &mut idx, &mut val, &mut out)?;
        gpu.synchronize()?;
        let check_msg = if check_rows > 0 {
            let (hi, hv, ho) = (gpu.download(&idx)?, gpu.download(&val)?, gpu.download(&out)?);
            check(&coder, &data[0], n, k, &hi, &hv, &ho, check_rows, tol)?
        } else {
            "check skipped (BENCH_CHECK_ROWS=0)".to_string()
        };
        drop(coder);

        for i in 0..warmup {
            sae.forward_on_device(&gpu, &xs[i % xs.len()], n, &mut centered, &mut pre, &mut idx, &mut val, &mut out)?;
        }
        gpu.synchronize()?;
        let t = Instant::now();
        for i in 0..iters {
            sae.forward_on_device(&gpu, &xs[i % xs.len()], n, &mut centered, &mut pre, &mut idx, &mut val, &mut out)?;
        }
        gpu.synchronize()?;
        let s = t.elapsed().as_secs_f64() / iters as f64;

        let (flops, bytes) = cost(n, d_in, d_sae, k);
        let tflops = flops / s / 1e12;
        let tbps = bytes / s / 1e12;
        let bound_s = (flops / (peaks.f32_tflops * 1e12)).max(bytes / (peaks.tbps * 1e12));
        println!(
            "d_in {d_in} d_sae {d_sae} k {k} batch {n}: saepipe {:.3} ms/batch = {:.0} tokens/s; encoder GEMM {:.2} TFLOP/s = {:.1}% of f32 peak, {:.1}% of TF32 peak; traffic {:.2} GB/batch at {:.3} TB/s = {:.1}% of HBM; f32 roofline bound {:.3} ms = {:.1}% of roofline (setup {:.1} s)",
            s * 1e3,
            n as f64 / s,
            tflops,
            100.0 * tflops / peaks.f32_tflops,
            100.0 * tflops / peaks.tf32_tflops,
            bytes / 1e9,
            tbps,
            100.0 * tbps / peaks.tbps,
            bound_s * 1e3,
            100.0 * bound_s / s,
            setup_s
        );
        println!("  check: {check_msg}");
        println!(
            "RESULT impl=saepipe d_in={d_in} d_sae={d_sae} k={k} batch={n} ms={:.4} tok_s={:.0} tflops={:.3} pct_f32={:.2} pct_tf32={:.2} tbps={:.4} pct_hbm={:.2} pct_roofline={:.2}",
            s * 1e3,
            n as f64 / s,
            tflops,
            100.0 * tflops / peaks.f32_tflops,
            100.0 * tflops / peaks.tf32_tflops,
            tbps,
            100.0 * tbps / peaks.tbps,
            100.0 * bound_s / s
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_gpu_encode: error: {e}");
        std::process::exit(1);
    }
}
