//! Shared helpers of the end-to-end tests: converting fixtures and opening engines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lens_model::LensEngine;
use lens_model::error::Progress;
use lens_model::run::runtime::{Device, init_runtime};
use lens_tests::fixture::{RandomGpt2, unique_temp_dir, write_checkpoint};

/// Writes `spec` as an HF checkpoint and converts it; returns (hf_dir, bundle_dir).
pub fn make_bundle(tag: &str, spec: &RandomGpt2) -> (PathBuf, PathBuf) {
    let hf = unique_temp_dir(&format!("{tag}-hf"));
    write_checkpoint(&hf, spec).unwrap();
    let bundle = unique_temp_dir(&format!("{tag}-bundle"));
    lens_model::build::convert::convert_hf_checkpoint(&hf, &bundle, &Progress::default()).unwrap();
    (hf, bundle)
}

/// The family fixtures' folder.
pub fn families() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/families"))
}

/// The family fixtures (folders with a `config.json`), sorted; at least 15.
pub fn family_cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(families())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "{cases:?}");
    cases
}

/// Opens a bundle on the CPU.
pub fn open(bundle: &Path) -> LensEngine {
    init_runtime(None).unwrap();
    LensEngine::open(bundle, Device::Cpu, &Progress::default()).unwrap()
}

/// Largest absolute difference between an f32 grid and an f64 one.
pub fn max_diff_2d(a: &ndarray::Array2<f32>, b: &[Vec<f64>]) -> f64 {
    let mut worst = 0f64;
    for (ra, rb) in a.rows().into_iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (x, y) in ra.iter().zip(rb) {
            worst = worst.max((f64::from(*x) - y).abs());
        }
    }
    worst
}
