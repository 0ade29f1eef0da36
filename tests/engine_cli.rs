//! End-to-end engine tests through the real `saepipe` binary: key stability,
//! plans that explain themselves, kill/resume byte identity, concurrent runs on
//! one cache, stale locks, corrupt artifacts, failures, --force and gc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saepipe"));
    c.env_remove("SAEPIPE_CACHE").env_remove("RUST_BACKTRACE").env("NO_COLOR", "1");
    c
}

fn run_ok(args: &[&str], dir: &Path) -> String {
    let out = bin().args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "saepipe {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_out(args: &[&str], dir: &Path) -> Output {
    bin().args(args).current_dir(dir).output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `plan` output: instance -> (key prefix, action).
fn plan(dir: &Path, file: &str, extra: &[&str]) -> Vec<(String, String, String, String)> {
    let mut args = vec!["plan", file];
    args.extend_from_slice(extra);
    run_ok(&args, dir)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[2].to_string(), f[3].to_string(), f[4..].join(" "))
        })
        .collect()
}

fn artifact_file(cache: &Path, key_prefix: &str, name: &str) -> PathBuf {
    let dir = std::fs::read_dir(cache.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(key_prefix))
        .unwrap_or_else(|| panic!("no artifact {key_prefix}"));
    dir.join(name)
}

const CHAIN: &str = r#"
version: 1
name: chain
vars:
  seed: 1
  delay: 0
  shards: 4
stages:
  a:
    op: debug_shards
    seed: ${seed}
    scale: 0.001
    shards: ${shards}
    delay_ms: ${delay}
  b:
    op: debug_shards
    inputs: [a]
    shards: 2
"#;

#[test]
fn keys_ignore_yaml_key_order_and_number_format_across_processes() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "one.yaml", CHAIN);
    let reordered = r#"
stages:
  b: {shards: 2, inputs: [a], op: debug_shards}
  a: {delay_ms: 5, shards: 4, scale: 1e-3, op: debug_shards, seed: 1}
name: chain
version: 1
"#;
    write(t.path(), "two.yaml", reordered);
    let p1 = plan(t.path(), "one.yaml", &[]);
    let p2 = plan(t.path(), "two.yaml", &[]);
    let key = |p: &[(String, String, String, String)], s: &str| p.iter().find(|r| r.0 == s).unwrap().1.clone();
    assert_eq!(key(&p1, "a"), key(&p2, "a"), "delay_ms is not in the key and 1e-3 == 0.001");
    assert_eq!(key(&p1, "b"), key(&p2, "b"));
    let p3 = plan(t.path(), "one.yaml", &["--set", "seed=2"]);
    assert_ne!(key(&p1, "a"), key(&p3, "a"));
    assert_ne!(key(&p1, "b"), key(&p3, "b"), "a changed key, so b does too");
}

#[test]
fn plan_says_why_and_rerun_is_all_hits() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    let p = plan(t.path(), "p.yaml", &[]);
    assert!(p.iter().all(|r| r.2 == "run" && r.3.contains("not run before")), "{p:?}");
    run_ok(&["run", "p.yaml", "-q"], t.path());
    let p = plan(t.path(), "p.yaml", &[]);
    assert!(p.iter().all(|r| r.2 == "hit"), "{p:?}");
    let p = plan(t.path(), "p.yaml", &["--set", "seed=5"]);
    let a = p.iter().find(|r| r.0 == "a").unwrap();
    assert_eq!(a.2, "run");
    assert!(a.3.contains("parameter `seed` changed: 1 -> 5"), "{}", a.3);
    let b = p.iter().find(|r| r.0 == "b").unwrap();
    assert!(b.3.contains("input `inputs` changed"), "{}", b.3);
    // The summary table reports hits on a rerun.
    let out = run_ok(&["run", "p.yaml"], t.path());
    assert!(out.lines().filter(|l| l.starts_with("a ") || l.starts_with("b ")).all(|l| l.contains("hit")), "{out}");
    assert!(out.contains("finished in ") && out.contains(": 0 ran, 2 from the cache"), "{out}");
}

/// Without a terminal: each finished stage says how far the run is (of the
/// stages to run, hits not counted) with an ETA, and the run ends with a headline.
#[test]
fn plain_progress_counts_stages_to_run_and_ends_with_a_headline() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    let out = run_out(&["run", "p.yaml", "--set", "delay=50"], t.path());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let done: Vec<&str> = stderr.lines().filter(|l| l.starts_with("done ")).collect();
    assert_eq!(done.len(), 2, "{stderr}");
    assert!(done[0].starts_with("done a in ") && done[0].contains("(ran) [1/2, ETA "), "{stderr}");
    assert!(done[1].ends_with("(ran) [2/2]"), "{stderr}");
    assert!(stdout.contains("finished in ") && stdout.contains(": 2 ran, 0 from the cache"), "{stdout}");
    // With hits in the run, only the stage that does work is counted.
    let out = run_out(&["run", "p.yaml", "--set", "delay=50", "--force", "b"], t.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let done: Vec<&str> = stderr.lines().filter(|l| l.starts_with("done ")).collect();
    assert!(done.len() == 1 && done[0].starts_with("done b ") && done[0].ends_with("[1/1]"), "{stderr}");
}

fn shards_done(cache: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(cache.join("partial")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            std::fs::read_dir(e.path())
                .map(|d| {
                    d.filter(|f| f.as_ref().map(|f| f.path().extension().is_some_and(|x| x == "bin")).unwrap_or(false))
                        .count()
                })
                .unwrap_or(0)
        })
        .sum()
}

fn kill(child: &mut Child) {
    // SIGKILL: no chance to clean up, like a node dying.
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigkill_mid_stage_then_rerun_is_byte_identical() {
    let reference = tempfile::tempdir().unwrap();
    write(reference.path(), "p.yaml", CHAIN);
    run_ok(&["run", "p.yaml", "-q", "--set", "shards=12"], reference.path());
    let keys = plan(reference.path(), "p.yaml", &["--set", "shards=12"]);
    let want_a = std::fs::read(artifact_file(&reference.path().join("cache"), &keys[0].1, "data.bin")).unwrap();
    let want_b = std::fs::read(artifact_file(&reference.path().join("cache"), &keys[1].1, "data.bin")).unwrap();

    for kill_after in [1usize, 5, 10] {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "p.yaml", CHAIN);
        let mut child = bin()
            .args(["run", "p.yaml", "-q", "--set", "shards=12", "--set", "delay=150"])
            .current_dir(t.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while shards_done(&t.path().join("cache")) < kill_after {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(&mut child);
        let p = plan(t.path(), "p.yaml", &["--set", "shards=12"]);
        assert_eq!(p[0].2, "resume", "after kill at {kill_after}: {p:?}");
        let out = run_ok(&["run", "p.yaml", "--set", "shards=12"], t.path());
        assert!(out.lines().any(|l| l.starts_with("a ") && l.contains("resumed")), "{out}");
        let got_a = std::fs::read(artifact_file(&t.path().join("cache"), &keys[0].1, "data.bin")).unwrap();
        let got_b = std::fs::read(artifact_file(&t.path().join("cache"), &keys[1].1, "data.bin")).unwrap();
        assert!(got_a == want_a && got_b == want_b, "kill after {kill_after} shards changed the result");
        assert_eq!(shards_done(&t.path().join("cache")), 0, "partial work is cleared after publishing");
    }
}

#[test]
fn two_processes_compute_each_stage_once() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    let spawn = || {
        bin()
            .args(["run", "p.yaml", "--set", "delay=40", "--set", "shards=10"])
            .current_dir(t.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let c1 = spawn();
    std::thread::sleep(Duration::from_millis(100));
    let c2 = spawn();
    let o1 = c1.wait_with_output().unwrap();
    let o2 = c2.wait_with_output().unwrap();
    assert!(
        o1.status.success() && o2.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o1.stderr),
        String::from_utf8_lossy(&o2.stderr)
    );
    let s1 = String::from_utf8_lossy(&o1.stdout);
    let s2 = String::from_utf8_lossy(&o2.stdout);
    let ran = |s: &str, stage: &str| s.lines().any(|l| l.starts_with(&format!("{stage} ")) && l.contains(" ran "));
    for stage in ["a", "b"] {
        assert!(ran(&s1, stage) ^ ran(&s2, stage), "stage {stage} must run exactly once:\n{s1}\n{s2}");
    }
    let listing = run_ok(&["cache", "ls"], t.path());
    assert!(listing.contains("2 artifacts"), "{listing}");
    let verify = run_out(&["cache", "verify"], t.path());
    assert!(verify.status.success());
}

/// Two drivers started on one cache with one worker each split six
/// independent stages instead of waiting on each other: each stage runs once,
/// and each driver computes some of them.
#[test]
fn two_drivers_split_the_ready_stages() {
    let t = tempfile::tempdir().unwrap();
    let yaml = "version: 1\nname: split\nstages:\n  s:\n    op: debug_shards\n    foreach: [1, 2, 3, 4, 5, 6]\n    seed: ${item}\n    shards: 4\n    delay_ms: 150\n";
    write(t.path(), "p.yaml", yaml);
    let spawn = || {
        bin()
            .args(["run", "p.yaml", "--jobs", "1"])
            .current_dir(t.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let start = Instant::now();
    let c1 = spawn();
    std::thread::sleep(Duration::from_millis(100));
    let c2 = spawn();
    let (o1, o2) = (c1.wait_with_output().unwrap(), c2.wait_with_output().unwrap());
    eprintln!("two drivers: {:.1} s for six stages of ~0.6 s", start.elapsed().as_secs_f64());
    assert!(o1.status.success() && o2.status.success());
    let (s1, s2) = (String::from_utf8_lossy(&o1.stdout), String::from_utf8_lossy(&o2.stdout));
    let ran = |s: &str| -> Vec<String> {
        s.lines().filter(|l| l.starts_with("s[") && l.contains(" ran ")).map(|l| l[..4].to_string()).collect()
    };
    let (r1, r2) = (ran(&s1), ran(&s2));
    let mut all: Vec<String> = r1.iter().chain(&r2).cloned().collect();
    all.sort();
    assert_eq!(all, ["s[1]", "s[2]", "s[3]", "s[4]", "s[5]", "s[6]"], "each stage once:\n{s1}\n{s2}");
    assert!(r1.len() >= 2 && r2.len() >= 2, "the drivers split the work ({r1:?} / {r2:?}):\n{s1}\n{s2}");
}

#[test]
fn stale_lock_of_killed_process_is_broken() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    let mut child = bin()
        .args(["run", "p.yaml", "-q", "--set", "delay=300", "--set", "shards=50"])
        .current_dir(t.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shards_done(&t.path().join("cache")) < 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(&mut child);
    let locks: Vec<_> = std::fs::read_dir(t.path().join("cache/locks")).unwrap().collect();
    assert!(!locks.is_empty(), "the killed run left its lock behind");
    let start = Instant::now();
    run_ok(&["run", "p.yaml", "-q", "--set", "shards=50"], t.path());
    assert!(start.elapsed() < Duration::from_secs(25), "stale lock was not broken promptly");
}

#[test]
fn corrupt_artifact_is_detected_and_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    run_ok(&["run", "p.yaml", "-q"], t.path());
    let keys = plan(t.path(), "p.yaml", &[]);
    let path = artifact_file(&t.path().join("cache"), &keys[0].1, "data.bin");
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let v = run_out(&["cache", "verify"], t.path());
    assert_eq!(v.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&v.stdout).contains("CORRUPT"));
    let p = plan(t.path(), "p.yaml", &[]);
    assert_eq!(p[0].2, "rebuild", "{p:?}");
    assert!(p[0].3.contains("damaged"), "{p:?}");
    run_ok(&["run", "p.yaml", "-q"], t.path());
    assert_eq!(std::fs::read(artifact_file(&t.path().join("cache"), &keys[0].1, "data.bin")).unwrap(), good);
    assert!(run_out(&["cache", "verify"], t.path()).status.success());
}

#[test]
fn failure_skips_downstream_and_keep_going_runs_the_rest() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "p.yaml",
        "version: 1\nstages:\n  bad: {op: debug_shards, fail: true}\n  after: {op: debug_shards, inputs: [bad]}\n  other: {op: debug_shards, seed: 3}\n",
    );
    let o = run_out(&["run", "p.yaml", "-j", "1", "--keep-going"], t.path());
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l.starts_with("bad ") && l.contains("failed")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("after ") && l.contains("skipped")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("other ") && l.contains("ran")), "{out}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failing on purpose"), "{err}");
}

#[test]
fn targets_force_and_isolated_processes() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    let out = run_ok(&["run", "p.yaml", "a"], t.path());
    assert!(out.contains("a ") && !out.lines().any(|l| l.starts_with("b ")), "{out}");
    let out = run_ok(&["run", "p.yaml", "--isolate"], t.path());
    assert!(out.lines().any(|l| l.starts_with("b ") && l.contains("ran")), "{out}");
    let out = run_ok(&["run", "p.yaml", "--force", "a"], t.path());
    assert!(
        out.lines().any(|l| l.starts_with("a ") && l.contains("ran"))
            && out.lines().any(|l| l.starts_with("b ") && l.contains("ran")),
        "{out}"
    );
    let o = run_out(&["run", "p.yaml", "zz"], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("target `zz` is not a stage"));
}

#[test]
fn gc_is_a_dry_run_unless_yes() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    run_ok(&["run", "p.yaml", "-q"], t.path());
    run_ok(&["run", "p.yaml", "-q", "--set", "seed=9"], t.path());
    assert!(run_ok(&["cache", "ls"], t.path()).contains("4 artifacts"));
    let dry = run_ok(&["cache", "gc", "p.yaml"], t.path());
    assert!(dry.contains("would remove"), "{dry}");
    assert!(run_ok(&["cache", "ls"], t.path()).contains("4 artifacts"));
    run_ok(&["cache", "gc", "p.yaml", "--yes"], t.path());
    assert!(run_ok(&["cache", "ls"], t.path()).contains("2 artifacts"));
    assert!(plan(t.path(), "p.yaml", &[]).iter().all(|r| r.2 == "hit"));
}

#[test]
fn command_op_keys_on_script_content() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "make.sh",
        "echo one > \"$SAEPIPE_OUT/result.txt\"\ncat \"$SAEPIPE_INPUT_DATA\" | wc -c >> \"$SAEPIPE_OUT/result.txt\"\n",
    );
    write(
        t.path(),
        "p.yaml",
        "version: 1\nstages:\n  data: {op: debug_shards}\n  report:\n    op: command\n    run: sh make.sh\n    scripts: [make.sh]\n    inputs: {data: data.data.bin}\n",
    );
    run_ok(&["run", "p.yaml", "-q"], t.path());
    let p = plan(t.path(), "p.yaml", &[]);
    let out = std::fs::read_to_string(artifact_file(&t.path().join("cache"), &p[1].1, "result.txt")).unwrap();
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["one", "4096"]);
    write(t.path(), "make.sh", "echo two > \"$SAEPIPE_OUT/result.txt\"\n");
    let p2 = plan(t.path(), "p.yaml", &[]);
    assert_eq!(p2[0].2, "hit");
    assert_eq!(p2[1].2, "run");
    assert!(p2[1].3.contains("scripts"), "{:?}", p2[1]);
    // A failing command fails the stage with its stderr.
    write(t.path(), "make.sh", "echo broken >&2; exit 3\n");
    let o = run_out(&["run", "p.yaml"], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken"));
}

#[test]
fn dag_validate_ops_and_invalid_exit_code() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    let dag = run_ok(&["dag", "p.yaml"], t.path());
    assert!(dag.contains("digraph") && dag.contains("n0 -> n1") && dag.contains("flowchart LR"), "{dag}");
    assert!(run_ok(&["validate", "p.yaml"], t.path()).contains("ok (2 stages"));
    assert!(run_ok(&["ops", "command"], t.path()).contains("run"));
    write(t.path(), "bad.yaml", "version: 1\nstages:\n  a: {op: nope}\n");
    let o = run_out(&["run", "bad.yaml"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.yaml:3:11: error: stage `a`: unknown op `nope`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run_out(&["run", "missing.yaml"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read pipeline file missing.yaml"));
}

/// Names that are looked up get a did-you-mean, and invalid input exits 2
/// with an `error:` line: an unknown op, a mistyped pipeline file, a corpus
/// that is not there.
#[test]
fn mistyped_names_get_suggestions_and_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let out = run_out(&["ops", "train_sa"], t.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: unknown op `train_sa` (did you mean `train_sae`?)"), "{err}");

    write(t.path(), "toy_sae.yaml", CHAIN);
    let out = run_out(&["run", "toy_sea.yaml"], t.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot read pipeline file toy_sea.yaml") && err.contains("did you mean `toy_sae.yaml`"),
        "{err}"
    );

    std::fs::write(t.path().join("corpus-train.jsonl"), "{\"text\": \"a b c\"}\n").unwrap();
    write(
        t.path(),
        "c.yaml",
        "version: 1\nname: c\nstages:\n  tokens:\n    op: tokenize\n    corpus: corpus-trian.jsonl\n    tokenizer: toy/toy-grammar@step0\n    context_size: 8\n",
    );
    for cmd in ["validate", "run"] {
        let out = run_out(&[cmd, "c.yaml"], t.path());
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("c.yaml:6:")
                && err.contains("corpus")
                && err.contains("did you mean")
                && err.contains("corpus-train.jsonl"),
            "{cmd}: {err}"
        );
    }
}

/// `saepipe path` gives scripts an artifact's directory or one of its files.
#[test]
fn path_prints_where_an_artifact_is() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    let out = run_out(&["path", "p.yaml", "b"], t.path());
    assert_eq!(out.status.code(), Some(3), "not cached yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("b is not in the cache yet"));
    run_ok(&["run", "p.yaml"], t.path());
    let dir = run_ok(&["path", "p.yaml", "b"], t.path());
    let dir = Path::new(dir.trim());
    assert!(dir.join("data.bin").is_file(), "{}", dir.display());
    let file = run_ok(&["path", "p.yaml", "b.data.bin"], t.path());
    assert_eq!(Path::new(file.trim()), dir.join("data.bin"));
    let out = run_out(&["path", "p.yaml", "b.data.bni"], t.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_out(&["path", "p.yaml", "bb"], t.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a stage instance"));
}

/// A path given with `--set` that exists relative to the shell's directory
/// means that one; paths written in the pipeline resolve against its folder.
#[test]
fn set_paths_resolve_against_the_current_directory() {
    let t = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::create_dir_all(t.path().join("pipes")).unwrap();
    std::fs::create_dir_all(t.path().join("data")).unwrap();
    std::fs::write(t.path().join("data/c.jsonl"), "{\"text\": \"a b c\"}\n").unwrap();
    write(
        t.path(),
        "pipes/p.yaml",
        "version: 1\nname: c\nvars:\n  corpus: ../data/c.jsonl\nstages:\n  tokens:\n    op: tokenize\n    corpus: ${corpus}\n    tokenizer: toy/toy-grammar@step0\n    context_size: 8\n",
    );
    let validate = |set: Option<&str>| {
        let mut c = bin();
        c.args(["validate", "pipes/p.yaml"]).current_dir(t.path()).env("SAEPIPE_MODELS", &models);
        if let Some(s) = set {
            c.args(["--set", s]);
        }
        c.output().unwrap()
    };
    // The default, written in the pipeline, is relative to the pipeline's folder.
    assert!(validate(None).status.success());
    // Typed in the shell (the working directory holds data/), relative to it.
    let out = validate(Some("corpus=data/c.jsonl"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A path that exists nowhere is reported, at the pipeline's folder, with the --set named.
    let out = validate(Some("corpus=data/nothere.jsonl"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such file or directory") && err.contains("--set corpus=data/nothere.jsonl"), "{err}");
}

/// `cache show` is readable (where, what made it, inputs, files); `--json`
/// gives the manifest.
#[test]
fn cache_show_summarizes_an_artifact() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", CHAIN);
    run_ok(&["run", "p.yaml"], t.path());
    let b = run_ok(&["path", "p.yaml", "b"], t.path());
    let key = Path::new(b.trim()).file_name().unwrap().to_string_lossy()[..12].to_string();
    let out = run_ok(&["cache", "show", &key], t.path());
    assert!(out.contains("(op debug_shards v") && out.contains("stage `b`"), "{out}");
    assert!(
        out.contains("inputs:") && out.contains("files:") && out.contains(&format!("{}/data.bin", b.trim())),
        "{out}"
    );
    assert!(out.contains(" UTC") || out.contains('Z'), "a creation date: {out}");
    let json: serde_json::Value = serde_json::from_str(&run_ok(&["cache", "show", &key, "--json"], t.path())).unwrap();
    assert_eq!(json["stage"], "b");
}
