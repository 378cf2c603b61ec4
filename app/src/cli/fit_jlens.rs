//! `logit-lens fit-jacobian-lens` and `merge-jacobian-lens`: a J-lens fitted natively through the
//! model's backward graph with the reference estimator (`lens_model::analyses::jlens_fit`),
//! written in the reference format TransformerLens's `JacobianLens.load` reads.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lens_model::analyses::jlens_fit::{DEFAULT_SKIP_FIRST, JlensFitOptions, checkpoint_path, fit_jacobian_lens, merge_jacobian_lenses, prompts_of};

use super::{interrupt, open_engine};

/// Arguments of `fit-jacobian-lens`.
#[derive(Args, Debug)]
pub struct FitJlensArgs {
    /// --model and --device.
    #[command(flatten)]
    pub model: super::args::ModelArgs,
    /// A UTF-8 text file of prompts, one per line (blank lines are left out), tokenized as the
    /// model's tokenizer does (its BOS where it adds one).
    #[arg(long)]
    pub prompts_file: PathBuf,
    /// The lens file to write (.pt; a checkpoint OUT.checkpoint.pt is kept while it runs).
    #[arg(long)]
    pub out: PathBuf,
    /// Prompts are truncated to this many tokens.
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    /// Leading positions left out of the average (and as targets).
    #[arg(long, default_value_t = DEFAULT_SKIP_FIRST)]
    pub skip_first: usize,
    /// Source layers (block outputs below the last block), e.g. 0,4,8 (default: all).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Output dimensions per backward run. The lens is the same whatever the batch (each
    /// dimension's backward is its own); only speed and memory change.
    #[arg(long, default_value_t = 8)]
    pub dim_batch: usize,
    /// Write a checkpoint every N prompts.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: usize,
    /// Continue from OUT.checkpoint.pt (same prompts file, model and options).
    #[arg(long)]
    pub resume: bool,
    /// Store the matrices in float32 (default float16, as the reference writes them).
    #[arg(long)]
    pub f32: bool,
    /// Replace a lens already at OUT.
    #[arg(long)]
    pub overwrite: bool,
}

/// Arguments of `merge-jacobian-lens`.
#[derive(Args, Debug)]
pub struct MergeJlensArgs {
    /// The lenses to merge (fits of the same model on parts of a corpus).
    #[arg(required = true, num_args = 2..)]
    pub lenses: Vec<PathBuf>,
    /// The merged lens.
    #[arg(long)]
    pub out: PathBuf,
    /// Store the matrices in float32 (default float16).
    #[arg(long)]
    pub f32: bool,
}

/// Runs `fit-jacobian-lens`.
pub fn run(ort_lib: Option<&std::path::Path>, args: &FitJlensArgs) -> Result<()> {
    if args.out.exists() && !args.overwrite && !args.resume {
        bail!("{} exists; pass --overwrite to replace it, or choose another --out", args.out.display());
    }
    let ckpt = checkpoint_path(&args.out);
    if !args.resume && ckpt.is_file() {
        eprintln!("note: {} is the checkpoint of an unfinished fit; starting again (pass --resume to continue it)", ckpt.display());
    }
    crate::session::prompt::check_writable(&args.out)?;
    let text = crate::session::prompt::read_prompt_file(&args.prompts_file)?;
    let prompts = prompts_of(&text);
    let mut engine = open_engine(ort_lib, args.model.model.as_deref(), args.model.device)?;
    let progress = interrupt::watched(lens_model::error::Progress::default());
    let corpus = args.prompts_file.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let opts = JlensFitOptions {
        max_seq_len: args.max_seq_len,
        skip_first: args.skip_first,
        layers: args.layers.clone(),
        dim_batch: args.dim_batch,
        checkpoint_every: args.checkpoint_every,
        half: !args.f32,
        corpus,
        resume: args.resume,
    };
    let t0 = std::time::Instant::now();
    let mut report_prompt = |done: usize, total: usize| {
        eprintln!("prompt {done}/{total} · {:.1} s", t0.elapsed().as_secs_f64());
    };
    let result = fit_jacobian_lens(&mut engine, args.model.device, &prompts, &opts, &args.out, &progress, &mut report_prompt);
    let r = match result {
        Err(lens_model::LensError::Cancelled) => {
            eprintln!("stopped; the checkpoint is {}: continue with the same command and --resume", ckpt.display());
            return Err(lens_model::LensError::Cancelled.into());
        }
        r => r.with_context(|| format!("fitting a J-lens into {}", args.out.display()))?,
    };
    eprintln!(
        "wrote {} (layers {:?}, {} prompts{}, {} backward runs in {:.1} s, {:.2} s per prompt)",
        args.out.display(),
        r.source_layers,
        r.n_prompts,
        if r.skipped > 0 { format!(", {} too short and left out", r.skipped) } else { String::new() },
        r.backward_runs,
        r.seconds,
        r.seconds / r.prompts_run.max(1) as f64
    );
    Ok(())
}

/// Runs `merge-jacobian-lens`.
pub fn merge(args: &MergeJlensArgs) -> Result<()> {
    crate::session::prompt::check_writable(&args.out)?;
    let n = merge_jacobian_lenses(&args.lenses, &args.out, !args.f32)?;
    eprintln!("wrote {} ({} lenses, {n} prompts)", args.out.display(), args.lenses.len());
    Ok(())
}
