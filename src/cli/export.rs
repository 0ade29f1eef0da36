//! `saepipe export KEY DIR`: an artifact copied out of the cache into a
//! directory that people without saepipe can use: the payload (hard links to
//! the cache's files where the file system allows), `_README.md` saying what it
//! is and how to open it, and `_saepipe.json` with the same facts for programs.
//!
//! Everything in the directory that is not data has a name starting with `_`,
//! which pyarrow (and so pandas) skips when it opens the directory as a Parquet
//! dataset. That is also why the description is `_README.md`: a file
//! named `README.md` makes `pandas.read_parquet(dir)` fail (pyarrow tries to
//! read it as Parquet).

mod describe;

use super::{Exit, exit};
use anyhow::{Context, Result, bail};
use saepipe_cache::{Cache, Key};
use std::path::{Path, PathBuf};

/// The human-readable description in an exported directory.
pub(crate) const README_FILE: &str = "_README.md";
/// The machine-readable description in an exported directory.
pub(crate) const DESCRIPTION_FILE: &str = "_saepipe.json";

/// Exports the artifact `key` (a key or unique prefix) of `cache` into `dir`,
/// which must be new or empty. With `copy`, files are copied even where a hard
/// link would do.
pub(super) fn export(cache: &Cache, key: &str, dir: &Path, copy: bool) -> Result<i32> {
    let k = cache
        .resolve_prefix(key)
        .with_context(|| format!("cannot export `{key}` from the cache {}", cache.root().display()))?;
    check_target(dir)?;
    let created = std::fs::symlink_metadata(dir).is_err();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot export {k} to {}: creating it", dir.display()))?;
    let outcome = export_into(cache, &k, dir, copy);
    if outcome.is_err() {
        clean_up(dir, created);
    }
    let (linked, copied, bytes) = outcome?;
    println!(
        "exported {k} to {} ({} in {} file(s): {linked} hard-linked, {copied} copied); see {}",
        dir.display(),
        crate::exec::plan::human_bytes(bytes),
        linked + copied,
        dir.join(README_FILE).display()
    );
    Ok(exit::OK)
}

/// Refuses a target that exists and is not an empty directory.
fn check_target(dir: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(dir) else { return Ok(()) };
    if !meta.is_dir() {
        bail!("cannot export to {}: it exists and is not a directory", dir.display());
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot export to {}: listing it", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !names.is_empty() {
        names.sort();
        let shown: Vec<String> = names.iter().take(3).map(|n| format!("`{n}`")).collect();
        let more = if names.len() > 3 { format!(" and {} more", names.len() - 3) } else { String::new() };
        bail!(
            "cannot export to {}: the directory is not empty (it holds {}{more}); give a new or empty directory",
            dir.display(),
            shown.join(", ")
        );
    }
    Ok(())
}

/// Everything after the target exists: returns (files linked, files copied, bytes).
fn export_into(cache: &Cache, k: &Key, dir: &Path, copy: bool) -> Result<(usize, usize, u64)> {
    let target = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    if target.starts_with(cache.root()) {
        bail!("cannot export to {}: it is inside the cache {}", dir.display(), cache.root().display());
    }
    // Leased, so a rebuild or gc cannot delete the generation while it is read.
    let lease = cache
        .lease(k)?
        .with_context(|| format!("cannot export {k}: it is no longer in the cache {}", cache.root().display()))?;
    let m = lease.manifest();
    // The bytes handed out (and read below) are the ones the manifest records, as for any reader of the cache.
    let damaged = lease.damaged_files(&|_| false);
    if !damaged.is_empty() {
        bail!(Exit(
            exit::CACHE,
            format!(
                "cannot export {k}: the artifact is damaged in the cache ({}); nothing was exported. Rebuild it (run its pipeline) or remove it with `saepipe cache rm {}`",
                damaged.join("; "),
                k.short()
            )
        ));
    }
    let content = describe::survey(lease.dir(), m).with_context(|| format!("cannot export {k}"))?;
    let (mut linked, mut copied) = (0, 0);
    for (f, dest) in &content.files {
        let from = lease.dir().join(&f.path);
        let to = dir.join(dest);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        // A hard link costs no space; across file systems (or where links are not allowed) a copy.
        if !copy && std::fs::hard_link(&from, &to).is_ok() {
            linked += 1;
            continue;
        }
        std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        copied += 1;
    }
    let tokenizer = tokenizer_of(cache, &content, m);
    let (json, readme) = describe::render(&content, m, tokenizer, dir);
    let readme_path = dir.join(README_FILE);
    std::fs::write(&readme_path, readme).with_context(|| format!("writing {}", readme_path.display()))?;
    // The machine-readable description last: its presence says the export is complete.
    let json_path = dir.join(DESCRIPTION_FILE);
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok((linked, copied, m.total_bytes))
}

/// What the token table an activation store was computed on says about its
/// tokenizer, if that artifact is still in the cache.
fn tokenizer_of(cache: &Cache, content: &describe::Content, m: &saepipe_cache::Manifest) -> Option<serde_json::Value> {
    let store = content.store.as_ref()?;
    let key = store.meta.token_artifact.parse::<Key>().ok().or_else(|| m.inputs.get("tokens").copied())?;
    let tokens = cache.lookup(&key).ok()??;
    let mut out = serde_json::Map::new();
    for name in ["tokenizer", "mode", "context_size", "corpus"] {
        if let Some(v) = tokens.params.get(name) {
            out.insert(name.to_string(), v.clone());
        }
    }
    Some(serde_json::Value::Object(out))
}

/// Removes what a failed export wrote: the directory if it made it, else what
/// it put into the (then empty) directory.
fn clean_up(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(|e| e.ok()) {
        let p: PathBuf = e.path();
        let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}
