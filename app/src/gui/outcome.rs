//! Worker outcomes applied to the app's state by one pure function of (state, outcome), which
//! tests call without a window. What it cannot do itself (start a run, scroll, drop the cached
//! view model) it returns as [`Effect`]s for the app to carry out.

use std::path::PathBuf;

use super::state::{AppState, Cell, ContribTarget, RankTarget, RecentModel, push_recent_model};
use crate::session::worker::OutcomeKind;

/// The app's bookkeeping of its jobs that outcomes read and update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobBook {
    /// The load in flight: its job id and what was opened (`None`: the demo model).
    pub loading: Option<(u64, Option<PathBuf>)>,
    /// Run the lens once the load is done.
    pub run_after_load: bool,
    /// Partial results shown so far (tests read it).
    pub partials_shown: usize,
    /// A tuned lens will be opened right after the load (`--tuned-lens`): keep its decoder.
    pub lens_after_load: bool,
    /// The outcome is the tuned-lens job's (open or fit).
    pub lens_job: bool,
}

/// What the app does after an outcome was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Run the lens on the prompt.
    RunLens,
    /// Bring the selected cell into view.
    ScrollToSelection,
    /// The cached view model belongs to another model: drop it.
    DropViewModel,
}

/// Applies one (current, not stale) worker outcome to `state`.
pub fn apply_outcome(state: &mut AppState, book: &mut JobBook, was_load: bool, kind: OutcomeKind) -> Vec<Effect> {
    let mut effects = Vec::new();
    let complete = !kind.is_progress();
    match kind {
        OutcomeKind::Loaded(summary) => {
            // What was opened (the demo model: its folder), remembered with its family and BOS
            // choice; a model opened before gets its BOS choice back.
            let opened = match book.loading.take() {
                Some((_, Some(p))) => {
                    state.model_path = Some(p.clone());
                    p
                }
                _ => summary.dir.clone(),
            };
            let hide_bos = state.recent_models.iter().find(|m| m.source == opened).is_some_and(|m| m.hide_bos);
            state.view.hide_bos = hide_bos && summary.adds_bos;
            let entry = RecentModel { source: opened.clone(), family: Some(summary.family.clone()), adds_bos: summary.adds_bos, hide_bos: state.view.hide_bos };
            push_recent_model(&mut state.recent_models, entry);
            state.model_source = Some(opened);
            state.notice = Some(format!("loaded {}", summary.name));
            if state.model.is_some() {
                // Another model was on screen: its result (its vocabulary, its sites) and its pin
                // go; the new model's run replaces them.
                state.result = None;
                state.selection = None;
                state.hover = None;
                state.pin_text.clear();
                effects.push(Effect::DropViewModel);
            }
            // The pin text kept from the last session (or typed before the model was there) pins
            // that token in this model when it is one of its tokens; otherwise it goes, so that
            // no suggestions for an old pin stay on screen.
            state.pinned = summary.vocab.iter().find(|e| !state.pin_text.is_empty() && e.text == state.pin_text).map(|e| e.id);
            if state.pinned.is_none() {
                state.pin_text.clear();
            }
            state.model = Some(summary);
            // A new engine has no tuned lens: its decoder falls back to the logit lens unless
            // one is being opened with the model.
            state.tuned_lens = None;
            state.jacobian_lens = None;
            if matches!(state.view.decoder, lens_model::lens::kernel::DecoderKind::TunedLens | lens_model::lens::kernel::DecoderKind::JacobianLens)
                && !book.lens_after_load
            {
                state.view.decoder = lens_model::lens::kernel::DecoderKind::LogitLens;
            }
            // Nothing may still say "pinned" when no token is.
            if state.pinned.is_none() && state.view.rank_target == RankTarget::Pinned {
                state.view.rank_target = RankTarget::FinalTop1;
            }
            if state.pinned.is_none() && state.view.contrib_target == ContribTarget::Pinned {
                state.view.contrib_target = ContribTarget::FinalTop1;
            }
            state.error = None;
            if std::mem::take(&mut book.run_after_load) && !state.prompt.is_empty() {
                effects.push(Effect::RunLens);
            }
        }
        OutcomeKind::Ran(res) | OutcomeKind::Partial(res) => {
            // A partial result (the first positions of a big model's run) is shown at once; the
            // selection defaults only once the whole prompt is there.
            let n_sites = res.report.sites.len();
            let n_pos = res.report.n_pos();
            let ok = |c: &Cell| c.site < n_sites && c.pos < n_pos;
            if !state.selection.as_ref().is_some_and(ok) && (complete || state.selection.is_some()) {
                // Start on the model's own prediction for the last token.
                state.selection = (n_sites > 0 && n_pos > 0).then(|| Cell { site: n_sites - 1, pos: n_pos - 1 });
                effects.push(Effect::ScrollToSelection);
            }
            if !state.hover.as_ref().is_some_and(ok) {
                state.hover = None;
            }
            state.notice = None;
            // A tuned lens that could not be opened stays said until dismissed, over the
            // logit-lens run that replaced it.
            if !state.error_sticky {
                state.error = None;
            }
            state.result = Some(res);
            book.partials_shown += usize::from(!complete);
        }
        OutcomeKind::Corpus(run) => {
            state.notice =
                Some(format!("corpus {}: {} tokens in {} windows, {:.1} s", run.label, run.report.n_tokens, run.report.n_windows, run.report.run.seconds));
            state.error = None;
            state.show_corpus = true;
            state.corpus_runs.push(run);
            let extra = state.corpus_runs.len().saturating_sub(super::state::MAX_CORPUS_RUNS);
            state.corpus_runs.drain(..extra);
        }
        OutcomeKind::TunedLens(dir) | OutcomeKind::Fitted(dir) => {
            state.notice = Some(format!("tuned lens {}", dir.display()));
            state.error = None;
            state.tuned_lens = Some(dir);
            let rerun = state.view.decoder == lens_model::lens::kernel::DecoderKind::TunedLens || state.result.is_some();
            state.view.decoder = lens_model::lens::kernel::DecoderKind::TunedLens;
            if rerun && state.model.is_some() && !state.prompt.is_empty() {
                effects.push(Effect::RunLens);
            }
        }
        OutcomeKind::JacobianLens(file) => {
            state.notice = Some(format!("J-lens {}", file.display()));
            state.error = None;
            state.jacobian_lens = Some(file);
            let rerun = state.view.decoder == lens_model::lens::kernel::DecoderKind::JacobianLens || state.result.is_some();
            state.view.decoder = lens_model::lens::kernel::DecoderKind::JacobianLens;
            if rerun && state.model.is_some() && !state.prompt.is_empty() {
                effects.push(Effect::RunLens);
            }
        }
        OutcomeKind::FitStep(step) => state.fit_history.push(step),
        OutcomeKind::JfitPrompt(p) => state.jfit_progress = Some(p),
        OutcomeKind::JlensFitted(file, report) => {
            state.notice = Some(format!(
                "fitted J-lens {}: {} prompts, layers {}–{}, {:.1} s",
                file.display(),
                report.n_prompts,
                report.source_layers.first().copied().unwrap_or(0),
                report.source_layers.last().copied().unwrap_or(0),
                report.seconds
            ));
            state.error = None;
            state.jacobian_lens = Some(file.clone());
            state.jfit_done = Some((file, report));
            state.jfit.replace = false;
            state.view.decoder = lens_model::lens::kernel::DecoderKind::JacobianLens;
            if state.model.is_some() && !state.prompt.is_empty() {
                effects.push(Effect::RunLens);
            }
        }
        OutcomeKind::Generated(steered, plain) => {
            state.error = None;
            state.steer_generated = Some((steered, plain));
        }
        OutcomeKind::PatchSwept(report, corrupt, note) => {
            state.patch_corrupt = corrupt;
            state.notice = Some(format!("patching: {} runs in {:.1} s", report.runs, report.seconds));
            state.patch_estimate_note = note;
            state.error = None;
            state.show_patch = true;
            state.patch_result = Some(report);
        }
        OutcomeKind::More(piece) => {
            // The next positions of the partial result on screen: appended in place (the result
            // is shared with nothing else while a run grows it, so nothing is copied but them).
            // A piece that does not continue what is shown is dropped: the complete result
            // replaces everything when the run ends.
            if let Some(Ok(())) = state.result.as_mut().map(|res| std::sync::Arc::make_mut(res).extend(&piece)) {
                book.partials_shown += 1;
            }
        }
        OutcomeKind::Failed(msg) if book.lens_job => {
            // The tuned lens was refused: its decoder cannot run, so the logit lens does, and the
            // reason stays on screen.
            state.error = Some(format!("{msg} (the lens is not open)"));
            state.error_sticky = true;
            let lost = match state.view.decoder {
                lens_model::lens::kernel::DecoderKind::TunedLens => state.tuned_lens.is_none(),
                lens_model::lens::kernel::DecoderKind::JacobianLens => state.jacobian_lens.is_none(),
                _ => false,
            };
            if lost {
                state.view.decoder = lens_model::lens::kernel::DecoderKind::LogitLens;
                if state.model.is_some() && !state.prompt.is_empty() {
                    effects.push(Effect::RunLens);
                }
            }
        }
        OutcomeKind::Failed(msg) => {
            state.error_sticky = false;
            if was_load {
                book.loading = None;
                book.run_after_load = false;
            }
            state.error = Some(match partial_note(state, was_load) {
                Some(note) => format!("{msg} ({note})"),
                None => msg,
            });
        }
        OutcomeKind::Cancelled => {
            if was_load {
                book.loading = None;
            }
            state.notice = Some(match partial_note(state, was_load) {
                Some(note) => format!("cancelled: {note}"),
                None => "cancelled".into(),
            });
        }
    }
    effects
}

/// When a run ends without its whole result while a partial one is shown: what the grids still
/// show.
fn partial_note(state: &AppState, was_load: bool) -> Option<String> {
    let res = state.result.as_ref().filter(|r| !was_load && r.report.n_pos() < r.total_positions)?;
    Some(format!("the grids show the first {} positions only", res.report.n_pos()))
}
