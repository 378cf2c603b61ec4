//! The CUDA and cuDNN libraries that ONNX Runtime's CUDA provider needs, found the way the
//! `onnxruntime-gpu` wheel's own `onnxruntime.preload_dlls()` finds them.
//!
//! `libonnxruntime_providers_cuda.so` links against `libcublasLt`, `libcublas`, `libcurand`,
//! `libcufft`, `libcudart` and `libcudnn`. A system CUDA install puts them on the loader's path;
//! `pip install onnxruntime-gpu[cuda,cudnn]` puts them in `site-packages/nvidia/<pkg>/lib/`, which
//! the loader does not search. Before the CUDA provider is registered, those files are loaded
//! (RTLD_GLOBAL), so that the provider library's own load then finds them already present.
//! Where none are found nothing is loaded, and a failure to load the provider is explained by
//! [`explain_provider_failure`].

use std::path::{Path, PathBuf};

/// The CUDA major version the runtime at `ort_lib` was built for: `cuda_version` in the wheel's
/// `build_and_package_info.py` beside the library, else 12 (every `onnxruntime-gpu` on PyPI since 1.19).
pub fn cuda_major(ort_lib: &Path) -> u32 {
    let info = ort_lib.parent().map(|d| d.join("build_and_package_info.py"));
    info.and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                let rest = l.trim().strip_prefix("cuda_version")?.trim_start().strip_prefix('=')?;
                let v = rest.trim().trim_matches(|c| c == '\'' || c == '"');
                v.split('.').next()?.parse().ok()
            })
        })
        .unwrap_or(12)
}

/// `(package folder under nvidia/, file name)` in load order (cublasLt before cublas), as
/// `onnxruntime.preload_dlls()` lists them for Linux.
pub fn library_files(major: u32) -> Vec<(&'static str, String)> {
    // cuFFT's soname is one behind CUDA's major version (CUDA 12 ships libcufft.so.11).
    let cufft = major.saturating_sub(1);
    vec![
        ("cublas", format!("libcublasLt.so.{major}")),
        ("cublas", format!("libcublas.so.{major}")),
        ("cuda_nvrtc", format!("libnvrtc.so.{major}")),
        ("curand", "libcurand.so.10".to_string()),
        ("cufft", format!("libcufft.so.{cufft}")),
        ("cuda_runtime", format!("libcudart.so.{major}")),
        ("cudnn", "libcudnn.so.9".to_string()),
    ]
}

/// The `nvidia/` folders to look in: beside the runtime's own Python package
/// (`site-packages/onnxruntime/capi/libonnxruntime.so` → `site-packages/nvidia`), then those in
/// `extra` (e.g. the Python environment's, from [`python_nvidia_dirs`]).
pub fn nvidia_dirs(ort_lib: &Path, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(site) = ort_lib.parent().and_then(Path::parent).and_then(Path::parent) {
        let d = site.join("nvidia");
        if d.is_dir() {
            dirs.push(d);
        }
    }
    for d in extra {
        if d.is_dir() && !dirs.contains(d) {
            dirs.push(d.clone());
        }
    }
    dirs
}

/// The existing library files under `dirs`, in load order, each the first found for its name:
/// `nvidia/<package>/lib/` (CUDA 12's wheels), else `nvidia/cu<major>/lib/` (CUDA 13's
/// consolidated `nvidia-*-cu13` wheels, which PyTorch's CUDA 13 builds install).
pub fn candidates(dirs: &[PathBuf], major: u32) -> Vec<PathBuf> {
    let consolidated = format!("cu{major}");
    library_files(major)
        .into_iter()
        .filter_map(|(pkg, file)| {
            dirs.iter().flat_map(|d| [d.join(pkg).join("lib").join(&file), d.join(&consolidated).join("lib").join(&file)]).find(|p| p.is_file())
        })
        .collect()
}

/// The `nvidia` namespace folders of the Python environment (`LOGIT_LENS_PYTHON` or `python3`), if any.
pub fn python_nvidia_dirs(python: &str) -> Vec<PathBuf> {
    let out = std::process::Command::new(python).args(["-c", "import nvidia; print('\\n'.join(nvidia.__path__))"]).stderr(std::process::Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect(),
        _ => Vec::new(),
    }
}

/// Loads each of `files` with RTLD_NOW | RTLD_GLOBAL; returns the loaded ones and, for the
/// others, why not. The handles are kept for the life of the process.
pub fn preload(files: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    for f in files {
        match dlopen_global(f) {
            Ok(()) => loaded.push(f.clone()),
            Err(e) => failed.push(format!("{}: {e}", f.display())),
        }
    }
    (loaded, failed)
}

#[cfg(unix)]
fn dlopen_global(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "path contains a NUL byte".to_string())?;
    // SAFETY: `c` is a valid NUL-terminated path; dlopen runs the library's initialisers, which is
    // what loading it through ONNX Runtime would do anyway. The handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a valid C string owned by the loader, read at once.
        let msg = unsafe {
            let e = libc::dlerror();
            if e.is_null() { "unknown dlopen error".to_string() } else { std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned() }
        };
        return Err(msg);
    }
    Ok(())
}

#[cfg(not(unix))]
fn dlopen_global(_path: &Path) -> std::result::Result<(), String> {
    Err("preloading is only done on Linux".into())
}

/// Turns ONNX Runtime's message about a CUDA provider that could not be registered into one that
/// says what to do: a missing CUDA/cuDNN library (`libcublasLt.so.12: cannot open shared object
/// file`), or a CUDA call that failed (`CUDA failure 35: CUDA driver version is insufficient ...`,
/// e.g. no NVIDIA driver or GPU). `None` for any other message, which is then shown as it is.
pub fn explain_provider_failure(err: &str, major: u32) -> Option<String> {
    if let Some(idx) = err.find(": cannot open shared object file") {
        let lib = err.get(..idx)?.rsplit(|c: char| c.is_whitespace() || c == ':').next()?.to_string();
        if lib.is_empty() {
            return None;
        }
        return Some(format!(
            "the CUDA provider needs {lib}, which is not installed. Install CUDA {major}.x and cuDNN 9 system-wide, \
             or into the Python environment with `python3 -m pip install \"onnxruntime-gpu[cuda,cudnn]\"` \
             (logit-lens loads site-packages/nvidia/*/lib from there, as onnxruntime.preload_dlls() does)"
        ));
    }
    let idx = err.find("CUDA failure ")?;
    let rest = err.get(idx..)?;
    let what = rest.split(" ;").next().unwrap_or(rest).trim();
    let call = rest.split(" ; ").find_map(|part| part.trim().strip_prefix("expr=")).map(|e| e.trim().trim_end_matches(';').trim());
    let mut msg = format!("the CUDA provider loaded, but the CUDA runtime failed: {what}");
    if let Some(call) = call {
        msg.push_str(&format!(" (in {call})"));
    }
    msg.push_str(&format!(". Is an NVIDIA GPU present, with a driver for CUDA {major}.x (`nvidia-smi` shows both)?"));
    Some(msg)
}
