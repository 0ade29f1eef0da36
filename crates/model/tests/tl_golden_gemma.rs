//! Every hook point, the logits and the per-token loss of Gemma 2, Gemma 3
//! and Qwen3 equal TransformerLens 3.9's within 1e-4 relative, without and
//! with weight processing (fixtures from scripts/fixtures/model_tl_gemma.py,
//! whose TransformerLens runs agree with transformers' own log-probs):
//! `gemma2` has pre- and post-norms, GeGLU, query_pre_attn_scalar, attention
//! and final logit soft-capping and a sliding window shorter than the
//! context on its local layer; `gemma3` QK-norm, local/global rotary bases
//! and linear rope scaling on the global layer, over a local, local, global
//! layer pattern; `qwen3` QK-norm with head_dim ≠
//! d_model / n_heads and grouped key/value heads.

#[path = "support/golden.rs"]
mod golden;
#[path = "support/shards.rs"]
mod shards;

use golden::{check_optional, check_runner, fixture, tokens};
use saepipe_model::{LnHook, LoadOptions, Model, Processing, RunRequest};
use safetensors::SafeTensors;
use std::path::Path;

const FAMILY: [&str; 3] = ["gemma2", "gemma3", "qwen3"];
const MODES: [&str; 6] = [
    "none",
    "full",
    "fold_ln",
    "fold_ln+center_writing_weights",
    "fold_ln+center_unembed",
    "fold_ln+fold_value_biases",
];

fn load(dir: &Path, processing: Processing, ln_hook: LnHook) -> Model {
    Model::load(dir, &LoadOptions { processing: Some(processing), ln_hook }).unwrap()
}

fn meta(arch: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(arch).join("meta.json")).unwrap()).unwrap()
}

/// The golden file of a mode (meta.json's `same_as` names the mode whose
/// identical hooks were stored).
fn golden_mode(arch: &str, mode: &str) -> String {
    meta(arch)["same_as"][mode].as_str().unwrap_or(mode).to_string()
}

fn check(arch: &str, mode: &str) {
    let model = load(&fixture(arch), Processing::parse(mode).unwrap(), LnHook::PreAffine);
    check_runner(&model, arch, &golden_mode(arch, mode), 1e-4);
}

#[test]
fn gemma2_without_processing() {
    check("gemma2", "none");
}
#[test]
fn gemma2_with_full_processing() {
    check("gemma2", "full");
}
#[test]
fn gemma3_without_processing() {
    check("gemma3", "none");
}
#[test]
fn gemma3_with_full_processing() {
    check("gemma3", "full");
}
#[test]
fn qwen3_without_processing() {
    check("qwen3", "none");
}
#[test]
fn qwen3_with_full_processing() {
    check("qwen3", "full");
}

/// TransformerLens's optional hooks, without and with weight processing.
#[test]
fn optional_hooks_match_transformer_lens() {
    for arch in ["gemma2", "gemma3", "qwen3"] {
        for mode in ["none", "full"] {
            let model = load(&fixture(arch), Processing::parse(mode).unwrap(), LnHook::PreAffine);
            check_optional(&model, arch, &golden_mode(arch, mode), mode, 1e-4);
        }
    }
}

#[test]
fn processing_steps_one_at_a_time() {
    for arch in FAMILY {
        for mode in &MODES[2..] {
            check(arch, mode);
        }
        let meta = meta(arch);
        // RMSNorm models: no centering of writing weights; zero value biases.
        assert_eq!(meta["same_as"]["fold_ln+center_writing_weights"], "fold_ln");
        assert_eq!(meta["same_as"]["fold_ln+fold_value_biases"], "fold_ln");
        // Final logit soft-capping turns center_unembed off (Gemma 2 only).
        let capped = arch == "gemma2";
        assert_eq!(meta["same_as"]["fold_ln+center_unembed"] == "fold_ln", capped, "{arch}");
    }
}

/// What TransformerLens applies is what the model records: no centering of
/// writing weights (RMSNorm), no center_unembed under final soft-capping; the
/// post-norms and QK-norms stay unfolded.
#[test]
fn models_record_the_processing_they_get() {
    let gemma2 = load(&fixture("gemma2"), Processing::FULL, LnHook::PreAffine);
    assert_eq!(
        gemma2.processing,
        Processing { center_writing_weights: false, center_unembed: false, ..Processing::FULL }
    );
    assert!(gemma2.params.layers.iter().all(|l| l.ln1.is_none() && l.ln2.is_none()));
    assert!(gemma2.params.layers.iter().all(|l| l.ln1_post.is_some() && l.ln2_post.is_some()));
    let gemma3 = load(&fixture("gemma3"), Processing::FULL, LnHook::PreAffine);
    assert_eq!(gemma3.processing, Processing { center_writing_weights: false, ..Processing::FULL });
    assert!(gemma3.params.layers.iter().all(|l| l.q_norm.is_some() && l.k_norm.is_some()));
}

/// RMSNorm's `hook_normalized` is before its weight under TransformerLens 2.x
/// semantics too.
#[test]
fn post_affine_semantics_leave_rms_hooks_unchanged() {
    for arch in FAMILY {
        let model = load(&fixture(arch), Processing::NONE, LnHook::PostAffine);
        check_runner(&model, arch, "none", 1e-4);
    }
}

/// bf16 checkpoints in shards, as the hub ships Gemma and Qwen3, read as bf16
/// and computed in f32.
#[test]
fn bf16_sharded_checkpoint_matches_f32() {
    for arch in FAMILY {
        shards::bf16_shards_match_f32(arch, "blocks.1.attn.hook_rot_k");
    }
    shards::bf16_shards_match_f32("gemma3", "blocks.2.attn.q_norm.hook_normalized");
}

#[test]
fn configs_and_hooks_of_each_family() {
    let gemma2 = load(&fixture("gemma2"), Processing::NONE, LnHook::PreAffine);
    let c = &gemma2.cfg;
    assert_eq!((c.attn_soft_cap, c.final_soft_cap, c.query_pre_attn_scalar), (Some(2.0), Some(3.0), Some(24.0)));
    assert_eq!((c.window(0), c.window(1), c.post_norms, c.qk_norm), (Some(4), None, true, false));
    assert!(gemma2.check_hook("blocks.1.ln2_post.hook_normalized").is_ok());
    assert!(gemma2.check_hook("blocks.1.attn.q_norm.hook_scale").is_err());

    let gemma3 = load(&fixture("gemma3"), Processing::NONE, LnHook::PreAffine);
    let c = &gemma3.cfg;
    assert_eq!((c.window(0), c.window(1), c.window(2)), (Some(4), Some(4), None));
    assert_eq!((c.rotary_base, c.rope_inv_freq_local()[2]), (1_000_000.0, 0.1));
    // Linear scaling (factor 4) on the global layer only.
    assert_eq!(c.rope_scaling, Some(saepipe_model::config::RopeScaling::Linear { factor: 4.0 }));
    assert_eq!((c.rope_inv_freq()[0], c.rope_inv_freq_local()[0]), (0.25, 1.0));
    assert_eq!((c.attn_soft_cap, c.final_soft_cap, c.qk_norm), (None, None, true));
    // TransformerLens normalizes query and key heads as rows of one matrix.
    assert_eq!(gemma3.hook_shape("blocks.0.attn.q_norm.hook_scale", 2, 5).unwrap(), vec![40, 1]);
    assert_eq!(gemma3.hook_shape("blocks.0.attn.q_norm.hook_normalized", 2, 5).unwrap(), vec![40, 8]);
    assert_eq!(gemma3.hook_shape("blocks.0.attn.k_norm.hook_normalized", 2, 5).unwrap(), vec![10, 8]);
    let h = gemma3.check_hook("blocks.2.attn.q_norm.hook_normalized").unwrap();
    assert_eq!(h.token_width(c, 5), 32);
    assert_eq!(gemma3.check_hook("blocks.2.attn.k_norm.hook_scale").unwrap().token_width(c, 5), 1);

    let qwen3 = load(&fixture("qwen3"), Processing::NONE, LnHook::PreAffine);
    let c = &qwen3.cfg;
    assert_eq!(
        (c.qk_norm, c.post_norms, c.d_head, c.n_kv_heads, c.local_attention.is_none()),
        (true, false, 16, 2, true)
    );
    assert_eq!(qwen3.hook_shape("blocks.1.attn.k_norm.hook_scale", 3, 4).unwrap(), vec![24, 1]);
    assert!(qwen3.check_hook("blocks.0.ln1_post.hook_scale").is_err());
}

/// Gemma's sliding windows run at any context: a local layer's pattern is
/// zero outside its window, a global layer's is not; an activation store's
/// rows of attention maps stay finite.
#[test]
fn sliding_windows_apply_beyond_the_window() {
    let model = load(&fixture("gemma2"), Processing::NONE, LnHook::PreAffine);
    let ctx = 12;
    let toks: Vec<u32> = (0..ctx as u32).map(|i| (i * 7 + 3) % 50).collect();
    let mut req = RunRequest {
        capture: ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"]
            .map(String::from)
            .into(),
        want_loss: true,
        ..Default::default()
    };
    let out = model.run(&toks, 1, ctx, &mut req).unwrap();
    let local = &out.captured["blocks.0.attn.hook_pattern"].1;
    let global = &out.captured["blocks.1.attn.hook_pattern"].1;
    let at = |p: &[f32], h: usize, t: usize, s: usize| p[(h * ctx + t) * ctx + s];
    for h in 0..4 {
        for t in 0..ctx {
            let seen: f32 = (0..ctx).map(|s| at(local, h, t, s)).sum();
            assert!((seen - 1.0).abs() < 1e-5);
            for s in 0..ctx {
                let in_window = s <= t && t - s < 4;
                assert_eq!(at(local, h, t, s) > 0.0, in_window, "local head {h} query {t} key {s}");
                assert_eq!(at(global, h, t, s) > 0.0, s <= t, "global head {h} query {t} key {s}");
            }
        }
    }
    let scores = model.check_hook("blocks.0.attn.hook_attn_scores").unwrap();
    let rows = scores.token_rows(&model.cfg, &out.captured["blocks.0.attn.hook_attn_scores"].1, 1, ctx);
    assert!(rows.iter().all(|x| x.is_finite()));
    assert!(out.loss_per_token.unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn bad_checkpoints_name_the_tensor_and_the_family() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gemma3").join("config.json")).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["Gemma3ForConditionalGeneration"]);
    std::fs::write(t.path().join("config.json"), cfg.to_string()).unwrap();
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(
        e.contains("unsupported architecture `Gemma3ForConditionalGeneration` (its `architectures`; supported: GPT2LMHeadModel, GPTNeoXForCausalLM, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM)"),
        "{e}"
    );
    std::fs::copy(fixture("gemma3").join("config.json"), t.path().join("config.json")).unwrap();
    let bytes = std::fs::read(fixture("gemma3").join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    let write = |ts: &[(String, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = ts
            .iter()
            .map(|(n, s, d)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &t.path().join("model.safetensors")).unwrap();
    };
    // A QK-norm weight over d_model instead of d_head: 32 values as [4, 8].
    let q = "model.layers.1.self_attn.q_norm.weight";
    let mut bad = tensors.clone();
    bad.retain(|t| t.0 != q);
    let wide = tensors.iter().find(|t| t.0 == "model.norm.weight").unwrap();
    bad.push((q.to_string(), vec![4, 8], wide.2.clone()));
    write(&bad);
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains(&format!("tensor `{q}` has shape [4, 8], expected [8]")), "{e}");
    tensors.retain(|t| t.0 != "model.layers.2.post_feedforward_layernorm.weight");
    write(&tensors);
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("tensor `model.layers.2.post_feedforward_layernorm.weight` is missing"), "{e}");
}

/// The fixture's tokens decide the golden runs; a longer sequence of the
/// same tokens runs too (no context limit from the windows).
#[test]
fn fixture_tokens_fit_the_vocabulary() {
    for arch in FAMILY {
        let (flat, batch, ctx) = tokens(arch);
        assert_eq!((batch, ctx), (2, 8));
        let model = load(&fixture(arch), Processing::NONE, LnHook::PreAffine);
        assert!(flat.iter().all(|&t| (t as usize) < model.cfg.d_vocab));
    }
}
