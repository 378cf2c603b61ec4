//! The status bar: model and shape, execution provider, tokens / context, timings, progress + Cancel.

use egui::{RichText, Ui};

use crate::gui::command::AppCommand;
use crate::gui::state::AppState;
use crate::gui::theme;

/// Shows the status bar.
pub fn status_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    ui.horizontal(|ui| {
        match &state.model {
            Some(m) => {
                let s = &m.shape;
                ui.label(RichText::new(&m.name).strong()).on_hover_text(m.dir.display().to_string());
                // A report shown without its model does not know the head count (0): not shown.
                let heads = if s.n_heads > 0 { format!(" · {} heads", s.n_heads) } else { String::new() };
                ui.label(
                    RichText::new(format!("{} · {} layers · d_model {}{heads} · d_vocab {}", m.family, s.n_layers, s.d_model, s.d_vocab))
                        .color(theme::DIM_TEXT),
                )
                .on_hover_text(format!("{} residual", m.residual));
                ui.separator();
                let ep = ui.label(format!("EP: {}", m.provider));
                if !m.provider_notes.is_empty() {
                    ep.on_hover_text(m.provider_notes.join("\n"));
                }
                // Which weights ran: quantized ones are never shown as if they were exact.
                let exact = m.weights == "f32";
                let text = if exact {
                    RichText::new("f32 weights").color(theme::DIM_TEXT)
                } else {
                    RichText::new(format!("{} weights", m.weights)).color(theme::CURSOR).strong()
                };
                let hover = match (&m.weights_reason, exact) {
                    (Some(r), _) => r.clone(),
                    (None, true) => "The forward pass uses the checkpoint's weights in f32 (exact)".to_string(),
                    (None, false) => format!(
                        "The block matrices are {} block-wise codes (MatMulNBits): the lens is exact for these weights, approximate for the checkpoint's",
                        m.weights
                    ),
                };
                ui.label(text).on_hover_text(hover);
            }
            None => {
                ui.label(RichText::new("no model").color(theme::DIM_TEXT));
            }
        }
        if let Some(res) = &state.result {
            let r = &res.report;
            ui.separator();
            let n_ctx = state.model.as_ref().map_or(r.model.n_ctx, |m| m.shape.n_ctx);
            let total = res.total_positions.max(r.n_pos());
            ui.label(format!("{total} / {n_ctx} tokens"));
            if r.n_pos() < total {
                ui.label(RichText::new(format!("· lens shown for the first {} so far", r.n_pos())).color(theme::CURSOR));
            }
            ui.separator();
            // A re-run on the same tokens (top-k, decoder, pin) reuses the forward pass.
            // An edit that keeps the start of the prompt runs only the rest (key/value cache).
            let forward = match (r.run.forward_reused, r.run.cached_positions) {
                (true, _) => "forward reused".to_string(),
                (false, 0) => format!("forward {:.0} ms", r.run.forward_ms),
                (false, c) => format!("forward {:.0} ms ({c} cached)", r.run.forward_ms),
            };
            let reused = if r.run.reused_positions > 0 { format!(" ({} positions kept)", r.run.reused_positions) } else { String::new() };
            // Which code computed the lens: the CPU kernel, or the lens graph on the provider.
            let path = if r.run.lens_path.is_empty() { String::new() } else { format!(" [{}]", r.run.lens_path) };
            ui.label(format!("{forward} · lens {:.0} ms{path}{reused}", r.run.lens_ms))
                .on_hover_text("The lens runs in the streaming CPU kernel, or (forward pass on a GPU provider) as the lens graph on that provider");
            // A report another engine computed says which, where and what came back.
            if let Some(e) = &r.run.engine {
                ui.separator();
                let place = if e.location == "ndif" { "NDIF" } else { "this machine" };
                ui.label(format!("{} on {place} · {:.0} KB received", e.name, e.bytes_received as f64 / 1e3))
                    .on_hover_text(format!("Computed by {} ({}) inside its trace; only the reduced rows came back", e.name, e.model_id));
            }
            // A steered run says so.
            if let Some(s) = &r.steering {
                ui.separator();
                ui.label(RichText::new(format!("steered: {} × ({}) at block {}", s.alpha, s.source, s.layer)).color(theme::CURSOR))
                    .on_hover_text("The lens of the run with the vector added to this block's output at every position (View → Steering…)");
            }
            // Which lens file decoded it, and how many rows it had nothing for.
            if let Some(f) = r.run.jacobian_lens.as_ref().or(r.run.tuned_lens.as_ref()) {
                ui.separator();
                let name = std::path::Path::new(f).file_name().map_or_else(|| f.clone(), |n| n.to_string_lossy().into_owned());
                let rows = r.no_transport.len();
                let text = if rows > 0 { format!("{}: {name} ({rows} rows as is)", r.decoder) } else { format!("{}: {name}", r.decoder) };
                ui.label(text).on_hover_text(format!(
                    "{f}\nGreyed rows have no transport (the embeddings, sub-blocks, layers the lens was not fitted at): decoded as they are"
                ));
            }
        }
        if let Some(n) = &state.notice {
            ui.separator();
            ui.label(RichText::new(n).color(theme::DIM_TEXT));
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            // A run on nnsight (NDIF's job states among its lines) and its Cancel.
            if let Some((_, line)) = &state.remote_running {
                if ui.button("Cancel nnsight").on_hover_text("Stops the nnsight run (kills its Python process)").clicked() {
                    cmds.push(AppCommand::CancelRemote);
                }
                ui.label(RichText::new(format!("nnsight: {line}")).color(theme::CURSOR));
            }
            if let Some(p) = &state.progress {
                if ui.button("Cancel").clicked() {
                    cmds.push(AppCommand::Cancel);
                }
                ui.add(egui::ProgressBar::new(p.fraction).desired_width(160.0).show_percentage());
                // No spinner: an animated widget repaints every frame, and with software GL
                // that took half the CPU from the lens it is waiting for (issue 11, item 16).
                ui.label(format!("{}: {}", p.what, p.stage));
            }
        });
    });
}
