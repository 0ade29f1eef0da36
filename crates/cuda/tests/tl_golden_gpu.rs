//! The TransformerLens golden tests of saepipe-model (the same fixtures, the
//! same comparisons, the same tolerance) run over the CUDA operations: the one
//! forward on `GpuOps`. Without a GPU each test prints SKIPPED (never a silent
//! pass); SAEPIPE_REQUIRE_GPU=1 makes a missing GPU a failure.

#[path = "../../model/tests/support/golden.rs"]
mod golden;
mod support;

use golden::{check_post_affine, check_runner, fixture};
use saepipe_cuda::{Gpu, GpuOps};
use saepipe_model::{DeviceModel, LnHook, LoadOptions, Model, Processing};
use std::sync::Arc;

fn on_gpu(g: &Arc<Gpu>, dir: &std::path::Path, processing: Processing, ln_hook: LnHook) -> DeviceModel<GpuOps> {
    let model = Model::load(dir, &LoadOptions { processing: Some(processing), ln_hook }).unwrap();
    DeviceModel::new(GpuOps::new(g.clone()), &model).unwrap()
}

#[test]
fn every_hook_matches_transformer_lens_on_the_gpu() {
    let Some(g) = support::gpu("every_hook_matches_transformer_lens_on_the_gpu") else { return };
    for arch in ["gpt2", "neox"] {
        for mode in [
            "none",
            "full",
            "fold_ln",
            "fold_ln+center_writing_weights",
            "fold_ln+center_unembed",
            "fold_ln+fold_value_biases",
        ] {
            let processing = Processing::parse(mode).unwrap();
            check_runner(&on_gpu(&g, &fixture(arch), processing, LnHook::PreAffine), arch, mode, 1e-4);
        }
    }
    // The Llama family (grouped-query attention, llama3 rope scaling, RMSNorm,
    // SwiGLU, Qwen2's biases), Gemma 2 (soft-capping, sliding windows,
    // post-norms), Gemma 3 and Qwen3 (QK-norm); a mode whose hooks equal
    // another's has its golden under that mode (meta.json's `same_as`).
    for arch in ["llama", "mistral", "qwen2", "gemma2", "gemma3", "qwen3"] {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(arch).join("meta.json")).unwrap()).unwrap();
        for mode in [
            "none",
            "full",
            "fold_ln",
            "fold_ln+center_writing_weights",
            "fold_ln+center_unembed",
            "fold_ln+fold_value_biases",
        ] {
            let golden = meta["same_as"][mode].as_str().unwrap_or(mode);
            let processing = Processing::parse(mode).unwrap();
            check_runner(&on_gpu(&g, &fixture(arch), processing, LnHook::PreAffine), arch, golden, 1e-4);
        }
    }
    // Same weights from a torch.save checkpoint.
    check_runner(&on_gpu(&g, &fixture("gpt2_bin"), Processing::NONE, LnHook::PreAffine), "gpt2", "none", 1e-4);
}

#[test]
fn post_affine_ln_hooks_match_transformer_lens_2_on_the_gpu() {
    let Some(g) = support::gpu("post_affine_ln_hooks_match_transformer_lens_2_on_the_gpu") else { return };
    for arch in ["gpt2", "neox"] {
        check_post_affine(&on_gpu(&g, &fixture(arch), Processing::NONE, LnHook::PostAffine), arch, 1e-4);
    }
}
