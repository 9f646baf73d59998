/* kmeans.c: the index plan and Lloyd k-means (kmeans.h).
 *
 * One iteration: (1) assign every point to its nearest centroid with the
 * fused AVX2 kernel of nearest.c (|c|^2 - 2 x.c, no [n x k] matrix in
 * memory), parallel over the pool, skipping the points whose assignment
 * provably cannot change (below); (2) per-cluster sums and counts, kept in
 * double from one iteration to the next and updated only for the points
 * that changed cluster (one streaming pass over x in the first iteration);
 * (3) the reduce hook (MPI) on copies of them; (4) new centroids =
 * sums / counts, divided in double and rounded to float once, empty
 * clusters re-seeded by splitting.
 *
 * Determinism: every floating-point sum has a fixed order (points in point
 * order), and a row's assignment does not depend on the block or thread it
 * runs in, so the result depends only on the points, k, the seed (or init)
 * and the iterations: the same with 1 thread or 16.
 *
 * Skipping (Hamerly's bounds): each point keeps a lower bound l on its
 * distance to every centroid but its own. When centroids move by delta_j,
 * l shrinks by the largest delta of the others (triangle inequality),
 * except for the BIG_MOVERS centroids that moved most, whose distances are
 * measured exactly (otherwise one split centroid jumping far would void
 * every bound); the
 * distance u to its own centroid is recomputed exactly (one dot product,
 * which the objective needs anyway). If u + margin <= l, no other centroid
 * can be nearer and the full scan over k centroids is skipped. The margin
 * covers float rounding of the distances, so the assignments are Lloyd's
 * (up to near-ties inside rounding error). Once clusters settle most points
 * skip, which is where most of the speed over FAISS comes from.
 *
 * Empty clusters (a duplicated init point, a far outlier) are re-seeded by
 * splitting another cluster in two: both copies move apart by a seeded
 * +-EPS per dimension, and the next assignment divides the points. The
 * cluster to split is drawn with probability proportional to its size (as
 * FAISS does) from a seeded stream. This uses only global quantities
 * (counts, centroids, the seed), so every MPI rank makes the same split,
 * which "take the farthest point" could not do without another collective.
 * (Change from the first draft of kmeans.h, which said farthest points; the
 * header now says splitting.) Always splitting the largest cluster was
 * tried and ended ~0.5% worse than FAISS on marker-heavy data: the largest
 * clusters there are tight ([CLS]-like) and gain little from a split.
 *
 * Thread-safety: reentrant. Allocation: scratch per call, freed on return. */
#include "index/kmeans.h"
#include "index/index_int.h"
#include "jp_config.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/mem.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if JP_HAVE_AVX2
#include <immintrin.h>
#endif

/* Relative perturbation of a split (FAISS uses the same magnitude): big
 * enough to break the tie between the two copies, small enough not to move
 * either far from the cluster. */
#define SPLIT_EPS (1.0f / 1024.0f)
/* RAGatouille / ColBERT plan constants (plaid.md §2.1, §4.2). */
#define PLAN_TYPICAL_DOCLEN 120.0
#define NBITS8_BELOW 5000
#define NBITS4_BELOW 10000
#define ITERS20_UPTO 50000
#define ITERS10_UPTO 100000

/* ---- plan ------------------------------------------------------------------------ */

uint64_t jp_plan_sample_size(uint64_t n_passages)
{
  double s = 1.0 + floor(16.0 * sqrt(PLAN_TYPICAL_DOCLEN * (double)n_passages));
  uint64_t n = (uint64_t)s;
  return n < n_passages ? n : n_passages;
}

int jp_plan_centroids(uint64_t n_passages, double avg_doclen, uint64_t n_sample_vectors)
{
  double est = (double)n_passages * (avg_doclen > 0 ? avg_doclen : 0.0);
  int k = 1;
  if (est >= 1.0) {
    double lg = floor(log2(16.0 * sqrt(est)));
    if (lg > 30) lg = 30;
    k = 1 << (int)lg;
  }
  /* k-means cannot place more centroids than it has points. */
  while (k > 1 && (uint64_t)k > n_sample_vectors) k >>= 1;
  return k;
}

int jp_plan_default_nbits(uint64_t n_passages)
{
  return n_passages < NBITS8_BELOW ? 8 : n_passages < NBITS4_BELOW ? 4 : 2;
}

int jp_plan_default_iters(uint64_t n_passages)
{
  return n_passages <= ITERS20_UPTO ? 20 : n_passages <= ITERS10_UPTO ? 10 : 4;
}

/* ---- k-means ---------------------------------------------------------------------- */

/* Choose k distinct points with the seed (Floyd's algorithm over an open
 * addressing set), in ascending index order. */
static int pick_init(size_t n, int k, uint64_t seed, size_t *idx)
{
  size_t cap = 16;
  while (cap < (size_t)k * 2) cap *= 2;
  size_t *set = jp_malloc(sizeof *set * cap);
  if (!set) return JP_ENOMEM;
  for (size_t i = 0; i < cap; i++) set[i] = SIZE_MAX;
  uint64_t st = seed ^ 0x6a09e667f3bcc909ULL;
  size_t m = 0;
  for (size_t j = n - (size_t)k; j < n; j++) {
    size_t t = (size_t)(jp_rand64(&st) % (uint64_t)(j + 1));
    /* Take t unless already chosen, else j (which cannot be). */
    size_t h = (size_t)jp_hash64(&t, sizeof t) & (cap - 1);
    int found = 0;
    while (set[h] != SIZE_MAX) {
      if (set[h] == t) {
        found = 1;
        break;
      }
      h = (h + 1) & (cap - 1);
    }
    size_t pick = found ? j : t;
    if (found) {
      h = (size_t)jp_hash64(&pick, sizeof pick) & (cap - 1);
      while (set[h] != SIZE_MAX) h = (h + 1) & (cap - 1);
    }
    set[h] = pick;
    idx[m++] = pick;
  }
  jp_free(set);
  /* Ascending order: the init does not depend on the hash layout. */
  for (size_t i = 1; i < m; i++) {
    size_t v = idx[i], j = i;
    while (j > 0 && idx[j - 1] > v) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = v;
  }
  return 0;
}

static void split_empty(float *C, int64_t *counts, int k, int dim, uint64_t seed, int iter)
{
  for (int j = 0; j < k; j++) {
    if (counts[j] > 0) continue;
    /* The cluster to split: drawn with probability proportional to its
     * points beyond the first, from a seeded stream every rank shares. */
    int64_t total = 0;
    for (int m = 0; m < k; m++) total += counts[m] > 1 ? counts[m] - 1 : 0;
    if (total == 0) return;   /* nothing left to split (fewer points than clusters) */
    uint64_t pick_state = seed ^ 0x94d049bb133111ebULL ^ ((uint64_t)(iter + 1) << 20) ^ (uint64_t)j;
    int64_t r = (int64_t)(jp_rand64(&pick_state) % (uint64_t)total);
    int big = 0;
    for (int m = 0; m < k; m++) {
      int64_t w = counts[m] > 1 ? counts[m] - 1 : 0;
      if (r < w) {
        big = m;
        break;
      }
      r -= w;
    }
    JP_LOG_DEBUG("kmeans: iteration %d: cluster %d is empty, splitting cluster %d (%lld points)",
                 iter + 1, j, big, (long long)counts[big]);
    float *cj = C + (size_t)j * (size_t)dim, *cb = C + (size_t)big * (size_t)dim;
    uint64_t st = seed ^ ((uint64_t)(iter + 1) << 32) ^ (uint64_t)j;
    float scale = 0.0f;
    for (int d = 0; d < dim; d++) scale += fabsf(cb[d]);
    scale = scale > 0.0f ? scale / (float)dim : 1.0f;
    for (int d = 0; d < dim; d++) {
      float s = (jp_rand64(&st) & 1) ? 1.0f : -1.0f;
      /* Relative to the coordinate, or to the mean magnitude for zeros. */
      float delta = SPLIT_EPS * s * (cb[d] != 0.0f ? fabsf(cb[d]) : scale);
      cj[d] = cb[d] + delta;
      cb[d] = cb[d] - delta;
    }
    counts[j] = counts[big] / 2;
    counts[big] -= counts[j];
  }
}

/* Points per pool item in the bounds step. */
#define BOUND_ITEM 1024
/* Centroids measured exactly in the bounds step (the largest movers): 16
 * dot products per point cost ~1.5% of a full scan at k = 1024 and keep a
 * few split or far-moving centroids from invalidating every bound. */
#define BIG_MOVERS 16

struct bounds {
  const float *x;
  const float *xnorm;
  const float *C;
  const float *cnorm;
  const uint32_t *assign;
  float *d2;                 /* exact squared distance to the own centroid */
  float *lower;              /* lower bound on the distance to any other */
  uint8_t *redo;             /* 1: needs the full scan */
  float delta_rest;          /* largest movement outside the big movers */
  const uint32_t *big_ids;   /* [n_big] centroids that moved the most (NULL: none) */
  const uint32_t *big_idx;   /* per point: nearest big mover (index into big_ids) */
  const float *big_v, *big_v2;  /* per point: |c|^2 - 2 x.c of the nearest / second big mover */
  float cmax2;               /* largest |c|^2 (rounding margin) */
  size_t n;
  int dim;
};

static float dot_ref(const float *a, const float *b, int dim)
{
  float s = 0.0f;
  for (int d = 0; d < dim; d++) s += a[d] * b[d];
  return s;
}

#if JP_HAVE_AVX2
__attribute__((target("avx2,fma")))
static float dot_avx2(const float *a, const float *b, int dim)
{
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int d = 0;
  for (; d + 16 <= dim; d += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), s1);
  }
  s0 = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float s = _mm_cvtss_f32(h);
  for (; d < dim; d++) s += a[d] * b[d];
  return s;
}
#endif

static void bounds_item(void *vctx, int item, int worker)
{
  (void)worker;
  const struct bounds *b = vctx;
  const size_t dim = (size_t)b->dim;
  size_t i0 = (size_t)item * BOUND_ITEM, i1 = i0 + BOUND_ITEM < b->n ? i0 + BOUND_ITEM : b->n;
#if JP_HAVE_AVX2
  const int avx2 = jp_nearest_have_avx2();
#endif
  for (size_t i = i0; i < i1; i++) {
    uint32_t a = b->assign[i];
    const float *xi = b->x + i * dim, *ca = b->C + (size_t)a * dim;
#if JP_HAVE_AVX2
    float dot = avx2 ? dot_avx2(xi, ca, b->dim) : dot_ref(xi, ca, b->dim);
#else
    float dot = dot_ref(xi, ca, b->dim);
#endif
    float d2 = b->xnorm[i] + b->cnorm[a] - 2.0f * dot;
    if (d2 < 0.0f) d2 = 0.0f;
    b->d2[i] = d2;
    /* Others that moved little: the old bound minus their largest move.
     * The big movers: their exact distance (the nearest one that is not a). */
    float l = b->lower[i] - b->delta_rest;
    if (b->big_ids) {
      float v = b->big_ids[b->big_idx[i]] == a ? b->big_v2[i] : b->big_v[i];
      float db2 = b->xnorm[i] + v;
      float db = sqrtf(db2 > 0.0f ? db2 : 0.0f);
      if (db < l) l = db;
    }
    b->lower[i] = l;
    /* Rounding of a squared distance is at most ~dim ulps of its terms; in
     * distance units that is eps2 / (u + l) (difference of squares). */
    float u = sqrtf(d2);
    float eps2 = (float)b->dim * FLT_EPSILON * (b->xnorm[i] + b->cmax2);
    float margin = eps2 / (u + (l > 0.0f ? l : 0.0f) + 1e-3f);
    b->redo[i] = !(u + margin <= l);
  }
}

int jp_kmeans(const float *x, size_t n, int dim, const struct jp_kmeans_opts *o,
              const float *init, float *centroids_out, int *k_out, double *objective_out)
{
  struct jp_nearest nb;
  double *sums = NULL;
  float *C = NULL, *val = NULL, *xnorm = NULL, *prevC = NULL, *cnorm = NULL;
  float *d2 = NULL, *lower = NULL, *val2 = NULL, *delta = NULL;
  uint32_t *assign = NULL, *rows = NULL, *idx = NULL;
  double *lsum = NULL;
  int64_t *lcount = NULL;
  uint8_t *redo = NULL;
  uint32_t big_ids[BIG_MOVERS];
  float *bigC = NULL;
  size_t *pick = NULL;
  int64_t *counts = NULL;
  double objective = 0.0;
  int rc = 0;

  memset(&nb, 0, sizeof nb);
  if (k_out) *k_out = 0;
  if (objective_out) *objective_out = 0.0;
  if (!o || !centroids_out || dim <= 0 || (n > 0 && !x))
    return jp_err(JP_EINVAL, "kmeans: bad arguments");
  if (o->k < 1) return jp_err(JP_EINVAL, "kmeans: k must be >= 1, not %d", o->k);
  if (o->iters < 1) return jp_err(JP_EINVAL, "kmeans: iterations must be >= 1, not %d", o->iters);
  if (o->reduce && !init) return jp_err(JP_EINVAL, "kmeans: distributed use needs identical init centroids");
  if (n > UINT32_MAX) return jp_err(JP_ETOOBIG, "kmeans: %zu points (at most %u)", n, UINT32_MAX);
  int k = o->k;
  if (!o->reduce) {
    if (n == 0) return jp_err(JP_EINVAL, "kmeans: no points");
    if ((size_t)k > n) k = (int)n;
  }
  const size_t kd = (size_t)k * (size_t)dim;

  C = jp_aligned_alloc(sizeof *C * kd);
  sums = jp_malloc(sizeof *sums * kd);
  counts = jp_malloc(sizeof *counts * (size_t)k);
  lsum = jp_malloc(sizeof *lsum * kd);
  lcount = jp_malloc(sizeof *lcount * (size_t)k);
  assign = jp_malloc(sizeof *assign * (n ? n : 1));
  val = jp_malloc(sizeof *val * (n ? n : 1));
  xnorm = jp_malloc(sizeof *xnorm * (n ? n : 1));
  prevC = jp_malloc(sizeof *prevC * kd);
  cnorm = jp_malloc(sizeof *cnorm * (size_t)k);
  delta = jp_malloc(sizeof *delta * (size_t)k);
  d2 = jp_malloc(sizeof *d2 * (n ? n : 1));
  lower = jp_malloc(sizeof *lower * (n ? n : 1));
  val2 = jp_malloc(sizeof *val2 * (n ? n : 1));
  rows = jp_malloc(sizeof *rows * (n ? n : 1));
  idx = jp_malloc(sizeof *idx * (n ? n : 1));
  redo = jp_malloc(n ? n : 1);
  bigC = jp_malloc(sizeof *bigC * (size_t)BIG_MOVERS * (size_t)dim);
  if (!C || !sums || !counts || !lsum || !lcount || !assign || !val || !xnorm || !prevC ||
      !cnorm || !delta || !d2 || !lower || !val2 || !rows || !idx || !redo || !bigC) {
    rc = JP_ENOMEM;
    goto out;
  }
  if (init) {
    memcpy(C, init, sizeof *C * kd);
  } else {
    pick = jp_malloc(sizeof *pick * (size_t)k);
    if (!pick) {
      rc = JP_ENOMEM;
      goto out;
    }
    if ((rc = pick_init(n, k, o->seed, pick)) < 0) goto out;
    for (int j = 0; j < k; j++)
      memcpy(C + (size_t)j * (size_t)dim, x + pick[j] * (size_t)dim, sizeof *C * (size_t)dim);
  }
  for (size_t i = 0; i < n; i++) {
    const float *xi = x + i * (size_t)dim;
    float s = 0.0f;
    for (int d = 0; d < dim; d++) s += xi[d] * xi[d];
    xnorm[i] = s;
  }

  for (int it = 0; it < o->iters; it++) {
    /* (1) assignment: the full scan for the points whose bounds fail */
    if ((rc = jp_nearest_init(&nb, C, k, dim, 1)) < 0) goto out;
    size_t nredo = 0;
    if (it == 0) {
      jp_nearest_run(&nb, x, (size_t)dim, NULL, n, o->pool, assign, val, val2);
      for (size_t i = 0; i < n; i++) {
        float a = xnorm[i] + val[i], b = xnorm[i] + val2[i];
        d2[i] = a > 0.0f ? a : 0.0f;
        lower[i] = sqrtf(b > 0.0f ? b : 0.0f);
      }
    } else {
      struct bounds b = { x, xnorm, C, nb.bias, assign, d2, lower, redo, 0.0f, NULL, NULL, NULL,
                          NULL, 0.0f, n, dim };
      for (int j = 0; j < k; j++)
        if (nb.bias[j] > b.cmax2) b.cmax2 = nb.bias[j];
      /* The few centroids that moved the most (splits, early iterations)
       * would shrink every point's bound; they are measured exactly
       * instead, with one small kernel pass over the points. */
      int n_big = k - 1 < BIG_MOVERS ? k - 1 : BIG_MOVERS;
      for (int t = 0; t < n_big; t++) big_ids[t] = UINT32_MAX;
      for (int j = 0; j < k; j++) {
        float dj = delta[j];
        if (n_big == 0 || (big_ids[n_big - 1] != UINT32_MAX && dj <= delta[big_ids[n_big - 1]])) {
          if (dj > b.delta_rest) b.delta_rest = dj;
          continue;
        }
        /* Insert j into the descending list; the one pushed out joins the rest. */
        uint32_t out_j = big_ids[n_big - 1];
        int t = n_big - 1;
        while (t > 0 && (big_ids[t - 1] == UINT32_MAX || delta[big_ids[t - 1]] < dj)) {
          big_ids[t] = big_ids[t - 1];
          t--;
        }
        big_ids[t] = (uint32_t)j;
        if (out_j != UINT32_MAX && delta[out_j] > b.delta_rest) b.delta_rest = delta[out_j];
      }
      if (n_big > 0 && delta[big_ids[n_big - 1]] > b.delta_rest) {
        for (int t = 0; t < n_big; t++)
          memcpy(bigC + (size_t)t * (size_t)dim, C + (size_t)big_ids[t] * (size_t)dim,
                 sizeof *C * (size_t)dim);
        struct jp_nearest nbb;
        if ((rc = jp_nearest_init(&nbb, bigC, n_big, dim, 1)) < 0) goto out;
        jp_nearest_run(&nbb, x, (size_t)dim, NULL, n, o->pool, idx, val, val2);
        jp_nearest_fini(&nbb);
        b.big_ids = big_ids;
        b.big_idx = idx;
        b.big_v = val;
        b.big_v2 = val2;
      } else {
        /* No standout movers: every other centroid counts in delta_rest. */
        for (int t = 0; t < n_big; t++)
          if (delta[big_ids[t]] > b.delta_rest) b.delta_rest = delta[big_ids[t]];
      }
      jp_pool_run(o->pool, (int)((n + BOUND_ITEM - 1) / BOUND_ITEM), bounds_item, &b);
      for (size_t i = 0; i < n; i++)
        if (redo[i]) rows[nredo++] = (uint32_t)i;
      jp_nearest_run(&nb, x, (size_t)dim, rows, nredo, o->pool, idx, val, val2);
      for (size_t r = 0; r < nredo; r++) {
        size_t i = rows[r];
        float a = xnorm[i] + val[r], c2 = xnorm[i] + val2[r];
        if (assign[i] != idx[r]) {
          /* The point moves: update the running sums, in point order. */
          double *from = lsum + (size_t)assign[i] * (size_t)dim;
          double *to = lsum + (size_t)idx[r] * (size_t)dim;
          const float *xi = x + i * (size_t)dim;
          for (int d = 0; d < dim; d++) {
            from[d] -= xi[d];
            to[d] += xi[d];
          }
          lcount[assign[i]]--;
          lcount[idx[r]]++;
        }
        assign[i] = idx[r];
        d2[i] = a > 0.0f ? a : 0.0f;
        lower[i] = sqrtf(c2 > 0.0f ? c2 : 0.0f);
      }
    }
    jp_nearest_fini(&nb);
    objective = 0.0;
    for (size_t i = 0; i < n; i++) objective += (double)d2[i];
    if (it > 0) JP_LOG_DEBUG("kmeans: iteration %d rescanned %zu of %zu points", it + 1, nredo, n);
    /* (2) local sums and counts */
    if (it == 0) {
      memset(lsum, 0, sizeof *lsum * kd);
      memset(lcount, 0, sizeof *lcount * (size_t)k);
      for (size_t i = 0; i < n; i++) {
        double *acc = lsum + (size_t)assign[i] * (size_t)dim;
        const float *xi = x + i * (size_t)dim;
        for (int d = 0; d < dim; d++) acc[d] += xi[d];
        lcount[assign[i]]++;
      }
    }
    memcpy(sums, lsum, sizeof *sums * kd);
    memcpy(counts, lcount, sizeof *counts * (size_t)k);
    /* (4) across ranks */
    if (o->reduce) {
      rc = o->reduce(o->reduce_ctx, sums, counts, kd, (size_t)k, &objective);
      if (rc < 0) goto out;
    }
    if (o->progress) o->progress(o->progress_ctx, it + 1, o->iters, objective);
    /* (5) update */
    memcpy(prevC, C, sizeof *C * kd);
    for (int j = 0; j < k; j++) {
      if (counts[j] <= 0) continue;
      double cnt = (double)counts[j];
      float *cj = C + (size_t)j * (size_t)dim;
      const double *sj = sums + (size_t)j * (size_t)dim;
      for (int d = 0; d < dim; d++) cj[d] = (float)(sj[d] / cnt);
    }
    split_empty(C, counts, k, dim, o->seed, it);
    for (int j = 0; j < k; j++) {
      const float *a = C + (size_t)j * (size_t)dim, *b = prevC + (size_t)j * (size_t)dim;
      float s2 = 0.0f;
      for (int d = 0; d < dim; d++) s2 += (a[d] - b[d]) * (a[d] - b[d]);
      /* Rounded up a little: a bound that is too small is unsafe. */
      delta[j] = sqrtf(s2) * (1.0f + 4.0f * FLT_EPSILON) + FLT_MIN;
    }
  }

  if (o->normalize) {
    for (int j = 0; j < k; j++) {
      float *cj = C + (size_t)j * (size_t)dim;
      float s = 0.0f;
      for (int d = 0; d < dim; d++) s += cj[d] * cj[d];
      float norm = sqrtf(s);
      if (norm > 0.0f)
        for (int d = 0; d < dim; d++) cj[d] /= norm;
    }
  }
  memcpy(centroids_out, C, sizeof *C * kd);
  if (k < o->k)
    memset(centroids_out + kd, 0, sizeof *C * ((size_t)(o->k - k) * (size_t)dim));
  if (k_out) *k_out = k;
  if (objective_out) *objective_out = objective;

out:
  jp_nearest_fini(&nb);
  jp_aligned_free(C);
  jp_free(sums);
  jp_free(counts);
  jp_free(lsum);
  jp_free(lcount);
  jp_free(assign);
  jp_free(val);
  jp_free(xnorm);
  jp_free(pick);
  jp_free(prevC);
  jp_free(cnorm);
  jp_free(delta);
  jp_free(d2);
  jp_free(lower);
  jp_free(val2);
  jp_free(rows);
  jp_free(idx);
  jp_free(redo);
  jp_free(bigC);
  return rc;
}
