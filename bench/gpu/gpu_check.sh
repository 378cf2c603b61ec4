#!/usr/bin/env bash
# The GPU check of issue 30: ONNX Runtime 1.31.1's CUDA provider (CUDA 13) running logit-lens on
# an H100, against the CPU. Run from the repository root on the device, no network needed, after
# bench/gpu/stage.sh has assembled $GPU_STAGE (bench/gpu/PLAN.md):
#
#   bash bench/gpu/gpu_check.sh [--weights int4|int8]... [--budget SECONDS]
#   bash bench/gpu/gpu_check.sh --prep-only [--weights ...]   # checkpoints + bundles only (stage.sh --prep)
#   bash bench/gpu/gpu_check.sh --cpu-only --small            # here, without a GPU: CPU graph stands in for CUDA
#
# Steps, most important first; once --budget seconds (default 360) have passed, the optional ones
# left are skipped and said so:
#   1. the CUDA 13 libraries of the device's Python (site-packages/nvidia/cu13/lib, nvidia/cudnn/lib)
#      on LD_LIBRARY_PATH; which sonames the provider needs and where they are; a load test of every
#      fat binary of the (pruned) provider through the driver (bench/gpu/fatbin.py check);
#   2. `logit-lens info --device cuda`: first as logit-lens is (its own CUDA preload, no
#      LD_LIBRARY_PATH), then with LD_LIBRARY_PATH (used for everything after);
#   3. random checkpoints made here (bench/gpu/make_ckpt.py: torch on the GPU, else numpy) of the
#      GPT-2-small, Llama-3.2-1B and GPT-2-XL shapes, converted with `logit-lens convert`;
#   4. `lens` on CUDA (lens graph; for the demo and GPT-2 small also CUDA forward + CPU kernel)
#      against `lens --device cpu --lens-path kernel` on the same bundle and prompt,
#      NVIDIA_TF32_OVERRIDE=0: the demo model (256 tokens), GPT-2 small, Llama-3.2-1B (~280
#      tokens; Llama also with TF32 as ORT defaults, for information); bench/gpu/compare.py: top-1
#      identical except near-ties, max |ΔKL| <= 1e-3;
#   5. timings at 1024 tokens, Llama-3.2-1B and GPT-2-XL: cold `lens` (one process each) on the CPU
#      kernel and on CUDA (graph, TF32 off), their reports compared too (GPT-2-XL's check), and
#      `bench --device cuda --lens-path graph` (best of 2, warm, TF32 as ONNX Runtime defaults);
#   6. with --weights W (and a binary whose `convert --help` knows --weights): Llama-3.2-1B and
#      GPT-2 small converted with --weights W, CUDA against CPU and against the f32 CPU report,
#      and the 1024-token CUDA timing.
# Ends with ONE table (also $OUT/summary.md); $OUT gets at most 7 files: summary.md, log.txt,
# env.txt, compare.jsonl, timing.jsonl, prep.log, reports.tar.xz.
set -uo pipefail
T0=$(date +%s)
ROOT=$(pwd)
STAGE=${GPU_STAGE:-/tmp/gpu-stage}
WORK=${GPU_WORK:-/tmp/gpu-work}
OUTD=${OUT:-$WORK/out}
BUDGET=360
CPU_ONLY=0
SMALL=0
PREP_ONLY=0
WEIGHTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-only) CPU_ONLY=1 ;;
    --small) SMALL=1 ;;
    --prep-only) PREP_ONLY=1 ;;
    --weights) WEIGHTS+=("$2"); shift ;;
    --weights=*) WEIGHTS+=("${1#--weights=}") ;;
    --budget) BUDGET=$2; shift ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
HERE=$(cd "$(dirname "$0")" && pwd) # bench/gpu, or $GPU_STAGE/scripts (stage.sh --prep runs a copy)
[ -f assets/demo-model/heldout.txt ] || { echo "run from the repository root" >&2; exit 2; }
mkdir -p "$WORK/hf" "$WORK/b" "$WORK/r" "$OUTD"
RES=$WORK/r
LOG=$OUTD/log.txt
ENVF=$OUTD/env.txt
[ $PREP_ONLY = 1 ] && LOG=$WORK/prep-steps.log
: >"$LOG"
PY=${PYTHON:-python3}

say() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - T0)); }
have_time() { [ $(($(elapsed) + $1)) -le "$BUDGET" ]; }
tmo() { # a command's timeout: at most 300 s, and none runs much past the budget (>= 30 s)
  local r=$((BUDGET + 150 - $(elapsed)))
  [ $r -gt 300 ] && r=300
  [ $r -lt 30 ] && r=30
  echo $r
}
write_table() { # the table so far into $OUT/summary.md (also after each section: a killed run leaves one)
  cp "$RES/compare.jsonl" "$RES/timing.jsonl" "$OUTD/" 2>/dev/null
  [ -f "$WORK/prep.log" ] && cp "$WORK/prep.log" "$OUTD/prep.log"
  $PY "$HERE/table.py" "$RES" "$ENVF" "$(elapsed)" >"$OUTD/summary.md" 2>&1
}
status() { local d=${3:0:300}; printf '%s\t%s\t%s\n' "$1" "$2" "$d" >>"$RES/status.tsv"; say "STATUS $1: $2 $3"; }

# --- binary and runtime -------------------------------------------------------------------------
BIN=${LOGIT_LENS_BIN:-}
if [ -z "$BIN" ]; then
  if [ -x "$STAGE/logit-lens" ]; then BIN=$STAGE/logit-lens; else BIN=$ROOT/target/release/logit-lens; fi
fi
[ -x "$BIN" ] || { say "no logit-lens binary ($BIN): stage.sh has not assembled it"; exit 1; }
ORT=${ORT_LIB:-$STAGE/ort/libonnxruntime.so.1.31.1}
ORT_OPT=()
if [ -f "$ORT" ]; then
  ORT_OPT=(--ort-lib "$ORT")
elif [ $CPU_ONLY = 0 ] && [ $PREP_ONLY = 0 ]; then
  say "MISSING $ORT: the ONNX Runtime parts were not all staged (stage.sh output); only the CPU half runs"
  status runtime fail "libonnxruntime.so.1.31.1 not staged"
  CPU_ONLY=1
fi
# Global options (--ort-lib, --weights) go AFTER the subcommand: before it, clap takes them for
# the desktop app's command line (args_conflicts_with_subcommands) and the subcommand for its
# PROMPT_FILE.
HAS_WEIGHTS=0
if "$BIN" convert --help 2>/dev/null | grep -q -- '--weights'; then HAS_WEIGHTS=1; fi
F32=()
[ $HAS_WEIGHTS = 1 ] && F32=(--weights f32)

# --- shapes and prompts -------------------------------------------------------------------------
if [ $SMALL = 1 ]; then
  S_GPT2=gpt2-tiny S_LLAMA=llama-tiny S_XL=gpt2 CMP_BYTES=600 TOK_TIME=128
else
  S_GPT2=gpt2 S_LLAMA=llama-3.2-1b S_XL=gpt2-xl CMP_BYTES=1200 TOK_TIME=1024
fi
HELD=assets/demo-model/heldout.txt
# The GPT-2 tokenizer (the demo model's has the same vocabulary and merges); staged, since the
# first call's tree has the demo model's files emptied (slim.sh on all).
TOKJ=$STAGE/gpt2-tokenizer.json
[ -s "$TOKJ" ] || TOKJ=$ROOT/assets/demo-model/tokenizer.json
[ -s "$TOKJ" ] || TOKJ=/work/shared/gpt2-tokenizer/tokenizer.json

# CUDA stands for the lens graph on CUDA; in --cpu-only the CPU's lens graph stands in for it.
if [ $CPU_ONLY = 1 ]; then GDEV=cpu; GNAME="CPU graph"; else GDEV=cuda; GNAME=CUDA; fi

# --- preparation: checkpoints, bundles, prompts. Each step runs once (marker $WORK/done.NAME) under
# --- a lock: stage.sh --prep runs them in the background, and a step the foreground needs first
# --- is done by whichever gets the lock first; the other then finds it done.
step() { # step NAME CMD...
  local name=$1; shift
  (
    flock 9
    if [ -f "$WORK/done.$name" ]; then exit 0; fi
    t=$(date +%s)
    if "$@" >>"$WORK/step.$name.log" 2>&1; then
      touch "$WORK/done.$name"
      echo "[prep] $name done in $(($(date +%s) - t)) s: $(tail -1 "$WORK/step.$name.log")"
    else
      echo "[prep] $name FAILED, log $WORK/step.$name.log:"
      tail -5 "$WORK/step.$name.log"
      exit 1
    fi
  ) 9>"$WORK/lock.$name" 2>&1 | tee -a "$LOG"
  [ -f "$WORK/done.$name" ]
}
mk_ckpt() { # mk_ckpt SHAPE: torch first, numpy if that fails
  rm -rf "$WORK/hf/$1"
  $PY "$HERE/make_ckpt.py" "$1" "$WORK/hf/$1" "$TOKJ" || {
    rm -rf "$WORK/hf/$1"
    MAKE_CKPT_BACKEND=numpy $PY "$HERE/make_ckpt.py" "$1" "$WORK/hf/$1" "$TOKJ"
  }
}
ll_convert() { # ll_convert SRC DEST [convert options]
  local src=$1 dest=$2; shift 2
  rm -rf "$dest"
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "convert: %e s, peak RSS %M KB" "$BIN" convert "$src" "$dest" "$@"
  else
    local t=$(date +%s)
    "$BIN" convert "$src" "$dest" "$@" && echo "convert: $(($(date +%s) - t)) s"
  fi
}
mk_prompts() {
  head -c "$CMP_BYTES" "$HELD" >"$WORK/prompt_cmp.txt"
  # About TOK_TIME tokens for the timing prompt, cut with the tokenizers package where there is
  # one, else by bytes (GPT-2's n_ctx is 1024 anyway, and --truncate left keeps the last 1024).
  $PY - "$TOKJ" "$HELD" "$TOK_TIME" "$WORK/prompt_time.txt" <<'PYEOF' || { text=$(cat "$HELD" "$HELD" "$HELD"); printf '%s' "${text:0:$((TOK_TIME * 5))}" >"$WORK/prompt_time.txt"; }
import sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding="utf-8").read()
n = int(sys.argv[3])
while len(tok.encode(text).ids) < n:
    text += "\n" + text
out = tok.decode(tok.encode(text).ids[:n])
open(sys.argv[4], "w", encoding="utf-8").write(out)
print("timing prompt:", len(tok.encode(out).ids), "tokens")
PYEOF
  echo "prompts: $(wc -c <"$WORK/prompt_cmp.txt") and $(wc -c <"$WORK/prompt_time.txt") bytes"
}
prep_one() { # prep_one NAME: prompts, demo, ckpt-SHAPE, bundle-SHAPE, bundle-SHAPE-W (W int4/int8)
  local n=$1 s w
  case "$n" in
    prompts) step prompts mk_prompts ;;
    demo)
      demo_hf || { echo "no demo model weights (neither in the tree nor staged)"; return 1; }
      step demo ll_convert "$DEMO_HF" "$WORK/b/demo" "${F32[@]}" ;;
    ckpt-*) step "$n" mk_ckpt "${n#ckpt-}" ;;
    bundle-*-int4 | bundle-*-int8)
      w=${n##*-}; s=${n#bundle-}; s=${s%-"$w"}
      prep_one "ckpt-$s" && step "$n" ll_convert "$WORK/hf/$s" "$WORK/b/$s-$w" --weights "$w" ;;
    bundle-*)
      s=${n#bundle-}
      prep_one "ckpt-$s" && step "$n" ll_convert "$WORK/hf/$s" "$WORK/b/$s" "${F32[@]}" ;;
    *) echo "prep_one: unknown step $n"; return 1 ;;
  esac
}
demo_hf() { # DEMO_HF: the demo model's folder; its weights staged when the tree's copy is emptied (slim)
  if [ -s assets/demo-model/model.safetensors ]; then
    DEMO_HF=$ROOT/assets/demo-model
  elif [ -s "$STAGE/demo-model.safetensors" ]; then
    DEMO_HF=$WORK/demo-hf
    mkdir -p "$DEMO_HF"
    cp assets/demo-model/config.json "$DEMO_HF/"
    cp "$STAGE/gpt2-tokenizer.json" "$DEMO_HF/tokenizer.json"
    cp "$STAGE/demo-model.safetensors" "$DEMO_HF/model.safetensors"
  else
    return 1
  fi
}
prep_all() {
  local ok=0 s w
  prep_one prompts || ok=1
  demo_hf && { prep_one demo || ok=1; }
  for s in $S_GPT2 $S_LLAMA $S_XL; do prep_one "bundle-$s" || ok=1; done
  if [ $HAS_WEIGHTS = 1 ]; then
    for w in "${WEIGHTS[@]}"; do
      for s in $S_LLAMA $S_GPT2; do prep_one "bundle-$s-$w" || ok=1; done
    done
  fi
  return $ok
}

if [ $PREP_ONLY = 1 ]; then
  say "prep-only: binary $BIN, weights ${WEIGHTS[*]:-none} (binary knows --weights: $HAS_WEIGHTS)"
  if prep_all; then touch "$WORK/prep.done"; say "prep done"; else touch "$WORK/prep.failed"; say "prep FAILED"; fi
  rm -f "$WORK/prep.pid"
  exit 0
fi

# --- 0. the machine -----------------------------------------------------------------------------
: >"$RES/status.tsv"
: >"$RES/compare.jsonl"
: >"$RES/timing.jsonl"
{
  echo "== $(date -u) on $(hostname); elapsed budget $BUDGET s; cpu-only $CPU_ONLY small $SMALL weights ${WEIGHTS[*]:-none}"
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv 2>&1 | head -3
  echo "CPUs $(nproc); $(free -g | awk '/Mem:/{print "memory " $2 " GiB"}'); python $($PY -c 'import sys; print(sys.version.split()[0])')"
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1
  echo "binary $BIN ($(stat -c %s "$BIN") bytes), ORT ${ORT_OPT[*]:-auto}, convert --weights: $HAS_WEIGHTS"
} >>"$ENVF" 2>&1
cat "$ENVF" | tee -a "$LOG"

# --- 1. CUDA 13 libraries ---------------------------------------------------------------------
NEED="libcublasLt.so.13 libcublas.so.13 libcurand.so.10 libcudart.so.13 libcufft.so.12 libnvrtc.so.13 libcudnn.so.9 libcuda.so.1"
if [ $CPU_ONLY = 0 ]; then
  LDP=""
  for d in $($PY -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null); do
    for sub in cu13/lib cudnn/lib cublas/lib cuda_runtime/lib curand/lib cufft/lib cuda_nvrtc/lib nvjitlink/lib; do
      [ -d "$d/$sub" ] && LDP="$LDP${LDP:+:}$d/$sub"
    done
  done
  {
    echo "== python nvidia library folders: ${LDP:-none}"
    echo "== provider NEEDED: $(readelf -d "$STAGE/ort/libonnxruntime_providers_cuda.so" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
    for so in $NEED; do
      hit=""
      IFS=: read -r -a dirs <<<"$LDP"
      for d in "${dirs[@]}"; do [ -e "$d/$so" ] && { hit="$d/$so"; break; }; done
      [ -z "$hit" ] && hit=$(ldconfig -p 2>/dev/null | awk -v s="$so" '$1==s{print $NF; exit}')
      echo "  $so: ${hit:-MISSING}"
    done
    echo "== ldd of the provider with these folders on LD_LIBRARY_PATH:"
    LD_LIBRARY_PATH="$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$STAGE/ort/libonnxruntime_providers_cuda.so" 2>&1 | grep -E 'cu|nv|not found'
  } >>"$ENVF" 2>&1
  sed -n '/== python nvidia/,$p' "$ENVF" | tee -a "$LOG"
  missing=$(grep -c 'MISSING' "$ENVF")
  [ "$missing" = 0 ] && status cuda-libs ok "all of $NEED found" || status cuda-libs fail "$missing missing (env.txt)"
  if have_time 60; then
    say "fat-binary load test (driver, eager):"
    if CUDA_MODULE_LOADING=EAGER timeout 120 $PY "$HERE/fatbin.py" check "$STAGE/ort/libonnxruntime_providers_cuda.so" >"$RES/fatbin.txt" 2>&1; then
      status fatbin ok "$(tail -1 "$RES/fatbin.txt")"
    else
      status fatbin fail "$(tail -1 "$RES/fatbin.txt")"
    fi
    cat "$RES/fatbin.txt" >>"$ENVF"
  fi
fi

# --- 2. info --device cuda ------------------------------------------------------------------------
prep_one demo || status demo-convert fail "see log"
INFO_MODEL=$WORK/b/demo
if [ ! -f "$WORK/done.demo" ]; then prep_one "bundle-$S_GPT2"; INFO_MODEL=$WORK/b/$S_GPT2; fi
if [ $CPU_ONLY = 0 ]; then
  say "info --device cuda, logit-lens's own CUDA preload only (LD_LIBRARY_PATH unchanged):"
  timeout "$(tmo)" "$BIN" info "${ORT_OPT[@]}" --device cuda --model "$INFO_MODEL" >"$RES/info-own.txt" 2>&1
  rc=$?
  cat "$RES/info-own.txt" | tee -a "$LOG" >>"$ENVF"
  # Fails (needs libcublasLt.so.13) with a binary whose cuda_libs.rs does not look in nvidia/cu13/lib.
  [ $rc = 0 ] && status "info-own-preload" ok "$(grep -m1 'execution provider' "$RES/info-own.txt")" ||
    status "info-own-preload (no LD_LIBRARY_PATH)" fail "rc $rc: $(grep -m1 -i 'error' "$RES/info-own.txt" || tail -1 "$RES/info-own.txt")"
  export LD_LIBRARY_PATH="$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "info --device cuda with LD_LIBRARY_PATH=$LD_LIBRARY_PATH:"
  timeout "$(tmo)" "$BIN" info "${ORT_OPT[@]}" --device cuda --model "$INFO_MODEL" >"$RES/info.txt" 2>&1
  rc=$?
  cat "$RES/info.txt" | tee -a "$LOG" >>"$ENVF"
  if [ $rc = 0 ] && grep -q 'execution provider: CUDA' "$RES/info.txt"; then
    status info-cuda ok "$(grep -m1 '^ONNX Runtime' "$RES/info.txt" | cut -c1-80); $(grep -m1 'lens:' "$RES/info.txt")"
  else
    status info-cuda fail "rc $rc: $(grep -m1 -i 'error' "$RES/info.txt" || tail -1 "$RES/info.txt")"
    say "CUDA is not usable: the CPU half only"
    GDEV=cpu GNAME="CPU graph (CUDA failed)"
  fi
fi

# --- prep in the background (if stage.sh --prep did not start it in an earlier call) -------------
if ! { [ -f "$WORK/prep.pid" ] && kill -0 "$(cat "$WORK/prep.pid")" 2>/dev/null; }; then
  if [ ! -f "$WORK/prep.done" ]; then
    wargs=()
    for w in "${WEIGHTS[@]}"; do wargs+=(--weights "$w"); done
    [ $SMALL = 1 ] && wargs+=(--small)
    bash "$HERE/gpu_check.sh" --prep-only "${wargs[@]}" >"$WORK/prep.log" 2>&1 </dev/null &
    echo $! >"$WORK/prep.pid"
    say "preparation started here in the background (pid $!)"
  fi
else
  say "preparation already running (pid $(cat "$WORK/prep.pid"), started by stage.sh --prep)"
fi
# --- lens runs ----------------------------------------------------------------------------------
tf32_env() { # the env(1) arguments for TF32=off (NVIDIA_TF32_OVERRIDE=0, the default here) or TF32=default
  if [ "${TF32:-off}" = default ]; then echo "-u NVIDIA_TF32_OVERRIDE"; else echo "NVIDIA_TF32_OVERRIDE=0"; fi
}
lens_run() { # [TF32=default] lens_run OUTNAME BUNDLE PROMPT DEVICE PATH: JSON in $RES/OUTNAME.json
  local name=$1 bundle=$2 prompt=$3 dev=$4 path=$5
  local t=$(date +%s%N)
  # shellcheck disable=SC2046
  timeout "$(tmo)" env $(tf32_env) "$BIN" lens "${ORT_OPT[@]}" --model "$bundle" --prompt-file "$prompt" --truncate left \
    --device "$dev" --lens-path "$path" --json "$RES/$name.json" >"$RES/$name.log" 2>&1
  local rc=$?
  local wall=$((($(date +%s%N) - t) / 1000000))
  if [ $rc != 0 ]; then
    say "lens $name FAILED (rc $rc): $(tail -3 "$RES/$name.log" | tr '\n' ' ' | cut -c1-400)"
    return 1
  fi
  $PY - "$RES/$name.json" "$name" "$wall" "${TF32:-off}" >>"$RES/timing.jsonl" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
run = r.get("run", {})
print(json.dumps({"name": sys.argv[2], "kind": "lens", "tokens": len(r["tokens"]), "sites": len(r["sites"]),
                  "provider": run.get("provider"), "lens_path": run.get("lens_path"), "weights": run.get("weights", ""),
                  "forward_ms": run.get("forward_ms"), "lens_ms": run.get("lens_ms"), "wall_ms": int(sys.argv[3]),
                  "tf32": sys.argv[4]}))
EOF
  say "lens $name: $(tail -1 "$RES/timing.jsonl")"
}
compare() { # compare LABEL REF OTHER [compare.py options]
  local label=$1 a=$2 b=$3; shift 3
  if [ -f "$RES/$a.json" ] && [ -f "$RES/$b.json" ]; then
    $PY "$HERE/compare.py" "$RES/$a.json" "$RES/$b.json" --label "$label" --json-out "$RES/compare.jsonl" "$@" 2>&1 | tee -a "$LOG"
  else
    status "$label" fail "a report is missing ($a / $b)"
  fi
}
cmp_model() { # cmp_model KEY BUNDLE PROMPT [kernel-too]
  local key=$1 b=$2 p=$3
  lens_run "$key-cpu" "$b" "$p" cpu kernel
  lens_run "$key-gpu" "$b" "$p" "$GDEV" graph && compare "$key: $GNAME graph vs CPU kernel" "$key-cpu" "$key-gpu"
  if [ "${4:-}" = kernel-too ] && [ "$GDEV" = cuda ]; then
    lens_run "$key-gpukernel" "$b" "$p" cuda kernel && compare "$key: CUDA forward + CPU kernel vs CPU" "$key-cpu" "$key-gpukernel"
  fi
}

# --- 4. CUDA against CPU (~280 tokens; NVIDIA_TF32_OVERRIDE=0) ----------------------------------
prep_one prompts
P=$WORK/prompt_cmp.txt
PT=$WORK/prompt_time.txt
# The demo model (n_ctx 256: the prompt's last 256 tokens), then the random shapes.
[ -f "$WORK/done.demo" ] && cmp_model demo "$WORK/b/demo" "$HELD" kernel-too
if prep_one "bundle-$S_GPT2"; then cmp_model "$S_GPT2" "$WORK/b/$S_GPT2" "$P" kernel-too; fi
if have_time 60 && prep_one "bundle-$S_LLAMA"; then
  cmp_model "$S_LLAMA" "$WORK/b/$S_LLAMA" "$P"
  if [ "$GDEV" = cuda ]; then
    TF32=default lens_run "$S_LLAMA-gpu-tf32" "$WORK/b/$S_LLAMA" "$P" cuda graph &&
      compare "$S_LLAMA: CUDA graph with TF32 as ORT defaults vs CPU" "$S_LLAMA-cpu" "$S_LLAMA-gpu-tf32" --info
  fi
fi

write_table

# --- 5. timings at TOK_TIME tokens (GPT-2-XL's reports at 1024 tokens are its CUDA/CPU check) --------
# Wait (at most 180 s) for the background preparation: it would disturb the CPU timings.
t=0
while [ -f "$WORK/prep.pid" ] && kill -0 "$(cat "$WORK/prep.pid")" 2>/dev/null && [ $t -lt 180 ]; do sleep 2; t=$((t + 2)); done
[ $t -gt 0 ] && say "waited $t s for the background preparation"
if [ -f "$WORK/prep.pid" ] && kill -0 "$(cat "$WORK/prep.pid")" 2>/dev/null; then
  status prep-still-running note "the timings below ran beside the preparation (prep.log)"
fi
BENCH_EXTRA=()
"$BIN" bench --help 2>/dev/null | grep -q -- '--no-reference' && BENCH_EXTRA=(--no-reference)
for s in $S_LLAMA $S_XL; do
  if ! have_time 100; then status "time-$s" skip "budget ($(elapsed) s of $BUDGET)"; continue; fi
  prep_one "bundle-$s" || { status "time-$s" fail "no bundle"; continue; }
  lens_run "$s-t-cpu" "$WORK/b/$s" "$PT" cpu kernel
  lens_run "$s-t-gpu" "$WORK/b/$s" "$PT" "$GDEV" graph &&
    compare "$s @$TOK_TIME: $GNAME graph vs CPU kernel" "$s-t-cpu" "$s-t-gpu"
  if [ "$GDEV" = cuda ] && have_time 60; then
    say "bench $s --tokens $TOK_TIME --device cuda --lens-path graph --repeat 2 ${BENCH_EXTRA[*]}"
    timeout "$(tmo)" env -u NVIDIA_TF32_OVERRIDE "$BIN" bench "${ORT_OPT[@]}" --model "$WORK/b/$s" --tokens "$TOK_TIME" --device cuda --lens-path graph \
      --repeat 2 "${BENCH_EXTRA[@]}" --json "$RES/$s-bench-gpu.json" >"$RES/$s-bench-gpu.log" 2>&1 || say "bench $s FAILED: $(tail -2 "$RES/$s-bench-gpu.log")"
    cat "$RES/$s-bench-gpu.log" | tee -a "$LOG"
    [ -f "$RES/$s-bench-gpu.json" ] && $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); d.update(name=sys.argv[2], kind="bench", tokens=int(sys.argv[3])); print(json.dumps(d))' \
      "$RES/$s-bench-gpu.json" "$s-bench-gpu" "$TOK_TIME" >>"$RES/timing.jsonl"
  fi
done

write_table

# --- 6. quantized bundles -----------------------------------------------------------------------
if [ ${#WEIGHTS[@]} -gt 0 ]; then
  if [ $HAS_WEIGHTS = 0 ]; then
    status weights skip "this binary's convert has no --weights"
  else
    for w in "${WEIGHTS[@]}"; do
      for s in $S_LLAMA $S_GPT2; do
        if ! have_time 60; then status "weights-$s-$w" skip "budget ($(elapsed) s)"; continue; fi
        prep_one "bundle-$s-$w" || { status "weights-$s-$w" fail "convert --weights $w failed (prep.log)"; continue; }
        lens_run "$s-$w-cpu" "$WORK/b/$s-$w" "$P" cpu kernel
        lens_run "$s-$w-gpu" "$WORK/b/$s-$w" "$P" "$GDEV" graph &&
          compare "$s $w: $GNAME vs CPU ($w both)" "$s-$w-cpu" "$s-$w-gpu" --info
        compare "$s $w: $GNAME $w vs CPU f32 (quantization error)" "$s-cpu" "$s-$w-gpu" --info
        if [ "$s" = "$S_LLAMA" ] && have_time 40; then
          lens_run "$s-$w-t-gpu" "$WORK/b/$s-$w" "$PT" "$GDEV" graph
        fi
      done
    done
  fi
elif [ $HAS_WEIGHTS = 1 ]; then
  say "note: convert knows --weights; pass --weights int4 (or int8) to check quantized bundles too"
fi

# --- the table --------------------------------------------------------------------------------------
write_table
cat "$OUTD/summary.md" | tee -a "$LOG"
# Reports: the small ones always, the 1024-token ones while the archive stays under 15 MiB.
(
  cd "$RES" || exit
  small=$(ls ./*.json ./*.log ./*.txt 2>/dev/null | grep -v -- '-t-' || true)
  big=$(ls ./*-t-*.json ./*-t-*.log 2>/dev/null || true)
  tar -cJf "$OUTD/reports.tar.xz" $small $big 2>/dev/null
  if [ "$(stat -c %s "$OUTD/reports.tar.xz")" -gt $((15 * 1048576)) ]; then
    tar -cJf "$OUTD/reports.tar.xz" $small $(ls ./*-t-*.log 2>/dev/null) 2>/dev/null
  fi
)
say "done in $(elapsed) s; files in $OUTD: $(ls "$OUTD" | tr '\n' ' ')"
