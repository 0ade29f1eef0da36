//! The forward pass with TransformerLens hook points, written once over the
//! device operations of [`saepipe_core::compute::DeviceOps`]: the CPU
//! ([`crate::cpu::CpuOps`], what [`crate::Model`] runs) and the CUDA backend
//! run this same code.
//!
//! Every hook point of the architecture is visited in TransformerLens order with
//! a tensor of TransformerLens's shape; a request can capture any of them, replace
//! any of them (SAE/transcoder splicing, ablation), stop before a layer, and ask
//! for logits and per-token cross-entropy. A captured tensor is copied to the
//! host; a replaced one goes through the caller's function on the host (in
//! place when the backend's buffers are host memory) and back.

use crate::config::{Arch, ModelConfig, Norm};
use crate::error::{ModelError, Result};
use crate::hook::{OptionalHooks, needs};
use crate::params::Params;
use saepipe_core::compute::{ComputeError, DeviceOps, Heads, ScoreOpts, numel};
use std::collections::{HashMap, HashSet};

/// Replaces a hook's value in place; gets the tensor and its shape.
pub type HookFn<'a> = Box<dyn FnMut(&mut [f32], &[usize]) + Send + 'a>;

/// What a run should capture, replace and compute.
#[derive(Default)]
pub struct RunRequest<'a> {
    /// Hooks whose values are returned.
    pub capture: HashSet<String>,
    /// Hooks whose values are replaced (the function sees the value first).
    pub replace: HashMap<String, HookFn<'a>>,
    /// TransformerLens semantics: run blocks 0..L and stop (no final LN, no logits).
    pub stop_at_layer: Option<usize>,
    /// Return the logits.
    pub want_logits: bool,
    /// Return the per-token cross-entropy.
    pub want_loss: bool,
}

/// What a run returns.
#[derive(Default, Debug)]
pub struct RunOutput {
    /// hook name → (shape, values), row-major.
    pub captured: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// [batch, ctx, d_vocab]
    pub logits: Option<Vec<f32>>,
    /// [batch, ctx - 1]: −log p(token[t+1] | tokens[..=t]).
    pub loss_per_token: Option<Vec<f32>>,
}

/// Whether hook semantics for `lnX.hook_normalized` follow TransformerLens 3.x
/// (before the LayerNorm affine) or 2.x (after it). Equal once LN is folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum LnHook {
    /// TransformerLens 3.x: the normalized vector before the affine.
    #[default]
    PreAffine,
    /// TransformerLens 2.x: after the affine.
    PostAffine,
}

/// A device operation's failure as the model reports it: shapes are input
/// errors, the rest belongs to the backend.
impl From<ComputeError> for ModelError {
    fn from(e: ComputeError) -> Self {
        match e {
            ComputeError::Shape(m) => ModelError::Input(m),
            other => ModelError::Backend(other.to_string()),
        }
    }
}

/// The request of a run and what it has produced so far.
pub(crate) struct Hooks<'r, 'a> {
    pub(crate) req: &'r mut RunRequest<'a>,
    out: RunOutput,
}

impl Hooks<'_, '_> {
    /// Gives hook `name` its turn on `buf` (holding a tensor of `shape`).
    pub(crate) fn visit<O: DeviceOps>(&mut self, ops: &O, name: &str, buf: &mut O::F, shape: &[usize]) -> Result<()> {
        let capture = self.req.capture.contains(name);
        let replace = self.req.replace.get_mut(name);
        if !capture && replace.is_none() {
            return Ok(());
        }
        let n = numel(shape);
        let captured = match replace {
            Some(f) => match ops.host_mut(buf) {
                Some(host) => {
                    f(&mut host[..n], shape);
                    capture.then(|| host[..n].to_vec())
                }
                None => {
                    let mut host = ops.download(buf, n)?;
                    f(&mut host, shape);
                    ops.write(buf, &host)?;
                    capture.then_some(host)
                }
            },
            None => Some(ops.download(buf, n)?),
        };
        if let Some(values) = captured {
            self.out.captured.insert(name.to_string(), (shape.to_vec(), values));
        }
        Ok(())
    }

    pub(crate) fn wants(&self, name: &str) -> bool {
        self.req.capture.contains(name) || self.req.replace.contains_key(name)
    }

    pub(crate) fn replaces(&self, name: &str) -> bool {
        self.req.replace.contains_key(name)
    }
}

/// How a normalization's rows relate to the tokens, which decides the shape
/// its hooks show.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LnRows {
    /// One row per token: hooks [batch, ctx, d_model | 1].
    Tokens,
    /// `h` rows per token (per-head inputs): hooks [batch, ctx, h, d_model | 1].
    PerHead(usize),
    /// One row per token whose hooks show `h` identical copies (per-head
    /// inputs nothing replaces: normalized once, the same values). The hooks
    /// are only read, never replaced, in this form.
    Repeated(usize),
}

/// One model's forward over the weights `p` on the device of `ops`.
pub(crate) struct Forward<'m, O: DeviceOps> {
    pub ops: &'m O,
    pub cfg: &'m ModelConfig,
    pub p: &'m Params<O::F>,
    pub ln_hook: LnHook,
}

impl<O: DeviceOps> Forward<'_, O> {
    /// Runs a batch of `batch` sequences of `ctx` tokens (row-major [batch, ctx]).
    pub fn run(&self, tokens: &[u32], batch: usize, ctx: usize, req: &mut RunRequest) -> Result<RunOutput> {
        crate::check_run_inputs(self.cfg, tokens, batch, ctx, req)?;
        let mut hooks = Hooks { req, out: RunOutput::default() };
        let replaced = if hooks.wants("hook_tokens") { self.token_hook(tokens, batch, ctx, &mut hooks)? } else { None };
        let tokens = replaced.as_deref().unwrap_or(tokens);
        let resid = self.embed(tokens, batch, ctx, &mut hooks)?;
        self.run_blocks(resid, 0, tokens, batch, ctx, &mut hooks)?;
        Ok(hooks.out)
    }

    /// Continues from `resid`, the residual stream entering block `layer`.
    pub fn run_from(
        &self,
        resid: Vec<f32>,
        layer: usize,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        req: &mut RunRequest,
    ) -> Result<RunOutput> {
        crate::check_run_from_inputs(self.cfg, &resid, layer, tokens, batch, ctx, req)?;
        let mut hooks = Hooks { req, out: RunOutput::default() };
        let resid = self.ops.upload(&resid)?;
        self.run_blocks(resid, layer, tokens, batch, ctx, &mut hooks)?;
        Ok(hooks.out)
    }

    /// Token and (learned) position embeddings: the residual entering block 0.
    fn embed(&self, tokens: &[u32], batch: usize, ctx: usize, hooks: &mut Hooks) -> Result<O::F> {
        let (ops, d, n) = (self.ops, self.cfg.d_model, batch * ctx);
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut resid = ops.alloc(n * d)?;
        ops.gather_rows(&self.p.w_e, &ops.upload_i32(&ids)?, n, d, &mut resid)?;
        hooks.visit(ops, "hook_embed", &mut resid, &[batch, ctx, d])?;
        if let Some(w_pos) = &self.p.w_pos {
            let positions: Vec<i32> = (0..n).map(|i| (i % ctx) as i32).collect();
            let mut pos = ops.alloc(n * d)?;
            ops.gather_rows(w_pos, &ops.upload_i32(&positions)?, n, d, &mut pos)?;
            hooks.visit(ops, "hook_pos_embed", &mut pos, &[batch, ctx, d])?;
            ops.add(&mut resid, &pos, n * d)?;
        }
        Ok(resid)
    }

    /// LayerNorm or RMSNorm of `x` into `out` with the hook semantics of
    /// `self.ln_hook` (RMSNorm: always before its weight, as both TransformerLens
    /// 2.x and 3.x hook it).
    #[allow(clippy::too_many_arguments)]
    fn ln(
        &self,
        x: &O::F,
        affine: Option<&(O::F, O::F)>,
        prefix: &str,
        hooks: &mut Hooks,
        out: &mut O::F,
        scale: &mut O::F,
        batch: usize,
        ctx: usize,
    ) -> Result<()> {
        self.ln_rows(x, affine, prefix, hooks, out, scale, batch, ctx, LnRows::Tokens)
    }

    /// [`Forward::ln`] over rows laid out as `rows` says (per-head inputs of
    /// TransformerLens's `use_attn_in` / `use_split_qkv_input`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ln_rows(
        &self,
        x: &O::F,
        affine: Option<&(O::F, O::F)>,
        prefix: &str,
        hooks: &mut Hooks,
        out: &mut O::F,
        scale: &mut O::F,
        batch: usize,
        ctx: usize,
        rows: LnRows,
    ) -> Result<()> {
        let (ops, d) = (self.ops, self.cfg.d_model);
        let (n, heads) = match rows {
            LnRows::Tokens => (batch * ctx, None),
            LnRows::PerHead(h) => (batch * ctx * h, Some(h)),
            LnRows::Repeated(h) => (batch * ctx, Some(h)),
        };
        let shape = |last: usize| match heads {
            Some(h) => vec![batch, ctx, h, last],
            None => vec![batch, ctx, last],
        };
        let name = format!("{prefix}.hook_normalized");
        // The affine is fused into the normalization unless the hook must see
        // the value before it; then it is applied after the hook.
        let pre_affine = self.ln_hook == LnHook::PreAffine || self.cfg.norm == Norm::RmsNorm;
        let split = affine.is_some() && pre_affine && hooks.wants(&name);
        let fused = if split { None } else { affine.map(|(w, b)| (w, b)) };
        match self.cfg.norm {
            Norm::LayerNorm => ops.layer_norm(x, n, d, self.cfg.eps, fused, out, scale)?,
            // An RMSNorm's bias half is zero: only its weight is applied.
            Norm::RmsNorm => ops.rms_norm(x, n, d, self.cfg.eps, fused.map(|(w, _)| w), out, scale)?,
        }
        match rows {
            LnRows::Repeated(h) => {
                self.visit_repeated(&format!("{prefix}.hook_scale"), scale, 1, h, &shape(1), hooks)?;
                self.visit_repeated(&name, out, d, h, &shape(d), hooks)?;
            }
            _ => {
                hooks.visit(ops, &format!("{prefix}.hook_scale"), scale, &shape(1))?;
                hooks.visit(ops, &name, out, &shape(d))?;
            }
        }
        if let (true, Some((w, b))) = (split, affine) {
            ops.scale_shift(out, n, d, w, b)?;
        }
        Ok(())
    }

    /// QK-norm of `buf` (query or key heads, `rows` = tokens × heads rows of
    /// d_head) with weight `w`, through `tmp` (swapped in), with the hooks
    /// `{prefix}.hook_scale` [rows, 1] and `{prefix}.hook_normalized` [rows,
    /// d_head] (before the weight, as TransformerLens hooks RMSNorm).
    #[allow(clippy::too_many_arguments)]
    fn head_norm(
        &self,
        buf: &mut O::F,
        tmp: &mut O::F,
        scale: &mut O::F,
        w: &O::F,
        zeros: &O::F,
        rows: usize,
        prefix: &str,
        hooks: &mut Hooks,
    ) -> Result<()> {
        let (ops, dh) = (self.ops, self.cfg.d_head);
        let name = format!("{prefix}.hook_normalized");
        let split = hooks.wants(&name);
        ops.rms_norm(buf, rows, dh, self.cfg.eps, if split { None } else { Some(w) }, tmp, scale)?;
        hooks.visit(ops, &format!("{prefix}.hook_scale"), scale, &[rows, 1])?;
        hooks.visit(ops, &name, tmp, &[rows, dh])?;
        if split {
            ops.scale_shift(tmp, rows, dh, w, zeros)?;
        }
        std::mem::swap(buf, tmp);
        Ok(())
    }

    /// Runs blocks `start..` on `resid` ([batch·ctx, d_model], the value of
    /// `blocks.{start}.hook_resid_pre` before its hook), then the head.
    fn run_blocks(
        &self,
        mut resid: O::F,
        start: usize,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        hooks: &mut Hooks,
    ) -> Result<()> {
        let (ops, cfg) = (self.ops, self.cfg);
        let (d, nh, dh, f) = (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp);
        let (hd, kvd, n) = (nh * dh, cfg.kv_width(), batch * ctx);
        let heads = Heads { batch, ctx, heads: nh, d_head: dh };
        // Grouped-query attention: keys and values have fewer heads, each
        // shared by `groups` query heads.
        let kv_heads = Heads { heads: cfg.n_kv_heads, ..heads };
        let groups = nh / cfg.n_kv_heads;
        let stop = hooks.req.stop_at_layer.unwrap_or(cfg.n_layers).min(cfg.n_layers);
        let need = needs(hooks.req, stop, cfg.n_layers);
        // Without separate attention steps there is no value of the scores or
        // the pattern to replace: refuse before running anything.
        let split = ops.split_attention();
        if !split {
            for l in start..stop {
                for h in ["attn.hook_attn_scores", "attn.hook_pattern"] {
                    let name = format!("blocks.{l}.{h}");
                    if hooks.req.replace.contains_key(&name) {
                        return Err(ModelError::Backend(format!(
                            "not supported on {}: replacing {name} (the attention kernel fuses scores, softmax and values); run this stage with device: cpu",
                            ops.device()
                        )));
                    }
                }
            }
        }
        // Buffers allocated once per run and reused by every block (large
        // host allocations would otherwise be fresh mmaps, page-faulted each layer).
        let (mut x, mut scale) = (ops.alloc(n * d)?, ops.alloc(n)?);
        let (mut q, mut k, mut v, mut z) =
            (ops.alloc(n * hd)?, ops.alloc(n * kvd)?, ops.alloc(n * kvd)?, ops.alloc(n * hd)?);
        // Keys and values repeated for every query head (grouped-query attention only).
        let mut kv_full = if groups > 1 { Some((ops.alloc(n * hd)?, ops.alloc(n * hd)?)) } else { None };
        let (mut attn_out, mut mlp_out) = (ops.alloc(n * d)?, ops.alloc(n * d)?);
        let mut hidden: Option<O::F> = None;
        let mut hidden_linear: Option<O::F> = None;
        // Rotary frequencies given to the device (every family but GPT-NeoX,
        // whose plain-base rotary has its own operation).
        let inv_freq =
            if cfg.rotary_dim > 0 && cfg.arch != Arch::NeoX { Some(ops.upload(&cfg.rope_inv_freq())?) } else { None };
        // Local (sliding-window) layers' own frequencies (Gemma 3's local base;
        // never rescaled).
        let inv_freq_local = match &cfg.local_attention {
            Some(_) if inv_freq.is_some() => Some(ops.upload(&cfg.rope_inv_freq_local())?),
            _ => None,
        };
        // QK-norm scratch: normalized heads, per-row scales, a zero bias.
        let mut qk = if cfg.qk_norm {
            Some((ops.alloc(n * hd)?, ops.alloc(n * kvd)?, ops.alloc(n * nh)?, ops.alloc(dh)?))
        } else {
            None
        };
        let mut probs: Option<O::F> = None;
        let mut mlp_in: Option<O::F> = None;
        // TransformerLens's flags that the requested optional hooks turn on
        // (for every block, as there).
        let opt = OptionalHooks::of(hooks.req.capture.iter().chain(hooks.req.replace.keys()).map(String::as_str));
        let sq_shape = [batch, nh, ctx, ctx];
        for l in start..stop {
            if need.done_before(l) {
                return Ok(());
            }
            let lp = &self.p.layers[l];
            let pre = |h: &str| format!("blocks.{l}.{h}");
            hooks.visit(ops, &pre("hook_resid_pre"), &mut resid, &[batch, ctx, d])?;
            if need.done_after_resid_pre(l) {
                return Ok(());
            }
            if opt.ln1_heads(cfg).is_some() {
                self.attn_inputs(l, lp, &resid, opt, [&mut q, &mut k, &mut v], &mut x, &mut scale, batch, ctx, hooks)?;
            } else {
                self.ln(&resid, lp.ln1.as_ref(), &pre("ln1"), hooks, &mut x, &mut scale, batch, ctx)?;
                ops.linear(&x, &lp.w_q, Some(&lp.b_q), &mut q, n, d, hd)?;
                ops.linear(&x, &lp.w_k, Some(&lp.b_k), &mut k, n, d, kvd)?;
                ops.linear(&x, &lp.w_v, Some(&lp.b_v), &mut v, n, d, kvd)?;
            }
            let qkv_shape = [batch, ctx, nh, dh];
            let kv_shape = [batch, ctx, cfg.n_kv_heads, dh];
            hooks.visit(ops, &pre("attn.hook_q"), &mut q, &qkv_shape)?;
            hooks.visit(ops, &pre("attn.hook_k"), &mut k, &kv_shape)?;
            hooks.visit(ops, &pre("attn.hook_v"), &mut v, &kv_shape)?;
            if let (Some((tmp_q, tmp_k, qk_scale, zeros)), Some(wq), Some(wk)) = (&mut qk, &lp.q_norm, &lp.k_norm) {
                self.head_norm(&mut q, tmp_q, qk_scale, wq, zeros, n * nh, &pre("attn.q_norm"), hooks)?;
                self.head_norm(&mut k, tmp_k, qk_scale, wk, zeros, n * cfg.n_kv_heads, &pre("attn.k_norm"), hooks)?;
            }
            let window = cfg.window(l);
            if cfg.rotary_dim > 0 {
                let freqs =
                    if window.is_some() { inv_freq_local.as_ref().or(inv_freq.as_ref()) } else { inv_freq.as_ref() };
                match freqs {
                    Some(freq) => {
                        ops.rotary_freqs(&mut q, heads, cfg.rotary_dim, freq)?;
                        ops.rotary_freqs(&mut k, kv_heads, cfg.rotary_dim, freq)?;
                    }
                    None => {
                        ops.rotary(&mut q, heads, cfg.rotary_dim, cfg.rotary_base)?;
                        ops.rotary(&mut k, kv_heads, cfg.rotary_dim, cfg.rotary_base)?;
                    }
                }
                hooks.visit(ops, &pre("attn.hook_rot_q"), &mut q, &qkv_shape)?;
                hooks.visit(ops, &pre("attn.hook_rot_k"), &mut k, &kv_shape)?;
            }
            let (k_all, v_all) = match &mut kv_full {
                Some((kf, vf)) => {
                    ops.repeat_heads(&k, kv_heads, groups, kf)?;
                    ops.repeat_heads(&v, kv_heads, groups, vf)?;
                    (&*kf, &*vf)
                }
                None => (&k, &v),
            };
            let mut s = match cfg.query_pre_attn_scalar {
                Some(x) => x.sqrt(),
                None if cfg.scale_attn_weights => (dh as f32).sqrt(),
                None => 1.0,
            };
            if cfg.scale_attn_by_inverse_layer_idx {
                s *= (l + 1) as f32;
            }
            let score_opts = ScoreOpts { scale: 1.0 / s, soft_cap: cfg.attn_soft_cap, window };
            let (scores_name, pattern_name) = (pre("attn.hook_attn_scores"), pre("attn.hook_pattern"));
            if split {
                let p = match &mut probs {
                    Some(p) => p,
                    None => probs.insert(ops.alloc(heads.scores_len())?),
                };
                ops.attention_scores(&q, k_all, heads, score_opts, p)?;
                hooks.visit(ops, &scores_name, p, &sq_shape)?;
                ops.causal_softmax(p, batch * nh * ctx, ctx)?;
                hooks.visit(ops, &pattern_name, p, &sq_shape)?;
                ops.attention_values(p, v_all, heads, &mut z)?;
            } else {
                let sq = heads.scores_len();
                let mut scores = if hooks.wants(&scores_name) { Some(ops.alloc(sq)?) } else { None };
                let mut pattern = if hooks.wants(&pattern_name) { Some(ops.alloc(sq)?) } else { None };
                ops.attention(&q, k_all, v_all, heads, score_opts, &mut z, scores.as_mut(), pattern.as_mut())?;
                if let Some(buf) = scores.as_mut() {
                    hooks.visit(ops, &scores_name, buf, &sq_shape)?;
                }
                if let Some(buf) = pattern.as_mut() {
                    hooks.visit(ops, &pattern_name, buf, &sq_shape)?;
                }
            }
            hooks.visit(ops, &pre("attn.hook_z"), &mut z, &qkv_shape)?;
            if hooks.wants(&pre("attn.hook_result")) {
                self.head_results(l, lp, &z, &mut attn_out, batch, ctx, hooks)?;
            } else {
                ops.linear(&z, &lp.w_o, Some(&lp.b_o), &mut attn_out, n, hd, d)?;
            }
            // Gemma: the attention output is normalized before it joins the
            // residual (and before hook_attn_out, as TransformerLens hooks it).
            if let Some(post) = &lp.ln1_post {
                self.ln(&attn_out, Some(post), &pre("ln1_post"), hooks, &mut x, &mut scale, batch, ctx)?;
                std::mem::swap(&mut attn_out, &mut x);
            }
            hooks.visit(ops, &pre("hook_attn_out"), &mut attn_out, &[batch, ctx, d])?;
            // GPT-2: the MLP reads resid_mid = resid_pre + attn_out. GPT-NeoX
            // (parallel): it reads resid_pre, and both outputs are added after.
            if !cfg.parallel {
                ops.add(&mut resid, &attn_out, n * d)?;
                hooks.visit(ops, &pre("hook_resid_mid"), &mut resid, &[batch, ctx, d])?;
            }
            // TransformerLens's hook_mlp_in: a copy of the residual the MLP's
            // norm reads (replacing it leaves the residual stream as it is).
            let mlp_in_name = pre("hook_mlp_in");
            if hooks.wants(&mlp_in_name) {
                let buf = match &mut mlp_in {
                    Some(b) => b,
                    None => mlp_in.insert(ops.alloc(n * d)?),
                };
                ops.copy_range(&resid, 0, n * d, buf)?;
                hooks.visit(ops, &mlp_in_name, buf, &[batch, ctx, d])?;
                self.ln(buf, lp.ln2.as_ref(), &pre("ln2"), hooks, &mut x, &mut scale, batch, ctx)?;
            } else {
                self.ln(&resid, lp.ln2.as_ref(), &pre("ln2"), hooks, &mut x, &mut scale, batch, ctx)?;
            }
            let hidden = match &mut hidden {
                Some(h) => h,
                None => hidden.insert(ops.alloc(n * f)?),
            };
            match &lp.w_gate {
                // TransformerLens's GatedMLP: hook_pre is the gate x·W_gate,
                // hook_pre_linear x·W_in + b_in, hook_post their product after
                // the gate's activation.
                Some(w_gate) => {
                    ops.linear(&x, w_gate, None, hidden, n, d, f)?;
                    hooks.visit(ops, &pre("mlp.hook_pre"), hidden, &[batch, ctx, f])?;
                    let linear = match &mut hidden_linear {
                        Some(h) => h,
                        None => hidden_linear.insert(ops.alloc(n * f)?),
                    };
                    ops.linear(&x, &lp.w_in, Some(&lp.b_in), linear, n, d, f)?;
                    hooks.visit(ops, &pre("mlp.hook_pre_linear"), linear, &[batch, ctx, f])?;
                    ops.gated_activation(hidden, linear, n * f, cfg.act)?;
                }
                None => {
                    ops.linear(&x, &lp.w_in, Some(&lp.b_in), hidden, n, d, f)?;
                    hooks.visit(ops, &pre("mlp.hook_pre"), hidden, &[batch, ctx, f])?;
                    ops.activation(hidden, n * f, cfg.act)?;
                }
            }
            hooks.visit(ops, &pre("mlp.hook_post"), hidden, &[batch, ctx, f])?;
            ops.linear(hidden, &lp.w_out, Some(&lp.b_out), &mut mlp_out, n, f, d)?;
            if let Some(post) = &lp.ln2_post {
                self.ln(&mlp_out, Some(post), &pre("ln2_post"), hooks, &mut x, &mut scale, batch, ctx)?;
                std::mem::swap(&mut mlp_out, &mut x);
            }
            hooks.visit(ops, &pre("hook_mlp_out"), &mut mlp_out, &[batch, ctx, d])?;
            if cfg.parallel {
                ops.add(&mut resid, &attn_out, n * d)?;
            }
            ops.add(&mut resid, &mlp_out, n * d)?;
            hooks.visit(ops, &pre("hook_resid_post"), &mut resid, &[batch, ctx, d])?;
        }
        if !need.head {
            return Ok(());
        }
        drop((q, k, v, z, kv_full, attn_out, mlp_out, hidden, hidden_linear, probs, qk, mlp_in));
        self.ln(&resid, self.p.ln_final.as_ref(), "ln_final", hooks, &mut x, &mut scale, batch, ctx)?;
        hooks.visit(ops, "unembed.hook_in", &mut x, &[batch, ctx, d])?;
        self.head(x, tokens, batch, ctx, hooks)
    }

    /// Logits and per-token loss from the final normalized residual `xf`.
    fn head(&self, xf: O::F, tokens: &[u32], batch: usize, ctx: usize, hooks: &mut Hooks) -> Result<()> {
        let (ops, p) = (self.ops, self.p);
        let (d, vocab, n) = (self.cfg.d_model, self.cfg.d_vocab, batch * ctx);
        let want_loss = hooks.req.want_loss && ctx >= 2;
        if hooks.req.want_loss && ctx < 2 {
            hooks.out.loss_per_token = Some(Vec::new());
        }
        // Target of row b·ctx + t is token t + 1 of sequence b; none at the last position.
        let targets: Vec<i32> = if want_loss {
            (0..n).map(|g| if g % ctx == ctx - 1 { -1 } else { tokens[g + 1] as i32 }).collect()
        } else {
            Vec::new()
        };
        let mut per_row = Vec::new();
        if hooks.req.want_logits || hooks.wants("unembed.hook_out") {
            let mut logits = ops.alloc(n * vocab)?;
            ops.linear(&xf, &p.w_u, Some(&p.b_u), &mut logits, n, d, vocab)?;
            hooks.visit(ops, "unembed.hook_out", &mut logits, &[batch, ctx, vocab])?;
            // Gemma 2 soft-caps the logits after the unembedding (and its hook).
            if let Some(cap) = self.cfg.final_soft_cap {
                ops.soft_cap(&mut logits, n * vocab, cap)?;
            }
            if want_loss {
                let (t, mut out) = (ops.upload_i32(&targets)?, ops.alloc(n)?);
                ops.token_ce(&logits, n, vocab, &t, &mut out)?;
                per_row = ops.download_owned(out, n)?;
            }
            if hooks.req.want_logits {
                hooks.out.logits = Some(ops.download_owned(logits, n * vocab)?);
            }
        } else if want_loss {
            // Loss only: logits a block of rows at a time, never [n, vocab] at once.
            let rows = ops.loss_block_rows().clamp(1, n);
            let (mut x_blk, mut logits, mut out) = (ops.alloc(rows * d)?, ops.alloc(rows * vocab)?, ops.alloc(rows)?);
            per_row.reserve(n);
            for r0 in (0..n).step_by(rows) {
                let m = rows.min(n - r0);
                ops.copy_range(&xf, r0 * d, m * d, &mut x_blk)?;
                ops.linear(&x_blk, &p.w_u, Some(&p.b_u), &mut logits, m, d, vocab)?;
                if let Some(cap) = self.cfg.final_soft_cap {
                    ops.soft_cap(&mut logits, m * vocab, cap)?;
                }
                let t = ops.upload_i32(&targets[r0..r0 + m])?;
                ops.token_ce(&logits, m, vocab, &t, &mut out)?;
                per_row.extend(ops.download(&out, m)?);
            }
        }
        if want_loss {
            let loss = (0..batch).flat_map(|b| per_row[b * ctx..b * ctx + ctx - 1].iter().copied()).collect();
            hooks.out.loss_per_token = Some(loss);
        }
        Ok(())
    }
}
