//! saepipe-eval: sparsity–faithfulness metrics of SAEs and transcoders spliced
//! into a language model, with SAELens `run_evals` definitions.
//!
//! [`evaluate`] runs each batch of tokens once through the clean model,
//! capturing every hook the coders read or write and the residual stream where
//! their spliced runs start; then, per replaced hook, one zero-ablation run and,
//! per coder, one spliced run, each continuing from that residual
//! ([`saepipe_model::Model::run_from`]) so the layers below a hook run once for
//! the whole sweep.

#![warn(missing_docs)]
// `is_multiple_of` is newer than the workspace's rust-version.
#![allow(clippy::manual_is_multiple_of)]

mod downstream;
mod error;
mod plan;
mod recon;

pub use downstream::DownstreamMetrics;
pub use error::{EvalError, Result};
use plan::{Site, Start};
pub use recon::{FeatureStats, ReconMetrics};

use downstream::{Downstream, Mean};
use recon::Recon;
use saepipe_model::{HookFn, RunOutput, RunRequest, Runner};
use saepipe_sae::{SparseActs, SparseCoder};
use std::collections::HashMap;
use std::time::Instant;

/// A coder's encode + decode computed somewhere other than the CPU coder
/// (e.g. a GPU copy); must return what [`SparseCoder::forward`] returns.
pub trait CoderForward {
    /// Where it runs, for logs.
    fn device(&self) -> String;
    /// Encodes and decodes `n` rows of `x` (`n × d_in`, row-major): the latents
    /// and the `n × d_out` reconstruction; `Err` carries a message for the user.
    fn forward(&self, x: &[f32], n: usize) -> std::result::Result<(SparseActs, Vec<f32>), String>;
}

/// A coder and the name it is reported under.
pub struct NamedCoder {
    /// Name in reports and errors (unique within one evaluation by convention).
    pub label: String,
    /// The coder; its metadata says which hooks it reads and writes.
    pub coder: SparseCoder,
    /// Runs the coder's forward instead of the CPU coder when set.
    pub on_device: Option<Box<dyn CoderForward>>,
}

impl NamedCoder {
    /// A coder evaluated on the CPU.
    pub fn new(label: impl Into<String>, coder: SparseCoder) -> NamedCoder {
        NamedCoder { label: label.into(), coder, on_device: None }
    }

    fn forward(&self, x: &[f32], n: usize) -> Result<(SparseActs, Vec<f32>)> {
        match &self.on_device {
            Some(dev) => dev.forward(x, n).map_err(|message| EvalError::Setup {
                coder: self.label.clone(),
                message: format!("{} forward: {message}", dev.device()),
            }),
            None => self.coder.forward(x, n).map_err(|source| EvalError::Coder { coder: self.label.clone(), source }),
        }
    }
}

/// Settings of [`evaluate`].
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Contexts per forward pass; per-batch metrics (`relative_reconstruction_bias`,
    /// `explained_variance_legacy`) depend on it, as in SAELens.
    pub batch_size: usize,
    /// Token ids left out of every metric (SAELens `exclude_special_tokens`).
    pub exclude_tokens: Vec<u32>,
    /// Features firing on more than this fraction of tokens count as dense.
    pub dense_threshold: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { batch_size: 8, exclude_tokens: Vec::new(), dense_threshold: 0.1 }
    }
}

/// The metrics of one coder (docs/evaluate.md defines each).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CoderReport {
    /// The coder's [`NamedCoder::label`].
    pub label: String,
    /// `sae` or `transcoder`.
    pub kind: &'static str,
    /// Architecture name, e.g. `standard`, `topk`, `jumprelu_transcoder`.
    pub architecture: String,
    /// Hook the coder reads.
    pub hook_in: String,
    /// Hook its output replaces (the same as `hook_in` for an SAE).
    pub hook_out: String,
    /// Number of latents.
    pub d_sae: usize,
    /// Reconstruction and sparsity.
    pub recon: ReconMetrics,
    /// Effect on the model's loss when spliced in.
    pub downstream: DownstreamMetrics,
    /// Latents that never fired on a counted token.
    pub dead_features: u64,
    /// Latents firing on more than [`EvalOptions::dense_threshold`] of the tokens.
    pub dense_features: u64,
    /// Per-latent statistics (not serialized with the report).
    #[serde(skip)]
    pub features: FeatureStats,
}

/// Wall-clock seconds spent in each part of an evaluation.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timing {
    /// Clean runs of the model (with captures).
    pub clean_s: f64,
    /// Runs with a replaced hook zeroed.
    pub zero_ablation_s: f64,
    /// Encoding and decoding.
    pub coders_s: f64,
    /// Runs with a coder's output spliced in.
    pub spliced_s: f64,
    /// The whole evaluation.
    pub total_s: f64,
}

/// The result of [`evaluate`].
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// One report per coder, in the order given.
    pub coders: Vec<CoderReport>,
    /// Where the time went.
    pub timing: Timing,
    /// Tokens evaluated (special tokens included).
    pub n_tokens: usize,
}

/// Replaces a hook's value with `values`.
fn write_hook(values: &[f32]) -> HookFn<'_> {
    Box::new(move |t: &mut [f32], _| t.copy_from_slice(values))
}

fn zero_hook<'a>() -> HookFn<'a> {
    Box::new(|t: &mut [f32], _| t.fill(0.0))
}

/// Runs the model from a site's start with `hook` replaced, for loss and logits.
fn spliced_run(
    model: &dyn Runner,
    site: &Site,
    clean: &RunOutput,
    tokens: &[u32],
    nb: usize,
    ctx: usize,
    hook: HookFn,
) -> Result<RunOutput> {
    let mut req = RunRequest { want_logits: true, want_loss: true, ..Default::default() };
    req.replace.insert(site.hook_out.clone(), hook);
    Ok(match &site.start {
        Start::Tokens => model.run(tokens, nb, ctx, &mut req)?,
        Start::Layer { layer, resid } => {
            model.run_from(clean.captured[resid].1.clone(), *layer, tokens, nb, ctx, &mut req)?
        }
    })
}

/// Evaluates `coders` on `tokens` (whole contexts of `ctx` tokens, row-major).
/// `on_batch` is called with the number of tokens done after each batch.
pub fn evaluate(
    model: &dyn Runner,
    tokens: &[u32],
    ctx: usize,
    coders: &[NamedCoder],
    opts: &EvalOptions,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Evaluation> {
    evaluate_until(model, tokens, ctx, coders, opts, &mut |done| {
        on_batch(done);
        std::ops::ControlFlow::Continue(())
    })
}

/// [`evaluate`], stopping with [`EvalError::Stopped`] after any batch where
/// `on_batch` returns `Break` (a user's Ctrl-C).
pub fn evaluate_until(
    model: &dyn Runner,
    tokens: &[u32],
    ctx: usize,
    coders: &[NamedCoder],
    opts: &EvalOptions,
    on_batch: &mut dyn FnMut(usize) -> std::ops::ControlFlow<()>,
) -> Result<Evaluation> {
    if ctx == 0 || tokens.is_empty() || tokens.len() % ctx != 0 {
        return Err(EvalError::Input(format!("{} tokens are not whole contexts of {ctx}", tokens.len())));
    }
    if coders.is_empty() {
        return Err(EvalError::Input("no coders to evaluate".into()));
    }
    let plan = plan::plan(model, coders)?;
    let vocab = model.config().d_vocab;
    let started = Instant::now();
    let mut timing = Timing::default();
    let mut recon: Vec<Recon> = coders.iter().map(|c| Recon::new(c.coder.d_out, c.coder.d_sae)).collect();
    let mut down = vec![Downstream::default(); coders.len()];
    let batch = opts.batch_size.max(1);
    for (bi, chunk) in tokens.chunks(batch * ctx).enumerate() {
        let nb = chunk.len() / ctx;
        let n = nb * ctx;
        let keep: Vec<bool> = chunk.iter().map(|t| !opts.exclude_tokens.contains(t)).collect();

        let t0 = Instant::now();
        let mut req = RunRequest {
            capture: plan.capture.iter().cloned().collect(),
            want_logits: true,
            want_loss: true,
            ..Default::default()
        };
        let clean = model.run(chunk, nb, ctx, &mut req)?;
        let clean_logp = downstream::log_softmax(clean.logits.as_deref().unwrap_or_default(), vocab);
        let ce_clean = downstream::ce(clean.loss_per_token.as_deref().unwrap_or_default(), &keep, ctx);
        timing.clean_s += t0.elapsed().as_secs_f64();

        // Zero ablation depends only on the replaced hook: once per site.
        let t0 = Instant::now();
        let mut zero: HashMap<usize, (Mean, Mean)> = HashMap::new();
        for (si, site) in plan.sites.iter().enumerate() {
            let out = spliced_run(model, site, &clean, chunk, nb, ctx, zero_hook())?;
            let ce = downstream::ce(out.loss_per_token.as_deref().unwrap_or_default(), &keep, ctx);
            let kl = downstream::kl(&clean_logp, out.logits.as_deref().unwrap_or_default(), vocab, &keep);
            zero.insert(si, (ce, kl));
        }
        timing.zero_ablation_s += t0.elapsed().as_secs_f64();

        for (ci, (nc, place)) in coders.iter().zip(&plan.placements).enumerate() {
            let t0 = Instant::now();
            let x_in = &clean.captured[&place.hook_in].1;
            let target = &clean.captured[&place.hook_out].1;
            let (acts, out) = nc.forward(x_in, n)?;
            recon[ci].add_batch(target, &out, &acts, &keep);
            // Excluded positions keep their clean activations (SAELens).
            let d = nc.coder.d_out;
            let mut spliced = out;
            for (r, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
                spliced[r * d..(r + 1) * d].copy_from_slice(&target[r * d..(r + 1) * d]);
            }
            timing.coders_s += t0.elapsed().as_secs_f64();

            let t0 = Instant::now();
            let site = &plan.sites[place.site];
            let run = spliced_run(model, site, &clean, chunk, nb, ctx, write_hook(&spliced))?;
            let dn = &mut down[ci];
            dn.ce_clean.add(ce_clean);
            dn.ce_spliced.add(downstream::ce(run.loss_per_token.as_deref().unwrap_or_default(), &keep, ctx));
            dn.kl_spliced.add(downstream::kl(&clean_logp, run.logits.as_deref().unwrap_or_default(), vocab, &keep));
            let (zce, zkl) = zero[&place.site];
            dn.ce_zero.add(zce);
            dn.kl_zero.add(zkl);
            timing.spliced_s += t0.elapsed().as_secs_f64();
        }
        let done = bi * batch * ctx + n;
        if on_batch(done).is_break() {
            return Err(EvalError::Stopped { tokens_done: done });
        }
    }
    timing.total_s = started.elapsed().as_secs_f64();
    let reports = coders
        .iter()
        .zip(&plan.placements)
        .zip(recon.iter().zip(&down))
        .map(|((nc, place), (rec, dn))| {
            let (metrics, features) = rec.finish();
            let dead = features.density.iter().filter(|&&d| d == 0.0).count() as u64;
            let dense = features.density.iter().filter(|&&d| d > opts.dense_threshold).count() as u64;
            CoderReport {
                label: nc.label.clone(),
                kind: if nc.coder.is_transcoder() || place.hook_in != place.hook_out { "transcoder" } else { "sae" },
                architecture: nc.coder.architecture_name(),
                hook_in: place.hook_in.clone(),
                hook_out: place.hook_out.clone(),
                d_sae: nc.coder.d_sae,
                recon: metrics,
                downstream: dn.finish(),
                dead_features: dead,
                dense_features: dense,
                features,
            }
        })
        .collect();
    Ok(Evaluation { coders: reports, timing, n_tokens: tokens.len() })
}
