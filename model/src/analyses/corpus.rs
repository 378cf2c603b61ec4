//! Corpus mode: the lens over a whole text, aggregated per site with bootstrap confidence
//! intervals (schema [`CORPUS_SCHEMA`]).
//!
//! The text is tokenized once, as the lens tokenizes a prompt, and cut into consecutive,
//! non-overlapping windows of `window` tokens (the last kept if it has at least 2); each window
//! runs on its own. Per site, over every position of every window: KL(final ‖ site), entropy,
//! top-1 agreement with the final top-1; over the positions whose next token is in the same
//! window: the next token's NLL (also in bits per byte of those tokens) and whether the top-1 is
//! it. Only per-window sums are kept (a few numbers per site and window), so memory does not grow
//! with the length of the text beyond them and the token ids.
//!
//! Confidence intervals: percentile bootstrap over windows (windows resampled with replacement,
//! each statistic recomputed as a ratio of summed sums, [`CorpusOptions::resamples`] times, the
//! 2.5th and 97.5th percentiles), so positions inside one window are not treated as independent.

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Progress, Result};
use crate::output::report::ModelInfo;
use crate::run::engine::{LensEngine, LensOptions};

/// The schema tag of corpus reports.
pub const CORPUS_SCHEMA: &str = "logit-lens/corpus@1";

/// What to compute.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// Tokens per window (`None`: the model's context, at most [`DEFAULT_MAX_WINDOW`]).
    pub window: Option<usize>,
    /// Use only the first this many tokens of the text.
    pub max_tokens: Option<usize>,
    /// The lens (decoder, sub-block rows).
    pub lens: LensOptions,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        Self { window: None, max_tokens: None, lens: LensOptions { k: 1, ..LensOptions::default() }, resamples: 1000, seed: 0 }
    }
}

/// A per-site statistic with its 95% confidence interval, each `[n_sites]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The mean over all positions.
    pub mean: Vec<f64>,
    /// Lower end of the 95% interval.
    pub ci95_low: Vec<f64>,
    /// Upper end of the 95% interval.
    pub ci95_high: Vec<f64>,
}

/// The per-site statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerSite {
    /// KL(final ‖ site), nats, over every position.
    pub kl_to_final: Interval,
    /// NLL of the next token, nats, over positions whose next token is in the window.
    pub nll_next: Interval,
    /// The same NLL in bits per byte of those next tokens.
    pub nll_bits_per_byte: Interval,
    /// Fraction of positions whose top-1 is the final site's top-1.
    pub top1_agrees_final: Interval,
    /// Fraction of positions (with a next token) whose top-1 is the next token.
    pub top1_is_next: Interval,
    /// Entropy, nats.
    pub entropy: Interval,
}

/// How the corpus was run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorpusRun {
    /// Execution provider.
    pub provider: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Bytes of text read.
    pub text_bytes: usize,
    /// How the intervals are computed.
    pub ci_method: String,
    /// The weights of the forward pass (`f32`, `int8`, `int4`; empty in older reports: f32).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub weights: String,
    /// Program version.
    pub program: String,
}

impl CorpusRun {
    /// The weights of the forward pass (`f32` for reports written before they were recorded), as
    /// [`crate::LensReport::weights`] says them.
    pub fn weights(&self) -> &str {
        if self.weights.is_empty() { "f32" } else { &self.weights }
    }
}

/// The lens over a corpus, aggregated per site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorpusReport {
    /// Always [`CORPUS_SCHEMA`].
    pub schema: String,
    /// The model.
    pub model: ModelInfo,
    /// The decoder.
    pub decoder: String,
    /// Tokens used (after `max_tokens`).
    pub n_tokens: usize,
    /// Windows run.
    pub n_windows: usize,
    /// Tokens per window.
    pub window: usize,
    /// Positions the statistics are over (tokens in kept windows).
    pub n_positions: usize,
    /// Positions with a next token in their window (`nll_next`, `top1_is_next`).
    pub n_next: usize,
    /// Row labels, bottom to top.
    pub sites: Vec<String>,
    /// Per-site means and intervals.
    pub per_site: PerSite,
    /// Prediction depth histogram: positions whose depth is each site // [n_sites]
    pub prediction_depth: Vec<u64>,
    /// How it was computed.
    pub run: CorpusRun,
}

/// The sums of one window, per site.
#[derive(Debug, Clone)]
struct WindowSums {
    n: f64,
    n_next: f64,
    bytes: f64,
    kl: Vec<f64>,
    entropy: Vec<f64>,
    agree: Vec<f64>,
    nll: Vec<f64>,
    is_next: Vec<f64>,
}

/// The statistics of a set of windows (each counted as often as it appears), per site:
/// `[kl, nll, bits per byte, agree, is next, entropy]`.
fn stats(windows: &[&WindowSums], n_sites: usize) -> [Vec<f64>; 6] {
    let total = |f: &dyn Fn(&WindowSums) -> f64| windows.iter().map(|w| f(w)).sum::<f64>();
    let (n, n_next, bytes) = (total(&|w| w.n), total(&|w| w.n_next), total(&|w| w.bytes));
    let per = |f: &dyn Fn(&WindowSums, usize) -> f64, d: f64| (0..n_sites).map(|s| total(&|w| f(w, s)) / d).collect::<Vec<f64>>();
    let at = |v: &Vec<f64>, s: usize| v.get(s).copied().unwrap_or(f64::NAN);
    [
        per(&|w, s| at(&w.kl, s), n),
        per(&|w, s| at(&w.nll, s), n_next),
        per(&|w, s| at(&w.nll, s), bytes * std::f64::consts::LN_2),
        per(&|w, s| at(&w.agree, s), n),
        per(&|w, s| at(&w.is_next, s), n_next),
        per(&|w, s| at(&w.entropy, s), n),
    ]
}

/// splitmix64: the bootstrap's random numbers (deterministic for a seed).
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `q` quantile (0..=1) of sorted values, linearly interpolated.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let x = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    let (a, b) = (sorted.get(lo).copied().unwrap_or(f64::NAN), sorted.get(hi).copied().unwrap_or(f64::NAN));
    a + (b - a) * (x - lo as f64)
}

/// The longest default window: a model that claims 131,072 positions would otherwise run one
/// window of the whole text, whose trace and attention grow with its square. A longer window is
/// still there to ask for (`--window`).
pub const DEFAULT_MAX_WINDOW: usize = 1024;

/// About how many bytes one window of `window` tokens needs at its peak: the attention scores of
/// one layer (`n_heads · window²`, three f32 copies: scores, softmax, the product's input), every
/// hook the graph returns (`n_layers · 6 · window · d_model` f32) and the lens's prepared rows
/// (`(2 · n_layers + 1) · window · d_model` f32). An estimate to refuse a window that cannot fit,
/// not a measurement: the weights are not counted.
pub fn window_bytes(shape: &crate::source::config::ModelShape, window: usize) -> u64 {
    let (w, l, d, h) = (window as u64, shape.n_layers as u64, shape.d_model as u64, shape.n_heads as u64);
    4 * (3 * h * w * w + 6 * l * w * d + (2 * l + 1) * w * d)
}

/// Refuses a window whose estimate ([`window_bytes`]) exceeds `available` bytes, naming the
/// largest window that fits; `None` (memory unknown) checks nothing.
pub fn check_window_memory(shape: &crate::source::config::ModelShape, window: usize, available: Option<u64>) -> Result<()> {
    let Some(avail) = available else { return Ok(()) };
    let need = window_bytes(shape, window);
    if need <= avail {
        return Ok(());
    }
    // The largest window that fits (the estimate grows with the window).
    let (mut lo, mut hi) = (1usize, window);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if window_bytes(shape, mid) <= avail { lo = mid } else { hi = mid }
    }
    Err(LensError::invalid(format!(
        "a window of {window} tokens needs about {:.1} GB (attention grows with its square), {:.1} GB are available: use --window {lo} or less",
        need as f64 / 1e9,
        avail as f64 / 1e9
    )))
}

pub use crate::source::long_text::encode_prefix;

/// What runs a corpus's windows: the local engine, or another engine (nnsight) that computes the
/// same report.
pub trait WindowRunner {
    /// The model's tokenizer.
    fn tokenizer(&self) -> &crate::source::tokenizer::LensTokenizer;
    /// The model's context and vocabulary sizes.
    fn context_and_vocab(&mut self, progress: &Progress) -> Result<(usize, usize)>;
    /// Refuses a window that cannot fit in the memory this machine has now (engines that run
    /// the model elsewhere check nothing).
    fn check_window(&self, window: usize) -> Result<()>;
    /// The lens report of one window.
    fn run_window(&mut self, ids: &[u32], lens: &LensOptions, progress: &Progress) -> Result<crate::output::report::LensReport>;
    /// Where it ran, for the report's `run.provider`.
    fn provider(&self) -> String;
    /// The weights of the forward pass, for the report's `run.weights`.
    fn weights(&self) -> String;
}

impl WindowRunner for LensEngine {
    fn tokenizer(&self) -> &crate::source::tokenizer::LensTokenizer {
        &self.tokenizer
    }
    fn context_and_vocab(&mut self, _progress: &Progress) -> Result<(usize, usize)> {
        Ok((self.bundle.shape.n_ctx, self.bundle.shape.d_vocab))
    }
    fn check_window(&self, window: usize) -> Result<()> {
        check_window_memory(&self.bundle.shape, window, crate::build::quant::available_memory())
    }
    fn run_window(&mut self, ids: &[u32], lens: &LensOptions, progress: &Progress) -> Result<crate::output::report::LensReport> {
        self.run_ids(ids, lens, progress)
    }
    fn provider(&self) -> String {
        self.provider.active.clone()
    }
    fn weights(&self) -> String {
        self.bundle.weights.name().into()
    }
}

/// The corpus's token ids (only the prefix `max_tokens` needs), each inside the model's vocabulary.
fn corpus_ids(
    tokenizer: &crate::source::tokenizer::LensTokenizer,
    d_vocab: usize,
    text: &str,
    max_tokens: Option<usize>,
    progress: &Progress,
) -> Result<Vec<u32>> {
    progress.report("tokenizing", 0.0);
    let ids = match max_tokens {
        Some(m) => encode_prefix(tokenizer, text, m)?,
        None => crate::source::long_text::encode_long(tokenizer, text, crate::source::long_text::PIECE_BYTES, &mut |f| {
            progress.report("tokenizing", f);
            progress.check()
        })?,
    };
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= d_vocab) {
        return Err(LensError::invalid(format!("the text contains token id {bad}, which the model has no row for (vocabulary of {d_vocab})")));
    }
    Ok(ids)
}

/// One window's sums per site from its report `r` over the tokens `chunk`.
fn window_sums(r: &crate::output::report::LensReport, chunk: &[u32], tokenizer: &crate::source::tokenizer::LensTokenizer) -> Result<WindowSums> {
    let n_sites = r.sites.len();
    let m = &r.metrics;
    let fin = n_sites.saturating_sub(1);
    let mut w = WindowSums {
        n: chunk.len() as f64,
        n_next: (chunk.len() - 1) as f64,
        bytes: chunk.iter().skip(1).map(|&t| tokenizer.token_bytes(t).len() as f64).sum(),
        kl: vec![0.0; n_sites],
        entropy: vec![0.0; n_sites],
        agree: vec![0.0; n_sites],
        nll: vec![0.0; n_sites],
        is_next: vec![0.0; n_sites],
    };
    for s in 0..n_sites {
        for p in 0..chunk.len() {
            let cell = |g: &crate::grid::Grid<f64>| g.get(s, p).copied().ok_or_else(|| LensError::invalid("internal: a corpus window's report is short"));
            let (kl, h) = (cell(&m.kl_to_final)?, cell(&m.entropy)?);
            let top1 = m.top1_id.get(s, p);
            let slot = |v: &mut Vec<f64>, x: f64| {
                if let Some(a) = v.get_mut(s) {
                    *a += x;
                }
            };
            slot(&mut w.kl, kl);
            slot(&mut w.entropy, h);
            slot(&mut w.agree, f64::from(u8::from(top1.is_some() && top1 == m.top1_id.get(fin, p))));
            if let Some(&next) = chunk.get(p + 1) {
                let nll = m
                    .nll_next
                    .get(s, p)
                    .copied()
                    .flatten()
                    .ok_or_else(|| LensError::invalid("internal: a corpus window has no NLL where it has a next token"))?;
                slot(&mut w.nll, nll);
                slot(&mut w.is_next, f64::from(u8::from(top1 == Some(&next))));
            }
        }
    }
    Ok(w)
}

/// Per-site means of `sums` with percentile-bootstrap 95% intervals over windows (`b` resamples
/// drawn with `seed`).
fn bootstrap(sums: &[WindowSums], n_sites: usize, b: usize, seed: u64, progress: &Progress) -> Result<PerSite> {
    let n_windows = sums.len();
    let all: Vec<&WindowSums> = sums.iter().collect();
    let means = stats(&all, n_sites);
    // Percentile bootstrap over windows.
    let mut draws: [Vec<Vec<f64>>; 6] = std::array::from_fn(|_| vec![Vec::with_capacity(b); n_sites]);
    let mut rng = seed ^ 0x5DEE_CE66_D1CE_5EED;
    let mut sample: Vec<&WindowSums> = Vec::with_capacity(n_windows);
    for _ in 0..b {
        progress.check()?;
        sample.clear();
        for _ in 0..n_windows {
            let k = (splitmix(&mut rng) % n_windows as u64) as usize;
            if let Some(w) = sums.get(k) {
                sample.push(w);
            }
        }
        for (metric, values) in stats(&sample, n_sites).into_iter().enumerate() {
            for (s, v) in values.into_iter().enumerate() {
                if let Some(d) = draws.get_mut(metric).and_then(|m| m.get_mut(s)) {
                    d.push(v);
                }
            }
        }
    }
    let interval = |metric: usize| -> Interval {
        let mean = means.get(metric).cloned().unwrap_or_default();
        let mut lo = Vec::with_capacity(n_sites);
        let mut hi = Vec::with_capacity(n_sites);
        for s in 0..n_sites {
            let mut d = draws.get(metric).and_then(|m| m.get(s)).cloned().unwrap_or_default();
            d.retain(|x| !x.is_nan());
            d.sort_by(f64::total_cmp);
            lo.push(quantile(&d, 0.025));
            hi.push(quantile(&d, 0.975));
        }
        Interval { mean, ci95_low: lo, ci95_high: hi }
    };
    let per_site = PerSite {
        kl_to_final: interval(0),
        nll_next: interval(1),
        nll_bits_per_byte: interval(2),
        top1_agrees_final: interval(3),
        top1_is_next: interval(4),
        entropy: interval(5),
    };
    Ok(per_site)
}

/// Runs the lens over `text` window by window on the local engine and aggregates it (see
/// [`run_corpus_with`]).
pub fn run_corpus(engine: &mut LensEngine, text: &str, opts: &CorpusOptions, progress: &Progress) -> Result<CorpusReport> {
    run_corpus_with(engine, text, opts, progress)
}

/// Runs the lens over `text` window by window on `engine` and aggregates it. Cancelling
/// `progress` stops it between windows and inside the running one.
pub fn run_corpus_with(engine: &mut dyn WindowRunner, text: &str, opts: &CorpusOptions, progress: &Progress) -> Result<CorpusReport> {
    let t0 = std::time::Instant::now();
    if text.trim().is_empty() {
        return Err(LensError::invalid("the corpus text is empty"));
    }
    let (n_ctx, d_vocab) = engine.context_and_vocab(progress)?;
    let window = opts.window.unwrap_or(n_ctx.min(DEFAULT_MAX_WINDOW));
    if window < 2 || window > n_ctx {
        return Err(LensError::invalid(format!("--window {window}: use 2 to the model's context ({n_ctx})")));
    }
    // Before any window runs: one that cannot fit in the memory available now is refused.
    engine.check_window(window)?;
    let ids = corpus_ids(engine.tokenizer(), d_vocab, text, opts.max_tokens, progress)?;
    let chunks: Vec<&[u32]> = ids.chunks(window).filter(|c| c.len() >= 2).collect();
    if chunks.is_empty() {
        return Err(LensError::invalid(format!("the text has {} tokens: too few for one window of at least 2", ids.len())));
    }
    let mut sites: Vec<String> = Vec::new();
    let mut model = ModelInfo::default();
    let mut decoder = String::new();
    let mut sums: Vec<WindowSums> = Vec::with_capacity(chunks.len());
    let mut depth_hist: Vec<u64> = Vec::new();
    let n_windows = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        progress.check()?;
        let part = progress.part(i as f32 / n_windows as f32, 1.0 / n_windows as f32);
        let r = engine.run_window(chunk, &opts.lens, &part)?;
        let n_sites = r.sites.len();
        if sites.is_empty() {
            sites.clone_from(&r.sites);
            model = r.model.clone();
            decoder.clone_from(&r.decoder);
            depth_hist = vec![0; n_sites];
        }
        let w = window_sums(&r, chunk, engine.tokenizer())?;
        for d in r.prediction_depth() {
            if let Some(c) = depth_hist.get_mut(d as usize) {
                *c += 1;
            }
        }
        sums.push(w);
    }
    let n_sites = sites.len();
    let b = opts.resamples.max(1);
    let per_site = bootstrap(&sums, n_sites, b, opts.seed, progress)?;
    progress.report("done", 1.0);
    Ok(CorpusReport {
        schema: CORPUS_SCHEMA.into(),
        model,
        decoder,
        n_tokens: ids.len(),
        n_windows,
        window,
        n_positions: chunks.iter().map(|c| c.len()).sum(),
        n_next: chunks.iter().map(|c| c.len() - 1).sum(),
        sites,
        per_site,
        prediction_depth: depth_hist,
        run: CorpusRun {
            provider: engine.provider(),
            seconds: t0.elapsed().as_secs_f64(),
            text_bytes: text.len(),
            ci_method: format!("percentile bootstrap over windows, {b} resamples, seed {}", opts.seed),
            weights: engine.weights(),
            program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
        },
    })
}

/// The per-site statistics of a corpus report: (name in the JSON, axis label).
pub const METRICS: &[(&str, &str)] = &[
    ("kl_to_final", "KL(final ‖ site), nats"),
    ("nll_next", "NLL of the next token, nats"),
    ("nll_bits_per_byte", "NLL of the next token, bits per byte"),
    ("top1_agrees_final", "top-1 = final top-1 (fraction)"),
    ("top1_is_next", "top-1 = next token (fraction)"),
    ("entropy", "entropy, nats"),
];

impl CorpusReport {
    /// The interval of the statistic `metric` (a name of [`METRICS`]).
    pub fn interval(&self, metric: &str) -> Option<&Interval> {
        let p = &self.per_site;
        Some(match metric {
            "kl_to_final" => &p.kl_to_final,
            "nll_next" => &p.nll_next,
            "nll_bits_per_byte" => &p.nll_bits_per_byte,
            "top1_agrees_final" => &p.top1_agrees_final,
            "top1_is_next" => &p.top1_is_next,
            "entropy" => &p.entropy,
            _ => return None,
        })
    }

    /// Writes JSON to `path` (through a temporary file).
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| LensError::invalid(format!("cannot serialise the corpus report: {e}")))?;
        crate::files::write_replacing(path, |tmp| std::fs::write(tmp, &text).map_err(|e| LensError::io(path, e)))
    }

    /// Writes the per-site table as CSV: one row per site, mean and interval of every statistic.
    pub fn write_csv(&self, path: &std::path::Path) -> Result<()> {
        use std::fmt::Write as _;
        let p = &self.per_site;
        let cols: [(&str, &Interval); 6] = [
            ("kl_to_final", &p.kl_to_final),
            ("nll_next", &p.nll_next),
            ("nll_bits_per_byte", &p.nll_bits_per_byte),
            ("top1_agrees_final", &p.top1_agrees_final),
            ("top1_is_next", &p.top1_is_next),
            ("entropy", &p.entropy),
        ];
        let mut out = String::from("site,prediction_depth_count");
        for (name, _) in &cols {
            let _ = write!(out, ",{name}_mean,{name}_ci95_low,{name}_ci95_high");
        }
        out.push('\n');
        for (s, site) in self.sites.iter().enumerate() {
            let _ = write!(out, "{site},{}", self.prediction_depth.get(s).copied().unwrap_or(0));
            for (_, iv) in &cols {
                let v = |x: &Vec<f64>| x.get(s).map_or(String::new(), f64::to_string);
                let _ = write!(out, ",{},{},{}", v(&iv.mean), v(&iv.ci95_low), v(&iv.ci95_high));
            }
            out.push('\n');
        }
        crate::files::write_replacing(path, |tmp| std::fs::write(tmp, &out).map_err(|e| LensError::io(path, e)))
    }
}
