"""Writes a random Hugging Face checkpoint of a real 7-9B model's exact shape, laid out as the hub
ships it: config.json, bf16 `model-0000N-of-0000M.safetensors` shards of at most ~5 GB (transformers'
default `max_shard_size`), `model.safetensors.index.json` and a tokenizer.json. numpy only (no torch).

    python bench/make_random_sharded.py OUT SHAPE [--tokenizer TOKENIZER_JSON] [--max-shard-size 5GB]
                                        [--seed S] [--dry-run]

Shapes: llama3-8b (Llama-3-8B), qwen2.5-7b (Qwen2.5-7B), gemma2-9b (Gemma-2-9B, bf16 as gemma-2-9b-it
ships it); for testing this script and bench/big_models.sh: tiny-llama, tiny-qwen2, tiny-gemma2 (the
same configs and vocabularies with 2 layers, d_model 64, 4/2 heads of 16).

Never the whole model in memory: every header is computed first (names, shapes, offsets), then each
tensor is generated and written in pieces of at most 16M values and freed. Values: float32 N(0, 1) ·
0.02 (transformers' `initializer_range`), rounded to bf16 (round to nearest even on the top 16 bits);
norm weights 1 + noise (Gemma: 0 + noise, since it stores w and multiplies by 1 + w); Qwen2's q/k/v
biases noise. Each tensor has its own seed (the global seed and its name), so a tensor's values do not
depend on the shard layout. `--dry-run` writes nothing: it prints every tensor's name, shape and shard,
each shard's header size and bytes, and the total, and checks the plan (offsets contiguous, every shard
within the limit but a lone oversized tensor, the index's weight map covering every tensor once).
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np

LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}

QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1",
    "use_cache": True,
    "use_mrope": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}

GEMMA2_9B = {
    "architectures": ["Gemma2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": 1,
    "final_logit_softcapping": 30.0,
    "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "num_attention_heads": 16,
    "num_hidden_layers": 42,
    "num_key_value_heads": 8,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "sliding_window_size": 4096,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.42.0.dev0",
    "use_cache": True,
    "vocab_size": 256000,
}

# Test shapes: the real configs (and vocabularies) with 2 layers of width 64.
TINY = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
TINY_LLAMA = dict(LLAMA3_8B, **TINY)
TINY_QWEN2 = dict(QWEN25_7B, **TINY, max_window_layers=2)
TINY_GEMMA2 = dict(GEMMA2_9B, **TINY, head_dim=16, query_pre_attn_scalar=16)

SHAPES = {"llama3-8b": LLAMA3_8B, "qwen2.5-7b": QWEN25_7B, "gemma2-9b": GEMMA2_9B, "tiny-llama": TINY_LLAMA, "tiny-qwen2": TINY_QWEN2,
          "tiny-gemma2": TINY_GEMMA2}

PIECE = 16 << 20  # values generated at once


def tensors(cfg):
    """(name, shape, kind) in transformers' state-dict order; kind: weight, norm or bias."""
    d, v, f = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // nh
    fam = cfg["model_type"]
    out = [("model.embed_tokens.weight", (v, d), "weight")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.append((p + "self_attn.q_proj.weight", (nh * hd, d), "weight"))
        if fam == "qwen2":
            out.append((p + "self_attn.q_proj.bias", (nh * hd,), "bias"))
        out.append((p + "self_attn.k_proj.weight", (nkv * hd, d), "weight"))
        if fam == "qwen2":
            out.append((p + "self_attn.k_proj.bias", (nkv * hd,), "bias"))
        out.append((p + "self_attn.v_proj.weight", (nkv * hd, d), "weight"))
        if fam == "qwen2":
            out.append((p + "self_attn.v_proj.bias", (nkv * hd,), "bias"))
        out.append((p + "self_attn.o_proj.weight", (d, nh * hd), "weight"))
        out.append((p + "mlp.gate_proj.weight", (f, d), "weight"))
        out.append((p + "mlp.up_proj.weight", (f, d), "weight"))
        out.append((p + "mlp.down_proj.weight", (d, f), "weight"))
        out.append((p + "input_layernorm.weight", (d,), "norm"))
        out.append((p + "post_attention_layernorm.weight", (d,), "norm"))
        if fam == "gemma2":
            out.append((p + "pre_feedforward_layernorm.weight", (d,), "norm"))
            out.append((p + "post_feedforward_layernorm.weight", (d,), "norm"))
    out.append(("model.norm.weight", (d,), "norm"))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, d), "weight"))
    return out


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def parse_size(s):
    s = s.strip().upper()
    for unit, mult in (("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def plan(cfg, max_shard):
    """Shards as transformers' `shard_checkpoint` fills them: in state-dict order, a new shard when the
    next tensor would pass max_shard (a tensor larger than the limit gets a shard of its own). Within a
    file the data follow the header's keys sorted by name (what the safetensors library writes)."""
    shards, cur, size = [], [], 0
    for name, shape, kind in tensors(cfg):
        nbytes = numel(shape) * 2
        if cur and size + nbytes > max_shard:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape, kind))
        size += nbytes
    if cur:
        shards.append(cur)
    files = []
    m = len(shards)
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{m:05d}.safetensors" if m > 1 else "model.safetensors"
        header, off, order = {"__metadata__": {"format": "pt"}}, 0, []
        for name, shape, kind in sorted(shard, key=lambda t: t[0]):
            nbytes = numel(shape) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nbytes]}
            order.append((name, shape, kind, off))
            off += nbytes
        hjson = json.dumps(header, separators=(",", ":")).encode()
        hjson += b" " * (-len(hjson) % 8)  # the safetensors library pads the header to 8 bytes
        files.append({"file": fname, "header": hjson, "tensors": order, "data_bytes": off})
    return files


def to_bf16(x):
    """float32 -> bf16 bits (uint16), round to nearest even (no NaN/inf here)."""
    u = x.view(np.uint32)
    u += ((u >> 16) & 1) + np.uint32(0x7FFF)
    return (u >> 16).astype(np.uint16)


def write_tensor(fh, name, shape, kind, cfg, seed):
    n = numel(shape)
    h = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(h)
    base = 0.0 if kind != "norm" or cfg["model_type"] == "gemma2" else 1.0
    done = 0
    while done < n:
        k = min(PIECE, n - done)
        x = rng.standard_normal(k, dtype=np.float32)
        x *= np.float32(0.02)
        if base:
            x += np.float32(base)
        fh.write(to_bf16(x).tobytes())
        done += k
        del x


def check(files, max_shard, cfg):
    seen = set()
    for f in files:
        off = 0
        for name, shape, _kind, o in f["tensors"]:
            assert o == off, (f["file"], name, "offsets not contiguous")
            off += numel(shape) * 2
            assert name not in seen, name
            seen.add(name)
        assert off == f["data_bytes"]
        assert f["data_bytes"] <= max_shard or len(f["tensors"]) == 1, (f["file"], "over the limit")
        hdr = json.loads(f["header"])
        assert set(hdr) - {"__metadata__"} == {t[0] for t in f["tensors"]}
    assert seen == {t[0] for t in tensors(cfg)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--tokenizer", help="a tokenizer.json to copy into OUT")
    ap.add_argument("--max-shard-size", default="5GB", help="as transformers' max_shard_size (5GB = 5e9 bytes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    a = ap.parse_args()
    cfg = SHAPES[a.shape]
    max_shard = parse_size(a.max_shard_size)
    files = plan(cfg, max_shard)
    check(files, max_shard, cfg)
    total = sum(f["data_bytes"] for f in files)
    n_params = total // 2
    if a.dry_run:
        for f in files:
            for name, shape, _kind, off in f["tensors"]:
                print(f"{f['file']}\t{name}\t{list(shape)}\toffset {off}")
        for f in files:
            print(f"# {f['file']}: {len(f['tensors'])} tensors, header {len(f['header'])} B, data {f['data_bytes']} B "
                  f"({f['data_bytes'] / 1e9:.2f} GB), file {8 + len(f['header']) + f['data_bytes']} B")
        print(f"# {a.shape}: {len(files)} shards, {sum(len(f['tensors']) for f in files)} tensors, {n_params} parameters, "
              f"total_size {total} B ({total / 1e9:.2f} GB bf16; f32 {4 * n_params / 1e9:.2f} GB)")
        return
    if not a.tokenizer:
        sys.exit("--tokenizer TOKENIZER_JSON is required (except with --dry-run)")
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(a.out)) or ".").free
    if free < total * 1.02:
        sys.exit(f"not enough disk: {total / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
    weight_map = {}
    for f in files:
        path = os.path.join(a.out, f["file"])
        with open(path + ".part", "wb") as fh:
            fh.write(len(f["header"]).to_bytes(8, "little"))
            fh.write(f["header"])
            for name, shape, kind, _off in f["tensors"]:
                write_tensor(fh, name, shape, kind, cfg, a.seed)
                weight_map[name] = f["file"]
        os.replace(path + ".part", path)
        print(f"wrote {f['file']} ({(8 + len(f['header']) + f['data_bytes']) / 1e9:.2f} GB)", flush=True)
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as fh:
            json.dump(index, fh, indent=2)
    print("wrote", a.out, n_params, "parameters")


if __name__ == "__main__":
    main()
