//! CPU forward throughput of saepipe next to TransformerLens, in one run, on the
//! same random-weight Pythia-70m- and GPT-2-small-shaped models (or Llama-3.2-1B-
//! and Gemma-2-2B-shaped ones with a few layers), the same tokens and the same
//! thread count:
//!
//!   cargo run --release -p saepipe-model --example bench_forward
//!   cargo run --release -p saepipe-model --example bench_forward -- --models llama-3.2-1b,gemma-2-2b --batch 4
//!
//! For each shape this writes an HF-format checkpoint (random f32 weights, see
//! `synth`) and a token file to a temporary directory, times saepipe, then runs
//! scripts/bench/model_tl.py on the same files (TransformerLens's converters, no
//! weight processing) and prints tokens/s of both, the ratio, peak RSS, and the
//! mean cross-entropy of both as a check that they computed the same thing.
//!
//! Options: --batch 8 --ctx 128 --reps 5 --threads N (default: all cores; sets
//! the rayon pool and torch.set_num_threads) --models pythia-70m,gpt2-small
//! (also llama-3.2-1b, gemma-2-2b) --layers 2 (blocks of the Llama and Gemma
//! shapes) --workloads W,… (default: every workload for Pythia and GPT-2,
//! collect for Llama and Gemma) --python PATH (default: the workspace's .venv,
//! else python3) --no-tl; --save-model DIR writes the first shape's random
//! model and exits.
//!
//! Workloads:
//!   collect: activation collection as collect_activations runs it (the hook
//!            captured, stop_at_layer one past its block): for Pythia and GPT-2
//!            blocks.3.hook_resid_pre with stop_at_layer 4 (SAELens's
//!            collection), for Llama and Gemma the last block's
//!            hook_resid_post (every block runs on both sides); the mean |x| of
//!            the captured values must agree between the two;
//!   logits:  full forward returning logits [batch, ctx, vocab];
//!   ce:      full forward returning per-token cross-entropy (the mean must agree).

use saepipe_model::{LoadOptions, Model, RunRequest, synth};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// A benchmark shape: its HF config, the hook its collection captures, and
/// the workloads it runs by default.
struct Shape {
    config: serde_json::Value,
    hook: String,
    workloads: &'static [&'static str],
}

fn shape(name: &str, layers: usize) -> Shape {
    let all: &[&str] = &["collect", "logits", "ce"];
    match name {
        "llama-3.2-1b" | "gemma-2-2b" => Shape {
            config: big_config(name, layers),
            hook: format!("blocks.{}.hook_resid_post", layers - 1),
            workloads: &["collect"],
        },
        _ => Shape { config: config(name), hook: "blocks.3.hook_resid_pre".into(), workloads: all },
    }
}

/// Llama 3.2 1B's and Gemma 2 2B's config.json as the hub ships them, with
/// `layers` blocks.
fn big_config(name: &str, layers: usize) -> serde_json::Value {
    match name {
        "llama-3.2-1b" => serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": false,
            "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
            "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
            "num_attention_heads": 32, "num_hidden_layers": layers, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256
        }),
        "gemma-2-2b" => serde_json::json!({
            "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "attention_bias": false,
            "attn_logit_softcapping": 50.0, "bos_token_id": 2, "eos_token_id": 1, "final_logit_softcapping": 30.0,
            "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": 2304, "intermediate_size": 9216, "max_position_embeddings": 8192,
            "num_attention_heads": 8, "num_hidden_layers": layers, "num_key_value_heads": 4, "pad_token_id": 0,
            "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4096,
            "vocab_size": 256000
        }),
        other => unreachable!("{other}"),
    }
}

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
        other => panic!("unknown model shape `{other}` (pythia-70m, gpt2-small, llama-3.2-1b, gemma-2-2b)"),
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
    let layers: usize = opt("--layers").map_or(2, |v| v.parse().unwrap()).max(1);
    let workloads_opt = opt("--workloads");
    let with_tl = !args.iter().any(|a| a == "--no-tl");
    // `--save-model DIR`: only write the random model of the first shape (HF
    // layout) for timing whole pipelines on it, e.g. scripts/bench/collect_pythia70m.sh.
    if let Some(dir) = opt("--save-model") {
        let name = models.split(',').next().unwrap();
        synth::write_random_hf_model(Path::new(&dir), &shape(name, layers).config, 1).unwrap();
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
        let shape = shape(name, layers);
        let workloads: Vec<String> = match &workloads_opt {
            Some(w) => w.split(',').map(String::from).collect(),
            None => shape.workloads.iter().map(|w| w.to_string()).collect(),
        };
        if let Some(w) = workloads.iter().find(|w| !["collect", "logits", "ce"].contains(&w.as_str())) {
            panic!("unknown workload `{w}` (collect, logits, ce)");
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = synth::write_random_hf_model(dir.path(), &shape.config, 1).unwrap();
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
        // As collect_activations runs it: the hook captured, stopping one block past it.
        let hook = saepipe_model::HookName::parse(&shape.hook).unwrap();
        let stop = hook.layer().map(|l| l + 1);
        let (mut mean_abs, mut mean_ce) = (f64::NAN, f64::NAN);
        let mut times = Vec::new();
        for w in &workloads {
            let secs = match w.as_str() {
                "collect" => best_of(reps, || {
                    let mut req =
                        RunRequest { capture: [shape.hook.clone()].into(), stop_at_layer: stop, ..Default::default() };
                    let out = model.run(&tokens, batch, ctx, &mut req).unwrap();
                    let values = &out.captured[&shape.hook].1;
                    assert_eq!(values.len(), batch * ctx * cfg.d_model);
                    mean_abs = values.iter().map(|x| x.abs() as f64).sum::<f64>() / values.len() as f64;
                }),
                "logits" => best_of(reps, || {
                    let mut req = RunRequest { want_logits: true, ..Default::default() };
                    let out = model.run(&tokens, batch, ctx, &mut req).unwrap();
                    assert_eq!(out.logits.unwrap().len(), batch * ctx * cfg.d_vocab);
                }),
                _ => best_of(reps, || {
                    let mut req = RunRequest { want_loss: true, ..Default::default() };
                    let loss = model.run(&tokens, batch, ctx, &mut req).unwrap().loss_per_token.unwrap();
                    mean_ce = loss.iter().map(|&x| x as f64).sum::<f64>() / loss.len() as f64;
                }),
            };
            times.push((w.clone(), secs));
        }
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
                    "--hook",
                    &shape.hook,
                    "--workloads",
                    &workloads.join(","),
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
            // The same computation on both sides: the mean cross-entropy and the
            // mean |x| of the collected activations agree.
            for (what, ours, key) in
                [("mean CE", mean_ce, "mean_ce"), ("collected mean |x|", mean_abs, "collect_mean_abs")]
            {
                let Some(theirs) = t[key].as_f64().filter(|_| ours.is_finite()) else { continue };
                let rel = (ours - theirs).abs() / theirs.abs();
                assert!(
                    rel < 1e-4,
                    "{name}: {what} {ours} (saepipe) vs {theirs} (TransformerLens): not the same computation"
                );
            }
        }
        rows.push((name.to_string(), times, ours_rss, tl, mean_ce, mean_abs));
    }
    println!("{:<13} {:<8} {:>13} {:>12} {:>7}", "model", "workload", "saepipe tok/s", "TL tok/s", "ratio");
    for (name, times, _, tl, _, _) in &rows {
        for (w, secs) in times {
            let ours = (batch * ctx) as f64 / secs;
            match tl.as_ref().and_then(|t| t[format!("{w}_tok_s")].as_f64()) {
                Some(t) => println!("{name:<13} {w:<8} {ours:>13.0} {t:>12.0} {:>6.2}x", ours / t),
                None => println!("{name:<13} {w:<8} {ours:>13.0} {:>12} {:>7}", "-", "-"),
            }
        }
    }
    for (name, _, rss, tl, ce, abs) in &rows {
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MB"));
        let num = |v: Option<f64>| v.filter(|v| v.is_finite()).map_or("-".to_string(), |v| format!("{v:.6}"));
        let theirs = |k: &str| tl.as_ref().and_then(|t| t[k].as_f64());
        println!(
            "{name:<13} peak RSS saepipe {} TL {}; mean CE saepipe {} TL {}; collected mean |x| saepipe {} TL {}",
            fmt(*rss),
            fmt(theirs("peak_rss_mb")),
            num(Some(*ce)),
            num(theirs("mean_ce")),
            num(Some(*abs)),
            num(theirs("collect_mean_abs")),
        );
    }
}
