//! The lens graphs (ONNX, opset 17), built with prost from the vendored `onnx.proto`.
//!
//! [`build_lens_model`] builds the model itself with every TransformerLens hook point as an
//! output; [`build_last_block_model`] builds the second, small graph that runs the last block (and
//! its MLP alone) on other inputs than its own, for the `last-block` / `last-mlp` decoders. Both
//! reference the same external weight file. The block of each family is written in its own file
//! under [`crate::build::arch`] with the shared ops of [`ops`].

pub mod ops;
mod skip;

pub use skip::{START_LAYER, START_RESID, WITH_LOGITS};

use std::collections::{BTreeSet, HashMap};

use crate::build::names;
use crate::build::onnx::{
    AttributeProto, DT_BOOL, DT_FLOAT, DT_FLOAT16, DT_INT64, DT_UINT8, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto, tensor_proto, tensor_shape_proto, type_proto,
};
use crate::build::quant::{CODES_SUFFIX, QuantSpec, SCALES_SUFFIX, ZERO_POINTS_SUFFIX};
use crate::build::spec::{Arch, Positions, Residual};
use crate::error::{LensError, Result};

/// Where one weight tensor lives in the external data file.
#[derive(Debug, Clone)]
pub struct ExternalTensor {
    /// Initializer name (see [`crate::build::names`]; a quantized matrix's parts add
    /// [`crate::build::quant::CODES_SUFFIX`] and the others to its name).
    pub name: String,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Byte offset in the data file.
    pub offset: u64,
    /// Byte length in the data file.
    pub length: u64,
    /// ONNX element type (`DT_FLOAT`, or `DT_UINT8` for codes and zero points).
    pub data_type: i32,
    /// On a quantized matrix's codes: its layout (the graph then multiplies with `MatMulNBits`).
    pub quant: Option<QuantLayout>,
}

/// A matrix stored as `MatMulNBits` codes: `[k, n]` in MatMul terms, quantized with `spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantLayout {
    /// Input features.
    pub k: usize,
    /// Output features.
    pub n: usize,
    /// The quantization.
    pub spec: QuantSpec,
}

/// The canonical names of the weights in `weights` (a quantized matrix by its own name) and the
/// quantized matrices' layouts.
fn known_weights(weights: &[ExternalTensor]) -> (BTreeSet<String>, HashMap<String, QuantLayout>) {
    let mut known: BTreeSet<String> = weights.iter().map(|t| t.name.clone()).collect();
    let mut quant = HashMap::new();
    for t in weights {
        if let (Some(layout), Some(base)) = (t.quant, t.name.strip_suffix(CODES_SUFFIX)) {
            known.insert(base.to_string());
            quant.insert(base.to_string(), layout);
        }
    }
    (known, quant)
}

/// Hook names of one block, in TransformerLens spelling.
pub fn hook_name(layer: usize, hook: &str) -> String {
    format!("blocks.{layer}.hook_{hook}")
}

/// The lens graph's key/value cache input of layer `l` (`kind` `key` or `value`):
/// `[1, n_kv_heads, past, d_head]`, keys after rotary and q/k norm. It defaults to an empty
/// cache (`past` = 0), so a caller that feeds only `input_ids` runs the whole prompt.
pub fn past_name(l: usize, kind: &str) -> String {
    format!("past_key_values.{l}.{kind}")
}

/// The lens graph's patch input: which residual site the patch replaces (int64 scalar; `-1`, the
/// default, none). Sites are numbered as the report's rows with sub-blocks: `0` the embeddings
/// (`blocks.0.hook_resid_pre`), `2l + 1` layer `l`'s `resid_mid` (sequential blocks only), `2l + 2`
/// its `resid_post`.
pub const PATCH_SITE: &str = "patch_site";
/// The lens graph's patch input: which of the run's rows (positions after the cached ones) is
/// replaced (int64 scalar; `-1`, the default, none; `-2` every row).
pub const PATCH_ROW: &str = "patch_row";
/// The lens graph's patch input: the replacement `[1, rows, d_model]`, `rows` 1 (one vector for
/// every selected row) or the run's row count (default: one zero vector).
pub const PATCH_VALUE: &str = "patch_value";

/// The lens graph's key/value output of layer `l`: the past keys (values) followed by those of
/// the new positions, `[1, n_kv_heads, past + pos, d_head]`; feed it back as [`past_name`].
pub fn present_name(l: usize, kind: &str) -> String {
    format!("present.{l}.{kind}")
}

/// ONNX Runtime's contrib operator domain (`MatMulNBits`).
pub const MS_DOMAIN: &str = "com.microsoft";

/// Input of the last-block graph: residual streams `[sites, pos, d_model]`.
pub const LAST_BLOCK_INPUT: &str = "resid";
/// Output of the last-block graph: the last block applied to each input sequence.
pub const LAST_BLOCK_OUTPUT: &str = "last_block";
/// Output of the last-block graph: `x + mlp(norm(x))` with the last block's MLP.
pub const LAST_MLP_OUTPUT: &str = "last_mlp";

/// Accumulates nodes and constant initializers of a graph.
#[derive(Default)]
pub struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    counter: usize,
}

/// An integer attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_proto::AttributeType::Int as i32), i: Some(v), ..Default::default() }
}
/// A float attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_proto::AttributeType::Float as i32), f: Some(v), ..Default::default() }
}
/// An integer-list attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_proto::AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
}

impl Builder {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("/{hint}_{}", self.counter)
    }
    /// Adds a node with one output named `out` (or a fresh name) and returns that name.
    pub fn op(&mut self, op: &str, inputs: &[&str], out: Option<&str>, attrs: Vec<AttributeProto>) -> String {
        let out = out.map_or_else(|| self.fresh(op), str::to_string);
        self.push(op, inputs, vec![out.clone()], attrs);
        out
    }
    /// Adds a node of operator domain `domain` (`com.microsoft`) with one fresh output.
    pub fn op_in(&mut self, domain: &str, op: &str, inputs: &[&str], out: Option<&str>, attrs: Vec<AttributeProto>) -> String {
        let out = out.map_or_else(|| self.fresh(op), str::to_string);
        self.push(op, inputs, vec![out.clone()], attrs);
        if let Some(n) = self.nodes.last_mut() {
            n.domain = Some(domain.into());
        }
        out
    }
    /// Adds a node with `N` fresh outputs.
    pub fn op_multi<const N: usize>(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> [String; N] {
        let outs: [String; N] = std::array::from_fn(|_| self.fresh(op));
        self.push(op, inputs, outs.to_vec(), attrs);
        outs
    }
    fn push(&mut self, op: &str, inputs: &[&str], output: Vec<String>, attribute: Vec<AttributeProto>) {
        let node = self.node(op, inputs, output, attribute);
        self.nodes.push(node);
    }
    /// A node named from this builder's counter, not added to its graph (a branch's).
    fn node(&mut self, op: &str, inputs: &[&str], output: Vec<String>, attribute: Vec<AttributeProto>) -> NodeProto {
        let name = self.fresh(&format!("{op}_node"));
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name),
            input: inputs.iter().map(|s| (*s).to_string()).collect(),
            output,
            attribute,
            ..Default::default()
        }
    }
    /// A constant of element type `data_type` from its little-endian bytes.
    fn const_raw(&mut self, hint: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto { name: Some(name.clone()), dims: dims.to_vec(), data_type: Some(data_type), raw_data: Some(raw), ..Default::default() });
        name
    }
    /// An int64 constant.
    pub fn const_i64(&mut self, hint: &str, dims: &[i64], values: &[i64]) -> String {
        self.const_raw(hint, dims, DT_INT64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    /// An f32 constant tensor.
    pub fn const_f32s(&mut self, hint: &str, dims: &[i64], values: &[f32]) -> String {
        self.const_raw(hint, dims, DT_FLOAT, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    /// A uint8 constant tensor (`MatMulNBits` codes and zero points in tests).
    pub fn const_u8s(&mut self, hint: &str, dims: &[i64], values: &[u8]) -> String {
        self.const_raw(hint, dims, DT_UINT8, values.to_vec())
    }
    /// The default value of the optional graph input `name`: an initializer of the same name
    /// (element type `data_type`, little-endian `raw` bytes).
    fn default_input(&mut self, name: &str, dims: Vec<i64>, data_type: i32, raw: Vec<u8>) {
        self.inits.push(TensorProto { name: Some(name.into()), dims, data_type: Some(data_type), raw_data: Some(raw), ..Default::default() });
    }
    /// An empty f32 tensor named `name` (a zero among `dims`): the default of an optional input.
    pub fn empty_f32(&mut self, name: &str, dims: &[i64]) {
        self.inits.push(TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DT_FLOAT),
            raw_data: Some(Vec::new()),
            ..Default::default()
        });
    }
    /// An f32 scalar constant.
    pub fn const_f32(&mut self, hint: &str, value: f32) -> String {
        self.const_f32s(hint, &[], &[value])
    }

    /// A model of this builder's nodes and constants alone (no external weights; opset 17).
    pub fn into_model(self, name: &str, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> ModelProto {
        let opset_import = opset_imports(&self.nodes);
        let graph = GraphProto { name: Some(name.into()), node: self.nodes, initializer: self.inits, input: inputs, output: outputs, ..Default::default() };
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("logit-lens".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            opset_import,
            graph: Some(graph),
            ..Default::default()
        }
    }
}

/// The opsets a graph of `nodes` imports: ONNX 17, and `com.microsoft` 1 where a node uses it.
fn opset_imports(nodes: &[NodeProto]) -> Vec<OperatorSetIdProto> {
    let mut opsets = vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }];
    if uses_domain(nodes, MS_DOMAIN) {
        opsets.push(OperatorSetIdProto { domain: Some(MS_DOMAIN.into()), version: Some(1) });
    }
    opsets
}

/// Whether a node of `nodes`, or of a subgraph of theirs (an `If`'s branches), is of `domain`.
fn uses_domain(nodes: &[NodeProto], domain: &str) -> bool {
    nodes.iter().any(|n| n.domain.as_deref() == Some(domain) || n.attribute.iter().filter_map(|a| a.g.as_ref()).any(|g| uses_domain(&g.node, domain)))
}

fn external_init(t: &ExternalTensor, data_file: &str) -> TensorProto {
    let kv = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
    TensorProto {
        name: Some(t.name.clone()),
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(t.data_type),
        data_location: Some(tensor_proto::DataLocation::External as i32),
        external_data: vec![kv("location", data_file.into()), kv("offset", t.offset.to_string()), kv("length", t.length.to_string())],
        ..Default::default()
    }
}

/// The declared type and shape of a graph input or output (`Err(name)`: a symbolic dimension).
pub fn value_info(name: &str, elem: i32, dims: &[std::result::Result<usize, &str>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Ok(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
                Err(p) => tensor_shape_proto::dimension::Value::DimParam((*p).to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(elem), shape: Some(TensorShapeProto { dim }) })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The outputs of one block graph.
#[derive(Debug, Clone)]
pub struct BlockOut {
    /// `hook_attn_out`.
    pub attn_out: String,
    /// `hook_resid_mid` (sequential blocks only).
    pub resid_mid: Option<String>,
    /// `hook_mlp_out`.
    pub mlp_out: String,
    /// `hook_resid_post`.
    pub resid_post: String,
}

/// A graph under construction: the builder, the model, the weights it may use and the shared
/// per-sequence constants (positions, masks, rotary tables), each built once.
pub struct GraphCtx<'a> {
    /// The model.
    pub arch: &'a Arch,
    /// The nodes so far.
    pub b: Builder,
    known: BTreeSet<String>,
    quant: HashMap<String, QuantLayout>,
    /// Weights stored in f16 (a quantized bundle's untied embedding).
    half: BTreeSet<String>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    /// Absolute positions of the graph's rows as int64 `[pos]`: `0..pos`, or `past..past + pos`
    /// in the lens graph with a key/value cache.
    pub range: String,
    /// Positions of the keys `0..past + pos` (equal to `range` without a cache).
    key_range: String,
    /// Attention concatenates the cached keys and values ([`past_name`]) and outputs them
    /// ([`present_name`]).
    pub cache: bool,
    masks: HashMap<Option<usize>, String>,
    /// Per (base, linear factor, llama3 scaling): the `(cos, sin)` values.
    rope: HashMap<(u64, Option<u64>, bool), (String, String)>,
    name_hooks: bool,
    /// `[0, 0, n_heads, d_head]` for Reshape.
    pub heads_shape: String,
    /// `[0, 0, n_kv_heads, d_head]` for Reshape.
    pub kv_heads_shape: String,
    /// `[0, 0, n_heads · d_head]` for Reshape.
    pub attn_shape: String,
    /// The patch inputs' row selection `[1, pos, 1]` (bool), when the graph takes a patch.
    patch_rows: Option<String>,
    /// Nodes are being written into a skippable block's branch ([`skip`]).
    in_branch: bool,
}

impl<'a> GraphCtx<'a> {
    /// A context whose sequence length is axis 1 of `x` (`input_ids` `[1, pos]` or a residual
    /// `[batch, pos, d_model]`). `name_hooks`: give hook outputs their TransformerLens names.
    /// `cache`: the rows follow `past` cached positions, whose count is axis 2 of layer 0's cached
    /// keys.
    fn new(arch: &'a Arch, weights: &[ExternalTensor], x: &str, name_hooks: bool, cache: bool) -> Self {
        let (known, quant) = known_weights(weights);
        let half = weights.iter().filter(|t| t.data_type == DT_FLOAT16).map(|t| t.name.clone()).collect();
        let mut b = Builder::default();
        let shp = b.op("Shape", &[x], None, vec![]);
        let one_idx = b.const_i64("idx1", &[], &[1]);
        let n = b.op("Gather", &[&shp, &one_idx], None, vec![attr_int("axis", 0)]);
        let zero = b.const_i64("zero", &[], &[0]);
        let one = b.const_i64("one", &[], &[1]);
        let (range, key_range) = if cache {
            let past_shape = b.op("Shape", &[&past_name(0, "key")], None, vec![]);
            let two_idx = b.const_i64("idx2", &[], &[2]);
            let past = b.op("Gather", &[&past_shape, &two_idx], None, vec![attr_int("axis", 0)]);
            let total = b.op("Add", &[&past, &n], None, vec![]);
            let range = b.op("Range", &[&past, &total, &one], None, vec![]);
            let keys = b.op("Range", &[&zero, &total, &one], None, vec![]);
            (range, keys)
        } else {
            let range = b.op("Range", &[&zero, &n, &one], None, vec![]);
            (range.clone(), range)
        };
        let (h, kv, dh) = (arch.shape.n_heads as i64, arch.n_kv_heads as i64, arch.d_head() as i64);
        let heads_shape = b.const_i64("heads_shape", &[4], &[0, 0, h, dh]);
        let kv_heads_shape = b.const_i64("kv_heads_shape", &[4], &[0, 0, kv, dh]);
        let attn_shape = b.const_i64("attn_shape", &[3], &[0, 0, h * dh]);
        Self {
            arch,
            b,
            known,
            quant,
            half,
            used: BTreeSet::new(),
            missing: Vec::new(),
            range,
            key_range,
            cache,
            masks: HashMap::new(),
            rope: HashMap::new(),
            name_hooks,
            heads_shape,
            kv_heads_shape,
            attn_shape,
            patch_rows: None,
            in_branch: false,
        }
    }

    /// Makes this graph take a patch ([`PATCH_SITE`], [`PATCH_ROW`], [`PATCH_VALUE`], each with a
    /// default that patches nothing) and returns their input descriptions. `x` is the input whose
    /// axis 1 is the run's rows.
    fn enable_patch(&mut self, x: &str) -> Vec<ValueInfoProto> {
        let d = self.arch.shape.d_model;
        let b = &mut self.b;
        b.default_input(PATCH_SITE, vec![], DT_INT64, (-1i64).to_le_bytes().to_vec());
        b.default_input(PATCH_ROW, vec![], DT_INT64, (-1i64).to_le_bytes().to_vec());
        b.default_input(PATCH_VALUE, vec![1, 1, d as i64], DT_FLOAT, vec![0u8; d * 4]);
        let shp = b.op("Shape", &[x], None, vec![]);
        let one_idx = b.const_i64("idx1", &[], &[1]);
        let n = b.op("Gather", &[&shp, &one_idx], None, vec![attr_int("axis", 0)]);
        let zero = b.const_i64("zero", &[], &[0]);
        let one = b.const_i64("one", &[], &[1]);
        let rows = b.op("Range", &[&zero, &n, &one], None, vec![]);
        let this_row = b.op("Equal", &[&rows, PATCH_ROW], None, vec![]);
        let all = b.const_i64("all_rows", &[], &[-2]);
        let every = b.op("Equal", &[PATCH_ROW, &all], None, vec![]);
        let selected = b.op("Or", &[&this_row, &every], None, vec![]);
        let axes = b.const_i64("patch_axes", &[2], &[0, 2]);
        self.patch_rows = Some(b.op("Unsqueeze", &[&selected, &axes], None, vec![]));
        vec![value_info(PATCH_SITE, DT_INT64, &[]), value_info(PATCH_ROW, DT_INT64, &[]), value_info(PATCH_VALUE, DT_FLOAT, &[Ok(1), Err("patch_rows"), Ok(d)])]
    }

    /// `op(inputs)`, the residual at patch site `site` (see [`PATCH_SITE`]), named `out`: where the
    /// graph takes a patch and its inputs select this site, the rows they select are replaced by
    /// [`PATCH_VALUE`] (what follows, and the hook, see the replacement).
    pub fn residual_site(&mut self, site: usize, op: &str, inputs: &[&str], out: Option<&str>) -> String {
        let Some(rows) = self.patch_rows.clone() else { return self.b.op(op, inputs, out, vec![]) };
        let raw = self.b.op(op, inputs, None, vec![]);
        let id = self.b.const_i64("site_id", &[], &[site as i64]);
        let here = self.b.op("Equal", &[&id, PATCH_SITE], None, vec![]);
        let cond = self.b.op("And", &[&here, &rows], None, vec![]);
        self.b.op("Where", &[&cond, PATCH_VALUE, &raw], out, vec![])
    }

    /// Lists initializer `name` in the graph without a node using it, where the plan writes it.
    pub fn keep(&mut self, name: &str) {
        if self.known.contains(name) {
            self.used.insert(name.to_string());
        }
    }

    /// A weight by canonical name. A name that the tensor plan lacks is recorded and reported
    /// when the graph is finished (the plan and the graph must agree).
    pub fn w(&mut self, name: &str) -> String {
        if let Some(q) = self.quant.get(name) {
            self.used.insert(format!("{name}{CODES_SUFFIX}"));
            self.used.insert(format!("{name}{SCALES_SUFFIX}"));
            if !q.spec.symmetric {
                self.used.insert(format!("{name}{ZERO_POINTS_SUFFIX}"));
            }
        } else if self.known.contains(name) {
            self.used.insert(name.to_string());
        } else {
            self.missing.push(name.to_string());
        }
        name.to_string()
    }

    /// Whether weight `name` is stored in f16 (the graph casts what it reads to f32).
    pub fn is_half(&self, name: &str) -> bool {
        self.half.contains(name)
    }

    /// The layout of weight `name` when it is stored as `MatMulNBits` codes.
    pub fn quantized(&self, name: &str) -> Option<QuantLayout> {
        self.quant.get(name).copied()
    }

    /// The output name of hook `blocks.{l}.hook_{hook}` in the main graph; `None` (a fresh name)
    /// in the last-block graph. The node that computes the hook writes it directly (no copy).
    pub fn hook(&self, l: usize, hook: &str) -> Option<String> {
        self.name_hooks.then(|| self.scoped(hook_name(l, hook)))
    }

    /// `name` as a node inside a skippable block's branch writes it (see [`skip`]): the `If`
    /// around the block outputs `name` itself.
    pub fn scoped(&self, name: String) -> String {
        if self.in_branch { format!("{name}{}", skip::INNER_SUFFIX) } else { name }
    }

    /// The boolean mask `[pos, keys]`, true where attention is not allowed: the future, and with
    /// a window `w` also keys `w` or more positions back.
    pub fn mask(&mut self, window: Option<usize>) -> String {
        if let Some(m) = self.masks.get(&window) {
            return m.clone();
        }
        let b = &mut self.b;
        let ax1 = b.const_i64("ax1", &[1], &[1]);
        let ax0 = b.const_i64("ax0", &[1], &[0]);
        let rows = b.op("Unsqueeze", &[&self.range, &ax1], None, vec![]);
        let cols = b.op("Unsqueeze", &[&self.key_range, &ax0], None, vec![]);
        let diff = b.op("Sub", &[&rows, &cols], None, vec![]);
        let zero = b.const_i64("izero", &[], &[0]);
        let mut masked = b.op("Less", &[&diff, &zero], None, vec![]);
        if let Some(w) = window {
            let last = b.const_i64("window_last", &[], &[w.saturating_sub(1) as i64]);
            let far = b.op("Greater", &[&diff, &last], None, vec![]);
            masked = b.op("Or", &[&masked, &far], None, vec![]);
        }
        self.masks.insert(window, masked.clone());
        masked
    }

    /// Rotary `(cos, sin)` of every position and frequency `[pos, dim/2]` (interleaved: `[pos, dim/2, 1]`)
    /// for layer `l` (Gemma 3's sliding layers use their own base).
    pub fn rope(&mut self, l: usize) -> Option<(String, String)> {
        let Positions::Rotary(mut r) = self.arch.positions else { return None };
        if let (Some(local), Some(Some(_))) = (self.arch.local_rope_base, self.arch.windows.get(l)) {
            // Gemma 3's sliding layers: their own base, never scaled.
            r.base = local;
            r.llama3 = None;
            r.linear = None;
        }
        let key = (r.base.to_bits(), r.linear.map(f64::to_bits), r.llama3.is_some());
        if let Some(cs) = self.rope.get(&key) {
            return Some(cs.clone());
        }
        let half = r.dim / 2;
        let inv: Vec<f32> = r.inv_freq().into_iter().map(|f| f as f32).collect();
        let b = &mut self.b;
        let inv = b.const_f32s("inv_freq", &[1, half as i64], &inv);
        let pos = b.op("Cast", &[&self.range], None, vec![attr_int("to", i64::from(DT_FLOAT))]);
        let ax1 = b.const_i64("ax1", &[1], &[1]);
        let pos = b.op("Unsqueeze", &[&pos, &ax1], None, vec![]);
        let mut freqs = b.op("Mul", &[&pos, &inv], None, vec![]);
        if r.interleaved {
            let axl = b.const_i64("axlast", &[1], &[2]);
            freqs = b.op("Unsqueeze", &[&freqs, &axl], None, vec![]);
        }
        let cos = b.op("Cos", &[&freqs], None, vec![]);
        let sin = b.op("Sin", &[&freqs], None, vec![]);
        self.rope.insert(key, (cos.clone(), sin.clone()));
        Some((cos, sin))
    }

    fn finish(
        self,
        name: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        weights: &[ExternalTensor],
        data_file: &str,
        metadata: &[(String, String)],
    ) -> Result<ModelProto> {
        if !self.missing.is_empty() {
            let mut m = self.missing;
            m.sort();
            m.dedup();
            return Err(LensError::invalid(format!("internal: the {name} graph uses initializers that the tensor plan does not write: {}", m.join(", "))));
        }
        let mut initializer: Vec<TensorProto> = weights.iter().filter(|t| self.used.contains(&t.name)).map(|t| external_init(t, data_file)).collect();
        initializer.extend(self.b.inits);
        let opset_import = opset_imports(&self.b.nodes);
        let graph = GraphProto { name: Some(name.into()), node: self.b.nodes, initializer, input: inputs, output: outputs, ..Default::default() };
        Ok(ModelProto {
            ir_version: Some(8),
            producer_name: Some("logit-lens".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            opset_import,
            graph: Some(graph),
            metadata_props: metadata.iter().map(|(k, v)| StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) }).collect(),
            ..Default::default()
        })
    }
}

/// A family's block: adds layer `l`'s graph on the residual `x`. The caller passes the family's
/// own ([`crate::build::arch::block_fn`]), so the graph names no family.
pub type BlockFn = fn(&mut GraphCtx<'_>, usize, &str) -> BlockOut;

/// The hook outputs a bundle of `arch` has per layer, in order.
pub fn hooks_of(residual: Residual) -> &'static [&'static str] {
    match residual {
        Residual::Sequential => &["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"],
        Residual::Parallel => &["resid_pre", "attn_out", "mlp_out", "resid_post"],
    }
}

/// Builds the lens model: input `input_ids` `[1, pos]`; outputs every hook `[1, pos, d_model]`
/// and `logits` `[1, pos, d_vocab]` (not where the unembedding is f16: see
/// [`crate::build::quant::stores_half`]). `weights` are the converter's written tensors; `tied`: the
/// unembedding is `embed.W_E`.
pub fn build_lens_model(
    arch: &Arch,
    block: BlockFn,
    weights: &[ExternalTensor],
    data_file: &str,
    tied: bool,
    metadata: &[(String, String)],
) -> Result<ModelProto> {
    let mut g = GraphCtx::new(arch, weights, "input_ids", true, arch.shape.n_layers > 0);
    let mut patch_inputs = g.enable_patch("input_ids");
    patch_inputs.extend(g.enable_start(!g.is_half(Arch::unembed_name(tied))));
    let x0 = ops::embed(&mut g, "input_ids");
    let x0 = g.start_or(&x0);
    let mut x = g.residual_site(0, "Identity", &[&x0], Some(&hook_name(0, "resid_pre")));
    g.shared_tables();
    for l in 0..arch.shape.n_layers {
        if l > 0 {
            x = g.b.op("Identity", &[&x], Some(&hook_name(l, "resid_pre")), vec![]);
        }
        x = g.skippable_block(block, l, &x);
    }
    // An f16 unembedding (a quantized bundle's) is not multiplied by here: a Cast of it would be
    // folded into a second, f32 copy. The lens kernel reads it and is the model's head.
    let head = !g.is_half(Arch::unembed_name(tied));
    if head {
        // In an `If` on `with_logits`: a patched run that needs only the last residual skips it.
        g.skippable_head("logits", |g, out| {
            let lnf = ops::norm(g, &x, &names::final_norm(), arch.shape.eps);
            let d = arch.shape.d_model as i64;
            let flat_shape = g.b.const_i64("flat_shape", &[2], &[-1, d]);
            let flat = g.b.op("Reshape", &[&lnf, &flat_shape], None, vec![]);
            let unembed = g.w(Arch::unembed_name(tied));
            let mut gemm_in = vec![flat.as_str(), unembed.as_str()];
            let bias = arch.unembed_bias_key.map(|_| g.w(names::UNEMBED_BIAS));
            if let Some(b) = &bias {
                gemm_in.push(b);
            }
            let mut logits2 = g.b.op("Gemm", &gemm_in, None, vec![attr_int("transB", 1)]);
            if let Some(cap) = arch.final_softcap {
                logits2 = ops::softcap(g, &logits2, cap);
            }
            let logits_shape = g.b.const_i64("logits_shape", &[3], &[1, -1, arch.shape.d_vocab as i64]);
            g.b.op("Reshape", &[&logits2, &logits_shape], Some(out), vec![]);
        });
    } else {
        // The decoder still reads the head's weights from this graph's initializers (ONNX Runtime
        // drops initializers no node uses before it loads them).
        for name in [names::LN_FINAL_W, names::LN_FINAL_B, Arch::unembed_name(tied), names::UNEMBED_BIAS] {
            g.keep(name);
        }
    }

    let mut outputs = Vec::new();
    let resid: [std::result::Result<usize, &str>; 3] = [Ok(1), Err("pos"), Ok(arch.shape.d_model)];
    for l in 0..arch.shape.n_layers {
        for hook in hooks_of(arch.residual) {
            outputs.push(value_info(&hook_name(l, hook), DT_FLOAT, &resid));
        }
    }
    if head {
        outputs.push(value_info("logits", DT_FLOAT, &[Ok(1), Err("pos"), Ok(arch.shape.d_vocab)]));
    }
    let mut inputs = vec![value_info("input_ids", DT_INT64, &[Ok(1), Err("pos")])];
    inputs.extend(patch_inputs);
    if g.cache {
        // The cache: inputs with an empty default (an initializer of the same name), outputs.
        let (kv, dh) = (arch.n_kv_heads, arch.d_head());
        for l in 0..arch.shape.n_layers {
            for kind in ["key", "value"] {
                let past = past_name(l, kind);
                inputs.push(value_info(&past, DT_FLOAT, &[Ok(1), Ok(kv), Err("past"), Ok(dh)]));
                g.b.empty_f32(&past, &[1, kv as i64, 0, dh as i64]);
                outputs.push(value_info(&present_name(l, kind), DT_FLOAT, &[Ok(1), Ok(kv), Err("past_and_pos"), Ok(dh)]));
            }
        }
    }
    g.finish(&format!("{}_lens", arch.family.model_type()), inputs, outputs, weights, data_file, metadata)
}

/// Builds the last-block graph: input [`LAST_BLOCK_INPUT`] `[sites, pos, d_model]`, outputs
/// [`LAST_BLOCK_OUTPUT`] (the last block applied to each sequence, positions `0..pos`, its own
/// mask and window) and [`LAST_MLP_OUTPUT`] (`x + mlp(norm(x))` with the last block's MLP).
pub fn build_last_block_model(arch: &Arch, block: BlockFn, weights: &[ExternalTensor], data_file: &str) -> Result<ModelProto> {
    let mut g = GraphCtx::new(arch, weights, LAST_BLOCK_INPUT, false, false);
    let last = arch.shape.n_layers.saturating_sub(1);
    let out = block(&mut g, last, LAST_BLOCK_INPUT);
    g.b.op("Identity", &[&out.resid_post], Some(LAST_BLOCK_OUTPUT), vec![]);
    let mlp = ops::mlp_residual(&mut g, last, LAST_BLOCK_INPUT);
    g.b.op("Identity", &[&mlp], Some(LAST_MLP_OUTPUT), vec![]);
    let dims: [std::result::Result<usize, &str>; 3] = [Err("sites"), Err("pos"), Ok(arch.shape.d_model)];
    let inputs = vec![value_info(LAST_BLOCK_INPUT, DT_FLOAT, &dims)];
    let outputs = vec![value_info(LAST_BLOCK_OUTPUT, DT_FLOAT, &dims), value_info(LAST_MLP_OUTPUT, DT_FLOAT, &dims)];
    g.finish(&format!("{}_last_block", arch.family.model_type()), inputs, outputs, weights, data_file, &[])
}
