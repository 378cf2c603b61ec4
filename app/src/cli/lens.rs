//! `logit-lens lens`: the lens on one prompt, written as a report (JSON, `.npz`), or two runs and
//! A − B (`--compare-…`, `compare@1`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;

use crate::session::compare::CompareWith;
use crate::session::run::{RunCache, RunRequest, run_prompt};

use super::{OpenedOnce, interrupt, note_truncation, open_engine, pinned_ids, token_groups, write_report_files};

/// Options of `lens`.
#[derive(Args, Debug)]
pub struct LensArgs {
    /// --model and --device.
    #[command(flatten)]
    model: super::args::ModelArgs,
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
    /// --decoder, --tuned-lens and --jacobian-lens.
    #[command(flatten)]
    decoder: super::args::DecoderArgs,
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
    /// What computes the lens: kernel (the streaming CPU kernel), graph (the lens as an ONNX graph
    /// on the forward pass's execution provider) or auto (the graph on a GPU provider).
    #[arg(long, default_value = "auto", value_parser = super::args::parse_lens_path)]
    lens_path: lens_model::lens::graph::LensPath,
    /// Keep the last n_ctx tokens of a prompt that is too long (`left`), instead of refusing it.
    #[arg(long = "truncate", value_name = "left", value_parser = super::args::parse_truncate)]
    truncate_left: Option<bool>,
    /// Also compute gradient × activation per (site, position) for the attribution's targets
    /// (the final top-1 and the next token), through the model's backward graph.
    #[arg(long, conflicts_with = "final_only")]
    grad_x_act: bool,
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
    #[arg(long, value_parser = super::args::parse_decoder)]
    compare_decoder: Option<DecoderKind>,
    /// Steer the run: add ALPHA × a vector to the output of block LAYER at every position.
    /// `LAYER=FILE.npy*ALPHA` (a float32/float64 vector of d_model values) or
    /// `LAYER=TEXT_A|TEXT_B*ALPHA` (block LAYER's output at the last position of A minus B's).
    /// The report is the steered run's lens, with `steering` saying what was added.
    #[arg(long, value_name = "LAYER=SOURCE*ALPHA", value_parser = lens_model::analyses::steer::SteerSpec::parse)]
    steer: Option<lens_model::analyses::steer::SteerSpec>,
    /// With --steer: also the greedy continuation of N tokens, steered and not (in the report's
    /// `steering` and on stderr).
    #[arg(long, default_value_t = 0, requires = "steer")]
    generate: usize,
    /// --engine, --remote and --python.
    #[command(flatten)]
    engine: super::args::EngineArgs,
}

/// Runs `lens`.
pub fn run(ort_lib: Option<&Path>, args: LensArgs) -> Result<()> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => crate::session::prompt::read_prompt_file(f)?,
        _ => bail!("give the prompt with --prompt TEXT or --prompt-file FILE"),
    };
    if text.is_empty() {
        bail!("the prompt is empty");
    }
    let truncate_left = args.truncate_left.unwrap_or(false);
    if args.engine.nnsight()? {
        return super::remote::lens(&args.model, &text, &args.nnsight_parts());
    }
    let decoder = args.decoder.kind();
    for out in args.json.iter().chain(&args.npz) {
        crate::session::prompt::check_writable(out)?;
    }
    let mut engine = open_engine(ort_lib, args.model.model.as_deref(), args.model.device)?;
    args.decoder.attach(&mut engine, args.model.model.as_deref())?;
    let pinned = pinned_ids(&engine.tokenizer, &args.pin)?;
    let groups = token_groups(&engine.tokenizer, &args.group, &args.group_word)?;
    let path = args.lens_path;
    let opts = LensOptions { subblocks: args.subblocks, k: args.top_k, decoder, pinned, final_only: args.final_only, groups, path, ..LensOptions::default() };
    let with = if let Some(kind) = args.compare_decoder {
        Some(CompareWith::Decoder(kind))
    } else if let Some(m) = &args.compare_model {
        Some(CompareWith::Model(m.clone()))
    } else {
        match (&args.compare_prompt, &args.compare_prompt_file) {
            (Some(t), _) => Some(CompareWith::Prompt(t.clone())),
            (None, Some(f)) => Some(CompareWith::Prompt(crate::session::prompt::read_prompt_file(f)?)),
            (None, None) => None,
        }
    };
    if args.grad_x_act && (with.is_some() || args.steer.is_some()) {
        bail!("--grad-x-act computes one plain run: drop the --compare-… and --steer options");
    }
    if with.is_some() {
        if args.npz.is_some() {
            bail!("--npz holds one report; with a --compare-… option write --json");
        }
        if args.json.is_none() {
            bail!("a comparison is written with --json OUT");
        }
    }
    let progress = interrupt::watched(Progress::default());
    let steering = args.steer.as_ref().map(|s| lens_model::analyses::steer::steering_of(&mut engine, s, &progress)).transpose()?;
    // The one run path (the app's worker runs the same).
    let req = RunRequest { text: &text, opts, truncate_left, compare: with.as_ref(), pieces: crate::session::run::Pieces::Whole, steer: steering.as_ref() };
    let mut other = OpenedOnce::new(ort_lib, args.model.device);
    let mut result = run_prompt(&mut engine, &mut RunCache::default(), &mut other, &req, &progress, &|_| {})?;
    if let (Some(s), true) = (&steering, args.generate > 0) {
        let ids = engine.tokenize(&text, truncate_left)?;
        let steered = lens_model::analyses::steer::greedy(&mut engine, &ids, Some(s), args.generate, &progress)?;
        let plain = lens_model::analyses::steer::greedy(&mut engine, &ids, None, args.generate, &progress)?;
        let show = |t: &[u32]| String::from_utf8_lossy(&t.iter().flat_map(|&id| engine.tokenizer.token_bytes(id)).collect::<Vec<u8>>()).into_owned();
        eprintln!("steered   ({} × {} at block {}): {:?}", s.alpha, s.source, s.layer, show(&steered));
        eprintln!("unsteered: {:?}", show(&plain));
        let (st, pl) = (engine.tokenizer.tokens(&steered), engine.tokenizer.tokens(&plain));
        if let Some(info) = std::sync::Arc::make_mut(&mut result).report.steering.as_mut() {
            info.continuation = st;
            info.unsteered_continuation = pl;
        }
    }
    note_truncation(result.report.truncated);
    if args.grad_x_act {
        let g = lens_model::analyses::grad_x_act::of_report(&mut engine, args.model.device, &result.report, &progress)?;
        std::sync::Arc::make_mut(&mut result).report.gradient_x_activation = Some(g);
    }
    if let (Some(cmp), Some(json), Some(with)) = (&result.compare, &args.json, &with) {
        cmp.write_json(json).with_context(|| format!("cannot write the comparison to {}", json.display()))?;
        eprintln!(
            "compared two runs ({} varied; {} position pairs aligned by {}); wrote {}",
            with.varied(),
            cmp.alignment.len(),
            cmp.aligned_by.replace('_', " "),
            json.display()
        );
        return Ok(());
    }
    let report = &result.report;
    let wrote = write_report_files(report, args.json.as_deref(), args.npz.as_deref(), &engine.tokenizer)?;
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

impl LensArgs {
    /// What `--engine nnsight` takes of these options; the ones it does not support are refused.
    fn nnsight_parts(&self) -> super::remote::RemoteLens {
        let unsupported = [
            (self.final_only, "--final-only"),
            (self.decoder.kind() != DecoderKind::LogitLens, "--decoder other than logit_lens"),
            (
                self.compare_prompt.is_some() || self.compare_prompt_file.is_some() || self.compare_model.is_some() || self.compare_decoder.is_some(),
                "--compare-…",
            ),
            (self.steer.is_some(), "--steer"),
            (self.truncate_left.is_some(), "--truncate"),
            (self.grad_x_act, "--grad-x-act"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name)
        .collect();
        super::remote::RemoteLens {
            subblocks: self.subblocks,
            engine: self.engine.clone(),
            top_k: self.top_k,
            pin: self.pin.clone(),
            group: self.group.clone(),
            group_word: self.group_word.clone(),
            json: self.json.clone(),
            npz: self.npz.clone(),
            unsupported,
        }
    }
}
