/* maxsim.c: exact late-interaction scoring (maxsim.h).
 *
 * score(Q, D) = sum_q max(0, max_d <q, d>). The fast kernel reads the query
 * transposed (qt[d][q], 16 queries side by side) and the document rows in
 * their natural layout: a 6-row x 16-query block of dot products lives in
 * twelve AVX registers over the whole dimension, then folds into a running
 * per-query maximum that starts at 0 (the floor). A partial block of rows
 * repeats its last row, which a maximum ignores. Zero-padded query columns
 * score 0 and add nothing.
 *
 * Thread-safety: reentrant. Allocation: none, except jp_maxsim_rank's score
 * array. The query transposition lives on the caller's stack (at most
 * QT_STACK floats); wider queries are processed in groups of 16 columns. */
#include "index/maxsim.h"
#include "index/index_int.h"
#include "jp_config.h"
#include "util/err.h"
#include "util/mem.h"

#include <math.h>
#include <string.h>

#if JP_HAVE_AVX2
#include <immintrin.h>
#endif

#define MR 6
/* Transposed-query floats kept on the stack: 64 KiB, enough for the usual
 * 32 x 128 query in one piece (16 KiB) and for 16 columns of dim <= 1024. */
#define QT_STACK 16384
/* Documents per pool item in jp_maxsim_many. */
#define MANY_ITEM 16

void jp_maxsim_qt_fill(const float *Q, int nq, int dim, float *qt)
{
  const int nqp = jp_maxsim_nqp(nq);
  for (int d = 0; d < dim; d++)
    for (int q = 0; q < nqp; q++)
      qt[(size_t)d * (size_t)nqp + (size_t)q] = q < nq ? Q[(size_t)q * (size_t)dim + (size_t)d] : 0.0f;
}

float jp_maxsim_ref(const float *Q, int nq, const float *D, int nd, int dim)
{
  float score = 0.0f;
  for (int q = 0; q < nq; q++) {
    const float *qv = Q + (size_t)q * (size_t)dim;
    float best = 0.0f;
    for (int j = 0; j < nd; j++) {
      const float *dv = D + (size_t)j * (size_t)dim;
      float dot = 0.0f;
      for (int d = 0; d < dim; d++) dot += qv[d] * dv[d];
      if (dot > best) best = dot;
    }
    score += best;
  }
  return score;
}

/* Scalar path over the transposed query (used when AVX2 is missing). */
static float maxsim_qt_scalar(const float *qt, int nq, const float *D, int nd, int dim)
{
  const int nqp = jp_maxsim_nqp(nq);
  float score = 0.0f;
  for (int q = 0; q < nq; q++) {
    float best = 0.0f;
    for (int j = 0; j < nd; j++) {
      const float *dv = D + (size_t)j * (size_t)dim;
      float dot = 0.0f;
      for (int d = 0; d < dim; d++) dot += qt[(size_t)d * (size_t)nqp + (size_t)q] * dv[d];
      if (dot > best) best = dot;
    }
    score += best;
  }
  return score;
}

#if JP_HAVE_AVX2
__attribute__((target("avx2,fma")))
static float maxsim_qt_avx2(const float *qt, int nq, const float *D, int nd, int dim)
{
  const int nqp = jp_maxsim_nqp(nq);
  __m256 total = _mm256_setzero_ps();
  if (nd <= 0) return 0.0f;
  for (int p = 0; p < nqp; p += 16) {
    const float *panel = qt + p;
    __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
    for (int r = 0; r < nd; r += MR) {
      const float *a[MR];
      for (int i = 0; i < MR; i++)
        a[i] = D + (size_t)(r + i < nd ? r + i : nd - 1) * (size_t)dim;
      __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
      __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
      __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
      __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
      __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
      __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
      for (int d = 0; d < dim; d++) {
        const float *b = panel + (size_t)d * (size_t)nqp;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 t;
        t = _mm256_broadcast_ss(a[0] + d);
        c00 = _mm256_fmadd_ps(t, b0, c00);
        c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a[1] + d);
        c10 = _mm256_fmadd_ps(t, b0, c10);
        c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a[2] + d);
        c20 = _mm256_fmadd_ps(t, b0, c20);
        c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a[3] + d);
        c30 = _mm256_fmadd_ps(t, b0, c30);
        c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a[4] + d);
        c40 = _mm256_fmadd_ps(t, b0, c40);
        c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a[5] + d);
        c50 = _mm256_fmadd_ps(t, b0, c50);
        c51 = _mm256_fmadd_ps(t, b1, c51);
      }
      m0 = _mm256_max_ps(m0, _mm256_max_ps(_mm256_max_ps(c00, c10), _mm256_max_ps(c20, c30)));
      m0 = _mm256_max_ps(m0, _mm256_max_ps(c40, c50));
      m1 = _mm256_max_ps(m1, _mm256_max_ps(_mm256_max_ps(c01, c11), _mm256_max_ps(c21, c31)));
      m1 = _mm256_max_ps(m1, _mm256_max_ps(c41, c51));
    }
    total = _mm256_add_ps(total, _mm256_add_ps(m0, m1));
  }
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}
#endif

static void dots_qt_scalar(const float *qt, int nq, const float *R, int n, int dim, float *out)
{
  const int nqp = jp_maxsim_nqp(nq);
  for (int r = 0; r < n; r++)
    for (int q = 0; q < nqp; q++) {
      float dot = 0.0f;
      for (int d = 0; d < dim; d++) dot += qt[(size_t)d * (size_t)nqp + (size_t)q] * R[(size_t)r * (size_t)dim + (size_t)d];
      out[(size_t)r * (size_t)nqp + (size_t)q] = dot;
    }
}

#if JP_HAVE_AVX2
__attribute__((target("avx2,fma")))
static void dots_qt_avx2(const float *qt, int nq, const float *R, int n, int dim, float *out)
{
  const int nqp = jp_maxsim_nqp(nq);
  for (int r = 0; r < n; r += MR) {
    const float *a[MR];
    float *o[MR];
    _Alignas(32) float sink[16];
    for (int i = 0; i < MR; i++) {
      a[i] = R + (size_t)(r + i < n ? r + i : n - 1) * (size_t)dim;
      o[i] = r + i < n ? out + (size_t)(r + i) * (size_t)nqp : NULL;
    }
    for (int p = 0; p < nqp; p += 16) {
      const float *panel = qt + p;
      __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
      __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
      __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
      __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
      __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
      __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
      for (int d = 0; d < dim; d++) {
        const float *b = panel + (size_t)d * (size_t)nqp;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 t;
        t = _mm256_broadcast_ss(a[0] + d);
        c00 = _mm256_fmadd_ps(t, b0, c00);
        c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a[1] + d);
        c10 = _mm256_fmadd_ps(t, b0, c10);
        c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a[2] + d);
        c20 = _mm256_fmadd_ps(t, b0, c20);
        c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a[3] + d);
        c30 = _mm256_fmadd_ps(t, b0, c30);
        c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a[4] + d);
        c40 = _mm256_fmadd_ps(t, b0, c40);
        c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a[5] + d);
        c50 = _mm256_fmadd_ps(t, b0, c50);
        c51 = _mm256_fmadd_ps(t, b1, c51);
      }
#define STORE2(i, x0, x1)                                                     \
  do {                                                                        \
    float *dst = o[i] ? o[i] + p : sink;                                      \
    _mm256_storeu_ps(dst, x0);                                                \
    _mm256_storeu_ps(dst + 8, x1);                                            \
  } while (0)
      STORE2(0, c00, c01);
      STORE2(1, c10, c11);
      STORE2(2, c20, c21);
      STORE2(3, c30, c31);
      STORE2(4, c40, c41);
      STORE2(5, c50, c51);
#undef STORE2
    }
  }
}
#endif

void jp_dots_qt(const float *qt, int nq, const float *R, int n, int dim, float *out)
{
  if (n <= 0) return;
#if JP_HAVE_AVX2
  if (jp_nearest_have_avx2()) {
    dots_qt_avx2(qt, nq, R, n, dim, out);
    return;
  }
#endif
  dots_qt_scalar(qt, nq, R, n, dim, out);
}

float jp_maxsim_qt(const float *qt, int nq, const float *D, int nd, int dim)
{
  if (nq <= 0 || nd <= 0) return 0.0f;
#if JP_HAVE_AVX2
  if (jp_nearest_have_avx2()) return maxsim_qt_avx2(qt, nq, D, nd, dim);
#endif
  return maxsim_qt_scalar(qt, nq, D, nd, dim);
}

/* Columns of the query that fit the stack buffer at this dim (a multiple of
 * 16), or 0 when even 16 do not (then the scalar reference is used). */
static int qt_group(int nq, int dim)
{
  int cols = QT_STACK / (dim > 0 ? dim : 1) / JP_MAXSIM_NR * JP_MAXSIM_NR;
  int nqp = jp_maxsim_nqp(nq);
  return cols < nqp ? cols : nqp;
}

float jp_maxsim(const float *Q, int nq, const float *D, int nd, int dim)
{
  _Alignas(64) float qt[QT_STACK];
  if (nq <= 0 || nd <= 0 || dim <= 0) return 0.0f;
  int group = qt_group(nq, dim);
  if (group == 0) return jp_maxsim_ref(Q, nq, D, nd, dim);
  float score = 0.0f;
  for (int q0 = 0; q0 < nq; q0 += group) {
    int g = nq - q0 < group ? nq - q0 : group;
    jp_maxsim_qt_fill(Q + (size_t)q0 * (size_t)dim, g, dim, qt);
    score += jp_maxsim_qt(qt, g, D, nd, dim);
  }
  return score;
}

struct many_ctx {
  const float *qt;
  int nq;
  const float *D;
  const size_t *offsets;   /* row offset of each document */
  const int32_t *doclens;
  int n, dim;
  float *scores;
  int accumulate;
};

static void many_item(void *vctx, int item, int worker)
{
  (void)worker;
  const struct many_ctx *c = vctx;
  int i0 = item * MANY_ITEM, i1 = i0 + MANY_ITEM < c->n ? i0 + MANY_ITEM : c->n;
  for (int i = i0; i < i1; i++) {
    float s = jp_maxsim_qt(c->qt, c->nq, c->D + c->offsets[i] * (size_t)c->dim, c->doclens[i],
                           c->dim);
    c->scores[i] = c->accumulate ? c->scores[i] + s : s;
  }
}

/* Scores of n documents; offsets[n] are computed by the caller. */
static void many_with_offsets(const float *Q, int nq, const float *D, const int32_t *doclens,
                              const size_t *offsets, int n, int dim, jp_pool *pool, float *scores)
{
  _Alignas(64) float qt[QT_STACK];
  int group = qt_group(nq, dim);
  if (group == 0 || nq <= 0) {
    for (int i = 0; i < n; i++)
      scores[i] = jp_maxsim_ref(Q, nq, D + offsets[i] * (size_t)dim, doclens[i], dim);
    return;
  }
  for (int q0 = 0; q0 < nq; q0 += group) {
    int g = nq - q0 < group ? nq - q0 : group;
    jp_maxsim_qt_fill(Q + (size_t)q0 * (size_t)dim, g, dim, qt);
    struct many_ctx c = { qt, g, D, offsets, doclens, n, dim, scores, q0 > 0 };
    jp_pool_run(pool, (n + MANY_ITEM - 1) / MANY_ITEM, many_item, &c);
  }
}

/* Offsets need memory proportional to n; small inputs use the stack. */
#define OFFSETS_STACK 1024

static int make_offsets(const int32_t *doclens, int n, size_t *stackbuf, size_t **out)
{
  size_t *off = n <= OFFSETS_STACK ? stackbuf : jp_malloc(sizeof *off * (size_t)n);
  if (!off) return JP_ENOMEM;
  size_t acc = 0;
  for (int i = 0; i < n; i++) {
    off[i] = acc;
    acc += doclens[i] > 0 ? (size_t)doclens[i] : 0;
  }
  *out = off;
  return 0;
}

void jp_maxsim_many(const float *Q, int nq, const float *D, const int32_t *doclens, int n,
                    int dim, jp_pool *pool, float *scores)
{
  size_t stackbuf[OFFSETS_STACK], *off = NULL;
  if (n <= 0) return;
  if (make_offsets(doclens, n, stackbuf, &off) < 0) {
    /* No memory for the offsets table: walk the documents serially instead. */
    size_t acc = 0;
    for (int i = 0; i < n; i++) {
      scores[i] = jp_maxsim(Q, nq, D + acc * (size_t)dim, doclens[i], dim);
      acc += doclens[i] > 0 ? (size_t)doclens[i] : 0;
    }
    return;
  }
  many_with_offsets(Q, nq, D, doclens, off, n, dim, pool, scores);
  if (off != stackbuf) jp_free(off);
}

int jp_maxsim_rank(const float *Q, int nq, const float *D, const int32_t *doclens, int n,
                   int dim, int k, jp_pool *pool, struct jp_ranked *out, int *n_out)
{
  *n_out = 0;
  if (n < 0 || k < 0 || dim <= 0 || nq < 0)
    return jp_err(JP_EINVAL, "maxsim rank: n=%d k=%d dim=%d nq=%d", n, k, dim, nq);
  if (n == 0 || k == 0) return 0;
  for (int i = 0; i < n; i++)
    if (doclens[i] < 0) return jp_err(JP_EINVAL, "maxsim rank: document %d has length %d", i, doclens[i]);
  float *scores = jp_malloc(sizeof *scores * (size_t)n);
  struct jp_scored *v = jp_malloc(sizeof *v * (size_t)n);
  if (!scores || !v) {
    jp_free(scores);
    jp_free(v);
    return JP_ENOMEM;
  }
  jp_maxsim_many(Q, nq, D, doclens, n, dim, pool, scores);
  for (int i = 0; i < n; i++) {
    v[i].score = scores[i];
    v[i].idx = (uint32_t)i;
    v[i].key = (uint64_t)i;
  }
  size_t m = jp_topk_select(v, (size_t)n, (size_t)k);
  for (size_t i = 0; i < m; i++) {
    out[i].index = (int)v[i].idx;
    out[i].score = v[i].score;
  }
  *n_out = (int)m;
  jp_free(scores);
  jp_free(v);
  return 0;
}
