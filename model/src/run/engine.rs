//! [`LensEngine`]: bundle + tokenizer + session + decoder -> [`LensReport`].

use std::path::Path;
use std::time::Instant;

use ort::session::Session;

use crate::error::{LensError, Progress, Result, part};
use crate::lens::attribution::attribute;
use crate::lens::graph::{LensGraph, LensPath};
use crate::lens::jacobian_lens::JacobianLens;
use crate::lens::kernel::{Decoder, DecoderKind};
use crate::lens::last_block::LastBlockRunner;
use crate::lens::metrics::{KernelSpec, RowMetrics, run_kernel};
use crate::lens::tuned_lens::TunedLens;
use crate::output::assemble;
use crate::output::report::Truncation;
use crate::output::report::{LensReport, ModelInfo, RunInfo, SCHEMA};
use crate::run::bundle::Bundle;
use crate::run::runtime::{Device, ProviderReport, RuntimeInfo, create_session, init_runtime};
use crate::run::sites::{SiteKind, site_list};
use crate::run::trace::{Patch, ResidualTrace, run_trace, run_trace_after, run_trace_patched};
use crate::source::tokenizer::LensTokenizer;

/// Largest difference allowed between the decoded last site and the model's own `logits`.
pub const CONSISTENCY_TOLERANCE: f32 = 1e-3;

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct LensOptions {
    /// Add the `.attn` (resid_mid) rows.
    pub subblocks: bool,
    /// Top-k size (at least 1 is computed).
    pub k: usize,
    /// Decoder.
    pub decoder: DecoderKind,
    /// Tokens followed at every site.
    pub pinned: Vec<u32>,
    /// Vocabulary chunk of the kernel.
    pub chunk: usize,
    /// Only the final site (e.g. to evaluate the model's loss cheaply).
    pub final_only: bool,
    /// Token groups followed at every site: a word's variants (`" Paris"`, `"Paris"`, …), their
    /// probabilities summed and their best rank.
    pub groups: Vec<TokenGroup>,
    /// Which code computes the lens: the CPU kernel, or the lens graph on the forward pass's
    /// execution provider (`Auto`: the graph on a GPU provider, the kernel on the CPU).
    pub path: LensPath,
}

/// A named set of single tokens followed together ([`LensOptions::groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGroup {
    /// The name shown and written (`Paris`).
    pub name: String,
    /// Its tokens (distinct ids).
    pub token_ids: Vec<u32>,
}

impl Default for LensOptions {
    fn default() -> Self {
        Self {
            subblocks: false,
            k: 10,
            decoder: DecoderKind::LogitLens,
            pinned: Vec::new(),
            chunk: 256,
            final_only: false,
            groups: Vec::new(),
            path: LensPath::Auto,
        }
    }
}

/// An opened model, ready to run the lens.
pub struct LensEngine {
    /// The bundle.
    pub bundle: Bundle,
    /// Its tokenizer.
    pub tokenizer: LensTokenizer,
    /// The logit-lens decoder (ln_final + W_U).
    pub decoder: Decoder,
    /// Which execution provider runs the forward pass.
    pub provider: ProviderReport,
    /// The runtime library.
    pub runtime: RuntimeInfo,
    session: Session,
    last_block: LastBlockRunner,
    /// The tuned lens the `tuned_lens` decoder applies, checked against this model.
    tuned: Option<std::sync::Arc<TunedLens>>,
    /// The J-lens the `jacobian_lens` decoder applies, checked against this model.
    jlens: Option<std::sync::Arc<JacobianLens>>,
    /// The device the forward pass was asked to run on (the lens graph runs there too).
    device: Device,
    /// The lens graph, built on first use.
    graph: std::sync::Mutex<Option<std::sync::Arc<LensGraph>>>,
    /// Why the bundle's weight format was chosen (`--weights auto`), recorded in every report.
    pub weights_reason: Option<String>,
}

/// Vocabulary chunk of the lens graph when the options keep the kernel's default chunk.
pub const GRAPH_CHUNK: usize = 4096;

impl std::fmt::Debug for LensEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LensEngine").field("bundle", &self.bundle.name).field("provider", &self.provider.active).finish()
    }
}

/// The followed targets of a run: its pinned tokens, then every group's tokens, each checked
/// (inside the vocabulary of `d_vocab`; a group neither empty nor naming a token twice).
fn followed_targets(opts: &LensOptions, d_vocab: usize) -> Result<Vec<u32>> {
    if let Some(bad) = opts.pinned.iter().find(|&&t| t as usize >= d_vocab) {
        return Err(LensError::invalid(format!("pinned token id {bad} is outside the vocabulary")));
    }
    for g in &opts.groups {
        if g.token_ids.is_empty() {
            return Err(LensError::invalid(format!("token group {:?} has no tokens", g.name)));
        }
        if let Some(bad) = g.token_ids.iter().find(|&&t| t as usize >= d_vocab) {
            return Err(LensError::invalid(format!("token group {:?}: id {bad} is outside the vocabulary", g.name)));
        }
        if let Some(twice) = g.token_ids.iter().enumerate().find(|&(i, t)| g.token_ids.iter().take(i).any(|u| u == t)).map(|(_, t)| t) {
            return Err(LensError::invalid(format!("token group {:?} has token id {twice} twice (its probability would count twice)", g.name)));
        }
    }
    // Pinned tokens, then every group's tokens, are targets after [final top-1, next, input].
    Ok(opts.pinned.iter().chain(opts.groups.iter().flat_map(|g| &g.token_ids)).copied().collect())
}

/// How many leading positions of a report of `prev` stay exact for `ids` (an edit that keeps the
/// start of the prompt, such as appending text). A position's metrics depend on its prefix and on
/// the next token (rank and loss of the next token), so position `p` is kept while tokens
/// `0..=p + 1` are unchanged; appending to a prompt of `n` tokens keeps `n - 1` positions (the
/// last old one now has a next token). The whole report when `ids == prev`.
pub fn reusable_positions(prev: &[u32], ids: &[u32]) -> usize {
    if prev == ids {
        return ids.len();
    }
    let common = prev.iter().zip(ids).take_while(|(a, b)| a == b).count();
    common.saturating_sub(1)
}

impl LensEngine {
    /// Opens and validates a bundle folder and creates its session on `device`.
    pub fn open(dir: &Path, device: Device, progress: &Progress) -> Result<Self> {
        let runtime = init_runtime(None)?.clone();
        progress.report("opening bundle", 0.05);
        let bundle = Bundle::open(dir)?;
        progress.check()?;
        progress.report("creating the ONNX Runtime session", 0.2);
        // W_U first: the session then uses our buffer as its unembedding initializer instead of
        // reading a second copy (see `lens::Unembedding`). The tokenizer loads meanwhile.
        let (tokenizer, decoder, session) = std::thread::scope(|scope| -> Result<_> {
            let tok = scope.spawn(|| -> Result<LensTokenizer> {
                let tokenizer = LensTokenizer::from_file(&bundle.tokenizer_path())?;
                // The tokenizer's own vocabulary must fit the model; added tokens past the
                // model's rows are allowed (a prompt that uses one is refused by name).
                if let Some(max) = tokenizer.max_base_id()
                    && max as usize >= bundle.shape.d_vocab
                {
                    return Err(LensError::bad_file(
                        &bundle.tokenizer_path(),
                        format!("the tokenizer does not match the model: it has ids up to {max}, the model's vocabulary has {} entries", bundle.shape.d_vocab),
                    ));
                }
                Ok(tokenizer)
            });
            let decoder = Decoder::from_bundle(&bundle, DecoderKind::LogitLens);
            let session = match &decoder {
                Ok(d) => {
                    let shared: Vec<_> = d.w_u.initializer().into_iter().collect();
                    // int4 runs on pre-packed codes (Llama-3-8B shape, 256 tokens: forward 25.6 s
                    // instead of 47.5 s, peak RSS 10.0 GB instead of 8.1 GB); int8's pre-packed
                    // path was slower than its unpacked one (48.9 s vs 45.3 s, +1.8 GB): README.
                    if bundle.weights == crate::build::quant::WeightFormat::Int4 {
                        crate::run::runtime::create_session_prepacked(&bundle.model_path(), device, 0, &shared)
                    } else {
                        create_session(&bundle.model_path(), device, 0, &shared)
                    }
                }
                // Not reached as an error: `decoder?` below reports the real cause first.
                Err(_) => Err(LensError::invalid("the session was not created: the unembedding could not be read")),
            };
            let tokenizer = tok.join().unwrap_or_else(|_| Err(LensError::invalid("loading the tokenizer failed unexpectedly")));
            Ok((tokenizer?, decoder?, session?))
        })?;
        let (session, provider) = session;
        let last_block = LastBlockRunner::new(bundle.last_block.clone(), device, bundle.shape.n_heads);
        let mut engine = Self {
            bundle,
            tokenizer,
            decoder,
            provider,
            runtime,
            session,
            last_block,
            tuned: None,
            jlens: None,
            device,
            graph: std::sync::Mutex::new(None),
            weights_reason: None,
        };
        progress.check()?;
        progress.report("checking the bundle's consistency", 0.8);
        engine.check_consistency()?;
        progress.report("ready", 1.0);
        Ok(engine)
    }

    /// Sets (or with `None` removes) the tuned lens of the `tuned_lens` decoder, refusing one made
    /// for another model (width, layer count, unembedding hash).
    pub fn set_tuned_lens(&mut self, lens: Option<TunedLens>) -> Result<()> {
        if let Some(l) = &lens {
            l.check_model(self.bundle.shape.n_layers, &self.decoder)?;
        }
        self.tuned = lens.map(std::sync::Arc::new);
        Ok(())
    }

    /// Sets (or with `None` removes) the J-lens of the `jacobian_lens` decoder, refusing one made
    /// for another model (width, a source layer at or past the final block).
    pub fn set_jacobian_lens(&mut self, lens: Option<JacobianLens>) -> Result<()> {
        if let Some(l) = &lens {
            l.check_model(self.bundle.shape.n_layers, self.bundle.shape.d_model)?;
        }
        self.jlens = lens.map(std::sync::Arc::new);
        Ok(())
    }

    /// The J-lens in use, if any.
    pub fn jacobian_lens(&self) -> Option<&std::sync::Arc<JacobianLens>> {
        self.jlens.as_ref()
    }

    /// The lens path `path` resolves to on this engine: `Auto` is the graph when the forward pass
    /// runs on a GPU provider (CUDA, DirectML), else the kernel.
    pub fn resolve_path(&self, path: LensPath) -> LensPath {
        match path {
            LensPath::Auto if self.provider.active != "CPU" => LensPath::Graph,
            LensPath::Auto => LensPath::Kernel,
            p => p,
        }
    }

    /// What computes the lens under `path`, for reports and the status bar: `kernel (CPU)` or
    /// `graph (CUDA)`.
    pub fn lens_path_label(&self, path: LensPath) -> String {
        match self.resolve_path(path) {
            LensPath::Graph => format!("graph ({})", self.provider.active),
            _ => "kernel (CPU)".into(),
        }
    }

    /// The lens graph (built and opened on the forward pass's device on first use).
    fn lens_graph(&self) -> Result<std::sync::Arc<LensGraph>> {
        let mut g = self.graph.lock().map_err(|_| LensError::invalid("the lens graph was poisoned by an earlier failure"))?;
        if let Some(graph) = g.as_ref() {
            return Ok(std::sync::Arc::clone(graph));
        }
        let device = if self.provider.active == "CPU" { Device::Cpu } else { self.device };
        let graph = std::sync::Arc::new(LensGraph::new(&self.decoder, device)?);
        *g = Some(std::sync::Arc::clone(&graph));
        Ok(graph)
    }

    /// The kernel's rows, from the kernel or the lens graph per `path`.
    fn rows(&self, path: LensPath, prepared: &[f32], targets: &[u32], dec: &Decoder, spec: &KernelSpec, progress: &Progress) -> Result<Vec<RowMetrics>> {
        match self.resolve_path(path) {
            LensPath::Graph => self.lens_graph()?.run(prepared, targets, dec, spec, progress),
            _ => run_kernel(prepared, targets, dec, spec, progress),
        }
    }

    /// The tuned lens in use, if any.
    pub fn tuned_lens(&self) -> Option<&std::sync::Arc<TunedLens>> {
        self.tuned.as_ref()
    }

    /// The top-1 of every position's final site (`prepared`: `n_sites` rows per position), decoded
    /// with `dec`: the final-top-1 targets where the graph has no head to give them.
    fn final_top1(&self, path: LensPath, prepared: &[f32], n_sites: usize, dec: &Decoder, chunk: usize, progress: &Progress) -> Result<Vec<u32>> {
        let d = dec.d_model;
        let mut finals = Vec::with_capacity(prepared.len() / n_sites.max(1));
        for block in prepared.chunks_exact((n_sites * d).max(1)) {
            finals.extend_from_slice(part(block, (n_sites - 1) * d..n_sites * d, "final rows")?);
        }
        let n_pos = finals.len() / d.max(1);
        let spec = KernelSpec { n_pos, n_sites: 1, final_site: 0, input_site: 0, k: 1, n_targets: 0, chunk };
        // Its share of the progress bar is small (one site of many); the lens reports the rest.
        let rows = self.rows(path, &finals, &[], dec, &spec, &progress.part(0.0, 0.0))?;
        rows.iter().map(|r| r.top.first().map(|t| t.0).ok_or_else(|| LensError::invalid("internal: a final row has no top-1"))).collect()
    }

    /// Runs a short probe and checks that the last site decoded reproduces the model's `logits`.
    fn check_consistency(&mut self) -> Result<()> {
        let n = self.bundle.shape.n_ctx.min(4);
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % self.bundle.shape.d_vocab as u32).collect();
        let trace = run_trace(&mut self.session, &self.bundle, &ids, true, true, &Progress::default())?;
        self.check_cache(&ids, &trace)?;
        let Some(last) = trace.final_resid() else {
            return Err(LensError::invalid("the bundle produced no residuals"));
        };
        // A graph without a head (a quantized bundle's f16 unembedding): the decoder is the head,
        // so there is nothing to compare it with.
        let Some(logits) = trace.logits.as_ref() else {
            return if self.bundle.logits_in_graph { Err(LensError::invalid("the bundle produced no logits")) } else { Ok(()) };
        };
        let d = self.decoder.d_model;
        let mut prepared = vec![0f32; n * d];
        for (row, out) in last.rows().into_iter().zip(prepared.chunks_exact_mut(d)) {
            let row = row.as_slice().ok_or_else(|| LensError::invalid("internal: a residual row is not contiguous"))?;
            self.decoder.prepare_row(row, out);
        }
        let v = self.decoder.d_vocab;
        let mut ours = vec![0f32; n * v];
        crate::lens::kernel::logits_block(&prepared, &self.decoder.w_u.to_f32(), d, &mut ours, true)?;
        let bias = self.decoder.b_u.clone().unwrap_or_else(|| vec![0.0; v]);
        let mut worst = 0f32;
        for (row_ours, row_model) in ours.chunks_exact(v).zip(logits.rows()) {
            for ((a, b), bb) in row_ours.iter().zip(row_model.iter()).zip(&bias) {
                worst = worst.max((self.decoder.cap(a + bb) - b).abs());
            }
        }
        if worst.is_nan() || worst > CONSISTENCY_TOLERANCE {
            return Err(LensError::bad_file(
                &self.bundle.model_path(),
                format!(
                    "inconsistent bundle: decoding the last site with ln_final and W_U differs from the model's logits by {worst:.3e} (> {CONSISTENCY_TOLERANCE:e})"
                ),
            ));
        }
        Ok(())
    }

    /// With a key/value cache: the probe's last positions run on the cache of its first one give
    /// the same hooks and logits as the whole run (a graph whose cache lies is refused).
    fn check_cache(&mut self, ids: &[u32], full: &ResidualTrace) -> Result<()> {
        if self.bundle.kv_cache.is_none() || ids.len() < 2 {
            return Ok(());
        }
        let cached = run_trace_after(&mut self.session, &self.bundle, full, 1, ids.get(1..).unwrap_or_default(), &Progress::default())?;
        let worst = |a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>| a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let mut diff = worst(&full.embed, &cached.embed);
        for (a, b) in full.resid_post.iter().zip(&cached.resid_post) {
            diff = diff.max(worst(a, b));
        }
        if let (Some(a), Some(b)) = (&full.logits, &cached.logits) {
            diff = diff.max(worst(a, b));
        }
        if diff.is_nan() || diff > CONSISTENCY_TOLERANCE || cached.n_pos != full.n_pos {
            return Err(LensError::bad_file(
                &self.bundle.model_path(),
                format!("inconsistent bundle: running the probe on its key/value cache differs from the whole run by {diff:.3e} (> {CONSISTENCY_TOLERANCE:e})"),
            ));
        }
        Ok(())
    }

    /// Tokenizes `text`, refusing empty prompts and prompts longer than the context
    /// (unless `truncate_left`, which keeps the last `n_ctx` tokens).
    pub fn tokenize(&self, text: &str, truncate_left: bool) -> Result<Vec<u32>> {
        Ok(self.tokenize_with(text, truncate_left)?.0)
    }

    /// [`LensEngine::tokenize`], also saying what a left truncation dropped (for the report).
    pub fn tokenize_with(&self, text: &str, truncate_left: bool) -> Result<(Vec<u32>, Option<Truncation>)> {
        if text.is_empty() {
            return Err(LensError::invalid("the prompt is empty"));
        }
        let mut ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            return Err(LensError::invalid("the prompt has no tokens"));
        }
        let n_ctx = self.bundle.shape.n_ctx;
        let mut truncation = None;
        if ids.len() > n_ctx {
            if !truncate_left {
                return Err(LensError::PromptTooLong { tokens: ids.len(), n_ctx });
            }
            // A leading BOS stays (the model was trained with it first; without it the lens of
            // Llama- and Gemma-style models degenerates); the tokens after it are dropped.
            let keep_bos = n_ctx > 1 && ids.first().is_some_and(|&id| self.tokenizer.is_bos(id));
            let start = usize::from(keep_bos);
            let dropped = ids.len() - n_ctx;
            truncation = Some(Truncation { original_tokens: ids.len(), dropped_tokens: dropped });
            ids.drain(start..start + dropped);
        }
        // After truncation: a token it dropped does not matter.
        let d_vocab = self.bundle.shape.d_vocab;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= d_vocab) {
            return Err(LensError::invalid(format!(
                "the prompt contains the token {:?} (id {bad}), which the tokenizer adds but the model has no row for (its vocabulary has {d_vocab} entries); remove it from the prompt",
                self.tokenizer.display(bad)
            )));
        }
        Ok((ids, truncation))
    }

    /// Runs the forward pass only.
    pub fn trace(&mut self, ids: &[u32]) -> Result<ResidualTrace> {
        self.trace_with(ids, &Progress::default())
    }

    /// Runs the forward pass only; cancelling `progress` terminates it inside ONNX Runtime
    /// (`RunOptions::terminate`) and returns [`LensError::Cancelled`].
    pub fn trace_with(&mut self, ids: &[u32], progress: &Progress) -> Result<ResidualTrace> {
        run_trace(&mut self.session, &self.bundle, ids, false, false, progress)
    }

    /// The trace of `ids` after an edit of the prompt whose trace was `prev` (of `prev_ids`): the
    /// forward pass runs only the positions after the tokens the two share, on `prev`'s key/value
    /// cache; an edit that only removes tokens from the end runs nothing. Without a cache (an
    /// older bundle, or no shared start) the whole prompt runs. The result keeps its cache for
    /// the next edit. Returns the trace and the positions whose forward pass was reused.
    pub fn trace_edit(&mut self, prev: Option<(&[u32], &ResidualTrace)>, ids: &[u32], progress: &Progress) -> Result<(ResidualTrace, usize)> {
        let shared = prev.map_or(0, |(prev_ids, t)| prev_ids.iter().zip(ids).take_while(|(a, b)| a == b).count().min(t.n_pos));
        match prev {
            Some((_, t)) if shared > 0 && shared == ids.len() => Ok((t.prefix(shared)?, shared)),
            Some((_, t)) if shared > 0 && t.kv.is_some() && self.bundle.kv_cache.is_some() => {
                let rest = ids.get(shared..).unwrap_or_default();
                Ok((run_trace_after(&mut self.session, &self.bundle, t, shared, rest, progress)?, shared))
            }
            _ => Ok((run_trace(&mut self.session, &self.bundle, ids, false, true, progress)?, 0)),
        }
    }

    /// Runs the forward pass and keeps the key/value cache, the base of patched runs
    /// ([`LensEngine::run_patched`]).
    pub fn trace_for_patching(&mut self, ids: &[u32], progress: &Progress) -> Result<ResidualTrace> {
        run_trace(&mut self.session, &self.bundle, ids, false, true, progress)
    }

    /// The trace of `ids` with `patch` applied; `base` is their unpatched trace
    /// ([`LensEngine::trace_for_patching`]): only the positions from the patched one on run.
    pub fn run_patched(&mut self, base: &ResidualTrace, ids: &[u32], patch: &Patch, progress: &Progress) -> Result<ResidualTrace> {
        run_trace_patched(&mut self.session, &self.bundle, base, ids, patch, progress)
    }

    /// [`LensEngine::run_patched`] running every block before the site too (the reference the
    /// skipping run is tested against).
    pub fn run_patched_every_block(&mut self, base: &ResidualTrace, ids: &[u32], patch: &Patch, progress: &Progress) -> Result<ResidualTrace> {
        crate::run::patched::run_trace_patched_every_block(&mut self.session, &self.bundle, base, ids, patch, progress)
    }

    /// The last residual at the last position of `ids` with `patch` applied
    /// ([`LensEngine::run_patched`]'s, computing nothing else) // [d_model]
    pub fn patched_final_resid(&mut self, base: &ResidualTrace, ids: &[u32], patch: &Patch, progress: &Progress) -> Result<Vec<f32>> {
        crate::run::patched::final_resid_patched(&mut self.session, &self.bundle, base, ids, patch, progress)
    }

    /// The model's own logits at position `p` of `trace`, from its last residual (final norm,
    /// W_U, its bias and the soft cap, in the decoder's arithmetic) // [d_vocab]
    pub fn final_logits(&self, trace: &ResidualTrace, p: usize) -> Result<Vec<f32>> {
        let last = trace.final_resid().ok_or_else(|| LensError::invalid("internal: the trace has no layers"))?;
        if p >= trace.n_pos {
            return Err(LensError::invalid(format!("internal: position {p} is past the trace's {}", trace.n_pos)));
        }
        let row = last.row(p);
        let row = row.as_slice().ok_or_else(|| LensError::invalid("internal: a residual row is not contiguous"))?;
        Ok(self.decoder.decode_full(row))
    }

    /// Runs the forward pass and the lens on `ids`.
    pub fn run_ids(&mut self, ids: &[u32], opts: &LensOptions, progress: &Progress) -> Result<LensReport> {
        let t0 = Instant::now();
        progress.report("forward", 0.0);
        let trace = run_trace(&mut self.session, &self.bundle, ids, false, false, progress)?;
        let forward_ms = t0.elapsed().as_secs_f64() * 1e3;
        progress.check()?;
        let t1 = Instant::now();
        let mut report = self.lens(ids, &trace, opts, progress)?;
        report.run.forward_ms = forward_ms;
        report.run.lens_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }

    /// The J-lens's transport of each of `sites` (none of them the final one) over the positions
    /// `range`, and the indices of the sites it has no matrix for (decoded as they are)
    /// // each [range.len(), d_model]
    fn transport(&self, trace: &ResidualTrace, sites: &[SiteKind], range: std::ops::Range<usize>) -> Result<(Vec<ndarray::Array2<f32>>, Vec<usize>)> {
        let lens = self.jlens.as_ref().ok_or_else(|| {
            LensError::invalid("the J-lens decoder needs a J-lens: open one (--jacobian-lens FILE, or --jacobian-lens published for a model with a published J-lens; File > Open J-lens… in the app)")
        })?;
        let mut out = Vec::with_capacity(sites.len());
        let mut none = Vec::new();
        for (i, site) in sites.iter().enumerate() {
            let x = trace.site(*site).ok_or_else(|| LensError::invalid("missing site in trace"))?.slice(ndarray::s![range.clone(), ..]);
            out.push(match lens.transport_of(*site) {
                Some(l) => lens.transport(l, x)?,
                None => {
                    none.push(i);
                    x.to_owned()
                }
            });
        }
        Ok((out, none))
    }

    /// The tuned lens's translation of each of `sites` (none of them the final one) over the
    /// positions `range` // each [range.len(), d_model]
    fn translate(&self, trace: &ResidualTrace, sites: &[SiteKind], range: std::ops::Range<usize>) -> Result<Vec<ndarray::Array2<f32>>> {
        let lens = self.tuned.as_ref().ok_or_else(|| {
            LensError::invalid("the tuned-lens decoder needs a tuned lens: open one (--tuned-lens DIR, or File > Open tuned lens…) or fit one (fit-lens)")
        })?;
        let mut out = Vec::with_capacity(sites.len());
        for site in sites {
            let x = trace.site(*site).ok_or_else(|| LensError::invalid("missing site in trace"))?.slice(ndarray::s![range.clone(), ..]);
            out.push(match (lens.translator_of(*site), site) {
                (Some(i), _) => lens.translate(i, x)?,
                (None, SiteKind::Attn(_)) => {
                    return Err(LensError::invalid(
                        "the tuned lens has translators for block outputs only, not for the sub-block (.attn) rows: turn sub-blocks off, or use another decoder",
                    ));
                }
                // An older lens without an input translator: the embeddings are decoded as they are.
                (None, _) => x.to_owned(),
            });
        }
        Ok(out)
    }

    /// Applies the lens to a trace.
    pub fn lens(&self, ids: &[u32], trace: &ResidualTrace, opts: &LensOptions, progress: &Progress) -> Result<LensReport> {
        self.lens_range(ids, trace, opts, 0..trace.n_pos, progress)
    }

    /// Applies the lens to the positions `range` of a trace only: the report's positions are
    /// `range` (its `tokens` are `ids[range]`). Every position's metrics depend on that position
    /// alone, so reports of consecutive ranges joined with [`LensReport::append_positions`] equal
    /// the report of the whole range; the desktop app shows them as they arrive.
    pub fn lens_range(&self, ids: &[u32], trace: &ResidualTrace, opts: &LensOptions, range: std::ops::Range<usize>, progress: &Progress) -> Result<LensReport> {
        let shape = &self.bundle.shape;
        if ids.len() != trace.n_pos {
            return Err(LensError::invalid("token count does not match the trace"));
        }
        if range.start >= range.end || range.end > trace.n_pos {
            return Err(LensError::invalid(format!("position range {}..{} is not inside 0..{}", range.start, range.end, trace.n_pos)));
        }
        let start = range.start;
        let n_pos = range.len();
        let followed = followed_targets(opts, shape.d_vocab)?;
        let mut dec = self.decoder.clone(); // cheap: W_U is shared, not copied
        dec.kind = opts.decoder;
        let sites = if opts.final_only { vec![SiteKind::Block(shape.n_layers.saturating_sub(1))] } else { site_list(shape.n_layers, opts.subblocks) };
        let n_sites = sites.len();
        let final_site = n_sites - 1;
        let d = shape.d_model;
        // Every site but the final one (the model's own output) may first go through the last block,
        // or the tuned lens's translator.
        let (_, below_final) = sites.split_last().ok_or_else(|| LensError::invalid("no sites"))?;
        let transformed = if dec.kind.uses_last_block() { self.last_block.inputs(trace, below_final, dec.kind, progress)? } else { Vec::new() };
        let (translated, no_transport) = match dec.kind {
            DecoderKind::TunedLens => {
                let t = self.translate(trace, below_final, range.clone())?;
                let lens = self.tuned.as_ref();
                (t, below_final.iter().enumerate().filter(|(_, s)| lens.is_some_and(|l| l.translator_of(**s).is_none())).map(|(i, _)| i).collect())
            }
            DecoderKind::JacobianLens => self.transport(trace, below_final, range.clone())?,
            _ => (Vec::new(), Vec::new()),
        };
        let mut inputs: Vec<ndarray::ArrayView2<'_, f32>> = Vec::with_capacity(n_sites);
        for (i, site) in sites.iter().enumerate() {
            inputs.push(match (transformed.get(i), translated.get(i)) {
                (Some(t), _) => t.slice(ndarray::s![range.clone(), ..]),
                (None, Some(t)) => t.view(),
                (None, None) => trace.site(*site).ok_or_else(|| LensError::invalid("missing site in trace"))?.slice(ndarray::s![range.clone(), ..]),
            });
        }
        let mut prepared = vec![0f32; n_pos * n_sites * d];
        for (i, block) in prepared.chunks_exact_mut(n_sites * d).enumerate() {
            for (x, out) in inputs.iter().zip(block.chunks_exact_mut(d)) {
                let row = x.row(i);
                let row = row.as_slice().ok_or_else(|| LensError::invalid("internal: a residual row is not contiguous"))?;
                dec.prepare_row(row, out);
            }
        }
        // Targets per position: [final top-1 (candidate from the model's logits), next, input, pinned...]
        let n_t = assemble::FIXED_TARGETS + followed.len();
        let make_targets = |top1: &[u32]| assemble::targets(ids, start, n_pos, top1, &followed);
        let graph = self.resolve_path(opts.path) == LensPath::Graph;
        let chunk = if graph && opts.chunk == LensOptions::default().chunk { GRAPH_CHUNK } else { opts.chunk.max(16) };
        let spec = KernelSpec { n_pos, n_sites, final_site, input_site: 0, k: opts.k.max(1), n_targets: n_t, chunk };
        let mut candidates = match trace.logits_top1.get(range.clone()) {
            Some(top1) => top1.to_vec(),
            // No head in the graph: the final site's own top-1, decoded first (1/n_sites of the work).
            None if !self.bundle.logits_in_graph => self.final_top1(opts.path, &prepared, n_sites, &dec, chunk, progress)?,
            None => return Err(LensError::invalid("internal: the trace holds no argmax for these positions")),
        };
        let mut rows = self.rows(opts.path, &prepared, &make_targets(&candidates), &dec, &spec, progress)?;
        // The model's argmax is only a candidate: where the decoded final site disagrees (a near
        // tie, or the raw decoder), recompute those positions with the exact final top-1.
        let redo: Vec<usize> =
            (0..n_pos).filter(|&p| rows.get(p * n_sites + final_site).and_then(|r| r.top.first()).map(|t| t.0) != candidates.get(p).copied()).collect();
        if !redo.is_empty() {
            for &p in &redo {
                if let (Some(slot), Some(t)) = (candidates.get_mut(p), rows.get(p * n_sites + final_site).and_then(|r| r.top.first())) {
                    *slot = t.0;
                }
            }
            let all_targets = make_targets(&candidates);
            let mut sub_prep = Vec::with_capacity(redo.len() * n_sites * d);
            let mut sub_t = Vec::with_capacity(redo.len() * n_t);
            for &p in &redo {
                sub_prep.extend_from_slice(part(&prepared, p * n_sites * d..(p + 1) * n_sites * d, "prepared rows")?);
                sub_t.extend_from_slice(part(&all_targets, p * n_t..(p + 1) * n_t, "targets")?);
            }
            let sub_spec = KernelSpec { n_pos: redo.len(), ..spec.clone() };
            let sub = self.rows(opts.path, &sub_prep, &sub_t, &dec, &sub_spec, progress)?;
            for (i, &p) in redo.iter().enumerate() {
                for s in 0..n_sites {
                    if let (Some(dst), Some(src)) = (rows.get_mut(p * n_sites + s), sub.get(i * n_sites + s)) {
                        *dst = src.clone();
                    }
                }
            }
        }
        // Every cell below comes from a whole row: one per (position, site), every target ranked.
        if rows.len() != n_pos * n_sites || rows.iter().any(|r| r.target_rank.len() != n_t || r.target_logit.len() != n_t) {
            return Err(LensError::invalid(format!("internal: the kernel returned {} rows for {n_pos} positions × {n_sites} sites", rows.len())));
        }
        let next: Vec<Option<u32>> = range.clone().map(|p| ids.get(p + 1).copied()).collect();
        let metrics = assemble::metrics(&rows, n_sites, &next, opts.final_only)?;
        let top_k = assemble::top_k(&rows, n_sites, opts.k)?;
        let pinned = assemble::pinned(&rows, n_sites, self.tokenizer.tokens(&opts.pinned))?;
        let groups =
            assemble::groups(&rows, n_sites, opts.pinned.len(), opts.groups.iter().map(|g| (g.name.clone(), self.tokenizer.tokens(&g.token_ids))).collect())?;
        let final_top1: Vec<u32> = (0..n_pos).map(|p| rows.get(p * n_sites + final_site).and_then(|r| r.top.first()).map_or(0, |t| t.0)).collect();
        let attribution = attribute(trace, &dec, shape.n_layers, range.clone(), &final_top1, &next)?;
        let mut report = LensReport {
            schema: SCHEMA.into(),
            model: ModelInfo {
                name: self.bundle.name.clone(),
                family: self.bundle.family.clone(),
                residual: Some(self.bundle.residual.name().into()),
                final_softcap: self.bundle.final_softcap,
                n_layers: shape.n_layers,
                d_model: shape.d_model,
                d_vocab: shape.d_vocab,
                n_ctx: shape.n_ctx,
                weights_sha256: self.bundle.weights_sha256.clone(),
            },
            decoder: dec.kind.name().into(),
            no_transport,
            tokens: self.tokenizer.tokens(part(ids, range.clone(), "token ids")?),
            sites: sites.iter().map(|s: &SiteKind| s.label_in(self.bundle.residual)).collect(),
            metrics,
            top_k,
            attribution,
            gradient_x_activation: None,
            pinned,
            groups,
            vocab: Vec::new(),
            truncated: None,
            steering: None,
            run: RunInfo {
                provider: self.provider.active.clone(),
                forward_ms: 0.0,
                lens_ms: 0.0,
                program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
                forward_reused: false,
                reused_positions: 0,
                cached_positions: 0,
                tuned_lens: if dec.kind == DecoderKind::TunedLens { self.tuned.as_ref().map(|l| l.describe()) } else { None },
                jacobian_lens: if dec.kind == DecoderKind::JacobianLens { self.jlens.as_ref().map(|l| l.describe()) } else { None },
                lens_path: self.lens_path_label(opts.path),
                weights: self.bundle.weights.name().into(),
                weights_reason: self.weights_reason.clone(),
                engine: None,
            },
        };
        report.vocab = self.tokenizer.tokens(&report.named_ids());
        Ok(report)
    }
}
