#!/usr/bin/env python3
"""Tokenize ../shared/corpus with the real GPT-2 BPE tokenizer and make the train / held-out split.

Deterministic (no randomness). Writes uint16 token arrays plus a manifest (sha256s of every input,
split boundaries, token counts) into OUT (default /work/train-run/data), and heldout.txt next to this file.

Split (held-out data is never trained on):
  * tinystories_v1_train_head.txt : stories are separated by a single '\n'. The LAST 120 stories are held
    out; heldout.txt = the first 32 of those held-out stories, byte-exact (joined by '\n' as in the source).
  * tinystories_v1_valid_head.txt : the last 5% of its paragraphs ('\n\n'-separated) are held out.
  * wikitext2_raw_test.txt         : CRLF -> LF; the last 5% of its records ('\n\n'-separated) are held out.
  * gutenberg_classics.txt         : the book "THE JUNGLE BOOK" (Kipling; book index 24 of 0..29) is held out entirely.
Training documents are joined with <|endoftext|> (id 50256) between documents.
"""
import argparse, hashlib, json, os, re, sys
import numpy as np
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
EOT = 50256
N_TS_HELDOUT = 120
N_HELDOUT_TXT = 32
HELDOUT_BOOK = "THE JUNGLE BOOK"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(HERE, "../../../shared/corpus"))
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "../../../shared/gpt2-tokenizer/tokenizer.json"))
    ap.add_argument("--out", default="/work/train-run/data")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = Tokenizer.from_file(args.tokenizer)
    tok.no_truncation()  # the shared tokenizer.json carries truncation max_length=50
    tok.no_padding()

    def enc_docs(docs):
        ids = []
        encs = tok.encode_batch(docs, add_special_tokens=False)
        for i, e in enumerate(encs):
            if i:
                ids.append(EOT)
            ids.extend(e.ids)
        return np.array(ids, dtype=np.uint16)

    c = args.corpus
    files = ["tinystories_v1_train_head.txt", "tinystories_v1_valid_head.txt",
             "wikitext2_raw_test.txt", "gutenberg_classics.txt"]
    manifest = {"inputs": {f: sha256(os.path.join(c, f)) for f in files},
                "tokenizer_sha256": sha256(args.tokenizer), "splits": {}}

    read = lambda f: open(os.path.join(c, f), encoding="utf-8", newline="").read()

    # TinyStories train head: per-story documents
    ts = read(files[0])
    stories = re.split(r'(?<!\n)\n(?!\n)', ts.rstrip("\n"))
    stories = [s for s in stories if s.strip()]
    tr, ho = stories[:-N_TS_HELDOUT], stories[-N_TS_HELDOUT:]
    heldout_txt = "\n".join(ho[:N_HELDOUT_TXT])
    assert heldout_txt in ts
    with open(os.path.join(HERE, "heldout.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(heldout_txt)
    splits = {"tinystories_train": (tr, ho)}
    manifest["splits"]["tinystories_train"] = {"n_stories": len(stories), "train": len(tr), "heldout": len(ho),
                                               "heldout_first_story_prefix": ho[0][:80]}

    # TinyStories valid head: paragraphs, last 5% held out
    tv = read(files[1])
    paras = [p for p in tv.split("\n\n") if p.strip()]
    k = len(paras) - len(paras) // 20
    splits["tinystories_valid"] = (["\n\n".join(paras[:k])], ["\n\n".join(paras[k:])])
    manifest["splits"]["tinystories_valid"] = {"n_paragraphs": len(paras), "train": k, "heldout": len(paras) - k}

    # WikiText-2 raw test: CRLF->LF, records separated by blank lines, last 5% held out
    wk = read(files[2]).replace("\r\n", "\n")
    recs = [r for r in wk.split("\n\n") if r.strip()]
    k = len(recs) - len(recs) // 20
    splits["wikitext"] = (["\n\n".join(recs[:k])], ["\n\n".join(recs[k:])])
    manifest["splits"]["wikitext"] = {"n_records": len(recs), "train": k, "heldout": len(recs) - k}

    # Gutenberg: books separated by a line <|endoftext|>; hold out one whole book
    gb = read(files[3])
    books = [b.strip("\n") for b in gb.split("\n<|endoftext|>\n")]
    assert len(books) == 30, len(books)
    hidx = [i for i, b in enumerate(books) if b.startswith(HELDOUT_BOOK)]
    assert len(hidx) == 1, hidx
    splits["gutenberg"] = ([b for i, b in enumerate(books) if i != hidx[0]], [books[hidx[0]]])
    manifest["splits"]["gutenberg"] = {"n_books": 30, "heldout_book_index": hidx[0], "heldout_book": HELDOUT_BOOK}

    counts = np.zeros(50257, dtype=np.int64)
    for name, (trd, hod) in splits.items():
        a = enc_docs(trd)
        b = enc_docs(hod)
        np.save(os.path.join(args.out, f"{name}.train.npy"), a)
        np.save(os.path.join(args.out, f"{name}.heldout.npy"), b)
        counts += np.bincount(a, minlength=50257)
        manifest["splits"][name].update({"train_tokens": int(len(a)), "heldout_tokens": int(len(b))})
        print(name, len(a), len(b), flush=True)
    counts[EOT] += 1
    np.save(os.path.join(args.out, "train_counts.npy"), counts)
    manifest["train_vocab_present"] = int((counts > 0).sum())
    ho_ids = tok.encode(heldout_txt, add_special_tokens=False).ids
    manifest["heldout_txt"] = {"bytes": len(heldout_txt.encode()), "tokens": len(ho_ids),
                               "sha256": hashlib.sha256(heldout_txt.encode()).hexdigest()}
    # the copy-case prompt, for train_gpu.py's periodic probe
    plasma = open(os.path.join(HERE, "../prompts/plasma.txt"), encoding="utf-8").read()
    with open(os.path.join(args.out, "plasma_ids.json"), "w") as f:
        json.dump(tok.encode(plasma, add_special_tokens=False).ids, f)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
