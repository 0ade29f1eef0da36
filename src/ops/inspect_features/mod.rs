//! `inspect_features`: what do an SAE's features respond to? For chosen
//! features — a spread of live features from the most to the least frequent, a
//! given list, or the best and worst matched features of a `match_features`
//! result — the top-activating tokens of an activation store with their text
//! context, the histogram of their activations, and, given the model, the
//! tokens whose logits each feature's decoder direction raises and lowers most
//! (`W_dec[f] · W_U`, without the final LayerNorm, as feature dashboards do).
//!
//! Outputs: `features.parquet` (every feature: density, mean and max
//! activation), `examples.parquet` (chosen features × top examples and samples
//! from activation intervals, with left and right context decoded by the
//! tokenizer), `contexts.parquet` (every token of those examples' windows with
//! the feature's activation on it), `histograms.parquet` (chosen features ×
//! activation bins), `logits.parquet` (chosen features × top positive and
//! negative tokens; only with `model`), `report.html`, and `dashboards/`: a
//! self-contained HTML page per chosen feature (`feature_<id>.html`) and a
//! searchable, sortable `index.html`.
//!
//! The scan ([`scan`]) and the page glue ([`pages`]) are shared with
//! `feature_journey`.

pub mod pages;
pub mod scan;

use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, Params, StageCtx, model_params};
use crate::engine::{ParamSpec, ParamType};
use crate::ops::table::{Column, Table};
use anyhow::{Result, bail};
use pages::{Decoder, ExampleTables, MatchTable};
use saepipe_data::Tokenizer;
use saepipe_report::dashboard::{self, Fact, FeaturePage, IndexRow, IntervalSample, LogitToken};
use saepipe_report::{Cell, Report};
use scan::{Detail, Stats, Want};
use serde_json::{Value, json};
use std::cmp::Reverse;

/// The `inspect_features` op: top-activating contexts of chosen SAE features.
pub struct InspectFeaturesOp;

/// Live features spread evenly over the density ranking, most frequent first.
/// Only those firing at least `min_firings` times when `n` of them do: a feature
/// seen once or twice gives a page of one context and empty quantiles.
fn spread(count: &[u64], n: usize, min_firings: u64) -> Vec<usize> {
    let mut live: Vec<usize> = (0..count.len()).filter(|&f| count[f] > 0).collect();
    live.sort_by_key(|&f| (Reverse(count[f]), f));
    let frequent = live.iter().take_while(|&&f| count[f] >= min_firings).count();
    if frequent >= n {
        live.truncate(frequent);
    }
    if live.len() <= n {
        return live;
    }
    (0..n).map(|i| live[i * (live.len() - 1) / (n - 1).max(1)]).collect()
}

/// The best and the worst matched live reference features of one compared
/// coder, half of `n` each (best first, worst last).
fn from_matches(m: &MatchTable, compared: &str, n: usize) -> Result<Vec<usize>> {
    let live = m.ranked(compared);
    if live.is_empty() {
        bail!("parameter `compared`: the match result has no live pairs for `{compared}`");
    }
    let half = (n / 2).max(1);
    let mut chosen: Vec<usize> = live.iter().take(half).map(|x| x.0).collect();
    let worst: Vec<usize> =
        live.iter().rev().take(n - half.min(n)).map(|x| x.0).filter(|f| !chosen.contains(f)).collect();
    chosen.extend(worst.into_iter().rev());
    Ok(chosen)
}

/// One character per bin, height proportional to the count.
fn sparkline(counts: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    counts.iter().map(|&c| if c == 0 { ' ' } else { BARS[((c * 7).div_ceil(top)) as usize] }).collect()
}

/// Tokens whose logits the feature's decoder row raises (descending) and lowers (ascending).
/// Token ids with their logit effect, strongest first.
type TokenEffects = Vec<(u32, f32)>;

fn logit_tokens(w_dec_row: &[f32], w_u: &[f32], vocab: usize, n: usize) -> (TokenEffects, TokenEffects) {
    let mut effect = vec![0f32; vocab];
    for (d, &w) in w_dec_row.iter().enumerate() {
        let row = &w_u[d * vocab..(d + 1) * vocab];
        effect.iter_mut().zip(row).for_each(|(e, &u)| *e += w * u);
    }
    let mut order: Vec<u32> = (0..vocab as u32).collect();
    order.sort_by(|&a, &b| effect[b as usize].total_cmp(&effect[a as usize]).then(a.cmp(&b)));
    let pick = |it: &mut dyn Iterator<Item = &u32>| it.take(n).map(|&t| (t, effect[t as usize])).collect::<Vec<_>>();
    (pick(&mut order.iter()), pick(&mut order.iter().rev()))
}

impl Op for InspectFeaturesOp {
    fn name(&self) -> &'static str {
        "inspect_features"
    }
    fn version(&self) -> u32 {
        3
    }
    fn summary(&self) -> &'static str {
        "top-activating token contexts of an SAE's features (Parquet + HTML)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "features.parquet",
            "examples.parquet",
            "contexts.parquet",
            "histograms.parquet",
            "logits.parquet",
            "report.html",
            "dashboards",
        ]
    }
    fn streamable_inputs(&self) -> &'static [&'static str] {
        &["activations"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::required("sae", Artifact, "a train_sae stage").labelled(),
            ParamSpec::required("activations", Artifact, "activation store holding the SAE's input hook"),
            ParamSpec::required(
                "tokenizer",
                Str,
                "tokenizer.json, or a model reference whose tokenizer decodes the tokens",
            ),
            ParamSpec::optional("n_tokens", Int, json!(65536), "tokens scanned (the first rows of the store)").min(1),
            ParamSpec::optional(
                "n_features",
                Int,
                json!(24),
                "features shown, spread from the most to the least frequent",
            )
            .min(1),
            ParamSpec::optional(
                "min_firings",
                Int,
                json!(10),
                "the spread of `n_features` skips features firing fewer times on the scanned tokens (unless too few fire that often)",
            )
            .min(1),
            ParamSpec::maybe("features", List(Box::new(Int)), "feature indices to show instead").min(0),
            ParamSpec::maybe(
                "matches",
                Artifact,
                "a match_features stage whose reference is this SAE: show its best and worst matched features instead",
            ),
            ParamSpec::maybe(
                "compared",
                Str,
                "with `matches`: the compared coder the features are ranked by (default: the first)",
            ),
            model_params::optional_model(
                "model reference: adds the tokens each feature's decoder direction promotes and suppresses (W_dec·W_U)",
            ),
            ParamSpec::optional("logit_tokens", Int, json!(8), "promoted and suppressed tokens listed per feature")
                .min(0),
            ParamSpec::optional("histogram_bins", Int, json!(16), "bins of each shown feature's activation histogram")
                .range(1, 10_000),
            ParamSpec::optional("top_k", Int, json!(10), "distinct top examples per feature").min(1),
            ParamSpec::optional(
                "intervals",
                Int,
                json!(5),
                "equal-width activation intervals over (0, max] sampled for each feature (0: none)",
            )
            .range(0, 100),
            ParamSpec::optional("interval_samples", Int, json!(3), "examples sampled per interval").range(0, 1000),
            ParamSpec::optional("context_left", Int, json!(24), "tokens shown before the activating token")
                .range(0, 1_048_576),
            ParamSpec::optional("context_right", Int, json!(4), "tokens shown after it").range(0, 1_048_576),
            crate::engine::stream_param(),
        ]
    }
    fn external_inputs(
        &self,
        params: &Params,
        base_dir: &std::path::Path,
    ) -> Result<Vec<(String, std::path::PathBuf)>> {
        model_params::external_inputs(params, base_dir)
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let sae_dir = ctx.input("sae")?.to_path_buf();
        let coder = load_trained_coder(&sae_dir)?;
        let label = coder_label(&coder, &sae_dir, ctx.producer(&sae_dir));
        let hook = coder.metadata.hook_name.clone().unwrap_or_default();
        let (model_name, revision) = super::train_sae::split_model_reference(&super::train_sae::coder_model(&coder));
        ctx.describe_tables(&model_name, revision.as_deref().unwrap_or(""), &hook);
        let tokenizer = Tokenizer::from_file(&super::tokenize::tokenizer_path(&p, &ctx.base_dir)?)?;
        let matches = match ctx.inputs.get("matches").and_then(|v| v.first()).cloned() {
            Some(dir) => {
                let m = MatchTable::read(&dir)?;
                pages::check_reference(&dir, &sae_dir, &label, "sae", &m, coder.d_sae)?;
                let compared = m.compared_coder(p.opt_str("compared"), "compared", false)?;
                Some((m, compared))
            }
            None => None,
        };
        let explicit = match p.get("features") {
            Some(Value::Array(ids)) => Some(pages::feature_list(ids, coder.d_sae, "features")?),
            _ => None,
        };
        let reader = scan::open(ctx, ctx.input("activations")?, &coder, &label)?;
        let stats = scan::stats(ctx, &reader, &coder, p.usize("n_tokens")?)?;
        let n = stats.n;
        ctx.write_table(
            &Table::default()
                .with("coder", Column::Str(vec![label.clone(); coder.d_sae]))
                .with("feature", Column::I64((0..coder.d_sae as i64).collect()))
                .with("density", Column::F64((0..coder.d_sae).map(|f| stats.density(f)).collect()))
                .with("mean_activation", Column::F64((0..coder.d_sae).map(|f| stats.mean(f)).collect()))
                .with("max_activation", Column::F64(stats.max.iter().map(|&x| x as f64).collect())),
            "features.parquet",
        )?;

        let features = match (&matches, explicit) {
            (Some((m, compared)), _) => from_matches(m, compared, p.usize("n_features")?)?,
            (None, Some(list)) => list,
            (None, None) => spread(&stats.count, p.usize("n_features")?, p.usize("min_firings")? as u64),
        };
        let want = Want {
            top_k: p.usize("top_k")?.max(1),
            intervals: p.usize("intervals")?,
            per_interval: p.usize("interval_samples")?,
            bins: p.usize("histogram_bins")?.max(1),
            left: p.usize("context_left")?,
            right: p.usize("context_right")?,
        };
        let details = scan::details(ctx, &reader, &coder, &stats, &features, want)?;
        let mut dec = Decoder::new(&tokenizer);
        let mut tables = ExampleTables::default();
        for d in &details {
            tables.add(&label, None, d, &stats, &mut dec);
        }
        let (examples, contexts) = tables.into_tables();
        ctx.write_table(&examples, "examples.parquet")?;
        ctx.write_table(&contexts, "contexts.parquet")?;
        ctx.write_table(&histogram_table(&details, want.bins), "histograms.parquet")?;

        let logits = match p.opt_str("model") {
            Some(spec) => Some(self.logits(ctx, &p, spec, &coder, &label, &features, &mut dec)?),
            None => None,
        };
        let ctx_ro: &StageCtx = ctx;
        let dashboards = Dashboards {
            label: &label,
            hook: &hook,
            stats: &stats,
            matches: matches.as_ref(),
            logits: logits.as_ref(),
        };
        dashboards.write(ctx_ro, &details, &mut dec)?;
        self.report(ctx_ro, &label, &hook, &stats, &details, matches.as_ref(), logits.as_ref(), want, &mut dec)?;
        let dead = stats.count.iter().filter(|&&c| c == 0).count();
        Ok(json!({ "sae": label, "tokens": n, "dead_features": dead, "features_shown": features.len() }))
    }
}

/// Promoted and suppressed tokens (text, effect) of each chosen feature, in order.
type Logits = Vec<(Vec<LogitToken>, Vec<LogitToken>)>;

impl InspectFeaturesOp {
    /// `logits.parquet` and the promoted/suppressed tokens of each feature.
    #[allow(clippy::too_many_arguments)]
    fn logits(
        &self,
        ctx: &StageCtx,
        p: &Params,
        spec: &str,
        coder: &saepipe_sae::SparseCoder,
        label: &str,
        features: &[usize],
        dec: &mut Decoder,
    ) -> Result<Logits> {
        let (_, model) = model_params::load(p, &ctx.base_dir)?;
        let (d_model, vocab) = (model.cfg.d_model, model.cfg.d_vocab);
        if coder.d_out != d_model {
            bail!(
                "parameter `model`: SAE `{label}` writes {} dimensions but the residual stream of {spec} has {d_model}; logit effects need a coder whose output lives in the residual stream",
                coder.d_out
            );
        }
        let n_tokens_logit = p.usize("logit_tokens")?.max(1);
        let mut lg = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut out = Vec::new();
        for &f in features {
            let (up, down) =
                logit_tokens(&coder.w_dec[f * d_model..(f + 1) * d_model], &model.params.w_u, vocab, n_tokens_logit);
            let mut lists = (Vec::new(), Vec::new());
            for (direction, list) in [("positive", &up), ("negative", &down)] {
                for (rank, &(t, v)) in list.iter().enumerate() {
                    let text = dec.token(t);
                    lg.0.push(f as i64);
                    lg.1.push(direction.to_string());
                    lg.2.push(rank as i64 + 1);
                    lg.3.push(t as i64);
                    lg.4.push(text.clone());
                    lg.5.push(v as f64);
                    let target = if direction == "positive" { &mut lists.0 } else { &mut lists.1 };
                    target.push(LogitToken { text, effect: v });
                }
            }
            out.push(lists);
        }
        ctx.write_table(
            &Table::default()
                .with("feature", Column::I64(lg.0))
                .with("direction", Column::Str(lg.1))
                .with("rank", Column::I64(lg.2))
                .with("token_id", Column::I64(lg.3))
                .with("token", Column::Str(lg.4))
                .with("logit_effect", Column::F64(lg.5)),
            "logits.parquet",
        )?;
        Ok(out)
    }

    /// `report.html`: the feature table and the top examples, for a quick look
    /// (the dashboards hold the coloured contexts).
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        ctx: &StageCtx,
        label: &str,
        hook: &str,
        stats: &Stats,
        details: &[Detail],
        matches: Option<&(MatchTable, String)>,
        logits: Option<&Logits>,
        want: Want,
        dec: &mut Decoder,
    ) -> Result<()> {
        let dead = stats.count.iter().filter(|&&c| c == 0).count();
        let mut report = Report::new(format!("Features of {label}"));
        report.add_section(
            "Top-activating contexts",
            format!(
                "SAE `{label}` ({} features at {hook}) over {} tokens: {dead} features never fire. Shown: {} {}, each with its top {} distinct contexts; the activating token is in [[ ]]. Coloured per-feature dashboards: dashboards/index.html in this artifact.",
                stats.count.len(),
                stats.n,
                details.len(),
                match matches {
                    Some((_, compared)) => format!(
                        "features of the match's reference, the best matched first and the worst matched last in `{compared}`"
                    ),
                    None if ctx.params.get("features").is_some_and(|v| !v.is_null()) => "chosen features".to_string(),
                    None => "live features from the most to the least frequent".to_string(),
                },
                want.top_k
            ),
        );
        let show = |list: &[LogitToken]| list.iter().map(|t| format!("{:?}", t.text)).collect::<Vec<_>>().join(" ");
        let mut columns = vec!["feature", "density", "max activation", "histogram"];
        if matches.is_some() {
            columns.extend(["matched feature", "similarity"]);
        }
        columns.extend(["promoted tokens", "suppressed tokens"]);
        let rows = details
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut row = vec![
                    Cell::Int(d.feature as i64),
                    Cell::Number(stats.density(d.feature)),
                    Cell::Number(d.max as f64),
                    Cell::Text(sparkline(&d.histogram)),
                ];
                if let Some((m, compared)) = matches {
                    let (mf, sim) = m.lookup(compared, d.feature).unwrap_or((-1, f64::NAN));
                    row.push(Cell::Int(mf));
                    row.push(Cell::Number(sim));
                }
                let (up, down) = logits.map(|l| (show(&l[i].0), show(&l[i].1))).unwrap_or_default();
                row.extend([Cell::Text(up), Cell::Text(down)]);
                row
            })
            .collect();
        let caption = match matches {
            Some((_, compared)) => format!(
                "Features (histogram of activations over (0, max]; matched feature and similarity in `{compared}`; tokens the decoder direction promotes and suppresses)"
            ),
            None => "Features (histogram of activations over (0, max]; tokens the decoder direction promotes and suppresses)".to_string(),
        };
        report.add_table(caption, &columns, rows)?;
        let mut cells = Vec::new();
        for d in details {
            for (rank, e) in d.top.iter().enumerate() {
                let text = format!(
                    "{}[[{}]]{}",
                    dec.span(&stats.tokens[e.lo..e.row]),
                    dec.span(&stats.tokens[e.row..e.row + 1]),
                    dec.span(&stats.tokens[e.row + 1..e.hi])
                );
                cells.push(vec![
                    Cell::Int(d.feature as i64),
                    Cell::Number(stats.density(d.feature)),
                    Cell::Int(rank as i64 + 1),
                    Cell::Number(e.activation as f64),
                    Cell::Text(text),
                ]);
            }
        }
        report.add_table("Examples", &["feature", "density", "rank", "activation", "context"], cells)?;
        ctx.write_output("report.html", report.to_html().as_bytes())
    }
}

/// `histograms.parquet`: each chosen feature's bins over (0, max].
fn histogram_table(details: &[Detail], bins: usize) -> Table {
    let mut hist = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in details {
        for (b, &c) in d.histogram.iter().enumerate() {
            let (lo, hi) = scan::bin_bounds(b, d.max, bins);
            hist.0.push(d.feature as i64);
            hist.1.push(b as i64);
            hist.2.push(lo as f64);
            hist.3.push(hi as f64);
            hist.4.push(c as i64);
        }
    }
    Table::default()
        .with("feature", Column::I64(hist.0))
        .with("bin", Column::I64(hist.1))
        .with("lo", Column::F64(hist.2))
        .with("hi", Column::F64(hist.3))
        .with("count", Column::I64(hist.4))
}

/// Distinct activating tokens of a feature's top examples, strongest first.
pub fn top_tokens(d: &Detail, stats: &Stats, dec: &mut Decoder, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in &d.top {
        let t = dec.token(stats.tokens[e.row]);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.truncate(n);
    out
}

/// The dashboards of one `inspect_features` run.
struct Dashboards<'a> {
    label: &'a str,
    hook: &'a str,
    stats: &'a Stats,
    matches: Option<&'a (MatchTable, String)>,
    logits: Option<&'a Logits>,
}

impl Dashboards<'_> {
    fn write(&self, ctx: &StageCtx, details: &[Detail], dec: &mut Decoder) -> Result<()> {
        let stats = self.stats;
        let mut rows = Vec::new();
        for (i, d) in details.iter().enumerate() {
            let f = d.feature;
            let mut facts = vec![
                Fact { label: "coder".into(), value: self.label.into() },
                Fact { label: "hook".into(), value: self.hook.into() },
                Fact {
                    label: "density".into(),
                    value: format!("{} ({} of {} tokens)", dashboard::short(stats.density(f)), stats.count[f], stats.n),
                },
                Fact { label: "mean activation".into(), value: dashboard::short(stats.mean(f)) },
                Fact { label: "max activation".into(), value: dashboard::short(d.max as f64) },
            ];
            let mut tables = Vec::new();
            let mut sim_cells = Vec::new();
            if let Some((m, compared)) = self.matches {
                let (mf, sim) = m.lookup(compared, f).unwrap_or((-1, f64::NAN));
                facts.push(Fact { label: format!("match in {compared}"), value: matched_text(mf, sim) });
                sim_cells = vec![if mf >= 0 { mf.to_string() } else { "none".into() }, dashboard::short(sim)];
                let rows = m
                    .by_step()
                    .iter()
                    .map(|(c, _, step)| {
                        let (mf, sim) = m.lookup(c, f).unwrap_or((-1, f64::NAN));
                        vec![
                            c.clone(),
                            step.map_or("–".into(), |s| s.to_string()),
                            if mf >= 0 { mf.to_string() } else { "none".into() },
                            dashboard::short(sim),
                        ]
                    })
                    .collect();
                tables.push((
                    "Matches in the compared coders".to_string(),
                    vec!["coder".into(), "step".into(), "matched feature".into(), "similarity".into()],
                    rows,
                ));
            }
            let total: u64 = d.intervals.iter().map(|iv| iv.count).sum();
            let page = FeaturePage {
                title: format!("{} · feature {f}", self.label),
                facts,
                histogram: d.histogram.clone(),
                hist_max: d.max,
                scale: d.max,
                top: d.top.iter().map(|e| dec.context(e, stats)).collect(),
                intervals: d
                    .intervals
                    .iter()
                    .rev()
                    .filter(|iv| iv.count > 0)
                    .map(|iv| IntervalSample {
                        lo: iv.lo,
                        hi: iv.hi,
                        share: iv.count as f64 / total.max(1) as f64,
                        contexts: iv.examples.iter().map(|e| dec.context(e, stats)).collect(),
                    })
                    .collect(),
                promoted: self.logits.map(|l| l[i].0.clone()).unwrap_or_default(),
                suppressed: self.logits.map(|l| l[i].1.clone()).unwrap_or_default(),
                tables,
                index_href: Some("index.html".into()),
            };
            let href = format!("feature_{f}.html");
            ctx.write_output(&format!("dashboards/{href}"), dashboard::feature_page(&page).as_bytes())?;
            let tokens = top_tokens(d, stats, dec, 8);
            let shown: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
            let mut cells = vec![
                f.to_string(),
                dashboard::short(stats.density(f)),
                dashboard::short(d.max as f64),
                dashboard::short(stats.mean(f)),
                shown.join(" "),
            ];
            cells.extend(sim_cells);
            rows.push(IndexRow { href, cells, search: tokens.join(" ") });
        }
        let mut columns: Vec<String> =
            ["feature", "density", "max activation", "mean activation", "top tokens"].map(String::from).to_vec();
        if let Some((_, compared)) = self.matches {
            columns.push(format!("matched in {compared}"));
            columns.push("similarity".into());
        }
        let intro = format!(
            "{} features of `{}` ({} features at {}) over {} tokens. Click a column to sort; the box filters by feature id or token text.",
            details.len(),
            self.label,
            stats.count.len(),
            self.hook,
            stats.n
        );
        let html = dashboard::index_page(&format!("Features of {}", self.label), &intro, &columns, &rows);
        ctx.write_output("dashboards/index.html", html.as_bytes())
    }
}

/// "feature 12, similarity 0.83", or "unmatched".
pub fn matched_text(feature: i64, similarity: f64) -> String {
    if feature < 0 {
        "unmatched".into()
    } else {
        format!("feature {feature}, similarity {}", dashboard::short(similarity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_tokens_rank_the_decoder_direction_through_the_unembedding() {
        // d_model 2, vocab 4: effect = [1*1 + 2*0, 1*-1 + 2*1, 1*0 + 2*-1, 1*3 + 2*0] = [1, 1, -2, 3]
        let w_u = [1.0, -1.0, 0.0, 3.0, 0.0, 1.0, -1.0, 0.0];
        let (up, down) = logit_tokens(&[1.0, 2.0], &w_u, 4, 2);
        assert_eq!(up, vec![(3, 3.0), (0, 1.0)]);
        assert_eq!(down, vec![(2, -2.0), (1, 1.0)]);
    }

    #[test]
    fn spread_skips_rare_features_while_enough_fire_often() {
        // Counts by feature: 0 is dead, 5 and 6 fire once.
        let count = [0, 50, 40, 30, 20, 1, 1, 10];
        assert_eq!(spread(&count, 3, 10), vec![1, 3, 7]);
        assert_eq!(spread(&count, 3, 1), vec![1, 4, 6]);
        // Too few fire 10 times for 6 pages: every live feature is a candidate.
        assert_eq!(spread(&count, 6, 10), vec![1, 2, 3, 4, 7, 6]);
        assert_eq!(spread(&count, 9, 10).len(), 7, "never a dead feature");
    }

    #[test]
    fn sparkline_heights() {
        assert_eq!(sparkline(&[1, 1, 1, 2]), "▅▅▅█");
        assert_eq!(sparkline(&[0, 4, 1]), " █▃");
    }
}
