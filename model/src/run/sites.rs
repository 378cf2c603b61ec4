//! Sites: the rows of every lens grid (README, "Metrics").

use serde::{Deserialize, Serialize};

use crate::build::arch::Residual;

/// Where in the residual stream a row is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SiteKind {
    /// `blocks.0.hook_resid_pre`: token + position embedding.
    Embed,
    /// `blocks.{l}.hook_resid_mid`: after layer `l`'s attention.
    Attn(usize),
    /// `blocks.{l}.hook_resid_post`: after layer `l`.
    Block(usize),
}

impl SiteKind {
    /// The label used in reports and grids: `embed`, `3.attn`, `3`.
    pub fn label(self) -> String {
        match self {
            Self::Embed => "embed".into(),
            Self::Attn(l) => format!("{l}.attn"),
            Self::Block(l) => l.to_string(),
        }
    }

    /// The label in a model with this residual layout: a parallel block has no `resid_mid`, so its
    /// sub-block row is the derived `resid_pre + attn_out`, labelled `3.pre+attn`.
    pub fn label_in(self, residual: Residual) -> String {
        match (self, residual) {
            (Self::Attn(l), Residual::Parallel) => format!("{l}.pre+attn"),
            _ => self.label(),
        }
    }

    /// Parses a label produced by [`SiteKind::label`] or [`SiteKind::label_in`].
    pub fn parse(label: &str) -> Option<Self> {
        if label == "embed" {
            return Some(Self::Embed);
        }
        if let Some(l) = label.strip_suffix(".attn").or_else(|| label.strip_suffix(".pre+attn")) {
            return l.parse().ok().map(Self::Attn);
        }
        label.parse().ok().map(Self::Block)
    }
}

/// Rows in order, bottom (input) to top (output): `embed, [0.attn,] 0, [1.attn,] 1, ...`.
pub fn site_list(n_layers: usize, subblocks: bool) -> Vec<SiteKind> {
    let mut v = vec![SiteKind::Embed];
    for l in 0..n_layers {
        if subblocks {
            v.push(SiteKind::Attn(l));
        }
        v.push(SiteKind::Block(l));
    }
    v
}
