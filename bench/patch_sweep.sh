#!/bin/bash
# Issue 27's benchmark: a full residual activation-patching sweep on a GPT-2-small-shaped random
# checkpoint (12 layers, 768 wide, the real GPT-2 tokenizer), ours (`logit-lens patch`, the whole
# cold command and the sweep alone) against TransformerLens hooks (bench/patch_sweep.py, model
# loaded, sweep timed), alternating, in one script. Usage: bench/patch_sweep.sh DATA_DIR PYTHON
# (PYTHON with torch, transformers and transformer-lens 4.3). Run from the repository root after
# `cargo build --release --workspace`.
set -eu
DATA=$1
P=$2
B=$PWD/target/release/logit-lens
mkdir -p "$DATA"
[ -d "$DATA/gpt2" ] || target/release/make_random_gpt2 gpt2 "$DATA/gpt2" 1
CLEAN="After the long day at work, when Mary and John went to the store, John gave a drink to"
CORRUPT="After the long day at work, when Mary and John went to the store, Mary gave a drink to"
rm -rf "$DATA/gpt2.bundle"
"$B" convert "$DATA/gpt2" "$DATA/gpt2.bundle" >/dev/null
for i in 1 2; do
  /usr/bin/time -f "ours (whole command) %e s %M KB" "$B" patch --model "$DATA/gpt2.bundle" --prompt "$CLEAN" --corrupt-prompt "$CORRUPT" \
    --target " Mary" --against " John" --json "$DATA/ours.json" 2>&1 | tail -2
  $P bench/patch_sweep.py "$DATA/gpt2" "$CLEAN" "$CORRUPT" " Mary" " John" --json "$DATA/tl.json" 2>&1 | grep sweep
done
$P - "$DATA/ours.json" "$DATA/tl.json" <<'PY'
import json, sys
ours, tl = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
o = ours["grids"][0]["effect"]; t = tl["effects"]
gap = max(abs(a - b) for ra, rb in zip(o, t) for a, b in zip(ra, rb))
print(f"ours sweep {ours['seconds']:.2f} s ({ours['runs']} runs); largest |ours - transformer_lens| {gap:.2e}")
PY
