//! The `last-block` / `last-mlp` decoders' inputs: each site's residual stream, as a whole
//! sequence, passed through the bundle's last-block graph (`last_block.onnx`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ndarray::{Array2, Array3, Axis};
use ort::session::Session;
use ort::value::Tensor;

use crate::build::graph::{LAST_BLOCK_INPUT, LAST_BLOCK_OUTPUT, LAST_MLP_OUTPUT};
use crate::error::{LensError, Progress, Result};
use crate::lens::kernel::DecoderKind;
use crate::run::runtime::{Device, create_session};
use crate::run::sites::SiteKind;
use crate::run::trace::{ResidualTrace, run_cancellable};

/// Attention scores of one batch stay under this many floats (1 GiB): sites are run in batches.
const SCORE_BUDGET: usize = 1 << 28;

/// Runs the last-block graph; its session is created on first use.
pub struct LastBlockRunner {
    path: Option<PathBuf>,
    device: Device,
    n_heads: usize,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for LastBlockRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastBlockRunner").field("path", &self.path).finish()
    }
}

impl LastBlockRunner {
    /// A runner for the graph at `path` (`None`: the bundle has none).
    pub fn new(path: Option<PathBuf>, device: Device, n_heads: usize) -> Self {
        Self { path, device, n_heads, session: Mutex::new(None) }
    }

    /// The decoder input of each of `sites` for `kind` // each [pos, d_model]
    pub fn inputs(&self, trace: &ResidualTrace, sites: &[SiteKind], kind: DecoderKind, progress: &Progress) -> Result<Vec<Arc<Array2<f32>>>> {
        let cached = |s: &SiteKind| trace.decoded.lock().ok().and_then(|c| c.get(&(kind, *s)).cloned());
        let todo: Vec<SiteKind> = sites.iter().copied().filter(|s| cached(s).is_none()).collect();
        if !todo.is_empty() {
            self.compute(trace, &todo, progress)?;
        }
        sites.iter().map(|s| cached(s).ok_or_else(|| LensError::invalid("internal: a last-block input was not computed"))).collect()
    }

    fn compute(&self, trace: &ResidualTrace, sites: &[SiteKind], progress: &Progress) -> Result<()> {
        let path = self.path.clone().ok_or_else(|| {
            LensError::invalid(
                "this bundle has no last-block graph (it was made by an older logit-lens); convert the checkpoint again to use the last-block decoders",
            )
        })?;
        let mut guard = self.session.lock().map_err(|_| LensError::invalid("the last-block session was poisoned by an earlier failure"))?;
        if guard.is_none() {
            progress.report("loading the last block", 0.0);
            *guard = Some(create_session(&path, self.device, 0, &[])?.0);
        }
        let session = guard.as_mut().ok_or_else(|| LensError::invalid("internal: no last-block session"))?;
        let (n, d) = (trace.n_pos, trace.embed.ncols());
        let batch = (SCORE_BUDGET / (self.n_heads.max(1) * n * n).max(1)).clamp(1, sites.len().max(1));
        for (i, chunk) in sites.chunks(batch).enumerate() {
            progress.report("last block", (i * batch) as f32 / sites.len().max(1) as f32);
            let mut x = Array3::<f32>::zeros((chunk.len(), n, d));
            for (mut slot, s) in x.axis_iter_mut(Axis(0)).zip(chunk) {
                slot.assign(trace.site(*s).ok_or_else(|| LensError::invalid("missing site in trace"))?);
            }
            let input = Tensor::from_array(x)?;
            let (block, mlp) = run_cancellable(progress, |options| {
                let mut out = session.run_with_options(ort::inputs![LAST_BLOCK_INPUT => input], options)?;
                let mut take = |name: &str| -> Result<Array3<f32>> {
                    let v = out.remove(name).ok_or_else(|| LensError::Runtime(format!("the last-block graph did not return {name}")))?;
                    let (shape, data) = v.try_extract_tensor::<f32>().map_err(|e| LensError::Runtime(format!("output {name}: {e}")))?;
                    let dims: Vec<i64> = shape.iter().copied().collect();
                    if dims != [chunk.len() as i64, n as i64, d as i64] || data.iter().any(|v| !v.is_finite()) {
                        return Err(LensError::Runtime(format!("the last-block graph's {name} has shape {dims:?} or non-finite values")));
                    }
                    Array3::from_shape_vec((chunk.len(), n, d), data.to_vec()).map_err(|e| LensError::Runtime(e.to_string()))
                };
                Ok((take(LAST_BLOCK_OUTPUT)?, take(LAST_MLP_OUTPUT)?))
            })?;
            let mut cache = trace.decoded.lock().map_err(|_| LensError::invalid("the decoder cache was poisoned"))?;
            for (j, s) in chunk.iter().enumerate() {
                cache.insert((DecoderKind::LastBlock, *s), Arc::new(block.index_axis(Axis(0), j).to_owned()));
                cache.insert((DecoderKind::LastMlp, *s), Arc::new(mlp.index_axis(Axis(0), j).to_owned()));
            }
        }
        Ok(())
    }
}
