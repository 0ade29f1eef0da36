//! What the GPU test files share: opening the GPU (or saying loudly why a
//! test is skipped), a seeded generator and tolerance checks.
#![allow(dead_code)] // each test file uses its own part

use cudarc::driver::{CudaSlice, DeviceRepr};
use saepipe_cuda::Gpu;
use std::sync::Arc;

/// GPU 0 with the kernels loaded, or `None` after printing why `test` is
/// SKIPPED (never a silent pass); SAEPIPE_REQUIRE_GPU=1 makes a missing GPU
/// a failure (what a GPU CI job sets).
pub fn gpu(test: &str) -> Option<Arc<Gpu>> {
    match saepipe_cuda::gpu_count() {
        Ok(n) if n > 0 => Some(Arc::new(Gpu::new(0, None).expect("GPU present but kernels failed to load"))),
        other => {
            let why = other.map_or_else(|e| e, |_| "no CUDA device".to_string());
            if std::env::var_os("SAEPIPE_REQUIRE_GPU").is_some() {
                panic!("SAEPIPE_REQUIRE_GPU is set but {why}");
            }
            eprintln!("SKIPPED {test} (no GPU: {why})");
            None
        }
    }
}

/// xorshift64 values in [-1, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next() + 1.0) * 0.5 * n as f32) as usize % n
    }
}

/// Largest absolute difference relative to the largest finite |want|;
/// infinities that agree count as equal.
pub fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().filter(|x| x.is_finite()).fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    got.iter().zip(want).fold(0f32, |m, (x, y)| if x.is_infinite() && x == y { m } else { m.max((x - y).abs()) })
        / scale
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let e = max_rel(got, want);
    assert!(e <= tol, "{what}: max rel err {e} > {tol}");
}

/// A device buffer on the host.
pub fn dl<T: DeviceRepr + Default + Clone>(g: &Gpu, s: &CudaSlice<T>) -> Vec<T> {
    g.download(s).unwrap()
}
