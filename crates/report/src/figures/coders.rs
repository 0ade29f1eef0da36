//! Sparsity–faithfulness frontier: L0 vs. CE loss with the coder spliced in.

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
}

const NAME: &str = "sparsity_faithfulness";

/// Figure 4: L0 vs. spliced-in CE loss, one marked series per family (sorted by L0),
/// plus the clean LM's CE loss as a dashed reference line. L0 is on a log axis when it
/// spans more than 4×.
pub fn sparsity_faithfulness(points: &[CoderPoint], clean_ce: Option<f64>, opts: &FigureOptions) -> Result<Figure> {
    let (name, title) = resolve(opts, NAME, "Sparsity–faithfulness frontier")?;
    for p in points {
        if p.l0 < 0.0 || p.l0.is_infinite() {
            return Err(invalid(&name, "l0", format!("coder `{}`: {} is not a valid L0", p.label, p.l0)));
        }
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
    let usable: Vec<&CoderPoint> = points.iter().filter(|p| p.l0.is_finite() && p.ce_loss.is_finite()).collect();
    if usable.is_empty() {
        return no_data_figure(name, title, opts, "no coder has a finite L0 and CE loss", data);
    }
    // A log axis cannot show L0 = 0; such coders are in the data table only.
    let x = {
        let a = Axis::auto(usable.iter().map(|p| p.l0), 4.0);
        if usable.iter().any(|p| p.l0 <= 0.0) { Axis::linear(0.0, a.inv(a.hi), 6) } else { a }
    };
    let y = Axis::linear(
        usable.iter().map(|p| p.ce_loss).chain(clean_ce).fold(f64::INFINITY, f64::min),
        usable.iter().map(|p| p.ce_loss).chain(clean_ce).fold(f64::NEG_INFINITY, f64::max),
        6,
    );
    let mut families: Vec<&str> = Vec::new();
    for p in &usable {
        if !families.contains(&p.family.as_str()) {
            families.push(&p.family);
        }
    }
    let mut lines = Vec::new();
    let mut legend = Vec::new();
    if let Some(c) = clean_ce {
        let color = style::REFERENCE;
        lines.push(LineSpec {
            name: "clean LM (no coder)".into(),
            color,
            marker: Marker::None,
            line: LineKind::Dashed,
            points: vec![(x.lo, c), (x.hi, c)],
        });
        legend.push(LegendEntry {
            label: "clean LM (no coder)".into(),
            color,
            line: LineKind::Dashed,
            marker: Marker::None,
        });
    }
    for (i, fam) in families.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> =
            usable.iter().filter(|p| p.family == *fam).map(|p| (x.fwd(p.l0), p.ce_loss)).collect();
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
        y_desc: "CE loss with coder spliced in (nats/token)".into(),
        lines,
    };
    let spec = super::matching::single_panel_json(&title, &panel, "");
    Ok(render(name, title.clone(), opts, &SinglePanel { title: &title, legend, panel }, data, None)?
        .with_interactive(spec))
}
