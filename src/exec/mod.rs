//! The engine: cache keys, plans, the scheduler and single-stage execution.

pub mod index;
pub mod keys;
pub mod plan;
pub mod progress;
pub mod scheduler;
pub mod stage;
