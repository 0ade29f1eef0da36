//! Where an activation store's bytes come from. The reader decodes whole shards
//! from memory, so any source that hands over a shard's exact bytes, checked
//! against the store index, gives the same batches: a local directory
//! ([`LocalStore`]) or a remote artifact streamed shard by shard (saepipe's
//! `exec::stream`, over the remote cache).

use crate::activations::{ShardInfo, StoreInfo};
use crate::error::{DataError, Result, io};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A place an activation store can be read from, shard by shard.
pub trait StoreSource: Send + Sync {
    /// How messages name the store: its directory, or a remote location.
    fn location(&self) -> PathBuf;
    /// The text of the store index and how messages name that file.
    fn index(&self) -> Result<(PathBuf, String)>;
    /// The store's directory when it is on the local file system: the reader
    /// then checks every shard's footer when it opens (cheap locally).
    fn local_dir(&self) -> Option<&Path> {
        None
    }
    /// Shard `shard` whole, read into `buf` (a buffer to reuse), checked
    /// against the index (size, and blake3 where recorded) before it is
    /// returned: damage is [`DataError::Damaged`].
    fn load(&self, shard: &ShardInfo, buf: Vec<u8>) -> Result<bytes::Bytes>;
    /// Says that `shard` will be loaded next, so a remote source can start
    /// fetching it while the current one is decoded.
    fn prefetch(&self, _shard: &ShardInfo) {}
}

/// A store in a local directory.
#[derive(Clone, Debug)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// The store in directory `dir`.
    pub fn new(dir: &Path) -> LocalStore {
        LocalStore { dir: dir.into() }
    }
}

/// Bytes read (and hashed) per step while loading a shard.
const LOAD_BLOCK: usize = 4 << 20;

pub(crate) fn size_mismatch(path: &Path, shard: &ShardInfo, found: u64) -> DataError {
    DataError::Damaged {
        path: path.into(),
        expected: format!("{} bytes", shard.bytes),
        found: format!("{found} bytes"),
    }
}

/// Checks `found` (a blake3 in hex) against what the index records for `shard`.
pub fn check_blake3(path: &Path, shard: &ShardInfo, found: &str) -> Result<()> {
    match &shard.blake3 {
        Some(expected) if !found.eq_ignore_ascii_case(expected) => Err(DataError::Damaged {
            path: path.into(),
            expected: format!("blake3 {expected}"),
            found: format!("blake3 {found}"),
        }),
        _ => Ok(()),
    }
}

impl StoreSource for LocalStore {
    fn location(&self) -> PathBuf {
        self.dir.clone()
    }

    fn index(&self) -> Result<(PathBuf, String)> {
        let path = StoreInfo::index_path(&self.dir);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        Ok((path, text))
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    /// Reads the file hashing it block by block as it arrives.
    fn load(&self, shard: &ShardInfo, mut buf: Vec<u8>) -> Result<bytes::Bytes> {
        let path = self.dir.join(&shard.file);
        let mut file = std::fs::File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len != shard.bytes {
            return Err(size_mismatch(&path, shard, len));
        }
        buf.clear();
        buf.reserve_exact(len as usize + 1);
        let mut hasher = shard.blake3.as_ref().map(|_| blake3::Hasher::new());
        loop {
            let at = buf.len();
            // One byte past the recorded size shows a file that grew meanwhile.
            let want = (LOAD_BLOCK as u64).min(shard.bytes + 1 - at as u64);
            let got = (&mut file).take(want).read_to_end(&mut buf).map_err(io(&path))?;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[at..]);
            }
            if got == 0 || buf.len() as u64 > shard.bytes {
                break;
            }
        }
        if buf.len() as u64 != shard.bytes {
            return Err(size_mismatch(&path, shard, buf.len() as u64));
        }
        if let Some(h) = hasher {
            check_blake3(&path, shard, h.finalize().to_hex().as_str())?;
        }
        Ok(bytes::Bytes::from(buf))
    }
}
