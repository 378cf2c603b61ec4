"""Helpers of bench/big_models.sh (issue 25's 7-9B benchmark); Python 3 with `tokenizers` (prompt only).

    python bench/big_models.py prompt TOKENIZER_JSON CONFIG_JSON CORPUS N OUT
        OUT: a prompt that the tokenizer (its post-processor's special tokens included, as both
        `logit-lens lens` and transformers tokenize it) turns into exactly N tokens, taken from
        CORPUS[5000:] with CRLF read as LF (wikitext2_raw_test.txt has CRLF line ends, which Python's
        text mode would turn into LF on one side only). Refuses a prompt with an id >= vocab_size.
    python bench/big_models.py agree REFERENCE CANDIDATE
        final-site top-1 agreement and mean / max |dKL(final || site)| over every other site and
        position; each file a `logit-lens lens --json` report or a `notebook_lens.py --dump`.
    python bench/big_models.py table DATA_DIR SHAPE
        the markdown table of DATA_DIR/SHAPE.times.tsv (written by big_models.sh).
"""
import json
import os
import sys


def make_prompt(tok_json, config_json, corpus, n, out):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_json)
    vocab = json.load(open(config_json))["vocab_size"]
    text = open(corpus, "rb").read().decode("utf-8").replace("\r\n", "\n")[5000:5000 + 40 * n]
    base = tok.encode(text, add_special_tokens=False).ids
    k = n - (len(tok.encode("a", add_special_tokens=True).ids) - len(tok.encode("a", add_special_tokens=False).ids))
    for _ in range(50):
        prompt = tok.decode(base[:k])
        ids = tok.encode(prompt, add_special_tokens=True).ids
        if len(ids) == n:
            break
        k += n - len(ids)
    else:
        sys.exit(f"could not cut a prompt of exactly {n} tokens")
    big = [i for i in ids if i >= vocab]
    if big:
        sys.exit(f"the prompt has ids past the model's vocabulary ({vocab}): {big[:5]}; this tokenizer does not fit this shape")
    with open(out, "w", encoding="utf-8", newline="") as fh:
        fh.write(prompt)
    print(f"wrote {out}: {len(ids)} tokens, max id {max(ids)} (vocab {vocab}), first ids {ids[:4]}")


def load(path):
    r = json.load(open(path))
    if r.get("schema", "").startswith("notebook-lens"):
        return r["ids"], r["top1"], r["kl_to_final"]
    m = r["metrics"]
    return [t["id"] for t in r["tokens"]], m["top1_id"], m["kl_to_final"]


def agree(ref, cand):
    """(top-1 agreement at the final site, mean |dKL|, max |dKL|), or None when the token ids differ."""
    ids_a, top_a, kl_a = load(ref)
    ids_b, top_b, kl_b = load(cand)
    if ids_a != ids_b or len(top_a) != len(top_b):
        return None
    agreement = sum(x == y for x, y in zip(top_a[-1], top_b[-1])) / len(top_a[-1])
    d = [abs(x - y) for ra, rb in zip(kl_a[:-1], kl_b[:-1]) for x, y in zip(ra, rb) if x is not None and y is not None]
    return agreement, sum(d) / len(d), max(d)


def num(x):
    return f"{x:.4f}" if x >= 1e-3 else f"{x:.1e}"


def fmt_agree(ref, cand):
    if not (os.path.exists(ref) and os.path.exists(cand)):
        return "–", "–"
    a = agree(ref, cand)
    if a is None:
        return "token ids differ", "–"
    return f"{a[0]:.3f}", f"{num(a[1])} (max {num(a[2])})"


def table(data, shape):
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(data, f"{shape}.times.tsv"))]
    # what, format, round, seconds, peak KB[, extra]
    by = {}
    for r in rows:
        by.setdefault((r[0], r[1]), []).append(r)

    def sec(x):
        x = float(x)
        return f"{x:.1f} s" if x >= 10 else f"{x:.2f} s"

    def cell(what, f, extra=False):
        rs = by.get((what, f), [])
        if not rs:
            return "–"
        if extra:
            return " / ".join(sec(r[5]) for r in rs)
        return " / ".join(sec(r[3]) for r in rs) + ", " + " / ".join(f"{int(r[4]) * 1024 / 1e9:.2f} GB" for r in rs)

    def secs(what, f):
        return [float(r[3]) for r in by.get((what, f), [])]

    nb = secs("notebook", "bf16")
    formats = [f for f in ("f32", "int8", "int4") if ("lens", f) in by or ("convert", f) in by]
    out = [f"**{shape}** (256 tokens; ours: the whole cold `logit-lens lens --device cpu` command; notebook: "
           "`notebook_lens.py --dtype bfloat16`, compute only with the model loaded, peak RSS of the process; "
           "values of each round separated by /)", "",
           "| shape | format | bundle size | convert s, peak RSS | lens cold s, peak RSS | notebook s, peak RSS (whole process s) "
           "| time × | top-1 agreement vs notebook bf16 | mean \\|ΔKL\\| vs notebook bf16 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for f in formats:
        size = by.get(("size", f), [[0, 0, 0, 0, 0]])[0]
        ours = secs("lens", f)
        ratio = f"{min(ours) / min(nb):.2f}" if ours and nb else "–"
        ag, dkl = fmt_agree(os.path.join(data, f"{shape}.notebook.r1.json"), os.path.join(data, f"{shape}.{f}.r1.json"))
        nbcell = cell("notebook", "bf16") + (f" ({cell('notebook', 'bf16', True)})" if nb else "")
        out.append(f"| {shape} | {f} | {int(size[4]) / 1e9:.2f} GB | {cell('convert', f)} | {cell('lens', f)} | {nbcell} | {ratio} | {ag} | {dkl} |")
    for r in rows:
        if r[0] == "skipped":
            out.append(f"\n{r[1]} skipped: {r[5]}")
        elif r[0] == "failed":
            out.append(f"\n{r[1]} (round {r[2]}) failed: {r[5]}")
    pairs = [("int8", "int4"), ("f32", "int8"), ("f32", "int4")]
    lines = []
    for a, b in pairs:
        ra, rb = os.path.join(data, f"{shape}.{a}.r1.json"), os.path.join(data, f"{shape}.{b}.r1.json")
        if os.path.exists(ra) and os.path.exists(rb):
            ag, dkl = fmt_agree(ra, rb)
            lines.append(f"- {b} against {a}: top-1 agreement {ag}, mean |ΔKL| {dkl}")
    if lines:
        out += ["", "Between our own formats (first round):"] + lines
    print("\n".join(out))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prompt":
        make_prompt(args[0], args[1], args[2], int(args[3]), args[4])
    elif cmd == "agree":
        a = agree(args[0], args[1])
        print("token ids differ" if a is None else f"top-1 agreement {a[0]:.3f}, mean |dKL| {num(a[1])}, max |dKL| {num(a[2])}")
    elif cmd == "table":
        table(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
