//! The lens grid (sites × positions) of one metric: header with controls and colour bar, then
//! cells painted from the precomputed [`PanelModel`], culled to the visible window. All panels
//! share one hover, one selection and one scroll offset (they live in [`AppState`]).

use egui::{Align2, FontId, Pos2, Rect, Sense, Shape, Stroke, Ui, Vec2, epaint::TextShape};

use crate::gui::command::AppCommand;
use crate::gui::state::{AppState, Cell, KlRef, LogitColor, Metric, RankTarget, ViewSettings};
use crate::gui::theme;
use crate::gui::view::{ColorScale, PanelModel, ViewModel};

/// Width of the row-label column.
pub const ROW_LABEL_W: f32 = 58.0;
/// Height of the next-token strip above the cells.
pub const TOP_LABEL_H: f32 = 54.0;
/// Height of the input-token strip below the cells.
pub const BOTTOM_LABEL_H: f32 = 64.0;
/// Height of the header (title, controls, colour bar).
pub const HEADER_H: f32 = 24.0;

/// Where the cells of a panel were painted in the last frame (used by tests to aim the pointer
/// and to check the layout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridGeometry {
    /// The metric.
    pub metric: Metric,
    /// The whole panel (everything it paints is clipped to it).
    pub panel: Rect,
    /// Its header (title, controls, colour bar).
    pub header: Rect,
    /// The colour bar.
    pub color_bar: Rect,
    /// Screen rect of the cell area.
    pub cells: Rect,
    /// Top-left of cell (0, 0) on screen (cells.min − scroll).
    pub origin: Pos2,
    /// Cell size.
    pub cell: Vec2,
}

impl GridGeometry {
    /// Centre of the cell at display (row, col).
    pub fn center(&self, row: usize, col: usize) -> Pos2 {
        self.origin + Vec2::new((col as f32 + 0.5) * self.cell.x, (row as f32 + 0.5) * self.cell.y)
    }
}

/// Cell size: the zoom setting, grown to fill the panel when there are few rows or columns. In a
/// panel that shares the window (`compact`: side by side or stacked) the cells also shrink so that
/// at least [`MIN_VISIBLE_POSITIONS`] positions show.
pub fn cell_size(view: &ViewSettings, area: Vec2, n_rows: usize, n_cols: usize, compact: bool) -> (f32, f32) {
    let mut cw = view.cell_w.clamp(4.0, 400.0);
    let mut ch = view.cell_h.clamp(4.0, 200.0);
    if compact {
        let want = n_cols.clamp(1, MIN_VISIBLE_POSITIONS) as f32;
        cw = cw.min((area.x / want).floor()).max(4.0);
        // Rows shrink to fit (as thin colour strips if need be; the zoom setting is the most);
        // below 4 points a row they scroll instead.
        ch = ch.min((area.y / n_rows.max(1) as f32).floor()).max(4.0);
    }
    let fit_w = (area.x / n_cols.max(1) as f32).min(MAX_FIT_W);
    let fit_h = (area.y / n_rows.max(1) as f32).min(MAX_FIT_H);
    (cw.max(fit_w), ch.max(fit_h))
}

/// Positions a panel shows at least when it shares the window with others.
pub const MIN_VISIBLE_POSITIONS: usize = 10;

/// Widest a cell grows to fill the panel.
pub const MAX_FIT_W: f32 = 120.0;
/// Tallest a cell grows to fill the panel.
pub const MAX_FIT_H: f32 = 36.0;

/// Header: the panel's title, its own controls, the colour bar; returns the header's and the
/// colour bar's rects. `compact` (a panel sharing the window): everything wraps within the panel's
/// width, the colour bar last; else the colour bar sits at the right end of one line.
/// `state_has_group`: the result follows a token group (the Logits panel may colour by it).
fn header(ui: &mut Ui, panel: &PanelModel, view: &ViewSettings, cmds: &mut Vec<AppCommand>, compact: bool, state_has_group: bool) -> (Rect, Rect) {
    let mut bar = Rect::NOTHING;
    let mut contents = |ui: &mut Ui, bar: &mut Rect| {
        ui.strong(&panel.title);
        let mut v = view.clone();
        match panel.metric {
            Metric::Logits => {
                ui.selectable_value(&mut v.logit_color, LogitColor::Probability, "prob");
                ui.selectable_value(&mut v.logit_color, LogitColor::Logit, "logit");
                if state_has_group {
                    ui.selectable_value(&mut v.logit_color, LogitColor::Group, "group").on_hover_text("Colour by the followed group's summed probability");
                }
            }
            Metric::Ranks => {
                // The label apart from the box: a labelled ComboBox is one unbreakable row that
                // ran past a narrow panel instead of wrapping.
                let target = ui.label("target");
                egui::ComboBox::from_id_salt("rank_target")
                    .selected_text(v.rank_target.name())
                    .show_ui(ui, |ui| {
                        for t in RankTarget::ALL {
                            ui.selectable_value(&mut v.rank_target, t, t.name());
                        }
                    })
                    .response
                    .labelled_by(target.id);
                ui.label("cap");
                ui.selectable_value(&mut v.rank_cap, 100, "100");
                ui.selectable_value(&mut v.rank_cap, 1000, "1000");
            }
            Metric::Kl => {
                ui.selectable_value(&mut v.kl_ref, KlRef::Final, "to final");
                ui.selectable_value(&mut v.kl_ref, KlRef::Input, "to input");
                let cap = ui.label("cap");
                ui.add(egui::DragValue::new(&mut v.kl_cap).range(0.1..=100.0).speed(0.5).suffix(" nats")).labelled_by(cap.id);
            }
            Metric::Entropy => {}
        }
        if &v != view {
            cmds.push(AppCommand::SetView(v));
        }
        if compact {
            // On its own line when the rest of this one cannot hold it (bar and unit: ~230 points):
            // squeezed after the controls it would run past the panel.
            if ui.available_width() < 240.0 {
                ui.end_row();
            } else {
                ui.add_space(8.0);
            }
            *bar = color_bar(ui, &panel.scale, false);
        } else {
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| *bar = color_bar(ui, &panel.scale, true));
        }
    };
    let max = ui.max_rect();
    let header =
        if compact { ui.horizontal_wrapped(|ui| contents(ui, &mut bar)).response.rect } else { ui.horizontal(|ui| contents(ui, &mut bar)).response.rect };
    // A wrapped row's rect also counts the item spacing after its last widget (up to 16 points
    // past a full row); nothing is painted there.
    let header = if compact { header.intersect(max) } else { header };
    (header, bar)
}

/// A horizontal colour bar with ticks and its unit (unit first: `unit_after` for a right-to-left
/// layout, where the first widget added is the rightmost); returns the bar and unit's rect.
pub fn color_bar(ui: &mut Ui, scale: &ColorScale, unit_after: bool) -> Rect {
    let unit = |ui: &mut Ui| ui.label(egui::RichText::new(&scale.unit).small().color(theme::DIM_TEXT)).rect;
    let unit_rect = if unit_after { Some(unit(ui)) } else { None };
    let (rect, _) = ui.allocate_exact_size(Vec2::new(150.0, 18.0), Sense::hover());
    let bar = Rect::from_min_max(rect.min, Pos2::new(rect.max.x, rect.min.y + 8.0));
    let painter = ui.painter();
    let n = 48;
    let mut mesh = egui::Mesh::default();
    for i in 0..n {
        let t0 = i as f32 / n as f32;
        let t1 = (i + 1) as f32 / n as f32;
        let r = Rect::from_min_max(Pos2::new(bar.left() + bar.width() * t0, bar.top()), Pos2::new(bar.left() + bar.width() * t1, bar.bottom()));
        mesh.add_colored_rect(r, scale.cmap.at((t0 + t1) / 2.0));
    }
    painter.add(Shape::mesh(mesh));
    for (t, label) in &scale.ticks {
        let x = bar.left() + bar.width() * t;
        let align = if *t <= 0.01 {
            Align2::LEFT_TOP
        } else if *t >= 0.99 {
            Align2::RIGHT_TOP
        } else {
            Align2::CENTER_TOP
        };
        painter.text(Pos2::new(x, bar.bottom()), align, label, FontId::proportional(9.0), theme::DIM_TEXT);
    }
    let unit_rect = match unit_rect {
        Some(r) => r,
        None => unit(ui),
    };
    rect.union(unit_rect)
}

/// Where a panel sits among the others: which token strips it draws and how tall its header is at
/// least (so that the grids of panels side by side start at the same height).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Draw the next-token strip above the cells.
    pub top_strip: bool,
    /// Draw the input-token strip below the cells.
    pub bottom_strip: bool,
    /// The header takes at least this height (the tallest header of the panels in a row).
    pub min_header_h: f32,
    /// The panel shares the window with others even in the tabs layout (a comparison's A, B and
    /// A − B): its header wraps and its cells fit its width.
    pub shared: bool,
}

impl Placement {
    /// A panel alone (tabs): both strips.
    pub const ALONE: Self = Self { top_strip: true, bottom_strip: true, min_header_h: 0.0, shared: false };
}

/// Shows one lens panel in the available space; returns the cell under the pointer.
pub fn grid_ui(
    ui: &mut Ui,
    vm: &ViewModel,
    panel: &PanelModel,
    state: &AppState,
    cmds: &mut Vec<AppCommand>,
    geometry: &mut Vec<GridGeometry>,
    place: Placement,
) -> Option<Cell> {
    let view = &state.view;
    let compact = place.shared || view.layout != crate::gui::state::PanelLayout::Tabs;
    let panel_rect = ui.max_rect();
    let has_group = state.result.as_ref().is_some_and(|r| !r.report.groups.is_empty());
    let (header_rect, bar_rect) = header(ui, panel, view, cmds, compact, has_group);
    if header_rect.height() < place.min_header_h {
        ui.add_space(place.min_header_h - header_rect.height());
    }
    let g = GridLayout::new(ui, panel_rect, vm, state, place, compact)?;
    geometry.push(GridGeometry {
        metric: panel.metric,
        panel: panel_rect,
        header: header_rect,
        color_bar: bar_rect,
        cells: g.cells,
        origin: g.origin,
        cell: Vec2::new(g.cw, g.ch),
    });
    let (resp, hovered) = interact(ui, &g, vm, panel.metric, state, cmds);
    let painter = ui.painter_at(g.full);
    paint_cells(&painter, &g, vm, panel);
    paint_marks(&painter, &g, vm, state);
    paint_row_labels(&painter, &g, vm, state);
    paint_token_strips(&painter, &g, vm, state, place);
    paint_scroll_bars(&painter, &g);
    if let Some(h) = hovered {
        resp.on_hover_ui_at_pointer(|ui| cell_tooltip(ui, vm, panel, h));
    }
    hovered
}

/// Where a grid's parts lie this frame: the whole area, the cells' window, the scrolled origin
/// and the cell size.
struct GridLayout {
    full: Rect,
    cells: Rect,
    origin: Pos2,
    cw: f32,
    ch: f32,
    scroll: Vec2,
    max_scroll: Vec2,
    content: Vec2,
    n_rows: usize,
    n_cols: usize,
    bottom_h: f32,
}

impl GridLayout {
    /// Allocates the grid's area below the header; `None` when it is too small to draw.
    fn new(ui: &mut Ui, panel_rect: Rect, vm: &ViewModel, state: &AppState, place: Placement, compact: bool) -> Option<Self> {
        // The grid takes the panel's own width (never what an overflowing header claimed).
        let avail = ui.available_rect_before_wrap();
        let full = Rect::from_min_max(Pos2::new(panel_rect.left(), avail.top()), Pos2::new(panel_rect.right(), panel_rect.bottom().max(avail.top() + 50.0)));
        let full = Rect::from_min_size(full.min, Vec2::new(full.width().max(50.0), full.height().max(50.0)));
        ui.allocate_rect(full, Sense::hover());
        // Token strips shrink in short panels so that the cells keep most of the room; stacked
        // panels share them (the top panel has the next tokens, the bottom one the input tokens).
        let top_h = if place.top_strip { TOP_LABEL_H.min(full.height() * 0.2) } else { 4.0 };
        let bottom_h = if place.bottom_strip { BOTTOM_LABEL_H.min(full.height() * 0.22) } else { 4.0 };
        // Rows a decoder did not transport carry " (as is)" after their name: room for it.
        let label_w = if vm.greyed.iter().any(|g| *g) { ROW_LABEL_W + 40.0 } else { ROW_LABEL_W };
        let cells = Rect::from_min_max(Pos2::new(full.left() + label_w, full.top() + top_h), Pos2::new(full.right() - 4.0, full.bottom() - bottom_h));
        if cells.width() < 8.0 || cells.height() < 8.0 {
            return None;
        }
        let (n_rows, n_cols) = (vm.rows.len(), vm.cols.len());
        let (cw, ch) = cell_size(&state.view, cells.size(), n_rows, n_cols, compact);
        // Shrink the cell area to the content, so that the token strips hug the cells.
        let cells = Rect::from_min_size(cells.min, Vec2::new(cells.width().min(n_cols as f32 * cw).max(8.0), cells.height().min(n_rows as f32 * ch).max(8.0)));
        let content = Vec2::new(n_cols as f32 * cw, n_rows as f32 * ch);
        let max_scroll = (content - cells.size()).max(Vec2::ZERO);
        let scroll = state.scroll.clamp(Vec2::ZERO, max_scroll);
        Some(Self { full, cells, origin: cells.min - scroll, cw, ch, scroll, max_scroll, content, n_rows, n_cols, bottom_h })
    }

    /// The rectangle of display cell (`row`, `col`).
    fn cell_rect(&self, row: usize, col: usize) -> Rect {
        Rect::from_min_size(self.origin + Vec2::new(col as f32 * self.cw, row as f32 * self.ch), Vec2::new(self.cw, self.ch))
    }

    /// The visible rows and columns (only those are painted).
    fn visible(&self) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let col_lo = (self.scroll.x / self.cw).floor().max(0.0) as usize;
        let col_hi = (((self.scroll.x + self.cells.width()) / self.cw).ceil() as usize).min(self.n_cols);
        let row_lo = (self.scroll.y / self.ch).floor().max(0.0) as usize;
        let row_hi = (((self.scroll.y + self.cells.height()) / self.ch).ceil() as usize).min(self.n_rows);
        (row_lo..row_hi, col_lo..col_hi)
    }

    /// The cell under `pos`, if any.
    fn cell_at(&self, vm: &ViewModel, pos: Pos2) -> Option<Cell> {
        if !self.cells.contains(pos) {
            return None;
        }
        let c = ((pos.x - self.origin.x) / self.cw).floor();
        let r = ((pos.y - self.origin.y) / self.ch).floor();
        if c < 0.0 || r < 0.0 {
            return None;
        }
        let (Some(&site), Some(&p)) = (vm.rows.get(r as usize), vm.cols.get(c as usize)) else { return None };
        Some(Cell { site, pos: p })
    }
}

/// Hover, click, drag to pan, wheel to scroll, ctrl+wheel to zoom: the commands go to `cmds`.
fn interact(
    ui: &mut Ui,
    g: &GridLayout,
    vm: &ViewModel,
    metric: crate::gui::state::Metric,
    state: &AppState,
    cmds: &mut Vec<AppCommand>,
) -> (egui::Response, Option<Cell>) {
    let id = ui.scope_id().with(("grid", metric));
    let resp = ui.interact(g.cells, id, Sense::click_and_drag());
    let hovered = resp.hover_pos().and_then(|p| g.cell_at(vm, p));
    if resp.clicked()
        && let Some(c) = resp.interact_pointer_pos().and_then(|p| g.cell_at(vm, p))
    {
        cmds.push(AppCommand::Select(Some(c)));
    }
    let mut new_scroll = g.scroll;
    if resp.dragged() {
        new_scroll -= resp.drag_delta();
    }
    if resp.hovered() {
        let (zoom, delta) = ui.input(|i| (i.zoom_delta(), i.smooth_scroll_delta));
        if (zoom - 1.0).abs() > 1e-3 {
            let mut v = state.view.clone();
            v.cell_w = (v.cell_w * zoom).clamp(4.0, 400.0);
            v.cell_h = (v.cell_h * zoom.sqrt()).clamp(4.0, 200.0);
            cmds.push(AppCommand::SetView(v));
        } else {
            new_scroll -= delta;
        }
    }
    let new_scroll = new_scroll.clamp(Vec2::ZERO, g.max_scroll);
    if new_scroll != state.scroll {
        cmds.push(AppCommand::Scroll(new_scroll));
    }
    (resp, hovered)
}

/// The visible cells: colours (one mesh), outlines where the top-1 is the final one, labels.
fn paint_cells(painter: &egui::Painter, g: &GridLayout, vm: &ViewModel, panel: &PanelModel) {
    let (rows, cols) = g.visible();
    let cell_painter = painter.with_clip_rect(g.cells);
    let (cw, ch, n_cols) = (g.cw, g.ch, g.n_cols);
    let show_text = cw >= 22.0 && ch >= 11.0;
    let font = FontId::proportional((ch * 0.6).clamp(8.0, 14.0));
    let mut mesh = egui::Mesh::default();
    for row in rows.clone() {
        for col in cols.clone() {
            let i = row * n_cols + col;
            let color = panel.colors.get(i).copied().unwrap_or(theme::MISSING);
            mesh.add_colored_rect(g.cell_rect(row, col), color);
        }
    }
    cell_painter.add(Shape::mesh(mesh));
    for row in rows {
        for col in cols.clone() {
            let i = row * n_cols + col;
            let r = g.cell_rect(row, col);
            // Outlines need room: in thin cells (stacked panels) they would only stripe the colours.
            if ch >= 8.0 && cw >= 8.0 && vm.outline.get(i).copied().unwrap_or(false) {
                cell_painter.rect_stroke(r.shrink(1.0), 0.0, Stroke::new(1.0, theme::MATCH_OUTLINE), egui::StrokeKind::Inside);
            }
            if show_text && let Some(label) = panel.labels.get(i).filter(|l| !l.is_empty()) {
                let color = theme::text_on(panel.colors.get(i).copied().unwrap_or(theme::MISSING));
                cell_painter.with_clip_rect(r.shrink(1.0).intersect(g.cells)).text(
                    Pos2::new(r.left() + 3.0, r.center().y),
                    Align2::LEFT_CENTER,
                    label,
                    font.clone(),
                    color,
                );
            }
        }
    }
}

/// The prediction-depth marks, the hover crosshair and the selection (shared across panels).
fn paint_marks(painter: &egui::Painter, g: &GridLayout, vm: &ViewModel, state: &AppState) {
    let cell_painter = painter.with_clip_rect(g.cells);
    let (_, cols) = g.visible();
    // Prediction depth: a line on the edge below which the top-1 is not yet the final one.
    for col in cols {
        if let Some(&Some(row)) = vm.depth.get(col) {
            let r = g.cell_rect(row, col);
            let y = if vm.depth_below { r.bottom() - 1.0 } else { r.top() + 1.0 };
            cell_painter.line_segment([Pos2::new(r.left() + 1.0, y), Pos2::new(r.right() - 1.0, y)], Stroke::new(2.5, theme::DEPTH_MARK));
        }
    }
    if let Some((row, col)) = state.hover.and_then(|h| vm.index_of(h.site, h.pos)) {
        let r = g.cell_rect(row, col);
        cell_painter.rect_filled(Rect::from_x_y_ranges(g.cells.x_range(), r.y_range()), 0.0, theme::HOVER.gamma_multiply(0.35));
        cell_painter.rect_filled(Rect::from_x_y_ranges(r.x_range(), g.cells.y_range()), 0.0, theme::HOVER.gamma_multiply(0.35));
        cell_painter.rect_stroke(r, 0.0, Stroke::new(1.5, theme::HOVER), egui::StrokeKind::Inside);
    }
    if let Some((row, col)) = state.selection.and_then(|s| vm.index_of(s.site, s.pos)) {
        cell_painter.rect_stroke(g.cell_rect(row, col), 0.0, Stroke::new(2.5, theme::SELECTION), egui::StrokeKind::Inside);
    }
}

/// The row labels (every one that fits, and the hovered row's).
fn paint_row_labels(painter: &egui::Painter, g: &GridLayout, vm: &ViewModel, state: &AppState) {
    let (rows, _) = g.visible();
    let label_painter = painter.with_clip_rect(Rect::from_min_max(Pos2::new(g.full.left(), g.cells.top()), Pos2::new(g.cells.left(), g.cells.bottom())));
    let label_font = FontId::proportional(g.ch.clamp(8.0, 12.0) * 0.9);
    let row_stride = ((11.0 / g.ch).ceil() as usize).max(1);
    for row in rows {
        let Some(label) = vm.row_labels.get(row) else { continue };
        let is_hover = state.hover.is_some_and(|h| vm.rows.get(row) == Some(&h.site));
        if row % row_stride != 0 && !is_hover {
            continue;
        }
        let color = if is_hover { theme::TEXT } else { theme::DIM_TEXT };
        // A row the decoder did not transport says so beside its name.
        let label = if vm.greyed.get(row).copied().unwrap_or(false) { format!("{label} (as is)") } else { label.clone() };
        label_painter.text(Pos2::new(g.cells.left() - 4.0, g.cell_rect(row, 0).center().y), Align2::RIGHT_CENTER, label, label_font.clone(), color);
    }
}

/// The token strips: true next tokens on top (`*` where the final top-1 is right), input tokens
/// below, tilted.
fn paint_token_strips(painter: &egui::Painter, g: &GridLayout, vm: &ViewModel, state: &AppState, place: Placement) {
    let (_, cols) = g.visible();
    let (cells, full) = (g.cells, g.full);
    let top_area = Rect::from_min_max(Pos2::new(cells.left(), full.top()), Pos2::new(cells.right(), cells.top()));
    let bottom_area =
        Rect::from_min_max(Pos2::new(cells.left() - 30.0, cells.bottom()), Pos2::new(full.right(), (cells.bottom() + g.bottom_h).min(full.bottom())));
    let top_painter = painter.with_clip_rect(top_area.expand2(Vec2::new(0.0, 0.0)));
    let bottom_painter = painter.with_clip_rect(bottom_area);
    let tok_font = FontId::monospace(11.0);
    let col_stride = ((13.0 / g.cw).ceil() as usize).max(1);
    let angle = std::f32::consts::FRAC_PI_4;
    for col in cols {
        let is_hover = state.hover.is_some_and(|h| vm.cols.get(col) == Some(&h.pos));
        let is_sel = state.selection.is_some_and(|h| vm.cols.get(col) == Some(&h.pos));
        if col % col_stride != 0 && !is_hover && !is_sel {
            continue;
        }
        let x = g.cell_rect(0, col).center().x;
        if let Some(text) = vm.input_labels.get(col).filter(|_| place.bottom_strip) {
            let color = if is_hover || is_sel { theme::TEXT } else { theme::DIM_TEXT };
            let galley = bottom_painter.layout_no_wrap(clip_chars(text, 16), tok_font.clone(), color);
            bottom_painter.add(Shape::Text(TextShape::new(Pos2::new(x - 3.0, cells.bottom() + 3.0), galley, color).with_angle(angle)));
        }
        if let Some((text, star)) = vm.next_labels.get(col).filter(|_| place.top_strip) {
            if text.is_empty() {
                continue;
            }
            let color = if *star {
                theme::CORRECT
            } else if is_hover || is_sel {
                theme::TEXT
            } else {
                theme::DIM_TEXT
            };
            let shown = if *star { format!("{}*", clip_chars(text, 12)) } else { clip_chars(text, 12) };
            let galley = top_painter.layout_no_wrap(shown, tok_font.clone(), color);
            let h = galley.size().y;
            // Rotated −45° around its top-left corner; start so that the text ends above the column.
            let start = Pos2::new(x - 4.0 - h * 0.7, cells.top() - 3.0 - h * 0.7);
            top_painter.add(Shape::Text(TextShape::new(start, galley, color).with_angle(-angle)));
        }
    }
}

/// Scroll indicators where the content is larger than the window.
fn paint_scroll_bars(painter: &egui::Painter, g: &GridLayout) {
    let (cells, content, scroll) = (g.cells, g.content, g.scroll);
    if g.max_scroll.x > 0.0 {
        let frac = cells.width() / content.x;
        let x0 = cells.left() + cells.width() * (scroll.x / content.x);
        painter.rect_filled(Rect::from_min_size(Pos2::new(x0, cells.bottom() + 1.0), Vec2::new(cells.width() * frac, 2.0)), 1.0, theme::SCROLL);
    }
    if g.max_scroll.y > 0.0 {
        let frac = cells.height() / content.y;
        let y0 = cells.top() + cells.height() * (scroll.y / content.y);
        painter.rect_filled(Rect::from_min_size(Pos2::new(cells.right() + 1.0, y0), Vec2::new(2.0, cells.height() * frac)), 1.0, theme::SCROLL);
    }
}

fn clip_chars(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

fn cell_tooltip(ui: &mut Ui, vm: &ViewModel, panel: &PanelModel, h: Cell) {
    let Some((row, col)) = vm.index_of(h.site, h.pos) else { return };
    let i = row * vm.cols.len() + col;
    let site = vm.row_labels.get(row).map_or("", String::as_str);
    let tok = vm.input_labels.get(col).map_or("", String::as_str);
    ui.label(format!("site {site} · position {} ({tok})", h.pos));
    if vm.greyed.get(row).copied().unwrap_or(false) {
        ui.label("not transported: the decoder has nothing for this row (the J-lens's embeddings, sub-blocks, unfitted layers), so it is decoded as it is — the logit lens's readout");
    }
    if let Some(v) = panel.values.get(i).filter(|v| v.is_finite()) {
        ui.label(format!("{}: {v:.4} {}", panel.title, panel.scale.unit));
    }
    if let Some(l) = vm.panels.first().and_then(|p| p.labels.get(i)) {
        ui.label(format!("top-1: {l}"));
    }
}

/// Paints nothing but a hint when there is no result yet.
pub fn empty_hint(ui: &mut Ui, text: &str) {
    ui.centered_and_justified(|ui| ui.label(egui::RichText::new(text).color(theme::DIM_TEXT)));
}
