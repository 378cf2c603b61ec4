//! Shared helpers of the end-to-end tests: converting fixtures and opening engines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lens_model::LensEngine;
use lens_model::error::Progress;
use lens_model::runtime::{Device, init_runtime};
use lens_tests::fixture::{RandomGpt2, unique_temp_dir, write_checkpoint};

/// Writes `spec` as an HF checkpoint and converts it; returns (hf_dir, bundle_dir).
pub fn make_bundle(tag: &str, spec: &RandomGpt2) -> (PathBuf, PathBuf) {
    let hf = unique_temp_dir(&format!("{tag}-hf"));
    write_checkpoint(&hf, spec).unwrap();
    let bundle = unique_temp_dir(&format!("{tag}-bundle"));
    lens_model::convert::convert_hf_checkpoint(&hf, &bundle, &Progress::default()).unwrap();
    (hf, bundle)
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
