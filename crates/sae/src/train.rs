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
//! Layout: the step itself is written once, here ([`Trainer::step`]), over
//! the training seam [`TrainOps`]: the CPU backend [`CpuTrain`] (`cpu`)
//! trains every architecture, `saepipe-cuda`'s trains TopK. Around it:
//! [`TrainConfig`] and the reported statistics (`config`), the
//! initialisation (`init`), the selection of active latents (`select`,
//! over the sparse rows of `sparse`), one chunked forward/backward driver
//! (`driver`) with a row kernel per architecture family (`topk`,
//! `jumprelu`), Adam (`optimizer`) and checkpoints (`state`).

use saepipe_core::compute::ComputeError;
use saepipe_core::train::{AdamStep, AuxK, StepBatch};

use crate::arch::{Activation, Normalization};
use crate::coder::SparseCoder;
use crate::error::{Result, SaeError};
use crate::meta::Metadata;

mod config;
mod cpu;
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

pub use config::{BDecInit, JumpReluSparsityLoss, LrDecay, StepStats, TrainArch, TrainConfig};
pub use cpu::CpuTrain;
pub use saepipe_core::train::{CoderSetup, LossParts, Params, TrainOps, TrainTensors};
pub use state::{STATE_VERSION, TrainerState};

use driver::DENSE_ABOVE_ONE_IN;
use init::check_len;
use sparse::Csr;

/// A sparse coder in training: the step counter, the firing statistics and
/// the activation scales, with the tensors held by a backend `B` (the CPU
/// by default). Built by [`Trainer::new`] (or [`Trainer::restore`]),
/// advanced by [`Trainer::step`], moved to another backend by
/// [`Trainer::move_to`], exported by [`Trainer::to_coder`].
pub struct Trainer<B: TrainOps = CpuTrain> {
    cfg: TrainConfig,
    d_in: usize,
    d_out: usize,
    d_sae: usize,
    step: u64,
    tokens_seen: u64,
    tokens_since_fired: Vec<u64>,
    fire_counts: Vec<u64>,
    batch_threshold: f64,
    scale_in: f32,
    scale_out: f32,
    /// Where the tensors live and the step's device work runs.
    pub(crate) ops: B,
}

impl<B: TrainOps> Trainer<B> {
    /// The configuration in use (after [`Trainer::new`]'s adjustments:
    /// `transcoder` set when d_in != d_out, `apply_b_dec_to_input` off for
    /// transcoders).
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// What a backend is built for: the architecture kind and the widths.
    pub fn setup(&self) -> CoderSetup {
        cpu::setup(&self.cfg, self.d_in, self.d_out)
    }

    /// Where the steps run ("cpu", "cuda:0").
    pub fn device(&self) -> String {
        self.ops.device()
    }

    /// Optimisation steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Training rows (tokens) seen.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }

    /// Learning rate used at step `step`.
    pub fn lr_at(&self, step: u64) -> f32 {
        self.cfg.lr_at(step)
    }

    fn dead_mask(&self) -> Vec<bool> {
        self.tokens_since_fired.iter().map(|&t| t >= self.cfg.dead_after_tokens).collect()
    }

    /// Fraction of latents currently counted as dead.
    pub fn dead_fraction(&self) -> f64 {
        self.dead_mask().iter().filter(|&&d| d).count() as f64 / self.d_sae as f64
    }

    /// The AuxK term with `n_dead` dead latents: TopK and BatchTopK with a
    /// positive coefficient, `min(n_dead, k_aux)` latents per row, weighted
    /// by `c · min(n_dead / k_aux, 1)`.
    fn aux_term(&self, n_dead: usize) -> Option<AuxK> {
        let topk = matches!(self.cfg.arch, TrainArch::TopK { .. } | TrainArch::BatchTopK { .. });
        if !topk || self.cfg.aux_k_coefficient <= 0.0 || n_dead == 0 {
            return None;
        }
        let k_aux = self.cfg.aux_k.unwrap_or(self.d_out / 2).max(1);
        Some(AuxK {
            k_aux: k_aux.min(n_dead),
            scale: (n_dead as f32 / k_aux as f32).min(1.0) * self.cfg.aux_k_coefficient,
        })
    }

    /// The checked batch `x` (`[n, d_in]`) → `y` (`[n, d_out]`, required
    /// for transcoders) with the terms of the current step.
    fn batch<'a>(&self, x: &'a [f32], y: Option<&'a [f32]>, n: usize, dead: &'a [bool]) -> Result<StepBatch<'a>> {
        check_len("d_in", x, n, self.d_in)?;
        if self.cfg.transcoder && y.is_none() {
            return Err(SaeError::Invalid("transcoder training step needs targets y".into()));
        }
        if let Some(y) = y {
            check_len("d_out", y, n, self.d_out)?;
        }
        Ok(StepBatch {
            x,
            y: if self.cfg.transcoder { y } else { None },
            n,
            scale_in: self.scale_in,
            scale_out: self.scale_out,
            dead,
            aux: self.aux_term(dead.iter().filter(|&&d| d).count()),
            sparsity_coefficient: self.cfg.arch.sparsity_coefficient_at(self.step),
        })
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
        let dead = self.dead_mask();
        let batch = self.batch(x, y, n, &dead)?;
        let sums = self.ops.gradients(&batch)?;
        let (parts, grad_norm) = (sums.parts, sums.grad_norm);
        let loss = parts.total();
        if !loss.is_finite() {
            return Err(SaeError::NonFinite { step: self.step, what: "loss", value: loss });
        }
        if !grad_norm.is_finite() {
            return Err(SaeError::NonFinite { step: self.step, what: "gradient norm", value: grad_norm });
        }
        let clip = match self.cfg.max_grad_norm {
            Some(m) if grad_norm > m as f64 => (m as f64 / grad_norm) as f32,
            _ => 1.0,
        };
        let lr = self.lr_at(self.step);
        self.ops.update(&AdamStep {
            lr,
            clip,
            beta1: self.cfg.adam_beta1,
            beta2: self.cfg.adam_beta2,
            eps: self.cfg.adam_eps,
            t: self.step + 1,
        })?;
        // Firing statistics and the BatchTopK threshold.
        for ((t, total), &c) in self.tokens_since_fired.iter_mut().zip(&mut self.fire_counts).zip(&sums.fire_count) {
            *total += c;
            *t = if c > 0 { 0 } else { t.saturating_add(n as u64) };
        }
        if let TrainArch::BatchTopK { threshold_lr, .. } = self.cfg.arch {
            if sums.min_pos.is_finite() {
                self.batch_threshold = (1.0 - threshold_lr) * self.batch_threshold + threshold_lr * sums.min_pos as f64;
            }
        }
        let sparsity_term = matches!(self.cfg.arch, TrainArch::Standard { .. } | TrainArch::JumpRelu { .. });
        let stats = StepStats {
            step: self.step,
            loss,
            mse: parts.mse,
            l1: sparsity_term.then_some(parts.l1),
            l1_coefficient: sparsity_term.then_some(batch.sparsity_coefficient),
            auxk: match self.cfg.arch {
                TrainArch::Standard { .. } => None,
                TrainArch::JumpRelu { pre_act_loss_coefficient, .. } => pre_act_loss_coefficient.map(|_| parts.auxk),
                _ => Some(parts.auxk),
            },
            l0: parts.l0,
            dead_fraction: dead.iter().filter(|&&d| d).count() as f64 / self.d_sae as f64,
            explained_variance: parts.explained_variance,
            lr,
            grad_norm,
        };
        self.step += 1;
        self.tokens_seen += n as u64;
        Ok(stats)
    }

    /// The same trainer with its tensors on another backend, built by `to`
    /// from the setup and the tensors. If `to` fails the trainer is gone:
    /// ask the backend first whether it supports [`Trainer::setup`].
    pub fn move_to<C: TrainOps, E: Into<ComputeError>>(
        self,
        to: impl FnOnce(&CoderSetup, TrainTensors) -> std::result::Result<C, E>,
    ) -> Result<Trainer<C>> {
        let setup = self.setup();
        self.replace_ops(|ops| {
            let tensors = ops.into_tensors()?;
            to(&setup, tensors).map_err(|e| SaeError::Compute(e.into()))
        })
    }

    /// The same trainer behind a boxed backend (one type for every device).
    pub fn boxed(self) -> Trainer<Box<dyn TrainOps>>
    where
        B: 'static,
    {
        let boxed: std::result::Result<_, SaeError> = self.replace_ops(|ops| Ok(Box::new(ops) as Box<dyn TrainOps>));
        boxed.unwrap_or_else(|_| unreachable!("boxing a backend cannot fail"))
    }

    /// The trainer with the backend `make` builds from this one's.
    fn replace_ops<C: TrainOps, E>(
        self,
        make: impl FnOnce(B) -> std::result::Result<C, E>,
    ) -> std::result::Result<Trainer<C>, E> {
        let Trainer {
            cfg,
            d_in,
            d_out,
            d_sae,
            step,
            tokens_seen,
            tokens_since_fired,
            fire_counts,
            batch_threshold,
            scale_in,
            scale_out,
            ops,
        } = self;
        Ok(Trainer {
            ops: make(ops)?,
            cfg,
            d_in,
            d_out,
            d_sae,
            step,
            tokens_seen,
            tokens_since_fired,
            fire_counts,
            batch_threshold,
            scale_in,
            scale_out,
        })
    }
}

impl Trainer {
    /// The tensors in training (exposed for inspection).
    pub fn params(&self) -> &Params {
        &self.ops.params
    }

    /// The per-latent JumpReLU threshold θ (`None` for other architectures).
    pub fn threshold(&self) -> Option<&[f32]> {
        matches!(self.cfg.arch, TrainArch::JumpRelu { .. }).then(|| &self.ops.params.b_enc[self.d_sae..])
    }

    /// Coefficient of the sparsity term at `step`: L1 (standard) or L0
    /// (JumpReLU), each with its linear warm-up.
    #[cfg(test)]
    fn sparsity_coefficient_at(&self, step: u64) -> f32 {
        self.cfg.arch.sparsity_coefficient_at(step)
    }

    /// Loss and exact gradients for a batch, without updating anything.
    /// Shapes as in [`Trainer::step`]; `y` is required for transcoders and
    /// ignored (= x) for SAEs. The gradients are wrt [`Trainer::params`] of
    /// the scaled problem (see [`TrainConfig::normalize_activations`]).
    pub fn loss_and_grads(&mut self, x: &[f32], y: Option<&[f32]>, n: usize) -> Result<(LossParts, Params)> {
        let dead = self.dead_mask();
        let b = self.batch(x, y, n, &dead)?;
        let (xs, ys) = self.ops.scaled(&b);
        let mut grads = self.ops.params.zeros_like();
        let out = self.ops.forward_backward(&xs, ys.as_deref().unwrap_or(&xs), &b, &mut grads, None, false);
        Ok((out.parts, grads))
    }
}

impl<B: TrainOps> Trainer<B> {
    /// The trained coder in inference form (SAELens conventions), with the
    /// activation scaling folded into the weights. Metadata is left for the
    /// caller to fill (hooks, model, dataset); `log_sparsity` comes from the
    /// firing counts seen in training.
    pub fn to_coder(&self) -> Result<SparseCoder> {
        Ok(self.coder_from(&self.ops.tensors()?.params))
    }

    fn coder_from(&self, p: &Params) -> SparseCoder {
        let (d_in, d_sae, d_out) = (self.d_in, self.d_sae, self.d_out);
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
}
