//! Architecture vocabulary shared by the formats, inference and training.

use serde::{Deserialize, Serialize};

/// The latent activation function of a sparse coder, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// f = ReLU(pre).
    Relu,
    /// Keep the k largest pre-activations per row, then ReLU.
    TopK {
        /// Active latents per row.
        k: usize,
    },
    /// `f = ReLU(pre) · 1[pre > threshold_j]` (also the inference form of BatchTopK).
    JumpRelu {
        /// Per-latent threshold `[d_sae]`.
        threshold: Vec<f32>,
    },
    /// Gated encoder: gate = 1[x'W_enc + b_gate > 0], magnitude =
    /// ReLU(x'(W_enc ⊙ exp(r_mag)) + b_mag), f = gate · magnitude. No `b_enc`.
    Gated {
        /// Gate bias `[d_sae]`.
        b_gate: Vec<f32>,
        /// Magnitude bias `[d_sae]`.
        b_mag: Vec<f32>,
        /// Log-scale of the magnitude path's encoder columns `[d_sae]`.
        r_mag: Vec<f32>,
    },
    /// EleutherAI sparsify "groupmax": latents split into k contiguous groups,
    /// the maximum of ReLU(pre) in each group is kept.
    GroupMax {
        /// Number of groups (= active latents per row).
        k: usize,
    },
}

impl Activation {
    /// Short lowercase name of the activation family (`relu`, `topk`,
    /// `jumprelu`, `gated`, `groupmax`), without its parameters.
    pub fn family(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::TopK { .. } => "topk",
            Activation::JumpRelu { .. } => "jumprelu",
            Activation::Gated { .. } => "gated",
            Activation::GroupMax { .. } => "groupmax",
        }
    }
}

/// Run-time input normalization (SAELens `normalize_activations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// None: inputs are used as given.
    #[default]
    None,
    /// A constant scaling factor was folded into the weights at save time:
    /// nothing to do at inference.
    ExpectedAverageOnlyIn,
    /// x · √d_in / ‖x‖ per row, undone on the output.
    ConstantNormRescale,
    /// (x − mean) / (std + 1e-5) per row (unbiased std), undone on the output.
    LayerNorm,
}

impl Normalization {
    /// The SAELens `normalize_activations` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Normalization::None => "none",
            Normalization::ExpectedAverageOnlyIn => "expected_average_only_in",
            Normalization::ConstantNormRescale => "constant_norm_rescale",
            Normalization::LayerNorm => "layer_norm",
        }
    }

    /// Parses a SAELens `normalize_activations` string (`None` if unknown).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Normalization::None,
            "expected_average_only_in" => Normalization::ExpectedAverageOnlyIn,
            "constant_norm_rescale" => Normalization::ConstantNormRescale,
            "layer_norm" => Normalization::LayerNorm,
            _ => return None,
        })
    }
}

/// LayerNorm epsilon used by SAELens's run-time `layer_norm` normalization.
pub const LN_EPS: f32 = 1e-5;
