//! Dense f32 kernels of the CPU forward: a GEMM split over rows across the rayon
//! pool (matrixmultiply's packed micro-kernels inside each block), and row-wise ops.

use rayon::prelude::*;

/// out[m, n] = a[m, k] · b[k, n] (+ bias[n]); all row-major.
pub fn matmul_bias(a: &[f32], b: &[f32], bias: Option<&[f32]>, out: &mut [f32], m: usize, k: usize, n: usize) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), k * n);
    debug_assert_eq!(out.len(), m * n);
    // Rows per task: large enough to amortize packing B, small enough to balance.
    let rows = (m / (rayon::current_num_threads() * 4)).clamp(16, 256).min(m.max(1));
    out.par_chunks_mut(rows * n).zip(a.par_chunks(rows * k)).for_each(|(o, a)| {
        let mm = a.len() / k.max(1);
        let beta = match bias {
            Some(bias) => {
                for row in o.chunks_mut(n) {
                    row.copy_from_slice(bias);
                }
                1.0
            }
            None => 0.0,
        };
        // SAFETY: pointers and strides describe the row-major slices above.
        unsafe {
            matrixmultiply::sgemm(mm, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), n as isize, 1, beta, o.as_mut_ptr(), n as isize, 1);
        }
    });
}

/// LayerNorm without affine: returns normalized rows and writes each row's
/// scale sqrt(var + eps) (TransformerLens's hook_scale).
pub fn layer_norm(x: &[f32], d: usize, eps: f32, normalized: &mut [f32], scale: &mut [f32]) {
    normalized.par_chunks_mut(d).zip(x.par_chunks(d)).zip(scale.par_iter_mut()).for_each(|((o, row), s)| {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let sc = (var + eps).sqrt();
        *s = sc;
        let inv = 1.0 / sc;
        for (o, v) in o.iter_mut().zip(row) {
            *o = (v - mean) * inv;
        }
    });
}

pub fn gelu_new(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
}

/// Exact GELU via a double-precision erf (a float approximation would not match
/// PyTorch's to 1e-6).
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x as f64 * std::f64::consts::FRAC_1_SQRT_2) as f32)
}

/// erf to double precision: Taylor series below 2, continued fraction for erfc above.
fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.0 {
        // Series: erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // Continued fraction for erfc, converges fast for x >= 2.
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / ((ax + f) * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 { -r } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn erf_known_values() {
        for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (2.5, 0.999_593_047_982_555), (-1.5, -0.966_105_146_475_310_7)] {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {} != {want}", erf(x));
        }
    }
    #[test]
    fn matmul_matches_naive() {
        let (m, k, n) = (37, 19, 23);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut out = vec![0f32; m * n];
        matmul_bias(&a, &b, Some(&bias), &mut out, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f32>() + bias[j];
                assert_eq!(out[i * n + j], want);
            }
        }
    }
}
