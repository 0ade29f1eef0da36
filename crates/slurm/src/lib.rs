//! Slurm for saepipe: the settings a pipeline gives its jobs ([`SlurmSettings`]),
//! submitting and following jobs through the standard Slurm commands with
//! retries on a busy or restarting controller ([`Slurm`]), and what job states
//! mean for a stage ([`JobState`]). The engine's Slurm executor is built on
//! this; the cache, not Slurm, stays the record of what finished.
#![warn(missing_docs)]

mod client;
mod error;
mod settings;
mod state;

pub use client::{JobId, JobSpec, RetryPolicy, Slurm};
pub use error::SlurmError;
pub use settings::{DEFAULT_WARN_BEFORE_SECS, SETTING_NAMES, SettingError, SlurmSettings};
pub use state::{JobInfo, JobState};
