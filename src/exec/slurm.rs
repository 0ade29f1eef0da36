//! The Slurm executor: each stage instance that must be computed becomes one
//! `sbatch` job running `saepipe exec-stage` on a job description kept in the
//! (shared) cache. The driver only submits and waits; the cache, not Slurm,
//! says what finished.
//!
//! Re-attach: the job id is written to `jobs/<key>.slurm.json` in the cache
//! right after `sbatch` answers and before the driver waits. A driver that is
//! killed and started again finds the record, asks Slurm about the job and, if
//! it is queued or running (or was requeued after preemption), waits for it
//! instead of submitting again. Submitting is done under a per-key submission
//! lock, so two drivers on one cache never submit the same stage twice.

use super::slurm_watch::JobWatcher;
use super::stage::{ExecResult, Outcome, StageJob, StageResult};
use crate::engine::cancel_requested;
use crate::pipeline::{Instance, Pipeline, shell_quote};
use anyhow::{Context, Result, anyhow};
use saepipe_cache::{Cache, Key};
use saepipe_slurm::{JobId, JobSpec, JobState, RetryPolicy, Slurm, SlurmSettings};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a run uses Slurm.
#[derive(Clone)]
pub struct SlurmOptions {
    /// Resources and placement for every stage job (the pipeline's `slurm:`).
    pub settings: SlurmSettings,
    /// The run's one Slurm client (its submission throttle is shared).
    pub client: Arc<Slurm>,
    /// The run's one view of its jobs' states (one query per poll for all).
    pub watcher: Arc<JobWatcher>,
}

impl std::fmt::Debug for SlurmOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmOptions").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl SlurmOptions {
    /// A run's Slurm options (`settings`: the pipeline's): submissions at
    /// most `submits_per_second` (default `SUBMITS_PER_SECOND`), job states
    /// asked for every `poll`.
    pub fn new(settings: SlurmSettings, poll: Duration) -> SlurmOptions {
        let rate = settings.submits_per_second.map_or(SUBMITS_PER_SECOND, f64::from);
        let client = Arc::new(Slurm::new(RetryPolicy::default(), rate));
        let watcher = Arc::new(JobWatcher::new(client.clone(), poll));
        SlurmOptions { settings, client, watcher }
    }

    /// The same client and watcher with `settings` (one stage's).
    pub fn with_settings(&self, settings: SlurmSettings) -> SlurmOptions {
        SlurmOptions { settings, client: self.client.clone(), watcher: self.watcher.clone() }
    }
}

/// A stage instance's Slurm settings: its stage's `slurm:` over the
/// pipeline's (`pipeline`, as the run has them) over its op's defaults.
pub fn settings_for(p: &Pipeline, inst: &Instance, pipeline: &SlurmSettings) -> SlurmSettings {
    let base = pipeline.over(&inst.op.slurm_defaults(&inst.params));
    match p.stages.iter().find(|s| s.name == inst.stage) {
        Some(stage) => stage.slurm.over(&base),
        None => base,
    }
}

/// Submissions per second a driver allows itself by default (a busy
/// controller's `sbatch` latency is the other brake).
const SUBMITS_PER_SECOND: f64 = 10.0;

/// What the driver records about a submitted job (`jobs/<key>.slurm.json`).
#[derive(Serialize, Deserialize)]
pub(super) struct JobRecord {
    pub(super) job_id: JobId,
    token: String,
    pub(super) submitted_unix: f64,
    instance: String,
}

/// The files of one key's job in the cache.
pub(super) struct JobFiles {
    job: PathBuf,
    result: PathBuf,
    pub(super) record: PathBuf,
    script: PathBuf,
    pub(super) log: PathBuf,
}

impl JobFiles {
    pub(super) fn of(cache_root: &Path, key: &Key) -> JobFiles {
        let base = cache_root.join("jobs").join(key.to_string());
        let with = |ext: &str| PathBuf::from(format!("{}.{ext}", base.display()));
        JobFiles {
            job: with("job.json"),
            result: with("result.json"),
            record: with("slurm.json"),
            script: with("sh"),
            log: with("log"),
        }
    }
}

/// The lock that serializes submissions of one key (distinct from the key's
/// own lock, which the job takes while it computes).
pub(super) fn submit_lock_key(key: &Key) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(b"saepipe slurm submission\0");
    h.update(key.as_bytes());
    Key::from_hasher(h)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp.{}", path.display(), std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).ok();
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Runs `job` as a Slurm job (or attaches to the one already submitted for its
/// key) and waits for it; the stage log gets the job's output. A job that ends
/// without publishing is resubmitted up to `retries` times (requeues after
/// preemption are Slurm's and are followed, not counted); the error names
/// every attempt's end.
pub fn run_slurm(cache: &Cache, job: &StageJob, log_path: &Path, opts: &SlurmOptions) -> Result<StageResult> {
    let start = Instant::now();
    if !job.force
        && let Some(m) = cache.lookup(&job.key)?
    {
        return Ok(StageResult { outcome: Outcome::Hit, bytes: m.total_bytes, seconds: 0.0, warning: None });
    }
    let root = std::path::absolute(cache.root()).context("locating the cache")?;
    std::fs::create_dir_all(root.join("jobs")).context("creating the cache's jobs folder")?;
    let files = JobFiles::of(&root, &job.key);
    let slurm = &*opts.client;
    std::fs::File::create(log_path)?;
    let retries = opts.settings.retries.unwrap_or(0);
    let mut failures = Vec::new();
    for attempt in 0..=retries {
        match attempt_once(cache, slurm, &root, job, &files, log_path, opts, start)? {
            Ok(result) => return Ok(result),
            Err(failure) => {
                append_log(log_path, &format!("attempt {} of {}: {failure}\n", attempt + 1, retries + 1))?;
                failures.push(failure);
                if cancel_requested() {
                    break;
                }
            }
        }
    }
    let tries = match failures.len() {
        1 => String::new(),
        n => format!(" ({n} attempts; `retries: {retries}`)"),
    };
    Err(anyhow!("{}{tries}", failures.join("; then ")))
}

fn append_log(log_path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
    log.write_all(text.as_bytes())?;
    Ok(())
}

/// One submission (or attachment) and its wait: the stage's result, or why
/// the job ended without publishing the artifact (`Err` of the inner result;
/// the outer one is a failure of the driver itself).
#[allow(clippy::too_many_arguments)]
fn attempt_once(
    cache: &Cache,
    slurm: &Slurm,
    root: &Path,
    job: &StageJob,
    files: &JobFiles,
    log_path: &Path,
    opts: &SlurmOptions,
    start: Instant,
) -> Result<std::result::Result<StageResult, String>> {
    let (id, attached) = {
        let _submitting = cache.lock(&submit_lock_key(&job.key), &mut |_| {})?;
        match attachable(slurm, files)? {
            Some(id) => (id, true),
            None => (submit(slurm, root, job, files, opts, vec![])?, false),
        }
    };
    let verb = if attached { "attached to" } else { "submitted" };
    append_log(log_path, &format!("{verb} Slurm job {id}; its output: {}\n", files.log.display()))?;
    let end = opts.watcher.wait_until_ended(id)?;
    // The job's own output, appended to the run's stage log.
    if let Ok(text) = std::fs::read_to_string(&files.log) {
        append_log(log_path, &text)?;
    }
    if let Ok(bytes) = std::fs::read(&files.result)
        && let Ok(r) = serde_json::from_slice::<ExecResult>(&bytes)
    {
        return Ok(Ok(StageResult { outcome: r.outcome, bytes: r.bytes, seconds: r.seconds, warning: r.warning }));
    }
    if let Some(m) = cache.lookup(&job.key)? {
        // Published, but the result note was lost (e.g. the node died right after).
        return Ok(Ok(StageResult {
            outcome: Outcome::Ran,
            bytes: m.total_bytes,
            seconds: start.elapsed().as_secs_f64(),
            warning: None,
        }));
    }
    let text = std::fs::read_to_string(&files.log).unwrap_or_default();
    // A panic's backtrace says little to a user; the lines before it do.
    let lines = text.lines().take_while(|l| !l.trim().eq_ignore_ascii_case("stack backtrace:"));
    let lines: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let last = &lines[lines.len().saturating_sub(5)..];
    // Slurm reports a memory kill as OUT_OF_MEMORY where cgroups enforce the
    // limit, and as a failure with this line in the job's output where its
    // accounting does (JobAcctGatherParams=OverMemoryKill).
    let out_of_memory = end.state == JobState::OutOfMemory
        || text.contains("xceeded job memory limit")
        || text.contains("oom_kill event")
        || text.contains("oom-kill");
    let hint = if out_of_memory {
        " (out of memory: raise the stage's `slurm: {mem: ...}`)"
    } else if end.state == JobState::Timeout {
        " (raise the stage's `slurm: {time: ...}`; long stages resume from their checkpoint)"
    } else {
        ""
    };
    Ok(Err(format!(
        "Slurm job {id} ended {}{}{}{hint} without publishing the artifact; last lines of {}: {}",
        end.state,
        if end.reason.is_empty() { String::new() } else { format!(" ({})", end.reason) },
        end.exit_code.map(|e| format!(", exit {e}")).unwrap_or_default(),
        files.log.display(),
        last.join(" | ")
    )))
}

/// The recorded job of this key (the record itself, or `None`).
pub(super) fn record(files: &JobFiles) -> Option<JobRecord> {
    serde_json::from_slice(&std::fs::read(&files.record).ok()?).ok()
}

/// The recorded job of this key, if Slurm still runs (or will rerun) it.
pub(super) fn attachable(slurm: &Slurm, files: &JobFiles) -> Result<Option<JobId>> {
    let Some(record) = record(files) else { return Ok(None) };
    let info = slurm.query(&[record.job_id])?.remove(&record.job_id);
    Ok(info.filter(|i| i.state.is_active()).map(|_| record.job_id))
}

/// Submits `job` (after the jobs `after_ok`, which must succeed first) and
/// records its id in the cache before returning.
pub(super) fn submit(
    slurm: &Slurm,
    root: &Path,
    job: &StageJob,
    files: &JobFiles,
    opts: &SlurmOptions,
    after_ok: Vec<JobId>,
) -> Result<JobId> {
    let _ = std::fs::remove_file(&files.result);
    write_atomically(&files.job, &serde_json::to_vec_pretty(job)?)?;
    let exe = std::env::current_exe().context("locating the saepipe executable")?;
    let script = format!(
        "#!/bin/sh\n# saepipe stage {} of pipeline {} (key {})\nexec {} exec-stage --cache-dir {} --job {} --result {}\n",
        job.instance,
        job.pipeline,
        job.key,
        shell_quote(&exe.display().to_string()),
        shell_quote(&root.display().to_string()),
        shell_quote(&files.job.display().to_string()),
        shell_quote(&files.result.display().to_string()),
    );
    write_atomically(&files.script, script.as_bytes())?;
    let token = format!("{}-{}", job.key.short(), std::process::id());
    let spec = JobSpec {
        name: format!("saepipe:{}:{}:{}", job.pipeline, job.instance, job.key.short()),
        script: files.script.clone(),
        log: files.log.clone(),
        settings: opts.settings.clone(),
        after_ok,
        // Before its time limit the job gets SIGUSR1: it saves its progress and
        // requeues itself (exec-stage), so the stage resumes in the same job.
        warn_before_end_secs: opts.settings.warning_secs(),
        token: token.clone(),
    };
    let id = slurm.submit(&spec).map_err(|e| anyhow!("stage `{}`: {e}", job.instance))?;
    let record = JobRecord {
        job_id: id,
        token,
        submitted_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        instance: job.instance.clone(),
    };
    write_atomically(&files.record, &serde_json::to_vec_pretty(&record)?)?;
    Ok(id)
}
