//! Quantized weights (issue 25): the quantizer against ONNX Runtime's own (`quantize_matmul_{4,8}bits`,
//! fixture made by `tests/fixtures/quant/make_quant_fixture.py`), the `MatMulNBits` kernel against a
//! naive product with the dequantized matrix, and the accuracy of int8 / int4 bundles against f32.

mod common;

use std::path::{Path, PathBuf};

use lens_model::build::graph::{Builder, MS_DOMAIN, attr_int, value_info};
use lens_model::build::onnx::DT_FLOAT;
use lens_model::build::quant::{QuantSpec, Quantized, WeightFormat, WeightsChoice, dequantize, quantize};
use lens_model::error::Progress;
use lens_model::run::runtime::{Device, ModelSource, create_session_from, init_runtime};
use lens_model::{LensOptions, LensReport};
use lens_tests::fixture::unique_temp_dir;
use prost::Message;

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
#[allow(non_snake_case)]
struct Case {
    name: String,
    K: usize,
    N: usize,
    bits: u8,
    block_size: usize,
    symmetric: bool,
    weights_f32_bits: Vec<u32>,
    packed_b: Vec<u8>,
    scales_f32_bits: Vec<u32>,
    zero_points: Option<Vec<u8>>,
    dequantized_f32_bits: Vec<u32>,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/quant/quant_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn spec_of(c: &Case) -> QuantSpec {
    QuantSpec { bits: c.bits, block_size: c.block_size, symmetric: c.symmetric, accuracy_level: 0 }
}

fn floats(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

#[test]
fn quantizer_matches_onnx_runtimes_own_byte_for_byte() {
    let f = fixture();
    assert!(f.cases.len() >= 12);
    for c in &f.cases {
        let w = floats(&c.weights_f32_bits);
        let spec = spec_of(c);
        let q = quantize(&w, c.K, c.N, &spec).unwrap();
        assert_eq!(q.codes, c.packed_b, "{}: codes", c.name);
        let scale_bits: Vec<u32> = q.scales.iter().map(|s| s.to_bits()).collect();
        assert_eq!(scale_bits, c.scales_f32_bits, "{}: scales", c.name);
        assert_eq!(q.zero_points, c.zero_points, "{}: zero points", c.name);
        let d = dequantize(&q, c.K, c.N, &spec);
        let want = floats(&c.dequantized_f32_bits);
        // Bit for bit (−0.0 and 0.0 are the same value: compared as values).
        for (i, (a, b)) in d.iter().zip(&want).enumerate() {
            assert!(a == b, "{}: dequantized [{i}] {a} vs {b}", c.name);
        }
    }
}

/// Runs one `MatMulNBits` node (`x` `[1, rows, K]`) on ONNX Runtime's CPU provider.
fn run_matmul_nbits(q: &Quantized, spec: &QuantSpec, k: usize, n: usize, x: &[f32], rows: usize) -> Vec<f32> {
    let mut b = Builder::default();
    let codes = b.const_u8s("codes", &[n as i64, spec.blocks(k) as i64, spec.blob_size() as i64], &q.codes);
    let scales = b.const_f32s("scales", &[(n * spec.blocks(k)) as i64], &q.scales);
    let mut inputs = vec!["x".to_string(), codes, scales];
    if let Some(zp) = &q.zero_points {
        inputs.push(b.const_u8s("zp", &[zp.len() as i64], zp));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let attrs = vec![
        attr_int("K", k as i64),
        attr_int("N", n as i64),
        attr_int("bits", i64::from(spec.bits)),
        attr_int("block_size", spec.block_size as i64),
        attr_int("accuracy_level", spec.accuracy_level),
    ];
    b.op_in(MS_DOMAIN, "MatMulNBits", &refs, Some("y"), attrs);
    let model =
        b.into_model("nbits", vec![value_info("x", DT_FLOAT, &[Ok(1), Err("rows"), Ok(k)])], vec![value_info("y", DT_FLOAT, &[Ok(1), Err("rows"), Ok(n)])]);
    let bytes = model.encode_to_vec();
    init_runtime(None).unwrap();
    let (mut session, _) = create_session_from(ModelSource::Bytes(&bytes), Device::Cpu, 1, &[]).unwrap();
    let tensor = ort::value::Tensor::from_array(([1usize, rows, k], x.to_vec())).unwrap();
    let out = session.run(ort::inputs!["x" => tensor]).unwrap();
    let (_, y) = out["y"].try_extract_tensor::<f32>().unwrap();
    y.to_vec()
}

#[test]
fn matmul_nbits_computes_the_product_with_the_dequantized_matrix() {
    // The kernel alone, without quantization error: ORT's product against a naive f64 product of
    // the same input with the dequantized weights (accuracy level 0: f32 compute).
    let f = fixture();
    for c in &f.cases {
        let spec = spec_of(c);
        let q = quantize(&floats(&c.weights_f32_bits), c.K, c.N, &spec).unwrap();
        let wd = dequantize(&q, c.K, c.N, &spec);
        let rows = 5;
        let x: Vec<f32> = (0..rows * c.K).map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0).collect();
        let y = run_matmul_nbits(&q, &spec, c.K, c.N, &x, rows);
        for r in 0..rows {
            for j in 0..c.N {
                let mut want = 0f64;
                let mut mag = 0f64;
                for i in 0..c.K {
                    let t = f64::from(x[r * c.K + i]) * f64::from(wd[i * c.N + j]);
                    want += t;
                    mag += t.abs();
                }
                let got = f64::from(y[r * c.N + j]);
                assert!((got - want).abs() <= 1e-5 * mag.max(1e-3), "{} [{r},{j}]: {got} vs {want}", c.name);
            }
        }
    }
}

/// Final-site top-1 agreement and mean |ΔKL(final ‖ site)| of `q` against the exact report `e`.
fn accuracy(e: &LensReport, q: &LensReport) -> (f64, f64, f64) {
    let (s, p) = (e.sites.len(), e.n_pos());
    let last = s - 1;
    let agree = (0..p).filter(|&i| e.metrics.top1_id.get(last, i) == q.metrics.top1_id.get(last, i)).count() as f64 / p as f64;
    let mut sum = 0.0;
    let mut worst = 0f64;
    let mut n = 0;
    for site in 0..last {
        for i in 0..p {
            let (a, b) = (*e.metrics.kl_to_final.get(site, i).unwrap(), *q.metrics.kl_to_final.get(site, i).unwrap());
            let d = (a - b).abs();
            sum += d;
            worst = worst.max(d);
            n += 1;
        }
    }
    (agree, sum / f64::from(n.max(1)), worst)
}

fn demo_hf() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model"))
}

fn report_of(bundle: &Path, text: &str) -> LensReport {
    let mut engine = common::open(bundle);
    let ids = engine.tokenize(text, true).unwrap();
    engine.run_ids(&ids, &LensOptions::default(), &Progress::default()).unwrap()
}

#[test]
fn demo_model_int8_and_int4_stay_close_to_f32() {
    // Held-out text of the trained demo model (its own heldout.txt), 512 tokens.
    let text: String = std::fs::read_to_string(demo_hf().join("heldout.txt")).unwrap().chars().take(2400).collect();
    let exact_dir = unique_temp_dir("quant-demo-f32");
    lens_model::build::convert::convert_hf_checkpoint_as(&demo_hf(), &exact_dir, WeightFormat::F32, &Progress::default()).unwrap();
    let exact = report_of(&exact_dir, &text);
    assert_eq!(exact.run.weights, "f32");
    // Measured on this model (README): int8 agreement 0.992, mean |ΔKL| 0.0126 nats; int4 0.930, 0.192.
    for (format, min_agree, max_mean_dkl) in [(WeightFormat::Int8, 0.98, 0.02), (WeightFormat::Int4, 0.90, 0.2)] {
        let dir = unique_temp_dir(&format!("quant-demo-{format}"));
        let s = lens_model::build::convert::convert_hf_checkpoint_as(&demo_hf(), &dir, format, &Progress::default()).unwrap();
        assert_eq!(s.weights, format);
        assert_eq!(lens_model::run::bundle::format_version_of(&dir), Some(4));
        let q = report_of(&dir, &text);
        assert_eq!(q.run.weights, format.name());
        assert_eq!(q.tokens, exact.tokens);
        let (agree, mean, worst) = accuracy(&exact, &q);
        eprintln!("demo {format}: final top-1 agreement {agree:.4}, mean |dKL| {mean:.5} nats, max {worst:.4} ({} positions)", exact.n_pos());
        assert!(agree >= min_agree, "{format}: agreement {agree}");
        assert!(mean <= max_mean_dkl, "{format}: mean |dKL| {mean}");
        // The bundle is smaller than f32's by what the codes save.
        let size = |d: &Path| std::fs::metadata(d.join("model.onnx.data")).unwrap().len();
        assert!(size(&dir) < size(&exact_dir), "{format} bundle is not smaller");
    }
}

#[test]
fn every_family_fixture_runs_quantized() {
    let families = common::families();
    let cases = common::family_cases();
    let text = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.";
    let mut failed = Vec::new();
    for case in &cases {
        let exact_dir = unique_temp_dir(&format!("quant-{case}-f32"));
        lens_model::build::convert::convert_hf_checkpoint(&families.join(case), &exact_dir, &Progress::default()).unwrap();
        let exact = report_of(&exact_dir, text);
        for format in [WeightFormat::Int8, WeightFormat::Int4] {
            let dir = unique_temp_dir(&format!("quant-{case}-{format}"));
            lens_model::build::convert::convert_hf_checkpoint_as(&families.join(case), &dir, format, &Progress::default()).unwrap();
            let q = report_of(&dir, text);
            let (agree, mean, worst) = accuracy(&exact, &q);
            eprintln!("{case} {format}: final top-1 agreement {agree:.3}, mean |dKL| {mean:.5}, max {worst:.4}");
            // Random weights with small margins between logits: floors below what was measured
            // (README table), to catch a broken layout (which gives agreement near 1/d_vocab).
            let (min_agree, max_mean) = if format == WeightFormat::Int8 { (0.9, 0.05) } else { (0.5, 0.8) };
            if agree < min_agree || mean > max_mean {
                failed.push(format!("{case} {format}: agreement {agree:.3}, mean |dKL| {mean:.4}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn cache_keeps_one_bundle_per_format_and_bundles_refuse_another_format() {
    let hf = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/families/llama_f32"));
    let a = lens_model::run::resolve::resolve_model_as(Some(&hf), WeightsChoice::Exact(WeightFormat::Int4), &Progress::default()).unwrap();
    let b = lens_model::run::resolve::resolve_model_as(Some(&hf), WeightsChoice::Exact(WeightFormat::F32), &Progress::default()).unwrap();
    let c = lens_model::run::resolve::resolve_model_as(Some(&hf), WeightsChoice::Exact(WeightFormat::Int4), &Progress::default()).unwrap();
    assert_ne!(a.dir, b.dir);
    assert_eq!(a.dir, c.dir);
    assert!(a.dir.to_string_lossy().ends_with("-int4"), "{}", a.dir.display());
    assert_eq!((a.weights, b.weights), (WeightFormat::Int4, WeightFormat::F32));
    // A bundle is used as it is: asking it for another format says how to get one.
    let e = lens_model::run::resolve::resolve_model_as(Some(&a.dir), WeightsChoice::Exact(WeightFormat::Int8), &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("holds int4 weights, not int8") && e.contains("convert --weights int8"), "{e}");
    let same = lens_model::run::resolve::resolve_model_as(Some(&a.dir), WeightsChoice::Auto, &Progress::default()).unwrap();
    assert_eq!(same.weights, WeightFormat::Int4);
    // auto with little memory picks a quantized format, with its reason.
    let (f, why) = lens_model::run::resolve::choose_weights(&hf, WeightsChoice::Auto).unwrap();
    assert_eq!(f, WeightFormat::F32, "{why:?}");
    assert!(why.unwrap().starts_with("auto: f32"));
}

#[test]
fn a_shard_replaced_after_first_use_is_converted_again() {
    // The cache key covers every shard (it used to cover only model.safetensors and the index).
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/families/llama_f32"));
    let dst = unique_temp_dir("quant-shard-key");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let shard = "model-00001-of-00001.safetensors";
    std::fs::copy(src.join("model.safetensors"), dst.join(shard)).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let weight_map: serde_json::Map<String, serde_json::Value> =
        st.names().into_iter().map(|n| (n.to_string(), serde_json::Value::String(shard.into()))).collect();
    std::fs::write(dst.join("model.safetensors.index.json"), serde_json::json!({"weight_map": weight_map}).to_string()).unwrap();
    let first = lens_model::run::resolve::resolve_model_as(Some(&dst), WeightsChoice::Exact(WeightFormat::Int8), &Progress::default()).unwrap();
    let again = lens_model::run::resolve::resolve_model_as(Some(&dst), WeightsChoice::Exact(WeightFormat::Int8), &Progress::default()).unwrap();
    assert_eq!(first.dir, again.dir, "unchanged inputs: the cached bundle");
    // Replace the shard (same size; a later mtime): a new cache entry, converted from the new file.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(dst.join(shard), &bytes).unwrap();
    let replaced = lens_model::run::resolve::resolve_model_as(Some(&dst), WeightsChoice::Exact(WeightFormat::Int8), &Progress::default()).unwrap();
    assert_ne!(first.dir, replaced.dir, "a replaced shard must not reuse the old bundle");
}

/// A quantized bundle keeps its embedding and unembedding in f16 and its graph has no head: the
/// decoder (the lens kernel) is the model's head. Checked on the tied demo model and an untied
/// fixture: the f16 values are the f32 bundle's rounded to f16, bit for bit; the graph has no
/// `logits`; the tuned-lens hash is the same as of the widened values; the report's final top-1
/// at every position is the argmax of the naive f64 decode of the final residual; and an f32
/// bundle whose graph lost its `logits` is refused.
#[test]
fn quantized_bundles_keep_an_f16_head_outside_the_graph() {
    let fixture = common::families().join("llama_f32");
    let text = "The quick brown fox jumps over the lazy dog. It was the best of times.";
    for (label, src) in [("demo", demo_hf()), ("llama_f32", fixture)] {
        let exact_dir = unique_temp_dir(&format!("quant-head-{label}-f32"));
        lens_model::build::convert::convert_hf_checkpoint_as(&src, &exact_dir, WeightFormat::F32, &Progress::default()).unwrap();
        let dir = unique_temp_dir(&format!("quant-head-{label}-int8"));
        lens_model::build::convert::convert_hf_checkpoint_as(&src, &dir, WeightFormat::Int8, &Progress::default()).unwrap();
        let exact = common::open(&exact_dir);
        let mut q = common::open(&dir);
        assert!(exact.bundle.logits_in_graph && !q.bundle.logits_in_graph, "{label}");
        let m = lens_model::build::onnx::ModelProto::decode(std::fs::read(dir.join("model.onnx")).unwrap().as_slice()).unwrap();
        let g = m.graph.as_ref().unwrap();
        assert!(!g.output.iter().any(|o| o.name.as_deref() == Some("logits")), "{label}: the quantized graph outputs logits");
        assert!(!g.node.iter().any(|n| n.op_type.as_deref() == Some("Gemm")), "{label}: the quantized graph multiplies by W_U");
        let (wq, we) = (&q.decoder.w_u, exact.decoder.w_u.to_f32());
        assert!(wq.is_half() && !exact.decoder.w_u.is_half(), "{label}");
        assert_eq!(wq.len(), we.len());
        let widened = wq.to_f32();
        let off = widened.iter().zip(we.iter()).filter(|(h, f)| h.to_bits() != half::f16::from_f32(**f).to_f32().to_bits()).count();
        assert_eq!(off, 0, "{label}: {off} unembedding values are not the f32 bundle's rounded to f16");
        let (v, d) = (q.decoder.d_vocab, q.decoder.d_model);
        assert_eq!(
            lens_model::lens::tuned_lens::hash::unembedding_hash_of(wq, v, d),
            lens_model::lens::tuned_lens::hash::unembedding_hash(&widened, v, d),
            "{label}: the hash of the f16 unembedding"
        );
        // The final top-1 comes from the decoder (no graph logits): against a naive f64 decode.
        let ids = q.tokenize(text, true).unwrap();
        let trace = q.trace(&ids).unwrap();
        assert!(trace.logits_top1.is_empty() && trace.logits.is_none(), "{label}");
        let report = q.lens(&ids, &trace, &LensOptions::default(), &Progress::default()).unwrap();
        let fin = trace.final_resid().unwrap();
        let last = report.sites.len() - 1;
        for p in 0..ids.len() {
            let row: Vec<f32> = fin.row(p).to_vec();
            let mut prepared = vec![0f32; d];
            q.decoder.prepare_row(&row, &mut prepared);
            let naive = (0..v as u32).map(|t| (q.decoder.logit(&prepared, t), t)).fold((f32::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a });
            let ours = report.top_k.ids.get(last, p).unwrap()[0];
            assert_eq!(ours, naive.1, "{label}: position {p}: final top-1");
        }
    }
    // An f32 bundle whose graph lost its logits is refused by name.
    let dir = unique_temp_dir("quant-head-no-logits");
    lens_model::build::convert::convert_hf_checkpoint_as(&demo_hf(), &dir, WeightFormat::F32, &Progress::default()).unwrap();
    let path = dir.join("model.onnx");
    let mut m = lens_model::build::onnx::ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    m.graph.as_mut().unwrap().output.retain(|o| o.name.as_deref() != Some("logits"));
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let e = lens_model::run::bundle::Bundle::open(&dir).unwrap_err().to_string();
    assert!(e.contains("logits"), "{e}");
}

/// A weight that f16 cannot hold (an embedding value of 1e6) is a clear error when a quantized
/// bundle would store it in f16, never an infinity in the bundle; f32 still converts it.
#[test]
fn an_embedding_beyond_f16_range_is_refused_for_quantized_bundles() {
    let src = common::families().join("llama_f32");
    let dir = unique_temp_dir("quant-f16-range");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let info = meta.info("model.embed_tokens.weight").unwrap();
    assert_eq!(info.dtype, safetensors::Dtype::F32);
    let at = 8 + n + info.data_offsets.0;
    bytes[at..at + 4].copy_from_slice(&1.0e6f32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let out = unique_temp_dir("quant-f16-range-int8");
    let e = lens_model::build::convert::convert_hf_checkpoint_as(&dir, &out, WeightFormat::Int8, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("embed.W_E") && e.contains("65504") && e.contains("--weights f32"), "{e}");
    assert!(!out.exists(), "a refused conversion leaves nothing");
    lens_model::build::convert::convert_hf_checkpoint_as(&dir, &unique_temp_dir("quant-f16-range-f32"), WeightFormat::F32, &Progress::default()).unwrap();
}
