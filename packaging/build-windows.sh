#!/usr/bin/env bash
# Cross-builds the Windows package on a Linux host (Debian 12 here): the release binary for
# x86_64-pc-windows-gnu (MinGW-w64 linker), ONNX Runtime's DirectML build (onnxruntime.dll,
# DirectML.dll, onnxruntime_providers_shared.dll from the official onnxruntime-directml wheel on
# PyPI), the demo model (and its tuned lens), the prompts, an NSIS installer
# (logit-lens-<version>-setup.exe: Start-menu entry with icon, "Open with" for .txt prompts,
# uninstaller; per user, no admin rights) and a portable .zip of the same files.
# Output: packaging/out/windows/. The installed app finds its runtime and demo model next to
# logit-lens.exe and keeps settings and its bundle cache in the user's folders (%APPDATA%,
# %LOCALAPPDATA%).
# Needs: rustup (target x86_64-pc-windows-gnu, added if missing), gcc-mingw-w64-x86-64, nsis,
# python3 + pip. Takes ~10 minutes on 2 cores (the cross build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ort_version=$(sed -n 's/^pub const ORT_WHEEL_VERSION: &str = "\(.*\)";/\1/p' model/src/run/runtime.rs)
target=x86_64-pc-windows-gnu
out="$here/out/windows"
stage="$out/stage"
for tool in x86_64-w64-mingw32-gcc makensis python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64 nsis python3-pip)" >&2; exit 1; }
done
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
rm -rf "$stage" && mkdir -p "$stage"

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc CXX_x86_64_pc_windows_gnu=x86_64-w64-mingw32-g++ AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
cargo build --release --target "$target" -p lens_app
exe="target/$target/release/logit-lens.exe"

# ONNX Runtime, DirectML build: its DLLs and licence files.
wheel_dir="$out/wheel"
if ! ls "$wheel_dir"/onnxruntime_directml-"$ort_version"-*win_amd64.whl >/dev/null 2>&1; then
  mkdir -p "$wheel_dir"
  python3 -m pip download --no-deps --only-binary=:all: --platform win_amd64 --python-version 3.11 \
    --disable-pip-version-check -q -d "$wheel_dir" "onnxruntime-directml==$ort_version"
fi
python3 - "$wheel_dir" "$stage" <<'PY'
import glob, os, sys, zipfile
whl = sorted(glob.glob(os.path.join(sys.argv[1], "onnxruntime_directml-*.whl")))[-1]
z = zipfile.ZipFile(whl)
wanted = {"onnxruntime.dll", "DirectML.dll", "onnxruntime_providers_shared.dll"}
got = set()
for n in z.namelist():
    b = os.path.basename(n)
    if "/capi/" in n and b in wanted:
        open(os.path.join(sys.argv[2], b), "wb").write(z.read(n)); got.add(b)
    elif n.endswith("LICENSE") or n.endswith("ThirdPartyNotices.txt"):
        open(os.path.join(sys.argv[2], "onnxruntime-" + b), "wb").write(z.read(n))
missing = wanted - got
if missing:
    sys.exit(f"error: {whl} lacks {sorted(missing)}")
PY

install -m755 "$exe" "$stage/logit-lens.exe"
# The release profile keeps debug info (for backtraces in development): not in the package.
x86_64-w64-mingw32-strip "$stage/logit-lens.exe"
demo="$root/assets/demo-model"
mkdir -p "$stage/demo-model/tuned-lens" "$stage/prompts"
for f in config.json model.safetensors tokenizer.json README.md; do install -m644 "$demo/$f" "$stage/demo-model/$f"; done
for f in config.json params.pt README.md; do install -m644 "$demo/tuned-lens/$f" "$stage/demo-model/tuned-lens/$f"; done
cp -r "$root/assets/prompts/." "$stage/prompts/"
install -Dm644 "$root/assets/nnsight/logit_lens_nnsight.py" "$stage/nnsight/logit_lens_nnsight.py"
install -m644 "$root/README.md" "$stage/README.md"
# The icon: PNG images in an .ico (Windows Vista and later read PNG entries).
python3 - "$here/icons" "$stage/logit-lens.ico" <<'PY'
import os, struct, sys
sizes = [16, 24, 32, 48, 64, 128, 256]
imgs = [open(os.path.join(sys.argv[1], f"logit-lens-{s}.png"), "rb").read() for s in sizes]
head = struct.pack("<HHH", 0, 1, len(imgs))
offset = 6 + 16 * len(imgs)
entries, data = b"", b""
for s, png in zip(sizes, imgs):
    entries += struct.pack("<BBBBHHII", s % 256, s % 256, 0, 0, 1, 32, len(png), offset + len(data))
    data += png
open(sys.argv[2], "wb").write(head + entries + data)
PY

mkdir -p "$out"
makensis -V2 -DVERSION="$version" -DSTAGE="$stage" -DOUT="$out" "$here/windows/logit-lens.nsi"
setup="$out/logit-lens-$version-setup.exe"
zip="$out/logit-lens-$version-windows-x64.zip"
rm -f "$zip"
python3 - "$stage" "$zip" "logit-lens-$version" <<'PY'
import os, sys, zipfile
stage, out, top = sys.argv[1:4]
with zipfile.ZipFile(out + ".partial", "w", zipfile.ZIP_DEFLATED) as z:
    for d, _, files in os.walk(stage):
        for f in sorted(files):
            p = os.path.join(d, f)
            z.write(p, os.path.join(top, os.path.relpath(p, stage)))
os.replace(out + ".partial", out)
PY
echo "wrote $setup ($(du -h "$setup" | cut -f1)) and $zip ($(du -h "$zip" | cut -f1))"
