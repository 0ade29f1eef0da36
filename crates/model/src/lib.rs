//! saepipe's language-model runtime: HF `config.json` + checkpoints (safetensors,
//! sharded or not, and `pytorch_model*.bin` through a restricted unpickler) of
//! GPT-2 and GPT-NeoX (Pythia) models, the HF cache layout, TransformerLens
//! weight processing, and a CPU forward pass exposing every TransformerLens hook
//! point by name.

pub mod arch;
pub mod config;
mod error;
pub mod forward;
pub mod hub;
pub mod linalg;
pub mod params;
pub mod pickle;
pub mod processing;
pub mod synth;
pub mod weights;

pub use config::{Activation, Arch, ModelConfig};
pub use error::{ModelError, Result};
pub use forward::{HookFn, LnHook, Needs, RunOutput, RunRequest, hook_names, hook_shape, needs};
pub use processing::Processing;

use forward::{Forward, Hooks};
use params::Params;
use rayon::prelude::*;
use std::path::Path;

#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    pub processing: Option<Processing>,
    pub ln_hook: LnHook,
}

/// A valid hook point; `layer` is the block index for `blocks.{L}.…` hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookPoint {
    pub name: String,
    pub layer: Option<usize>,
}

pub struct Model {
    pub cfg: ModelConfig,
    pub params: Params,
    pub processing: Processing,
    pub ln_hook: LnHook,
}

impl Model {
    /// Loads `config.json` and the safetensors weights of an HF model directory.
    /// Without explicit processing, none is applied (like `from_pretrained_no_processing`).
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model> {
        let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
        let files = weights::TensorFiles::open(dir)?;
        let mut params = match cfg.arch {
            Arch::Gpt2 => arch::gpt2::load(&cfg, &files)?,
            Arch::NeoX => arch::neox::load(&cfg, &files)?,
        };
        let processing = opts.processing.unwrap_or(Processing::NONE);
        processing::apply(&cfg, &mut params, processing);
        Ok(Model { cfg, params, processing, ln_hook: opts.ln_hook })
    }

    pub fn hook_names(&self) -> Vec<String> {
        hook_names(&self.cfg)
    }

    /// Checks a hook name, suggesting the closest valid one when it is unknown.
    pub fn check_hook(&self, name: &str) -> Result<HookPoint> {
        check_hook(&self.cfg, name)
    }

    /// TransformerLens shape of a hook's tensor for `batch` × `ctx` tokens.
    pub fn hook_shape(&self, name: &str, batch: usize, ctx: usize) -> Result<Vec<usize>> {
        self.check_hook(name)?;
        Ok(hook_shape(&self.cfg, name, batch, ctx))
    }

    /// Runs a batch of `batch` sequences of `ctx` tokens (row-major [batch, ctx]).
    pub fn run(&self, tokens: &[u32], batch: usize, ctx: usize, req: &mut RunRequest) -> Result<RunOutput> {
        check_run_inputs(&self.cfg, tokens, batch, ctx, req)?;
        let d = self.cfg.d_model;
        let mut hooks = Hooks::new(req);
        let mut resid = vec![0f32; tokens.len() * d];
        resid
            .par_chunks_mut(d)
            .zip(tokens.par_iter())
            .for_each(|(row, &t)| row.copy_from_slice(&self.params.w_e[t as usize * d..(t as usize + 1) * d]));
        hooks.visit_embed("hook_embed", &mut resid, &[batch, ctx, d]);
        if let Some(w_pos) = &self.params.w_pos {
            let mut pos = vec![0f32; tokens.len() * d];
            pos.par_chunks_mut(d)
                .enumerate()
                .for_each(|(i, row)| row.copy_from_slice(&w_pos[(i % ctx) * d..(i % ctx + 1) * d]));
            hooks.visit_embed("hook_pos_embed", &mut pos, &[batch, ctx, d]);
            resid.iter_mut().zip(&pos).for_each(|(r, p)| *r += p);
        }
        Forward { cfg: &self.cfg, p: &self.params, ln_hook: self.ln_hook }.run_blocks(
            resid,
            0,
            Some(tokens),
            batch,
            ctx,
            &mut hooks,
        )?;
        Ok(hooks.finish())
    }

    /// Continues from the residual stream entering block `layer` (the value of
    /// `blocks.{layer}.hook_resid_pre`), so an evaluator can share the clean run of
    /// the layers below a hook across many spliced coders.
    pub fn run_from(
        &self,
        resid: Vec<f32>,
        layer: usize,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
    ) -> Result<RunOutput> {
        check_run_from_inputs(&self.cfg, &resid, layer, tokens, batch, ctx, req)?;
        let mut hooks = Hooks::new(req);
        Forward { cfg: &self.cfg, p: &self.params, ln_hook: self.ln_hook }.run_blocks(
            resid,
            layer,
            Some(tokens),
            batch,
            ctx,
            &mut hooks,
        )?;
        Ok(hooks.finish())
    }
}

/// Checks a hook name against a configuration, suggesting the closest valid
/// one when it is unknown.
pub fn check_hook(cfg: &ModelConfig, name: &str) -> Result<HookPoint> {
    let names = hook_names(cfg);
    if names.iter().any(|n| n == name) {
        let layer = name.strip_prefix("blocks.").and_then(|r| r.split('.').next()).and_then(|l| l.parse().ok());
        return Ok(HookPoint { name: name.to_string(), layer });
    }
    let best = names.iter().map(|n| (strsim::levenshtein(name, n), n)).min_by_key(|(d, _)| *d);
    let hint = match best {
        Some((d, n)) if d <= name.len() / 3 + 2 => format!(" (did you mean `{n}`?)"),
        _ => String::new(),
    };
    Err(ModelError::UnknownHook { name: name.to_string(), hint })
}

/// The checks every backend makes before a run: token shape and range, hook
/// names, stop_at_layer.
pub fn check_run_inputs(cfg: &ModelConfig, tokens: &[u32], batch: usize, ctx: usize, req: &RunRequest) -> Result<()> {
    if tokens.len() != batch * ctx || ctx == 0 {
        return Err(ModelError::Input(format!("{} tokens is not batch {batch} × ctx {ctx}", tokens.len())));
    }
    if ctx > cfg.n_ctx && cfg.arch == Arch::Gpt2 {
        return Err(ModelError::Input(format!("context {ctx} exceeds the model's {} positions", cfg.n_ctx)));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= cfg.d_vocab) {
        return Err(ModelError::Input(format!("token id {t} is outside the vocabulary ({})", cfg.d_vocab)));
    }
    for name in req.capture.iter().chain(req.replace.keys()) {
        check_hook(cfg, name)?;
    }
    if let Some(l) = req.stop_at_layer.filter(|&l| l > cfg.n_layers) {
        return Err(ModelError::Input(format!("stop_at_layer {l} exceeds the model's {} layers", cfg.n_layers)));
    }
    Ok(())
}

/// [`check_run_inputs`] plus the residual a run starting at block `layer` gets.
pub fn check_run_from_inputs(
    cfg: &ModelConfig,
    resid: &[f32],
    layer: usize,
    tokens: &[u32],
    batch: usize,
    ctx: usize,
    req: &RunRequest,
) -> Result<()> {
    check_run_inputs(cfg, tokens, batch, ctx, req)?;
    if resid.len() != batch * ctx * cfg.d_model {
        return Err(ModelError::Input(format!(
            "residual has {} values, expected {batch}×{ctx}×{}",
            resid.len(),
            cfg.d_model
        )));
    }
    if layer > cfg.n_layers {
        return Err(ModelError::Input(format!("run_from layer {layer} exceeds the model's {} layers", cfg.n_layers)));
    }
    Ok(())
}

/// A forward pass with TransformerLens hooks: the CPU [`Model`], or a copy of
/// it on an accelerator. Stages that only run the model take `&dyn Runner`.
pub trait Runner {
    fn config(&self) -> &ModelConfig;
    /// Where the forward runs, for logs ("cpu", "cuda:0").
    fn device(&self) -> String;
    /// See [`Model::run`].
    fn run(&self, tokens: &[u32], batch: usize, ctx: usize, req: &mut RunRequest) -> Result<RunOutput>;
    /// See [`Model::run_from`].
    fn run_from(
        &self,
        resid: Vec<f32>,
        layer: usize,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
    ) -> Result<RunOutput>;
}

impl Runner for Model {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn device(&self) -> String {
        "cpu".into()
    }
    fn run(&self, tokens: &[u32], batch: usize, ctx: usize, req: &mut RunRequest) -> Result<RunOutput> {
        Model::run(self, tokens, batch, ctx, req)
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
        Model::run_from(self, resid, layer, tokens, batch, ctx, req)
    }
}
