//! The Fit J-lens window: prompts file, lens file, the estimator's options; Fit (or Resume a
//! checkpoint); prompts done, seconds per prompt and time left as it runs (progress and Cancel in
//! the status bar). The same fit as `logit-lens fit-jacobian-lens`, checkpoints included: one
//! started in either can be resumed in the other.

use egui::{RichText, Ui};

use crate::gui::command::AppCommand;
use crate::gui::state::AppState;
use crate::gui::theme;

/// `s` seconds as `1 h 02 min`, `3 min 20 s` or `12.3 s`.
fn duration(s: f64) -> String {
    let whole = s.round() as u64;
    if whole >= 3600 {
        format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60)
    } else if whole >= 60 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{s:.1} s")
    }
}

/// The window's contents.
pub fn jfit_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let busy = state.progress.is_some();
    let mut f = state.jfit.clone();
    let name = |p: &Option<std::path::PathBuf>| p.as_ref().map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
    egui::Grid::new("jfit_settings").num_columns(3).show(ui, |ui| {
        ui.label("Prompts (one per line)");
        ui.label(name(&f.prompts));
        if ui.button("Choose…").clicked() {
            cmds.push(AppCommand::RequestJfitPromptsDialog);
        }
        ui.end_row();
        ui.label("Lens file");
        ui.label(name(&f.out));
        if ui.button("Choose…").clicked() {
            cmds.push(AppCommand::RequestJfitOutDialog);
        }
        ui.end_row();
        let l = ui.label("Tokens per prompt, at most");
        ui.add(egui::DragValue::new(&mut f.max_seq_len).range(2..=1_000_000)).labelled_by(l.id).on_hover_text("Longer prompts are truncated (--max-seq-len)");
        ui.end_row();
        let l = ui.label("Leading positions skipped");
        ui.add(egui::DragValue::new(&mut f.skip_first).range(0..=100_000))
            .labelled_by(l.id)
            .on_hover_text("Left out of the average and as targets, with the last position (--skip-first); a prompt needs more than this + 1 tokens");
        ui.end_row();
        let l = ui.label("Source layers");
        ui.add(egui::TextEdit::singleline(&mut f.layers).hint_text("all (or e.g. 0,4,8)").desired_width(160.0))
            .labelled_by(l.id)
            .on_hover_text("Block outputs below the last block (--layers); empty: all of them");
        ui.end_row();
        let l = ui.label("Output dimensions per backward run");
        ui.add(egui::DragValue::new(&mut f.dim_batch).range(1..=4096))
            .labelled_by(l.id)
            .on_hover_text("Speed and memory only: the lens is the same whatever the batch (--dim-batch)");
        ui.end_row();
    });
    ui.checkbox(&mut f.f32, "Store the matrices in float32 (default float16, as the reference writes them)");
    let exists = f.out.as_ref().is_some_and(|o| o.exists());
    let folder = f.out.as_ref().is_some_and(|o| o.is_dir());
    if folder {
        ui.label(RichText::new("This is a folder: choose a .pt file to write.").color(theme::WARN));
    } else if exists {
        ui.checkbox(&mut f.replace, "Replace the file already there");
    }
    if f != state.jfit {
        cmds.push(AppCommand::SetJfit(f.clone()));
    }
    let checkpoint = f.out.as_ref().is_some_and(|o| lens_model::analyses::jlens_fit::checkpoint_path(o).is_file());
    let ready = !busy && state.model.is_some() && f.prompts.is_some() && f.out.is_some() && !folder && f.layer_list().is_ok();
    ui.horizontal(|ui| {
        if ui
            .add_enabled(ready && (!exists || f.replace), egui::Button::new("Fit"))
            .on_hover_text(
                "J_l = mean over prompts and valid source positions of the summed Jacobian of the last block's output at later valid positions; one backward run per batch of output dimensions (TransformerLens's JacobianLens.fit)",
            )
            .clicked()
        {
            cmds.push(AppCommand::StartJfit { resume: false });
        }
        if ui.add_enabled(ready && checkpoint, egui::Button::new("Resume")).on_hover_text("Continue the unfinished fit checkpointed beside the lens file").clicked() {
            cmds.push(AppCommand::StartJfit { resume: true });
        }
        if let Some(p) = &state.jfit_progress {
            let mut line = format!("prompt {}/{} · {}", p.done, p.total, duration(p.seconds));
            if let Some(per) = p.per_prompt() {
                line.push_str(&format!(" · {} per prompt", duration(per)));
                if busy && p.done < p.total {
                    line.push_str(&format!(" · about {} left", duration(per * (p.total - p.done) as f64)));
                }
            }
            ui.label(line);
        }
    });
    let layer_error = f.layer_list().err();
    if let Some(e) = &layer_error {
        ui.label(RichText::new(e).color(theme::WARN));
    }
    if let Some(m) = &state.model {
        let d = m.shape.d_model;
        let runs = d.div_ceil(f.dim_batch.max(1));
        ui.label(
            RichText::new(format!(
                "{}: {} source layers of {d} × {d}; per prompt one backward run per {} output dimensions = {runs} runs. Cancel (status bar) keeps a checkpoint to resume.",
                m.name,
                f.layer_list().ok().flatten().map_or(m.shape.n_layers.saturating_sub(1), |l| l.len()),
                f.dim_batch.max(1)
            ))
            .small()
            .color(theme::DIM_TEXT),
        );
    }
    if let Some((file, r)) = &state.jfit_done {
        let skipped = if r.skipped > 0 { format!(" ({} too short, left out)", r.skipped) } else { String::new() };
        ui.label(format!(
            "Fitted: {} prompts{skipped}, {} backward runs in {}; written to {} and open (decoder: J-lens).",
            r.n_prompts,
            r.backward_runs,
            duration(r.seconds),
            file.display()
        ));
    }
    if checkpoint && !busy {
        ui.label(RichText::new("An unfinished fit is checkpointed beside this file: Resume continues it, Fit starts again.").small().color(theme::DIM_TEXT));
    }
}
