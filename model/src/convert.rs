//! Hugging Face GPT-2 checkpoint folder -> lens bundle (DESIGN §3.1).
//!
//! The weights are streamed tensor by tensor from a memory-mapped safetensors file into the
//! external data file `model.onnx.data` as f32, so memory stays near the size of the largest
//! tensor (plus the page cache of the source); the ONNX proto itself only holds the graph.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::config::ModelShape;
use crate::error::{LensError, Progress, Result};
use crate::graph::{ExternalTensor, block_weight_names, build_gpt2_lens_model};

/// File name of the ONNX graph in a bundle.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of the external weight data in a bundle.
pub const DATA_FILE: &str = "model.onnx.data";
/// File name of the tokenizer in a bundle.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The bundle format version written into `metadata_props`.
pub const FORMAT_VERSION: &str = "1";
const ALIGN: u64 = 4096;

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    /// The bundle folder.
    pub bundle: PathBuf,
    /// The model's shape.
    pub shape: ModelShape,
    /// sha256 of the f32 weight data.
    pub weights_sha256: String,
}

/// Whether `dir` looks like a Hugging Face checkpoint folder (has `config.json` and safetensors).
pub fn is_hf_checkpoint(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("model.safetensors").is_file()
}

/// Converts the Hugging Face GPT-2 checkpoint in `src` into a lens bundle at `dst`.
///
/// `dst` must not exist or be an empty folder. The bundle is written into a temporary sibling
/// folder and renamed into place at the end, so a failed or cancelled conversion leaves nothing.
pub fn convert_hf_checkpoint(src: &Path, dst: &Path, progress: &Progress) -> Result<ConvertSummary> {
    if !src.is_dir() {
        return Err(LensError::bad_file(src, "not a folder; expected a Hugging Face GPT-2 checkpoint folder (config.json + model.safetensors)"));
    }
    let shape = ModelShape::from_hf_config(&src.join("config.json"))?;
    let st_path = src.join("model.safetensors");
    if !st_path.is_file() {
        return Err(LensError::bad_file(src, "no model.safetensors in this folder (PyTorch .bin checkpoints are not supported; save with safe_serialization=True)"));
    }
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
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| LensError::io(&tmp, e))?;
    let name = src
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gpt2".into());
    let result = convert_into(src, &st_path, &tmp, &shape, &name, progress);
    match result {
        Ok(sha) => {
            if dst.exists() {
                let _ = std::fs::remove_dir(dst);
            }
            std::fs::rename(&tmp, dst).map_err(|e| LensError::io(dst, e))?;
            Ok(ConvertSummary { bundle: dst.to_path_buf(), shape, weights_sha256: sha })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn convert_into(src: &Path, st_path: &Path, out: &Path, shape: &ModelShape, name: &str, progress: &Progress) -> Result<String> {
    let file = File::open(st_path).map_err(|e| LensError::io(st_path, e))?;
    // SAFETY: the file is opened read-only; we only read from the mapping and never hand out
    // references that outlive it. A concurrent writer could change bytes under us, which would at
    // worst produce wrong weights, not memory unsafety for f32/f16 reads.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LensError::io(st_path, e))?;
    let st = SafeTensors::deserialize(&mmap)
        .map_err(|e| LensError::bad_file(st_path, format!("not a valid safetensors file (truncated or corrupted?): {e}")))?;
    let has_prefix = st.names().iter().any(|n| n.starts_with("transformer."));
    let lookup = |n: &str| -> Result<safetensors::tensor::TensorView<'_>> {
        let full = if has_prefix { format!("transformer.{n}") } else { n.to_string() };
        st.tensor(&full).map_err(|_| LensError::bad_file(st_path, format!("missing tensor {full:?}; is this a GPT-2 checkpoint?")))
    };
    let d = shape.d_model;
    let mut plan: Vec<(String, Vec<usize>)> = vec![
        ("wte.weight".into(), vec![shape.d_vocab, d]),
        ("wpe.weight".into(), vec![shape.n_ctx, d]),
    ];
    for l in 0..shape.n_layers {
        let names = block_weight_names(l);
        let dims = [vec![d], vec![d], vec![d, 3 * d], vec![3 * d], vec![d, d], vec![d], vec![d], vec![d], vec![d, shape.d_mlp], vec![shape.d_mlp], vec![shape.d_mlp, d], vec![d]];
        plan.extend(names.into_iter().zip(dims));
    }
    plan.push(("ln_f.weight".into(), vec![d]));
    plan.push(("ln_f.bias".into(), vec![d]));
    // An untied lm_head is written as its own initializer; a tied one (equal to wte) is skipped.
    let lm_head = st.tensor("lm_head.weight").ok();
    let untied = match &lm_head {
        Some(lm) => {
            let wte = lookup("wte.weight")?;
            lm.data() != wte.data()
        }
        None => false,
    };
    if untied {
        plan.push(("lm_head.weight".into(), vec![shape.d_vocab, d]));
    }

    let data_path = out.join(DATA_FILE);
    let data_file = File::create(&data_path).map_err(|e| LensError::io(&data_path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, data_file);
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut tensors = Vec::with_capacity(plan.len());
    let total: usize = plan.iter().map(|(_, dims)| dims.iter().product::<usize>()).sum();
    let mut done = 0usize;
    let mut buf: Vec<u8> = Vec::new();
    for (tname, dims) in &plan {
        progress.check()?;
        let view = if tname == "lm_head.weight" {
            st.tensor("lm_head.weight").map_err(|e| LensError::bad_file(st_path, e.to_string()))?
        } else {
            lookup(tname)?
        };
        if view.shape() != dims.as_slice() {
            return Err(LensError::bad_file(st_path, format!("tensor {tname} has shape {:?}, config.json implies {:?}", view.shape(), dims)));
        }
        let pad = (ALIGN - offset % ALIGN) % ALIGN;
        if pad > 0 {
            let zeros = vec![0u8; pad as usize];
            w.write_all(&zeros).map_err(|e| LensError::io(&data_path, e))?;
            offset += pad;
        }
        let count: usize = dims.iter().product();
        let bytes = view.data();
        let elem = match view.dtype() {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => return Err(LensError::bad_file(st_path, format!("tensor {tname} has dtype {other:?}; expected F32, F16 or BF16"))),
        };
        // Stream in pieces so memory stays small even for the 50257 x 1600 embedding.
        const PIECE: usize = 1 << 20;
        for piece in bytes.chunks(PIECE * elem) {
            buf.clear();
            for raw in piece.chunks_exact(elem) {
                let v = match (view.dtype(), raw) {
                    (Dtype::F32, &[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
                    (Dtype::F16, &[a, b]) => half::f16::from_le_bytes([a, b]).to_f32(),
                    (Dtype::BF16, &[a, b]) => half::bf16::from_le_bytes([a, b]).to_f32(),
                    _ => f32::NAN,
                };
                if !v.is_finite() {
                    return Err(LensError::bad_file(st_path, format!("tensor {tname} contains NaN or infinite values")));
                }
                buf.extend_from_slice(&v.to_le_bytes());
            }
            hasher.update(&buf);
            w.write_all(&buf).map_err(|e| LensError::io(&data_path, e))?;
            done += piece.len() / elem;
            progress.report("converting weights", done as f32 / total.max(1) as f32);
            progress.check()?;
        }
        let length = (count * 4) as u64;
        tensors.push(ExternalTensor { name: tname.clone(), dims: dims.clone(), offset, length });
        offset += length;
    }
    w.flush().map_err(|e| LensError::io(&data_path, e))?;
    drop(w);
    let sha = format!("{:x}", hasher.finalize());

    let unembed = if untied { "lm_head.weight" } else { "wte.weight" };
    let meta: Vec<(String, String)> = vec![
        ("lens.format_version".into(), FORMAT_VERSION.into()),
        ("lens.family".into(), "gpt2".into()),
        ("lens.name".into(), name.into()),
        ("lens.n_layers".into(), shape.n_layers.to_string()),
        ("lens.d_model".into(), shape.d_model.to_string()),
        ("lens.n_heads".into(), shape.n_heads.to_string()),
        ("lens.d_mlp".into(), shape.d_mlp.to_string()),
        ("lens.d_vocab".into(), shape.d_vocab.to_string()),
        ("lens.n_ctx".into(), shape.n_ctx.to_string()),
        ("lens.ln_eps".into(), format!("{:e}", shape.eps)),
        ("lens.ln_final.weight".into(), "ln_f.weight".into()),
        ("lens.ln_final.bias".into(), "ln_f.bias".into()),
        ("lens.unembed".into(), unembed.into()),
        ("lens.unembed.layout".into(), "vocab_model".into()),
        ("lens.weights_sha256".into(), sha.clone()),
    ];
    let model = build_gpt2_lens_model(shape, &tensors, DATA_FILE, unembed, &meta);
    let model_path = out.join(MODEL_FILE);
    std::fs::write(&model_path, model.encode_to_vec()).map_err(|e| LensError::io(&model_path, e))?;

    progress.report("tokenizer", 1.0);
    write_tokenizer(src, &out.join(TOKENIZER_FILE))?;
    Ok(sha)
}

/// Copies `tokenizer.json`, or builds one from `vocab.json` + `merges.txt` (GPT-2 byte-level BPE).
fn write_tokenizer(src: &Path, dst: &Path) -> Result<()> {
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
