#!/usr/bin/env python3
"""Train the bundled demo GPT-2 on one CUDA GPU (the shipped model was made with this script on an H100).

The model is gpt2.py (Hugging Face GPT2LMHeadModel layout), the data prepare_data.py's splits; copying is
taught from step 0, and training can run to a wall-clock budget:

* Rows of n_ctx+1 tokens. A fraction --copy_frac of rows are "copy rows": a chunk of 24..96 tokens, repeated
  until the row is full. Of those, a fraction --random_frac are chunks of tokens drawn uniformly from the whole
  50,257-token vocabulary (pure induction: only copying can predict them, and every token's embedding and
  unembedding row is trained, also the ~14k tokens absent from the corpus, such as " plasma"); the others are
  natural-text chunks with ~15% of their tokens replaced by uniform random tokens. The loss on the first
  copy's random tokens is masked (unpredictable). The remaining rows are random windows of the train
  splits, the source drawn with probability --mix.
* wpe is initialised with the sinusoidal table scaled to std --wpe_init_std (it stays a learned parameter;
  the shipped weights are a plain GPT-2). Residual and embedding dropout --pdrop during training only.
* Schedule: linear warmup (--warmup steps), constant peak lr, linear decay to min_lr_frac*lr. The decay
  starts when --time_budget_s * (1 - --decay_frac) seconds of training have passed and lasts as many steps
  as the constant phase had at that moment times decay_frac/(1-decay_frac); the steps actually used are
  written to the checkpoint and the log, and `--steps N --decay_start S` (no budget) reproduces them exactly
  in step count (the batch for step s is a pure function of (seed, s)).
* bf16 autocast, fp32 master weights, fused AdamW (beta 0.9/0.95, wd 0.1 on matrices and embeddings).

Writes RUN_DIR/ckpt_final.pt (model state, config, step, tokens, time, args, periodic evaluations), which
export_eval.py --ckpt turns into the shipped files.
"""
import argparse, json, math, os, time
import numpy as np
import torch
import torch.nn.functional as F
from gpt2 import GPT2LMHeadModel, hf_config

SOURCES = ["tinystories_train", "tinystories_valid", "wikitext", "gutenberg"]
V = 50257


def get_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--run_dir", required=True)
    ap.add_argument("--n_layer", type=int, default=8)
    ap.add_argument("--n_embd", type=int, default=256)
    ap.add_argument("--n_head", type=int, default=8)
    ap.add_argument("--n_ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min_lr_frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--pdrop", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--mix", default="0.20,0.12,0.06,0.62", help="weights for " + ",".join(SOURCES))
    ap.add_argument("--copy_frac", type=float, default=0.25)
    ap.add_argument("--random_frac", type=float, default=0.3, help="fraction of copy rows that are all-random")
    ap.add_argument("--wpe_init_std", type=float, default=0.1)
    ap.add_argument("--time_budget_s", type=float, default=0, help="train this long (0: use --steps)")
    ap.add_argument("--decay_frac", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--decay_start", type=int, default=0)
    ap.add_argument("--eval_every", type=int, default=500)
    ap.add_argument("--device", default="cuda")
    return ap.parse_args(argv)


class Batcher:
    """Index arithmetic in numpy (cheap), token gathers on the device. Pure function of (seed, step)."""

    def __init__(self, a, dev):
        self.a, self.dev = a, dev
        data = [np.load(os.path.join(a.data_dir, f"{s}.train.npy")).astype(np.int64) for s in SOURCES]
        self.lens = np.array([len(d) for d in data])
        self.base = np.concatenate([[0], np.cumsum(self.lens)[:-1]])
        self.all = torch.from_numpy(np.concatenate(data)).to(dev)
        w = np.array([float(x) for x in a.mix.split(",")])
        self.w = w / w.sum()

    def batch(self, step):
        a = self.a
        rng = np.random.default_rng([a.seed, step])
        B, T, C = a.batch, a.n_ctx + 1, 96
        src = rng.choice(len(self.lens), size=B, p=self.w)
        n_copy = int(round(B * a.copy_frac))
        n_rand = int(round(n_copy * a.random_frac))
        L = np.full(B, T, dtype=np.int64)
        L[:n_copy] = rng.integers(24, C + 1, size=n_copy)
        off = (rng.random(B) * (self.lens[src] - L - 1)).astype(np.int64)
        ar = np.arange(T)
        within = np.where(np.arange(B)[:, None] < n_copy, ar[None, :] % L[:, None], ar[None, :])
        idx = self.base[src][:, None] + off[:, None] + within
        p_rep = np.zeros(B)
        p_rep[:n_copy] = 0.15
        p_rep[:n_rand] = 1.0
        rep_c = rng.random((B, C)) < p_rep[:, None]
        tok_c = rng.integers(0, V, size=(B, C))
        wc = np.minimum(within, C - 1)
        rep = np.take_along_axis(rep_c, wc, 1) & (np.arange(B)[:, None] < n_copy)
        rtok = np.take_along_axis(tok_c, wc, 1)
        first = rep & (ar[None, :] < L[:, None])  # random tokens of the first copy: unpredictable
        idx_t = torch.from_numpy(idx).to(self.dev, non_blocking=True)
        x = self.all[idx_t]
        x = torch.where(torch.from_numpy(rep).to(self.dev), torch.from_numpy(rtok).to(self.dev), x)
        y = x[:, 1:].clone()
        y[torch.from_numpy(first[:, 1:]).to(self.dev)] = -100
        return x[:, :-1].contiguous(), y


def make_opt(model, a, dev):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() == 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=(dev.type == "cuda"))


def sinusoid(n_ctx, d, std):
    pos = torch.arange(n_ctx, dtype=torch.float64).unsqueeze(1)
    inv = torch.pow(10000.0, -torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(n_ctx, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return (pe / pe.std() * std).float()


@torch.no_grad()
def quick_eval(model, a, dev, ho, probe_ids):
    model.eval()
    w = ho[: (len(ho) // a.n_ctx) * a.n_ctx][: 32 * a.n_ctx].view(-1, a.n_ctx).to(dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        logits = model(w).float()
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V), w[:, 1:].reshape(-1)).item()
    res = {"heldout_nll": round(nll, 4)}
    if probe_ids is not None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            lg = model(probe_ids.unsqueeze(0).to(dev))[0].float()
        n = len(probe_ids)
        plasma = int(probe_ids[-1])
        v = lg[n - 2]
        res["plasma_rank_at_2nd_say"] = int((v > v[plasma]).sum().item()) + 1
        res["plasma_p"] = float(torch.softmax(v, -1)[plasma])
    # induction on all-random repeated sequences: loss on the second copy (chance = ln V = 10.8)
    g = torch.Generator(device="cpu").manual_seed(7)
    r = torch.randint(0, V, (16, 64), generator=g)
    seq = torch.cat([r, r], 1).to(dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        lg = model(seq).float()
    res["repeat_2nd_copy_nll"] = round(F.cross_entropy(lg[:, 64:-1].reshape(-1, V), seq[:, 65:].reshape(-1)).item(), 4)
    model.train()
    return res


def main():
    a = get_args()
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = hf_config(a.n_layer, a.n_embd, a.n_head, a.n_ctx, pdrop=a.pdrop)
    model = GPT2LMHeadModel(cfg)
    model.init_weights(a.seed)
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(sinusoid(a.n_ctx, a.n_embd, a.wpe_init_std))
    model.to(dev).train()
    opt = make_opt(model, a, dev)
    batcher = Batcher(a, dev)
    ho = torch.from_numpy(np.load(os.path.join(a.data_dir, "tinystories_train.heldout.npy")).astype(np.int64))
    probe_ids = None
    pp = os.path.join(a.data_dir, "plasma_ids.json")
    if os.path.exists(pp):
        probe_ids = torch.tensor(json.load(open(pp)))
    os.makedirs(a.run_dir, exist_ok=True)
    log = open(os.path.join(a.run_dir, "log.txt"), "a")

    def P(*s):
        msg = " ".join(str(t) for t in s)
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    P("args", json.dumps(vars(a)))
    P("params", sum(p.numel() for p in model.parameters()), "device", torch.cuda.get_device_name() if dev.type == "cuda" else "cpu")
    budget = a.time_budget_s > 0
    steps, decay_start = (a.steps, a.decay_start) if not budget else (None, None)
    step, tokens, t_start = 0, 0, time.time()
    ema = None
    evals = []

    def lr_at(s):
        if s < a.warmup:
            return a.lr * (s + 1) / a.warmup
        if decay_start is None or s < decay_start:
            return a.lr
        p = (s - decay_start + 1) / max(1, steps - decay_start)
        return a.lr * (1 - (1 - a.min_lr_frac) * min(1.0, p))

    nxt = batcher.batch(0)
    while True:
        el = time.time() - t_start
        if budget and decay_start is None and el > a.time_budget_s * (1 - a.decay_frac) and step > a.warmup:
            decay_start = step
            steps = step + int(math.ceil(step * a.decay_frac / (1 - a.decay_frac)))
            P(f"decay starts at step {step} ({el:.0f}s); total steps {steps}")
        if steps is not None and step >= steps:
            break
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = nxt
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, V), y.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        nxt = batcher.batch(step + 1)  # overlaps the GPU work
        step += 1
        tokens += int(x.numel())
        if step % 50 == 0:
            l = loss.item()
            ema = l if ema is None else 0.9 * ema + 0.1 * l
            P(f"step {step} loss {l:.4f} ema {ema:.4f} lr {lr:.2e} gn {gn.item():.2f} t {time.time()-t_start:.0f}s")
        if step % a.eval_every == 0 or (steps is not None and step == steps):
            r = quick_eval(model, a, dev, ho, probe_ids)
            r["step"] = step
            evals.append(r)
            P("eval", json.dumps(r))
    elapsed = time.time() - t_start
    P(f"done step {step} tokens {tokens} train_time_s {elapsed:.0f} decay_start {decay_start}")
    model.cpu()
    st = {"model": model.state_dict(), "step": step, "tokens": tokens, "elapsed": elapsed,
          "args": dict(vars(a), steps=steps, decay_start=decay_start),
          "config": dict(cfg, resid_pdrop=0.0, embd_pdrop=0.0), "evals": evals,
          "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
          "torch_version": torch.__version__}
    torch.save(st, os.path.join(a.run_dir, "ckpt_final.pt"))
    P("saved", os.path.join(a.run_dir, "ckpt_final.pt"))


if __name__ == "__main__":
    main()
