//! The training seam: the device work of one sparse-coder training step
//! ([`TrainOps`]) and the tensors it moves.
//!
//! A step is written once, in `saepipe-sae`'s `Trainer`: it checks the
//! batch, works out the step's terms (dead latents, AuxK, the sparsity
//! coefficient, the learning rate), asks the backend for the gradients and
//! their norm ([`TrainOps::gradients`]), decides on clipping, has the backend
//! apply Adam ([`TrainOps::update`]) and keeps the firing statistics. The
//! CPU backend (every architecture) sits next to the trainer; the CUDA one
//! (TopK) in `saepipe-cuda`. Both see only what is here: shapes, tensors and
//! the step's numbers, never the trainer's configuration.

use crate::compute::Result;

/// Trainable tensors of a sparse coder. The encoder is kept as
/// `[d_sae, d_in]` (one contiguous row per latent) so sparse encoder
/// gradients touch whole rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Encoder `[d_sae, d_in]`, row-major (the transpose of SAELens `W_enc`).
    pub enc: Vec<f32>,
    /// `[d_sae]`; for JumpReLU `[2 · d_sae]`: the encoder bias followed by
    /// the per-latent threshold θ (so Adam, gradient clipping and
    /// checkpoints treat θ like any other parameter).
    pub b_enc: Vec<f32>,
    /// Decoder `[d_sae, d_out]`, row-major (SAELens `W_dec`).
    pub dec: Vec<f32>,
    /// Decoder bias `[d_out]`.
    pub b_dec: Vec<f32>,
    /// Skip connection `[d_out, d_in]`, when the coder has one.
    pub skip: Option<Vec<f32>>,
}

impl Params {
    /// Zeros of the same shapes.
    pub fn zeros_like(&self) -> Params {
        Params {
            enc: vec![0.0; self.enc.len()],
            b_enc: vec![0.0; self.b_enc.len()],
            dec: vec![0.0; self.dec.len()],
            b_dec: vec![0.0; self.b_dec.len()],
            skip: self.skip.as_ref().map(|s| vec![0.0; s.len()]),
        }
    }

    /// No tensors at all (a placeholder while buffers are lent out).
    pub fn empty() -> Params {
        Params { enc: vec![], b_enc: vec![], dec: vec![], b_dec: vec![], skip: None }
    }

    /// The tensors with their names, in a fixed order.
    pub fn tensors(&self) -> Vec<(&'static str, &Vec<f32>)> {
        let mut v = vec![("enc", &self.enc), ("b_enc", &self.b_enc), ("dec", &self.dec), ("b_dec", &self.b_dec)];
        if let Some(s) = &self.skip {
            v.push(("skip", s));
        }
        v
    }

    /// Whether every tensor has the length `setup` asks for.
    pub fn fits(&self, setup: &CoderSetup) -> bool {
        let (d_in, d_sae, d_out) = (setup.d_in, setup.d_sae, setup.d_out);
        let b_enc = if setup.kind == CoderKind::JumpRelu { 2 * d_sae } else { d_sae };
        self.enc.len() == d_sae * d_in
            && self.b_enc.len() == b_enc
            && self.dec.len() == d_sae * d_out
            && self.b_dec.len() == d_out
            && self.skip.as_ref().map(Vec::len) == setup.skip_connection.then_some(d_out * d_in)
    }
}

/// The parameters with their Adam moments: what a backend holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTensors {
    /// Trainable tensors.
    pub params: Params,
    /// Adam first moments, shaped like `params`.
    pub adam_m: Params,
    /// Adam second moments, shaped like `params`.
    pub adam_v: Params,
}

/// How a coder picks its active latents, as far as a backend must know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoderKind {
    /// ReLU with an L1 penalty.
    Relu,
    /// The `k` largest pre-activations of each row.
    TopK {
        /// Latents kept per row.
        k: usize,
    },
    /// The `k · n` largest pre-activations of a batch of `n` rows.
    BatchTopK {
        /// Mean latents kept per row.
        k: usize,
    },
    /// ReLU gated by a learnt per-latent threshold.
    JumpRelu,
}

/// The fixed shape of a training run: what a backend is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoderSetup {
    /// How latents are selected.
    pub kind: CoderKind,
    /// Input width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Output width (= `d_in` for SAEs).
    pub d_out: usize,
    /// Whether `b_dec` is subtracted from the (scaled) input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Whether the coder has a linear skip connection.
    pub skip_connection: bool,
}

impl CoderSetup {
    /// Whether the decoder rows are kept at unit norm (TopK and BatchTopK):
    /// their gradients are projected onto the tangent space and the rows
    /// renormalised after each update.
    pub fn unit_decoder(&self) -> bool {
        matches!(self.kind, CoderKind::TopK { .. } | CoderKind::BatchTopK { .. })
    }
}

/// The AuxK term of a step: the `k_aux` largest pre-activations among the
/// dead latents of each row fit the residual, weighted by `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuxK {
    /// Dead latents used per row (≥ 1).
    pub k_aux: usize,
    /// Coefficient of the term (already scaled by the dead fraction).
    pub scale: f32,
}

/// One batch and the terms of the step it is trained on.
#[derive(Clone, Copy, Debug)]
pub struct StepBatch<'a> {
    /// Inputs `[n, d_in]`, as read (unscaled).
    pub x: &'a [f32],
    /// Targets `[n, d_out]` for transcoders (unscaled); `None`: reconstruct `x`.
    pub y: Option<&'a [f32]>,
    /// Rows in the batch.
    pub n: usize,
    /// Factor applied to `x` before encoding.
    pub scale_in: f32,
    /// Factor applied to the targets.
    pub scale_out: f32,
    /// Per latent: counted as dead at this step.
    pub dead: &'a [bool],
    /// The AuxK term, for TopK and BatchTopK with dead latents.
    pub aux: Option<AuxK>,
    /// Coefficient of the sparsity term (L1 or L0) at this step.
    pub sparsity_coefficient: f32,
}

/// The parts of the loss of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossParts {
    /// Mean over rows of the summed squared reconstruction error.
    pub mse: f64,
    /// Sparsity term times its coefficient (0 for TopK/BatchTopK).
    pub l1: f64,
    /// AuxK term (or JumpReLU's pre-activation loss) times its coefficient.
    pub auxk: f64,
    /// Mean number of active latents per row.
    pub l0: f64,
    /// `1 − Σ‖ŷ − y‖² / Σ‖y − ȳ‖²` over the batch.
    pub explained_variance: f64,
}

impl LossParts {
    /// The loss that is minimised: `mse + l1 + auxk`.
    pub fn total(&self) -> f64 {
        self.mse + self.l1 + self.auxk
    }
}

/// What [`TrainOps::gradients`] reports to the host.
#[derive(Clone, Debug, PartialEq)]
pub struct StepSums {
    /// The loss of the batch.
    pub parts: LossParts,
    /// Global L2 norm of every gradient (after the tangent projection of
    /// unit-norm decoder rows).
    pub grad_norm: f64,
    /// Per latent: rows of the batch on which it was active.
    pub fire_count: Vec<u64>,
    /// Smallest active value of the batch (BatchTopK's threshold); +∞ when
    /// nothing fired.
    pub min_pos: f32,
}

/// One Adam update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f32,
    /// Factor on every gradient (global-norm clipping; 1 for none).
    pub clip: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the root of the second moment.
    pub eps: f32,
    /// 1-based step number of the bias corrections.
    pub t: u64,
}

impl AdamStep {
    /// The bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ`.
    pub fn bias_corrections(&self) -> (f32, f32) {
        let t = self.t.min(i32::MAX as u64) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// The device work of a training step, for one [`CoderSetup`].
pub trait TrainOps {
    /// Where the work runs, for logs ("cpu", "cuda:0").
    fn device(&self) -> String;

    /// Forward and backward over a batch: the loss, and the gradients kept
    /// for [`TrainOps::update`] (tangent-projected for unit-norm decoders).
    /// Changes no parameter.
    fn gradients(&mut self, batch: &StepBatch<'_>) -> Result<StepSums>;

    /// Adam with the gradients of the last [`TrainOps::gradients`], then the
    /// setup's constraints: unit-norm decoder rows, θ ≥ 0 for JumpReLU.
    fn update(&mut self, adam: &AdamStep) -> Result<()>;

    /// A host copy of the parameters and moments.
    fn tensors(&self) -> Result<TrainTensors>;

    /// The parameters and moments, moving them out where the backend can.
    fn into_tensors(self) -> Result<TrainTensors>
    where
        Self: Sized,
    {
        self.tensors()
    }
}

impl<T: TrainOps + ?Sized> TrainOps for Box<T> {
    fn device(&self) -> String {
        (**self).device()
    }
    fn gradients(&mut self, batch: &StepBatch<'_>) -> Result<StepSums> {
        (**self).gradients(batch)
    }
    fn update(&mut self, adam: &AdamStep) -> Result<()> {
        (**self).update(adam)
    }
    fn tensors(&self) -> Result<TrainTensors> {
        (**self).tensors()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_fit_their_setup() {
        let setup = CoderSetup {
            kind: CoderKind::JumpRelu,
            d_in: 3,
            d_sae: 4,
            d_out: 2,
            apply_b_dec_to_input: false,
            skip_connection: true,
        };
        let p = Params { enc: vec![0.0; 12], b_enc: vec![0.0; 8], dec: vec![0.0; 8], b_dec: vec![0.0; 2], skip: None };
        assert!(!p.fits(&setup), "the skip connection is missing");
        let p = Params { skip: Some(vec![0.0; 6]), ..p };
        assert!(p.fits(&setup));
        assert!(!p.fits(&CoderSetup { kind: CoderKind::TopK { k: 2 }, ..setup }), "θ only for JumpReLU");
        assert_eq!(p.zeros_like().tensors().len(), 5);
        let a = AdamStep { lr: 1e-3, clip: 1.0, beta1: 0.9, beta2: 0.999, eps: 1e-8, t: 1 };
        let (b1, b2) = a.bias_corrections();
        assert!((b1 - 0.1).abs() < 1e-6 && (b2 - 0.001).abs() < 1e-6);
    }
}
