//! Host side of the kernels: compile for the device's architecture, load, launch.

use crate::error::{CudaError, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::path::Path;
use std::sync::Arc;

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    sae: Arc<CudaModule>,
    lm: Arc<CudaModule>,
}

/// NVRTC virtual architecture for a compute capability.
pub fn arch_for(cc: (i32, i32)) -> &'static str {
    match cc {
        (9, _) => "compute_90",
        (8, 9) => "compute_89",
        (8, 6) => "compute_86",
        (8, _) => "compute_80",
        (10, _) | (12, _) => "compute_90", // PTX for sm_90 JIT-compiles on newer GPUs
        _ => "compute_75",
    }
}

fn null() -> u64 {
    0
}

impl Gpu {
    pub fn new(ordinal: usize, kernel_cache: Option<&Path>) -> Result<Gpu> {
        let ctx = CudaContext::new(ordinal)?;
        let arch = arch_for(ctx.compute_capability()?);
        let load = |file: &str| -> Result<Arc<CudaModule>> { Ok(ctx.load_module(Ptx::from_src(crate::nvrtc::compile(file, arch, kernel_cache)?))?) };
        let sae = load("sae.cu")?;
        let lm = load("lm.cu")?;
        let stream = ctx.default_stream();
        Ok(Gpu { ctx, stream, sae, lm })
    }

    pub fn sae_fn(&self, name: &str) -> Result<CudaFunction> {
        Ok(self.sae.load_function(name)?)
    }

    pub fn lm_fn(&self, name: &str) -> Result<CudaFunction> {
        Ok(self.lm.load_function(name)?)
    }

    pub fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        Ok(self.stream.clone_htod(host)?)
    }

    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// C = act(A·op(B) + bias); see `gemm_bias_act` in kernels/sae.cu.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bias_act(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<f32>, m: usize, n: usize, k: usize, b_trans: bool, act: i32) -> Result<()> {
        let f = self.sae_fn("gemm_bias_act")?;
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let (m, n, k, bt) = (m as i32, n as i32, k as i32, b_trans as i32);
        let z = null();
        let mut l = self.stream.launch_builder(&f);
        l.arg(a).arg(b);
        match bias {
            Some(bias) => l.arg(bias),
            None => l.arg(&z),
        };
        l.arg(&z).arg(c).arg(&m).arg(&n).arg(&k).arg(&bt).arg(&act);
        // SAFETY: argument types and buffer sizes match the kernel's signature (checked by callers' shapes).
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    /// Per-row top-k of `x` [rows, m] → (indices, values), each [rows, k].
    pub fn topk_rows(&self, x: &CudaSlice<f32>, rows: usize, m: usize, k: usize, relu: bool) -> Result<(CudaSlice<i32>, CudaSlice<f32>)> {
        if k == 0 || k > m {
            return Err(CudaError::Shape(format!("top-k needs 0 < k <= row length (k {k}, row length {m})")));
        }
        let mut idx = self.stream.alloc_zeros::<i32>(rows * k)?;
        let mut val = self.stream.alloc_zeros::<f32>(rows * k)?;
        let f = self.sae_fn("topk_rows")?;
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        let (r, mm, kk, relu) = (rows as i32, m as i32, k as i32, relu as i32);
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(&r).arg(&mm).arg(&kk).arg(&mut idx).arg(&mut val).arg(&relu);
        // SAFETY: idx/val hold rows*k elements; x holds rows*m.
        unsafe { l.launch(cfg) }?;
        Ok((idx, val))
    }

    /// out [rows, d] = bias + Σ_j val[r,j]·W[idx[r,j], :].
    #[allow(clippy::too_many_arguments)]
    pub fn sparse_decode(&self, idx: &CudaSlice<i32>, val: &CudaSlice<f32>, rows: usize, k: usize, w: &CudaSlice<f32>, d: usize, bias: Option<&CudaSlice<f32>>, out: &mut CudaSlice<f32>) -> Result<()> {
        let f = self.sae_fn("sparse_decode")?;
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let (r, kk, dd, acc) = (rows as i32, k as i32, d as i32, 0i32);
        let z = null();
        let mut l = self.stream.launch_builder(&f);
        l.arg(idx).arg(val).arg(&z).arg(&r).arg(&kk).arg(w).arg(&dd);
        match bias {
            Some(b) => l.arg(b),
            None => l.arg(&z),
        };
        l.arg(out).arg(&acc);
        // SAFETY: shapes as documented; counts pointer null means k entries per row.
        unsafe { l.launch(cfg) }?;
        Ok(())
    }
}

/// A TopK SAE resident on the GPU. The encoder is stored transposed
/// (W_encT [d_sae, d_in]) so encoder gathers and gradients are row operations.
pub struct GpuTopKSae {
    pub d_in: usize,
    pub d_sae: usize,
    pub k: usize,
    w_enc_t: CudaSlice<f32>,
    b_enc: CudaSlice<f32>,
    w_dec: CudaSlice<f32>,
    b_dec: CudaSlice<f32>,
}

impl GpuTopKSae {
    /// `w_enc` in SAELens layout [d_in, d_sae]; `w_dec` [d_sae, d_in].
    pub fn upload(gpu: &Gpu, w_enc: &[f32], b_enc: &[f32], w_dec: &[f32], b_dec: &[f32], d_in: usize, d_sae: usize, k: usize) -> Result<GpuTopKSae> {
        if w_enc.len() != d_in * d_sae || w_dec.len() != d_in * d_sae || b_enc.len() != d_sae || b_dec.len() != d_in {
            return Err(CudaError::Shape(format!("SAE tensors do not match d_in {d_in}, d_sae {d_sae}")));
        }
        let mut t = vec![0f32; w_enc.len()];
        for i in 0..d_in {
            for j in 0..d_sae {
                t[j * d_in + i] = w_enc[i * d_sae + j];
            }
        }
        Ok(GpuTopKSae { d_in, d_sae, k, w_enc_t: gpu.upload(&t)?, b_enc: gpu.upload(b_enc)?, w_dec: gpu.upload(w_dec)?, b_dec: gpu.upload(b_dec)? })
    }

    /// Encode (x − b_dec)·W_enc + b_enc, keep the top k (then ReLU), decode.
    /// Returns (indices [n,k], values [n,k], reconstruction [n,d_in]) on the host.
    pub fn forward(&self, gpu: &Gpu, x: &[f32], n: usize) -> Result<(Vec<i32>, Vec<f32>, Vec<f32>)> {
        if x.len() != n * self.d_in {
            return Err(CudaError::Shape(format!("input has {} values, expected {n} x {}", x.len(), self.d_in)));
        }
        let xd = gpu.upload(x)?;
        let mut centered = gpu.stream.alloc_zeros::<f32>(n * self.d_in)?;
        let f = gpu.sae_fn("sub_bias_rows")?;
        let (r, d) = (n as i32, self.d_in as i32);
        let mut l = gpu.stream.launch_builder(&f);
        l.arg(&xd).arg(&self.b_dec).arg(&mut centered).arg(&r).arg(&d);
        // SAFETY: all buffers hold n*d_in (bias d_in) elements.
        unsafe { l.launch(LaunchConfig::for_num_elems((n * self.d_in) as u32)) }?;
        let mut pre = gpu.stream.alloc_zeros::<f32>(n * self.d_sae)?;
        gpu.gemm_bias_act(&centered, &self.w_enc_t, Some(&self.b_enc), &mut pre, n, self.d_sae, self.d_in, true, 0)?;
        let (idx, val) = gpu.topk_rows(&pre, n, self.d_sae, self.k, true)?;
        let mut out = gpu.stream.alloc_zeros::<f32>(n * self.d_in)?;
        gpu.sparse_decode(&idx, &val, n, self.k, &self.w_dec, self.d_in, Some(&self.b_dec), &mut out)?;
        Ok((gpu.download(&idx)?, gpu.download(&val)?, gpu.download(&out)?))
    }
}
