//! Hugging Face hub models: resolving `org/name@revision` through the HF cache
//! layout (`<cache>/models--org--name/{refs/<rev>, snapshots/<sha>/, blobs/}`)
//! and downloading into that same layout, so that models fetched by Python tools
//! are reused here and the other way round.
//!
//! Downloads follow `huggingface_hub`'s protocol: the revision is resolved to a
//! commit with `GET /api/models/{repo}/revision/{rev}` (which also lists the
//! files), every file comes from `GET /{repo}/resolve/{sha}/{file}` (following a
//! redirect to the LFS storage for large files), and is stored once as
//! `blobs/<etag>` with `snapshots/<sha>/<file>` a relative symlink to it.
//! Blobs are written to a temporary file and renamed, config.json is linked
//! after all weights and `refs/<rev>` last, so an interrupted download never
//! looks complete to either reader. [`HubCache::download_files`] fetches a chosen
//! list of a repository's files the same way (e.g. one sparse coder's folder).

use crate::error::{ModelError, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What kind of hub repository a reference names: they live in separate
/// namespaces, on the hub (`/api/models/…`, `/api/datasets/…`) and in the
/// cache (`models--org--name`, `datasets--org--name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RepoKind {
    /// A model repository.
    #[default]
    Model,
    /// A dataset repository.
    Dataset,
}

impl RepoKind {
    /// The plural the hub's URLs and the cache's folder names use.
    fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// A model (or dataset) reference: `org/name` at a revision (branch, tag or commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// The repository, `org/name`.
    pub repo: String,
    /// A branch, tag or 40-hex-digit commit; `main` when the spec names none.
    pub revision: String,
    /// A model or a dataset repository.
    pub kind: RepoKind,
}

impl HubRef {
    /// Parses `org/name` or `org/name@revision` (default revision `main`).
    pub fn parse(spec: &str) -> Result<HubRef> {
        let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| plain_name(p)) {
            return Err(ModelError::Input(format!(
                "`{spec}` is not a model reference of the form org/name[@revision]"
            )));
        }
        if revision.is_empty()
            || revision.starts_with('/')
            || revision.ends_with('/')
            || !revision.split('/').all(plain_name)
        {
            return Err(ModelError::Input(format!("`{spec}`: invalid revision `{revision}`")));
        }
        Ok(HubRef { repo: repo.to_string(), revision: revision.to_string(), kind: RepoKind::Model })
    }

    /// The same repository and revision, as a dataset repository.
    pub fn dataset(self) -> HubRef {
        HubRef { kind: RepoKind::Dataset, ..self }
    }

    fn is_commit(&self) -> bool {
        is_sha(&self.revision)
    }
}

/// One path component that cannot climb out of a directory.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Picks the files to fetch from a commit's file list (see [`HubCache::download_files`]).
pub type FileSelector<'a> = dyn FnMut(&[String]) -> std::result::Result<Vec<String>, String> + 'a;

/// The local HF cache: its root directory and whether downloads are disallowed.
#[derive(Clone, Debug)]
pub struct HubCache {
    /// The cache directory holding the `models--org--name` folders.
    pub root: PathBuf,
    /// Never download (HF_HUB_OFFLINE): a model not in the cache is an error.
    pub offline: bool,
}

impl HubCache {
    /// HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
    /// else ~/.cache/huggingface/hub; offline when HF_HUB_OFFLINE is truthy.
    pub fn from_env() -> HubCache {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = var("HF_HUB_CACHE")
            .or_else(|| hf_home().map(|h| h.join("hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        HubCache { root, offline }
    }

    /// `models--org--name` (`datasets--org--name`) under the cache root.
    pub fn repo_dir(&self, r: &HubRef) -> PathBuf {
        self.root.join(format!("{}--{}", r.kind.plural(), r.repo.replace('/', "--")))
    }

    /// The snapshot directory holding `r`'s files, if the cache has it.
    pub fn lookup(&self, r: &HubRef) -> Result<Option<PathBuf>> {
        Ok(self.snapshot_dir(r)?.filter(|snap| snap.join("config.json").is_file()))
    }

    /// The snapshot directory holding `r`'s files; an error saying how to fetch
    /// it when the cache does not have it. Never touches the network.
    pub fn resolve(&self, r: &HubRef) -> Result<PathBuf> {
        self.lookup(r)?.ok_or_else(|| self.missing(r))
    }

    fn missing(&self, r: &HubRef) -> ModelError {
        let how = format!("fetch it with `huggingface-cli download {} --revision {}`", r.repo, r.revision);
        let why = if self.offline {
            "HF_HUB_OFFLINE is set and it is not in the local cache"
        } else {
            "it is not in the local cache"
        };
        ModelError::Input(format!("model {}@{}: {why} at {}; {how}", r.repo, r.revision, self.repo_dir(r).display()))
    }

    /// The cached snapshot of `r`, downloaded from `hub` first when it is
    /// missing and the cache is not offline. `log` receives one line per file.
    pub fn resolve_or_download(&self, r: &HubRef, hub: &HubEndpoint, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        match self.lookup(r)? {
            Some(dir) => Ok(dir),
            None if self.offline => Err(self.missing(r)),
            None => self.download(r, hub, log),
        }
    }

    /// Downloads `r` (config, weights, tokenizer files) into the cache and
    /// returns its snapshot directory. Blobs already present are not fetched again.
    pub fn download(&self, r: &HubRef, hub: &HubEndpoint, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        if self.offline {
            return Err(self.missing(r));
        }
        let fail = |message: String| ModelError::Hub { repo: r.repo.clone(), revision: r.revision.clone(), message };
        let client = Client::new(hub);
        let info = client.revision_info(r).map_err(fail)?;
        let repo_dir = self.repo_dir(r);
        let snap = repo_dir.join("snapshots").join(&info.sha);
        let blobs = repo_dir.join("blobs");
        let has = |f: &str| info.files.iter().any(|x| x == f);
        if !has("config.json") {
            return Err(fail(format!("commit {} has no config.json", info.sha)));
        }
        let mut get = |file: &str| -> Result<PathBuf> {
            let dst = snap.join(file);
            if !dst.is_file() {
                client.fetch(r, &info.sha, file, &blobs, &dst, log).map_err(|e| match e {
                    FetchError::Io(path, source) => ModelError::Io { path, source },
                    FetchError::Other(m) => fail(m),
                })?;
            }
            Ok(dst)
        };
        let index =
            ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"]
                .into_iter()
                .find(|f| has(f))
                .ok_or_else(|| {
                    fail(format!(
                        "commit {} has no model.safetensors or pytorch_model.bin (files: {})",
                        info.sha,
                        info.files.join(", ")
                    ))
                })?;
        let path = get(index)?;
        if index.ends_with(".index.json") {
            for shard in index_shards(&path)? {
                get(&shard)?;
            }
        }
        for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
            if has(f) {
                get(f)?;
            }
        }
        // Last: its presence is what marks a snapshot as usable.
        get("config.json")?;
        if !r.is_commit() {
            let ref_path = repo_dir.join("refs").join(&r.revision);
            write_atomic(&ref_path, info.sha.as_bytes()).map_err(|source| ModelError::Io { path: ref_path, source })?;
        }
        Ok(snap)
    }

    /// The snapshot directory `r`'s revision points at in the cache (a commit,
    /// or the commit `refs/<rev>` names), without checking which files it holds;
    /// `None` when the cache has no ref for the revision. Never touches the network.
    pub fn snapshot_dir(&self, r: &HubRef) -> Result<Option<PathBuf>> {
        let repo_dir = self.repo_dir(r);
        let sha =
            if r.is_commit() { Some(r.revision.clone()) } else { read_ref(&repo_dir.join("refs").join(&r.revision))? };
        Ok(sha.map(|sha| repo_dir.join("snapshots").join(sha)))
    }

    /// Downloads chosen files of `r` (not a whole model) into the cache layout and
    /// returns the snapshot directory they are linked in.
    ///
    /// The revision is resolved to a commit and its file list handed to `select`,
    /// which returns the repository paths to fetch, in order (put the file whose
    /// presence marks the set as complete last), or a message saying why nothing
    /// fits. Files already in the snapshot are not fetched again; `refs/<rev>` is
    /// written after the last file. Refused when the cache is offline.
    pub fn download_files(
        &self,
        r: &HubRef,
        hub: &HubEndpoint,
        select: &mut FileSelector,
        log: &mut dyn FnMut(&str),
    ) -> Result<PathBuf> {
        if self.offline {
            return Err(ModelError::Hub {
                repo: r.repo.clone(),
                revision: r.revision.clone(),
                message: format!(
                    "HF_HUB_OFFLINE is set and the files are not in the local cache at {}",
                    self.repo_dir(r).display()
                ),
            });
        }
        let fail = |message: String| ModelError::Hub { repo: r.repo.clone(), revision: r.revision.clone(), message };
        let client = Client::new(hub);
        let info = client.revision_info(r).map_err(fail)?;
        let files = select(&info.files).map_err(|m| fail(format!("commit {}: {m}", info.sha)))?;
        if files.is_empty() {
            return Err(fail(format!("commit {}: no files selected", info.sha)));
        }
        for f in &files {
            if !repo_path(f) {
                return Err(fail(format!("`{f}` is not a plain path inside the repository")));
            }
            if !info.files.iter().any(|x| x == f) {
                return Err(fail(format!("commit {} has no file `{f}`", info.sha)));
            }
        }
        let repo_dir = self.repo_dir(r);
        let snap = repo_dir.join("snapshots").join(&info.sha);
        let blobs = repo_dir.join("blobs");
        for f in &files {
            let dst = snap.join(f);
            if !dst.is_file() {
                client.fetch(r, &info.sha, f, &blobs, &dst, log).map_err(|e| match e {
                    FetchError::Io(path, source) => ModelError::Io { path, source },
                    FetchError::Other(m) => fail(m),
                })?;
            }
        }
        if !r.is_commit() {
            let ref_path = repo_dir.join("refs").join(&r.revision);
            write_atomic(&ref_path, info.sha.as_bytes()).map_err(|source| ModelError::Io { path: ref_path, source })?;
        }
        Ok(snap)
    }
}

/// A `/`-separated path inside a repository that cannot climb out of the
/// snapshot: no empty, `.` or `..` components, no backslashes or control characters.
pub fn repo_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.chars().any(|ch| ch == '\\' || ch.is_control()))
}

fn hf_home() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HOME")
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface")))
}

fn read_ref(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let sha = s.trim().to_string();
            if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ModelError::Input(format!("{}: not a commit hash", path.display())));
            }
            Ok(Some(sha))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModelError::Io { path: path.into(), source }),
    }
}

/// Shard names listed by a `*.index.json`, checked to be plain file names.
fn index_shards(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config { path: path.into(), message: format!("invalid JSON: {e}") })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config { path: path.into(), message: "missing `weight_map`".into() })?;
    let mut files: Vec<String> = map.values().filter_map(|s| s.as_str().map(str::to_string)).collect();
    files.sort();
    files.dedup();
    if let Some(bad) = files.iter().find(|f| !plain_name(f)) {
        return Err(ModelError::Config {
            path: path.into(),
            message: format!("shard name `{bad}` must be a plain file name"),
        });
    }
    Ok(files)
}

/// The mode of files written into the hub cache: what a plain file would get
/// (0666 less the umask), not a temporary file's private 0600, so a hub cache
/// shared by a group (`umask 002`, setgid directories) stays readable by all
/// its users.
fn shared_file_mode() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o666)
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp").permissions(shared_file_mode()).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Where the hub is and how to authenticate to it.
#[derive(Clone)]
pub struct HubEndpoint {
    /// Base URL without a trailing slash, e.g. `https://huggingface.co`.
    pub url: String,
    /// Access token, sent as `Authorization: Bearer` to the hub itself (never
    /// to the storage hosts downloads redirect to); `None` for public models.
    pub token: Option<String>,
}

impl std::fmt::Debug for HubEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubEndpoint")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl HubEndpoint {
    /// HF_ENDPOINT (default `https://huggingface.co`); the token from HF_TOKEN,
    /// else the file HF_TOKEN_PATH or $HF_HOME/token that `huggingface-cli login` writes.
    pub fn from_env() -> HubEndpoint {
        let var = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let token = var("HF_TOKEN").or_else(|| {
            let path = var("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| hf_home().map(|h| h.join("token")))?;
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        HubEndpoint::new(&var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()), token)
    }

    /// The hub at `url` (a trailing slash is dropped), with an optional token.
    pub fn new(url: &str, token: Option<String>) -> HubEndpoint {
        HubEndpoint { url: url.trim_end_matches('/').to_string(), token }
    }
}

struct RevisionInfo {
    sha: String,
    files: Vec<String>,
}

enum FetchError {
    Io(PathBuf, std::io::Error),
    Other(String),
}

impl From<String> for FetchError {
    fn from(m: String) -> Self {
        FetchError::Other(m)
    }
}

struct Client<'h> {
    hub: &'h HubEndpoint,
    agent: ureq::Agent,
}

/// Percent-encodes a URL path segment (revisions like `refs/pr/1` included).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let rest = url.find("://").map_or(0, |i| i + 3);
    url[rest..].find('/').map_or(url, |i| &url[..rest + i])
}

fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// What the hub says about a refused request (its X-Error-* headers or JSON body).
fn refusal(what: &str, mut resp: ureq::http::Response<ureq::Body>) -> String {
    let status = resp.status().as_u16();
    let code = header(&resp, "x-error-code").map(str::to_string);
    let mut msg = header(&resp, "x-error-message").map(str::to_string);
    if msg.is_none() {
        let body = resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        msg =
            serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_string));
    }
    let detail = [code, msg].into_iter().flatten().collect::<Vec<_>>().join(": ");
    let hint = match status {
        401 | 403 => "; if the repository is private or gated, set HF_TOKEN to a token with access",
        404 => "; check the repository name and revision",
        _ => "",
    };
    format!("{what}: HTTP {status}{}{hint}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })
}

impl<'h> Client<'h> {
    fn new(hub: &'h HubEndpoint) -> Self {
        let host = origin(&hub.url).split("://").nth(1).unwrap_or("");
        let loopback =
            ["localhost", "127.0.0.1", "[::1]"].iter().any(|h| host == *h || host.starts_with(&format!("{h}:")));
        let mut config = ureq::Agent::config_builder();
        if loopback {
            // A proxy from the environment cannot reach a hub on this machine.
            config = config.proxy(None);
        }
        let agent = config
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("saepipe/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client { hub, agent }
    }

    /// GET with the token attached only for the hub itself (not the storage
    /// host that LFS downloads redirect to, whose URLs are pre-signed).
    fn get(&self, url: &str) -> std::result::Result<ureq::http::Response<ureq::Body>, String> {
        let mut req = self.agent.get(url);
        if let Some(t) = self.hub.token.as_ref().filter(|_| origin(url) == origin(&self.hub.url)) {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        req.call().map_err(|e| format!("GET {url}: {e}"))
    }

    fn revision_info(&self, r: &HubRef) -> std::result::Result<RevisionInfo, String> {
        let url = format!("{}/api/{}/{}/revision/{}", self.hub.url, r.kind.plural(), r.repo, encode(&r.revision));
        let mut resp = self.get(&url)?;
        if resp.status() != 200 {
            return Err(refusal(&format!("GET {url}"), resp));
        }
        let body =
            resp.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| format!("GET {url}: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("GET {url}: invalid JSON: {e}"))?;
        let sha = v["sha"]
            .as_str()
            .filter(|s| is_sha(s))
            .ok_or_else(|| format!("GET {url}: the answer has no commit `sha`"))?;
        let files = v["siblings"]
            .as_array()
            .map(|s| s.iter().filter_map(|f| f["rfilename"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok(RevisionInfo { sha: sha.to_ascii_lowercase(), files })
    }

    /// Downloads one file of commit `sha` into `blobs/` and links it at `dst`.
    fn fetch(
        &self,
        r: &HubRef,
        sha: &str,
        file: &str,
        blobs: &Path,
        dst: &Path,
        log: &mut dyn FnMut(&str),
    ) -> std::result::Result<(), FetchError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| FetchError::Io(p, e)
        };
        // Model files resolve at `/<repo>/…`, dataset files at `/datasets/<repo>/…`.
        let namespace = match r.kind {
            RepoKind::Model => String::new(),
            RepoKind::Dataset => "datasets/".into(),
        };
        let mut url = format!(
            "{}/{namespace}{}/resolve/{sha}/{}",
            self.hub.url,
            r.repo,
            file.split('/').map(encode).collect::<Vec<_>>().join("/")
        );
        let mut etag: Option<String> = None;
        let mut size: Option<u64> = None;
        for _hop in 0..6 {
            let resp = self.get(&url)?;
            let status = resp.status().as_u16();
            // The hub's own answer carries the blob identity: X-Linked-* for
            // LFS files (whose body comes from a redirect), ETag otherwise.
            if etag.is_none() {
                etag = header(&resp, "x-linked-etag")
                    .or_else(|| header(&resp, "etag"))
                    .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string());
                size = header(&resp, "x-linked-size").and_then(|s| s.parse().ok());
                if let Some(commit) = header(&resp, "x-repo-commit").filter(|c| !c.eq_ignore_ascii_case(sha)) {
                    return Err(format!("{file}: the hub served commit {commit}, expected {sha}").into());
                }
            }
            if (300..400).contains(&status) {
                let loc = header(&resp, "location").ok_or_else(|| format!("GET {url}: redirect without Location"))?;
                url = if loc.contains("://") {
                    loc.to_string()
                } else if loc.starts_with('/') {
                    format!("{}{loc}", origin(&url))
                } else {
                    return Err(format!("GET {url}: unsupported redirect to `{loc}`").into());
                };
                continue;
            }
            if status != 200 {
                return Err(refusal(&format!("GET {url}"), resp).into());
            }
            let etag = etag
                .filter(|e| plain_name(e))
                .ok_or_else(|| format!("GET {url}: no usable ETag, so the file cannot be stored in the HF cache"))?;
            let size = size.or_else(|| header(&resp, "content-length").and_then(|s| s.parse().ok()));
            let blob = blobs.join(&etag);
            if !blob.is_file() {
                log(&format!(
                    "downloading {}@{} {file}{}",
                    r.repo,
                    &sha[..8.min(sha.len())],
                    size.map_or(String::new(), |s| format!(" ({:.1} MB)", s as f64 / 1e6))
                ));
                std::fs::create_dir_all(blobs).map_err(io(blobs))?;
                let mut tmp = tempfile::Builder::new()
                    .permissions(shared_file_mode())
                    .prefix(&format!("{etag}."))
                    .suffix(".incomplete")
                    .tempfile_in(blobs)
                    .map_err(io(blobs))?;
                let mut reader = resp.into_body().into_reader();
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    let n = reader.read(&mut buf).map_err(|e| {
                        format!(
                            "GET {url}: download interrupted after {total} of {} bytes: {e}",
                            size.map_or("?".into(), |s| s.to_string())
                        )
                    })?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    tmp.write_all(&buf[..n]).map_err(io(tmp.path()))?;
                    total += n as u64;
                }
                if let Some(s) = size.filter(|&s| s != total) {
                    return Err(format!("GET {url}: got {total} bytes, expected {s}").into());
                }
                // LFS etags are the content's SHA-256: check it.
                if etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit()) {
                    let got = format!("{:x}", hasher.finalize());
                    if !got.eq_ignore_ascii_case(&etag) {
                        return Err(format!("GET {url}: content SHA-256 {got} does not match {etag}").into());
                    }
                }
                tmp.as_file().sync_all().map_err(io(tmp.path()))?;
                tmp.persist(&blob).map_err(|e| FetchError::Io(blob.clone(), e.error))?;
            }
            return link(&blob, dst).map_err(io(dst));
        }
        Err(format!("GET {url}: too many redirects").into())
    }
}

/// Makes `dst` point at `blob`: a relative symlink as huggingface_hub makes
/// (a copy where symlinks are unavailable), replaced atomically.
fn link(blob: &Path, dst: &Path) -> std::io::Result<()> {
    let dir = dst.parent().expect("snapshot files have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp =
        dir.join(format!(".{}.{}.tmp", dst.file_name().and_then(|n| n.to_str()).unwrap_or("link"), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    {
        // dst is <repo>/snapshots/<sha>/<file…>; blob is <repo>/blobs/<etag>.
        let repo = blob.parent().and_then(Path::parent).expect("blob under <repo>/blobs");
        let depth = dst.strip_prefix(repo).map(|p| p.components().count() - 1).unwrap_or(2);
        let target = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(blob.file_name().expect("blob name"));
        std::os::unix::fs::symlink(target, &tmp)?;
    }
    #[cfg(not(unix))]
    std::fs::copy(blob, &tmp).map(|_| ())?;
    std::fs::rename(&tmp, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(
            HubRef::parse("EleutherAI/pythia-70m-deduped@step3000").unwrap(),
            HubRef { repo: "EleutherAI/pythia-70m-deduped".into(), revision: "step3000".into(), kind: RepoKind::Model }
        );
        assert_eq!(HubRef::parse("openai-community/gpt2").unwrap().revision, "main");
        assert_eq!(HubRef::parse("org/m@refs/pr/1").unwrap().revision, "refs/pr/1");
        for bad in ["gpt2", "a/b/c", "../x/y", "a/b@", "a/b@../../etc", "a/b@/x", "a/b@x/../../y"] {
            assert!(HubRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repository_paths() {
        for ok in ["cfg.json", "blocks.8.hook_resid_pre/cfg.json", "a b/c+d=1.pt"] {
            assert!(repo_path(ok), "{ok}");
        }
        for bad in ["", "/x", "x/", "a//b", "../x", "a/./b", "a\\b", "a\nb"] {
            assert!(!repo_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn url_helpers() {
        assert_eq!(encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert_eq!(origin("https://huggingface.co"), "https://huggingface.co");
        assert_eq!(HubEndpoint::new("http://h:1/", None).url, "http://h:1");
    }

    #[test]
    fn resolves_refs_and_commits_in_the_cache_layout() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("models--EleutherAI--pythia-70m");
        let sha = "a".repeat(40);
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(&sha)).unwrap();
        std::fs::write(repo.join("refs/step1000"), format!("{sha}\n")).unwrap();
        std::fs::write(repo.join("snapshots").join(&sha).join("config.json"), "{}").unwrap();
        let cache = HubCache { root: t.path().into(), offline: true };
        let want = repo.join("snapshots").join(&sha);
        assert_eq!(cache.resolve(&HubRef::parse("EleutherAI/pythia-70m@step1000").unwrap()).unwrap(), want);
        assert_eq!(cache.resolve(&HubRef::parse(&format!("EleutherAI/pythia-70m@{sha}")).unwrap()).unwrap(), want);
        let e = cache.resolve(&HubRef::parse("EleutherAI/pythia-70m@step2000").unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("EleutherAI/pythia-70m@step2000: HF_HUB_OFFLINE is set")
                && e.contains("huggingface-cli download EleutherAI/pythia-70m --revision step2000"),
            "{e}"
        );
    }

    #[test]
    fn hub_cache_files_get_the_umask_mode_not_a_private_one() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("refs").join("main");
        write_atomic(&path, b"abc").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // Whatever the umask, group and others get read access unless it removes it.
        let umask = {
            let probe = t.path().join("probe");
            std::fs::write(&probe, b"").unwrap();
            !std::fs::metadata(&probe).unwrap().permissions().mode() & 0o666
        };
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o} with umask {umask:o}");
    }
}
