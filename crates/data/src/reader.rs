//! Reading an activation store back as batches of f32 rows, sequentially or
//! shuffled (seeded shard order + row shuffle buffer, docs/formats.md), decoded on a
//! background thread that stays at most `prefetch` batches ahead.
//!
//! Every shard is read into memory whole and checked against the store index (size,
//! and blake3 where the store records it) before anything is decoded from it: a
//! damaged shard is [`DataError::Damaged`] and none of its rows are returned. One
//! shard is in memory at a time (shards are about 256 MiB by default); its buffer
//! is kept by the reader for the next shard and the next pass.

use crate::activations::{Dtype, ShardInfo, StoreInfo};
use crate::error::{DataError, Result, format, io, pq};
use crate::rng::SplitMix64;
use crate::source::{LocalStore, StoreSource, size_mismatch};
use arrow_array::{Array, FixedSizeListArray, Float16Array, Float32Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// A batch of rows. `hooks[i]` holds `rows × d_i` values of the i-th requested hook.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Rows in the batch.
    pub rows: usize,
    /// Context (sequence) index of each row.
    pub seq: Vec<u64>,
    /// Position of each row within its context.
    pub pos: Vec<u32>,
    /// Token id of each row.
    pub token: Vec<u32>,
    /// One `rows × d` row-major buffer per requested hook (f16 stores are widened).
    pub hooks: Vec<Vec<f32>>,
}

/// The order rows come out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    Sequential,
    /// Shard order permuted with the seed, rows through a shuffle buffer of `buffer_rows`.
    Shuffled {
        seed: u64,
        buffer_rows: usize,
    },
}

/// A reader of chosen hooks of an activation store; [`batches`](Self::batches)
/// makes one pass, as often as wanted.
pub struct ActivationReader {
    source: Arc<dyn StoreSource>,
    info: StoreInfo,
    hooks: Vec<(String, usize)>,
    order: Order,
    prefetch: usize,
    /// The buffer of the last shard read, kept for the next one (and the next
    /// pass): fresh pages for every shard cost more than hashing it.
    spare: Arc<Mutex<Vec<u8>>>,
}

fn list_width(dt: &DataType) -> Option<(usize, &DataType)> {
    match dt {
        DataType::FixedSizeList(item, w) => Some((*w as usize, item.data_type())),
        _ => None,
    }
}

/// Opens a shard's footer: format version, and the row count the index records.
fn open_shard<R: ChunkReader + 'static>(
    path: &Path,
    shard: &ShardInfo,
    data: R,
) -> Result<ParquetRecordBatchReaderBuilder<R>> {
    let b = ParquetRecordBatchReaderBuilder::try_new(data).map_err(pq(path))?;
    let meta = b.metadata().file_metadata();
    crate::tokens::check_kv(path, meta, "activations", crate::activations::ACTIVATIONS_FORMAT_VERSION)?;
    if meta.num_rows() as u64 != shard.rows {
        return Err(format(path, format!("holds {} rows, the store index says {}", meta.num_rows(), shard.rows)));
    }
    Ok(b)
}

fn check_hook(path: &Path, schema: &arrow_schema::Schema, hook: &str, d: usize) -> Result<()> {
    let field = schema.field_with_name(hook).map_err(|_| {
        let names: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !["seq", "pos", "token"].contains(n))
            .collect();
        DataError::MissingHook { path: path.into(), hook: hook.into(), available: names.join(", ") }
    })?;
    match list_width(field.data_type()) {
        Some((w, DataType::Float32 | DataType::Float16)) if w == d => Ok(()),
        Some((w, DataType::Float32 | DataType::Float16)) => {
            Err(DataError::Shape { path: path.into(), hook: hook.into(), expected: d, found: w })
        }
        _ => Err(format(
            path,
            format!("column `{hook}` has type {}, expected FixedSizeList<Float32 or Float16>[{d}]", field.data_type()),
        )),
    }
}

impl ActivationReader {
    /// Opens a store (its index `_store.json` and every shard's footer) for the given hooks.
    /// Errors name the file: missing hook, width mismatch, unreadable shard, unknown
    /// version, a shard whose size differs from the index ([`DataError::Damaged`]).
    /// Shard contents are checked against their recorded blake3 as they are read.
    pub fn open(store_dir: &Path, hooks: &[&str]) -> Result<ActivationReader> {
        ActivationReader::from_source(Arc::new(LocalStore::new(store_dir)), hooks)
    }

    /// Opens the store `source` holds for the given hooks. A local store's
    /// shard footers are checked here (as [`open`](Self::open) says); a remote
    /// one's when each shard arrives, after its bytes are checked.
    pub fn from_source(source: Arc<dyn StoreSource>, hooks: &[&str]) -> Result<ActivationReader> {
        let (index_path, text) = source.index()?;
        let info = StoreInfo::parse(&index_path, &text)?;
        let mut specs = Vec::new();
        for &h in hooks {
            let Some(spec) = info.meta.hooks.iter().find(|s| s.name == h) else {
                let available: Vec<&str> = info.meta.hooks.iter().map(|s| s.name.as_str()).collect();
                return Err(DataError::MissingHook {
                    path: index_path,
                    hook: h.into(),
                    available: available.join(", "),
                });
            };
            specs.push((spec.name.clone(), spec.d));
        }
        // Footers only, and only locally: a remote shard is checked once it is fetched.
        if let Some(dir) = source.local_dir() {
            for s in &info.shards {
                let path = dir.join(&s.file);
                // Footers only; a shard of another size than recorded is damaged.
                let file = std::fs::File::open(&path).map_err(io(&path))?;
                let len = file.metadata().map_err(io(&path))?.len();
                if len != s.bytes {
                    return Err(size_mismatch(&path, s, len));
                }
                let b = open_shard(&path, s, file)?;
                for (h, d) in &specs {
                    check_hook(&path, b.schema(), h, *d)?;
                }
            }
        }
        Ok(ActivationReader {
            source,
            info,
            hooks: specs,
            order: Order::Sequential,
            prefetch: 4,
            spare: Default::default(),
        })
    }

    /// The store's index.
    pub fn info(&self) -> &StoreInfo {
        &self.info
    }

    /// Rows (tokens) in the store; one pass yields this many.
    pub fn total_rows(&self) -> u64 {
        self.info.total_tokens
    }

    /// Widths of the requested hooks, in request order.
    pub fn widths(&self) -> Vec<usize> {
        self.hooks.iter().map(|h| h.1).collect()
    }

    /// Rows in store order (the default).
    pub fn sequential(mut self) -> Self {
        self.order = Order::Sequential;
        self
    }

    /// Shard order permuted with `seed`, rows through a shuffle buffer of
    /// `buffer_rows` (at least 1); the same seed gives the same order.
    pub fn shuffled(mut self, seed: u64, buffer_rows: usize) -> Self {
        self.order = Order::Shuffled { seed, buffer_rows: buffer_rows.max(1) };
        self
    }

    /// Batches decoded ahead of the consumer (at least 1).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
        self
    }

    /// One pass over the store in batches of `batch_size` rows (the last may be short).
    pub fn batches(&self, batch_size: usize) -> BatchIter {
        let (tx, rx) = sync_channel(self.prefetch);
        let job = Job {
            source: self.source.clone(),
            dtype: self.info.meta.dtype,
            shards: self.info.shards.clone(),
            hooks: self.hooks.clone(),
            order: self.order,
            batch_size: batch_size.max(1),
            spare: self.spare.clone(),
        };
        let handle = std::thread::Builder::new().name("saepipe-store-reader".into()).spawn(move || {
            if let Err(e) = job.run(&tx) {
                let _ = tx.send(Err(e));
            }
        });
        match handle {
            Ok(_) => BatchIter { rx: Some(rx) },
            Err(e) => {
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(DataError::Io { path: self.source.location(), source: e }));
                BatchIter { rx: Some(rx) }
            }
        }
    }
}

/// The batches of one pass, fed by a background decoding thread; after an error
/// it yields nothing more.
pub struct BatchIter {
    rx: Option<Receiver<Result<Batch>>>,
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let r = self.rx.as_ref()?.recv().ok();
        if matches!(r, Some(Err(_)) | None) {
            self.rx = None;
        }
        r
    }
}

struct Job {
    source: Arc<dyn StoreSource>,
    dtype: Dtype,
    shards: Vec<ShardInfo>,
    hooks: Vec<(String, usize)>,
    order: Order,
    batch_size: usize,
    /// The last shard's buffer, reused for the next (shared with the reader).
    spare: Arc<Mutex<Vec<u8>>>,
}

/// Decoded columns of one record batch.
struct Chunk {
    seq: Vec<u64>,
    pos: Vec<u32>,
    token: Vec<u32>,
    hooks: Vec<Vec<f32>>,
}

/// Stopped because the consumer went away.
struct Gone;

struct Out<'a> {
    tx: &'a SyncSender<Result<Batch>>,
    batch_size: usize,
    widths: Vec<usize>,
    cur: Batch,
}

impl Out<'_> {
    fn fresh(&self) -> Batch {
        Batch {
            rows: 0,
            seq: Vec::with_capacity(self.batch_size),
            pos: Vec::with_capacity(self.batch_size),
            token: Vec::with_capacity(self.batch_size),
            hooks: self.widths.iter().map(|d| Vec::with_capacity(self.batch_size * d)).collect(),
        }
    }

    fn row(
        &mut self,
        seq: u64,
        pos: u32,
        token: u32,
        hooks: impl Iterator<Item = impl AsRef<[f32]>>,
    ) -> std::result::Result<(), Gone> {
        self.cur.seq.push(seq);
        self.cur.pos.push(pos);
        self.cur.token.push(token);
        for (dst, src) in self.cur.hooks.iter_mut().zip(hooks) {
            dst.extend_from_slice(src.as_ref());
        }
        self.cur.rows += 1;
        if self.cur.rows == self.batch_size {
            self.send()?;
        }
        Ok(())
    }

    /// Copies a run of consecutive rows (sequential reading).
    fn rows(&mut self, c: &Chunk, mut start: usize) -> std::result::Result<(), Gone> {
        let n = c.seq.len();
        while start < n {
            let end = (start + self.batch_size - self.cur.rows).min(n);
            self.cur.seq.extend_from_slice(&c.seq[start..end]);
            self.cur.pos.extend_from_slice(&c.pos[start..end]);
            self.cur.token.extend_from_slice(&c.token[start..end]);
            for ((dst, src), d) in self.cur.hooks.iter_mut().zip(&c.hooks).zip(&self.widths) {
                dst.extend_from_slice(&src[start * d..end * d]);
            }
            self.cur.rows += end - start;
            start = end;
            if self.cur.rows == self.batch_size {
                self.send()?;
            }
        }
        Ok(())
    }

    fn send(&mut self) -> std::result::Result<(), Gone> {
        let fresh = self.fresh();
        let b = std::mem::replace(&mut self.cur, fresh);
        self.tx.send(Ok(b)).map_err(|_| Gone)
    }
}

fn column<'a, T: 'static>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format(path, format!("column `{name}` missing or of the wrong type")))
}

fn decode(path: &Path, batch: &RecordBatch, hooks: &[(String, usize)]) -> Result<Chunk> {
    let seq = column::<UInt64Array>(path, batch, "seq")?.values().to_vec();
    let pos = column::<UInt32Array>(path, batch, "pos")?.values().to_vec();
    let token = column::<UInt32Array>(path, batch, "token")?.values().to_vec();
    let mut out = Vec::with_capacity(hooks.len());
    for (h, d) in hooks {
        let list = column::<FixedSizeListArray>(path, batch, h)?;
        let (a, b) = (list.offset() * d, (list.offset() + list.len()) * d);
        let values = list.values();
        if let Some(v) = values.as_any().downcast_ref::<Float32Array>() {
            out.push(v.values()[a..b].to_vec());
        } else if let Some(v) = values.as_any().downcast_ref::<Float16Array>() {
            out.push(v.values()[a..b].iter().map(|x| x.to_f32()).collect());
        } else {
            return Err(format(path, format!("column `{h}` holds neither f32 nor f16 values")));
        }
    }
    Ok(Chunk { seq, pos, token, hooks: out })
}

/// Rows decoded per Parquet read.
const READ_ROWS: usize = 4096;

impl Job {
    /// Loads and checks a shard (see [`StoreSource::load`]), tells the source
    /// which shard comes after it, then decodes it.
    fn shard_chunks(
        &self,
        shard: &ShardInfo,
        next: Option<&ShardInfo>,
        f: impl FnMut(Chunk) -> std::result::Result<(), Gone>,
    ) -> Result<std::result::Result<(), Gone>> {
        let path = self.source.location().join(&shard.file);
        let spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
        let data = self.source.load(shard, spare)?;
        if let Some(n) = next {
            self.source.prefetch(n);
        }
        let r = match self.dtype {
            Dtype::F32 => self.shard_chunks_typed(&path, shard, data.clone(), f),
            // Float16 is a 2-byte FIXED_LEN_BYTE_ARRAY in Parquet; the typed reader
            // handles those value by value, the Arrow reader in bulk.
            Dtype::F16 => self.shard_chunks_arrow(&path, shard, data.clone(), f),
        };
        // The decoders are done with the shard's bytes: keep the buffer.
        if let Ok(m) = data.try_into_mut() {
            *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = Vec::from(m);
        }
        r
    }

    fn shard_chunks_arrow(
        &self,
        path: &Path,
        shard: &ShardInfo,
        data: bytes::Bytes,
        mut f: impl FnMut(Chunk) -> std::result::Result<(), Gone>,
    ) -> Result<std::result::Result<(), Gone>> {
        let path = path.to_path_buf();
        let b = open_shard(&path, shard, data)?;
        let mut roots = Vec::new();
        for name in ["seq", "pos", "token"].into_iter().chain(self.hooks.iter().map(|h| h.0.as_str())) {
            let i = b.schema().index_of(name).map_err(|_| format(&path, format!("no column `{name}`")))?;
            roots.push(i);
        }
        for (h, d) in &self.hooks {
            check_hook(&path, b.schema(), h, *d)?;
        }
        let mask = ProjectionMask::roots(b.parquet_schema(), roots);
        let reader = b.with_projection(mask).with_batch_size(READ_ROWS).build().map_err(pq(&path))?;
        for batch in reader {
            let batch = batch.map_err(|e| DataError::Parquet { path: path.clone(), message: e.to_string() })?;
            if f(decode(&path, &batch, &self.hooks)?).is_err() {
                return Ok(Err(Gone));
            }
        }
        Ok(Ok(()))
    }

    /// Decodes a float32 shard one row group at a time through the typed column
    /// readers (values land directly in plain vectors; measured 2x faster than the
    /// Arrow list reader).
    fn shard_chunks_typed(
        &self,
        path: &Path,
        shard: &ShardInfo,
        data: bytes::Bytes,
        mut f: impl FnMut(Chunk) -> std::result::Result<(), Gone>,
    ) -> Result<std::result::Result<(), Gone>> {
        use parquet::column::reader::ColumnReader;
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let path = path.to_path_buf();
        // Checks version, hook presence and widths through the Arrow schema.
        let b = open_shard(&path, shard, data.clone())?;
        for (h, d) in &self.hooks {
            check_hook(&path, b.schema(), h, *d)?;
        }
        drop(b);
        let e = pq(&path);
        let reader = SerializedFileReader::new(data).map_err(&e)?;
        let descr = reader.metadata().file_metadata().schema_descr_ptr();
        let leaf = |name: &str| -> Result<usize> {
            descr
                .columns()
                .iter()
                .position(|c| c.path().parts()[0] == name)
                .ok_or_else(|| format(&path, format!("no column `{name}`")))
        };
        let (seq_i, pos_i, tok_i) = (leaf("seq")?, leaf("pos")?, leaf("token")?);
        let hook_i: Vec<usize> = self.hooks.iter().map(|h| leaf(&h.0)).collect::<Result<_>>()?;
        let bad = |what: &str| format(&path, format!("column `{what}` has an unexpected physical type"));
        for g in 0..reader.num_row_groups() {
            let rg = reader.get_row_group(g).map_err(&e)?;
            let n = rg.metadata().num_rows() as usize;
            let mut chunk = Chunk {
                seq: Vec::with_capacity(n),
                pos: Vec::with_capacity(n),
                token: Vec::with_capacity(n),
                hooks: Vec::with_capacity(self.hooks.len()),
            };
            let mut seq: Vec<i64> = Vec::with_capacity(n);
            match rg.get_column_reader(seq_i).map_err(&e)? {
                ColumnReader::Int64ColumnReader(mut r) => {
                    while seq.len() < n {
                        let (recs, _, _) = r.read_records(n - seq.len(), None, None, &mut seq).map_err(&e)?;
                        if recs == 0 {
                            return Err(format(&path, "column `seq` ends early"));
                        }
                    }
                }
                _ => return Err(bad("seq")),
            }
            chunk.seq.extend(seq.iter().map(|&x| x as u64));
            for (idx, out, name) in [(pos_i, &mut chunk.pos, "pos"), (tok_i, &mut chunk.token, "token")] {
                let mut v: Vec<i32> = Vec::with_capacity(n);
                match rg.get_column_reader(idx).map_err(&e)? {
                    ColumnReader::Int32ColumnReader(mut r) => {
                        while v.len() < n {
                            let (recs, _, _) = r.read_records(n - v.len(), None, None, &mut v).map_err(&e)?;
                            if recs == 0 {
                                return Err(format(&path, format!("column `{name}` ends early")));
                            }
                        }
                    }
                    _ => return Err(bad(name)),
                }
                out.extend(v.iter().map(|&x| x as u32));
            }
            for ((h, d), &idx) in self.hooks.iter().zip(&hook_i) {
                let want = n * d;
                let (mut def, mut rep) = (Vec::with_capacity(want), Vec::with_capacity(want));
                let mut records = 0;
                let values: Vec<f32> = match rg.get_column_reader(idx).map_err(&e)? {
                    ColumnReader::FloatColumnReader(mut r) => {
                        let mut v: Vec<f32> = Vec::with_capacity(want);
                        while records < n {
                            let (recs, _, _) =
                                r.read_records(n - records, Some(&mut def), Some(&mut rep), &mut v).map_err(&e)?;
                            if recs == 0 {
                                break;
                            }
                            records += recs;
                        }
                        v
                    }
                    _ => return Err(bad(h)),
                };
                if records != n || values.len() != want {
                    return Err(format(
                        &path,
                        format!("column `{h}`: {} values in {records} rows, expected {n} rows of {d}", values.len()),
                    ));
                }
                chunk.hooks.push(values);
            }
            if f(chunk).is_err() {
                return Ok(Err(Gone));
            }
        }
        Ok(Ok(()))
    }

    fn run(&self, tx: &SyncSender<Result<Batch>>) -> Result<()> {
        let widths: Vec<usize> = self.hooks.iter().map(|h| h.1).collect();
        let mut out = Out { tx, batch_size: self.batch_size, widths: widths.clone(), cur: Batch::default() };
        out.cur = out.fresh();
        match self.order {
            Order::Sequential => {
                for (i, s) in self.shards.iter().enumerate() {
                    if self.shard_chunks(s, self.shards.get(i + 1), |c| out.rows(&c, 0))?.is_err() {
                        return Ok(());
                    }
                }
            }
            Order::Shuffled { seed, buffer_rows } => {
                let mut rng = SplitMix64::new(seed);
                let mut order: Vec<usize> = (0..self.shards.len()).collect();
                rng.shuffle(&mut order);
                let mut slots = Chunk {
                    seq: Vec::new(),
                    pos: Vec::new(),
                    token: Vec::new(),
                    hooks: widths.iter().map(|_| Vec::new()).collect(),
                };
                for (at, &i) in order.iter().enumerate() {
                    let next = order.get(at + 1).map(|&n| &self.shards[n]);
                    let r = self.shard_chunks(&self.shards[i], next, |c| {
                        for r in 0..c.seq.len() {
                            let row = |k: usize, d: usize| &c.hooks[k][r * d..(r + 1) * d];
                            if slots.seq.len() < buffer_rows {
                                slots.seq.push(c.seq[r]);
                                slots.pos.push(c.pos[r]);
                                slots.token.push(c.token[r]);
                                for (k, d) in widths.iter().enumerate() {
                                    slots.hooks[k].extend_from_slice(row(k, *d));
                                }
                                continue;
                            }
                            let j = rng.below(buffer_rows as u64) as usize;
                            out.row(
                                slots.seq[j],
                                slots.pos[j],
                                slots.token[j],
                                widths.iter().enumerate().map(|(k, d)| &slots.hooks[k][j * d..(j + 1) * d]),
                            )?;
                            slots.seq[j] = c.seq[r];
                            slots.pos[j] = c.pos[r];
                            slots.token[j] = c.token[r];
                            for (k, d) in widths.iter().enumerate() {
                                slots.hooks[k][j * d..(j + 1) * d].copy_from_slice(row(k, *d));
                            }
                        }
                        Ok(())
                    })?;
                    if r.is_err() {
                        return Ok(());
                    }
                }
                let mut rest: Vec<usize> = (0..slots.seq.len()).collect();
                rng.shuffle(&mut rest);
                for j in rest {
                    if out
                        .row(
                            slots.seq[j],
                            slots.pos[j],
                            slots.token[j],
                            widths.iter().enumerate().map(|(k, d)| &slots.hooks[k][j * d..(j + 1) * d]),
                        )
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
        if out.cur.rows > 0 {
            let _ = out.send();
        }
        Ok(())
    }
}
