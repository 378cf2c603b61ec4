//! [`FigureSpec`]: every setting a figure depends on (serialised into its provenance).

use serde::{Deserialize, Serialize};

use crate::view::settings::{KlRef, LogitColor, Metric, PosWindow, RankTarget, ViewSettings};
use crate::view::theme::ColorMap;

/// Which view a figure shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureView {
    /// Top-1 tokens coloured by logit.
    Logits,
    /// Top-1 tokens coloured by probability.
    Probs,
    /// Ranks.
    Ranks,
    /// KL divergence.
    Kl,
    /// Entropy.
    Entropy,
    /// Direct logit attribution of every sub-block over positions.
    Contributions,
    /// Gradient × activation of every site over positions (computed through the model's
    /// backward graph).
    #[serde(rename = "grad_x_act")]
    GradXAct,
}

impl std::str::FromStr for FigureView {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "logits" => Self::Logits,
            "probs" => Self::Probs,
            "ranks" => Self::Ranks,
            "kl" => Self::Kl,
            "entropy" => Self::Entropy,
            "contributions" => Self::Contributions,
            "grad-x-act" | "grad_x_act" => Self::GradXAct,
            other => return Err(format!("unknown view {other:?}; use logits, probs, ranks, kl, entropy, contributions or grad-x-act")),
        })
    }
}

/// Whose rank the Ranks view shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankOf {
    /// The final top-1.
    Final,
    /// The true next token.
    Next,
    /// The input token.
    Input,
    /// A chosen token (its text, e.g. `" plasma"`).
    Token(String),
}

/// Everything a figure depends on besides the model and the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FigureSpec {
    /// The view.
    pub view: FigureView,
    /// Show the `.attn` rows.
    pub subblocks: bool,
    /// Every n-th layer (the last is always kept).
    pub layer_step: usize,
    /// Only the last N positions.
    pub last: Option<usize>,
    /// Only positions A..=B.
    pub positions: Option<(usize, usize)>,
    /// Rank target.
    pub rank_of: RankOf,
    /// Rank colour cap (100 or 1000).
    pub rank_cap: u32,
    /// KL reference: `final` or `input`.
    pub kl_vs: String,
    /// KL colour cap, nats.
    pub kl_cap: f64,
    /// Colour map name.
    pub colormap: String,
    /// Contributions' and gradient × activation's target: `final` or `next`.
    pub contrib_target: String,
    /// Figure width, inches.
    pub width_in: f64,
    /// PNG resolution, dots per inch.
    pub dpi: f64,
    /// Title (default: derived from the view).
    pub title: Option<String>,
    /// The decoder (`logit_lens`, `tuned_lens`, `jacobian_lens`, `last_block`, `last_mlp`, `raw`).
    pub decoder: String,
    /// Leave out a leading special token (the BOS column).
    pub hide_bos: bool,
    /// A prompt longer than the context keeps its last `n_ctx` tokens (else it is refused).
    #[serde(default)]
    pub truncate_left: bool,
    /// Mark each position's prediction depth (`--depth`).
    #[serde(default)]
    pub depth: bool,
    /// The tuned lens folder of the `tuned_lens` decoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_lens: Option<String>,
    /// The J-lens file of the `jacobian_lens` decoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jacobian_lens: Option<String>,
}

impl Default for FigureSpec {
    fn default() -> Self {
        Self {
            view: FigureView::Logits,
            subblocks: false,
            layer_step: 1,
            last: None,
            positions: None,
            rank_of: RankOf::Final,
            rank_cap: 100,
            kl_vs: "final".into(),
            kl_cap: 30.0,
            colormap: "viridis".into(),
            contrib_target: "final".into(),
            width_in: 7.0,
            dpi: 300.0,
            title: None,
            decoder: "logit_lens".into(),
            hide_bos: false,
            truncate_left: false,
            depth: false,
            tuned_lens: None,
            jacobian_lens: None,
        }
    }
}

/// Named presets reproducing the figures of the original logit-lens write-up.
pub const PRESETS: &[(&str, &str)] = &[
    ("top1-logit", "top-1 tokens coloured by logit"),
    ("rank-final-100", "rank of the final top-1, log scale capped at 100"),
    ("kl-final", "KL(final || layer), including the input row"),
    ("kl-input", "KL(input || layer)"),
    ("rank-input-1000", "rank of the input token, log scale capped at 1000"),
];

impl FigureSpec {
    /// Applies a preset from [`PRESETS`].
    pub fn preset(&mut self, name: &str) -> Result<(), String> {
        match name {
            "top1-logit" => self.view = FigureView::Logits,
            "rank-final-100" => {
                self.view = FigureView::Ranks;
                self.rank_of = RankOf::Final;
                self.rank_cap = 100;
            }
            "kl-final" => {
                self.view = FigureView::Kl;
                self.kl_vs = "final".into();
            }
            "kl-input" => {
                self.view = FigureView::Kl;
                self.kl_vs = "input".into();
            }
            "rank-input-1000" => {
                self.view = FigureView::Ranks;
                self.rank_of = RankOf::Input;
                self.rank_cap = 1000;
            }
            other => {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                return Err(format!("unknown preset {other:?}; presets: {}", names.join(", ")));
            }
        }
        Ok(())
    }

    /// The colour map.
    pub fn color_map(&self) -> Result<ColorMap, String> {
        ColorMap::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(&self.colormap))
            .ok_or_else(|| format!("unknown colour map {:?}; use viridis, magma or cividis", self.colormap))
    }

    /// The GUI view settings that show the same thing (so screen and figure share one view model).
    pub fn view_settings(&self) -> Result<ViewSettings, String> {
        let mut v = ViewSettings {
            subblocks: self.subblocks,
            layer_step: self.layer_step.max(1),
            hide_bos: self.hide_bos,
            show_depth: self.depth,
            ..ViewSettings::default()
        };
        v.positions = match (self.last, self.positions) {
            (Some(n), None) => PosWindow::LastN(n),
            (None, Some((a, b))) => PosWindow::Range(a, b),
            (None, None) => PosWindow::All,
            (Some(_), Some(_)) => return Err("--last and --positions exclude each other".into()),
        };
        v.colormap = self.color_map()?;
        v.logit_color = if self.view == FigureView::Probs { LogitColor::Probability } else { LogitColor::Logit };
        v.rank_target = match self.rank_of {
            RankOf::Final => RankTarget::FinalTop1,
            RankOf::Next => RankTarget::Next,
            RankOf::Input => RankTarget::Input,
            RankOf::Token(_) => RankTarget::Pinned,
        };
        if self.rank_cap < 2 {
            return Err("--rank-cap must be at least 2".into());
        }
        v.rank_cap = self.rank_cap;
        v.kl_ref = match self.kl_vs.as_str() {
            "final" => KlRef::Final,
            "input" => KlRef::Input,
            other => return Err(format!("--kl-vs {other:?}: use final or input")),
        };
        if self.kl_cap.is_nan() || self.kl_cap <= 0.0 {
            return Err("--kl-cap must be positive".into());
        }
        v.kl_cap = self.kl_cap;
        v.tab = self.metric();
        if !(self.width_in > 0.5 && self.width_in < 100.0) {
            return Err(format!("--width-in {} is out of range (0.5..100 inches)", self.width_in));
        }
        if !(self.dpi >= 10.0 && self.dpi <= 2400.0) {
            return Err(format!("--dpi {} is out of range (10..2400)", self.dpi));
        }
        Ok(v)
    }

    /// The lens panel this view draws (contributions draw their own grid).
    pub fn metric(&self) -> Metric {
        match self.view {
            FigureView::Logits | FigureView::Probs | FigureView::Contributions | FigureView::GradXAct => Metric::Logits,
            FigureView::Ranks => Metric::Ranks,
            FigureView::Kl => Metric::Kl,
            FigureView::Entropy => Metric::Entropy,
        }
    }
}
