//! The top-level sections of a pipeline file that say how and where it runs,
//! not what it computes: the remote cache (`cache:`) and the executor
//! (`executor:`, `slurm:`). None of them is part of any cache key.

use super::diag::Diagnostics;
use super::yaml::{Entry, Node, Yaml};

/// Keys of the top-level `cache:` mapping.
const CACHE_KEYS: &[&str] = &["remote", "pull", "push", "team"];

/// `executor: local|slurm` and the `slurm:` settings of every job (checked
/// here, with did-you-mean, so a typo fails before anything is submitted).
pub(super) fn load_executor(root: &Node, d: &mut Diagnostics) -> (bool, saepipe_slurm::SlurmSettings) {
    let slurm = match root.get("executor").map(|e| (e, e.value.as_str())) {
        None | Some((_, Some("local"))) => false,
        Some((_, Some("slurm"))) => true,
        Some((e, other)) => {
            let found = other.map(|o| format!("`{o}`")).unwrap_or_else(|| e.value.kind().to_string());
            d.error(e.value.pos, None, Some("executor"), format!("expected `local` or `slurm`, found {found}"));
            false
        }
    };
    let settings = root.get("slurm").map(|e| load_slurm(e, None, d)).unwrap_or_default();
    (slurm, settings)
}

/// A `slurm:` mapping: the pipeline's (`stage` None) or one stage's, whose
/// settings go over the pipeline's. Every problem is reported at its field.
pub(super) fn load_slurm(e: &Entry, stage: Option<&str>, d: &mut Diagnostics) -> saepipe_slurm::SlurmSettings {
    let serde_json::Value::Object(map) = e.value.to_json() else {
        d.error(e.value.pos, stage, Some("slurm"), format!("expected a mapping, found {}", e.value.kind()));
        return Default::default();
    };
    match saepipe_slurm::SlurmSettings::from_json(&map) {
        Ok(s) => s,
        Err(errors) => {
            for err in errors {
                let pos = e.value.get(&err.field).map(|f| f.key_pos).unwrap_or(e.value.pos);
                d.error(pos, stage, Some(&format!("slurm.{}", err.field)), err.message);
            }
            Default::default()
        }
    }
}

/// The top-level `cache:` mapping: `remote` (a URL), `pull` and `push`
/// (booleans, both true by default), and `team` (a read-only team cache
/// directory under the private one, relative to `base_dir`).
pub(super) fn load_cache_section(
    root: &Node,
    base_dir: &std::path::Path,
    d: &mut Diagnostics,
) -> (Option<crate::engine::RemoteSettings>, Option<std::path::PathBuf>) {
    let Some(e) = root.get("cache") else { return (None, None) };
    let Some(entries) = e.value.as_map() else {
        d.error(e.value.pos, None, Some("cache"), format!("expected a mapping, found {}", e.value.kind()));
        return (None, None);
    };
    let mut url = None;
    let mut team = None;
    let (mut pull, mut push) = (true, true);
    for entry in entries {
        match entry.key.as_str() {
            "remote" => match entry.value.as_str() {
                Some(u) if !u.is_empty() => url = Some(u.to_string()),
                _ => {
                    d.error(
                        entry.value.pos,
                        None,
                        Some("cache.remote"),
                        "expected a URL (s3://, gs://, az://, https://, file://) or a directory",
                    );
                }
            },
            "team" => match entry.value.as_str() {
                Some(dir) if !dir.is_empty() => team = Some(base_dir.join(dir)),
                _ => {
                    d.error(entry.value.pos, None, Some("cache.team"), "expected the team cache's directory");
                }
            },
            "pull" | "push" => match entry.value.value {
                Yaml::Bool(b) => *(if entry.key == "pull" { &mut pull } else { &mut push }) = b,
                _ => {
                    d.error(
                        entry.value.pos,
                        None,
                        Some(&format!("cache.{}", entry.key)),
                        format!("expected true or false, found {}", entry.value.kind()),
                    );
                }
            },
            other => d.unknown(entry.key_pos, None, Some("cache"), "cache setting", other, CACHE_KEYS.iter().copied()),
        }
    }
    let remote = url.map(|url| crate::engine::RemoteSettings { url, pull, push });
    if remote.is_none() && team.is_none() {
        d.error(e.value.pos, None, Some("cache"), "`cache:` needs `remote: URL` or `team: DIR`");
    }
    (remote, team)
}
