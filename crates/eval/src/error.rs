#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] saepipe_model::ModelError),
    #[error("coder `{coder}`: {source}")]
    Coder {
        coder: String,
        #[source]
        source: saepipe_sae::SaeError,
    },
    /// A coder that cannot be spliced into this model (hook, width, kind).
    #[error("coder `{coder}`: {message}")]
    Setup { coder: String, message: String },
    #[error("{0}")]
    Input(String),
    /// The caller asked to stop (see [`crate::evaluate_until`]).
    #[error("evaluation stopped after {tokens_done} tokens")]
    Stopped { tokens_done: usize },
}

pub type Result<T> = std::result::Result<T, EvalError>;
