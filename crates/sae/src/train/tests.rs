//! Unit tests of the trainer that need its private parts: finite-difference
//! gradient checks through the forward/backward, chunking and dense/sparse
//! invariance. Helpers here are shared with the submodules' tests.

use super::*;

pub(crate) fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

pub(crate) fn randomize(t: &mut Trainer, seed: u64) {
    let mut s = seed;
    for v in t.ops.params.enc.iter_mut().chain(t.ops.params.dec.iter_mut()) {
        *v = lcg(&mut s) * 0.6;
    }
    for v in t.ops.params.b_enc.iter_mut().chain(t.ops.params.b_dec.iter_mut()) {
        *v = lcg(&mut s) * 0.3;
    }
    if let Some(sk) = &mut t.ops.params.skip {
        sk.iter_mut().for_each(|v| *v = lcg(&mut s) * 0.3);
    }
}

/// Loss, gradients, selected (row, latent) sets and the residual e.
/// With `fixed` the AuxK term uses that residual (its stop-gradient).
pub(crate) fn eval(
    t: &mut Trainer,
    x: &[f32],
    y: Option<&[f32]>,
    n: usize,
    fixed: Option<&[f32]>,
) -> (LossParts, Params, Vec<usize>, Vec<u32>, Vec<f32>) {
    let dead = t.dead_mask();
    let b = t.batch(x, y, n, &dead).unwrap();
    let (xs, ys) = t.ops.scaled(&b);
    let mut grads = t.ops.params.zeros_like();
    let out = t.ops.forward_backward(&xs, ys.as_deref().unwrap_or(&xs), &b, &mut grads, fixed, true);
    let (ptr, sel) = out.selection.unwrap();
    let e: Vec<f32> = out.g.iter().map(|v| v * n as f32 / 2.0).collect();
    (out.parts, grads, ptr, sel, e)
}

/// Central finite differences of the loss against the analytic gradient,
/// for every parameter element. Elements whose perturbation changes the
/// selected latents (a kink of ReLU/TopK) are skipped, and must be rare.
pub(crate) fn check_grads(cfg: TrainConfig, d_in: usize, d_out: usize, dead: &[usize]) {
    check_grads_with(cfg, d_in, d_out, dead, false)
}

/// JumpReLU thresholds for the tests: positive, away from zero.
pub(crate) fn set_thresholds(t: &mut Trainer, seed: u64) {
    let d_sae = t.d_sae;
    let mut s = seed;
    for v in &mut t.ops.params.b_enc[d_sae..] {
        *v = 0.05 + 0.25 * lcg(&mut s).abs();
    }
}

/// [`check_grads`]; JumpReLU thresholds are set positive, and their
/// (pseudo-)gradients are checked only with `check_threshold` (where
/// they are true gradients: no entry in the kernel window).
pub(crate) fn check_grads_with(cfg: TrainConfig, d_in: usize, d_out: usize, dead: &[usize], check_threshold: bool) {
    let n = 7;
    let mut s = 99u64;
    let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s) * 1.5).collect();
    let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s) * 1.5).collect();
    let yo = cfg.transcoder.then_some(y.as_slice());
    let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
    randomize(&mut t, 7);
    let jump = t.threshold().is_some();
    if jump {
        set_thresholds(&mut t, 17);
    }
    t.cfg.dead_after_tokens = 100;
    for &j in dead {
        t.tokens_since_fired[j] = 1000;
    }
    let (parts, g, ptr0, sel0, e0) = eval(&mut t, &x, yo, n, None);
    let (parts_api, g_api) = t.loss_and_grads(&x, yo, n).unwrap();
    assert_eq!((parts_api, &g_api), (parts, &g));
    assert!(parts.total() > 0.0);
    if !dead.is_empty() && t.cfg.aux_k_coefficient > 0.0 {
        assert!(parts.auxk > 0.0, "AuxK term should be active");
    }
    let eps = 3e-3f32;
    let names = ["enc", "b_enc", "dec", "b_dec", "skip"];
    let mut checked = 0;
    let mut bad = 0;
    let mut skipped = 0;
    for name in names {
        let len = match name {
            "enc" => t.ops.params.enc.len(),
            "b_enc" => t.ops.params.b_enc.len(),
            "dec" => t.ops.params.dec.len(),
            "b_dec" => t.ops.params.b_dec.len(),
            _ => t.ops.params.skip.as_ref().map_or(0, Vec::len),
        };
        for i in 0..len {
            if jump && name == "b_enc" && i >= t.d_sae && !check_threshold {
                continue;
            }
            let get = |t: &mut Trainer| -> *mut f32 {
                match name {
                    "enc" => &mut t.ops.params.enc[i],
                    "b_enc" => &mut t.ops.params.b_enc[i],
                    "dec" => &mut t.ops.params.dec[i],
                    "b_dec" => &mut t.ops.params.b_dec[i],
                    _ => &mut t.ops.params.skip.as_mut().unwrap()[i],
                }
            };
            let orig = unsafe { *get(&mut t) };
            unsafe { *get(&mut t) = orig + eps };
            let (pp, _, ptrp, selp, _) = eval(&mut t, &x, yo, n, Some(&e0));
            unsafe { *get(&mut t) = orig - eps };
            let (pm, _, ptrm, selm, _) = eval(&mut t, &x, yo, n, Some(&e0));
            unsafe { *get(&mut t) = orig };
            if (&ptrp, &selp) != (&ptr0, &sel0) || (&ptrm, &selm) != (&ptr0, &sel0) {
                skipped += 1;
                continue;
            }
            let (lp, lm) = (pp.total(), pm.total());
            let fd = (lp - lm) / (2.0 * eps as f64);
            let an = match name {
                "enc" => g.enc[i],
                "b_enc" => g.b_enc[i],
                "dec" => g.dec[i],
                "b_dec" => g.b_dec[i],
                _ => g.skip.as_ref().unwrap()[i],
            } as f64;
            if (fd - an).abs() > 2e-3 + 1e-2 * an.abs() {
                eprintln!("{:?}: d loss / d {name}[{i}]: finite difference {fd}, analytic {an}", t.cfg.arch);
                bad += 1;
            }
            checked += 1;
        }
    }
    assert_eq!(bad, 0, "{bad} of {checked} gradient elements disagree");
    assert!(checked > 100 && skipped * 10 < checked, "{checked} checked, {skipped} skipped at kinks");
}

/// JumpReLU with SAELens's defaults except the given changes.
pub(crate) fn jr(
    l0_coefficient: f32,
    bandwidth: f32,
    mode: JumpReluSparsityLoss,
    pre_act: Option<f32>,
    ste_to_input: bool,
) -> TrainArch {
    let TrainArch::JumpRelu { l0_warmup_steps, initial_threshold, tanh_scale, .. } =
        TrainArch::jumprelu(l0_coefficient)
    else {
        unreachable!()
    };
    TrainArch::JumpRelu {
        l0_coefficient,
        l0_warmup_steps,
        bandwidth,
        initial_threshold,
        sparsity_loss_mode: mode,
        tanh_scale,
        target_l0: (mode == JumpReluSparsityLoss::Quadratic).then_some(2.0),
        pre_act_loss_coefficient: pre_act,
        ste_to_input,
    }
}

/// Losses and gradients do not depend on how rows are chunked (3-row chunks
/// against the default).
pub(crate) fn assert_chunking_invariant(t: &mut Trainer, x: &[f32], y: Option<&[f32]>, n: usize) {
    let (p1, g1) = t.loss_and_grads(x, y, n).unwrap();
    t.ops.chunk_rows_override = Some(3);
    let (p2, g2) = t.loss_and_grads(x, y, n).unwrap();
    assert!((p1.total() - p2.total()).abs() < 1e-9 * p1.total().abs().max(1.0));
    assert_eq!(p1.l0, p2.l0);
    for ((name, a), (_, b)) in g1.tensors().into_iter().zip(g2.tensors()) {
        for (i, (u, v)) in a.iter().zip(b).enumerate() {
            assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{name}[{i}]: {u} vs {v}");
        }
    }
}

#[test]
fn gradients_standard_l1() {
    let cfg = TrainConfig {
        arch: TrainArch::Standard { l1_coefficient: 0.3, l1_warmup_steps: 0 },
        d_sae: 10,
        ..Default::default()
    };
    check_grads(cfg, 6, 6, &[]);
}

#[test]
fn gradients_standard_without_b_dec_on_input() {
    let cfg = TrainConfig {
        arch: TrainArch::Standard { l1_coefficient: 0.1, l1_warmup_steps: 0 },
        apply_b_dec_to_input: false,
        d_sae: 10,
        ..Default::default()
    };
    check_grads(cfg, 6, 6, &[]);
}

#[test]
fn gradients_topk_with_auxk() {
    let cfg = TrainConfig {
        arch: TrainArch::TopK { k: 3 },
        d_sae: 12,
        aux_k: Some(3),
        aux_k_coefficient: 0.5,
        ..Default::default()
    };
    check_grads(cfg, 6, 6, &[1, 4, 5, 8, 11]);
}

#[test]
fn gradients_batchtopk_with_auxk() {
    let cfg = TrainConfig {
        arch: TrainArch::BatchTopK { k: 2, threshold_lr: 0.01 },
        d_sae: 12,
        aux_k_coefficient: 1.0,
        ..Default::default()
    };
    check_grads(cfg, 6, 6, &[0, 2, 3]);
}

#[test]
fn gradients_skip_transcoder() {
    let cfg = TrainConfig {
        arch: TrainArch::TopK { k: 3 },
        d_sae: 10,
        transcoder: true,
        skip_connection: true,
        aux_k_coefficient: 0.3,
        ..Default::default()
    };
    check_grads(cfg, 6, 5, &[2, 7]);
}

#[test]
fn gradients_relu_transcoder() {
    let cfg = TrainConfig {
        arch: TrainArch::Standard { l1_coefficient: 0.2, l1_warmup_steps: 0 },
        d_sae: 9,
        transcoder: true,
        ..Default::default()
    };
    check_grads(cfg, 5, 7, &[]);
}

#[test]
fn row_chunking_gives_the_same_gradients() {
    for cfg in [
        TrainConfig {
            arch: TrainArch::Standard { l1_coefficient: 0.3, l1_warmup_steps: 0 },
            d_sae: 10,
            ..Default::default()
        },
        TrainConfig {
            arch: TrainArch::TopK { k: 3 },
            d_sae: 10,
            transcoder: true,
            skip_connection: true,
            aux_k_coefficient: 0.5,
            ..Default::default()
        },
    ] {
        let (d_in, d_out, n) = (6, if cfg.transcoder { 5 } else { 6 }, 11);
        let mut s = 3u64;
        let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s)).collect();
        let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s)).collect();
        let yo = cfg.transcoder.then_some(y.as_slice());
        let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
        randomize(&mut t, 5);
        t.cfg.dead_after_tokens = 10;
        t.tokens_since_fired[3] = 100;
        assert_chunking_invariant(&mut t, &x, yo, n);
    }
}

#[test]
fn dense_and_sparse_relu_paths_agree() {
    for skip in [false, true] {
        let cfg = TrainConfig {
            arch: TrainArch::Standard { l1_coefficient: 0.3, l1_warmup_steps: 0 },
            d_sae: 24,
            transcoder: skip,
            skip_connection: skip,
            ..Default::default()
        };
        let (d_in, d_out, n) = (6, if skip { 5 } else { 6 }, 13);
        let mut s = 9u64;
        let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s)).collect();
        let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s)).collect();
        let yo = skip.then_some(y.as_slice());
        let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
        randomize(&mut t, 4);
        t.ops.dense_above_one_in = usize::MAX; // every chunk dense
        let (p1, g1) = t.loss_and_grads(&x, yo, n).unwrap();
        t.ops.dense_above_one_in = 0; // every chunk sparse
        let (p2, g2) = t.loss_and_grads(&x, yo, n).unwrap();
        assert!(p1.l0 > 1.0, "ReLU should fire on several latents");
        assert!((p1.total() - p2.total()).abs() < 1e-6 * p1.total().abs().max(1.0), "{p1:?} vs {p2:?}");
        for ((name, a), (_, b)) in g1.tensors().into_iter().zip(g2.tensors()) {
            for (i, (u, v)) in a.iter().zip(b).enumerate() {
                assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{name}[{i}]: dense {u} vs sparse {v}");
            }
        }
    }
}

#[test]
fn l1_coefficient_warms_up_linearly() {
    let cfg = TrainConfig {
        arch: TrainArch::Standard { l1_coefficient: 2.0, l1_warmup_steps: 4 },
        d_sae: 4,
        ..Default::default()
    };
    let t = Trainer::new(cfg, 2, 2, &[1.0, 2.0], None).unwrap();
    assert_eq!(t.sparsity_coefficient_at(0), 0.5);
    assert_eq!(t.sparsity_coefficient_at(3), 2.0);
    assert_eq!(t.sparsity_coefficient_at(100), 2.0);
}
