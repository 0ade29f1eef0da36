//! Training core: hand-written forward/backward for ReLU+L1, TopK (+AuxK),
//! BatchTopK and JumpReLU sparse autoencoders and transcoders, with Adam.
//!
//! Loss (per batch of n rows, SAELens conventions):
//! `mse = mean_t Σ_d (ŷ_td − y_td)²`, plus for `standard`
//! `λ · mean_t Σ_j f_tj ‖W_dec_j‖` (L1 weighted by decoder row norms, λ warmed
//! up linearly), plus for TopK/BatchTopK the AuxK loss
//! `c · min(n_dead/k_aux, 1) · mean_t ‖Σ_{j ∈ top-k_aux dead} pre_tj W_dec_j − (y_t − ŷ_t)‖²`
//! with the residual treated as a constant. JumpReLU (SAELens 6
//! `JumpReLUTrainingSAE`, see [`TrainArch::JumpRelu`]) adds
//! `c · mean_t L0_t` with `L0_t = Σ_j H(pre_tj − θ_j)` (or the `tanh` /
//! `quadratic` variants) and, when enabled, the pre-activation loss
//! `c_pre · mean_t Σ_{j dead} ReLU(θ_j − pre_tj) ‖W_dec_j‖`; θ and the step
//! function get the straight-through pseudo-derivatives of the `jumprelu`
//! submodule. For JumpReLU the sparsity loss is reported in the `l1` slots of
//! [`LossParts`] / [`StepStats`] and the pre-activation loss in `auxk`.
//!
//! The decoder is sparse: with k active latents per row the decoder and all
//! encoder gradients cost O(k·d) per row; only the encoder GEMM is dense.
//!
//! Determinism: initialisation is seeded (ChaCha8), no randomness is used
//! after it, and every reduction has a fixed order independent of the thread
//! count. A trainer restored from [`TrainerState`] and fed the same batches in
//! the same order continues bit-identically.
//!
//! Layout: [`TrainConfig`] and the reported statistics (`config`), the
//! initialisation (`init`), the selection of active latents (`select`,
//! over the sparse rows of `sparse`), one chunked forward/backward driver
//! (`driver`) with a row kernel per architecture family (`topk`,
//! `jumprelu`), Adam (`optimizer`) and checkpoints (`state`).

use rayon::prelude::*;

use crate::arch::{Activation, Normalization};
use crate::coder::SparseCoder;
use crate::error::{Result, SaeError};
use crate::linalg;
use crate::meta::Metadata;

mod config;
mod driver;
mod init;
mod jumprelu;
mod optimizer;
mod select;
mod sparse;
mod state;
#[cfg(test)]
mod tests;
mod topk;

pub use config::{BDecInit, JumpReluSparsityLoss, LossParts, LrDecay, StepStats, TrainArch, TrainConfig};
pub use state::{Params, STATE_VERSION, TrainerState};

use driver::DENSE_ABOVE_ONE_IN;
use init::check_len;
use optimizer::grad_norm;
use sparse::Csr;

/// A sparse coder in training: parameters, Adam moments, firing statistics
/// and the step counter. Built by [`Trainer::new`] (or [`Trainer::restore`]),
/// advanced by [`Trainer::step`], exported by [`Trainer::to_coder`].
pub struct Trainer {
    cfg: TrainConfig,
    d_in: usize,
    d_out: usize,
    d_sae: usize,
    /// Exposed for inspection and tests; change only between steps.
    pub params: Params,
    adam_m: Params,
    adam_v: Params,
    step: u64,
    tokens_seen: u64,
    tokens_since_fired: Vec<u64>,
    fire_counts: Vec<u64>,
    batch_threshold: f64,
    scale_in: f32,
    scale_out: f32,
    grads: Params,
    /// Forces the row-chunk size of forward/backward (tests).
    chunk_rows_override: Option<usize>,
    /// Density (one active entry in this many) above which chunks go dense.
    dense_above_one_in: usize,
}

impl Trainer {
    /// The configuration in use (after [`Trainer::new`]'s adjustments:
    /// `transcoder` set when d_in != d_out, `apply_b_dec_to_input` off for
    /// transcoders).
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Optimisation steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Training rows (tokens) seen.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }

    fn unit_decoder(&self) -> bool {
        matches!(self.cfg.arch, TrainArch::TopK { .. } | TrainArch::BatchTopK { .. })
    }

    /// The per-latent JumpReLU threshold θ (`None` for other architectures).
    pub fn threshold(&self) -> Option<&[f32]> {
        matches!(self.cfg.arch, TrainArch::JumpRelu { .. }).then(|| &self.params.b_enc[self.d_sae..])
    }

    /// Learning rate used at step `step`.
    pub fn lr_at(&self, step: u64) -> f32 {
        self.cfg.lr_at(step)
    }

    /// Coefficient of the sparsity term at `step`: L1 (standard) or L0
    /// (JumpReLU), each with its linear warm-up.
    fn sparsity_coefficient_at(&self, step: u64) -> f32 {
        self.cfg.arch.sparsity_coefficient_at(step)
    }

    fn dead_mask(&self) -> Vec<bool> {
        self.tokens_since_fired.iter().map(|&t| t >= self.cfg.dead_after_tokens).collect()
    }

    fn scaled(&self, v: &[f32], s: f32) -> Vec<f32> {
        v.iter().map(|a| a * s).collect()
    }

    /// Loss and exact gradients for a batch, without updating anything.
    /// Shapes as in [`Trainer::step`]; `y` is required for transcoders and
    /// ignored (= x) for SAEs. The gradients are wrt [`Trainer::params`] of
    /// the scaled problem (see [`TrainConfig::normalize_activations`]).
    pub fn loss_and_grads(&mut self, x: &[f32], y: Option<&[f32]>, n: usize) -> Result<(LossParts, Params)> {
        let (xs, ys) = self.prepare_batch(x, y, n)?;
        let l1c = self.sparsity_coefficient_at(self.step);
        let dead = self.dead_mask();
        let mut grads = self.params.zeros_like();
        let out = self.forward_backward(&xs, ys.as_deref().unwrap_or(&xs), n, l1c, &dead, &mut grads, None, false);
        Ok((out.parts, grads))
    }

    fn prepare_batch(&self, x: &[f32], y: Option<&[f32]>, n: usize) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        check_len("d_in", x, n, self.d_in)?;
        let ys = if self.cfg.transcoder {
            let y = y.ok_or_else(|| SaeError::Invalid("transcoder training step needs targets y".into()))?;
            check_len("d_out", y, n, self.d_out)?;
            Some(self.scaled(y, self.scale_out))
        } else {
            if let Some(y) = y {
                check_len("d_out", y, n, self.d_out)?;
            }
            None
        };
        Ok((self.scaled(x, self.scale_in), ys))
    }

    /// One optimisation step on a batch of `n` rows: `x` is `[n, d_in]`
    /// row-major, `y` the targets `[n, d_out]` (required for transcoders,
    /// checked and ignored for SAEs, which reconstruct `x`). Fails without
    /// changing anything on bad shapes, an empty batch or a non-finite loss
    /// or gradient norm.
    pub fn step(&mut self, x: &[f32], y: Option<&[f32]>, n: usize) -> Result<StepStats> {
        if n == 0 {
            return Err(SaeError::Invalid("training step on an empty batch".into()));
        }
        let (xs, ys) = self.prepare_batch(x, y, n)?;
        let l1c = self.sparsity_coefficient_at(self.step);
        let dead = self.dead_mask();
        let n_dead = dead.iter().filter(|&&d| d).count();
        let mut grads = std::mem::replace(&mut self.grads, Params::empty());
        let fb = self.forward_backward(&xs, ys.as_deref().unwrap_or(&xs), n, l1c, &dead, &mut grads, None, false);
        let parts = fb.parts;
        let loss = parts.total();
        if !loss.is_finite() {
            self.grads = grads;
            return Err(SaeError::NonFinite { step: self.step, what: "loss", value: loss });
        }
        if self.unit_decoder() {
            // Only the tangential part of a unit-norm row's gradient matters.
            let d_out = self.d_out;
            grads.dec.par_chunks_mut(d_out).zip(self.params.dec.par_chunks(d_out)).for_each(|(g, w)| {
                let p = linalg::dot(g, w);
                linalg::axpy(-p, w, g);
            });
        }
        let grad_norm = grad_norm(&grads);
        if !grad_norm.is_finite() {
            self.grads = grads;
            return Err(SaeError::NonFinite { step: self.step, what: "gradient norm", value: grad_norm });
        }
        let clip = match self.cfg.max_grad_norm {
            Some(m) if grad_norm > m as f64 => (m as f64 / grad_norm) as f32,
            _ => 1.0,
        };
        let lr = self.lr_at(self.step);
        self.adam(&grads, clip, lr);
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
        // Firing statistics and the BatchTopK threshold.
        let min_pos = fb.min_pos;
        for ((t, total), &c) in self.tokens_since_fired.iter_mut().zip(&mut self.fire_counts).zip(&fb.fire_count) {
            *total += c;
            *t = if c > 0 { 0 } else { t.saturating_add(n as u64) };
        }
        if let TrainArch::BatchTopK { threshold_lr, .. } = self.cfg.arch {
            if min_pos.is_finite() {
                self.batch_threshold = (1.0 - threshold_lr) * self.batch_threshold + threshold_lr * min_pos as f64;
            }
        }
        let sparsity_term = matches!(self.cfg.arch, TrainArch::Standard { .. } | TrainArch::JumpRelu { .. });
        let stats = StepStats {
            step: self.step,
            loss,
            mse: parts.mse,
            l1: sparsity_term.then_some(parts.l1),
            l1_coefficient: sparsity_term.then_some(l1c),
            auxk: match self.cfg.arch {
                TrainArch::Standard { .. } => None,
                TrainArch::JumpRelu { pre_act_loss_coefficient, .. } => pre_act_loss_coefficient.map(|_| parts.auxk),
                _ => Some(parts.auxk),
            },
            l0: parts.l0,
            dead_fraction: n_dead as f64 / self.d_sae as f64,
            explained_variance: parts.explained_variance,
            lr,
            grad_norm,
        };
        self.step += 1;
        self.tokens_seen += n as u64;
        Ok(stats)
    }

    /// The trained coder in inference form (SAELens conventions), with the
    /// activation scaling folded into the weights. Metadata is left for the
    /// caller to fill (hooks, model, dataset); `log_sparsity` comes from the
    /// firing counts seen in training.
    pub fn to_coder(&self) -> SparseCoder {
        let (d_in, d_sae, d_out) = (self.d_in, self.d_sae, self.d_out);
        let p = &self.params;
        let (si, so) = (self.scale_in, self.scale_out);
        let mut w_enc = vec![0f32; d_in * d_sae];
        for j in 0..d_sae {
            for i in 0..d_in {
                w_enc[i * d_sae + j] = p.enc[j * d_in + i] * si;
            }
        }
        // Unscaled input x: pre = (x·si − b_dec)·E + b_enc = (x − b_dec/si)·(si E) + b_enc
        // and ŷ/so = (f·D + b_dec)/so; so W_dec and b_dec are divided by so.
        let w_dec: Vec<f32> = p.dec.iter().map(|v| v / so).collect();
        let b_dec: Vec<f32> = p.b_dec.iter().map(|v| v / so).collect();
        let w_skip = p.skip.as_ref().map(|s| s.iter().map(|v| v * si / so).collect());
        let activation = match self.cfg.arch {
            TrainArch::Standard { .. } => Activation::Relu,
            TrainArch::TopK { k } => Activation::TopK { k },
            TrainArch::BatchTopK { .. } => Activation::JumpRelu { threshold: vec![self.batch_threshold as f32; d_sae] },
            // θ is kept ≥ 0 in training; the max only guards hand-set values
            // (the inference gate is ReLU(pre) · 1[pre > θ] either way).
            TrainArch::JumpRelu { .. } => {
                Activation::JumpRelu { threshold: p.b_enc[d_sae..].iter().map(|v| v.max(0.0)).collect() }
            }
        };
        let log_sparsity = (self.tokens_seen > 0).then(|| {
            let f: Vec<f64> = self.fire_counts.iter().map(|&c| c as f64 / self.tokens_seen as f64).collect();
            crate::format::saelens::log_sparsity_from_freq(&f)
        });
        let mut metadata = Metadata::default();
        metadata.extra.insert("training_architecture".into(), serde_json::to_value(&self.cfg.arch).unwrap_or_default());
        metadata.extra.insert("training_tokens".into(), self.tokens_seen.into());
        if self.cfg.normalize_activations {
            // Folded like SAELens's expected_average_only_in: the saved coder
            // takes raw activations, so its config says "none".
            metadata.extra.insert("activation_scaling_factor".into(), serde_json::json!(self.scale_in));
        }
        SparseCoder {
            activation,
            d_in,
            d_sae,
            d_out,
            w_enc,
            b_enc: p.b_enc[..d_sae].to_vec(),
            w_dec,
            b_dec,
            w_skip,
            apply_b_dec_to_input: self.cfg.apply_b_dec_to_input && !self.cfg.transcoder,
            normalize: Normalization::None,
            transcoder: self.cfg.transcoder,
            metadata,
            log_sparsity,
        }
    }

    /// Fraction of latents currently counted as dead.
    pub fn dead_fraction(&self) -> f64 {
        self.dead_mask().iter().filter(|&&d| d).count() as f64 / self.d_sae as f64
    }
}
