//! NumPy `.npz` archives (`np.savez`, `np.savez_compressed`): a zip of `.npy`
//! arrays, as Gemma Scope ships its `params.npz`. Reads little-endian float
//! arrays (f32, f64, f16) in C order as f32; anything else is refused by name.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Result, SaeError};

/// One array of an archive: its shape and its elements as f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpArray {
    /// The array's shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The elements, C order.
    pub data: Vec<f32>,
}

/// Reads every array of the `.npz` file at `path`, keyed by name (without `.npy`).
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, NpArray>> {
    let bad = |m: String| SaeError::UnsupportedFormat { path: path.into(), found: m };
    let file = std::fs::File::open(path).map_err(|e| SaeError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a NumPy .npz (zip) archive: {e}")))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index_raw(i).map_err(|e| bad(e.to_string()))?;
        let name = entry.name().to_string();
        let method = entry.compression();
        let mut raw = Vec::with_capacity(entry.compressed_size() as usize);
        entry.read_to_end(&mut raw).map_err(|e| SaeError::io(path, e))?;
        let bytes = match method {
            zip::CompressionMethod::Stored => raw,
            m if m == zip::CompressionMethod::DEFLATE => {
                let mut v = Vec::with_capacity(entry.size() as usize);
                flate2::read::DeflateDecoder::new(&raw[..])
                    .read_to_end(&mut v)
                    .map_err(|e| bad(format!("entry `{name}`: inflating failed: {e}")))?;
                v
            }
            other => {
                return Err(bad(format!(
                    "entry `{name}` uses zip compression {other:?} (stored and deflate are read)"
                )));
            }
        };
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let arr = parse_npy(&bytes).map_err(|m| bad(format!("entry `{name}`: {m}")))?;
        out.insert(key, arr);
    }
    Ok(out)
}

/// Parses one `.npy` file (format versions 1–3).
fn parse_npy(b: &[u8]) -> std::result::Result<NpArray, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (no \\x93NUMPY magic)".into());
    }
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!(".npy format version {v} is not supported (1, 2, 3)")),
    };
    let header = std::str::from_utf8(b.get(start..start + header_len).ok_or("truncated header")?)
        .map_err(|_| "header is not UTF-8")?;
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = header.find(&format!("'{key}'")).ok_or(format!("header has no `{key}`: {header}"))?;
        Ok(header[at + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.trim_start_matches('\'').split('\'').next().unwrap_or("");
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = field("shape")?;
    let inner = shape_text.trim_start_matches('(').split(')').next().unwrap_or("");
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape `{shape_text}`")))
        .collect::<std::result::Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let data = &b[start + header_len..];
    let (width, conv): (usize, fn(&[u8]) -> f32) = match descr {
        "<f4" | "|f4" => (4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        "<f8" => (8, |c| f64::from_le_bytes(c.try_into().unwrap()) as f32),
        "<f2" => (2, |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        other => return Err(format!("dtype `{other}` is not supported (little-endian f4, f8, f2)")),
    };
    if data.len() < n * width {
        return Err(format!("holds {} bytes of data, shape {shape:?} of `{descr}` needs {}", data.len(), n * width));
    }
    Ok(NpArray { shape, data: data[..n * width].chunks_exact(width).map(conv).collect() })
}
