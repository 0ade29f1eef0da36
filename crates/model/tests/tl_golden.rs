//! Every hook point, the logits and the per-token loss equal TransformerLens's
//! (fixtures from scripts/fixtures/model_tl.py) within 1e-4 relative, for GPT-2 and
//! GPT-NeoX, without and with weight processing.

#[path = "support/golden.rs"]
mod golden;

use golden::{check_optional, check_post_affine, check_runner, fixture};
use saepipe_model::{LnHook, LoadOptions, Model, Processing, RunRequest};
use safetensors::SafeTensors;

fn check(arch: &str, mode: &str, processing: Processing) {
    check_dir(&fixture(arch), arch, mode, processing);
}

/// Loads the weights in `model_dir` and compares every hook with the goldens of `arch`.
fn check_dir(model_dir: &std::path::Path, arch: &str, mode: &str, processing: Processing) {
    let model = Model::load(model_dir, &LoadOptions { processing: Some(processing), ..Default::default() }).unwrap();
    check_runner(&model, arch, mode, 1e-4);
}

#[test]
fn gpt2_without_processing() {
    check("gpt2", "none", Processing::NONE);
}
#[test]
fn gpt2_with_full_processing() {
    check("gpt2", "full", Processing::FULL);
}
#[test]
fn neox_without_processing() {
    check("neox", "none", Processing::NONE);
}
#[test]
fn neox_with_full_processing() {
    check("neox", "full", Processing::FULL);
}

/// Each processing step (with fold_ln, which TransformerLens needs for the others).
#[test]
fn processing_steps_one_at_a_time() {
    for arch in ["gpt2", "neox"] {
        for mode in ["fold_ln", "fold_ln+center_writing_weights", "fold_ln+center_unembed", "fold_ln+fold_value_biases"]
        {
            check(arch, mode, Processing::parse(mode).unwrap());
        }
    }
    assert_eq!(Processing::parse("transformer_lens").unwrap(), Processing::FULL);
    let e = Processing::parse("center_unembed").unwrap_err();
    assert!(e.contains("needs fold_ln"), "{e}");
    let e = Processing::parse("fold_ln+center_unembedd").unwrap_err();
    assert!(e.contains("unknown weight-processing step `center_unembedd`"), "{e}");
}

/// TransformerLens's optional hooks, without and with weight processing.
#[test]
fn optional_hooks_match_transformer_lens() {
    for arch in ["gpt2", "neox"] {
        for (mode, processing) in [("none", Processing::NONE), ("full", Processing::FULL)] {
            let model =
                Model::load(&fixture(arch), &LoadOptions { processing: Some(processing), ..Default::default() })
                    .unwrap();
            check_optional(&model, arch, mode, mode, 1e-4);
        }
    }
}

#[test]
fn gpt2_from_pytorch_model_bin() {
    // Same weights as the gpt2 fixture, saved by torch.save (zip + pickle); the
    // tied lm_head shares wte's storage.
    let dir = fixture("gpt2_bin");
    assert!(dir.join("pytorch_model.bin").exists() && !dir.join("model.safetensors").exists());
    check_dir(&dir, "gpt2", "none", Processing::NONE);
    check_dir(&dir, "gpt2", "full", Processing::FULL);
}

/// TransformerLens 2.x semantics: `lnX.hook_normalized` after the LayerNorm affine.
/// Every other hook is unchanged.
#[test]
fn post_affine_ln_hooks_match_transformer_lens_2_semantics() {
    for arch in ["gpt2", "neox"] {
        let model = Model::load(
            &fixture(arch),
            &LoadOptions { processing: Some(Processing::NONE), ln_hook: LnHook::PostAffine },
        )
        .unwrap();
        check_post_affine(&model, arch, 1e-4);
    }
}

#[test]
fn stop_at_layer_and_run_from_agree_with_a_full_run() {
    let model = Model::load(&fixture("neox"), &LoadOptions::default()).unwrap();
    let tokens: Vec<u32> = (0..16).map(|i| (i * 7 % 50) as u32).collect();
    let mut full =
        RunRequest { capture: ["blocks.1.hook_resid_pre".to_string()].into(), want_loss: true, ..Default::default() };
    let full = model.run(&tokens, 2, 8, &mut full).unwrap();
    // TransformerLens semantics: stop_at_layer=1 runs block 0 only, so its last
    // hook is blocks.0.hook_resid_post, which is block 1's input.
    let mut stop = RunRequest {
        capture: ["blocks.0.hook_resid_post".to_string(), "blocks.1.hook_resid_pre".to_string()].into(),
        stop_at_layer: Some(1),
        ..Default::default()
    };
    let stopped = model.run(&tokens, 2, 8, &mut stop).unwrap();
    assert!(stopped.loss_per_token.is_none() && stopped.logits.is_none());
    assert!(!stopped.captured.contains_key("blocks.1.hook_resid_pre"));
    let resid = stopped.captured["blocks.0.hook_resid_post"].1.clone();
    assert_eq!(resid, full.captured["blocks.1.hook_resid_pre"].1);
    let mut rest = RunRequest { want_loss: true, ..Default::default() };
    let resumed = model.run_from(resid, 1, &tokens, 2, 8, &mut rest).unwrap();
    assert_eq!(resumed.loss_per_token, full.loss_per_token);
}

#[test]
fn replacing_a_hook_changes_downstream_only() {
    let model = Model::load(&fixture("gpt2"), &LoadOptions::default()).unwrap();
    let tokens: Vec<u32> = (0..16).map(|i| (i * 3 % 50) as u32).collect();
    let mut clean =
        RunRequest { want_loss: true, capture: ["blocks.0.hook_resid_post".into()].into(), ..Default::default() };
    let clean = model.run(&tokens, 2, 8, &mut clean).unwrap();
    let mut ablate = RunRequest {
        want_loss: true,
        capture: ["blocks.0.hook_resid_post".into(), "blocks.0.hook_mlp_out".into()].into(),
        ..Default::default()
    };
    ablate.replace.insert(
        "blocks.0.hook_mlp_out".into(),
        Box::new(|t: &mut [f32], _s: &[usize]| t.iter_mut().for_each(|x| *x = 0.0)),
    );
    let ablated = model.run(&tokens, 2, 8, &mut ablate).unwrap();
    assert!(ablated.captured["blocks.0.hook_mlp_out"].1.iter().all(|&x| x == 0.0), "captured after replacement");
    assert_ne!(ablated.captured["blocks.0.hook_resid_post"].1, clean.captured["blocks.0.hook_resid_post"].1);
    assert_ne!(ablated.loss_per_token, clean.loss_per_token);
}

#[test]
fn clear_errors_for_bad_inputs() {
    let model = Model::load(&fixture("gpt2"), &LoadOptions::default()).unwrap();
    let e = model.check_hook("blocks.0.hook_mlp_ot").unwrap_err().to_string();
    assert!(e.contains("unknown hook point `blocks.0.hook_mlp_ot` (did you mean `blocks.0.hook_mlp_out`?)"), "{e}");
    let e = model.run(&[1, 2, 3], 2, 2, &mut RunRequest::default()).unwrap_err().to_string();
    assert!(e.contains("3 tokens is not batch 2 × ctx 2"), "{e}");
    let e = model.run(&[1, 999], 1, 2, &mut RunRequest::default()).unwrap_err().to_string();
    assert!(e.contains("token id 999 is outside the vocabulary"), "{e}");

    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("unsupported architecture `mamba`"), "{e}");

    // A checkpoint whose tensor has the wrong shape, and one missing a tensor.
    let cfg = std::fs::read_to_string(fixture("gpt2").join("config.json")).unwrap();
    std::fs::write(t.path().join("config.json"), &cfg).unwrap();
    let bytes = std::fs::read(fixture("gpt2").join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    for t in tensors.iter_mut().filter(|t| t.0 == "transformer.wte.weight") {
        t.1 = vec![t.1[1], t.1[0]];
    }
    let write = |ts: &[(String, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = ts
            .iter()
            .map(|(n, s, d)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &t.path().join("model.safetensors")).unwrap();
    };
    write(&tensors);
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("tensor `transformer.wte.weight` has shape [32, 50], expected [50, 32]"), "{e}");
    for t in tensors.iter_mut().filter(|t| t.0 == "transformer.wte.weight") {
        t.1 = vec![50, 32];
    }
    tensors.retain(|t| t.0 != "transformer.h.1.mlp.c_fc.bias");
    write(&tensors);
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("tensor `transformer.h.1.mlp.c_fc.bias` is missing"), "{e}");
}
