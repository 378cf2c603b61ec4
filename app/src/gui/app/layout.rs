//! The lens panels' layout (tabs, side by side, stacked) and the cached view model.

#[allow(clippy::wildcard_imports)]
use super::*;

impl LogitLensApp {
    /// Rebuilds the view model when the result or the settings that shape it changed.
    pub(super) fn refresh_view_model(&mut self) {
        let Some(res) = self.state.result.clone() else {
            self.view_model = None;
            self.vm_key = None;
            return;
        };
        let mut shape_view = self.state.view.clone();
        // Settings that do not change the derived cells.
        let d = crate::gui::state::ViewSettings::default();
        shape_view.cell_w = d.cell_w;
        shape_view.cell_h = d.cell_h;
        shape_view.layout = d.layout;
        shape_view.tab = d.tab;
        shape_view.shown = d.shown;
        shape_view.show_inspector = d.show_inspector;
        shape_view.show_contributions = d.show_contributions;
        shape_view.contrib_target = d.contrib_target;
        let vocab_ptr = self.state.model.as_ref().map_or(0, |m| Arc::as_ptr(&m.vocab) as usize);
        let key = (Arc::as_ptr(&res) as usize, vocab_ptr, shape_view);
        if self.vm_key.as_ref() != Some(&key) {
            let vocab = self.state.model.as_ref().map(|m| Arc::clone(&m.vocab)).unwrap_or_default();
            self.view_model = Some(ViewModel::build(&res, &self.state.view, &vocab));
            self.vm_key = Some(key);
        }
    }

    pub(super) fn lens_panels(&mut self, ui: &mut Ui) {
        // Side by side: every grid starts below the tallest header of the last frame.
        let tallest_header = self.geometry.iter().map(|g| g.header.height()).fold(0.0f32, f32::max);
        self.geometry.clear();
        let Some(vm) = self.view_model.as_ref() else {
            let text = if self.state.progress.is_some() { "Working…" } else { "No result yet: load a model and run a prompt (Ctrl+Enter)." };
            heatmap::empty_hint(ui, text);
            return;
        };
        let state = &self.state;
        let cmds = &mut self.cmds;
        let geometry = &mut self.geometry;
        let mut hovered = None;
        if let Some(cmp) = vm.compare.as_deref() {
            // Comparing: each panel is a row of three grids, A | B | A − B (the tab alone, or
            // the shown panels stacked), all sharing the scroll, hover and selection.
            let shown: Vec<Metric> = if state.view.layout == PanelLayout::Tabs {
                ui.horizontal(|ui| {
                    let mut v = state.view.clone();
                    for m in Metric::ALL {
                        ui.selectable_value(&mut v.tab, m, RichText::new(m.title()).strong());
                    }
                    if cmp.aligned_by == "common_tokens" {
                        ui.label(
                            RichText::new("B has another token count: only the positions of their longest common token subsequence are shown")
                                .small()
                                .color(theme::WARN),
                        );
                    }
                    if v != state.view {
                        cmds.push(AppCommand::SetView(v));
                    }
                });
                vec![state.view.tab]
            } else {
                Metric::ALL.iter().zip(state.view.shown).filter(|(m, s)| *s && vm.panel(**m).is_some()).map(|(m, _)| *m).collect()
            };
            let n = shown.len().max(1);
            let avail = ui.available_rect_before_wrap();
            let h = avail.height() / n as f32;
            let w = avail.width() / 3.0;
            for (i, m) in shown.iter().enumerate() {
                for (j, model) in [vm, &cmp.b, &cmp.diff].into_iter().enumerate() {
                    let Some(p) = model.panel(*m) else { continue };
                    let rect = egui::Rect::from_min_size(avail.min + egui::vec2(w * j as f32, h * i as f32), egui::vec2(w - 4.0, h - 4.0));
                    let mut child = ui.new_child(egui::UiBuilder::new().max_rect(rect).id_salt(("compare", i, j)));
                    child.set_clip_rect(rect.intersect(ui.clip_rect()));
                    let place = heatmap::Placement { top_strip: i == 0, bottom_strip: i + 1 == n, min_header_h: tallest_header, shared: true };
                    if let Some(c) = heatmap::grid_ui(&mut child, model, p, state, cmds, geometry, place) {
                        hovered = Some(c);
                    }
                }
            }
            ui.allocate_rect(avail, egui::Sense::hover());
            if hovered != state.hover {
                cmds.push(AppCommand::Hover(hovered));
            }
            return;
        }
        match state.view.layout {
            PanelLayout::Tabs => {
                ui.horizontal(|ui| {
                    let mut v = state.view.clone();
                    for m in Metric::ALL {
                        ui.selectable_value(&mut v.tab, m, RichText::new(m.title()).strong());
                    }
                    if v != state.view {
                        cmds.push(AppCommand::SetView(v));
                    }
                });
                if let Some(p) = vm.panel(state.view.tab) {
                    hovered = heatmap::grid_ui(ui, vm, p, state, cmds, geometry, heatmap::Placement::ALONE);
                }
            }
            PanelLayout::SideBySide | PanelLayout::Stacked => {
                // The panels drawn (shown and present in the view model), so that the stacked
                // layout's first and last panels carry the token strips.
                let shown: Vec<Metric> = Metric::ALL.iter().zip(state.view.shown).filter(|(m, s)| *s && vm.panel(**m).is_some()).map(|(m, _)| *m).collect();
                let n = shown.len().max(1);
                let avail = ui.available_rect_before_wrap();
                for (i, m) in shown.iter().enumerate() {
                    let rect = if state.view.layout == PanelLayout::SideBySide {
                        let w = avail.width() / n as f32;
                        egui::Rect::from_min_size(avail.min + egui::vec2(w * i as f32, 0.0), egui::vec2(w - 4.0, avail.height()))
                    } else {
                        let h = avail.height() / n as f32;
                        egui::Rect::from_min_size(avail.min + egui::vec2(0.0, h * i as f32), egui::vec2(avail.width(), h - 4.0))
                    };
                    let Some(p) = vm.panel(*m) else { continue };
                    let mut child = ui.new_child(egui::UiBuilder::new().max_rect(rect).id_salt(("panel", i)));
                    // Nothing a panel paints may reach its neighbours.
                    child.set_clip_rect(rect.intersect(ui.clip_rect()));
                    let place = if state.view.layout == PanelLayout::SideBySide {
                        heatmap::Placement { min_header_h: tallest_header, ..heatmap::Placement::ALONE }
                    } else {
                        heatmap::Placement { top_strip: i == 0, bottom_strip: i + 1 == n, min_header_h: 0.0, shared: false }
                    };
                    if let Some(h) = heatmap::grid_ui(&mut child, vm, p, state, cmds, geometry, place) {
                        hovered = Some(h);
                    }
                }
                ui.allocate_rect(avail, egui::Sense::hover());
            }
        }
        if hovered != state.hover {
            // Keep the hover while the pointer is over the inspector or contributions? No: the
            // grids own the hover; elsewhere it clears.
            cmds.push(AppCommand::Hover(hovered));
        }
    }
}
