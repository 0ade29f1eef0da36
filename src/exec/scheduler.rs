//! Runs a plan: ready stage instances in parallel up to `-j`, at most one GPU
//! stage per device at a time, failures stopping (or with `--keep-going`, only
//! skipping) what depends on them. Writes a JSON run record and per-stage logs.

use super::names::safe_name;
use super::plan::{Action, Plan, human_bytes};
use super::progress::Reporter;
use super::stage::{self, ExecResult, Outcome, StageJob, StageResult};
use crate::engine::{OpRegistry, Resource, StageStop, cancel_requested};
use crate::pipeline::Pipeline;
use anyhow::{Context, Result, anyhow};
use saepipe_cache::Cache;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How [`run`] executes a plan: parallelism, failure handling, output and executor.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Stage instances run at once (`-j`); GPU stages are further limited to one per device.
    pub jobs: usize,
    /// On a failure, skip only what depends on the failed stage and run the rest (`--keep-going`).
    pub keep_going: bool,
    /// No progress bars or per-stage lines on the terminal (`--quiet`).
    pub quiet: bool,
    /// Run every stage in its own `saepipe exec-stage` process. The child is
    /// this executable, so it knows the ops of the binary's registry only.
    pub isolate: bool,
    /// Run every stage that must be computed as a Slurm job (`exec::slurm`).
    pub slurm: Option<super::slurm::SlurmOptions>,
}

/// One stage instance's line in a [`RunReport`] and in the run record `run.json`.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceReport {
    /// Instance id: `stage` or `stage[key]`.
    pub instance: String,
    /// Name of the op (stage kind) it ran.
    pub op: String,
    /// Its cache key, in hex.
    pub key: String,
    /// What happened: an [`Outcome`] label (`hit`, `ran`, `pulled`, ...), or `failed`,
    /// `interrupted`, `skipped` (a dependency failed) or `not run`.
    pub status: String,
    /// Wall-clock time spent on it, in seconds.
    pub seconds: f64,
    /// Size of its published artifact in bytes; 0 when there is none.
    pub bytes: u64,
    /// The error message, when it failed.
    pub error: Option<String>,
    /// A problem that did not fail the stage (a failed push to the remote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Path of the stage's log file in the run's record directory, when one was written.
    pub log: Option<String>,
}

/// What a [`run`] did: one [`InstanceReport`] per planned instance, in plan order.
/// Also written as `run.json` into [`RunReport::record_dir`].
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// The pipeline's `name:`.
    pub pipeline: String,
    /// The pipeline file, as it was given.
    pub file: String,
    /// When the run started, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// Wall-clock duration of the whole run, in seconds.
    pub seconds: f64,
    /// One entry per plan item, in plan order.
    pub stages: Vec<InstanceReport>,
    /// How many stage instances failed (skipped ones not counted).
    pub failed: usize,
    /// Stopped by Ctrl-C or SIGTERM: finished stages are cached, running ones saved progress.
    pub interrupted: bool,
    /// Directory of this run's record (`run.json`) and per-stage logs: under the
    /// cache's run directory, or the temp directory when the cache is read-only.
    #[serde(skip)]
    pub record_dir: PathBuf,
}

impl RunReport {
    /// One line saying how the run went: `finished in 3m12s: 4 ran, 8 from the cache`.
    pub fn headline(&self) -> String {
        let count = |pred: &dyn Fn(&str) -> bool| self.stages.iter().filter(|s| pred(&s.status)).count();
        let ran = count(&|s| s == "ran" || s == "resumed");
        let cached = count(&|s| s.starts_with("hit"));
        let mut parts = vec![format!("{ran} ran"), format!("{cached} from the cache")];
        for (status, words) in [
            ("pulled", "pulled from the remote"),
            ("on remote", "left on the remote (streamed)"),
            ("failed", "failed"),
            ("skipped", "skipped"),
            ("interrupted", "interrupted"),
        ] {
            let n = count(&|s| s == status);
            if n > 0 {
                parts.push(format!("{n} {words}"));
            }
        }
        let verb = if self.failed > 0 || self.interrupted { "stopped" } else { "finished" };
        format!("{verb} in {}: {}", super::progress::human_duration(self.seconds), parts.join(", "))
    }

    /// The stage / status / time / output-size table printed at the end of a run.
    pub fn table(&self) -> String {
        let w = self.stages.iter().map(|s| s.instance.len()).max().unwrap_or(5).max(5);
        let mut out = format!("{:<w$}  {:<13}  {:>9}  {:>10}\n", "stage", "status", "time", "output");
        for s in &self.stages {
            let size = if s.bytes > 0 { human_bytes(s.bytes) } else { "-".into() };
            out.push_str(&format!("{:<w$}  {:<13}  {:>8.2}s  {:>10}\n", s.instance, s.status, s.seconds, size));
        }
        out
    }
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The self-contained [`StageJob`] for the plan item at position `pos` of `plan`
/// (made for `p`): its key material, validated parameters, and the keys of the
/// artifacts its inputs refer to. `pos` must be a valid index into `plan.items`.
pub fn job_for(p: &Pipeline, plan: &Plan, pos: usize) -> StageJob {
    let item = &plan.items[pos];
    let inst = &p.instances[item.idx];
    let key_of: HashMap<usize, saepipe_cache::Key> = plan.items.iter().map(|it| (it.idx, it.key)).collect();
    let inputs = inst
        .inputs
        .iter()
        .map(|r| (r.label.clone(), r.targets.iter().map(|t| (key_of[&t.instance], t.output.clone())).collect()))
        .collect();
    let input_names = inst
        .inputs
        .iter()
        .map(|r| (r.label.clone(), r.targets.iter().map(|t| p.instances[t.instance].id.clone()).collect()))
        .collect();
    StageJob {
        pipeline: p.name.clone(),
        instance: inst.id.clone(),
        op: inst.op.name().to_string(),
        key: item.key,
        material: item.material.clone(),
        params: inst.params.clone(),
        inputs,
        input_names,
        base_dir: p.base_dir.clone(),
        force: item.forced || item.action == Action::Rebuild,
        planned_generation: item.generation.clone(),
        threads: rayon_threads(),
        remote: p.remote.clone(),
        team: p.team_cache.clone(),
        skip_team: item.skip_team,
        stream_only: only_streamed(p, plan, pos),
    }
}

/// Whether item `pos` has consumers in the plan and every one of them reads
/// it in place from the run's remote (`stream: true` on an input its op can
/// stream, the whole artifact): then the run need not download it.
fn only_streamed(p: &Pipeline, plan: &Plan, pos: usize) -> bool {
    if !p.remote.as_ref().is_some_and(|r| r.pull) {
        return false;
    }
    let me = plan.items[pos].idx;
    let mut consumers = 0;
    for it in &plan.items {
        let inst = &p.instances[it.idx];
        if inst.needs.contains(&me) {
            return false;
        }
        let streams = inst.params.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
        for r in inst.inputs.iter().filter(|r| r.targets.iter().any(|t| t.instance == me)) {
            consumers += 1;
            let whole = r.targets.iter().filter(|t| t.instance == me).all(|t| t.output.is_none());
            if !(streams && whole && inst.op.streamable_inputs().contains(&r.label.as_str())) {
                return false;
            }
        }
    }
    consumers > 0
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Runs `plan` (made for `p`) against `cache`, with the ops `p` was loaded with.
pub fn run(p: &Pipeline, cache: &Cache, plan: &Plan, opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let started_unix = now_unix();
    let reporter = Reporter::new(opts.quiet);
    let run_name = format!("{}-{}", started_unix as u64, std::process::id());
    // A read-only (team) cache keeps no run records; they go to the temp directory.
    let record_dir = if cache.read_only() {
        std::env::temp_dir().join("saepipe-runs").join(&run_name)
    } else {
        cache.run_dir().join(&run_name)
    };
    if cache.read_only() {
        reporter.println(&format!(
            "note: the cache {} is read-only; this run's record and logs go to {}",
            cache.root().display(),
            record_dir.display()
        ));
    }
    let log_dir = record_dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    let n = plan.items.len();
    let overall = reporter.overall(plan.items.iter().filter(|it| it.action != Action::Hit).count());
    let pos_of: HashMap<usize, usize> = plan.items.iter().enumerate().map(|(pos, it)| (it.idx, pos)).collect();
    // Dependencies within the plan, by plan position.
    let deps: Vec<Vec<usize>> = plan
        .items
        .iter()
        .map(|it| p.deps(it.idx).into_iter().filter_map(|d| pos_of.get(&d).copied()).collect())
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut reports: Vec<Option<InstanceReport>> = vec![None; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut running = 0usize;
    let mut busy: HashSet<Resource> = HashSet::new();
    let mut stop = false;
    let jobs = opts.jobs.max(1);

    std::thread::scope(|scope| -> Result<()> {
        // A failure travels as its message and whether it was a Ctrl-C stop.
        let (tx, rx) = mpsc::channel::<(usize, Resource, Result<StageResult, (String, bool)>, PathBuf)>();
        loop {
            // Launch what can start, in plan (dependency) order, except that
            // stages another driver computes right now go last: several
            // drivers on one cache split the ready stages between them
            // instead of waiting on each other (the key locks still make
            // each stage run once).
            // (Only worth a look at the locks when not every ready stage can start.)
            if ready.len() > jobs.saturating_sub(running) {
                ready.sort_unstable_by_key(|&pos| {
                    let item = &plan.items[pos];
                    (item.action != Action::Hit && cache.lock_is_held(&item.key), pos)
                });
            } else {
                ready.sort_unstable();
            }
            let mut i = 0;
            if cancel_requested() {
                stop = true;
            }
            while !stop && running < jobs && i < ready.len() {
                let pos = ready[i];
                let item = &plan.items[pos];
                let inst = &p.instances[item.idx];
                // The stage's own settings over the pipeline's; `local: true`
                // stages (and hits) run here, in the driver.
                let slurm = opts.slurm.as_ref().filter(|_| item.action != Action::Hit).and_then(|o| {
                    let settings = super::slurm::settings_for(p, inst, &o.settings);
                    (settings.local != Some(true)).then(|| o.with_settings(settings))
                });
                // A Slurm job brings its own GPU: only stages run here share this host's.
                let resource = if slurm.is_some() { Resource::Cpu } else { inst.op.resource(&inst.params) };
                if resource != Resource::Cpu && busy.contains(&resource) {
                    i += 1;
                    continue;
                }
                ready.remove(i);
                if resource != Resource::Cpu {
                    busy.insert(resource.clone());
                }
                running += 1;
                let job = job_for(p, plan, pos);
                let log_path = log_dir.join(format!("{}.log", safe_name(&inst.id)));
                let tx = tx.clone();
                let reporter = reporter.clone();
                let record_dir = record_dir.clone();
                let action = item.action;
                let isolate = opts.isolate;
                scope.spawn(move || {
                    if action != Action::Hit {
                        reporter.println(&format!(
                            "{} {} ({})",
                            match action {
                                Action::Resume => "resuming",
                                Action::Rebuild => "rebuilding",
                                _ => "running",
                            },
                            job.instance,
                            job.op
                        ));
                    }
                    let progress = reporter.stage(&job.instance);
                    let result = if let Some(slurm) = slurm.as_ref() {
                        super::slurm::run_slurm(cache, &job, &log_path, slurm)
                    } else if isolate {
                        run_isolated(cache, &job, &record_dir, &log_path)
                    } else {
                        run_in_process(&p.ops, cache, &job, &progress, &log_path)
                    };
                    progress.finish();
                    let result =
                        result.map_err(|e| (format!("{e:#}"), StageStop::of(&e) == Some(StageStop::Interrupted)));
                    let _ = tx.send((pos, resource, result, log_path));
                });
            }
            if running == 0 {
                break;
            }
            let (pos, resource, result, log_path) = rx.recv().map_err(|_| anyhow!("a stage worker vanished"))?;
            running -= 1;
            busy.remove(&resource);
            let item = &plan.items[pos];
            let inst = &p.instances[item.idx];
            let log = std::fs::metadata(&log_path).ok().filter(|m| m.len() > 0).map(|_| log_path.display().to_string());
            match result {
                Ok(r) => {
                    if r.outcome != Outcome::Hit {
                        let tag = if item.action != Action::Hit { overall.finished_one() } else { String::new() };
                        reporter.println(&format!(
                            "done {} in {} ({}) {tag}",
                            inst.id,
                            super::progress::human_duration(r.seconds),
                            r.outcome.label()
                        ));
                    }
                    if let Some(w) = &r.warning {
                        reporter.println(&format!("warning: {}: {w}", inst.id));
                    }
                    reports[pos] = Some(InstanceReport {
                        instance: inst.id.clone(),
                        op: inst.op.name().into(),
                        key: item.key.to_string(),
                        status: r.outcome.label().into(),
                        seconds: r.seconds,
                        bytes: r.bytes,
                        error: None,
                        warning: r.warning.clone(),
                        log,
                    });
                    for &d in &dependents[pos] {
                        remaining[d] -= 1;
                        if remaining[d] == 0 && reports[d].is_none() {
                            ready.push(d);
                        }
                    }
                }
                Err((_, true)) => {
                    reporter.println(&format!("stopped {} (progress saved)", inst.id));
                    reports[pos] = Some(InstanceReport {
                        instance: inst.id.clone(),
                        op: inst.op.name().into(),
                        key: item.key.to_string(),
                        status: "interrupted".into(),
                        seconds: 0.0,
                        bytes: 0,
                        error: None,
                        warning: None,
                        log,
                    });
                    stop = true;
                }
                Err((e, false)) => {
                    reporter.println(&format!("FAILED {}: {e}", inst.id));
                    reports[pos] = Some(InstanceReport {
                        instance: inst.id.clone(),
                        op: inst.op.name().into(),
                        key: item.key.to_string(),
                        status: "failed".into(),
                        seconds: 0.0,
                        bytes: 0,
                        error: Some(e),
                        warning: None,
                        log,
                    });
                    skip_downstream(pos, &dependents, plan, p, &mut reports);
                    if !opts.keep_going {
                        stop = true;
                    }
                }
            }
        }
        Ok(())
    })?;

    let stages: Vec<InstanceReport> = reports
        .into_iter()
        .enumerate()
        .map(|(pos, r)| {
            r.unwrap_or_else(|| {
                let inst = &p.instances[plan.items[pos].idx];
                InstanceReport {
                    instance: inst.id.clone(),
                    op: inst.op.name().into(),
                    key: plan.items[pos].key.to_string(),
                    status: "not run".into(),
                    seconds: 0.0,
                    bytes: 0,
                    error: None,
                    warning: None,
                    log: None,
                }
            })
        })
        .collect();
    overall.finish();
    let failed = stages.iter().filter(|s| s.status == "failed").count();
    let interrupted = cancel_requested();
    let report = RunReport {
        pipeline: p.name.clone(),
        file: p.file.display().to_string(),
        started_unix,
        seconds: started.elapsed().as_secs_f64(),
        stages,
        failed,
        interrupted,
        record_dir: record_dir.clone(),
    };
    let tmp = record_dir.join("run.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename(&tmp, record_dir.join("run.json"))?;
    Ok(report)
}

fn skip_downstream(
    pos: usize,
    dependents: &[Vec<usize>],
    plan: &Plan,
    p: &Pipeline,
    reports: &mut [Option<InstanceReport>],
) {
    let mut stack = dependents[pos].clone();
    while let Some(d) = stack.pop() {
        if reports[d].is_none() {
            let inst = &p.instances[plan.items[d].idx];
            reports[d] = Some(InstanceReport {
                instance: inst.id.clone(),
                op: inst.op.name().into(),
                key: plan.items[d].key.to_string(),
                status: "skipped".into(),
                seconds: 0.0,
                bytes: 0,
                error: Some(format!("needs {} which failed", p.instances[plan.items[pos].idx].id)),
                warning: None,
                log: None,
            });
            stack.extend(dependents[d].iter().copied());
        }
    }
}

fn run_in_process(
    ops: &OpRegistry,
    cache: &Cache,
    job: &StageJob,
    progress: &super::progress::StageProgress,
    log_path: &Path,
) -> Result<StageResult> {
    let mut log = std::fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let r = stage::execute(ops, cache, job, progress, &mut log);
    if let Err(e) = &r {
        use std::io::Write;
        let _ = writeln!(log, "error: {e:#}");
    }
    r
}

/// Runs the job as `saepipe exec-stage` in a child process, as a cluster node would.
fn run_isolated(cache: &Cache, job: &StageJob, record_dir: &Path, log_path: &Path) -> Result<StageResult> {
    let jobs_dir = record_dir.join("jobs");
    std::fs::create_dir_all(&jobs_dir)?;
    let job_file = jobs_dir.join(format!("{}.json", safe_name(&job.instance)));
    let result_file = job_file.with_extension("result.json");
    std::fs::write(&job_file, serde_json::to_vec_pretty(job)?)?;
    let log = std::fs::File::create(log_path)?;
    let exe = std::env::current_exe().context("locating the saepipe executable")?;
    let status = std::process::Command::new(exe)
        .arg("exec-stage")
        .arg("--cache-dir")
        .arg(cache.root())
        .arg("--job")
        .arg(&job_file)
        .arg("--result")
        .arg(&result_file)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting saepipe exec-stage")?;
    if status.code() == Some(130) && cancel_requested() {
        return Err(StageStop::Interrupted.into());
    }
    if !status.success() {
        let tail = std::fs::read_to_string(log_path).unwrap_or_default();
        let last: Vec<&str> = tail.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(anyhow!("exec-stage exited with {status}: {}", last.join(" | ")));
    }
    let r: ExecResult = serde_json::from_slice(&std::fs::read(&result_file)?)?;
    Ok(StageResult { outcome: r.outcome, bytes: r.bytes, seconds: r.seconds, warning: r.warning })
}

/// Body of the hidden `exec-stage` subcommand: runs the job with the op of `ops` it names.
pub fn exec_stage(ops: &OpRegistry, cache: &Cache, job_file: &Path, result_file: Option<&Path>) -> Result<()> {
    let job: StageJob =
        serde_json::from_slice(&std::fs::read(job_file).with_context(|| format!("reading {}", job_file.display()))?)
            .with_context(|| format!("{} is not a stage job description", job_file.display()))?;
    let reporter = Reporter::Plain;
    let progress = reporter.stage(&job.instance);
    let mut out = std::io::stderr();
    let r = stage::execute(ops, cache, &job, &progress, &mut out)?;
    if let Some(rf) = result_file {
        std::fs::write(
            rf,
            serde_json::to_vec(&ExecResult {
                outcome: r.outcome,
                bytes: r.bytes,
                seconds: r.seconds,
                warning: r.warning.clone(),
            })?,
        )?;
    }
    Ok(())
}
