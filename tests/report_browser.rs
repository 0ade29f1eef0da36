//! The plot report in a real browser (Debian's headless Chromium, installed by
//! scripts/chromium.sh and named by $SAEPIPE_CHROMIUM): the interactive layer runs
//! and passes its self-test (hover values, legend toggles, box zoom, reset), the
//! page logs nothing to the console, and it makes no request outside the file.
//! A screenshot of the whole report is written to a directory the test prints.
//!
//! Without Chromium the test is skipped with a note, unless CI=true, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
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
fn browser(bin: &Path, profile: &Path) -> Command {
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
fn page_requests(netlog: &Path) -> Vec<String> {
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
fn static_external_refs(html: &str) -> Vec<String> {
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

#[test]
fn report_runs_in_chromium_offline_without_console_errors() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but Chromium is missing: run scripts/chromium.sh and set SAEPIPE_CHROMIUM"
        );
        eprintln!("SKIPPED report_browser: no Chromium (scripts/chromium.sh installs it; or set SAEPIPE_CHROMIUM)");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let html = saepipe_report::synthetic::study_report().unwrap().to_html();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();
    assert_eq!(static_external_refs(&html), Vec::<String>::new(), "the report refers to something outside the file");

    // The self-test run: DOM after the script ran, console output, network log.
    let netlog = dir.join("netlog.json");
    let out = browser(&bin, &dir.join("profile"))
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("file://{}#selftest", page.display()))
        .output()
        .unwrap();
    let (dom, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the report logged to the console:\n{}", console.join("\n"));
    assert!(dom.contains("data-interactive=\"ready\""), "the inline script did not run:\n{log}");
    assert!(dom.contains("data-charts=\"6\""), "not every figure became a chart");
    assert!(dom.contains("data-selftest=\"ok\""), "interaction self-test failed: {:?}", {
        let i = dom.find("data-selftest").unwrap_or(0);
        &dom[i..(i + 300).min(dom.len())]
    });
    assert_eq!(page_requests(&netlog), Vec::<String>::new(), "the page made network requests");

    // A screenshot of the whole interactive report, to look at.
    let shot = dir.join("report.png");
    let out = browser(&bin, &dir.join("profile"))
        .args(["--window-size=1400,4000", &format!("--screenshot={}", shot.display())])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(&std::fs::read(&shot).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    eprintln!("report and screenshots: {}", dir.display());
}
