//! [`StageCtx`]: everything an op may touch while it runs.

use super::control::{StageStop, cancel_requested};
use super::params::Params;
use super::progress::ProgressSink;
use anyhow::{Context, Result, anyhow};
use saepipe_data::{LocalStore, StoreSource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything an op may touch while it runs.
///
/// Built by the executor for one run of [`Op::run`](super::Op::run); the op reads
/// its parameters and inputs from it, writes into `out_dir`, and reports through
/// `progress` and `log`.
pub struct StageCtx<'a> {
    /// The instance id (`stage` or `stage[key]`), for messages.
    pub instance: String,
    /// The instance's validated parameters.
    pub params: Params,
    /// Key-value metadata every Parquet table of the artifact carries (see
    /// [`write_table`](Self::write_table)): the executor fills `saepipe.version`,
    /// `saepipe.op`, `saepipe.stage` and `saepipe.key`; ops add what they know
    /// of the data (`saepipe.model`, `saepipe.revision`, `saepipe.hook`).
    pub table_metadata: BTreeMap<String, String>,
    /// Resolved input artifacts by parameter label (`tokens`, `saes`, `inputs.data`), in order.
    pub inputs: BTreeMap<String, Vec<PathBuf>>,
    /// The instance ids of the stages behind `inputs`, parallel to it (empty
    /// when unknown); see [`producer`](Self::producer).
    pub input_names: BTreeMap<String, Vec<String>>,
    /// Input activation stores read in place from the run's remote (`stream:
    /// true`), by the location that stands for them in `inputs` (a remote URL,
    /// not a local path); see [`store_source`](Self::store_source).
    pub streamed: StreamedInputs,
    /// Where the op writes its output; published atomically when `run` returns Ok.
    pub out_dir: PathBuf,
    /// Survives crashes: shards or checkpoints written here let a rerun resume.
    pub partial_dir: PathBuf,
    /// The pipeline file's directory (relative paths in user parameters resolve here).
    pub base_dir: PathBuf,
    /// CPU threads the op may use.
    pub threads: usize,
    /// Where the op reports progress (a progress bar, or nothing).
    pub progress: &'a dyn ProgressSink,
    /// The stage's log (a file in the run record, or stderr); see [`StageCtx::logln`].
    pub log: &'a mut dyn std::io::Write,
    /// Whether this process still holds the stage's lock (false once another
    /// process judged it stale and took the stage over).
    pub lock_held: &'a dyn Fn() -> bool,
}

impl StageCtx<'_> {
    /// The single artifact directory of input `label`; an error when the input is
    /// missing or refers to several artifacts.
    pub fn input(&self, label: &str) -> Result<&Path> {
        match self.inputs.get(label).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some(many) => Err(anyhow!("input `{label}` has {} artifacts where one was expected", many.len())),
            None => Err(anyhow!("input `{label}` was not provided")),
        }
    }
    /// All artifact directories of input `label`, in order; empty when absent.
    pub fn input_list(&self, label: &str) -> &[PathBuf] {
        self.inputs.get(label).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The instance id of the pipeline stage that input directory `dir` (an
    /// entry of `inputs`) came from: the name reports show for it, even when
    /// the artifact was cached by an identically configured stage of another name.
    pub fn producer(&self, dir: &Path) -> Option<&str> {
        self.inputs.iter().find_map(|(label, dirs)| {
            let i = dirs.iter().position(|d| d == dir)?;
            self.input_names.get(label)?.get(i).map(String::as_str)
        })
    }
    /// Where to read the activation store of input directory `dir` (an entry
    /// of `inputs`) from: the remote for a streamed input, else the directory.
    pub fn store_source(&self, dir: &Path) -> Arc<dyn StoreSource> {
        self.streamed.source(dir)
    }
    /// Writes one line to the stage log (write errors are ignored).
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

    /// Writes `table` as Parquet to `out_dir/rel` (creating parent
    /// directories), with the stage's [`table_metadata`](Self::table_metadata).
    pub fn write_table(&self, table: &saepipe_data::table::Table, rel: &str) -> Result<()> {
        let path = self.out_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        saepipe_data::table::write_parquet_with_metadata(table, &path, &self.provenance())
            .with_context(|| format!("writing {}", path.display()))
    }
    /// The [`table_metadata`](Self::table_metadata) as key-value pairs, for
    /// Parquet files an op writes itself (token tables, store shards).
    pub fn provenance(&self) -> Vec<(String, String)> {
        self.table_metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    /// Records what a table's rows are about (model, revision, hook) in the
    /// metadata of every table written after it; empty values are skipped.
    pub fn describe_tables(&mut self, model: &str, revision: &str, hook: &str) {
        for (k, v) in [("saepipe.model", model), ("saepipe.revision", revision), ("saepipe.hook", hook)] {
            if !v.is_empty() {
                self.table_metadata.insert(k.into(), v.into());
            }
        }
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

/// The input activation stores a stage reads in place from the remote, by
/// the location that stands for each in [`StageCtx::inputs`].
#[derive(Clone, Default)]
pub struct StreamedInputs(pub BTreeMap<PathBuf, Arc<dyn StoreSource>>);

impl StreamedInputs {
    /// Where to read the store of input directory `dir` from: the remote for
    /// a streamed input, else the directory.
    pub fn source(&self, dir: &Path) -> Arc<dyn StoreSource> {
        match self.0.get(dir) {
            Some(s) => s.clone(),
            None => Arc::new(LocalStore::new(dir)),
        }
    }
}

/// The cache key of an input artifact directory (a generation directory's name
/// carries a nonce; the key does not), or the directory's name outside the cache.
pub fn artifact_key(dir: &Path) -> String {
    match saepipe_cache::Manifest::read_in(dir) {
        Ok(Some(m)) => m.key.to_string(),
        _ => dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}
