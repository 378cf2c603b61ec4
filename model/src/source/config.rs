//! [`ModelShape`]: the sizes of a model, in TransformerLens names (each family's `config.json` is
//! read by its file in [`crate::build::arch`]).

use serde::{Deserialize, Serialize};

/// The shape of a model, in TransformerLens names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads per block.
    pub n_heads: usize,
    /// Hidden width of the MLP.
    pub d_mlp: usize,
    /// Vocabulary size (rows of the unembedding).
    pub d_vocab: usize,
    /// Context length (positions the model was built for).
    pub n_ctx: usize,
    /// Norm epsilon (every norm of the model, the final one included).
    pub eps: f64,
}
