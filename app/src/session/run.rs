//! The one run path: a prompt through the lens, for the app's worker and for every command that
//! runs one prompt (`lens`, `render`). Tokenizing (with the truncation asked for); the forward
//! pass (reused when the tokens did not change; after an edit that keeps the start of the prompt,
//! only the rest runs, on the last trace's key/value cache); the positions piece by piece (a
//! partial result first, then the rest; an edit keeps the positions whose prefix and next token
//! did not change); run B and A − B when comparing ([`crate::session::compare`]).

use std::sync::Arc;
use std::time::Instant;

use lens_model::error::Progress;
use lens_model::grid::Grid;
use lens_model::output::report::LensReport;
use lens_model::run::trace::ResidualTrace;
use lens_model::{LensEngine, LensOptions};

use crate::session::compare::{CompareWith, OtherEngine};
use crate::session::worker::{RunPiece, RunResult, positions_per_piece};

/// A complete result with what it was computed from.
struct LastResult {
    opts: LensOptions,
    result: Arc<RunResult>,
    ids: Vec<u32>,
    /// Direct logit attribution to the first pinned token // [pos][component]
    dla_rows: Vec<Vec<f64>>,
}

/// What a run keeps for the next one: the last forward pass (reused when only the pins or the
/// decoder change) and the last complete result (an edit that keeps the start of the prompt
/// reuses its first positions). The app's worker keeps one; a command starts from an empty one.
#[derive(Default)]
pub struct RunCache {
    last: Option<(Vec<u32>, ResidualTrace)>,
    last_result: Option<LastResult>,
}

impl RunCache {
    /// Forgets the last result (a new tuned lens decodes differently); the forward pass stays.
    pub fn forget_results(&mut self) {
        self.last_result = None;
    }
}

/// One prompt to run.
pub struct RunRequest<'a> {
    /// The prompt text.
    pub text: &'a str,
    /// The lens options.
    pub opts: LensOptions,
    /// Keep the last `n_ctx` tokens of a prompt that is too long.
    pub truncate_left: bool,
    /// Run B of a comparison, if any.
    pub compare: Option<&'a CompareWith>,
    /// All positions at once, or in pieces with partial results.
    pub pieces: Pieces,
    /// Steer the run: a vector added at one block's output (the lens is then of the steered run;
    /// the unsteered forward pass stays cached).
    pub steer: Option<&'a lens_model::analyses::steer::Steering>,
}

/// How a run's positions are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pieces {
    /// All at once: a command, which shows no partial result.
    Whole,
    /// In pieces of this many positions (`None`: by the model's size, [`positions_per_piece`]),
    /// the first shown at once: the app.
    Partial(Option<usize>),
}

/// What a run reports while it goes (the app shows it at once; a command ignores it).
pub enum RunEvent {
    /// The first positions of a result still being computed.
    Partial(Arc<RunResult>),
    /// The next positions of the partial result shown.
    More(Arc<RunPiece>),
}

/// The forward pass of `ids` into `last`: kept when the tokens did not change; after an edit
/// that keeps the start of the prompt, only the rest runs, on the last trace's key/value cache.
/// Returns whether it was reused, the positions taken from the cache, and its milliseconds.
fn forward(last: &mut Option<(Vec<u32>, ResidualTrace)>, engine: &mut LensEngine, ids: &[u32], progress: &Progress) -> anyhow::Result<(bool, usize, f64)> {
    let t0 = Instant::now();
    progress.report("forward", 0.0);
    let reuse = matches!(last, Some((last_ids, _)) if last_ids.as_slice() == ids);
    let mut cached = 0;
    if !reuse {
        // Without a shared start the old trace goes first.
        if last.as_ref().is_some_and(|(last_ids, _)| last_ids.first() != ids.first()) {
            *last = None;
        }
        let prev = last.as_ref().map(|(last_ids, t)| (last_ids.as_slice(), t));
        // The job's own progress: Cancel (or a newer edit) terminates the pass in ORT.
        let (trace, kept) = engine.trace_edit(prev, ids, progress)?;
        cached = kept;
        *last = Some((ids.to_vec(), trace));
    }
    Ok((reuse, cached, t0.elapsed().as_secs_f64() * 1e3))
}

/// What an edit keeps of the previous result `prev` (same options): its report cut to the
/// leading positions whose prefix and next token are unchanged, their attribution rows, and how
/// many they are (none when nothing, or everything, is kept).
fn kept_start(prev: Option<&LastResult>, opts: &LensOptions, ids: &[u32], n_pos: usize, pinned: &[u32]) -> (Option<LensReport>, Vec<Vec<f64>>, usize) {
    let Some(prev) = prev.filter(|p| p.opts == *opts) else { return (None, Vec::new(), 0) };
    let keep = lens_model::run::engine::reusable_positions(&prev.ids, ids).min(n_pos);
    if keep == 0 || keep >= n_pos {
        return (None, Vec::new(), 0);
    }
    let dla_rows = prev.dla_rows.get(..keep).map(<[Vec<f64>]>::to_vec).unwrap_or_default();
    if !pinned.is_empty() && dla_rows.len() != keep {
        return (None, Vec::new(), 0);
    }
    let mut r = prev.result.report.clone();
    r.keep_positions(keep);
    (Some(r), dla_rows, keep)
}

/// Runs `req` on `engine`, reusing what `cache` holds and keeping what the next run can reuse;
/// run B's model (another model compared with) comes from `other`. Partial results go to `emit`.
pub fn run_prompt(
    engine: &mut LensEngine,
    cache: &mut RunCache,
    other: &mut dyn OtherEngine,
    req: &RunRequest<'_>,
    progress: &Progress,
    emit: &dyn Fn(RunEvent),
) -> anyhow::Result<Arc<RunResult>> {
    let opts = &req.opts;
    let pinned = &opts.pinned;
    let (ids, truncated) = engine.tokenize_with(req.text, req.truncate_left)?;
    if req.steer.is_some() && req.compare.is_some_and(|c| !matches!(c, CompareWith::Decoder(_))) {
        anyhow::bail!(
            "a steered run is compared only with another decoder (which reads the same steered run); turn the steering or the {} comparison off",
            req.compare.map_or("", CompareWith::varied)
        );
    }
    let (reuse, cached, forward_ms) = forward(&mut cache.last, engine, &ids, progress)?;
    progress.check()?;
    let Some((_, base)) = cache.last.as_ref() else { anyhow::bail!("no forward pass") };
    // A steered run decodes the steered trace; the unsteered one stays the cache's.
    let t_steer = Instant::now();
    let steered = req.steer.map(|s| lens_model::analyses::steer::steered_trace(engine, &ids, base, s, progress)).transpose()?;
    let trace = steered.as_ref().unwrap_or(base);
    // A steered run's forward pass is the steered one: it ran, whole, now.
    let (reuse, cached, forward_ms) =
        if steered.is_some() { (false, 0, forward_ms + t_steer.elapsed().as_secs_f64() * 1e3) } else { (reuse, cached, forward_ms) };
    let t1 = Instant::now();
    let shape = &engine.bundle.shape;
    let n_sites = lens_model::run::sites::site_list(shape.n_layers, opts.subblocks).len();
    let n_pos = trace.n_pos;
    let step = match req.pieces {
        Pieces::Whole => n_pos,
        Pieces::Partial(n) => n.unwrap_or_else(|| positions_per_piece(n_sites, shape.d_model, shape.d_vocab)),
    }
    .max(1);
    // Incremental edit: the positions whose prefix and next token are unchanged keep the
    // previous result's metrics; only the rest is computed.
    let (mut report, mut dla_rows, reused) =
        if req.steer.is_some() { (None, Vec::new(), 0) } else { kept_start(cache.last_result.as_ref(), opts, &ids, n_pos, pinned) };
    let mut start = reused;
    // The first partial result carries everything so far; later ones only their own
    // positions (`More`), so a run of many pieces copies each position once.
    let mut shown = false;
    while start < n_pos {
        let end = (start + step).min(n_pos);
        // The kernel reports progress per piece; scale it to the whole prompt.
        let piece_progress = progress.part(start as f32 / n_pos as f32, (end - start) as f32 / n_pos as f32);
        let mut piece = engine.lens_range(&ids, trace, opts, start..end, &piece_progress)?;
        piece.run.forward_ms = forward_ms;
        let mut piece_dla = Vec::new();
        if let Some(&t) = pinned.first() {
            for p in start..end {
                piece_dla.push(lens_model::lens::attribution::terms(trace, &engine.decoder, p, t)?);
            }
        }
        let piece_start = report.as_ref().map_or(0, lens_model::output::report::LensReport::n_pos);
        let r = match report.as_mut() {
            Some(r) => {
                r.append_positions(piece.clone())?;
                r
            }
            None => report.insert(piece.clone()),
        };
        r.run.forward_ms = forward_ms;
        r.run.forward_reused = reuse;
        r.run.reused_positions = reused;
        r.run.cached_positions = cached;
        r.truncated = truncated;
        r.run.lens_ms = t1.elapsed().as_secs_f64() * 1e3;
        start = end;
        if start < n_pos && shown {
            let pinned_dla = pinned.first().map(|_| Grid::from_rows(piece_dla.clone()).map(|g| g.transposed())).transpose()?;
            emit(RunEvent::More(Arc::new(RunPiece { start: piece_start, report: piece, pinned_dla })));
        }
        dla_rows.extend(piece_dla);
        if start < n_pos && !shown {
            let pinned_dla = pinned.first().map(|_| Grid::from_rows(dla_rows.clone()).map(|g| g.transposed())).transpose()?;
            emit(RunEvent::Partial(Arc::new(RunResult { prompt: req.text.to_string(), report: r.clone(), pinned_dla, total_positions: n_pos, compare: None })));
            shown = true;
        }
        if start >= n_pos {
            let Some(mut whole) = report.take() else { anyhow::bail!("no report") };
            whole.steering = req.steer.map(|s| lens_model::output::report::SteeringInfo {
                layer: s.layer,
                alpha: f64::from(s.alpha),
                source: s.source.clone(),
                norm: s.vector.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt(),
                ..Default::default()
            });
            let pinned_dla = pinned.first().map(|_| Grid::from_rows(dla_rows.clone()).map(|g| g.transposed())).transpose()?;
            let compared = match req.compare {
                None => None,
                Some(c) => {
                    let cmp = crate::session::compare::compare_with(engine, other, req.text, &ids, trace, &whole, opts, c, req.truncate_left, progress)?;
                    Some(Arc::new(cmp))
                }
            };
            let res = Arc::new(RunResult { prompt: req.text.to_string(), report: whole, pinned_dla, total_positions: n_pos, compare: compared });
            // A steered result is never reused for a later edit (which may not be steered).
            cache.last_result =
                if req.steer.is_some() { None } else { Some(LastResult { opts: opts.clone(), result: Arc::clone(&res), ids: ids.clone(), dla_rows }) };
            return Ok(res);
        }
    }
    anyhow::bail!("the prompt has no tokens")
}
