//! [`ViewModel`]: everything the lens grids paint, derived once per result + settings change
//! (compute, then paint: `ui()` only draws).

use ecolor::Color32;
use lens_model::output::report::LensReport;

use super::settings::{KlRef, LogitColor, Metric, PosWindow, RankTarget, ViewSettings};
use super::theme::{self, ColorMap};
use crate::session::worker::{RunResult, VocabEntry};

/// How values map to colours, and the colour bar that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorScale {
    /// Colour map.
    pub cmap: ColorMap,
    /// Ticks along the bar: (t in 0..=1, label).
    pub ticks: Vec<(f32, String)>,
    /// Unit shown next to the bar.
    pub unit: String,
}

/// One lens panel, ready to paint. Cell vectors are `[row * n_cols + col]` in display order.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelModel {
    /// Which metric.
    pub metric: Metric,
    /// Title, including the variant (e.g. "Ranks of next token").
    pub title: String,
    /// Cell colours.
    pub colors: Vec<Color32>,
    /// Cell text (the top-1 token for Logits, a short number otherwise).
    pub labels: Vec<String>,
    /// Cell values (NaN = missing), for tooltips.
    pub values: Vec<f64>,
    /// Colour scale.
    pub scale: ColorScale,
}

/// The grids' shared geometry and labels, plus one [`PanelModel`] per metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewModel {
    /// Visible sites (indices into `report.sites`), top row first.
    pub rows: Vec<usize>,
    /// Visible positions, left first.
    pub cols: Vec<usize>,
    /// Row labels (`embed`, `0.attn`, `0`, …) per display row.
    pub row_labels: Vec<String>,
    /// Per display row: the decoder had no transport for it (the report's `no_transport`: a
    /// J-lens's embeddings, sub-blocks and unfitted layers), so it shows the logit lens's readout;
    /// its cells are greyed in every panel.
    pub greyed: Vec<bool>,
    /// Input token text per display column.
    pub input_labels: Vec<String>,
    /// True next token per column and whether the final top-1 predicts it (`*`).
    pub next_labels: Vec<(String, bool)>,
    /// Whether the cell's top-1 equals the final top-1 at its position.
    pub outline: Vec<bool>,
    /// With `show_depth`, per display column the display row of its prediction depth (the
    /// lowest shown row at or above the depth site); empty otherwise.
    pub depth: Vec<Option<usize>>,
    /// The depth marker goes on the cell's bottom edge (output on top) or its top edge (flipped).
    pub depth_below: bool,
    /// Panels in [`Metric::ALL`] order.
    pub panels: Vec<PanelModel>,
    /// When the result compares two runs: run B and the difference A − B, in the same rows and
    /// columns (cells are addressed by A's positions; B's data comes from the aligned ones).
    pub compare: Option<Box<CompareView>>,
}

/// Run B and A − B of a comparison, laid out like run A's [`ViewModel`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompareView {
    /// Run B's grids (same rows, columns and scales as A's).
    pub b: ViewModel,
    /// A − B per cell, on diverging scales symmetric about 0; outlined where the two top-1 agree.
    pub diff: ViewModel,
    /// `position` or `common_tokens` (then only the aligned positions are shown).
    pub aligned_by: String,
}

fn at<T: Copy>(g: &lens_model::grid::Grid<T>, s: usize, p: usize) -> Option<T> {
    g.get(s, p).copied()
}

/// Layer of a site name (`embed` → None, `3.attn` or `3.pre+attn` → (3, true), `3` → (3, false)).
pub fn parse_site(name: &str) -> Option<(usize, bool)> {
    match lens_model::run::sites::SiteKind::parse(name)? {
        lens_model::run::sites::SiteKind::Embed => None,
        lens_model::run::sites::SiteKind::Attn(l) => Some((l, true)),
        lens_model::run::sites::SiteKind::Block(l) => Some((l, false)),
    }
}

/// Visible sites in depth order (embed first), per the sub-block and layer-step settings.
pub fn visible_sites(report: &LensReport, view: &ViewSettings) -> Vec<usize> {
    let n_layers = report.model.n_layers.max(1);
    let step = view.layer_step.max(1);
    report
        .sites
        .iter()
        .enumerate()
        .filter(|(_, name)| match parse_site(name) {
            None => true,
            Some((l, attn)) => (l % step == 0 || l + 1 == n_layers) && (!attn || view.subblocks),
        })
        .map(|(i, _)| i)
        .collect()
}

/// Visible positions of a report: the position window, without a leading special token (BOS)
/// when `hide_bos` is set.
pub fn visible_positions_of(report: &LensReport, view: &ViewSettings) -> Vec<usize> {
    let mut cols = visible_positions(report.n_pos(), view.positions);
    if view.hide_bos && report.tokens.first().is_some_and(|t| t.special) {
        cols.retain(|&p| p != 0);
    }
    cols
}

/// Visible positions per the position window.
pub fn visible_positions(n_pos: usize, window: PosWindow) -> Vec<usize> {
    match window {
        PosWindow::All => (0..n_pos).collect(),
        PosWindow::LastN(n) => (n_pos.saturating_sub(n.max(1))..n_pos).collect(),
        PosWindow::Range(a, b) => {
            let hi = b.min(n_pos.saturating_sub(1));
            if n_pos == 0 || a > hi { Vec::new() } else { (a..=hi).collect() }
        }
    }
}

/// Token display text with markers the bundled fonts can draw: `␣` (space) becomes `·`,
/// `↵` (newline) becomes `¶`, `⇥` (tab) becomes `→`.
pub fn shown(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '␣' => '·',
            '↵' => '¶',
            '⇥' => '→',
            c => c,
        })
        .collect()
}

/// Short number for a cell.
fn short(v: f64) -> String {
    if !v.is_finite() {
        String::new()
    } else if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A comparison's panel title without its run label (`A (logit lens) · Top-1 token` → `Top-1 token`).
fn without_run_label(title: &str) -> &str {
    title.split_once(" · ").map_or(title, |(_, t)| t)
}

/// The pinned-token grid of the first pin, if any // [site][pos]
fn pinned_rank(report: &LensReport) -> Option<&lens_model::grid::Grid<u32>> {
    report.pinned.as_ref()?.rank.first()
}

impl ViewModel {
    /// Derives everything the grids paint (with a comparison: run B and A − B too).
    pub fn build(result: &RunResult, view: &ViewSettings, vocab: &[VocabEntry]) -> Self {
        let r = &result.report;
        let cols = visible_positions_of(r, view);
        let Some(cmp) = result.compare.as_deref() else {
            return Self::build_report(r, view, vocab, cols);
        };
        // Only aligned positions have a counterpart in B.
        let to_b: std::collections::HashMap<usize, usize> = cmp.alignment.iter().map(|p| (p[0], p[1])).collect();
        let cols: Vec<usize> = cols.into_iter().filter(|p| to_b.contains_key(p)).collect();
        let cols_b: Vec<usize> = cols.iter().filter_map(|p| to_b.get(p).copied()).collect();
        let mut a = Self::build_report(r, view, vocab, cols);
        let mut b = Self::build_report(&cmp.b, view, vocab, cols_b);
        // B's cells are addressed by A's positions (hover, selection and scrolling are shared).
        b.cols.clone_from(&a.cols);
        b.rows.clone_from(&a.rows);
        let name = |rep: &LensReport| match cmp.varied.as_str() {
            "decoder" => rep.decoder.replace('_', " "),
            "model" => rep.model.name.clone(),
            _ => format!("{} tokens", rep.n_pos()),
        };
        for p in &mut a.panels {
            p.title = format!("A ({}) · {}", name(r), p.title);
        }
        for p in &mut b.panels {
            p.title = format!("B ({}) · {}", name(&cmp.b), p.title);
        }
        let diff = Self::difference(&a, &b);
        a.compare = Some(Box::new(CompareView { b, diff, aligned_by: cmp.aligned_by.clone() }));
        a
    }

    /// A − B of two view models with the same cells: per panel the difference of the painted
    /// values (ranks as log10), on a diverging scale symmetric about 0.
    fn difference(a: &Self, b: &Self) -> Self {
        let panels = a
            .panels
            .iter()
            .zip(&b.panels)
            .map(|(pa, pb)| {
                let f = |v: f64| if pa.metric == Metric::Ranks { v.max(1.0).log10() } else { v };
                let values: Vec<f64> = pa.values.iter().zip(&pb.values).map(|(&x, &y)| f(x) - f(y)).collect();
                let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
                let max = if max > 0.0 { max } else { 1.0 };
                let colors = values.iter().map(|&v| theme::diverging(v, max)).collect();
                // Differences below the labels' resolution read "0", not "+0.00" / "-0.00".
                let labels = values
                    .iter()
                    .map(|&v| match v {
                        v if !v.is_finite() => String::new(),
                        v if v.abs() < 0.005 => "0".into(),
                        v => format!("{}{}", if v > 0.0 { "+" } else { "" }, short(v)),
                    })
                    .collect();
                let unit = if pa.metric == Metric::Ranks { "Δ log10 rank".to_string() } else { format!("Δ {}", pa.scale.unit) };
                let title = without_run_label(&pa.title);
                let ticks = vec![(0.0, format!("-{}", short(max))), (0.5, "0".into()), (1.0, format!("+{}", short(max)))];
                PanelModel {
                    metric: pa.metric,
                    title: format!("A − B · {title}"),
                    colors,
                    labels,
                    values,
                    scale: ColorScale { cmap: ColorMap::Diverging, ticks, unit },
                }
            })
            .collect();
        // Outlined where A's and B's top-1 tokens agree; the input strip says where the tokens differ.
        let outline = a.panels.first().zip(b.panels.first()).map_or_else(Vec::new, |(pa, pb)| pa.labels.iter().zip(&pb.labels).map(|(x, y)| x == y).collect());
        let input_labels = a.input_labels.iter().zip(&b.input_labels).map(|(x, y)| if x == y { x.clone() } else { format!("{x}→{y}") }).collect();
        let greyed = a.greyed.iter().zip(&b.greyed).map(|(x, y)| *x || *y).collect();
        let mut d = Self { outline, input_labels, depth: Vec::new(), panels, compare: None, greyed, ..a.clone() };
        d.grey_rows();
        d
    }

    /// Greys every panel's cells in the rows [`ViewModel::greyed`] marks (their values and labels
    /// stay: the tooltip and the labels still read them).
    fn grey_rows(&mut self) {
        let n_cols = self.cols.len();
        for (row, _) in self.greyed.iter().enumerate().filter(|(_, g)| **g) {
            for p in &mut self.panels {
                for c in p.colors.iter_mut().skip(row * n_cols).take(n_cols) {
                    *c = theme::greyed(*c);
                }
            }
        }
    }

    /// The view model of one report over the positions `cols`.
    fn build_report(r: &LensReport, view: &ViewSettings, vocab: &[VocabEntry], cols: Vec<usize>) -> Self {
        let m = &r.metrics;
        let mut rows = visible_sites(r, view);
        if !view.flip {
            rows.reverse(); // output on top
        }
        let final_site = r.sites.len().saturating_sub(1);
        let row_labels = rows.iter().map(|&s| r.sites.get(s).cloned().unwrap_or_default()).collect();
        let greyed = rows.iter().map(|s| r.no_transport.contains(s)).collect();
        let input_labels = cols.iter().map(|&p| r.tokens.get(p).map(|t| shown(&t.text)).unwrap_or_default()).collect();
        let next_labels = cols
            .iter()
            .map(|&p| match r.tokens.get(p + 1) {
                Some(t) => (shown(&t.text), at(&m.top1_id, final_site, p) == Some(t.id)),
                None => (String::new(), false),
            })
            .collect();
        let cells = || rows.iter().flat_map(|&s| cols.iter().map(move |&p| (s, p)));
        let outline =
            cells().map(|(s, p)| s != final_site && at(&m.top1_id, s, p).is_some() && at(&m.top1_id, s, p) == at(&m.top1_id, final_site, p)).collect();
        let depth = if view.show_depth {
            let d = r.prediction_depth();
            cols.iter()
                .map(|&p| {
                    let site = *d.get(p)? as usize;
                    rows.iter().enumerate().filter(|&(_, &s)| s >= site).min_by_key(|&(_, &s)| s).map(|(i, _)| i)
                })
                .collect()
        } else {
            Vec::new()
        };
        let cmap = view.colormap;

        // Logits
        let logits = {
            let group = r.groups.first().filter(|_| view.logit_color == LogitColor::Group);
            let (values, lo, hi, unit, title): (Vec<f64>, f64, f64, &str, String) = match (view.logit_color, group) {
                (LogitColor::Group, Some(g)) => (
                    cells().map(|(s, p)| at(&g.prob, s, p).unwrap_or(f64::NAN)).collect(),
                    0.0,
                    1.0,
                    "probability",
                    format!("Top-1 token (colour: probability of the group {:?}, {} tokens)", g.name, g.tokens.len()),
                ),
                (LogitColor::Probability | LogitColor::Group, _) => (
                    cells().map(|(s, p)| at(&m.top1_prob, s, p).unwrap_or(f64::NAN)).collect(),
                    0.0,
                    1.0,
                    "probability",
                    "Top-1 token (colour: probability)".into(),
                ),
                (LogitColor::Logit, _) => {
                    let v: Vec<f64> = cells().map(|(s, p)| at(&m.top1_logit, s, p).map_or(f64::NAN, f64::from)).collect();
                    let lo = v.iter().copied().filter(|x| x.is_finite()).fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().filter(|x| x.is_finite()).fold(f64::NEG_INFINITY, f64::max);
                    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
                    (v, lo, hi, "logit", "Top-1 token (colour: logit)".into())
                }
            };
            let colors = values.iter().map(|&v| cmap.at(((v - lo) / (hi - lo)) as f32)).collect();
            let labels = cells().map(|(s, p)| at(&m.top1_id, s, p).map(|id| token_display(r, vocab, id)).unwrap_or_default()).collect();
            let ticks = vec![(0.0, short(lo)), (0.5, short((lo + hi) / 2.0)), (1.0, short(hi))];
            PanelModel { metric: Metric::Logits, title, colors, labels, values, scale: ColorScale { cmap, ticks, unit: unit.into() } }
        };

        // Ranks (log scale, capped; bright = rank 1)
        let ranks = {
            let pin = pinned_rank(r);
            let (target, title) = match (view.rank_target, pin) {
                (RankTarget::Pinned, None) => (RankTarget::FinalTop1, "Rank of final top-1 (nothing pinned)".to_string()),
                (RankTarget::Pinned, Some(_)) => {
                    let name = r.pinned.as_ref().and_then(|p| p.tokens.first()).map(|t| shown(&t.text)).unwrap_or_default();
                    (RankTarget::Pinned, format!("Rank of pinned {name}"))
                }
                (t, _) => (t, format!("Rank of {}", t.name())),
            };
            let values: Vec<f64> = cells()
                .map(|(s, p)| {
                    let v = match target {
                        RankTarget::FinalTop1 => at(&m.rank_of_final_top1, s, p),
                        RankTarget::Next => at(&m.rank_of_next, s, p).flatten(),
                        RankTarget::Input => at(&m.rank_of_input, s, p),
                        RankTarget::Pinned => pin.and_then(|g| at(g, s, p)),
                    };
                    v.map_or(f64::NAN, f64::from)
                })
                .collect();
            let cap = f64::from(view.rank_cap.max(2));
            let colors = values.iter().map(|&v| if v.is_nan() { theme::MISSING } else { cmap.at(1.0 - (v.max(1.0).log10() / cap.log10()) as f32) }).collect();
            let labels = values.iter().map(|&v| short(v)).collect();
            let ticks = vec![(1.0, "1".into()), (1.0 - (10f64.log10() / cap.log10()) as f32, "10".into()), (0.0, format!("≥{}", short(cap)))];
            let mut ticks: Vec<(f32, String)> = ticks;
            if cap >= 1000.0 {
                ticks.insert(1, (1.0 - (100f64.log10() / cap.log10()) as f32, "100".into()));
            }
            PanelModel { metric: Metric::Ranks, title, colors, labels, values, scale: ColorScale { cmap, ticks, unit: "rank (log)".into() } }
        };

        // KL (capped; bright = 0)
        let kl = {
            let (grid, title) = match view.kl_ref {
                KlRef::Final => (&m.kl_to_final, "KL(final || site)"),
                KlRef::Input => (&m.kl_to_input, "KL(input || site)"),
            };
            let cap = if view.kl_cap > 0.0 { view.kl_cap } else { 30.0 };
            let values: Vec<f64> = cells().map(|(s, p)| at(grid, s, p).unwrap_or(f64::NAN)).collect();
            let colors = values.iter().map(|&v| cmap.at(1.0 - (v / cap) as f32)).collect();
            let labels = values.iter().map(|&v| short(v)).collect();
            let ticks = vec![(1.0, "0".into()), (0.5, short(cap / 2.0)), (0.0, format!("≥{}", short(cap)))];
            PanelModel { metric: Metric::Kl, title: title.into(), colors, labels, values, scale: ColorScale { cmap, ticks, unit: "nats".into() } }
        };

        // Entropy (bright = low)
        let entropy = {
            let max_h = (r.model.d_vocab.max(2) as f64).ln();
            let values: Vec<f64> = cells().map(|(s, p)| at(&m.entropy, s, p).unwrap_or(f64::NAN)).collect();
            let colors = values.iter().map(|&v| cmap.at(1.0 - (v / max_h) as f32)).collect();
            let labels = values.iter().map(|&v| short(v)).collect();
            let ticks = vec![(1.0, "0".into()), (0.0, format!("{max_h:.1} (uniform)"))];
            PanelModel { metric: Metric::Entropy, title: "Entropy".into(), colors, labels, values, scale: ColorScale { cmap, ticks, unit: "nats".into() } }
        };

        let mut vm = Self {
            rows,
            cols,
            row_labels,
            greyed,
            input_labels,
            next_labels,
            outline,
            depth,
            depth_below: !view.flip,
            panels: vec![logits, ranks, kl, entropy],
            compare: None,
        };
        vm.grey_rows();
        vm
    }

    /// The panel of `metric`.
    pub fn panel(&self, metric: Metric) -> Option<&PanelModel> {
        self.panels.iter().find(|p| p.metric == metric)
    }

    /// The title of `metric`'s panel without the run label a comparison puts before it
    /// (`A (logit lens) · `): what a figure titles "A · …", "B · …" and "A − B · …" itself.
    pub fn base_title(&self, metric: Metric) -> Option<&str> {
        let title = self.panel(metric)?.title.as_str();
        Some(if self.compare.is_some() { without_run_label(title) } else { title })
    }

    /// Display (row, col) of a cell, when visible.
    pub fn index_of(&self, site: usize, pos: usize) -> Option<(usize, usize)> {
        Some((self.rows.iter().position(|&s| s == site)?, self.cols.iter().position(|&p| p == pos)?))
    }
}

/// Display text of a token id: from the vocabulary, else from the report's own tokens.
pub fn token_display(r: &LensReport, vocab: &[VocabEntry], id: u32) -> String {
    match vocab.get(id as usize).filter(|e| e.id == id) {
        Some(e) => shown(&e.display),
        None => shown(&token_text(r, id)),
    }
}

/// Display text of any token id the report holds a text for (input tokens, its vocabulary of
/// top-1s and top-k, pins, groups), else `#id`.
pub fn token_text(r: &LensReport, id: u32) -> String {
    r.token_text(id).map_or_else(|| format!("#{id}"), str::to_string)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::session::synthetic::synthetic_result;

    #[test]
    fn layer_step_keeps_embed_every_nth_and_the_last_layer() {
        let res = synthetic_result(5, 4, 3);
        let mut v = ViewSettings { layer_step: 2, ..ViewSettings::default() };
        let names = |v: &ViewSettings| visible_sites(&res.report, v).iter().map(|&s| res.report.sites[s].clone()).collect::<Vec<_>>();
        assert_eq!(names(&v), ["embed", "0", "2", "4"]);
        v.subblocks = true;
        v.layer_step = 3;
        assert_eq!(names(&v), ["embed", "0.attn", "0", "3.attn", "3", "4.attn", "4"]);
        // Parallel blocks' sub-block rows are `l.pre+attn`: hidden and shown like `l.attn`.
        assert_eq!(parse_site("3.pre+attn"), Some((3, true)));
        assert_eq!(parse_site("12"), Some((12, false)));
        assert_eq!(parse_site("embed"), None);
    }

    #[test]
    fn a_leading_special_token_is_hidden_on_request() {
        let mut res = synthetic_result(2, 5, 3);
        let v = ViewSettings { hide_bos: true, ..ViewSettings::default() };
        assert_eq!(visible_positions_of(&res.report, &v), [0, 1, 2, 3, 4], "an ordinary first token stays");
        res.report.tokens[0].special = true;
        assert_eq!(visible_positions_of(&res.report, &v), [1, 2, 3, 4]);
        assert_eq!(visible_positions_of(&res.report, &ViewSettings::default()), [0, 1, 2, 3, 4], "shown unless hidden");
        let vm = ViewModel::build(&res, &v, &[]);
        assert_eq!(vm.cols, [1, 2, 3, 4]);
    }

    #[test]
    fn position_windows_clamp_to_the_prompt() {
        assert_eq!(visible_positions(5, PosWindow::LastN(2)), [3, 4]);
        assert_eq!(visible_positions(5, PosWindow::LastN(9)), [0, 1, 2, 3, 4]);
        assert_eq!(visible_positions(5, PosWindow::Range(3, 99)), [3, 4]);
        assert!(visible_positions(5, PosWindow::Range(7, 9)).is_empty());
    }

    #[test]
    fn the_view_model_is_rows_by_columns_and_marks_visible_spaces() {
        let res = synthetic_result(3, 6, 3);
        let vm = ViewModel::build(&res, &ViewSettings::default(), &[]);
        assert_eq!(vm.rows.len(), 4);
        assert_eq!(vm.rows.first(), Some(&(res.report.sites.len() - 1)), "output on top");
        for p in &vm.panels {
            assert_eq!(p.colors.len(), vm.rows.len() * vm.cols.len());
        }
        assert_eq!(shown("␣Paris↵"), "·Paris¶");
    }
}
