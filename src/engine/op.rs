//! The [`Op`] trait: what a stage kind declares and how it runs.

use super::ctx::StageCtx;
use super::params::Params;
use super::schema::ParamSpec;
use anyhow::Result;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a stage needs exclusively while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Nothing exclusive: CPU stages share the machine, limited only by `-j`.
    Cpu,
    /// One GPU stage at a time per device.
    Gpu(usize),
}

/// A problem [`Op::check_params`] found: the parameter, the index of the
/// offending item when the parameter is a list, and what is wrong.
pub type ParamProblem = (&'static str, Option<usize>, String);

/// A stage kind. An op declares a typed parameter schema and a `run` that reads
/// its inputs and writes its output directory; it knows nothing about caching,
/// locking or scheduling (the engine does all of that).
pub trait Op: Send + Sync {
    /// The name pipelines give as a stage's `op:`; unique within a registry.
    fn name(&self) -> &'static str;
    /// Bumped whenever the op's output for the same inputs changes; part of the cache key.
    fn version(&self) -> u32;
    /// One line saying what the op does, shown by `saepipe ops`.
    fn summary(&self) -> &'static str;
    /// The parameter schema: every parameter a stage of this op may give,
    /// checked when the pipeline is loaded.
    fn params(&self) -> Vec<ParamSpec>;
    /// Named outputs (sub-paths of the artifact directory) that references like
    /// `stage.name` may point at.
    fn outputs(&self) -> &'static [&'static str] {
        &[]
    }
    /// Files or directories outside the cache that the result depends on, beyond
    /// `Path` parameters (e.g. a model resolved from a hub id). Hashed by content.
    /// While downloads are forbidden (read-only commands), a reference not yet in
    /// the local cache is reported as a [`NotDownloaded`](super::NotDownloaded) error.
    fn external_inputs(&self, _params: &Params, _base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }
    /// What the stage holds exclusively while it runs (the scheduler runs one
    /// stage per GPU at a time).
    fn resource(&self, _params: &Params) -> Resource {
        Resource::Cpu
    }
    /// What a Slurm job of this stage asks for unless the pipeline's or the
    /// stage's `slurm:` says otherwise (a GPU for stages set to `device: cuda`,
    /// `local: true` for seconds of work).
    fn slurm_defaults(&self, _params: &Params) -> saepipe_slurm::SlurmSettings {
        saepipe_slurm::SlurmSettings::default()
    }
    /// Files of this op's artifacts (patterns with one `*`) that the readers of
    /// consuming ops verify themselves as they read them (against hashes the
    /// artifact carries), so the engine need not re-hash them up front.
    fn verified_on_read(&self) -> &'static [&'static str] {
        &[]
    }
    /// Input labels (activation stores) that a stage of this op reads in place
    /// from the run's remote, shard by shard, when it sets `stream: true` and
    /// the store is not in the local cache (see [`stream_param`](super::stream_param)).
    fn streamable_inputs(&self) -> &'static [&'static str] {
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
    /// Does the work: reads `ctx.inputs`, writes into `ctx.out_dir`, returns the
    /// metrics recorded in the artifact's manifest.
    fn run(&self, ctx: &mut StageCtx) -> Result<Value>;
}

/// An op shows as its name (so types holding ops can derive `Debug`).
impl std::fmt::Debug for dyn Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Op({})", self.name())
    }
}
