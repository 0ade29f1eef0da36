//! Where a stage computes: the `device` parameter (auto, cpu, cuda, cuda:N),
//! the scheduler resource it holds, and the language model on that device.

use super::{Params, Resource};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result};
use saepipe_cuda::{Device, DeviceSpec, Gpu, Precision};
use saepipe_model::{Model, Runner};
use std::sync::Arc;

/// The device a stage's `device` parameter resolves to on this machine.
pub fn resolve(params: &Params) -> Result<Device> {
    Ok(DeviceSpec::parse(params.str("device")?)?.resolve()?)
}

/// GPU stages hold their device exclusively; everything else shares the CPU.
/// A spec that does not resolve counts as CPU here: the stage itself reports it.
pub fn resource(params: &Params) -> Resource {
    match resolve(params) {
        Ok(Device::Cuda(i)) => Resource::Gpu(i),
        _ => Resource::Cpu,
    }
}

/// Slurm defaults of stages with a `device`: one GPU when it names CUDA
/// (`auto` asks for none: it takes a GPU where the cluster's settings give one).
pub fn slurm_defaults(params: &Params) -> saepipe_slurm::SlurmSettings {
    let cuda = params.str("device").is_ok_and(|d| d == "cuda" || d.starts_with("cuda:"));
    saepipe_slurm::SlurmSettings { gpus: cuda.then(|| "1".to_string()), ..Default::default() }
}

/// The `precision` parameter of stages with a GPU path. In the key only when
/// given, so pipelines that never set it keep their keys.
pub fn precision_param() -> ParamSpec {
    ParamSpec::maybe(
        "precision",
        ParamType::Str,
        "dense GEMMs on the GPU: f32 (default) or tf32 (tensor cores, ~1e-3 relative error); ignored on the CPU",
    )
}

/// Starts CUDA device `ordinal` with the stage's GEMM precision.
pub fn start_gpu(ordinal: usize, params: &Params) -> Result<Arc<Gpu>> {
    let precision = match params.get("precision").and_then(|v| v.as_str()) {
        Some(s) => Precision::parse(s).context("parameter `precision`")?,
        None => Precision::F32,
    };
    let gpu = Gpu::new(ordinal, None).with_context(|| format!("starting CUDA device {ordinal}"))?;
    gpu.set_precision(precision);
    if gpu.precision() != precision {
        anyhow::bail!("parameter `precision`: {precision:?} needs cuBLAS, which could not be loaded on cuda:{ordinal}");
    }
    Ok(Arc::new(gpu))
}

/// The GPU a stage computes on, started with its `precision`; `None` on the CPU.
pub fn gpu_for(device: Device, params: &Params) -> Result<Option<Arc<Gpu>>> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda(i) => Ok(Some(start_gpu(i, params)?)),
    }
}

/// The model's forward: the CPU model itself, or a copy of its weights on the
/// GPU (the host copy is dropped).
pub fn runner_on(gpu: Option<Arc<Gpu>>, model: Model) -> Result<Box<dyn Runner>> {
    match gpu {
        None => Ok(Box::new(model)),
        Some(gpu) => {
            let ordinal = gpu.ctx.ordinal();
            Ok(Box::new(
                saepipe_model::DeviceModel::new(saepipe_cuda::GpuOps::new(gpu), &model)
                    .with_context(|| format!("copying the model's weights to cuda:{ordinal}"))?,
            ))
        }
    }
}
