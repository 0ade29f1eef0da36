//! Fonts, colours and text sizes shared by all figures.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{ReportError, Result};

/// DejaVu Sans (Bitstream Vera licence, see assets/LICENSE-DejaVu.txt). Embedded so PNG text
/// never depends on system font discovery.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Family name under which the embedded font is registered; SVG output names the same
/// generic family, so browsers use their own sans-serif font.
pub(crate) const FAMILY: &str = "sans-serif";

pub(crate) fn ensure_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        // Bold/italic requests fall back to Normal inside plotters.
        register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font { font: "DejaVuSans.ttf" }) }
}

pub(crate) const TITLE_SIZE: f64 = 21.0;
pub(crate) const PANEL_TITLE_SIZE: f64 = 16.0;
pub(crate) const DESC_SIZE: f64 = 15.0;
pub(crate) const TICK_SIZE: f64 = 13.0;
pub(crate) const LEGEND_SIZE: f64 = 14.0;

pub(crate) const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
pub(crate) const TICK_TEXT: RGBColor = RGBColor(0x33, 0x33, 0x33);
pub(crate) const GRID_MAJOR: RGBColor = RGBColor(0xd9, 0xd9, 0xd9);
pub(crate) const GRID_MINOR: RGBColor = RGBColor(0xf0, 0xf0, 0xf0);
pub(crate) const REFERENCE: RGBColor = RGBColor(0x55, 0x55, 0x55);

pub(crate) fn text_style(size: f64, color: RGBColor) -> TextStyle<'static> {
    let mut st = TextStyle::from((FAMILY, size).into_font());
    st.color = color.to_backend_color();
    st
}

pub(crate) const N_CATEGORICAL: usize = 10;

/// Tableau 10: distinct categorical colours that stay readable on white.
const CATEGORICAL: [RGBColor; N_CATEGORICAL] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0xba, 0xb0, 0xac),
];

pub(crate) fn categorical(i: usize) -> RGBColor {
    CATEGORICAL[i % CATEGORICAL.len()]
}

/// Viridis sampled at 0, 1/8, …, 1 (matplotlib's values), linearly interpolated.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2d, 0x7b),
    (0x3b, 0x52, 0x8b),
    (0x2c, 0x72, 0x8e),
    (0x21, 0x91, 0x8c),
    (0x28, 0xae, 0x80),
    (0x5e, 0xc9, 0x62),
    (0xad, 0xdc, 0x30),
    (0xfd, 0xe7, 0x25),
];

pub(crate) fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Colours for an ordered family of series (e.g. thresholds): viridis without its
/// pale-yellow end, which is hard to see on white.
pub(crate) fn sequential(i: usize, n: usize) -> RGBColor {
    if n <= 1 {
        return viridis(0.35);
    }
    viridis(0.88 * i as f64 / (n - 1) as f64)
}

/// Marker shapes, cycled per series so series differ without colour too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    None,
    Circle,
    Triangle,
    Square,
    Diamond,
}

pub(crate) fn marker_cycle(i: usize) -> Marker {
    [Marker::Circle, Marker::Triangle, Marker::Square, Marker::Diamond][i % 4]
}
