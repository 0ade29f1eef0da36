//! Sparsity–faithfulness frontiers: L0 vs. CE loss with the coder spliced in,
//! and L0 vs. CE loss score.

use crate::axis::Axis;
use crate::error::{Result, invalid};
use crate::figures::matching::SinglePanel;
use crate::render::{
    Figure, FigureOptions, LegendEntry, LineKind, LinePanel, LineSpec, no_data_figure, render, resolve,
};
use crate::style::{self, Marker};
use saepipe_core::table::{Column, Table};

/// One evaluated coder (an SAE or a transcoder).
#[derive(Debug, Clone, PartialEq)]
pub struct CoderPoint {
    /// Series the point belongs to, e.g. `"SAE"` or `"transcoder"`.
    pub family: String,
    /// Identifier of the coder (kept in the plot data).
    pub label: String,
    /// Mean active features per token.
    pub l0: f64,
    /// LM cross-entropy loss with the coder spliced in (nats/token).
    pub ce_loss: f64,
    /// SAELens's CE loss score (NaN when not known).
    pub ce_loss_score: f64,
}

const NAME: &str = "sparsity_faithfulness";
const SCORE_NAME: &str = "ce_loss_score_frontier";

/// Figure 4: L0 vs. spliced-in CE loss, one marked series per family (sorted by L0),
/// plus the clean LM's CE loss as a dashed reference line. L0 is on a log axis when it
/// spans more than 4×.
pub fn sparsity_faithfulness(points: &[CoderPoint], clean_ce: Option<f64>, opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, NAME, "Sparsity–faithfulness frontier")?;
    check_l0(&name, points)?;
    for p in points {
        if p.ce_loss < 0.0 || p.ce_loss.is_infinite() {
            return Err(invalid(
                &name,
                "ce_loss",
                format!("coder `{}`: {} is not a valid CE loss", p.label, p.ce_loss),
            ));
        }
    }
    if let Some(c) = clean_ce
        && !(c.is_finite() && c >= 0.0)
    {
        return Err(invalid(&name, "clean_ce", format!("{c} is not a valid CE loss")));
    }
    let data = Table::default()
        .with("family", Column::Str(points.iter().map(|p| p.family.clone()).collect()))
        .with("label", Column::Str(points.iter().map(|p| p.label.clone()).collect()))
        .with("l0", Column::F64(points.iter().map(|p| p.l0).collect()))
        .with("ce_loss", Column::F64(points.iter().map(|p| p.ce_loss).collect()))
        .with("clean_ce", Column::F64(points.iter().map(|_| clean_ce.unwrap_or(f64::NAN)).collect()));
    let frontier = Frontier {
        y: points.iter().map(|p| p.ce_loss).collect(),
        y_desc: "CE loss with coder spliced in (nats/token)",
        reference: clean_ce.map(|c| ("clean LM (no coder)", c)),
        what: "a finite L0 and CE loss",
    };
    frontier_figure(name, title, points, frontier, data, opts)
}

/// L0 vs. CE loss score (SAELens's `ce_loss_score`: 1 = as good as the clean
/// LM, 0 = as bad as zero-ablating the hook), one marked series per family,
/// with a dashed line at 1. The score is comparable across LMs, so unlike
/// [`sparsity_faithfulness`] this figure may mix coders of different models.
pub fn ce_loss_score_frontier(points: &[CoderPoint], opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, SCORE_NAME, "L0 vs. CE loss score")?;
    check_l0(&name, points)?;
    if let Some(p) = points.iter().find(|p| p.ce_loss_score.is_infinite()) {
        return Err(invalid(
            &name,
            "ce_loss_score",
            format!("coder `{}`: {} is not a valid CE loss score", p.label, p.ce_loss_score),
        ));
    }
    let data = Table::default()
        .with("family", Column::Str(points.iter().map(|p| p.family.clone()).collect()))
        .with("label", Column::Str(points.iter().map(|p| p.label.clone()).collect()))
        .with("l0", Column::F64(points.iter().map(|p| p.l0).collect()))
        .with("ce_loss_score", Column::F64(points.iter().map(|p| p.ce_loss_score).collect()));
    let frontier = Frontier {
        y: points.iter().map(|p| p.ce_loss_score).collect(),
        y_desc: "CE loss score (1 = clean LM, 0 = zero ablation)",
        reference: Some(("clean LM (score 1)", 1.0)),
        what: "a finite L0 and CE loss score",
    };
    frontier_figure(name, title, points, frontier, data, opts)
}

fn check_l0(name: &str, points: &[CoderPoint]) -> Result<()> {
    match points.iter().find(|p| p.l0 < 0.0 || p.l0.is_infinite()) {
        Some(p) => Err(invalid(name, "l0", format!("coder `{}`: {} is not a valid L0", p.label, p.l0))),
        None => Ok(()),
    }
}

/// What a frontier figure plots against L0.
struct Frontier {
    /// One value per point (NaN: left out of the plot, kept in the data).
    y: Vec<f64>,
    y_desc: &'static str,
    /// A dashed horizontal reference line: its legend label and value.
    reference: Option<(&'static str, f64)>,
    /// What a coder needs to be drawn, for the no-data message.
    what: &'static str,
}

fn frontier_figure(
    name: String,
    title: String,
    points: &[CoderPoint],
    f: Frontier,
    data: Table,
    opts: &FigureOptions,
) -> Result<Figure> {
    let usable: Vec<(&CoderPoint, f64)> =
        points.iter().zip(f.y.iter().copied()).filter(|(p, y)| p.l0.is_finite() && y.is_finite()).collect();
    if usable.is_empty() {
        return no_data_figure(name, title, opts, &format!("no coder has {}", f.what), data);
    }
    // A log axis cannot show L0 = 0; such coders are in the data table only.
    let x = {
        let a = Axis::auto(usable.iter().map(|(p, _)| p.l0), 4.0);
        if usable.iter().any(|(p, _)| p.l0 <= 0.0) { Axis::linear(0.0, a.inv(a.hi), 6) } else { a }
    };
    let ys = || usable.iter().map(|(_, y)| *y).chain(f.reference.map(|r| r.1));
    let y = Axis::linear(ys().fold(f64::INFINITY, f64::min), ys().fold(f64::NEG_INFINITY, f64::max), 6);
    let mut families: Vec<&str> = Vec::new();
    for (p, _) in &usable {
        if !families.contains(&p.family.as_str()) {
            families.push(&p.family);
        }
    }
    let mut lines = Vec::new();
    let mut legend = Vec::new();
    if let Some((label, value)) = f.reference {
        let color = style::REFERENCE;
        lines.push(LineSpec {
            name: label.into(),
            color,
            marker: Marker::None,
            line: LineKind::Dashed,
            points: vec![(x.lo, value), (x.hi, value)],
        });
        legend.push(LegendEntry { label: label.into(), color, line: LineKind::Dashed, marker: Marker::None });
    }
    for (i, fam) in families.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> =
            usable.iter().filter(|(p, _)| p.family == *fam).map(|(p, y)| (x.fwd(p.l0), *y)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (color, marker) = (style::categorical(i), style::marker_cycle(i));
        let n = pts.len();
        let label = format!("{fam} ({n})");
        lines.push(LineSpec { name: label.clone(), color, marker, line: LineKind::Solid, points: pts });
        legend.push(LegendEntry { label, color, line: LineKind::Solid, marker });
    }
    let panel = LinePanel {
        caption: None,
        x_desc: format!("L0, active features per token{}", x.description_suffix()),
        x,
        y,
        y_desc: f.y_desc.into(),
        lines,
    };
    let spec = super::matching::single_panel_json(&title, &panel, "");
    Ok(render(name, title.clone(), opts, &SinglePanel { title: &title, legend, panel }, data, None)?
        .with_interactive(spec))
}
