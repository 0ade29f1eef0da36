//! Renders every figure from synthetic data and writes `<name>.svg`, `<name>.png` and
//! `report.html` into the directory given on the command line.
//!
//! cargo run -p saepipe-report --example demo_report -- /tmp/saepipe-demo

use std::path::{Path, PathBuf};

use saepipe_report::{
    Cell, DEFAULT_DISTANCE_THRESHOLDS, Figure, FigureOptions, Report, feature_density, matched_fraction_vs_step,
    matched_fractions, sae_losses_per_checkpoint, similarity_heatmap, sparsity_faithfulness, synthetic,
    training_curves,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    // Write-then-rename so a reader never sees a half-written file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os().nth(1).ok_or("usage: demo_report <output-dir>")?.into();
    std::fs::create_dir_all(&dir)?;
    let opts = FigureOptions::default();
    let t0 = std::time::Instant::now();

    let sims = synthetic::checkpoint_similarities(4096, 1);
    let fractions: Vec<_> =
        sims.iter().flat_map(|c| matched_fractions(c.step, &c.similarities, &DEFAULT_DISTANCE_THRESHOLDS)).collect();
    let losses = synthetic::checkpoint_losses(2);
    let (coders, clean_ce) = synthetic::coder_sweep();
    let densities = synthetic::feature_densities(8192, 3);
    let runs = synthetic::training_runs(20_000, 20, 4);

    let figures: Vec<Figure> = vec![
        matched_fraction_vs_step(&fractions, &opts)?,
        similarity_heatmap(&sims, 20, &opts)?,
        sae_losses_per_checkpoint(&losses, &opts)?,
        sparsity_faithfulness(&coders, Some(clean_ce), &opts)?,
        feature_density(&densities, &opts)?,
        training_curves(&runs, &opts)?,
        // What an empty input looks like.
        matched_fraction_vs_step(&[], &opts.clone().with_name("matched_fraction_empty"))?,
    ];
    let render_s = t0.elapsed().as_secs_f64();

    let mut report = Report::new("saepipe demo report");
    report.add_section(
        "About",
        "Synthetic data shaped like a checkpoint-matching study (Pythia-style steps, 4096-feature SAEs) \
         and the Pythia-410m layer-15 sparsity sweep.\n\nDistance = 1 − cosine similarity of matched features.",
    );
    for f in &figures {
        write(&dir, &format!("{}.svg", f.name), f.svg.as_bytes())?;
        write(&dir, &format!("{}.png", f.name), &f.png)?;
        report.add_figure(f);
    }
    let rows = coders
        .iter()
        .map(|c| vec![Cell::from(c.family.as_str()), c.label.clone().into(), c.l0.into(), c.ce_loss.into()])
        .collect();
    report.add_table("Sparsity sweep", &["family", "coder", "L0", "CE loss (nats/token)"], rows)?;
    let html = report.to_html();
    write(&dir, "report.html", html.as_bytes())?;
    println!(
        "rendered {} figures in {:.2} s; report.html {} KiB; written to {}",
        figures.len(),
        render_s,
        html.len() / 1024,
        dir.display()
    );
    Ok(())
}
