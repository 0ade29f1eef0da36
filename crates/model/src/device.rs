//! A model's weights on a device and the forward over them: the same forward
//! as [`crate::Model`]'s, over another backend's [`DeviceOps`] (the CUDA
//! backend's `saepipe_cuda::GpuOps`).

use crate::config::ModelConfig;
use crate::error::Result;
use crate::forward::{Forward, LnHook, RunOutput, RunRequest};
use crate::params::Params;
use crate::{Model, Runner};
use saepipe_core::compute::DeviceOps;

/// A copy of a [`Model`] on the device of `O`.
pub struct DeviceModel<O: DeviceOps> {
    ops: O,
    cfg: ModelConfig,
    ln_hook: LnHook,
    params: Params<O::F>,
}

impl<O: DeviceOps> DeviceModel<O> {
    /// Copies `model`'s (processed) weights to the device of `ops`.
    pub fn new(ops: O, model: &Model) -> Result<DeviceModel<O>> {
        let params = model.params.to_device(&model.cfg, &ops)?;
        Ok(DeviceModel { cfg: model.cfg.clone(), ln_hook: model.ln_hook, params, ops })
    }

    /// The device operations the forward runs on.
    pub fn ops(&self) -> &O {
        &self.ops
    }

    fn forward(&self) -> Forward<'_, O> {
        Forward { ops: &self.ops, cfg: &self.cfg, p: &self.params, ln_hook: self.ln_hook }
    }
}

impl<O: DeviceOps> Runner for DeviceModel<O> {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn device(&self) -> String {
        self.ops.device()
    }
    fn run(&self, tokens: &[u32], batch: usize, ctx: usize, req: &mut RunRequest) -> Result<RunOutput> {
        self.forward().run(tokens, batch, ctx, req)
    }
    fn run_from(
        &self,
        resid: Vec<f32>,
        layer: usize,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
    ) -> Result<RunOutput> {
        self.forward().run_from(resid, layer, tokens, batch, ctx, req)
    }
}
