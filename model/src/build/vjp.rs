//! The backward graph (vector–Jacobian products) of a bundle's lens graph, written from the lens
//! graph's own nodes (issue 28): reverse-mode differentiation of the op set our graph builder
//! writes, so every provider that runs the forward graph runs the backward one too.
//!
//! The graph differentiated is the lens graph as a default run computes it: every `If` is
//! replaced by its `then` branch (all blocks run, the head is computed, no patch; the patch and
//! start inputs keep their defaults as constants). The forward part runs once, at batch 1; the
//! cotangents carry a leading batch of `k` directions, so one run computes `k` vector–Jacobian
//! products. Weights get no gradients: only the residual stream and what it flows through.
//!
//! Inputs: `input_ids` `[1, pos]` and [`GRAD_INPUT`] `[k, pos, d_model]`, the cotangents at the
//! last block's output (before the final norm), and the lens graph's key/value cache inputs
//! (default empty): given the cache of earlier positions, the gradients are those at the new
//! positions, the cached keys and values held constant. Outputs: [`grad_name`] of every
//! `blocks.{l}.hook_resid_pre` (the gradient with respect to the residual entering block `l`;
//! block 0's is the embeddings') and, where blocks have one, `blocks.{l}.hook_resid_mid`, each
//! `[k, pos, d_model]`. A graph for the blocks from `lowest` on ([`vjp_file`]) outputs only theirs
//! and does not differentiate through the blocks below.

use std::collections::{HashMap, HashSet};

use super::graph::{attr_int, attr_ints, value_info};
use super::onnx::{AttributeProto, DT_FLOAT, DT_INT64, GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto};
use crate::error::{LensError, Result};

/// The backward graph's file in a bundle (written on first use). The name carries the writer's
/// version: a graph written by an older writer (without the key/value cache inputs) is written
/// again rather than used.
pub const VJP_FILE: &str = "vjp2.onnx";
/// The prefix of the lens graph's key/value cache inputs ([`super::graph::past_name`]).
const PAST_PREFIX: &str = "past_key_values.";

/// The backward graph's cotangent input: `[k, pos, d_model]` at the last block's output.
pub const GRAD_INPUT: &str = "grad_resid_final";

/// The backward graph's output holding the gradient with respect to the tensor `hook`.
pub fn grad_name(hook: &str) -> String {
    format!("grad/{hook}")
}

/// The hook tensors whose gradients the backward graph outputs, in order: those of blocks
/// `lowest..n_layers`.
fn hook_outputs(n_layers: usize, lowest: usize) -> Vec<String> {
    let mut v = Vec::new();
    for l in lowest..n_layers {
        v.push(format!("blocks.{l}.hook_resid_pre"));
        v.push(format!("blocks.{l}.hook_resid_mid"));
    }
    v
}

/// Ops whose outputs carry no gradient (integers, booleans, shapes).
const NOT_DIFFERENTIABLE: &[&str] =
    &["Shape", "Size", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Not", "Range", "NonZero", "ConstantOfShape"];

/// The `then` branch's nodes in place of every `If` (recursively), each `If` output an `Identity`
/// of the branch's.
fn inline_ifs(nodes: &[NodeProto]) -> Result<Vec<NodeProto>> {
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        if n.op_type.as_deref() != Some("If") {
            out.push(n.clone());
            continue;
        }
        let then = n
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some("then_branch"))
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| LensError::invalid("the lens graph has an If without a then branch"))?;
        if then.output.len() != n.output.len() {
            return Err(LensError::invalid("the lens graph has an If whose branch outputs do not match its own"));
        }
        // The branch's values take the If's output names, so the hooks' consumers inside the
        // branch read the names the backward graph outputs.
        let rename: HashMap<String, String> = then.output.iter().zip(&n.output).filter_map(|(i, o)| i.name.clone().map(|i| (i, o.clone()))).collect();
        let inner_renamed = |s: &String| rename.get(s).cloned().unwrap_or_else(|| s.clone());
        for mut node in inline_ifs(&then.node)? {
            node.input = node.input.iter().map(inner_renamed).collect();
            node.output = node.output.iter().map(inner_renamed).collect();
            out.push(node);
        }
    }
    Ok(out)
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

/// Writes the backward nodes.
struct Writer {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    counter: usize,
    /// Cotangent pieces per forward tensor, summed when the tensor's producer is reached.
    pieces: HashMap<String, Vec<String>>,
    /// Forward tensors that are initializers (weights and constants), with their ranks.
    init_rank: HashMap<String, usize>,
    /// `[1]` int64: the number of directions `k` (axis 0 of [`GRAD_INPUT`]).
    k: String,
}

impl Writer {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("/vjp/{hint}_{}", self.counter)
    }
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(op);
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{out}_node")),
            input: inputs.iter().map(|s| (*s).to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }
    fn const_f32(&mut self, v: f32) -> String {
        let name = self.fresh("c");
        self.inits.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![],
            data_type: Some(DT_FLOAT),
            raw_data: Some(v.to_le_bytes().to_vec()),
            ..Default::default()
        });
        name
    }
    fn const_i64s(&mut self, v: &[i64]) -> String {
        let name = self.fresh("ci");
        self.inits.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![v.len() as i64],
            data_type: Some(DT_INT64),
            raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }
    fn add_piece(&mut self, tensor: &str, ct: String) {
        self.pieces.entry(tensor.to_string()).or_default().push(ct);
    }
    /// The summed cotangent of `tensor`, if any piece reached it.
    fn take(&mut self, tensor: &str) -> Option<String> {
        let pieces = self.pieces.remove(tensor)?;
        match pieces.as_slice() {
            [one] => Some(one.clone()),
            _ => {
                let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
                Some(self.op("Sum", &refs, vec![]))
            }
        }
    }
    /// `Shape(x)` with axis 0 replaced by `k`: the shape of a cotangent of the batch-1 tensor `x`.
    fn shape_k(&mut self, x: &str) -> String {
        let s = self.op("Shape", &[x], vec![]);
        let (from, to) = (self.const_i64s(&[1]), self.const_i64s(&[i64::MAX]));
        let rest = self.op("Slice", &[&s, &from, &to], vec![]);
        let k = self.k.clone();
        self.op("Concat", &[&k, &rest], vec![attr_int("axis", 0)])
    }
    /// `ct` summed over the axes along which the forward operand `a` was broadcast to the
    /// forward result `y` (same rank; the batch axis is 1 in both, so the directions stay apart).
    fn unbroadcast(&mut self, ct: &str, a: &str, y: &str) -> String {
        let sa = self.op("Shape", &[a], vec![]);
        let sy = self.op("Shape", &[y], vec![]);
        let one = self.const_i64s(&[1]);
        let a1 = self.op("Equal", &[&sa, &one], vec![]);
        let y1 = self.op("Equal", &[&sy, &one], vec![]);
        let y_not1 = self.op("Not", &[&y1], vec![]);
        let both = self.op("And", &[&a1, &y_not1], vec![]);
        let nz = self.op("NonZero", &[&both], vec![]);
        let flat = self.const_i64s(&[-1]);
        let axes = self.op("Reshape", &[&nz, &flat], vec![]);
        self.op("ReduceSum", &[ct, &axes], vec![attr_int("keepdims", 1), attr_int("noop_with_empty_axes", 1)])
    }
    /// `x` with its last two axes swapped (a weight: `[in, out]` -> `[out, in]`).
    fn swap_last(&mut self, x: &str) -> Result<String> {
        let rank = self.init_rank.get(x).copied().unwrap_or(4);
        let perm: Vec<i64> = match rank {
            2 => vec![1, 0],
            4 => vec![0, 1, 3, 2],
            r => return Err(LensError::invalid(format!("the gradient graph cannot transpose a rank-{r} matrix"))),
        };
        Ok(self.op("Transpose", &[x], vec![attr_ints("perm", &perm)]))
    }
    /// `ct · wᵀ` for a weight `w` `[in, out]` without a transposed copy of it: `ct` flattened to
    /// rows, a `Gemm` with `transB`, the rows shaped back.
    fn times_weight_t(&mut self, ct: &str, w: &str) -> String {
        // [.., out] -> [rows, out], the last dimension taken from the shape.
        let s = self.op("Shape", &[ct], vec![]);
        let (from, to) = (self.const_i64s(&[-1]), self.const_i64s(&[i64::MAX]));
        let last = self.op("Slice", &[&s, &from, &to], vec![]);
        let minus_one = self.const_i64s(&[-1]);
        let rows_shape = self.op("Concat", &[&minus_one, &last], vec![attr_int("axis", 0)]);
        let rows = self.op("Reshape", &[ct, &rows_shape], vec![]);
        let prod = self.op("Gemm", &[&rows, w], vec![attr_int("transB", 1)]);
        let (from, to) = (self.const_i64s(&[0]), self.const_i64s(&[-1]));
        let lead = self.op("Slice", &[&s, &from, &to], vec![]);
        let out_shape = self.op("Concat", &[&lead, &minus_one], vec![attr_int("axis", 0)]);
        self.op("Reshape", &[&prod, &out_shape], vec![])
    }
}

/// The backward graph's file in a bundle for gradients down to block `lowest`'s input.
pub fn vjp_file(lowest: usize) -> String {
    if lowest == 0 { VJP_FILE.to_string() } else { format!("vjp2_from_{lowest}.onnx") }
}

/// The backward graph of `lens` (a bundle's lens graph) for a model of `n_layers` blocks, its
/// gradients down to block `lowest`'s input (the blocks below it are not differentiated through).
/// Its initializers are the lens graph's (the same external data file) plus its own constants.
pub fn build_vjp_model(lens: &ModelProto, n_layers: usize, lowest: usize) -> Result<ModelProto> {
    let graph = lens.graph.as_ref().ok_or_else(|| LensError::invalid("the lens graph is empty"))?;
    if n_layers == 0 || lowest >= n_layers {
        return Err(LensError::invalid(format!("no block {lowest} to take gradients at in a model of {n_layers} blocks")));
    }
    let nodes = inline_ifs(&graph.node)?;
    let source = "blocks.0.hook_resid_pre".to_string();
    let last = format!("blocks.{}.hook_resid_post", n_layers - 1);
    let mut init_rank: HashMap<String, usize> = graph.initializer.iter().filter_map(|t| t.name.clone().map(|n| (n, t.dims.len()))).collect();
    // Which forward tensors depend on the residual stream.
    let mut active: HashSet<String> = HashSet::from([source.clone()]);
    for n in &nodes {
        let op = n.op_type.as_deref().unwrap_or("");
        if NOT_DIFFERENTIABLE.contains(&op) {
            continue;
        }
        if n.input.iter().any(|i| active.contains(i)) {
            active.extend(n.output.iter().cloned());
        }
    }
    if !active.contains(&last) {
        return Err(LensError::invalid(format!("the lens graph has no {last} that depends on {source}")));
    }
    let mut w = Writer { nodes: Vec::new(), inits: Vec::new(), counter: 0, pieces: HashMap::new(), init_rank: HashMap::new(), k: String::new() };
    let gshape = w.op("Shape", &[GRAD_INPUT], vec![]);
    let (from, to) = (w.const_i64s(&[0]), w.const_i64s(&[1]));
    w.k = w.op("Slice", &[&gshape, &from, &to], vec![]);
    // A weight cast from f16 keeps its rank.
    for n in &nodes {
        if matches!(n.op_type.as_deref(), Some("Cast" | "Identity"))
            && let (Some(i), Some(o)) = (n.input.first(), n.output.first())
            && let Some(&r) = init_rank.get(i)
        {
            init_rank.insert(o.clone(), r);
        }
    }
    w.init_rank = std::mem::take(&mut init_rank);
    w.add_piece(&last, GRAD_INPUT.to_string());
    let wanted: Vec<String> = hook_outputs(n_layers, lowest).into_iter().filter(|h| active.contains(h)).collect();
    let mut grads: HashMap<String, String> = HashMap::new();
    for n in nodes.iter().rev() {
        let op = n.op_type.as_deref().unwrap_or("");
        // The outputs' cotangents (a hook's is kept for the graph's outputs).
        let mut cts: Vec<Option<String>> = Vec::with_capacity(n.output.len());
        for o in &n.output {
            let ct = w.take(o);
            if let Some(ct) = &ct
                && wanted.contains(o)
            {
                grads.insert(o.clone(), ct.clone());
            }
            cts.push(ct);
        }
        if cts.iter().all(Option::is_none) || !n.input.iter().any(|i| active.contains(i)) {
            continue;
        }
        adjoint(&mut w, n, op, &cts, &active)?;
    }
    // The source's own cotangent (block 0's residual) is produced by the node that wrote it.
    if let Some(ct) = w.take(&source) {
        grads.insert(source.clone(), ct);
    }
    let mut outputs = Vec::new();
    for h in &wanted {
        let ct = grads.get(h).cloned().ok_or_else(|| LensError::invalid(format!("internal: no gradient reached {h}")))?;
        let out = grad_name(h);
        w.nodes.push(NodeProto { op_type: Some("Identity".into()), input: vec![ct], output: vec![out.clone()], ..Default::default() });
        outputs.push(value_info(&out, DT_FLOAT, &[Err("k"), Err("pos"), Err("d_model")]));
    }
    // Only the forward nodes the backward ones read.
    let mut all: Vec<NodeProto> = nodes;
    all.extend(w.nodes);
    let mut needed: HashSet<String> = outputs.iter().filter_map(|o| o.name.clone()).collect();
    let mut keep = vec![false; all.len()];
    for (i, n) in all.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o)) {
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
            needed.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    let kept: Vec<NodeProto> = all.into_iter().zip(keep).filter_map(|(n, k)| k.then_some(n)).collect();
    let mut initializer: Vec<TensorProto> = graph.initializer.iter().filter(|t| t.name.as_ref().is_some_and(|n| needed.contains(n))).cloned().collect();
    initializer.extend(w.inits);
    let mut inputs = vec![
        graph.input.iter().find(|i| i.name.as_deref() == Some("input_ids")).cloned().ok_or_else(|| LensError::invalid("the lens graph has no input_ids"))?,
        value_info(GRAD_INPUT, DT_FLOAT, &[Err("k"), Err("pos"), Err("d_model")]),
    ];
    // The key/value cache stays an input (its default, empty, kept): a run after cached positions
    // differentiates the new positions only, the cached keys and values being constants — exact
    // for the gradients at the new positions, which the cached ones cannot depend on.
    inputs.extend(graph.input.iter().filter(|i| i.name.as_ref().is_some_and(|n| n.starts_with(PAST_PREFIX) && needed.contains(n))).cloned());
    let g = GraphProto { name: Some("lens_vjp".into()), node: kept, initializer, input: inputs, output: outputs, ..Default::default() };
    Ok(ModelProto { graph: Some(g), metadata_props: Vec::new(), ..lens.clone() })
}

/// Writes the adjoint of node `n` (`op`), whose outputs' cotangents are `cts`, adding a piece to
/// each active input.
fn adjoint(w: &mut Writer, n: &NodeProto, op: &str, cts: &[Option<String>], active: &HashSet<String>) -> Result<()> {
    let is_active = |i: usize| n.input.get(i).is_some_and(|x| active.contains(x));
    let input = |i: usize| n.input.get(i).cloned().unwrap_or_default();
    let y = n.output.first().cloned().unwrap_or_default();
    let single = || cts.first().cloned().flatten().ok_or_else(|| LensError::invalid(format!("internal: no cotangent for {op}")));
    match op {
        "Identity" | "Cast" => {
            let ct = single()?;
            w.add_piece(&input(0), ct);
        }
        "Add" | "Sub" => {
            let ct = single()?;
            let both = is_active(0) && is_active(1);
            for i in 0..2 {
                if !is_active(i) {
                    continue;
                }
                let mut g = if op == "Sub" && i == 1 { w.op("Neg", &[&ct], vec![]) } else { ct.clone() };
                if both {
                    g = w.unbroadcast(&g, &input(i), &y);
                }
                w.add_piece(&input(i), g);
            }
        }
        "Mul" => {
            let ct = single()?;
            let both = is_active(0) && is_active(1);
            for i in 0..2 {
                if !is_active(i) {
                    continue;
                }
                let other = input(1 - i);
                let mut g = w.op("Mul", &[&ct, &other], vec![]);
                if both {
                    g = w.unbroadcast(&g, &input(i), &y);
                }
                w.add_piece(&input(i), g);
            }
        }
        "Div" => {
            let ct = single()?;
            let both = is_active(0) && is_active(1);
            let b = input(1);
            if is_active(0) {
                let mut g = w.op("Div", &[&ct, &b], vec![]);
                if both {
                    g = w.unbroadcast(&g, &input(0), &y);
                }
                w.add_piece(&input(0), g);
            }
            if is_active(1) {
                // d(a/b)/db = -(a/b)/b
                let t = w.op("Mul", &[&ct, &y], vec![]);
                let t = w.op("Div", &[&t, &b], vec![]);
                let mut g = w.op("Neg", &[&t], vec![]);
                if both {
                    g = w.unbroadcast(&g, &b, &y);
                }
                w.add_piece(&b, g);
            }
        }
        "Neg" => {
            let ct = single()?;
            let g = w.op("Neg", &[&ct], vec![]);
            w.add_piece(&input(0), g);
        }
        "Sqrt" => {
            let ct = single()?;
            let half = w.const_f32(0.5);
            let t = w.op("Mul", &[&ct, &half], vec![]);
            let g = w.op("Div", &[&t, &y], vec![]);
            w.add_piece(&input(0), g);
        }
        "Tanh" => {
            let ct = single()?;
            let one = w.const_f32(1.0);
            let y2 = w.op("Mul", &[&y, &y], vec![]);
            let d = w.op("Sub", &[&one, &y2], vec![]);
            let g = w.op("Mul", &[&ct, &d], vec![]);
            w.add_piece(&input(0), g);
        }
        "Sigmoid" => {
            let ct = single()?;
            let one = w.const_f32(1.0);
            let om = w.op("Sub", &[&one, &y], vec![]);
            let d = w.op("Mul", &[&y, &om], vec![]);
            let g = w.op("Mul", &[&ct, &d], vec![]);
            w.add_piece(&input(0), g);
        }
        "Relu" => {
            let ct = single()?;
            let zero = w.const_f32(0.0);
            let pos = w.op("Greater", &[&input(0), &zero], vec![]);
            let g = w.op("Where", &[&pos, &ct, &zero], vec![]);
            w.add_piece(&input(0), g);
        }
        "Erf" => {
            // d erf(x) = 2/√π · exp(−x²)
            let ct = single()?;
            let x = input(0);
            let x2 = w.op("Mul", &[&x, &x], vec![]);
            let nx2 = w.op("Neg", &[&x2], vec![]);
            let e = w.op("Exp", &[&nx2], vec![]);
            let c = w.const_f32((2.0 / std::f64::consts::PI.sqrt()) as f32);
            let d = w.op("Mul", &[&e, &c], vec![]);
            let g = w.op("Mul", &[&ct, &d], vec![]);
            w.add_piece(&x, g);
        }
        "ReduceMean" => {
            let ct = single()?;
            let axes = attr(n, "axes").map(|a| a.ints.clone()).unwrap_or_default();
            let keep = attr(n, "keepdims").and_then(|a| a.i).unwrap_or(1);
            if axes != [-1] || keep != 1 {
                return Err(LensError::invalid(format!("the gradient graph supports ReduceMean over the last axis only (axes {axes:?}, keepdims {keep})")));
            }
            let x = input(0);
            let s = w.op("Shape", &[&x], vec![]);
            let (from, to) = (w.const_i64s(&[-1]), w.const_i64s(&[i64::MAX]));
            let last = w.op("Slice", &[&s, &from, &to], vec![]);
            let nf = w.op("Cast", &[&last], vec![attr_int("to", i64::from(DT_FLOAT))]);
            let scaled = w.op("Div", &[&ct, &nf], vec![]);
            // Broadcast back over the reduced axis (and to the k directions).
            let ones = w.op("ConstantOfShape", &[&s], vec![one_value()]);
            let g = w.op("Mul", &[&scaled, &ones], vec![]);
            w.add_piece(&x, g);
        }
        "Softmax" => {
            let ct = single()?;
            let axis = attr(n, "axis").and_then(|a| a.i).unwrap_or(-1);
            if axis != -1 {
                return Err(LensError::invalid(format!("the gradient graph supports Softmax over the last axis only (axis {axis})")));
            }
            let prod = w.op("Mul", &[&ct, &y], vec![]);
            let last = w.const_i64s(&[-1]);
            let sum = w.op("ReduceSum", &[&prod, &last], vec![attr_int("keepdims", 1)]);
            let diff = w.op("Sub", &[&ct, &sum], vec![]);
            let g = w.op("Mul", &[&diff, &y], vec![]);
            w.add_piece(&input(0), g);
        }
        "LayerNormalization" => {
            let ct = single()?;
            let axis = attr(n, "axis").and_then(|a| a.i).unwrap_or(-1);
            if axis != -1 {
                return Err(LensError::invalid(format!("the gradient graph supports LayerNormalization over the last axis only (axis {axis})")));
            }
            if !is_active(0) || is_active(1) || n.input.get(2).is_some_and(|b| active.contains(b)) {
                return Err(LensError::invalid("the gradient graph supports LayerNormalization of the residual with fixed weights only"));
            }
            let eps = attr(n, "epsilon").and_then(|a| a.f).unwrap_or(1e-5);
            let x = input(0);
            let last = |w: &mut Writer, t: &str| w.op("ReduceMean", &[t], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
            let mu = last(w, &x);
            let xc = w.op("Sub", &[&x, &mu], vec![]);
            let sq = w.op("Mul", &[&xc, &xc], vec![]);
            let var = last(w, &sq);
            let e = w.const_f32(eps);
            let ve = w.op("Add", &[&var, &e], vec![]);
            let sd = w.op("Sqrt", &[&ve], vec![]);
            let xhat = w.op("Div", &[&xc, &sd], vec![]);
            let g = w.op("Mul", &[&ct, &input(1)], vec![]);
            let gm = last(w, &g);
            let gx = w.op("Mul", &[&g, &xhat], vec![]);
            let gxm = last(w, &gx);
            let t = w.op("Mul", &[&xhat, &gxm], vec![]);
            let a = w.op("Sub", &[&g, &gm], vec![]);
            let b = w.op("Sub", &[&a, &t], vec![]);
            let dx = w.op("Div", &[&b, &sd], vec![]);
            w.add_piece(&x, dx);
        }
        "MatMul" => {
            let ct = single()?;
            let (a, b) = (input(0), input(1));
            if is_active(0) {
                // A weight (fixed, rank 2) without a transposed copy; anything else transposed.
                let g = if !is_active(1) && w.init_rank.get(&b) == Some(&2) {
                    w.times_weight_t(&ct, &b)
                } else {
                    let bt = w.swap_last(&b)?;
                    w.op("MatMul", &[&ct, &bt], vec![])
                };
                w.add_piece(&a, g);
            }
            if is_active(1) {
                let at = w.swap_last(&a)?;
                let g = w.op("MatMul", &[&at, &ct], vec![]);
                w.add_piece(&b, g);
            }
        }
        "Reshape" => {
            let ct = single()?;
            let x = input(0);
            let shape = w.shape_k(&x);
            let g = w.op("Reshape", &[&ct, &shape], vec![]);
            w.add_piece(&x, g);
        }
        "Transpose" => {
            let ct = single()?;
            let perm = attr(n, "perm").map(|a| a.ints.clone()).ok_or_else(|| LensError::invalid("a Transpose without perm"))?;
            if perm.first() != Some(&0) {
                return Err(LensError::invalid("the gradient graph supports Transposes that keep the batch axis first only"));
            }
            let mut inv = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                if let Some(slot) = usize::try_from(p).ok().and_then(|p| inv.get_mut(p)) {
                    *slot = i as i64;
                }
            }
            let g = w.op("Transpose", &[&ct], vec![attr_ints("perm", &inv)]);
            w.add_piece(&input(0), g);
        }
        "Unsqueeze" => {
            let ct = single()?;
            let g = w.op("Squeeze", &[&ct, &input(1)], vec![]);
            w.add_piece(&input(0), g);
        }
        "Squeeze" => {
            let ct = single()?;
            let g = w.op("Unsqueeze", &[&ct, &input(1)], vec![]);
            w.add_piece(&input(0), g);
        }
        "Concat" => {
            let ct = single()?;
            let axis = attr(n, "axis").and_then(|a| a.i).ok_or_else(|| LensError::invalid("a Concat without axis"))?;
            if axis == 0 {
                return Err(LensError::invalid("the gradient graph does not support a Concat along the batch axis"));
            }
            let axis_t = w.const_i64s(&[axis]);
            let mut offset: Option<String> = None;
            for i in 0..n.input.len() {
                let x = input(i);
                let s = w.op("Shape", &[&x], vec![]);
                let size = w.op("Gather", &[&s, &axis_t], vec![attr_int("axis", 0)]);
                let start = offset.clone().unwrap_or_else(|| w.const_i64s(&[0]));
                let end = w.op("Add", &[&start, &size], vec![]);
                if is_active(i) {
                    let g = w.op("Slice", &[&ct, &start, &end, &axis_t], vec![]);
                    w.add_piece(&x, g);
                }
                offset = Some(end);
            }
        }
        "Split" => {
            let axis = attr(n, "axis").and_then(|a| a.i).unwrap_or(0);
            if axis == 0 {
                return Err(LensError::invalid("the gradient graph does not support a Split along the batch axis"));
            }
            let mut parts = Vec::with_capacity(n.output.len());
            for (o, ct) in n.output.iter().zip(cts) {
                parts.push(match ct {
                    Some(c) => c.clone(),
                    None => {
                        let shape = w.shape_k(o);
                        w.op("ConstantOfShape", &[&shape], vec![zero_value()])
                    }
                });
            }
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let g = w.op("Concat", &refs, vec![attr_int("axis", axis)]);
            w.add_piece(&input(0), g);
        }
        "Where" => {
            let ct = single()?;
            let zero = w.const_f32(0.0);
            let cond = input(0);
            let both = is_active(1) && is_active(2);
            for (i, picks) in [(1usize, true), (2, false)] {
                if !is_active(i) {
                    continue;
                }
                let mut g = if picks { w.op("Where", &[&cond, &ct, &zero], vec![]) } else { w.op("Where", &[&cond, &zero, &ct], vec![]) };
                if both {
                    g = w.unbroadcast(&g, &input(i), &y);
                }
                w.add_piece(&input(i), g);
            }
        }
        "MatMulNBits" => {
            return Err(LensError::invalid("gradients need an f32 or f16 bundle: this one's block matrices are int8/int4 codes (convert with --weights f32)"));
        }
        other => return Err(LensError::invalid(format!("the gradient graph has no adjoint for the op {other} on the residual stream"))),
    }
    Ok(())
}

/// `value` attribute of a `ConstantOfShape` filling f32 `v`.
fn fill_value(v: f32) -> AttributeProto {
    AttributeProto {
        name: Some("value".into()),
        r#type: Some(attribute_proto::AttributeType::Tensor as i32),
        t: Some(TensorProto { dims: vec![1], data_type: Some(DT_FLOAT), raw_data: Some(v.to_le_bytes().to_vec()), ..Default::default() }),
        ..Default::default()
    }
}

fn one_value() -> AttributeProto {
    fill_value(1.0)
}

fn zero_value() -> AttributeProto {
    fill_value(0.0)
}
