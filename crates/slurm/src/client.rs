//! Talking to Slurm through its commands (`sbatch`, `squeue`, `scontrol`,
//! `sacct`, `scancel`), as every user's job scripts do: no daemon protocol, no
//! REST API needed. A busy or restarting controller makes these commands fail
//! or hang for a while; such failures are retried with backoff, and a
//! submission whose answer was lost is found again by its unique comment
//! instead of being submitted twice.

use crate::error::{SlurmError, transient};
use crate::settings::SlurmSettings;
use crate::state::{JobInfo, JobState};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A Slurm job id (the array job's id for arrays).
pub type JobId = u64;

/// How long and how often to retry a Slurm command that failed transiently.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// The first wait after a failure; doubled after each further failure.
    pub first_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub give_up_after: Duration,
    /// One command's time limit; a command still running then is killed and
    /// counted as a transient failure.
    pub command_timeout: Duration,
}

impl Default for RetryPolicy {
    /// Ride out a controller restart or failover (minutes), not an outage (hours).
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            give_up_after: Duration::from_secs(15 * 60),
            command_timeout: Duration::from_secs(60),
        }
    }
}

/// One job to submit.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// `--job-name`; saepipe names pipeline, stage and key prefix in it.
    pub name: String,
    /// The batch script.
    pub script: PathBuf,
    /// Where the job's stdout and stderr go (appended to, across requeues).
    pub log: PathBuf,
    /// Resources and placement.
    pub settings: SlurmSettings,
    /// Jobs that must finish successfully first (`--dependency=afterok:...`).
    pub after_ok: Vec<JobId>,
    /// Seconds before the time limit at which the job gets SIGUSR1, to save
    /// its progress (`--signal=B:USR1@N`).
    pub warn_before_end_secs: Option<u32>,
    /// A token unique to this submission, stored as the job's `--comment`, by
    /// which a submission whose reply was lost is recognised.
    pub token: String,
}

/// A handle on the Slurm commands of this host.
pub struct Slurm {
    retry: RetryPolicy,
    min_submit_interval: Duration,
    last_submit: Mutex<Option<Instant>>,
    has_accounting: Mutex<Option<bool>>,
}

/// The output of a command that ran to completion.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Slurm {
    /// A client with the given retry policy, submitting at most
    /// `submits_per_second` jobs per second (0 for no limit).
    pub fn new(retry: RetryPolicy, submits_per_second: f64) -> Slurm {
        let min_submit_interval =
            if submits_per_second > 0.0 { Duration::from_secs_f64(1.0 / submits_per_second) } else { Duration::ZERO };
        Slurm { retry, min_submit_interval, last_submit: Mutex::new(None), has_accounting: Mutex::new(None) }
    }

    /// Whether `sbatch` can be run here at all (Slurm's client tools installed).
    pub fn available() -> bool {
        Command::new("sbatch").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    /// Submits a job and returns its id. A refusal (bad partition, account,
    /// limits) is returned at once with sbatch's words; transient failures are
    /// retried, and before each retry the queue is searched for the job by its
    /// token, so a submission is never made twice.
    pub fn submit(&self, spec: &JobSpec) -> Result<JobId, SlurmError> {
        self.throttle();
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", spec.name),
            format!("--output={}", spec.log.display()),
            "--open-mode=append".to_string(),
            "--requeue".to_string(),
            format!("--comment={}", spec.token),
        ];
        if let Some(secs) = spec.warn_before_end_secs {
            args.push(format!("--signal=B:USR1@{secs}"));
        }
        if !spec.after_ok.is_empty() {
            let ids: Vec<String> = spec.after_ok.iter().map(|i| i.to_string()).collect();
            args.push(format!("--dependency=afterok:{}", ids.join(":")));
            // A dependency that can never be met fails the job instead of leaving it pending forever.
            args.push("--kill-on-invalid-dep=yes".to_string());
        }
        args.extend(spec.settings.sbatch_args());
        args.push(spec.script.display().to_string());
        let mut first = true;
        self.with_retries("sbatch", || {
            if !first && let Some(id) = self.find_submitted(&spec.name, &spec.token)? {
                return Ok(Some(id));
            }
            first = false;
            let out = self.run("sbatch", &args)?;
            if !out.ok {
                return Err(classify("sbatch", &out));
            }
            let id = out.stdout.trim().split(';').next().unwrap_or_default();
            id.parse::<JobId>().map(Some).map_err(|_| SlurmError::Unexpected {
                command: "sbatch".into(),
                output: format!("expected a job id, got `{}`", out.stdout.trim()),
            })
        })
        .map(|id| id.expect("sbatch returns an id"))
    }

    /// The id of a queued or running job named `name` whose comment is `token`.
    pub fn find_submitted(&self, name: &str, token: &str) -> Result<Option<JobId>, SlurmError> {
        let out = self.run("squeue", &["-h".into(), format!("--name={name}"), "-o".into(), "%i|%k".into()])?;
        if !out.ok {
            return Err(classify("squeue", &out));
        }
        Ok(out.stdout.lines().find_map(|l| {
            let (id, comment) = l.split_once('|')?;
            (comment.trim() == token).then(|| id.trim().parse().ok()).flatten()
        }))
    }

    /// The state of each job, from `squeue` for queued and running jobs, then
    /// `scontrol` for recently finished ones, then `sacct` where accounting is
    /// enabled. A job none of them knows is [`JobState::Gone`]. A failure is
    /// reported only if it still holds a second later (a job being requeued
    /// can read as failed for a moment).
    pub fn query(&self, ids: &[JobId]) -> Result<HashMap<JobId, JobInfo>, SlurmError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(200) {
            found.extend(self.squeue(chunk)?);
        }
        for &id in ids {
            if found.contains_key(&id) {
                continue;
            }
            found.insert(id, self.ended_job(id)?);
        }
        // A job being requeued (preemption, `scontrol requeue`) can read as
        // failed for a moment while its killed run is recorded: a failure is
        // believed only if it still holds a moment later.
        let failed: Vec<JobId> = ids.iter().copied().filter(|id| found[id].state.is_failure()).collect();
        if !failed.is_empty() {
            std::thread::sleep(FAILURE_SETTLE);
            for id in failed {
                let again = match self.squeue(&[id])?.remove(&id) {
                    Some(info) => info,
                    None => self.ended_job(id)?,
                };
                if again.state.is_active() {
                    found.insert(id, again);
                }
            }
        }
        Ok(found)
    }

    /// A job squeue no longer lists: `scontrol`, then `sacct`, else gone.
    fn ended_job(&self, id: JobId) -> Result<JobInfo, SlurmError> {
        Ok(match self.scontrol_job(id)? {
            Some(info) => info,
            None => self.sacct_job(id)?.unwrap_or(JobInfo::gone()),
        })
    }

    /// What `squeue` says of the jobs it still lists.
    fn squeue(&self, ids: &[JobId]) -> Result<HashMap<JobId, JobInfo>, SlurmError> {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let args = ["-h".to_string(), format!("--jobs={}", list.join(",")), "-o".into(), "%i|%T|%r".into()];
        let out = self.with_retries("squeue", || {
            let out = self.run("squeue", &args)?;
            // squeue exits 1 when none of the ids is known any more.
            if !out.ok && !out.stderr.contains("Invalid job id") {
                return Err(classify("squeue", &out));
            }
            Ok(Some(out.stdout))
        })?;
        let mut found = HashMap::new();
        for line in out.unwrap_or_default().lines() {
            let mut f = line.split('|');
            let (Some(id), Some(state), reason) = (f.next(), f.next(), f.next()) else { continue };
            // Array tasks print as 123_4; the array's own id is what we track.
            let Ok(id) = id.trim().split('_').next().unwrap_or_default().parse::<JobId>() else { continue };
            found.insert(
                id,
                JobInfo {
                    state: JobState::from_slurm(state.trim()),
                    reason: reason.unwrap_or_default().trim().to_string(),
                    exit_code: None,
                    restarts: 0,
                },
            );
        }
        Ok(found)
    }

    /// `scontrol show job`: knows jobs until MinJobAge after they end.
    fn scontrol_job(&self, id: JobId) -> Result<Option<JobInfo>, SlurmError> {
        let args = ["show".to_string(), "job".into(), "-o".into(), id.to_string()];
        let text = self.with_retries("scontrol", || {
            let out = self.run("scontrol", &args)?;
            if !out.ok && out.stderr.contains("Invalid job id") {
                return Ok(Some(String::new()));
            }
            if !out.ok {
                return Err(classify("scontrol", &out));
            }
            Ok(Some(out.stdout))
        })?;
        Ok(text.filter(|t| !t.trim().is_empty()).map(|t| JobInfo::from_scontrol(&t)))
    }

    /// `sacct`, when the cluster keeps accounting (never required).
    fn sacct_job(&self, id: JobId) -> Result<Option<JobInfo>, SlurmError> {
        if !self.accounting() {
            return Ok(None);
        }
        let args =
            ["-n".to_string(), "-P".into(), "-X".into(), format!("--jobs={id}"), "-o".into(), "State,ExitCode".into()];
        let out = self.run("sacct", &args)?;
        if !out.ok {
            return Ok(None);
        }
        Ok(out.stdout.lines().next().and_then(|l| {
            let (state, exit) = l.split_once('|')?;
            Some(JobInfo {
                state: JobState::from_slurm(state.split_whitespace().next()?),
                reason: String::new(),
                exit_code: Some(exit.trim().to_string()),
                restarts: 0,
            })
        }))
    }

    fn accounting(&self) -> bool {
        let mut known = self.has_accounting.lock().unwrap();
        *known.get_or_insert_with(|| {
            self.run("sacct", &["-n".into(), "-X".into(), "--starttime=now".into()]).is_ok_and(|o| o.ok)
        })
    }

    /// Cancels jobs (unknown ids are ignored).
    pub fn cancel(&self, ids: &[JobId]) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        let args: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        self.with_retries("scancel", || {
            let out = self.run("scancel", &args)?;
            if !out.ok && !out.stderr.contains("Invalid job id") {
                return Err(classify("scancel", &out));
            }
            Ok(Some(()))
        })?;
        Ok(())
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy gives up.
    fn with_retries<T>(
        &self,
        command: &str,
        mut attempt: impl FnMut() -> Result<Option<T>, SlurmError>,
    ) -> Result<Option<T>, SlurmError> {
        let start = Instant::now();
        let mut delay = self.retry.first_delay;
        loop {
            match attempt() {
                Err(SlurmError::Transient { message, .. }) => {
                    if start.elapsed() + delay > self.retry.give_up_after {
                        return Err(SlurmError::GaveUp {
                            command: command.to_string(),
                            seconds: start.elapsed().as_secs(),
                            last: message,
                        });
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max_delay);
                }
                other => return other,
            }
        }
    }

    fn throttle(&self) {
        let mut last = self.last_submit.lock().unwrap();
        if let Some(t) = *last {
            let since = t.elapsed();
            if since < self.min_submit_interval {
                std::thread::sleep(self.min_submit_interval - since);
            }
        }
        *last = Some(Instant::now());
    }

    /// Runs one command with the policy's time limit.
    fn run(&self, program: &str, args: &[String]) -> Result<Output, SlurmError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SlurmError::NotInstalled { command: program.to_string(), message: e.to_string() })?;
        // Drain both pipes on threads so a chatty command cannot block on a full pipe.
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + self.retry.command_timeout;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|e| transient(program, e.to_string()))? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(transient(program, format!("no answer within {} s", self.retry.command_timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Output {
            ok: status.success(),
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        })
    }
}

/// Messages of a controller that is down, restarting or overloaded: worth
/// another try. Anything else is the cluster refusing the request.
/// How long a failure must hold before [`Slurm::query`] reports it.
const FAILURE_SETTLE: Duration = Duration::from_secs(1);

const TRANSIENT_MARKERS: &[&str] = &[
    "Unable to contact slurm controller",
    "Socket timed out",
    "temporarily unable",
    "Resource temporarily unavailable",
    "Connection refused",
    "Connection reset",
    "Zero Bytes were transmitted",
    "Communication connection failure",
    "Transport endpoint is not connected",
    "Slurmctld is not responding",
    "Too many pending jobs",
    "Job violates accounting/QOS policy (job submit limit",
];

fn classify(command: &str, out: &Output) -> SlurmError {
    let text = out.stderr.trim();
    if TRANSIENT_MARKERS.iter().any(|m| text.to_ascii_lowercase().contains(&m.to_ascii_lowercase())) {
        transient(command, text.to_string())
    } else {
        SlurmError::Refused { command: command.to_string(), message: text.to_string() }
    }
}
