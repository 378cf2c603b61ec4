//! Random GPT-2 checkpoints in Hugging Face layout (`config.json`, `model.safetensors`,
//! `tokenizer.json`), written in a streaming way so that even gpt2-xl-shaped checkpoints (1.5 B
//! parameters) can be generated in seconds without holding any tensor in memory.
//!
//! Values are deterministic: every tensor is drawn from its own generator, seeded from the
//! checkpoint seed and the tensor's bare name (`h.0.ln_1.weight`). So the same seed gives the same
//! values whatever the dtype or key style (up to the dtype's rounding), and `lm_head.weight` is a
//! bit-exact copy of `wte.weight`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Storage dtype of the floating-point tensors in `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    /// The safetensors header name of this dtype.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
}

/// Tensor key style: `transformer.h.0.ln_1.weight` (as saved from `GPT2LMHeadModel`) or
/// `h.0.ln_1.weight` (as saved from `GPT2Model`, e.g. the hub's `gpt2` repository).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    Prefixed,
    Bare,
}

/// Description of a random GPT-2 checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomGpt2 {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub vocab_size: usize,
    pub n_positions: usize,
    pub seed: u64,
    pub dtype: Dtype,
    pub key_style: KeyStyle,
    /// Also write the HF causal-mask buffers `h.{i}.attn.bias` `[1,1,n_pos,n_pos]` (lower
    /// triangle of ones) and `h.{i}.attn.masked_bias` (scalar -1e4), which loaders must ignore.
    pub with_attn_bias: bool,
    /// Also write `lm_head.weight` `[vocab, n_embd]`, equal to `wte.weight` (always unprefixed).
    pub with_lm_head: bool,
}

impl RandomGpt2 {
    /// 2 layers, 4 heads, n_embd 32, vocab 50257, n_positions 64, F32, prefixed keys, no extras.
    pub fn tiny(seed: u64) -> Self {
        RandomGpt2 {
            n_layer: 2,
            n_head: 4,
            n_embd: 32,
            vocab_size: 50257,
            n_positions: 64,
            seed,
            dtype: Dtype::F32,
            key_style: KeyStyle::Prefixed,
            with_attn_bias: false,
            with_lm_head: false,
        }
    }

    /// The shape of a released GPT-2 checkpoint (random values, seed 0, F16, prefixed keys):
    /// `distilgpt2`, `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`.
    pub fn gpt2_shape(name: &str) -> Option<Self> {
        let (n_layer, n_head, n_embd) = match name {
            "distilgpt2" => (6, 12, 768),
            "gpt2" => (12, 12, 768),
            "gpt2-medium" => (24, 16, 1024),
            "gpt2-large" => (36, 20, 1280),
            "gpt2-xl" => (48, 25, 1600),
            _ => return None,
        };
        Some(RandomGpt2 {
            n_layer,
            n_head,
            n_embd,
            vocab_size: 50257,
            n_positions: 1024,
            seed: 0,
            dtype: Dtype::F16,
            key_style: KeyStyle::Prefixed,
            with_attn_bias: false,
            with_lm_head: false,
        })
    }

    /// Number of trainable parameters (wte, wpe, blocks, ln_f; not lm_head or mask buffers).
    pub fn n_params(&self) -> usize {
        let d = self.n_embd;
        let per_block = 2 * d // ln_1
            + d * 3 * d + 3 * d // c_attn
            + d * d + d // attn.c_proj
            + 2 * d // ln_2
            + d * 4 * d + 4 * d // c_fc
            + 4 * d * d + d; // mlp.c_proj
        self.vocab_size * d + self.n_positions * d + self.n_layer * per_block + 2 * d
    }

    /// Full key of a tensor given its bare name (`lm_head.weight` is never prefixed).
    pub fn key(&self, bare: &str) -> String {
        match self.key_style {
            KeyStyle::Prefixed if bare != "lm_head.weight" => format!("transformer.{bare}"),
            _ => bare.to_owned(),
        }
    }
}

/// The cases of the transformers-in-float64 fixtures (patching, vector-Jacobian products): the
/// random GPT-2 of `fixtures/tuned_lens/gpt2` and eleven checkpoints of `fixtures/families`, one
/// per family variant.
pub const FAMILY_CASES: [&str; 12] = [
    "gpt2",
    "ctrl_f32",
    "gpt_neo_f32",
    "gptj_f32",
    "gpt_neox_parallel_f32",
    "gpt_neox_sequential_f16",
    "llama_f32",
    "mistral_f32",
    "qwen2_f16",
    "qwen3_f32",
    "gemma2_f32",
    "gemma3_v450_f32",
];

/// Path of the GPT-2 `tokenizer.json`: `$LENS_GPT2_TOKENIZER` if set, else the repository's
/// `shared/gpt2-tokenizer/tokenizer.json` next to the workspace, else `/work/shared/...`.
pub fn gpt2_tokenizer_json() -> PathBuf {
    if let Some(p) = std::env::var_os("LENS_GPT2_TOKENIZER") {
        return PathBuf::from(p);
    }
    let beside = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/gpt2-tokenizer/tokenizer.json"));
    if beside.is_file() {
        return beside;
    }
    PathBuf::from("/work/shared/gpt2-tokenizer/tokenizer.json")
}

/// A fresh, not yet existing path under the system temp dir, unique within and across processes:
/// `{temp}/lens-{tag}-{pid}-{nanos}-{counter}`. The caller creates (and removes) it.
pub fn unique_temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!("lens-{tag}-{}-{nanos}-{n}", std::process::id()))
}

/// A created temporary folder that is removed, with its contents, when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `{temp}/lens-{tag}-…` (see [`unique_temp_dir`]).
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let p = unique_temp_dir(tag);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    /// The folder.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The HF GPT-2 `config.json` for `spec`.
pub fn config_json(spec: &RandomGpt2) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": spec.vocab_size,
        "n_positions": spec.n_positions,
        "n_ctx": spec.n_positions,
        "n_embd": spec.n_embd,
        "n_layer": spec.n_layer,
        "n_head": spec.n_head,
        "n_inner": null,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "scale_attn_weights": true,
        "tie_word_embeddings": true,
        "torch_dtype": match spec.dtype {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
        },
    })
}

/// Write `dir/config.json`, `dir/model.safetensors` and `dir/tokenizer.json` (creating `dir`).
pub fn write_checkpoint(dir: &Path, spec: &RandomGpt2) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = serde_json::to_string_pretty(&config_json(spec)).map_err(io::Error::other)?;
    std::fs::write(dir.join("config.json"), config)?;
    write_safetensors(&dir.join("model.safetensors"), spec)?;
    let tok = gpt2_tokenizer_json();
    std::fs::copy(&tok, dir.join("tokenizer.json")).map_err(|e| io::Error::new(e.kind(), format!("copying GPT-2 tokenizer from {}: {e}", tok.display())))?;
    Ok(())
}

/// How a tensor's values are made.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// mean + std * N(0, 1), from a generator seeded by `seed_name` (a bare tensor name).
    Normal { mean: f32, std: f32, seed_name: &'static str },
    /// Same as `Normal`, but seeded by a per-layer name.
    NormalLayer { mean: f32, std: f32, layer: usize, suffix: &'static str },
    /// `[1,1,n,n]` lower triangle (incl. diagonal) of ones, zeros above.
    CausalMask { n: usize },
    /// A single value.
    Scalar(f32),
}

struct Plan {
    key: String,
    shape: Vec<usize>,
    init: Init,
}

fn plan(spec: &RandomGpt2) -> Vec<Plan> {
    let d = spec.n_embd;
    let v = spec.vocab_size;
    let w_std = |fan_in: usize| 0.5 / (fan_in as f32).sqrt();
    let mut out = Vec::new();
    let mut push = |bare: String, shape: Vec<usize>, init: Init| {
        out.push(Plan { key: spec.key(&bare), shape, init });
    };
    push("wte.weight".into(), vec![v, d], Init::Normal { mean: 0.0, std: 0.1, seed_name: "wte.weight" });
    push("wpe.weight".into(), vec![spec.n_positions, d], Init::Normal { mean: 0.0, std: 0.1, seed_name: "wpe.weight" });
    for l in 0..spec.n_layer {
        let nl = |mean: f32, std: f32, suffix: &'static str| Init::NormalLayer { mean, std, layer: l, suffix };
        push(format!("h.{l}.ln_1.weight"), vec![d], nl(1.0, 0.2, "ln_1.weight"));
        push(format!("h.{l}.ln_1.bias"), vec![d], nl(0.0, 0.1, "ln_1.bias"));
        if spec.with_attn_bias {
            push(format!("h.{l}.attn.bias"), vec![1, 1, spec.n_positions, spec.n_positions], Init::CausalMask { n: spec.n_positions });
            push(format!("h.{l}.attn.masked_bias"), vec![], Init::Scalar(-1e4));
        }
        push(format!("h.{l}.attn.c_attn.weight"), vec![d, 3 * d], nl(0.0, w_std(d), "attn.c_attn.weight"));
        push(format!("h.{l}.attn.c_attn.bias"), vec![3 * d], nl(0.0, 0.1, "attn.c_attn.bias"));
        push(format!("h.{l}.attn.c_proj.weight"), vec![d, d], nl(0.0, w_std(d), "attn.c_proj.weight"));
        push(format!("h.{l}.attn.c_proj.bias"), vec![d], nl(0.0, 0.1, "attn.c_proj.bias"));
        push(format!("h.{l}.ln_2.weight"), vec![d], nl(1.0, 0.2, "ln_2.weight"));
        push(format!("h.{l}.ln_2.bias"), vec![d], nl(0.0, 0.1, "ln_2.bias"));
        push(format!("h.{l}.mlp.c_fc.weight"), vec![d, 4 * d], nl(0.0, w_std(d), "mlp.c_fc.weight"));
        push(format!("h.{l}.mlp.c_fc.bias"), vec![4 * d], nl(0.0, 0.1, "mlp.c_fc.bias"));
        push(format!("h.{l}.mlp.c_proj.weight"), vec![4 * d, d], nl(0.0, w_std(4 * d), "mlp.c_proj.weight"));
        push(format!("h.{l}.mlp.c_proj.bias"), vec![d], nl(0.0, 0.1, "mlp.c_proj.bias"));
    }
    push("ln_f.weight".into(), vec![d], Init::Normal { mean: 1.0, std: 0.2, seed_name: "ln_f.weight" });
    push("ln_f.bias".into(), vec![d], Init::Normal { mean: 0.0, std: 0.1, seed_name: "ln_f.bias" });
    if spec.with_lm_head {
        push("lm_head.weight".into(), vec![v, d], Init::Normal { mean: 0.0, std: 0.1, seed_name: "wte.weight" });
    }
    out
}

/// Write `model.safetensors` tensor by tensor (8-byte LE header length, JSON header padded with
/// spaces to a multiple of 8 bytes, then the raw little-endian data in header order).
fn write_safetensors(path: &Path, spec: &RandomGpt2) -> io::Result<()> {
    let plans = plan(spec);
    let esize = spec.dtype.size();
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for p in &plans {
        let n: usize = p.shape.iter().product();
        let end = offset + n * esize;
        header.insert(
            p.key.clone(),
            serde_json::json!({
                "dtype": spec.dtype.safetensors_name(),
                "shape": p.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(io::Error::other)?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }

    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    let mut vals: Vec<f32> = Vec::with_capacity(CHUNK);
    let mut bytes: Vec<u8> = Vec::with_capacity(CHUNK * 4);
    for p in &plans {
        let n: usize = p.shape.iter().product();
        match p.init {
            Init::Normal { mean, std, seed_name } => {
                let seed = tensor_seed(spec.seed, seed_name);
                write_normal(&mut w, spec.dtype, n, mean, std, seed, &mut vals, &mut bytes)?;
            }
            Init::NormalLayer { mean, std, layer, suffix } => {
                let seed = tensor_seed(spec.seed, &format!("h.{layer}.{suffix}"));
                write_normal(&mut w, spec.dtype, n, mean, std, seed, &mut vals, &mut bytes)?;
            }
            Init::CausalMask { n: side } => {
                for row in 0..side {
                    vals.clear();
                    vals.extend((0..side).map(|col| if col <= row { 1.0 } else { 0.0 }));
                    encode(spec.dtype, &vals, &mut bytes);
                    w.write_all(&bytes)?;
                }
            }
            Init::Scalar(x) => {
                encode(spec.dtype, &[x], &mut bytes);
                w.write_all(&bytes)?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

const CHUNK: usize = 1 << 16;

#[allow(clippy::too_many_arguments)]
fn write_normal(w: &mut impl Write, dtype: Dtype, n: usize, mean: f32, std: f32, seed: u64, vals: &mut Vec<f32>, bytes: &mut Vec<u8>) -> io::Result<()> {
    let mut g = NormalGen::new(seed);
    let mut left = n;
    while left > 0 {
        let m = left.min(CHUNK);
        vals.clear();
        vals.resize(m, 0.0);
        g.fill(vals);
        for x in vals.iter_mut() {
            *x = mean + std * *x;
        }
        encode(dtype, vals, bytes);
        w.write_all(bytes)?;
        left -= m;
    }
    Ok(())
}

fn encode(dtype: Dtype, vals: &[f32], bytes: &mut Vec<u8>) {
    bytes.clear();
    match dtype {
        Dtype::F32 => {
            for x in vals {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        Dtype::F16 => {
            for x in vals {
                bytes.extend_from_slice(&half::f16::from_f32(*x).to_bits().to_le_bytes());
            }
        }
        Dtype::BF16 => {
            for x in vals {
                bytes.extend_from_slice(&half::bf16::from_f32(*x).to_bits().to_le_bytes());
            }
        }
    }
}

/// Seed of one tensor's generator: SplitMix64 of (checkpoint seed, FNV-1a of the bare name).
fn tensor_seed(seed: u64, bare_name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bare_name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut s = SplitMix64(seed ^ h.rotate_left(17));
    s.next_u64()
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for random weights.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Standard normal deviates by Marsaglia's polar method, two 24-bit uniforms per `u64`.
struct NormalGen {
    rng: SplitMix64,
}

impl NormalGen {
    fn new(seed: u64) -> Self {
        NormalGen { rng: SplitMix64(seed) }
    }

    /// One pair of independent N(0, 1) deviates.
    fn pair(&mut self) -> (f32, f32) {
        const SCALE: f32 = 2.0 / 16_777_216.0; // 2 / 2^24
        loop {
            let r = self.rng.next_u64();
            // Offset by half a step so that u, v are symmetric around 0 and never exactly 0.
            let u = ((r >> 40) as f32 + 0.5) * SCALE - 1.0;
            let v = (((r >> 16) & 0xFF_FFFF) as f32 + 0.5) * SCALE - 1.0;
            let s = u * u + v * v;
            if s < 1.0 && s > 0.0 {
                let m = (-2.0 * s.ln() / s).sqrt();
                return (u * m, v * m);
            }
        }
    }

    fn fill(&mut self, out: &mut [f32]) {
        let mut chunks = out.chunks_exact_mut(2);
        for c in &mut chunks {
            let (a, b) = self.pair();
            c[0] = a;
            c[1] = b;
        }
        if let [last] = chunks.into_remainder() {
            *last = self.pair().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_generator_moments() {
        let mut g = NormalGen::new(42);
        let mut v = vec![0f32; 200_001];
        g.fill(&mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn n_params_matches_gpt2() {
        assert_eq!(RandomGpt2::gpt2_shape("gpt2").unwrap().n_params(), 124_439_808);
        assert_eq!(RandomGpt2::gpt2_shape("gpt2-xl").unwrap().n_params(), 1_557_611_200);
        assert!(RandomGpt2::gpt2_shape("gpt3").is_none());
    }

    /// Streams a full gpt2-shaped (124 M parameters, F16) checkpoint and checks it parses.
    /// Run with `cargo test -p lens_tests --lib -- --ignored`.
    #[test]
    #[ignore = "writes ~250 MB"]
    fn gpt2_shape_streams_and_parses() {
        let spec = RandomGpt2 { with_attn_bias: true, ..RandomGpt2::gpt2_shape("gpt2").unwrap() };
        let dir = unique_temp_dir("fixture-gpt2");
        let t0 = std::time::Instant::now();
        write_checkpoint(&dir, &spec).unwrap();
        eprintln!("gpt2-shaped checkpoint written in {:?}", t0.elapsed());
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let wte = st.tensor("transformer.wte.weight").unwrap();
        assert_eq!(wte.shape(), [50257, 768]);
        assert_eq!(wte.dtype(), safetensors::Dtype::F16);
        assert_eq!(st.tensor("transformer.h.11.attn.bias").unwrap().shape(), [1, 1, 1024, 1024]);
        assert_eq!(st.tensor("transformer.h.0.attn.masked_bias").unwrap().shape(), [0usize; 0]);
        assert_eq!(st.tensors().len(), 2 + 12 * 14 + 2);
        assert!(dir.join("tokenizer.json").is_file());
        drop(bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
