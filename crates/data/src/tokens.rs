//! The token table: one Parquet file, one row per context (`seq` u64,
//! `tokens` `FixedSizeList<u32>[context_size]`), metadata as key-value pairs.
//! Written in row groups of [`ROW_GROUP_CONTEXTS`] contexts so memory stays bounded,
//! to a temporary name renamed into place when complete.

use crate::error::{DataError, Result, format, io, pq};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, RecordBatch, UInt32Array, UInt64Array};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the token table format; readers reject others.
pub const TOKENS_FORMAT_VERSION: u32 = 1;
/// Contexts per Parquet row group (what the writer buffers before writing).
pub const ROW_GROUP_CONTEXTS: usize = 8192;

/// What a token table records about how it was made.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenTableMeta {
    /// blake3 (hex) of the tokenizer.json bytes.
    pub tokenizer_fingerprint: String,
    /// The packing, as [`Mode::name`](crate::Mode::name) writes it.
    pub mode: String,
    /// Tokens per context (row).
    pub context_size: usize,
    /// The tokenizer's BOS id when the table was made.
    pub bos_id: Option<u32>,
    /// The tokenizer's EOS id.
    pub eos_id: Option<u32>,
    /// The pad id (TransformerLens modes pad short batches with it).
    pub pad_id: Option<u32>,
    /// Free-form description of the corpus and options (JSON).
    pub extra: serde_json::Value,
}

fn opt(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

impl TokenTableMeta {
    fn to_kv(&self, contexts: u64) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("saepipe.format".into(), "tokens".into());
        m.insert("saepipe.format_version".into(), TOKENS_FORMAT_VERSION.to_string());
        m.insert("saepipe.tokenizer_fingerprint".into(), self.tokenizer_fingerprint.clone());
        m.insert("saepipe.mode".into(), self.mode.clone());
        m.insert("saepipe.context_size".into(), self.context_size.to_string());
        m.insert("saepipe.bos_id".into(), opt(self.bos_id));
        m.insert("saepipe.eos_id".into(), opt(self.eos_id));
        m.insert("saepipe.pad_id".into(), opt(self.pad_id));
        m.insert("saepipe.num_contexts".into(), contexts.to_string());
        m.insert("saepipe.extra".into(), self.extra.to_string());
        m
    }

    fn from_kv(path: &Path, m: &BTreeMap<String, String>) -> Result<(TokenTableMeta, u64)> {
        let get = |k: &str| m.get(k).ok_or_else(|| format(path, format!("missing metadata key `{k}`")));
        let num = |k: &str| -> Result<u64> {
            get(k)?.parse().map_err(|_| format(path, format!("metadata `{k}` is not a number")))
        };
        let id = |k: &str| -> Result<Option<u32>> {
            match get(k)?.as_str() {
                "none" => Ok(None),
                s => s.parse().map(Some).map_err(|_| format(path, format!("metadata `{k}` is not a token id"))),
            }
        };
        let meta = TokenTableMeta {
            tokenizer_fingerprint: get("saepipe.tokenizer_fingerprint")?.clone(),
            mode: get("saepipe.mode")?.clone(),
            context_size: num("saepipe.context_size")? as usize,
            bos_id: id("saepipe.bos_id")?,
            eos_id: id("saepipe.eos_id")?,
            pad_id: id("saepipe.pad_id")?,
            extra: serde_json::from_str(get("saepipe.extra")?)
                .map_err(|e| format(path, format!("metadata `saepipe.extra`: {e}")))?,
        };
        Ok((meta, num("saepipe.num_contexts")?))
    }
}

pub(crate) fn kv_list(m: &BTreeMap<String, String>) -> Vec<KeyValue> {
    m.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect()
}

/// Reads a file's key-value metadata and checks `saepipe.format` and its version.
pub(crate) fn check_kv(
    path: &Path,
    md: &parquet::file::metadata::FileMetaData,
    kind: &'static str,
    supported: u32,
) -> Result<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = md
        .key_value_metadata()
        .map(|kv| kv.iter().filter_map(|k| k.value.clone().map(|v| (k.key.clone(), v))).collect())
        .unwrap_or_default();
    match m.get("saepipe.format") {
        Some(f) if f == kind => {}
        Some(f) => return Err(format(path, format!("is a saepipe `{f}` file, expected `{kind}`"))),
        None => return Err(format(path, "not a saepipe file (no `saepipe.format` metadata)")),
    }
    match m.get("saepipe.format_version") {
        Some(v) if v.parse::<u32>().ok() == Some(supported) => Ok(m),
        Some(v) => Err(DataError::UnsupportedVersion { path: path.into(), kind, found: v.clone(), supported }),
        None => Err(format(path, "no `saepipe.format_version` metadata")),
    }
}

fn token_schema(ctx: usize) -> SchemaRef {
    let item = Arc::new(Field::new("item", DataType::UInt32, false));
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("tokens", DataType::FixedSizeList(item, ctx as i32), false),
    ]))
}

/// Streams contexts into a token table.
pub struct TokenTableWriter {
    path: PathBuf,
    tmp: PathBuf,
    meta: TokenTableMeta,
    writer: ArrowWriter<std::fs::File>,
    schema: SchemaRef,
    buf: Vec<u32>,
    contexts: u64,
    provenance: Vec<(String, String)>,
}

impl TokenTableWriter {
    /// Starts writing the table `path`, under a `.parquet.tmp` name until
    /// [`finish`](Self::finish) renames it.
    pub fn create(path: &Path, meta: TokenTableMeta) -> Result<TokenTableWriter> {
        if meta.context_size == 0 {
            return Err(DataError::Config { what: "context_size", message: "must be at least 1".into() });
        }
        let tmp = path.with_extension("parquet.tmp");
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        // Tokens: zstd(3) shrinks u32 ids ~3x at negligible cost next to tokenization.
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_created_by("saepipe".into())
            .set_max_row_group_size(ROW_GROUP_CONTEXTS)
            .build();
        let schema = token_schema(meta.context_size);
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(pq(path))?;
        Ok(TokenTableWriter {
            path: path.into(),
            tmp,
            meta,
            writer,
            schema,
            buf: Vec::new(),
            contexts: 0,
            provenance: Vec::new(),
        })
    }

    /// Key-value pairs that say where the table comes from (saepipe version,
    /// stage, cache key, ...), written to the footer next to the format's own
    /// keys, which they cannot replace.
    pub fn set_provenance(&mut self, kv: &[(String, String)]) {
        self.provenance = kv.to_vec();
    }

    /// Contexts pushed so far.
    pub fn contexts(&self) -> u64 {
        self.contexts
    }

    /// Appends one context of exactly `context_size` tokens.
    pub fn push(&mut self, context: &[u32]) -> Result<()> {
        if context.len() != self.meta.context_size {
            return Err(format(
                &self.path,
                format!("context of {} tokens, expected {}", context.len(), self.meta.context_size),
            ));
        }
        self.buf.extend_from_slice(context);
        self.contexts += 1;
        if self.buf.len() == ROW_GROUP_CONTEXTS * self.meta.context_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let ctx = self.meta.context_size;
        let rows = self.buf.len() / ctx;
        let first = self.contexts - rows as u64;
        let seq = UInt64Array::from_iter_values(first..first + rows as u64);
        let values = UInt32Array::new(ScalarBuffer::from(std::mem::take(&mut self.buf)), None);
        let item = Arc::new(Field::new("item", DataType::UInt32, false));
        let toks = FixedSizeListArray::new(item, ctx as i32, Arc::new(values), None);
        let cols: Vec<ArrayRef> = vec![Arc::new(seq), Arc::new(toks)];
        let batch = RecordBatch::try_new(self.schema.clone(), cols).map_err(crate::error::arrow(&self.path))?;
        self.writer.write(&batch).map_err(pq(&self.path))?;
        self.writer.flush().map_err(pq(&self.path))
    }

    /// Writes the footer (with the metadata) and renames the file into place.
    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        let mut all = self.meta.to_kv(self.contexts);
        for (k, v) in &self.provenance {
            all.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for kv in kv_list(&all) {
            self.writer.append_key_value_metadata(kv);
        }
        let file = self.writer.into_inner().map_err(pq(&self.path))?;
        file.sync_all().map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        Ok(self.contexts)
    }
}

/// Reads a token table back, context by context, one row group in memory at a time.
pub struct TokenTableReader {
    path: PathBuf,
    /// The table's metadata.
    pub meta: TokenTableMeta,
    /// Contexts (rows) in the table.
    pub num_contexts: u64,
    reader: ParquetRecordBatchReader,
    current: Option<(Arc<FixedSizeListArray>, usize)>,
}

impl TokenTableReader {
    /// Opens a table, checking its format version, metadata and column type.
    pub fn open(path: &Path) -> Result<TokenTableReader> {
        let file = std::fs::File::open(path).map_err(io(path))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq(path))?;
        let kv = check_kv(path, b.metadata().file_metadata(), "tokens", TOKENS_FORMAT_VERSION)?;
        let (meta, num_contexts) = TokenTableMeta::from_kv(path, &kv)?;
        match b.schema().field_with_name("tokens").map(|f| f.data_type().clone()) {
            Ok(DataType::FixedSizeList(item, w))
                if *item.data_type() == DataType::UInt32 && w as usize == meta.context_size => {}
            Ok(other) => {
                return Err(format(
                    path,
                    format!("column `tokens` has type {other}, expected FixedSizeList<UInt32>[{}]", meta.context_size),
                ));
            }
            Err(_) => return Err(format(path, "no `tokens` column")),
        }
        let reader = b.with_batch_size(4096).build().map_err(pq(path))?;
        Ok(TokenTableReader { path: path.into(), meta, num_contexts, reader, current: None })
    }

    /// Reads every context into one row-major vector (small tables only).
    pub fn read_all(self) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(self.num_contexts as usize * self.meta.context_size);
        for c in self {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }
}

impl Iterator for TokenTableReader {
    type Item = Result<Vec<u32>>;

    fn next(&mut self) -> Option<Result<Vec<u32>>> {
        loop {
            if let Some((list, i)) = self.current.as_mut()
                && *i < list.len()
            {
                let row = list.value(*i);
                *i += 1;
                let vals = row.as_any().downcast_ref::<UInt32Array>().expect("checked at open");
                return Some(Ok(vals.values().to_vec()));
            }
            match self.reader.next()? {
                Err(e) => return Some(Err(DataError::Parquet { path: self.path.clone(), message: e.to_string() })),
                Ok(batch) => {
                    let Some(col) = batch.column_by_name("tokens") else {
                        return Some(Err(format(&self.path, "no `tokens` column")));
                    };
                    let list = col.as_any().downcast_ref::<FixedSizeListArray>().expect("checked at open").clone();
                    self.current = Some((Arc::new(list), 0));
                }
            }
        }
    }
}
