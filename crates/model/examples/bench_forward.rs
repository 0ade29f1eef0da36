//! CPU forward throughput of saepipe next to TransformerLens, in one run, on the
//! same random-weight Pythia-70m- and GPT-2-small-shaped models, the same tokens
//! and the same thread count:
//!
//!   cargo run --release -p saepipe-model --example bench_forward
//!
//! For each shape this writes an HF-format checkpoint (random f32 weights, see
//! `synth`) and a token file to a temporary directory, times saepipe, then runs
//! scripts/bench/model_tl.py on the same files (TransformerLens's converters, no
//! weight processing) and prints tokens/s of both, the ratio, peak RSS, and the
//! mean cross-entropy of both as a check that they computed the same thing.
//!
//! Options: --batch 8 --ctx 128 --reps 5 --threads N (default: all cores; sets
//! the rayon pool and torch.set_num_threads) --models pythia-70m,gpt2-small
//! --python PATH (default: the workspace's .venv, else python3) --no-tl;
//! --save-model DIR writes the first shape's random model and exits.
//!
//! Workloads:
//!   collect: capture blocks.3.hook_resid_pre with stop_at_layer 4 (SAELens's
//!            activation collection);
//!   logits:  full forward returning logits [batch, ctx, vocab];
//!   ce:      full forward returning per-token cross-entropy.

use saepipe_model::{LoadOptions, Model, RunRequest, synth};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn config(name: &str) -> serde_json::Value {
    match name {
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
        other => panic!("unknown model shape `{other}` (pythia-70m, gpt2-small)"),
    }
}

fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Resets the kernel's peak-RSS counter of this process (Linux), so each model
/// reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .map(|i| args.get(i + 1).cloned().unwrap_or_else(|| panic!("{k} needs a value")))
    };
    let batch: usize = opt("--batch").map_or(8, |v| v.parse().unwrap());
    let ctx: usize = opt("--ctx").map_or(128, |v| v.parse().unwrap());
    let reps: usize = opt("--reps").map_or(5, |v| v.parse().unwrap());
    let threads: usize = opt("--threads")
        .map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |v| v.parse().unwrap());
    let models = opt("--models").unwrap_or_else(|| "pythia-70m,gpt2-small".into());
    let with_tl = !args.iter().any(|a| a == "--no-tl");
    // `--save-model DIR`: only write the random model of the first shape (HF
    // layout) for timing whole pipelines on it, e.g. scripts/bench/collect_pythia70m.sh.
    if let Some(dir) = opt("--save-model") {
        let name = models.split(',').next().unwrap();
        synth::write_random_hf_model(Path::new(&dir), &config(name), 1).unwrap();
        println!("wrote a random {name}-shaped model to {dir}");
        return;
    }
    let python = opt("--python").map(PathBuf::from).unwrap_or_else(|| {
        let venv = workspace_root().join(".venv/bin/python");
        if venv.exists() { venv } else { PathBuf::from("python3") }
    });
    let script = workspace_root().join("scripts/bench/model_tl.py");
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon pool");

    println!("threads {threads}  batch {batch} × ctx {ctx}  best of {reps} after a warm-up");
    let mut rows = Vec::new();
    for name in models.split(',') {
        let dir = tempfile::tempdir().unwrap();
        let cfg = synth::write_random_hf_model(dir.path(), &config(name), 1).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let tokens: Vec<u32> = (0..batch * ctx)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) % cfg.d_vocab as u64) as u32
            })
            .collect();
        let tokens_path = dir.path().join("tokens.u32");
        std::fs::write(&tokens_path, tokens.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>()).unwrap();

        reset_peak_rss();
        let model = Model::load(dir.path(), &LoadOptions::default()).unwrap();
        let collect = best_of(reps, || {
            let mut req = RunRequest {
                capture: ["blocks.3.hook_resid_pre".to_string()].into(),
                stop_at_layer: Some(4),
                ..Default::default()
            };
            let out = model.run(&tokens, batch, ctx, &mut req).unwrap();
            assert_eq!(out.captured["blocks.3.hook_resid_pre"].1.len(), batch * ctx * cfg.d_model);
        });
        let logits = best_of(reps, || {
            let mut req = RunRequest { want_logits: true, ..Default::default() };
            let out = model.run(&tokens, batch, ctx, &mut req).unwrap();
            assert_eq!(out.logits.unwrap().len(), batch * ctx * cfg.d_vocab);
        });
        let mut mean_ce = 0.0;
        let ce = best_of(reps, || {
            let mut req = RunRequest { want_loss: true, ..Default::default() };
            let loss = model.run(&tokens, batch, ctx, &mut req).unwrap().loss_per_token.unwrap();
            mean_ce = loss.iter().map(|&x| x as f64).sum::<f64>() / loss.len() as f64;
        });
        let ours_rss = peak_rss_mb();
        drop(model);

        let tl: Option<serde_json::Value> = with_tl.then(|| {
            let out = Command::new(&python)
                .arg(&script)
                .args([
                    "--model-dir",
                    &dir.path().display().to_string(),
                    "--tokens",
                    &tokens_path.display().to_string(),
                ])
                .args([
                    "--batch",
                    &batch.to_string(),
                    "--ctx",
                    &ctx.to_string(),
                    "--threads",
                    &threads.to_string(),
                    "--reps",
                    &reps.to_string(),
                ])
                .env("PYTHONWARNINGS", "ignore")
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e} (use --python or --no-tl)", python.display()));
            if !out.status.success() {
                panic!("{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str(stdout.lines().last().unwrap_or(""))
                .unwrap_or_else(|e| panic!("TransformerLens output: {e}\n{stdout}"))
        });
        if let Some(t) = &tl {
            if rows.is_empty() {
                println!("TransformerLens {} (torch {}, {} threads)", t["transformer_lens"], t["torch"], t["threads"]);
            }
            let theirs = t["mean_ce"].as_f64().unwrap_or(f64::NAN);
            let rel = (mean_ce - theirs).abs() / theirs.abs();
            assert!(
                rel < 1e-4,
                "{name}: mean CE {mean_ce} (saepipe) vs {theirs} (TransformerLens): not the same computation"
            );
        }
        rows.push((name.to_string(), [("collect", collect), ("logits", logits), ("ce", ce)], ours_rss, tl, mean_ce));
    }
    println!("{:<12} {:<8} {:>13} {:>12} {:>7}", "model", "workload", "saepipe tok/s", "TL tok/s", "ratio");
    for (name, times, _, tl, _) in &rows {
        for (w, secs) in times {
            let ours = (batch * ctx) as f64 / secs;
            match tl.as_ref().and_then(|t| t[format!("{w}_tok_s")].as_f64()) {
                Some(t) => println!("{name:<12} {w:<8} {ours:>13.0} {t:>12.0} {:>6.2}x", ours / t),
                None => println!("{name:<12} {w:<8} {ours:>13.0} {:>12} {:>7}", "-", "-"),
            }
        }
    }
    for (name, _, rss, tl, ce) in &rows {
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MB"));
        println!(
            "{name:<12} peak RSS saepipe {} TL {}; mean CE saepipe {ce:.6} TL {}",
            fmt(*rss),
            fmt(tl.as_ref().and_then(|t| t["peak_rss_mb"].as_f64())),
            tl.as_ref().and_then(|t| t["mean_ce"].as_f64()).map_or("-".into(), |v| format!("{v:.6}"))
        );
    }
}
