#!/usr/bin/env python3
"""Train the bundled demo GPT-2 on CPU. Resumable: re-running the same command continues from the latest
checkpoint in --run_dir (the batch for step s is a pure function of (seed, s), and every schedule below is
keyed by step, so a resumed run sees exactly the data and settings an uninterrupted run would; only
floating-point summation order can differ, e.g. with the thread count).

Data mixture (per training row of n_ctx+1 tokens, source drawn with probability --mix / --mix_sched):
random windows of the train splits made by prepare_data.py. A fraction (--copy_frac / --copy_sched) of rows
are "copy rows": a natural-text chunk of 24..96 tokens in which ~15% of the tokens are replaced by tokens
drawn uniformly from the whole 50257-token vocabulary, repeated until the row is full; the loss on the first
copy's replaced tokens is masked (they are unpredictable). They are there to teach in-context copying
(induction) of *any* token, including the ~14k GPT-2 tokens that never occur in the corpus (e.g. " plasma").

Loss: always the exact softmax over the full 50257-token vocabulary (tied unembedding); bf16 autocast for
the matmuls, fp32 master weights, AdamW. Schedule: linear warmup, constant, linear decay (see --decay_steps).
One-off interventions at fixed steps: --wpe_sinusoid_at, --absent_noise_at (see their help).
The exact command used for the shipped model is in retrain.sh.
"""
import argparse, json, math, os, time, glob
import numpy as np
import torch
import torch.nn.functional as F
from gpt2 import GPT2LMHeadModel, hf_config

SOURCES = ["tinystories_train", "tinystories_valid", "wikitext", "gutenberg"]


def get_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data_dir", default="/work/train-run/data")
    ap.add_argument("--run_dir", default="/work/train-run/run")
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_embd", type=int, default=256)
    ap.add_argument("--n_head", type=int, default=8)
    ap.add_argument("--n_ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min_lr_frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--decay_steps", type=int, default=300,
                    help="warmup-stable-decay schedule: linear warmup, constant peak lr, then a linear decay to "
                         "min_lr_frac*lr over the last decay_steps steps. Because the stable phase is constant, "
                         "--steps may be raised or lowered on resume as long as the decay has not started; the "
                         "result is then identical to a run started with the final --steps.")
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--mix", default="0.25,0.15,0.10,0.50", help="weights for " + ",".join(SOURCES))
    ap.add_argument("--mix_sched", default="",
                    help="piecewise-constant source mixture, 'STEP:w1/w2/w3/w4,...' (from STEP on; overrides --mix)")
    ap.add_argument("--wpe_sinusoid_at", type=int, default=-1,
                    help="at this step replace transformer.wpe by the standard sinusoidal table scaled to std "
                         "--wpe_sinusoid_std (and reset its Adam state); it stays a learned parameter. The random "
                         "0.02-std init left positions invisible next to the grown token embeddings.")
    ap.add_argument("--wpe_sinusoid_std", type=float, default=0.1)
    ap.add_argument("--absent_noise_at", type=int, default=-1,
                    help="at this step add N(0, absent_noise_std^2) noise (seeded) to the embedding rows of tokens "
                         "that never occur in the natural training text: under Adam those rows all drift along one "
                         "shared 'never predict me' direction and become identical, which makes them impossible to "
                         "copy in context; the noise makes them distinguishable again")
    ap.add_argument("--absent_noise_std", type=float, default=0.044)
    ap.add_argument("--copy_frac", type=float, default=0.125)
    ap.add_argument("--copy_sched", default="",
                    help="piecewise-constant copy-row fraction, 'STEP:FRAC,STEP:FRAC,...' (from STEP on; overrides "
                         "--copy_frac from the first listed STEP)")
    ap.add_argument("--bf16", type=int, default=1, help="bf16 autocast for matmuls (fp32 master weights)")
    ap.add_argument("--threads", type=int, default=2,
                    help="max torch threads; with --adaptive_threads the run switches between 1 and this many "
                         "threads, whichever is currently faster (the machine is shared with niced-over builds; "
                         "a 2-thread GEMM with one core taken stalls on the straggler). Does not change the math "
                         "beyond floating-point summation order.")
    ap.add_argument("--adaptive_threads", type=int, default=1)
    ap.add_argument("--ckpt_every_s", type=float, default=240)
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit (no checkpoints)")
    return ap.parse_args(argv)


class Batcher:
    def __init__(self, a):
        self.a = a
        self.data = [np.load(os.path.join(a.data_dir, f"{s}.train.npy")).astype(np.int64) for s in SOURCES]
        norm = lambda w: np.array(w, dtype=np.float64) / np.sum(w)
        self.w = norm([float(x) for x in a.mix.split(",")])
        self.sched = [(int(it.split(":")[0]), norm([float(x) for x in it.split(":")[1].split("/")]))
                      for it in filter(None, a.mix_sched.split(","))]

    def weights(self, step):
        w = self.w
        for s0, w0 in self.sched:
            if step >= s0:
                w = w0
        return w

    def batch(self, step):
        a = self.a
        rng = np.random.default_rng([a.seed, step])
        T = a.n_ctx + 1
        x = np.empty((a.batch, T), dtype=np.int64)
        mask = np.ones((a.batch, a.n_ctx), dtype=bool)
        frac = a.copy_frac
        for item in filter(None, a.copy_sched.split(",")):
            s0, f0 = item.split(":")
            if step >= int(s0):
                frac = float(f0)
        n_copy = int(round(a.batch * frac))
        for r in range(a.batch):
            src = self.data[rng.choice(len(self.data), p=self.weights(step))]
            if r < n_copy:
                L = int(rng.integers(24, 97))
                o = int(rng.integers(0, len(src) - L))
                chunk = src[o:o + L].copy()
                rep = rng.random(L) < 0.15
                chunk[rep] = rng.integers(0, 50257, size=int(rep.sum()))
                row = np.tile(chunk, T // L + 1)[:T]
                x[r] = row
                # target at position i is row[i+1]; mask replaced tokens of the first copy
                first = np.zeros(T, dtype=bool)
                first[:L] = rep
                mask[r] = ~first[1:]
            else:
                o = int(rng.integers(0, len(src) - T))
                x[r] = src[o:o + T]
        x = torch.from_numpy(x)
        y = x[:, 1:].clone()
        y[~torch.from_numpy(mask)] = -100
        return x[:, :-1].contiguous(), y


def lr_at(a, step):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    d0 = a.steps - a.decay_steps
    if step < d0:
        return a.lr
    p = (step - d0 + 1) / a.decay_steps
    return a.lr * (1 - (1 - a.min_lr_frac) * min(1.0, p))


def make_opt(model, a):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() == 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=a.lr, betas=(0.9, 0.95), eps=1e-8)


def loss_fn(model, x, y, bf16):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
        logits = model(x)
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1), ignore_index=-100)


def latest_ckpt(run_dir):
    c = sorted(glob.glob(os.path.join(run_dir, "ckpt_*.pt")))
    return c[-1] if c else None


def main():
    a = get_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = hf_config(a.n_layer, a.n_embd, a.n_head, a.n_ctx)
    model = GPT2LMHeadModel(cfg)
    model.init_weights(a.seed)
    opt = make_opt(model, a)
    batcher = Batcher(a)
    os.makedirs(a.run_dir, exist_ok=True)
    log = open(os.path.join(a.run_dir, "log.txt"), "a")

    def P(*s):
        msg = " ".join(str(t) for t in s)
        print(msg, flush=True)
        log.write(msg + "\n"); log.flush()

    step, tokens, elapsed = 0, 0, 0.0
    ck = latest_ckpt(a.run_dir) if not a.bench else None
    if ck:
        st = torch.load(ck, weights_only=False)
        model.load_state_dict(st["model"]); opt.load_state_dict(st["opt"])
        step, tokens, elapsed = st["step"], st["tokens"], st["elapsed"]
        P(f"resumed from {ck} at step {step}; args now {json.dumps(vars(a))}")
        assert step <= a.steps - a.decay_steps or (st["args"]["steps"], st["args"]["decay_steps"]) == (a.steps, a.decay_steps), \
            "cannot change --steps/--decay_steps once the decay phase has begun"
    else:
        P("args", json.dumps(vars(a)))
        P("params", sum(p.numel() for p in model.parameters()))

    def save(final=False):
        path = os.path.join(a.run_dir, f"ckpt_{step:06d}.pt")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "tokens": tokens,
                    "elapsed": elapsed, "args": vars(a), "config": cfg}, path + ".tmp")
        os.replace(path + ".tmp", path)
        for old in sorted(glob.glob(os.path.join(a.run_dir, "ckpt_*.pt")))[:-2]:
            os.remove(old)
        P(f"saved {path}")

    model.train()
    last_ck = time.time()
    cands = sorted({1, a.threads}) if a.adaptive_threads else [a.threads]
    recent = {c: [] for c in cands}
    cur = a.threads
    explore_left = 0
    torch.set_num_threads(cur)
    ema = None
    end = a.steps if not a.bench else a.bench
    while step < end:
        if step == a.wpe_sinusoid_at:
            wpe = model.transformer.wpe.weight
            pos = torch.arange(a.n_ctx, dtype=torch.float64).unsqueeze(1)
            inv = torch.pow(10000.0, -torch.arange(0, a.n_embd, 2, dtype=torch.float64) / a.n_embd)
            pe = torch.zeros(a.n_ctx, a.n_embd, dtype=torch.float64)
            pe[:, 0::2] = torch.sin(pos * inv); pe[:, 1::2] = torch.cos(pos * inv)
            with torch.no_grad():
                wpe.copy_((pe / pe.std() * a.wpe_sinusoid_std).float())
            opt.state.pop(wpe, None)
            P(f"step {step}: wpe replaced by sinusoidal table, std {wpe.std().item():.4f}")
        if step == a.absent_noise_at:
            absent = torch.from_numpy(np.load(os.path.join(a.data_dir, "train_counts.npy")) == 0)
            g = torch.Generator().manual_seed(a.seed + 1)
            noise = torch.randn(int(absent.sum()), a.n_embd, generator=g) * a.absent_noise_std
            with torch.no_grad():
                model.transformer.wte.weight[absent] += noise
            P(f"step {step}: added N(0,{a.absent_noise_std}^2) noise to {int(absent.sum())} absent-token rows")
        t0 = time.time()
        lr = lr_at(a, step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batcher.batch(step)
        loss = loss_fn(model, x, y, a.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.time() - t0
        recent[cur] = (recent[cur] + [dt])[-3:]
        if len(cands) > 1:
            if explore_left > 0:
                explore_left -= 1
                if explore_left == 0:
                    cur = min((c for c in cands if recent[c]), key=lambda c: float(np.median(recent[c])))
            elif (step + 1) % 30 == 0:
                cur = [c for c in cands if c != cur][0]   # re-measure the other setting for 2 steps
                recent[cur] = []
                explore_left = 2
            torch.set_num_threads(cur)
        step += 1
        tokens += int(x.numel())
        elapsed += dt
        l = loss.item()
        ema = l if ema is None else 0.95 * ema + 0.05 * l
        if step % 10 == 0 or a.bench:
            P(f"step {step} loss {l:.4f} ema {ema:.4f} lr {lr:.2e} gn {gn:.2f} dt {dt:.2f}s tokens {tokens} "
              f"train_time {elapsed/60:.1f}min threads {torch.get_num_threads()}")
        if not a.bench and (time.time() - last_ck > a.ckpt_every_s or step == a.steps):
            save(); last_ck = time.time()
    if not a.bench:
        P(f"done step {step} tokens {tokens} train_time_s {elapsed:.0f}")
        with open(os.path.join(a.run_dir, "DONE"), "w") as f:
            json.dump({"step": step, "tokens": tokens, "train_time_s": elapsed}, f)


if __name__ == "__main__":
    main()
