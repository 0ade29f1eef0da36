//! Dense GEMM plumbing over `matrixmultiply`, parallelised over row blocks.
//!
//! The row partition uses a fixed block size, independent of the number of
//! threads, so results are bit-identical on any machine with the same SIMD
//! kernel (each output element is accumulated in the same order).

use rayon::prelude::*;

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    /// The elements (the view may use a subset).
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride, in elements.
    pub rs: usize,
    /// Column stride, in elements.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `[rows, cols]`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        debug_assert!(data.len() >= rows * cols);
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }
    /// Transposed view of this matrix.
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// Rows of output per parallel task.
pub const ROW_BLOCK: usize = 64;

/// Rows per task for a GEMM of `n` rows against a wide `[k, width]` matrix
/// followed by per-row work: large enough that packing the wide matrix (once
/// per call) is amortised (64-row calls run at about 60% of the speed of
/// 256-row ones at width 32768), small enough that the `[rows, width]` output
/// scratch stays around 32 MiB. Depends only on the shapes, so results never
/// depend on the thread count.
pub fn rows_per_task(n: usize, width: usize) -> usize {
    let by_mem = (8 << 20) / width.max(1);
    let by_split = n.div_ceil(8);
    by_mem.min(by_split).max(ROW_BLOCK)
}

/// `c[m, n] = beta * c + a[m, k] · b[k, n]` (c row-major), single-threaded.
pub fn gemm_serial(a: MatRef, b: MatRef, c: &mut [f32], beta: f32) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm inner dimensions differ");
    assert!(c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return;
    }
    // SAFETY: the views are bounds-checked above (debug) and by construction:
    // every index i*rs + j*cs stays inside the slices for i < rows, j < cols.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Like [`gemm_serial`], parallel over blocks of [`ROW_BLOCK`] rows of `a`/`c`.
pub fn gemm(a: MatRef, b: MatRef, c: &mut [f32], beta: f32) {
    let (m, n) = (a.rows, b.cols);
    if m <= ROW_BLOCK {
        gemm_serial(a, b, c, beta);
        return;
    }
    c[..m * n].par_chunks_mut(ROW_BLOCK * n).enumerate().for_each(|(bi, cb)| {
        let r0 = bi * ROW_BLOCK;
        let rows = cb.len() / n;
        let ab = MatRef { data: &a.data[r0 * a.rs..], rows, ..a };
        gemm_serial(ab, b, cb, beta);
    });
}

/// Dot product of two equal-length slices, with a fixed summation order.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise.
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += alpha * x`
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive_with_transposes() {
        let (m, k, n) = (130, 17, 9);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1).collect();
        let mut c = vec![1.0f32; m * n];
        gemm(MatRef::row_major(&a, m, k), MatRef::row_major(&bt, n, k).t(), &mut c, 0.5);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.5f32;
                for l in 0..k {
                    s += a[i * k + l] * bt[j * k + l];
                }
                assert!((c[i * n + j] - s).abs() < 1e-4, "{i},{j}: {} vs {s}", c[i * n + j]);
            }
        }
    }
}
