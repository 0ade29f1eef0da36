//! Sparse feature activations: CSR by token (the layout an SAE encoder emits) and
//! its transpose, CSC by feature, plus per-feature statistics.

use crate::{Error, Result};
use std::io::{Read, Write};

/// Feature activations of one SAE over `n_tokens` tokens, CSR by token.
///
/// Row `t` holds the active features of token `t`: `indices[row_ptr[t]..row_ptr[t+1]]`
/// with values `values[..]`. A feature appears at most once per token.
#[derive(Debug, Clone)]
pub struct CsrActivations {
    /// Tokens (rows).
    pub n_tokens: usize,
    /// Features of the SAE (`d_sae`).
    pub n_features: usize,
    /// `n_tokens + 1` offsets into `indices`/`values`, starting at 0, non-decreasing.
    pub row_ptr: Vec<usize>,
    /// Feature of each non-zero.
    pub indices: Vec<u32>,
    /// Activation of each non-zero (finite).
    pub values: Vec<f32>,
}

/// The same activations, CSC by feature: column `f` lists the tokens where `f` fires,
/// in increasing token order.
#[derive(Debug, Clone)]
pub struct CscActivations {
    /// Tokens.
    pub n_tokens: usize,
    /// Features (columns).
    pub n_features: usize,
    /// `n_features + 1` offsets into `tokens`/`values`.
    pub col_ptr: Vec<usize>,
    /// Token of each non-zero.
    pub tokens: Vec<u32>,
    /// Activation of each non-zero.
    pub values: Vec<f32>,
}

/// Per-feature statistics over the token sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FeatureStats {
    /// Number of tokens where the feature is non-zero.
    pub count: u64,
    /// `count / n_tokens`.
    pub density: f64,
    /// Sum of the activations over tokens.
    pub sum: f64,
    /// Sum of the squared activations over tokens.
    pub sum_sq: f64,
    /// L2 norm of the activation vector over tokens.
    pub l2: f64,
    /// Mean activation over all tokens (zeros included).
    pub mean: f64,
}

impl FeatureStats {
    /// Never fires on the sample.
    pub fn is_dead(&self) -> bool {
        self.count == 0
    }
}

impl CsrActivations {
    /// Builds and validates CSR activations; `name` is used in error messages.
    pub fn new(
        name: &str,
        n_tokens: usize,
        n_features: usize,
        row_ptr: Vec<usize>,
        indices: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Self> {
        let err = |msg: String| Error::InvalidActivations { name: name.to_string(), msg };
        if n_features > u32::MAX as usize || n_tokens > u32::MAX as usize {
            return Err(err(format!("{n_tokens} tokens x {n_features} features exceeds u32 indexing")));
        }
        if row_ptr.len() != n_tokens + 1 {
            return Err(err(format!(
                "row_ptr has {} entries, expected n_tokens + 1 = {}",
                row_ptr.len(),
                n_tokens + 1
            )));
        }
        if row_ptr[0] != 0 {
            return Err(err(format!("row_ptr[0] = {}, expected 0", row_ptr[0])));
        }
        if indices.len() != values.len() {
            return Err(err(format!("{} indices but {} values", indices.len(), values.len())));
        }
        if row_ptr[n_tokens] != indices.len() {
            return Err(err(format!(
                "row_ptr[n_tokens] = {} but there are {} entries",
                row_ptr[n_tokens],
                indices.len()
            )));
        }
        // Each token's features must be in range and unique.
        let mut last_seen = vec![u32::MAX; n_features];
        for t in 0..n_tokens {
            let (s, e) = (row_ptr[t], row_ptr[t + 1]);
            if e < s {
                return Err(err(format!("row_ptr decreases at token {t}")));
            }
            for k in s..e {
                let f = indices[k] as usize;
                if f >= n_features {
                    return Err(err(format!("token {t}: feature index {f} >= n_features {n_features}")));
                }
                if last_seen[f] == t as u32 {
                    return Err(err(format!("token {t}: feature {f} listed twice")));
                }
                last_seen[f] = t as u32;
                if !values[k].is_finite() {
                    return Err(err(format!("token {t}, feature {f}: non-finite value {}", values[k])));
                }
            }
        }
        Ok(Self { n_tokens, n_features, row_ptr, indices, values })
    }

    /// Builds CSR activations from a dense row-major tokens x features array, keeping non-zeros.
    pub fn from_dense(name: &str, n_tokens: usize, n_features: usize, dense: &[f32]) -> Result<Self> {
        if dense.len() != n_tokens * n_features {
            return Err(Error::InvalidActivations {
                name: name.to_string(),
                msg: format!("dense array has {} values, expected {n_tokens} x {n_features}", dense.len()),
            });
        }
        let mut row_ptr = Vec::with_capacity(n_tokens + 1);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        row_ptr.push(0);
        for t in 0..n_tokens {
            for (f, &x) in dense[t * n_features..(t + 1) * n_features].iter().enumerate() {
                if x != 0.0 {
                    indices.push(f as u32);
                    values.push(x);
                }
            }
            row_ptr.push(indices.len());
        }
        Self::new(name, n_tokens, n_features, row_ptr, indices, values)
    }

    /// Number of non-zero activations.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The (features, activations) of token `t`.
    #[inline]
    pub fn row(&self, t: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.row_ptr[t], self.row_ptr[t + 1]);
        (&self.indices[s..e], &self.values[s..e])
    }

    /// Transpose to CSC by feature with a counting sort (O(nnz + n_features)); tokens end
    /// up sorted within each column because rows are visited in order.
    pub fn to_csc(&self) -> CscActivations {
        let mut col_ptr = vec![0usize; self.n_features + 1];
        for &f in &self.indices {
            col_ptr[f as usize + 1] += 1;
        }
        for f in 0..self.n_features {
            col_ptr[f + 1] += col_ptr[f];
        }
        let mut next = col_ptr[..self.n_features].to_vec();
        let mut tokens = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for t in 0..self.n_tokens {
            let (idx, val) = self.row(t);
            for (&f, &x) in idx.iter().zip(val) {
                let p = &mut next[f as usize];
                tokens[*p] = t as u32;
                values[*p] = x;
                *p += 1;
            }
        }
        CscActivations { n_tokens: self.n_tokens, n_features: self.n_features, col_ptr, tokens, values }
    }

    /// Per-feature statistics (sums in f64).
    pub fn feature_stats(&self) -> Vec<FeatureStats> {
        let mut st = vec![FeatureStats::default(); self.n_features];
        for (&f, &x) in self.indices.iter().zip(&self.values) {
            let s = &mut st[f as usize];
            // Explicitly stored zeros do not count as firing.
            if x != 0.0 {
                s.count += 1;
            }
            s.sum += x as f64;
            s.sum_sq += x as f64 * x as f64;
        }
        let n = self.n_tokens.max(1) as f64;
        for s in &mut st {
            s.density = s.count as f64 / n;
            s.l2 = s.sum_sq.sqrt();
            s.mean = s.sum / n;
        }
        st
    }

    /// Writes the versioned little-endian binary format read by [`CsrActivations::read_binary`]
    /// (also read by `scripts/bench/matching_scipy.py`):
    /// magic `SAEPCSR\0`, u32 version = 1, u64 n_tokens, u64 n_features, u64 nnz,
    /// `u64 row_ptr[n_tokens + 1], u32 indices[nnz], f32 values[nnz]`.
    pub fn write_binary(&self, path: &std::path::Path) -> Result<()> {
        let io = |e: std::io::Error| Error::Io { path: path.display().to_string(), msg: e.to_string() };
        let f = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::new(f);
        w.write_all(CSR_MAGIC).map_err(io)?;
        w.write_all(&CSR_VERSION.to_le_bytes()).map_err(io)?;
        for x in [self.n_tokens as u64, self.n_features as u64, self.nnz() as u64] {
            w.write_all(&x.to_le_bytes()).map_err(io)?;
        }
        let mut buf = Vec::with_capacity(8 * (self.n_tokens + 1));
        for &p in &self.row_ptr {
            buf.extend_from_slice(&(p as u64).to_le_bytes());
        }
        w.write_all(&buf).map_err(io)?;
        buf.clear();
        for &i in &self.indices {
            buf.extend_from_slice(&i.to_le_bytes());
        }
        w.write_all(&buf).map_err(io)?;
        buf.clear();
        for &v in &self.values {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&buf).map_err(io)?;
        w.flush().map_err(io)
    }

    /// Reads a file written by [`write_binary`](Self::write_binary), rejecting
    /// other versions and validating the content as [`new`](Self::new) does.
    pub fn read_binary(path: &std::path::Path) -> Result<Self> {
        let pstr = path.display().to_string();
        let io = |e: std::io::Error| Error::Io { path: pstr.clone(), msg: e.to_string() };
        let mut bytes = Vec::new();
        std::fs::File::open(path).map_err(io)?.read_to_end(&mut bytes).map_err(io)?;
        let bad = |msg: String| Error::Io { path: pstr.clone(), msg };
        if bytes.len() < 36 || &bytes[..8] != CSR_MAGIC {
            return Err(bad("not a saepipe CSR activation file (bad magic)".into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != CSR_VERSION {
            return Err(bad(format!(
                "unsupported CSR activation file version {version} (this reader knows {CSR_VERSION})"
            )));
        }
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
        let (n_tokens, n_features, nnz) = (u64_at(12), u64_at(20), u64_at(28));
        let need = 36 + 8 * (n_tokens + 1) + 8 * nnz;
        if bytes.len() != need {
            return Err(bad(format!("file has {} bytes, header implies {need}", bytes.len())));
        }
        let mut o = 36;
        let row_ptr: Vec<usize> = (0..=n_tokens).map(|k| u64_at(o + 8 * k)).collect();
        o += 8 * (n_tokens + 1);
        let indices: Vec<u32> =
            bytes[o..o + 4 * nnz].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        o += 4 * nnz;
        let values: Vec<f32> =
            bytes[o..o + 4 * nnz].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        Self::new(&pstr, n_tokens, n_features, row_ptr, indices, values)
    }
}

const CSR_MAGIC: &[u8; 8] = b"SAEPCSR\0";
const CSR_VERSION: u32 = 1;

impl CscActivations {
    /// The (tokens, activations) where feature `f` fires, tokens increasing.
    #[inline]
    pub fn col(&self, f: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.col_ptr[f], self.col_ptr[f + 1]);
        (&self.tokens[s..e], &self.values[s..e])
    }
}
