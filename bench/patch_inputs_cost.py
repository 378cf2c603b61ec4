"""Issue 27: what the lens graph's patch machinery costs a plain run, where nothing is patched.

Writes a copy of a bundle's lens graph without it -- every block's `If` replaced by its `then`
branch (outputs renamed to the hook names), the patch `Where`s by their unpatched input, the
start `Where` by the embeddings -- and times ONNX Runtime's CPU provider on both graphs,
alternating, with the session options the app uses (no arena, no pre-packing but for --prepack), best of 5 per
session, 5 rounds, medians compared. Both graphs' hooks are checked equal first.

Usage: python bench/patch_inputs_cost.py BUNDLE [TOKENS] [--prepack]  (--prepack: the weights pre-packed,
as the app runs int4 bundles)   (needs numpy, onnx, onnxruntime)
"""

import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def inline_blocks(graph):
    """The graph without skippable blocks and patch inputs (in place)."""
    nodes = []
    for node in graph.node:
        if node.op_type == "If" and any(a.name == "then_branch" for a in node.attribute):
            then = next(a.g for a in node.attribute if a.name == "then_branch")
            rename = {o.name: outer for o, outer in zip(then.output, node.output)}
            for inner in then.node:
                inner.output[:] = [rename.get(o, o) for o in inner.output]
                inner.input[:] = [rename.get(i, i) for i in inner.input]
                nodes.append(inner)
            continue
        nodes.append(node)
    for node in nodes:
        if node.op_type == "Where" and len(node.input) == 3 and node.input[1] in ("patch_value", "start_resid"):
            raw = node.input[2]
            del node.input[:]
            node.input.append(raw)
            node.op_type = "Identity"
    del graph.node[:]
    graph.node.extend(nodes)


PREPACK = "--prepack" in sys.argv


def session(path):
    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = False
    if not PREPACK:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    args = [a for a in sys.argv[1:] if a != "--prepack"]
    bundle = args[0]
    tokens = int(args[1]) if len(args) > 1 else 256
    ort.set_default_logger_severity(3)
    src = os.path.join(bundle, "model.onnx")
    plain = os.path.join(bundle, "bench_without_patching.onnx")
    m = onnx.load(src, load_external_data=False)
    inline_blocks(m.graph)
    onnx.save(m, plain)
    try:
        ids = np.random.RandomState(0).randint(0, 1000, (1, tokens)).astype(np.int64)
        a, b = session(src), session(plain)
        names = [o.name for o in a.get_outputs()]
        ra, rb = a.run(names, {"input_ids": ids}), b.run(names, {"input_ids": ids})
        gap = max(float(np.abs(x - y).max()) for x, y in zip(ra, rb))
        print(f"largest difference between the two graphs' outputs: {gap:.2e}")
        times = {"with": [], "without": []}
        for r in range(5):
            for label, path in (("with", src), ("without", plain)):
                s = session(path)
                for _ in range(2):
                    s.run(None, {"input_ids": ids})
                best = float("inf")
                for _ in range(5):
                    t = time.perf_counter()
                    s.run(None, {"input_ids": ids})
                    best = min(best, time.perf_counter() - t)
                times[label].append(best)
                print(f"round {r + 1}: {label} the patch machinery: {best * 1e3:.0f} ms ({tokens} tokens)", flush=True)
        w, wo = np.median(times["with"]), np.median(times["without"])
        print(f"median of 5 rounds: with {w * 1e3:.0f} ms, without {wo * 1e3:.0f} ms: x{w / wo:.3f}")
    finally:
        os.remove(plain)


if __name__ == "__main__":
    main()
