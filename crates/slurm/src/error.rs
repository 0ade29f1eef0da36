//! Errors of Slurm commands, quoting what the command said.

/// A Slurm command that did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The cluster refused the request (invalid partition or account, limits,
    /// a malformed option); retrying will not help.
    #[error("{command} refused: {message}")]
    Refused {
        /// The command (`sbatch`, ...).
        command: String,
        /// What it printed.
        message: String,
    },
    /// The controller did not answer or was busy; worth retrying.
    #[error("{command} failed for now: {message}")]
    Transient {
        /// The command.
        command: String,
        /// What it printed, or that it timed out.
        message: String,
    },
    /// Transient failures went on longer than the retry policy allows.
    #[error("{command} kept failing for {seconds} s (is slurmctld down?); last: {last}")]
    GaveUp {
        /// The command.
        command: String,
        /// How long it was retried.
        seconds: u64,
        /// The last failure.
        last: String,
    },
    /// The command could not be started at all.
    #[error("cannot run `{command}` ({message}); is Slurm installed on this host, and is it a login node?")]
    NotInstalled {
        /// The command.
        command: String,
        /// The OS error.
        message: String,
    },
    /// The command answered something this version cannot read.
    #[error("{command}: unexpected output: {output}")]
    Unexpected {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
}

pub(crate) fn transient(command: &str, message: String) -> SlurmError {
    SlurmError::Transient { command: command.to_string(), message }
}
