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

/// The 12 family cases of the transformers fixtures (`lens_tests::fixture::FAMILY_CASES`).
const CASES: [&str; 12] = lens_tests::fixture::FAMILY_CASES;

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
        let mut engine = common::open(&bundle);
        let (_, ids) = values(&st, "ids");
        let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
        let (shape, c) = values(&st, "cotangent");
        let cot = Array3::from_shape_vec((shape[0], shape[1], shape[2]), c.iter().map(|&v| v as f32).collect()).unwrap();
        let mut runner = GradRunner::open(&engine.bundle, Device::Cpu, 0, &Progress::default()).unwrap();
        let grads = runner.vjp(&ids, cot.view(), &Progress::default()).unwrap();
        assert_eq!(grads.resid_pre.len(), engine.bundle.shape.n_layers, "{case}");
        for (l, ours) in grads.resid_pre.iter().enumerate() {
            let ours = ours.as_ref().unwrap();
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
        // A graph from block 1 on gives block 1's gradient alone, the same.
        if engine.bundle.shape.n_layers > 1 {
            let mut from1 = GradRunner::open(&engine.bundle, Device::Cpu, 1, &Progress::default()).unwrap();
            let g1 = from1.vjp(&ids, cot.view(), &Progress::default()).unwrap();
            assert!(g1.resid_pre[0].is_none() && g1.resid_mid[0].is_none(), "{case}");
            assert_eq!(g1.resid_pre[1], grads.resid_pre[1], "{case}: the graph from block 1 differs");
        }
        // After a cached prefix (the J-lens fit's path): with zero cotangents at the prefix, the
        // gradients at the later positions are the whole run's there (torch's, so), for every
        // family's cache (rotary offsets, GQA, sliding windows, absolute positions).
        if runner.takes_cache() {
            let n = ids.len();
            let s = n / 3;
            assert!(s > 0 && s < n, "{case}: {n} tokens");
            let mut cut = cot.clone();
            cut.slice_mut(ndarray::s![.., ..s, ..]).fill(0.0);
            let whole = runner.vjp(&ids, cut.view(), &Progress::default()).unwrap();
            let past = runner.cache_inputs(&engine.trace_for_patching(&ids[..s], &Progress::default()).unwrap().kv.unwrap()).unwrap();
            let tail = cut.slice(ndarray::s![.., s.., ..]).to_owned();
            let after = runner.vjp_after(&past, &ids[s..], tail.view(), &Progress::default()).unwrap();
            for (l, (w, a)) in whole.resid_pre.iter().zip(&after.resid_pre).enumerate() {
                let (w, a) = (w.as_ref().unwrap().slice(ndarray::s![.., s.., ..]).to_owned(), a.as_ref().unwrap());
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let gap = w.iter().zip(a.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(gap <= 1e-4 * scale, "{case}: block {l}'s input after a cached prefix of {s} differs by {gap} (largest {scale})");
            }
        } else {
            panic!("{case}: the fixture's graph has a key/value cache");
        }
    }
    eprintln!("worst relative difference to torch autograd: {worst:e}");
}

/// Gradient × activation against central finite differences through the forward graph (the
/// patch machinery replaces one residual row by `(1 ± ε)·h` and the logit is decoded from the
/// patched final residual), every site and position, for a LayerNorm, an RMSNorm, a parallel and
/// a soft-capped family.
#[test]
fn gradient_x_activation_matches_finite_differences() {
    use lens_model::run::patched::{Patch, PatchRows};
    use lens_model::run::sites::site_list;
    for case in ["gpt2", "llama_f32", "gptj_f32", "gemma2_f32"] {
        let bytes = std::fs::read(fixtures().join(format!("vjp/{case}.safetensors"))).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let src = fixtures().join("..").join("..").join(meta.metadata().as_ref().unwrap().get("source").unwrap());
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, ids) = values(&st, "ids");
        let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
        let bundle = unique_temp_dir(&format!("gxa-{case}"));
        lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
        let mut engine = common::open(&bundle);
        let subblocks = engine.bundle.residual == lens_model::build::spec::Residual::Sequential;
        let opts = lens_model::LensOptions { subblocks, ..lens_model::LensOptions::default() };
        let report = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
        let mut runner = GradRunner::open(&engine.bundle, Device::Cpu, 0, &Progress::default()).unwrap();
        let g = lens_model::analyses::grad_x_act::gradient_x_activation(&mut engine, &mut runner, &ids, &report, &Progress::default()).unwrap();
        let base = engine.trace_for_patching(&ids, &Progress::default()).unwrap();
        let dec = engine.decoder.clone();
        let d = engine.bundle.shape.d_model;
        // The logit of token `t` from a final residual row `x` (before a soft cap).
        let logit = |x: &[f32], t: u32| -> f64 {
            assert_eq!(x.len(), d);
            let (mean, sigma) = dec.mean_sigma(x);
            let u = dec.unembed_row(t);
            let beta = |j: usize| dec.beta.get(j).copied().map_or(0.0, f64::from);
            let b = dec.b_u.as_ref().and_then(|b| b.get(t as usize)).copied().map_or(0.0, f64::from);
            x.iter().enumerate().map(|(j, &v)| f64::from(u[j]) * ((f64::from(v) - mean) / sigma * f64::from(dec.gamma[j]) + beta(j))).sum::<f64>() + b
        };
        let sites = site_list(engine.bundle.shape.n_layers, subblocks);
        let eps = 1e-2f32;
        let mut worst = 0f64;
        for (s, &site) in sites.iter().enumerate() {
            let h = base.site(site).unwrap().clone();
            for p in 0..ids.len() {
                let t = report.attribution.final_top1_ids[p];
                let mut run = |scale: f32| {
                    let value: Vec<f32> = h.row(p).iter().map(|v| v * scale).collect();
                    let patch = Patch { site, rows: PatchRows::One(p), value };
                    // The patched run's rows start at the patched position or before it.
                    let tr = engine.run_patched(&base, &ids, &patch, &Progress::default()).unwrap();
                    let last = tr.final_resid().unwrap();
                    let row = p - (ids.len() - last.nrows());
                    logit(last.row(row).as_slice().unwrap(), t)
                };
                let fd = (run(1.0 + eps) - run(1.0 - eps)) / (2.0 * f64::from(eps));
                let got = g.final_top1[s][p];
                let gap = (fd - got).abs() / (got.abs() + 1.0);
                worst = worst.max(gap);
                assert!(gap < 2e-3, "{case}: site {} position {p}: gradient × activation {got}, finite differences {fd}", site.label());
            }
        }
        // The next token's row is empty at the last position only.
        assert!(g.next[0].last().unwrap().is_none() && g.next[0][0].is_some(), "{case}");
        eprintln!("{case}: worst relative gap to finite differences {worst:e}");
    }
}
