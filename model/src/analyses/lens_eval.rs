//! The lens-quality suite (schema [`EVAL_SCHEMA`]): how well each decoder reads out the
//! intermediate concepts of prompt sets in the J-lens authors' format
//! (`{"items": [{"name", "prompt", "intermediates": [words], "target"}]}`), read at each prompt's
//! last position.
//!
//! * **Words → tokens**: an intermediate word stands for the first token of `" word"` and of
//!   `"word"` (leading whitespace-only tokens skipped; the two deduplicated); its rank at a layer
//!   is the better (lower) of theirs.
//! * **Layers scored**: the block outputs below the final block (rows `0 … L−2`, the layers a
//!   J-lens has matrices for); the embeddings and the model's own output are not scored.
//! * **pass@k** = mean over items of the fraction of the item's intermediates whose best rank
//!   over the scored layers is ≤ k, with a percentile-bootstrap 95% interval over items.
//! * **Rank per layer**, which does not reward a noisy readout (pass@k over ~35 layers is one
//!   lottery ticket per layer): the mean rank and the mean log10 rank of the intermediates at each
//!   layer, and their mean over layers (log10) with a bootstrap interval over items.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analyses::corpus::{quantile, splitmix};
use crate::error::{LensError, Progress, Result};
use crate::lens::kernel::DecoderKind;
use crate::run::engine::{LensEngine, LensOptions};
use crate::source::tokenizer::LensTokenizer;

/// The schema tag of an evaluation report.
pub const EVAL_SCHEMA: &str = "logit-lens/lens-eval@1";

/// Largest set file read (bytes).
const MAX_SET_BYTES: u64 = 10 << 20;

/// One item of a prompt set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalItem {
    /// Its name.
    pub name: String,
    /// The prompt, read at its last position.
    pub prompt: String,
    /// The words the model should pass through on the way (`France` on the way to `Paris`).
    pub intermediates: Vec<String>,
    /// The answer (recorded, not scored).
    #[serde(default)]
    pub target: Option<String>,
}

/// A prompt set: its name (the file's stem) and items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalSet {
    /// The file's stem (`multihop`).
    pub name: String,
    /// Its items.
    pub items: Vec<EvalItem>,
}

#[derive(Deserialize)]
struct SetFile {
    items: Vec<EvalItem>,
}

/// Reads a set file, refusing an empty one, an item without a prompt or intermediates, and a
/// file over 10 MB, each by name.
pub fn read_set(path: &Path) -> Result<EvalSet> {
    let len = std::fs::metadata(path).map_err(|e| LensError::io(path, e))?.len();
    if len > MAX_SET_BYTES {
        return Err(LensError::bad_file(path, format!("{len} bytes; a prompt set is at most {MAX_SET_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| LensError::io(path, e))?;
    let file: SetFile = serde_json::from_str(&text).map_err(|e| {
        LensError::bad_file(path, format!("not a prompt set ({{\"items\": [{{\"name\", \"prompt\", \"intermediates\": [...], \"target\"}}]}}): {e}"))
    })?;
    if file.items.is_empty() {
        return Err(LensError::bad_file(path, "holds no items"));
    }
    for (i, it) in file.items.iter().enumerate() {
        if it.prompt.is_empty() {
            return Err(LensError::bad_file(path, format!("item {i} ({:?}) has an empty prompt", it.name)));
        }
        if it.intermediates.iter().all(|w| w.trim().is_empty()) {
            return Err(LensError::bad_file(path, format!("item {i} ({:?}) has no intermediates", it.name)));
        }
    }
    let name = path.file_stem().map_or_else(|| "set".to_string(), |s| s.to_string_lossy().into_owned());
    Ok(EvalSet { name, items: file.items })
}

/// The token ids an intermediate word stands for: the first token of `" word"` and of `"word"`
/// (tokens of whitespace alone skipped), deduplicated. Empty when neither encodes.
pub fn word_tokens(tok: &LensTokenizer, word: &str) -> Vec<u32> {
    let w = word.trim();
    let mut out = Vec::new();
    for text in [format!(" {w}"), w.to_string()] {
        let first = tok.encode_plain(&text).and_then(|ids| ids.into_iter().find(|&id| !tok.token_bytes(id).iter().all(u8::is_ascii_whitespace)));
        if let Some(id) = first
            && !out.contains(&id)
        {
            out.push(id);
        }
    }
    out
}

/// What to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// The decoders, side by side.
    pub decoders: Vec<DecoderKind>,
    /// The k of pass@k.
    pub ks: Vec<usize>,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { decoders: vec![DecoderKind::LogitLens], ks: vec![1, 5, 10], resamples: 1000, seed: 0 }
    }
}

/// A mean with its percentile-bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The mean over items.
    pub mean: f64,
    /// Lower end of the 95% interval.
    pub ci95_low: f64,
    /// Upper end of the 95% interval.
    pub ci95_high: f64,
}

/// pass@k of one decoder on one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassAt {
    /// k.
    pub k: usize,
    /// Its estimate over items.
    #[serde(flatten)]
    pub estimate: Estimate,
}

/// One decoder's scores on one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderScores {
    /// The decoder (`logit_lens`, `tuned_lens`, `jacobian_lens`, …).
    pub decoder: String,
    /// pass@k for every k asked.
    pub pass_at: Vec<PassAt>,
    /// Mean rank of the intermediates per scored layer.
    pub mean_rank: Vec<f64>,
    /// Mean log10 rank of the intermediates per scored layer.
    pub mean_log10_rank: Vec<f64>,
    /// The mean log10 rank over every scored layer (per item, then over items).
    pub mean_log10_rank_all: Estimate,
    /// Scored layers this decoder had no transport for (decoded as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_transport: Vec<String>,
    /// Per item, per intermediate: the best rank over the scored layers.
    pub best_rank: Vec<Vec<u32>>,
}

/// One set's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetScores {
    /// The set's name.
    pub name: String,
    /// Its item names.
    pub items: Vec<String>,
    /// Per item, per intermediate: the token ids it stands for.
    pub intermediate_tokens: Vec<Vec<Vec<u32>>>,
    /// Every decoder's scores.
    pub decoders: Vec<DecoderScores>,
}

/// An evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Always [`EVAL_SCHEMA`].
    pub schema: String,
    /// The model's name.
    pub model: String,
    /// Its layer count.
    pub n_layers: usize,
    /// The scored layers' labels (block outputs `0 … L−2`).
    pub layers: Vec<String>,
    /// The k of pass@k.
    pub ks: Vec<usize>,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// The weights that computed it (`f32`, `int8`, `int4`).
    pub weights: String,
    /// The tuned lens and J-lens in use, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_lens: Option<String>,
    /// The J-lens in use, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jacobian_lens: Option<String>,
    /// Per set.
    pub sets: Vec<SetScores>,
    /// Program version.
    pub program: String,
}

/// Percentile-bootstrap estimate of the mean of `values` (one per item).
fn estimate(values: &[f64], resamples: usize, rng: &mut u64) -> Estimate {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    let mut draws = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let mut s = 0.0;
        for _ in 0..n {
            s += values.get((splitmix(rng) % n.max(1) as u64) as usize).copied().unwrap_or(f64::NAN);
        }
        draws.push(s / n.max(1) as f64);
    }
    draws.sort_by(f64::total_cmp);
    Estimate { mean, ci95_low: quantile(&draws, 0.025), ci95_high: quantile(&draws, 0.975) }
}

/// Runs every set through every decoder. One forward pass per item; the decoders read the same
/// trace. Cancelling `progress` stops it between items and decoders.
pub fn evaluate(engine: &mut LensEngine, sets: &[EvalSet], opts: &EvalOptions, progress: &Progress) -> Result<EvalReport> {
    if opts.decoders.is_empty() || opts.ks.is_empty() || opts.ks.contains(&0) {
        return Err(LensError::invalid("give at least one decoder and k values of 1 or more"));
    }
    let n_layers = engine.bundle.shape.n_layers;
    if n_layers < 2 {
        return Err(LensError::invalid("a one-layer model has no intermediate layers to score"));
    }
    let n_scored = n_layers - 1;
    let total: usize = sets.iter().map(|s| s.items.len()).sum::<usize>().max(1) * opts.decoders.len();
    let mut done = 0usize;
    let mut rng = opts.seed ^ 0x5DEE_CE66_D1CE_5EED;
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        // ranks[decoder][item][intermediate][layer]
        let mut ranks: Vec<Vec<Vec<Vec<u32>>>> = vec![Vec::with_capacity(set.items.len()); opts.decoders.len()];
        let mut no_transport: Vec<Vec<String>> = vec![Vec::new(); opts.decoders.len()];
        let mut tokens_of = Vec::with_capacity(set.items.len());
        for item in &set.items {
            let words: Vec<&String> = item.intermediates.iter().filter(|w| !w.trim().is_empty()).collect();
            let cands: Vec<Vec<u32>> = words.iter().map(|w| word_tokens(&engine.tokenizer, w)).collect();
            if let Some((w, _)) = words.iter().zip(&cands).find(|(_, c)| c.is_empty()) {
                return Err(LensError::invalid(format!("set {}, item {:?}: the intermediate {w:?} encodes to no token", set.name, item.name)));
            }
            let mut pins: Vec<u32> = cands.iter().flatten().copied().collect();
            pins.sort_unstable();
            pins.dedup();
            let (ids, _) = engine.tokenize_with(&item.prompt, false).map_err(|e| LensError::invalid(format!("set {}, item {:?}: {e}", set.name, item.name)))?;
            let trace = engine.trace_with(&ids, progress)?;
            let last =
                ids.len().checked_sub(1).ok_or_else(|| LensError::invalid(format!("set {}, item {:?}: the prompt has no tokens", set.name, item.name)))?;
            for (d, &decoder) in opts.decoders.iter().enumerate() {
                progress.check()?;
                progress.report(&format!("{} · {} · {}", set.name, item.name, decoder.label()), done as f32 / total as f32);
                let lens_opts = LensOptions { decoder, pinned: pins.clone(), k: 1, subblocks: false, ..LensOptions::default() };
                let r = engine.lens_range(&ids, &trace, &lens_opts, last..ids.len(), progress)?;
                let pinned = r.pinned.as_ref().ok_or_else(|| LensError::invalid("internal: the lens returned no pinned ranks"))?;
                let rank_of = |id: u32, site: usize| -> Option<u32> {
                    let p = pins.iter().position(|&x| x == id)?;
                    pinned.rank.get(p)?.get(site, 0).copied()
                };
                let per_word: Vec<Vec<u32>> =
                    cands.iter().map(|c| (1..=n_scored).map(|site| c.iter().filter_map(|&id| rank_of(id, site)).min().unwrap_or(u32::MAX)).collect()).collect();
                if let Some(slot) = ranks.get_mut(d) {
                    slot.push(per_word);
                }
                if let Some(nt) = no_transport.get_mut(d) {
                    *nt = r.no_transport.iter().filter(|&&s| (1..=n_scored).contains(&s)).filter_map(|&s| r.sites.get(s).cloned()).collect();
                }
                done += 1;
            }
            tokens_of.push(cands);
        }
        let mut decoders = Vec::with_capacity(opts.decoders.len());
        for (d, &decoder) in opts.decoders.iter().enumerate() {
            let items = ranks.get(d).map(Vec::as_slice).unwrap_or_default();
            let best: Vec<Vec<u32>> = items.iter().map(|words| words.iter().map(|l| l.iter().copied().min().unwrap_or(u32::MAX)).collect()).collect();
            let pass_at = opts
                .ks
                .iter()
                .map(|&k| {
                    let per_item: Vec<f64> = best.iter().map(|w| w.iter().filter(|&&r| r as usize <= k).count() as f64 / w.len().max(1) as f64).collect();
                    PassAt { k, estimate: estimate(&per_item, opts.resamples, &mut rng) }
                })
                .collect();
            let pairs = items.iter().flatten().count().max(1) as f64;
            let mean_rank =
                (0..n_scored).map(|l| items.iter().flatten().map(|w| f64::from(w.get(l).copied().unwrap_or(u32::MAX))).sum::<f64>() / pairs).collect();
            let mean_log10_rank =
                (0..n_scored).map(|l| items.iter().flatten().map(|w| f64::from(w.get(l).copied().unwrap_or(u32::MAX)).log10()).sum::<f64>() / pairs).collect();
            let per_item_log: Vec<f64> = items
                .iter()
                .map(|words| {
                    let n = (words.len() * n_scored).max(1) as f64;
                    words.iter().flatten().map(|&r| f64::from(r).log10()).sum::<f64>() / n
                })
                .collect();
            decoders.push(DecoderScores {
                decoder: decoder.name().into(),
                pass_at,
                mean_rank,
                mean_log10_rank,
                mean_log10_rank_all: estimate(&per_item_log, opts.resamples, &mut rng),
                no_transport: no_transport.get(d).cloned().unwrap_or_default(),
                best_rank: best,
            });
        }
        out.push(SetScores { name: set.name.clone(), items: set.items.iter().map(|i| i.name.clone()).collect(), intermediate_tokens: tokens_of, decoders });
    }
    progress.report("done", 1.0);
    Ok(EvalReport {
        schema: EVAL_SCHEMA.into(),
        model: engine.bundle.name.clone(),
        n_layers,
        layers: (0..n_scored).map(|l| l.to_string()).collect(),
        ks: opts.ks.clone(),
        resamples: opts.resamples,
        weights: engine.bundle.weights.name().into(),
        tuned_lens: opts.decoders.contains(&DecoderKind::TunedLens).then(|| engine.tuned_lens().map(|l| l.describe())).flatten(),
        jacobian_lens: opts.decoders.contains(&DecoderKind::JacobianLens).then(|| engine.jacobian_lens().map(|l| l.describe())).flatten(),
        sets: out,
        program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
    })
}

impl EvalReport {
    /// The CSV form: one row per (set, decoder, statistic): `set,decoder,statistic,at,value,ci95_low,ci95_high`
    /// (`pass@k` rows with `at` = k; `mean_rank` / `mean_log10_rank` rows with `at` = the layer;
    /// `mean_log10_rank_all` with `at` empty).
    pub fn to_csv(&self) -> String {
        let mut s = String::from("set,decoder,statistic,at,value,ci95_low,ci95_high\n");
        let q = |t: &str| if t.contains([',', '"', '\n']) { format!("\"{}\"", t.replace('"', "\"\"")) } else { t.to_string() };
        for set in &self.sets {
            for d in &set.decoders {
                for p in &d.pass_at {
                    s += &format!("{},{},pass@k,{},{},{},{}\n", q(&set.name), d.decoder, p.k, p.estimate.mean, p.estimate.ci95_low, p.estimate.ci95_high);
                }
                let e = d.mean_log10_rank_all;
                s += &format!("{},{},mean_log10_rank_all,,{},{},{}\n", q(&set.name), d.decoder, e.mean, e.ci95_low, e.ci95_high);
                for (l, (r, lr)) in self.layers.iter().zip(d.mean_rank.iter().zip(&d.mean_log10_rank)) {
                    s += &format!("{},{},mean_rank,{l},{r},,\n", q(&set.name), d.decoder);
                    s += &format!("{},{},mean_log10_rank,{l},{lr},,\n", q(&set.name), d.decoder);
                }
            }
        }
        s
    }
}
