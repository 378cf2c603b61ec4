#!/usr/bin/env python3
"""TransformerLens 4.3's JacobianLens.fit on a HF checkpoint folder, for bench/jlens_fit.sh: the
model is booted first (not timed), the fit is timed. Usage:
    python bench/jlens_fit.py MODEL_DIR PROMPTS_FILE OUT.pt [--max-seq-len 128] [--skip-first 16] [--dim-batch 8]
Prints "fit S s, P prompts, S/P s per prompt, peak RSS M MB".
"""
import argparse
import resource
import time

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.tools.analysis import JacobianLens

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("prompts")
p.add_argument("out")
p.add_argument("--max-seq-len", type=int, default=128)
p.add_argument("--skip-first", type=int, default=16)
p.add_argument("--dim-batch", type=int, default=8)
a = p.parse_args()
prompts = [l.rstrip("\r") for l in open(a.prompts, encoding="utf-8").read().split("\n") if l.strip()]
bridge = TransformerBridge.boot_transformers(a.model, device="cpu", dtype=torch.float32)
bridge.cfg.default_prepend_bos = False
lengths = [min(bridge.to_tokens(p).shape[1], a.max_seq_len) for p in prompts]
print(f"transformer_lens tokens per prompt: {lengths}")
t0 = time.time()
lens = JacobianLens.fit(bridge, prompts, corpus="bench", dim_batch=a.dim_batch, max_seq_len=a.max_seq_len, skip_first_positions=a.skip_first, show_progress=False)
dt = time.time() - t0
lens.save(a.out, dtype=torch.float32)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"transformer_lens fit {dt:.2f} s, {lens.n_prompts} prompts, {dt / lens.n_prompts:.2f} s per prompt, peak RSS {rss:.0f} MB")
