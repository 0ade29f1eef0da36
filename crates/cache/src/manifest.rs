use crate::key::Key;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

/// What the engine knows about an artifact before its files are hashed.
#[derive(Clone, Debug, Default)]
pub struct ManifestDraft {
    pub op: String,
    pub op_version: u32,
    pub stage: String,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Key>,
    pub external: BTreeMap<String, String>,
    pub metrics: serde_json::Value,
    pub started_unix: f64,
    pub seconds: f64,
    pub resumed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Relative to the artifact directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub saepipe_version: String,
    pub key: Key,
    pub op: String,
    pub op_version: u32,
    pub stage: String,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Key>,
    pub external: BTreeMap<String, String>,
    pub metrics: serde_json::Value,
    pub started_unix: f64,
    pub seconds: f64,
    pub resumed: bool,
    pub files: Vec<FileEntry>,
    pub total_bytes: u64,
    pub created_unix: f64,
}
