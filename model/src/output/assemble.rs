//! A report's grids from the kernel's rows: one [`RowMetrics`] per (position, site), position
//! major, each with every target ranked. The targets' layout — `[final top-1, next, input,
//! pinned…, every group's tokens…]` — is read here and only here (the engine builds it with
//! [`targets`]).

use crate::error::Result;
use crate::grid::Grid;
use crate::lens::metrics::{NO_TARGET, RowMetrics};
use crate::output::report::{GroupReport, Metrics, Pinned, TopK, prediction_depth};
use crate::source::tokenizer::Token;

/// Targets before the followed tokens: the final top-1, the next token, the input token.
pub const FIXED_TARGETS: usize = 3;

/// The targets of `n_pos` positions from `start`: per position the final top-1 candidate
/// (`top1[i]`), the next and the input token of `ids`, then `followed` (pinned tokens, then every
/// group's tokens).
pub fn targets(ids: &[u32], start: usize, n_pos: usize, top1: &[u32], followed: &[u32]) -> Vec<u32> {
    let mut t = Vec::with_capacity(n_pos * (FIXED_TARGETS + followed.len()));
    for i in 0..n_pos {
        let p = start + i;
        t.push(top1.get(i).copied().unwrap_or(NO_TARGET));
        t.push(ids.get(p + 1).copied().unwrap_or(NO_TARGET));
        t.push(ids.get(p).copied().unwrap_or(NO_TARGET));
        t.extend(followed);
    }
    t
}

/// A `[site][pos]` grid of `f(row, position)` over `rows` (position major).
pub fn grid<T>(rows: &[RowMetrics], n_sites: usize, f: impl Fn(&RowMetrics, usize) -> T) -> Result<Grid<T>> {
    let n_pos = rows.len() / n_sites.max(1);
    let mut out: Vec<Vec<T>> = (0..n_sites).map(|_| Vec::with_capacity(n_pos)).collect();
    for (p, at_pos) in rows.chunks_exact(n_sites.max(1)).enumerate() {
        for (row, r) in out.iter_mut().zip(at_pos) {
            row.push(f(r, p));
        }
    }
    Grid::from_rows(out)
}

/// The per-cell metrics; `next[p]` is position `p`'s true next token (`None` at the last);
/// `final_only` runs have no input distribution (`kl_to_input` NaN).
pub fn metrics(rows: &[RowMetrics], n_sites: usize, next: &[Option<u32>], final_only: bool) -> Result<Metrics> {
    let m = Metrics {
        top1_id: grid(rows, n_sites, |r, _| r.top.first().map_or(0, |t| t.0))?,
        top1_logit: grid(rows, n_sites, |r, _| r.top.first().map_or(f32::NAN, |t| t.1))?,
        top1_prob: grid(rows, n_sites, |r, _| r.top.first().map_or(f64::NAN, |t| r.prob(t.1)))?,
        rank_of_final_top1: grid(rows, n_sites, |r, _| r.target_rank.first().copied().unwrap_or(0))?,
        final_top1_prob: grid(rows, n_sites, |r, _| r.target_logit.first().map_or(f64::NAN, |&l| r.prob(l)))?,
        rank_of_next: grid(rows, n_sites, |r, p| next.get(p).copied().flatten().and(r.target_rank.get(1).copied()))?,
        rank_of_input: grid(rows, n_sites, |r, _| r.target_rank.get(2).copied().unwrap_or(0))?,
        kl_to_final: grid(rows, n_sites, |r, _| r.kl_to_final)?,
        // Without the embed row there is no input distribution: NaN, written as null.
        kl_to_input: grid(rows, n_sites, |r, _| if final_only { f64::NAN } else { r.kl_to_input })?,
        entropy: grid(rows, n_sites, |r, _| r.entropy)?,
        nll_next: grid(rows, n_sites, |r, p| next.get(p).copied().flatten().and(r.target_logit.get(1)).map(|&l| r.lse - f64::from(l)))?,
        prediction_depth: Vec::new(),
    };
    Ok(Metrics { prediction_depth: prediction_depth(&m.top1_id), ..m })
}

/// The top `k` tokens of every cell.
pub fn top_k(rows: &[RowMetrics], n_sites: usize, k: usize) -> Result<TopK> {
    Ok(TopK {
        k,
        ids: grid(rows, n_sites, |r, _| r.top.iter().take(k).map(|t| t.0).collect())?,
        logits: grid(rows, n_sites, |r, _| r.top.iter().take(k).map(|t| t.1).collect())?,
        probs: grid(rows, n_sites, |r, _| r.top.iter().take(k).map(|t| r.prob(t.1)).collect())?,
    })
}

/// Rank, probability and logit of the pinned `tokens` (the first followed targets); `None`
/// when nothing is pinned.
pub fn pinned(rows: &[RowMetrics], n_sites: usize, tokens: Vec<Token>) -> Result<Option<Pinned>> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let pins = FIXED_TARGETS..FIXED_TARGETS + tokens.len();
    Ok(Some(Pinned {
        rank: pins.clone().map(|t| grid(rows, n_sites, |r, _| r.target_rank.get(t).copied().unwrap_or(0))).collect::<Result<Vec<_>>>()?,
        prob: pins.clone().map(|t| grid(rows, n_sites, |r, _| r.target_logit.get(t).map_or(f64::NAN, |&l| r.prob(l)))).collect::<Result<Vec<_>>>()?,
        logit: pins.map(|t| grid(rows, n_sites, |r, _| r.target_logit.get(t).copied().unwrap_or(f32::NAN))).collect::<Result<Vec<_>>>()?,
        tokens,
    }))
}

/// Every group's summed probability and best rank; `groups` are (name, tokens) in target order,
/// after `n_pinned` pinned tokens.
pub fn groups(rows: &[RowMetrics], n_sites: usize, n_pinned: usize, groups: Vec<(String, Vec<Token>)>) -> Result<Vec<GroupReport>> {
    let mut out = Vec::with_capacity(groups.len());
    let mut first = FIXED_TARGETS + n_pinned;
    for (name, tokens) in groups {
        let targets = first..first + tokens.len();
        first = targets.end;
        out.push(GroupReport {
            name,
            tokens,
            prob: grid(rows, n_sites, |r, _| targets.clone().filter_map(|t| r.target_logit.get(t)).map(|&l| r.prob(l)).sum())?,
            best_rank: grid(rows, n_sites, |r, _| targets.clone().filter_map(|t| r.target_rank.get(t).copied()).min().unwrap_or(0))?,
        });
    }
    Ok(out)
}
