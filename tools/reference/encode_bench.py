#!/usr/bin/python3
"""encode_bench.py: time the PyTorch reference forward (BERT + ColBERT head)
on a checkpoint directory, for bench/encoder to print beside the C encoder.

Usage:
  /usr/bin/python3 tools/reference/encode_bench.py --model DIR --batch B --seq L
      [--threads T] [--reps R] [--warmup W] [--precision float32|float64]
      [--device cpu|cuda] [--seed S]

Runs W untimed then R timed forward passes over one [B, L] batch of random
token ids (seeded, ids 5..vocab-1, every position attended), under
torch.inference_mode(), with torch.set_num_threads(T). Prints one JSON line:

  {"impl": "torch", "torch": "1.13.0", "device": "cpu", "threads": T,
   "precision": "float32", "batch": B, "seq": L, "reps": R,
   "times_s": [...], "median_s": m, "min_s": m0,
   "tokens_per_s": B*L/median_s, "load_s": seconds to load the checkpoint}

Exit status 2 on bad arguments (e.g. L above max_position_embeddings).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import colbert_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.batch < 1 or a.seq < 1 or a.reps < 1 or a.threads < 1 or a.warmup < 0:
        ap.error("batch, seq, reps, threads must be >= 1 and warmup >= 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("this torch has no CUDA device")
    torch.set_num_threads(a.threads)
    prec = {"float32": torch.float32, "float64": torch.float64}[a.precision]

    t0 = time.perf_counter()
    m = colbert_ref.Model(a.model, prec)
    load_s = time.perf_counter() - t0
    if m.kind == "bert" and a.seq > m.config["max_position_embeddings"]:
        ap.error(f"--seq {a.seq} exceeds max_position_embeddings {m.config['max_position_embeddings']}")
    if a.device == "cuda":
        for k, v in list(vars(m).items()):
            if torch.is_tensor(v):
                setattr(m, k, v.cuda())
        if m.kind == "bert":
            m.emb_ln = tuple(t.cuda() for t in m.emb_ln)
            m.layers = [{k: v.cuda() for k, v in w.items()} for w in m.layers]

    g = torch.Generator().manual_seed(a.seed)
    vocab = len(m.vocab)
    ids = torch.randint(5, vocab, (a.batch, a.seq), generator=g)
    attn = torch.ones((a.batch, a.seq), dtype=torch.long)
    if a.device == "cuda":
        ids, attn = ids.cuda(), attn.cuda()

    def once():
        with torch.inference_mode():
            y = m.forward(ids, attn)
        if a.device == "cuda":
            torch.cuda.synchronize()
        return y

    for _ in range(a.warmup):
        once()
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({
        "impl": "torch", "torch": torch.__version__, "device": a.device, "threads": a.threads,
        "precision": a.precision, "batch": a.batch, "seq": a.seq, "reps": a.reps,
        "times_s": [round(x, 6) for x in times], "median_s": round(med, 6),
        "min_s": round(min(times), 6), "tokens_per_s": round(a.batch * a.seq / med, 1),
        "load_s": round(load_s, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
