//! TransformerLens's optional hook points in the forward pass: `hook_tokens`,
//! the per-head attention inputs (`hook_attn_in`, `hook_q_input`,
//! `hook_k_input`, `hook_v_input`), each head's output (`attn.hook_result`);
//! `hook_mlp_in` is a copy in the block itself. Nothing here runs unless a
//! request names one of these hooks.
//!
//! The per-head inputs are all copies of the residual. While nothing replaces
//! them (or `ln1`'s hooks), attention reads the residual once as usual and the
//! hooks see copies; once a hook replaces one, each head's queries, keys and
//! values are made from its own normalized input, as TransformerLens does.

use crate::error::{ModelError, Result};
use crate::forward::{Forward, Hooks, LnRows};
use crate::hook::OptionalHooks;
use crate::params::LayerParams;
use saepipe_core::compute::{DeviceOps, Heads};

impl<O: DeviceOps> Forward<'_, O> {
    /// `hook_tokens` [batch, ctx]: the token ids as values. A replacement's
    /// values are the ids the rest of the run reads (embedding and loss
    /// targets, as in TransformerLens); they must be ids of the vocabulary.
    pub(crate) fn token_hook(
        &self,
        tokens: &[u32],
        batch: usize,
        ctx: usize,
        hooks: &mut Hooks,
    ) -> Result<Option<Vec<u32>>> {
        let ops = self.ops;
        let values: Vec<f32> = tokens.iter().map(|&t| t as f32).collect();
        let mut buf = ops.upload(&values)?;
        hooks.visit(ops, "hook_tokens", &mut buf, &[batch, ctx])?;
        if !hooks.replaces("hook_tokens") {
            return Ok(None);
        }
        let vocab = self.cfg.d_vocab;
        let ids = ops.download(&buf, batch * ctx)?;
        ids.iter()
            .map(|&v| {
                if v >= 0.0 && v.fract() == 0.0 && (v as usize) < vocab {
                    Ok(v as u32)
                } else {
                    Err(ModelError::Input(format!(
                        "hook_tokens was replaced by {v}, which is not a token id of the vocabulary (0 to {})",
                        vocab - 1
                    )))
                }
            })
            .collect::<Result<Vec<u32>>>()
            .map(Some)
    }

    /// `x` [batch·ctx, d] repeated `h` times per token: [batch·ctx·h, d].
    fn repeat(&self, x: &O::F, batch: usize, ctx: usize, d: usize, h: usize) -> Result<O::F> {
        let mut out = self.ops.alloc(batch * ctx * h * d)?;
        self.ops.repeat_heads(x, Heads { batch, ctx, heads: 1, d_head: d }, h, &mut out)?;
        Ok(out)
    }

    /// Shows hook `name` `h` copies per token of `x` [batch·ctx, d] (read
    /// only: a replacement takes the per-head path instead).
    pub(crate) fn visit_repeated(
        &self,
        name: &str,
        x: &O::F,
        d: usize,
        h: usize,
        shape: &[usize],
        hooks: &mut Hooks,
    ) -> Result<()> {
        if !hooks.wants(name) {
            return Ok(());
        }
        debug_assert!(!hooks.replaces(name), "a replaced per-head hook takes the per-head path");
        let (batch, ctx) = (shape[0], shape[1]);
        let mut r = self.repeat(x, batch, ctx, d, h)?;
        hooks.visit(self.ops, name, &mut r, shape)
    }

    /// Queries, keys and values of block `l` ([q, k, v], before their hooks)
    /// when attention reads per-head inputs (TransformerLens's `use_attn_in`
    /// and `use_split_qkv_input`): `hook_attn_in` [batch, ctx, heads,
    /// d_model]; with split inputs, `hook_q_input` (every head) and
    /// `hook_k_input`, `hook_v_input` (key/value heads), all copies of the
    /// residual (the split inputs are not made from `hook_attn_in`, as in
    /// TransformerLens); then `ln1` on the query, key and value inputs in turn,
    /// its hooks per head. `x` and `scale` are scratch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_inputs(
        &self,
        l: usize,
        lp: &LayerParams<O::F>,
        resid: &O::F,
        opt: OptionalHooks,
        [q, k, v]: [&mut O::F; 3],
        x: &mut O::F,
        scale: &mut O::F,
        batch: usize,
        ctx: usize,
        hooks: &mut Hooks,
    ) -> Result<()> {
        let (ops, cfg) = (self.ops, self.cfg);
        let (d, nh, nkv, n) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, batch * ctx);
        let pre = |h: &str| format!("blocks.{l}.{h}");
        let ln1 = pre("ln1");
        let inputs: [(&str, usize); 3] = [("hook_q_input", nh), ("hook_k_input", nkv), ("hook_v_input", nkv)];
        // Which per-head values can differ from copies of the residual.
        let mut edited = vec![pre("ln1.hook_scale"), pre("ln1.hook_normalized")];
        if opt.split_qkv_input {
            edited.extend(inputs.iter().map(|(h, _)| pre(h)));
        } else {
            edited.push(pre("hook_attn_in"));
        }
        let per_head = edited.iter().any(|h| hooks.replaces(h));
        let attn_in_shape = [batch, ctx, nh, d];
        if !per_head {
            if opt.attn_in {
                self.visit_repeated(&pre("hook_attn_in"), resid, d, nh, &attn_in_shape, hooks)?;
            }
            if opt.split_qkv_input {
                for (h, heads) in inputs {
                    self.visit_repeated(&pre(h), resid, d, heads, &[batch, ctx, heads, d], hooks)?;
                }
            }
            let heads = opt.ln1_heads(cfg).unwrap_or(1);
            self.ln_rows(resid, lp.ln1.as_ref(), &ln1, hooks, x, scale, batch, ctx, LnRows::Repeated(heads))?;
            let (hd, kvd) = (nh * cfg.d_head, cfg.kv_width());
            ops.linear(x, &lp.w_q, Some(&lp.b_q), q, n, d, hd)?;
            ops.linear(x, &lp.w_k, Some(&lp.b_k), k, n, d, kvd)?;
            ops.linear(x, &lp.w_v, Some(&lp.b_v), v, n, d, kvd)?;
            return Ok(());
        }
        // Each head from its own input.
        let mut attn_in = None;
        if opt.attn_in {
            let mut a = self.repeat(resid, batch, ctx, d, nh)?;
            hooks.visit(ops, &pre("hook_attn_in"), &mut a, &attn_in_shape)?;
            attn_in = Some(a);
        }
        let mut split = Vec::new();
        if opt.split_qkv_input {
            for (h, heads) in inputs {
                let mut a = self.repeat(resid, batch, ctx, d, heads)?;
                hooks.visit(ops, &pre(h), &mut a, &[batch, ctx, heads, d])?;
                split.push(a);
            }
        }
        let sources: [&O::F; 3] = match (&split[..], &attn_in) {
            ([qi, ki, vi], _) => [qi, ki, vi],
            // use_attn_in alone (every head a key/value head: OptionalHooks::check).
            (_, Some(a)) => [a, a, a],
            _ => unreachable!("per-head inputs need use_attn_in or use_split_qkv_input"),
        };
        let projections = [(&lp.w_q, &lp.b_q, q, nh), (&lp.w_k, &lp.b_k, k, nkv), (&lp.w_v, &lp.b_v, v, nkv)];
        for (input, (w, b, out, heads)) in sources.into_iter().zip(projections) {
            let (mut xn, mut sc) = (ops.alloc(n * heads * d)?, ops.alloc(n * heads)?);
            self.ln_rows(input, lp.ln1.as_ref(), &ln1, hooks, &mut xn, &mut sc, batch, ctx, LnRows::PerHead(heads))?;
            self.per_head_linear(&xn, w, b, heads, n, out)?;
        }
        Ok(())
    }

    /// `out [n, heads, d_head]`: head `j` of each token projected from that
    /// token's own input row `x [n·heads, d_model]` by its columns of `w`
    /// (`[d_model, heads·d_head]`, heads contiguous) plus its part of `b`.
    /// Every row is projected by the whole matrix and head `j`'s block kept.
    fn per_head_linear(&self, x: &O::F, w: &O::F, b: &O::F, heads: usize, n: usize, out: &mut O::F) -> Result<()> {
        let (ops, d, dh) = (self.ops, self.cfg.d_model, self.cfg.d_head);
        let rows = n * heads;
        let mut all = ops.alloc(rows * heads * dh)?;
        ops.linear(x, w, Some(b), &mut all, rows, d, heads * dh)?;
        // Row r (token r / heads, head r % heads) keeps block r % heads of its
        // projection: row r·heads + r % heads of `all` seen as [rows·heads, d_head].
        let ids: Vec<i32> = (0..rows).map(|r| (r * heads + r % heads) as i32).collect();
        Ok(ops.gather_rows(&all, &ops.upload_i32(&ids)?, rows, dh, out)?)
    }

    /// `attn.hook_result` [batch, ctx, heads, d_model]: each head's output
    /// z_h · W_O_h, without b_O (TransformerLens adds it after the sum); then
    /// `attn_out` = the sum over heads + b_O. A head's product is the whole
    /// z · W_O with the other heads' values of z zeroed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn head_results(
        &self,
        l: usize,
        lp: &LayerParams<O::F>,
        z: &O::F,
        attn_out: &mut O::F,
        batch: usize,
        ctx: usize,
        hooks: &mut Hooks,
    ) -> Result<()> {
        let (ops, cfg) = (self.ops, self.cfg);
        let (d, nh, dh, n) = (cfg.d_model, cfg.n_heads, cfg.d_head, batch * ctx);
        let hd = nh * dh;
        // Row (t, h): token t's z with only head h's values.
        let ids: Vec<i32> = (0..n * nh).map(|r| (r / nh) as i32).collect();
        let mut masked = ops.alloc(n * nh * hd)?;
        ops.gather_rows(z, &ops.upload_i32(&ids)?, n * nh, hd, &mut masked)?;
        let mask: Vec<f32> = (0..nh * hd).map(|i| if (i % hd) / dh == i / hd { 1.0 } else { 0.0 }).collect();
        ops.scale_shift(&mut masked, n, nh * hd, &ops.upload(&mask)?, &ops.alloc(nh * hd)?)?;
        let mut result = ops.alloc(n * nh * d)?;
        ops.linear(&masked, &lp.w_o, None, &mut result, n * nh, hd, d)?;
        drop(masked);
        let name = format!("blocks.{l}.attn.hook_result");
        hooks.visit(ops, &name, &mut result, &[batch, ctx, nh, d])?;
        if !hooks.replaces(&name) {
            return Ok(ops.linear(z, &lp.w_o, Some(&lp.b_o), attn_out, n, hd, d)?);
        }
        // The sum of the (replaced) per-head outputs, plus b_O.
        let mut head = ops.alloc(n * d)?;
        for h in 0..nh {
            let ids: Vec<i32> = (0..n).map(|t| (t * nh + h) as i32).collect();
            let dst = if h == 0 { &mut *attn_out } else { &mut head };
            ops.gather_rows(&result, &ops.upload_i32(&ids)?, n, d, dst)?;
            if h > 0 {
                ops.add(attn_out, &head, n * d)?;
            }
        }
        ops.scale_shift(attn_out, n, d, &ops.upload(&vec![1.0; d])?, &lp.b_o)?;
        Ok(())
    }
}
