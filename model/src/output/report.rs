//! [`LensReport`] and its JSON form (README, "Metrics", schema `logit-lens/report@1`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Result};
use crate::grid::Grid;
use crate::lens::attribution::Attribution;
use crate::source::tokenizer::Token;

/// The schema tag written into every report.
pub const SCHEMA: &str = "logit-lens/report@1";

/// The model a report was computed on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Family: the Hugging Face `model_type` (`gpt2`, `gpt_neo`, `ctrl`, `gpt_neox`, `gptj`, `llama`,
    /// `mistral`, `qwen2`, `qwen3`, `gemma2`, `gemma3_text`).
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

/// Per-cell metrics, each a [`Grid`] of `n_sites × n_positions` (`get(site, pos)`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Top-1 token id.
    pub top1_id: Grid<u32>,
    /// Top-1 logit.
    pub top1_logit: Grid<f32>,
    /// Top-1 probability.
    pub top1_prob: Grid<f64>,
    /// Rank of the final site's top-1 (1 = top).
    pub rank_of_final_top1: Grid<u32>,
    /// Probability of the final site's top-1 token at this site (its logit is known for the rank
    /// whether or not it is in this site's top-k); absent from reports written before it existed.
    #[serde(default)]
    pub final_top1_prob: Grid<f64>,
    /// Rank of the true next token; `null` at the last position.
    pub rank_of_next: Grid<Option<u32>>,
    /// Rank of the input token at this position.
    pub rank_of_input: Grid<u32>,
    /// KL(final || site), nats.
    pub kl_to_final: Grid<f64>,
    /// KL(embed || site), nats; `null` where not computed (`--final-only`).
    pub kl_to_input: Grid<f64>,
    /// Entropy, nats.
    pub entropy: Grid<f64>,
    /// −log q(next token); `null` at the last position.
    pub nll_next: Grid<Option<f64>>,
    /// Prediction depth per position: the first site (index into `sites`) from which the top-1
    /// stays equal to the final site's top-1 all the way up ([`prediction_depth`]). Absent from
    /// reports written before it existed (read back empty; [`LensReport::prediction_depth`]
    /// derives it).
    #[serde(default)]
    pub prediction_depth: Vec<u32>,
}

/// Prediction depth of every position of `top1` (`[site][pos]`, sites bottom to top): the first
/// site from which the top-1 equals the last site's top-1 at that site and every site above it
/// (the last site itself when only it has its own top-1).
pub fn prediction_depth(top1: &Grid<u32>) -> Vec<u32> {
    let n_sites = top1.n_rows();
    (0..top1.n_cols())
        .map(|p| {
            let final_top1 = top1.get(n_sites.saturating_sub(1), p);
            // Walk down from the top while the top-1 is the final one.
            let mut depth = n_sites.saturating_sub(1);
            while depth > 0 && top1.get(depth - 1, p) == final_top1 {
                depth -= 1;
            }
            depth as u32
        })
        .collect()
}

/// Top-k per cell, each a [`Grid`] of `n_sites × n_positions` lists of `k`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    /// k.
    pub k: usize,
    /// Token ids, best first.
    pub ids: Grid<Vec<u32>>,
    /// Their logits.
    pub logits: Grid<Vec<f32>>,
    /// Their probabilities.
    pub probs: Grid<Vec<f64>>,
}

/// A token group followed through every site (`--group`): a word's variants together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Its name.
    pub name: String,
    /// Its tokens (ids, display and exact text).
    pub tokens: Vec<Token>,
    /// The summed probability of its tokens // [site][pos]
    pub prob: Grid<f64>,
    /// The best (lowest) rank among its tokens // [site][pos]
    pub best_rank: Grid<u32>,
}

/// Tokens followed through every site (e.g. `" plasma"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// The pinned tokens.
    pub tokens: Vec<Token>,
    /// Rank // [pin][site][pos]
    pub rank: Vec<Grid<u32>>,
    /// Probability // [pin][site][pos]
    pub prob: Vec<Grid<f64>>,
    /// Logit // [pin][site][pos]
    pub logit: Vec<Grid<f32>>,
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

/// A steered run: `alpha · v` added to the output of block `layer` at every position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SteeringInfo {
    /// The block whose output was steered.
    pub layer: usize,
    /// The scale.
    pub alpha: f64,
    /// Where the vector came from (a `.npy` file, or `A|B`: the difference of two prompts'
    /// residuals at their last position).
    pub source: String,
    /// The vector's L2 norm.
    pub norm: f64,
    /// Greedy continuation of the prompt with the steering (empty when none was asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continuation: Vec<Token>,
    /// Greedy continuation without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsteered_continuation: Vec<Token>,
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
    /// What computed the lens: `kernel (CPU)` (the streaming kernel) or `graph (PROVIDER)` (the
    /// lens graph on that execution provider); empty in reports of older releases.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lens_path: String,
    /// The tuned lens the `tuned_lens` decoder applied (its folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_lens: Option<String>,
    /// The J-lens the `jacobian_lens` decoder applied (its file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jacobian_lens: Option<String>,
    /// The weights that computed the forward pass: `f32` (exact), `int8` or `int4` (block-wise
    /// `MatMulNBits` codes of the block matrices); empty in reports of older releases, which were
    /// all f32.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub weights: String,
    /// Why those weights (`--weights auto`'s reason), when it chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_reason: Option<String>,
    /// Program version.
    pub program: String,
    /// The engine, where it is not this program's own (`--engine nnsight`): its name, the model
    /// id, where it ran and the bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineInfo>,
}

/// What a run on another engine (`--engine nnsight`) records in the report (`run.engine`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// `nnsight`.
    pub name: String,
    /// The model as nnsight was given it.
    pub model_id: String,
    /// `local` (this machine) or `ndif`.
    pub location: String,
    /// Bytes of the result message received from the engine.
    pub bytes_received: usize,
}

/// Everything the lens computed for one prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LensReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The model.
    pub model: ModelInfo,
    /// The decoder: `logit_lens`, `tuned_lens`, `jacobian_lens`, `last_block`, `last_mlp` or `raw`.
    pub decoder: String,
    /// Rows (indices into `sites`) the decoder has nothing for and decoded as they are, with the
    /// model's final norm and unembedding (the logit lens's readout): under the J-lens the
    /// embeddings, the sub-block rows and the layers the lens was not fitted at; under a tuned
    /// lens without an input translator, the embeddings. Shown greyed, never as the decoder's.
    /// The final row (the model's own output) is never listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_transport: Vec<usize>,
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
    /// Gradient × activation per (site, position), when asked for (`lens --grad-x-act`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_x_activation: Option<GradXAct>,
    /// Pinned tokens, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    /// Token groups, when any (`--group`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupReport>,
    /// The texts of the tokens the grids name beyond the input (every top-1 and top-k id), sorted
    /// by id, so that the report can be shown without the model (`--open-report`). Empty in
    /// reports of releases before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vocab: Vec<Token>,
    /// Set when the run was steered (`--steer`): the vector, where, how much, and the greedy
    /// continuations with and without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteeringInfo>,
    /// Set when the prompt was cut to the model's context (`--truncate left`): what was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
    /// How it was computed.
    #[serde(default)]
    pub run: RunInfo,
}

/// Gradient × activation (README, "Metrics"): for the targets the direct logit attribution uses,
/// `⟨∂ logit_p(target) / ∂ h_site,p , h_site,p⟩` per (site, position `p`): the first-order estimate
/// of what zeroing that residual would change (activation patching computes it exactly). The logit
/// is the one the attribution decomposes (before a final soft cap).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GradXAct {
    /// Target: the final top-1 // [site][pos]
    pub final_top1: Grid<f64>,
    /// Target: the true next token, `null` at the last position // [site][pos]
    pub next: Grid<Option<f64>>,
}

impl LensReport {
    /// The weights that computed this report: `f32` (also for reports of releases before weight
    /// formats, which were all f32), `int8` or `int4`.
    pub fn weights(&self) -> &str {
        if self.run.weights.is_empty() { "f32" } else { &self.run.weights }
    }

    /// Whether the forward pass used the checkpoint's exact (f32) weights.
    pub fn exact_weights(&self) -> bool {
        self.weights() == "f32"
    }

    /// Every token id the grids name (top-1s, top-k, the attribution's targets), sorted, each
    /// once: what [`LensReport::vocab`] holds the texts of.
    pub fn named_ids(&self) -> Vec<u32> {
        let mut ids: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
        ids.extend(self.metrics.top1_id.cells().copied());
        for list in self.top_k.ids.cells() {
            ids.extend(list.iter().copied());
        }
        ids.extend(self.attribution.final_top1_ids.iter().copied());
        ids.into_iter().collect()
    }

    /// The display text of `id` from what the report holds (its input tokens, pins, groups and
    /// [`LensReport::vocab`]), if any.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        let by_id = |t: &&Token| t.id == id;
        self.tokens
            .iter()
            .find(by_id)
            .or_else(|| self.vocab.binary_search_by_key(&id, |t| t.id).ok().and_then(|i| self.vocab.get(i)))
            .or_else(|| self.pinned.as_ref().and_then(|p| p.tokens.iter().find(by_id)))
            .or_else(|| self.groups.iter().find_map(|g| g.tokens.iter().find(by_id)))
            .map(|t| t.text.as_str())
    }

    /// Number of positions.
    pub fn n_pos(&self) -> usize {
        self.tokens.len()
    }

    /// Keeps only the first `n` positions (of every grid, top-k list, attribution row and pin).
    pub fn keep_positions(&mut self, n: usize) {
        self.tokens.truncate(n);
        let m = &mut self.metrics;
        m.top1_id.keep_cols(n);
        m.top1_logit.keep_cols(n);
        m.top1_prob.keep_cols(n);
        m.rank_of_final_top1.keep_cols(n);
        m.final_top1_prob.keep_cols(n);
        m.rank_of_next.keep_cols(n);
        m.rank_of_input.keep_cols(n);
        m.kl_to_final.keep_cols(n);
        m.kl_to_input.keep_cols(n);
        m.entropy.keep_cols(n);
        m.nll_next.keep_cols(n);
        m.prediction_depth.truncate(n);
        self.top_k.ids.keep_cols(n);
        self.top_k.logits.keep_cols(n);
        self.top_k.probs.keep_cols(n);
        self.attribution.final_top1_ids.truncate(n);
        self.attribution.final_top1.keep_cols(n);
        self.attribution.next.keep_cols(n);
        if let Some(g) = self.gradient_x_activation.as_mut() {
            g.final_top1.keep_cols(n);
            g.next.keep_cols(n);
        }
        if let Some(p) = self.pinned.as_mut() {
            p.rank.iter_mut().for_each(|g| g.keep_cols(n));
            p.prob.iter_mut().for_each(|g| g.keep_cols(n));
            p.logit.iter_mut().for_each(|g| g.keep_cols(n));
        }
        for g in &mut self.groups {
            g.prob.keep_cols(n);
            g.best_rank.keep_cols(n);
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
            && self.pinned.as_ref().map(|p| &p.tokens) == other.pinned.as_ref().map(|p| &p.tokens)
            && self.groups.iter().map(|g| (&g.name, &g.tokens)).eq(other.groups.iter().map(|g| (&g.name, &g.tokens)));
        if !same {
            return Err(LensError::invalid("cannot join reports of different models, sites or options"));
        }
        self.tokens.extend(other.tokens);
        // The union of both vocabularies, sorted by id.
        self.vocab.extend(other.vocab);
        self.vocab.sort_by_key(|t| t.id);
        self.vocab.dedup_by_key(|t| t.id);
        let (m, o) = (&mut self.metrics, other.metrics);
        m.top1_id.append_cols(o.top1_id)?;
        m.top1_logit.append_cols(o.top1_logit)?;
        m.top1_prob.append_cols(o.top1_prob)?;
        m.rank_of_final_top1.append_cols(o.rank_of_final_top1)?;
        m.final_top1_prob.append_cols(o.final_top1_prob)?;
        m.rank_of_next.append_cols(o.rank_of_next)?;
        m.rank_of_input.append_cols(o.rank_of_input)?;
        m.kl_to_final.append_cols(o.kl_to_final)?;
        m.kl_to_input.append_cols(o.kl_to_input)?;
        m.entropy.append_cols(o.entropy)?;
        m.nll_next.append_cols(o.nll_next)?;
        m.prediction_depth.extend(o.prediction_depth);
        self.top_k.ids.append_cols(other.top_k.ids)?;
        self.top_k.logits.append_cols(other.top_k.logits)?;
        self.top_k.probs.append_cols(other.top_k.probs)?;
        self.attribution.final_top1_ids.extend(other.attribution.final_top1_ids);
        self.attribution.final_top1.append_cols(other.attribution.final_top1)?;
        self.attribution.next.append_cols(other.attribution.next)?;
        // Gradient × activation covers the whole report or nothing.
        match (self.gradient_x_activation.as_mut(), other.gradient_x_activation) {
            (Some(g), Some(o)) => {
                g.final_top1.append_cols(o.final_top1)?;
                g.next.append_cols(o.next)?;
            }
            _ => self.gradient_x_activation = None,
        }
        if let (Some(p), Some(q)) = (self.pinned.as_mut(), other.pinned) {
            for (a, b) in p.rank.iter_mut().zip(q.rank) {
                a.append_cols(b)?;
            }
            for (a, b) in p.prob.iter_mut().zip(q.prob) {
                a.append_cols(b)?;
            }
            for (a, b) in p.logit.iter_mut().zip(q.logit) {
                a.append_cols(b)?;
            }
        }
        for (a, b) in self.groups.iter_mut().zip(other.groups) {
            a.prob.append_cols(b.prob)?;
            a.best_rank.append_cols(b.best_rank)?;
        }
        self.run.forward_ms = self.run.forward_ms.max(other.run.forward_ms);
        self.run.lens_ms += other.run.lens_ms;
        Ok(())
    }

    /// The prediction depth per position: as stored, or derived from the top-1 grid for a report
    /// written before it was stored (or a partial one being assembled).
    pub fn prediction_depth(&self) -> Vec<u32> {
        if self.metrics.prediction_depth.len() == self.n_pos() { self.metrics.prediction_depth.clone() } else { prediction_depth(&self.metrics.top1_id) }
    }

    /// Checks that every grid is `sites × tokens` (top-k lists of `k`, attribution
    /// `components × tokens`, one grid per pinned token): a report assembled anywhere, or read from
    /// a file, has one shape.
    pub fn check_shapes(&self) -> Result<()> {
        let (s, n) = (self.sites.len(), self.tokens.len());
        let m = &self.metrics;
        m.top1_id.check_shape("metrics.top1_id", s, n)?;
        m.top1_logit.check_shape("metrics.top1_logit", s, n)?;
        m.top1_prob.check_shape("metrics.top1_prob", s, n)?;
        m.rank_of_final_top1.check_shape("metrics.rank_of_final_top1", s, n)?;
        // Absent (empty) in reports written before it existed.
        if m.final_top1_prob.n_rows() > 0 {
            m.final_top1_prob.check_shape("metrics.final_top1_prob", s, n)?;
        }
        m.rank_of_next.check_shape("metrics.rank_of_next", s, n)?;
        m.rank_of_input.check_shape("metrics.rank_of_input", s, n)?;
        m.kl_to_final.check_shape("metrics.kl_to_final", s, n)?;
        m.kl_to_input.check_shape("metrics.kl_to_input", s, n)?;
        m.entropy.check_shape("metrics.entropy", s, n)?;
        m.nll_next.check_shape("metrics.nll_next", s, n)?;
        if let Some(&bad) = self.no_transport.iter().find(|&&i| i + 1 >= s) {
            return Err(LensError::invalid(format!("no_transport names row {bad}; the rows without the final one are 0..{}", s.saturating_sub(1))));
        }
        if !m.prediction_depth.is_empty() && (m.prediction_depth.len() != n || m.prediction_depth.iter().any(|&d| d as usize >= s)) {
            return Err(LensError::invalid(format!("metrics.prediction_depth has {} entries (sites below {s}), expected {n}", m.prediction_depth.len())));
        }
        self.top_k.ids.check_shape("top_k.ids", s, n)?;
        self.top_k.logits.check_shape("top_k.logits", s, n)?;
        self.top_k.probs.check_shape("top_k.probs", s, n)?;
        for (what, g) in [
            ("top_k.ids", self.top_k.ids.cells().map(Vec::len).collect::<Vec<_>>()),
            ("top_k.logits", self.top_k.logits.cells().map(Vec::len).collect()),
            ("top_k.probs", self.top_k.probs.cells().map(Vec::len).collect()),
        ] {
            if let Some(bad) = g.iter().find(|&&len| len > self.top_k.k) {
                return Err(LensError::invalid(format!("{what} has a list of {bad}, more than k = {}", self.top_k.k)));
            }
        }
        let c = self.attribution.components.len();
        if c > 0 {
            self.attribution.final_top1.check_shape("attribution.final_top1", c, n)?;
            self.attribution.next.check_shape("attribution.next", c, n)?;
            if self.attribution.final_top1_ids.len() != n {
                return Err(LensError::invalid(format!("attribution.final_top1_ids has {} entries for {n} positions", self.attribution.final_top1_ids.len())));
            }
        }
        if let Some(g) = &self.gradient_x_activation {
            g.final_top1.check_shape("gradient_x_activation.final_top1", self.sites.len(), n)?;
            g.next.check_shape("gradient_x_activation.next", self.sites.len(), n)?;
        }
        if let Some(p) = &self.pinned {
            let t = p.tokens.len();
            if p.rank.len() != t || p.prob.len() != t || p.logit.len() != t {
                return Err(LensError::invalid(format!("pinned: {t} tokens but {} / {} / {} grids", p.rank.len(), p.prob.len(), p.logit.len())));
            }
            for g in &p.rank {
                g.check_shape("pinned.rank", s, n)?;
            }
            for g in &p.prob {
                g.check_shape("pinned.prob", s, n)?;
            }
            for g in &p.logit {
                g.check_shape("pinned.logit", s, n)?;
            }
        }
        for g in &self.groups {
            g.prob.check_shape(&format!("groups[{:?}].prob", g.name), s, n)?;
            g.best_rank.check_shape(&format!("groups[{:?}].best_rank", g.name), s, n)?;
        }
        Ok(())
    }

    /// Serialises to JSON text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| LensError::invalid(format!("cannot serialise the report: {e}")))
    }

    /// Writes JSON to `path` (through a temporary file, so a failure leaves no half-written report).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = self.to_json()?;
        crate::files::write_replacing(path, |tmp| std::fs::write(tmp, &text).map_err(|e| LensError::io(path, e)))
    }

    /// Reads a report, checking its schema.
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LensError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses a report read from `path` (for messages), checking its schema and grid shapes.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let r: Self = serde_json::from_str(text).map_err(|e| LensError::bad_file(path, format!("not a logit-lens report: {e}")))?;
        if r.schema != SCHEMA {
            return Err(LensError::bad_file(path, format!("schema {:?} is not {SCHEMA}", r.schema)));
        }
        r.check_shapes().map_err(|e| LensError::bad_file(path, format!("not a consistent logit-lens report: {e}")))?;
        Ok(r)
    }
}
