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
    /// How many instances of `stage` share this problem (see [`Diagnostics::sort`]).
    pub instances: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error:", self.file, self.pos.line, self.pos.col)?;
        if let Some(stage) = &self.stage {
            write!(f, " stage `{stage}`")?;
            if self.instances > 1 {
                write!(f, " ({} instances)", self.instances)?;
            }
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
            instances: 1,
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
    /// A problem written at a `${var}` whose value came from `--set` or a
    /// params file says so (`overridden`: variable → where its value came
    /// from): the line shown is where the value is used, not where the wrong
    /// value was given. `text` is the file's text.
    pub fn name_overrides(&mut self, text: &str, overridden: &std::collections::BTreeMap<String, String>) {
        let lines: Vec<&str> = text.lines().collect();
        let file = self.file.clone();
        for item in self.items.iter_mut().filter(|i| i.file == file) {
            let Some(line) = lines.get(item.pos.line.saturating_sub(1)) else { continue };
            let Some(rest) = line.get(item.pos.col.saturating_sub(1)..) else { continue };
            let Some(name) = rest.strip_prefix("${").and_then(|r| r.split('}').next()) else { continue };
            if let Some(origin) = overridden.get(name) {
                item.message.push_str(&format!(" (the value of `${{{name}}}`, given by {origin})"));
            }
        }
    }
    /// Orders the diagnostics by position, drops exact duplicates, and
    /// reports a problem that every instance of a `foreach`/`matrix` stage
    /// shares (one written line, one value) once, for the stage.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|a| a.pos);
        self.items.dedup();
        let stage_of = |d: &Diagnostic| d.stage.as_deref().map(|s| s.split('[').next().unwrap_or(s).to_string());
        let mut merged: Vec<Diagnostic> = Vec::with_capacity(self.items.len());
        for d in self.items.drain(..) {
            if let Some(last) = merged.last_mut()
                && d.stage.as_deref().is_some_and(|s| s.contains('['))
                && (last.instances > 1 || last.stage.as_deref().is_some_and(|s| s.contains('[')))
                && (&last.file, last.pos, &last.param, &last.message, &last.help)
                    == (&d.file, d.pos, &d.param, &d.message, &d.help)
                && stage_of(last) == stage_of(&d)
            {
                last.instances += 1;
                if last.instances == 2 {
                    last.stage = stage_of(last);
                }
                continue;
            }
            merged.push(d);
        }
        self.items = merged;
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
