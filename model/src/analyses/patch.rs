//! Activation patching (schema [`PATCH_SCHEMA`]): run a clean and a corrupted prompt of the same
//! length, put one activation of the clean run into the corrupted one, and measure how much of the
//! answer comes back.
//!
//! `effect[site][pos]` is the metric at the **last position** of the corrupted run with its
//! activation at (site, pos) replaced by the clean run's: `logit(target) − logit(against)`, or
//! `log p(target)` without an `against`. Also the clean and corrupted metrics and the normalised
//! effect `(effect − corrupt) / (clean − corrupt)` (1 = all of it restored).
//!
//! * **Residual sites** are the report's rows: `embed` (the input of block 0) and `l` (the output
//!   of block `l`); the clean residual replaces the corrupted one there.
//! * **`attn` / `mlp` sites** replace a sub-block's output. The graph takes a patch at residual
//!   sites only, so each is one: in a sequential block the attention output enters at `resid_mid`
//!   (`resid_pre + attn_out`) and the MLP output at `resid_post` (`resid_mid + mlp_out`); in a
//!   parallel block both at `resid_post` (`resid_pre + (attn_out + mlp_out)`). The replacement is
//!   that sum with the clean sub-block output in it, in the graph's own order of addition, so the
//!   patched run is bit for bit the run with the sub-block output replaced.
//! * A patched run computes only what the patch can change: positions before the patched one are
//!   the corrupted run's, from its key/value cache ([`LensEngine::run_patched`]).

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Progress, Result};
use crate::grid::Grid;
use crate::run::engine::LensEngine;
use crate::run::sites::SiteKind;
use crate::run::trace::{Patch, PatchRows, ResidualTrace};
use crate::source::tokenizer::Token;

/// The schema tag of a patching report.
pub const PATCH_SCHEMA: &str = "logit-lens/patch@1";

/// What is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchKind {
    /// The residual stream: `embed` and every block's output.
    Resid,
    /// Every block's attention output.
    Attn,
    /// Every block's MLP output.
    Mlp,
}

impl PatchKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::Resid, Self::Attn, Self::Mlp];

    /// Its name (`resid`, `attn`, `mlp`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Resid => "resid",
            Self::Attn => "attn",
            Self::Mlp => "mlp",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s.trim())
    }
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOptions {
    /// The kinds of sites swept.
    pub kinds: Vec<PatchKind>,
    /// The answer token.
    pub target: u32,
    /// The token it is measured against (`logit(target) − logit(against)`); `None`:
    /// `log p(target)`.
    pub against: Option<u32>,
}

/// The sweep of one kind of site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchGrid {
    /// `resid`, `attn` or `mlp`.
    pub kind: PatchKind,
    /// Row labels (`embed`, `0`, … for resid; `0.attn`, … / `0.mlp`, …).
    pub sites: Vec<String>,
    /// The metric with each (site, position) patched // [site][pos]
    pub effect: Grid<f64>,
    /// `(effect − corrupt_metric) / (clean_metric − corrupt_metric)`; NaN (`null`) where the two
    /// runs' metrics are equal // [site][pos]
    pub normalized: Grid<f64>,
    /// Attribution patching's first-order estimate of `effect`, where it was asked for
    /// ([`crate::analyses::attribution_patching`]): `corrupt_metric + ∇metric · (clean −
    /// corrupt)`, the gradient taken at the corrupted run // [site][pos]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Grid<f64>>,
}

impl PatchGrid {
    /// Pearson's correlation of the estimate with the exact effect over every cell (`None`
    /// without an estimate or with a constant one).
    pub fn estimate_correlation(&self) -> Option<f64> {
        let est = self.estimate.as_ref()?;
        let pairs: Vec<(f64, f64)> = self.effect.cells().zip(est.cells()).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(&a, &b)| (a, b)).collect();
        let n = pairs.len() as f64;
        if n < 2.0 {
            return None;
        }
        let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
        let cov: f64 = pairs.iter().map(|(a, b)| (a - ma) * (b - mb)).sum();
        let (va, vb): (f64, f64) = (pairs.iter().map(|(a, _)| (a - ma).powi(2)).sum(), pairs.iter().map(|(_, b)| (b - mb).powi(2)).sum());
        (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
    }

    /// The estimate normalised as `normalized` is (`None` without an estimate).
    pub fn estimate_normalized(&self, clean_metric: f64, corrupt_metric: f64) -> Option<Vec<f64>> {
        let span = clean_metric - corrupt_metric;
        Some(self.estimate.as_ref()?.cells().map(|&e| if span != 0.0 { (e - corrupt_metric) / span } else { f64::NAN }).collect())
    }
}

/// A patching report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchReport {
    /// Always [`PATCH_SCHEMA`].
    pub schema: String,
    /// The model's name.
    pub model: String,
    /// Its family.
    pub family: String,
    /// Its layer count.
    pub n_layers: usize,
    /// The clean prompt's tokens.
    pub clean_tokens: Vec<Token>,
    /// The corrupted prompt's tokens.
    pub corrupt_tokens: Vec<Token>,
    /// The answer token.
    pub target: Token,
    /// The token it is measured against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<Token>,
    /// `logit_diff` (with `against`) or `log_prob`.
    pub metric: String,
    /// The metric of the clean run.
    pub clean_metric: f64,
    /// The metric of the corrupted run.
    pub corrupt_metric: f64,
    /// One sweep per kind asked.
    pub grids: Vec<PatchGrid>,
    /// The weights that computed it (`f32`, `int8`, `int4`).
    pub weights: String,
    /// Patched forward passes run.
    pub runs: usize,
    /// Wall time of the sweep, seconds.
    pub seconds: f64,
    /// Program version.
    pub program: String,
}

/// The metric at position `p` of `trace`, from its last residual in the decoder's arithmetic:
/// with `against`, only the two logits are computed (final norm, two rows of W_U, bias, cap);
/// `log p(target)` needs them all.
fn metric_at(engine: &LensEngine, trace: &ResidualTrace, p: usize, target: u32, against: Option<u32>) -> Result<f64> {
    let last = trace.final_resid().ok_or_else(|| LensError::invalid("internal: the trace has no layers"))?;
    if p >= trace.n_pos {
        return Err(LensError::invalid(format!("internal: position {p} is past the trace's {}", trace.n_pos)));
    }
    let row = last.row(p);
    let row = row.as_slice().ok_or_else(|| LensError::invalid("internal: a residual row is not contiguous"))?;
    metric_of(engine, row, target, against)
}

/// The metric of one last residual `row` [d_model] (see [`metric_at`]).
pub(crate) fn metric_of(engine: &LensEngine, row: &[f32], target: u32, against: Option<u32>) -> Result<f64> {
    let dec = &engine.decoder;
    let Some(a) = against else { return metric(&dec.decode_full(row), target, None) };
    let mut prepared = vec![0f32; dec.d_model];
    dec.prepare_row(row, &mut prepared);
    Ok(f64::from(dec.logit(&prepared, target)) - f64::from(dec.logit(&prepared, a)))
}

/// The metric of `logits` (f64): `logit(target) − logit(against)`, or `log p(target)`.
fn metric(logits: &[f32], target: u32, against: Option<u32>) -> Result<f64> {
    let at = |t: u32| logits.get(t as usize).map(|&v| f64::from(v)).ok_or_else(|| LensError::invalid(format!("token id {t} is outside the vocabulary")));
    match against {
        Some(a) => Ok(at(target)? - at(a)?),
        None => {
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(m) + logits.iter().map(|&v| (f64::from(v) - f64::from(m)).exp()).sum::<f64>().ln();
            Ok(at(target)? - lse)
        }
    }
}

/// Row `p` of `a` as a vector.
fn row(a: &ndarray::Array2<f32>, p: usize) -> Result<Vec<f32>> {
    if p >= a.nrows() {
        return Err(LensError::invalid(format!("internal: row {p} of {}", a.nrows())));
    }
    Ok(a.row(p).to_vec())
}

/// `a + (b + c)` element by element (f32, in that order: the graph's).
fn add3(a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    a.iter().zip(b.iter().zip(c)).map(|(x, (y, z))| x + (y + z)).collect()
}

/// The residual site where `kind`'s activation of layer `layer` (for resid: site `layer`, 0 =
/// embed) enters the residual stream, which its patch replaces; `sequential`: the model's blocks
/// are (a parallel block adds both sub-blocks at its output).
pub fn site_of(kind: PatchKind, layer: usize, sequential: bool) -> SiteKind {
    match (kind, sequential) {
        (PatchKind::Resid, _) => layer.checked_sub(1).map_or(SiteKind::Embed, SiteKind::Block),
        (PatchKind::Attn, true) => SiteKind::Attn(layer),
        (PatchKind::Mlp, true) | (_, false) => SiteKind::Block(layer),
    }
}

/// The patch that puts `kind`'s activation of layer `layer` (for resid: site `layer`, 0 = embed)
/// of the clean run into the corrupted run at position `p`; `sequential`: the model's blocks are.
pub fn patch_of(kind: PatchKind, layer: usize, p: usize, sequential: bool, clean: &ResidualTrace, corrupt: &ResidualTrace) -> Result<Patch> {
    let missing = || LensError::invalid("internal: a trace lacks a layer");
    let pre = |t: &ResidualTrace, l: usize| -> Result<Vec<f32>> {
        match l.checked_sub(1) {
            None => row(&t.embed, p),
            Some(k) => row(t.resid_post.get(k).ok_or_else(missing)?, p),
        }
    };
    let layer_of = |v: &Vec<ndarray::Array2<f32>>| -> Result<Vec<f32>> { row(v.get(layer).ok_or_else(missing)?, p) };
    let site = site_of(kind, layer, sequential);
    let value = match (kind, sequential) {
        (PatchKind::Resid, _) => row(clean.site(site).ok_or_else(missing)?, p)?,
        (PatchKind::Attn, true) => {
            let (x, a) = (pre(corrupt, layer)?, layer_of(&clean.attn_out)?);
            x.iter().zip(&a).map(|(x, a)| x + a).collect()
        }
        (PatchKind::Mlp, true) => {
            let (mid, m) = (layer_of(&corrupt.resid_mid)?, layer_of(&clean.mlp_out)?);
            mid.iter().zip(&m).map(|(x, m)| x + m).collect()
        }
        (PatchKind::Attn, false) => add3(&pre(corrupt, layer)?, &layer_of(&clean.attn_out)?, &layer_of(&corrupt.mlp_out)?),
        (PatchKind::Mlp, false) => add3(&pre(corrupt, layer)?, &layer_of(&corrupt.attn_out)?, &layer_of(&clean.mlp_out)?),
    };
    Ok(Patch { site, rows: PatchRows::One(p), value })
}

/// Sweeps every site of `opts.kinds` × every position: `clean_ids` and `corrupt_ids` must have the
/// same length. Cancelling `progress` stops it between patched runs (and inside one).
pub fn patch_sweep(engine: &mut LensEngine, clean_ids: &[u32], corrupt_ids: &[u32], opts: &PatchOptions, progress: &Progress) -> Result<PatchReport> {
    let t0 = std::time::Instant::now();
    if clean_ids.len() != corrupt_ids.len() {
        return Err(LensError::invalid(format!(
            "the clean prompt has {} tokens and the corrupted prompt {}: activation patching needs prompts of the same length",
            clean_ids.len(),
            corrupt_ids.len()
        )));
    }
    let n = clean_ids.len();
    let last = n.checked_sub(1).ok_or_else(|| LensError::invalid("the prompts have no tokens"))?;
    let (n_layers, vocab) = (engine.bundle.shape.n_layers, engine.bundle.shape.d_vocab);
    for t in std::iter::once(opts.target).chain(opts.against) {
        if t as usize >= vocab {
            return Err(LensError::invalid(format!("token id {t} is outside the model's vocabulary of {vocab}")));
        }
    }
    let sequential = engine.bundle.residual == crate::build::spec::Residual::Sequential;
    progress.report("clean and corrupted runs", 0.0);
    let clean = engine.trace_for_patching(clean_ids, progress)?;
    let corrupt = engine.trace_for_patching(corrupt_ids, progress)?;
    let clean_metric = metric_at(engine, &clean, last, opts.target, opts.against)?;
    let corrupt_metric = metric_at(engine, &corrupt, last, opts.target, opts.against)?;
    let total: usize = opts.kinds.iter().map(|k| if *k == PatchKind::Resid { n_layers + 1 } else { n_layers }).sum::<usize>() * n;
    let mut runs = 0usize;
    let mut grids = Vec::with_capacity(opts.kinds.len());
    for &kind in &opts.kinds {
        let (n_sites, labels): (usize, Vec<String>) = match kind {
            PatchKind::Resid => (n_layers + 1, std::iter::once("embed".to_string()).chain((0..n_layers).map(|l| l.to_string())).collect()),
            PatchKind::Attn => (n_layers, (0..n_layers).map(|l| format!("{l}.attn")).collect()),
            PatchKind::Mlp => (n_layers, (0..n_layers).map(|l| format!("{l}.mlp")).collect()),
        };
        let mut effect = vec![vec![f64::NAN; n]; n_sites];
        for (s, slot) in effect.iter_mut().enumerate() {
            for (p, cell) in slot.iter_mut().enumerate() {
                progress.check()?;
                progress.report(&format!("patching {} sites", kind.name()), runs as f32 / total.max(1) as f32);
                let patch = patch_of(kind, s, p, sequential, &clean, &corrupt)?;
                let patched = engine.patched_final_resid(&corrupt, corrupt_ids, &patch, progress)?;
                *cell = metric_of(engine, &patched, opts.target, opts.against)?;
                runs += 1;
            }
        }
        let span = clean_metric - corrupt_metric;
        let normalized =
            effect.iter().map(|r| r.iter().map(|&e| if span != 0.0 { (e - corrupt_metric) / span } else { f64::NAN }).collect()).collect::<Vec<Vec<f64>>>();
        grids.push(PatchGrid { kind, sites: labels, effect: Grid::from_rows(effect)?, normalized: Grid::from_rows(normalized)?, estimate: None });
    }
    progress.report("done", 1.0);
    let tok = &engine.tokenizer;
    let one = |t: u32| tok.tokens(&[t]).into_iter().next().ok_or_else(|| LensError::invalid("internal: no token"));
    Ok(PatchReport {
        schema: PATCH_SCHEMA.into(),
        model: engine.bundle.name.clone(),
        family: engine.bundle.family.clone(),
        n_layers,
        clean_tokens: tok.tokens(clean_ids),
        corrupt_tokens: tok.tokens(corrupt_ids),
        target: one(opts.target)?,
        against: opts.against.map(one).transpose()?,
        metric: if opts.against.is_some() { "logit_diff" } else { "log_prob" }.into(),
        clean_metric,
        corrupt_metric,
        grids,
        weights: engine.bundle.weights.name().into(),
        runs,
        seconds: t0.elapsed().as_secs_f64(),
        program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
    })
}

impl PatchReport {
    /// The metric as a formula: `logit(" Paris") − logit(" Rome")`, or `log p(" Paris")`.
    pub fn metric_formula(&self) -> String {
        match &self.against {
            Some(a) => format!("logit({:?}) − logit({:?})", self.target.decoded, a.decoded),
            None => format!("log p({:?})", self.target.decoded),
        }
    }

    /// Writes the report as `.npz`: per kind `K` of site `effect_K` and `normalized_K` `[S, P]`
    /// (float64, NaN where unknown) and `sites_K` `[S]`; `clean_tokens` / `corrupt_tokens` `[P]`
    /// (exact text), `clean_ids` / `corrupt_ids` `[P]`, and 0-d `metric`, `target`, `against`
    /// (empty without one), `clean_metric`, `corrupt_metric`, `model`, `weights`, `schema`; with
    /// attribution patching's estimates, `estimate_K` `[S, P]` too.
    pub fn write_npz(&self, path: &std::path::Path) -> Result<()> {
        use crate::output::npz::{Data, write_arrays};
        let p = self.corrupt_tokens.len();
        let names: Vec<(String, String, String)> = self
            .grids
            .iter()
            .map(|g| (format!("effect_{}", g.kind.name()), format!("normalized_{}", g.kind.name()), format!("sites_{}", g.kind.name())))
            .collect();
        let mut arrays: Vec<(&str, Vec<usize>, Data)> = vec![
            ("schema", vec![], Data::Str(vec![self.schema.clone()])),
            ("model", vec![], Data::Str(vec![self.model.clone()])),
            ("weights", vec![], Data::Str(vec![self.weights.clone()])),
            ("metric", vec![], Data::Str(vec![self.metric.clone()])),
            ("target", vec![], Data::Str(vec![self.target.decoded.clone()])),
            ("against", vec![], Data::Str(vec![self.against.as_ref().map(|t| t.decoded.clone()).unwrap_or_default()])),
            ("clean_metric", vec![], Data::F64(vec![self.clean_metric])),
            ("corrupt_metric", vec![], Data::F64(vec![self.corrupt_metric])),
            ("clean_tokens", vec![p], Data::Str(self.clean_tokens.iter().map(|t| t.decoded.clone()).collect())),
            ("corrupt_tokens", vec![p], Data::Str(self.corrupt_tokens.iter().map(|t| t.decoded.clone()).collect())),
            ("clean_ids", vec![p], Data::I64(self.clean_tokens.iter().map(|t| i64::from(t.id)).collect())),
            ("corrupt_ids", vec![p], Data::I64(self.corrupt_tokens.iter().map(|t| i64::from(t.id)).collect())),
        ];
        let estimate_names: Vec<String> = self.grids.iter().map(|g| format!("estimate_{}", g.kind.name())).collect();
        for ((g, (e, n, s)), est) in self.grids.iter().zip(&names).zip(&estimate_names) {
            let shape = vec![g.sites.len(), p];
            if let Some(grid) = &g.estimate {
                arrays.push((est, shape.clone(), Data::F64(grid.cells().copied().collect())));
            }
            arrays.push((e, shape.clone(), Data::F64(g.effect.cells().copied().collect())));
            arrays.push((n, shape, Data::F64(g.normalized.cells().copied().collect())));
            arrays.push((s, vec![g.sites.len()], Data::Str(g.sites.clone())));
        }
        write_arrays(path, &arrays)
    }
}
