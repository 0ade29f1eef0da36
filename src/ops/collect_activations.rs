//! `collect_activations`: run an LM over a token table and store the activations
//! at TransformerLens hook points as Parquet shards (one row per token).
//!
//! Shards are written one at a time into the stage's partial area, each under a
//! temporary name and renamed when complete, so an interrupted run redoes at most
//! one shard. Shard contents depend only on the tokens, model and hooks, so a
//! resumed store is byte-identical to an uninterrupted one.

use super::{Op, Params, StageCtx, model_params};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_data::{Dtype, HookSpec, Rows, ShardedWriter, StoreMeta, TokenTableReader, WriterOptions};
use saepipe_model::{HookName, OptionalHooks, RunRequest};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The `collect_activations` op: LM activations at hook points, stored as Parquet shards.
pub struct CollectActivationsOp;

/// Last block a set of hooks needs (TransformerLens `stop_at_layer`), or None
/// for a full pass (some hook is outside the blocks).
pub fn stop_layer(hooks: &[HookName]) -> Option<usize> {
    let mut deepest = 0;
    for h in hooks {
        deepest = deepest.max(h.layer()? + 1);
    }
    Some(deepest)
}

impl Op for CollectActivationsOp {
    fn name(&self) -> &'static str {
        "collect_activations"
    }
    fn version(&self) -> u32 {
        // 2: the store index carries each shard's blake3, checked by every reader.
        // Not bumped when the index became `_store.json`: readers take either
        // name, so stores under existing keys stay valid and are not recomputed.
        2
    }
    fn summary(&self) -> &'static str {
        "run a language model over tokens and store hook activations (Parquet shards)"
    }
    fn verified_on_read(&self) -> &'static [&'static str] {
        &["shard-*.parquet"]
    }
    fn resource(&self, params: &super::Params) -> super::Resource {
        super::device::resource(params)
    }
    fn slurm_defaults(&self, params: &super::Params) -> saepipe_slurm::SlurmSettings {
        super::device::slurm_defaults(params)
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut specs = model_params::forward();
        specs.extend([
            ParamSpec::required("tokens", ParamType::Artifact, "a tokenize stage"),
            ParamSpec::required(
                "hooks",
                ParamType::List(Box::new(ParamType::Str)),
                "TransformerLens hook names, e.g. blocks.3.hook_resid_pre",
            ),
            ParamSpec::maybe("max_tokens", ParamType::Int, "use only the first contexts holding this many tokens")
                .min(1),
            ParamSpec::optional(
                "shard_tokens",
                ParamType::Int,
                json!(65536),
                "tokens per Parquet shard (rounded down to whole contexts)",
            )
            .min(1),
            ParamSpec::optional("dtype", ParamType::Enum(&["f32", "f16"]), json!("f32"), "stored precision"),
            ParamSpec::optional("batch_size", ParamType::Int, json!(32), "contexts per forward pass")
                .min(1)
                .not_in_key(),
            ParamSpec::optional(
                "allow_nonfinite",
                ParamType::Bool,
                json!(false),
                "store NaN/Inf activations (counted and logged) instead of failing the stage at the first one",
            )
            .not_in_key(),
        ]);
        specs.extend(model_params::device());
        specs
    }
    fn external_inputs(&self, params: &Params, base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        model_params::external_inputs(params, base_dir)
    }
    fn check_params(&self, params: &Params, base_dir: &Path) -> Vec<super::ParamProblem> {
        model_params::check_hooks(params, base_dir, "hooks")
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let device = super::device::resolve(&p)?;
        let (model_dir, model) = model_params::load(&p, &ctx.base_dir)?;
        let hooks = p.str_list("hooks")?;
        if hooks.is_empty() {
            bail!("parameter `hooks` is empty");
        }
        let names: Vec<HookName> = hooks
            .iter()
            .map(|h| model.check_hook(h))
            .collect::<saepipe_model::Result<_>>()
            .context("parameter `hooks`")?;
        let tokens_dir = ctx.input("tokens")?.to_path_buf();
        let table = TokenTableReader::open(&tokens_dir.join("tokens.parquet"))?;
        let cctx = table.meta.context_size;
        let tokenizer_fingerprint = table.meta.tokenizer_fingerprint.clone();
        let mut tokens = table.read_all()?;
        if let Some(max) = p.get("max_tokens").and_then(Value::as_u64) {
            tokens.truncate((max as usize / cctx) * cctx);
        }
        let n_ctx = tokens.len() / cctx;
        if n_ctx == 0 {
            bail!("no tokens to run");
        }
        let batch = p.usize("batch_size")?.max(1);
        let dtype = Dtype::parse(p.str("dtype")?).unwrap();
        let stop = stop_layer(&names);
        // Optional hooks that add a head dimension to ln1's (as TransformerLens's flags do).
        let opt = OptionalHooks::of(names.iter().map(HookName::as_str));
        opt.check(&model.cfg).context("parameter `hooks`")?;
        let widths: Vec<usize> = names.iter().map(|h| h.token_width_with(&model.cfg, cctx, opt)).collect();
        let cfg = model.cfg.clone();
        let token_key = super::artifact_key(&tokens_dir);
        let meta = StoreMeta {
            model: p.str("model")?.to_string(),
            revision: p.str("model")?.split_once('@').map(|(_, r)| r.to_string()),
            weight_fingerprint: model_params::weight_fingerprint(&model_dir)?,
            hooks: hooks.iter().zip(&widths).map(|(h, &d)| HookSpec { name: h.clone(), d }).collect(),
            dtype,
            processing: json!({ "processing": p.str("processing")?, "ln_hook": p.str("ln_hook")? }),
            token_artifact: token_key,
            context_size: cctx,
            extra: json!({ "tokenizer_fingerprint": tokenizer_fingerprint }),
        };
        let mut opts = WriterOptions::for_meta(&meta);
        opts.allow_nonfinite = p.bool("allow_nonfinite")?;
        let shard_rows = (p.usize("shard_tokens")? / cctx).max(1) * cctx;
        opts.rows_per_shard = shard_rows;
        opts.row_group_rows = opts.row_group_rows.min(shard_rows);
        let (model_name, revision) = super::train_sae::split_model_reference(&meta.model);
        ctx.describe_tables(&model_name, revision.as_deref().unwrap_or(""), &hooks.join(","));
        let mut writer = ShardedWriter::open(&ctx.partial_dir, meta, opts)?;
        writer.set_provenance(&ctx.provenance())?;
        for d in writer.discarded().to_vec() {
            ctx.warn(format!("saved progress discarded: {d}"));
        }
        // Restart at the first context the saved shards do not cover.
        let start_ctx = (writer.resume_row() as usize / cctx).min(n_ctx);
        if start_ctx > 0 {
            ctx.logln(format!("resuming at context {start_ctx} of {n_ctx}"));
        }
        let model = super::device::runner_on(super::device::gpu_for(device, &p)?, model)?;
        ctx.logln(format!("language model on {}", model.device()));
        ctx.progress.set_total((n_ctx * cctx) as u64, "tokens");
        let started = std::time::Instant::now();
        let mut computed_tokens = 0usize;
        // The store is written on its own thread, so encoding one batch overlaps
        // the forward pass of the next; one batch waits at most.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, usize, saepipe_model::RunOutput)>(1);
        let tokens_ref = &tokens;
        let (names_ref, cfg_ref) = (&names, &cfg);
        let info = std::thread::scope(|scope| {
            let write = scope.spawn(move || -> Result<ShardedWriter> {
                for (b0, b1, out) in rx {
                    let seq: Vec<u64> = (b0..b1).flat_map(|c| std::iter::repeat_n(c as u64, cctx)).collect();
                    let pos: Vec<u32> = (0..(b1 - b0) * cctx).map(|i| (i % cctx) as u32).collect();
                    let rows: Vec<_> = names_ref
                        .iter()
                        .map(|h| h.token_rows(cfg_ref, &out.captured[h.as_str()].1, b1 - b0, cctx))
                        .collect();
                    let values: Vec<&[f32]> = rows.iter().map(|r| r.as_ref()).collect();
                    writer.push(
                        (b0 * cctx) as u64,
                        &Rows { seq: &seq, pos: &pos, token: &tokens_ref[b0 * cctx..b1 * cctx], hooks: &values },
                    )?;
                }
                Ok(writer)
            });
            let lock_held = ctx.lock_held;
            let mut forward = || -> Result<()> {
                for b0 in (start_ctx..n_ctx).step_by(batch) {
                    // Stop between batches: finished shards stay in the partial area.
                    if super::cancel_requested() {
                        return Err(super::StageStop::Interrupted.into());
                    }
                    if !lock_held() {
                        return Err(super::StageStop::LockLost.into());
                    }
                    let b1 = (b0 + batch).min(n_ctx);
                    let mut req = RunRequest {
                        capture: hooks.iter().cloned().collect(),
                        stop_at_layer: stop,
                        ..Default::default()
                    };
                    let out = model.run(&tokens[b0 * cctx..b1 * cctx], b1 - b0, cctx, &mut req)?;
                    if tx.send((b0, b1, out)).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    computed_tokens += (b1 - b0) * cctx;
                    ctx.progress.set_position((b1 * cctx) as u64);
                }
                Ok(())
            };
            let ran = forward();
            drop(tx);
            let written = write.join().map_err(|_| anyhow::anyhow!("the activation store writer panicked"))?;
            // A write error explains a stopped forward better than the other way round.
            let writer =
                written.context("parameter `hooks` (set `allow_nonfinite: true` to store non-finite activations)")?;
            ran?;
            let nonfinite = writer.nonfinite_count();
            anyhow::Ok((writer.finish(&ctx.out_dir)?, nonfinite))
        })?;
        let (info, nonfinite) = info;
        if nonfinite > 0 {
            ctx.warn(format!("{nonfinite} non-finite activation values stored (allow_nonfinite)"));
        }
        let secs = started.elapsed().as_secs_f64();
        ctx.logln(format!("computed {computed_tokens} tokens in {secs:.2}s"));
        Ok(json!({ "tokens": info.total_tokens, "shards": info.shards.len(), "hooks": hooks }))
    }
}
