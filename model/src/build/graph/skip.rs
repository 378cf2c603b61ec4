//! Skippable blocks: the lens graph can start at any block.
//!
//! Each block of the lens graph is the `then` branch of an ONNX `If` that runs it when its layer
//! is at or after [`START_LAYER`] (always, by default); the `else` branch passes the residual and
//! the cached keys and values through. The residual entering the first block that runs is
//! [`START_RESID`] (the embeddings when the graph starts at block 0). A patched run starts at the
//! block after the patch site: it recomputes only what the patch changes.

use super::{
    BlockFn, DT_BOOL, DT_FLOAT, DT_INT64, GraphCtx, GraphProto, NodeProto, TypeProto, ValueInfoProto, hook_name, hooks_of, past_name, present_name, type_proto,
    value_info,
};
use crate::build::onnx::{AttributeProto, attribute_proto};

/// The lens graph's input: the first block that runs (int64 scalar; `0`, the default, every
/// block). The blocks before it are skipped: their hooks and caches are not computed (they
/// output their input residual and cache), and the residual entering it is [`START_RESID`].
pub const START_LAYER: &str = "start_layer";
/// The lens graph's input: the residual entering block [`START_LAYER`] when that is after block 0,
/// `[1, pos, d_model]` (default: one zero vector, unused).
pub const START_RESID: &str = "start_resid";

/// The lens graph's input (where it has a head): compute `logits` (bool scalar; `true`, the
/// default). A patched run that needs only the last residual sets it `false`: `logits` is then
/// empty (`[1, 0, d_vocab]`) and the head's matrix product is not run.
pub const WITH_LOGITS: &str = "with_logits";

/// What a block's nodes inside its branch add to the hook and cache names they write.
pub(super) const INNER_SUFFIX: &str = "/in_block";

/// A value of the branch's outputs: an f32 tensor of any shape.
fn branch_output(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(DT_FLOAT), shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One output of an `If` ([`GraphCtx::push_if`]).
struct BranchOutput {
    /// Its name outside.
    outer: String,
    /// The name the `then` branch's nodes write.
    inner: String,
    /// What the `else` branch passes through.
    skipped: String,
}

/// A graph attribute (an `If`'s branch).
fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_proto::AttributeType::Graph as i32), g: Some(g), ..Default::default() }
}

impl GraphCtx<'_> {
    /// Makes this graph take [`START_LAYER`] and [`START_RESID`] (defaults: start at block 0) and
    /// returns their input descriptions.
    /// `head`: the graph computes `logits` (then [`WITH_LOGITS`] is an input too).
    pub(super) fn enable_start(&mut self, head: bool) -> Vec<ValueInfoProto> {
        let d = self.arch.shape.d_model;
        let mut inputs = Vec::new();
        if head {
            self.b.default_input(WITH_LOGITS, vec![], DT_BOOL, vec![1]);
            inputs.push(value_info(WITH_LOGITS, DT_BOOL, &[]));
        }
        self.b.default_input(START_LAYER, vec![], DT_INT64, 0i64.to_le_bytes().to_vec());
        self.b.default_input(START_RESID, vec![1, 1, d as i64], DT_FLOAT, vec![0u8; d * 4]);
        inputs.extend([value_info(START_LAYER, DT_INT64, &[]), value_info(START_RESID, DT_FLOAT, &[Ok(1), Err("start_rows"), Ok(d)])]);
        inputs
    }

    /// The head, written by `body` into the value it is given, inside an `If` on [`WITH_LOGITS`]
    /// whose output is named `out` (empty when skipped).
    pub(super) fn skippable_head(&mut self, out: &str, body: impl FnOnce(&mut Self, &str)) {
        let mark = self.b.nodes.len();
        let inner = format!("{out}{INNER_SUFFIX}");
        body(self, &inner);
        let nodes = self.b.nodes.split_off(mark);
        let empty = format!("{out}/empty");
        self.b.empty_f32(&empty, &[1, 0, self.arch.shape.d_vocab as i64]);
        self.push_if(WITH_LOGITS, "head", nodes, &[BranchOutput { outer: out.to_string(), inner, skipped: empty }]);
    }

    /// An `If` on `cond` whose `then` branch is `nodes` (they write each output's `inner`) and whose
    /// `else` branch passes each output's `skipped` value through; the `If` outputs the `outer` names.
    fn push_if(&mut self, cond: &str, name: &str, nodes: Vec<NodeProto>, outs: &[BranchOutput]) {
        let then_branch =
            GraphProto { name: Some(name.into()), node: nodes, output: outs.iter().map(|o| branch_output(&o.inner)).collect(), ..Default::default() };
        let mut skipped = Vec::with_capacity(outs.len());
        let mut skipped_outputs = Vec::with_capacity(outs.len());
        for o in outs {
            let copy = format!("{}/skipped", o.outer);
            skipped.push(self.b.node("Identity", &[&o.skipped], vec![copy.clone()], vec![]));
            skipped_outputs.push(branch_output(&copy));
        }
        let else_branch = GraphProto { name: Some(format!("skip_{name}")), node: skipped, output: skipped_outputs, ..Default::default() };
        let outer = outs.iter().map(|o| o.outer.clone()).collect();
        self.b.push("If", &[cond], outer, vec![attr_graph("then_branch", then_branch), attr_graph("else_branch", else_branch)]);
    }

    /// `x0` (the embeddings) where the graph starts at block 0, else [`START_RESID`].
    pub(super) fn start_or(&mut self, x0: &str) -> String {
        let zero = self.b.const_i64("start_zero", &[], &[0]);
        let later = self.b.op("Less", &[&zero, START_LAYER], None, vec![]);
        self.b.op("Where", &[&later, START_RESID, x0], None, vec![])
    }

    /// Builds the per-sequence tables the blocks read (masks, rotary tables) in the main graph,
    /// where every block's branch sees them.
    pub(super) fn shared_tables(&mut self) {
        for l in 0..self.arch.shape.n_layers {
            self.mask(self.arch.windows.get(l).copied().flatten());
            let _ = self.rope(l);
        }
    }

    /// Block `l` on the residual `x`, run when `l` ≥ [`START_LAYER`] and skipped before; its
    /// hooks and cache outputs carry their usual names. Returns its `resid_post`.
    pub(super) fn skippable_block(&mut self, block: BlockFn, l: usize, x: &str) -> String {
        let mark = self.b.nodes.len();
        self.in_branch = true;
        let _ = block(self, l, x);
        self.in_branch = false;
        let body = self.b.nodes.split_off(mark);
        // A skipped block outputs its input residual as every hook, and the cache it was given.
        let of = |outer: String, skipped: String| BranchOutput { inner: format!("{outer}{INNER_SUFFIX}"), outer, skipped };
        let mut outs: Vec<BranchOutput> =
            hooks_of(self.arch.residual).iter().filter(|h| **h != "resid_pre").map(|h| of(hook_name(l, h), x.to_string())).collect();
        if self.cache {
            outs.extend(["key", "value"].map(|kind| of(present_name(l, kind), past_name(l, kind))));
        }
        let id = self.b.const_i64("layer_id", &[], &[l as i64]);
        let runs = self.b.op("LessOrEqual", &[START_LAYER, &id], None, vec![]);
        self.push_if(&runs, &format!("block_{l}"), body, &outs);
        hook_name(l, "resid_post")
    }
}
