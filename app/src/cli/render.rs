//! `logit-lens render`: a figure from the command line, with no window, no GPU and no display;
//! `--from FIG` regenerates a figure from the provenance stored in an exported file.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;

use crate::figure::html::page_run;
use crate::figure::output::{self, Format};
use crate::figure::provenance::{CompareSource, Provenance};
use crate::figure::scene;
use crate::figure::spec::{FigureSpec, FigureView, RankOf};
use crate::session::worker::ModelSummary;
use crate::view::model::{ViewModel, token_display};

/// Options of `render`.
#[derive(Args, Debug, Default)]
pub struct RenderArgs {
    /// --model and --device.
    #[command(flatten)]
    pub model: super::args::ModelArgs,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// A UTF-8 text file holding the prompt.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// logits, probs, ranks, kl, entropy, contributions or grad-x-act (gradient × activation of
    /// every site, through the model's backward graph).
    #[arg(long)]
    pub view: Option<String>,
    /// A preset reproducing a figure of the original write-up: top1-logit, rank-final-100, kl-final, kl-input, rank-input-1000.
    #[arg(long)]
    pub preset: Option<String>,
    /// Show the `.attn` rows.
    #[arg(long)]
    pub subblocks: bool,
    /// --decoder, --tuned-lens and --jacobian-lens.
    #[command(flatten)]
    pub decoder: super::args::DecoderArgs,
    /// Leave out the first column when it is the tokenizer's BOS (a special token).
    #[arg(long)]
    pub hide_bos: bool,
    /// Mark each position's prediction depth: a red edge under the first row from which the
    /// top-1 stays the final top-1.
    #[arg(long)]
    pub depth: bool,
    /// Keep the last n_ctx tokens of a prompt that is too long (`left`), instead of refusing it.
    #[arg(long, value_name = "left")]
    pub truncate: Option<String>,
    /// Show every n-th layer (the last is always kept).
    #[arg(long)]
    pub layer_step: Option<usize>,
    /// Only the last N positions.
    #[arg(long, conflicts_with = "positions")]
    pub last: Option<usize>,
    /// Only positions A..B (inclusive, 0-based).
    #[arg(long)]
    pub positions: Option<String>,
    /// Ranks of: final, next, input, or a token (e.g. " plasma").
    #[arg(long)]
    pub rank_of: Option<String>,
    /// Rank colour cap (e.g. 100 or 1000).
    #[arg(long)]
    pub rank_cap: Option<u32>,
    /// KL against: final or input.
    #[arg(long)]
    pub kl_vs: Option<String>,
    /// KL colour cap in nats.
    #[arg(long)]
    pub kl_cap: Option<f64>,
    /// viridis, magma or cividis.
    #[arg(long)]
    pub colormap: Option<String>,
    /// Contributions (and gradient × activation) to: final or next.
    #[arg(long)]
    pub contrib_target: Option<String>,
    /// Figure width in inches.
    #[arg(long)]
    pub width_in: Option<f64>,
    /// PNG resolution in dots per inch.
    #[arg(long, conflicts_with = "scale")]
    pub dpi: Option<f64>,
    /// PNG pixels per point (1 = 72 dpi, 2 = 144 dpi, ...).
    #[arg(long)]
    pub scale: Option<f64>,
    /// Figure title (default: the view's name).
    #[arg(long)]
    pub title: Option<String>,
    /// Regenerate from the provenance of an exported figure (other options override it).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Draw A, B and A − B: B under another decoder.
    #[arg(long, conflicts_with_all = ["compare_prompt", "compare_prompt_file", "compare_model"])]
    pub compare_decoder: Option<String>,
    /// Draw A, B and A − B: B on another prompt (text).
    #[arg(long, conflicts_with_all = ["compare_prompt_file", "compare_model"])]
    pub compare_prompt: Option<String>,
    /// Draw A, B and A − B: B on the prompt in this file.
    #[arg(long, conflicts_with = "compare_model")]
    pub compare_prompt_file: Option<PathBuf>,
    /// Draw A, B and A − B: B through another model of the same tokenizer and depth.
    #[arg(long)]
    pub compare_model: Option<PathBuf>,
    /// Draw a corpus figure instead: a `logit-lens corpus` JSON (repeatable: runs overlaid).
    #[arg(long)]
    pub corpus: Vec<PathBuf>,
    /// The corpus statistic: kl_to_final, nll_next, nll_bits_per_byte, top1_agrees_final,
    /// top1_is_next or entropy.
    #[arg(long, default_value = "kl_to_final")]
    pub corpus_metric: String,
    /// Legend label of each --corpus, in order (default: its model and decoder).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Output: FIG.svg, FIG.pdf or FIG.png.
    #[arg(long)]
    pub out: PathBuf,
    /// --engine, --remote and --python (a figure computed by nnsight records it, and `--from`
    /// runs nnsight again).
    #[command(flatten)]
    pub engine: super::args::EngineArgs,
}

/// What B varies: from the options, else from a recorded comparison figure.
fn compare_source(a: &RenderArgs, recorded: Option<&Provenance>) -> Result<Option<CompareSource>> {
    Ok(if let Some(d) = &a.compare_decoder {
        let kind =
            DecoderKind::parse(d).ok_or_else(|| anyhow!("--compare-decoder {d:?}: use one of {}", DecoderKind::ALL.map(DecoderKind::name).join(", ")))?;
        Some(CompareSource { varied: "decoder".into(), with: kind.name().into() })
    } else if let Some(t) = &a.compare_prompt {
        Some(CompareSource { varied: "prompt".into(), with: t.clone() })
    } else if let Some(f) = &a.compare_prompt_file {
        Some(CompareSource { varied: "prompt".into(), with: crate::session::prompt::read_prompt_file(f)? })
    } else if let Some(m) = &a.compare_model {
        Some(CompareSource { varied: "model".into(), with: m.canonicalize().unwrap_or_else(|_| m.clone()).display().to_string() })
    } else {
        recorded.and_then(|p| p.compare.clone())
    })
}

/// Draws a corpus figure from `files` (the `corpus` command's JSON).
fn render_corpus(a: &RenderArgs, mut spec: FigureSpec, source: Option<crate::figure::provenance::CorpusSource>) -> Result<()> {
    use crate::figure::provenance::CorpusSource;
    let (files, labels, metric) = match source {
        Some(src) if a.corpus.is_empty() => {
            // Say which files a figure names before they are opened.
            for f in &src.files {
                eprintln!("the figure names the corpus report {f}; reading it (--corpus overrides)");
            }
            (src.files.iter().map(PathBuf::from).collect::<Vec<_>>(), src.labels, src.metric)
        }
        _ => (a.corpus.clone(), a.labels.clone(), a.corpus_metric.clone()),
    };
    if !crate::figure::corpus::CORPUS_METRICS.iter().any(|(m, _)| *m == metric) {
        bail!("--corpus-metric {metric:?}: use one of {}", crate::figure::corpus::CORPUS_METRICS.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", "));
    }
    if labels.len() > files.len() {
        bail!("{} --label for {} --corpus files", labels.len(), files.len());
    }
    let mut reports = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let r: lens_model::analyses::corpus::CorpusReport =
            serde_json::from_str(&text).with_context(|| format!("{} is not a logit-lens corpus report", f.display()))?;
        if r.schema != lens_model::analyses::corpus::CORPUS_SCHEMA {
            bail!("{}: schema {:?} is not {}", f.display(), r.schema, lens_model::analyses::corpus::CORPUS_SCHEMA);
        }
        reports.push(r);
    }
    let labels: Vec<String> =
        reports.iter().enumerate().map(|(i, r)| labels.get(i).cloned().unwrap_or_else(|| format!("{} · {}", r.model.name, r.decoder))).collect();
    let runs: Vec<(String, &lens_model::analyses::corpus::CorpusReport)> = labels.iter().cloned().zip(reports.iter()).collect();
    apply(&mut spec, a)?;
    let width = spec.width_in * 72.0;
    let scene = crate::figure::corpus::build(&runs, &metric, width, spec.title.as_deref())
        .ok_or_else(|| anyhow!("nothing to draw: the corpus reports have no finite values of {metric}"))?;
    let Some(first) = reports.first() else { bail!("no --corpus file") };
    let source = CorpusSource {
        files: files.iter().map(|f| f.canonicalize().unwrap_or_else(|_| f.clone()).display().to_string()).collect(),
        labels,
        metric: metric.clone(),
    };
    let title = spec.title.clone().unwrap_or_else(|| format!("{metric} per site"));
    let prov = Provenance::of_corpus(first, source, spec);
    output::write(&scene, &a.out, &title, &prov, &[])?;
    eprintln!("wrote {} ({:.1} x {:.1} in)", a.out.display(), scene.width / 72.0, scene.height / 72.0);
    Ok(())
}

fn parse_range(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s.split_once("..").ok_or_else(|| anyhow!("--positions {s:?}: expected A..B"))?;
    let a: usize = a.trim().parse().with_context(|| format!("--positions {s:?}"))?;
    let b: usize = b.trim().parse().with_context(|| format!("--positions {s:?}"))?;
    if a > b {
        bail!("--positions {s:?}: A must not exceed B");
    }
    Ok((a, b))
}

/// Applies the command-line options on top of `spec`.
fn apply(spec: &mut FigureSpec, a: &RenderArgs) -> Result<()> {
    if let Some(p) = &a.preset {
        spec.preset(p).map_err(|e| anyhow!(e))?;
    }
    if let Some(v) = &a.view {
        spec.view = v.parse::<FigureView>().map_err(|e| anyhow!(e))?;
    }
    if a.subblocks {
        spec.subblocks = true;
    }
    if a.hide_bos {
        spec.hide_bos = true;
    }
    if a.depth {
        spec.depth = true;
    }
    match a.truncate.as_deref() {
        None => {}
        Some("left") => spec.truncate_left = true,
        Some(other) => bail!("--truncate {other:?} is not supported; use --truncate left"),
    }
    if let Some(t) = &a.decoder.tuned_lens {
        let t = t.canonicalize().unwrap_or_else(|_| t.clone());
        spec.tuned_lens = Some(t.display().to_string());
        if a.decoder.decoder.is_none() {
            spec.decoder = DecoderKind::TunedLens.name().into();
        }
    }
    if let Some(j) = &a.decoder.jacobian_lens {
        let j = if j == std::path::Path::new(crate::session::engine::PUBLISHED) { j.clone() } else { j.canonicalize().unwrap_or_else(|_| j.clone()) };
        spec.jacobian_lens = Some(j.display().to_string());
        if a.decoder.decoder.is_none() {
            spec.decoder = DecoderKind::JacobianLens.name().into();
        }
    }
    if let Some(kind) = a.decoder.decoder {
        spec.decoder = kind.name().into();
    }
    if let Some(n) = a.layer_step {
        spec.layer_step = n;
    }
    if let Some(n) = a.last {
        if n == 0 {
            bail!("--last 0: show at least one position (--last 1 or more)");
        }
        spec.last = Some(n);
        spec.positions = None;
    }
    if let Some(r) = &a.positions {
        spec.positions = Some(parse_range(r)?);
        spec.last = None;
    }
    if let Some(r) = &a.rank_of {
        spec.rank_of = match r.as_str() {
            "final" => RankOf::Final,
            "next" => RankOf::Next,
            "input" => RankOf::Input,
            token => RankOf::Token(token.to_string()),
        };
    }
    if let Some(c) = a.rank_cap {
        spec.rank_cap = c;
    }
    if let Some(k) = &a.kl_vs {
        spec.kl_vs = k.clone();
    }
    if let Some(c) = a.kl_cap {
        spec.kl_cap = c;
    }
    if let Some(c) = &a.colormap {
        spec.colormap = c.clone();
    }
    if let Some(c) = &a.contrib_target {
        if c != "final" && c != "next" {
            bail!("--contrib-target {c:?}: use final or next");
        }
        spec.contrib_target = c.clone();
    }
    if let Some(w) = a.width_in {
        spec.width_in = w;
    }
    if let Some(d) = a.dpi {
        spec.dpi = d;
    }
    if let Some(s) = a.scale {
        spec.dpi = 72.0 * s;
    }
    if a.title.is_some() {
        spec.title = a.title.clone();
    }
    Ok(())
}

/// `render --engine nnsight`: the figure of a report nnsight computed (the logit lens; no
/// comparison), with the engine in its provenance.
fn render_nnsight(
    a: &RenderArgs,
    spec: FigureSpec,
    view: &crate::view::settings::ViewSettings,
    prompt: String,
    model: Option<PathBuf>,
    remote: bool,
) -> Result<()> {
    let unsupported: Vec<&str> = [
        (spec.decoder != DecoderKind::LogitLens.name(), "a decoder other than logit_lens"),
        (spec.tuned_lens.is_some() || spec.jacobian_lens.is_some(), "--tuned-lens/--jacobian-lens"),
        (a.compare_decoder.is_some() || a.compare_prompt.is_some() || a.compare_prompt_file.is_some() || a.compare_model.is_some(), "--compare-…"),
        (spec.truncate_left, "--truncate"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n)
    .collect();
    if !unsupported.is_empty() {
        bail!("--engine nnsight does not take {} (yet): draw them with the local engine", unsupported.join(", "));
    }
    let Some(model) = model.as_ref().and_then(|m| m.to_str()).map(str::to_string) else {
        bail!("--engine nnsight needs --model: a Hugging Face folder or hub id (org/name)");
    };
    let progress = super::interrupt::watched(Progress::default());
    let tokenizer = crate::session::remote::tokenizer_of(&model, &progress)?;
    let ids = tokenizer.encode(&prompt)?;
    let pinned = match &spec.rank_of {
        RankOf::Token(t) => vec![tokenizer.token_id(t).ok_or_else(|| anyhow!("--rank-of {t:?} is not a single token of this model"))?],
        _ => Vec::new(),
    };
    let opts = LensOptions { subblocks: spec.subblocks, pinned, ..LensOptions::default() };
    let engine = super::args::EngineArgs { engine: "nnsight".into(), remote, python: a.engine.python.clone() };
    let report = lens_model::remote::nnsight::lens_nnsight(&engine.nnsight_options(&model)?, &tokenizer, &ids, &opts, &progress)?;
    let vocab = ModelSummary::vocab_of_tokenizer(&tokenizer, report.model.d_vocab);
    let result = crate::session::report_file::result_of(report);
    let vm = ViewModel::build(&result, view, &vocab);
    let report = &result.report;
    let title = spec.title.clone().unwrap_or_else(|| vm.base_title(spec.metric()).unwrap_or_default().to_string());
    let text = |id: u32| token_display(report, &vocab, id);
    let scene = scene::build(&vm, report, &spec, &scene::subtitle(report), &text)
        .ok_or_else(|| anyhow!("nothing to draw: the position window or layer step leaves no cells"))?;
    let runs = vec![page_run("", &vm, report, &text)];
    let prov = Provenance::new(report, model, prompt, spec);
    output::write(&scene, &a.out, &title, &prov, &runs)?;
    eprintln!(
        "wrote {} ({:.1} x {:.1} in) from nnsight ({})",
        a.out.display(),
        scene.width / 72.0,
        scene.height / 72.0,
        if remote { "NDIF" } else { "this machine" }
    );
    Ok(())
}

/// Runs `render`.
pub fn run(ort_lib: Option<&std::path::Path>, a: &RenderArgs) -> Result<()> {
    Format::of(&a.out)?;
    crate::session::prompt::check_writable(&a.out)?;
    let (mut spec, recorded) = match &a.from {
        Some(fig) => {
            let prov = output::read_provenance(fig)?;
            (prov.spec.clone(), Some(prov))
        }
        None => (FigureSpec::default(), None),
    };
    let corpus_source = recorded.as_ref().and_then(|p| p.corpus.clone());
    if !a.corpus.is_empty() || corpus_source.is_some() {
        return render_corpus(a, spec, corpus_source);
    }
    apply(&mut spec, a)?;
    let view = spec.view_settings().map_err(|e| anyhow!(e))?;
    let prompt = match (&a.prompt, &a.prompt_file, &recorded) {
        (Some(t), _, _) => t.clone(),
        (None, Some(f), _) => crate::session::prompt::read_prompt_file(f)?,
        (None, None, Some(p)) => p.prompt.clone(),
        (None, None, None) => bail!("give the prompt with --prompt TEXT or --prompt-file FILE (or regenerate with --from FIG)"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let model_arg = a.model.model.clone().or_else(|| recorded.as_ref().map(|p| PathBuf::from(&p.model_path)));
    let recorded_engine = recorded.as_ref().and_then(|p| p.engine.clone()).filter(|e| e.name == "nnsight");
    if recorded_engine.is_some() || a.engine.nnsight()? {
        let remote = a.engine.remote || recorded_engine.is_some_and(|e| e.remote);
        return render_nnsight(a, spec, &view, prompt, model_arg, remote);
    }
    // A figure is a file anyone can send: say which paths it names before anything opens them
    // (the options override them).
    if let (Some(fig), Some(p)) = (&a.from, &recorded) {
        if a.model.model.is_none() {
            eprintln!("{} names the model {}; opening it (--model overrides)", fig.display(), p.model_path);
        }
        if let (None, Some(t)) = (&a.decoder.tuned_lens, &spec.tuned_lens) {
            eprintln!("{} names the tuned lens {t}; opening it (--tuned-lens overrides)", fig.display());
        }
        if let (None, Some(j)) = (&a.decoder.jacobian_lens, &spec.jacobian_lens) {
            eprintln!("{} names the J-lens {j}; opening it (--jacobian-lens overrides)", fig.display());
        }
    }
    let mut engine = super::open_engine(ort_lib, model_arg.as_deref(), a.model.device)?;
    if let Some(p) = &recorded
        && a.model.model.is_none()
        && p.model_sha256.is_some()
        && p.model_sha256 != engine.bundle.weights_sha256
    {
        bail!("the model at {} is not the one the figure was made with (weights sha256 differs); pass --model", p.model_path);
    }
    super::attach_tuned_lens(&mut engine, spec.tuned_lens.as_deref().map(std::path::Path::new))?;
    if let Some(file) = crate::session::engine::attach_jacobian_lens(
        &mut engine,
        spec.jacobian_lens.as_deref().map(std::path::Path::new),
        model_arg.as_deref(),
        &super::stderr_progress(),
    )? {
        // The figure names the file that decoded it (a published lens: its place in the hub cache).
        spec.jacobian_lens = Some(file.display().to_string());
    }
    let pinned = match &spec.rank_of {
        RankOf::Token(t) => vec![engine.tokenizer.token_id(t).ok_or_else(|| anyhow!("--rank-of {t:?} is not a single token of this model"))?],
        _ => Vec::new(),
    };
    let decoder = DecoderKind::parse(&spec.decoder).ok_or_else(|| anyhow!("unknown decoder {:?} in the figure settings", spec.decoder))?;
    let opts = LensOptions { subblocks: spec.subblocks, pinned, decoder, ..LensOptions::default() };
    let compare = compare_source(a, recorded.as_ref())?;
    if spec.view == FigureView::GradXAct && compare.is_some() {
        bail!("gradient × activation (--view grad-x-act) draws one run: leave out --compare-*");
    }
    let with = compare.as_ref().map(|c| crate::session::compare::CompareWith::from_parts(&c.varied, &c.with)).transpose()?;
    // The one run path (the app's worker and `lens` run the same); A − B by the view model the
    // app paints.
    let req = crate::session::run::RunRequest {
        text: &prompt,
        opts,
        truncate_left: spec.truncate_left,
        compare: with.as_ref(),
        pieces: crate::session::run::Pieces::Whole,
        steer: None,
    };
    let mut other = super::OpenedOnce::new(ort_lib, a.model.device);
    let progress = super::interrupt::watched(Progress::default());
    let mut result = crate::session::run::run_prompt(&mut engine, &mut crate::session::run::RunCache::default(), &mut other, &req, &progress, &|_| {})?;
    super::note_truncation(result.report.truncated);
    if spec.view == FigureView::GradXAct {
        let g = lens_model::analyses::grad_x_act::of_report(&mut engine, a.model.device, &result.report, &progress).context("gradient × activation")?;
        std::sync::Arc::make_mut(&mut result).report.gradient_x_activation = Some(g);
    }
    let vocab = ModelSummary::vocab_of(&engine);
    let vm = ViewModel::build(&result, &view, &vocab);
    let report = &result.report;
    let panel_title = vm.base_title(spec.metric()).unwrap_or_default().to_string();
    let title = spec.title.clone().unwrap_or(panel_title);
    let text = |r: &lens_model::LensReport, id: u32| token_display(r, &vocab, id);
    let (scene, runs) = if result.compare.is_some() {
        crate::figure::compare::compare_figure(&vm, &result, &spec, &title, &text)?
    } else {
        let scene = scene::build(&vm, report, &spec, &scene::subtitle(report), &|id| text(report, id))
            .ok_or_else(|| anyhow!("nothing to draw: the position window or layer step leaves no cells"))?;
        (scene, vec![page_run("", &vm, report, &|id| text(report, id))])
    };
    let model_path = engine.bundle.dir.canonicalize().unwrap_or_else(|_| engine.bundle.dir.clone());
    let mut prov = Provenance::new(report, model_path.display().to_string(), prompt, spec);
    prov.compare = compare;
    output::write(&scene, &a.out, &title, &prov, &runs)?;
    eprintln!("wrote {} ({:.1} x {:.1} in)", a.out.display(), scene.width / 72.0, scene.height / 72.0);
    Ok(())
}
