//! Running one stage instance against the cache: look up, lock, run the op into a
//! staging directory, publish atomically. The same code runs in-process and in a
//! separate process (`saepipe exec-stage`), which is what cluster executors use.
//!
//! What a stage relies on while it runs:
//! - its inputs are leased (see `saepipe_cache::Lease`): no rebuild, `--force`
//!   or gc deletes the generation it reads;
//! - its inputs are verified before use: every file is re-hashed against the
//!   manifest, except files whose readers check their own hashes as they read
//!   them (activation store shards, see `Op::verified_on_read`);
//! - it holds the key's lock; a holder that lost the lock (suspended past the
//!   staleness threshold while another process took over) never commits: it
//!   waits for the new holder and takes its result.

use super::keys::KeyMaterial;
use crate::engine::{Op, OpRegistry, Params, ProgressSink, RemoteSettings, StageCtx, StageStop, StreamedInputs};
use anyhow::{Context, Result, bail};
use saepipe_cache::{Cache, Key, Lease, LockGuard, ManifestDraft, VerifyMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A self-contained description of one stage instance's work.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageJob {
    /// The pipeline's `name:` (recorded in the manifest and the run index).
    pub pipeline: String,
    /// Instance id: `stage` or `stage[key]`.
    pub instance: String,
    /// Name of the op to run, looked up in the registry the job is executed with.
    pub op: String,
    /// The artifact's cache key.
    pub key: Key,
    /// What `key` is a hash of; stored with the artifact.
    pub material: KeyMaterial,
    /// The instance's validated parameters.
    pub params: Params,
    /// Input label → (artifact key, optional named output), in order.
    pub inputs: BTreeMap<String, Vec<(Key, Option<String>)>>,
    /// Input label → the instance ids of the stages that asked for those
    /// artifacts in this pipeline, parallel to `inputs` (how reports label
    /// them: a cached artifact may have been made under another stage's name).
    #[serde(default)]
    pub input_names: BTreeMap<String, Vec<String>>,
    /// Directory relative paths in the parameters are resolved against (the pipeline file's directory).
    pub base_dir: PathBuf,
    /// Recompute even if the artifact exists, publishing a new generation
    /// (`--force`, or a rebuild of a damaged artifact).
    pub force: bool,
    /// The generation the plan saw (and decided to replace, when `force`): if
    /// another run replaced it meanwhile, its result is taken instead.
    #[serde(default)]
    pub planned_generation: Option<PathBuf>,
    /// CPU threads the op may use.
    pub threads: usize,
    /// The run's remote cache: pulled from on a miss, pushed to after computing.
    #[serde(default)]
    pub remote: Option<RemoteSettings>,
    /// The read-only team cache under `cache` (its artifacts are used in place).
    #[serde(default)]
    pub team: Option<PathBuf>,
    /// The plan found the team's copy of this artifact damaged: compute it privately.
    #[serde(default)]
    pub skip_team: bool,
    /// Every consumer in this run reads the artifact in place from the remote
    /// (`stream: true`): when the remote has it, it is not downloaded.
    #[serde(default)]
    pub stream_only: bool,
}

/// How a stage's artifact was obtained; the `status` of a run report line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Found in the cache.
    Hit,
    /// Another process computed it while we waited for its lock.
    WaitedHit,
    /// The op ran from scratch and its output was published.
    Ran,
    /// The op ran, continuing from progress saved by an interrupted run.
    Resumed,
    /// Downloaded from the run's remote cache and verified.
    Pulled,
    /// Found in the team cache and used from there.
    TeamHit,
    /// On the run's remote, where its consumers read it in place (not downloaded).
    OnRemote,
}

impl Outcome {
    /// The word run reports and the run record use for this outcome.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::WaitedHit => "hit (waited)",
            Outcome::Ran => "ran",
            Outcome::Resumed => "resumed",
            Outcome::Pulled => "pulled",
            Outcome::TeamHit => "hit (team)",
            Outcome::OnRemote => "on remote",
        }
    }
}

/// What [`execute`] returns for a stage that succeeded.
pub struct StageResult {
    /// How the artifact was obtained.
    pub outcome: Outcome,
    /// Size of the artifact in bytes.
    pub bytes: u64,
    /// Time spent on the stage, in seconds.
    pub seconds: f64,
    /// Something the user should know that did not fail the stage (a failed push).
    pub warning: Option<String>,
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// How often a stage that lost its lock goes back to wait for it before giving up.
const MAX_LOCK_LOSSES: usize = 3;

/// Runs `job` (or takes its artifact from the cache), with the op of `ops`
/// that the job names; inputs' producers are looked up there too.
pub fn execute(
    ops: &OpRegistry,
    cache: &Cache,
    job: &StageJob,
    progress: &dyn ProgressSink,
    log: &mut dyn std::io::Write,
) -> Result<StageResult> {
    let start = Instant::now();
    let op = ops.get(&job.op)?;
    let hit = |outcome: Outcome, bytes: u64| -> Result<StageResult> {
        super::index::record(cache, &job.pipeline, &job.instance, &job.key, &job.material)?;
        Ok(StageResult { outcome, bytes, seconds: start.elapsed().as_secs_f64(), warning: None })
    };
    if !job.force
        && let Some(m) = cache.lookup(&job.key)?
    {
        return hit(Outcome::Hit, m.total_bytes);
    }
    let team = match &job.team {
        Some(dir) => super::team::open(dir, cache)?,
        None => None,
    };
    if !job.force
        && !job.skip_team
        && let Some(m) = team.as_ref().map(|t| t.lookup(&job.key)).transpose()?.flatten()
    {
        return hit(Outcome::TeamHit, m.total_bytes);
    }
    // Only streamed by its consumers: where the remote has it, it stays there
    // (and is not recorded in the local index, which names local artifacts).
    if !job.force
        && job.stream_only
        && let Some(remote) = job.remote.as_ref().filter(|r| r.pull)
    {
        match super::stream::on_remote(remote, &job.key) {
            Ok(Some(bytes)) => {
                let _ = writeln!(log, "on the remote {}: its consumers stream it from there", remote.url);
                let seconds = start.elapsed().as_secs_f64();
                return Ok(StageResult { outcome: Outcome::OnRemote, bytes, seconds, warning: None });
            }
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(log, "warning: could not look the artifact up on the remote ({e})");
            }
        }
    }
    if cache.read_only() {
        bail!(
            "the cache {} is read-only and this stage is not in it; run it with a writable cache (`--cache-dir`)",
            cache.root().display()
        );
    }
    for _ in 0..MAX_LOCK_LOSSES {
        let mut announced = false;
        let lock = cache.lock(&job.key, &mut |info| {
            if !announced {
                progress
                    .message(&format!("waiting for pid {} on {} (already computing this stage)", info.pid, info.host));
                let _ = writeln!(log, "waiting for the lock held by pid {} on {}", info.pid, info.host);
                announced = true;
            }
        })?;
        if let Some(m) = already_done(cache, job)? {
            return hit(Outcome::WaitedHit, m);
        }
        // Under the lock, so concurrent runs download an artifact once.
        if !job.force
            && let Some(remote) = job.remote.as_ref().filter(|r| r.pull)
        {
            match super::remote::pull(remote, cache, &job.key, progress, log) {
                super::remote::Pulled::Yes(bytes) => return hit(Outcome::Pulled, bytes),
                super::remote::Pulled::Absent => {}
                super::remote::Pulled::Failed(why) => {
                    let _ = writeln!(log, "warning: could not pull from the remote ({why}); computing the stage");
                    progress.message("remote unavailable; computing the stage");
                }
            }
        }
        match run_locked(ops, cache, team.as_ref(), job, op, &lock, progress, log, start)? {
            Some(mut r) => {
                drop(lock);
                if let Some(remote) = job.remote.as_ref().filter(|r| r.push) {
                    r.warning = super::remote::push(remote, cache, &job.key, progress, log)
                        .err()
                        .map(|e| format!("computed and cached locally, but the push failed: {e}"));
                }
                return Ok(r);
            }
            None => {
                // Another process broke our lock (we were suspended or stalled past the
                // staleness threshold) and owns the stage now: wait for it.
                let holder = cache
                    .lock_holder(&job.key)
                    .map(|h| format!("pid {} on {}", h.pid, h.host))
                    .unwrap_or_else(|| "another process".into());
                let _ = writeln!(
                    log,
                    "lost the lock of this stage to {holder}; waiting for its result instead of publishing ours"
                );
                progress.message(&format!("lost the lock to {holder}; waiting for its result"));
            }
        }
    }
    bail!(
        "lost the lock of this stage {MAX_LOCK_LOSSES} times (is this process being suspended for longer than the lock timeout?)"
    )
}

/// Under the lock: the artifact as another run left it, if that satisfies this job.
fn already_done(cache: &Cache, job: &StageJob) -> Result<Option<u64>> {
    let Some(m) = cache.lookup(&job.key)? else { return Ok(None) };
    if !job.force {
        return Ok(Some(m.total_bytes));
    }
    // Forced or rebuilding: only a generation published after our plan counts
    // (another forced run, or another run's rebuild of the damage we saw).
    let current = cache.generation_dir(&job.key);
    if current.is_some() && current != job.planned_generation && cache.verify(&job.key, VerifyMode::Full)?.ok {
        return Ok(Some(m.total_bytes));
    }
    Ok(None)
}

/// Runs the op and publishes; `Ok(None)` if the lock was lost on the way.
#[allow(clippy::too_many_arguments)] // the state of one `execute` call, handed down once
fn run_locked(
    ops: &OpRegistry,
    cache: &Cache,
    team: Option<&Cache>,
    job: &StageJob,
    op: &dyn Op,
    lock: &LockGuard,
    progress: &dyn ProgressSink,
    log: &mut dyn std::io::Write,
    start: Instant,
) -> Result<Option<StageResult>> {
    let mut leases = Vec::new();
    let mut inputs = BTreeMap::new();
    let mut input_keys = BTreeMap::new();
    let mut streamed = StreamedInputs::default();
    let streams = job.params.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
    for (label, targets) in &job.inputs {
        let mut paths = Vec::new();
        let stream_remote =
            job.remote.as_ref().filter(|r| r.pull && streams && op.streamable_inputs().contains(&label.as_str()));
        for (i, (key, output)) in targets.iter().enumerate() {
            let name = if targets.len() == 1 { label.clone() } else { format!("{label}[{i}]") };
            input_keys.insert(name, *key);
            if let Some(remote) = stream_remote.filter(|_| output.is_none())
                && !available(cache, team, key)?
            {
                let store = super::stream::open(remote, cache, key).with_context(|| {
                    format!("input `{label}` (artifact {}) is not in the local cache; streaming it", key.short())
                })?;
                let _ = writeln!(log, "input `{label}`: streaming {} from the remote", store.location().display());
                paths.push(store.location());
                streamed.0.insert(store.location(), store);
                continue;
            }
            let lease = lease_verified(ops, cache, team, label, key, op)?;
            paths.push(match output {
                Some(o) => lease.dir().join(o),
                None => lease.dir().to_path_buf(),
            });
            leases.push(lease);
        }
        inputs.insert(label.clone(), paths);
    }

    let staging = cache.begin(&job.key)?;
    let partial_dir = cache.partial_dir(&job.key)?;
    let resumed = std::fs::read_dir(&partial_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if resumed {
        let _ = writeln!(log, "resuming from saved progress in {}", partial_dir.display());
    }
    let started_unix = now_unix();
    let still_held = || lock.still_held();
    let mut ctx = StageCtx {
        instance: job.instance.clone(),
        params: job.params.clone(),
        table_metadata: BTreeMap::from([
            ("saepipe.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ("saepipe.op".to_string(), job.op.clone()),
            ("saepipe.stage".to_string(), job.instance.clone()),
            ("saepipe.key".to_string(), job.key.to_string()),
        ]),
        input_names: job.input_names.clone(),
        inputs,
        streamed,
        out_dir: staging.dir().to_path_buf(),
        partial_dir,
        base_dir: job.base_dir.clone(),
        threads: job.threads,
        progress,
        log,
        lock_held: &still_held,
    };
    let result = op.run(&mut ctx);
    // Whatever the op says, a holder that lost the lock must not publish: the new
    // holder may be writing the same partial progress.
    if !lock.still_held() {
        return Ok(None);
    }
    let metrics = match result {
        Ok(m) => m,
        Err(e) if StageStop::of(&e) == Some(StageStop::LockLost) => return Ok(None),
        Err(e) => {
            retire_damaged_inputs(cache, &e, &leases, log);
            return Err(e).with_context(|| format!("op `{}`", job.op));
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let draft = ManifestDraft {
        op: job.op.clone(),
        op_version: op.version(),
        stage: job.instance.clone(),
        params: serde_json::to_value(&job.material.params)?,
        inputs: input_keys,
        external: job.material.external.clone(),
        metrics,
        started_unix,
        seconds,
        resumed,
    };
    let manifest = if job.force { staging.commit_replacing(draft)? } else { staging.commit(draft)? };
    cache.clear_partial(&job.key)?;
    drop(leases);
    super::index::record(cache, &job.pipeline, &job.instance, &job.key, &job.material)?;
    Ok(Some(StageResult {
        outcome: if resumed { Outcome::Resumed } else { Outcome::Ran },
        bytes: manifest.total_bytes,
        seconds,
        warning: None,
    }))
}

/// Whether `key` is in the local cache or the team cache.
fn available(cache: &Cache, team: Option<&Cache>, key: &Key) -> Result<bool> {
    Ok(cache.lookup(key)?.is_some() || team.map(|t| t.lookup(key)).transpose()?.flatten().is_some())
}

/// Leases an input artifact and re-hashes every file of it that its reader does
/// not verify itself; a damaged input is never handed to the op.
/// An input missing from the private cache is taken from the team cache, in place.
fn lease_verified(
    ops: &OpRegistry,
    cache: &Cache,
    team: Option<&Cache>,
    label: &str,
    key: &Key,
    consumer: &dyn Op,
) -> Result<Lease> {
    let (lease, from_team) = match cache.lease(key)? {
        Some(l) => (l, None),
        None => match team.map(|t| t.lease(key).map(|l| l.map(|l| (l, t)))).transpose()?.flatten() {
            Some((l, t)) => (l, Some(t)),
            None => {
                bail!("input `{label}` (artifact {}) is missing from the cache: run again to rebuild it", key.short())
            }
        },
    };
    let producer = ops.find(&lease.manifest().op);
    let self_verified = |path: &str| {
        consumer.reads_inputs_through_verifying_readers()
            && producer.is_some_and(|p| p.verified_on_read().iter().any(|pat| glob_match(pat, path)))
    };
    let damaged = lease.damaged_files(&self_verified);
    if let (false, Some(t)) = (damaged.is_empty(), from_team) {
        bail!(
            "input `{label}` (artifact {}) is damaged in the team cache {}: {}; the team copy is left as it is (check it with `saepipe cache --cache-dir {} verify`)",
            key.short(),
            t.root().display(),
            damaged.join("; "),
            t.root().display()
        );
    }
    if !damaged.is_empty() {
        let retired = retire(cache, key, lease.dir());
        bail!("input `{label}` (artifact {}) is damaged: {}; {retired}", key.short(), damaged.join("; "));
    }
    Ok(lease)
}

/// Unlinks a damaged artifact (if it is still the current generation) so the
/// next run rebuilds it; says what happened.
fn retire(cache: &Cache, key: &Key, generation: &std::path::Path) -> String {
    let Ok(Some(_lock)) = cache.try_lock(key) else {
        return "another process holds its lock; run again once it is done".into();
    };
    if cache.generation_dir(key).as_deref() != Some(generation) {
        return "it has been replaced meanwhile: run again".into();
    }
    match cache.remove(key) {
        Ok(()) => "it was removed from the cache: run again to rebuild it".into(),
        Err(e) => format!("removing it failed ({e}): remove it with `saepipe cache rm {}`", key.short()),
    }
}

/// An op that failed on a damaged input file (found by a verifying reader):
/// retire that input so the next run rebuilds it.
fn retire_damaged_inputs(cache: &Cache, e: &anyhow::Error, leases: &[Lease], log: &mut dyn std::io::Write) {
    let Some(path) = e.chain().find_map(|c| match c.downcast_ref::<saepipe_data::DataError>() {
        Some(saepipe_data::DataError::Damaged { path, .. }) => Some(path.clone()),
        _ => None,
    }) else {
        return;
    };
    if let Some(lease) = leases.iter().find(|l| path.starts_with(l.dir())) {
        let what = retire(cache, lease.key(), lease.dir());
        let _ = writeln!(log, "input artifact {} is damaged ({}): {what}", lease.key().short(), path.display());
    }
}

/// `*` matches any run of characters within the file's path.
fn glob_match(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((prefix, suffix)) => {
            path.len() >= prefix.len() + suffix.len() && path.starts_with(prefix) && path.ends_with(suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob() {
        assert!(super::glob_match("shard-*.parquet", "shard-00001.parquet"));
        assert!(!super::glob_match("shard-*.parquet", "_store.json"));
        assert!(super::glob_match("_store.json", "_store.json"));
        assert!(!super::glob_match("a*a", "a"));
    }
}

/// What an `exec-stage` child process reports back to the scheduler (as JSON in
/// its result file): the [`StageResult`] of the stage it ran.
#[derive(Serialize, Deserialize)]
pub struct ExecResult {
    /// How the stage's artifact was obtained.
    pub outcome: Outcome,
    /// Size of the artifact in bytes.
    pub bytes: u64,
    /// Time the stage took, in seconds.
    pub seconds: f64,
    /// A problem that did not fail the stage (a failed push to the remote).
    #[serde(default)]
    pub warning: Option<String>,
}
