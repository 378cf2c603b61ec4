#!/bin/bash
# Issue 28's benchmark: fitting a J-lens, ours (`logit-lens fit-jacobian-lens`, the whole cold
# command) against TransformerLens 4.3's JacobianLens.fit (bench/jlens_fit.py, model booted
# first, fit timed), alternating, on the same prompts, in one script; then the two lenses
# compared (relative Frobenius per layer). Models: a GPT-2-small-shaped random checkpoint
# (12 layers, 768 wide) and the demo model. Usage:
#   bench/jlens_fit.sh DATA_DIR PYTHON [N_PROMPTS [MAX_SEQ_LEN [REPEATS]]]
# (PYTHON with torch, transformers and transformer-lens 4.3). Run from the repository root after
# `cargo build --release --workspace`.
set -eu
DATA=$1
P=$2
N=${3:-4}
LEN=${4:-128}
REPS=${5:-2}
B=$PWD/target/release/logit-lens
mkdir -p "$DATA"
[ -d "$DATA/gpt2" ] || target/release/make_random_gpt2 gpt2 "$DATA/gpt2" 1
# transformers' GPT2Tokenizer (which the Bridge loads for these folders) reads vocab.json and
# merges.txt, not tokenizer.json: give both folders theirs, taken from their tokenizer.json.
rm -rf "$DATA/demo" && cp -r assets/demo-model "$DATA/demo"
for dir in "$DATA/gpt2" "$DATA/demo"; do
  $P - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
m = json.load(open(f"{d}/tokenizer.json", encoding="utf-8"))["model"]
json.dump(m["vocab"], open(f"{d}/vocab.json", "w", encoding="utf-8"), ensure_ascii=False)
merges = [x if isinstance(x, str) else " ".join(x) for x in m["merges"]]
open(f"{d}/merges.txt", "w", encoding="utf-8").write("#version: 0.2\n" + "\n".join(merges) + "\n")
PY
done
# N prompts of about 128 GPT-2 tokens from the shared corpus.
head -c 200000 ../shared/corpus/wikitext2_raw_test.txt | tr '\r\n' '  ' | fold -w 600 -s | head -n "$N" > "$DATA/prompts.txt"
for model in gpt2 demo; do
  case $model in
    gpt2) DIR=$DATA/gpt2 ;;
    demo) DIR=$DATA/demo ;;
  esac
  for i in $(seq "$REPS"); do
    /usr/bin/time -f "ours $model (whole command) %e s, peak RSS %M KB" "$B" fit-jacobian-lens --model "$DIR" --prompts-file "$DATA/prompts.txt" \
      --out "$DATA/ours_$model.pt" --f32 --overwrite --device cpu --max-seq-len "$LEN" 2>&1 | tail -2
    $P bench/jlens_fit.py "$DIR" "$DATA/prompts.txt" "$DATA/tl_$model.pt" --max-seq-len "$LEN" 2>&1 | grep "transformer_lens"
  done
  $P - "$DATA/ours_$model.pt" "$DATA/tl_$model.pt" <<'PY'
import sys, torch
a, b = torch.load(sys.argv[1], weights_only=True), torch.load(sys.argv[2], weights_only=True)
worst = max(float((a["J"][l].double() - b["J"][l].double()).norm() / b["J"][l].double().norm()) for l in b["J"])
print(f"largest relative Frobenius |ours - transformer_lens| over layers: {worst:.2e} ({a['n_prompts']} vs {b['n_prompts']} prompts)")
PY
done
