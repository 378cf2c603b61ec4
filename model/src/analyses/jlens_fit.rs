//! Fitting a J-lens natively (issue 28) with the reference estimator exactly (TransformerLens's
//! `JacobianLens.fit`, the `jlens` package):
//!
//! `J_l = mean over prompts of mean over valid source positions t of Σ_{t' ≥ t, t' valid}
//! ∂h_final,t' / ∂h_l,t`, `h_l` block `l`'s output and `h_final` the last block's (before the final
//! norm). Per prompt: one backward-graph run per batch of `dim_batch` output dimensions
//! ([`crate::run::gradients`]; the forward part runs inside it), each planting one-hot cotangents
//! for its dimensions at every valid target position at once (causality does the sum). Valid
//! positions skip the first `skip_first` and the last. A prompt of `skip_first + 1` tokens or fewer
//! is skipped and not counted. Merging fits is the `n_prompts`-weighted mean.
//!
//! Where the bundle's graph has a key/value cache, the backward runs cover the valid positions
//! only: one forward pass of the first `skip_first` positions gives their cache, and each backward
//! run takes it as constants (exact: nothing at a valid position flows back to a skipped one, and
//! the last position reaches no valid one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array3, Axis};

use crate::error::{LensError, Progress, Result};
use crate::lens::jacobian_lens::JacobianLens;
use crate::lens::jacobian_lens::write::{CheckpointInfo, save_checkpoint, save_lens};
use crate::lens::torch_save::Py;
use crate::run::engine::LensEngine;
use crate::run::gradients::GradRunner;

/// The reference estimator's default leading positions excluded.
pub const DEFAULT_SKIP_FIRST: usize = 16;

/// What to fit.
#[derive(Debug, Clone)]
pub struct JlensFitOptions {
    /// Prompts are truncated to this many tokens.
    pub max_seq_len: usize,
    /// Leading positions excluded from the source average (and as targets).
    pub skip_first: usize,
    /// Source layers (block outputs), each below the last block; `None`: `0..n_layers - 1`.
    pub layers: Option<Vec<usize>>,
    /// Output dimensions per backward run (the lens is the same whatever the batch, only speed
    /// and memory change; on the CPU, 8 measured faster than 64).
    pub dim_batch: usize,
    /// Write a checkpoint after every this many prompts (and when stopped).
    pub checkpoint_every: usize,
    /// Store the lens in float16 (the reference default), else float32.
    pub half: bool,
    /// The prompt corpus's name, recorded in the lens's metadata.
    pub corpus: String,
    /// Continue the checkpoint beside the output (same model and options).
    pub resume: bool,
}

impl Default for JlensFitOptions {
    fn default() -> Self {
        Self {
            max_seq_len: 128,
            skip_first: DEFAULT_SKIP_FIRST,
            layers: None,
            dim_batch: 8,
            checkpoint_every: 10,
            half: true,
            corpus: String::new(),
            resume: false,
        }
    }
}

/// What a fit did.
#[derive(Debug, Clone, PartialEq)]
pub struct JlensFitReport {
    /// Prompts averaged (over every run of the fit, resumed ones included).
    pub n_prompts: u64,
    /// Prompts skipped in this run as too short.
    pub skipped: usize,
    /// Prompts fitted in this run (a resumed fit counts only its own).
    pub prompts_run: usize,
    /// Source layers fitted.
    pub source_layers: Vec<usize>,
    /// Wall time of this run, seconds.
    pub seconds: f64,
    /// Backward-graph runs of this run.
    pub backward_runs: usize,
}

/// The checkpoint file of a fit writing `out` (`out` with `.checkpoint.pt`).
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let name = out.file_name().map_or_else(|| "lens".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!("{name}.checkpoint.pt"))
}

/// The prompts of a prompts file: one per line (a trailing `\r` dropped), blank lines left out.
pub fn prompts_of(text: &str) -> Vec<String> {
    text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// The model's name and weights hash, as a lens's metadata records them.
struct ModelId {
    name: String,
    sha256: Option<String>,
}

fn metadata(model: &ModelId, opts: &JlensFitOptions, target: usize, n_prompts: u64) -> Vec<(String, Py)> {
    let mut m = vec![
        ("model_name".to_string(), Py::Str(model.name.clone())),
        ("estimator".into(), Py::Str("jacobian_lens".into())),
        ("corpus".into(), Py::Str(opts.corpus.clone())),
        ("n_prompts".into(), Py::Int(n_prompts as i64)),
        ("target_layer".into(), Py::Int(target as i64)),
        ("dim_batch".into(), Py::Int(opts.dim_batch as i64)),
        ("max_seq_len".into(), Py::Int(opts.max_seq_len as i64)),
        ("skip_first_positions".into(), Py::Int(opts.skip_first as i64)),
        ("fit_dtype".into(), Py::Str("float32".into())),
        ("fitted_by".into(), Py::Str(format!("logit-lens {}", env!("CARGO_PKG_VERSION")))),
    ];
    if let Some(sha) = &model.sha256 {
        m.push(("model_weights_sha256".into(), Py::Str(sha.clone())));
    }
    m
}

/// The source layers of `opts` for a model of `n_layers`, checked.
fn source_layers(opts: &JlensFitOptions, n_layers: usize) -> Result<Vec<usize>> {
    if n_layers < 2 {
        return Err(LensError::invalid("a J-lens needs a model of at least two blocks (the last block is the target)"));
    }
    let target = n_layers - 1;
    let mut layers = opts.layers.clone().unwrap_or_else(|| (0..target).collect());
    layers.sort_unstable();
    layers.dedup();
    if layers.is_empty() {
        return Err(LensError::invalid("--layers is empty"));
    }
    if let Some(&bad) = layers.iter().find(|&&l| l >= target) {
        return Err(LensError::invalid(format!("--layers {bad}: source layers are block outputs below the last block (0..{})", target - 1)));
    }
    Ok(layers)
}

/// Fits a J-lens of `engine`'s model on `prompts` into `out`, through the model's backward graph
/// on `device` (from the block after the lowest source layer on). With `opts.resume`, continues
/// the checkpoint beside `out` (same model and options). `on_prompt(done, total)` is called after
/// each prompt. Cancelling `progress` stops it after writing a checkpoint; the lens is written
/// only when every prompt is done.
pub fn fit_jacobian_lens(
    engine: &mut LensEngine,
    device: crate::run::runtime::Device,
    prompts: &[String],
    opts: &JlensFitOptions,
    out: &Path,
    progress: &Progress,
    on_prompt: &mut dyn FnMut(usize, usize),
) -> Result<JlensFitReport> {
    let t0 = std::time::Instant::now();
    let (n_layers, d) = (engine.bundle.shape.n_layers, engine.bundle.shape.d_model);
    let layers = source_layers(opts, n_layers)?;
    let target = n_layers - 1;
    if opts.max_seq_len == 0 || opts.dim_batch == 0 {
        return Err(LensError::invalid("--max-seq-len and --dim-batch must be at least 1"));
    }
    if prompts.is_empty() {
        return Err(LensError::invalid("the prompts file has no prompts (one per line)"));
    }
    // Gradients are needed at the inputs of the blocks after the source layers only.
    let lowest = layers.first().map_or(0, |l| l + 1);
    let mut runner = GradRunner::open(&engine.bundle, device, lowest, progress)?;
    let ckpt = checkpoint_path(out);
    let mut sums: BTreeMap<usize, Vec<f32>> = layers.iter().map(|&l| (l, vec![0f32; d * d])).collect();
    let (mut n_done, mut next) = (0u64, 0usize);
    if opts.resume {
        if !ckpt.is_file() {
            return Err(LensError::invalid(format!("--resume: there is no checkpoint {} to continue", ckpt.display())));
        }
        let (info, meta) = crate::lens::jacobian_lens::read::checkpoint_info(&ckpt)?;
        let expect = [
            ("model_name", engine.bundle.name.clone()),
            ("max_seq_len", opts.max_seq_len.to_string()),
            ("skip_first_positions", opts.skip_first.to_string()),
            ("corpus", opts.corpus.clone()),
        ];
        for (key, want) in expect {
            if let Some(have) = meta.get(key)
                && *have != want
            {
                return Err(LensError::invalid(format!(
                    "--resume: the checkpoint was fitted with {key} {have:?}, this run has {want:?}: use the same options"
                )));
            }
        }
        if info.target_layer != target || info.skip_first != opts.skip_first {
            return Err(LensError::invalid("--resume: the checkpoint is of another model or --skip-first"));
        }
        // A checkpoint written before its first prompt finished holds zeros: nothing to read.
        let lens = if info.n_done > 0 { Some(JacobianLens::open(&ckpt)?) } else { None };
        if let Some(lens) = &lens
            && (lens.d_model != d || lens.source_layers() != layers)
        {
            return Err(LensError::invalid(format!(
                "--resume: the checkpoint holds layers {:?} of width {}, this fit {layers:?} of width {d}",
                lens.source_layers(),
                lens.d_model
            )));
        }
        for (l, m) in lens.iter().flat_map(|lens| lens.matrices.iter()) {
            let values = m.to_f32()?;
            if let Some(s) = sums.get_mut(l) {
                // The checkpoint's sums, as read back divided by their count.
                for (a, v) in s.iter_mut().zip(values) {
                    *a = v * info.n_done as f32;
                }
            }
        }
        n_done = info.n_done;
        next = usize::try_from(info.next_idx).unwrap_or(usize::MAX).min(prompts.len());
    }
    let model = ModelId { name: engine.bundle.name.clone(), sha256: engine.bundle.weights_sha256.clone() };
    let write_checkpoint = |sums: &BTreeMap<usize, Vec<f32>>, n_done: u64, next: usize| -> Result<()> {
        let info = CheckpointInfo { n_done, next_idx: next as u64, target_layer: target, skip_first: opts.skip_first };
        save_checkpoint(&ckpt, sums, d, &info, metadata(&model, opts, target, n_done))
    };
    // A stop writes the checkpoint of the prompts done and is reported as the stop (or as the
    // checkpoint's failure).
    let stop = |sums: &BTreeMap<usize, Vec<f32>>, n_done: u64, next: usize| -> LensError {
        match write_checkpoint(sums, n_done, next) {
            Ok(()) => LensError::Cancelled,
            Err(e) => e,
        }
    };
    // The prompt in progress is summed apart and added when it is done: a fit stopped inside a
    // prompt checkpoints the prompts before it only (the resumed fit redoes that prompt whole).
    let mut pending: BTreeMap<usize, Vec<f32>> = layers.iter().map(|&l| (l, vec![0f32; d * d])).collect();
    let n_ctx = engine.bundle.shape.n_ctx.max(1);
    let (mut skipped, mut runs, mut prompts_run) = (0usize, 0usize, 0usize);
    let total = prompts.len();
    for (idx, prompt) in prompts.iter().enumerate().skip(next) {
        if progress.is_cancelled() {
            return Err(stop(&sums, n_done, idx));
        }
        let mut ids = engine.tokenizer.encode(prompt)?;
        ids.truncate(opts.max_seq_len.min(n_ctx));
        if ids.len() <= opts.skip_first + 1 {
            skipped += 1;
            on_prompt(idx + 1, total);
            continue;
        }
        let part = progress.part(idx as f32 / total as f32, 1.0 / total as f32);
        match fit_prompt(engine, &mut runner, &ids, opts, &mut pending, &part) {
            Err(LensError::Cancelled) => return Err(stop(&sums, n_done, idx)),
            r => runs += r?,
        }
        for (l, p) in &pending {
            let sum = sums.get_mut(l).ok_or_else(|| LensError::invalid("internal: no running sum for a source layer"))?;
            for (a, v) in sum.iter_mut().zip(p) {
                *a += v;
            }
        }
        n_done += 1;
        prompts_run += 1;
        on_prompt(idx + 1, total);
        if opts.checkpoint_every > 0 && (idx + 1) % opts.checkpoint_every == 0 && idx + 1 < total {
            write_checkpoint(&sums, n_done, idx + 1)?;
        }
    }
    if n_done == 0 {
        return Err(LensError::invalid(format!(
            "every prompt was too short: a prompt needs more than {} tokens (--skip-first {} + 1)",
            opts.skip_first + 1,
            opts.skip_first
        )));
    }
    let means: BTreeMap<usize, Vec<f32>> = sums.iter().map(|(&l, s)| (l, s.iter().map(|v| v / n_done as f32).collect())).collect();
    save_lens(out, &means, n_done, d, metadata(&model, opts, target, n_done), opts.half)?;
    if ckpt.is_file() {
        std::fs::remove_file(&ckpt).map_err(|e| LensError::io(&ckpt, e))?;
    }
    Ok(JlensFitReport { n_prompts: n_done, skipped, prompts_run, source_layers: layers, seconds: t0.elapsed().as_secs_f64(), backward_runs: runs })
}

/// One prompt `ids` (longer than `skip_first + 1` tokens) of a fit: writes every row of its
/// `J_l` into `pending` (per source layer, `d × d`) and returns the backward runs it made.
///
/// With the key/value cache the backward runs cover the valid positions only: the first
/// `skip_first` are a cache (nothing at a valid position flows back to them) and the last is left
/// out (it reaches no valid position and has no cotangent).
fn fit_prompt(
    engine: &mut LensEngine,
    runner: &mut GradRunner,
    ids: &[u32],
    opts: &JlensFitOptions,
    pending: &mut BTreeMap<usize, Vec<f32>>,
    progress: &Progress,
) -> Result<usize> {
    let (n, s, d) = (ids.len(), opts.skip_first, engine.bundle.shape.d_model);
    let trim = runner.takes_cache();
    let past = if trim && s > 0 {
        let kv = engine.trace_for_patching(ids.get(..s).unwrap_or(&[]), progress)?.kv;
        Some(runner.cache_inputs(&kv.ok_or_else(|| LensError::invalid("internal: the forward pass kept no key/value cache"))?)?)
    } else {
        None
    };
    // The positions the backward runs cover, and the valid ones among them.
    let (run_ids, valid) = if trim { (ids.get(s..n - 1).unwrap_or(&[]), 0..n - 1 - s) } else { (ids, s..n - 1) };
    let per_run = opts.dim_batch.min(d);
    let passes = d.div_ceil(per_run);
    let inv = 1.0 / valid.len() as f64;
    for pass in 0..passes {
        let start = pass * per_run;
        let k = per_run.min(d - start);
        let part = progress.part(pass as f32 / passes as f32, 1.0 / passes as f32);
        part.report("fitting the J-lens", 0.0);
        let mut cot = Array3::<f32>::zeros((k, run_ids.len(), d));
        for b in 0..k {
            for t in valid.clone() {
                if let Some(c) = cot.get_mut([b, t, start + b]) {
                    *c = 1.0;
                }
            }
        }
        let grads = match &past {
            Some(p) => runner.vjp_after(p, run_ids, cot.view(), &part)?,
            None => runner.vjp(run_ids, cot.view(), &part)?,
        };
        for (&l, sum) in pending.iter_mut() {
            // The gradient at block l's output is the one at block l + 1's input.
            let g = grads
                .resid_pre
                .get(l + 1)
                .and_then(Option::as_ref)
                .ok_or_else(|| LensError::invalid(format!("internal: no gradient at block {}'s input", l + 1)))?;
            for (b, g_b) in g.axis_iter(Axis(0)).enumerate() {
                let mut row = vec![0f64; d];
                for t in valid.clone() {
                    for (r, &v) in row.iter_mut().zip(g_b.row(t)) {
                        *r += f64::from(v);
                    }
                }
                let out_row = sum.get_mut((start + b) * d..(start + b + 1) * d).ok_or_else(|| LensError::invalid("internal: a J-lens row out of range"))?;
                // Every row is written once per prompt (the passes' rows are disjoint).
                for (a, r) in out_row.iter_mut().zip(row) {
                    *a = (r * inv) as f32;
                }
            }
        }
    }
    Ok(passes)
}

/// Merges J-lenses fitted on parts of a corpus into `out`: per layer, the `n_prompts`-weighted
/// mean. The lenses must share their width, source layers and (where they name one) model.
pub fn merge_jacobian_lenses(inputs: &[PathBuf], out: &Path, half: bool) -> Result<u64> {
    if inputs.len() < 2 {
        return Err(LensError::invalid("merge needs at least two J-lenses"));
    }
    let mut lenses = Vec::with_capacity(inputs.len());
    for p in inputs {
        let lens = JacobianLens::open(p)?;
        if lens.n_prompts == 0 {
            return Err(LensError::bad_file(p, "its n_prompts is 0: a merge weights each lens by its prompts"));
        }
        lenses.push(lens);
    }
    let first = lenses.first().ok_or_else(|| LensError::invalid("merge needs at least two J-lenses"))?;
    for (lens, p) in lenses.iter().zip(inputs).skip(1) {
        if lens.d_model != first.d_model || lens.source_layers() != first.source_layers() {
            return Err(LensError::bad_file(
                p,
                format!(
                    "holds layers {:?} of width {}; the first lens holds {:?} of width {}",
                    lens.source_layers(),
                    lens.d_model,
                    first.source_layers(),
                    first.d_model
                ),
            ));
        }
        if let (Some(a), Some(b)) = (&lens.model_name, &first.model_name)
            && a != b
        {
            return Err(LensError::bad_file(p, format!("was fitted for {a:?}, the first lens for {b:?}")));
        }
    }
    let total: u64 = lenses.iter().map(|l| l.n_prompts).sum();
    let d = first.d_model;
    let mut merged: BTreeMap<usize, Vec<f64>> = first.source_layers().into_iter().map(|l| (l, vec![0f64; d * d])).collect();
    for lens in &lenses {
        let w = lens.n_prompts as f64 / total as f64;
        for (l, m) in &lens.matrices {
            let values = m.to_f32()?;
            if let Some(acc) = merged.get_mut(l) {
                for (a, v) in acc.iter_mut().zip(values) {
                    *a += w * f64::from(v);
                }
            }
        }
    }
    let merged: BTreeMap<usize, Vec<f32>> = merged.into_iter().map(|(l, v)| (l, v.into_iter().map(|x| x as f32).collect())).collect();
    let mut meta = vec![("n_prompts".to_string(), Py::Int(total as i64)), ("merged_from".into(), Py::Int(inputs.len() as i64))];
    if let Some(name) = &first.model_name {
        meta.push(("model_name".into(), Py::Str(name.clone())));
    }
    save_lens(out, &merged, total, d, meta, half)?;
    Ok(total)
}
