//! `saepipe run --detach` and `saepipe status`: submit a whole plan to Slurm
//! and leave, then look at it from any shell.
//!
//! Detaching submits every stage instance that must be computed, in
//! dependency order, each job after its inputs' jobs (`--dependency=afterok`,
//! and `--kill-on-invalid-dep`, so a failed input cancels its dependents
//! instead of leaving them queued forever). Job ids go to the cache as with an
//! attached run, so a later `saepipe run` attaches to them and two detaches
//! never submit one stage twice. Stages with `local: true` (and what depends
//! on them) are left for that later run.
//!
//! Status reads the cache and asks Slurm once about every recorded job; it
//! changes nothing and downloads nothing.

use super::plan::{Action, Plan};
use super::scheduler::job_for;
use super::slurm::{JobFiles, SlurmOptions, attachable, record, settings_for, submit, submit_lock_key};
use crate::pipeline::Pipeline;
use anyhow::{Context, Result, anyhow};
use saepipe_cache::Cache;
use saepipe_slurm::{JobId, RetryPolicy, Slurm};
use std::collections::HashMap;
use std::path::PathBuf;

/// What `--detach` did with one stage instance.
pub struct Detached {
    /// The stage instance.
    pub instance: String,
    /// Its job, when it has one.
    pub job: Option<JobId>,
    /// What happened: `cached`, `submitted`, `already queued`, or why it was left.
    pub state: String,
}

/// Submits every instance of `plan` that must be computed as a Slurm job,
/// chained by their dependencies, and returns without waiting.
pub fn detach(p: &Pipeline, cache: &Cache, plan: &Plan, opts: &SlurmOptions) -> Result<Vec<Detached>> {
    let root = std::path::absolute(cache.root()).context("locating the cache")?;
    std::fs::create_dir_all(root.join("jobs")).context("creating the cache's jobs folder")?;
    let slurm = &*opts.client;
    let pos_of: HashMap<usize, usize> = plan.items.iter().enumerate().map(|(pos, it)| (it.idx, pos)).collect();
    // Per plan position: its job, or why it has none (`None`: cached).
    let mut job_of: HashMap<usize, JobId> = HashMap::new();
    let mut left: HashMap<usize, String> = HashMap::new();
    let mut out = Vec::new();
    for (pos, item) in plan.items.iter().enumerate() {
        let inst = &p.instances[item.idx];
        let mut row = Detached { instance: inst.id.clone(), job: None, state: String::new() };
        let deps: Vec<usize> = p.deps(item.idx).into_iter().filter_map(|d| pos_of.get(&d).copied()).collect();
        if item.action == Action::Hit {
            row.state = "cached".into();
        } else if let Some(d) = deps.iter().find(|d| left.contains_key(d)) {
            row.state = format!("left for `saepipe run` (needs {})", p.instances[plan.items[*d].idx].id);
            left.insert(pos, row.state.clone());
        } else if settings_for(p, inst, &opts.settings).local == Some(true) {
            row.state = "left for `saepipe run` (local: true)".into();
            left.insert(pos, row.state.clone());
        } else {
            let opts = opts.with_settings(settings_for(p, inst, &opts.settings));
            let job = job_for(p, plan, pos);
            let files = JobFiles::of(&root, &item.key);
            let _submitting = cache.lock(&submit_lock_key(&item.key), &mut |_| {})?;
            let (id, state) = match attachable(slurm, &files)? {
                Some(id) => (id, "already queued"),
                None => {
                    let after: Vec<JobId> = deps.iter().filter_map(|d| job_of.get(d).copied()).collect();
                    (submit(slurm, &root, &job, &files, &opts, after)?, "submitted")
                }
            };
            job_of.insert(pos, id);
            row.job = Some(id);
            row.state = state.into();
        }
        out.push(row);
    }
    Ok(out)
}

/// One stage instance as `saepipe status` shows it.
pub struct StatusRow {
    /// The stage instance.
    pub instance: String,
    /// `cached` (or `cached (team)`), the job's Slurm state (`queued`, `running`, `failed`, ...),
    /// `running here` for a local run holding its lock, or `not run`.
    pub state: String,
    /// The recorded Slurm job, if any.
    pub job: Option<JobId>,
    /// Seconds since the job was submitted (while it is queued or running).
    pub elapsed: Option<f64>,
    /// The job's output.
    pub log: Option<PathBuf>,
}

/// Where each instance of `plan` stands: in the cache, in Slurm, or neither.
pub fn status(p: &Pipeline, cache: &Cache, plan: &Plan) -> Result<Vec<StatusRow>> {
    let root = std::path::absolute(cache.root()).context("locating the cache")?;
    let records: Vec<_> = plan
        .items
        .iter()
        .map(|item| {
            let files = JobFiles::of(&root, &item.key);
            (record(&files), files)
        })
        .collect();
    let ids: Vec<JobId> = records.iter().filter_map(|(r, _)| r.as_ref().map(|r| r.job_id)).collect();
    let infos = if ids.is_empty() {
        HashMap::new()
    } else {
        Slurm::new(RetryPolicy::default(), 0.0)
            .query(&ids)
            .map_err(|e| anyhow!("asking Slurm about the recorded jobs: {e}"))?
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let team = match &p.team_cache {
        Some(dir) => super::team::open(dir, cache)?,
        None => None,
    };
    let mut out = Vec::new();
    for (item, (rec, files)) in plan.items.iter().zip(records) {
        let inst = &p.instances[item.idx];
        let mut row =
            StatusRow { instance: inst.id.clone(), state: String::new(), job: None, elapsed: None, log: None };
        if cache.lookup(&item.key)?.is_some() {
            row.state = "cached".into();
        } else if team.as_ref().map(|t| t.lookup(&item.key)).transpose()?.flatten().is_some() {
            row.state = "cached (team)".into();
        } else if let Some(rec) = rec {
            let info = infos.get(&rec.job_id).cloned().unwrap_or_else(saepipe_slurm::JobInfo::gone);
            row.state = info.state.to_string();
            if !info.reason.is_empty() && info.reason != "None" {
                row.state = format!("{} ({})", row.state, info.reason);
            }
            row.job = Some(rec.job_id);
            row.elapsed = info.state.is_active().then_some(now - rec.submitted_unix);
            row.log = Some(files.log);
        } else if cache.lock_is_held(&item.key) {
            row.state = "running (another saepipe run holds it)".into();
        } else {
            row.state = "not run".into();
        }
        out.push(row);
    }
    Ok(out)
}
