//! Decoders: how a residual vector becomes vocabulary logits.

use serde::{Deserialize, Serialize};

use crate::build::arch::Norm;
use crate::error::{LensError, Result};
use crate::run::bundle::{Bundle, UnembedLayout};

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
    /// The tuned lens: the site's translator (`h + W h + b`) from a tuned-lens folder, then
    /// ln_final and W_U (see [`crate::lens::tuned_lens`]).
    TunedLens,
    /// The J-lens: the source layer's transport matrix (`J[l] · h`) from a J-lens file, then
    /// ln_final and W_U (see [`crate::lens::jacobian_lens`]). Rows without a matrix are decoded
    /// as they are and marked ([`crate::output::report::LensReport::no_transport`]).
    JacobianLens,
}

impl DecoderKind {
    /// Every decoder, in the order a menu lists them.
    pub const ALL: [Self; 6] = [Self::LogitLens, Self::TunedLens, Self::JacobianLens, Self::LastBlock, Self::LastMlp, Self::Raw];

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::LogitLens => "logit_lens",
            Self::Raw => "raw",
            Self::LastBlock => "last_block",
            Self::LastMlp => "last_mlp",
            Self::TunedLens => "tuned_lens",
            Self::JacobianLens => "jacobian_lens",
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
            Self::TunedLens => "tuned lens",
            Self::JacobianLens => "J-lens",
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
    /// (GPT-2's is 154 MB), and the lens session's own `Gemm` reads the same buffer // [d_vocab, d_model]
    pub w_u: Unembedding,
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
        let w_u = if bundle.unembed_layout == UnembedLayout::VocabModel && bundle.initializer_is_f16(&bundle.unembed) {
            // A quantized bundle's: kept in f16, widened slice by slice by the kernel.
            let (ud, w_u) = bundle.read_initializer_f16(&bundle.unembed)?;
            if ud != [v, d] {
                return Err(LensError::bad_file(&path, format!("unembedding has shape {ud:?}, metadata implies d_vocab {v} x d_model {d}")));
            }
            Unembedding::from(w_u)
        } else {
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
            // Where the graph's unembedding initializer holds exactly these f32 values in this
            // layout, the buffer becomes an ONNX Runtime tensor that the session uses in place of
            // reading its own copy (see [`Unembedding`]).
            let shareable = bundle.unembed_layout == UnembedLayout::VocabModel && bundle.initializer_is_f32(&bundle.unembed);
            if shareable { Unembedding::shared(&bundle.unembed, v, d, w_u)? } else { Unembedding::from(w_u) }
        };
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
        Ok(Self {
            kind,
            d_model: d,
            d_vocab: v,
            eps: bundle.shape.eps,
            norm: bundle.final_norm,
            softcap: bundle.final_softcap.map(|c| c as f32),
            gamma,
            beta,
            w_u,
            b_u,
        })
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
            DecoderKind::LogitLens | DecoderKind::LastBlock | DecoderKind::LastMlp | DecoderKind::TunedLens | DecoderKind::JacobianLens => {
                let (mean, sigma) = self.mean_sigma(x);
                for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(&self.gamma).zip(&self.beta) {
                    *o = ((f64::from(v) - mean) / sigma * f64::from(g) + f64::from(b)) as f32;
                }
            }
        }
    }

    /// Row `t` of W_U as f32 (the token's unembedding vector; empty past the end) // [d_model]
    pub fn unembed_row(&self, t: u32) -> std::borrow::Cow<'_, [f32]> {
        let range = t as usize * self.d_model..(t as usize + 1) * self.d_model;
        if let Some(v) = self.w_u.as_f32() {
            return std::borrow::Cow::Borrowed(v.get(range).unwrap_or(&[]));
        }
        let mut scratch = Vec::new();
        if self.w_u.rows_f32(range, &mut scratch).is_none() {
            scratch.clear();
        }
        std::borrow::Cow::Owned(scratch)
    }

    /// The logit of token `t` for a prepared row (f64 accumulation; callers pass ids below
    /// `d_vocab`, checked where ids enter).
    pub fn logit(&self, prepared: &[f32], t: u32) -> f32 {
        let dot = self.w_u.dot(t as usize * self.d_model, prepared);
        let bias = self.b_u.as_ref().and_then(|b| b.get(t as usize)).copied().unwrap_or(0.0);
        self.cap((dot + f64::from(bias)) as f32)
    }

    /// The soft cap applied to a logit (identity without one).
    pub fn cap(&self, x: f32) -> f32 {
        match self.softcap {
            // The same arithmetic as the kernel's vectorised cap (`simd::softcap`), so that a
            // target's logit and the kernel's agree bit for bit.
            Some(c) => c * crate::lens::simd::tanh(x * (1.0 / c)),
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

/// The unembedding matrix `[d_vocab, d_model]`, held once for the whole process.
///
/// For a bundle whose graph multiplies by the same f32 matrix (every f32 bundle our converter
/// writes: `Gemm(ln_final(x), W, transB=1)`), the values live in an ONNX Runtime tensor that is
/// handed to the session as the initializer of that name ([`Unembedding::initializer`]); ORT then
/// uses the buffer instead of loading its own copy from `model.onnx.data`. The lens kernel reads
/// the same memory, so the largest matrix of the model (0.54 GB for Qwen2-0.5B, 1.05 GB for
/// Llama-3.2-1B in f32) is in memory once instead of twice.
///
/// A quantized bundle stores it in f16 (half of Llama-3-8B's 2.1 GB) and its graph has no head:
/// the lens kernel widens each slice of rows to f32 as it reads it ([`Unembedding::rows_f32`]) and
/// accumulates in f32, so the decoder stays exact with respect to the weights the bundle has.
#[derive(Clone)]
pub struct Unembedding {
    storage: UnembedStorage,
}

#[derive(Clone)]
enum UnembedStorage {
    /// Our own buffer (the graph's copy, if any, is ORT's).
    Plain(std::sync::Arc<[f32]>),
    /// Our own f16 buffer (a quantized bundle's; the graph has no copy).
    Half(std::sync::Arc<[half::f16]>),
    /// A buffer owned by an ORT tensor; `ptr`/`len` point into it.
    Ort { name: String, value: std::sync::Arc<ort::value::DynValue>, ptr: *const f32, len: usize },
}

// SAFETY: `ptr` points into the heap buffer owned by `value` (an `Arc`, so it lives as long as any
// clone of this storage); nothing writes to it after construction (ONNX Runtime never writes to an
// initializer, and we only read), so sharing it across threads is sharing an immutable `[f32]`.
unsafe impl Send for UnembedStorage {}
// SAFETY: as above: the buffer is immutable after construction.
unsafe impl Sync for UnembedStorage {}

impl std::fmt::Debug for Unembedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.storage {
            UnembedStorage::Plain(_) => "plain",
            UnembedStorage::Half(_) => "f16",
            UnembedStorage::Ort { .. } => "shared with the session",
        };
        f.debug_struct("Unembedding").field("storage", &kind).field("len", &self.len()).finish()
    }
}

impl From<Vec<f32>> for Unembedding {
    fn from(v: Vec<f32>) -> Self {
        Self { storage: UnembedStorage::Plain(v.into()) }
    }
}

impl From<Vec<half::f16>> for Unembedding {
    fn from(v: Vec<half::f16>) -> Self {
        Self { storage: UnembedStorage::Half(v.into()) }
    }
}

impl Unembedding {
    /// Moves `values` (`[d_vocab, d_model]`, row-major) into an ONNX Runtime tensor that the lens
    /// session will use as its initializer `name`. Needs the ONNX Runtime library loaded.
    pub fn shared(name: &str, d_vocab: usize, d_model: usize, values: Vec<f32>) -> Result<Self> {
        if values.len() != d_vocab * d_model {
            return Err(LensError::invalid(format!("unembedding holds {} values, [{d_vocab}, {d_model}] needs {}", values.len(), d_vocab * d_model)));
        }
        let tensor = ort::value::Tensor::from_array(([d_vocab, d_model], values.into_boxed_slice())).map_err(|e| LensError::Runtime(e.to_string()))?;
        let value: std::sync::Arc<ort::value::DynValue> = std::sync::Arc::new(tensor.into_dyn());
        let (ptr, len) = {
            let (_, data) = value.try_extract_tensor::<f32>().map_err(|e| LensError::Runtime(e.to_string()))?;
            (data.as_ptr(), data.len())
        };
        if len != d_vocab * d_model {
            return Err(LensError::Runtime(format!("ONNX Runtime's unembedding tensor holds {len} values, expected {}", d_vocab * d_model)));
        }
        Ok(Self { storage: UnembedStorage::Ort { name: name.to_owned(), value, ptr, len } })
    }

    /// The f32 values, row-major `[d_vocab, d_model]`; `None` for an f16 unembedding (read it with
    /// [`Self::rows_f32`], [`Self::dot`] or [`Self::to_f32`]).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.storage {
            UnembedStorage::Plain(v) => Some(v),
            UnembedStorage::Half(_) => None,
            // SAFETY: see the `Send`/`Sync` impls: `ptr..ptr+len` is the live, immutable buffer of
            // `value`, checked at construction to hold `len` f32 values.
            UnembedStorage::Ort { ptr, len, .. } => Some(unsafe { std::slice::from_raw_parts(*ptr, *len) }),
        }
    }

    /// Number of values (`d_vocab · d_model`).
    pub fn len(&self) -> usize {
        match &self.storage {
            UnembedStorage::Plain(v) => v.len(),
            UnembedStorage::Half(v) => v.len(),
            UnembedStorage::Ort { len, .. } => *len,
        }
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the values are stored in f16 (a quantized bundle's).
    pub fn is_half(&self) -> bool {
        matches!(self.storage, UnembedStorage::Half(_))
    }

    /// Values `range` as f32: borrowed where they are f32, else widened into `scratch` (exactly:
    /// every f16 is an f32). `None` where the range is out of bounds.
    pub fn rows_f32<'a>(&'a self, range: std::ops::Range<usize>, scratch: &'a mut Vec<f32>) -> Option<&'a [f32]> {
        match &self.storage {
            UnembedStorage::Half(v) => {
                let src = v.get(range)?;
                scratch.resize(src.len(), 0.0);
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, scratch);
                Some(scratch)
            }
            _ => self.as_f32()?.get(range),
        }
    }

    /// Value `i` as f32 (NaN past the end).
    pub fn value(&self, i: usize) -> f32 {
        match &self.storage {
            UnembedStorage::Half(v) => v.get(i).map_or(f32::NAN, |h| h.to_f32()),
            _ => self.as_f32().and_then(|v| v.get(i)).copied().unwrap_or(f32::NAN),
        }
    }

    /// `Σ_j x[j] · W[start + j]` in f64 (the exact logit of one row; 0 past the end).
    pub fn dot(&self, start: usize, x: &[f32]) -> f64 {
        let end = start + x.len();
        match &self.storage {
            UnembedStorage::Half(v) => v.get(start..end).map_or(0.0, |w| x.iter().zip(w).map(|(&a, b)| f64::from(a) * f64::from(b.to_f32())).sum()),
            _ => self.as_f32().and_then(|v| v.get(start..end)).map_or(0.0, |w| x.iter().zip(w).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()),
        }
    }

    /// Every value as f32: borrowed where they are f32, else a widened copy (2× the f16 memory:
    /// for the tuned-lens fit and the lens graph, not the lens kernel).
    pub fn to_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        match (&self.storage, self.as_f32()) {
            (_, Some(v)) => std::borrow::Cow::Borrowed(v),
            (UnembedStorage::Half(v), None) => {
                let mut out = vec![0f32; v.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[..], &mut out);
                std::borrow::Cow::Owned(out)
            }
            (_, None) => std::borrow::Cow::Owned(Vec::new()),
        }
    }

    /// The initializer to hand to the lens session (its name in the graph and the tensor), when
    /// this buffer is shared.
    pub fn initializer(&self) -> Option<(String, std::sync::Arc<ort::value::DynValue>)> {
        match &self.storage {
            UnembedStorage::Plain(_) | UnembedStorage::Half(_) => None,
            UnembedStorage::Ort { name, value, .. } => Some((name.clone(), value.clone())),
        }
    }

    /// Whether the session shares this buffer.
    pub fn is_shared(&self) -> bool {
        matches!(self.storage, UnembedStorage::Ort { .. })
    }
}

/// Largest slice of unembedding rows one GEMM call packs, in bytes. The GEMM backend packs the
/// right-hand side into a per-thread buffer sized to the L3 cache it detects (315 MB per thread on
/// some virtual machines); a product over a whole 152k-row unembedding then keeps ~300 MB of packed
/// copy resident for the rest of the process. Slices this size cost nothing measurable in speed.
const RHS_SLICE_BYTES: usize = 16 << 20;

/// Logits of a block of prepared rows against a block of unembedding rows:
/// `out[r, c] = Σ_j x[r, j] · w[c, j]` (f32 GEMM, faer) // x: [rows, d], w: [cols, d], out: [rows, cols]
///
/// `parallel` uses every core for this one product; the lens kernel runs one product per core instead.
/// The product is taken over slices of at most [`RHS_SLICE_BYTES`] of `w`.
pub fn logits_block(x: &[f32], w: &[f32], d: usize, out: &mut [f32], parallel: bool) -> Result<()> {
    if d == 0 || !x.len().is_multiple_of(d) || !w.len().is_multiple_of(d) || out.len() != (x.len() / d) * (w.len() / d) {
        return Err(LensError::invalid("logits_block: inconsistent sizes"));
    }
    let (rows, cols) = (x.len() / d, w.len() / d);
    let lhs = faer::MatRef::from_row_major_slice(x, rows, d);
    let rhs = faer::MatRef::from_row_major_slice(w, cols, d);
    let mut dst = faer::MatMut::from_row_major_slice_mut(out, rows, cols);
    let par = if parallel { faer::Par::rayon(0) } else { faer::Par::Seq };
    let slice = (RHS_SLICE_BYTES / (4 * d)).max(64);
    let mut c0 = 0;
    while c0 < cols {
        let n = slice.min(cols - c0);
        let part = faer::reborrow::ReborrowMut::rb_mut(&mut dst).submatrix_mut(0, c0, rows, n);
        faer::linalg::matmul::matmul(part, faer::Accum::Replace, lhs, rhs.subrows(c0, n).transpose(), 1.0f32, par);
        c0 += n;
    }
    Ok(())
}
