"""Writes a random Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json) of a
real model's shape, without transformers: `python3 make_ckpt.py SHAPE OUT_DIR TOKENIZER_JSON
[--dtype f16|bf16|f32] [--seed N]`.

The safetensors file is written by hand (8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}} padded with spaces to a multiple of 8, then the raw
little-endian tensors in header order), one tensor at a time. Random values come from torch when
it is importable (on the GPU when there is one: seconds for GPT-2-XL), else numpy, else (tiny
shapes only) Python's `random`.

Shapes: gpt2, gpt2-xl, llama-3.2-1b (the real shapes; vocabulary 50257 / 128256); gpt2-tiny,
llama-tiny (a few MB, for testing this script). Values: weights N(0, (0.5/sqrt(fan_in))^2),
embeddings N(0, 0.1^2) (GPT-2: also the positions), norm weights N(1, 0.2^2), biases
N(0, 0.1^2) -- the scales of tests/src/fixture.rs, so the lens has something to find.
The tokenizer is copied as given: the model's vocabulary may be larger than the tokenizer's
(a GPT-2 tokenizer for the Llama shape: ids stay below d_vocab, which is all a bundle checks).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

SHAPES = {
    # name: (family, n_layers, d_model, n_heads, n_kv_heads, d_mlp, vocab, n_ctx)
    "gpt2": ("gpt2", 12, 768, 12, 12, 3072, 50257, 1024),
    "gpt2-xl": ("gpt2", 48, 1600, 25, 25, 6400, 50257, 1024),
    "gpt2-tiny": ("gpt2", 2, 64, 4, 4, 256, 50257, 1024),
    "llama-3.2-1b": ("llama", 16, 2048, 32, 8, 8192, 128256, 131072),
    "llama-tiny": ("llama", 2, 64, 4, 2, 128, 128256, 131072),
}

DTYPES = {"f16": ("F16", 2, "float16"), "bf16": ("BF16", 2, "bfloat16"), "f32": ("F32", 4, "float32")}


def gpt2_config(s, torch_dtype):
    _, n_layer, d, n_head, _, _, vocab, n_ctx = s
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
        "n_positions": n_ctx, "n_ctx": n_ctx, "n_embd": d, "n_layer": n_layer, "n_head": n_head,
        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "bos_token_id": 50256, "eos_token_id": 50256, "scale_attn_weights": True,
        "tie_word_embeddings": True, "torch_dtype": torch_dtype,
    }


def llama_config(s, torch_dtype):
    _, n_layer, d, n_head, n_kv, d_mlp, vocab, n_ctx = s
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d,
        "intermediate_size": d_mlp, "num_hidden_layers": n_layer, "num_attention_heads": n_head,
        "num_key_value_heads": n_kv, "head_dim": d // n_head, "vocab_size": vocab,
        "max_position_embeddings": n_ctx, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "torch_dtype": torch_dtype,
    }


def plan(s):
    """[(name, shape, mean, std)] in file order."""
    fam, n_layer, d, n_head, n_kv, d_mlp, vocab, n_ctx = s
    w = lambda fan_in: 0.5 / math.sqrt(fan_in)  # noqa: E731
    out = []
    if fam == "gpt2":
        t = "transformer."
        out.append((t + "wte.weight", [vocab, d], 0.0, 0.1))
        out.append((t + "wpe.weight", [n_ctx, d], 0.0, 0.1))
        for l in range(n_layer):
            h = f"{t}h.{l}."
            out += [
                (h + "ln_1.weight", [d], 1.0, 0.2), (h + "ln_1.bias", [d], 0.0, 0.1),
                (h + "attn.c_attn.weight", [d, 3 * d], 0.0, w(d)), (h + "attn.c_attn.bias", [3 * d], 0.0, 0.1),
                (h + "attn.c_proj.weight", [d, d], 0.0, w(d)), (h + "attn.c_proj.bias", [d], 0.0, 0.1),
                (h + "ln_2.weight", [d], 1.0, 0.2), (h + "ln_2.bias", [d], 0.0, 0.1),
                (h + "mlp.c_fc.weight", [d, d_mlp], 0.0, w(d)), (h + "mlp.c_fc.bias", [d_mlp], 0.0, 0.1),
                (h + "mlp.c_proj.weight", [d_mlp, d], 0.0, w(d_mlp)), (h + "mlp.c_proj.bias", [d], 0.0, 0.1),
            ]
        out += [(t + "ln_f.weight", [d], 1.0, 0.2), (t + "ln_f.bias", [d], 0.0, 0.1)]
    else:
        dh = d // n_head
        t = "model."
        out.append((t + "embed_tokens.weight", [vocab, d], 0.0, 0.1))
        for l in range(n_layer):
            h = f"{t}layers.{l}."
            out += [
                (h + "input_layernorm.weight", [d], 1.0, 0.2),
                (h + "self_attn.q_proj.weight", [n_head * dh, d], 0.0, w(d)),
                (h + "self_attn.k_proj.weight", [n_kv * dh, d], 0.0, w(d)),
                (h + "self_attn.v_proj.weight", [n_kv * dh, d], 0.0, w(d)),
                (h + "self_attn.o_proj.weight", [d, n_head * dh], 0.0, w(n_head * dh)),
                (h + "post_attention_layernorm.weight", [d], 1.0, 0.2),
                (h + "mlp.gate_proj.weight", [d_mlp, d], 0.0, w(d)),
                (h + "mlp.up_proj.weight", [d_mlp, d], 0.0, w(d)),
                (h + "mlp.down_proj.weight", [d, d_mlp], 0.0, w(d_mlp)),
            ]
        out.append((t + "norm.weight", [d], 1.0, 0.2))
    return out


class Gen:
    """Random tensors as little-endian bytes of the target dtype."""

    def __init__(self, dtype, seed):
        self.dtype = dtype
        self.backend = None
        force = os.environ.get("MAKE_CKPT_BACKEND", "")  # numpy / python: skip torch (or numpy)
        try:
            if force in ("numpy", "python"):
                raise ImportError(force)
            import torch
            self.torch = torch
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self.g = torch.Generator(device=self.device)
            self.g.manual_seed(seed)
            self.backend = f"torch ({self.device})"
            return
        except ImportError:
            pass
        try:
            if force == "python":
                raise ImportError(force)
            import numpy as np
            self.np = np
            self.rng = np.random.default_rng(seed)
            self.backend = "numpy"
            return
        except ImportError:
            pass
        import random
        self.rnd = random.Random(seed)
        self.backend = "python"

    def tensor(self, n, mean, std):
        if self.backend.startswith("torch"):
            torch = self.torch
            td = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[self.dtype]
            t = torch.randn(n, generator=self.g, device=self.device, dtype=torch.float32)
            t = (t * std + mean).to(td)
            # bytes via a same-size integer view (numpy has no bfloat16)
            iv = {"f16": torch.int16, "bf16": torch.int16, "f32": torch.int32}[self.dtype]
            return t.view(iv).cpu().numpy().tobytes()
        if self.backend == "numpy":
            np = self.np
            x = self.rng.standard_normal(n, dtype=np.float32)
            x *= np.float32(std)
            x += np.float32(mean)
            if self.dtype == "f32":
                return x.astype("<f4").tobytes()
            if self.dtype == "f16":
                return x.astype("<f2").tobytes()
            u = x.view(np.uint32)
            r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")
            return r.tobytes()
        if n > 20_000_000:
            sys.exit("neither torch nor numpy is installed: only tiny shapes can be made")
        vals = [self.rnd.gauss(mean, std) for _ in range(n)]
        if self.dtype == "f32":
            return struct.pack(f"<{n}f", *vals)
        if self.dtype == "f16":
            return struct.pack(f"<{n}e", *vals)
        raw = struct.pack(f"<{n}f", *vals)
        out = bytearray()
        for (u,) in struct.iter_unpack("<I", raw):
            out += struct.pack("<H", ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF)
        return bytes(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("tokenizer")
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: f16 for GPT-2, bf16 for Llama")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s = SHAPES[a.shape]
    dtype = a.dtype or ("f16" if s[0] == "gpt2" else "bf16")
    st_name, esize, torch_dtype = DTYPES[dtype]
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    cfg = gpt2_config(s, torch_dtype) if s[0] == "gpt2" else llama_config(s, torch_dtype)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = plan(s)
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape, _m, _s in tensors:
        n = math.prod(shape) * esize
        header[name] = {"dtype": st_name, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    gen = Gen(dtype, a.seed)
    tmp = os.path.join(a.out, "model.safetensors.partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape, mean, std in tensors:
            data = gen.tensor(math.prod(shape), mean, std)
            assert len(data) == math.prod(shape) * esize, name
            f.write(data)
    os.replace(tmp, os.path.join(a.out, "model.safetensors"))
    with open(a.tokenizer, "rb") as src, open(os.path.join(a.out, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    params = sum(math.prod(sh) for _n, sh, _m, _s in tensors)
    print(f"wrote {a.out}: {a.shape}, {params / 1e6:.1f} M parameters, {dtype}, {off / 1e9:.2f} GB, "
          f"{gen.backend}, {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
