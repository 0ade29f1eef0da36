//! `_manifest.json`: what an artifact is (op, parameters, inputs) and what it holds
//! (every payload file with its size and blake3).

use crate::error::{CacheError, IoContext, Result};
use crate::key::Key;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the manifest format; [`Manifest::read`] rejects any other.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside an artifact directory. The leading `_` makes
/// dataset readers (pyarrow, and so pandas) skip it, so a directory of
/// Parquet files opens as a dataset as it is.
pub const MANIFEST_FILE: &str = "_manifest.json";
/// The manifest's name in artifacts published by earlier saepipe versions;
/// still read where [`MANIFEST_FILE`] is absent (caches and remotes hold such artifacts).
pub const LEGACY_MANIFEST_FILE: &str = "manifest.json";

/// What the engine knows about an artifact before its files are hashed.
#[derive(Clone, Debug, Default)]
pub struct ManifestDraft {
    /// Name of the op (stage kind) that produced the artifact.
    pub op: String,
    /// The op's implementation version (part of the key).
    pub op_version: u32,
    /// Name of the stage instance that produced it.
    pub stage: String,
    /// Canonical parameters that went into the key.
    pub params: serde_json::Value,
    /// Input artifacts by label.
    pub inputs: BTreeMap<String, Key>,
    /// Fingerprints of external inputs (dataset files, weights) by label.
    pub external: BTreeMap<String, String>,
    /// Summary numbers the op reported (a JSON object, or null).
    pub metrics: serde_json::Value,
    /// When the stage started, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// Wall-clock seconds the stage took.
    pub seconds: f64,
    /// Whether the stage continued from saved partial progress.
    pub resumed: bool,
}

/// One payload file of an artifact, as listed in its manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct FileEntry {
    /// Relative to the artifact directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the content, 64 lowercase hex characters.
    pub blake3: String,
}

/// The content of a published artifact's `_manifest.json`: the fields of its
/// [`ManifestDraft`] plus what the cache recorded when publishing it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT_VERSION`] once read.
    pub format_version: u32,
    /// Version of the saepipe that published the artifact.
    pub saepipe_version: String,
    /// The artifact's key.
    pub key: Key,
    /// See [`ManifestDraft::op`].
    pub op: String,
    /// See [`ManifestDraft::op_version`].
    pub op_version: u32,
    /// See [`ManifestDraft::stage`].
    pub stage: String,
    /// See [`ManifestDraft::params`].
    pub params: serde_json::Value,
    /// See [`ManifestDraft::inputs`].
    pub inputs: BTreeMap<String, Key>,
    /// See [`ManifestDraft::external`].
    pub external: BTreeMap<String, String>,
    /// See [`ManifestDraft::metrics`].
    pub metrics: serde_json::Value,
    /// See [`ManifestDraft::started_unix`].
    pub started_unix: f64,
    /// See [`ManifestDraft::seconds`].
    pub seconds: f64,
    /// See [`ManifestDraft::resumed`].
    pub resumed: bool,
    /// Every payload file (not the manifest itself), sorted by path.
    pub files: Vec<FileEntry>,
    /// Sum of the files' sizes, in bytes.
    pub total_bytes: u64,
    /// When the artifact was published, in seconds since the Unix epoch.
    pub created_unix: f64,
}

impl Manifest {
    pub(crate) fn from_draft(key: Key, draft: ManifestDraft, files: Vec<FileEntry>, created_unix: f64) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            saepipe_version: env!("CARGO_PKG_VERSION").to_string(),
            key,
            op: draft.op,
            op_version: draft.op_version,
            stage: draft.stage,
            params: draft.params,
            inputs: draft.inputs,
            external: draft.external,
            metrics: draft.metrics,
            started_unix: draft.started_unix,
            seconds: draft.seconds,
            resumed: draft.resumed,
            total_bytes: files.iter().map(|f| f.size).sum(),
            files,
            created_unix,
        }
    }

    /// The entry of a payload file, by its relative path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The manifest file of an artifact directory: [`MANIFEST_FILE`], or
    /// [`LEGACY_MANIFEST_FILE`] where only that one exists. Published artifacts
    /// never change, so the answer cannot go stale.
    pub fn path_in(dir: &Path) -> PathBuf {
        let current = dir.join(MANIFEST_FILE);
        if std::fs::symlink_metadata(&current).is_err() {
            let legacy = dir.join(LEGACY_MANIFEST_FILE);
            if std::fs::symlink_metadata(&legacy).is_ok() {
                return legacy;
            }
        }
        current
    }

    /// Reads and checks the manifest of an artifact directory (under either
    /// name, see [`path_in`](Self::path_in)), as [`read`](Self::read) does.
    pub fn read_in(dir: &Path) -> Result<Option<Manifest>> {
        Manifest::read(&Manifest::path_in(dir))
    }

    /// Reads and checks a manifest file: `Ok(None)` if it does not exist,
    /// `CacheError::Manifest` if it is unparsable, of another format version, or
    /// lists a path that escapes the artifact directory.
    pub fn read(path: &Path) -> Result<Option<Manifest>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("reading", path),
        };
        Manifest::parse(&bytes, path).map(Some)
    }

    /// Parses and checks manifest bytes read from `origin` (a file, or an
    /// object on a remote, named in errors), with the checks of [`read`](Self::read).
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<Manifest> {
        let bad = |message: String| CacheError::Manifest { path: origin.to_path_buf(), message };
        // Check the version first so a future format is reported as such, not as a parse error.
        let version = serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| bad(e.to_string()))?
            .get("format_version")
            .and_then(|v| v.as_u64());
        if version != Some(MANIFEST_FORMAT_VERSION as u64) {
            let v = version.map(|v| v.to_string()).unwrap_or_else(|| "missing".into());
            return Err(bad(format!(
                "manifest format version {v} is not supported (this saepipe reads version {MANIFEST_FORMAT_VERSION})"
            )));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(f) = m.files.iter().find(|f| !is_safe_relative(&f.path)) {
            return Err(bad(format!("file path `{}` is not a plain relative path", f.path)));
        }
        if let Some(f) =
            m.files.iter().find(|f| f.blake3.len() != 64 || !f.blake3.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad(format!("file `{}` has no valid blake3", f.path)));
        }
        Ok(m)
    }
}

/// A relative path without `..`, empty or absolute parts.
fn is_safe_relative(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}
