#!/usr/bin/env python3
"""Fit the demo model's J-lens with TransformerLens 4.3's own JacobianLens.fit (the reference
estimator) and save it in the reference format (fp16):

    /work/venv-bench/bin/python assets/demo-model/jacobian-lens/fit.py

Prompts: consecutive 600-character slices of ../heldout.txt (held-out TinyStories, the same text
the model's held-out loss is measured on; 32,251 bytes, so 54 slices), each truncated to 128
tokens by fit(). The file records n_prompts = 54 (its corpus string says [0:60000]: the slices
were taken up to 60,000 characters, past the file's end, where they are empty and skipped).
Deterministic (fit has no randomness; one CPU thread).
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402
from transformer_lens.tools.analysis import JacobianLens  # noqa: E402

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
MODEL = HERE.parent
text = (MODEL / "heldout.txt").read_text(encoding="utf-8")
prompts = [text[i : i + 600] for i in range(0, 600 * 100, 600) if text[i : i + 600]]
bridge = TransformerBridge.boot_transformers(str(MODEL), device="cpu", dtype=torch.float32)
# The model's tokenizer adds no BOS; TransformerLens's to_tokens would prepend one: fit on the ids
# the model's own tokenizer gives (as logit-lens tokenizes).
tok = bridge.tokenizer
bridge.to_tokens = lambda s, *a, **k: torch.tensor([tok(s)["input_ids"]])  # noqa: E731
lens = JacobianLens.fit(bridge, prompts, corpus="demo-model/heldout.txt[0:60000] in 600-char slices", dim_batch=16, max_seq_len=128, show_progress=False)
lens.metadata["model_name"] = "logit-lens demo-model"
lens.save(str(HERE / "jacobian_lens.pt"))
print(lens, file=sys.stderr)
