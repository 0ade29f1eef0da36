use thiserror::Error;

/// Errors of the figure builders and the HTML report.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The input data of a figure is malformed (mismatched lengths, values out of range).
    #[error("figure `{figure}`: invalid `{field}`: {reason}")]
    InvalidData { figure: String, field: String, reason: String },
    /// The figure options are unusable (size too small or too large).
    #[error("figure `{figure}`: invalid option `{option}`: {reason}")]
    InvalidOptions { figure: String, option: String, reason: String },
    /// plotters failed while drawing (SVG or bitmap backend).
    #[error("figure `{figure}`: drawing the {backend} failed: {message}")]
    Render { figure: String, backend: &'static str, message: String },
    /// The embedded font could not be registered with plotters.
    #[error("embedded font `{font}` could not be loaded")]
    Font { font: &'static str },
    /// Encoding the PNG failed.
    #[error("figure `{figure}`: PNG encoding failed: {message}")]
    Png { figure: String, message: String },
    /// A report table has rows that do not match its header.
    #[error("report table `{caption}`: {reason}")]
    Table { caption: String, reason: String },
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

pub(crate) fn invalid(figure: &str, field: impl Into<String>, reason: impl Into<String>) -> ReportError {
    ReportError::InvalidData { figure: figure.to_string(), field: field.into(), reason: reason.into() }
}
