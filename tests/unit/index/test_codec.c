/* test_codec.c: the residual codec (codec.h) and the nearest-centroid
 * kernel behind its assignment: bit layout on hand-worked bytes, quantile
 * semantics against a sort-based oracle, fast vs scalar decompression,
 * round-trip error per nbits, argument errors and out-of-memory paths. */
#include "index/codec.h"
#include "index/index_int.h"
#include "index_test_util.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/pool.h"

#include <stdlib.h>
#include <string.h>

/* plaid.md §2.3: at nbits 2, buckets [3,3,1,1] pack to 0b11111010. */
static void pack_worked_example_nbits2(void **state)
{
  (void)state;
  struct jp_codec c;
  assert_int_equal(jp_codec_init(&c, 4, 2, 1), 0);
  c.cutoffs[0] = -1.0f;
  c.cutoffs[1] = 0.0f;
  c.cutoffs[2] = 1.0f;
  /* 2 > all three cutoffs -> 3; -0.5 > only -1 -> 1. */
  const float r[4] = { 2.0f, 2.0f, -0.5f, -0.5f };
  uint8_t byte = 0;
  jp_codec_pack(&c, r, 1, &byte);
  assert_int_equal(byte, 0xFA);
  /* A value equal to a cutoff goes to the lower bucket: 0 -> 1, 1 -> 2. */
  const float e[4] = { 0.0f, 1.0f, -1.0f, 1.5f };
  jp_codec_pack(&c, e, 1, &byte);
  /* buckets 1, 2, 0, 3 -> LSB-first groups 10 01 00 11 */
  assert_int_equal(byte, 0x93);
  jp_codec_fini(&c);
}

static void pack_examples_other_nbits(void **state)
{
  (void)state;
  struct jp_codec c;
  uint8_t out[2];
  /* nbits 1: bucket = r > cutoff; bits straight into bytes, MSB first. */
  assert_int_equal(jp_codec_init(&c, 8, 1, 1), 0);
  c.cutoffs[0] = 0.0f;
  const float r1[8] = { 1, -1, 1, 1, -1, -1, 0, 1 };
  jp_codec_pack(&c, r1, 1, out);
  assert_int_equal(out[0], 0xB1);   /* 1011 0001 */
  jp_codec_fini(&c);
  /* nbits 4: buckets 1 and 12 -> LSB first 1000 and 0011. */
  assert_int_equal(jp_codec_init(&c, 2, 4, 1), 0);
  for (int i = 0; i < 15; i++) c.cutoffs[i] = (float)i + 0.5f;
  const float r4[2] = { 1.0f, 12.0f };
  jp_codec_pack(&c, r4, 1, out);
  assert_int_equal(out[0], 0x83);
  jp_codec_fini(&c);
  /* nbits 8: bucket 1 -> 1000 0000; bucket 200 (1100 1000) -> 0001 0011. */
  assert_int_equal(jp_codec_init(&c, 2, 8, 1), 0);
  for (int i = 0; i < 255; i++) c.cutoffs[i] = (float)i + 0.5f;
  const float r8[2] = { 1.0f, 200.0f };
  jp_codec_pack(&c, r8, 1, out);
  assert_int_equal(out[0], 0x80);
  assert_int_equal(out[1], 0x13);
  jp_codec_fini(&c);
}

/* Decoding the worked byte: weights by bucket, plus the centroid, L2-normalised. */
static void decompress_worked_example(void **state)
{
  (void)state;
  struct jp_codec c;
  assert_int_equal(jp_codec_init(&c, 4, 2, 2), 0);
  const float w[4] = { -0.3f, -0.1f, 0.1f, 0.3f };
  memcpy(c.weights, w, sizeof w);
  for (int d = 0; d < 4; d++) c.centroids[4 + d] = (float)(d + 1);
  uint32_t code = 1;
  uint8_t byte = 0xFA;
  float fast[4], ref[4], want[4] = { 1.0f + 0.3f, 2.0f + 0.3f, 3.0f - 0.1f, 4.0f - 0.1f };
  itu_normalize(want, 4);
  jp_codec_decompress(&c, &code, &byte, 1, fast);
  jp_codec_decompress_ref(&c, &code, &byte, 1, ref);
  for (int d = 0; d < 4; d++) {
    assert_float_equal(fast[d], want[d], 1e-6);
    assert_float_equal(ref[d], want[d], 1e-6);
  }
  jp_codec_fini(&c);
}

/* torch.quantile's definition, by full sort: the oracle for the selection. */
static int cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

static float oracle_quantile(const float *sorted, size_t N, float q)
{
  float rank = q * (float)(N - 1);
  size_t lo = (size_t)rank, hi = (size_t)ceilf(rank);
  float w = rank - (float)lo, a = sorted[lo], b = sorted[hi];
  return fabsf(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

static void check_quantiles(const float *r, size_t n, int dim, int nbits)
{
  struct jp_codec c;
  size_t N = n * (size_t)dim;
  float *s = malloc(sizeof *s * N);
  assert_non_null(s);
  memcpy(s, r, sizeof *s * N);
  qsort(s, N, sizeof *s, cmp_float);
  assert_int_equal(jp_codec_init(&c, dim, nbits, 1), 0);
  assert_int_equal(jp_codec_train_buckets(&c, r, n), 0);
  int B = 1 << nbits;
  for (int i = 1; i < B; i++)
    assert_true(c.cutoffs[i - 1] == oracle_quantile(s, N, (float)i * (1.0f / (float)B)));
  for (int i = 0; i < B; i++)
    assert_true(c.weights[i] == oracle_quantile(s, N, (float)i * (1.0f / (float)B) + 0.5f / (float)B));
  for (int i = 1; i < B - 1; i++) assert_true(c.cutoffs[i - 1] <= c.cutoffs[i]);
  double abs_sum = 0;
  for (size_t i = 0; i < N; i++) abs_sum += fabs(r[i]);
  assert_float_equal(c.avg_residual, abs_sum / (double)N, 1e-6);
  jp_codec_fini(&c);
  free(s);
}

static void buckets_match_sorted_quantiles(void **state)
{
  (void)state;
  uint64_t rng = 7;
  /* Continuous values, several sizes (non-integer quantile positions). */
  size_t ns[] = { 1, 3, 37, 1000 };
  for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
    size_t n = ns[t];
    float *r = malloc(sizeof *r * n * 8);
    for (size_t i = 0; i < n * 8; i++) r[i] = 0.1f * jp_randn(&rng);
    for (int nbits = 1; nbits <= 8; nbits *= 2) check_quantiles(r, n, 8, nbits);
    free(r);
  }
  /* Heavy duplicates (exact zeros, few distinct values) and all-equal. */
  float *r = malloc(sizeof *r * 4000);
  for (size_t i = 0; i < 4000; i++) r[i] = (float)(jp_rand64(&rng) % 5) * 0.25f - 0.5f;
  for (int nbits = 1; nbits <= 8; nbits *= 2) check_quantiles(r, 500, 8, nbits);
  for (size_t i = 0; i < 4000; i++) r[i] = 0.125f;
  for (int nbits = 1; nbits <= 8; nbits *= 2) check_quantiles(r, 500, 8, nbits);
  free(r);
}

/* On the training data itself each bucket holds about 1/B of the entries. */
static void buckets_split_training_data_evenly(void **state)
{
  (void)state;
  uint64_t rng = 11;
  const int dim = 64;
  const size_t n = 500;
  float *r = malloc(sizeof *r * n * dim);
  for (size_t i = 0; i < n * dim; i++) r[i] = 0.05f * jp_randn(&rng);
  for (int nbits = 1; nbits <= 4; nbits *= 2) {
    struct jp_codec c;
    assert_int_equal(jp_codec_init(&c, dim, nbits, 1), 0);
    assert_int_equal(jp_codec_train_buckets(&c, r, n), 0);
    uint8_t *packed = malloc(jp_codec_packed_bytes(&c) * n);
    jp_codec_pack(&c, r, n, packed);
    int B = 1 << nbits;
    size_t hist[16] = { 0 };
    /* Decode buckets from the bytes (definition: LSB-first bit stream). */
    for (size_t i = 0; i < n; i++)
      for (int d = 0; d < dim; d++) {
        unsigned b = 0;
        for (int j = 0; j < nbits; j++) {
          size_t pos = (size_t)d * (size_t)nbits + (size_t)j;
          b |= (unsigned)((packed[i * jp_codec_packed_bytes(&c) + pos / 8] >> (7 - pos % 8)) & 1) << j;
        }
        hist[b]++;
      }
    for (int b = 0; b < B; b++) {
      double frac = (double)hist[b] / (double)(n * dim);
      assert_true(fabs(frac - 1.0 / B) < 0.01);
    }
    free(packed);
    jp_codec_fini(&c);
  }
  free(r);
}

/* Fast (table + AVX2) decompression equals the bit-by-bit reference. */
static void decompress_fast_matches_ref(void **state)
{
  (void)state;
  uint64_t rng = 3;
  const int dims[] = { 128, 64, 8, 24 };
  for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
    for (int nbits = 1; nbits <= 8; nbits *= 2) {
      int dim = dims[t];
      if ((dim * nbits) % 8) continue;
      struct jp_codec c;
      assert_int_equal(jp_codec_init(&c, dim, nbits, 5), 0);
      itu_unit_rows(c.centroids, 5, dim, &rng);
      for (int i = 0; i < (1 << nbits); i++) c.weights[i] = 0.01f * (float)(i - (1 << nbits) / 2);
      const size_t n = 50, pb = jp_codec_packed_bytes(&c);
      uint32_t codes[50];
      uint8_t *packed = malloc(pb * n);
      float *a = malloc(sizeof *a * n * (size_t)dim), *b = malloc(sizeof *b * n * (size_t)dim);
      for (size_t i = 0; i < n; i++) codes[i] = (uint32_t)(jp_rand64(&rng) % 5);
      for (size_t i = 0; i < pb * n; i++) packed[i] = (uint8_t)jp_rand64(&rng);
      jp_codec_decompress(&c, codes, packed, n, a);
      jp_codec_decompress_ref(&c, codes, packed, n, b);
      for (size_t i = 0; i < n * (size_t)dim; i++) assert_float_equal(a[i], b[i], 1e-6);
      for (size_t i = 0; i < n; i++)
        assert_float_equal(itu_dot(a + i * (size_t)dim, a + i * (size_t)dim, dim), 1.0, 1e-5);
      free(packed);
      free(a);
      free(b);
      jp_codec_fini(&c);
    }
  }
}

/* Compress -> decompress on clustered data: cosine to the original grows
 * with nbits (measured means: ~0.96, ~0.99, ~0.999, ~0.99999), and every
 * decoded residual lies inside its bucket's interval. */
static void round_trip_error_bounds(void **state)
{
  (void)state;
  uint64_t rng = 99;
  const int dim = 128, nc = 32;
  const size_t n = 2000;
  const double min_mean_cos[9] = { 0, 0.93, 0.97, 0, 0.995, 0, 0, 0, 0.9995 };
  float *x = malloc(sizeof *x * n * dim), *dec = malloc(sizeof *dec * n * dim);
  float *res = malloc(sizeof *res * n * dim);
  struct jp_codec c;
  for (int nbits = 1; nbits <= 8; nbits *= 2) {
    assert_int_equal(jp_codec_init(&c, dim, nbits, nc), 0);
    itu_unit_rows(c.centroids, nc, dim, &rng);
    for (size_t i = 0; i < n; i++)
      itu_near(c.centroids + (jp_rand64(&rng) % nc) * dim, 0.5f, dim, &rng, x + i * dim);
    uint32_t *codes = malloc(sizeof *codes * n);
    assert_int_equal(jp_codec_assign(&c, x, n, NULL, codes), 0);
    for (size_t i = 0; i < n; i++)
      for (int d = 0; d < dim; d++)
        res[i * dim + d] = x[i * dim + d] - c.centroids[codes[i] * dim + d];
    assert_int_equal(jp_codec_train_buckets(&c, res, n), 0);
    uint8_t *packed = malloc(jp_codec_packed_bytes(&c) * n);
    uint32_t *codes2 = malloc(sizeof *codes2 * n);
    assert_int_equal(jp_codec_compress(&c, x, n, NULL, codes2, packed), 0);
    assert_memory_equal(codes, codes2, sizeof *codes * n);
    jp_codec_decompress(&c, codes2, packed, n, dec);
    double cos_sum = 0;
    for (size_t i = 0; i < n; i++) cos_sum += itu_dot(x + i * dim, dec + i * dim, dim);
    double mean_cos = cos_sum / (double)n;
    assert_true(mean_cos > min_mean_cos[nbits]);
    /* Unnormalised decode: weight of the bucket, which must bracket r. */
    int B = 1 << nbits;
    for (size_t i = 0; i < 200; i++)
      for (int d = 0; d < dim; d++) {
        float r = res[i * dim + d];
        unsigned b = 0;
        while ((int)b < B - 1 && c.cutoffs[b] < r) b++;
        float lo = b == 0 ? -INFINITY : c.cutoffs[b - 1], hi = (int)b == B - 1 ? INFINITY : c.cutoffs[b];
        assert_true(r > lo && r <= hi);
        assert_true(c.weights[b] >= lo && c.weights[b] <= hi);
      }
    free(codes);
    free(codes2);
    free(packed);
    jp_codec_fini(&c);
  }
  free(x);
  free(dec);
  free(res);
}

/* The fused kernel against the scalar reference (argmin, min, second min),
 * in L2 and inner-product mode, with k not a multiple of 16 and rows not a
 * multiple of 6, through a row list, and with the pool. */
static void nearest_kernel_matches_ref(void **state)
{
  (void)state;
  uint64_t rng = 5;
  const int dim = 40;
  const int ks[] = { 1, 7, 16, 37, 300 };
  const size_t n = 101;
  float *x = malloc(sizeof *x * n * dim);
  itu_unit_rows(x, n, dim, &rng);
  jp_pool *pool;
  assert_int_equal(jp_pool_create(2, &pool), 0);
  for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
    int k = ks[t];
    float *c = malloc(sizeof *c * (size_t)k * dim);
    itu_unit_rows(c, (size_t)k, dim, &rng);
    for (int l2 = 0; l2 <= 1; l2++) {
      struct jp_nearest nb;
      assert_int_equal(jp_nearest_init(&nb, c, k, dim, l2), 0);
      uint32_t ia[101], ib[101], rows[50];
      float va[101], vb[101], sa[101], sb[101];
      jp_nearest_run(&nb, x, dim, NULL, n, pool, ia, va, sa);
      jp_nearest_block_ref(&nb, x, dim, NULL, n, ib, vb, sb);
      for (size_t i = 0; i < n; i++) {
        assert_float_equal(va[i], vb[i], 1e-5);
        if (k > 1) assert_float_equal(sa[i], sb[i], 1e-5);
        else assert_true(isinf(sa[i]) && isinf(sb[i]));
        /* Same index unless the two best are within rounding. */
        if (ia[i] != ib[i]) assert_true(fabsf(sb[i] - vb[i]) < 1e-5);
      }
      for (int r = 0; r < 50; r++) rows[r] = (uint32_t)(jp_rand64(&rng) % n);
      jp_nearest_run(&nb, x, dim, rows, 50, pool, ia, va, NULL);
      for (int r = 0; r < 50; r++) {
        assert_int_equal(ia[r], ib[rows[r]]);
        assert_float_equal(va[r], vb[rows[r]], 1e-5);
      }
      jp_nearest_fini(&nb);
    }
    free(c);
  }
  /* Exact ties go to the smaller centroid in both paths. */
  float c2[3 * 40];
  for (int j = 0; j < 3; j++) memcpy(c2 + j * dim, x, sizeof(float) * dim);
  struct jp_nearest nb;
  assert_int_equal(jp_nearest_init(&nb, c2, 3, dim, 1), 0);
  uint32_t i1, i2;
  jp_nearest_block(&nb, x, dim, NULL, 1, &i1, NULL, NULL);
  jp_nearest_block_ref(&nb, x, dim, NULL, 1, &i2, NULL, NULL);
  assert_int_equal(i1, 0);
  assert_int_equal(i2, 0);
  jp_nearest_fini(&nb);
  jp_pool_destroy(pool);
  free(x);
}

/* Assignment = the largest inner product (brute force), any thread count. */
static void assign_is_max_inner_product(void **state)
{
  (void)state;
  uint64_t rng = 17;
  const int dim = 128, nc = 70;
  const size_t n = 500;
  struct jp_codec c;
  assert_int_equal(jp_codec_init(&c, dim, 2, nc), 0);
  itu_unit_rows(c.centroids, nc, dim, &rng);
  float *x = malloc(sizeof *x * n * dim);
  itu_unit_rows(x, n, dim, &rng);
  uint32_t *a = malloc(sizeof *a * n), *b = malloc(sizeof *b * n);
  jp_pool *pool;
  assert_int_equal(jp_pool_create(2, &pool), 0);
  assert_int_equal(jp_codec_assign(&c, x, n, NULL, a), 0);
  assert_int_equal(jp_codec_assign(&c, x, n, pool, b), 0);
  assert_memory_equal(a, b, sizeof *a * n);
  for (size_t i = 0; i < n; i++) {
    float best = -INFINITY;
    for (int j = 0; j < nc; j++) {
      float s = itu_dot(x + i * dim, c.centroids + j * dim, dim);
      if (s > best) best = s;
    }
    assert_float_equal(itu_dot(x + i * dim, c.centroids + a[i] * dim, dim), best, 1e-5);
  }
  jp_pool_destroy(pool);
  free(x);
  free(a);
  free(b);
  jp_codec_fini(&c);
}

static void bad_arguments_are_errors(void **state)
{
  (void)state;
  struct jp_codec c;
  assert_int_equal(jp_codec_init(&c, 128, 3, 4), JP_EINVAL);
  assert_int_equal(jp_codec_init(&c, 3, 2, 4), JP_EINVAL);     /* 6 bits: not whole bytes */
  assert_int_equal(jp_codec_init(&c, 0, 2, 4), JP_EINVAL);
  assert_int_equal(jp_codec_init(&c, 128, 2, 0), JP_EINVAL);
  assert_int_equal(jp_codec_init(&c, 8, 2, 2), 0);
  float r[8] = { 0 };
  assert_int_equal(jp_codec_train_buckets(&c, r, 0), JP_EINVAL);
  r[3] = NAN;
  assert_int_equal(jp_codec_train_buckets(&c, r, 1), JP_EINVAL);
  jp_codec_fini(&c);
  jp_codec_fini(NULL);
  struct jp_codec empty;
  memset(&empty, 0, sizeof empty);
  uint32_t code;
  assert_int_equal(jp_codec_assign(&empty, r, 1, NULL, &code), JP_EINVAL);
}

/* Every allocation of init, copy, train and compress may fail: a clean
 * JP_ENOMEM each time (ASan builds check for leaks). */
static void oom_paths_are_clean(void **state)
{
  (void)state;
  uint64_t rng = 1;
  float x[16 * 32];
  itu_unit_rows(x, 16, 32, &rng);
  for (long fail = 1;; fail++) {
    struct jp_codec c, d;
    uint32_t codes[16];
    uint8_t packed[16 * 8];
    int rc;
    jp_mem_fail_after(fail);
    rc = jp_codec_init(&c, 32, 2, 4);
    if (rc == 0) {
      memcpy(c.centroids, x, sizeof(float) * 4 * 32);
      rc = jp_codec_train_buckets(&c, x, 16);
      if (rc == 0) rc = jp_codec_compress(&c, x, 16, NULL, codes, packed);
      if (rc == 0) {
        rc = jp_codec_copy(&d, &c);
        if (rc == 0) jp_codec_fini(&d);
      }
      jp_codec_fini(&c);
    }
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      assert_true(made < fail);
      break;
    }
    assert_int_equal(rc, JP_ENOMEM);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(pack_worked_example_nbits2),
    cmocka_unit_test(pack_examples_other_nbits),
    cmocka_unit_test(decompress_worked_example),
    cmocka_unit_test(buckets_match_sorted_quantiles),
    cmocka_unit_test(buckets_split_training_data_evenly),
    cmocka_unit_test(decompress_fast_matches_ref),
    cmocka_unit_test(round_trip_error_bounds),
    cmocka_unit_test(nearest_kernel_matches_ref),
    cmocka_unit_test(assign_is_max_inner_product),
    cmocka_unit_test(bad_arguments_are_errors),
    cmocka_unit_test(oom_paths_are_clean),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
