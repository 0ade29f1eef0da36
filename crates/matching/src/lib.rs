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

pub mod assignment;
pub mod matcher;
pub mod rng;
pub mod similarity;
pub mod sparse;
pub mod summary;

pub use assignment::{
    CandidateGraph, DenseSolution, SparseOptions, SparseSolution, solve_dense_max, solve_sparse_certified,
};
pub use matcher::{MatchConfig, MatchResult, SaeInputs, Strategy, match_features};
pub use similarity::{
    ActivationOracle, DenseCosineOracle, DenseWeights, MatrixOracle, SimilarityKind, SimilarityOracle, candidate_graph,
};
pub use sparse::{CscActivations, CsrActivations, FeatureStats};
pub use summary::{DEFAULT_DISTANCE_THRESHOLDS, MatchSummary, PairRow, summarize};

/// Errors of the matching crate; each names the input or field involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("activations `{name}`: {msg}")]
    InvalidActivations { name: String, msg: String },
    #[error("weights `{name}`: expected {expected} values ({rows} x {cols}), got {got}")]
    WeightShape { name: String, rows: usize, cols: usize, expected: usize, got: usize },
    #[error("SAEs disagree on {what}: A has {a}, B has {b}")]
    Mismatch { what: String, a: usize, b: usize },
    #[error("similarity kind `{kind}` needs {needs}, which was not given for SAE {side}")]
    MissingInput { kind: &'static str, needs: &'static str, side: char },
    #[error("similarity matrix: expected {expected} values ({rows} x {cols}), got {got}")]
    MatrixShape { rows: usize, cols: usize, expected: usize, got: usize },
    #[error("similarity matrix entry ({row}, {col}) is not finite: {value}")]
    NonFinite { row: usize, col: usize, value: f64 },
    #[error("matching config: {0}")]
    Config(String),
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;
