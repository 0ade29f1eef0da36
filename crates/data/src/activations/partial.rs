//! Integrity of the partial directory: uniquely named temporaries (and which of
//! them are abandoned), the per-shard blake3 sidecars, the hashing shard file and
//! the checks a resumed writer makes before it keeps a shard.

use crate::error::{Result, io, pq};
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// A temporary of abandoned writers is removed by [`ShardedWriter::open`](super::ShardedWriter::open) once it
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
        let tag: String =
            raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        if tag.is_empty() { "host".into() } else { tag }
    })
}

/// A uniquely named temporary `<base>.<host>-<pid>-<unique>.tmp` in `dir`,
/// registered as live in this process until dropped.
pub(super) struct TempFile {
    pub(super) path: PathBuf,
}

impl TempFile {
    pub(super) fn new(dir: &Path, base: &str) -> TempFile {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let salt = crate::rng::SplitMix64::new(nanos ^ (std::process::id() as u64).rotate_left(32)).next_u64();
        // The counter keeps names unique within the process, pid and host across
        // processes; the salt guards against a reused pid.
        let path =
            dir.join(format!("{base}.{}-{}-{:08x}{:08x}.tmp", host_tag(), std::process::id(), salt as u32, n as u32));
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
pub(super) fn temp_abandoned(path: &Path, name: &str) -> bool {
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
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= STALE_TEMP)
}

/// Name of the file holding the recorded blake3 of a partial-directory shard.
pub(super) fn hash_file_name(shard_file: &str) -> String {
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
pub(super) fn write_hash_file(dir: &Path, shard_file: &str, hash: &str) -> Result<()> {
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
pub(super) fn check_partial_shard(
    dir: &Path,
    file: &str,
    rows_per_shard: u64,
) -> std::result::Result<(u64, String), String> {
    let path = dir.join(file);
    let hash_path = dir.join(hash_file_name(file));
    let recorded = match std::fs::read_to_string(&hash_path) {
        Ok(text) => text
            .split_whitespace()
            .next()
            .map(str::to_string)
            .filter(|h| is_blake3_hex(h))
            .ok_or_else(|| format!("its recorded hash {} is unreadable", hash_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no recorded hash ({} is missing)", hash_file_name(file)));
        }
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
pub(super) struct HashingFile {
    pub(super) file: std::fs::File,
    pub(super) hasher: blake3::Hasher,
    buf: Vec<u8>,
    /// Bytes written to the file so far.
    pub(super) bytes: u64,
}

impl HashingFile {
    pub(super) fn new(file: std::fs::File) -> HashingFile {
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

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    // Makes the rename durable; directories cannot be opened for sync everywhere.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn shard_rows(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let r = SerializedFileReader::new(file).map_err(pq(path))?;
    Ok(r.metadata().file_metadata().num_rows() as u64)
}
