//! Self-verifying checkpoints in a stage's partial area.
//!
//! A checkpoint is a set of files written under fresh unique names, then named
//! by one small pointer file (`<name>.json`: each file's name, size and blake3)
//! that is replaced atomically. A reader trusts only files the pointer names
//! and whose hashes match, so a torn write, a flipped byte, or a suspended
//! process that wakes up and writes an older checkpoint can never make a
//! resume use damaged or mismatched files: at worst it resumes from an older
//! valid checkpoint or starts over.

use crate::error::{CacheError, IoContext, Result};
use crate::fingerprint::hash_file;
use crate::host;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const POINTER_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Pointer {
    format_version: u32,
    files: BTreeMap<String, PointerEntry>,
}

#[derive(Serialize, Deserialize)]
struct PointerEntry {
    file: String,
    size: u64,
    blake3: String,
}

fn pointer_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// A fresh path in `dir` for the part `part` of checkpoint `name`; write the
/// part there, then pass it to [`commit_checkpoint`].
pub fn checkpoint_part_path(dir: &Path, name: &str, part: &str) -> PathBuf {
    dir.join(format!("{name}.{part}.{}", host::unique_token()))
}

/// Makes the written parts the current checkpoint `name` (hashing each), then
/// deletes the parts of earlier checkpoints of that name.
pub fn commit_checkpoint(dir: &Path, name: &str, parts: &[(&str, &Path)]) -> Result<()> {
    let mut files = BTreeMap::new();
    for (part, path) in parts {
        let f = std::fs::File::open(path).ctx("opening", path)?;
        f.sync_all().ctx("syncing", path)?;
        let size = f.metadata().ctx("reading metadata of", path)?.len();
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        files.insert(part.to_string(), PointerEntry { file, size, blake3: hash_file(path)? });
    }
    let keep: Vec<String> = files.values().map(|e| e.file.clone()).collect();
    let pointer = pointer_path(dir, name);
    crate::files::write_atomically(
        &pointer,
        &serde_json::to_vec_pretty(&Pointer { format_version: POINTER_VERSION, files }).unwrap(),
    )?;
    crate::files::sync_dir(dir)?;
    // Earlier parts (and parts of writers that died) are garbage now.
    let prefix = format!("{name}.");
    for e in std::fs::read_dir(dir).ctx("listing", dir)?.filter_map(|e| e.ok()) {
        let file = e.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix)
            && file != format!("{name}.json")
            && !file.contains(".json.tmp.")
            && !keep.contains(&file)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// The parts of checkpoint `name` by part name, each verified against its
/// hash: `Ok(None)` if there is no checkpoint, `Err` (saying what is wrong)
/// if it is damaged, so the caller can warn and start over.
pub fn load_checkpoint(dir: &Path, name: &str) -> Result<Option<BTreeMap<String, PathBuf>>> {
    let path = pointer_path(dir, name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("reading", &path),
    };
    let bad = |message: String| CacheError::Manifest { path: path.clone(), message };
    let p: Pointer = serde_json::from_slice(&bytes).map_err(|e| bad(format!("unreadable checkpoint pointer: {e}")))?;
    if p.format_version != POINTER_VERSION {
        return Err(bad(format!(
            "checkpoint format version {} is not supported (this saepipe reads version {POINTER_VERSION})",
            p.format_version
        )));
    }
    let mut out = BTreeMap::new();
    for (part, e) in p.files {
        if e.file.contains('/') || e.file.starts_with('.') {
            return Err(bad(format!("part `{part}` names `{}`, not a plain file name", e.file)));
        }
        let file = dir.join(&e.file);
        let size = std::fs::metadata(&file)
            .map(|m| m.len())
            .map_err(|err| bad(format!("part `{part}` ({}): {err}", e.file)))?;
        if size != e.size {
            return Err(bad(format!("part `{part}` ({}) has {size} bytes, the checkpoint says {}", e.file, e.size)));
        }
        if hash_file(&file)? != e.blake3 {
            return Err(bad(format!("part `{part}` ({}) is damaged (blake3 mismatch)", e.file)));
        }
        out.insert(part, file);
    }
    Ok(Some(out))
}

/// Deletes checkpoint `name` (pointer first, so a crash leaves no half checkpoint).
pub fn remove_checkpoint(dir: &Path, name: &str) -> Result<()> {
    let pointer = pointer_path(dir, name);
    match std::fs::remove_file(&pointer) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx("removing", &pointer),
    }
    let prefix = format!("{name}.");
    for e in std::fs::read_dir(dir).ctx("listing", dir)?.filter_map(|e| e.ok()) {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_part(dir: &Path, part: &str, bytes: &[u8]) -> PathBuf {
        let p = checkpoint_part_path(dir, "ckpt", part);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn round_trip_replace_and_damage() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        assert!(load_checkpoint(d, "ckpt").unwrap().is_none());
        let (a, b) = (write_part(d, "state", b"one"), write_part(d, "rows", b"[1]"));
        commit_checkpoint(d, "ckpt", &[("state", &a), ("rows", &b)]).unwrap();
        let got = load_checkpoint(d, "ckpt").unwrap().unwrap();
        assert_eq!(std::fs::read(&got["state"]).unwrap(), b"one");
        // A newer checkpoint replaces the parts of the older one.
        let (a2, b2) = (write_part(d, "state", b"two"), write_part(d, "rows", b"[1,2]"));
        commit_checkpoint(d, "ckpt", &[("state", &a2), ("rows", &b2)]).unwrap();
        assert!(!a.exists() && !b.exists());
        let got = load_checkpoint(d, "ckpt").unwrap().unwrap();
        assert_eq!(std::fs::read(&got["rows"]).unwrap(), b"[1,2]");
        // A flipped byte is found.
        std::fs::write(&a2, b"twO").unwrap();
        let e = load_checkpoint(d, "ckpt").unwrap_err().to_string();
        assert!(e.contains("damaged") && e.contains("state"), "{e}");
        std::fs::write(&a2, b"tw").unwrap();
        assert!(load_checkpoint(d, "ckpt").unwrap_err().to_string().contains("bytes"));
        remove_checkpoint(d, "ckpt").unwrap();
        assert!(load_checkpoint(d, "ckpt").unwrap().is_none());
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
    }
}
