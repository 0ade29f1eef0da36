//! The TransformerLens golden fixtures (scripts/fixtures/model_tl.py) and the
//! comparison of a forward with them, for any [`Runner`]: the CPU tests of
//! saepipe-model and the GPU tests of saepipe-cuda include this file.
#![allow(dead_code)]

use saepipe_model::{HookFn, HookName, RunRequest, Runner, hook_names};
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
            let mut b = plain_hook_names(model);
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
    let names = plain_hook_names(model);
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

/// The hooks of a run without TransformerLens's optional hooks.
pub fn plain_hook_names(model: &dyn Runner) -> Vec<String> {
    hook_names(model.config()).into_iter().filter(|n| !HookName::parse(n).unwrap().is_optional()).collect()
}

/// Runs `names` and compares each hook with `files` (the first that holds
/// it), within `tol` relative; `replace` hooks go through a function that
/// leaves them as they are (so the run takes the path that reads replaced values).
fn check_against(
    model: &dyn Runner,
    arch: &str,
    names: &[String],
    replace: &[String],
    files: &[&SafeTensors],
    tol: f32,
    label: &str,
) {
    let (flat, batch, ctx) = tokens(arch);
    let mut req = RunRequest { capture: names.iter().cloned().collect(), want_logits: true, ..Default::default() };
    for r in replace {
        let keep: HookFn = Box::new(|_t: &mut [f32], _s: &[usize]| {});
        req.replace.insert(r.clone(), keep);
    }
    let out = model.run(&flat, batch, ctx, &mut req).unwrap();
    for name in names {
        let t = files.iter().find_map(|f| f.tensor(name).ok()).unwrap_or_else(|| panic!("{label}: no golden {name}"));
        let (shape, got) = &out.captured[name];
        assert_eq!(shape.as_slice(), t.shape(), "{label}: shape of {name}");
        let e = rel_err(got, &to_f32(t.data()));
        assert!(e < tol, "{label}: {name} differs from TransformerLens by {e:e} (relative)");
    }
    let e = rel_err(out.logits.as_ref().unwrap(), &to_f32(files.last().unwrap().tensor("logits").unwrap().data()));
    assert!(e < tol, "{label}: logits differ by {e:e}");
}

/// TransformerLens's optional hooks (hook_tokens, hook_attn_in, hook_q/k/v_input,
/// attn.hook_result, hook_mlp_in) against `hooks_{mode}_optional` (every
/// flag on; other hooks from `hooks_{plain_mode}`), and, where recorded,
/// `hooks_{mode}_attn_in` (use_attn_in alone). Each run also once more with
/// the per-head inputs and results replaced by themselves, which makes every
/// head's queries, keys and values from its own input and attn_out from the
/// sum of the head results.
pub fn check_optional(model: &dyn Runner, arch: &str, plain_mode: &str, mode: &str, tol: f32) {
    let read = |file: &str| std::fs::read(fixture(arch).join(file)).ok();
    let plain_bytes = read(&format!("hooks_{plain_mode}.safetensors")).unwrap();
    let plain = SafeTensors::deserialize(&plain_bytes).unwrap();
    let all = hook_names(model.config());
    let local = |n: &str| HookName::parse(n).unwrap().local().to_string();
    let per_head = |n: &String| {
        ["hook_q_input", "hook_k_input", "hook_v_input", "hook_attn_in", "attn.hook_result"]
            .contains(&local(n).as_str())
    };
    let opt_bytes = read(&format!("hooks_{mode}_optional.safetensors")).unwrap();
    let opt = SafeTensors::deserialize(&opt_bytes).unwrap();
    // The file holds exactly the optional hooks and ln1's (per-head) hooks.
    let mut want: Vec<String> = all
        .iter()
        .filter(|n| HookName::parse(n).unwrap().is_optional() || local(n).starts_with("ln1."))
        .cloned()
        .collect();
    let mut have: Vec<String> = opt.names().into_iter().map(String::from).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want, "{arch}/{mode}: optional hooks differ from TransformerLens's");
    let label = format!("{arch}/{mode} optional on {}", model.device());
    check_against(model, arch, &all, &[], &[&opt, &plain], tol, &label);
    let replaced: Vec<String> = all.iter().filter(|n| per_head(n) && local(n) != "hook_attn_in").cloned().collect();
    check_against(model, arch, &all, &replaced, &[&opt, &plain], tol, &format!("{label}, per head"));
    if let Some(bytes) = read(&format!("hooks_{mode}_attn_in.safetensors")) {
        let attn_in = SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = all
            .iter()
            .filter(|n| !["hook_q_input", "hook_k_input", "hook_v_input"].contains(&local(n).as_str()))
            .cloned()
            .collect();
        let label = format!("{arch}/{mode} attn_in on {}", model.device());
        check_against(model, arch, &names, &[], &[&attn_in, &opt, &plain], tol, &label);
        let replaced: Vec<String> = names.iter().filter(|n| per_head(n)).cloned().collect();
        check_against(model, arch, &names, &replaced, &[&attn_in, &opt, &plain], tol, &format!("{label}, per head"));
    }
    eprintln!("{arch}/{mode}: optional hooks match on {}", model.device());
}
