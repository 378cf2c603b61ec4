#!/bin/bash
# Issue 13's benchmark: the whole cold `logit-lens lens` command against the notebook way
# (bench/notebook_lens.py), alternating, on random bf16 checkpoints of real shapes with real
# tokenizers. Usage: bench/side_by_side.sh DATA_DIR [PYTHON]  (DATA_DIR: scratch space, ~15 GB;
# PYTHON: a Python with torch + transformers, default python3). Run from the repository root after
# `cargo build --release`, with the npm tokenizers fetched (.ci/run does it).
set -eu
DATA=$1
P=${2:-python3}
B=$PWD/target/release/logit-lens
TOK=$PWD/target/npm-tokenizers
mkdir -p "$DATA"
for shape in qwen2-0.5b:qwen3 llama-3.2-1b:llama3 gemma3-1b:gemma3; do
  name=${shape%%:*}; tok=${shape##*:}
  [ -d "$DATA/$name" ] || $P bench/make_random_hf.py "$name" "$DATA/$name" "$TOK/$tok/package/models/tokenizer.json"
  [ -d "$DATA/$name.bundle" ] || /usr/bin/time -f "convert-$name %e s %M KB" "$B" convert "$DATA/$name" "$DATA/$name.bundle" 2>&1 | tail -1
  # A 256-token prompt from the corpus, as the model's tokenizer counts it.
  $P - "$DATA/$name/tokenizer.json" "$DATA/$name.prompt.txt" <<'PY'
import sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
text = open("../shared/corpus/wikitext2_raw_test.txt", encoding="utf-8").read()[5000:20000]
open(sys.argv[2], "w", encoding="utf-8").write(t.decode(t.encode(text, add_special_tokens=False).ids[:255]))
PY
  for i in 1 2; do
    /usr/bin/time -f "ours-$name %e s %M KB" "$B" lens --model "$DATA/$name.bundle" --prompt-file "$DATA/$name.prompt.txt" --json "$DATA/$name.json" 2>&1 | tail -1
    $P bench/notebook_lens.py "$DATA/$name" "$DATA/$name.prompt.txt" 2>&1 | grep compute
  done
  "$B" bench --model "$DATA/$name.bundle" --tokens 256 2>&1 | grep -E "lens|reference|ratio|RSS"
done
