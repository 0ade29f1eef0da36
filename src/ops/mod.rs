//! Stage kinds. Each op declares a typed parameter schema and a `run` that reads
//! its inputs and writes its output directory; ops know nothing about caching,
//! locking or scheduling (the engine in `exec` does all of that).

pub mod coder_ref;
pub mod collect_activations;
pub mod command;
pub mod debug_shards;
pub mod device;
pub mod evaluate;
pub mod inspect_features;
pub mod match_features;
pub mod model_ref;
pub mod plot;
pub mod table;
pub mod tokenize;
pub mod train_sae;

use crate::pipeline::schema::ParamSpec;
use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a stage needs exclusively while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Cpu,
    /// One GPU stage at a time per device.
    Gpu(usize),
}

pub trait Op: Send + Sync {
    fn name(&self) -> &'static str;
    /// Bumped whenever the op's output for the same inputs changes; part of the cache key.
    fn version(&self) -> u32;
    fn summary(&self) -> &'static str;
    fn params(&self) -> Vec<ParamSpec>;
    /// Named outputs (sub-paths of the artifact directory) that references like
    /// `stage.name` may point at.
    fn outputs(&self) -> &'static [&'static str] {
        &[]
    }
    /// Files or directories outside the cache that the result depends on, beyond
    /// `Path` parameters (e.g. a model resolved from a hub id). Hashed by content.
    fn external_inputs(&self, _params: &Params, _base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }
    /// Extra strings that go into the key (e.g. the content of scripts a command runs).
    fn resource(&self, _params: &Params) -> Resource {
        Resource::Cpu
    }
    /// Files of this op's artifacts (patterns with one `*`) that the readers of
    /// consuming ops verify themselves as they read them (against hashes the
    /// artifact carries), so the engine need not re-hash them up front.
    fn verified_on_read(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether this op reads its inputs only through saepipe's verifying
    /// readers; ops that hand inputs to foreign code (a user's command) get
    /// every input file re-hashed before they start.
    fn reads_inputs_through_verifying_readers(&self) -> bool {
        true
    }
    /// Checks that need more than the parameter schema (e.g. hook names against
    /// the model's config.json), run by `validate`, `plan` and `run` before
    /// anything executes. Never downloads: what is not available locally is not
    /// checked here. Returns (parameter, list index, message) per problem.
    fn check_params(&self, _params: &Params, _base_dir: &Path) -> Vec<ParamProblem> {
        Vec::new()
    }
    /// Hidden ops (engine self-tests) are left out of `saepipe ops`.
    fn hidden(&self) -> bool {
        false
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value>;
}

pub fn registry() -> &'static [&'static dyn Op] {
    static OPS: &[&dyn Op] = &[
        &tokenize::TokenizeOp,
        &collect_activations::CollectActivationsOp,
        &train_sae::TrainSaeOp,
        &evaluate::EvaluateOp,
        &match_features::MatchFeaturesOp,
        &inspect_features::InspectFeaturesOp,
        &plot::PlotOp,
        &command::CommandOp,
        &debug_shards::DebugShardsOp,
    ];
    OPS
}

pub fn find(name: &str) -> Option<&'static dyn Op> {
    registry().iter().copied().find(|op| op.name() == name)
}

/// An op's validated parameters (defaults filled in, paths made absolute).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }
    fn need(&self, name: &str) -> Result<&Value> {
        self.get(name).ok_or_else(|| anyhow!("parameter `{name}` is missing"))
    }
    pub fn str(&self, name: &str) -> Result<&str> {
        self.need(name)?.as_str().ok_or_else(|| anyhow!("parameter `{name}` must be a string"))
    }
    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }
    pub fn i64(&self, name: &str) -> Result<i64> {
        self.need(name)?.as_i64().ok_or_else(|| anyhow!("parameter `{name}` must be an integer"))
    }
    pub fn usize(&self, name: &str) -> Result<usize> {
        let v = self.i64(name)?;
        usize::try_from(v).map_err(|_| anyhow!("parameter `{name}` must not be negative (got {v})"))
    }
    /// A non-negative integer, or `default` when absent.
    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64> {
        match self.get(name) {
            None => Ok(default),
            Some(_) => Ok(self.usize(name)? as u64),
        }
    }
    pub fn f64(&self, name: &str) -> Result<f64> {
        self.need(name)?.as_f64().ok_or_else(|| anyhow!("parameter `{name}` must be a number"))
    }
    pub fn bool(&self, name: &str) -> Result<bool> {
        self.need(name)?.as_bool().ok_or_else(|| anyhow!("parameter `{name}` must be a boolean"))
    }
    pub fn str_list(&self, name: &str) -> Result<Vec<String>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("parameter `{name}` must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(anyhow!("parameter `{name}` must be a list of strings")),
        }
    }
}

/// Progress reporting handed to a running op.
pub trait ProgressSink: Send + Sync {
    fn set_total(&self, total: u64, unit: &str);
    fn set_position(&self, pos: u64);
    fn message(&self, msg: &str);
}

/// Everything an op may touch while it runs.
pub struct StageCtx<'a> {
    pub instance: String,
    pub params: Params,
    /// Resolved input artifacts by parameter label (`tokens`, `saes`, `inputs.data`), in order.
    pub inputs: BTreeMap<String, Vec<PathBuf>>,
    /// Where the op writes its output; published atomically when `run` returns Ok.
    pub out_dir: PathBuf,
    /// Survives crashes: shards or checkpoints written here let a rerun resume.
    pub partial_dir: PathBuf,
    /// The pipeline file's directory (relative paths in user parameters resolve here).
    pub base_dir: PathBuf,
    pub threads: usize,
    pub progress: &'a dyn ProgressSink,
    pub log: &'a mut dyn std::io::Write,
    /// Whether this process still holds the stage's lock (false once another
    /// process judged it stale and took the stage over).
    pub lock_held: &'a dyn Fn() -> bool,
}

/// A problem [`Op::check_params`] found: the parameter, the index of the
/// offending item when the parameter is a list, and what is wrong.
pub type ParamProblem = (&'static str, Option<usize>, String);

/// Why a stage stopped early without failing; the engine handles each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StageStop {
    /// Ctrl-C (or SIGTERM): progress is saved; a rerun resumes.
    #[error("interrupted (progress saved; run the same command again to resume)")]
    Interrupted,
    /// Another process took the stage over; its result is used instead.
    #[error("lost the stage's lock to another process")]
    LockLost,
}

impl StageStop {
    /// The stop an error carries, if it is one (anywhere in its chain).
    pub fn of(e: &anyhow::Error) -> Option<StageStop> {
        e.chain().find_map(|c| c.downcast_ref::<StageStop>()).copied()
    }
}

/// A reference (model, tokenizer, coder) that is not in the local cache while
/// downloads are off: read-only commands report it instead of fetching it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} is not in the local Hugging Face cache (it is downloaded when the stage runs)")]
pub struct NotDownloaded {
    pub what: String,
}

static DOWNLOADS_FORBIDDEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Read-only commands (`plan`, `cache ...`) never touch the network: references
/// missing from the local cache resolve to [`NotDownloaded`] instead.
pub fn forbid_downloads() {
    DOWNLOADS_FORBIDDEN.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether resolving a reference may download it.
pub fn downloads_allowed() -> bool {
    !DOWNLOADS_FORBIDDEN.load(std::sync::atomic::Ordering::SeqCst)
}

static CANCELLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every running stage to save its progress and stop (the first Ctrl-C).
pub fn request_cancel() {
    CANCELLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn cancel_requested() -> bool {
    CANCELLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The cache key of an input artifact directory (a generation directory's name
/// carries a nonce; the key does not), or the directory's name outside the cache.
pub fn artifact_key(dir: &Path) -> String {
    match saepipe_cache::Manifest::read(&dir.join(saepipe_cache::MANIFEST_FILE)) {
        Ok(Some(m)) => m.key.to_string(),
        _ => dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}

impl StageCtx<'_> {
    pub fn input(&self, label: &str) -> Result<&Path> {
        match self.inputs.get(label).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some(many) => Err(anyhow!("input `{label}` has {} artifacts where one was expected", many.len())),
            None => Err(anyhow!("input `{label}` was not provided")),
        }
    }
    pub fn input_list(&self, label: &str) -> &[PathBuf] {
        self.inputs.get(label).map(Vec::as_slice).unwrap_or(&[])
    }
    pub fn logln(&mut self, msg: impl AsRef<str>) {
        let _ = writeln!(self.log, "{}", msg.as_ref());
    }
    /// A warning the user must see: into the stage log and onto stderr.
    pub fn warn(&mut self, msg: impl AsRef<str>) {
        let line = format!("warning: {}: {}", self.instance, msg.as_ref());
        eprintln!("{line}");
        self.logln(line);
    }
    /// Called by long ops before writing resumable progress: an error once the
    /// lock is lost (so a suspended holder that woke up never overwrites the
    /// progress of the process that took over).
    pub fn check_lock(&self) -> Result<()> {
        if (self.lock_held)() { Ok(()) } else { Err(StageStop::LockLost.into()) }
    }

    /// Whether the user asked to stop (Ctrl-C): the op saves what it can
    /// resume from, then returns `Err(StageStop::Interrupted.into())`.
    pub fn cancelled(&self) -> bool {
        cancel_requested()
    }

    /// Writes `bytes` to `out_dir/rel` (creating parent directories).
    pub fn write_output(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.out_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}
