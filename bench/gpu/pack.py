"""Here (not on the device): packs what the GPU check needs into per-call folders .gpu/p1, .gpu/p2, ...
each small enough to travel with the (slimmed) working tree in one device call.

    python3 bench/gpu/pack.py [--wheel WHL] [--bin target/release/logit-lens] [--no-prune]

Artifacts (each xz -9, split only where one would not fit a call):
  logit-lens                                  the release binary, stripped
  gpt2-tokenizer.json                         the demo model's tokenizer (GPT-2's), for the random
                                              checkpoints made while the first call's tree is slim
  ort/libonnxruntime_providers_cuda.so        from the onnxruntime-gpu wheel; by default with the
                                              cubins of every SM other than 9.x zeroed (fatbin.py:
                                              284 MB -> 51 MB of xz instead of ~200 MB; H100 = sm_90)
  ort/libonnxruntime.so.1.31.1, ort/libonnxruntime_providers_shared.so,
  ort/build_and_package_info.py               (cuda_version = '13.0': logit-lens reads it beside the
                                              library to pick the CUDA 13 library names)
  demo-model.safetensors                      the demo model's weights (its small files stay in the tree)
Each call's budget is 64 MiB less the tree under `slim.sh on all` (every tracked file > 64 KiB
emptied) and a margin, so the tree needs no change between the calls.
Writes .gpu/p*/MANIFEST (the same in every folder) and prints the calls with their carry lists.
"""
import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile

MiB = 1 << 20
LIMIT = 64 * MiB
SMALL = 65536
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = subprocess.run(["git", "-C", HERE, "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
sys.path.insert(0, HERE)
import fatbin  # noqa: E402

DEMO_KEEP = {"assets/demo-model/model.safetensors", "assets/demo-model/tokenizer.json", "assets/demo-model/config.json", "assets/demo-model/heldout.txt"}


def kept(path, mode):
    if "/src/" in "/" + path or path.startswith("assets/fonts/") or path.startswith("bench/gpu/"):
        return True
    return mode == "demo" and path in DEMO_KEEP


def tree_size(mode):
    """Bytes that travel under `slim.sh on MODE` (files > 64 KiB emptied / ignored unless kept)."""
    total = 0
    for args in (["ls-files", "-z"], ["ls-files", "-z", "--others", "--exclude-standard"]):
        out = subprocess.run(["git", "-C", ROOT] + args, capture_output=True, check=True).stdout
        for p in filter(None, out.decode().split("\0")):
            f = os.path.join(ROOT, p)
            if not os.path.isfile(f) or os.path.islink(f):
                continue
            s = os.path.getsize(f)
            if s <= SMALL or kept(p, mode):
                total += s
    return total


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def xz(src, cache):
    """src compressed with xz -9 into the cache (reused while src's sha256 is the same)."""
    key = sha256(src)
    out = os.path.join(cache, f"{os.path.basename(src)}.{key[:16]}.xz")
    if not os.path.isfile(out):
        print(f"xz -9 {src} ...", flush=True)
        with open(out + ".tmp", "wb") as f:
            subprocess.run(["nice", "-n", "10", "xz", "-9", "-T1", "-c", src], stdout=f, check=True)
        os.replace(out + ".tmp", out)
    return key, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", default=None)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/logit-lens"))
    ap.add_argument("--no-prune", action="store_true", help="carry the whole CUDA provider (~4 calls)")
    ap.add_argument("--margin-mib", type=float, default=1.5)
    a = ap.parse_args()
    wheel = a.wheel or (sorted(glob.glob("/work/gpuwheel/onnxruntime_gpu-1.31.1-*.whl")) or [None])[0]
    if not wheel or not os.path.isfile(wheel):
        sys.exit("no onnxruntime-gpu wheel: give --wheel (python3 -m pip download --no-deps --only-binary=:all: "
                 "--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d /work/gpuwheel onnxruntime-gpu==1.31.1)")
    if not os.path.isfile(a.bin):
        sys.exit(f"no binary at {a.bin}")
    gpu = os.path.join(ROOT, ".gpu")
    build = os.path.join(gpu, "build")
    cache = os.path.join(build, "xz")
    os.makedirs(cache, exist_ok=True)
    # Extract from the wheel.
    names = {
        "onnxruntime/capi/libonnxruntime.so.1.31.1": "ort/libonnxruntime.so.1.31.1",
        "onnxruntime/capi/libonnxruntime_providers_shared.so": "ort/libonnxruntime_providers_shared.so",
        "onnxruntime/capi/libonnxruntime_providers_cuda.so": "ort/libonnxruntime_providers_cuda.so",
        "onnxruntime/capi/build_and_package_info.py": "ort/build_and_package_info.py",
    }
    z = zipfile.ZipFile(wheel)
    raw = {}
    for member, dest in names.items():
        out = os.path.join(build, "raw", dest)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        info = z.getinfo(member)
        if not (os.path.isfile(out) and os.path.getsize(out) == info.file_size and os.path.getmtime(out) >= os.path.getmtime(wheel)):
            with z.open(member) as src, open(out + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(out + ".tmp", out)
        raw[dest] = out
    prov = raw["ort/libonnxruntime_providers_cuda.so"]
    if not a.no_prune:
        pruned = os.path.join(build, "pruned", "libonnxruntime_providers_cuda.so")
        os.makedirs(os.path.dirname(pruned), exist_ok=True)
        if not (os.path.isfile(pruned) and os.path.getmtime(pruned) >= os.path.getmtime(prov)):
            fatbin.prune(prov, pruned + ".tmp", "90")
            os.replace(pruned + ".tmp", pruned)
        raw["ort/libonnxruntime_providers_cuda.so"] = pruned
    stripped = os.path.join(build, "logit-lens")
    shutil.copyfile(a.bin, stripped)
    subprocess.run(["strip", stripped], check=True)
    os.chmod(stripped, 0o755)
    tok = os.path.join(build, "gpt2-tokenizer.json")
    src_tok = os.path.join(ROOT, "assets/demo-model/tokenizer.json")
    if os.path.getsize(src_tok) == 0:
        sys.exit("assets/demo-model/tokenizer.json is empty: run bench/gpu/slim.sh off first")
    shutil.copyfile(src_tok, tok)
    demo = os.path.join(build, "demo-model.safetensors")
    src_demo = os.path.join(ROOT, "assets/demo-model/model.safetensors")
    if os.path.getsize(src_demo) == 0:
        sys.exit("assets/demo-model/model.safetensors is empty: run bench/gpu/slim.sh off first")
    shutil.copyfile(src_demo, demo)
    order = [("logit-lens", stripped, "755"),
             ("gpt2-tokenizer.json", tok, "644"),
             ("ort/libonnxruntime_providers_cuda.so", raw["ort/libonnxruntime_providers_cuda.so"], "755"),
             ("ort/libonnxruntime.so.1.31.1", raw["ort/libonnxruntime.so.1.31.1"], "755"),
             ("ort/libonnxruntime_providers_shared.so", raw["ort/libonnxruntime_providers_shared.so"], "755"),
             ("ort/build_and_package_info.py", raw["ort/build_and_package_info.py"], "644"),
             ("demo-model.safetensors", demo, "644")]
    margin = int(a.margin_mib * MiB)
    manifest_reserve = 8192
    tree = tree_size("all")
    budget = LIMIT - tree - margin - manifest_reserve
    print(f"budget per call: {budget / MiB:.2f} MiB (64 MiB less the tree under `slim.sh on all`, {tree / MiB:.2f} MiB, and a {a.margin_mib} MiB margin)")
    # Compress and split.
    pieces = []  # (name, path, size)
    artifacts = []
    chunk = max(budget, MiB)
    for dest, src, mode in order:
        key, comp = xz(src, cache)
        size = os.path.getsize(comp)
        base = dest.replace("/", "_") + ".xz"
        if size <= chunk:
            parts = [(base, comp, 0, size)]
        else:
            parts = [(f"{base}.{i:02d}", comp, off, min(chunk, size - off)) for i, off in enumerate(range(0, size, chunk))]
        artifacts.append((dest, key, mode, [p[0] for p in parts]))
        pieces += parts
        print(f"  {dest}: {os.path.getsize(src)} bytes -> xz {size} bytes ({size / MiB:.2f} MiB) in {len(parts)} piece(s)")
    # Calls: first fit, in order (the binary first: the first call starts the preparation with it).
    calls = []
    rest = list(pieces)
    while rest:
        room, take, left = budget, [], []
        for p in rest:
            if p[3] <= room:
                take.append(p)
                room -= p[3]
            else:
                left.append(p)
        if not take:
            sys.exit("a piece is larger than a call's budget")
        calls.append(take)
        rest = left
    # Write the folders.
    for old in glob.glob(os.path.join(gpu, "p*")):
        shutil.rmtree(old)
    manifest = []
    for name, comp, off, size in pieces:
        h = hashlib.sha256()
        with open(comp, "rb") as f:
            f.seek(off)
            h.update(f.read(size))
        manifest.append(f"part {name} {h.hexdigest()} {size}")
    for dest, key, mode, parts in artifacts:
        manifest.append(f"artifact {dest} {key} {mode} {','.join(parts)}")
    text = "\n".join(manifest) + "\n"
    for i, call in enumerate(calls, 1):
        d = os.path.join(gpu, f"p{i}")
        os.makedirs(d)
        for name, comp, off, size in call:
            with open(comp, "rb") as f, open(os.path.join(d, name), "wb") as out:
                f.seek(off)
                out.write(f.read(size))
        with open(os.path.join(d, "MANIFEST"), "w") as f:
            f.write(text)
    print()
    for i, call in enumerate(calls, 1):
        load = sum(p[3] for p in call)
        print(f"call {i}: carry [\".gpu/p{i}\"]: "
              + ", ".join(f"{p[0]} ({p[3] / MiB:.2f} MiB)" for p in call)
              + f"; parts {load / MiB:.2f} MiB + tree {tree / MiB:.2f} MiB = {(load + tree) / MiB:.2f} MiB of 64")
    if not any(p[0].startswith("logit-lens") for p in calls[0]):
        print("note: the binary is not in the first call, so the first call cannot start the background preparation")


if __name__ == "__main__":
    main()
