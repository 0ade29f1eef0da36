//! Job states as Slurm reports them, and what each means for a stage.

/// A job's state, from `squeue`, `scontrol` or `sacct`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting in the queue (also after a requeue).
    Pending,
    /// Running, or finishing up (COMPLETING).
    Running,
    /// Suspended or stopped by an administrator; it will continue.
    Suspended,
    /// Being requeued after preemption, a node failure or `scontrol requeue`
    /// (PREEMPTED, REQUEUED, REQUEUE_FED, REQUEUE_HOLD, RESIZING): it comes back
    /// under the same id, so it is followed, not reported failed.
    Requeued,
    /// Ended with exit code 0.
    Completed,
    /// Ended with a non-zero exit code.
    Failed,
    /// Cancelled by a user or administrator.
    Cancelled,
    /// Killed at its time limit.
    Timeout,
    /// Killed for exceeding its memory.
    OutOfMemory,
    /// Its node failed and it was not requeued.
    NodeFail,
    /// Failed to launch (BOOT_FAIL, LAUNCH_FAILED, DEADLINE, SPECIAL_EXIT...).
    LaunchFailed,
    /// No Slurm command knows the job any more (ended long ago, without
    /// accounting): the cache must tell what it did.
    Gone,
    /// A state this version does not know, as Slurm spelt it.
    Other(String),
}

impl JobState {
    /// Parses Slurm's state names (long or compact, any case; a trailing
    /// `by <uid>` or `+` as sacct writes them is ignored).
    pub fn from_slurm(s: &str) -> JobState {
        let s = s.trim().trim_end_matches('+').to_ascii_uppercase();
        match s.as_str() {
            "PENDING" | "PD" | "CONFIGURING" | "CF" => JobState::Pending,
            "RUNNING" | "R" | "COMPLETING" | "CG" | "STAGE_OUT" | "SO" | "SIGNALING" | "SI" => JobState::Running,
            "SUSPENDED" | "S" | "STOPPED" | "ST" => JobState::Suspended,
            "PREEMPTED" | "PR" | "REQUEUED" | "RQ" | "REQUEUE_FED" | "RF" | "REQUEUE_HOLD" | "RH" | "RESIZING"
            | "RS" => JobState::Requeued,
            "COMPLETED" | "CD" => JobState::Completed,
            "FAILED" | "F" => JobState::Failed,
            "CANCELLED" | "CA" => JobState::Cancelled,
            "TIMEOUT" | "TO" => JobState::Timeout,
            "OUT_OF_MEMORY" | "OOM" => JobState::OutOfMemory,
            "NODE_FAIL" | "NF" => JobState::NodeFail,
            "BOOT_FAIL" | "BF" | "LAUNCH_FAILED" | "DEADLINE" | "DL" | "SPECIAL_EXIT" | "SE" | "REVOKED" | "RV" => {
                JobState::LaunchFailed
            }
            other => JobState::Other(other.to_string()),
        }
    }

    /// The job is queued, running or coming back: wait for it.
    pub fn is_active(&self) -> bool {
        matches!(self, JobState::Pending | JobState::Running | JobState::Suspended | JobState::Requeued)
    }

    /// The job ended without success.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            JobState::Failed
                | JobState::Cancelled
                | JobState::Timeout
                | JobState::OutOfMemory
                | JobState::NodeFail
                | JobState::LaunchFailed
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            JobState::Pending => "queued",
            JobState::Running => "running",
            JobState::Suspended => "suspended",
            JobState::Requeued => "requeued",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Timeout => "timed out",
            JobState::OutOfMemory => "out of memory",
            JobState::NodeFail => "node failed",
            JobState::LaunchFailed => "failed to launch",
            JobState::Gone => "unknown to Slurm",
            JobState::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// What Slurm says about one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    /// Its state.
    pub state: JobState,
    /// Slurm's reason (why pending, why it failed), `None` written as empty.
    pub reason: String,
    /// `exit:signal` as Slurm prints it, when known.
    pub exit_code: Option<String>,
    /// How often Slurm restarted (requeued) it.
    pub restarts: u32,
}

impl JobInfo {
    /// A job no Slurm command knows.
    pub fn gone() -> JobInfo {
        JobInfo { state: JobState::Gone, reason: String::new(), exit_code: None, restarts: 0 }
    }

    /// Reads `scontrol show job -o` output (one line of `Key=Value` fields).
    pub fn from_scontrol(text: &str) -> JobInfo {
        let field =
            |name: &str| text.split_whitespace().find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')));
        JobInfo {
            state: field("JobState").map(JobState::from_slurm).unwrap_or(JobState::Gone),
            reason: field("Reason").filter(|r| *r != "None").unwrap_or_default().to_string(),
            exit_code: field("ExitCode").map(str::to_string),
            restarts: field("Restarts").and_then(|r| r.parse().ok()).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_in_every_spelling() {
        assert_eq!(JobState::from_slurm("PENDING"), JobState::Pending);
        assert_eq!(JobState::from_slurm("CANCELLED+"), JobState::Cancelled);
        assert_eq!(JobState::from_slurm("oom"), JobState::OutOfMemory);
        assert_eq!(JobState::from_slurm("PREEMPTED"), JobState::Requeued);
        assert!(JobState::Requeued.is_active() && !JobState::Requeued.is_failure());
        assert!(JobState::Timeout.is_failure());
        assert_eq!(JobState::from_slurm("WEIRD"), JobState::Other("WEIRD".into()));
    }

    #[test]
    fn scontrol_lines_are_read() {
        let line = "JobId=7 JobName=x UserId=root(0) JobState=OUT_OF_MEMORY Reason=OutOfMemory Dependency=(null) \
                    Requeue=1 Restarts=2 BatchFlag=1 ExitCode=0:125";
        let info = JobInfo::from_scontrol(line);
        assert_eq!(info.state, JobState::OutOfMemory);
        assert_eq!(info.reason, "OutOfMemory");
        assert_eq!(info.exit_code.as_deref(), Some("0:125"));
        assert_eq!(info.restarts, 2);
    }
}
