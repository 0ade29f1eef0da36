//! TransformerLens hook points, parsed once: [`HookName`] knows a hook's layer,
//! its tensor shape and the width of the per-token row a store keeps of it, and
//! checks it against a [`ModelConfig`] (with did-you-mean for a misspelt name and
//! the model's layer count for a layer it lacks) without loading any weights.

use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::forward::RunRequest;
use std::borrow::Cow;
use std::fmt;

/// The hooks of one block, in TransformerLens order, with the conditions under
/// which an architecture has them.
const BLOCK_HOOKS: &[&str] = &[
    "hook_resid_pre",
    "hook_attn_in",
    "hook_q_input",
    "hook_k_input",
    "hook_v_input",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.q_norm.hook_scale",
    "attn.q_norm.hook_normalized",
    "attn.k_norm.hook_scale",
    "attn.k_norm.hook_normalized",
    "attn.hook_rot_q",
    "attn.hook_rot_k",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "ln1_post.hook_scale",
    "ln1_post.hook_normalized",
    "hook_attn_out",
    "hook_resid_mid",
    "hook_mlp_in",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
    "ln2_post.hook_scale",
    "ln2_post.hook_normalized",
    "hook_mlp_out",
    "hook_resid_post",
];

/// Hooks outside the blocks: before them, then after them.
const EMBED_HOOKS: &[&str] = &["hook_tokens", "hook_embed", "hook_pos_embed"];

/// TransformerLens's optional hooks (each behind a config flag there:
/// `use_hook_tokens`, `use_attn_in`, `use_split_qkv_input`, `use_attn_result`,
/// `use_hook_mlp_in`); in saepipe a request that names one turns it on.
const OPTIONAL_HOOKS: &[&str] =
    &["hook_tokens", "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result", "hook_mlp_in"];

/// The optional hooks that change how a block runs, as TransformerLens's
/// flags do for every block at once: `use_attn_in` (some
/// `blocks.L.hook_attn_in` is requested) and `use_split_qkv_input` (some
/// `blocks.L.hook_q_input`, `hook_k_input` or `hook_v_input` is). With either,
/// attention reads per-head copies of the residual and `ln1` normalizes each
/// copy, so `ln1.hook_scale` and `ln1.hook_normalized` get a head dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionalHooks {
    /// TransformerLens's `use_attn_in`.
    pub attn_in: bool,
    /// TransformerLens's `use_split_qkv_input`.
    pub split_qkv_input: bool,
}

impl OptionalHooks {
    /// The flags a set of requested hook names turns on.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> OptionalHooks {
        let mut o = OptionalHooks::default();
        for n in names {
            let Some(local) = n.strip_prefix("blocks.").and_then(|r| r.split_once('.')).map(|(_, l)| l) else {
                continue;
            };
            match local {
                "hook_attn_in" => o.attn_in = true,
                "hook_q_input" | "hook_k_input" | "hook_v_input" => o.split_qkv_input = true,
                _ => {}
            }
        }
        o
    }

    /// The head copies `ln1` normalizes (and its hooks show) per token, if
    /// any: TransformerLens applies `ln1` to the query, key and value inputs
    /// in that order and a cache keeps the last call, the value input's
    /// (key/value heads under `use_split_qkv_input`, else every head).
    pub fn ln1_heads(&self, cfg: &ModelConfig) -> Option<usize> {
        if self.split_qkv_input {
            Some(cfg.n_kv_heads)
        } else if self.attn_in {
            Some(cfg.n_heads)
        } else {
            None
        }
    }

    /// Whether a model can run with these flags. TransformerLens cannot run
    /// `use_attn_in` alone under grouped-query attention (the per-head input
    /// has a copy per query head, the key and value weights fewer heads).
    pub fn check(&self, cfg: &ModelConfig) -> Result<()> {
        if self.attn_in && !self.split_qkv_input && cfg.n_kv_heads != cfg.n_heads {
            return Err(ModelError::Input(format!(
                "hook_attn_in on a model with grouped-query attention ({} heads, {} key/value heads) needs the split inputs too: also request a blocks.L.hook_q_input, hook_k_input or hook_v_input (TransformerLens cannot run use_attn_in without use_split_qkv_input there)",
                cfg.n_heads, cfg.n_kv_heads
            )));
        }
        Ok(())
    }
}
const HEAD_HOOKS: &[&str] = &["ln_final.hook_scale", "ln_final.hook_normalized", "unembed.hook_in", "unembed.hook_out"];

/// Whether an architecture has a hook of a block (`local` is the part after `blocks.L.`).
fn block_has(cfg: &ModelConfig, local: &str) -> bool {
    match local {
        "attn.hook_rot_q" | "attn.hook_rot_k" => cfg.rotary_dim > 0,
        // Parallel blocks read one residual: there is no mid-block residual.
        "hook_resid_mid" => !cfg.parallel,
        // A gated MLP's linear half (TransformerLens's GatedMLP).
        "mlp.hook_pre_linear" => cfg.gated_mlp,
        // Gemma's norms after attention and MLP.
        "ln1_post.hook_scale" | "ln1_post.hook_normalized" | "ln2_post.hook_scale" | "ln2_post.hook_normalized" => {
            cfg.post_norms
        }
        // QK-norm (Qwen3, Gemma 3).
        "attn.q_norm.hook_scale"
        | "attn.q_norm.hook_normalized"
        | "attn.k_norm.hook_scale"
        | "attn.k_norm.hook_normalized" => cfg.qk_norm,
        _ => true,
    }
}

fn global_has(cfg: &ModelConfig, name: &str) -> bool {
    name != "hook_pos_embed" || cfg.arch == Arch::Gpt2
}

/// Every hook point of a model, in the order a forward pass visits them.
pub fn hook_names(cfg: &ModelConfig) -> Vec<String> {
    let mut names: Vec<String> = EMBED_HOOKS.iter().filter(|h| global_has(cfg, h)).map(|h| h.to_string()).collect();
    for l in 0..cfg.n_layers {
        names.extend(BLOCK_HOOKS.iter().filter(|h| block_has(cfg, h)).map(|h| format!("blocks.{l}.{h}")));
    }
    names.extend(HEAD_HOOKS.iter().map(|h| h.to_string()));
    names
}

/// Shape of a hook's tensor for `batch` sequences of `ctx` tokens. The name must
/// be a hook of some model (see [`HookName::parse`]); an unknown one gets the
/// residual shape.
pub fn hook_shape(cfg: &ModelConfig, name: &str, batch: usize, ctx: usize) -> Vec<usize> {
    match HookName::parse(name) {
        Ok(h) => h.shape(cfg, batch, ctx),
        Err(_) => vec![batch, ctx, cfg.d_model],
    }
}

/// Checks a hook name against a configuration: the [`HookName`] when the model
/// has that hook, else an error naming the closest valid hook, or the model's
/// layer count when only the layer is out of range.
pub fn check_hook(cfg: &ModelConfig, name: &str) -> Result<HookName> {
    HookName::check(cfg, name)
}

/// How a hook's tensor is laid out, which decides its shape and its per-token row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Layout {
    /// [batch, ctx, d_model]
    Model,
    /// [batch, ctx, 1] (LayerNorm scales)
    Scalar,
    /// [batch, ctx, d_mlp]
    Mlp,
    /// [batch, ctx, d_vocab]
    Vocab,
    /// [batch, ctx, heads, d_head]
    Heads,
    /// [batch, ctx, key/value heads, d_head] (keys and values: fewer heads
    /// under grouped-query attention)
    KvHeads,
    /// [batch, heads, query, key]: one attention map per head.
    AttnMap,
    /// [batch·ctx·heads, 1]: a QK-norm's scale per query head (TransformerLens
    /// normalizes the heads as rows of one matrix).
    QNormScale,
    /// [batch·ctx·heads, d_head]: query heads after QK-norm, before its weight.
    QNorm,
    /// [batch·ctx·key/value heads, 1]
    KNormScale,
    /// [batch·ctx·key/value heads, d_head]
    KNorm,
    /// [batch, ctx]: token ids.
    Tokens,
    /// [batch, ctx, heads, d_model]: per-head copies of the residual, or
    /// each head's output in d_model.
    HeadsModel,
    /// [batch, ctx, key/value heads, d_model]
    KvHeadsModel,
}

fn layout_of(local: &str) -> Layout {
    match local {
        "attn.q_norm.hook_scale" => return Layout::QNormScale,
        "attn.q_norm.hook_normalized" => return Layout::QNorm,
        "attn.k_norm.hook_scale" => return Layout::KNormScale,
        "attn.k_norm.hook_normalized" => return Layout::KNorm,
        "hook_tokens" => return Layout::Tokens,
        "hook_attn_in" | "hook_q_input" | "attn.hook_result" => return Layout::HeadsModel,
        "hook_k_input" | "hook_v_input" => return Layout::KvHeadsModel,
        _ => {}
    }
    match local.rsplit('.').next().unwrap_or(local) {
        "hook_scale" => Layout::Scalar,
        "hook_q" | "hook_z" | "hook_rot_q" => Layout::Heads,
        "hook_k" | "hook_v" | "hook_rot_k" => Layout::KvHeads,
        "hook_attn_scores" | "hook_pattern" => Layout::AttnMap,
        "hook_pre" | "hook_pre_linear" | "hook_post" => Layout::Mlp,
        "hook_out" => Layout::Vocab,
        _ => Layout::Model,
    }
}

/// A TransformerLens hook point name, parsed: `hook_embed`,
/// `blocks.3.attn.hook_pattern`, `ln_final.hook_normalized`, …
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HookName {
    name: String,
    layer: Option<usize>,
    layout: Layout,
}

impl HookName {
    /// Parses a name that is a hook of some model (any layer number); whether a
    /// given model has it is [`HookName::check`]'s question.
    pub fn parse(name: &str) -> Result<HookName> {
        let unknown = || ModelError::UnknownHook { name: name.to_string(), hint: String::new() };
        let (layer, local) = match name.strip_prefix("blocks.") {
            Some(rest) => {
                let (l, local) = rest.split_once('.').ok_or_else(unknown)?;
                // Canonical decimal only: `blocks.01.…` is not a TransformerLens name.
                let layer: usize = l.parse().ok().filter(|n: &usize| n.to_string() == l).ok_or_else(unknown)?;
                if !BLOCK_HOOKS.contains(&local) {
                    return Err(unknown());
                }
                (Some(layer), local)
            }
            None if EMBED_HOOKS.contains(&name) || HEAD_HOOKS.contains(&name) => (None, name),
            None => return Err(unknown()),
        };
        Ok(HookName { name: name.to_string(), layer, layout: layout_of(local) })
    }

    /// Parses `name` and checks that the model has it.
    pub fn check(cfg: &ModelConfig, name: &str) -> Result<HookName> {
        let names = hook_names(cfg);
        if names.iter().any(|n| n == name) {
            return HookName::parse(name);
        }
        // A hook the architecture has, at a layer the model lacks: say so rather
        // than suggest a neighbouring layer.
        if let Ok(h) = HookName::parse(name)
            && let Some(l) = h.layer
            && l >= cfg.n_layers
            && block_has(cfg, h.local())
        {
            let n = cfg.n_layers;
            let range = if n == 0 { "no blocks".to_string() } else { format!("blocks.0 to blocks.{}", n - 1) };
            let hint = format!(" (layer {l} is out of range: the model has {n} layers, {range})");
            return Err(ModelError::UnknownHook { name: name.to_string(), hint });
        }
        let hint = saepipe_core::suggest::hint(name, names.iter().map(String::as_str));
        Err(ModelError::UnknownHook { name: name.to_string(), hint })
    }

    /// The full name, e.g. `blocks.3.hook_resid_pre`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The block index of a `blocks.L.…` hook; None for embedding and head hooks.
    pub fn layer(&self) -> Option<usize> {
        self.layer
    }

    /// The name within its block (`attn.hook_pattern` for
    /// `blocks.2.attn.hook_pattern`); the whole name outside the blocks.
    pub fn local(&self) -> &str {
        match self.layer {
            Some(_) => self.name.splitn(3, '.').nth(2).unwrap_or(&self.name),
            None => &self.name,
        }
    }

    /// Whether the hook is in the head (`ln_final.…`, `unembed.…`), after every block.
    pub fn is_head(&self) -> bool {
        HEAD_HOOKS.contains(&self.name.as_str())
    }

    /// Whether the hook is an attention map, [batch, heads, query, key]
    /// (`attn.hook_attn_scores`, `attn.hook_pattern`).
    pub fn is_attention_map(&self) -> bool {
        self.layout == Layout::AttnMap
    }

    /// Whether the hook is one of TransformerLens's optional hooks (off unless
    /// a config flag turns it on there; here, on when requested).
    pub fn is_optional(&self) -> bool {
        OPTIONAL_HOOKS.contains(&self.local())
    }

    /// The TransformerLens shape of the hook's tensor for `batch` × `ctx`
    /// tokens, in a run without the optional hooks that add a head dimension
    /// to `ln1` (see [`HookName::shape_with`]).
    pub fn shape(&self, cfg: &ModelConfig, batch: usize, ctx: usize) -> Vec<usize> {
        self.shape_with(cfg, batch, ctx, OptionalHooks::default())
    }

    /// The TransformerLens shape of the hook's tensor in a run whose requested
    /// hooks turn on `opt`: `ln1.hook_scale` and `ln1.hook_normalized` are
    /// [batch, ctx, heads, 1 | d_model] when attention reads per-head inputs.
    pub fn shape_with(&self, cfg: &ModelConfig, batch: usize, ctx: usize, opt: OptionalHooks) -> Vec<usize> {
        let mut shape = self.base_shape(cfg, batch, ctx);
        if let Some(heads) = opt.ln1_heads(cfg)
            && self.layer.is_some()
            && self.local().starts_with("ln1.")
        {
            shape.insert(2, heads);
        }
        shape
    }

    fn base_shape(&self, cfg: &ModelConfig, batch: usize, ctx: usize) -> Vec<usize> {
        match self.layout {
            Layout::Model => vec![batch, ctx, cfg.d_model],
            Layout::Scalar => vec![batch, ctx, 1],
            Layout::Mlp => vec![batch, ctx, cfg.d_mlp],
            Layout::Vocab => vec![batch, ctx, cfg.d_vocab],
            Layout::Heads => vec![batch, ctx, cfg.n_heads, cfg.d_head],
            Layout::KvHeads => vec![batch, ctx, cfg.n_kv_heads, cfg.d_head],
            Layout::AttnMap => vec![batch, cfg.n_heads, ctx, ctx],
            Layout::QNormScale => vec![batch * ctx * cfg.n_heads, 1],
            Layout::QNorm => vec![batch * ctx * cfg.n_heads, cfg.d_head],
            Layout::KNormScale => vec![batch * ctx * cfg.n_kv_heads, 1],
            Layout::KNorm => vec![batch * ctx * cfg.n_kv_heads, cfg.d_head],
            Layout::Tokens => vec![batch, ctx],
            Layout::HeadsModel => vec![batch, ctx, cfg.n_heads, cfg.d_model],
            Layout::KvHeadsModel => vec![batch, ctx, cfg.n_kv_heads, cfg.d_model],
        }
    }

    /// Values per token in a stored row for contexts of `ctx` tokens: the
    /// trailing dimensions flattened (heads × d_head for per-head hooks, as
    /// SAELens does), and heads × ctx for attention maps (each query token keeps
    /// every head's row of keys).
    pub fn token_width(&self, cfg: &ModelConfig, ctx: usize) -> usize {
        self.token_width_with(cfg, ctx, OptionalHooks::default())
    }

    /// [`HookName::token_width`] in a run whose requested hooks turn on `opt`
    /// (see [`HookName::shape_with`]).
    pub fn token_width_with(&self, cfg: &ModelConfig, ctx: usize, opt: OptionalHooks) -> usize {
        match self.layout {
            Layout::AttnMap => cfg.n_heads * ctx,
            // One token's values: [1, 1, …] or, for QK-norm hooks, [heads, …].
            _ => self.shape_with(cfg, 1, 1, opt).iter().product(),
        }
    }

    /// The hook's tensor (of [`HookName::shape`]) as one row per token, tokens in
    /// batch-major order, each row [`HookName::token_width`] wide. Attention maps
    /// are reordered from [batch, heads, query, key] to [batch, query, heads,
    /// key], and the masked entries (keys after the query, or outside a sliding
    /// window: −inf scores, zero probabilities) are stored as 0 so that rows
    /// stay finite; every other
    /// hook already is row-per-token and is borrowed as is.
    pub fn token_rows<'a>(&self, cfg: &ModelConfig, values: &'a [f32], batch: usize, ctx: usize) -> Cow<'a, [f32]> {
        if self.layout != Layout::AttnMap {
            return Cow::Borrowed(values);
        }
        let heads = cfg.n_heads;
        debug_assert_eq!(values.len(), batch * heads * ctx * ctx);
        let mut out = vec![0f32; values.len()];
        for b in 0..batch {
            for h in 0..heads {
                for q in 0..ctx {
                    let src = ((b * heads + h) * ctx + q) * ctx;
                    let dst = ((b * ctx + q) * heads + h) * ctx;
                    for (o, &v) in out[dst..=dst + q].iter_mut().zip(&values[src..=src + q]) {
                        *o = if v.is_finite() { v } else { 0.0 };
                    }
                }
            }
        }
        Cow::Owned(out)
    }
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for HookName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

/// How far a run must go: blocks after the last requested hook are skipped
/// unless the head (final LN, logits, loss) is needed. Shared by every backend
/// so they stop at the same place.
pub struct Needs {
    /// Whether the final LayerNorm and unembedding run.
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

/// What a request needs of a run that stops before block `stop`.
pub fn needs(req: &RunRequest, stop: usize, n_layers: usize) -> Needs {
    let hooks = || req.capture.iter().chain(req.replace.keys()).filter_map(|n| HookName::parse(n).ok());
    let head = stop == n_layers && (req.want_logits || req.want_loss || hooks().any(|h| h.is_head()));
    let mut last: Option<(usize, bool)> = None;
    for h in hooks() {
        let Some(l) = h.layer() else { continue };
        let only_pre = h.local() == "hook_resid_pre";
        last = match last {
            Some((cur, o)) if cur == l => Some((l, o && only_pre)),
            Some((cur, o)) if cur > l => Some((cur, o)),
            _ => Some((l, only_pre)),
        };
    }
    Needs { head, last }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, Norm};

    fn cfg(arch: Arch, parallel: bool, rotary_dim: usize) -> ModelConfig {
        ModelConfig {
            arch,
            d_model: 8,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 2,
            d_head: 4,
            d_mlp: 32,
            d_vocab: 50,
            n_ctx: 16,
            eps: 1e-5,
            norm: Norm::LayerNorm,
            act: Activation::GeluNew,
            gated_mlp: false,
            rotary_dim,
            rotary_base: 10000.0,
            rope_scaling: None,
            sliding_window: None,
            local_attention: None,
            query_pre_attn_scalar: None,
            attn_soft_cap: None,
            final_soft_cap: None,
            post_norms: false,
            qk_norm: false,
            parallel,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            attention_bias: true,
            attn_out_bias: true,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    #[test]
    fn parses_layers_and_shapes() {
        let c = cfg(Arch::Gpt2, false, 0);
        let h = HookName::check(&c, "blocks.1.attn.hook_pattern").unwrap();
        assert_eq!((h.layer(), h.local(), h.is_attention_map()), (Some(1), "attn.hook_pattern", true));
        assert_eq!(h.shape(&c, 3, 5), vec![3, 2, 5, 5]);
        assert_eq!(h.token_width(&c, 5), 10);
        let z = HookName::check(&c, "blocks.0.attn.hook_z").unwrap();
        assert_eq!((z.shape(&c, 3, 5), z.token_width(&c, 5)), (vec![3, 5, 2, 4], 8));
        let s = HookName::check(&c, "ln_final.hook_scale").unwrap();
        assert_eq!((s.layer(), s.is_head(), s.token_width(&c, 5)), (None, true, 1));
        assert_eq!(HookName::check(&c, "hook_pos_embed").unwrap().token_width(&c, 5), 8);
        assert_eq!(HookName::check(&c, "unembed.hook_out").unwrap().token_width(&c, 5), 50);
        assert_eq!(HookName::check(&c, "blocks.0.mlp.hook_post").unwrap().token_width(&c, 5), 32);
        assert!(HookName::parse("blocks.01.hook_resid_pre").is_err());
        assert!(HookName::parse("blocks.x.hook_resid_pre").is_err());
        assert!(HookName::parse("blocks.1").is_err());
    }

    #[test]
    fn every_listed_hook_parses() {
        for c in [cfg(Arch::Gpt2, false, 0), cfg(Arch::NeoX, true, 2)] {
            for n in hook_names(&c) {
                let h = HookName::check(&c, &n).unwrap();
                assert_eq!(h.as_str(), n);
                assert_eq!(h.shape(&c, 2, 3).iter().product::<usize>(), 2 * 3 * h.token_width(&c, 3), "{n}");
            }
        }
    }

    #[test]
    fn gated_mlps_and_grouped_query_attention() {
        let mut c = cfg(Arch::Llama, false, 4);
        (c.gated_mlp, c.n_kv_heads, c.norm) = (true, 1, Norm::RmsNorm);
        for n in hook_names(&c) {
            let h = HookName::check(&c, &n).unwrap();
            assert_eq!(h.shape(&c, 2, 3).iter().product::<usize>(), 2 * 3 * h.token_width(&c, 3), "{n}");
        }
        let names = hook_names(&c);
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(at("blocks.0.mlp.hook_pre") < at("blocks.0.mlp.hook_pre_linear"));
        assert!(at("blocks.0.mlp.hook_pre_linear") < at("blocks.0.mlp.hook_post"));
        assert_eq!(HookName::check(&c, "blocks.1.attn.hook_k").unwrap().shape(&c, 2, 3), vec![2, 3, 1, 4]);
        assert_eq!(HookName::check(&c, "blocks.1.attn.hook_rot_k").unwrap().token_width(&c, 3), 4);
        assert_eq!(HookName::check(&c, "blocks.1.attn.hook_rot_q").unwrap().token_width(&c, 3), 8);
        assert!(HookName::check(&cfg(Arch::Gpt2, false, 0), "blocks.0.mlp.hook_pre_linear").is_err());
    }

    #[test]
    fn optional_hooks_and_their_shapes() {
        let mut c = cfg(Arch::Llama, false, 4);
        (c.gated_mlp, c.n_kv_heads, c.norm) = (true, 1, Norm::RmsNorm);
        let names = hook_names(&c);
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(at("hook_tokens") < at("hook_embed"));
        assert!(at("blocks.0.hook_resid_pre") < at("blocks.0.hook_attn_in"));
        assert!(at("blocks.0.hook_v_input") < at("blocks.0.ln1.hook_scale"));
        assert!(at("blocks.0.attn.hook_z") < at("blocks.0.attn.hook_result"));
        assert!(at("blocks.0.hook_resid_mid") < at("blocks.0.hook_mlp_in"));
        let shape = |n: &str, o: OptionalHooks| HookName::check(&c, n).unwrap().shape_with(&c, 2, 3, o);
        let none = OptionalHooks::default();
        assert_eq!(shape("hook_tokens", none), vec![2, 3]);
        assert_eq!(shape("blocks.1.hook_attn_in", none), vec![2, 3, 2, 8]);
        assert_eq!(shape("blocks.1.hook_q_input", none), vec![2, 3, 2, 8]);
        assert_eq!(shape("blocks.1.hook_k_input", none), vec![2, 3, 1, 8]);
        assert_eq!(shape("blocks.1.attn.hook_result", none), vec![2, 3, 2, 8]);
        assert_eq!(shape("blocks.1.hook_mlp_in", none), vec![2, 3, 8]);
        // ln1 gets a head dimension with per-head inputs: the value input's
        // heads under split inputs, every head under use_attn_in alone.
        let split = OptionalHooks::of(["blocks.0.hook_k_input"]);
        let attn_in = OptionalHooks::of(["hook_embed", "blocks.1.hook_attn_in"]);
        assert_eq!(
            (split, attn_in.attn_in, attn_in.split_qkv_input),
            (OptionalHooks { attn_in: false, split_qkv_input: true }, true, false)
        );
        assert_eq!(shape("blocks.1.ln1.hook_normalized", split), vec![2, 3, 1, 8]);
        assert_eq!(shape("blocks.1.ln1.hook_scale", attn_in), vec![2, 3, 2, 1]);
        assert_eq!(shape("blocks.1.ln2.hook_scale", attn_in), vec![2, 3, 1]);
        assert_eq!(HookName::check(&c, "blocks.0.ln1.hook_normalized").unwrap().token_width_with(&c, 3, attn_in), 16);
        assert!(HookName::parse("blocks.0.attn.hook_result").unwrap().is_optional());
        assert!(!HookName::parse("blocks.0.attn.hook_z").unwrap().is_optional());
        // TransformerLens cannot run use_attn_in alone under grouped-query attention.
        let e = attn_in.check(&c).unwrap_err().to_string();
        assert!(e.contains("hook_attn_in on a model with grouped-query attention (2 heads, 1 key/value heads)"), "{e}");
        assert!(OptionalHooks { attn_in: true, split_qkv_input: true }.check(&c).is_ok());
        assert!(attn_in.check(&cfg(Arch::Gpt2, false, 0)).is_ok());
        for n in hook_names(&c) {
            let h = HookName::check(&c, &n).unwrap();
            for o in [none, split, attn_in] {
                assert_eq!(
                    h.shape_with(&c, 2, 3, o).iter().product::<usize>(),
                    2 * 3 * h.token_width_with(&c, 3, o),
                    "{n}"
                );
            }
        }
        let e = HookName::check(&c, "blocks.1.hook_atn_in").unwrap_err().to_string();
        assert!(e.contains("did you mean `blocks.1.hook_attn_in`"), "{e}");
        let e = HookName::check(&c, "blocks.0.attn.hook_results").unwrap_err().to_string();
        assert!(e.contains("did you mean `blocks.0.attn.hook_result`"), "{e}");
    }

    #[test]
    fn architecture_decides_which_hooks_exist() {
        let neox = cfg(Arch::NeoX, true, 2);
        assert!(HookName::check(&neox, "blocks.1.hook_resid_mid").is_err());
        assert!(HookName::check(&neox, "hook_pos_embed").is_err());
        assert!(HookName::check(&neox, "blocks.1.attn.hook_rot_q").is_ok());
        assert!(HookName::check(&cfg(Arch::Gpt2, false, 0), "blocks.1.attn.hook_rot_q").is_err());
    }

    #[test]
    fn errors_suggest_or_name_the_layer_count() {
        let c = cfg(Arch::Gpt2, false, 0);
        let e = HookName::check(&c, "blocks.1.hook_resid_prex").unwrap_err().to_string();
        assert_eq!(e, "unknown hook point `blocks.1.hook_resid_prex` (did you mean `blocks.1.hook_resid_pre`?)");
        let e = HookName::check(&c, "blocks.5.hook_resid_pre").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown hook point `blocks.5.hook_resid_pre` (layer 5 is out of range: the model has 2 layers, blocks.0 to blocks.1)"
        );
        let e = HookName::check(&c, "nonsense").unwrap_err().to_string();
        assert_eq!(e, "unknown hook point `nonsense`");
    }

    #[test]
    fn attention_maps_become_rows_per_query_token() {
        let c = cfg(Arch::Gpt2, false, 0);
        let h = HookName::parse("blocks.0.attn.hook_attn_scores").unwrap();
        let (batch, ctx, heads) = (2, 3, c.n_heads);
        // value = b*1000 + h*100 + q*10 + k
        let mut v = Vec::new();
        for b in 0..batch {
            for hd in 0..heads {
                for q in 0..ctx {
                    for k in 0..ctx {
                        v.push((b * 1000 + hd * 100 + q * 10 + k) as f32);
                    }
                }
            }
        }
        let rows = h.token_rows(&c, &v, batch, ctx);
        let w = h.token_width(&c, ctx);
        let row = |b: usize, q: usize| &rows[(b * ctx + q) * w..(b * ctx + q + 1) * w];
        assert_eq!(row(1, 2), &[1020.0, 1021.0, 1022.0, 1120.0, 1121.0, 1122.0]);
        assert_eq!(row(0, 0), &[0.0, 0.0, 0.0, 100.0, 0.0, 0.0], "keys after the query are masked");
        assert_eq!(row(0, 1), &[10.0, 11.0, 0.0, 110.0, 111.0, 0.0]);
        let resid = HookName::parse("hook_embed").unwrap();
        assert!(matches!(resid.token_rows(&c, &v, batch, ctx), Cow::Borrowed(_)));
    }
}
