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

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::arch::{Activation, Normalization};
use crate::coder::{SparseCoder, topk_indices};
use crate::error::{Result, SaeError};
use crate::linalg::{self, MatRef, ROW_BLOCK};
use crate::meta::Metadata;
use crate::st::{self, Out, StFile};

mod jumprelu;

/// What is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainArch {
    /// ReLU encoder with an L1 penalty weighted by decoder row norms.
    Standard {
        l1_coefficient: f32,
        #[serde(default)]
        l1_warmup_steps: u64,
    },
    /// k largest pre-activations per row, unit-norm decoder rows, AuxK.
    TopK { k: usize },
    /// k·n largest activations over the whole batch; saved as JumpReLU with
    /// one global threshold (EMA of the smallest kept activation).
    BatchTopK {
        k: usize,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    Constant,
    Cosine,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    Zeros,
    Mean,
    GeometricMedian,
}

/// Training hyper-parameters. Serialisable; unknown-free defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub arch: TrainArch,
    pub d_sae: usize,
    /// Output hook differs from the input hook (always true when d_out != d_in).
    pub transcoder: bool,
    /// Adds a dense skip connection `W_skip [d_out, d_in]` (transcoders).
    pub skip_connection: bool,
    /// Subtract b_dec from the input before encoding (SAEs only).
    pub apply_b_dec_to_input: bool,
    pub lr: f32,
    pub adam_beta1: f32,
    pub adam_beta2: f32,
    pub adam_eps: f32,
    pub lr_warmup_steps: u64,
    pub lr_decay: LrDecay,
    /// Decay over the last `lr_decay_steps` steps of `total_steps`; `None`:
    /// from the end of warm-up to `total_steps`.
    pub lr_decay_steps: Option<u64>,
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
    pub b_dec_init: BDecInit,
    /// Scale inputs (and targets) by a constant so that E‖x‖ = √d; folded into
    /// the weights by [`Trainer::to_coder`] (SAELens `expected_average_only_in`).
    pub normalize_activations: bool,
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

/// ReLU chunks where more than one entry in this many is active train through
/// dense GEMMs instead of the sparse gather/scatter path.
const DENSE_ABOVE_ONE_IN: usize = 16;

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
    pub step: u64,
    pub loss: f64,
    pub mse: f64,
    /// Sparsity term, already multiplied by its coefficient: weighted L1
    /// (standard) or the L0-type loss (JumpReLU).
    pub l1: Option<f64>,
    /// Coefficient of that term at this step (after warm-up).
    pub l1_coefficient: Option<f32>,
    /// AuxK term (TopK/BatchTopK) or JumpReLU's pre-activation loss (when
    /// enabled), already multiplied by its coefficient.
    pub auxk: Option<f64>,
    pub l0: f64,
    pub dead_fraction: f64,
    pub explained_variance: f64,
    pub lr: f32,
    pub grad_norm: f64,
}

/// Trainable tensors. The encoder is kept as `[d_sae, d_in]` (one contiguous
/// row per latent) so sparse encoder gradients touch whole rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub enc: Vec<f32>,
    /// `[d_sae]`; for [`TrainArch::JumpRelu`] `[2 · d_sae]`: the encoder bias
    /// followed by the per-latent threshold θ (so Adam, gradient clipping and
    /// checkpoints treat θ like any other parameter). See
    /// [`Trainer::threshold`].
    pub b_enc: Vec<f32>,
    pub dec: Vec<f32>,
    pub b_dec: Vec<f32>,
    pub skip: Option<Vec<f32>>,
}

impl Params {
    fn zeros_like(&self) -> Params {
        Params {
            enc: vec![0.0; self.enc.len()],
            b_enc: vec![0.0; self.b_enc.len()],
            dec: vec![0.0; self.dec.len()],
            b_dec: vec![0.0; self.b_dec.len()],
            skip: self.skip.as_ref().map(|s| vec![0.0; s.len()]),
        }
    }
    fn tensors(&self) -> Vec<(&'static str, &Vec<f32>)> {
        let mut v = vec![("enc", &self.enc), ("b_enc", &self.b_enc), ("dec", &self.dec), ("b_dec", &self.b_dec)];
        if let Some(s) = &self.skip {
            v.push(("skip", s));
        }
        v
    }
}

/// Loss terms of a batch. `l1` is the sparsity term (weighted L1, or
/// JumpReLU's L0-type loss) and `auxk` the AuxK term (or JumpReLU's
/// pre-activation loss), each multiplied by its coefficient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossParts {
    pub mse: f64,
    pub l1: f64,
    pub auxk: f64,
    pub l0: f64,
    pub explained_variance: f64,
}

impl LossParts {
    pub fn total(&self) -> f64 {
        self.mse + self.l1 + self.auxk
    }
}

/// Everything needed to continue training exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerState {
    pub cfg: TrainConfig,
    pub d_in: usize,
    pub d_out: usize,
    pub step: u64,
    pub tokens_seen: u64,
    pub params: Params,
    pub adam_m: Params,
    pub adam_v: Params,
    pub tokens_since_fired: Vec<u64>,
    pub fire_counts: Vec<u64>,
    pub batch_threshold: f64,
    pub scale_in: f32,
    pub scale_out: f32,
}

/// Version of the trainer-state file written by [`TrainerState::save`].
pub const STATE_VERSION: &str = "1";

/// Dense decode of a chunk: g = b_dec + a·W_dec (+ the skip output), then in
/// place g ← 2(ŷ − y)/n, the MSE gradient wrt ŷ. Returns the summed squared
/// error and the summed squared deviation of y from `ybar` (explained variance).
#[allow(clippy::too_many_arguments)]
fn dense_decode_error(
    a_dense: &[f32],
    m: usize,
    p: &Params,
    d_sae: usize,
    d_out: usize,
    skip: Option<&[f32]>,
    y: &[f32],
    ybar: &[f64],
    inv_n: f32,
    g: &mut [f32],
) -> (f64, f64) {
    for row in g.chunks_exact_mut(d_out) {
        row.copy_from_slice(&p.b_dec);
    }
    linalg::gemm(MatRef::row_major(a_dense, m, d_sae), MatRef::row_major(&p.dec, d_sae, d_out), g, 1.0);
    if let Some(skip) = skip {
        linalg::axpy(1.0, skip, g);
    }
    let (mut mse, mut var) = (0f64, 0f64);
    for (gr, yr) in g.chunks_exact_mut(d_out).zip(y.chunks_exact(d_out)) {
        let (se, sv) = residual_grad_row(gr, yr, ybar, inv_n);
        mse += se;
        var += sv;
    }
    (mse, var)
}

/// Sparse decode of row `r` of `act` into `yhat` (b_dec + Σ val·W_dec[idx],
/// plus the skip output), then `g` as [`residual_grad_row`] of it (`yhat` is
/// kept for the AuxK residual).
#[allow(clippy::too_many_arguments)]
fn sparse_decode_error_row(
    p: &Params,
    act: &Csr,
    r: usize,
    d_out: usize,
    skip: Option<&[f32]>,
    yr: &[f32],
    ybar: &[f64],
    inv_n: f32,
    yhat: &mut [f32],
    g: &mut [f32],
) -> (f64, f64) {
    yhat.copy_from_slice(&p.b_dec);
    for i in act.row(r) {
        let j = act.idx[i] as usize;
        linalg::axpy(act.val[i], &p.dec[j * d_out..(j + 1) * d_out], yhat);
    }
    if let Some(skip) = skip {
        linalg::axpy(1.0, skip, yhat);
    }
    g.copy_from_slice(yhat);
    residual_grad_row(g, yr, ybar, inv_n)
}

/// One row holding ŷ becomes the MSE gradient 2(ŷ − y)/n in place; returns the
/// squared error and the squared deviation of y from `ybar` (explained variance).
fn residual_grad_row(g: &mut [f32], yr: &[f32], ybar: &[f64], inv_n: f32) -> (f64, f64) {
    let (mut se, mut sv) = (0f64, 0f64);
    for d in 0..g.len() {
        let e = g[d] - yr[d];
        se += (e as f64) * (e as f64);
        g[d] = 2.0 * e * inv_n;
        sv += (yr[d] as f64 - ybar[d]).powi(2);
    }
    (se, sv)
}

/// See [`Trainer::step_inputs`].
struct StepInputs {
    xin: Vec<f32>,
    dec_norms: Vec<f32>,
    skip_out: Vec<f32>,
    ybar: Vec<f64>,
}

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
    /// Density (one active entry in this many) above which ReLU chunks go dense.
    dense_above_one_in: usize,
}

/// Per-row sparse selection of a batch (CSR).
#[derive(Default)]
struct Csr {
    ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Csr {
    fn new() -> Self {
        Csr { ptr: vec![0], idx: Vec::new(), val: Vec::new() }
    }
    fn push_row(&mut self) {
        self.ptr.push(self.idx.len());
    }
    fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.ptr[r]..self.ptr[r + 1]
    }
    fn slice(&self, r0: usize, r1: usize) -> Csr {
        let (a, b) = (self.ptr[r0], self.ptr[r1]);
        Csr {
            ptr: self.ptr[r0..=r1].iter().map(|p| p - a).collect(),
            idx: self.idx[a..b].to_vec(),
            val: self.val[a..b].to_vec(),
        }
    }
    fn append(&mut self, o: Csr) {
        let base = self.idx.len();
        self.ptr.extend(o.ptr[1..].iter().map(|p| p + base));
        self.idx.extend(o.idx);
        self.val.extend(o.val);
    }
}

/// Result of [`Trainer::forward_backward`].
struct FbOut {
    parts: LossParts,
    /// Rows on which each latent was active.
    fire_count: Vec<u64>,
    /// Smallest active value (BatchTopK threshold update).
    min_pos: f32,
    /// Row pointers and latents (active then AuxK per row), when requested.
    selection: Option<(Vec<usize>, Vec<u32>)>,
    /// Residual gradient `g = 2e/n`, `[n, d_out]`.
    g: Vec<f32>,
}

impl FbOut {
    /// Empty outputs of a step over `n` rows.
    fn new(n: usize, d_sae: usize, d_out: usize, keep_selection: bool) -> FbOut {
        FbOut {
            parts: LossParts { mse: 0.0, l1: 0.0, auxk: 0.0, l0: 0.0, explained_variance: 0.0 },
            fire_count: vec![0; d_sae],
            min_pos: f32::INFINITY,
            selection: keep_selection.then(|| (vec![0], Vec::new())),
            g: Vec::with_capacity(n * d_out),
        }
    }
}

struct RowOut {
    g: Vec<f32>,
    h: Vec<f32>,
    dpre_act: Vec<f32>,
    dpre_aux: Vec<f32>,
    mse: f64,
    l1: f64,
    aux: f64,
    var: f64,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    row: u32,
    aux: bool,
    coef: f32,
    dpre: f32,
}

struct Normal(ChaCha8Rng);

impl Normal {
    fn next(&mut self) -> f32 {
        // Box–Muller on (0, 1] uniforms.
        let u1 = ((self.0.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

fn random_rows(rng: &mut Normal, rows: usize, cols: usize, norm: f32) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
    for r in w.chunks_exact_mut(cols) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v *= norm / n);
    }
    w
}

fn check_len(what: &'static str, data: &[f32], n: usize, d: usize) -> Result<()> {
    if data.len() != n * d {
        return Err(SaeError::InputShape { what, expected: d, found: data.len(), n });
    }
    Ok(())
}

fn mean_norm(x: &[f32], d: usize) -> f64 {
    let rows = x.len() / d;
    if rows == 0 {
        return 0.0;
    }
    x.chunks_exact(d).map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).sum::<f64>() / rows as f64
}

fn geometric_median(y: &[f32], d: usize) -> Vec<f32> {
    let rows: Vec<&[f32]> = y.chunks_exact(d).collect();
    let mut m: Vec<f64> = vec![0.0; d];
    for r in &rows {
        m.iter_mut().zip(*r).for_each(|(a, b)| *a += *b as f64 / rows.len() as f64);
    }
    // Weiszfeld iterations from the mean.
    for _ in 0..100 {
        let mut num = vec![0f64; d];
        let mut den = 0f64;
        for r in &rows {
            let dist = r.iter().zip(&m).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt().max(1e-8);
            den += 1.0 / dist;
            num.iter_mut().zip(*r).for_each(|(a, b)| *a += *b as f64 / dist);
        }
        let next: Vec<f64> = num.iter().map(|v| v / den).collect();
        let shift = next.iter().zip(&m).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        m = next;
        if shift < 1e-7 {
            break;
        }
    }
    m.into_iter().map(|v| v as f32).collect()
}

impl Trainer {
    /// Creates a trainer. `init_x` (`[m, d_in]`) and, for transcoders,
    /// `init_y` (`[m, d_out]`) are sample activations used to initialise
    /// `b_dec` (mean or geometric median of the targets) and the
    /// normalisation constants.
    pub fn new(cfg: TrainConfig, d_in: usize, d_out: usize, init_x: &[f32], init_y: Option<&[f32]>) -> Result<Trainer> {
        let mut cfg = cfg;
        if d_in != d_out {
            cfg.transcoder = true;
        }
        if cfg.d_sae == 0 || d_in == 0 || d_out == 0 {
            return Err(SaeError::Invalid(format!(
                "train config: d_sae ({}), d_in ({d_in}) and d_out ({d_out}) must be positive",
                cfg.d_sae
            )));
        }
        match cfg.arch {
            TrainArch::TopK { k } | TrainArch::BatchTopK { k, .. } if k == 0 || k > cfg.d_sae => {
                return Err(SaeError::Invalid(format!("train config: k = {k} must be in 1..={}", cfg.d_sae)));
            }
            TrainArch::JumpRelu { .. } => jumprelu::validate(&cfg.arch, cfg.d_sae)?,
            _ => {}
        }
        if cfg.transcoder && cfg.apply_b_dec_to_input {
            // b_dec lives in output space for transcoders.
            cfg.apply_b_dec_to_input = false;
        }
        if init_x.is_empty() || init_x.len() % d_in != 0 {
            return Err(SaeError::InputShape {
                what: "d_in",
                expected: d_in,
                found: init_x.len(),
                n: init_x.len() / d_in,
            });
        }
        let m = init_x.len() / d_in;
        let init_y = match (cfg.transcoder, init_y) {
            (true, Some(y)) => {
                check_len("d_out", y, m, d_out)?;
                y
            }
            (true, None) => {
                return Err(SaeError::Invalid("transcoder training needs init_y samples of the output hook".into()));
            }
            (false, _) => init_x,
        };
        let (scale_in, scale_out) = if cfg.normalize_activations {
            let si = ((d_in as f64).sqrt() / mean_norm(init_x, d_in).max(1e-12)) as f32;
            let so =
                if cfg.transcoder { ((d_out as f64).sqrt() / mean_norm(init_y, d_out).max(1e-12)) as f32 } else { si };
            (si, so)
        } else {
            (1.0, 1.0)
        };
        let d_sae = cfg.d_sae;
        let mut rng = Normal(ChaCha8Rng::seed_from_u64(cfg.seed));
        let dec_norm = cfg.decoder_init_norm.unwrap_or(match cfg.arch {
            TrainArch::Standard { .. } | TrainArch::JumpRelu { .. } => 0.1,
            _ => 1.0,
        });
        let dec = random_rows(&mut rng, d_sae, d_out, dec_norm);
        // Encoder = decoder transpose where the spaces agree.
        let enc = if d_in == d_out { dec.clone() } else { random_rows(&mut rng, d_sae, d_in, dec_norm) };
        let scaled_y: Vec<f32> = init_y.iter().map(|v| v * scale_out).collect();
        let b_dec = match cfg.b_dec_init {
            BDecInit::Zeros => vec![0.0; d_out],
            BDecInit::Mean => {
                let mut s = vec![0f64; d_out];
                for r in scaled_y.chunks_exact(d_out) {
                    s.iter_mut().zip(r).for_each(|(a, b)| *a += *b as f64);
                }
                s.into_iter().map(|v| (v / m as f64) as f32).collect()
            }
            BDecInit::GeometricMedian => geometric_median(&scaled_y, d_out),
        };
        let skip = if cfg.skip_connection { Some(vec![0.0; d_out * d_in]) } else { None };
        let mut b_enc = vec![0.0; d_sae];
        if let TrainArch::JumpRelu { initial_threshold, .. } = cfg.arch {
            // θ follows the bias (see `Params::b_enc`).
            b_enc.resize(2 * d_sae, initial_threshold);
        }
        let params = Params { enc, b_enc, dec, b_dec, skip };
        Ok(Trainer {
            d_in,
            d_out,
            d_sae,
            adam_m: params.zeros_like(),
            adam_v: params.zeros_like(),
            grads: params.zeros_like(),
            chunk_rows_override: None,
            dense_above_one_in: DENSE_ABOVE_ONE_IN,
            params,
            step: 0,
            tokens_seen: 0,
            tokens_since_fired: vec![0; d_sae],
            fire_counts: vec![0; d_sae],
            batch_threshold: 0.0,
            scale_in,
            scale_out,
            cfg,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    pub fn step_count(&self) -> u64 {
        self.step
    }
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
        match self.cfg.arch {
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

    fn dead_mask(&self) -> Vec<bool> {
        self.tokens_since_fired.iter().map(|&t| t >= self.cfg.dead_after_tokens).collect()
    }

    fn scaled(&self, v: &[f32], s: f32) -> Vec<f32> {
        v.iter().map(|a| a * s).collect()
    }

    /// Loss and exact gradients for a batch, without updating anything.
    /// `y` is required for transcoders and ignored (= x) for SAEs.
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

    /// One optimisation step on a batch of `n` rows.
    pub fn step(&mut self, x: &[f32], y: Option<&[f32]>, n: usize) -> Result<StepStats> {
        if n == 0 {
            return Err(SaeError::Invalid("training step on an empty batch".into()));
        }
        let (xs, ys) = self.prepare_batch(x, y, n)?;
        let l1c = self.sparsity_coefficient_at(self.step);
        let dead = self.dead_mask();
        let n_dead = dead.iter().filter(|&&d| d).count();
        let mut grads = std::mem::replace(
            &mut self.grads,
            Params { enc: vec![], b_enc: vec![], dec: vec![], b_dec: vec![], skip: None },
        );
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

    fn adam(&mut self, g: &Params, clip: f32, lr: f32) {
        let (b1, b2, eps) = (self.cfg.adam_beta1, self.cfg.adam_beta2, self.cfg.adam_eps);
        let t = (self.step + 1) as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let upd = |p: &mut Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, g: &Vec<f32>| {
            const CH: usize = 4096;
            p.par_chunks_mut(CH).zip(m.par_chunks_mut(CH)).zip(v.par_chunks_mut(CH)).zip(g.par_chunks(CH)).for_each(
                |(((p, m), v), g)| {
                    for i in 0..p.len() {
                        let gi = g[i] * clip;
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        p[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                    }
                },
            );
        };
        let (p, m, v) = (&mut self.params, &mut self.adam_m, &mut self.adam_v);
        upd(&mut p.enc, &mut m.enc, &mut v.enc, &g.enc);
        upd(&mut p.b_enc, &mut m.b_enc, &mut v.b_enc, &g.b_enc);
        upd(&mut p.dec, &mut m.dec, &mut v.dec, &g.dec);
        upd(&mut p.b_dec, &mut m.b_dec, &mut v.b_dec, &g.b_dec);
        if let (Some(p), Some(m), Some(v), Some(g)) = (&mut p.skip, &mut m.skip, &mut v.skip, &g.skip) {
            upd(p, m, v, g);
        }
    }

    /// Encoder input rows: x − b_dec for SAEs with apply_b_dec_to_input.
    /// What every training step computes first: the encoder input, decoder row
    /// norms, the skip connection's output, the mean target (for explained
    /// variance); and zeroed gradients.
    fn step_inputs(&self, x: &[f32], y: &[f32], n: usize, grads: &mut Params) -> StepInputs {
        let (d_in, d_out) = (self.d_in, self.d_out);
        let p = &self.params;
        let xin = self.encoder_input(x);
        let dec_norms: Vec<f32> =
            p.dec.chunks_exact(d_out).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
        let mut skip_out = vec![0f32; if p.skip.is_some() { n * d_out } else { 0 }];
        if let Some(ws) = &p.skip {
            linalg::gemm(MatRef::row_major(x, n, d_in), MatRef::row_major(ws, d_out, d_in).t(), &mut skip_out, 0.0);
        }
        let mut ybar = vec![0f64; d_out];
        for r in y.chunks_exact(d_out) {
            ybar.iter_mut().zip(r).for_each(|(a, b)| *a += *b as f64);
        }
        ybar.iter_mut().for_each(|v| *v /= n as f64);
        grads.enc.par_iter_mut().for_each(|v| *v = 0.0);
        grads.dec.par_iter_mut().for_each(|v| *v = 0.0);
        grads.b_enc.iter_mut().for_each(|v| *v = 0.0);
        grads.b_dec.iter_mut().for_each(|v| *v = 0.0);
        if let Some(gs) = &mut grads.skip {
            gs.iter_mut().for_each(|v| *v = 0.0);
        }
        StepInputs { xin, dec_norms, skip_out, ybar }
    }

    fn encoder_input(&self, x: &[f32]) -> Vec<f32> {
        let mut xin = x.to_vec();
        if self.cfg.apply_b_dec_to_input && !self.cfg.transcoder {
            let b = &self.params.b_dec;
            xin.par_chunks_mut(self.d_in).for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v -= b));
        }
        xin
    }

    /// Pre-activations of a block of rows `[rows, d_sae]`.
    fn pre_block(&self, xin: &[f32], rows: usize, pre: &mut Vec<f32>) {
        let (d_in, d_sae) = (self.d_in, self.d_sae);
        pre.resize(rows * d_sae, 0.0);
        linalg::gemm_serial(
            MatRef::row_major(xin, rows, d_in),
            MatRef::row_major(&self.params.enc, d_sae, d_in).t(),
            pre,
            0.0,
        );
        for r in pre.chunks_exact_mut(d_sae) {
            r.iter_mut().zip(&self.params.b_enc).for_each(|(v, b)| *v += b);
        }
    }

    /// Selects active latents (and AuxK latents) for every row.
    /// Returns (active: values f, aux: values pre).
    fn select(&self, xin: &[f32], n: usize, dead: &[bool], k_aux: usize) -> (Csr, Csr) {
        let (d_in, d_sae) = (self.d_in, self.d_sae);
        let arch = self.cfg.arch.clone();
        // BatchTopK keeps up to `cand` candidates per row in the first pass.
        let cand = match arch {
            TrainArch::BatchTopK { k, .. } => (4 * k).min(d_sae),
            _ => 0,
        };
        let dead_ids: Vec<u32> = (0..d_sae as u32).filter(|&j| dead[j as usize]).collect();
        let blocks: Vec<(Csr, Csr)> = xin
            .par_chunks(linalg::rows_per_task(n, d_sae) * d_in)
            .map_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(pre, sel, vals), xb| {
                    let rows = xb.len() / d_in;
                    self.pre_block(xb, rows, pre);
                    let mut act = Csr::new();
                    let mut aux = Csr::new();
                    for r in 0..rows {
                        let p = &pre[r * d_sae..(r + 1) * d_sae];
                        match arch {
                            TrainArch::Standard { .. } => {
                                for (j, &v) in p.iter().enumerate() {
                                    if v > 0.0 {
                                        act.idx.push(j as u32);
                                        act.val.push(v);
                                    }
                                }
                            }
                            TrainArch::TopK { k } => push_top(p, k, sel, &mut act),
                            TrainArch::BatchTopK { .. } => push_top(p, cand, sel, &mut act),
                            // Trained through `forward_backward_jump`; the
                            // active set is pre > θ.
                            TrainArch::JumpRelu { .. } => {
                                let thr = &self.params.b_enc[d_sae..];
                                for (j, (&v, &t)) in p.iter().zip(thr).enumerate() {
                                    if v > t {
                                        act.idx.push(j as u32);
                                        act.val.push(v);
                                    }
                                }
                            }
                        }
                        act.push_row();
                        if k_aux > 0 {
                            push_top_aux(p, k_aux, &dead_ids, vals, sel, &mut aux);
                        }
                        aux.push_row();
                    }
                    (act, aux)
                },
            )
            .collect();
        let mut act = Csr::new();
        let mut aux = Csr::new();
        for (a, x) in blocks {
            act.append(a);
            aux.append(x);
        }
        if let TrainArch::BatchTopK { k, .. } = arch {
            act = self.batch_select(xin, n, k, cand, act);
        }
        (act, aux)
    }

    /// Global top k·n of the batch from per-row candidate lists (each row's
    /// `cand` largest positive values). A row whose whole candidate list is
    /// above the provisional threshold may hold more: it is recomputed in
    /// full, and the threshold taken again over the completed lists (it can
    /// only rise, so the other lists stay complete).
    fn batch_select(&self, xin: &[f32], n: usize, k: usize, cand: usize, rowcand: Csr) -> Csr {
        let d_sae = self.d_sae;
        let total = k * n;
        let kth = |vals: &[f32]| -> f32 {
            if vals.len() <= total {
                return 0.0;
            }
            let mut all = vals.to_vec();
            let (_, t, _) = all.select_nth_unstable_by(total - 1, |a, b| b.total_cmp(a));
            *t
        };
        let tau0 = kth(&rowcand.val);
        let incomplete: Vec<usize> = (0..n)
            .filter(|&r| {
                let rg = rowcand.row(r);
                rg.len() == cand && cand < d_sae && rowcand.val[rg].iter().all(|&v| v >= tau0)
            })
            .collect();
        let lists = if incomplete.is_empty() {
            rowcand
        } else {
            let full: Vec<(Vec<u32>, Vec<f32>)> = incomplete
                .par_iter()
                .map(|&r| {
                    let mut pre = Vec::new();
                    self.pre_block(&xin[r * self.d_in..(r + 1) * self.d_in], 1, &mut pre);
                    let idx: Vec<u32> =
                        (0..d_sae as u32).filter(|&j| pre[j as usize] > 0.0 && pre[j as usize] >= tau0).collect();
                    let val = idx.iter().map(|&j| pre[j as usize]).collect();
                    (idx, val)
                })
                .collect();
            let mut out = Csr::new();
            let mut fi = 0;
            for r in 0..n {
                if fi < incomplete.len() && incomplete[fi] == r {
                    out.idx.extend_from_slice(&full[fi].0);
                    out.val.extend_from_slice(&full[fi].1);
                    fi += 1;
                } else {
                    let rg = rowcand.row(r);
                    out.idx.extend_from_slice(&rowcand.idx[rg.clone()]);
                    out.val.extend_from_slice(&rowcand.val[rg]);
                }
                out.push_row();
            }
            out
        };
        let tau = kth(&lists.val);
        let mut out = Csr::new();
        for r in 0..n {
            for i in lists.row(r) {
                if lists.val[i] > 0.0 && lists.val[i] >= tau {
                    out.idx.push(lists.idx[i]);
                    out.val.push(lists.val[i]);
                }
            }
            out.push_row();
        }
        out
    }

    /// Rows processed together in [`Self::forward_backward`]. TopK keeps
    /// k entries per row, so the whole batch is one chunk; ReLU selections
    /// (and JumpReLU's) can hold half of all latents per row early in
    /// training, so they are processed in chunks that bound the scratch memory.
    fn chunk_rows(&self, n: usize) -> usize {
        if let Some(c) = self.chunk_rows_override {
            return c.max(1);
        }
        let bounded = ((1usize << 24) / self.d_sae.max(1)).max(4 * ROW_BLOCK);
        match self.cfg.arch {
            TrainArch::Standard { .. } | TrainArch::JumpRelu { .. } => bounded.min(n),
            _ => n,
        }
    }

    /// Forward and backward over a (scaled) batch. Fills `grads`.
    /// `fixed_resid` replaces the residual seen by the AuxK term (gradient
    /// checks of its stop-gradient); `keep_selection` returns the selected
    /// (row, latent) sets.
    #[allow(clippy::too_many_arguments)]
    fn forward_backward(
        &self,
        x: &[f32],
        y: &[f32],
        n: usize,
        l1c: f32,
        dead: &[bool],
        grads: &mut Params,
        fixed_resid: Option<&[f32]>,
        keep_selection: bool,
    ) -> FbOut {
        if let Some(jc) = self.jump_cfg() {
            return self.forward_backward_jump(&jc, x, y, n, l1c, dead, grads, keep_selection);
        }
        let (d_in, d_out, d_sae) = (self.d_in, self.d_out, self.d_sae);
        let p = &self.params;
        let n_dead = dead.iter().filter(|&&d| d).count();
        let standard = matches!(self.cfg.arch, TrainArch::Standard { .. });
        let batch_topk = matches!(self.cfg.arch, TrainArch::BatchTopK { .. });
        let k_aux_cfg = self.cfg.aux_k.unwrap_or(d_out / 2).max(1);
        let use_aux = !standard && self.cfg.aux_k_coefficient > 0.0 && n_dead > 0;
        let k_aux = if use_aux { k_aux_cfg.min(n_dead) } else { 0 };
        let aux_scale =
            if use_aux { (n_dead as f32 / k_aux_cfg as f32).min(1.0) * self.cfg.aux_k_coefficient } else { 0.0 };

        let StepInputs { xin, dec_norms, skip_out, ybar } = self.step_inputs(x, y, n, grads);

        // BatchTopK selects over the whole batch at once.
        let global = batch_topk.then(|| self.select(&xin, n, dead, k_aux));
        let chunk = if batch_topk { n } else { self.chunk_rows(n) };
        let inv_n = 1.0 / n as f32;
        let mut out = FbOut::new(n, d_sae, d_out, keep_selection);
        let (mut mse, mut l1, mut auxl, mut var, mut nnz) = (0f64, 0f64, 0f64, 0f64, 0usize);
        // Per-latent activation sums of dense chunks, for the L1 decoder-norm gradient.
        let mut sum_f_dense = vec![0f32; if standard { d_sae } else { 0 }];
        let mut c0 = 0;
        while c0 < n {
            let c1 = (c0 + chunk).min(n);
            let m = c1 - c0;
            let (act, aux) = match &global {
                Some((a, x)) => (a.slice(c0, c1), x.slice(c0, c1)),
                None => self.select(&xin[c0 * d_in..c1 * d_in], m, dead, k_aux),
            };
            nnz += act.idx.len();
            for (&j, &v) in act.idx.iter().zip(&act.val) {
                out.fire_count[j as usize] += 1;
                out.min_pos = out.min_pos.min(v);
            }
            if let Some((ptr, idx)) = &mut out.selection {
                for r in 0..m {
                    idx.extend(act.idx[act.row(r)].iter());
                    idx.extend(aux.idx[aux.row(r)].iter());
                    ptr.push(idx.len());
                }
            }

            // ReLU early in training fires on a large share of latents; then
            // dense GEMMs beat the per-latent gather/scatter below (same maths).
            if standard && act.idx.len().saturating_mul(self.dense_above_one_in) > m * d_sae {
                let xc = &xin[c0 * d_in..c1 * d_in];
                let mut a_dense = vec![0f32; m * d_sae];
                for r in 0..m {
                    for i in act.row(r) {
                        let j = act.idx[i] as usize;
                        a_dense[r * d_sae + j] = act.val[i];
                        l1 += (act.val[i] * dec_norms[j]) as f64;
                    }
                }
                let g0 = out.g.len();
                out.g.resize(g0 + m * d_out, 0.0);
                let skip = (!skip_out.is_empty()).then(|| &skip_out[c0 * d_out..c1 * d_out]);
                let (se, sv) = dense_decode_error(
                    &a_dense,
                    m,
                    p,
                    d_sae,
                    d_out,
                    skip,
                    &y[c0 * d_out..c1 * d_out],
                    &ybar,
                    inv_n,
                    &mut out.g[g0..],
                );
                mse += se;
                var += sv;
                let g = &out.g[g0..];
                // dL/dpre on active entries (ReLU: exactly the positive ones), 0 elsewhere.
                let mut dpre = vec![0f32; m * d_sae];
                linalg::gemm(
                    MatRef::row_major(g, m, d_out),
                    MatRef::row_major(&p.dec, d_sae, d_out).t(),
                    &mut dpre,
                    0.0,
                );
                dpre.par_chunks_mut(d_sae).zip(a_dense.par_chunks(d_sae)).for_each(|(dr, ar)| {
                    for j in 0..d_sae {
                        dr[j] = if ar[j] > 0.0 { dr[j] + l1c * dec_norms[j] * inv_n } else { 0.0 };
                    }
                });
                linalg::gemm(
                    MatRef::row_major(&a_dense, m, d_sae).t(),
                    MatRef::row_major(g, m, d_out),
                    &mut grads.dec,
                    1.0,
                );
                linalg::gemm(
                    MatRef::row_major(&dpre, m, d_sae).t(),
                    MatRef::row_major(xc, m, d_in),
                    &mut grads.enc,
                    1.0,
                );
                for (dr, ar) in dpre.chunks_exact(d_sae).zip(a_dense.chunks_exact(d_sae)) {
                    grads.b_enc.iter_mut().zip(dr).for_each(|(b, v)| *b += v);
                    // Column sums of the activations feed the L1 decoder-norm term.
                    sum_f_dense.iter_mut().zip(ar).for_each(|(s, v)| *s += v);
                }
                for row in g.chunks_exact(d_out) {
                    linalg::axpy(1.0, row, &mut grads.b_dec);
                }
                if let Some(gs) = &mut grads.skip {
                    linalg::gemm(
                        MatRef::row_major(g, m, d_out).t(),
                        MatRef::row_major(&x[c0 * d_in..c1 * d_in], m, d_in),
                        gs,
                        1.0,
                    );
                }
                c0 = c1;
                continue;
            }

            // Per row: residual gradient g = 2e/n, AuxK gradient h, dL/dpre.
            let rows_out: Vec<RowOut> = (0..m.div_ceil(ROW_BLOCK))
                .into_par_iter()
                .map(|bi| {
                    let r0 = bi * ROW_BLOCK;
                    let r1 = (r0 + ROW_BLOCK).min(m);
                    let mut o = RowOut {
                        g: vec![0.0; (r1 - r0) * d_out],
                        h: vec![0.0; if use_aux { (r1 - r0) * d_out } else { 0 }],
                        dpre_act: Vec::with_capacity(act.ptr[r1] - act.ptr[r0]),
                        dpre_aux: Vec::with_capacity(aux.ptr[r1] - aux.ptr[r0]),
                        mse: 0.0,
                        l1: 0.0,
                        aux: 0.0,
                        var: 0.0,
                    };
                    let (mut yhat, mut a) = (vec![0f32; d_out], vec![0f32; d_out]);
                    for r in r0..r1 {
                        let gr = c0 + r;
                        let yr = &y[gr * d_out..(gr + 1) * d_out];
                        if standard {
                            for i in act.row(r) {
                                o.l1 += (act.val[i] * dec_norms[act.idx[i] as usize]) as f64;
                            }
                        }
                        let skip = (!skip_out.is_empty()).then(|| &skip_out[gr * d_out..(gr + 1) * d_out]);
                        let g = &mut o.g[(r - r0) * d_out..(r - r0 + 1) * d_out];
                        let (se, sv) = sparse_decode_error_row(p, &act, r, d_out, skip, yr, &ybar, inv_n, &mut yhat, g);
                        o.mse += se;
                        o.var += sv;
                        for i in act.row(r) {
                            let j = act.idx[i] as usize;
                            let mut dp = linalg::dot(&p.dec[j * d_out..(j + 1) * d_out], g);
                            if standard {
                                dp += l1c * dec_norms[j] * inv_n;
                            }
                            o.dpre_act.push(dp);
                        }
                        if use_aux {
                            a.iter_mut().for_each(|v| *v = 0.0);
                            for i in aux.row(r) {
                                let j = aux.idx[i] as usize;
                                linalg::axpy(aux.val[i], &p.dec[j * d_out..(j + 1) * d_out], &mut a);
                            }
                            // a − (y − ŷ) = a + e, with e treated as a constant.
                            let h = &mut o.h[(r - r0) * d_out..(r - r0 + 1) * d_out];
                            let mut ae = 0f64;
                            for d in 0..d_out {
                                let e = match fixed_resid {
                                    Some(fr) => fr[gr * d_out + d],
                                    None => yhat[d] - yr[d],
                                };
                                let v = a[d] + e;
                                ae += (v as f64) * (v as f64);
                                h[d] = 2.0 * aux_scale * v * inv_n;
                            }
                            o.aux += ae;
                            for i in aux.row(r) {
                                let j = aux.idx[i] as usize;
                                o.dpre_aux.push(linalg::dot(&p.dec[j * d_out..(j + 1) * d_out], h));
                            }
                        }
                    }
                    o
                })
                .collect();

            let g0 = out.g.len();
            let mut h = Vec::with_capacity(if use_aux { m * d_out } else { 0 });
            let mut dpre_act = Vec::with_capacity(act.idx.len());
            let mut dpre_aux = Vec::with_capacity(aux.idx.len());
            for o in rows_out {
                out.g.extend(o.g);
                h.extend(o.h);
                dpre_act.extend(o.dpre_act);
                dpre_aux.extend(o.dpre_aux);
                mse += o.mse;
                l1 += o.l1;
                auxl += o.aux;
                var += o.var;
            }
            let g = &out.g[g0..];
            let xc = &xin[c0 * d_in..c1 * d_in];

            // Transpose the (row, latent) entries to per-latent lists
            // (counting sort, stable in row order) so each latent's gradient
            // rows are accumulated by one task in a fixed order.
            let mut counts = vec![0usize; d_sae + 1];
            for &j in act.idx.iter().chain(&aux.idx) {
                counts[j as usize + 1] += 1;
            }
            for j in 0..d_sae {
                counts[j + 1] += counts[j];
            }
            let mut fill = counts.clone();
            let mut entries = vec![Entry::default(); act.idx.len() + aux.idx.len()];
            for r in 0..m {
                for i in act.row(r) {
                    let j = act.idx[i] as usize;
                    entries[fill[j]] = Entry { row: r as u32, aux: false, coef: act.val[i], dpre: dpre_act[i] };
                    fill[j] += 1;
                }
                for i in aux.row(r) {
                    let j = aux.idx[i] as usize;
                    entries[fill[j]] = Entry { row: r as u32, aux: true, coef: aux.val[i], dpre: dpre_aux[i] };
                    fill[j] += 1;
                }
            }
            grads
                .enc
                .par_chunks_mut(d_in)
                .zip(grads.dec.par_chunks_mut(d_out))
                .zip(grads.b_enc.par_iter_mut())
                .enumerate()
                .for_each(|(j, ((ge, gd), gb))| {
                    let ents = &entries[counts[j]..counts[j + 1]];
                    if ents.is_empty() {
                        return;
                    }
                    let mut sum_f = 0f32;
                    for e in ents {
                        let r = e.row as usize;
                        let src = if e.aux { &h[r * d_out..(r + 1) * d_out] } else { &g[r * d_out..(r + 1) * d_out] };
                        linalg::axpy(e.coef, src, gd);
                        linalg::axpy(e.dpre, &xc[r * d_in..(r + 1) * d_in], ge);
                        *gb += e.dpre;
                        if !e.aux {
                            sum_f += e.coef;
                        }
                    }
                    if standard && sum_f != 0.0 && dec_norms[j] > 0.0 {
                        let w = &p.dec[j * d_out..(j + 1) * d_out];
                        linalg::axpy(l1c * inv_n * sum_f / dec_norms[j], w, gd);
                    }
                });
            // Output side of b_dec: Σ_t g_t.
            for r in g.chunks_exact(d_out) {
                linalg::axpy(1.0, r, &mut grads.b_dec);
            }
            if let Some(gs) = &mut grads.skip {
                // dL/dW_skip += gᵀ · x  ([d_out, m] · [m, d_in])
                linalg::gemm(
                    MatRef::row_major(g, m, d_out).t(),
                    MatRef::row_major(&x[c0 * d_in..c1 * d_in], m, d_in),
                    gs,
                    1.0,
                );
            }
            c0 = c1;
        }
        for (j, &sum_f) in sum_f_dense.iter().enumerate() {
            if sum_f != 0.0 && dec_norms[j] > 0.0 {
                let w = &p.dec[j * d_out..(j + 1) * d_out];
                linalg::axpy(l1c * inv_n * sum_f / dec_norms[j], w, &mut grads.dec[j * d_out..(j + 1) * d_out]);
            }
        }
        // Input side of b_dec: −Σ_j (Σ_t dpre_tj) enc_j.
        if self.cfg.apply_b_dec_to_input && !self.cfg.transcoder {
            for j in 0..d_sae {
                let gb = grads.b_enc[j];
                if gb != 0.0 {
                    linalg::axpy(-gb, &p.enc[j * d_in..(j + 1) * d_in], &mut grads.b_dec);
                }
            }
        }
        let nf = n as f64;
        out.parts = LossParts {
            mse: mse / nf,
            l1: l1c as f64 * l1 / nf,
            auxk: aux_scale as f64 * auxl / nf,
            l0: nnz as f64 / nf,
            explained_variance: if var > 0.0 { 1.0 - mse / var } else { 0.0 },
        };
        out
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

    pub fn state(&self) -> TrainerState {
        TrainerState {
            cfg: self.cfg.clone(),
            d_in: self.d_in,
            d_out: self.d_out,
            step: self.step,
            tokens_seen: self.tokens_seen,
            params: self.params.clone(),
            adam_m: self.adam_m.clone(),
            adam_v: self.adam_v.clone(),
            tokens_since_fired: self.tokens_since_fired.clone(),
            fire_counts: self.fire_counts.clone(),
            batch_threshold: self.batch_threshold,
            scale_in: self.scale_in,
            scale_out: self.scale_out,
        }
    }

    pub fn restore(s: TrainerState) -> Result<Trainer> {
        let d_sae = s.cfg.d_sae;
        let (d_in, d_out) = (s.d_in, s.d_out);
        let b_enc_len = b_enc_len(&s.cfg.arch, d_sae);
        let shapes_ok = |p: &Params| {
            p.enc.len() == d_sae * d_in
                && p.b_enc.len() == b_enc_len
                && p.dec.len() == d_sae * d_out
                && p.b_dec.len() == d_out
                && p.skip.as_ref().map(Vec::len) == s.cfg.skip_connection.then_some(d_out * d_in)
        };
        if !(shapes_ok(&s.params) && shapes_ok(&s.adam_m) && shapes_ok(&s.adam_v))
            || s.tokens_since_fired.len() != d_sae
            || s.fire_counts.len() != d_sae
        {
            return Err(SaeError::Invalid(format!(
                "trainer state does not match its config (d_in {d_in}, d_sae {d_sae}, d_out {d_out})"
            )));
        }
        Ok(Trainer {
            d_in,
            d_out,
            d_sae,
            grads: s.params.zeros_like(),
            chunk_rows_override: None,
            dense_above_one_in: DENSE_ABOVE_ONE_IN,
            params: s.params,
            adam_m: s.adam_m,
            adam_v: s.adam_v,
            step: s.step,
            tokens_seen: s.tokens_seen,
            tokens_since_fired: s.tokens_since_fired,
            fire_counts: s.fire_counts,
            batch_threshold: s.batch_threshold,
            scale_in: s.scale_in,
            scale_out: s.scale_out,
            cfg: s.cfg,
        })
    }
}

/// Length of [`Params::b_enc`]: the bias, plus θ for JumpReLU.
fn b_enc_len(arch: &TrainArch, d_sae: usize) -> usize {
    match arch {
        TrainArch::JumpRelu { .. } => 2 * d_sae,
        _ => d_sae,
    }
}

fn grad_norm(g: &Params) -> f64 {
    let part = |v: &[f32]| -> f64 {
        let chunks: Vec<f64> = v.par_chunks(4096).map(|c| c.iter().map(|x| (*x as f64) * (*x as f64)).sum()).collect();
        chunks.iter().sum()
    };
    g.tensors().iter().map(|(_, v)| part(v)).sum::<f64>().sqrt()
}

/// Pushes the top `k` positive values of `p` (ascending index order).
fn push_top(p: &[f32], k: usize, sel: &mut Vec<u32>, out: &mut Csr) {
    topk_indices(p, k, sel);
    let start = out.idx.len();
    out.idx.extend(sel.iter().copied().filter(|&j| p[j as usize] > 0.0));
    out.idx[start..].sort_unstable();
    for i in start..out.idx.len() {
        out.val.push(p[out.idx[i] as usize]);
    }
}

/// Pushes the `k` largest pre-activations among the dead latents `dead_ids`
/// (values may be negative). `vals` and `sel` are scratch.
fn push_top_aux(p: &[f32], k: usize, dead_ids: &[u32], vals: &mut Vec<f32>, sel: &mut Vec<u32>, out: &mut Csr) {
    vals.clear();
    vals.extend(dead_ids.iter().map(|&j| p[j as usize]));
    topk_indices(vals, k, sel);
    let start = out.idx.len();
    out.idx.extend(sel.iter().map(|&i| dead_ids[i as usize]));
    out.idx[start..].sort_unstable();
    for i in start..out.idx.len() {
        out.val.push(p[out.idx[i] as usize]);
    }
}

impl TrainerState {
    /// Writes the state as one safetensors file (tensors + config JSON in the
    /// header metadata, with a format version).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t: Vec<(String, Out)> = Vec::new();
        let (d_in, d_out, d_sae) = (self.d_in, self.d_out, self.cfg.d_sae);
        let jump = matches!(self.cfg.arch, TrainArch::JumpRelu { .. });
        for (prefix, p) in [("param", &self.params), ("adam_m", &self.adam_m), ("adam_v", &self.adam_v)] {
            for (name, v) in p.tensors() {
                if name == "b_enc" && jump {
                    // JumpReLU: bias and threshold as separate tensors.
                    t.push((format!("{prefix}.b_enc"), Out::F32(vec![d_sae], v[..d_sae].to_vec())));
                    t.push((format!("{prefix}.threshold"), Out::F32(vec![d_sae], v[d_sae..].to_vec())));
                    continue;
                }
                let shape = match name {
                    "enc" => vec![d_sae, d_in],
                    "dec" => vec![d_sae, d_out],
                    "skip" => vec![d_out, d_in],
                    _ => vec![v.len()],
                };
                t.push((format!("{prefix}.{name}"), Out::F32(shape, v.clone())));
            }
        }
        t.push(("tokens_since_fired".into(), Out::U64(vec![d_sae], self.tokens_since_fired.clone())));
        t.push(("fire_counts".into(), Out::U64(vec![d_sae], self.fire_counts.clone())));
        t.push(("batch_threshold".into(), Out::F64(vec![1], vec![self.batch_threshold])));
        t.push(("counters".into(), Out::U64(vec![2], vec![self.step, self.tokens_seen])));
        t.push(("scales".into(), Out::F32(vec![2], vec![self.scale_in, self.scale_out])));
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".into(), "saepipe-trainer-state".into());
        meta.insert("version".into(), STATE_VERSION.into());
        meta.insert("config".into(), serde_json::to_string(&self.cfg).expect("config serialises"));
        meta.insert("d_in".into(), d_in.to_string());
        meta.insert("d_out".into(), d_out.to_string());
        st::write(path, t, Some(meta))
    }

    pub fn load(path: &Path) -> Result<TrainerState> {
        let f = StFile::open(path)?;
        let meta = f.metadata().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| SaeError::config(path, k, "missing from the safetensors header metadata"))
        };
        if field("format")? != "saepipe-trainer-state" {
            return Err(SaeError::config(path, "format", "not a saepipe trainer state"));
        }
        let v = field("version")?;
        if v != STATE_VERSION {
            return Err(SaeError::config(
                path,
                "version",
                format!("version {v} is not supported (expected {STATE_VERSION})"),
            ));
        }
        let cfg: TrainConfig =
            serde_json::from_str(&field("config")?).map_err(|e| SaeError::Json { path: path.into(), source: e })?;
        let parse =
            |k: &str| -> Result<usize> { field(k)?.parse().map_err(|_| SaeError::config(path, k, "not an integer")) };
        let (d_in, d_out, d_sae) = (parse("d_in")?, parse("d_out")?, cfg.d_sae);
        let jump = matches!(cfg.arch, TrainArch::JumpRelu { .. });
        let params = |prefix: &str| -> Result<Params> {
            let mut b_enc = f.f32(&format!("{prefix}.b_enc"), Some(&[d_sae]))?;
            if jump {
                b_enc.extend(f.f32(&format!("{prefix}.threshold"), Some(&[d_sae]))?);
            }
            Ok(Params {
                enc: f.f32(&format!("{prefix}.enc"), Some(&[d_sae, d_in]))?,
                b_enc,
                dec: f.f32(&format!("{prefix}.dec"), Some(&[d_sae, d_out]))?,
                b_dec: f.f32(&format!("{prefix}.b_dec"), Some(&[d_out]))?,
                skip: if cfg.skip_connection {
                    Some(f.f32(&format!("{prefix}.skip"), Some(&[d_out, d_in]))?)
                } else {
                    None
                },
            })
        };
        let counters = f.u64("counters")?;
        let scales = f.f32("scales", Some(&[2]))?;
        if counters.len() != 2 {
            return Err(SaeError::config(path, "counters", "expected 2 values"));
        }
        Ok(TrainerState {
            d_in,
            d_out,
            step: counters[0],
            tokens_seen: counters[1],
            params: params("param")?,
            adam_m: params("adam_m")?,
            adam_v: params("adam_v")?,
            tokens_since_fired: f.u64("tokens_since_fired")?,
            fire_counts: f.u64("fire_counts")?,
            batch_threshold: f.f64("batch_threshold")?.first().copied().unwrap_or(0.0),
            scale_in: scales[0],
            scale_out: scales[1],
            cfg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn randomize(t: &mut Trainer, seed: u64) {
        let mut s = seed;
        for v in t.params.enc.iter_mut().chain(t.params.dec.iter_mut()) {
            *v = lcg(&mut s) * 0.6;
        }
        for v in t.params.b_enc.iter_mut().chain(t.params.b_dec.iter_mut()) {
            *v = lcg(&mut s) * 0.3;
        }
        if let Some(sk) = &mut t.params.skip {
            sk.iter_mut().for_each(|v| *v = lcg(&mut s) * 0.3);
        }
    }

    /// Loss, gradients, selected (row, latent) sets and the residual e.
    /// With `fixed` the AuxK term uses that residual (its stop-gradient).
    fn eval(
        t: &mut Trainer,
        x: &[f32],
        y: Option<&[f32]>,
        n: usize,
        fixed: Option<&[f32]>,
    ) -> (LossParts, Params, Vec<usize>, Vec<u32>, Vec<f32>) {
        let (xs, ys) = t.prepare_batch(x, y, n).unwrap();
        let dead = t.dead_mask();
        let l1c = t.sparsity_coefficient_at(t.step);
        let mut grads = t.params.zeros_like();
        let out = t.forward_backward(&xs, ys.as_deref().unwrap_or(&xs), n, l1c, &dead, &mut grads, fixed, true);
        let (ptr, sel) = out.selection.unwrap();
        let e: Vec<f32> = out.g.iter().map(|v| v * n as f32 / 2.0).collect();
        (out.parts, grads, ptr, sel, e)
    }

    /// Central finite differences of the loss against the analytic gradient,
    /// for every parameter element. Elements whose perturbation changes the
    /// selected latents (a kink of ReLU/TopK) are skipped, and must be rare.
    fn check_grads(cfg: TrainConfig, d_in: usize, d_out: usize, dead: &[usize]) {
        check_grads_with(cfg, d_in, d_out, dead, false)
    }

    /// JumpReLU thresholds for the tests: positive, away from zero.
    fn set_thresholds(t: &mut Trainer, seed: u64) {
        let d_sae = t.d_sae;
        let mut s = seed;
        for v in &mut t.params.b_enc[d_sae..] {
            *v = 0.05 + 0.25 * lcg(&mut s).abs();
        }
    }

    /// [`check_grads`]; JumpReLU thresholds are set positive, and their
    /// (pseudo-)gradients are checked only with `check_threshold` (where
    /// they are true gradients: no entry in the kernel window).
    fn check_grads_with(cfg: TrainConfig, d_in: usize, d_out: usize, dead: &[usize], check_threshold: bool) {
        let n = 7;
        let mut s = 99u64;
        let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s) * 1.5).collect();
        let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s) * 1.5).collect();
        let yo = cfg.transcoder.then_some(y.as_slice());
        let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
        randomize(&mut t, 7);
        let jump = t.threshold().is_some();
        if jump {
            set_thresholds(&mut t, 17);
        }
        t.cfg.dead_after_tokens = 100;
        for &j in dead {
            t.tokens_since_fired[j] = 1000;
        }
        let (parts, g, ptr0, sel0, e0) = eval(&mut t, &x, yo, n, None);
        let (parts_api, g_api) = t.loss_and_grads(&x, yo, n).unwrap();
        assert_eq!((parts_api, &g_api), (parts, &g));
        assert!(parts.total() > 0.0);
        if !dead.is_empty() && t.cfg.aux_k_coefficient > 0.0 {
            assert!(parts.auxk > 0.0, "AuxK term should be active");
        }
        let eps = 3e-3f32;
        let names = ["enc", "b_enc", "dec", "b_dec", "skip"];
        let mut checked = 0;
        let mut bad = 0;
        let mut skipped = 0;
        for name in names {
            let len = match name {
                "enc" => t.params.enc.len(),
                "b_enc" => t.params.b_enc.len(),
                "dec" => t.params.dec.len(),
                "b_dec" => t.params.b_dec.len(),
                _ => t.params.skip.as_ref().map_or(0, Vec::len),
            };
            for i in 0..len {
                if jump && name == "b_enc" && i >= t.d_sae && !check_threshold {
                    continue;
                }
                let get = |t: &mut Trainer| -> *mut f32 {
                    match name {
                        "enc" => &mut t.params.enc[i],
                        "b_enc" => &mut t.params.b_enc[i],
                        "dec" => &mut t.params.dec[i],
                        "b_dec" => &mut t.params.b_dec[i],
                        _ => &mut t.params.skip.as_mut().unwrap()[i],
                    }
                };
                let orig = unsafe { *get(&mut t) };
                unsafe { *get(&mut t) = orig + eps };
                let (pp, _, ptrp, selp, _) = eval(&mut t, &x, yo, n, Some(&e0));
                unsafe { *get(&mut t) = orig - eps };
                let (pm, _, ptrm, selm, _) = eval(&mut t, &x, yo, n, Some(&e0));
                unsafe { *get(&mut t) = orig };
                if (&ptrp, &selp) != (&ptr0, &sel0) || (&ptrm, &selm) != (&ptr0, &sel0) {
                    skipped += 1;
                    continue;
                }
                let (lp, lm) = (pp.total(), pm.total());
                let fd = (lp - lm) / (2.0 * eps as f64);
                let an = match name {
                    "enc" => g.enc[i],
                    "b_enc" => g.b_enc[i],
                    "dec" => g.dec[i],
                    "b_dec" => g.b_dec[i],
                    _ => g.skip.as_ref().unwrap()[i],
                } as f64;
                if (fd - an).abs() > 2e-3 + 1e-2 * an.abs() {
                    eprintln!("{:?}: d loss / d {name}[{i}]: finite difference {fd}, analytic {an}", t.cfg.arch);
                    bad += 1;
                }
                checked += 1;
            }
        }
        assert_eq!(bad, 0, "{bad} of {checked} gradient elements disagree");
        assert!(checked > 100 && skipped * 10 < checked, "{checked} checked, {skipped} skipped at kinks");
    }

    #[test]
    fn gradients_standard_l1() {
        let cfg = TrainConfig {
            arch: TrainArch::Standard { l1_coefficient: 0.3, l1_warmup_steps: 0 },
            d_sae: 10,
            ..Default::default()
        };
        check_grads(cfg, 6, 6, &[]);
    }

    #[test]
    fn gradients_standard_without_b_dec_on_input() {
        let cfg = TrainConfig {
            arch: TrainArch::Standard { l1_coefficient: 0.1, l1_warmup_steps: 0 },
            apply_b_dec_to_input: false,
            d_sae: 10,
            ..Default::default()
        };
        check_grads(cfg, 6, 6, &[]);
    }

    #[test]
    fn gradients_topk_with_auxk() {
        let cfg = TrainConfig {
            arch: TrainArch::TopK { k: 3 },
            d_sae: 12,
            aux_k: Some(3),
            aux_k_coefficient: 0.5,
            ..Default::default()
        };
        check_grads(cfg, 6, 6, &[1, 4, 5, 8, 11]);
    }

    #[test]
    fn gradients_batchtopk_with_auxk() {
        let cfg = TrainConfig {
            arch: TrainArch::BatchTopK { k: 2, threshold_lr: 0.01 },
            d_sae: 12,
            aux_k_coefficient: 1.0,
            ..Default::default()
        };
        check_grads(cfg, 6, 6, &[0, 2, 3]);
    }

    #[test]
    fn gradients_skip_transcoder() {
        let cfg = TrainConfig {
            arch: TrainArch::TopK { k: 3 },
            d_sae: 10,
            transcoder: true,
            skip_connection: true,
            aux_k_coefficient: 0.3,
            ..Default::default()
        };
        check_grads(cfg, 6, 5, &[2, 7]);
    }

    #[test]
    fn gradients_relu_transcoder() {
        let cfg = TrainConfig {
            arch: TrainArch::Standard { l1_coefficient: 0.2, l1_warmup_steps: 0 },
            d_sae: 9,
            transcoder: true,
            ..Default::default()
        };
        check_grads(cfg, 5, 7, &[]);
    }

    /// JumpReLU with SAELens's defaults except the given changes.
    fn jr(
        l0_coefficient: f32,
        bandwidth: f32,
        mode: JumpReluSparsityLoss,
        pre_act: Option<f32>,
        ste_to_input: bool,
    ) -> TrainArch {
        let TrainArch::JumpRelu { l0_warmup_steps, initial_threshold, tanh_scale, .. } =
            TrainArch::jumprelu(l0_coefficient)
        else {
            unreachable!()
        };
        TrainArch::JumpRelu {
            l0_coefficient,
            l0_warmup_steps,
            bandwidth,
            initial_threshold,
            sparsity_loss_mode: mode,
            tanh_scale,
            target_l0: (mode == JumpReluSparsityLoss::Quadratic).then_some(2.0),
            pre_act_loss_coefficient: pre_act,
            ste_to_input,
        }
    }

    #[test]
    fn gradients_jumprelu_mse_part() {
        // Step-mode L0 is piecewise constant: away from mask flips the loss's
        // true gradient wrt W_enc, b_enc, W_dec, b_dec is the MSE's.
        let cfg = TrainConfig {
            arch: jr(0.7, 0.3, JumpReluSparsityLoss::Step, None, false),
            d_sae: 10,
            ..Default::default()
        };
        check_grads(cfg, 6, 6, &[]);
    }

    #[test]
    fn gradients_jumprelu_tanh_loss() {
        // tanh(a · f · ‖W_dec_j‖) is differentiable in f and W_dec.
        let cfg = TrainConfig {
            arch: jr(0.4, 0.05, JumpReluSparsityLoss::Tanh, None, false),
            d_sae: 10,
            apply_b_dec_to_input: false,
            ..Default::default()
        };
        check_grads(cfg, 6, 6, &[]);
    }

    #[test]
    fn gradients_jumprelu_pre_act_loss_including_threshold() {
        // With a kernel window too narrow to hold any entry, θ's gradient is
        // the pre-activation loss's true gradient.
        let cfg = TrainConfig {
            arch: jr(0.5, 1e-6, JumpReluSparsityLoss::Step, Some(0.6), false),
            d_sae: 10,
            ..Default::default()
        };
        check_grads_with(cfg, 6, 6, &[1, 4, 5, 8], true);
    }

    #[test]
    fn gradients_jumprelu_skip_transcoder() {
        let cfg = TrainConfig {
            arch: jr(0.3, 0.2, JumpReluSparsityLoss::Step, None, false),
            d_sae: 9,
            transcoder: true,
            skip_connection: true,
            ..Default::default()
        };
        check_grads(cfg, 6, 5, &[]);
    }

    /// SAELens 6.54's JumpReLU training loss and its autograd (the Step and
    /// JumpReLU autograd functions, `calculate_aux_loss`,
    /// `calculate_pre_act_loss`), written out densely in f64 from those
    /// formulas: returns (mse, sparsity term, pre-activation term), the
    /// gradients, and the number of entries inside the kernel window.
    fn naive_jumprelu(
        t: &Trainer,
        x: &[f32],
        y: &[f32],
        n: usize,
        coef: f64,
        dead: &[bool],
    ) -> ((f64, f64, f64), Vec<Vec<f64>>, usize) {
        let TrainArch::JumpRelu {
            bandwidth,
            sparsity_loss_mode: mode,
            tanh_scale,
            target_l0,
            pre_act_loss_coefficient,
            ste_to_input,
            ..
        } = t.cfg.arch
        else {
            panic!("not jumprelu")
        };
        let (d_in, d_out, d_sae) = (t.d_in, t.d_out, t.d_sae);
        let p = &t.params;
        let (bw, a, nf) = (bandwidth as f64, tanh_scale as f64, n as f64);
        let tl0 = target_l0.unwrap_or(1.0) as f64;
        let pc = pre_act_loss_coefficient.map(|c| c as f64);
        let apply = t.cfg.apply_b_dec_to_input && !t.cfg.transcoder;
        let w = |j: usize, d: usize| p.dec[j * d_out + d] as f64;
        let th = |j: usize| p.b_enc[d_sae + j] as f64;
        let norm: Vec<f64> = (0..d_sae).map(|j| (0..d_out).map(|d| w(j, d).powi(2)).sum::<f64>().sqrt()).collect();
        let xin = |r: usize, i: usize| x[r * d_in + i] as f64 - if apply { p.b_dec[i] as f64 } else { 0.0 };
        let mut pre = vec![0f64; n * d_sae];
        for r in 0..n {
            for j in 0..d_sae {
                pre[r * d_sae + j] =
                    p.b_enc[j] as f64 + (0..d_in).map(|i| xin(r, i) * p.enc[j * d_in + i] as f64).sum::<f64>();
            }
        }
        let f = |r: usize, j: usize| {
            let v = pre[r * d_sae + j];
            if v > th(j) { v } else { 0.0 }
        };
        let rect = |r: usize, j: usize| {
            let u = (pre[r * d_sae + j] - th(j)) / bw;
            if u > -0.5 && u < 0.5 { 1.0 } else { 0.0 }
        };
        let mut g = vec![0f64; n * d_out];
        let mut mse = 0.0;
        for r in 0..n {
            for d in 0..d_out {
                let mut yh = p.b_dec[d] as f64;
                for j in 0..d_sae {
                    yh += f(r, j) * w(j, d);
                }
                if let Some(sk) = &p.skip {
                    yh += (0..d_in).map(|i| sk[d * d_in + i] as f64 * x[r * d_in + i] as f64).sum::<f64>();
                }
                let e = yh - y[r * d_out + d] as f64;
                mse += e * e / nf;
                g[r * d_out + d] = 2.0 * e / nf;
            }
        }
        let mut g_enc = vec![0f64; d_sae * d_in];
        let mut g_benc = vec![0f64; 2 * d_sae];
        let mut g_dec = vec![0f64; d_sae * d_out];
        let mut g_bdec = vec![0f64; d_out];
        let mut g_skip = vec![0f64; if p.skip.is_some() { d_out * d_in } else { 0 }];
        let (mut sparsity, mut pre_loss, mut window) = (0.0, 0.0, 0);
        for r in 0..n {
            let l0 = (0..d_sae).filter(|&j| f(r, j) != 0.0).count() as f64;
            // grad_output of Step (the L0 count), per SAELens mode.
            let go_step = match mode {
                JumpReluSparsityLoss::Step => {
                    sparsity += coef * l0 / nf;
                    coef / nf
                }
                JumpReluSparsityLoss::Quadratic => {
                    sparsity += coef * 2.0 / tl0 * (l0 - tl0).powi(2) / nf;
                    coef / nf * 4.0 / tl0 * (l0 - tl0)
                }
                JumpReluSparsityLoss::Tanh => 0.0,
            };
            for j in 0..d_sae {
                let (fv, k, v) = (f(r, j), rect(r, j), pre[r * d_sae + j]);
                window += k as usize;
                // grad_output of JumpReLU (dL/df).
                let mut go_f: f64 = (0..d_out).map(|d| w(j, d) * g[r * d_out + d]).sum();
                if mode == JumpReluSparsityLoss::Tanh {
                    let tz = (a * fv * norm[j]).tanh();
                    sparsity += coef * tz / nf;
                    go_f += coef / nf * a * norm[j] * (1.0 - tz * tz);
                    if norm[j] > 0.0 {
                        for d in 0..d_out {
                            g_dec[j * d_out + d] += coef / nf * a * fv * (1.0 - tz * tz) * w(j, d) / norm[j];
                        }
                    }
                }
                // JumpReLU.backward and Step.backward.
                let ste_f = th(j) / bw * k * go_f;
                let ste_s = 1.0 / bw * k * go_step;
                let mut dpre = if v > th(j) { go_f } else { 0.0 };
                if ste_to_input {
                    dpre += ste_f + ste_s;
                }
                g_benc[d_sae + j] -= ste_f + ste_s;
                // calculate_pre_act_loss (dead latents).
                if let Some(pc) = pc {
                    if dead[j] && th(j) - v > 0.0 {
                        pre_loss += pc * (th(j) - v) * norm[j] / nf;
                        g_benc[d_sae + j] += pc / nf * norm[j];
                        dpre -= pc / nf * norm[j];
                        for d in 0..d_out {
                            g_dec[j * d_out + d] += pc / nf * (th(j) - v) * w(j, d) / norm[j];
                        }
                    }
                }
                for d in 0..d_out {
                    g_dec[j * d_out + d] += fv * g[r * d_out + d];
                }
                for i in 0..d_in {
                    g_enc[j * d_in + i] += dpre * xin(r, i);
                    if apply {
                        g_bdec[i] -= dpre * p.enc[j * d_in + i] as f64;
                    }
                }
                g_benc[j] += dpre;
            }
            for d in 0..d_out {
                g_bdec[d] += g[r * d_out + d];
                for i in 0..g_skip.len() / d_out {
                    g_skip[d * d_in + i] += g[r * d_out + d] * x[r * d_in + i] as f64;
                }
            }
        }
        let mut grads = vec![g_enc, g_benc, g_dec, g_bdec];
        if p.skip.is_some() {
            grads.push(g_skip);
        }
        ((mse, sparsity, pre_loss), grads, window)
    }

    #[test]
    fn jumprelu_pseudo_gradients_follow_saelens_formulas() {
        use JumpReluSparsityLoss::*;
        let cases = [
            (jr(0.7, 0.3, Step, None, false), false),
            (jr(0.3, 0.25, Tanh, None, false), false),
            (jr(0.5, 0.3, Quadratic, None, true), false),
            (jr(0.4, 0.3, Step, Some(0.5), true), false),
            (jr(0.6, 0.3, Tanh, Some(0.2), false), true),
            (jr(0.5, 0.4, Step, None, false), true),
        ];
        for (arch, skip) in cases {
            let (d_in, d_out, d_sae, n) = (6, if skip { 5 } else { 6 }, 12, 9);
            let cfg = TrainConfig {
                arch: arch.clone(),
                d_sae,
                transcoder: skip,
                skip_connection: skip,
                ..Default::default()
            };
            let mut s = 21u64;
            let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s) * 1.5).collect();
            let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s) * 1.5).collect();
            let yo = skip.then_some(y.as_slice());
            let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
            randomize(&mut t, 8);
            set_thresholds(&mut t, 9);
            t.cfg.dead_after_tokens = 100;
            for j in [0, 3, 7, 10] {
                t.tokens_since_fired[j] = 1000;
            }
            let dead = t.dead_mask();
            let coef = t.sparsity_coefficient_at(t.step) as f64;
            let yref = if skip { &y } else { &x };
            let ((mse, sp, pl), want, window) = naive_jumprelu(&t, &x, yref, n, coef, &dead);
            assert!(window > 5, "{arch:?}: only {window} entries in the kernel window");
            for dense in [false, true] {
                t.dense_above_one_in = if dense { usize::MAX } else { 0 };
                let (parts, got) = t.loss_and_grads(&x, yo, n).unwrap();
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 + 1e-4 * b.abs();
                assert!(
                    close(parts.mse, mse) && close(parts.l1, sp) && close(parts.auxk, pl),
                    "{arch:?} dense {dense}: losses {parts:?} vs ({mse}, {sp}, {pl})"
                );
                for ((name, a), b) in got.tensors().into_iter().zip(&want) {
                    assert_eq!(a.len(), b.len(), "{name}");
                    for (i, (u, v)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (*u as f64 - v).abs() <= 1e-5 + 1e-4 * v.abs(),
                            "{arch:?} dense {dense}: d/d {name}[{i}]: {u} vs SAELens formula {v}"
                        );
                    }
                }
                // The threshold gradient is non-trivial.
                assert!(got.b_enc[d_sae..].iter().any(|v| v.abs() > 1e-3), "{arch:?}");
            }
        }
    }

    #[test]
    fn jumprelu_gradients_match_saelens_autograd() {
        // tests/fixtures/jumprelu_grads: SAELens 6.54's JumpReLUTrainingSAE
        // training_forward_pass + backward on small random examples.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jumprelu_grads/grads.safetensors");
        let f = StFile::open(&path).unwrap();
        let meta: serde_json::Value = serde_json::from_str(&f.metadata().unwrap()["cases"]).unwrap();
        let cases = meta["cases"].as_object().unwrap();
        assert_eq!(cases.len(), 5);
        for (name, c) in cases {
            let k = &c["config"];
            let mode: JumpReluSparsityLoss = serde_json::from_value(k["jumprelu_sparsity_loss_mode"].clone()).unwrap();
            let get = |t: &str| f.f32(&format!("{name}.{t}"), None).unwrap();
            let x = get("x");
            let (d_sae, d_in) = (get("b_enc").len(), get("b_dec").len());
            let n = x.len() / d_in;
            let cfg = TrainConfig {
                arch: TrainArch::JumpRelu {
                    l0_coefficient: c["coefficient"].as_f64().unwrap() as f32,
                    l0_warmup_steps: 0,
                    bandwidth: k["jumprelu_bandwidth"].as_f64().unwrap() as f32,
                    initial_threshold: k["jumprelu_init_threshold"].as_f64().unwrap() as f32,
                    sparsity_loss_mode: mode,
                    tanh_scale: k["jumprelu_tanh_scale"].as_f64().unwrap() as f32,
                    target_l0: k["target_l0"].as_f64().map(|v| v as f32),
                    pre_act_loss_coefficient: k["pre_act_loss_coefficient"].as_f64().map(|v| v as f32),
                    ste_to_input: k["jumprelu_ste_to_input"].as_bool().unwrap(),
                },
                d_sae,
                apply_b_dec_to_input: c["apply_b_dec_to_input"].as_bool().unwrap(),
                dead_after_tokens: 10,
                ..Default::default()
            };
            let mut t = Trainer::new(cfg, d_in, d_in, &x, None).unwrap();
            let transpose =
                |w: &[f32]| -> Vec<f32> { (0..d_sae * d_in).map(|ji| w[(ji % d_in) * d_sae + ji / d_in]).collect() };
            t.params.enc = transpose(&get("W_enc"));
            t.params.b_enc = [get("b_enc"), get("threshold")].concat();
            t.params.dec = get("W_dec");
            t.params.b_dec = get("b_dec");
            for (j, &d) in get("dead").iter().enumerate() {
                t.tokens_since_fired[j] = if d > 0.5 { 100 } else { 0 };
            }
            let want = [
                ("enc", transpose(&get("grad.W_enc"))),
                ("b_enc", [get("grad.b_enc"), get("grad.threshold")].concat()),
                ("dec", get("grad.W_dec")),
                ("b_dec", get("grad.b_dec")),
            ];
            let losses = &c["losses"];
            let loss = |k: &str| losses[k].as_f64().unwrap_or(0.0);
            for dense in [false, true] {
                t.dense_above_one_in = if dense { usize::MAX } else { 0 };
                let (parts, got) = t.loss_and_grads(&x, None, n).unwrap();
                for (ours, theirs) in
                    [(parts.mse, loss("mse_loss")), (parts.l1, loss("l0_loss")), (parts.auxk, loss("pre_act_loss"))]
                {
                    assert!(
                        (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0),
                        "{name}: loss parts {parts:?} vs SAELens {losses}"
                    );
                }
                for ((tn, a), (wn, b)) in got.tensors().into_iter().zip(&want) {
                    assert_eq!(tn, *wn);
                    for (i, (u, v)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (u - v).abs() <= 2e-5 + 1e-4 * v.abs(),
                            "{name} dense {dense}: d/d {tn}[{i}]: {u} vs SAELens {v}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn jumprelu_chunking_gives_the_same_gradients() {
        let cfg = TrainConfig {
            arch: jr(0.5, 0.3, JumpReluSparsityLoss::Tanh, Some(0.3), true),
            d_sae: 10,
            ..Default::default()
        };
        let (d, n) = (6, 11);
        let mut s = 3u64;
        let x: Vec<f32> = (0..n * d).map(|_| lcg(&mut s)).collect();
        let mut t = Trainer::new(cfg, d, d, &x, None).unwrap();
        randomize(&mut t, 5);
        set_thresholds(&mut t, 6);
        t.cfg.dead_after_tokens = 10;
        t.tokens_since_fired[3] = 100;
        assert_chunking_invariant(&mut t, &x, None, n);
    }

    #[test]
    fn jumprelu_l0_coefficient_warms_up_like_saelens() {
        let arch = match TrainArch::jumprelu(2.0) {
            TrainArch::JumpRelu { l0_warmup_steps: _, .. } => {
                let mut a = TrainArch::jumprelu(2.0);
                if let TrainArch::JumpRelu { l0_warmup_steps, .. } = &mut a {
                    *l0_warmup_steps = 4;
                }
                a
            }
            _ => unreachable!(),
        };
        let cfg = TrainConfig { arch, d_sae: 4, ..Default::default() };
        let t = Trainer::new(cfg, 2, 2, &[1.0, 2.0], None).unwrap();
        // SAELens CoefficientScheduler: 0, 0.5, 1, 1.5, then 2.
        let got: Vec<f32> = (0..6).map(|s| t.sparsity_coefficient_at(s)).collect();
        assert_eq!(got, [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]);
        assert_eq!(t.threshold(), Some(&[0.01f32; 4][..]));
        assert_eq!(t.params.b_enc[..4], [0.0; 4]);
    }

    #[test]
    fn jumprelu_config_is_validated() {
        let base = TrainConfig { d_sae: 8, ..Default::default() };
        let x = vec![0.5f32; 8];
        let err = |arch: TrainArch| {
            Trainer::new(TrainConfig { arch, ..base.clone() }, 4, 4, &x, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        use JumpReluSparsityLoss::*;
        assert!(err(jr(1.0, 0.0, Step, None, false)).contains("bandwidth"));
        assert!(err(jr(-1.0, 0.05, Step, None, false)).contains("l0_coefficient"));
        assert!(err(jr(1.0, 0.05, Step, Some(f32::NAN), false)).contains("pre_act_loss_coefficient"));
        let mut q = jr(1.0, 0.05, Quadratic, None, false);
        if let TrainArch::JumpRelu { target_l0, .. } = &mut q {
            *target_l0 = None;
        }
        assert!(err(q.clone()).contains("needs target_l0"));
        if let TrainArch::JumpRelu { target_l0, .. } = &mut q {
            *target_l0 = Some(9.0);
        }
        assert!(err(q).contains("target_l0 = 9"));
        let mut it = TrainArch::jumprelu(1.0);
        if let TrainArch::JumpRelu { initial_threshold, .. } = &mut it {
            *initial_threshold = -0.1;
        }
        assert!(err(it).contains("initial_threshold"));
        assert_eq!(err(TrainArch::jumprelu(1.0)), "");
    }

    #[test]
    fn jumprelu_config_defaults_deserialise() {
        let a: TrainArch = serde_json::from_str(r#"{"kind": "jump_relu", "l0_coefficient": 1.0}"#).unwrap();
        assert_eq!(a, TrainArch::jumprelu(1.0));
        let back: TrainArch = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
        // Configs written before JumpReLU existed still read.
        let old: TrainConfig =
            serde_json::from_str(r#"{"arch": {"kind": "standard", "l1_coefficient": 5.0}, "d_sae": 16}"#).unwrap();
        assert!(matches!(old.arch, TrainArch::Standard { .. }));
    }

    #[test]
    fn batch_topk_selection_is_exact_when_rows_are_unbalanced() {
        let (d, d_sae, n, k) = (8, 20, 10, 1);
        let mut s = 5u64;
        // The last row is scaled up so it holds far more than its candidate
        // share (4k = 4) of the batch's top k·n.
        let mut x: Vec<f32> = (0..n * d).map(|_| lcg(&mut s)).collect();
        x[(n - 1) * d..].iter_mut().for_each(|v| *v *= 100.0);
        let cfg = TrainConfig {
            arch: TrainArch::BatchTopK { k, threshold_lr: 0.01 },
            d_sae,
            b_dec_init: BDecInit::Zeros,
            ..Default::default()
        };
        let mut t = Trainer::new(cfg, d, d, &x, None).unwrap();
        randomize(&mut t, 3);
        let xin = t.encoder_input(&x);
        let (act, _) = t.select(&xin, n, &vec![false; d_sae], 0);
        let mut pre = Vec::new();
        t.pre_block(&xin, n, &mut pre);
        let mut all: Vec<(f32, usize)> =
            pre.iter().copied().enumerate().filter(|(_, v)| *v > 0.0).map(|(i, v)| (v, i)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut want: Vec<usize> = all[..k * n].iter().map(|p| p.1).collect();
        want.sort();
        let mut got: Vec<usize> = (0..n)
            .flat_map(|r| act.row(r).map(move |i| (r, i)))
            .map(|(r, i)| r * d_sae + act.idx[i] as usize)
            .collect();
        got.sort();
        assert_eq!(got, want);
        let top_row_count = act.row(n - 1).len();
        assert!(top_row_count > 4, "the test must exercise the recomputation path ({top_row_count})");
    }

    /// Losses and gradients do not depend on how rows are chunked (3-row chunks
    /// against the default).
    fn assert_chunking_invariant(t: &mut Trainer, x: &[f32], y: Option<&[f32]>, n: usize) {
        let (p1, g1) = t.loss_and_grads(x, y, n).unwrap();
        t.chunk_rows_override = Some(3);
        let (p2, g2) = t.loss_and_grads(x, y, n).unwrap();
        assert!((p1.total() - p2.total()).abs() < 1e-9 * p1.total().abs().max(1.0));
        assert_eq!(p1.l0, p2.l0);
        for ((name, a), (_, b)) in g1.tensors().into_iter().zip(g2.tensors()) {
            for (i, (u, v)) in a.iter().zip(b).enumerate() {
                assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{name}[{i}]: {u} vs {v}");
            }
        }
    }

    #[test]
    fn row_chunking_gives_the_same_gradients() {
        for cfg in [
            TrainConfig {
                arch: TrainArch::Standard { l1_coefficient: 0.3, l1_warmup_steps: 0 },
                d_sae: 10,
                ..Default::default()
            },
            TrainConfig {
                arch: TrainArch::TopK { k: 3 },
                d_sae: 10,
                transcoder: true,
                skip_connection: true,
                aux_k_coefficient: 0.5,
                ..Default::default()
            },
        ] {
            let (d_in, d_out, n) = (6, if cfg.transcoder { 5 } else { 6 }, 11);
            let mut s = 3u64;
            let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s)).collect();
            let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s)).collect();
            let yo = cfg.transcoder.then_some(y.as_slice());
            let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
            randomize(&mut t, 5);
            t.cfg.dead_after_tokens = 10;
            t.tokens_since_fired[3] = 100;
            assert_chunking_invariant(&mut t, &x, yo, n);
        }
    }

    #[test]
    fn dense_and_sparse_relu_paths_agree() {
        for skip in [false, true] {
            let cfg = TrainConfig {
                arch: TrainArch::Standard { l1_coefficient: 0.3, l1_warmup_steps: 0 },
                d_sae: 24,
                transcoder: skip,
                skip_connection: skip,
                ..Default::default()
            };
            let (d_in, d_out, n) = (6, if skip { 5 } else { 6 }, 13);
            let mut s = 9u64;
            let x: Vec<f32> = (0..n * d_in).map(|_| lcg(&mut s)).collect();
            let y: Vec<f32> = (0..n * d_out).map(|_| lcg(&mut s)).collect();
            let yo = skip.then_some(y.as_slice());
            let mut t = Trainer::new(cfg, d_in, d_out, &x, yo).unwrap();
            randomize(&mut t, 4);
            t.dense_above_one_in = usize::MAX; // every chunk dense
            let (p1, g1) = t.loss_and_grads(&x, yo, n).unwrap();
            t.dense_above_one_in = 0; // every chunk sparse
            let (p2, g2) = t.loss_and_grads(&x, yo, n).unwrap();
            assert!(p1.l0 > 1.0, "ReLU should fire on several latents");
            assert!((p1.total() - p2.total()).abs() < 1e-6 * p1.total().abs().max(1.0), "{p1:?} vs {p2:?}");
            for ((name, a), (_, b)) in g1.tensors().into_iter().zip(g2.tensors()) {
                for (i, (u, v)) in a.iter().zip(b).enumerate() {
                    assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{name}[{i}]: dense {u} vs sparse {v}");
                }
            }
        }
    }

    #[test]
    fn geometric_median_resists_outliers() {
        // Nine points around (1, 1) and one far outlier.
        let mut y = Vec::new();
        for i in 0..9 {
            y.extend([1.0 + 0.01 * i as f32, 1.0 - 0.01 * i as f32]);
        }
        y.extend([100.0, -100.0]);
        let m = geometric_median(&y, 2);
        assert!((m[0] - 1.04).abs() < 0.1 && (m[1] - 0.96).abs() < 0.1, "{m:?}");
        let cfg = TrainConfig {
            arch: TrainArch::TopK { k: 1 },
            d_sae: 4,
            b_dec_init: BDecInit::GeometricMedian,
            ..Default::default()
        };
        let t = Trainer::new(cfg.clone(), 2, 2, &y, None).unwrap();
        assert_eq!(t.params.b_dec, m);
        let t = Trainer::new(TrainConfig { b_dec_init: BDecInit::Mean, ..cfg }, 2, 2, &y, None).unwrap();
        assert!(t.params.b_dec[0] > 10.0);
    }

    #[test]
    fn l1_coefficient_warms_up_linearly() {
        let cfg = TrainConfig {
            arch: TrainArch::Standard { l1_coefficient: 2.0, l1_warmup_steps: 4 },
            d_sae: 4,
            ..Default::default()
        };
        let t = Trainer::new(cfg, 2, 2, &[1.0, 2.0], None).unwrap();
        assert_eq!(t.sparsity_coefficient_at(0), 0.5);
        assert_eq!(t.sparsity_coefficient_at(3), 2.0);
        assert_eq!(t.sparsity_coefficient_at(100), 2.0);
    }

    #[test]
    fn lr_schedule_warmup_and_decay() {
        let mut x = vec![0.5f32; 8];
        x[0] = 1.0;
        let cfg = TrainConfig {
            arch: TrainArch::TopK { k: 2 },
            d_sae: 4,
            lr: 1.0,
            lr_warmup_steps: 4,
            lr_decay: LrDecay::Linear,
            lr_decay_steps: Some(10),
            total_steps: 20,
            lr_end_factor: 0.1,
            ..Default::default()
        };
        let t = Trainer::new(cfg.clone(), 4, 4, &x, None).unwrap();
        assert_eq!(t.lr_at(0), 0.25);
        assert_eq!(t.lr_at(3), 1.0);
        assert_eq!(t.lr_at(9), 1.0);
        assert!((t.lr_at(15) - 0.55).abs() < 1e-6);
        assert!((t.lr_at(25) - 0.1).abs() < 1e-6);
        let t = Trainer::new(TrainConfig { lr_decay: LrDecay::Cosine, lr_decay_steps: None, ..cfg }, 4, 4, &x, None)
            .unwrap();
        // Cosine from the end of warm-up (step 4) to step 20: halfway at 12.
        assert!((t.lr_at(12) - 0.55).abs() < 1e-6);
        assert!(t.lr_at(5) > t.lr_at(12) && t.lr_at(12) > t.lr_at(19));
    }
}
