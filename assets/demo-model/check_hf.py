#!/usr/bin/env python3
"""Optional cross-check (needs `pip install transformers`): load the shipped files with Hugging Face
transformers' GPT2LMHeadModel and compare against reference_outputs.json (computed with gpt2.py)."""
import json, os, sys
import torch
from transformers import GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)
m = GPT2LMHeadModel.from_pretrained(HERE, torch_dtype=torch.float32).eval()
ref = json.load(open(os.path.join(HERE, "reference_outputs.json")))
with torch.no_grad():
    logits = m(torch.tensor([ref["token_ids"]])).logits[0].float()
lse = torch.logsumexp(logits.double(), -1)
d_lse = max(abs(float(a) - b) for a, b in zip(lse, ref["logsumexp_per_position"]))
top = torch.topk(logits[-1], 5)
same = [int(i) for i in top.indices] == ref["final_position"]["top5_ids"]
d_top = max(abs(float(a) - b) for a, b in zip(top.values, ref["final_position"]["top5_logits"]))
tied = m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()
print(f"HF transformers: max |lse diff| {d_lse:.2e}, top-5 ids equal {same}, max |top-5 logit diff| {d_top:.2e}, lm_head tied {tied}")
sys.exit(0 if (d_lse < 1e-3 and same and d_top < 1e-3 and tied) else 1)
