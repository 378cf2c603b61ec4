"""The logit lens as a researcher writes it in a notebook (transformers + torch, model already
loaded): output_hidden_states, the final norm + lm_head per layer, softmax, ranks of the final
top-1 and of the next token, KL(final || layer), entropy. The reference side of the issue-13
benchmark: `python bench/notebook_lens.py HF_DIR PROMPT_FILE` prints the compute time (model
already loaded) and the process's peak RSS; run it beside `/usr/bin/time logit-lens lens ...`.

`--dtype bfloat16` loads the model in bf16 (the default, float32, is what issue 13 measured); the
lens logits are taken to f32 before the softmax either way (a no-op in f32). With a final logit soft
cap (Gemma 2) every layer's logits are capped as the model caps its own. `--dump OUT.json` writes
the token ids and, per site (embed, then each layer's output; the last is the model's own logits),
every position's top-1 id and KL(final || site), for comparing with a `logit-lens lens --json` report
(`bench/big_models.py agree`); it is written after the timed part."""
import argparse
import json
import resource
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("path")
ap.add_argument("prompt_file")
ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
ap.add_argument("--dump", help="write ids, per-site top-1 ids and KL(final || site) to this JSON file")
a = ap.parse_args()

torch.set_grad_enabled(False)
path, prompt_file = a.path, a.prompt_file
tok = AutoTokenizer.from_pretrained(path)
t_load = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, a.dtype))
model.eval()
t_load = time.perf_counter() - t_load
cap = getattr(model.config, "final_logit_softcapping", None)
ids = tok(open(prompt_file, encoding="utf-8").read(), return_tensors="pt").input_ids[:, :256]
t0 = time.perf_counter()
out = model(ids, output_hidden_states=True)
hs = out.hidden_states[:-1] + (out.hidden_states[-1],)  # the last entry is already normed
final = out.logits[0].float()
logp_final = final.log_softmax(-1)
top1 = final.argmax(-1)
rows = []
for i, h in enumerate(hs):
    x = h[0] if i == len(hs) - 1 else model.model.norm(h)[0]
    logits = final if i == len(hs) - 1 else model.lm_head(x).float()
    if cap and i < len(hs) - 1:
        logits = torch.tanh(logits / cap) * cap
    logp = logits.log_softmax(-1)
    p = logp.exp()
    kl = (logp_final.exp() * (logp_final - logp)).sum(-1)
    ent = -(p * logp).sum(-1)
    rank_final = (logits > logits.gather(-1, top1[:, None])).sum(-1) + 1
    nxt = ids[0, 1:]
    rank_next = (logits[:-1] > logits[:-1].gather(-1, nxt[:, None])).sum(-1) + 1
    top = logits.topk(10, -1)
    rows.append((kl.mean().item(), ent.mean().item(), rank_final.float().mean().item(), rank_next.float().mean().item(), top.indices[:, 0].tolist(),
                 kl.tolist() if a.dump else None))
t1 = time.perf_counter()
print(f"{ids.shape[1]} tokens x {len(hs)} sites: compute {t1 - t0:.2f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GB")
print(f"load {t_load:.2f} s ({a.dtype})")
if a.dump:
    with open(a.dump, "w") as fh:
        json.dump({"schema": "notebook-lens@1", "dtype": a.dtype, "ids": ids[0].tolist(), "top1": [r[4] for r in rows], "kl_to_final": [r[5] for r in rows]}, fh)
