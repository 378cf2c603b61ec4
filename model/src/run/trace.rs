//! [`ResidualTrace`]: the residual stream and sub-block outputs of one forward pass.

use ndarray::Array2;
use ort::session::Session;
use ort::value::Tensor;

use crate::build::graph::{hook_name, past_name, present_name};
use crate::error::{LensError, Progress, Result};
use crate::lens::kernel::DecoderKind;
use crate::run::bundle::{Bundle, KvCacheShape};
use crate::run::sites::SiteKind;

pub use crate::run::patched::{Patch, PatchRows, patch_site_of, run_trace_patched};

/// Hook tensors of one forward pass, each `[pos, d_model]`, plus the model's own top-1.
#[derive(Debug, Clone)]
pub struct ResidualTrace {
    /// Number of positions.
    pub n_pos: usize,
    /// `blocks.0.hook_resid_pre` // [pos, d_model]
    pub embed: Array2<f32>,
    /// `blocks.{l}.hook_resid_mid` per layer; for parallel blocks, which have none, the derived
    /// `resid_pre + attn_out` (shown as the `l.pre+attn` row) // [layer][pos, d_model]
    pub resid_mid: Vec<Array2<f32>>,
    /// `blocks.{l}.hook_resid_post` per layer // [layer][pos, d_model]
    pub resid_post: Vec<Array2<f32>>,
    /// `blocks.{l}.hook_attn_out` per layer (derived as resid_mid - resid_pre when not exported).
    pub attn_out: Vec<Array2<f32>>,
    /// `blocks.{l}.hook_mlp_out` per layer (derived as resid_post - resid_mid when not exported).
    pub mlp_out: Vec<Array2<f32>>,
    /// The model's `logits`: argmax id per position (ties: lower id); empty where the bundle's
    /// graph has no head (a quantized bundle: the decoder computes them) // [pos]
    pub logits_top1: Vec<u32>,
    /// The model's full `logits` when requested // [pos, d_vocab]
    pub logits: Option<Array2<f32>>,
    /// Every layer's keys and values, when the bundle's graph has a cache and they were asked
    /// for: the next edit of the prompt runs only the positions after the unchanged prefix.
    pub kv: Option<KvCache>,
    /// Sites already passed through the last block (filled by the `last-block` decoders, shared
    /// by clones, so the pieces of one run compute them once).
    pub decoded: DecodedCache,
}

/// Every layer's attention keys and values of a run's positions, as the lens graph outputs them.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Heads and features per head.
    pub shape: KvCacheShape,
    /// Positions.
    pub n_pos: usize,
    /// Per layer, the keys and the values // each [n_kv_heads, n_pos, d_head] row-major
    pub layers: Vec<[Vec<f32>; 2]>,
}

impl KvCache {
    /// The cache of the first `p` positions (`p` ≤ `n_pos`).
    pub fn prefix(&self, p: usize) -> Result<Self> {
        if p > self.n_pos {
            return Err(LensError::invalid(format!("internal: a cache of {} positions has no prefix of {p}", self.n_pos)));
        }
        let layers = (0..self.layers.len()).map(|l| self.layer_prefix(l, p)).collect::<Result<Vec<_>>>()?;
        Ok(Self { shape: self.shape, n_pos: p, layers })
    }

    /// Layer `l`'s keys and values of the first `p` positions (`p` ≤ `n_pos`)
    /// // each [n_kv_heads, p, d_head] row-major
    pub fn layer_prefix(&self, l: usize, p: usize) -> Result<[Vec<f32>; 2]> {
        if p > self.n_pos {
            return Err(LensError::invalid(format!("internal: a cache of {} positions has no prefix of {p}", self.n_pos)));
        }
        let [k, v] = self.layers.get(l).ok_or_else(|| LensError::invalid(format!("internal: the cache has no layer {l}")))?;
        let dh = self.shape.d_head;
        let cut = |t: &Vec<f32>| -> Vec<f32> { t.chunks_exact(self.n_pos * dh).flat_map(|head| head.iter().take(p * dh).copied()).collect() };
        Ok([cut(k), cut(v)])
    }
}

/// Decoder inputs computed from a trace, per decoder and site // each [pos, d_model]
pub type DecodedCache = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(DecoderKind, SiteKind), std::sync::Arc<Array2<f32>>>>>;

impl ResidualTrace {
    /// The residual stream at `site` // [pos, d_model]
    pub fn site(&self, site: SiteKind) -> Option<&Array2<f32>> {
        match site {
            SiteKind::Embed => Some(&self.embed),
            SiteKind::Attn(l) => self.resid_mid.get(l),
            SiteKind::Block(l) => self.resid_post.get(l),
        }
    }

    /// The last residual (`resid_post` of the last layer).
    pub fn final_resid(&self) -> Option<&Array2<f32>> {
        self.resid_post.last()
    }

    /// The trace of the first `p` positions (`1 ≤ p ≤ n_pos`): a position's hooks depend only on
    /// its prefix, so this is the trace of the prompt cut after `p` tokens.
    pub fn prefix(&self, p: usize) -> Result<Self> {
        if p == 0 || p > self.n_pos {
            return Err(LensError::invalid(format!("internal: a trace of {} positions has no prefix of {p}", self.n_pos)));
        }
        let rows = |a: &Array2<f32>| a.slice(ndarray::s![..p, ..]).to_owned();
        Ok(Self {
            n_pos: p,
            embed: rows(&self.embed),
            resid_mid: self.resid_mid.iter().map(rows).collect(),
            resid_post: self.resid_post.iter().map(rows).collect(),
            attn_out: self.attn_out.iter().map(rows).collect(),
            mlp_out: self.mlp_out.iter().map(rows).collect(),
            logits_top1: self.logits_top1.iter().take(p).copied().collect(),
            logits: self.logits.as_ref().map(rows),
            kv: self.kv.as_ref().map(|kv| kv.prefix(p)).transpose()?,
            decoded: DecodedCache::default(),
        })
    }

    /// The first `p` positions of this trace followed by `tail`, the trace of the next positions
    /// run on its cache (`tail.kv`, when it has one, holds every position). One copy of the prefix.
    pub(super) fn joined(&self, p: usize, tail: Self) -> Result<Self> {
        if p == 0 || p > self.n_pos {
            return Err(LensError::invalid(format!("internal: a trace of {} positions has no prefix of {p}", self.n_pos)));
        }
        let join = |a: &Array2<f32>, b: &Array2<f32>| -> Result<Array2<f32>> {
            ndarray::concatenate(ndarray::Axis(0), &[a.slice(ndarray::s![..p, ..]), b.view()])
                .map_err(|e| LensError::Runtime(format!("internal: joining traces: {e}")))
        };
        let join_all = |a: &[Array2<f32>], b: &[Array2<f32>]| -> Result<Vec<Array2<f32>>> {
            if a.len() != b.len() {
                return Err(LensError::Runtime("internal: joining traces of different depths".into()));
            }
            a.iter().zip(b).map(|(a, b)| join(a, b)).collect()
        };
        let mut top1: Vec<u32> = self.logits_top1.iter().take(p).copied().collect();
        top1.extend_from_slice(&tail.logits_top1);
        let logits = match (&self.logits, &tail.logits) {
            (Some(a), Some(b)) => Some(join(a, b)?),
            _ => None,
        };
        Ok(Self {
            n_pos: p + tail.n_pos,
            embed: join(&self.embed, &tail.embed)?,
            resid_mid: join_all(&self.resid_mid, &tail.resid_mid)?,
            resid_post: join_all(&self.resid_post, &tail.resid_post)?,
            attn_out: join_all(&self.attn_out, &tail.attn_out)?,
            mlp_out: join_all(&self.mlp_out, &tail.mlp_out)?,
            logits_top1: top1,
            logits,
            kv: tail.kv,
            decoded: DecodedCache::default(),
        })
    }
}

/// Moves one output out of ORT's outputs.
pub(super) fn take_output(outputs: &mut ort::session::SessionOutputs<'_>, name: &str) -> Result<ort::value::DynValue> {
    outputs.remove(name).ok_or_else(|| LensError::Runtime(format!("the model did not return output {name}")))
}

/// The data of an output of shape `[1, n_pos, width]` with finite values only.
pub(super) fn checked<'v>(value: &'v ort::value::DynValue, name: &str, n_pos: usize, width: usize) -> Result<&'v [f32]> {
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| LensError::Runtime(format!("output {name}: {e}")))?;
    let dims: Vec<i64> = shape.iter().copied().collect();
    if dims != [1, n_pos as i64, width as i64] {
        return Err(LensError::Runtime(format!("output {name} has shape {dims:?}, expected [1, {n_pos}, {width}]")));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(LensError::Runtime(format!("output {name} contains NaN or infinite values")));
    }
    Ok(data)
}

/// Copies one output out of ORT's outputs (its ORT memory is freed as soon as it is copied).
fn extract(outputs: &mut ort::session::SessionOutputs<'_>, name: &str, n_pos: usize, width: usize) -> Result<Array2<f32>> {
    let value = take_output(outputs, name)?;
    let data = checked(&value, name, n_pos, width)?;
    Array2::from_shape_vec((n_pos, width), data.to_vec()).map_err(|e| LensError::Runtime(e.to_string()))
}

/// Index of the largest value (the lowest index on ties).
fn argmax(row: &[f32]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i as u32, v);
        }
    }
    best.0
}

/// Runs the bundle's session on `ids` and collects every hook. Cancelling `progress` terminates
/// the ONNX Runtime run. `keep_kv`: keep the keys and values (when the graph has a cache) for a
/// later [`run_trace_after`].
pub fn run_trace(session: &mut Session, bundle: &Bundle, ids: &[u32], keep_logits: bool, keep_kv: bool, progress: &Progress) -> Result<ResidualTrace> {
    check_ids(bundle, ids, 0)?;
    let input: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let tensor = Tensor::from_array(([1usize, ids.len()], input))?;
    let keep_kv = keep_kv && bundle.kv_cache.is_some();
    run_cancellable(progress, |options| {
        let mut outputs = session.run_with_options(ort::inputs!["input_ids" => tensor], options)?;
        collect(&mut outputs, bundle, ids.len(), 0, keep_logits, keep_kv)
    })
}

/// The trace of the first `p` positions of `prev` followed by `ids`: the forward pass runs `ids`
/// alone, attending to `prev`'s cached keys and values of those positions. The result has the
/// cache of every position. Errors if the bundle or `prev` has no cache.
pub fn run_trace_after(session: &mut Session, bundle: &Bundle, prev: &ResidualTrace, p: usize, ids: &[u32], progress: &Progress) -> Result<ResidualTrace> {
    let shape = bundle.kv_cache.ok_or_else(|| LensError::invalid("internal: this bundle's graph has no key/value cache"))?;
    let Some(kv) = prev.kv.as_ref() else { return Err(LensError::invalid("internal: the earlier trace kept no key/value cache")) };
    if kv.shape != shape || kv.n_pos != prev.n_pos || kv.layers.len() != bundle.shape.n_layers {
        return Err(LensError::invalid("internal: the earlier trace's key/value cache does not fit this bundle"));
    }
    if p == 0 || p > prev.n_pos {
        return Err(LensError::invalid(format!("internal: a trace of {} positions has no prefix of {p}", prev.n_pos)));
    }
    check_ids(bundle, ids, p)?;
    let past = kv.prefix(p)?;
    let input: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let mut inputs: Vec<(String, ort::session::SessionInputValue<'static>)> =
        vec![("input_ids".into(), Tensor::from_array(([1usize, ids.len()], input))?.into())];
    for (l, pair) in past.layers.into_iter().enumerate() {
        for (kind, data) in ["key", "value"].into_iter().zip(pair) {
            let t = Tensor::from_array(([1usize, shape.n_kv_heads, p, shape.d_head], data))?;
            inputs.push((past_name(l, kind), t.into()));
        }
    }
    let tail = run_cancellable(progress, |options| {
        let mut outputs = session.run_with_options(inputs, options)?;
        collect(&mut outputs, bundle, ids.len(), p, prev.logits.is_some(), true)
    })?;
    prev.joined(p, tail)
}

/// Checks `ids` (run after `past` positions) against the model's context and vocabulary.
pub(super) fn check_ids(bundle: &Bundle, ids: &[u32], past: usize) -> Result<()> {
    let shape = &bundle.shape;
    let n_pos = past + ids.len();
    if ids.is_empty() {
        return Err(LensError::invalid("the prompt has no tokens"));
    }
    if n_pos > shape.n_ctx {
        return Err(LensError::invalid(format!("the prompt has {n_pos} tokens; the model's context is {}", shape.n_ctx)));
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= shape.d_vocab) {
        return Err(LensError::invalid(format!("token id {bad} is outside the model's vocabulary of {}", shape.d_vocab)));
    }
    Ok(())
}

/// Runs `f` (an ONNX Runtime run with the given options) so that cancelling `progress`
/// terminates it; a run that fails after a cancel is reported as [`LensError::Cancelled`].
pub(crate) fn run_cancellable<T>(progress: &Progress, f: impl FnOnce(&ort::session::RunOptions) -> Result<T>) -> Result<T> {
    progress.check()?;
    let options = std::sync::Arc::new(ort::session::RunOptions::new()?);
    let terminate = std::sync::Arc::clone(&options);
    finish_cancellable(progress, progress.with_cancel_hook(Box::new(move || drop(terminate.terminate())), || f(&options)))
}

/// Run options with selected outputs, shared with the cancel hook.
struct SelectedOptions(ort::session::RunOptions<ort::session::HasSelectedOutputs>);

// SAFETY: `ort` withholds `Sync` from run options with selected outputs because a pre-allocated
// output could then be written from two threads. These select outputs without pre-allocating
// any, and the only call made from another thread is `terminate`, which ONNX Runtime documents as
// safe to call while the run is in progress (`RunOptionsSetTerminate`).
unsafe impl Sync for SelectedOptions {}

/// [`run_cancellable`] computing only the outputs `options` select (none pre-allocated).
pub(crate) fn run_cancellable_selected<T>(
    progress: &Progress,
    options: ort::session::RunOptions<ort::session::HasSelectedOutputs>,
    f: impl FnOnce(&ort::session::RunOptions<ort::session::HasSelectedOutputs>) -> Result<T>,
) -> Result<T> {
    progress.check()?;
    let options = std::sync::Arc::new(SelectedOptions(options));
    let terminate = std::sync::Arc::clone(&options);
    finish_cancellable(progress, progress.with_cancel_hook(Box::new(move || drop(terminate.0.terminate())), || f(&options.0)))
}

/// A run that failed after a cancel is [`LensError::Cancelled`].
fn finish_cancellable<T>(progress: &Progress, run: Result<T>) -> Result<T> {
    match run {
        Err(_) if progress.is_cancelled() => Err(LensError::Cancelled),
        other => other,
    }
}

/// Every hook of one run's outputs, derived where the graph does not output it.
/// `past`: cached positions before these `n_pos`; `keep_kv`: read the cache of all of them.
pub(super) fn collect(
    outputs: &mut ort::session::SessionOutputs<'_>,
    bundle: &Bundle,
    n_pos: usize,
    past: usize,
    keep_logits: bool,
    keep_kv: bool,
) -> Result<ResidualTrace> {
    let shape = &bundle.shape;
    let d = shape.d_model;
    let embed = extract(outputs, &hook_name(0, "resid_pre"), n_pos, d)?;
    let mut resid_mid = Vec::with_capacity(shape.n_layers);
    let mut resid_post = Vec::with_capacity(shape.n_layers);
    let mut attn_out = Vec::with_capacity(shape.n_layers);
    let mut mlp_out = Vec::with_capacity(shape.n_layers);
    let opt = |outputs: &mut ort::session::SessionOutputs<'_>, l: usize, hook: &str, present: bool| -> Result<Option<Array2<f32>>> {
        if present { extract(outputs, &hook_name(l, hook), n_pos, d).map(Some) } else { Ok(None) }
    };
    for l in 0..shape.n_layers {
        let post = extract(outputs, &hook_name(l, "resid_post"), n_pos, d)?;
        let mid = opt(outputs, l, "resid_mid", bundle.has_resid_mid)?;
        let attn = opt(outputs, l, "attn_out", bundle.has_subblock_outputs)?;
        let mlp = opt(outputs, l, "mlp_out", bundle.has_subblock_outputs)?;
        let pre = resid_post.last().unwrap_or(&embed);
        // What the graph does not output is derived; Bundle::open guarantees enough is there.
        let (mid, attn, mlp) = match (mid, attn, mlp) {
            (Some(mid), Some(a), Some(m)) => (mid, a, m),
            (None, Some(a), Some(m)) => (pre + &a, a, m),
            (Some(mid), _, _) => (mid.clone(), &mid - pre, &post - &mid),
            (None, Some(a), None) => {
                let m = &post - pre - &a;
                (pre + &a, a, m)
            }
            (None, None, _) => return Err(LensError::Runtime(format!("the bundle outputs neither resid_mid nor attn_out of layer {l}"))),
        };
        resid_mid.push(mid);
        resid_post.push(post);
        attn_out.push(attn);
        mlp_out.push(mlp);
    }
    // The argmax is read from ORT's own buffer; the [pos, d_vocab] logits (51 MB at 256 tokens of
    // GPT-2) are copied only when asked for.
    // A graph without a head (a quantized bundle's) leaves both empty: the decoder is the head.
    let (logits_top1, logits) = if bundle.logits_in_graph {
        let value = take_output(outputs, "logits")?;
        let data = checked(&value, "logits", n_pos, shape.d_vocab)?;
        let logits = if keep_logits {
            Some(Array2::from_shape_vec((n_pos, shape.d_vocab), data.to_vec()).map_err(|e| LensError::Runtime(e.to_string()))?)
        } else {
            None
        };
        (data.chunks_exact(shape.d_vocab).map(argmax).collect(), logits)
    } else {
        (Vec::new(), None)
    };
    let kv = match bundle.kv_cache {
        Some(kv_shape) if keep_kv => {
            let all = past + n_pos;
            let want = [1, kv_shape.n_kv_heads as i64, all as i64, kv_shape.d_head as i64];
            let mut layers = Vec::with_capacity(shape.n_layers);
            for l in 0..shape.n_layers {
                let mut pair = [Vec::new(), Vec::new()];
                for (kind, slot) in ["key", "value"].into_iter().zip(pair.iter_mut()) {
                    let name = present_name(l, kind);
                    let value = take_output(outputs, &name)?;
                    let (dims, data) = value.try_extract_tensor::<f32>().map_err(|e| LensError::Runtime(format!("output {name}: {e}")))?;
                    if dims.iter().copied().collect::<Vec<i64>>() != want {
                        return Err(LensError::Runtime(format!("output {name} has shape {dims:?}, expected {want:?}")));
                    }
                    *slot = data.to_vec();
                }
                layers.push(pair);
            }
            Some(KvCache { shape: kv_shape, n_pos: all, layers })
        }
        _ => None,
    };
    Ok(ResidualTrace { n_pos, embed, resid_mid, resid_post, attn_out, mlp_out, logits_top1, logits, kv, decoded: DecodedCache::default() })
}
