//! The activation store: Parquet shards, one row per token (`seq` u64, `pos` u32,
//! `token` u32, then one `FixedSizeList<Float32|Float16>[d]` column per hook, named
//! after the hook), plus the store index `_store.json` at the store root. The
//! index's name starts with `_`, so pyarrow (and pandas) skip it and the store
//! directory opens as a Parquet dataset as it is.
//!
//! Resumable per shard: a shard is written under a temporary name unique to its
//! writer, fsynced, its blake3 recorded next to it (`shard-NNNNN.parquet.blake3`) and
//! renamed `shard-NNNNN.parquet`, so the shards present in the partial directory are
//! complete. [`ShardedWriter::open`] keeps those whose bytes still match their
//! recorded hash; a killed run redoes at most one shard. Every shard holds exactly
//! `rows_per_shard` rows (the last one may hold fewer) and row groups are cut at fixed
//! row counts, so the bytes of a shard depend only on its rows and the metadata:
//! rewriting after a resume gives identical files. `_store.json` records every
//! shard's size and blake3; the reader checks both before it decodes a shard.

mod pages;
mod partial;
mod writer;

pub use writer::ShardedWriter;

use crate::error::{DataError, Result, format, io};
use arrow_schema::DataType;
use std::path::{Path, PathBuf};

/// Version of the store format (the index and shard metadata); readers reject others.
/// Still 1 with the index renamed `_store.json`: its content is unchanged and
/// readers accept either name.
pub const ACTIVATIONS_FORMAT_VERSION: u32 = 1;
/// The store's index file, written last at the store root.
pub const STORE_INDEX_FILE: &str = "_store.json";
/// The index's name in stores written by earlier saepipe versions; read where
/// [`STORE_INDEX_FILE`] is absent.
pub const LEGACY_STORE_INDEX_FILE: &str = "store.json";
const WRITER_JSON: &str = "writer.json";

/// Element type of the stored activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float (exact).
    F32,
    /// IEEE half precision: half the bytes; readers widen it to f32.
    F16,
}

impl Dtype {
    /// `f32`/`float32` or `f16`/`float16`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "f32" | "float32" => Some(Dtype::F32),
            "f16" | "float16" => Some(Dtype::F16),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    fn arrow(self) -> DataType {
        match self {
            Dtype::F32 => DataType::Float32,
            Dtype::F16 => DataType::Float16,
        }
    }
}

/// One stored hook: its column name and width.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookSpec {
    /// TransformerLens hook name, e.g. `blocks.3.hook_resid_pre`; also the column name.
    pub name: String,
    /// Values per token (e.g. `d_model`).
    pub d: usize,
}

/// What a store records about how it was made.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreMeta {
    /// The model the activations come from (e.g. `EleutherAI/pythia-70m-deduped`).
    pub model: String,
    /// Hub revision of the model (branch, tag or commit), if one was named.
    pub revision: Option<String>,
    /// blake3 fingerprint of the model's weight files.
    pub weight_fingerprint: String,
    /// The stored hooks, in column order.
    pub hooks: Vec<HookSpec>,
    /// Element type of every hook column.
    pub dtype: Dtype,
    /// Weight processing applied (fold_ln, center_writing_weights, ...).
    pub processing: serde_json::Value,
    /// Cache key of the token table the activations were computed on.
    pub token_artifact: String,
    /// Tokens per context (sequence) the model was run on.
    pub context_size: usize,
    /// Engine fields, free-form.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// Shard compression. Measured by `examples/bench_store.rs` (see docs/formats.md):
/// activations barely compress, so the default is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed pages (`none`).
    #[default]
    None,
    /// LZ4 (`lz4`).
    Lz4,
    /// zstd at the given level (`zstd-N`; `zstd` is level 1).
    Zstd(i32),
    /// Parquet BYTE_STREAM_SPLIT encoding of the float columns, then zstd.
    SplitZstd(i32),
}

impl Compression {
    /// Parses the names [`name`](Self::name) writes (plus `uncompressed` and `zstd`).
    pub fn parse(s: &str) -> Option<Compression> {
        let level = |p: &str| s.strip_prefix(p).and_then(|l| l.parse().ok());
        match s {
            "none" | "uncompressed" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd(1)),
            _ => level("zstd-").map(Compression::Zstd).or_else(|| level("bss-zstd-").map(Compression::SplitZstd)),
        }
    }

    /// The name used in the store index and options: `none`, `lz4`, `zstd-N`, `bss-zstd-N`.
    pub fn name(self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Lz4 => "lz4".into(),
            Compression::Zstd(l) => format!("zstd-{l}"),
            Compression::SplitZstd(l) => format!("bss-zstd-{l}"),
        }
    }
}

impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Compression::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown compression `{s}` (none, lz4, zstd-N, bss-zstd-N)"))
        })
    }
}

/// How a [`ShardedWriter`] lays out the store.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriterOptions {
    /// Rows (tokens) per shard file; every shard but the last holds exactly this many.
    pub rows_per_shard: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Compression of the shards.
    pub compression: Compression,
    /// Store NaN and infinite activations (and, in float16 stores, values beyond the
    /// float16 range) instead of refusing them with [`DataError::NonFinite`]; they are
    /// counted ([`ShardedWriter::nonfinite_count`]). Default false. Part of the
    /// partial directory's identity (`writer.json`) only when true, so partial stores
    /// started before this option existed still resume with the default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_nonfinite: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl WriterOptions {
    /// Shards of about 256 MiB in row groups of about 32 MiB.
    pub fn for_meta(meta: &StoreMeta) -> WriterOptions {
        let row_bytes = (meta.hooks.iter().map(|h| h.d).sum::<usize>() * meta.dtype.bytes() + 16).max(1);
        let row_group_rows = ((32 << 20) / row_bytes).clamp(256, 1 << 20);
        WriterOptions {
            rows_per_shard: row_group_rows * 8,
            row_group_rows,
            compression: Compression::None,
            allow_nonfinite: false,
        }
    }
}

/// One shard as the store index lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    /// File name under the store root (`shard-NNNNN.parquet`).
    pub file: String,
    /// Store row of the shard's first row.
    pub first_row: u64,
    /// Rows in the shard.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// blake3 of the shard file (64 lowercase hex digits). Absent in stores written
    /// before saepipe recorded it; those are read without the content check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// The content of the store index (`_store.json`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreInfo {
    /// Always `saepipe-activations`.
    pub format: String,
    /// Always [`ACTIVATIONS_FORMAT_VERSION`] once loaded.
    pub format_version: u32,
    /// How the store was made.
    pub meta: StoreMeta,
    /// Rows (tokens) in the store.
    pub total_tokens: u64,
    /// See [`WriterOptions::rows_per_shard`].
    pub rows_per_shard: usize,
    /// See [`WriterOptions::compression`].
    pub compression: Compression,
    /// Every shard in row order.
    pub shards: Vec<ShardInfo>,
}

impl StoreInfo {
    /// The index file of a store directory: [`STORE_INDEX_FILE`], or
    /// [`LEGACY_STORE_INDEX_FILE`] where only that one exists.
    pub fn index_path(store_dir: &Path) -> PathBuf {
        let current = store_dir.join(STORE_INDEX_FILE);
        if !current.exists() {
            let legacy = store_dir.join(LEGACY_STORE_INDEX_FILE);
            if legacy.exists() {
                return legacy;
            }
        }
        current
    }

    /// Reads and checks the index of a store directory (under either name).
    pub fn load(store_dir: &Path) -> Result<StoreInfo> {
        let path = StoreInfo::index_path(store_dir);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        StoreInfo::parse(&path, &text)
    }

    /// Checks and reads the text of a store index; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<StoreInfo> {
        let path = path.to_path_buf();
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format(&path, format!("invalid JSON: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some("saepipe-activations") {
            return Err(format(&path, "not a saepipe activation store (`format` is not \"saepipe-activations\")"));
        }
        match v.get("format_version").and_then(|f| f.as_u64()) {
            Some(x) if x == ACTIVATIONS_FORMAT_VERSION as u64 => {}
            other => {
                return Err(DataError::UnsupportedVersion {
                    path,
                    kind: "activations",
                    found: other.map(|x| x.to_string()).unwrap_or_else(|| "(missing)".into()),
                    supported: ACTIVATIONS_FORMAT_VERSION,
                });
            }
        }
        serde_json::from_value(v).map_err(|e| format(&path, e.to_string()))
    }
}

/// Rows handed to the writer: `hooks[i]` holds rows × d values of `meta.hooks[i]`.
pub struct Rows<'a> {
    /// Context (sequence) index of each row.
    pub seq: &'a [u64],
    /// Position of each row within its context.
    pub pos: &'a [u32],
    /// Token id of each row.
    pub token: &'a [u32],
    /// One slice per stored hook, in [`StoreMeta::hooks`] order: rows × d values, row-major.
    pub hooks: &'a [&'a [f32]],
}

/// File name of shard `i`.
pub(crate) fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.parquet")
}
