//! `collect_activations`: run an LM over a token table and store the activations
//! at TransformerLens hook points as Parquet shards (one row per token).
//!
//! Shards are written one at a time into the stage's partial area, each under a
//! temporary name and renamed when complete, so an interrupted run redoes at most
//! one shard. Shard contents depend only on the tokens, model and hooks, so a
//! resumed store is byte-identical to an uninterrupted one.

use super::{Op, Params, StageCtx, model_ref};
use crate::pipeline::schema::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_data::{Dtype, HookSpec, Rows, ShardedWriter, StoreMeta, TokenTableReader, WriterOptions};
use saepipe_model::{LnHook, LoadOptions, Model, Processing, RunRequest};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub struct CollectActivationsOp;

/// Content fingerprint of a model's weights (blake3 over the files a load reads).
fn weight_fingerprint(dir: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    for f in saepipe_model::weights::weight_files(dir)?.all() {
        h.update_mmap_rayon(&f)?;
    }
    Ok(h.finalize().to_hex().to_string())
}

/// The external inputs of a stage that loads a model: `config.json` and every
/// weight file the load reads (single or sharded, safetensors or torch pickles).
pub fn model_inputs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = vec![("model/config.json".to_string(), dir.join("config.json"))];
    for f in saepipe_model::weights::weight_files(dir)?.all() {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push((format!("model/{name}"), f));
    }
    Ok(out)
}

/// Hook names checked against the model's config.json (when the model is
/// available locally), before anything runs: an unknown hook or a layer the
/// model lacks is reported with the closest valid name.
pub fn check_hooks(params: &Params, base_dir: &Path) -> Vec<super::ParamProblem> {
    let Some(dir) = params.opt_str("model").and_then(|m| model_ref::resolve_local(m, base_dir)) else {
        return Vec::new();
    };
    let Ok(cfg) = saepipe_model::ModelConfig::from_file(&dir.join("config.json")) else { return Vec::new() };
    let hooks = params.str_list("hooks").unwrap_or_default();
    hooks
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            saepipe_model::check_hook(&cfg, h).err().map(|e| {
                (
                    "hooks",
                    Some(i),
                    format!("{e}; `{}` has {} layers", params.opt_str("model").unwrap_or_default(), cfg.n_layers),
                )
            })
        })
        .collect()
}

/// The `processing` parameter: none, full (= transformer_lens) or steps joined by `+`.
pub fn processing(name: &str) -> Result<Processing> {
    Processing::parse(name).map_err(|e| anyhow::anyhow!("parameter `processing`: {e}"))
}

pub fn ln_hook(name: &str) -> LnHook {
    if name == "post_affine" { LnHook::PostAffine } else { LnHook::PreAffine }
}

/// Last block a set of hooks needs (TransformerLens `stop_at_layer`), or None for a full pass.
pub fn stop_layer(hooks: &[String]) -> Option<usize> {
    let mut deepest = 0;
    for h in hooks {
        let layer =
            h.strip_prefix("blocks.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok())?;
        deepest = deepest.max(layer + 1);
    }
    Some(deepest)
}

impl Op for CollectActivationsOp {
    fn name(&self) -> &'static str {
        "collect_activations"
    }
    fn version(&self) -> u32 {
        // 2: store.json carries each shard's blake3, checked by every reader.
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
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required(
                "model",
                ParamType::Str,
                "model reference: a directory, toy/<name>@<rev>, or <org>/<name>@<rev> in the local HF cache",
            ),
            ParamSpec::required("tokens", ParamType::Artifact, "a tokenize stage"),
            ParamSpec::required(
                "hooks",
                ParamType::List(Box::new(ParamType::Str)),
                "TransformerLens hook names, e.g. blocks.3.hook_resid_pre",
            ),
            ParamSpec::optional(
                "processing",
                ParamType::Str,
                json!("none"),
                "weight processing: none (from_pretrained_no_processing), full or transformer_lens (from_pretrained defaults), or steps joined by + (fold_ln+center_unembed)",
            ),
            ParamSpec::optional(
                "ln_hook",
                ParamType::Enum(&["pre_affine", "post_affine"]),
                json!("pre_affine"),
                "lnX.hook_normalized as TransformerLens 3.x (pre_affine) or 2.x (post_affine)",
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
            ParamSpec::optional("device", ParamType::Str, json!("auto"), "auto, cpu, cuda or cuda:N").not_in_key(),
            super::device::precision_param(),
        ]
    }
    fn external_inputs(&self, params: &Params, base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        model_inputs(&model_ref::resolve(params.str("model")?, base_dir)?)
    }
    fn check_params(&self, params: &Params, base_dir: &Path) -> Vec<super::ParamProblem> {
        check_hooks(params, base_dir)
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let device = super::device::resolve(&p)?;
        let model_dir = model_ref::resolve(p.str("model")?, &ctx.base_dir)?;
        let model = Model::load(
            &model_dir,
            &LoadOptions { processing: Some(processing(p.str("processing")?)?), ln_hook: ln_hook(p.str("ln_hook")?) },
        )
        .with_context(|| format!("loading model {}", model_dir.display()))?;
        let hooks = p.str_list("hooks")?;
        if hooks.is_empty() {
            bail!("parameter `hooks` is empty");
        }
        for h in &hooks {
            model.check_hook(h).context("parameter `hooks`")?;
        }
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
        let stop = stop_layer(&hooks);
        let widths: Vec<usize> = hooks
            .iter()
            .map(|h| saepipe_model::hook_shape(&model.cfg, h, 1, 1).iter().skip(2).product::<usize>())
            .collect();
        let token_key = super::artifact_key(&tokens_dir);
        let meta = StoreMeta {
            model: p.str("model")?.to_string(),
            revision: p.str("model")?.split_once('@').map(|(_, r)| r.to_string()),
            weight_fingerprint: weight_fingerprint(&model_dir)?,
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
        let mut writer = ShardedWriter::open(&ctx.partial_dir, meta, opts)?;
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
        let hooks_ref = &hooks;
        let info = std::thread::scope(|scope| {
            let write = scope.spawn(move || -> Result<ShardedWriter> {
                for (b0, b1, out) in rx {
                    let seq: Vec<u64> = (b0..b1).flat_map(|c| std::iter::repeat_n(c as u64, cctx)).collect();
                    let pos: Vec<u32> = (0..(b1 - b0) * cctx).map(|i| (i % cctx) as u32).collect();
                    let values: Vec<&[f32]> = hooks_ref.iter().map(|h| out.captured[h].1.as_slice()).collect();
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
