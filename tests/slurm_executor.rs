//! The Slurm executor through the real binary on a real Slurm (the one-node
//! cluster scripts/test.sh starts; SLURM_CONF). Without it these tests say so
//! and skip, except under `CI=true`, where they fail.

#[path = "support/cli.rs"]
mod cli;
use cli::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One test stops the controller for a while: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn cluster() -> bool {
    match std::env::var("SLURM_CONF") {
        Ok(conf) if Path::new(&conf).exists() => true,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("SLURM_CONF is not set; scripts/test.sh starts a local Slurm and sets it")
        }
        _ => {
            eprintln!("SKIPPED: no local Slurm (SLURM_CONF unset; run through scripts/test.sh)");
            false
        }
    }
}

const CHAIN: &str = r#"
version: 1
name: chain
vars:
  delay: 0
  shards: 4
stages:
  a:
    op: debug_shards
    seed: 3
    shards: ${shards}
    delay_ms: ${delay}
  b:
    op: debug_shards
    inputs: [a]
    shards: 2
"#;

/// The job records of a cache: (record file, job id).
fn job_records(cache: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<(PathBuf, u64)> = std::fs::read_dir(cache.join("jobs"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".slurm.json"))
                .map(|p| {
                    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                    let id = v["job_id"].as_u64().unwrap();
                    (p, id)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn a_slurm_run_equals_a_local_run_and_reruns_submit_nothing() {
    let _turn = serial();
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    run_ok(&["run", "p.yaml", "--cache-dir", "local"], t.path());
    run_ok(&["run", "p.yaml", "--cache-dir", "cluster", "--executor", "slurm"], t.path());
    let cluster = t.path().join("cluster");
    assert_eq!(statuses(&cluster), both("ran"));
    assert_eq!(payloads(&cluster), payloads(&t.path().join("local")), "byte-identical to a local run");
    let jobs = job_records(&cluster);
    assert_eq!(jobs.len(), 2, "one job per stage: {jobs:?}");
    assert_ne!(jobs[0].1, jobs[1].1);

    run_ok(&["run", "p.yaml", "--cache-dir", "cluster", "--executor", "slurm"], t.path());
    assert_eq!(statuses(&cluster), both("hit"));
    assert_eq!(job_records(&cluster), jobs, "nothing was submitted again");
}

/// The driver is SIGKILLed while stage `a` runs as a job; started again, it
/// attaches to that job instead of submitting a second one.
#[test]
fn a_killed_driver_attaches_to_its_running_job() {
    let _turn = serial();
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    let slow = ["--set", "delay=500", "--set", "shards=10"];
    let mut args = vec!["run", "p.yaml", "--cache-dir", "c", "--executor", "slurm"];
    args.extend(slow);
    let mut driver =
        bin().args(&args).current_dir(t.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let cache = t.path().join("c");
    let t0 = Instant::now();
    while job_records(&cache).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no job was submitted");
        std::thread::sleep(Duration::from_millis(50));
    }
    driver.kill().unwrap();
    driver.wait().unwrap();
    let before = job_records(&cache);
    assert_eq!(before.len(), 1);

    run_ok(&args, t.path());
    assert_eq!(statuses(&cache), both("ran"));
    let after = job_records(&cache);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&before[0]), "stage a kept its job {}: {after:?}", before[0].1);
    let mut runs: Vec<PathBuf> = std::fs::read_dir(cache.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    runs.sort();
    let log = std::fs::read_to_string(runs.last().unwrap().join("logs/a.log")).unwrap();
    assert!(log.contains(&format!("attached to Slurm job {}", before[0].1)), "{log}");
}

#[test]
fn slurm_settings_are_checked_and_refusals_name_the_stage() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("typo.yaml"),
        format!("{CHAIN}executor: slurm\nslurm:\n  partiton: gpu\n  time: 4h\n"),
    )
    .unwrap();
    let out = bin().args(["validate", "typo.yaml"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.yaml:") && err.contains("did you mean `partition`"), "{err}");
    assert!(err.contains("`time: 4h` is not a Slurm time limit"), "{err}");

    let _turn = serial();
    if !cluster() {
        return;
    }
    std::fs::write(t.path().join("bad.yaml"), format!("{CHAIN}slurm:\n  partition: no-such-partition\n")).unwrap();
    let out = bin().args(["run", "bad.yaml", "--executor", "slurm"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stage `a`") && err.contains("Invalid partition name specified"), "{err}");
}

/// A pipeline with per-stage settings: `a` runs in the driver (`local`),
/// `flaky` fails on its first try and has one retry, `b` is a plain job.
fn stagewise(marker: &Path, flaky_retries: u32) -> String {
    format!(
        r#"version: 1
name: stagewise
executor: slurm
slurm:
  retries: 0
stages:
  a:
    op: debug_shards
    seed: 3
    shards: 2
    slurm:
      local: true
  flaky:
    op: command
    run: 'test -f {m} || {{ touch {m}; echo first try fails; exit 3; }}; echo ok > "$SAEPIPE_OUT/ok.txt"'
    slurm:
      retries: {flaky_retries}
  b:
    op: debug_shards
    inputs: [a]
    shards: 2
"#,
        m = marker.display()
    )
}

#[test]
fn stages_run_locally_or_retry_as_their_own_settings_say() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("typo.yaml"),
        stagewise(&t.path().join("m"), 1).replace("      local: true", "      locl: true"),
    )
    .unwrap();
    let out = bin().args(["validate", "typo.yaml"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.yaml:") && err.contains("did you mean `local`") && err.contains("`a`"), "{err}");

    let _turn = serial();
    if !cluster() {
        return;
    }
    // Without a retry the flaky stage fails, naming the job's end and its output.
    std::fs::write(t.path().join("once.yaml"), stagewise(&t.path().join("m1"), 0)).unwrap();
    let out = bin().args(["run", "once.yaml", "--cache-dir", "c1"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flaky") && err.contains("exit 3") && err.contains("first try fails"), "{err}");

    // With one retry it succeeds on the second job; `a` never becomes a job.
    std::fs::write(t.path().join("p.yaml"), stagewise(&t.path().join("m2"), 1)).unwrap();
    run_ok(&["run", "p.yaml", "--cache-dir", "c"], t.path());
    let cache = t.path().join("c");
    let mut want = both("ran");
    want.push(("flaky".into(), "ran".into()));
    want.sort();
    assert_eq!(statuses(&cache), want);
    assert_eq!(job_records(&cache).len(), 2, "`a` ran in the driver: {:?}", job_records(&cache));
    let mut runs: Vec<PathBuf> = std::fs::read_dir(cache.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    runs.sort();
    let log = std::fs::read_to_string(runs.last().unwrap().join("logs/flaky.log")).unwrap();
    assert!(log.contains("attempt 1 of 2: Slurm job") && log.contains("first try fails"), "{log}");
    assert_eq!(log.matches("submitted Slurm job").count(), 2, "{log}");
}

/// `status` as rows of (stage, state, job id).
fn status(dir: &Path, args: &[&str]) -> Vec<(String, String, String)> {
    let mut all = vec!["status"];
    all.extend(args);
    let out = run_ok(&all, dir);
    out.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split("  ").map(str::trim).filter(|f| !f.is_empty()).collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

#[test]
fn detach_then_status_then_attach() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    // Without Slurm as the executor there is nothing to detach from.
    let out = bin().args(["run", "p.yaml", "--detach"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--detach` needs the Slurm executor"));

    let _turn = serial();
    if !cluster() {
        return;
    }
    let args = ["p.yaml", "--cache-dir", "c", "--set", "delay=300", "--set", "shards=8"];
    let before = status(t.path(), &args);
    assert_eq!(before.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["not run", "not run"], "{before:?}");

    let mut detach = vec!["run", "--executor", "slurm", "--detach"];
    detach.extend(args);
    let started = Instant::now();
    let out = run_ok(&detach, t.path());
    let cache = t.path().join("c");
    let jobs = job_records(&cache);
    assert_eq!(jobs.len(), 2, "both stages submitted at once: {out}");
    assert!(out.lines().filter(|l| l.contains("submitted")).count() == 2, "{out}");
    eprintln!("detach returned after {:.1} s", started.elapsed().as_secs_f64());
    // b waits on a through Slurm, not through the driver.
    let ids: Vec<String> = jobs.iter().map(|j| j.1.to_string()).collect();
    let b_id = out.lines().find(|l| l.starts_with("b ")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    let a_id = ids.iter().find(|i| **i != b_id).unwrap();
    let show = Command::new("scontrol").args(["show", "job", &b_id]).output().unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains(&format!("afterok:{a_id}")), "{show}");

    let during = status(t.path(), &args);
    assert!(during.iter().all(|r| r.1 != "not run" && r.2 != "-"), "{during:?}");
    // A second detach submits nothing.
    run_ok(&detach, t.path());
    assert_eq!(job_records(&cache), jobs);

    // Attach: the run waits for the detached jobs and submits nothing new.
    let mut attach = vec!["run", "--executor", "slurm"];
    attach.extend(args);
    run_ok(&attach, t.path());
    assert_eq!(job_records(&cache), jobs, "the run attached instead of submitting");
    let after = status(t.path(), &args);
    assert_eq!(after.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["cached", "cached"], "{after:?}");
}

/// A stage that needs more memory than its job asked for fails with a
/// message that says so and names the setting to raise.
#[test]
fn a_job_over_its_memory_limit_says_so() {
    let _turn = serial();
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let yaml = r#"version: 1
name: oom
executor: slurm
stages:
  big:
    op: command
    run: 'python3 -c "x = bytearray(600 * 2**20); x[::4096] = bytes(len(x[::4096])); import time; time.sleep(8)"'
    slurm: {mem: 60M}
"#;
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let out = bin().args(["run", "p.yaml"]).current_dir(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stage `big`") && err.contains("out of memory: raise the stage's `slurm: {mem: ...}`"),
        "{err}"
    );
}

/// Twelve independent stages go to Slurm together (not two at a time, as the
/// driver host's two cores would allow locally), and each runs once.
#[test]
fn many_jobs_are_in_flight_at_once() {
    let _turn = serial();
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let yaml = "version: 1\nname: wide\nstages:\n  s:\n    op: debug_shards\n    foreach: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n    seed: ${item}\n    shards: 4\n    delay_ms: 400\n";
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let mut driver = bin()
        .args(["run", "p.yaml", "--executor", "slurm"])
        .current_dir(t.path())
        .env("SAEPIPE_SLURM_POLL_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut most = 0;
    while driver.try_wait().unwrap().is_none() {
        let q = Command::new("squeue").args(["-h", "-o", "%j"]).output().unwrap();
        let ours = String::from_utf8_lossy(&q.stdout).lines().filter(|l| l.starts_with("saepipe:wide:")).count();
        most = most.max(ours);
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = driver.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cache = t.path().join("cache");
    assert_eq!(job_records(&cache).len(), 12);
    assert!(statuses(&cache).iter().all(|(_, s)| s == "ran"), "{:?}", statuses(&cache));
    assert!(most >= 8, "at most {most} jobs were queued or running at once");
}

/// Two drivers started at once on one pipeline and cache: every stage is
/// submitted once; the second driver follows the first one's jobs.
#[test]
fn two_drivers_at_once_submit_each_stage_once() {
    let _turn = serial();
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    let args = ["run", "p.yaml", "--executor", "slurm", "--set", "delay=200", "--set", "shards=6"];
    let spawn = || {
        bin()
            .args(args)
            .current_dir(t.path())
            .env("SAEPIPE_SLURM_POLL_MS", "300")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (d1, d2) = (spawn(), spawn());
    let (o1, o2) = (d1.wait_with_output().unwrap(), d2.wait_with_output().unwrap());
    assert!(
        o1.status.success() && o2.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o1.stderr),
        String::from_utf8_lossy(&o2.stderr)
    );
    let cache = t.path().join("cache");
    let jobs = job_records(&cache);
    assert_eq!(jobs.len(), 2, "one job per stage: {jobs:?}");
    // Each stage's job was submitted by one driver; any other driver attached or took a hit.
    let logs: Vec<String> = std::fs::read_dir(cache.join("runs"))
        .unwrap()
        .flat_map(|r| std::fs::read_dir(r.unwrap().path().join("logs")).unwrap())
        .map(|l| std::fs::read_to_string(l.unwrap().path()).unwrap())
        .collect();
    let submitted = logs.iter().map(|l| l.matches("submitted Slurm job").count()).sum::<usize>();
    assert_eq!(submitted, 2, "{logs:?}");
    run_ok(&["run", "p.yaml", "--cache-dir", "local", "--set", "delay=200", "--set", "shards=6"], t.path());
    assert_eq!(payloads(&cache), payloads(&t.path().join("local")));
}

/// Per-op defaults under the pipeline's and the stage's settings: a GPU for
/// stages set to `device: cuda`, plots in the driver; what a pipeline or a
/// stage writes wins.
#[test]
fn ops_bring_sensible_slurm_defaults() {
    let t = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(repo().join("pipelines/toy_sae.yaml"))
        .unwrap()
        .replace("../models/", &format!("{}/models/", repo().display()));
    std::fs::write(t.path().join("p.yaml"), &yaml).unwrap();
    let ops = saepipe::ops::registry();
    let load = |file: &str, sets: &[&str]| {
        let opts =
            saepipe::pipeline::LoadOptions { sets: sets.iter().map(|s| s.to_string()).collect(), params_file: None };
        saepipe::pipeline::load(&ops, &t.path().join(file), &opts).unwrap()
    };
    let settings = |p: &saepipe::pipeline::Pipeline, stage: &str| {
        let inst = p.instances.iter().find(|i| i.stage == stage).unwrap();
        saepipe::exec::slurm::settings_for(p, inst, &p.slurm)
    };
    let p = load("p.yaml", &[]);
    assert_eq!(settings(&p, "report").local, Some(true), "plots run in the driver");
    assert_eq!(settings(&p, "sae").gpus, None, "device auto asks for no GPU");
    assert_eq!(settings(&p, "tokens").local, None);

    // device: cuda brings a GPU; the pipeline's and the stage's settings go over the defaults.
    let cuda = yaml.replace("    op: train_sae\n", "    op: train_sae\n    device: cuda\n    slurm: {time: 60}\n");
    let cuda = format!("{cuda}slurm:\n  partition: gpu\n");
    std::fs::write(
        t.path().join("cuda.yaml"),
        cuda.replace("    op: plot\n", "    op: plot\n    slurm: {local: false}\n"),
    )
    .unwrap();
    let p = load("cuda.yaml", &[]);
    let sae = settings(&p, "sae");
    assert_eq!(
        (sae.gpus.as_deref(), sae.time.as_deref(), sae.partition.as_deref()),
        (Some("1"), Some("60"), Some("gpu"))
    );
    assert_eq!(settings(&p, "report").local, Some(false), "a stage may send its plot to Slurm");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Tokens → activations → a TopK SAE on the toy LM, trained long enough to be
/// preempted in the middle.
fn toy_training(dir: &Path) {
    let yaml = format!(
        "version: 1\nname: toy_train\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 64\n    max_tokens: 8192\n  acts:\n    op: collect_activations\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    hooks:\n      - blocks.0.hook_resid_pre\n    shard_tokens: 2048\n  sae:\n    op: train_sae\n    activations: acts\n    hook: blocks.0.hook_resid_pre\n    architecture: topk\n    d_sae: 256\n    k: 8\n    batch_size: 256\n    total_tokens: 1048576\n    checkpoint_every: 20\n    device: cpu\n",
        repo().join("models/toy-grammar/corpus-train.jsonl").display()
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

/// A training job preempted mid-run (`scontrol requeue`: SIGTERM, then back to
/// the queue under the same id): the job saves a checkpoint on the signal, the
/// driver follows the requeue, the job resumes from the checkpoint, and the
/// SAE is byte-identical to an uninterrupted local run.
#[test]
fn a_preempted_training_job_resumes_from_its_checkpoint() {
    interrupt_training(Interruption::Requeue);
}

/// Slurm's warning ahead of the time limit (SIGUSR1 to the batch shell, as
/// `--signal=B:USR1@N` sends it): the job saves its checkpoint, requeues
/// itself, and resumes from it under the same job id.
#[test]
fn a_job_warned_of_its_time_limit_checkpoints_and_requeues_itself() {
    interrupt_training(Interruption::TimeLimitWarning);
}

#[derive(PartialEq)]
enum Interruption {
    /// `scontrol requeue` from outside (preemption, node failure).
    Requeue,
    /// The time-limit warning signal.
    TimeLimitWarning,
}

/// Trains through Slurm, interrupts the job at its first checkpoint, and
/// checks that the stage resumes in the same job, byte-identical.
fn interrupt_training(how: Interruption) {
    let _turn = serial();
    if !cluster() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    toy_training(t.path());
    let models = repo().join("models");
    let run_toy = |args: &[&str]| {
        let out = bin().args(args).current_dir(t.path()).env("SAEPIPE_MODELS", &models).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run_toy(&["run", "p.yaml", "--cache-dir", "ref"]);
    // The same inputs in the cluster cache, so only training goes to Slurm.
    run_toy(&["run", "p.yaml", "--cache-dir", "c", "acts"]);
    let mut driver = bin()
        .args(["run", "p.yaml", "--cache-dir", "c", "--executor", "slurm"])
        .current_dir(t.path())
        .env("SAEPIPE_MODELS", &models)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cache = t.path().join("c");
    // Wait for the job's first checkpoint, then interrupt it.
    let t0 = Instant::now();
    let checkpointed = || {
        std::fs::read_dir(cache.join("partial"))
            .map(|d| d.flatten().any(|e| e.path().join("checkpoint.json").exists()))
            .unwrap_or(false)
    };
    while !checkpointed() {
        assert!(t0.elapsed() < Duration::from_secs(180), "training never checkpointed");
        assert!(driver.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, id) = job_records(&cache).pop().expect("the training job");
    let interrupted = match how {
        Interruption::Requeue => Command::new("scontrol").args(["requeue", &id.to_string()]).status(),
        Interruption::TimeLimitWarning => {
            Command::new("scancel").args(["--signal=USR1", "--batch", &id.to_string()]).status()
        }
    };
    assert!(interrupted.unwrap().success());
    // Slurm holds a requeued job back (BeginTime); release it once it is pending again.
    let t0 = Instant::now();
    while driver.try_wait().unwrap().is_none() {
        let _ = Command::new("scontrol")
            .args(["update", &format!("JobId={id}"), "StartTime=now"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(t0.elapsed() < Duration::from_secs(300), "the requeued job never finished");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = driver.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = statuses(&cache);
    assert!(status.contains(&("sae".into(), "resumed".into())), "{status:?}");
    let log = std::fs::read_to_string(
        cache.join("jobs").join(
            job_records(&cache)
                .iter()
                .find(|(_, j)| *j == id)
                .unwrap()
                .0
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".slurm.json", ".log"),
        ),
    )
    .unwrap();
    assert!(log.contains("resuming from saved progress"), "{log}");
    if how == Interruption::TimeLimitWarning {
        assert!(log.contains(&format!("progress saved; job {id} requeued to resume from it")), "{log}");
    }
    assert_eq!(job_records(&cache).len(), 1, "one job, requeued, not a second submission");
    assert_eq!(payloads(&cache), payloads(&t.path().join("ref")), "byte-identical to the uninterrupted run");
}

/// slurmctld stopped for 30 s while a stage's job runs: the driver waits it
/// out (its queries fail and are retried) and the run ends normally.
#[test]
fn a_run_survives_the_controller_going_away_for_30_seconds() {
    let _turn = serial();
    if !cluster() {
        return;
    }
    let conf = std::env::var("SLURM_CONF").unwrap();
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    let mut driver = bin()
        .args(["run", "p.yaml", "--cache-dir", "c", "--executor", "slurm", "--set", "delay=300", "--set", "shards=10"])
        .current_dir(t.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cache = t.path().join("c");
    let t0 = Instant::now();
    while job_records(&cache).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no job was submitted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pattern = format!("^/usr/sbin/slurmctld -f {conf}$");
    assert!(Command::new("pkill").args(["-TERM", "-f", &pattern]).status().unwrap().success());
    std::thread::sleep(Duration::from_secs(30));
    assert!(driver.try_wait().unwrap().is_none(), "the driver gave up while the controller was away");
    assert!(Command::new("/usr/sbin/slurmctld").args(["-f", &conf]).status().unwrap().success());
    let out = driver.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(statuses(&cache), both("ran"));
    assert_eq!(job_records(&cache).len(), 2);
}
