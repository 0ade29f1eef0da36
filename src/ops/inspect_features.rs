//! `inspect_features`: what do an SAE's features respond to? For a spread of
//! live features (from the most to the least frequent, or a given list) the
//! top-activating tokens of an activation store, each with its text context.
//!
//! Outputs: `features.parquet` (every feature: density, mean and max
//! activation), `examples.parquet` (chosen features × top examples, with left
//! and right context decoded by the model's tokenizer) and `report.html`.

use super::table::{Column, Table};
use super::train_sae::{coder_label, load_trained_coder};
use super::{Op, Params, StageCtx};
use crate::pipeline::schema::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_data::{ActivationReader, Tokenizer};
use saepipe_report::{Cell, Report};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub struct InspectFeaturesOp;

/// Per-feature statistics and the current top examples (min-heap of (activation, row)).
struct FeatureScan {
    count: Vec<u64>,
    sum: Vec<f64>,
    max: Vec<f32>,
    top: Vec<BinaryHeap<Reverse<(OrdF32, usize)>>>,
}

#[derive(Clone, Copy, PartialEq, PartialOrd)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl FeatureScan {
    fn new(d_sae: usize) -> Self {
        FeatureScan { count: vec![0; d_sae], sum: vec![0.0; d_sae], max: vec![0.0; d_sae], top: (0..d_sae).map(|_| BinaryHeap::new()).collect() }
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

fn chosen_features(p: &Params, count: &[u64]) -> Result<Vec<usize>> {
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
        1
    }
    fn summary(&self) -> &'static str {
        "top-activating token contexts of an SAE's features (Parquet + HTML)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["features.parquet", "examples.parquet", "report.html"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        use ParamType::*;
        vec![
            ParamSpec::required("sae", Artifact, "a train_sae stage"),
            ParamSpec::required("activations", Artifact, "activation store holding the SAE's input hook"),
            ParamSpec::required("tokenizer", Str, "tokenizer.json, or a model reference whose tokenizer decodes the tokens"),
            ParamSpec::optional("n_tokens", Int, json!(65536), "tokens scanned (the first rows of the store)"),
            ParamSpec::optional("n_features", Int, json!(24), "features shown, spread from the most to the least frequent"),
            ParamSpec::maybe("features", List(Box::new(Int)), "feature indices to show instead"),
            ParamSpec::optional("top_k", Int, json!(6), "examples per feature"),
            ParamSpec::optional("context_left", Int, json!(24), "tokens shown before the activating token"),
            ParamSpec::optional("context_right", Int, json!(4), "tokens shown after it"),
        ]
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let sae_dir = ctx.input("sae")?.to_path_buf();
        let coder = load_trained_coder(&sae_dir)?;
        let label = coder_label(&coder, &sae_dir);
        let hook = coder.metadata.hook_name.clone().with_context(|| format!("SAE `{label}` does not name its hook"))?;
        let tokenizer = Tokenizer::from_file(&super::tokenize::tokenizer_path(&p, &ctx.base_dir)?)?;
        let store = ctx.input("activations")?.to_path_buf();
        let reader = ActivationReader::open(&store, &[hook.as_str()]).with_context(|| format!("SAE `{label}` reads hook `{hook}`"))?;
        if reader.widths()[0] != coder.d_in {
            bail!("SAE `{label}` has d_in {} but `{hook}` in {} has width {}", coder.d_in, store.display(), reader.widths()[0]);
        }
        let n = p.usize("n_tokens")?.min(reader.total_rows() as usize);
        let keep = p.usize("top_k")?.max(1);
        let mut scan = FeatureScan::new(coder.d_sae);
        let (mut seq, mut tokens) = (Vec::with_capacity(n), Vec::with_capacity(n));
        ctx.progress.set_total(n as u64, "tokens");
        for b in reader.sequential().batches(4096) {
            let b = b?;
            let take = b.rows.min(n - tokens.len());
            let acts = coder.encode(&b.hooks[0][..take * coder.d_in], take)?;
            for r in 0..take {
                let (idx, val) = acts.row(r);
                for (&f, &v) in idx.iter().zip(val) {
                    // Extra candidates: identical prefixes give identical activations,
                    // and duplicates are dropped when rendering.
                    scan.add(f as usize, v, tokens.len() + r, 4 * keep);
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
        let mean: Vec<f64> = (0..coder.d_sae).map(|f| if scan.count[f] > 0 { scan.sum[f] / scan.count[f] as f64 } else { 0.0 }).collect();
        Table::default()
            .with("feature", Column::I64((0..coder.d_sae as i64).collect()))
            .with("density", Column::F64(density.clone()))
            .with("mean_activation", Column::F64(mean))
            .with("max_activation", Column::F64(scan.max.iter().map(|&x| x as f64).collect()))
            .write_parquet(&ctx.out_dir.join("features.parquet"))?;

        let (left_n, right_n) = (p.usize("context_left")?, p.usize("context_right")?);
        let decode = |ids: &[u32]| tokenizer.decode(ids).unwrap_or_default();
        let mut ex = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut cells = Vec::new();
        let features = chosen_features(&p, &scan.count)?;
        for &f in &features {
            let mut top: Vec<(f32, usize)> = scan.top[f].iter().map(|Reverse((v, r))| (v.0, *r)).collect();
            top.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut seen = std::collections::HashSet::new();
            let mut rank = 0;
            for (v, r) in top {
                // Context stays inside the row's own sequence.
                let lo = (r.saturating_sub(left_n)..r).find(|&i| seq[i] == seq[r]).unwrap_or(r);
                let hi = (r + 1..(r + 1 + right_n).min(tokens.len())).take_while(|&i| seq[i] == seq[r]).last().map_or(r + 1, |i| i + 1);
                let (left, tok, right) = (decode(&tokens[lo..r]), decode(&tokens[r..r + 1]), decode(&tokens[r + 1..hi]));
                if rank == keep || !seen.insert((left.clone(), tok.clone(), right.clone())) {
                    continue;
                }
                rank += 1;
                cells.push(vec![Cell::Int(f as i64), Cell::Number(density[f]), Cell::Int(rank as i64), Cell::Number(v as f64), Cell::Text(format!("{left}[[{tok}]]{right}"))]);
                ex.0.push(f as i64);
                ex.1.push(rank as i64);
                ex.2.push(v as f64);
                ex.3.push(seq[r] as i64);
                ex.4.push(tok);
                ex.5.push(left);
                ex.6.push(right);
            }
        }
        Table::default()
            .with("feature", Column::I64(ex.0))
            .with("rank", Column::I64(ex.1))
            .with("activation", Column::F64(ex.2))
            .with("seq", Column::I64(ex.3))
            .with("token", Column::Str(ex.4))
            .with("left_context", Column::Str(ex.5))
            .with("right_context", Column::Str(ex.6))
            .write_parquet(&ctx.out_dir.join("examples.parquet"))?;

        let dead = scan.count.iter().filter(|&&c| c == 0).count();
        let mut report = Report::new(format!("Features of {label}"));
        report.add_section(
            "Top-activating contexts",
            format!(
                "SAE `{label}` ({} features at {hook}) over {n} tokens: {dead} features never fire. Shown: {} live features from the most to the least frequent, each with its top {keep} distinct contexts; the activating token is in [[ ]].",
                coder.d_sae,
                features.len()
            ),
        );
        report.add_table("Examples", &["feature", "density", "rank", "activation", "context"], cells)?;
        ctx.write_output("report.html", report.to_html().as_bytes())?;
        Ok(json!({ "sae": label, "tokens": n, "dead_features": dead, "features_shown": features.len() }))
    }
}
