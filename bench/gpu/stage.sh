#!/usr/bin/env bash
# Device side, run from the repository root in EVERY device call of the GPU check (bench/gpu/PLAN.md):
#   bash bench/gpu/stage.sh [--prep] [-- GPU_CHECK_ARGS...]
# 1. copies the parts this call carried (.gpu/p*/, see bench/gpu/pack.sh) into $GPU_STAGE
#    (default /tmp/gpu-stage: same machine while it stays warm; the carried folders are replaced
#    by every call), checking each against its MANIFEST's sha256;
# 2. assembles every artifact whose parts are all there (xz -d, or Python's lzma), checks the
#    result's sha256 and installs it: $GPU_STAGE/ort/{libonnxruntime.so.1.31.1,
#    libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so,
#    build_and_package_info.py}, $GPU_STAGE/logit-lens and $GPU_STAGE/gpt2-tokenizer.json;
# 3. with --prep, once the binary is there: starts `gpu_check.sh --prep-only` in its own process
#    session (setsid), so that the checkpoints and bundles are made while the next call is on its
#    way; it writes $GPU_WORK/prep.done (or prep.failed) and logs to $GPU_WORK/prep.log.
# Prints what it has and what is still missing. Exit status 0 even when parts are missing.
set -uo pipefail
STAGE=${GPU_STAGE:-/tmp/gpu-stage}
WORK=${GPU_WORK:-/tmp/gpu-work}
mkdir -p "$STAGE/parts" "$STAGE/ort" "$STAGE/sha" "$WORK"
prep=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prep) prep=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "stage.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# 1. Copy the carried parts and the manifest.
for d in .gpu/p*/; do
  [ -d "$d" ] || continue
  for f in "$d"*; do
    [ -f "$f" ] || continue
    b=$(basename "$f")
    if [ ! -f "$STAGE/parts/$b" ] || ! cmp -s "$f" "$STAGE/parts/$b"; then
      cp "$f" "$STAGE/parts/$b.tmp" && mv "$STAGE/parts/$b.tmp" "$STAGE/parts/$b"
    fi
  done
done
man="$STAGE/parts/MANIFEST"
if [ ! -f "$man" ]; then
  echo "stage: no MANIFEST yet (nothing carried under .gpu/p*/ in this or an earlier call on this machine)"
  exit 0
fi

unxz_to() { # unxz_to OUT FILES... : the xz stream of the concatenated files, decompressed into OUT
  local out=$1; shift
  if command -v xz >/dev/null 2>&1; then
    cat "$@" | xz -dc >"$out"
  else
    cat "$@" | python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.LZMAFile(sys.stdin.buffer), sys.stdout.buffer, 1 << 20)' >"$out"
  fi
}

# MANIFEST lines: part NAME SHA256 BYTES   |   artifact DEST SHA256 MODE PART[,PART...]
missing=0
declare -A partok
while read -r kind a b c d; do
  [ "$kind" = part ] || continue
  if [ -f "$STAGE/parts/$a" ]; then
    if [ -n "${partok[$a]:-}" ] || [ "$(sha256sum "$STAGE/parts/$a" | cut -d' ' -f1)" = "$b" ]; then
      partok[$a]=1
    else
      echo "stage: part $a is corrupt (sha256 differs); removed"
      rm -f "$STAGE/parts/$a"
    fi
  fi
done <"$man"
while read -r kind dest sha mode parts; do
  [ "$kind" = artifact ] || continue
  target="$STAGE/$dest"
  mark="$STAGE/sha/$(echo "$dest" | tr / _)"
  if [ -f "$target" ] && [ -f "$mark" ] && [ "$(cat "$mark")" = "$sha" ]; then
    echo "stage: have $dest"
    continue
  fi
  files=()
  ok=1
  IFS=, read -r -a plist <<<"$parts"
  for p in "${plist[@]}"; do
    if [ -n "${partok[$p]:-}" ]; then files+=("$STAGE/parts/$p"); else ok=0; fi
  done
  if [ $ok = 0 ]; then
    echo "stage: MISSING parts of $dest ($parts)"
    missing=1
    continue
  fi
  mkdir -p "$(dirname "$target")"
  if unxz_to "$target.tmp" "${files[@]}" && [ "$(sha256sum "$target.tmp" | cut -d' ' -f1)" = "$sha" ]; then
    chmod "$mode" "$target.tmp"
    mv "$target.tmp" "$target"
    echo "$sha" >"$mark"
    echo "stage: assembled $dest ($(stat -c %s "$target") bytes)"
  else
    echo "stage: assembling $dest FAILED"
    rm -f "$target.tmp"
    missing=1
  fi
done <"$man"
[ $missing = 0 ] && echo "stage: complete" || echo "stage: incomplete (see MISSING above)"

# 3. Background preparation (checkpoints, conversions) once the binary is there.
if [ $prep = 1 ]; then
  if [ ! -x "$STAGE/logit-lens" ]; then
    echo "stage: --prep: no binary yet, nothing started"
  elif [ -f "$WORK/prep.pid" ] && kill -0 "$(cat "$WORK/prep.pid")" 2>/dev/null; then
    echo "stage: --prep: already running (pid $(cat "$WORK/prep.pid"))"
  elif [ -f "$WORK/prep.done" ]; then
    echo "stage: --prep: already done"
  else
    # From a copy of the scripts: the next call re-syncs the tree under a running bash.
    mkdir -p "$STAGE/scripts"
    cp bench/gpu/*.sh bench/gpu/*.py "$STAGE/scripts/"
    setsid nohup bash "$STAGE/scripts/gpu_check.sh" --prep-only "${extra[@]}" >"$WORK/prep.log" 2>&1 </dev/null &
    echo $! >"$WORK/prep.pid"
    echo "stage: --prep: started in the background (pid $!, log $WORK/prep.log)"
  fi
fi
exit 0
