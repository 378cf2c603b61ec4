//! The prompt editor, the pin box (with vocabulary autocomplete) and the view toolbar.

use egui::{RichText, Ui};

use crate::gui::command::AppCommand;
use crate::gui::state::{AppState, Metric, PanelLayout, PosWindow};
use crate::gui::theme::{self, ColorMap};
use crate::gui::view::shown;
use crate::session::worker::VocabEntry;

/// Most suggestions shown under the pin box.
pub const MAX_SUGGESTIONS: usize = 8;

/// Vocabulary entries matching a typed pin text (`␣` stands for a space), exact match first.
pub fn suggestions<'a>(vocab: &'a [VocabEntry], typed: &str) -> Vec<&'a VocabEntry> {
    let q = typed.replace('␣', " ");
    if q.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<&VocabEntry> = vocab.iter().filter(|e| e.text == q).collect();
    let spaced = format!(" {q}");
    for e in vocab {
        if out.len() >= MAX_SUGGESTIONS {
            break;
        }
        if (e.text.starts_with(&q) || (!q.starts_with(' ') && e.text.starts_with(&spaced))) && !out.iter().any(|o| o.id == e.id) {
            out.push(e);
        }
    }
    out.sort_by_key(|e| (e.text != q, e.text.len()));
    out.truncate(MAX_SUGGESTIONS);
    out
}

/// Prompt editor. `prompt` is edited in place (the app owns it); edits emit [`AppCommand::PromptEdited`].
pub fn prompt_ui(ui: &mut Ui, prompt: &mut String, busy: bool, cmds: &mut Vec<AppCommand>) {
    ui.horizontal(|ui| {
        ui.strong("Prompt");
        ui.label(RichText::new("Ctrl+Enter runs · edits re-run after a pause · drop a text file or a model folder").small().color(theme::DIM_TEXT));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if busy && ui.button("Cancel").clicked() {
                cmds.push(AppCommand::Cancel);
            }
            if ui.button("Run").on_hover_text("Ctrl+Enter").clicked() {
                cmds.push(AppCommand::Run);
            }
        });
    });
    let edit = egui::TextEdit::multiline(prompt).desired_rows(3).desired_width(f32::INFINITY).font(egui::TextStyle::Monospace).hint_text("Type a prompt…");
    let resp = egui::ScrollArea::vertical().max_height(90.0).show(ui, |ui| ui.add(edit)).inner;
    if resp.changed() {
        cmds.push(AppCommand::PromptEdited);
    }
}

/// Pin box: type a token, pick a suggestion, pin; ✕ (or Esc) clears.
pub fn pin_ui(ui: &mut Ui, pin_text: &mut String, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let vocab: &[VocabEntry] = state.model.as_ref().map(|m| m.vocab.as_slice()).unwrap_or_default();
    ui.horizontal(|ui| {
        ui.label("Pin token");
        let resp = ui.add(egui::TextEdit::singleline(pin_text).desired_width(120.0).hint_text("e.g. \" Paris\"").id_salt("pin_box"));
        let enter = resp.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("Pin").clicked() || enter {
            cmds.push(AppCommand::Pin(pin_text.clone()));
        }
        if let Some(p) = state.result.as_ref().and_then(|r| r.report.pinned.as_ref()).and_then(|p| p.tokens.first()) {
            ui.label(RichText::new(format!("pinned: {}", shown(&p.text))).color(theme::CORRECT));
            if ui.small_button("✕").on_hover_text("Unpin (Esc)").clicked() {
                cmds.push(AppCommand::Unpin);
            }
        }
        let shown_pin = state.result.as_ref().and_then(|r| r.report.pinned.as_ref()).and_then(|p| p.tokens.first()).map(|t| t.text.replace('␣', " "));
        if !pin_text.is_empty() && shown_pin.as_deref() != Some(pin_text.as_str()) {
            for e in suggestions(vocab, pin_text) {
                if ui.small_button(RichText::new(shown(&e.display)).monospace()).on_hover_text(format!("id {}", e.id)).clicked() {
                    *pin_text = e.text.clone();
                    cmds.push(AppCommand::PinId(e.id));
                }
            }
        }
        ui.separator();
        group_ui(ui, state, cmds);
        ui.separator();
        decoder_ui(ui, state, cmds);
        truncate_ui(ui, state, cmds);
    });
}

/// Group box: a word (its single-token variants: leading space, capitals) or `a|b|c`, followed
/// together (summed probability, best rank); ✕ stops.
fn group_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let mut text = state.group_text.clone();
    ui.label("Group");
    let resp = ui.add(egui::TextEdit::singleline(&mut text).desired_width(90.0).hint_text("word or a|b").id_salt("group_box")).on_hover_text(
        "Follow a word through its single-token variants (\" Paris\", \"Paris\", \" paris\", …), or the tokens a|b|c: their probabilities summed",
    );
    if text != state.group_text {
        cmds.push(AppCommand::SetGroupText(text.clone()));
    }
    let enter = resp.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
    if ui.button("Follow").clicked() || enter {
        cmds.push(AppCommand::Group(text));
    }
    if let Some(g) = state.result.as_ref().and_then(|r| r.report.groups.first()) {
        let tokens: Vec<String> = g.tokens.iter().map(|t| shown(&t.text)).collect();
        ui.label(RichText::new(format!("{} tokens", g.tokens.len())).color(theme::CORRECT)).on_hover_text(tokens.join("  "));
        if ui.small_button("✕").on_hover_text("Stop following the group").clicked() {
            cmds.push(AppCommand::Group(String::new()));
        }
    }
}

/// Keep the last `n_ctx` tokens of a prompt that is too long (a run setting), and what it dropped.
fn truncate_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let mut v = state.view.clone();
    let n_ctx = state.model.as_ref().map(|m| m.shape.n_ctx);
    let hover = match n_ctx {
        Some(n) => format!("A prompt longer than the model's context ({n} tokens) keeps its last {n} tokens instead of being refused"),
        None => "A prompt longer than the model's context keeps its last tokens instead of being refused".to_string(),
    };
    ui.checkbox(&mut v.truncate_left, "Keep the last tokens").on_hover_text(hover);
    if let Some(t) = state.result.as_ref().and_then(|r| r.report.truncated) {
        ui.label(RichText::new(format!("first {} of {} tokens dropped", t.dropped_tokens, t.original_tokens)).color(theme::WARN));
    }
    if v != state.view {
        cmds.push(AppCommand::SetView(v));
    }
}

/// The decoder choice (a run setting: changing it runs the lens again on the cached forward pass).
fn decoder_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let mut v = state.view.clone();
    let label = ui.label("Decoder");
    egui::ComboBox::from_id_salt("decoder")
        .selected_text(v.decoder.label())
        .show_ui(ui, |ui| {
            for d in lens_model::lens::kernel::DecoderKind::ALL {
                decoder_option(ui, &mut v.decoder, d, state);
            }
        })
        .response
        .labelled_by(label.id)
        .on_hover_text(format!(
            "How every site is decoded: the logit lens (final norm + unembedding), the tuned lens ({}), the J-lens ({}; rows it has no matrix for are greyed), the last block or its MLP first (the original write-up's decoders for GPT-Neo), or the unembedding alone. The top row stays the model's output.",
            state.tuned_lens.as_ref().map_or_else(|| "File → Open tuned lens… or Fit tuned lens…".to_string(), |t| t.display().to_string()),
            state.jacobian_lens.as_ref().map_or_else(|| "File → Open J-lens…".to_string(), |t| t.display().to_string()),
        ));
    if v != state.view {
        cmds.push(AppCommand::SetView(v));
    }
}

/// One decoder in a decoder menu: the tuned lens and the J-lens only when one is open (else
/// greyed, saying how to get one).
pub fn decoder_option(ui: &mut Ui, current: &mut lens_model::lens::kernel::DecoderKind, d: lens_model::lens::kernel::DecoderKind, state: &AppState) {
    match state.decoder_missing(d) {
        Some(why) => {
            ui.add_enabled(false, egui::Button::selectable(false, d.label())).on_disabled_hover_text(why);
        }
        None => {
            ui.selectable_value(current, d, d.label());
        }
    }
}

/// Compare: none, another decoder, or another prompt (typed in a box, applied with Enter);
/// every lens panel then shows A, B and A − B.
fn compare_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    use crate::session::worker::CompareWith;
    use lens_model::lens::kernel::DecoderKind;
    let label = ui.label("Compare");
    let current = match &state.compare {
        None => "off".to_string(),
        Some(c) => format!("B: {}", c.label()),
    };
    let mut chosen: Option<Option<CompareWith>> = None;
    egui::ComboBox::from_id_salt("compare")
        .selected_text(current)
        .show_ui(ui, |ui| {
            if ui.selectable_label(state.compare.is_none(), "off").clicked() {
                chosen = Some(None);
            }
            for d in DecoderKind::ALL.into_iter().filter(|&d| d != state.view.decoder) {
                let on = state.compare == Some(CompareWith::Decoder(d));
                let missing = state.decoder_missing(d);
                let resp = ui
                    .add_enabled(missing.is_none(), egui::Button::selectable(on, format!("decoder: {}", d.label())))
                    .on_disabled_hover_text(missing.unwrap_or_default());
                if resp.clicked() {
                    chosen = Some(Some(CompareWith::Decoder(d)));
                }
            }
            // Another model of the same tokenizer: a recent one, or a folder.
            for m in state.recent_models.iter().filter(|m| Some(&m.source) != state.model_source.as_ref()).take(5) {
                let on = state.compare == Some(CompareWith::Model(m.source.clone()));
                if ui.selectable_label(on, format!("model: {}", m.label())).on_hover_text(m.hover_text()).clicked() {
                    chosen = Some(Some(CompareWith::Model(m.source.clone())));
                }
            }
            if ui.selectable_label(false, "another model folder…").on_hover_text("A model with the same tokenizer and depth (e.g. a fine-tuned one)").clicked() {
                cmds.push(AppCommand::RequestCompareModelDialog);
            }
            let on = matches!(state.compare, Some(CompareWith::Prompt(_)));
            if ui.selectable_label(on, "another prompt…").on_hover_text("Type it in the box that appears, then Enter").clicked() && !on {
                let text = if state.compare_text.is_empty() { state.prompt.clone() } else { state.compare_text.clone() };
                cmds.push(AppCommand::SetCompareText(text.clone()));
                chosen = Some(Some(CompareWith::Prompt(text)));
            }
        })
        .response
        .labelled_by(label.id)
        .on_hover_text("Show a second run beside this one (another decoder or another prompt) and the difference A − B in every lens panel; the inspector draws both trajectories");
    if let Some(c) = chosen {
        cmds.push(AppCommand::SetCompare(c));
    }
    if matches!(state.compare, Some(CompareWith::Prompt(_))) {
        let mut text = state.compare_text.clone();
        let resp = ui.add(egui::TextEdit::singleline(&mut text).desired_width(220.0).hint_text("prompt B").id_salt("compare_prompt"));
        if text != state.compare_text {
            cmds.push(AppCommand::SetCompareText(text.clone()));
        }
        if resp.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) && !text.trim().is_empty() {
            cmds.push(AppCommand::SetCompare(Some(CompareWith::Prompt(text))));
        }
    }
}

/// The view toolbar: rows, positions, orientation, colour map, layout.
pub fn toolbar_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    let mut v = state.view.clone();
    let n_pos = state.result.as_ref().map_or(0, |r| r.report.n_pos());
    let n_layers = state.result.as_ref().map_or(1, |r| r.report.model.n_layers).max(1);
    ui.horizontal_wrapped(|ui| {
        if state.result.as_ref().is_some_and(|r| r.report.tokens.first().is_some_and(|t| t.special)) {
            ui.checkbox(&mut v.hide_bos, "Hide BOS").on_hover_text("Hide the first column, the tokenizer's BOS: its lens is degenerate (an attention sink)");
        }
        let tuned = v.decoder == lens_model::lens::kernel::DecoderKind::TunedLens;
        ui.add_enabled(!tuned, egui::Checkbox::new(&mut v.subblocks, "Sub-block rows"))
            .on_hover_text("Show the .attn rows (resid_mid; for parallel blocks the derived resid_pre + attn_out, labelled .pre+attn)")
            .on_disabled_hover_text("The tuned lens has translators for block outputs only: no sub-block rows");
        let step_label = ui.label("Layer step");
        ui.add(egui::DragValue::new(&mut v.layer_step).range(1..=n_layers.max(1)))
            .labelled_by(step_label.id)
            .on_hover_text("Every n-th layer (the last is always kept)");
        ui.separator();
        ui.label("Positions");
        let mut mode = match v.positions {
            PosWindow::All => 0,
            PosWindow::LastN(_) => 1,
            PosWindow::Range(..) => 2,
        };
        ui.selectable_value(&mut mode, 0, "all");
        let last_n = ui.selectable_value(&mut mode, 1, "last N");
        let range = ui.selectable_value(&mut mode, 2, "range");
        v.positions = match (mode, v.positions) {
            (0, _) => PosWindow::All,
            (1, PosWindow::LastN(n)) => PosWindow::LastN(n),
            (1, _) => PosWindow::LastN(32.min(n_pos.max(1))),
            (2, PosWindow::Range(a, b)) => PosWindow::Range(a, b),
            (_, _) => PosWindow::Range(0, n_pos.saturating_sub(1)),
        };
        match &mut v.positions {
            PosWindow::All => {}
            PosWindow::LastN(n) => {
                ui.add(egui::DragValue::new(n).range(1..=n_pos.max(1))).labelled_by(last_n.id);
            }
            PosWindow::Range(a, b) => {
                ui.add(egui::DragValue::new(a).range(0..=n_pos.saturating_sub(1))).labelled_by(range.id).on_hover_text("First position");
                let dash = ui.label("–");
                ui.add(egui::DragValue::new(b).range(0..=n_pos.saturating_sub(1))).labelled_by(dash.id).on_hover_text("Last position");
            }
        }
        ui.separator();
        ui.checkbox(&mut v.flip, "Input on top").on_hover_text("Flip the rows: embed at the top");
        ui.checkbox(&mut v.show_depth, "Depth").on_hover_text("Prediction depth: a red edge under the first row from which the top-1 stays the final top-1");
        egui::ComboBox::new("colormap", "Colour map").selected_text(v.colormap.name()).show_ui(ui, |ui| {
            for c in ColorMap::ALL {
                ui.selectable_value(&mut v.colormap, c, c.name());
            }
        });
        ui.separator();
        ui.selectable_value(&mut v.layout, PanelLayout::Tabs, "Tabs");
        ui.selectable_value(&mut v.layout, PanelLayout::SideBySide, "Side by side");
        ui.selectable_value(&mut v.layout, PanelLayout::Stacked, "Stacked");
        if v.layout != PanelLayout::Tabs {
            for (i, m) in Metric::ALL.iter().enumerate() {
                if let Some(s) = v.shown.get_mut(i) {
                    ui.checkbox(s, m.title());
                }
            }
        }
        ui.separator();
        // The label and its box wrap as one unit (with the prompt-B box when it is shown).
        let need = if matches!(state.compare, Some(crate::session::worker::CompareWith::Prompt(_))) { 470.0 } else { 230.0 };
        if ui.available_width() < need {
            ui.end_row();
        }
        ui.horizontal(|ui| compare_ui(ui, state, cmds));
        ui.separator();
        ui.label("Zoom");
        ui.add(egui::Slider::new(&mut v.cell_w, 6.0..=160.0).show_value(false)).on_hover_text("Cell width (Ctrl+wheel over a grid)");
    });
    if v != state.view {
        cmds.push(AppCommand::SetView(v));
    }
}
