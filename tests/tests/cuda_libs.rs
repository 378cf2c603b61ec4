//! Finding and preloading the CUDA/cuDNN libraries of a pip-installed `onnxruntime-gpu[cuda,cudnn]`
//! (the CUDA provider itself cannot run on a machine without an NVIDIA GPU; these check everything
//! up to it). The expected lists are those of onnxruntime 1.24.4's `_get_nvidia_dll_paths` (Linux).

use std::fs;
use std::path::{Path, PathBuf};

use lens_model::run::cuda_libs::{candidates, cuda_major, explain_provider_failure, library_files, nvidia_dirs, preload};
use lens_tests::fixture::unique_temp_dir;

fn touch(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b"not a library").unwrap();
}

/// A site-packages folder holding onnxruntime/capi/libonnxruntime.so.1.24.4; returns (site, lib).
fn site_with_runtime(tag: &str, build_info: Option<&str>) -> (PathBuf, PathBuf) {
    let site = unique_temp_dir(tag);
    let lib = site.join("onnxruntime/capi/libonnxruntime.so.1.24.4");
    touch(&lib);
    if let Some(text) = build_info {
        fs::write(lib.parent().unwrap().join("build_and_package_info.py"), text).unwrap();
    }
    (site, lib)
}

#[test]
fn cuda_major_comes_from_the_wheels_build_info() {
    let (_, lib) = site_with_runtime("cuda-major-13", Some("package_name = 'onnxruntime-gpu'\n__version__ = '1.24.4'\ncuda_version = '13.0'\n"));
    assert_eq!(cuda_major(&lib), 13);
    let (_, lib) = site_with_runtime("cuda-major-12", Some("cuda_version = \"12.8\"\n"));
    assert_eq!(cuda_major(&lib), 12);
    let (_, lib) = site_with_runtime("cuda-major-none", None);
    assert_eq!(cuda_major(&lib), 12);
}

#[test]
fn library_list_matches_onnxruntime_preload_dlls() {
    let want12 = [
        ("cublas", "libcublasLt.so.12"),
        ("cublas", "libcublas.so.12"),
        ("cuda_nvrtc", "libnvrtc.so.12"),
        ("curand", "libcurand.so.10"),
        ("cufft", "libcufft.so.11"),
        ("cuda_runtime", "libcudart.so.12"),
        ("cudnn", "libcudnn.so.9"),
    ];
    let got: Vec<(&str, String)> = library_files(12);
    assert_eq!(got.len(), want12.len());
    for ((gp, gf), (wp, wf)) in got.iter().zip(want12) {
        assert_eq!((*gp, gf.as_str()), (wp, wf));
    }
    let got13 = library_files(13);
    assert!(got13.iter().any(|(p, f)| *p == "cufft" && f == "libcufft.so.12"), "{got13:?}");
    assert!(got13.iter().any(|(p, f)| *p == "cuda_runtime" && f == "libcudart.so.13"), "{got13:?}");
}

#[test]
fn candidates_are_found_beside_the_runtime_then_in_extra_folders_in_load_order() {
    let (site, lib) = site_with_runtime("cuda-cands", None);
    touch(&site.join("nvidia/cudnn/lib/libcudnn.so.9"));
    touch(&site.join("nvidia/cublas/lib/libcublasLt.so.12"));
    touch(&site.join("nvidia/cublas/lib/libcublas.so.13")); // another CUDA major: not taken
    let other = unique_temp_dir("cuda-cands-extra").join("nvidia");
    touch(&other.join("cuda_runtime/lib/libcudart.so.12"));
    touch(&other.join("cudnn/lib/libcudnn.so.9")); // already found beside the runtime
    let missing = PathBuf::from("/nonexistent/nvidia");

    let dirs = nvidia_dirs(&lib, &[other.clone(), missing]);
    assert_eq!(dirs, vec![site.join("nvidia"), other.clone()]);
    let files = candidates(&dirs, 12);
    assert_eq!(
        files,
        vec![site.join("nvidia/cublas/lib/libcublasLt.so.12"), other.join("cuda_runtime/lib/libcudart.so.12"), site.join("nvidia/cudnn/lib/libcudnn.so.9")]
    );
    // A runtime that is not inside a Python package has no folder beside it.
    let lone = unique_temp_dir("cuda-lone").join("libonnxruntime.so");
    touch(&lone);
    assert!(nvidia_dirs(&lone, &[]).is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn preload_loads_real_libraries_and_reports_the_others() {
    let real = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("libm.so.6 on this Linux machine");
    let fake = unique_temp_dir("cuda-preload").join("libcudart.so.12");
    touch(&fake);
    let (loaded, failed) = preload(&[real.clone(), fake.clone()]);
    assert_eq!(loaded, vec![real]);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].starts_with(&fake.display().to_string()), "{failed:?}");
    assert!(failed[0].contains("invalid ELF header") || failed[0].contains("too short"), "{failed:?}");
}

#[test]
fn provider_failures_are_explained() {
    // Both messages verbatim from onnxruntime-gpu 1.24.4 on this machine (no GPU, no driver).
    let missing = "ONNX Runtime: /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1952 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /tmp/ortgpu/x/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.12: cannot open shared object file: No such file or directory\n";
    let hint = explain_provider_failure(missing, 12).unwrap();
    assert!(hint.starts_with("the CUDA provider needs libcublasLt.so.12, which is not installed"), "{hint}");
    assert!(hint.contains("onnxruntime-gpu[cuda,cudnn]") && hint.contains("CUDA 12.x"), "{hint}");

    let no_driver = "ONNX Runtime: /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:129 std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true; SUCCTYPE = cudaError; std::conditional_t<THRW, void, common::Status> = void] CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; GPU=-1 ; hostname=vm ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider.cc ; line=334 ; expr=cudaSetDevice(info_.device_id); \n";
    let hint = explain_provider_failure(no_driver, 12).unwrap();
    assert_eq!(
        hint,
        "the CUDA provider loaded, but the CUDA runtime failed: CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version \
         (in cudaSetDevice(info_.device_id)). Is an NVIDIA GPU present, with a driver for CUDA 12.x (`nvidia-smi` shows both)?"
    );
    assert_eq!(explain_provider_failure("ONNX Runtime: some other failure", 12), None);
}
