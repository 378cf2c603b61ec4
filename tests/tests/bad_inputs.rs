//! Every bad input gives a clear error that names the file and the problem; never a panic.

mod common;

use std::path::Path;

use lens_model::LensEngine;
use lens_model::build::convert::convert_hf_checkpoint;
use lens_model::error::Progress;
use lens_model::run::bundle::Bundle;
use lens_model::run::runtime::{Device, init_runtime};
use lens_tests::fixture::{RandomGpt2, unique_temp_dir, write_checkpoint};
use prost::Message;

fn err_of<T: std::fmt::Debug>(r: lens_model::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn edit_model(bundle: &Path, f: impl FnOnce(&mut lens_model::build::onnx::ModelProto)) {
    let path = bundle.join("model.onnx");
    let mut m = lens_model::build::onnx::ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    f(&mut m);
    std::fs::write(&path, m.encode_to_vec()).unwrap();
}

#[test]
fn converter_errors_name_the_file() {
    let hf = unique_temp_dir("bad-hf");
    write_checkpoint(&hf, &RandomGpt2::tiny(5)).unwrap();

    // Truncated safetensors.
    let trunc = unique_temp_dir("bad-trunc");
    copy_dir(&hf, &trunc);
    let st = trunc.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(len / 2).unwrap();
    let e = err_of(convert_hf_checkpoint(&trunc, &unique_temp_dir("o1"), &Progress::default()));
    assert!(e.contains("model.safetensors") && e.contains("truncated or corrupted"), "{e}");

    // Garbage config.json.
    let badcfg = unique_temp_dir("bad-cfg");
    copy_dir(&hf, &badcfg);
    std::fs::write(badcfg.join("config.json"), "{ not json").unwrap();
    let e = err_of(convert_hf_checkpoint(&badcfg, &unique_temp_dir("o2"), &Progress::default()));
    assert!(e.contains("config.json") && e.contains("not a valid config.json"), "{e}");

    // config.json that promises more layers than the weights hold.
    let more = unique_temp_dir("bad-layers");
    copy_dir(&hf, &more);
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(more.join("config.json")).unwrap()).unwrap();
    cfg["n_layer"] = serde_json::json!(3);
    std::fs::write(more.join("config.json"), cfg.to_string()).unwrap();
    let out = unique_temp_dir("o3");
    let e = err_of(convert_hf_checkpoint(&more, &out, &Progress::default()));
    assert!(e.contains("config.json says 3 layers") && e.contains("weights for 2"), "{e}");
    assert!(!out.exists(), "a failed conversion leaves nothing behind");

    // A million layers, and a width the embedding does not have: refused from the key names and
    // the headers before anything is planned (it took ~25 s and 3 GB when every layer was
    // planned first; the bound is loose, this is not a benchmark).
    cfg["n_layer"] = serde_json::json!(1_000_000);
    std::fs::write(more.join("config.json"), cfg.to_string()).unwrap();
    let t = std::time::Instant::now();
    let e = err_of(convert_hf_checkpoint(&more, &unique_temp_dir("o3b"), &Progress::default()));
    assert!(e.contains("config.json says 1000000 layers"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 5.0, "refusing took {:?}", t.elapsed());
    cfg["n_layer"] = serde_json::json!(2);
    cfg["n_embd"] = serde_json::json!(cfg["n_embd"].as_u64().unwrap() * 2);
    std::fs::write(more.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(convert_hf_checkpoint(&more, &unique_temp_dir("o3c"), &Progress::default()));
    assert!(e.contains("config.json implies embed.W_E of shape"), "{e}");

    // A sharded checkpoint whose index names a shard outside the folder (a Windows drive-relative
    // name too), or whose shards hold the same tensor twice (issue 24).
    let sharded = unique_temp_dir("bad-shards");
    std::fs::create_dir_all(&sharded).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        if hf.join(f).is_file() {
            std::fs::copy(hf.join(f), sharded.join(f)).unwrap();
        }
    }
    for f in ["vocab.json", "merges.txt"] {
        if hf.join(f).is_file() {
            std::fs::copy(hf.join(f), sharded.join(f)).unwrap();
        }
    }
    std::fs::copy(hf.join("model.safetensors"), sharded.join("a.safetensors")).unwrap();
    std::fs::copy(hf.join("model.safetensors"), sharded.join("b.safetensors")).unwrap();
    let index = |map: serde_json::Value| {
        std::fs::write(sharded.join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap()
    };
    for bad in ["C:a.safetensors", "../a.safetensors", "/tmp/a.safetensors"] {
        index(serde_json::json!({"wte.weight": bad}));
        let e = err_of(convert_hf_checkpoint(&sharded, &unique_temp_dir("o-shard"), &Progress::default()));
        assert!(e.contains("leaves the folder"), "{bad}: {e}");
    }
    index(serde_json::json!({"wte.weight": "a.safetensors", "wpe.weight": "b.safetensors"}));
    let e = err_of(convert_hf_checkpoint(&sharded, &unique_temp_dir("o-dup"), &Progress::default()));
    assert!(e.contains("is also in a.safetensors"), "{e}");

    // CTRL computes its position table: a config claiming a billion positions is refused before
    // the table is built.
    let ctrl = unique_temp_dir("bad-ctrl-positions");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/families/ctrl_f32"), &ctrl);
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ctrl.join("config.json")).unwrap()).unwrap();
    c["n_positions"] = serde_json::json!(1_000_000_000u64);
    std::fs::write(ctrl.join("config.json"), c.to_string()).unwrap();
    let e = err_of(convert_hf_checkpoint(&ctrl, &unique_temp_dir("o-ctrl"), &Progress::default()));
    assert!(e.contains("sinusoidal table") && e.contains("refused"), "{e}");

    // A non-GPT-2 model type.
    let other = unique_temp_dir("bad-type");
    copy_dir(&hf, &other);
    cfg = serde_json::from_str(&std::fs::read_to_string(other.join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = serde_json::json!("bloom");
    std::fs::write(other.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(convert_hf_checkpoint(&other, &unique_temp_dir("o4"), &Progress::default()));
    assert!(
        e.contains("\"bloom\" is not supported") && e.contains("gpt2, gpt_neo, ctrl, gpt_neox, gptj, llama, mistral, qwen2, qwen3, gemma2, gemma3_text"),
        "{e}"
    );

    // Not a folder at all.
    let e = err_of(convert_hf_checkpoint(&hf.join("config.json"), &unique_temp_dir("o5"), &Progress::default()));
    assert!(e.contains("not a folder"), "{e}");
}

#[test]
fn bundle_errors_name_the_file() {
    let (_hf, bundle) = common::make_bundle("bad-bundle", &RandomGpt2::tiny(6));
    assert!(Bundle::open(&bundle).is_ok());

    // Truncated ONNX graph.
    let b1 = unique_temp_dir("b1");
    copy_dir(&bundle, &b1);
    let bytes = std::fs::read(b1.join("model.onnx")).unwrap();
    std::fs::write(b1.join("model.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    let e = err_of(Bundle::open(&b1));
    assert!(e.contains("model.onnx") && e.contains("not a valid ONNX model"), "{e}");

    // Truncated weight data.
    let b2 = unique_temp_dir("b2");
    copy_dir(&bundle, &b2);
    let data = b2.join("model.onnx.data");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&data).unwrap().set_len(len - 4096).unwrap();
    let e = err_of(Bundle::open(&b2));
    assert!(e.contains("model.onnx.data") && e.contains("truncated"), "{e}");

    // External data that points outside the bundle is refused before anything reads it.
    for evil in ["../model.onnx.data", "/etc/passwd", "sub/../../x"] {
        let b3 = unique_temp_dir("b3");
        copy_dir(&bundle, &b3);
        edit_model(&b3, |m| {
            let t = &mut m.graph.as_mut().unwrap().initializer[0];
            for kv in &mut t.external_data {
                if kv.key.as_deref() == Some("location") {
                    kv.value = Some(evil.into());
                }
            }
        });
        let e = err_of(Bundle::open(&b3));
        assert!(e.contains("leaves the bundle folder"), "{evil}: {e}");
    }

    // A folder that is not a bundle.
    let e = err_of(Bundle::open(&std::env::temp_dir()));
    assert!(e.contains("no model.onnx"), "{e}");

    // Missing metadata.
    let b4 = unique_temp_dir("b4");
    copy_dir(&bundle, &b4);
    edit_model(&b4, |m| m.metadata_props.retain(|p| p.key.as_deref() != Some("lens.d_model")));
    let e = err_of(Bundle::open(&b4));
    assert!(e.contains("lens.d_model"), "{e}");
}

#[test]
fn inconsistent_bundle_and_mismatched_tokenizer_are_rejected() {
    init_runtime(None).unwrap();
    let (_hf, bundle) = common::make_bundle("bad-consistency", &RandomGpt2::tiny(7));

    // The lens would decode with the wrong LayerNorm: the last site no longer matches `logits`.
    let b1 = unique_temp_dir("c1");
    copy_dir(&bundle, &b1);
    edit_model(&b1, |m| {
        for p in &mut m.metadata_props {
            if p.key.as_deref() == Some("lens.final_norm.weight") {
                p.value = Some("blocks.0.ln1.w".into());
            }
        }
    });
    let e = err_of(LensEngine::open(&b1, Device::Cpu, &Progress::default()));
    assert!(e.contains("inconsistent bundle"), "{e}");

    // A model with a 1000-token vocabulary and the GPT-2 tokenizer.
    let small = RandomGpt2 { vocab_size: 1000, ..RandomGpt2::tiny(8) };
    let (_hf2, b2) = common::make_bundle("bad-vocab", &small);
    let e = err_of(LensEngine::open(&b2, Device::Cpu, &Progress::default()));
    assert!(e.contains("tokenizer does not match the model") && e.contains("tokenizer.json"), "{e}");
}

#[test]
fn prompts_are_checked_against_the_context() {
    let (_hf, bundle) = common::make_bundle("bad-prompt", &RandomGpt2::tiny(9));
    let mut engine = common::open(&bundle);
    let long = "the cat sat on the mat. ".repeat(40);
    let e = err_of(engine.tokenize(&long, false));
    assert!(e.contains("context is 64") && e.contains("--truncate left"), "{e}");
    let all = engine.tokenizer.encode(&long).unwrap();
    let kept = engine.tokenize(&long, true).unwrap();
    assert_eq!(kept.len(), 64);
    assert_eq!(kept[..], all[all.len() - 64..]);
    assert!(err_of(engine.tokenize("", false)).contains("empty"));
    // Ids outside the vocabulary never reach the runtime.
    assert!(err_of(engine.trace(&[1, 2, 60000])).contains("outside the model's vocabulary"));
    assert!(err_of(engine.trace(&[1; 65])).contains("context is 64"));
}

#[test]
fn model_argument_that_is_not_a_model() {
    let dir = unique_temp_dir("not-a-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    let e = err_of(lens_model::run::resolve::resolve_model(Some(&dir), &Progress::default()));
    assert!(e.contains("not a model"), "{e}");
    let e = err_of(lens_model::run::resolve::resolve_model(Some(&dir.join("missing")), &Progress::default()));
    assert!(e.contains("no such file"), "{e}");
}
