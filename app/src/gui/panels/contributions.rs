//! Sub-block contributions: the direct logit attribution of the embedding, every attention and
//! every MLP sub-block (and the LN bias) to a target token, as a bar chart for the selected
//! position and as a components × positions heatmap; beside it, when computed, gradient × activation
//! as a sites × positions heatmap (the first-order estimate of patching each residual).

use egui::{Align2, FontId, Pos2, Rect, RichText, Sense, Stroke, Ui, Vec2};
use egui_plot::{Bar, BarChart, Plot};
use lens_model::grid::Grid;

use crate::gui::command::AppCommand;
use crate::gui::state::{AppState, Cell, ContribTarget};
use crate::gui::theme;
use crate::gui::view::{token_display, visible_positions_of};

/// The attribution grid for the target // [component][pos], NaN where unknown.
pub fn attribution_grid(state: &AppState) -> Option<(Grid<f64>, &'static str)> {
    let res = state.result.as_ref()?;
    let a = &res.report.attribution;
    Some(match state.view.contrib_target {
        ContribTarget::FinalTop1 => (a.final_top1.clone(), "final top-1"),
        ContribTarget::Next => {
            (Grid::from_fn(a.next.n_rows(), a.next.n_cols(), |c, p| a.next.get(c, p).copied().flatten().unwrap_or(f64::NAN)), "true next token")
        }
        ContribTarget::Pinned => match &res.pinned_dla {
            Some(g) => (g.clone(), "pinned token"),
            None => (a.final_top1.clone(), "final top-1 (nothing pinned)"),
        },
    })
}

/// Gradient × activation for the target // [site][pos], NaN where unknown; `None` when the
/// result has none.
pub fn grad_x_act_grid(state: &AppState) -> Option<Grid<f64>> {
    let g = state.result.as_ref()?.report.gradient_x_activation.as_ref()?;
    Some(match state.view.contrib_target {
        ContribTarget::Next => Grid::from_fn(g.next.n_rows(), g.next.n_cols(), |s, p| g.next.get(s, p).copied().flatten().unwrap_or(f64::NAN)),
        ContribTarget::FinalTop1 | ContribTarget::Pinned => g.final_top1.clone(),
    })
}

fn bar_color(name: &str) -> egui::Color32 {
    if name.ends_with(".attn") {
        theme::BAR_ATTN
    } else if name.ends_with(".mlp") {
        theme::BAR_MLP
    } else {
        theme::BAR_OTHER
    }
}

/// Shows the contributions panel.
pub fn contributions_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let Some(res) = state.result.as_ref() else {
        ui.label(RichText::new("Sub-block contributions appear after a run.").color(theme::DIM_TEXT));
        return;
    };
    let r = &res.report;
    if r.attribution.components.is_empty() {
        // A report of an engine that does not read the sub-block outputs back (nnsight, for now).
        let engine = r.run.engine.as_ref().map_or_else(|| "its engine".to_string(), |e| format!("the {} engine", e.name));
        ui.label(RichText::new(format!("This report has no sub-block contributions: {engine} did not compute them.")).color(theme::DIM_TEXT));
        return;
    }
    let vocab = state.model.as_ref().map(|m| m.vocab.as_slice()).unwrap_or_default();
    let comps = &r.attribution.components;
    let pos = state.selection.or(state.hover).map_or(r.n_pos().saturating_sub(1), |c| c.pos);
    let Some((grid, what)) = attribution_grid(state) else { return };
    let target_id = match state.view.contrib_target {
        ContribTarget::FinalTop1 => r.attribution.final_top1_ids.get(pos).copied(),
        ContribTarget::Next => r.tokens.get(pos + 1).map(|t| t.id),
        ContribTarget::Pinned => r.pinned.as_ref().and_then(|p| p.tokens.first()).map(|t| t.id).or_else(|| r.attribution.final_top1_ids.get(pos).copied()),
    };
    let target_text = target_id.map(|id| token_display(r, vocab, id)).unwrap_or_else(|| "—".into());
    let total: f64 = grid.iter().filter_map(|row| row.get(pos)).filter(|v| v.is_finite()).sum();
    ui.horizontal(|ui| {
        ui.strong("Sub-block contributions (direct logit attribution) to");
        let mut v = state.view.clone();
        ui.selectable_value(&mut v.contrib_target, ContribTarget::FinalTop1, "final top-1");
        ui.selectable_value(&mut v.contrib_target, ContribTarget::Next, "next token");
        ui.selectable_value(&mut v.contrib_target, ContribTarget::Pinned, "pinned token");
        if v != state.view {
            cmds.push(AppCommand::SetView(v));
        }
        // Before the position's text, which is cut where the panel is narrow.
        if r.gradient_x_activation.is_none() && r.run.engine.is_none() && state.report_file.is_none() {
            ui.separator();
            if ui
                .button("Gradient × activation")
                .on_hover_text("Computes ⟨∂ logit / ∂ residual, residual⟩ per site and position through the model's backward graph: the first-order estimate of patching each residual")
                .clicked()
            {
                cmds.push(AppCommand::ComputeGradXAct);
            }
            ui.separator();
        }
        let sum = if res.report.model.final_softcap.is_some() { "sum = the logit before the soft cap" } else { "sum = logit" };
        ui.label(format!("· position {pos}: {target_text} ({what}); {sum} {total:.2}"));
    });
    let gxa = grad_x_act_grid(state);
    let h = ui.available_height();
    ui.horizontal_top(|ui| {
        let start = ui.cursor().left();
        // The width that is seen (the panel may extend under the inspector). With gradient ×
        // activation beside the attribution the bars give up room for both.
        let visible = (ui.clip_rect().right() - ui.cursor().left()).clamp(200.0, ui.available_width().max(200.0));
        let w = if gxa.is_some() { (visible * 0.24).max(150.0) } else { (ui.available_width() * 0.38).max(200.0) };
        ui.allocate_ui(Vec2::new(w, h), |ui| {
            let bars: Vec<Bar> = comps
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let v = grid.get(i, pos).copied().filter(|v| v.is_finite())?;
                    Some(Bar::new(i as f64, v).name(name).fill(bar_color(name)).width(0.8))
                })
                .collect();
            let names = comps.clone();
            Plot::new("contrib_bars")
                .height(h - 6.0)
                .allow_scroll(false)
                .allow_zoom(false)
                .allow_drag(false)
                .y_axis_label("logit")
                // A mark under every bar; egui_plot labels the coarsest steps that fit (every 8th,
                // 4th, 2nd bar or all, as the width allows). Hovering a bar names it.
                .x_grid_spacer(move |input| {
                    let (lo, hi) = (input.bounds.0.ceil().max(0.0) as usize, input.bounds.1.floor().max(0.0) as usize);
                    let step = |i: usize| [8usize, 4, 2].into_iter().find(|s| i.is_multiple_of(*s)).unwrap_or(1) as f64;
                    (lo..=hi).map(|i| egui_plot::GridMark { value: i as f64, step_size: step(i) }).collect()
                })
                .x_axis_formatter(move |m, _| {
                    let v = m.value;
                    if (v - v.round()).abs() < 1e-6 && v >= 0.0 { names.get(v.round() as usize).cloned().unwrap_or_default() } else { String::new() }
                })
                .show(ui, |p| p.bar_chart(BarChart::new("attribution", bars)));
        });
        ui.separator();
        match &gxa {
            None => {
                let w = (visible - (ui.cursor().left() - start)).max(240.0);
                let h = ui.available_height();
                ui.allocate_ui(Vec2::new(w, h), |ui| heatmap(ui, state, &grid, comps, cmds));
            }
            Some(g) => {
                // The attribution and gradient × activation side by side, each with its title.
                let w = ((visible - (ui.cursor().left() - start)) - 12.0).max(240.0) / 2.0;
                let h = ui.available_height();
                ui.allocate_ui(Vec2::new(w, h), |ui| {
                    ui.vertical(|ui| {
                        ui.label(RichText::new("direct logit attribution (components)").small().color(theme::DIM_TEXT));
                        heatmap(ui, state, &grid, comps, cmds);
                    });
                });
                ui.separator();
                ui.allocate_ui(Vec2::new(w, h), |ui| {
                    ui.vertical(|ui| {
                        let note = if state.view.contrib_target == ContribTarget::Pinned { " (final top-1: none for the pin)" } else { "" };
                        ui.label(RichText::new(format!("gradient × activation (sites){note}")).small().color(theme::DIM_TEXT));
                        heatmap(ui, state, g, &r.sites, cmds);
                    });
                });
            }
        }
    });
}

/// Components × positions heatmap (diverging colours, symmetric around 0).
fn heatmap(ui: &mut Ui, state: &AppState, grid: &[Vec<f64>], comps: &[String], cmds: &mut Vec<AppCommand>) {
    let Some(res) = state.result.as_ref() else { return };
    let cols = visible_positions_of(&res.report, &state.view);
    let avail = ui.available_rect_before_wrap();
    let (full, resp) = ui.allocate_exact_size(avail.size().max(Vec2::new(100.0, 60.0)), Sense::click());
    let label_w = 52.0;
    // Bottom strip: the position axis.
    let axis_h = 14.0;
    let cells = Rect::from_min_max(Pos2::new(full.left() + label_w, full.top() + 2.0), Pos2::new(full.right() - 70.0, full.bottom() - 4.0 - axis_h));
    let n_rows = comps.len().max(1);
    let cw = crate::gui::panels::heatmap::cell_size(&state.view, cells.size(), n_rows, cols.len(), false).0;
    let ch = (cells.height() / n_rows as f32).clamp(3.0, 24.0);
    let scroll_x = state.scroll.x.clamp(0.0, (cols.len() as f32 * cw - cells.width()).max(0.0));
    let max_abs = grid.iter().flat_map(|r| cols.iter().filter_map(move |&p| r.get(p))).filter(|v| v.is_finite()).fold(0.0f64, |a, &v| a.max(v.abs())).max(1e-9);
    let painter = ui.painter_at(full);
    let cp = painter.with_clip_rect(cells);
    let col_lo = (scroll_x / cw).floor() as usize;
    let col_hi = (((scroll_x + cells.width()) / cw).ceil() as usize).min(cols.len());
    let mut mesh = egui::Mesh::default();
    // Embed at the bottom, like the lens grids (unless flipped).
    let row_y = |i: usize| if state.view.flip { i } else { n_rows - 1 - i };
    for (i, row) in grid.iter().enumerate() {
        for c in col_lo..col_hi {
            let Some(&p) = cols.get(c) else { continue };
            let v = row.get(p).copied().unwrap_or(f64::NAN);
            let r = Rect::from_min_size(Pos2::new(cells.left() + c as f32 * cw - scroll_x, cells.top() + row_y(i) as f32 * ch), Vec2::new(cw, ch));
            mesh.add_colored_rect(r, theme::diverging(v, max_abs));
        }
    }
    cp.add(egui::Shape::mesh(mesh));
    let sel = state.selection.or(state.hover).map(|c| c.pos);
    if let Some(c) = sel.and_then(|p| cols.iter().position(|&q| q == p)) {
        let x = cells.left() + c as f32 * cw - scroll_x;
        cp.rect_stroke(
            Rect::from_min_size(Pos2::new(x, cells.top()), Vec2::new(cw, ch * n_rows as f32)),
            0.0,
            Stroke::new(2.0, theme::SELECTION),
            egui::StrokeKind::Inside,
        );
    }
    let stride = ((10.0 / ch).ceil() as usize).max(1);
    for (i, name) in comps.iter().enumerate() {
        if i % stride == 0 || i + 1 == comps.len() {
            painter.text(
                Pos2::new(cells.left() - 4.0, cells.top() + (row_y(i) as f32 + 0.5) * ch),
                Align2::RIGHT_CENTER,
                name,
                FontId::proportional(ch.clamp(7.0, 11.0)),
                theme::DIM_TEXT,
            );
        }
    }
    // Position axis: the positions' indices, as many as fit (the selected one always).
    let col_stride = ((26.0 / cw).ceil() as usize).max(1);
    let axis = painter.with_clip_rect(Rect::from_min_max(Pos2::new(cells.left() - 6.0, cells.bottom()), Pos2::new(cells.right() + 6.0, full.bottom())));
    for c in col_lo..col_hi {
        let Some(&p) = cols.get(c) else { continue };
        let selected = sel == Some(p);
        if c % col_stride != 0 && !selected {
            continue;
        }
        let x = cells.left() + (c as f32 + 0.5) * cw - scroll_x;
        let color = if selected { theme::TEXT } else { theme::DIM_TEXT };
        axis.text(Pos2::new(x, cells.bottom() + 2.0), Align2::CENTER_TOP, p.to_string(), FontId::proportional(9.0), color);
    }
    painter.text(Pos2::new(cells.left() - 4.0, cells.bottom() + 2.0), Align2::RIGHT_TOP, "pos", FontId::proportional(9.0), theme::DIM_TEXT);
    // Legend.
    let lx = cells.right() + 8.0;
    for k in 0..=8 {
        let t = k as f64 / 8.0;
        let r =
            Rect::from_min_size(Pos2::new(lx, cells.top() + (1.0 - t as f32) * (cells.height() - 10.0)), Vec2::new(10.0, (cells.height() - 10.0) / 8.0 + 1.0));
        painter.rect_filled(r, 0.0, theme::diverging((t * 2.0 - 1.0) * max_abs, max_abs));
    }
    painter.text(Pos2::new(lx + 13.0, cells.top()), Align2::LEFT_TOP, format!("+{max_abs:.2}"), FontId::proportional(9.0), theme::DIM_TEXT);
    painter.text(Pos2::new(lx + 13.0, cells.bottom() - 10.0), Align2::LEFT_BOTTOM, format!("−{max_abs:.2}"), FontId::proportional(9.0), theme::DIM_TEXT);
    painter.text(Pos2::new(lx + 13.0, cells.center().y), Align2::LEFT_CENTER, "logit", FontId::proportional(9.0), theme::DIM_TEXT);
    if resp.clicked()
        && let Some(pt) = resp.interact_pointer_pos().filter(|p| cells.contains(*p))
    {
        let c = ((pt.x - cells.left() + scroll_x) / cw).floor() as usize;
        if let Some(&p) = cols.get(c) {
            let site = state.selection.map_or(res.report.sites.len().saturating_sub(1), |s| s.site);
            cmds.push(AppCommand::Select(Some(Cell { site, pos: p })));
        }
    }
}
