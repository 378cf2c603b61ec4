//! What a figure was made from: model, prompt, settings, program. Stored in every figure file.

use serde::{Deserialize, Serialize};

use lens_model::output::report::LensReport;

use super::spec::FigureSpec;

/// Provenance of a figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Always `logit-lens/figure@1`.
    pub schema: String,
    /// Program and version.
    pub program: String,
    /// Model name.
    pub model_name: String,
    /// Where the model was loaded from (used by `render --from`).
    pub model_path: String,
    /// sha256 of the model's weights.
    pub model_sha256: Option<String>,
    /// The weights that computed it: `f32` (exact), `int8` or `int4` (absent in figures of
    /// releases before weight formats, which were all f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// The exact prompt.
    pub prompt: String,
    /// Figure settings.
    pub spec: FigureSpec,
    /// For a corpus figure: what it was drawn from (the lens figure fields are then its first
    /// report's model and an empty prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<CorpusSource>,
    /// For a comparison figure (A, B, A − B): what B varies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSource>,
    /// For a lens-quality figure (`eval-lens --figure`): the prompt-set files, the decoders and
    /// the lens files it was computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSource>,
    /// For an activation-patching figure (`patch --figure`): the prompts, tokens and sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchSource>,
    /// The engine that computed it, when not this program (`render --from` runs it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSource>,
}

/// The engine of a figure computed outside this program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSource {
    /// `nnsight`.
    pub name: String,
    /// On NDIF rather than the machine that drew it.
    pub remote: bool,
}

/// What an activation-patching figure was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchSource {
    /// The clean prompt.
    pub clean: String,
    /// The corrupted prompt.
    pub corrupt: String,
    /// The answer token's text.
    pub target: String,
    /// The token it is measured against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    /// The kind of sites drawn (`resid`, `attn`, `mlp`).
    pub sites: String,
    /// The figure draws attribution patching's first-order estimate, not the exact effects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimate: bool,
}

/// What a lens-quality figure was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSource {
    /// The prompt-set files.
    pub sets: Vec<String>,
    /// The decoders compared.
    pub decoders: Vec<String>,
    /// The tuned lens, if one was compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_lens: Option<String>,
    /// The J-lens, if one was compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jacobian_lens: Option<String>,
}

/// What the B run of a comparison figure differs by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompareSource {
    /// `decoder`, `prompt` or `model`.
    pub varied: String,
    /// B's decoder name, prompt text or model folder.
    pub with: String,
}

/// The corpus reports a corpus figure was drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusSource {
    /// The `corpus` JSON files, in drawing order.
    pub files: Vec<String>,
    /// Their legend labels.
    pub labels: Vec<String>,
    /// The statistic shown (`kl_to_final`, …).
    pub metric: String,
}

impl Provenance {
    /// The provenance of a figure of `report` (model from the report, this program's version).
    pub fn new(report: &LensReport, model_path: String, prompt: String, spec: FigureSpec) -> Self {
        Self {
            schema: SCHEMA.into(),
            program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
            model_name: report.model.name.clone(),
            model_path,
            model_sha256: report.model.weights_sha256.clone(),
            weights: Some(report.weights().to_string()),
            prompt,
            spec,
            corpus: None,
            compare: None,
            eval: None,
            patch: None,
            engine: report.run.engine.as_ref().map(|e| EngineSource { name: e.name.clone(), remote: e.location == "ndif" }),
        }
    }

    /// The provenance of a corpus figure drawn from `source`, whose first report is `first`.
    pub fn of_corpus(first: &lens_model::analyses::corpus::CorpusReport, source: CorpusSource, spec: FigureSpec) -> Self {
        Self {
            schema: SCHEMA.into(),
            program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
            model_name: first.model.name.clone(),
            model_path: String::new(),
            model_sha256: first.model.weights_sha256.clone(),
            weights: Some(first.run.weights().into()),
            prompt: String::new(),
            spec,
            corpus: Some(source),
            compare: None,
            eval: None,
            patch: None,
            engine: None,
        }
    }

    /// The provenance of a lens-quality figure of `report`, from the model at `model_path`.
    pub fn of_eval(report: &lens_model::analyses::lens_eval::EvalReport, model_path: String, source: EvalSource, spec: FigureSpec) -> Self {
        Self {
            schema: SCHEMA.into(),
            program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
            model_name: report.model.clone(),
            model_path,
            model_sha256: None,
            weights: Some(report.weights.clone()),
            prompt: String::new(),
            spec,
            corpus: None,
            compare: None,
            eval: Some(source),
            patch: None,
            engine: None,
        }
    }

    /// The provenance of an activation-patching figure of the model at `model_path`.
    pub fn of_patch(model: &str, model_path: String, weights: &str, source: PatchSource, spec: FigureSpec) -> Self {
        Self {
            schema: SCHEMA.into(),
            program: format!("logit-lens {}", env!("CARGO_PKG_VERSION")),
            model_name: model.into(),
            model_path,
            model_sha256: None,
            weights: Some(weights.into()),
            prompt: source.clean.clone(),
            spec,
            corpus: None,
            compare: None,
            eval: None,
            patch: Some(source),
            engine: None,
        }
    }
}

/// The schema tag of [`Provenance`].
pub const SCHEMA: &str = "logit-lens/figure@1";

/// Hex encoding (used where a container cannot hold arbitrary text, e.g. a PDF info string).
pub fn to_hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Reverses [`to_hex`].
pub fn from_hex(h: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = h.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).ok().and_then(|s| u8::from_str_radix(s, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}
