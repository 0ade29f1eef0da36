//! Host side of the kernels: compile for the device's architecture, load, launch.
//!
//! All work goes to one stream, so kernels are launched with raw device
//! pointers ([`Gpu::ptr`]) and offsets into buffers are plain pointer arithmetic.

use crate::error::{CudaError, Result};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use saepipe_core::compute::{Csr, TopKSae};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A CUDA device with saepipe's kernels loaded, one stream and (when
/// libcublas loads) a cuBLAS handle.
pub struct Gpu {
    /// The device's context.
    pub ctx: Arc<CudaContext>,
    /// The stream all work goes to.
    pub stream: Arc<CudaStream>,
    sae: Arc<CudaModule>,
    lm: Arc<CudaModule>,
    functions: Mutex<HashMap<(bool, &'static str), CudaFunction>>,
    blas: OnceLock<Option<CudaBlas>>,
    tf32: AtomicBool,
}

/// Arithmetic of the dense GEMMs (encoder pre-activations, LM projections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Full f32 (FMA units): results comparable with the CPU path.
    #[default]
    F32,
    /// f32 in and out, products on TF32 tensor cores (10-bit mantissa inputs,
    /// f32 accumulation): several times the f32 rate; relative error ~1e-3.
    Tf32,
}

impl Precision {
    /// `f32` (or `float32`) or `tf32`.
    pub fn parse(s: &str) -> Result<Precision> {
        match s {
            "f32" | "float32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            other => Err(CudaError::Shape(format!("unknown GEMM precision `{other}` (f32 or tf32)"))),
        }
    }
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

/// A kernel argument: device pointers travel as u64.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device address.
    Ptr(u64),
    /// C `int`.
    I32(i32),
    /// C `unsigned int`.
    U32(u32),
    /// C `unsigned long long` (element counts that may exceed 2^31).
    U64(u64),
    /// C `float`.
    F32(f32),
}

impl From<i32> for Arg {
    fn from(v: i32) -> Arg {
        Arg::I32(v)
    }
}
impl From<usize> for Arg {
    /// Sizes are passed as C `int` (every dimension here is < 2^31).
    fn from(v: usize) -> Arg {
        Arg::I32(v as i32)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Arg {
        Arg::F32(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Arg {
        Arg::U32(v)
    }
}

/// Null device pointer (optional kernel inputs).
pub const NULL: Arg = Arg::Ptr(0);

/// A 1-D launch of `n` threads in blocks of 256.
pub fn grid_1d(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// One block of `threads` per row.
pub fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.max(1) as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

impl Gpu {
    /// Opens device `ordinal` and compiles (or loads from `kernel_cache`) the kernel files for it.
    pub fn new(ordinal: usize, kernel_cache: Option<&Path>) -> Result<Gpu> {
        let ctx = CudaContext::new(ordinal)?;
        // One stream does all the work, so cudarc's cross-stream event tracking is not needed.
        // SAFETY: no buffer is shared between streams.
        unsafe { ctx.disable_event_tracking() };
        let arch = arch_for(ctx.compute_capability()?);
        let load = |file: &str| -> Result<Arc<CudaModule>> {
            Ok(ctx.load_module(Ptx::from_src(crate::nvrtc::compile(file, arch, kernel_cache)?))?)
        };
        let sae = load("sae.cu")?;
        let lm = load("lm.cu")?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            sae,
            lm,
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
            tf32: AtomicBool::new(false),
        })
    }

    fn function(&self, lm: bool, name: &'static str) -> Result<CudaFunction> {
        let mut m = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = m.get(&(lm, name)) {
            return Ok(f.clone());
        }
        let f = if lm { self.lm.load_function(name)? } else { self.sae.load_function(name)? };
        m.insert((lm, name), f.clone());
        Ok(f)
    }

    /// A kernel of kernels/sae.cu.
    pub fn sae_fn(&self, name: &'static str) -> Result<CudaFunction> {
        self.function(false, name)
    }

    /// A kernel of kernels/lm.cu.
    pub fn lm_fn(&self, name: &'static str) -> Result<CudaFunction> {
        self.function(true, name)
    }

    fn launch_fn(&self, f: &CudaFunction, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let mut l = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(p) | Arg::U64(p) => l.arg(p),
                Arg::I32(v) => l.arg(v),
                Arg::U32(v) => l.arg(v),
                Arg::F32(v) => l.arg(v),
            };
        }
        // SAFETY: callers pass arguments matching the kernel's C signature, with
        // buffers large enough for the shapes given.
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    /// Launches a kernel of kernels/sae.cu.
    pub fn launch(&self, name: &'static str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let f = self.sae_fn(name)?;
        self.launch_fn(&f, cfg, args)
    }

    /// Launches a kernel of kernels/lm.cu.
    pub fn launch_lm(&self, name: &'static str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let f = self.lm_fn(name)?;
        self.launch_fn(&f, cfg, args)
    }

    /// Device address of element `offset` of `s`.
    pub fn ptr_at<T>(&self, s: &CudaSlice<T>, offset: usize) -> Arg {
        assert!(offset <= s.len(), "offset {offset} past a buffer of {}", s.len());
        let (p, _sync) = s.device_ptr(&self.stream);
        Arg::Ptr(p + (offset * std::mem::size_of::<T>()) as u64)
    }

    /// Device address of `s`.
    pub fn ptr<T>(&self, s: &CudaSlice<T>) -> Arg {
        self.ptr_at(s, 0)
    }

    /// A device copy of `host`.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// A host copy of `dev`.
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// A zeroed buffer of `n` values (at least one, as CUDA has no empty allocations).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros::<T>(n.max(1))?)
    }

    /// Waits for the stream's work to finish.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    /// cuBLAS, when libcublas can be loaded (it is found through the dynamic
    /// loader's search path, e.g. LD_LIBRARY_PATH); `None` means the dense
    /// products use saepipe's own GEMM kernel.
    pub fn blas(&self) -> Option<&CudaBlas> {
        self.blas
            .get_or_init(|| {
                if std::env::var_os("SAEPIPE_NO_CUBLAS").is_some() {
                    return None;
                }
                // SAFETY: probing only opens the library.
                if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                    return None;
                }
                CudaBlas::new(self.stream.clone()).ok()
            })
            .as_ref()
    }

    /// C = act(A·op(B) + bias); see `gemm_bias_act` in kernels/sae.cu.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bias_act(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
        b_trans: bool,
        act: i32,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let bias = bias.map_or(NULL, |b| self.ptr(b));
        self.launch(
            "gemm_bias_act",
            cfg,
            &[
                self.ptr(a),
                self.ptr(b),
                bias,
                NULL,
                self.ptr(c),
                m.into(),
                n.into(),
                k.into(),
                (b_trans as i32).into(),
                act.into(),
            ],
        )
    }

    /// Sets the arithmetic of [`Gpu::gemm_nt_bias`] for everything on this device.
    /// TF32 needs cuBLAS; without it the GEMMs stay on saepipe's f32 kernel.
    pub fn set_precision(&self, p: Precision) {
        self.tf32.store(p == Precision::Tf32, Ordering::Relaxed);
    }

    /// The arithmetic the dense GEMMs actually use.
    pub fn precision(&self) -> Precision {
        if self.tf32.load(Ordering::Relaxed) && self.blas().is_some() { Precision::Tf32 } else { Precision::F32 }
    }

    /// `C [m, n] = A [m, k] · B [n, k]ᵀ + bias [n]`: cuBLAS when available (SGEMM,
    /// or on TF32 tensor cores when [`Precision::Tf32`] is set), else the own f32 kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_nt_bias(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        if a.len() < m * k || b.len() < n * k || c.len() < m * n {
            return Err(CudaError::Shape(format!("gemm: buffers too small for {m}x{k} · ({n}x{k})ᵀ")));
        }
        let Some(blas) = self.blas() else {
            return self.gemm_bias_act(a, b, bias, c, m, n, k, true, 0);
        };
        // Row-major C = A·Bᵀ is column-major Cᵀ = B·Aᵀ (B and A seen as their transposes).
        if self.precision() == Precision::Tf32 {
            use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
            use std::ffi::c_void;
            let (alpha, beta) = (1.0f32, 0.0f32);
            let f32t = cudaDataType::CUDA_R_32F;
            let (pa, _ga) = a.device_ptr(&self.stream);
            let (pb, _gb) = b.device_ptr(&self.stream);
            let (pc, _gc) = c.device_ptr_mut(&self.stream);
            // SAFETY: sizes checked above; all three buffers live on this stream's device.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *blas.handle(),
                    cublasOperation_t::CUBLAS_OP_T,
                    cublasOperation_t::CUBLAS_OP_N,
                    n as i32,
                    m as i32,
                    k as i32,
                    (&alpha as *const f32).cast::<c_void>(),
                    pb as *const c_void,
                    f32t,
                    k as i32,
                    pa as *const c_void,
                    f32t,
                    k as i32,
                    (&beta as *const f32).cast::<c_void>(),
                    pc as *mut c_void,
                    f32t,
                    n as i32,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| CudaError::Driver(format!("cuBLAS TF32 GEMM: {e:?}")))?;
        } else {
            let cfg = GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_T,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: n as i32,
                n: m as i32,
                k: k as i32,
                alpha: 1.0f32,
                lda: k as i32,
                ldb: k as i32,
                beta: 0.0f32,
                ldc: n as i32,
            };
            // SAFETY: sizes checked above.
            unsafe { blas.gemm(cfg, b, a, c) }.map_err(|e| CudaError::Driver(format!("cuBLAS SGEMM: {e:?}")))?;
        }
        if let Some(bias) = bias {
            self.launch_lm("add_bias_rows", grid_1d(m * n), &[self.ptr(c), m.into(), n.into(), self.ptr(bias)])?;
        }
        Ok(())
    }

    /// Per-row top-k of `x` [rows, m] → (indices, values), each [rows, k].
    pub fn topk_rows(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        m: usize,
        k: usize,
        relu: bool,
    ) -> Result<(CudaSlice<i32>, CudaSlice<f32>)> {
        let mut idx = self.zeros::<i32>(rows * k)?;
        let mut val = self.zeros::<f32>(rows * k)?;
        self.topk_rows_into(x, rows, m, k, relu as i32, &mut idx, 0, &mut val, 0, k)?;
        Ok((idx, val))
    }

    /// Per-row top-k written at `idx[off + r*stride + j]` (same for `val`).
    /// `mode`: 0 raw values, 1 negative values clamped to 0, 2 non-positive values
    /// dropped (index -1).
    #[allow(clippy::too_many_arguments)]
    pub fn topk_rows_into(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        m: usize,
        k: usize,
        mode: i32,
        idx: &mut CudaSlice<i32>,
        idx_off: usize,
        val: &mut CudaSlice<f32>,
        val_off: usize,
        stride: usize,
    ) -> Result<()> {
        if k == 0 || k > m {
            return Err(CudaError::Shape(format!("top-k needs 0 < k <= row length (k {k}, row length {m})")));
        }
        if stride < k
            || idx.len() < idx_off + (rows - 1) * stride + k
            || val.len() < val_off + (rows - 1) * stride + k
            || x.len() < rows * m
        {
            return Err(CudaError::Shape("top-k: output buffers too small".into()));
        }
        self.launch(
            "topk_rows",
            per_row(rows, 1024),
            &[
                self.ptr(x),
                rows.into(),
                m.into(),
                k.into(),
                self.ptr_at(idx, idx_off),
                self.ptr_at(val, val_off),
                mode.into(),
                stride.into(),
            ],
        )
    }

    /// `out [rows, d] = bias + Σ_j val[r,j]·W[idx[r,j], :]`.
    #[allow(clippy::too_many_arguments)]
    pub fn sparse_decode(
        &self,
        idx: &CudaSlice<i32>,
        val: &CudaSlice<f32>,
        rows: usize,
        k: usize,
        w: &CudaSlice<f32>,
        d: usize,
        bias: Option<&CudaSlice<f32>>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let bias = bias.map_or(NULL, |b| self.ptr(b));
        self.launch(
            "sparse_decode",
            per_row(rows, 128),
            &[
                self.ptr(idx),
                self.ptr(val),
                NULL,
                rows.into(),
                k.into(),
                k.into(),
                self.ptr(w),
                d.into(),
                bias,
                self.ptr(out),
                0i32.into(),
            ],
        )
    }
}

/// A TopK SAE resident on the GPU. The encoder is stored transposed
/// (W_encT [d_sae, d_in]) so encoder gathers and gradients are row operations.
pub struct GpuTopKSae {
    /// Input (and output) width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Latents kept per row.
    pub k: usize,
    w_enc_t: CudaSlice<f32>,
    b_enc: CudaSlice<f32>,
    w_dec: CudaSlice<f32>,
    b_dec: CudaSlice<f32>,
    /// Subtracted from the input before encoding: b_dec, or zeros when the
    /// coder does not apply b_dec to its input.
    b_in: CudaSlice<f32>,
}

impl GpuTopKSae {
    /// `w_enc` in SAELens layout [d_in, d_sae]; `w_dec` [d_sae, d_in].
    #[allow(clippy::too_many_arguments)]
    pub fn upload(
        gpu: &Gpu,
        w_enc: &[f32],
        b_enc: &[f32],
        w_dec: &[f32],
        b_dec: &[f32],
        d_in: usize,
        d_sae: usize,
        k: usize,
    ) -> Result<GpuTopKSae> {
        if w_enc.len() != d_in * d_sae || w_dec.len() != d_in * d_sae || b_enc.len() != d_sae || b_dec.len() != d_in {
            return Err(CudaError::Shape(format!("SAE tensors do not match d_in {d_in}, d_sae {d_sae}")));
        }
        let mut t = vec![0f32; w_enc.len()];
        for i in 0..d_in {
            for j in 0..d_sae {
                t[j * d_in + i] = w_enc[i * d_sae + j];
            }
        }
        Ok(GpuTopKSae {
            d_in,
            d_sae,
            k,
            w_enc_t: gpu.upload(&t)?,
            b_enc: gpu.upload(b_enc)?,
            w_dec: gpu.upload(w_dec)?,
            b_dec: gpu.upload(b_dec)?,
            b_in: gpu.upload(b_dec)?,
        })
    }

    /// A TopK SAE given as tensors (the sparse-coder crate's coders convert to [`TopKSae`]).
    pub fn from_tensors(gpu: &Gpu, t: &TopKSae) -> Result<GpuTopKSae> {
        let mut sae = GpuTopKSae::upload(gpu, t.w_enc, t.b_enc, t.w_dec, t.b_dec, t.d_in, t.d_sae, t.k)?;
        if !t.b_dec_on_input {
            sae.b_in = gpu.zeros(t.d_in)?;
        }
        Ok(sae)
    }

    /// Pre-activations (x − b_dec)·W_enc + b_enc [n, d_sae] on the device.
    fn pre(&self, gpu: &Gpu, x: &[f32], n: usize) -> Result<CudaSlice<f32>> {
        if x.len() != n * self.d_in || n == 0 {
            return Err(CudaError::Shape(format!(
                "input has {} values, expected {n} x {} (n > 0)",
                x.len(),
                self.d_in
            )));
        }
        let xd = gpu.upload(x)?;
        let mut pre = gpu.zeros::<f32>(n * self.d_sae)?;
        let mut centered = gpu.zeros::<f32>(n * self.d_in)?;
        self.pre_into(gpu, &xd, n, &mut centered, &mut pre)?;
        Ok(pre)
    }

    /// Pre-activations of device-resident `x` [n, d_in] into `pre` [n, d_sae],
    /// with `centered` [n, d_in] as scratch.
    fn pre_into(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        n: usize,
        centered: &mut CudaSlice<f32>,
        pre: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if n == 0 || x.len() < n * self.d_in || centered.len() < n * self.d_in || pre.len() < n * self.d_sae {
            return Err(CudaError::Shape(format!(
                "encode buffers too small for {n} rows of d_in {}, d_sae {}",
                self.d_in, self.d_sae
            )));
        }
        gpu.launch(
            "sub_bias_rows",
            grid_1d(n * self.d_in),
            &[gpu.ptr(x), gpu.ptr(&self.b_in), gpu.ptr(centered), n.into(), self.d_in.into()],
        )?;
        gpu.gemm_nt_bias(centered, &self.w_enc_t, Some(&self.b_enc), pre, n, self.d_sae, self.d_in)
    }

    /// Encode + top-k + decode entirely on the device, into caller-owned
    /// buffers (no allocation or transfer; for batched inference loops and
    /// benchmarks). Scratch: `centered` [n, d_in], `pre` [n, d_sae]; outputs
    /// `idx`/`val` [n, k] and `out` [n, d_in].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_on_device(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        n: usize,
        centered: &mut CudaSlice<f32>,
        pre: &mut CudaSlice<f32>,
        idx: &mut CudaSlice<i32>,
        val: &mut CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.pre_into(gpu, x, n, centered, pre)?;
        gpu.topk_rows_into(pre, n, self.d_sae, self.k, 1, idx, 0, val, 0, self.k)?;
        if out.len() < n * self.d_in {
            return Err(CudaError::Shape(format!("decode output too small for {n} rows of {}", self.d_in)));
        }
        gpu.sparse_decode(idx, val, n, self.k, &self.w_dec, self.d_in, Some(&self.b_dec), out)
    }

    /// Encode (x − b_dec)·W_enc + b_enc, keep the top k (then ReLU), decode.
    /// Returns (indices `[n,k]`, values `[n,k]`, reconstruction `[n,d_in]`) on the host.
    pub fn forward(&self, gpu: &Gpu, x: &[f32], n: usize) -> Result<(Vec<i32>, Vec<f32>, Vec<f32>)> {
        let pre = self.pre(gpu, x, n)?;
        let (idx, val) = gpu.topk_rows(&pre, n, self.d_sae, self.k, true)?;
        let mut out = gpu.zeros::<f32>(n * self.d_in)?;
        gpu.sparse_decode(&idx, &val, n, self.k, &self.w_dec, self.d_in, Some(&self.b_dec), &mut out)?;
        Ok((gpu.download(&idx)?, gpu.download(&val)?, gpu.download(&out)?))
    }

    /// Batched TopK encode to CSR, as the CPU coder's sparse encode: per row the
    /// k largest pre-activations that are positive, in increasing latent order
    /// (feature matching and activation statistics consume this form).
    pub fn encode_topk(&self, gpu: &Gpu, x: &[f32], n: usize) -> Result<Csr> {
        let (idx, val) = self.encode_positive(gpu, x, n)?;
        self.csr(gpu, &idx, &val, n)
    }

    /// Encode and decode as the CPU coder's `forward`: the sparse code in CSR
    /// form (positive top-k values, increasing latent order) and the
    /// reconstruction [n, d_in] (evaluation consumes both).
    pub fn forward_csr(&self, gpu: &Gpu, x: &[f32], n: usize) -> Result<(Csr, Vec<f32>)> {
        let (idx, val) = self.encode_positive(gpu, x, n)?;
        let mut out = gpu.zeros::<f32>(n * self.d_in)?;
        // Dropped slots (index -1) are skipped by the decoder.
        gpu.sparse_decode(&idx, &val, n, self.k, &self.w_dec, self.d_in, Some(&self.b_dec), &mut out)?;
        Ok((self.csr(gpu, &idx, &val, n)?, gpu.download(&out)?))
    }

    /// Per row the k largest pre-activations, non-positive ones dropped (index −1).
    fn encode_positive(&self, gpu: &Gpu, x: &[f32], n: usize) -> Result<(CudaSlice<i32>, CudaSlice<f32>)> {
        let pre = self.pre(gpu, x, n)?;
        let mut idx = gpu.zeros::<i32>(n * self.k)?;
        let mut val = gpu.zeros::<f32>(n * self.k)?;
        gpu.topk_rows_into(&pre, n, self.d_sae, self.k, 2, &mut idx, 0, &mut val, 0, self.k)?;
        Ok((idx, val))
    }

    fn csr(&self, gpu: &Gpu, idx: &CudaSlice<i32>, val: &CudaSlice<f32>, n: usize) -> Result<Csr> {
        let (idx, val) = (gpu.download(idx)?, gpu.download(val)?);
        let mut csr = Csr { cols: self.d_sae, row_ptr: vec![0], ..Csr::default() };
        for r in 0..n {
            for j in r * self.k..(r + 1) * self.k {
                if idx[j] >= 0 {
                    csr.idx.push(idx[j] as u32);
                    csr.val.push(val[j]);
                }
            }
            csr.row_ptr.push(csr.idx.len());
        }
        Ok(csr)
    }
}
