//! Activation patching (issue 27) against transformers in float64 with forward hooks on the real
//! modules (`tests/fixtures/patching/make_fixture.py`): for GPT-2, CTRL, GPT-Neo, GPT-J, GPT-NeoX
//! (parallel and sequential), Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3, every residual,
//! attention and MLP site at every position: `logit(target) − logit(against)` of the patched
//! corrupted run within 1e-4 (relative, for values above 1), and `log p(target)` for the residual
//! sites; the last residual site at the last position restores the clean metric exactly; a patched
//! run on the key/value cache equals one over the whole prompt; bad inputs are clear errors.

mod common;

use std::path::PathBuf;

use lens_model::analyses::patch::{PatchKind, PatchOptions, patch_sweep};
use lens_model::error::Progress;
use lens_model::run::sites::SiteKind;
use lens_model::run::trace::{Patch, PatchRows};
use lens_tests::fixture::unique_temp_dir;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn grid(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1.0)
}

/// The 12 family cases of the transformers fixtures (`lens_tests::fixture::FAMILY_CASES`).
const CASES: [&str; 12] = lens_tests::fixture::FAMILY_CASES;

#[test]
fn patching_effects_match_transformers_hooks_for_every_family() {
    let mut worst = 0f64;
    for case in CASES {
        let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("patching/{case}.json"))).unwrap()).unwrap();
        let src = fixtures().join("..").join("..").join(exp["source"].as_str().unwrap());
        let bundle = unique_temp_dir(&format!("patch-{case}"));
        lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
        let mut engine = common::open(&bundle);
        assert!(engine.bundle.patchable, "{case}: the lens graph takes a patch");
        assert!(engine.bundle.startable, "{case}: the lens graph can start at a block");
        skipping_equals_every_block(case, &mut engine, &ids(&exp["corrupt_ids"]));
        let (clean, corrupt) = (ids(&exp["clean_ids"]), ids(&exp["corrupt_ids"]));
        let (target, against) = (exp["target"].as_u64().unwrap() as u32, exp["against"].as_u64().unwrap() as u32);
        let opts = PatchOptions { kinds: PatchKind::ALL.to_vec(), target, against: Some(against) };
        let r = patch_sweep(&mut engine, &clean, &corrupt, &opts, &Progress::default()).unwrap();
        assert_eq!(r.metric, "logit_diff");
        assert!(close(r.clean_metric, exp["clean_metric"].as_f64().unwrap()), "{case}: clean {} vs {}", r.clean_metric, exp["clean_metric"]);
        assert!(close(r.corrupt_metric, exp["corrupt_metric"].as_f64().unwrap()), "{case}: corrupt");
        for g in &r.grids {
            let want = grid(&exp["effect"][g.kind.name()]);
            assert_eq!(g.effect.n_rows(), want.len(), "{case} {}", g.kind.name());
            for (s, row) in want.iter().enumerate() {
                for (p, &w) in row.iter().enumerate() {
                    let got = *g.effect.get(s, p).unwrap();
                    worst = worst.max((got - w).abs() / w.abs().max(1.0));
                    assert!(close(got, w), "{case} {} site {} pos {p}: {got} vs transformers {w}", g.kind.name(), g.sites[s]);
                    let norm = *g.normalized.get(s, p).unwrap();
                    assert!((norm - (got - r.corrupt_metric) / (r.clean_metric - r.corrupt_metric)).abs() < 1e-9);
                }
            }
        }
        // The .npz reads back with an independent reader.
        if case == "gpt2" {
            let dir = unique_temp_dir("patch-npz");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("p.npz");
            r.write_npz(&path).unwrap();
            let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            for g in &r.grids {
                let a: ndarray::Array2<f64> = npz.by_name(&format!("effect_{}.npy", g.kind.name())).unwrap();
                assert_eq!(a.shape(), [g.sites.len(), clean.len()]);
                assert!(a.iter().zip(g.effect.cells()).all(|(x, y)| x == y), "effect_{}", g.kind.name());
            }
            let ids_back: ndarray::Array1<i64> = npz.by_name("corrupt_ids.npy").unwrap();
            assert_eq!(ids_back.to_vec(), corrupt.iter().map(|&i| i64::from(i)).collect::<Vec<_>>());
        }
        // The last residual site at the last position is the clean run's own last residual.
        let resid = &r.grids[0];
        let last = clean.len() - 1;
        assert_eq!(*resid.effect.get(resid.sites.len() - 1, last).unwrap(), r.clean_metric, "{case}: not restored exactly");
        assert_eq!(r.runs, (3 * engine.bundle.shape.n_layers + 1) * clean.len());
        // log p(target), residual sites.
        let lp =
            patch_sweep(&mut engine, &clean, &corrupt, &PatchOptions { kinds: vec![PatchKind::Resid], target, against: None }, &Progress::default()).unwrap();
        assert_eq!(lp.metric, "log_prob");
        assert!(close(lp.clean_metric, exp["clean_log_prob"].as_f64().unwrap()), "{case}: clean log p");
        for (s, row) in grid(&exp["log_prob"]).iter().enumerate() {
            for (p, &w) in row.iter().enumerate() {
                let got = *lp.grids[0].effect.get(s, p).unwrap();
                assert!(close(got, w), "{case} log p site {s} pos {p}: {got} vs {w}");
            }
        }
    }
    eprintln!("worst relative difference from transformers: {worst:e}");
}

/// Largest absolute difference of two arrays of one shape.
fn gap(a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// A patched run that starts at the block after the site (and at the patched position, on the
/// cache) gives every hook of every layer as the run of every block over the whole prompt does;
/// the sweep's last-residual-only run gives that run's last row.
fn skipping_equals_every_block(case: &str, engine: &mut lens_model::LensEngine, ids_: &[u32]) {
    let base = engine.trace_for_patching(ids_, &Progress::default()).unwrap();
    let plain = engine.trace(ids_).unwrap();
    let n_layers = engine.bundle.shape.n_layers;
    let d = engine.bundle.shape.d_model;
    let value: Vec<f32> = (0..d).map(|i| (i as f32 * 0.29).cos()).collect();
    let last = ids_.len() - 1;
    let sequential = engine.bundle.has_resid_mid;
    let mut sites = vec![SiteKind::Embed, SiteKind::Block(0), SiteKind::Block(n_layers - 1)];
    if sequential {
        sites.extend([SiteKind::Attn(0), SiteKind::Attn(n_layers - 1)]);
    }
    for site in sites {
        for p in [0, last / 2, last] {
            let patch = Patch { site, rows: PatchRows::One(p), value: value.clone() };
            let skipped = engine.run_patched(&base, ids_, &patch, &Progress::default()).unwrap();
            let full = engine.run_patched_every_block(&plain, ids_, &patch, &Progress::default()).unwrap();
            let mut worst = gap(&skipped.embed, &full.embed);
            for l in 0..n_layers {
                for (a, b) in [
                    (&skipped.resid_mid, &full.resid_mid),
                    (&skipped.resid_post, &full.resid_post),
                    (&skipped.attn_out, &full.attn_out),
                    (&skipped.mlp_out, &full.mlp_out),
                ] {
                    worst = worst.max(gap(&a[l], &b[l]));
                }
            }
            assert!(worst < 1e-4, "{case} {site:?} at {p}: skipping and every block differ by {worst}");
            assert_eq!(skipped.site(site).unwrap().row(p).to_vec(), value, "{case} {site:?} at {p}: the patched row");
            let only = engine.patched_final_resid(&base, ids_, &patch, &Progress::default()).unwrap();
            assert_eq!(only, skipped.final_resid().unwrap().row(last).to_vec(), "{case} {site:?} at {p}: the last residual alone");
            let every = full.final_resid().unwrap().row(last).to_vec();
            let off = only.iter().zip(&every).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(off < 1e-4, "{case} {site:?} at {p}: the last residual alone and every block differ by {off}");
        }
    }
}

#[test]
fn a_patch_on_the_cache_equals_one_over_the_whole_prompt_and_bad_inputs_are_errors() {
    let src = fixtures().join("families/llama_f32");
    let bundle = unique_temp_dir("patch-cache");
    lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
    let mut engine = common::open(&bundle);
    let ids_: Vec<u32> = vec![5, 9, 44, 7, 81, 12, 30];
    let base = engine.trace_for_patching(&ids_, &Progress::default()).unwrap();
    assert!(base.kv.is_some());
    let plain = engine.trace(&ids_).unwrap();
    assert!(plain.kv.is_none());
    let d = engine.bundle.shape.d_model;
    let value: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
    for site in [SiteKind::Embed, SiteKind::Attn(1), SiteKind::Block(0), SiteKind::Block(2)] {
        for p in [0, 3, 6] {
            let patch = Patch { site, rows: PatchRows::One(p), value: value.clone() };
            let cached = engine.run_patched(&base, &ids_, &patch, &Progress::default()).unwrap();
            let whole = engine.run_patched(&plain, &ids_, &patch, &Progress::default()).unwrap();
            let (a, b) = (cached.final_resid().unwrap(), whole.final_resid().unwrap());
            let gap = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(gap < 1e-4, "{site:?} at {p}: cached and whole differ by {gap}");
            // The patched site holds the value at that position, and the rows before it are the base's.
            let at = cached.site(site).unwrap();
            assert_eq!(at.row(p).to_vec(), value, "{site:?} at {p}");
            for q in 0..p {
                assert_eq!(at.row(q), base.site(site).unwrap().row(q));
            }
        }
    }
    // Every row (steering's shape): rows of the value, one per position.
    let all: Vec<f32> = (0..ids_.len() * d).map(|i| (i as f32 * 0.11).cos()).collect();
    let steered =
        engine.run_patched(&plain, &ids_, &Patch { site: SiteKind::Block(1), rows: PatchRows::All, value: all.clone() }, &Progress::default()).unwrap();
    assert_eq!(steered.site(SiteKind::Block(1)).unwrap().as_slice().unwrap(), &all[..]);
    // Bad inputs.
    let opts = PatchOptions { kinds: vec![PatchKind::Resid], target: 3, against: None };
    let e = patch_sweep(&mut engine, &ids_, &ids_[..5], &opts, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("7 tokens") && e.contains("5") && e.contains("same length"), "{e}");
    let e = patch_sweep(&mut engine, &ids_, &ids_, &PatchOptions { target: 1_000_000, ..opts.clone() }, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("outside the model's vocabulary"), "{e}");
    let e = engine
        .run_patched(&base, &ids_, &Patch { site: SiteKind::Block(9), rows: PatchRows::One(0), value: value.clone() }, &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no residual site"), "{e}");
    let e = engine
        .run_patched(&base, &ids_, &Patch { site: SiteKind::Block(0), rows: PatchRows::One(7), value: value.clone() }, &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("past the prompt"), "{e}");
    let e = engine
        .run_patched(&base, &ids_, &Patch { site: SiteKind::Block(0), rows: PatchRows::One(1), value: value[..3].to_vec() }, &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("finite rows"), "{e}");
}

/// Steering against transformers with a forward hook adding `alpha · v` to block 1's output at
/// every position (`make_steering.py`): the steered logits at every position within 1e-4, the
/// greedy continuations with and without it identical, the `.npy` vector read as numpy wrote it,
/// and the text-pair vector (A's block output at its last position minus B's) within 1e-4.
#[test]
fn steering_matches_a_transformers_hook() {
    use lens_model::analyses::steer::{SteerSource, SteerSpec, greedy, steered_trace, steering_of};
    for case in ["gpt2", "llama_f32", "gemma2_f32", "gptj_f32"] {
        let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("patching/steer_{case}.json"))).unwrap()).unwrap();
        let src = fixtures().join("..").join("..").join(exp["source"].as_str().unwrap());
        let bundle = unique_temp_dir(&format!("steer-{case}"));
        lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
        let mut engine = common::open(&bundle);
        let ids_ = ids(&exp["ids"]);
        let vector: Vec<f32> = exp["vector"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let npy = lens_model::source::npy::read_vector(&fixtures().join(format!("patching/steer_{case}.npy"))).unwrap();
        assert_eq!(npy, vector, "{case}: the .npy vector");
        let layer = exp["layer"].as_u64().unwrap() as usize;
        let alpha = exp["alpha"].as_f64().unwrap() as f32;
        let spec = SteerSpec { layer, source: SteerSource::File(fixtures().join(format!("patching/steer_{case}.npy"))), alpha };
        let s = steering_of(&mut engine, &spec, &Progress::default()).unwrap();
        assert_eq!(s.vector, vector);
        let base = engine.trace_for_patching(&ids_, &Progress::default()).unwrap();
        let steered = steered_trace(&mut engine, &ids_, &base, &s, &Progress::default()).unwrap();
        for (p, want) in grid(&exp["logits"]).iter().enumerate() {
            let got = engine.final_logits(&steered, p).unwrap();
            let gap = got.iter().zip(want).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0f64, f64::max);
            assert!(gap < 1e-4, "{case} position {p}: steered logits differ by {gap}");
        }
        assert_eq!(greedy(&mut engine, &ids_, Some(&s), 5, &Progress::default()).unwrap(), ids(&exp["continuation"]), "{case}: steered continuation");
        assert_eq!(greedy(&mut engine, &ids_, None, 5, &Progress::default()).unwrap(), ids(&exp["unsteered"]), "{case}: unsteered continuation");
        // The text-pair vector, from token ids (the fixture's tokenizer is not the point here).
        let pair: Vec<Vec<u32>> = exp["pair"].as_array().unwrap().iter().map(ids).collect();
        let last_post = |engine: &mut lens_model::LensEngine, x: &[u32]| engine.trace(x).unwrap().resid_post[layer].row(x.len() - 1).to_vec();
        let (a, b) = (last_post(&mut engine, &pair[0]), last_post(&mut engine, &pair[1]));
        for (i, w) in exp["pair_vector"].as_array().unwrap().iter().enumerate() {
            assert!((f64::from(a[i] - b[i]) - w.as_f64().unwrap()).abs() < 1e-4, "{case}: pair vector [{i}]");
        }
    }
    // Specs: parsed, and refused with a reason.
    let s = SteerSpec::parse("3= happy| sad*-2.5").unwrap();
    assert_eq!((s.layer, s.alpha, s.source), (3, -2.5, SteerSource::Texts(" happy".into(), " sad".into())));
    assert_eq!(SteerSpec::parse("0=v.npy").unwrap().alpha, 1.0);
    assert!(SteerSpec::parse("x=v.npy*2").unwrap_err().contains("not a layer number"));
    assert!(SteerSpec::parse("2=|b*2").unwrap_err().contains("two non-empty prompts"));
    let src = fixtures().join("families/llama_f32");
    let bundle = unique_temp_dir("steer-bad");
    lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
    let mut engine = common::open(&bundle);
    let e =
        steering_of(&mut engine, &SteerSpec { layer: 9, source: SteerSource::Texts("a".into(), "b".into()), alpha: 1.0 }, &Progress::default()).unwrap_err();
    assert!(e.to_string().contains("the model has layers 0..2"), "{e}");
    // GPT-2's vector (32 values) on the Llama (width 48).
    let wrong = fixtures().join("patching/steer_gpt2.npy");
    assert_ne!(lens_model::source::npy::read_vector(&wrong).unwrap().len(), engine.bundle.shape.d_model);
    let e = steering_of(&mut engine, &SteerSpec { layer: 0, source: SteerSource::File(wrong), alpha: 1.0 }, &Progress::default()).unwrap_err();
    assert!(e.to_string().contains("model's width"), "{e}");
    let e = lens_model::source::npy::read_vector(&fixtures().join("patching/gpt2.json")).unwrap_err().to_string();
    assert!(e.contains("not a NumPy vector file"), "{e}");
}

/// A bundle converted before the graph could start at a block (no `start_layer`, `start_resid`,
/// `with_logits` inputs: they become constants) runs every block and gives the same patched runs,
/// one row or every row (steering's shape), and the same sweep.
#[test]
fn a_bundle_that_cannot_skip_blocks_patches_the_same() {
    use lens_model::build::onnx::ModelProto;
    use prost::Message;
    let src = fixtures().join("families/gemma2_f32");
    let new = unique_temp_dir("patch-startable");
    lens_model::build::convert::convert_hf_checkpoint(&src, &new, &Progress::default()).unwrap();
    let old = unique_temp_dir("patch-not-startable");
    lens_model::build::convert::convert_hf_checkpoint(&src, &old, &Progress::default()).unwrap();
    let path = old.join("model.onnx");
    let mut m = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    m.graph.as_mut().unwrap().input.retain(|i| !["start_layer", "start_resid", "with_logits"].contains(&i.name.as_deref().unwrap()));
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let mut a = common::open(&new);
    let mut b = common::open(&old);
    assert!(a.bundle.startable && a.bundle.logits_optional);
    assert!(b.bundle.patchable && !b.bundle.startable && !b.bundle.logits_optional);
    let ids_: Vec<u32> = vec![3, 17, 29, 5, 11, 40];
    let d = a.bundle.shape.d_model;
    let (base_a, base_b) = (a.trace_for_patching(&ids_, &Progress::default()).unwrap(), b.trace_for_patching(&ids_, &Progress::default()).unwrap());
    let value: Vec<f32> = (0..d).map(|i| (i as f32 * 0.13).sin()).collect();
    let every: Vec<f32> = (0..ids_.len() * d).map(|i| (i as f32 * 0.07).cos()).collect();
    for (site, rows, v) in [
        (SiteKind::Block(0), PatchRows::One(2), &value),
        (SiteKind::Attn(1), PatchRows::One(4), &value),
        (SiteKind::Block(1), PatchRows::All, &every),
        (SiteKind::Block(0), PatchRows::All, &every),
    ] {
        let patch = Patch { site, rows, value: v.clone() };
        let (x, y) =
            (a.run_patched(&base_a, &ids_, &patch, &Progress::default()).unwrap(), b.run_patched(&base_b, &ids_, &patch, &Progress::default()).unwrap());
        let mut worst = gap(&x.embed, &y.embed);
        for l in 0..a.bundle.shape.n_layers {
            for (p, q) in [(&x.resid_mid, &y.resid_mid), (&x.resid_post, &y.resid_post), (&x.attn_out, &y.attn_out), (&x.mlp_out, &y.mlp_out)] {
                worst = worst.max(gap(&p[l], &q[l]));
            }
        }
        assert!(worst < 1e-4, "{site:?} {rows:?}: a bundle that skips and one that cannot differ by {worst}");
        let only_b = b.patched_final_resid(&base_b, &ids_, &patch, &Progress::default()).unwrap();
        assert_eq!(only_b, y.final_resid().unwrap().row(ids_.len() - 1).to_vec());
    }
    let opts = PatchOptions { kinds: PatchKind::ALL.to_vec(), target: 7, against: Some(9) };
    let (ra, rb) = (
        patch_sweep(&mut a, &ids_, &[3, 18, 29, 5, 12, 40], &opts, &Progress::default()).unwrap(),
        patch_sweep(&mut b, &ids_, &[3, 18, 29, 5, 12, 40], &opts, &Progress::default()).unwrap(),
    );
    for (ga, gb) in ra.grids.iter().zip(&rb.grids) {
        let off = ga.effect.cells().zip(gb.effect.cells()).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
        assert!(off < 1e-4, "{}: sweeps differ by {off}", ga.kind.name());
    }
}
