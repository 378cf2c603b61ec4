#!/usr/bin/env bash
# Tests the .deb as a user would get it: unpack it into a scratch root (dpkg -x), run the unpacked
# binary's `info` and `lens` with an EMPTY environment (so nothing but its own location can tell it
# where the runtime and the demo model are), then start the .desktop Exec line under Xvfb with
# --screenshot and check the picture. Run packaging/build-linux.sh first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deb=$(ls "$here"/out/logit-lens_*_amd64.deb | tail -1)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; [ -n "${xvfb_pid:-}" ] && kill "$xvfb_pid" 2>/dev/null || true' EXIT
dpkg -x "$deb" "$scratch/root"
bin="$scratch/root/usr/bin/logit-lens"

echo "== info (empty environment)"
env -i "$bin" info | tee "$scratch/info.txt"
grep -q "found by: next to the executable" "$scratch/info.txt"
grep -q "execution provider: CPU" "$scratch/info.txt"

echo "== lens (empty environment)"
prompt="$scratch/root/usr/share/logit-lens/prompts/plasma.txt"
env -i "$bin" lens --prompt-file "$prompt" --json "$scratch/report.json"
python3 - "$scratch/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["schema"] == "logit-lens/report@1", r["schema"]
assert len(r["tokens"]) > 10 and len(r["sites"]) >= 2
print("report ok:", len(r["tokens"]), "tokens x", len(r["sites"]), "sites")
PY

echo "== desktop entry under Xvfb"
exec_line=$(sed -n 's/^Exec=//p' "$scratch/root/usr/share/applications/logit-lens.desktop")
cmd=${exec_line//%f/$prompt}
cmd=${cmd/logit-lens/$bin}
display=:$((90 + RANDOM % 9))
Xvfb "$display" -screen 0 1280x1024x24 +extension GLX >/dev/null 2>&1 &
xvfb_pid=$!
sleep 1
mkdir -p -m 700 "$scratch/xdg"
shot="$here/out/desktop-screenshot.png"
env -i DISPLAY="$display" XDG_RUNTIME_DIR="$scratch/xdg" HOME="$scratch/home" timeout 120 $cmd --screenshot "$shot"
python3 - "$shot" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
assert w >= 400 and h >= 300, (w, h)
print("screenshot ok:", w, "x", h, "->", sys.argv[1])
PY
echo "all package checks passed"
