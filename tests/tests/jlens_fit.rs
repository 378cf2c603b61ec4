//! Fitting J-lenses natively (issue 28) against TransformerLens 4.3's own `JacobianLens.fit` on
//! the same prompts (`tests/fixtures/jacobian_lens/fit/make_fixture.py`): per layer, relative
//! Frobenius difference under 1e-3, the same source layers and prompt count; a merge of two
//! halves equals one fit; a stopped fit resumed from its checkpoint equals an uninterrupted one.

mod common;

use std::path::{Path, PathBuf};

use lens_model::analyses::jlens_fit::{JlensFitOptions, checkpoint_path, fit_jacobian_lens, merge_jacobian_lenses, prompts_of};
use lens_model::error::{LensError, Progress};
use lens_model::lens::jacobian_lens::JacobianLens;
use lens_model::run::runtime::Device;
use lens_tests::fixture::unique_temp_dir;

fn fit_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/jacobian_lens/fit"))
}

/// Largest per-layer relative Frobenius difference of two lenses of the same layers.
fn rel_frobenius(a: &JacobianLens, b: &JacobianLens) -> f64 {
    assert_eq!(a.source_layers(), b.source_layers());
    let mut worst = 0f64;
    for (l, m) in &a.matrices {
        let (x, y) = (m.to_f32().unwrap(), b.matrices[l].to_f32().unwrap());
        let diff: f64 = x.iter().zip(&y).map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = y.iter().map(|q| f64::from(*q).powi(2)).sum::<f64>().sqrt();
        worst = worst.max(diff / norm);
    }
    worst
}

struct Case {
    engine: lens_model::LensEngine,
    prompts: Vec<String>,
    opts: JlensFitOptions,
    reference: JacobianLens,
}

fn case(name: &str) -> Case {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fit_dir().join(format!("{name}.json"))).unwrap()).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(meta["source"].as_str().unwrap());
    let bundle = unique_temp_dir(&format!("jfit-{name}"));
    lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
    let engine = common::open(&bundle);
    let prompts = prompts_of(&std::fs::read_to_string(fit_dir().join("prompts.txt")).unwrap());
    let opts = JlensFitOptions {
        max_seq_len: meta["max_seq_len"].as_u64().unwrap() as usize,
        skip_first: meta["skip_first_positions"].as_u64().unwrap() as usize,
        dim_batch: meta["dim_batch"].as_u64().unwrap() as usize,
        half: false,
        corpus: "fixture".into(),
        ..JlensFitOptions::default()
    };
    // The same token ids TransformerLens fitted on.
    for (p, want) in prompts.iter().zip(meta["ids"].as_array().unwrap()) {
        let mut ids = engine.tokenizer.encode(p).unwrap();
        ids.truncate(opts.max_seq_len);
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want, "{name}: tokenization of {p:?}");
    }
    let reference = JacobianLens::open(&fit_dir().join(format!("{name}.pt"))).unwrap();
    assert_eq!(reference.n_prompts, meta["n_prompts"].as_u64().unwrap());
    Case { engine, prompts, opts, reference }
}

#[test]
fn a_fit_equals_transformer_lens_fit_and_merges_and_resumes() {
    for name in ["gpt2", "llama"] {
        let mut c = case(name);
        // The fits below run the backward graph on the valid positions only, after the key/value
        // cache of the skipped ones (the path every bundle with a cache takes).
        assert!(
            lens_model::run::gradients::GradRunner::open(&c.engine.bundle, Device::Cpu, 1, &Progress::default()).unwrap().takes_cache(),
            "{name}: the backward graph takes the cache"
        );
        let dir = unique_temp_dir(&format!("jfit-out-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("lens.pt");
        let report = fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &c.opts, &out, &Progress::default(), &mut |_, _| {}).unwrap();
        assert_eq!(report.skipped, 1, "{name}: the 3-token prompt is skipped");
        let ours = JacobianLens::open(&out).unwrap();
        assert_eq!((ours.n_prompts, ours.source_layers()), (c.reference.n_prompts, c.reference.source_layers()), "{name}");
        let rel = rel_frobenius(&ours, &c.reference);
        eprintln!("{name}: relative Frobenius difference to TransformerLens's fit {rel:e}");
        assert!(rel < 1e-3, "{name}: {rel}");
        assert!(!checkpoint_path(&out).exists(), "{name}: the checkpoint is removed when the lens is written");
        // Another number of dimensions per backward run gives the same lens.
        for dim_batch in [5, 48] {
            let other = dir.join(format!("dims{dim_batch}.pt"));
            let opts = JlensFitOptions { dim_batch, ..c.opts.clone() };
            fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &opts, &other, &Progress::default(), &mut |_, _| {}).unwrap();
            let rel = rel_frobenius(&JacobianLens::open(&other).unwrap(), &ours);
            assert!(rel < 1e-6, "{name}: --dim-batch {dim_batch} differs by {rel}");
        }

        // Two halves merged equal one fit.
        let (a, b) = (dir.join("a.pt"), dir.join("b.pt"));
        let half = c.prompts.len() / 2;
        fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts[..half], &c.opts, &a, &Progress::default(), &mut |_, _| {}).unwrap();
        fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts[half..], &c.opts, &b, &Progress::default(), &mut |_, _| {}).unwrap();
        let merged = dir.join("merged.pt");
        assert_eq!(merge_jacobian_lenses(&[a.clone(), b], &merged, false).unwrap(), ours.n_prompts);
        let rel = rel_frobenius(&JacobianLens::open(&merged).unwrap(), &ours);
        assert!(rel < 1e-6, "{name}: merged halves differ by {rel}");

        // Stopped after two prompts, resumed: the same lens.
        let stopped = dir.join("stopped.pt");
        let progress = Progress::default();
        let p2 = progress.clone();
        let e = fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &c.opts, &stopped, &progress, &mut |done, _| {
            if done == 2 {
                p2.cancel();
            }
        })
        .unwrap_err();
        assert!(matches!(e, LensError::Cancelled), "{e}");
        assert!(!stopped.exists() && checkpoint_path(&stopped).is_file(), "{name}: a stopped fit leaves its checkpoint, not a lens");
        // The checkpoint is the reference's fit-checkpoint schema: it reads as a lens of 2 prompts.
        assert_eq!(JacobianLens::open(&checkpoint_path(&stopped)).unwrap().n_prompts, 2);
        let r = fit_jacobian_lens(
            &mut c.engine,
            Device::Cpu,
            &c.prompts,
            &JlensFitOptions { resume: true, ..c.opts.clone() },
            &stopped,
            &Progress::default(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(r.n_prompts, ours.n_prompts);
        assert_eq!(r.prompts_run as u64, ours.n_prompts - 2, "{name}: the resumed run fits only the prompts left");
        let rel = rel_frobenius(&JacobianLens::open(&stopped).unwrap(), &ours);
        assert!(rel < 1e-6, "{name}: the resumed fit differs by {rel}");
        // Stopped inside a prompt (between two of its backward runs), resumed: the same lens; the
        // checkpoint holds the prompts before it only.
        let inside = dir.join("inside.pt");
        let passes = c.engine.bundle.shape.d_model.div_ceil(c.opts.dim_batch);
        assert!(passes >= 2, "{name}: a prompt of one backward run cannot be stopped inside");
        let e = fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &c.opts, &inside, &progress_cancel_at_run(passes + passes / 2 + 1), &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(e, LensError::Cancelled), "{e}");
        assert_eq!(JacobianLens::open(&checkpoint_path(&inside)).unwrap().n_prompts, 1, "{name}: the unfinished prompt is not in the checkpoint");
        let resume = JlensFitOptions { resume: true, ..c.opts.clone() };
        fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &resume, &inside, &Progress::default(), &mut |_, _| {}).unwrap();
        let rel = rel_frobenius(&JacobianLens::open(&inside).unwrap(), &ours);
        assert!(rel < 1e-6, "{name}: stopped inside a prompt and resumed, the fit differs by {rel}");
        // A resume with other options is refused.
        let other = JlensFitOptions { skip_first: c.opts.skip_first + 1, ..c.opts.clone() };
        let e2 = dir.join("e2.pt");
        let e = fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &c.opts, &e2, &progress_cancel_after(1), &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, LensError::Cancelled));
        let e = fit_jacobian_lens(
            &mut c.engine,
            Device::Cpu,
            &c.prompts,
            &JlensFitOptions { resume: true, ..other.clone() },
            &e2,
            &Progress::default(),
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("skip_first"), "{e}");
        // A checkpoint written before the first prompt finished resumes from nothing.
        let resume = JlensFitOptions { resume: true, ..c.opts.clone() };
        let r = fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &resume, &e2, &Progress::default(), &mut |_, _| {}).unwrap();
        assert_eq!(r.n_prompts, ours.n_prompts);
        assert!(rel_frobenius(&JacobianLens::open(&e2).unwrap(), &ours) < 1e-6, "{name}: resumed from an empty checkpoint");
        // Merging lenses of different layers is refused.
        let partial = dir.join("partial.pt");
        let one = JlensFitOptions { layers: Some(vec![0]), ..c.opts.clone() };
        fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts[..2], &one, &partial, &Progress::default(), &mut |_, _| {}).unwrap();
        let e = merge_jacobian_lenses(&[a, partial], &dir.join("bad.pt"), false).unwrap_err().to_string();
        assert!(e.contains("holds layers"), "{e}");
    }
}

/// A progress that cancels itself when the fit starts its `n`-th backward run (1-based).
fn progress_cancel_at_run(n: usize) -> Progress {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    let slot: Arc<OnceLock<Progress>> = Arc::new(OnceLock::new());
    let count = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&slot);
    let p = Progress::new(move |stage, _| {
        if stage == "fitting the J-lens"
            && count.fetch_add(1, Ordering::Relaxed) + 1 == n
            && let Some(p) = s.get()
        {
            p.cancel();
        }
    });
    slot.set(p.clone()).unwrap();
    p
}

/// A progress cancelled as soon as a run starts (the first prompt stops the fit).
fn progress_cancel_after(_prompts: usize) -> Progress {
    let p = Progress::default();
    p.cancel();
    p
}

#[test]
fn the_default_fp16_lens_reads_back() {
    let mut c = case("gpt2");
    let dir = unique_temp_dir("jfit-f16");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("lens.pt");
    let opts = JlensFitOptions { half: true, ..c.opts.clone() };
    fit_jacobian_lens(&mut c.engine, Device::Cpu, &c.prompts, &opts, &out, &Progress::default(), &mut |_, _| {}).unwrap();
    let lens = JacobianLens::open(&out).unwrap();
    assert!(lens.matrices.values().all(|m| m.data.len() == 2 * 32 * 32), "float16 storage");
    let rel = rel_frobenius(&lens, &c.reference);
    assert!(rel < 2e-3, "fp16 lens differs by {rel}");
    assert_eq!(lens.model_name.as_deref(), Some(c.engine.bundle.name.as_str()));
}
