//! A real S3-compatible server for the tests: moto's standalone server, run
//! from the program named by `SAEPIPE_MOTO_SERVER` (scripts/test.sh installs
//! `moto[server]` from PyPI and sets it). Without it the S3 tests say so and
//! skip, except under `CI=true`, where they fail.

#![allow(dead_code)]

use saepipe_cache::{Cache, Key, ManifestDraft};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on 127.0.0.1, stopped when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts a server (with `env` added to its environment), or `None` when
    /// moto is not installed outside CI.
    pub fn start(env: &[(&str, &str)]) -> Option<Moto> {
        let Some(program) = std::env::var_os("SAEPIPE_MOTO_SERVER") else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("SAEPIPE_MOTO_SERVER is not set; scripts/test.sh installs moto[server] and sets it");
            }
            eprintln!("SKIPPED: SAEPIPE_MOTO_SERVER is not set (run the tests through scripts/test.sh)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(program);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting moto_server");
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Creates a bucket (an unsigned request, which moto accepts by default).
    pub fn create_bucket(&self, name: &str) {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "creating bucket {name}: {reply}");
    }

    /// Settings that point a remote at this server with moto's dummy credentials.
    pub fn options(&self) -> Vec<(&str, &str)> {
        vec![
            ("endpoint", self.endpoint.as_str()),
            ("region", "us-east-1"),
            ("access_key_id", "testing-key-id"),
            ("secret_access_key", "testing-secret-key"),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key from a label.
pub fn key(label: &str) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(label.as_bytes());
    Key::from_hasher(h)
}

/// Deterministic bytes (xorshift), so files do not compress or dedupe by accident.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Publishes an artifact of `key` in `cache` holding `files` (path, bytes).
pub fn publish(cache: &Cache, key: &Key, files: &[(&str, Vec<u8>)]) {
    let staging = cache.begin(key).unwrap();
    for (path, content) in files {
        let p = staging.dir().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    staging
        .commit(ManifestDraft { op: "test".into(), op_version: 1, stage: "s".into(), ..Default::default() })
        .unwrap();
}

/// The payload files of a published artifact, by path.
pub fn read_artifact(cache: &Cache, key: &Key) -> Vec<(String, Vec<u8>)> {
    let m = cache.lookup(key).unwrap().expect("artifact published");
    let dir = cache.artifact_dir(key);
    m.files.iter().map(|f| (f.path.clone(), std::fs::read(dir.join(&f.path)).unwrap())).collect()
}

/// A fresh cache in `dir`.
pub fn cache_in(dir: &Path) -> Cache {
    Cache::open(dir).unwrap()
}
