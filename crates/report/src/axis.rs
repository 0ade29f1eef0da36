//! Axis scales with hand-placed ticks: linear, log10 and symlog (log10(1 + x), so that
//! training step 0 sits on a log-like axis next to step 1, 1000 and 143000).

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    Linear,
    Log10,
    SymLog,
}

/// An axis in transformed units: the chart is drawn in `fwd(value)` coordinates, ticks are
/// placed there and labelled with the untransformed value.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub scale: Scale,
    pub lo: f64,
    pub hi: f64,
    pub major: Vec<f64>,
    pub minor: Vec<f64>,
    /// Tick spacing of a linear axis (sets the label precision).
    step: f64,
    /// Category names: value t lies in category floor(t).
    categories: Option<Vec<String>>,
    /// Labels are whole numbers written out in full (training steps: `1024`, never `1.02k`).
    pub int_labels: bool,
}

impl Axis {
    pub fn fwd(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => v,
            Scale::Log10 => {
                if v > 0.0 {
                    v.log10()
                } else {
                    f64::NAN
                }
            }
            Scale::SymLog => {
                if v >= 0.0 {
                    v.ln_1p() / std::f64::consts::LN_10
                } else {
                    f64::NAN
                }
            }
        }
    }

    pub fn inv(&self, t: f64) -> f64 {
        match self.scale {
            Scale::Linear => t,
            Scale::Log10 => 10f64.powf(t),
            Scale::SymLog => 10f64.powf(t) - 1.0,
        }
    }

    pub fn label(&self, t: f64) -> String {
        if let Some(c) = &self.categories {
            let i = t.floor();
            return if i >= 0.0 && (i as usize) < c.len() { c[i as usize].clone() } else { String::new() };
        }
        let v = self.inv(t);
        if self.int_labels {
            return format!("{}", v.round() as i64);
        }
        match self.scale {
            Scale::Linear => fmt_linear(v, self.step),
            Scale::Log10 => fmt_compact(v),
            Scale::SymLog => fmt_compact(v.round()),
        }
    }

    pub fn coord(&self) -> AxisRange {
        AxisRange { lo: self.lo, hi: self.hi, major: self.major.clone(), minor: self.minor.clone() }
    }

    pub fn description_suffix(&self) -> &'static str {
        match self.scale {
            Scale::Linear => "",
            Scale::Log10 | Scale::SymLog => " (log scale)",
        }
    }

    /// Linear axis over [min, max] with ~`n` nice ticks and a small margin.
    pub fn linear(min: f64, max: f64, n: usize) -> Axis {
        let (mut min, mut max) = if min.is_finite() && max.is_finite() { (min, max) } else { (0.0, 1.0) };
        // A spread below 0.1% of the magnitude is noise (an L0 of exactly k with
        // one batch at k - 1e-5): show the values as flat rather than let the
        // axis blow the noise up to full height.
        let magnitude = min.abs().max(max.abs());
        if max - min <= 1e-3 * magnitude || max - min <= f64::EPSILON {
            let mid = 0.5 * (min + max);
            let d = if magnitude == 0.0 { 1.0 } else { magnitude * 0.01 };
            min = mid - d;
            max = mid + d;
        }
        let pad = 0.05 * (max - min);
        Self::linear_fixed(min - pad, max + pad, nice_step((max - min) / n.max(2) as f64))
    }

    /// Linear axis with an explicit domain and tick step.
    pub fn linear_fixed(lo: f64, hi: f64, step: f64) -> Axis {
        let mut major = Vec::new();
        let mut k = (lo / step).ceil();
        while k * step <= hi + step * 1e-9 {
            // Snap to the grid so labels never read 0.30000000000000004.
            let v = (k * step * 1e9).round() / 1e9;
            major.push(if v == 0.0 { 0.0 } else { v });
            k += 1.0;
        }
        Axis { scale: Scale::Linear, lo, hi, major, minor: Vec::new(), step, categories: None, int_labels: false }
    }

    /// Log10 axis covering positive values in [min, max].
    pub fn log10(min: f64, max: f64) -> Axis {
        let (mut a, mut b) = (min.log10(), max.log10());
        if !(a.is_finite() && b.is_finite()) {
            (a, b) = (0.0, 1.0);
        }
        if b - a < 1.0 {
            let mid = 0.5 * (a + b);
            a = mid - 0.5;
            b = mid + 0.5;
        }
        let pad = 0.04 * (b - a);
        let (lo, hi) = (a - pad, b + pad);
        let decades = hi - lo;
        let mut major = Vec::new();
        let mut minor = Vec::new();
        for d in (lo.floor() as i32)..=(hi.ceil() as i32) {
            for k in 1..10 {
                let t = (k as f64).log10() + d as f64;
                if t < lo || t > hi {
                    continue;
                }
                let is_major = k == 1 || (decades < 2.2 && (k == 2 || k == 5)) || (decades < 1.5 && k == 3);
                if is_major && (k != 1 || decades <= 8.0 || d % 2 == 0) {
                    major.push(t);
                } else {
                    minor.push(t);
                }
            }
        }
        Axis { scale: Scale::Log10, lo, hi, major, minor, step: 1.0, categories: None, int_labels: false }
    }

    /// Symlog axis for non-negative values up to `max`.
    pub fn symlog(max: f64) -> Axis {
        let top = if max.is_finite() && max > 0.0 { max.ln_1p() / std::f64::consts::LN_10 } else { 1.0 };
        let top = top.max(1.0);
        let pad = 0.03 * top;
        let (lo, hi) = (-pad, top + pad);
        let t = |v: f64| v.ln_1p() / std::f64::consts::LN_10;
        let mut major = vec![0.0];
        let mut minor = Vec::new();
        let decades = top.ceil() as i32;
        for d in 0..=decades {
            for k in 1..10 {
                let v = k as f64 * 10f64.powi(d);
                let tv = t(v);
                if tv > hi {
                    continue;
                }
                // With many decades, step 1 would crowd step 0's label: keep it minor.
                if k == 1 && !(d == 0 && top >= 4.0) {
                    major.push(tv);
                } else {
                    minor.push(tv);
                }
            }
        }
        Axis { scale: Scale::SymLog, lo, hi, major, minor, step: 1.0, categories: None, int_labels: false }
    }

    /// Categories 0..n drawn as unit-wide columns; at most `max_labels` are labelled
    /// (evenly thinned, always including the last).
    pub fn categorical(names: Vec<String>, max_labels: usize) -> Axis {
        let n = names.len().max(1);
        let every = n.div_ceil(max_labels.max(1));
        // First and last are always labelled; the one before the last is dropped if it
        // would crowd it.
        let mut idx: Vec<usize> = (0..n).step_by(every).collect();
        if *idx.last().unwrap() != n - 1 {
            if n - 1 - idx.last().unwrap() < every && idx.len() > 1 {
                idx.pop();
            }
            idx.push(n - 1);
        }
        let major = idx.into_iter().map(|i| i as f64 + 0.5).collect();
        Axis {
            scale: Scale::Linear,
            lo: 0.0,
            hi: n as f64,
            major,
            minor: Vec::new(),
            step: 1.0,
            categories: Some(names),
            int_labels: false,
        }
    }

    /// y axis for a metric: log10 when all values are positive and span more than
    /// `log_ratio` (×), linear otherwise.
    pub fn auto(values: impl IntoIterator<Item = f64>, log_ratio: f64) -> Axis {
        let (min, max, min_pos) = extent(values);
        if !min.is_finite() {
            return Axis::linear(0.0, 1.0, 5);
        }
        if min > 0.0 && max / min_pos > log_ratio { Axis::log10(min, max) } else { Axis::linear(min, max, 5) }
    }

    /// x axis for LM checkpoint steps: symlog when they span orders of magnitude (or
    /// include step 0 next to large steps), linear otherwise.
    pub fn checkpoint_steps(steps: impl IntoIterator<Item = f64>) -> Axis {
        let (min, max, min_pos) = extent(steps);
        if !min.is_finite() {
            return Axis::linear(0.0, 1.0, 5);
        }
        let spread = if min_pos.is_finite() { max / min_pos } else { 1.0 };
        let mut axis =
            if (min == 0.0 && max >= 100.0) || spread > 50.0 { Axis::symlog(max) } else { Axis::linear(min, max, 6) };
        if axis.scale == Scale::Linear && axis.step < 1.0 {
            // Steps are whole numbers: no ticks between them.
            axis = Axis::linear_fixed(axis.lo, axis.hi, 1.0);
        }
        axis.int_labels = true;
        axis
    }
}

/// plotters coordinate over [lo, hi] (transformed units) with our tick positions: bold
/// grid lines and labels at `major`, light grid lines at `minor`.
#[derive(Debug, Clone)]
pub(crate) struct AxisRange {
    lo: f64,
    hi: f64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for AxisRange {
    // Labels always come from our own formatter; this only satisfies plotters' bounds.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if span == 0.0 || !v.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        let f = (v - self.lo) / span;
        limit.0 + ((limit.1 - limit.0) as f64 * f).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { self.minor.clone() } else { self.major.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// (min, max, smallest positive) of the finite values; NaNs when there are none.
pub(crate) fn extent(values: impl IntoIterator<Item = f64>) -> (f64, f64, f64) {
    let (mut min, mut max, mut min_pos) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY);
    for v in values {
        if v.is_finite() {
            min = min.min(v);
            max = max.max(v);
            if v > 0.0 {
                min_pos = min_pos.min(v);
            }
        }
    }
    if min > max { (f64::NAN, f64::NAN, f64::NAN) } else { (min, max, min_pos) }
}

pub(crate) fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    // Nearest nice mantissa, so the tick count stays close to what was asked for.
    let m = if f < 1.5 {
        1.0
    } else if f < 2.25 {
        2.0
    } else if f < 3.5 {
        2.5
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    };
    m * p
}

fn fmt_linear(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if step >= 1000.0 && a >= 1000.0 {
        return fmt_compact(v);
    }
    if !(1e-3..1e6).contains(&a) {
        return trim_exp(format!("{v:.1e}"));
    }
    // As many decimals as the tick step needs (0.25 → 2, 2.5 → 1, 25 → 0).
    let decimals = (0..8usize).find(|&d| {
        let x = step * 10f64.powi(d as i32);
        (x - x.round()).abs() < 1e-6 * x.max(1.0)
    });
    let decimals = decimals.unwrap_or(8);
    format!("{v:.decimals$}")
}

/// Short labels: 143000 → "143k", 2e-5 → "2e-5", 0.05 → "0.05".
pub(crate) fn fmt_compact(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if a >= 1e6 {
        return format!("{}M", trim_num(v / 1e6, 2));
    }
    if a >= 1e3 {
        return format!("{}k", trim_num(v / 1e3, 2));
    }
    if a >= 1e-3 {
        return trim_num(v, 4);
    }
    trim_exp(format!("{v:.0e}"))
}

/// Up to `max_dec` decimals without trailing zeros.
pub(crate) fn trim_num(v: f64, max_dec: usize) -> String {
    let s = format!("{v:.max_dec$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn trim_exp(s: String) -> String {
    // "2.0e-5" → "2e-5"
    match s.split_once('e') {
        Some((m, e)) => {
            let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
            format!("{m}e{e}")
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlog_puts_zero_and_decades_on_ticks() {
        let a = Axis::symlog(143_000.0);
        let labels: Vec<String> = a.major.iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels, ["0", "10", "100", "1k", "10k", "100k"]);
        let b = Axis::symlog(512.0);
        let labels: Vec<String> = b.major.iter().map(|&t| b.label(t)).collect();
        assert_eq!(labels, ["0", "1", "10", "100"]);
        assert!(a.fwd(143_000.0) < a.hi && a.fwd(0.0) > a.lo);
    }

    #[test]
    fn log_axis_labels() {
        let a = Axis::log10(27.0, 505.0);
        let labels: Vec<String> = a.major.iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels, ["30", "50", "100", "200", "300", "500"]);
        let b = Axis::log10(1e-6, 0.5);
        let labels: Vec<String> = b.major.iter().map(|&t| b.label(t)).collect();
        assert_eq!(labels, ["1e-6", "1e-5", "1e-4", "0.001", "0.01", "0.1"]);
    }

    #[test]
    fn linear_ticks_are_snapped() {
        let a = Axis::linear_fixed(-0.02, 1.02, 0.2);
        let labels: Vec<String> = a.major.iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let b = Axis::linear(0.0, 30_000.0, 6);
        assert!(b.major.iter().map(|&t| b.label(t)).any(|l| l == "10k"));
        let c = Axis::linear_fixed(900.0, 1100.0, 25.0);
        assert_eq!(c.label(925.0), "925");
        let d = Axis::linear_fixed(0.0, 1.0, 0.25);
        assert_eq!(d.label(0.75), "0.75");
    }

    #[test]
    fn categorical_labels_keep_first_and_last() {
        let names: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let a = Axis::categorical(names, 11);
        let labels: Vec<String> = a.major.iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels.first().unwrap(), "0");
        assert_eq!(labels.last().unwrap(), "19");
        assert!(labels.len() <= 11, "{labels:?}");
    }

    #[test]
    fn degenerate_ranges_do_not_collapse() {
        let a = Axis::linear(3.0, 3.0, 5);
        assert!(a.hi > a.lo && !a.major.is_empty());
        let b = Axis::auto([f64::NAN], 30.0);
        assert!(b.hi > b.lo);
        // Noise-level spread around 8: the axis spans about ±1%, not ±1e-5.
        let c = Axis::linear(7.99994, 8.0, 5);
        assert!(c.lo < 7.95 && c.hi > 8.05, "{} {}", c.lo, c.hi);
    }
}
