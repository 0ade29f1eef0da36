//! Errors of the CUDA backend.

use saepipe_core::compute::ComputeError;

/// What can go wrong on the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// CUDA was asked for explicitly but cannot be used here.
    #[error("CUDA was requested (`{spec}`) but {reason}")]
    Unavailable {
        /// The device as written (`cuda:1`).
        spec: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A device spec that is not auto, cpu, cuda or cuda:N.
    #[error("invalid device `{0}`: expected auto, cpu, cuda or cuda:N")]
    BadDevice(String),
    /// libnvrtc could not be loaded.
    #[error(
        "the NVRTC library (libnvrtc) was not found; searched {searched}. Install the CUDA toolkit, or \
         `pip install nvidia-cuda-nvrtc-cu12` and set SAEPIPE_NVRTC_LIB to its lib/libnvrtc.so.12"
    )]
    NvrtcMissing {
        /// The paths tried, comma-separated.
        searched: String,
    },
    /// A kernel file did not compile.
    #[error("NVRTC failed to compile {file} for {arch}:\n{log}")]
    Compile {
        /// The kernel file.
        file: String,
        /// The virtual architecture (compute_90).
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// The driver, cuBLAS or a launch failed.
    #[error("CUDA driver error: {0}")]
    Driver(String),
    /// Buffers or shapes that do not fit an operation.
    #[error("{0}")]
    Shape(String),
    /// Something the CUDA backend does not implement.
    #[error("not supported on the CUDA backend: {0}")]
    Unsupported(String),
    /// The on-disk kernel cache could not be read or written.
    #[error("kernel cache {path}: {source}")]
    Io {
        /// The cache file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result of the CUDA backend.
pub type Result<T> = std::result::Result<T, CudaError>;

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}

/// What the forward pass sees of a CUDA failure.
impl From<CudaError> for ComputeError {
    fn from(e: CudaError) -> Self {
        match e {
            CudaError::Shape(m) => ComputeError::Shape(m),
            e @ CudaError::Unsupported(_) => ComputeError::Unsupported(e.to_string()),
            e => ComputeError::Device(e.to_string()),
        }
    }
}
