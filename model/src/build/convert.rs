//! Hugging Face checkpoint folder -> lens bundle (README, "The lens bundle"), generic over the family.
//!
//! The family file ([`crate::build::arch`]) gives the one tensor plan; the converter reads each entry
//! from the memory-mapped checkpoint, converts it to f32 (picking rows or columns, transposing
//! `nn.Linear` weights) and appends it to the external data file `model.onnx.data`. Whole-tensor
//! copies (the embedding) are streamed in 1 MiB pieces, so memory stays near the size of the
//! largest transformed matrix. Then the lens graph (`model.onnx`) and the last-block graph
//! (`last_block.onnx`) are written; both point into the same data file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::build::arch::{Arch, Family, Norm, Pick, Source, TensorPlan, block_fn, names};
use crate::build::graph::{ExternalTensor, QuantLayout, build_last_block_model, build_lens_model, hooks_of};
use crate::build::meta_keys;
use crate::build::onnx::{DT_FLOAT, DT_FLOAT16, DT_UINT8};
use crate::build::quant::{CODES_SUFFIX, QuantSpec, SCALES_SUFFIX, WeightFormat, ZERO_POINTS_SUFFIX, quantize};
use crate::error::{LensError, Progress, Result};
use crate::source::checkpoint::{Checkpoint, TensorRef, decode_f32, has_weights};
use crate::source::config::ModelShape;

/// File name of the ONNX graph in a bundle.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of the last-block graph (the `last-block` / `last-mlp` decoders) in a bundle.
pub const LAST_BLOCK_FILE: &str = "last_block.onnx";
/// File name of the external weight data in a bundle.
pub const DATA_FILE: &str = "model.onnx.data";
/// File name of the tokenizer in a bundle.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The bundle format version written into `metadata_props` for f32 weights.
pub const FORMAT_VERSION: &str = "3";
/// The format version of a bundle with quantized weights (`MatMulNBits`): a reader of formats 1
/// to 3 refuses it by its version instead of failing on the operator.
pub const QUANTIZED_FORMAT_VERSION: &str = "4";
const ALIGN: u64 = 4096;

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    /// The bundle folder.
    pub bundle: PathBuf,
    /// The model's family.
    pub family: Family,
    /// The model's shape.
    pub shape: ModelShape,
    /// sha256 of the weight data (as written: f32, or codes, scales and zero points).
    pub weights_sha256: String,
    /// The weight format written.
    pub weights: WeightFormat,
}

/// Whether `dir` looks like a Hugging Face checkpoint folder (`config.json` and weights:
/// safetensors, sharded or not, or a `pytorch_model.bin`).
pub fn is_hf_checkpoint(dir: &Path) -> bool {
    dir.join("config.json").is_file() && has_weights(dir)
}

/// Converts the Hugging Face checkpoint in `src` into a lens bundle at `dst`.
///
/// `dst` must not exist or be an empty folder. The bundle is written into a temporary sibling
/// folder and renamed into place at the end, so a failed or cancelled conversion leaves nothing.
pub fn convert_hf_checkpoint(src: &Path, dst: &Path, progress: &Progress) -> Result<ConvertSummary> {
    convert_hf_checkpoint_as(src, dst, WeightFormat::F32, progress)
}

/// [`convert_hf_checkpoint`] writing the block matrices in `weights` (f32, int8 or int4 codes
/// for `MatMulNBits`); embeddings, norms, biases and the unembedding stay f32.
pub fn convert_hf_checkpoint_as(src: &Path, dst: &Path, weights: WeightFormat, progress: &Progress) -> Result<ConvertSummary> {
    if !src.is_dir() {
        return Err(LensError::bad_file(src, "not a folder; expected a Hugging Face checkpoint folder (config.json + model.safetensors)"));
    }
    let arch = Arch::from_hf_config(&src.join("config.json"))?;
    let ckpt = Checkpoint::open(src, arch.family.base_prefix(), arch.key_prefixes)?;
    check_sizes_against_checkpoint(&arch, &ckpt, &src.join("config.json"))?;
    if dst.exists() {
        let empty = std::fs::read_dir(dst).map_err(|e| LensError::io(dst, e))?.next().is_none();
        if !empty {
            return Err(LensError::invalid(format!("{} already exists and is not empty; remove it or choose another output folder", dst.display())));
        }
    }
    let parent = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| LensError::io(parent, e))?;
    let file_name = dst.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = parent.join(format!(".{file_name}.partial-{}-{nanos}-{unique}", std::process::id()));
    sweep_stale_partials(parent);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| LensError::io(&tmp, e))?;
    let marker = tmp.join(PARTIAL_MARKER);
    std::fs::write(&marker, marker_text()).map_err(|e| LensError::io(&marker, e))?;
    let name = src.canonicalize().ok().and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned())).unwrap_or_else(|| arch.family.model_type().into());
    let result = convert_into(src, &ckpt, &tmp, &arch, &name, weights, progress);
    match result {
        Ok(sha) => {
            if dst.exists() {
                let _ = std::fs::remove_dir(dst);
            }
            // The marker goes only once the bundle is in place: a failed rename leaves a folder a
            // later sweep recognises (and it is removed here at once).
            if let Err(e) = std::fs::rename(&tmp, dst) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(LensError::io(dst, e));
            }
            let _ = std::fs::remove_file(dst.join(PARTIAL_MARKER));
            Ok(ConvertSummary { bundle: dst.to_path_buf(), family: arch.family, shape: arch.shape.clone(), weights_sha256: sha, weights })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Checks config.json's sizes against the checkpoint before anything is planned or written (a
/// config that claims a million layers is refused in milliseconds, not after planning them): the
/// layer count against the checkpoint's layer indices, and the shapes of the tensors outside the
/// blocks (vocabulary, width, learned positions) against the headers, reading no tensor data.
fn check_sizes_against_checkpoint(arch: &Arch, ckpt: &Checkpoint, config: &Path) -> Result<()> {
    let n = arch.shape.n_layers;
    match ckpt.layer_count() {
        Some(have) if n > have => {
            return Err(LensError::bad_file(config, format!("config.json says {n} layers; the checkpoint holds weights for {have}")));
        }
        None if n > 0 => return Err(LensError::bad_file(config, format!("config.json says {n} layers; the checkpoint holds no layer weights"))),
        _ => {}
    }
    // The tensors outside the blocks (embedding, final norm, unembedding): the plan of the same
    // model without layers, shapes read from the headers.
    let tied = is_tied(arch, ckpt)?;
    let mut head = arch.clone();
    head.shape.n_layers = 0;
    for t in head.tensors(tied) {
        // A computed position table (CTRL's sinusoids) has no checkpoint tensor to check against:
        // its size is bounded instead (a config claiming a billion positions would allocate it).
        if let TensorPlan { dims, source: Source::Sinusoidal, .. } = &t {
            let bytes = dims.iter().try_fold(4usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
            if bytes > 1 << 30 {
                return Err(LensError::bad_file(
                    config,
                    format!("config.json's position count makes a sinusoidal table of shape {dims:?} ({:.1} GB); refused", bytes as f64 / 1e9),
                ));
            }
        }
        if let TensorPlan { name, dims, source: Source::Checkpoint { key, pick: Pick::All, transpose: false } } = &t {
            let shape = ckpt.shape_of(key)?;
            if shape != *dims {
                return Err(LensError::bad_file(config, format!("config.json implies {name} of shape {dims:?}; the checkpoint's {key} is {shape:?}")));
            }
        }
    }
    Ok(())
}

/// Marker written into every conversion's temporary folder: the process and the boot that own it.
const PARTIAL_MARKER: &str = ".logit-lens-partial";

/// This machine's boot id (Linux), so that a marker from another machine sharing the folder (a
/// network cache) is never taken for a dead process of this one.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned())
}

fn marker_text() -> String {
    format!("{} {}", std::process::id(), boot_id().unwrap_or_else(|| "-".into()))
}

/// Removes the temporary folders (`.NAME.partial-PID-NANOS-N`, holding our marker file) that
/// conversions left in `parent` when they were killed before cleaning up (Ctrl+C in the CLI).
/// Only folders whose marker names this machine's boot and a process that no longer runs are
/// removed (on systems without `/proc`: markers more than a day old); anything without the exact
/// name and the marker, or younger than a minute, is left alone.
pub fn sweep_stale_partials(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".partial-")).map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split('-').collect();
        if fields.len() != 3 || !fields.iter().all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(marker) = std::fs::read_to_string(e.path().join(PARTIAL_MARKER)) else { continue };
        let mut parts = marker.split_whitespace();
        let (Some(pid), Some(boot)) = (parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next()) else { continue };
        let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
        if pid == std::process::id() || age < std::time::Duration::from_secs(60) {
            continue;
        }
        let gone = match boot_id() {
            Some(here) if Path::new("/proc/self").exists() => boot == here && !Path::new("/proc").join(pid.to_string()).exists(),
            _ => age > std::time::Duration::from_secs(24 * 3600),
        };
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Whether the unembedding is the token embedding: `lm_head` absent (and the config ties them),
/// or present and bit-identical to the embedding.
fn is_tied(arch: &Arch, ckpt: &Checkpoint) -> Result<bool> {
    let embed_key = arch
        .tensors(true)
        .into_iter()
        .find(|t| t.name == names::EMBED)
        .and_then(|t| match t.source {
            Source::Checkpoint { key, .. } => Some(key),
            Source::Sinusoidal | Source::PlusOne { .. } => None,
        })
        .ok_or_else(|| LensError::invalid("internal: the tensor plan has no embedding"))?;
    if !ckpt.contains(arch.unembed_key) {
        if arch.tie_word_embeddings {
            return Ok(true);
        }
        return Err(LensError::bad_file(
            ckpt.first_path(),
            format!("missing tensor {:?}: config.json says the unembedding is not tied to the embedding", arch.unembed_key),
        ));
    }
    let (e, u) = (ckpt.tensor(&embed_key)?, ckpt.tensor(arch.unembed_key)?);
    Ok(e.dtype == u.dtype && e.shape == u.shape && e.data == u.data)
}

/// The f32 values of one planned tensor that needs picking or transposing (held in memory).
fn materialize(t: TensorRef<'_>, key: &str, pick: &Pick, transpose: bool, want: &[usize], path: &Path) -> Result<Vec<f32>> {
    let (rows, cols, two_d) = match t.shape {
        [r] => (*r, 1, false),
        [r, c] => (*r, *c, true),
        other => return Err(LensError::bad_file(path, format!("tensor {key} has shape {other:?}; expected a vector or a matrix"))),
    };
    let mut vals = Vec::with_capacity(rows * cols);
    decode_f32(t.dtype, &t.data, &mut vals).map_err(|m| LensError::bad_file(path, format!("tensor {key} {m}")))?;
    let shape_err = || LensError::bad_file(path, format!("tensor {key} has shape {:?}, config.json implies {want:?}", t.shape));
    let (picked, pr, pc) = match pick {
        Pick::All => (vals, rows, cols),
        Pick::Rows(ranges) => {
            let mut out = Vec::new();
            let mut n = 0;
            for r in ranges {
                out.extend_from_slice(vals.get(r.start * cols..r.end * cols).ok_or_else(shape_err)?);
                n += r.len();
            }
            (out, n, cols)
        }
        Pick::Cols(range) => {
            if !two_d || range.end > cols {
                return Err(shape_err());
            }
            let mut out = Vec::with_capacity(rows * range.len());
            for row in vals.chunks_exact(cols) {
                out.extend_from_slice(row.get(range.clone()).ok_or_else(shape_err)?);
            }
            (out, rows, range.len())
        }
    };
    let (out, dims) = if transpose {
        if !two_d {
            return Err(shape_err());
        }
        let mut tr = vec![0f32; picked.len()];
        for (i, row) in picked.chunks_exact(pc).enumerate() {
            for (j, &x) in row.iter().enumerate() {
                if let Some(slot) = tr.get_mut(j * pr + i) {
                    *slot = x;
                }
            }
        }
        (tr, vec![pc, pr])
    } else if two_d {
        (picked, vec![pr, pc])
    } else {
        (picked, vec![pr])
    };
    if dims != want {
        return Err(shape_err());
    }
    Ok(out)
}

/// Appends f32 values to the data file, hashing them.
struct DataWriter<'p> {
    path: &'p Path,
    w: BufWriter<File>,
    hasher: Sha256,
    offset: u64,
}

impl DataWriter<'_> {
    fn align(&mut self) -> Result<()> {
        let pad = (ALIGN - self.offset % ALIGN) % ALIGN;
        if pad > 0 {
            self.w.write_all(&vec![0u8; pad as usize]).map_err(|e| LensError::io(self.path, e))?;
            self.offset += pad;
        }
        Ok(())
    }
    fn write(&mut self, vals: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_bytes(&bytes)
    }
    /// Writes `vals` as f32, or as f16 where `half`; a value f16 cannot hold (beyond ±65504) is
    /// an error naming tensor `name`, never an infinity in the bundle.
    fn write_as(&mut self, vals: &[f32], half: bool, name: &str) -> Result<()> {
        if half {
            if let Some(bad) = vals.iter().find(|v| v.abs() > 65504.0) {
                return Err(LensError::invalid(format!(
                    "{name} holds {bad}, beyond f16's ±65504: a quantized bundle stores the embedding and unembedding in f16; convert this model with --weights f32"
                )));
            }
            let bytes: Vec<u8> = vals.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
            self.write_bytes(&bytes)
        } else {
            self.write(vals)
        }
    }
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.w.write_all(bytes).map_err(|e| LensError::io(self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
    /// Writes one aligned tensor and returns where it is.
    fn tensor(&mut self, name: String, dims: Vec<usize>, data_type: i32, bytes: &[u8], quant: Option<QuantLayout>) -> Result<ExternalTensor> {
        self.align()?;
        let offset = self.offset;
        self.write_bytes(bytes)?;
        Ok(ExternalTensor { name, dims, offset, length: bytes.len() as u64, data_type, quant })
    }
}

/// Writes `vals` (`[k, n]`, MatMul layout) as `MatMulNBits` codes, scales and zero points.
fn write_quantized(dw: &mut DataWriter<'_>, name: &str, vals: &[f32], dims: &[usize], spec: &QuantSpec, out: &mut Vec<ExternalTensor>) -> Result<()> {
    let [k, n] = *dims else { return Err(LensError::invalid(format!("internal: {name} is not a matrix: {dims:?}"))) };
    let q = quantize(vals, k, n, spec)?;
    let layout = QuantLayout { k, n, spec: *spec };
    out.push(dw.tensor(format!("{name}{CODES_SUFFIX}"), vec![n, spec.blocks(k), spec.blob_size()], DT_UINT8, &q.codes, Some(layout))?);
    let scales: Vec<u8> = q.scales.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.push(dw.tensor(format!("{name}{SCALES_SUFFIX}"), vec![n * spec.blocks(k)], DT_FLOAT, &scales, None)?);
    if let Some(zp) = &q.zero_points {
        out.push(dw.tensor(format!("{name}{ZERO_POINTS_SUFFIX}"), vec![zp.len()], DT_UINT8, zp, None)?);
    }
    Ok(())
}

fn convert_into(src: &Path, ckpt: &Checkpoint, out: &Path, arch: &Arch, name: &str, weights: WeightFormat, progress: &Progress) -> Result<String> {
    let tied = is_tied(arch, ckpt)?;
    let plan = arch.tensors(tied);
    let data_path = out.join(DATA_FILE);
    let data_file = File::create(&data_path).map_err(|e| LensError::io(&data_path, e))?;
    let mut dw = DataWriter { path: &data_path, w: BufWriter::with_capacity(1 << 20, data_file), hasher: Sha256::new(), offset: 0 };
    let mut tensors = Vec::with_capacity(plan.len());
    let total: usize = plan.iter().map(|t| t.dims.iter().product::<usize>()).sum();
    let mut done = 0usize;
    let ckpt_path = ckpt.first_path().to_path_buf();
    for TensorPlan { name: tname, dims, source } in &plan {
        progress.check()?;
        dw.align()?;
        let start = dw.offset;
        let count: usize = dims.iter().product();
        // A quantized bundle's embedding and unembedding are f16 (`quant::stores_half`).
        let half = crate::build::quant::stores_half(tname, weights, tied);
        if let (Some(spec), Source::Checkpoint { key, pick, transpose }) = (weights.spec(), source)
            && crate::build::quant::is_quantized_matrix(tname)
        {
            let view = ckpt.tensor(key)?;
            let vals = materialize(view, key, pick, *transpose, dims, &ckpt_path)?;
            write_quantized(&mut dw, tname, &vals, dims, &spec, &mut tensors)?;
            ckpt.release(key);
            done += count;
            progress.report("converting weights", done as f32 / total.max(1) as f32);
            continue;
        }
        match source {
            Source::Sinusoidal => {
                let [n_ctx, d] = dims.as_slice() else { return Err(LensError::invalid("internal: sinusoidal table is not 2-D")) };
                dw.write(&crate::build::arch::ctrl::sinusoidal_table(*n_ctx, *d))?;
            }
            Source::Checkpoint { key, pick: Pick::All, transpose: false } => {
                let view = ckpt.tensor(key)?;
                if view.shape != dims.as_slice() {
                    return Err(LensError::bad_file(&ckpt_path, format!("tensor {key} has shape {:?}, config.json implies {dims:?}", view.shape)));
                }
                // Stream in pieces so memory stays small even for a 50257 x 1600 embedding.
                const PIECE: usize = 1 << 20;
                let mut buf = Vec::with_capacity(PIECE);
                let mut streamed = 0usize;
                for piece in view.data.chunks(PIECE * view.dtype.size()) {
                    buf.clear();
                    decode_f32(view.dtype, piece, &mut buf).map_err(|m| LensError::bad_file(&ckpt_path, format!("tensor {key} {m}")))?;
                    dw.write_as(&buf, half, tname)?;
                    streamed += buf.len();
                    progress.report("converting weights", (done + streamed) as f32 / total.max(1) as f32);
                    progress.check()?;
                }
            }
            Source::Checkpoint { key, pick, transpose } => {
                let view = ckpt.tensor(key)?;
                let vals = materialize(view, key, pick, *transpose, dims, &ckpt_path)?;
                dw.write_as(&vals, half, tname)?;
            }
            Source::PlusOne { key } => {
                let view = ckpt.tensor(key)?;
                let vals: Vec<f32> = materialize(view, key, &Pick::All, false, dims, &ckpt_path)?.into_iter().map(|w| 1.0 + w).collect();
                dw.write(&vals)?;
            }
        }
        if let Source::Checkpoint { key, .. } | Source::PlusOne { key } = source {
            ckpt.release(key);
        }
        done += count;
        progress.report("converting weights", done as f32 / total.max(1) as f32);
        let length = dw.offset - start;
        let (elem, data_type) = if half { (2, DT_FLOAT16) } else { (4, DT_FLOAT) };
        if length != (count * elem) as u64 {
            return Err(LensError::invalid(format!("internal: wrote {length} bytes for {tname}, expected {}", count * elem)));
        }
        tensors.push(ExternalTensor { name: tname.clone(), dims: dims.clone(), offset: start, length, data_type, quant: None });
    }
    dw.w.flush().map_err(|e| LensError::io(&data_path, e))?;
    let DataWriter { w, hasher, .. } = dw;
    drop(w);
    let sha = format!("{:x}", hasher.finalize());

    let s = &arch.shape;
    let version = if weights.is_exact() { FORMAT_VERSION } else { QUANTIZED_FORMAT_VERSION };
    let mut meta: Vec<(String, String)> = vec![
        (meta_keys::FORMAT_VERSION.into(), version.into()),
        (meta_keys::FAMILY.into(), arch.family.model_type().into()),
        (meta_keys::NAME.into(), name.into()),
        (meta_keys::N_LAYERS.into(), s.n_layers.to_string()),
        (meta_keys::D_MODEL.into(), s.d_model.to_string()),
        (meta_keys::N_HEADS.into(), s.n_heads.to_string()),
        (meta_keys::N_KV_HEADS.into(), arch.n_kv_heads.to_string()),
        (meta_keys::D_HEAD.into(), arch.head_dim.to_string()),
        (meta_keys::D_MLP.into(), s.d_mlp.to_string()),
        (meta_keys::D_VOCAB.into(), s.d_vocab.to_string()),
        (meta_keys::N_CTX.into(), s.n_ctx.to_string()),
        (meta_keys::RESIDUAL.into(), arch.residual.name().into()),
        (meta_keys::HOOKS.into(), hooks_of(arch.residual).join(",")),
        (meta_keys::FINAL_NORM.into(), arch.norm.name().into()),
        (meta_keys::FINAL_NORM_EPS.into(), format!("{:e}", s.eps)),
        (meta_keys::FINAL_NORM_WEIGHT.into(), names::LN_FINAL_W.into()),
        (meta_keys::UNEMBED.into(), Arch::unembed_name(tied).into()),
        (meta_keys::UNEMBED_LAYOUT.into(), "vocab_model".into()),
        (meta_keys::LAST_BLOCK.into(), LAST_BLOCK_FILE.into()),
        (meta_keys::WEIGHTS_SHA256.into(), sha.clone()),
    ];
    if arch.norm == Norm::LayerNorm {
        meta.push((meta_keys::FINAL_NORM_BIAS.into(), names::LN_FINAL_B.into()));
    }
    meta.push((meta_keys::WEIGHTS.into(), weights.name().into()));
    meta.push((meta_keys::N_PARAMS.into(), total.to_string()));
    if let Some(spec) = weights.spec() {
        meta.push((meta_keys::WEIGHTS_BITS.into(), spec.bits.to_string()));
        meta.push((meta_keys::WEIGHTS_BLOCK_SIZE.into(), spec.block_size.to_string()));
        meta.push((meta_keys::WEIGHTS_ZERO_POINTS.into(), (!spec.symmetric).to_string()));
        meta.push((meta_keys::WEIGHTS_ACCURACY_LEVEL.into(), spec.accuracy_level.to_string()));
    }
    if let Some(cap) = arch.final_softcap {
        meta.push((meta_keys::FINAL_SOFTCAP.into(), format!("{cap:e}")));
    }
    if arch.unembed_bias_key.is_some() {
        meta.push((meta_keys::UNEMBED_BIAS.into(), names::UNEMBED_BIAS.into()));
    }
    if let Ok(canon) = src.canonicalize() {
        meta.push((meta_keys::SOURCE.into(), canon.to_string_lossy().into_owned()));
    }
    let model = build_lens_model(arch, block_fn(arch.family), &tensors, DATA_FILE, tied, &meta)?;
    let model_path = out.join(MODEL_FILE);
    std::fs::write(&model_path, model.encode_to_vec()).map_err(|e| LensError::io(&model_path, e))?;
    let last = build_last_block_model(arch, block_fn(arch.family), &tensors, DATA_FILE)?;
    let last_path = out.join(LAST_BLOCK_FILE);
    std::fs::write(&last_path, last.encode_to_vec()).map_err(|e| LensError::io(&last_path, e))?;

    progress.report("tokenizer", 1.0);
    write_tokenizer(src, &out.join(TOKENIZER_FILE))?;
    Ok(sha)
}

/// Copies `tokenizer.json`, or builds one from `vocab.json` + `merges.txt` (GPT-2 byte-level BPE),
/// and the BOS keys of `tokenizer_config.json` when it asks for a BOS.
fn write_tokenizer(src: &Path, dst: &Path) -> Result<()> {
    let mut config = crate::source::tokenizer::BosConfig::read(&src.join(crate::source::tokenizer::TOKENIZER_CONFIG_FILE))?;
    if config.add_bos_token == Some(true) && config.bos_token.is_none() {
        // Older repos name the BOS only in special_tokens_map.json.
        config.bos_token = crate::source::tokenizer::BosConfig::read(&src.join("special_tokens_map.json"))?.bos_token;
    }
    if config.add_bos_token == Some(true) && config.bos_token.is_some() {
        let path = dst.with_file_name(crate::source::tokenizer::TOKENIZER_CONFIG_FILE);
        let text = serde_json::to_string_pretty(&config).map_err(|e| LensError::invalid(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| LensError::io(&path, e))?;
    }
    let tj = src.join(TOKENIZER_FILE);
    if tj.is_file() {
        // Parse it first so that a broken tokenizer is reported now, naming the file.
        tokenizers::Tokenizer::from_file(&tj).map_err(|e| LensError::bad_file(&tj, format!("not a valid tokenizer.json: {e}")))?;
        std::fs::copy(&tj, dst).map_err(|e| LensError::io(dst, e))?;
        return Ok(());
    }
    let vocab = src.join("vocab.json");
    let merges = src.join("merges.txt");
    if !(vocab.is_file() && merges.is_file()) {
        return Err(LensError::bad_file(src, "no tokenizer: expected tokenizer.json, or vocab.json + merges.txt"));
    }
    let (Some(v), Some(m)) = (vocab.to_str(), merges.to_str()) else {
        return Err(LensError::bad_file(src, "tokenizer paths are not valid UTF-8"));
    };
    let bpe = tokenizers::models::bpe::BPE::from_file(v, m)
        .build()
        .map_err(|e| LensError::bad_file(&vocab, format!("cannot build the BPE tokenizer from vocab.json + merges.txt: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tok.with_post_processor(Some(tokenizers::processors::byte_level::ByteLevel::default()));
    tok.save(dst, false).map_err(|e| LensError::Tokenizer(format!("cannot write {}: {e}", dst.display())))?;
    Ok(())
}
