//! Filesystem primitives shared by the store, fingerprints, checkpoints and gc:
//! atomic small-file writes, directory fsync, and walking, sizing and removing
//! trees that other processes may be changing at the same time.

use crate::error::{IoContext, Result};
use crate::host::unique_token;
use std::ffi::OsString;
use std::fs::FileType;
use std::path::{Path, PathBuf};

/// Fsyncs a directory, so the entries created or renamed in it survive a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).ctx("syncing directory", path)
}

/// `/`-joined relative path of `path` under `base`.
pub(crate) fn rel_path(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Every non-directory entry under `dir` (symlinks not followed), and every subdirectory.
pub(crate) fn walk(dir: &Path, entries: &mut Vec<(PathBuf, FileType)>, dirs: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx("listing", dir)? {
        let entry = entry.ctx("listing", dir)?;
        let path = entry.path();
        let ft = entry.file_type().ctx("reading file type of", &path)?;
        if ft.is_dir() {
            walk(&path, entries, dirs)?;
            dirs.push(path);
        } else {
            entries.push((path, ft));
        }
    }
    Ok(())
}

/// Bytes of everything under `path` (or of `path` itself if it is a file).
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    let (mut entries, mut dirs) = (Vec::new(), Vec::new());
    let _ = walk(path, &mut entries, &mut dirs);
    entries.iter().filter_map(|(p, _)| std::fs::symlink_metadata(p).ok()).map(|m| m.len()).sum()
}

/// Deletes a tree that may be deleted concurrently by someone else.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(_) if std::fs::symlink_metadata(path).is_err() => Ok(()),
        Err(e) => Err(e).ctx("removing", path),
    }
}

/// Writes a small file via a uniquely named temporary and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, &format!("tmp.{}", unique_token()));
    std::fs::write(&tmp, bytes).ctx("writing", &tmp)?;
    std::fs::rename(&tmp, path)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .ctx("writing", path)
}

/// `path` with `.suffix` appended (`x.lock` -> `x.lock.break`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}
