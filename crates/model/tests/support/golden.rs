//! The TransformerLens golden fixtures (scripts/fixtures/model_tl.py) and the
//! comparison of a forward with them, for any [`Runner`]: the CPU tests of
//! saepipe-model and the GPU tests of saepipe-cuda include this file.
#![allow(dead_code)]

use saepipe_model::{RunRequest, Runner, hook_names};
use safetensors::SafeTensors;
use std::path::PathBuf;

/// The fixture directory of `arch` (gpt2, neox, gpt2_bin); a path that works
/// from every crate under crates/.
pub fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/tl").join(arch)
}

pub fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// max |a − b| / max |b| over finite entries; infinities must match exactly.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
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

/// The fixture's tokens: (flat [batch, ctx], batch, ctx).
pub fn tokens(arch: &str) -> (Vec<u32>, usize, usize) {
    let tokens: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(fixture(arch).join("tokens.json")).unwrap()).unwrap();
    let (batch, ctx) = (tokens.len(), tokens[0].len());
    (tokens.concat(), batch, ctx)
}

/// Every hook, the logits and the loss of `model` (loaded from `arch`'s
/// weights with the processing named `mode`) against the goldens, within
/// `tol` relative; then a loss-only run (logits made in row blocks).
pub fn check_runner(model: &dyn Runner, arch: &str, mode: &str, tol: f32) {
    let label = format!("{arch}/{mode} on {}", model.device());
    let (flat, batch, ctx) = tokens(arch);
    let bytes = std::fs::read(fixture(arch).join(format!("hooks_{mode}.safetensors"))).unwrap();
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let hooks: Vec<String> = golden.names().into_iter().filter(|n| n.contains("hook")).map(String::from).collect();
    assert_eq!(
        {
            let mut a = hooks.clone();
            a.sort();
            a
        },
        {
            let mut b = hook_names(model.config());
            b.sort();
            b
        },
        "{label}: hook names differ from TransformerLens"
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
        assert_eq!(shape.as_slice(), t.shape(), "{label}: shape of {name}");
        let e = rel_err(got, &to_f32(t.data()));
        if e > worst.0 {
            worst = (e, name.clone());
        }
        assert!(e < tol, "{label}: {name} differs from TransformerLens by {e:e} (relative)");
    }
    let e = rel_err(out.logits.as_ref().unwrap(), &to_f32(golden.tensor("logits").unwrap().data()));
    assert!(e < tol, "{label}: logits differ by {e:e}");
    let e = rel_err(out.loss_per_token.as_ref().unwrap(), &to_f32(golden.tensor("loss_per_token").unwrap().data()));
    assert!(e < tol, "{label}: loss differs by {e:e}");
    // Loss alone takes another path (logits made and consumed in row blocks).
    let mut loss_only = RunRequest { want_loss: true, ..Default::default() };
    let out = model.run(&flat, batch, ctx, &mut loss_only).unwrap();
    assert!(out.logits.is_none() && out.captured.is_empty());
    let e = rel_err(out.loss_per_token.as_ref().unwrap(), &to_f32(golden.tensor("loss_per_token").unwrap().data()));
    assert!(e < tol, "{label}: loss-only run differs by {e:e}");
    eprintln!("{label}: {} hooks match; worst {} at {:e}", hooks.len(), worst.1, worst.0);
}

/// TransformerLens 2.x semantics, for `model` loaded without processing and
/// with `LnHook::PostAffine`: `lnX.hook_normalized` after the LayerNorm
/// affine, every other hook unchanged.
pub fn check_post_affine(model: &dyn Runner, arch: &str, tol: f32) {
    let dir = fixture(arch);
    let (flat, batch, ctx) = tokens(arch);
    let post_bytes = std::fs::read(dir.join("hooks_none_postaffine.safetensors")).unwrap();
    let post = SafeTensors::deserialize(&post_bytes).unwrap();
    let pre_bytes = std::fs::read(dir.join("hooks_none.safetensors")).unwrap();
    let pre = SafeTensors::deserialize(&pre_bytes).unwrap();
    let names = hook_names(model.config());
    let mut req = RunRequest { capture: names.iter().cloned().collect(), want_loss: true, ..Default::default() };
    let out = model.run(&flat, batch, ctx, &mut req).unwrap();
    let ln_hooks: Vec<String> = post.names().into_iter().map(String::from).collect();
    assert_eq!(ln_hooks.len(), 2 * 2 + 1);
    for name in &names {
        let want = if ln_hooks.contains(name) { post.tensor(name).unwrap() } else { pre.tensor(name).unwrap() };
        let e = rel_err(&out.captured[name].1, &to_f32(want.data()));
        assert!(e < tol, "{arch}/post-affine: {name} differs by {e:e}");
    }
    // The pre-affine value differs from the post-affine one (non-trivial LN weights).
    let name = "blocks.0.ln2.hook_normalized";
    assert!(rel_err(&out.captured[name].1, &to_f32(pre.tensor(name).unwrap().data())) > 1e-2);
    let e = rel_err(out.loss_per_token.as_ref().unwrap(), &to_f32(pre.tensor("loss_per_token").unwrap().data()));
    assert!(e < tol, "{arch}: hook semantics must not change the loss ({e:e})");
}
