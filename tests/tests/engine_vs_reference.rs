//! Converter + ONNX Runtime + lens, end to end, against the independent f64 reference in
//! `lens_tests::reference`, on random GPT-2 checkpoints with the real 50257-token vocabulary and
//! non-trivial LayerNorm weights and biases.

mod common;

use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_tests::fixture::{Dtype, KeyStyle, RandomGpt2};
use lens_tests::reference::{RefDecoder, RefModel};

const PROMPT: &str = "Sometimes, when people say plasma, they mean a state of matter. Other times, when people say plasma";

fn check_model(tag: &str, spec: &RandomGpt2, subblocks: bool) {
    let (hf, bundle) = common::make_bundle(tag, spec);
    let mut engine = common::open(&bundle);
    let reference = RefModel::load(&hf);
    let ids = engine.tokenize(PROMPT, false).unwrap();
    assert!(ids.len() > 15);
    let trace = engine.trace(&ids).unwrap();
    let rt = reference.forward(&ids);

    // Residual stream and sub-block outputs within 1e-4.
    for l in 0..spec.n_layer {
        let pre = if l == 0 { &trace.embed } else { &trace.resid_post[l - 1] };
        for (name, ours) in [
            ("resid_pre", pre),
            ("attn_out", &trace.attn_out[l]),
            ("resid_mid", &trace.resid_mid[l]),
            ("mlp_out", &trace.mlp_out[l]),
            ("resid_post", &trace.resid_post[l]),
        ] {
            let d = common::max_diff_2d(ours, rt.hook(&format!("blocks.{l}.hook_{name}")));
            assert!(d < 1e-4, "{tag}: blocks.{l}.hook_{name} differs by {d}");
        }
    }

    let k = 5;
    let opts = LensOptions { subblocks, k, ..LensOptions::default() };
    let report = engine.lens(&ids, &trace, &opts, &Progress::default()).unwrap();
    let want = reference.report_from_trace(&rt, &ids, subblocks, k, RefDecoder::LogitLens);
    assert_eq!(report.sites, want.sites);
    let m = &report.metrics;
    let n_sites = report.sites.len();
    let site_logits: Vec<Vec<Vec<f64>>> =
        lens_tests::reference::sites(&rt, spec.n_layer, subblocks).iter().map(|(_, rows)| rows.iter().map(|x| reference.decode(x)).collect()).collect();
    #[allow(clippy::needless_range_loop)] // s and p index several parallel grids
    for s in 0..n_sites {
        for p in 0..ids.len() {
            let at = format!("{tag} site {} pos {p}", report.sites[s]);
            assert_eq!(m.top1_id[s][p], want.top1_id[s][p], "top-1 at {at}");
            assert!((f64::from(m.top1_logit[s][p]) - want.top1_logit[s][p]).abs() < 1e-4, "top-1 logit at {at}");
            assert!((m.top1_prob[s][p] - want.top1_prob[s][p]).abs() < 1e-5, "top-1 prob at {at}");
            assert!((m.kl_to_final[s][p] - want.kl_to_final[s][p]).abs() < 1e-4, "KL(final) at {at}: {} vs {}", m.kl_to_final[s][p], want.kl_to_final[s][p]);
            assert!((m.kl_to_input[s][p] - want.kl_to_input[s][p]).abs() < 1e-4, "KL(input) at {at}");
            assert!((m.entropy[s][p] - want.entropy[s][p]).abs() < 1e-4, "entropy at {at}");
            match (m.nll_next[s][p], want.nll_next[s][p]) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-4, "nll at {at}"),
                (None, None) => {}
                other => panic!("nll presence differs at {at}: {other:?}"),
            }
            // Ranks: f32 logits may reorder tokens whose f64 logits lie within float error of the
            // target's, so the rank must lie in the reference's interval for a 1e-4 tolerance
            // (which is a single value unless another token is that close).
            let logits = &site_logits[s][p];
            let in_band = |ours: u32, t: u32| {
                let lt = logits[t as usize];
                let lo = 1 + logits.iter().filter(|&&v| v > lt + 1e-4).count();
                let hi = 1 + logits.iter().enumerate().filter(|&(i, &v)| i != t as usize && v > lt - 1e-4).count();
                (lo..=hi).contains(&(ours as usize))
            };
            assert!(in_band(m.rank_of_final_top1[s][p], want.top1_id[n_sites - 1][p]), "rank of final top-1 at {at}");
            // The final top-1's probability at every site (the inspector's trajectory; it was only
            // known where the token made the site's top-k), against the naive softmax.
            let t = want.top1_id[n_sites - 1][p] as usize;
            let mx = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + logits.iter().map(|&v| (v - mx).exp()).sum::<f64>().ln();
            let p_ref = (logits[t] - lse).exp();
            assert!((m.final_top1_prob[s][p] - p_ref).abs() < 1e-5, "final top-1 prob at {at}: {} vs {p_ref}", m.final_top1_prob[s][p]);
            assert_eq!(m.rank_of_next[s][p].is_some(), p + 1 < ids.len());
            if let Some(r) = m.rank_of_next[s][p] {
                assert!(in_band(r, ids[p + 1]), "rank of next at {at}: {r} vs {:?}", want.rank_of_next[s][p]);
            }
            assert!(in_band(m.rank_of_input[s][p], ids[p]), "rank of input at {at}: {} vs {}", m.rank_of_input[s][p], want.rank_of_input[s][p]);
            if want.rank_of_input[s][p] <= 100 {
                assert_eq!(m.rank_of_input[s][p] as usize, want.rank_of_input[s][p], "rank of input at {at}");
            }
            assert_eq!(report.top_k.ids[s][p], want.top_k_ids[s][p], "top-k ids at {at}");
            for (a, b) in report.top_k.probs[s][p].iter().zip(&want.top_k_probs[s][p]) {
                assert!((a - b).abs() < 1e-5, "top-k prob at {at}");
            }
        }
    }
    // The lens is not trivial on these weights: the embed row disagrees with the final one.
    let mean_kl_embed: f64 = m.kl_to_final[0].iter().sum::<f64>() / ids.len() as f64;
    assert!(mean_kl_embed > 1e-2, "{tag}: embed KL {mean_kl_embed}");

    // Direct logit attribution against the reference, and summing to the final logit.
    let att = &report.attribution;
    for p in 0..ids.len() {
        let t = att.final_top1_ids[p];
        let want_terms = reference.dla(&rt, p, t);
        assert_eq!(att.components.len(), want_terms.len());
        let mut sum = 0.0;
        for (c, (name, v)) in want_terms.iter().enumerate() {
            assert_eq!(&att.components[c], name);
            assert!((att.final_top1[c][p] - v).abs() < 1e-4, "{tag}: DLA {name} at {p}: {} vs {v}", att.final_top1[c][p]);
            sum += att.final_top1[c][p];
        }
        assert!((sum - rt.logits[p][t as usize]).abs() < 1e-3, "{tag}: DLA sum {sum} vs logit {}", rt.logits[p][t as usize]);
        if p + 1 < ids.len() {
            let nt = ids[p + 1];
            let s: f64 = att.next.iter().map(|row| row[p].unwrap()).sum();
            assert!((s - rt.logits[p][nt as usize]).abs() < 1e-3, "{tag}: DLA(next) sum {s}");
        } else {
            assert!(att.next.iter().all(|row| row[p].is_none()));
        }
    }
}

#[test]
fn tiny_f32_prefixed_matches_reference() {
    check_model("tiny-f32", &RandomGpt2::tiny(1), false);
}

#[test]
fn tiny_subblocks_match_reference() {
    check_model("tiny-sub", &RandomGpt2 { n_layer: 3, ..RandomGpt2::tiny(2) }, true);
}

#[test]
fn f16_bare_keys_with_buffers_and_lm_head_match_reference() {
    let spec =
        RandomGpt2 { dtype: Dtype::F16, key_style: KeyStyle::Bare, with_attn_bias: true, with_lm_head: true, n_embd: 48, n_head: 6, ..RandomGpt2::tiny(3) };
    check_model("f16-bare", &spec, true);
}

#[test]
fn bf16_checkpoint_matches_reference() {
    let spec = RandomGpt2 { dtype: Dtype::BF16, ..RandomGpt2::tiny(4) };
    check_model("bf16", &spec, false);
}
