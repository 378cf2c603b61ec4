"""Writes a random Hugging Face checkpoint of a real model's shape (bf16 safetensors + a real
tokenizer.json) for benchmarks: `python bench/make_random_hf.py qwen2-0.5b OUT TOKENIZER_JSON`.

Shapes: qwen2-0.5b (24 layers, d_model 896, 14/2 heads, d_mlp 4864, vocab 151936, tied),
llama-3.2-1b (16 layers, d_model 2048, 32/8 heads, d_mlp 8192, vocab 128256, tied),
gemma3-1b (26 layers, d_model 1152, 4/1 heads of 256, d_mlp 6912, vocab 262144, sliding window 512 on
five of every six layers, tied)."""
import shutil
import sys

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    "qwen2-0.5b": (Qwen2Config, Qwen2ForCausalLM, dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                                                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "llama-3.2-1b": (LlamaConfig, LlamaForCausalLM, dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                                                         rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)),
    "gemma3-1b": (Gemma3TextConfig, Gemma3ForCausalLM, dict(vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                                                           num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=32768,
                                                           sliding_window=512, query_pre_attn_scalar=256, rms_norm_eps=1e-6, tie_word_embeddings=True)),
}

name, out, tok = sys.argv[1], sys.argv[2], sys.argv[3]
cfg_cls, model_cls, kw = SHAPES[name]
torch.manual_seed(0)
model = model_cls(cfg_cls(**kw)).to(torch.bfloat16)
model.save_pretrained(out)
shutil.copy(tok, f"{out}/tokenizer.json")
print("wrote", out, sum(p.numel() for p in model.parameters()), "parameters")
