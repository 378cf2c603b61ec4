//! Shared graph pieces, written once: embedding and positions, LayerNorm, linear layers,
//! attention with its options (scale, causal or local window, rotary full or partial, half-split
//! or interleaved), activations, the MLP, and the sequential and parallel blocks.

use super::{BlockOut, GraphCtx, MS_DOMAIN, attr_float, attr_int, attr_ints, past_name, present_name};
use crate::build::names;
use crate::build::quant::{CODES_SUFFIX, SCALES_SUFFIX, ZERO_POINTS_SUFFIX};
use crate::build::spec::{Activation, Norm, Positions, Residual};

/// Token embedding (scaled if the family scales it) plus the position table where there is one:
/// `[1, pos, d_model]`.
pub fn embed(g: &mut GraphCtx<'_>, input_ids: &str) -> String {
    let w_e = g.w(names::EMBED);
    let mut x = g.b.op("Gather", &[&w_e, input_ids], None, vec![attr_int("axis", 0)]);
    if g.is_half(names::EMBED) {
        // Cast the gathered rows, not the table: the table stays f16 in memory.
        x = g.b.op("Cast", &[&x], None, vec![attr_int("to", i64::from(crate::build::onnx::DT_FLOAT))]);
    }
    if let Some(s) = g.arch.embed_scale {
        let c = g.b.const_f32("embed_scale", s as f32);
        x = g.b.op("Mul", &[&x, &c], None, vec![]);
    }
    if matches!(g.arch.positions, Positions::Learned | Positions::Sinusoidal) {
        let w_pos = g.w(names::POS_EMBED);
        let range = g.range.clone();
        let pe = g.b.op("Gather", &[&w_pos, &range], None, vec![attr_int("axis", 0)]);
        x = g.b.op("Add", &[&x, &pe], None, vec![]);
    }
    x
}

/// LayerNorm over the last axis with the row's own statistics (the bias is optional).
pub fn layer_norm(g: &mut GraphCtx<'_>, x: &str, w: &str, b: Option<&str>, eps: f64) -> String {
    let eps = eps as f32;
    let w = g.w(w);
    let mut inputs = vec![x.to_string(), w];
    if let Some(b) = b {
        inputs.push(g.w(b));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    g.b.op("LayerNormalization", &refs, None, vec![attr_int("axis", -1), attr_float("epsilon", eps)])
}

/// The family's norm over the last axis: LayerNorm (weight and bias `names`) or RMSNorm
/// (weight only; `x / sqrt(mean(x²) + eps) · w`, as transformers computes it).
pub fn norm(g: &mut GraphCtx<'_>, x: &str, names: &(String, String), eps: f64) -> String {
    norm_to(g, x, names, eps, None)
}

/// [`norm`], its result named `out`.
fn norm_to(g: &mut GraphCtx<'_>, x: &str, names: &(String, String), eps: f64, out: Option<&str>) -> String {
    match g.arch.norm {
        Norm::LayerNorm => {
            let y = layer_norm(g, x, &names.0, Some(&names.1), eps);
            match out {
                Some(o) => g.b.op("Identity", &[&y], Some(o), vec![]),
                None => y,
            }
        }
        Norm::RmsNorm => rms_norm_to(g, x, &names.0, eps, out),
    }
}

/// `cap · tanh(x / cap)` (Gemma 2's soft-capping of attention scores and logits).
pub fn softcap(g: &mut GraphCtx<'_>, x: &str, cap: f64) -> String {
    let c = g.b.const_f32("softcap", cap as f32);
    let d = g.b.op("Div", &[x, &c], None, vec![]);
    let t = g.b.op("Tanh", &[&d], None, vec![]);
    g.b.op("Mul", &[&t, &c], None, vec![])
}

/// RMSNorm over the last axis: `x / sqrt(mean(x²) + eps) · w`.
pub fn rms_norm(g: &mut GraphCtx<'_>, x: &str, w: &str, eps: f64) -> String {
    rms_norm_to(g, x, w, eps, None)
}

fn rms_norm_to(g: &mut GraphCtx<'_>, x: &str, w: &str, eps: f64, out: Option<&str>) -> String {
    let w = g.w(w);
    let sq = g.b.op("Mul", &[x, x], None, vec![]);
    let ms = g.b.op("ReduceMean", &[&sq], None, vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
    let e = g.b.const_f32("rms_eps", eps as f32);
    let ms = g.b.op("Add", &[&ms, &e], None, vec![]);
    let rms = g.b.op("Sqrt", &[&ms], None, vec![]);
    let y = g.b.op("Div", &[x, &rms], None, vec![]);
    g.b.op("Mul", &[&y, &w], out, vec![])
}

/// `x · W (+ b)` with `W` stored `[in, out]`, its result named `out` (or a fresh name). A
/// matrix the bundle stores as codes is multiplied by `MatMulNBits` (com.microsoft).
pub fn linear(g: &mut GraphCtx<'_>, x: &str, w: &str, b: Option<&str>, out: Option<&str>) -> String {
    let product_out = if b.is_some() { None } else { out };
    let y = match g.quantized(w) {
        Some(q) => {
            let w = g.w(w);
            let (codes, scales, zp) = (format!("{w}{CODES_SUFFIX}"), format!("{w}{SCALES_SUFFIX}"), format!("{w}{ZERO_POINTS_SUFFIX}"));
            let mut inputs = vec![x, codes.as_str(), scales.as_str()];
            if !q.spec.symmetric {
                inputs.push(zp.as_str());
            }
            let attrs = vec![
                attr_int("K", q.k as i64),
                attr_int("N", q.n as i64),
                attr_int("bits", i64::from(q.spec.bits)),
                attr_int("block_size", q.spec.block_size as i64),
                attr_int("accuracy_level", q.spec.accuracy_level),
            ];
            g.b.op_in(MS_DOMAIN, "MatMulNBits", &inputs, product_out, attrs)
        }
        None => {
            let w = g.w(w);
            g.b.op("MatMul", &[x, &w], product_out, vec![])
        }
    };
    match b {
        Some(b) => {
            let b = g.w(b);
            g.b.op("Add", &[&y, &b], out, vec![])
        }
        None => y,
    }
}

/// `[batch, pos, heads·d_head]` -> `[batch, heads, pos, d_head]` (`kv`: the key/value heads).
fn split_heads(g: &mut GraphCtx<'_>, x: &str, kv: bool) -> String {
    let shape = if kv { g.kv_heads_shape.clone() } else { g.heads_shape.clone() };
    let r = g.b.op("Reshape", &[x, &shape], None, vec![]);
    g.b.op("Transpose", &[&r], None, vec![attr_ints("perm", &[0, 2, 1, 3])])
}

/// Grouped-query attention: each key/value head serves `n_heads / n_kv_heads` query heads, in
/// order (`transformers`' `repeat_kv`) // [batch, kv, pos, d_head] -> [batch, heads, pos, d_head]
fn repeat_kv(g: &mut GraphCtx<'_>, x: &str) -> String {
    let groups = g.arch.shape.n_heads / g.arch.n_kv_heads.max(1);
    if groups <= 1 {
        return x.to_string();
    }
    let ax2 = g.b.const_i64("ax2", &[1], &[2]);
    let u = g.b.op("Unsqueeze", &[x, &ax2], None, vec![]);
    let copies: Vec<&str> = std::iter::repeat_n(u.as_str(), groups).collect();
    let rep = g.b.op("Concat", &copies, None, vec![attr_int("axis", 2)]);
    let shape = g.b.const_i64("rep_shape", &[4], &[0, g.arch.shape.n_heads as i64, -1, g.arch.d_head() as i64]);
    g.b.op("Reshape", &[&rep, &shape], None, vec![])
}

/// Rotary embedding of `x` `[batch, heads, pos, d_head]` over its first `dim` features (layer `l`).
fn rotate(g: &mut GraphCtx<'_>, x: &str, l: usize) -> String {
    let Positions::Rotary(r) = g.arch.positions else { return x.to_string() };
    let Some((cos, sin)) = g.rope(l) else { return x.to_string() };
    let dh = g.arch.d_head() as i64;
    let (rot, half) = (r.dim as i64, (r.dim / 2) as i64);
    let (x_rot, x_pass) = if rot < dh {
        let split = g.b.const_i64("rot_split", &[2], &[rot, dh - rot]);
        let [a, p] = g.b.op_multi("Split", &[x, &split], vec![attr_int("axis", -1)]);
        (a, Some(p))
    } else {
        (x.to_string(), None)
    };
    let rotated = if r.interleaved {
        // GPT-J: pairs (2i, 2i+1) rotate by the angle of frequency i.
        let pairs_shape = g.b.const_i64("pairs_shape", &[5], &[0, 0, 0, half, 2]);
        let pairs = g.b.op("Reshape", &[&x_rot, &pairs_shape], None, vec![]);
        let one_one = g.b.const_i64("split11", &[2], &[1, 1]);
        let [even, odd] = g.b.op_multi("Split", &[&pairs, &one_one], vec![attr_int("axis", -1)]);
        let new_even = rot_pair(g, &even, &odd, &cos, &sin, false);
        let new_odd = rot_pair(g, &odd, &even, &cos, &sin, true);
        let joined = g.b.op("Concat", &[&new_even, &new_odd], None, vec![attr_int("axis", -1)]);
        let back = g.b.const_i64("rot_shape", &[4], &[0, 0, 0, rot]);
        g.b.op("Reshape", &[&joined, &back], None, vec![])
    } else {
        // GPT-NeoX: feature i rotates with feature i + dim/2.
        let halves = g.b.const_i64("split_half", &[2], &[half, half]);
        let [x1, x2] = g.b.op_multi("Split", &[&x_rot, &halves], vec![attr_int("axis", -1)]);
        let o1 = rot_pair(g, &x1, &x2, &cos, &sin, false);
        let o2 = rot_pair(g, &x2, &x1, &cos, &sin, true);
        g.b.op("Concat", &[&o1, &o2], None, vec![attr_int("axis", -1)])
    };
    match x_pass {
        Some(p) => g.b.op("Concat", &[&rotated, &p], None, vec![attr_int("axis", -1)]),
        None => rotated,
    }
}

/// `a·cos − b·sin` (`plus` false) or `a·cos + b·sin` (`plus` true).
fn rot_pair(g: &mut GraphCtx<'_>, a: &str, b: &str, cos: &str, sin: &str, plus: bool) -> String {
    let ac = g.b.op("Mul", &[a, cos], None, vec![]);
    let bs = g.b.op("Mul", &[b, sin], None, vec![]);
    g.b.op(if plus { "Add" } else { "Sub" }, &[&ac, &bs], None, vec![])
}

/// With a key/value cache: the cached keys (values) of layer `l` followed by `x`'s, output as
/// [`present_name`] // [batch, kv, pos, d_head] -> [batch, kv, past + pos, d_head]
fn cached(g: &mut GraphCtx<'_>, l: usize, kind: &str, x: &str) -> String {
    if !g.cache {
        return x.to_string();
    }
    let past = past_name(l, kind);
    let present = g.scoped(present_name(l, kind));
    g.b.op("Concat", &[&past, x], Some(&present), vec![attr_int("axis", 2)])
}

/// Multi-head attention of layer `l` on the normalised input `x` `[batch, pos, d_model]`:
/// projections, rotary (if any), scaled scores, the layer's causal or local mask, softmax,
/// values, output projection (named `out`).
pub fn attention(g: &mut GraphCtx<'_>, l: usize, x: &str, out: Option<&str>) -> String {
    let n = names::BlockNames::of(l);
    let arch = g.arch;
    let qkv_bias = |b: &str| arch.qkv_bias.then(|| b.to_string());
    let q = linear(g, x, &n.w_q, qkv_bias(&n.b_q).as_deref(), None);
    let k = linear(g, x, &n.w_k, qkv_bias(&n.b_k).as_deref(), None);
    let v = linear(g, x, &n.w_v, qkv_bias(&n.b_v).as_deref(), None);
    let gqa = arch.n_kv_heads != arch.shape.n_heads;
    let mut q = split_heads(g, &q, false);
    let v = split_heads(g, &v, true);
    let v = cached(g, l, "value", &v);
    let v = repeat_kv(g, &v);
    if arch.qk_norm {
        q = rms_norm(g, &q, &n.q_norm, arch.block_eps);
    }
    let q = rotate(g, &q, l);
    // Kᵀ `[batch, heads, d_head, pos]`: one transpose from the projection when nothing else applies.
    let kt = if matches!(arch.positions, Positions::Rotary(_)) || gqa || arch.qk_norm || g.cache {
        let mut k = split_heads(g, &k, true);
        if arch.qk_norm {
            k = rms_norm(g, &k, &n.k_norm, arch.block_eps);
        }
        let k = rotate(g, &k, l);
        let k = cached(g, l, "key", &k);
        let k = repeat_kv(g, &k);
        g.b.op("Transpose", &[&k], None, vec![attr_ints("perm", &[0, 1, 3, 2])])
    } else {
        let shape = g.heads_shape.clone();
        let r = g.b.op("Reshape", &[&k, &shape], None, vec![]);
        g.b.op("Transpose", &[&r], None, vec![attr_ints("perm", &[0, 2, 3, 1])])
    };
    let mut scores = g.b.op("MatMul", &[&q, &kt], None, vec![]);
    if arch.attn_scale != 1.0 {
        let c = g.b.const_f32("attn_scale", arch.attn_scale as f32);
        scores = g.b.op("Mul", &[&scores, &c], None, vec![]);
    }
    if let Some(cap) = arch.attn_softcap {
        scores = softcap(g, &scores, cap);
    }
    let mask = g.mask(arch.windows.get(l).copied().flatten());
    let neg = g.b.const_f32("neg_big", f32::MIN);
    let scores = g.b.op("Where", &[&mask, &neg, &scores], None, vec![]);
    let probs = g.b.op("Softmax", &[&scores], None, vec![attr_int("axis", -1)]);
    let ctx = g.b.op("MatMul", &[&probs, &v], None, vec![]);
    let ctx = g.b.op("Transpose", &[&ctx], None, vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let shape = g.attn_shape.clone();
    let ctx = g.b.op("Reshape", &[&ctx, &shape], None, vec![]);
    linear(g, &ctx, &n.w_o, arch.attn_out_bias.then_some(n.b_o.as_str()), out)
}

/// The family's activation.
pub fn activation(g: &mut GraphCtx<'_>, x: &str) -> String {
    match g.arch.activation {
        Activation::Relu => g.b.op("Relu", &[x], None, vec![]),
        Activation::Silu => {
            let s = g.b.op("Sigmoid", &[x], None, vec![]);
            g.b.op("Mul", &[x, &s], None, vec![])
        }
        Activation::GeluTanh => {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let c_k = g.b.const_f32("gelu_k", 0.044715);
            let c_s = g.b.const_f32("gelu_s", (2.0f64 / std::f64::consts::PI).sqrt() as f32);
            let x2 = g.b.op("Mul", &[x, x], None, vec![]);
            let x3 = g.b.op("Mul", &[&x2, x], None, vec![]);
            let kx3 = g.b.op("Mul", &[&x3, &c_k], None, vec![]);
            let inner = g.b.op("Add", &[x, &kx3], None, vec![]);
            let inner = g.b.op("Mul", &[&inner, &c_s], None, vec![]);
            let th = g.b.op("Tanh", &[&inner], None, vec![]);
            half_x_times_one_plus(g, x, &th)
        }
        Activation::GeluErf => {
            // 0.5 x (1 + erf(x / sqrt 2))
            let c = g.b.const_f32("inv_sqrt2", std::f64::consts::FRAC_1_SQRT_2 as f32);
            let xs = g.b.op("Mul", &[x, &c], None, vec![]);
            let e = g.b.op("Erf", &[&xs], None, vec![]);
            half_x_times_one_plus(g, x, &e)
        }
    }
}

fn half_x_times_one_plus(g: &mut GraphCtx<'_>, x: &str, t: &str) -> String {
    let c_one = g.b.const_f32("fone", 1.0);
    let c_half = g.b.const_f32("half", 0.5);
    let t1 = g.b.op("Add", &[t, &c_one], None, vec![]);
    let hx = g.b.op("Mul", &[x, &c_half], None, vec![]);
    g.b.op("Mul", &[&hx, &t1], None, vec![])
}

/// The MLP of layer `l` on the normalised input `x`, its output named `out`: `act(x·W_in)·W_out`,
/// or gated (SwiGLU) `(act(x·W_gate) ⊙ x·W_in)·W_out`.
pub fn mlp(g: &mut GraphCtx<'_>, l: usize, x: &str, out: Option<&str>) -> String {
    let n = names::BlockNames::of(l);
    let bias = g.arch.mlp_bias;
    let h = linear(g, x, &n.w_in, bias.then_some(n.b_in.as_str()), None);
    let a = if g.arch.gated_mlp {
        let gate = linear(g, x, &n.w_gate, bias.then_some(n.b_gate.as_str()), None);
        let act = activation(g, &gate);
        g.b.op("Mul", &[&act, &h], None, vec![])
    } else {
        activation(g, &h)
    };
    linear(g, &a, &n.w_out, bias.then_some(n.b_out.as_str()), out)
}

/// The norm that feeds layer `l`'s MLP: `ln2`, or `ln1` where the family shares it.
fn mlp_norm(g: &mut GraphCtx<'_>, l: usize, x: &str) -> String {
    let n = names::BlockNames::of(l);
    let names = if g.arch.shared_norm { n.ln1 } else { n.ln2 };
    norm(g, x, &names, g.arch.block_eps)
}

/// `x + attn(ln1(x))`, then `+ mlp(ln2(resid_mid))` (GPT-2, GPT-Neo, CTRL, sequential NeoX).
pub fn sequential_block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    let n = names::BlockNames::of(l);
    let h = norm(g, x, &n.ln1, g.arch.block_eps);
    let attn_out = post_normed(g, l, "attn_out", &n.ln1_post, |g, out| attention(g, l, &h, out));
    let mid_name = g.hook(l, "resid_mid");
    let mid = g.residual_site(2 * l + 1, "Add", &[x, &attn_out], mid_name.as_deref());
    let h2 = mlp_norm(g, l, &mid);
    let mlp_out = post_normed(g, l, "mlp_out", &n.ln2_post, |g, out| mlp(g, l, &h2, out));
    let post_name = g.hook(l, "resid_post");
    let resid_post = g.residual_site(2 * l + 2, "Add", &[&mid, &mlp_out], post_name.as_deref());
    BlockOut { attn_out, resid_mid: Some(mid), mlp_out, resid_post }
}

/// `x + attn(ln1(x)) + mlp(ln2(x))` (NeoX) or `… + mlp(ln1(x))` (GPT-J, shared norm).
pub fn parallel_block(g: &mut GraphCtx<'_>, l: usize, x: &str) -> BlockOut {
    debug_assert_eq!(g.arch.residual, Residual::Parallel);
    let n = names::BlockNames::of(l);
    let h = norm(g, x, &n.ln1, g.arch.block_eps);
    let attn_out = attention(g, l, &h, g.hook(l, "attn_out").as_deref());
    let h2 = if g.arch.shared_norm { h } else { mlp_norm(g, l, x) };
    let mlp_out = mlp(g, l, &h2, g.hook(l, "mlp_out").as_deref());
    let sum = g.b.op("Add", &[&attn_out, &mlp_out], None, vec![]);
    let post_name = g.hook(l, "resid_post");
    let resid_post = g.residual_site(2 * l + 2, "Add", &[x, &sum], post_name.as_deref());
    BlockOut { attn_out, resid_mid: None, mlp_out, resid_post }
}

/// `x + mlp(norm(x))` with layer `l`'s MLP and the norm that feeds it (and its post-norm, where
/// the family has one): the `last-mlp` decoder.
pub fn mlp_residual(g: &mut GraphCtx<'_>, l: usize, x: &str) -> String {
    let n = names::BlockNames::of(l);
    let h = mlp_norm(g, l, x);
    let m = post_normed(g, l, "", &n.ln2_post, |g, out| mlp(g, l, &h, out));
    g.b.op("Add", &[x, &m], None, vec![])
}

/// A sub-block's output: `branch` itself, or its post-norm where the family has them (Gemma);
/// the result is hook `hook` of layer `l` (none when `hook` is empty).
fn post_normed(g: &mut GraphCtx<'_>, l: usize, hook: &str, post: &(String, String), branch: impl FnOnce(&mut GraphCtx<'_>, Option<&str>) -> String) -> String {
    let name = if hook.is_empty() { None } else { g.hook(l, hook) };
    if g.arch.post_norms {
        let raw = branch(g, None);
        norm_to(g, &raw, post, g.arch.block_eps, name.as_deref())
    } else {
        branch(g, name.as_deref())
    }
}
