//! The plotted numbers of a figure as a small JSON chart description, which the
//! report's inline script (`assets/report.js`) draws as an interactive chart:
//! hover values, box zoom, legend toggles. The static SVG/PNG stay the paper copy.
//!
//! Two kinds:
//! - `lines`: panels of named series (`points` in data units, `null` for gaps),
//!   `mode` `line`, `markers` or `steps` (histogram bars from `edges` and `counts`);
//! - `heatmap`: a column per category (`x_labels`), rows of bins (`y_edges`),
//!   `values[column][row]` (colour) and `counts[column][row]` (shown on hover).

use serde_json::{Value, json};

use crate::axis::{Axis, Scale};
use crate::render::{LineKind, LinePanel};
use crate::style::Marker;
use plotters::style::RGBColor;

pub(crate) fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

pub(crate) fn axis_json(a: &Axis, label: &str) -> Value {
    let scale = match a.scale {
        Scale::Linear => "linear",
        Scale::Log10 => "log",
        Scale::SymLog => "symlog",
    };
    json!({ "label": label.replace(" (log scale)", ""), "scale": scale, "int": a.int_labels })
}

/// One panel of a `lines` chart from a drawn [`LinePanel`] (its points are in
/// transformed units; the JSON holds data units). `names[i]` names `panel.lines[i]`.
pub(crate) fn panel_json(p: &LinePanel, names: &[String], x_desc: &str) -> Value {
    let series: Vec<Value> = p
        .lines
        .iter()
        .zip(names)
        .map(|(l, name)| {
            let pts: Vec<Value> =
                l.points.iter().map(|&(x, y)| json!([finite(p.x.inv(x)), finite(p.y.inv(y))])).collect();
            json!({
                "name": name,
                "color": hex(l.color),
                "dash": l.line == LineKind::Dashed,
                "mode": if l.line == LineKind::Solid || l.line == LineKind::Dashed {
                    if l.marker == Marker::None { "line" } else { "line+markers" }
                } else { "markers" },
                "points": pts,
            })
        })
        .collect();
    json!({
        "title": p.caption.clone().unwrap_or_default(),
        "x": axis_json(&p.x, if x_desc.is_empty() { &p.x_desc } else { x_desc }),
        "y": axis_json(&p.y, &p.y_desc),
        "series": series,
    })
}

/// A `lines` chart of `panels` with `cols` panels per row.
pub(crate) fn lines_json(title: &str, panels: Vec<Value>, cols: usize, note: &str) -> String {
    json!({ "kind": "lines", "title": title, "cols": cols, "note": note, "panels": panels }).to_string()
}
