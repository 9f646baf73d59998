/* kmeans.h: the index plan and k-means (shared/reference/plaid.md §2.1-2.2).
 *
 * Plan: sample size n_sample = min(1 + floor(16 * sqrt(120 * N)), N)
 * passages; centroids = 2^floor(log2(16 * sqrt(N * avg_doclen))), capped by
 * the number of sample vectors (k-means cannot place more centroids than it
 * has points). Default nbits by collection size as RAGatouille: 8 below 5,000
 * passages, 4 below 10,000, else 2. k-means iterations as RAGatouille: 20 up
 * to 50k passages, 10 up to 100k, else 4.
 *
 * k-means: plain L2 (Lloyd), seeded init (distinct random sample points),
 * assignment by one fused kernel per block (|c|^2 - 2 x.c), empty clusters
 * re-seeded by splitting a cluster drawn in proportion to its size from a
 * seeded stream (a choice every MPI rank makes identically from global
 * counts), centroids L2-normalised at the end.
 * Distributed use (MPI): every rank holds its own points and the SAME
 * initial centroids; after each local accumulation, `reduce` (if not
 * NULL) must sum sums[k*dim], counts[k] and the objective across ranks in
 * place (MPI_Allreduce); all ranks then compute identical centroids.
 *
 * Thread-safety: reentrant; parallel over the pool. Allocation: scratch is
 * allocated per call and freed before return. */
#ifndef JP_KMEANS_H
#define JP_KMEANS_H
#include <stddef.h>
#include <stdint.h>

#include "util/pool.h"

struct jp_plan {
  uint64_t n_passages;           /* N */
  uint64_t n_sample;             /* passages to sample for k-means */
  double avg_doclen;             /* kept vectors per sampled passage */
  uint64_t n_embeddings_est;     /* N * avg_doclen */
  int ncentroids;                /* power of two */
  int nbits;
  int kmeans_iters;
};

uint64_t jp_plan_sample_size(uint64_t n_passages);
/* Fill ncentroids from n_passages and avg_doclen, capped by n_sample_vectors. */
int  jp_plan_centroids(uint64_t n_passages, double avg_doclen, uint64_t n_sample_vectors);
int  jp_plan_default_nbits(uint64_t n_passages);
int  jp_plan_default_iters(uint64_t n_passages);

/* Cross-rank reduction hook: sum the three arrays over all ranks in place.
 * Sums are double so that they round to float once, after the reduction,
 * as on one rank: float partial sums would round per rank, centroids would
 * differ in the last bits between 1 and R ranks, and on data with many
 * equal vectors near-ties would then break differently and runs diverge.
 * Returns 0 or a JP_E* code (which aborts k-means). */
typedef int (*jp_kmeans_reduce_fn)(void *ctx, double *sums, int64_t *counts, size_t k_dim,
                                   size_t k, double *objective);
/* Progress hook, called after each iteration with the global objective. */
typedef void (*jp_kmeans_progress_fn)(void *ctx, int iter, int iters, double objective);

struct jp_kmeans_opts {
  int k;                         /* clusters; if k > n, k = n (single process; with
                                    reduce, n is per rank and k stays) */
  int iters;                     /* Lloyd iterations */
  uint64_t seed;                 /* init sample; same seed + same points = same result */
  jp_pool *pool;
  jp_kmeans_reduce_fn reduce;    /* NULL: single process */
  void *reduce_ctx;
  jp_kmeans_progress_fn progress;
  void *progress_ctx;
  int normalize;                 /* 1: L2-normalise centroids at the end (PLAID) */
};

/* Cluster x[n, dim] into centroids_out[k, dim] (caller-allocated, k rows of
 * the *requested* k; *k_out gets the k actually used). In distributed use
 * `init` (k*dim, identical on every rank) must be given; NULL picks init
 * points from x with the seed. *objective_out (may be NULL) = sum of squared
 * distances of the final assignment (global when reduce is set). */
int jp_kmeans(const float *x, size_t n, int dim, const struct jp_kmeans_opts *o,
              const float *init, float *centroids_out, int *k_out, double *objective_out);

#endif /* JP_KMEANS_H */
