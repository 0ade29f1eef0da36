//! A loaded pipeline: its stages, their expanded instances with validated
//! parameters, and the references between instances (the DAG's edges).

use super::yaml::Pos;
use crate::engine::{Op, OpRegistry, Params};
use std::collections::HashMap;
use std::path::PathBuf;

/// A validated pipeline file with every stage expanded into its instances.
pub struct Pipeline {
    pub file: PathBuf,
    pub name: String,
    pub base_dir: PathBuf,
    pub cache_dir: Option<PathBuf>,
    /// The remote cache from the pipeline's `cache:` mapping (the command line may replace it).
    pub remote: Option<crate::engine::RemoteSettings>,
    /// `executor: slurm` in the pipeline (the command line may override it).
    pub executor_slurm: bool,
    /// The pipeline's `slurm:` settings for its jobs.
    pub slurm: saepipe_slurm::SlurmSettings,
    pub stages: Vec<StageDef>,
    pub instances: Vec<Instance>,
    /// The stage kinds the pipeline was loaded with; execution looks up the
    /// producers of input artifacts here.
    pub ops: OpRegistry,
}

/// One stage as written: its op and the instances it expanded into.
pub struct StageDef {
    pub name: String,
    pub op: &'static dyn Op,
    pub pos: Pos,
    /// Indices into `Pipeline::instances`.
    pub instances: Vec<usize>,
    pub expanded: bool,
}

/// One artifact a reference points at.
#[derive(Clone, Debug)]
pub struct Target {
    pub instance: usize,
    pub output: Option<String>,
}

/// The artifacts one input parameter refers to.
#[derive(Clone, Debug)]
pub struct InputRef {
    /// Parameter label the op reads it by: `tokens`, `saes`, `inputs.data`.
    pub label: String,
    pub targets: Vec<Target>,
}

/// One stage instance: a node of the DAG, one cache key.
pub struct Instance {
    /// `stage` or `stage[key]`.
    pub id: String,
    pub stage: String,
    pub key: Option<String>,
    pub op: &'static dyn Op,
    /// Validated parameters: defaults filled, paths absolute, references as written.
    pub params: Params,
    pub inputs: Vec<InputRef>,
    /// Explicit ordering dependencies from `needs:`.
    pub needs: Vec<usize>,
    pub pos: Pos,
}

impl Pipeline {
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
