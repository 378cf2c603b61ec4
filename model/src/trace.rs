//! [`ResidualTrace`]: the residual stream and sub-block outputs of one forward pass.

use ndarray::Array2;
use ort::session::Session;
use ort::value::Tensor;

use crate::bundle::Bundle;
use crate::error::{LensError, Progress, Result};
use crate::graph::hook_name;
use crate::lens::DecoderKind;
use crate::sites::SiteKind;

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
    /// The model's `logits`: argmax id per position (ties: lower id) // [pos]
    pub logits_top1: Vec<u32>,
    /// The model's full `logits` when requested // [pos, d_vocab]
    pub logits: Option<Array2<f32>>,
    /// Sites already passed through the last block (filled by the `last-block` decoders, shared
    /// by clones, so the pieces of one run compute them once).
    pub decoded: DecodedCache,
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
}

/// Moves one output out of ORT's outputs.
fn take_output(outputs: &mut ort::session::SessionOutputs<'_>, name: &str) -> Result<ort::value::DynValue> {
    outputs.remove(name).ok_or_else(|| LensError::Runtime(format!("the model did not return output {name}")))
}

/// The data of an output of shape `[1, n_pos, width]` with finite values only.
fn checked<'v>(value: &'v ort::value::DynValue, name: &str, n_pos: usize, width: usize) -> Result<&'v [f32]> {
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
/// the ONNX Runtime run.
pub fn run_trace(session: &mut Session, bundle: &Bundle, ids: &[u32], keep_logits: bool, progress: &Progress) -> Result<ResidualTrace> {
    let shape = &bundle.shape;
    let n_pos = ids.len();
    if n_pos == 0 {
        return Err(LensError::invalid("the prompt has no tokens"));
    }
    if n_pos > shape.n_ctx {
        return Err(LensError::invalid(format!("the prompt has {n_pos} tokens; the model's context is {}", shape.n_ctx)));
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= shape.d_vocab) {
        return Err(LensError::invalid(format!("token id {bad} is outside the model's vocabulary of {}", shape.d_vocab)));
    }
    let input: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let tensor = Tensor::from_array(([1usize, n_pos], input))?;
    run_cancellable(progress, |options| {
        let mut outputs = session.run_with_options(ort::inputs!["input_ids" => tensor], options)?;
        collect(&mut outputs, bundle, n_pos, keep_logits)
    })
}

/// Runs `f` (an ONNX Runtime run with the given options) so that cancelling `progress`
/// terminates it; a run that fails after a cancel is reported as [`LensError::Cancelled`].
pub(crate) fn run_cancellable<T>(progress: &Progress, f: impl FnOnce(&ort::session::RunOptions) -> Result<T>) -> Result<T> {
    progress.check()?;
    let options = std::sync::Arc::new(ort::session::RunOptions::new()?);
    let terminate = std::sync::Arc::clone(&options);
    let run = progress.with_cancel_hook(
        Box::new(move || {
            let _ = terminate.terminate();
        }),
        || f(&options),
    );
    match run {
        Err(_) if progress.is_cancelled() => Err(LensError::Cancelled),
        other => other,
    }
}

/// Every hook of one run's outputs, derived where the graph does not output it.
fn collect(outputs: &mut ort::session::SessionOutputs<'_>, bundle: &Bundle, n_pos: usize, keep_logits: bool) -> Result<ResidualTrace> {
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
    let value = take_output(outputs, "logits")?;
    let data = checked(&value, "logits", n_pos, shape.d_vocab)?;
    let logits_top1 = data.chunks_exact(shape.d_vocab).map(argmax).collect();
    let logits =
        if keep_logits { Some(Array2::from_shape_vec((n_pos, shape.d_vocab), data.to_vec()).map_err(|e| LensError::Runtime(e.to_string()))?) } else { None };
    Ok(ResidualTrace { n_pos, embed, resid_mid, resid_post, attn_out, mlp_out, logits_top1, logits, decoded: DecodedCache::default() })
}
