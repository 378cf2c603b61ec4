//! Opening a model for any face (the app's worker and every command): the runtime, the model
//! argument resolved (a bundle, a Hugging Face folder converted into the cache, a hub id) with the
//! weights chosen, the engine on the device asked for, and a tuned lens or J-lens checked against
//! it (a published J-lens fetched from the hub).

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

/// The `--jacobian-lens` value that fetches the published J-lens of the open model.
pub const PUBLISHED: &str = "published";

/// The published J-lens of the model `model` names (a hub id, a hub cache folder, a folder named
/// as the model), fetched into the Hugging Face cache when it is not there yet (progress, resume,
/// `HF_TOKEN` and the offline switches as for models). Its path.
pub fn published_jacobian_lens(model: &Path, progress: &Progress) -> Result<PathBuf> {
    use lens_model::lens::jacobian_lens::registry;
    let m = model.to_string_lossy();
    let Some(p) = registry::find(&m) else {
        anyhow::bail!(
            "no published J-lens is known for {m}; the published ones are for {} (open a J-lens file with --jacobian-lens FILE)",
            registry::all().iter().filter_map(|l| l.model_ids.first().cloned()).collect::<Vec<_>>().join(", ")
        );
    };
    let revision = registry::revision();
    lens_model::source::hub::download_file(&lens_model::run::resolve::hf_hub_cache(), &p.repo_id, &revision, &p.filename, progress)
        .with_context(|| format!("fetching the published J-lens of {m} ({}/{} at {revision})", p.repo_id, p.filename))
}

/// Opens the J-lens `lens` (if given: a file, or [`PUBLISHED`] for the one published for `model`)
/// and checks it against the engine's model. Returns the file it opened.
pub fn attach_jacobian_lens(engine: &mut LensEngine, lens: Option<&Path>, model: Option<&Path>, progress: &Progress) -> Result<Option<PathBuf>> {
    let Some(lens) = lens else { return Ok(None) };
    let file = if lens == Path::new(PUBLISHED) && !lens.exists() {
        let Some(model) = model else { anyhow::bail!("--jacobian-lens {PUBLISHED} needs --model: the demo model has no published J-lens") };
        published_jacobian_lens(model, progress)?
    } else {
        lens.to_path_buf()
    };
    let opened = lens_model::lens::jacobian_lens::JacobianLens::open(&file).with_context(|| format!("cannot read the J-lens {}", file.display()))?;
    engine.set_jacobian_lens(Some(opened)).with_context(|| format!("cannot use the J-lens {}", file.display()))?;
    Ok(Some(file))
}
