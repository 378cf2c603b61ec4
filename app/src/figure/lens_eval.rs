//! The lens-quality figure (`eval-lens --figure`): per prompt set, pass@k of every decoder as
//! bars with their 95% intervals, and the intermediates' mean log10 rank per layer as lines.

use ecolor::Color32;
use lens_model::analyses::lens_eval::EvalReport;

use super::scene::{Anchor, Item, Scene};
use crate::view::theme;

#[allow(clippy::too_many_arguments)]
fn text(items: &mut Vec<Item>, x: f64, y: f64, size: f64, s: String, anchor: Anchor, rotate: f64, color: Color32) {
    items.push(Item::Text { x, y, size, text: s, anchor, rotate, color, bold: false });
}

/// Builds the figure, `width` points wide: one row of two panels per set. `None` when the report
/// holds no set.
pub fn build(report: &EvalReport, width: f64) -> Option<Scene> {
    let first = report.sets.first()?;
    let n_dec = first.decoders.len().max(1);
    let (ink, dim) = (theme::FIGURE_INK, theme::FIGURE_DIM);
    let row_h = 150.0;
    let top = 40.0;
    let legend_h = 14.0;
    let height = top + legend_h + row_h * report.sets.len() as f64 + 10.0;
    let mut items = vec![Item::Rect { x: 0.0, y: 0.0, w: width, h: height, fill: Some(theme::FIGURE_BG), stroke: None }];
    text(&mut items, 40.0, 12.0, 9.0, "Lens quality: intermediates read out at the last position".into(), Anchor::Start, 0.0, ink);
    let weights = if report.weights == "f32" { String::new() } else { format!(" · {} weights (approximate)", report.weights) };
    let sub = format!(
        "{} ({} layers) · pass@k with 95% bootstrap intervals over items ({} resamples) · mean log10 rank per layer{weights}",
        report.model, report.n_layers, report.resamples
    );
    text(&mut items, 40.0, 23.0, 6.0, sub, Anchor::Start, 0.0, dim);
    // Legend: one colour per decoder.
    let mut lx = 40.0;
    for (k, d) in first.decoders.iter().enumerate() {
        let color = theme::run_color(k);
        items.push(Item::Rect { x: lx, y: top - 5.0, w: 10.0, h: 5.0, fill: Some(color), stroke: None });
        let label = if d.no_transport.is_empty() { d.decoder.clone() } else { format!("{} ({} layers as is)", d.decoder, d.no_transport.len()) };
        let w = label.chars().count() as f64 * 6.5 * 0.6 + 24.0;
        text(&mut items, lx + 14.0, top, 6.5, label, Anchor::Start, 0.0, ink);
        lx += w;
    }
    let left_w = (width * 0.42).max(120.0);
    for (si, set) in report.sets.iter().enumerate() {
        let y0 = top + legend_h + si as f64 * row_h;
        let (ph, pt) = (row_h - 46.0, y0 + 16.0);
        text(&mut items, 40.0, y0 + 8.0, 7.5, format!("{} ({} items)", set.name, set.items.len()), Anchor::Start, 0.0, ink);
        // pass@k bars.
        let (bx, bw) = (40.0, left_w - 50.0);
        let y_of = |v: f64| pt + ph * (1.0 - v.clamp(0.0, 1.0));
        for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
            items.push(Item::Rect { x: bx, y: y_of(t), w: bw, h: 0.0, fill: None, stroke: Some((theme::FIGURE_GRID, 0.3)) });
            text(&mut items, bx - 3.0, y_of(t) + 2.2, 6.0, format!("{t}"), Anchor::End, 0.0, ink);
        }
        text(&mut items, 12.0, pt + ph / 2.0, 6.5, "pass@k".into(), Anchor::Middle, -90.0, ink);
        let n_k = report.ks.len().max(1);
        let group_w = bw / n_k as f64;
        let bar_w = (group_w * 0.8) / n_dec as f64;
        for (ki, k) in report.ks.iter().enumerate() {
            let gx = bx + ki as f64 * group_w + group_w * 0.1;
            text(&mut items, gx + group_w * 0.4, pt + ph + 10.0, 6.0, format!("k = {k}"), Anchor::Middle, 0.0, ink);
            for (di, d) in set.decoders.iter().enumerate() {
                let Some(p) = d.pass_at.iter().find(|p| p.k == *k) else { continue };
                let x = gx + di as f64 * bar_w;
                let e = p.estimate;
                items.push(Item::Rect {
                    x,
                    y: y_of(e.mean),
                    w: bar_w * 0.9,
                    h: (pt + ph - y_of(e.mean)).max(0.0),
                    fill: Some(theme::run_color(di)),
                    stroke: None,
                });
                let cx = x + bar_w * 0.45;
                items.push(Item::Polyline { points: vec![(cx, y_of(e.ci95_low)), (cx, y_of(e.ci95_high))], stroke: ink, width: 0.6 });
            }
        }
        items.push(Item::Rect { x: bx, y: pt, w: bw, h: ph, fill: None, stroke: Some((ink, 0.5)) });
        // Mean log10 rank per layer.
        let (rx, rw) = (left_w + 40.0, width - left_w - 50.0);
        let vals = set.decoders.iter().flat_map(|d| d.mean_log10_rank.iter()).copied().filter(|v| v.is_finite());
        let hi = vals.fold(1.0f64, f64::max).ceil();
        let n_l = report.layers.len();
        let x_of = |l: usize| rx + if n_l > 1 { rw * l as f64 / (n_l - 1) as f64 } else { rw / 2.0 };
        let ry = |v: f64| pt + ph * (v / hi).clamp(0.0, 1.0);
        let mut t = 0.0;
        while t <= hi + 1e-9 {
            items.push(Item::Rect { x: rx, y: ry(t), w: rw, h: 0.0, fill: None, stroke: Some((theme::FIGURE_GRID, 0.3)) });
            text(&mut items, rx - 3.0, ry(t) + 2.2, 6.0, format!("{}", 10f64.powf(t).round()), Anchor::End, 0.0, ink);
            t += (hi / 4.0).max(1.0).round();
        }
        text(&mut items, rx - 27.0, pt + ph / 2.0, 6.5, "rank (log; 1 on top)".into(), Anchor::Middle, -90.0, ink);
        let every = ((n_l as f64 * 18.0 / rw).ceil() as usize).max(1);
        for (l, label) in report.layers.iter().enumerate() {
            if l % every == 0 || l + 1 == n_l {
                text(&mut items, x_of(l), pt + ph + 10.0, 6.0, label.clone(), Anchor::Middle, 0.0, ink);
            }
        }
        text(&mut items, rx + rw / 2.0, pt + ph + 20.0, 6.5, "layer (block output)".into(), Anchor::Middle, 0.0, ink);
        for (di, d) in set.decoders.iter().enumerate() {
            let color = theme::run_color(di);
            let pts: Vec<(f64, f64)> = d.mean_log10_rank.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(l, &v)| (x_of(l), ry(v))).collect();
            for (l, &(x, y)) in pts.iter().enumerate() {
                // A layer this decoder had no transport for: a hollow marker.
                let hollow = report.layers.get(l).is_some_and(|name| d.no_transport.contains(name));
                let (fill, stroke) = if hollow { (Some(theme::FIGURE_BG), Some((color, 0.6))) } else { (Some(color), None) };
                items.push(Item::Rect { x: x - 1.4, y: y - 1.4, w: 2.8, h: 2.8, fill, stroke });
            }
            items.push(Item::Polyline { points: pts, stroke: color, width: 1.1 });
        }
        items.push(Item::Rect { x: rx, y: pt, w: rw, h: ph, fill: None, stroke: Some((ink, 0.5)) });
    }
    Some(Scene { width, height, items, cells: Vec::new() })
}
