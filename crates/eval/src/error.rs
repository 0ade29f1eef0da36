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
}

pub type Result<T> = std::result::Result<T, EvalError>;
