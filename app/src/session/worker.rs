//! The one thread that owns the [`LensEngine`]: jobs in (each with an id and a cancellable
//! [`Progress`]), outcomes out; it calls the face's [`Repaint`] whenever something changes (at
//! once for results, at most every [`PROGRESS_REPAINT`] for progress). No egui here: the desktop
//! app hands in a `Repaint` that asks egui for a frame.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};

use lens_model::build::quant::WeightsChoice;
use lens_model::error::Progress;
use lens_model::grid::Grid;
use lens_model::lens::kernel::DecoderKind;
use lens_model::output::report::LensReport;
use lens_model::run::runtime::Device;
use lens_model::source::config::ModelShape;
use lens_model::{LensEngine, LensError, LensOptions};

use crate::session::engine::{OpenProgress, open as open_engine};
use crate::session::run::{RunCache, RunEvent, RunRequest, run_prompt};

/// How the worker asks its face to show something new: `None` = now, `Some(d)` = within `d`.
pub type Repaint = Arc<dyn Fn(Option<std::time::Duration>) + Send + Sync>;

/// Progress of the job in flight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobProgress {
    /// What is running (`loading`, `running the lens`, …).
    pub what: String,
    /// Current stage reported by the engine.
    pub stage: String,
    /// 0..=1.
    pub fraction: f32,
}

/// A vocabulary entry for pin autocompletion.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabEntry {
    /// Token id.
    pub id: u32,
    /// Decoded text (e.g. `" plasma"`).
    pub text: String,
    /// Display text (e.g. `␣plasma`).
    pub display: String,
}

/// What the UI knows about the loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// Bundle name.
    pub name: String,
    /// Bundle folder.
    pub dir: PathBuf,
    /// Shape.
    pub shape: ModelShape,
    /// Family (`gpt2`, `gpt_neo`, …) and residual layout (`sequential` / `parallel`).
    pub family: String,
    /// `sequential` or `parallel`.
    pub residual: String,
    /// Active execution provider.
    pub provider: String,
    /// Why other providers are not used.
    pub provider_notes: Vec<String>,
    /// Runtime library version.
    pub runtime: String,
    /// Vocabulary, sorted by id.
    pub vocab: Arc<Vec<VocabEntry>>,
    /// The tokenizer puts a BOS (a special token) before every prompt.
    pub adds_bos: bool,
    /// The weights of the forward graph (`f32` exact, `int8`, `int4`).
    pub weights: String,
    /// Why those weights (`--weights auto`'s reason), when it chose.
    pub weights_reason: Option<String>,
    /// The short name of the J-lens published for this model (File → Fetch published J-lens),
    /// when the model was opened as one the registry lists.
    pub published_jlens: Option<String>,
}

impl ModelSummary {
    /// A summary from a report alone (tests, reports without an engine); no vocabulary.
    pub fn from_report(report: &LensReport) -> Self {
        let m = &report.model;
        Self {
            name: m.name.clone(),
            dir: PathBuf::new(),
            shape: ModelShape { n_layers: m.n_layers, d_model: m.d_model, n_heads: 0, d_mlp: 0, d_vocab: m.d_vocab, n_ctx: m.n_ctx, eps: 1e-5 },
            family: m.family.clone(),
            residual: m.residual.clone().unwrap_or_else(|| "sequential".into()),
            provider: report.run.provider.clone(),
            provider_notes: Vec::new(),
            runtime: String::new(),
            vocab: Arc::new(Vec::new()),
            adds_bos: report.tokens.first().is_some_and(|t| t.special),
            weights: report.weights().into(),
            weights_reason: report.run.weights_reason.clone(),
            published_jlens: None,
        }
    }

    /// The summary of an opened engine (with its vocabulary).
    pub fn of_engine(engine: &LensEngine, dir: &std::path::Path) -> Self {
        Self {
            name: engine.bundle.name.clone(),
            dir: dir.to_path_buf(),
            shape: engine.bundle.shape.clone(),
            family: engine.bundle.family.clone(),
            residual: engine.bundle.residual.name().into(),
            provider: engine.provider.active.clone(),
            provider_notes: engine.provider.notes.clone(),
            runtime: engine.runtime.version.clone(),
            vocab: Arc::new(Self::vocab_of(engine)),
            adds_bos: engine.tokenizer.adds_bos(),
            weights: engine.bundle.weights.name().into(),
            weights_reason: engine.weights_reason.clone(),
            published_jlens: None,
        }
    }

    /// The vocabulary of an engine.
    pub fn vocab_of(engine: &LensEngine) -> Vec<VocabEntry> {
        Self::vocab_of_tokenizer(&engine.tokenizer, engine.bundle.shape.d_vocab)
    }

    /// The vocabulary of the first `d_vocab` ids of a tokenizer.
    pub fn vocab_of_tokenizer(tokenizer: &lens_model::source::tokenizer::LensTokenizer, d_vocab: usize) -> Vec<VocabEntry> {
        (0..d_vocab as u32)
            .map(|id| VocabEntry { id, text: String::from_utf8_lossy(&tokenizer.token_bytes(id)).into_owned(), display: tokenizer.display(id) })
            .collect()
    }
}

/// One lens result as the UI consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The prompt it was computed for.
    pub prompt: String,
    /// The report (always computed with sub-block rows; the view hides them).
    pub report: LensReport,
    /// Direct logit attribution to the first pinned token // [component][pos]
    pub pinned_dla: Option<Grid<f64>>,
    /// Positions of the whole prompt: more than the report's while it is a partial result.
    pub total_positions: usize,
    /// The second run and the difference, when comparing (only on complete results).
    pub compare: Option<Arc<lens_model::analyses::compare::CompareReport>>,
}

pub use crate::session::compare::CompareWith;

/// The next positions of a run whose first positions are on screen ([`OutcomeKind::More`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunPiece {
    /// The first position it holds (the partial result's length so far).
    pub start: usize,
    /// The report of those positions only.
    pub report: LensReport,
    /// Their direct logit attribution to the first pinned token // [component][pos]
    pub pinned_dla: Option<Grid<f64>>,
}

impl RunResult {
    /// Appends the next positions of the same run. A piece that does not start where this result
    /// ends, or does not fit it, is an error and changes nothing.
    pub fn extend(&mut self, piece: &RunPiece) -> anyhow::Result<()> {
        if piece.start != self.report.n_pos() || self.pinned_dla.is_some() != piece.pinned_dla.is_some() {
            anyhow::bail!("a piece of positions {}.. does not continue a result of {}", piece.start, self.report.n_pos());
        }
        if let (Some(a), Some(b)) = (self.pinned_dla.as_ref(), piece.pinned_dla.as_ref())
            && a.n_rows() != b.n_rows()
        {
            anyhow::bail!("a piece's attribution has {} components, the result's {}", b.n_rows(), a.n_rows());
        }
        // Checks models, sites and options before it changes anything.
        self.report.append_positions(piece.report.clone())?;
        if let (Some(a), Some(b)) = (self.pinned_dla.as_mut(), piece.pinned_dla.as_ref()) {
            a.append_cols(b.clone())?;
        }
        Ok(())
    }
}

/// A job for the worker.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// Resolve (convert if needed) and open a model.
    Load {
        /// Folder (`None` = demo model).
        model: Option<PathBuf>,
        /// Execution provider.
        device: Device,
        /// Runtime library.
        ort_lib: Option<PathBuf>,
        /// Weight format (`auto`: by the memory available).
        weights: WeightsChoice,
    },
    /// Run the lens on a prompt.
    Run {
        /// Prompt text.
        text: String,
        /// Pinned token ids.
        pinned: Vec<u32>,
        /// A token group to follow: a word (its single-token variants) or `TEXT|TEXT|…`.
        group: Option<String>,
        /// Top-k.
        k: usize,
        /// Decoder.
        decoder: DecoderKind,
        /// Keep the last `n_ctx` tokens of a prompt that is too long.
        truncate_left: bool,
        /// A second run to show beside this one, with the difference.
        compare: Option<CompareWith>,
        /// Steer the run ([`lens_model::analyses::steer`]).
        steer: Option<lens_model::analyses::steer::SteerSpec>,
    },
    /// Greedy continuations of `text`, steered by `steer` and not.
    Generate {
        /// The prompt.
        text: String,
        /// The steering.
        steer: lens_model::analyses::steer::SteerSpec,
        /// Tokens to generate.
        n: usize,
    },
    /// Open a tuned lens folder for the `tuned_lens` decoder (checked against the model).
    OpenTunedLens(PathBuf),
    /// Open a J-lens file for the `jacobian_lens` decoder (checked against the model); `file`
    /// [`crate::session::engine::PUBLISHED`] fetches the one published for `model` first.
    OpenJacobianLens {
        /// The file, or `published`.
        file: PathBuf,
        /// What the user opened the model as (a hub id, a folder): finds the published lens.
        model: Option<PathBuf>,
    },
    /// Fit a tuned lens ([`lens_model::lens::tuned_lens::fit`]) on text files, save it in `out` and
    /// use it; every step is reported ([`OutcomeKind::FitStep`]).
    FitLens {
        /// Training text files (each at most 10 MB), joined by a blank line.
        texts: Vec<PathBuf>,
        /// The lens folder to write.
        out: PathBuf,
        /// Steps, tokens per step, ….
        opts: lens_model::lens::tuned_lens::fit::FitOptions,
        /// Continue from `out`'s checkpoint.
        resume: bool,
    },
    /// Fit a J-lens ([`lens_model::analyses::jlens_fit`]) on a prompts file, write it to `out` and
    /// decode with it; every prompt is reported ([`OutcomeKind::JfitPrompt`]).
    FitJlens {
        /// The prompts file (one per line, at most 10 MB).
        prompts: PathBuf,
        /// The lens file to write.
        out: PathBuf,
        /// Truncation, skipped positions, dimensions per run, … (`resume` among them).
        opts: lens_model::analyses::jlens_fit::JlensFitOptions,
    },
    /// An activation-patching sweep ([`lens_model::analyses::patch`]): the clean prompt `clean`
    /// into the corrupted `corrupt`, every site of `kind` at every position.
    PatchSweep {
        /// The clean prompt (the app's prompt).
        clean: String,
        /// The corrupted prompt.
        corrupt: String,
        /// The answer's text (one token).
        target: String,
        /// The token it is measured against (empty: `log p(target)`).
        against: String,
        /// The sites swept.
        kind: lens_model::analyses::patch::PatchKind,
        /// Also attribution patching's first-order estimate of every cell (one backward run).
        estimate: bool,
    },
    /// Gradient × activation of a result ([`lens_model::analyses::grad_x_act`]), the result
    /// returned with it.
    GradXAct(Arc<RunResult>),
    /// Corpus mode over a text file ([`lens_model::analyses::corpus`]).
    Corpus {
        /// The text file (at most 10 MB).
        file: PathBuf,
        /// Tokens per window (`None`: the model's context).
        window: Option<usize>,
        /// Decoder.
        decoder: DecoderKind,
    },
}

/// Where a J-lens fit stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JfitProgress {
    /// Prompts done (fitted, or skipped as too short), those of a resumed fit's earlier runs
    /// included.
    pub done: usize,
    /// Prompts in the file.
    pub total: usize,
    /// Prompts this run did.
    pub this_run: usize,
    /// Seconds since this run started.
    pub seconds: f64,
}

impl JfitProgress {
    /// Seconds per prompt of this run, once it did one.
    pub fn per_prompt(&self) -> Option<f64> {
        (self.this_run > 0).then(|| self.seconds / self.this_run as f64)
    }
}

/// A corpus run as the UI shows it: a legend label and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusRun {
    /// Legend label (file, decoder, and the weights where they are quantized).
    pub label: String,
    /// The aggregated report.
    pub report: lens_model::analyses::corpus::CorpusReport,
}

impl JobKind {
    fn label(&self) -> &'static str {
        match self {
            Self::Load { .. } => "loading the model",
            Self::Run { .. } => "running the lens",
            Self::Corpus { .. } => "running the corpus",
            Self::PatchSweep { .. } => "patching",
            Self::Generate { .. } => "generating",
            Self::OpenTunedLens(_) => "opening the tuned lens",
            Self::OpenJacobianLens { .. } => "opening the J-lens",
            Self::FitLens { .. } => "fitting a tuned lens",
            Self::FitJlens { .. } => "fitting a J-lens",
            Self::GradXAct(_) => "gradient × activation",
        }
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub enum OutcomeKind {
    /// The model is open.
    Loaded(Arc<ModelSummary>),
    /// A result.
    Ran(Arc<RunResult>),
    /// A corpus run finished.
    Corpus(Arc<CorpusRun>),
    /// An activation-patching sweep finished: its report, the corrupted prompt it ran on, and why
    /// the estimate asked for is missing (a quantized bundle has no backward graph).
    PatchSwept(Arc<lens_model::analyses::patch::PatchReport>, String, Option<String>),
    /// Greedy continuations: (steered, unsteered).
    Generated(String, String),
    /// A tuned lens is open (and used by the `tuned_lens` decoder): its folder.
    TunedLens(PathBuf),
    /// A J-lens is open (and used by the `jacobian_lens` decoder): its file.
    JacobianLens(PathBuf),
    /// One step of a fit in progress (the job goes on).
    FitStep(Arc<lens_model::lens::tuned_lens::fit::FitStep>),
    /// A fit finished: its lens is saved in this folder and open.
    Fitted(PathBuf),
    /// One prompt of a J-lens fit is done (the job goes on).
    JfitPrompt(JfitProgress),
    /// A J-lens fit finished: the lens is written to this file and open.
    JlensFitted(PathBuf, Arc<lens_model::analyses::jlens_fit::JlensFitReport>),
    /// The first positions of a result that is still being computed (big models): shown at
    /// once, grown by `More` and finally replaced by `Ran`.
    Partial(Arc<RunResult>),
    /// The next positions of the partial result on screen (only those: a run of many pieces
    /// costs linear time, not a copy of the whole report per piece).
    More(Arc<RunPiece>),
    /// It failed; the previous model and result stay.
    Failed(String),
    /// The user cancelled it.
    Cancelled,
}

impl OutcomeKind {
    /// Whether the job goes on after this outcome (a partial result, a fit's step).
    pub fn is_progress(&self) -> bool {
        matches!(self, Self::Partial(_) | Self::More(_) | Self::FitStep(_) | Self::JfitPrompt(_))
    }
}

/// An outcome with the id of its job.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Job id.
    pub id: u64,
    /// Whether the job was a load.
    pub was_load: bool,
    /// Result.
    pub kind: OutcomeKind,
}

struct Job {
    id: u64,
    kind: JobKind,
    progress: Progress,
}

struct InFlight {
    id: u64,
    progress: Progress,
    is_run: bool,
}

/// Shortest interval between repaints for progress alone.
pub const PROGRESS_REPAINT: std::time::Duration = std::time::Duration::from_millis(100);

/// Handle of the worker thread, owned by the UI.
pub struct Worker {
    jobs: Sender<Job>,
    outcomes: Receiver<Outcome>,
    next_id: u64,
    in_flight: Vec<InFlight>,
    progress: Arc<Mutex<Option<JobProgress>>>,
    repaint: Repaint,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("in_flight", &self.in_flight.len()).finish()
    }
}

impl Worker {
    /// Starts the worker thread.
    /// `piece_positions`: positions per partial result (`None`: by the model's size).
    pub fn spawn(repaint: Repaint, piece_positions: Option<usize>) -> anyhow::Result<Self> {
        let (jobs, job_rx) = channel::<Job>();
        let (out_tx, outcomes) = channel::<Outcome>();
        let for_loop = Arc::clone(&repaint);
        std::thread::Builder::new().name("lens-worker".into()).spawn(move || worker_loop(&job_rx, &out_tx, &for_loop, piece_positions))?;
        Ok(Self { jobs, outcomes, next_id: 1, in_flight: Vec::new(), progress: Arc::new(Mutex::new(None)), repaint })
    }

    /// Queues a job; returns its id. A new run cancels the runs still queued or in flight
    /// (their results would be stale anyway).
    pub fn submit(&mut self, kind: JobKind) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let is_run = matches!(kind, JobKind::Run { .. });
        if is_run {
            for f in self.in_flight.iter().filter(|f| f.is_run) {
                f.progress.cancel();
            }
        }
        let shared = Arc::clone(&self.progress);
        let repaint = Arc::clone(&self.repaint);
        let what = kind.label().to_string();
        let progress = Progress::new(move |stage, fraction| {
            if let Ok(mut g) = shared.lock() {
                *g = Some(JobProgress { what: what.clone(), stage: stage.to_string(), fraction });
            }
            // Progress repaints at most every PROGRESS_REPAINT: the kernel reports hundreds of
            // times a second, and repainting for each (software GL) took half the CPU from the
            // lens. New results repaint at once (the worker loop does).
            repaint(Some(PROGRESS_REPAINT));
        });
        self.in_flight.push(InFlight { id, progress: progress.clone(), is_run });
        if let Ok(mut g) = self.progress.lock() {
            *g = Some(JobProgress { what: kind.label().to_string(), stage: "queued".into(), fraction: 0.0 });
        }
        let _ = self.jobs.send(Job { id, kind, progress });
        id
    }

    /// Cancels every job queued or in flight.
    pub fn cancel_all(&self) {
        for f in &self.in_flight {
            f.progress.cancel();
        }
    }

    /// Whether a job is queued or in flight.
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Progress of the job in flight, if any.
    pub fn progress(&self) -> Option<JobProgress> {
        if self.in_flight.is_empty() {
            return None;
        }
        self.progress.lock().ok().and_then(|g| g.clone())
    }

    /// Outcomes that arrived since the last call.
    pub fn poll(&mut self) -> Vec<Outcome> {
        let mut out = Vec::new();
        while let Ok(o) = self.outcomes.try_recv() {
            if !o.kind.is_progress() {
                self.in_flight.retain(|f| f.id != o.id);
            }
            out.push(o);
        }
        out
    }
}

struct WorkerState {
    engine: Option<LensEngine>,
    /// The last forward pass and result (reused by the next run, see [`RunCache`]).
    cache: RunCache,
    piece_positions: Option<usize>,
    /// The device and runtime library of the last load (for a model compared with).
    device: Device,
    ort_lib: Option<PathBuf>,
    /// The weight choice of the last load (for a model compared with).
    weights: WeightsChoice,
    /// The model of the last comparison with another model (kept for the next run).
    other: Option<(PathBuf, LensEngine)>,
}

fn worker_loop(jobs: &Receiver<Job>, out: &Sender<Outcome>, repaint: &Repaint, piece_positions: Option<usize>) {
    let mut st = WorkerState {
        engine: None,
        cache: RunCache::default(),
        piece_positions,
        device: Device::default(),
        ort_lib: None,
        weights: WeightsChoice::Auto,
        other: None,
    };
    let mut pending: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    loop {
        if pending.is_empty() {
            match jobs.recv() {
                Ok(j) => pending.push_back(j),
                Err(_) => return,
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(j) => pending.push_back(j),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let Some(job) = pending.pop_front() else { continue };
        let was_load = matches!(job.kind, JobKind::Load { .. });
        // A run followed by another queued run is stale: skip it.
        let superseded = matches!(job.kind, JobKind::Run { .. }) && pending.iter().any(|j| matches!(j.kind, JobKind::Run { .. }));
        let kind = if superseded || job.progress.is_cancelled() {
            OutcomeKind::Cancelled
        } else {
            let emit = |partial: OutcomeKind| {
                let _ = out.send(Outcome { id: job.id, was_load, kind: partial });
                repaint(None);
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(&mut st, &job, &emit))) {
                Ok(Ok(k)) => k,
                Ok(Err(e)) => match e.downcast_ref::<LensError>() {
                    Some(LensError::Cancelled) => OutcomeKind::Cancelled,
                    _ => OutcomeKind::Failed(format!("{e:#}")),
                },
                Err(_) => OutcomeKind::Failed("internal error in the lens worker (see the terminal)".into()),
            }
        };
        if out.send(Outcome { id: job.id, was_load, kind }).is_err() {
            return;
        }
        repaint(None);
    }
}

/// Lens work per partial result: about this many floating-point operations (~0.5-1 s here), so
/// that small models finish in one piece and big ones (GPT-2 large/XL, long prompts) show their
/// first positions after about a second and grow from there.
pub const PARTIAL_FLOP: f64 = 3e11;

/// Positions per piece of the lens for a model of this shape with `n_sites` rows.
pub fn positions_per_piece(n_sites: usize, d_model: usize, d_vocab: usize) -> usize {
    let per_pos = 2.0 * (n_sites * d_model * d_vocab) as f64;
    ((PARTIAL_FLOP / per_pos.max(1.0)).ceil() as usize).max(8)
}

/// The token group of the app's group box: `TEXT|TEXT|…` (each one token) or a word (its
/// single-token variants); errors name what is not a token.
pub fn token_group(tok: &lens_model::source::tokenizer::LensTokenizer, text: &str) -> anyhow::Result<lens_model::TokenGroup> {
    use anyhow::Context as _;
    let group = if text.contains('|') { super::groups::group_of_tokens(tok, text.trim(), text) } else { super::groups::group_of_word(tok, text) };
    group.context("group")
}

/// Where the model compared with lives: opened on first use, kept for the next runs.
struct OtherModel<'a> {
    slot: &'a mut Option<(PathBuf, LensEngine)>,
    device: Device,
    ort_lib: Option<&'a std::path::Path>,
    weights: WeightsChoice,
}

impl crate::session::compare::OtherEngine for OtherModel<'_> {
    /// The engine of `model` (opened, or converted and opened, when it is not the one kept).
    fn engine(&mut self, model: &std::path::Path, progress: &Progress) -> anyhow::Result<&mut LensEngine> {
        if self.slot.as_ref().is_none_or(|(p, _)| p != model) {
            *self.slot = None;
            let (_, engine) = open_engine(
                Some(model),
                self.device,
                self.ort_lib,
                self.weights,
                OpenProgress { resolve: progress, open: progress },
                "cannot open the model to compare with,",
            )?;
            *self.slot = Some((model.to_path_buf(), engine));
        }
        match self.slot {
            Some((_, e)) => Ok(e),
            None => anyhow::bail!("internal: the model to compare with is not open"),
        }
    }
}

fn run_job(st: &mut WorkerState, job: &Job, emit: &dyn Fn(OutcomeKind)) -> anyhow::Result<OutcomeKind> {
    match &job.kind {
        JobKind::Load { model, device, ort_lib, weights } => load_job(st, model.as_deref(), *device, ort_lib.as_ref(), *weights, &job.progress),
        JobKind::OpenTunedLens(dir) => {
            let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded: open a model before its tuned lens") };
            crate::session::engine::attach_tuned_lens(engine, Some(dir))?;
            // Results of the old lens must not be reused.
            st.cache.forget_results();
            Ok(OutcomeKind::TunedLens(dir.clone()))
        }
        JobKind::OpenJacobianLens { file, model } => {
            let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded: open a model before its J-lens") };
            let opened = crate::session::engine::attach_jacobian_lens(engine, Some(file), model.as_deref(), &job.progress)?;
            st.cache.forget_results();
            Ok(OutcomeKind::JacobianLens(opened.unwrap_or_else(|| file.clone())))
        }
        JobKind::FitLens { texts, out, opts, resume } => fit_job(st, texts, out, opts, *resume, emit, &job.progress),
        JobKind::FitJlens { prompts, out, opts } => jfit_job(st, prompts, out, opts, emit, &job.progress),
        JobKind::Corpus { file, window, decoder } => corpus_job(st, file, *window, *decoder, &job.progress),
        JobKind::PatchSweep { clean, corrupt, target, against, kind, estimate } => {
            patch_job(st, clean, corrupt, target, against, *kind, *estimate, &job.progress)
        }
        JobKind::Generate { text, steer, n } => {
            let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded") };
            let ids = engine.tokenize(text, false)?;
            let s = lens_model::analyses::steer::steering_of(engine, steer, &job.progress)?;
            let steered = lens_model::analyses::steer::greedy(engine, &ids, Some(&s), *n, &job.progress)?;
            let plain = lens_model::analyses::steer::greedy(engine, &ids, None, *n, &job.progress)?;
            let text_of = |t: &[u32]| String::from_utf8_lossy(&t.iter().flat_map(|&id| engine.tokenizer.token_bytes(id)).collect::<Vec<u8>>()).into_owned();
            Ok(OutcomeKind::Generated(text_of(&steered), text_of(&plain)))
        }
        JobKind::Run { .. } => run_lens_job(st, job, emit),
        JobKind::GradXAct(res) => grad_x_act_job(st, res, &job.progress),
    }
}

/// Gradient × activation of `res` (a plain run of the open model, whole).
fn grad_x_act_job(st: &mut WorkerState, res: &Arc<RunResult>, progress: &lens_model::error::Progress) -> anyhow::Result<OutcomeKind> {
    let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded") };
    if res.compare.is_some() || res.report.steering.is_some() {
        anyhow::bail!("gradient × activation is computed for a plain run: turn Compare and Steering off");
    }
    if res.report.n_pos() < res.total_positions {
        anyhow::bail!("the lens is still running: wait for the whole prompt");
    }
    let g = lens_model::analyses::grad_x_act::of_report(engine, st.device, &res.report, progress)?;
    let mut r = (**res).clone();
    r.report.gradient_x_activation = Some(g);
    Ok(OutcomeKind::Ran(Arc::new(r)))
}

/// Opens a model (converting it first when needed); the old one's traces and results go.
fn load_job(
    st: &mut WorkerState,
    model: Option<&std::path::Path>,
    device: Device,
    ort_lib: Option<&PathBuf>,
    weights: WeightsChoice,
    progress: &Progress,
) -> anyhow::Result<OutcomeKind> {
    let (dir, engine) =
        open_engine(model, device, ort_lib.map(PathBuf::as_path), weights, OpenProgress { resolve: progress, open: progress }, "cannot open the model")?;
    st.weights = weights;
    let published_jlens = model.and_then(|m| lens_model::lens::jacobian_lens::registry::find(&m.to_string_lossy())).map(|p| p.name);
    let summary = ModelSummary { published_jlens, ..ModelSummary::of_engine(&engine, &dir) };
    st.engine = Some(engine);
    st.cache = RunCache::default();
    st.device = device;
    st.ort_lib = ort_lib.cloned();
    Ok(OutcomeKind::Loaded(Arc::new(summary)))
}

/// Fits a tuned lens on the open model, reporting every step; the model then decodes with it.
fn fit_job(
    st: &mut WorkerState,
    texts: &[PathBuf],
    out: &std::path::Path,
    opts: &lens_model::lens::tuned_lens::fit::FitOptions,
    resume: bool,
    emit: &dyn Fn(OutcomeKind),
    progress: &Progress,
) -> anyhow::Result<OutcomeKind> {
    use anyhow::Context as _;
    let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded") };
    let text = crate::session::prompt::read_texts(texts)?;
    let result = lens_model::lens::tuned_lens::fit::fit(engine, &text, opts, out, resume, &mut |s| emit(OutcomeKind::FitStep(Arc::new(s.clone()))), progress)
        .with_context(|| format!("fitting a tuned lens into {}", out.display()))?;
    engine.set_tuned_lens(Some(result.lens))?;
    st.cache.forget_results();
    Ok(OutcomeKind::Fitted(out.to_path_buf()))
}

/// Fits a J-lens on the open model, reporting every prompt; the model then decodes with it.
fn jfit_job(
    st: &mut WorkerState,
    prompts_file: &std::path::Path,
    out: &std::path::Path,
    opts: &lens_model::analyses::jlens_fit::JlensFitOptions,
    emit: &dyn Fn(OutcomeKind),
    progress: &Progress,
) -> anyhow::Result<OutcomeKind> {
    use anyhow::Context as _;
    let device = st.device;
    let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded") };
    crate::session::prompt::check_writable(out)?;
    let text = crate::session::prompt::read_prompt_file(prompts_file)?;
    let prompts = lens_model::analyses::jlens_fit::prompts_of(&text);
    let t0 = std::time::Instant::now();
    let mut first: Option<usize> = None;
    let mut on_prompt = |done: usize, total: usize| {
        let start = *first.get_or_insert(done.saturating_sub(1));
        emit(OutcomeKind::JfitPrompt(JfitProgress { done, total, this_run: done - start, seconds: t0.elapsed().as_secs_f64() }));
    };
    let report = lens_model::analyses::jlens_fit::fit_jacobian_lens(engine, device, &prompts, opts, out, progress, &mut on_prompt)
        .with_context(|| format!("fitting a J-lens into {}", out.display()))?;
    crate::session::engine::attach_jacobian_lens(engine, Some(out), None, progress)?;
    st.cache.forget_results();
    Ok(OutcomeKind::JlensFitted(out.to_path_buf(), Arc::new(report)))
}

/// Corpus mode over one text file with the open model.
fn corpus_job(st: &mut WorkerState, file: &std::path::Path, window: Option<usize>, decoder: DecoderKind, progress: &Progress) -> anyhow::Result<OutcomeKind> {
    let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded") };
    let text = crate::session::prompt::read_prompt_file(file)?;
    let opts = lens_model::analyses::corpus::CorpusOptions {
        window,
        lens: LensOptions { k: 1, decoder, ..LensOptions::default() },
        ..lens_model::analyses::corpus::CorpusOptions::default()
    };
    let report = lens_model::analyses::corpus::run_corpus(engine, &text, &opts, progress)?;
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    // Quantized weights are named in the legend: such a run can never pass for an exact one.
    let weights = if report.run.weights() == "f32" { String::new() } else { format!(" · {} weights", report.run.weights()) };
    Ok(OutcomeKind::Corpus(Arc::new(CorpusRun { label: format!("{name} · {}{weights}", report.decoder), report })))
}

/// Runs an activation-patching sweep of the app's prompt (clean) into `corrupt`, and with
/// `estimate` attribution patching's estimate of it (its failure is said, the sweep kept).
#[allow(clippy::too_many_arguments)]
fn patch_job(
    st: &mut WorkerState,
    clean: &str,
    corrupt: &str,
    target: &str,
    against: &str,
    kind: lens_model::analyses::patch::PatchKind,
    estimate: bool,
    progress: &Progress,
) -> anyhow::Result<OutcomeKind> {
    let device = st.device;
    let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded") };
    let clean_ids = engine.tokenize(clean, false)?;
    let corrupt_ids = engine.tokenize(corrupt, false).map_err(|e| anyhow::anyhow!("the corrupted prompt: {e}"))?;
    let target = crate::session::prompt::single_token(engine, target, "the target")?;
    let against = if against.is_empty() { None } else { Some(crate::session::prompt::single_token(engine, against, "the token to measure against")?) };
    let opts = lens_model::analyses::patch::PatchOptions { kinds: vec![kind], target, against };
    let sweep = progress.part(0.0, if estimate { 0.9 } else { 1.0 });
    let mut report = lens_model::analyses::patch::patch_sweep(engine, &clean_ids, &corrupt_ids, &opts, &sweep)?;
    let mut note = None;
    if estimate {
        let part = progress.part(0.9, 0.1);
        let estimated = lens_model::run::gradients::GradRunner::open(&engine.bundle, device, 0, &part).and_then(|mut runner| {
            lens_model::analyses::attribution_patching::add_estimates(engine, &mut runner, &clean_ids, &corrupt_ids, &mut report, &part)
        });
        match estimated {
            Err(lens_model::LensError::Cancelled) => return Err(lens_model::LensError::Cancelled.into()),
            Err(e) => note = Some(format!("no first-order estimate: {e}")),
            Ok(()) => {}
        }
    }
    Ok(OutcomeKind::PatchSwept(Arc::new(report), corrupt.to_string(), note))
}

/// Runs the lens on a prompt: the forward pass (reused, or run after the kept start of an edit),
/// the positions piece by piece (a partial result first, then the rest), and run B when comparing.
fn run_lens_job(st: &mut WorkerState, job: &Job, emit: &dyn Fn(OutcomeKind)) -> anyhow::Result<OutcomeKind> {
    let JobKind::Run { text, pinned, group, k, decoder, truncate_left, compare, steer } = &job.kind else { anyhow::bail!("internal: not a run job") };
    let Some(engine) = st.engine.as_mut() else { anyhow::bail!("no model is loaded") };
    let groups = match group {
        Some(g) => vec![token_group(&engine.tokenizer, g)?],
        None => Vec::new(),
    };
    // Sub-block rows always (the view hides them), except under the tuned lens, whose
    // translators read block outputs only (the J-lens has none either, but marks them).
    let tuned = |d: DecoderKind| d == DecoderKind::TunedLens;
    let subblocks = !tuned(*decoder) && !matches!(compare, Some(CompareWith::Decoder(d)) if tuned(*d));
    let opts = LensOptions { subblocks, k: (*k).max(1), pinned: pinned.clone(), decoder: *decoder, groups, ..LensOptions::default() };
    let steering = match steer {
        Some(s) => Some(lens_model::analyses::steer::steering_of(engine, s, &job.progress)?),
        None => None,
    };
    let req = RunRequest {
        text,
        opts,
        truncate_left: *truncate_left,
        compare: compare.as_ref(),
        pieces: crate::session::run::Pieces::Partial(st.piece_positions),
        steer: steering.as_ref(),
    };
    let mut other = OtherModel { slot: &mut st.other, device: st.device, ort_lib: st.ort_lib.as_deref(), weights: st.weights };
    let res = run_prompt(engine, &mut st.cache, &mut other, &req, &job.progress, &|e| {
        emit(match e {
            RunEvent::Partial(r) => OutcomeKind::Partial(r),
            RunEvent::More(p) => OutcomeKind::More(p),
        });
    })?;
    Ok(OutcomeKind::Ran(res))
}
