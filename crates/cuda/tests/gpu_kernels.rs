//! GPU kernels against CPU references: every kernel of kernels/sae.cu and
//! the shared ones of kernels/lm.cu, and the TopK SAE forward and encode
//! (the LM forward's kernels are in gpu_lm_kernels.rs, GPU training in
//! gpu_train.rs). These need an NVIDIA GPU:
//! without one each test prints SKIPPED (never a silent pass); set
//! SAEPIPE_REQUIRE_GPU=1 to make a missing GPU a failure (what a GPU CI job
//! does).

use cudarc::driver::{CudaSlice, LaunchConfig};
use saepipe_cuda::kernels::{Arg, Gpu, GpuTopKSae, NULL, grid_1d, per_row};
use saepipe_cuda::nvrtc;
use saepipe_sae::train::{TrainArch, TrainConfig, Trainer};

mod support;
use support::{Rng, assert_close, dl, max_rel};

fn float_key(f: f32) -> u32 {
    let u = f.to_bits();
    if u & 0x8000_0000 != 0 { !u } else { u | 0x8000_0000 }
}

// ---------------------------------------------------------------- encoder

#[test]
fn gemm_matches_cpu() {
    let Some(g) = support::gpu("gemm_matches_cpu") else { return };
    let (m, n, k) = (130, 257, 70);
    let mut r = Rng(1);
    let a = r.vec(m * k, 1.0);
    let b = r.vec(n * k, 1.0); // [n, k]
    let bias = r.vec(n, 1.0);
    let thr = r.vec(n, 1.0);
    let dot = |i: usize, j: usize, bt: bool| -> f32 {
        (0..k).map(|t| a[i * k + t] * if bt { b[j * k + t] } else { b[t * n + j] }).sum::<f32>() + bias[j]
    };
    let (ad, bd, biasd, thrd) =
        (g.upload(&a).unwrap(), g.upload(&b).unwrap(), g.upload(&bias).unwrap(), g.upload(&thr).unwrap());
    let c = g.zeros::<f32>(m * n).unwrap();
    // act 0 / 1 / 2 (none, ReLU, JumpReLU), B transposed or not.
    for (act, bt) in [(0, true), (1, true), (2, false), (0, false)] {
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        g.launch(
            "gemm_bias_act",
            cfg,
            &[
                g.ptr(&ad),
                g.ptr(&bd),
                g.ptr(&biasd),
                g.ptr(&thrd),
                g.ptr(&c),
                m.into(),
                n.into(),
                k.into(),
                (bt as i32).into(),
                act.into(),
            ],
        )
        .unwrap();
        let want: Vec<f32> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let v = dot(i, j, bt);
                match act {
                    1 => v.max(0.0),
                    2 => {
                        if v > thr[j] {
                            v
                        } else {
                            0.0
                        }
                    }
                    _ => v,
                }
            })
            .collect();
        assert_close(&format!("gemm act {act} b_trans {bt}"), &dl(&g, &c), &want, 1e-5);
    }
    // The training GEMM (cuBLAS when present, else the kernel above).
    let mut c2 = g.zeros::<f32>(m * n).unwrap();
    g.gemm_nt_bias(&ad, &bd, Some(&biasd), &mut c2, m, n, k).unwrap();
    let want: Vec<f32> = (0..m * n).map(|e| dot(e / n, e % n, true)).collect();
    assert_close("gemm_nt_bias", &dl(&g, &c2), &want, 1e-5);
    eprintln!("gemm_nt_bias ran on {}", if g.blas().is_some() { "cuBLAS" } else { "the saepipe GEMM kernel" });
    // TF32 tensor cores: inputs rounded to a 10-bit mantissa, so ~1e-3 relative.
    g.set_precision(saepipe_cuda::Precision::Tf32);
    if g.precision() == saepipe_cuda::Precision::Tf32 {
        let mut c3 = g.zeros::<f32>(m * n).unwrap();
        g.gemm_nt_bias(&ad, &bd, Some(&biasd), &mut c3, m, n, k).unwrap();
        let got = dl(&g, &c3);
        let e = max_rel(&got, &want);
        assert!(e <= 5e-3, "TF32 gemm_nt_bias: max rel err {e}");
        assert!(got != dl(&g, &c2), "TF32 results are bit-identical to SGEMM: tensor cores not used?");
    } else {
        eprintln!("SKIPPED the TF32 GEMM check: no cuBLAS");
    }
    g.set_precision(saepipe_cuda::Precision::F32);
}

#[test]
fn input_preparation_matches_cpu() {
    let Some(g) = support::gpu("input_preparation_matches_cpu") else { return };
    let (rows, d) = (37, 129);
    let mut r = Rng(2);
    let x = r.vec(rows * d, 2.0);
    let b = r.vec(d, 1.0);
    let (xd, bd) = (g.upload(&x).unwrap(), g.upload(&b).unwrap());
    let (o1, o2) = (g.zeros::<f32>(rows * d).unwrap(), g.zeros::<f32>(rows * d).unwrap());
    g.launch("sub_bias_rows", grid_1d(rows * d), &[g.ptr(&xd), g.ptr(&bd), g.ptr(&o1), rows.into(), d.into()]).unwrap();
    let want: Vec<f32> = (0..rows * d).map(|i| x[i] - b[i % d]).collect();
    assert_eq!(dl(&g, &o1), want);
    g.launch(
        "prepare_input",
        grid_1d(rows * d),
        &[g.ptr(&xd), rows.into(), d.into(), 0.5f32.into(), g.ptr(&bd), g.ptr(&o1), g.ptr(&o2)],
    )
    .unwrap();
    let xs: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
    assert_eq!(dl(&g, &o1), xs);
    assert_eq!(dl(&g, &o2), (0..rows * d).map(|i| xs[i] - b[i % d]).collect::<Vec<_>>());
    g.launch(
        "prepare_input",
        grid_1d(rows * d),
        &[g.ptr(&xd), rows.into(), d.into(), 1.0f32.into(), NULL, g.ptr(&o1), g.ptr(&o2)],
    )
    .unwrap();
    assert_eq!(dl(&g, &o2), x);
}

#[test]
fn topk_matches_cpu_for_large_rows() {
    let Some(g) = support::gpu("topk_matches_cpu_for_large_rows") else { return };
    for (rows, m, k) in [(3, 8192, 16), (2, 131072, 512), (4, 1000, 1000)] {
        let mut r = Rng(7 + m as u64);
        let x = r.vec(rows * m, 3.0);
        let (idx, val) = g.topk_rows(&g.upload(&x).unwrap(), rows, m, k, false).unwrap();
        let (idx, val) = (dl(&g, &idx), dl(&g, &val));
        for row in 0..rows {
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&a, &b| x[row * m + b].total_cmp(&x[row * m + a]).then(a.cmp(&b)));
            let mut want: Vec<usize> = order[..k].to_vec();
            want.sort_unstable();
            let got: Vec<usize> = idx[row * k..(row + 1) * k].iter().map(|&i| i as usize).collect();
            assert_eq!(got, want, "row {row} (m {m}, k {k})");
            for (j, &i) in got.iter().enumerate() {
                assert_eq!(val[row * k + j], x[row * m + i]);
            }
        }
    }
}

#[test]
fn topk_modes_and_strided_output() {
    let Some(g) = support::gpu("topk_modes_and_strided_output") else { return };
    let (rows, m, k, stride, off) = (5, 300, 40, 50, 7);
    let mut r = Rng(3);
    let mut x = r.vec(rows * m, 1.0);
    // Ties at the cut are taken in index order.
    for v in &mut x[..m] {
        *v = v.abs().min(0.5);
    }
    let xd = g.upload(&x).unwrap();
    for mode in [0, 1, 2] {
        let mut idx = g.upload(&vec![-7i32; off + rows * stride]).unwrap();
        let mut val = g.upload(&vec![9f32; off + rows * stride]).unwrap();
        g.topk_rows_into(&xd, rows, m, k, mode, &mut idx, off, &mut val, off, stride).unwrap();
        let (gi, gv) = (dl(&g, &idx), dl(&g, &val));
        for row in 0..rows {
            let p = &x[row * m..(row + 1) * m];
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let mut sel = order[..k].to_vec();
            sel.sort_unstable();
            for (j, &i) in sel.iter().enumerate() {
                let e = off + row * stride + j;
                let (wi, wv) = match mode {
                    0 => (i as i32, p[i]),
                    1 => (i as i32, p[i].max(0.0)),
                    _ if p[i] > 0.0 => (i as i32, p[i]),
                    _ => (-1, 0.0),
                };
                assert_eq!((gi[e], gv[e]), (wi, wv), "mode {mode} row {row} slot {j}");
            }
            for j in k..stride {
                assert_eq!(gi[off + row * stride + j], -7, "slot past k written");
            }
        }
        assert!(gi[..off].iter().all(|&v| v == -7));
    }
}

#[test]
fn batch_topk_radix_select_matches_cpu() {
    let Some(g) = support::gpu("batch_topk_radix_select_matches_cpu") else { return };
    let (rows, m, total) = (64, 3000, 64 * 20);
    let mut r = Rng(5);
    let x = r.vec(rows * m, 2.0);
    let xd = g.upload(&x).unwrap();
    let mut hz = g.zeros::<u32>(256).unwrap();
    // Host walks the digits as the batch-top-k driver does.
    let (mut prefix, mut mask, mut kleft) = (0u32, 0u32, total as u32);
    for shift in [24, 16, 8, 0] {
        g.stream.memset_zeros(&mut hz).unwrap();
        let cfg = LaunchConfig { grid_dim: (64, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        g.launch(
            "radix_histogram",
            cfg,
            &[g.ptr(&xd), Arg::U64((rows * m) as u64), prefix.into(), mask.into(), shift.into(), g.ptr(&hz)],
        )
        .unwrap();
        let h = dl(&g, &hz);
        // CPU histogram of the same pass.
        let mut want = vec![0u32; 256];
        for &v in &x {
            let key = float_key(v);
            if key & mask == prefix {
                want[((key >> shift) & 255) as usize] += 1;
            }
        }
        assert_eq!(h, want, "histogram at shift {shift}");
        let (mut cum, mut b) = (0u32, 255usize);
        while b > 0 && cum + h[b] < kleft {
            cum += h[b];
            b -= 1;
        }
        prefix |= (b as u32) << shift;
        kleft -= cum;
        mask |= 255 << shift;
    }
    let mut sorted = x.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(prefix, float_key(sorted[total - 1]), "threshold key is the k-th largest value");
    let cap = 64;
    let (idx, val, cnt) =
        (g.zeros::<i32>(rows * cap).unwrap(), g.zeros::<f32>(rows * cap).unwrap(), g.zeros::<i32>(rows).unwrap());
    g.launch(
        "select_at_least",
        per_row(rows, 256),
        &[
            g.ptr(&xd),
            rows.into(),
            m.into(),
            prefix.into(),
            cap.into(),
            g.ptr(&idx),
            g.ptr(&val),
            g.ptr(&cnt),
            1i32.into(),
        ],
    )
    .unwrap();
    let (gi, gv, gc) = (dl(&g, &idx), dl(&g, &val), dl(&g, &cnt));
    let mut kept = 0;
    for row in 0..rows {
        let want: Vec<usize> = (0..m).filter(|&i| float_key(x[row * m + i]) >= prefix).take(cap).collect();
        assert_eq!(gc[row] as usize, want.len(), "row {row} count");
        for (j, &i) in want.iter().enumerate() {
            assert_eq!(gi[row * cap + j] as usize, i);
            assert_eq!(gv[row * cap + j], x[row * m + i].max(0.0));
        }
        kept += want.len();
    }
    assert_eq!(kept, total);
}

// ---------------------------------------------------------------- decoder and backward

/// Random entries [rows, stride] with `k` used slots per row, some empty (-1).
fn entries(r: &mut Rng, rows: usize, stride: usize, k: usize, n_lat: usize) -> (Vec<i32>, Vec<f32>) {
    let mut idx = vec![-5i32; rows * stride];
    let mut val = vec![0f32; rows * stride];
    for row in 0..rows {
        for j in 0..k {
            idx[row * stride + j] = if r.next() > 0.8 { -1 } else { r.below(n_lat) as i32 };
            val[row * stride + j] = r.next();
        }
    }
    (idx, val)
}

#[test]
fn sparse_decode_and_value_grads_match_cpu() {
    let Some(g) = support::gpu("sparse_decode_and_value_grads_match_cpu") else { return };
    let (rows, stride, k, n_lat, d) = (33, 300, 290, 1000, 700);
    let mut r = Rng(9);
    let (idx, val) = entries(&mut r, rows, stride, k, n_lat);
    let counts: Vec<i32> = (0..rows).map(|i| (i * 37 % (k + 1)) as i32).collect();
    let w = r.vec(n_lat * d, 1.0);
    let bias = r.vec(d, 1.0);
    let prior = r.vec(rows * d, 1.0);
    let gout = r.vec(rows * d, 1.0);
    let (idxd, vald, cd, wd, bd, gd) = (
        g.upload(&idx).unwrap(),
        g.upload(&val).unwrap(),
        g.upload(&counts).unwrap(),
        g.upload(&w).unwrap(),
        g.upload(&bias).unwrap(),
        g.upload(&gout).unwrap(),
    );
    for (use_counts, acc, use_bias) in [(false, false, true), (true, true, false), (true, false, true)] {
        let out = g.upload(&prior).unwrap();
        g.launch(
            "sparse_decode",
            per_row(rows, 128),
            &[
                g.ptr(&idxd),
                g.ptr(&vald),
                if use_counts { g.ptr(&cd) } else { NULL },
                rows.into(),
                k.into(),
                stride.into(),
                g.ptr(&wd),
                d.into(),
                if use_bias { g.ptr(&bd) } else { NULL },
                g.ptr(&out),
                (acc as i32).into(),
            ],
        )
        .unwrap();
        let mut want = vec![0f32; rows * d];
        for row in 0..rows {
            let cnt = if use_counts { counts[row] as usize } else { k };
            for c in 0..d {
                let mut s = if use_bias { bias[c] } else { 0.0 } + if acc { prior[row * d + c] } else { 0.0 };
                for j in 0..cnt {
                    let l = idx[row * stride + j];
                    if l >= 0 {
                        s += val[row * stride + j] * w[l as usize * d + c];
                    }
                }
                want[row * d + c] = s;
            }
        }
        assert_close(&format!("sparse_decode counts {use_counts} acc {acc}"), &dl(&g, &out), &want, 1e-5);
    }
    let gv = g.upload(&vec![7f32; rows * stride]).unwrap();
    g.launch(
        "sparse_grad_values",
        per_row(rows, 256),
        &[g.ptr(&idxd), g.ptr(&cd), rows.into(), k.into(), stride.into(), g.ptr(&wd), d.into(), g.ptr(&gd), g.ptr(&gv)],
    )
    .unwrap();
    let got = dl(&g, &gv);
    for row in 0..rows {
        for j in 0..stride {
            let e = row * stride + j;
            let l = idx[e];
            let want = if j >= counts[row] as usize {
                7.0
            } else if l < 0 {
                0.0
            } else {
                (0..d).map(|c| gout[row * d + c] * w[l as usize * d + c]).sum()
            };
            assert!(
                (got[e] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "grad value row {row} slot {j}: {} vs {want}",
                got[e]
            );
        }
    }
}

/// Groups entries by latent on the GPU; returns (counts, offsets, perm).
#[allow(clippy::type_complexity)]
fn group_by_latent(
    g: &Gpu,
    idxd: &CudaSlice<i32>,
    counts_per_row: Option<&CudaSlice<i32>>,
    rows: usize,
    k: usize,
    stride: usize,
    n_lat: usize,
) -> (CudaSlice<i32>, CudaSlice<i32>, CudaSlice<i32>) {
    let counts = g.zeros::<i32>(n_lat).unwrap();
    let offsets = g.zeros::<i32>(n_lat + 1).unwrap();
    let cursor = g.zeros::<i32>(n_lat).unwrap();
    let perm = g.zeros::<i32>(rows * stride).unwrap();
    let tmp = g.zeros::<i32>(rows * stride).unwrap();
    let cpr = counts_per_row.map_or(NULL, |c| g.ptr(c));
    g.launch(
        "count_latents",
        grid_1d(rows * k),
        &[g.ptr(idxd), cpr, rows.into(), k.into(), stride.into(), g.ptr(&counts)],
    )
    .unwrap();
    g.launch("exclusive_scan_1block", per_row(1, 1024), &[g.ptr(&counts), n_lat.into(), g.ptr(&offsets)]).unwrap();
    g.launch(
        "scatter_by_latent",
        grid_1d(rows * k),
        &[g.ptr(idxd), cpr, rows.into(), k.into(), stride.into(), g.ptr(&offsets), g.ptr(&cursor), g.ptr(&perm)],
    )
    .unwrap();
    g.launch("sort_segments", per_row(n_lat, 256), &[g.ptr(&offsets), n_lat.into(), g.ptr(&perm), g.ptr(&tmp)])
        .unwrap();
    (counts, offsets, perm)
}

#[test]
fn latent_grouping_matches_cpu_counting_sort() {
    let Some(g) = support::gpu("latent_grouping_matches_cpu_counting_sort") else { return };
    let (rows, stride, k, n_lat) = (5000, 12, 10, 3000);
    let mut r = Rng(13);
    let (mut idx, _) = entries(&mut r, rows, stride, k, n_lat);
    // A latent on every row (a segment above the shared-memory sort's capacity)
    // and one on ~2000 rows (bitonic sort of a long segment).
    for row in 0..rows {
        idx[row * stride] = 17;
        if row % 5 < 2 {
            idx[row * stride + 1] = 2999;
        }
    }
    let counts_per_row: Vec<i32> = (0..rows).map(|i| (i % (k + 1)).max(2) as i32).collect();
    let idxd = g.upload(&idx).unwrap();
    let cprd = g.upload(&counts_per_row).unwrap();
    let (counts, offsets, perm) = group_by_latent(&g, &idxd, Some(&cprd), rows, k, stride, n_lat);
    // CPU: stable counting sort of the used, non-empty entries.
    let mut lists: Vec<Vec<i32>> = vec![Vec::new(); n_lat];
    for row in 0..rows {
        for j in 0..counts_per_row[row] as usize {
            let l = idx[row * stride + j];
            if l >= 0 {
                lists[l as usize].push((row * stride + j) as i32);
            }
        }
    }
    let want_counts: Vec<i32> = lists.iter().map(|l| l.len() as i32).collect();
    let mut want_offsets = vec![0i32];
    for c in &want_counts {
        want_offsets.push(want_offsets.last().unwrap() + c);
    }
    let want_perm: Vec<i32> = lists.concat();
    assert!(want_counts[17] as usize > 4096);
    assert_eq!(dl(&g, &counts), want_counts);
    assert_eq!(dl(&g, &offsets), want_offsets);
    assert_eq!(dl(&g, &perm)[..want_perm.len()], want_perm[..]);
}

#[test]
fn segmented_gradients_match_cpu() {
    let Some(g) = support::gpu("segmented_gradients_match_cpu") else { return };
    let (rows, stride, split, n_lat, d) = (200, 24, 16, 500, 300);
    let mut r = Rng(17);
    let (mut idx, coef) = entries(&mut r, rows, stride, stride, n_lat);
    for row in 0..rows {
        idx[row * stride + 3] = 42; // a busy latent
    }
    let x = r.vec(rows * d, 1.0);
    let x2 = r.vec(rows * d, 1.0);
    let (idxd, cd, xd, x2d) =
        (g.upload(&idx).unwrap(), g.upload(&coef).unwrap(), g.upload(&x).unwrap(), g.upload(&x2).unwrap());
    let (_, offsets, perm) = group_by_latent(&g, &idxd, None, rows, stride, stride, n_lat);
    let dw = g.upload(&vec![5f32; n_lat * d]).unwrap();
    g.launch(
        "segment_outer_accumulate",
        per_row(n_lat, 128),
        &[
            g.ptr(&perm),
            g.ptr(&offsets),
            stride.into(),
            split.into(),
            g.ptr(&cd),
            g.ptr(&xd),
            g.ptr(&x2d),
            d.into(),
            0.5f32.into(),
            g.ptr(&dw),
        ],
    )
    .unwrap();
    let mut want = vec![0f32; n_lat * d];
    let mut want_sum = vec![0f32; n_lat];
    for row in 0..rows {
        for j in 0..stride {
            let l = idx[row * stride + j];
            if l < 0 {
                continue;
            }
            let src = if j < split { &x } else { &x2 };
            for c in 0..d {
                want[l as usize * d + c] += 0.5 * coef[row * stride + j] * src[row * d + c];
            }
            want_sum[l as usize] += 2.0 * coef[row * stride + j];
        }
    }
    assert_close("segment_outer_accumulate", &dl(&g, &dw), &want, 1e-5);
    let sums = g.zeros::<f32>(n_lat).unwrap();
    g.launch(
        "segment_sum",
        grid_1d(n_lat),
        &[g.ptr(&perm), g.ptr(&offsets), n_lat.into(), g.ptr(&cd), 2.0f32.into(), g.ptr(&sums)],
    )
    .unwrap();
    assert_close("segment_sum", &dl(&g, &sums), &want_sum, 1e-5);
}

#[test]
fn dense_reductions_match_cpu() {
    let Some(g) = support::gpu("dense_reductions_match_cpu") else { return };
    let (rows, d) = (1000, 300);
    let mut r = Rng(19);
    let x = r.vec(rows * d, 1.0);
    let mut coef = r.vec(rows, 1.0);
    for (i, c) in coef.iter_mut().enumerate() {
        if i % 3 == 0 {
            *c = 0.0;
        }
    }
    let (xd, cd) = (g.upload(&x).unwrap(), g.upload(&coef).unwrap());
    let out = g.zeros::<f32>(d).unwrap();
    g.launch("column_sum", grid_1d(d), &[g.ptr(&xd), rows.into(), d.into(), 0.25f32.into(), g.ptr(&out)]).unwrap();
    let want: Vec<f32> = (0..d).map(|c| 0.25 * (0..rows).map(|i| x[i * d + c]).sum::<f32>()).collect();
    assert_close("column_sum", &dl(&g, &out), &want, 1e-5);
    let rps = 64;
    let splits = rows.div_ceil(rps);
    let part = g.zeros::<f32>(splits * d).unwrap();
    let cfg = LaunchConfig {
        grid_dim: (d.div_ceil(128) as u32, splits as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    g.launch("weighted_rows_partial", cfg, &[g.ptr(&xd), g.ptr(&cd), rows.into(), d.into(), rps.into(), g.ptr(&part)])
        .unwrap();
    let want: Vec<f32> = (0..splits * d)
        .map(|e| ((e / d) * rps..((e / d + 1) * rps).min(rows)).map(|i| coef[i] * x[i * d + e % d]).sum())
        .collect();
    assert_close("weighted_rows_partial", &dl(&g, &part), &want, 1e-5);
    let partial = g.zeros::<f64>(2 * 256).unwrap();
    let cfg = LaunchConfig { grid_dim: (256, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    g.launch("sum_squares_partial", cfg, &[g.ptr(&xd), Arg::U64((rows * d) as u64), g.ptr(&partial), 256i32.into()])
        .unwrap();
    let p = dl(&g, &partial);
    assert!(p[..256].iter().all(|&v| v == 0.0), "offset respected");
    let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let got: f64 = p[256..].iter().sum();
    assert!((got - want).abs() <= 1e-9 * want, "sum of squares {got} vs {want}");
}

#[test]
fn elementwise_kernels_match_cpu() {
    let Some(g) = support::gpu("elementwise_kernels_match_cpu") else { return };
    let (rows, m) = (7, 1001);
    let mut r = Rng(23);
    let x = r.vec(rows * m, 1.0);
    let y = r.vec(rows * m, 1.0);
    let dead: Vec<u8> = (0..m).map(|j| (j % 7 == 3) as u8).collect();
    let (xd, yd, deadd) = (g.upload(&x).unwrap(), g.upload(&y).unwrap(), g.upload(&dead).unwrap());
    let diff = g.zeros::<f32>(rows * m).unwrap();
    g.launch(
        "sub_elementwise",
        grid_1d(rows * m),
        &[g.ptr(&xd), g.ptr(&yd), g.ptr(&diff), Arg::U64((rows * m) as u64)],
    )
    .unwrap();
    assert_eq!(dl(&g, &diff), x.iter().zip(&y).map(|(a, b)| a - b).collect::<Vec<_>>());
    g.launch("mask_live_latents", grid_1d(rows * m), &[g.ptr(&xd), rows.into(), m.into(), g.ptr(&deadd)]).unwrap();
    let want: Vec<f32> = (0..rows * m).map(|i| if dead[i % m] != 0 { x[i] } else { -f32::MAX }).collect();
    assert_eq!(dl(&g, &xd), want);
}

#[test]
fn adam_matches_cpu_trainer_arithmetic() {
    let Some(g) = support::gpu("adam_matches_cpu_trainer_arithmetic") else { return };
    let n = 5000;
    let mut r = Rng(29);
    let (mut p, grad, mut m, mut v) =
        (r.vec(n, 1.0), r.vec(n, 1.0), r.vec(n, 0.1), r.vec(n, 0.1).iter().map(|x| x.abs()).collect::<Vec<_>>());
    let (pd, gd, md, vd) =
        (g.upload(&p).unwrap(), g.upload(&grad).unwrap(), g.upload(&m).unwrap(), g.upload(&v).unwrap());
    let (lr, b1, b2, eps, clip, t) = (1e-3f32, 0.9f32, 0.999f32, 1e-8f32, 0.7f32, 3);
    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    g.launch(
        "adam_step",
        grid_1d(n),
        &[
            g.ptr(&pd),
            g.ptr(&gd),
            g.ptr(&md),
            g.ptr(&vd),
            Arg::U64(n as u64),
            lr.into(),
            b1.into(),
            b2.into(),
            bc1.into(),
            bc2.into(),
            eps.into(),
            clip.into(),
        ],
    )
    .unwrap();
    for i in 0..n {
        let gi = grad[i] * clip;
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        p[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
    }
    assert_close("adam m", &dl(&g, &md), &m, 1e-6);
    assert_close("adam v", &dl(&g, &vd), &v, 1e-6);
    assert_close("adam p", &dl(&g, &pd), &p, 1e-6);
}

#[test]
fn row_norm_kernels_match_cpu() {
    let Some(g) = support::gpu("row_norm_kernels_match_cpu") else { return };
    let (rows, d) = (50, 513);
    let mut r = Rng(31);
    let mut w = r.vec(rows * d, 1.0);
    w[3 * d..4 * d].iter_mut().for_each(|v| *v = 0.0); // zero rows stay zero
    let grad = r.vec(rows * d, 1.0);
    let wd = g.upload(&w).unwrap();
    g.launch("normalize_rows", per_row(rows, 128), &[g.ptr(&wd), rows.into(), d.into()]).unwrap();
    let want: Vec<f32> = w
        .chunks(d)
        .flat_map(|row| {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter().map(move |v| if n > 0.0 { v / n } else { 0.0 })
        })
        .collect();
    let unit = dl(&g, &wd);
    assert_close("normalize_rows", &unit, &want, 1e-6);
    let gd = g.upload(&grad).unwrap();
    g.launch("project_tangent_rows", per_row(rows, 128), &[g.ptr(&gd), g.ptr(&wd), rows.into(), d.into()]).unwrap();
    let want: Vec<f32> = (0..rows)
        .flat_map(|i| {
            let (gr, wr) = (&grad[i * d..(i + 1) * d], &unit[i * d..(i + 1) * d]);
            let p: f32 = gr.iter().zip(wr).map(|(a, b)| a * b).sum();
            gr.iter().zip(wr).map(move |(a, b)| a - p * b).collect::<Vec<_>>()
        })
        .collect();
    assert_close("project_tangent_rows", &dl(&g, &gd), &want, 1e-5);
}

#[test]
fn loss_kernels_match_cpu() {
    let Some(g) = support::gpu("loss_kernels_match_cpu") else { return };
    let (rows, d) = (40, 300);
    let mut r = Rng(37);
    let (yhat, y, ybar, a) = (r.vec(rows * d, 1.0), r.vec(rows * d, 1.0), r.vec(d, 0.2), r.vec(rows * d, 1.0));
    let (yhd, yd, ybd, ad) =
        (g.upload(&yhat).unwrap(), g.upload(&y).unwrap(), g.upload(&ybar).unwrap(), g.upload(&a).unwrap());
    let (gout, hout) = (g.zeros::<f32>(rows * d).unwrap(), g.zeros::<f32>(rows * d).unwrap());
    let (se, var, ae) = (g.zeros::<f32>(rows).unwrap(), g.zeros::<f32>(rows).unwrap(), g.zeros::<f32>(rows).unwrap());
    let inv_n = 1.0 / rows as f32;
    g.launch(
        "residual_loss",
        per_row(rows, 128),
        &[
            g.ptr(&yhd),
            g.ptr(&yd),
            g.ptr(&ybd),
            rows.into(),
            d.into(),
            inv_n.into(),
            g.ptr(&gout),
            g.ptr(&se),
            g.ptr(&var),
        ],
    )
    .unwrap();
    g.launch(
        "auxk_residual",
        per_row(rows, 128),
        &[g.ptr(&ad), g.ptr(&yhd), g.ptr(&yd), rows.into(), d.into(), 0.3f32.into(), g.ptr(&hout), g.ptr(&ae)],
    )
    .unwrap();
    let e: Vec<f32> = yhat.iter().zip(&y).map(|(a, b)| a - b).collect();
    assert_close("residual grad", &dl(&g, &gout), &e.iter().map(|v| 2.0 * v * inv_n).collect::<Vec<_>>(), 1e-6);
    let row_sum =
        |f: &dyn Fn(usize) -> f32| -> Vec<f32> { (0..rows).map(|i| (0..d).map(|c| f(i * d + c)).sum()).collect() };
    assert_close("row se", &dl(&g, &se), &row_sum(&|i| e[i] * e[i]), 1e-5);
    assert_close("row var", &dl(&g, &var), &row_sum(&|i| (y[i] - ybar[i % d]).powi(2)), 1e-5);
    let v: Vec<f32> = a.iter().zip(&e).map(|(a, e)| a + e).collect();
    assert_close("auxk grad", &dl(&g, &hout), &v.iter().map(|x| 0.3 * x).collect::<Vec<_>>(), 1e-6);
    assert_close("row aux", &dl(&g, &ae), &row_sum(&|i| v[i] * v[i]), 1e-5);
}

// ---------------------------------------------------------------- SAE forward and encode

fn sae_weights(r: &mut Rng, d_in: usize, d_sae: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    (r.vec(d_in * d_sae, 0.1), r.vec(d_sae, 0.1), r.vec(d_sae * d_in, 0.1), r.vec(d_in, 0.1))
}

#[test]
fn topk_sae_forward_matches_cpu() {
    let Some(g) = support::gpu("topk_sae_forward_matches_cpu") else { return };
    let (n, d_in, d_sae, k) = (64, 96, 1024, 32);
    let mut r = Rng(11);
    let (w_enc, b_enc, w_dec, b_dec) = sae_weights(&mut r, d_in, d_sae);
    let x = r.vec(n * d_in, 1.0);
    let sae = GpuTopKSae::upload(&g, &w_enc, &b_enc, &w_dec, &b_dec, d_in, d_sae, k).unwrap();
    let (_idx, _val, recon) = sae.forward(&g, &x, n).unwrap();
    let mut want = vec![0f32; n * d_in];
    for row in 0..n {
        let pre: Vec<f32> = (0..d_sae)
            .map(|j| (0..d_in).map(|i| (x[row * d_in + i] - b_dec[i]) * w_enc[i * d_sae + j]).sum::<f32>() + b_enc[j])
            .collect();
        let mut order: Vec<usize> = (0..d_sae).collect();
        order.sort_by(|&a, &b| pre[b].total_cmp(&pre[a]));
        for i in 0..d_in {
            want[row * d_in + i] =
                b_dec[i] + order[..k].iter().map(|&j| pre[j].max(0.0) * w_dec[j * d_in + i]).sum::<f32>();
        }
    }
    assert_close("SAE forward", &recon, &want, 1e-4);
}

#[test]
fn forward_on_device_equals_the_host_forward() {
    let Some(g) = support::gpu("forward_on_device_equals_the_host_forward") else { return };
    let (d_in, d_sae, k, n) = (96, 3000, 24, 33);
    let mut r = Rng(61);
    let (we, be, wd, bd) = sae_weights(&mut r, d_in, d_sae);
    let sae = GpuTopKSae::upload(&g, &we, &be, &wd, &bd, d_in, d_sae, k).unwrap();
    let x = r.vec(n * d_in, 1.0);
    let (want_idx, want_val, want_out) = sae.forward(&g, &x, n).unwrap();
    let xd = g.upload(&x).unwrap();
    let (mut centered, mut pre) = (g.zeros::<f32>(n * d_in).unwrap(), g.zeros::<f32>(n * d_sae).unwrap());
    let (mut idx, mut val, mut out) =
        (g.zeros::<i32>(n * k).unwrap(), g.zeros::<f32>(n * k).unwrap(), g.zeros::<f32>(n * d_in).unwrap());
    sae.forward_on_device(&g, &xd, n, &mut centered, &mut pre, &mut idx, &mut val, &mut out).unwrap();
    assert_eq!(dl(&g, &idx), want_idx);
    assert_eq!(dl(&g, &val), want_val);
    assert_eq!(dl(&g, &out), want_out);
    let mut small = g.zeros::<f32>(n).unwrap();
    assert!(
        sae.forward_on_device(&g, &xd, n, &mut centered, &mut pre, &mut idx, &mut val, &mut small).is_err(),
        "a short output buffer is refused"
    );
}

#[test]
fn encode_topk_matches_cpu_coder() {
    let Some(g) = support::gpu("encode_topk_matches_cpu_coder") else { return };
    let (n, d, d_sae, k) = (300, 64, 2048, 24);
    let mut r = Rng(59);
    let init = r.vec(512 * d, 1.0);
    let cfg = TrainConfig { arch: TrainArch::TopK { k }, d_sae, seed: 3, ..TrainConfig::default() };
    let mut coder = Trainer::new(cfg, d, d, &init, None).unwrap().to_coder().unwrap();
    // Shift the encoder bias so a fair share of rows have fewer than k positive
    // pre-activations (those rows keep fewer entries).
    coder.b_enc.iter_mut().for_each(|b| *b -= 1.6);
    let x = r.vec(n * d, 1.0);
    let sae = GpuTopKSae::from_tensors(&g, &coder.as_topk_sae().expect("a plain TopK SAE")).unwrap();
    let got = sae.encode_topk(&g, &x, n).unwrap();
    let want = coder.encode(&x, n).unwrap();
    assert_eq!(got.row_ptr.len(), n + 1);
    assert!(want.row_ptr.windows(2).any(|w| w[1] - w[0] < k), "some rows keep fewer than k latents");
    let mut mismatched = 0;
    for row in 0..n {
        let (a, b) = (got.row_ptr[row]..got.row_ptr[row + 1], want.row_ptr[row]..want.row_ptr[row + 1]);
        if got.idx[a.clone()] != want.idx[b.clone()] {
            mismatched += 1; // a near-tie at the k-th value, resolved differently by f32 rounding
            continue;
        }
        assert_close(&format!("row {row} values"), &got.val[a], &want.val[b], 1e-4);
    }
    assert!(mismatched <= n / 100, "{mismatched} of {n} rows select different latents");

    // forward_csr: the same code plus the reconstruction of the CPU coder's forward.
    let (acts, out) = sae.forward_csr(&g, &x, n).unwrap();
    assert_eq!(
        (acts.row_ptr.clone(), acts.idx.clone(), acts.val.clone()),
        (got.row_ptr, got.idx, got.val),
        "forward_csr's code differs from encode_topk"
    );
    let (want_acts, want_out) = coder.forward(&x, n).unwrap();
    let same_rows: Vec<usize> = (0..n)
        .filter(|&r| {
            acts.idx[acts.row_ptr[r]..acts.row_ptr[r + 1]]
                == want_acts.idx[want_acts.row_ptr[r]..want_acts.row_ptr[r + 1]]
        })
        .collect();
    let pick = |o: &[f32]| same_rows.iter().flat_map(|&r| o[r * d..(r + 1) * d].to_vec()).collect::<Vec<f32>>();
    assert_close("forward_csr reconstruction", &pick(&out), &pick(&want_out), 1e-4);
}

#[test]
fn kernel_tests_cover_every_kernel() {
    // Runs without a GPU: a new kernel must come with a test in this file
    // or in gpu_lm_kernels.rs.
    let me = [include_str!("gpu_kernels.rs"), include_str!("gpu_lm_kernels.rs")].concat();
    let mut missing = Vec::new();
    for (file, src) in nvrtc::KERNEL_FILES {
        for name in src
            .lines()
            .filter_map(|l| l.strip_prefix("extern \"C\" __global__ void "))
            .map(|l| l.split('(').next().unwrap())
        {
            if !me.contains(&format!("\"{name}\"")) && !covered_by_wrapper(name) {
                missing.push(format!("{file}:{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "kernels without a GPU test: {missing:?}");
}

/// Kernels exercised through a `Gpu` method rather than by name.
fn covered_by_wrapper(name: &str) -> bool {
    matches!(name, "topk_rows")
}
