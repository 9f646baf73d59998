/* maxsim.h: exact late-interaction scoring without an index.
 *
 * score(Q, D) = sum over query rows q of max(0, max over document rows d of
 * <q, d>). The floor at 0 is ColBERT's CPU rule (segmented_maxsim starts
 * each max at 0) and what RAGatouille's zero-padded in-memory search does;
 * the GPU path does not floor. One rule everywhere keeps PLAID, exhaustive,
 * rerank and cluster merges comparable; a document with no rows scores 0. These kernels serve exhaustive search,
 * the last PLAID stage, rerank of caller-given texts and search over encoded
 * documents held in memory (RAGatouille's encode + search_encoded_docs).
 * Each fast kernel has its scalar reference beside it (the _ref forms) and a
 * parity test. Kernels do not allocate and do not create threads. */
#ifndef JP_MAXSIM_H
#define JP_MAXSIM_H
#include <stddef.h>
#include <stdint.h>

#include "util/pool.h"

/* One document: Q [nq, dim], D [nd, dim] -> score. */
float jp_maxsim(const float *Q, int nq, const float *D, int nd, int dim);
float jp_maxsim_ref(const float *Q, int nq, const float *D, int nd, int dim);

/* Many documents stored back to back: D holds sum(doclens) rows; scores[n]. */
void jp_maxsim_many(const float *Q, int nq, const float *D, const int32_t *doclens, int n,
                    int dim, jp_pool *pool, float *scores);

struct jp_ranked {
  int index;        /* document index in the input */
  float score;
};

/* Rank n documents (concatenated as above) for one query: the top k
 * (k <= n; ties by smaller index) into out[k]; *n_out = min(k, n). */
int jp_maxsim_rank(const float *Q, int nq, const float *D, const int32_t *doclens, int n,
                   int dim, int k, jp_pool *pool, struct jp_ranked *out, int *n_out);

#endif /* JP_MAXSIM_H */
