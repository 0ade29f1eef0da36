//! `saepipe cache ...`: inspecting and maintaining the local cache, and moving
//! artifacts to and from a remote one.

use super::{CacheCommand, Exit, exit};
use crate::engine::OpRegistry;
use crate::exec::plan;
use crate::pipeline::{self, LoadOptions};
use anyhow::{Context, Result, bail};
use saepipe_cache::{Cache, VerifyMode};
use std::collections::HashSet;

pub(super) fn cache_command(ops: &OpRegistry, cache: &Cache, command: CacheCommand) -> Result<i32> {
    match command {
        CacheCommand::Ls { remote: Some(url) } => super::remote::ls(&url),
        CacheCommand::Verify { key, remote: Some(url) } => super::remote::verify(&url, key.as_deref()),
        CacheCommand::Gc { pipelines, sets, yes, remote: Some(url), grace_seconds } => {
            super::remote::gc(ops, cache, &url, &pipelines, &sets, yes, grace_seconds)
        }
        CacheCommand::Push { targets, remote } => super::remote::push(ops, cache, &targets, &remote),
        CacheCommand::Promote { targets, team, sets } => {
            super::promote::promote(ops, cache, &targets, team.as_deref(), &sets)
        }
        CacheCommand::Pull { targets, remote } => super::remote::pull(ops, cache, &targets, &remote),
        CacheCommand::Ls { remote: None } => {
            let mut list = cache.list()?;
            list.sort_by(|a, b| a.created_unix.total_cmp(&b.created_unix));
            println!("{:<16}  {:<20}  {:<32}  {:>10}", "key", "op", "stage", "size");
            let mut total = 0;
            for a in &list {
                total += a.bytes;
                println!(
                    "{:<16}  {:<20}  {:<32}  {:>10}",
                    &a.key.to_string()[..16],
                    a.op,
                    a.stage,
                    plan::human_bytes(a.bytes)
                );
            }
            println!("{} artifacts, {}", list.len(), plan::human_bytes(total));
            Ok(exit::OK)
        }
        CacheCommand::Show { key, json } => {
            let key = cache.resolve_prefix(&key)?;
            let m = cache.lookup(&key)?.with_context(|| format!("artifact {key} is not in the cache"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print!("{}", describe(&m, &cache.artifact_dir(&key)));
            }
            Ok(exit::OK)
        }
        CacheCommand::Verify { key, remote: None } => {
            // Every entry of artifacts/, including those whose manifest is missing or damaged.
            let reports = match key {
                Some(k) => {
                    let k = match cache.resolve_prefix(&k) {
                        Ok(k) => k,
                        Err(_) if k.parse::<saepipe_cache::Key>().is_ok() => k.parse()?,
                        Err(e) => return Err(e.into()),
                    };
                    vec![(k.to_string(), cache.verify(&k, VerifyMode::Full)?)]
                }
                None => cache.verify_all(VerifyMode::Full)?,
            };
            let mut bad = 0;
            for (name, r) in &reports {
                if r.ok {
                    println!("ok       {name}");
                } else {
                    bad += 1;
                    println!("CORRUPT  {name}");
                    for p in &r.problems {
                        println!("           {p}");
                    }
                }
            }
            println!("{} verified, {} corrupt", reports.len(), bad);
            Ok(if bad > 0 { exit::CACHE } else { exit::OK })
        }
        CacheCommand::Rm { key } => {
            let key = cache.resolve_prefix(&key)?;
            cache.remove(&key)?;
            println!("removed {key}");
            Ok(exit::OK)
        }
        CacheCommand::Gc { pipelines, sets, yes, remote: None, .. } => {
            if pipelines.is_empty() {
                bail!(Exit(
                    exit::INVALID,
                    "`cache gc` needs the pipeline files whose artifacts to keep (everything else is removed)".into()
                ));
            }
            let mut keep = HashSet::new();
            for f in &pipelines {
                let p = pipeline::load(ops, f, &LoadOptions { sets: sets.clone(), params_file: None })
                    .map_err(|e| anyhow::Error::new(Exit(exit::INVALID, e.to_string())))?;
                for (i, (m, k)) in crate::exec::keys::materials(&p, cache)?.into_iter().enumerate() {
                    // Without the download the key is unknown, so gc cannot tell what to keep.
                    if let Some(why) = m.pending() {
                        let msg = format!(
                            "{}: stage `{}`: {why}; without it gc cannot tell which artifacts the stage reaches and would remove them: fetch it into the local cache first (running the pipeline does)",
                            f.display(),
                            p.instances[i].id
                        );
                        if yes {
                            bail!(Exit(exit::INVALID, msg));
                        }
                        eprintln!("warning: {msg}");
                    }
                    keep.insert(k);
                }
            }
            let report = cache.gc(&keep, !yes)?;
            let total: u64 = report.removed.iter().map(|(_, b)| b).sum();
            for (what, bytes) in &report.removed {
                println!("{} {what} ({})", if yes { "removed" } else { "would remove" }, plan::human_bytes(*bytes));
            }
            println!(
                "{} {} items, {}; kept {} artifacts{}",
                if yes { "removed" } else { "would remove" },
                report.removed.len(),
                plan::human_bytes(total),
                report.kept,
                if yes { "" } else { " (dry run: pass --yes to delete)" }
            );
            Ok(exit::OK)
        }
    }
}

/// `cache show` for people: where the artifact is and what it holds.
fn describe(m: &saepipe_cache::Manifest, dir: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(m.created_unix.max(0.0)),
    );
    let _ = writeln!(
        out,
        "{}  {} (op {} v{}, stage `{}`)",
        &m.key.to_string()[..16],
        dir.display(),
        m.op,
        m.op_version,
        m.stage
    );
    let _ = writeln!(
        out,
        "made {when} by saepipe {} in {:.1}s{}; {} in {} file(s)",
        m.saepipe_version,
        m.seconds,
        if m.resumed { " (resumed)" } else { "" },
        plan::human_bytes(m.total_bytes),
        m.files.len()
    );
    if !m.inputs.is_empty() {
        let _ = writeln!(out, "inputs:");
        for (label, k) in &m.inputs {
            let _ = writeln!(out, "  {label:<16} {}", &k.to_string()[..16]);
        }
    }
    if let Some(params) = m.params.as_object().filter(|p| !p.is_empty()) {
        let _ = writeln!(out, "parameters:");
        for (k, v) in params {
            let _ = writeln!(out, "  {k:<16} {v}");
        }
    }
    if let Some(metrics) = m.metrics.as_object().filter(|p| !p.is_empty()) {
        let _ = writeln!(out, "metrics:");
        for (k, v) in metrics {
            let _ = writeln!(out, "  {k:<16} {v}");
        }
    }
    let _ = writeln!(out, "files:");
    for f in &m.files {
        let _ = writeln!(out, "  {:>10}  {}", plan::human_bytes(f.size), dir.join(&f.path).display());
    }
    out
}
