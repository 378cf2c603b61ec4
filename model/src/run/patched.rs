//! A forward pass with one residual site's rows replaced (activation patching, steering), run
//! from the site on: the positions before the patched one come from the unpatched run's
//! key/value cache, and the blocks before the site are skipped (the graph starts at the block
//! after it, [`crate::build::graph::START_LAYER`]), so only what the patch changes is computed.

use ndarray::{Array2, s};
use ort::session::Session;
use ort::value::Tensor;

use crate::build::graph::{PATCH_ROW, PATCH_SITE, PATCH_VALUE, START_LAYER, START_RESID, WITH_LOGITS, hook_name, past_name};
use crate::build::spec::Residual;
use crate::error::{LensError, Progress, Result};
use crate::run::bundle::Bundle;
use crate::run::sites::SiteKind;
use crate::run::trace::{ResidualTrace, check_ids, checked, collect, run_cancellable, run_cancellable_selected, take_output};

/// A residual site's rows replaced in one forward pass (activation patching, steering).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// The site: the embeddings, a `resid_mid` (sequential blocks) or a `resid_post`.
    pub site: SiteKind,
    /// Which rows.
    pub rows: PatchRows,
    /// The replacement: one row `[d_model]` for [`PatchRows::One`], every row `[pos · d_model]`
    /// for [`PatchRows::All`].
    pub value: Vec<f32>,
}

/// The rows a [`Patch`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchRows {
    /// The row of one position.
    One(usize),
    /// Every row.
    All,
}

/// The lens graph's number of a residual site ([`crate::build::graph::PATCH_SITE`]): `0` the
/// embeddings, `2l + 1` layer `l`'s `resid_mid`, `2l + 2` its `resid_post`.
pub fn patch_site_of(site: SiteKind) -> usize {
    match site {
        SiteKind::Embed => 0,
        SiteKind::Attn(l) => 2 * l + 1,
        SiteKind::Block(l) => 2 * l + 2,
    }
}

/// One patched run's graph inputs and what the caller needs to read its outputs.
struct PatchedRun {
    inputs: Vec<(String, ort::session::SessionInputValue<'static>)>,
    /// The first position run (the ones before it are the cache's).
    start: usize,
    /// Positions run.
    n_rows: usize,
    /// The first block run (the ones before it are skipped).
    start_layer: usize,
    /// The patch is the input of block `start_layer` (a `resid_post`): the skipped block before
    /// it outputs that input, the patched residual, as its `resid_post`.
    patched_post: bool,
}

/// A scalar int64 input.
fn scalar(v: i64) -> Result<ort::session::SessionInputValue<'static>> {
    Ok(Tensor::from_array((Vec::<usize>::new(), vec![v]))?.into())
}

/// Rows `start..` of `a`, with rows of `value` (`rows` of `d` values) put in place by `patch`.
fn rows_from(a: &Array2<f32>, start: usize, rows: PatchRows, value: &[f32]) -> Result<Vec<f32>> {
    let mut out = a.slice(s![start.., ..]).to_owned();
    match rows {
        PatchRows::One(p) => {
            let i = p.checked_sub(start).filter(|&i| i < out.nrows()).ok_or_else(|| LensError::invalid(format!("internal: row {p} is not after {start}")))?;
            for (o, v) in out.row_mut(i).iter_mut().zip(value) {
                *o = *v;
            }
        }
        PatchRows::All => {
            let all = ndarray::ArrayView2::from_shape(out.raw_dim(), value).map_err(|e| LensError::invalid(format!("internal: a patch's rows: {e}")))?;
            out.assign(&all);
        }
    }
    Ok(out.into_raw_vec_and_offset().0)
}

/// Checks `patch` against the bundle and `ids` and builds the run's inputs.
/// `skip`: start at the block after the site (the bundle's graph must be able to).
fn prepare(bundle: &Bundle, base: &ResidualTrace, ids: &[u32], patch: &Patch, skip: bool) -> Result<PatchedRun> {
    let skip = skip && bundle.startable;
    if !bundle.patchable {
        return Err(LensError::invalid(
            "this bundle was converted before activation patching existed: convert it again (a model from a Hugging Face folder or the hub is converted again automatically)",
        ));
    }
    let d = bundle.shape.d_model;
    let rows_ok = |a: &Array2<f32>| a.nrows() == base.n_pos;
    if base.n_pos != ids.len()
        || !rows_ok(&base.embed)
        || ![&base.resid_mid, &base.resid_post, &base.attn_out, &base.mlp_out].iter().all(|v| v.iter().all(rows_ok))
    {
        return Err(LensError::invalid("internal: the unpatched trace is not of these tokens"));
    }
    let site = patch_site_of(patch.site);
    let valid_site = match patch.site {
        SiteKind::Embed => true,
        SiteKind::Attn(l) => l < bundle.shape.n_layers && bundle.residual == Residual::Sequential,
        SiteKind::Block(l) => l < bundle.shape.n_layers,
    };
    if !valid_site {
        return Err(LensError::invalid(format!("internal: the lens graph has no residual site {}", patch.site.label())));
    }
    let cached = bundle.kv_cache.is_some() && base.kv.as_ref().is_some_and(|kv| kv.n_pos == base.n_pos);
    let (start, value_rows) = match patch.rows {
        PatchRows::One(p) if p >= ids.len() => return Err(LensError::invalid(format!("position {p} is past the prompt's {} tokens", ids.len()))),
        PatchRows::One(p) if p > 0 && cached => (p, 1usize),
        PatchRows::One(_) => (0, 1),
        PatchRows::All => (0, ids.len()),
    };
    if patch.value.len() != value_rows * d || patch.value.iter().any(|v| !v.is_finite()) {
        return Err(LensError::invalid(format!("a patch needs {value_rows} finite rows of {d} values, it has {} values", patch.value.len())));
    }
    check_ids(bundle, ids, 0)?;
    let tail_ids = ids.get(start..).unwrap_or_default();
    let n_rows = tail_ids.len();
    let input: Vec<i64> = tail_ids.iter().map(|&i| i64::from(i)).collect();
    let mut inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![("input_ids".into(), Tensor::from_array(([1usize, n_rows], input))?.into())];
    let graph_row = match patch.rows {
        PatchRows::One(p) => (p - start) as i64,
        PatchRows::All => -2,
    };
    // Where the graph can start at a block: a resid_post patch is the next block's input (no
    // patch input), a resid_mid patch starts at its own block.
    let missing = || LensError::invalid("internal: the unpatched trace lacks a layer");
    let (start_layer, patched_post) = match patch.site {
        SiteKind::Block(l) if skip => {
            let post = base.resid_post.get(l).ok_or_else(missing)?;
            let resid = rows_from(post, start, patch.rows, &patch.value)?;
            inputs.push((START_RESID.into(), Tensor::from_array(([1usize, n_rows, d], resid))?.into()));
            (l + 1, true)
        }
        SiteKind::Attn(l) if skip && l > 0 => {
            let pre = base.resid_post.get(l - 1).ok_or_else(missing)?;
            let resid = pre.slice(s![start.., ..]).to_owned().into_raw_vec_and_offset().0;
            inputs.push((START_RESID.into(), Tensor::from_array(([1usize, n_rows, d], resid))?.into()));
            (l, false)
        }
        _ => (0, false),
    };
    if start_layer > 0 {
        inputs.push((START_LAYER.into(), scalar(start_layer as i64)?));
    }
    if !patched_post {
        inputs.push((PATCH_SITE.into(), scalar(site as i64)?));
        inputs.push((PATCH_ROW.into(), scalar(graph_row)?));
        inputs.push((PATCH_VALUE.into(), Tensor::from_array(([1usize, value_rows, d], patch.value.clone()))?.into()));
    }
    if start > 0 {
        let (Some(shape), Some(kv)) = (bundle.kv_cache, base.kv.as_ref()) else {
            return Err(LensError::invalid("internal: a patch after cached positions needs the key/value cache"));
        };
        // Skipped blocks read no cache (none is cut for them); layer 0's tells the graph where the
        // rows start.
        for l in (0..kv.layers.len()).filter(|&l| l == 0 || l >= start_layer) {
            for (kind, data) in ["key", "value"].into_iter().zip(kv.layer_prefix(l, start)?) {
                inputs.push((past_name(l, kind), Tensor::from_array(([1usize, shape.n_kv_heads, start, shape.d_head], data))?.into()));
            }
        }
    }
    Ok(PatchedRun { inputs, start, n_rows, start_layer, patched_post })
}

/// Puts `base`'s rows `start..` into the hooks of `tail` that the skipped blocks (and the
/// embeddings, when they were skipped) did not compute.
fn restore_skipped(tail: &mut ResidualTrace, base: &ResidualTrace, run: &PatchedRun) -> Result<()> {
    if run.start_layer == 0 {
        return Ok(());
    }
    let rows = |a: &Array2<f32>| a.slice(s![run.start.., ..]).to_owned();
    tail.embed = rows(&base.embed);
    for l in 0..run.start_layer {
        let missing = || LensError::invalid("internal: a trace lacks a layer");
        let copy = |dst: &mut Vec<Array2<f32>>, src: &[Array2<f32>]| -> Result<()> {
            *dst.get_mut(l).ok_or_else(missing)? = rows(src.get(l).ok_or_else(missing)?);
            Ok(())
        };
        copy(&mut tail.resid_mid, &base.resid_mid)?;
        copy(&mut tail.attn_out, &base.attn_out)?;
        copy(&mut tail.mlp_out, &base.mlp_out)?;
        if !(run.patched_post && l + 1 == run.start_layer) {
            copy(&mut tail.resid_post, &base.resid_post)?;
        }
    }
    Ok(())
}

/// The trace of `ids` with `patch` applied, every other activation computed as the model does.
/// `base` is the unpatched trace of the same `ids`: a patch at position `p` runs only positions
/// `p…` on `base`'s key/value cache of the positions before it (which the patch cannot change),
/// when the bundle and `base` have one (otherwise, and for [`PatchRows::All`], the whole prompt),
/// and only the blocks from the site on, where the bundle's graph can start at a block.
pub fn run_trace_patched(
    session: &mut Session,
    bundle: &Bundle,
    base: &ResidualTrace,
    ids: &[u32],
    patch: &Patch,
    progress: &Progress,
) -> Result<ResidualTrace> {
    patched_trace(session, bundle, base, ids, patch, bundle.startable, progress)
}

/// [`run_trace_patched`] running every block (as for a bundle whose graph cannot start at a
/// block): the reference the skipping run is tested against.
pub fn run_trace_patched_every_block(
    session: &mut Session,
    bundle: &Bundle,
    base: &ResidualTrace,
    ids: &[u32],
    patch: &Patch,
    progress: &Progress,
) -> Result<ResidualTrace> {
    patched_trace(session, bundle, base, ids, patch, false, progress)
}

/// [`run_trace_patched`]; `skip`: start at the block after the site.
fn patched_trace(
    session: &mut Session,
    bundle: &Bundle,
    base: &ResidualTrace,
    ids: &[u32],
    patch: &Patch,
    skip: bool,
    progress: &Progress,
) -> Result<ResidualTrace> {
    let mut run = prepare(bundle, base, ids, patch, skip)?;
    let inputs = std::mem::take(&mut run.inputs);
    let mut tail = run_cancellable(progress, |options| {
        let mut outputs = session.run_with_options(inputs, options)?;
        collect(&mut outputs, bundle, run.n_rows, run.start, false, false)
    })?;
    restore_skipped(&mut tail, base, &run)?;
    if run.start > 0 { base.joined(run.start, tail) } else { Ok(tail) }
}

/// The last residual (`resid_post` of the last layer) at the last position of `ids` with `patch`
/// applied: [`run_trace_patched`]'s, without the head's logits ([`WITH_LOGITS`] false) and with no
/// other hook copied
/// // [d_model]
pub fn final_resid_patched(session: &mut Session, bundle: &Bundle, base: &ResidualTrace, ids: &[u32], patch: &Patch, progress: &Progress) -> Result<Vec<f32>> {
    let mut run = prepare(bundle, base, ids, patch, bundle.startable)?;
    let last = bundle.shape.n_layers.checked_sub(1).ok_or_else(|| LensError::invalid("internal: the model has no layers"))?;
    let name = hook_name(last, "resid_post");
    if bundle.logits_optional {
        run.inputs.push((WITH_LOGITS.into(), Tensor::from_array((Vec::<usize>::new(), vec![false]))?.into()));
    }
    let inputs = std::mem::take(&mut run.inputs);
    let options = ort::session::RunOptions::new()?.with_outputs(ort::session::OutputSelector::no_default().with(name.clone()));
    let d = bundle.shape.d_model;
    run_cancellable_selected(progress, options, |options| {
        let mut outputs = session.run_with_options(inputs, options)?;
        let value = take_output(&mut outputs, &name)?;
        let data = checked(&value, &name, run.n_rows, d)?;
        let from = (run.n_rows - 1) * d;
        data.get(from..from + d).map(<[f32]>::to_vec).ok_or_else(|| LensError::Runtime(format!("output {name} is short")))
    })
}
