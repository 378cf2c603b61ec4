//! `logit-lens patch`: activation patching of a clean prompt into a corrupted one
//! (`lens_model::analyses::patch`, schema `logit-lens/patch@1`), JSON and CSV.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lens_model::analyses::patch::{PatchKind, PatchOptions, patch_sweep};

use super::open_engine;

/// Arguments of `patch`.
#[derive(Args, Debug)]
pub struct PatchArgs {
    /// --model and --device.
    #[command(flatten)]
    pub model: super::args::ModelArgs,
    /// The clean prompt.
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// A UTF-8 file holding the clean prompt.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// The corrupted prompt (the same number of tokens as the clean one).
    #[arg(long, conflicts_with = "corrupt_prompt_file")]
    pub corrupt_prompt: Option<String>,
    /// A UTF-8 file holding the corrupted prompt.
    #[arg(long)]
    pub corrupt_prompt_file: Option<PathBuf>,
    /// The answer, one token (e.g. " Paris").
    #[arg(long)]
    pub target: String,
    /// The token it is measured against (the metric is then logit(target) − logit(against); without
    /// it, log p(target)).
    #[arg(long)]
    pub against: Option<String>,
    /// The sites swept, comma-separated: resid (embed and every block's output), attn, mlp.
    #[arg(long, value_delimiter = ',', default_value = "resid", value_parser = parse_kind)]
    pub sites: Vec<PatchKind>,
    /// Output JSON path (schema logit-lens/patch@1).
    #[arg(long)]
    pub json: PathBuf,
    /// Also write the effects as CSV (kind, site, position, token, effect, normalised).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Also write the report as .npz (effect_KIND / normalized_KIND [sites, positions], tokens).
    #[arg(long)]
    pub npz: Option<PathBuf>,
    /// Also attribution patching's first-order estimate of every cell (the gradient at the
    /// corrupted run · (clean − corrupted), one backward run): `estimate` in the JSON, a CSV
    /// column, `estimate_KIND` in the .npz, and a figure NAME.estimate.EXT beside each figure.
    #[arg(long)]
    pub estimate: bool,
    /// Also draw the normalised effects as a figure (SVG, PDF, PNG or HTML by extension; one file
    /// per kind of site after the first: NAME.attn.svg, NAME.mlp.svg).
    #[arg(long)]
    pub figure: Option<PathBuf>,
}

fn parse_kind(s: &str) -> Result<PatchKind, String> {
    PatchKind::parse(s).ok_or_else(|| format!("unknown site kind {s:?}; use resid, attn or mlp"))
}

fn prompt(text: &Option<String>, file: &Option<PathBuf>, what: &str) -> Result<String> {
    let p = match (text, file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => crate::session::prompt::read_prompt_file(f)?,
        (None, None) => bail!(
            "give the {what} prompt (--{}prompt TEXT or --{}prompt-file FILE)",
            if what == "clean" { "" } else { "corrupt-" },
            if what == "clean" { "" } else { "corrupt-" }
        ),
    };
    if p.is_empty() {
        bail!("the {what} prompt is empty");
    }
    Ok(p)
}

/// Runs `patch`.
pub fn run(ort_lib: Option<&std::path::Path>, args: &PatchArgs) -> Result<()> {
    let clean_text = prompt(&args.prompt, &args.prompt_file, "clean")?;
    let corrupt_text = prompt(&args.corrupt_prompt, &args.corrupt_prompt_file, "corrupted")?;
    for out in std::iter::once(&args.json).chain(&args.csv).chain(&args.npz).chain(&args.figure) {
        crate::session::prompt::check_writable(out)?;
    }
    let mut seen = std::collections::HashSet::new();
    let kinds: Vec<_> = args.sites.iter().copied().filter(|k| seen.insert(*k)).collect();
    let mut engine = open_engine(ort_lib, args.model.model.as_deref(), args.model.device)?;
    let clean = engine.tokenize(&clean_text, false).context("the clean prompt")?;
    let corrupt = engine.tokenize(&corrupt_text, false).context("the corrupted prompt")?;
    if clean.len() != corrupt.len() {
        bail!(
            "the clean prompt has {} tokens and the corrupted prompt {}: activation patching needs prompts of the same length ({:?} vs {:?})",
            clean.len(),
            corrupt.len(),
            clean_text,
            corrupt_text
        );
    }
    let target = crate::session::prompt::single_token(&engine, &args.target, "--target")?;
    let against = args.against.as_deref().map(|a| crate::session::prompt::single_token(&engine, a, "--against")).transpose()?;
    let progress = super::stderr_progress();
    let mut report = patch_sweep(&mut engine, &clean, &corrupt, &PatchOptions { kinds, target, against }, &progress)?;
    if args.estimate {
        let mut runner = lens_model::run::gradients::GradRunner::open(&engine.bundle, args.model.device, 0, &progress)?;
        lens_model::analyses::attribution_patching::add_estimates(&mut engine, &mut runner, &clean, &corrupt, &mut report, &progress)
            .context("attribution patching's estimate")?;
    }
    let text = serde_json::to_string_pretty(&report)?;
    lens_model::files::write_replacing(&args.json, |tmp| std::fs::write(tmp, &text).map_err(|e| lens_model::LensError::io(&args.json, e)))
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    if let Some(csv) = &args.csv {
        let mut s = String::from(if args.estimate {
            "kind,site,position,corrupt_token,effect,normalized,estimate\n"
        } else {
            "kind,site,position,corrupt_token,effect,normalized\n"
        });
        for g in &report.grids {
            for (i, site) in g.sites.iter().enumerate() {
                for (p, tok) in report.corrupt_tokens.iter().enumerate() {
                    let (e, n) = (g.effect.get(i, p).copied().unwrap_or(f64::NAN), g.normalized.get(i, p).copied().unwrap_or(f64::NAN));
                    let est = g.estimate.as_ref().map_or(String::new(), |grid| format!(",{}", grid.get(i, p).copied().unwrap_or(f64::NAN)));
                    s += &format!("{},{site},{p},{},{e},{n}{est}\n", g.kind.name(), crate::figure::export::csv_field(&tok.decoded));
                }
            }
        }
        lens_model::files::write_replacing(csv, |tmp| std::fs::write(tmp, &s).map_err(|e| lens_model::LensError::io(csv, e)))
            .with_context(|| format!("cannot write {}", csv.display()))?;
    }
    if let Some(npz) = &args.npz {
        report.write_npz(npz).with_context(|| format!("cannot write {}", npz.display()))?;
    }
    if let Some(fig) = &args.figure {
        draw(&report, fig, &engine, &clean_text, &corrupt_text, args)?;
    }
    eprintln!(
        "{} patched runs in {:.1} s; {}: clean {:.4}, corrupted {:.4}; wrote {}",
        report.runs,
        report.seconds,
        report.metric,
        report.clean_metric,
        report.corrupt_metric,
        args.json.display()
    );
    for g in &report.grids {
        if let Some(r) = g.estimate_correlation() {
            eprintln!("{}: the first-order estimate correlates with the exact effects at r = {r:.3}", g.kind.name());
        }
    }
    Ok(())
}

/// The figure path of grid `i` of `base`: `base` itself for the first, `NAME.KIND.EXT` after;
/// an estimate's with `.estimate` before the extension.
fn figure_path(base: &std::path::Path, i: usize, kind: &str, estimate: bool) -> PathBuf {
    if i == 0 && !estimate {
        return base.to_path_buf();
    }
    let stem = base.file_stem().map_or_else(|| "patch".to_string(), |s| s.to_string_lossy().into_owned());
    let ext = base.extension().map_or_else(|| "svg".to_string(), |e| e.to_string_lossy().into_owned());
    let kind = if i == 0 { String::new() } else { format!(".{kind}") };
    let est = if estimate { ".estimate" } else { "" };
    base.with_file_name(format!("{stem}{kind}{est}.{ext}"))
}

/// Draws every grid of `report`: normalised effect (1 = the clean run's metric restored, 0 = the
/// corrupted run's), sites top to bottom from the last layer, corrupted tokens below, clean above.
fn draw(
    report: &lens_model::analyses::patch::PatchReport,
    base: &std::path::Path,
    engine: &lens_model::LensEngine,
    clean: &str,
    corrupt: &str,
    args: &PatchArgs,
) -> Result<()> {
    use crate::figure::provenance::{PatchSource, Provenance};
    let spec = crate::figure::spec::FigureSpec::default();
    let shown = |t: &lens_model::source::tokenizer::Token| t.text.clone();
    let n_pos = report.corrupt_tokens.len();
    let figures = report.grids.iter().enumerate().flat_map(|(i, g)| {
        let estimate = g.estimate_normalized(report.clean_metric, report.corrupt_metric).map(|v| (i, g, Some(v)));
        std::iter::once((i, g, None)).chain(estimate)
    });
    for (i, g, estimate) in figures {
        let rows: Vec<usize> = (0..g.sites.len()).rev().collect();
        let value = |s: usize, p: usize| match &estimate {
            Some(v) => v.get(s * n_pos + p).copied().unwrap_or(f64::NAN),
            None => g.normalized.get(s, p).copied().unwrap_or(f64::NAN),
        };
        let values: Vec<f64> = rows.iter().flat_map(|&s| (0..n_pos).map(move |p| (s, p))).map(|(s, p)| value(s, p)).collect();
        let title = match &estimate {
            None => format!("Activation patching ({}): {}", g.kind.name(), report.metric_formula()),
            Some(_) => format!("Attribution patching ({}, first-order estimate): {}", g.kind.name(), report.metric_formula()),
        };
        let weights = if report.weights == "f32" { String::new() } else { format!(" · {} weights (approximate)", report.weights) };
        let how = match (&estimate, g.estimate_correlation()) {
            (None, _) => String::new(),
            (Some(_), r) => format!(
                " · gradient at the corrupted run · (clean − corrupted){}",
                r.map_or(String::new(), |r| format!(" · r = {r:.2} with the exact effects"))
            ),
        };
        let subtitle = format!(
            "{} ({} layers) · clean {:.3}, corrupted {:.3} · normalised: 1 = clean restored, 0 = corrupted{how}{weights}",
            report.model, report.n_layers, report.clean_metric, report.corrupt_metric
        );
        let scene = crate::figure::scene::diverging_figure(
            title.clone(),
            &subtitle,
            rows.iter().filter_map(|&s| g.sites.get(s).cloned()).collect(),
            report.clean_tokens.iter().map(shown).collect(),
            report.corrupt_tokens.iter().map(shown).collect(),
            &values,
            "normalised effect",
            &spec,
        )
        .ok_or_else(|| anyhow::anyhow!("nothing to draw: the clean and corrupted runs have the same metric"))?;
        let source = PatchSource {
            clean: clean.to_string(),
            corrupt: corrupt.to_string(),
            target: args.target.clone(),
            against: args.against.clone(),
            sites: g.kind.name().to_string(),
            estimate: estimate.is_some(),
        };
        let prov = Provenance::of_patch(&report.model, engine.bundle.dir.display().to_string(), &report.weights, source, spec.clone());
        let path = figure_path(base, i, g.kind.name(), estimate.is_some());
        crate::figure::output::write(&scene, &path, &title, &prov, &[])?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
