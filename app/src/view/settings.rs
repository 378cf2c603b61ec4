//! What the user chose to see: the view settings every face reads (the app's panels, figures,
//! `render`). Settings that change the run (top-k, decoder, truncation) are told apart from those
//! that only change the painting by [`ViewSettings::run_differs`].

use lens_model::lens::kernel::DecoderKind;
use serde::{Deserialize, Serialize};

use super::theme::ColorMap;

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
    /// The followed token group's summed probability (0..1); the probability without a group.
    Group,
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
    /// Mark each position's prediction depth in the grids: the first row from which the top-1
    /// stays the final one (a painting setting).
    #[serde(default)]
    pub show_depth: bool,
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
            show_depth: false,
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
