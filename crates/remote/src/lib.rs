//! Remotes for the saepipe cache: a bucket or directory that many hosts and
//! people push finished artifacts to and pull them from, through the
//! `object_store` crate (`s3://`, `gs://`, `az://`, `http(s)://`, `file://`).
//!
//! Layout under the remote's URL (see docs/cache.md):
//!
//! - `saepipe-remote.json`: a marker naming the layout version;
//! - `blobs/<aa>/<blake3>`: every payload file, stored once by its blake3
//!   (so two artifacts holding the same file share it, and a blob's name says
//!   what its bytes must hash to);
//! - `artifacts/<key>.json`: the artifact's manifest, byte for byte as the
//!   local cache wrote it, uploaded only after every blob it lists is on the
//!   remote, with a create-only put. The object's name does not depend on
//!   the manifest's file name in the cache (`_manifest.json`, `manifest.json`
//!   in artifacts of older versions): a pull publishes it under the current one.
//!
//! Hence the guarantees: an artifact is visible on the remote only once all its
//! files are; two pushers of one key cannot corrupt it (blobs are immutable by
//! content, the first manifest wins); a push or pull killed at any point leaves
//! nothing visible and the next one resumes (blobs already on the remote are
//! skipped; downloaded ranges already on disk are kept); every pulled byte is
//! checked against the manifest's blake3 before the local cache publishes it.
#![warn(missing_docs)]

mod admin;
mod error;
mod layout;
mod location;
mod pull;
mod push;
mod stream;

pub use admin::{RemoteArtifact, RemoteGcReport, RemoteVerifyReport};
pub use error::{RemoteError, Result};
pub use location::Remote;
pub use pull::PullOutcome;
pub use push::PushOutcome;
pub use stream::{ChunkCache, StreamedArtifact};

/// Progress of a transfer: called with (bytes done, bytes in all) as data moves.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// A progress callback that reports nothing.
pub fn no_progress(_done: u64, _total: u64) {}
