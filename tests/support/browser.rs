//! Headless Chromium for tests of saepipe's HTML pages (Debian's Chromium,
//! installed by scripts/chromium.sh and named by $SAEPIPE_CHROMIUM): finding it,
//! running it with its own background traffic off, and reading from its NetLog
//! the requests a page made.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Chromium, or `None` with a note on stderr; under CI=true a missing Chromium fails the test.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but Chromium is missing: run scripts/chromium.sh and set SAEPIPE_CHROMIUM"
        );
        eprintln!("SKIPPED {test}: no Chromium (scripts/chromium.sh installs it; or set SAEPIPE_CHROMIUM)");
    }
    found
}

/// What a page did when loaded with `--dump-dom`: its DOM after the scripts ran,
/// its console lines and the requests it made outside the file.
pub struct PageRun {
    pub dom: String,
    pub console: Vec<String>,
    pub requests: Vec<String>,
}

/// Loads `url` (a `file://` URL, perhaps with a `#fragment`) headless, with a NetLog.
pub fn load(bin: &Path, url: &str, scratch: &Path) -> PageRun {
    std::fs::create_dir_all(scratch).unwrap();
    let netlog = scratch.join(format!("netlog-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&netlog);
    let out = browser(bin, &scratch.join("profile"))
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(url)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed on {url}: {log}");
    PageRun {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console: log.lines().filter(|l| l.contains(":CONSOLE")).map(String::from).collect(),
        requests: page_requests(&netlog),
    }
}

/// Writes a PNG screenshot of `url` at `width`×`height` to `shot`.
pub fn screenshot(bin: &Path, url: &str, shot: &Path, width: u32, height: u32, scratch: &Path) {
    let out = browser(bin, &scratch.join("profile"))
        .args([&format!("--window-size={width},{height}"), &format!("--screenshot={}", shot.display())])
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "screenshot of {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(&std::fs::read(shot).unwrap()[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", shot.display());
}

pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SAEPIPE_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser", "google-chrome"].map(|b| d.join(b)))
        .find(|p| p.is_file())
}

/// Headless Chromium with the browser's own background traffic (updates, sync,
/// accounts) turned off and every host name unresolvable.
pub fn browser(bin: &Path, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-features=Translate,OptimizationHints,MediaRouter,SpellCheck",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Requests the page itself made (its network isolation key is the file's site)
/// to anything but a local file or an inline data URL, from a Chromium NetLog.
pub fn page_requests(netlog: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(netlog).unwrap_or_default();
    // Chromium may leave the closing brackets off when it is stopped at exit.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .unwrap_or_else(|e| panic!("unreadable NetLog {}: {e}", netlog.display()));
    let mut out = Vec::new();
    for e in log["events"].as_array().into_iter().flatten() {
        let p = &e["params"];
        let (Some(url), Some(nik)) = (p["url"].as_str(), p["network_isolation_key"].as_str()) else { continue };
        if nik.contains("file://") && !(url.starts_with("file:") || url.starts_with("data:")) {
            out.push(url.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `src`, `href` and CSS `url(` values and script network calls that would leave the file.
pub fn static_external_refs(html: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for attr in ["src=\"", "href=\"", "url("] {
        for (i, _) in html.match_indices(attr) {
            let v = &html[i + attr.len()..];
            let v = &v[..v.find(['"', ')']).unwrap_or(v.len()).min(120)];
            let local = v.starts_with('#') || v.starts_with("data:") || v.starts_with("../") || !v.contains(':');
            if !local || v.starts_with("//") {
                bad.push(format!("{attr}{v}"));
            }
        }
    }
    for call in ["fetch(", "XMLHttpRequest", "WebSocket", "sendBeacon", "import(", "<link", "@import", "<script src"] {
        if html.contains(call) {
            bad.push(call.to_string());
        }
    }
    bad
}
