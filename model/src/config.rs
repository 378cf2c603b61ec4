//! Hugging Face GPT-2 `config.json` -> [`ModelShape`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LensError, Result};

/// The shape of a GPT-2-style model, in TransformerLens names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads per block.
    pub n_heads: usize,
    /// Hidden width of the MLP.
    pub d_mlp: usize,
    /// Vocabulary size (rows of the unembedding).
    pub d_vocab: usize,
    /// Context length (learned positions).
    pub n_ctx: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    #[serde(alias = "num_hidden_layers")]
    n_layer: Option<usize>,
    #[serde(alias = "hidden_size")]
    n_embd: Option<usize>,
    #[serde(alias = "num_attention_heads")]
    n_head: Option<usize>,
    n_inner: Option<usize>,
    vocab_size: Option<usize>,
    #[serde(alias = "max_position_embeddings")]
    n_positions: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
}

impl ModelShape {
    /// Reads and checks a Hugging Face GPT-2 `config.json`.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LensError::io(path, e))?;
        let cfg: HfConfig = serde_json::from_str(&text)
            .map_err(|e| LensError::bad_file(path, format!("not a valid config.json: {e}")))?;
        if let Some(t) = &cfg.model_type
            && t != "gpt2" {
                return Err(LensError::bad_file(path, format!("model_type is {t:?}; only GPT-2 (\"gpt2\") is supported")));
            }
        if let Some(act) = &cfg.activation_function
            && act != "gelu_new" && act != "gelu_pytorch_tanh" {
                return Err(LensError::bad_file(path, format!("activation_function {act:?} is not supported (GPT-2 uses gelu_new)")));
            }
        let need = |v: Option<usize>, name: &str| -> Result<usize> {
            match v {
                Some(x) if x > 0 => Ok(x),
                Some(_) => Err(LensError::bad_file(path, format!("{name} must be positive"))),
                None => Err(LensError::bad_file(path, format!("missing {name}"))),
            }
        };
        let d_model = need(cfg.n_embd, "n_embd")?;
        let n_heads = need(cfg.n_head, "n_head")?;
        if d_model % n_heads != 0 {
            return Err(LensError::bad_file(path, format!("n_embd {d_model} is not divisible by n_head {n_heads}")));
        }
        let shape = Self {
            n_layers: need(cfg.n_layer, "n_layer")?,
            d_model,
            n_heads,
            d_mlp: cfg.n_inner.unwrap_or(4 * d_model),
            d_vocab: need(cfg.vocab_size, "vocab_size")?,
            n_ctx: need(cfg.n_positions, "n_positions")?,
            eps: cfg.layer_norm_epsilon.unwrap_or(1e-5),
        };
        if !(shape.eps > 0.0 && shape.eps < 1.0) {
            return Err(LensError::bad_file(path, format!("layer_norm_epsilon {} is out of range", shape.eps)));
        }
        Ok(shape)
    }

    /// Number of weights (parameters) of the model.
    pub fn n_params(&self) -> usize {
        let d = self.d_model;
        let per_block = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * self.d_mlp + self.d_mlp) + (self.d_mlp * d + d);
        self.d_vocab * d + self.n_ctx * d + self.n_layers * per_block + 2 * d
    }
}
