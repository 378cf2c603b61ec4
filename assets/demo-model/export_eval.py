#!/usr/bin/env python3
"""Export a training checkpoint as the shipped HF GPT-2 artifact and evaluate the SHIPPED weights.

  python export_eval.py --ckpt /work/train-run/run/ckpt_XXXXXX.pt      # export + evaluate
  python export_eval.py --eval_only                                      # re-evaluate assets as they are
  python export_eval.py --ckpt ... --probe                               # only the copy-case probe, no files

Writes (next to this script): config.json, model.safetensors (fp16), tokenizer.json, eval.json,
reference_outputs.json.

Evaluation protocol (eval.json): heldout.txt is tokenized with the GPT-2 tokenizer (no BOS, no truncation);
the ids are cut into consecutive non-overlapping windows of 256 tokens (the last one shorter); every window
is run independently from position 0; the loss is the natural-log next-token NLL over the full 50257-token
softmax at every position except the last of each window (i.e. every token except the first of each window
is predicted); mean_nll is the mean over all predicted positions (pooled, not a mean of window means);
top1_acc is the fraction of those positions where the argmax logit (lowest id on ties) equals the true next
token. Weights: model.safetensors (fp16) converted to fp32; all arithmetic in fp32 torch.
"""
import argparse, hashlib, json, os, re, shutil, sys
import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from gpt2 import GPT2LMHeadModel, load_shipped

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_TOK = os.path.join(HERE, "../../../shared/gpt2-tokenizer/tokenizer.json")
if not os.path.exists(SHARED_TOK):  # e.g. on a training machine that has only the repository
    SHARED_TOK = os.path.join(HERE, "tokenizer.json")
PROMPTS = os.path.join(HERE, "../prompts")
WIN = 256


def tokenizer():
    t = Tokenizer.from_file(SHARED_TOK)
    t.no_truncation(); t.no_padding()
    return t


def rank_of(logits, t):
    return int((logits > logits[t]).sum().item()) + 1


def argmax_low_id(logits):
    return logits.argmax(-1)  # torch returns the first (lowest index) maximum


@torch.no_grad()
def eval_ids(model, ids):
    nll_sum, n, correct = 0.0, 0, 0
    for s in range(0, len(ids), WIN):
        w = torch.tensor(ids[s:s + WIN]).unsqueeze(0)
        if w.shape[1] < 2:
            continue
        logits = model(w)[0].float()
        tgt = w[0, 1:]
        lp = torch.log_softmax(logits[:-1].double(), -1)
        nll_sum += float(-lp.gather(1, tgt.unsqueeze(1)).sum())
        correct += int((argmax_low_id(logits[:-1]) == tgt).sum())
        n += tgt.numel()
    return {"mean_nll": nll_sum / n, "top1_acc": correct / n, "n_predicted": n,
            "n_windows": (len(ids) + WIN - 1) // WIN, "n_tokens": len(ids)}


@torch.no_grad()
def probe(model, tok, k=5):
    """Copy case. The prompt ends with its second ' plasma'. Two readings are recorded:
    at_second_say: the prediction made at the second ' say' (position n-2), whose next token is the prompt's
      last token ' plasma': in-context copying/induction should put ' plasma' on top there;
    final_position: the prediction at the last position (after the second ' plasma'), where copying
      predicts ',' (what followed ' plasma' the first time); ranks of ' plasma' and ',' are recorded."""
    text = open(os.path.join(PROMPTS, "plasma.txt"), encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False).ids
    logits = model(torch.tensor(ids).unsqueeze(0))[0].float()
    plasma, comma = tok.token_to_id("Ġplasma"), tok.token_to_id(",")
    assert ids[-1] == plasma and ids[-2] == tok.token_to_id("Ġsay")

    def at(pos, extra):
        v = logits[pos]
        p = torch.softmax(v.double(), -1)
        top = torch.topk(v, k)
        d = {"position": pos, "input_token": tok.decode([ids[pos]]),
             "top5": [{"id": int(i), "token": tok.decode([int(i)]), "logit": float(v[i]), "prob": float(p[i])}
                      for i in top.indices]}
        for name, t in extra:
            d[name] = {"id": t, "rank": rank_of(v, t), "prob": float(p[t]), "logit": float(v[t])}
        return d

    n = len(ids)
    return ids, logits, {
        "prompt_file": "assets/prompts/plasma.txt", "n_tokens": n,
        "rank_definition": "1 + number of vocab entries with a strictly larger logit",
        "at_second_say": at(n - 2, [("plasma", plasma)]),
        "final_position": at(n - 1, [("plasma", plasma), ("comma", comma)])}


def export(ckpt_path):
    from safetensors.torch import save_file
    st = torch.load(ckpt_path, weights_only=False, map_location="cpu")
    cfg = st["config"]
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in st["model"].items()}
    assert "lm_head.weight" not in sd
    save_file(sd, os.path.join(HERE, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(HERE, "model.safetensors"), 0o644)
    json.dump(cfg, open(os.path.join(HERE, "config.json"), "w"), indent=2)
    # tokenizer.json: the shared GPT-2 tokenizer with its stray truncation (max_length 50) removed
    raw = open(SHARED_TOK, encoding="utf-8").read()
    new, n = re.subn(r'"truncation":\s*\{[^{}]*\}', '"truncation": null', raw, count=1)
    assert n == 1 or '"truncation": null' in raw
    if os.path.abspath(SHARED_TOK) != os.path.join(HERE, "tokenizer.json"):
        open(os.path.join(HERE, "tokenizer.json"), "w", encoding="utf-8").write(new)
    info = {"step": st["step"], "tokens": st["tokens"], "train_time_s": st["elapsed"], "args": st["args"]}
    for k in ("device", "torch_version", "evals"):
        if k in st:
            info[k] = st[k]
    return info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt")
    ap.add_argument("--eval_only", action="store_true")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--data_dir", default="/work/train-run/data")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = tokenizer()
    if a.probe:
        st = torch.load(a.ckpt, weights_only=False, map_location="cpu")
        m = GPT2LMHeadModel(st["config"]); m.load_state_dict(st["model"]); m.eval()
        print(json.dumps(probe(m, tok)[2], indent=1))
        return
    info = None
    if not a.eval_only:
        info = export(a.ckpt)
        json.dump(info, open(os.path.join(HERE, "train_info.json"), "w"), indent=2)
    model = load_shipped(HERE)
    text = open(os.path.join(HERE, "heldout.txt"), encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False).ids
    res = {"heldout_file": "assets/demo-model/heldout.txt",
           "heldout_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
           "protocol": ("GPT-2 tokenizer, no BOS, no truncation; consecutive non-overlapping windows of 256 tokens "
                        "(last one shorter), each evaluated independently from position 0; natural-log NLL over "
                        "the full 50257 vocab at every position but the last of each window; mean over all "
                        "predicted positions pooled; top1_acc = fraction where argmax logit == next token; "
                        "weights = model.safetensors fp16 -> fp32, fp32 compute"),
           "weights_sha256": hashlib.sha256(open(os.path.join(HERE, "model.safetensors"), "rb").read()).hexdigest(),
           "torch_version": torch.__version__}
    res.update(eval_ids(model, ids))
    # larger held-out splits (same windowing over each split's token stream, documents joined by <|endoftext|>)
    splits = {}
    for name in ["tinystories_train", "tinystories_valid", "wikitext", "gutenberg"]:
        p = os.path.join(a.data_dir, f"{name}.heldout.npy")
        if os.path.exists(p):
            splits[name] = eval_ids(model, np.load(p).astype(np.int64).tolist())
            print(name, splits[name], flush=True)
    res["heldout_splits"] = splits
    ids_p, logits, pr = probe(model, tok)
    res["copy_case"] = pr
    json.dump(res, open(os.path.join(HERE, "eval.json"), "w"), indent=2)
    print(json.dumps(res, indent=1))
    # reference outputs for checking the Rust engine against torch
    lse = torch.logsumexp(logits.double(), -1)
    top = torch.topk(logits[-1], 5)
    ref = {"prompt_file": "assets/prompts/plasma.txt", "weights": "model.safetensors fp16 -> fp32, fp32 torch",
           "torch_version": torch.__version__, "token_ids": ids_p,
           "tokens": [tok.id_to_token(i) for i in ids_p],
           "final_position": {"top5_ids": [int(i) for i in top.indices],
                              "top5_logits": [float(v) for v in top.values]},
           "logsumexp_per_position": [float(v) for v in lse],
           "top1_id_per_position": [int(i) for i in logits.argmax(-1)],
           "top1_logit_per_position": [float(v) for v in logits.max(-1).values]}
    json.dump(ref, open(os.path.join(HERE, "reference_outputs.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
