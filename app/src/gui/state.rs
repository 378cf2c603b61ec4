//! [`AppState`]: everything the app shows, persisted (settings, prompt, files) or transient (results).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::session::worker::{ModelSummary, RunResult};

pub use crate::view::settings::*;

pub use crate::session::worker::JobProgress;

/// The whole state of the app. Persisted fields are restored on the next start; `#[serde(skip)]`
/// fields are results and interaction state (never tensors).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AppState {
    /// The prompt text.
    pub prompt: String,
    /// The model folder (`None` = the demo model).
    pub model_path: Option<PathBuf>,
    /// Recently opened prompt files, newest first.
    pub recent_prompts: Vec<PathBuf>,
    /// Recently opened models, newest first (older settings stored bare paths; they still load).
    #[serde(deserialize_with = "recent_models_compat")]
    pub recent_models: Vec<RecentModel>,
    /// View settings.
    pub view: ViewSettings,
    /// Text of the pinned token (e.g. `" plasma"`), restored with the prompt.
    pub pin_text: String,
    /// Text of the group box: a word (its single-token variants) or `TEXT|TEXT|…`.
    pub group_text: String,
    /// The token group followed (the group box's text when it was applied).
    #[serde(skip)]
    pub group: Option<String>,

    /// The loaded model.
    #[serde(skip)]
    pub model: Option<Arc<ModelSummary>>,
    /// What was opened to load it: a folder or a Hugging Face id (the demo model's folder for the
    /// demo); its entry in `recent_models` keeps the BOS choice.
    #[serde(skip)]
    pub model_source: Option<PathBuf>,
    /// The latest result.
    #[serde(skip)]
    pub result: Option<Arc<RunResult>>,
    /// The report file the result on screen was opened from, with no model behind it: editing
    /// and running are off until a model is opened.
    #[serde(skip)]
    pub report_file: Option<PathBuf>,
    /// The pinned token id, when one is pinned.
    #[serde(skip)]
    pub pinned: Option<u32>,
    /// The cell under the mouse in any grid.
    #[serde(skip)]
    pub hover: Option<Cell>,
    /// The selected cell.
    #[serde(skip)]
    pub selection: Option<Cell>,
    /// Shared scroll offset of the grids (points).
    #[serde(skip)]
    pub scroll: egui::Vec2,
    /// The visible error message, if any.
    #[serde(skip)]
    pub error: Option<String>,
    /// The error stays until dismissed (a refused tuned lens), not replaced by the next result.
    #[serde(skip)]
    pub error_sticky: bool,
    /// A short informational message (e.g. "cancelled").
    #[serde(skip)]
    pub notice: Option<String>,
    /// Progress of the job in flight.
    #[serde(skip)]
    pub progress: Option<JobProgress>,
    /// Keyboard shortcuts window open.
    #[serde(skip)]
    pub show_shortcuts: bool,
    /// About window open.
    #[serde(skip)]
    pub show_about: bool,
    /// The "Open Hugging Face model" window is open.
    #[serde(skip)]
    pub show_open_id: bool,
    /// The id typed there (`org/name`).
    #[serde(skip)]
    pub open_id_text: String,
    /// A checkpoint that `--weights auto` would open quantized: the window asking which
    /// weights to use is shown until the user answers.
    #[serde(skip)]
    pub ask_weights: Option<WeightsAsk>,
    /// Figure export settings (format, size, resolution, which panels).
    pub export: ExportSettings,
    /// The Export figure window is open.
    #[serde(skip)]
    pub show_export: bool,
    /// The Corpus window is open.
    #[serde(skip)]
    pub show_corpus: bool,
    /// Corpus runs shown overlaid, oldest first (at most [`MAX_CORPUS_RUNS`]).
    #[serde(skip)]
    pub corpus_runs: Vec<std::sync::Arc<crate::session::worker::CorpusRun>>,
    /// The corpus statistic plotted (`kl_to_final`, …).
    pub corpus_metric: String,
    /// The tuned lens open for the `tuned_lens` decoder (its folder).
    #[serde(skip)]
    pub tuned_lens: Option<PathBuf>,
    /// The J-lens open for the `jacobian_lens` decoder (its file; not remembered: a new session
    /// opens no lens).
    #[serde(skip)]
    pub jacobian_lens: Option<PathBuf>,
    /// The Fit tuned lens window is open.
    #[serde(skip)]
    pub show_fit: bool,
    /// The Fit tuned lens window's settings (remembered).
    #[serde(default)]
    pub fit: FitSettings,
    /// A second run shown beside the first, with the difference A − B (every lens panel).
    #[serde(default)]
    pub compare: Option<crate::session::worker::CompareWith>,
    /// The text of the compare-with-prompt box.
    #[serde(default)]
    pub compare_text: String,
    /// The Fit J-lens window is open.
    #[serde(skip)]
    pub show_jfit: bool,
    /// The Fit J-lens window's settings (remembered).
    #[serde(default)]
    pub jfit: JfitSettings,
    /// The J-lens fit in progress or last finished: prompts done and what it took.
    #[serde(skip)]
    pub jfit_progress: Option<crate::session::worker::JfitProgress>,
    /// The last J-lens fit that finished: the file written and what it did.
    #[serde(skip)]
    pub jfit_done: Option<(PathBuf, std::sync::Arc<lens_model::analyses::jlens_fit::JlensFitReport>)>,
    /// The steps of the fit in progress or last finished (for its loss plot).
    #[serde(skip)]
    pub fit_history: Vec<std::sync::Arc<lens_model::lens::tuned_lens::fit::FitStep>>,
    /// The Activation patching window is open.
    #[serde(skip)]
    pub show_patch: bool,
    /// The Activation patching window's settings (remembered).
    #[serde(default)]
    pub patch: PatchSettings,
    /// The last patching sweep's report.
    #[serde(skip)]
    pub patch_result: Option<std::sync::Arc<lens_model::analyses::patch::PatchReport>>,
    /// The corrupted prompt that sweep ran on (the window's box may have changed since).
    #[serde(skip)]
    pub patch_corrupt: String,
    /// Why the last sweep has no first-order estimate, when one was asked for.
    #[serde(skip)]
    pub patch_estimate_note: Option<String>,
    /// The Steering window is open.
    #[serde(skip)]
    pub show_steer: bool,
    /// The steering settings (off by default; not remembered on: a new session starts unsteered).
    #[serde(skip)]
    pub steer: SteerSettings,
    /// The last greedy continuations: (steered, unsteered).
    #[serde(skip)]
    pub steer_generated: Option<(String, String)>,
    /// The Open remote model window is open.
    #[serde(skip)]
    pub show_remote: bool,
    /// Its settings (remembered).
    #[serde(default)]
    pub remote: RemoteSettings,
    /// The nnsight run in progress (its Cancel) and its last status line.
    #[serde(skip)]
    pub remote_running: Option<(lens_model::error::Progress, String)>,
}

/// File → Open remote model…: the lens of the prompt computed by nnsight.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RemoteSettings {
    /// A Hugging Face folder or hub id, as nnsight loads it.
    pub model: String,
    /// On NDIF (`NDIF_API_KEY`) instead of this machine.
    pub ndif: bool,
    /// The Python with torch and nnsight (empty: `LOGIT_LENS_PYTHON`, else python3).
    pub python: String,
}

/// What the Steering window adds: `alpha` × a vector at the output of block `layer`.
#[derive(Debug, Clone, PartialEq)]
pub struct SteerSettings {
    /// The runs are steered.
    pub enabled: bool,
    /// The block whose output is steered.
    pub layer: usize,
    /// The vector: block `layer`'s output at the last position of `a` minus `b`'s …
    pub a: String,
    /// … (the second prompt).
    pub b: String,
    /// … or a `.npy` file (used when not empty).
    pub file: String,
    /// The scale.
    pub alpha: f32,
}

impl Default for SteerSettings {
    fn default() -> Self {
        Self { enabled: false, layer: 0, a: String::new(), b: String::new(), file: String::new(), alpha: 4.0 }
    }
}

impl SteerSettings {
    /// The steering spec these settings give, when they give one (a file, or two prompts).
    pub fn spec(&self) -> Option<lens_model::analyses::steer::SteerSpec> {
        use lens_model::analyses::steer::{SteerSource, SteerSpec};
        let source = if !self.file.trim().is_empty() {
            SteerSource::File(PathBuf::from(self.file.trim()))
        } else if !self.a.is_empty() && !self.b.is_empty() {
            SteerSource::Texts(self.a.clone(), self.b.clone())
        } else {
            return None;
        };
        Some(SteerSpec { layer: self.layer, source, alpha: self.alpha })
    }

    /// The spec the runs use: [`Self::spec`] when steering is on.
    pub fn active(&self) -> Option<lens_model::analyses::steer::SteerSpec> {
        if self.enabled { self.spec() } else { None }
    }
}

/// What the Activation patching window sweeps: the app's prompt (clean) into `corrupt`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PatchSettings {
    /// The corrupted prompt (the same number of tokens as the app's prompt).
    pub corrupt: String,
    /// The answer, one token (`" Paris"`).
    pub target: String,
    /// The token it is measured against (empty: `log p(target)`).
    pub against: String,
    /// The sites swept.
    pub kind: lens_model::analyses::patch::PatchKind,
    /// Also attribution patching's first-order estimate, shown beside the exact effects.
    pub estimate: bool,
}

impl Default for PatchSettings {
    fn default() -> Self {
        Self { corrupt: String::new(), target: String::new(), against: String::new(), kind: lens_model::analyses::patch::PatchKind::Resid, estimate: true }
    }
}

/// What the Fit tuned lens window fits on and where it saves.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FitSettings {
    /// The training text file.
    pub text: Option<PathBuf>,
    /// The lens folder to write.
    pub out: Option<PathBuf>,
    /// Optimiser steps.
    pub steps: usize,
    /// Tokens per step.
    pub tokens: usize,
    /// The user agreed to replace the lens already in `out` (the CLI's `--overwrite`); reset
    /// whenever another folder is chosen.
    pub replace: bool,
}

impl Default for FitSettings {
    fn default() -> Self {
        let d = lens_model::lens::tuned_lens::fit::FitOptions::default();
        Self { text: None, out: None, steps: d.steps, tokens: d.tokens_per_step, replace: false }
    }
}

/// What the Fit J-lens window fits on and where it writes (the CLI's `fit-jacobian-lens` options).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct JfitSettings {
    /// The prompts file: one prompt per line.
    pub prompts: Option<PathBuf>,
    /// The lens file to write (`.pt`).
    pub out: Option<PathBuf>,
    /// Prompts are truncated to this many tokens.
    pub max_seq_len: usize,
    /// Leading positions left out of the average (and as targets).
    pub skip_first: usize,
    /// Output dimensions per backward run (speed and memory only).
    pub dim_batch: usize,
    /// Source layers, comma-separated (`0,4,8`); empty: every block output below the last.
    pub layers: String,
    /// Store the matrices in float32 (default float16, as the reference writes them).
    pub f32: bool,
    /// The user agreed to replace the file at `out` (the CLI's `--overwrite`); reset whenever
    /// another file is chosen.
    pub replace: bool,
}

impl Default for JfitSettings {
    fn default() -> Self {
        let d = lens_model::analyses::jlens_fit::JlensFitOptions::default();
        Self {
            prompts: None,
            out: None,
            max_seq_len: d.max_seq_len,
            skip_first: d.skip_first,
            dim_batch: d.dim_batch,
            layers: String::new(),
            f32: !d.half,
            replace: false,
        }
    }
}

impl JfitSettings {
    /// The source layers asked for (`None`: all), or why the text is not a list of layers.
    pub fn layer_list(&self) -> Result<Option<Vec<usize>>, String> {
        let t = self.layers.trim();
        if t.is_empty() {
            return Ok(None);
        }
        t.split(',')
            .map(|p| p.trim().parse::<usize>().map_err(|_| format!("source layers: {:?} is not a layer number (e.g. 0,4,8; empty: all)", p.trim())))
            .collect::<Result<Vec<usize>, String>>()
            .map(Some)
    }
}

/// Corpus runs kept for overlaying.
pub const MAX_CORPUS_RUNS: usize = 6;

impl Default for AppState {
    fn default() -> Self {
        Self {
            prompt: DEFAULT_PROMPT.to_string(),
            model_path: None,
            recent_prompts: Vec::new(),
            recent_models: Vec::new(),
            view: ViewSettings::default(),
            pin_text: String::new(),
            group_text: String::new(),
            group: None,
            model: None,
            model_source: None,
            result: None,
            report_file: None,
            pinned: None,
            hover: None,
            selection: None,
            scroll: egui::Vec2::ZERO,
            error: None,
            error_sticky: false,
            notice: None,
            progress: None,
            show_shortcuts: false,
            show_about: false,
            show_open_id: false,
            open_id_text: String::new(),
            ask_weights: None,
            export: ExportSettings::default(),
            show_export: false,
            show_corpus: false,
            corpus_runs: Vec::new(),
            corpus_metric: "kl_to_final".into(),
            tuned_lens: None,
            jacobian_lens: None,
            show_fit: false,
            show_jfit: false,
            jfit: JfitSettings::default(),
            jfit_progress: None,
            jfit_done: None,
            fit: FitSettings::default(),
            show_patch: false,
            patch: PatchSettings::default(),
            patch_result: None,
            patch_corrupt: String::new(),
            patch_estimate_note: None,
            show_steer: false,
            steer: SteerSettings::default(),
            show_remote: false,
            remote: RemoteSettings::default(),
            remote_running: None,
            steer_generated: None,
            fit_history: Vec::new(),
            compare: None,
            compare_text: String::new(),
        }
    }
}

/// Prompt of a first start.
pub const DEFAULT_PROMPT: &str = "The Eiffel Tower is located in the city of Paris. The capital of France is";

/// Most entries kept in a recent-files list.
pub const MAX_RECENT: usize = 10;

/// Moves `path` to the front of `list`.
pub fn push_recent(list: &mut Vec<PathBuf>, path: PathBuf) {
    list.retain(|p| p != &path);
    list.insert(0, path);
    list.truncate(MAX_RECENT);
}

/// A recently opened model: what was opened (a folder or a Hugging Face id), what it turned out to
/// be, and the BOS choice made for it (restored when it is opened again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentModel {
    /// The folder or the Hugging Face id (`org/name[@revision]`) as opened.
    pub source: PathBuf,
    /// Its family (`gpt2`, `llama`, …), once it has been loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Its tokenizer puts a BOS first.
    #[serde(default)]
    pub adds_bos: bool,
    /// The BOS column is hidden for it.
    #[serde(default)]
    pub hide_bos: bool,
}

impl RecentModel {
    /// A model known only by its path or id (settings of older versions).
    pub fn bare(source: PathBuf) -> Self {
        Self { source, family: None, adds_bos: false, hide_bos: false }
    }

    /// Whether `source` is a Hugging Face id rather than a folder.
    pub fn is_hub_id(&self) -> bool {
        lens_model::run::resolve::names_hub_id(&self.source)
    }

    /// The hover text of its menu entry: what kind of source it is, and the whole path or id.
    pub fn hover_text(&self) -> String {
        let kind = if self.is_hub_id() { "Hugging Face id" } else { "folder" };
        format!("{kind}: {}", self.source.display())
    }

    /// The menu label: the id or folder, the family, the BOS state.
    pub fn label(&self) -> String {
        let mut s = self.source.display().to_string();
        if let Some(f) = &self.family {
            s.push_str(&format!("  ·  {f}"));
        }
        if self.adds_bos {
            s.push_str(if self.hide_bos { "  ·  BOS hidden" } else { "  ·  BOS shown" });
        }
        s
    }
}

/// Moves `entry` to the front of `list` (replacing the entry of the same source).
pub fn push_recent_model(list: &mut Vec<RecentModel>, entry: RecentModel) {
    list.retain(|m| m.source != entry.source);
    list.insert(0, entry);
    list.truncate(MAX_RECENT);
}

fn recent_models_compat<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RecentModel>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Entry(RecentModel),
        Path(PathBuf),
    }
    let stored = Vec::<Stored>::deserialize(d)?;
    Ok(stored
        .into_iter()
        .map(|s| match s {
            Stored::Entry(e) => e,
            Stored::Path(p) => RecentModel::bare(p),
        })
        .collect())
}

/// The question shown before a checkpoint is converted with quantized weights.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsAsk {
    /// The checkpoint folder.
    pub path: std::path::PathBuf,
    /// What `auto` chose for it.
    pub format: lens_model::build::quant::WeightFormat,
    /// Why (sizes and the memory available).
    pub reason: String,
}

impl AppState {
    /// Why decoder `d` cannot be chosen now (its lens is not open), or `None` when it can.
    pub fn decoder_missing(&self, d: lens_model::lens::kernel::DecoderKind) -> Option<&'static str> {
        use lens_model::lens::kernel::DecoderKind;
        match d {
            DecoderKind::TunedLens if self.tuned_lens.is_none() => Some("No tuned lens is open: File → Open tuned lens… or File → Fit tuned lens…"),
            DecoderKind::JacobianLens if self.jacobian_lens.is_none() => Some("No J-lens is open: File → Open J-lens… (or Fetch published J-lens)"),
            _ => None,
        }
    }
}
