//! `debug_shards`: an engine self-test op. Writes `shards` deterministic blocks of
//! pseudo-random bytes (derived from `seed` and its inputs) one at a time into the
//! partial area, then joins them into `data.bin`. Used by the kill/resume,
//! concurrency and overhead tests and benchmarks; hidden from `saepipe ops`.

use super::{Op, StageCtx};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::Write;

/// The hidden `debug_shards` op: an engine self-test that writes resumable pseudo-random shards.
pub struct DebugShardsOp;

impl Op for DebugShardsOp {
    fn name(&self) -> &'static str {
        "debug_shards"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "engine self-test: writes deterministic shards with resumable progress"
    }
    fn hidden(&self) -> bool {
        true
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["data.bin"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::optional("shards", ParamType::Int, json!(4), "number of shards").range(0, 1_000_000),
            ParamSpec::optional("shard_bytes", ParamType::Int, json!(1024), "bytes per shard").range(0, 1 << 30),
            ParamSpec::optional("seed", ParamType::Int, json!(0), "seed of the content"),
            ParamSpec::optional(
                "scale",
                ParamType::Float,
                json!(1.0),
                "a number mixed into the content (tests number canonicalization)",
            ),
            ParamSpec::optional("inputs", ParamType::Artifacts, json!([]), "upstream artifacts mixed into the content"),
            ParamSpec::optional("delay_ms", ParamType::Int, json!(0), "sleep per shard (to test interruption)")
                .range(0, 3_600_000)
                .not_in_key(),
            ParamSpec::optional(
                "fail",
                ParamType::Bool,
                json!(false),
                "fail after the first shard (to test failure handling)",
            ),
        ]
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let shards = ctx.params.usize("shards")?;
        let shard_bytes = ctx.params.usize("shard_bytes")?;
        let delay = std::time::Duration::from_millis(ctx.params.usize("delay_ms")? as u64);
        let mut seed = blake3::Hasher::new();
        seed.update(&ctx.params.i64("seed")?.to_le_bytes());
        seed.update(&ctx.params.f64("scale")?.to_le_bytes());
        for input in ctx.input_list("inputs") {
            let data = input.join("data.bin");
            let data = if input.ends_with("data.bin") { input.clone() } else { data };
            seed.update(&std::fs::read(&data).with_context(|| format!("reading {}", data.display()))?);
        }
        ctx.progress.set_total(shards as u64, "shards");
        let mut resumed_from = None;
        for i in 0..shards {
            let path = ctx.partial_dir.join(format!("shard-{i:05}.bin"));
            if path.exists() {
                resumed_from.get_or_insert(i);
                ctx.progress.set_position(i as u64 + 1);
                continue;
            }
            if ctx.cancelled() {
                return Err(super::StageStop::Interrupted.into());
            }
            std::thread::sleep(delay);
            ctx.check_lock()?;
            let mut h = seed.clone();
            h.update(&(i as u64).to_le_bytes());
            let mut buf = vec![0u8; shard_bytes];
            h.finalize_xof().fill(&mut buf);
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            ctx.progress.set_position(i as u64 + 1);
            if i == 0 && ctx.params.bool("fail")? {
                anyhow::bail!("failing on purpose after shard 0 (fail: true)");
            }
        }
        let mut out = std::fs::File::create(ctx.out_dir.join("data.bin"))?;
        let mut all = blake3::Hasher::new();
        for i in 0..shards {
            let bytes = std::fs::read(ctx.partial_dir.join(format!("shard-{i:05}.bin")))?;
            all.update(&bytes);
            out.write_all(&bytes)?;
        }
        if let Some(i) = resumed_from {
            ctx.logln(format!("resumed: found shards from an interrupted run (first: {i})"));
        }
        Ok(json!({ "shards": shards, "blake3": all.finalize().to_hex().to_string() }))
    }
}
