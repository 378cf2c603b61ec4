//! Command-line interface: no subcommand = the desktop app; `convert`, `lens`, `info`, `bench`,
//! `render`. Ctrl+C stops the running command cleanly ([`interrupt`]).

mod bench;
mod corpus;
mod fit_lens;
mod interrupt;

mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use lens_model::build::quant::WeightsChoice;
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;
use lens_model::run::runtime::{Device, init_runtime};
use lens_model::{LensEngine, LensOptions};

/// logit-lens: look inside GPT-2, GPT-Neo, CTRL, GPT-NeoX/Pythia and GPT-J models with the logit lens.
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
    #[arg(long, value_name = "R.json", conflicts_with_all = ["model", "prompt", "prompt_file", "file", "tuned_lens"])]
    open_report: Option<PathBuf>,
    /// Desktop app: save a PNG of the window once the first result is shown, then exit.
    #[arg(long, value_name = "OUT.png")]
    screenshot: Option<PathBuf>,
    /// Desktop app: execution provider (auto, cpu, cuda, directml).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Desktop app: the decoder to start with (logit_lens, tuned_lens, last_block, last_mlp, raw).
    #[arg(long)]
    decoder: Option<String>,
    /// Desktop app: a tuned lens to open (a tuned-lens folder: config.json + params.pt); starts
    /// with the tuned-lens decoder unless --decoder says otherwise.
    #[arg(long, value_name = "DIR")]
    tuned_lens: Option<PathBuf>,
    /// Desktop app: start with the sub-block rows shown.
    #[arg(long)]
    subblocks: bool,
    /// Desktop app: initial window size, WIDTHxHEIGHT in points (e.g. 1280x800).
    #[arg(long, value_name = "WxH")]
    window_size: Option<String>,
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
    Convert {
        /// Folder with config.json, model.safetensors and tokenizer.json (or vocab.json + merges.txt).
        hf_dir: PathBuf,
        /// Output bundle folder (must not exist or be empty).
        bundle_dir: PathBuf,
    },
    /// Run the logit lens on a prompt and write the report as JSON.
    Lens(LensArgs),
    /// Print the runtime library, execution providers and (with --model) the model's shape.
    Info {
        /// A bundle or Hugging Face folder (default: the demo model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Execution provider to try.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Benchmark load, forward and lens; compare the lens's GFLOP/s with a plain GEMM of its shape.
    Bench(bench::BenchArgs),
    /// Render a lens view as a figure (SVG, PDF or PNG) without a window.
    Render(render::RenderArgs),
    /// The lens over whole texts: per-site means with 95% bootstrap intervals (JSON, CSV).
    Corpus(corpus::CorpusArgs),
    /// Fit a tuned lens on texts and save it in the tuned-lens package's format (config.json, params.pt).
    FitLens(fit_lens::FitLensArgs),
    /// Benchmark the UI: CPU time per frame of a synthetic GPT-2-XL-sized grid.
    #[command(hide = true)]
    BenchUi(crate::session::start::BenchUiArgs),
}

#[derive(Args, Debug)]
struct LensArgs {
    /// A bundle or Hugging Face folder (default: the demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// A UTF-8 text file holding the prompt (at most 10 MB).
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Add the `.attn` (resid_mid) rows.
    #[arg(long)]
    subblocks: bool,
    /// Only the final site (the model's own predictions; e.g. for evaluating its loss). kl_to_input is null.
    #[arg(long, conflicts_with = "subblocks")]
    final_only: bool,
    /// Number of top tokens per cell.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Decoder: logit_lens (final norm + W_U), tuned_lens (needs --tuned-lens), last_block (the
    /// last block, then the logit lens), last_mlp (x + the last block's MLP, then the logit lens)
    /// or raw (W_U only). Default: tuned_lens with --tuned-lens, else logit_lens.
    #[arg(long)]
    decoder: Option<String>,
    /// A tuned lens (a tuned-lens folder: config.json + params.pt or params.safetensors) for the
    /// tuned_lens decoder (also in --compare-decoder tuned_lens).
    #[arg(long, value_name = "DIR")]
    tuned_lens: Option<PathBuf>,
    /// Tokens to follow through the layers (text of a single token, e.g. " plasma"); repeatable.
    #[arg(long = "pin")]
    pin: Vec<String>,
    /// A token group followed through the layers: `NAME=TEXT|TEXT|…` (each TEXT one token, e.g.
    /// 'Paris= Paris|Paris| paris'); the report gets its summed probability and best rank.
    /// Repeatable.
    #[arg(long = "group", value_name = "NAME=TEXT|TEXT")]
    group: Vec<String>,
    /// A token group of a word's single-token variants (leading space, capitals), named after
    /// the word; repeatable.
    #[arg(long = "group-word", value_name = "WORD")]
    group_word: Vec<String>,
    /// auto, cpu, cuda or directml.
    #[arg(long, default_value = "auto")]
    device: String,
    /// What computes the lens: kernel (the streaming CPU kernel), graph (the lens as an ONNX graph
    /// on the forward pass's execution provider) or auto (the graph on a GPU provider).
    #[arg(long, default_value = "auto")]
    lens_path: String,
    /// Keep the last n_ctx tokens of a prompt that is too long (`left`), instead of refusing it.
    #[arg(long, value_name = "left")]
    truncate: Option<String>,
    /// Output JSON path.
    #[arg(long, required_unless_present = "npz")]
    json: Option<PathBuf>,
    /// Output .npz path (numpy: fixed dtypes, NaN / -1 where unknown, token strings).
    #[arg(long)]
    npz: Option<PathBuf>,
    /// Compare with the same run on another prompt: --json then holds both reports and A − B
    /// (`logit-lens/compare@1`).
    #[arg(long, conflicts_with_all = ["compare_prompt_file", "compare_model", "compare_decoder"])]
    compare_prompt: Option<String>,
    /// Compare with the same run on the prompt in this file.
    #[arg(long, conflicts_with_all = ["compare_model", "compare_decoder"])]
    compare_prompt_file: Option<PathBuf>,
    /// Compare with the same run through another model of the same tokenizer and depth.
    #[arg(long, conflicts_with = "compare_decoder")]
    compare_model: Option<PathBuf>,
    /// Compare with the same run under another decoder.
    #[arg(long)]
    compare_decoder: Option<String>,
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

/// The decoder of `--decoder` (default: the tuned lens when `--tuned-lens` is given, else the
/// logit lens).
pub fn decoder_choice(arg: Option<&str>, tuned_lens: bool) -> Result<DecoderKind> {
    match arg {
        None if tuned_lens => Ok(DecoderKind::TunedLens),
        None => Ok(DecoderKind::LogitLens),
        Some(d) => {
            DecoderKind::parse(d).ok_or_else(|| anyhow::anyhow!("unknown decoder {d:?}; use one of {}", DecoderKind::ALL.map(DecoderKind::name).join(", ")))
        }
    }
}

pub use crate::session::engine::attach_tuned_lens;

/// Parses `--lens-path`.
pub fn lens_path(s: &str) -> Result<lens_model::lens::graph::LensPath> {
    lens_model::lens::graph::LensPath::parse(s).ok_or_else(|| anyhow::anyhow!("--lens-path {s:?}: use auto, kernel or graph"))
}

fn device(s: &str) -> Result<Device> {
    Ok(s.parse::<Device>()?)
}

/// ` (block 32, zero points, MatMulNBits)` for a quantized bundle; empty for f32.
fn weights_detail(b: &lens_model::run::bundle::Bundle) -> String {
    match b.weights.spec() {
        None => " (exact)".into(),
        Some(_) => {
            let get = |k: &str| b.metadata.get(k).cloned().unwrap_or_else(|| "?".into());
            let zp = if get("lens.weights.zero_points") == "true" { "zero points" } else { "symmetric" };
            format!(" (block-wise MatMulNBits: block {}, {zp}, accuracy level {})", get("lens.weights.block_size"), get("lens.weights.accuracy_level"))
        }
    }
}

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
        None => gui(crate::session::start::GuiRequest::Window(crate::session::start::GuiOptions {
            model: cli.model,
            prompt: cli.prompt,
            prompt_file: cli.prompt_file.or(cli.file),
            screenshot: cli.screenshot,
            device: device(&cli.device)?,
            ort_lib: ort_lib.map(Path::to_path_buf),
            piece_positions: None,
            decoder: match cli.decoder.as_deref() {
                None if cli.tuned_lens.is_none() => None,
                d => Some(decoder_choice(d, cli.tuned_lens.is_some())?),
            },
            tuned_lens: cli.tuned_lens,
            subblocks: cli.subblocks,
            window_size: match cli.window_size.as_deref() {
                None => None,
                Some(s) => Some(window_size(s)?),
            },
            weights: cli.weights,
            open_report: cli.open_report,
        })),
        Some(Command::Convert { hf_dir, bundle_dir }) => {
            let (format, reason) = if lens_model::build::convert::is_hf_checkpoint(&hf_dir) {
                lens_model::run::resolve::choose_weights(&hf_dir, cli.weights)?
            } else {
                (lens_model::build::quant::WeightFormat::F32, None)
            };
            if let Some(r) = reason {
                eprintln!("{r}");
            }
            let summary = lens_model::build::convert::convert_hf_checkpoint_as(&hf_dir, &bundle_dir, format, &stderr_progress())?;
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
        Some(Command::Info { model, device: dev }) => {
            let rt = init_runtime(ort_lib)?;
            println!("ONNX Runtime {} at {}", rt.version, rt.library.display());
            println!("  found by: {}", rt.found_by);
            println!("  providers compiled in: {}", rt.compiled_providers.join(", "));
            let engine = open_engine_notes(ort_lib, model.as_deref(), device(&dev)?, false)?;
            let s = &engine.bundle.shape;
            println!("model {} ({})", engine.bundle.name, engine.bundle.dir.display());
            println!(
                "  n_layers {}, d_model {}, n_heads {}, d_mlp {}, d_vocab {}, n_ctx {}, eps {:e}",
                s.n_layers, s.d_model, s.n_heads, s.d_mlp, s.d_vocab, s.n_ctx, s.eps
            );
            println!("  family {}, {} residual, parameters {}", engine.bundle.family, engine.bundle.residual.name(), engine.bundle.n_params());
            println!("  weights {}{}", engine.bundle.weights.name(), weights_detail(&engine.bundle));
            if let Some(h) = &engine.bundle.weights_sha256 {
                println!("  weights sha256 {h}");
            }
            println!("execution provider: {}", engine.provider.active);
            println!("lens: {} (auto; --lens-path kernel|graph chooses)", engine.lens_path_label(lens_model::lens::graph::LensPath::Auto));
            for n in &engine.provider.notes {
                println!("  {n}");
            }
            Ok(())
        }
        Some(Command::Lens(args)) => lens(ort_lib, args),
        Some(Command::Bench(args)) => bench::run(ort_lib, &args),
        Some(Command::Render(args)) => render::run(ort_lib, &args),
        Some(Command::Corpus(args)) => corpus::run(ort_lib, &args),
        Some(Command::FitLens(args)) => fit_lens::run(ort_lib, &args),
        Some(Command::BenchUi(args)) => gui(crate::session::start::GuiRequest::BenchUi(args)),
    }
}

fn lens(ort_lib: Option<&Path>, args: LensArgs) -> Result<()> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => crate::session::prompt::read_prompt_file(f)?,
        _ => bail!("give the prompt with --prompt TEXT or --prompt-file FILE"),
    };
    if text.is_empty() {
        bail!("the prompt is empty");
    }
    let truncate_left = match args.truncate.as_deref() {
        None => false,
        Some("left") => true,
        Some(other) => bail!("--truncate {other:?} is not supported; use --truncate left"),
    };
    let decoder = decoder_choice(args.decoder.as_deref(), args.tuned_lens.is_some())?;
    for out in args.json.iter().chain(&args.npz) {
        crate::session::prompt::check_writable(out)?;
    }
    let mut engine = open_engine(ort_lib, args.model.as_deref(), device(&args.device)?)?;
    attach_tuned_lens(&mut engine, args.tuned_lens.as_deref())?;
    let (ids, truncated) = engine.tokenize_with(&text, truncate_left)?;
    let mut pinned = Vec::new();
    for p in &args.pin {
        match engine.tokenizer.token_id(p) {
            Some(id) => pinned.push(id),
            None => bail!("--pin {p:?} is not a single token of this model's vocabulary"),
        }
    }
    let groups = token_groups(&engine.tokenizer, &args.group, &args.group_word)?;
    let path = lens_path(&args.lens_path)?;
    let opts = LensOptions { subblocks: args.subblocks, k: args.top_k, decoder, pinned, final_only: args.final_only, groups, path, ..LensOptions::default() };
    let mut report = engine.run_ids(&ids, &opts, &interrupt::watched(Progress::default()))?;
    report.truncated = truncated;
    note_truncation(truncated);
    let comparing = args.compare_prompt.is_some() || args.compare_prompt_file.is_some() || args.compare_model.is_some() || args.compare_decoder.is_some();
    if comparing {
        if args.npz.is_some() {
            bail!("--npz holds one report; with a --compare-… option write --json");
        }
        let Some(json) = &args.json else { bail!("a comparison is written with --json OUT") };
        let with = if let Some(d) = &args.compare_decoder {
            let Some(kind) = DecoderKind::parse(d) else { bail!("--compare-decoder {d:?}: use one of {}", DecoderKind::ALL.map(DecoderKind::name).join(", ")) };
            crate::session::compare::CompareWith::Decoder(kind)
        } else if let Some(m) = &args.compare_model {
            crate::session::compare::CompareWith::Model(m.clone())
        } else {
            crate::session::compare::CompareWith::Prompt(match (&args.compare_prompt, &args.compare_prompt_file) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => crate::session::prompt::read_prompt_file(f)?,
                (None, None) => bail!("internal: no comparison given"),
            })
        };
        let varied = with.varied();
        let mut other = OpenedOnce::new(ort_lib, device(&args.device)?);
        let progress = interrupt::watched(Progress::default());
        let cmp = crate::session::compare::compare_with(&mut engine, &mut other, &text, &ids, None, &report, &opts, &with, truncate_left, &progress)?;
        cmp.write_json(json).with_context(|| format!("cannot write the comparison to {}", json.display()))?;
        eprintln!(
            "compared two runs ({varied} varied; {} position pairs aligned by {}); wrote {}",
            cmp.alignment.len(),
            cmp.aligned_by.replace('_', " "),
            json.display()
        );
        return Ok(());
    }
    let mut wrote = Vec::new();
    if let Some(json) = &args.json {
        report.write_json(json).with_context(|| format!("cannot write the report to {}", json.display()))?;
        wrote.push(json.display().to_string());
    }
    if let Some(npz) = &args.npz {
        let text = |id: u32| String::from_utf8_lossy(&engine.tokenizer.token_bytes(id)).into_owned();
        lens_model::output::npz::write_report(&report, npz, &text).with_context(|| format!("cannot write the report to {}", npz.display()))?;
        wrote.push(npz.display().to_string());
    }
    eprintln!(
        "{} tokens x {} sites: forward {:.0} ms ({}, {} weights), lens {:.0} ms ({}); wrote {}",
        report.n_pos(),
        report.sites.len(),
        report.run.forward_ms,
        report.run.provider,
        report.run.weights,
        report.run.lens_ms,
        report.run.lens_path,
        wrote.join(", ")
    );
    Ok(())
}
