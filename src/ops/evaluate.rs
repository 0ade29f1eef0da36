//! `evaluate` stage (being written).

use super::{Op, StageCtx};
use crate::pipeline::schema::ParamSpec;
use anyhow::{Result, bail};
use serde_json::Value;

pub struct EvaluateOp;

impl Op for EvaluateOp {
    fn name(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "not yet available"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn hidden(&self) -> bool {
        true
    }
    fn run(&self, _ctx: &mut StageCtx) -> Result<Value> {
        bail!("the evaluate op is not available yet")
    }
}
