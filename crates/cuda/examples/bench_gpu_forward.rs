//! GPU forward throughput of saepipe next to TransformerLens on the same GPU, in
//! one run, on the same random-weight Pythia-70m- and GPT-2-small-shaped models
//! and the same tokens (the GPU counterpart of saepipe-model's bench_forward):
//!
//!   cargo run --release -p saepipe-cuda --example bench_gpu_forward
//!
//! For each shape this writes an HF-format checkpoint (random f32 weights, see
//! `saepipe_model::synth`) and a token file to a temporary directory, loads it,
//! copies it to the GPU (`DeviceModel::new(GpuOps::new(gpu), &model)`), times saepipe's workloads, then runs
//! scripts/bench/model_tl.py --device cuda on the same files (TransformerLens's
//! converters, no weight processing, TF32 off) and prints tokens/s of both, the
//! ratio saepipe / TransformerLens, peak GPU memory, and the mean cross-entropy
//! of saepipe on the GPU, saepipe on the CPU and TransformerLens as a check that
//! all computed the same thing (a relative difference above 1e-3 is reported as
//! a MISMATCH and the exit status is 2).
//!
//! Options: --batch 32 --ctx 128 --reps 10 (best of, after one warm-up)
//! --models pythia-70m,gpt2-small --gpu 0 (CUDA ordinal, both sides) --logits
//! (also time full forwards returning logits) --no-tl --no-cpu-check (skip the
//! CPU reference forward). Python: $PYTHON, else the workspace's .venv, else
//! python3. Without a GPU (or its driver) this exits with status 1 and says why.
//!
//! Workloads (saepipe through `Runner::run`, which returns host memory, so each
//! time includes the device→host copy of what the caller gets; every timing
//! ends with a `Gpu::synchronize`):
//!   collect: capture blocks.3.hook_resid_pre with stop_at_layer 4 (activation
//!            collection). TransformerLens: run_with_cache, the cache left on
//!            the GPU (`collect`), and with the activations copied to host
//!            memory (`collect+d2h`, what saepipe's time includes);
//!   ce:      full forward returning the per-token cross-entropy;
//!   logits:  (--logits) full forward returning logits [batch, ctx, vocab];
//!            saepipe's time includes copying them to the host, TL's does not.
//!
//! saepipe's GEMMs run in f32 (cuBLAS SGEMM when libcublas loads, else saepipe's
//! own kernel); the line starting `device:` says which.

use cudarc::driver::sys;
use saepipe_cuda::{DeviceSpec, Gpu, GpuOps};
use saepipe_model::{DeviceModel, LoadOptions, Model, RunRequest, Runner, synth};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error>;

const HOOK: &str = "blocks.3.hook_resid_pre";
/// Largest relative difference of mean CEs (and of collected activations) accepted.
const TOL: f64 = 1e-3;

/// HF configs of the benchmark shapes (as saepipe-model's bench_forward).
fn config(name: &str) -> Result<serde_json::Value, BoxError> {
    Ok(match name {
        "pythia-70m" => serde_json::json!({
            "model_type": "gpt_neox", "hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8,
            "intermediate_size": 2048, "vocab_size": 50304, "max_position_embeddings": 2048, "rotary_pct": 0.25,
            "rotary_emb_base": 10000, "use_parallel_residual": true, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0
        }),
        "gpt2-small" => serde_json::json!({
            "model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_inner": null
        }),
        other => return Err(format!("unknown model shape `{other}` (pythia-70m, gpt2-small)").into()),
    })
}

/// The token ids of bench_forward (same generator and seed).
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// Best wall time of `reps` calls of `f` after one warm-up, each ended by a device synchronize.
fn best_of(gpu: &Gpu, reps: usize, mut f: impl FnMut() -> Result<(), BoxError>) -> Result<f64, BoxError> {
    f()?;
    gpu.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        gpu.synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn mean(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len().max(1) as f64
}

fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// The device's stream-ordered memory pool, which cudarc allocates from when
/// the device supports it; its high-water mark is saepipe's peak GPU memory
/// (weights + buffers, like torch.cuda.max_memory_allocated).
struct Pool(sys::CUmemoryPool);

impl Pool {
    fn of(gpu: &Gpu) -> Option<Pool> {
        if !gpu.ctx.has_async_alloc() {
            return None;
        }
        gpu.ctx.bind_to_thread().ok()?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: writes one handle; the context of this device is current.
        unsafe { sys::cuDeviceGetMemPool(&mut pool, gpu.ctx.cu_device()) }.result().ok()?;
        Some(Pool(pool))
    }

    /// Sets the high-water mark to the current use.
    fn reset_peak(&self) {
        let mut zero: u64 = 0;
        // SAFETY: USED_MEM_HIGH takes a cuuint64_t (only 0 is allowed).
        let _ = unsafe {
            sys::cuMemPoolSetAttribute(
                self.0,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut zero as *mut u64).cast(),
            )
        };
    }

    fn peak_mb(&self) -> Option<f64> {
        let mut v: u64 = 0;
        // SAFETY: USED_MEM_HIGH writes a cuuint64_t.
        unsafe {
            sys::cuMemPoolGetAttribute(
                self.0,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut v as *mut u64).cast(),
            )
        }
        .result()
        .ok()?;
        Some(v as f64 / (1u64 << 20) as f64)
    }
}

/// The workspace root: where this example was built from, else the current
/// directory (a binary run from a checkout elsewhere).
fn workspace_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built.join("scripts/bench/model_tl.py").exists() { built } else { PathBuf::from(".") }
}

struct Options {
    models: String,
    batch: usize,
    ctx: usize,
    reps: usize,
    gpu: usize,
    logits: bool,
    tl: bool,
    cpu_check: bool,
}

const USAGE: &str = "usage: bench_gpu_forward [--models pythia-70m,gpt2-small] [--batch 32] [--ctx 128] [--reps 10] [--gpu 0] [--logits] [--no-tl] [--no-cpu-check]   (python: $PYTHON, else .venv/bin/python, else python3)";

fn parse_args() -> Result<Option<Options>, BoxError> {
    let mut o = Options {
        models: "pythia-70m,gpt2-small".into(),
        batch: 32,
        ctx: 128,
        reps: 10,
        gpu: 0,
        logits: false,
        tl: true,
        cpu_check: true,
    };
    let mut args = std::env::args().skip(1);
    fn value(args: &mut impl Iterator<Item = String>, what: &str) -> Result<String, BoxError> {
        args.next().ok_or_else(|| format!("{what} needs a value\n{USAGE}").into())
    }
    fn number(args: &mut impl Iterator<Item = String>, what: &str) -> Result<usize, BoxError> {
        let v = value(args, what)?;
        v.parse().map_err(|_| format!("{what}: `{v}` is not a non-negative integer").into())
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}\n(see the doc comment at the top of crates/cuda/examples/bench_gpu_forward.rs)");
                return Ok(None);
            }
            "--models" => o.models = value(&mut args, "--models")?,
            "--batch" => o.batch = number(&mut args, "--batch")?,
            "--ctx" => o.ctx = number(&mut args, "--ctx")?,
            "--reps" => o.reps = number(&mut args, "--reps")?,
            "--gpu" => o.gpu = number(&mut args, "--gpu")?,
            "--logits" => o.logits = true,
            "--no-tl" => o.tl = false,
            "--no-cpu-check" => o.cpu_check = false,
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    if o.batch == 0 || o.ctx < 2 || o.reps == 0 {
        return Err("--batch and --reps must be > 0 and --ctx ≥ 2 (the loss needs two positions)".into());
    }
    Ok(Some(o))
}

/// One shape's results.
struct Row {
    name: String,
    /// (workload, seconds per batch)
    times: Vec<(&'static str, f64)>,
    peak_gpu_mb: Option<f64>,
    ce_gpu: f64,
    ce_cpu: Option<f64>,
    /// max |GPU − CPU| / max |CPU| of the collected activations.
    acts_rel: Option<f64>,
    tl: Result<serde_json::Value, String>,
}

/// Runs scripts/bench/model_tl.py on the GPU; its last stdout line is one JSON object.
fn run_tl(python: &Path, script: &Path, dir: &Path, tokens: &Path, o: &Options) -> Result<serde_json::Value, String> {
    let out = Command::new(python)
        .arg(script)
        .args(["--model-dir", &dir.display().to_string(), "--tokens", &tokens.display().to_string()])
        .args(["--batch", &o.batch.to_string(), "--ctx", &o.ctx.to_string(), "--reps", &o.reps.to_string()])
        .args(["--device", &format!("cuda:{}", o.gpu)])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .map_err(|e| format!("running {}: {e} (set $PYTHON or pass --no-tl)", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
        return Err(format!(
            "{} {} failed ({}):\n{}",
            python.display(),
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .map_err(|e| format!("TransformerLens output: {e}\n{stdout}"))
}

fn bench_shape(
    gpu: &Arc<Gpu>,
    pool: Option<&Pool>,
    name: &str,
    o: &Options,
    python: &Path,
    script: &Path,
) -> Result<Row, BoxError> {
    let (batch, ctx) = (o.batch, o.ctx);
    let dir = tempfile::tempdir()?;
    let cfg = synth::write_random_hf_model(dir.path(), &config(name)?, 1)?;
    let toks = tokens(batch * ctx, cfg.d_vocab);
    let tokens_path = dir.path().join("tokens.u32");
    std::fs::write(&tokens_path, toks.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>())?;

    let model = Model::load(dir.path(), &LoadOptions::default())?;
    if let Some(p) = pool {
        p.reset_peak();
    }
    let gm = DeviceModel::new(GpuOps::new(gpu.clone()), &model)?;
    // The CPU reference: the same collection and loss, once.
    let cpu_ref = if o.cpu_check {
        let t = Instant::now();
        let mut req = RunRequest { capture: [HOOK.to_string()].into(), stop_at_layer: Some(4), ..Default::default() };
        let acts = model
            .run(&toks, batch, ctx, &mut req)?
            .captured
            .remove(HOOK)
            .ok_or("CPU model: no captured activations")?
            .1;
        let mut req = RunRequest { want_loss: true, ..Default::default() };
        let ce = mean(&model.run(&toks, batch, ctx, &mut req)?.loss_per_token.ok_or("CPU model: no loss")?);
        eprintln!("{name}: CPU reference forward in {:.1} s", t.elapsed().as_secs_f64());
        Some((acts, ce))
    } else {
        None
    };
    drop(model);

    let collect_req =
        || RunRequest { capture: [HOOK.to_string()].into(), stop_at_layer: Some(4), ..Default::default() };
    let mut acts = Vec::new();
    let collect = best_of(gpu, o.reps, || {
        let mut out = gm.run(&toks, batch, ctx, &mut collect_req())?;
        acts = out.captured.remove(HOOK).ok_or("GPU model: no captured activations")?.1;
        if acts.len() != batch * ctx * cfg.d_model {
            return Err(format!("captured {} values, expected {}", acts.len(), batch * ctx * cfg.d_model).into());
        }
        Ok(())
    })?;
    let mut ce_gpu = f64::NAN;
    let ce = best_of(gpu, o.reps, || {
        let mut req = RunRequest { want_loss: true, ..Default::default() };
        ce_gpu = mean(&gm.run(&toks, batch, ctx, &mut req)?.loss_per_token.ok_or("GPU model: no loss")?);
        Ok(())
    })?;
    let mut times = vec![("collect", collect), ("ce", ce)];
    if o.logits {
        let logits = best_of(gpu, o.reps, || {
            let mut req = RunRequest { want_logits: true, ..Default::default() };
            let n = gm.run(&toks, batch, ctx, &mut req)?.logits.ok_or("GPU model: no logits")?.len();
            if n != batch * ctx * cfg.d_vocab {
                return Err(format!("{n} logits, expected {}", batch * ctx * cfg.d_vocab).into());
            }
            Ok(())
        })?;
        times.push(("logits", logits));
    }
    let peak_gpu_mb = pool.and_then(Pool::peak_mb);
    // Free the device for TransformerLens.
    drop(gm);
    gpu.synchronize()?;

    let (ce_cpu, acts_rel) = match cpu_ref {
        Some((want, ce)) => {
            let scale = want.iter().fold(0f32, |m, &v| m.max(v.abs())).max(f32::MIN_POSITIVE);
            let max_diff = want.iter().zip(&acts).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let rel = if acts.iter().all(|v| v.is_finite()) { (max_diff / scale) as f64 } else { f64::NAN };
            (Some(ce), Some(rel))
        }
        None => (None, None),
    };
    let tl = if o.tl { run_tl(python, script, dir.path(), &tokens_path, o) } else { Err("skipped (--no-tl)".into()) };
    if let (Err(e), true) = (&tl, o.tl) {
        eprintln!("!!! {name}: TransformerLens side failed: {e}");
    }
    Ok(Row { name: name.to_string(), times, peak_gpu_mb, ce_gpu, ce_cpu, acts_rel, tl })
}

fn run() -> Result<i32, BoxError> {
    let Some(o) = parse_args()? else { return Ok(0) };
    // Check for the driver first: cudarc's loader panics when libcuda is absent.
    DeviceSpec::Cuda(o.gpu).resolve()?;
    let gpu = Arc::new(Gpu::new(o.gpu, None)?);
    let pool = Pool::of(&gpu);
    let python = std::env::var_os("PYTHON").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        let venv = workspace_root().join(".venv/bin/python");
        if venv.exists() { venv } else { PathBuf::from("python3") }
    });
    let script = workspace_root().join("scripts/bench/model_tl.py");
    println!(
        "device: {} (cuda:{}); dense GEMMs: {:?}, {}; batch {} × ctx {}; best of {} after a warm-up",
        gpu.ctx.name().unwrap_or_default(),
        o.gpu,
        gpu.precision(),
        if gpu.blas().is_some() { "cuBLAS SGEMM" } else { "saepipe's GEMM kernel (libcublas not loaded)" },
        o.batch,
        o.ctx,
        o.reps
    );

    let mut rows = Vec::new();
    for name in o.models.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        rows.push(bench_shape(&gpu, pool.as_ref(), name, &o, &python, &script)?);
    }

    if let Some(t) = rows.iter().find_map(|r| r.tl.as_ref().ok()) {
        println!(
            "TransformerLens {} (torch {}, {}, TF32 {})",
            t["transformer_lens"],
            t["torch"],
            t["gpu"],
            if t["tf32"].as_bool() == Some(false) { "off" } else { "on" }
        );
    }
    let n = (o.batch * o.ctx) as f64;
    println!("{:<12} {:<12} {:>13} {:>12} {:>7}", "model", "workload", "saepipe tok/s", "TL tok/s", "ratio");
    for r in &rows {
        let tl = |key: &str| r.tl.as_ref().ok().and_then(|t| t[key].as_f64());
        let mut lines: Vec<(&str, f64, Option<f64>)> = Vec::new();
        for &(w, secs) in &r.times {
            lines.push((w, secs, tl(&format!("{w}_tok_s"))));
            if w == "collect" {
                lines.push(("collect+d2h", secs, tl("collect_host_tok_s")));
            }
        }
        for (w, secs, theirs) in lines {
            let ours = n / secs;
            match theirs {
                Some(t) => println!("{:<12} {w:<12} {ours:>13.0} {t:>12.0} {:>6.2}x", r.name, ours / t),
                None => println!("{:<12} {w:<12} {ours:>13.0} {:>12} {:>7}", r.name, "-", "-"),
            }
        }
    }
    println!(
        "(saepipe's times include copying its results to host memory; TL's `collect` leaves the cache on the GPU, `collect+d2h` copies it with .cpu())"
    );

    let mut status = 0;
    for r in &rows {
        let mb = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MB"));
        let tl_ce = r.tl.as_ref().ok().and_then(|t| t["mean_ce"].as_f64());
        let ce = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
        println!(
            "{:<12} peak GPU memory saepipe {} TL {}; mean CE saepipe GPU {:.6} CPU {} TL {}",
            r.name,
            mb(r.peak_gpu_mb),
            mb(r.tl.as_ref().ok().and_then(|t| t["peak_gpu_mb"].as_f64())),
            r.ce_gpu,
            ce(r.ce_cpu),
            ce(tl_ce)
        );
        if let Some(rel) = r.acts_rel {
            println!("{:<12} collected {HOOK}: max |GPU − CPU| / max |CPU| = {rel:.2e}", r.name);
            if rel.is_nan() || rel > TOL {
                eprintln!(
                    "!!! {}: MISMATCH: the GPU's collected activations differ from the CPU model's by {rel:.2e} > {TOL:e} (relative to the largest value)",
                    r.name
                );
                status = 2;
            }
        }
        for (who, other) in [("CPU saepipe", r.ce_cpu), ("TransformerLens", tl_ce)] {
            if let Some(v) = other {
                let rel = rel_diff(r.ce_gpu, v);
                if rel.is_nan() || rel > TOL {
                    eprintln!(
                        "!!! {}: MISMATCH: mean CE {:.6} (saepipe GPU) vs {v:.6} ({who}): relative difference {rel:.2e} > {TOL:e}: not the same computation",
                        r.name, r.ce_gpu
                    );
                    status = 2;
                }
            }
        }
        if o.tl && r.tl.is_err() && status == 0 {
            status = 1;
        }
    }
    Ok(status)
}

fn main() {
    match run() {
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("bench_gpu_forward: error: {e}");
            std::process::exit(1);
        }
    }
}
