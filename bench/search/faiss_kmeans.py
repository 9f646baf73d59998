#!/usr/bin/python3
"""faiss_kmeans.py: the FAISS side of bench_search's k-means comparison.

Reads float32 points [n, d] and initial centroids [k, d] (raw little-endian
files written by bench_search), runs faiss.Kmeans for the given iterations
from exactly those centroids (no subsampling: max_points_per_centroid = n),
writes the final centroids (before any normalisation) and prints one JSON
line {"seconds": training time, "faiss_obj": FAISS' own last objective}.
bench_search computes the final objective of both sides the same way.

Threads: faiss.omp_set_num_threads(--threads); OMP_WAIT_POLICY and
OPENBLAS_NUM_THREADS come from the environment bench_search sets.
Must run under Debian's /usr/bin/python3 (python3-faiss 1.7.3).
"""

import argparse
import json
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--x", required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    x = np.fromfile(args.x, dtype="<f4").reshape(-1, args.dim)
    init = np.fromfile(args.init, dtype="<f4").reshape(-1, args.dim)
    k = init.shape[0]
    faiss.omp_set_num_threads(args.threads)
    km = faiss.Kmeans(args.dim, k, niter=args.iters, seed=1, verbose=False,
                      max_points_per_centroid=x.shape[0], min_points_per_centroid=1)
    t = time.perf_counter()
    km.train(x, init_centroids=init)
    seconds = time.perf_counter() - t
    km.centroids.astype("<f4").tofile(args.out)
    print(json.dumps({"seconds": seconds, "faiss_obj": float(km.obj[-1])}))


if __name__ == "__main__":
    main()
