/// Errors of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model failed to run.
    #[error(transparent)]
    Model(#[from] saepipe_model::ModelError),
    /// A coder's own forward failed.
    #[error("coder `{coder}`: {source}")]
    Coder {
        /// The coder's label.
        coder: String,
        /// What the coder reported.
        #[source]
        source: saepipe_sae::SaeError,
    },
    /// A coder that cannot be spliced into this model (hook, width, kind), or
    /// whose device forward failed.
    #[error("coder `{coder}`: {message}")]
    Setup {
        /// The coder's label.
        coder: String,
        /// What does not fit.
        message: String,
    },
    /// The tokens or the coder list cannot be evaluated (not whole contexts, empty).
    #[error("{0}")]
    Input(String),
    /// The caller asked to stop (see [`crate::evaluate_until`]).
    #[error("evaluation stopped after {tokens_done} tokens")]
    Stopped {
        /// Tokens fully evaluated before stopping.
        tokens_done: usize,
    },
}

/// Result of an evaluation.
pub type Result<T> = std::result::Result<T, EvalError>;
