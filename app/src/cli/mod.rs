//! Command-line interface: no subcommand = the desktop app; `convert`, `lens`, `info`, `bench`,
//! `render`. Ctrl+C stops the running command cleanly ([`interrupt`]).

mod args;
mod bench;
mod convert;
mod corpus;
mod eval_lens;
mod fit_jlens;
mod fit_lens;
mod info;
mod interrupt;
mod lens;
mod patch;

mod remote;
mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lens_model::LensEngine;
use lens_model::build::quant::WeightsChoice;
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;
use lens_model::run::runtime::Device;

/// logit-lens: look inside GPT-2, GPT-Neo, CTRL, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen2/3 and Gemma 2/3 models with the logit lens.
#[derive(Parser, Debug)]
#[command(name = "logit-lens", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Desktop app: a prompt file to open (what the desktop entry passes for "Open with").
    #[arg(value_name = "PROMPT_FILE", conflicts_with_all = ["prompt", "prompt_file"])]
    file: Option<PathBuf>,
    /// Path of the ONNX Runtime library (else ORT_DYLIB_PATH, next to the executable, the cache, Python, PyPI).
    #[arg(long, global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// Desktop app: the model folder to open (a bundle or a Hugging Face checkpoint).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Desktop app: the prompt text.
    #[arg(long, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Desktop app: a UTF-8 prompt file (at most 10 MB).
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Desktop app: show a report (lens, comparison or corpus JSON) without its model; nothing
    /// is loaded or run.
    #[arg(long, value_name = "R.json", conflicts_with_all = ["model", "prompt", "prompt_file", "file", "tuned_lens", "jacobian_lens"])]
    open_report: Option<PathBuf>,
    /// Desktop app: save a PNG of the window once the first result is shown, then exit.
    #[arg(long, value_name = "OUT.png")]
    screenshot: Option<PathBuf>,
    /// Desktop app: execution provider (auto, cpu, cuda, directml).
    #[arg(long, default_value = "auto", value_parser = args::parse_device)]
    device: Device,
    /// Desktop app: the decoder to start with (logit_lens, tuned_lens, last_block, last_mlp, raw).
    #[arg(long, value_parser = args::parse_decoder)]
    decoder: Option<DecoderKind>,
    /// Desktop app: a tuned lens to open (a tuned-lens folder: config.json + params.pt); starts
    /// with the tuned-lens decoder unless --decoder says otherwise.
    #[arg(long, value_name = "DIR")]
    tuned_lens: Option<PathBuf>,
    /// Desktop app: a J-lens to open (a .pt file; `published`: the one published for --model);
    /// starts with the J-lens decoder unless --decoder says otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "tuned_lens")]
    jacobian_lens: Option<PathBuf>,
    /// Desktop app: start with the sub-block rows shown.
    #[arg(long)]
    subblocks: bool,
    /// Desktop app: initial window size, WIDTHxHEIGHT in points (e.g. 1280x800).
    #[arg(long, value_name = "WxH")]
    window_size: Option<String>,
    /// Desktop app: the panels' layout to start with: tabs, side-by-side or stacked.
    #[arg(long, value_parser = ["tabs", "side-by-side", "stacked"])]
    layout: Option<String>,
    /// Weights of the forward graph: f32 (exact), int8 or int4 (block-wise MatMulNBits codes of
    /// the block matrices), or auto (f32 when a run fits comfortably in the memory available now,
    /// else int8, else int4). A Hugging Face checkpoint is converted once per format; a bundle is
    /// used as it is.
    #[arg(long, global = true, default_value = "auto", value_parser = weights_choice)]
    weights: WeightsChoice,
    /// Print why GPU providers are not used when `--device auto` falls back to the CPU (`info`
    /// always shows it).
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing would only obscure clap's derive
enum Command {
    /// Convert a Hugging Face checkpoint folder (GPT-2, GPT-Neo, CTRL, GPT-NeoX, GPT-J, Llama, Mistral, Qwen2/3, Gemma 2/3) into a lens bundle.
    Convert(convert::ConvertArgs),
    /// Run the logit lens on a prompt and write the report as JSON.
    Lens(lens::LensArgs),
    /// Print the runtime library, execution providers and (with --model) the model's shape.
    Info(args::ModelArgs),
    /// Benchmark load, forward and lens; compare the lens's GFLOP/s with a plain GEMM of its shape.
    Bench(bench::BenchArgs),
    /// Render a lens view as a figure (SVG, PDF or PNG) without a window.
    Render(render::RenderArgs),
    /// The lens over whole texts: per-site means with 95% bootstrap intervals (JSON, CSV).
    Corpus(corpus::CorpusArgs),
    /// Fit a tuned lens on texts and save it in the tuned-lens package's format (config.json, params.pt).
    FitLens(fit_lens::FitLensArgs),
    /// Fit a J-lens natively (the reference estimator, through the model's backward graph) and
    /// save it in the format TransformerLens's JacobianLens.load reads.
    FitJacobianLens(fit_jlens::FitJlensArgs),
    /// Merge J-lenses fitted on parts of a corpus (the n_prompts-weighted mean).
    MergeJacobianLens(fit_jlens::MergeJlensArgs),
    /// The lens-quality suite: pass@k and rank per layer of the intermediates of prompt sets,
    /// every decoder side by side (JSON, CSV, a figure).
    EvalLens(eval_lens::EvalLensArgs),
    /// Activation patching: the clean prompt's activations put into the corrupted one, site by site
    /// and position by position; the effect on logit(target) − logit(against) (JSON, CSV).
    Patch(patch::PatchArgs),
    /// Benchmark the UI: CPU time per frame of a synthetic GPT-2-XL-sized grid.
    #[command(hide = true)]
    BenchUi(crate::session::start::BenchUiArgs),
}

/// Starts the desktop app for the CLI (the binary passes `gui::serve`; the CLI never imports the
/// GUI).
pub type GuiServer = fn(crate::session::start::GuiRequest) -> Result<()>;

/// Entry point of the binary: runs a CLI command, or hands the desktop app's requests to `gui`.
pub fn main(gui: GuiServer) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli, gui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|c| matches!(c.downcast_ref::<lens_model::LensError>(), Some(lens_model::LensError::Cancelled))) => {
            eprintln!("interrupted");
            ExitCode::from(interrupt::INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A progress sink that writes one line per stage and a percentage on stderr.
pub fn stderr_progress() -> Progress {
    let last = std::sync::Mutex::new((String::new(), -1i32));
    interrupt::watched(Progress::new(move |stage, f| {
        let pct = (f * 100.0) as i32;
        if let Ok(mut l) = last.lock()
            && (l.0 != stage || pct / 10 != l.1 / 10)
        {
            eprintln!("{stage}: {pct}%");
            *l = (stage.to_string(), pct);
        }
    }))
}

/// The ids of `--pin TEXT…`: each TEXT must be a single token of this tokenizer.
pub fn pinned_ids(tok: &lens_model::source::tokenizer::LensTokenizer, pins: &[String]) -> Result<Vec<u32>> {
    pins.iter()
        .map(|p| match tok.token_id(p) {
            Some(id) => Ok(id),
            None => bail!("--pin {p:?} is not a single token of this model's vocabulary"),
        })
        .collect()
}

/// Writes `report` to `--json` and `--npz` where given (token texts from `tok`) and returns the
/// paths written.
pub fn write_report_files(
    report: &lens_model::output::report::LensReport,
    json: Option<&Path>,
    npz: Option<&Path>,
    tok: &lens_model::source::tokenizer::LensTokenizer,
) -> Result<Vec<String>> {
    let mut wrote = Vec::new();
    if let Some(json) = json {
        report.write_json(json).with_context(|| format!("cannot write the report to {}", json.display()))?;
        wrote.push(json.display().to_string());
    }
    if let Some(npz) = npz {
        let text = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
        lens_model::output::npz::write_report(report, npz, &text).with_context(|| format!("cannot write the report to {}", npz.display()))?;
        wrote.push(npz.display().to_string());
    }
    Ok(wrote)
}

/// The token groups of `--group NAME=TEXT|TEXT|…` and `--group-word WORD`: every TEXT must be a
/// single token of this tokenizer (the error names the one that is not); repeats are dropped.
pub fn token_groups(tok: &lens_model::source::tokenizer::LensTokenizer, specs: &[String], words: &[String]) -> Result<Vec<lens_model::TokenGroup>> {
    use crate::session::groups::{group_of_tokens, group_of_word};
    let mut groups = Vec::new();
    for spec in specs {
        let Some((name, texts)) = spec.split_once('=') else { bail!("--group {spec:?}: expected NAME=TEXT|TEXT|…") };
        let name = name.trim();
        if name.is_empty() {
            bail!("--group {spec:?}: the group needs a name before '='");
        }
        groups.push(group_of_tokens(tok, name, texts).with_context(|| format!("--group {name}"))?);
    }
    for word in words {
        groups.push(group_of_word(tok, word).context("--group-word")?);
    }
    Ok(groups)
}

/// Parses `WIDTHxHEIGHT` (points).
fn window_size(s: &str) -> Result<[f32; 2]> {
    let parsed = s.split_once('x').and_then(|(w, h)| Some([w.trim().parse::<f32>().ok()?, h.trim().parse::<f32>().ok()?]));
    match parsed {
        Some([w, h]) if (400.0..=10000.0).contains(&w) && (300.0..=10000.0).contains(&h) => Ok([w, h]),
        _ => bail!("--window-size {s:?}: expected WIDTHxHEIGHT in points, e.g. 1280x800"),
    }
}

pub use crate::session::engine::attach_tuned_lens;

/// Parses `--weights`.
fn weights_choice(s: &str) -> std::result::Result<WeightsChoice, String> {
    s.parse::<WeightsChoice>().map_err(|e| e.to_string())
}

/// `--weights` of this process (set once from the command line).
static WEIGHTS: std::sync::OnceLock<WeightsChoice> = std::sync::OnceLock::new();

/// The `--weights` choice of this command.
pub fn weights() -> WeightsChoice {
    WEIGHTS.get().copied().unwrap_or_default()
}

/// Loads the runtime, resolves `--model` and opens the engine.
pub fn open_engine(ort_lib: Option<&Path>, model: Option<&Path>, device: Device) -> Result<LensEngine> {
    open_engine_notes(ort_lib, model, device, true)
}

/// Says on stderr what `--truncate left` dropped, if anything.
fn note_truncation(truncated: Option<lens_model::output::report::Truncation>) {
    if let Some(t) = truncated {
        eprintln!("the prompt has {} tokens; the first {} were dropped to fit the context (--truncate left)", t.original_tokens, t.dropped_tokens);
    }
}

/// `--verbose` was given.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Run B's model for a command (`--compare-model`): opened on first use.
pub struct OpenedOnce {
    ort_lib: Option<PathBuf>,
    device: Device,
    slot: Option<LensEngine>,
}

impl OpenedOnce {
    /// Nothing opened yet; `engine` opens the model with these settings.
    pub fn new(ort_lib: Option<&Path>, device: Device) -> Self {
        Self { ort_lib: ort_lib.map(Path::to_path_buf), device, slot: None }
    }
}

impl crate::session::compare::OtherEngine for OpenedOnce {
    fn engine(&mut self, model: &Path, _progress: &Progress) -> Result<&mut LensEngine> {
        if self.slot.is_none() {
            self.slot = Some(open_engine(self.ort_lib.as_deref(), Some(model), self.device)?);
        }
        self.slot.as_mut().ok_or_else(|| anyhow::anyhow!("internal: the model to compare with is not open"))
    }
}

/// [`open_engine`], printing the provider notes to stderr (with `--verbose`) or not (`info`
/// prints them itself). `--device auto` falling back to the CPU is the normal case on a machine
/// without a GPU and says nothing by default; an explicit device that cannot be used is an error.
fn open_engine_notes(ort_lib: Option<&Path>, model: Option<&Path>, device: Device, print_notes: bool) -> Result<LensEngine> {
    let (_, engine) = crate::session::engine::open(
        model,
        device,
        ort_lib,
        weights(),
        crate::session::engine::OpenProgress { resolve: &stderr_progress(), open: &Progress::default() },
        "cannot open the model",
    )?;
    if let Some(reason) = engine.weights_reason.as_ref().filter(|_| !engine.bundle.weights.is_exact() || VERBOSE.load(std::sync::atomic::Ordering::Relaxed)) {
        eprintln!("{reason}");
    }
    if print_notes && VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
        for note in &engine.provider.notes {
            eprintln!("note: {note}");
        }
    }
    Ok(engine)
}

fn run(cli: Cli, gui: GuiServer) -> Result<()> {
    VERBOSE.store(cli.verbose, std::sync::atomic::Ordering::Relaxed);
    let _ = WEIGHTS.set(cli.weights);
    if !matches!(cli.command, None | Some(Command::BenchUi(_))) {
        interrupt::install();
    }
    let ort_lib = cli.ort_lib.as_deref();
    match cli.command {
        None => gui(crate::session::start::GuiRequest::Window(Box::new(crate::session::start::GuiOptions {
            model: cli.model,
            prompt: cli.prompt,
            prompt_file: cli.prompt_file.or(cli.file),
            screenshot: cli.screenshot,
            device: cli.device,
            ort_lib: ort_lib.map(Path::to_path_buf),
            piece_positions: None,
            decoder: cli.decoder.or(cli.jacobian_lens.as_ref().map(|_| DecoderKind::JacobianLens)).or(cli.tuned_lens.as_ref().map(|_| DecoderKind::TunedLens)),
            tuned_lens: cli.tuned_lens,
            jacobian_lens: cli.jacobian_lens,
            subblocks: cli.subblocks,
            window_size: match cli.window_size.as_deref() {
                None => None,
                Some(s) => Some(window_size(s)?),
            },
            weights: cli.weights,
            open_report: cli.open_report,
            layout: cli.layout,
        }))),
        Some(Command::Convert(args)) => convert::run(&args, cli.weights),
        Some(Command::Info(args)) => info::run(ort_lib, &args),
        Some(Command::Lens(args)) => lens::run(ort_lib, args),
        Some(Command::Bench(args)) => bench::run(ort_lib, &args),
        Some(Command::Render(args)) => render::run(ort_lib, &args),
        Some(Command::Corpus(args)) => corpus::run(ort_lib, &args),
        Some(Command::EvalLens(args)) => eval_lens::run(ort_lib, &args),
        Some(Command::Patch(args)) => patch::run(ort_lib, &args),
        Some(Command::FitLens(args)) => fit_lens::run(ort_lib, &args),
        Some(Command::FitJacobianLens(args)) => fit_jlens::run(ort_lib, &args),
        Some(Command::MergeJacobianLens(args)) => fit_jlens::merge(&args),
        Some(Command::BenchUi(args)) => gui(crate::session::start::GuiRequest::BenchUi(args)),
    }
}
