//! The figure of a comparison: A, B and A − B stacked, all three from the view model the app
//! paints ([`ViewModel::build`] with the result's comparison: B over the aligned positions, A − B
//! per panel, ranks as log10), so a figure and the app's panels show the same difference. Used by
//! `render --compare-…` and by the app's Export while it compares.

use anyhow::{Result, anyhow, bail};
use lens_model::LensReport;

use super::html::{PageRun, page_run};
use super::scene::{self, Scene};
use super::spec::{FigureSpec, FigureView};
use crate::session::worker::RunResult;
use crate::view::model::ViewModel;

/// A, B and A − B of `vm` (built from `result`, which compares) for `spec`'s view, titled with
/// `title`; token texts by `text(report, id)`. Also the HTML page's data of A and B.
pub fn compare_figure(
    vm: &ViewModel,
    result: &RunResult,
    spec: &FigureSpec,
    title: &str,
    text: &dyn Fn(&LensReport, u32) -> String,
) -> Result<(Scene, Vec<PageRun>)> {
    let (Some(cmp), Some(cv)) = (result.compare.as_deref(), vm.compare.as_deref()) else { bail!("internal: not a comparison") };
    if matches!(spec.view, FigureView::Contributions | FigureView::GradXAct) {
        bail!("a comparison draws the lens views (logits, probs, ranks, kl, entropy), not contributions or gradient × activation");
    }
    let (a, b) = (&result.report, &cmp.b);
    let (label_a, label_b) = match cmp.varied.as_str() {
        "decoder" => (a.decoder.clone(), b.decoder.clone()),
        "model" => (a.model.name.clone(), b.model.name.clone()),
        _ => ("prompt A".to_string(), "prompt B".to_string()),
    };
    let titled = |t: String| FigureSpec { title: Some(t), ..spec.clone() };
    let (text_a, text_b) = (|id: u32| text(a, id), |id: u32| text(b, id));
    let scene_a =
        scene::build(vm, a, &titled(format!("A · {label_a}: {title}")), &scene::subtitle(a), &text_a).ok_or_else(|| anyhow!("nothing to draw for A"))?;
    let mut scene_b =
        scene::build(&cv.b, b, &titled(format!("B · {label_b}: {title}")), &scene::subtitle(b), &text_b).ok_or_else(|| anyhow!("nothing to draw for B"))?;
    // The B panel's cells are B's run in the HTML page (the A − B panel has A's geometry).
    for c in &mut scene_b.cells {
        c.run = 1;
    }
    let aligned = if cmp.aligned_by == "position" { "by position".to_string() } else { format!("{} common tokens", cmp.alignment.len()) };
    let weights =
        if a.exact_weights() && b.exact_weights() { String::new() } else { format!(" · A {} weights, B {} weights (approximate)", a.weights(), b.weights()) };
    let scene_d = scene::build(&cv.diff, a, &titled(format!("A − B: {title}")), &format!("aligned {aligned}{weights}"), &text_a)
        .ok_or_else(|| anyhow!("nothing to draw for A − B"))?;
    // B's page data at B's own positions (the view model addresses B's cells by A's).
    let to_b: std::collections::HashMap<usize, usize> = cmp.alignment.iter().map(|&[i, j]| (i, j)).collect();
    let vm_b = ViewModel { cols: vm.cols.iter().filter_map(|p| to_b.get(p).copied()).collect(), ..cv.b.clone() };
    let runs = vec![page_run(&format!("A · {label_a}"), vm, a, &text_a), page_run(&format!("B · {label_b}"), &vm_b, b, &text_b)];
    Ok((scene::stack(vec![scene_a, scene_b, scene_d]), runs))
}
