//! JumpReLU gradients against finite differences, SAELens's formulas and
//! SAELens's autograd; chunking and the coefficient warm-up.

use std::path::Path;

use crate::st::StFile;
use crate::train::tests::{
    assert_chunking_invariant, check_grads, check_grads_with, jr, lcg, randomize, set_thresholds,
};
use crate::train::{JumpReluSparsityLoss, TrainArch, TrainConfig, Trainer};

#[test]
fn gradients_jumprelu_mse_part() {
    // Step-mode L0 is piecewise constant: away from mask flips the loss's
    // true gradient wrt W_enc, b_enc, W_dec, b_dec is the MSE's.
    let cfg =
        TrainConfig { arch: jr(0.7, 0.3, JumpReluSparsityLoss::Step, None, false), d_sae: 10, ..Default::default() };
    check_grads(cfg, 6, 6, &[]);
}

#[test]
fn gradients_jumprelu_tanh_loss() {
    // tanh(a · f · ‖W_dec_j‖) is differentiable in f and W_dec.
    let cfg = TrainConfig {
        arch: jr(0.4, 0.05, JumpReluSparsityLoss::Tanh, None, false),
        d_sae: 10,
        apply_b_dec_to_input: false,
        ..Default::default()
    };
    check_grads(cfg, 6, 6, &[]);
}

#[test]
fn gradients_jumprelu_pre_act_loss_including_threshold() {
    // With a kernel window too narrow to hold any entry, θ's gradient is
    // the pre-activation loss's true gradient.
    let cfg = TrainConfig {
        arch: jr(0.5, 1e-6, JumpReluSparsityLoss::Step, Some(0.6), false),
        d_sae: 10,
        ..Default::default()
    };
    check_grads_with(cfg, 6, 6, &[1, 4, 5, 8], true);
}

#[test]
fn gradients_jumprelu_skip_transcoder() {
    let cfg = TrainConfig {
        arch: jr(0.3, 0.2, JumpReluSparsityLoss::Step, None, false),
        d_sae: 9,
        transcoder: true,
        skip_connection: true,
        ..Default::default()
    };
    check_grads(cfg, 6, 5, &[]);
}

/// SAELens 6.54's JumpReLU training loss and its autograd (the Step and
/// JumpReLU autograd functions, `calculate_aux_loss`,
/// `calculate_pre_act_loss`), written out densely in f64 from those
/// formulas: returns (mse, sparsity term, pre-activation term), the
/// gradients, and the number of entries inside the kernel window.
fn naive_jumprelu(
    t: &Trainer,
    x: &[f32],
    y: &[f32],
    n: usize,
    coef: f64,
    dead: &[bool],
) -> ((f64, f64, f64), Vec<Vec<f64>>, usize) {
    let TrainArch::JumpRelu {
        bandwidth,
        sparsity_loss_mode: mode,
        tanh_scale,
        target_l0,
        pre_act_loss_coefficient,
        ste_to_input,
        ..
    } = t.cfg.arch
    else {
        panic!("not jumprelu")
    };
    let (d_in, d_out, d_sae) = (t.d_in, t.d_out, t.d_sae);
    let p = &t.ops.params;
    let (bw, a, nf) = (bandwidth as f64, tanh_scale as f64, n as f64);
    let tl0 = target_l0.unwrap_or(1.0) as f64;
    let pc = pre_act_loss_coefficient.map(|c| c as f64);
    let apply = t.cfg.apply_b_dec_to_input && !t.cfg.transcoder;
    let w = |j: usize, d: usize| p.dec[j * d_out + d] as f64;
    let th = |j: usize| p.b_enc[d_sae + j] as f64;
    let norm: Vec<f64> = (0..d_sae).map(|j| (0..d_out).map(|d| w(j, d).powi(2)).sum::<f64>().sqrt()).collect();
    let xin = |r: usize, i: usize| x[r * d_in + i] as f64 - if apply { p.b_dec[i] as f64 } else { 0.0 };
    let mut pre = vec![0f64; n * d_sae];
    for r in 0..n {
        for j in 0..d_sae {
            pre[r * d_sae + j] =
                p.b_enc[j] as f64 + (0..d_in).map(|i| xin(r, i) * p.enc[j * d_in + i] as f64).sum::<f64>();
        }
    }
    let f = |r: usize, j: usize| {
        let v = pre[r * d_sae + j];
        if v > th(j) { v } else { 0.0 }
    };
    let rect = |r: usize, j: usize| {
        let u = (pre[r * d_sae + j] - th(j)) / bw;
        if u > -0.5 && u < 0.5 { 1.0 } else { 0.0 }
    };
    let mut g = vec![0f64; n * d_out];
    let mut mse = 0.0;
    for r in 0..n {
        for d in 0..d_out {
            let mut yh = p.b_dec[d] as f64;
            for j in 0..d_sae {
                yh += f(r, j) * w(j, d);
            }
            if let Some(sk) = &p.skip {
                yh += (0..d_in).map(|i| sk[d * d_in + i] as f64 * x[r * d_in + i] as f64).sum::<f64>();
            }
            let e = yh - y[r * d_out + d] as f64;
            mse += e * e / nf;
            g[r * d_out + d] = 2.0 * e / nf;
        }
    }
    let mut g_enc = vec![0f64; d_sae * d_in];
    let mut g_benc = vec![0f64; 2 * d_sae];
    let mut g_dec = vec![0f64; d_sae * d_out];
    let mut g_bdec = vec![0f64; d_out];
    let mut g_skip = vec![0f64; if p.skip.is_some() { d_out * d_in } else { 0 }];
    let (mut sparsity, mut pre_loss, mut window) = (0.0, 0.0, 0);
    for r in 0..n {
        let l0 = (0..d_sae).filter(|&j| f(r, j) != 0.0).count() as f64;
        // grad_output of Step (the L0 count), per SAELens mode.
        let go_step = match mode {
            JumpReluSparsityLoss::Step => {
                sparsity += coef * l0 / nf;
                coef / nf
            }
            JumpReluSparsityLoss::Quadratic => {
                sparsity += coef * 2.0 / tl0 * (l0 - tl0).powi(2) / nf;
                coef / nf * 4.0 / tl0 * (l0 - tl0)
            }
            JumpReluSparsityLoss::Tanh => 0.0,
        };
        for j in 0..d_sae {
            let (fv, k, v) = (f(r, j), rect(r, j), pre[r * d_sae + j]);
            window += k as usize;
            // grad_output of JumpReLU (dL/df).
            let mut go_f: f64 = (0..d_out).map(|d| w(j, d) * g[r * d_out + d]).sum();
            if mode == JumpReluSparsityLoss::Tanh {
                let tz = (a * fv * norm[j]).tanh();
                sparsity += coef * tz / nf;
                go_f += coef / nf * a * norm[j] * (1.0 - tz * tz);
                if norm[j] > 0.0 {
                    for d in 0..d_out {
                        g_dec[j * d_out + d] += coef / nf * a * fv * (1.0 - tz * tz) * w(j, d) / norm[j];
                    }
                }
            }
            // JumpReLU.backward and Step.backward.
            let ste_f = th(j) / bw * k * go_f;
            let ste_s = 1.0 / bw * k * go_step;
            let mut dpre = if v > th(j) { go_f } else { 0.0 };
            if ste_to_input {
                dpre += ste_f + ste_s;
            }
            g_benc[d_sae + j] -= ste_f + ste_s;
            // calculate_pre_act_loss (dead latents).
            if let Some(pc) = pc {
                if dead[j] && th(j) - v > 0.0 {
                    pre_loss += pc * (th(j) - v) * norm[j] / nf;
                    g_benc[d_sae + j] += pc / nf * norm[j];
                    dpre -= pc / nf * norm[j];
                    for d in 0..d_out {
                        g_dec[j * d_out + d] += pc / nf * (th(j) - v) * w(j, d) / norm[j];
                    }
                }
            }
            for d in 0..d_out {
                g_dec[j * d_out + d] += fv * g[r * d_out + d];
            }
            for i in 0..d_in {
                g_enc[j * d_in + i] += dpre * xin(r, i);
                if apply {
                    g_bdec[i] -= dpre * p.enc[j * d_in + i] as f64;
                }
            }
            g_benc[j] += dpre;
        }
        for d in 0..d_out {
            g_bdec[d] += g[r * d_out + d];
            for i in 0..g_skip.len() / d_out {
                g_skip[d * d_in + i] += g[r * d_out + d] * x[r * d_in + i] as f64;
            }
        }
    }
    let mut grads = vec![g_enc, g_benc, g_dec, g_bdec];
    if p.skip.is_some() {
        grads.push(g_skip);
    }
    ((mse, sparsity, pre_loss), grads, window)
}

#[test]
fn jumprelu_pseudo_gradients_follow_saelens_formulas() {
    use JumpReluSparsityLoss::*;
    let cases = [
        (jr(0.7, 0.3, Step, None, false), false),
        (jr(0.3, 0.25, Tanh, None, false), false),
        (jr(0.5, 0.3, Quadratic, None, true), false),
        (jr(0.4, 0.3, Step, Some(0.5), true), false),
        (jr(0.6, 0.3, Tanh, Some(0.2), false), true),
        (jr(0.5, 0.4, Step, None, false), true),
    ];
    for (arch, skip) in cases {
        let (d_in, d_out, d_sae, n) = (6, if skip { 5 } else { 6 }, 12, 9);
        let cfg =
            TrainConfig { arch: arch.clone(), d_sae, transcoder: skip, skip_connection: skip, ..Default::default() };
        let mut s = 21u64;
        let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s) * 1.5).collect();
        let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s) * 1.5).collect();
        let yo = skip.then_some(y.as_slice());
        let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
        randomize(&mut t, 8);
        set_thresholds(&mut t, 9);
        t.cfg.dead_after_tokens = 100;
        for j in [0, 3, 7, 10] {
            t.tokens_since_fired[j] = 1000;
        }
        let dead = t.dead_mask();
        let coef = t.sparsity_coefficient_at(t.step) as f64;
        let yref = if skip { &y } else { &x };
        let ((mse, sp, pl), want, window) = naive_jumprelu(&t, &x, yref, n, coef, &dead);
        assert!(window > 5, "{arch:?}: only {window} entries in the kernel window");
        for dense in [false, true] {
            t.ops.dense_above_one_in = if dense { usize::MAX } else { 0 };
            let (parts, got) = t.loss_and_grads(&x, yo, n).unwrap();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 + 1e-4 * b.abs();
            assert!(
                close(parts.mse, mse) && close(parts.l1, sp) && close(parts.auxk, pl),
                "{arch:?} dense {dense}: losses {parts:?} vs ({mse}, {sp}, {pl})"
            );
            for ((name, a), b) in got.tensors().into_iter().zip(&want) {
                assert_eq!(a.len(), b.len(), "{name}");
                for (i, (u, v)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (*u as f64 - v).abs() <= 1e-5 + 1e-4 * v.abs(),
                        "{arch:?} dense {dense}: d/d {name}[{i}]: {u} vs SAELens formula {v}"
                    );
                }
            }
            // The threshold gradient is non-trivial.
            assert!(got.b_enc[d_sae..].iter().any(|v| v.abs() > 1e-3), "{arch:?}");
        }
    }
}

#[test]
fn jumprelu_gradients_match_saelens_autograd() {
    // tests/fixtures/jumprelu_grads: SAELens 6.54's JumpReLUTrainingSAE
    // training_forward_pass + backward on small random examples.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jumprelu_grads/grads.safetensors");
    let f = StFile::open(&path).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&f.metadata().unwrap()["cases"]).unwrap();
    let cases = meta["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 5);
    for (name, c) in cases {
        let k = &c["config"];
        let mode: JumpReluSparsityLoss = serde_json::from_value(k["jumprelu_sparsity_loss_mode"].clone()).unwrap();
        let get = |t: &str| f.f32(&format!("{name}.{t}"), None).unwrap();
        let x = get("x");
        let (d_sae, d_in) = (get("b_enc").len(), get("b_dec").len());
        let n = x.len() / d_in;
        let cfg = TrainConfig {
            arch: TrainArch::JumpRelu {
                l0_coefficient: c["coefficient"].as_f64().unwrap() as f32,
                l0_warmup_steps: 0,
                bandwidth: k["jumprelu_bandwidth"].as_f64().unwrap() as f32,
                initial_threshold: k["jumprelu_init_threshold"].as_f64().unwrap() as f32,
                sparsity_loss_mode: mode,
                tanh_scale: k["jumprelu_tanh_scale"].as_f64().unwrap() as f32,
                target_l0: k["target_l0"].as_f64().map(|v| v as f32),
                pre_act_loss_coefficient: k["pre_act_loss_coefficient"].as_f64().map(|v| v as f32),
                ste_to_input: k["jumprelu_ste_to_input"].as_bool().unwrap(),
            },
            d_sae,
            apply_b_dec_to_input: c["apply_b_dec_to_input"].as_bool().unwrap(),
            dead_after_tokens: 10,
            ..Default::default()
        };
        let mut t = Trainer::new(cfg, d_in, d_in, &x, None).unwrap();
        let transpose =
            |w: &[f32]| -> Vec<f32> { (0..d_sae * d_in).map(|ji| w[(ji % d_in) * d_sae + ji / d_in]).collect() };
        t.ops.params.enc = transpose(&get("W_enc"));
        t.ops.params.b_enc = [get("b_enc"), get("threshold")].concat();
        t.ops.params.dec = get("W_dec");
        t.ops.params.b_dec = get("b_dec");
        for (j, &d) in get("dead").iter().enumerate() {
            t.tokens_since_fired[j] = if d > 0.5 { 100 } else { 0 };
        }
        let want = [
            ("enc", transpose(&get("grad.W_enc"))),
            ("b_enc", [get("grad.b_enc"), get("grad.threshold")].concat()),
            ("dec", get("grad.W_dec")),
            ("b_dec", get("grad.b_dec")),
        ];
        let losses = &c["losses"];
        let loss = |k: &str| losses[k].as_f64().unwrap_or(0.0);
        for dense in [false, true] {
            t.ops.dense_above_one_in = if dense { usize::MAX } else { 0 };
            let (parts, got) = t.loss_and_grads(&x, None, n).unwrap();
            for (ours, theirs) in
                [(parts.mse, loss("mse_loss")), (parts.l1, loss("l0_loss")), (parts.auxk, loss("pre_act_loss"))]
            {
                assert!(
                    (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0),
                    "{name}: loss parts {parts:?} vs SAELens {losses}"
                );
            }
            for ((tn, a), (wn, b)) in got.tensors().into_iter().zip(&want) {
                assert_eq!(tn, *wn);
                for (i, (u, v)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (u - v).abs() <= 2e-5 + 1e-4 * v.abs(),
                        "{name} dense {dense}: d/d {tn}[{i}]: {u} vs SAELens {v}"
                    );
                }
            }
        }
    }
}

#[test]
fn jumprelu_chunking_gives_the_same_gradients() {
    let cfg = TrainConfig {
        arch: jr(0.5, 0.3, JumpReluSparsityLoss::Tanh, Some(0.3), true),
        d_sae: 10,
        ..Default::default()
    };
    let (d, n) = (6, 11);
    let mut s = 3u64;
    let x: Vec<f32> = (0..n * d).map(|_| lcg(&mut s)).collect();
    let mut t = Trainer::new(cfg, d, d, &x, None).unwrap();
    randomize(&mut t, 5);
    set_thresholds(&mut t, 6);
    t.cfg.dead_after_tokens = 10;
    t.tokens_since_fired[3] = 100;
    assert_chunking_invariant(&mut t, &x, None, n);
}

#[test]
fn jumprelu_l0_coefficient_warms_up_like_saelens() {
    let arch = match TrainArch::jumprelu(2.0) {
        TrainArch::JumpRelu { l0_warmup_steps: _, .. } => {
            let mut a = TrainArch::jumprelu(2.0);
            if let TrainArch::JumpRelu { l0_warmup_steps, .. } = &mut a {
                *l0_warmup_steps = 4;
            }
            a
        }
        _ => unreachable!(),
    };
    let cfg = TrainConfig { arch, d_sae: 4, ..Default::default() };
    let t = Trainer::new(cfg, 2, 2, &[1.0, 2.0], None).unwrap();
    // SAELens CoefficientScheduler: 0, 0.5, 1, 1.5, then 2.
    let got: Vec<f32> = (0..6).map(|s| t.sparsity_coefficient_at(s)).collect();
    assert_eq!(got, [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]);
    assert_eq!(t.threshold(), Some(&[0.01f32; 4][..]));
    assert_eq!(t.ops.params.b_enc[..4], [0.0; 4]);
}
