//! Resolving a model reference to a local HF-format directory.
//!
//! * a path (relative to the pipeline file) to a directory with `config.json`;
//! * `toy/<name>@<revision>`: the embedded toy family, `models/<name>/<revision>`
//!   under `$SAEPIPE_MODELS`, next to the pipeline file or one level up;
//! * `<org>/<name>[@<revision>]`: a model in the local Hugging Face cache
//!   (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`), the layout
//!   `huggingface_hub` writes, so models downloaded by Python tools are reused.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

pub fn resolve(spec: &str, base_dir: &Path) -> Result<PathBuf> {
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
            .flat_map(|rd| rd.filter_map(|e| e.ok()).filter(|e| e.path().join("config.json").exists()).map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if avail.is_empty() {
            bail!("toy model `{toy}` not found (looked in {})", roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "));
        }
        bail!("toy model `{toy}` has no revision `{rev}` (available: {})", avail.join(", "));
    }
    let hub = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
    let repo = hub.join(format!("models--{}", name.replace('/', "--")));
    let snapshot = match std::fs::read_to_string(repo.join("refs").join(rev)) {
        Ok(sha) => repo.join("snapshots").join(sha.trim()),
        Err(_) => repo.join("snapshots").join(rev),
    };
    if snapshot.join("config.json").exists() {
        return Ok(snapshot);
    }
    bail!(
        "model `{spec}` is neither a local directory with config.json nor in the Hugging Face cache ({}); saepipe does not download models yet: fetch it once with `huggingface-cli download {name} --revision {rev}`",
        repo.display()
    )
}
