//! `match_features`: one-to-one matching of a reference SAE's features onto each
//! of N other SAEs (one per LM checkpoint, seed or size).
//!
//! For activation similarities every SAE encodes its own activation store (the
//! activations of its own model) over the same tokens: the first `n_tokens`
//! rows of each store, which must hold identical token ids. Feature activations
//! stay sparse end to end (saepipe-matching computes the similarity as a sparse
//! product and certifies the assignment against the full problem).
//!
//! Outputs: `pairs.parquet` (one row per reference feature per compared SAE)
//! and `summary.parquet` (one row per compared SAE, with the fraction of live
//! reference features matched within each distance threshold).

use super::table::{Column, Table};
use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, StageCtx};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_data::{ActivationReader, StoreSource};
use saepipe_matching::{CsrActivations, DenseWeights, MatchConfig, SaeInputs, SimilarityKind, Strategy};
use saepipe_sae::SparseCoder;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `match_features` op: one-to-one matching of a reference SAE's features onto other SAEs.
pub struct MatchFeaturesOp;

/// One SAE ready for matching.
struct Side {
    label: String,
    model: String,
    coder: SparseCoder,
    acts: Option<CsrActivations>,
}

/// Default distance thresholds of the summary: those of the checkpoint-matching
/// study, 0.1 to 0.9 in steps of 0.1 (one `fraction_within_<d>` column each).
const STUDY_THRESHOLDS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Training step encoded in a model revision (`step1000`, `toy/x@step16`); NaN if none.
pub fn revision_step(model: &str) -> f64 {
    let rev = model.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
    let digits: String = rev.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    digits.parse::<f64>().unwrap_or(f64::NAN)
}

/// The reference side from a published coder (`reference_coder`), encoded on
/// `store` when the similarity needs activations.
fn load_published(
    spec: &str,
    base_dir: &Path,
    store: Option<&Path>,
    streamed: &crate::engine::StreamedInputs,
    n_tokens: usize,
    gpu: Option<&Arc<saepipe_cuda::Gpu>>,
) -> Result<(Side, Option<Vec<u32>>)> {
    let path = super::coder_ref::resolve(spec, base_dir).context("parameter `reference_coder`")?;
    let coder = match super::coder_ref::load_pretrained(spec, &path).context("parameter `reference_coder`")? {
        Some(c) => c,
        None => load_trained_coder(&path).context("parameter `reference_coder`")?,
    };
    side(coder, super::coder_ref::label(spec, &path), store, streamed, n_tokens, gpu)
}

/// One side of a match, encoded on `store` (its first `n_tokens` rows) when given.
fn side(
    coder: SparseCoder,
    label: String,
    store: Option<&Path>,
    streamed: &crate::engine::StreamedInputs,
    n_tokens: usize,
    gpu: Option<&Arc<saepipe_cuda::Gpu>>,
) -> Result<(Side, Option<Vec<u32>>)> {
    let model = super::train_sae::coder_model(&coder);
    let (acts, tokens) = match store {
        Some(s) => {
            let (a, t) = encode_store(&coder, &label, streamed.source(s), n_tokens, gpu)?;
            (Some(a), Some(t))
        }
        None => (None, None),
    };
    Ok((Side { label, model, coder, acts }, tokens))
}

/// Warns when activation stores of differently named models (e.g. two training
/// checkpoints) come from byte-identical weights: some published checkpoint
/// branches serve the same files, which would show up as a spurious perfect match.
fn warn_identical_checkpoints(ctx: &mut StageCtx, stores: &[PathBuf]) -> Result<()> {
    let mut by_fingerprint: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for s in stores {
        let (path, text) = ctx.store_source(s).index()?;
        let info = saepipe_data::StoreInfo::parse(&path, &text)?;
        by_fingerprint.entry(info.meta.weight_fingerprint).or_default().insert(info.meta.model);
    }
    for models in by_fingerprint.values().filter(|m| m.len() > 1) {
        let names: Vec<&str> = models.iter().map(String::as_str).collect();
        ctx.warn(format!("{} have byte-identical weights (same weight fingerprint): the checkpoints are the same model, so their SAEs will match as if trained on one", names.join(", ")));
    }
    Ok(())
}

/// Encodes the first `n_tokens` rows of `store` at the coder's input hook.
/// Returns the activations and the token ids they were computed on.
fn encode_store(
    coder: &SparseCoder,
    label: &str,
    store: Arc<dyn StoreSource>,
    n_tokens: usize,
    gpu: Option<&std::sync::Arc<saepipe_cuda::Gpu>>,
) -> Result<(CsrActivations, Vec<u32>)> {
    // TopK coders encode on the GPU when there is one; everything else on the CPU.
    let on_gpu = match gpu {
        Some(g) => match coder.as_topk_sae() {
            Some(t) => Some((g, saepipe_cuda::GpuTopKSae::from_tensors(g, &t)?)),
            None => None,
        },
        None => None,
    };
    let hook = coder
        .metadata
        .hook_name
        .clone()
        .with_context(|| format!("SAE `{label}` does not name its hook (cfg.json metadata.hook_name)"))?;
    let location = store.location();
    let reader = ActivationReader::from_source(store, &[hook.as_str()])
        .with_context(|| format!("SAE `{label}`: activation store {}", location.display()))?;
    if reader.widths()[0] != coder.d_in {
        bail!(
            "SAE `{label}` has d_in {} but hook `{hook}` in {} has width {}",
            coder.d_in,
            location.display(),
            reader.widths()[0]
        );
    }
    let n = n_tokens.min(reader.total_rows() as usize);
    let (mut row_ptr, mut idx, mut val, mut tokens) = (vec![0usize], Vec::new(), Vec::new(), Vec::with_capacity(n));
    for b in reader.sequential().batches(4096) {
        let b = b?;
        let take = b.rows.min(n - tokens.len());
        let x = &b.hooks[0][..take * coder.d_in];
        let acts = match &on_gpu {
            Some((g, sae)) => sae.encode_topk(g, x, take)?.into(),
            None => coder.encode(x, take)?,
        };
        for r in 0..take {
            let (i, v) = acts.row(r);
            idx.extend_from_slice(i);
            val.extend_from_slice(v);
            row_ptr.push(idx.len());
        }
        tokens.extend_from_slice(&b.token[..take]);
        if tokens.len() == n {
            break;
        }
    }
    Ok((CsrActivations::new(label, n, coder.d_sae, row_ptr, idx, val)?, tokens))
}

fn similarity_kind(name: &str) -> SimilarityKind {
    match name {
        "pearson" => SimilarityKind::Pearson,
        "decoder" => SimilarityKind::Decoder,
        "encoder" => SimilarityKind::Encoder,
        _ => SimilarityKind::Activations,
    }
}

fn inputs(s: &Side) -> SaeInputs<'_> {
    SaeInputs { name: &s.label, acts: s.acts.as_ref(), w_dec: Some(w_dec(s)), w_enc: Some(w_enc(s)) }
}

fn w_dec(s: &Side) -> DenseWeights<'_> {
    DenseWeights {
        name: &s.label,
        data: &s.coder.w_dec,
        n_features: s.coder.d_sae,
        d: s.coder.d_out,
        feature_major: true,
    }
}

fn w_enc(s: &Side) -> DenseWeights<'_> {
    DenseWeights {
        name: &s.label,
        data: &s.coder.w_enc,
        n_features: s.coder.d_sae,
        d: s.coder.d_in,
        feature_major: false,
    }
}

impl Op for MatchFeaturesOp {
    fn name(&self) -> &'static str {
        "match_features"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "match a reference SAE's features one-to-one onto other SAEs (exact assignment)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["pairs.parquet", "summary.parquet"]
    }
    fn resource(&self, params: &super::Params) -> super::Resource {
        super::device::resource(params)
    }
    fn slurm_defaults(&self, params: &super::Params) -> saepipe_slurm::SlurmSettings {
        super::device::slurm_defaults(params)
    }
    fn streamable_inputs(&self) -> &'static [&'static str] {
        &["activations", "reference_activations"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::maybe("reference", Artifact, "the reference SAE (a train_sae stage); or give `reference_coder`")
                .labelled(),
            ParamSpec::maybe(
                "reference_coder",
                Str,
                "a published reference coder instead of a stage: a SAELens or sparsify directory or transcoder-paper .pt file on disk, hf:<owner>/<repo>[@<rev>]/<path>, or saelens:<release>/<sae_id>; hashed by content",
            ),
            ParamSpec::required("saes", Artifacts, "SAEs to match onto the reference, e.g. train[*]").labelled(),
            ParamSpec::maybe(
                "reference_activations",
                Artifact,
                "activation store the reference SAE encodes (needed by activations/pearson)",
            ),
            ParamSpec::maybe(
                "activations",
                Artifacts,
                "one activation store per SAE in `saes`, same order (e.g. acts[*])",
            ),
            ParamSpec::optional(
                "similarity",
                Enum(&["activations", "pearson", "decoder", "encoder"]),
                json!("activations"),
                "feature similarity",
            ),
            ParamSpec::optional("n_tokens", Int, json!(65536), "tokens encoded per SAE (the first rows of each store)")
                .min(1),
            ParamSpec::optional(
                "device",
                Str,
                json!("auto"),
                "auto, cpu, cuda or cuda:N: TopK SAEs encode on the GPU when it resolves to CUDA",
            )
            .not_in_key(),
            super::device::precision_param(),
            ParamSpec::optional(
                "thresholds",
                List(Box::new(Float)),
                json!(STUDY_THRESHOLDS),
                "distance (1 - similarity) thresholds for the summary (default 0.1 to 0.9 in steps of 0.1)",
            ),
            ParamSpec::optional(
                "strategy",
                Enum(&["auto", "dense", "sparse"]),
                json!("auto"),
                "dense f32 matrix, or sparse candidates + certificate",
            ),
            ParamSpec::optional("top_m", Int, json!(32), "candidates per feature (sparse strategy)").min(1),
            crate::engine::stream_param(),
        ]
    }
    fn external_inputs(&self, params: &super::Params, base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        match params.opt_str("reference_coder") {
            Some(spec) => Ok(vec![(
                "reference_coder".into(),
                super::coder_ref::resolve(spec, base_dir).context("parameter `reference_coder`")?,
            )]),
            None => Ok(Vec::new()),
        }
    }
    fn check_params(&self, params: &super::Params, _base_dir: &Path) -> Vec<super::ParamProblem> {
        match (params.get("reference").is_some(), params.get("reference_coder").is_some()) {
            (true, true) => vec![(
                "reference_coder",
                None,
                "give either `reference` (a train_sae stage) or `reference_coder` (a published coder), not both".into(),
            )],
            (false, false) => vec![(
                "reference",
                None,
                "missing: the reference SAE, a train_sae stage (`reference: train[step2000]`) or a published coder (`reference_coder: saelens:<release>/<sae_id>`)".into(),
            )],
            _ => Vec::new(),
        }
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let kind = similarity_kind(p.str("similarity")?);
        let needs_acts = matches!(kind, SimilarityKind::Activations | SimilarityKind::Pearson);
        let n_tokens = p.usize("n_tokens")?.max(1);
        let thresholds: Vec<f64> = p
            .get("thresholds")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let saes = ctx.input_list("saes").to_vec();
        let stores = ctx.input_list("activations").to_vec();
        if needs_acts && (stores.len() != saes.len() || ctx.input_list("reference_activations").is_empty()) {
            bail!(
                "similarity `{}` needs `reference_activations` and one store in `activations` per SAE ({} SAEs, {} stores)",
                kind.name(),
                saes.len(),
                stores.len()
            );
        }
        let gpu = match saepipe_cuda::DeviceSpec::parse(p.str("device")?)?.resolve()? {
            saepipe_cuda::Device::Cuda(i) if needs_acts => Some(super::device::start_gpu(i, &p)?),
            _ => None,
        };
        let streamed = ctx.streamed.clone();
        let producers: std::collections::BTreeMap<PathBuf, String> = saes
            .iter()
            .chain(ctx.input_list("reference"))
            .filter_map(|d| Some((d.clone(), ctx.producer(d)?.to_string())))
            .collect();
        let load = |dir: &Path, store: Option<&Path>| -> Result<(Side, Option<Vec<u32>>)> {
            let coder = load_trained_coder(dir)?;
            let label = coder_label(&coder, dir, producers.get(dir).map(String::as_str));
            side(coder, label, store, &streamed, n_tokens, gpu.as_ref())
        };
        if needs_acts {
            let mut all = stores.clone();
            all.extend(ctx.input_list("reference_activations").iter().cloned());
            warn_identical_checkpoints(ctx, &all)?;
        }
        let ref_store = needs_acts.then(|| ctx.input("reference_activations")).transpose()?.map(Path::to_path_buf);
        let (reference, ref_tokens) = match p.opt_str("reference_coder") {
            Some(spec) => load_published(spec, &ctx.base_dir, ref_store.as_deref(), &streamed, n_tokens, gpu.as_ref())?,
            None => load(ctx.input("reference")?, ref_store.as_deref())?,
        };
        let (model_name, revision) = super::train_sae::split_model_reference(&reference.model);
        let hook = reference.coder.metadata.hook_name.clone().unwrap_or_default();
        ctx.describe_tables(&model_name, revision.as_deref().unwrap_or(""), &hook);
        ctx.progress.set_total(saes.len() as u64, "SAEs");

        let cfg = MatchConfig {
            kind,
            strategy: match p.str("strategy")? {
                "dense" => Strategy::Dense,
                "sparse" => Strategy::Sparse,
                _ => Strategy::Auto,
            },
            top_m: p.usize("top_m")?,
            ..MatchConfig::default()
        };
        let mut pairs = PairColumns::default();
        let mut summary = SummaryColumns::default();
        for (i, dir) in saes.iter().enumerate() {
            // Ctrl-C between SAEs (a match holds nothing worth saving).
            if ctx.cancelled() {
                return Err(super::StageStop::Interrupted.into());
            }
            let (other, tokens) = load(dir, stores.get(i).map(PathBuf::as_path).filter(|_| needs_acts))?;
            if tokens != ref_tokens {
                bail!(
                    "SAE `{}` was encoded on different tokens than the reference `{}`: the activation stores must come from the same token table",
                    other.label,
                    reference.label
                );
            }
            ctx.progress.message(&format!("matching {} onto {}", reference.label, other.label));
            let result = saepipe_matching::match_features(&inputs(&reference), &inputs(&other), &cfg)
                .with_context(|| format!("matching `{}` onto `{}`", reference.label, other.label))?;
            let dec = (reference.coder.d_out == other.coder.d_out).then(|| (w_dec(&reference), w_dec(&other)));
            let (s, rows) = saepipe_matching::summarize(&result, &thresholds, dec)?;
            ctx.logln(format!(
                "{} -> {}: {} of {} live reference features matched, median similarity {:.3}, method {}{}",
                reference.label,
                other.label,
                s.n_matched,
                s.n_features_a - s.dead_a,
                s.median_similarity.unwrap_or(f64::NAN),
                s.method,
                if s.certified { " (certified optimal)" } else { "" }
            ));
            pairs.push(&other.label, &rows);
            summary.push(&other, &s);
            ctx.progress.set_position(i as u64 + 1);
        }
        ctx.write_table(&pairs.into_table(), "pairs.parquet")?;
        ctx.write_table(&summary.into_table(&thresholds), "summary.parquet")?;
        Ok(
            json!({ "reference": reference.label, "compared": saes.len(), "similarity": kind.name(), "n_tokens": n_tokens }),
        )
    }
}

#[derive(Default)]
struct PairColumns {
    sae: Vec<String>,
    reference_feature: Vec<i64>,
    matched_feature: Vec<i64>,
    similarity: Vec<f64>,
    decoder_cosine: Vec<f64>,
    density_reference: Vec<f64>,
    density_matched: Vec<f64>,
    dead_reference: Vec<bool>,
    dead_matched: Vec<bool>,
}

impl PairColumns {
    fn push(&mut self, label: &str, rows: &[saepipe_matching::PairRow]) {
        let nan = f64::NAN;
        for r in rows {
            self.sae.push(label.to_string());
            self.reference_feature.push(r.feature_a as i64);
            self.matched_feature.push(r.feature_b.map_or(-1, |b| b as i64));
            self.similarity.push(r.similarity.map_or(nan, f64::from));
            self.decoder_cosine.push(r.decoder_cosine.map_or(nan, f64::from));
            self.density_reference.push(r.density_a.unwrap_or(nan));
            self.density_matched.push(r.density_b.unwrap_or(nan));
            self.dead_reference.push(r.dead_a);
            self.dead_matched.push(r.dead_b.unwrap_or(false));
        }
    }
    fn into_table(self) -> Table {
        Table::default()
            .with("coder", Column::Str(self.sae))
            .with("reference_feature", Column::I64(self.reference_feature))
            .with("matched_feature", Column::I64(self.matched_feature))
            .with("similarity", Column::F64(self.similarity))
            .with("decoder_cosine", Column::F64(self.decoder_cosine))
            .with("density_reference", Column::F64(self.density_reference))
            .with("density_matched", Column::F64(self.density_matched))
            .with("dead_reference", Column::Bool(self.dead_reference))
            .with("dead_matched", Column::Bool(self.dead_matched))
    }
}

#[derive(Default)]
struct SummaryColumns {
    sae: Vec<String>,
    model: Vec<String>,
    step: Vec<Option<i64>>,
    method: Vec<String>,
    n_features: Vec<i64>,
    dead_reference: Vec<i64>,
    dead: Vec<i64>,
    n_matched: Vec<i64>,
    median_similarity: Vec<f64>,
    mean_similarity: Vec<f64>,
    certified: Vec<bool>,
    fractions: Vec<Vec<f64>>,
}

impl SummaryColumns {
    fn push(&mut self, side: &Side, s: &saepipe_matching::MatchSummary) {
        self.sae.push(side.label.clone());
        self.model.push(side.model.clone());
        self.step.push(Some(revision_step(&side.model)).filter(|s| s.is_finite()).map(|s| s as i64));
        self.method.push(s.method.clone());
        self.n_features.push(s.n_features_b as i64);
        self.dead_reference.push(s.dead_a as i64);
        self.dead.push(s.dead_b as i64);
        self.n_matched.push(s.n_matched as i64);
        self.median_similarity.push(s.median_similarity.unwrap_or(f64::NAN));
        self.mean_similarity.push(s.mean_similarity.unwrap_or(f64::NAN));
        self.certified.push(s.certified);
        self.fractions.push(s.thresholds.iter().map(|t| t.fraction).collect());
    }
    fn into_table(self, thresholds: &[f64]) -> Table {
        let mut t = Table::default()
            .with("coder", Column::Str(self.sae))
            .with("model", Column::Str(self.model))
            .with("step", Column::OptI64(self.step))
            .with("method", Column::Str(self.method))
            .with("n_features", Column::I64(self.n_features))
            .with("dead_reference", Column::I64(self.dead_reference))
            .with("dead", Column::I64(self.dead))
            .with("n_matched", Column::I64(self.n_matched))
            .with("median_similarity", Column::F64(self.median_similarity))
            .with("mean_similarity", Column::F64(self.mean_similarity))
            .with("certified", Column::Bool(self.certified));
        for (j, d) in thresholds.iter().enumerate() {
            t = t.with(&fraction_column(*d), Column::F64(self.fractions.iter().map(|f| f[j]).collect()));
        }
        t
    }
}

/// Summary column holding the fraction of live reference features matched within distance `d`.
pub fn fraction_column(d: f64) -> String {
    format!("fraction_within_{d}")
}
