//! Exports from the app: the current view as a figure (the same scene code as `render`, fed by
//! the app's own view model) and the report as JSON or CSV.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use lens_model::output::report::LensReport;

use super::output;
use super::provenance::Provenance;
use super::scene::{self, Scene};
use super::spec::{FigureSpec, FigureView, RankOf};
use crate::session::worker::{ModelSummary, RunResult};
use crate::view::model::{ViewModel, token_display};
use crate::view::settings::{ExportSettings, KlRef, LogitColor, Metric, PosWindow, RankTarget, ViewSettings};

/// The figure settings that describe what the app shows for `metric`.
pub fn spec_from_view(view: &ViewSettings, metric: Metric, export: &ExportSettings, pin_text: Option<String>) -> FigureSpec {
    FigureSpec {
        view: match metric {
            Metric::Logits if view.logit_color == LogitColor::Probability => FigureView::Probs,
            Metric::Logits => FigureView::Logits,
            Metric::Ranks => FigureView::Ranks,
            Metric::Kl => FigureView::Kl,
            Metric::Entropy => FigureView::Entropy,
        },
        subblocks: view.subblocks,
        decoder: view.decoder.name().into(),
        hide_bos: view.hide_bos,
        truncate_left: view.truncate_left,
        depth: view.show_depth,
        tuned_lens: None,
        jacobian_lens: None,
        layer_step: view.layer_step,
        last: match view.positions {
            PosWindow::LastN(n) => Some(n),
            _ => None,
        },
        positions: match view.positions {
            PosWindow::Range(a, b) => Some((a, b)),
            _ => None,
        },
        rank_of: match view.rank_target {
            RankTarget::FinalTop1 => RankOf::Final,
            RankTarget::Next => RankOf::Next,
            RankTarget::Input => RankOf::Input,
            RankTarget::Pinned => pin_text.map_or(RankOf::Final, RankOf::Token),
        },
        rank_cap: view.rank_cap,
        kl_vs: if view.kl_ref == KlRef::Input { "input".into() } else { "final".into() },
        kl_cap: view.kl_cap,
        colormap: view.colormap.name().to_ascii_lowercase(),
        contrib_target: "final".into(),
        width_in: export.width_in,
        dpi: export.dpi,
        title: None,
    }
}

/// What the app shows, for [`figure_from_app`].
pub struct AppView<'a> {
    /// The view model on screen (with a comparison: B and A − B too).
    pub vm: &'a ViewModel,
    /// The result it was built from.
    pub result: &'a RunResult,
    /// The view settings.
    pub view: &'a ViewSettings,
    /// The loaded model, if any (a report opened without its model has only a summary).
    pub model: Option<&'a ModelSummary>,
    /// The pinned token's text, when one is pinned.
    pub pin_text: Option<String>,
    /// What run B of the comparison on screen changes, when comparing.
    pub compare: Option<&'a crate::session::compare::CompareWith>,
}

/// Writes the app's current view (one panel, or all shown panels stacked; while comparing, A, B
/// and A − B of each, as the app shows them) to `path`.
pub fn figure_from_app(app: &AppView<'_>, export: &ExportSettings, path: &Path) -> Result<()> {
    let AppView { vm, result, view, model, .. } = *app;
    let report = &result.report;
    let metrics: Vec<Metric> =
        if export.all_panels { Metric::ALL.into_iter().zip(view.shown).filter(|(_, s)| *s).map(|(m, _)| m).collect() } else { vec![view.tab] };
    let empty = Vec::new();
    let vocab = model.map_or(&empty, |m| m.vocab.as_ref());
    let text = |r: &lens_model::LensReport, id: u32| token_display(r, vocab, id);
    let comparing = result.compare.is_some() && vm.compare.is_some();
    let subtitle = scene::subtitle(report);
    let mut scenes = Vec::new();
    let mut specs = Vec::new();
    let mut runs = vec![super::html::page_run("", vm, report, &|id| text(report, id))];
    for m in metrics {
        // The tuned lens or J-lens the report was decoded with, so that `render --from` opens it again.
        let spec = FigureSpec {
            tuned_lens: report.run.tuned_lens.clone(),
            jacobian_lens: report.run.jacobian_lens.clone(),
            ..spec_from_view(view, m, export, app.pin_text.clone())
        };
        let s = if comparing {
            let title = vm.base_title(m).unwrap_or_default();
            let (s, page) = super::compare::compare_figure(vm, result, &spec, title, &text)?;
            runs = page;
            s
        } else {
            scene::build(vm, report, &spec, &subtitle, &|id| text(report, id)).ok_or_else(|| anyhow!("nothing to draw: no visible cells"))?
        };
        scenes.push(s);
        specs.push(spec);
    }
    let first = specs.first().cloned().ok_or_else(|| anyhow!("no panel is shown"))?;
    let scene: Scene = scene::stack(scenes);
    let title = vm.panel(view.tab).map(|p| p.title.clone()).unwrap_or_else(|| "logit lens".into());
    let mut prov = Provenance::new(report, model.map(|m| m.dir.display().to_string()).unwrap_or_default(), result.prompt.clone(), first);
    if comparing {
        prov.compare = app.compare.map(|c| {
            let (varied, with) = c.to_parts();
            super::provenance::CompareSource { varied: varied.to_string(), with }
        });
    }
    output::write(&scene, path, &title, &prov, &runs)
}

/// A CSV text cell: quoted where it holds a separator, a quote or a line break; and where a
/// spreadsheet would run it as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a carriage
/// return: a token text can), prefixed with `'` and quoted, so it opens as text. The JSON and
/// `.npz` exports keep every token's exact text.
pub fn csv_field(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("\"'{}\"", s.replace('"', "\"\""))
    } else if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Writes the report: `.json` (README, "Metrics"), `.csv` (one row per site and position, with display
/// and exact token text) or `.npz` (numpy arrays, see [`lens_model::output::npz::write_report`]).
pub fn data(report: &LensReport, path: &Path, token_text: &dyn Fn(u32) -> String) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json") => Ok(report.write_json(path)?),
        Some("npz") => Ok(lens_model::output::npz::write_report(report, path, token_text)?),
        Some("csv") => {
            let mut out = Vec::new();
            writeln!(
                out,
                "site,pos,input_id,input_token,input_text,next_id,top1_id,top1_text,top1_logit,top1_prob,rank_of_final_top1,rank_of_next,rank_of_input,kl_to_final,kl_to_input,entropy,nll_next"
            )?;
            let m = &report.metrics;
            for (s, site) in report.sites.iter().enumerate() {
                for (p, tok) in report.tokens.iter().enumerate() {
                    let g =
                        |v: &lens_model::grid::Grid<f64>| v.get(s, p).map(|x| if x.is_finite() { x.to_string() } else { String::new() }).unwrap_or_default();
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                        csv_field(site),
                        p,
                        tok.id,
                        csv_field(&tok.text),
                        csv_field(&tok.decoded),
                        opt(report.tokens.get(p + 1).map(|t| t.id)),
                        opt(m.top1_id.get(s, p)),
                        m.top1_id.get(s, p).map_or(String::new(), |&t| csv_field(&token_text(t))),
                        opt(m.top1_logit.get(s, p)),
                        g(&m.top1_prob),
                        opt(m.rank_of_final_top1.get(s, p)),
                        opt(m.rank_of_next.get(s, p).copied().flatten()),
                        opt(m.rank_of_input.get(s, p)),
                        g(&m.kl_to_final),
                        g(&m.kl_to_input),
                        g(&m.entropy),
                        opt(m.nll_next.get(s, p).copied().flatten()),
                    )?;
                }
            }
            // Through a temporary file: a failed or interrupted export leaves no half-written table
            // (and an earlier file of that name as it was).
            lens_model::files::write_replacing(path, |tmp| std::fs::write(tmp, &out).map_err(|e| lens_model::LensError::io(tmp, e)))
                .with_context(|| format!("cannot write {}", path.display()))
        }
        _ => bail!("{}: data files end in .json, .csv or .npz", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_cells_never_run_as_formulas_and_keep_their_text() {
        // Plain, separator, quote; then every formula lead a spreadsheet runs.
        assert_eq!(csv_field("Paris"), "Paris");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        for (cell, want) in [
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("+1", "\"'+1\""),
            ("-", "\"'-\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\tx", "\"'\tx\""),
            ("\rx", "\"'\rx\""),
        ] {
            assert_eq!(csv_field(cell), want, "{cell:?}");
        }
    }
}
