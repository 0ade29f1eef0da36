//! Figure builders: plain Rust data in, rendered [`Figure`](crate::Figure) out.

pub mod coders;
pub mod density;
pub mod matching;
pub mod training;

/// Sorted, de-duplicated copy (total order, so NaN never reaches here by construction).
pub(crate) fn sorted_unique(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}
