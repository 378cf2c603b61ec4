//! `logit-lens eval-lens`: the lens-quality suite (`lens_model::analyses::lens_eval`) — prompt
//! sets in the J-lens authors' format, every decoder side by side, JSON / CSV / a figure.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lens_model::analyses::lens_eval::{EvalOptions, evaluate, read_set};
use lens_model::lens::kernel::DecoderKind;

use super::{interrupt, open_engine};

/// Arguments of `eval-lens`.
#[derive(Args, Debug)]
pub struct EvalLensArgs {
    /// --model and --device.
    #[command(flatten)]
    pub model: super::args::ModelArgs,
    /// Prompt-set files (`{"items": [{"name", "prompt", "intermediates": [words], "target"}]}`),
    /// each scored on its own.
    #[arg(long, required = true, num_args = 1..)]
    pub set: Vec<PathBuf>,
    /// The decoders to compare, comma-separated (default: logit_lens, then tuned_lens with
    /// --tuned-lens and jacobian_lens with --jacobian-lens).
    #[arg(long, value_delimiter = ',', value_parser = super::args::parse_decoder)]
    pub decoders: Vec<DecoderKind>,
    /// A tuned lens folder for the tuned_lens decoder.
    #[arg(long, value_name = "DIR")]
    pub tuned_lens: Option<PathBuf>,
    /// A J-lens file for the jacobian_lens decoder (`published`: the one published for --model).
    #[arg(long, value_name = "FILE")]
    pub jacobian_lens: Option<PathBuf>,
    /// The k of pass@k, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    pub k: Vec<usize>,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Output JSON path (schema logit-lens/lens-eval@1).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the scores as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Also draw the figure (SVG, PDF, PNG or HTML by extension).
    #[arg(long)]
    pub figure: Option<PathBuf>,
}

/// Runs `eval-lens`.
pub fn run(ort_lib: Option<&std::path::Path>, args: &EvalLensArgs) -> Result<()> {
    if args.json.is_none() && args.csv.is_none() && args.figure.is_none() {
        bail!("nothing to write: give --json, --csv and/or --figure");
    }
    if args.k.is_empty() || args.k.contains(&0) {
        bail!("--k takes values of 1 or more (e.g. 1,5,10)");
    }
    for out in args.json.iter().chain(&args.csv).chain(&args.figure) {
        crate::session::prompt::check_writable(out)?;
    }
    let sets = args.set.iter().map(|p| read_set(p).with_context(|| format!("cannot read the prompt set {}", p.display()))).collect::<Result<Vec<_>>>()?;
    let mut decoders = args.decoders.clone();
    if decoders.is_empty() {
        decoders.push(DecoderKind::LogitLens);
        if args.tuned_lens.is_some() {
            decoders.push(DecoderKind::TunedLens);
        }
        if args.jacobian_lens.is_some() {
            decoders.push(DecoderKind::JacobianLens);
        }
    }
    let mut seen = std::collections::HashSet::new();
    decoders.retain(|d| seen.insert(*d));
    if decoders.contains(&DecoderKind::TunedLens) && args.tuned_lens.is_none() {
        bail!("--decoders names tuned_lens: give the lens with --tuned-lens DIR");
    }
    if decoders.contains(&DecoderKind::JacobianLens) && args.jacobian_lens.is_none() {
        bail!("--decoders names jacobian_lens: give the lens with --jacobian-lens FILE (or published)");
    }
    let mut engine = open_engine(ort_lib, args.model.model.as_deref(), args.model.device)?;
    crate::session::engine::attach_tuned_lens(&mut engine, args.tuned_lens.as_deref())?;
    crate::session::engine::attach_jacobian_lens(&mut engine, args.jacobian_lens.as_deref(), args.model.model.as_deref(), &super::stderr_progress())?;
    let opts = EvalOptions { decoders: decoders.clone(), ks: args.k.clone(), resamples: args.resamples, seed: 0 };
    let progress = interrupt::watched(lens_model::error::Progress::default());
    let report = evaluate(&mut engine, &sets, &opts, &progress)?;
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        lens_model::files::write_replacing(p, |tmp| std::fs::write(tmp, &text).map_err(|e| lens_model::LensError::io(p, e)))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.csv {
        let text = report.to_csv();
        lens_model::files::write_replacing(p, |tmp| std::fs::write(tmp, &text).map_err(|e| lens_model::LensError::io(p, e)))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.figure {
        let spec = crate::figure::spec::FigureSpec::default();
        let scene = crate::figure::lens_eval::build(&report, spec.width_in * 72.0).ok_or_else(|| anyhow::anyhow!("nothing to draw"))?;
        let source = crate::figure::provenance::EvalSource {
            sets: args.set.iter().map(|f| f.canonicalize().unwrap_or_else(|_| f.clone()).display().to_string()).collect(),
            decoders: decoders.iter().map(|d| d.name().to_string()).collect(),
            tuned_lens: report.tuned_lens.clone(),
            jacobian_lens: report.jacobian_lens.clone(),
        };
        let model_path = engine.bundle.dir.display().to_string();
        let prov = crate::figure::provenance::Provenance::of_eval(&report, model_path, source, spec);
        crate::figure::output::write(&scene, p, "Lens quality", &prov, &[])?;
    }
    // A table on stderr: pass@k per set and decoder.
    for set in &report.sets {
        eprintln!("{} ({} items):", set.name, set.items.len());
        for d in &set.decoders {
            let cells: Vec<String> =
                d.pass_at.iter().map(|p| format!("pass@{} {:.3} [{:.3}, {:.3}]", p.k, p.estimate.mean, p.estimate.ci95_low, p.estimate.ci95_high)).collect();
            let e = d.mean_log10_rank_all;
            eprintln!("  {:<14} {} · mean log10 rank {:.2} [{:.2}, {:.2}]", d.decoder, cells.join(" · "), e.mean, e.ci95_low, e.ci95_high);
        }
    }
    Ok(())
}
