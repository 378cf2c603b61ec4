//! Reading prompt files and checking output paths before any expensive work.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Largest prompt file accepted.
pub const MAX_PROMPT_BYTES: u64 = 10 * 1024 * 1024;

/// Reads a prompt file: it must exist, be at most 10 MB and be UTF-8.
pub fn read_prompt_file(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the prompt file {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a folder, not a prompt file", path.display());
    }
    if meta.len() > MAX_PROMPT_BYTES {
        bail!("{} is {:.1} MB; prompt files are limited to {} MB", path.display(), meta.len() as f64 / 1e6, MAX_PROMPT_BYTES / 1024 / 1024);
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROMPT_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read the prompt file {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => bail!("{} is not UTF-8 text (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to()),
    }
}

/// Reads text files as [`read_prompt_file`] does and joins them with a blank line (the corpus and
/// the tuned-lens fit take several).
pub fn read_texts(files: &[std::path::PathBuf]) -> Result<String> {
    Ok(files.iter().map(|f| read_prompt_file(f)).collect::<Result<Vec<_>>>()?.join("\n\n"))
}

/// Fails early when `path` cannot be written (missing folder, a folder in the way, no permission).
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write {}: it is a folder", path.display());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("cannot write {}: the folder {} does not exist", path.display(), parent.display());
    }
    let probe = parent.join(format!(".logit-lens-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write {}: the folder is not writable", path.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The one token of `engine`'s vocabulary that `text` is (e.g. `" Paris"`), or an error naming it
/// as `what` (`--target`, `the target`) and saying how it splits.
pub fn single_token(engine: &lens_model::LensEngine, text: &str, what: &str) -> Result<u32> {
    if let Some(id) = engine.tokenizer.token_id(text) {
        return Ok(id);
    }
    let parts = engine
        .tokenizer
        .encode_plain(text)
        .map(|ids| engine.tokenizer.tokens(&ids).into_iter().map(|t| format!("{:?}", t.decoded)).collect::<Vec<_>>().join(" + "));
    bail!(
        "{what} {text:?} is not a single token of this model ({}); give one token, e.g. with its leading space",
        parts.unwrap_or_else(|| "it does not encode".into())
    )
}
