//! A broken size invariant in numeric code is an error that says so, never zeros (issue 11, item
//! 7: `unwrap_or_default()` on slices turned it into a silently wrong number, and an attribution
//! past the trace's end panicked inside ndarray).

mod common;

use lens_model::error::{part, part_mut};
use lens_tests::fixture::RandomGpt2;

#[test]
fn out_of_range_is_an_error_not_zeros() {
    let v = [1.0f32, 2.0, 3.0];
    assert_eq!(part(&v, 1..3, "x").unwrap(), &[2.0, 3.0]);
    let e = part(&v, 2..5, "prepared rows").unwrap_err().to_string();
    assert!(e.contains("prepared rows 2..5 is outside its 3 values"), "{e}");
    let mut w = [0u32; 2];
    assert!(part_mut(&mut w, 0..3, "targets").is_err());

    let (_hf, bundle) = common::make_bundle("invariants", &RandomGpt2::tiny(44));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("The cat sat.", false).unwrap();
    let trace = engine.trace(&ids).unwrap();
    let dla = lens_model::lens::attribution::terms(&trace, &engine.decoder, ids.len() - 1, 262).unwrap();
    assert_eq!(dla.len(), 1 + 2 * 2 + 1, "embed, 2 x (attn, mlp), ln_bias");
    let past = lens_model::lens::attribution::terms(&trace, &engine.decoder, ids.len(), 262).unwrap_err().to_string();
    assert!(past.contains("position 4 of a 4-position trace"), "{past}");
    let beyond = lens_model::lens::attribution::terms(&trace, &engine.decoder, 0, 50257).unwrap_err().to_string();
    assert!(beyond.contains("token 50257"), "{beyond}");
}

/// An open bundle holds only the initializers its decoder reads (issue 11, item 8: it kept every
/// weight's `TensorProto` for the engine's lifetime); the parameter count is still over all.
#[test]
fn an_open_bundle_holds_only_the_decoders_initializers() {
    let spec = RandomGpt2::tiny(45);
    let (_hf, bundle) = common::make_bundle("held", &spec);
    let engine = common::open(&bundle);
    let mut held: Vec<&str> = engine.bundle.held_initializers().collect();
    held.sort_unstable();
    assert_eq!(held, vec!["embed.W_E", "ln_final.b", "ln_final.w"]);
    // W_E, W_pos, and per layer: two LayerNorms, c_attn, c_proj, c_fc, mlp c_proj (+ biases).
    let (d, v, l) = (spec.n_embd, spec.vocab_size, spec.n_layer);
    let per_layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d);
    assert_eq!(engine.bundle.n_params(), v * d + spec.n_positions * d + l * per_layer + 2 * d);
}
