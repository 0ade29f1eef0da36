//! GPU kernels against CPU references. These need an NVIDIA GPU: without one each
//! test prints SKIPPED (never a silent pass); set SAEPIPE_REQUIRE_GPU=1 to make a
//! missing GPU a failure (what a GPU CI job does).

use saepipe_cuda::kernels::{Gpu, GpuTopKSae};

fn gpu() -> Option<Gpu> {
    match saepipe_cuda::gpu_count() {
        Ok(n) if n > 0 => Some(Gpu::new(0, None).expect("GPU present but kernels failed to load")),
        other => {
            let why = match other {
                Ok(_) => "no CUDA device".to_string(),
                Err(e) => e,
            };
            if std::env::var_os("SAEPIPE_REQUIRE_GPU").is_some() {
                panic!("SAEPIPE_REQUIRE_GPU is set but {why}");
            }
            eprintln!("SKIPPED (no GPU: {why})");
            None
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn gemm_matches_cpu() {
    let Some(g) = gpu() else { return };
    let (m, n, k) = (130, 257, 70);
    let mut r = Rng(1);
    let a = r.vec(m * k, 1.0);
    let b = r.vec(n * k, 1.0); // [n, k], used transposed
    let bias = r.vec(n, 1.0);
    let mut want = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum::<f32>() + bias[j];
            want[i * n + j] = s.max(0.0);
        }
    }
    let (ad, bd, biasd) = (g.upload(&a).unwrap(), g.upload(&b).unwrap(), g.upload(&bias).unwrap());
    let mut c = g.stream.alloc_zeros::<f32>(m * n).unwrap();
    g.gemm_bias_act(&ad, &bd, Some(&biasd), &mut c, m, n, k, true, 1).unwrap();
    assert!(max_rel(&g.download(&c).unwrap(), &want) < 1e-5);
}

#[test]
fn topk_matches_cpu_for_large_rows() {
    let Some(g) = gpu() else { return };
    for (rows, m, k) in [(3, 8192, 16), (2, 131072, 512), (4, 1000, 1000)] {
        let mut r = Rng(7 + m as u64);
        let x = r.vec(rows * m, 3.0);
        let (idx, val) = g.topk_rows(&g.upload(&x).unwrap(), rows, m, k, false).unwrap();
        let (idx, val) = (g.download(&idx).unwrap(), g.download(&val).unwrap());
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
fn topk_sae_forward_matches_cpu() {
    let Some(g) = gpu() else { return };
    let (n, d_in, d_sae, k) = (64, 96, 1024, 32);
    let mut r = Rng(11);
    let w_enc = r.vec(d_in * d_sae, 0.1);
    let w_dec = r.vec(d_sae * d_in, 0.1);
    let b_enc = r.vec(d_sae, 0.1);
    let b_dec = r.vec(d_in, 0.1);
    let x = r.vec(n * d_in, 1.0);
    let sae = GpuTopKSae::upload(&g, &w_enc, &b_enc, &w_dec, &b_dec, d_in, d_sae, k).unwrap();
    let (_idx, _val, recon) = sae.forward(&g, &x, n).unwrap();
    let mut want = vec![0f32; n * d_in];
    for row in 0..n {
        let pre: Vec<f32> = (0..d_sae).map(|j| (0..d_in).map(|i| (x[row * d_in + i] - b_dec[i]) * w_enc[i * d_sae + j]).sum::<f32>() + b_enc[j]).collect();
        let mut order: Vec<usize> = (0..d_sae).collect();
        order.sort_by(|&a, &b| pre[b].total_cmp(&pre[a]));
        for i in 0..d_in {
            want[row * d_in + i] = b_dec[i] + order[..k].iter().map(|&j| pre[j].max(0.0) * w_dec[j * d_in + i]).sum::<f32>();
        }
    }
    assert!(max_rel(&recon, &want) < 1e-4, "max rel err {}", max_rel(&recon, &want));
}
