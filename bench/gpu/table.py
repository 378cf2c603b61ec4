"""The one table at the end of gpu_check.sh: `python3 table.py RESULTS_DIR ENV_TXT ELAPSED_S`.

Reads RESULTS_DIR/status.tsv (setup checks), compare.jsonl (compare.py lines: a reference report,
the CPU kernel, against another: CUDA), timing.jsonl (lens runs and bench figures).
"""
import json
import os
import sys


def load_jsonl(path):
    out = []
    if os.path.isfile(path):
        for line in open(path):
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def ms(x):
    return "–" if x is None else f"{x:.0f}"


def main():
    res, env, elapsed = sys.argv[1], sys.argv[2], sys.argv[3]
    head = []
    if os.path.isfile(env):
        for line in open(env):
            if line.startswith(("name,", "==")) or "NVIDIA" in line or line.startswith(("CPUs", "torch", "binary", "ONNX Runtime")):
                head.append(line.rstrip())
    print("## GPU check (bench/gpu/gpu_check.sh), " + elapsed + " s")
    print()
    for h in head[:8]:
        print("    " + h)
    print()
    print("| # | check | result | tokens × sites | CPU kernel fwd / lens ms | other fwd / lens ms | top-1 mismatches (near-ties) | max abs ΔKL final / input | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    i = 0
    if os.path.isfile(os.path.join(res, "status.tsv")):
        for line in open(os.path.join(res, "status.tsv")):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            i += 1
            print(f"| {i} | {parts[0]} | {parts[1]} | | | | | | {parts[2].replace('|', '/')} |")
    for c in load_jsonl(os.path.join(res, "compare.jsonl")):
        i += 1
        notes = f"other: {c.get('other_provider')} / {c.get('other_lens_path')}"
        f_ref, l_ref, f_o, l_o = c.get("ref_forward_ms"), c.get("ref_lens_ms"), c.get("other_forward_ms"), c.get("other_lens_ms")
        if c.get("ref_provider") == "CPU" and c.get("other_provider") not in (None, "CPU") and l_o and f_o:
            notes += f"; speed-up fwd ×{f_ref / f_o:.1f}, lens ×{l_ref / l_o:.1f} (cold)"
        if c.get("problems"):
            notes += "; " + ", ".join(c["problems"])
        print(f"| {i} | {c.get('label')} | {'info' if c.get('info') else 'OK' if c.get('ok') else 'FAIL'} | {c.get('tokens', '?')} × {c.get('sites', '?')} | "
              f"{ms(f_ref)} / {ms(l_ref)} | {ms(f_o)} / {ms(l_o)} | {c.get('top1_mismatch')} ({c.get('top1_near_ties')}) | "
              f"{c.get('max_dkl_final', float('nan')):.1e} / {c.get('max_dkl_input', float('nan')):.1e} | {notes} |")
    for t in load_jsonl(os.path.join(res, "timing.jsonl")):
        if t.get("kind") != "bench":
            continue
        i += 1
        print(f"| {i} | {t.get('name')}: bench --device cuda --lens-path graph, best of 2 (warm, TF32 as ORT defaults) | | {t.get('tokens')} × all | "
              f"| {ms(t.get('forward_ms'))} / {ms(t.get('lens_ms'))} | | | load {ms(t.get('load_ms'))} ms; CPU reference GEMM of the lens's shape "
              f"{ms(t.get('reference_ms'))} ms; peak RSS {ms(t.get('peak_rss_mb'))} MiB |")
    lens_failed = [t for t in load_jsonl(os.path.join(res, "timing.jsonl")) if t.get("kind") == "lens" and t.get("lens_ms") is None]
    for t in lens_failed:
        i += 1
        print(f"| {i} | {t.get('name')} | no timing | | | | | | |")


if __name__ == "__main__":
    main()
