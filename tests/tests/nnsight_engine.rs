//! The nnsight engine (issue 29): our module run by nnsight locally on the family fixtures (with
//! and without sub-block rows)
//! against our own engine (top-1 and every rank identical, KL and entropy within 1e-4, the bytes
//! received small), and the protocol against stand-in engines (errors as NDIF words them, a
//! malformed result, cancel, a missing nnsight).
//!
//! The nnsight comparison needs a Python with torch and nnsight, named by
//! `LOGIT_LENS_NNSIGHT_PYTHON` (`.ci/run` makes one, cached outside the clone); without it that
//! test says so and returns.

/// The Python with torch and nnsight for the comparison test.
const NNSIGHT_PYTHON_ENV: &str = "LOGIT_LENS_NNSIGHT_PYTHON";

mod common;

use std::path::{Path, PathBuf};

use lens_model::LensOptions;
use lens_model::error::{LensError, Progress};
use lens_model::remote::nnsight::{NnsightOptions, find_script, lens_nnsight};
use lens_model::source::tokenizer::LensTokenizer;
use lens_tests::fixture::unique_temp_dir;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/families")).join(name)
}

fn engine_for(model: &Path, python: PathBuf, script: PathBuf) -> NnsightOptions {
    NnsightOptions { model: model.display().to_string(), remote: false, python, script }
}

#[test]
fn nnsight_locally_gives_our_engines_lens() {
    let Some(python) = std::env::var_os(NNSIGHT_PYTHON_ENV).filter(|p| !p.is_empty()).map(PathBuf::from) else {
        eprintln!("SKIPPED: {NNSIGHT_PYTHON_ENV} names no Python with torch and nnsight");
        return;
    };
    for (case, subblocks) in [
        ("gpt_neo_f32", true),
        ("llama_f32", false),
        ("llama_f32", true),
        ("gemma2_f32", true),
        ("gpt_neox_parallel_f32", true),
        ("gpt_neox_sequential_f16", true),
        ("qwen3_f32", true),
        ("gptj_f32", false),
        ("mistral_f32", true),
        ("ctrl_f32", true),
    ] {
        let src = fixture(case);
        let bundle = unique_temp_dir(&format!("nnsight-{case}"));
        lens_model::build::convert::convert_hf_checkpoint(&src, &bundle, &Progress::default()).unwrap();
        let mut ours = common::open(&bundle);
        let tok = LensTokenizer::from_file(&src.join("tokenizer.json")).unwrap();
        let ids = tok.encode("The cat sat on the mat, and then the dog sat on the cat").unwrap();
        let pin = ids[3];
        let group = lens_model::TokenGroup { name: "g".into(), token_ids: vec![ids[1], ids[5], ids[7]] };
        let opts = LensOptions { k: 5, pinned: vec![pin], groups: vec![group], subblocks, ..LensOptions::default() };
        let want = ours.run_ids(&ids, &opts, &Progress::default()).unwrap();
        let got = lens_nnsight(&engine_for(&src, python.clone(), find_script().unwrap()), &tok, &ids, &opts, &Progress::default()).unwrap();
        assert_eq!(got.sites, want.sites, "{case}");
        assert_eq!(got.model.residual, want.model.residual, "{case}");
        let (g, w) = (&got.metrics, &want.metrics);
        assert_eq!(g.top1_id, w.top1_id, "{case}: top-1");
        assert_eq!(g.rank_of_final_top1, w.rank_of_final_top1, "{case}: rank of the final top-1");
        assert_eq!(g.rank_of_next, w.rank_of_next, "{case}: rank of the next token");
        assert_eq!(g.rank_of_input, w.rank_of_input, "{case}: rank of the input token");
        assert_eq!(got.pinned.as_ref().unwrap().rank, want.pinned.as_ref().unwrap().rank, "{case}: pinned ranks");
        assert_eq!(got.top_k.ids, want.top_k.ids, "{case}: top-k");
        assert_eq!(got.groups[0].best_rank, want.groups[0].best_rank, "{case}: the group's best rank");
        let gap = got.groups[0].prob.cells().zip(want.groups[0].prob.cells()).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
        assert!(gap < 1e-5, "{case}: the group's probability differs by {gap}");
        for (name, a, b) in
            [("kl_to_final", &g.kl_to_final, &w.kl_to_final), ("kl_to_input", &g.kl_to_input, &w.kl_to_input), ("entropy", &g.entropy, &w.entropy)]
        {
            let gap = a.cells().zip(b.cells()).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
            assert!(gap < 1e-4, "{case}: {name} differs by {gap}");
        }
        // The direct logit attribution, computed inside the trace from the attention outputs and
        // what each block added besides them, against our engine's hooks.
        let (ga, wa) = (&got.attribution, &want.attribution);
        assert_eq!(ga.components, wa.components, "{case}");
        assert_eq!(ga.final_top1_ids, wa.final_top1_ids, "{case}");
        let scale = wa.final_top1.cells().map(|x| x.abs()).fold(1f64, f64::max);
        let gap = ga.final_top1.cells().zip(wa.final_top1.cells()).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
        assert!(gap < 1e-4 * scale, "{case}: attribution to the final top-1 differs by {gap} (largest term {scale})");
        for (x, y) in ga.next.cells().zip(wa.next.cells()) {
            match (x, y) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-4 * scale, "{case}: attribution to the next token {x} vs {y}"),
                (None, None) => {}
                _ => panic!("{case}: attribution to the next token {x:?} vs {y:?}"),
            }
        }
        let info = got.run.engine.as_ref().unwrap();
        assert_eq!((info.name.as_str(), info.location.as_str()), ("nnsight", "local"));
        // Only the reduced rows come back: under half of the f32 logits of every cell even at this
        // fixture's 300-token vocabulary, and a bounded size per cell whatever the vocabulary.
        let cells = got.sites.len() * ids.len();
        let full = cells * got.model.d_vocab * 4;
        assert!(info.bytes_received * 2 < full, "{case}: {} bytes received, the logits are {full}", info.bytes_received);
        let numbers_per_cell = 4 + 2 * 5 + 2 * (1 + 2 + 1 + 3);
        let attribution_numbers = 2 * (2 * got.model.n_layers + 2) * ids.len() + ids.len();
        assert!(info.bytes_received < (cells * numbers_per_cell + attribution_numbers) * 26 + 1024, "{case}: {} bytes for {cells} cells", info.bytes_received);
        // The report reads back through the same checks as the local engine's.
        let dir = unique_temp_dir("nnsight-json");
        std::fs::create_dir_all(&dir).unwrap();
        got.write_json(&dir.join("r.json")).unwrap();
        let back = lens_model::output::report::LensReport::read_json(&dir.join("r.json")).unwrap();
        assert_eq!(back.run.engine, got.run.engine);
    }
}

/// Writes a stand-in engine: a Python script that reads the request and runs `body`.
fn stand_in(name: &str, body: &str) -> PathBuf {
    let dir = unique_temp_dir(&format!("nnsight-stand-in-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("engine.py");
    std::fs::write(&path, format!("import json, sys, time\nrequest = json.loads(sys.stdin.readline())\n{body}\n")).unwrap();
    path
}

fn run_with(script: PathBuf, progress: &Progress) -> lens_model::error::Result<lens_model::output::report::LensReport> {
    let src = fixture("llama_f32");
    let tok = LensTokenizer::from_file(&src.join("tokenizer.json")).unwrap();
    let ids = tok.encode("one two three").unwrap();
    let mut e = engine_for(&src, PathBuf::from("python3"), script);
    e.remote = true;
    lens_nnsight(&e, &tok, &ids, &LensOptions::default(), progress)
}

#[test]
fn ndif_answers_and_bad_results_are_clear_errors() {
    // What NDIF answers arrives as the module words it.
    let refused = stand_in(
        "refused",
        r#"assert request["remote"] is True and request["protocol"] == 2
print(json.dumps({"type": "status", "message": "queued"}), flush=True)
print(json.dumps({"type": "error", "kind": "remote", "message": "NDIF does not host this model now. NDIF said: not dedicated"}), flush=True)"#,
    );
    let e = run_with(refused, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("nnsight engine") && e.contains("does not host this model"), "{e}");
    // A result with a row short of fields.
    let short = stand_in(
        "short",
        r#"n = len(request["ids"])
print(json.dumps({"type": "result", "protocol": 2, "n_layers": 1, "d_model": 4, "d_vocab": 300, "family": "llama", "n_ctx": 128, "where": "remote", "rows": [[0.0, 1.0]] * (2 * n)}), flush=True)"#,
    );
    let e = run_with(short, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("row of 2 fields"), "{e}");
    // A line past the cap is refused without holding it all (a runaway engine).
    let huge = stand_in("huge", r#"sys.stdout.write("x" * (600 << 20)); sys.stdout.flush()"#);
    let e = run_with(huge, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("line of over 512 MB"), "{e}");
    // Another protocol.
    let old = stand_in("old", r#"print(json.dumps({"type": "result", "protocol": 0}), flush=True)"#);
    let e = run_with(old, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("another protocol"), "{e}");
    // A crash: the error carries its last words.
    let crash = stand_in("crash", r#"sys.stderr.write("Traceback: something broke\n"); sys.exit(3)"#);
    let e = run_with(crash, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("without a result") && e.contains("something broke"), "{e}");
}

#[test]
fn cancel_stops_the_engine() {
    let slow = stand_in(
        "slow",
        r#"print(json.dumps({"type": "status", "message": "queued"}), flush=True)
time.sleep(60)"#,
    );
    let progress = Progress::default();
    let p2 = progress.clone();
    let t0 = std::time::Instant::now();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        p2.cancel();
    });
    let e = run_with(slow, &progress).unwrap_err();
    assert!(matches!(e, LensError::Cancelled), "{e}");
    assert!(t0.elapsed().as_secs() < 20, "cancel took {:?}", t0.elapsed());
}

#[test]
fn a_python_without_nnsight_gets_the_pip_command() {
    // A Python where `import torch` / `import nnsight` fails (a fresh venv has neither).
    let dir = unique_temp_dir("nnsight-bare-venv");
    let ok = std::process::Command::new("python3").args(["-m", "venv", "--without-pip"]).arg(&dir).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "python3 -m venv failed");
    let python = dir.join("bin").join("python");
    let src = fixture("llama_f32");
    let tok = LensTokenizer::from_file(&src.join("tokenizer.json")).unwrap();
    let ids = tok.encode("one two").unwrap();
    let e = lens_nnsight(&engine_for(&src, python.clone(), find_script().unwrap()), &tok, &ids, &LensOptions::default(), &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("-m pip install nnsight") && e.contains(&python.display().to_string()), "{e}");
    // A Python that does not exist.
    let e = lens_nnsight(&engine_for(&src, dir.join("nope"), find_script().unwrap()), &tok, &ids, &LensOptions::default(), &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot start") && e.contains("LOGIT_LENS_PYTHON"), "{e}");
}
