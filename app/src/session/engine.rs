//! Opening a model for any face (the app's worker and every command): the runtime, the model
//! argument resolved (a bundle, a Hugging Face folder converted into the cache, a hub id) with the
//! weights chosen, the engine on the device asked for, and a tuned lens checked against it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use lens_model::LensEngine;
use lens_model::build::quant::WeightsChoice;
use lens_model::error::Progress;
use lens_model::run::runtime::{Device, init_runtime};

/// How [`open`] reports: conversion and opening may go to different places (the app shows both;
/// a command prints a conversion's progress but not the seconds of opening a bundle).
pub struct OpenProgress<'a> {
    /// Resolving the model (a conversion, a download).
    pub resolve: &'a Progress,
    /// Opening the bundle (sessions, the consistency check).
    pub open: &'a Progress,
}

/// Loads the runtime, resolves `model` (the demo model when `None`) in `weights`, and opens its
/// engine on `device`. Returns the bundle's folder and the engine (whose `weights_reason` says why
/// `auto` chose its weights). A failure to open says `{what} {folder}`.
pub fn open(
    model: Option<&Path>,
    device: Device,
    ort_lib: Option<&Path>,
    weights: WeightsChoice,
    progress: OpenProgress<'_>,
    what: &str,
) -> Result<(PathBuf, LensEngine)> {
    init_runtime(ort_lib)?;
    let resolved = lens_model::run::resolve::resolve_model_as(model, weights, progress.resolve)?;
    let dir = resolved.dir;
    let mut engine = LensEngine::open(&dir, device, progress.open).with_context(|| format!("{what} {}", dir.display()))?;
    engine.weights_reason = resolved.reason;
    Ok((dir, engine))
}

/// Opens the tuned lens in `dir` (if given) and checks it against the engine's model.
pub fn attach_tuned_lens(engine: &mut LensEngine, dir: Option<&Path>) -> Result<()> {
    if let Some(dir) = dir {
        let lens = lens_model::lens::tuned_lens::TunedLens::open(dir).with_context(|| format!("cannot read the tuned lens {}", dir.display()))?;
        engine.set_tuned_lens(Some(lens)).with_context(|| format!("cannot use the tuned lens {}", dir.display()))?;
    }
    Ok(())
}
