//! The lens bundle (README, "The lens bundle"): open, validate, metadata, and reading initializers.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use prost::Message;

use crate::build::arch::{Family, Norm, Residual};
use crate::build::convert::{MODEL_FILE, TOKENIZER_FILE};
use crate::build::graph::hook_name;
use crate::build::meta_keys;
use crate::build::onnx::{DT_FLOAT, DT_FLOAT16, DT_UINT8, ModelProto, TensorProto, tensor_proto};
use crate::build::quant::WeightFormat;
use crate::error::{LensError, Result};
use crate::source::config::ModelShape;

/// Layout of the unembedding initializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnembedLayout {
    /// `[d_vocab, d_model]` (GPT-2's tied `wte`).
    VocabModel,
    /// `[d_model, d_vocab]` (TransformerLens `W_U`).
    ModelVocab,
}

/// The per-layer shape of a lens graph's key/value cache: `[1, n_kv_heads, positions, d_head]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheShape {
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Features per head.
    pub d_head: usize,
}

/// An opened and validated lens bundle. Holds metadata only; weights are read on demand.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle folder.
    pub dir: PathBuf,
    /// Bundle format version (1: GPT-2 only, the first release; 2: every family; 3: the lens graph
    /// has a key/value cache; 4: as 3 with quantized block matrices, `MatMulNBits`).
    pub format_version: u32,
    /// Model name (from metadata, else the folder name).
    pub name: String,
    /// Model family (`gpt2`, `gpt_neo`, …).
    pub family: String,
    /// The model's shape.
    pub shape: ModelShape,
    /// Residual layout: sequential blocks have a `resid_mid`, parallel ones do not.
    pub residual: Residual,
    /// The final norm's kind (LayerNorm or RMSNorm).
    pub final_norm: Norm,
    /// The logits' soft cap `cap · tanh(logits / cap)`, if the model has one (Gemma 2).
    pub final_softcap: Option<f64>,
    /// Whether the graph outputs `hook_attn_out` / `hook_mlp_out` (else they are derived).
    pub has_subblock_outputs: bool,
    /// Whether the graph outputs `hook_resid_mid` (else it is derived as resid_pre + attn_out).
    pub has_resid_mid: bool,
    /// Initializer name of the final norm's weight.
    pub ln_final_weight: String,
    /// Initializer name of the final norm's bias, if it has one.
    pub ln_final_bias: Option<String>,
    /// Initializer name of the unembedding.
    pub unembed: String,
    /// Layout of the unembedding.
    pub unembed_layout: UnembedLayout,
    /// Optional initializer name of the unembedding bias `b_U`.
    pub unembed_bias: Option<String>,
    /// The last-block graph (`last-block` / `last-mlp` decoders), if the bundle has one.
    pub last_block: Option<PathBuf>,
    /// The lens graph's key/value cache (inputs [`crate::build::graph::past_name`], outputs
    /// [`crate::build::graph::present_name`] for every layer), if it has one; bundles converted before
    /// it existed have none and every edit runs the whole prompt.
    pub kv_cache: Option<KvCacheShape>,
    /// The lens graph takes a patch ([`crate::build::graph::PATCH_SITE`] and the others): a
    /// residual site's rows replaced, for activation patching and steering. Bundles converted
    /// before it existed have none.
    pub patchable: bool,
    /// The lens graph can start at a block ([`crate::build::graph::START_LAYER`],
    /// [`crate::build::graph::START_RESID`]): a patched run skips the blocks before the site.
    /// Bundles converted before it existed run every block.
    pub startable: bool,
    /// The lens graph's `logits` can be skipped ([`crate::build::graph::WITH_LOGITS`]): a
    /// patched run that needs only the last residual does not run the head.
    pub logits_optional: bool,
    /// sha256 of the weights, when the bundle records it.
    pub weights_sha256: Option<String>,
    /// The forward graph's weight format (`lens.weights`; f32 in bundles that do not say).
    pub weights: WeightFormat,
    /// Whether the graph outputs the model's `logits` itself. A quantized bundle's unembedding is
    /// f16 and its graph stops at the residual stream: the decoder is the model's head.
    pub logits_in_graph: bool,
    /// All `metadata_props`.
    pub metadata: BTreeMap<String, String>,
    /// The initializers the decoder reads (final norm, unembedding and its bias); the others are
    /// dropped once checked.
    initializers: BTreeMap<String, TensorProto>,
    /// Elements of every weight initializer.
    n_params: usize,
}

/// The format version of the bundle in `dir` (reads only the graph file's metadata), or `None`
/// when it is not a readable bundle.
pub fn format_version_of(dir: &Path) -> Option<u32> {
    metadata_of(dir).ok()?.get(meta_keys::FORMAT_VERSION)?.parse().ok()
}

/// The weight format of the bundle in `dir` (reads only the graph file's metadata).
pub fn weights_of(dir: &Path) -> Result<WeightFormat> {
    weights_in(&metadata_of(dir)?, &dir.join(MODEL_FILE))
}

/// The `metadata_props` of the bundle in `dir`.
fn metadata_of(dir: &Path) -> Result<BTreeMap<String, String>> {
    let model_path = dir.join(MODEL_FILE);
    let bytes = std::fs::read(&model_path).map_err(|e| LensError::io(&model_path, e))?;
    let model =
        ModelProto::decode(bytes.as_slice()).map_err(|e| LensError::bad_file(&model_path, format!("not a valid ONNX model (truncated or corrupted?): {e}")))?;
    Ok(model.metadata_props.into_iter().filter_map(|e| Some((e.key?, e.value?))).collect())
}

/// The weight format `metadata` names (`lens.weights`; f32 when it does not say).
fn weights_in(metadata: &BTreeMap<String, String>, model_path: &Path) -> Result<WeightFormat> {
    match metadata.get(meta_keys::WEIGHTS) {
        None => Ok(WeightFormat::F32),
        Some(w) => WeightFormat::parse(w).ok_or_else(|| {
            LensError::bad_file(model_path, format!("metadata lens.weights = {w:?} is not a weight format this logit-lens reads (f32, int8, int4)"))
        }),
    }
}

fn check_external_location(dir: &Path, location: &str, model_path: &Path) -> Result<PathBuf> {
    let rel = Path::new(location);
    let ok = !location.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_))) && !location.contains('\\') && !location.contains(':');
    if !ok {
        return Err(LensError::bad_file(
            model_path,
            format!("external data location {location:?} leaves the bundle folder (absolute paths and `..` are refused)"),
        ));
    }
    Ok(dir.join(rel))
}

/// Checks that `dir` is a bundle folder (`model.onnx` and `tokenizer.json`); returns the graph
/// file's path.
fn bundle_files(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(LensError::bad_file(dir, "not a folder; a lens bundle is a folder with model.onnx and tokenizer.json"));
    }
    let model_path = dir.join(MODEL_FILE);
    if !model_path.is_file() {
        return Err(LensError::bad_file(dir, "not a lens bundle: there is no model.onnx (for a Hugging Face checkpoint folder, run `logit-lens convert`)"));
    }
    if !dir.join(TOKENIZER_FILE).is_file() {
        return Err(LensError::bad_file(dir, "not a lens bundle: there is no tokenizer.json"));
    }
    Ok(model_path)
}

/// Reads `model.onnx`: its graph and its `metadata_props`.
fn read_model(model_path: &Path) -> Result<(crate::build::onnx::GraphProto, BTreeMap<String, String>)> {
    let bytes = std::fs::read(model_path).map_err(|e| LensError::io(model_path, e))?;
    let model =
        ModelProto::decode(bytes.as_slice()).map_err(|e| LensError::bad_file(model_path, format!("not a valid ONNX model (truncated or corrupted?): {e}")))?;
    drop(bytes);
    let graph = model.graph.ok_or_else(|| LensError::bad_file(model_path, "ONNX model has no graph (truncated or corrupted?)"))?;
    let metadata: BTreeMap<String, String> = model.metadata_props.iter().filter_map(|e| Some((e.key.clone()?, e.value.clone()?))).collect();
    Ok((graph, metadata))
}

/// What the metadata says of the model, parsed and checked (before the graph is looked at).
struct Header {
    format_version: u32,
    weights: WeightFormat,
    family: String,
    final_norm: Norm,
    final_softcap: Option<f64>,
    residual: Residual,
    shape: ModelShape,
    unembed_layout: UnembedLayout,
}

/// A metadata value, or the error that the file was not made for logit-lens.
fn meta<'m>(metadata: &'m BTreeMap<String, String>, k: &str, model_path: &Path) -> Result<&'m String> {
    metadata.get(k).ok_or_else(|| {
        LensError::bad_file(
            model_path,
            format!("missing metadata {k:?}; this ONNX file was not made for logit-lens (convert the checkpoint with `logit-lens convert`)"),
        )
    })
}

impl Header {
    /// Parses the version, weights, family, final norm, soft cap, residual layout and shape.
    fn parse(metadata: &BTreeMap<String, String>, model_path: &Path) -> Result<Self> {
        let need = |k: &str| meta(metadata, k, model_path);
        let num = |k: &str| -> Result<usize> {
            let v = need(k)?;
            v.parse::<usize>().ok().filter(|x| *x > 0).ok_or_else(|| LensError::bad_file(model_path, format!("metadata {k} = {v:?} is not a positive integer")))
        };
        let version = need(meta_keys::FORMAT_VERSION)?;
        let format_version: u32 = match version.as_str() {
            "1" => 1,
            "2" => 2,
            "3" => 3,
            "4" => 4,
            other => {
                return Err(LensError::bad_file(
                    model_path,
                    format!(
                        "bundle format version {other} is not supported by this logit-lens (it reads 1 to 4); update logit-lens or convert the checkpoint again"
                    ),
                ));
            }
        };
        let weights = weights_in(metadata, model_path)?;
        if (format_version == 4) == weights.is_exact() {
            return Err(LensError::bad_file(
                model_path,
                format!("bundle format {format_version} with {} weights: quantized weights are format 4 and only they are", weights.name()),
            ));
        }
        let family = need(meta_keys::FAMILY)?.clone();
        if Family::from_model_type(&family).is_none() || (format_version == 1 && family != "gpt2") {
            return Err(LensError::bad_file(
                model_path,
                format!("model family {family:?} is not supported; this logit-lens reads {}", Family::supported_list()),
            ));
        }
        // Format 1 (GPT-2 only) named the final LayerNorm `ln_final`; format 2 names the norm's kind.
        let eps_key = if format_version == 1 { meta_keys::V1_LN_EPS } else { meta_keys::FINAL_NORM_EPS };
        let final_norm = if format_version == 1 {
            Norm::LayerNorm
        } else {
            let n = need(meta_keys::FINAL_NORM)?;
            Norm::parse(n)
                .ok_or_else(|| LensError::bad_file(model_path, format!("final norm {n:?} is not supported by this logit-lens (layer_norm, rms_norm)")))?
        };
        let final_softcap = match metadata.get(meta_keys::FINAL_SOFTCAP) {
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|c| *c > 0.0 && c.is_finite())
                    .ok_or_else(|| LensError::bad_file(model_path, format!("metadata lens.final_softcap = {v:?} is not a positive number")))?,
            ),
            None => None,
        };
        let residual = if format_version == 1 {
            Residual::Sequential
        } else {
            let r = need(meta_keys::RESIDUAL)?;
            Residual::parse(r).ok_or_else(|| LensError::bad_file(model_path, format!("metadata lens.residual = {r:?} is not sequential or parallel")))?
        };
        let eps_s = need(eps_key)?;
        let eps: f64 = eps_s
            .parse()
            .ok()
            .filter(|e: &f64| *e > 0.0 && *e < 1.0)
            .ok_or_else(|| LensError::bad_file(model_path, format!("metadata {eps_key} = {eps_s:?} is not a valid epsilon")))?;
        let d_model = num(meta_keys::D_MODEL)?;
        let shape = ModelShape {
            n_layers: num(meta_keys::N_LAYERS)?,
            d_model,
            n_heads: num(meta_keys::N_HEADS)?,
            d_mlp: metadata.get(meta_keys::D_MLP).and_then(|v| v.parse().ok()).unwrap_or(4 * d_model),
            d_vocab: num(meta_keys::D_VOCAB)?,
            n_ctx: num(meta_keys::N_CTX)?,
            eps,
        };
        let unembed_layout = match metadata.get(meta_keys::UNEMBED_LAYOUT).map(String::as_str) {
            None | Some("vocab_model") => UnembedLayout::VocabModel,
            Some("model_vocab") => UnembedLayout::ModelVocab,
            Some(other) => return Err(LensError::bad_file(model_path, format!("unknown unembedding layout {other:?}"))),
        };

        Ok(Self { format_version, weights, family, final_norm, final_softcap, residual, shape, unembed_layout })
    }
}

/// What the graph's inputs and outputs say, checked against the header.
struct GraphFacts {
    has_resid_mid: bool,
    has_subblock_outputs: bool,
    logits_in_graph: bool,
    kv_cache: Option<KvCacheShape>,
    patchable: bool,
    startable: bool,
    logits_optional: bool,
}

impl GraphFacts {
    /// Checks `input_ids`, every block's required hooks and the outputs' declared widths.
    fn check(graph: &crate::build::onnx::GraphProto, head: &Header, model_path: &Path) -> Result<Self> {
        let (shape, residual) = (&head.shape, head.residual);
        // Inputs and outputs.
        let input_ok = graph.input.iter().any(|i| i.name.as_deref() == Some("input_ids"));
        if !input_ok {
            return Err(LensError::bad_file(model_path, "the graph has no input named input_ids"));
        }
        let outputs: std::collections::BTreeSet<&str> = graph.output.iter().filter_map(|o| o.name.as_deref()).collect();
        let has = |l: usize, hook: &str| outputs.contains(hook_name(l, hook).as_str());
        let all = |hook: &str| (0..shape.n_layers).all(|l| has(l, hook));
        let has_resid_mid = all("resid_mid");
        let has_subblock_outputs = all("attn_out") && all("mlp_out");
        let mut missing = Vec::new();
        for l in 0..shape.n_layers {
            let mid_or_attn = if residual == Residual::Sequential && !has_subblock_outputs { "resid_mid" } else { "attn_out" };
            for hook in ["resid_post", mid_or_attn] {
                if !has(l, hook) {
                    missing.push(hook_name(l, hook));
                }
            }
        }
        let logits_in_graph = outputs.contains("logits");
        if !missing.is_empty() {
            let shown: Vec<_> = missing.iter().take(4).cloned().collect();
            return Err(LensError::bad_file(model_path, format!("the graph lacks {} required outputs, e.g. {}", missing.len(), shown.join(", "))));
        }
        let kv_cache = kv_cache_of(graph, shape.n_layers);
        // Declared shapes of outputs, where given, must match the metadata.
        for o in &graph.output {
            let Some(name) = o.name.as_deref() else { continue };
            let want = if name == "logits" {
                shape.d_vocab
            } else if name.starts_with("blocks.") {
                shape.d_model
            } else {
                continue;
            };
            if let Some(last) = declared_last_dim(o)
                && last != want as i64
            {
                return Err(LensError::bad_file(model_path, format!("output {name} has last dimension {last}, metadata says {want}")));
            }
        }

        let inputs: std::collections::BTreeSet<&str> = graph.input.iter().filter_map(|i| i.name.as_deref()).collect();
        let patchable = [crate::build::graph::PATCH_SITE, crate::build::graph::PATCH_ROW, crate::build::graph::PATCH_VALUE].iter().all(|n| inputs.contains(n));
        let startable = patchable && [crate::build::graph::START_LAYER, crate::build::graph::START_RESID].iter().all(|n| inputs.contains(n));
        let logits_optional = logits_in_graph && inputs.contains(crate::build::graph::WITH_LOGITS);
        Ok(Self { has_resid_mid, has_subblock_outputs, logits_in_graph, kv_cache, patchable, startable, logits_optional })
    }
}

/// The initializers the decoder reads (final norm, unembedding and its bias), named by the metadata.
struct HeadNames {
    ln_final_weight: String,
    ln_final_bias: Option<String>,
    unembed: String,
    unembed_bias: Option<String>,
}

impl HeadNames {
    /// The head's names, each present in `initializers`; a graph without `logits` must have an f16
    /// unembedding (a quantized bundle, whose decoder is the head).
    fn check(
        metadata: &BTreeMap<String, String>,
        format_version: u32,
        initializers: &BTreeMap<String, TensorProto>,
        logits_in_graph: bool,
        model_path: &Path,
    ) -> Result<Self> {
        // Format 1 (GPT-2 only) named the final LayerNorm `ln_final`; format 2 names the norm's kind.
        let (norm_w_key, norm_b_key) = if format_version == 1 {
            (meta_keys::V1_LN_FINAL_WEIGHT, meta_keys::V1_LN_FINAL_BIAS)
        } else {
            (meta_keys::FINAL_NORM_WEIGHT, meta_keys::FINAL_NORM_BIAS)
        };
        let need = |k: &str| meta(metadata, k, model_path);
        let ln_final_weight = need(norm_w_key)?.clone();
        // Format 1 always had a bias; format 2 names one where the norm has it.
        let ln_final_bias = if format_version == 1 { Some(need(norm_b_key)?.clone()) } else { metadata.get(norm_b_key).cloned() };
        let unembed = need(meta_keys::UNEMBED)?.clone();
        let unembed_bias = metadata.get(meta_keys::UNEMBED_BIAS).cloned();
        for n in [&ln_final_weight, &unembed].into_iter().chain(ln_final_bias.as_ref()).chain(unembed_bias.as_ref()) {
            if !initializers.contains_key(n) {
                return Err(LensError::bad_file(model_path, format!("metadata names initializer {n:?}, which the graph does not have")));
            }
        }
        // Only an f16 unembedding (which the decoder reads and the graph never multiplies by) may
        // leave the head out of the graph.
        if !logits_in_graph && initializers.get(&unembed).is_none_or(|t| t.data_type != Some(DT_FLOAT16)) {
            return Err(LensError::bad_file(model_path, "the graph lacks its required output logits"));
        }
        Ok(Self { ln_final_weight, ln_final_bias, unembed, unembed_bias })
    }
}

impl Bundle {
    /// Opens the bundle folder `dir` and validates everything that can be checked without running
    /// it: the files ([`bundle_files`]), the metadata ([`Header::parse`]), the graph's inputs and
    /// outputs ([`GraphFacts::check`]), the external data's locations and ranges, and the head's
    /// initializers ([`HeadNames::check`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let model_path = bundle_files(dir)?;
        let (graph, metadata) = read_model(&model_path)?;
        let head = Header::parse(&metadata, &model_path)?;
        let facts = GraphFacts::check(&graph, &head, &model_path)?;
        // External data must stay inside the bundle; check before anything reads it.
        for t in &graph.initializer {
            if t.data_location == Some(tensor_proto::DataLocation::External as i32) {
                let loc = t.external_data.iter().find(|e| e.key.as_deref() == Some("location")).and_then(|e| e.value.clone()).unwrap_or_default();
                check_external_location(dir, &loc, &model_path)?;
            }
        }
        let initializers: BTreeMap<String, TensorProto> = graph.initializer.into_iter().filter_map(|t| Some((t.name.clone()?, t))).collect();
        let names = HeadNames::check(&metadata, head.format_version, &initializers, facts.logits_in_graph, &model_path)?;
        let last_block = match metadata.get(meta_keys::LAST_BLOCK) {
            Some(f) => {
                let p = check_external_location(dir, f, &model_path)?;
                if !p.is_file() {
                    return Err(LensError::bad_file(dir, format!("the bundle names {f} but it is missing (incomplete copy?)")));
                }
                Some(p)
            }
            None => None,
        };
        let name =
            metadata.get(meta_keys::NAME).cloned().or_else(|| dir.file_name().map(|s| s.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
        let mut bundle = Self {
            dir: dir.to_path_buf(),
            format_version: head.format_version,
            name,
            family: head.family,
            shape: head.shape,
            residual: head.residual,
            final_norm: head.final_norm,
            final_softcap: head.final_softcap,
            has_subblock_outputs: facts.has_subblock_outputs,
            has_resid_mid: facts.has_resid_mid,
            ln_final_weight: names.ln_final_weight,
            ln_final_bias: names.ln_final_bias,
            unembed: names.unembed,
            unembed_layout: head.unembed_layout,
            unembed_bias: names.unembed_bias,
            last_block,
            kv_cache: facts.kv_cache,
            patchable: facts.patchable,
            startable: facts.startable,
            logits_optional: facts.logits_optional,
            weights_sha256: metadata.get(meta_keys::WEIGHTS_SHA256).cloned(),
            weights: head.weights,
            logits_in_graph: facts.logits_in_graph,
            metadata,
            initializers,
            n_params: 0,
        };
        // Check every external range fits its file (a truncated model.onnx.data is caught here).
        for t in bundle.initializers.values() {
            bundle.external_range(t)?;
        }
        // Quantized bundles record the count (their codes' elements are bytes, not weights).
        bundle.n_params = match bundle.metadata.get(meta_keys::N_PARAMS).and_then(|v| v.parse().ok()) {
            Some(n) => n,
            None => bundle
                .initializers
                .values()
                .filter(|t| t.data_location == Some(tensor_proto::DataLocation::External as i32))
                .map(|t| t.dims.iter().map(|&d| d.max(0) as usize).product::<usize>())
                .sum(),
        };
        // Keep only what the decoder reads: the session has the weights (an old bundle's
        // initializers may hold their values inline; they were kept for the engine's lifetime).
        let keep: Vec<String> = [Some(&bundle.ln_final_weight), bundle.ln_final_bias.as_ref(), Some(&bundle.unembed), bundle.unembed_bias.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        bundle.initializers.retain(|name, _| keep.contains(name));
        Ok(bundle)
    }

    /// Number of parameters: the elements of every weight initializer.
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// Names of the initializers the bundle still holds (the decoder's).
    pub fn held_initializers(&self) -> impl Iterator<Item = &str> {
        self.initializers.keys().map(String::as_str)
    }

    /// Path of the ONNX graph.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// Path of the tokenizer.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }

    fn external_range(&self, t: &TensorProto) -> Result<Option<(PathBuf, u64, u64)>> {
        if t.data_location != Some(tensor_proto::DataLocation::External as i32) {
            return Ok(None);
        }
        let model_path = self.model_path();
        let get = |k: &str| t.external_data.iter().find(|e| e.key.as_deref() == Some(k)).and_then(|e| e.value.clone());
        let loc = get("location").unwrap_or_default();
        let path = check_external_location(&self.dir, &loc, &model_path)?;
        let offset: u64 = get("offset").map_or(Ok(0), |v| v.parse()).map_err(|_| LensError::bad_file(&model_path, "bad external data offset"))?;
        let elem: u64 = match t.data_type {
            Some(DT_FLOAT16) => 2,
            Some(DT_UINT8) => 1,
            _ => 4,
        };
        let count: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product();
        let length: u64 = get("length").map_or(Ok(count * elem), |v| v.parse()).map_err(|_| LensError::bad_file(&model_path, "bad external data length"))?;
        let size = std::fs::metadata(&path).map_err(|e| LensError::io(&path, e))?.len();
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(LensError::bad_file(
                &path,
                format!(
                    "too short for initializer {:?} (needs bytes {offset}..{}, file has {size}); truncated?",
                    t.name.as_deref().unwrap_or("?"),
                    offset.saturating_add(length)
                ),
            ));
        }
        Ok(Some((path, offset, length)))
    }

    /// Whether initializer `name` exists and is stored as f32.
    pub fn initializer_is_f32(&self, name: &str) -> bool {
        self.initializers.get(name).is_some_and(|t| t.data_type == Some(DT_FLOAT))
    }

    /// Whether initializer `name` exists and is stored as f16.
    pub fn initializer_is_f16(&self, name: &str) -> bool {
        self.initializers.get(name).is_some_and(|t| t.data_type == Some(DT_FLOAT16))
    }

    /// Reads an f16 initializer as f16 values (no widening: a quantized bundle's unembedding stays
    /// half the size of f32) with its dimensions.
    pub fn read_initializer_f16(&self, name: &str) -> Result<(Vec<usize>, Vec<half::f16>)> {
        let model_path = self.model_path();
        let t = self.initializers.get(name).ok_or_else(|| LensError::bad_file(&model_path, format!("no initializer {name:?}")))?;
        if t.data_type != Some(DT_FLOAT16) {
            return Err(LensError::bad_file(&model_path, format!("initializer {name:?} has data type {}; expected f16", t.data_type.unwrap_or(0))));
        }
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let count: usize = dims.iter().product();
        let decode = |piece: &[u8], out: &mut Vec<half::f16>| out.extend(piece.as_chunks::<2>().0.iter().map(|c| half::f16::from_le_bytes(*c)));
        let mut bytes = Vec::with_capacity(count);
        match self.external_range(t)? {
            Some((path, offset, length)) => read_external(&path, offset, length, &mut |piece| decode(piece, &mut bytes))?,
            None => decode(t.raw_data.as_deref().unwrap_or_default(), &mut bytes),
        }
        if bytes.len() != count {
            return Err(LensError::bad_file(&model_path, format!("initializer {name:?} holds {} values, its shape {dims:?} needs {count}", bytes.len())));
        }
        Ok((dims, bytes))
    }

    /// Reads a float initializer as f32 values with its dimensions.
    pub fn read_initializer(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let model_path = self.model_path();
        let t = self.initializers.get(name).ok_or_else(|| LensError::bad_file(&model_path, format!("no initializer {name:?}")))?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let count: usize = dims.iter().product();
        let dt = t.data_type.unwrap_or(0);
        let values: Vec<f32> = if let Some((path, offset, length)) = self.external_range(t)? {
            // Stream the bytes straight into f32 values: no second full-size buffer.
            let elem = match dt {
                DT_FLOAT => 4u64,
                DT_FLOAT16 => 2,
                other => return Err(LensError::bad_file(&model_path, format!("initializer {name:?} has data type {other}; expected float"))),
            };
            let mut values = Vec::with_capacity((length / elem) as usize);
            read_external(&path, offset, length, &mut |piece| decode_floats(piece, dt, &mut values))?;
            values
        } else if let Some(raw) = &t.raw_data {
            let mut values = Vec::with_capacity(count);
            decode_floats(raw, dt, &mut values);
            values
        } else if dt == DT_FLOAT {
            t.float_data.clone()
        } else {
            Vec::new()
        };
        if dt != DT_FLOAT && dt != DT_FLOAT16 {
            return Err(LensError::bad_file(&model_path, format!("initializer {name:?} has data type {dt}; expected float")));
        }
        if values.len() != count {
            return Err(LensError::bad_file(&model_path, format!("initializer {name:?} holds {} values, its shape {dims:?} needs {count}", values.len())));
        }
        Ok((dims, values))
    }
}

/// The declared dimensions of a value (`None` for a symbolic one); `None` without a tensor type.
fn declared_dims(o: &crate::build::onnx::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use crate::build::onnx::{tensor_shape_proto::dimension::Value, type_proto};
    let tt = match o.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t,
        _ => return None,
    };
    Some(
        tt.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value.as_ref() {
                Some(Value::DimValue(v)) => Some(*v),
                _ => None,
            })
            .collect(),
    )
}

/// The graph's key/value cache: every layer's past key and value inputs, declared
/// `[1, kv, past, d_head]` with one `kv` and `d_head` throughout, and its present outputs.
/// Anything less is no cache (the engine then runs every edit in full).
fn kv_cache_of(graph: &crate::build::onnx::GraphProto, n_layers: usize) -> Option<KvCacheShape> {
    use crate::build::graph::{past_name, present_name};
    let find = |list: &[crate::build::onnx::ValueInfoProto], name: &str| list.iter().find(|v| v.name.as_deref() == Some(name)).and_then(declared_dims);
    let mut shape = None;
    for l in 0..n_layers {
        for kind in ["key", "value"] {
            let dims = find(&graph.input, &past_name(l, kind))?;
            find(&graph.output, &present_name(l, kind))?;
            let [Some(1), Some(kv), _, Some(dh)] = dims.as_slice() else { return None };
            let this = KvCacheShape { n_kv_heads: usize::try_from(*kv).ok().filter(|&v| v > 0)?, d_head: usize::try_from(*dh).ok().filter(|&v| v > 0)? };
            if shape.is_some_and(|s| s != this) {
                return None;
            }
            shape = Some(this);
        }
    }
    shape
}

fn declared_last_dim(o: &crate::build::onnx::ValueInfoProto) -> Option<i64> {
    use crate::build::onnx::{tensor_shape_proto::dimension::Value, type_proto};
    let tt = match o.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t,
        _ => return None,
    };
    match tt.shape.as_ref()?.dim.last()?.value.as_ref()? {
        Value::DimValue(v) => Some(*v),
        Value::DimParam(_) => None,
    }
}

/// Reads `length` bytes of `path` from `offset` in pieces of 1 MiB (a multiple of every element
/// size: no element is split), handing each to `f`: no second full-size buffer.
fn read_external(path: &Path, offset: u64, length: u64, f: &mut dyn FnMut(&[u8])) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| LensError::io(path, e))?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| LensError::io(path, e))?;
    let mut piece = vec![0u8; 1 << 20];
    let mut left = length;
    while left > 0 {
        let n = piece.len().min(left as usize);
        let buf = piece.get_mut(..n).unwrap_or_default();
        file.read_exact(buf).map_err(|e| LensError::io(path, e))?;
        f(buf);
        left -= n as u64;
    }
    Ok(())
}

/// Appends little-endian f32 (or f16) values decoded from `bytes` (whole elements only; the piece
/// size is a multiple of 4, so no element is split).
fn decode_floats(bytes: &[u8], dt: i32, out: &mut Vec<f32>) {
    if dt == DT_FLOAT16 {
        out.extend(bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]).to_f32()));
    } else {
        out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))));
    }
}
