#!/usr/bin/env bash
# Builds the Linux packages from a fresh clone: a .deb and a portable .tar.gz, each holding the
# release binary, the ONNX Runtime library beside it (lib/logit-lens/), the demo model
# (share/logit-lens/demo-model/), the .desktop entry (MIME: text/plain prompts) and the icons.
# Output: packaging/out/. Needs: cargo, python3 + pip (to fetch the official onnxruntime wheel),
# dpkg-deb. The installed app finds its runtime and demo model relative to its own location.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ort_version=$(sed -n 's/^pub const ORT_WHEEL_VERSION: &str = "\(.*\)";/\1/p' model/src/run/runtime.rs)
arch=amd64
out="$here/out"
stage="$out/stage"
rm -rf "$stage" && mkdir -p "$stage"

cargo build --release -p lens_app

# ONNX Runtime from the official wheel on PyPI (CPU build).
wheel_dir="$out/wheel"
if ! ls "$wheel_dir"/onnxruntime-"$ort_version"-*.whl >/dev/null 2>&1; then
  mkdir -p "$wheel_dir"
  python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$wheel_dir" "onnxruntime==$ort_version"
fi

demo="$root/assets/demo-model"
[ -f "$demo/model.safetensors" ] || { echo "error: $demo/model.safetensors is missing" >&2; exit 1; }

# One tree, used for both packages: usr/bin, usr/lib/logit-lens, usr/share/...
tree="$stage/usr"
install -Dm755 target/release/logit-lens "$tree/bin/logit-lens"
mkdir -p "$tree/lib/logit-lens"
python3 - "$wheel_dir" "$tree/lib/logit-lens" <<'PY'
import glob, os, sys, zipfile
whl = sorted(glob.glob(os.path.join(sys.argv[1], "onnxruntime-*.whl")))[-1]
z = zipfile.ZipFile(whl)
for n in z.namelist():
    b = os.path.basename(n)
    if "/capi/" in n and b.startswith("libonnxruntime"):
        with open(os.path.join(sys.argv[2], b), "wb") as f:
            f.write(z.read(n))
for n in z.namelist():
    if n.endswith("LICENSE") or n.endswith("ThirdPartyNotices.txt"):
        with open(os.path.join(sys.argv[2], "onnxruntime-" + os.path.basename(n)), "wb") as f:
            f.write(z.read(n))
PY
mkdir -p "$tree/share/logit-lens/demo-model" "$tree/share/logit-lens/prompts"
for f in config.json model.safetensors tokenizer.json README.md; do
  [ -f "$demo/$f" ] && install -m644 "$demo/$f" "$tree/share/logit-lens/demo-model/$f"
done
cp -r "$root/assets/prompts/." "$tree/share/logit-lens/prompts/"
install -Dm644 "$root/assets/nnsight/logit_lens_nnsight.py" "$tree/share/logit-lens/nnsight/logit_lens_nnsight.py"
install -Dm644 "$here/logit-lens.desktop" "$tree/share/applications/logit-lens.desktop"
install -Dm644 "$here/icons/logit-lens.svg" "$tree/share/icons/hicolor/scalable/apps/logit-lens.svg"
for s in 16 24 32 48 64 128 256 512; do
  install -Dm644 "$here/icons/logit-lens-$s.png" "$tree/share/icons/hicolor/${s}x${s}/apps/logit-lens.png"
done
install -Dm644 "$root/README.md" "$tree/share/doc/logit-lens/README.md"

# .deb (plain dpkg-deb: no extra tool needed). GL/EGL/X/xkbcommon are loaded at run time by
# winit/glutin and not seen by a dependency scanner, so they are listed by hand.
size_kb=$(du -sk "$stage/usr" | cut -f1)
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: logit-lens
Version: $version
Architecture: $arch
Maintainer: logit-lens developers <noreply@example.invalid>
Installed-Size: $size_kb
Depends: libc6 (>= 2.31), libgcc-s1, libstdc++6, libgl1, libegl1, libgl1-mesa-dri, libx11-6, libxcursor1, libxrandr2, libxi6, libxkbcommon0, libxkbcommon-x11-0, libwayland-client0, libwayland-egl1
Recommends: zenity | xdg-desktop-portal
Section: science
Priority: optional
Homepage: https://example.invalid/logit-lens
Description: logit-lens workbench for GPT-2 language models
 A desktop app and CLI that applies the logit lens to every layer and
 sub-block of GPT-2 models run through ONNX Runtime, with synchronized
 logit, rank, KL and entropy views, direct logit attribution, and a
 bundled demo model.
CONTROL
deb="$out/logit-lens_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group "$stage" "$deb" >/dev/null
rm -rf "$stage/DEBIAN"

# Portable .tar.gz: the same relative layout (bin/, lib/logit-lens/, share/logit-lens/).
name="logit-lens-${version}-linux-x86_64"
rm -rf "$out/$name" && cp -r "$tree" "$out/$name"
tar -C "$out" -czf "$out/$name.tar.gz" "$name"
rm -rf "$out/$name"
echo "built: $deb"
echo "built: $out/$name.tar.gz"
