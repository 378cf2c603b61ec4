"""logit-lens's nnsight engine: runs the logit lens inside an nnsight trace and returns only the
reduced rows (issue 29). Shipped with the app and versioned with it (PROTOCOL below); the app
starts it as `python logit_lens_nnsight.py` and talks to it over stdin/stdout.

Message format (one JSON object per line):

stdin, requests, one per line, until stdin closes (the model is loaded once and kept while the
requests name the same model; `corpus` sends one request per window):
    {"protocol": 2, "model": DIR_OR_HUB_ID, "remote": false, "ids": [int, ...], "k": 10,
     "targets": [[int, ...] per position], "dtype": "float32", "subblocks": false,
     "attribution": true}
  or {"protocol": 2, "model": …, "remote": …, "dtype": …, "describe": true}, answered by
    {"type": "model", "protocol": 2, "n_layers": L, "d_model": D, "d_vocab": V, "family": …,
     "n_ctx": N} (the model's config; for NDIF nothing runs there)
  `targets[p]` are position p's tracked tokens after the final top-1 (which is computed here):
  the next token, the input token, then pinned and group tokens (-1 where there is none).

stdout, per request, any number of
    {"type": "status", "message": TEXT}       (NDIF's job states arrive as "NDIF: queued", …)
  then exactly one of
    {"type": "result", "protocol": 2, "n_layers": L, "d_model": D, "d_vocab": V,
     "family": MODEL_TYPE, "n_ctx": N, "where": "local" | "remote", "parallel": BOOL,
     "rows": [ROW per position, per site (position major; sites: embeddings, block 0 … L-1;
              with "subblocks", each block's output follows its `resid_pre + attention output`)],
     "attribution": null | {"components": ["embed", "0.attn", "0.mlp", …, "ln_bias"],
                            "final_top1": [[term per position] per component],
                            "next": [[term or null per position] per component]},
     "attribution_note": TEXT (why "attribution" is null, when it was asked for)}
    ROW = [lse, entropy, kl_to_final, kl_to_input, [top ids], [top logits],
           [target logits], [target ranks]]   (targets: the final top-1 first, then `targets[p]`)
    {"type": "error", "kind": "no_nnsight" | "model" | "remote" | "input" | "internal",
     "message": TEXT}
  After an error the module exits.

Direct logit attribution (as the app's README defines it): the final residual is the embedding
plus every block's attention and MLP outputs; each term is that output through the final norm
with the final residual's scale frozen, dotted with the target's unembedding row; `ln_bias` is
the norm's bias and the head's bias. The attention output is the attention module's (Gemma: the
post-attention norm's); the MLP output is what the block added besides it (block output −
block input − attention output), so no MLP module has to be found.

Every reduction is computed where the model runs (inside the trace): only these rows leave it.
Logits are the model's final norm and head (with Gemma 2's final soft cap) applied to each
hidden state; the last site is the model's own logits. Ranks are 1 + the tokens whose logit is
strictly greater.
"""

import json
import math
import sys

PROTOCOL = 2
# Everything the module prints goes through say(); nnsight's and transformers' own prints are sent
# to stderr (main() redirects sys.stdout), so they can never break the message stream.
OUT = sys.stdout

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
    OUT.write(json.dumps(obj, separators=(",", ":")) + "\n")
    OUT.flush()


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
    # A rate limit's words may name the key too: it is looked for first.
    if "429" in low or "rate limit" in low or "too many requests" in low:
        return "NDIF is rate limiting this key: try again later. NDIF said: " + text
    if "api key" in low or "401" in low or "403" in low:
        return "NDIF refused the API key: set NDIF_API_KEY (get one at https://login.ndif.us). NDIF said: " + text
    if "not dedicated" in low or "could not deploy" in low or "not hosted" in low or "not available" in low:
        return "NDIF does not host this model now (see https://nnsight.net/status). NDIF said: " + text
    if "timeout" in low:
        return "NDIF stopped the job at its time limit. NDIF said: " + text
    return "NDIF: " + text


def reduce_rows(torch, logits_list, targets, k):
    """Every (position, site) row's reductions. `logits_list[s]` is site s's [pos, vocab]."""
    # Detached: on NDIF the body runs without the client's torch.no_grad().
    logits_list = [x.detach() for x in logits_list]
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


def dla_terms(torch, comps, h_final, norm_weight, norm_bias, eps, centred, plus_one, w_u, b_u, tokens):
    """Per component, per position: the component through the final norm with the final
    residual's scale frozen, dotted with the unembedding row of `tokens[p]` (-1: None); then the
    norm's and the head's bias as `ln_bias`. Double precision."""
    h = h_final.detach().double()
    if centred:
        sigma = torch.sqrt(h.var(dim=-1, unbiased=False) + eps)
    else:
        sigma = torch.sqrt((h * h).mean(dim=-1) + eps)
    gamma = norm_weight.detach().double() + (1.0 if plus_one else 0.0)
    valid = [t for t in tokens if t >= 0]
    if not valid:
        return [[None] * len(tokens) for _ in range(len(comps) + 1)]
    index = torch.tensor([max(t, 0) for t in tokens])
    w_u = w_u.detach()
    rows = w_u.double()[index] * gamma  # [pos, d]
    out = []
    for o in comps:
        x = o.detach().double()
        if centred:
            x = x - x.mean(dim=-1, keepdim=True)
        terms = (x * rows).sum(dim=-1) / sigma
        out.append([float(v) if t >= 0 else None for v, t in zip(terms, tokens)])
    bias = torch.zeros(len(tokens), dtype=torch.float64)
    if norm_bias is not None:
        bias = bias + (w_u.double()[index] * norm_bias.double()).sum(dim=-1)
    if b_u is not None:
        bias = bias + b_u.double()[index]
    out.append([float(v) if t >= 0 else None for v, t in zip(bias, tokens)])
    return out


class NdifStatus:
    """nnsight's remote status display, replaced: each NDIF job state becomes a status message."""

    enabled = False
    verbose = False

    def __init__(self):
        self.last = None

    def update(self, response):
        state = getattr(response.status, "value", str(response.status)).lower()
        if state == "error" or state == self.last:
            return
        self.last = state
        text = "NDIF: " + state
        if response.description and state == "log":
            text += ": " + str(response.description)[:200]
        say({"type": "status", "message": text})

    def refresh(self):
        pass


def remote_backend(nnsight, model):
    """A backend for NDIF whose job states reach the app, or None (then `remote=True`)."""
    try:
        from nnsight.intervention.backends.remote import RemoteBackend
        backend = RemoteBackend(model.to_model_key(), env=model._remoteable_get_env())
    except Exception:  # noqa: BLE001 - another nnsight: its own remote path, without our states
        return None
    backend.display = NdifStatus()
    return backend


class Loaded:
    """A model loaded for requests naming (model, remote, dtype)."""

    def __init__(self, request, torch, nnsight):
        dtype = getattr(torch, request.get("dtype", "float32"))
        remote = bool(request.get("remote", False))
        self.key = (request["model"], remote, request.get("dtype", "float32"))
        say({"type": "status", "message": "loading " + request["model"]})
        try:
            # nnsight 0.8: TransformersModel (LanguageModel is deprecated there); older: LanguageModel.
            if hasattr(nnsight, "TransformersModel"):
                make = lambda **kw: nnsight.TransformersModel(request["model"], task="text-generation", **kw)  # noqa: E731
            else:
                make = lambda **kw: nnsight.LanguageModel(request["model"], **kw)  # noqa: E731
            # The skeleton nnsight builds for NDIF has no path to guess the tokenizer from.
            try:
                model = make(tokenizer=request["model"]) if remote else make(device_map="cpu", dispatch=True, dtype=dtype)
            except Exception:
                # A folder whose tokenizer transformers cannot build from it alone (CTRL's slow
                # tokenizer wants vocab files): the ids come from the app, so its tokenizer.json
                # is all nnsight needs.
                import os
                from transformers import PreTrainedTokenizerFast
                file = os.path.join(request["model"], "tokenizer.json")
                if remote or not os.path.isfile(file):
                    raise
                model = make(device_map="cpu", dispatch=True, dtype=dtype, tokenizer=PreTrainedTokenizerFast(tokenizer_file=file))
        except Exception as e:  # noqa: BLE001 - every loading failure becomes a clear message
            fail("model", f"nnsight could not load {request['model']}: {e}")
        self.model = model
        hf = getattr(model, "_module", None) or getattr(model, "_model")
        config = hf.config
        tc = getattr(config, "text_config", None) or config
        self.tc = tc
        self.n_layers = int(tc.num_hidden_layers)
        self.d_vocab = int(tc.vocab_size)
        self.norm_path = next((p for p in FINAL_NORMS if attr_path(hf, p) is not None), None)
        if self.norm_path is None:
            fail("model", f"no final norm found in {type(hf).__name__} (looked for {', '.join(FINAL_NORMS)})")
        norm_module = attr_path(hf, self.norm_path)
        self.centred = isinstance(norm_module, torch.nn.LayerNorm)
        self.eps = float(next((getattr(norm_module, a) for a in ("eps", "variance_epsilon") if hasattr(norm_module, a)), 1e-5))
        self.family = str(tc.model_type)
        # Gemma's RMSNorms scale by 1 + weight.
        self.plus_one = self.family.startswith("gemma")
        self.cap = getattr(tc, "final_logit_softcapping", None)
        self.parallel = self.family == "gptj" or bool(getattr(tc, "use_parallel_residual", False))
        self.layers_path = next((p for p in LAYERS if attr_path(hf, p) is not None), None)
        attn_names = [a for a in ATTENTION_OUTPUTS if not (a == "post_attention_layernorm" and self.family in PRE_MLP_NORM_FAMILIES)]
        self.attn_name = None
        if self.layers_path is not None:
            first = attr_path(hf, self.layers_path)[0]
            self.attn_name = next((a for a in attn_names if hasattr(first, a)), None)
        self.head_path = "lm_head" if attr_path(hf, "lm_head") is not None else "embed_out"
        self.remote = remote


def run(torch, nnsight, m, request):
    """One request on the loaded model `m`: the result message."""
    ids = request["ids"]
    targets = request["targets"]
    k = int(request.get("k", 10))
    if not ids or len(targets) != len(ids):
        fail("input", "the request needs token ids and one target list per position")
    tc = m.tc
    if len(ids) > int(getattr(tc, "max_position_embeddings", 1 << 30)):
        fail("input", f"the prompt has {len(ids)} tokens; the model's context is {tc.max_position_embeddings}")
    subblocks = bool(request.get("subblocks", False))
    want_dla = bool(request.get("attribution", False))
    note = None
    if (subblocks or want_dla) and (m.layers_path is None or m.attn_name is None):
        why = f"no blocks or attention output found in the {m.family} model's modules"
        if subblocks:
            fail("model", why + ": sub-block rows are not available")
        note, want_dla = "no attribution: " + why, False
    read_attn = subblocks or want_dla
    model = m.model
    say({"type": "status", "message": "tracing" + (" on NDIF" if m.remote else "")})
    # The trace's body is shipped to NDIF with what it names, so it names plain values only
    # (never `m`, whose class would carry this module's stdout along).
    norm = attr_path(model, m.norm_path)
    head = attr_path(model, m.head_path)
    blocks = attr_path(model, m.layers_path) if read_attn else None
    cap, n_layers, attn_name = m.cap, m.n_layers, m.attn_name
    eps, centred, plus_one = m.eps, m.centred, m.plus_one
    input_ids = torch.tensor([ids])
    next_ids = [int(t[0]) if t else -1 for t in targets]
    kwargs = {"output_hidden_states": True}
    backend = remote_backend(nnsight, model) if m.remote else None
    if backend is not None:
        kwargs["backend"] = backend
    elif m.remote:
        kwargs["remote"] = True
    try:
        with torch.no_grad(), model.trace(input_ids, **kwargs):
            # Module outputs are read in the order the model runs them, the hidden states last.
            attn_outs = []
            last_out = None
            if read_attn:
                for i, block in enumerate(blocks):
                    out = getattr(block, attn_name).output
                    a = out[0] if isinstance(out, tuple) else out
                    attn_outs.append(a[0] if a.dim() == 3 else a)
                    if want_dla and i == n_layers - 1:
                        bo = block.output
                        last_out = (bo[0] if isinstance(bo, tuple) else bo)[0]
            hidden = model.output.hidden_states

            def decode(h):
                x = head(norm(h)).float()
                return torch.tanh(x / cap) * cap if cap else x

            logits_list = [decode(hidden[0][0])]
            for s in range(n_layers):
                if subblocks:
                    logits_list.append(decode(hidden[s][0] + attn_outs[s]))
                logits_list.append(decode(hidden[s + 1][0]) if s + 1 < n_layers else model.output.logits[0].float())
            rows = nnsight.save(reduce_rows(torch, logits_list, targets, k))
            dla = None
            if want_dla:
                posts = [hidden[s + 1][0] for s in range(n_layers - 1)] + [last_out]
                comps = [hidden[0][0]]
                for s in range(n_layers):
                    comps.append(attn_outs[s])
                    comps.append(posts[s] - hidden[s][0] - attn_outs[s])
                top1 = [int(t) for t in logits_list[-1].argmax(dim=-1)]
                w_u = head.weight
                b_u = getattr(head, "bias", None)
                nw, nb = norm.weight, getattr(norm, "bias", None)
                args = (torch, comps, last_out, nw, nb, eps, centred, plus_one, w_u, b_u)
                dla = {"final_top1": dla_terms(*args, top1), "next": dla_terms(*args, next_ids), "final_top1_ids": top1}
            dla = nnsight.save(dla)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        if m.remote:
            fail("remote", remote_message(e))
        fail("model", f"the trace failed: {type(e).__name__}: {e}")
    for row in rows:
        for v in row[:4]:
            if not math.isfinite(v):
                fail("model", "the model produced NaN or infinite values")
    attribution = None
    if dla is not None:
        names = ["embed"] + [f"{s}.{c}" for s in range(n_layers) for c in ("attn", "mlp")] + ["ln_bias"]
        attribution = {"components": names, "final_top1": dla["final_top1"], "next": dla["next"], "final_top1_ids": dla["final_top1_ids"]}
    result = {
        "type": "result",
        "protocol": PROTOCOL,
        "n_layers": n_layers,
        "d_model": int(tc.hidden_size),
        "d_vocab": m.d_vocab,
        "family": m.family,
        "n_ctx": int(getattr(tc, "max_position_embeddings", 0) or 0),
        "where": "remote" if m.remote else "local",
        "parallel": m.parallel,
        "rows": rows,
        "attribution": attribution,
    }
    if note:
        result["attribution_note"] = note
    return result


def main():
    sys.stdout = sys.stderr
    loaded = None
    torch = nnsight = None
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as e:
            fail("input", f"the request is not JSON: {e}")
        if request.get("protocol") != PROTOCOL:
            fail("input", f"this engine speaks protocol {PROTOCOL}, the app sent {request.get('protocol')}: reinstall logit-lens")
        if nnsight is None:
            try:
                import torch
                import nnsight
            except ImportError as e:
                fail("no_nnsight", f"{e}: install it into this Python with  {sys.executable} -m pip install nnsight")
        if request.get("remote") and not remote_key(nnsight):
            fail("remote", "NDIF needs an API key: set NDIF_API_KEY (get one at https://login.ndif.us)")
        key = (request["model"], bool(request.get("remote", False)), request.get("dtype", "float32"))
        if loaded is None or loaded.key != key:
            loaded = None
            loaded = Loaded(request, torch, nnsight)
        if request.get("describe"):
            tc = loaded.tc
            say({"type": "model", "protocol": PROTOCOL, "n_layers": loaded.n_layers, "d_model": int(tc.hidden_size), "d_vocab": loaded.d_vocab,
                 "family": loaded.family, "n_ctx": int(getattr(tc, "max_position_embeddings", 0) or 0)})
            continue
        say(run(torch, nnsight, loaded, request))


def remote_key(nnsight):
    """The NDIF key nnsight will send (NDIF_API_KEY or its config), or None."""
    try:
        from nnsight import CONFIG
        return CONFIG.API.APIKEY or None
    except Exception:  # noqa: BLE001 - an nnsight without CONFIG: let NDIF answer
        import os
        return os.environ.get("NDIF_API_KEY") or "unknown"


if __name__ == "__main__":
    main()
