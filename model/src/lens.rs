//! Decoders: how a residual vector becomes vocabulary logits.

use serde::{Deserialize, Serialize};

use crate::arch::Norm;
use crate::bundle::{Bundle, UnembedLayout};
use crate::error::{LensError, Result};

/// Which decoder the lens applies at every site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// ln_final (with the row's own mean and variance) then W_U: the logit lens.
    #[default]
    LogitLens,
    /// W_U applied to the raw residual, no LayerNorm.
    Raw,
    /// The last transformer block applied to the site's whole sequence, then ln_final and W_U
    /// (the original write-up's decoder for GPT-Neo). The final site stays the model's output.
    LastBlock,
    /// `x + mlp(norm(x))` with the last block's MLP, then ln_final and W_U.
    LastMlp,
}

impl DecoderKind {
    /// Every decoder, in the order a menu lists them.
    pub const ALL: [Self; 4] = [Self::LogitLens, Self::LastBlock, Self::LastMlp, Self::Raw];

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::LogitLens => "logit_lens",
            Self::Raw => "raw",
            Self::LastBlock => "last_block",
            Self::LastMlp => "last_mlp",
        }
    }

    /// Parses a name (`logit_lens`, `last-block`, …; `-` and `_` alike).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.replace('-', "_");
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// A short label for menus and figure subtitles.
    pub fn label(self) -> &'static str {
        match self {
            Self::LogitLens => "logit lens",
            Self::Raw => "raw (W_U only)",
            Self::LastBlock => "last block",
            Self::LastMlp => "last MLP",
        }
    }

    /// Whether sites are first passed through the last block (or its MLP).
    pub fn uses_last_block(self) -> bool {
        matches!(self, Self::LastBlock | Self::LastMlp)
    }
}

/// ln_final parameters and the unembedding, read from the bundle itself.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Which decoder.
    pub kind: DecoderKind,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Vocabulary size.
    pub d_vocab: usize,
    /// Final norm epsilon.
    pub eps: f64,
    /// The final norm: LayerNorm (centred) or RMSNorm (not centred, no bias).
    pub norm: Norm,
    /// The logits' soft cap (Gemma 2): `cap · tanh(logit / cap)` after the bias.
    pub softcap: Option<f32>,
    /// ln_final γ // [d_model]
    pub gamma: Vec<f32>,
    /// ln_final β (zeros where the norm has no bias) // [d_model]
    pub beta: Vec<f32>,
    /// The unembedding, one row per token, shared: a decoder with another `kind` is a cheap clone
    /// (GPT-2's is 154 MB) // [d_vocab, d_model]
    pub w_u: std::sync::Arc<[f32]>,
    /// The unembedding bias, if any // [d_vocab]
    pub b_u: Option<Vec<f32>>,
}

impl Decoder {
    /// Reads ln_final and W_U from `bundle`, checking their shapes against the metadata.
    pub fn from_bundle(bundle: &Bundle, kind: DecoderKind) -> Result<Self> {
        let (d, v) = (bundle.shape.d_model, bundle.shape.d_vocab);
        let path = bundle.model_path();
        let (gd, gamma) = bundle.read_initializer(&bundle.ln_final_weight)?;
        let (bd, beta) = match &bundle.ln_final_bias {
            Some(b) => bundle.read_initializer(b)?,
            None => (vec![d], vec![0.0; d]),
        };
        if gd != [d] || bd != [d] {
            return Err(LensError::bad_file(&path, format!("ln_final has shape {gd:?}/{bd:?}, expected [{d}]")));
        }
        let (ud, mut w_u) = bundle.read_initializer(&bundle.unembed)?;
        match bundle.unembed_layout {
            UnembedLayout::VocabModel if ud == [v, d] => {}
            UnembedLayout::ModelVocab if ud == [d, v] => {
                let mut t = vec![0f32; v * d];
                for (i, row) in w_u.chunks_exact(v).enumerate() {
                    for (j, &x) in row.iter().enumerate() {
                        if let Some(slot) = t.get_mut(j * d + i) {
                            *slot = x;
                        }
                    }
                }
                w_u = t;
            }
            _ => return Err(LensError::bad_file(&path, format!("unembedding has shape {ud:?}, metadata implies d_vocab {v} x d_model {d}"))),
        }
        let b_u = match &bundle.unembed_bias {
            Some(name) => {
                let (dims, b) = bundle.read_initializer(name)?;
                if dims != [v] {
                    return Err(LensError::bad_file(&path, format!("unembedding bias has shape {dims:?}, expected [{v}]")));
                }
                Some(b)
            }
            None => None,
        };
        Ok(Self { kind, d_model: d, d_vocab: v, eps: bundle.shape.eps, norm: bundle.final_norm, softcap: bundle.final_softcap.map(|c| c as f32), gamma, beta, w_u: w_u.into(), b_u })
    }

    /// The final norm's centre and scale of `x`: LayerNorm (mean, sqrt(var + eps)); RMSNorm
    /// (0, sqrt(mean(x²) + eps)).
    pub fn mean_sigma(&self, x: &[f32]) -> (f64, f64) {
        let n = x.len().max(1) as f64;
        let mean = match self.norm {
            Norm::LayerNorm => x.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
            Norm::RmsNorm => 0.0,
        };
        let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        (mean, (var + self.eps).sqrt())
    }

    /// Whether the final norm subtracts the mean (LayerNorm) — what the attribution removes from
    /// each term.
    pub fn centres(&self) -> bool {
        self.norm == Norm::LayerNorm
    }

    /// Writes the decoder's input for `x` into `out`: LN_final(x) (own statistics) or `x` itself
    /// (raw). For the last-block decoders `x` is already the block's output.
    pub fn prepare_row(&self, x: &[f32], out: &mut [f32]) {
        match self.kind {
            DecoderKind::Raw => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v;
                }
            }
            DecoderKind::LogitLens | DecoderKind::LastBlock | DecoderKind::LastMlp => {
                let (mean, sigma) = self.mean_sigma(x);
                for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(&self.gamma).zip(&self.beta) {
                    *o = ((f64::from(v) - mean) / sigma * f64::from(g) + f64::from(b)) as f32;
                }
            }
        }
    }

    /// Row `t` of W_U (the token's unembedding vector) // [d_model]
    pub fn unembed_row(&self, t: u32) -> &[f32] {
        let start = t as usize * self.d_model;
        self.w_u.get(start..start + self.d_model).unwrap_or_default()
    }

    /// The logit of token `t` for a prepared row (f64 accumulation).
    pub fn logit(&self, prepared: &[f32], t: u32) -> f32 {
        let dot: f64 = prepared.iter().zip(self.unembed_row(t)).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let bias = self.b_u.as_ref().and_then(|b| b.get(t as usize)).copied().unwrap_or(0.0);
        self.cap((dot + f64::from(bias)) as f32)
    }

    /// The soft cap applied to a logit (identity without one).
    pub fn cap(&self, x: f32) -> f32 {
        match self.softcap {
            Some(c) => c * (x / c).tanh(),
            None => x,
        }
    }

    /// Every logit of one residual vector (slow path used for validation) // [d_vocab]
    pub fn decode_full(&self, x: &[f32]) -> Vec<f32> {
        let mut prepared = vec![0f32; self.d_model];
        self.prepare_row(x, &mut prepared);
        (0..self.d_vocab as u32).map(|t| self.logit(&prepared, t)).collect()
    }
}

/// Logits of a block of prepared rows against a block of unembedding rows:
/// `out[r, c] = Σ_j x[r, j] · w[c, j]` (f32 GEMM, faer) // x: [rows, d], w: [cols, d], out: [rows, cols]
///
/// `parallel` uses every core for this one product; the lens kernel runs one product per core instead.
pub fn logits_block(x: &[f32], w: &[f32], d: usize, out: &mut [f32], parallel: bool) -> Result<()> {
    if d == 0 || !x.len().is_multiple_of(d) || !w.len().is_multiple_of(d) || out.len() != (x.len() / d) * (w.len() / d) {
        return Err(LensError::invalid("logits_block: inconsistent sizes"));
    }
    let (rows, cols) = (x.len() / d, w.len() / d);
    let lhs = faer::MatRef::from_row_major_slice(x, rows, d);
    let rhs = faer::MatRef::from_row_major_slice(w, cols, d);
    let dst = faer::MatMut::from_row_major_slice_mut(out, rows, cols);
    let par = if parallel { faer::Par::rayon(0) } else { faer::Par::Seq };
    faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, rhs.transpose(), 1.0f32, par);
    Ok(())
}
