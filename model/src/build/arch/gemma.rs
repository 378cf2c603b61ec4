//! Gemma 2 (`gemma2`) and Gemma 3 text (`gemma3_text`): RMSNorm with `(1 + w)` (stored as the
//! multiplier by the converter), embedding × sqrt(d_model), pre- and post-norms around attention
//! and the MLP (a sub-block's output is taken after its post-norm), GeGLU (`gelu_pytorch_tanh`),
//! `query_pre_attn_scalar`, sliding and global layers (`layer_types` / `sliding_window`; Gemma 3's
//! local RoPE base), attention and final logit softcapping (the lens decoder caps as the model
//! does), Gemma 3's q/k norms. Always a tied unembedding.

use std::path::Path;

use serde::Deserialize;

use super::llama::RopeParams;
use super::{Arch, Family, Norm, Positions, Rotary, TensorPlan, activation, names, need};
use crate::build::graph::{BlockOut, GraphCtx, ops};
use crate::error::{LensError, Result};
use crate::source::config::ModelShape;

/// `config.json` of `Gemma2ForCausalLM` / `Gemma3ForCausalLM` (text).
#[derive(Debug, Deserialize)]
pub struct GemmaConfig {
    num_hidden_layers: Option<usize>,
    hidden_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    intermediate_size: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    layer_types: Option<Vec<String>>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    /// transformers 5: a dict, or per layer type (`full_attention` / `sliding_attention`).
    rope_parameters: Option<serde_json::Value>,
    /// transformers 4 (the hub's Gemma 3 configs): the global layers' scaling (`linear`).
    rope_scaling: Option<RopeParams>,
    /// transformers 4 (Gemma 3): every `n`-th layer is global, the others slide, when
    /// `layer_types` is absent. transformers 5 writes `_sliding_window_pattern` (read as this).
    sliding_window_pattern: Option<usize>,
}

/// Where an image-text Gemma 3 checkpoint keeps its text model, in place of `model.`.
pub const MULTIMODAL_PREFIXES: &[&str] = &["language_model.model.", "model.language_model."];

/// `config` with the defaults of transformers' `Gemma2Config` / `Gemma3TextConfig` for every key
/// it does not name (a key set to `null` stays `null`, as in transformers). The hub's image-text
/// Gemma 3 configs name only what differs from these (gemma-3-4b-pt's `text_config` has six
/// keys).
pub fn with_defaults(family: Family, config: serde_json::Value) -> serde_json::Value {
    let defaults = match family {
        Family::Gemma2 => serde_json::json!({
            "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "query_pre_attn_scalar": 256,
            "sliding_window": 4096, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0
        }),
        _ => serde_json::json!({
            "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
            "query_pre_attn_scalar": 256, "sliding_window": 4096, "sliding_window_pattern": 6,
            "final_logit_softcapping": null, "attn_logit_softcapping": null
        }),
    };
    let (serde_json::Value::Object(mut merged), serde_json::Value::Object(mut given)) = (defaults, config.clone()) else { return config };
    if let Some(p) = given.remove("_sliding_window_pattern") {
        given.entry("sliding_window_pattern").or_insert(p);
    }
    // transformers 5 configs carry their rope in `rope_parameters`: the 4.x keys' defaults must not
    // compete with it.
    if given.contains_key("rope_parameters") {
        merged.remove("rope_theta");
        merged.remove("rope_local_base_freq");
    }
    merged.extend(given);
    serde_json::Value::Object(merged)
}

fn rope_base(v: &serde_json::Value) -> Option<f64> {
    serde_json::from_value::<RopeParams>(v.clone()).ok().and_then(|r| r.theta())
}

/// The internal shape of a Gemma 2 / Gemma 3 text config.
pub fn arch(family: Family, c: GemmaConfig, path: &Path) -> Result<Arch> {
    let d_model = need(path, c.hidden_size, "hidden_size")?;
    let n_heads = need(path, c.num_attention_heads, "num_attention_heads")?;
    let n_layers = need(path, c.num_hidden_layers, "num_hidden_layers")?;
    let head_dim = need(path, c.head_dim, "head_dim")?;
    let window = c.sliding_window.filter(|&w| w > 0);
    // Without `layer_types`: every `pattern`-th layer is global (Gemma 2: 2, even layers slide;
    // Gemma 3: `sliding_window_pattern`, 6), as transformers derives them.
    let pattern = match family {
        Family::Gemma2 => 2,
        _ => c.sliding_window_pattern.unwrap_or(6),
    };
    if pattern == 0 {
        return Err(LensError::bad_file(path, "sliding_window_pattern is 0"));
    }
    let kinds: Vec<String> = match c.layer_types {
        Some(k) => k,
        None => (0..n_layers).map(|l| if (l + 1) % pattern != 0 { "sliding_attention".into() } else { "full_attention".into() }).collect(),
    };
    if kinds.len() != n_layers {
        return Err(LensError::bad_file(path, format!("layer_types names {} layers, num_hidden_layers is {n_layers}", kinds.len())));
    }
    let windows = kinds
        .iter()
        .map(|k| match (k.as_str(), window) {
            ("sliding_attention", Some(w)) => Ok(Some(w)),
            ("sliding_attention", None) => Err(LensError::bad_file(path, "a sliding layer without sliding_window")),
            ("full_attention", _) => Ok(None),
            (other, _) => Err(LensError::bad_file(path, format!("layer type {other:?} is not sliding_attention or full_attention"))),
        })
        .collect::<Result<Vec<_>>>()?;
    // RoPE bases: transformers 5 keys them by layer type; older configs use rope_theta and
    // rope_local_base_freq.
    // The global layers' scaling: `rope_scaling` (4.x) or the full-attention `rope_parameters`.
    let (mut global, mut local) = (c.rope_theta, c.rope_local_base_freq);
    let mut global_params = c.rope_scaling.clone();
    if let Some(p) = &c.rope_parameters {
        if let Some(f) = p.get("full_attention") {
            global = rope_base(f).or(global);
            local = p.get("sliding_attention").and_then(rope_base).or(local);
            global_params = serde_json::from_value(f.clone()).ok();
            if let Some(sl) = p.get("sliding_attention").and_then(|v| serde_json::from_value::<RopeParams>(v.clone()).ok())
                && super::llama::scaling(&sl, path)? != (None, None)
            {
                return Err(LensError::bad_file(path, "scaled RoPE on the sliding layers is not supported (only on the global layers, as Gemma 3 uses it)"));
            }
        } else {
            global = rope_base(p).or(global);
            global_params = serde_json::from_value(p.clone()).ok();
        }
    }
    let (llama3, linear) = match &global_params {
        Some(p) => super::llama::scaling(p, path)?,
        None => (None, None),
    };
    let global = global.unwrap_or(10000.0);
    let shape = ModelShape {
        n_layers,
        d_model,
        n_heads,
        d_mlp: need(path, c.intermediate_size, "intermediate_size")?,
        d_vocab: need(path, c.vocab_size, "vocab_size")?,
        n_ctx: need(path, c.max_position_embeddings, "max_position_embeddings")?,
        eps: c.rms_norm_eps.unwrap_or(1e-6),
    };
    let gemma3 = family == Family::Gemma3;
    Ok(Arch {
        norm: Norm::RmsNorm,
        gated_mlp: true,
        mlp_bias: false,
        n_kv_heads: c.num_key_value_heads.unwrap_or(n_heads),
        qk_norm: gemma3,
        post_norms: true,
        attn_softcap: c.attn_logit_softcapping.filter(|&x| x > 0.0),
        final_softcap: c.final_logit_softcapping.filter(|&x| x > 0.0),
        // Gemma 3's sliding layers: their own base and never the global layers' scaling.
        local_rope_base: if gemma3 { Some(local.unwrap_or(global)) } else { local.filter(|&l| l != global) },
        activation: activation(path, c.hidden_activation.as_deref().or(c.hidden_act.as_deref()), "gelu_pytorch_tanh")?,
        positions: Positions::Rotary(Rotary { dim: head_dim, base: global, interleaved: false, llama3, linear }),
        embed_scale: Some((d_model as f64).sqrt()),
        attn_scale: c.query_pre_attn_scalar.unwrap_or(head_dim as f64).powf(-0.5),
        windows,
        qkv_bias: false,
        attn_out_bias: false,
        ..Arch::base(family, shape, head_dim)
    })
}

/// Gemma's tensors: the Llama names plus `pre_feedforward_layernorm` and the two post-norms; every
/// norm weight is stored as `1 + w`.
pub fn tensors(a: &Arch) -> Vec<TensorPlan> {
    let s = &a.shape;
    let d = s.d_model;
    let t = "model.";
    let mut v = vec![TensorPlan::copy(names::EMBED, vec![s.d_vocab, d], format!("{t}embed_tokens.weight"))];
    for l in 0..s.n_layers {
        let n = names::BlockNames::of(l);
        let h = |r: &str| format!("{t}layers.{l}.{r}");
        v.push(TensorPlan::plus_one(&n.ln1.0, d, h("input_layernorm.weight")));
        v.push(TensorPlan::plus_one(&n.ln1_post.0, d, h("post_attention_layernorm.weight")));
        v.push(TensorPlan::plus_one(&n.ln2.0, d, h("pre_feedforward_layernorm.weight")));
        v.push(TensorPlan::plus_one(&n.ln2_post.0, d, h("post_feedforward_layernorm.weight")));
        v.extend(super::llama::attn_mlp_tensors(a, l, &h, |name: &str, dh: usize, key: String| TensorPlan::plus_one(name, dh, key)));
    }
    v.push(TensorPlan::plus_one(names::LN_FINAL_W, d, format!("{t}norm.weight")));
    v
}

/// Gemma's block: sequential, with post-norms inside each branch.
pub fn block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    ops::sequential_block(g, l, x)
}
