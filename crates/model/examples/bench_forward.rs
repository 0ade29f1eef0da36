//! CPU forward throughput on random-weight Pythia-70m- and GPT-2-small-shaped
//! models, next to TransformerLens's numbers from scripts/bench/model_tl.py.
//!
//!   .venv/bin/python scripts/bench/model_tl.py > /tmp/tl.json
//!   cargo run --release -p saepipe-model --example bench_forward -- --tl /tmp/tl.json
//!
//! Options: --batch 32 --ctx 128 --reps 3 --models pythia-70m,gpt2-small --tl FILE.
//! Threads: the rayon pool (RAYON_NUM_THREADS; default all cores); run the
//! Python side with the same --threads.
//!
//! Workloads (the same as the Python script):
//!   collect: capture blocks.3.hook_resid_pre with stop_at_layer 4 (SAELens's
//!            activation collection), the output an activation store receives;
//!   ce:      full forward with per-token cross-entropy.

use saepipe_model::{LoadOptions, Model, RunRequest, synth};
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |k: &str| args.iter().position(|a| a == k).map(|i| args[i + 1].clone());
    let batch: usize = opt("--batch").map_or(32, |v| v.parse().unwrap());
    let ctx: usize = opt("--ctx").map_or(128, |v| v.parse().unwrap());
    let reps: usize = opt("--reps").map_or(3, |v| v.parse().unwrap());
    let models = opt("--models").unwrap_or_else(|| "pythia-70m,gpt2-small".into());
    let tl: Option<serde_json::Value> = opt("--tl").map(|p| serde_json::from_str(&std::fs::read_to_string(&p).expect("read --tl file")).expect("--tl JSON"));
    println!("threads {}  batch {batch} × ctx {ctx}  best of {reps}", rayon::current_num_threads());
    if let Some(t) = &tl {
        println!("TransformerLens {} (torch {}, {} threads)", t["transformer_lens"], t["torch"], t["threads"]);
    }
    println!("{:<12} {:<8} {:>12} {:>12} {:>7}", "model", "workload", "saepipe tok/s", "TL tok/s", "ratio");
    for name in models.split(',') {
        let dir = tempfile::tempdir().unwrap();
        let cfg = synth::write_random_hf_model(dir.path(), &config(name), 1).unwrap();
        let model = Model::load(dir.path(), &LoadOptions::default()).unwrap();
        let tokens: Vec<u32> = (0..batch * ctx).map(|i| ((i as u64 * 2654435761) % cfg.d_vocab as u64) as u32).collect();
        let n = (batch * ctx) as f64;
        let collect = best_of(reps, || {
            let mut req = RunRequest { capture: ["blocks.3.hook_resid_pre".to_string()].into(), stop_at_layer: Some(4), ..Default::default() };
            let out = model.run(&tokens, batch, ctx, &mut req).unwrap();
            assert_eq!(out.captured["blocks.3.hook_resid_pre"].1.len(), batch * ctx * cfg.d_model);
        });
        let ce = best_of(reps, || {
            let mut req = RunRequest { want_loss: true, ..Default::default() };
            let out = model.run(&tokens, batch, ctx, &mut req).unwrap();
            assert!(out.loss_per_token.unwrap()[0].is_finite());
        });
        for (w, secs, key) in [("collect", collect, "collect_tok_s"), ("ce", ce, "ce_tok_s")] {
            let ours = n / secs;
            let theirs = tl.as_ref().and_then(|t| t[name][key].as_f64());
            match theirs {
                Some(t) => println!("{name:<12} {w:<8} {ours:>12.0} {t:>12.0} {:>6.2}x", ours / t),
                None => println!("{name:<12} {w:<8} {ours:>12.0} {:>12} {:>7}", "-", "-"),
            }
        }
    }
}
