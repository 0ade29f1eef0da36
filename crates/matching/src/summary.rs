//! Summary statistics and per-pair rows of a matching (the caller writes them out).

use crate::matcher::MatchResult;
use crate::similarity::{DenseWeights, SimilarityKind};
use crate::{Error, Result};

/// Default distance thresholds, distance = 1 - similarity.
pub const DEFAULT_DISTANCE_THRESHOLDS: [f64; 5] = [0.1, 0.3, 0.5, 0.7, 0.9];

/// One row per reference (A) feature.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PairRow {
    /// The reference feature.
    pub feature_a: u32,
    /// Its match in B (`None`: dead, or left unmatched).
    pub feature_b: Option<u32>,
    /// Similarity of the pair, of the kind that was matched.
    pub similarity: Option<f32>,
    /// Cosine of the two decoder rows, when both W_dec are given.
    pub decoder_cosine: Option<f32>,
    /// Firing densities over the token sample, when activations are given.
    pub density_a: Option<f64>,
    /// Firing density of the matched B feature.
    pub density_b: Option<f64>,
    /// The A feature is dead on the sample.
    pub dead_a: bool,
    /// The matched B feature is dead (`None` when unmatched).
    pub dead_b: Option<bool>,
}

/// How many matched pairs lie within one distance threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ThresholdRow {
    /// The threshold on `1 - similarity`.
    pub distance: f64,
    /// Live reference features matched with `1 - similarity <= distance`.
    pub n_within: usize,
    /// `n_within / live reference features`.
    pub fraction: f64,
}

/// Headline numbers of a matching (one JSON object in the op's output).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MatchSummary {
    /// The similarity that was matched.
    pub kind: SimilarityKind,
    /// `"dense"` or `"sparse"`.
    pub method: String,
    /// Features of SAE A.
    pub n_features_a: usize,
    /// Features of SAE B.
    pub n_features_b: usize,
    /// Dead features of A.
    pub dead_a: usize,
    /// Dead features of B.
    pub dead_b: usize,
    /// Matched pairs.
    pub n_matched: usize,
    /// One row per distance threshold, in the order given.
    pub thresholds: Vec<ThresholdRow>,
    /// Median similarity of the matched pairs (`None` when nothing matched).
    pub median_similarity: Option<f64>,
    /// Mean similarity of the matched pairs (`None` when nothing matched).
    pub mean_similarity: Option<f64>,
    /// Sum of the matched pairs' similarities.
    pub total_similarity: f64,
    /// See [`MatchResult::dual_bound`].
    pub dual_bound: f64,
    /// See [`MatchResult::certified`].
    pub certified: bool,
}

/// Summary and per-reference-feature rows. `w_dec` = (A, B) decoder weights adds the
/// decoder cosine of every matched pair.
pub fn summarize(
    r: &MatchResult,
    distance_thresholds: &[f64],
    w_dec: Option<(DenseWeights<'_>, DenseWeights<'_>)>,
) -> Result<(MatchSummary, Vec<PairRow>)> {
    if let Some((wa, wb)) = &w_dec {
        for (w, n, side) in [(wa, r.n_features_a, 'A'), (wb, r.n_features_b, 'B')] {
            if w.n_features != n || w.data.len() != w.n_features * w.d {
                return Err(Error::WeightShape {
                    name: format!("{} (W_dec of SAE {side}, {n} features)", w.name),
                    rows: w.n_features,
                    cols: w.d,
                    expected: n * w.d,
                    got: w.data.len(),
                });
            }
        }
        if wa.d != wb.d {
            return Err(Error::Mismatch { what: "W_dec width d_in".into(), a: wa.d, b: wb.d });
        }
    }
    let density = |st: &Option<Vec<crate::FeatureStats>>, f: usize| st.as_ref().map(|s| s[f].density);
    let mut rows = Vec::with_capacity(r.n_features_a);
    let mut sims = Vec::new();
    for fa in 0..r.n_features_a {
        let fb = r.a_to_b[fa];
        let s = r.similarity[fa];
        if let Some(s) = s {
            sims.push(s as f64);
        }
        let dec = match (&w_dec, fb) {
            (Some((wa, wb)), Some(fb)) => Some(cosine(wa, fa, wb, fb as usize)),
            _ => None,
        };
        rows.push(PairRow {
            feature_a: fa as u32,
            feature_b: fb,
            similarity: s,
            decoder_cosine: dec,
            density_a: density(&r.stats_a, fa),
            density_b: fb.and_then(|fb| density(&r.stats_b, fb as usize)),
            dead_a: r.dead_a[fa],
            dead_b: fb.map(|fb| r.dead_b[fb as usize]),
        });
    }
    let live_a = r.dead_a.iter().filter(|&&d| !d).count();
    let thresholds = distance_thresholds
        .iter()
        .map(|&t| {
            let n = sims.iter().filter(|&&s| 1.0 - s <= t).count();
            ThresholdRow { distance: t, n_within: n, fraction: if live_a > 0 { n as f64 / live_a as f64 } else { 0.0 } }
        })
        .collect();
    let mut sorted = sims.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some(0.5 * (sorted[n / 2 - 1] + sorted[n / 2])),
    };
    let mean = if sims.is_empty() { None } else { Some(sims.iter().sum::<f64>() / sims.len() as f64) };
    let summary = MatchSummary {
        kind: r.kind,
        method: r.method.to_string(),
        n_features_a: r.n_features_a,
        n_features_b: r.n_features_b,
        dead_a: r.dead_a.iter().filter(|&&d| d).count(),
        dead_b: r.dead_b.iter().filter(|&&d| d).count(),
        n_matched: sims.len(),
        thresholds,
        median_similarity: median,
        mean_similarity: mean,
        total_similarity: r.total,
        dual_bound: r.dual_bound,
        certified: r.certified,
    };
    Ok((summary, rows))
}

fn cosine(wa: &DenseWeights<'_>, fa: usize, wb: &DenseWeights<'_>, fb: usize) -> f32 {
    let at = |w: &DenseWeights<'_>, f: usize, k: usize| {
        if w.feature_major { w.data[f * w.d + k] } else { w.data[k * w.n_features + f] }
    };
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for k in 0..wa.d {
        let (x, y) = (at(wa, fa, k) as f64, at(wb, fb, k) as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa > 0.0 && bb > 0.0 { (ab / (aa.sqrt() * bb.sqrt())) as f32 } else { 0.0 }
}
