//! CTRL (`ctrl`): sinusoidal positions (computed by the converter, as `CTRLModel` does), token
//! embedding × sqrt(d_model), ReLU MLP, sequential pre-LN blocks, a final LayerNorm, and `lm_head`
//! with a bias on the tied weight.

use std::path::Path;

use serde::Deserialize;

use super::{Activation, Arch, Family, Positions, Source, TensorPlan, head_dim_of, names, need};
use crate::build::graph::{BlockOut, GraphCtx, ops};
use crate::error::Result;
use crate::source::config::ModelShape;

/// `config.json` of `CTRLLMHeadModel`.
#[derive(Debug, Deserialize)]
pub struct CtrlConfig {
    n_layer: Option<usize>,
    n_embd: Option<usize>,
    n_head: Option<usize>,
    dff: Option<usize>,
    vocab_size: Option<usize>,
    n_positions: Option<usize>,
    /// The training context, where the config gives it (CTRL: 512, with `n_positions` 50000).
    n_ctx: Option<usize>,
    layer_norm_epsilon: Option<f64>,
}

/// The internal shape of a CTRL config. The context is `min(n_positions, n_ctx)`: the released
/// CTRL's 50000 positions would be a 256 MB table for a model trained on 512.
pub fn arch(c: CtrlConfig, path: &Path) -> Result<Arch> {
    let d_model = need(path, c.n_embd, "n_embd")?;
    let n_heads = need(path, c.n_head, "n_head")?;
    let n_layers = need(path, c.n_layer, "n_layer")?;
    let n_positions = need(path, c.n_positions, "n_positions")?;
    let shape = ModelShape {
        n_layers,
        d_model,
        n_heads,
        d_mlp: need(path, c.dff, "dff")?,
        d_vocab: need(path, c.vocab_size, "vocab_size")?,
        n_ctx: c.n_ctx.filter(|&n| n > 0).map_or(n_positions, |n| n.min(n_positions)),
        eps: c.layer_norm_epsilon.unwrap_or(1e-6),
    };
    let head_dim = head_dim_of(path, d_model, n_heads)?;
    Ok(Arch {
        activation: Activation::Relu,
        positions: Positions::Sinusoidal,
        // transformers' CTRL builds its block norms with eps 1e-6 whatever the config says.
        block_eps: 1e-6,
        embed_scale: Some((d_model as f64).sqrt()),
        unembed_bias_key: Some("lm_head.bias"),
        ..Arch::base(Family::Ctrl, shape, head_dim)
    })
}

/// CTRL's tensors; the position table is computed, not read.
pub fn tensors(a: &Arch) -> Vec<TensorPlan> {
    let s = &a.shape;
    let (d, m) = (s.d_model, s.d_mlp);
    let t = "transformer.";
    let mut v = vec![
        TensorPlan::copy(names::EMBED, vec![s.d_vocab, d], format!("{t}w.weight")),
        TensorPlan { name: names::POS_EMBED.into(), dims: vec![s.n_ctx, d], source: Source::Sinusoidal },
    ];
    for l in 0..s.n_layers {
        let n = names::BlockNames::of(l);
        let h = |r: &str| format!("{t}h.{l}.{r}");
        v.extend(TensorPlan::norm(&n.ln1, d, &h("layernorm1")));
        for (w, b, key) in [(&n.w_q, &n.b_q, "Wq"), (&n.w_k, &n.b_k, "Wk"), (&n.w_v, &n.b_v, "Wv"), (&n.w_o, &n.b_o, "dense")] {
            v.push(TensorPlan::linear(w, d, d, h(&format!("multi_head_attention.{key}.weight"))));
            v.push(TensorPlan::copy(b, vec![d], h(&format!("multi_head_attention.{key}.bias"))));
        }
        v.extend(TensorPlan::norm(&n.ln2, d, &h("layernorm2")));
        v.extend(TensorPlan::linear_bias(&n.w_in, &n.b_in, d, m, &h("ffn.0")));
        v.extend(TensorPlan::linear_bias(&n.w_out, &n.b_out, m, d, &h("ffn.2")));
    }
    v.extend(TensorPlan::norm(&names::final_norm(), d, &format!("{t}layernorm")));
    v
}

/// CTRL's sinusoidal table `[n_ctx, d_model]`, as `transformers`' `positional_encoding`: angle
/// `pos / 10000^(2⌊i/2⌋/d)`; the sines of the even columns, then the cosines of the odd ones.
pub fn sinusoidal_table(n_ctx: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n_ctx * d);
    for pos in 0..n_ctx {
        let angle = |i: usize| pos as f64 / 10000f64.powf((2 * (i / 2)) as f64 / d as f64);
        out.extend((0..d).step_by(2).map(|i| angle(i).sin() as f32));
        out.extend((1..d).step_by(2).map(|i| angle(i).cos() as f32));
    }
    out
}

/// CTRL's block: sequential, pre-LN.
pub fn block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    ops::sequential_block(g, l, x)
}
