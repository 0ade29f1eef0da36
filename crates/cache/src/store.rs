//! The artifact store: lookup, atomic publishing, verification, listing, removal.

use crate::error::{CacheError, IoContext, Result};
use crate::key::Key;
use crate::lock::{self, LockGuard, LockInfo};
use crate::manifest::{FileEntry, MANIFEST_FILE, MANIFEST_FORMAT_VERSION, Manifest, ManifestDraft};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub const CACHE_FORMAT_VERSION: u32 = 1;
const LAYOUT: &[&str] = &["artifacts", "tmp", "partial", "locks", "fingerprints", "runs"];

#[derive(Default, Debug)]
pub struct FingerprintStats {
    /// Files actually read and hashed (memo misses).
    pub files_hashed: AtomicU64,
}

pub struct Cache {
    root: PathBuf,
    pub stats: FingerprintStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Manifest readable, every file present with the recorded size.
    Quick,
    /// Quick plus re-hashing every file.
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

fn sync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).ctx("syncing directory", path)
}

/// Relative, `/`-separated paths of all regular files under `dir`.
pub(crate) fn walk_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx("listing", dir)? {
        let entry = entry.ctx("listing", dir)?;
        let path = entry.path();
        let ft = entry.file_type().ctx("reading", &path)?;
        if ft.is_dir() {
            walk_files(base, &path, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            let rel = path.strip_prefix(base).unwrap();
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    Ok(())
}

pub(crate) fn dir_size(path: &Path) -> u64 {
    let mut files = Vec::new();
    if walk_files(path, path, &mut files).is_err() {
        return 0;
    }
    files.iter().filter_map(|f| std::fs::symlink_metadata(path.join(f)).ok()).map(|m| m.len()).sum()
}

impl Cache {
    /// Opens (creating if needed) a cache directory.
    pub fn open(root: &Path) -> Result<Cache> {
        std::fs::create_dir_all(root).ctx("creating cache directory", root)?;
        let root = std::fs::canonicalize(root).ctx("resolving", root)?;
        let marker = root.join("saepipe-cache.json");
        match std::fs::read(&marker) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| CacheError::Format { root: root.clone(), message: format!("saepipe-cache.json is unreadable: {e}") })?;
                let version = v.get("format_version").and_then(|x| x.as_u64());
                if version != Some(CACHE_FORMAT_VERSION as u64) {
                    return Err(CacheError::Format {
                        root,
                        message: format!("cache format version {} is not supported (this saepipe uses version {CACHE_FORMAT_VERSION})", version.map(|x| x.to_string()).unwrap_or_else(|| "?".into())),
                    });
                }
            }
            Err(_) => {
                let tmp = root.join(format!("saepipe-cache.json.{}", lock::unique_token()));
                std::fs::write(&tmp, format!("{{\"format_version\": {CACHE_FORMAT_VERSION}}}\n")).ctx("writing", &tmp)?;
                std::fs::rename(&tmp, &marker).ctx("writing", &marker)?;
                let _ = std::fs::write(root.join("CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n# This is a saepipe cache directory.\n");
            }
        }
        for d in LAYOUT {
            let p = root.join(d);
            std::fs::create_dir_all(&p).ctx("creating", &p)?;
        }
        Ok(Cache { root, stats: FingerprintStats::default() })
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

    fn read_manifest(&self, key: &Key) -> Result<Option<Manifest>> {
        let path = self.artifact_dir(key).join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("reading", &path),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| CacheError::Manifest { path: path.clone(), message: e.to_string() })?;
        if m.format_version != MANIFEST_FORMAT_VERSION {
            return Err(CacheError::Manifest { path, message: format!("manifest format version {} is not supported (this saepipe writes version {MANIFEST_FORMAT_VERSION})", m.format_version) });
        }
        Ok(Some(m))
    }

    /// The artifact's manifest if it is published; damaged manifests count as absent.
    pub fn lookup(&self, key: &Key) -> Result<Option<Manifest>> {
        match self.read_manifest(key) {
            Ok(m) => Ok(m.filter(|m| m.key == *key)),
            Err(CacheError::Manifest { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn resolve_prefix(&self, prefix: &str) -> Result<Key> {
        let prefix = prefix.to_ascii_lowercase();
        let matches: Vec<Key> = self.list_keys()?.into_iter().filter(|k| k.to_string().starts_with(&prefix)).collect();
        match matches.len() {
            0 => Err(CacheError::NoSuchKey(prefix)),
            1 => Ok(matches[0]),
            n => Err(CacheError::AmbiguousKey(prefix, n)),
        }
    }

    fn list_keys(&self) -> Result<Vec<Key>> {
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

    /// A fresh staging directory for writing the artifact of `key`.
    pub fn begin(&self, key: &Key) -> Result<Staging> {
        let dir = self.root.join("tmp").join(format!("{key}.{}.{}", std::process::id(), lock::unique_token()));
        std::fs::create_dir_all(&dir).ctx("creating staging directory", &dir)?;
        Ok(Staging { dir, key: *key, target: self.artifact_dir(key), tmp_root: self.root.join("tmp"), committed: false })
    }

    /// Where an op keeps resumable progress for `key` (created on demand).
    pub fn partial_dir(&self, key: &Key) -> Result<PathBuf> {
        let p = self.root.join("partial").join(key.to_string());
        std::fs::create_dir_all(&p).ctx("creating", &p)?;
        Ok(p)
    }

    pub fn clear_partial(&self, key: &Key) -> Result<()> {
        let p = self.root.join("partial").join(key.to_string());
        match std::fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("removing", &p),
        }
    }

    pub fn verify(&self, key: &Key, mode: VerifyMode) -> Result<VerifyReport> {
        let dir = self.artifact_dir(key);
        let mut problems = Vec::new();
        match self.read_manifest(key) {
            Ok(None) => problems.push("artifact is missing (no manifest.json)".to_string()),
            Err(e) => problems.push(format!("manifest.json unreadable: {e}")),
            Ok(Some(m)) => {
                if m.key != *key {
                    problems.push(format!("manifest is for key {} instead", m.key.short()));
                }
                for f in &m.files {
                    let path = dir.join(&f.path);
                    match std::fs::metadata(&path) {
                        Err(_) => problems.push(format!("file {} is missing", f.path)),
                        Ok(meta) if meta.len() != f.size => problems.push(format!("file {}: size {} != manifest {}", f.path, meta.len(), f.size)),
                        Ok(_) if mode == VerifyMode::Full => match crate::fingerprint::hash_file(&path) {
                            Ok(h) if h == f.blake3 => {}
                            Ok(_) => problems.push(format!("file {}: content hash does not match the manifest", f.path)),
                            Err(e) => problems.push(format!("file {}: {e}", f.path)),
                        },
                        Ok(_) => {}
                    }
                }
            }
        }
        Ok(VerifyReport { key: *key, ok: problems.is_empty(), problems })
    }

    pub fn list(&self) -> Result<Vec<ArtifactSummary>> {
        let mut out = Vec::new();
        for key in self.list_keys()? {
            if let Some(m) = self.lookup(&key)? {
                out.push(ArtifactSummary { key, op: m.op, stage: m.stage, bytes: m.total_bytes, created_unix: m.created_unix });
            }
        }
        Ok(out)
    }

    /// Removes an artifact atomically (it disappears from view at once).
    pub fn remove(&self, key: &Key) -> Result<()> {
        let dir = self.artifact_dir(key);
        let grave = self.root.join("tmp").join(format!("{key}.removing.{}", lock::unique_token()));
        match std::fs::rename(&dir, &grave) {
            Ok(()) => std::fs::remove_dir_all(&grave).ctx("removing", &grave),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("removing", &dir),
        }
    }

    fn lock_path(&self, key: &Key) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    pub fn try_lock(&self, key: &Key) -> Result<Option<LockGuard>> {
        lock::try_acquire(&self.lock_path(key))
    }

    /// Blocks until the lock of `key` is ours; `on_wait` is told who holds it.
    pub fn lock(&self, key: &Key, on_wait: &mut dyn FnMut(&LockInfo)) -> Result<LockGuard> {
        let path = self.lock_path(key);
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(g) = lock::try_acquire(&path)? {
                return Ok(g);
            }
            if let Some(info) = lock::read_info(&path) {
                on_wait(&info);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

/// An artifact being written. Dropped without `commit`, it leaves nothing behind.
pub struct Staging {
    dir: PathBuf,
    key: Key,
    target: PathBuf,
    tmp_root: PathBuf,
    committed: bool,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hashes and fsyncs every payload file, writes the manifest last and renames
    /// the directory into place. If another process published the same key first,
    /// its artifact wins and is returned.
    pub fn commit(mut self, draft: ManifestDraft) -> Result<Manifest> {
        let mut rel_files = Vec::new();
        walk_files(&self.dir, &self.dir, &mut rel_files)?;
        rel_files.sort();
        let mut files = Vec::new();
        for rel in rel_files {
            if rel == MANIFEST_FILE {
                return Err(CacheError::Manifest { path: self.dir.join(rel), message: "ops may not write their own manifest.json".into() });
            }
            let path = self.dir.join(&rel);
            let f = std::fs::File::open(&path).ctx("opening", &path)?;
            f.sync_all().ctx("syncing", &path)?;
            let size = f.metadata().ctx("reading metadata of", &path)?.len();
            files.push(FileEntry { blake3: crate::fingerprint::hash_file(&path)?, path: rel, size });
        }
        let total_bytes = files.iter().map(|f| f.size).sum();
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            saepipe_version: env!("CARGO_PKG_VERSION").to_string(),
            key: self.key,
            op: draft.op,
            op_version: draft.op_version,
            stage: draft.stage,
            params: draft.params,
            inputs: draft.inputs,
            external: draft.external,
            metrics: draft.metrics,
            started_unix: draft.started_unix,
            seconds: draft.seconds,
            resumed: draft.resumed,
            files,
            total_bytes,
            created_unix: lock::now_unix(),
        };
        let mpath = self.dir.join(MANIFEST_FILE);
        let mtmp = self.dir.join("manifest.json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&mtmp).ctx("writing", &mtmp)?;
            f.write_all(&serde_json::to_vec_pretty(&manifest).unwrap()).ctx("writing", &mtmp)?;
            f.sync_all().ctx("syncing", &mtmp)?;
        }
        std::fs::rename(&mtmp, &mpath).ctx("writing", &mpath)?;
        sync_dir(&self.dir)?;
        let parent = self.target.parent().unwrap().to_path_buf();
        if self.target.join(MANIFEST_FILE).exists() {
            // Someone else won the race; theirs is equivalent by construction.
            if let Ok(bytes) = std::fs::read(self.target.join(MANIFEST_FILE)) {
                if let Ok(existing) = serde_json::from_slice::<Manifest>(&bytes) {
                    return Ok(existing);
                }
            }
        }
        if self.target.exists() {
            // A leftover without a manifest is not an artifact: move it out of the way.
            let grave = self.tmp_root.join(format!("{}.removing.{}", self.key, lock::unique_token()));
            std::fs::rename(&self.target, &grave).ctx("moving aside", &self.target)?;
            let _ = std::fs::remove_dir_all(&grave);
        }
        match std::fs::rename(&self.dir, &self.target) {
            Ok(()) => {}
            Err(_) if self.target.join(MANIFEST_FILE).exists() => {
                let bytes = std::fs::read(self.target.join(MANIFEST_FILE)).ctx("reading", &self.target)?;
                return serde_json::from_slice(&bytes).map_err(|e| CacheError::Manifest { path: self.target.join(MANIFEST_FILE), message: e.to_string() });
            }
            Err(e) => return Err(e).ctx("publishing", &self.target),
        }
        self.committed = true;
        sync_dir(&parent)?;
        Ok(manifest)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
