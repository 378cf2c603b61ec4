//! [`AppState`]: everything the app shows, persisted (settings, prompt, files) or transient (results).

use std::path::PathBuf;
use std::sync::Arc;

use lens_model::lens::DecoderKind;
use serde::{Deserialize, Serialize};

use super::theme::ColorMap;
use crate::session::worker::{ModelSummary, RunResult};

/// A cell of the lens grids, in report coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// Site index into `report.sites` (0 = embed).
    pub site: usize,
    /// Token position.
    pub pos: usize,
}

/// The four lens panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Top-1 token, coloured by logit or probability.
    Logits,
    /// Rank of a target token.
    Ranks,
    /// KL divergence to the final or input distribution.
    Kl,
    /// Entropy of the site's distribution.
    Entropy,
}

impl Metric {
    /// All panels in display order.
    pub const ALL: [Self; 4] = [Self::Logits, Self::Ranks, Self::Kl, Self::Entropy];
    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            Self::Logits => "Logits",
            Self::Ranks => "Ranks",
            Self::Kl => "KL",
            Self::Entropy => "Entropy",
        }
    }
}

/// How the lens panels are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PanelLayout {
    /// One panel at a time, chosen by tabs.
    #[default]
    Tabs,
    /// All visible panels next to each other.
    SideBySide,
    /// All visible panels above each other.
    Stacked,
}

/// What the Logits panel colours by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LogitColor {
    /// Top-1 probability (0..1).
    #[default]
    Probability,
    /// Top-1 logit (min..max of the report).
    Logit,
}

/// Which token's rank the Ranks panel shows (also the token followed by the inspector's trajectory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RankTarget {
    /// The final site's top-1 at the same position.
    #[default]
    FinalTop1,
    /// The true next token.
    Next,
    /// The input token at the position.
    Input,
    /// The pinned token (falls back to the final top-1 without a pin).
    Pinned,
}

impl RankTarget {
    /// All targets.
    pub const ALL: [Self; 4] = [Self::FinalTop1, Self::Next, Self::Input, Self::Pinned];
    /// Menu name.
    pub fn name(self) -> &'static str {
        match self {
            Self::FinalTop1 => "final top-1",
            Self::Next => "next token",
            Self::Input => "input token",
            Self::Pinned => "pinned token",
        }
    }
}

/// Reference distribution of the KL panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KlRef {
    /// KL(final || site).
    #[default]
    Final,
    /// KL(input || site).
    Input,
}

/// Which token the contributions panel attributes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ContribTarget {
    /// The final top-1.
    #[default]
    FinalTop1,
    /// The true next token.
    Next,
    /// The pinned token.
    Pinned,
}

/// The visible positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PosWindow {
    /// All positions.
    All,
    /// The last n positions.
    LastN(usize),
    /// Positions start..=end (clamped to the prompt).
    Range(usize, usize),
}

/// View settings shared by all lens panels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewSettings {
    /// Show the `.attn` (resid_mid) rows.
    pub subblocks: bool,
    /// Show every n-th layer (the last layer is always shown).
    pub layer_step: usize,
    /// Visible positions.
    pub positions: PosWindow,
    /// Input (embed) at the top instead of the bottom.
    pub flip: bool,
    /// Colour map of the sequential panels.
    pub colormap: ColorMap,
    /// Panel arrangement.
    pub layout: PanelLayout,
    /// Which panels are shown (side by side / stacked), in [`Metric::ALL`] order.
    pub shown: [bool; 4],
    /// The tab shown in [`PanelLayout::Tabs`].
    pub tab: Metric,
    /// Logits panel colouring.
    pub logit_color: LogitColor,
    /// Ranks panel target.
    pub rank_target: RankTarget,
    /// Rank colour scale cap (100 or 1000).
    pub rank_cap: u32,
    /// KL reference.
    pub kl_ref: KlRef,
    /// KL colour cap, nats.
    pub kl_cap: f64,
    /// Contributions target.
    pub contrib_target: ContribTarget,
    /// Cell width and height in points.
    pub cell_w: f32,
    /// Cell height in points.
    pub cell_h: f32,
    /// Show the inspector (right).
    pub show_inspector: bool,
    /// Show the contributions (bottom).
    pub show_contributions: bool,
    /// Top-k computed per cell (a run setting: changing it runs the lens again).
    pub top_k: usize,
    /// The decoder applied at every site (a run setting: changing it runs the lens again).
    pub decoder: DecoderKind,
    /// Hide a leading special token (the BOS column: its lens is degenerate, an attention sink).
    pub hide_bos: bool,
    /// A prompt longer than the model's context keeps its last `n_ctx` tokens instead of being
    /// refused (a run setting).
    #[serde(default)]
    pub truncate_left: bool,
}

impl ViewSettings {
    /// Whether going from `self` to `other` changes what the lens computes (not only the painting).
    pub fn run_differs(&self, other: &Self) -> bool {
        self.top_k != other.top_k || self.decoder != other.decoder || self.truncate_left != other.truncate_left
    }
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            subblocks: false,
            layer_step: 1,
            positions: PosWindow::All,
            flip: false,
            colormap: ColorMap::Viridis,
            layout: PanelLayout::Tabs,
            shown: [true; 4],
            tab: Metric::Logits,
            logit_color: LogitColor::Probability,
            rank_target: RankTarget::FinalTop1,
            rank_cap: 1000,
            kl_ref: KlRef::Final,
            kl_cap: 30.0,
            contrib_target: ContribTarget::FinalTop1,
            cell_w: 64.0,
            cell_h: 20.0,
            show_inspector: true,
            show_contributions: true,
            top_k: 10,
            decoder: DecoderKind::LogitLens,
            hide_bos: false,
            truncate_left: false,
        }
    }
}

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
    /// Figure export settings (format, size, resolution, which panels).
    pub export: ExportSettings,
    /// The Export figure window is open.
    #[serde(skip)]
    pub show_export: bool,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            prompt: DEFAULT_PROMPT.to_string(),
            model_path: None,
            recent_prompts: Vec::new(),
            recent_models: Vec::new(),
            view: ViewSettings::default(),
            pin_text: String::new(),
            model: None,
            model_source: None,
            result: None,
            pinned: None,
            hover: None,
            selection: None,
            scroll: egui::Vec2::ZERO,
            error: None,
            notice: None,
            progress: None,
            show_shortcuts: false,
            show_about: false,
            show_open_id: false,
            open_id_text: String::new(),
            export: ExportSettings::default(),
            show_export: false,
        }
    }
}

/// How figures are exported from the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportSettings {
    /// `svg`, `pdf` or `png`.
    pub format: String,
    /// Width in inches.
    pub width_in: f64,
    /// PNG dots per inch.
    pub dpi: f64,
    /// All shown panels stacked in one figure (else the current tab).
    pub all_panels: bool,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self { format: "pdf".into(), width_in: 7.0, dpi: 300.0, all_panels: false }
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
        !self.source.exists() && self.source.to_str().is_some_and(lens_model::resolve::is_hub_id)
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
