//! `logit-lens fit-lens`: fits a tuned lens on texts (`lens_model::lens::tuned_lens::fit`) and saves
//! it in the tuned-lens package's format.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lens_model::lens::tuned_lens::fit::{FitOptions, FitStep, fit, has_checkpoint};

use super::{interrupt, open_engine};

/// Arguments of `fit-lens`.
#[derive(Args, Debug)]
pub struct FitLensArgs {
    /// --model and --device.
    #[command(flatten)]
    pub model: super::args::ModelArgs,
    /// UTF-8 training text files (each at most 10 MB), joined by a blank line.
    #[arg(long, required = true, num_args = 1..)]
    pub text: Vec<PathBuf>,
    /// The lens folder to write (config.json, params.pt; checkpoints in OUT/checkpoint/).
    #[arg(long)]
    pub out: PathBuf,
    /// Tokens per optimiser step (whole windows).
    #[arg(long, default_value_t = FitOptions::default().tokens_per_step)]
    pub tokens: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = FitOptions::default().steps)]
    pub steps: usize,
    /// Tokens per window (default: 256, or the model's context if shorter).
    #[arg(long)]
    pub window: Option<usize>,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Learning-rate scale (tuned-lens's --lr_scale; the rate is lr_scale · (1 − momentum)).
    #[arg(long, default_value_t = 1.0)]
    pub lr_scale: f64,
    /// Seed of the window order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a checkpoint every N steps.
    #[arg(long, default_value_t = FitOptions::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// Continue from OUT/checkpoint/ (same text, model and options).
    #[arg(long)]
    pub resume: bool,
    /// Replace a lens already in OUT.
    #[arg(long)]
    pub overwrite: bool,
}

/// One line per step: the loss of every translator (nats), its mean, the gradient norm, the time.
fn print_step(s: &FitStep, labels: &[String]) {
    let losses: Vec<String> = s.loss.iter().zip(labels).map(|(l, n)| format!("{n} {l:.3}")).collect();
    let mean = s.loss.iter().sum::<f64>() / s.loss.len().max(1) as f64;
    eprintln!("step {}/{}  KL {}  · mean {mean:.4}  |g| {:.3}  lr {:.4}  {:.1} s", s.step, s.steps, losses.join(" "), s.grad_norm, s.lr, s.elapsed_s);
}

/// Runs `fit-lens`.
pub fn run(ort_lib: Option<&std::path::Path>, args: &FitLensArgs) -> Result<()> {
    let has_lens = lens_model::lens::tuned_lens::fit::holds_lens(&args.out);
    if has_lens && !args.overwrite && !args.resume {
        bail!("{} already holds a tuned lens; pass --overwrite to replace it, or choose another --out", args.out.display());
    }
    if args.resume && !has_checkpoint(&args.out) {
        bail!("--resume: {} holds no checkpoint to continue from", args.out.display());
    }
    if !args.resume && has_checkpoint(&args.out) {
        eprintln!("note: {} holds a checkpoint of an unfinished fit; starting again (pass --resume to continue it)", args.out.display());
    }
    let text = crate::session::prompt::read_texts(&args.text)?;
    let mut engine = open_engine(ort_lib, args.model.model.as_deref(), args.model.device)?;
    let opts = FitOptions {
        steps: args.steps,
        tokens_per_step: args.tokens,
        window: args.window,
        max_tokens: args.max_tokens,
        lr_scale: args.lr_scale,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        ..FitOptions::default()
    };
    let labels: Vec<String> = std::iter::once("embed".to_string()).chain((0..engine.bundle.shape.n_layers.saturating_sub(1)).map(|l| l.to_string())).collect();
    let progress = interrupt::watched(lens_model::error::Progress::default());
    let result = fit(&mut engine, &text, &opts, &args.out, args.resume, &mut |s| print_step(s, &labels), &progress);
    let result = match result {
        Err(lens_model::LensError::Cancelled) => {
            eprintln!(
                "stopped; a checkpoint is in {}: continue with the same command and --resume",
                args.out.join(lens_model::lens::tuned_lens::fit::CHECKPOINT_DIR).display()
            );
            return Err(lens_model::LensError::Cancelled.into());
        }
        r => r.with_context(|| format!("fitting a tuned lens into {}", args.out.display()))?,
    };
    let last = result.history.last().map(|s| s.loss.clone()).unwrap_or_default();
    eprintln!(
        "wrote {} ({} translators, {} steps in {:.1} s; last batch's mean KL {:.4} nats)",
        args.out.display(),
        result.lens.len(),
        result.steps_run,
        result.seconds,
        last.iter().sum::<f64>() / last.len().max(1) as f64
    );
    Ok(())
}
