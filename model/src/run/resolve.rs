//! Turning a `--model` argument (a bundle, a Hugging Face folder, or nothing) into a bundle folder.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::build::arch::Arch;
use crate::build::convert::{MODEL_FILE, convert_hf_checkpoint_as, is_hf_checkpoint};
use crate::build::quant::{WeightFormat, WeightsChoice, available_memory, choose_auto, is_quantized_matrix};
use crate::error::{LensError, Progress, Result};
use crate::run::bundle::{format_version_of, weights_of};
use crate::run::runtime::cache_dir;

/// Where the bundled demo model may be, in order: `LOGIT_LENS_DEMO_MODEL`, next to the executable
/// (`demo-model/`, `../share/logit-lens/demo-model/`, `../Resources/demo-model/` in a macOS app),
/// and the source tree's `assets/demo-model/`.
pub fn demo_model_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("LOGIT_LENS_DEMO_MODEL").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        v.push(exe_dir.join("demo-model"));
        v.push(exe_dir.join("../share/logit-lens/demo-model"));
        v.push(exe_dir.join("../Resources/demo-model")); // macOS .app bundle
    }
    v.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model")));
    v
}

/// The demo model folder, if it can be found.
pub fn demo_model() -> Option<PathBuf> {
    demo_model_candidates().into_iter().find(|p| p.join(MODEL_FILE).is_file() || is_hf_checkpoint(p))
}

/// Version of what the converter writes for a given checkpoint and format: part of the bundle
/// cache key, bumped whenever the converter's output changes (2026-12-06: weight formats; then the
/// lens graph's patch inputs; then its skippable blocks and head).
pub const CONVERTER_OUTPUT_VERSION: u32 = 8;

/// Whether file `name` of a checkpoint folder is an input of its conversion.
fn is_conversion_input(name: &str) -> bool {
    const FILES: [&str; 7] =
        ["config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"];
    FILES.contains(&name) || name.ends_with(".safetensors") || name.ends_with(".bin")
}

/// The cache key of a checkpoint folder: its path, every input file's name, size and mtime (each
/// shard: one replaced after first use is converted again) and the converter's output version.
fn cache_key(dir: &Path) -> Result<String> {
    let canon = dir.canonicalize().map_err(|e| LensError::io(dir, e))?;
    let mut h = Sha256::new();
    h.update(canon.to_string_lossy().as_bytes());
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| LensError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| is_conversion_input(n))
        .collect();
    files.sort();
    for f in &files {
        let p = dir.join(f);
        if let Ok(meta) = std::fs::metadata(&p) {
            h.update(f.as_bytes());
            h.update(meta.len().to_le_bytes());
            if let Ok(t) = meta.modified().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).map_err(std::io::Error::other)) {
                h.update(t.as_nanos().to_le_bytes());
            }
        }
    }
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(CONVERTER_OUTPUT_VERSION.to_le_bytes());
    let hex = format!("{:x}", h.finalize());
    Ok(hex.chars().take(20).collect())
}

/// The Hugging Face hub cache, as `huggingface_hub` finds it: `HF_HUB_CACHE`, else
/// `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub` (`~/.cache/huggingface/hub`).
pub fn hf_hub_cache() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    if let Some(p) = var("HF_HOME") {
        return p.join("hub");
    }
    let base = var("XDG_CACHE_HOME").or_else(|| dirs::home_dir().map(|h| h.join(".cache"))).unwrap_or_else(std::env::temp_dir);
    base.join("huggingface").join("hub")
}

/// `org/name@rev` -> (`org/name`, `rev`); without `@`, the revision is `main`.
fn split_revision(arg: &str) -> (&str, &str) {
    arg.split_once('@').unwrap_or((arg, "main"))
}

/// Whether `path` names a hub id: no such file or folder, and it reads as `org/name[@revision]`.
pub fn names_hub_id(path: &Path) -> bool {
    !path.exists() && path.to_str().is_some_and(is_hub_id)
}

/// Whether `arg` reads as a hub id (`org/name`, optionally `@revision`) rather than a path. The
/// revision becomes part of a URL and of cache paths, so only a branch, tag or commit name is one
/// ([`crate::source::hub::valid_revision`]): `org/name@../x` is not a hub id.
pub fn is_hub_id(arg: &str) -> bool {
    let (id, revision) = split_revision(arg);
    let ok = |s: &str| !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    crate::source::hub::valid_revision(revision) && matches!(id.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

/// The snapshot folder of hub id `org/name[@revision]` in the local hub cache
/// (`models--org--name/snapshots/REV/`, REV from `refs/{revision or main}` or given as a commit
/// hash), as `transformers` leaves it. When it is not there it is downloaded into that cache
/// ([`crate::source::hub`]), unless `HF_HUB_OFFLINE=1` / `LOGIT_LENS_NO_DOWNLOAD=1`.
pub fn resolve_hub_id(arg: &str, progress: &Progress) -> Result<PathBuf> {
    match cached_hub_id(arg) {
        Ok(p) => Ok(p),
        Err(e) if crate::source::hub::offline() => Err(e),
        Err(e) => {
            let (id, revision) = split_revision(arg);
            crate::source::hub::download(&hf_hub_cache(), id, revision, progress).map_err(|d| match d {
                LensError::Cancelled => d,
                d => LensError::invalid(format!("{e}\ndownloading it from {} failed: {d}", crate::source::hub::endpoint())),
            })
        }
    }
}

/// [`resolve_hub_id`] without downloading.
pub fn cached_hub_id(arg: &str) -> Result<PathBuf> {
    let (id, revision) = split_revision(arg);
    if !crate::source::hub::valid_revision(revision) {
        return Err(LensError::invalid(format!("{revision:?} is not a revision (a branch, tag or commit name)")));
    }
    let cache = hf_hub_cache();
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let not_cached = || {
        LensError::invalid(format!(
            "{id} is not in the Hugging Face cache ({}); download it with `huggingface-cli download {id}` (or let logit-lens download it: it does unless HF_HUB_OFFLINE=1), or pass a folder",
            cache.display()
        ))
    };
    if !repo.is_dir() {
        return Err(not_cached());
    }
    let rev = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(r) => r.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    if !crate::source::hub::valid_revision(&rev) {
        return Err(not_cached());
    }
    let snap = repo.join("snapshots").join(&rev);
    // Cached means complete: the config, the weights, and every shard an index lists (a download
    // stopped half-way leaves a snapshot with config.json but not all its weights).
    if !snap.join("config.json").is_file() || !crate::source::hub::snapshot_has_weights(&snap) {
        return Err(not_cached());
    }
    Ok(snap)
}

/// A resolved `--model`: the bundle folder, its weight format and, when `--weights auto` chose
/// it for a checkpoint, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The bundle folder.
    pub dir: PathBuf,
    /// The weights it holds.
    pub weights: WeightFormat,
    /// `auto`'s reason (sizes and the memory available), when it chose.
    pub reason: Option<String>,
}

/// Resolves `--model`: a bundle folder is used as is; a Hugging Face checkpoint folder (or a hub
/// id found in the local hub cache) is converted once into the per-user cache; `None` means the
/// bundled demo model. The weights are `auto`'s choice (see [`resolve_model_as`]).
pub fn resolve_model(arg: Option<&Path>, progress: &Progress) -> Result<PathBuf> {
    resolve_model_as(arg, WeightsChoice::Auto, progress).map(|r| r.dir)
}

/// Bytes of the bundle that `config.json` in `dir` converts to, in `format`.
pub fn bundle_bytes(dir: &Path, format: WeightFormat) -> Result<u64> {
    let arch = Arch::from_hf_config(&dir.join("config.json"))?;
    let tied = arch.tie_word_embeddings;
    Ok(arch
        .tensors(tied)
        .iter()
        .map(|t| {
            let count = t.dims.iter().product::<usize>() as u64;
            if is_quantized_matrix(&t.name) {
                format.matrix_bytes(count)
            } else if crate::build::quant::stores_half(&t.name, format, tied) {
                count * 2
            } else {
                count * 4
            }
        })
        .sum())
}

/// The format `choice` means for the checkpoint in `dir` (for `auto`: its sizes against the
/// memory available now).
pub fn choose_weights(dir: &Path, choice: WeightsChoice) -> Result<(WeightFormat, Option<String>)> {
    match choice {
        WeightsChoice::Exact(w) => Ok((w, None)),
        WeightsChoice::Auto => {
            let sizes: Vec<(WeightFormat, u64)> = WeightFormat::ALL.iter().map(|&f| Ok((f, bundle_bytes(dir, f)?))).collect::<Result<_>>()?;
            let bytes = |f: WeightFormat| sizes.iter().find(|(g, _)| *g == f).map_or(u64::MAX, |(_, b)| *b);
            let c = choose_auto(bytes, available_memory());
            Ok((c.format, Some(c.reason)))
        }
    }
}

/// [`resolve_model`] with the weight format chosen by `choice`: a checkpoint is converted (once,
/// into the cache, one bundle per source and format) in that format; a bundle folder is used as
/// it is, and asking it for another format than it holds is an error that says how to get one.
pub fn resolve_model_as(arg: Option<&Path>, choice: WeightsChoice, progress: &Progress) -> Result<ResolvedModel> {
    let dir = match arg {
        Some(p) => match p.to_str() {
            Some(id) if names_hub_id(p) => resolve_hub_id(id, progress).map_err(|e| match e {
                LensError::Cancelled => e,
                e => LensError::invalid(format!("there is no folder {id}; read as a Hugging Face id: {e}")),
            })?,
            _ => p.to_path_buf(),
        },
        None => demo_model().ok_or_else(|| {
            LensError::invalid(
                "no --model given and the bundled demo model was not found (looked in: ".to_string()
                    + &demo_model_candidates().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    + ")",
            )
        })?,
    };
    if !dir.exists() {
        return Err(LensError::bad_file(&dir, "no such file or folder"));
    }
    if dir.join(MODEL_FILE).is_file() {
        let weights = weights_of(&dir)?;
        if let WeightsChoice::Exact(w) = choice
            && w != weights
        {
            let source = if is_hf_checkpoint(&dir) { String::new() } else { " (or --model the Hugging Face checkpoint it came from)".to_string() };
            return Err(LensError::invalid(format!(
                "{} holds {} weights, not {}: a bundle is used as it is; convert its checkpoint with `logit-lens convert --weights {}`{source}",
                dir.display(),
                weights.name(),
                w.name(),
                w.name()
            )));
        }
        return Ok(ResolvedModel { dir, weights, reason: None });
    }
    if is_hf_checkpoint(&dir) {
        let (weights, reason) = choose_weights(&dir, choice)?;
        let key = cache_key(&dir)?;
        let name = dir.canonicalize().ok().and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
        let target = cache_dir().join("bundles").join(cache_entry(&name, &key, weights));
        // One conversion at a time in this process; another process may race us to the same
        // cache entry, in which case its finished bundle is used.
        static CONVERTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = CONVERTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let done = |dir: PathBuf| ResolvedModel { dir, weights, reason: reason.clone() };
        if target.join(MODEL_FILE).is_file() {
            // A bundle made by an older logit-lens (formats 1 and 2: no key/value cache) is
            // converted again from its source.
            if format_version_of(&target).is_some_and(|v| v >= 3) {
                return Ok(done(target));
            }
            std::fs::remove_dir_all(&target).map_err(|e| LensError::io(&target, e))?;
        }
        return match convert_hf_checkpoint_as(&dir, &target, weights, progress) {
            Ok(_) => Ok(done(target)),
            Err(_) if target.join(MODEL_FILE).is_file() => Ok(done(target)),
            Err(e) => Err(e),
        };
    }
    Err(LensError::bad_file(
        &dir,
        "not a model: expected a lens bundle (model.onnx + tokenizer.json) or a Hugging Face checkpoint folder (config.json + model.safetensors)",
    ))
}

/// The cache folder name of a checkpoint's bundle in `weights`: f32 keeps the name it always had,
/// other formats add theirs, so each source has one bundle per format.
pub fn cache_entry(name: &str, key: &str, weights: WeightFormat) -> String {
    if weights.is_exact() { format!("{name}-{key}") } else { format!("{name}-{key}-{}", weights.name()) }
}
