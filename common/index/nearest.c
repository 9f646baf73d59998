/* nearest.c: the "nearest centroid" kernel behind k-means and the codec's
 * assignment (index_int.h).
 *
 * Why not cblas_sgemm + argmin: the [rows x k] score block would be written
 * and read back (k = 2^14..2^16 at scale), and OpenBLAS' own threads fight
 * the pool's threads for the same two cores when several workers call it at
 * once. This kernel keeps a 6 x 16 block of dot products in twelve AVX
 * registers (K = dim is short, 128, so a whole row of x stays in L1), turns
 * it into bias - 2 x.c and folds it into the running minimum of each row
 * while still hot. It reaches about the same flop rate as OpenBLAS' sgemm on
 * one core, and the pool decides the threads.
 *
 * Determinism: a row's result depends only on the row and the centroids
 * (the same sequence of FMAs whatever the block or thread it runs in), so
 * results do not depend on the number of threads. Ties go to the smaller
 * centroid index in both the fast and the scalar path.
 *
 * Thread-safety: a prepared jp_nearest is read-only. Allocation: only
 * jp_nearest_init. */
#include "index/index_int.h"
#include "jp_config.h"
#include "util/err.h"
#include "util/mem.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#if JP_HAVE_AVX2
#include <immintrin.h>
#endif

/* Rows per micro-kernel call: 6 rows x 2 registers = 12 accumulators, plus
 * 2 for the centroid panel and 1 broadcast = 15 of the 16 AVX registers. */
#define MR 6
/* Rows per block: 8 micro-blocks. 48 rows x 128 dims x 4 B = 24 KiB of x plus
 * an 8 KiB centroid panel fit the 32 KiB L1 of Zen 3, so each panel loaded
 * from L2 is used eight times. */
#define RB 48
/* Rows per pool item: enough work (~ RB * k * dim * 2 flop per block) to
 * amortise the hand-out, small enough to balance uneven cores. */
#define RUN_ROWS 192

int jp_nearest_init(struct jp_nearest *nb, const float *c, int k, int dim, int l2)
{
  memset(nb, 0, sizeof *nb);
  if (k <= 0 || dim <= 0) return jp_err(JP_EINVAL, "nearest: k=%d dim=%d", k, dim);
  nb->dim = dim;
  nb->k = k;
  nb->kpad = (k + JP_NEAREST_NR - 1) / JP_NEAREST_NR * JP_NEAREST_NR;
  nb->rows = c;
  nb->panels = jp_aligned_alloc((size_t)nb->kpad * (size_t)dim * sizeof(float));
  nb->bias = jp_aligned_alloc((size_t)nb->kpad * sizeof(float));
  if (!nb->panels || !nb->bias) {
    jp_nearest_fini(nb);
    return JP_ENOMEM;
  }
  for (int p = 0; p < nb->kpad / JP_NEAREST_NR; p++) {
    float *panel = nb->panels + (size_t)p * (size_t)dim * JP_NEAREST_NR;
    for (int lane = 0; lane < JP_NEAREST_NR; lane++) {
      int j = p * JP_NEAREST_NR + lane;
      const float *cj = c + (size_t)j * (size_t)dim;
      float norm = 0.0f;
      for (int d = 0; d < dim; d++) {
        float v = j < k ? cj[d] : 0.0f;
        panel[(size_t)d * JP_NEAREST_NR + (size_t)lane] = v;
        norm += v * v;
      }
      nb->bias[j] = j >= k ? INFINITY : (l2 ? norm : 0.0f);
    }
  }
  return 0;
}

void jp_nearest_fini(struct jp_nearest *nb)
{
  if (!nb) return;
  jp_aligned_free(nb->panels);
  jp_aligned_free(nb->bias);
  nb->panels = nb->bias = NULL;
}

static inline const float *row_ptr(const float *x, size_t ldx, const uint32_t *rows, size_t i)
{
  return x + (rows ? (size_t)rows[i] : i) * ldx;
}

void jp_nearest_block_ref(const struct jp_nearest *nb, const float *x, size_t ldx,
                          const uint32_t *rows, size_t n, uint32_t *idx, float *val, float *val2)
{
  for (size_t i = 0; i < n; i++) {
    const float *xi = row_ptr(x, ldx, rows, i);
    float best = INFINITY, second = INFINITY;
    uint32_t bi = 0;
    for (int j = 0; j < nb->k; j++) {
      const float *cj = nb->rows + (size_t)j * (size_t)nb->dim;
      float dot = 0.0f;
      for (int d = 0; d < nb->dim; d++) dot += xi[d] * cj[d];
      float v = nb->bias[j] - 2.0f * dot;
      if (v < best) {
        second = best;
        best = v;
        bi = (uint32_t)j;
      } else if (v < second) {
        second = v;
      }
    }
    idx[i] = bi;
    if (val) val[i] = best;
    if (val2) val2[i] = second;
  }
}

#if JP_HAVE_AVX2
/* out[r * 16 + j] = bias[j] - 2 <a[r], panel column j>, for 6 rows. */
__attribute__((target("avx2,fma")))
static void kern_6x16(const float *const a[MR], const float *panel, const float *bias, int dim,
                      float *out)
{
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
  for (int d = 0; d < dim; d++) {
    __m256 b0 = _mm256_load_ps(panel + (size_t)d * 16);
    __m256 b1 = _mm256_load_ps(panel + (size_t)d * 16 + 8);
    __m256 t;
    t = _mm256_broadcast_ss(a0 + d);
    c00 = _mm256_fmadd_ps(t, b0, c00);
    c01 = _mm256_fmadd_ps(t, b1, c01);
    t = _mm256_broadcast_ss(a1 + d);
    c10 = _mm256_fmadd_ps(t, b0, c10);
    c11 = _mm256_fmadd_ps(t, b1, c11);
    t = _mm256_broadcast_ss(a2 + d);
    c20 = _mm256_fmadd_ps(t, b0, c20);
    c21 = _mm256_fmadd_ps(t, b1, c21);
    t = _mm256_broadcast_ss(a3 + d);
    c30 = _mm256_fmadd_ps(t, b0, c30);
    c31 = _mm256_fmadd_ps(t, b1, c31);
    t = _mm256_broadcast_ss(a4 + d);
    c40 = _mm256_fmadd_ps(t, b0, c40);
    c41 = _mm256_fmadd_ps(t, b1, c41);
    t = _mm256_broadcast_ss(a5 + d);
    c50 = _mm256_fmadd_ps(t, b0, c50);
    c51 = _mm256_fmadd_ps(t, b1, c51);
  }
  const __m256 two = _mm256_set1_ps(2.0f);
  const __m256 bb0 = _mm256_load_ps(bias), bb1 = _mm256_load_ps(bias + 8);
  _mm256_store_ps(out + 0, _mm256_fnmadd_ps(c00, two, bb0));
  _mm256_store_ps(out + 8, _mm256_fnmadd_ps(c01, two, bb1));
  _mm256_store_ps(out + 16, _mm256_fnmadd_ps(c10, two, bb0));
  _mm256_store_ps(out + 24, _mm256_fnmadd_ps(c11, two, bb1));
  _mm256_store_ps(out + 32, _mm256_fnmadd_ps(c20, two, bb0));
  _mm256_store_ps(out + 40, _mm256_fnmadd_ps(c21, two, bb1));
  _mm256_store_ps(out + 48, _mm256_fnmadd_ps(c30, two, bb0));
  _mm256_store_ps(out + 56, _mm256_fnmadd_ps(c31, two, bb1));
  _mm256_store_ps(out + 64, _mm256_fnmadd_ps(c40, two, bb0));
  _mm256_store_ps(out + 72, _mm256_fnmadd_ps(c41, two, bb1));
  _mm256_store_ps(out + 80, _mm256_fnmadd_ps(c50, two, bb0));
  _mm256_store_ps(out + 88, _mm256_fnmadd_ps(c51, two, bb1));
}

/* Fold 16 candidate values of one row into its (best, second, index).
 * The vector test is almost always false after the first panels, so the
 * scalar walk (in column order, which keeps ties on the smaller index) is
 * rare. `thr` is the value a candidate must beat to change anything. */
__attribute__((target("avx2,fma")))
static inline void fold16(const float *v, uint32_t base, float *best, float *second,
                          uint32_t *bi, int track2)
{
  float thr = track2 ? *second : *best;
  __m256 t = _mm256_set1_ps(thr);
  int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(v), t, _CMP_LT_OQ)) |
          _mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(v + 8), t, _CMP_LT_OQ)) << 8;
  if (!m) return;
  for (int j = 0; j < 16; j++) {
    float x = v[j];
    if (x < *best) {
      *second = *best;
      *best = x;
      *bi = base + (uint32_t)j;
    } else if (x < *second) {
      *second = x;
    }
  }
}

__attribute__((target("avx2,fma")))
static void block_avx2(const struct jp_nearest *nb, const float *x, size_t ldx,
                       const uint32_t *rows, size_t n, uint32_t *idx, float *val, float *val2)
{
  _Alignas(32) float out[MR * 16];
  float best[RB], second[RB];
  uint32_t bi[RB];
  const float *a[RB + MR];
  const int track2 = val2 != NULL;
  const int npanels = nb->kpad / JP_NEAREST_NR;

  for (size_t r0 = 0; r0 < n; r0 += RB) {
    int rb = (int)(n - r0 < RB ? n - r0 : RB);
    for (int r = 0; r < rb; r++) {
      a[r] = row_ptr(x, ldx, rows, r0 + (size_t)r);
      best[r] = second[r] = INFINITY;
      bi[r] = 0;
    }
    /* A partial micro-block repeats its last row; those results are dropped. */
    for (int r = rb; r < rb + MR; r++) a[r] = a[rb - 1];
    for (int p = 0; p < npanels; p++) {
      const float *panel = nb->panels + (size_t)p * (size_t)nb->dim * JP_NEAREST_NR;
      const float *bias = nb->bias + (size_t)p * JP_NEAREST_NR;
      uint32_t base = (uint32_t)p * JP_NEAREST_NR;
      for (int m = 0; m < rb; m += MR) {
        kern_6x16(a + m, panel, bias, nb->dim, out);
        int mr = rb - m < MR ? rb - m : MR;
        for (int r = 0; r < mr; r++)
          fold16(out + r * 16, base, &best[m + r], &second[m + r], &bi[m + r], track2);
      }
    }
    for (int r = 0; r < rb; r++) {
      idx[r0 + (size_t)r] = bi[r];
      if (val) val[r0 + (size_t)r] = best[r];
      if (val2) val2[r0 + (size_t)r] = second[r];
    }
  }
}
#endif

int jp_nearest_have_avx2(void)
{
#if JP_HAVE_AVX2
  /* Computed once; racing first calls store the same value (atomic, so
   * that is not a data race). */
  static atomic_int have = -1;
  int h = atomic_load_explicit(&have, memory_order_relaxed);
  if (h < 0) {
    h = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    atomic_store_explicit(&have, h, memory_order_relaxed);
  }
  return h;
#else
  return 0;
#endif
}

void jp_nearest_block(const struct jp_nearest *nb, const float *x, size_t ldx,
                      const uint32_t *rows, size_t n, uint32_t *idx, float *val, float *val2)
{
  if (n == 0) return;
#if JP_HAVE_AVX2
  if (jp_nearest_have_avx2()) {
    block_avx2(nb, x, ldx, rows, n, idx, val, val2);
    return;
  }
#endif
  jp_nearest_block_ref(nb, x, ldx, rows, n, idx, val, val2);
}

struct run_ctx {
  const struct jp_nearest *nb;
  const float *x;
  size_t ldx;
  const uint32_t *rows;
  size_t n;
  uint32_t *idx;
  float *val, *val2;
};

static void run_item(void *vctx, int i, int worker)
{
  (void)worker;
  const struct run_ctx *c = vctx;
  size_t r0 = (size_t)i * RUN_ROWS;
  size_t m = c->n - r0 < RUN_ROWS ? c->n - r0 : RUN_ROWS;
  jp_nearest_block(c->nb, c->rows ? c->x : c->x + r0 * c->ldx, c->ldx,
                   c->rows ? c->rows + r0 : NULL, m, c->idx + r0,
                   c->val ? c->val + r0 : NULL, c->val2 ? c->val2 + r0 : NULL);
}

void jp_nearest_run(const struct jp_nearest *nb, const float *x, size_t ldx,
                    const uint32_t *rows, size_t n, jp_pool *pool, uint32_t *idx, float *val,
                    float *val2)
{
  struct run_ctx c = { nb, x, ldx, rows, n, idx, val, val2 };
  size_t items = (n + RUN_ROWS - 1) / RUN_ROWS;
  if (items == 0) return;
  /* jp_pool_run counts items in int; process huge inputs in slices. */
  const size_t max_items = (size_t)1 << 30;
  for (size_t done = 0; done < items; done += max_items) {
    size_t it = items - done < max_items ? items - done : max_items;
    struct run_ctx s = c;
    size_t r0 = done * RUN_ROWS;
    if (!rows) s.x = x + r0 * ldx;
    else s.rows = rows + r0;
    s.n = n - r0;
    s.idx = idx + r0;
    s.val = val ? val + r0 : NULL;
    s.val2 = val2 ? val2 + r0 : NULL;
    jp_pool_run(pool, (int)it, run_item, &s);
  }
}
