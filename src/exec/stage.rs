//! Running one stage instance against the cache: look up, lock, run the op into a
//! staging directory, publish atomically. The same code runs in-process and in a
//! separate process (`saepipe exec-stage`), which is what cluster executors use.

use super::keys::KeyMaterial;
use crate::ops::{self, Params, ProgressSink, StageCtx};
use anyhow::{Context, Result, anyhow, bail};
use saepipe_cache::{Cache, Key, ManifestDraft, VerifyMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A self-contained description of one stage instance's work.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageJob {
    pub pipeline: String,
    pub instance: String,
    pub op: String,
    pub key: Key,
    pub material: KeyMaterial,
    pub params: Params,
    /// Input label → (artifact key, optional named output), in order.
    pub inputs: BTreeMap<String, Vec<(Key, Option<String>)>>,
    pub base_dir: PathBuf,
    /// Recompute even if the artifact exists (and replace it).
    pub force: bool,
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Found in the cache.
    Hit,
    /// Another process computed it while we waited for its lock.
    WaitedHit,
    Ran,
    Resumed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::WaitedHit => "hit (waited)",
            Outcome::Ran => "ran",
            Outcome::Resumed => "resumed",
        }
    }
}

pub struct StageResult {
    pub outcome: Outcome,
    pub bytes: u64,
    pub seconds: f64,
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub fn execute(cache: &Cache, job: &StageJob, progress: &dyn ProgressSink, log: &mut dyn std::io::Write) -> Result<StageResult> {
    let start = Instant::now();
    let op = ops::find(&job.op).ok_or_else(|| anyhow!("unknown op `{}`", job.op))?;
    if !job.force {
        if let Some(m) = cache.lookup(&job.key)? {
            super::index::record(cache, &job.pipeline, &job.instance, &job.key, &job.material)?;
            return Ok(StageResult { outcome: Outcome::Hit, bytes: m.total_bytes, seconds: start.elapsed().as_secs_f64() });
        }
    }
    let mut announced = false;
    let _lock = cache.lock(&job.key, &mut |info| {
        if !announced {
            progress.message(&format!("waiting for pid {} on {} (already computing this stage)", info.pid, info.host));
            let _ = writeln!(log, "waiting for the lock held by pid {} on {}", info.pid, info.host);
            announced = true;
        }
    })?;
    if job.force {
        if cache.lookup(&job.key)?.is_some() {
            cache.remove(&job.key)?;
        }
    } else if let Some(m) = cache.lookup(&job.key)? {
        super::index::record(cache, &job.pipeline, &job.instance, &job.key, &job.material)?;
        return Ok(StageResult { outcome: Outcome::WaitedHit, bytes: m.total_bytes, seconds: start.elapsed().as_secs_f64() });
    }

    let mut inputs = BTreeMap::new();
    let mut input_keys = BTreeMap::new();
    for (label, targets) in &job.inputs {
        let mut paths = Vec::new();
        for (i, (key, output)) in targets.iter().enumerate() {
            let report = cache.verify(key, VerifyMode::Quick)?;
            if !report.ok {
                bail!("input `{label}` (artifact {}) is missing or damaged: {}", key.short(), report.problems.join("; "));
            }
            let dir = cache.artifact_dir(key);
            paths.push(match output {
                Some(o) => dir.join(o),
                None => dir,
            });
            let name = if targets.len() == 1 { label.clone() } else { format!("{label}[{i}]") };
            input_keys.insert(name, *key);
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
    let mut ctx = StageCtx {
        instance: job.instance.clone(),
        params: job.params.clone(),
        inputs,
        out_dir: staging.dir().to_path_buf(),
        partial_dir,
        base_dir: job.base_dir.clone(),
        threads: job.threads,
        progress,
        log,
    };
    let metrics = op.run(&mut ctx).with_context(|| format!("op `{}`", job.op))?;
    let seconds = start.elapsed().as_secs_f64();
    let manifest = staging.commit(ManifestDraft {
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
    })?;
    cache.clear_partial(&job.key)?;
    super::index::record(cache, &job.pipeline, &job.instance, &job.key, &job.material)?;
    Ok(StageResult { outcome: if resumed { Outcome::Resumed } else { Outcome::Ran }, bytes: manifest.total_bytes, seconds })
}
