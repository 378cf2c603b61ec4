//! `--model org/name` resolves from a Hugging Face hub cache laid out as `huggingface_hub` leaves
//! it (`models--org--name/{refs/main, snapshots/REV/*, blobs/*}` with symlinks), with no network;
//! an id that is not cached is a clear error. (This file sets `HF_HUB_CACHE` and
//! `LOGIT_LENS_CACHE` for its own process.)

use std::path::Path;

use lens_model::error::Progress;
use lens_model::run::resolve::{is_hub_id, resolve_hub_id, resolve_model};
use lens_model::run::runtime::init_runtime;
use lens_tests::fixture::unique_temp_dir;

fn fixture(case: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/families").join(case)
}

#[test]
fn hub_ids_resolve_from_the_local_cache_and_convert() {
    init_runtime(None).unwrap();
    let hub = unique_temp_dir("hf-hub");
    // SAFETY: set before anything in this process reads them; the runtime is already loaded.
    unsafe {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::set_var("HF_HUB_CACHE", &hub);
        std::env::set_var("LOGIT_LENS_CACHE", unique_temp_dir("hub-bundles"));
    }
    let repo = hub.join("models--tiny-org--llama-test");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    for (i, f) in ["config.json", "model.safetensors", "tokenizer.json"].iter().enumerate() {
        let blob = repo.join("blobs").join(format!("blob{i}"));
        std::fs::copy(fixture("llama_f32").join(f), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), repo.join("snapshots").join(rev).join(f)).unwrap();
    }
    assert!(is_hub_id("tiny-org/llama-test") && is_hub_id("Qwen/Qwen2.5-0.5B@main"));
    assert!(!is_hub_id("./a/b") && !is_hub_id("a/b/c") && !is_hub_id("plain"));
    let snap = resolve_hub_id("tiny-org/llama-test", &Progress::default()).unwrap();
    assert_eq!(snap, repo.join("snapshots").join(rev));
    assert_eq!(resolve_hub_id(&format!("tiny-org/llama-test@{rev}"), &Progress::default()).unwrap(), snap);

    let bundle = resolve_model(Some(Path::new("tiny-org/llama-test")), &Progress::default()).unwrap();
    let b = lens_model::run::bundle::Bundle::open(&bundle).unwrap();
    assert_eq!((b.family.as_str(), b.shape.n_layers), ("llama", 3));

    let e = resolve_model(Some(Path::new("nobody/not-downloaded")), &Progress::default()).unwrap_err().to_string();
    assert!(
        e.contains("nobody/not-downloaded is not in the Hugging Face cache") && e.contains("huggingface-cli download") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
}
