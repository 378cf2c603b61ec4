//! The one rule for run B of a comparison, used by the app's worker, `lens` and `render`: what
//! varies ([`CompareWith`]), how B's tokens are made, what is refused, and A − B
//! ([`lens_model::analyses::compare::compare`]).
//!
//! * another **decoder**: A's tokens (and A's forward pass when the caller has it);
//! * another **prompt**: tokenized like A's (`truncate_left` too); its truncation is recorded;
//! * another **model**: A's prompt *text* tokenized by B's tokenizer must give A's ids, and the
//!   vocabularies must be the same size; a tuned lens is refused (it belongs to one model).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use lens_model::analyses::compare::CompareReport;
use lens_model::error::Progress;
use lens_model::lens::kernel::DecoderKind;
use lens_model::run::trace::ResidualTrace;
use lens_model::{LensEngine, LensOptions, LensReport};

/// What run B changes (also what the app remembers to compare with).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareWith {
    /// The same prompt under another decoder.
    Decoder(DecoderKind),
    /// Another prompt (e.g. a corrupted one), same model and decoder.
    Prompt(String),
    /// The same prompt through another model of the same tokenizer and depth (a folder or a
    /// Hugging Face id).
    Model(PathBuf),
    /// A corrupted prompt of the same length with one activation of run A (the clean run) put
    /// in: a cell of an activation-patching sweep.
    Patched(PatchCell),
}

/// One cell of an activation-patching sweep: the corrupted prompt, and which activation of the
/// clean run is put into it where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatchCell {
    /// The corrupted prompt.
    pub corrupt: String,
    /// Residual stream, attention or MLP output.
    pub kind: lens_model::analyses::patch::PatchKind,
    /// The site: for `resid` 0 = embed and `l + 1` = block `l`'s output; else the layer.
    pub site: usize,
    /// The position.
    pub pos: usize,
}

impl PatchCell {
    /// The site's label (`embed`, `3`, `3.attn`, `3.mlp`).
    pub fn site_label(&self) -> String {
        use lens_model::analyses::patch::PatchKind;
        match (self.kind, self.site.checked_sub(1)) {
            (PatchKind::Resid, None) => "embed".into(),
            (PatchKind::Resid, Some(l)) => l.to_string(),
            (k, _) => format!("{}.{}", self.site, k.name()),
        }
    }
}

impl CompareWith {
    /// What varies, as the compare report names it (`decoder`, `prompt`, `model`).
    pub fn varied(&self) -> &'static str {
        match self {
            Self::Decoder(_) => "decoder",
            Self::Prompt(_) => "prompt",
            Self::Model(_) => "model",
            Self::Patched(_) => "patch",
        }
    }

    /// A short label of run B (`raw`, `"…the prompt…"`).
    pub fn label(&self) -> String {
        match self {
            Self::Decoder(d) => d.label().to_string(),
            Self::Prompt(p) => {
                let short: String = p.chars().take(24).collect();
                if p.chars().count() > 24 { format!("\"{short}…\"") } else { format!("\"{short}\"") }
            }
            Self::Model(m) => m.file_name().map_or_else(|| m.display().to_string(), |n| n.to_string_lossy().into_owned()),
            Self::Patched(c) => format!("patched {} at {}", c.site_label(), c.pos),
        }
    }

    /// What a comparison records of it (`varied` and `with`, as a figure's provenance keeps them):
    /// the inverse of [`Self::from_parts`].
    pub fn to_parts(&self) -> (&'static str, String) {
        let with = match self {
            Self::Decoder(d) => d.name().to_string(),
            Self::Prompt(p) => p.clone(),
            Self::Model(m) => m.display().to_string(),
            Self::Patched(c) => serde_json::to_string(c).unwrap_or_default(),
        };
        (self.varied(), with)
    }

    /// Run B of a comparison file (opened without its models: a model is named by its name).
    pub fn of_report(c: &CompareReport) -> Option<Self> {
        match c.varied.as_str() {
            "decoder" => DecoderKind::parse(&c.b.decoder).map(Self::Decoder),
            "prompt" => Some(Self::Prompt(crate::session::report_file::prompt_of(&c.b))),
            "model" => Some(Self::Model(PathBuf::from(&c.b.model.name))),
            _ => None,
        }
    }

    /// From what a comparison records (`varied` and `with`, as a figure's provenance keeps them).
    pub fn from_parts(varied: &str, with: &str) -> Result<Self> {
        Ok(match varied {
            "decoder" => Self::Decoder(DecoderKind::parse(with).with_context(|| format!("unknown decoder {with:?} to compare with"))?),
            "prompt" => Self::Prompt(with.to_string()),
            "model" => Self::Model(PathBuf::from(with)),
            "patch" => Self::Patched(serde_json::from_str(with).with_context(|| format!("not a patched cell: {with:?}"))?),
            other => bail!("unknown comparison {other:?} (decoder, prompt, model or patch)"),
        })
    }
}

/// Where run B's model comes from: the app's worker keeps it open between runs; a command opens it
/// once.
pub trait OtherEngine {
    /// The engine of `model`, opened (or converted and opened) when it is not open yet.
    fn engine(&mut self, model: &Path, progress: &Progress) -> Result<&mut LensEngine>;
}

/// Run B of `with` against run A: A's prompt `text`, tokenized as `ids` and traced as `trace`, with
/// A's options `opts`.
#[allow(clippy::too_many_arguments)]
fn run_b(
    engine: &mut LensEngine,
    other: &mut dyn OtherEngine,
    text: &str,
    ids: &[u32],
    trace: &ResidualTrace,
    opts: &LensOptions,
    with: &CompareWith,
    truncate_left: bool,
    progress: &Progress,
) -> Result<LensReport> {
    Ok(match with {
        CompareWith::Decoder(d) => engine.lens(ids, trace, &LensOptions { decoder: *d, ..opts.clone() }, progress)?,
        CompareWith::Prompt(p) => {
            let (ids_b, truncated) = engine.tokenize_with(p, truncate_left).context("the prompt to compare with")?;
            let mut b = engine.run_ids(&ids_b, opts, progress)?;
            b.truncated = truncated;
            b
        }
        CompareWith::Model(m) => {
            let (vocab, name) = (engine.bundle.shape.d_vocab, m.display().to_string());
            if matches!(opts.decoder, DecoderKind::TunedLens | DecoderKind::JacobianLens) {
                bail!("{name}: a {} belongs to one model; compare models under another decoder", opts.decoder.label());
            }
            let other = other.engine(m, progress)?;
            let ids_b = other.tokenize(text, truncate_left)?;
            if ids_b != ids || other.bundle.shape.d_vocab != vocab {
                bail!("{name}: its tokenizer splits the prompt differently (or its vocabulary differs); compare models that share a tokenizer");
            }
            other.run_ids(&ids_b, opts, progress)?
        }
        CompareWith::Patched(c) => {
            let corrupt = engine.tokenize(&c.corrupt, truncate_left).context("the corrupted prompt")?;
            if corrupt.len() != ids.len() {
                bail!("the prompt has {} tokens and the corrupted prompt {}: activation patching needs prompts of the same length", ids.len(), corrupt.len());
            }
            let n_layers = engine.bundle.shape.n_layers;
            let sites = if c.kind == lens_model::analyses::patch::PatchKind::Resid { n_layers + 1 } else { n_layers };
            if c.site >= sites || c.pos >= corrupt.len() {
                bail!(
                    "the patched cell {} at position {} is not in this model and prompt ({sites} sites, {} positions): run the sweep again",
                    c.site_label(),
                    c.pos,
                    corrupt.len()
                );
            }
            let sequential = engine.bundle.residual == lens_model::build::spec::Residual::Sequential;
            let base = engine.trace_for_patching(&corrupt, progress)?;
            let patch = lens_model::analyses::patch::patch_of(c.kind, c.site, c.pos, sequential, trace, &base)?;
            let patched = engine.run_patched(&base, &corrupt, &patch, progress)?;
            engine.lens(&corrupt, &patched, opts, progress)?
        }
    })
}

/// Run B and A − B (`a`: run A's whole report).
#[allow(clippy::too_many_arguments)]
pub fn compare_with(
    engine: &mut LensEngine,
    other: &mut dyn OtherEngine,
    text: &str,
    ids: &[u32],
    trace: &ResidualTrace,
    a: &LensReport,
    opts: &LensOptions,
    with: &CompareWith,
    truncate_left: bool,
    progress: &Progress,
) -> Result<CompareReport> {
    progress.report("comparison", 0.0);
    let b = run_b(engine, other, text, ids, trace, opts, with, truncate_left, progress)?;
    Ok(lens_model::analyses::compare::compare(a.clone(), b, with.varied())?)
}
