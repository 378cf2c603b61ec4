#!/usr/bin/env bash
# Smoke-tests the Windows installer under Wine on Linux (run packaging/build-windows.sh first):
# in a scratch Wine prefix, installs silently (/S), runs the installed logit-lens.exe `info`
# (runtime found next to the executable; CPU provider; DirectML reported unavailable, with its
# reason) and `lens` on the plasma prompt, compares its JSON with the Linux build's (top-1 ids
# identical, KL within 1e-5), tries the GUI with --screenshot under Xvfb, and uninstalls (/S).
# Not part of `cargo test` (it takes minutes and needs Wine): run it by hand.
# Needs: wine64 (Debian's wine 8), gcc-mingw-w64-x86-64 (for the test-only ProcessPrng shim),
# Xvfb for the screenshot, the Linux release binary (cargo build --release -p lens_app).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
setup="$here/out/windows/logit-lens-$version-setup.exe"
[ -f "$setup" ] || { echo "error: $setup is missing: run packaging/build-windows.sh first" >&2; exit 1; }
# Debian's wine64 package keeps its binaries in /usr/lib/wine (the `wine` package adds /usr/bin/wine).
wine=$(command -v wine64 || command -v wine || echo /usr/lib/wine/wine64)
wineserver=$(command -v wineserver || echo /usr/lib/wine/wineserver)
[ -x "$wine" ] || { echo "error: wine is missing (apt-get install wine64)" >&2; exit 1; }
linux_bin="$root/target/release/logit-lens"
[ -x "$linux_bin" ] || (cd "$root" && cargo build --release -p lens_app)
work=$(mktemp -d /tmp/logit-lens-wine.XXXXXX)
export WINEPREFIX="$work/prefix" WINEDEBUG=-all WINEARCH=win64
trap '"$wineserver" -k >/dev/null 2>&1 || true' EXIT
echo "== Wine prefix $WINEPREFIX"
"$wine" wineboot --init >/dev/null 2>&1 || true
# Test-only: Wine 8 has no ProcessPrng (Windows 10+ does); a shim in this prefix only.
x86_64-w64-mingw32-gcc -shared -O2 -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
  "$here/windows/wine-shim/bcryptprimitives.c" "$here/windows/wine-shim/bcryptprimitives.def" -ladvapi32
export WINEDLLOVERRIDES="bcryptprimitives=n,b"

echo "== silent install"
"$wine" "$setup" /S '/D=C:\logit-lens'
inst="$WINEPREFIX/drive_c/logit-lens"
for f in logit-lens.exe onnxruntime.dll DirectML.dll demo-model/model.safetensors demo-model/tuned-lens/params.pt uninstall.exe logit-lens.ico; do
  [ -f "$inst/$f" ] || { echo "FAIL: $f was not installed" >&2; exit 1; }
done
reg=$("$wine" reg query 'HKCU\Software\Classes\Applications\logit-lens.exe\shell\open\command' 2>/dev/null | tr -d '\r')
echo "$reg" | grep -q 'logit-lens.exe' || { echo "FAIL: no Open-with command in the registry" >&2; exit 1; }
ls "$WINEPREFIX"/drive_c/users/*/AppData/Roaming/Microsoft/Windows/Start\ Menu/Programs/logit-lens.lnk >/dev/null \
  || { echo "FAIL: no Start-menu entry" >&2; exit 1; }

echo "== info"
"$wine" 'C:\logit-lens\logit-lens.exe' info --device auto > "$work/info.txt" 2>&1 || { cat "$work/info.txt"; echo "FAIL: info" >&2; exit 1; }
tr -d '\r' < "$work/info.txt" | tee "$work/info.unix.txt"
grep -q 'found by: next to the executable' "$work/info.unix.txt" || { echo "FAIL: the runtime was not found next to the executable" >&2; exit 1; }
grep -q '^execution provider: CPU' "$work/info.unix.txt" || { echo "FAIL: not on the CPU provider" >&2; exit 1; }
grep -q 'DirectML' "$work/info.unix.txt" || { echo "FAIL: DirectML is not reported" >&2; exit 1; }

echo "== lens, against the Linux build"
prompt="$root/assets/prompts/plasma.txt"
cp "$prompt" "$work/plasma.txt"
"$wine" 'C:\logit-lens\logit-lens.exe' lens --prompt-file 'Z:'"${work//\//\\}"'\plasma.txt' --top-k 5 --json 'Z:'"${work//\//\\}"'\win.json' 2>&1 | tr -d '\r'
"$linux_bin" lens --prompt-file "$prompt" --device cpu --top-k 5 --json "$work/linux.json"
python3 - "$work/win.json" "$work/linux.json" <<'PY'
import json, sys
w, l = (json.load(open(p)) for p in sys.argv[1:3])
assert w["metrics"]["top1_id"] == l["metrics"]["top1_id"], "top-1 differs"
kl = max(abs(a - b) for ra, rb in zip(w["metrics"]["kl_to_final"], l["metrics"]["kl_to_final"]) for a, b in zip(ra, rb))
assert kl <= 1e-5, f"KL differs by {kl}"
print(f"top-1 identical over {len(w['sites'])} sites x {len(w['tokens'])} tokens; largest KL difference {kl:.2e}")
print("windows run:", w["run"]["provider"], w["run"]["program"])
PY

echo "== GUI screenshot (Xvfb + Mesa through Wine's OpenGL)"
shot="$work/window.png"
if command -v Xvfb >/dev/null; then
  Xvfb :97 -screen 0 1600x1000x24 +extension GLX >/dev/null 2>&1 &
  xvfb=$!
  sleep 2
  if DISPLAY=:97 timeout 300 "$wine" 'C:\logit-lens\logit-lens.exe' --device cpu --window-size 1280x800 \
      --screenshot 'Z:'"${work//\//\\}"'\window.png' > "$work/gui.txt" 2>&1 && [ -s "$shot" ]; then
    cp "$shot" "$here/out/windows/wine-window.png"
    echo "screenshot: $here/out/windows/wine-window.png"
  else
    echo "the GUI did not start under Wine (see $work/gui.txt):"; tr -d '\r' < "$work/gui.txt" | tail -5
  fi
  kill "$xvfb" 2>/dev/null || true
fi

echo "== the user's folders"
users="$WINEPREFIX/drive_c/users"
ls -d "$users"/*/AppData/Local/logit-lens/bundles/demo-model-* >/dev/null || { echo "FAIL: no bundle cache in %LOCALAPPDATA%\\logit-lens\\bundles" >&2; exit 1; }
if [ -f "$shot" ]; then
  ls "$users"/*/AppData/Roaming/logit-lens/data/app.ron >/dev/null || { echo "FAIL: no settings in %APPDATA%\\logit-lens" >&2; exit 1; }
  echo "settings in %APPDATA%\\logit-lens\\data, bundle cache in %LOCALAPPDATA%\\logit-lens\\bundles"
fi

echo "== silent uninstall"
"$wine" 'C:\logit-lens\uninstall.exe' /S
sleep 3
[ ! -e "$inst" ] || { echo "FAIL: the uninstaller left $inst:" >&2; ls -R "$inst" >&2; exit 1; }
"$wine" reg query 'HKCU\Software\Classes\Applications\logit-lens.exe' >/dev/null 2>&1 && { echo "FAIL: the uninstaller left the Open-with key" >&2; exit 1; }
ls -d "$users"/*/AppData/Local/logit-lens/bundles >/dev/null || { echo "FAIL: the uninstaller removed the user's bundle cache" >&2; exit 1; }
echo "ok: installed, ran info and lens (equal to Linux), uninstalled (the user's folders kept)"
"$wineserver" -k >/dev/null 2>&1 || true
rm -rf "$work"
