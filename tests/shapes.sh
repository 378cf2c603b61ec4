#!/usr/bin/env bash
# Proves every GPT-2 shape with random fp16 weights through the CLI and records the converter's and
# the lens's peak memory: make checkpoint -> convert -> lens (64 tokens). Needs /usr/bin/time.
# Usage: tests/shapes.sh [SHAPE...]   (default: all five). Scratch space: $SCRATCH (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins >/dev/null
bin=target/release
scratch=${SCRATCH:-/tmp}/lens-shapes
mkdir -p "$scratch"
prompt=$(head -c 300 assets/demo-model/heldout.txt 2>/dev/null || echo "The logit lens applies the final LayerNorm and unembedding to every layer.")
printf '| shape | params | fp32 weights | convert s | convert peak RSS | ratio | lens s (cold, %s) | lens peak RSS |\n|---|---|---|---|---|---|---|---|\n' "first 300 bytes of heldout.txt"
for shape in "${@:-distilgpt2 gpt2 gpt2-medium gpt2-large gpt2-xl}"; do
  for s in $shape; do
    rm -rf "$scratch/$s-hf" "$scratch/$s-bundle"
    $bin/make_random_gpt2 "$s" "$scratch/$s-hf" 0
    /usr/bin/time -o "$scratch/t" -f "%e %M" $bin/logit-lens convert "$scratch/$s-hf" "$scratch/$s-bundle" >/dev/null 2>&1
    conv=$(tail -1 "$scratch/t")
    data=$(stat -c %s "$scratch/$s-bundle/model.onnx.data")
    /usr/bin/time -o "$scratch/t" -f "%e %M" $bin/logit-lens lens --device cpu --model "$scratch/$s-bundle" --prompt "$prompt" --truncate left --json "$scratch/$s.json" >/dev/null 2>&1
    lens=$(tail -1 "$scratch/t")
    params=$(python3 -c "import json;print(json.load(open('$scratch/$s-hf/config.json'))['n_layer'])")
    read -r cs cm <<<"$conv"; read -r ls lm <<<"$lens"
    awk -v s="$s" -v d="$data" -v cs="$cs" -v cm="$cm" -v ls="$ls" -v lm="$lm" -v L="$params" 'BEGIN{printf "| %s | %d layers | %.2f GB | %s | %.2f GB | %.2fx | %s | %.2f GB |\n", s, L, d/1e9, cs, cm*1024/1e9, cm*1024/d, ls, lm*1024/1e9}'
    rm -rf "$scratch/$s-hf" "$scratch/$s-bundle"
  done
done
