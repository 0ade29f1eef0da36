//! Resolving a model reference to a local HF-format directory.
//!
//! * a path (relative to the pipeline file) to a directory with `config.json`;
//! * `toy/<name>@<revision>`: the embedded toy family, `models/<name>/<revision>`
//!   under `$SAEPIPE_MODELS`, next to the pipeline file or one level up;
//! * `<org>/<name>[@<revision>]`: a model in the local Hugging Face cache
//!   (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`), the layout
//!   `huggingface_hub` writes, so models downloaded by Python tools are reused;
//!   downloaded there from `$HF_ENDPOINT` (with `$HF_TOKEN`) when missing,
//!   unless `HF_HUB_OFFLINE` is set.

use anyhow::{Context, Result, anyhow, bail};
use saepipe_model::hub::{HubCache, HubEndpoint, HubRef};
use std::path::{Path, PathBuf};

/// The model's local directory (see the module docs for the reference forms).
/// A hub model missing from the local cache is downloaded; while downloads are
/// forbidden the error is a [`NotDownloaded`](crate::engine::NotDownloaded), and
/// with `HF_HUB_OFFLINE` set it is an error saying how to fetch the model.
pub fn resolve(spec: &str, base_dir: &Path) -> Result<PathBuf> {
    resolve_allowing(spec, base_dir, super::downloads_allowed())
}

/// The model's local directory if it is available without downloading.
pub fn resolve_local(spec: &str, base_dir: &Path) -> Option<PathBuf> {
    resolve_allowing(spec, base_dir, false).ok()
}

fn resolve_allowing(spec: &str, base_dir: &Path, download: bool) -> Result<PathBuf> {
    let direct = base_dir.join(spec);
    if !spec.contains('@') && direct.join("config.json").exists() {
        return Ok(direct);
    }
    let (name, rev) = spec.split_once('@').unwrap_or((spec, "main"));
    if let Some(toy) = name.strip_prefix("toy/") {
        let mut roots: Vec<PathBuf> = std::env::var_os("SAEPIPE_MODELS").map(PathBuf::from).into_iter().collect();
        roots.extend([base_dir.join("models"), base_dir.join("../models"), PathBuf::from("models")]);
        for r in &roots {
            let dir = r.join(toy).join(rev);
            if dir.join("config.json").exists() {
                return Ok(dir);
            }
        }
        let avail: Vec<String> = roots
            .iter()
            .filter_map(|r| std::fs::read_dir(r.join(toy)).ok())
            .flat_map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("config.json").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
            })
            .collect();
        if avail.is_empty() {
            bail!(
                "toy model `{toy}` not found (looked in {})",
                roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        bail!("toy model `{toy}` has no revision `{rev}` (available: {})", avail.join(", "));
    }
    if direct.is_dir() {
        bail!("model directory {} has no config.json", direct.display());
    }
    let hub_ref = HubRef::parse(spec).map_err(|_| {
        anyhow!("model `{spec}` is neither a local directory with config.json, a toy model, nor a Hugging Face reference of the form org/name[@revision]")
    })?;
    let cache = HubCache::from_env();
    if let Some(dir) = cache.lookup(&hub_ref)? {
        return Ok(dir);
    }
    if !download {
        return Err(super::NotDownloaded { what: format!("model `{spec}`") }.into());
    }
    if cache.offline {
        bail!(
            "model `{spec}` is neither a local directory with config.json nor in the Hugging Face cache ({}), and HF_HUB_OFFLINE is set: fetch it once with `huggingface-cli download {} --revision {}` or unset HF_HUB_OFFLINE",
            cache.repo_dir(&hub_ref).display(),
            hub_ref.repo,
            hub_ref.revision
        );
    }
    let endpoint = HubEndpoint::from_env();
    eprintln!(
        "model `{spec}` is not in the Hugging Face cache; downloading it from {} into {}",
        endpoint.url,
        cache.root.display()
    );
    let dir = cache
        .download(&hub_ref, &endpoint, &mut |line| eprintln!("  {line}"))
        .with_context(|| format!("model `{spec}` is neither a local directory with config.json nor in the Hugging Face cache, and downloading it failed"))?;
    Ok(dir)
}
