//! `inspect_features`: what do an SAE's features respond to? For chosen
//! features — a spread of live features from the most to the least frequent, a
//! given list, or the best and worst matched features of a `match_features`
//! result — the top-activating tokens of an activation store with their text
//! context, the histogram of their activations, and, given the model, the
//! tokens whose logits each feature's decoder direction raises and lowers most
//! (`W_dec[f] · W_U`, without the final LayerNorm, as feature dashboards do).
//!
//! Outputs: `features.parquet` (every feature: density, mean and max
//! activation), `examples.parquet` (chosen features × top examples, with left
//! and right context decoded by the tokenizer), `histograms.parquet` (chosen
//! features × activation bins), `logits.parquet` (chosen features × top
//! positive and negative tokens; only with `model`) and `report.html`.

use super::table::{Column, Table, read_parquet, write_parquet};
use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, Params, StageCtx, model_params};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_data::{ActivationReader, Tokenizer};
use saepipe_report::{Cell, Report};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The `inspect_features` op: top-activating contexts of chosen SAE features.
pub struct InspectFeaturesOp;

/// Per-feature statistics and the current top examples (min-heap of (activation, row)).
struct FeatureScan {
    count: Vec<u64>,
    sum: Vec<f64>,
    max: Vec<f32>,
    top: Vec<BinaryHeap<Reverse<(OrdF32, usize)>>>,
}

/// An f32 under IEEE total order, so activations can sit in a heap.
#[derive(Clone, Copy)]
struct OrdF32(f32);
impl PartialEq for OrdF32 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl FeatureScan {
    fn new(d_sae: usize) -> Self {
        FeatureScan {
            count: vec![0; d_sae],
            sum: vec![0.0; d_sae],
            max: vec![0.0; d_sae],
            top: (0..d_sae).map(|_| BinaryHeap::new()).collect(),
        }
    }
    fn add(&mut self, feature: usize, value: f32, row: usize, keep: usize) {
        self.count[feature] += 1;
        self.sum[feature] += value as f64;
        self.max[feature] = self.max[feature].max(value);
        let heap = &mut self.top[feature];
        if heap.len() < keep {
            heap.push(Reverse((OrdF32(value), row)));
        } else if heap.peek().is_some_and(|Reverse((v, _))| value > v.0) {
            heap.pop();
            heap.push(Reverse((OrdF32(value), row)));
        }
    }
}

/// Live features spread evenly over the density ranking, most frequent first.
fn spread(count: &[u64], n: usize) -> Vec<usize> {
    let mut live: Vec<usize> = (0..count.len()).filter(|&f| count[f] > 0).collect();
    live.sort_by_key(|&f| (Reverse(count[f]), f));
    if live.len() <= n {
        return live;
    }
    (0..n).map(|i| live[i * (live.len() - 1) / (n - 1).max(1)]).collect()
}

/// The best and the worst matched live reference features of one compared SAE
/// in a `match_features` result (`pairs.parquet`), half of `n` each.
fn from_matches(dir: &std::path::Path, sae: &str, compared: Option<&str>, n: usize) -> Result<Vec<usize>> {
    let pairs = read_parquet(&dir.join("pairs.parquet"))?;
    let labels = pairs.strings("coder")?;
    let compared = match compared {
        Some(c) => c.to_string(),
        None => labels.first().cloned().context("the match result has no pairs")?,
    };
    let (features, sims) = (pairs.f64("reference_feature")?, pairs.f64("similarity")?);
    let mut live: Vec<(f64, usize)> = (0..pairs.rows())
        .filter(|&i| labels[i] == compared && sims[i].is_finite())
        .map(|i| (sims[i], features[i] as usize))
        .collect();
    if live.is_empty() {
        let known: std::collections::BTreeSet<&String> = labels.iter().collect();
        bail!(
            "parameter `compared`: the match result has no live pairs for `{compared}` (it compares {known:?}; `{sae}` must be its reference)"
        );
    }
    live.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let half = (n / 2).max(1);
    let mut chosen: Vec<usize> = live.iter().take(half).map(|x| x.1).collect();
    chosen.extend(
        live.iter().rev().take(n - half.min(n)).map(|x| x.1).filter(|f| !chosen.contains(f)).collect::<Vec<_>>(),
    );
    Ok(chosen)
}

/// Histogram of a feature's nonzero activations: `bins` equal bins over (0, max].
fn histogram(values: &[f32], bins: usize) -> (f32, Vec<u64>) {
    let max = values.iter().copied().fold(0f32, f32::max);
    let mut counts = vec![0u64; bins];
    if max > 0.0 {
        for &v in values {
            counts[(((v / max) * bins as f32) as usize).min(bins - 1)] += 1;
        }
    }
    (max, counts)
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

fn chosen_features(p: &Params, count: &[u64], matches: Option<&std::path::Path>, sae: &str) -> Result<Vec<usize>> {
    if let Some(dir) = matches {
        let chosen = from_matches(dir, sae, p.opt_str("compared"), p.usize("n_features")?)?;
        if let Some(&f) = chosen.iter().find(|&&f| f >= count.len()) {
            bail!(
                "parameter `matches`: feature {f} does not exist in `{sae}` ({} features): is it the match's reference SAE?",
                count.len()
            );
        }
        return Ok(chosen);
    }
    match p.get("features") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| {
                let f = v.as_u64().context("parameter `features` must be a list of feature indices")? as usize;
                if f >= count.len() {
                    bail!("parameter `features`: feature {f} does not exist (the SAE has {} features)", count.len());
                }
                Ok(f)
            })
            .collect(),
        _ => Ok(spread(count, p.usize("n_features")?)),
    }
}

impl Op for InspectFeaturesOp {
    fn name(&self) -> &'static str {
        "inspect_features"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "top-activating token contexts of an SAE's features (Parquet + HTML)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["features.parquet", "examples.parquet", "histograms.parquet", "logits.parquet", "report.html"]
    }
    fn streamable_inputs(&self) -> &'static [&'static str] {
        &["activations"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::required("sae", Artifact, "a train_sae stage"),
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
            ParamSpec::maybe("features", List(Box::new(Int)), "feature indices to show instead").min(0),
            ParamSpec::maybe(
                "matches",
                Artifact,
                "a match_features stage whose reference is this SAE: show its best and worst matched features instead",
            ),
            ParamSpec::maybe("compared", Str, "with `matches`: the compared SAE (default: the first)"),
            model_params::optional_model(
                "model reference: adds the tokens each feature's decoder direction promotes and suppresses (W_dec·W_U)",
            ),
            ParamSpec::optional("logit_tokens", Int, json!(8), "promoted and suppressed tokens listed per feature")
                .min(0),
            ParamSpec::optional("histogram_bins", Int, json!(16), "bins of each shown feature's activation histogram")
                .range(1, 10_000),
            ParamSpec::optional("top_k", Int, json!(6), "examples per feature").min(1),
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
        let hook = coder.metadata.hook_name.clone().with_context(|| format!("SAE `{label}` does not name its hook"))?;
        let tokenizer = Tokenizer::from_file(&super::tokenize::tokenizer_path(&p, &ctx.base_dir)?)?;
        let store = ctx.input("activations")?.to_path_buf();
        let reader = ActivationReader::from_source(ctx.store_source(&store), &[hook.as_str()])
            .with_context(|| format!("SAE `{label}` reads hook `{hook}`"))?;
        if reader.widths()[0] != coder.d_in {
            bail!(
                "SAE `{label}` has d_in {} but `{hook}` in {} has width {}",
                coder.d_in,
                store.display(),
                reader.widths()[0]
            );
        }
        let n = p.usize("n_tokens")?.min(reader.total_rows() as usize);
        let keep = p.usize("top_k")?.max(1);
        let mut scan = FeatureScan::new(coder.d_sae);
        // Every (feature, activation) of the scan, for the histograms of the chosen features.
        let mut fired: Vec<(u32, f32)> = Vec::new();
        let (mut seq, mut tokens) = (Vec::with_capacity(n), Vec::with_capacity(n));
        ctx.progress.set_total(n as u64, "tokens");
        for b in reader.sequential().batches(4096) {
            if ctx.cancelled() {
                return Err(super::StageStop::Interrupted.into());
            }
            let b = b?;
            let take = b.rows.min(n - tokens.len());
            let acts = coder.encode(&b.hooks[0][..take * coder.d_in], take)?;
            for r in 0..take {
                let (idx, val) = acts.row(r);
                for (&f, &v) in idx.iter().zip(val) {
                    // Extra candidates: identical prefixes give identical activations,
                    // and duplicates are dropped when rendering.
                    scan.add(f as usize, v, tokens.len() + r, 4 * keep);
                    fired.push((f, v));
                }
            }
            seq.extend_from_slice(&b.seq[..take]);
            tokens.extend_from_slice(&b.token[..take]);
            ctx.progress.set_position(tokens.len() as u64);
            if tokens.len() == n {
                break;
            }
        }
        let density: Vec<f64> = scan.count.iter().map(|&c| c as f64 / n.max(1) as f64).collect();
        let mean: Vec<f64> = (0..coder.d_sae)
            .map(|f| if scan.count[f] > 0 { scan.sum[f] / scan.count[f] as f64 } else { 0.0 })
            .collect();
        write_parquet(
            &Table::default()
                .with("feature", Column::I64((0..coder.d_sae as i64).collect()))
                .with("density", Column::F64(density.clone()))
                .with("mean_activation", Column::F64(mean))
                .with("max_activation", Column::F64(scan.max.iter().map(|&x| x as f64).collect())),
            &ctx.out_dir.join("features.parquet"),
        )?;

        let (left_n, right_n) = (p.usize("context_left")?, p.usize("context_right")?);
        let decode = |ids: &[u32]| tokenizer.decode(ids).unwrap_or_default();
        let mut ex = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut cells = Vec::new();
        let matches = ctx.inputs.get("matches").and_then(|v| v.first()).cloned();
        let features = chosen_features(&p, &scan.count, matches.as_deref(), &label)?;
        for &f in &features {
            let mut top: Vec<(f32, usize)> = scan.top[f].iter().map(|Reverse((v, r))| (v.0, *r)).collect();
            top.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut seen = std::collections::HashSet::new();
            let mut rank = 0;
            for (v, r) in top {
                // Context stays inside the row's own sequence.
                let lo = (r.saturating_sub(left_n)..r).find(|&i| seq[i] == seq[r]).unwrap_or(r);
                let hi = (r + 1..(r + 1 + right_n).min(tokens.len()))
                    .take_while(|&i| seq[i] == seq[r])
                    .last()
                    .map_or(r + 1, |i| i + 1);
                let (left, tok, right) =
                    (decode(&tokens[lo..r]), decode(&tokens[r..r + 1]), decode(&tokens[r + 1..hi]));
                if rank == keep || !seen.insert((left.clone(), tok.clone(), right.clone())) {
                    continue;
                }
                rank += 1;
                cells.push(vec![
                    Cell::Int(f as i64),
                    Cell::Number(density[f]),
                    Cell::Int(rank as i64),
                    Cell::Number(v as f64),
                    Cell::Text(format!("{left}[[{tok}]]{right}")),
                ]);
                ex.0.push(f as i64);
                ex.1.push(rank as i64);
                ex.2.push(v as f64);
                ex.3.push(seq[r] as i64);
                ex.4.push(tok);
                ex.5.push(left);
                ex.6.push(right);
            }
        }
        write_parquet(
            &Table::default()
                .with("feature", Column::I64(ex.0))
                .with("rank", Column::I64(ex.1))
                .with("activation", Column::F64(ex.2))
                .with("seq", Column::I64(ex.3))
                .with("token", Column::Str(ex.4))
                .with("left_context", Column::Str(ex.5))
                .with("right_context", Column::Str(ex.6)),
            &ctx.out_dir.join("examples.parquet"),
        )?;

        let bins = p.usize("histogram_bins")?.max(1);
        let mut per_feature: std::collections::HashMap<u32, Vec<f32>> =
            features.iter().map(|&f| (f as u32, Vec::new())).collect();
        for (f, v) in fired {
            if let Some(vals) = per_feature.get_mut(&f) {
                vals.push(v);
            }
        }
        let mut hist = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut sparklines = Vec::new();
        for &f in &features {
            let (max, counts) = histogram(&per_feature[&(f as u32)], bins);
            for (b, &c) in counts.iter().enumerate() {
                hist.0.push(f as i64);
                hist.1.push(b as i64);
                hist.2.push(max as f64 * b as f64 / bins as f64);
                hist.3.push(max as f64 * (b + 1) as f64 / bins as f64);
                hist.4.push(c as i64);
            }
            sparklines.push(sparkline(&counts));
        }
        write_parquet(
            &Table::default()
                .with("feature", Column::I64(hist.0))
                .with("bin", Column::I64(hist.1))
                .with("lo", Column::F64(hist.2))
                .with("hi", Column::F64(hist.3))
                .with("count", Column::I64(hist.4)),
            &ctx.out_dir.join("histograms.parquet"),
        )?;

        let mut logit_cells: Vec<(String, String)> = vec![(String::new(), String::new()); features.len()];
        if let Some(spec) = p.opt_str("model") {
            let (_, model) = model_params::load(&p, &ctx.base_dir)?;
            let (d_model, vocab) = (model.cfg.d_model, model.cfg.d_vocab);
            if coder.d_out != d_model {
                bail!(
                    "parameter `model`: SAE `{label}` writes {} dimensions but the residual stream of {spec} has {d_model}; logit effects need a coder whose output lives in the residual stream",
                    coder.d_out
                );
            }
            let n_tokens_logit = p.usize("logit_tokens")?.max(1);
            let mut lg = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (i, &f) in features.iter().enumerate() {
                let (up, down) = logit_tokens(
                    &coder.w_dec[f * d_model..(f + 1) * d_model],
                    &model.params.w_u,
                    vocab,
                    n_tokens_logit,
                );
                for (direction, list) in [("positive", &up), ("negative", &down)] {
                    for (rank, &(t, v)) in list.iter().enumerate() {
                        lg.0.push(f as i64);
                        lg.1.push(direction.to_string());
                        lg.2.push(rank as i64 + 1);
                        lg.3.push(t as i64);
                        lg.4.push(decode(&[t]));
                        lg.5.push(v as f64);
                    }
                }
                let show = |list: &[(u32, f32)]| {
                    list.iter().map(|&(t, _)| format!("{:?}", decode(&[t]))).collect::<Vec<_>>().join(" ")
                };
                logit_cells[i] = (show(&up), show(&down));
            }
            write_parquet(
                &Table::default()
                    .with("feature", Column::I64(lg.0))
                    .with("direction", Column::Str(lg.1))
                    .with("rank", Column::I64(lg.2))
                    .with("token_id", Column::I64(lg.3))
                    .with("token", Column::Str(lg.4))
                    .with("logit_effect", Column::F64(lg.5)),
                &ctx.out_dir.join("logits.parquet"),
            )?;
        }

        let dead = scan.count.iter().filter(|&&c| c == 0).count();
        let mut report = Report::new(format!("Features of {label}"));
        report.add_section(
            "Top-activating contexts",
            format!(
                "SAE `{label}` ({} features at {hook}) over {n} tokens: {dead} features never fire. Shown: {} {}, each with its top {keep} distinct contexts; the activating token is in [[ ]].",
                coder.d_sae,
                features.len(),
                match (&matches, p.get("features")) {
                    (Some(_), _) => format!("features, the best matched first and the worst matched last against `{}` in the match result", p.opt_str("compared").unwrap_or("the first compared SAE")),
                    (None, Some(_)) => "chosen features".to_string(),
                    (None, None) => "live features from the most to the least frequent".to_string(),
                }
            ),
        );
        let summary_cells = features
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                vec![
                    Cell::Int(f as i64),
                    Cell::Number(density[f]),
                    Cell::Number(scan.max[f] as f64),
                    Cell::Text(sparklines[i].clone()),
                    Cell::Text(logit_cells[i].0.clone()),
                    Cell::Text(logit_cells[i].1.clone()),
                ]
            })
            .collect();
        report.add_table(
            "Features (histogram of activations over (0, max]; tokens the decoder direction promotes and suppresses)",
            &["feature", "density", "max activation", "histogram", "promoted tokens", "suppressed tokens"],
            summary_cells,
        )?;
        report.add_table("Examples", &["feature", "density", "rank", "activation", "context"], cells)?;
        ctx.write_output("report.html", report.to_html().as_bytes())?;
        Ok(json!({ "sae": label, "tokens": n, "dead_features": dead, "features_shown": features.len() }))
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
    fn histogram_bins_cover_zero_to_max() {
        let (max, counts) = histogram(&[0.5, 1.0, 2.0, 4.0, 4.0], 4);
        assert_eq!(max, 4.0);
        assert_eq!(counts, vec![1, 1, 1, 2]); // bins [0,1) [1,2) [2,3) [3,4]
        assert_eq!(sparkline(&counts), "▅▅▅█");
        assert_eq!(sparkline(&[0, 4, 1]), " █▃");
        assert_eq!(histogram(&[], 3).1, vec![0, 0, 0]);
    }
}
