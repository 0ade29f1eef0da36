//! `saepipe cache push|pull`, and `cache ls|verify|gc --remote`: moving
//! artifacts between the local cache and a remote one, and looking after the
//! remote. The transfers are `saepipe_remote`'s; this is the command line.

use super::{Exit, RemoteTarget, exit};
use crate::engine::OpRegistry;
use crate::exec::plan::human_bytes;
use crate::pipeline::{self, LoadOptions};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use saepipe_cache::{Cache, Key};
use saepipe_remote::Remote;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn open(url: &str) -> Result<Remote> {
    Remote::open(url).map_err(|e| anyhow::Error::new(Exit(exit::INVALID, e.to_string())))
}

/// A byte-count progress bar on stderr (hidden when stderr is not a terminal).
fn bar(verb: &str, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(format!("{verb} {label}"));
    pb
}

pub(super) fn is_pipeline_file(target: &str) -> bool {
    let p = Path::new(target);
    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// An artifact key with the stage instance (or key prefix) it is shown as.
pub(super) type Labelled = (Key, String);

/// The artifacts a pipeline file reaches, labelled by stage instance, and its
/// remote setting. Keys that need a hub download first are left out (said so).
pub(super) fn pipeline_keys(
    ops: &OpRegistry,
    cache: &Cache,
    file: &Path,
    sets: &[String],
) -> Result<(Vec<Labelled>, Option<String>)> {
    let (keys, p) = pipeline_keys_and_settings(ops, cache, file, sets)?;
    Ok((keys, p.remote.map(|r| r.url)))
}

/// [`pipeline_keys`] with the loaded pipeline (for its other cache settings).
pub(super) fn pipeline_keys_and_settings(
    ops: &OpRegistry,
    cache: &Cache,
    file: &Path,
    sets: &[String],
) -> Result<(Vec<Labelled>, pipeline::Pipeline)> {
    let p = pipeline::load(ops, file, &LoadOptions { sets: sets.to_vec(), params_file: None })
        .map_err(|e| anyhow::Error::new(Exit(exit::INVALID, e.to_string())))?;
    let mut keys = Vec::new();
    for (i, (m, k)) in crate::exec::keys::materials(&p, cache)?.into_iter().enumerate() {
        if let Some(why) = m.pending() {
            eprintln!("note: {}: stage `{}` skipped: {why}", file.display(), p.instances[i].id);
            continue;
        }
        keys.push((k, p.instances[i].id.clone()));
    }
    Ok((keys, p))
}

/// The remote URL: given, else from the first pipeline target.
fn remote_url(given: &Option<String>, from_pipelines: Option<String>) -> Result<String> {
    given.clone().or(from_pipelines).ok_or_else(|| {
        anyhow::Error::new(Exit(
            exit::INVALID,
            "no remote: pass --remote URL, set SAEPIPE_REMOTE, or give the pipeline a `cache: {remote: URL}`".into(),
        ))
    })
}

/// `cache push`.
pub(super) fn push(ops: &OpRegistry, cache: &Cache, targets: &[String], rt: &RemoteTarget) -> Result<i32> {
    let mut keys = Vec::new();
    let mut pipeline_remote = None;
    for t in targets {
        if is_pipeline_file(t) {
            let (k, r) = pipeline_keys(ops, cache, &PathBuf::from(t), &rt.sets)?;
            keys.extend(k);
            pipeline_remote = pipeline_remote.or(r);
        } else {
            let key = cache.resolve_prefix(t).map_err(|e| anyhow::Error::new(Exit(exit::INVALID, e.to_string())))?;
            keys.push((key, key.to_string()[..16].to_string()));
        }
    }
    let remote = open(&remote_url(&rt.remote, pipeline_remote)?)?;
    let (mut pushed, mut present, mut missing, mut failed) = (0, 0, 0, 0);
    for (key, label) in keys {
        if cache.lookup(&key)?.is_none() {
            println!("not local   {}  {label}", &key.to_string()[..16]);
            missing += 1;
            continue;
        }
        let pb = bar("pushing", &label);
        let r = remote.push(cache, &key, &|done, total| {
            pb.set_length(total);
            pb.set_position(done);
        });
        pb.finish_and_clear();
        match r {
            Ok(o) if o.already_on_remote => {
                println!("on remote   {}  {label}", &key.to_string()[..16]);
                present += 1;
            }
            Ok(o) => {
                println!(
                    "pushed      {}  {label}  ({} file(s), {} uploaded, {} file(s) already there)",
                    &key.to_string()[..16],
                    o.uploaded_files,
                    human_bytes(o.uploaded_bytes),
                    o.skipped_files
                );
                pushed += 1;
            }
            Err(e) => {
                eprintln!("error: pushing {label} ({key}): {e}");
                failed += 1;
            }
        }
    }
    println!(
        "{pushed} pushed, {present} already on {}, {missing} not in the local cache, {failed} failed",
        remote.display()
    );
    Ok(if failed > 0 { exit::CACHE } else { exit::OK })
}

/// A key on the remote from a unique prefix.
fn resolve_remote(remote: &Remote, listed: &mut Option<Vec<Key>>, prefix: &str) -> Result<Key> {
    if let Ok(k) = prefix.parse::<Key>() {
        return Ok(k);
    }
    let keys = match listed {
        Some(k) => k,
        None => listed.insert(remote.list()?.into_iter().map(|a| a.key).collect()),
    };
    let matches: Vec<&Key> = keys.iter().filter(|k| k.to_string().starts_with(prefix)).collect();
    match matches.as_slice() {
        [one] => Ok(**one),
        [] => bail!(Exit(
            exit::INVALID,
            format!("no artifact on {} has a key starting with `{prefix}`", remote.display())
        )),
        many => bail!(Exit(
            exit::INVALID,
            format!("`{prefix}` matches {} artifacts on {}; give more of the key", many.len(), remote.display())
        )),
    }
}

/// `cache pull`.
pub(super) fn pull(ops: &OpRegistry, cache: &Cache, targets: &[String], rt: &RemoteTarget) -> Result<i32> {
    if cache.read_only() {
        bail!(Exit(
            exit::CACHE,
            format!("the cache {} is read-only; pull into a writable one", cache.root().display())
        ));
    }
    let mut named = Vec::new();
    let mut pipeline_remote = None;
    let mut prefixes = Vec::new();
    for t in targets {
        if is_pipeline_file(t) {
            let (k, r) = pipeline_keys(ops, cache, &PathBuf::from(t), &rt.sets)?;
            named.extend(k);
            pipeline_remote = pipeline_remote.or(r);
        } else {
            prefixes.push(t.clone());
        }
    }
    let remote = open(&remote_url(&rt.remote, pipeline_remote)?)?;
    let mut listed = None;
    for p in prefixes {
        let key = resolve_remote(&remote, &mut listed, &p)?;
        named.push((key, key.to_string()[..16].to_string()));
    }
    let (mut pulled, mut local, mut absent, mut failed) = (0, 0, 0, 0);
    for (key, label) in named {
        if cache.lookup(&key)?.is_some() {
            println!("local       {}  {label}", &key.to_string()[..16]);
            local += 1;
            continue;
        }
        if !remote.has(&key)? {
            println!("not remote  {}  {label}", &key.to_string()[..16]);
            absent += 1;
            continue;
        }
        // Another pull or run of this key into this cache waits, then finds it here.
        let _lock = cache
            .lock(&key, &mut |info| eprintln!("waiting for pid {} on {}, which holds {label}", info.pid, info.host))?;
        let pb = bar("pulling", &label);
        let r = remote.pull(cache, &key, &|done, total| {
            pb.set_length(total);
            pb.set_position(done);
        });
        pb.finish_and_clear();
        match r {
            Ok(o) => {
                println!(
                    "pulled      {}  {label}  ({}, {} downloaded, {} resumed, verified)",
                    &key.to_string()[..16],
                    human_bytes(o.manifest.total_bytes),
                    human_bytes(o.downloaded_bytes),
                    human_bytes(o.resumed_bytes)
                );
                pulled += 1;
            }
            Err(e) => {
                eprintln!("error: pulling {label} ({key}): {e}");
                failed += 1;
            }
        }
    }
    println!("{pulled} pulled, {local} already local, {absent} not on {}, {failed} failed", remote.display());
    Ok(if failed > 0 { exit::CACHE } else { exit::OK })
}

/// `cache ls --remote`.
pub(super) fn ls(url: &str) -> Result<i32> {
    let remote = open(url)?;
    let mut list = remote.list()?;
    list.sort_by(|a, b| a.created_unix.total_cmp(&b.created_unix));
    println!("{:<16}  {:<20}  {:<32}  {:>10}", "key", "op", "stage", "size");
    let total: u64 = list.iter().map(|a| a.total_bytes).sum();
    for a in &list {
        println!("{:<16}  {:<20}  {:<32}  {:>10}", &a.key.to_string()[..16], a.op, a.stage, human_bytes(a.total_bytes));
    }
    println!("{} artifacts on {}, {}", list.len(), remote.display(), human_bytes(total));
    Ok(exit::OK)
}

/// `cache verify --remote`: downloads and re-hashes (nothing is kept).
pub(super) fn verify(url: &str, key: Option<&str>) -> Result<i32> {
    let remote = open(url)?;
    let mut listed = None;
    let keys: Vec<Key> = match key {
        Some(k) => vec![resolve_remote(&remote, &mut listed, k)?],
        None => remote.list()?.into_iter().map(|a| a.key).collect(),
    };
    let mut bad = 0;
    for k in &keys {
        let pb = bar("verifying", &k.to_string()[..16]);
        let report = remote.verify(k, &|done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })?;
        pb.finish_and_clear();
        if report.problems.is_empty() {
            println!("ok       {k}");
        } else {
            bad += 1;
            println!("CORRUPT  {k}");
            for p in &report.problems {
                println!("           {p}");
            }
        }
    }
    println!("{} verified on {}, {} corrupt", keys.len(), remote.display(), bad);
    Ok(if bad > 0 { exit::CACHE } else { exit::OK })
}

/// `cache gc --remote`.
pub(super) fn gc(
    ops: &OpRegistry,
    cache: &Cache,
    url: &str,
    pipelines: &[PathBuf],
    sets: &[String],
    yes: bool,
    grace_seconds: u64,
) -> Result<i32> {
    let keep: Option<HashSet<Key>> = if pipelines.is_empty() {
        None
    } else {
        let mut keep = HashSet::new();
        for f in pipelines {
            let (keys, _) = pipeline_keys(ops, cache, f, sets)?;
            keep.extend(keys.into_iter().map(|(k, _)| k));
        }
        Some(keep)
    };
    let remote = open(url)?;
    let report = remote.gc(keep.as_ref(), std::time::Duration::from_secs(grace_seconds), !yes)?;
    let verb = if yes { "removed" } else { "would remove" };
    for k in &report.artifacts {
        println!("{verb} artifact {k}");
    }
    println!(
        "{verb} {} artifact(s) and {} unlisted blob(s) ({}) on {}; kept {} young unlisted blob(s){}",
        report.artifacts.len(),
        report.blobs,
        human_bytes(report.bytes),
        remote.display(),
        report.young_blobs_kept,
        if yes { "" } else { " (dry run: pass --yes to delete)" }
    );
    Ok(exit::OK)
}
