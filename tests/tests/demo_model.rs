//! The bundled demo model (issue 3), through our own engine:
//! * the model card's held-out loss (`assets/demo-model/eval.json`, computed by the training
//!   scripts in PyTorch) is reproduced by the lens's `nll_next` at the final site, to 1e-3;
//! * the final top-1 accuracy on the held-out text matches the card and is at least 30 %;
//! * on the example prompts the mean KL(final || site) falls from the first block to the last;
//! * the copy case: the rank of " plasma" where the prompt repeats it equals the model card's
//!   and is within the top 5, and at the last position (after the second " plasma") the model
//!   predicts "," — what followed " plasma" the first time (in-context copying, induction);
//! * our final-position logits match the PyTorch reference outputs committed with the model.

use std::path::PathBuf;

use lens_model::error::Progress;
use lens_model::run::runtime::{Device, init_runtime};
use lens_model::{LensEngine, LensOptions};

fn assets() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
}

fn engine() -> LensEngine {
    init_runtime(None).unwrap();
    let dir = lens_model::run::resolve::resolve_model(Some(&assets().join("demo-model")), &Progress::default()).unwrap();
    LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap()
}

fn eval_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(assets().join("demo-model/eval.json")).unwrap()).unwrap()
}

#[test]
fn heldout_loss_and_accuracy_match_the_model_card() {
    let mut engine = engine();
    let card = eval_json();
    let text = std::fs::read_to_string(assets().join("demo-model/heldout.txt")).unwrap();
    let ids = engine.tokenizer.encode(&text).unwrap();
    let opts = LensOptions { final_only: true, k: 1, ..LensOptions::default() };
    let (mut nll_sum, mut n, mut correct) = (0f64, 0usize, 0usize);
    for window in ids.chunks(256) {
        if window.len() < 2 {
            continue;
        }
        let r = engine.run_ids(window, &opts, &Progress::default()).unwrap();
        for p in 0..window.len() - 1 {
            nll_sum += r.metrics.nll_next[0][p].unwrap();
            n += 1;
            correct += usize::from(r.metrics.top1_id[0][p] == window[p + 1]);
        }
    }
    let mean = nll_sum / n as f64;
    let acc = correct as f64 / n as f64;
    let card_nll = card["mean_nll"].as_f64().unwrap();
    let card_acc = card["top1_acc"].as_f64().unwrap();
    eprintln!("held-out: {n} predictions, mean NLL {mean:.5} (card {card_nll:.5}), top-1 accuracy {acc:.4} (card {card_acc:.4})");
    assert_eq!(n as u64, card["n_predicted"].as_u64().unwrap());
    assert!((mean - card_nll).abs() < 1e-3, "mean NLL {mean} vs model card {card_nll}");
    assert!((acc - card_acc).abs() < 1e-3, "top-1 accuracy {acc} vs model card {card_acc}");
    // The shipped model gets about half of the held-out tokens right (0.4956, eval.json).
    assert!(acc >= 0.45, "top-1 accuracy {acc}");
}

#[test]
fn kl_to_final_falls_with_depth_on_the_example_prompts() {
    let mut engine = engine();
    let n_layers = engine.bundle.shape.n_layers;
    let mut sum = vec![0f64; n_layers + 1];
    let mut count = 0usize;
    for name in ["plasma.txt", "repetition.txt", "story.txt", "wiki.txt", "classic.txt"] {
        let text = std::fs::read_to_string(assets().join("prompts").join(name)).unwrap();
        let ids = engine.tokenize(&text, true).unwrap();
        let r = engine.run_ids(&ids, &LensOptions::default(), &Progress::default()).unwrap();
        for (s, row) in r.metrics.kl_to_final.iter().enumerate() {
            sum[s] += row.iter().sum::<f64>();
        }
        count += ids.len();
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
    eprintln!("mean KL(final || site), sites embed, 0..{}: {mean:.3?}", n_layers - 1);
    assert_eq!(mean[n_layers], 0.0);
    // From the first block to the last, every block brings the lens closer to the output.
    for l in 1..n_layers {
        assert!(mean[l + 1] < mean[l], "KL does not fall from block {} ({}) to block {l} ({})", l - 1, mean[l], mean[l + 1]);
    }
    assert!(mean[1] > 1.0, "the first block is far from the output: {}", mean[1]);
}

/// Rank of " plasma" where the copy prompt repeats it (after the second " say"), by site.
fn copy_case(engine: &mut LensEngine) -> (u32, Vec<u32>, f64) {
    let text = std::fs::read_to_string(assets().join("prompts/plasma.txt")).unwrap();
    let ids = engine.tokenize(&text, false).unwrap();
    let plasma = engine.tokenizer.token_id(" plasma").unwrap();
    assert_eq!(*ids.last().unwrap(), plasma);
    let opts = LensOptions { pinned: vec![plasma], ..LensOptions::default() };
    let r = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    let last_site = r.sites.len() - 1;
    let at_say = ids.len() - 2; // "... when people say" -> " plasma" (copied from earlier in the prompt)
    let pinned = r.pinned.as_ref().unwrap();
    let by_site: Vec<u32> = (0..r.sites.len()).map(|s| pinned.rank[0][s][at_say]).collect();
    assert_eq!(r.metrics.rank_of_next[last_site][at_say], Some(by_site[last_site]));
    (by_site[last_site], by_site, pinned.prob[0][last_site][at_say])
}

#[test]
fn copy_case_rank_matches_the_model_card() {
    let mut engine = engine();
    let (rank, by_site, prob) = copy_case(&mut engine);
    eprintln!("copy case: rank of ' plasma' after the second ' say': {rank} (p = {prob:.3e}); by site: {by_site:?}");
    let card = eval_json();
    let card_rank = card["copy_case"]["at_second_say"]["plasma"]["rank"].as_u64().unwrap();
    assert_eq!(u64::from(rank), card_rank, "our engine and PyTorch agree on the rank");
}

#[test]
fn copy_case_predicts_plasma() {
    let mut engine = engine();
    let (rank, by_site, _) = copy_case(&mut engine);
    assert!(rank <= 5, "' plasma' has rank {rank} after the second ' say'");
    // As in the original write-up, the copied token is not there at the bottom of the stack:
    // the embedding row ranks it far down, the final layer near the top.
    assert!(by_site[0] > 1000, "' plasma' already ranks {} at the embedding", by_site[0]);
    // After the second " plasma" the model continues with what followed it the first time.
    let text = std::fs::read_to_string(assets().join("prompts/plasma.txt")).unwrap();
    let ids = engine.tokenize(&text, false).unwrap();
    let comma = engine.tokenizer.token_id(",").unwrap();
    let r = engine.run_ids(&ids, &LensOptions::default(), &Progress::default()).unwrap();
    let last_site = r.sites.len() - 1;
    let last = ids.len() - 1;
    assert_eq!(r.metrics.top1_id[last_site][last], comma);
    let p = r.metrics.top1_prob[last_site][last];
    assert!(p > 0.9, "p(',') = {p} after the second ' plasma'");
}

#[test]
fn final_logits_match_the_pytorch_reference() {
    let mut engine = engine();
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(assets().join("demo-model/reference_outputs.json")).unwrap()).unwrap();
    let ids: Vec<u32> = reference["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let text = std::fs::read_to_string(assets().join("prompts/plasma.txt")).unwrap();
    assert_eq!(engine.tokenize(&text, false).unwrap(), ids, "our tokenizer matches the training tokenizer");
    let r = engine.run_ids(&ids, &LensOptions { k: 5, ..LensOptions::default() }, &Progress::default()).unwrap();
    let last_site = r.sites.len() - 1;
    let last = ids.len() - 1;
    let want_ids: Vec<u32> = reference["final_position"]["top5_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let want_logits: Vec<f64> = reference["final_position"]["top5_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(r.top_k.ids[last_site][last], want_ids);
    for (a, b) in r.top_k.logits[last_site][last].iter().zip(&want_logits) {
        assert!((f64::from(*a) - b).abs() < 1e-3, "logit {a} vs torch {b}");
    }
    let top1: Vec<u32> = reference["top1_id_per_position"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(r.metrics.top1_id[last_site], top1);
}

/// The desktop app shows big runs piece by piece (`LensEngine::lens_range` joined with
/// `LensReport::append_positions`): the joined pieces are the report of the whole prompt.
#[test]
fn lens_pieces_join_to_the_whole_report() {
    let mut engine = engine();
    let text = std::fs::read_to_string(assets().join("prompts/plasma.txt")).unwrap();
    let ids = engine.tokenize(&text, false).unwrap();
    let plasma = engine.tokenizer.token_id(" plasma").unwrap();
    let opts = LensOptions { subblocks: true, k: 5, pinned: vec![plasma], ..LensOptions::default() };
    let trace = engine.trace(&ids).unwrap();
    let whole = engine.lens(&ids, &trace, &opts, &Progress::default()).unwrap();
    let mut joined = engine.lens_range(&ids, &trace, &opts, 0..7, &Progress::default()).unwrap();
    assert_eq!(joined.n_pos(), 7);
    for r in [7..8, 8..ids.len()] {
        let piece = engine.lens_range(&ids, &trace, &opts, r, &Progress::default()).unwrap();
        joined.append_positions(piece).unwrap();
    }
    joined.run = whole.run.clone();
    assert_eq!(joined.tokens, whole.tokens);
    let (a, b) = (&joined.metrics, &whole.metrics);
    assert_eq!(a.top1_id, b.top1_id);
    assert_eq!(a.rank_of_final_top1, b.rank_of_final_top1);
    assert_eq!(a.rank_of_next, b.rank_of_next);
    assert_eq!(a.rank_of_input, b.rank_of_input);
    assert_eq!(joined.top_k.ids, whole.top_k.ids);
    assert_eq!(joined.pinned.as_ref().unwrap().rank, whole.pinned.as_ref().unwrap().rank);
    assert_eq!(joined.attribution.final_top1_ids, whole.attribution.final_top1_ids);
    let close = |x: &[Vec<f64>], y: &[Vec<f64>], what: &str| {
        for (rx, ry) in x.iter().zip(y) {
            assert_eq!(rx.len(), ry.len(), "{what}");
            for (u, v) in rx.iter().zip(ry) {
                assert!((u - v).abs() <= 1e-9 * (1.0 + v.abs()), "{what}: {u} vs {v}");
            }
        }
    };
    close(&a.kl_to_final, &b.kl_to_final, "kl_to_final");
    close(&a.kl_to_input, &b.kl_to_input, "kl_to_input");
    close(&a.entropy, &b.entropy, "entropy");
    close(&a.top1_prob, &b.top1_prob, "top1_prob");
    close(&joined.attribution.final_top1, &whole.attribution.final_top1, "attribution");
    assert_eq!(
        joined.attribution.next.iter().map(|r| r.iter().map(Option::is_some).collect::<Vec<_>>()).collect::<Vec<_>>(),
        whole.attribution.next.iter().map(|r| r.iter().map(Option::is_some).collect::<Vec<_>>()).collect::<Vec<_>>()
    );
    // A range outside the prompt is an error, not a panic.
    assert!(engine.lens_range(&ids, &trace, &opts, 20..30, &Progress::default()).is_err());
    assert!(engine.lens_range(&ids, &trace, &opts, 3..3, &Progress::default()).is_err());
}
