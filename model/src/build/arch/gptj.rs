//! GPT-J (`gptj`): interleaved rotary over the first `rotary_dim` of each head, `q/k/v/out_proj`
//! without biases, a parallel residual where one `ln_1` feeds attention and the MLP, and an untied
//! `lm_head` with a bias.

use std::path::Path;

use serde::Deserialize;

use super::{Arch, Family, Positions, Residual, Rotary, TensorPlan, activation, head_dim_of, names, need};
use crate::build::graph::{BlockOut, GraphCtx, ops};
use crate::error::Result;
use crate::source::config::ModelShape;

/// `config.json` of `GPTJForCausalLM`.
#[derive(Debug, Deserialize)]
pub struct GptjConfig {
    n_layer: Option<usize>,
    n_embd: Option<usize>,
    n_head: Option<usize>,
    n_inner: Option<usize>,
    vocab_size: Option<usize>,
    n_positions: Option<usize>,
    rotary_dim: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    tie_word_embeddings: Option<bool>,
}

/// The internal shape of a GPT-J config.
pub fn arch(c: GptjConfig, path: &Path) -> Result<Arch> {
    let d_model = need(path, c.n_embd, "n_embd")?;
    let n_heads = need(path, c.n_head, "n_head")?;
    let n_layers = need(path, c.n_layer, "n_layer")?;

    let shape = ModelShape {
        n_layers,
        d_model,
        n_heads,
        d_mlp: c.n_inner.unwrap_or(4 * d_model),
        d_vocab: need(path, c.vocab_size, "vocab_size")?,
        n_ctx: need(path, c.n_positions, "n_positions")?,
        eps: c.layer_norm_epsilon.unwrap_or(1e-5),
    };
    let head_dim = head_dim_of(path, shape.d_model, shape.n_heads)?;
    Ok(Arch {
        residual: Residual::Parallel,
        shared_norm: true,
        activation: activation(path, c.activation_function.as_deref(), "gelu_new")?,
        positions: Positions::Rotary(Rotary { dim: c.rotary_dim.unwrap_or(head_dim), base: 10000.0, interleaved: true, llama3: None, linear: None }),
        qkv_bias: false,
        attn_out_bias: false,
        tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
        unembed_bias_key: Some("lm_head.bias"),
        ..Arch::base(Family::Gptj, shape, head_dim)
    })
}

/// GPT-J's tensors (no `ln_2`: the block has one norm).
pub fn tensors(a: &Arch) -> Vec<TensorPlan> {
    let s = &a.shape;
    let (d, m) = (s.d_model, s.d_mlp);
    let t = "transformer.";
    let mut v = vec![TensorPlan::copy(names::EMBED, vec![s.d_vocab, d], format!("{t}wte.weight"))];
    for l in 0..s.n_layers {
        let n = names::BlockNames::of(l);
        let h = |r: &str| format!("{t}h.{l}.{r}");
        v.extend(TensorPlan::norm(&n.ln1, d, &h("ln_1")));
        v.push(TensorPlan::linear(&n.w_q, d, d, h("attn.q_proj.weight")));
        v.push(TensorPlan::linear(&n.w_k, d, d, h("attn.k_proj.weight")));
        v.push(TensorPlan::linear(&n.w_v, d, d, h("attn.v_proj.weight")));
        v.push(TensorPlan::linear(&n.w_o, d, d, h("attn.out_proj.weight")));
        v.extend(TensorPlan::linear_bias(&n.w_in, &n.b_in, d, m, &h("mlp.fc_in")));
        v.extend(TensorPlan::linear_bias(&n.w_out, &n.b_out, m, d, &h("mlp.fc_out")));
    }
    v.extend(TensorPlan::norm(&names::final_norm(), d, &format!("{t}ln_f")));
    v
}

/// GPT-J's block: parallel, one shared norm.
pub fn block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    ops::parallel_block(g, l, x)
}
