#!/usr/bin/python3
"""codec_reference.py: golden files for the residual codec (common/index/codec.c).

Written from the math in shared/reference/plaid.md §2.3 with PyTorch and
numpy (Debian's /usr/bin/python3), independently of the C code:

  code      = argmax_c <centroid_c, v>
  residual  = v - centroid[code]
  cutoffs   = torch.quantile(all residual entries, i / B),       i = 1..B-1
  weights   = torch.quantile(all residual entries, (i + 0.5) / B), i = 0..B-1
  bucket    = torch.bucketize(residual, cutoffs)   (# cutoffs strictly below)
  packed    = numpy.packbits of the bits of every bucket, LSB first per dim
  decoded   = normalize(centroid[code] + weights[bucket])
  avg_residual = mean |residual|

Inputs: 64 unit vectors of dim 128 drawn around 16 unit centroids (fixed
numpy seed). The held-out set for the buckets is the residuals of the same
64 vectors (8192 entries).

Outputs in tests/golden/codec/ (little-endian raw arrays + a manifest):
  vectors.f32 [64,128], centroids.f32 [16,128], codes.u32 [64],
  packed_<nbits>.u8 [64, 128*nbits/8], decoded_<nbits>.f32 [64,128],
  manifest.json (shapes; per nbits cutoffs/weights as float32 bit patterns,
  avg_residual as a float).

Usage: /usr/bin/python3 tools/reference/codec_reference.py [--out DIR]
"""

import argparse
import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

N, DIM, NCENT = 64, 128, 16
SEED = 20240601
NOISE = 0.35          # per-coordinate noise scale (times 1/sqrt(dim)) around a centroid


def unit_rows(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def make_inputs():
    rng = np.random.default_rng(SEED)
    cent = unit_rows(rng.standard_normal((NCENT, DIM))).astype(np.float32)
    which = rng.integers(0, NCENT, N)
    noise = rng.standard_normal((N, DIM)) * NOISE / np.sqrt(DIM)
    vecs = unit_rows(cent[which].astype(np.float64) + noise).astype(np.float32)
    return vecs, cent


def bits_lsb_first(buckets, nbits):
    """[n, dim] bucket indices -> [n, dim * nbits] bits, LSB of each first."""
    n, dim = buckets.shape
    out = np.zeros((n, dim, nbits), dtype=np.uint8)
    for j in range(nbits):
        out[:, :, j] = (buckets >> j) & 1
    return out.reshape(n, dim * nbits)


def codec(vecs, cent, nbits):
    v = torch.from_numpy(vecs)
    c = torch.from_numpy(cent)
    codes = torch.argmax(v @ c.T, dim=1)
    resid = v - c[codes]
    B = 2 ** nbits
    levels = torch.arange(0, B, dtype=torch.float32) * (1.0 / B)
    flat = resid.flatten()
    cutoffs = torch.quantile(flat, levels[1:])
    weights = torch.quantile(flat, levels + 0.5 / B)
    buckets = torch.bucketize(resid, cutoffs)               # right=False
    packed = np.packbits(bits_lsb_first(buckets.numpy().astype(np.int64), nbits), axis=1)
    decoded = torch.nn.functional.normalize(c[codes] + weights[buckets], dim=-1)
    avg = resid.abs().mean()
    return (codes.numpy().astype(np.uint32), cutoffs.numpy(), weights.numpy(), packed,
            decoded.numpy().astype(np.float32), float(avg))


def f32_bits(a):
    return [int(x) for x in np.asarray(a, dtype=np.float32).view(np.uint32)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "codec"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    vecs, cent = make_inputs()
    vecs.astype("<f4").tofile(os.path.join(args.out, "vectors.f32"))
    cent.astype("<f4").tofile(os.path.join(args.out, "centroids.f32"))
    manifest = {"n": N, "dim": DIM, "ncentroids": NCENT, "seed": SEED,
                "generator": "tools/reference/codec_reference.py", "nbits": {}}
    codes_ref = None
    for nbits in (1, 2, 4, 8):
        codes, cutoffs, weights, packed, decoded, avg = codec(vecs, cent, nbits)
        if codes_ref is None:
            codes_ref = codes
            codes.astype("<u4").tofile(os.path.join(args.out, "codes.u32"))
        packed.astype(np.uint8).tofile(os.path.join(args.out, "packed_%d.u8" % nbits))
        decoded.astype("<f4").tofile(os.path.join(args.out, "decoded_%d.f32" % nbits))
        manifest["nbits"][str(nbits)] = {
            "cutoffs_bits": f32_bits(cutoffs),
            "weights_bits": f32_bits(weights),
            "avg_residual": avg,
        }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
