//! Builds the GPT-2 lens graph (ONNX, opset 17) that exposes every TransformerLens hook point.
//!
//! Weights are referenced as external-data initializers; the converter writes their bytes.

use crate::config::ModelShape;
use crate::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto, tensor_proto, tensor_shape_proto, type_proto,
    DT_FLOAT, DT_INT64,
};

/// Where one weight tensor lives in the external data file.
#[derive(Debug, Clone)]
pub struct ExternalTensor {
    /// Initializer name (Hugging Face name without the `transformer.` prefix).
    pub name: String,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Byte offset in the data file.
    pub offset: u64,
    /// Byte length in the data file.
    pub length: u64,
}

/// Hook names of one block, in TransformerLens spelling.
pub fn hook_name(layer: usize, hook: &str) -> String {
    format!("blocks.{layer}.hook_{hook}")
}

/// Accumulates nodes and initializers of a graph.
#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    counter: usize,
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_proto::AttributeType::Int as i32), i: Some(v), ..Default::default() }
}
fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_proto::AttributeType::Float as i32), f: Some(v), ..Default::default() }
}
fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_proto::AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
}

impl Builder {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("/{hint}_{}", self.counter)
    }
    /// Adds a node with one output named `out` (or a fresh name) and returns that name.
    fn op(&mut self, op: &str, inputs: &[&str], out: Option<&str>, attrs: Vec<AttributeProto>) -> String {
        let out = out.map_or_else(|| self.fresh(op), str::to_string);
        let name = self.fresh(&format!("{op}_node"));
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(name),
            input: inputs.iter().map(|s| (*s).to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }
    fn const_i64(&mut self, hint: &str, dims: &[i64], values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DT_INT64),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }
    fn const_f32(&mut self, hint: &str, value: f32) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![],
            data_type: Some(DT_FLOAT),
            raw_data: Some(value.to_le_bytes().to_vec()),
            ..Default::default()
        });
        name
    }
}

fn external_init(t: &ExternalTensor, data_file: &str) -> TensorProto {
    let kv = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
    TensorProto {
        name: Some(t.name.clone()),
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DT_FLOAT),
        data_location: Some(tensor_proto::DataLocation::External as i32),
        external_data: vec![kv("location", data_file.into()), kv("offset", t.offset.to_string()), kv("length", t.length.to_string())],
        ..Default::default()
    }
}

fn value_info(name: &str, elem: i32, dims: &[Result<usize, &str>]) -> ValueInfoProto {
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
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Names of the initializers the graph expects for layer `l` (HF names without prefix).
pub fn block_weight_names(l: usize) -> [String; 12] {
    let p = format!("h.{l}.");
    [
        format!("{p}ln_1.weight"),
        format!("{p}ln_1.bias"),
        format!("{p}attn.c_attn.weight"),
        format!("{p}attn.c_attn.bias"),
        format!("{p}attn.c_proj.weight"),
        format!("{p}attn.c_proj.bias"),
        format!("{p}ln_2.weight"),
        format!("{p}ln_2.bias"),
        format!("{p}mlp.c_fc.weight"),
        format!("{p}mlp.c_fc.bias"),
        format!("{p}mlp.c_proj.weight"),
        format!("{p}mlp.c_proj.bias"),
    ]
}

/// Builds the full lens model proto. `weights` must hold `wte.weight`, `wpe.weight`, every
/// [`block_weight_names`] entry, `ln_f.weight` and `ln_f.bias` (and `unembed`, `[d_vocab, d_model]`,
/// when it is not `wte.weight`); `metadata` goes into `metadata_props`.
pub fn build_gpt2_lens_model(
    shape: &ModelShape,
    weights: &[ExternalTensor],
    data_file: &str,
    unembed: &str,
    metadata: &[(String, String)],
) -> ModelProto {
    let mut b = Builder::default();
    let d = shape.d_model as i64;
    let h = shape.n_heads as i64;
    let dh = d / h;
    let eps = shape.eps as f32;

    // Embedding: token + learned position.
    let tok = b.op("Gather", &["wte.weight", "input_ids"], None, vec![attr_int("axis", 0)]);
    let shp = b.op("Shape", &["input_ids"], None, vec![]);
    let one_idx = b.const_i64("idx1", &[], &[1]);
    let n = b.op("Gather", &[&shp, &one_idx], None, vec![attr_int("axis", 0)]);
    let zero = b.const_i64("zero", &[], &[0]);
    let one = b.const_i64("one", &[], &[1]);
    let range = b.op("Range", &[&zero, &n, &one], None, vec![]);
    let pe = b.op("Gather", &["wpe.weight", &range], None, vec![attr_int("axis", 0)]);
    let x0 = b.op("Add", &[&tok, &pe], Some(&hook_name(0, "resid_pre")), vec![]);

    // Causal mask [pos, pos]: true where attention is NOT allowed.
    let axes0 = b.const_i64("axes0", &[1], &[0]);
    let n1 = b.op("Unsqueeze", &[&n, &axes0], None, vec![]);
    let nn = b.op("Concat", &[&n1, &n1], None, vec![attr_int("axis", 0)]);
    let ones = {
        let name = b.fresh("ConstantOfShape");
        let value = TensorProto { name: Some("value".into()), dims: vec![1], data_type: Some(DT_FLOAT), raw_data: Some(1.0f32.to_le_bytes().to_vec()), ..Default::default() };
        let node_name = b.fresh("ConstantOfShape_node");
        b.nodes.push(NodeProto {
            op_type: Some("ConstantOfShape".into()),
            name: Some(node_name),
            input: vec![nn.clone()],
            output: vec![name.clone()],
            attribute: vec![AttributeProto { name: Some("value".into()), r#type: Some(attribute_proto::AttributeType::Tensor as i32), t: Some(value), ..Default::default() }],
            ..Default::default()
        });
        name
    };
    let tril = b.op("Trilu", &[&ones], None, vec![attr_int("upper", 0)]);
    let fzero = b.const_f32("fzero", 0.0);
    let masked = b.op("Equal", &[&tril, &fzero], None, vec![]);
    let neg = b.const_f32("neg_big", f32::MIN);
    let scale = b.const_f32("attn_scale", 1.0 / (dh as f32).sqrt());
    let split = b.const_i64("qkv_split", &[3], &[d, d, d]);
    let heads_shape = b.const_i64("heads_shape", &[4], &[1, -1, h, dh]);
    let model_shape = b.const_i64("model_shape", &[3], &[1, -1, d]);
    let c_half = b.const_f32("half", 0.5);
    let c_one = b.const_f32("fone", 1.0);
    let c_k = b.const_f32("gelu_k", 0.044715);
    let c_s = b.const_f32("gelu_s", (2.0f64 / std::f64::consts::PI).sqrt() as f32);

    let mut x = x0;
    for l in 0..shape.n_layers {
        let [ln1_w, ln1_b, qkv_w, qkv_b, o_w, o_b, ln2_w, ln2_b, fc_w, fc_b, pr_w, pr_b] = block_weight_names(l);
        if l > 0 {
            x = b.op("Identity", &[&x], Some(&hook_name(l, "resid_pre")), vec![]);
        }
        let ln = b.op("LayerNormalization", &[&x, &ln1_w, &ln1_b], None, vec![attr_int("axis", -1), attr_float("epsilon", eps)]);
        let qkv = b.op("MatMul", &[&ln, &qkv_w], None, vec![]);
        let qkv = b.op("Add", &[&qkv, &qkv_b], None, vec![]);
        let (q, k, v) = {
            let names = [b.fresh("q"), b.fresh("k"), b.fresh("v")];
            let node_name = b.fresh("Split_node");
            b.nodes.push(NodeProto {
                op_type: Some("Split".into()),
                name: Some(node_name),
                input: vec![qkv.clone(), split.clone()],
                output: names.to_vec(),
                attribute: vec![attr_int("axis", 2)],
                ..Default::default()
            });
            let [q, k, v] = names;
            (q, k, v)
        };
        let q = b.op("Reshape", &[&q, &heads_shape], None, vec![]);
        let q = b.op("Transpose", &[&q], None, vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = b.op("Reshape", &[&k, &heads_shape], None, vec![]);
        let kt = b.op("Transpose", &[&k], None, vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = b.op("Reshape", &[&v, &heads_shape], None, vec![]);
        let v = b.op("Transpose", &[&v], None, vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = b.op("MatMul", &[&q, &kt], None, vec![]);
        let scores = b.op("Mul", &[&scores, &scale], None, vec![]);
        let scores = b.op("Where", &[&masked, &neg, &scores], None, vec![]);
        let probs = b.op("Softmax", &[&scores], None, vec![attr_int("axis", -1)]);
        let ctx = b.op("MatMul", &[&probs, &v], None, vec![]);
        let ctx = b.op("Transpose", &[&ctx], None, vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let ctx = b.op("Reshape", &[&ctx, &model_shape], None, vec![]);
        let attn = b.op("MatMul", &[&ctx, &o_w], None, vec![]);
        let attn_out = b.op("Add", &[&attn, &o_b], Some(&hook_name(l, "attn_out")), vec![]);
        let mid = b.op("Add", &[&x, &attn_out], Some(&hook_name(l, "resid_mid")), vec![]);
        let ln = b.op("LayerNormalization", &[&mid, &ln2_w, &ln2_b], None, vec![attr_int("axis", -1), attr_float("epsilon", eps)]);
        let hid = b.op("MatMul", &[&ln, &fc_w], None, vec![]);
        let hid = b.op("Add", &[&hid, &fc_b], None, vec![]);
        // gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        let x2 = b.op("Mul", &[&hid, &hid], None, vec![]);
        let x3 = b.op("Mul", &[&x2, &hid], None, vec![]);
        let kx3 = b.op("Mul", &[&x3, &c_k], None, vec![]);
        let inner = b.op("Add", &[&hid, &kx3], None, vec![]);
        let inner = b.op("Mul", &[&inner, &c_s], None, vec![]);
        let th = b.op("Tanh", &[&inner], None, vec![]);
        let th1 = b.op("Add", &[&th, &c_one], None, vec![]);
        let hx = b.op("Mul", &[&hid, &c_half], None, vec![]);
        let act = b.op("Mul", &[&hx, &th1], None, vec![]);
        let mlp = b.op("MatMul", &[&act, &pr_w], None, vec![]);
        let mlp_out = b.op("Add", &[&mlp, &pr_b], Some(&hook_name(l, "mlp_out")), vec![]);
        x = b.op("Add", &[&mid, &mlp_out], Some(&hook_name(l, "resid_post")), vec![]);
    }
    let lnf = b.op("LayerNormalization", &[&x, "ln_f.weight", "ln_f.bias"], None, vec![attr_int("axis", -1), attr_float("epsilon", eps)]);
    let flat_shape = b.const_i64("flat_shape", &[2], &[-1, d]);
    let flat = b.op("Reshape", &[&lnf, &flat_shape], None, vec![]);
    let logits2 = b.op("Gemm", &[&flat, unembed], None, vec![attr_int("transB", 1)]);
    let logits_shape = b.const_i64("logits_shape", &[3], &[1, -1, shape.d_vocab as i64]);
    b.op("Reshape", &[&logits2, &logits_shape], Some("logits"), vec![]);

    let mut outputs = Vec::new();
    let resid = [Ok(1), Err("pos"), Ok(shape.d_model)];
    for l in 0..shape.n_layers {
        for hook in ["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"] {
            outputs.push(value_info(&hook_name(l, hook), DT_FLOAT, &resid));
        }
    }
    outputs.push(value_info("logits", DT_FLOAT, &[Ok(1), Err("pos"), Ok(shape.d_vocab)]));

    let mut initializer: Vec<TensorProto> = weights.iter().map(|t| external_init(t, data_file)).collect();
    initializer.extend(b.inits);
    let graph = GraphProto {
        name: Some("gpt2_lens".into()),
        node: b.nodes,
        initializer,
        input: vec![value_info("input_ids", DT_INT64, &[Ok(1), Err("pos")])],
        output: outputs,
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("logit-lens".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
        ..Default::default()
    }
}
