#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA was requested (`{spec}`) but {reason}")]
    Unavailable { spec: String, reason: String },
    #[error("invalid device `{0}`: expected auto, cpu, cuda or cuda:N")]
    BadDevice(String),
    #[error(
        "the NVRTC library (libnvrtc) was not found; searched {searched}. Install the CUDA toolkit, or \
         `pip install nvidia-cuda-nvrtc-cu12` and set SAEPIPE_NVRTC_LIB to its lib/libnvrtc.so.12"
    )]
    NvrtcMissing { searched: String },
    #[error("NVRTC failed to compile {file} for {arch}:\n{log}")]
    Compile { file: String, arch: String, log: String },
    #[error("CUDA driver error: {0}")]
    Driver(String),
    #[error("{0}")]
    Shape(String),
    #[error("not supported on the CUDA backend: {0}")]
    Unsupported(String),
    #[error("training diverged at step {step}: {what} is {value}")]
    NonFinite { step: u64, what: &'static str, value: f64 },
    #[error("kernel cache {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, CudaError>;

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}
