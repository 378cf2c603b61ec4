//! Fitting a tuned lens on this machine: the `tuned-lens` package's objective and optimiser,
//! sized for a CPU.
//!
//! Objective: for every translator `i`, the mean over the batch's positions of
//! `KL(final ‖ lens_i)`, where `lens_i` decodes `h + W_i h + b_i` (`h` the residual read by
//! translator `i`) with the model's final norm and unembedding, and `final` is the model's own
//! output distribution at the same position; the translators start at zero (the logit lens).
//! The losses are summed over translators (each translator only sees its own).
//!
//! Optimiser (tuned-lens's `train` defaults): SGD with Nesterov momentum 0.9, learning rate
//! `lr_scale · (1 − 0.9)` decayed linearly to zero over the steps, weight decay 1e-3 on every
//! parameter, the gradient clipped to global norm 1. What differs is the batch: tuned-lens takes
//! 2^18 tokens per step for 250 steps; the defaults here ([`FitOptions::default`]) take far fewer
//! tokens per step, which a CPU can afford in minutes (see the README for times).
//!
//! The gradient through the unembedding is streamed over vocabulary chunks ([`grad::kl_grad`]);
//! the forward pass is the bundle's own graph. Checkpoints (translators, momentum, step) are
//! written to `OUT/checkpoint/` every [`FitOptions::checkpoint_every`] steps and when cancelled,
//! and a fit started with `resume` continues from one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Progress, Result, part};
use crate::lens::kernel::Decoder;
use crate::lens::tuned_lens::grad::kl_grad;
use crate::lens::tuned_lens::params::write_atomic;
use crate::lens::tuned_lens::{TunedLens, TunedLensConfig, hash};
use crate::run::engine::LensEngine;
use crate::run::sites::SiteKind;

/// The checkpoint folder inside the output folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const STATE_JSON: &str = "state.json";
const STATE_TENSORS: &str = "state.safetensors";
/// Marks a checkpoint folder as a fit's own: only a folder holding it is written to, and only the
/// files named here are ever removed (a `checkpoint/` of the user's in `--out` is left alone).
const CHECKPOINT_MARK: &str = ".logit-lens-fit-checkpoint";

/// Refuses an `out/checkpoint/` that exists without being a fit's own (its mark): the user's
/// files there are neither written over nor removed.
fn check_checkpoint_is_ours(out: &Path) -> Result<()> {
    let dir = checkpoint_dir(out);
    if dir.exists() && !dir.join(CHECKPOINT_MARK).is_file() {
        return Err(LensError::bad_file(
            &dir,
            "this folder exists and is not a logit-lens fit checkpoint (it would be written over and removed): move it, or choose another output folder",
        ));
    }
    Ok(())
}

/// Files whose presence makes a folder a model (a checkpoint or a bundle): a lens is never
/// written into one, whatever `--overwrite` says (its `config.json` would be replaced).
const MODEL_FILES: [&str; 5] = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json", "model.onnx"];

/// Whether `dir` holds a tuned lens (its `config.json` or `params.pt`), which a fit replaces only
/// when asked (the CLI's `--overwrite`, the app's "Replace" box).
pub fn holds_lens(dir: &Path) -> bool {
    dir.join(crate::lens::tuned_lens::config::CONFIG_FILE).is_file() || dir.join(crate::lens::tuned_lens::params::PARAMS_PT).is_file()
}

/// The first of [`MODEL_FILES`] that `dir` holds.
fn model_file_in(dir: &Path) -> Option<&'static str> {
    MODEL_FILES.iter().copied().find(|f| dir.join(f).is_file())
}

/// Whether `dir` holds a model (a checkpoint's or a bundle's weights): never a lens's folder.
pub fn is_model_folder(dir: &Path) -> bool {
    model_file_in(dir).is_some()
}

/// Refuses an output folder that holds a model.
fn check_not_a_model_folder(out: &Path) -> Result<()> {
    if let Some(f) = model_file_in(out) {
        return Err(LensError::bad_file(
            out,
            format!("this folder holds a model ({f}); a tuned lens is never written into a model folder: choose another output folder"),
        ));
    }
    Ok(())
}

/// Removes a finished fit's checkpoint: its own files, then the folder if nothing else is in it.
fn remove_checkpoint(out: &Path) -> Result<()> {
    let dir = checkpoint_dir(out);
    if !dir.join(CHECKPOINT_MARK).is_file() {
        return Ok(());
    }
    for name in [STATE_JSON, STATE_TENSORS, CHECKPOINT_MARK] {
        let p = dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LensError::io(&p, e)),
        }
    }
    // Not empty (something else was put there): left as it is.
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

/// How to fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Tokens per step (whole windows: rounded up to a multiple of the window).
    pub tokens_per_step: usize,
    /// Tokens per window (`None`: 256, or the model's context if shorter).
    pub window: Option<usize>,
    /// Use only the first this many tokens of the text.
    pub max_tokens: Option<usize>,
    /// The learning rate is `lr_scale · (1 − momentum)`.
    pub lr_scale: f64,
    /// Nesterov momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// Vocabulary chunk of the gradient kernel.
    pub chunk: usize,
    /// Seed of the window order.
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only when cancelled).
    pub checkpoint_every: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            steps: 60,
            tokens_per_step: 1024,
            window: None,
            max_tokens: None,
            lr_scale: 1.0,
            momentum: 0.9,
            weight_decay: 1e-3,
            clip: 1.0,
            chunk: 1024,
            seed: 0,
            checkpoint_every: 10,
        }
    }
}

/// What one step reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitStep {
    /// Steps done (1-based).
    pub step: usize,
    /// Of this many.
    pub steps: usize,
    /// Mean `KL(final ‖ lens)` of each translator on this step's batch, before the update (nats).
    pub loss: Vec<f64>,
    /// The gradient's global norm before clipping.
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Tokens in the batch.
    pub tokens: usize,
    /// Seconds since the fit (or its resumption) started.
    pub elapsed_s: f64,
}

/// A checkpoint: everything needed to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateMeta {
    step: usize,
    options: FitOptions,
    /// Identifies the training tokens (sha256 of the ids).
    data: String,
    base_model: String,
    history: Vec<FitStep>,
}

/// The outcome of a fit.
#[derive(Debug, Clone)]
pub struct FitResult {
    /// The lens (also written to the output folder).
    pub lens: TunedLens,
    /// Every step's report (including those before a resumption).
    pub history: Vec<FitStep>,
    /// Steps run by this call.
    pub steps_run: usize,
    /// Seconds this call took.
    pub seconds: f64,
}

/// The residual rows translator `i` reads at every site: the sites of [`TunedLens::translator_of`].
fn translator_sites(n_layers: usize) -> Vec<SiteKind> {
    std::iter::once(SiteKind::Embed).chain((0..n_layers.saturating_sub(1)).map(SiteKind::Block)).collect()
}

/// The final norm of each row, keeping what its backward needs: `(y, x̂, σ)`.
fn norm_forward(dec: &Decoder, t: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
    let d = dec.d_model;
    let mut y = vec![0f32; t.len()];
    let mut xh = vec![0f32; t.len()];
    let mut sig = Vec::with_capacity(t.len() / d.max(1));
    for ((row, yr), xr) in t.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(xh.chunks_exact_mut(d)) {
        let (mean, sigma) = dec.mean_sigma(row);
        for ((((&v, yo), xo), &g), &b) in row.iter().zip(yr.iter_mut()).zip(xr.iter_mut()).zip(&dec.gamma).zip(&dec.beta) {
            let xhat = (f64::from(v) - mean) / sigma;
            *xo = xhat as f32;
            *yo = (xhat * f64::from(g) + f64::from(b)) as f32;
        }
        sig.push(sigma);
    }
    (y, xh, sig)
}

/// `dL/dt` from `dL/dy` through the final norm (LayerNorm: `(ĝ − mean ĝ − x̂ mean(ĝ x̂)) / σ`;
/// RMSNorm: `(ĝ − x̂ mean(ĝ x̂)) / σ`, with `ĝ = γ ⊙ dy`).
fn norm_backward(dec: &Decoder, dy: &[f32], xh: &[f32], sig: &[f64]) -> Vec<f32> {
    let d = dec.d_model;
    let n = d as f64;
    let mut dt = vec![0f32; dy.len()];
    for (((dyr, xr), &sigma), out) in dy.chunks_exact(d).zip(xh.chunks_exact(d)).zip(sig).zip(dt.chunks_exact_mut(d)) {
        let g: Vec<f64> = dyr.iter().zip(&dec.gamma).map(|(&a, &b)| f64::from(a) * f64::from(b)).collect();
        let mean_g = if dec.centres() { g.iter().sum::<f64>() / n } else { 0.0 };
        let mean_gx = g.iter().zip(xr).map(|(a, &b)| a * f64::from(b)).sum::<f64>() / n;
        for ((o, gv), &xv) in out.iter_mut().zip(&g).zip(xr) {
            *o = ((gv - mean_g - f64::from(xv) * mean_gx) / sigma) as f32;
        }
    }
    dt
}

/// One translator's loss and gradient on a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatorGrad {
    /// Mean KL(final ‖ lens) over the batch, nats.
    pub kl: f64,
    /// d(mean KL)/dW // [d·d], `out × in`
    pub d_w: Vec<f32>,
    /// d(mean KL)/db // [d]
    pub d_b: Vec<f32>,
}

/// The loss and gradient of one batch, per translator, from the residuals each translator reads
/// (`h[i]`: `[n, d]`) and the final residuals (`[n, d]`).
pub fn batch_gradient(lens: &TunedLens, dec: &Decoder, h: &[Vec<f32>], finals: &[f32], chunk: usize, progress: &Progress) -> Result<Vec<TranslatorGrad>> {
    let d = dec.d_model;
    let n = finals.len() / d.max(1);
    let n_tr = lens.len();
    if h.len() != n_tr || h.iter().any(|x| x.len() != n * d) || n == 0 {
        return Err(LensError::invalid("internal: tuned-lens batch of inconsistent sizes"));
    }
    let mut y_lens = Vec::with_capacity(n_tr * n * d);
    let mut saved = Vec::with_capacity(n_tr);
    for (i, x) in h.iter().enumerate() {
        let view = ndarray::ArrayView2::from_shape((n, d), x.as_slice()).map_err(|e| LensError::invalid(e.to_string()))?;
        let t = lens.translate(i, view)?;
        let t = t.as_slice().ok_or_else(|| LensError::invalid("internal: a translated block is not contiguous"))?;
        let (y, xh, sig) = norm_forward(dec, t);
        y_lens.extend_from_slice(&y);
        saved.push((xh, sig));
    }
    let (y_final, _, _) = norm_forward(dec, finals);
    let g = kl_grad(&y_lens, &y_final, n_tr, dec, chunk, progress)?;
    let inv_n = 1.0 / n as f32;
    let mut out = Vec::with_capacity(n_tr);
    for (i, ((xh, sig), x)) in saved.iter().zip(h).enumerate() {
        let dy = part(&g.d_y, i * n * d..(i + 1) * n * d, "gradient rows")?;
        let mut dt = norm_backward(dec, dy, xh, sig);
        for v in &mut dt {
            *v *= inv_n;
        }
        // dW = dTᵀ H, db = Σ dT.
        let mut dw = vec![0f32; d * d];
        {
            let lhs = faer::MatRef::from_row_major_slice(&dt, n, d);
            let rhs = faer::MatRef::from_row_major_slice(x, n, d);
            let dst = faer::MatMut::from_row_major_slice_mut(&mut dw, d, d);
            faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs.transpose(), rhs, 1.0f32, faer::Par::rayon(0));
        }
        let mut db = vec![0f32; d];
        for row in dt.chunks_exact(d) {
            for (b, &v) in db.iter_mut().zip(row) {
                *b += v;
            }
        }
        let kl = part(&g.kl, i * n..(i + 1) * n, "losses")?.iter().sum::<f64>() / n as f64;
        out.push(TranslatorGrad { kl, d_w: dw, d_b: db });
    }
    Ok(out)
}

fn data_id(ids: &[u32]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A deterministic shuffle of `0..n` (xorshift64*, Fisher–Yates).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
    v
}

fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join(CHECKPOINT_DIR)
}

fn save_checkpoint(out: &Path, meta: &StateMeta, lens: &TunedLens, mom: &[(Vec<f32>, Vec<f32>)]) -> Result<()> {
    check_checkpoint_is_ours(out)?;
    let dir = checkpoint_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| LensError::io(&dir, e))?;
    write_atomic(&dir.join(CHECKPOINT_MARK), |f| std::io::Write::write_all(f, b"a logit-lens fit-lens checkpoint; removed when the fit finishes\n"))?;
    let d = lens.config.d_model;
    let mut named: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for (i, ((w, b), (mw, mb))) in lens.weights.iter().zip(&lens.biases).zip(mom).enumerate() {
        named.push((format!("{i}.weight"), vec![d, d], w));
        named.push((format!("{i}.bias"), vec![d], b));
        named.push((format!("momentum.{i}.weight"), vec![d, d], mw));
        named.push((format!("momentum.{i}.bias"), vec![d], mb));
    }
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        named.iter().map(|(n, s, v)| (n.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.clone())).collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| LensError::invalid(e.to_string()))?;
    let data = safetensors::serialize(views, None).map_err(|e| LensError::invalid(e.to_string()))?;
    write_atomic(&dir.join(STATE_TENSORS), |f| std::io::Write::write_all(f, &data))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| LensError::invalid(e.to_string()))?;
    write_atomic(&dir.join(STATE_JSON), |f| std::io::Write::write_all(f, &json))
}

fn load_checkpoint(out: &Path, lens: &mut TunedLens, mom: &mut [(Vec<f32>, Vec<f32>)]) -> Result<StateMeta> {
    let dir = checkpoint_dir(out);
    let meta_path = dir.join(STATE_JSON);
    let text = std::fs::read(&meta_path).map_err(|e| LensError::io(&meta_path, e))?;
    let meta: StateMeta = serde_json::from_slice(&text).map_err(|e| LensError::bad_file(&meta_path, format!("not a fit checkpoint: {e}")))?;
    let path = dir.join(STATE_TENSORS);
    let bytes = std::fs::read(&path).map_err(|e| LensError::io(&path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| LensError::bad_file(&path, format!("not a valid checkpoint (truncated?): {e}")))?;
    let take = |name: &str, dst: &mut Vec<f32>| -> Result<()> {
        let t = st.tensor(name).map_err(|_| LensError::bad_file(&path, format!("the checkpoint has no {name}: it is for another lens")))?;
        let mut v = Vec::with_capacity(dst.len());
        crate::source::checkpoint::decode_f32(crate::source::checkpoint::ElemType::F32, t.data(), &mut v)
            .map_err(|m| LensError::bad_file(&path, format!("{name} {m}")))?;
        if t.dtype() != safetensors::Dtype::F32 || v.len() != dst.len() {
            return Err(LensError::bad_file(&path, format!("{name} has {} values, this lens needs {}", v.len(), dst.len())));
        }
        *dst = v;
        Ok(())
    };
    for (i, ((w, b), (mw, mb))) in lens.weights.iter_mut().zip(lens.biases.iter_mut()).zip(mom.iter_mut()).enumerate() {
        take(&format!("{i}.weight"), w)?;
        take(&format!("{i}.bias"), b)?;
        take(&format!("momentum.{i}.weight"), mw)?;
        take(&format!("momentum.{i}.bias"), mb)?;
    }
    Ok(meta)
}

/// Whether `out` holds a checkpoint a fit can resume from (one of ours).
pub fn has_checkpoint(out: &Path) -> bool {
    checkpoint_dir(out).join(STATE_JSON).is_file() && checkpoint_dir(out).join(CHECKPOINT_MARK).is_file()
}

/// Fits a tuned lens for the engine's model on `text`, writing it (tuned-lens's format) to `out`
/// and checkpoints to `out/checkpoint/`. `resume` continues from that checkpoint (same text and
/// options). `on_step` sees every step. Cancelling `progress` stops at the next chunk and writes
/// a checkpoint of the last finished step (then returns [`LensError::Cancelled`]).
pub fn fit(
    engine: &mut LensEngine,
    text: &str,
    opts: &FitOptions,
    out: &Path,
    resume: bool,
    on_step: &mut dyn FnMut(&FitStep),
    progress: &Progress,
) -> Result<FitResult> {
    let t0 = Instant::now();
    let shape = engine.bundle.shape.clone();
    let (n_layers, d) = (shape.n_layers, shape.d_model);
    let window = opts.window.unwrap_or(256.min(shape.n_ctx));
    if window < 2 || window > shape.n_ctx {
        return Err(LensError::invalid(format!("--window {window}: use 2 to the model's context ({})", shape.n_ctx)));
    }
    if opts.steps == 0 || opts.tokens_per_step == 0 || opts.chunk == 0 {
        return Err(LensError::invalid("--steps, --tokens and the chunk must be at least 1"));
    }
    if text.trim().is_empty() {
        return Err(LensError::invalid("the training text is empty"));
    }
    // Before any work: a model folder, or a checkpoint folder of the user's in `out`, is refused.
    check_not_a_model_folder(out)?;
    check_checkpoint_is_ours(out)?;
    progress.report("tokenizing", 0.0);
    let ids = match opts.max_tokens {
        Some(m) => crate::source::long_text::encode_prefix(&engine.tokenizer, text, m)?,
        None => crate::source::long_text::encode_long(&engine.tokenizer, text, crate::source::long_text::PIECE_BYTES, &mut |f| {
            progress.report("tokenizing", f);
            progress.check()
        })?,
    };
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= shape.d_vocab) {
        return Err(LensError::invalid(format!("the text contains token id {bad}, which the model has no row for (vocabulary of {})", shape.d_vocab)));
    }
    let windows: Vec<&[u32]> = ids.chunks(window).filter(|c| c.len() >= 2).collect();
    if windows.is_empty() {
        return Err(LensError::invalid(format!("the text has {} tokens: too few for one window", ids.len())));
    }
    let per_step = opts.tokens_per_step.div_ceil(window).clamp(1, windows.len());
    let order = permutation(windows.len(), opts.seed);
    let dec = engine.decoder.clone();
    let config = TunedLensConfig {
        base_model_name_or_path: engine.bundle.name.clone(),
        base_model_revision: None,
        d_model: d,
        num_hidden_layers: n_layers,
        bias: true,
        unembed_hash: Some(hash::unembedding_hash_of(&dec.w_u, dec.d_vocab, d)),
        include_input: true,
    };
    let mut lens = TunedLens::zeros(config);
    let mut mom: Vec<(Vec<f32>, Vec<f32>)> = (0..n_layers).map(|_| (vec![0f32; d * d], vec![0f32; d])).collect();
    let data = data_id(&ids);
    let mut history = Vec::new();
    let mut start = 0;
    if resume {
        if !has_checkpoint(out) {
            return Err(LensError::bad_file(&checkpoint_dir(out), "no checkpoint to resume from"));
        }
        let meta = load_checkpoint(out, &mut lens, &mut mom)?;
        if meta.data != data || meta.options != *opts || meta.base_model != engine.bundle.name {
            return Err(LensError::bad_file(
                &checkpoint_dir(out),
                "this checkpoint was made with another text, model or options; resume with the same ones, or start again without --resume",
            ));
        }
        start = meta.step;
        history = meta.history;
    }
    let sites = translator_sites(n_layers);
    let final_site = SiteKind::Block(n_layers.saturating_sub(1));
    let mut step = start;
    let result = (|| -> Result<()> {
        while step < opts.steps {
            progress.check()?;
            let frac = |f: f32| (step as f32 + f) / opts.steps as f32;
            // The batch: `per_step` windows in the seeded order.
            let mut h: Vec<Vec<f32>> = vec![Vec::new(); n_layers];
            let mut finals = Vec::new();
            for j in 0..per_step {
                let w =
                    order.get((step * per_step + j) % order.len()).and_then(|&i| windows.get(i)).ok_or_else(|| LensError::invalid("internal: window index"))?;
                progress.report("forward", frac(0.3 * j as f32 / per_step as f32));
                let trace = engine.trace_with(w, progress)?;
                for (rows, site) in h.iter_mut().zip(&sites) {
                    let x = trace.site(*site).ok_or_else(|| LensError::invalid("missing site in trace"))?;
                    rows.extend(x.iter());
                }
                finals.extend(trace.site(final_site).ok_or_else(|| LensError::invalid("missing final site"))?.iter());
            }
            let tokens = finals.len() / d;
            progress.report("gradient", frac(0.3));
            let grads = batch_gradient(&lens, &dec, &h, &finals, opts.chunk, &progress.part(frac(0.3), 0.7 / opts.steps as f32))?;
            // Clip to the global norm, then SGD with weight decay and Nesterov momentum.
            let norm = grads.iter().map(|g| g.d_w.iter().chain(&g.d_b).map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()).sum::<f64>().sqrt();
            let clip = if norm > opts.clip { opts.clip / (norm + 1e-6) } else { 1.0 };
            let lr = opts.lr_scale * (1.0 - opts.momentum) * (opts.steps - step) as f64 / opts.steps as f64;
            let update = |theta: &mut [f32], g: &[f32], buf: &mut [f32]| {
                for ((t, &gv), bv) in theta.iter_mut().zip(g).zip(buf.iter_mut()) {
                    let gv = f64::from(gv) * clip + opts.weight_decay * f64::from(*t);
                    let b = if step == 0 { gv } else { opts.momentum * f64::from(*bv) + gv };
                    *bv = b as f32;
                    *t = (f64::from(*t) - lr * (gv + opts.momentum * b)) as f32;
                }
            };
            for (((g, w), b), (mw, mb)) in grads.iter().zip(lens.weights.iter_mut()).zip(lens.biases.iter_mut()).zip(mom.iter_mut()) {
                update(w, &g.d_w, mw);
                update(b, &g.d_b, mb);
            }
            step += 1;
            let report = FitStep {
                step,
                steps: opts.steps,
                loss: grads.iter().map(|g| g.kl).collect(),
                grad_norm: norm,
                lr,
                tokens,
                elapsed_s: t0.elapsed().as_secs_f64(),
            };
            on_step(&report);
            history.push(report);
            if opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0 && step < opts.steps {
                let meta = StateMeta { step, options: opts.clone(), data: data.clone(), base_model: engine.bundle.name.clone(), history: history.clone() };
                save_checkpoint(out, &meta, &lens, &mom)?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => {}
        Err(LensError::Cancelled) => {
            if step > start {
                let meta = StateMeta { step, options: opts.clone(), data, base_model: engine.bundle.name.clone(), history };
                save_checkpoint(out, &meta, &lens, &mom)?;
            }
            return Err(LensError::Cancelled);
        }
        Err(e) => return Err(e),
    }
    lens.save(out)?;
    remove_checkpoint(out)?;
    lens.source = Some(out.to_path_buf());
    Ok(FitResult { lens, history, steps_run: step - start, seconds: t0.elapsed().as_secs_f64() })
}
