"""A plain-PyTorch GPT-2 whose parameter names and layouts are exactly Hugging Face GPT2LMHeadModel's
(Conv1D weights are [in, out]; tied embeddings, no lm_head; learned positions; gelu_new; LayerNorm eps 1e-5)."""
import json, math
import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv1D(nn.Module):
    """HF Conv1D: y = x @ weight + bias, weight is [in, out]."""
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class Attention(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = Conv1D(d, 3 * d)
        self.c_proj = Conv1D(d, d)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=-1)
        h = self.n_head
        q = q.view(B, T, h, D // h).transpose(1, 2)
        k = k.view(B, T, h, D // h).transpose(1, 2)
        v = v.view(B, T, h, D // h).transpose(1, 2)
        # causal softmax attention, scale 1/sqrt(d_head)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.c_fc = Conv1D(d, 4 * d)
        self.c_proj = Conv1D(4 * d, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # gelu_new


class Block(nn.Module):
    def __init__(self, d, n_head, eps, pdrop=0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, n_head)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(d)
        self.pdrop = pdrop  # residual dropout (HF resid_pdrop), training only; no parameters

    def forward(self, x):
        p = self.pdrop if self.training else 0.0
        x = x + F.dropout(self.attn(self.ln_1(x)), p, self.training)
        return x + F.dropout(self.mlp(self.ln_2(x)), p, self.training)


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["n_embd"]
        self.wte = nn.Embedding(cfg["vocab_size"], d)
        self.wpe = nn.Embedding(cfg["n_positions"], d)
        self.h = nn.ModuleList([Block(d, cfg["n_head"], cfg["layer_norm_epsilon"], cfg.get("resid_pdrop", 0.0) or 0.0)
                                for _ in range(cfg["n_layer"])])
        self.pdrop = cfg.get("embd_pdrop", 0.0) or 0.0
        self.ln_f = nn.LayerNorm(d, eps=cfg["layer_norm_epsilon"])


class GPT2LMHeadModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = Transformer(cfg)

    def init_weights(self, seed):
        g = torch.Generator().manual_seed(seed)
        n_layer = self.cfg["n_layer"]
        for name, p in self.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                std = 0.02
                if name.endswith("c_proj.weight"):
                    std = 0.02 / math.sqrt(2 * n_layer)
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    def hidden(self, idx):
        t = self.transformer
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = t.wte(idx) + t.wpe(pos)
        if self.training and t.pdrop > 0:
            x = F.dropout(x, t.pdrop, True)
        for b in t.h:
            x = b(x)
        return t.ln_f(x)

    def forward(self, idx):
        """Full-vocab logits [B, T, vocab] (tied unembedding)."""
        return self.hidden(idx) @ self.transformer.wte.weight.t()


def hf_config(n_layer, n_embd, n_head, n_ctx, pdrop=0.0):
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257,
        "n_positions": n_ctx, "n_ctx": n_ctx, "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head,
        "n_inner": None, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
        "resid_pdrop": pdrop, "embd_pdrop": pdrop, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "bos_token_id": 50256, "eos_token_id": 50256,
        "tie_word_embeddings": True, "torch_dtype": "float16",
    }


def load_shipped(model_dir, dtype=torch.float32):
    """Load config.json + model.safetensors (fp16) back into fp32 (what the evaluation uses)."""
    from safetensors.torch import load_file
    cfg = json.load(open(f"{model_dir}/config.json"))
    m = GPT2LMHeadModel(cfg)
    sd = {k: v.to(dtype) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    missing, unexpected = m.load_state_dict(sd, strict=True), None
    return m.eval()
