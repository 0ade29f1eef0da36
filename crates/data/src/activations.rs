//! The activation store: Parquet shards, one row per token (`seq` u64, `pos` u32,
//! `token` u32, then one FixedSizeList<Float32|Float16>[d] column per hook, named
//! after the hook), plus `store.json` at the store root.
//!
//! Resumable per shard: a shard is written under a temporary name unique to its
//! writer, fsynced, its blake3 recorded next to it (`shard-NNNNN.parquet.blake3`) and
//! renamed `shard-NNNNN.parquet`, so the shards present in the partial directory are
//! complete. [`ShardedWriter::open`] keeps those whose bytes still match their
//! recorded hash; a killed run redoes at most one shard. Every shard holds exactly
//! `rows_per_shard` rows (the last one may hold fewer) and row groups are cut at fixed
//! row counts, so the bytes of a shard depend only on its rows and the metadata:
//! rewriting after a resume gives identical files. `store.json` records every
//! shard's size and blake3; the reader checks both before it decodes a shard.

use crate::error::{DataError, Result, format, io, pq};
use crate::tokens::kv_list;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Encoding, PageType, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::{Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, FileReader, Length, SerializedFileReader};
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor, TypePtr};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

pub const ACTIVATIONS_FORMAT_VERSION: u32 = 1;
pub const STORE_JSON: &str = "store.json";
const WRITER_JSON: &str = "writer.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "f32" | "float32" => Some(Dtype::F32),
            "f16" | "float16" => Some(Dtype::F16),
            _ => None,
        }
    }

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

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookSpec {
    pub name: String,
    pub d: usize,
}

/// What a store records about how it was made.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreMeta {
    pub model: String,
    pub revision: Option<String>,
    pub weight_fingerprint: String,
    pub hooks: Vec<HookSpec>,
    pub dtype: Dtype,
    /// Weight processing applied (fold_ln, center_writing_weights, ...).
    pub processing: serde_json::Value,
    /// Cache key of the token table the activations were computed on.
    pub token_artifact: String,
    pub context_size: usize,
    /// Engine fields, free-form.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// Shard compression. Measured by `examples/bench_store.rs` (see docs/formats.md):
/// activations barely compress, so the default is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd(i32),
    /// Parquet BYTE_STREAM_SPLIT encoding of the float columns, then zstd.
    SplitZstd(i32),
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        let level = |p: &str| s.strip_prefix(p).and_then(|l| l.parse().ok());
        match s {
            "none" | "uncompressed" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd(1)),
            _ => level("zstd-").map(Compression::Zstd).or_else(|| level("bss-zstd-").map(Compression::SplitZstd)),
        }
    }

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
        Compression::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown compression `{s}` (none, lz4, zstd-N, bss-zstd-N)")))
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriterOptions {
    pub rows_per_shard: usize,
    pub row_group_rows: usize,
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
        WriterOptions { rows_per_shard: row_group_rows * 8, row_group_rows, compression: Compression::None, allow_nonfinite: false }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub first_row: u64,
    pub rows: u64,
    pub bytes: u64,
    /// blake3 of the shard file (64 lowercase hex digits). Absent in stores written
    /// before saepipe recorded it; those are read without the content check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// The content of `store.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreInfo {
    pub format: String,
    pub format_version: u32,
    pub meta: StoreMeta,
    pub total_tokens: u64,
    pub rows_per_shard: usize,
    pub compression: Compression,
    pub shards: Vec<ShardInfo>,
}

impl StoreInfo {
    /// Reads and checks `store.json` of a store directory.
    pub fn load(store_dir: &Path) -> Result<StoreInfo> {
        let path = store_dir.join(STORE_JSON);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format(&path, format!("invalid JSON: {e}")))?;
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
    pub seq: &'a [u64],
    pub pos: &'a [u32],
    pub token: &'a [u32],
    pub hooks: &'a [&'a [f32]],
}

pub fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.parquet")
}

enum HookBuf {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl HookBuf {
    fn clear(&mut self) {
        match self {
            HookBuf::F32(b) => b.clear(),
            HookBuf::F16(b) => b.clear(),
        }
    }

    fn width(&self) -> usize {
        match self {
            HookBuf::F32(_) => 4,
            HookBuf::F16(_) => 2,
        }
    }

    /// Appends values `a..b` to `out` as PLAIN (little-endian) or BYTE_STREAM_SPLIT bytes.
    fn encode(&self, a: usize, b: usize, split: bool, out: &mut Vec<u8>) {
        match self {
            HookBuf::F32(v) => put_values(&v[a..b], split, out, f32::to_le_bytes),
            HookBuf::F16(v) => put_values(&v[a..b], split, out, half::f16::to_le_bytes),
        }
    }
}

fn put_values<T: Copy, const W: usize>(vals: &[T], split: bool, out: &mut Vec<u8>, le: fn(T) -> [u8; W]) {
    let start = out.len();
    out.resize(start + vals.len() * W, 0);
    let dst = &mut out[start..];
    if vals.is_empty() {
        return;
    }
    if split {
        // BYTE_STREAM_SPLIT: byte 0 of every value, then byte 1, ...
        for (k, stream) in dst.chunks_exact_mut(vals.len()).enumerate() {
            for (o, &x) in stream.iter_mut().zip(vals) {
                *o = le(x)[k];
            }
        }
    } else {
        for (o, &x) in dst.chunks_exact_mut(W).zip(vals) {
            o.copy_from_slice(&le(x));
        }
    }
}

/// Page compression of the hook columns (the typed column writers compress the
/// other columns themselves; their codec is not public API). Same codecs and levels.
enum PageCodec {
    None,
    Lz4Raw,
    Zstd(i32),
}

impl PageCodec {
    fn new(c: &Compression) -> Result<PageCodec> {
        Ok(match *c {
            Compression::None => PageCodec::None,
            Compression::Lz4 => PageCodec::Lz4Raw,
            Compression::Zstd(l) | Compression::SplitZstd(l) => {
                ZstdLevel::try_new(l).map_err(|e| DataError::Config { what: "compression", message: e.to_string() })?;
                PageCodec::Zstd(l)
            }
        })
    }

    fn parquet(&self) -> parquet::basic::Compression {
        use parquet::basic::Compression as C;
        match self {
            PageCodec::None => C::UNCOMPRESSED,
            PageCodec::Lz4Raw => C::LZ4_RAW,
            PageCodec::Zstd(l) => C::ZSTD(ZstdLevel::try_new(*l).expect("checked in new")),
        }
    }

    fn compress(&self, page: Vec<u8>) -> std::result::Result<Vec<u8>, ParquetError> {
        match self {
            PageCodec::None => Ok(page),
            PageCodec::Lz4Raw => Ok(lz4_flex::block::compress(&page)),
            PageCodec::Zstd(l) => zstd::bulk::compress(&page, *l).map_err(|e| ParquetError::External(Box::new(e))),
        }
    }

    /// Byte-stream-split values (set together with zstd: `Compression::SplitZstd`).
    fn split(c: &Compression) -> bool {
        matches!(c, Compression::SplitZstd(_))
    }
}

/// Uncompressed values per data page, as the column writers' default page size.
const PAGE_BYTES: usize = 1 << 20;

/// Appends an RLE/bit-packed hybrid section of bit width 1 in Data Page V1 layout
/// (4-byte length, then RLE runs `(value, count)`).
fn put_levels(out: &mut Vec<u8>, runs: impl Iterator<Item = (u8, usize)>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    for (value, count) in runs {
        let mut h = (count as u64) << 1;
        while h >= 0x80 {
            out.push((h as u8) | 0x80);
            h >>= 7;
        }
        out.push(h as u8);
        out.push(value);
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// `ChunkReader` over a borrowed buffer (the encoded column chunk), so the chunk
/// buffer is reused across row groups.
struct ChunkBytes<'a>(&'a [u8]);

impl Length for ChunkBytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

impl<'a> ChunkReader for ChunkBytes<'a> {
    type T = &'a [u8];

    fn get_read(&self, start: u64) -> parquet::errors::Result<&'a [u8]> {
        self.0.get(start as usize..).ok_or_else(|| ParquetError::EOF(format!("offset {start} past the chunk")))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let s = start as usize;
        self.0.get(s..s + length).map(bytes::Bytes::copy_from_slice).ok_or_else(|| ParquetError::EOF(format!("range {s}+{length} past the chunk")))
    }
}

/// Encodes `n` rows of one hook (a required FixedSizeList of `d` required values)
/// into `out` as the Data Page V1 pages of one column chunk, cut at row boundaries
/// every `PAGE_BYTES` of values, and returns what `append_column` needs. The pages
/// carry what the column writer writes with statistics off: levels, values and an
/// offset index. Deterministic: the bytes depend only on the values.
fn encode_hook_chunk(out: &mut Vec<u8>, descr: ColumnDescPtr, buf: &HookBuf, n: usize, d: usize, codec: &PageCodec, split: bool) -> std::result::Result<ColumnCloseResult, ParquetError> {
    out.clear();
    let encoding = if split { Encoding::BYTE_STREAM_SPLIT } else { Encoding::PLAIN };
    let w = buf.width();
    let page_rows = (PAGE_BYTES / (d * w)).max(1);
    let mut sink = TrackedWrite::new(&mut *out);
    let mut pages = SerializedPageWriter::new(&mut sink);
    let (mut compressed, mut uncompressed, mut count) = (0i64, 0i64, 0i32);
    let mut locations = Vec::new();
    for r0 in (0..n).step_by(page_rows) {
        let rows = page_rows.min(n - r0);
        let mut page = Vec::with_capacity(rows * (d * w + 8) + 16);
        // Repetition levels: 0 starts a row, 1 continues it; definition levels all 1.
        put_levels(&mut page, (0..rows).flat_map(|_| [(0u8, 1usize), (1, d - 1)]).filter(|r| r.1 > 0));
        put_levels(&mut page, std::iter::once((1u8, rows * d)));
        buf.encode(r0 * d, (r0 + rows) * d, split, &mut page);
        let uncompressed_size = page.len();
        let data = codec.compress(page)?;
        let page = Page::DataPage { buf: data.into(), num_values: (rows * d) as u32, encoding, def_level_encoding: Encoding::RLE, rep_level_encoding: Encoding::RLE, statistics: None };
        let spec = pages.write_page(CompressedPage::new(page, uncompressed_size))?;
        locations.push(PageLocation { offset: spec.offset as i64, compressed_page_size: spec.compressed_size as i32, first_row_index: r0 as i64 });
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        count += 1;
    }
    pages.close()?;
    sink.into_inner()?;
    let metadata = ColumnChunkMetaData::builder(descr)
        .set_compression(codec.parquet())
        .set_encodings(vec![Encoding::RLE, encoding])
        .set_page_encoding_stats(vec![PageEncodingStats { page_type: PageType::DATA_PAGE, encoding, count }])
        .set_total_compressed_size(compressed)
        .set_total_uncompressed_size(uncompressed)
        .set_num_values((n * d) as i64)
        .set_data_page_offset(0)
        .build()?;
    Ok(ColumnCloseResult {
        bytes_written: out.len() as u64,
        rows_written: n as u64,
        metadata,
        bloom_filter: None,
        column_index: None,
        offset_index: Some(OffsetIndexMetaData { page_locations: locations, unencoded_byte_array_data_bytes: None }),
    })
}

/// A temporary of abandoned writers is removed by [`ShardedWriter::open`] once it
/// has not been modified for this long, where its writer cannot be checked (written
/// on another host, no `/proc`, or a name from before temporaries were unique).
const STALE_TEMP: Duration = Duration::from_secs(600);

/// Temporaries this process is writing (so a second writer in the same process
/// never removes them; temporaries of this process's dropped writers are removed).
fn live_temps() -> &'static Mutex<HashSet<PathBuf>> {
    static LIVE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// This host's name as it appears in temporary names: letters, digits, `-` and `_`.
fn host_tag() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let tag: String = raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        if tag.is_empty() { "host".into() } else { tag }
    })
}

/// A uniquely named temporary `<base>.<host>-<pid>-<unique>.tmp` in `dir`,
/// registered as live in this process until dropped.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(dir: &Path, base: &str) -> TempFile {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let salt = crate::rng::SplitMix64::new(nanos ^ (std::process::id() as u64).rotate_left(32)).next_u64();
        // The counter keeps names unique within the process, pid and host across
        // processes; the salt guards against a reused pid.
        let path = dir.join(format!("{base}.{}-{}-{:08x}{:08x}.tmp", host_tag(), std::process::id(), salt as u32, n as u32));
        live_temps().lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone());
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        live_temps().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.path);
    }
}

/// Whether the temporary `path` (file name `name`, ending in `.tmp`) belongs to no
/// live writer: its pid is this process but no writer of this process holds it, or
/// its pid is dead on this host; where the pid cannot be checked, when it has not
/// been modified for [`STALE_TEMP`].
fn temp_abandoned(path: &Path, name: &str) -> bool {
    let owner = name.strip_suffix(".tmp").and_then(|s| s.rsplit_once('.')).and_then(|(_, tag)| {
        let mut parts = tag.rsplitn(3, '-');
        let _unique = parts.next()?;
        let pid: u32 = parts.next()?.parse().ok()?;
        Some((parts.next()?, pid))
    });
    if let Some((host, pid)) = owner
        && host == host_tag()
    {
        if pid == std::process::id() {
            return !live_temps().lock().unwrap_or_else(|e| e.into_inner()).contains(path);
        }
        if cfg!(target_os = "linux") && Path::new("/proc/self").is_dir() {
            return !Path::new(&format!("/proc/{pid}")).exists();
        }
    }
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= STALE_TEMP)
}

/// Name of the file holding the recorded blake3 of a partial-directory shard.
fn hash_file_name(shard_file: &str) -> String {
    format!("{shard_file}.blake3")
}

/// blake3 (lowercase hex) of a file's bytes.
pub(crate) fn blake3_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

fn is_blake3_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Records `hash` for `shard_file` in `dir` (`b3sum` format: `<hex>  <file>`),
/// through a unique temporary, fsynced and renamed.
fn write_hash_file(dir: &Path, shard_file: &str, hash: &str) -> Result<()> {
    let name = hash_file_name(shard_file);
    let tmp = TempFile::new(dir, &name);
    let mut f = std::fs::File::create(&tmp.path).map_err(io(&tmp.path))?;
    f.write_all(format!("{hash}  {shard_file}\n").as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp.path))?;
    drop(f);
    let dest = dir.join(&name);
    std::fs::rename(&tmp.path, &dest).map_err(io(&tmp.path))?;
    Ok(())
}

/// Checks a complete shard of the partial directory: its recorded hash, its row
/// count and its bytes. Returns its size and hash, or why it is not kept.
fn check_partial_shard(dir: &Path, file: &str, rows_per_shard: u64) -> std::result::Result<(u64, String), String> {
    let path = dir.join(file);
    let hash_path = dir.join(hash_file_name(file));
    let recorded = match std::fs::read_to_string(&hash_path) {
        Ok(text) => text.split_whitespace().next().map(str::to_string).filter(|h| is_blake3_hex(h)).ok_or_else(|| format!("its recorded hash {} is unreadable", hash_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(format!("no recorded hash ({} is missing)", hash_file_name(file))),
        Err(e) => return Err(format!("{}: {e}", hash_path.display())),
    };
    match shard_rows(&path) {
        Ok(rows) if rows == rows_per_shard => {}
        Ok(rows) => return Err(format!("holds {rows} rows, not a full shard of {rows_per_shard}")),
        Err(e) => return Err(format!("unreadable ({e})")),
    }
    let bytes = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    let found = blake3_file(&path).map_err(|e| e.to_string())?;
    if found != recorded {
        return Err(format!("its bytes do not match its recorded blake3 (recorded {recorded}, found {found})"));
    }
    Ok((bytes, found))
}

/// Bytes gathered before they are hashed and written: the Parquet writer hands
/// over column chunks in 8 KiB pieces, too small for blake3's wide SIMD paths.
const WRITE_BLOCK: usize = 1 << 20;

/// The open shard's file, hashing every byte written to it (the writer only
/// appends, so the hash is that of the file's content).
struct HashingFile {
    file: std::fs::File,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    /// Bytes written to the file so far.
    bytes: u64,
}

impl HashingFile {
    fn new(file: std::fs::File) -> HashingFile {
        HashingFile { file, hasher: blake3::Hasher::new(), buf: Vec::with_capacity(WRITE_BLOCK), bytes: 0 }
    }

    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.hasher.update(data);
        self.file.write_all(data)?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    fn drain(&mut self) -> std::io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let r = self.put(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }
}

impl Write for HashingFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > WRITE_BLOCK {
            self.drain()?;
        }
        if data.len() >= WRITE_BLOCK {
            self.put(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain()?;
        self.file.flush()
    }
}

struct OpenShard {
    index: usize,
    tmp: TempFile,
    writer: SerializedFileWriter<HashingFile>,
    rows: usize,
}

/// Writes a store's shards into a partial directory, resumable per shard.
pub struct ShardedWriter {
    dir: PathBuf,
    meta: StoreMeta,
    opts: WriterOptions,
    parquet_schema: TypePtr,
    props: Arc<WriterProperties>,
    shards: Vec<ShardInfo>,
    resume_row: u64,
    current: Option<OpenShard>,
    seq: Vec<u64>,
    pos: Vec<u32>,
    token: Vec<u32>,
    hooks: Vec<HookBuf>,
    rows_done: u64,
    /// Leaf column of each hook, and how its pages are encoded and compressed.
    hook_columns: Vec<ColumnDescPtr>,
    codec: PageCodec,
    /// Reused buffer of one encoded hook column chunk.
    chunk: Vec<u8>,
    /// Shards of an earlier run removed by `open`, with the reason.
    discarded: Vec<String>,
    /// Non-finite values stored (with `allow_nonfinite`).
    nonfinite: u64,
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Makes the rename durable; directories cannot be opened for sync everywhere.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn schema_for(meta: &StoreMeta) -> SchemaRef {
    let mut fields = vec![Field::new("seq", DataType::UInt64, false), Field::new("pos", DataType::UInt32, false), Field::new("token", DataType::UInt32, false)];
    for h in &meta.hooks {
        let item = Arc::new(Field::new("item", meta.dtype.arrow(), false));
        fields.push(Field::new(&h.name, DataType::FixedSizeList(item, h.d as i32), false));
    }
    Arc::new(Schema::new(fields))
}

fn properties(schema: &Schema, meta: &StoreMeta, opts: &WriterOptions) -> Result<WriterProperties> {
    use parquet::basic::Compression as C;
    let codec = match opts.compression {
        Compression::None => C::UNCOMPRESSED,
        Compression::Lz4 => C::LZ4_RAW,
        Compression::Zstd(l) | Compression::SplitZstd(l) => C::ZSTD(ZstdLevel::try_new(l).map_err(|e| DataError::Config { what: "compression", message: e.to_string() })?),
    };
    let mut kv = BTreeMap::new();
    kv.insert("saepipe.format".to_string(), "activations".to_string());
    kv.insert("saepipe.format_version".to_string(), ACTIVATIONS_FORMAT_VERSION.to_string());
    kv.insert("saepipe.store_meta".to_string(), serde_json::to_string(meta).expect("serializable"));
    kv.insert("saepipe.rows_per_shard".to_string(), opts.rows_per_shard.to_string());
    kv.insert("ARROW:schema".to_string(), encoded_arrow_schema(schema)?);
    let mut b = WriterProperties::builder()
        .set_compression(codec)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_created_by("saepipe".into())
        .set_max_row_group_size(opts.row_group_rows)
        .set_key_value_metadata(Some(kv_list(&kv)));
    if let Compression::SplitZstd(_) = opts.compression {
        let descr = ArrowSchemaConverter::new().convert(schema).map_err(|e| DataError::Config { what: "schema", message: e.to_string() })?;
        for col in descr.columns() {
            if meta.hooks.iter().any(|h| col.path().parts()[0] == h.name) {
                b = b.set_column_encoding(col.path().clone(), Encoding::BYTE_STREAM_SPLIT);
            }
        }
    }
    Ok(b.build())
}

/// The `ARROW:schema` value Arrow writers embed (so readers see FixedSizeList columns
/// and uint types), taken from an empty file written by the Arrow writer.
fn encoded_arrow_schema(schema: &Schema) -> Result<String> {
    let err = |e: parquet::errors::ParquetError| DataError::Config { what: "schema", message: e.to_string() };
    let mut w = ArrowWriter::try_new(Vec::new(), Arc::new(schema.clone()), None).map_err(err)?;
    let md = w.finish().map_err(err)?;
    md.file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "ARROW:schema"))
        .and_then(|k| k.value.clone())
        .ok_or_else(|| DataError::Config { what: "schema", message: "the Arrow writer embedded no schema".into() })
}

/// Values checked per step of the copy loops below (in L1 while checked).
const CHECK_BLOCK: usize = 4096;

/// `|x|` bit patterns from which a value is stored as infinity or NaN: float32
/// infinity, and 65520 for float16 (the first value that rounds to infinity).
const F32_REFUSED: u32 = 0x7f80_0000;
const F16_REFUSED: u32 = 0x477f_f000;

/// Whether `x` is stored as NaN or infinity (`limit`: one of the constants above).
fn refused(x: f32, limit: u32) -> bool {
    x.to_bits() & 0x7fff_ffff >= limit
}

/// How many of `block` are refused; branch-free, so it vectorizes.
fn count_refused(block: &[f32], limit: u32) -> u64 {
    block.iter().fold(0u32, |n, &x| n + refused(x, limit) as u32) as u64
}

/// Appends `vals` to `dst` and returns how many are not finite.
fn append_f32(dst: &mut Vec<f32>, vals: &[f32]) -> u64 {
    let mut bad = 0u64;
    for block in vals.chunks(CHECK_BLOCK) {
        dst.extend_from_slice(block);
        bad += count_refused(block, F32_REFUSED);
    }
    bad
}

/// Appends `vals` converted to float16 to `dst` and returns how many of the stored
/// values are not finite (NaN, infinite, or beyond the float16 range).
fn append_f16(dst: &mut Vec<half::f16>, vals: &[f32]) -> u64 {
    let at = dst.len();
    dst.resize(at + vals.len(), half::f16::ZERO);
    let mut bad = 0u64;
    for (out, block) in dst[at..].chunks_mut(CHECK_BLOCK).zip(vals.chunks(CHECK_BLOCK)) {
        // The slice conversion is vectorized (F16C) where the CPU has it.
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(out, block);
        bad += count_refused(block, F16_REFUSED);
    }
    bad
}

fn shard_rows(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let r = SerializedFileReader::new(file).map_err(pq(path))?;
    Ok(r.metadata().file_metadata().num_rows() as u64)
}

impl ShardedWriter {
    /// Opens (or creates) the partial directory `dir` of a store. Complete shards
    /// from an earlier run with the same metadata and options are kept when their
    /// bytes match their recorded blake3; a shard that does not (or has no recorded
    /// hash, or cannot be read) is removed with those after it and written again
    /// ([`discarded`](Self::discarded) says which and why). Temporaries of writers
    /// that are gone are removed; those of live writers (another process on this
    /// host, or another writer in this one) are left alone.
    pub fn open(dir: &Path, meta: StoreMeta, opts: WriterOptions) -> Result<ShardedWriter> {
        if opts.rows_per_shard == 0 || opts.row_group_rows == 0 {
            return Err(DataError::Config { what: "writer options", message: "rows_per_shard and row_group_rows must be at least 1".into() });
        }
        if meta.hooks.is_empty() {
            return Err(DataError::Config { what: "store metadata", message: "no hooks".into() });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let wj = dir.join(WRITER_JSON);
        let identity = serde_json::json!({ "meta": meta, "options": opts, "format_version": ACTIVATIONS_FORMAT_VERSION });
        if wj.is_file() {
            let text = std::fs::read_to_string(&wj).map_err(io(&wj))?;
            let old: serde_json::Value = serde_json::from_str(&text).map_err(|e| format(&wj, format!("invalid JSON: {e}")))?;
            if old != identity {
                return Err(format(&wj, "this partial store was started with different metadata or options; remove the directory to start over"));
            }
        } else {
            let tmp = TempFile::new(dir, WRITER_JSON);
            std::fs::write(&tmp.path, serde_json::to_vec_pretty(&identity).expect("serializable")).map_err(io(&tmp.path))?;
            std::fs::rename(&tmp.path, &wj).map_err(io(&wj))?;
        }
        // Removal tolerates files that vanish meanwhile (another writer removing them).
        let remove = |p: &Path| match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(p)(e)),
            _ => Ok(()),
        };
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let p = e.map_err(io(dir))?.path();
            if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && name.ends_with(".tmp")
                && temp_abandoned(&p, name)
            {
                remove(&p)?;
            }
        }
        let mut shards = Vec::new();
        let mut discarded = Vec::new();
        let mut i = 0;
        loop {
            let file = shard_name(i);
            if !dir.join(&file).is_file() {
                break;
            }
            match check_partial_shard(dir, &file, opts.rows_per_shard as u64) {
                Ok((bytes, hash)) => {
                    shards.push(ShardInfo { file, first_row: i as u64 * opts.rows_per_shard as u64, rows: opts.rows_per_shard as u64, bytes, blake3: Some(hash) });
                    i += 1;
                }
                Err(reason) => {
                    discarded.push(format!("{file}: {reason}; discarded, it is written again"));
                    break;
                }
            }
        }
        // Anything from the first missing or discarded shard on is redone.
        let mut later = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let p = e.map_err(io(dir))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let (stem, is_shard) = match name.strip_suffix(".blake3") {
                Some(stem) => (stem, false),
                None => (name, true),
            };
            if let Some(k) = stem.strip_prefix("shard-").and_then(|n| n.strip_suffix(".parquet")).and_then(|n| n.parse::<usize>().ok())
                && k >= i
            {
                if is_shard && k > i {
                    later.push(name.to_string());
                }
                remove(&p)?;
            }
        }
        later.sort();
        discarded.extend(later.into_iter().map(|f| format!("{f}: comes after {}, which is written again; discarded", shard_name(i))));
        let schema = schema_for(&meta);
        let props = Arc::new(properties(&schema, &meta, &opts)?);
        let descr: SchemaDescriptor = ArrowSchemaConverter::new().convert(&schema).map_err(|e| DataError::Config { what: "schema", message: e.to_string() })?;
        let parquet_schema = descr.root_schema_ptr();
        let hook_columns: Vec<ColumnDescPtr> = (0..meta.hooks.len()).map(|k| descr.column(3 + k)).collect();
        for (h, c) in meta.hooks.iter().zip(&hook_columns) {
            // The level encoding below assumes a required list of required values.
            if h.d == 0 || c.max_def_level() != 1 || c.max_rep_level() != 1 {
                return Err(DataError::Config { what: "store metadata", message: format!("hook `{}`: width must be at least 1", h.name) });
            }
        }
        let codec = PageCodec::new(&opts.compression)?;
        let hooks = meta.hooks.iter().map(|_| if meta.dtype == Dtype::F32 { HookBuf::F32(Vec::new()) } else { HookBuf::F16(Vec::new()) }).collect();
        let resume_row = i as u64 * opts.rows_per_shard as u64;
        Ok(ShardedWriter {
            dir: dir.into(),
            meta,
            opts,
            parquet_schema,
            props,
            shards,
            resume_row,
            current: None,
            seq: Vec::new(),
            pos: Vec::new(),
            token: Vec::new(),
            hooks,
            rows_done: resume_row,
            hook_columns,
            codec,
            chunk: Vec::new(),
            discarded,
            nonfinite: 0,
        })
    }

    /// Shards of an earlier run that [`open`](Self::open) removed (to be written
    /// again), each with the reason, for the caller to report.
    pub fn discarded(&self) -> &[String] {
        &self.discarded
    }

    /// Non-finite values stored so far (only with `allow_nonfinite`; without it
    /// they are refused).
    pub fn nonfinite_count(&self) -> u64 {
        self.nonfinite
    }

    /// Index of the first shard this writer will write (complete shards before it were kept).
    pub fn next_shard_index(&self) -> usize {
        self.shards.len()
    }

    /// First row (token index in store order) not on disk when the writer was opened:
    /// the caller restarts computing there (or earlier: [`push`](Self::push) skips rows it has).
    pub fn resume_row(&self) -> u64 {
        self.resume_row
    }

    /// Rows accepted so far (on disk or buffered), counted from the store's first row.
    pub fn rows_done(&self) -> u64 {
        self.rows_done
    }

    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }

    /// Appends rows whose first row has store index `first_row`. Rows the store
    /// already has are skipped; a gap is an error. A NaN or infinite value (or, in a
    /// float16 store, one beyond the float16 range) is [`DataError::NonFinite`]
    /// unless the options allow it; the rows of that call from the row group it
    /// falls in on are then not taken ([`rows_done`](Self::rows_done) says where the
    /// store stands).
    pub fn push(&mut self, first_row: u64, rows: &Rows) -> Result<()> {
        let n = rows.seq.len();
        if rows.pos.len() != n || rows.token.len() != n {
            return Err(format(&self.dir, format!("push: {n} seq values but {} pos and {} token values", rows.pos.len(), rows.token.len())));
        }
        if rows.hooks.len() != self.meta.hooks.len() {
            return Err(format(&self.dir, format!("push: {} hook arrays for {} hooks", rows.hooks.len(), self.meta.hooks.len())));
        }
        for (h, v) in self.meta.hooks.iter().zip(rows.hooks) {
            if v.len() != n * h.d {
                return Err(DataError::Shape { path: self.dir.clone(), hook: h.name.clone(), expected: h.d, found: v.len().checked_div(n).unwrap_or(0) });
            }
        }
        if first_row > self.rows_done {
            return Err(format(&self.dir, format!("push: rows start at {first_row} but the store has rows up to {} only", self.rows_done)));
        }
        let mut start = ((self.rows_done - first_row) as usize).min(n);
        while start < n {
            if self.seq.is_empty() {
                // Exact capacity: no regrowth copies while the row group fills.
                let room = self.group_room();
                self.seq.reserve_exact(room);
                self.pos.reserve_exact(room);
                self.token.reserve_exact(room);
                for (h, buf) in self.meta.hooks.iter().zip(self.hooks.iter_mut()) {
                    match buf {
                        HookBuf::F32(b) => b.reserve_exact(room * h.d),
                        HookBuf::F16(b) => b.reserve_exact(room * h.d),
                    }
                }
            }
            let room = self.group_room() - self.seq.len();
            let end = (start + room).min(n);
            let buffered = self.seq.len();
            self.seq.extend_from_slice(&rows.seq[start..end]);
            self.pos.extend_from_slice(&rows.pos[start..end]);
            self.token.extend_from_slice(&rows.token[start..end]);
            let mut nonfinite = 0;
            for (k, ((h, buf), v)) in self.meta.hooks.iter().zip(self.hooks.iter_mut()).zip(rows.hooks).enumerate() {
                let vals = &v[start * h.d..end * h.d];
                let bad = match buf {
                    HookBuf::F32(b) => append_f32(b, vals),
                    HookBuf::F16(b) => append_f16(b, vals),
                };
                if bad > 0 && !self.opts.allow_nonfinite {
                    // Take back this row group's part of the call, then name the first bad value.
                    self.seq.truncate(buffered);
                    self.pos.truncate(buffered);
                    self.token.truncate(buffered);
                    for (spec, buf) in self.meta.hooks.iter().zip(self.hooks.iter_mut()).take(k + 1) {
                        match buf {
                            HookBuf::F32(b) => b.truncate(buffered * spec.d),
                            HookBuf::F16(b) => b.truncate(buffered * spec.d),
                        }
                    }
                    let limit = if self.meta.dtype == Dtype::F16 { F16_REFUSED } else { F32_REFUSED };
                    let (at, x) = vals.iter().copied().enumerate().find(|&(_, x)| refused(x, limit)).expect("a non-finite value was counted");
                    let value = if x.is_nan() {
                        "NaN".to_string()
                    } else if x.is_infinite() {
                        format!("{}inf", if x > 0.0 { "+" } else { "-" })
                    } else {
                        format!("{x}, beyond the float16 range")
                    };
                    return Err(DataError::NonFinite { path: self.dir.clone(), hook: h.name.clone(), row: first_row + (start + at / h.d) as u64, value });
                }
                nonfinite += bad;
            }
            self.nonfinite += nonfinite;
            self.rows_done += (end - start) as u64;
            start = end;
            if self.seq.len() == self.group_room() {
                self.write_group()?;
            }
        }
        Ok(())
    }

    /// Rows the buffered row group may hold: a full row group, cut at the shard end.
    fn group_room(&self) -> usize {
        let in_shard = self.current.as_ref().map_or(0, |s| s.rows);
        self.opts.row_group_rows.min(self.opts.rows_per_shard - in_shard)
    }

    fn write_group(&mut self) -> Result<()> {
        let n = self.seq.len();
        if n == 0 {
            return Ok(());
        }
        if self.current.is_none() {
            let index = self.shards.len();
            // Gone if another writer of this partial directory finished meanwhile.
            std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
            let tmp = TempFile::new(&self.dir, &shard_name(index));
            let file = std::fs::File::create(&tmp.path).map_err(io(&tmp.path))?;
            let file = HashingFile::new(file);
            let writer = SerializedFileWriter::new(file, self.parquet_schema.clone(), self.props.clone()).map_err(pq(&tmp.path))?;
            self.current = Some(OpenShard { index, tmp, writer, rows: 0 });
        }
        let shard = self.current.as_mut().expect("opened above");
        let tmp = shard.tmp.path.clone();
        let e = pq(&tmp);
        // seq/pos/token go through the typed column writers; the hook columns are
        // encoded into pages here and appended as finished column chunks: the column
        // writers cost per value (levels, and one FixedLenByteArray per Float16).
        let mut rg = shard.writer.next_row_group().map_err(&e)?;
        let seq: Vec<i64> = self.seq.drain(..).map(|x| x as i64).collect();
        let pos: Vec<i32> = self.pos.drain(..).map(|x| x as i32).collect();
        let token: Vec<i32> = self.token.drain(..).map(|x| x as i32).collect();
        let mut col = rg.next_column().map_err(&e)?.ok_or_else(|| format(&tmp, "schema has no `seq` column"))?;
        col.typed::<Int64Type>().write_batch(&seq, None, None).map_err(&e)?;
        col.close().map_err(&e)?;
        for vals in [&pos, &token] {
            let mut col = rg.next_column().map_err(&e)?.ok_or_else(|| format(&tmp, "schema has too few columns"))?;
            col.typed::<Int32Type>().write_batch(vals, None, None).map_err(&e)?;
            col.close().map_err(&e)?;
        }
        for (k, (h, buf)) in self.meta.hooks.iter().zip(self.hooks.iter_mut()).enumerate() {
            let close = encode_hook_chunk(&mut self.chunk, self.hook_columns[k].clone(), buf, n, h.d, &self.codec, PageCodec::split(&self.opts.compression)).map_err(&e)?;
            rg.append_column(&ChunkBytes(&self.chunk), close).map_err(&e)?;
            buf.clear();
        }
        rg.close().map_err(&e)?;
        shard.rows += n;
        let full = shard.rows == self.opts.rows_per_shard;
        if full {
            self.close_shard()?;
        }
        Ok(())
    }

    /// Finishes the open shard: fsync, its blake3 recorded next to it
    /// (`shard-NNNNN.parquet.blake3`), then the rename to `shard-NNNNN.parquet`.
    fn close_shard(&mut self) -> Result<()> {
        let Some(shard) = self.current.take() else { return Ok(()) };
        let tmp = shard.tmp.path.clone();
        let mut file = shard.writer.into_inner().map_err(pq(&tmp))?;
        file.flush().and_then(|_| file.file.sync_all()).map_err(io(&tmp))?;
        // The writer only appends: the bytes hashed are the file's content.
        let bytes = file.file.metadata().map_err(io(&tmp))?.len();
        if bytes != file.bytes {
            return Err(format(&tmp, format!("holds {bytes} bytes after {} were written", file.bytes)));
        }
        let hash = file.hasher.finalize().to_hex().to_string();
        drop(file);
        let name = shard_name(shard.index);
        write_hash_file(&self.dir, &name, &hash)?;
        let dest = self.dir.join(&name);
        std::fs::rename(&tmp, &dest).map_err(io(&tmp))?;
        drop(shard.tmp);
        sync_dir(&self.dir)?;
        self.shards.push(ShardInfo { file: name, first_row: shard.index as u64 * self.opts.rows_per_shard as u64, rows: shard.rows as u64, bytes, blake3: Some(hash) });
        Ok(())
    }

    /// Writes the last (short) shard, moves the shards into `dest_dir` (created; on
    /// the same filesystem, by rename) and writes `store.json` there last. A shard
    /// that another writer of the same partial directory already moved into
    /// `dest_dir` is accepted when its bytes match this writer's.
    pub fn finish(mut self, dest_dir: &Path) -> Result<StoreInfo> {
        self.write_group()?;
        self.close_shard()?;
        std::fs::create_dir_all(dest_dir).map_err(io(dest_dir))?;
        for s in &self.shards {
            let (from, to) = (self.dir.join(&s.file), dest_dir.join(&s.file));
            let expected = s.blake3.as_deref().expect("shards of this writer are hashed");
            let check = |what: &str| -> Result<()> {
                let found = blake3_file(&to).map_err(io(&to))?;
                if found != expected {
                    return Err(DataError::Damaged { path: to.clone(), expected: format!("blake3 {expected} ({what})"), found: format!("blake3 {found}") });
                }
                Ok(())
            };
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
                    // Another writer of this partial directory finished first.
                    if !to.is_file() {
                        return Err(io(&from)(e));
                    }
                    check("the shard this writer wrote, moved by another writer")?;
                }
                Err(_) => {
                    // Another filesystem: copy, check, then drop the partial copy.
                    std::fs::copy(&from, &to).map_err(io(&to))?;
                    std::fs::File::open(&to).and_then(|f| f.sync_all()).map_err(io(&to))?;
                    check("the shard this writer wrote, copied")?;
                    std::fs::remove_file(&from).map_err(io(&from))?;
                }
            }
            let _ = std::fs::remove_file(self.dir.join(hash_file_name(&s.file)));
        }
        let info = StoreInfo {
            format: "saepipe-activations".into(),
            format_version: ACTIVATIONS_FORMAT_VERSION,
            meta: self.meta.clone(),
            total_tokens: self.rows_done,
            rows_per_shard: self.opts.rows_per_shard,
            compression: self.opts.compression,
            shards: self.shards.clone(),
        };
        let sj = dest_dir.join(STORE_JSON);
        let tmp = TempFile::new(dest_dir, STORE_JSON);
        std::fs::write(&tmp.path, serde_json::to_vec_pretty(&info).expect("serializable")).map_err(io(&tmp.path))?;
        std::fs::rename(&tmp.path, &sj).map_err(io(&sj))?;
        sync_dir(dest_dir)?;
        let wj = self.dir.join(WRITER_JSON);
        match std::fs::remove_file(&wj) {
            // Gone already when another writer of this partial directory finished first.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&wj)(e)),
            _ => {}
        }
        // Left in place while another live writer still has a temporary in it.
        let _ = std::fs::remove_dir(&self.dir);
        Ok(info)
    }
}
