//! The artifact store: opening a cache, lookup, atomic publishing, verification,
//! listing and removal.

use crate::error::{CacheError, IoContext, Result};
use crate::fingerprint::{FingerprintStats, hash_file};
use crate::key::Key;
use crate::lock::{self, LockTiming};
use crate::manifest::{FileEntry, MANIFEST_FILE, Manifest, ManifestDraft};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::FileType;
use std::path::{Path, PathBuf};

/// Version of the directory layout, recorded in `<root>/saepipe-cache.json`.
pub const CACHE_FORMAT_VERSION: u32 = 1;
pub const CACHE_MARKER_FILE: &str = "saepipe-cache.json";
const LAYOUT: &[&str] = &["artifacts", "tmp", "partial", "locks", "fingerprints", "runs"];
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by saepipe.\n# For information about cache directory tags see https://bford.info/cachedir/\n";

/// A cache directory. Cheap to open; safe to share between threads, and between
/// processes and hosts through the filesystem.
pub struct Cache {
    root: PathBuf,
    /// Counters of the fingerprint memo (hashes actually computed vs. memo hits).
    pub stats: FingerprintStats,
    timing: LockTiming,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Manifest readable, every listed file present with the recorded size.
    Quick,
    /// Quick, plus every file re-hashed and no files beyond those listed.
    Full,
}

#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub key: Key,
    pub ok: bool,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ArtifactSummary {
    pub key: Key,
    pub op: String,
    pub stage: String,
    pub bytes: u64,
    pub created_unix: f64,
}

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

impl Cache {
    /// Opens a cache directory, creating its layout if missing. Refuses caches
    /// written in another layout version.
    pub fn open(root: &Path) -> Result<Cache> {
        std::fs::create_dir_all(root).ctx("creating cache directory", root)?;
        let root = std::fs::canonicalize(root).ctx("resolving", root)?;
        let marker = root.join(CACHE_MARKER_FILE);
        let format_err = |message: String| CacheError::Format { root: root.clone(), message };
        match std::fs::read(&marker) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format_err(format!("{CACHE_MARKER_FILE} is unreadable: {e}")))?;
                let version = v.get("format_version").and_then(|x| x.as_u64());
                if version != Some(CACHE_FORMAT_VERSION as u64) {
                    let shown = version.map(|x| x.to_string()).unwrap_or_else(|| "missing".into());
                    return Err(format_err(format!(
                        "cache format version {shown} is not supported (this saepipe uses version {CACHE_FORMAT_VERSION}); use another cache directory or a matching saepipe"
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(&marker, format!("{{\"format_version\": {CACHE_FORMAT_VERSION}}}\n").as_bytes())?;
            }
            Err(e) => return Err(e).ctx("reading", &marker),
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            write_atomically(&tag, CACHEDIR_TAG.as_bytes())?;
        }
        for d in LAYOUT {
            let p = root.join(d);
            std::fs::create_dir_all(&p).ctx("creating", &p)?;
        }
        Ok(Cache { root, stats: FingerprintStats::default(), timing: LockTiming::default() })
    }

    /// Overrides the lock heartbeat period and staleness threshold (every process
    /// sharing the cache should use the same values). Mostly for tests.
    pub fn with_lock_timing(mut self, timing: LockTiming) -> Cache {
        assert!(timing.heartbeat * 2 < timing.stale_after, "the lock heartbeat must be well under half of stale_after");
        self.timing = timing;
        self
    }

    pub fn lock_timing(&self) -> LockTiming {
        self.timing
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn artifact_dir(&self, key: &Key) -> PathBuf {
        self.root.join("artifacts").join(key.to_string())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// The manifest of a published artifact; `Ok(None)` for a missing artifact and
    /// also for a directory whose manifest is missing, damaged or for another key.
    pub fn lookup(&self, key: &Key) -> Result<Option<Manifest>> {
        match Manifest::read(&self.artifact_dir(key).join(MANIFEST_FILE)) {
            Ok(m) => Ok(m.filter(|m| m.key == *key)),
            Err(CacheError::Manifest { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The one published artifact whose key starts with `prefix` (case-insensitive).
    pub fn resolve_prefix(&self, prefix: &str) -> Result<Key> {
        let p = Key::parse_prefix(prefix)?;
        let mut matches = Vec::new();
        for k in self.list_keys()?.into_iter().filter(|k| k.has_prefix(&p)) {
            if self.lookup(&k)?.is_some() {
                matches.push(k);
            }
        }
        match matches.len() {
            0 => Err(CacheError::NoSuchKey(p)),
            1 => Ok(matches[0]),
            n => Err(CacheError::AmbiguousKey(p, n)),
        }
    }

    /// Keys named by directories under `artifacts/` (published or not), sorted.
    pub(crate) fn list_keys(&self) -> Result<Vec<Key>> {
        let dir = self.root.join("artifacts");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).ctx("listing", &dir)? {
            let e = e.ctx("listing", &dir)?;
            if let Ok(k) = e.file_name().to_string_lossy().parse::<Key>() {
                out.push(k);
            }
        }
        out.sort();
        Ok(out)
    }

    /// A fresh staging directory for writing the artifact of `key`, named
    /// `tmp/<key>.<pid>.<host tag>-<nonce>` so gc can tell whether its writer lives.
    pub fn begin(&self, key: &Key) -> Result<Staging> {
        let tmp = self.root.join("tmp");
        std::fs::create_dir_all(&tmp).ctx("creating", &tmp)?;
        let dir = tmp.join(format!("{key}.{}.{}-{}", std::process::id(), lock::host_tag(), lock::unique_token()));
        std::fs::create_dir(&dir).ctx("creating staging directory", &dir)?;
        Ok(Staging { dir, key: *key, artifacts: self.root.join("artifacts"), tmp, committed: false })
    }

    /// Where an op keeps resumable progress for `key` (created on demand; survives
    /// crashes; removed by `clear_partial` or by gc once unreached and unlocked).
    pub fn partial_dir(&self, key: &Key) -> Result<PathBuf> {
        let p = self.root.join("partial").join(key.to_string());
        std::fs::create_dir_all(&p).ctx("creating", &p)?;
        Ok(p)
    }

    pub fn clear_partial(&self, key: &Key) -> Result<()> {
        let p = self.root.join("partial").join(key.to_string());
        if std::fs::symlink_metadata(&p).is_err() {
            return Ok(());
        }
        // Move it out of the way first so a crash mid-delete leaves no half-cleared progress.
        let grave = self.root.join("tmp").join(format!("{key}.removing.{}", lock::unique_token()));
        match std::fs::rename(&p, &grave) {
            Ok(()) => remove_tree(&grave),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("removing", &p),
        }
    }

    /// Checks a published artifact against its manifest. Problems are reported,
    /// not returned as errors; `Err` only for failures to read the cache itself.
    pub fn verify(&self, key: &Key, mode: VerifyMode) -> Result<VerifyReport> {
        let dir = self.artifact_dir(key);
        let mut problems = Vec::new();
        if std::fs::symlink_metadata(&dir).is_err() {
            problems.push("artifact is missing".to_string());
            return Ok(VerifyReport { key: *key, ok: false, problems });
        }
        let m = match Manifest::read(&dir.join(MANIFEST_FILE)) {
            Ok(Some(m)) => m,
            Ok(None) => {
                problems.push("manifest.json is missing".to_string());
                return Ok(VerifyReport { key: *key, ok: false, problems });
            }
            Err(CacheError::Manifest { message, .. }) => {
                problems.push(format!("manifest.json unreadable: {message}"));
                return Ok(VerifyReport { key: *key, ok: false, problems });
            }
            Err(e) => return Err(e),
        };
        if m.key != *key {
            problems.push(format!("manifest.json is for key {} instead", m.key));
        }
        let listed: u64 = m.files.iter().map(|f| f.size).sum();
        if listed != m.total_bytes {
            problems.push(format!("manifest.json: total_bytes {} != sum of file sizes {listed}", m.total_bytes));
        }
        let per_file: Vec<Option<String>> = m
            .files
            .par_iter()
            .map(|f| {
                let path = dir.join(&f.path);
                match std::fs::symlink_metadata(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!("file {}: missing", f.path)),
                    Err(e) => Some(format!("file {}: {e}", f.path)),
                    Ok(meta) if !meta.is_file() => Some(format!("file {}: not a regular file", f.path)),
                    Ok(meta) if meta.len() != f.size => Some(format!("file {}: size {} != manifest {}", f.path, meta.len(), f.size)),
                    Ok(_) if mode == VerifyMode::Full => match hash_file(&path) {
                        Ok(h) if h == f.blake3 => None,
                        Ok(h) => Some(format!("file {}: blake3 mismatch ({} != manifest {})", f.path, &h[..12], f.blake3.get(..12).unwrap_or(&f.blake3))),
                        Err(e) => Some(format!("file {}: {e}", f.path)),
                    },
                    Ok(_) => None,
                }
            })
            .collect();
        problems.extend(per_file.into_iter().flatten());
        if mode == VerifyMode::Full {
            let listed: HashSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
            let (mut entries, mut dirs) = (Vec::new(), Vec::new());
            walk(&dir, &mut entries, &mut dirs)?;
            let mut extra: Vec<String> = entries.iter().map(|(p, _)| rel_path(&dir, p)).filter(|r| r != MANIFEST_FILE && !listed.contains(r.as_str())).collect();
            extra.sort();
            problems.extend(extra.into_iter().map(|r| format!("file {r}: not in the manifest")));
        }
        Ok(VerifyReport { key: *key, ok: problems.is_empty(), problems })
    }

    /// Every published artifact, oldest first.
    pub fn list(&self) -> Result<Vec<ArtifactSummary>> {
        let mut out = Vec::new();
        for key in self.list_keys()? {
            if let Some(m) = self.lookup(&key)? {
                out.push(ArtifactSummary { key, op: m.op, stage: m.stage, bytes: m.total_bytes, created_unix: m.created_unix });
            }
        }
        out.sort_by(|a, b| a.created_unix.total_cmp(&b.created_unix).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Removes an artifact atomically: it leaves `artifacts/` in one rename, then
    /// is deleted from `tmp/`. Removing a missing artifact is not an error.
    pub fn remove(&self, key: &Key) -> Result<()> {
        let dir = self.artifact_dir(key);
        let grave = self.root.join("tmp").join(format!("{key}.removing.{}", lock::unique_token()));
        match std::fs::rename(&dir, &grave) {
            Ok(()) => {
                sync_dir(&self.root.join("artifacts"))?;
                remove_tree(&grave)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("removing", &dir),
        }
    }
}

/// Writes a small file via a uniquely named temporary and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = lock::sibling(path, &format!("tmp.{}", lock::unique_token()));
    std::fs::write(&tmp, bytes).ctx("writing", &tmp)?;
    std::fs::rename(&tmp, path)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .ctx("writing", path)
}

/// An artifact being written. Dropped without `commit`, it leaves nothing behind.
pub struct Staging {
    dir: PathBuf,
    key: Key,
    artifacts: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl Staging {
    /// Where the op writes its payload files (any subdirectories allowed).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    fn target(&self) -> PathBuf {
        self.artifacts.join(self.key.to_string())
    }

    /// The artifact already published under this key, if any.
    fn published(&self) -> Option<Manifest> {
        Manifest::read(&self.target().join(MANIFEST_FILE)).ok().flatten().filter(|m| m.key == self.key)
    }

    /// Hashes and fsyncs every payload file and directory, writes `manifest.json`
    /// last, and renames the directory into `artifacts/<key>`. If another writer
    /// published the key first, its artifact stays and its manifest is returned.
    pub fn commit(mut self, draft: ManifestDraft) -> Result<Manifest> {
        if let Some(existing) = self.published() {
            return Ok(existing);
        }
        let (mut entries, mut dirs) = (Vec::new(), Vec::new());
        walk(&self.dir, &mut entries, &mut dirs)?;
        let mut rels = Vec::with_capacity(entries.len());
        for (path, ft) in &entries {
            let payload_err = |message: &str| CacheError::Payload { path: path.clone(), message: message.to_string() };
            if !ft.is_file() {
                return Err(payload_err(if ft.is_symlink() { "symbolic links cannot be published; write the file itself" } else { "only regular files and directories can be published" }));
            }
            let rel = path.strip_prefix(&self.dir).unwrap();
            if rel.to_str().is_none() {
                return Err(payload_err("file names must be valid UTF-8"));
            }
            let rel = rel_path(&self.dir, path);
            if rel == MANIFEST_FILE {
                return Err(payload_err("manifest.json is written by the cache; ops may not write it"));
            }
            rels.push(rel);
        }
        rels.sort();
        let files = rels
            .into_par_iter()
            .map(|rel| {
                let path = self.dir.join(&rel);
                let f = std::fs::File::open(&path).ctx("opening", &path)?;
                f.sync_all().ctx("syncing", &path)?;
                let size = f.metadata().ctx("reading metadata of", &path)?.len();
                Ok(FileEntry { blake3: hash_file(&path)?, path: rel, size })
            })
            .collect::<Result<Vec<_>>>()?;
        for d in &dirs {
            sync_dir(d)?;
        }
        let manifest = Manifest::from_draft(self.key, draft, files, lock::now_unix());
        let mpath = self.dir.join(MANIFEST_FILE);
        let mtmp = lock::sibling(&mpath, &format!("tmp.{}", lock::unique_token()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&mtmp).ctx("writing", &mtmp)?;
            f.write_all(&serde_json::to_vec_pretty(&manifest).unwrap()).ctx("writing", &mtmp)?;
            f.sync_all().ctx("syncing", &mtmp)?;
        }
        std::fs::rename(&mtmp, &mpath).ctx("writing", &mpath)?;
        sync_dir(&self.dir)?;
        Ok(self.publish()?.unwrap_or(manifest))
    }

    /// Renames the staging directory into place (`None`), or finds that another
    /// writer did (`Some(their manifest)`).
    fn publish(&mut self) -> Result<Option<Manifest>> {
        let target = self.target();
        for _ in 0..4 {
            let err = match std::fs::rename(&self.dir, &target) {
                Ok(()) => {
                    self.committed = true;
                    sync_dir(&self.artifacts)?;
                    return Ok(None);
                }
                Err(e) => e,
            };
            if let Some(theirs) = self.published() {
                return Ok(Some(theirs)); // another writer won; Drop discards ours
            }
            if std::fs::symlink_metadata(&target).is_err() {
                return Err(err).ctx("publishing artifact to", &target);
            }
            // A non-empty directory without a valid manifest: damage, not an artifact.
            // Move it aside; if it turns out someone published a moment ago, put it back.
            let grave = self.tmp.join(format!("{}.removing.{}", self.key, lock::unique_token()));
            match std::fs::rename(&target, &grave) {
                Ok(()) => {
                    let theirs = Manifest::read(&grave.join(MANIFEST_FILE)).ok().flatten().is_some_and(|m| m.key == self.key);
                    if !(theirs && std::fs::rename(&grave, &target).is_ok()) {
                        let _ = remove_tree(&grave);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("moving aside damaged artifact", &target),
            }
        }
        if let Some(theirs) = self.published() {
            return Ok(Some(theirs));
        }
        Err(CacheError::Payload { path: target, message: "could not publish: the artifact directory kept changing under concurrent writers".into() })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}
