//! The lens through nnsight (`--engine nnsight`, File → Open remote model…): the model's
//! tokenizer and the engine's run, for the CLI and the app alike.

use std::path::Path;

use anyhow::{Context, Result, bail};
use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_model::output::report::LensReport;
use lens_model::remote::nnsight::{NnsightOptions, find_script, lens_nnsight, python_of};
use lens_model::source::tokenizer::LensTokenizer;

/// The model's tokenizer: `tokenizer.json` of a folder, or of a hub id (fetched into the Hugging
/// Face cache, with its `tokenizer_config.json` where the repository has one).
pub fn tokenizer_of(model: &str, progress: &Progress) -> Result<LensTokenizer> {
    let dir = Path::new(model);
    let file = if dir.is_dir() {
        dir.join("tokenizer.json")
    } else if lens_model::run::resolve::is_hub_id(model) {
        let cache = lens_model::run::resolve::hf_hub_cache();
        // Whether a BOS is added; not every repository has the file, so a failure is not an error.
        let _ = lens_model::source::hub::download_file(&cache, model, "main", "tokenizer_config.json", progress);
        lens_model::source::hub::download_file(&cache, model, "main", "tokenizer.json", progress)?
    } else {
        bail!("{model:?} is neither a model folder nor a hub id (org/name)");
    };
    LensTokenizer::from_file(&file).with_context(|| format!("the model's tokenizer ({})", file.display()))
}

/// The lens report of `ids` from nnsight: `model` a folder or hub id, on NDIF when `ndif`, run by
/// `python` (else `LOGIT_LENS_PYTHON`, else python3).
pub fn run_remote(
    model: &str,
    ndif: bool,
    python: Option<&Path>,
    tokenizer: &LensTokenizer,
    ids: &[u32],
    opts: &LensOptions,
    progress: &Progress,
) -> Result<LensReport> {
    let engine = NnsightOptions { model: model.to_string(), remote: ndif, python: python_of(python), script: find_script()? };
    Ok(lens_nnsight(&engine, tokenizer, ids, opts, progress)?)
}
