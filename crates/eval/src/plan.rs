//! Where each coder reads and writes, checked against the model, and how the
//! spliced forward passes share the clean one.

use crate::NamedCoder;
use crate::error::{EvalError, Result};
use saepipe_model::{HookName, Runner};

/// Where a run with a replaced hook starts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Start {
    /// From the embeddings (the hook is an embedding hook).
    Tokens,
    /// From the residual stream entering block `layer` (`layer == n_layers`:
    /// entering the final LayerNorm), captured in the clean run under `resid`.
    Layer { layer: usize, resid: String },
}

/// A hook that coders replace: all coders writing to the same hook share its
/// zero-ablation run and the clean residual its spliced runs start from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub hook_out: String,
    pub start: Start,
}

/// One coder's resolved hooks.
#[derive(Clone, Debug)]
pub struct Placement {
    pub hook_in: String,
    pub hook_out: String,
    /// Index into the plan's sites.
    pub site: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub sites: Vec<Site>,
    pub placements: Vec<Placement>,
    /// Every hook the clean run must capture.
    pub capture: Vec<String>,
}

fn start_of(model: &dyn Runner, hook: &HookName) -> Start {
    let n = model.config().n_layers;
    match hook.layer() {
        Some(l) => Start::Layer { layer: l, resid: format!("blocks.{l}.hook_resid_pre") },
        None if hook.is_head() && n > 0 => {
            Start::Layer { layer: n, resid: format!("blocks.{}.hook_resid_post", n - 1) }
        }
        None => Start::Tokens,
    }
}

pub fn plan(model: &dyn Runner, coders: &[NamedCoder]) -> Result<Plan> {
    let names = saepipe_model::hook_names(model.config());
    let order = |h: &str| names.iter().position(|n| n == h);
    let mut sites: Vec<Site> = Vec::new();
    let mut placements = Vec::new();
    let mut capture: Vec<String> = Vec::new();
    let mut want = |h: &str| {
        if !capture.iter().any(|c| c == h) {
            capture.push(h.to_string());
        }
    };
    for nc in coders {
        let c = &nc.coder;
        let setup = |message: String| EvalError::Setup { coder: nc.label.clone(), message };
        let hook_in = c.metadata.hook_name.clone().ok_or_else(|| setup("its metadata has no `hook_name`".into()))?;
        if c.metadata.hook_head_index.is_some() {
            return Err(setup(format!("single-head coders (hook_head_index on `{hook_in}`) are not supported")));
        }
        // The metadata's output hook decides where the coder's output goes: a
        // coder whose output replaces another hook than it reads is evaluated as
        // a transcoder whatever its architecture name says.
        let hook_out = match c.metadata.hook_name_out.clone() {
            Some(h) => h,
            None if c.is_transcoder() => {
                return Err(setup("it is a transcoder but its metadata has no `hook_name_out`".into()));
            }
            None => hook_in.clone(),
        };
        let mut checked = Vec::with_capacity(2);
        for (hook, dim, what) in [(&hook_in, c.d_in, "d_in"), (&hook_out, c.d_out, "d_out")] {
            let h = HookName::check(model.config(), hook).map_err(|e| setup(e.to_string()))?;
            if h.is_attention_map() {
                return Err(setup(format!("hook `{hook}` is an attention map, not a per-token activation")));
            }
            // A coder reads one row per token (heads flattened, as SAELens does).
            let w = h.token_width(model.config(), 1);
            if w != dim {
                return Err(setup(format!("{what} {dim} does not match the width {w} of hook `{hook}`")));
            }
            checked.push(h);
        }
        if order(&hook_in) > order(&hook_out) {
            return Err(setup(format!(
                "input hook `{hook_in}` comes after output hook `{hook_out}` in the forward pass"
            )));
        }
        let site = Site { hook_out: hook_out.clone(), start: start_of(model, &checked[1]) };
        let idx = match sites.iter().position(|s| *s == site) {
            Some(i) => i,
            None => {
                sites.push(site.clone());
                sites.len() - 1
            }
        };
        want(&hook_in);
        want(&hook_out);
        if let Start::Layer { resid, .. } = &site.start {
            want(resid);
        }
        placements.push(Placement { hook_in, hook_out, site: idx });
    }
    Ok(Plan { sites, placements, capture })
}
