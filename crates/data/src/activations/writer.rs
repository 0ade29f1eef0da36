//! [`ShardedWriter`]: row groups buffered and written into shards of the partial
//! directory, resumed per shard, and moved into the store by `finish`.

use super::pages::{
    ChunkBytes, F16_REFUSED, F32_REFUSED, HookBuf, PageCodec, append_f16, append_f32, encode_hook_chunk, refused,
};
use super::partial::{
    HashingFile, TempFile, blake3_file, check_partial_shard, hash_file_name, sync_dir, temp_abandoned, write_hash_file,
};
use super::{
    ACTIVATIONS_FORMAT_VERSION, Compression, Dtype, Rows, STORE_INDEX_FILE, ShardInfo, StoreInfo, StoreMeta,
    WRITER_JSON, WriterOptions, shard_name,
};
use crate::error::{DataError, Result, format, io, pq};
use crate::tokens::kv_list;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Encoding, ZstdLevel};
use parquet::data_type::{Int32Type, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor, TypePtr};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

fn schema_for(meta: &StoreMeta) -> SchemaRef {
    let mut fields = vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("pos", DataType::UInt32, false),
        Field::new("token", DataType::UInt32, false),
    ];
    for h in &meta.hooks {
        let item = Arc::new(Field::new("item", meta.dtype.arrow(), false));
        fields.push(Field::new(&h.name, DataType::FixedSizeList(item, h.d as i32), false));
    }
    Arc::new(Schema::new(fields))
}

fn properties(
    schema: &Schema,
    meta: &StoreMeta,
    opts: &WriterOptions,
    provenance: &[(String, String)],
) -> Result<WriterProperties> {
    use parquet::basic::Compression as C;
    let codec = match opts.compression {
        Compression::None => C::UNCOMPRESSED,
        Compression::Lz4 => C::LZ4_RAW,
        Compression::Zstd(l) | Compression::SplitZstd(l) => C::ZSTD(
            ZstdLevel::try_new(l).map_err(|e| DataError::Config { what: "compression", message: e.to_string() })?,
        ),
    };
    let mut kv = BTreeMap::new();
    kv.insert("saepipe.format".to_string(), "activations".to_string());
    kv.insert("saepipe.format_version".to_string(), ACTIVATIONS_FORMAT_VERSION.to_string());
    kv.insert("saepipe.store_meta".to_string(), serde_json::to_string(meta).expect("serializable"));
    kv.insert("saepipe.rows_per_shard".to_string(), opts.rows_per_shard.to_string());
    kv.insert("ARROW:schema".to_string(), encoded_arrow_schema(schema)?);
    for (k, v) in provenance {
        kv.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut b = WriterProperties::builder()
        .set_compression(codec)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_created_by("saepipe".into())
        .set_max_row_group_size(opts.row_group_rows)
        .set_key_value_metadata(Some(kv_list(&kv)));
    if let Compression::SplitZstd(_) = opts.compression {
        let descr = ArrowSchemaConverter::new()
            .convert(schema)
            .map_err(|e| DataError::Config { what: "schema", message: e.to_string() })?;
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
            return Err(DataError::Config {
                what: "writer options",
                message: "rows_per_shard and row_group_rows must be at least 1".into(),
            });
        }
        if meta.hooks.is_empty() {
            return Err(DataError::Config { what: "store metadata", message: "no hooks".into() });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let wj = dir.join(WRITER_JSON);
        // `allow_nonfinite` is recorded (when true) but is not part of what must
        // match: turning it on resumes finite shards; turning it off starts over,
        // since saved shards may hold values it refuses.
        let identity_with = |allow: bool| serde_json::json!({ "meta": meta, "options": WriterOptions { allow_nonfinite: allow, ..opts.clone() }, "format_version": ACTIVATIONS_FORMAT_VERSION });
        let mut restart = None;
        let mut record = true;
        if wj.is_file() {
            let text = std::fs::read_to_string(&wj).map_err(io(&wj))?;
            let old: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format(&wj, format!("invalid JSON: {e}")))?;
            let old_allowed = old["options"]["allow_nonfinite"].as_bool().unwrap_or(false);
            if old != identity_with(old_allowed) {
                return Err(format(
                    &wj,
                    "this partial store was started with different metadata or options; remove the directory to start over",
                ));
            }
            if old_allowed && !opts.allow_nonfinite {
                restart =
                    Some("saved shards were written with allow_nonfinite and may hold non-finite values".to_string());
            }
            record = old_allowed != opts.allow_nonfinite;
        }
        if record {
            let tmp = TempFile::new(dir, WRITER_JSON);
            std::fs::write(
                &tmp.path,
                serde_json::to_vec_pretty(&identity_with(opts.allow_nonfinite)).expect("serializable"),
            )
            .map_err(io(&tmp.path))?;
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
        if let Some(reason) = &restart {
            discarded.push(format!("all saved shards: {reason}; they are written again"));
        }
        while restart.is_none() {
            let file = shard_name(i);
            if !dir.join(&file).is_file() {
                break;
            }
            match check_partial_shard(dir, &file, opts.rows_per_shard as u64) {
                Ok((bytes, hash)) => {
                    shards.push(ShardInfo {
                        file,
                        first_row: i as u64 * opts.rows_per_shard as u64,
                        rows: opts.rows_per_shard as u64,
                        bytes,
                        blake3: Some(hash),
                    });
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
            if let Some(k) = stem
                .strip_prefix("shard-")
                .and_then(|n| n.strip_suffix(".parquet"))
                .and_then(|n| n.parse::<usize>().ok())
                && k >= i
            {
                if is_shard && k > i {
                    later.push(name.to_string());
                }
                remove(&p)?;
            }
        }
        later.sort();
        discarded.extend(
            later.into_iter().map(|f| format!("{f}: comes after {}, which is written again; discarded", shard_name(i))),
        );
        let schema = schema_for(&meta);
        let props = Arc::new(properties(&schema, &meta, &opts, &[])?);
        let descr: SchemaDescriptor = ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(|e| DataError::Config { what: "schema", message: e.to_string() })?;
        let parquet_schema = descr.root_schema_ptr();
        let hook_columns: Vec<ColumnDescPtr> = (0..meta.hooks.len()).map(|k| descr.column(3 + k)).collect();
        for (h, c) in meta.hooks.iter().zip(&hook_columns) {
            // The level encoding below assumes a required list of required values.
            if h.d == 0 || c.max_def_level() != 1 || c.max_rep_level() != 1 {
                return Err(DataError::Config {
                    what: "store metadata",
                    message: format!("hook `{}`: width must be at least 1", h.name),
                });
            }
        }
        let codec = PageCodec::new(&opts.compression)?;
        let hooks = meta
            .hooks
            .iter()
            .map(|_| if meta.dtype == Dtype::F32 { HookBuf::F32(Vec::new()) } else { HookBuf::F16(Vec::new()) })
            .collect();
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

    /// Key-value pairs that say where the store comes from (saepipe version,
    /// stage, cache key, model, hooks), written to the footer of every shard
    /// written after this call, next to the format's own keys, which they cannot
    /// replace. Not part of the partial directory's identity.
    pub fn set_provenance(&mut self, kv: &[(String, String)]) -> Result<()> {
        self.props = Arc::new(properties(&schema_for(&self.meta), &self.meta, &self.opts, kv)?);
        Ok(())
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

    /// The metadata the store is written with.
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
            return Err(format(
                &self.dir,
                format!("push: {n} seq values but {} pos and {} token values", rows.pos.len(), rows.token.len()),
            ));
        }
        if rows.hooks.len() != self.meta.hooks.len() {
            return Err(format(
                &self.dir,
                format!("push: {} hook arrays for {} hooks", rows.hooks.len(), self.meta.hooks.len()),
            ));
        }
        for (h, v) in self.meta.hooks.iter().zip(rows.hooks) {
            if v.len() != n * h.d {
                return Err(DataError::Shape {
                    path: self.dir.clone(),
                    hook: h.name.clone(),
                    expected: h.d,
                    found: v.len().checked_div(n).unwrap_or(0),
                });
            }
        }
        if first_row > self.rows_done {
            return Err(format(
                &self.dir,
                format!("push: rows start at {first_row} but the store has rows up to {} only", self.rows_done),
            ));
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
                    let (at, x) = vals
                        .iter()
                        .copied()
                        .enumerate()
                        .find(|&(_, x)| refused(x, limit))
                        .expect("a non-finite value was counted");
                    let value = if x.is_nan() {
                        "NaN".to_string()
                    } else if x.is_infinite() {
                        format!("{}inf", if x > 0.0 { "+" } else { "-" })
                    } else {
                        format!("{x}, beyond the float16 range")
                    };
                    return Err(DataError::NonFinite {
                        path: self.dir.clone(),
                        hook: h.name.clone(),
                        row: first_row + (start + at / h.d) as u64,
                        value,
                    });
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
            let writer = SerializedFileWriter::new(file, self.parquet_schema.clone(), self.props.clone())
                .map_err(pq(&tmp.path))?;
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
            let close = encode_hook_chunk(
                &mut self.chunk,
                self.hook_columns[k].clone(),
                buf,
                n,
                h.d,
                &self.codec,
                PageCodec::split(&self.opts.compression),
            )
            .map_err(&e)?;
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
        self.shards.push(ShardInfo {
            file: name,
            first_row: shard.index as u64 * self.opts.rows_per_shard as u64,
            rows: shard.rows as u64,
            bytes,
            blake3: Some(hash),
        });
        Ok(())
    }

    /// Writes the last (short) shard, moves the shards into `dest_dir` (created; on
    /// the same filesystem, by rename) and writes `_store.json` there last. A shard
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
                    return Err(DataError::Damaged {
                        path: to.clone(),
                        expected: format!("blake3 {expected} ({what})"),
                        found: format!("blake3 {found}"),
                    });
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
        let sj = dest_dir.join(STORE_INDEX_FILE);
        // Its temporary's name starts with `_` too: nothing but shards is ever visible to dataset readers.
        let tmp = TempFile::new(dest_dir, STORE_INDEX_FILE);
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
