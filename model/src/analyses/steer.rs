//! Steering: a vector added to the residual stream at the output of one block, at every position,
//! scaled by `alpha`; the lens of the steered run and greedy continuations with and without it.
//!
//! The vector is a `.npy` file, or the difference of two prompts' residuals at their last
//! position (`TEXT_A|TEXT_B`: block `layer`'s output of A minus that of B). The steered run is a
//! patched forward pass ([`LensEngine::run_patched`]) whose block-`layer` output rows are the
//! unsteered ones plus `alpha · v`: everything before that block is unchanged by the steering, so
//! the replacement is exactly the addition.

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Progress, Result};
use crate::run::engine::LensEngine;
use crate::run::sites::SiteKind;
use crate::run::trace::{Patch, PatchRows, ResidualTrace};

/// A steering vector at the output of one block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Steering {
    /// The block whose output is steered.
    pub layer: usize,
    /// The scale.
    pub alpha: f32,
    /// The vector `[d_model]`.
    pub vector: Vec<f32>,
    /// Where it came from (`FILE.npy`, or `A|B`).
    pub source: String,
}

/// A steering spec as the command line gives it: `LAYER=FILE.npy*ALPHA` or
/// `LAYER=TEXT_A|TEXT_B*ALPHA` (`*ALPHA` optional, default 1).
#[derive(Debug, Clone, PartialEq)]
pub struct SteerSpec {
    /// The block.
    pub layer: usize,
    /// A `.npy` file, or two prompts.
    pub source: SteerSource,
    /// The scale.
    pub alpha: f32,
}

/// Where a steering vector comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteerSource {
    /// A `.npy` vector.
    File(std::path::PathBuf),
    /// The difference of two prompts' residuals at their last position (A − B).
    Texts(String, String),
}

impl SteerSpec {
    /// Parses `LAYER=SOURCE[*ALPHA]`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (layer, rest) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected LAYER=FILE.npy*ALPHA or LAYER=TEXT_A|TEXT_B*ALPHA"))?;
        let layer = layer.trim().parse::<usize>().map_err(|_| format!("{s:?}: {layer:?} is not a layer number"))?;
        let (body, alpha) = match rest.rsplit_once('*') {
            Some((b, a)) if a.trim().parse::<f32>().is_ok() => (b, a.trim().parse::<f32>().unwrap_or(1.0)),
            _ => (rest, 1.0),
        };
        if !alpha.is_finite() {
            return Err(format!("{s:?}: the scale is not a finite number"));
        }
        let source = match body.split_once('|') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => SteerSource::Texts(a.to_string(), b.to_string()),
            Some(_) => return Err(format!("{s:?}: TEXT_A|TEXT_B needs two non-empty prompts")),
            None if body.is_empty() => return Err(format!("{s:?}: no vector (a .npy file or TEXT_A|TEXT_B)")),
            None => SteerSource::File(std::path::PathBuf::from(body)),
        };
        Ok(Self { layer, source, alpha })
    }
}

/// The steering of `spec` on `engine`'s model: its layer checked, its vector read or computed.
pub fn steering_of(engine: &mut LensEngine, spec: &SteerSpec, progress: &Progress) -> Result<Steering> {
    let (n_layers, d) = (engine.bundle.shape.n_layers, engine.bundle.shape.d_model);
    if spec.layer >= n_layers {
        return Err(LensError::invalid(format!("--steer layer {}: the model has layers 0..{}", spec.layer, n_layers.saturating_sub(1))));
    }
    let (vector, source) = match &spec.source {
        SteerSource::File(path) => (crate::source::npy::read_vector(path)?, path.display().to_string()),
        SteerSource::Texts(a, b) => {
            let last_resid = |engine: &mut LensEngine, text: &str| -> Result<Vec<f32>> {
                let ids = engine.tokenize(text, false)?;
                let t = engine.trace_with(&ids, progress)?;
                let last = ids.len().checked_sub(1).ok_or_else(|| LensError::invalid("a steering prompt has no tokens"))?;
                let post = t.resid_post.get(spec.layer).ok_or_else(|| LensError::invalid("internal: no such layer"))?;
                Ok(post.row(last).to_vec())
            };
            let (va, vb) = (last_resid(engine, a)?, last_resid(engine, b)?);
            (va.iter().zip(&vb).map(|(x, y)| x - y).collect(), format!("{a}|{b}"))
        }
    };
    if vector.len() != d {
        return Err(LensError::invalid(format!("the steering vector {source} has {} values; the model's width is {d}", vector.len())));
    }
    Ok(Steering { layer: spec.layer, alpha: spec.alpha, vector, source })
}

/// The trace of `ids` steered by `s`; `base` is their unsteered trace.
pub fn steered_trace(engine: &mut LensEngine, ids: &[u32], base: &ResidualTrace, s: &Steering, progress: &Progress) -> Result<ResidualTrace> {
    let post = base.resid_post.get(s.layer).ok_or_else(|| LensError::invalid(format!("internal: the trace has no layer {}", s.layer)))?;
    let mut value = Vec::with_capacity(post.len());
    for row in post.rows() {
        value.extend(row.iter().zip(&s.vector).map(|(x, v)| x + s.alpha * v));
    }
    engine.run_patched(base, ids, &Patch { site: SiteKind::Block(s.layer), rows: PatchRows::All, value }, progress)
}

/// The `n` tokens greedy decoding appends to `ids` (steered by `s` where given), stopping early at
/// the model's context.
pub fn greedy(engine: &mut LensEngine, ids: &[u32], s: Option<&Steering>, n: usize, progress: &Progress) -> Result<Vec<u32>> {
    let mut all = ids.to_vec();
    let mut out = Vec::with_capacity(n);
    while out.len() < n && all.len() < engine.bundle.shape.n_ctx {
        progress.check()?;
        let base = engine.trace_for_patching(&all, progress)?;
        let trace = match s {
            Some(s) => steered_trace(engine, &all, &base, s, progress)?,
            None => base,
        };
        let last = all.len().checked_sub(1).ok_or_else(|| LensError::invalid("the prompt has no tokens"))?;
        let logits = engine.final_logits(&trace, last)?;
        let best = logits.iter().enumerate().fold((0u32, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i as u32, v) } else { b }).0;
        out.push(best);
        all.push(best);
    }
    Ok(out)
}
