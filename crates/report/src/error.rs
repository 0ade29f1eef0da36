use thiserror::Error;

/// Errors of the figure builders and the HTML report.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The input data of a figure is malformed (mismatched lengths, values out of range).
    #[error("figure `{figure}`: invalid `{field}`: {reason}")]
    InvalidData {
        /// The figure's name.
        figure: String,
        /// The input field.
        field: String,
        /// What is wrong, with the row or item where it applies.
        reason: String,
    },
    /// The figure options are unusable (size too small or too large).
    #[error("figure `{figure}`: invalid option `{option}`: {reason}")]
    InvalidOptions {
        /// The figure's name.
        figure: String,
        /// The option (`width`, `height` or `name`).
        option: String,
        /// What is wrong.
        reason: String,
    },
    /// plotters failed while drawing (SVG or bitmap backend).
    #[error("figure `{figure}`: drawing the {backend} failed: {message}")]
    Render {
        /// The figure's name.
        figure: String,
        /// `SVG` or `PNG`.
        backend: &'static str,
        /// plotters' message.
        message: String,
    },
    /// The embedded font could not be registered with plotters.
    #[error("embedded font `{font}` could not be loaded")]
    Font {
        /// The font's name.
        font: &'static str,
    },
    /// Encoding the PNG failed.
    #[error("figure `{figure}`: PNG encoding failed: {message}")]
    Png {
        /// The figure's name.
        figure: String,
        /// The encoder's message.
        message: String,
    },
    /// A report table has rows that do not match its header.
    #[error("report table `{caption}`: {reason}")]
    Table {
        /// The table's caption.
        caption: String,
        /// What does not match.
        reason: String,
    },
}

/// Result of the figure builders and the report.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

pub(crate) fn invalid(figure: &str, field: impl Into<String>, reason: impl Into<String>) -> ReportError {
    ReportError::InvalidData { figure: figure.to_string(), field: field.into(), reason: reason.into() }
}
