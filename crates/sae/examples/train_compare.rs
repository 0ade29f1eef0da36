//! Trains saepipe's [`Trainer`] on an activation matrix written by
//! `scripts/bench/train_compare_saelens.py` and evaluates it on held-out rows,
//! for the comparison against SAELens training on the same data and
//! hyper-parameters.
//!
//!     cargo run --release -p saepipe-sae --example train_compare -- \
//!         --data /tmp/acts.safetensors --config run.json [--save-coder DIR]
//!
//! The data file holds `x` `[n, d_in]` (training rows, consumed in order
//! unless an `order` index tensor `[n]` is present) and `x_eval` `[m, d_in]`.
//! The JSON config is `{"trainer": <TrainConfig>, "batch_size": B,
//! "train_tokens": T, "trace_every": S}`; training runs `T / B` steps over
//! consecutive batches (wrapping around the data if `T > n`).
//!
//! Prints one JSON line: the evaluation on `x_eval`, with
//! `mse` = mean over tokens of Σ_d (x̂ − x)² (SAELens's training and eval
//! `mse`), `mse_per_element` = `mse / d_in` (torch's default `mse_loss`),
//! `l0` = mean active latents per token, `explained_variance` =
//! 1 − mse / mean_t ‖x_t − x̄‖² (SAELens's `explained_variance`), plus a
//! trace of the training steps.

use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use saepipe_sae::st::StFile;
use saepipe_sae::{TrainConfig, Trainer};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    trainer: TrainConfig,
    batch_size: usize,
    train_tokens: u64,
    #[serde(default)]
    trace_every: u64,
    /// Rows of `x` used to initialise the trainer (b_dec mean/median,
    /// normalisation); default: the first batch.
    #[serde(default)]
    init_rows: Option<usize>,
}

fn usage() -> ! {
    eprintln!("usage: train_compare --data FILE.safetensors --config RUN.json [--save-coder DIR]");
    std::process::exit(2)
}

fn main() {
    let mut data = None;
    let mut config = None;
    let mut save = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().map(PathBuf::from),
            "--config" => config = args.next().map(PathBuf::from),
            "--save-coder" => save = args.next().map(PathBuf::from),
            _ => usage(),
        }
    }
    let (Some(data), Some(config)) = (data, config) else { usage() };
    if let Err(e) = run(&data, &config, save.as_deref()) {
        eprintln!("train_compare: {e}");
        std::process::exit(1);
    }
}

fn run(
    data: &std::path::Path,
    config: &std::path::Path,
    save: Option<&std::path::Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let rc: RunConfig = serde_json::from_str(&std::fs::read_to_string(config)?)?;
    let f = StFile::open(data)?;
    let shape = f.shape("x")?;
    let [n, d_in] = shape[..] else {
        return Err(format!("x must be 2-d, found {shape:?}").into());
    };
    let x = f.f32("x", None)?;
    let eshape = f.shape("x_eval")?;
    if eshape.len() != 2 || eshape[1] != d_in {
        return Err(format!("x_eval must be [m, {d_in}], found {eshape:?}").into());
    }
    let m = eshape[0];
    let x_eval = f.f32("x_eval", None)?;
    let order: Option<Vec<u64>> = if f.has("order") {
        let o = f.u64("order")?;
        if o.len() != n || o.iter().any(|&i| i as usize >= n) {
            return Err("order must be a permutation index of length n".into());
        }
        Some(o)
    } else {
        None
    };
    drop(f);
    let b = rc.batch_size;
    if b == 0 || b > n {
        return Err(format!("batch_size {b} must be in 1..={n}").into());
    }
    let steps = rc.train_tokens / b as u64;
    let row = |i: usize| -> &[f32] {
        let r = order.as_ref().map_or(i, |o| o[i] as usize);
        &x[r * d_in..(r + 1) * d_in]
    };
    let init_rows = rc.init_rows.unwrap_or(b).clamp(1, n);
    let init: Vec<f32> = (0..init_rows).flat_map(|i| row(i).iter().copied()).collect();

    let mut cfg = rc.trainer.clone();
    if cfg.total_steps == 0 {
        cfg.total_steps = steps;
    }
    let arch = serde_json::to_value(&cfg.arch)?;
    let mut t = Trainer::new(cfg, d_in, d_in, &init, None)?;
    let mut batch = vec![0f32; b * d_in];
    let mut trace = Vec::new();
    let start = Instant::now();
    let mut pos = 0usize;
    for s in 0..steps {
        for r in 0..b {
            batch[r * d_in..(r + 1) * d_in].copy_from_slice(row(pos));
            pos = (pos + 1) % n;
        }
        let st = t.step(&batch, None, b)?;
        if rc.trace_every > 0 && (s % rc.trace_every == 0 || s + 1 == steps) {
            trace.push(json!({
                "step": st.step,
                "lr": st.lr,
                "l1_coefficient": st.l1_coefficient,
                "sparsity_loss": st.l1,
                "loss": st.loss,
                "mse": st.mse,
                "l0": st.l0,
                "dead_fraction": st.dead_fraction,
            }));
        }
    }
    let train_seconds = start.elapsed().as_secs_f64();

    let coder = t.to_coder()?;
    let (acts, out) = coder.forward(&x_eval, m)?;
    let l0 = acts.val.iter().filter(|v| **v != 0.0).count() as f64 / m as f64;
    let mut mean = vec![0f64; d_in];
    for r in x_eval.chunks_exact(d_in) {
        mean.iter_mut().zip(r).for_each(|(a, v)| *a += *v as f64);
    }
    mean.iter_mut().for_each(|v| *v /= m as f64);
    let (mut sse, mut var) = (0f64, 0f64);
    for (xr, yr) in x_eval.chunks_exact(d_in).zip(out.chunks_exact(d_in)) {
        for d in 0..d_in {
            sse += (yr[d] as f64 - xr[d] as f64).powi(2);
            var += (xr[d] as f64 - mean[d]).powi(2);
        }
    }
    let mse = sse / m as f64;
    // JumpReLU: where the thresholds and decoder norms ended up.
    let (threshold_mean, decoder_norm_mean) = match t.threshold() {
        Some(th) => {
            let norms = coder.decoder_norms();
            (
                Some(th.iter().map(|v| v.max(0.0) as f64).sum::<f64>() / th.len() as f64),
                Some(norms.iter().map(|v| *v as f64).sum::<f64>() / norms.len() as f64),
            )
        }
        None => (None, None),
    };
    if let Some(dir) = save {
        saepipe_sae::write_saelens(&coder, dir)?;
    }
    let res = json!({
        "arch": arch,
        "d_in": d_in,
        "d_sae": t.config().d_sae,
        "steps": steps,
        "batch_size": b,
        "train_tokens": t.tokens_seen(),
        "eval_tokens": m,
        "mse": mse,
        "mse_per_element": mse / d_in as f64,
        "l0": l0,
        "explained_variance": 1.0 - sse / var,
        "dead_fraction": t.dead_fraction(),
        "threshold_mean": threshold_mean,
        "decoder_norm_mean": decoder_norm_mean,
        "train_seconds": train_seconds,
        "threads": rayon::current_num_threads(),
        "trace": trace,
    });
    println!("{res}");
    Ok(())
}
