//! Slurm's warning before a job's time limit (`--signal=B:USR1@N`, see
//! `SlurmSettings::warn_before`): the stage job saves its progress as on
//! Ctrl-C, then requeues itself, so the stage resumes from its checkpoint in
//! the same job (same id; the driver keeps following it) instead of being
//! killed at the limit.

use crate::engine::request_cancel;
use std::sync::atomic::{AtomicBool, Ordering};

static WARNED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_warning(_: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    WARNED.store(true, Ordering::SeqCst);
    request_cancel();
}

/// Answers SIGUSR1 with "save progress and stop".
pub(super) fn install() {
    let handler = on_warning as extern "C" fn(libc::c_int);
    // SAFETY: the handler only performs atomic stores.
    unsafe { libc::signal(libc::SIGUSR1, handler as libc::sighandler_t) };
}

/// After a stop caused by the warning, inside a Slurm job: requeue this job.
pub(super) fn requeue_if_warned() {
    if !WARNED.load(Ordering::SeqCst) {
        return;
    }
    let Ok(id) = std::env::var("SLURM_JOB_ID") else { return };
    let requeued = std::process::Command::new("scontrol").args(["requeue", &id]).status().is_ok_and(|s| s.success());
    if requeued {
        eprintln!("Slurm's time-limit warning: progress saved; job {id} requeued to resume from it");
    } else {
        eprintln!("Slurm's time-limit warning: progress saved; requeueing job {id} failed, the next run resumes it");
    }
}
