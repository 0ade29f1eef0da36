//! A local imitation of the Hugging Face endpoints for tests: the revision API
//! (`/api/models/<repo>/revision/<rev>`), `/<repo>/resolve/<rev>/<file>` with
//! its headers, and a separate LFS storage host that large files redirect to.
//! A [`Repo`] named `datasets/<org>/<name>` is a dataset repository, served at
//! `/api/datasets/<org>/<name>/…` and `/datasets/<org>/<name>/resolve/…`.
//!
//! Shared by `crates/model/tests/hub_download.rs` and the root package's
//! `tests/coder_ref.rs`, which include it with `#[path = "…"] mod fake_hub;`.
//! Not every test uses every part.
#![allow(dead_code)]

use saepipe_model::hub::HubEndpoint;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Fault {
    None,
    /// The storage host announces the full length and closes halfway.
    Truncate,
    /// The storage host serves different bytes than the announced SHA-256.
    Corrupt,
}

/// One request as a server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// "hub" or "lfs".
    pub host: &'static str,
    pub path: String,
    /// The Authorization header, if any.
    pub auth: Option<String>,
}

type Log = Arc<Mutex<Vec<Request>>>;

/// What a fake hub serves: `files` as commit `sha` of the repository `repo`,
/// reachable as revisions `main` and `sha`.
#[derive(Clone)]
pub struct Repo {
    pub repo: &'static str,
    pub sha: &'static str,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Name endings of the files stored in LFS (served by redirect to the storage host).
    pub lfs: &'static [&'static str],
    pub fault: Fault,
}

impl Repo {
    fn is_lfs(&self, name: &str) -> bool {
        self.lfs.iter().any(|ext| name.ends_with(ext))
    }
}

pub struct FakeHub {
    pub url: String,
    log: Log,
}

pub fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

impl FakeHub {
    /// Starts the hub and its storage host on local ports, each in a thread of its own.
    pub fn start(repo: Repo) -> FakeHub {
        let log: Log = Arc::default();
        let repo = Arc::new(repo);
        let lfs = TcpListener::bind("127.0.0.1:0").unwrap();
        let lfs_url = format!("http://{}", lfs.local_addr().unwrap());
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        let (r, l) = (repo.clone(), log.clone());
        std::thread::spawn(move || serve(lfs, "lfs", l, move |path, s| lfs_answer(&r, path, s)));
        let (r, l) = (repo, log.clone());
        std::thread::spawn(move || serve(hub, "hub", l, move |path, s| hub_answer(&r, path, &lfs_url, s)));
        FakeHub { url, log }
    }
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
    pub fn endpoint(&self, token: Option<&str>) -> HubEndpoint {
        HubEndpoint::new(&self.url, token.map(String::from))
    }
}

fn serve(l: TcpListener, host: &'static str, log: Log, answer: impl Fn(&str, &mut TcpStream)) {
    for stream in l.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            continue;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut auth = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            match h.split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case("authorization") => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
        log.lock().unwrap().push(Request { host, path: path.clone(), auth });
        answer(&path, &mut s);
    }
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    let _ = s.write_all(format!("{head}\r\n").as_bytes());
    let _ = s.write_all(body);
}

fn hub_answer(repo: &Repo, path: &str, lfs_url: &str, s: &mut TcpStream) {
    let (kind, id) = match repo.repo.strip_prefix("datasets/") {
        Some(id) => ("datasets", id),
        None => ("models", repo.repo),
    };
    let sha = repo.sha;
    let error = |s: &mut TcpStream, status: &str, code: &str| {
        respond(s, status, &[("X-Error-Code", code.into()), ("X-Error-Message", format!("{code} for {path}"))], b"{}")
    };
    if let Some(rest) = path.strip_prefix(&format!("/api/{kind}/")) {
        let Some((asked, rev)) = rest.split_once("/revision/") else {
            return error(s, "404 Not Found", "EntryNotFound");
        };
        if asked != id {
            // The hub answers 401 for repositories it will not reveal.
            return error(s, "401 Unauthorized", "RepoNotFound");
        }
        if rev != "main" && rev != sha {
            return error(s, "404 Not Found", "RevisionNotFound");
        }
        let siblings: Vec<_> = repo.files.keys().map(|f| serde_json::json!({ "rfilename": f })).collect();
        let body = serde_json::json!({ "id": id, "sha": sha, "siblings": siblings }).to_string();
        return respond(
            s,
            "200 OK",
            &[("Content-Type", "application/json".into()), ("X-Repo-Commit", sha.into())],
            body.as_bytes(),
        );
    }
    let namespace = if kind == "datasets" { "/datasets" } else { "" };
    let Some(rest) = path.strip_prefix(&format!("{namespace}/{id}/resolve/")) else {
        return error(s, "401 Unauthorized", "RepoNotFound");
    };
    let Some((rev, file)) = rest.split_once('/') else { return error(s, "404 Not Found", "EntryNotFound") };
    assert_eq!(rev, sha, "files are fetched at the resolved commit");
    let Some(data) = repo.files.get(file) else { return error(s, "404 Not Found", "EntryNotFound") };
    if repo.is_lfs(file) {
        let h = sha256(data);
        let headers = [
            ("X-Repo-Commit", sha.to_string()),
            ("X-Linked-Etag", format!("\"{h}\"")),
            ("X-Linked-Size", data.len().to_string()),
            // The blob is named by X-Linked-Etag, not by this.
            ("ETag", "\"not-the-blob-id\"".into()),
            ("Location", format!("{lfs_url}/repos/ab/cd/{h}?signature=x")),
        ];
        respond(s, "302 Found", &headers, b"");
    } else {
        // A weak ETag, as the hub sends for git-stored files.
        respond(
            s,
            "200 OK",
            &[("X-Repo-Commit", sha.into()), ("ETag", format!("W/\"{}\"", &sha256(data)[..40]))],
            data,
        );
    }
}

fn lfs_answer(repo: &Repo, path: &str, s: &mut TcpStream) {
    let h = path.rsplit('/').next().unwrap().split('?').next().unwrap();
    let data = repo.files.values().find(|d| sha256(d) == h).expect("known blob").clone();
    match repo.fault {
        Fault::None => respond(s, "200 OK", &[("ETag", format!("\"{h}\""))], &data),
        Fault::Corrupt => respond(s, "200 OK", &[], &vec![0u8; data.len()]),
        Fault::Truncate => {
            let _ = s.write_all(
                format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes(),
            );
            let _ = s.write_all(&data[..data.len() / 2]);
        }
    }
}
