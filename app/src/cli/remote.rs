//! `lens --engine nnsight`: the lens computed by nnsight in a Python environment, on this machine
//! or on NDIF (`--remote`), written as the local engine's report.

use std::path::PathBuf;

use anyhow::{Result, bail};
use lens_model::LensOptions;
use lens_model::error::Progress;

use crate::session::remote::{run_remote, tokenizer_of};

use super::{interrupt, pinned_ids, token_groups, write_report_files};

/// The options of `lens` that `--engine nnsight` reads.
pub struct RemoteLens {
    /// `--subblocks`.
    pub subblocks: bool,
    /// `--engine`, `--remote`, `--python`.
    pub engine: super::args::EngineArgs,
    /// `--top-k`.
    pub top_k: usize,
    /// `--pin`.
    pub pin: Vec<String>,
    /// `--group`.
    pub group: Vec<String>,
    /// `--group-word`.
    pub group_word: Vec<String>,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--npz`.
    pub npz: Option<PathBuf>,
    /// Options given that the engine does not support (refused).
    pub unsupported: Vec<&'static str>,
}

/// Runs `lens --engine nnsight` on `text`.
pub fn lens(model: &super::args::ModelArgs, text: &str, args: &RemoteLens) -> Result<()> {
    if !args.unsupported.is_empty() {
        bail!("--engine nnsight does not take {} (yet): run them with the local engine", args.unsupported.join(", "));
    }
    let Some(model) = model.model.as_ref().and_then(|m| m.to_str()) else {
        bail!("--engine nnsight needs --model: a Hugging Face folder or hub id (org/name)");
    };
    for out in args.json.iter().chain(&args.npz) {
        crate::session::prompt::check_writable(out)?;
    }
    let progress = interrupt::watched(Progress::default());
    let tokenizer = tokenizer_of(model, &progress)?;
    let ids = tokenizer.encode(text)?;
    let pinned = pinned_ids(&tokenizer, &args.pin)?;
    let groups = token_groups(&tokenizer, &args.group, &args.group_word)?;
    let opts = LensOptions { k: args.top_k, pinned, groups, subblocks: args.subblocks, ..LensOptions::default() };
    let report = run_remote(model, args.engine.remote, args.engine.python.as_deref(), &tokenizer, &ids, &opts, &progress)?;
    let wrote = write_report_files(&report, args.json.as_deref(), args.npz.as_deref(), &tokenizer)?;
    let bytes = report.run.engine.as_ref().map_or(0, |e| e.bytes_received);
    eprintln!(
        "{} tokens x {} sites on nnsight ({}): {:.0} ms, {bytes} bytes received; wrote {}",
        report.n_pos(),
        report.sites.len(),
        if args.engine.remote { "NDIF" } else { "this machine" },
        report.run.forward_ms,
        wrote.join(", ")
    );
    Ok(())
}
