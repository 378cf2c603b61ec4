//! The menu bar and the keyboard shortcuts: they only emit commands.

#[allow(clippy::wildcard_imports)]
use super::*;

impl LogitLensApp {
    pub(super) fn shortcuts(&mut self, ui: &mut Ui) {
        let (model, prompt, run, export) = ui.input_mut(|i| {
            let model = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::O));
            let prompt = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::O));
            let run = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter));
            let export = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::E));
            (model, prompt, run, export)
        });
        if export {
            self.cmds.push(AppCommand::ShowExport);
        }
        if model {
            self.cmds.push(AppCommand::RequestModelDialog);
        }
        if prompt {
            self.cmds.push(AppCommand::RequestPromptDialog);
        }
        if run {
            self.cmds.push(AppCommand::Run);
        }
        let typing = ui.ctx().memory(|m| m.focused().is_some());
        let (esc, moves) = ui.input(|i| {
            let mut moves = Vec::new();
            if !typing {
                for (k, dc, dr) in [(Key::ArrowLeft, -1, 0), (Key::ArrowRight, 1, 0), (Key::ArrowUp, 0, -1), (Key::ArrowDown, 0, 1)] {
                    if i.key_pressed(k) {
                        moves.push(AppCommand::MoveSelection(dc, dr));
                    }
                }
            }
            (i.key_pressed(Key::Escape), moves)
        });
        self.cmds.extend(moves);
        if esc && self.state.pinned.is_some() {
            self.cmds.push(AppCommand::Unpin);
        }
        let dropped: Vec<PathBuf> = ui.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect());
        for p in dropped {
            self.cmds.push(if p.is_dir() { AppCommand::OpenModel(p) } else { AppCommand::OpenPromptFile(p) });
        }
    }

    pub(super) fn menu(&mut self, ui: &mut Ui) {
        let cmds = &mut self.cmds;
        let state = &mut self.state;
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.add(egui::Button::new("Open prompt…").shortcut_text("Ctrl+O")).clicked() {
                    cmds.push(AppCommand::RequestPromptDialog);
                }
                if ui.add(egui::Button::new("Open model…").shortcut_text("Ctrl+Shift+O")).clicked() {
                    cmds.push(AppCommand::RequestModelDialog);
                }
                if ui.button("Open Hugging Face model…").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::OpenHubId));
                }
                if ui
                    .button("Open report…")
                    .on_hover_text("A lens report, comparison or corpus report (JSON) shown without its model: no model is loaded, nothing runs")
                    .clicked()
                {
                    cmds.push(AppCommand::RequestReportDialog);
                }
                ui.menu_button("Recent prompts", |ui| {
                    if state.recent_prompts.is_empty() {
                        ui.label("none");
                    }
                    for p in &state.recent_prompts {
                        if ui.button(p.display().to_string()).clicked() {
                            cmds.push(AppCommand::OpenPromptFile(p.clone()));
                        }
                    }
                });
                ui.menu_button("Recent models", |ui| {
                    if state.recent_models.is_empty() {
                        ui.label("none");
                    }
                    for m in &state.recent_models {
                        if ui.button(m.label()).on_hover_text(m.hover_text()).clicked() {
                            cmds.push(AppCommand::OpenModel(m.source.clone()));
                        }
                    }
                });
                ui.separator();
                if ui
                    .add_enabled(state.model.is_some(), egui::Button::new("Open tuned lens…"))
                    .on_hover_text(
                        "A tuned-lens folder (config.json + params.pt or params.safetensors) made for this model; decodes every site through its translator",
                    )
                    .clicked()
                {
                    cmds.push(AppCommand::RequestTunedLensDialog);
                }
                if ui.add_enabled(state.model.is_some(), egui::Button::new("Fit tuned lens…")).clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::FitLens));
                }
                if ui
                    .add_enabled(state.model.is_some(), egui::Button::new("Fit J-lens…"))
                    .on_hover_text("Fit a J-lens of this model on your prompts through its backward graph (the reference estimator), and decode with it")
                    .clicked()
                {
                    cmds.push(AppCommand::ShowWindow(Window::FitJlens));
                }
                if ui
                    .add_enabled(state.model.is_some(), egui::Button::new("Open J-lens…"))
                    .on_hover_text("A J-lens file (.pt, as TransformerLens's JacobianLens.save writes it) made for this model; decodes each block output through its layer's transport matrix")
                    .clicked()
                {
                    cmds.push(AppCommand::RequestJacobianLensDialog);
                }
                if ui
                    .button("Open remote model… (nnsight)")
                    .on_hover_text("Run the lens of the prompt in a Python environment with nnsight, on this machine or on NDIF, for models too large to open here; the report is shown without its model")
                    .clicked()
                {
                    cmds.push(AppCommand::ShowWindow(Window::Remote));
                }
                let published = state.model.as_ref().and_then(|m| m.published_jlens.clone());
                let fetch = ui
                    .add_enabled(published.is_some(), egui::Button::new(match &published {
                        Some(name) => format!("Fetch published J-lens ({name})"),
                        None => "Fetch published J-lens".to_string(),
                    }))
                    .on_hover_text("The J-lens published for this model (neuronpedia/jacobian-lens on the Hugging Face hub), downloaded into the Hugging Face cache once")
                    .on_disabled_hover_text("No J-lens is published for this model (the published ones are for Gemma 2/3/4, Qwen 2.5–3.5, Llama 3.x, GPT-2, Pythia, OLMo 3 and gpt-oss, opened by their hub id)");
                if fetch.clicked() {
                    cmds.push(AppCommand::OpenJacobianLens(std::path::PathBuf::from(crate::session::engine::PUBLISHED)));
                }
                ui.separator();
                if ui.add(egui::Button::new("Export figure…").shortcut_text("Ctrl+E")).clicked() {
                    cmds.push(AppCommand::ShowExport);
                }
                if ui.button("Export data… (JSON / CSV / NPZ)").clicked() {
                    cmds.push(AppCommand::RequestExportDataDialog);
                }
                ui.separator();
                if ui.add(egui::Button::new("Quit").shortcut_text("Ctrl+Q")).clicked() {
                    cmds.push(AppCommand::Quit);
                }
            });
            ui.menu_button("View", |ui| {
                let mut v = state.view.clone();
                ui.checkbox(&mut v.show_inspector, "Inspector");
                ui.checkbox(&mut v.show_contributions, "Sub-block contributions");
                ui.separator();
                ui.radio_value(&mut v.layout, PanelLayout::Tabs, "Panels as tabs");
                ui.radio_value(&mut v.layout, PanelLayout::SideBySide, "Panels side by side");
                ui.radio_value(&mut v.layout, PanelLayout::Stacked, "Panels stacked");
                ui.separator();
                ui.checkbox(&mut v.subblocks, "Sub-block rows (.attn)");
                ui.checkbox(&mut v.flip, "Input on top");
                ui.checkbox(&mut v.show_depth, "Prediction depth");
                if ui.button("Corpus…").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::Corpus));
                }
                if ui
                    .button("Activation patching…")
                    .on_hover_text("Put the prompt's (clean) activations into a corrupted prompt, site by site and position by position")
                    .clicked()
                {
                    cmds.push(AppCommand::ShowWindow(Window::Patch));
                }
                if ui.button("Steering…").on_hover_text("Add a vector to one block's output at every position; the lens of the steered run").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::Steer));
                }
                ui.menu_button("Colour map", |ui| {
                    for c in theme::ColorMap::ALL {
                        ui.radio_value(&mut v.colormap, c, c.name());
                    }
                });
                ui.menu_button("Decoder", |ui| {
                    for d in lens_model::lens::kernel::DecoderKind::ALL {
                        crate::gui::panels::prompt::decoder_option(ui, &mut v.decoder, d, state);
                    }
                });
                ui.menu_button("Top-k", |ui| {
                    for k in [5, 10, 20] {
                        ui.radio_value(&mut v.top_k, k, k.to_string());
                    }
                });
                ui.separator();
                if ui.button("Reset view").clicked() {
                    v = crate::gui::state::ViewSettings::default();
                }
                if v != state.view {
                    cmds.push(AppCommand::SetView(v));
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard shortcuts").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::Shortcuts));
                }
                if ui.button("About logit-lens").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::About));
                }
            });
        });
    }
}
