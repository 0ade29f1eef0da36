//! `train_sae`: train a sparse autoencoder or transcoder on an activation store.
//!
//! Batches come from the store through the seeded shuffle reader (epoch `e`
//! uses seed `seed + e`); only full batches are used, so step `s` always sees
//! the same rows. Every `checkpoint_every` steps the whole trainer state (weights,
//! Adam moments, firing statistics, counters) and the loss rows so far are
//! written to the partial area; a killed run restarts from the last checkpoint,
//! skips the batches already consumed and continues. Because the batch stream
//! and the state are restored exactly, a resumed run ends with the same weights
//! as an uninterrupted one (tests/checkpoint_matching.rs checks byte equality).
//! That holds per device: CPU and GPU steps round differently, so a run resumed
//! on the other device continues correctly but not bit for bit.
//!
//! `device: cuda` (or `auto` on a machine with a GPU) runs TopK SAE training on
//! the GPU trainer of saepipe-cuda; other architectures (standard, batchtopk,
//! jumprelu) and transcoders train on the CPU, and the log says so.
//!
//! Output: `sae/` (a SAELens v6 directory), `losses.parquet` (one row per
//! logged step) and `summary.json` (no timings, so reruns are byte-identical;
//! the manifest records how long the stage took).

use super::table::{Column, Table};
use super::{Op, Params, StageCtx};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_data::{ActivationReader, StoreSource};
use saepipe_sae::train::{JumpReluSparsityLoss, TrainOps};
use saepipe_sae::{BDecInit, LrDecay, StepStats, TrainArch, TrainConfig, Trainer, TrainerState};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The `train_sae` op: trains a sparse autoencoder or transcoder on an activation store.
pub struct TrainSaeOp;

/// Loads a coder from a `train_sae` artifact (its `sae/` directory) or from a
/// SAELens / sparsify directory given directly.
pub fn load_trained_coder(dir: &Path) -> Result<saepipe_sae::SparseCoder> {
    let sae_dir = if dir.join("sae").join("cfg.json").is_file() { dir.join("sae") } else { dir.to_path_buf() };
    saepipe_sae::load_coder(&sae_dir).with_context(|| format!("loading the sparse coder in {}", sae_dir.display()))
}

/// A model reference (`hf:owner/name@rev`, `toy/toy-grammar@step2000`) as
/// SAELens's cfg holds it: the name without saepipe's `hf:` prefix, and the
/// revision apart.
pub(crate) fn split_model_reference(reference: &str) -> (String, Option<String>) {
    let plain = reference.strip_prefix("hf:").unwrap_or(reference);
    match plain.rsplit_once('@') {
        Some((name, rev)) if !rev.contains('/') => (name.to_string(), Some(rev.to_string())),
        _ => (plain.to_string(), None),
    }
}

/// The model a coder was trained on, with its revision (`name@rev`): from the
/// cfg's `model_name` and `model_from_pretrained_kwargs.revision` (coders of
/// earlier saepipe versions carry the revision in `model_name` itself).
pub fn coder_model(coder: &saepipe_sae::SparseCoder) -> String {
    let meta = &coder.metadata;
    let name = meta.model_name.clone().unwrap_or_default();
    let revision = meta.model_from_pretrained_kwargs.as_ref().and_then(|k| k.get("revision")).and_then(Value::as_str);
    match revision {
        Some(r) if !name.contains('@') => format!("{name}@{r}"),
        _ => name,
    }
}

/// A coder's display name: the stage that asked for it in this pipeline
/// (`producer`, see `StageCtx::producer`), else the stage instance that trained
/// it, else its directory name.
pub fn coder_label(coder: &saepipe_sae::SparseCoder, dir: &Path, producer: Option<&str>) -> String {
    if let Some(p) = producer {
        return p.to_string();
    }
    match coder.metadata.extra.get("saepipe_instance").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None => dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}

/// Name of the training checkpoint in the partial area (`checkpoint.json` + parts).
const CHECKPOINT: &str = "checkpoint";

/// The parameters that become the trainer's configuration.
fn train_config(p: &Params, d_in: usize, total_steps: u64, batch: usize) -> Result<TrainConfig> {
    let d_sae = match (p.get("d_sae"), p.get("expansion_factor")) {
        (Some(_), Some(_)) => bail!("give either `d_sae` or `expansion_factor`, not both"),
        (Some(_), None) => p.usize("d_sae")?,
        (None, Some(_)) => p.usize("expansion_factor")? * d_in,
        (None, None) => 8 * d_in,
    };
    let arch_name = p.str("architecture")?;
    if let Some(name) = JUMPRELU_PARAMS.iter().find(|n| arch_name != "jumprelu" && p.get(n).is_some()) {
        bail!("parameter `{name}`: only used with `architecture: jumprelu` (this stage trains `{arch_name}`)");
    }
    let k = p.usize("k")?;
    let arch = match p.str("architecture")? {
        "standard" => TrainArch::Standard {
            l1_coefficient: p.f64("l1_coefficient")? as f32,
            l1_warmup_steps: p.u64_or("l1_warmup_steps", 0)?,
        },
        "topk" => TrainArch::TopK { k },
        "jumprelu" => jumprelu_arch(p, d_sae)?,
        _ => TrainArch::BatchTopK { k, threshold_lr: 0.01 },
    };
    let lr_decay = match p.str("lr_decay")? {
        "cosine" => LrDecay::Cosine,
        "linear" => LrDecay::Linear,
        _ => LrDecay::Constant,
    };
    let b_dec_init = match p.str("b_dec_init")? {
        "zeros" => BDecInit::Zeros,
        "geometric_median" => BDecInit::GeometricMedian,
        _ => BDecInit::Mean,
    };
    let grad_clip = p.f64("max_grad_norm")?;
    Ok(TrainConfig {
        arch,
        d_sae,
        // An output hook makes a transcoder even when both widths are equal
        // (ln2.hook_normalized -> hook_mlp_out).
        transcoder: p.get("hook_out").is_some(),
        lr: p.f64("lr")? as f32,
        lr_warmup_steps: p.u64_or("lr_warmup_steps", 0)?,
        lr_decay,
        lr_decay_steps: p.get("lr_decay_steps").and_then(Value::as_u64),
        lr_end_factor: p.f64("lr_end_factor")? as f32,
        total_steps,
        max_grad_norm: (grad_clip > 0.0).then_some(grad_clip as f32),
        aux_k: p.get("aux_k").and_then(Value::as_u64).map(|v| v as usize),
        aux_k_coefficient: p.f64("aux_k_coefficient")? as f32,
        dead_after_tokens: p.u64_or("dead_feature_window", 0)?.max(batch as u64),
        decoder_init_norm: p.get("decoder_init_norm").and_then(Value::as_f64).map(|v| v as f32),
        b_dec_init,
        normalize_activations: p.str("normalize_activations")? == "expected_average_only_in",
        seed: p.u64_or("seed", 0)?,
        apply_b_dec_to_input: p.bool("apply_b_dec_to_input")?,
        ..TrainConfig::default()
    })
}

/// The JumpReLU-only parameters (given with another architecture they are an
/// error rather than silently unused).
const JUMPRELU_PARAMS: [&str; 9] = [
    "l0_coefficient",
    "l0_warmup_steps",
    "jumprelu_bandwidth",
    "jumprelu_init_threshold",
    "jumprelu_sparsity_loss_mode",
    "jumprelu_tanh_scale",
    "target_l0",
    "pre_act_loss_coefficient",
    "jumprelu_ste_to_input",
];

/// `architecture: jumprelu`: SAELens 6.54's `JumpReLUTrainingSAEConfig`
/// defaults for everything not given, with errors naming the parameter.
fn jumprelu_arch(p: &Params, d_sae: usize) -> Result<TrainArch> {
    let TrainArch::JumpRelu { l0_coefficient, bandwidth, initial_threshold, tanh_scale, .. } = TrainArch::jumprelu(1.0)
    else {
        unreachable!("TrainArch::jumprelu builds a JumpRelu")
    };
    let num = |name: &str, default: f32, positive: bool| -> Result<f32> {
        let v = match p.get(name) {
            None => return Ok(default),
            Some(_) => p.f64(name)?,
        };
        let ok = v.is_finite() && if positive { v > 0.0 } else { v >= 0.0 };
        if !ok {
            bail!("parameter `{name}`: must be a finite number {} 0 (got {v})", if positive { ">" } else { ">=" });
        }
        Ok(v as f32)
    };
    let mode = match p.opt_str("jumprelu_sparsity_loss_mode").unwrap_or("step") {
        "tanh" => JumpReluSparsityLoss::Tanh,
        "quadratic" => JumpReluSparsityLoss::Quadratic,
        _ => JumpReluSparsityLoss::Step,
    };
    let target_l0 = match p.get("target_l0") {
        None if mode == JumpReluSparsityLoss::Quadratic => {
            bail!("parameter `target_l0`: required with `jumprelu_sparsity_loss_mode: quadratic`")
        }
        None => None,
        Some(_) => {
            let t = num("target_l0", 0.0, true)?;
            if mode != JumpReluSparsityLoss::Quadratic {
                bail!("parameter `target_l0`: only used with `jumprelu_sparsity_loss_mode: quadratic`");
            }
            if t > d_sae as f32 {
                bail!("parameter `target_l0`: {t} is more than d_sae ({d_sae})");
            }
            Some(t)
        }
    };
    Ok(TrainArch::JumpRelu {
        l0_coefficient: num("l0_coefficient", l0_coefficient, false)?,
        l0_warmup_steps: p.u64_or("l0_warmup_steps", 0)?,
        bandwidth: num("jumprelu_bandwidth", bandwidth, true)?,
        initial_threshold: num("jumprelu_init_threshold", initial_threshold, false)?,
        sparsity_loss_mode: mode,
        tanh_scale: num("jumprelu_tanh_scale", tanh_scale, true)?,
        target_l0,
        pre_act_loss_coefficient: p
            .get("pre_act_loss_coefficient")
            .map(|_| num("pre_act_loss_coefficient", 0.0, false))
            .transpose()?,
        ste_to_input: match p.get("jumprelu_ste_to_input") {
            None => false,
            Some(_) => p.bool("jumprelu_ste_to_input")?,
        },
    })
}

fn stats_row(s: &StepStats, tokens: u64) -> Value {
    json!({
        "step": s.step, "tokens": tokens, "loss": s.loss, "mse": s.mse,
        "l1": s.l1, "auxk": s.auxk, "l0": s.l0, "dead_fraction": s.dead_fraction,
        "explained_variance": s.explained_variance, "lr": s.lr, "grad_norm": s.grad_norm,
    })
}

fn losses_table(rows: &[Value]) -> Table {
    let num = |k: &str| Column::F64(rows.iter().map(|r| r[k].as_f64().unwrap_or(f64::NAN)).collect());
    let int = |k: &str| Column::I64(rows.iter().map(|r| r[k].as_i64().unwrap_or(0)).collect());
    let mut t = Table::default().with("step", int("step")).with("tokens", int("tokens"));
    for k in ["loss", "mse", "l1", "auxk", "l0", "dead_fraction", "explained_variance", "lr", "grad_norm"] {
        t = t.with(k, num(k));
    }
    t
}

/// Writes the trainer state and the loss rows so far; each file lands under a
/// temporary name first so a crash never leaves a torn checkpoint.
/// Saves the trainer and its loss rows as one self-verifying checkpoint (see
/// `saepipe_cache::checkpoint`): unique file names, then one atomic pointer with
/// their hashes, so neither a crash nor a second writer can tear it.
fn save_checkpoint(dir: &Path, state: &TrainerState, rows: &[Value]) -> Result<()> {
    use saepipe_cache::checkpoint::{checkpoint_part_path, commit_checkpoint};
    let state_path = checkpoint_part_path(dir, CHECKPOINT, "state");
    state.save(&state_path)?;
    let rows_path = checkpoint_part_path(dir, CHECKPOINT, "rows");
    std::fs::write(&rows_path, serde_json::to_vec(rows)?)?;
    commit_checkpoint(dir, CHECKPOINT, &[("state", &state_path), ("rows", &rows_path)])?;
    Ok(())
}

/// The saved checkpoint, if one verifies; a damaged one is reported and ignored.
fn load_checkpoint(dir: &Path, log: &mut dyn std::io::Write) -> Option<(TrainerState, Vec<Value>)> {
    let parts = match saepipe_cache::checkpoint::load_checkpoint(dir, CHECKPOINT) {
        Ok(Some(parts)) => parts,
        Ok(None) => return None,
        Err(e) => {
            let line = format!("warning: the saved checkpoint is damaged and is not used ({e}); training starts over");
            eprintln!("{line}");
            let _ = writeln!(log, "{line}");
            let _ = saepipe_cache::checkpoint::remove_checkpoint(dir, CHECKPOINT);
            return None;
        }
    };
    let state = TrainerState::load(parts.get("state")?).ok()?;
    let rows: Vec<Value> = serde_json::from_slice(&std::fs::read(parts.get("rows")?).ok()?).ok()?;
    // Keep only rows the checkpoint covers (rows may be newer than the state).
    let rows: Vec<Value> = rows.into_iter().filter(|r| r["step"].as_u64().is_some_and(|s| s < state.step)).collect();
    let _ = writeln!(log, "resuming from checkpoint at step {}", state.step);
    Some((state, rows))
}

/// A non-finite loss or gradient: say which checkpoint survives. The partial
/// area keeps the last checkpoint (written before the bad step); a rerun with a
/// lower `lr` has another key and starts over.
fn diverged(e: anyhow::Error, checkpoint_step: Option<u64>, partial_dir: &Path) -> anyhow::Error {
    let kept = match checkpoint_step {
        Some(step) => format!("the last good checkpoint (step {step}) is kept in {}", partial_dir.display()),
        None => "no checkpoint was written before it".to_string(),
    };
    anyhow::anyhow!("{e:#}; {kept}; lower `lr` or `max_grad_norm`")
}

/// The trainer with its steps on `device`: on a GPU when the GPU backend
/// trains this setup (the same step over the same initialisation and
/// batches), otherwise on the CPU with the reason in the log. Checkpoints
/// are host states, so one from either device resumes on either.
fn on_device(
    device: saepipe_cuda::Device,
    trainer: Trainer,
    params: &super::Params,
    log: &mut dyn std::io::Write,
) -> Result<Trainer<Box<dyn TrainOps>>> {
    let saepipe_cuda::Device::Cuda(ordinal) = device else {
        return Ok(trainer.boxed());
    };
    if let Err(why) = saepipe_cuda::GpuTrain::supports(&trainer.setup()) {
        let _ = writeln!(log, "training on the CPU: {why}");
        return Ok(trainer.boxed());
    }
    let gpu = super::device::start_gpu(ordinal, params)?;
    let precision = gpu.precision();
    let trainer = trainer.move_to(|setup, tensors| {
        saepipe_cuda::GpuTrain::new(gpu, setup, tensors).map(|t| Box::new(t) as Box<dyn TrainOps>)
    })?;
    let _ = writeln!(log, "training on {} ({precision:?} GEMMs)", trainer.device());
    Ok(trainer)
}

/// Rows for initialising b_dec and the normalisation scale: the first batch of
/// the epoch-0 stream (the same rows on every run with this seed).
fn init_sample(
    store: &Arc<dyn StoreSource>,
    hooks: &[&str],
    seed: u64,
    buffer: usize,
    rows: usize,
) -> Result<Vec<Vec<f32>>> {
    let r = ActivationReader::from_source(store.clone(), hooks)?.shuffled(seed, buffer);
    match r.batches(rows).next() {
        Some(b) => Ok(b?.hooks),
        None => bail!("the activation store is empty"),
    }
}

impl Op for TrainSaeOp {
    fn name(&self) -> &'static str {
        "train_sae"
    }
    fn version(&self) -> u32 {
        // 2: cfg metadata names the activation store's key (and the token table's).
        2
    }
    fn summary(&self) -> &'static str {
        "train an SAE or transcoder on an activation store (SAELens output, loss curves)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["sae", "losses.parquet"]
    }
    fn resource(&self, params: &super::Params) -> super::Resource {
        super::device::resource(params)
    }
    fn slurm_defaults(&self, params: &super::Params) -> saepipe_slurm::SlurmSettings {
        super::device::slurm_defaults(params)
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::required("activations", Artifact, "a collect_activations stage"),
            ParamSpec::required("hook", Str, "input hook point (must be in the store)"),
            ParamSpec::maybe("hook_out", Str, "output hook point: makes a transcoder (e.g. blocks.0.hook_mlp_out)"),
            ParamSpec::optional(
                "architecture",
                Enum(&["topk", "standard", "batchtopk", "jumprelu"]),
                json!("topk"),
                "topk, standard (ReLU + L1), batchtopk or jumprelu (SAELens JumpReLU, CPU only)",
            ),
            ParamSpec::maybe("d_sae", Int, "number of latents").range(1, 1 << 24),
            ParamSpec::maybe(
                "expansion_factor",
                Int,
                "d_sae as a multiple of the input width (default 8 when d_sae is not given)",
            )
            .range(1, 4096),
            ParamSpec::optional("k", Int, json!(32), "active latents per token (topk, batchtopk)").range(1, 1 << 24),
            ParamSpec::optional("l1_coefficient", Float, json!(5.0), "L1 penalty weight (standard)"),
            ParamSpec::maybe("l1_warmup_steps", Int, "steps over which the L1 weight ramps up from 0 (standard)")
                .min(0),
            ParamSpec::maybe(
                "l0_coefficient",
                Float,
                "sparsity (L0) loss weight (jumprelu; default 1.0, SAELens l0_coefficient)",
            ),
            ParamSpec::maybe(
                "l0_warmup_steps",
                Int,
                "steps over which the L0 weight ramps up from 0 (jumprelu; SAELens l0_warm_up_steps, default 0)",
            )
            .min(0),
            ParamSpec::maybe(
                "jumprelu_bandwidth",
                Float,
                "width of the straight-through rectangle kernel (jumprelu; default 0.05)",
            ),
            ParamSpec::maybe("jumprelu_init_threshold", Float, "initial per-latent threshold (jumprelu; default 0.01)"),
            ParamSpec::maybe(
                "jumprelu_sparsity_loss_mode",
                Enum(&["step", "tanh", "quadratic"]),
                "jumprelu sparsity loss: step (L0, default), tanh or quadratic (needs target_l0)",
            ),
            ParamSpec::maybe(
                "jumprelu_tanh_scale",
                Float,
                "scale inside tanh (jumprelu_sparsity_loss_mode tanh; default 4.0)",
            ),
            ParamSpec::maybe("target_l0", Float, "target L0 of the quadratic sparsity loss (jumprelu)"),
            ParamSpec::maybe(
                "pre_act_loss_coefficient",
                Float,
                "weight of the pre-activation loss on dead latents (jumprelu; default off)",
            ),
            ParamSpec::maybe(
                "jumprelu_ste_to_input",
                Bool,
                "straight-through gradients also reach the encoder (jumprelu; default false)",
            ),
            ParamSpec::optional("lr", Float, json!(2e-4), "Adam learning rate"),
            ParamSpec::maybe("lr_warmup_steps", Int, "linear warm-up steps").min(0),
            ParamSpec::optional(
                "lr_decay",
                Enum(&["constant", "cosine", "linear"]),
                json!("constant"),
                "schedule after warm-up",
            ),
            ParamSpec::maybe(
                "lr_decay_steps",
                Int,
                "decay over the last this many steps (default: all steps after warm-up)",
            )
            .min(0),
            ParamSpec::optional("lr_end_factor", Float, json!(0.0), "final lr as a fraction of lr (decay schedules)"),
            ParamSpec::optional("batch_size", Int, json!(4096), "tokens per step").range(1, 1 << 24),
            ParamSpec::maybe(
                "total_tokens",
                Int,
                "training tokens (default: one pass over the store); passes reshuffle",
            )
            .min(1),
            ParamSpec::optional("seed", Int, json!(42), "initialisation and shuffle seed").min(0),
            ParamSpec::optional("shuffle_buffer", Int, json!(65536), "rows in the shuffle buffer")
                .range(1, 100_000_000),
            ParamSpec::optional(
                "normalize_activations",
                Enum(&["none", "expected_average_only_in"]),
                json!("none"),
                "SAELens normalize_activations; the scale is folded into the saved weights",
            ),
            ParamSpec::optional(
                "b_dec_init",
                Enum(&["mean", "geometric_median", "zeros"]),
                json!("mean"),
                "decoder bias initialisation",
            ),
            ParamSpec::optional(
                "apply_b_dec_to_input",
                Bool,
                json!(true),
                "subtract b_dec before encoding (SAEs; ignored for transcoders)",
            ),
            ParamSpec::optional(
                "dead_feature_window",
                Int,
                json!(1_000_000),
                "a latent is dead after this many tokens without firing",
            )
            .min(0),
            ParamSpec::maybe("aux_k", Int, "AuxK latents per token (default d_in / 2)").range(0, 1 << 24),
            ParamSpec::optional("aux_k_coefficient", Float, json!(1.0 / 32.0), "AuxK loss weight; 0 disables"),
            ParamSpec::optional("max_grad_norm", Float, json!(1.0), "gradient-norm clip; 0 disables"),
            ParamSpec::maybe(
                "decoder_init_norm",
                Float,
                "initial decoder row norm (default 0.1 standard and jumprelu, 1 topk and batchtopk)",
            ),
            ParamSpec::optional("log_every", Int, json!(10), "steps between rows of losses.parquet").min(1),
            ParamSpec::optional("checkpoint_every", Int, json!(200), "steps between resumable checkpoints")
                .min(1)
                .not_in_key(),
            ParamSpec::optional("device", Str, json!("auto"), "auto, cpu, cuda or cuda:N").not_in_key(),
            super::device::precision_param(),
            crate::engine::stream_param(),
        ]
    }
    fn streamable_inputs(&self) -> &'static [&'static str] {
        &["activations"]
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let device = saepipe_cuda::DeviceSpec::parse(p.str("device")?)?.resolve()?;
        let store = ctx.store_source(ctx.input("activations")?);
        let hook = p.str("hook")?.to_string();
        let hook_out = p.opt_str("hook_out").map(str::to_string);
        let mut hooks = vec![hook.as_str()];
        if let Some(h) = &hook_out {
            if *h == hook {
                bail!("`hook_out` equals `hook`; leave it out to train an SAE");
            }
            hooks.push(h);
        }
        let reader = ActivationReader::from_source(store.clone(), &hooks).with_context(|| {
            format!("parameter `hook`: opening the activation store {}", store.location().display())
        })?;
        let widths = reader.widths();
        let (d_in, d_out) = (widths[0], *widths.last().unwrap());
        let n_rows = reader.total_rows() as usize;
        let batch = p.usize("batch_size")?.max(1);
        if n_rows < batch {
            bail!("parameter `batch_size`: {batch} is larger than the store ({n_rows} tokens)");
        }
        let total_tokens = p.get("total_tokens").map(|_| p.usize("total_tokens")).transpose()?.unwrap_or(n_rows);
        let total_steps = (total_tokens / batch).max(1) as u64;
        let per_epoch = (n_rows / batch) as u64;
        let (seed, buffer) = (p.u64_or("seed", 0)?, p.usize("shuffle_buffer")?);
        let log_every = p.usize("log_every")?.max(1) as u64;
        let checkpoint_every = p.usize("checkpoint_every")?.max(1) as u64;
        let cfg = train_config(&p, d_in, total_steps, batch)?;

        let (trainer, mut rows) = match load_checkpoint(&ctx.partial_dir, ctx.log) {
            Some((state, rows)) if state.cfg == cfg && state.d_in == d_in && state.d_out == d_out => {
                (Trainer::restore(state)?, rows)
            }
            _ => {
                let init = init_sample(&store, &hooks, seed, buffer, batch.max(4096).min(n_rows))?;
                let y = hook_out.as_ref().map(|_| init[1].as_slice());
                (Trainer::new(cfg.clone(), d_in, d_out, &init[0], y)?, Vec::new())
            }
        };
        let mut trainer = on_device(device, trainer, &p, ctx.log)?;
        ctx.progress.set_total(total_steps * batch as u64, "tokens");
        let started = std::time::Instant::now();
        let mut step = trainer.step_count();
        // A resumed run starts from the checkpoint in the partial area.
        let mut checkpoint_step = (step > 0).then_some(step);
        let mut last: Option<StepStats> = None;
        while step < total_steps {
            let epoch = step / per_epoch;
            let skip = (step % per_epoch) as usize;
            let epoch_reader = ActivationReader::from_source(store.clone(), &hooks)?
                .shuffled(seed.wrapping_add(epoch), buffer)
                .prefetch(4);
            for b in epoch_reader.batches(batch).skip(skip) {
                let b = b?;
                if b.rows < batch || step >= total_steps {
                    break;
                }
                let y = hook_out.as_ref().map(|_| b.hooks[1].as_slice());
                let s = match trainer.step(&b.hooks[0], y, batch) {
                    Ok(s) if s.loss.is_finite() => s,
                    Ok(s) => {
                        return Err(diverged(
                            anyhow::anyhow!("training diverged at step {step}: loss is {}", s.loss),
                            checkpoint_step,
                            &ctx.partial_dir,
                        ));
                    }
                    Err(e @ saepipe_sae::SaeError::NonFinite { .. }) => {
                        return Err(diverged(e.into(), checkpoint_step, &ctx.partial_dir));
                    }
                    Err(e) => return Err(e.into()),
                };
                if step % log_every == 0 || step + 1 == total_steps {
                    rows.push(stats_row(&s, (step + 1) * batch as u64));
                }
                step += 1;
                if step % log_every == 0 || step == total_steps {
                    ctx.progress.set_status(&format!("loss {:.4} L0 {:.1}", s.loss, s.l0));
                }
                ctx.progress.set_position(step * batch as u64);
                let cancelled = ctx.cancelled();
                if (step % checkpoint_every == 0 || cancelled) && step < total_steps {
                    // A holder that lost its lock must not overwrite the new holder's progress.
                    ctx.check_lock()?;
                    save_checkpoint(&ctx.partial_dir, &trainer.state()?, &rows)?;
                    checkpoint_step = Some(step);
                    if cancelled {
                        ctx.logln(format!("interrupted: checkpoint saved at step {step}"));
                        return Err(super::StageStop::Interrupted.into());
                    }
                }
                last = Some(s);
            }
        }
        let secs = started.elapsed().as_secs_f64();

        let mut coder = trainer.to_coder()?;
        let info = reader.info();
        // SAELens's fields: the model's name as TransformerLens loads it, its
        // revision where from_pretrained takes it; the full reference too.
        let (model_name, revision) = split_model_reference(&info.meta.model);
        ctx.describe_tables(&model_name, revision.as_deref().unwrap_or(""), &hook);
        let meta = &mut coder.metadata;
        meta.model_name = Some(model_name);
        meta.model_from_pretrained_kwargs = revision.map(|r| json!({ "revision": r }));
        meta.extra.insert("saepipe_model".into(), json!(info.meta.model));
        meta.hook_name = Some(hook.clone());
        meta.hook_name_out = hook_out.clone();
        meta.context_size = Some(info.meta.context_size as u64);
        meta.prepend_bos = Some(true);
        meta.extra.insert("saepipe_instance".into(), json!(ctx.instance));
        meta.extra.insert("saepipe_training_tokens".into(), json!(total_steps * batch as u64));
        // The store's own key (a streamed store's location ends with it), and
        // the token table the store was collected from.
        meta.extra.insert("saepipe_activation_store".into(), json!(super::artifact_key(ctx.input("activations")?)));
        meta.extra.insert("saepipe_token_table".into(), json!(info.meta.token_artifact));
        saepipe_sae::write_saelens(&coder, &ctx.out_dir.join("sae"))?;
        if !coder.loads_in_saelens() {
            ctx.logln(format!(
                "note: sae/ is a `{}`, an architecture SAELens has no class for: saepipe loads it, SAE.load_from_disk does not (see cfg.json metadata.saepipe_saelens_note)",
                coder.architecture_name()
            ));
        }
        ctx.write_table(&losses_table(&rows), "losses.parquet")?;
        let final_stats = last
            .map(|s| stats_row(&s, total_steps * batch as u64))
            .or_else(|| rows.last().cloned())
            .unwrap_or(Value::Null);
        let summary = json!({
            "instance": ctx.instance, "model": info.meta.model, "hook": hook, "hook_out": hook_out,
            "architecture": coder.architecture_name(), "d_in": d_in, "d_sae": cfg.d_sae, "d_out": d_out,
            "steps": total_steps, "batch_size": batch, "tokens": total_steps * batch as u64,
            "dead_fraction": trainer.dead_fraction(), "final": final_stats,
        });
        ctx.write_output("summary.json", &serde_json::to_vec_pretty(&summary)?)?;
        ctx.logln(format!("trained {total_steps} steps of {batch} tokens in {secs:.1}s"));
        Ok(summary)
    }
}
