/* codec.c: PLAID's residual codec (codec.h, shared/reference/plaid.md §2.3).
 *
 * Layout reminder: per vector, dimension d contributes the nbits bits of its
 * bucket index LSB first to a bit stream that fills bytes from bit 7 down
 * (numpy packbits). Inside a byte, the group of dimension j (counted from
 * the most significant end) therefore holds the bucket index bit-reversed.
 *
 * Fast decompression goes through a per-byte table (jp_codec_lut): one
 * lookup yields the bucket weights of all 8/nbits dimensions of a byte, so
 * the inner loop is a load, an add of the centroid and a square-sum, which
 * AVX2 does eight dimensions at a time. The scalar _ref path decodes bit by
 * bit from the definition and is the oracle of the fast path.
 *
 * Quantiles are those of torch.quantile (linear interpolation between the
 * order statistics at floor and ceil of q * (N - 1), blended with torch's
 * lerp formula), found by a multi-rank quickselect instead of a full sort.
 *
 * Thread-safety: a trained jp_codec is read-only; all functions are
 * reentrant. Allocation: init/copy allocate the centroid table; assign,
 * compress and train_buckets allocate scratch per call. */
#include "index/codec.h"
#include "index/index_int.h"
#include "jp_config.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/mem.h"

#include <math.h>
#include <string.h>

#if JP_HAVE_AVX2
#include <immintrin.h>
#endif

/* Normalisation floor: torch.nn.functional.normalize's default eps, so a
 * zero vector stays zero instead of becoming NaN. */
#define NORM_EPS 1e-12f
/* Vectors per pool item in compress: packing is cheap, so items are large. */
#define COMPRESS_ITEM 1024

static int valid_nbits(int nbits) { return nbits == 1 || nbits == 2 || nbits == 4 || nbits == 8; }

int jp_codec_init(struct jp_codec *c, int dim, int nbits, int ncentroids)
{
  memset(c, 0, sizeof *c);
  if (!valid_nbits(nbits)) return jp_err(JP_EINVAL, "codec: nbits must be 1, 2, 4 or 8, not %d", nbits);
  if (dim <= 0 || dim > 65536 || (dim * nbits) % 8 != 0)
    return jp_err(JP_EINVAL, "codec: dim %d is not a positive multiple of %d (nbits %d)", dim,
                  8 / nbits, nbits);
  if (ncentroids <= 0) return jp_err(JP_EINVAL, "codec: ncentroids must be positive, not %d", ncentroids);
  if ((size_t)ncentroids > SIZE_MAX / sizeof(float) / (size_t)dim)
    return jp_err(JP_ETOOBIG, "codec: %d centroids of dim %d", ncentroids, dim);
  c->centroids = jp_aligned_alloc((size_t)ncentroids * (size_t)dim * sizeof(float));
  if (!c->centroids) return JP_ENOMEM;
  memset(c->centroids, 0, (size_t)ncentroids * (size_t)dim * sizeof(float));
  c->dim = dim;
  c->nbits = nbits;
  c->ncentroids = ncentroids;
  return 0;
}

void jp_codec_fini(struct jp_codec *c)
{
  if (!c) return;
  jp_aligned_free(c->centroids);
  c->centroids = NULL;
}

int jp_codec_copy(struct jp_codec *dst, const struct jp_codec *src)
{
  int rc = jp_codec_init(dst, src->dim, src->nbits, src->ncentroids);
  if (rc < 0) return rc;
  memcpy(dst->centroids, src->centroids,
         (size_t)src->ncentroids * (size_t)src->dim * sizeof(float));
  memcpy(dst->cutoffs, src->cutoffs, sizeof dst->cutoffs);
  memcpy(dst->weights, src->weights, sizeof dst->weights);
  dst->avg_residual = src->avg_residual;
  return 0;
}

static int check_ready(const struct jp_codec *c)
{
  if (!c || !c->centroids || c->dim <= 0 || c->ncentroids <= 0 || !valid_nbits(c->nbits))
    return jp_err(JP_EINVAL, "codec is not initialised");
  return 0;
}

/* ---- assignment ------------------------------------------------------------- */

int jp_codec_assign(const struct jp_codec *c, const float *vecs, size_t n, jp_pool *pool,
                    uint32_t *codes)
{
  struct jp_nearest nb;
  int rc = check_ready(c);
  if (rc < 0) return rc;
  if (n == 0) return 0;
  if (!vecs || !codes) return jp_err(JP_EINVAL, "codec assign: NULL buffer");
  rc = jp_nearest_init(&nb, c->centroids, c->ncentroids, c->dim, 0);
  if (rc < 0) return rc;
  jp_nearest_run(&nb, vecs, (size_t)c->dim, NULL, n, pool, codes, NULL, NULL);
  jp_nearest_fini(&nb);
  return 0;
}

/* ---- bucket training (quantiles) ------------------------------------------- */

static void insertion_sort(float *a, size_t n)
{
  for (size_t i = 1; i < n; i++) {
    float v = a[i];
    size_t j = i;
    while (j > 0 && a[j - 1] > v) {
      a[j] = a[j - 1];
      j--;
    }
    a[j] = v;
  }
}

/* Rearrange a[lo, hi) so that every wanted rank r in ranks[0, nr) (sorted,
 * all inside [lo, hi)) holds the r-th smallest value of the whole array.
 * Three-way partitioning keeps runs of equal values (exact zeros, repeated
 * residuals) linear; random pivots keep the expected depth logarithmic. */
static void multiselect(float *a, size_t lo, size_t hi, const size_t *ranks, size_t nr,
                        uint64_t *rng)
{
  while (nr > 0) {
    if (hi - lo <= 32) {
      insertion_sort(a + lo, hi - lo);
      return;
    }
    /* Median of three random elements. */
    float p0 = a[lo + jp_rand64(rng) % (hi - lo)];
    float p1 = a[lo + jp_rand64(rng) % (hi - lo)];
    float p2 = a[lo + jp_rand64(rng) % (hi - lo)];
    float pivot = p0 < p1 ? (p1 < p2 ? p1 : (p0 < p2 ? p2 : p0))
                          : (p0 < p2 ? p0 : (p1 < p2 ? p2 : p1));
    size_t lt = lo, i = lo, gt = hi;
    while (i < gt) {
      float v = a[i];
      if (v < pivot) {
        a[i++] = a[lt];
        a[lt++] = v;
      } else if (v > pivot) {
        a[i] = a[--gt];
        a[gt] = v;
      } else {
        i++;
      }
    }
    /* ranks below lt go left, ranks at or past gt go right. */
    size_t nl = 0;
    while (nl < nr && ranks[nl] < lt) nl++;
    size_t nm = nl;
    while (nm < nr && ranks[nm] < gt) nm++;
    if (nl > 0) multiselect(a, lo, lt, ranks, nl, rng);
    ranks += nm;
    nr -= nm;
    lo = gt;
  }
}

static int cmp_size(const void *a, const void *b)
{
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

/* torch's lerp: self + w (end - self) for |w| < 0.5, else end - (end - self)(1 - w).
 * The two forms round differently; matching the choice keeps goldens exact. */
static float torch_lerp(float lo, float hi, float w)
{
  return fabsf(w) < 0.5f ? lo + w * (hi - lo) : hi - (hi - lo) * (1.0f - w);
}

/* Position q * (N - 1) as torch computes it: q is float32 and the product is
 * float32 (exact for the dyadic levels used here while N - 1 < 2^24). */
static void quantile_pos(float q, size_t N, size_t *below, size_t *above, float *w)
{
  float rank = q * (float)(N - 1);
  size_t b = (size_t)rank;
  size_t a = (size_t)ceilf(rank);
  if (a > N - 1) a = N - 1;
  if (b > N - 1) b = N - 1;
  *below = b;
  *above = a;
  *w = rank - (float)b;
}

int jp_codec_train_buckets(struct jp_codec *c, const float *residuals, size_t n)
{
  int rc = check_ready(c);
  if (rc < 0) return rc;
  if (n == 0 || !residuals) return jp_err(JP_EINVAL, "codec: no held-out residuals to train buckets");
  const size_t dim = (size_t)c->dim;
  if (n > SIZE_MAX / sizeof(float) / dim) return jp_err(JP_ETOOBIG, "codec: %zu residuals", n);
  const size_t N = n * dim;
  const int B = 1 << c->nbits;
  /* Levels: cutoffs i/B (i = 1..B-1), weights (i + 0.5)/B (i = 0..B-1), as
   * float32 like torch.arange(...) * (1 / B). */
  float qc[(1 << JP_CODEC_MAX_NBITS) - 1], qw[1 << JP_CODEC_MAX_NBITS];
  const float inv = 1.0f / (float)B;
  for (int i = 1; i < B; i++) qc[i - 1] = (float)i * inv;
  for (int i = 0; i < B; i++) qw[i] = (float)i * inv + 0.5f * inv;

  float *a = jp_malloc(N * sizeof *a);
  size_t *ranks = jp_malloc(sizeof *ranks * (size_t)(4 * B));
  if (!a || !ranks) {
    jp_free(a);
    jp_free(ranks);
    return JP_ENOMEM;
  }
  double abs_sum = 0.0;
  for (size_t i = 0; i < N; i++) {
    float v = residuals[i];
    if (!isfinite(v)) {
      jp_free(a);
      jp_free(ranks);
      return jp_err(JP_EINVAL, "codec: residual %zu (vector %zu) is not finite", i, i / dim);
    }
    a[i] = v;
    abs_sum += fabs((double)v);
  }
  size_t nr = 0;
  for (int i = 0; i < B - 1; i++) {
    size_t b, up;
    float w;
    quantile_pos(qc[i], N, &b, &up, &w);
    ranks[nr++] = b;
    ranks[nr++] = up;
  }
  for (int i = 0; i < B; i++) {
    size_t b, up;
    float w;
    quantile_pos(qw[i], N, &b, &up, &w);
    ranks[nr++] = b;
    ranks[nr++] = up;
  }
  qsort(ranks, nr, sizeof *ranks, cmp_size);
  size_t u = 0;
  for (size_t i = 0; i < nr; i++)
    if (u == 0 || ranks[u - 1] != ranks[i]) ranks[u++] = ranks[i];
  uint64_t rng = 0x9e3779b97f4a7c15ULL;   /* fixed: the result does not depend on it */
  multiselect(a, 0, N, ranks, u, &rng);
  for (int i = 0; i < B - 1; i++) {
    size_t b, up;
    float w;
    quantile_pos(qc[i], N, &b, &up, &w);
    c->cutoffs[i] = torch_lerp(a[b], a[up], w);
  }
  for (int i = 0; i < B; i++) {
    size_t b, up;
    float w;
    quantile_pos(qw[i], N, &b, &up, &w);
    c->weights[i] = torch_lerp(a[b], a[up], w);
  }
  c->avg_residual = (float)(abs_sum / (double)N);
  jp_free(a);
  jp_free(ranks);
  return 0;
}

/* ---- packing ---------------------------------------------------------------- */

/* Reverse the low `nbits` bits of v. */
static inline unsigned rev_bits(unsigned v, int nbits)
{
  unsigned r = 0;
  for (int i = 0; i < nbits; i++) r |= ((v >> i) & 1u) << (nbits - 1 - i);
  return r;
}

/* Number of cutoffs strictly below r (torch.bucketize, right=False). */
static inline unsigned bucket_of(const float *cutoffs, int ncut, float r)
{
  if (ncut <= 3) {
    unsigned b = 0;
    for (int i = 0; i < ncut; i++) b += cutoffs[i] < r;
    return b;
  }
  int lo = 0, hi = ncut;          /* first index with cutoffs[i] >= r */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (cutoffs[mid] < r) lo = mid + 1;
    else hi = mid;
  }
  return (unsigned)lo;
}

/* Pack one vector; `base` (may be NULL) is subtracted first (the centroid). */
static void pack_one(const struct jp_codec *c, const float *v, const float *base, uint8_t *out)
{
  const int nbits = c->nbits, per = 8 / nbits, ncut = (1 << nbits) - 1;
  const size_t nbytes = jp_codec_packed_bytes(c);
  size_t d = 0;
  for (size_t byte = 0; byte < nbytes; byte++) {
    unsigned acc = 0;
    for (int j = 0; j < per; j++, d++) {
      float r = base ? v[d] - base[d] : v[d];
      unsigned b = bucket_of(c->cutoffs, ncut, r);
      acc |= rev_bits(b, nbits) << (8 - nbits * (j + 1));
    }
    out[byte] = (uint8_t)acc;
  }
}

void jp_codec_pack(const struct jp_codec *c, const float *residuals, size_t n, uint8_t *packed)
{
  const size_t pb = jp_codec_packed_bytes(c);
  for (size_t i = 0; i < n; i++)
    pack_one(c, residuals + i * (size_t)c->dim, NULL, packed + i * pb);
}

struct compress_ctx {
  const struct jp_codec *c;
  const float *vecs;
  size_t n;
  const uint32_t *codes;
  uint8_t *packed;
};

static void compress_item(void *vctx, int item, int worker)
{
  (void)worker;
  const struct compress_ctx *x = vctx;
  const size_t dim = (size_t)x->c->dim, pb = jp_codec_packed_bytes(x->c);
  size_t i0 = (size_t)item * COMPRESS_ITEM;
  size_t i1 = i0 + COMPRESS_ITEM < x->n ? i0 + COMPRESS_ITEM : x->n;
  for (size_t i = i0; i < i1; i++)
    pack_one(x->c, x->vecs + i * dim, x->c->centroids + (size_t)x->codes[i] * dim,
             x->packed + i * pb);
}

int jp_codec_compress(const struct jp_codec *c, const float *vecs, size_t n, jp_pool *pool,
                      uint32_t *codes, uint8_t *packed)
{
  int rc = jp_codec_assign(c, vecs, n, pool, codes);
  if (rc < 0 || n == 0) return rc;
  if (!packed) return jp_err(JP_EINVAL, "codec compress: NULL output");
  struct compress_ctx x = { c, vecs, n, codes, packed };
  size_t items = (n + COMPRESS_ITEM - 1) / COMPRESS_ITEM;
  if (items > (size_t)1 << 30) return jp_err(JP_ETOOBIG, "codec compress: %zu vectors", n);
  jp_pool_run(pool, (int)items, compress_item, &x);
  return 0;
}

/* ---- decompression ---------------------------------------------------------- */

void jp_codec_lut_init(const struct jp_codec *c, struct jp_codec_lut *lut)
{
  const int nbits = c->nbits, per = 8 / nbits;
  const unsigned mask = (1u << nbits) - 1;
  lut->nbits = nbits;
  lut->per = per;
  for (unsigned byte = 0; byte < 256; byte++)
    for (int j = 0; j < per; j++) {
      unsigned group = (byte >> (8 - nbits * (j + 1))) & mask;
      lut->lut[byte * (unsigned)per + (unsigned)j] = c->weights[rev_bits(group, nbits)];
    }
}

static void normalize_row(float *v, size_t dim)
{
  float ss = 0.0f;
  for (size_t d = 0; d < dim; d++) ss += v[d] * v[d];
  float norm = sqrtf(ss);
  if (norm < NORM_EPS) norm = NORM_EPS;
  for (size_t d = 0; d < dim; d++) v[d] /= norm;
}

void jp_codec_decompress_ref(const struct jp_codec *c, const uint32_t *codes,
                             const uint8_t *packed, size_t n, float *out)
{
  const size_t dim = (size_t)c->dim, pb = jp_codec_packed_bytes(c);
  const int nbits = c->nbits;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *p = packed + i * pb;
    const float *cen = c->centroids + (size_t)codes[i] * dim;
    float *o = out + i * dim;
    for (size_t d = 0; d < dim; d++) {
      unsigned b = 0;
      for (int j = 0; j < nbits; j++) {          /* stream bit = bucket bit j */
        size_t pos = d * (size_t)nbits + (size_t)j;
        unsigned bit = (p[pos / 8] >> (7 - pos % 8)) & 1u;
        b |= bit << j;
      }
      o[d] = cen[d] + c->weights[b];
    }
    normalize_row(o, dim);
  }
}

static void decompress_lut_scalar(const struct jp_codec *c, const struct jp_codec_lut *lut,
                                  const uint32_t *codes, const uint8_t *packed, size_t n,
                                  float *out)
{
  const size_t dim = (size_t)c->dim, pb = jp_codec_packed_bytes(c);
  const int per = lut->per;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *p = packed + i * pb;
    const float *cen = c->centroids + (size_t)codes[i] * dim;
    float *o = out + i * dim;
    size_t d = 0;
    for (size_t byte = 0; byte < pb; byte++) {
      const float *w = lut->lut + (size_t)p[byte] * (size_t)per;
      for (int j = 0; j < per; j++, d++) o[d] = cen[d] + w[j];
    }
    normalize_row(o, dim);
  }
}

#if JP_HAVE_AVX2
/* Eight dimensions at a time; `nbits` bytes cover them. */
__attribute__((target("avx2,fma")))
static inline __m256 lut8(const float *lut, const uint8_t *p, int nbits)
{
  switch (nbits) {
  case 1:
    return _mm256_loadu_ps(lut + (size_t)p[0] * 8);
  case 2:
    return _mm256_set_m128(_mm_loadu_ps(lut + (size_t)p[1] * 4), _mm_loadu_ps(lut + (size_t)p[0] * 4));
  case 4: {
    __m128 lo = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd((const double *)(lut + (size_t)p[0] * 2)),
                                           (const double *)(lut + (size_t)p[1] * 2)));
    __m128 hi = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd((const double *)(lut + (size_t)p[2] * 2)),
                                           (const double *)(lut + (size_t)p[3] * 2)));
    return _mm256_set_m128(hi, lo);
  }
  default:
    return _mm256_setr_ps(lut[p[0]], lut[p[1]], lut[p[2]], lut[p[3]], lut[p[4]], lut[p[5]],
                          lut[p[6]], lut[p[7]]);
  }
}

__attribute__((target("avx2,fma")))
static void decompress_lut_avx2(const struct jp_codec *c, const struct jp_codec_lut *lut,
                                const uint32_t *codes, const uint8_t *packed, size_t n,
                                float *out)
{
  const size_t dim = (size_t)c->dim, pb = jp_codec_packed_bytes(c);
  const int nbits = c->nbits;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *p = packed + i * pb;
    const float *cen = c->centroids + (size_t)codes[i] * dim;
    float *o = out + i * dim;
    __m256 ss = _mm256_setzero_ps();
    for (size_t d = 0; d < dim; d += 8, p += nbits) {
      __m256 v = _mm256_add_ps(_mm256_loadu_ps(cen + d), lut8(lut->lut, p, nbits));
      ss = _mm256_fmadd_ps(v, v, ss);
      _mm256_storeu_ps(o + d, v);
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(ss), _mm256_extractf128_ps(ss, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float norm = sqrtf(_mm_cvtss_f32(s4));
    if (norm < NORM_EPS) norm = NORM_EPS;
    __m256 inv = _mm256_set1_ps(norm);
    for (size_t d = 0; d < dim; d += 8)
      _mm256_storeu_ps(o + d, _mm256_div_ps(_mm256_loadu_ps(o + d), inv));
  }
}
#endif

void jp_codec_decompress_lut(const struct jp_codec *c, const struct jp_codec_lut *lut,
                             const uint32_t *codes, const uint8_t *packed, size_t n, float *out)
{
#if JP_HAVE_AVX2
  if (c->dim % 8 == 0 && jp_nearest_have_avx2()) {
    decompress_lut_avx2(c, lut, codes, packed, n, out);
    return;
  }
#endif
  decompress_lut_scalar(c, lut, codes, packed, n, out);
}

void jp_codec_decompress(const struct jp_codec *c, const uint32_t *codes, const uint8_t *packed,
                         size_t n, float *out)
{
  struct jp_codec_lut lut;
  if (n == 0) return;
  jp_codec_lut_init(c, &lut);
  jp_codec_decompress_lut(c, &lut, codes, packed, n, out);
}
