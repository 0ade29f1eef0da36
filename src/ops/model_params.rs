//! The parameters of a stage that loads the language model (`collect_activations`,
//! `evaluate`, `inspect_features`): declared, parsed and loaded in one place, so
//! every such stage names, defaults and keys them alike.
//!
//! * `model`: the model reference ([`super::model_ref`]); its `config.json` and
//!   weight files are the stage's external inputs (hashed into the cache key).
//! * `processing`, `ln_hook`: TransformerLens weight processing and hook semantics,
//!   for stages that run the forward pass.
//! * `device`, `precision`: where the forward runs (not in the cache key).

use super::{ParamProblem, Params, model_ref};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result};
use saepipe_model::{HookName, LnHook, LoadOptions, Model, ModelConfig, OptionalHooks, Processing};
use serde_json::json;
use std::path::{Path, PathBuf};

const MODEL_DOC: &str = "model reference: a directory, toy/<name>@<rev>, or <org>/<name>@<rev> in the local HF cache";

/// The `model` parameter, required.
pub fn model() -> ParamSpec {
    ParamSpec::required("model", ParamType::Str, MODEL_DOC)
}

/// The `model` parameter, optional (a stage that can use a model but does not
/// need one), with what the model adds.
pub fn optional_model(doc: &'static str) -> ParamSpec {
    ParamSpec::maybe("model", ParamType::Str, doc)
}

/// The parameters of a stage that runs the forward pass: `model`, `processing`
/// and `ln_hook`. `device` and `precision` are [`device`]'s.
pub fn forward() -> Vec<ParamSpec> {
    vec![
        model(),
        ParamSpec::optional(
            "processing",
            ParamType::Str,
            json!("none"),
            "weight processing: none (from_pretrained_no_processing, what SAELens evaluates with), full or transformer_lens (from_pretrained defaults), or steps joined by + (fold_ln+center_unembed)",
        ),
        ParamSpec::optional(
            "ln_hook",
            ParamType::Enum(&["pre_affine", "post_affine"]),
            json!("pre_affine"),
            "lnX.hook_normalized as TransformerLens 3.x (pre_affine) or 2.x (post_affine)",
        ),
    ]
}

/// `device` and `precision`: where the forward runs; results do not depend on
/// it beyond float rounding, so neither is in the cache key.
pub fn device() -> Vec<ParamSpec> {
    vec![
        ParamSpec::optional("device", ParamType::Str, json!("auto"), "auto, cpu, cuda or cuda:N").not_in_key(),
        super::device::precision_param(),
    ]
}

/// The `processing` parameter: none, full (= transformer_lens) or steps joined by `+`.
pub fn processing(name: &str) -> Result<Processing> {
    Processing::parse(name).map_err(|e| anyhow::anyhow!("parameter `processing`: {e}"))
}

/// The `ln_hook` parameter.
pub fn ln_hook(name: &str) -> LnHook {
    if name == "post_affine" { LnHook::PostAffine } else { LnHook::PreAffine }
}

/// How the stage loads its model: its `processing` and `ln_hook` where it
/// declares them, else none and TransformerLens 3.x semantics.
pub fn load_options(params: &Params) -> Result<LoadOptions> {
    let processing = params.opt_str("processing").map(processing).transpose()?;
    let ln_hook = params.opt_str("ln_hook").map(ln_hook).unwrap_or_default();
    Ok(LoadOptions { processing, ln_hook })
}

/// Resolves `model` (downloading it where allowed) and loads it.
pub fn load(params: &Params, base_dir: &Path) -> Result<(PathBuf, Model)> {
    let dir = model_ref::resolve(params.str("model")?, base_dir)?;
    let model =
        Model::load(&dir, &load_options(params)?).with_context(|| format!("loading model {}", dir.display()))?;
    Ok((dir, model))
}

/// The external inputs of a stage that loads a model: `config.json` and every
/// weight file the load reads (single or sharded, safetensors or torch pickles);
/// none when the stage has no `model`.
pub fn external_inputs(params: &Params, base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    match params.opt_str("model") {
        Some(spec) => model_inputs(&model_ref::resolve(spec, base_dir)?),
        None => Ok(Vec::new()),
    }
}

/// [`external_inputs`] of the model in `dir`.
pub fn model_inputs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = vec![("model/config.json".to_string(), dir.join("config.json"))];
    for f in saepipe_model::weights::weight_files(dir)?.all() {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push((format!("model/{name}"), f));
    }
    Ok(out)
}

/// Content fingerprint of a model's weights (blake3 over the files a load reads).
pub fn weight_fingerprint(dir: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    for f in saepipe_model::weights::weight_files(dir)?.all() {
        h.update_mmap_rayon(&f)?;
    }
    Ok(h.finalize().to_hex().to_string())
}

/// The model's config.json when the model is available locally (never
/// downloads: validation must not touch the network).
pub fn local_config(params: &Params, base_dir: &Path) -> Option<ModelConfig> {
    let dir = model_ref::resolve_local(params.opt_str("model")?, base_dir)?;
    ModelConfig::from_file(&dir.join("config.json")).ok()
}

/// The hook names of list parameter `param` checked against the model's
/// config.json (when the model is available locally), before anything runs: an
/// unknown hook gets the closest valid name, a layer the model lacks the
/// model's layer count.
pub fn check_hooks(params: &Params, base_dir: &Path, param: &'static str) -> Vec<ParamProblem> {
    let Some(cfg) = local_config(params, base_dir) else { return Vec::new() };
    let hooks = params.str_list(param).unwrap_or_default();
    let mut problems: Vec<ParamProblem> = hooks
        .iter()
        .enumerate()
        .filter_map(|(i, h)| HookName::check(&cfg, h).err().map(|e| (param, Some(i), e.to_string())))
        .collect();
    // Optional hooks a model cannot have together (TransformerLens's flags).
    if let Err(e) = OptionalHooks::of(hooks.iter().map(String::as_str)).check(&cfg) {
        problems.push((param, None, e.to_string()));
    }
    problems
}
