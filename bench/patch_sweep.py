"""Issue 27's benchmark, the reference side: a full activation-patching sweep over the residual
sites (blocks.0.hook_resid_pre and every blocks.{l}.hook_resid_post) × every position, written as a
TransformerLens user writes it: `run_with_cache` on the clean prompt, then one `run_with_hooks` per
(site, position) on the corrupted prompt with a hook that puts the clean activation in; metric
logit(target) − logit(against) at the last position. Model: a TransformerBridge booted from a
local checkpoint folder (TransformerLens 4.3), float32, loaded before the clock starts.

    python bench/patch_sweep.py HF_DIR CLEAN CORRUPT TARGET AGAINST [--json OUT]

prints the sweep's seconds, the number of runs and the effects' shape; --json writes the effects
(for comparing with `logit-lens patch --json`)."""
import argparse
import json
import time

import torch
from transformer_lens.model_bridge import TransformerBridge

ap = argparse.ArgumentParser()
ap.add_argument("path")
ap.add_argument("clean")
ap.add_argument("corrupt")
ap.add_argument("target")
ap.add_argument("against")
ap.add_argument("--json")
a = ap.parse_args()
torch.set_grad_enabled(False)
model = TransformerBridge.boot_transformers(a.path, device="cpu", dtype=torch.float32)
tok = model.tokenizer
clean = torch.tensor([tok(a.clean, add_special_tokens=False)["input_ids"]])
corrupt = torch.tensor([tok(a.corrupt, add_special_tokens=False)["input_ids"]])
assert clean.shape == corrupt.shape, (clean.shape, corrupt.shape)
t_id, a_id = tok(a.target, add_special_tokens=False)["input_ids"][0], tok(a.against, add_special_tokens=False)["input_ids"][0]
n_layers, n = model.cfg.n_layers, clean.shape[1]
names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(n_layers)]

t0 = time.perf_counter()
_, cache = model.run_with_cache(clean, names_filter=lambda name: name in names)
effects = []
for name in names:
    row = []
    for p in range(n):
        def hook(act, hook, p=p, name=name):
            act[:, p] = cache[name][:, p]
            return act
        logits = model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])
        row.append(float(logits[0, -1, t_id] - logits[0, -1, a_id]))
    effects.append(row)
secs = time.perf_counter() - t0
print(f"transformer_lens sweep: {secs:.2f} s, {len(names) * n} runs, {len(names)} sites x {n} positions")
if a.json:
    json.dump({"effects": effects, "seconds": secs}, open(a.json, "w"))
