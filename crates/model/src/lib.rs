//! saepipe's language-model runtime: HF `config.json` + checkpoints (safetensors,
//! sharded or not, and `pytorch_model*.bin` through a restricted unpickler) of
//! GPT-2, GPT-NeoX (Pythia), Llama-family (Llama, Mistral, Qwen2/3) and Gemma 2/3 models, the HF cache layout, TransformerLens
//! weight processing, and a forward pass exposing every TransformerLens hook
//! point by name, written once over the device operations of
//! [`saepipe_core::compute`]: [`Model`] runs it on the CPU ([`cpu::CpuOps`]),
//! [`DeviceModel`] on another backend (the CUDA one's `GpuOps`).

#![warn(missing_docs)]

pub mod arch;
pub mod config;
pub mod cpu;
pub mod device;
mod error;
pub mod forward;
pub mod hook;
pub mod hub;
pub mod linalg;
mod optional;
pub mod params;
pub mod pickle;
pub mod processing;
pub mod synth;
pub mod weights;

pub use config::{Activation, Arch, ModelConfig};
pub use device::DeviceModel;
pub use error::{ModelError, Result};
pub use forward::{HookFn, LnHook, RunOutput, RunRequest};
pub use hook::{HookName, Needs, OptionalHooks, check_hook, hook_names, hook_shape, needs};
pub use processing::Processing;

use forward::Forward;
use params::Params;
use std::path::Path;

/// How [`Model::load`] prepares a checkpoint. The default loads the weights
/// as stored, with TransformerLens 3.x `hook_normalized` semantics.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// TransformerLens weight processing applied after loading. `None` applies
    /// none (like `from_pretrained_no_processing`); [`Processing::FULL`] is what
    /// `HookedTransformer.from_pretrained` does by default.
    pub processing: Option<Processing>,
    /// Whether `lnX.hook_normalized` holds the vector before or after the
    /// LayerNorm affine; the two agree once LayerNorms are folded.
    pub ln_hook: LnHook,
}

/// A GPT-2, GPT-NeoX (Pythia), Llama-family or Gemma model held in host memory, run on the CPU.
/// [`DeviceModel::new`] copies one to another backend.
pub struct Model {
    /// Architecture and sizes, from the checkpoint's `config.json`.
    pub cfg: ModelConfig,
    /// The weights in TransformerLens layout, with `processing` already applied.
    pub params: Params,
    /// The weight processing that was applied to `params` at load: the steps
    /// asked for that apply to this model (see [`processing::effective`]).
    pub processing: Processing,
    /// The `lnX.hook_normalized` semantics this model's runs follow.
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
            Arch::Llama => arch::llama::load(&cfg, &files)?,
            Arch::Gemma2 | Arch::Gemma3 => arch::gemma::load(&cfg, &files)?,
        };
        let processing = processing::effective(&cfg, opts.processing.unwrap_or(Processing::NONE));
        processing::apply(&cfg, &mut params, processing);
        Ok(Model { cfg, params, processing, ln_hook: opts.ln_hook })
    }

    /// Every hook point of this model, in the order a forward pass visits them
    /// (see [`hook_names`]).
    pub fn hook_names(&self) -> Vec<String> {
        hook_names(&self.cfg)
    }

    /// Checks a hook name, suggesting the closest valid one when it is unknown.
    pub fn check_hook(&self, name: &str) -> Result<HookName> {
        check_hook(&self.cfg, name)
    }

    /// TransformerLens shape of a hook's tensor for `batch` × `ctx` tokens.
    pub fn hook_shape(&self, name: &str, batch: usize, ctx: usize) -> Result<Vec<usize>> {
        Ok(self.check_hook(name)?.shape(&self.cfg, batch, ctx))
    }

    /// Runs a batch of `batch` sequences of `ctx` tokens (row-major [batch, ctx]).
    pub fn run(&self, tokens: &[u32], batch: usize, ctx: usize, req: &mut RunRequest) -> Result<RunOutput> {
        self.forward().run(tokens, batch, ctx, req)
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
        self.forward().run_from(resid, layer, tokens, batch, ctx, req)
    }

    /// The forward over this model's parameters on the CPU, in place.
    fn forward(&self) -> Forward<'_, cpu::CpuOps> {
        Forward { ops: &cpu::CpuOps, cfg: &self.cfg, p: &self.params, ln_hook: self.ln_hook }
    }
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
    if let Some(w) = cfg.sliding_window.filter(|&w| ctx > w) {
        return Err(ModelError::Input(format!(
            "context {ctx} exceeds the model's sliding attention window of {w} tokens (sliding-window attention is not implemented; use contexts of at most {w})"
        )));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= cfg.d_vocab) {
        return Err(ModelError::Input(format!("token id {t} is outside the vocabulary ({})", cfg.d_vocab)));
    }
    for name in req.capture.iter().chain(req.replace.keys()) {
        check_hook(cfg, name)?;
    }
    OptionalHooks::of(req.capture.iter().chain(req.replace.keys()).map(String::as_str)).check(cfg)?;
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
    /// The configuration of the model this runs.
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
