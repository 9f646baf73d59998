/* search.c: PLAID search and exhaustive search over a jp_part (part.h;
 * shared/reference/plaid.md §3).
 *
 * Stages, for a query Q [nq, dim]:
 *  1. S = C . Q^T, the centroid score matrix, stored row-major [nc][nqp]
 *     (nqp = nq rounded up to 16, zero columns after nq) so that the scores
 *     of one centroid for all query tokens are one contiguous row: stages 4
 *     and 5 gather a row per code and max-accumulate it in AVX registers
 *     (32 tokens = 4 registers). Computed by jp_dots_qt in blocks of
 *     centroids over the pool; the same pass finds each block's top-ncells
 *     centroids per token and the pruning mask.
 *  2. candidates = union of the IVF lists of every token's top-ncells
 *     centroids (a bitmap over slots), minus dead slots and slots the
 *     restriction forbids. When they are fewer than k but more passages are
 *     allowed, ncells doubles (up to WIDEN_MAX_NCELLS) and, past that, every
 *     allowed passage becomes a candidate: fewer than k results only when
 *     fewer than k passages can match.
 *  3. keep[c] = max_q S[c][q] >= centroid_score_threshold.
 *  4. approximate score from the kept codes (a token with no kept code
 *     counts MISSING_SCORE, as ColBERT's -9999), keep max(ndocs, k).
 *  5. the same with all codes, keep max(ndocs / 4, k).
 *  6. decompress, exact MaxSim (floored at 0 per token), top k.
 * Candidates are ranked by (score desc, pid asc) at every cut, so results
 * are deterministic and ties go to the smaller pid.
 *
 * Restrictions are resolved first (part_filter.c). An allowed set no
 * larger than max(ndocs, k) is scored exactly and completely; a larger one
 * filters the candidates of stage 2. Exhaustive mode scores every allowed
 * live passage exactly. Passages with no vectors never match.
 *
 * Thread-safety: read-only on the part; any number of concurrent searches.
 * Allocation: everything from the caller's arena (S is nc * nqp floats). */
#include "index/part.h"
#include "index/part_int.h"
#include "jp_config.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if JP_HAVE_AVX2
#include <immintrin.h>
#endif

/* ColBERT Searcher.dense_search defaults by k (plaid.md §3.3). */
#define K_SMALL 10
#define K_MEDIUM 100
#define NCELLS_SMALL 1
#define NCELLS_MEDIUM 2
#define NCELLS_LARGE 4
#define THRESHOLD_SMALL 0.5f
#define THRESHOLD_MEDIUM 0.45f
#define THRESHOLD_LARGE 0.4f
#define NDOCS_SMALL 256
#define NDOCS_MEDIUM 1024
#define NDOCS_LARGE_MIN 4096
/* Score of a token none of whose codes survived pruning (ColBERT's value). */
#define MISSING_SCORE (-9999.0f)
/* Widening stops doubling ncells here and takes every allowed passage: past
 * this point selecting cells costs more than scoring codes. */
#define WIDEN_MAX_NCELLS 256
/* Upper bound for an explicit ncells (beyond any codebook size in use). */
#define MAX_NCELLS (1 << 20)
/* Pool work sizes: centroids per S block, candidates per approximate-score
 * item, candidates per exact-score item (each decompresses a passage). */
#define CBLOCK 256
#define APPROX_ITEM 256
#define EXACT_ITEM 4

/* ---- parameters ------------------------------------------------------------------- */

void jp_search_params_init(struct jp_search_params *p, int k)
{
  p->k = k;
  p->ncells = 0;
  p->centroid_score_threshold = NAN;
  p->ndocs = 0;
  p->exhaustive = 0;
  jp_search_params_resolve(p);
}

void jp_search_params_resolve(struct jp_search_params *p)
{
  int k = p->k;
  if (p->ncells <= 0) p->ncells = k <= K_SMALL ? NCELLS_SMALL : k <= K_MEDIUM ? NCELLS_MEDIUM : NCELLS_LARGE;
  if (isnan(p->centroid_score_threshold))
    p->centroid_score_threshold =
        k <= K_SMALL ? THRESHOLD_SMALL : k <= K_MEDIUM ? THRESHOLD_MEDIUM : THRESHOLD_LARGE;
  if (p->ndocs <= 0) {
    int large = 4 * k > NDOCS_LARGE_MIN ? 4 * k : NDOCS_LARGE_MIN;
    p->ndocs = k <= K_SMALL ? NDOCS_SMALL : k <= K_MEDIUM ? NDOCS_MEDIUM : large;
  }
}

int jp_search_params_check(const struct jp_search_params *p)
{
  if (!p) return jp_err(JP_EINVAL, "search params: NULL");
  if (p->k < 1 || p->k > JP_MAX_K) return jp_err(JP_EINVAL, "k must be in 1..%d, not %d", JP_MAX_K, p->k);
  if (p->ncells < 0 || p->ncells > MAX_NCELLS)
    return jp_err(JP_EINVAL, "ncells must be in 1..%d (0: default), not %d", MAX_NCELLS, p->ncells);
  if (!isnan(p->centroid_score_threshold) && !isfinite(p->centroid_score_threshold))
    return jp_err(JP_EINVAL, "centroid_score_threshold must be finite");
  if (p->ndocs < 0 || p->ndocs > JP_MAX_NDOCS)
    return jp_err(JP_EINVAL, "ndocs must be in 1..%d (0: default), not %d", JP_MAX_NDOCS, p->ndocs);
  if (p->exhaustive != 0 && p->exhaustive != 1)
    return jp_err(JP_EINVAL, "exhaustive must be 0 or 1, not %d", p->exhaustive);
  return 0;
}

/* ---- shared state of one search ------------------------------------------------------ */

struct cellv {
  float v;
  uint32_t c;
};

struct sctx {
  const struct jp_part *p;
  int nq, nqp, dim, nc;
  const float *qt;          /* [dim][nqp] */
  float *S;                 /* [nc][nqp] */
  uint8_t *keep;            /* [nc] */
  float threshold;
  int ncells;
  struct cellv *cells;      /* [nblocks][nq][ncells] per-block top cells */
  int *cell_counts;         /* [nblocks][nq] */
  /* scoring stages */
  const uint32_t *cand;
  float *scores;
  size_t ncand;
  int prune;
  float *dec;               /* [workers][max_doclen * dim] decompression scratch */
  size_t dec_stride;
  uint32_t *dec_codes;      /* [workers][max_doclen] codes widened for the codec */
  size_t dec_codes_stride;
};

static inline float masked_lane_sum(const float *v, int nq)
{
  float s = 0.0f;
  for (int q = 0; q < nq; q++) s += v[q];
  return s;
}

/* Insert (v, c) into a list sorted by v descending (ties keep arrival
 * order: rows arrive in ascending c). thr = the value to beat. */
static inline void cell_insert(struct cellv *list, int *count, int ncells, float v, uint32_t c,
                               float *thr)
{
  int n = *count, i;
  if (n < ncells) n++;
  for (i = n - 1; i > 0 && list[i - 1].v < v; i--) list[i] = list[i - 1];
  list[i].v = v;
  list[i].c = c;
  *count = n;
  *thr = n == ncells ? list[ncells - 1].v : -INFINITY;
}

/* Top-ncells cells of rows [c0, c1) for every token, and the pruning mask. */
static void top_cells_scalar(struct sctx *x, int c0, int c1, struct cellv *lists, int *counts,
                             int want_keep)
{
  float thr[JP_MAX_QUERY_TOKENS];
  for (int q = 0; q < x->nq; q++) {
    counts[q] = 0;
    thr[q] = -INFINITY;
  }
  for (int c = c0; c < c1; c++) {
    const float *row = x->S + (size_t)c * (size_t)x->nqp;
    float mx = -INFINITY;
    for (int q = 0; q < x->nq; q++) {
      if (row[q] > mx) mx = row[q];
      if (row[q] > thr[q] || counts[q] < x->ncells)
        cell_insert(lists + (size_t)q * (size_t)x->ncells, &counts[q], x->ncells, row[q],
                    (uint32_t)c, &thr[q]);
    }
    if (want_keep) x->keep[c] = mx >= x->threshold;
  }
}

#if JP_HAVE_AVX2
__attribute__((target("avx2,fma")))
static void top_cells_avx2(struct sctx *x, int c0, int c1, struct cellv *lists, int *counts,
                           int want_keep)
{
  _Alignas(32) float thr[JP_MAX_QUERY_TOKENS + 16];
  const int nq = x->nq, nq8 = (nq + 7) & ~7;
  for (int q = 0; q < nq8; q++) {
    /* Padding lanes never qualify: +inf cannot be beaten. */
    thr[q] = q < nq ? -INFINITY : INFINITY;
    if (q < nq) counts[q] = 0;
  }
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int c = c0; c < c1; c++) {
    const float *row = x->S + (size_t)c * (size_t)x->nqp;
    __m256 mx = ninf;
    for (int q0 = 0; q0 < nq8; q0 += 8) {
      __m256 v = _mm256_loadu_ps(row + q0);
      __m256 t = _mm256_load_ps(thr + q0);
      __m256 valid = _mm256_cmp_ps(t, _mm256_set1_ps(INFINITY), _CMP_NEQ_OQ);
      mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, v, valid));
      /* A list that is not full has thr = -inf, so any finite value enters. */
      unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_GT_OQ));
      while (m) {
        int q = q0 + __builtin_ctz(m);
        m &= m - 1;
        cell_insert(lists + (size_t)q * (size_t)x->ncells, &counts[q], x->ncells, row[q],
                    (uint32_t)c, &thr[q]);
      }
    }
    if (want_keep) {
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      h = _mm_max_ss(h, _mm_movehdup_ps(h));
      x->keep[c] = _mm_cvtss_f32(h) >= x->threshold;
    }
  }
}
#endif

static void top_cells(struct sctx *x, int c0, int c1, struct cellv *lists, int *counts, int want_keep)
{
#if JP_HAVE_AVX2
  if (jp_nearest_have_avx2()) {
    top_cells_avx2(x, c0, c1, lists, counts, want_keep);
    return;
  }
#endif
  top_cells_scalar(x, c0, c1, lists, counts, want_keep);
}

/* Stage 1: one block of centroids: scores, pruning mask, block top cells. */
static void stage1_item(void *vctx, int b, int worker)
{
  (void)worker;
  struct sctx *x = vctx;
  int c0 = b * CBLOCK, c1 = c0 + CBLOCK < x->nc ? c0 + CBLOCK : x->nc;
  jp_dots_qt(x->qt, x->nq, x->p->codec.centroids + (size_t)c0 * (size_t)x->dim, c1 - c0, x->dim,
             x->S + (size_t)c0 * (size_t)x->nqp);
  top_cells(x, c0, c1, x->cells + (size_t)b * (size_t)x->nq * (size_t)x->ncells,
            x->cell_counts + (size_t)b * (size_t)x->nq, 1);
}

/* Widening: block top cells again with the current ncells (S is known). */
static void cells_item(void *vctx, int b, int worker)
{
  (void)worker;
  struct sctx *x = vctx;
  int c0 = b * CBLOCK, c1 = c0 + CBLOCK < x->nc ? c0 + CBLOCK : x->nc;
  top_cells(x, c0, c1, x->cells + (size_t)b * (size_t)x->nq * (size_t)x->ncells,
            x->cell_counts + (size_t)b * (size_t)x->nq, 0);
}

/* Merge the blocks' lists (in block order, so ties keep the smaller
 * centroid) and mark the chosen cells. Returns how many distinct cells. */
static int merge_cells(struct sctx *x, int nblocks, uint8_t *used, struct cellv *tmp)
{
  int ncells = x->ncells, distinct = 0;
  memset(used, 0, (size_t)x->nc);
  for (int q = 0; q < x->nq; q++) {
    int count = 0;
    float thr = -INFINITY;
    for (int b = 0; b < nblocks; b++) {
      const struct cellv *l = x->cells + ((size_t)b * (size_t)x->nq + (size_t)q) * (size_t)ncells;
      int n = x->cell_counts[(size_t)b * (size_t)x->nq + (size_t)q];
      for (int i = 0; i < n; i++)
        if (l[i].v > thr || count < ncells) cell_insert(tmp, &count, ncells, l[i].v, l[i].c, &thr);
    }
    for (int i = 0; i < count; i++)
      if (!used[tmp[i].c]) {
        used[tmp[i].c] = 1;
        distinct++;
      }
  }
  return distinct;
}

/* ---- candidate scoring ---------------------------------------------------------------- */

/* The approximate-score loops, instantiated for uint16 and uint32 codes. */
#define APPROX_SCALAR_BODY(CT)                                                \
  do {                                                                        \
    const CT *cs = (const CT *)codes;                                         \
    for (int i = 0; i < len; i++) {                                           \
      uint32_t c = cs[i];                                                     \
      if (x->prune && !x->keep[c]) continue;                                  \
      const float *row = x->S + (size_t)c * (size_t)x->nqp;                   \
      for (int q = 0; q < x->nq; q++)                                         \
        if (row[q] > acc[q]) acc[q] = row[q];                                 \
    }                                                                         \
  } while (0)

static float approx_scalar(const struct sctx *x, const void *codes, int wide, int len)
{
  float acc[JP_MAX_QUERY_TOKENS];
  for (int q = 0; q < x->nq; q++) acc[q] = MISSING_SCORE;
  if (wide) APPROX_SCALAR_BODY(uint32_t);
  else APPROX_SCALAR_BODY(uint16_t);
  return masked_lane_sum(acc, x->nq);
}

#if JP_HAVE_AVX2
/* The common ColBERT query: 32 tokens in four registers. */
#define APPROX32_BODY(CT)                                                     \
  do {                                                                        \
    const CT *cs = (const CT *)codes;                                         \
    for (int i = 0; i < len; i++) {                                           \
      uint32_t c = cs[i];                                                     \
      if (keep && !keep[c]) continue;                                         \
      const float *row = S + (size_t)c * 32;                                  \
      a0 = _mm256_max_ps(a0, _mm256_loadu_ps(row));                           \
      a1 = _mm256_max_ps(a1, _mm256_loadu_ps(row + 8));                       \
      a2 = _mm256_max_ps(a2, _mm256_loadu_ps(row + 16));                      \
      a3 = _mm256_max_ps(a3, _mm256_loadu_ps(row + 24));                      \
    }                                                                         \
  } while (0)

#define APPROXN_BODY(CT)                                                      \
  do {                                                                        \
    const CT *cs = (const CT *)codes;                                         \
    for (int i = 0; i < len; i++) {                                           \
      uint32_t c = cs[i];                                                     \
      if (keep && !keep[c]) continue;                                         \
      const float *row = S + (size_t)c * (size_t)x->nqp;                      \
      for (int q = 0; q < x->nqp; q += 8)                                     \
        _mm256_store_ps(acc + q, _mm256_max_ps(_mm256_load_ps(acc + q),       \
                                               _mm256_loadu_ps(row + q)));    \
    }                                                                         \
  } while (0)

__attribute__((target("avx2,fma")))
static float approx_avx2(const struct sctx *x, const void *codes, int wide, int len)
{
  const __m256 miss = _mm256_set1_ps(MISSING_SCORE);
  _Alignas(32) float acc[JP_MAX_QUERY_TOKENS + 16];
  const float *S = x->S;
  const uint8_t *keep = x->prune ? x->keep : NULL;
  if (x->nqp == 32) {
    __m256 a0 = miss, a1 = miss, a2 = miss, a3 = miss;
    if (wide) APPROX32_BODY(uint32_t);
    else APPROX32_BODY(uint16_t);
    _mm256_store_ps(acc, a0);
    _mm256_store_ps(acc + 8, a1);
    _mm256_store_ps(acc + 16, a2);
    _mm256_store_ps(acc + 24, a3);
  } else {
    for (int q = 0; q < x->nqp; q += 8) _mm256_store_ps(acc + q, miss);
    if (wide) APPROXN_BODY(uint32_t);
    else APPROXN_BODY(uint16_t);
  }
  return masked_lane_sum(acc, x->nq);
}
#endif

static void approx_item(void *vctx, int item, int worker)
{
  (void)worker;
  struct sctx *x = vctx;
  const struct jp_part *p = x->p;
  const int wide = p->code_bytes == 4;
  size_t i0 = (size_t)item * APPROX_ITEM, i1 = i0 + APPROX_ITEM < x->ncand ? i0 + APPROX_ITEM : x->ncand;
#if JP_HAVE_AVX2
  const int avx2 = jp_nearest_have_avx2();
#endif
  for (size_t i = i0; i < i1; i++) {
    uint32_t s = x->cand[i];
    const void *codes = (const uint8_t *)p->codes + p->slot_off[s] * (uint64_t)p->code_bytes;
#if JP_HAVE_AVX2
    if (avx2) {
      x->scores[i] = approx_avx2(x, codes, wide, p->slot_len[s]);
      continue;
    }
#endif
    x->scores[i] = approx_scalar(x, codes, wide, p->slot_len[s]);
  }
}

static void exact_item(void *vctx, int item, int worker)
{
  struct sctx *x = vctx;
  const struct jp_part *p = x->p;
  float *dec = x->dec + (size_t)worker * x->dec_stride;
  uint32_t *codes = x->dec_codes + (size_t)worker * x->dec_codes_stride;
  size_t i0 = (size_t)item * EXACT_ITEM, i1 = i0 + EXACT_ITEM < x->ncand ? i0 + EXACT_ITEM : x->ncand;
  for (size_t i = i0; i < i1; i++) {
    uint32_t s = x->cand[i];
    int32_t len = p->slot_len[s];
    uint64_t off = p->slot_off[s];
    jp_part__codes32(p, off, (size_t)len, codes);
    jp_codec_decompress_lut(&p->codec, &p->lut, codes, p->packed + off * p->pbytes, (size_t)len,
                            dec);
    x->scores[i] = jp_maxsim_qt(x->qt, x->nq, dec, len, x->dim);
  }
}

/* Score x->cand with `fn`, then keep the best `keep` (by score, then pid)
 * in x->cand, in rank order. v is scratch for ncand entries. */
static size_t score_and_cut(struct sctx *x, jp_pool *pool, jp_pool_fn fn, size_t per_item,
                            size_t keep, struct jp_scored *v, uint32_t *cand_out)
{
  size_t items = (x->ncand + per_item - 1) / per_item;
  jp_pool_run(pool, (int)items, fn, x);
  for (size_t i = 0; i < x->ncand; i++) {
    v[i].score = x->scores[i];
    v[i].idx = x->cand[i];
    v[i].key = x->p->slot_pid[x->cand[i]];
  }
  size_t m = jp_topk_select(v, x->ncand, keep);
  for (size_t i = 0; i < m; i++) cand_out[i] = v[i].idx;
  return m;
}

/* ---- the search ----------------------------------------------------------------------- */

static inline void *arena_array(struct jp_arena *a, size_t elem, size_t n)
{
  if (n == 0) n = 1;
  if (n > SIZE_MAX / elem) return NULL;
  return jp_arena_alloc_aligned(a, elem * n);
}
#define ANEW(a, type, n) ((type *)arena_array((a), sizeof(type), (size_t)(n)))

static int out_of_scratch(void) { return jp_err(JP_ENOMEM, "search: scratch arena exhausted"); }

/* Exact scores of `cand` (ncand slots), top k into out. */
static int exact_topk(struct sctx *x, jp_pool *pool, struct jp_arena *a, uint32_t *cand,
                      size_t ncand, int k, struct jp_hit *out, int *n_out)
{
  const struct jp_part *p = x->p;
  int workers = jp_pool_size(pool);
  x->dec_stride = (size_t)(p->max_doclen > 0 ? p->max_doclen : 1) * (size_t)x->dim;
  x->dec = ANEW(a, float, x->dec_stride * (size_t)workers);
  x->dec_codes_stride = (size_t)(p->max_doclen > 0 ? p->max_doclen : 1);
  x->dec_codes = ANEW(a, uint32_t, x->dec_codes_stride * (size_t)workers);
  x->scores = ANEW(a, float, ncand);
  struct jp_scored *v = ANEW(a, struct jp_scored, ncand);
  if (!x->dec || !x->dec_codes || !x->scores || !v) return out_of_scratch();
  x->cand = cand;
  x->ncand = ncand;
  size_t m = score_and_cut(x, pool, exact_item, EXACT_ITEM, (size_t)k, v, cand);
  for (size_t i = 0; i < m; i++) {
    out[i].pid = v[i].key;
    out[i].score = v[i].score;
  }
  *n_out = (int)m;
  return 0;
}

/* Every live, non-empty slot (optionally only the allowed ones). */
static size_t all_slots(const struct jp_part *p, const uint32_t *allowed, size_t n_allowed,
                        int unrestricted, uint32_t *out)
{
  size_t n = 0;
  if (unrestricted) {
    for (uint32_t s = 0; s < p->n_slots; s++)
      if (!p->slot_dead[s] && p->slot_len[s] > 0) out[n++] = s;
  } else {
    for (size_t i = 0; i < n_allowed; i++)
      if (p->slot_len[allowed[i]] > 0) out[n++] = allowed[i];
  }
  return n;
}

int jp_part_search(const jp_part *p, const float *Q, int nq, const struct jp_search_params *sp,
                   const struct jp_restrict *r, jp_pool *pool, struct jp_arena *a,
                   struct jp_hit *out, int *n_out)
{
  struct jp_search_params prm;
  uint32_t *allowed = NULL;
  size_t n_allowed = 0;
  int unrestricted = 1, rc;

  if (!n_out) return jp_err(JP_EINVAL, "search: n_out is NULL");
  *n_out = 0;
  if (!p || !Q || !sp || !a || !out) return jp_err(JP_EINVAL, "search: NULL argument");
  if (nq < 1 || nq > JP_MAX_QUERY_TOKENS)
    return jp_err(JP_EINVAL, "search: query has %d tokens (1..%d)", nq, JP_MAX_QUERY_TOKENS);
  if ((rc = jp_search_params_check(sp)) < 0) return rc;
  prm = *sp;
  jp_search_params_resolve(&prm);
  const int dim = p->codec.dim;
  for (size_t i = 0; i < (size_t)nq * (size_t)dim; i++)
    if (!isfinite(Q[i])) return jp_err(JP_EINVAL, "search: query value %zu is not finite", i);
  if ((rc = jp_part__allowed_slots(p, r, a, &allowed, &n_allowed, &unrestricted)) < 0) return rc;
  const size_t n_matchable =
      unrestricted ? (size_t)p->live_nonempty : all_slots(p, allowed, n_allowed, 0, allowed);
  if (!unrestricted) n_allowed = n_matchable;   /* allowed now lists non-empty slots only */
  if (n_matchable == 0) return 0;

  struct sctx x;
  memset(&x, 0, sizeof x);
  x.p = p;
  x.nq = nq;
  x.nqp = jp_maxsim_nqp(nq);
  x.dim = dim;
  x.nc = p->codec.ncentroids;
  x.threshold = prm.centroid_score_threshold;
  float *qt = ANEW(a, float, (size_t)x.nqp * (size_t)dim);
  if (!qt) return out_of_scratch();
  jp_maxsim_qt_fill(Q, nq, dim, qt);
  x.qt = qt;

  const size_t keep2 = (size_t)(prm.ndocs > prm.k ? prm.ndocs : prm.k);
  const size_t keep3 = (size_t)(prm.ndocs / 4 > prm.k ? prm.ndocs / 4 : prm.k);

  /* Exhaustive, or a small allowed set: exact scores of everything. */
  if (prm.exhaustive || (!unrestricted && n_allowed <= keep2)) {
    uint32_t *cand = unrestricted ? ANEW(a, uint32_t, n_matchable) : allowed;
    if (!cand) return out_of_scratch();
    size_t nc = unrestricted ? all_slots(p, NULL, 0, 1, cand) : n_allowed;
    return exact_topk(&x, pool, a, cand, nc, prm.k, out, n_out);
  }

  const int trace = JP_LOG_ENABLED(JP_LOG_LEVEL_TRACE);
  uint64_t t0 = trace ? jp_now_ns() : 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0;
  size_t n_gen = 0, n_s2 = 0;
  /* Stage 1: centroid scores, block top cells, pruning mask. */
  const int nblocks = (x.nc + CBLOCK - 1) / CBLOCK;
  x.S = ANEW(a, float, (size_t)x.nc * (size_t)x.nqp);
  x.keep = ANEW(a, uint8_t, (size_t)x.nc);
  uint8_t *used = ANEW(a, uint8_t, (size_t)x.nc);
  x.cell_counts = ANEW(a, int, (size_t)nblocks * (size_t)nq);
  if (!x.S || !x.keep || !used || !x.cell_counts) return out_of_scratch();
  x.ncells = prm.ncells < x.nc ? prm.ncells : x.nc;
  x.cells = ANEW(a, struct cellv, (size_t)nblocks * (size_t)nq * (size_t)x.ncells);
  struct cellv *tmp = ANEW(a, struct cellv, (size_t)x.ncells);
  if (!x.cells || !tmp) return out_of_scratch();
  jp_pool_run(pool, nblocks, stage1_item, &x);

  if (trace) t1 = jp_now_ns();
  /* Restriction bitmap (only when the allowed set is large). */
  const size_t words = ((size_t)p->n_slots + 63) / 64;
  uint64_t *allow_bits = NULL;
  if (!unrestricted) {
    allow_bits = ANEW(a, uint64_t, words);
    if (!allow_bits) return out_of_scratch();
    memset(allow_bits, 0, sizeof *allow_bits * words);
    for (size_t i = 0; i < n_allowed; i++) allow_bits[allowed[i] / 64] |= 1ULL << (allowed[i] % 64);
  }
  uint64_t *bits = ANEW(a, uint64_t, words);
  uint32_t *cand = ANEW(a, uint32_t, n_matchable);
  if (!bits || !cand) return out_of_scratch();

  /* Stage 2: candidates, widening ncells while they are too few. */
  size_t ncand = 0;
  for (;;) {
    merge_cells(&x, nblocks, used, tmp);
    memset(bits, 0, sizeof *bits * words);
    for (int c = 0; c < x.nc; c++) {
      if (!used[c]) continue;
      const struct jp_ivf_list *l = &p->ivf[c];
      for (uint32_t i = 0; i < l->n; i++) bits[l->slots[i] / 64] |= 1ULL << (l->slots[i] % 64);
    }
    ncand = 0;
    for (size_t w = 0; w < words; w++) {
      uint64_t m = bits[w] & (allow_bits ? allow_bits[w] : ~0ULL);
      while (m) {
        uint32_t s = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(m));
        m &= m - 1;
        if (!p->slot_dead[s]) cand[ncand++] = s;
      }
    }
    if (ncand >= (size_t)prm.k || ncand >= n_matchable) break;
    if (x.ncells >= x.nc || x.ncells >= WIDEN_MAX_NCELLS) {
      ncand = unrestricted ? all_slots(p, NULL, 0, 1, cand) : n_allowed;
      if (!unrestricted) memcpy(cand, allowed, sizeof *cand * n_allowed);
      break;
    }
    x.ncells = x.ncells * 2 < x.nc ? x.ncells * 2 : x.nc;
    x.cells = ANEW(a, struct cellv, (size_t)nblocks * (size_t)nq * (size_t)x.ncells);
    tmp = ANEW(a, struct cellv, (size_t)x.ncells);
    if (!x.cells || !tmp) return out_of_scratch();
    jp_pool_run(pool, nblocks, cells_item, &x);
  }

  if (trace) {
    t2 = jp_now_ns();
    n_gen = ncand;
  }
  /* Stages 4 and 5: approximate scores from codes. */
  x.scores = ANEW(a, float, ncand);
  struct jp_scored *v = ANEW(a, struct jp_scored, ncand);
  if (!x.scores || !v) return out_of_scratch();
  if (ncand > keep2) {
    x.cand = cand;
    x.ncand = ncand;
    x.prune = 1;
    ncand = score_and_cut(&x, pool, approx_item, APPROX_ITEM, keep2, v, cand);
  }
  if (trace) {
    t3 = jp_now_ns();
    n_s2 = ncand;
  }
  if (ncand > keep3) {
    x.cand = cand;
    x.ncand = ncand;
    x.prune = 0;
    ncand = score_and_cut(&x, pool, approx_item, APPROX_ITEM, keep3, v, cand);
  }
  if (trace) t4 = jp_now_ns();
  /* Stage 6: exact MaxSim of the survivors. */
  rc = exact_topk(&x, pool, a, cand, ncand, prm.k, out, n_out);
  if (trace)
    JP_LOG_TRACE("search: k=%d ncells=%d->%d: S+cells %.3f ms, candidates %zu in %.3f ms, "
                 "stage4 -> %zu in %.3f ms, stage5 -> %zu in %.3f ms, exact %.3f ms",
                 prm.k, prm.ncells, x.ncells, (t1 - t0) / 1e6, n_gen, (t2 - t1) / 1e6, n_s2,
                 (t3 - t2) / 1e6, ncand, (t4 - t3) / 1e6, (jp_now_ns() - t4) / 1e6);
  return rc;
}
