//! Gradient × activation (issue 28; [`GradXAct`]): the gradient of a target's logit with respect
//! to each site's residual, through the model's backward graph ([`crate::run::gradients`]),
//! dotted with that residual, per (site, position).
//!
//! Per position `p` and target `t` the cotangent at the last block's output is `∂ logit_p(t) /
//! ∂ h_final,p` through the final norm (LayerNorm or RMSNorm, its scale included) and `W_U[t]`,
//! zero at every other position; one backward direction per (position, target), run in batches.

use ndarray::{Array3, ArrayView2};

use crate::error::{LensError, Progress, Result};
use crate::grid::Grid;
use crate::lens::kernel::Decoder;
use crate::output::report::{GradXAct, LensReport};
use crate::run::engine::LensEngine;
use crate::run::gradients::{GradRunner, ResidGrads};
use crate::run::sites::{SiteKind, site_list};
use crate::run::trace::ResidualTrace;

/// Floats the attention-sized gradients of one batch of directions may take (1 GiB).
const BATCH_BUDGET: usize = 1 << 28;

/// `∂ (W_U[t] · norm(x) + b) / ∂ x` for the final residual row `x`, in f64.
pub fn logit_cotangent(dec: &Decoder, x: &[f32], t: u32) -> Vec<f64> {
    let u: Vec<f64> = dec.unembed_row(t).iter().map(|&v| f64::from(v)).collect();
    direction_cotangent(dec, x, &u)
}

/// `∂ (u · norm(x)) / ∂ x` for the final residual row `x` and a direction `u` `[d_model]` of the
/// decoder's input (the final norm's output; the raw decoder has no norm: `u` itself), in f64.
pub fn direction_cotangent(dec: &Decoder, x: &[f32], u: &[f64]) -> Vec<f64> {
    if dec.kind == crate::lens::kernel::DecoderKind::Raw {
        return u.to_vec();
    }
    let (mean, sigma) = dec.mean_sigma(x);
    let d = x.len().max(1) as f64;
    let gy: Vec<f64> = u.iter().zip(&dec.gamma).map(|(&u, &g)| u * f64::from(g)).collect();
    let xhat: Vec<f64> = x.iter().map(|&v| (f64::from(v) - mean) / sigma).collect();
    let gy_mean = if dec.centres() { gy.iter().sum::<f64>() / d } else { 0.0 };
    let proj = gy.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / d;
    gy.iter().zip(&xhat).map(|(g, xh)| (g - gy_mean - xh * proj) / sigma).collect()
}

/// The gradient at `site` of direction `b`'s run `[pos, d_model]` (at the last block's output: the
/// cotangent itself).
pub(crate) fn grad_row<'a>(grads: &'a ResidGrads, cot: &'a Array3<f32>, site: SiteKind, n_layers: usize, b: usize) -> Result<ArrayView2<'a, f32>> {
    let g = match site {
        SiteKind::Embed => grads.resid_pre.first().and_then(Option::as_ref),
        SiteKind::Attn(l) => grads.resid_mid.get(l).and_then(Option::as_ref),
        SiteKind::Block(l) if l + 1 == n_layers => Some(cot),
        SiteKind::Block(l) => grads.resid_pre.get(l + 1).and_then(Option::as_ref),
    }
    .ok_or_else(|| LensError::invalid(format!("internal: no gradient at site {}", site.label())))?;
    Ok(g.index_axis(ndarray::Axis(0), b))
}

/// Gradient × activation of `report`, a plain run of `engine`'s model, on the tokens it ran,
/// through the model's backward graph opened on `device` (written into the bundle on first use).
pub fn of_report(engine: &mut LensEngine, device: crate::run::runtime::Device, report: &LensReport, progress: &Progress) -> Result<GradXAct> {
    let ids: Vec<u32> = report.tokens.iter().map(|t| t.id).collect();
    let mut runner = GradRunner::open(&engine.bundle, device, 0, progress)?;
    gradient_x_activation(engine, &mut runner, &ids, report, progress)
}

/// Gradient × activation of `report` (the lens of `ids` on `engine`'s model, logit-lens decoder):
/// its sites, its final top-1s and the next tokens.
pub fn gradient_x_activation(engine: &mut LensEngine, runner: &mut GradRunner, ids: &[u32], report: &LensReport, progress: &Progress) -> Result<GradXAct> {
    let shape = engine.bundle.shape.clone();
    let (n, d, n_layers) = (ids.len(), shape.d_model, shape.n_layers);
    if report.n_pos() != n {
        return Err(LensError::invalid(format!("internal: a report of {} positions for {n} tokens", report.n_pos())));
    }
    let subblocks = report.sites.len() == 2 * n_layers + 1;
    let sites = site_list(n_layers, subblocks);
    if sites.len() != report.sites.len() {
        return Err(LensError::invalid("internal: the report's sites are not the lens's"));
    }
    let trace: ResidualTrace = engine.trace_with(ids, progress)?;
    let final_resid = trace.final_resid().ok_or_else(|| LensError::invalid("internal: no final residual"))?;
    let top1 = &report.attribution.final_top1_ids;
    if top1.len() != n {
        return Err(LensError::invalid("gradient × activation needs the report's attribution targets (the final top-1s)"));
    }
    // Directions: (position, target, is_next).
    let mut dirs: Vec<(usize, u32, bool)> = (0..n).filter_map(|p| top1.get(p).map(|&t| (p, t, false))).collect();
    dirs.extend((0..n.saturating_sub(1)).filter_map(|p| ids.get(p + 1).map(|&t| (p, t, true))));
    let mut top_grid = vec![vec![0f64; n]; sites.len()];
    let mut next_grid: Vec<Vec<Option<f64>>> = vec![vec![None; n]; sites.len()];
    let per_dir = (shape.n_heads.max(1) * n * n).max(n * d).max(1);
    let batch = (BATCH_BUDGET / per_dir).clamp(1, 64);
    let dec = &engine.decoder;
    for (ci, chunk) in dirs.chunks(batch).enumerate() {
        let part = progress.part((ci * batch) as f32 / dirs.len() as f32, chunk.len() as f32 / dirs.len() as f32);
        part.report("gradient × activation", 0.0);
        let mut cot = Array3::<f32>::zeros((chunk.len(), n, d));
        for (b, &(p, t, _)) in chunk.iter().enumerate() {
            let x = final_resid.row(p);
            let x: Vec<f32> = x.iter().copied().collect();
            let g = logit_cotangent(dec, &x, t);
            for (j, v) in g.into_iter().enumerate() {
                if let Some(c) = cot.get_mut([b, p, j]) {
                    *c = v as f32;
                }
            }
        }
        let grads = runner.vjp(ids, cot.view(), &part)?;
        for (b, &(p, _, is_next)) in chunk.iter().enumerate() {
            for (s, &site) in sites.iter().enumerate() {
                let g = grad_row(&grads, &cot, site, n_layers, b)?;
                let h = trace.site(site).ok_or_else(|| LensError::invalid(format!("internal: no residual at site {}", site.label())))?;
                let value: f64 = g.row(p).iter().zip(h.row(p)).map(|(&a, &x)| f64::from(a) * f64::from(x)).sum();
                if is_next {
                    if let Some(c) = next_grid.get_mut(s).and_then(|r| r.get_mut(p)) {
                        *c = Some(value);
                    }
                } else if let Some(c) = top_grid.get_mut(s).and_then(|r| r.get_mut(p)) {
                    *c = value;
                }
            }
        }
    }
    Ok(GradXAct { final_top1: Grid::from_rows(top_grid)?, next: Grid::from_rows(next_grid)? })
}
