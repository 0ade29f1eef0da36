//! saepipe-matching: match features across sparse autoencoders.
//!
//! The pipeline is: feature activations of two SAEs over the same tokens
//! ([`sparse::CsrActivations`]) -> a similarity oracle ([`similarity`]) that yields
//! a sparse top-m candidate graph without ever densifying tokens x features or
//! d_sae x d_sae -> an exact one-to-one assignment ([`assignment`]) with an
//! optimality certificate checked against the full similarity matrix -> a
//! summary ([`summary`]).
//!
//! [`match_features`] wires these together.

#![warn(missing_docs)]

pub mod assignment;
pub mod matcher;
pub mod rng;
pub mod similarity;
pub mod sparse;
pub mod summary;

pub use assignment::{DenseSolution, SparseOptions, SparseSolution, solve_dense_max, solve_sparse_certified};
pub use matcher::{MatchConfig, MatchResult, SaeInputs, Strategy, match_features};
pub use similarity::{
    ActivationOracle, CandidateGraph, DenseCosineOracle, DenseWeights, MatrixOracle, SimilarityKind, SimilarityOracle,
    candidate_graph,
};
pub use sparse::{CscActivations, CsrActivations, FeatureStats};
pub use summary::{DEFAULT_DISTANCE_THRESHOLDS, MatchSummary, PairRow, summarize};

/// Errors of the matching crate; each names the input or field involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Sparse activations are malformed (bad `row_ptr`, index out of range,
    /// duplicate feature in a token, non-finite value) or a binary file of them is.
    #[error("activations `{name}`: {msg}")]
    InvalidActivations {
        /// Name of the SAE or file the activations belong to.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// A weight matrix has fewer or more values than its stated shape.
    #[error("weights `{name}`: expected {expected} values ({rows} x {cols}), got {got}")]
    WeightShape {
        /// Name of the weights (SAE and matrix).
        name: String,
        /// Stated rows (features).
        rows: usize,
        /// Stated columns (`d_in`).
        cols: usize,
        /// `rows * cols`.
        expected: usize,
        /// Values actually given.
        got: usize,
    },
    /// The two SAEs disagree on a size that must match (tokens, `d_in`).
    #[error("SAEs disagree on {what}: A has {a}, B has {b}")]
    Mismatch {
        /// The size in question.
        what: String,
        /// Its value for SAE A.
        a: usize,
        /// Its value for SAE B.
        b: usize,
    },
    /// The chosen similarity kind needs an input that was not given.
    #[error("similarity kind `{kind}` needs {needs}, which was not given for SAE {side}")]
    MissingInput {
        /// The similarity kind ([`SimilarityKind::name`]).
        kind: &'static str,
        /// The missing input (`activations`, `W_dec`, `W_enc`).
        needs: &'static str,
        /// `'A'` or `'B'`.
        side: char,
    },
    /// An explicit similarity matrix has the wrong number of values.
    #[error("similarity matrix: expected {expected} values ({rows} x {cols}), got {got}")]
    MatrixShape {
        /// Stated rows.
        rows: usize,
        /// Stated columns.
        cols: usize,
        /// `rows * cols`.
        expected: usize,
        /// Values actually given.
        got: usize,
    },
    /// A similarity given to a solver is NaN or infinite.
    #[error("similarity matrix entry ({row}, {col}) is not finite: {value}")]
    NonFinite {
        /// Row of the entry.
        row: usize,
        /// Column of the entry.
        col: usize,
        /// The value.
        value: f64,
    },
    /// A [`MatchConfig`] or [`SparseOptions`] value is out of range.
    #[error("matching config: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {msg}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        msg: String,
    },
}

/// Result of the matching crate.
pub type Result<T> = std::result::Result<T, Error>;
