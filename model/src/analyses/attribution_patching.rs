//! Attribution patching (issue 28): the first-order estimate of an activation-patching sweep
//! ([`crate::analyses::patch`]) from one backward run. With `M` the sweep's metric at the last
//! position of the corrupted run and `a` the activation a cell patches,
//!
//! `estimate[site][pos] = M(corrupt) + ∂M/∂a (corrupt) · (a_clean − a_corrupt)`,
//!
//! the gradient taken at the corrupted run through the model's backward graph
//! ([`crate::run::gradients`]). A residual cell's `a` is the residual itself; an `attn` or `mlp`
//! cell's is the sub-block's output, which enters the residual where the sweep patches it (the
//! gradient there is the one with respect to the sub-block output). The metric's cotangent goes
//! through the final norm, `W_U` and the soft cap: `logit(target) − logit(against)`, or
//! `log p(target)` (`Σ_v (δ_vt − p_v) ∂logit_v`).

use ndarray::{Array2, Array3, ArrayView2};

use crate::analyses::grad_x_act::{direction_cotangent, grad_row};
use crate::analyses::patch::{PatchKind, PatchReport, site_of};
use crate::error::{LensError, Progress, Result};
use crate::grid::Grid;
use crate::lens::kernel::Decoder;
use crate::run::engine::LensEngine;
use crate::run::gradients::GradRunner;
use crate::run::trace::ResidualTrace;

/// `d cap(z) / dz` at the capped logit `capped` (1 without a soft cap).
fn cap_slope(dec: &Decoder, capped: f32) -> f64 {
    match dec.softcap {
        Some(c) if c != 0.0 => 1.0 - (f64::from(capped) / f64::from(c)).powi(2),
        _ => 1.0,
    }
}

/// `∂M/∂x` for the final residual row `x`: `M = logit(target) − logit(against)`, or
/// `log p(target)` without `against`; logits as the decoder computes them (soft cap included).
pub fn metric_cotangent(dec: &Decoder, x: &[f32], target: u32, against: Option<u32>) -> Result<Vec<f64>> {
    let d = dec.d_model;
    if x.len() != d {
        return Err(LensError::invalid(format!("internal: a residual row of {} values for width {d}", x.len())));
    }
    for t in std::iter::once(target).chain(against) {
        if t as usize >= dec.d_vocab {
            return Err(LensError::invalid(format!("token id {t} is outside the model's vocabulary of {}", dec.d_vocab)));
        }
    }
    let mut prepared = vec![0f32; d];
    dec.prepare_row(x, &mut prepared);
    let mut u = vec![0f64; d];
    let mut add = |t: u32, w: f64| {
        for (a, &r) in u.iter_mut().zip(dec.unembed_row(t).iter()) {
            *a += w * f64::from(r);
        }
    };
    match against {
        Some(a) => {
            add(target, cap_slope(dec, dec.logit(&prepared, target)));
            add(a, -cap_slope(dec, dec.logit(&prepared, a)));
        }
        None => {
            let logits: Vec<f32> = (0..dec.d_vocab as u32).map(|t| dec.logit(&prepared, t)).collect();
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = logits.iter().map(|&v| (f64::from(v) - f64::from(m)).exp()).sum();
            for (t, &l) in logits.iter().enumerate() {
                let p = (f64::from(l) - f64::from(m)).exp() / z;
                let w = (if t == target as usize { 1.0 } else { 0.0 } - p) * cap_slope(dec, l);
                if w != 0.0 {
                    add(t as u32, w);
                }
            }
        }
    }
    Ok(direction_cotangent(dec, x, &u))
}

/// The activation a cell of `kind` at layer `l` patches in trace `t`: the residual at its site, or
/// the sub-block's output.
fn activation(t: &ResidualTrace, kind: PatchKind, l: usize, sequential: bool) -> Result<&Array2<f32>> {
    match kind {
        PatchKind::Resid => t.site(site_of(kind, l, sequential)),
        PatchKind::Attn => t.attn_out.get(l),
        PatchKind::Mlp => t.mlp_out.get(l),
    }
    .ok_or_else(|| LensError::invalid(format!("internal: a trace lacks layer {l}")))
}

/// `Σ_j g[p, j] · (clean[p, j] − corrupt[p, j])` for every position `p`.
fn dots(g: ArrayView2<'_, f32>, clean: &Array2<f32>, corrupt: &Array2<f32>) -> Result<Vec<f64>> {
    if g.dim() != clean.dim() || g.dim() != corrupt.dim() {
        return Err(LensError::invalid(format!("internal: a gradient of shape {:?} for activations of {:?}", g.dim(), clean.dim())));
    }
    Ok(g.outer_iter()
        .zip(clean.outer_iter().zip(corrupt.outer_iter()))
        .map(|(g, (c, k))| g.iter().zip(c.iter().zip(k.iter())).map(|(&g, (&c, &k))| f64::from(g) * (f64::from(c) - f64::from(k))).sum())
        .collect())
}

/// Fills every grid of `report` (an exact sweep of `clean_ids` into `corrupt_ids` on `engine`'s
/// model) with attribution patching's estimate. `runner` is the model's backward graph from block
/// 0 (`GradRunner::open(.., 0, ..)`).
pub fn add_estimates(
    engine: &mut LensEngine,
    runner: &mut GradRunner,
    clean_ids: &[u32],
    corrupt_ids: &[u32],
    report: &mut PatchReport,
    progress: &Progress,
) -> Result<()> {
    let n = corrupt_ids.len();
    if clean_ids.len() != n || report.corrupt_tokens.len() != n {
        return Err(LensError::invalid("internal: the prompts are not the sweep's"));
    }
    let last = n.checked_sub(1).ok_or_else(|| LensError::invalid("the prompts have no tokens"))?;
    let (n_layers, d) = (engine.bundle.shape.n_layers, engine.bundle.shape.d_model);
    let sequential = engine.bundle.residual == crate::build::spec::Residual::Sequential;
    progress.report("attribution patching: clean and corrupted runs", 0.0);
    let clean = engine.trace_for_patching(clean_ids, progress)?;
    let corrupt = engine.trace_for_patching(corrupt_ids, progress)?;
    let final_row = corrupt.final_resid().ok_or_else(|| LensError::invalid("internal: the trace has no layers"))?.row(last).to_vec();
    let cot = metric_cotangent(&engine.decoder, &final_row, report.target.id, report.against.as_ref().map(|t| t.id))?;
    let mut ct = Array3::<f32>::zeros((1, n, d));
    for (j, v) in cot.iter().enumerate() {
        if let Some(c) = ct.get_mut([0, last, j]) {
            *c = *v as f32;
        }
    }
    progress.report("attribution patching: the backward run", 0.5);
    let grads = runner.vjp(corrupt_ids, ct.view(), progress)?;
    let corrupt_metric = report.corrupt_metric;
    for grid in &mut report.grids {
        let n_sites = grid.sites.len();
        let mut rows = Vec::with_capacity(n_sites);
        for s in 0..n_sites {
            // The gradient where the activation enters the residual stream is the one with
            // respect to the activation.
            let g = grad_row(&grads, &ct, site_of(grid.kind, s, sequential), n_layers, 0)?;
            let deltas = dots(g, activation(&clean, grid.kind, s, sequential)?, activation(&corrupt, grid.kind, s, sequential)?)?;
            rows.push(deltas.into_iter().map(|v| corrupt_metric + v).collect::<Vec<f64>>());
        }
        grid.estimate = Some(Grid::from_rows(rows)?);
    }
    progress.report("done", 1.0);
    Ok(())
}
