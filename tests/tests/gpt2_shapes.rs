//! Every GPT-2 shape (distilgpt2, gpt2, -medium, -large, -xl) with random fp16 weights converts,
//! loads and runs. The two small shapes run by default and are checked against the f64 reference;
//! the three large ones (up to 1.5 B parameters, a 6 GB bundle) are `#[ignore]`d because of their
//! disk and time cost: run them with `cargo test --release -p lens_tests --test gpt2_shapes -- --ignored`.

mod common;

use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_tests::fixture::RandomGpt2;
use lens_tests::reference::RefModel;

fn run_shape(name: &str, with_reference: bool) {
    let spec = RandomGpt2::gpt2_shape(name).unwrap();
    let (hf, bundle) = common::make_bundle(name, &spec);
    // Opening runs the consistency probe: the last site decoded must equal the model's logits.
    let mut engine = common::open(&bundle);
    let s = &engine.bundle.shape;
    assert_eq!((s.n_layers, s.d_model, s.n_heads, s.d_vocab, s.n_ctx), (spec.n_layer, spec.n_embd, spec.n_head, 50257, 1024));
    let ids = engine.tokenize(" The logit lens looks inside", false).unwrap();
    let trace = engine.trace(&ids).unwrap();
    let report = engine.lens(&ids, &trace, &LensOptions { k: 3, ..LensOptions::default() }, &Progress::default()).unwrap();
    assert_eq!(report.sites.len(), spec.n_layer + 1);
    let last = report.sites.len() - 1;
    // The final site's top-1 is the model's own argmax, rank 1, KL to itself 0.
    assert_eq!(report.metrics.top1_id[last], trace.logits_top1);
    assert!(report.metrics.rank_of_final_top1[last].iter().all(|&r| r == 1));
    assert!(report.metrics.kl_to_final[last].iter().all(|&k| k == 0.0));
    if with_reference {
        let reference = RefModel::load(&hf);
        let rt = reference.forward(&ids);
        let last_l = spec.n_layer - 1;
        let d = common::max_diff_2d(&trace.resid_post[last_l], rt.hook(&format!("blocks.{last_l}.hook_resid_post")));
        assert!(
            d < 1e-3 * (1.0 + rt.hook(&format!("blocks.{last_l}.hook_resid_post"))[0].iter().fold(0f64, |a, b| a.max(b.abs()))),
            "{name}: resid_post differs by {d}"
        );
        for (p, row) in rt.logits.iter().enumerate() {
            let argmax = row.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
            assert_eq!(report.metrics.top1_id[last][p] as usize, argmax, "{name}: final top-1 at {p}");
        }
    }
    let _ = std::fs::remove_dir_all(&hf);
    let _ = std::fs::remove_dir_all(&bundle);
}

#[test]
fn distilgpt2_shape() {
    run_shape("distilgpt2", true);
}

#[test]
fn gpt2_small_shape() {
    run_shape("gpt2", true);
}

#[test]
#[ignore = "large: 355 M parameters"]
fn gpt2_medium_shape() {
    run_shape("gpt2-medium", false);
}

#[test]
#[ignore = "large: 774 M parameters"]
fn gpt2_large_shape() {
    run_shape("gpt2-large", false);
}

#[test]
#[ignore = "large: 1.56 B parameters, 6 GB bundle"]
fn gpt2_xl_shape() {
    run_shape("gpt2-xl", false);
}
