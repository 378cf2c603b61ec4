//! `--engine nnsight --remote` end to end against a local stand-in for NDIF's service
//! (`tests/ndif/ndif_stand_in.py`, issue 29): nnsight's own `RemoteBackend` serializes our
//! module's trace, the stand-in (another process, without our module on its path) rebuilds the
//! model from the model key, runs the trace and sends back the saved rows; the report equals
//! nnsight's local run of the same module and our engine's; NDIF's job states reach the progress;
//! a wrong or missing key, a rate-limited key and a model NDIF does not host are clear errors; a corpus runs its
//! windows through one module process.
//!
//! Needs the Python with torch and nnsight named by `LOGIT_LENS_NNSIGHT_PYTHON` (`.ci/run` makes
//! one); without it the test says so and returns. This file sets `NDIF_HOST`, `NDIF_API_KEY`,
//! `HF_ENDPOINT` and `HF_HUB_CACHE` for its own process (one test, so nothing races).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use lens_model::LensOptions;
use lens_model::analyses::corpus::{CorpusOptions, run_corpus, run_corpus_with};
use lens_model::error::Progress;
use lens_model::output::report::LensReport;
use lens_model::remote::nnsight::{NnsightOptions, NnsightRunner, NnsightSession, find_script, lens_nnsight};
use lens_model::source::tokenizer::LensTokenizer;
use lens_tests::fixture::unique_temp_dir;

const NNSIGHT_PYTHON_ENV: &str = "LOGIT_LENS_NNSIGHT_PYTHON";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/families")).join(name)
}

/// The stand-in's process, killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn max_gap<'a>(a: impl Iterator<Item = &'a f64>, b: impl Iterator<Item = &'a f64>) -> f64 {
    a.zip(b).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max)
}

/// The same lens, cell for cell: ids and ranks identical, the rest within `tol`.
fn assert_same(got: &LensReport, want: &LensReport, tol: f64, what: &str) {
    assert_eq!(got.sites, want.sites, "{what}");
    let (g, w) = (&got.metrics, &want.metrics);
    assert_eq!(g.top1_id, w.top1_id, "{what}: top-1");
    assert_eq!(g.rank_of_final_top1, w.rank_of_final_top1, "{what}");
    assert_eq!(g.rank_of_next, w.rank_of_next, "{what}");
    assert_eq!(g.rank_of_input, w.rank_of_input, "{what}");
    assert_eq!(got.top_k.ids, want.top_k.ids, "{what}: top-k");
    for (name, a, b) in [("kl_to_final", &g.kl_to_final, &w.kl_to_final), ("kl_to_input", &g.kl_to_input, &w.kl_to_input), ("entropy", &g.entropy, &w.entropy)]
    {
        let gap = max_gap(a.cells(), b.cells());
        assert!(gap < tol, "{what}: {name} differs by {gap}");
    }
    assert_eq!(got.attribution.components, want.attribution.components, "{what}");
    assert_eq!(got.attribution.final_top1_ids, want.attribution.final_top1_ids, "{what}");
    let scale = want.attribution.final_top1.cells().map(|x| x.abs()).fold(1f64, f64::max);
    let gap = max_gap(got.attribution.final_top1.cells(), want.attribution.final_top1.cells());
    assert!(gap < tol * scale, "{what}: attribution differs by {gap}");
}

#[test]
fn the_lens_runs_on_a_stand_in_ndif() {
    let Some(python) = std::env::var_os(NNSIGHT_PYTHON_ENV).filter(|p| !p.is_empty()).map(PathBuf::from) else {
        eprintln!("SKIPPED: {NNSIGHT_PYTHON_ENV} names no Python with torch and nnsight");
        return;
    };
    let (llama, gemma) = (fixture("llama_f32"), fixture("gemma2_f32"));
    let server_script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/ndif/ndif_stand_in.py"));
    let mut child = Command::new(&python)
        .arg(&server_script)
        .args(["--key", "key-of-the-test"])
        .arg("--repo")
        .arg(format!("fixtures/llama={}", llama.display()))
        .arg("--repo")
        .arg(format!("fixtures/gemma2={}", gemma.display()))
        .arg("--repo")
        .arg(format!("fixtures/unhosted={}", llama.display()))
        .args(["--refuse", "fixtures/unhosted", "--rate-limited", "a-busy-key"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _server = Server(child);
    let port: u16 = first.trim().strip_prefix("port ").unwrap().parse().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    // SAFETY: this file's only test sets them before it starts any thread that reads them.
    unsafe {
        std::env::set_var("NDIF_HOST", &url);
        std::env::set_var("HF_ENDPOINT", &url);
        std::env::set_var("HF_HUB_CACHE", unique_temp_dir("ndif-hub-cache"));
        std::env::set_var("NDIF_API_KEY", "key-of-the-test");
    }
    let script = find_script().unwrap();
    let on_ndif = |repo: &str| NnsightOptions { model: repo.into(), remote: true, python: python.clone(), script: script.clone() };
    let here = |dir: &PathBuf| NnsightOptions { model: dir.display().to_string(), remote: false, python: python.clone(), script: script.clone() };

    for (repo, dir, subblocks) in [("fixtures/llama", &llama, true), ("fixtures/gemma2", &gemma, false)] {
        let tok = LensTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let ids = tok.encode("The cat sat on the mat, and then the dog sat on the cat").unwrap();
        let opts = LensOptions { k: 5, pinned: vec![ids[2]], subblocks, ..LensOptions::default() };
        let stages: Arc<Mutex<Vec<String>>> = Arc::default();
        let s2 = Arc::clone(&stages);
        let progress = Progress::new(move |stage, _| s2.lock().unwrap().push(stage.to_string()));
        let remote = lens_nnsight(&on_ndif(repo), &tok, &ids, &opts, &progress).unwrap();
        let local = lens_nnsight(&here(dir), &tok, &ids, &opts, &Progress::default()).unwrap();
        // The same module, the same torch: the trace shipped to the stand-in computes what it
        // computes here.
        assert_same(&remote, &local, 1e-9, repo);
        let bundle = unique_temp_dir("ndif-bundle");
        lens_model::build::convert::convert_hf_checkpoint(dir, &bundle, &Progress::default()).unwrap();
        let ours = common::open(&bundle).run_ids(&ids, &opts, &Progress::default()).unwrap();
        assert_same(&remote, &ours, 1e-4, repo);
        let info = remote.run.engine.as_ref().unwrap();
        assert_eq!((info.location.as_str(), info.model_id.as_str()), ("ndif", repo));
        assert_eq!(remote.run.provider, "nnsight (ndif)");
        let stages = stages.lock().unwrap().clone();
        for state in ["NDIF: queued", "NDIF: running", "NDIF: completed"] {
            assert!(stages.iter().any(|s| s == state), "{repo}: no {state:?} in {stages:?}");
        }
    }

    let tok = LensTokenizer::from_file(&llama.join("tokenizer.json")).unwrap();
    let ids = tok.encode("one two three").unwrap();
    let opts = LensOptions::default();
    // A model NDIF does not host.
    let e = lens_nnsight(&on_ndif("fixtures/unhosted"), &tok, &ids, &opts, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("does not host this model") && e.contains("not dedicated"), "{e}");
    // A wrong key: NDIF's 401, in words.
    unsafe { std::env::set_var("NDIF_API_KEY", "not-the-key") };
    let e = lens_nnsight(&on_ndif("fixtures/llama"), &tok, &ids, &opts, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("NDIF refused the API key") && e.contains("NDIF_API_KEY"), "{e}");
    // A key over its rate: NDIF's 429, in words.
    unsafe { std::env::set_var("NDIF_API_KEY", "a-busy-key") };
    let e = lens_nnsight(&on_ndif("fixtures/llama"), &tok, &ids, &opts, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("rate limiting this key") && e.contains("Rate limit exceeded"), "{e}");
    // No key: refused before anything is sent.
    unsafe { std::env::remove_var("NDIF_API_KEY") };
    let e = lens_nnsight(&on_ndif("fixtures/llama"), &tok, &ids, &opts, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("NDIF needs an API key"), "{e}");
    unsafe { std::env::set_var("NDIF_API_KEY", "key-of-the-test") };

    // A corpus on NDIF: one module process, one request per window, against our engine's corpus.
    let text = "The cat sat on the mat. The dog sat on the log. A bird sang in the tree, and the cat watched it. ".repeat(3);
    let copts = CorpusOptions { window: Some(16), resamples: 50, ..CorpusOptions::default() };
    let mut runner = NnsightRunner {
        session: NnsightSession::start(&on_ndif("fixtures/llama")).unwrap(),
        tokenizer: LensTokenizer::from_file(&llama.join("tokenizer.json")).unwrap(),
    };
    let remote = run_corpus_with(&mut runner, &text, &copts, &Progress::default()).unwrap();
    let bundle = unique_temp_dir("ndif-corpus-bundle");
    lens_model::build::convert::convert_hf_checkpoint(&llama, &bundle, &Progress::default()).unwrap();
    let ours = run_corpus(&mut common::open(&bundle), &text, &copts, &Progress::default()).unwrap();
    assert!(remote.n_windows >= 3, "{} windows", remote.n_windows);
    assert_eq!((remote.n_windows, remote.n_positions, remote.sites.clone()), (ours.n_windows, ours.n_positions, ours.sites.clone()));
    assert_eq!(remote.run.provider, "nnsight (ndif)");
    let gap = max_gap(remote.per_site.kl_to_final.mean.iter(), ours.per_site.kl_to_final.mean.iter());
    assert!(gap < 1e-4, "corpus KL means differ by {gap}");
    assert_eq!(remote.per_site.top1_is_next.mean, ours.per_site.top1_is_next.mean);
}
