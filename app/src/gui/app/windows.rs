//! The app's windows (Open Hugging Face model, shortcuts, about, export figure).

#[allow(clippy::wildcard_imports)]
use super::*;

impl LogitLensApp {
    pub(super) fn windows(&mut self, ctx: &egui::Context) {
        let mut open_id = self.state.show_open_id;
        let id_text = &mut self.state.open_id_text;
        let recent = &self.state.recent_models;
        let cmds = &mut self.cmds;
        egui::Window::new("Open Hugging Face model").open(&mut open_id).resizable(false).show(ctx, |ui| {
            ui.label("A model id such as Qwen/Qwen2.5-0.5B (optionally @revision): taken from the local Hugging Face cache, or downloaded into it (HF_TOKEN for gated models).");
            ui.horizontal(|ui| {
                let label = ui.label("Id");
                let resp = ui.add(egui::TextEdit::singleline(id_text).hint_text("org/name").desired_width(260.0)).labelled_by(label.id);
                let enter = resp.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                let valid = lens_model::run::resolve::is_hub_id(id_text.trim());
                let clicked = ui.add_enabled(valid, egui::Button::new("Open")).clicked();
                if valid && (clicked || enter) {
                    cmds.push(AppCommand::OpenModel(PathBuf::from(id_text.trim())));
                }
            });
            // Models opened before, ids and folders, with their family and BOS choice.
            if !recent.is_empty() {
                ui.separator();
                ui.label("Recent");
                for m in recent {
                    if ui.button(m.label()).on_hover_text(m.hover_text()).clicked() {
                        cmds.push(AppCommand::OpenModel(m.source.clone()));
                    }
                }
            }
        });
        if !open_id {
            self.state.show_open_id = false;
        }
        if let Some(ask) = &self.state.ask_weights {
            let cmds = &mut self.cmds;
            let mut open = true;
            egui::Window::new("Open with quantized weights?")
                .open(&mut open)
                .resizable(false)
                .collapsible(false)
                .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
                .default_width(460.0)
                .show(ctx, |ui| {
                ui.label(egui::RichText::new(ask.path.display().to_string()).strong());
                ui.label(&ask.reason);
                ui.label(format!(
                    "With {} weights the attention and MLP matrices are block-wise codes: the lens is exact for those weights and close to, not equal to, the checkpoint's (figures and reports say so).",
                    ask.format.name()
                ));
                ui.horizontal(|ui| {
                    if ui.button(format!("Open with {} weights", ask.format.name())).clicked() {
                        cmds.push(AppCommand::OpenModelAs(ask.path.clone(), WeightsChoice::Exact(ask.format)));
                    }
                    if ui.button("Open in f32 anyway").on_hover_text("Exact, but the run may not fit in memory").clicked() {
                        cmds.push(AppCommand::OpenModelAs(ask.path.clone(), WeightsChoice::Exact(lens_model::build::quant::WeightFormat::F32)));
                    }
                    if ui.button("Cancel").clicked() {
                        cmds.push(AppCommand::DismissWeightsAsk);
                    }
                });
            });
            if !open {
                self.cmds.push(AppCommand::DismissWeightsAsk);
            }
        }
        let mut show_corpus = self.state.show_corpus;
        let (state, cmds) = (&self.state, &mut self.cmds);
        egui::Window::new("Corpus").open(&mut show_corpus).default_size([640.0, 380.0]).resizable(true).show(ctx, |ui| {
            crate::gui::panels::corpus::corpus_ui(ui, state, cmds);
        });
        self.state.show_corpus = show_corpus;
        let mut show_remote = self.state.show_remote;
        let (state, cmds) = (&self.state, &mut self.cmds);
        egui::Window::new("Open remote model (nnsight)").open(&mut show_remote).resizable(false).default_width(480.0).show(ctx, |ui| {
            crate::gui::panels::remote::remote_ui(ui, state, cmds);
        });
        self.state.show_remote = show_remote;
        let mut show_patch = self.state.show_patch;
        let (state, cmds) = (&self.state, &mut self.cmds);
        egui::Window::new("Activation patching").open(&mut show_patch).default_size([720.0, 460.0]).resizable(true).show(ctx, |ui| {
            crate::gui::panels::patch::patch_ui(ui, state, cmds);
        });
        self.state.show_patch = show_patch;
        let mut show_steer = self.state.show_steer;
        let (state, cmds) = (&self.state, &mut self.cmds);
        egui::Window::new("Steering").open(&mut show_steer).default_size([560.0, 300.0]).resizable(true).show(ctx, |ui| {
            crate::gui::panels::patch::steer_ui(ui, state, cmds);
        });
        self.state.show_steer = show_steer;
        let mut show_fit = self.state.show_fit;
        let (state, cmds) = (&self.state, &mut self.cmds);
        egui::Window::new("Fit tuned lens").open(&mut show_fit).default_size([560.0, 420.0]).resizable(true).show(ctx, |ui| {
            crate::gui::panels::fit::fit_ui(ui, state, cmds);
        });
        self.state.show_fit = show_fit;
        let mut show_jfit = self.state.show_jfit;
        let (state, cmds) = (&self.state, &mut self.cmds);
        egui::Window::new("Fit J-lens").open(&mut show_jfit).default_size([560.0, 360.0]).resizable(true).show(ctx, |ui| {
            crate::gui::panels::jlens_fit::jfit_ui(ui, state, cmds);
        });
        self.state.show_jfit = show_jfit;
        egui::Window::new("Keyboard shortcuts").open(&mut self.state.show_shortcuts).resizable(false).show(ctx, |ui| {
            egui::Grid::new("keys").striped(true).show(ui, |ui| {
                for (k, what) in [
                    ("Ctrl+Enter", "run the lens on the prompt"),
                    ("Ctrl+O", "open a prompt file"),
                    ("Ctrl+Shift+O", "open a model folder"),
                    ("Ctrl+E", "export the current view as a figure"),
                    ("← → ↑ ↓", "move the selected cell"),
                    ("Esc", "clear the pinned token"),
                    ("wheel / drag", "scroll the grids (together)"),
                    ("Ctrl+wheel", "zoom the grids"),
                ] {
                    ui.monospace(k);
                    ui.label(what);
                    ui.end_row();
                }
            });
        });
        let mut open = self.state.show_export;
        let cmds = &mut self.cmds;
        let export = &mut self.state.export;
        egui::Window::new("Export figure").open(&mut open).resizable(false).show(ctx, |ui| {
            egui::Grid::new("export").num_columns(2).show(ui, |ui| {
                ui.label("Format");
                ui.horizontal(|ui| {
                    for f in ["pdf", "svg", "png", "html"] {
                        ui.radio_value(&mut export.format, f.to_string(), f.to_uppercase());
                    }
                });
                ui.end_row();
                let width = ui.label("Width");
                ui.add(egui::DragValue::new(&mut export.width_in).range(1.0..=40.0).speed(0.1).suffix(" in")).labelled_by(width.id);
                ui.end_row();
                let dpi = ui.label("PNG resolution");
                ui.add_enabled(export.format == "png", egui::DragValue::new(&mut export.dpi).range(36.0..=1200.0).speed(5.0).suffix(" dpi"))
                    .labelled_by(dpi.id);
                ui.end_row();
                ui.label("Panels");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut export.all_panels, false, "current panel");
                    ui.radio_value(&mut export.all_panels, true, "all shown panels");
                });
                ui.end_row();
            });
            ui.label(
                egui::RichText::new(
                    "The figure is the panel: same cells, colours, labels and colour bar; provenance is stored in the file. HTML: one page anyone can open (hover shows a cell's top-k, a click its trajectories).",
                )
                    .small()
                    .color(theme::DIM_TEXT),
            );
            if ui.button("Save…").clicked() {
                cmds.push(AppCommand::RequestExportFigureDialog);
            }
        });
        self.state.show_export = open;
        egui::Window::new("About logit-lens").open(&mut self.state.show_about).resizable(false).show(ctx, |ui| {
            ui.label(format!("logit-lens {}", env!("CARGO_PKG_VERSION")));
            ui.label("Decode every layer and sub-block of a GPT-2, GPT-Neo, CTRL, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen2/3 or Gemma 2/3 model with its own final norm and unembedding (or through its last block, a tuned lens).");
            if let Some(m) = &self.state.model {
                ui.label(format!("ONNX Runtime {} · {}", m.runtime, m.provider));
            }
        });
    }
}
