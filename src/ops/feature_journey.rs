//! `feature_journey`: follow reference features back through training
//! checkpoints. For each followed feature of a `match_features` reference and
//! each compared coder (one per checkpoint), the matched feature, its
//! similarity and density, and its top contexts at that step, coloured by
//! activation and laid out side by side (columns = checkpoints ordered by step,
//! the reference last).
//!
//! A separate op rather than more `inspect_features` parameters: it reads N
//! coders and N stores (`saes`, `activations`, like `match_features`) where
//! `inspect_features` reads one, and its page is about one feature across
//! coders rather than many features of one coder. The scan and the page glue
//! are shared (`inspect_features::{scan, pages}`).
//!
//! Outputs: `journey.parquet` (followed feature × compared coder),
//! `examples.parquet` and `contexts.parquet` (the contexts shown, with
//! `reference_feature`), and `journey/`: `feature_<id>.html` per followed
//! feature and a searchable `index.html`.

use super::inspect_features::pages::{self, Decoder, ExampleTables, MatchTable};
use super::inspect_features::scan::{self, Detail, Stats, Want};
use super::inspect_features::{matched_text, top_tokens};
use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, StageCtx};
use crate::engine::{ParamSpec, ParamType};
use crate::ops::table::{Column, Table};
use anyhow::{Context, Result, bail};
use saepipe_data::Tokenizer;
use saepipe_report::dashboard::{self, Fact, IndexRow, JourneyColumn};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `feature_journey` op.
pub struct FeatureJourneyOp;

/// One scanned coder: its label, step, statistics and the details of the features shown.
struct Scanned {
    label: String,
    model: String,
    step: Option<i64>,
    stats: Stats,
    details: BTreeMap<usize, Detail>,
}

impl Op for FeatureJourneyOp {
    fn name(&self) -> &'static str {
        "feature_journey"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "follow reference features through the checkpoints of a match (matched feature, similarity, contexts per step)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["journey.parquet", "examples.parquet", "contexts.parquet", "journey"]
    }
    fn streamable_inputs(&self) -> &'static [&'static str] {
        &["activations", "reference_activations"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::required("matches", Artifact, "a match_features stage"),
            ParamSpec::required("reference", Artifact, "the match's reference SAE").labelled(),
            ParamSpec::required("reference_activations", Artifact, "the store the reference SAE encodes"),
            ParamSpec::required("saes", Artifacts, "the compared SAEs of the match (e.g. train[*])").labelled(),
            ParamSpec::required("activations", Artifacts, "one store per SAE in `saes`, same order (e.g. acts[*])"),
            ParamSpec::required(
                "tokenizer",
                Str,
                "tokenizer.json, or a model reference whose tokenizer decodes the tokens",
            ),
            ParamSpec::maybe("features", List(Box::new(Int)), "reference features to follow").min(0),
            ParamSpec::maybe(
                "dashboards",
                Artifact,
                "an inspect_features stage of the reference SAE: each journey links the feature's dashboard, and without `features` the journeys follow the features it shows",
            ),
            ParamSpec::optional("n_features", Int, json!(8), "without `features` or `dashboards`: how many to follow")
                .min(1),
            ParamSpec::optional(
                "select",
                Enum(&["spread", "best", "worst"]),
                json!("spread"),
                "without `features`: spread over the similarity ranking, or the best or worst matched",
            ),
            ParamSpec::maybe(
                "by",
                Str,
                "the compared coder whose similarity ranks the features (default: the earliest step)",
            ),
            ParamSpec::optional("n_tokens", Int, json!(65536), "tokens scanned per store (the first rows)").min(1),
            ParamSpec::optional("top_k", Int, json!(4), "contexts shown per checkpoint").min(1),
            ParamSpec::optional("context_left", Int, json!(12), "tokens shown before the activating token")
                .range(0, 1_048_576),
            ParamSpec::optional("context_right", Int, json!(3), "tokens shown after it").range(0, 1_048_576),
            crate::engine::stream_param(),
        ]
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let match_dir = ctx.input("matches")?.to_path_buf();
        let m = MatchTable::read(&match_dir)?;
        let ref_dir = ctx.input("reference")?.to_path_buf();
        let ref_coder = load_trained_coder(&ref_dir)?;
        let ref_label = coder_label(&ref_coder, &ref_dir, ctx.producer(&ref_dir));
        pages::check_reference(&match_dir, &ref_dir, &ref_label, "reference", &m, ref_coder.d_sae)?;
        let hook = ref_coder.metadata.hook_name.clone().unwrap_or_default();
        let (model_name, _) = super::train_sae::split_model_reference(&super::train_sae::coder_model(&ref_coder));
        ctx.describe_tables(&model_name, "", &hook);
        let tokenizer = Tokenizer::from_file(&super::tokenize::tokenizer_path(&p, &ctx.base_dir)?)?;

        // The compared coders, found by label among `saes`.
        let (saes, stores) = (ctx.input_list("saes").to_vec(), ctx.input_list("activations").to_vec());
        if saes.len() != stores.len() {
            bail!(
                "parameters `saes` and `activations`: {} SAEs but {} stores (one store per SAE, same order)",
                saes.len(),
                stores.len()
            );
        }
        let mut by_label: BTreeMap<String, (saepipe_sae::SparseCoder, PathBuf)> = BTreeMap::new();
        for (dir, store) in saes.iter().zip(&stores) {
            let coder = load_trained_coder(dir)?;
            by_label.insert(coder_label(&coder, dir, ctx.producer(dir)), (coder, store.clone()));
        }
        let order = m.by_step();
        if let Some((c, _, _)) = order.iter().find(|(c, _, _)| !by_label.contains_key(c)) {
            bail!(
                "parameter `saes`: the match compares `{c}`, which is not among `saes` ({:?}); give the match's compared SAEs",
                by_label.keys().collect::<Vec<_>>()
            );
        }

        let dashboards = ctx.input_list("dashboards").first().cloned();
        let shown = match &dashboards {
            Some(dir) => Some(dashboards_shown(dir, &ref_dir, &ref_label)?),
            None => None,
        };
        let followed = match (p.get("features"), shown) {
            (Some(Value::Array(ids)), _) => pages::feature_list(ids, ref_coder.d_sae, "features")?,
            (_, Some(shown)) => shown,
            _ => {
                let by = m.compared_coder(p.opt_str("by"), "by", true)?;
                select(&m.ranked(&by), p.usize("n_features")?, p.str("select")?)
            }
        };
        let want = Want {
            top_k: p.usize("top_k")?,
            intervals: 0,
            per_interval: 0,
            bins: 1,
            left: p.usize("context_left")?,
            right: p.usize("context_right")?,
        };
        let n_tokens = p.usize("n_tokens")?;
        let scan_one = |ctx: &StageCtx,
                        coder: &saepipe_sae::SparseCoder,
                        label: &str,
                        store: &std::path::Path,
                        features: Vec<usize>|
         -> Result<(Stats, BTreeMap<usize, Detail>)> {
            ctx.progress.message(&format!("scanning {label}"));
            let reader = scan::open(ctx, store, coder, label)?;
            let stats = scan::stats(ctx, &reader, coder, n_tokens)?;
            let mut features = features;
            features.sort_unstable();
            features.dedup();
            let details = scan::details(ctx, &reader, coder, &stats, &features, want)?;
            Ok((stats, details.into_iter().map(|d| (d.feature, d)).collect()))
        };

        let ref_store = ctx.input("reference_activations")?.to_path_buf();
        let (ref_stats, ref_details) = scan_one(ctx, &ref_coder, &ref_label, &ref_store, followed.clone())?;
        let mut steps = Vec::new();
        for (label, model, step) in &order {
            let (coder, store) = &by_label[label];
            let matched: Vec<usize> = followed
                .iter()
                .filter_map(|&f| m.lookup(label, f).filter(|x| x.0 >= 0).map(|x| x.0 as usize))
                .collect();
            if let Some(&bad) = matched.iter().find(|&&g| g >= coder.d_sae) {
                bail!(
                    "parameter `saes`: `{label}` has {} features but the match pairs feature {bad} of it",
                    coder.d_sae
                );
            }
            let (stats, details) = scan_one(ctx, coder, label, store, matched)?;
            steps.push(Scanned { label: label.clone(), model: model.clone(), step: *step, stats, details });
        }

        let mut dec = Decoder::new(&tokenizer);
        let mut tables = ExampleTables::with_reference();
        let mut jt = JourneyTable::default();
        let mut index_rows = Vec::new();
        for &f in &followed {
            let rd = &ref_details[&f];
            tables.add(&ref_label, Some(f), rd, &ref_stats, &mut dec);
            let mut columns = Vec::new();
            let mut sims = Vec::new();
            for s in &steps {
                let (mf, sim) = m.lookup(&s.label, f).unwrap_or((-1, f64::NAN));
                let d = (mf >= 0).then(|| &s.details[&(mf as usize)]);
                if let Some(d) = d {
                    tables.add(&s.label, Some(f), d, &s.stats, &mut dec);
                }
                let density = d.map_or(f64::NAN, |d| s.stats.density(d.feature));
                let top = d.map(|d| top_tokens(d, &s.stats, &mut dec, 1).concat()).unwrap_or_default();
                jt.push(f, s, mf, sim, density, d.map_or(f64::NAN, |d| d.max as f64), top);
                sims.push(dashboard::short(sim));
                columns.push(JourneyColumn {
                    heading: s.label.clone(),
                    facts: vec![
                        Fact { label: "step".into(), value: s.step.map_or("–".into(), |x| x.to_string()) },
                        Fact { label: "matched".into(), value: matched_text(mf, sim) },
                        Fact { label: "density".into(), value: dashboard::short(density) },
                    ],
                    scale: d.map_or(0.0, |d| d.max),
                    contexts: d.map(|d| d.top.iter().map(|e| dec.context(e, &s.stats)).collect()).unwrap_or_default(),
                    empty_note: if mf < 0 {
                        "no match at this checkpoint".into()
                    } else {
                        "the matched feature does not fire on the scanned tokens".into()
                    },
                    tint: sim.is_finite().then_some(sim),
                });
            }
            columns.push(JourneyColumn {
                heading: format!("reference: {ref_label}"),
                facts: vec![
                    Fact { label: "feature".into(), value: f.to_string() },
                    Fact { label: "density".into(), value: dashboard::short(ref_stats.density(f)) },
                    Fact { label: "max activation".into(), value: dashboard::short(rd.max as f64) },
                ],
                scale: rd.max,
                contexts: rd.top.iter().map(|e| dec.context(e, &ref_stats)).collect(),
                empty_note: "the feature does not fire on the scanned tokens".into(),
                tint: None,
            });
            let header = vec![
                Fact { label: "reference".into(), value: ref_label.clone() },
                Fact { label: "feature".into(), value: f.to_string() },
                Fact { label: "hook".into(), value: hook.clone() },
                Fact { label: "tokens scanned per checkpoint".into(), value: ref_stats.n.to_string() },
            ];
            let href = format!("feature_{f}.html");
            let mut links = Vec::new();
            if let Some(dir) = &dashboards {
                let page = format!("dashboards/feature_{f}.html");
                if dir.join(&page).is_file() {
                    links.push((format!("dashboard of feature {f}"), super::links::artifact_link(ctx, dir, &page, 1)));
                }
            }
            let html = dashboard::journey_page(
                &format!("Journey of {ref_label} feature {f}"),
                &header,
                Some("index.html"),
                &links,
                &columns,
            );
            ctx.write_output(&format!("journey/{href}"), html.as_bytes())?;
            let tokens = top_tokens(rd, &ref_stats, &mut dec, 6);
            let mut cells = vec![
                f.to_string(),
                dashboard::short(ref_stats.density(f)),
                tokens.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(" "),
            ];
            cells.extend(sims);
            index_rows.push(IndexRow { href, cells, search: tokens.join(" ") });
        }
        let mut headers: Vec<String> = vec!["reference feature".into(), "density".into(), "top tokens".into()];
        headers.extend(steps.iter().map(|s| match s.step {
            Some(x) => format!("sim @ step {x}"),
            None => format!("sim in {}", s.label),
        }));
        let intro = format!(
            "{} features of `{ref_label}` followed through {} checkpoints: the similarity of their match at each step (NaN/– where unmatched). Open a feature for its contexts at every step, side by side.",
            followed.len(),
            steps.len()
        );
        let html = dashboard::index_page(&format!("Feature journeys of {ref_label}"), &intro, &headers, &index_rows);
        ctx.write_output("journey/index.html", html.as_bytes())?;
        ctx.write_table(&jt.into_table(), "journey.parquet")?;
        let (examples, contexts) = tables.into_tables();
        ctx.write_table(&examples, "examples.parquet")?;
        ctx.write_table(&contexts, "contexts.parquet")?;
        Ok(json!({ "reference": ref_label, "followed": followed.len(), "checkpoints": steps.len() }))
    }
}

/// `n` features of a similarity ranking (best first): spread evenly, the best, or the worst.
fn select(ranked: &[(usize, f64)], n: usize, how: &str) -> Vec<usize> {
    let ids: Vec<usize> = ranked.iter().map(|x| x.0).collect();
    if ids.len() <= n {
        return ids;
    }
    match how {
        "best" => ids[..n].to_vec(),
        "worst" => ids[ids.len() - n..].to_vec(),
        _ => (0..n).map(|i| ids[i * (ids.len() - 1) / (n - 1).max(1)]).collect(),
    }
}

#[derive(Default)]
struct JourneyTable {
    reference_feature: Vec<i64>,
    coder: Vec<String>,
    model: Vec<String>,
    step: Vec<Option<i64>>,
    matched_feature: Vec<i64>,
    similarity: Vec<f64>,
    density: Vec<f64>,
    max_activation: Vec<f64>,
    top_token: Vec<String>,
}

impl JourneyTable {
    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, f: usize, s: &Scanned, matched: i64, sim: f64, density: f64, max: f64, top: String) {
        self.reference_feature.push(f as i64);
        self.coder.push(s.label.clone());
        self.model.push(s.model.clone());
        self.step.push(s.step);
        self.matched_feature.push(matched);
        self.similarity.push(sim);
        self.density.push(density);
        self.max_activation.push(max);
        self.top_token.push(top);
    }
    fn into_table(self) -> Table {
        Table::default()
            .with("reference_feature", Column::I64(self.reference_feature))
            .with("coder", Column::Str(self.coder))
            .with("model", Column::Str(self.model))
            .with("step", Column::OptI64(self.step))
            .with("matched_feature", Column::I64(self.matched_feature))
            .with("similarity", Column::F64(self.similarity))
            .with("density", Column::F64(self.density))
            .with("max_activation", Column::F64(self.max_activation))
            .with("top_token", Column::Str(self.top_token))
    }
}

/// The features the `dashboards` input shows, after checking it is an
/// `inspect_features` result of the reference coder.
fn dashboards_shown(dir: &Path, ref_dir: &Path, ref_label: &str) -> Result<Vec<usize>> {
    let manifest = saepipe_cache::Manifest::read_in(dir)?;
    let shows = manifest.as_ref().and_then(|m| m.inputs.get("sae")).map(|k| k.to_string());
    if manifest.as_ref().is_some_and(|m| m.op != "inspect_features") || !dir.join("dashboards/index.html").is_file() {
        bail!("parameter `dashboards`: {} is not an inspect_features result with dashboards", dir.display());
    }
    if shows.is_some_and(|k| k != crate::engine::artifact_key(ref_dir)) {
        bail!(
            "parameter `dashboards`: it shows another coder than the reference `{ref_label}`; give an inspect_features stage whose `sae` is the reference"
        );
    }
    let hist = super::table::read_parquet(&dir.join("histograms.parquet"))
        .context("parameter `dashboards`: reading its histograms.parquet")?;
    let mut shown: Vec<usize> = hist.f64("feature")?.iter().map(|&f| f as usize).collect();
    shown.sort_unstable();
    shown.dedup();
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_spreads_over_the_ranking() {
        let ranked: Vec<(usize, f64)> = (0..10).map(|i| (i, 1.0 - i as f64 / 10.0)).collect();
        assert_eq!(select(&ranked, 3, "spread"), vec![0, 4, 9]);
        assert_eq!(select(&ranked, 2, "best"), vec![0, 1]);
        assert_eq!(select(&ranked, 2, "worst"), vec![8, 9]);
        assert_eq!(select(&ranked[..2], 5, "spread"), vec![0, 1]);
    }
}
