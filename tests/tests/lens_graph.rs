//! The lens graph (issue 16, item 2): the lens as an ONNX graph on ONNX Runtime's CPU provider
//! against the streaming kernel, on the demo model and on random checkpoints of every family
//! (under every decoder of the family's bundle, the tuned lens included): top-1 ids and the top-k
//! identical, ranks equal outside near ties, KL / entropy / probabilities within 1e-4 — with the
//! default graph chunk and with a small chunk that does not divide the vocabulary.

mod common;

use std::path::PathBuf;

use lens_model::error::Progress;
use lens_model::lens::graph::LensPath;
use lens_model::lens::kernel::DecoderKind;
use lens_model::output::report::LensReport;
use lens_model::{LensEngine, LensOptions};
use lens_tests::fixture::unique_temp_dir;

const PROMPT: &str = "Sometimes, when people say plasma, they mean a state of matter.";

fn families() -> PathBuf {
    common::families()
}

/// Ranks agree exactly inside the top-k; beyond it a GEMM logit within f32 rounding of the target's
/// exact logit (the kernel's faer GEMM and ONNX Runtime's MLAS round differently) may move a rank
/// by one: allowed for at most 1% of the cells.
fn check_ranks(what: &str, k: u32, a: &[(u32, u32)]) {
    let mut off_by_one = 0;
    for &(x, y) in a {
        if x <= k || y <= k {
            assert_eq!(x, y, "{what}: a rank inside the top-{k} differs");
        } else if x != y {
            assert!(x.abs_diff(y) <= 1, "{what}: ranks {x} and {y}");
            off_by_one += 1;
        }
    }
    assert!(off_by_one * 100 <= a.len(), "{what}: {off_by_one} of {} ranks differ by one", a.len());
}

/// The two reports agree: ids exactly, ranks outside near ties, floats within 1e-4.
fn check_same(what: &str, a: &LensReport, b: &LensReport) {
    assert_eq!(a.sites, b.sites, "{what}");
    let (ma, mb) = (&a.metrics, &b.metrics);
    // Top-k: the same logits in order; the same ids except where two logits tie within f32
    // rounding (a soft cap saturating under the raw decoder makes many such ties).
    for s in 0..a.sites.len() {
        for p in 0..a.n_pos() {
            let (la, lb) = (&a.top_k.logits[s][p], &b.top_k.logits[s][p]);
            let (ia, ib) = (&a.top_k.ids[s][p], &b.top_k.ids[s][p]);
            for j in 0..la.len() {
                let tol = 1e-5 * la[j].abs().max(1.0);
                assert!((la[j] - lb[j]).abs() <= tol, "{what}: top-{} logit at site {s} pos {p}: {} vs {}", j + 1, la[j], lb[j]);
                if ia[j] != ib[j] {
                    // Another token has the same logit: a neighbour in the list, or (at the end of
                    // the list) the first one left out.
                    let near = |i: usize| la.get(i).is_some_and(|&l| (l - la[j]).abs() <= tol);
                    let tied = (j > 0 && near(j - 1)) || near(j + 1) || j + 1 == la.len();
                    assert!(tied, "{what}: top-{} id at site {s} pos {p}: {} vs {} (not a tie)", j + 1, ia[j], ib[j]);
                }
            }
        }
    }
    let mut worst = 0f64;
    let mut ranks = Vec::new();
    for s in 0..a.sites.len() {
        for p in 0..a.n_pos() {
            for (x, y) in [
                (ma.kl_to_final[s][p], mb.kl_to_final[s][p]),
                (ma.kl_to_input[s][p], mb.kl_to_input[s][p]),
                (ma.entropy[s][p], mb.entropy[s][p]),
                (ma.top1_prob[s][p], mb.top1_prob[s][p]),
                (ma.final_top1_prob[s][p], mb.final_top1_prob[s][p]),
                (ma.nll_next[s][p].unwrap_or(0.0), mb.nll_next[s][p].unwrap_or(0.0)),
            ] {
                if !(x.is_nan() && y.is_nan()) {
                    worst = worst.max((x - y).abs());
                }
            }
            for (x, y) in [
                (ma.rank_of_final_top1[s][p], mb.rank_of_final_top1[s][p]),
                (ma.rank_of_input[s][p], mb.rank_of_input[s][p]),
                (ma.rank_of_next[s][p].unwrap_or(0), mb.rank_of_next[s][p].unwrap_or(0)),
            ] {
                ranks.push((x, y));
            }
        }
    }
    assert!(worst < 1e-4, "{what}: worst difference {worst:e}");
    check_ranks(what, a.top_k.k as u32, &ranks);
    assert_eq!(a.run.lens_path, "kernel (CPU)");
    assert_eq!(b.run.lens_path, "graph (CPU)");
}

fn compare_paths(engine: &mut LensEngine, what: &str, decoders: &[DecoderKind], subblocks: bool) {
    let ids = engine.tokenize(PROMPT, true).unwrap();
    let pin = vec![ids[3], ids[5]];
    for &decoder in decoders {
        for chunk in [None, Some(37)] {
            let base = LensOptions { subblocks: subblocks && decoder != DecoderKind::TunedLens, k: 7, decoder, pinned: pin.clone(), ..LensOptions::default() };
            let base = LensOptions { chunk: chunk.unwrap_or(base.chunk), ..base };
            let a = engine.run_ids(&ids, &LensOptions { path: LensPath::Kernel, ..base.clone() }, &Progress::default()).unwrap();
            let b = engine.run_ids(&ids, &LensOptions { path: LensPath::Graph, ..base }, &Progress::default()).unwrap();
            check_same(&format!("{what} {decoder:?} chunk {chunk:?}"), &a, &b);
            // Pinned tokens ride along as targets.
            let (pa, pb) = (a.pinned.as_ref().unwrap(), b.pinned.as_ref().unwrap());
            let pairs: Vec<(u32, u32)> =
                pa.rank.iter().zip(&pb.rank).flat_map(|(x, y)| x.cells().zip(y.cells()).map(|(u, v)| (*u, *v)).collect::<Vec<_>>()).collect();
            check_ranks(&format!("{what} {decoder:?} pinned"), 7, &pairs);
        }
    }
}

#[test]
fn every_family_lens_graph_matches_the_kernel() {
    let cases = common::family_cases();
    for case in &cases {
        let bundle = unique_temp_dir(&format!("graph-{case}"));
        lens_model::build::convert::convert_hf_checkpoint(&families().join(case), &bundle, &Progress::default()).unwrap();
        let mut engine = common::open(&bundle);
        compare_paths(&mut engine, case, &[DecoderKind::LogitLens, DecoderKind::LastMlp, DecoderKind::Raw], true);
    }
}

#[test]
fn demo_model_and_the_tuned_lens_through_the_lens_graph() {
    let dir = lens_model::run::resolve::resolve_model(Some(&PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model"))), &Progress::default())
        .unwrap();
    let mut engine = common::open(&dir);
    let lens = lens_model::lens::tuned_lens::TunedLens::open(&PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model/tuned-lens"))).unwrap();
    engine.set_tuned_lens(Some(lens)).unwrap();
    // The real 50257-token vocabulary: 13 chunks of 4096 (the last one short).
    compare_paths(&mut engine, "demo", &[DecoderKind::LogitLens, DecoderKind::TunedLens], true);
    // On the CPU, Auto is the kernel.
    assert_eq!(engine.resolve_path(LensPath::Auto), LensPath::Kernel);
    assert_eq!(engine.lens_path_label(LensPath::Graph), "graph (CPU)");
}

/// Many targets through the graph (issue 24): a token group of 1,000 ids rides along as targets,
/// so the graph takes fewer positions per run and a smaller chunk to keep its `[rows, chunk,
/// targets]` temporaries bounded; the report still matches the kernel's. And a quantized bundle
/// (no head in its graph, an f16 W_U) through the graph path.
#[test]
fn many_targets_and_a_quantized_bundle_through_the_lens_graph() {
    let demo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model"));
    let dir = lens_model::run::resolve::resolve_model(Some(&demo), &Progress::default()).unwrap();
    let mut engine = common::open(&dir);
    let ids = engine.tokenize(PROMPT, true).unwrap();
    let group = lens_model::TokenGroup { name: "many".into(), token_ids: (100..1100).collect() };
    let base = LensOptions { k: 5, groups: vec![group], ..LensOptions::default() };
    let a = engine.run_ids(&ids, &LensOptions { path: LensPath::Kernel, ..base.clone() }, &Progress::default()).unwrap();
    let b = engine.run_ids(&ids, &LensOptions { path: LensPath::Graph, ..base.clone() }, &Progress::default()).unwrap();
    check_same("demo, 1000 group tokens", &a, &b);
    let q = unique_temp_dir("graph-int8");
    lens_model::build::convert::convert_hf_checkpoint_as(&demo, &q, lens_model::build::quant::WeightFormat::Int8, &Progress::default()).unwrap();
    let mut engine = common::open(&q);
    let ids = engine.tokenize(PROMPT, true).unwrap();
    let base = LensOptions { k: 7, ..LensOptions::default() };
    let a = engine.run_ids(&ids, &LensOptions { path: LensPath::Kernel, ..base.clone() }, &Progress::default()).unwrap();
    let b = engine.run_ids(&ids, &LensOptions { path: LensPath::Graph, ..base }, &Progress::default()).unwrap();
    check_same("demo int8", &a, &b);
}
