//! Every adjoint of the backward-graph writer (`lens_model::build::vjp`, issue 28) against central
//! finite differences of the forward graph it differentiates.
//!
//! Each case is a small graph from the residual `blocks.0.hook_resid_pre` `[1, n, d]` to
//! `blocks.0.hook_resid_post` `[1, n, d]` that puts one op (or one op family: the attention
//! pattern's batched MatMuls, Transposes and masked Softmax) on the residual path, with the glue
//! it needs. The backward graph is written from it as from a bundle's lens graph and run on ONNX
//! Runtime; the reference is the forward graph itself, run on ONNX Runtime at `x ± h·e_i` for
//! every coordinate `i`: `∂⟨c_j, f(x)⟩/∂x_i ≈ (⟨c_j, f(x + h e_i)⟩ − ⟨c_j, f(x − h e_i)⟩) / 2h`,
//! summed in f64. Tolerance: 1e-3 of the largest gradient entry (f32 graphs, inputs away from
//! the kinks of Relu and the mask).

use lens_model::build::graph::{Builder, attr_float, attr_int, attr_ints, value_info};
use lens_model::build::onnx::{DT_FLOAT, DT_INT64, ModelProto};
use lens_model::build::vjp::{GRAD_INPUT, build_vjp_model, grad_name};
use lens_model::run::runtime::{Device, ModelSource, create_session_from, init_runtime};
use prost::Message;

const N: usize = 5;
const D: usize = 8;
const K: usize = 3;
const IN: &str = "blocks.0.hook_resid_pre";
const OUT: &str = "blocks.0.hook_resid_post";

/// A case: writes the nodes from `x` (`[1, N, D]`) and returns the `[1, N, D]` result.
type Case = fn(&mut Builder, &str) -> String;

/// Deterministic values in about [-1, 1] (no RNG crate needed; far from 0 where `away` is set).
fn values(n: usize, seed: u64, away: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((s >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0;
            let v = if away { u.signum() * (0.2 + 0.8 * u.abs()) } else { u };
            v as f32
        })
        .collect()
}

fn dims(d: &[usize]) -> Vec<i64> {
    d.iter().map(|&v| v as i64).collect()
}

/// The forward graph of `case` with the residual as a graph input (for the differences), or
/// gathered from an embedding table holding `x` (the shape of a lens graph, for the writer).
fn model(case: Case, x: Option<&[f32]>) -> ModelProto {
    let mut b = Builder::default();
    let input = match x {
        Some(x) => {
            let emb = b.const_f32s("emb", &dims(&[N, D]), x);
            b.op("Gather", &[&emb, "input_ids"], Some(IN), vec![attr_int("axis", 0)])
        }
        None => b.op("Identity", &["x"], Some(IN), vec![]),
    };
    let y = case(&mut b, &input);
    b.op("Identity", &[&y], Some(OUT), vec![]);
    let inputs = match x {
        Some(_) => vec![value_info("input_ids", DT_INT64, &[Ok(1), Err("pos")])],
        None => vec![value_info("x", DT_FLOAT, &[Ok(1), Ok(N), Ok(D)])],
    };
    b.into_model("adjoint_case", inputs, vec![value_info(OUT, DT_FLOAT, &[Ok(1), Ok(N), Ok(D)])])
}

fn session(m: &ModelProto) -> ort::session::Session {
    init_runtime(None).unwrap();
    create_session_from(ModelSource::Bytes(&m.encode_to_vec()), Device::Cpu, 1, &[]).unwrap().0
}

/// The backward graph's gradient of `⟨c_j, f(x)⟩` for each of the `K` directions.
fn vjp(case: Case, x: &[f32], c: &[f32]) -> Vec<f32> {
    let back = build_vjp_model(&model(case, Some(x)), 1, 0).unwrap();
    let mut s = session(&back);
    let ids = ort::value::Tensor::from_array(([1usize, N], (0..N as i64).collect::<Vec<i64>>())).unwrap();
    let ct = ort::value::Tensor::from_array(([K, N, D], c.to_vec())).unwrap();
    let out = s.run(ort::inputs!["input_ids" => ids, GRAD_INPUT => ct]).unwrap();
    let (shape, g) = out[grad_name(IN).as_str()].try_extract_tensor::<f32>().unwrap();
    assert_eq!(shape.iter().copied().collect::<Vec<i64>>(), dims(&[K, N, D]));
    g.to_vec()
}

/// `f(x)` by the forward graph.
fn forward(s: &mut ort::session::Session, x: &[f32]) -> Vec<f32> {
    let t = ort::value::Tensor::from_array(([1usize, N, D], x.to_vec())).unwrap();
    let out = s.run(ort::inputs!["x" => t]).unwrap();
    out[OUT].try_extract_tensor::<f32>().unwrap().1.to_vec()
}

/// The worst error of `back`'s backward graph against central differences of `fwd`'s forward
/// graph (the same case but in the test of the check itself), relative to the largest gradient
/// entry.
fn worst_error(name: &str, back: Case, fwd: Case, seed: u64) -> f64 {
    let x = values(N * D, seed, true);
    let c = values(K * N * D, seed + 1, false);
    let g = vjp(back, &x, &c);
    let mut fwd = session(&model(fwd, None));
    let h = 1e-2f32;
    let scale = g.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
    assert!(scale > 1e-3, "{name}: the gradient is ~0 ({scale}): the case tests nothing");
    let mut worst = 0f64;
    for i in 0..N * D {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let (fp, fm) = (forward(&mut fwd, &xp), forward(&mut fwd, &xm));
        let step = f64::from(xp[i]) - f64::from(xm[i]);
        for j in 0..K {
            let cj = &c[j * N * D..(j + 1) * N * D];
            let dot = |f: &[f32]| cj.iter().zip(f).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>();
            let fd = (dot(&fp) - dot(&fm)) / step;
            let ours = f64::from(g[j * N * D + i]);
            let rel = (ours - fd).abs() / scale;
            if rel > worst {
                worst = rel;
                eprintln!("{name}: direction {j}, coordinate {i}: backward graph {ours} vs differences {fd} (scale {scale})");
            }
        }
    }
    worst
}

/// `[1, N, 1]`: the mean over the last axis (a broadcast operand).
fn row_mean(b: &mut Builder, x: &str) -> String {
    b.op("ReduceMean", &[x], None, vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)])
}

/// Add, Sub and Mul with both operands on the residual and one broadcast; ReduceMean.
fn add_sub_mul(b: &mut Builder, x: &str) -> String {
    let r = row_mean(b, x);
    let s = b.op("Add", &[x, &r], None, vec![]);
    let p = b.op("Mul", &[&s, &r], None, vec![]);
    let q = b.op("Mul", &[&p, x], None, vec![]);
    let w = b.const_f32s("w", &dims(&[D]), &values(D, 7, false));
    let qw = b.op("Mul", &[&q, &w], None, vec![]);
    b.op("Sub", &[&qw, &r], None, vec![])
}

/// Div with both operands on the residual (the denominator broadcast), and by a constant.
fn div(b: &mut Builder, x: &str) -> String {
    let sq = b.op("Mul", &[x, x], None, vec![]);
    let m = row_mean(b, &sq);
    let one = b.const_f32("one", 1.0);
    let den = b.op("Add", &[&m, &one], None, vec![]);
    let q = b.op("Div", &[x, &den], None, vec![]);
    let two = b.const_f32("two", 2.0);
    let r = b.op("Div", &[&q, &two], None, vec![]);
    // A broadcast numerator over a full denominator.
    let q2 = b.op("Div", &[&m, &den], None, vec![]);
    let t = b.op("Add", &[&sq, &one], None, vec![]);
    let q3 = b.op("Div", &[&q2, &t], None, vec![]);
    b.op("Add", &[&r, &q3], None, vec![])
}

/// Neg, Sqrt, Tanh, Sigmoid, Relu, Erf, Identity and Cast.
fn unary(b: &mut Builder, x: &str) -> String {
    let one = b.const_f32("one", 1.0);
    let sq = b.op("Mul", &[x, x], None, vec![]);
    let sq1 = b.op("Add", &[&sq, &one], None, vec![]);
    let parts = [
        b.op("Neg", &[x], None, vec![]),
        b.op("Sqrt", &[&sq1], None, vec![]),
        b.op("Tanh", &[x], None, vec![]),
        b.op("Sigmoid", &[x], None, vec![]),
        b.op("Relu", &[x], None, vec![]),
        b.op("Erf", &[x], None, vec![]),
        b.op("Cast", &[x], None, vec![attr_int("to", i64::from(DT_FLOAT))]),
    ];
    let mut acc = b.op("Identity", &[&parts[0]], None, vec![]);
    for (i, p) in parts.iter().enumerate().skip(1) {
        // Weighted so that a wrong adjoint cannot hide behind another's.
        let c = b.const_f32("c", 0.5 + i as f32 * 0.3);
        let pc = b.op("Mul", &[p, &c], None, vec![]);
        acc = b.op("Add", &[&acc, &pc], None, vec![]);
    }
    acc
}

/// Softmax over the last axis.
fn softmax(b: &mut Builder, x: &str) -> String {
    let c = b.const_f32("c", 2.5);
    let s = b.op("Mul", &[x, &c], None, vec![]);
    b.op("Softmax", &[&s], None, vec![attr_int("axis", -1)])
}

/// LayerNormalization with a weight and bias.
fn layer_norm(b: &mut Builder, x: &str) -> String {
    let w = b.const_f32s("w", &dims(&[D]), &values(D, 11, true));
    let bias = b.const_f32s("b", &dims(&[D]), &values(D, 12, false));
    b.op("LayerNormalization", &[x, &w, &bias], None, vec![attr_int("axis", -1), attr_float("epsilon", 1e-5)])
}

/// MatMul by a rank-2 weight (the `Gemm` with `transB` path).
fn matmul_weight(b: &mut Builder, x: &str) -> String {
    let w = b.const_f32s("w", &dims(&[D, D]), &values(D * D, 13, false));
    b.op("MatMul", &[x, &w], None, vec![])
}

/// An attention pattern: Reshape to heads, Transpose, `q·kᵀ` (both operands on the residual,
/// rank 4), the causal mask by Where, Softmax, `p·v`, and back.
fn attention(b: &mut Builder, x: &str) -> String {
    let (h, dh) = (2usize, D / 2);
    let shape = b.const_i64("shape", &[4], &dims(&[1, N, h, dh]));
    let heads = b.op("Reshape", &[x, &shape], None, vec![]);
    let q = b.op("Transpose", &[&heads], None, vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let wk = b.const_f32s("wk", &dims(&[D, D]), &values(D * D, 17, false));
    let kx = b.op("MatMul", &[x, &wk], None, vec![]);
    let kh = b.op("Reshape", &[&kx, &shape], None, vec![]);
    let kt = b.op("Transpose", &[&kh], None, vec![attr_ints("perm", &[0, 2, 3, 1])]);
    let scores = b.op("MatMul", &[&q, &kt], None, vec![]);
    // Causal: key ≤ query.
    let lower: Vec<f32> = (0..N * N).map(|i| if i % N <= i / N { 1.0 } else { 0.0 }).collect();
    let tri = b.const_f32s("tri", &dims(&[1, 1, N, N]), &lower);
    let half = b.const_f32("half", 0.5);
    let cond = b.op("Greater", &[&tri, &half], None, vec![]);
    let neg = b.const_f32("neg", -1e9);
    let masked = b.op("Where", &[&cond, &scores, &neg], None, vec![]);
    let p = b.op("Softmax", &[&masked], None, vec![attr_int("axis", -1)]);
    let o = b.op("MatMul", &[&p, &q], None, vec![]);
    let back = b.op("Transpose", &[&o], None, vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let flat = b.const_i64("flat", &[3], &dims(&[1, N, D]));
    b.op("Reshape", &[&back, &flat], None, vec![])
}

/// Split (one part unused: its cotangent is zeros), Concat, Unsqueeze and Squeeze.
fn split_concat(b: &mut Builder, x: &str) -> String {
    let sizes = b.const_i64("sizes", &[3], &dims(&[D / 4, D / 4, D / 2]));
    let [s1, _unused, s3] = b.op_multi::<3>("Split", &[x, &sizes], vec![attr_int("axis", 2)]);
    let a = b.op("Mul", &[&s3, &s3], None, vec![]);
    let t = b.op("Tanh", &[&s1], None, vec![]);
    let axes = b.const_i64("axes", &[1], &[1]);
    let u = b.op("Unsqueeze", &[&s1, &axes], None, vec![]);
    let sq = b.op("Squeeze", &[&u, &axes], None, vec![]);
    b.op("Concat", &[&a, &t, &sq], None, vec![attr_int("axis", 2)])
}

/// Where with both branches on the residual, one broadcast.
fn where_both(b: &mut Builder, x: &str) -> String {
    let r = row_mean(b, x);
    let pattern: Vec<f32> = (0..N * D).map(|i| if (i * 7) % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let p = b.const_f32s("p", &dims(&[1, N, D]), &pattern);
    let half = b.const_f32("half", 0.5);
    let cond = b.op("Greater", &[&p, &half], None, vec![]);
    let w = b.op("Where", &[&cond, x, &r], None, vec![]);
    b.op("Mul", &[&w, x], None, vec![])
}

const CASES: [(&str, Case); 9] = [
    ("Add/Sub/Mul, broadcast", add_sub_mul),
    ("Div", div),
    ("Neg/Sqrt/Tanh/Sigmoid/Relu/Erf/Identity/Cast", unary),
    ("Softmax", softmax),
    ("LayerNormalization", layer_norm),
    ("MatMul by a weight", matmul_weight),
    ("attention: Reshape/Transpose/MatMul/Where/Softmax", attention),
    ("Split/Concat/Unsqueeze/Squeeze", split_concat),
    ("Where, both branches", where_both),
];

#[test]
fn every_adjoint_matches_central_differences() {
    let mut failed = Vec::new();
    for (i, (name, case)) in CASES.iter().enumerate() {
        let worst = worst_error(name, *case, *case, 100 + 10 * i as u64);
        eprintln!("{name}: worst relative error {worst:.2e}");
        if worst >= 1e-3 {
            failed.push(format!("{name}: {worst:.2e}"));
        }
    }
    assert!(failed.is_empty(), "adjoints off by more than 1e-3 of the gradient's scale: {failed:?}");
}

#[test]
fn a_wrong_adjoint_would_be_caught() {
    // The check itself can fail: Sigmoid's backward graph against Tanh's differences.
    let tanh: Case = |b, x| b.op("Tanh", &[x], None, vec![]);
    let sigmoid: Case = |b, x| b.op("Sigmoid", &[x], None, vec![]);
    let worst = worst_error("Sigmoid's backward vs Tanh's forward", sigmoid, tanh, 5);
    assert!(worst > 0.1, "{worst}");
}

#[test]
fn an_op_without_an_adjoint_is_a_clear_error() {
    let x = values(N * D, 9, true);
    let cos: Case = |b, x| b.op("Cos", &[x], None, vec![]);
    let err = build_vjp_model(&model(cos, Some(&x)), 1, 0).unwrap_err().to_string();
    assert!(err.contains("no adjoint for the op Cos"), "{err}");
}
