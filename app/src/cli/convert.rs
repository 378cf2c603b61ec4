//! `logit-lens convert`: a Hugging Face checkpoint folder into a lens bundle (f32, or the weights
//! `--weights` chooses).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lens_model::build::quant::WeightsChoice;

use super::stderr_progress;

/// Options of `convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Folder with config.json, model.safetensors and tokenizer.json (or vocab.json + merges.txt).
    pub hf_dir: PathBuf,
    /// Output bundle folder (must not exist or be empty).
    pub bundle_dir: PathBuf,
}

/// Runs `convert` in `weights`.
pub fn run(args: &ConvertArgs, weights: WeightsChoice) -> Result<()> {
    let (format, reason) = if lens_model::build::convert::is_hf_checkpoint(&args.hf_dir) {
        lens_model::run::resolve::choose_weights(&args.hf_dir, weights)?
    } else {
        (lens_model::build::quant::WeightFormat::F32, None)
    };
    if let Some(r) = reason {
        eprintln!("{r}");
    }
    let summary = lens_model::build::convert::convert_hf_checkpoint_as(&args.hf_dir, &args.bundle_dir, format, &stderr_progress())?;
    let s = &summary.shape;
    println!(
        "wrote {} ({}, {} layers, d_model {}, {} heads, d_vocab {}, n_ctx {}; {} weights, sha256 {})",
        summary.bundle.display(),
        summary.family.model_type(),
        s.n_layers,
        s.d_model,
        s.n_heads,
        s.d_vocab,
        s.n_ctx,
        summary.weights.name(),
        summary.weights_sha256
    );
    Ok(())
}
