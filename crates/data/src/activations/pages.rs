//! The hook columns' values: buffered per row group (converted to float16 where
//! the store holds float16, non-finite values counted) and encoded into the Data
//! Page V1 pages of a column chunk, compressed like the other columns.

use super::Compression;
use crate::error::{DataError, Result};
use parquet::basic::{Encoding, PageType, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

pub(super) enum HookBuf {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl HookBuf {
    pub(super) fn clear(&mut self) {
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
pub(super) enum PageCodec {
    None,
    Lz4Raw,
    Zstd(i32),
}

impl PageCodec {
    pub(super) fn new(c: &Compression) -> Result<PageCodec> {
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
    pub(super) fn split(c: &Compression) -> bool {
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
pub(super) struct ChunkBytes<'a>(pub(super) &'a [u8]);

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
        self.0
            .get(s..s + length)
            .map(bytes::Bytes::copy_from_slice)
            .ok_or_else(|| ParquetError::EOF(format!("range {s}+{length} past the chunk")))
    }
}

/// Encodes `n` rows of one hook (a required FixedSizeList of `d` required values)
/// into `out` as the Data Page V1 pages of one column chunk, cut at row boundaries
/// every `PAGE_BYTES` of values, and returns what `append_column` needs. The pages
/// carry what the column writer writes with statistics off: levels, values and an
/// offset index. Deterministic: the bytes depend only on the values.
pub(super) fn encode_hook_chunk(
    out: &mut Vec<u8>,
    descr: ColumnDescPtr,
    buf: &HookBuf,
    n: usize,
    d: usize,
    codec: &PageCodec,
    split: bool,
) -> std::result::Result<ColumnCloseResult, ParquetError> {
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
        let page = Page::DataPage {
            buf: data.into(),
            num_values: (rows * d) as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = pages.write_page(CompressedPage::new(page, uncompressed_size))?;
        locations.push(PageLocation {
            offset: spec.offset as i64,
            compressed_page_size: spec.compressed_size as i32,
            first_row_index: r0 as i64,
        });
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

/// Values checked per step of the copy loops below (in L1 while checked).
const CHECK_BLOCK: usize = 4096;

/// `|x|` bit patterns from which a value is stored as infinity or NaN: float32
/// infinity, and 65520 for float16 (the first value that rounds to infinity).
pub(super) const F32_REFUSED: u32 = 0x7f80_0000;
pub(super) const F16_REFUSED: u32 = 0x477f_f000;

/// Whether `x` is stored as NaN or infinity (`limit`: one of the constants above).
pub(super) fn refused(x: f32, limit: u32) -> bool {
    x.to_bits() & 0x7fff_ffff >= limit
}

/// How many of `block` are refused; branch-free, so it vectorizes.
fn count_refused(block: &[f32], limit: u32) -> u64 {
    block.iter().fold(0u32, |n, &x| n + refused(x, limit) as u32) as u64
}

/// Appends `vals` to `dst` and returns how many are not finite.
pub(super) fn append_f32(dst: &mut Vec<f32>, vals: &[f32]) -> u64 {
    let mut bad = 0u64;
    for block in vals.chunks(CHECK_BLOCK) {
        dst.extend_from_slice(block);
        bad += count_refused(block, F32_REFUSED);
    }
    bad
}

/// Appends `vals` converted to float16 to `dst` and returns how many of the stored
/// values are not finite (NaN, infinite, or beyond the float16 range).
pub(super) fn append_f16(dst: &mut Vec<half::f16>, vals: &[f32]) -> u64 {
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
