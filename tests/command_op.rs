//! The `command` op through the real `saepipe` binary: its child dies with the
//! driver (SIGKILL) and on Ctrl-C, pipeline values are shell-quoted into `run`,
//! and what is (and is not) part of its cache key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `plan` output rows: (instance, key prefix, action).
fn plan(dir: &Path, file: &str, extra: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["plan", file];
    args.extend_from_slice(extra);
    run_ok(&args, dir)
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

/// The one file `name` among the published artifacts.
fn artifact_file(cache: &Path, name: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(cache.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path().join(name))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(found.len(), 1, "expected one artifact holding {name}: {found:?}");
    found.into_iter().next().unwrap()
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // `pid (comm) S ...`: the state follows the last `)`.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next().unwrap_or('?')).unwrap_or('?');
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A driver process that is killed (with the command's process group, if its
/// pid file says which) when the test ends, passed or not.
struct Driver {
    child: Child,
    pid_files: Vec<PathBuf>,
}

impl Driver {
    fn spawn(args: &[&str], dir: &Path, pid_files: &[&str]) -> Driver {
        let child = bin()
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Driver { child, pid_files: pid_files.iter().map(|f| dir.join(f)).collect() }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// Waits at most `limit` for the driver to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.pid_files {
            if let Some(pid) = read_pid(f).filter(|p| *p > 1) {
                unsafe {
                    let pgid = libc::getpgid(pid);
                    if pgid > 1 && pgid != libc::getpgid(0) {
                        libc::kill(-pgid, libc::SIGKILL);
                    }
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

const LOOPER: &str = r#"
version: 1
name: looper
stages:
  loop:
    op: command
    run: 'echo $$ > pid.txt; : > "$SAEPIPE_PARTIAL/p.txt"; i=0; while [ $i -lt 20 ]; do echo $$ >> "$SAEPIPE_PARTIAL/p.txt"; echo $$ >> growing.txt; sleep 0.1; i=$((i+1)); done; cp "$SAEPIPE_PARTIAL/p.txt" "$SAEPIPE_OUT/out.txt"'
"#;

#[test]
fn sigkill_of_driver_kills_the_command_and_rerun_is_clean() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", LOOPER);
    let mut driver = Driver::spawn(&["run", "p.yaml", "-q"], t.path(), &["pid.txt"]);
    let growing = t.path().join("growing.txt");
    let lines = |p: &Path| std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(20), || lines(&growing) >= 3), "the command never started");
    let pid = read_pid(&t.path().join("pid.txt")).expect("pid file");
    assert!(alive(pid));
    // SIGKILL: the driver gets no chance to clean up.
    driver.child.kill().unwrap();
    driver.child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || !alive(pid)),
        "the command (pid {pid}) outlived the SIGKILLed driver"
    );
    // It stopped writing, too.
    let n = lines(&growing);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(lines(&growing), n, "something still appends after the driver died");

    run_ok(&["run", "p.yaml", "-q"], t.path());
    let out = std::fs::read_to_string(artifact_file(&t.path().join("cache"), "out.txt")).unwrap();
    let pids: std::collections::BTreeSet<&str> = out.lines().collect();
    assert_eq!(out.lines().count(), 20, "{out}");
    assert_eq!(pids.len(), 1, "the published output was written by several processes: {pids:?}");
    assert!(!pids.contains(pid.to_string().as_str()), "the output holds lines of the killed run's command");
}

const ECHO: &str = r#"
version: 1
name: echo
vars:
  msg: hello
stages:
  say:
    op: command
    run: echo ${msg} > "$SAEPIPE_OUT/out.txt"; for w in ${msg}; do echo "[$w]"; done > "$SAEPIPE_OUT/words.txt"
"#;

#[test]
fn set_values_are_shell_quoted_into_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", ECHO);
    run_ok(&["run", "p.yaml", "-q", "--set", "msg=hi; touch M"], t.path());
    let cache = t.path().join("cache");
    assert_eq!(std::fs::read_to_string(artifact_file(&cache, "out.txt")).unwrap(), "hi; touch M\n");
    assert!(!t.path().join("M").exists(), "a --set value ran as shell code");
    // One value is one word: no field splitting.
    assert_eq!(std::fs::read_to_string(artifact_file(&cache, "words.txt")).unwrap(), "[hi; touch M]\n");

    // Quotes and `$(...)` in a value stay text too.
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", ECHO);
    run_ok(&["run", "p.yaml", "-q", "--set", "msg=it's $(touch N) `touch O` \"q\""], t.path());
    let got = std::fs::read_to_string(artifact_file(&t.path().join("cache"), "out.txt")).unwrap();
    assert_eq!(got, "it's $(touch N) `touch O` \"q\"\n");
    assert!(!t.path().join("N").exists() && !t.path().join("O").exists());
}

const SLEEPER: &str = r#"
version: 1
name: sleeper
stages:
  nap:
    op: command
    run: 'echo $$ > pid.txt; echo partial > "$SAEPIPE_OUT/half.txt"; sleep 30 & echo $! > sleep_pid.txt; wait; echo done > "$SAEPIPE_OUT/out.txt"'
"#;

#[test]
fn sigint_to_driver_kills_the_command_group_and_cleans_up() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", SLEEPER);
    let mut driver = Driver::spawn(&["run", "p.yaml"], t.path(), &["pid.txt", "sleep_pid.txt"]);
    assert!(
        wait_until(Duration::from_secs(20), || read_pid(&t.path().join("sleep_pid.txt")).is_some()),
        "the command never started"
    );
    let pid = read_pid(&t.path().join("pid.txt")).unwrap();
    let sleep_pid = read_pid(&t.path().join("sleep_pid.txt")).unwrap();
    assert!(alive(pid) && alive(sleep_pid));
    unsafe { libc::kill(driver.pid(), libc::SIGINT) };
    let status = driver.wait_exit(Duration::from_secs(10)).expect("the driver did not exit within 10 s of SIGINT");
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        let _ = driver.child.stderr.take().unwrap().read_to_string(&mut s);
        s
    };
    assert!(!status.success(), "an interrupted run must exit non-zero:\n{stderr}");
    assert!(
        wait_until(Duration::from_secs(2), || !alive(pid) && !alive(sleep_pid)),
        "the command's processes outlived the interrupt"
    );
    let tmp = t.path().join("cache").join("tmp");
    let left: Vec<_> =
        std::fs::read_dir(&tmp).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "temporaries left behind: {left:?}\n{stderr}");
    let arts: Vec<_> = std::fs::read_dir(t.path().join("cache").join("artifacts"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(arts.is_empty(), "an interrupted command published: {arts:?}");
}

const SCRIPTED: &str = r#"
version: 1
name: scripted
stages:
  s:
    op: command
    scripts: [step.sh]
    run: sh step.sh > "$SAEPIPE_OUT/out.txt"; cat undeclared.txt >> "$SAEPIPE_OUT/out.txt"
"#;

#[test]
fn declared_scripts_are_in_the_key_undeclared_files_are_not() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", SCRIPTED);
    write(t.path(), "step.sh", "echo one\n");
    write(t.path(), "undeclared.txt", "data v1\n");
    run_ok(&["run", "p.yaml", "-q"], t.path());
    let p = plan(t.path(), "p.yaml", &[]);
    assert_eq!(p[0].2, "hit", "{p:?}");

    // The documented limit: a file the command reads without declaring it is
    // not hashed, so editing it does not rerun the stage.
    write(t.path(), "undeclared.txt", "data v2\n");
    let p2 = plan(t.path(), "p.yaml", &[]);
    assert_eq!(p2[0].2, "hit", "undeclared files are not part of the key: {p2:?}");
    assert_eq!(p2[0].1, p[0].1);

    // Editing a declared script changes the key.
    write(t.path(), "step.sh", "echo two\n");
    let p3 = plan(t.path(), "p.yaml", &[]);
    assert_eq!(p3[0].2, "run", "{p3:?}");
    assert_ne!(p3[0].1, p[0].1);
}

#[test]
fn plan_shows_the_quoted_command_in_the_key() {
    // The key holds the command line after (quoting) interpolation, and `plan`
    // explains a rerun with that quoted line.
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "p.yaml", ECHO);
    run_ok(&["run", "p.yaml", "-q"], t.path());
    let out = run_ok(&["plan", "p.yaml", "--set", "msg=a;b"], t.path());
    let row = out.lines().find(|l| l.starts_with("say ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(" run ") && row.contains("parameter `run` changed"), "{out}");
    assert!(row.contains("echo 'a;b' >"), "plan must show the quoted command line: {out}");
    // Equal values give equal keys across processes.
    let a = plan(t.path(), "p.yaml", &["--set", "msg=a b"]);
    let b = plan(t.path(), "p.yaml", &["--set", "msg=a b"]);
    assert_eq!(a[0].1, b[0].1);
}
