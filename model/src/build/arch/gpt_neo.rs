//! GPT-Neo (`gpt_neo`): learned positions, separate `q/k/v_proj` without bias and without the
//! 1/sqrt(d_head) scaling, global and local attention per `attention_types` with `window_size`,
//! sequential blocks, tied unembedding.

use std::path::Path;

use serde::Deserialize;

use super::{Arch, Family, TensorPlan, activation, head_dim_of, names, need};
use crate::build::graph::{BlockOut, GraphCtx, ops};
use crate::error::{LensError, Result};
use crate::source::config::ModelShape;

/// `config.json` of `GPTNeoForCausalLM`.
#[derive(Debug, Deserialize)]
pub struct GptNeoConfig {
    num_layers: Option<usize>,
    hidden_size: Option<usize>,
    num_heads: Option<usize>,
    intermediate_size: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    window_size: Option<usize>,
    /// Expanded per layer (`["global", "local", …]`), as `GPTNeoConfig` saves it.
    attention_layers: Option<Vec<String>>,
    /// Compact form `[[["global", "local"], 12]]`.
    attention_types: Option<Vec<(Vec<String>, usize)>>,
    tie_word_embeddings: Option<bool>,
}

/// The internal shape of a GPT-Neo config.
pub fn arch(c: GptNeoConfig, path: &Path) -> Result<Arch> {
    let d_model = need(path, c.hidden_size, "hidden_size")?;
    let n_layers = need(path, c.num_layers, "num_layers")?;
    let kinds: Vec<String> = match (c.attention_layers, c.attention_types) {
        (Some(l), _) => l,
        (None, Some(t)) => t.into_iter().flat_map(|(kinds, times)| std::iter::repeat_n(kinds, times).flatten()).collect(),
        (None, None) => vec!["global".into(); n_layers],
    };
    if kinds.len() != n_layers {
        return Err(LensError::bad_file(path, format!("attention types name {} layers, num_layers is {n_layers}", kinds.len())));
    }
    let window = c.window_size.unwrap_or(256);
    let windows = kinds
        .iter()
        .map(|k| match k.as_str() {
            "global" => Ok(None),
            "local" => Ok(Some(window)),
            other => Err(LensError::bad_file(path, format!("attention type {other:?} is not global or local"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let shape = ModelShape {
        n_layers,
        d_model,
        n_heads: need(path, c.num_heads, "num_heads")?,
        d_mlp: c.intermediate_size.unwrap_or(4 * d_model),
        d_vocab: need(path, c.vocab_size, "vocab_size")?,
        n_ctx: need(path, c.max_position_embeddings, "max_position_embeddings")?,
        eps: c.layer_norm_epsilon.unwrap_or(1e-5),
    };
    let head_dim = head_dim_of(path, shape.d_model, shape.n_heads)?;
    Ok(Arch {
        activation: activation(path, c.activation_function.as_deref(), "gelu_new")?,
        attn_scale: 1.0,
        windows,
        qkv_bias: false,
        tie_word_embeddings: c.tie_word_embeddings.unwrap_or(true),
        ..Arch::base(Family::GptNeo, shape, head_dim)
    })
}

/// GPT-Neo's tensors (`nn.Linear` weights are transposed to `[in, out]`).
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
        v.push(TensorPlan::linear(&n.w_q, d, d, h("attn.attention.q_proj.weight")));
        v.push(TensorPlan::linear(&n.w_k, d, d, h("attn.attention.k_proj.weight")));
        v.push(TensorPlan::linear(&n.w_v, d, d, h("attn.attention.v_proj.weight")));
        v.extend(TensorPlan::linear_bias(&n.w_o, &n.b_o, d, d, &h("attn.attention.out_proj")));
        v.extend(TensorPlan::norm(&n.ln2, d, &h("ln_2")));
        v.extend(TensorPlan::linear_bias(&n.w_in, &n.b_in, d, m, &h("mlp.c_fc")));
        v.extend(TensorPlan::linear_bias(&n.w_out, &n.b_out, m, d, &h("mlp.c_proj")));
    }
    v.extend(TensorPlan::norm(&names::final_norm(), d, &format!("{t}ln_f")));
    v
}

/// GPT-Neo's block: sequential, pre-LN; the layer's window is applied by the shared attention.
pub fn block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    ops::sequential_block(g, l, x)
}
