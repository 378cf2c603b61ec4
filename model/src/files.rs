//! Writing files so that a failure never leaves a half-written one (reports, arrays, lenses,
//! figures).

use std::path::Path;

use crate::error::{LensError, Result};

/// Writes `path` by `write(tmp)` into the sibling `NAME.partial`, renamed into place once it is
/// whole: a failure (or a crash) never leaves a half-written `path`, and the partial file goes.
pub fn write_replacing(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!("{name}.partial"));
    let done = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| LensError::io(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}
