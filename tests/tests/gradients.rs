//! Gradients through the model (issue 28): the backward graph written from each bundle's lens
//! graph against torch autograd through the real transformers modules in float64
//! (`tests/fixtures/vjp/make_fixture.py`), for every family: the gradient of `⟨c, h_final⟩` with
//! respect to the residual entering every block, two directions `c` at once.

mod common;

use std::path::PathBuf;

use lens_model::error::Progress;
use lens_model::run::gradients::GradRunner;
use lens_model::run::runtime::Device;
use lens_tests::fixture::unique_temp_dir;
use ndarray::Array3;

const CASES: [&str; 12] = [
    "gpt2",
    "ctrl_f32",
    "gpt_neo_f32",
    "gptj_f32",
    "gpt_neox_parallel_f32",
    "gpt_neox_sequential_f16",
    "llama_f32",
    "mistral_f32",
    "qwen2_f16",
    "qwen3_f32",
    "gemma2_f32",
    "gemma3_v450_f32",
];

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// A tensor of the reference file as f64 values.
fn values(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = st.tensor(name).unwrap();
    let data = t.data();
    let v: Vec<f64> = match t.dtype() {
        safetensors::Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        safetensors::Dtype::F32 => data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect(),
        safetensors::Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("{name}: {other:?}"),
    };
    (t.shape().to_vec(), v)
}

#[test]
fn vjps_match_torch_autograd_for_every_family() {
    let mut worst = 0f64;
    for case in CASES {
        let bytes = std::fs::read(fixtures().join(format!("vjp/{case}.safetensors"))).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let source = meta.metadata().as_ref().unwrap().get("source").unwrap().clone();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let src = fixtures().join("..").join("..").join(source);
        let bundle = unique_temp_dir(&format!("vjp-{case}"));
        lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
        let engine = common::open(&bundle);
        let (_, ids) = values(&st, "ids");
        let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
        let (shape, c) = values(&st, "cotangent");
        let cot = Array3::from_shape_vec((shape[0], shape[1], shape[2]), c.iter().map(|&v| v as f32).collect()).unwrap();
        let mut runner = GradRunner::open(&engine.bundle, Device::Cpu, &Progress::default()).unwrap();
        let grads = runner.vjp(&ids, cot.view(), &Progress::default()).unwrap();
        assert_eq!(grads.resid_pre.len(), engine.bundle.shape.n_layers, "{case}");
        for (l, ours) in grads.resid_pre.iter().enumerate() {
            let (_, want) = values(&st, &format!("grad.{l}"));
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let gap = ours.iter().zip(&want).fold(0f64, |m, (&a, &b)| m.max((f64::from(a) - b).abs()));
            let rel = gap / scale;
            worst = worst.max(rel);
            assert!(rel < 1e-4, "{case}: the gradient at block {l}'s input differs by {gap} (largest {scale}, relative {rel:e})");
        }
        // A second run reuses the written graph and gives the same numbers.
        let again = runner.vjp(&ids, cot.view(), &Progress::default()).unwrap();
        assert_eq!(again.resid_pre[0], grads.resid_pre[0], "{case}: a second run differs");
    }
    eprintln!("worst relative difference to torch autograd: {worst:e}");
}
