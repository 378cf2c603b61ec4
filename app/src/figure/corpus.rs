//! The corpus figure: one per-site statistic of one or more corpus reports (decoders, models)
//! as lines with their 95% bands, for a paper (`render --corpus A.json [--corpus B.json …]`).

use ecolor::Color32;
use lens_model::analyses::corpus::{CorpusReport, Interval};

use super::scene::{Anchor, Item, Scene};
use crate::view::theme;

/// The statistics a corpus figure can show: (name in the JSON, axis label).
pub use lens_model::analyses::corpus::METRICS as CORPUS_METRICS;

#[allow(clippy::too_many_arguments)]
fn text(items: &mut Vec<Item>, x: f64, y: f64, size: f64, s: String, anchor: Anchor, rotate: f64, color: Color32) {
    items.push(Item::Text { x, y, size, text: s, anchor, rotate, color, bold: false });
}

/// Tick values for `lo..hi`: about five round numbers.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 && out.len() < 12 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

fn label_of(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Builds the figure of `metric` for `runs` (label, report), `width` points wide. `None` when
/// there is nothing finite to draw.
pub fn build(runs: &[(String, &CorpusReport)], metric: &str, width: f64, title: Option<&str>) -> Option<Scene> {
    let axis_label = CORPUS_METRICS.iter().find(|(m, _)| *m == metric).map(|(_, l)| *l)?;
    let first = runs.first()?.1;
    // Quantized weights are said in every figure (the subtitle where all runs share them, else
    // each run's legend entry): such a figure can never pass for an exact one.
    let shared_weights = runs.iter().all(|(_, r)| r.run.weights() == first.run.weights());
    let series: Vec<(String, &Interval, usize)> = runs
        .iter()
        .filter_map(|(l, r)| {
            let label = if shared_weights || r.run.weights() == "f32" { l.clone() } else { format!("{l} ({} weights)", r.run.weights()) };
            Some((label, r.interval(metric)?, r.sites.len()))
        })
        .collect();
    let finite = series.iter().flat_map(|(_, iv, _)| iv.ci95_low.iter().chain(&iv.ci95_high).chain(&iv.mean)).copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let (lo, hi) = (if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad }, hi + pad);
    let legend_w = 120.0;
    let (left, right, top, bottom) = (44.0, legend_w + 10.0, 34.0, 30.0);
    let height = (width * 0.5).max(180.0);
    let (pw, ph) = (width - left - right, height - top - bottom);
    let x_of = |i: usize, n: usize| left + if n > 1 { pw * i as f64 / (n - 1) as f64 } else { pw / 2.0 };
    let y_of = |v: f64| top + ph * (1.0 - (v - lo) / (hi - lo));
    let ink = theme::FIGURE_INK;
    let dim = theme::FIGURE_DIM;
    let mut items = vec![Item::Rect { x: 0.0, y: 0.0, w: width, h: height, fill: Some(theme::FIGURE_BG), stroke: None }];
    let heading = title.map_or_else(|| format!("{axis_label} per site (mean, 95% interval)"), str::to_string);
    text(&mut items, left, 12.0, 9.0, heading, Anchor::Start, 0.0, ink);
    // What the runs share; what differs between them is in the legend.
    let same = |f: &dyn Fn(&CorpusReport) -> String| runs.iter().all(|(_, r)| f(r) == f(first));
    let mut sub = Vec::new();
    if same(&|r| r.model.name.clone()) {
        sub.push(first.model.name.clone());
    }
    if same(&|r| format!("{} {} {}", r.n_tokens, r.n_windows, r.window)) {
        sub.push(format!("{} tokens in {} windows of {}", first.n_tokens, first.n_windows, first.window));
    }
    if same(&|r| r.decoder.clone()) {
        sub.push(format!("{} decoder", first.decoder));
    }
    if shared_weights && first.run.weights() != "f32" {
        sub.push(format!("{} weights (approximate)", first.run.weights()));
    }
    let sub = sub.join(" · ");
    text(&mut items, left, 22.0, 6.0, sub, Anchor::Start, 0.0, dim);
    // Grid lines and y ticks.
    for t in ticks(lo, hi) {
        let y = y_of(t);
        items.push(Item::Rect { x: left, y, w: pw, h: 0.0, fill: None, stroke: Some((theme::FIGURE_GRID, 0.3)) });
        text(&mut items, left - 3.0, y + 2.2, 6.0, label_of(t), Anchor::End, 0.0, ink);
    }
    text(&mut items, 10.0, top + ph / 2.0, 6.5, axis_label.to_string(), Anchor::Middle, -90.0, ink);
    // x ticks: the first run's sites, as many as fit.
    let n = first.sites.len();
    let every = ((n as f64 * 22.0 / pw).ceil() as usize).max(1);
    for (i, s) in first.sites.iter().enumerate() {
        if i % every == 0 || i + 1 == n {
            let x = x_of(i, n);
            items.push(Item::Rect { x, y: top + ph, w: 0.0, h: 3.0, fill: None, stroke: Some((ink, 0.5)) });
            text(&mut items, x, top + ph + 10.0, 6.0, s.clone(), Anchor::Middle, 0.0, ink);
        }
    }
    text(&mut items, left + pw / 2.0, top + ph + 22.0, 6.5, "site (layer)".into(), Anchor::Middle, 0.0, ink);
    // Bands, then lines on top.
    for (k, (_, iv, n)) in series.iter().enumerate() {
        let color = theme::run_color(k);
        let upper: Vec<(f64, f64)> = iv.ci95_high.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (x_of(i, *n), y_of(v))).collect();
        let lower: Vec<(f64, f64)> = iv.ci95_low.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (x_of(i, *n), y_of(v))).rev().collect();
        if upper.len() >= 2 && lower.len() >= 2 {
            items.push(Item::Polygon { points: upper.into_iter().chain(lower).collect(), fill: color, opacity: 0.22 });
        }
    }
    for (k, (label, iv, n)) in series.iter().enumerate() {
        let color = theme::run_color(k);
        let pts: Vec<(f64, f64)> = iv.mean.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (x_of(i, *n), y_of(v))).collect();
        for &(x, y) in &pts {
            items.push(Item::Rect { x: x - 1.2, y: y - 1.2, w: 2.4, h: 2.4, fill: Some(color), stroke: None });
        }
        items.push(Item::Polyline { points: pts, stroke: color, width: 1.2 });
        // Legend.
        let ly = top + 6.0 + k as f64 * 12.0;
        let lx = width - legend_w;
        items.push(Item::Rect { x: lx, y: ly - 4.0, w: 10.0, h: 5.0, fill: Some(color), stroke: None });
        text(&mut items, lx + 14.0, ly + 1.0, 6.5, label.to_string(), Anchor::Start, 0.0, ink);
    }
    items.push(Item::Rect { x: left, y: top, w: pw, h: ph, fill: None, stroke: Some((ink, 0.5)) });
    Some(Scene { width, height, items, cells: Vec::new() })
}
