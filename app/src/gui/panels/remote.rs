//! File → Open remote model…: the lens of the prompt computed by nnsight (on this machine or on
//! NDIF), shown without its model.

use egui::{RichText, Ui};

use crate::gui::command::AppCommand;
use crate::gui::state::AppState;
use crate::gui::theme;

/// Shows the Open remote model window.
pub fn remote_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let mut s = state.remote.clone();
    ui.label("nnsight runs the model in a Python environment with torch and nnsight; the lens is reduced where the model runs and only its rows come back. The prompt is the one in the prompt box.");
    egui::Grid::new("remote_grid").num_columns(2).show(ui, |ui| {
        ui.label("Model");
        ui.add(egui::TextEdit::singleline(&mut s.model).hint_text("a Hugging Face folder or org/name").desired_width(300.0));
        ui.end_row();
        ui.label("Python");
        ui.add(egui::TextEdit::singleline(&mut s.python).hint_text("LOGIT_LENS_PYTHON, else python3").desired_width(300.0));
        ui.end_row();
        ui.label("Where");
        ui.checkbox(&mut s.ndif, "on NDIF (NDIF_API_KEY in the environment)");
        ui.end_row();
    });
    if s != state.remote {
        cmds.push(AppCommand::SetRemote(s.clone()));
    }
    ui.separator();
    match &state.remote_running {
        Some((_, status)) => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("nnsight: {status}"));
                if ui.button("Cancel").clicked() {
                    cmds.push(AppCommand::CancelRemote);
                }
            });
        }
        None => {
            let ready = !s.model.trim().is_empty() && !state.prompt.is_empty();
            let run = ui.add_enabled(ready, egui::Button::new("Run the lens on nnsight"));
            if run.on_disabled_hover_text("Give a model and a prompt").clicked() {
                cmds.push(AppCommand::RunRemote);
            }
            ui.label(RichText::new("No contributions (DLA) from nnsight yet; NDIF itself is untested.").color(theme::DIM_TEXT));
        }
    }
}
