//! Glue shared by `inspect_features` and `feature_journey`: a match result's
//! tables, the example and context tables, and scan results turned into the
//! dashboards' data (token texts with activations).

use super::scan::{Detail, Example, Stats};
use crate::ops::table::{Column, Table, read_parquet};
use anyhow::{Context as _, Result, bail};
use saepipe_data::Tokenizer;
use saepipe_report::dashboard::{Context, Token};
use std::collections::HashMap;
use std::path::Path;

/// Token texts, each decoded once.
pub struct Decoder<'a> {
    tokenizer: &'a Tokenizer,
    cache: HashMap<u32, String>,
}

impl<'a> Decoder<'a> {
    /// A decoder over `tokenizer`.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Decoder { tokenizer, cache: HashMap::new() }
    }
    /// One token's text on its own.
    pub fn token(&mut self, id: u32) -> String {
        let t = self.tokenizer;
        self.cache.entry(id).or_insert_with(|| t.decode(&[id]).unwrap_or_default()).clone()
    }
    /// A span of tokens decoded together.
    pub fn span(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids).unwrap_or_default()
    }
    /// An example's window as coloured tokens.
    pub fn context(&mut self, e: &Example, stats: &Stats) -> Context {
        let tokens =
            (e.lo..e.hi).zip(&e.acts).map(|(r, &act)| Token { text: self.token(stats.tokens[r]), act }).collect();
        Context { tokens, focus: e.row - e.lo }
    }
}

/// The tables of a `match_features` result.
pub struct MatchTable {
    /// `pairs.parquet`: compared coder of each row.
    pub coder: Vec<String>,
    /// Reference feature of each row.
    pub reference_feature: Vec<i64>,
    /// Matched feature (−1 if none).
    pub matched_feature: Vec<i64>,
    /// Similarity (NaN where unmatched).
    pub similarity: Vec<f64>,
    /// Compared coders in `summary.parquet` order, with their model and step.
    pub compared: Vec<(String, String, Option<i64>)>,
    /// (coder, reference feature) → row of `pairs`.
    index: HashMap<(String, i64), usize>,
}

impl MatchTable {
    /// Reads `pairs.parquet` and `summary.parquet` of a match_features artifact.
    pub fn read(dir: &Path) -> Result<MatchTable> {
        let pairs = read_parquet(&dir.join("pairs.parquet"))
            .with_context(|| format!("parameter `matches`: {} is not a match_features result", dir.display()))?;
        let summary = read_parquet(&dir.join("summary.parquet"))?;
        let coder = pairs.strings("coder")?;
        let reference_feature: Vec<i64> = pairs.f64("reference_feature")?.iter().map(|&x| x as i64).collect();
        let index = (0..pairs.rows()).map(|i| ((coder[i].clone(), reference_feature[i]), i)).collect();
        let steps = summary.f64("step")?;
        let compared = summary
            .strings("coder")?
            .into_iter()
            .zip(summary.strings("model")?)
            .zip(steps)
            .map(|((c, m), s)| (c, m, s.is_finite().then_some(s as i64)))
            .collect();
        Ok(MatchTable {
            matched_feature: pairs.f64("matched_feature")?.iter().map(|&x| x as i64).collect(),
            similarity: pairs.f64("similarity")?,
            coder,
            reference_feature,
            compared,
            index,
        })
    }
    /// The (matched feature, similarity) of reference feature `f` in `coder`.
    pub fn lookup(&self, coder: &str, f: usize) -> Option<(i64, f64)> {
        let &i = self.index.get(&(coder.to_string(), f as i64))?;
        Some((self.matched_feature[i], self.similarity[i]))
    }
    /// Compared coders ordered by step (coders without a step last, in table order).
    pub fn by_step(&self) -> Vec<(String, String, Option<i64>)> {
        let mut v = self.compared.clone();
        v.sort_by_key(|(_, _, s)| (s.is_none(), *s));
        v
    }
    /// Live reference features ranked by their similarity in `coder`, best first.
    pub fn ranked(&self, coder: &str) -> Vec<(usize, f64)> {
        let mut live: Vec<(usize, f64)> = (0..self.coder.len())
            .filter(|&i| self.coder[i] == coder && self.similarity[i].is_finite())
            .map(|i| (self.reference_feature[i] as usize, self.similarity[i]))
            .collect();
        live.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        live
    }
    /// The compared coder named `name` (or the first, or the earliest by step), checked.
    pub fn compared_coder(&self, name: Option<&str>, param: &str, earliest: bool) -> Result<String> {
        let known: Vec<&str> = self.compared.iter().map(|c| c.0.as_str()).collect();
        match name {
            Some(n) if known.contains(&n) => Ok(n.to_string()),
            Some(n) => bail!("parameter `{param}`: the match result compares no coder `{n}` (it compares {known:?})"),
            None if earliest => {
                self.by_step().first().map(|c| c.0.clone()).context("the match result compares no coder")
            }
            None => known.first().map(|c| c.to_string()).context("the match result compares no coder"),
        }
    }
}

/// The artifact key of an input directory, or of the artifact it is a sub-path of.
fn artifact_of(dir: &Path) -> Option<String> {
    dir.ancestors().take(3).find_map(|d| saepipe_cache::Manifest::read_in(d).ok().flatten()).map(|m| m.key.to_string())
}

/// Fails unless the match in `matches_dir` has the SAE in `sae_dir` as its
/// reference (checked through the artifacts' manifests when both have one),
/// and unless every reference feature of the match exists in it.
pub fn check_reference(
    matches_dir: &Path,
    sae_dir: &Path,
    label: &str,
    param: &str,
    m: &MatchTable,
    d_sae: usize,
) -> Result<()> {
    let reference = saepipe_cache::Manifest::read_in(matches_dir)
        .ok()
        .flatten()
        .and_then(|man| man.inputs.get("reference").map(|k| k.to_string()));
    if let (Some(want), Some(have)) = (reference, artifact_of(sae_dir))
        && want != have
    {
        bail!(
            "parameter `matches`: the match's reference SAE is artifact {}, but `{param}` is `{label}` (artifact {}): give the match's reference SAE",
            &want[..12.min(want.len())],
            &have[..12.min(have.len())]
        );
    }
    if let Some(&f) = m.reference_feature.iter().find(|&&f| f < 0 || f as usize >= d_sae) {
        bail!(
            "parameter `matches`: reference feature {f} does not exist in `{label}` ({d_sae} features): is it the match's reference SAE?"
        );
    }
    Ok(())
}

/// Checks a `features` list against the coder's size.
pub fn feature_list(ids: &[serde_json::Value], d_sae: usize, param: &str) -> Result<Vec<usize>> {
    ids.iter()
        .map(|v| {
            let f =
                v.as_u64().with_context(|| format!("parameter `{param}` must be a list of feature indices"))? as usize;
            if f >= d_sae {
                bail!(
                    "parameter `{param}`: feature {f} does not exist (the SAE has {d_sae} features, 0..{})",
                    d_sae - 1
                );
            }
            Ok(f)
        })
        .collect()
}

/// Rows of `examples.parquet` and `contexts.parquet`.
#[derive(Default)]
pub struct ExampleTables {
    with_reference: bool,
    example: Vec<i64>,
    coder: Vec<String>,
    reference_feature: Vec<i64>,
    feature: Vec<i64>,
    sample: Vec<String>,
    interval: Vec<i64>,
    interval_lo: Vec<f64>,
    interval_hi: Vec<f64>,
    rank: Vec<i64>,
    activation: Vec<f64>,
    row: Vec<i64>,
    seq: Vec<i64>,
    token: Vec<String>,
    left: Vec<String>,
    right: Vec<String>,
    // contexts.parquet
    c_example: Vec<i64>,
    c_feature: Vec<i64>,
    c_offset: Vec<i64>,
    c_token_id: Vec<i64>,
    c_token: Vec<String>,
    c_activation: Vec<f64>,
}

impl ExampleTables {
    /// Tables that also carry the followed `reference_feature` (journeys).
    pub fn with_reference() -> Self {
        ExampleTables { with_reference: true, ..Default::default() }
    }
    /// Adds every example of `d` (top, then interval samples) for `coder`.
    pub fn add(&mut self, coder: &str, reference: Option<usize>, d: &Detail, stats: &Stats, dec: &mut Decoder) {
        let mut groups: Vec<(&str, i64, f64, f64, &Example, usize)> =
            d.top.iter().enumerate().map(|(k, e)| ("top", -1, f64::NAN, f64::NAN, e, k)).collect();
        for (j, iv) in d.intervals.iter().enumerate() {
            let (lo, hi) = (iv.lo as f64, iv.hi as f64);
            groups.extend(iv.examples.iter().enumerate().map(|(k, e)| ("interval", j as i64, lo, hi, e, k)));
        }
        for (sample, interval, lo, hi, e, k) in groups {
            let id = self.example.len() as i64;
            self.example.push(id);
            self.coder.push(coder.to_string());
            self.reference_feature.push(reference.map_or(-1, |r| r as i64));
            self.feature.push(d.feature as i64);
            self.sample.push(sample.to_string());
            self.interval.push(interval);
            self.interval_lo.push(lo);
            self.interval_hi.push(hi);
            self.rank.push(k as i64 + 1);
            self.activation.push(e.activation as f64);
            self.row.push(e.row as i64);
            self.seq.push(stats.seq[e.row] as i64);
            self.token.push(dec.span(&stats.tokens[e.row..e.row + 1]));
            self.left.push(dec.span(&stats.tokens[e.lo..e.row]));
            self.right.push(dec.span(&stats.tokens[e.row + 1..e.hi]));
            for (r, &a) in (e.lo..e.hi).zip(&e.acts) {
                self.c_example.push(id);
                self.c_feature.push(d.feature as i64);
                self.c_offset.push(r as i64 - e.row as i64);
                self.c_token_id.push(stats.tokens[r] as i64);
                self.c_token.push(dec.token(stats.tokens[r]));
                self.c_activation.push(a as f64);
            }
        }
    }
    /// `examples.parquet` and `contexts.parquet`.
    pub fn into_tables(self) -> (Table, Table) {
        let mut ex = Table::default().with("example", Column::I64(self.example)).with("coder", Column::Str(self.coder));
        if self.with_reference {
            ex = ex.with("reference_feature", Column::I64(self.reference_feature));
        }
        let ex = ex
            .with("feature", Column::I64(self.feature))
            .with("sample", Column::Str(self.sample))
            .with("interval", Column::I64(self.interval))
            .with("interval_lo", Column::F64(self.interval_lo))
            .with("interval_hi", Column::F64(self.interval_hi))
            .with("rank", Column::I64(self.rank))
            .with("activation", Column::F64(self.activation))
            .with("row", Column::I64(self.row))
            .with("seq", Column::I64(self.seq))
            .with("token", Column::Str(self.token))
            .with("left_context", Column::Str(self.left))
            .with("right_context", Column::Str(self.right));
        let cx = Table::default()
            .with("example", Column::I64(self.c_example))
            .with("feature", Column::I64(self.c_feature))
            .with("offset", Column::I64(self.c_offset))
            .with("token_id", Column::I64(self.c_token_id))
            .with("token", Column::Str(self.c_token))
            .with("activation", Column::F64(self.c_activation));
        (ex, cx)
    }
}
