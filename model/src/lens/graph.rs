//! The lens as an ONNX graph, for execution providers other than our CPU kernel (README, "Metrics":
//! metrics, unchanged): one run per vocabulary chunk, the running state in and out.
//!
//! A run takes the prepared decoder inputs `x` `[R, d]` (rows position-major, whole positions),
//! the unembedding `w` `[V, d]` (and its bias), the chunk `start..end`, each row's final and input
//! row, each row's targets and their exact logits, and the state of the chunks before:
//!
//! * `m`, `s`: the running maximum and Σ e^{z−m} (online log-sum-exp);
//! * `h`: Σ e^{z−m}(z−m), for the entropy `ln s − h/s`;
//! * `cf`, `ci`: Σ e^{z_f−m_f}(z_f − z) against the final and the input row (the KLs are
//!   `cf/s_f − lse_f + lse`);
//! * `cnt`: per target, the tokens other than itself whose logit is above the target's exact logit
//!   (its rank − 1);
//! * `topv`, `topi`: the running top-k (ONNX `TopK` keeps the lower index first among equal values;
//!   earlier chunks come first, so ties go to the lower id, as in the kernel).
//!
//! Each chunk's sums are f32 (as the kernel's lanes), the running sums float64 (as the kernel's);
//! the state is rescaled whenever a maximum grows, as the kernel does. The graph has no weights (`w` is an
//! input, the same buffer the forward session uses), so it is built when the engine opens, for
//! every bundle, and runs on the forward pass's execution provider. [`LensGraph::run`] returns the
//! kernel's [`RowMetrics`], so the report is assembled by the same code.

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use prost::Message as _;

use crate::build::graph::{Builder, attr_int, attr_ints, value_info as io};
use crate::build::onnx::{DT_FLOAT, DT_INT64, ModelProto};
use crate::error::{LensError, Progress, Result, part};
use crate::lens::kernel::Decoder;
use crate::lens::metrics::{KernelSpec, NO_TARGET, RowMetrics, RowState, finalise};
use crate::run::runtime::{Device, ModelSource, create_session_from};

/// Rows per run at most (whole positions); with the engine's graph chunk (4096) the graph's
/// largest temporaries (the `[rows, chunk, targets]` comparison) stay near 100 MB.
const MAX_ROWS: usize = 2048;
/// Bytes the `[rows, chunk, targets]` comparison may take (f32): with many targets (a token group
/// of thousands of ids rides along as targets) a run takes fewer positions, then a smaller chunk.
const TEMP_BUDGET: usize = 128 << 20;
/// `TensorProto.DataType.DOUBLE`.
const DT_DOUBLE: i32 = 11;
/// The maximum's start value: far below any logit, finite (so `0 · (m₀ − m)` stays 0).
const M0: f32 = -1e30;

/// Which code computes the lens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LensPath {
    /// The graph on a GPU provider, the kernel on the CPU.
    #[default]
    Auto,
    /// The streaming CPU kernel ([`crate::lens::metrics::run_kernel`]).
    Kernel,
    /// The lens graph, on the forward pass's execution provider.
    Graph,
}

impl LensPath {
    /// Parses `auto`, `kernel` or `graph`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "kernel" => Some(Self::Kernel),
            "graph" => Some(Self::Graph),
            _ => None,
        }
    }
}

/// The lens-chunk graph for rows of width `d` (with an unembedding bias input when `bias`, the
/// logits soft-capped at `softcap`).
pub fn build(d: usize, bias: bool, softcap: Option<f32>) -> ModelProto {
    let mut b = Builder::default();
    let ax0 = b.const_i64("ax0", &[1], &[0]);
    let ax1 = b.const_i64("ax1", &[1], &[1]);
    let ax2 = b.const_i64("ax2", &[1], &[2]);
    // The chunk's logits [R, C].
    let wc = b.op("Slice", &["w", "start", "end", &ax0], None, vec![]);
    let mut z = b.op("Gemm", &["x", &wc], None, vec![attr_int("transB", 1)]);
    if bias {
        let bc = b.op("Slice", &["b", "start", "end", &ax0], None, vec![]);
        z = b.op("Add", &[&z, &bc], None, vec![]);
    }
    if let Some(c) = softcap {
        let cap = b.const_f32("cap", c);
        // tanh(u) = 1 − 2 / (1 + e^{2u}), from Exp: closer to the kernel's tanh than ONNX
        // Runtime's Tanh approximation on saturated logits (Gemma 2 under the raw decoder).
        let two_inv = b.const_f32("two_inv_cap", 2.0 / c);
        let one = b.const_f32("one_f", 1.0);
        let two = b.const_f32("two_f", 2.0);
        let u2 = b.op("Mul", &[&z, &two_inv], None, vec![]);
        let ex = b.op("Exp", &[&u2], None, vec![]);
        let den = b.op("Add", &[&ex, &one], None, vec![]);
        let q = b.op("Div", &[&two, &den], None, vec![]);
        let t = b.op("Sub", &[&one, &q], None, vec![]);
        z = b.op("Mul", &[&t, &cap], None, vec![]);
    }
    // Online log-sum-exp and the entropy's sum.
    // (ReduceMax takes its axes as an attribute until opset 18; ReduceSum as an input.)
    let cm = b.op("ReduceMax", &[&z], None, vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)]);
    let m_new = b.op("Max", &["m", &cm], Some("m_out"), vec![]);
    let m_col = b.op("Unsqueeze", &[&m_new, &ax1], None, vec![]);
    let zc = b.op("Sub", &[&z, &m_col], None, vec![]);
    let e = b.op("Exp", &[&zc], None, vec![]);
    // The running sums are float64 (each chunk's own sum is f32, as the kernel's lanes).
    let f64_ = |b: &mut Builder, x: &str| b.op("Cast", &[x], None, vec![attr_int("to", i64::from(DT_DOUBLE))]);
    let dm = b.op("Sub", &["m", &m_new], None, vec![]);
    let scale = b.op("Exp", &[&dm], None, vec![]);
    let scale64 = f64_(&mut b, &scale);
    let dm64 = f64_(&mut b, &dm);
    let es = b.op("ReduceSum", &[&e, &ax1], None, vec![attr_int("keepdims", 0)]);
    let es64 = f64_(&mut b, &es);
    let s_old = b.op("Mul", &["s", &scale64], None, vec![]);
    b.op("Add", &[&s_old, &es64], Some("s_out"), vec![]);
    let ez = b.op("Mul", &[&e, &zc], None, vec![]);
    let hs = b.op("ReduceSum", &[&ez, &ax1], None, vec![attr_int("keepdims", 0)]);
    let hs64 = f64_(&mut b, &hs);
    let dms = b.op("Mul", &[&dm64, "s"], None, vec![]);
    let h_shift = b.op("Add", &["h", &dms], None, vec![]);
    let h_old = b.op("Mul", &[&h_shift, &scale64], None, vec![]);
    b.op("Add", &[&h_old, &hs64], Some("h_out"), vec![]);
    // KL accumulators against each row's final and input row.
    for (idx, acc, out) in [("final_idx", "cf", "cf_out"), ("input_idx", "ci", "ci_out")] {
        let zr = b.op("Gather", &[&z, idx], None, vec![attr_int("axis", 0)]);
        let mr = b.op("Gather", &[&m_new, idx], None, vec![attr_int("axis", 0)]);
        let mr_col = b.op("Unsqueeze", &[&mr, &ax1], None, vec![]);
        let zrc = b.op("Sub", &[&zr, &mr_col], None, vec![]);
        let er = b.op("Exp", &[&zrc], None, vec![]);
        let diff = b.op("Sub", &[&zr, &z], None, vec![]);
        let w = b.op("Mul", &[&er, &diff], None, vec![]);
        let add = b.op("ReduceSum", &[&w, &ax1], None, vec![attr_int("keepdims", 0)]);
        let add64 = f64_(&mut b, &add);
        let sr = b.op("Gather", &[&scale64, idx], None, vec![attr_int("axis", 0)]);
        let old = b.op("Mul", &[acc, &sr], None, vec![]);
        b.op("Add", &[&old, &add64], Some(out), vec![]);
    }
    // Token ids of the chunk.
    let one = b.const_i64("one", &[], &[1]);
    let s0 = b.op("Squeeze", &["start"], None, vec![]);
    let e0 = b.op("Squeeze", &["end"], None, vec![]);
    let ids = b.op("Range", &[&s0, &e0, &one], None, vec![]);
    // Counts above each target's exact logit, the target itself excluded.
    let z3 = b.op("Unsqueeze", &[&z, &ax2], None, vec![]); // [R, C, 1]
    let tl3 = b.op("Unsqueeze", &["tl", &ax1], None, vec![]); // [R, 1, T]
    let above = b.op("Greater", &[&z3, &tl3], None, vec![]);
    let ax02 = b.const_i64("ax02", &[2], &[0, 2]);
    let ids3 = b.op("Unsqueeze", &[&ids, &ax02], None, vec![]); // [1, C, 1]
    let t3 = b.op("Unsqueeze", &["targets", &ax1], None, vec![]); // [R, 1, T]
    let same = b.op("Equal", &[&ids3, &t3], None, vec![]);
    let other = b.op("Not", &[&same], None, vec![]);
    let counted = b.op("And", &[&above, &other], None, vec![]);
    let counted = b.op("Cast", &[&counted], None, vec![attr_int("to", i64::from(DT_FLOAT))]);
    let add = b.op("ReduceSum", &[&counted, &ax1], None, vec![attr_int("keepdims", 0)]);
    b.op("Add", &["cnt", &add], Some("cnt_out"), vec![]);
    // Running top-k.
    let shape_z = b.op("Shape", &[&z], None, vec![]);
    let ids_row = b.op("Unsqueeze", &[&ids, &ax0], None, vec![]);
    let ids_rc = b.op("Expand", &[&ids_row, &shape_z], None, vec![]);
    let cand_v = b.op("Concat", &["topv", &z], None, vec![attr_int("axis", 1)]);
    let cand_i = b.op("Concat", &["topi", &ids_rc], None, vec![attr_int("axis", 1)]);
    let [tv, ti] = b.op_multi::<2>("TopK", &[&cand_v, "k"], vec![attr_int("axis", 1), attr_int("largest", 1), attr_int("sorted", 1)]);
    b.op("Identity", &[&tv], Some("topv_out"), vec![]);
    b.op("GatherElements", &[&cand_i, &ti], Some("topi_out"), vec![attr_int("axis", 1)]);

    let r = Err("rows");
    let t = Err("targets");
    let f = DT_FLOAT;
    let mut inputs = vec![
        io("x", f, &[r, Ok(d)]),
        io("w", f, &[Err("vocab"), Ok(d)]),
        io("start", DT_INT64, &[Ok(1)]),
        io("end", DT_INT64, &[Ok(1)]),
        io("final_idx", DT_INT64, &[r]),
        io("input_idx", DT_INT64, &[r]),
        io("targets", DT_INT64, &[r, t]),
        io("tl", f, &[r, t]),
        io("k", DT_INT64, &[Ok(1)]),
        io("m", f, &[r]),
        io("s", DT_DOUBLE, &[r]),
        io("h", DT_DOUBLE, &[r]),
        io("cf", DT_DOUBLE, &[r]),
        io("ci", DT_DOUBLE, &[r]),
        io("cnt", f, &[r, t]),
        io("topv", f, &[r, Err("k_prev")]),
        io("topi", DT_INT64, &[r, Err("k_prev")]),
    ];
    if bias {
        inputs.insert(2, io("b", f, &[Err("vocab")]));
    }
    let outputs = vec![
        io("m_out", f, &[r]),
        io("s_out", DT_DOUBLE, &[r]),
        io("h_out", DT_DOUBLE, &[r]),
        io("cf_out", DT_DOUBLE, &[r]),
        io("ci_out", DT_DOUBLE, &[r]),
        io("cnt_out", f, &[r, t]),
        io("topv_out", f, &[r, Err("k_out")]),
        io("topi_out", DT_INT64, &[r, Err("k_out")]),
    ];
    b.into_model("lens_chunk", inputs, outputs)
}

/// The lens graph's session and the inputs it keeps (the unembedding, its bias).
pub struct LensGraph {
    session: Mutex<Session>,
    w: std::sync::Arc<ort::value::DynValue>,
    b: Option<ort::value::DynValue>,
    /// The execution provider it runs on.
    pub provider: String,
}

impl std::fmt::Debug for LensGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LensGraph").field("provider", &self.provider).finish()
    }
}

fn tensor_err(e: impl std::fmt::Display) -> LensError {
    LensError::Runtime(format!("lens graph: {e}"))
}

impl LensGraph {
    /// Builds the graph for `dec` and opens it on `device`.
    pub fn new(dec: &Decoder, device: Device) -> Result<Self> {
        let model = build(dec.d_model, dec.b_u.is_some(), dec.softcap);
        let bytes = model.encode_to_vec();
        let (session, report) = create_session_from(ModelSource::Bytes(&bytes), device, 0, &[])?;
        let w = match dec.w_u.initializer() {
            Some((_, v)) => v,
            None => {
                let t = Tensor::from_array(([dec.d_vocab, dec.d_model], dec.w_u.to_f32().into_owned().into_boxed_slice())).map_err(tensor_err)?;
                std::sync::Arc::new(t.into_dyn())
            }
        };
        let b = match &dec.b_u {
            Some(b) => Some(Tensor::from_array(([b.len()], b.clone().into_boxed_slice())).map_err(tensor_err)?.into_dyn()),
            None => None,
        };
        Ok(Self { session: Mutex::new(session), w, b, provider: report.active })
    }

    /// The kernel's rows, computed by the graph: same inputs and outputs as
    /// [`crate::lens::metrics::run_kernel`].
    pub fn run(&self, prepared: &[f32], targets: &[u32], dec: &Decoder, spec: &KernelSpec, progress: &Progress) -> Result<Vec<RowMetrics>> {
        let d = dec.d_model;
        let s_n = spec.n_sites;
        if prepared.len() != spec.n_pos * s_n * d || targets.len() != spec.n_pos * spec.n_targets || spec.final_site >= s_n || spec.input_site >= s_n {
            return Err(LensError::invalid("lens graph: inconsistent input sizes"));
        }
        // Positions per run, then the chunk, bounded so that the [rows, chunk, targets]
        // comparison stays within TEMP_BUDGET (3 targets: MAX_ROWS rows of a 4096 chunk).
        let n_t = spec.n_targets.max(1);
        let chunk = spec.chunk.max(1);
        let per_block = (MAX_ROWS / s_n.max(1)).min(TEMP_BUDGET / (4 * s_n.max(1) * chunk * n_t)).max(1);
        let chunk = chunk.min((TEMP_BUDGET / (4 * s_n.max(1) * per_block * n_t)).max(256));
        let spec = &KernelSpec { chunk, ..spec.clone() };
        let mut out = Vec::with_capacity(spec.n_pos * s_n);
        let n_blocks = spec.n_pos.div_ceil(per_block).max(1);
        for (bi, p0) in (0..spec.n_pos).step_by(per_block).enumerate() {
            let p1 = (p0 + per_block).min(spec.n_pos);
            let xs = part(prepared, p0 * s_n * d..p1 * s_n * d, "prepared rows")?;
            let ts = part(targets, p0 * spec.n_targets..p1 * spec.n_targets, "targets")?;
            let block_progress = progress.part(bi as f32 / n_blocks as f32, 1.0 / n_blocks as f32);
            out.extend(self.run_block(xs, ts, p1 - p0, dec, spec, &block_progress)?);
        }
        Ok(out)
    }

    fn run_block(&self, xs: &[f32], ts: &[u32], n_pos: usize, dec: &Decoder, spec: &KernelSpec, progress: &Progress) -> Result<Vec<RowMetrics>> {
        let d = dec.d_model;
        let s_n = spec.n_sites;
        let n_t = spec.n_targets;
        let rows = n_pos * s_n;
        // Each target's exact logit (f64, as the kernel counts against), +inf where there is none.
        let mut tl = Vec::with_capacity(rows * n_t);
        let mut tgt = Vec::with_capacity(rows * n_t);
        for r in 0..rows {
            let p = r / s_n;
            let row = part(xs, r * d..(r + 1) * d, "prepared row")?;
            for t in 0..n_t {
                match ts.get(p * n_t + t) {
                    Some(&id) if id != NO_TARGET && (id as usize) < dec.d_vocab => {
                        tl.push(dec.logit(row, id));
                        tgt.push(i64::from(id));
                    }
                    _ => {
                        tl.push(f32::INFINITY);
                        tgt.push(-1);
                    }
                }
            }
        }
        let final_idx: Vec<i64> = (0..rows).map(|r| ((r / s_n) * s_n + spec.final_site) as i64).collect();
        let input_idx: Vec<i64> = (0..rows).map(|r| ((r / s_n) * s_n + spec.input_site) as i64).collect();
        let t1 = |v: Vec<f32>| Tensor::from_array(([v.len()], v.into_boxed_slice())).map_err(tensor_err);
        let t2 = |v: Vec<f32>, c: usize| Tensor::from_array(([rows, c], v.into_boxed_slice())).map_err(tensor_err);
        let i1 = |v: Vec<i64>| Tensor::from_array(([v.len()], v.into_boxed_slice())).map_err(tensor_err);
        let x = t2(xs.to_vec(), d)?;
        let (fi, ii) = (i1(final_idx)?, i1(input_idx)?);
        let targets_t = Tensor::from_array(([rows, n_t], tgt.into_boxed_slice())).map_err(tensor_err)?;
        let tl_t = t2(tl.clone(), n_t)?;
        let k = spec.k.max(1);
        let mut m = vec![M0; rows];
        let (mut s, mut h, mut cf, mut ci) = (vec![0f64; rows], vec![0f64; rows], vec![0f64; rows], vec![0f64; rows]);
        let d1 = |v: Vec<f64>| Tensor::from_array(([v.len()], v.into_boxed_slice())).map_err(tensor_err);
        let mut cnt = vec![0f32; rows * n_t];
        let mut topv: Vec<f32> = Vec::new();
        let mut topi: Vec<i64> = Vec::new();
        let mut kk = 0usize;
        let mut session = self.session.lock().map_err(|_| LensError::invalid("the lens graph's session was poisoned by an earlier failure"))?;
        let chunk = spec.chunk.max(1);
        let n_chunks = dec.d_vocab.div_ceil(chunk);
        for (ci_, v0) in (0..dec.d_vocab).step_by(chunk).enumerate() {
            progress.check()?;
            progress.report("lens (graph)", ci_ as f32 / n_chunks as f32);
            let v1 = (v0 + chunk).min(dec.d_vocab);
            let keep = k.min(kk + (v1 - v0));
            let mut inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> = ort::inputs![
                "x" => &x,
                "w" => self.w.as_ref(),
                "start" => i1(vec![v0 as i64])?,
                "end" => i1(vec![v1 as i64])?,
                "final_idx" => &fi,
                "input_idx" => &ii,
                "targets" => &targets_t,
                "tl" => &tl_t,
                "k" => i1(vec![keep as i64])?,
                "m" => t1(std::mem::take(&mut m))?,
                "s" => d1(std::mem::take(&mut s))?,
                "h" => d1(std::mem::take(&mut h))?,
                "cf" => d1(std::mem::take(&mut cf))?,
                "ci" => d1(std::mem::take(&mut ci))?,
                "cnt" => t2(std::mem::take(&mut cnt), n_t)?,
                "topv" => t2(std::mem::take(&mut topv), kk)?,
                "topi" => Tensor::from_array(([rows, kk], std::mem::take(&mut topi).into_boxed_slice())).map_err(tensor_err)?,
            ];
            if let Some(b) = &self.b {
                inputs.push(("b".into(), b.into()));
            }
            let outs = session.run(inputs)?;
            let f32s = |name: &str| -> Result<Vec<f32>> {
                let v = outs.get(name).ok_or_else(|| LensError::Runtime(format!("the lens graph did not return {name}")))?;
                Ok(v.try_extract_tensor::<f32>().map_err(tensor_err)?.1.to_vec())
            };
            let f64s = |name: &str| -> Result<Vec<f64>> {
                let v = outs.get(name).ok_or_else(|| LensError::Runtime(format!("the lens graph did not return {name}")))?;
                Ok(v.try_extract_tensor::<f64>().map_err(tensor_err)?.1.to_vec())
            };
            m = f32s("m_out")?;
            s = f64s("s_out")?;
            h = f64s("h_out")?;
            cf = f64s("cf_out")?;
            ci = f64s("ci_out")?;
            cnt = f32s("cnt_out")?;
            topv = f32s("topv_out")?;
            topi = outs
                .get("topi_out")
                .ok_or_else(|| LensError::Runtime("the lens graph did not return topi_out".into()))?
                .try_extract_tensor::<i64>()
                .map_err(tensor_err)?
                .1
                .to_vec();
            kk = keep;
            if m.len() != rows || cnt.len() != rows * n_t || topv.len() != rows * kk || topi.len() != rows * kk {
                return Err(LensError::Runtime("the lens graph returned tensors of the wrong size".into()));
            }
        }
        drop(session);
        // The final sums, finalised by the kernel's own code.
        let at = |v: &[f64], j: usize| v.get(j).copied().unwrap_or(f64::NAN);
        let mut state = Vec::with_capacity(rows);
        for r in 0..rows {
            let p = r / s_n;
            let top: Vec<(f32, u32)> =
                (0..kk).map(|j| (topv.get(r * kk + j).copied().unwrap_or(f32::NAN), topi.get(r * kk + j).copied().unwrap_or(0) as u32)).collect();
            let ids = part(ts, p * n_t..(p + 1) * n_t, "targets")?;
            let tlogit: Vec<f32> = (0..n_t).map(|t| tl.get(r * n_t + t).copied().filter(|v| v.is_finite()).unwrap_or(f32::NAN)).collect();
            // The graph keeps no target's GEMM logit; a target in the top-k has it there, as in the kernel.
            let tgemm: Vec<f32> = ids.iter().map(|&id| top.iter().find(|&&(_, tid)| tid == id).map_or(f32::NAN, |&(v, _)| v)).collect();
            state.push(RowState {
                m: m.get(r).copied().unwrap_or(f32::NAN),
                z: at(&s, r),
                s: at(&h, r),
                top,
                counts: (0..n_t).map(|t| cnt.get(r * n_t + t).copied().unwrap_or(0.0) as u32).collect(),
                tlogit,
                tgemm,
                kl_f: at(&cf, r),
                kl_i: at(&ci, r),
            });
        }
        finalise(&state, ts, spec)
    }
}
