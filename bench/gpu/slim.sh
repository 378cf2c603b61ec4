#!/usr/bin/env bash
# Here (not on the device): makes the working tree small enough to carry the GPU-check parts.
# The device tool sends every tracked file (the repository is ~64 MiB by itself: the demo
# model 38.5 MB, test fixtures 17 MB, GUI snapshots 4.5 MB), so for the device calls the big
# tracked files are emptied and restored afterwards, byte for byte and with their mtimes:
#
#   bench/gpu/slim.sh on all     # every tracked file > 64 KiB emptied (call 1: only parts travel)
#   bench/gpu/slim.sh on demo    # the same, but assets/demo-model's model, tokenizer, config and
#                                # heldout.txt kept (the last call: gpu_check.sh uses them)
#   bench/gpu/slim.sh off        # restore everything (ALWAYS run this after the device calls)
#   bench/gpu/slim.sh size [CARRY...]   # bytes that would travel now (+ the carried paths)
#   bench/gpu/slim.sh status
#
# Kept in both modes: anything under a src/ folder, assets/fonts/ (include_bytes! of the app),
# bench/gpu/. Untracked, not-ignored files > 64 KiB (outside bench/gpu/) are ignored for the
# while through a marked block in .git/info/exclude, removed again by `off`.
# Do not build or run tests while the tree is slim: fixtures and snapshots are empty files.
# Backups: $SLIM_BACKUP (default /work/gpu-slim-backup, outside the repository).
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
BACKUP=${SLIM_BACKUP:-/work/gpu-slim-backup}
STATE=$BACKUP/STATE
EXCL=.git/info/exclude
BEGIN='# >>> bench/gpu/slim.sh (temporary)'
END='# <<< bench/gpu/slim.sh'
LIMIT=65536

travel_size() {
  local tracked untracked carried=0 p
  tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END{print s+0}')
  untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END{print s+0}')
  for p in "$@"; do
    [ -e "$p" ] && carried=$((carried + $(du -sb "$p" | cut -f1)))
  done
  echo "tracked $tracked + untracked $untracked + carried $carried = $((tracked + untracked + carried)) bytes ($(awk -v b=$((tracked + untracked + carried)) 'BEGIN{printf "%.2f", b/1048576}') MiB of 64)"
}

keep() { # keep MODE PATH -> 0 when PATH stays whole
  case "$2" in
    */src/* | src/* | assets/fonts/* | bench/gpu/*) return 0 ;;
  esac
  if [ "$1" = demo ]; then
    case "$2" in
      assets/demo-model/model.safetensors | assets/demo-model/tokenizer.json | assets/demo-model/config.json | assets/demo-model/heldout.txt) return 0 ;;
    esac
  fi
  return 1
}

restore() {
  [ -f "$STATE" ] || { echo "slim: nothing to restore"; return 0; }
  local n=0 f
  while IFS= read -r -d '' f; do
    cp -p "$BACKUP/files/$f" "$f"
    n=$((n + 1))
  done <"$BACKUP/list"
  if [ -f "$EXCL" ]; then
    awk -v b="$BEGIN" -v e="$END" '$0 == b {skip = 1; next} $0 == e {skip = 0; next} !skip' "$EXCL" >"$EXCL.tmp" && mv "$EXCL.tmp" "$EXCL"
  fi
  # Check: every restored file has its backed-up sha256.
  local bad=0
  while read -r sum f; do
    [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ] || { echo "slim: RESTORE MISMATCH $f"; bad=1; }
  done <"$BACKUP/sums"
  [ $bad = 0 ] || { echo "slim: backups left in $BACKUP"; exit 1; }
  rm -rf "$BACKUP"
  echo "slim: restored $n files"
}

case "${1:-}" in
  on)
    mode=${2:?on all|demo}
    [ "$mode" = all ] || [ "$mode" = demo ] || { echo "mode: all or demo" >&2; exit 2; }
    if [ -f "$STATE" ]; then
      [ "$(cat "$STATE")" = "$mode" ] && { echo "slim: already on ($mode)"; travel_size; exit 0; }
      restore
    fi
    mkdir -p "$BACKUP/files"
    : >"$BACKUP/list"
    : >"$BACKUP/sums"
    n=0
    saved=0
    while IFS= read -r -d '' f; do
      [ -f "$f" ] && [ ! -L "$f" ] || continue
      s=$(stat -c %s "$f")
      [ "$s" -gt $LIMIT ] || continue
      keep "$mode" "$f" && continue
      cp -p --parents "$f" "$BACKUP/files/"
      printf '%s\0' "$f" >>"$BACKUP/list"
      echo "$(sha256sum "$f" | cut -d' ' -f1) $f" >>"$BACKUP/sums"
      n=$((n + 1))
      saved=$((saved + s))
    done < <(git ls-files -z)
    echo "$mode" >"$STATE"
    # Only now empty them (every backup is written).
    while IFS= read -r -d '' f; do : >"$f"; done <"$BACKUP/list"
    {
      echo "$BEGIN"
      git ls-files -z --others --exclude-standard | while IFS= read -r -d '' f; do
        case "$f" in bench/gpu/*) continue ;; esac
        [ "$(stat -c %s "$f")" -gt $LIMIT ] && echo "/$f"
      done
      echo "$END"
    } >>"$EXCL"
    echo "slim: on ($mode): emptied $n tracked files ($saved bytes); backups in $BACKUP"
    travel_size
    ;;
  off) restore ;;
  size) shift; travel_size "$@" ;;
  status)
    if [ -f "$STATE" ]; then echo "slim: on ($(cat "$STATE")), $(tr -cd '\0' <"$BACKUP/list" | wc -c) files emptied"; else echo "slim: off"; fi
    travel_size
    ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
