//! Llama 2 / 3 / 3.1 / 3.2 (`llama`) and Mistral (`mistral`): RMSNorm, SwiGLU MLP, grouped-query
//! attention, half-split RoPE (`rope_theta`; `rope_type` `llama3` scaling), tied or untied
//! `lm_head`; Mistral adds a sliding window on every layer. Qwen2/Qwen3 (`qwen.rs`) reuse the
//! tensor plan and block of this file.

use std::path::Path;

use serde::Deserialize;

use super::{Activation, Arch, Family, Llama3Scaling, Norm, Positions, Rotary, TensorPlan, activation, all_global, names, need};
use crate::build::graph::{BlockOut, GraphCtx, ops};
use crate::error::{LensError, Result};
use crate::source::config::ModelShape;

/// RoPE parameters, as `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5) spell them.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RopeParams {
    rope_theta: Option<f64>,
    #[serde(alias = "type")]
    rope_type: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}

impl RopeParams {
    /// The base (`rope_theta`).
    pub fn theta(&self) -> Option<f64> {
        self.rope_theta
    }
}

/// The frequency scaling `rope` names: `llama3` or `linear` (or none for `default`); any other
/// type is a clear error.
pub fn scaling(rope: &RopeParams, path: &Path) -> Result<(Option<Llama3Scaling>, Option<f64>)> {
    match rope.rope_type.as_deref() {
        None | Some("default") => Ok((None, None)),
        Some("llama3") => Ok((
            Some(Llama3Scaling {
                factor: rope.factor.unwrap_or(8.0),
                low_freq_factor: rope.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: rope.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: rope.original_max_position_embeddings.unwrap_or(8192.0),
            }),
            None,
        )),
        Some("linear") => match rope.factor {
            Some(f) if f > 0.0 => Ok((None, Some(f))),
            _ => Err(LensError::bad_file(path, "linear RoPE scaling without a positive factor")),
        },
        Some(other) => Err(LensError::bad_file(path, format!("rope type {other:?} is not supported (default, linear, llama3)"))),
    }
}

/// `config.json` of `LlamaForCausalLM` / `MistralForCausalLM` (and the fields Qwen shares).
#[derive(Debug, Deserialize)]
pub struct LlamaConfig {
    pub(crate) num_hidden_layers: Option<usize>,
    pub(crate) hidden_size: Option<usize>,
    pub(crate) num_attention_heads: Option<usize>,
    pub(crate) num_key_value_heads: Option<usize>,
    pub(crate) head_dim: Option<usize>,
    pub(crate) intermediate_size: Option<usize>,
    pub(crate) vocab_size: Option<usize>,
    pub(crate) max_position_embeddings: Option<usize>,
    pub(crate) rms_norm_eps: Option<f64>,
    pub(crate) hidden_act: Option<String>,
    pub(crate) rope_theta: Option<f64>,
    pub(crate) rope_scaling: Option<RopeParams>,
    pub(crate) rope_parameters: Option<RopeParams>,
    pub(crate) tie_word_embeddings: Option<bool>,
    pub(crate) attention_bias: Option<bool>,
    pub(crate) mlp_bias: Option<bool>,
    pub(crate) sliding_window: Option<usize>,
    pub(crate) use_sliding_window: Option<bool>,
}

/// The Llama-shaped [`Arch`] of a config; `qkv_bias` and `qk_norm` are the Qwen variations.
pub(crate) fn llama_like(family: Family, c: LlamaConfig, path: &Path, qkv_bias: bool, qk_norm: bool) -> Result<Arch> {
    let d_model = need(path, c.hidden_size, "hidden_size")?;
    let n_heads = need(path, c.num_attention_heads, "num_attention_heads")?;
    let n_layers = need(path, c.num_hidden_layers, "num_hidden_layers")?;
    let head_dim = match c.head_dim {
        Some(h) if h > 0 => h,
        _ => super::head_dim_of(path, d_model, n_heads)?,
    };
    let rope = c.rope_parameters.clone().or(c.rope_scaling.clone()).unwrap_or_default();
    let base = rope.rope_theta.or(c.rope_theta).unwrap_or(10000.0);
    let (llama3, linear) = scaling(&rope, path)?;
    let shape = ModelShape {
        n_layers,
        d_model,
        n_heads,
        d_mlp: need(path, c.intermediate_size, "intermediate_size")?,
        d_vocab: need(path, c.vocab_size, "vocab_size")?,
        n_ctx: need(path, c.max_position_embeddings, "max_position_embeddings")?,
        eps: c.rms_norm_eps.unwrap_or(1e-6),
    };
    let windowed = c.use_sliding_window.unwrap_or(family == Family::Mistral);
    let windows = match c.sliding_window {
        Some(w) if windowed && w > 0 => vec![Some(w); n_layers],
        _ => all_global(n_layers),
    };
    let activation: Activation = activation(path, c.hidden_act.as_deref(), "silu")?;
    Ok(Arch {
        norm: Norm::RmsNorm,
        gated_mlp: true,
        mlp_bias: c.mlp_bias.unwrap_or(false),
        n_kv_heads: c.num_key_value_heads.unwrap_or(n_heads),
        qk_norm,
        activation,
        positions: Positions::Rotary(Rotary { dim: head_dim, base, interleaved: false, llama3, linear }),
        windows,
        qkv_bias: qkv_bias || c.attention_bias.unwrap_or(false),
        attn_out_bias: c.attention_bias.unwrap_or(false),
        tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
        ..Arch::base(family, shape, head_dim)
    })
}

/// The internal shape of a Llama or Mistral config.
pub fn arch(family: Family, c: LlamaConfig, path: &Path) -> Result<Arch> {
    llama_like(family, c, path, false, false)
}

/// The tensors of the Llama-shaped families (`model.layers.{l}.self_attn.*`, `mlp.gate/up/down_proj`).
pub fn tensors(a: &Arch) -> Vec<TensorPlan> {
    let s = &a.shape;
    let d = s.d_model;
    let t = "model.";
    let mut v = vec![TensorPlan::copy(names::EMBED, vec![s.d_vocab, d], format!("{t}embed_tokens.weight"))];
    for l in 0..s.n_layers {
        let n = names::BlockNames::of(l);
        let h = |r: &str| format!("{t}layers.{l}.{r}");
        v.push(TensorPlan::copy(&n.ln1.0, vec![d], h("input_layernorm.weight")));
        v.push(TensorPlan::copy(&n.ln2.0, vec![d], h("post_attention_layernorm.weight")));
        v.extend(attn_mlp_tensors(a, l, &h, |name: &str, dh: usize, key: String| TensorPlan::copy(name, vec![dh], key)));
    }
    v.push(TensorPlan::copy(names::LN_FINAL_W, vec![d], format!("{t}norm.weight")));
    v
}

/// Layer `l`'s `self_attn.{q,k,v,o}_proj` (with biases where the arch has them), the q/k norms
/// (made by `qk_norm(name, d_head, key)`) and `mlp.{gate,up,down}_proj`; `h` makes a layer key.
pub(crate) fn attn_mlp_tensors(a: &Arch, l: usize, h: &dyn Fn(&str) -> String, qk_norm: impl Fn(&str, usize, String) -> TensorPlan) -> Vec<TensorPlan> {
    let s = &a.shape;
    let (d, m) = (s.d_model, s.d_mlp);
    let (q_width, kv_width) = (s.n_heads * a.head_dim, a.n_kv_heads * a.head_dim);
    let n = names::BlockNames::of(l);
    let mut v = Vec::new();
    let mut proj = |w: &str, b: &str, d_in: usize, d_out: usize, key: &str, bias: bool| {
        if bias {
            v.extend(TensorPlan::linear_bias(w, b, d_in, d_out, &h(key)));
        } else {
            v.push(TensorPlan::linear(w, d_in, d_out, h(&format!("{key}.weight"))));
        }
    };
    proj(&n.w_q, &n.b_q, d, q_width, "self_attn.q_proj", a.qkv_bias);
    proj(&n.w_k, &n.b_k, d, kv_width, "self_attn.k_proj", a.qkv_bias);
    proj(&n.w_v, &n.b_v, d, kv_width, "self_attn.v_proj", a.qkv_bias);
    proj(&n.w_o, &n.b_o, q_width, d, "self_attn.o_proj", a.attn_out_bias);
    proj(&n.w_gate, &n.b_gate, d, m, "mlp.gate_proj", a.mlp_bias);
    proj(&n.w_in, &n.b_in, d, m, "mlp.up_proj", a.mlp_bias);
    proj(&n.w_out, &n.b_out, m, d, "mlp.down_proj", a.mlp_bias);
    if a.qk_norm {
        v.push(qk_norm(&n.q_norm, a.head_dim, h("self_attn.q_norm.weight")));
        v.push(qk_norm(&n.k_norm, a.head_dim, h("self_attn.k_norm.weight")));
    }
    v
}

/// The Llama block: sequential, pre-RMSNorm (the window, GQA, q/k norm and rotary live in the
/// shared attention).
pub fn block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    ops::sequential_block(g, l, x)
}
