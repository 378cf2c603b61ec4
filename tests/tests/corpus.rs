//! Corpus mode (issue 15, item 2) on the bundled demo model and its held-out text:
//! * the final site's pooled NLL and top-1 accuracy equal the model card's (`eval.json`, computed
//!   by the training scripts in PyTorch with the same windows: 256 tokens, non-overlapping);
//! * every per-site mean equals an independent aggregation of the per-window reports (the lens run
//!   window by window in this test, pooled here);
//! * every 95% interval contains its mean and narrows when the text grows;
//! * the prediction-depth histogram counts every position once.

use std::path::PathBuf;

use lens_model::analyses::corpus::{CORPUS_SCHEMA, CorpusOptions, run_corpus};
use lens_model::error::Progress;
use lens_model::run::runtime::{Device, init_runtime};
use lens_model::{LensEngine, LensOptions};

fn assets() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
}

#[test]
fn corpus_means_match_the_model_card_and_an_independent_aggregation() {
    init_runtime(None).unwrap();
    let dir = lens_model::run::resolve::resolve_model(Some(&assets().join("demo-model")), &Progress::default()).unwrap();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    let text = std::fs::read_to_string(assets().join("demo-model/heldout.txt")).unwrap();
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(assets().join("demo-model/eval.json")).unwrap()).unwrap();
    let opts = CorpusOptions { window: Some(256), ..CorpusOptions::default() };
    let r = run_corpus(&mut engine, &text, &opts, &Progress::default()).unwrap();
    assert_eq!(r.schema, CORPUS_SCHEMA);
    assert_eq!(
        (r.n_tokens as u64, r.n_windows as u64, r.n_next as u64),
        (eval["n_tokens"].as_u64().unwrap(), eval["n_windows"].as_u64().unwrap(), eval["n_predicted"].as_u64().unwrap())
    );
    let n_sites = r.sites.len();
    let last = n_sites - 1;
    let card_nll = eval["mean_nll"].as_f64().unwrap();
    let card_acc = eval["top1_acc"].as_f64().unwrap();
    assert!((r.per_site.nll_next.mean[last] - card_nll).abs() < 1e-3 * card_nll, "{} vs the card's {card_nll}", r.per_site.nll_next.mean[last]);
    assert!((r.per_site.top1_is_next.mean[last] - card_acc).abs() < 2e-3, "{} vs the card's {card_acc}", r.per_site.top1_is_next.mean[last]);

    // Independent aggregation: the lens window by window, pooled over positions here.
    let ids = engine.tokenizer.encode(&text).unwrap();
    let (mut kl, mut ent, mut agree, mut nll, mut is_next, mut bytes) =
        (vec![0.0; n_sites], vec![0.0; n_sites], vec![0.0; n_sites], vec![0.0; n_sites], vec![0.0; n_sites], 0.0);
    let (mut n, mut n_next) = (0.0, 0.0);
    let mut depth = vec![0u64; n_sites];
    for w in ids.chunks(256).filter(|w| w.len() >= 2) {
        let rep = engine.run_ids(w, &LensOptions { k: 1, ..LensOptions::default() }, &Progress::default()).unwrap();
        let m = &rep.metrics;
        for p in 0..w.len() {
            for s in 0..n_sites {
                kl[s] += m.kl_to_final[s][p];
                ent[s] += m.entropy[s][p];
                agree[s] += f64::from(u8::from(m.top1_id[s][p] == m.top1_id[last][p]));
                if p + 1 < w.len() {
                    nll[s] += m.nll_next[s][p].unwrap();
                    is_next[s] += f64::from(u8::from(m.top1_id[s][p] == w[p + 1]));
                }
            }
            depth[m.prediction_depth[p] as usize] += 1;
            n += 1.0;
            if p + 1 < w.len() {
                n_next += 1.0;
                bytes += engine.tokenizer.token_bytes(w[p + 1]).len() as f64;
            }
        }
    }
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{what}: {a} vs {b}");
    let ps = &r.per_site;
    for s in 0..n_sites {
        close(ps.kl_to_final.mean[s], kl[s] / n, "kl");
        close(ps.entropy.mean[s], ent[s] / n, "entropy");
        close(ps.top1_agrees_final.mean[s], agree[s] / n, "agrees");
        close(ps.nll_next.mean[s], nll[s] / n_next, "nll");
        close(ps.top1_is_next.mean[s], is_next[s] / n_next, "is next");
        close(ps.nll_bits_per_byte.mean[s], nll[s] / bytes / std::f64::consts::LN_2, "bits per byte");
        for (what, iv) in [
            ("kl", &ps.kl_to_final),
            ("nll", &ps.nll_next),
            ("bpb", &ps.nll_bits_per_byte),
            ("agree", &ps.top1_agrees_final),
            ("next", &ps.top1_is_next),
            ("entropy", &ps.entropy),
        ] {
            // The final site agrees with itself and has KL 0: a zero-width interval.
            assert!(
                iv.ci95_low[s] <= iv.mean[s] + 1e-12 && iv.mean[s] <= iv.ci95_high[s] + 1e-12,
                "{what} site {s}: {} not in [{}, {}]",
                iv.mean[s],
                iv.ci95_low[s],
                iv.ci95_high[s]
            );
        }
    }
    assert_eq!(r.prediction_depth, depth);
    assert_eq!(r.prediction_depth.iter().sum::<u64>(), r.n_positions as u64);

    // Fewer windows: wider intervals, on average over the sites below the last (a bootstrap over
    // a handful of windows is itself noisy site by site).
    let small =
        run_corpus(&mut engine, &text, &CorpusOptions { window: Some(256), max_tokens: Some(8 * 256), ..CorpusOptions::default() }, &Progress::default())
            .unwrap();
    assert_eq!(small.n_windows, 8);
    let mean_width = |iv: &lens_model::analyses::corpus::Interval| (0..last).map(|s| iv.ci95_high[s] - iv.ci95_low[s]).sum::<f64>() / last as f64;
    for (what, a, b) in [
        ("KL", &small.per_site.kl_to_final, &ps.kl_to_final),
        ("NLL", &small.per_site.nll_next, &ps.nll_next),
        ("entropy", &small.per_site.entropy, &ps.entropy),
        ("agreement", &small.per_site.top1_agrees_final, &ps.top1_agrees_final),
    ] {
        let (wa, wb) = (mean_width(a), mean_width(b));
        eprintln!("{what}: mean interval width {wa:.4} over 8 windows, {wb:.4} over 33");
        assert!(wa > wb, "{what}: the interval of 8 windows ({wa}) is not wider than of 33 ({wb})");
    }
}

#[test]
fn corpus_refuses_bad_windows_and_empty_text() {
    init_runtime(None).unwrap();
    let dir = lens_model::run::resolve::resolve_model(Some(&assets().join("demo-model")), &Progress::default()).unwrap();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    for (text, window, needle) in
        [("Some text here.", Some(1), "--window 1"), ("Some text here.", Some(100_000), "--window 100000"), ("   ", None, "empty"), ("a", None, "too few")]
    {
        let e = run_corpus(&mut engine, text, &CorpusOptions { window, ..CorpusOptions::default() }, &Progress::default()).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    // A window whose attention cannot fit is refused before it runs (issue 24), naming the
    // largest that fits: Llama-3-8B's shape (32 heads) at 131,072 tokens needs ~7.1 TB.
    let llama = lens_model::source::config::ModelShape { n_layers: 32, d_model: 4096, n_heads: 32, d_mlp: 14336, d_vocab: 128_256, n_ctx: 131_072, eps: 1e-5 };
    let e = lens_model::analyses::corpus::check_window_memory(&llama, 131_072, Some(16_000_000_000)).unwrap_err().to_string();
    assert!(e.contains("131072 tokens needs about") && e.contains("use --window"), "{e}");
    let fits: usize = e.rsplit("--window ").next().unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        lens_model::analyses::corpus::window_bytes(&llama, fits) <= 16_000_000_000
            && lens_model::analyses::corpus::window_bytes(&llama, fits + 1) > 16_000_000_000,
        "{fits}"
    );
    assert!(lens_model::analyses::corpus::check_window_memory(&llama, 1024, Some(16_000_000_000)).is_ok());
    assert!(lens_model::analyses::corpus::check_window_memory(&llama, 131_072, None).is_ok(), "unknown memory checks nothing");
    // Cancelling stops it.
    let p = Progress::default();
    p.cancel();
    let e = run_corpus(&mut engine, "Once upon a time there was a cat.", &CorpusOptions::default(), &p).unwrap_err();
    assert!(matches!(e, lens_model::LensError::Cancelled), "{e}");
}

/// `--max-tokens` tokenizes only the prefix it needs (issue 24), and gets exactly the ids of
/// tokenizing the whole text and keeping the first N: the demo model's GPT-2 BPE and a Llama
/// fixture's SentencePiece-style tokenizer, on a 100 KB text, for several N.
#[test]
fn max_tokens_reads_a_prefix_with_the_same_ids() {
    init_runtime(None).unwrap();
    let text: String = std::fs::read_to_string(assets().join("demo-model/heldout.txt")).unwrap().repeat(3);
    let families = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/families"));
    for tok_path in [assets().join("demo-model/tokenizer.json"), families.join("llama_f32/tokenizer.json")] {
        let tok = lens_model::source::tokenizer::LensTokenizer::from_file(&tok_path).unwrap();
        let whole = tok.encode(&text).unwrap();
        for n in [1, 37, 500, 4000, whole.len() - 1, whole.len(), whole.len() + 10] {
            let got = lens_model::analyses::corpus::encode_prefix(&tok, &text, n).unwrap();
            assert_eq!(got, whole[..n.min(whole.len())], "{} n={n}", tok_path.display());
        }
    }
}

/// Long texts are tokenized piece by piece (issue 24) with exactly the whole text's ids: pieces of
/// 8 KB (the smallest) over a 100 KB text, with line breaks, without any, and with multi-byte
/// characters at the cuts; GPT-2 BPE and a Llama fixture's SentencePiece-style tokenizer (whose
/// template adds a BOS). A cancel from the progress callback stops it.
#[test]
fn long_texts_are_tokenized_in_pieces_with_the_same_ids() {
    init_runtime(None).unwrap();
    let base: String = std::fs::read_to_string(assets().join("demo-model/heldout.txt")).unwrap().repeat(4);
    let one_line = base.replace('\n', " ");
    let accented = base.replace("e ", "é ").replace("a", "å").replace(". ", ". 日本語の文 🙂 ");
    let families = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/families"));
    for tok_path in [assets().join("demo-model/tokenizer.json"), families.join("llama_f32/tokenizer.json")] {
        let tok = lens_model::source::tokenizer::LensTokenizer::from_file(&tok_path).unwrap();
        for (what, text) in [("lines", &base), ("one line", &one_line), ("accented", &accented)] {
            assert!(text.len() > 100_000);
            let whole = tok.encode(text).unwrap();
            let mut pieces = 0;
            let got = lens_model::source::long_text::encode_long(&tok, text, 8192, &mut |_| {
                pieces += 1;
                Ok(())
            })
            .unwrap();
            // A piece advances by about half its size: every seam was found (no whole-text fallback).
            assert!(pieces >= text.len() / 8192, "{what}: {pieces} pieces");
            assert_eq!(got.len(), whole.len(), "{} {what}", tok_path.display());
            assert_eq!(got, whole, "{} {what}", tok_path.display());
        }
        let e = lens_model::source::long_text::encode_long(&tok, &base, 8192, &mut |_| Err(lens_model::LensError::Cancelled)).unwrap_err();
        assert!(matches!(e, lens_model::LensError::Cancelled), "{e}");
    }
}

/// Measurement, not a test (run by hand, one mode per process): peak memory of tokenizing a 10 MB
/// text whole or in pieces. `LOGIT_LENS_TOKENIZE=whole|pieces cargo test --release -p lens_tests
/// --test corpus tokenize_memory -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run by hand"]
fn tokenize_memory() {
    init_runtime(None).unwrap();
    let text: String = std::fs::read_to_string(assets().join("demo-model/heldout.txt")).unwrap().repeat(320);
    let tok = lens_model::source::tokenizer::LensTokenizer::from_file(&assets().join("demo-model/tokenizer.json")).unwrap();
    let hwm = || std::fs::read_to_string("/proc/self/status").unwrap().lines().find(|l| l.starts_with("VmHWM")).unwrap().to_string();
    let before = hwm();
    let t = std::time::Instant::now();
    let ids = match std::env::var("LOGIT_LENS_TOKENIZE").as_deref() {
        Ok("whole") => tok.encode(&text).unwrap(),
        _ => lens_model::source::long_text::encode_long(&tok, &text, lens_model::source::long_text::PIECE_BYTES, &mut |_| Ok(())).unwrap(),
    };
    println!("{} bytes -> {} tokens in {:.2} s; peak before: {before}; after: {}", text.len(), ids.len(), t.elapsed().as_secs_f64(), hwm());
}
