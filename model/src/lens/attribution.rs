//! Direct logit attribution (README, "Metrics") of the embedding, every attention and every MLP output.

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Result};
use crate::grid::Grid;
use crate::lens::kernel::{Decoder, DecoderKind};
use crate::run::trace::ResidualTrace;

/// Direct logit attribution per component and position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// Component names: `embed`, `0.attn`, `0.mlp`, …, `ln_bias`.
    pub components: Vec<String>,
    /// Target of `final_top1` per position (the final site's top-1 id).
    pub final_top1_ids: Vec<u32>,
    /// Attribution to the final top-1 // [component][pos]
    pub final_top1: Grid<f64>,
    /// Attribution to the true next token, `null` at the last position // [component][pos]
    pub next: Grid<Option<f64>>,
}

/// Component names in order.
pub fn component_names(n_layers: usize) -> Vec<String> {
    let mut v = vec!["embed".to_string()];
    for l in 0..n_layers {
        v.push(format!("{l}.attn"));
        v.push(format!("{l}.mlp"));
    }
    v.push("ln_bias".into());
    v
}

/// Terms of one position and token, in [`component_names`] order. They sum to the final logit.
/// A position or token outside the trace or the vocabulary is an error, never zeros.
pub fn terms(trace: &ResidualTrace, dec: &Decoder, pos: usize, token: u32) -> Result<Vec<f64>> {
    if pos >= trace.n_pos {
        return Err(LensError::invalid(format!("internal: attribution at position {pos} of a {}-position trace", trace.n_pos)));
    }
    if token as usize >= dec.d_vocab {
        return Err(LensError::invalid(format!("internal: attribution to token {token} of a {}-token vocabulary", dec.d_vocab)));
    }
    let w_row = dec.unembed_row(token);
    let w: &[f32] = &w_row;
    let bias_u = dec.b_u.as_ref().and_then(|b| b.get(token as usize)).copied().map_or(0.0, f64::from);
    fn row_of(o: &ndarray::Array2<f32>, pos: usize) -> Result<ndarray::ArrayView1<'_, f32>> {
        if pos < o.nrows() { Ok(o.row(pos)) } else { Err(LensError::invalid(format!("internal: no residual row {pos} in {} rows", o.nrows()))) }
    }
    // The final logit is decomposed through the final norm for every decoder but `raw` (the
    // last-block decoders leave the final site as the model's own output).
    let normed = dec.kind != DecoderKind::Raw;
    let sigma = match (normed, trace.final_resid()) {
        (true, Some(f)) => {
            let row = row_of(f, pos)?;
            match row.as_slice() {
                Some(x) => dec.mean_sigma(x).1,
                None => dec.mean_sigma(&row.iter().copied().collect::<Vec<f32>>()).1,
            }
        }
        _ => 1.0,
    };
    let term = |o: &ndarray::Array2<f32>| -> Result<f64> {
        let x = row_of(o, pos)?;
        Ok(if normed {
            let mean = if dec.centres() { x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len().max(1) as f64 } else { 0.0 };
            x.iter().zip(&dec.gamma).zip(w).map(|((&o, &g), &u)| (f64::from(o) - mean) * f64::from(g) * f64::from(u)).sum::<f64>() / sigma
        } else {
            x.iter().zip(w).map(|(&o, &u)| f64::from(o) * f64::from(u)).sum()
        })
    };
    let mut out = vec![term(&trace.embed)?];
    for (a, m) in trace.attn_out.iter().zip(&trace.mlp_out) {
        out.push(term(a)?);
        out.push(term(m)?);
    }
    let ln_bias = if normed { dec.beta.iter().zip(w).map(|(&b, &u)| f64::from(b) * f64::from(u)).sum::<f64>() } else { 0.0 };
    out.push(ln_bias + bias_u);
    Ok(out)
}

/// Attribution to the final top-1 and to the next token at the positions `range` of the trace;
/// `final_top1` and `next` are indexed from `range.start` (entry `i` is position `range.start + i`).
pub fn attribute(
    trace: &ResidualTrace,
    dec: &Decoder,
    n_layers: usize,
    range: std::ops::Range<usize>,
    final_top1: &[u32],
    next: &[Option<u32>],
) -> Result<Attribution> {
    let components = component_names(n_layers);
    let n_c = components.len();
    let n = range.len();
    let mut top = vec![vec![0.0; n]; n_c];
    let mut nxt = vec![vec![None; n]; n_c];
    for (i, pos) in range.enumerate() {
        if let Some(&t) = final_top1.get(i) {
            for (c, v) in terms(trace, dec, pos, t)?.into_iter().enumerate() {
                if let Some(slot) = top.get_mut(c).and_then(|r| r.get_mut(i)) {
                    *slot = v;
                }
            }
        }
        if let Some(Some(t)) = next.get(i) {
            for (c, v) in terms(trace, dec, pos, *t)?.into_iter().enumerate() {
                if let Some(slot) = nxt.get_mut(c).and_then(|r| r.get_mut(i)) {
                    *slot = Some(v);
                }
            }
        }
    }
    Ok(Attribution { components, final_top1_ids: final_top1.to_vec(), final_top1: Grid::from_rows(top)?, next: Grid::from_rows(nxt)? })
}
