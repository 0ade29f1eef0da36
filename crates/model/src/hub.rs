//! Resolving `org/name@revision` through the Hugging Face cache layout
//! (`<cache>/models--org--name/{refs/<rev>, snapshots/<sha>/}`), as written by
//! `huggingface_hub`. Downloading is not done here: a model missing from the
//! cache is an error that says how to fetch it.

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};

/// A model reference: `org/name` at a revision (branch, tag or commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    pub repo: String,
    pub revision: String,
}

impl HubRef {
    /// Parses `org/name` or `org/name@revision` (default revision `main`).
    pub fn parse(spec: &str) -> Result<HubRef> {
        let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        let valid = |s: &str| !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| valid(p)) {
            return Err(ModelError::Input(format!("`{spec}` is not a model reference of the form org/name[@revision]")));
        }
        if revision.is_empty() || revision.contains("..") || revision.starts_with('/') {
            return Err(ModelError::Input(format!("`{spec}`: invalid revision `{revision}`")));
        }
        Ok(HubRef { repo: repo.to_string(), revision: revision.to_string() })
    }
}

/// The local HF cache: its root directory and whether downloads are disallowed.
#[derive(Clone, Debug)]
pub struct HubCache {
    pub root: PathBuf,
    pub offline: bool,
}

impl HubCache {
    /// HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
    /// else ~/.cache/huggingface/hub; offline when HF_HUB_OFFLINE is truthy.
    pub fn from_env() -> HubCache {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
            .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        HubCache { root, offline }
    }

    /// The snapshot directory holding `r`'s files.
    pub fn resolve(&self, r: &HubRef) -> Result<PathBuf> {
        let repo_dir = self.root.join(format!("models--{}", r.repo.replace('/', "--")));
        let is_sha = r.revision.len() == 40 && r.revision.chars().all(|c| c.is_ascii_hexdigit());
        let sha = if is_sha {
            Some(r.revision.clone())
        } else {
            read_ref(&repo_dir.join("refs").join(&r.revision))?
        };
        if let Some(sha) = sha {
            let snap = repo_dir.join("snapshots").join(&sha);
            if snap.join("config.json").is_file() {
                return Ok(snap);
            }
        }
        let how = format!("fetch it with `huggingface-cli download {} --revision {}`", r.repo, r.revision);
        let why = if self.offline { "HF_HUB_OFFLINE is set and it is not in the local cache" } else { "it is not in the local cache (saepipe does not download models yet)" };
        Err(ModelError::Input(format!("model {}@{}: {why} at {}; {how}", r.repo, r.revision, repo_dir.display())))
    }
}

fn read_ref(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let sha = s.trim().to_string();
            if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ModelError::Input(format!("{}: not a commit hash", path.display())));
            }
            Ok(Some(sha))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModelError::Io { path: path.into(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(HubRef::parse("EleutherAI/pythia-70m-deduped@step3000").unwrap(), HubRef { repo: "EleutherAI/pythia-70m-deduped".into(), revision: "step3000".into() });
        assert_eq!(HubRef::parse("openai-community/gpt2").unwrap().revision, "main");
        for bad in ["gpt2", "a/b/c", "../x/y", "a/b@", "a/b@../../etc"] {
            assert!(HubRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_refs_and_commits_in_the_cache_layout() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("models--EleutherAI--pythia-70m");
        let sha = "a".repeat(40);
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(&sha)).unwrap();
        std::fs::write(repo.join("refs/step1000"), format!("{sha}\n")).unwrap();
        std::fs::write(repo.join("snapshots").join(&sha).join("config.json"), "{}").unwrap();
        let cache = HubCache { root: t.path().into(), offline: true };
        let want = repo.join("snapshots").join(&sha);
        assert_eq!(cache.resolve(&HubRef::parse("EleutherAI/pythia-70m@step1000").unwrap()).unwrap(), want);
        assert_eq!(cache.resolve(&HubRef::parse(&format!("EleutherAI/pythia-70m@{sha}")).unwrap()).unwrap(), want);
        let e = cache.resolve(&HubRef::parse("EleutherAI/pythia-70m@step2000").unwrap()).unwrap_err().to_string();
        assert!(e.contains("EleutherAI/pythia-70m@step2000: HF_HUB_OFFLINE is set") && e.contains("huggingface-cli download EleutherAI/pythia-70m --revision step2000"), "{e}");
    }
}
