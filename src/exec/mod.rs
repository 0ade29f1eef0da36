//! Execution: cache keys, plans, the scheduler and single-stage execution,
//! for the ops of the pipeline's registry.

pub mod detach;
mod index;
pub mod keys;
mod names;
pub mod plan;
mod progress;
pub mod remote;
pub mod scheduler;
pub mod slurm;
mod slurm_watch;
pub mod stage;
pub mod stream;
pub mod team;
