"""logit-lens's nnsight engine: runs the logit lens inside an nnsight trace and returns only the
reduced rows (issue 29). Shipped with the app and versioned with it (PROTOCOL below); the app
starts it as `python logit_lens_nnsight.py` and talks to it over stdin/stdout.

Message format (one JSON object per line):

stdin, one request:
    {"protocol": 1, "model": DIR_OR_HUB_ID, "remote": false, "ids": [int, ...], "k": 10,
     "targets": [[int, ...] per position], "dtype": "float32", "subblocks": false}
  `targets[p]` are position p's tracked tokens after the final top-1 (which is computed here):
  the next token, the input token, then pinned and group tokens (-1 where there is none).

stdout, any number of
    {"type": "status", "message": TEXT}
  then exactly one of
    {"type": "result", "protocol": 1, "n_layers": L, "d_model": D, "d_vocab": V,
     "family": MODEL_TYPE, "n_ctx": N, "where": "local" | "remote", "parallel": BOOL,
     "rows": [ROW per position, per site (position major; sites: embeddings, block 0 … L-1;
              with "subblocks", each block's output follows its `resid_pre + attention output`)]}
    ROW = [lse, entropy, kl_to_final, kl_to_input, [top ids], [top logits],
           [target logits], [target ranks]]   (targets: the final top-1 first, then `targets[p]`)
    {"type": "error", "kind": "no_nnsight" | "model" | "remote" | "input" | "internal",
     "message": TEXT}

Every reduction is computed where the model runs (inside the trace): only these rows leave it.
Logits are the model's final norm and head (with Gemma 2's final soft cap) applied to each
hidden state; the last site is the model's own logits. Ranks are 1 + the tokens whose logit is
strictly greater.
"""

import json
import math
import sys

PROTOCOL = 1

# Final norms by module path, first found wins.
FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "transformer.layernorm")
# The blocks, by module path.
LAYERS = ("model.layers", "transformer.h", "gpt_neox.layers")
# What a block adds to the residual from its attention, by module name within the block: the
# post-attention norm where the family has one (Gemma 2 and 3), else the attention's output.
ATTENTION_OUTPUTS = ("post_attention_layernorm", "self_attn", "attn", "attention", "multi_head_attention")
# Families whose post_attention_layernorm is the norm before the MLP, not a post-norm.
PRE_MLP_NORM_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gpt_neox")


def say(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def fail(kind, message):
    say({"type": "error", "kind": kind, "message": message})
    sys.exit(1)


def attr_path(root, path):
    obj = root
    for part in path.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def remote_message(e):
    """NDIF's answers, as a person reads them."""
    text = str(e)
    low = text.lower()
    if "api key" in low or "401" in low or "403" in low:
        return "NDIF refused the API key: set NDIF_API_KEY (get one at https://login.ndif.us). NDIF said: " + text
    if "not dedicated" in low or "could not deploy" in low or "not hosted" in low or "not available" in low:
        return "NDIF does not host this model now (see https://nnsight.net/status). NDIF said: " + text
    if "429" in low or "rate" in low:
        return "NDIF is rate limiting this key: try again later. NDIF said: " + text
    if "timeout" in low:
        return "NDIF stopped the job at its time limit. NDIF said: " + text
    return "NDIF: " + text


def reduce_rows(torch, logits_list, targets, k):
    """Every (position, site) row's reductions. `logits_list[s]` is site s's [pos, vocab]."""
    n_sites = len(logits_list)
    lps = [torch.log_softmax(x.double(), dim=-1) for x in logits_list]
    final_lp, input_lp = lps[-1], lps[0]
    final_p, input_p = final_lp.exp(), input_lp.exp()
    n_pos = logits_list[0].shape[0]
    final_top1 = logits_list[-1].argmax(dim=-1)
    rows = []
    for p in range(n_pos):
        tracked = [int(final_top1[p])] + list(targets[p])
        for s in range(n_sites):
            x = logits_list[s][p]
            lp = lps[s][p]
            lse = float(torch.logsumexp(x.double(), dim=-1))
            ent = float(-(lp.exp() * lp).sum())
            klf = float((final_p[p] * (final_lp[p] - lp)).sum())
            kli = float((input_p[p] * (input_lp[p] - lp)).sum())
            vals, ids = torch.topk(x, k)
            tl, tr = [], []
            for t in tracked:
                if t < 0:
                    tl.append(None)
                    tr.append(0)
                else:
                    v = x[t]
                    tl.append(float(v))
                    tr.append(1 + int((x > v).sum()))
            rows.append([lse, ent, klf, kli, [int(i) for i in ids], [float(v) for v in vals], tl, tr])
    return rows


def main():
    try:
        request = json.loads(sys.stdin.readline())
    except ValueError as e:
        fail("input", f"the request is not JSON: {e}")
    if request.get("protocol") != PROTOCOL:
        fail("input", f"this engine speaks protocol {PROTOCOL}, the app sent {request.get('protocol')}: reinstall logit-lens")
    try:
        import torch
        import nnsight
    except ImportError as e:
        fail("no_nnsight", f"{e}: install it into this Python with  {sys.executable} -m pip install nnsight")
    ids = request["ids"]
    targets = request["targets"]
    k = int(request.get("k", 10))
    remote = bool(request.get("remote", False))
    dtype = getattr(torch, request.get("dtype", "float32"))
    if not ids or len(targets) != len(ids):
        fail("input", "the request needs token ids and one target list per position")
    say({"type": "status", "message": "loading " + request["model"]})
    try:
        # nnsight 0.8: TransformersModel (LanguageModel is deprecated there); older: LanguageModel.
        if hasattr(nnsight, "TransformersModel"):
            make = lambda **kw: nnsight.TransformersModel(request["model"], task="text-generation", **kw)  # noqa: E731
        else:
            make = lambda **kw: nnsight.LanguageModel(request["model"], **kw)  # noqa: E731
        model = make() if remote else make(device_map="cpu", dispatch=True, dtype=dtype)
    except Exception as e:  # noqa: BLE001 - every loading failure becomes a clear message
        fail("model", f"nnsight could not load {request['model']}: {e}")
    hf = getattr(model, "_module", None) or getattr(model, "_model")
    config = hf.config
    text_config = getattr(config, "text_config", None) or config
    n_layers = int(text_config.num_hidden_layers)
    d_vocab = int(text_config.vocab_size)
    norm_path = next((p for p in FINAL_NORMS if attr_path(hf, p) is not None), None)
    if norm_path is None:
        fail("model", f"no final norm found in {type(hf).__name__} (looked for {', '.join(FINAL_NORMS)})")
    cap = getattr(text_config, "final_logit_softcapping", None)
    if len(ids) > int(getattr(text_config, "max_position_embeddings", 1 << 30)):
        fail("input", f"the prompt has {len(ids)} tokens; the model's context is {text_config.max_position_embeddings}")
    subblocks = bool(request.get("subblocks", False))
    family = str(text_config.model_type)
    parallel = family == "gptj" or bool(getattr(text_config, "use_parallel_residual", False))
    attn_names = [a for a in ATTENTION_OUTPUTS if not (a == "post_attention_layernorm" and family in PRE_MLP_NORM_FAMILIES)]
    layers_path = next((p for p in LAYERS if attr_path(hf, p) is not None), None)
    attn_name = None
    if subblocks:
        if layers_path is None:
            fail("model", f"no blocks found in {type(hf).__name__} (looked for {', '.join(LAYERS)})")
        first = attr_path(hf, layers_path)[0]
        attn_name = next((a for a in attn_names if hasattr(first, a)), None)
        if attn_name is None:
            fail("model", f"no attention output found in {type(first).__name__}: sub-block rows are not available for {family}")
    say({"type": "status", "message": "tracing" + (" on NDIF" if remote else "")})
    norm = attr_path(model, norm_path)
    head = attr_path(model, "lm_head") or attr_path(model, "embed_out")
    input_ids = torch.tensor([ids])
    try:
        with torch.no_grad(), model.trace(input_ids, remote=remote, output_hidden_states=True):
            # Module outputs are read in the order the model runs them, the hidden states last.
            attn_outs = []
            if subblocks:
                for block in attr_path(model, layers_path):
                    out = getattr(block, attn_name).output
                    attn_outs.append(out[0] if isinstance(out, tuple) else out)
            hidden = model.output.hidden_states

            def decode(h):
                x = head(norm(h)).float()
                return torch.tanh(x / cap) * cap if cap else x

            logits_list = [decode(hidden[0][0])]
            for s in range(n_layers):
                if subblocks:
                    a = attn_outs[s]
                    logits_list.append(decode(hidden[s][0] + (a[0] if a.dim() == 3 else a)))
                logits_list.append(decode(hidden[s + 1][0]) if s + 1 < n_layers else model.output.logits[0].float())
            rows = nnsight.save(reduce_rows(torch, logits_list, targets, k))
    except Exception as e:  # noqa: BLE001
        if remote:
            fail("remote", remote_message(e))
        fail("model", f"the trace failed: {type(e).__name__}: {e}")
    for row in rows:
        for v in row[:4]:
            if not math.isfinite(v):
                fail("model", "the model produced NaN or infinite values")
    say({
        "type": "result",
        "protocol": PROTOCOL,
        "n_layers": n_layers,
        "d_model": int(text_config.hidden_size),
        "d_vocab": d_vocab,
        "family": str(text_config.model_type),
        "n_ctx": int(getattr(text_config, "max_position_embeddings", 0) or 0),
        "where": "remote" if remote else "local",
        "parallel": parallel,
        "rows": rows,
    })


if __name__ == "__main__":
    main()
