/* index_int.h: internals shared by the files of common/index and their
 * tests. Not a public API: nothing outside common/index, tests/unit/index
 * and bench/search (which scores k-means objectives with the kernel)
 * includes it.
 *
 * - The "nearest centroid" kernel (nearest.c) used by k-means (L2) and by
 *   the codec (max inner product): a fused AVX2 kernel that computes dot
 *   products in registers and keeps the running minimum per row, so the
 *   [n x k] score matrix is never written to memory, and that needs no
 *   threads of its own (OpenBLAS' threads would fight the pool's).
 * - The codec's per-byte lookup table for fast decompression (codec.c),
 *   built once by whoever decompresses many passages (jp_part).
 *
 * Thread-safety: prepared structures are immutable and shared by threads.
 * Allocation: the _init functions allocate, the kernels do not. */
#ifndef JP_INDEX_INT_H
#define JP_INDEX_INT_H
#include <stddef.h>
#include <stdint.h>

#include "index/codec.h"
#include "util/pool.h"

/* ---- nearest.c -------------------------------------------------------------- */

/* Centroids per packed panel: two 8-float AVX registers. */
#define JP_NEAREST_NR 16

/* Centroids prepared for the kernel. The kernel minimises
 * bias[j] - 2 <x, c_j> over j: with bias = |c_j|^2 (l2 = 1) that is the
 * nearest centroid in L2 (distance = |x|^2 + value); with bias = 0 it is the
 * largest inner product (value = -2 max <x, c>). Ties go to the smaller j. */
struct jp_nearest {
  int dim;
  int k;                 /* real centroids */
  int kpad;              /* k rounded up to JP_NEAREST_NR */
  float *panels;         /* [kpad / NR][dim][NR]: centroid d-th coords side by side */
  float *bias;           /* [kpad]; +inf on the padding so it never wins */
  const float *rows;     /* the k x dim centroids (borrowed; scalar path) */
};

int  jp_nearest_init(struct jp_nearest *nb, const float *c, int k, int dim, int l2);
void jp_nearest_fini(struct jp_nearest *nb);

/* For n rows of x (row i at x + rows[i] * ldx, or x + i * ldx when rows is
 * NULL): idx[i] = argmin, val[i] = the minimum, and, when val2 is not NULL,
 * val2[i] = the second smallest value (+inf when k = 1). Single-threaded;
 * no allocation. The _ref form is the scalar oracle of the same. */
void jp_nearest_block(const struct jp_nearest *nb, const float *x, size_t ldx,
                      const uint32_t *rows, size_t n, uint32_t *idx, float *val, float *val2);
void jp_nearest_block_ref(const struct jp_nearest *nb, const float *x, size_t ldx,
                          const uint32_t *rows, size_t n, uint32_t *idx, float *val,
                          float *val2);
/* The same over the pool, in fixed blocks of rows (results do not depend
 * on the number of threads). */
void jp_nearest_run(const struct jp_nearest *nb, const float *x, size_t ldx,
                    const uint32_t *rows, size_t n, jp_pool *pool, uint32_t *idx, float *val,
                    float *val2);
/* 1 when the AVX2 kernel is used on this CPU. */
int jp_nearest_have_avx2(void);

/* ---- codec.c ---------------------------------------------------------------- */

/* Per-byte decode table: lut[byte * per + j] = bucket weight of the j-th
 * dimension stored in that byte, per = 8 / nbits. 256 * 8 floats at most. */
struct jp_codec_lut {
  int nbits;
  int per;               /* dimensions per byte */
  float lut[256 * 8];
};

void jp_codec_lut_init(const struct jp_codec *c, struct jp_codec_lut *lut);
/* jp_codec_decompress with a prebuilt table (the fast path). */
void jp_codec_decompress_lut(const struct jp_codec *c, const struct jp_codec_lut *lut,
                             const uint32_t *codes, const uint8_t *packed, size_t n,
                             float *out);

/* ---- maxsim.c --------------------------------------------------------------- */

/* The kernels read the query transposed: qt[d * nqp + q] with nqp = nq
 * rounded up to JP_MAXSIM_NR and zero columns after nq (a zero query scores
 * max(0, 0) = 0, so the padding adds nothing). */
#define JP_MAXSIM_NR 16
static inline int jp_maxsim_nqp(int nq) { return (nq + JP_MAXSIM_NR - 1) / JP_MAXSIM_NR * JP_MAXSIM_NR; }
void jp_maxsim_qt_fill(const float *Q, int nq, int dim, float *qt);
/* sum over q of max(0, max_d <Q_q, D_d>) for one document, from the
 * transposed query (AVX2 when available, else the scalar loop). */
float jp_maxsim_qt(const float *qt, int nq, const float *D, int nd, int dim);
/* All dot products of n rows R[n, dim] with the transposed query:
 * out[r * nqp + q] = <R_r, Q_q> (padding columns get 0). The centroid score
 * matrix of PLAID's first stage, without OpenBLAS (whose threads would
 * compete with the pool's). Single-threaded; callers split rows. */
void jp_dots_qt(const float *qt, int nq, const float *R, int n, int dim, float *out);

/* ---- topk.c ------------------------------------------------------------------ */

/* A scored item ranked by score (descending; NaN ranks last) then key
 * (ascending: the passage id or input index, so ties are stable). */
struct jp_scored {
  float score;
  uint32_t idx;          /* caller's handle (slot, position) */
  uint64_t key;          /* tie-breaker */
};

/* 1 if a ranks before b. */
static inline int jp_scored_before(const struct jp_scored *a, const struct jp_scored *b)
{
  int an = a->score != a->score, bn = b->score != b->score;
  if (an != bn) return bn;
  if (!an && a->score != b->score) return a->score > b->score;
  return a->key < b->key;
}

/* Move the best min(k, n) items of v[0, n) to the front, in rank order.
 * O(n + k log k) expected; no allocation. Returns min(k, n). */
size_t jp_topk_select(struct jp_scored *v, size_t n, size_t k);

#endif /* JP_INDEX_INT_H */
