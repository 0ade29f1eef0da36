//! The LM forward's kernels of kernels/lm.cu against the CPU implementation
//! of the same device operations (`saepipe_model::cpu::CpuOps`). These need
//! an NVIDIA GPU: without one each test prints SKIPPED (never a silent pass);
//! SAEPIPE_REQUIRE_GPU=1 makes a missing GPU a failure.

use cudarc::driver::LaunchConfig;
use saepipe_core::compute::{Activation, DeviceOps, Heads, ScoreOpts};
use saepipe_cuda::GpuOps;
use saepipe_cuda::kernels::{Arg, NULL, grid_1d, per_row};
use saepipe_model::cpu::CpuOps;

mod support;
use support::{Rng, assert_close, dl};

#[test]
fn layer_norm_matches_cpu() {
    let Some(g) = support::gpu("layer_norm_matches_cpu") else { return };
    let (rows, d, eps) = (21, 768, 1e-5f32);
    let mut r = Rng(41);
    let x: Vec<f32> = r.vec(rows * d, 2.0).iter().map(|v| v + 0.5).collect();
    let (w, b) = (r.vec(d, 1.0), r.vec(d, 1.0));
    let (xd, wd, bd) = (g.upload(&x).unwrap(), g.upload(&w).unwrap(), g.upload(&b).unwrap());
    for affine in [true, false] {
        let (out, scale) = (g.zeros::<f32>(rows * d).unwrap(), g.zeros::<f32>(rows).unwrap());
        let (wp, bp) = if affine { (g.ptr(&wd), g.ptr(&bd)) } else { (NULL, NULL) };
        g.launch_lm(
            "layer_norm",
            per_row(rows, 256),
            &[g.ptr(&xd), rows.into(), d.into(), eps.into(), wp, bp, g.ptr(&out), g.ptr(&scale)],
        )
        .unwrap();
        let (mut want, mut want_s) = (vec![0f32; rows * d], vec![0f32; rows]);
        CpuOps.layer_norm(&x, rows, d, eps, affine.then_some((&w, &b)), &mut want, &mut want_s).unwrap();
        assert_close("layer_norm", &dl(&g, &out), &want, 1e-5);
        assert_close("layer_norm scale", &dl(&g, &scale), &want_s, 1e-5);
    }
}

#[test]
fn gelus_and_adds_match_cpu() {
    let Some(g) = support::gpu("gelus_and_adds_match_cpu") else { return };
    let (rows, d) = (30, 333);
    let n = rows * d;
    let mut r = Rng(43);
    let x = r.vec(n, 5.0);
    for (kernel, act) in [("gelu_tanh", Activation::GeluNew), ("gelu_erf", Activation::Gelu)] {
        let xd = g.upload(&x).unwrap();
        g.launch_lm(kernel, grid_1d(n), &[g.ptr(&xd), Arg::U64(n as u64)]).unwrap();
        let mut want = x.clone();
        CpuOps.activation(&mut want, n, act).unwrap();
        assert_close(kernel, &dl(&g, &xd), &want, 1e-6);
    }
    let (bias, y) = (r.vec(d, 1.0), r.vec(n, 1.0));
    let (xd, bd, yd) = (g.upload(&x).unwrap(), g.upload(&bias).unwrap(), g.upload(&y).unwrap());
    g.launch_lm("add_bias_rows", grid_1d(n), &[g.ptr(&xd), rows.into(), d.into(), g.ptr(&bd)]).unwrap();
    g.launch_lm("add_inplace", grid_1d(n), &[g.ptr(&xd), g.ptr(&yd), Arg::U64(n as u64)]).unwrap();
    assert_eq!(dl(&g, &xd), (0..n).map(|i| x[i] + bias[i % d] + y[i]).collect::<Vec<_>>());
}

#[test]
fn rotary_matches_cpu() {
    let Some(g) = support::gpu("rotary_matches_cpu") else { return };
    let (batch, ctx, heads, d_head, rot, base) = (2, 17, 3, 64, 16, 10000f32);
    let mut r = Rng(47);
    let q = r.vec(batch * ctx * heads * d_head, 1.0);
    let qd = g.upload(&q).unwrap();
    g.launch_lm(
        "rotary_neox",
        grid_1d(batch * ctx * heads * rot / 2),
        &[g.ptr(&qd), batch.into(), ctx.into(), heads.into(), d_head.into(), rot.into(), base.into()],
    )
    .unwrap();
    let mut want = q.clone();
    CpuOps.rotary(&mut want, Heads { batch, ctx, heads, d_head }, rot, base).unwrap();
    assert_close("rotary_neox", &dl(&g, &qd), &want, 2e-5);
}

#[test]
fn causal_attention_matches_cpu() {
    let Some(g) = support::gpu("causal_attention_matches_cpu") else { return };
    let ops = GpuOps(g.clone());
    let (batch, ctx, heads, d_head) = (2, 70, 3, 32);
    let scale = 1.0 / (d_head as f32).sqrt();
    let mut r = Rng(53);
    let n = batch * ctx * heads * d_head;
    let (q, k, v) = (r.vec(n, 2.0), r.vec(n, 2.0), r.vec(n, 1.0));
    let (qd, kd, vd) = (g.upload(&q).unwrap(), g.upload(&k).unwrap(), g.upload(&v).unwrap());
    let shape = Heads { batch, ctx, heads, d_head };
    // Plain causal attention; Gemma 2's soft-capped scores and a sliding
    // window shorter than the context; a window longer than it.
    for opts in [
        ScoreOpts::scaled(scale),
        ScoreOpts { scale, soft_cap: Some(1.5), window: Some(9) },
        ScoreOpts { scale, soft_cap: None, window: Some(1000) },
    ] {
        let mut z = g.zeros::<f32>(n).unwrap();
        let mut sc = g.zeros::<f32>(batch * heads * ctx * ctx).unwrap();
        let mut pat = g.zeros::<f32>(batch * heads * ctx * ctx).unwrap();
        ops.attention(&qd, &kd, &vd, shape, opts, &mut z, Some(&mut sc), Some(&mut pat)).unwrap();
        let (mut wz, mut ws, mut wp) = (vec![0f32; n], vec![0f32; sc.len()], vec![0f32; sc.len()]);
        CpuOps.attention(&q, &k, &v, shape, opts, &mut wz, Some(&mut ws), Some(&mut wp)).unwrap();
        assert_close(&format!("attention z {opts:?}"), &dl(&g, &z), &wz, 1e-5);
        assert_close(&format!("attention pattern {opts:?}"), &dl(&g, &pat), &wp, 1e-5);
        let gs = dl(&g, &sc);
        for (i, (a, b)) in gs.iter().zip(&ws).enumerate() {
            assert!((a.is_infinite() && *a == *b) || (a - b).abs() <= 1e-4, "{opts:?} score {i}: {a} vs {b}");
        }
        // Optional outputs may be null (the kernel launched by name).
        let z2 = g.zeros::<f32>(n).unwrap();
        let cfg = LaunchConfig {
            grid_dim: (ctx as u32, heads as u32, batch as u32),
            block_dim: (64, 1, 1),
            shared_mem_bytes: (ctx * 4) as u32,
        };
        let window = opts.window.unwrap_or(0).min(ctx);
        g.launch_lm(
            "causal_attention",
            cfg,
            &[
                g.ptr(&qd),
                g.ptr(&kd),
                g.ptr(&vd),
                ctx.into(),
                heads.into(),
                d_head.into(),
                opts.scale.into(),
                opts.soft_cap.unwrap_or(0.0).into(),
                window.into(),
                g.ptr(&z2),
                NULL,
                NULL,
            ],
        )
        .unwrap();
        assert_close(&format!("attention z (no optional outputs) {opts:?}"), &dl(&g, &z2), &wz, 1e-5);
    }
}

#[test]
fn soft_cap_matches_cpu() {
    let Some(g) = support::gpu("soft_cap_matches_cpu") else { return };
    let ops = GpuOps(g.clone());
    let mut x = Rng(59).vec(5000, 40.0);
    x[7] = f32::NEG_INFINITY;
    let mut xd = g.upload(&x).unwrap();
    ops.soft_cap(&mut xd, x.len(), 30.0).unwrap();
    // The kernel launched by name gives the same values.
    let yd = g.upload(&x).unwrap();
    g.launch_lm("soft_cap_inplace", grid_1d(x.len()), &[g.ptr(&yd), Arg::U64(x.len() as u64), 30.0f32.into()]).unwrap();
    assert_eq!(dl(&g, &yd), dl(&g, &xd));
    CpuOps.soft_cap(&mut x, 5000, 30.0).unwrap();
    let got = dl(&g, &xd);
    assert_eq!(got[7], f32::NEG_INFINITY);
    x[7] = 0.0;
    let got: Vec<f32> = got.iter().enumerate().map(|(i, &v)| if i == 7 { 0.0 } else { v }).collect();
    assert_close("soft_cap", &got, &x, 1e-6);
}

#[test]
fn embedding_affine_relu_and_loss_kernels_match_cpu() {
    let Some(g) = support::gpu("embedding_affine_relu_and_loss_kernels_match_cpu") else { return };
    let ops = GpuOps(g);
    let g = &ops.0;
    let mut r = Rng(59);
    let (vocab, d, rows) = (1000, 96, 37);
    let w = r.vec(vocab * d, 1.0);
    let idx: Vec<i32> = (0..rows).map(|_| r.below(vocab) as i32).collect();
    let (wd, idd) = (g.upload(&w).unwrap(), g.upload(&idx).unwrap());
    let out = g.zeros::<f32>(rows * d).unwrap();
    g.launch_lm("gather_rows", grid_1d(rows * d), &[g.ptr(&wd), g.ptr(&idd), rows.into(), d.into(), g.ptr(&out)])
        .unwrap();
    let mut want = vec![0f32; rows * d];
    CpuOps.gather_rows(&w, &idx, rows, d, &mut want).unwrap();
    assert_eq!(dl(g, &out), want, "gather_rows");

    let (x, sw, sb) = (r.vec(rows * d, 3.0), r.vec(d, 1.0), r.vec(d, 1.0));
    let (xd, swd, sbd) = (g.upload(&x).unwrap(), g.upload(&sw).unwrap(), g.upload(&sb).unwrap());
    g.launch_lm("scale_shift_rows", grid_1d(rows * d), &[g.ptr(&xd), rows.into(), d.into(), g.ptr(&swd), g.ptr(&sbd)])
        .unwrap();
    let mut want = x.clone();
    CpuOps.scale_shift(&mut want, rows, d, &sw, &sb).unwrap();
    assert_close("scale_shift_rows", &dl(g, &xd), &want, 1e-6);

    let xd = g.upload(&x).unwrap();
    g.launch_lm("relu_inplace", grid_1d(x.len()), &[g.ptr(&xd), Arg::U64(x.len() as u64)]).unwrap();
    assert_eq!(dl(g, &xd), x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>(), "relu_inplace");

    // Large logits (a real vocabulary, values far from 0) and skipped rows.
    let (rows, vocab) = (19, 50304);
    let logits: Vec<f32> = r.vec(rows * vocab, 8.0).iter().map(|v| v + 30.0).collect();
    let target: Vec<i32> = (0..rows).map(|i| if i % 5 == 4 { -1 } else { r.below(vocab) as i32 }).collect();
    let (ld, td) = (g.upload(&logits).unwrap(), g.upload(&target).unwrap());
    let out = g.zeros::<f32>(rows).unwrap();
    g.launch_lm("token_ce", per_row(rows, 256), &[g.ptr(&ld), rows.into(), vocab.into(), g.ptr(&td), g.ptr(&out)])
        .unwrap();
    let mut want = vec![0f32; rows];
    CpuOps.token_ce(&logits, rows, vocab, &target, &mut want).unwrap();
    assert_close("token_ce", &dl(g, &out), &want, 1e-5);
}

/// The operations the Llama family adds, through `GpuOps` (kernel launches
/// included) against `CpuOps`: RMSNorm with and without its weight, SiLU, the
/// gated activation, rotary with given frequencies, and repeated key/value heads
/// (kernels "rms_norm", "silu_inplace", "gated_act", "rotary_freqs" and
/// "repeat_heads", launched by `GpuOps`).
#[test]
fn llama_operations_match_cpu() {
    let Some(g) = support::gpu("llama_operations_match_cpu") else { return };
    let ops = GpuOps(g);
    let g = &ops.0;
    let mut r = Rng(61);
    let (rows, d, eps) = (23, 640, 1e-6f32);
    let x = r.vec(rows * d, 2.0);
    let w = r.vec(d, 1.0);
    let (xd, wd) = (g.upload(&x).unwrap(), g.upload(&w).unwrap());
    for weighted in [true, false] {
        let (mut out, mut scale) = (g.zeros::<f32>(rows * d).unwrap(), g.zeros::<f32>(rows).unwrap());
        ops.rms_norm(&xd, rows, d, eps, weighted.then_some(&wd), &mut out, &mut scale).unwrap();
        let (mut want, mut want_s) = (vec![0f32; rows * d], vec![0f32; rows]);
        CpuOps.rms_norm(&x, rows, d, eps, weighted.then_some(&w), &mut want, &mut want_s).unwrap();
        assert_close("rms_norm", &dl(g, &out), &want, 1e-5);
        assert_close("rms_norm scale", &dl(g, &scale), &want_s, 1e-5);
    }

    let n = 3001;
    let (gate, lin) = (r.vec(n, 6.0), r.vec(n, 2.0));
    let mut gd = g.upload(&gate).unwrap();
    ops.activation(&mut gd, n, Activation::Silu).unwrap();
    let mut want = gate.clone();
    CpuOps.activation(&mut want, n, Activation::Silu).unwrap();
    assert_close("silu", &dl(g, &gd), &want, 1e-6);
    for act in [Activation::Silu, Activation::GeluNew, Activation::Gelu, Activation::Relu] {
        let (mut gd, ld) = (g.upload(&gate).unwrap(), g.upload(&lin).unwrap());
        ops.gated_activation(&mut gd, &ld, n, act).unwrap();
        let mut want = gate.clone();
        CpuOps.gated_activation(&mut want, &lin, n, act).unwrap();
        assert_close(&format!("gated_activation {act:?}"), &dl(g, &gd), &want, 1e-6);
    }

    let (batch, ctx, heads, d_head) = (2, 33, 3, 64);
    let shape = Heads { batch, ctx, heads, d_head };
    let q = r.vec(shape.len(), 1.0);
    // Llama-3-like frequencies: base 500000, some divided by 8.
    let freq: Vec<f32> = (0..d_head / 2)
        .map(|i| 500000f32.powf(-((2 * i) as f32) / d_head as f32) / if i > 20 { 8.0 } else { 1.0 })
        .collect();
    let (mut qd, fd) = (g.upload(&q).unwrap(), g.upload(&freq).unwrap());
    ops.rotary_freqs(&mut qd, shape, d_head, &fd).unwrap();
    let mut want = q.clone();
    CpuOps.rotary_freqs(&mut want, shape, d_head, &freq).unwrap();
    assert_close("rotary_freqs", &dl(g, &qd), &want, 2e-5);

    let groups = 4;
    let kd = g.upload(&q).unwrap();
    let mut out = g.zeros::<f32>(shape.len() * groups).unwrap();
    ops.repeat_heads(&kd, shape, groups, &mut out).unwrap();
    let mut want = vec![0f32; shape.len() * groups];
    CpuOps.repeat_heads(&q, shape, groups, &mut want).unwrap();
    assert_eq!(dl(g, &out), want, "repeat_heads");
}
