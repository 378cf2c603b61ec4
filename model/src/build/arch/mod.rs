//! One file per architecture (candle's `models/*.rs`, TransformerLens's weight conversions).
//!
//! Each family file holds three things: its Hugging Face `config.json` (serde) turned into an
//! [`Arch`]; the ONE list of bundle initializers and where each comes from in the checkpoint
//! ([`TensorPlan`], used by the converter and checked by the graph builder); and the graph of its
//! block, written with the shared ops of [`crate::build::graph::ops`]. Adding a family = one file here,
//! one line in [`Family`], and its reference test (see `DESIGN.md`, "Adding a family").

pub mod ctrl;
pub mod gemma;
pub mod gpt2;
pub mod gpt_neo;
pub mod gpt_neox;
pub mod gptj;
pub mod llama;
pub mod qwen;

use std::path::Path;

use crate::build::graph::BlockFn;
pub use crate::build::names;
pub use crate::build::spec::{Activation, Arch, FAMILIES, Family, Llama3Scaling, Norm, Pick, Positions, Residual, Rotary, Source, TensorPlan};
use crate::error::{LensError, Result};
use crate::source::config::ModelShape;

/// The block function of `family`, from its own file.
pub fn block_fn(family: Family) -> BlockFn {
    match family {
        Family::Gpt2 => gpt2::block,
        Family::GptNeo => gpt_neo::block,
        Family::Ctrl => ctrl::block,
        Family::GptNeox => gpt_neox::block,
        Family::Gptj => gptj::block,
        Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => llama::block,
        Family::Gemma2 | Family::Gemma3 => gemma::block,
    }
}

impl Arch {
    /// Reads `config.json` and builds the family's [`Arch`]. An unknown `model_type` is one clear
    /// error that names the supported ones.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LensError::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| LensError::bad_file(path, format!("not a valid config.json: {e}")))?;
        let mut model_type = value.get("model_type").and_then(|v| v.as_str()).unwrap_or("gpt2").to_string();
        let mut value = value;
        // Gemma 3 4B and larger ship as image-text models (`gemma3`, Gemma3ForConditionalGeneration):
        // the lens reads their text model, `text_config`, under `language_model.`.
        let mut key_prefixes: &'static [&'static str] = &[];
        if model_type == "gemma3" {
            let Some(text) = value.get("text_config").cloned() else {
                return Err(LensError::bad_file(path, "model_type \"gemma3\" without a text_config: expected a Gemma 3 image-text config"));
            };
            value = text;
            model_type = "gemma3_text".into();
            key_prefixes = gemma::MULTIMODAL_PREFIXES;
        }
        let family = Family::from_model_type(&model_type).ok_or_else(|| {
            LensError::bad_file(path, format!("model_type {model_type:?} is not supported; this logit-lens converts {}", Family::supported_list()))
        })?;
        let bad = |e: serde_json::Error| LensError::bad_file(path, format!("config.json does not describe a {model_type} model: {e}"));
        let arch = match family {
            Family::Gpt2 => gpt2::arch(serde_json::from_value(value).map_err(bad)?, path)?,
            Family::GptNeo => gpt_neo::arch(serde_json::from_value(value).map_err(bad)?, path)?,
            Family::Ctrl => ctrl::arch(serde_json::from_value(value).map_err(bad)?, path)?,
            Family::GptNeox => gpt_neox::arch(serde_json::from_value(value).map_err(bad)?, path)?,
            Family::Gptj => gptj::arch(serde_json::from_value(value).map_err(bad)?, path)?,
            Family::Llama | Family::Mistral => llama::arch(family, serde_json::from_value(value).map_err(bad)?, path)?,
            Family::Qwen2 | Family::Qwen3 => qwen::arch(family, serde_json::from_value(value).map_err(bad)?, path)?,
            Family::Gemma2 | Family::Gemma3 => gemma::arch(family, serde_json::from_value(gemma::with_defaults(family, value)).map_err(bad)?, path)?,
        };
        let arch = Arch { key_prefixes, ..arch };
        arch.check(path)?;
        Ok(arch)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let s = &self.shape;
        if self.head_dim == 0 {
            return Err(LensError::bad_file(path, "the head size is 0"));
        }
        if self.n_kv_heads == 0 || !s.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(LensError::bad_file(path, format!("{} attention heads are not a multiple of {} key/value heads", s.n_heads, self.n_kv_heads)));
        }
        for eps in [s.eps, self.block_eps] {
            if !(eps > 0.0 && eps < 1.0) {
                return Err(LensError::bad_file(path, format!("the norm epsilon {eps} is out of range")));
            }
        }
        if self.windows.len() != s.n_layers {
            return Err(LensError::bad_file(path, format!("{} attention types for {} layers", self.windows.len(), s.n_layers)));
        }
        if let Positions::Rotary(r) = self.positions
            && (r.dim == 0 || r.dim % 2 != 0 || r.dim > self.head_dim)
        {
            return Err(LensError::bad_file(path, format!("rotary dimension {} must be even and at most the head size {}", r.dim, self.head_dim)));
        }
        Ok(())
    }

    /// A GPT-2-like model of `family` and `shape`, from which each family file changes what
    /// differs: LayerNorm, a plain MLP with biases (gelu tanh), learned positions, global causal
    /// attention scaled by 1/sqrt(head_dim) with q/k/v and output biases, sequential blocks, one
    /// epsilon, and an unembedding tied to the embedding unless `lm_head.weight` says otherwise.
    pub(crate) fn base(family: Family, shape: ModelShape, head_dim: usize) -> Self {
        Self {
            family,
            block_eps: shape.eps,
            n_kv_heads: shape.n_heads,
            windows: all_global(shape.n_layers),
            key_prefixes: &[],
            shape,
            residual: Residual::Sequential,
            shared_norm: false,
            norm: Norm::LayerNorm,
            gated_mlp: false,
            mlp_bias: true,
            head_dim,
            qk_norm: false,
            post_norms: false,
            attn_softcap: None,
            final_softcap: None,
            local_rope_base: None,
            activation: Activation::GeluTanh,
            positions: Positions::Learned,
            embed_scale: None,
            attn_scale: 1.0 / (head_dim.max(1) as f64).sqrt(),
            qkv_bias: true,
            attn_out_bias: true,
            tie_word_embeddings: true,
            unembed_key: "lm_head.weight",
            unembed_bias_key: None,
        }
    }

    /// The ONE list of bundle initializers, in the order they are written. `tied`: the
    /// unembedding is the token embedding (decided by the converter from the checkpoint).
    pub fn tensors(&self, tied: bool) -> Vec<TensorPlan> {
        let mut v = match self.family {
            Family::Gpt2 => gpt2::tensors(self),
            Family::GptNeo => gpt_neo::tensors(self),
            Family::Ctrl => ctrl::tensors(self),
            Family::GptNeox => gpt_neox::tensors(self),
            Family::Gptj => gptj::tensors(self),
            Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => llama::tensors(self),
            Family::Gemma2 | Family::Gemma3 => gemma::tensors(self),
        };
        let (d, vocab) = (self.shape.d_model, self.shape.d_vocab);
        if !tied {
            v.push(TensorPlan::copy(names::UNEMBED, vec![vocab, d], self.unembed_key));
        }
        if let Some(key) = self.unembed_bias_key {
            v.push(TensorPlan::copy(names::UNEMBED_BIAS, vec![vocab], key));
        }
        v
    }
}

/// Reads an optional positive size from a config field.
pub(crate) fn need(path: &Path, v: Option<usize>, name: &str) -> Result<usize> {
    match v {
        Some(x) if x > 0 => Ok(x),
        Some(_) => Err(LensError::bad_file(path, format!("{name} must be positive"))),
        None => Err(LensError::bad_file(path, format!("missing {name}"))),
    }
}

/// The head size `d_model / n_heads`, or a clear error when it does not divide.
pub(crate) fn head_dim_of(path: &Path, d_model: usize, n_heads: usize) -> Result<usize> {
    if n_heads == 0 || !d_model.is_multiple_of(n_heads) {
        return Err(LensError::bad_file(path, format!("the width {d_model} is not divisible by the {n_heads} heads")));
    }
    Ok(d_model / n_heads)
}

/// The activation named by `config.json`, or a clear error.
pub(crate) fn activation(path: &Path, name: Option<&str>, default: &str) -> Result<Activation> {
    let name = name.unwrap_or(default);
    Activation::from_hf(name).ok_or_else(|| LensError::bad_file(path, format!("activation {name:?} is not supported (gelu_new, gelu, relu)")))
}

/// Every global window: `n` layers of causal attention.
pub(crate) fn all_global(n: usize) -> Vec<Option<usize>> {
    vec![None; n]
}
