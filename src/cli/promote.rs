//! `saepipe cache promote`: publish artifacts of the private cache in the team
//! cache (a shared directory), so the team's runs find them in place. The copy
//! is staged in the team cache, re-hashed against the private manifest and
//! published atomically, under the team key's lock; what the team already has
//! is left alone.

use super::remote::{Labelled, is_pipeline_file, pipeline_keys_and_settings};
use super::{Exit, exit};
use crate::engine::OpRegistry;
use crate::exec::plan::human_bytes;
use anyhow::{Context, Result, bail};
use saepipe_cache::{Cache, Key};
use std::path::{Path, PathBuf};

/// `cache promote TARGETS... [--team DIR]`.
pub(super) fn promote(
    ops: &OpRegistry,
    cache: &Cache,
    targets: &[String],
    team: Option<&Path>,
    sets: &[String],
) -> Result<i32> {
    let mut keys: Vec<Labelled> = Vec::new();
    let mut from_pipeline: Option<PathBuf> = None;
    for t in targets {
        if is_pipeline_file(t) {
            let (k, p) = pipeline_keys_and_settings(ops, cache, &PathBuf::from(t), sets)?;
            keys.extend(k);
            from_pipeline = from_pipeline.or(p.team_cache);
        } else {
            let key = cache.resolve_prefix(t).map_err(|e| anyhow::Error::new(Exit(exit::INVALID, e.to_string())))?;
            keys.push((key, key.to_string()[..16].to_string()));
        }
    }
    let Some(dir) = team.map(Path::to_path_buf).or(from_pipeline) else {
        bail!(Exit(
            exit::INVALID,
            "no team cache: pass --team DIR, set SAEPIPE_TEAM_CACHE, or give the pipeline a `cache: {team: DIR}`"
                .into()
        ));
    };
    if !dir.is_dir() {
        bail!(Exit(exit::INVALID, format!("the team cache {} does not exist", dir.display())));
    }
    let team = Cache::open(&dir).with_context(|| format!("opening the team cache {}", dir.display()))?;
    if team.read_only() {
        bail!(Exit(exit::CACHE, format!("the team cache {} is not writable by this user", dir.display())));
    }
    let (mut promoted, mut present, mut missing) = (0, 0, 0);
    for (key, label) in keys {
        let short = &key.to_string()[..16];
        if team.lookup(&key)?.is_some() {
            println!("in team     {short}  {label}");
            present += 1;
            continue;
        }
        let Some(lease) = cache.lease(&key)? else {
            println!("not local   {short}  {label}");
            missing += 1;
            continue;
        };
        let bytes = copy_in(&team, &key, lease.dir(), lease.manifest().clone())
            .with_context(|| format!("promoting {label} ({key}) to {}", dir.display()))?;
        println!("promoted    {short}  {label}  ({})", human_bytes(bytes));
        promoted += 1;
    }
    println!("{promoted} promoted, {present} already in {}, {missing} not in the private cache", dir.display());
    Ok(exit::OK)
}

/// Copies one published artifact into `team` and publishes it there, checked
/// against its manifest; returns its size.
fn copy_in(team: &Cache, key: &Key, from: &Path, manifest: saepipe_cache::Manifest) -> Result<u64> {
    let _lock =
        team.lock(key, &mut |h| eprintln!("waiting for pid {} on {} (promoting the same artifact)", h.pid, h.host))?;
    if let Some(m) = team.lookup(key)? {
        return Ok(m.total_bytes);
    }
    let staging = team.begin(key)?;
    for f in &manifest.files {
        let dest = staging.dir().join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(from.join(&f.path), &dest).with_context(|| format!("copying {}", f.path))?;
    }
    Ok(staging.commit_fetched(manifest)?.total_bytes)
}
