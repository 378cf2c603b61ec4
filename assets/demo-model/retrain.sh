#!/usr/bin/env bash
# Reproduce the shipped demo model (CPU only; ~1 h of 2-core compute; resumable: just run it again).
# Requires: pip install torch numpy safetensors tokenizers   (tested: torch 2.15.0, tokenizers 0.23.3,
# safetensors 0.8.0, numpy 2.4.6, Python 3.11). Checkpoints go to RUN (outside the repo).
set -euo pipefail
cd "$(dirname "$0")"
DATA=${DATA:-/work/train-run/data}
RUN=${RUN:-/work/train-run/run}
python prepare_data.py --out "$DATA"   # tokenize + split; prints the inputs' sha256s (compare ../shared/corpus/SOURCES.md)
nice -n 15 python train.py --data_dir "$DATA" --run_dir "$RUN" \
  --n_layer 6 --n_embd 256 --n_head 8 --n_ctx 256 --batch 16 --steps 920 --decay_steps 150 --lr 2e-3 \
  --warmup 60 --seed 1234 --mix 0.18,0.14,0.10,0.58 --mix_sched 416:0.35/0.25/0.05/0.35 --copy_frac 0.125 \
  --copy_sched 279:0.25,374:0.375,548:0.5 --wpe_sinusoid_at 455 --wpe_sinusoid_std 0.1 --absent_noise_at 455 \
  --absent_noise_std 0.044 --bf16 1 --threads 2 --adaptive_threads 1
python export_eval.py --ckpt "$(ls "$RUN"/ckpt_*.pt | tail -1)" --data_dir "$DATA"
