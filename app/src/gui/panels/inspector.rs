//! Inspector of the selected cell: top-k table and the trajectory over depth (probability, rank,
//! KL to final) of the followed token, with a cursor linked to the row under the mouse.

use egui::{RichText, Ui};
use egui_plot::{Legend, Line, Plot, PlotPoints, VLine};

use crate::gui::command::AppCommand;
use crate::gui::state::{AppState, Cell, RankTarget};
use crate::gui::theme;
use crate::gui::view::{shown, token_display, visible_sites};

fn at<T: Copy>(g: &lens_model::grid::Grid<T>, s: usize, p: usize) -> Option<T> {
    g.get(s, p).copied()
}

/// The token followed by the trajectory: (id, label) for a position.
pub fn followed_token(state: &AppState, pos: usize) -> Option<(u32, String)> {
    let res = state.result.as_ref()?;
    let r = &res.report;
    let vocab = state.model.as_ref().map(|m| m.vocab.as_slice()).unwrap_or_default();
    let final_site = r.sites.len().checked_sub(1)?;
    let pinned = r.pinned.as_ref().and_then(|p| p.tokens.first()).map(|t| t.id);
    let id = match (state.view.rank_target, pinned) {
        (RankTarget::Pinned, Some(id)) => id,
        (RankTarget::Next, _) => r.tokens.get(pos + 1)?.id,
        (RankTarget::Input, _) => r.tokens.get(pos)?.id,
        _ => at(&r.metrics.top1_id, final_site, pos)?,
    };
    let what = match (state.view.rank_target, pinned) {
        (RankTarget::Pinned, Some(_)) => "pinned",
        (RankTarget::Next, _) => "next token",
        (RankTarget::Input, _) => "input token",
        _ => "final top-1",
    };
    Some((id, format!("{} ({what})", token_display(r, vocab, id))))
}

/// Shows the inspector.
pub fn inspector_ui(ui: &mut Ui, state: &AppState, cmds: &mut Vec<AppCommand>) {
    ui.heading("Inspector");
    let Some(res) = state.result.as_ref() else {
        ui.label(RichText::new("No result yet.").color(theme::DIM_TEXT));
        return;
    };
    let r = &res.report;
    let vocab = state.model.as_ref().map(|m| m.vocab.as_slice()).unwrap_or_default();
    let Some(cell) = state.selection.or(state.hover) else {
        ui.label(RichText::new("Click a cell (arrows move the selection).").color(theme::DIM_TEXT));
        return;
    };
    let Cell { site, pos } = cell;
    let site_name = r.sites.get(site).cloned().unwrap_or_default();
    let tok = r.tokens.get(pos).map(|t| shown(&t.text)).unwrap_or_default();
    ui.label(RichText::new(format!("site {site_name} · position {pos} · input {tok}")).strong());
    if let Some(next) = r.tokens.get(pos + 1) {
        ui.label(format!("true next: {}", shown(&next.text)));
    }

    // Top-k.
    let (Some(ids), Some(logits), Some(probs)) = (r.top_k.ids.get(site, pos), r.top_k.logits.get(site, pos), r.top_k.probs.get(site, pos)) else {
        return;
    };
    let next_id = r.tokens.get(pos + 1).map(|t| t.id);
    egui::Grid::new("topk").num_columns(4).striped(true).spacing([10.0, 2.0]).show(ui, |ui| {
        ui.label(RichText::new("#").color(theme::DIM_TEXT));
        ui.label(RichText::new("token").color(theme::DIM_TEXT));
        ui.label(RichText::new("logit").color(theme::DIM_TEXT));
        ui.label(RichText::new("prob").color(theme::DIM_TEXT));
        ui.end_row();
        for (i, ((&id, &logit), &prob)) in ids.iter().zip(logits).zip(probs).enumerate() {
            ui.label(format!("{}", i + 1));
            let mut text = RichText::new(token_display(r, vocab, id)).monospace();
            if Some(id) == next_id {
                text = text.color(theme::CORRECT);
            }
            if ui.add(egui::Button::new(text).frame(false)).on_hover_text("pin this token").clicked() {
                cmds.push(AppCommand::PinId(id));
            }
            ui.label(format!("{logit:.2}"));
            ui.horizontal(|ui| {
                let (rect, _) = ui.allocate_exact_size(egui::vec2(50.0, 10.0), egui::Sense::hover());
                ui.painter().rect_filled(rect, 0.0, theme::MISSING);
                let w = rect.width() * prob.clamp(0.0, 1.0) as f32;
                ui.painter().rect_filled(egui::Rect::from_min_size(rect.min, egui::vec2(w, rect.height())), 0.0, theme::LINE_PROB);
                ui.label(format!("{:.1}%", prob * 100.0));
            });
            ui.end_row();
        }
    });
    ui.separator();
    trajectory_ui(ui, state, pos);
}

/// Run B's lines.
fn dashed() -> egui_plot::LineStyle {
    egui_plot::LineStyle::Dashed { length: 6.0 }
}

/// The followed token's probability, log10 rank and KL(final ‖ site) over `sites` at `pos` of `r`
/// (each `[x, y]`, only where known).
#[allow(clippy::type_complexity)]
fn points(r: &lens_model::output::report::LensReport, sites: &[usize], pos: usize, token: u32) -> (Vec<[f64; 2]>, Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let m = &r.metrics;
    let pinned_idx = r.pinned.as_ref().and_then(|p| p.tokens.iter().position(|t| t.id == token));
    let next_id = r.tokens.get(pos + 1).map(|t| t.id);
    let final_site = r.sites.len().saturating_sub(1);
    let final_top1 = at(&m.top1_id, final_site, pos);
    let mut prob_pts = Vec::new();
    let mut rank_pts = Vec::new();
    let mut kl_pts = Vec::new();
    for (x, &s) in sites.iter().enumerate() {
        let x = x as f64;
        let (rank, prob) = if let (Some(i), Some(p)) = (pinned_idx, r.pinned.as_ref()) {
            (p.rank.get(i).and_then(|g| at(g, s, pos)), p.prob.get(i).and_then(|g| at(g, s, pos)))
        } else if Some(token) == next_id {
            (at(&m.rank_of_next, s, pos).flatten(), at(&m.nll_next, s, pos).flatten().map(|n| (-n).exp()))
        } else {
            let rank = if Some(token) == final_top1 {
                at(&m.rank_of_final_top1, s, pos)
            } else if r.tokens.get(pos).map(|t| t.id) == Some(token) {
                at(&m.rank_of_input, s, pos)
            } else {
                None
            };
            // The final top-1's probability is known at every site (outside the top-k too).
            let exact = if Some(token) == final_top1 { at(&m.final_top1_prob, s, pos).filter(|p| !p.is_nan()) } else { None };
            let prob = exact.or_else(|| {
                r.top_k.ids.get(s, pos).and_then(|ids| ids.iter().position(|&t| t == token)).and_then(|k| r.top_k.probs.get(s, pos)?.get(k).copied())
            });
            (rank, prob)
        };
        if let Some(p) = prob {
            prob_pts.push([x, p]);
        }
        if let Some(rk) = rank {
            rank_pts.push([x, f64::from(rk).log10()]);
        }
        if let Some(kl) = at(&m.kl_to_final, s, pos) {
            kl_pts.push([x, kl]);
        }
    }
    (prob_pts, rank_pts, kl_pts)
}

/// Probability / rank / KL over depth for the followed token at `pos` (and, when comparing, run
/// B's at the aligned position, dashed).
fn trajectory_ui(ui: &mut Ui, state: &AppState, pos: usize) {
    let Some(res) = state.result.as_ref() else { return };
    let r = &res.report;
    let sites = visible_sites(r, &state.view); // depth order
    let Some((token, label)) = followed_token(state, pos) else { return };
    ui.label(RichText::new(format!("Trajectory of {label}")).strong());
    let (prob_pts, rank_pts, kl_pts) = points(r, &sites, pos, token);
    // When comparing: run B's trajectory of the same token at the aligned position.
    let b = res.compare.as_ref().and_then(|c| {
        let pb = c.alignment.iter().find(|p| p[0] == pos)?[1];
        let label = state.compare.as_ref().map_or_else(|| "B".to_string(), |w| format!("B: {}", w.label()));
        Some((points(&c.b, &sites, pb, token), label))
    });
    let names: Vec<String> = sites.iter().map(|&s| r.sites.get(s).cloned().unwrap_or_default()).collect();
    let cursor_x = state.hover.and_then(|h| sites.iter().position(|&s| s == h.site)).map(|x| x as f64);
    let group = egui::Id::unique("trajectory");
    let n = sites.len().max(1) as f64;
    let plot_h = ((ui.available_height() - 30.0) / 3.0).clamp(70.0, 160.0);
    let xfmt = move |mark: egui_plot::GridMark, _r: &std::ops::RangeInclusive<f64>| {
        let v = mark.value;
        if (v - v.round()).abs() < 1e-6 && v >= 0.0 { names.get(v.round() as usize).cloned().unwrap_or_default() } else { String::new() }
    };
    let make = |id: &str, y_label: &str| {
        Plot::new(id.to_string())
            .height(plot_h)
            .link_axis(group, [true, false])
            .link_cursor(group, [true, false])
            .allow_scroll(false)
            .allow_zoom(false)
            .allow_drag(false)
            .include_x(-0.5)
            .include_x(n - 0.5)
            // A mark at every site; egui_plot labels the coarsest steps that fit (every 8th, 4th,
            // 2nd site or all), instead of its default steps that named two layers at most.
            .x_grid_spacer(|input| {
                let (lo, hi) = (input.bounds.0.ceil().max(0.0) as usize, input.bounds.1.floor().max(0.0) as usize);
                let step = |i: usize| [8usize, 4, 2].into_iter().find(|s| i.is_multiple_of(*s)).unwrap_or(1) as f64;
                (lo..=hi).map(|i| egui_plot::GridMark { value: i as f64, step_size: step(i) }).collect()
            })
            .y_axis_label(y_label.to_string())
            .legend(Legend::default())
    };
    // The followed group's summed probability, beside the token's.
    let group_line = r.groups.first().map(|g| {
        let pts: Vec<[f64; 2]> = sites.iter().enumerate().filter_map(|(x, &s)| at(&g.prob, s, pos).map(|p| [x as f64, p])).collect();
        (format!("group {}", g.name), pts)
    });
    let prob_missing = prob_pts.len() < sites.len();
    make("traj_prob", "prob").include_y(0.0).include_y(1.0).x_axis_formatter(xfmt.clone()).show(ui, |p| {
        p.line(Line::new("probability", PlotPoints::from(prob_pts)).color(theme::LINE_PROB).width(2.0));
        if let Some(((pts, _, _), label)) = &b {
            p.line(Line::new(format!("probability ({label})"), PlotPoints::from(pts.clone())).color(theme::LINE_PROB).width(1.5).style(dashed()));
        }
        if let Some((name, pts)) = group_line {
            p.line(Line::new(name, PlotPoints::from(pts)).color(theme::LINE_GROUP).width(2.0));
        }
        if let Some(x) = cursor_x {
            p.vline(VLine::new("", x).color(theme::CURSOR));
        }
    });
    if prob_missing {
        ui.label(RichText::new("(probability shown where the token is in the top-k; pin it to follow it everywhere)").small().color(theme::DIM_TEXT));
    }
    make("traj_rank", "log10 rank").include_y(0.0).x_axis_formatter(xfmt.clone()).y_axis_formatter(|m, _| format!("{}", 10f64.powf(m.value).round())).show(
        ui,
        |p| {
            p.line(Line::new("rank", PlotPoints::from(rank_pts)).color(theme::LINE_RANK).width(2.0));
            if let Some(((_, pts, _), label)) = &b {
                p.line(Line::new(format!("rank ({label})"), PlotPoints::from(pts.clone())).color(theme::LINE_RANK).width(1.5).style(dashed()));
            }
            if let Some(x) = cursor_x {
                p.vline(VLine::new("", x).color(theme::CURSOR));
            }
        },
    );
    make("traj_kl", "KL nats").include_y(0.0).x_axis_formatter(xfmt).show(ui, |p| {
        p.line(Line::new("KL(final || site)", PlotPoints::from(kl_pts)).color(theme::LINE_KL).width(2.0));
        if let Some(((_, _, pts), label)) = &b {
            p.line(Line::new(format!("KL ({label})"), PlotPoints::from(pts.clone())).color(theme::LINE_KL).width(1.5).style(dashed()));
        }
        if let Some(x) = cursor_x {
            p.vline(VLine::new("", x).color(theme::CURSOR));
        }
    });
}
