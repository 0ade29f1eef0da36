//! The Slurm client against a real Slurm: the one-node cluster that
//! scripts/slurm_local.sh starts (scripts/test.sh starts it and exports
//! SLURM_CONF). Without it these tests say so and skip, except under
//! `CI=true`, where they fail.

use saepipe_slurm::{JobId, JobSpec, JobState, RetryPolicy, Slurm, SlurmError, SlurmSettings};
use std::path::Path;
use std::time::{Duration, Instant};

/// The tests share one cluster and one of them restarts its controller: they
/// run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cluster() -> Option<(String, std::sync::MutexGuard<'static, ()>)> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    match std::env::var("SLURM_CONF") {
        Ok(conf) if Path::new(&conf).exists() => Some((conf, guard)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("SLURM_CONF is not set; scripts/test.sh starts a local Slurm and sets it")
        }
        _ => {
            eprintln!("SKIPPED: no local Slurm (SLURM_CONF unset; run through scripts/test.sh)");
            None
        }
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        give_up_after: Duration::from_secs(90),
        command_timeout: Duration::from_secs(20),
    }
}

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    p
}

fn spec(dir: &Path, name: &str, body: &str) -> JobSpec {
    JobSpec {
        name: format!("saepipe-test:{name}"),
        script: script(dir, &format!("{name}.sh"), body),
        log: dir.join(format!("{name}.log")),
        settings: SlurmSettings::default(),
        after_ok: vec![],
        warn_before_end_secs: None,
        token: format!("{name}-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos()),
    }
}

/// Polls until the job is no longer active (or `limit` passes).
fn wait_done(slurm: &Slurm, id: JobId, limit: Duration) -> JobState {
    let t0 = Instant::now();
    loop {
        let state = slurm.query(&[id]).unwrap()[&id].state.clone();
        if !state.is_active() || t0.elapsed() > limit {
            return state;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for(slurm: &Slurm, id: JobId, want: JobState, limit: Duration) {
    let t0 = Instant::now();
    while slurm.query(&[id]).unwrap()[&id].state != want {
        assert!(t0.elapsed() < limit, "job {id} never became {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jobs_run_in_order_and_report_their_outcome() {
    let Some(_cluster) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let slurm = Slurm::new(quick_retries(), 0.0);
    let out = dir.path().join("order.txt");
    let first = slurm.submit(&spec(dir.path(), "first", &format!("sleep 1; echo first >> {}", out.display()))).unwrap();
    let mut second = spec(dir.path(), "second", &format!("echo second >> {}", out.display()));
    second.after_ok = vec![first];
    let second = slurm.submit(&second).unwrap();
    let failing = slurm.submit(&spec(dir.path(), "failing", "echo about to fail; exit 3")).unwrap();

    assert_eq!(wait_done(&slurm, second, Duration::from_secs(60)), JobState::Completed);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "first\nsecond\n", "afterok ordered them");
    assert_eq!(wait_done(&slurm, failing, Duration::from_secs(60)), JobState::Failed);
    let info = &slurm.query(&[failing]).unwrap()[&failing];
    assert_eq!(info.exit_code.as_deref(), Some("3:0"));
    assert!(std::fs::read_to_string(dir.path().join("failing.log")).unwrap().contains("about to fail"));
    // An id Slurm never had.
    assert_eq!(slurm.query(&[999_999]).unwrap()[&999_999].state, JobState::Gone);
}

#[test]
fn refusals_quote_sbatch_and_are_not_retried() {
    let Some(_cluster) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let slurm = Slurm::new(quick_retries(), 0.0);
    let mut s = spec(dir.path(), "refused", "true");
    s.settings.partition = Some("no-such-partition".into());
    // A refusal comes back as such, not as a retried failure that finally gave up.
    match slurm.submit(&s) {
        Err(SlurmError::Refused { command, message }) => {
            assert_eq!(command, "sbatch");
            assert!(message.contains("Invalid partition name specified"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_requeued_job_is_followed_under_the_same_id() {
    let Some(_cluster) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let slurm = Slurm::new(quick_retries(), 0.0);
    let marker = dir.path().join("runs.txt");
    // The first run waits to be requeued; the second finishes.
    let body =
        format!("echo run >> {m}\nif [ \"$(wc -l < {m})\" -lt 2 ]; then sleep 60; fi\necho done", m = marker.display());
    let id = slurm.submit(&spec(dir.path(), "requeued", &body)).unwrap();
    wait_for(&slurm, id, JobState::Running, Duration::from_secs(60));
    let t0 = Instant::now();
    while std::fs::read_to_string(&marker).map(|s| s.lines().count()).unwrap_or(0) < 1 {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = std::process::Command::new("scontrol").args(["requeue", &id.to_string()]).status().unwrap();
    assert!(status.success());
    // Followed through the requeue, never seen as failed.
    let t0 = Instant::now();
    let mut released = false;
    let end = loop {
        let info = slurm.query(&[id]).unwrap()[&id].clone();
        assert!(!info.state.is_failure(), "a requeued job reads as {}", info.state);
        if info.state == JobState::Pending && !released {
            // Slurm holds a requeued job back for a while (BeginTime); let it start now.
            released = std::process::Command::new("scontrol")
                .args(["update", &format!("JobId={id}"), "StartTime=now"])
                .status()
                .unwrap()
                .success();
        }
        if !info.state.is_active() {
            break info;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "requeued job never finished");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(end.state, JobState::Completed);
    assert!(end.restarts >= 1, "{end:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 2);
}

/// slurmctld down for a while: submissions and queries wait and go on.
#[test]
fn a_restarting_controller_is_waited_out() {
    let Some((conf, _serial)) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let slurm = Slurm::new(quick_retries(), 0.0);
    let stopped = std::process::Command::new("pkill")
        .args(["-TERM", "-f", &format!("^/usr/sbin/slurmctld -f {conf}$")])
        .status()
        .unwrap();
    assert!(stopped.success(), "slurmctld was not running");
    // Bring it back after a few seconds, from another thread.
    let conf2 = conf.clone();
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        let ok = std::process::Command::new("/usr/sbin/slurmctld").args(["-f", &conf2]).status().unwrap();
        assert!(ok.success());
    });
    let t0 = Instant::now();
    let id = slurm.submit(&spec(dir.path(), "during-outage", "echo ok")).unwrap();
    restart.join().unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(4), "the submission waited for the controller");
    assert_eq!(wait_done(&slurm, id, Duration::from_secs(90)), JobState::Completed);
}
