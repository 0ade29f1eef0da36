//! saepipe's CUDA backend. Kernels are CUDA C sources in `kernels/`, compiled at
//! run time by NVRTC for the GPU at hand and cached on disk; the driver and NVRTC
//! are loaded dynamically, so saepipe builds and runs its CPU path on machines
//! without CUDA.
//!
//! The crate knows tensors, not models: [`GpuOps`] implements the forward's
//! device operations ([`saepipe_core::compute::DeviceOps`]) and
//! [`GpuTopKSae`] encodes with a TopK SAE given as tensors
//! ([`saepipe_core::compute::TopKSae`]), and [`GpuTrain`] is the TopK
//! backend of the training seam ([`saepipe_core::train::TrainOps`]).
#![warn(missing_docs)]

mod device;
mod error;
pub mod kernels;
pub mod lm;
pub mod nvrtc;
pub mod train;

pub use device::{Device, DeviceSpec, gpu_count};
pub use error::{CudaError, Result};
pub use kernels::{Gpu, GpuTopKSae, Precision};
pub use lm::GpuOps;
pub use train::GpuTrain;
