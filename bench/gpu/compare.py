"""Compares two logit-lens JSON reports of the same model and prompt (e.g. CUDA against CPU):
`python3 compare.py REF.json OTHER.json [--kl-tol 1e-3] [--tie-tol 1e-3] [--label NAME]`.

Prints one line: cells, top-1 mismatches (and how many of them are near-ties: OTHER's top-1 is in
REF's top-k with a logit within tie-tol * max(1, |logit|) of REF's top-1), max |difference| of
kl_to_final, kl_to_input, entropy and top1_prob, rank_of_next differences, and the run timings of
both. Exit status 0 when every top-1 mismatch is a near-tie and max |ΔKL| (both KLs) <= kl-tol,
else 1. With --json-out, also appends the line's figures as one JSON object to that file.
"""
import argparse
import json
import math
import sys


def cells(grid):
    for r, row in enumerate(grid):
        for c, v in enumerate(row):
            yield r, c, v


def maxdiff(a, b):
    worst = 0.0
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            if x is None or y is None:
                if (x is None) != (y is None):
                    return math.inf
                continue
            if isinstance(x, float) and math.isnan(x) and isinstance(y, float) and math.isnan(y):
                continue
            d = abs(x - y)
            if math.isnan(d):
                return math.inf
            worst = max(worst, d)
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("other")
    ap.add_argument("--kl-tol", type=float, default=1e-3)
    ap.add_argument("--tie-tol", type=float, default=1e-3)
    ap.add_argument("--label", default="")
    ap.add_argument("--json-out")
    ap.add_argument("--info", action="store_true", help="figures only: the verdict is 'info', the exit status 0")
    a = ap.parse_args()
    A = json.load(open(a.ref))
    B = json.load(open(a.other))
    if A.get("schema", "").startswith("logit-lens/compare"):
        sys.exit("compare reports are not supported; give plain lens reports")
    ta = [t.get("id") for t in A["tokens"]]
    tb = [t.get("id") for t in B["tokens"]]
    problems = []
    if ta != tb:
        problems.append("tokens differ")
    if A["sites"] != B["sites"]:
        problems.append("sites differ")
    ma, mb = A["metrics"], B["metrics"]
    n = mism = ties = 0
    worst_tie_gap = 0.0
    ka, kb = A["top_k"], B["top_k"]
    for r, c, ida in cells(ma["top1_id"]):
        n += 1
        idb = mb["top1_id"][r][c]
        if ida == idb:
            continue
        mism += 1
        ids = ka["ids"][r][c]
        logits = ka["logits"][r][c]
        top = logits[0] if logits else ma["top1_logit"][r][c]
        if idb in ids:
            gap = abs(top - logits[ids.index(idb)])
            if gap <= a.tie_tol * max(1.0, abs(top)):
                ties += 1
                worst_tie_gap = max(worst_tie_gap, gap)
    rank_diff = 0
    for r, c, x in cells(ma["rank_of_next"]):
        y = mb["rank_of_next"][r][c]
        if x is not None and y is not None and x != y:
            rank_diff += 1
    d = {
        "label": a.label,
        "tokens": len(A["tokens"]),
        "sites": len(A["sites"]),
        "cells": n,
        "top1_mismatch": mism,
        "top1_near_ties": ties,
        "max_tie_gap": worst_tie_gap,
        "max_dkl_final": maxdiff(ma["kl_to_final"], mb["kl_to_final"]),
        "max_dkl_input": maxdiff(ma["kl_to_input"], mb["kl_to_input"]),
        "max_dentropy": maxdiff(ma["entropy"], mb["entropy"]),
        "max_dtop1_prob": maxdiff(ma["top1_prob"], mb["top1_prob"]),
        "rank_of_next_diff": rank_diff,
        "ref_provider": A.get("run", {}).get("provider"),
        "ref_lens_path": A.get("run", {}).get("lens_path"),
        "ref_forward_ms": A.get("run", {}).get("forward_ms"),
        "ref_lens_ms": A.get("run", {}).get("lens_ms"),
        "other_provider": B.get("run", {}).get("provider"),
        "other_lens_path": B.get("run", {}).get("lens_path"),
        "other_forward_ms": B.get("run", {}).get("forward_ms"),
        "other_lens_ms": B.get("run", {}).get("lens_ms"),
    }
    ok = not problems and mism == ties and d["max_dkl_final"] <= a.kl_tol and d["max_dkl_input"] <= a.kl_tol
    d["ok"] = ok
    d["info"] = a.info
    d["problems"] = problems
    verdict = "info" if a.info else "OK" if ok else "FAIL"
    print(
        f"{a.label or a.other}: {verdict} {n} cells, top-1 mismatches {mism} ({ties} near-ties), "
        f"max|dKL_final| {d['max_dkl_final']:.2e}, max|dKL_input| {d['max_dkl_input']:.2e}, "
        f"max|dH| {d['max_dentropy']:.2e}, max|dp1| {d['max_dtop1_prob']:.2e}, rank_of_next diffs {rank_diff}; "
        f"{d['ref_provider']}/{d['ref_lens_path']} fwd {d['ref_forward_ms']:.0f} lens {d['ref_lens_ms']:.0f} ms vs "
        f"{d['other_provider']}/{d['other_lens_path']} fwd {d['other_forward_ms']:.0f} lens {d['other_lens_ms']:.0f} ms"
        + (f"; {', '.join(problems)}" if problems else "")
    )
    if a.json_out:
        with open(a.json_out, "a") as f:
            f.write(json.dumps(d) + "\n")
    sys.exit(0 if ok or a.info else 1)


if __name__ == "__main__":
    main()
