//! [`LensReport`] and its JSON form (DESIGN §3.4, schema `logit-lens/report@1`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::attribution::Attribution;
use crate::error::{LensError, Result};
use crate::tokenizer::Token;

/// The schema tag written into every report.
pub const SCHEMA: &str = "logit-lens/report@1";

/// The model a report was computed on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Family (`gpt2`, `gpt_neo`, `ctrl`, `gpt_neox`, `gptj`).
    pub family: String,
    /// Residual layout (`sequential` / `parallel`; absent in reports of the first release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<String>,
    /// The logits' soft cap (Gemma 2), if the model has one: the attribution terms then sum to
    /// the logit before the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_softcap: Option<f64>,
    /// Number of blocks.
    pub n_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Vocabulary size.
    pub d_vocab: usize,
    /// Context length.
    #[serde(default)]
    pub n_ctx: usize,
    /// sha256 of the weights, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

/// Per-cell metrics, each `[n_sites][n_positions]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Top-1 token id.
    pub top1_id: Vec<Vec<u32>>,
    /// Top-1 logit.
    #[serde(deserialize_with = "nullable::grid")]
    pub top1_logit: Vec<Vec<f32>>,
    /// Top-1 probability.
    #[serde(deserialize_with = "nullable::grid")]
    pub top1_prob: Vec<Vec<f64>>,
    /// Rank of the final site's top-1 (1 = top).
    pub rank_of_final_top1: Vec<Vec<u32>>,
    /// Probability of the final site's top-1 token at this site (its logit is known for the rank
    /// whether or not it is in this site's top-k); absent from reports written before it existed.
    #[serde(default, deserialize_with = "nullable::grid")]
    pub final_top1_prob: Vec<Vec<f64>>,
    /// Rank of the true next token; `null` at the last position.
    pub rank_of_next: Vec<Vec<Option<u32>>>,
    /// Rank of the input token at this position.
    pub rank_of_input: Vec<Vec<u32>>,
    /// KL(final || site), nats.
    #[serde(deserialize_with = "nullable::grid")]
    pub kl_to_final: Vec<Vec<f64>>,
    /// KL(embed || site), nats; `null` where not computed (`--final-only`).
    #[serde(deserialize_with = "nullable::grid")]
    pub kl_to_input: Vec<Vec<f64>>,
    /// Entropy, nats.
    #[serde(deserialize_with = "nullable::grid")]
    pub entropy: Vec<Vec<f64>>,
    /// −log q(next token); `null` at the last position.
    pub nll_next: Vec<Vec<Option<f64>>>,
}

/// Top-k per cell, each `[n_sites][n_positions][k]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    /// k.
    pub k: usize,
    /// Token ids, best first.
    pub ids: Vec<Vec<Vec<u32>>>,
    /// Their logits.
    #[serde(deserialize_with = "nullable::cube")]
    pub logits: Vec<Vec<Vec<f32>>>,
    /// Their probabilities.
    #[serde(deserialize_with = "nullable::cube")]
    pub probs: Vec<Vec<Vec<f64>>>,
}

/// Tokens followed through every site (e.g. `" plasma"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// The pinned tokens.
    pub tokens: Vec<Token>,
    /// Rank // [pin][site][pos]
    pub rank: Vec<Vec<Vec<u32>>>,
    /// Probability // [pin][site][pos]
    #[serde(deserialize_with = "nullable::cube")]
    pub prob: Vec<Vec<Vec<f64>>>,
    /// Logit // [pin][site][pos]
    #[serde(deserialize_with = "nullable::cube")]
    pub logit: Vec<Vec<Vec<f32>>>,
}

/// Writes `path` by `write(tmp)` into the sibling `NAME.partial`, renamed into place once it is
/// whole: a failure (or a crash) never leaves a half-written `path`, and the partial file goes.
pub(crate) fn write_replacing(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!("{name}.partial"));
    let done = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| LensError::io(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a left truncation dropped from a prompt longer than the model's context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// Tokens of the whole prompt.
    pub original_tokens: usize,
    /// Tokens dropped from its start, after a leading BOS, which stays (the report's positions are
    /// the rest).
    pub dropped_tokens: usize,
}

/// How the report was computed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Execution provider of the forward pass.
    pub provider: String,
    /// Tokenize + forward time, ms.
    pub forward_ms: f64,
    /// Lens kernel time, ms.
    pub lens_ms: f64,
    /// The forward pass of an earlier run on the same tokens was reused (`forward_ms` is then
    /// only the lookup).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_reused: bool,
    /// Leading positions kept from the previous run of an edited prompt (the app's incremental
    /// edit: their prefix and next token did not change), not computed again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reused_positions: usize,
    /// Leading positions whose forward pass came from the previous run's key/value cache (only
    /// the positions after them ran).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_positions: usize,
    /// Program version.
    pub program: String,
}

/// Everything the lens computed for one prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LensReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The model.
    pub model: ModelInfo,
    /// `logit_lens` or `raw`.
    pub decoder: String,
    /// Input tokens in position order.
    pub tokens: Vec<Token>,
    /// Row labels, bottom (input) to top (output).
    pub sites: Vec<String>,
    /// Per-cell metrics.
    pub metrics: Metrics,
    /// Per-cell top-k.
    pub top_k: TopK,
    /// Direct logit attribution.
    pub attribution: Attribution,
    /// Pinned tokens, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    /// Set when the prompt was cut to the model's context (`--truncate left`): what was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
    /// How it was computed.
    #[serde(default)]
    pub run: RunInfo,
}

impl LensReport {
    /// Number of positions.
    pub fn n_pos(&self) -> usize {
        self.tokens.len()
    }

    /// Keeps only the first `n` positions (of every grid, top-k list, attribution row and pin).
    pub fn keep_positions(&mut self, n: usize) {
        fn cut<T>(g: &mut [Vec<T>], n: usize) {
            for row in g {
                row.truncate(n);
            }
        }
        self.tokens.truncate(n);
        let m = &mut self.metrics;
        cut(&mut m.top1_id, n);
        cut(&mut m.top1_logit, n);
        cut(&mut m.top1_prob, n);
        cut(&mut m.rank_of_final_top1, n);
        cut(&mut m.final_top1_prob, n);
        cut(&mut m.rank_of_next, n);
        cut(&mut m.rank_of_input, n);
        cut(&mut m.kl_to_final, n);
        cut(&mut m.kl_to_input, n);
        cut(&mut m.entropy, n);
        cut(&mut m.nll_next, n);
        cut(&mut self.top_k.ids, n);
        cut(&mut self.top_k.logits, n);
        cut(&mut self.top_k.probs, n);
        self.attribution.final_top1_ids.truncate(n);
        cut(&mut self.attribution.final_top1, n);
        cut(&mut self.attribution.next, n);
        if let Some(p) = self.pinned.as_mut() {
            for g in p.rank.iter_mut() {
                cut(g, n);
            }
            for g in p.prob.iter_mut() {
                cut(g, n);
            }
            for g in p.logit.iter_mut() {
                cut(g, n);
            }
        }
    }

    /// Appends the positions of `other` (the report of the positions right after this one's, from
    /// the same model, prompt and options; see `LensEngine::lens_range`).
    pub fn append_positions(&mut self, other: Self) -> Result<()> {
        let same = self.sites == other.sites
            && self.model == other.model
            && self.decoder == other.decoder
            && self.top_k.k == other.top_k.k
            && self.attribution.components == other.attribution.components
            && self.pinned.as_ref().map(|p| &p.tokens) == other.pinned.as_ref().map(|p| &p.tokens);
        if !same {
            return Err(LensError::invalid("cannot join reports of different models, sites or options"));
        }
        fn join<T>(a: &mut [Vec<T>], b: Vec<Vec<T>>) {
            for (x, y) in a.iter_mut().zip(b) {
                x.extend(y);
            }
        }
        self.tokens.extend(other.tokens);
        let (m, o) = (&mut self.metrics, other.metrics);
        join(&mut m.top1_id, o.top1_id);
        join(&mut m.top1_logit, o.top1_logit);
        join(&mut m.top1_prob, o.top1_prob);
        join(&mut m.rank_of_final_top1, o.rank_of_final_top1);
        join(&mut m.final_top1_prob, o.final_top1_prob);
        join(&mut m.rank_of_next, o.rank_of_next);
        join(&mut m.rank_of_input, o.rank_of_input);
        join(&mut m.kl_to_final, o.kl_to_final);
        join(&mut m.kl_to_input, o.kl_to_input);
        join(&mut m.entropy, o.entropy);
        join(&mut m.nll_next, o.nll_next);
        join(&mut self.top_k.ids, other.top_k.ids);
        join(&mut self.top_k.logits, other.top_k.logits);
        join(&mut self.top_k.probs, other.top_k.probs);
        self.attribution.final_top1_ids.extend(other.attribution.final_top1_ids);
        join(&mut self.attribution.final_top1, other.attribution.final_top1);
        join(&mut self.attribution.next, other.attribution.next);
        if let (Some(p), Some(q)) = (self.pinned.as_mut(), other.pinned) {
            for (a, b) in p.rank.iter_mut().zip(q.rank) {
                join(a, b);
            }
            for (a, b) in p.prob.iter_mut().zip(q.prob) {
                join(a, b);
            }
            for (a, b) in p.logit.iter_mut().zip(q.logit) {
                join(a, b);
            }
        }
        self.run.forward_ms = self.run.forward_ms.max(other.run.forward_ms);
        self.run.lens_ms += other.run.lens_ms;
        Ok(())
    }

    /// Serialises to JSON text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| LensError::invalid(format!("cannot serialise the report: {e}")))
    }

    /// Writes JSON to `path` (through a temporary file, so a failure leaves no half-written report).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = self.to_json()?;
        write_replacing(path, |tmp| std::fs::write(tmp, &text).map_err(|e| LensError::io(path, e)))
    }

    /// Reads a report, checking its schema.
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LensError::io(path, e))?;
        let r: Self = serde_json::from_str(&text).map_err(|e| LensError::bad_file(path, format!("not a logit-lens report: {e}")))?;
        if r.schema != SCHEMA {
            return Err(LensError::bad_file(path, format!("schema {:?} is not {SCHEMA}", r.schema)));
        }
        Ok(r)
    }
}

/// Float grids read back with `null` as NaN: serde_json writes a NaN (an unknown value, e.g.
/// `kl_to_input` of a `--final-only` report) as `null`, and a report must read back what it wrote.
mod nullable {
    use serde::{Deserialize, Deserializer};

    /// A float type with a NaN.
    pub trait Float: Copy + for<'a> Deserialize<'a> {
        /// Not a number.
        const NAN: Self;
    }
    impl Float for f32 {
        const NAN: Self = f32::NAN;
    }
    impl Float for f64 {
        const NAN: Self = f64::NAN;
    }

    /// `[[x or null]]` -> `[[x or NaN]]`.
    pub fn grid<'de, D: Deserializer<'de>, T: Float>(d: D) -> Result<Vec<Vec<T>>, D::Error> {
        let g = Vec::<Vec<Option<T>>>::deserialize(d)?;
        Ok(g.into_iter().map(|row| row.into_iter().map(|x| x.unwrap_or(T::NAN)).collect()).collect())
    }

    /// `[[[x or null]]]` -> `[[[x or NaN]]]`.
    pub fn cube<'de, D: Deserializer<'de>, T: Float>(d: D) -> Result<Vec<Vec<Vec<T>>>, D::Error> {
        let c = Vec::<Vec<Vec<Option<T>>>>::deserialize(d)?;
        Ok(c.into_iter().map(|g| g.into_iter().map(|row| row.into_iter().map(|x| x.unwrap_or(T::NAN)).collect()).collect()).collect())
    }
}
