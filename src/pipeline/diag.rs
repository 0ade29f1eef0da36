//! Validation diagnostics: every problem of a pipeline file, each with the file,
//! line, column, stage and parameter it concerns.

use super::yaml::Pos;
use saepipe_core::suggest::did_you_mean;
use std::fmt;

/// One problem found while loading a pipeline file. Displays as
/// `FILE:LINE:COL: error: stage ..., parameter ...: MESSAGE`, followed by a
/// `help:` line when there is help.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// The file the problem is in (the pipeline file or a params file).
    pub file: String,
    /// Where in the file.
    pub pos: Pos,
    /// The stage (or instance id) concerned, if any.
    pub stage: Option<String>,
    /// The parameter or top-level key concerned, if any.
    pub param: Option<String>,
    /// What is wrong.
    pub message: String,
    /// A suggestion: a did-you-mean, or the values expected.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error:", self.file, self.pos.line, self.pos.col)?;
        if let Some(stage) = &self.stage {
            write!(f, " stage `{stage}`")?;
            if let Some(param) = &self.param {
                write!(f, ", parameter `{param}`")?;
            }
            write!(f, ":")?;
        } else if let Some(param) = &self.param {
            write!(f, " `{param}`:")?;
        }
        write!(f, " {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// All diagnostics of one file, reported together.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    /// The file the diagnostics are about (the default `file` of new ones).
    pub file: String,
    /// The problems found; sorted by position after [`Diagnostics::sort`].
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty list for `file`.
    pub fn new(file: impl Into<String>) -> Self {
        Diagnostics { file: file.into(), items: Vec::new() }
    }
    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Records an error at `pos`, in `stage` and `param` when given; returns it so
    /// that a caller can add a `help`.
    pub fn error(
        &mut self,
        pos: Pos,
        stage: Option<&str>,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.items.push(Diagnostic {
            file: self.file.clone(),
            pos,
            stage: stage.map(str::to_string),
            param: param.map(str::to_string),
            message: message.into(),
            help: None,
        });
        self.items.last_mut().unwrap()
    }
    /// An "unknown X" error with a did-you-mean suggestion from `candidates`.
    pub fn unknown<'a>(
        &mut self,
        pos: Pos,
        stage: Option<&str>,
        param: Option<&str>,
        what: &str,
        name: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) {
        let candidates: Vec<&str> = candidates.into_iter().collect();
        let help =
            did_you_mean(name, candidates.iter().copied()).map(|s| format!("did you mean `{s}`?")).or_else(|| {
                (!candidates.is_empty() && candidates.len() <= 12)
                    .then(|| format!("expected one of: {}", candidates.join(", ")))
            });
        self.error(pos, stage, param, format!("unknown {what} `{name}`")).help = help;
    }
    /// Orders the diagnostics by position and drops exact duplicates.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|a| a.pos);
        self.items.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        let n = self.items.len();
        write!(f, "{n} error{} in {}", if n == 1 { "" } else { "s" }, self.file)
    }
}

impl std::error::Error for Diagnostics {}
