//! `command`: runs a researcher's own command (a Python script making sae_vis
//! dashboards, a notebook export, ...) as a cached stage. Its inputs are declared
//! artifacts, its output is whatever it writes to `$SAEPIPE_OUT`.
//!
//! What the cache key holds (and so what reruns the stage when it changes): the
//! command line after `${...}` interpolation (values are inserted shell-quoted),
//! the content of the declared `scripts`, the keys of the `inputs` artifacts, and
//! `env`. Files the command reads without declaring them in `scripts` (or as
//! `inputs`) are NOT part of the key: editing them does not rerun the stage.
//!
//! The command runs under a small `sh` supervisor in its own process group that
//! dies with the driver (parent-death signal) and on Ctrl-C, taking the whole
//! group with it, so no orphan keeps writing after the driver is gone.

use super::{Op, StageCtx, StageStop};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `command` op: a user's shell command run as a cached stage.
pub struct CommandOp;

/// The supervisor: runs the user's command line (from `$SAEPIPE_COMMAND`, so it
/// is parsed exactly once, by the inner `sh`) and exits with its status. On
/// SIGTERM (the parent-death signal, or the op stopping it), SIGHUP or SIGINT it
/// kills its whole process group, the user's command and its children included.
const SUPERVISOR: &str = r#"trap 'kill -KILL 0' TERM HUP INT; sh -c "$SAEPIPE_COMMAND" & wait $!"#;

/// How often the op looks at the child, at Ctrl-C, and (less often) at the lock.
const POLL: Duration = Duration::from_millis(50);
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a stopped group gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

impl Op for CommandOp {
    fn name(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "run a shell command with declared input artifacts; it writes its output to $SAEPIPE_OUT \
         (keyed on: the command line, `scripts` content, `inputs`, `env`; undeclared files are not hashed)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required(
                "run",
                ParamType::ShellCommand,
                "shell command line, run with `sh -c` in the pipeline file's directory; `${...}` values are inserted \
                 shell-quoted (`echo ${msg}` prints the value verbatim, whatever it contains). The line after \
                 interpolation is part of the cache key",
            ),
            ParamSpec::optional(
                "inputs",
                ParamType::Map(Box::new(ParamType::Artifact)),
                json!({}),
                "artifacts the command reads; each NAME is passed as $SAEPIPE_INPUT_NAME (upper case); their keys are part of the cache key and their files are re-hashed before the command runs",
            ),
            ParamSpec::optional(
                "scripts",
                ParamType::List(Box::new(ParamType::Path)),
                json!([]),
                "files the command runs or reads; their content is part of the cache key. Files the command reads without declaring them here (or in `inputs`) are NOT: editing them does not rerun the stage",
            ),
            ParamSpec::optional(
                "env",
                ParamType::Map(Box::new(ParamType::Str)),
                json!({}),
                "extra environment variables (part of the cache key)",
            ),
        ]
    }
    /// The user's command reads its inputs itself, not through saepipe's
    /// verifying readers: the engine re-hashes every input file before it runs.
    fn reads_inputs_through_verifying_readers(&self) -> bool {
        false
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let cmdline = ctx.params.str("run")?.to_string();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(SUPERVISOR).env("SAEPIPE_COMMAND", &cmdline).current_dir(&ctx.base_dir);
        cmd.env("SAEPIPE_OUT", &ctx.out_dir)
            .env("SAEPIPE_PARTIAL", &ctx.partial_dir)
            .env("SAEPIPE_STAGE", &ctx.instance);
        for (label, paths) in &ctx.inputs {
            let name = label.strip_prefix("inputs.").unwrap_or(label);
            let var =
                format!("SAEPIPE_INPUT_{}", name.to_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
            let joined = std::env::join_paths(paths).context("input paths")?;
            cmd.env(var, joined);
        }
        if let Some(Value::Object(env)) = ctx.params.get("env") {
            for (k, v) in env {
                cmd.env(k, v.as_str().unwrap_or_default());
            }
        }
        let parent = unsafe { libc::getpid() };
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Own process group: the op (and the supervisor's trap) can signal the
                // whole command tree, and the terminal's Ctrl-C reaches only the
                // driver, which stops the stage in order.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SIGTERM when the driver dies (even by SIGKILL). PR_SET_PDEATHSIG
                // fires when the spawning *thread* exits: this op spawns and waits on
                // the same thread, so that thread outlives the child.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The driver died before prctl ran: no signal will come, so stop now.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        ctx.logln(format!("$ {cmdline}"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `sh -c {cmdline}`"))?;
        let pgid = child.id() as libc::pid_t;
        // Drain both pipes on threads so a chatty command cannot deadlock on a full
        // pipe while this thread watches for Ctrl-C.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out_thread = drain(Box::new(child.stdout.take().unwrap()));
        let err_thread = drain(Box::new(child.stderr.take().unwrap()));

        let mut stop = None;
        let mut last_lock_check = Instant::now();
        while !exited(&child) {
            if ctx.cancelled() {
                stop = Some(StageStop::Interrupted);
            } else if last_lock_check.elapsed() >= LOCK_CHECK_EVERY {
                last_lock_check = Instant::now();
                if !(ctx.lock_held)() {
                    stop = Some(StageStop::LockLost);
                }
            }
            if stop.is_some() {
                break;
            }
            std::thread::sleep(POLL);
        }
        if stop.is_some() {
            // SIGTERM to the group; the supervisor's trap then SIGKILLs the group.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let deadline = Instant::now() + TERM_GRACE;
            while !exited(&child) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        // The supervisor has exited but is not reaped yet, so the group id is still
        // ours: kill whatever the command left running in the background (it must
        // not write into the output after it is published, nor outlive a stop).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let status = child.wait()?;
        let stdout = out_thread.join().unwrap_or_default();
        let stderr = err_thread.join().unwrap_or_default();
        ctx.logln(&stdout);
        ctx.logln(&stderr);
        if let Some(stop) = stop {
            ctx.logln(format!("stopped the command ({stop})"));
            return Err(stop.into());
        }
        if !status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("command `{cmdline}` exited with {status}\n{}", tail.join("\n"));
        }
        Ok(json!({ "exit_code": 0 }))
    }
}

/// Whether the child has exited, without reaping it (so its pid stays reserved
/// as the group id until `wait`). An error counts as exited: the group is then
/// killed and `wait` reports what went wrong.
fn exited(child: &Child) -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::id_t;
    let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    if rc != 0 {
        return std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted;
    }
    unsafe { info.si_pid() != 0 }
}
