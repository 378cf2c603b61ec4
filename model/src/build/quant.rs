//! Weight formats of a bundle's forward graph: f32, or block-wise weight-only int8 / int4 for
//! ONNX Runtime's `MatMulNBits` (com.microsoft), and the quantizer that packs a `[K, N]` MatMul
//! weight into that operator's layout.
//!
//! Layout (the operator's, as ONNX Runtime's own `quantize_matmul_{4,8}bits` writes it, checked
//! against that function's output in `tests/fixtures/quant/`): for each output column `n` the `K`
//! input weights are cut into `ceil(K / block)` blocks (the last one padded with zeros); block `b`
//! of column `n` has one f32 scale `scales[n · blocks + b]` and one zero point; its codes are
//! `block · bits / 8` bytes of `B[n, b, ·]`, two 4-bit codes per byte with the first in the low
//! nibble. A weight is `(code − zero_point) · scale`.
//!
//! * Symmetric (no zero-point input: the operator's default zero point `2^(bits−1)`): the scale
//!   is the block's value of largest magnitude, sign included, divided by `−2^(bits−1)`, so that
//!   value maps to code 0 exactly and the others to `round(w / scale) + 2^(bits−1)` in
//!   `[0, 2^bits − 1]`.
//! * With zero points: `lo = min(0, min w)`, `hi = max(0, max w)`, `scale = (hi − lo) / (2^bits −
//!   1)`, `zp = round(−lo / scale)`; codes `round(w · (1 / scale) + zp)` clamped to the range.
//!
//! Rounding is half away from zero (`f32::round`, C's `roundf`); every step is one f32 operation
//! as in MLAS's `MlasQuantizeBlockwise`, so the bytes are ONNX Runtime's own (codes past `K` are
//! 0; an unused zero-point nibble is 8).

use std::str::FromStr;

use crate::error::{LensError, Result};

/// Which weights a bundle's forward graph holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightFormat {
    /// Every weight in f32 (exact: the reference format).
    F32,
    /// The block matrices (attention and MLP) as 8-bit block-wise codes; an untied embedding
    /// table in f16; norms, biases and the unembedding in f32.
    Int8,
    /// As [`WeightFormat::Int8`] with 4-bit codes.
    Int4,
}

impl WeightFormat {
    /// Every format, exact first.
    pub const ALL: [WeightFormat; 3] = [WeightFormat::F32, WeightFormat::Int8, WeightFormat::Int4];

    /// `f32`, `int8` or `int4` (the CLI's and the metadata's spelling).
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Int8 => "int8",
            WeightFormat::Int4 => "int4",
        }
    }

    /// Whether the forward graph computes with exactly the checkpoint's weights (f32).
    pub fn is_exact(self) -> bool {
        self == WeightFormat::F32
    }

    /// The quantization this format uses (`None` for f32).
    pub fn spec(self) -> Option<QuantSpec> {
        match self {
            WeightFormat::F32 => None,
            WeightFormat::Int8 => Some(QuantSpec::INT8),
            WeightFormat::Int4 => Some(QuantSpec::INT4),
        }
    }

    /// Bytes a matrix of `count` weights takes in this format (codes, scales, zero points).
    pub fn matrix_bytes(self, count: u64) -> u64 {
        match self.spec() {
            None => count * 4,
            Some(s) => {
                let blocks = count.div_ceil(s.block_size as u64);
                let zp = if s.symmetric { 0 } else { blocks };
                count * u64::from(s.bits) / 8 + blocks * 4 + zp
            }
        }
    }

    /// Reads a bundle's `lens.weights` value.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `--weights`: a format, or `auto` (f32 when it fits the memory available, else int8, else int4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsChoice {
    /// Decide from the model's size and the memory available now ([`choose_auto`]).
    #[default]
    Auto,
    /// This format.
    Exact(WeightFormat),
}

impl FromStr for WeightsChoice {
    type Err = LensError;
    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(WeightsChoice::Auto);
        }
        WeightFormat::parse(s)
            .map(WeightsChoice::Exact)
            .ok_or_else(|| LensError::invalid(format!("--weights {s:?} is not a weight format; use f32, int8, int4 or auto")))
    }
}

impl std::fmt::Display for WeightsChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightsChoice::Auto => f.write_str("auto"),
            WeightsChoice::Exact(w) => f.write_str(w.name()),
        }
    }
}

/// How one weight matrix is quantized for `MatMulNBits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    /// Bits per code: 4 or 8.
    pub bits: u8,
    /// Weights per block along `K` (a power of two, at least 16).
    pub block_size: usize,
    /// No zero points (the operator's default `2^(bits−1)`), else one per block.
    pub symmetric: bool,
    /// `MatMulNBits`'s `accuracy_level` (0: the provider's default, f32 compute on the CPU;
    /// 4: int8 compute of the activations).
    pub accuracy_level: i64,
}

impl QuantSpec {
    /// int8: block 32, symmetric, f32 compute (see the README's measurements).
    pub const INT8: QuantSpec = QuantSpec { bits: 8, block_size: 32, symmetric: true, accuracy_level: 0 };
    /// int4: block 32, zero points, f32 compute (see the README's measurements).
    pub const INT4: QuantSpec = QuantSpec { bits: 4, block_size: 32, symmetric: false, accuracy_level: 0 };

    /// Checks the spec is one the operator takes.
    pub fn check(&self) -> Result<()> {
        if !matches!(self.bits, 4 | 8) {
            return Err(LensError::invalid(format!("{} bits per weight is not supported (4 or 8)", self.bits)));
        }
        if self.block_size < 16 || !self.block_size.is_power_of_two() {
            return Err(LensError::invalid(format!("block size {} is not a power of two of at least 16", self.block_size)));
        }
        Ok(())
    }

    /// Blocks per column for `k` input features.
    pub fn blocks(&self, k: usize) -> usize {
        k.div_ceil(self.block_size)
    }

    /// Bytes of codes per block.
    pub fn blob_size(&self) -> usize {
        self.block_size * usize::from(self.bits) / 8
    }

    /// Bytes of the zero-point input for `n` columns of `k` features (0 when symmetric): one
    /// byte per block at 8 bits, two blocks per byte (low nibble first, each column padded to
    /// whole bytes) at 4 bits.
    pub fn zero_point_bytes(&self, k: usize, n: usize) -> usize {
        if self.symmetric { 0 } else { n * (self.blocks(k) * usize::from(self.bits)).div_ceil(8) }
    }
}

/// One matrix in `MatMulNBits`' layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// Codes `[N, blocks, blob_size]`.
    pub codes: Vec<u8>,
    /// Scales `[N · blocks]`.
    pub scales: Vec<f32>,
    /// Zero points (packed as [`QuantSpec::zero_point_bytes`] says), when not symmetric.
    pub zero_points: Option<Vec<u8>>,
}

/// Scale and zero point of one block (`vals`: its weights, padding excluded).
fn block_params(vals: &[f32], spec: &QuantSpec) -> (f32, u8) {
    let levels = (1u32 << spec.bits) - 1;
    let mid = 1u32 << (spec.bits - 1);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if vals.is_empty() {
        (lo, hi) = (0.0, 0.0);
    }
    if spec.symmetric {
        let extreme = if hi.abs() > lo.abs() { hi } else { lo };
        (extreme / -(mid as f32), mid as u8)
    } else {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = (hi - lo) / levels as f32;
        let zp = if scale != 0.0 { -lo / scale } else { 0.0 };
        (scale, zp.round().clamp(0.0, levels as f32) as u8)
    }
}

/// Quantizes `w`, a row-major `[k, n]` MatMul weight (`x · w`), into `spec`'s layout.
pub fn quantize(w: &[f32], k: usize, n: usize, spec: &QuantSpec) -> Result<Quantized> {
    spec.check()?;
    if w.len() != k * n || k == 0 || n == 0 {
        return Err(LensError::invalid(format!("internal: quantize got {} values for a {k} x {n} matrix", w.len())));
    }
    let (bs, blocks, blob) = (spec.block_size, spec.blocks(k), spec.blob_size());
    let levels = ((1u32 << spec.bits) - 1) as f32;
    let mut codes = vec![0u8; n * blocks * blob];
    let mut scales = vec![0f32; n * blocks];
    let zp_row = if spec.symmetric { 0 } else { (blocks * usize::from(spec.bits)).div_ceil(8) };
    // An unused high nibble (4 bits, an odd number of blocks) holds 8, as ONNX Runtime writes it.
    let mut zero_points = vec![if spec.bits == 4 { 0x88u8 } else { 0 }; n * zp_row];
    let mut col = vec![0f32; bs];
    for j in 0..n {
        for b in 0..blocks {
            let start = b * bs;
            let len = bs.min(k - start);
            col.clear();
            col.extend((start..start + len).map(|i| w.get(i * n + j).copied().unwrap_or(0.0)));
            let (scale, zp) = block_params(&col, spec);
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            if let Some(s) = scales.get_mut(j * blocks + b) {
                *s = scale;
            }
            if !spec.symmetric {
                set_code(&mut zero_points, j * zp_row, b, spec.bits, zp);
            }
            // Codes past K stay 0, as ONNX Runtime's quantizer leaves them (the kernel reads K rows).
            let base = (j * blocks + b) * blob;
            for (i, &v) in col.iter().enumerate() {
                let q = (v * inv + f32::from(zp)).round().clamp(0.0, levels) as u8;
                set_code(&mut codes, base, i, spec.bits, q);
            }
        }
    }
    Ok(Quantized { codes, scales, zero_points: (!spec.symmetric).then_some(zero_points) })
}

/// Writes code `q` as element `i` of the packed run starting at byte `base`.
fn set_code(buf: &mut [u8], base: usize, i: usize, bits: u8, q: u8) {
    if bits == 8 {
        if let Some(b) = buf.get_mut(base + i) {
            *b = q;
        }
    } else if let Some(b) = buf.get_mut(base + i / 2) {
        if i.is_multiple_of(2) {
            *b = (*b & 0xF0) | (q & 0x0F);
        } else {
            *b = (*b & 0x0F) | (q << 4);
        }
    }
}

/// Element `i` of the packed run starting at byte `base`.
fn get_code(buf: &[u8], base: usize, i: usize, bits: u8) -> u8 {
    if bits == 8 {
        buf.get(base + i).copied().unwrap_or(0)
    } else {
        let b = buf.get(base + i / 2).copied().unwrap_or(0);
        if i.is_multiple_of(2) { b & 0x0F } else { b >> 4 }
    }
}

/// The `[k, n]` matrix that `q` stands for: `(code − zero_point) · scale` (what the operator
/// multiplies by).
pub fn dequantize(q: &Quantized, k: usize, n: usize, spec: &QuantSpec) -> Vec<f32> {
    let (bs, blocks, blob) = (spec.block_size, spec.blocks(k), spec.blob_size());
    let zp_row = (blocks * usize::from(spec.bits)).div_ceil(8);
    let mid = 1u8 << (spec.bits - 1);
    let mut out = vec![0f32; k * n];
    for j in 0..n {
        for b in 0..blocks {
            let scale = q.scales.get(j * blocks + b).copied().unwrap_or(0.0);
            let zp = match &q.zero_points {
                Some(z) => get_code(z, j * zp_row, b, spec.bits),
                None => mid,
            };
            for i in 0..bs.min(k - b * bs) {
                let code = get_code(&q.codes, (j * blocks + b) * blob, i, spec.bits);
                if let Some(o) = out.get_mut((b * bs + i) * n + j) {
                    *o = (f32::from(code) - f32::from(zp)) * scale;
                }
            }
        }
    }
    out
}

/// Whether a bundle initializer (canonical name) is a block matrix that quantized formats store
/// as codes: the attention projections and the MLP matrices.
pub fn is_quantized_matrix(name: &str) -> bool {
    const MATRICES: [&str; 7] = ["attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_gate", "mlp.W_out"];
    name.starts_with("blocks.") && MATRICES.iter().any(|m| name.ends_with(&format!(".{m}")))
}

/// Whether a bundle in `format` stores initializer `name` in f16: a quantized bundle's embedding
/// table (only looked up: a Gather and a Cast of the rows) and its unembedding (which the graph then
/// leaves out: the lens kernel widens it slice by slice and is the model's head). Each costs half of
/// f32: Llama-3-8B's are 1.05 GB each instead of 2.1 GB, Gemma-2-9B's tied one 1.8 GB instead of
/// 3.7 GB. The hub ships both in bf16, whose values f16 holds exactly down to 6e-5 (below, to
/// within 3e-8): `tied` says the unembedding is the embedding itself.
pub fn stores_half(name: &str, format: WeightFormat, tied: bool) -> bool {
    !format.is_exact() && (name == crate::build::names::EMBED || (!tied && name == crate::build::names::UNEMBED))
}

/// Suffix of a quantized matrix's codes initializer (`blocks.0.attn.W_Q.codes`).
pub const CODES_SUFFIX: &str = ".codes";
/// Suffix of its scales.
pub const SCALES_SUFFIX: &str = ".scales";
/// Suffix of its zero points.
pub const ZERO_POINTS_SUFFIX: &str = ".zero_points";

/// What `auto` chose, and why (said on stderr, in the status bar and in the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoChoice {
    /// The format.
    pub format: WeightFormat,
    /// One line: sizes and memory that decided it.
    pub reason: String,
}

/// Memory a lens run needs with a bundle of `bundle_bytes`: the README measures 1.1–1.3× the
/// weights for a whole run (weights, trace, the unembedding's buffer); 1.3× is taken.
pub fn run_bytes(bundle_bytes: u64) -> u64 {
    bundle_bytes + bundle_bytes * 3 / 10
}

/// `auto`: f32 when a run with f32 weights takes at most 80 % of `available` bytes, else int8
/// under the same rule, else int4 (said to be tight when even that exceeds it).
/// `bytes` gives each format's bundle size.
pub fn choose_auto(bytes: impl Fn(WeightFormat) -> u64, available: Option<u64>) -> AutoChoice {
    let gb = |b: u64| b as f64 / 1e9;
    let Some(avail) = available else {
        return AutoChoice { format: WeightFormat::F32, reason: "auto: f32 (the memory available could not be read on this system)".into() };
    };
    let budget = avail / 10 * 8;
    for format in WeightFormat::ALL {
        let need = run_bytes(bytes(format));
        if need <= budget {
            let why = if format.is_exact() {
                format!("auto: f32 (a run needs about {:.1} GB; {:.1} GB available)", gb(need), gb(avail))
            } else {
                format!(
                    "auto: {} weights (f32 would need about {:.1} GB, {} about {:.1} GB; {:.1} GB available)",
                    format.name(),
                    gb(run_bytes(bytes(WeightFormat::F32))),
                    format.name(),
                    gb(need),
                    gb(avail)
                )
            };
            return AutoChoice { format, reason: why };
        }
    }
    let need = run_bytes(bytes(WeightFormat::Int4));
    AutoChoice {
        format: WeightFormat::Int4,
        reason: format!(
            "auto: int4 weights, the smallest format; a run needs about {:.1} GB and only {:.1} GB are available: it may not fit",
            gb(need),
            gb(avail)
        ),
    }
}

/// Memory available to a new allocation now (`MemAvailable` of `/proc/meminfo`; `None` on systems
/// without it).
pub fn available_memory() -> Option<u64> {
    if let Some(v) = std::env::var("LOGIT_LENS_AVAILABLE_MEMORY").ok().and_then(|s| s.trim().parse::<u64>().ok()) {
        return Some(v);
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn choice_parses_and_refuses() {
        assert_eq!("int4".parse::<WeightsChoice>().ok(), Some(WeightsChoice::Exact(WeightFormat::Int4)));
        assert_eq!("auto".parse::<WeightsChoice>().ok(), Some(WeightsChoice::Auto));
        let e = "int3".parse::<WeightsChoice>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("int3") && e.contains("f32, int8, int4 or auto"), "{e}");
    }

    #[test]
    fn auto_picks_the_largest_format_that_fits() {
        let gb = 1_000_000_000u64;
        // An 8B model: 32 GB f32, 8.6 GB int8, 4.9 GB int4 (weights only).
        let bytes = |f: WeightFormat| match f {
            WeightFormat::F32 => 32 * gb,
            WeightFormat::Int8 => 86 * gb / 10,
            WeightFormat::Int4 => 49 * gb / 10,
        };
        assert_eq!(choose_auto(bytes, Some(64 * gb)).format, WeightFormat::F32);
        assert_eq!(choose_auto(bytes, Some(24 * gb)).format, WeightFormat::Int8);
        let c = choose_auto(bytes, Some(12 * gb));
        assert_eq!(c.format, WeightFormat::Int4);
        assert!(c.reason.contains("f32 would need about 41.6 GB"), "{}", c.reason);
        let tight = choose_auto(bytes, Some(4 * gb));
        assert_eq!(tight.format, WeightFormat::Int4);
        assert!(tight.reason.contains("may not fit"), "{}", tight.reason);
        assert_eq!(choose_auto(bytes, None).format, WeightFormat::F32);
    }

    #[test]
    fn roundtrip_error_is_within_a_step() {
        let (k, n) = (40, 3);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        for spec in [QuantSpec::INT8, QuantSpec::INT4, QuantSpec { symmetric: true, ..QuantSpec::INT4 }, QuantSpec { symmetric: false, ..QuantSpec::INT8 }] {
            let q = quantize(&w, k, n, &spec).unwrap();
            assert_eq!(q.codes.len(), n * spec.blocks(k) * spec.blob_size());
            let d = dequantize(&q, k, n, &spec);
            for (i, (a, b)) in w.iter().zip(&d).enumerate() {
                let block = (i / n) / spec.block_size;
                let scale = q.scales[(i % n) * spec.blocks(k) + block].abs();
                // Symmetric: the value opposite the block's extreme may be clamped by one step (the
                // codes run from −2^(bits−1) to 2^(bits−1) − 1), as in ONNX Runtime's quantizer.
                let bound = if spec.symmetric { scale * 1.0001 } else { scale * 0.5 + 1e-6 };
                assert!((a - b).abs() <= bound, "{spec:?} {i}: {a} vs {b} (scale {scale})");
            }
        }
    }

    #[test]
    fn matrix_bytes_counts_codes_scales_and_zero_points() {
        assert_eq!(WeightFormat::F32.matrix_bytes(64), 256);
        assert_eq!(WeightFormat::Int8.matrix_bytes(64), 64 + 2 * 4);
        assert_eq!(WeightFormat::Int4.matrix_bytes(64), 32 + 2 * 4 + 2);
        assert!(is_quantized_matrix("blocks.3.mlp.W_gate") && !is_quantized_matrix("embed.W_E") && !is_quantized_matrix("blocks.0.attn.b_Q"));
    }
}
