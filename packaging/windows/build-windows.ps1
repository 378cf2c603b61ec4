# Builds the Windows installer (NSIS) with the DirectML build of ONNX Runtime.
# Run on a Windows runner (e.g. GitHub Actions windows-2022) from the repository root:
#   choco install nsis -y ; python -m pip install --upgrade pip
#   powershell -ExecutionPolicy Bypass -File packaging/windows/build-windows.ps1
# Output: packaging/out/logit-lens-<version>-setup.exe
# The ort crate is built with `api-24` (see Cargo.toml), which the onnxruntime-directml wheel
# (1.24.x) satisfies. The app finds onnxruntime.dll next to logit-lens.exe and the demo model in
# demo-model\ beside it (see model/src/runtime.rs and model/src/resolve.rs).
$ErrorActionPreference = "Stop"
$root = (Resolve-Path "$PSScriptRoot\..\..").Path
Set-Location $root
$version = (Select-String -Path Cargo.toml -Pattern '^version = "(.*)"').Matches[0].Groups[1].Value
$ortVersion = "1.24.4"
$out = "$root\packaging\out"
$stage = "$out\win-stage"
Remove-Item -Recurse -Force $stage -ErrorAction SilentlyContinue
New-Item -ItemType Directory -Force $stage | Out-Null

cargo build --release -p lens_app
python -m pip download --no-deps --only-binary=:all: -d "$out\wheel" "onnxruntime-directml==$ortVersion"
$whl = Get-ChildItem "$out\wheel\onnxruntime_directml-*.whl" | Select-Object -Last 1
Expand-Archive -Force $whl.FullName "$out\wheel\x"
Copy-Item "$out\wheel\x\onnxruntime\capi\onnxruntime.dll" $stage
Copy-Item "$out\wheel\x\onnxruntime\capi\DirectML.dll" $stage
Copy-Item "$out\wheel\x\onnxruntime\capi\onnxruntime_providers_shared.dll" $stage -ErrorAction SilentlyContinue
Copy-Item "target\release\logit-lens.exe" $stage
New-Item -ItemType Directory -Force "$stage\demo-model", "$stage\prompts" | Out-Null
Copy-Item "assets\demo-model\config.json", "assets\demo-model\model.safetensors", "assets\demo-model\tokenizer.json", "assets\demo-model\README.md" "$stage\demo-model"
Copy-Item "assets\prompts\*" "$stage\prompts"
Copy-Item "packaging\icons\logit-lens-256.png" $stage
makensis /DVERSION=$version /DSTAGE=$stage /DOUT=$out "packaging\windows\logit-lens.nsi"
