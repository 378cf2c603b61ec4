//! Cancellation: a cancelled run stops with `Cancelled` (not a partial report), and the engine
//! stays usable and exact afterwards.

mod common;

use lens_model::LensOptions;
use lens_model::error::{LensError, Progress};
use lens_tests::fixture::RandomGpt2;

#[test]
fn cancel_stops_the_run_and_the_engine_stays_usable() {
    let (_hf, bundle) = common::make_bundle("cancel", &RandomGpt2::tiny(31));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("one two three four five six seven eight", false).unwrap();
    let opts = LensOptions { chunk: 64, ..LensOptions::default() };
    let before = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();

    // Cancelled before it starts.
    let p = Progress::default();
    p.cancel();
    assert!(matches!(engine.run_ids(&ids, &opts, &p), Err(LensError::Cancelled)));

    // Cancelled from the progress callback in the middle of the lens kernel.
    let holder: std::sync::Arc<std::sync::Mutex<Option<Progress>>> = Default::default();
    let h2 = holder.clone();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = seen.clone();
    let p = Progress::new(move |stage, f| {
        if stage == "lens" && f > 0.0 {
            s2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(p) = h2.lock().unwrap().as_ref() {
                p.cancel();
            }
        }
    });
    *holder.lock().unwrap() = Some(p.clone());
    assert!(matches!(engine.run_ids(&ids, &opts, &p), Err(LensError::Cancelled)));
    assert!(seen.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // The next run gives exactly the same report as before.
    let after = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    assert_eq!(before.metrics, after.metrics);
    assert_eq!(before.top_k, after.top_k);
}

/// A forward pass cancelled from another thread stops inside ONNX Runtime (`RunOptions::
/// terminate`) instead of running to its end: the app's Cancel and a newer edit no longer wait for
/// a stale pass (the worker ran it with a progress nobody could cancel).
#[test]
fn cancel_terminates_the_forward_pass() {
    let spec = RandomGpt2 { n_layer: 48, n_embd: 128, n_head: 4, n_positions: 1024, ..RandomGpt2::tiny(32) };
    let (_hf, bundle) = common::make_bundle("cancel-forward", &spec);
    let mut engine = common::open(&bundle);
    let ids: Vec<u32> = (0..1024u32).map(|i| (i * 7919 + 13) % 50257).collect();
    engine.trace(&ids[..8]).unwrap(); // warm-up
    let t0 = std::time::Instant::now();
    let full = engine.trace_with(&ids, &Progress::default()).unwrap();
    let full_time = t0.elapsed();
    assert_eq!(full.n_pos, 1024);

    let p = Progress::default();
    let p2 = p.clone();
    let delay = full_time / 10;
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(delay);
        p2.cancel();
    });
    let t1 = std::time::Instant::now();
    let r = engine.trace_with(&ids, &p);
    let cancelled_time = t1.elapsed();
    canceller.join().unwrap();
    assert!(matches!(r, Err(LensError::Cancelled)), "{:?}", r.map(|t| t.n_pos));
    assert!(cancelled_time < full_time / 2, "cancelled after {cancelled_time:?}; a whole pass takes {full_time:?}");
    // The engine is still usable: the same pass gives the same residuals.
    let again = engine.trace(&ids).unwrap();
    assert_eq!(again.resid_post, full.resid_post);
}

/// A conversion killed before it could clean up (Ctrl+C in the CLI) left a hidden
/// `.NAME.partial-PID-…` folder that no later run removed; the next conversion into the same
/// folder now removes those of processes that are gone, and never a running one's (issue 11,
/// item 12).
#[test]
fn stale_partial_conversions_are_swept() {
    let parent = lens_tests::fixture::TempDir::new("sweep").unwrap();
    let dead = parent.path().join(".big-model.partial-4194999-123-0");
    let alive = parent.path().join(format!(".other.partial-{}-456-0", std::process::id()));
    let unrelated = parent.path().join(".keep.me");
    for d in [&dead, &alive, &unrelated] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("model.onnx.data"), b"half-written").unwrap();
    }
    let hf = lens_tests::fixture::TempDir::new("sweep-hf").unwrap();
    lens_tests::fixture::write_checkpoint(hf.path(), &RandomGpt2::tiny(33)).unwrap();
    lens_model::convert::convert_hf_checkpoint(hf.path(), &parent.path().join("bundle"), &Progress::default()).unwrap();
    assert!(!dead.exists(), "the dead process's partial folder is removed");
    assert!(alive.exists(), "a running conversion's folder stays");
    assert!(unrelated.exists());
    assert!(parent.path().join("bundle/model.onnx").is_file());
}
