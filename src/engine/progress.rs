//! [`ProgressSink`]: how a running op reports progress. The scheduler's
//! terminal display (`exec::progress`) is one implementation.

/// Progress reporting handed to a running op.
pub trait ProgressSink: Send + Sync {
    /// Announces the amount of work, `total` units named `unit` (`tokens`,
    /// `shards`).
    fn set_total(&self, total: u64, unit: &str);
    /// How many of the total units are done so far.
    fn set_position(&self, pos: u64);
    /// A short status line (the current phase).
    fn message(&self, msg: &str);
    /// A few words shown with the position, replacing the previous ones (the
    /// current loss and L0 of a training run); not a line of its own.
    fn set_status(&self, _status: &str) {}
}

/// A sink that shows nothing (for embedding the engine, and for tests).
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn set_total(&self, _total: u64, _unit: &str) {}
    fn set_position(&self, _pos: u64) {}
    fn message(&self, _msg: &str) {}
}
