//! The one error type of `lens_model`.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the engine, each with enough context to tell the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum LensError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is wrong (truncated, corrupted, wrong format).
    #[error("{}: {msg}", path.display())]
    BadFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Input that the engine refuses (bad prompt, bad option, inconsistent model).
    #[error("{0}")]
    Invalid(String),
    /// ONNX Runtime could not be found, loaded or run.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The operation was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
    /// The prompt has more tokens than the model's context.
    #[error(
        "the prompt has {tokens} tokens but the model's context is {n_ctx}; shorten it, or keep its last {n_ctx} tokens (in the app: Keep the last tokens; in the CLI: --truncate left)"
    )]
    PromptTooLong {
        /// Tokens of the whole prompt.
        tokens: usize,
        /// The model's context.
        n_ctx: usize,
    },
}

/// Result alias used throughout `lens_model`.
pub type Result<T> = std::result::Result<T, LensError>;

/// `v[r]`, or an error naming `what`: a broken size invariant in numeric code is an error, never
/// an empty slice that would turn into zeros.
pub fn part<'a, T>(v: &'a [T], r: std::ops::Range<usize>, what: &str) -> Result<&'a [T]> {
    let (start, end, len) = (r.start, r.end, v.len());
    v.get(r).ok_or_else(|| LensError::invalid(format!("internal: {what} {start}..{end} is outside its {len} values")))
}

/// `&mut v[r]`, or an error naming `what` (see [`part`]).
pub fn part_mut<'a, T>(v: &'a mut [T], r: std::ops::Range<usize>, what: &str) -> Result<&'a mut [T]> {
    let (start, end, len) = (r.start, r.end, v.len());
    v.get_mut(r).ok_or_else(|| LensError::invalid(format!("internal: {what} {start}..{end} is outside its {len} values")))
}

impl LensError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
    /// A content error in `path`.
    pub fn bad_file(path: &Path, msg: impl Into<String>) -> Self {
        Self::BadFile { path: path.to_path_buf(), msg: msg.into() }
    }
    /// An invalid-input error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

impl From<ort::Error> for LensError {
    fn from(e: ort::Error) -> Self {
        Self::Runtime(e.to_string())
    }
}

type Sink = std::sync::Arc<dyn Fn(&str, f32) + Send + Sync>;
type CancelHook = Box<dyn Fn() + Send + Sync>;

/// A cooperative cancel flag plus a progress sink, passed to long operations.
#[derive(Clone, Default)]
pub struct Progress {
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sink: Option<Sink>,
    hooks: std::sync::Arc<std::sync::Mutex<Vec<(u64, CancelHook)>>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("cancelled", &self.is_cancelled()).finish()
    }
}

impl Progress {
    /// A progress that reports to `sink(stage, fraction in 0..=1)`.
    pub fn new(sink: impl Fn(&str, f32) + Send + Sync + 'static) -> Self {
        Self { cancel: Default::default(), sink: Some(std::sync::Arc::new(sink)), hooks: Default::default() }
    }
    /// A progress for one part of this operation, covering fractions `start..start + len` of it:
    /// it reports through this one's sink and shares its cancellation.
    pub fn part(&self, start: f32, len: f32) -> Self {
        let sink: Option<Sink> =
            self.sink.clone().map(|outer| -> Sink { std::sync::Arc::new(move |stage: &str, f: f32| outer(stage, (start + len * f).clamp(0.0, 1.0))) });
        Self { cancel: std::sync::Arc::clone(&self.cancel), sink, hooks: std::sync::Arc::clone(&self.hooks) }
    }
    /// Reports progress of a stage.
    pub fn report(&self, stage: &str, fraction: f32) {
        if let Some(sink) = &self.sink {
            sink(stage, fraction.clamp(0.0, 1.0));
        }
    }
    /// Asks the operation to stop at its next check (and interrupts a running forward pass).
    pub fn cancel(&self) {
        self.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(hooks) = self.hooks.lock() {
            for (_, h) in hooks.iter() {
                h();
            }
        }
    }

    /// Runs `f` with `hook` registered to be called on [`Progress::cancel`] (used to terminate an
    /// ONNX Runtime run from another thread).
    pub fn with_cancel_hook<R>(&self, hook: CancelHook, f: impl FnOnce() -> R) -> R {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut hooks) = self.hooks.lock() {
            hooks.push((id, hook));
        }
        let r = f();
        if let Ok(mut hooks) = self.hooks.lock() {
            hooks.retain(|(i, _)| *i != id);
        }
        r
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Returns `Err(Cancelled)` when cancellation was requested.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() { Err(LensError::Cancelled) } else { Ok(()) }
    }
}
