//! Canonical initializer names of a format-2 bundle (TransformerLens spelling), written once.
//!
//! Matrices are stored as MatMul's `[in, out]` (TransformerLens's `W_Q` is `[d_model, n_heads·d_head]`
//! here, heads side by side); the embedding and the unembedding are `[d_vocab, d_model]`.

/// Token embedding `[d_vocab, d_model]`.
pub const EMBED: &str = "embed.W_E";
/// Position table `[n_ctx, d_model]` (learned or sinusoidal).
pub const POS_EMBED: &str = "pos_embed.W_pos";
/// Final norm weight `[d_model]`.
pub const LN_FINAL_W: &str = "ln_final.w";
/// Final norm bias `[d_model]`.
pub const LN_FINAL_B: &str = "ln_final.b";
/// Untied unembedding `[d_vocab, d_model]`.
pub const UNEMBED: &str = "unembed.W_U";
/// Unembedding bias `[d_vocab]`.
pub const UNEMBED_BIAS: &str = "unembed.b_U";

/// The final norm's weight and bias.
pub fn final_norm() -> (String, String) {
    (LN_FINAL_W.into(), LN_FINAL_B.into())
}

/// `blocks.{l}.{rest}`: e.g. `block(3, "attn.W_Q")`.
pub fn block(l: usize, rest: &str) -> String {
    format!("blocks.{l}.{rest}")
}

/// The names of one block's parameters.
#[derive(Debug, Clone)]
pub struct BlockNames {
    /// Norm before attention: weight, bias.
    pub ln1: (String, String),
    /// Norm before the MLP (unused where the family shares `ln1`): weight, bias.
    pub ln2: (String, String),
    /// Norms after attention and after the MLP (Gemma): weight, bias.
    pub ln1_post: (String, String),
    /// See `ln1_post`.
    pub ln2_post: (String, String),
    /// Query, key, value projections `[d_model, d_model]` and their biases.
    pub w_q: String,
    /// See `w_q`.
    pub w_k: String,
    /// See `w_q`.
    pub w_v: String,
    /// See `w_q`.
    pub b_q: String,
    /// See `w_q`.
    pub b_k: String,
    /// See `w_q`.
    pub b_v: String,
    /// Attention output projection `[d_model, d_model]` and bias.
    pub w_o: String,
    /// See `w_o`.
    pub b_o: String,
    /// Gate of a gated MLP `[d_model, d_mlp]`, bias `[d_mlp]`.
    pub w_gate: String,
    /// See `w_gate`.
    pub b_gate: String,
    /// Per-head RMSNorm weights of queries and keys `[d_head]` (Qwen3).
    pub q_norm: String,
    /// See `q_norm`.
    pub k_norm: String,
    /// MLP in `[d_model, d_mlp]`, bias `[d_mlp]`.
    pub w_in: String,
    /// See `w_in`.
    pub b_in: String,
    /// MLP out `[d_mlp, d_model]`, bias `[d_model]`.
    pub w_out: String,
    /// See `w_out`.
    pub b_out: String,
}

impl BlockNames {
    /// The names of layer `l`.
    pub fn of(l: usize) -> Self {
        let b = |r: &str| block(l, r);
        Self {
            ln1: (b("ln1.w"), b("ln1.b")),
            ln2: (b("ln2.w"), b("ln2.b")),
            ln1_post: (b("ln1_post.w"), b("ln1_post.b")),
            ln2_post: (b("ln2_post.w"), b("ln2_post.b")),
            w_q: b("attn.W_Q"),
            w_k: b("attn.W_K"),
            w_v: b("attn.W_V"),
            b_q: b("attn.b_Q"),
            b_k: b("attn.b_K"),
            b_v: b("attn.b_V"),
            w_o: b("attn.W_O"),
            b_o: b("attn.b_O"),
            w_gate: b("mlp.W_gate"),
            b_gate: b("mlp.b_gate"),
            q_norm: b("attn.q_norm.w"),
            k_norm: b("attn.k_norm.w"),
            w_in: b("mlp.W_in"),
            b_in: b("mlp.b_in"),
            w_out: b("mlp.W_out"),
            b_out: b("mlp.b_out"),
        }
    }
}
