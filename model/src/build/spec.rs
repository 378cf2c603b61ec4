//! What an architecture is, independent of any family's file: the [`Family`] list, the
//! [`Arch`] a `config.json` is read into (shape, norms, positions, residual layout, rotary), and
//! the [`TensorPlan`] that says where each bundle initializer comes from. The family files
//! ([`crate::build::arch`]) fill these in; the graph builder ([`crate::build::graph`]) reads them.

use crate::build::names;
use crate::source::config::ModelShape;

/// A supported model family (the Hugging Face `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// GPT-2 (`gpt2`).
    Gpt2,
    /// GPT-Neo (`gpt_neo`): global and local attention, no 1/sqrt(d_head) scaling.
    GptNeo,
    /// CTRL (`ctrl`): sinusoidal positions, scaled embedding, ReLU MLP.
    Ctrl,
    /// GPT-NeoX / Pythia (`gpt_neox`): partial rotary, parallel (or sequential) residual.
    GptNeox,
    /// GPT-J (`gptj`): interleaved rotary, parallel residual with one shared norm.
    Gptj,
    /// Llama 2/3 (`llama`): RMSNorm, SwiGLU, grouped-query attention, RoPE (llama3 scaling).
    Llama,
    /// Mistral (`mistral`): Llama with a sliding window.
    Mistral,
    /// Qwen2 / Qwen2.5 (`qwen2`): Llama with query/key/value biases.
    Qwen2,
    /// Qwen3 (`qwen3`): Llama with per-head query/key RMSNorm and an explicit head_dim.
    Qwen3,
    /// Gemma 2 (`gemma2`): RMSNorm (1 + w), scaled embedding, pre- and post-norms, GeGLU,
    /// sliding and global layers, attention and final logit softcapping.
    Gemma2,
    /// Gemma 3 text (`gemma3_text`): Gemma 2 with q/k norms and a local RoPE base.
    Gemma3,
}

/// Every family this build can convert, in the order they are listed to the user.
pub const FAMILIES: [Family; 11] = [
    Family::Gpt2,
    Family::GptNeo,
    Family::Ctrl,
    Family::GptNeox,
    Family::Gptj,
    Family::Llama,
    Family::Mistral,
    Family::Qwen2,
    Family::Qwen3,
    Family::Gemma2,
    Family::Gemma3,
];

impl Family {
    /// The Hugging Face `model_type` (also the bundle's `lens.family`).
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Gpt2 => "gpt2",
            Self::GptNeo => "gpt_neo",
            Self::Ctrl => "ctrl",
            Self::GptNeox => "gpt_neox",
            Self::Gptj => "gptj",
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3_text",
        }
    }

    /// The family of a `model_type` / `lens.family` string.
    pub fn from_model_type(s: &str) -> Option<Self> {
        FAMILIES.into_iter().find(|f| f.model_type() == s)
    }

    /// `gpt2, gpt_neo, …, gemma3_text, gemma3 (its text model)`: for error messages.
    pub fn supported_list() -> String {
        let mut v: Vec<&str> = FAMILIES.iter().map(|f| f.model_type()).collect();
        v.push("gemma3 (its text model)");
        v.join(", ")
    }

    /// Checkpoint key prefix of the base model inside `*ForCausalLM` (`transformer.`, `gpt_neox.`, `model.`);
    /// see also [`Arch::key_prefixes`].
    pub fn base_prefix(self) -> &'static str {
        match self {
            Self::GptNeox => "gpt_neox.",
            Self::Llama | Self::Mistral | Self::Qwen2 | Self::Qwen3 | Self::Gemma2 | Self::Gemma3 => "model.",
            _ => "transformer.",
        }
    }
}

/// How a block adds its sub-blocks to the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residual {
    /// `x + attn(ln1(x))`, then `+ mlp(ln2(resid_mid))`: there is a `resid_mid`.
    Sequential,
    /// `x + attn(ln1(x)) + mlp(ln2(x))`: both read `resid_pre`; the model has no `resid_mid`.
    Parallel,
}

impl Residual {
    /// `sequential` / `parallel` (bundle metadata and report).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sequential => "sequential",
            Self::Parallel => "parallel",
        }
    }

    /// Parses [`Residual::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sequential" => Some(Self::Sequential),
            "parallel" => Some(Self::Parallel),
            _ => None,
        }
    }
}

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: 0.5 x (1 + tanh(sqrt(2/π)(x + 0.044715 x³))).
    GeluTanh,
    /// `gelu`: 0.5 x (1 + erf(x / sqrt 2)).
    GeluErf,
    /// `relu`.
    Relu,
    /// `silu` / `swish`: x · sigmoid(x).
    Silu,
}

impl Activation {
    /// Parses a Hugging Face activation name.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "gelu" => Some(Self::GeluErf),
            "relu" => Some(Self::Relu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }
}

/// Rotary position embedding of the queries and keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotary {
    /// Rotated dimensions of each head (the first `dim`; the rest pass through).
    pub dim: usize,
    /// Frequency base (`rope_theta`).
    pub base: f64,
    /// GPT-J's pairs (0,1), (2,3), … instead of NeoX's halves (i, i + dim/2).
    pub interleaved: bool,
    /// Llama 3's frequency scaling (`rope_type` `llama3`), if any.
    pub llama3: Option<Llama3Scaling>,
    /// Linear scaling (`rope_type` `linear`: every frequency divided by `factor`; Gemma 3's global
    /// layers), if any.
    pub linear: Option<f64>,
}

/// Llama 3.1's RoPE frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    /// `factor`.
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_max_position_embeddings: f64,
}

impl Rotary {
    /// The inverse frequencies `[dim/2]`, as `transformers` computes them (with llama3 or linear
    /// scaling).
    pub fn inv_freq(&self) -> Vec<f64> {
        let half = self.dim / 2;
        let factor = self.linear.unwrap_or(1.0);
        let base: Vec<f64> = (0..half).map(|i| 1.0 / self.base.powf((2 * i) as f64 / self.dim as f64) / factor).collect();
        let Some(s) = self.llama3 else { return base };
        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}

/// The norm every block (and the final norm) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// LayerNorm: centred, scaled, weight and bias.
    LayerNorm,
    /// RMSNorm: x / sqrt(mean(x²) + eps) · w, no centring, no bias.
    RmsNorm,
}

impl Norm {
    /// `layer_norm` / `rms_norm` (bundle metadata).
    pub fn name(self) -> &'static str {
        match self {
            Self::LayerNorm => "layer_norm",
            Self::RmsNorm => "rms_norm",
        }
    }
    /// Parses [`Norm::name`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::LayerNorm, Self::RmsNorm].into_iter().find(|n| n.name() == s)
    }
}

/// Where a block's positional information comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Positions {
    /// A learned table `pos_embed.W_pos` added to the token embedding.
    Learned,
    /// A fixed sinusoidal table (CTRL), written by the converter as `pos_embed.W_pos`.
    Sinusoidal,
    /// Rotary embedding inside attention.
    Rotary(Rotary),
}

/// Everything the graph builder and the lens need to know about a model, beyond its
/// [`ModelShape`]. Built once from `config.json` by the family file.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    /// The family.
    pub family: Family,
    /// Sizes.
    pub shape: ModelShape,
    /// Residual layout.
    pub residual: Residual,
    /// One norm (`ln1`) feeds both attention and the MLP (GPT-J); else the MLP reads `ln2`.
    pub shared_norm: bool,
    /// LayerNorm or RMSNorm (blocks and final norm alike).
    pub norm: Norm,
    /// Gated MLP (`act(x·W_gate) ⊙ (x·W_in)`, SwiGLU) instead of `act(x·W_in)`.
    pub gated_mlp: bool,
    /// Biases on the MLP's projections.
    pub mlp_bias: bool,
    /// Width of one attention head (`head_dim`; usually d_model / n_heads).
    pub head_dim: usize,
    /// Key/value heads (grouped-query attention; = n_heads without it).
    pub n_kv_heads: usize,
    /// Per-head RMSNorm of queries and keys before the rotary (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP, inside the residual branch (Gemma): a sub-block's
    /// output is taken after its post-norm.
    pub post_norms: bool,
    /// Attention scores are soft-capped: `cap · tanh(scores / cap)` (Gemma 2).
    pub attn_softcap: Option<f64>,
    /// The logits are soft-capped (Gemma 2); the lens decoder caps as the model does.
    pub final_softcap: Option<f64>,
    /// RoPE base of the sliding-window layers, where it differs from the global one (Gemma 3).
    pub local_rope_base: Option<f64>,
    /// MLP activation.
    pub activation: Activation,
    /// Positions.
    pub positions: Positions,
    /// Epsilon of the norms inside the blocks (the final norm's is `shape.eps`; they differ only
    /// in CTRL, whose block norms hard-code 1e-6).
    pub block_eps: f64,
    /// The token embedding is multiplied by this (CTRL: sqrt(d_model)).
    pub embed_scale: Option<f64>,
    /// Attention scores are multiplied by this (1/sqrt(d_head), or 1 for GPT-Neo).
    pub attn_scale: f64,
    /// Per layer: `None` = global causal attention, `Some(w)` = each position sees the last `w`.
    pub windows: Vec<Option<usize>>,
    /// Other prefixes the checkpoint may put in place of the base prefix (`model.`): an image-text
    /// Gemma 3 keeps its text model under `language_model.model.` (as the hub ships it) or
    /// `model.language_model.` (as transformers 5 saves it).
    pub key_prefixes: &'static [&'static str],
    /// Biases on the query/key/value projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub attn_out_bias: bool,
    /// Whether `config.json` says the unembedding is the token embedding.
    pub tie_word_embeddings: bool,
    /// Checkpoint key of the untied unembedding (`lm_head.weight`, `embed_out.weight`).
    pub unembed_key: &'static str,
    /// Checkpoint key of the unembedding bias, if the family has one.
    pub unembed_bias_key: Option<&'static str>,
}

/// Which rows or columns of a 2-D checkpoint tensor (or which elements of a 1-D one) to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The whole tensor.
    All,
    /// These rows (1-D: elements), in order.
    Rows(Vec<std::ops::Range<usize>>),
    /// These columns (2-D only).
    Cols(std::ops::Range<usize>),
}

impl Pick {
    /// One range of rows (elements of a vector).
    #[allow(clippy::single_range_in_vec_init)]
    pub fn rows(r: std::ops::Range<usize>) -> Self {
        Self::Rows(vec![r])
    }
}

/// Where one bundle initializer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A checkpoint tensor (full key as `*ForCausalLM` saves it; the converter also tries it
    /// without the family's base prefix), picked, then transposed if asked.
    Checkpoint {
        /// The key.
        key: String,
        /// Part of it.
        pick: Pick,
        /// Transpose the picked 2-D block (`nn.Linear` `[out, in]` -> MatMul's `[in, out]`).
        transpose: bool,
    },
    /// CTRL's sinusoidal position table, `[n_ctx, d_model]`.
    Sinusoidal,
    /// A Gemma norm weight `w`, stored as the multiplier `1 + w` it is used as.
    PlusOne {
        /// The key.
        key: String,
    },
}

/// One bundle initializer: its canonical name (see [`names`]), its dims in the bundle, its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlan {
    /// Canonical initializer name.
    pub name: String,
    /// Dimensions in the bundle.
    pub dims: Vec<usize>,
    /// Where the values come from.
    pub source: Source,
}

impl TensorPlan {
    /// A checkpoint tensor copied as it is.
    pub fn copy(name: impl Into<String>, dims: Vec<usize>, key: impl Into<String>) -> Self {
        Self { name: name.into(), dims, source: Source::Checkpoint { key: key.into(), pick: Pick::All, transpose: false } }
    }
    /// An `nn.Linear` weight `[out, in]` stored as `[in, out]`.
    pub fn linear(name: impl Into<String>, d_in: usize, d_out: usize, key: impl Into<String>) -> Self {
        Self { name: name.into(), dims: vec![d_in, d_out], source: Source::Checkpoint { key: key.into(), pick: Pick::All, transpose: true } }
    }
    /// A norm's weight and bias, `{key}.weight` and `{key}.bias`, each `[d]`.
    pub fn norm(names: &(String, String), d: usize, key: &str) -> [Self; 2] {
        [Self::copy(&names.0, vec![d], format!("{key}.weight")), Self::copy(&names.1, vec![d], format!("{key}.bias"))]
    }
    /// An `nn.Linear` `{key}.weight` (stored `[d_in, d_out]`) and its bias `{key}.bias`.
    pub fn linear_bias(w: &str, b: &str, d_in: usize, d_out: usize, key: &str) -> [Self; 2] {
        [Self::linear(w, d_in, d_out, format!("{key}.weight")), Self::copy(b, vec![d_out], format!("{key}.bias"))]
    }
    /// A Gemma RMSNorm weight, stored as `1 + w`.
    pub fn plus_one(name: impl Into<String>, d: usize, key: impl Into<String>) -> Self {
        Self { name: name.into(), dims: vec![d], source: Source::PlusOne { key: key.into() } }
    }
    /// A picked (and maybe transposed) part of a checkpoint tensor.
    pub fn picked(name: impl Into<String>, dims: Vec<usize>, key: impl Into<String>, pick: Pick, transpose: bool) -> Self {
        Self { name: name.into(), dims, source: Source::Checkpoint { key: key.into(), pick, transpose } }
    }
}

impl Arch {
    /// Width of one attention head.
    pub fn d_head(&self) -> usize {
        self.head_dim
    }

    /// The initializer that holds the unembedding `[d_vocab, d_model]`.
    pub fn unembed_name(tied: bool) -> &'static str {
        if tied { names::EMBED } else { names::UNEMBED }
    }
}
