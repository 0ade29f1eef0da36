//! Process-wide switches a running stage obeys: the stop request of the first
//! Ctrl-C (or SIGTERM), and the no-downloads rule of read-only commands; and
//! [`StageStop`], how a stage says it stopped early without failing.

use std::sync::atomic::{AtomicBool, Ordering};

/// Why a stage stopped early without failing; the engine handles each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StageStop {
    /// Ctrl-C (or SIGTERM): progress is saved; a rerun resumes.
    #[error("interrupted (progress saved; run the same command again to resume)")]
    Interrupted,
    /// Another process took the stage over; its result is used instead.
    #[error("lost the stage's lock to another process")]
    LockLost,
}

impl StageStop {
    /// The stop an error carries, if it is one (anywhere in its chain).
    pub fn of(e: &anyhow::Error) -> Option<StageStop> {
        e.chain().find_map(|c| c.downcast_ref::<StageStop>()).copied()
    }
}

/// A reference (model, tokenizer, coder) that is not in the local cache while
/// downloads are off: read-only commands report it instead of fetching it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} is not in the local Hugging Face cache (it is downloaded when the stage runs)")]
pub struct NotDownloaded {
    /// What is missing, in words: ``model `gpt2` `` or ``coder `hf:...` ``.
    pub what: String,
}

static DOWNLOADS_FORBIDDEN: AtomicBool = AtomicBool::new(false);

/// Read-only commands (`plan`, `cache ...`) never touch the network: references
/// missing from the local cache resolve to [`NotDownloaded`] instead.
pub fn forbid_downloads() {
    DOWNLOADS_FORBIDDEN.store(true, Ordering::SeqCst);
}

/// Whether resolving a reference may download it.
pub fn downloads_allowed() -> bool {
    !DOWNLOADS_FORBIDDEN.load(Ordering::SeqCst)
}

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Asks every running stage to save its progress and stop (the first Ctrl-C).
pub fn request_cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn cancel_requested() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}
