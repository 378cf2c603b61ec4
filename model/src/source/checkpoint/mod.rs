//! Checkpoint files as the Hugging Face hub ships them: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, or a `pytorch_model.bin` (read with pytorch-reader, which never
//! runs code, after [`pickle_globals`] has refused any global but the tensor rebuilds); f32, f16
//! or bf16. Safetensors files are memory-mapped; a tensor's bytes are read only when it is
//! converted.

pub mod pickle_globals;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{LensError, Result};

/// Single-file safetensors checkpoint name.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// Sharded safetensors index name.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// PyTorch pickle checkpoint name.
pub const PYTORCH_FILE: &str = "pytorch_model.bin";

/// Element type of a checkpoint tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
}

impl ElemType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// One tensor of a checkpoint: its type, shape and little-endian bytes (borrowed from the
/// mapping, or read from a `.bin` file).
#[derive(Debug, Clone)]
pub struct TensorRef<'a> {
    /// Element type.
    pub dtype: ElemType,
    /// Shape.
    pub shape: &'a [usize],
    /// Raw little-endian bytes.
    pub data: Cow<'a, [u8]>,
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
    data_start: usize,
}

/// An opened checkpoint (memory-mapped safetensors files, or a `.bin` read on demand).
pub struct Checkpoint {
    files: Vec<MappedFile>,
    entries: HashMap<String, Entry>,
    /// The tensors of a `pytorch_model.bin` (empty for safetensors).
    pytorch: Option<(PathBuf, HashMap<String, pytorch_reader::Tensor>)>,
    /// The family's base-model prefix (`transformer.`), tried off when a full key is missing.
    prefix: String,
    /// Prefixes tried in place of `prefix` (an image-text model's `language_model.model.`).
    alternates: Vec<String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("files", &self.files.iter().map(|m| &m.path).collect::<Vec<_>>())
            .field("tensors", &self.entries.len())
            .field("pytorch", &self.pytorch.as_ref().map(|p| &p.0))
            .finish()
    }
}

/// Whether `dir` holds weights this build can read.
pub fn has_weights(dir: &Path) -> bool {
    dir.join(SAFETENSORS_FILE).is_file() || dir.join(SAFETENSORS_INDEX).is_file() || dir.join(PYTORCH_FILE).is_file()
}

/// Opens a `pytorch_model.bin`: checks the globals of its pickle, then lists its tensors.
pub(crate) fn open_pytorch(path: &Path) -> Result<HashMap<String, pytorch_reader::Tensor>> {
    let file = File::open(path).map_err(|e| LensError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        LensError::bad_file(path, format!("not a zip-format PyTorch checkpoint ({e}); files saved before PyTorch 1.6 are not read: save it again with a current PyTorch, or as safetensors"))
    })?;
    // One archive from the first byte, one data.pkl: the pickle checked here is then the one the
    // reader parses (two data.pkl entries, or bytes before the archive, could show each a different
    // one).
    if zip.offset() != 0 {
        return Err(LensError::bad_file(path, format!("{} bytes come before the zip archive: not a file torch.save writes", zip.offset())));
    }
    let pkls: Vec<String> = zip.file_names().filter_map(|n| n.ok().map(|c| c.into_owned())).filter(|n| n == "data.pkl" || n.ends_with("/data.pkl")).collect();
    let pkl_name = match pkls.as_slice() {
        [one] => one.clone(),
        [] => return Err(LensError::bad_file(path, "no data.pkl in this zip: not a PyTorch checkpoint")),
        more => {
            return Err(LensError::bad_file(path, format!("{} data.pkl entries in this zip ({}): not a file torch.save writes", more.len(), more.join(", "))));
        }
    };
    let mut pickle = Vec::new();
    {
        use std::io::Read as _;
        let mut entry = zip.by_name(&pkl_name).map_err(|e| LensError::bad_file(path, format!("cannot read {pkl_name}: {e}")))?;
        if entry.size() > 64 << 20 {
            return Err(LensError::bad_file(path, format!("{pkl_name} is {} bytes; a state dict's pickle is far smaller", entry.size())));
        }
        entry.read_to_end(&mut pickle).map_err(|e| LensError::io(path, e))?;
    }
    pickle_globals::check(&pickle).map_err(|r| match r {
        pickle_globals::Refusal::View(v) => LensError::bad_file(path, format!("refused: {v}")),
        r => LensError::bad_file(
            path,
            format!("refused: {r}; only plain state dicts of tensors are read (convert it with transformers to safetensors if you trust it)"),
        ),
    })?;
    let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| LensError::bad_file(path, format!("cannot read this PyTorch checkpoint: {e}")))?;
    Ok(reader.into_tensors())
}

/// The bytes of one tensor of a PyTorch zip (`pytorch_model.bin`, a tuned lens's `params.pt`) and
/// its element type: float32, float16 or bfloat16 only. Views that repeat or overrun their storage
/// were refused by the pickle scan ([`pickle_globals::check`]); a tensor larger than the whole
/// file (a storage that claims more than the file holds) is refused here before it is read.
pub(crate) fn read_pytorch_tensor(path: &Path, name: &str, t: &pytorch_reader::Tensor) -> Result<(ElemType, Vec<u8>)> {
    let dtype = match t.dtype() {
        pytorch_reader::DType::F32 => ElemType::F32,
        pytorch_reader::DType::F16 => ElemType::F16,
        pytorch_reader::DType::BF16 => ElemType::BF16,
        other => return Err(LensError::bad_file(path, format!("tensor {name} has dtype {other:?}; expected float32, float16 or bfloat16"))),
    };
    let file_len = std::fs::metadata(path).map_err(|e| LensError::io(path, e))?.len();
    if t.byte_len() as u64 > file_len {
        return Err(LensError::bad_file(
            path,
            format!("tensor {name} would be {} bytes, more than the whole file ({file_len}): its storage claims more than the file holds", t.byte_len()),
        ));
    }
    let data = t.read().map_err(|e| LensError::bad_file(path, format!("cannot read tensor {name} (truncated file?): {e}")))?;
    if data.len() != t.num_elements() * dtype.size() {
        return Err(LensError::bad_file(
            path,
            format!("tensor {name} has {} bytes, its shape {:?} needs {}", data.len(), t.shape(), t.num_elements() * dtype.size()),
        ));
    }
    Ok((dtype, data))
}

fn map_file(path: &Path) -> Result<(memmap2::Mmap, usize, safetensors::tensor::Metadata)> {
    let file = File::open(path).map_err(|e| LensError::io(path, e))?;
    // SAFETY: the file is opened read-only and only read through the mapping; a concurrent writer
    // could change bytes under us, which would at worst give wrong weights (all bit patterns of
    // the float types are valid), never memory unsafety.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LensError::io(path, e))?;
    let (n, meta) =
        SafeTensors::read_metadata(&map).map_err(|e| LensError::bad_file(path, format!("not a valid safetensors file (truncated or corrupted?): {e}")))?;
    Ok((map, 8 + n, meta))
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`. `prefix` is the family's base prefix (`transformer.`);
    /// `alternates` are tried in its place when a key is missing.
    pub fn open(dir: &Path, prefix: &str, alternates: &[&str]) -> Result<Self> {
        let mut c = Self::open_with_prefix(dir, prefix)?;
        c.alternates = alternates.iter().map(|a| (*a).to_string()).collect();
        Ok(c)
    }

    fn open_with_prefix(dir: &Path, prefix: &str) -> Result<Self> {
        let single = dir.join(SAFETENSORS_FILE);
        let index = dir.join(SAFETENSORS_INDEX);
        let shard_names: Vec<String> = if single.is_file() {
            vec![SAFETENSORS_FILE.to_string()]
        } else if index.is_file() {
            shards_of(&index)?
        } else if dir.join(PYTORCH_FILE).is_file() {
            let path = dir.join(PYTORCH_FILE);
            let tensors = open_pytorch(&path)?;
            return Ok(Self { files: Vec::new(), entries: HashMap::new(), pytorch: Some((path, tensors)), prefix: prefix.to_string(), alternates: Vec::new() });
        } else {
            return Err(LensError::bad_file(dir, format!("no weights: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or {PYTORCH_FILE}")));
        };
        let mut files = Vec::with_capacity(shard_names.len());
        let mut entries = HashMap::new();
        for (i, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(LensError::bad_file(&index, format!("lists shard {name}, which is not in the folder (incomplete download?)")));
            }
            let (map, data_start, meta) = map_file(&path)?;
            for (key, info) in meta.tensors() {
                let (start, end) = info.data_offsets;
                let entry = Entry { file: i, dtype: info.dtype, shape: info.shape.clone(), start: data_start + start, end: data_start + end };
                // The same tensor in two shards: which one is meant is not knowable.
                if let Some(earlier) = entries.insert(key.clone(), entry) {
                    let other = shard_names.get(earlier.file).map_or("?", String::as_str);
                    return Err(LensError::bad_file(&path, format!("tensor {key:?} is also in {other}: a checkpoint holds each tensor once")));
                }
            }
            files.push(MappedFile { path, map, data_start });
        }
        Ok(Self { files, entries, pytorch: None, prefix: prefix.to_string(), alternates: Vec::new() })
    }

    /// `key` if present, else `key` with an alternate prefix in place of the base prefix, else
    /// `key` without the base prefix.
    fn find<'k, V>(&self, map: &'k HashMap<String, V>, key: &str) -> Option<(&'k str, &'k V)> {
        if let Some((k, e)) = map.get_key_value(key) {
            return Some((k.as_str(), e));
        }
        let bare = key.strip_prefix(self.prefix.as_str())?;
        for alt in &self.alternates {
            if let Some((k, e)) = map.get_key_value(&format!("{alt}{bare}")) {
                return Some((k.as_str(), e));
            }
        }
        map.get_key_value(bare).map(|(k, e)| (k.as_str(), e))
    }

    /// Whether the checkpoint holds `key` (or `key` without the base prefix).
    pub fn contains(&self, key: &str) -> bool {
        match &self.pytorch {
            Some((_, t)) => self.find(t, key).is_some(),
            None => self.find(&self.entries, key).is_some(),
        }
    }

    /// The number of blocks the checkpoint's keys hold weights for: 1 + the largest index that
    /// follows a `layers`, `layer`, `h` or `blocks` segment (`model.layers.31.mlp…`,
    /// `transformer.h.11.attn…`); `None` when no key has one. Reads key names only: a config that
    /// claims more layers is refused before anything is planned or allocated.
    pub fn layer_count(&self) -> Option<usize> {
        let keys: Box<dyn Iterator<Item = &String>> = match &self.pytorch {
            Some((_, t)) => Box::new(t.keys()),
            None => Box::new(self.entries.keys()),
        };
        let mut max: Option<usize> = None;
        for k in keys {
            let mut prev = "";
            for seg in k.split('.') {
                if matches!(prev, "layers" | "layer" | "h" | "blocks")
                    && let Ok(i) = seg.parse::<usize>()
                {
                    max = Some(max.map_or(i, |m| m.max(i)));
                }
                prev = seg;
            }
        }
        max.map(|m| m + 1)
    }

    /// The shape of tensor `key` (or `key` without the base prefix) from the headers alone: no
    /// tensor data is read (a `.bin`'s tensors are only read by [`Self::tensor`]).
    pub fn shape_of(&self, key: &str) -> Result<Vec<usize>> {
        match &self.pytorch {
            Some((_, tensors)) => self.find(tensors, key).map(|(_, t)| t.shape().to_vec()),
            None => self.find(&self.entries, key).map(|(_, e)| e.shape.clone()),
        }
        .ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> LensError {
        LensError::bad_file(self.first_path(), format!("missing tensor {key:?}; is this checkpoint of the model type its config.json names?"))
    }

    /// The tensor `key` (or `key` without the base prefix), or a clear error naming it.
    pub fn tensor(&self, key: &str) -> Result<TensorRef<'_>> {
        if let Some((path, tensors)) = &self.pytorch {
            let (found, t) = self.find(tensors, key).ok_or_else(|| self.missing(key))?;
            let (dtype, data) = read_pytorch_tensor(path, found, t)?;
            return Ok(TensorRef { dtype, shape: t.shape(), data: Cow::Owned(data) });
        }
        let (found, e) = self.find(&self.entries, key).ok_or_else(|| self.missing(key))?;
        let file = self.files.get(e.file).ok_or_else(|| LensError::invalid("checkpoint shard index out of range"))?;
        let dtype = match e.dtype {
            Dtype::F32 => ElemType::F32,
            Dtype::F16 => ElemType::F16,
            Dtype::BF16 => ElemType::BF16,
            other => return Err(LensError::bad_file(&file.path, format!("tensor {found} has dtype {other:?}; expected F32, F16 or BF16"))),
        };
        let data = file
            .map
            .get(e.start..e.end)
            .filter(|_| e.start >= file.data_start)
            .ok_or_else(|| LensError::bad_file(&file.path, format!("tensor {found} lies outside the file (truncated?)")))?;
        let count: usize = e.shape.iter().product();
        if data.len() != count * dtype.size() {
            return Err(LensError::bad_file(
                &file.path,
                format!("tensor {found} has {} bytes, its shape {:?} needs {}", data.len(), e.shape, count * dtype.size()),
            ));
        }
        Ok(TensorRef { dtype, shape: &e.shape, data: Cow::Borrowed(data) })
    }

    /// Drops this process's pages of tensor `key` from memory once it has been converted (the
    /// file stays in the page cache): converting a checkpoint larger than the memory then keeps
    /// only the tensor at hand resident, not every shard read so far. A no-op for `.bin` files
    /// and on systems without `madvise`.
    pub fn release(&self, key: &str) {
        #[cfg(unix)]
        if let Some((_, e)) = self.find(&self.entries, key)
            && let Some(file) = self.files.get(e.file)
            && e.end > e.start
        {
            // SAFETY: the map is a read-only file mapping: dropped pages are read again from the
            // file on the next access, so no value a reference may still see changes.
            let _ = unsafe { file.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, e.start, e.end - e.start) };
        }
        #[cfg(not(unix))]
        let _ = key;
    }

    /// The first file (for messages).
    pub fn first_path(&self) -> &Path {
        match &self.pytorch {
            Some((p, _)) => p,
            None => self.files.first().map_or(Path::new("."), |f| f.path.as_path()),
        }
    }
}

pub(crate) fn shards_of(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| LensError::io(index, e))?;
    let idx: Index = serde_json::from_str(&text).map_err(|e| LensError::bad_file(index, format!("not a valid safetensors index: {e}")))?;
    let mut shards: Vec<String> = idx.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    // A shard is a file of this folder: no separator, no `..` or hidden name, no drive (`C:x`).
    if let Some(bad) = shards.iter().find(|s| s.is_empty() || s.contains(['/', '\\', ':']) || s.starts_with('.')) {
        return Err(LensError::bad_file(index, format!("shard name {bad:?} leaves the folder")));
    }
    if shards.is_empty() {
        return Err(LensError::bad_file(index, "lists no shards"));
    }
    Ok(shards)
}

/// Decodes little-endian elements of `dtype` into f32, refusing NaN and infinities.
pub fn decode_f32(dtype: ElemType, bytes: &[u8], out: &mut Vec<f32>) -> std::result::Result<(), &'static str> {
    let before = out.len();
    match dtype {
        ElemType::F32 => out.extend(bytes.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c))),
        ElemType::F16 => out.extend(bytes.as_chunks::<2>().0.iter().map(|c| half::f16::from_le_bytes(*c).to_f32())),
        ElemType::BF16 => out.extend(bytes.as_chunks::<2>().0.iter().map(|c| half::bf16::from_le_bytes(*c).to_f32())),
    }
    if out.get(before..).is_some_and(|s| s.iter().any(|v| !v.is_finite())) {
        return Err("contains NaN or infinite values");
    }
    Ok(())
}
