//! Every colour of the app: colour maps (const tables, colour-blind-safe default) and UI accents.

use ecolor::Color32;
use serde::{Deserialize, Serialize};

/// A sequential colour map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ColorMap {
    /// Perceptually uniform, colour-blind safe (default).
    #[default]
    Viridis,
    /// Black → purple → orange → cream.
    Magma,
    /// Optimised for colour-vision deficiency.
    Cividis,
    /// Purple → white → orange, for signed differences (A − B panels; not offered in menus).
    Diverging,
}

impl ColorMap {
    /// All maps, for menus.
    pub const ALL: [Self; 3] = [Self::Viridis, Self::Magma, Self::Cividis];

    /// Menu name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viridis => "viridis",
            Self::Magma => "magma",
            Self::Cividis => "cividis",
            Self::Diverging => "diverging",
        }
    }

    fn table(self) -> &'static [[u8; 3]] {
        match self {
            Self::Viridis => &VIRIDIS,
            Self::Magma => &MAGMA,
            Self::Cividis => &CIVIDIS,
            Self::Diverging => &DIVERGING,
        }
    }

    /// Colour at `t` in 0..=1 (clamped; NaN maps to [`MISSING`]).
    pub fn at(self, t: f32) -> Color32 {
        lerp_table(self.table(), t)
    }
}

/// Linear interpolation in a table of equally spaced control points.
fn lerp_table(table: &[[u8; 3]], t: f32) -> Color32 {
    if t.is_nan() {
        return MISSING;
    }
    let n = table.len().saturating_sub(1).max(1);
    let x = t.clamp(0.0, 1.0) * n as f32;
    let i = (x.floor() as usize).min(n.saturating_sub(1));
    let f = x - i as f32;
    let (Some(a), Some(b)) = (table.get(i), table.get(i + 1).or_else(|| table.get(i))) else {
        return MISSING;
    };
    let mix = |u: u8, v: u8| (f32::from(u) + (f32::from(v) - f32::from(u)) * f).round() as u8;
    Color32::from_rgb(mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2]))
}

/// viridis, 10 equally spaced control points (matplotlib).
pub const VIRIDIS: [[u8; 3]; 10] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x28, 0x78],
    [0x3E, 0x4A, 0x89],
    [0x31, 0x68, 0x8E],
    [0x26, 0x82, 0x8E],
    [0x1F, 0x9E, 0x89],
    [0x35, 0xB7, 0x79],
    [0x6D, 0xCD, 0x59],
    [0xB4, 0xDE, 0x2C],
    [0xFD, 0xE7, 0x25],
];

/// magma, 10 equally spaced control points (matplotlib).
pub const MAGMA: [[u8; 3]; 10] = [
    [0x00, 0x00, 0x04],
    [0x18, 0x0F, 0x3E],
    [0x45, 0x10, 0x77],
    [0x72, 0x1F, 0x81],
    [0x9F, 0x2F, 0x7F],
    [0xCD, 0x40, 0x71],
    [0xF1, 0x60, 0x5D],
    [0xFD, 0x95, 0x67],
    [0xFE, 0xC9, 0x8D],
    [0xFC, 0xFD, 0xBF],
];

/// cividis, 10 equally spaced control points (matplotlib).
pub const CIVIDIS: [[u8; 3]; 10] = [
    [0x00, 0x20, 0x4D],
    [0x00, 0x33, 0x6F],
    [0x39, 0x48, 0x6B],
    [0x57, 0x5C, 0x6D],
    [0x70, 0x71, 0x73],
    [0x8A, 0x87, 0x79],
    [0xA6, 0x9D, 0x75],
    [0xC4, 0xB5, 0x6C],
    [0xE4, 0xCF, 0x5B],
    [0xFF, 0xEA, 0x46],
];

/// Diverging map for signed attributions (PuOr: colour-blind safe), negative → purple, positive → orange.
pub const DIVERGING: [[u8; 3]; 9] = [
    [0x54, 0x27, 0x88],
    [0x80, 0x73, 0xAC],
    [0xB2, 0xAB, 0xD2],
    [0xD8, 0xDA, 0xEB],
    [0xF7, 0xF7, 0xF7],
    [0xFE, 0xE0, 0xB6],
    [0xFD, 0xB8, 0x63],
    [0xE0, 0x82, 0x14],
    [0xB3, 0x58, 0x06],
];

/// Diverging colour of `v` in -max..=max.
pub fn diverging(v: f64, max: f64) -> Color32 {
    if !v.is_finite() || max <= 0.0 {
        return MISSING;
    }
    lerp_table(&DIVERGING, (0.5 + 0.5 * v / max) as f32)
}

/// Line colours of overlaid runs (corpus plots in the app and in figures), in order:
/// distinguishable in print and for colour-blind readers.
pub const RUN_COLORS: [Color32; 6] = [
    Color32::from_rgb(0x00, 0x72, 0xB2),
    Color32::from_rgb(0xD5, 0x5E, 0x00),
    Color32::from_rgb(0x00, 0x9E, 0x73),
    Color32::from_rgb(0xCC, 0x79, 0xA7),
    Color32::from_rgb(0xE6, 0x9F, 0x00),
    Color32::from_rgb(0x56, 0xB4, 0xE9),
];

/// The colour of overlaid run `k` (the palette repeats).
pub fn run_color(k: usize) -> Color32 {
    RUN_COLORS.get(k % RUN_COLORS.len()).copied().unwrap_or(FIGURE_INK)
}

/// Figures: text and frames.
pub const FIGURE_INK: Color32 = Color32::from_rgb(0x1A, 0x1A, 0x1A);
/// Figures: secondary text (subtitle).
pub const FIGURE_DIM: Color32 = Color32::from_rgb(0x60, 0x60, 0x60);
/// Figures: page background.
pub const FIGURE_BG: Color32 = Color32::WHITE;
/// Grid lines of figure plots.
pub const FIGURE_GRID: Color32 = Color32::from_rgb(0xD8, 0xD8, 0xD8);

/// Cells without a value (e.g. no next token at the last position).
pub const MISSING: Color32 = Color32::from_rgb(0x30, 0x30, 0x30);
/// Outline of cells whose top-1 equals the final top-1.
pub const MATCH_OUTLINE: Color32 = Color32::from_rgb(0xFF, 0xFF, 0xFF);
/// Hover crosshair.
pub const HOVER: Color32 = Color32::from_rgba_premultiplied(0xFF, 0xFF, 0xFF, 0x50);
/// Scroll position indicators of the grids.
pub const SCROLL: Color32 = Color32::from_rgb(0x70, 0x70, 0x70);
/// Selected cell outline.
pub const SELECTION: Color32 = Color32::from_rgb(0xFF, 0x3B, 0x30);
/// Error banner background.
pub const ERROR_BG: Color32 = Color32::from_rgb(0x8B, 0x1A, 0x1A);
/// Error banner text.
pub const ERROR_FG: Color32 = Color32::WHITE;
/// Text of a next token the model predicts (final top-1 is right).
pub const CORRECT: Color32 = Color32::from_rgb(0x7F, 0xD8, 0x7F);
/// Warnings that are not errors (a truncated prompt).
pub const WARN: Color32 = Color32::from_rgb(0xF0, 0xC0, 0x60);
/// Secondary (dim) text.
pub const DIM_TEXT: Color32 = Color32::from_rgb(0xA0, 0xA0, 0xA0);
/// Normal label text.
pub const TEXT: Color32 = Color32::from_rgb(0xE0, 0xE0, 0xE0);
/// Trajectory: probability line.
pub const LINE_PROB: Color32 = Color32::from_rgb(0x35, 0xB7, 0x79);
/// The followed token group's probability in the trajectory plot.
pub const LINE_GROUP: Color32 = Color32::from_rgb(0xE6, 0x9F, 0x00);
/// Trajectory: rank line.
pub const LINE_RANK: Color32 = Color32::from_rgb(0x31, 0x68, 0x8E);
/// Trajectory: KL line.
pub const LINE_KL: Color32 = Color32::from_rgb(0xF1, 0x60, 0x5D);
/// Cursor line linked to the hovered row.
/// The prediction-depth marker: the edge below which a position's top-1 is not yet the final one.
pub const DEPTH_MARK: Color32 = Color32::from_rgb(0xFF, 0x45, 0x45);
/// Selection cursor and highlights.
pub const CURSOR: Color32 = Color32::from_rgb(0xFF, 0xD7, 0x00);
/// Attention bars.
pub const BAR_ATTN: Color32 = Color32::from_rgb(0x80, 0x73, 0xAC);
/// MLP bars.
pub const BAR_MLP: Color32 = Color32::from_rgb(0xE0, 0x82, 0x14);
/// Embedding / LN bias bars.
pub const BAR_OTHER: Color32 = Color32::from_rgb(0x90, 0x90, 0x90);

/// A cell colour greyed (a row the decoder had no transport for): its lightness kept, squeezed
/// into mid greys, so that the row reads as different at a glance and its values still show.
pub fn greyed(c: Color32) -> Color32 {
    let l = 0.299 * f32::from(c.r()) + 0.587 * f32::from(c.g()) + 0.114 * f32::from(c.b());
    let v = (70.0 + l * 0.55).round().clamp(0.0, 255.0) as u8;
    Color32::from_rgb(v, v, v)
}

/// Black or white, whichever reads better on `bg`.
pub fn text_on(bg: Color32) -> Color32 {
    let l = 0.299 * f32::from(bg.r()) + 0.587 * f32::from(bg.g()) + 0.114 * f32::from(bg.b());
    if l > 140.0 { Color32::BLACK } else { Color32::WHITE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hit_their_ends_and_clamp() {
        assert_eq!(ColorMap::Viridis.at(0.0), Color32::from_rgb(0x44, 0x01, 0x54));
        assert_eq!(ColorMap::Viridis.at(1.0), Color32::from_rgb(0xFD, 0xE7, 0x25));
        assert_eq!(ColorMap::Magma.at(2.0), ColorMap::Magma.at(1.0));
        assert_eq!(ColorMap::Cividis.at(f32::NAN), MISSING);
        assert_eq!(diverging(0.0, 1.0), Color32::from_rgb(0xF7, 0xF7, 0xF7));
    }
}
