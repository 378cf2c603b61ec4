//! ONNX Runtime: library discovery, execution providers, sessions.
//!
//! The runtime is loaded dynamically (`ort`'s `load-dynamic`), found in this order:
//! 1. `--ort-lib PATH` or `ORT_DYLIB_PATH`;
//! 2. next to the executable (how an installed app ships it), or `../lib/logit-lens/`;
//! 3. the per-user cache `<cache>/logit-lens/onnxruntime/<version>/`;
//! 4. an existing Python environment with `onnxruntime` or `onnxruntime-gpu` installed;
//! 5. otherwise the cache is filled from the official `onnxruntime` wheel on PyPI with pip.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;

use crate::error::{LensError, Result};
use crate::run::cuda_libs;

/// The `onnxruntime` wheel version that the cache is filled with.
pub const ORT_WHEEL_VERSION: &str = "1.24.4";
/// The oldest runtime this build accepts (the `api-24` feature of `ort`).
pub const ORT_MIN_MINOR: u32 = 24;

/// Which execution provider to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA, then DirectML, then CPU, whichever registers first.
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// NVIDIA CUDA; an error when it cannot be registered.
    Cuda,
    /// DirectML (Windows); an error when it cannot be registered.
    #[serde(rename = "directml")]
    DirectMl,
}

impl std::str::FromStr for Device {
    type Err = LensError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "directml" | "dml" => Ok(Self::DirectMl),
            other => Err(LensError::invalid(format!("unknown device {other:?}; use auto, cpu, cuda or directml"))),
        }
    }
}

/// The loaded runtime library.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    /// Path of the shared library.
    pub library: PathBuf,
    /// Its version, e.g. `1.24.4`.
    pub version: String,
    /// How it was found.
    pub found_by: String,
    /// Execution providers compiled into this runtime.
    pub compiled_providers: Vec<String>,
}

/// Which provider a session uses and why the others are not used.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProviderReport {
    /// The active provider: `CPU`, `CUDA` or `DirectML`.
    pub active: String,
    /// One line per provider that was not used, saying why.
    pub notes: Vec<String>,
}

struct Loaded {
    info: RuntimeInfo,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

fn lib_names() -> &'static [&'static str] {
    if cfg!(target_os = "windows") {
        &["onnxruntime.dll"]
    } else if cfg!(target_os = "macos") {
        &["libonnxruntime.dylib"]
    } else {
        &["libonnxruntime.so", "libonnxruntime.so.1"]
    }
}

/// Finds a runtime library file in `dir`: a plain name, or a versioned `libonnxruntime.so.1.x.y`.
fn find_in_dir(dir: &Path) -> Option<PathBuf> {
    for n in lib_names() {
        let p = dir.join(n);
        if p.is_file() {
            return Some(p);
        }
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (n.starts_with("libonnxruntime.so.1.") || (n.starts_with("libonnxruntime.1.") && n.ends_with(".dylib"))) && p.is_file()
        })
        .collect();
    versioned.sort();
    versioned.pop()
}

fn python() -> String {
    std::env::var("LOGIT_LENS_PYTHON").unwrap_or_else(|_| if cfg!(windows) { "python".into() } else { "python3".into() })
}

/// The per-user cache folder of logit-lens (converted models, the runtime library).
pub fn cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("LOGIT_LENS_CACHE")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("logit-lens")
}

fn ort_cache_dir() -> PathBuf {
    cache_dir().join("onnxruntime").join(ORT_WHEEL_VERSION)
}

fn python_env_lib() -> Option<PathBuf> {
    let out = std::process::Command::new(python())
        // find_spec locates the package without importing it (an import takes ~0.3 s).
        .args(["-c", "import importlib.util as u, os; s = u.find_spec('onnxruntime'); print(os.path.join(s.submodule_search_locations[0], 'capi'))"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    find_in_dir(&dir)
}

/// Downloads the official `onnxruntime` wheel with pip and extracts its shared library into the cache.
fn fill_cache_with_pip() -> std::result::Result<PathBuf, String> {
    let dest = ort_cache_dir();
    let package = std::env::var("LOGIT_LENS_ORT_PACKAGE").unwrap_or_else(|_| "onnxruntime".into());
    eprintln!("logit-lens: ONNX Runtime not found; fetching {package}=={ORT_WHEEL_VERSION} from PyPI with pip into {} (once)", dest.display());
    let tmp = cache_dir().join(format!("wheel-download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let spec = format!("{package}=={ORT_WHEEL_VERSION}");
    let status = std::process::Command::new(python())
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"])
        .arg(&tmp)
        .arg(&spec)
        .status()
        .map_err(|e| format!("could not run `{} -m pip`: {e}", python()))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("`pip download {spec}` failed"));
    }
    std::fs::create_dir_all(&dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let script = "import sys, zipfile, glob, os\n\
        whl = glob.glob(os.path.join(sys.argv[1], '*.whl'))[0]\n\
        z = zipfile.ZipFile(whl)\n\
        for n in z.namelist():\n\
        \x20   b = os.path.basename(n)\n\
        \x20   if '/capi/' in n and (b.startswith('libonnxruntime') or b.startswith('onnxruntime') and b.endswith('.dll')):\n\
        \x20       tmp = os.path.join(sys.argv[2], b + '.tmp-' + str(os.getpid()))\n\
        \x20       open(tmp, 'wb').write(z.read(n))\n\
        \x20       os.replace(tmp, os.path.join(sys.argv[2], b))\n";
    let status = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&tmp)
        .arg(&dest)
        .status()
        .map_err(|e| format!("could not run python to unpack the wheel: {e}"))?;
    let _ = std::fs::remove_dir_all(&tmp);
    if !status.success() {
        return Err("unpacking the onnxruntime wheel failed".into());
    }
    find_in_dir(&dest).ok_or_else(|| format!("the wheel did not contain a runtime library for this platform ({})", dest.display()))
}

/// The version the library itself reports (`OrtGetApiBase()->GetVersionString()`, e.g. `1.24.4`):
/// the only source on Windows, where neither the file name nor every build's info string has it.
fn library_version(path: &Path) -> Option<String> {
    type GetApiBase = unsafe extern "system" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `path` is the ONNX Runtime library that `ort::init_from` has just loaded, so opening it
    // again only adds a reference; `OrtGetApiBase` takes no arguments and returns a pointer to a
    // static table whose `GetVersionString` returns a static NUL-terminated string, copied here
    // before the library handle is dropped.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get: libloading::Symbol<'_, GetApiBase> = lib.get(b"OrtGetApiBase").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let s = ((*base).GetVersionString)();
        if s.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}

fn try_load(path: &Path, found_by: &str) -> std::result::Result<Loaded, String> {
    let builder = ort::init_from(path).map_err(|e| e.to_string())?;
    let env = builder.with_name("logit-lens").build().map_err(|e| e.to_string())?;
    let build_info = ort::info();
    let version = library_version(path)
        .filter(|v| !v.is_empty())
        .or_else(|| build_info.split(|c: char| c == ',' || c.is_whitespace()).find_map(|part| part.strip_prefix("git-branch=rel-")).map(str::to_string))
        .or_else(|| {
            let n = path.file_name()?.to_string_lossy().into_owned();
            n.strip_prefix("libonnxruntime.so.").map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    let compiled_providers = ["CUDA", "DirectML", "CPU"]
        .iter()
        .filter(|p| match **p {
            "CUDA" => ep::CUDA::is_available().unwrap_or(false),
            "DirectML" => ep::DirectML::is_available().unwrap_or(false),
            _ => true,
        })
        .map(|s| (*s).to_string())
        .collect();
    Ok(Loaded { info: RuntimeInfo { library: path.to_path_buf(), version, found_by: found_by.into(), compiled_providers }, env })
}

fn discover(explicit: Option<&Path>) -> std::result::Result<Loaded, String> {
    let mut tried: Vec<String> = Vec::new();
    let explicit = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from));
    if let Some(p) = explicit {
        // The user named a library: use it or say why not; never silently take another.
        return try_load(&p, "--ort-lib / ORT_DYLIB_PATH").map_err(|e| format!("cannot load the ONNX Runtime library {}: {e}", p.display()));
    }
    let mut candidates: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        for dir in [exe_dir.clone(), exe_dir.join("../lib/logit-lens"), exe_dir.join("lib")] {
            if let Some(p) = find_in_dir(&dir) {
                candidates.push((p, "next to the executable"));
            }
        }
    }
    if let Some(p) = find_in_dir(&ort_cache_dir()) {
        candidates.push((p, "per-user cache"));
    }
    for (p, how) in &candidates {
        match try_load(p, how) {
            Ok(l) => return Ok(l),
            Err(e) => tried.push(format!("{}: {e}", p.display())),
        }
    }
    if let Some(p) = python_env_lib() {
        match try_load(&p, "Python environment (onnxruntime package)") {
            Ok(l) => return Ok(l),
            Err(e) => tried.push(format!("{}: {e}", p.display())),
        }
    }
    if std::env::var_os("LOGIT_LENS_NO_DOWNLOAD").is_none() {
        match fill_cache_with_pip() {
            Ok(p) => match try_load(&p, "per-user cache (filled from PyPI)") {
                Ok(l) => return Ok(l),
                Err(e) => tried.push(format!("{}: {e}", p.display())),
            },
            Err(e) => tried.push(e),
        }
    }
    let mut msg = String::from("the ONNX Runtime library (libonnxruntime) was not found.\n");
    if !tried.is_empty() {
        msg.push_str("Tried:\n");
        for t in &tried {
            msg.push_str(&format!("  - {t}\n"));
        }
    }
    msg.push_str(&format!(
        "To fix it, do one of:\n  - `python3 -m pip install onnxruntime=={ORT_WHEEL_VERSION}` (or onnxruntime-gpu for CUDA) and run again;\n  - pass `--ort-lib /path/to/libonnxruntime.so` or set ORT_DYLIB_PATH;\n  - put libonnxruntime next to the logit-lens executable.\nThe runtime must be version 1.{ORT_MIN_MINOR} or newer."
    ));
    Err(msg)
}

/// Loads ONNX Runtime once per process (see the module doc for the search order).
pub fn init_runtime(explicit: Option<&Path>) -> Result<&'static RuntimeInfo> {
    match RUNTIME.get_or_init(|| discover(explicit)) {
        Ok(l) => Ok(&l.info),
        Err(e) => Err(LensError::Runtime(e.clone())),
    }
}

fn environment() -> Result<&'static ort::environment::Environment> {
    match RUNTIME.get() {
        Some(Ok(l)) => Ok(&l.env),
        Some(Err(e)) => Err(LensError::Runtime(e.clone())),
        None => Err(LensError::Runtime("ONNX Runtime is not initialised; call init_runtime first".into())),
    }
}

/// A CUDA build of ONNX Runtime in the Python environment (`onnxruntime-gpu`: the CUDA provider
/// library beside it), other than the one loaded; looked up once per process. The cache or a copy
/// next to the executable is found first, so a later `pip install onnxruntime-gpu` is named here.
fn python_cuda_runtime() -> Option<&'static PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let loaded = match RUNTIME.get() {
                Some(Ok(l)) => Some(l.info.library.clone()),
                _ => None,
            };
            let p = python_env_lib()?;
            let has_cuda =
                p.parent().is_some_and(|d| d.join(if cfg!(windows) { "onnxruntime_providers_cuda.dll" } else { "libonnxruntime_providers_cuda.so" }).is_file());
            (has_cuda && loaded.as_ref() != Some(&p)).then_some(p)
        })
        .as_ref()
}

/// Loads, once per process, the CUDA/cuDNN libraries of a pip-installed `onnxruntime-gpu[cuda,cudnn]`
/// (see [`cuda_libs`]) and returns what it did, as notes for the provider report.
fn preload_cuda_libraries() -> &'static [String] {
    static DONE: OnceLock<Vec<String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(Ok(l)) = RUNTIME.get() else { return Vec::new() };
        if !cfg!(target_os = "linux") || std::env::var_os("LOGIT_LENS_NO_CUDA_PRELOAD").is_some() {
            return Vec::new();
        }
        let major = cuda_libs::cuda_major(&l.info.library);
        let mut dirs = cuda_libs::nvidia_dirs(&l.info.library, &[]);
        if cuda_libs::candidates(&dirs, major).is_empty() {
            dirs = cuda_libs::nvidia_dirs(&l.info.library, &cuda_libs::python_nvidia_dirs(&python()));
        }
        let files = cuda_libs::candidates(&dirs, major);
        if files.is_empty() {
            return Vec::new();
        }
        let (loaded, failed) = cuda_libs::preload(&files);
        let mut notes = Vec::new();
        if !loaded.is_empty() {
            let names: Vec<String> = loaded.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
            let from: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            notes.push(format!("CUDA: loaded the CUDA {major} libraries {} from {}", names.join(", "), from.join(", ")));
        }
        notes.extend(failed.into_iter().map(|f| format!("CUDA: could not load {f}")));
        notes
    })
}

/// An initializer handed to a session in place of the one the model file names (the session uses
/// the tensor's buffer; it does not read or copy its own).
pub type SharedInitializer = (String, std::sync::Arc<ort::value::DynValue>);

fn with_initializers(mut builder: ort::session::builder::SessionBuilder, initializers: &[SharedInitializer]) -> Result<ort::session::builder::SessionBuilder> {
    for (name, value) in initializers {
        builder = builder
            .with_initializer(name, value.clone())
            .map_err(|e| LensError::Runtime(format!("cannot share initializer {name:?} with the session: {e}")))?;
    }
    Ok(builder)
}

/// A model to open: a file, or serialized bytes (a graph built in memory).
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    /// An `.onnx` file (external data next to it).
    File(&'a Path),
    /// A serialized `ModelProto` without external data.
    Bytes(&'a [u8]),
}

impl ModelSource<'_> {
    fn commit(self, builder: &mut ort::session::builder::SessionBuilder) -> Result<Session> {
        match self {
            Self::File(p) => builder.commit_from_file(p).map_err(|e| LensError::Runtime(format!("cannot load {}: {e}", p.display()))),
            Self::Bytes(b) => builder.commit_from_memory(b).map_err(|e| LensError::Runtime(format!("cannot load a graph built in memory: {e}"))),
        }
    }
}

/// [`create_session_from`] for a model file.
pub fn create_session(model: &Path, device: Device, threads: usize, initializers: &[SharedInitializer]) -> Result<(Session, ProviderReport)> {
    create_session_from(ModelSource::File(model), device, threads, initializers)
}

/// [`create_session`] with the CPU provider's weight pre-packing on: a quantized bundle's
/// `MatMulNBits` computes on its packed codes only when they are pre-packed (unpacked, it
/// dequantizes every matrix to f32 on every run: a 16-token forward pass of Llama-3-8B's shape
/// took 26 s so, see the README).
pub fn create_session_prepacked(model: &Path, device: Device, threads: usize, initializers: &[SharedInitializer]) -> Result<(Session, ProviderReport)> {
    create_session_with(ModelSource::File(model), device, threads, initializers, true)
}

/// Creates a session for `model` on `device`, registering providers with `error_on_failure`;
/// `initializers` replace the model's initializers of the same names.
pub fn create_session_from(model: ModelSource<'_>, device: Device, threads: usize, initializers: &[SharedInitializer]) -> Result<(Session, ProviderReport)> {
    create_session_with(model, device, threads, initializers, false)
}

/// [`create_session_from`]; `prepack`: the CPU provider pre-packs the weights.
fn create_session_with(
    model: ModelSource<'_>,
    device: Device,
    threads: usize,
    initializers: &[SharedInitializer],
    prepack: bool,
) -> Result<(Session, ProviderReport)> {
    init_runtime(None)?;
    let env = environment()?;
    let mut report = ProviderReport::default();
    let wanted: &[&str] = match device {
        Device::Auto => &["CUDA", "DirectML"],
        Device::Cuda => &["CUDA"],
        Device::DirectMl => &["DirectML"],
        Device::Cpu => &[],
    };
    for &name in wanted {
        let (available, dispatch) = match name {
            "CUDA" => (ep::CUDA::is_available().unwrap_or(false), ep::CUDA::default().build().error_on_failure()),
            _ => (ep::DirectML::is_available().unwrap_or(false), ep::DirectML::default().build().error_on_failure()),
        };
        if !available {
            let how = if name == "CUDA" { "the onnxruntime-gpu wheel has it" } else { "DirectML is Windows-only: the onnxruntime-directml wheel has it" };
            let mut note = format!("{name}: this ONNX Runtime was built without {name} ({how})");
            // Only when CUDA was asked for by name: looking costs a Python start, which `auto` on a
            // CPU build should not pay on every run.
            if name == "CUDA"
                && device == Device::Cuda
                && let Some(p) = python_cuda_runtime()
            {
                note.push_str(&format!("; the Python environment has a CUDA build: pass --ort-lib {} (or set ORT_DYLIB_PATH to it)", p.display()));
            }
            report.notes.push(note);
            continue;
        }
        if name == "CUDA" {
            report.notes.extend(preload_cuda_libraries().iter().cloned());
        }
        let attempt = Session::builder(env)
            .map_err(LensError::from)
            .and_then(|b| b.with_execution_providers([dispatch]).map_err(|e| LensError::Runtime(e.to_string())))
            .and_then(|b| with_initializers(b, initializers))
            .and_then(|mut b| model.commit(&mut b));
        match attempt {
            Ok(s) => {
                report.active = name.into();
                return Ok((s, report));
            }
            Err(e) => {
                let e = e.to_string();
                let hint = if name == "CUDA" {
                    RUNTIME.get().and_then(|r| r.as_ref().ok()).and_then(|l| cuda_libs::explain_provider_failure(&e, cuda_libs::cuda_major(&l.info.library)))
                } else {
                    None
                };
                match hint {
                    Some(h) => report.notes.push(format!("{name}: could not be registered: {h}")),
                    None => report.notes.push(format!("{name}: could not be registered: {e}")),
                }
            }
        }
    }
    if device != Device::Auto && device != Device::Cpu {
        let why = report.notes.join("; ");
        return Err(LensError::Runtime(format!("the requested device is not usable: {why}")));
    }
    let mut builder = Session::builder(env)?;
    // Memory: no arena (freed outputs go back to the system) and no pre-packed weight copies
    // (but for `create_session_prepacked`); measured on GPT-2-small, 291 tokens: peak RSS 1.29 GB
    // -> 1.0 GB, forward time unchanged.
    #[allow(clippy::result_large_err)] // ort's builder error carries the builder back
    let configured = builder.with_execution_providers([ep::CPU::default().with_arena_allocator(false).build()]).and_then(|b| b.with_prepacking(prepack));
    builder = configured.map_err(|e| LensError::Runtime(e.to_string()))?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| LensError::Runtime(e.to_string()))?;
    }
    builder = with_initializers(builder, initializers)?;
    let session = model.commit(&mut builder)?;
    report.active = "CPU".into();
    if device == Device::Auto && !report.notes.is_empty() {
        report.notes.push("auto: fell back to CPU".into());
    }
    Ok((session, report))
}
