//! saepipe's CUDA backend. Kernels are CUDA C sources in `kernels/`, compiled at
//! run time by NVRTC for the GPU at hand and cached on disk; the driver and NVRTC
//! are loaded dynamically, so saepipe builds and runs its CPU path on machines
//! without CUDA.

mod device;
mod error;
pub mod kernels;
pub mod lm;
pub mod lm_reference;
pub mod nvrtc;
pub mod train;

pub use device::{Device, DeviceSpec, gpu_count};
pub use error::{CudaError, Result};
pub use kernels::{Gpu, GpuTopKSae, Precision};
pub use lm::{GpuModel, LmForward};
pub use train::GpuTopKTrainer;
