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
