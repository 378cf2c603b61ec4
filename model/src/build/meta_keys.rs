//! The bundle's metadata keys (`metadata_props` of `model.onnx`), defined once: the converter
//! writes them and [`crate::run::bundle::Bundle::open`] reads them (README, "The lens bundle").

/// Format version (1 to 4; 4 = quantized weights).
pub const FORMAT_VERSION: &str = "lens.format_version";
/// Hugging Face `model_type` of the family.
pub const FAMILY: &str = "lens.family";
/// The model's name.
pub const NAME: &str = "lens.name";
/// Layers.
pub const N_LAYERS: &str = "lens.n_layers";
/// Residual width.
pub const D_MODEL: &str = "lens.d_model";
/// Attention heads.
pub const N_HEADS: &str = "lens.n_heads";
/// Key/value heads.
pub const N_KV_HEADS: &str = "lens.n_kv_heads";
/// Head width.
pub const D_HEAD: &str = "lens.d_head";
/// MLP width.
pub const D_MLP: &str = "lens.d_mlp";
/// Vocabulary size.
pub const D_VOCAB: &str = "lens.d_vocab";
/// Context length.
pub const N_CTX: &str = "lens.n_ctx";
/// `sequential` or `parallel`.
pub const RESIDUAL: &str = "lens.residual";
/// The hook names every block outputs, comma-separated.
pub const HOOKS: &str = "lens.hooks";
/// The final norm's kind (`layer_norm`, `rms_norm`).
pub const FINAL_NORM: &str = "lens.final_norm";
/// The final norm's epsilon.
pub const FINAL_NORM_EPS: &str = "lens.final_norm.eps";
/// The final norm's weight initializer.
pub const FINAL_NORM_WEIGHT: &str = "lens.final_norm.weight";
/// The final norm's bias initializer (LayerNorm only).
pub const FINAL_NORM_BIAS: &str = "lens.final_norm.bias";
/// Format 1's final LayerNorm epsilon.
pub const V1_LN_EPS: &str = "lens.ln_eps";
/// Format 1's final LayerNorm weight.
pub const V1_LN_FINAL_WEIGHT: &str = "lens.ln_final.weight";
/// Format 1's final LayerNorm bias.
pub const V1_LN_FINAL_BIAS: &str = "lens.ln_final.bias";
/// The unembedding initializer.
pub const UNEMBED: &str = "lens.unembed";
/// The unembedding's layout (`vocab_model` or `model_vocab`).
pub const UNEMBED_LAYOUT: &str = "lens.unembed.layout";
/// The unembedding bias initializer, where the model has one.
pub const UNEMBED_BIAS: &str = "lens.unembed.bias";
/// Gemma 2's final logit soft cap.
pub const FINAL_SOFTCAP: &str = "lens.final_softcap";
/// The last-block graph's file.
pub const LAST_BLOCK: &str = "lens.last_block";
/// sha256 of `model.onnx.data`.
pub const WEIGHTS_SHA256: &str = "lens.weights_sha256";
/// The weight format (`f32`, `int8`, `int4`).
pub const WEIGHTS: &str = "lens.weights";
/// Parameters of the model (a quantized bundle's codes are not its weights' count).
pub const N_PARAMS: &str = "lens.n_params";
/// Quantized weights: bits per weight.
pub const WEIGHTS_BITS: &str = "lens.weights.bits";
/// Quantized weights: the block size.
pub const WEIGHTS_BLOCK_SIZE: &str = "lens.weights.block_size";
/// Quantized weights: whether zero points are stored.
pub const WEIGHTS_ZERO_POINTS: &str = "lens.weights.zero_points";
/// Quantized weights: MatMulNBits's `accuracy_level`.
pub const WEIGHTS_ACCURACY_LEVEL: &str = "lens.weights.accuracy_level";
/// The checkpoint folder converted.
pub const SOURCE: &str = "lens.source";
