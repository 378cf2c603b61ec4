//! `logit-lens corpus`: the lens over whole texts, per-site means with bootstrap intervals
//! (`lens_model::analyses::corpus`, schema `logit-lens/corpus@1`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lens_model::LensOptions;
use lens_model::analyses::corpus::{CorpusOptions, run_corpus, run_corpus_with};

use super::{interrupt, open_engine};

/// Arguments of `corpus`.
#[derive(Args, Debug)]
pub struct CorpusArgs {
    /// --model and --device.
    #[command(flatten)]
    pub model: super::args::ModelArgs,
    /// UTF-8 text files (each at most 10 MB), joined by a blank line and tokenized once.
    #[arg(long, required = true, num_args = 1..)]
    pub text: Vec<PathBuf>,
    /// Tokens per window (default: the model's context, at most 1024).
    #[arg(long)]
    pub window: Option<usize>,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// --decoder, --tuned-lens and --jacobian-lens.
    #[command(flatten)]
    pub decoder: super::args::DecoderArgs,
    /// Add the `.attn` (resid_mid) rows.
    #[arg(long)]
    pub subblocks: bool,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Output JSON path.
    #[arg(long)]
    pub json: PathBuf,
    /// --engine, --remote and --python (nnsight: one Python process for every window).
    #[command(flatten)]
    pub engine: super::args::EngineArgs,
    /// Also write the per-site table as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// Progress on stderr: one line every 5 % of the corpus (the windows' own stages are not
/// printed: thousands of windows would print thousands of lines); Ctrl+C cancels.
fn corpus_progress() -> lens_model::error::Progress {
    let last = std::sync::Mutex::new(-1i32);
    interrupt::watched(lens_model::error::Progress::new(move |_stage, f| {
        let pct = (f * 100.0) as i32;
        if let Ok(mut l) = last.lock()
            && pct / 5 > *l / 5
        {
            eprintln!("corpus: {pct}%");
            *l = pct;
        }
    }))
}

/// Runs `corpus`.
pub fn run(ort_lib: Option<&std::path::Path>, args: &CorpusArgs) -> Result<()> {
    let decoder = args.decoder.kind();
    if args.resamples == 0 {
        bail!("--resamples must be at least 1");
    }
    for out in std::iter::once(&args.json).chain(&args.csv) {
        crate::session::prompt::check_writable(out)?;
    }
    let text = crate::session::prompt::read_texts(&args.text)?;
    let nnsight = args.engine.nnsight()?;
    if nnsight && (decoder != lens_model::lens::kernel::DecoderKind::LogitLens || args.decoder.tuned_lens.is_some() || args.decoder.jacobian_lens.is_some()) {
        bail!("--engine nnsight runs the logit lens only: drop --decoder, --tuned-lens and --jacobian-lens");
    }
    let opts = CorpusOptions {
        window: args.window,
        max_tokens: args.max_tokens,
        lens: LensOptions { subblocks: args.subblocks, k: 1, decoder, ..LensOptions::default() },
        resamples: args.resamples,
        seed: 0,
    };
    let report = if nnsight {
        let Some(model) = args.model.model.as_ref().and_then(|m| m.to_str()) else {
            bail!("--engine nnsight needs --model: a Hugging Face folder or hub id (org/name)");
        };
        let progress = corpus_progress();
        let tokenizer = crate::session::remote::tokenizer_of(model, &progress)?;
        let session = lens_model::remote::nnsight::NnsightSession::start(&args.engine.nnsight_options(model)?)?;
        let mut runner = lens_model::remote::nnsight::NnsightRunner { session, tokenizer };
        run_corpus_with(&mut runner, &text, &opts, &progress)?
    } else {
        let mut engine = open_engine(ort_lib, args.model.model.as_deref(), args.model.device)?;
        args.decoder.attach(&mut engine, args.model.model.as_deref())?;
        run_corpus(&mut engine, &text, &opts, &corpus_progress())?
    };
    report.write_json(&args.json).with_context(|| format!("cannot write {}", args.json.display()))?;
    if let Some(csv) = &args.csv {
        report.write_csv(csv).with_context(|| format!("cannot write {}", csv.display()))?;
    }
    let last = report.sites.len().saturating_sub(1);
    let at = |v: &Vec<f64>, s: usize| v.get(s).copied().unwrap_or(f64::NAN);
    eprintln!(
        "{} tokens in {} windows of {} · {} sites · {:.1} s; final site: NLL {:.3} nats ({:.3} bits/byte), top-1 = next {:.1}%",
        report.n_tokens,
        report.n_windows,
        report.window,
        report.sites.len(),
        report.run.seconds,
        at(&report.per_site.nll_next.mean, last),
        at(&report.per_site.nll_bits_per_byte.mean, last),
        100.0 * at(&report.per_site.top1_is_next.mean, last)
    );
    Ok(())
}
