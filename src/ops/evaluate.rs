//! `evaluate`: sparsity–faithfulness metrics of SAEs and transcoders spliced into
//! the language model (SAELens `run_evals` definitions; docs/evaluate.md).
//!
//! Output: `metrics.parquet` (one row per coder), `features.parquet` (one row per
//! coder and feature) and `summary.json` (the same metrics and the options).

use super::table::{Column, Table};
use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, Params, StageCtx, model_params};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_cuda::{Gpu, GpuTopKSae};
use saepipe_data::TokenTableReader;
use saepipe_eval::{CoderForward, CoderReport, EvalOptions, NamedCoder, evaluate_until};
use saepipe_sae::{SparseActs, SparseCoder};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `evaluate` op: sparsity and faithfulness metrics of coders spliced into the LM.
pub struct EvaluateOp;

/// Token ids left out of the metrics: the token table's BOS/EOS/pad for `true`,
/// none for `false`, or an explicit list.
fn excluded_tokens(spec: Option<&Value>, meta: &saepipe_data::TokenTableMeta) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = match spec {
        None | Some(Value::Bool(true)) => [meta.bos_id, meta.eos_id, meta.pad_id].into_iter().flatten().collect(),
        Some(Value::Bool(false)) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect::<Option<_>>()
            .context("parameter `exclude_special_tokens` must be true, false or a list of token ids")?,
        Some(_) => bail!("parameter `exclude_special_tokens` must be true, false or a list of token ids"),
    };
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// How many contexts to evaluate.
fn n_contexts(p: &Params, available: usize, ctx: usize, batch: usize) -> Result<usize> {
    let mut n = available;
    if let Some(b) = p.get("n_batches") {
        n = n.min(b.as_u64().context("parameter `n_batches` must be a non-negative integer")? as usize * batch);
    }
    if let Some(t) = p.get("max_tokens") {
        n = n.min(t.as_u64().context("parameter `max_tokens` must be a non-negative integer")? as usize / ctx);
    }
    if n == 0 {
        bail!("no tokens to evaluate (the token table has {available} contexts of {ctx})");
    }
    Ok(n)
}

fn load_coders(ctx: &StageCtx) -> Result<Vec<NamedCoder>> {
    // (directory or file, label from the reference for `paths` entries, the
    // SAELens-registry coder a `saelens:` reference loads as)
    let mut sources: Vec<(PathBuf, Option<String>, Option<SparseCoder>)> =
        ctx.input_list("saes").iter().map(|d| (d.clone(), None, None)).collect();
    for spec in ctx.params.str_list("paths")? {
        let path = super::coder_ref::resolve(&spec, &ctx.base_dir).context("parameter `paths`")?;
        let label = super::coder_ref::label(&spec, &path);
        let pretrained = super::coder_ref::load_pretrained(&spec, &path).context("parameter `paths`")?;
        sources.push((path, Some(label), pretrained));
    }
    if sources.is_empty() {
        bail!("nothing to evaluate: give `saes` (e.g. train[*]) and/or `paths`");
    }
    let mut coders: Vec<NamedCoder> = Vec::new();
    for (dir, ref_label, pretrained) in sources {
        let coder = match pretrained {
            Some(c) => c,
            None => load_trained_coder(&dir)?,
        };
        let label = match ref_label {
            Some(l) if !coder.metadata.extra.contains_key("saepipe_instance") => l,
            _ => coder_label(&coder, &dir, ctx.producer(&dir)),
        };
        if coders.iter().any(|c| c.label == label) {
            bail!(
                "two coders are labelled `{label}` (the second is {}); labels come from the training stage instance or the directory name",
                dir.display()
            );
        }
        coders.push(NamedCoder::new(label, coder));
    }
    Ok(coders)
}

/// A TopK SAE's forward on the GPU, for evaluation.
struct GpuCoder {
    gpu: Arc<Gpu>,
    sae: GpuTopKSae,
}

impl CoderForward for GpuCoder {
    fn device(&self) -> String {
        format!("cuda:{}", self.gpu.ctx.ordinal())
    }
    fn forward(&self, x: &[f32], n: usize) -> std::result::Result<(SparseActs, Vec<f32>), String> {
        let (acts, out) = self.sae.forward_csr(&self.gpu, x, n).map_err(|e| e.to_string())?;
        Ok((acts.into(), out))
    }
}

/// Moves every coder the GPU can encode onto it; returns their labels.
fn gpu_coders(gpu: &Arc<Gpu>, coders: &mut [NamedCoder]) -> Result<Vec<String>> {
    let mut moved = Vec::new();
    for nc in coders.iter_mut() {
        // The GPU encodes plain TopK SAEs; every other coder stays on the CPU.
        let Some(tensors) = nc.coder.as_topk_sae() else { continue };
        let sae = GpuTopKSae::from_tensors(gpu, &tensors)
            .with_context(|| format!("copying coder `{}` to the GPU", nc.label))?;
        nc.on_device = Some(Box::new(GpuCoder { gpu: gpu.clone(), sae }));
        moved.push(nc.label.clone());
    }
    Ok(moved)
}

fn f64_col(reports: &[CoderReport], f: impl Fn(&CoderReport) -> f64) -> Column {
    Column::F64(reports.iter().map(f).collect())
}

fn metrics_table(reports: &[CoderReport], excluded: &str) -> Table {
    let s = |f: &dyn Fn(&CoderReport) -> String| Column::Str(reports.iter().map(f).collect());
    Table::default()
        .with("coder", s(&|r| r.label.clone()))
        .with("kind", s(&|r| r.kind.to_string()))
        .with("architecture", s(&|r| r.architecture.clone()))
        .with("hook_in", s(&|r| r.hook_in.clone()))
        .with("hook_out", s(&|r| r.hook_out.clone()))
        .with("d_sae", Column::I64(reports.iter().map(|r| r.d_sae as i64).collect()))
        .with("n_tokens", Column::I64(reports.iter().map(|r| r.recon.n_tokens as i64).collect()))
        .with("n_tokens_total", Column::I64(reports.iter().map(|r| r.recon.n_tokens_total as i64).collect()))
        .with("excluded_tokens", s(&|_| excluded.to_string()))
        .with("l0", f64_col(reports, |r| r.recon.l0))
        .with("l0_with_bos", f64_col(reports, |r| r.recon.l0_with_bos))
        .with("l1", f64_col(reports, |r| r.recon.l1))
        .with("mse", f64_col(reports, |r| r.recon.mse))
        .with("cosine_similarity", f64_col(reports, |r| r.recon.cosine_similarity))
        .with("l2_norm_in", f64_col(reports, |r| r.recon.l2_norm_in))
        .with("l2_norm_out", f64_col(reports, |r| r.recon.l2_norm_out))
        .with("l2_ratio", f64_col(reports, |r| r.recon.l2_ratio))
        .with("relative_reconstruction_bias", f64_col(reports, |r| r.recon.relative_reconstruction_bias))
        .with("explained_variance", f64_col(reports, |r| r.recon.explained_variance))
        .with("explained_variance_legacy", f64_col(reports, |r| r.recon.explained_variance_legacy))
        .with("ce_clean", f64_col(reports, |r| r.downstream.ce_clean))
        .with("ce_spliced", f64_col(reports, |r| r.downstream.ce_spliced))
        .with("ce_zero_ablation", f64_col(reports, |r| r.downstream.ce_zero_ablation))
        .with("ce_loss_score", f64_col(reports, |r| r.downstream.ce_loss_score))
        .with("kl_spliced", f64_col(reports, |r| r.downstream.kl_spliced))
        .with("kl_zero_ablation", f64_col(reports, |r| r.downstream.kl_zero_ablation))
        .with("kl_div_score", f64_col(reports, |r| r.downstream.kl_div_score))
        .with("dead_features", Column::I64(reports.iter().map(|r| r.dead_features as i64).collect()))
        .with("dense_features", Column::I64(reports.iter().map(|r| r.dense_features as i64).collect()))
}

fn features_table(reports: &[CoderReport]) -> Table {
    let (mut coder, mut feature, mut density, mut mean, mut max) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in reports {
        let f = &r.features;
        coder.extend(std::iter::repeat_n(r.label.clone(), f.density.len()));
        feature.extend(0..f.density.len() as i64);
        density.extend(&f.density);
        mean.extend(&f.mean_activation);
        max.extend(&f.max_activation);
    }
    Table::default()
        .with("coder", Column::Str(coder))
        .with("feature", Column::I64(feature))
        .with("density", Column::F64(density))
        .with("mean_activation", Column::F64(mean))
        .with("max_activation", Column::F64(max))
}

impl Op for EvaluateOp {
    fn name(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "sparsity–faithfulness metrics of SAEs and transcoders spliced into the LM (SAELens run_evals definitions)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["metrics.parquet", "features.parquet", "summary.json"]
    }
    fn resource(&self, params: &super::Params) -> super::Resource {
        super::device::resource(params)
    }
    fn slurm_defaults(&self, params: &super::Params) -> saepipe_slurm::SlurmSettings {
        super::device::slurm_defaults(params)
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        let mut specs = model_params::forward();
        specs.extend([
            ParamSpec::required("tokens", Artifact, "a tokenize stage (evaluation tokens)"),
            ParamSpec::maybe("saes", Artifacts, "coders from training stages, e.g. train[*]").labelled(),
            ParamSpec::maybe(
                "paths",
                List(Box::new(Str)),
                "coders by reference: SAELens or sparsify directories or transcoder-paper .pt files on disk, or hf:<owner>/<repo>[@<rev>]/<path> in a Hugging Face repo (downloaded into the HF cache), or saelens:<release>/<sae_id> from SAELens's pretrained-SAE registry; hashed by content",
            ),
            ParamSpec::optional(
                "batch_size",
                Int,
                json!(8),
                "contexts per forward pass (SAELens batch_size_prompts; per-batch metrics depend on it)",
            )
            .min(1),
            ParamSpec::maybe("n_batches", Int, "evaluate at most this many batches").min(1),
            ParamSpec::maybe("max_tokens", Int, "evaluate at most this many tokens (whole contexts)").min(1),
            ParamSpec::optional(
                "exclude_special_tokens",
                Any,
                json!(true),
                "true: leave BOS/EOS/pad out of every metric; false; or a list of token ids",
            ),
            ParamSpec::optional(
                "dense_threshold",
                Float,
                json!(0.1),
                "features firing on more than this fraction of tokens count as dense",
            ),
        ]);
        specs.extend(model_params::device());
        specs
    }
    fn external_inputs(&self, params: &Params, base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let mut out = model_params::external_inputs(params, base_dir)?;
        // `paths` are references (local or hub), keyed by the content they resolve to.
        for (i, spec) in params.str_list("paths")?.iter().enumerate() {
            out.push((format!("paths[{i}]"), super::coder_ref::resolve(spec, base_dir).context("parameter `paths`")?));
        }
        Ok(out)
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let device = super::device::resolve(&p)?;
        let (_, model) = model_params::load(&p, &ctx.base_dir)?;
        let (model_name, revision) = super::train_sae::split_model_reference(p.str("model")?);
        ctx.describe_tables(&model_name, revision.as_deref().unwrap_or(""), "");
        let mut coders = load_coders(ctx)?;
        let gpu = super::device::gpu_for(device, &p)?;
        let model = super::device::runner_on(gpu.clone(), model)?;
        if let Some(gpu) = &gpu {
            let on_gpu = gpu_coders(gpu, &mut coders)?;
            let rest = if on_gpu.len() < coders.len() {
                "; the others encode on the CPU (GPU encoding covers TopK SAEs)"
            } else {
                ""
            };
            ctx.logln(format!("coders encoding on the GPU: {on_gpu:?}{rest}"));
        }

        let table = TokenTableReader::open(&ctx.input("tokens")?.join("tokens.parquet"))?;
        let cctx = table.meta.context_size;
        let exclude = excluded_tokens(p.get("exclude_special_tokens"), &table.meta)?;
        let mut tokens = table.read_all()?;
        let batch = p.usize("batch_size")?.max(1);
        let n_ctx = n_contexts(&p, tokens.len() / cctx, cctx, batch)?;
        tokens.truncate(n_ctx * cctx);
        let opts = EvalOptions {
            batch_size: batch,
            exclude_tokens: exclude.clone(),
            dense_threshold: p.f64("dense_threshold")?,
        };
        ctx.logln(format!(
            "evaluating {} coder(s) on {} tokens ({n_ctx} contexts of {cctx}), excluding token ids {exclude:?}",
            coders.len(),
            tokens.len()
        ));

        ctx.logln(format!("language model on {}", model.device()));
        ctx.progress.set_total(tokens.len() as u64, "tokens");
        let progress = ctx.progress;
        let on_batch = &mut |done: usize| {
            progress.set_position(done as u64);
            // Ctrl-C between batches: an evaluation holds nothing worth saving.
            if super::cancel_requested() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        };
        let eval = match evaluate_until(model.as_ref(), &tokens, cctx, &coders, &opts, on_batch) {
            Err(saepipe_eval::EvalError::Stopped { .. }) => return Err(super::StageStop::Interrupted.into()),
            other => other?,
        };
        let t = &eval.timing;
        ctx.logln(format!(
            "{:.2}s: clean forward {:.2}s, zero ablation {:.2}s, coders {:.2}s, spliced forwards {:.2}s ({:.0} tokens/s)",
            t.total_s,
            t.clean_s,
            t.zero_ablation_s,
            t.coders_s,
            t.spliced_s,
            eval.n_tokens as f64 / t.total_s.max(1e-9)
        ));

        let excluded = exclude.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        std::fs::create_dir_all(&ctx.out_dir)?;
        ctx.write_table(&metrics_table(&eval.coders, &excluded), "metrics.parquet")?;
        ctx.write_table(&features_table(&eval.coders), "features.parquet")?;
        let summary = json!({
            "model": p.str("model")?,
            "tokens": eval.n_tokens,
            "contexts": n_ctx,
            "context_size": cctx,
            "batch_size": batch,
            "excluded_tokens": exclude,
            "dense_threshold": opts.dense_threshold,
            "coders": eval.coders,
        });
        ctx.write_output("summary.json", serde_json::to_string_pretty(&summary)?.as_bytes())?;
        // Timings go to the manifest (through the returned metrics), not the
        // artifact's files, so a rerun writes the same bytes.
        Ok(json!({
            "timing_s": eval.timing,
            "coders": eval.coders.iter().map(|r| json!({ "coder": r.label, "l0": r.recon.l0, "ce_loss_score": r.downstream.ce_loss_score, "explained_variance": r.recon.explained_variance })).collect::<Vec<_>>(),
            "tokens": eval.n_tokens,
        }))
    }
}
