//! The `saepipe` command line: a thin layer over the library.

use crate::engine::{OpRegistry, StageStop, forbid_downloads};
use crate::exec::plan::{self, Selection, VerifyPolicy};
use crate::exec::scheduler::{self, RunOptions};
use crate::pipeline::{self, LoadOptions, Pipeline, dag};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use saepipe_cache::Cache;
use std::path::{Path, PathBuf};

mod cache;
mod export;
mod promote;
mod remote;
mod slurm_warning;

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    /// Success: every selected stage is done (or the command did what it was asked).
    pub const OK: i32 = 0;
    /// One or more stages failed.
    pub const STAGE_FAILED: i32 = 1;
    /// The pipeline file or command line is invalid.
    pub const INVALID: i32 = 2;
    /// Cache or I/O problem (unreadable cache, corrupt artifact found by `cache verify`
    /// or `export`, a read-only cache that lacks a stage).
    pub const CACHE: i32 = 3;
    /// Stopped by Ctrl-C or SIGTERM (progress saved; rerun to resume).
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Parser)]
#[command(
    name = "saepipe",
    version,
    about = "Pipelines for sparse-autoencoder and transcoder research",
    propagate_version = true
)]
/// The parsed command line of the `saepipe` binary; run it with [`main`].
pub struct Cli {
    /// Show error backtraces and debug details.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct PipelineArgs {
    /// Pipeline file (YAML).
    pub file: PathBuf,
    /// Override a variable: NAME=VALUE (VALUE is parsed as YAML, e.g. `steps=[1,2]`).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
    /// YAML file of variable overrides.
    #[arg(long, value_name = "FILE")]
    pub params: Option<PathBuf>,
    /// Cache directory (default: $SAEPIPE_CACHE, the pipeline's `cache_dir`, or ./cache).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A read-only team cache under the private one: its artifacts are used in
    /// place; replaces the pipeline's `cache: {team:}`.
    #[arg(long, value_name = "DIR", env = "SAEPIPE_TEAM_CACHE")]
    pub team_cache: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub(crate) struct SelectArgs {
    /// Build only these stages or instances (`train`, `train[step1]`) and what they need.
    pub stages: Vec<String>,
    /// Build up to and including this stage.
    #[arg(long, value_name = "STAGE")]
    pub until: Option<String>,
    /// Recompute this stage (and everything downstream) even if cached.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// How cached artifacts are checked before use.
    #[arg(long, value_enum, default_value = "auto")]
    pub verify: VerifyArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum VerifyArg {
    /// Re-hash artifacts up to 64 MiB, check sizes of larger ones.
    Auto,
    Quick,
    Full,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a pipeline (everything, or the given stages and what they need).
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[command(flatten)]
        select: SelectArgs,
        /// Stage instances to run at once (default: number of CPU cores; with
        /// the Slurm executor, jobs in flight: 100).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Keep running independent stages after a failure.
        #[arg(long)]
        keep_going: bool,
        /// No progress output.
        #[arg(short, long)]
        quiet: bool,
        /// Run each stage in its own process (as a cluster executor does).
        #[arg(long)]
        isolate: bool,
        /// Remote cache (s3://bucket/prefix, gs://, az://, https://, file:///dir); replaces
        /// the pipeline's `cache: {remote:}`.
        #[arg(long, value_name = "URL", env = "SAEPIPE_REMOTE")]
        remote: Option<String>,
        /// Which way artifacts travel (default: the pipeline's `cache:` settings, else both).
        #[arg(long, value_enum)]
        remote_policy: Option<RemotePolicy>,
        /// Where stages run: in this process (`local`) or as Slurm jobs (`slurm`);
        /// default: the pipeline's `executor:`, else local.
        #[arg(long, value_enum)]
        executor: Option<ExecutorArg>,
        /// With the Slurm executor: submit every stage that must be computed
        /// (each after its inputs' jobs) and exit; `saepipe status` shows them
        /// and a later `saepipe run` attaches.
        #[arg(long)]
        detach: bool,
    },
    /// Show where each stage instance stands: cached, its Slurm job's state
    /// (with job id, time since submission and log), or not run.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Print the directory (or, with `.OUTPUT`, the file) of a stage
    /// instance's artifact, for scripts and notebooks; exit 3 if it is not
    /// cached yet.
    Path {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// A stage instance (`sae`, `train[step1]`), optionally with a file or
        /// folder of its artifact (`sae.losses.parquet`, `sae.sae`).
        target: String,
    },
    /// Download every model, tokenizer and coder the pipeline needs into the
    /// local caches (on a login node), so the run itself needs no network
    /// (`HF_HUB_OFFLINE=1` on compute nodes).
    Fetch {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Show what `run` would do for each stage instance, and why.
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Print the stage DAG as Graphviz dot and/or Mermaid.
    Dag {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, value_enum, default_value = "both")]
        format: DagFormat,
    },
    /// Check a pipeline file and report every problem in it.
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// List ops, or show one op's parameters.
    Ops { name: Option<String> },
    /// Inspect and maintain the cache.
    Cache {
        #[arg(long, value_name = "DIR", global = true)]
        cache_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Copy an artifact out of the cache into a directory that tools without
    /// saepipe open as it is (pandas, pyarrow, polars, DuckDB), described by
    /// `_README.md` and `_saepipe.json`.
    Export {
        /// The artifact's key, or a unique prefix of it (as `cache ls` shows).
        key: String,
        /// Where to put it: a new or empty directory.
        dir: PathBuf,
        /// Cache directory (default: $SAEPIPE_CACHE, else ./cache).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Copy every file instead of hard-linking it to the cache's copy.
        #[arg(long)]
        copy: bool,
    },
    /// Run one serialized stage instance (used by `run --isolate` and cluster executors).
    #[command(hide = true)]
    ExecStage {
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        result: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DagFormat {
    Dot,
    Mermaid,
    Both,
}

#[derive(Subcommand)]
pub(crate) enum CacheCommand {
    /// List artifacts (of the remote with `--remote`).
    Ls {
        /// List this remote cache instead of the local one.
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
    },
    /// Show an artifact (KEY may be a unique prefix): where it is, what made
    /// it, its inputs, metrics and files.
    Show {
        key: String,
        /// Print the raw manifest (JSON) instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash artifacts and report corruption (all artifacts if no KEY); with
    /// `--remote`, download and check the remote's.
    Verify {
        key: Option<String>,
        /// Verify this remote cache instead of the local one.
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
    },
    /// Remove an artifact.
    Rm { key: String },
    /// Remove everything the given pipelines do not reach, and stale partial work.
    Gc {
        /// Pipelines whose artifacts to keep.
        pipelines: Vec<PathBuf>,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        sets: Vec<String>,
        /// Actually delete (otherwise only report).
        #[arg(long)]
        yes: bool,
        /// Collect garbage on this remote instead: artifacts the pipelines do not
        /// reach (all are kept when no pipeline is given) and unlisted blobs.
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
        /// With `--remote`: unlisted blobs younger than this are kept (a push may be writing them).
        #[arg(long, value_name = "SECONDS", default_value_t = 6 * 3600)]
        grace_seconds: u64,
    },
    /// Upload artifacts to a remote: every artifact of a pipeline that is in the
    /// local cache, or the given keys (unique prefixes).
    Push {
        /// Pipeline files and/or artifact keys.
        #[arg(required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        remote: RemoteTarget,
    },
    /// Download artifacts from a remote: every artifact of a pipeline that the
    /// remote has, or the given keys (unique prefixes among the remote's).
    Pull {
        /// Pipeline files and/or artifact keys.
        #[arg(required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        remote: RemoteTarget,
    },
    /// Publish artifacts of this (private) cache in the team cache: every
    /// artifact of a pipeline that is here, or the given keys.
    Promote {
        /// Pipeline files and/or artifact keys.
        #[arg(required = true)]
        targets: Vec<String>,
        /// The team cache (default: $SAEPIPE_TEAM_CACHE, else the pipeline's `cache: {team:}`).
        #[arg(long, value_name = "DIR", env = "SAEPIPE_TEAM_CACHE")]
        team: Option<PathBuf>,
        /// Override a pipeline variable: NAME=VALUE.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        sets: Vec<String>,
    },
}

/// Which remote `cache push` / `cache pull` talk to.
#[derive(Args, Clone)]
pub(crate) struct RemoteTarget {
    /// The remote (default: $SAEPIPE_REMOTE, else the pipeline's `cache: {remote:}`).
    #[arg(long, value_name = "URL", env = "SAEPIPE_REMOTE")]
    pub remote: Option<String>,
    /// Variable overrides for pipeline targets (NAME=VALUE).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
}

/// Where a run's stages execute.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExecutorArg {
    /// Threads of this process (or child processes with `--isolate`).
    Local,
    /// One `sbatch` job per stage instance to compute.
    Slurm,
}

/// Which way artifacts travel between a run and its remote.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RemotePolicy {
    /// Pull on a local miss and push what the run computes.
    Both,
    /// Only pull.
    Pull,
    /// Only push.
    Push,
    /// Leave the remote alone.
    None,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Exit(pub i32, pub String);
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Exit {}

fn load(ops: &OpRegistry, args: &PipelineArgs) -> Result<Pipeline> {
    let opts = LoadOptions { sets: args.sets.clone(), params_file: args.params.clone() };
    let mut p =
        pipeline::load(ops, &args.file, &opts).map_err(|e| anyhow::Error::new(Exit(exit::INVALID, e.to_string())))?;
    if let Some(team) = &args.team_cache {
        p.team_cache = Some(std::path::absolute(team).unwrap_or_else(|_| team.clone()));
    }
    Ok(p)
}

/// The command line's remote settings over the pipeline's.
fn apply_remote(p: &mut Pipeline, url: Option<String>, policy: Option<RemotePolicy>) {
    if let Some(url) = url {
        let (pull, push) = p.remote.as_ref().map(|r| (r.pull, r.push)).unwrap_or((true, true));
        p.remote = Some(crate::engine::RemoteSettings { url, pull, push });
    }
    if let (Some(policy), Some(r)) = (policy, p.remote.as_mut()) {
        (r.pull, r.push) = match policy {
            RemotePolicy::Both => (true, true),
            RemotePolicy::Pull => (true, false),
            RemotePolicy::Push => (false, true),
            RemotePolicy::None => (false, false),
        };
    }
    if p.remote.as_ref().is_some_and(|r| !r.pull && !r.push) {
        p.remote = None;
    }
}

fn cache_root(explicit: Option<&Path>, p: Option<&Pipeline>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SAEPIPE_CACHE").map(PathBuf::from))
        .or_else(|| p.and_then(|p| p.cache_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("cache"))
}

/// Environment variable: seconds without a heartbeat after which a lock (or a
/// reader's lease) counts as abandoned (default 30). Every process sharing a
/// cache must use the same value.
pub const LOCK_TIMEOUT_ENV: &str = "SAEPIPE_LOCK_TIMEOUT";

/// Stage jobs a driver keeps submitted or running at once with the Slurm
/// executor unless `-j` says otherwise.
const SLURM_JOBS_IN_FLIGHT: usize = 100;

fn open_cache(root: &Path) -> Result<Cache> {
    let cache = Cache::open(root)
        .map_err(|e| anyhow::Error::new(Exit(exit::CACHE, format!("cannot open cache {}: {e}", root.display()))))?;
    match std::env::var(LOCK_TIMEOUT_ENV).ok().map(|v| v.parse::<f64>()) {
        None => Ok(cache),
        Some(Ok(secs)) if secs >= 0.3 && secs.is_finite() => {
            let stale_after = std::time::Duration::from_secs_f64(secs);
            Ok(cache.with_lock_timing(saepipe_cache::LockTiming { heartbeat: stale_after / 15, stale_after }))
        }
        Some(_) => {
            bail!(Exit(exit::INVALID, format!("{LOCK_TIMEOUT_ENV} must be a number of seconds of at least 0.3")))
        }
    }
}

fn selection(p: &Pipeline, s: &SelectArgs) -> Selection {
    let _ = p;
    let mut targets = s.stages.clone();
    targets.extend(s.until.clone());
    Selection { targets, force: s.force.clone() }
}

fn policy(v: VerifyArg) -> VerifyPolicy {
    match v {
        VerifyArg::Auto => VerifyPolicy::Auto,
        VerifyArg::Quick => VerifyPolicy::Quick,
        VerifyArg::Full => VerifyPolicy::Full,
    }
}

/// Runs one command with the stage kinds of `ops`; returns the exit code.
pub fn main(cli: Cli, ops: &OpRegistry) -> Result<i32> {
    match cli.command {
        Command::Run {
            pipeline,
            select,
            jobs,
            keep_going,
            quiet,
            isolate,
            remote,
            remote_policy,
            executor,
            detach,
        } => {
            let mut p = load(ops, &pipeline)?;
            apply_remote(&mut p, remote, remote_policy);
            let cache = open_cache(&cache_root(pipeline.cache_dir.as_deref(), Some(&p)))?;
            let plan = plan::make_plan(&p, &cache, &selection(&p, &select), policy(select.verify))?;
            if cache.read_only() {
                let missing: Vec<&str> = plan
                    .items
                    .iter()
                    .filter(|i| i.action != plan::Action::Hit)
                    .map(|i| p.instances[i.idx].id.as_str())
                    .collect();
                if !missing.is_empty() {
                    bail!(Exit(
                        exit::CACHE,
                        format!(
                            "the cache {} is read-only and {} stage instance(s) are not in it ({}); run with a writable `--cache-dir`",
                            cache.root().display(),
                            missing.len(),
                            missing.join(", ")
                        )
                    ));
                }
            }

            let quiet = quiet || std::env::var_os("SAEPIPE_QUIET").is_some();
            let use_slurm = executor.map(|e| e == ExecutorArg::Slurm).unwrap_or(p.executor_slurm);
            // Slurm jobs wait in the queue, not on this host: many may be in flight.
            let jobs = jobs.unwrap_or_else(|| {
                if use_slurm {
                    SLURM_JOBS_IN_FLIGHT
                } else {
                    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
                }
            });
            let slurm = use_slurm.then(|| {
                crate::exec::slurm::SlurmOptions::new(
                    p.slurm.clone(),
                    std::time::Duration::from_millis(
                        std::env::var("SAEPIPE_SLURM_POLL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
                    ),
                )
            });
            if detach {
                let Some(slurm) = slurm else {
                    bail!(Exit(
                        exit::INVALID,
                        "`--detach` needs the Slurm executor (`--executor slurm` or `executor: slurm` in the pipeline)"
                            .into()
                    ));
                };
                let rows = crate::exec::detach::detach(&p, &cache, &plan, &slurm)?;
                let w = rows.iter().map(|r| r.instance.len()).max().unwrap_or(5).max(5);
                println!("{:<w$}  {:>8}  state", "stage", "job");
                for r in &rows {
                    let job = r.job.map(|j| j.to_string()).unwrap_or_else(|| "-".into());
                    println!("{:<w$}  {job:>8}  {}", r.instance, r.state);
                }
                let file = pipeline.file.display();
                println!(
                    "watch with `saepipe status {file}` (with the same --set/--cache-dir options); the same `saepipe run` without --detach attaches to the jobs"
                );
                return Ok(exit::OK);
            }
            let report = scheduler::run(&p, &cache, &plan, &RunOptions { jobs, keep_going, quiet, isolate, slurm })?;
            if !quiet {
                print!("{}", report.table());
                println!("{}", report.headline());
                println!("run record: {}", report.record_dir.join("run.json").display());
            }
            // Reports are what a user opens next: always say where they are.
            for s in report.stages.iter().filter(|s| s.error.is_none()) {
                if let Ok(key) = cache.resolve_prefix(&s.key) {
                    let html = cache.artifact_dir(&key).join("report.html");
                    if html.is_file() {
                        println!("report ({}): {}", s.instance, html.display());
                    }
                }
            }
            for s in report.stages.iter().filter(|s| s.error.is_some() && s.status == "failed") {
                eprintln!("error: stage `{}` failed: {}", s.instance, s.error.as_deref().unwrap_or(""));
                if let Some(log) = &s.log {
                    eprintln!("  log: {log}");
                }
            }
            if report.interrupted {
                let done = report
                    .stages
                    .iter()
                    .filter(|s| s.error.is_none() && !["interrupted", "not run"].contains(&s.status.as_str()))
                    .count();
                let stopped = report.stages.iter().filter(|s| s.status == "interrupted").count();
                eprintln!(
                    "interrupted after {:.1}s: {done} stage instance(s) done and cached, {stopped} stopped with their progress saved; run the same command again to resume",
                    report.seconds
                );
                return Ok(exit::INTERRUPTED);
            }
            Ok(if report.failed > 0 { exit::STAGE_FAILED } else { exit::OK })
        }
        Command::Status { pipeline, select } => {
            forbid_downloads();
            let p = load(ops, &pipeline)?;
            let cache = open_cache(&cache_root(pipeline.cache_dir.as_deref(), Some(&p)))?;
            let plan = plan::make_plan(&p, &cache, &selection(&p, &select), policy(select.verify))?;
            let rows = crate::exec::detach::status(&p, &cache, &plan)?;
            let w = rows.iter().map(|r| r.instance.len()).max().unwrap_or(5).max(5);
            println!("{:<w$}  {:<28}  {:>8}  {:>9}  log", "stage", "state", "job", "elapsed");
            for r in &rows {
                let job = r.job.map(|j| j.to_string()).unwrap_or_else(|| "-".into());
                let elapsed = r.elapsed.map(|e| format!("{e:.0}s")).unwrap_or_else(|| "-".into());
                let log = r.log.as_ref().map(|l| l.display().to_string()).unwrap_or_default();
                println!("{:<w$}  {:<28}  {job:>8}  {elapsed:>9}  {log}", r.instance, r.state);
            }
            Ok(exit::OK)
        }
        Command::Path { pipeline, target } => {
            forbid_downloads();
            let p = load(ops, &pipeline)?;
            let cache = open_cache(&cache_root(pipeline.cache_dir.as_deref(), Some(&p)))?;
            // The longest instance id the target starts with; the rest names an output.
            let found = p
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| target == i.id || target.starts_with(&format!("{}.", i.id)))
                .max_by_key(|(_, i)| i.id.len());
            let Some((idx, inst)) = found else {
                let names: Vec<&str> = p.instances.iter().map(|i| i.id.as_str()).collect();
                let stem = target.split('.').next().unwrap_or(&target);
                let hint = saepipe_core::suggest::hint(stem, names.iter().copied());
                bail!(Exit(
                    exit::INVALID,
                    format!("error: `{target}` is not a stage instance of {}{hint}", p.file.display())
                ));
            };
            if p.instances.iter().filter(|i| i.stage == inst.stage).count() > 1 && inst.id == inst.stage {
                bail!(Exit(exit::INVALID, format!("error: stage `{}` has several instances; name one", inst.stage)));
            }
            let output = target[inst.id.len()..].strip_prefix('.');
            let plan = plan::make_plan(
                &p,
                &cache,
                &Selection { targets: vec![inst.id.clone()], force: vec![] },
                VerifyPolicy::Quick,
            )?;
            let item = plan.items.iter().find(|it| it.idx == idx).context("the instance is not in its own plan")?;
            let team = match &p.team_cache {
                Some(dir) => crate::exec::team::open(dir, &cache)?,
                None => None,
            };
            let dir = if cache.lookup(&item.key)?.is_some() {
                cache.artifact_dir(&item.key)
            } else if let Some(t) = team.as_ref().filter(|t| t.lookup(&item.key).ok().flatten().is_some()) {
                t.artifact_dir(&item.key)
            } else {
                bail!(Exit(
                    exit::CACHE,
                    format!("{} is not in the cache yet ({}); run the pipeline first", inst.id, item.why.join("; "))
                ));
            };
            let path = match output {
                Some(o) => dir.join(o),
                None => dir,
            };
            if !path.exists() {
                let hint = saepipe_core::suggest::path_hint(&path);
                bail!(Exit(exit::INVALID, format!("error: {} has no `{}`{hint}", inst.id, output.unwrap_or(""))));
            }
            println!("{}", path.display());
            Ok(exit::OK)
        }
        Command::Fetch { pipeline } => {
            let p = load(ops, &pipeline)?;
            // Every external input each stage instance is keyed by, resolved as a
            // run would resolve it (downloading what is missing), once each.
            let mut ready: Vec<(String, String, PathBuf)> = Vec::new();
            for inst in &p.instances {
                let inputs = inst
                    .op
                    .external_inputs(&inst.params, &p.base_dir)
                    .with_context(|| format!("stage `{}`: fetching its inputs", inst.id))?;
                for (label, path) in inputs {
                    if !ready.iter().any(|(_, _, have)| *have == path) {
                        ready.push((inst.id.clone(), label, path));
                    }
                }
            }
            let w = ready.iter().map(|r| r.0.len() + r.1.len() + 1).max().unwrap_or(5).max(5);
            for (stage, label, path) in &ready {
                println!("{:<w$}  {}", format!("{stage}.{label}"), path.display());
            }
            println!(
                "{} external input(s) of {} are local; the run needs no network (HF_HUB_OFFLINE=1 works)",
                ready.len(),
                p.file.display()
            );
            Ok(exit::OK)
        }
        Command::Plan { pipeline, select } => {
            forbid_downloads();
            let p = load(ops, &pipeline)?;
            let cache = open_cache(&cache_root(pipeline.cache_dir.as_deref(), Some(&p)))?;
            let plan = plan::make_plan(&p, &cache, &selection(&p, &select), policy(select.verify))?;
            let w = plan.items.iter().map(|i| p.instances[i.idx].id.len()).max().unwrap_or(5).max(5);
            let o = plan.items.iter().map(|i| p.instances[i.idx].op.name().len()).max().unwrap_or(2).max(2);
            println!("{:<w$}  {:<o$}  {:<16}  {:<7}  why", "stage", "op", "key", "action");
            for item in &plan.items {
                let inst = &p.instances[item.idx];
                println!(
                    "{:<w$}  {:<o$}  {:<16}  {:<7}  {}",
                    inst.id,
                    inst.op.name(),
                    &item.key.to_string()[..16],
                    item.action.label(),
                    item.why.join("; ")
                );
            }
            Ok(exit::OK)
        }
        Command::Dag { pipeline, format } => {
            let p = load(ops, &pipeline)?;
            if matches!(format, DagFormat::Dot | DagFormat::Both) {
                print!("{}", dag::to_dot(&p));
            }
            if matches!(format, DagFormat::Both) {
                println!();
            }
            if matches!(format, DagFormat::Mermaid | DagFormat::Both) {
                print!("{}", dag::to_mermaid(&p));
            }
            Ok(exit::OK)
        }
        Command::Validate { pipeline } => {
            let p = load(ops, &pipeline)?;
            println!("{}: ok ({} stages, {} stage instances)", p.file.display(), p.stages.len(), p.instances.len());
            Ok(exit::OK)
        }
        Command::Ops { name } => {
            match name {
                None => {
                    for op in ops.visible() {
                        println!("{:<20} {}", op.name(), op.summary());
                    }
                }
                Some(n) => {
                    let Some(op) = ops.find(&n) else {
                        let hint = saepipe_core::suggest::hint(&n, ops.visible().map(|o| o.name()));
                        bail!(Exit(exit::INVALID, format!("error: unknown op `{n}`{hint}; `saepipe ops` lists them")));
                    };
                    println!("{} (version {}): {}\n", op.name(), op.version(), op.summary());
                    for s in op.params() {
                        let req = if s.required {
                            "required".to_string()
                        } else {
                            s.default.as_ref().map(|d| format!("default {d}")).unwrap_or_else(|| "optional".into())
                        };
                        println!(
                            "  {:<24} {:<28} {req}{}{}\n      {}",
                            s.name,
                            s.ty.describe(),
                            s.describe_range().map(|r| format!(", range {r}")).unwrap_or_default(),
                            if s.in_key { "" } else { ", not in cache key" },
                            s.doc
                        );
                    }
                    if !op.outputs().is_empty() {
                        println!("\n  named outputs: {}", op.outputs().join(", "));
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Cache { cache_dir, command } => {
            forbid_downloads();
            cache::cache_command(ops, &open_cache(&cache_root(cache_dir.as_deref(), None))?, command)
        }
        Command::Export { key, dir, cache_dir, copy } => {
            forbid_downloads();
            export::export(&open_cache(&cache_root(cache_dir.as_deref(), None))?, &key, &dir, copy)
        }
        Command::ExecStage { cache_dir, job, result } => {
            slurm_warning::install();
            match scheduler::exec_stage(ops, &open_cache(&cache_dir)?, &job, result.as_deref()) {
                Ok(()) => Ok(exit::OK),
                Err(e) if StageStop::of(&e) == Some(StageStop::Interrupted) => {
                    eprintln!("{e:#}");
                    slurm_warning::requeue_if_warned();
                    Ok(exit::INTERRUPTED)
                }
                Err(e) => Err(e),
            }
        }
    }
}
