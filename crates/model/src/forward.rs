//! The CPU forward pass with TransformerLens hook points.
//!
//! Every hook point of the architecture is visited in TransformerLens order with
//! a tensor of TransformerLens's shape; a request can capture any of them, replace
//! any of them (SAE/transcoder splicing, ablation), stop before a layer, and ask
//! for logits and per-token cross-entropy.

use crate::config::{Activation, Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::linalg::{fast_exp, gelu_inplace, layer_norm, log_sum_exp, matmul_bias};
use crate::params::Params;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

/// Replaces a hook's value in place; gets the tensor and its shape.
pub type HookFn<'a> = Box<dyn FnMut(&mut [f32], &[usize]) + Send + 'a>;

#[derive(Default)]
pub struct RunRequest<'a> {
    pub capture: HashSet<String>,
    pub replace: HashMap<String, HookFn<'a>>,
    /// TransformerLens semantics: run blocks 0..L and stop (no final LN, no logits).
    pub stop_at_layer: Option<usize>,
    pub want_logits: bool,
    pub want_loss: bool,
}

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
    #[default]
    PreAffine,
    PostAffine,
}

pub(crate) struct Hooks<'r, 'a> {
    req: &'r mut RunRequest<'a>,
    out: RunOutput,
}

impl Hooks<'_, '_> {
    fn visit(&mut self, name: &str, t: &mut [f32], shape: &[usize]) {
        if let Some(f) = self.req.replace.get_mut(name) {
            f(t, shape);
        }
        if self.req.capture.contains(name) {
            self.out.captured.insert(name.to_string(), (shape.to_vec(), t.to_vec()));
        }
    }
    fn wants(&self, name: &str) -> bool {
        self.req.capture.contains(name) || self.req.replace.contains_key(name)
    }
}

pub fn hook_names(cfg: &ModelConfig) -> Vec<String> {
    let mut names = vec!["hook_embed".to_string()];
    if cfg.arch == Arch::Gpt2 {
        names.push("hook_pos_embed".into());
    }
    for l in 0..cfg.n_layers {
        let mut per = vec![
            "hook_resid_pre",
            "ln1.hook_scale",
            "ln1.hook_normalized",
            "attn.hook_q",
            "attn.hook_k",
            "attn.hook_v",
        ];
        if cfg.rotary_dim > 0 {
            per.extend(["attn.hook_rot_q", "attn.hook_rot_k"]);
        }
        per.extend(["attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out"]);
        if !cfg.parallel {
            per.push("hook_resid_mid");
        }
        per.extend([
            "ln2.hook_scale",
            "ln2.hook_normalized",
            "mlp.hook_pre",
            "mlp.hook_post",
            "hook_mlp_out",
            "hook_resid_post",
        ]);
        names.extend(per.into_iter().map(|h| format!("blocks.{l}.{h}")));
    }
    names.extend(
        ["ln_final.hook_scale", "ln_final.hook_normalized", "unembed.hook_in", "unembed.hook_out"].map(String::from),
    );
    names
}

/// Shape of a hook's tensor for a batch.
pub fn hook_shape(cfg: &ModelConfig, name: &str, batch: usize, ctx: usize) -> Vec<usize> {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    match leaf {
        "hook_scale" => vec![batch, ctx, 1],
        "hook_q" | "hook_k" | "hook_v" | "hook_z" | "hook_rot_q" | "hook_rot_k" => {
            vec![batch, ctx, cfg.n_heads, cfg.d_head]
        }
        "hook_attn_scores" | "hook_pattern" => vec![batch, cfg.n_heads, ctx, ctx],
        "hook_pre" | "hook_post" => vec![batch, ctx, cfg.d_mlp],
        "hook_out" => vec![batch, ctx, cfg.d_vocab],
        _ => vec![batch, ctx, cfg.d_model],
    }
}

use crate::linalg::SharedMut;

pub(crate) struct Forward<'m> {
    pub cfg: &'m ModelConfig,
    pub p: &'m Params,
    pub ln_hook: LnHook,
}

/// Per-run buffers, allocated once and reused by every block (large
/// allocations would otherwise be fresh mmaps, page-faulted each layer).
struct Work {
    x: Vec<f32>,
    scale: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    z: Vec<f32>,
    pattern: Vec<f32>,
    attn_out: Vec<f32>,
    hidden: Vec<f32>,
    mlp_out: Vec<f32>,
}

/// How far a run must go: blocks after the last requested hook are skipped
/// unless the head (final LN, logits, loss) is needed. Shared by every backend
/// so they stop at the same place.
pub struct Needs {
    pub head: bool,
    /// Last block with a requested hook, and whether its only one is hook_resid_pre.
    pub last: Option<(usize, bool)>,
}

impl Needs {
    /// Whether block `l` can be skipped (nothing after it is wanted).
    pub fn done_before(&self, l: usize) -> bool {
        !self.head && self.last.is_none_or(|(last, _)| l > last)
    }
    /// Whether the run ends right after block `l`'s hook_resid_pre.
    pub fn done_after_resid_pre(&self, l: usize) -> bool {
        !self.head && self.last == Some((l, true))
    }
}

pub fn needs(req: &RunRequest, stop: usize, n_layers: usize) -> Needs {
    let names = || req.capture.iter().chain(req.replace.keys());
    let head = stop == n_layers
        && (req.want_logits
            || req.want_loss
            || names().any(|n| n.starts_with("ln_final.") || n.starts_with("unembed.")));
    let mut last: Option<(usize, bool)> = None;
    for n in names() {
        let Some(l) = n.strip_prefix("blocks.").and_then(|r| r.split('.').next()).and_then(|l| l.parse::<usize>().ok())
        else {
            continue;
        };
        let only_pre = n.ends_with(".hook_resid_pre");
        last = match last {
            Some((cur, o)) if cur == l => Some((l, o && only_pre)),
            Some((cur, o)) if cur > l => Some((cur, o)),
            _ => Some((l, only_pre)),
        };
    }
    Needs { head, last }
}

impl Forward<'_> {
    /// LayerNorm of `x` into `out` with the hook semantics of `self.ln_hook`.
    #[allow(clippy::too_many_arguments)]
    fn ln(
        &self,
        x: &[f32],
        affine: Option<&(Vec<f32>, Vec<f32>)>,
        prefix: &str,
        hooks: &mut Hooks,
        out: &mut [f32],
        scale: &mut [f32],
        batch: usize,
        ctx: usize,
    ) {
        let d = self.cfg.d_model;
        layer_norm(x, d, self.cfg.eps, out, scale);
        hooks.visit(&format!("{prefix}.hook_scale"), scale, &[batch, ctx, 1]);
        let apply_affine = |v: &mut [f32]| {
            if let Some((w, b)) = affine {
                v.par_chunks_mut(d).for_each(|row| {
                    for i in 0..d {
                        row[i] = row[i] * w[i] + b[i];
                    }
                });
            }
        };
        let name = format!("{prefix}.hook_normalized");
        match self.ln_hook {
            LnHook::PreAffine => {
                hooks.visit(&name, out, &[batch, ctx, d]);
                apply_affine(out);
            }
            LnHook::PostAffine => {
                apply_affine(out);
                hooks.visit(&name, out, &[batch, ctx, d]);
            }
        }
    }

    /// Runs blocks `start..` on `resid` ([batch·ctx, d_model], the value of
    /// `blocks.{start}.hook_resid_pre` before its hook), then the head.
    pub fn run_blocks(
        &self,
        mut resid: Vec<f32>,
        start: usize,
        tokens: Option<&[u32]>,
        batch: usize,
        ctx: usize,
        hooks: &mut Hooks,
    ) -> Result<()> {
        let cfg = self.cfg;
        let (d, nh, dh, f) = (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp);
        let hd = nh * dh;
        let n = batch * ctx;
        let stop = hooks.req.stop_at_layer.unwrap_or(cfg.n_layers).min(cfg.n_layers);
        let need = needs(hooks.req, stop, cfg.n_layers);
        let mut w = Work {
            x: vec![0f32; n * d],
            scale: vec![0f32; n],
            q: vec![0f32; n * hd],
            k: vec![0f32; n * hd],
            v: vec![0f32; n * hd],
            z: vec![0f32; n * hd],
            pattern: vec![0f32; batch * nh * ctx * ctx],
            attn_out: vec![0f32; n * d],
            hidden: Vec::new(),
            mlp_out: vec![0f32; n * d],
        };
        for l in start..stop {
            if need.done_before(l) {
                return Ok(());
            }
            let lp = &self.p.layers[l];
            let pre = |h: &str| format!("blocks.{l}.{h}");
            hooks.visit(&pre("hook_resid_pre"), &mut resid, &[batch, ctx, d]);
            if need.done_after_resid_pre(l) {
                return Ok(());
            }
            self.ln(&resid, lp.ln1.as_ref(), &pre("ln1"), hooks, &mut w.x, &mut w.scale, batch, ctx);
            let qkv_shape = [batch, ctx, nh, dh];
            matmul_bias(&w.x, &lp.w_q, Some(&lp.b_q), &mut w.q, n, d, hd);
            matmul_bias(&w.x, &lp.w_k, Some(&lp.b_k), &mut w.k, n, d, hd);
            matmul_bias(&w.x, &lp.w_v, Some(&lp.b_v), &mut w.v, n, d, hd);
            hooks.visit(&pre("attn.hook_q"), &mut w.q, &qkv_shape);
            hooks.visit(&pre("attn.hook_k"), &mut w.k, &qkv_shape);
            hooks.visit(&pre("attn.hook_v"), &mut w.v, &qkv_shape);
            if cfg.rotary_dim > 0 {
                rotary(&mut w.q, batch, ctx, nh, dh, cfg.rotary_dim, cfg.rotary_base);
                rotary(&mut w.k, batch, ctx, nh, dh, cfg.rotary_dim, cfg.rotary_base);
                hooks.visit(&pre("attn.hook_rot_q"), &mut w.q, &qkv_shape);
                hooks.visit(&pre("attn.hook_rot_k"), &mut w.k, &qkv_shape);
            }
            let mut scale = if cfg.scale_attn_weights { (dh as f32).sqrt() } else { 1.0 };
            if cfg.scale_attn_by_inverse_layer_idx {
                scale *= (l + 1) as f32;
            }
            attention_scores(&w.q, &w.k, batch, ctx, nh, dh, 1.0 / scale, &mut w.pattern);
            hooks.visit(&pre("attn.hook_attn_scores"), &mut w.pattern, &[batch, nh, ctx, ctx]);
            softmax_causal(&mut w.pattern, ctx);
            hooks.visit(&pre("attn.hook_pattern"), &mut w.pattern, &[batch, nh, ctx, ctx]);
            attention_values(&w.pattern, &w.v, batch, ctx, nh, dh, &mut w.z);
            hooks.visit(&pre("attn.hook_z"), &mut w.z, &qkv_shape);
            matmul_bias(&w.z, &lp.w_o, Some(&lp.b_o), &mut w.attn_out, n, hd, d);
            hooks.visit(&pre("hook_attn_out"), &mut w.attn_out, &[batch, ctx, d]);
            // GPT-2: the MLP reads resid_mid = resid_pre + attn_out. GPT-NeoX
            // (parallel): it reads resid_pre, and both outputs are added after.
            if !cfg.parallel {
                add_assign(&mut resid, &w.attn_out);
                hooks.visit(&pre("hook_resid_mid"), &mut resid, &[batch, ctx, d]);
            }
            self.ln(&resid, lp.ln2.as_ref(), &pre("ln2"), hooks, &mut w.x, &mut w.scale, batch, ctx);
            if w.hidden.is_empty() {
                w.hidden = vec![0f32; n * f];
            }
            matmul_bias(&w.x, &lp.w_in, Some(&lp.b_in), &mut w.hidden, n, d, f);
            hooks.visit(&pre("mlp.hook_pre"), &mut w.hidden, &[batch, ctx, f]);
            match cfg.act {
                Activation::GeluNew => gelu_inplace(&mut w.hidden, false),
                Activation::Gelu => gelu_inplace(&mut w.hidden, true),
                Activation::Relu => {
                    w.hidden.par_chunks_mut(8192).for_each(|c| c.iter_mut().for_each(|x| *x = x.max(0.0)))
                }
            }
            hooks.visit(&pre("mlp.hook_post"), &mut w.hidden, &[batch, ctx, f]);
            matmul_bias(&w.hidden, &lp.w_out, Some(&lp.b_out), &mut w.mlp_out, n, f, d);
            hooks.visit(&pre("hook_mlp_out"), &mut w.mlp_out, &[batch, ctx, d]);
            if cfg.parallel {
                add_assign(&mut resid, &w.attn_out);
            }
            add_assign(&mut resid, &w.mlp_out);
            hooks.visit(&pre("hook_resid_post"), &mut resid, &[batch, ctx, d]);
        }
        if !need.head {
            return Ok(());
        }
        drop(w);
        let mut xf = vec![0f32; n * d];
        let mut scale = vec![0f32; n];
        self.ln(&resid, self.p.ln_final.as_ref(), "ln_final", hooks, &mut xf, &mut scale, batch, ctx);
        hooks.visit("unembed.hook_in", &mut xf, &[batch, ctx, d]);
        let vocab = cfg.d_vocab;
        if hooks.req.want_loss && ctx < 2 {
            hooks.out.loss_per_token = Some(Vec::new());
        }
        if hooks.req.want_logits || hooks.wants("unembed.hook_out") {
            let mut logits = vec![0f32; n * vocab];
            matmul_bias(&xf, &self.p.w_u, Some(&self.p.b_u), &mut logits, n, d, vocab);
            hooks.visit("unembed.hook_out", &mut logits, &[batch, ctx, vocab]);
            if hooks.req.want_loss && ctx >= 2 {
                let tokens = tokens.ok_or_else(|| ModelError::Input("the loss needs the input tokens".into()))?;
                let mut loss = vec![0f32; batch * (ctx - 1)];
                loss.par_chunks_mut(ctx - 1).enumerate().for_each(|(b, out)| {
                    for t in 0..ctx - 1 {
                        let row = &logits[(b * ctx + t) * vocab..(b * ctx + t + 1) * vocab];
                        out[t] = log_sum_exp(row) - row[tokens[b * ctx + t + 1] as usize];
                    }
                });
                hooks.out.loss_per_token = Some(loss);
            }
            if hooks.req.want_logits {
                hooks.out.logits = Some(logits);
            }
        } else if hooks.req.want_loss && ctx >= 2 {
            // Loss only: logits are made and consumed a block of rows at a time,
            // never materializing [batch·ctx, vocab].
            let tokens = tokens.ok_or_else(|| ModelError::Input("the loss needs the input tokens".into()))?;
            let mut per_row = vec![0f32; n];
            // Row blocks large enough that each pass over W_U feeds many rows.
            let rows = 256.min(n);
            let mut logits = vec![0f32; rows * vocab];
            for (c, x) in xf.chunks(rows * d).enumerate() {
                let m = x.len() / d;
                let logits = &mut logits[..m * vocab];
                matmul_bias(x, &self.p.w_u, Some(&self.p.b_u), logits, m, d, vocab);
                let logits = &*logits;
                per_row[c * rows..c * rows + m].par_iter_mut().enumerate().for_each(|(i, o)| {
                    let g = c * rows + i;
                    if g % ctx != ctx - 1 {
                        let row = &logits[i * vocab..(i + 1) * vocab];
                        *o = log_sum_exp(row) - row[tokens[g + 1] as usize];
                    }
                });
            }
            let loss = (0..batch).flat_map(|b| per_row[b * ctx..b * ctx + ctx - 1].to_vec()).collect();
            hooks.out.loss_per_token = Some(loss);
        }
        Ok(())
    }
}

fn add_assign(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(8192).zip(x.par_chunks(8192)).for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, x)| *a += x));
}

/// NeoX half-split rotary on the first `rot` dims of every head, in place.
fn rotary(x: &mut [f32], _batch: usize, ctx: usize, nh: usize, dh: usize, rot: usize, base: f32) {
    let half = rot / 2;
    let inv_freq: Vec<f64> = (0..half).map(|i| (base as f64).powf(-((2 * i) as f64) / rot as f64)).collect();
    x.par_chunks_mut(nh * dh).enumerate().for_each(|(bt, row)| {
        let t = (bt % ctx) as f64;
        for h in 0..nh {
            let head = &mut row[h * dh..(h + 1) * dh];
            for i in 0..half {
                let (s, c) = (t * inv_freq[i]).sin_cos();
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * c as f32 - x2 * s as f32;
                head[i + half] = x2 * c as f32 + x1 * s as f32;
            }
        }
    });
}

/// scores[b,h,t,s] = q[b,t,h]·k[b,s,h] · scale for s ≤ t, −inf above the diagonal.
#[allow(clippy::too_many_arguments)]
fn attention_scores(
    q: &[f32],
    k: &[f32],
    _batch: usize,
    ctx: usize,
    nh: usize,
    dh: usize,
    scale: f32,
    out: &mut [f32],
) {
    let row = (nh * dh) as isize;
    out.par_chunks_mut(ctx * ctx).enumerate().for_each(|(bh, sc)| {
        let (b, h) = (bh / nh, bh % nh);
        let off = b * ctx * nh * dh + h * dh;
        // SAFETY: q/k head slices are strided views inside the buffers (row stride nh·dh).
        unsafe {
            matrixmultiply::sgemm(
                ctx,
                dh,
                ctx,
                scale,
                q.as_ptr().add(off),
                row,
                1,
                k.as_ptr().add(off),
                1,
                row,
                0.0,
                sc.as_mut_ptr(),
                ctx as isize,
                1,
            );
        }
        for t in 0..ctx {
            for s in t + 1..ctx {
                sc[t * ctx + s] = f32::NEG_INFINITY;
            }
        }
    });
}

fn softmax_causal(p: &mut [f32], ctx: usize) {
    p.par_chunks_mut(ctx).enumerate().for_each(|(i, row)| {
        let t = i % ctx;
        let mx = row[..=t].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in &mut row[..=t] {
            *x = fast_exp(*x - mx);
            sum += *x;
        }
        let inv = 1.0 / sum;
        row[..=t].iter_mut().for_each(|x| *x *= inv);
        row[t + 1..].iter_mut().for_each(|x| *x = 0.0);
    });
}

/// z[b,t,h] = Σ_s pattern[b,h,t,s] · v[b,s,h].
fn attention_values(p: &[f32], v: &[f32], batch: usize, ctx: usize, nh: usize, dh: usize, z: &mut [f32]) {
    let row = (nh * dh) as isize;
    let zp = SharedMut(z.as_mut_ptr());
    (0..batch * nh).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / nh, bh % nh);
        let off = b * ctx * nh * dh + h * dh;
        // SAFETY: each (b, h) writes only its own strided head slice of z.
        unsafe {
            matrixmultiply::sgemm(
                ctx,
                ctx,
                dh,
                1.0,
                p.as_ptr().add(bh * ctx * ctx),
                ctx as isize,
                1,
                v.as_ptr().add(off),
                row,
                1,
                0.0,
                zp.ptr().add(off),
                row,
                1,
            );
        }
    });
}

impl<'r, 'a> Hooks<'r, 'a> {
    pub(crate) fn new(req: &'r mut RunRequest<'a>) -> Self {
        Hooks { req, out: RunOutput::default() }
    }
    pub(crate) fn finish(self) -> RunOutput {
        self.out
    }
    pub(crate) fn visit_embed(&mut self, name: &str, t: &mut [f32], shape: &[usize]) {
        self.visit(name, t, shape)
    }
}
