//! Ctrl+C in the CLI: the first press cancels the running job through its [`Progress`] (a
//! conversion then removes its partial folder, a forward pass stops inside ONNX Runtime) and the
//! command exits with status 130; a second press exits at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use lens_model::error::Progress;

/// The progress of the job that Ctrl+C cancels.
static CURRENT: Mutex<Option<Progress>> = Mutex::new(None);
/// Ctrl+C presses so far.
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// Exit status of a command stopped by Ctrl+C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// Installs the handler (once; a second call changes nothing).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        let first = PRESSES.fetch_add(1, Ordering::SeqCst) == 0;
        let current = CURRENT.lock().ok().and_then(|c| c.clone());
        match current {
            Some(p) if first => {
                eprintln!("interrupted: stopping and cleaning up (Ctrl+C again to quit at once)");
                p.cancel();
            }
            _ => std::process::exit(i32::from(INTERRUPTED)),
        }
    });
}

/// `progress`, now the one Ctrl+C cancels.
pub fn watched(progress: Progress) -> Progress {
    if let Ok(mut c) = CURRENT.lock() {
        *c = Some(progress.clone());
    }
    progress
}
