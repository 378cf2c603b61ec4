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
/// folder now removes those of processes of this machine that are gone — and never a running
/// one's, another machine's, one without our marker, or a user's look-alike folder (issue 11,
/// item 12).
#[test]
fn stale_partial_conversions_are_swept() {
    let parent = lens_tests::fixture::TempDir::new("sweep").unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    // (folder, marker text or none): only the first is a dead conversion of this machine.
    let cases = [
        (".big-model.partial-4194999-123-0", Some(format!("4194999 {}", boot.trim())), false),
        (&*format!(".running.partial-{}-456-0", std::process::id()), Some(format!("{} {}", std::process::id(), boot.trim())), true),
        (".other-host.partial-4194998-1-0", Some("4194998 0000-another-boot".to_string()), true),
        (".no-marker.partial-4194997-1-0", None, true),
        (".backup.partial-2024-05-01", None, true),
        (".keep.me", None, true),
    ];
    for (name, marker, _) in &cases {
        let d = parent.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.onnx.data"), b"half-written").unwrap();
        if let Some(m) = marker {
            std::fs::write(d.join(".logit-lens-partial"), m).unwrap();
        }
        std::fs::File::open(&d).unwrap().set_modified(old).unwrap();
    }
    let hf = lens_tests::fixture::TempDir::new("sweep-hf").unwrap();
    lens_tests::fixture::write_checkpoint(hf.path(), &RandomGpt2::tiny(33)).unwrap();
    lens_model::build::convert::convert_hf_checkpoint(hf.path(), &parent.path().join("bundle"), &Progress::default()).unwrap();
    for (name, _, kept) in &cases {
        assert_eq!(parent.path().join(name).exists(), *kept, "{name}");
    }
    assert!(parent.path().join("bundle/model.onnx").is_file());
    assert!(!parent.path().join("bundle/.logit-lens-partial").exists(), "the marker does not stay in the bundle");
}
