//! Bundle formats: a format-1 bundle (the first release, GPT-2 only) still opens and gives the
//! same lens; a format-2 one (no key/value cache) runs every edit in full; either in the
//! conversion cache is converted again from its source; an unknown family or format is a clear
//! error. (This file sets `LOGIT_LENS_CACHE` for its own process.)

mod common;

use std::path::Path;

use lens_model::LensOptions;
use lens_model::build::onnx::{ModelProto, StringStringEntryProto};
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;
use lens_model::run::bundle::{Bundle, format_version_of};
use lens_model::run::runtime::init_runtime;
use lens_tests::fixture::{RandomGpt2, unique_temp_dir, write_checkpoint};
use prost::Message;

fn edit_model(bundle: &Path, f: impl FnOnce(&mut ModelProto)) {
    let path = bundle.join("model.onnx");
    let mut m = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    f(&mut m);
    std::fs::write(&path, m.encode_to_vec()).unwrap();
}

fn set(m: &mut ModelProto, key: &str, value: &str) {
    m.metadata_props.retain(|p| p.key.as_deref() != Some(key));
    m.metadata_props.push(StringStringEntryProto { key: Some(key.into()), value: Some(value.into()) });
}

/// Removes the key/value cache from the graph's interface, as formats 1 and 2 had it: the past
/// inputs become constant (empty) initializers, the present outputs internal values.
fn strip_kv_cache(m: &mut ModelProto) {
    let g = m.graph.as_mut().unwrap();
    g.input.retain(|i| !i.name.as_deref().unwrap().starts_with("past_key_values."));
    g.output.retain(|o| !o.name.as_deref().unwrap().starts_with("present."));
}

/// Rewrites a format-3 GPT-2 bundle the way format 2 had it: no key/value cache.
fn downgrade_to_format_2(bundle: &Path) {
    edit_model(bundle, |m| {
        strip_kv_cache(m);
        set(m, "lens.format_version", "2");
    });
}

/// Rewrites a format-3 GPT-2 bundle's metadata the way the first release wrote it (format 1:
/// `lens.ln_eps`, `lens.ln_final.*`; no residual, hooks, final-norm kind or last-block graph).
fn downgrade_to_format_1(bundle: &Path) {
    edit_model(bundle, |m| {
        let get = |m: &ModelProto, k: &str| m.metadata_props.iter().find(|p| p.key.as_deref() == Some(k)).and_then(|p| p.value.clone()).unwrap();
        let (eps, w, b) = (get(m, "lens.final_norm.eps"), get(m, "lens.final_norm.weight"), get(m, "lens.final_norm.bias"));
        m.metadata_props.retain(|p| {
            let k = p.key.as_deref().unwrap_or("");
            !(k.starts_with("lens.final_norm") || k == "lens.residual" || k == "lens.hooks" || k == "lens.last_block")
        });
        strip_kv_cache(m);
        set(m, "lens.format_version", "1");
        set(m, "lens.ln_eps", &eps);
        set(m, "lens.ln_final.weight", &w);
        set(m, "lens.ln_final.bias", &b);
    });
    std::fs::remove_file(bundle.join("last_block.onnx")).unwrap();
}

#[test]
fn format_1_bundle_opens_and_gives_the_same_lens() {
    let (_hf, bundle) = common::make_bundle("fmt1", &RandomGpt2::tiny(21));
    let old = unique_temp_dir("fmt1-old");
    std::fs::create_dir_all(&old).unwrap();
    for e in std::fs::read_dir(&bundle).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), old.join(e.file_name())).unwrap();
    }
    downgrade_to_format_1(&old);
    let b = Bundle::open(&old).unwrap();
    assert_eq!((b.format_version, b.family.as_str(), b.residual.name()), (1, "gpt2", "sequential"));
    assert!(b.last_block.is_none());

    let mut new_engine = common::open(&bundle);
    let mut old_engine = common::open(&old);
    let ids = new_engine.tokenize("Sometimes, when people say plasma, they mean", false).unwrap();
    let opts = LensOptions { subblocks: true, ..LensOptions::default() };
    let a = new_engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    let c = old_engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    assert_eq!(a.metrics.top1_id, c.metrics.top1_id);
    assert_eq!(a.metrics.kl_to_final, c.metrics.kl_to_final);
    assert_eq!(a.sites, c.sites);

    // The last-block decoders need the graph a format-1 bundle lacks: a message says what to do.
    let trace = old_engine.trace(&ids).unwrap();
    let e = old_engine
        .lens(&ids, &trace, &LensOptions { decoder: DecoderKind::LastBlock, ..LensOptions::default() }, &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("older logit-lens") && e.contains("convert the checkpoint again"), "{e}");
}

#[test]
fn format_2_bundle_without_a_cache_runs_edits_in_full() {
    let (_hf, bundle) = common::make_bundle("fmt2", &RandomGpt2::tiny(24));
    let mut new_engine = common::open(&bundle);
    assert!(new_engine.bundle.kv_cache.is_some());
    downgrade_to_format_2(&bundle);
    let mut old_engine = common::open(&bundle);
    assert_eq!((old_engine.bundle.format_version, old_engine.bundle.kv_cache), (2, None));
    let ids = old_engine.tokenize("Sometimes, when people say plasma, they mean", false).unwrap();
    let n = ids.len();
    let (head, _) = old_engine.trace_edit(None, &ids[..n - 3], &Progress::default()).unwrap();
    assert!(head.kv.is_none());
    let (old, reused) = old_engine.trace_edit(Some((&ids[..n - 3], &head)), &ids, &Progress::default()).unwrap();
    assert_eq!(reused, 0, "no cache: the whole prompt runs");
    let (head, _) = new_engine.trace_edit(None, &ids[..n - 3], &Progress::default()).unwrap();
    let (new, reused) = new_engine.trace_edit(Some((&ids[..n - 3], &head)), &ids, &Progress::default()).unwrap();
    assert_eq!(reused, n - 3);
    let worst = old.resid_post.iter().zip(&new.resid_post).flat_map(|(a, b)| a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
    assert!(worst < 1e-4, "cached and full runs differ by {worst}");
}

#[test]
fn format_1_and_2_bundles_in_the_cache_are_converted_again() {
    init_runtime(None).unwrap();
    // SAFETY: set before any other test of this binary resolves a model; the runtime is loaded.
    unsafe { std::env::set_var("LOGIT_LENS_CACHE", unique_temp_dir("fmt1-cache")) };
    let hf = unique_temp_dir("fmt1-src");
    write_checkpoint(&hf, &RandomGpt2::tiny(22)).unwrap();
    let target = lens_model::run::resolve::resolve_model(Some(&hf), &Progress::default()).unwrap();
    assert_eq!(format_version_of(&target), Some(3));
    downgrade_to_format_1(&target);
    assert_eq!(format_version_of(&target), Some(1));
    let again = lens_model::run::resolve::resolve_model(Some(&hf), &Progress::default()).unwrap();
    assert_eq!(again, target);
    assert_eq!(format_version_of(&again), Some(3));
    assert!(again.join("last_block.onnx").is_file());
    downgrade_to_format_2(&target);
    assert_eq!(format_version_of(&target), Some(2));
    let again = lens_model::run::resolve::resolve_model(Some(&hf), &Progress::default()).unwrap();
    assert_eq!(format_version_of(&again), Some(3));
    assert!(Bundle::open(&again).unwrap().kv_cache.is_some());
}

#[test]
fn unknown_family_or_format_is_a_clear_error() {
    let (_hf, bundle) = common::make_bundle("fmt-unknown", &RandomGpt2::tiny(23));
    edit_model(&bundle, |m| set(m, "lens.family", "bloom"));
    let e = Bundle::open(&bundle).unwrap_err().to_string();
    assert!(e.contains("\"bloom\" is not supported") && e.contains("gpt_neo"), "{e}");
    edit_model(&bundle, |m| {
        set(m, "lens.family", "gpt2");
        set(m, "lens.format_version", "5");
    });
    let e = Bundle::open(&bundle).unwrap_err().to_string();
    assert!(e.contains("format version 5") && e.contains("update logit-lens"), "{e}");
    // Format 4 is the quantized one: a header that says 4 over f32 weights (or names an
    // unknown weight format) lies and is refused.
    edit_model(&bundle, |m| set(m, "lens.format_version", "4"));
    let e = Bundle::open(&bundle).unwrap_err().to_string();
    assert!(e.contains("format 4 with f32 weights"), "{e}");
    edit_model(&bundle, |m| set(m, "lens.weights", "int3"));
    let e = Bundle::open(&bundle).unwrap_err().to_string();
    assert!(e.contains("lens.weights = \"int3\""), "{e}");
}

#[test]
fn a_graph_whose_cache_lies_is_refused_at_open() {
    let (_hf, bundle) = common::make_bundle("kv-lie", &RandomGpt2::tiny(25));
    // Layer 0's attention reads the cached values as keys and the keys as values: the whole run
    // (an empty cache) is unchanged, a run on a cache is wrong.
    // The blocks are `If` branches: the edit walks them too.
    fn swap_cache(nodes: &mut [lens_model::build::onnx::NodeProto]) {
        for node in nodes {
            for input in &mut node.input {
                *input = match input.as_str() {
                    "past_key_values.0.key" => "past_key_values.0.value".into(),
                    "past_key_values.0.value" => "past_key_values.0.key".into(),
                    other => other.into(),
                };
            }
            for attr in &mut node.attribute {
                if let Some(g) = attr.g.as_mut() {
                    swap_cache(&mut g.node);
                }
            }
        }
    }
    edit_model(&bundle, |m| swap_cache(&mut m.graph.as_mut().unwrap().node));
    let e = lens_model::LensEngine::open(&bundle, lens_model::run::runtime::Device::Cpu, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("inconsistent bundle") && e.contains("key/value cache"), "{e}");
}
