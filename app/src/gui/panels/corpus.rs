//! The Corpus window: per-site statistics of corpus runs (decoders, models) overlaid, each a mean
//! line with its 95% band, like `render --corpus` draws for a paper.

use egui::{RichText, Ui};
use egui_plot::{Legend, Line, Plot, PlotPoints, Polygon};

use crate::gui::command::AppCommand;
use crate::gui::state::AppState;
use crate::gui::theme;
use lens_model::analyses::corpus::METRICS as CORPUS_METRICS;

/// The window's contents.
pub fn corpus_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    ui.horizontal(|ui| {
        let busy = state.progress.is_some();
        if ui
            .add_enabled(!busy && state.model.is_some(), egui::Button::new("Run on a text file…"))
            .on_hover_text(
                "Tokenize the file once, cut it into windows of the model's context, run the lens on each (current model and decoder) and average per site",
            )
            .clicked()
        {
            cmds.push(AppCommand::RequestCorpusDialog);
        }
        if !state.corpus_runs.is_empty() && ui.button("Clear").clicked() {
            cmds.push(AppCommand::ClearCorpus);
        }
        let current = CORPUS_METRICS.iter().find(|(m, _)| *m == state.corpus_metric).map_or("?", |(_, l)| *l);
        egui::ComboBox::new("corpus_metric", "statistic").selected_text(current).show_ui(ui, |ui| {
            for (m, label) in CORPUS_METRICS {
                if ui.selectable_label(state.corpus_metric == *m, *label).clicked() {
                    cmds.push(AppCommand::SetCorpusMetric((*m).to_string()));
                }
            }
        });
    });
    if state.corpus_runs.is_empty() {
        ui.label(RichText::new("No corpus run yet: run one on a text file (progress and Cancel in the status bar).").color(theme::DIM_TEXT));
        return;
    }
    let Some(first) = state.corpus_runs.first() else { return };
    let names = first.report.sites.clone();
    let xfmt = move |mark: egui_plot::GridMark, _r: &std::ops::RangeInclusive<f64>| {
        let v = mark.value;
        if (v - v.round()).abs() < 1e-6 && v >= 0.0 { names.get(v.round() as usize).cloned().unwrap_or_default() } else { String::new() }
    };
    let label = CORPUS_METRICS.iter().find(|(m, _)| *m == state.corpus_metric).map_or("", |(_, l)| *l);
    Plot::new("corpus_plot").legend(Legend::default()).y_axis_label(label.to_string()).x_axis_formatter(xfmt).height(ui.available_height().max(160.0)).show(
        ui,
        |p| {
            for (k, run) in state.corpus_runs.iter().enumerate() {
                let Some(iv) = run.report.interval(&state.corpus_metric) else { continue };
                let color = theme::run_color(k);
                // The band as one quadrilateral per step between sites: egui fills polygons as
                // convex, and a whole band is not.
                let name = format!("{} (95%)", run.label);
                let at = |v: &Vec<f64>, i: usize| v.get(i).copied().filter(|x| x.is_finite());
                for i in 0..iv.mean.len().saturating_sub(1) {
                    let (Some(l0), Some(l1), Some(h0), Some(h1)) =
                        (at(&iv.ci95_low, i), at(&iv.ci95_low, i + 1), at(&iv.ci95_high, i), at(&iv.ci95_high, i + 1))
                    else {
                        continue;
                    };
                    let (x0, x1) = (i as f64, i as f64 + 1.0);
                    let quad = vec![[x0, l0], [x1, l1], [x1, h1], [x0, h0]];
                    p.polygon(Polygon::new(name.clone(), PlotPoints::from(quad)).fill_color(color.gamma_multiply(0.25)).stroke(egui::Stroke::new(0.0, color)));
                }
                let mean: Vec<[f64; 2]> = iv.mean.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| [i as f64, v]).collect();
                p.line(Line::new(run.label.clone(), PlotPoints::from(mean)).color(color).width(2.0));
            }
        },
    );
}
