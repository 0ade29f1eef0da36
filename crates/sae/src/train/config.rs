//! Training hyper-parameters ([`TrainConfig`], [`TrainArch`]) and what a step
//! reports ([`StepStats`]; the loss terms of a batch are
//! [`LossParts`](saepipe_core::train::LossParts)).

use serde::{Deserialize, Serialize};

/// What is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainArch {
    /// ReLU encoder with an L1 penalty weighted by decoder row norms.
    Standard {
        /// λ of `λ · mean_t Σ_j f_tj ‖W_dec_j‖` after warm-up (≥ 0).
        l1_coefficient: f32,
        /// Steps over which λ ramps linearly up to `l1_coefficient`
        /// (`λ · (step + 1) / W`); 0: no warm-up.
        #[serde(default)]
        l1_warmup_steps: u64,
    },
    /// k largest pre-activations per row, unit-norm decoder rows, AuxK.
    TopK {
        /// Active latents per row (1 ≤ k ≤ d_sae).
        k: usize,
    },
    /// k·n largest activations over the whole batch; saved as JumpReLU with
    /// one global threshold (EMA of the smallest kept activation).
    BatchTopK {
        /// Mean active latents per row (1 ≤ k ≤ d_sae); a batch of n rows
        /// keeps its k·n largest activations.
        k: usize,
        /// EMA rate of the saved threshold, per step (default 0.01).
        #[serde(default = "default_threshold_lr")]
        threshold_lr: f64,
    },
    /// JumpReLU (SAELens 6 `JumpReLUTrainingSAE`): `f = pre · H(pre − θ_j)`
    /// with a trained per-latent threshold θ (kept ≥ 0), a free-norm decoder,
    /// an L0-type sparsity loss and straight-through pseudo-derivatives with a
    /// rectangle kernel of width `bandwidth`. Saved as SAELens `jumprelu`.
    /// Field names follow SAELens's `JumpReLUTrainingSAEConfig` (without its
    /// `jumprelu_` prefixes); [`TrainArch::jumprelu`] gives its defaults.
    JumpRelu {
        /// SAELens `l0_coefficient` (default 1).
        l0_coefficient: f32,
        /// SAELens `l0_warm_up_steps`: the coefficient ramps linearly from 0
        /// (`l0_coefficient · min(step, W) / W`, SAELens's scheduler).
        #[serde(default)]
        l0_warmup_steps: u64,
        /// SAELens `jumprelu_bandwidth` (default 0.05).
        #[serde(default = "default_jumprelu_bandwidth")]
        bandwidth: f32,
        /// SAELens `jumprelu_init_threshold` (default 0.01).
        #[serde(default = "default_jumprelu_init_threshold")]
        initial_threshold: f32,
        /// SAELens `jumprelu_sparsity_loss_mode` (default `step`).
        #[serde(default)]
        sparsity_loss_mode: JumpReluSparsityLoss,
        /// SAELens `jumprelu_tanh_scale` (`tanh` mode only; default 4).
        #[serde(default = "default_jumprelu_tanh_scale")]
        tanh_scale: f32,
        /// SAELens `target_l0` (`quadratic` mode only, where it is required).
        #[serde(default)]
        target_l0: Option<f32>,
        /// SAELens `pre_act_loss_coefficient` (default none: no
        /// pre-activation loss).
        #[serde(default)]
        pre_act_loss_coefficient: Option<f32>,
        /// SAELens `jumprelu_ste_to_input` (default false: the
        /// straight-through terms reach the threshold only).
        #[serde(default)]
        ste_to_input: bool,
    },
}

/// Sparsity loss of [`TrainArch::JumpRelu`] (SAELens
/// `jumprelu_sparsity_loss_mode`), per token, times the coefficient, averaged
/// over the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JumpReluSparsityLoss {
    /// `L0 = Σ_j H(pre_j − θ_j)` (DeepMind's JumpReLU; SAELens's default).
    #[default]
    Step,
    /// `Σ_j tanh(tanh_scale · f_j · ‖W_dec_j‖)` (Anthropic's).
    Tanh,
    /// `2 / target_l0 · (L0 − target_l0)²` (Gemma Scope 2).
    Quadratic,
}

fn default_threshold_lr() -> f64 {
    0.01
}

fn default_jumprelu_bandwidth() -> f32 {
    0.05
}

fn default_jumprelu_init_threshold() -> f32 {
    0.01
}

fn default_jumprelu_tanh_scale() -> f32 {
    4.0
}

impl TrainArch {
    /// JumpReLU with SAELens 6.54's defaults and the given `l0_coefficient`.
    pub fn jumprelu(l0_coefficient: f32) -> TrainArch {
        TrainArch::JumpRelu {
            l0_coefficient,
            l0_warmup_steps: 0,
            bandwidth: default_jumprelu_bandwidth(),
            initial_threshold: default_jumprelu_init_threshold(),
            sparsity_loss_mode: JumpReluSparsityLoss::Step,
            tanh_scale: default_jumprelu_tanh_scale(),
            target_l0: None,
            pre_act_loss_coefficient: None,
            ste_to_input: false,
        }
    }

    /// Coefficient of the sparsity term at `step`: L1 (standard) or L0
    /// (JumpReLU), each with its linear warm-up; 0 for TopK and BatchTopK.
    pub(super) fn sparsity_coefficient_at(&self, step: u64) -> f32 {
        match *self {
            TrainArch::Standard { l1_coefficient, l1_warmup_steps } => {
                if l1_warmup_steps > 0 && step < l1_warmup_steps {
                    l1_coefficient * (step + 1) as f32 / l1_warmup_steps as f32
                } else {
                    l1_coefficient
                }
            }
            // SAELens's CoefficientScheduler: 0 at step 0, c · t / W at step t.
            TrainArch::JumpRelu { l0_coefficient, l0_warmup_steps, .. } => {
                if l0_warmup_steps > 0 && step < l0_warmup_steps {
                    (l0_coefficient as f64 * step as f64 / l0_warmup_steps as f64) as f32
                } else {
                    l0_coefficient
                }
            }
            _ => 0.0,
        }
    }
}

/// Shape of the learning-rate decay of [`TrainConfig::lr_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    /// No decay: `lr` after warm-up.
    Constant,
    /// Half a cosine from `lr` down to `lr · lr_end_factor`.
    Cosine,
    /// A straight line from `lr` down to `lr · lr_end_factor`.
    Linear,
}

/// Initial decoder bias `b_dec` (in output space), from the `init_y` samples
/// given to [`Trainer::new`](super::Trainer::new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    /// All zeros.
    Zeros,
    /// The mean sample.
    Mean,
    /// The geometric median of the samples (Weiszfeld iterations from the
    /// mean; robust to outliers).
    GeometricMedian,
}

/// Training hyper-parameters. Serialisable; unknown-free defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Activation function and sparsity penalty.
    pub arch: TrainArch,
    /// Number of latents (dictionary size); must be positive.
    pub d_sae: usize,
    /// Output hook differs from the input hook (always true when d_out != d_in).
    pub transcoder: bool,
    /// Adds a dense skip connection `W_skip [d_out, d_in]` (transcoders).
    pub skip_connection: bool,
    /// Subtract b_dec from the input before encoding (SAEs only).
    pub apply_b_dec_to_input: bool,
    /// Peak Adam learning rate.
    pub lr: f32,
    /// Adam β₁ (first-moment decay).
    pub adam_beta1: f32,
    /// Adam β₂ (second-moment decay).
    pub adam_beta2: f32,
    /// Adam ε, added to the root of the bias-corrected second moment.
    pub adam_eps: f32,
    /// Steps of linear learning-rate warm-up from `lr / lr_warmup_steps`.
    pub lr_warmup_steps: u64,
    /// Decay schedule after warm-up.
    pub lr_decay: LrDecay,
    /// Decay over the last `lr_decay_steps` steps of `total_steps`; `None`:
    /// from the end of warm-up to `total_steps`.
    pub lr_decay_steps: Option<u64>,
    /// Planned length of training in steps (where decay schedules end).
    pub total_steps: u64,
    /// Final learning rate as a fraction of `lr` (decay schedules).
    pub lr_end_factor: f32,
    /// Global gradient-norm clip; `None` disables.
    pub max_grad_norm: Option<f32>,
    /// AuxK latents per row; default d_out / 2.
    pub aux_k: Option<usize>,
    /// AuxK coefficient (1/32 in the OpenAI paper, 1.0 in SAELens); 0 disables.
    pub aux_k_coefficient: f32,
    /// A latent is dead after this many training tokens without firing.
    pub dead_after_tokens: u64,
    /// Initial decoder row norm; default 0.1 for `standard`, 1 for TopK.
    pub decoder_init_norm: Option<f32>,
    /// How `b_dec` is initialised.
    pub b_dec_init: BDecInit,
    /// Scale inputs (and targets) by a constant so that E‖x‖ = √d; folded into
    /// the weights by [`Trainer::to_coder`](super::Trainer::to_coder) (SAELens
    /// `expected_average_only_in`).
    pub normalize_activations: bool,
    /// Seed of the weight initialisation (ChaCha8); nothing random happens
    /// after it.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: TrainArch::TopK { k: 32 },
            d_sae: 0,
            transcoder: false,
            skip_connection: false,
            apply_b_dec_to_input: true,
            lr: 2e-4,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            lr_warmup_steps: 0,
            lr_decay: LrDecay::Constant,
            lr_decay_steps: None,
            total_steps: 0,
            lr_end_factor: 0.0,
            max_grad_norm: Some(1.0),
            aux_k: None,
            aux_k_coefficient: 1.0 / 32.0,
            dead_after_tokens: 10_000_000,
            decoder_init_norm: None,
            b_dec_init: BDecInit::Mean,
            normalize_activations: false,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Learning rate at `step`: linear warm-up, then constant, linear or cosine
    /// decay to `lr * lr_end_factor` over the last `lr_decay_steps`.
    pub fn lr_at(&self, step: u64) -> f32 {
        let c = self;
        let warm = if c.lr_warmup_steps > 0 && step < c.lr_warmup_steps {
            (step + 1) as f32 / c.lr_warmup_steps as f32
        } else {
            1.0
        };
        let decay = match c.lr_decay {
            LrDecay::Constant => 1.0,
            d => {
                let len = c.lr_decay_steps.unwrap_or(c.total_steps.saturating_sub(c.lr_warmup_steps));
                let start = c.total_steps.saturating_sub(len);
                if len == 0 || step < start {
                    1.0
                } else {
                    let p = ((step - start) as f32 / len as f32).min(1.0);
                    let shape = match d {
                        LrDecay::Linear => 1.0 - p,
                        _ => 0.5 * (1.0 + (std::f32::consts::PI * p).cos()),
                    };
                    c.lr_end_factor + (1.0 - c.lr_end_factor) * shape
                }
            }
        };
        c.lr * warm * decay
    }
}

/// Statistics of one optimisation step (computed before the update).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    /// Index of the step (0 for the first).
    pub step: u64,
    /// Total loss: `mse` plus the terms present below.
    pub loss: f64,
    /// Mean over rows of the summed squared reconstruction error.
    pub mse: f64,
    /// Sparsity term, already multiplied by its coefficient: weighted L1
    /// (standard) or the L0-type loss (JumpReLU).
    pub l1: Option<f64>,
    /// Coefficient of that term at this step (after warm-up).
    pub l1_coefficient: Option<f32>,
    /// AuxK term (TopK/BatchTopK) or JumpReLU's pre-activation loss (when
    /// enabled), already multiplied by its coefficient.
    pub auxk: Option<f64>,
    /// Mean number of active latents per row.
    pub l0: f64,
    /// Fraction of latents counted as dead before this step.
    pub dead_fraction: f64,
    /// `1 − Σ‖ŷ − y‖² / Σ‖y − ȳ‖²` over the batch.
    pub explained_variance: f64,
    /// Learning rate applied at this step.
    pub lr: f32,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f64,
}
