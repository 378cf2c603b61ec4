"""The logit lens as a researcher writes it in a notebook (transformers + torch, model already
loaded): output_hidden_states, the final norm + lm_head per layer, softmax, ranks of the final
top-1 and of the next token, KL(final || layer), entropy. The reference side of the issue-13
benchmark: `python bench/notebook_lens.py HF_DIR PROMPT_FILE` prints the compute time (model
already loaded) and the process's peak RSS; run it beside `/usr/bin/time logit-lens lens ...`."""
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_grad_enabled(False)
path, prompt_file = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
model.eval()
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
    logits = final if i == len(hs) - 1 else model.lm_head(x)
    logp = logits.log_softmax(-1)
    p = logp.exp()
    kl = (logp_final.exp() * (logp_final - logp)).sum(-1)
    ent = -(p * logp).sum(-1)
    rank_final = (logits > logits.gather(-1, top1[:, None])).sum(-1) + 1
    nxt = ids[0, 1:]
    rank_next = (logits[:-1] > logits[:-1].gather(-1, nxt[:, None])).sum(-1) + 1
    top = logits.topk(10, -1)
    rows.append((kl.mean().item(), ent.mean().item(), rank_final.float().mean().item(), rank_next.float().mean().item(), top.indices[:, 0].tolist()))
t1 = time.perf_counter()
print(f"{ids.shape[1]} tokens x {len(hs)} sites: compute {t1 - t0:.2f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GB")
