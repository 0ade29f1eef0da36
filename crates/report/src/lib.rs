//! Figures and reports of saepipe's `plot` stage.
//!
//! Figure builders take plain Rust data (the plot stage reads the evaluation, matching
//! and training tables and passes their columns in) and return a [`Figure`]: the same
//! drawing as SVG and PNG plus the plotted numbers as a column [`Table`].
//! Text in PNGs is rendered from an embedded DejaVu Sans font, so no system fonts are
//! needed. [`Report`] assembles sections, figures and tables into one self-contained
//! HTML file (no external resources).
//!
//! Inputs with nothing to plot (empty, all NaN) give a "no data" figure
//! (`Figure::no_data` is set); malformed inputs (mismatched lengths, out-of-range
//! values) give a [`ReportError`] naming the figure, field and row.

#![warn(missing_docs)]

mod axis;
pub mod dashboard;
mod error;
pub mod figures;
mod interactive;
mod render;
pub mod report;
mod style;
pub mod synthetic;

pub use error::{ReportError, Result};
pub use figures::coders::{CoderPoint, ce_loss_score_frontier, sparsity_faithfulness};
pub use figures::density::{FeatureDensity, feature_density};
pub use figures::matching::{
    CheckpointCe, CheckpointLosses, CheckpointSimilarities, DEFAULT_DISTANCE_THRESHOLDS, MatchedFraction,
    ce_per_checkpoint, matched_fraction_vs_step, matched_fractions, sae_losses_per_checkpoint, similarity_heatmap,
};
pub use figures::training::{TrainingCurve, training_curves};
pub use render::{Figure, FigureOptions};
pub use report::{Cell, Link, Report};
pub use saepipe_core::table::{Column, Table};
