//! The artifact store: opening a cache, lookup, atomic publishing, verification,
//! listing and removal.

use crate::error::{CacheError, IoContext, Result};
use crate::files::{rel_path, remove_tree, sibling, sync_dir, walk, write_atomically};
use crate::fingerprint::{self, FingerprintStats, hash_file};
use crate::host;
use crate::key::Key;
use crate::lock::{self, LockTiming};
use crate::manifest::{FileEntry, LEGACY_MANIFEST_FILE, MANIFEST_FILE, Manifest, ManifestDraft};
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Version of the directory layout, recorded in `<root>/saepipe-cache.json`.
/// 2: manifests are named `_manifest.json` (1: `manifest.json`). A version 1
/// cache is read as it is and marked 2 when opened for writing, because a
/// saepipe that knows only version 1 would take the artifacts published here
/// for damaged ones (its gc would delete them); it refuses the cache instead.
pub const CACHE_FORMAT_VERSION: u32 = 2;
/// The oldest layout version this saepipe opens (its artifacts are read as they are).
const OLDEST_CACHE_FORMAT_VERSION: u32 = 1;
/// File at the cache root that marks a saepipe cache and records its layout version.
pub const CACHE_MARKER_FILE: &str = "saepipe-cache.json";
const LAYOUT: &[&str] =
    &["artifacts", "generations", "leases", "tmp", "partial", "downloads", "streamed", "locks", "fingerprints", "runs"];
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by saepipe.\n# For information about cache directory tags see https://bford.info/cachedir/\n";

/// A cache directory. Cheap to open; safe to share between threads, and between
/// processes and hosts through the filesystem.
pub struct Cache {
    root: PathBuf,
    /// Counters of the fingerprint memo (hashes actually computed vs. memo hits).
    pub stats: FingerprintStats,
    timing: LockTiming,
    read_only: bool,
}

/// How thoroughly [`Cache::verify`] checks an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Manifest readable, every listed file present with the recorded size.
    Quick,
    /// Quick, plus every file re-hashed and no files beyond those listed.
    Full,
}

/// The outcome of verifying one artifact.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The artifact checked (for an entry of `artifacts/` whose name is not a
    /// key, the key of empty input; the entry's name comes with the report).
    pub key: Key,
    /// Whether `problems` is empty.
    pub ok: bool,
    /// One line per problem found, naming the file involved.
    pub problems: Vec<String>,
}

/// One published artifact, as `cache ls` shows it.
#[derive(Clone, Debug)]
pub struct ArtifactSummary {
    /// The artifact's key.
    pub key: Key,
    /// The op that produced it.
    pub op: String,
    /// The stage instance that produced it.
    pub stage: String,
    /// Total size of its payload files, in bytes.
    pub bytes: u64,
    /// When it was published, in seconds since the Unix epoch.
    pub created_unix: f64,
}

impl Cache {
    /// Opens a cache directory, creating its layout if missing. Refuses caches
    /// written in another layout version.
    pub fn open(root: &Path) -> Result<Cache> {
        if std::fs::symlink_metadata(root).is_err() {
            std::fs::create_dir_all(root).ctx("creating cache directory", root)?;
        }
        let root = std::fs::canonicalize(root).ctx("resolving", root)?;
        let read_only = !writable(&root);
        let group_shared = !read_only && share_with_group(&root);
        let marker = root.join(CACHE_MARKER_FILE);
        let format_err = |message: String| CacheError::Format { root: root.clone(), message };
        match std::fs::read(&marker) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| format_err(format!("{CACHE_MARKER_FILE} is unreadable: {e}")))?;
                let version = v.get("format_version").and_then(|x| x.as_u64());
                match version {
                    Some(v) if v == CACHE_FORMAT_VERSION as u64 => {}
                    Some(v) if (OLDEST_CACHE_FORMAT_VERSION as u64..CACHE_FORMAT_VERSION as u64).contains(&v) => {
                        if !read_only {
                            write_atomically(&marker, marker_json().as_bytes())?;
                        }
                    }
                    _ => {
                        let shown = version.map(|x| x.to_string()).unwrap_or_else(|| "missing".into());
                        return Err(format_err(format!(
                            "cache format version {shown} is not supported (this saepipe uses version {CACHE_FORMAT_VERSION} and reads versions {OLDEST_CACHE_FORMAT_VERSION} to {CACHE_FORMAT_VERSION}); use another cache directory or a matching saepipe"
                        )));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !read_only => {
                write_atomically(&marker, marker_json().as_bytes())?;
            }
            Err(e) => return Err(e).ctx("reading", &marker),
        }
        let cache = Cache { root, stats: FingerprintStats::default(), timing: LockTiming::default(), read_only };
        if read_only {
            // Served as it is: hits only, nothing created.
            return Ok(cache);
        }
        let tag = cache.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            write_atomically(&tag, CACHEDIR_TAG.as_bytes())?;
        }
        for d in LAYOUT {
            let p = cache.root.join(d);
            std::fs::create_dir_all(&p).ctx("creating", &p)?;
            if group_shared {
                open_to_group(&p);
            }
        }
        cache.adopt_plain_artifact_dirs()?;
        Ok(cache)
    }

    /// Whether this process can write the cache; a read-only cache serves hits only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Overrides the lock heartbeat period and staleness threshold (every process
    /// sharing the cache should use the same values). Mostly for tests.
    pub fn with_lock_timing(mut self, timing: LockTiming) -> Cache {
        assert!(timing.heartbeat * 2 < timing.stale_after, "the lock heartbeat must be well under half of stale_after");
        self.timing = timing;
        self
    }

    /// The heartbeat period and staleness threshold of this cache's locks and leases.
    pub fn lock_timing(&self) -> LockTiming {
        self.timing
    }

    /// The cache directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `artifacts/<key>`: the stable name of an artifact, a link to its current
    /// generation. Paths under it may point into a newer generation after a
    /// rebuild; a reader that needs one consistent generation takes a [`Lease`](crate::Lease).
    pub fn artifact_dir(&self, key: &Key) -> PathBuf {
        self.root.join("artifacts").join(key.to_string())
    }

    /// The directory of `key`'s current generation, or `None` if it has none.
    pub fn generation_dir(&self, key: &Key) -> Option<PathBuf> {
        current_generation(&self.root, key).map(|g| g.dir(&self.root, key))
    }

    /// `runs/`, where the engine writes its run records.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// blake3 hex of a file's content, memoized by (canonical path, size, mtime,
    /// ctime, inode) under `fingerprints/`, so an unchanged file is read once.
    /// Symbolic links are followed; a directory is an error (use
    /// [`fingerprint_dir`](Self::fingerprint_dir)).
    pub fn fingerprint_file(&self, path: &Path) -> Result<String> {
        self.fingerprint_memo().file(path)
    }

    /// Stable hash of a directory tree: its sorted relative `/`-separated file
    /// paths and their content fingerprints, independent of where the tree lives.
    /// Symbolic links are followed (cycles are skipped); empty directories do not count.
    pub fn fingerprint_dir(&self, dir: &Path) -> Result<String> {
        self.fingerprint_memo().dir(dir)
    }

    fn fingerprint_memo(&self) -> fingerprint::Memo<'_> {
        fingerprint::Memo { dir: self.root.join("fingerprints"), stats: &self.stats }
    }

    /// The manifest of a published artifact; `Ok(None)` for a missing artifact and
    /// also for a directory whose manifest is missing, damaged or for another key.
    pub fn lookup(&self, key: &Key) -> Result<Option<Manifest>> {
        match Manifest::read_in(&self.artifact_dir(key)) {
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
        let dir = tmp.join(format!("{key}.{}.{}-{}", std::process::id(), host::host_tag(), host::unique_token()));
        std::fs::create_dir(&dir).ctx("creating staging directory", &dir)?;
        Ok(Staging { dir, key: *key, root: self.root.clone(), timing: self.timing, committed: false })
    }

    /// Where an op keeps resumable progress for `key` (created on demand; survives
    /// crashes; removed by `clear_partial` or by gc once unreached and unlocked).
    pub fn partial_dir(&self, key: &Key) -> Result<PathBuf> {
        let p = self.root.join("partial").join(key.to_string());
        std::fs::create_dir_all(&p).ctx("creating", &p)?;
        Ok(p)
    }

    /// Where a download of `key` from a remote cache keeps its files until they
    /// are verified and published (created on demand; survives crashes so the
    /// next pull resumes; removed by gc like partial progress). Separate from
    /// [`partial_dir`](Self::partial_dir), which belongs to the op.
    pub fn download_dir(&self, key: &Key) -> Result<PathBuf> {
        let p = self.root.join("downloads").join(key.to_string());
        std::fs::create_dir_all(&p).ctx("creating", &p)?;
        Ok(p)
    }

    /// Where files of remote artifacts read in place (streamed activation
    /// stores) are kept for reuse, by blake3, within a size budget (created on
    /// demand; any file in it may be deleted at any time).
    pub fn streamed_dir(&self) -> Result<PathBuf> {
        let p = self.root.join("streamed");
        std::fs::create_dir_all(&p).ctx("creating", &p)?;
        Ok(p)
    }

    /// Deletes `key`'s resumable progress (once its artifact is published, or to
    /// start over); a missing directory is not an error.
    pub fn clear_partial(&self, key: &Key) -> Result<()> {
        let p = self.root.join("partial").join(key.to_string());
        if std::fs::symlink_metadata(&p).is_err() {
            return Ok(());
        }
        // Move it out of the way first so a crash mid-delete leaves no half-cleared progress.
        let grave = self.root.join("tmp").join(format!("{key}.removing.{}", host::unique_token()));
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
        if std::fs::metadata(&dir).is_err() {
            let target = std::fs::read_link(&dir).map(|t| t.display().to_string()).unwrap_or_default();
            problems.push(format!("artifact link points to a missing generation ({target})"));
            return Ok(VerifyReport { key: *key, ok: false, problems });
        }
        // Named as found: `_manifest.json`, or `manifest.json` in artifacts of older versions.
        let mpath = Manifest::path_in(&dir);
        let mname = rel_path(&dir, &mpath);
        let m = match Manifest::read(&mpath) {
            Ok(Some(m)) => m,
            Ok(None) => {
                problems.push(format!("{MANIFEST_FILE} is missing"));
                return Ok(VerifyReport { key: *key, ok: false, problems });
            }
            Err(CacheError::Manifest { message, .. }) => {
                problems.push(format!("{mname} unreadable: {message}"));
                return Ok(VerifyReport { key: *key, ok: false, problems });
            }
            Err(e) => return Err(e),
        };
        if m.key != *key {
            problems.push(format!("{mname} is for key {} instead", m.key));
        }
        let listed: u64 = m.files.iter().map(|f| f.size).sum();
        if listed != m.total_bytes {
            problems.push(format!("{mname}: total_bytes {} != sum of file sizes {listed}", m.total_bytes));
        }
        problems.extend(check_files(&dir, &m.files, mode));
        if mode == VerifyMode::Full {
            let listed: HashSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
            let (mut entries, mut dirs) = (Vec::new(), Vec::new());
            walk(&dir, &mut entries, &mut dirs)?;
            let mut extra: Vec<String> = entries
                .iter()
                .map(|(p, _)| rel_path(&dir, p))
                .filter(|r| *r != mname && !listed.contains(r.as_str()))
                .collect();
            extra.sort();
            problems.extend(extra.into_iter().map(|r| format!("file {r}: not in the manifest")));
        }
        Ok(VerifyReport { key: *key, ok: problems.is_empty(), problems })
    }

    /// Verifies every entry of `artifacts/`, published or not: a directory whose
    /// manifest is missing or unreadable, a dangling link or a name that is not a
    /// key is reported as a problem, never skipped.
    pub fn verify_all(&self, mode: VerifyMode) -> Result<Vec<(String, VerifyReport)>> {
        let dir = self.root.join("artifacts");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .ctx("listing", &dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            match name.parse::<Key>() {
                Ok(k) => out.push((name, self.verify(&k, mode)?)),
                Err(_) if name.starts_with('.') => {}
                Err(_) => {
                    let problems =
                        vec![format!("`{name}` in artifacts/ is not an artifact (its name is not a cache key)")];
                    out.push((
                        name,
                        VerifyReport { key: Key::from_hasher(blake3::Hasher::new()), ok: false, problems },
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Every published artifact, oldest first.
    pub fn list(&self) -> Result<Vec<ArtifactSummary>> {
        let mut out = Vec::new();
        for key in self.list_keys()? {
            if let Some(m) = self.lookup(&key)? {
                out.push(ArtifactSummary {
                    key,
                    op: m.op,
                    stage: m.stage,
                    bytes: m.total_bytes,
                    created_unix: m.created_unix,
                });
            }
        }
        out.sort_by(|a, b| a.created_unix.total_cmp(&b.created_unix).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Removes an artifact atomically: its name leaves `artifacts/` in one rename;
    /// its generation is deleted at once unless a reader holds a lease on the key,
    /// in which case it stays until gc finds it unread. Removing a missing
    /// artifact is not an error.
    pub fn remove(&self, key: &Key) -> Result<()> {
        let dir = self.artifact_dir(key);
        let current = current_generation(&self.root, key);
        let grave = self.root.join("tmp").join(format!("{key}.removing.{}", host::unique_token()));
        match std::fs::rename(&dir, &grave) {
            Ok(()) => {
                sync_dir(&self.root.join("artifacts"))?;
                remove_tree(&grave)?;
                match current {
                    Some(g) => retire(&self.root, self.timing, key, &g),
                    None => Ok(()),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("removing", &dir),
        }
    }

    /// Artifacts kept as plain directories in `artifacts/` (written before
    /// generations existed) become generations behind a link, so that a later
    /// rebuild never has to move a directory a reader is using.
    fn adopt_plain_artifact_dirs(&self) -> Result<()> {
        let dir = self.root.join("artifacts");
        for e in std::fs::read_dir(&dir).ctx("listing", &dir)? {
            let e = e.ctx("listing", &dir)?;
            let Ok(key) = e.file_name().to_string_lossy().parse::<Key>() else { continue };
            if !e.file_type().is_ok_and(|t| t.is_dir()) || self.lookup(&key)?.is_none() {
                continue;
            }
            // Under the key's lock, so no writer publishes meanwhile; a busy key waits for the next open.
            let Some(_lock) = self.try_lock(&key)? else { continue };
            let gen_name = format!("{key}.{}", host::unique_token());
            let gen_dir = self.root.join("generations").join(&gen_name);
            let link = self.artifact_dir(&key);
            std::fs::rename(&link, &gen_dir).ctx("adopting artifact", &link)?;
            std::os::unix::fs::symlink(link_target(&gen_name), &link).ctx("linking artifact", &link)?;
        }
        Ok(())
    }
}

/// `saepipe-cache.json` of this layout version.
fn marker_json() -> String {
    format!("{{\"format_version\": {CACHE_FORMAT_VERSION}}}\n")
}

/// Problems of the listed files of an artifact directory (in parallel): missing,
/// not a regular file, another size, and with `Full` another blake3.
pub(crate) fn check_files(dir: &Path, files: &[FileEntry], mode: VerifyMode) -> Vec<String> {
    let per_file: Vec<Option<String>> = files
        .par_iter()
        .map(|f| {
            let path = dir.join(&f.path);
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!("file {}: missing", f.path)),
                Err(e) => Some(format!("file {}: {e}", f.path)),
                Ok(meta) if !meta.is_file() => Some(format!("file {}: not a regular file", f.path)),
                Ok(meta) if meta.len() != f.size => {
                    Some(format!("file {}: size {} != manifest {}", f.path, meta.len(), f.size))
                }
                Ok(_) if mode == VerifyMode::Full => match hash_file(&path) {
                    Ok(h) if h == f.blake3 => None,
                    Ok(h) => Some(format!(
                        "file {}: blake3 mismatch ({} != manifest {})",
                        f.path,
                        &h[..12],
                        f.blake3.get(..12).unwrap_or(&f.blake3)
                    )),
                    Err(e) => Some(format!("file {}: {e}", f.path)),
                },
                Ok(_) => None,
            }
        })
        .collect();
    per_file.into_iter().flatten().collect()
}

/// Whether this process may create files in the cache directory.
/// A cache directory with the setgid bit is shared by a group (a team cache
/// on a shared file system): its files belong to the directory's group, and
/// this process then creates files and directories with the group's
/// permissions equal to the owner's (the umask's group bits are cleared; its
/// bits for others are kept), so every member can take locks, resume partial
/// work, publish, rebuild and collect. Returns whether the cache is shared.
fn share_with_group(root: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let shared = std::fs::metadata(root).is_ok_and(|m| m.permissions().mode() & 0o2000 != 0);
    if shared {
        // SAFETY: umask only swaps the process's file-creation mask.
        unsafe {
            let old = libc::umask(0o022);
            libc::umask(old & !0o070);
        }
    }
    shared
}

/// Group permissions like the owner's, and setgid, on a directory this
/// process owns (made before the cache was shared, or by an older saepipe).
fn open_to_group(dir: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(m) = std::fs::metadata(dir) else { return };
    // SAFETY: geteuid has no preconditions.
    if m.uid() != unsafe { libc::geteuid() } {
        return;
    }
    let mode = m.permissions().mode();
    let want = mode | ((mode & 0o700) >> 3) | 0o2000;
    if want != mode {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want));
    }
}

fn writable(root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else { return false };
    // SAFETY: c is a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// What `artifacts/<key>` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Generation {
    /// A link to `generations/<name>`.
    Linked(String),
    /// A plain directory (written before generations existed, or on a read-only cache).
    Plain,
}

impl Generation {
    pub(crate) fn dir(&self, root: &Path, key: &Key) -> PathBuf {
        match self {
            Generation::Linked(name) => root.join("generations").join(name),
            Generation::Plain => root.join("artifacts").join(key.to_string()),
        }
    }
}

/// The relative link target of a generation (relative, so a cache can move).
fn link_target(gen_name: &str) -> PathBuf {
    Path::new("..").join("generations").join(gen_name)
}

pub(crate) fn current_generation(root: &Path, key: &Key) -> Option<Generation> {
    let path = root.join("artifacts").join(key.to_string());
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if meta.is_dir() {
        return Some(Generation::Plain);
    }
    let target = std::fs::read_link(&path).ok()?;
    let name = target.file_name()?.to_string_lossy().into_owned();
    Some(Generation::Linked(name))
}

/// Deletes a generation that is no longer current, unless a live reader holds a
/// lease on its key (then gc deletes it once the lease is gone).
pub(crate) fn retire(root: &Path, timing: LockTiming, key: &Key, g: &Generation) -> Result<()> {
    let Generation::Linked(name) = g else { return Ok(()) };
    if current_generation(root, key).as_ref() == Some(g) || lock::live_leases(root, timing, key) > 0 {
        return Ok(());
    }
    let dir = root.join("generations").join(name);
    let grave = root.join("tmp").join(format!("{key}.removing.{}", host::unique_token()));
    match std::fs::rename(&dir, &grave) {
        Ok(()) => remove_tree(&grave),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("retiring", &dir),
    }
}

/// An artifact being written. Dropped without `commit`, it leaves nothing behind.
pub struct Staging {
    /// The staging directory, and after the move into `generations/` that directory.
    dir: PathBuf,
    key: Key,
    root: PathBuf,
    timing: LockTiming,
    committed: bool,
}

/// Whether a commit may replace a valid published artifact.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Keep a valid published artifact (the usual, lock-free publish).
    IfAbsentOrDamaged,
    /// Publish a new generation even over a valid one (`--force`, rebuilds).
    Always,
}

impl Staging {
    /// Where the op writes its payload files (any subdirectories allowed).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn link(&self) -> PathBuf {
        self.root.join("artifacts").join(self.key.to_string())
    }

    /// The artifact already published under this key, if any.
    fn published(&self) -> Option<Manifest> {
        Manifest::read_in(&self.link()).ok().flatten().filter(|m| m.key == self.key)
    }

    /// Hashes and fsyncs every payload file and directory, writes `_manifest.json`
    /// last, moves the directory into `generations/` and links `artifacts/<key>`
    /// to it. If another writer published the key first, its artifact stays and
    /// its manifest is returned.
    pub fn commit(self, draft: ManifestDraft) -> Result<Manifest> {
        self.commit_with(draft, Replace::IfAbsentOrDamaged)
    }

    /// Like [`commit`](Self::commit), but publishes a new generation even when a
    /// valid artifact exists (a forced or planned rebuild). The replaced
    /// generation is deleted once no reader holds a lease on the key. The caller
    /// holds the key's lock.
    pub fn commit_replacing(self, draft: ManifestDraft) -> Result<Manifest> {
        self.commit_with(draft, Replace::Always)
    }

    fn commit_with(self, draft: ManifestDraft, replace: Replace) -> Result<Manifest> {
        if replace == Replace::IfAbsentOrDamaged
            && let Some(existing) = self.published()
        {
            return Ok(existing);
        }
        let files = self.hash_payload()?;
        let manifest = Manifest::from_draft(self.key, draft, files, lock::now_unix());
        self.write_manifest_and_publish(manifest, replace)
    }

    /// Publishes files fetched from elsewhere (a remote cache) under the
    /// manifest they were published with there, after checking that the staged
    /// files are exactly that manifest's files, sizes and blake3. An artifact
    /// already published under the key is kept and its manifest returned.
    pub fn commit_fetched(self, manifest: Manifest) -> Result<Manifest> {
        if let Some(existing) = self.published() {
            return Ok(existing);
        }
        let mismatch = |message: String| CacheError::Payload { path: self.dir.clone(), message };
        if manifest.key != self.key {
            return Err(mismatch(format!("fetched manifest is for key {}, not {}", manifest.key, self.key)));
        }
        let files = self.hash_payload()?;
        if files != manifest.files {
            let have: HashSet<&FileEntry> = files.iter().collect();
            let want: HashSet<&FileEntry> = manifest.files.iter().collect();
            let what = match (want.difference(&have).next(), have.difference(&want).next()) {
                (Some(w), _) => format!("`{}` is missing or differs from the manifest", w.path),
                (None, Some(h)) => format!("`{}` is not in the manifest", h.path),
                (None, None) => "the file list differs from the manifest".to_string(),
            };
            return Err(mismatch(format!("fetched files do not match their manifest: {what}")));
        }
        self.write_manifest_and_publish(manifest, Replace::IfAbsentOrDamaged)
    }

    /// Fsyncs and hashes every staged payload file (sorted by path), rejecting
    /// what cannot be published.
    fn hash_payload(&self) -> Result<Vec<FileEntry>> {
        let (mut entries, mut dirs) = (Vec::new(), Vec::new());
        walk(&self.dir, &mut entries, &mut dirs)?;
        let mut rels = Vec::with_capacity(entries.len());
        for (path, ft) in &entries {
            let payload_err = |message: &str| CacheError::Payload { path: path.clone(), message: message.to_string() };
            if !ft.is_file() {
                return Err(payload_err(if ft.is_symlink() {
                    "symbolic links cannot be published; write the file itself"
                } else {
                    "only regular files and directories can be published"
                }));
            }
            let rel = path.strip_prefix(&self.dir).unwrap();
            if rel.to_str().is_none() {
                return Err(payload_err("file names must be valid UTF-8"));
            }
            let rel = rel_path(&self.dir, path);
            // Either name would be read as the manifest (the old one where the new is absent).
            if rel == MANIFEST_FILE || rel == LEGACY_MANIFEST_FILE {
                return Err(payload_err(&format!("{rel} is written by the cache; ops may not write it")));
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
        Ok(files)
    }

    /// Writes `_manifest.json` last (atomically) and publishes the directory.
    fn write_manifest_and_publish(mut self, manifest: Manifest, replace: Replace) -> Result<Manifest> {
        let mpath = self.dir.join(MANIFEST_FILE);
        let mtmp = sibling(&mpath, &format!("tmp.{}", host::unique_token()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&mtmp).ctx("writing", &mtmp)?;
            f.write_all(&serde_json::to_vec_pretty(&manifest).unwrap()).ctx("writing", &mtmp)?;
            f.sync_all().ctx("syncing", &mtmp)?;
        }
        std::fs::rename(&mtmp, &mpath).ctx("writing", &mpath)?;
        sync_dir(&self.dir)?;
        Ok(self.publish(replace)?.unwrap_or(manifest))
    }

    /// Moves the staged directory into `generations/` and points the artifact's
    /// link at it (`None`), or finds that another writer published first
    /// (`Some(their manifest)`).
    fn publish(&mut self, replace: Replace) -> Result<Option<Manifest>> {
        let gen_name = format!("{}.{}", self.key, host::unique_token());
        let generations = self.root.join("generations");
        std::fs::create_dir_all(&generations).ctx("creating", &generations)?;
        let gen_dir = generations.join(&gen_name);
        std::fs::rename(&self.dir, &gen_dir).ctx("publishing artifact to", &gen_dir)?;
        self.dir = gen_dir;
        sync_dir(&generations)?;
        let link = self.link();
        let artifacts = self.root.join("artifacts");
        for _ in 0..4 {
            if replace == Replace::IfAbsentOrDamaged {
                match std::os::unix::fs::symlink(link_target(&gen_name), &link) {
                    Ok(()) => {
                        self.committed = true;
                        sync_dir(&artifacts)?;
                        return Ok(None);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e).ctx("publishing artifact to", &link),
                }
                if let Some(theirs) = self.published() {
                    return Ok(Some(theirs)); // another writer won; Drop discards ours
                }
            }
            // Replace whatever is there (a valid artifact when forced; otherwise damage).
            match current_generation(&self.root, &self.key) {
                Some(Generation::Plain) => {
                    // A plain directory cannot be replaced by a rename: move it aside
                    // first; if it turns out someone published a moment ago, put it back.
                    let grave = self.root.join("tmp").join(format!("{}.removing.{}", self.key, host::unique_token()));
                    match std::fs::rename(&link, &grave) {
                        Ok(()) => {
                            let theirs = replace == Replace::IfAbsentOrDamaged
                                && Manifest::read_in(&grave).ok().flatten().is_some_and(|m| m.key == self.key);
                            if !(theirs && std::fs::rename(&grave, &link).is_ok()) {
                                let _ = remove_tree(&grave);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).ctx("moving aside damaged artifact", &link),
                    }
                    continue;
                }
                old => {
                    // A fresh link renamed over the old one: readers see the old or the new, never neither.
                    let tmp_link = self.root.join("tmp").join(format!("{}.link.{}", self.key, host::unique_token()));
                    std::os::unix::fs::symlink(link_target(&gen_name), &tmp_link).ctx("linking artifact", &tmp_link)?;
                    if let Err(e) = std::fs::rename(&tmp_link, &link) {
                        let _ = std::fs::remove_file(&tmp_link);
                        return Err(e).ctx("publishing artifact to", &link);
                    }
                    self.committed = true;
                    sync_dir(&artifacts)?;
                    if let Some(old) = old {
                        retire(&self.root, self.timing, &self.key, &old)?;
                    }
                    return Ok(None);
                }
            }
        }
        if let Some(theirs) = self.published() {
            return Ok(Some(theirs));
        }
        Err(CacheError::Payload {
            path: link,
            message: "could not publish: the artifact directory kept changing under concurrent writers".into(),
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}
