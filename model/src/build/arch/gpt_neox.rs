//! GPT-NeoX / Pythia (`gpt_neox`): half-split rotary over the first `rotary_pct` of each head,
//! `query_key_value` fused per head (`[heads, 3, d_head]` rows), parallel residual
//! (`use_parallel_residual`; the sequential form too), untied `embed_out`, and a vocabulary
//! padded beyond the tokenizer's (the padded rows take part in the softmax, as in the model).

use std::path::Path;

use serde::Deserialize;

use super::{Arch, Family, Pick, Positions, Residual, Rotary, TensorPlan, activation, head_dim_of, names, need};
use crate::build::graph::{BlockOut, GraphCtx, ops};
use crate::error::Result;
use crate::source::config::ModelShape;

/// `rope_parameters` as newer `transformers` versions save them.
#[derive(Debug, Default, Deserialize)]
pub struct RopeParameters {
    rope_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
}

/// `config.json` of `GPTNeoXForCausalLM`.
#[derive(Debug, Deserialize)]
pub struct GptNeoxConfig {
    num_hidden_layers: Option<usize>,
    hidden_size: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    #[serde(alias = "partial_rotary_factor")]
    rotary_pct: Option<f64>,
    #[serde(alias = "rope_theta")]
    rotary_emb_base: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    use_parallel_residual: Option<bool>,
    attention_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
}

/// The internal shape of a GPT-NeoX config.
pub fn arch(c: GptNeoxConfig, path: &Path) -> Result<Arch> {
    let d_model = need(path, c.hidden_size, "hidden_size")?;
    let n_heads = need(path, c.num_attention_heads, "num_attention_heads")?;
    let n_layers = need(path, c.num_hidden_layers, "num_hidden_layers")?;

    let rope = c.rope_parameters.unwrap_or_default();
    let pct = rope.partial_rotary_factor.or(c.rotary_pct).unwrap_or(0.25);
    let base = rope.rope_theta.or(c.rotary_emb_base).unwrap_or(10000.0);
    let shape = ModelShape {
        n_layers,
        d_model,
        n_heads,
        d_mlp: c.intermediate_size.unwrap_or(4 * d_model),
        d_vocab: need(path, c.vocab_size, "vocab_size")?,
        n_ctx: need(path, c.max_position_embeddings, "max_position_embeddings")?,
        eps: c.layer_norm_eps.unwrap_or(1e-5),
    };
    let head_dim = head_dim_of(path, shape.d_model, shape.n_heads)?;
    let bias = c.attention_bias.unwrap_or(true);
    Ok(Arch {
        residual: if c.use_parallel_residual.unwrap_or(true) { Residual::Parallel } else { Residual::Sequential },
        activation: activation(path, c.hidden_act.as_deref(), "gelu")?,
        // As transformers: int(head_size * rotary_pct).
        positions: Positions::Rotary(Rotary { dim: (head_dim as f64 * pct) as usize, base, interleaved: false, llama3: None, linear: None }),
        qkv_bias: bias,
        attn_out_bias: bias,
        tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
        unembed_key: "embed_out.weight",
        ..Arch::base(Family::GptNeox, shape, head_dim)
    })
}

/// GPT-NeoX's tensors: `query_key_value` `[3d, d]` holds, per head, its query, key and value rows.
pub fn tensors(a: &Arch) -> Vec<TensorPlan> {
    let s = &a.shape;
    let (d, m, dh) = (s.d_model, s.d_mlp, a.d_head());
    let t = "gpt_neox.";
    let mut v = vec![TensorPlan::copy(names::EMBED, vec![s.d_vocab, d], format!("{t}embed_in.weight"))];
    for l in 0..s.n_layers {
        let n = names::BlockNames::of(l);
        let h = |r: &str| format!("{t}layers.{l}.{r}");
        v.extend(TensorPlan::norm(&n.ln1, d, &h("input_layernorm")));
        for (part, (w, b)) in [(&n.w_q, &n.b_q), (&n.w_k, &n.b_k), (&n.w_v, &n.b_v)].into_iter().enumerate() {
            let rows: Vec<_> = (0..s.n_heads).map(|head| (head * 3 + part) * dh..(head * 3 + part + 1) * dh).collect();
            v.push(TensorPlan::picked(w, vec![d, d], h("attention.query_key_value.weight"), Pick::Rows(rows.clone()), true));
            if a.qkv_bias {
                v.push(TensorPlan::picked(b, vec![d], h("attention.query_key_value.bias"), Pick::Rows(rows), false));
            }
        }
        v.push(TensorPlan::linear(&n.w_o, d, d, h("attention.dense.weight")));
        if a.attn_out_bias {
            v.push(TensorPlan::copy(&n.b_o, vec![d], h("attention.dense.bias")));
        }
        v.extend(TensorPlan::norm(&n.ln2, d, &h("post_attention_layernorm")));
        v.extend(TensorPlan::linear_bias(&n.w_in, &n.b_in, d, m, &h("mlp.dense_h_to_4h")));
        v.extend(TensorPlan::linear_bias(&n.w_out, &n.b_out, m, d, &h("mlp.dense_4h_to_h")));
    }
    v.extend(TensorPlan::norm(&names::final_norm(), d, &format!("{t}final_layer_norm")));
    v
}

/// GPT-NeoX's block: parallel (`x + attn(ln1 x) + mlp(ln2 x)`) or sequential.
pub fn block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    match g.arch.residual {
        Residual::Parallel => ops::parallel_block(g, l, x),
        Residual::Sequential => ops::sequential_block(g, l, x),
    }
}
