//! The forward over other backends against the CPU model: the same forward
//! code runs everywhere, so what differs is each backend's operations and the
//! paths a backend without host buffers or split attention takes (hooks copied
//! out and back, fused attention, the refusal to replace attention scores).
//! Those paths run here on every machine over [`FusedCpu`], the CPU operations
//! presented as a GPU-like backend; on a machine with a GPU the same checks run
//! over `GpuOps` (each prints SKIPPED otherwise; SAEPIPE_REQUIRE_GPU=1 makes
//! that a failure).

use saepipe_core::compute::{Activation, DeviceOps, Heads, Result, ScoreOpts};
use saepipe_cuda::GpuOps;
use saepipe_model::cpu::CpuOps;
use saepipe_model::{
    DeviceModel, HookFn, LnHook, LoadOptions, Model, Processing, RunOutput, RunRequest, Runner, hook_names,
};

mod support;
use support::max_rel;

fn gpt2() -> serde_json::Value {
    serde_json::json!({
        "model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 97,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_inner": null
    })
}

fn neox() -> serde_json::Value {
    serde_json::json!({
        "model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 89, "max_position_embeddings": 256, "rotary_pct": 0.5,
        "rotary_emb_base": 10000, "use_parallel_residual": true, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0
    })
}

/// Grouped-query attention (2 query heads per key/value head), llama3 rope
/// scaling with all three frequency bands, RMSNorm, SwiGLU.
fn llama() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 83,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
        "tie_word_embeddings": false
    })
}

/// One key/value head, head_dim 16 with d_model 32, tied embeddings.
fn mistral() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 48,
        "vocab_size": 71, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "rope_theta": 500.0, "sliding_window": null, "tie_word_embeddings": true
    })
}

/// Query/key/value biases without an output bias.
fn qwen2() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 40, "vocab_size": 61,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "hidden_act": "silu", "rope_theta": 1000000.0,
        "use_sliding_window": false, "sliding_window": 4, "tie_word_embeddings": true
    })
}

/// Gemma 2: pre- and post-norms, GeGLU, query_pre_attn_scalar, attention and
/// final logit soft-capping, a sliding window (4) shorter than the context on
/// alternate layers.
fn gemma2() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
        "vocab_size": 67, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh", "rope_theta": 10000.0, "query_pre_attn_scalar": 24,
        "sliding_window": 4, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0
    })
}

/// Gemma 3: QK-norm, local/global rotary bases, linear scaling on the global
/// layer, local, local, global layers.
fn gemma3() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
        "intermediate_size": 48, "vocab_size": 59, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 16, "sliding_window": 5,
        "sliding_window_pattern": 3, "rope_theta": 1000000, "rope_local_base_freq": 100,
        "rope_scaling": {"rope_type": "linear", "factor": 4.0}
    })
}

/// Qwen3: QK-norm, head_dim 16 with d_model 32.
fn qwen3() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 40,
        "vocab_size": 61, "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "rope_theta": 1000000.0, "use_sliding_window": false, "tie_word_embeddings": true
    })
}

fn load(config: serde_json::Value, processing: Processing, ln_hook: LnHook) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    saepipe_model::synth::write_random_hf_model(dir.path(), &config, 7).unwrap();
    let model = Model::load(dir.path(), &LoadOptions { processing: Some(processing), ln_hook }).unwrap();
    (dir, model)
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn assert_same(what: &str, got: &RunOutput, want: &RunOutput, tol: f32) {
    let mut names: Vec<_> = want.captured.keys().collect();
    names.sort();
    assert_eq!(got.captured.len(), want.captured.len(), "{what}: captured hooks differ");
    for name in names {
        let (ws, wv) = &want.captured[name];
        let (gs, gv) = got.captured.get(name).unwrap_or_else(|| panic!("{what}: {name} not captured"));
        assert_eq!(gs, ws, "{what}: shape of {name}");
        let e = max_rel(gv, wv);
        assert!(e <= tol, "{what}: {name} differs by {e} (relative to its largest value)");
    }
    for (label, g, w) in [("logits", &got.logits, &want.logits), ("loss", &got.loss_per_token, &want.loss_per_token)] {
        assert_eq!(g.is_some(), w.is_some(), "{what}: {label} presence");
        if let (Some(g), Some(w)) = (g, w) {
            let e = max_rel(g, w);
            assert!(e <= tol, "{what}: {label} differs by {e}");
        }
    }
}

fn all_hooks(model: &Model) -> RunRequest<'static> {
    RunRequest {
        capture: hook_names(&model.cfg).into_iter().collect(),
        want_logits: true,
        want_loss: true,
        ..Default::default()
    }
}

fn zero_hook<'a>() -> HookFn<'a> {
    Box::new(|t: &mut [f32], _| t.fill(0.0))
}

/// Every comparison, for one backend against the CPU model.
fn check_backend<O: DeviceOps>(label: &str, make: &dyn Fn(&Model) -> DeviceModel<O>, tol: f32) {
    for (arch, config) in [
        ("gpt2", gpt2()),
        ("neox", neox()),
        ("llama", llama()),
        ("mistral", mistral()),
        ("qwen2", qwen2()),
        ("gemma2", gemma2()),
        ("gemma3", gemma3()),
        ("qwen3", qwen3()),
    ] {
        for (processing, ln_hook) in [
            (Processing::NONE, LnHook::PreAffine),
            (Processing::NONE, LnHook::PostAffine),
            (Processing::FULL, LnHook::PreAffine),
        ] {
            let (_dir, model) = load(config.clone(), processing, ln_hook);
            let dev = make(&model);
            let what = format!("{label} {arch} {processing:?} {ln_hook:?}");
            let (batch, ctx) = (3, 11);
            let toks = tokens(batch * ctx, model.cfg.d_vocab);

            // Every hook, logits and loss.
            let want = model.run(&toks, batch, ctx, &mut all_hooks(&model)).unwrap();
            let got = Runner::run(&dev, &toks, batch, ctx, &mut all_hooks(&model)).unwrap();
            assert_same(&format!("{what}: all hooks"), &got, &want, tol);

            // A replaced hook changes everything after it the same way.
            let replaced = |r: &dyn Runner| {
                let mut req = RunRequest {
                    capture: ["blocks.1.hook_resid_post".to_string()].into(),
                    want_loss: true,
                    ..Default::default()
                };
                req.replace.insert("blocks.0.hook_mlp_out".into(), zero_hook());
                req.replace.insert(
                    "blocks.1.ln1.hook_normalized".into(),
                    Box::new(|t: &mut [f32], _| t.iter_mut().for_each(|v| *v *= 0.5)),
                );
                r.run(&toks, batch, ctx, &mut req).unwrap()
            };
            assert_same(&format!("{what}: replaced"), &replaced(&dev), &replaced(&model), tol);

            // stop_at_layer, and a stop right after a resid_pre hook.
            for (stop, hook) in [
                (Some(1), "blocks.0.hook_resid_post"),
                (None, "blocks.1.hook_resid_pre"),
                (None, "blocks.0.mlp.hook_post"),
            ] {
                let run = |r: &dyn Runner| {
                    r.run(
                        &toks,
                        batch,
                        ctx,
                        &mut RunRequest {
                            capture: [hook.to_string()].into(),
                            stop_at_layer: stop,
                            ..Default::default()
                        },
                    )
                    .unwrap()
                };
                assert_same(&format!("{what}: {hook} stop {stop:?}"), &run(&dev), &run(&model), tol);
            }

            // run_from a captured residual, loss only.
            let resid = want.captured["blocks.1.hook_resid_pre"].1.clone();
            let from = |r: &dyn Runner| {
                r.run_from(
                    resid.clone(),
                    1,
                    &toks,
                    batch,
                    ctx,
                    &mut RunRequest { want_loss: true, ..Default::default() },
                )
                .unwrap()
            };
            let (g, w) = (from(&dev), from(&model));
            assert_same(&format!("{what}: run_from"), &g, &w, tol);
            let full_loss = want.loss_per_token.as_ref().unwrap();
            assert!(
                max_rel(g.loss_per_token.as_ref().unwrap(), full_loss) <= tol,
                "{what}: run_from loss differs from the full run's"
            );

            // Bad input is refused with the CPU model's message.
            let e = Runner::run(&dev, &toks[..5], batch, ctx, &mut RunRequest::default()).unwrap_err().to_string();
            assert!(e.contains("is not batch"), "{e}");
            // Replacing the pattern needs attention in separate steps.
            let mut req = RunRequest::default();
            req.replace.insert("blocks.0.attn.hook_pattern".into(), zero_hook());
            if dev.ops().split_attention() {
                Runner::run(&dev, &toks, batch, ctx, &mut req).unwrap();
            } else {
                let e = Runner::run(&dev, &toks, batch, ctx, &mut req).unwrap_err().to_string();
                assert!(e.contains("hook_pattern") && e.contains("device: cpu"), "{e}");
            }
        }
    }
}

/// Loss-only runs make logits in blocks of rows; more rows than one block.
fn check_loss_blocks<O: DeviceOps>(label: &str, make: &dyn Fn(&Model) -> DeviceModel<O>, tol: f32) {
    let (_dir, model) = load(neox(), Processing::FULL, LnHook::PreAffine);
    let dev = make(&model);
    let (batch, ctx) = (9, 130);
    let toks = tokens(batch * ctx, model.cfg.d_vocab);
    let run =
        |r: &dyn Runner| r.run(&toks, batch, ctx, &mut RunRequest { want_loss: true, ..Default::default() }).unwrap();
    assert_same(&format!("{label}: loss over {} rows", batch * ctx), &run(&dev), &run(&model), tol);
}

/// The CPU operations seen as a device backend: buffers are not host memory
/// to the forward (hooks go through download and write), attention is fused
/// only, and weight matrices are kept transposed, [out, in], as on the GPU.
struct FusedCpu;

fn transposed_back(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    saepipe_core::compute::transpose(w, n, k)
}

impl DeviceOps for FusedCpu {
    type F = Vec<f32>;
    type I = Vec<i32>;
    fn device(&self) -> String {
        "fused-cpu".into()
    }
    fn alloc(&self, n: usize) -> Result<Vec<f32>> {
        CpuOps.alloc(n)
    }
    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        CpuOps.upload(host)
    }
    fn upload_i32(&self, host: &[i32]) -> Result<Vec<i32>> {
        CpuOps.upload_i32(host)
    }
    fn download(&self, buf: &Vec<f32>, n: usize) -> Result<Vec<f32>> {
        CpuOps.download(buf, n)
    }
    fn write(&self, buf: &mut Vec<f32>, host: &[f32]) -> Result<()> {
        CpuOps.write(buf, host)
    }
    fn copy_range(&self, src: &Vec<f32>, offset: usize, n: usize, dst: &mut Vec<f32>) -> Result<()> {
        CpuOps.copy_range(src, offset, n, dst)
    }
    fn matrix(&self, w: &[f32], k: usize, n: usize) -> Result<Vec<f32>> {
        Ok(saepipe_core::compute::transpose(w, k, n))
    }
    fn linear(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        out: &mut Vec<f32>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        CpuOps.linear(x, &transposed_back(w, k, n), bias, out, m, k, n)
    }
    fn layer_norm(
        &self,
        x: &Vec<f32>,
        rows: usize,
        d: usize,
        eps: f32,
        affine: Option<(&Vec<f32>, &Vec<f32>)>,
        out: &mut Vec<f32>,
        scale: &mut Vec<f32>,
    ) -> Result<()> {
        CpuOps.layer_norm(x, rows, d, eps, affine, out, scale)
    }
    fn rms_norm(
        &self,
        x: &Vec<f32>,
        rows: usize,
        d: usize,
        eps: f32,
        weight: Option<&Vec<f32>>,
        out: &mut Vec<f32>,
        scale: &mut Vec<f32>,
    ) -> Result<()> {
        CpuOps.rms_norm(x, rows, d, eps, weight, out, scale)
    }
    fn scale_shift(&self, x: &mut Vec<f32>, rows: usize, d: usize, w: &Vec<f32>, b: &Vec<f32>) -> Result<()> {
        CpuOps.scale_shift(x, rows, d, w, b)
    }
    fn gated_activation(&self, gate: &mut Vec<f32>, linear: &Vec<f32>, n: usize, act: Activation) -> Result<()> {
        CpuOps.gated_activation(gate, linear, n, act)
    }
    fn rotary_freqs(&self, x: &mut Vec<f32>, shape: Heads, rot: usize, inv_freq: &Vec<f32>) -> Result<()> {
        CpuOps.rotary_freqs(x, shape, rot, inv_freq)
    }
    fn repeat_heads(&self, x: &Vec<f32>, shape: Heads, groups: usize, out: &mut Vec<f32>) -> Result<()> {
        CpuOps.repeat_heads(x, shape, groups, out)
    }
    fn activation(&self, x: &mut Vec<f32>, n: usize, act: Activation) -> Result<()> {
        CpuOps.activation(x, n, act)
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, n: usize) -> Result<()> {
        CpuOps.add(x, y, n)
    }
    fn soft_cap(&self, x: &mut Vec<f32>, n: usize, cap: f32) -> Result<()> {
        CpuOps.soft_cap(x, n, cap)
    }
    fn rotary(&self, x: &mut Vec<f32>, shape: Heads, rot: usize, base: f32) -> Result<()> {
        CpuOps.rotary(x, shape, rot, base)
    }
    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        shape: Heads,
        opts: ScoreOpts,
        z: &mut Vec<f32>,
        scores: Option<&mut Vec<f32>>,
        pattern: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        CpuOps.attention(q, k, v, shape, opts, z, scores, pattern)
    }
    fn gather_rows(&self, w: &Vec<f32>, idx: &Vec<i32>, rows: usize, d: usize, out: &mut Vec<f32>) -> Result<()> {
        CpuOps.gather_rows(w, idx, rows, d, out)
    }
    fn token_ce(
        &self,
        logits: &Vec<f32>,
        rows: usize,
        vocab: usize,
        target: &Vec<i32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        CpuOps.token_ce(logits, rows, vocab, target, out)
    }
}

#[test]
fn forward_over_device_shaped_cpu_ops_matches_the_cpu_model() {
    let make = |m: &Model| DeviceModel::new(FusedCpu, m).unwrap();
    check_backend("fused-cpu", &make, 2e-5);
    check_loss_blocks("fused-cpu", &make, 2e-5);
    // The CPU operations themselves behind a device copy of the weights.
    let make = |m: &Model| DeviceModel::new(CpuOps, m).unwrap();
    check_backend("cpu copy", &make, 2e-5);
}

#[test]
fn gpu_forward_matches_the_cpu_model() {
    let Some(g) = support::gpu("gpu_forward_matches_the_cpu_model") else { return };
    let make = |m: &Model| DeviceModel::new(GpuOps::new(g.clone()), m).unwrap();
    check_backend("cuda", &make, 1e-4);
    check_loss_blocks("cuda", &make, 1e-4);
}
