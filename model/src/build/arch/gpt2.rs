//! GPT-2 (`model_type` `gpt2`): learned positions, fused `c_attn` (Conv1D, `[in, out]`), gelu_new,
//! sequential pre-LN blocks, the unembedding tied to `wte` unless `lm_head.weight` differs.

use std::path::Path;

use serde::Deserialize;

use super::{Arch, Family, Pick, TensorPlan, activation, head_dim_of, names, need};
use crate::build::graph::{BlockOut, GraphCtx, ops};
use crate::error::Result;
use crate::source::config::ModelShape;

/// `config.json` of `GPT2LMHeadModel`.
#[derive(Debug, Deserialize)]
pub struct Gpt2Config {
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

/// The internal shape of a GPT-2 config.
pub fn arch(c: Gpt2Config, path: &Path) -> Result<Arch> {
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
    Ok(Arch { activation: activation(path, c.activation_function.as_deref(), "gelu_new")?, ..Arch::base(Family::Gpt2, shape, head_dim) })
}

/// GPT-2's tensors: `c_attn` `[d, 3d]` is cut into `W_Q`, `W_K`, `W_V` by columns.
pub fn tensors(a: &Arch) -> Vec<TensorPlan> {
    let s = &a.shape;
    let (d, m) = (s.d_model, s.d_mlp);
    let t = "transformer.";
    let mut v = vec![
        TensorPlan::copy(names::EMBED, vec![s.d_vocab, d], format!("{t}wte.weight")),
        TensorPlan::copy(names::POS_EMBED, vec![s.n_ctx, d], format!("{t}wpe.weight")),
    ];
    for l in 0..s.n_layers {
        let n = names::BlockNames::of(l);
        let h = |r: &str| format!("{t}h.{l}.{r}");
        v.extend(TensorPlan::norm(&n.ln1, d, &h("ln_1")));
        for (i, (w, b)) in [(&n.w_q, &n.b_q), (&n.w_k, &n.b_k), (&n.w_v, &n.b_v)].into_iter().enumerate() {
            v.push(TensorPlan::picked(w, vec![d, d], h("attn.c_attn.weight"), Pick::Cols(i * d..(i + 1) * d), false));
            v.push(TensorPlan::picked(b, vec![d], h("attn.c_attn.bias"), Pick::rows(i * d..(i + 1) * d), false));
        }
        v.push(TensorPlan::copy(&n.w_o, vec![d, d], h("attn.c_proj.weight")));
        v.push(TensorPlan::copy(&n.b_o, vec![d], h("attn.c_proj.bias")));
        v.extend(TensorPlan::norm(&n.ln2, d, &h("ln_2")));
        v.push(TensorPlan::copy(&n.w_in, vec![d, m], h("mlp.c_fc.weight")));
        v.push(TensorPlan::copy(&n.b_in, vec![m], h("mlp.c_fc.bias")));
        v.push(TensorPlan::copy(&n.w_out, vec![m, d], h("mlp.c_proj.weight")));
        v.push(TensorPlan::copy(&n.b_out, vec![d], h("mlp.c_proj.bias")));
    }
    v.extend(TensorPlan::norm(&names::final_norm(), d, &format!("{t}ln_f")));
    v
}

/// GPT-2's block: sequential, pre-LN.
pub fn block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    ops::sequential_block(g, l, x)
}
