//! The Activation patching window: the app's prompt (clean) put into a corrupted prompt, one site
//! and position at a time; the effect on `logit(target) − logit(against)` as a heatmap. Clicking a
//! cell compares the app's run with that patched run (A | patched | A − B in every lens panel).

use egui::{Align2, Color32, FontId, Pos2, Rect, RichText, Sense, Stroke, Ui, Vec2};
use lens_model::analyses::patch::{PatchKind, PatchReport};

use crate::gui::command::AppCommand;
use crate::gui::state::AppState;
use crate::gui::theme;
use crate::session::compare::PatchCell;
use crate::session::worker::CompareWith;

/// The window's contents.
pub fn patch_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let mut s = state.patch.clone();
    ui.label(RichText::new("Clean run: the prompt above. The corrupted prompt must have the same number of tokens.").color(theme::DIM_TEXT));
    ui.horizontal(|ui| {
        let label = ui.label("Corrupted");
        ui.add(egui::TextEdit::singleline(&mut s.corrupt).hint_text("e.g. the prompt with one name changed").desired_width(460.0)).labelled_by(label.id);
        if let Some(CompareWith::Prompt(p)) = &state.compare
            && ui.button("use Compare's prompt").on_hover_text("The prompt B of the comparison").clicked()
        {
            s.corrupt.clone_from(p);
        }
    });
    ui.horizontal(|ui| {
        let label = ui.label("Target");
        ui.add(egui::TextEdit::singleline(&mut s.target).hint_text("\" Paris\"").desired_width(110.0)).labelled_by(label.id);
        let label = ui.label("against");
        ui.add(egui::TextEdit::singleline(&mut s.against).hint_text("(none: log p)").desired_width(110.0))
            .labelled_by(label.id)
            .on_hover_text("The metric is logit(target) − logit(against); without one, log p(target). Each one token, with its leading space where it has one");
        ui.separator();
        for k in PatchKind::ALL {
            ui.radio_value(&mut s.kind, k, k.name()).on_hover_text(match k {
                PatchKind::Resid => "The residual stream: the embeddings and every block's output",
                PatchKind::Attn => "Every block's attention output",
                PatchKind::Mlp => "Every block's MLP output",
            });
        }
        ui.checkbox(&mut s.estimate, "estimate")
            .on_hover_text("Also attribution patching's first-order estimate of every cell (the gradient at the corrupted run · (clean − corrupted), one backward run), beside the exact effects");
        ui.separator();
        let ready = state.model.is_some() && state.progress.is_none() && !state.prompt.is_empty() && !s.corrupt.is_empty() && !s.target.is_empty();
        if ui.add_enabled(ready, egui::Button::new("Run sweep")).on_disabled_hover_text("Needs a model, the prompt, a corrupted prompt and a target").clicked()
        {
            cmds.push(AppCommand::SetPatch(s.clone()));
            cmds.push(AppCommand::StartPatch);
        }
    });
    // Completions of the target and against boxes from the vocabulary (as the pin box has them).
    let vocab: &[crate::session::worker::VocabEntry] = state.model.as_ref().map(|m| m.vocab.as_slice()).unwrap_or_default();
    for (what, text) in [("target", &mut s.target), ("against", &mut s.against)] {
        let exact = vocab.iter().any(|e| e.text == *text);
        if !text.is_empty() && !exact {
            let options = crate::gui::panels::prompt::suggestions(vocab, text);
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(format!("{what}:")).color(theme::DIM_TEXT));
                if options.is_empty() {
                    ui.label(RichText::new("not one token of this model").color(theme::DIM_TEXT));
                }
                for e in options {
                    if ui.small_button(RichText::new(crate::view::model::shown(&e.display)).monospace()).on_hover_text(format!("id {}", e.id)).clicked() {
                        text.clone_from(&e.text);
                    }
                }
            });
        }
    }
    if s != state.patch {
        cmds.push(AppCommand::SetPatch(s));
    }
    ui.separator();
    match &state.patch_result {
        None => {
            ui.label(RichText::new("No sweep yet: one patched run per site and position (progress and Cancel in the status bar).").color(theme::DIM_TEXT));
        }
        Some(r) => effect_grid(ui, r, state, cmds),
    }
}

/// The sweep's normalised effects: sites (last layer on top) × positions, diverging about 0; hover
/// for the values, click to compare the app's run with that patched run. With attribution
/// patching's estimate, the estimate beside it on the same scale, and their correlation.
fn effect_grid(ui: &mut Ui, r: &PatchReport, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let Some(g) = r.grids.first() else { return };
    let metric = r.metric_formula();
    ui.label(format!(
        "{}: {metric} · clean {:.3}, corrupted {:.3} · normalised: 1 = clean restored, 0 = corrupted",
        g.kind.name(),
        r.clean_metric,
        r.corrupt_metric
    ));
    let n_pos = r.corrupt_tokens.len();
    let exact = |site: usize, col: usize| g.normalized.get(site, col).copied().unwrap_or(f64::NAN);
    let estimate = g.estimate_normalized(r.clean_metric, r.corrupt_metric);
    let est = |site: usize, col: usize| estimate.as_ref().and_then(|v| v.get(site * n_pos + col)).copied().unwrap_or(f64::NAN);
    match (&estimate, g.estimate_correlation()) {
        (Some(_), r_value) => {
            ui.label(
                RichText::new(format!(
                    "Left: exact (one patched run per cell). Right: first-order estimate, attribution patching (the gradient at the corrupted run · (clean − corrupted), one backward run){}.",
                    r_value.map_or(String::new(), |v| format!(" · correlation r = {v:.2}"))
                ))
                .color(theme::DIM_TEXT),
            );
        }
        (None, _) => {
            if let Some(note) = &state.patch_estimate_note {
                ui.label(RichText::new(note).color(theme::WARN));
            }
        }
    }
    // One colour scale for both: the estimate can overshoot, and that must show.
    let max = (0..g.sites.len())
        .flat_map(|s| (0..n_pos).map(move |p| (s, p)))
        .flat_map(|(s, p)| [exact(s, p), est(s, p)])
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(1e-9);
    let selected = match &state.compare {
        Some(CompareWith::Patched(c)) if c.kind == g.kind => Some((c.site, c.pos)),
        _ => None,
    };
    let avail = ui.available_size();
    let width = if estimate.is_some() { (avail.x - 12.0) / 2.0 } else { avail.x };
    ui.horizontal_top(|ui| {
        let clicked = ui
            .vertical(|ui| {
                ui.label(RichText::new("exact").strong());
                heat(ui, r, &exact, max, width, selected, &|site, col, v| {
                    let e = g.effect.get(site, col).copied().unwrap_or(f64::NAN);
                    let more = if estimate.is_some() { format!("; estimate {:.3}", est(site, col)) } else { String::new() };
                    format!("{} = {e:.4} (normalised {v:.3}{more})\nClick: compare the prompt's run with this patched run", r.metric)
                })
            })
            .inner;
        if let Some((site, col)) = clicked {
            // The corrupted prompt that was swept (the box may have changed since).
            let corrupt = if state.patch_corrupt.is_empty() { state.patch.corrupt.clone() } else { state.patch_corrupt.clone() };
            let cell = PatchCell { corrupt, kind: g.kind, site, pos: col };
            cmds.push(AppCommand::SetCompare(Some(CompareWith::Patched(cell))));
        }
        if let (Some(_), Some(grid)) = (&estimate, &g.estimate) {
            ui.add_space(12.0);
            ui.vertical(|ui| {
                ui.label(RichText::new("first-order estimate").strong());
                heat(ui, r, &est, max, width, selected, &|site, col, v| {
                    let e = grid.get(site, col).copied().unwrap_or(f64::NAN);
                    format!("first-order estimate of {} = {e:.4} (normalised {v:.3}; exact {:.3})", r.metric, exact(site, col))
                });
            });
        }
    });
}

/// One heatmap of the sweep's grid: `value(site, col)` normalised, on `-max..=max`, within
/// `width`; `hover(site, col, value)` is the tooltip. Returns the clicked cell.
fn heat(
    ui: &mut Ui,
    r: &PatchReport,
    value: &dyn Fn(usize, usize) -> f64,
    max: f64,
    width: f32,
    selected: Option<(usize, usize)>,
    hover_text: &dyn Fn(usize, usize, f64) -> String,
) -> Option<(usize, usize)> {
    let g = r.grids.first()?;
    let (n_sites, n_pos) = (g.sites.len(), r.corrupt_tokens.len());
    let label_w = 56.0;
    let avail_y = ui.available_size().y;
    let cw = ((width - label_w - 8.0) / n_pos.max(1) as f32).clamp(8.0, 64.0);
    let ch = ((avail_y - 40.0) / n_sites.max(1) as f32).clamp(10.0, 22.0);
    let size = Vec2::new(label_w + cw * n_pos as f32, ch * n_sites as f32 + 34.0);
    let (rect, resp) = ui.allocate_exact_size(size, Sense::click());
    let painter = ui.painter_at(rect);
    let cell =
        |row: usize, col: usize| Rect::from_min_size(Pos2::new(rect.left() + label_w + col as f32 * cw, rect.top() + row as f32 * ch), Vec2::new(cw, ch));
    let font = FontId::proportional((ch * 0.6).clamp(8.0, 12.0));
    let hover = resp.hover_pos().and_then(|p| {
        let (col, row) = (((p.x - rect.left() - label_w) / cw).floor(), ((p.y - rect.top()) / ch).floor());
        (col >= 0.0 && row >= 0.0 && (col as usize) < n_pos && (row as usize) < n_sites).then_some((row as usize, col as usize))
    });
    for row in 0..n_sites {
        let site = n_sites - 1 - row;
        painter.text(
            Pos2::new(rect.left() + label_w - 4.0, cell(row, 0).center().y),
            Align2::RIGHT_CENTER,
            g.sites.get(site).map_or("", String::as_str),
            font.clone(),
            theme::DIM_TEXT,
        );
        for col in 0..n_pos {
            let v = value(site, col);
            let fill = if v.is_finite() { theme::diverging(v, max) } else { theme::MISSING };
            let c = cell(row, col);
            painter.rect_filled(c.shrink(0.5), 0.0, fill);
            if cw >= 30.0 && ch >= 12.0 && v.is_finite() {
                painter.text(c.center(), Align2::CENTER_CENTER, format!("{v:.2}"), font.clone(), theme::text_on(fill));
            }
            if selected == Some((site, col)) || hover == Some((row, col)) {
                painter.rect_stroke(c.shrink(1.0), 0.0, Stroke::new(1.5, Color32::WHITE), egui::StrokeKind::Inside);
            }
        }
    }
    for (col, t) in r.corrupt_tokens.iter().enumerate() {
        let c = cell(n_sites, col);
        let text: String = t.text.chars().take(((cw / 6.0) as usize).max(2)).collect();
        painter.text(Pos2::new(c.center().x, c.top() + 8.0), Align2::CENTER_CENTER, text, font.clone(), theme::TEXT);
    }
    let (row, col) = hover?;
    let site = n_sites - 1 - row;
    let tok = r.corrupt_tokens.get(col).map_or(String::new(), |t| t.text.clone());
    let text = format!("{} at position {col} ({tok}): {}", g.sites.get(site).map_or("", String::as_str), hover_text(site, col, value(site, col)));
    let resp = resp.on_hover_text_at_pointer(text);
    resp.clicked().then_some((site, col))
}

/// The Steering window: a vector (two prompts' difference, or a `.npy` file) times alpha added to
/// one block's output at every position; the runs are steered while it is on, and greedy
/// continuations with and without it can be generated.
pub fn steer_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let mut s = state.steer.clone();
    let n_layers = state.model.as_ref().map_or(1, |m| m.shape.n_layers).max(1);
    ui.horizontal(|ui| {
        let label = ui.label("Block");
        ui.add(egui::DragValue::new(&mut s.layer).range(0..=n_layers - 1)).labelled_by(label.id);
        let label = ui.label("alpha");
        ui.add(egui::DragValue::new(&mut s.alpha).speed(0.1).range(-100.0..=100.0)).labelled_by(label.id);
    });
    ui.horizontal(|ui| {
        let label = ui.label("A");
        ui.add(egui::TextEdit::singleline(&mut s.a).hint_text("\" happy\"").desired_width(180.0)).labelled_by(label.id);
        let label = ui.label("minus B");
        ui.add(egui::TextEdit::singleline(&mut s.b).hint_text("\" sad\"").desired_width(180.0)).labelled_by(label.id);
    });
    ui.horizontal(|ui| {
        let label = ui.label("or a .npy vector");
        ui.add(egui::TextEdit::singleline(&mut s.file).hint_text("path (used when given)").desired_width(320.0)).labelled_by(label.id);
    });
    ui.label(RichText::new("A − B: the block's output at the last position of A minus B's.").color(theme::DIM_TEXT));
    let ready = s.spec().is_some();
    ui.horizontal(|ui| {
        ui.add_enabled(ready, egui::Checkbox::new(&mut s.enabled, "Steer the runs")).on_disabled_hover_text("Give two prompts (A − B) or a .npy file first");
        let busy = state.progress.is_some() || state.model.is_none();
        if ui
            .add_enabled(ready && !busy, egui::Button::new("Generate 20 tokens"))
            .on_hover_text("Greedy continuations of the prompt, steered and not")
            .clicked()
        {
            cmds.push(AppCommand::SetSteer(s.clone()));
            cmds.push(AppCommand::Generate(20));
        }
    });
    if let Some((steered, plain)) = &state.steer_generated {
        ui.separator();
        ui.label(RichText::new("steered").strong());
        ui.label(steered);
        ui.label(RichText::new("unsteered").strong());
        ui.label(plain);
    }
    if s != state.steer {
        cmds.push(AppCommand::SetSteer(s));
    }
}
