//! Vector–Jacobian products through a bundle's blocks (issue 28): the backward graph
//! ([`crate::build::vjp`]) written into the bundle on first use and run on the bundle's provider.

use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3};
use ort::session::Session;
use ort::value::Tensor;
use prost::Message;

use crate::build::convert::MODEL_FILE;
use crate::build::graph::past_name;
use crate::build::vjp::{GRAD_INPUT, build_vjp_model, grad_name, vjp_file};
use crate::error::{LensError, Progress, Result};
use crate::run::bundle::Bundle;
use crate::run::runtime::{Device, create_session_prepacked};
use crate::run::trace::{KvCache, run_cancellable};

/// The bundle's backward graph down to block `lowest`'s input, written beside its lens graph when
/// it is missing or older.
pub fn vjp_graph(bundle: &Bundle, lowest: usize) -> Result<PathBuf> {
    let model = bundle.dir.join(MODEL_FILE);
    let path = bundle.dir.join(vjp_file(lowest));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if path.is_file() && modified(&path) >= modified(&model) {
        return Ok(path);
    }
    let bytes = std::fs::read(&model).map_err(|e| LensError::io(&model, e))?;
    let lens = crate::build::onnx::ModelProto::decode(bytes.as_slice()).map_err(|e| LensError::bad_file(&model, format!("not an ONNX model: {e}")))?;
    let vjp = build_vjp_model(&lens, bundle.shape.n_layers, lowest)?;
    crate::files::write_replacing(&path, |tmp| std::fs::write(tmp, vjp.encode_to_vec()).map_err(|e| LensError::io(tmp, e)))?;
    Ok(path)
}

/// Gradients with respect to the residual stream, each `[k, pos, d_model]` (`None` below the
/// runner's lowest block).
#[derive(Debug, Clone)]
pub struct ResidGrads {
    /// With respect to the residual entering block `l` (`resid_pre`; block 0's is the embeddings').
    pub resid_pre: Vec<Option<Array3<f32>>>,
    /// With respect to `resid_mid` of block `l`, where blocks have one.
    pub resid_mid: Vec<Option<Array3<f32>>>,
}

/// A prompt's key/value cache as the backward graph's inputs ([`GradRunner::cache_inputs`]).
pub struct CacheInputs(Vec<(String, ort::value::DynValue)>);

impl std::fmt::Debug for CacheInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheInputs").field("inputs", &self.0.len()).finish()
    }
}

/// Runs the backward graph.
pub struct GradRunner {
    session: Session,
    n_layers: usize,
    d_model: usize,
    has_mid: bool,
    lowest: usize,
    /// The graph takes the key/value cache of earlier positions.
    cache: Option<crate::run::bundle::KvCacheShape>,
}

impl std::fmt::Debug for GradRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradRunner").field("n_layers", &self.n_layers).finish()
    }
}

impl GradRunner {
    /// Writes the bundle's backward graph (gradients down to block `lowest`'s input) if needed
    /// and opens it on `device`.
    pub fn open(bundle: &Bundle, device: Device, lowest: usize, progress: &Progress) -> Result<Self> {
        progress.report("writing the backward graph", 0.0);
        let path = vjp_graph(bundle, lowest)?;
        progress.report("loading the backward graph", 0.5);
        // Weights pre-packed: a fit runs the graph hundreds of times per prompt (measured on the
        // GPT-2-small shape, 64 tokens, 8 directions: 0.78 s per run unpacked, 0.62 s packed).
        let (session, _) = create_session_prepacked(&path, device, 0, &[])?;
        let has_mid = session.outputs().iter().any(|o| o.name() == grad_name(&format!("blocks.{lowest}.hook_resid_mid")));
        // The graph's cache inputs have defaults (ONNX Runtime lists them as overridable
        // initializers, not inputs): every backward graph written from a lens graph with a cache
        // has them.
        let cache = bundle.kv_cache;
        Ok(Self { session, n_layers: bundle.shape.n_layers, d_model: bundle.shape.d_model, has_mid, lowest, cache })
    }

    /// Whether [`GradRunner::vjp_after`] can run (the bundle's graph has a key/value cache).
    pub fn takes_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// The gradients of `⟨cotangent_j, h_final⟩` (`h_final` the last block's output, before the
    /// final norm) for each of the `k` directions `cotangent` `[k, pos, d_model]` holds, on the
    /// prompt `ids`.
    pub fn vjp(&mut self, ids: &[u32], cotangent: ArrayView3<'_, f32>, progress: &Progress) -> Result<ResidGrads> {
        self.run(None, ids, cotangent, progress)
    }

    /// The graph inputs of `past` (the key/value cache of a prompt's first positions), made
    /// once for every [`GradRunner::vjp_after`] of that prompt.
    pub fn cache_inputs(&self, past: &KvCache) -> Result<CacheInputs> {
        let shape = self.cache.ok_or_else(|| LensError::invalid("internal: this backward graph takes no key/value cache"))?;
        if past.shape != shape || past.layers.len() != self.n_layers {
            return Err(LensError::invalid("internal: the key/value cache does not fit this backward graph"));
        }
        let mut values = Vec::with_capacity(2 * past.layers.len());
        for (l, pair) in past.layers.iter().enumerate() {
            for (kind, data) in ["key", "value"].into_iter().zip(pair) {
                let t = Tensor::from_array(([1usize, shape.n_kv_heads, past.n_pos, shape.d_head], data.clone()))?;
                values.push((past_name(l, kind), t.into_dyn()));
            }
        }
        Ok(CacheInputs(values))
    }

    /// [`GradRunner::vjp`] of the positions `ids` after the cached ones of `past`
    /// ([`GradRunner::cache_inputs`] of the prompt's first positions, their keys and values held
    /// constant): the gradients at the positions of `ids`, `[k, ids.len(), d_model]`, exactly as a
    /// run over the whole prompt gives them there when the cotangents at the cached positions are
    /// zero.
    pub fn vjp_after(&mut self, past: &CacheInputs, ids: &[u32], cotangent: ArrayView3<'_, f32>, progress: &Progress) -> Result<ResidGrads> {
        self.run(Some(past), ids, cotangent, progress)
    }

    fn run(&mut self, past: Option<&CacheInputs>, ids: &[u32], cotangent: ArrayView3<'_, f32>, progress: &Progress) -> Result<ResidGrads> {
        let (k, n, d) = cotangent.dim();
        if n != ids.len() || d != self.d_model || k == 0 {
            return Err(LensError::invalid(format!("internal: cotangents of shape {:?} for {} tokens of width {}", cotangent.dim(), ids.len(), self.d_model)));
        }
        let ids_t = Tensor::from_array(([1usize, n], ids.iter().map(|&i| i64::from(i)).collect::<Vec<i64>>()))?;
        let ct = Tensor::from_array(cotangent.to_owned())?;
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![("input_ids".into(), ids_t.into()), (GRAD_INPUT.into(), ct.into())];
        // The cache's tensors are lent to the run, not copied.
        inputs.extend(past.iter().flat_map(|p| p.0.iter()).map(|(name, value)| (name.clone(), value.into())));
        let (n_layers, has_mid, lowest) = (self.n_layers, self.has_mid, self.lowest);
        let session = &mut self.session;
        run_cancellable(progress, |options| {
            let mut out = session.run_with_options(inputs, options)?;
            let mut take = |hook: String| -> Result<Array3<f32>> {
                let name = grad_name(&hook);
                let v = out.remove(&name).ok_or_else(|| LensError::Runtime(format!("the backward graph did not return {name}")))?;
                let (shape, data) = v.try_extract_tensor::<f32>().map_err(|e| LensError::Runtime(format!("output {name}: {e}")))?;
                let dims: Vec<i64> = shape.iter().copied().collect();
                if dims != [k as i64, n as i64, d as i64] {
                    return Err(LensError::Runtime(format!("the backward graph's {name} has shape {dims:?}, expected [{k}, {n}, {d}]")));
                }
                if data.iter().any(|v| !v.is_finite()) {
                    return Err(LensError::Runtime(format!("the backward graph's {name} has non-finite values")));
                }
                Array3::from_shape_vec((k, n, d), data.to_vec()).map_err(|e| LensError::Runtime(e.to_string()))
            };
            let mut resid_pre = Vec::with_capacity(n_layers);
            let mut resid_mid = Vec::with_capacity(n_layers);
            for l in 0..n_layers {
                let here = l >= lowest;
                resid_pre.push(if here { Some(take(format!("blocks.{l}.hook_resid_pre"))?) } else { None });
                resid_mid.push(if here && has_mid { Some(take(format!("blocks.{l}.hook_resid_mid"))?) } else { None });
            }
            Ok(ResidGrads { resid_pre, resid_mid })
        })
    }
}
