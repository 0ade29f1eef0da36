//! The plot report in a real browser (Debian's headless Chromium, installed by
//! scripts/chromium.sh and named by $SAEPIPE_CHROMIUM): the interactive layer runs
//! and passes its self-test (hover values, legend toggles, box zoom, reset), the
//! page logs nothing to the console, and it makes no request outside the file.
//! A screenshot of the whole report is written to a directory the test prints.
//!
//! Without Chromium the test is skipped with a note, unless CI=true, where it fails.

#[path = "support/browser.rs"]
mod browser;

use browser::{chromium_or_skip, load, screenshot, static_external_refs};
use std::path::PathBuf;

#[test]
fn report_runs_in_chromium_offline_without_console_errors() {
    let Some(bin) = chromium_or_skip("report_browser") else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let html = saepipe_report::synthetic::study_report().unwrap().to_html();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();
    assert_eq!(static_external_refs(&html), Vec::<String>::new(), "the report refers to something outside the file");

    // The self-test run: DOM after the script ran, console output, network log.
    let run = load(&bin, &format!("file://{}#selftest", page.display()), &dir);
    assert!(run.console.is_empty(), "the report logged to the console:\n{}", run.console.join("\n"));
    assert!(run.dom.contains("data-interactive=\"ready\""), "the inline script did not run");
    assert!(run.dom.contains("data-charts=\"6\""), "not every figure became a chart");
    assert!(run.dom.contains("data-selftest=\"ok\""), "interaction self-test failed: {:?}", {
        let i = run.dom.find("data-selftest").unwrap_or(0);
        &run.dom[i..(i + 300).min(run.dom.len())]
    });
    assert_eq!(run.requests, Vec::<String>::new(), "the page made network requests");

    // A screenshot of the whole interactive report, to look at.
    screenshot(&bin, &format!("file://{}", page.display()), &dir.join("report.png"), 1400, 4000, &dir);
    eprintln!("report and screenshots: {}", dir.display());
}
