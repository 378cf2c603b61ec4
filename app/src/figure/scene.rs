//! [`Scene`]: the one drawing description of a figure, in points (1/72 inch), laid out from the
//! same [`ViewModel`] that the on-screen panels paint (cells, colours, labels, outlines, markers,
//! colour-bar ticks and units), so screen and figure cannot drift apart.

use ecolor::Color32;
use lens_model::output::report::LensReport;

use super::spec::{FigureSpec, FigureView};
use crate::view::model::{ViewModel, shown};
use crate::view::theme::{self, ColorMap};

/// Horizontal text anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Text starts at x.
    Start,
    /// Text is centred on x.
    Middle,
    /// Text ends at x.
    End,
}

/// One primitive.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A rectangle (fill and/or stroke).
    Rect {
        /// Left.
        x: f64,
        /// Top.
        y: f64,
        /// Width.
        w: f64,
        /// Height.
        h: f64,
        /// Fill colour.
        fill: Option<Color32>,
        /// Stroke colour and width.
        stroke: Option<(Color32, f64)>,
    },
    /// A line of text; (x, y) is the anchor on the baseline, rotated by `rotate` degrees about it.
    Text {
        /// Anchor x.
        x: f64,
        /// Baseline y.
        y: f64,
        /// Font size, pt.
        size: f64,
        /// The text.
        text: String,
        /// Horizontal anchor.
        anchor: Anchor,
        /// Rotation in degrees (clockwise, SVG convention).
        rotate: f64,
        /// Colour.
        color: Color32,
        /// Bold.
        bold: bool,
    },
    /// An open line through `points` (x, y).
    Polyline {
        /// The points.
        points: Vec<(f64, f64)>,
        /// Colour.
        stroke: Color32,
        /// Width, pt.
        width: f64,
    },
    /// A filled polygon through `points`, drawn with `opacity` (a confidence band).
    Polygon {
        /// The corners.
        points: Vec<(f64, f64)>,
        /// Fill colour.
        fill: Color32,
        /// Fill opacity, 0..=1.
        opacity: f64,
    },
}

/// Where a grid panel's cells lie in its figure (pt), so that a page can tell which cell is under
/// the pointer (the HTML export).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CellArea {
    /// Left edge of the first column.
    pub x: f64,
    /// Top edge of the first row.
    pub y: f64,
    /// Cell width.
    pub w: f64,
    /// Cell height.
    pub h: f64,
    /// Rows (the view model's `rows`, top first).
    pub n_rows: usize,
    /// Columns (the view model's `cols`, left first).
    pub n_cols: usize,
    /// Which run the panel shows: 0 (the run, or A), 1 (B of a comparison).
    pub run: usize,
}

/// A figure: size in points and its primitives in painting order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Width, pt.
    pub width: f64,
    /// Height, pt.
    pub height: f64,
    /// Primitives.
    pub items: Vec<Item>,
    /// The grid panels' cells (none for plots such as the corpus figures).
    pub cells: Vec<CellArea>,
}

const FONT: f64 = 7.0;
const CHAR_W: f64 = 0.6; // average glyph advance of DejaVu Sans, in ems
const INK: Color32 = theme::FIGURE_INK;

fn short(v: f64) -> String {
    if !v.is_finite() {
        String::new()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The grid a figure shows: cells (row-major, top row first) and their axis labels.
struct Grid {
    title: String,
    row_labels: Vec<String>,
    top_labels: Vec<String>,
    bottom_labels: Vec<String>,
    colors: Vec<Color32>,
    labels: Vec<String>,
    outline: Vec<bool>,
    /// Prediction-depth marker row per column, and whether it is on the cell's bottom edge.
    depth: (Vec<Option<usize>>, bool),
    bar: Vec<Color32>,
    ticks: Vec<(f32, String)>,
    unit: String,
}

fn lens_grid(vm: &ViewModel, spec: &FigureSpec) -> Option<Grid> {
    let panel = vm.panel(spec.metric())?;
    let cmap: ColorMap = panel.scale.cmap;
    Some(Grid {
        title: panel.title.clone(),
        // A row the decoder did not transport says so beside its name (its cells are greyed).
        row_labels: vm
            .row_labels
            .iter()
            .zip(vm.greyed.iter().chain(std::iter::repeat(&false)))
            .map(|(l, g)| if *g { format!("{l} (as is)") } else { l.clone() })
            .collect(),
        top_labels: vm.next_labels.iter().map(|(t, star)| if *star { format!("*{t}") } else { t.clone() }).collect(),
        bottom_labels: vm.input_labels.clone(),
        colors: panel.colors.clone(),
        labels: panel.labels.clone(),
        outline: vm.outline.clone(),
        depth: (vm.depth.clone(), vm.depth_below),
        bar: (0..64).map(|i| cmap.at(i as f32 / 63.0)).collect(),
        ticks: panel.scale.ticks.clone(),
        unit: panel.scale.unit.clone(),
    })
}

/// The colour bar of a diverging scale over `-max..=max`.
fn diverging_bar(max: f64) -> Vec<Color32> {
    (0..64).map(|i| theme::diverging((f64::from(i) / 63.0 * 2.0 - 1.0) * max, max)).collect()
}

/// The ticks of a diverging scale over `-max..=max`: its ends and 0.
fn diverging_ticks(max: f64) -> Vec<(f32, String)> {
    vec![(0.0, short(-max)), (0.5, "0".into()), (1.0, short(max))]
}

/// The labels above an attribution grid's columns: each position's target (the next token, or
/// the final top-1).
fn target_labels(vm: &ViewModel, report: &LensReport, next: bool, token_text: &dyn Fn(u32) -> String) -> Vec<String> {
    vm.cols
        .iter()
        .map(|&p| {
            if next {
                report.tokens.get(p + 1).map(|t| shown(&t.text)).unwrap_or_default()
            } else {
                report.attribution.final_top1_ids.get(p).map(|&id| token_text(id)).unwrap_or_default()
            }
        })
        .collect()
}

fn contributions_grid(vm: &ViewModel, report: &LensReport, spec: &FigureSpec, token_text: &dyn Fn(u32) -> String) -> Grid {
    let att = &report.attribution;
    let next = spec.contrib_target == "next";
    let value = |c: usize, p: usize| -> f64 {
        if next { att.next.get(c, p).copied().flatten().unwrap_or(f64::NAN) } else { att.final_top1.get(c, p).copied().unwrap_or(f64::NAN) }
    };
    // Rows: embed at the bottom, ln_bias on top, as the lens grids put the output on top.
    let comps: Vec<usize> = (0..att.components.len()).rev().collect();
    let vals: Vec<f64> = comps.iter().flat_map(|&c| vm.cols.iter().map(move |&p| (c, p))).map(|(c, p)| value(c, p)).collect();
    let max = vals.iter().copied().filter(|v| v.is_finite()).fold(0f64, |a, v| a.max(v.abs())).max(1e-9);
    let top_labels = target_labels(vm, report, next, token_text);
    Grid {
        title: format!("Direct logit attribution to the {}", if next { "next token" } else { "final top-1" }),
        row_labels: comps.iter().map(|&c| att.components.get(c).cloned().unwrap_or_default()).collect(),
        top_labels,
        bottom_labels: vm.input_labels.clone(),
        colors: vals.iter().map(|&v| theme::diverging(v, max)).collect(),
        labels: vals.iter().map(|&v| short(v)).collect(),
        outline: vec![false; vals.len()],
        depth: (Vec::new(), true),
        bar: diverging_bar(max),
        ticks: diverging_ticks(max),
        unit: "logit".into(),
    }
}

/// Gradient × activation (the report's [`lens_model::output::report::GradXAct`]): every site (the
/// last on top) × the view's positions, diverging about 0, for the final top-1 or the next token.
fn grad_x_act_grid(vm: &ViewModel, report: &LensReport, spec: &FigureSpec, token_text: &dyn Fn(u32) -> String) -> Option<Grid> {
    let g = report.gradient_x_activation.as_ref()?;
    let next = spec.contrib_target == "next";
    let value = |s: usize, p: usize| -> f64 {
        if next { g.next.get(s, p).copied().flatten().unwrap_or(f64::NAN) } else { g.final_top1.get(s, p).copied().unwrap_or(f64::NAN) }
    };
    let sites: Vec<usize> = (0..report.sites.len()).rev().collect();
    let vals: Vec<f64> = sites.iter().flat_map(|&s| vm.cols.iter().map(move |&p| (s, p))).map(|(s, p)| value(s, p)).collect();
    let max = vals.iter().copied().filter(|v| v.is_finite()).fold(0f64, |a, v| a.max(v.abs())).max(1e-9);
    let top_labels = target_labels(vm, report, next, token_text);
    Some(Grid {
        title: format!("Gradient × activation of the {} logit", if next { "next token's" } else { "final top-1's" }),
        row_labels: sites.iter().map(|&s| report.sites.get(s).cloned().unwrap_or_default()).collect(),
        top_labels,
        bottom_labels: vm.input_labels.clone(),
        // No value (the last position has no next token): a light grey, which prints as blank.
        colors: vals.iter().map(|&v| if v.is_finite() { theme::diverging(v, max) } else { Color32::from_gray(0xE8) }).collect(),
        labels: vals.iter().map(|&v| if v.is_finite() { short(v) } else { String::new() }).collect(),
        outline: vec![false; vals.len()],
        depth: (Vec::new(), true),
        bar: diverging_bar(max),
        ticks: diverging_ticks(max),
        unit: "logit".into(),
    })
}

/// A heatmap on a diverging scale symmetric about 0 (activation patching's effects): `values`
/// row-major over `row_labels` (top row first) × the columns, each cell labelled with its value.
/// `None` when there is nothing finite to draw.
#[allow(clippy::too_many_arguments)]
pub fn diverging_figure(
    title: String,
    subtitle: &str,
    row_labels: Vec<String>,
    top_labels: Vec<String>,
    bottom_labels: Vec<String>,
    values: &[f64],
    unit: &str,
    spec: &FigureSpec,
) -> Option<Scene> {
    let max = values.iter().copied().filter(|v| v.is_finite()).fold(0f64, |a, v| a.max(v.abs()));
    if !max.is_finite() || values.iter().all(|v| !v.is_finite()) {
        return None;
    }
    let max = max.max(1e-9);
    let grid = Grid {
        title,
        row_labels,
        top_labels,
        bottom_labels,
        colors: values.iter().map(|&v| theme::diverging(v, max)).collect(),
        labels: values.iter().map(|&v| short(v)).collect(),
        outline: vec![false; values.len()],
        depth: (Vec::new(), true),
        bar: diverging_bar(max),
        ticks: diverging_ticks(max),
        unit: unit.into(),
    };
    layout(grid, spec, subtitle)
}

/// The line under a figure's title: model, shape, token count and decoder.
pub fn subtitle(report: &LensReport) -> String {
    let decoder = match report.run.tuned_lens.as_ref().or(report.run.jacobian_lens.as_ref()) {
        Some(t) => format!("{} ({})", report.decoder, std::path::Path::new(t).file_name().map_or_else(|| t.clone(), |n| n.to_string_lossy().into_owned())),
        None => report.decoder.clone(),
    };
    // Rows the decoder could not transform are said: they are the logit lens's, not the decoder's.
    let decoder = if report.no_transport.is_empty() {
        decoder
    } else {
        let n = report.no_transport.len();
        format!("{decoder} · {n} row{} not transported (grey, \"as is\")", if n == 1 { "" } else { "s" })
    };
    // Quantized weights are said in every figure: such a figure can never pass for an exact one.
    let weights = if report.exact_weights() { String::new() } else { format!(" · {} weights (approximate)", report.weights()) };
    // A run by another engine names it (nnsight here or on NDIF).
    let engine = report.run.engine.as_ref().map_or(String::new(), |e| format!(" · {} ({})", e.name, if e.location == "ndif" { "NDIF" } else { "local" }));
    format!(
        "{} ({} layers, d_model {}) · {} tokens · {decoder}{weights}{engine}",
        report.model.name,
        report.model.n_layers,
        report.model.d_model,
        report.n_pos()
    )
}

/// Lays out the figure of `spec` from the view model (and the report, for contributions).
pub fn build(vm: &ViewModel, report: &LensReport, spec: &FigureSpec, subtitle: &str, token_text: &dyn Fn(u32) -> String) -> Option<Scene> {
    let grid = match spec.view {
        FigureView::Contributions => contributions_grid(vm, report, spec, token_text),
        FigureView::GradXAct => grad_x_act_grid(vm, report, spec, token_text)?,
        _ => lens_grid(vm, spec)?,
    };
    layout(grid, spec, subtitle)
}

/// Lays out a grid figure: title, subtitle, tilted token labels, cells, colour bar.
fn layout(grid: Grid, spec: &FigureSpec, subtitle: &str) -> Option<Scene> {
    let n_rows = grid.row_labels.len();
    let n_cols = grid.bottom_labels.len();
    if n_rows == 0 || n_cols == 0 {
        return None;
    }
    let width = spec.width_in * 72.0;
    let max_chars = |v: &[String]| v.iter().map(|s| s.chars().count()).max().unwrap_or(0).min(18) as f64;
    let left = max_chars(&grid.row_labels) * CHAR_W * FONT + 10.0;
    // The colour bar's column: gap, bar, tick, the widest tick label (6 pt), the rotated unit.
    let tick_w = grid.ticks.iter().map(|(_, l)| l.chars().count()).max().unwrap_or(0) as f64 * CHAR_W * 6.0;
    let right = (10.0 + 9.0 + 4.0 + tick_w + 6.0 + 10.0).max(62.0);
    let cell_w = ((width - left - right) / n_cols as f64).max(1.0);
    let cell_h = (cell_w * 0.5).clamp(7.0, 14.0);
    let diag = std::f64::consts::FRAC_1_SQRT_2;
    let label_font = FONT.min(cell_w * 0.9).max(3.0);
    let top_band = (max_chars(&grid.top_labels) * CHAR_W * label_font * diag + 8.0).min(90.0);
    let bottom_band = (max_chars(&grid.bottom_labels) * CHAR_W * label_font * diag + 8.0).min(90.0);
    let title_h = 26.0;
    let grid_top = title_h + top_band;
    let grid_h = n_rows as f64 * cell_h;
    let height = grid_top + grid_h + bottom_band + 4.0;
    let mut items = Vec::new();
    let text = |items: &mut Vec<Item>, x: f64, y: f64, size: f64, s: String, anchor: Anchor, rotate: f64, color: Color32, bold: bool| {
        if !s.is_empty() {
            items.push(Item::Text { x, y, size, text: s, anchor, rotate, color, bold });
        }
    };
    items.push(Item::Rect { x: 0.0, y: 0.0, w: width, h: height, fill: Some(theme::FIGURE_BG), stroke: None });
    let title = spec.title.clone().unwrap_or_else(|| grid.title.clone());
    text(&mut items, left, 11.0, 9.0, title, Anchor::Start, 0.0, INK, true);
    text(&mut items, left, 21.0, 6.0, subtitle.to_string(), Anchor::Start, 0.0, theme::FIGURE_DIM, false);

    // Cells.
    for r in 0..n_rows {
        for c in 0..n_cols {
            let i = r * n_cols + c;
            let (x, y) = (left + c as f64 * cell_w, grid_top + r as f64 * cell_h);
            let fill = grid.colors.get(i).copied().unwrap_or(theme::MISSING);
            items.push(Item::Rect { x, y, w: cell_w, h: cell_h, fill: Some(fill), stroke: None });
            if grid.outline.get(i).copied().unwrap_or(false) {
                let t = 0.6;
                items.push(Item::Rect { x: x + t / 2.0, y: y + t / 2.0, w: cell_w - t, h: cell_h - t, fill: None, stroke: Some((theme::MATCH_OUTLINE, t)) });
            }
            let mut label = grid.labels.get(i).map(|s| shown(s)).unwrap_or_default();
            let size_for = |n: usize| (cell_w * 0.92 / (n.max(1) as f64 * CHAR_W)).min(cell_h * 0.62).min(FONT);
            let mut fits = size_for(label.chars().count());
            if fits < 4.0 {
                // Too long for the cell at a legible size: keep what fits at 4 pt, with an ellipsis.
                let keep = ((cell_w * 0.92 / (4.0 * CHAR_W)).floor() as usize).saturating_sub(1);
                if keep >= 1 {
                    label = label.chars().take(keep).collect::<String>() + "…";
                    fits = size_for(keep + 1);
                }
            }
            if fits >= 3.0 {
                text(&mut items, x + cell_w / 2.0, y + cell_h / 2.0 + fits * 0.36, fits, label, Anchor::Middle, 0.0, theme::text_on(fill), false);
            }
        }
    }
    // Prediction depth: a bar on the edge below which the top-1 is not yet the final one.
    let (depth, below) = &grid.depth;
    for (c, row) in depth.iter().enumerate() {
        if let Some(r) = row {
            let (x, y) = (left + c as f64 * cell_w, grid_top + *r as f64 * cell_h);
            let t = (cell_h * 0.12).clamp(0.6, 1.6);
            let y = if *below { y + cell_h - t } else { y };
            items.push(Item::Rect { x, y, w: cell_w, h: t, fill: Some(theme::DEPTH_MARK), stroke: None });
        }
    }
    // Axis labels: rows on the left, tilted next tokens on top, tilted input tokens below.
    for (r, l) in grid.row_labels.iter().enumerate() {
        text(&mut items, left - 4.0, grid_top + (r as f64 + 0.5) * cell_h + FONT * 0.36, FONT, l.clone(), Anchor::End, 0.0, INK, false);
    }
    for c in 0..n_cols {
        let cx = left + (c as f64 + 0.5) * cell_w;
        if let Some(t) = grid.top_labels.get(c) {
            text(&mut items, cx, grid_top - 3.0, label_font, shown(t), Anchor::Start, -45.0, INK, t.starts_with('*'));
        }
        if let Some(t) = grid.bottom_labels.get(c) {
            text(&mut items, cx + label_font * 0.3, grid_top + grid_h + 4.0 + label_font * 0.3, label_font, shown(t), Anchor::End, -45.0, INK, false);
        }
    }
    items.push(Item::Rect { x: left, y: grid_top, w: cell_w * n_cols as f64, h: grid_h, fill: None, stroke: Some((INK, 0.5)) });

    // Colour bar with ticks and unit.
    let bx = width - right + 10.0;
    let bw = 9.0;
    let seg = grid_h / grid.bar.len().max(1) as f64;
    for (i, col) in grid.bar.iter().enumerate() {
        let y = grid_top + grid_h - (i as f64 + 1.0) * seg;
        items.push(Item::Rect { x: bx, y, w: bw, h: seg + 0.3, fill: Some(*col), stroke: None });
    }
    items.push(Item::Rect { x: bx, y: grid_top, w: bw, h: grid_h, fill: None, stroke: Some((INK, 0.5)) });
    for (t, label) in &grid.ticks {
        let y = grid_top + grid_h - f64::from(*t) * grid_h;
        items.push(Item::Rect { x: bx + bw, y: y - 0.25, w: 2.5, h: 0.5, fill: Some(INK), stroke: None });
        text(&mut items, bx + bw + 4.0, y + 2.2, 6.0, label.clone(), Anchor::Start, 0.0, INK, false);
    }
    text(&mut items, width - 6.0, grid_top + grid_h / 2.0, 6.5, grid.unit.clone(), Anchor::Middle, 90.0, INK, false);
    let cells = vec![CellArea { x: left, y: grid_top, w: cell_w, h: cell_h, n_rows, n_cols, run: 0 }];
    Some(Scene { width, height, items, cells })
}

/// Stacks scenes vertically into one figure (e.g. all synchronized panels together).
pub fn stack(scenes: Vec<Scene>) -> Scene {
    let mut out = Scene { width: 0.0, height: 0.0, items: Vec::new(), cells: Vec::new() };
    for s in scenes {
        let dy = out.height;
        out.cells.extend(s.cells.into_iter().map(|c| CellArea { y: c.y + dy, ..c }));
        out.width = out.width.max(s.width);
        out.height += s.height;
        out.items.extend(s.items.into_iter().map(|item| match item {
            Item::Rect { x, y, w, h, fill, stroke } => Item::Rect { x, y: y + dy, w, h, fill, stroke },
            Item::Text { x, y, size, text, anchor, rotate, color, bold } => Item::Text { x, y: y + dy, size, text, anchor, rotate, color, bold },
            Item::Polyline { points, stroke, width } => Item::Polyline { points: points.into_iter().map(|(x, y)| (x, y + dy)).collect(), stroke, width },
            Item::Polygon { points, fill, opacity } => Item::Polygon { points: points.into_iter().map(|(x, y)| (x, y + dy)).collect(), fill, opacity },
        }));
    }
    out
}
