#!/usr/bin/python3
"""make_goldens.py: regenerate tests/golden/model_tiny.json.

What it does:
  1. builds a tiny random BERT checkpoint and a small static checkpoint with
     the C CLI (`japlaid model random|static`, real vocabulary, fixed seeds),
     and records their identity hashes (`japlaid model info --json`);
  2. tokenises a handful of Japanese queries and documents with
     `japlaid tokenize` (the reference never runs MeCab);
  3. encodes those token ids with the independent PyTorch reference
     (colbert_ref.py, float64);
  4. writes ids, masks and embeddings to the golden file.

The checkpoints themselves are not committed: tests/golden/test_golden.c
regenerates them from the recorded spec with the same seeds and checks the
identity hash before comparing, so generation must stay deterministic.

Usage (from anywhere):
  /usr/bin/python3 tools/reference/make_goldens.py [--japlaid BUILD/tools/japlaid]
      [--data-dir /work/shared/data] [--out tests/golden/model_tiny.json]
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import colbert_ref  # noqa: E402

VOCAB_REL = "bert-base-japanese-v3/vocab.txt"

# The tiny BERT of the brief: 2 layers, hidden 64, 4 heads, 32-wide head.
RANDOM_SPEC = {"layers": 2, "hidden": 64, "heads": 4, "intermediate": 128,
               "max_position": 512, "dim": 32, "seed": 20240531, "dtype": "F32",
               "bert_prefix": True}
STATIC_SPEC = {"dim": 16, "seed": 4242}

QUERIES = [
    "アップルストアでiPhone８が発売されたのはいつ？",
    "東北大学はどこにありますか",
    "日本で一番高い山は？",
    "",                                                   # only [CLS] [Q] [SEP] + [MASK]s
    "ＪＡＰＬＡＩＤは「検索」エンジンです！",           # full-width ASCII, brackets
    # Longer than query_maxlen - 3 tokens: truncated.
    "第二次世界大戦後の日本経済の高度成長期において、重化学工業の発展と輸出の拡大が"
    "果たした役割について詳しく説明してください。",
]
DOCS = [
    "アップルストアでiPhone８が発売された。",
    "富士山は日本で最も高い山であり、標高は3776メートルです。",
    "東北大学 [SEP] 東北大学は宮城県仙台市にある国立大学である。",   # literal [SEP], as JSQuAD
    "記号の扱い: #$%&'()*+,-./:;<=>?@[\\]^_`{|}~ と（全角）！？、「」。",
    "",                                                   # [CLS] [D] [SEP]
]
STATIC_QUERIES = ["東京 東京 大阪", "[MASK] と [CLS]"]
STATIC_DOCS = ["東京は東京都の区部である。東京", "[SEP] [UNK] テスト"]


def run(cmd, stdin=None):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def long_doc(data_dir):
    """Two JSQuAD passages joined: over doc_maxlen (256) tokens, so the
    truncation path is covered."""
    with open(os.path.join(data_dir, "jsquad", "valid.corpus.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for _, line in zip(range(2), f)]
    return rows[0][2] + rows[1][2]


def tokenize(japlaid, model, flag, texts):
    out = run([japlaid, "tokenize", "--model", model, flag], "\n".join(texts) + "\n")
    toks = [json.loads(l) for l in out.splitlines()]
    assert len(toks) == len(texts), (len(toks), len(texts))
    return toks


def rounded(rows):
    # 6 significant digits: error <= 5e-7 on unit-vector components, far under
    # the test's 1e-4 tolerance, and it keeps the file small.
    return [[float(f"{v:.6g}") for v in row] for row in rows]


def encode_set(japlaid, ckpt, queries, docs):
    m = colbert_ref.Model(ckpt, torch.float64)
    qt = tokenize(japlaid, ckpt, "--query", queries)
    dt = tokenize(japlaid, ckpt, "--doc", docs)
    qe = m.encode_sequences([{"ids": t["ids"], "attn": t["mask"]} for t in qt])
    de = m.encode_sequences([{"ids": t["ids"], "keep": t["mask"]} for t in dt])
    return ([{"text": s, "ids": t["ids"], "mask": t["mask"], "embeddings": rounded(e)}
             for s, t, e in zip(queries, qt, qe)],
            [{"text": s, "ids": t["ids"], "mask": t["mask"], "embeddings": rounded(e)}
             for s, t, e in zip(docs, dt, de)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--japlaid", default=os.environ.get("JAPLAID_BIN",
                                                        os.path.join(ROOT, "build", "tools", "japlaid")))
    ap.add_argument("--data-dir", default=os.environ.get("JP_DATA_DIR",
                                                         os.path.join(ROOT, "..", "shared", "data")))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "model_tiny.json"))
    a = ap.parse_args()
    vocab = os.path.join(a.data_dir, VOCAB_REL)
    with open(vocab, "rb") as f:
        vocab_sha = hashlib.sha256(f.read()).hexdigest()

    with tempfile.TemporaryDirectory(prefix="japlaid-goldens-") as tmp:
        rnd = os.path.join(tmp, "random")
        s = RANDOM_SPEC
        cmd = [a.japlaid, "model", "random", "--out", rnd, "--vocab-file", vocab,
               "--layers", str(s["layers"]), "--hidden", str(s["hidden"]), "--heads", str(s["heads"]),
               "--intermediate", str(s["intermediate"]), "--max-position", str(s["max_position"]),
               "--dim", str(s["dim"]), "--seed", str(s["seed"]), "--dtype", s["dtype"]]
        if not s["bert_prefix"]:
            cmd.append("--no-bert-prefix")
        run(cmd)
        info = json.loads(run([a.japlaid, "model", "info", rnd, "--json"]))
        q, d = encode_set(a.japlaid, rnd, QUERIES, DOCS + [long_doc(a.data_dir)])
        models = [{"kind": "random", "spec": s, "identity": info["checkpoint_identity"],
                   "queries": q, "docs": d}]

        st = os.path.join(tmp, "static")
        run([a.japlaid, "model", "static", "--out", st, "--vocab-file", vocab,
             "--dim", str(STATIC_SPEC["dim"]), "--seed", str(STATIC_SPEC["seed"])])
        sinfo = json.loads(run([a.japlaid, "model", "info", st, "--json"]))
        q, d = encode_set(a.japlaid, st, STATIC_QUERIES, STATIC_DOCS)
        models.append({"kind": "static", "spec": STATIC_SPEC, "identity": sinfo["checkpoint_identity"],
                       "queries": q, "docs": d})

    golden = {
        "about": "Generated by tools/reference/make_goldens.py (PyTorch reference, float64); "
                 "do not edit. Checkpoints are regenerated by the test from 'spec'.",
        "vocab": VOCAB_REL,
        "vocab_sha256": vocab_sha,
        "tokenizer": info["tokenizer"],
        "models": models,
    }
    text = json.dumps(golden, ensure_ascii=False, separators=(",", ":"))
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {a.out}: {len(text.encode('utf-8'))} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
