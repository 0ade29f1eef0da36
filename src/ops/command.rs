//! `command`: runs a researcher's own command (a Python script making sae_vis
//! dashboards, a notebook export, ...) as a cached stage. Its inputs are declared
//! artifacts, its output is whatever it writes to `$SAEPIPE_OUT`. The command line
//! and the content of the declared `scripts` are part of the cache key, so editing
//! the script reruns the stage.

use super::{Op, StageCtx};
use crate::pipeline::schema::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};

pub struct CommandOp;

impl Op for CommandOp {
    fn name(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "run a shell command with declared input artifacts; it writes its output to $SAEPIPE_OUT"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("run", ParamType::Str, "shell command line, run with `sh -c` in the pipeline file's directory"),
            ParamSpec::optional("inputs", ParamType::Map(Box::new(ParamType::Artifact)), json!({}), "artifacts the command reads; each NAME is passed as $SAEPIPE_INPUT_NAME (upper case)"),
            ParamSpec::optional("scripts", ParamType::List(Box::new(ParamType::Path)), json!([]), "files the command runs; their content is part of the cache key"),
            ParamSpec::optional("env", ParamType::Map(Box::new(ParamType::Str)), json!({}), "extra environment variables"),
        ]
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let cmdline = ctx.params.str("run")?.to_string();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&cmdline).current_dir(&ctx.base_dir);
        cmd.env("SAEPIPE_OUT", &ctx.out_dir).env("SAEPIPE_PARTIAL", &ctx.partial_dir).env("SAEPIPE_STAGE", &ctx.instance);
        for (label, paths) in &ctx.inputs {
            let name = label.strip_prefix("inputs.").unwrap_or(label);
            let var = format!("SAEPIPE_INPUT_{}", name.to_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
            let joined = std::env::join_paths(paths).context("input paths")?;
            cmd.env(var, joined);
        }
        if let Some(Value::Object(env)) = ctx.params.get("env") {
            for (k, v) in env {
                cmd.env(k, v.as_str().unwrap_or_default());
            }
        }
        ctx.logln(format!("$ {cmdline}"));
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting `sh -c {cmdline}`"))?;
        // Drain stderr on a thread so a chatty command cannot deadlock on a full pipe.
        let mut stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout)?;
        let status = child.wait()?;
        let stderr = err_thread.join().unwrap_or_default();
        ctx.logln(&stdout);
        ctx.logln(&stderr);
        if !status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("command `{cmdline}` exited with {status}\n{}", tail.join("\n"));
        }
        Ok(json!({ "exit_code": 0 }))
    }
}
