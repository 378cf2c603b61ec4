//! Comparing two runs (issue 15, item 1, CLI and report): the difference is A − B cell by cell
//! over the alignment; equal lengths pair positions, other prompts pair a longest common
//! subsequence of their tokens (checked against a brute-force LCS length); runs of different
//! depth are refused.

mod common;

use lens_model::LensOptions;
use lens_model::analyses::compare::{COMPARE_SCHEMA, common_subsequence, compare};
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;
use lens_tests::fixture::RandomGpt2;

/// LCS length by brute force over every subsequence of `a` (tiny inputs only).
fn brute_lcs(a: &[u32], b: &[u32]) -> usize {
    let mut best = 0;
    for mask in 0u32..(1 << a.len()) {
        let sub: Vec<u32> = a.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, &t)| t).collect();
        let mut it = b.iter();
        if sub.iter().all(|t| it.any(|u| u == t)) {
            best = best.max(sub.len());
        }
    }
    best
}

#[test]
fn common_subsequence_is_a_longest_one() {
    let mut seed = 7u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32 % 4
    };
    for _ in 0..300 {
        let a: Vec<u32> = (0..1 + next() as usize * 2).map(|_| next()).collect();
        let b: Vec<u32> = (0..1 + next() as usize * 2).map(|_| next()).collect();
        let pairs = common_subsequence(&a, &b);
        assert_eq!(pairs.len(), brute_lcs(&a, &b), "{a:?} {b:?}");
        assert!(pairs.iter().all(|&[i, j]| a[i] == b[j]));
        assert!(pairs.windows(2).all(|w| w[0][0] < w[1][0] && w[0][1] < w[1][1]), "in order");
    }
}

#[test]
fn the_difference_is_a_minus_b_over_the_alignment() {
    let (_hf, bundle) = common::make_bundle("compare", &RandomGpt2::tiny(45));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("The cat sat on the mat.", false).unwrap();
    let opts = LensOptions { subblocks: true, k: 3, ..LensOptions::default() };
    // Two decoders, one prompt: positions pair up.
    let a = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    let b = engine.run_ids(&ids, &LensOptions { decoder: DecoderKind::Raw, ..opts.clone() }, &Progress::default()).unwrap();
    let c = compare(a.clone(), b.clone(), "decoder").unwrap();
    assert_eq!((c.schema.as_str(), c.aligned_by.as_str(), c.alignment.len()), (COMPARE_SCHEMA, "position", ids.len()));
    for s in 0..a.sites.len() {
        for (k, &[i, j]) in c.alignment.iter().enumerate() {
            assert_eq!(i, j);
            assert_eq!(c.diff.kl_to_final[s][k], a.metrics.kl_to_final[s][i] - b.metrics.kl_to_final[s][j]);
            assert_eq!(c.diff.entropy[s][k], a.metrics.entropy[s][i] - b.metrics.entropy[s][j]);
            assert_eq!(c.diff.top1_prob[s][k], a.metrics.top1_prob[s][i] - b.metrics.top1_prob[s][j]);
            assert_eq!(c.diff.top1_same[s][k], a.metrics.top1_id[s][i] == b.metrics.top1_id[s][j]);
            match (a.metrics.nll_next[s][i], b.metrics.nll_next[s][j]) {
                (Some(x), Some(y)) => assert_eq!(c.diff.nll_next[s][k], Some(x - y)),
                _ => assert_eq!(c.diff.nll_next[s][k], None),
            }
        }
    }
    // The decoders differ somewhere below the final site (which is the model's own output).
    assert!(c.diff.kl_to_final.cells().any(|&d| d.abs() > 1e-6));
    // A corrupted prompt with one more word: the shared tokens pair up, in order.
    let ids_b = engine.tokenize("The big cat sat on the mat.", false).unwrap();
    let b2 = engine.run_ids(&ids_b, &opts, &Progress::default()).unwrap();
    let c2 = compare(a.clone(), b2.clone(), "prompt").unwrap();
    assert_eq!(c2.aligned_by, "common_tokens");
    assert_eq!(c2.alignment.len(), ids.len(), "every token of the clean prompt is in the corrupted one");
    for (k, &[i, j]) in c2.alignment.iter().enumerate() {
        assert_eq!(ids[i], ids_b[j]);
        assert_eq!(c2.diff.kl_to_final[0][k], a.metrics.kl_to_final[0][i] - b2.metrics.kl_to_final[0][j]);
    }
    // JSON round trip.
    let text = serde_json::to_string(&c2).unwrap();
    let back: lens_model::analyses::compare::CompareReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back.alignment, c2.alignment);
    assert_eq!(back.diff.top1_same, c2.diff.top1_same);
    // Different rows (sub-block rows in one run only) are refused.
    let plain = engine.run_ids(&ids, &LensOptions { k: 3, ..LensOptions::default() }, &Progress::default()).unwrap();
    let e = compare(a, plain, "decoder").unwrap_err().to_string();
    assert!(e.contains("different rows"), "{e}");
}
