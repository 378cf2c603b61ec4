#!/usr/bin/env python3
"""Regenerate the example prompts (plasma.txt is written by hand; see SOURCES.md). Deterministic.
All passages come from the demo model's HELD-OUT splits (see ../demo-model/prepare_data.py), so the model
never saw them in training. No trailing newlines."""
import os, re, random
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
C = os.path.join(HERE, "../../../shared/corpus")
tok = Tokenizer.from_file(os.path.join(HERE, "../../../shared/gpt2-tokenizer/tokenizer.json"))
tok.no_truncation()


def w(name, text):
    open(os.path.join(HERE, name), "w", encoding="utf-8", newline="").write(text)
    print(name, len(tok.encode(text).ids), "tokens")


# story.txt: first two paragraphs of held-out TinyStories story #35 (0-based, counted from the first held-out story)
ts = open(os.path.join(C, "tinystories_v1_train_head.txt"), encoding="utf-8", newline="").read()
stories = [s for s in re.split(r'(?<!\n)\n(?!\n)', ts.rstrip("\n")) if s.strip()]
story = stories[-120:][35]
w("story.txt", "\n\n".join(story.split("\n\n")[:2]))

# wiki.txt: one held-out WikiText-2 test record (CRLF->LF, surrounding whitespace stripped)
wk = open(os.path.join(C, "wikitext2_raw_test.txt"), encoding="utf-8", newline="").read().replace("\r\n", "\n")
recs = [r for r in wk.split("\n\n") if r.strip()]
held = recs[len(recs) - len(recs) // 20:]
rec = [r for r in held if r.strip().startswith("On 10 March 1941")][0]
w("wiki.txt", rec.strip())

# classic.txt: the first prose paragraph of The Jungle Book (held-out Gutenberg book), line breaks as in the source
gb = open(os.path.join(C, "gutenberg_classics.txt"), encoding="utf-8").read().split("\n<|endoftext|>\n")[24]
i = gb.index("It was seven o’clock of a very warm evening")
w("classic.txt", gb[i:gb.index("\n\n", i)])

# repetition.txt: 24 random lowercase word tokens (" " + 4..8 letters, seed 7) occurring in the
# TinyStories train-head file, written twice in a row;
# the text begins with a space so that it tokenizes to exactly those 24 ids twice
vocab = tok.get_vocab()
ts_tokens = set(tok.encode(ts).tokens)  # drawn from words that occur in the TinyStories file (a tame vocabulary)
words = sorted(t for t in vocab if re.fullmatch(r"Ġ[a-z]{4,8}", t) and t in ts_tokens)
rng = random.Random(7)
seq = rng.sample(words, 24)
text = "".join(t.replace("Ġ", " ") for t in seq)
rep = text + text  # starts with a space, so it is exactly 24 tokens followed by the same 24 tokens
ids = tok.encode(rep).ids
assert len(ids) == 48 and ids[:24] == ids[24:] and ids[:24] == [vocab[t] for t in seq], ids
w("repetition.txt", rep)
