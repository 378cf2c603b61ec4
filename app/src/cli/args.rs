//! The argument groups every command shares, declared once and flattened into each command's
//! options, with typed value parsers (a bad value is clap's usage error naming the choices).

use std::path::PathBuf;

use clap::Args;
use lens_model::lens::kernel::DecoderKind;
use lens_model::run::runtime::Device;

/// `--model` and `--device`.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// A bundle, a Hugging Face checkpoint folder or a hub id `org/name` (default: the demo model;
    /// for `render --from`, the one the figure records).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Execution provider: auto, cpu, cuda or directml.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: Device,
}

/// `--engine`, `--remote` and `--python`: what runs the model.
#[derive(Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// What runs the model: `local` (this program, ONNX Runtime) or `nnsight` (a Python
    /// environment with torch and nnsight: --model is then a Hugging Face folder or hub id as
    /// nnsight loads it; the lens is reduced inside the trace and only the rows come back).
    #[arg(long, default_value = "local", value_parser = ["local", "nnsight"])]
    pub engine: String,
    /// With --engine nnsight: run on NDIF (the National Deep Inference Fabric; NDIF_API_KEY in the
    /// environment, NDIF_HOST for another NDIF server) instead of this machine.
    #[arg(long)]
    pub remote: bool,
    /// With --engine nnsight: the Python to run (else LOGIT_LENS_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

impl EngineArgs {
    /// Whether the nnsight engine runs the model; `--remote`/`--python` without it are an error.
    pub fn nnsight(&self) -> anyhow::Result<bool> {
        if self.engine == "nnsight" {
            return Ok(true);
        }
        if self.remote || self.python.is_some() {
            anyhow::bail!("--remote and --python belong to --engine nnsight");
        }
        Ok(false)
    }

    /// The nnsight engine's options for the model `model` (a folder or hub id).
    pub fn nnsight_options(&self, model: &str) -> anyhow::Result<lens_model::remote::nnsight::NnsightOptions> {
        Ok(lens_model::remote::nnsight::NnsightOptions {
            model: model.to_string(),
            remote: self.remote,
            python: lens_model::remote::nnsight::python_of(self.python.as_deref()),
            script: lens_model::remote::nnsight::find_script()?,
        })
    }
}

/// `--decoder`, `--tuned-lens` and `--jacobian-lens`.
#[derive(Args, Debug, Clone, Default)]
pub struct DecoderArgs {
    /// Decoder: logit_lens (final norm + W_U), tuned_lens (needs --tuned-lens), jacobian_lens
    /// (needs --jacobian-lens), last_block (the last block, then the logit lens), last_mlp (x + the
    /// last block's MLP, then the logit lens) or raw (W_U only). Default: jacobian_lens with
    /// --jacobian-lens, else tuned_lens with --tuned-lens, else logit_lens.
    #[arg(long, value_parser = parse_decoder)]
    pub decoder: Option<DecoderKind>,
    /// A tuned lens (a tuned-lens folder: config.json + params.pt or params.safetensors) for the
    /// tuned_lens decoder.
    #[arg(long, value_name = "DIR")]
    pub tuned_lens: Option<PathBuf>,
    /// A J-lens (a .pt file as TransformerLens's JacobianLens.save writes it, or a fit
    /// checkpoint) for the jacobian_lens decoder; `published` fetches the one published for
    /// --model (a hub id such as google/gemma-2-2b) into the Hugging Face cache.
    #[arg(long, value_name = "FILE")]
    pub jacobian_lens: Option<PathBuf>,
}

impl DecoderArgs {
    /// The decoder asked for: `--decoder`, else the J-lens when `--jacobian-lens` is given, else
    /// the tuned lens when `--tuned-lens` is given, else the logit lens.
    pub fn kind(&self) -> DecoderKind {
        self.decoder.unwrap_or(if self.jacobian_lens.is_some() {
            DecoderKind::JacobianLens
        } else if self.tuned_lens.is_some() {
            DecoderKind::TunedLens
        } else {
            DecoderKind::LogitLens
        })
    }

    /// Opens the lenses asked for on `engine` (of the model `model` names): the tuned lens and
    /// the J-lens. Returns the J-lens's file.
    pub fn attach(&self, engine: &mut lens_model::LensEngine, model: Option<&std::path::Path>) -> anyhow::Result<Option<PathBuf>> {
        crate::session::engine::attach_tuned_lens(engine, self.tuned_lens.as_deref())?;
        crate::session::engine::attach_jacobian_lens(engine, self.jacobian_lens.as_deref(), model, &crate::cli::stderr_progress())
    }
}

/// Parses `--device`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    s.parse::<Device>().map_err(|e| e.to_string())
}

/// Parses a decoder name (`--decoder`, `--compare-decoder`).
pub fn parse_decoder(s: &str) -> Result<DecoderKind, String> {
    DecoderKind::parse(s).ok_or_else(|| format!("unknown decoder {s:?}; use one of {}", DecoderKind::ALL.map(DecoderKind::name).join(", ")))
}

/// Parses `--lens-path` (auto, kernel or graph).
pub fn parse_lens_path(s: &str) -> Result<lens_model::lens::graph::LensPath, String> {
    lens_model::lens::graph::LensPath::parse(s).ok_or_else(|| format!("--lens-path {s:?}: use auto, kernel or graph"))
}

/// Parses `--truncate` (only `left` exists).
pub fn parse_truncate(s: &str) -> Result<bool, String> {
    match s {
        "left" => Ok(true),
        other => Err(format!("--truncate {other:?} is not supported; use --truncate left")),
    }
}
