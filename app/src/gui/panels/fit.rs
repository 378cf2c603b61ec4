//! The Fit tuned lens window: training text, output folder, steps and tokens per step; Fit (or
//! Resume a checkpoint); the loss of every translator as it trains (progress and Cancel in the
//! status bar).

use egui::{RichText, Ui};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::gui::command::AppCommand;
use crate::gui::state::AppState;
use crate::gui::theme;

/// The label of translator `i` (the site it reads): `embed`, then block outputs `0`, `1`, ….
fn translator_label(i: usize) -> String {
    if i == 0 { "embed".into() } else { (i - 1).to_string() }
}

/// The window's contents.
pub fn fit_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let busy = state.progress.is_some();
    let mut f = state.fit.clone();
    let name = |p: &Option<std::path::PathBuf>| p.as_ref().map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
    egui::Grid::new("fit_settings").num_columns(3).show(ui, |ui| {
        ui.label("Training text");
        ui.label(name(&f.text));
        if ui.button("Choose…").clicked() {
            cmds.push(AppCommand::RequestFitTextDialog);
        }
        ui.end_row();
        ui.label("Lens folder");
        ui.label(name(&f.out));
        if ui.button("Choose…").clicked() {
            cmds.push(AppCommand::RequestFitOutDialog);
        }
        ui.end_row();
        let steps = ui.label("Steps");
        ui.add(egui::DragValue::new(&mut f.steps).range(1..=100_000)).labelled_by(steps.id);
        ui.end_row();
        let tokens = ui.label("Tokens per step");
        ui.add(egui::DragValue::new(&mut f.tokens).range(16..=1_000_000).speed(16.0)).labelled_by(tokens.id);
        ui.end_row();
    });
    // The CLI's overwrite guard: a lens already in the folder is replaced only when asked; a
    // model folder is never an output folder (the fit refuses it too).
    let has_lens = f.out.as_ref().is_some_and(|o| lens_model::lens::tuned_lens::fit::holds_lens(o));
    let model_folder = f.out.as_ref().is_some_and(|o| lens_model::lens::tuned_lens::fit::is_model_folder(o));
    if model_folder {
        ui.label(RichText::new("This folder holds a model: choose another folder for the lens.").color(theme::WARN));
    } else if has_lens {
        ui.checkbox(&mut f.replace, "Replace the lens already in this folder");
    }
    if f != state.fit {
        cmds.push(AppCommand::SetFit(f.clone()));
    }
    let ready = !busy && state.model.is_some() && f.text.is_some() && f.out.is_some() && !model_folder && (!has_lens || f.replace);
    let checkpoint = f.out.as_ref().is_some_and(|o| lens_model::lens::tuned_lens::fit::has_checkpoint(o));
    ui.horizontal(|ui| {
        if ui
            .add_enabled(ready, egui::Button::new("Fit"))
            .on_hover_text("Train one affine translator per layer so that each site decodes to the model's final distribution (tuned-lens's objective and optimiser); saved as config.json + params.pt")
            .clicked()
        {
            cmds.push(AppCommand::StartFit { resume: false });
        }
        if ui.add_enabled(ready && checkpoint, egui::Button::new("Resume")).on_hover_text("Continue the unfinished fit checkpointed in the lens folder").clicked() {
            cmds.push(AppCommand::StartFit { resume: true });
        }
        if let Some(s) = state.fit_history.last() {
            ui.label(format!("step {}/{} · {:.1} s", s.step, s.steps, s.elapsed_s));
        }
    });
    ui.label(
        RichText::new("KL(final ‖ lens) of each translator on its training batch, nats. Cancel (status bar) keeps a checkpoint to resume.")
            .small()
            .color(theme::DIM_TEXT),
    );
    if state.fit_history.is_empty() {
        return;
    }
    let n = state.fit_history.iter().map(|s| s.loss.len()).max().unwrap_or(0);
    Plot::new("fit_plot").legend(Legend::default()).x_axis_label("step").y_axis_label("KL, nats").height(ui.available_height().max(160.0)).show(ui, |p| {
        for i in 0..n {
            let pts: Vec<[f64; 2]> = state.fit_history.iter().filter_map(|s| s.loss.get(i).map(|&l| [s.step as f64, l])).collect();
            // Colour by depth (embed dark → last translator bright): more translators than the
            // run palette has colours, and depth is what tells them apart.
            let t = 0.2 + 0.8 * i as f32 / n.saturating_sub(1).max(1) as f32;
            p.line(Line::new(translator_label(i), PlotPoints::from(pts)).color(theme::ColorMap::Viridis.at(t)).width(1.5));
        }
    });
}
