#!/usr/bin/env bash
# Builds logit-lens.app and a .dmg. Run on a macOS runner (e.g. GitHub Actions macos-14, Apple
# silicon) from the repository root, with Rust 1.95 and python3 + pip:
#   bash packaging/macos/build-macos.sh
# The app finds libonnxruntime.dylib next to its executable (Contents/MacOS) and the demo model in
# Contents/Resources/demo-model (model/src/run/resolve.rs); settings and the model cache go to
# ~/Library/Application Support and ~/Library/Caches.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ort_version=1.24.4
out="$root/packaging/out"
app="$out/logit-lens.app"
rm -rf "$app" && mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources/demo-model" "$app/Contents/Resources/prompts"
cargo build --release -p lens_app
python3 -m pip download --no-deps --only-binary=:all: -d "$out/wheel" "onnxruntime==$ort_version"
python3 - "$out/wheel" "$app/Contents/MacOS" <<'PY'
import glob, os, sys, zipfile
z = zipfile.ZipFile(sorted(glob.glob(os.path.join(sys.argv[1], "onnxruntime-*macosx*.whl")))[-1])
for n in z.namelist():
    if "/capi/" in n and os.path.basename(n).startswith("libonnxruntime") and n.endswith(".dylib"):
        open(os.path.join(sys.argv[2], os.path.basename(n)), "wb").write(z.read(n))
PY
cp target/release/logit-lens "$app/Contents/MacOS/"
sed "s/VERSION/$version/g" packaging/macos/Info.plist > "$app/Contents/Info.plist"
cp assets/demo-model/{config.json,model.safetensors,tokenizer.json,README.md} "$app/Contents/Resources/demo-model/"
cp assets/prompts/* "$app/Contents/Resources/prompts/"
iconset="$out/logit-lens.iconset"; rm -rf "$iconset"; mkdir -p "$iconset"
for s in 16 32 128 256 512; do cp "packaging/icons/logit-lens-$s.png" "$iconset/icon_${s}x${s}.png"; done
iconutil -c icns "$iconset" -o "$app/Contents/Resources/logit-lens.icns"
codesign --force --deep --sign - "$app"   # ad-hoc; use a Developer ID and notarytool for distribution
hdiutil create -volname logit-lens -srcfolder "$app" -ov -format UDZO "$out/logit-lens-$version.dmg"
echo "built: $out/logit-lens-$version.dmg"
