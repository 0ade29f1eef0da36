//! Every hook point, the logits and the per-token loss equal TransformerLens's
//! (fixtures from scripts/fixtures/model_tl.py) within 1e-4 relative, for GPT-2 and
//! GPT-NeoX, without and with weight processing.

use saepipe_model::{LnHook, LoadOptions, Model, Processing, RunRequest};
use safetensors::SafeTensors;
use std::path::PathBuf;

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tl").join(arch)
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// max |a − b| / max |b| over finite entries; infinities must match exactly.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().filter(|x| x.is_finite()).fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let mut err = 0f32;
    for (g, w) in got.iter().zip(want) {
        if w.is_finite() {
            err = err.max((g - w).abs());
        } else {
            assert_eq!(g, w, "infinite entries differ");
        }
    }
    err / scale
}

fn check(arch: &str, mode: &str, processing: Processing) {
    check_dir(&fixture(arch), arch, mode, processing);
}

/// Loads the weights in `model_dir` and compares every hook with the goldens of `arch`.
fn check_dir(model_dir: &std::path::Path, arch: &str, mode: &str, processing: Processing) {
    let dir = fixture(arch);
    let model = Model::load(model_dir, &LoadOptions { processing: Some(processing), ..Default::default() }).unwrap();
    let tokens: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap();
    let (batch, ctx) = (tokens.len(), tokens[0].len());
    let flat: Vec<u32> = tokens.concat();
    let bytes = std::fs::read(dir.join(format!("hooks_{mode}.safetensors"))).unwrap();
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let hooks: Vec<String> = golden.names().into_iter().filter(|n| n.contains("hook")).map(String::from).collect();
    assert_eq!(
        {
            let mut a = hooks.clone();
            a.sort();
            a
        },
        {
            let mut b = model.hook_names();
            b.sort();
            b
        },
        "{arch}: hook names differ from TransformerLens"
    );
    let mut req = RunRequest {
        capture: hooks.iter().cloned().collect(),
        want_logits: true,
        want_loss: true,
        ..Default::default()
    };
    let out = model.run(&flat, batch, ctx, &mut req).unwrap();
    let mut worst = (0f32, String::new());
    for name in &hooks {
        let t = golden.tensor(name).unwrap();
        let (shape, got) = &out.captured[name];
        assert_eq!(shape.as_slice(), t.shape(), "{arch}/{mode}: shape of {name}");
        let e = rel_err(got, &to_f32(t.data()));
        if e > worst.0 {
            worst = (e, name.clone());
        }
        assert!(e < 1e-4, "{arch}/{mode}: {name} differs from TransformerLens by {e:e} (relative)");
    }
    let e = rel_err(out.logits.as_ref().unwrap(), &to_f32(golden.tensor("logits").unwrap().data()));
    assert!(e < 1e-4, "{arch}/{mode}: logits differ by {e:e}");
    let e = rel_err(out.loss_per_token.as_ref().unwrap(), &to_f32(golden.tensor("loss_per_token").unwrap().data()));
    assert!(e < 1e-4, "{arch}/{mode}: loss differs by {e:e}");
    // Loss alone takes another path (logits made and consumed in row blocks).
    let mut loss_only = RunRequest { want_loss: true, ..Default::default() };
    let out = model.run(&flat, batch, ctx, &mut loss_only).unwrap();
    assert!(out.logits.is_none() && out.captured.is_empty());
    let e = rel_err(out.loss_per_token.as_ref().unwrap(), &to_f32(golden.tensor("loss_per_token").unwrap().data()));
    assert!(e < 1e-4, "{arch}/{mode}: loss-only run differs by {e:e}");
    eprintln!("{arch}/{mode}: {} hooks match; worst {} at {:e}", hooks.len(), worst.1, worst.0);
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
        let dir = fixture(arch);
        let model = Model::load(&dir, &LoadOptions { processing: Some(Processing::NONE), ln_hook: LnHook::PostAffine })
            .unwrap();
        let tokens: Vec<Vec<u32>> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap();
        let (batch, ctx) = (tokens.len(), tokens[0].len());
        let post_bytes = std::fs::read(dir.join("hooks_none_postaffine.safetensors")).unwrap();
        let post = SafeTensors::deserialize(&post_bytes).unwrap();
        let pre_bytes = std::fs::read(dir.join("hooks_none.safetensors")).unwrap();
        let pre = SafeTensors::deserialize(&pre_bytes).unwrap();
        let mut req =
            RunRequest { capture: model.hook_names().into_iter().collect(), want_loss: true, ..Default::default() };
        let out = model.run(&tokens.concat(), batch, ctx, &mut req).unwrap();
        let ln_hooks: Vec<String> = post.names().into_iter().map(String::from).collect();
        assert_eq!(ln_hooks.len(), 2 * 2 + 1);
        for name in model.hook_names() {
            let want = if ln_hooks.contains(&name) { post.tensor(&name).unwrap() } else { pre.tensor(&name).unwrap() };
            let e = rel_err(&out.captured[&name].1, &to_f32(want.data()));
            assert!(e < 1e-4, "{arch}/post-affine: {name} differs by {e:e}");
        }
        // The pre-affine value differs from the post-affine one (non-trivial LN weights).
        let name = "blocks.0.ln2.hook_normalized";
        assert!(rel_err(&out.captured[name].1, &to_f32(pre.tensor(name).unwrap().data())) > 1e-2);
        let e = rel_err(out.loss_per_token.as_ref().unwrap(), &to_f32(pre.tensor("loss_per_token").unwrap().data()));
        assert!(e < 1e-4, "{arch}: hook semantics must not change the loss ({e:e})");
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
