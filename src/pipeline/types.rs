//! A loaded pipeline: its stages, their expanded instances with validated
//! parameters, and the references between instances (the DAG's edges).

use super::yaml::Pos;
use crate::engine::{Op, OpRegistry, Params};
use std::collections::HashMap;
use std::path::PathBuf;

/// A validated pipeline file with every stage expanded into its instances.
///
/// The output of [`load`](super::load) and the input of planning
/// (`exec::plan::make_plan`): the YAML is gone, every
/// reference is resolved to instance indices, and every instance's parameters
/// have been checked against its op's schema.
pub struct Pipeline {
    /// The pipeline file it was loaded from.
    pub file: PathBuf,
    /// The pipeline's `name:`; the cache's run index (what each instance last
    /// built, for `plan`'s reasons) is kept per pipeline name.
    pub name: String,
    /// Directory relative paths in the pipeline are resolved against (the file's directory).
    pub base_dir: PathBuf,
    /// The pipeline's `cache_dir:`, resolved against `base_dir`; the command line and
    /// `$SAEPIPE_CACHE` take precedence.
    pub cache_dir: Option<PathBuf>,
    /// The remote cache from the pipeline's `cache:` mapping (the command line may replace it).
    pub remote: Option<crate::engine::RemoteSettings>,
    /// A read-only team cache under the private one (`cache: {team: DIR}`,
    /// `--team-cache`): its artifacts are used in place, new ones go to the
    /// private cache.
    pub team_cache: Option<PathBuf>,
    /// `executor: slurm` in the pipeline (the command line may override it).
    pub executor_slurm: bool,
    /// The pipeline's `slurm:` settings for its jobs.
    pub slurm: saepipe_slurm::SlurmSettings,
    /// The stages in file order.
    pub stages: Vec<StageDef>,
    /// Every stage instance, stage by stage in file order; the DAG's nodes, referred to by index.
    pub instances: Vec<Instance>,
    /// The stage kinds the pipeline was loaded with; execution looks up the
    /// producers of input artifacts here.
    pub ops: OpRegistry,
}

/// One stage as written: its op and the instances it expanded into.
pub struct StageDef {
    /// The stage's name (its key under `stages:`).
    pub name: String,
    /// The op (stage kind) its `op:` names.
    pub op: &'static dyn Op,
    /// Where the stage is written in the file, for diagnostics.
    pub pos: Pos,
    /// Indices into `Pipeline::instances`.
    pub instances: Vec<usize>,
    /// Whether `foreach`/`matrix` expanded it (its instances are `stage[key]`), so
    /// that references must pick an instance or take them all.
    pub expanded: bool,
    /// The stage's own `slurm:` settings (over the pipeline's; not in any key).
    pub slurm: saepipe_slurm::SlurmSettings,
}

/// One artifact a reference points at.
#[derive(Clone, Debug)]
pub struct Target {
    /// Index into [`Pipeline::instances`] of the producing instance.
    pub instance: usize,
    /// The named output of the producer (`stage.output` in YAML), or `None` for its whole artifact.
    pub output: Option<String>,
}

/// The artifacts one input parameter refers to.
#[derive(Clone, Debug)]
pub struct InputRef {
    /// Parameter label the op reads it by: `tokens`, `saes`, `inputs.data`.
    pub label: String,
    /// The artifacts referred to, in the order written (several for a list or a whole expanded stage).
    pub targets: Vec<Target>,
}

/// One stage instance: a node of the DAG, one cache key.
pub struct Instance {
    /// `stage` or `stage[key]`.
    pub id: String,
    /// Name of the stage it belongs to.
    pub stage: String,
    /// Its `foreach`/`matrix` key, `None` for an unexpanded stage.
    pub key: Option<String>,
    /// The op it runs.
    pub op: &'static dyn Op,
    /// Validated parameters: defaults filled, paths absolute, references as written.
    pub params: Params,
    /// The artifacts its parameters refer to: one entry per parameter (or mapping
    /// entry, `inputs.data`) that holds stage references.
    pub inputs: Vec<InputRef>,
    /// Explicit ordering dependencies from `needs:`.
    pub needs: Vec<usize>,
    /// Where its stage is written in the file, for diagnostics.
    pub pos: Pos,
}

impl Pipeline {
    /// Instance id → index into [`Pipeline::instances`].
    pub fn instance_index(&self) -> HashMap<&str, usize> {
        self.instances.iter().enumerate().map(|(i, x)| (x.id.as_str(), i)).collect()
    }
    /// Instances a stage instance depends on (inputs and `needs`), without repeats.
    pub fn deps(&self, i: usize) -> Vec<usize> {
        let inst = &self.instances[i];
        let mut out: Vec<usize> = inst
            .inputs
            .iter()
            .flat_map(|r| r.targets.iter().map(|t| t.instance))
            .chain(inst.needs.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
    /// Resolves a stage name (`train`: all instances) or instance id (`train[x]`).
    pub fn select(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(s) = self.stages.iter().find(|s| s.name == name) {
            return Some(s.instances.clone());
        }
        self.instances.iter().position(|x| x.id == name).map(|i| vec![i])
    }
}
