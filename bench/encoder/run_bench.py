#!/usr/bin/python3
"""run_bench.py: JaPLAID's CPU encoder vs PyTorch on the same checkpoint, in
one run (bench/encoder/README.md).

Starts three long-lived processes: the JaPLAID side (bench_encoder --model),
the PyTorch side (torch_encoder.py) and an OpenBLAS sgemm peak probe
(bench_encoder --sgemm-peak), each in its own process so the JaPLAID peak
RSS is its own. Then, per case, it alternates JaPLAID and PyTorch calls
(A B A B ..., --reps each, after one untimed warm-up call each) and probes
the sgemm peak between reps, and prints medians:
ms and tokens/s per side, the time ratio, the fraction of the sgemm peak
each side reaches (exact model FLOPs: every linear layer + Q K^T + P V), and
the peak RSS of both sides against the F32 weight size. A parity check
(minimum cosine between the two sides' output vectors) comes first, so the
two sides are known to compute the same function.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


class Side:
    def __init__(self, name, argv, env):
        self.name = name
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=env, text=True)
        self.hello = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name}: exited (status {self.p.wait()})")
        r = json.loads(line)
        if "error" in r:
            raise SystemExit(f"{self.name}: {r['error']}")
        return r

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        self.p.wait()


def safetensors_info(path):
    """(bytes of F32 tensors, config) of a checkpoint."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    total = 0
    for name, t in header.items():
        if name != "__metadata__" and t["dtype"] == "F32":
            b, e = t["data_offsets"]
            total += e - b
    return total


def model_flops(cfg, dim, B, L):
    """Exact multiply-add FLOPs (x2) of one forward: the linear layers of
    every token, the projection, and Q K^T + P V over all L keys."""
    H, I, nl = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    T = B * L
    linear = T * nl * 2 * (4 * H * H + 2 * H * I) + T * 2 * H * dim
    attention = nl * B * 2 * (2 * L * L * H)
    return linear + attention


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (F32)")
    ap.add_argument("--bin", default=None, help="bench_encoder binary")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="q:1x32,q:32x32,d:32x256",
                    help="KIND:BxL,... (KIND q = queries, d = documents)")
    ap.add_argument("--max-tokens", type=int, default=0, help="JaPLAID tokens per forward (0 = default)")
    ap.add_argument("--japlaid-blas-threads", type=int, default=1,
                    help="OPENBLAS_NUM_THREADS of the JaPLAID process: 1 (default) = OpenBLAS "
                         "single-threaded, bert_cpu splits each GEMM over its pool of --threads; "
                         "N > 1 = OpenBLAS threads split each GEMM itself")
    ap.add_argument("--json", default=None, help="also write all measurements here")
    a = ap.parse_args()

    binary = a.bin or os.environ.get("BENCH_ENCODER", "bench_encoder")
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    wbytes = safetensors_info(os.path.join(a.model, "model.safetensors"))
    dim = None
    cases = []
    for c in a.cases.split(","):
        kind, shape = c.split(":")
        B, L = (int(x) for x in shape.split("x"))
        cases.append((kind, B, L))

    env = dict(os.environ)
    env.update({"OPENBLAS_NUM_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads),
                "OMP_WAIT_POLICY": "passive"})
    jp_env = dict(env)
    jp_env["OPENBLAS_NUM_THREADS"] = str(a.japlaid_blas_threads)
    jp = Side("japlaid", [binary, "--model", a.model, "--threads", str(a.threads),
                          "--max-tokens", str(a.max_tokens)], jp_env)
    pt = Side("pytorch", [sys.executable, os.path.join(HERE, "torch_encoder.py"), "--model",
                          a.model, "--threads", str(a.threads)], env)
    pk = Side("sgemm-peak", [binary, "--sgemm-peak"], env)
    print(f"# model {a.model}: {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
          f"F32 weights {wbytes / 1e6:.1f} MB; {a.threads} threads (JaPLAID pool {a.threads}, "
          f"its OpenBLAS {a.japlaid_blas_threads}; torch {pt.hello.get('threads')}, its "
          f"OpenBLAS {a.threads})", flush=True)

    # Parity: both sides encode the same small batch.
    with tempfile.TemporaryDirectory() as tmp:
        fa, fb = os.path.join(tmp, "a.f32"), os.path.join(tmp, "b.f32")
        jp.ask(f"dump q 2 32 {fa}")
        pt.ask(f"dump q 2 32 {fb}")
        x, y = np.fromfile(fa, dtype=np.float32), np.fromfile(fb, dtype=np.float32)
        dim = x.size // 64
        x, y = x.reshape(64, dim), y.reshape(64, dim)
        cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-30)
        print(f"# parity (2 queries x 32 tokens): min cosine {cos.min():.7f}, "
              f"max abs diff {np.abs(x - y).max():.2e}", flush=True)

    rows, peaks, record = [], [], {"cases": []}
    for kind, B, L in cases:
        cmd = f"run {kind} {B} {L}"
        jp.ask(cmd)        # warm-up: page in weights, grow buffers
        pt.ask(cmd)
        tj, tt = [], []
        for r in range(a.reps):
            tj.append(jp.ask(cmd)["ms"])
            tt.append(pt.ask(cmd)["ms"])
            if r % 2 == 0:
                peaks.append(pk.ask("peak")["gflops"])
        mj, mt = statistics.median(tj), statistics.median(tt)
        fl = model_flops(cfg, dim, B, L)
        rows.append((kind, B, L, mj, mt, fl))
        record["cases"].append({"kind": kind, "B": B, "L": L, "japlaid_ms": tj, "torch_ms": tt,
                                "flops": fl})
        print(f"# {kind} {B}x{L}: japlaid {['%.1f' % t for t in tj]} torch {['%.1f' % t for t in tt]}",
              flush=True)
    peak = statistics.median(peaks)
    rj, rt = jp.ask("rss"), pt.ask("rss")
    for s in (jp, pt, pk):
        s.close()

    print()
    print(f"sgemm peak (OpenBLAS 3072x2048x768, {a.threads} threads, median of {len(peaks)} "
          f"probes in this run): {peak:.1f} GFLOP/s  [min {min(peaks):.1f}, max {max(peaks):.1f}]")
    print()
    hdr = ("case", "JaPLAID ms", "PyTorch ms", "JaPLAID/PyTorch", "JaPLAID tok/s",
           "PyTorch tok/s", "JaPLAID %peak", "PyTorch %peak")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for kind, B, L, mj, mt, fl in rows:
        T = B * L
        name = f"{B} {'queries' if kind == 'q' else 'documents'} x {L}"
        print(f"| {name} | {mj:.1f} | {mt:.1f} | {mj / mt:.2f} | {T / mj * 1e3:.0f} | "
              f"{T / mt * 1e3:.0f} | {fl / (mj * 1e-3) / 1e9 / peak * 100:.0f}% | "
              f"{fl / (mt * 1e-3) / 1e9 / peak * 100:.0f}% |")
    print()
    print(f"peak RSS: JaPLAID {rj['vmhwm_mb']:.0f} MiB = {rj['vmhwm_mb'] * 2**20 / wbytes:.2f}x "
          f"the F32 weights ({wbytes / 2**20:.0f} MiB); PyTorch {rt['vmhwm_mb']:.0f} MiB = "
          f"{rt['vmhwm_mb'] * 2**20 / wbytes:.2f}x")
    record.update({"peak_gflops": peaks, "japlaid_rss": rj, "torch_rss": rt,
                   "weight_bytes": wbytes})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
