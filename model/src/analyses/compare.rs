//! Two runs side by side (schema [`COMPARE_SCHEMA`]): the same prompt through two models or two
//! decoders, or two prompts (a clean and a corrupted one), with the difference A − B of every
//! cell.
//!
//! Alignment: when the two prompts have as many tokens, position `i` of A is paired with
//! position `i` of B; otherwise the positions of a longest common subsequence of the two token
//! sequences are paired (the tokens both prompts share, in order), and the pairs are written out
//! so that the user sees which cells were compared.

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Result};
use crate::grid::Grid;
use crate::output::report::LensReport;

/// The schema tag of comparison reports.
pub const COMPARE_SCHEMA: &str = "logit-lens/compare@1";

/// A − B per site and aligned position pair (`[n_sites][n_pairs]`); `null` where either is
/// unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareDiff {
    /// KL(final ‖ site), nats.
    pub kl_to_final: Grid<f64>,
    /// KL(input ‖ site), nats.
    pub kl_to_input: Grid<f64>,
    /// Entropy, nats.
    pub entropy: Grid<f64>,
    /// Top-1 probability.
    pub top1_prob: Grid<f64>,
    /// NLL of the next token, nats.
    pub nll_next: Grid<Option<f64>>,
    /// Whether the two cells have the same top-1 token.
    pub top1_same: Grid<bool>,
}

/// Two reports and their difference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// Always [`COMPARE_SCHEMA`].
    pub schema: String,
    /// What differs between A and B: `prompt`, `model` or `decoder`.
    pub varied: String,
    /// `position` (as many tokens) or `common_tokens` (a longest common subsequence).
    pub aligned_by: String,
    /// The compared position pairs `[position in A, position in B]`, in order.
    pub alignment: Vec<[usize; 2]>,
    /// Row labels (the same in A and B).
    pub sites: Vec<String>,
    /// A − B over the alignment.
    pub diff: CompareDiff,
    /// Run A.
    pub a: LensReport,
    /// Run B.
    pub b: LensReport,
}

/// The index pairs of a longest common subsequence of `a` and `b` (ties: the earliest pairs).
pub fn common_subsequence(a: &[u32], b: &[u32]) -> Vec<[usize; 2]> {
    let (n, m) = (a.len(), b.len());
    // len[i][j]: LCS length of a[i..] and b[j..], stored flat.
    let w = m + 1;
    let mut len = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let v = if a.get(i) == b.get(j) {
                len.get((i + 1) * w + j + 1).copied().unwrap_or(0) + 1
            } else {
                len.get((i + 1) * w + j).copied().unwrap_or(0).max(len.get(i * w + j + 1).copied().unwrap_or(0))
            };
            if let Some(c) = len.get_mut(i * w + j) {
                *c = v;
            }
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        if a.get(i) == b.get(j) {
            out.push([i, j]);
            i += 1;
            j += 1;
        } else if len.get((i + 1) * w + j).copied().unwrap_or(0) >= len.get(i * w + j + 1).copied().unwrap_or(0) {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Compares two reports of the same sites (`varied` says what differs).
pub fn compare(a: LensReport, b: LensReport, varied: &str) -> Result<CompareReport> {
    if a.sites != b.sites {
        return Err(LensError::invalid(format!(
            "the two runs have different rows ({} and {} sites: {:?}… and {:?}…); compare models of the same depth",
            a.sites.len(),
            b.sites.len(),
            a.sites.last(),
            b.sites.last()
        )));
    }
    let ids = |r: &LensReport| r.tokens.iter().map(|t| t.id).collect::<Vec<u32>>();
    let (alignment, aligned_by) = if a.n_pos() == b.n_pos() {
        ((0..a.n_pos()).map(|i| [i, i]).collect::<Vec<_>>(), "position")
    } else {
        (common_subsequence(&ids(&a), &ids(&b)), "common_tokens")
    };
    if alignment.is_empty() {
        return Err(LensError::invalid("the two prompts share no token to align: nothing to compare"));
    }
    let n_sites = a.sites.len();
    let pairs = alignment.len();
    let f = |ga: &Grid<f64>, gb: &Grid<f64>| {
        Grid::from_fn(n_sites, pairs, |s, k| match alignment.get(k) {
            Some(&[i, j]) => ga.get(s, i).copied().unwrap_or(f64::NAN) - gb.get(s, j).copied().unwrap_or(f64::NAN),
            None => f64::NAN,
        })
    };
    let (ma, mb) = (&a.metrics, &b.metrics);
    let diff = CompareDiff {
        kl_to_final: f(&ma.kl_to_final, &mb.kl_to_final),
        kl_to_input: f(&ma.kl_to_input, &mb.kl_to_input),
        entropy: f(&ma.entropy, &mb.entropy),
        top1_prob: f(&ma.top1_prob, &mb.top1_prob),
        nll_next: Grid::from_fn(n_sites, pairs, |s, k| {
            let [i, j] = alignment.get(k).copied()?;
            Some(ma.nll_next.get(s, i).copied().flatten()? - mb.nll_next.get(s, j).copied().flatten()?)
        }),
        top1_same: Grid::from_fn(n_sites, pairs, |s, k| {
            alignment.get(k).is_some_and(|&[i, j]| ma.top1_id.get(s, i).is_some() && ma.top1_id.get(s, i) == mb.top1_id.get(s, j))
        }),
    };
    Ok(CompareReport { schema: COMPARE_SCHEMA.into(), varied: varied.into(), aligned_by: aligned_by.into(), alignment, sites: a.sites.clone(), diff, a, b })
}

impl CompareReport {
    /// Writes JSON to `path` (through a temporary file).
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| LensError::invalid(format!("cannot serialise the comparison: {e}")))?;
        crate::files::write_replacing(path, |tmp| std::fs::write(tmp, &text).map_err(|e| LensError::io(path, e)))
    }
}
