//! The CPU backend of the training seam: every architecture, on the chunked
//! forward/backward of `driver` with the row kernels of `topk` and
//! `jumprelu`, and Adam from `optimizer`.

use rayon::prelude::*;
use saepipe_core::compute::Result as ComputeResult;
use saepipe_core::train::{AdamStep, CoderSetup, StepBatch, StepSums, TrainOps, TrainTensors};

use super::optimizer::grad_norm;
use super::{Params, TrainArch, TrainConfig};
use crate::linalg;

/// Training tensors on the host and the scratch of their gradients.
/// Built by [`Trainer::new`](super::Trainer::new) and
/// [`Trainer::restore`](super::Trainer::restore); steps go through the
/// [`TrainOps`] the trainer drives.
pub struct CpuTrain {
    pub(super) cfg: TrainConfig,
    pub(super) d_in: usize,
    pub(super) d_out: usize,
    pub(super) d_sae: usize,
    /// Exposed for inspection and tests; change only between steps.
    pub params: Params,
    pub(super) adam_m: Params,
    pub(super) adam_v: Params,
    pub(super) grads: Params,
    /// Forces the row-chunk size of forward/backward (tests).
    pub(super) chunk_rows_override: Option<usize>,
    /// Density (one active entry in this many) above which chunks go dense.
    pub(super) dense_above_one_in: usize,
}

impl CpuTrain {
    /// A backend holding `t`, for the configuration `cfg` (after the
    /// trainer's adjustments) and the widths `d_in` → `d_out`.
    pub(super) fn new(cfg: TrainConfig, d_in: usize, d_out: usize, t: TrainTensors) -> CpuTrain {
        CpuTrain {
            d_in,
            d_out,
            d_sae: cfg.d_sae,
            grads: t.params.zeros_like(),
            chunk_rows_override: None,
            dense_above_one_in: super::DENSE_ABOVE_ONE_IN,
            params: t.params,
            adam_m: t.adam_m,
            adam_v: t.adam_v,
            cfg,
        }
    }

    /// The batch as the forward sees it: inputs times `scale_in`, and for
    /// transcoders the targets times `scale_out` (`None`: the targets are
    /// the scaled inputs).
    pub(super) fn scaled(&self, b: &StepBatch<'_>) -> (Vec<f32>, Option<Vec<f32>>) {
        let scale = |v: &[f32], s: f32| -> Vec<f32> { v.iter().map(|a| a * s).collect() };
        let ys = if self.cfg.transcoder { b.y.map(|y| scale(y, b.scale_out)) } else { None };
        (scale(b.x, b.scale_in), ys)
    }

    fn unit_decoder(&self) -> bool {
        matches!(self.cfg.arch, TrainArch::TopK { .. } | TrainArch::BatchTopK { .. })
    }
}

impl TrainOps for CpuTrain {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn gradients(&mut self, b: &StepBatch<'_>) -> ComputeResult<StepSums> {
        let (xs, ys) = self.scaled(b);
        let mut grads = std::mem::replace(&mut self.grads, Params::empty());
        let fb = self.forward_backward(&xs, ys.as_deref().unwrap_or(&xs), b, &mut grads, None, false);
        if self.unit_decoder() {
            // Only the tangential part of a unit-norm row's gradient matters.
            let d_out = self.d_out;
            grads.dec.par_chunks_mut(d_out).zip(self.params.dec.par_chunks(d_out)).for_each(|(g, w)| {
                let p = linalg::dot(g, w);
                linalg::axpy(-p, w, g);
            });
        }
        let grad_norm = grad_norm(&grads);
        self.grads = grads;
        Ok(StepSums { parts: fb.parts, grad_norm, fire_count: fb.fire_count, min_pos: fb.min_pos })
    }

    fn update(&mut self, adam: &AdamStep) -> ComputeResult<()> {
        let grads = std::mem::replace(&mut self.grads, Params::empty());
        self.adam(&grads, adam);
        self.grads = grads;
        if matches!(self.cfg.arch, TrainArch::JumpRelu { .. }) {
            // SAELens projects θ onto θ ≥ 0 before every forward pass (below
            // zero the gate would pass negative pre-activations); doing it
            // after the update gives the same values and leaves Adam alone.
            let d_sae = self.d_sae;
            self.params.b_enc[d_sae..].iter_mut().for_each(|v| *v = v.max(0.0));
        }
        if self.unit_decoder() {
            let d_out = self.d_out;
            self.params.dec.par_chunks_mut(d_out).for_each(|w| {
                let nrm = w.iter().map(|v| v * v).sum::<f32>().sqrt();
                if nrm > 0.0 {
                    w.iter_mut().for_each(|v| *v /= nrm);
                }
            });
        }
        Ok(())
    }

    fn tensors(&self) -> ComputeResult<TrainTensors> {
        Ok(TrainTensors { params: self.params.clone(), adam_m: self.adam_m.clone(), adam_v: self.adam_v.clone() })
    }

    fn into_tensors(self) -> ComputeResult<TrainTensors> {
        Ok(TrainTensors { params: self.params, adam_m: self.adam_m, adam_v: self.adam_v })
    }
}

/// The seam's view of a configuration.
pub(super) fn setup(cfg: &TrainConfig, d_in: usize, d_out: usize) -> CoderSetup {
    use saepipe_core::train::CoderKind;
    CoderSetup {
        kind: match cfg.arch {
            TrainArch::Standard { .. } => CoderKind::Relu,
            TrainArch::TopK { k } => CoderKind::TopK { k },
            TrainArch::BatchTopK { k, .. } => CoderKind::BatchTopK { k },
            TrainArch::JumpRelu { .. } => CoderKind::JumpRelu,
        },
        d_in,
        d_sae: cfg.d_sae,
        d_out,
        apply_b_dec_to_input: cfg.apply_b_dec_to_input && !cfg.transcoder,
        skip_connection: cfg.skip_connection,
    }
}
