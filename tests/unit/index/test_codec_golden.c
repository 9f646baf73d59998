/* test_codec_golden.c: the codec against tools/reference/codec_reference.py
 * (PyTorch + numpy from plaid.md's math). Codes, bucket cutoffs and weights
 * (as float32 bit patterns) and packed bytes must be identical; decoded
 * vectors within 1e-6 (fast and scalar paths). */
#include "index/codec.h"
#include "test_helpers.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/mem.h"

#include <limits.h>
#include <math.h>

static char *read_golden(const char *name, size_t want)
{
  char path[PATH_MAX];
  const char *src = getenv("JP_SOURCE_DIR");
  char *buf = NULL;
  size_t len = 0;
  if (!src) fail_msg("JP_SOURCE_DIR is not set (run through ctest)");
  snprintf(path, sizeof path, "%s/tests/golden/codec/%s", src, name);
  if (jp_read_file(path, 0, &buf, &len) != 0) fail_msg("cannot read %s", path);
  if (want && len != want) fail_msg("%s: %zu bytes, expected %zu", path, len, want);
  return buf;
}

static float bits_to_float(json_int_t bits)
{
  uint32_t u = (uint32_t)bits;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static void codec_matches_reference(void **state)
{
  (void)state;
  char *mtext = read_golden("manifest.json", 0);
  json_t *m = NULL;
  assert_int_equal(jp_json_loadb(mtext, strlen(mtext), "manifest", &m), 0);
  const int n = (int)json_integer_value(json_object_get(m, "n"));
  const int dim = (int)json_integer_value(json_object_get(m, "dim"));
  const int nc = (int)json_integer_value(json_object_get(m, "ncentroids"));
  assert_true(n > 0 && dim > 0 && nc > 0);
  float *vecs = (float *)read_golden("vectors.f32", sizeof(float) * (size_t)n * dim);
  float *cent = (float *)read_golden("centroids.f32", sizeof(float) * (size_t)nc * dim);
  uint32_t *codes_ref = (uint32_t *)read_golden("codes.u32", sizeof(uint32_t) * (size_t)n);
  float *res = malloc(sizeof *res * (size_t)n * dim);
  float *dec = malloc(sizeof *dec * (size_t)n * dim);
  uint32_t *codes = malloc(sizeof *codes * (size_t)n);

  for (int nbits = 1; nbits <= 8; nbits *= 2) {
    char key[8], name[64];
    snprintf(key, sizeof key, "%d", nbits);
    json_t *g = json_object_get(json_object_get(m, "nbits"), key);
    assert_non_null(g);
    struct jp_codec c;
    assert_int_equal(jp_codec_init(&c, dim, nbits, nc), 0);
    memcpy(c.centroids, cent, sizeof(float) * (size_t)nc * dim);
    const size_t pb = jp_codec_packed_bytes(&c);

    /* Codes, then buckets trained on the residuals of the same vectors. */
    assert_int_equal(jp_codec_assign(&c, vecs, (size_t)n, NULL, codes), 0);
    assert_memory_equal(codes, codes_ref, sizeof *codes * (size_t)n);
    for (int i = 0; i < n; i++)
      for (int d = 0; d < dim; d++)
        res[i * dim + d] = vecs[i * dim + d] - cent[codes[i] * dim + d];
    assert_int_equal(jp_codec_train_buckets(&c, res, (size_t)n), 0);
    json_t *cb = json_object_get(g, "cutoffs_bits"), *wb = json_object_get(g, "weights_bits");
    assert_int_equal(json_array_size(cb), (1 << nbits) - 1);
    assert_int_equal(json_array_size(wb), 1 << nbits);
    for (size_t i = 0; i < json_array_size(cb); i++)
      if (c.cutoffs[i] != bits_to_float(json_integer_value(json_array_get(cb, i))))
        fail_msg("nbits %d cutoff %zu: %.9g, reference %.9g", nbits, i, c.cutoffs[i],
                 bits_to_float(json_integer_value(json_array_get(cb, i))));
    for (size_t i = 0; i < json_array_size(wb); i++)
      if (c.weights[i] != bits_to_float(json_integer_value(json_array_get(wb, i))))
        fail_msg("nbits %d weight %zu: %.9g, reference %.9g", nbits, i, c.weights[i],
                 bits_to_float(json_integer_value(json_array_get(wb, i))));
    double avg = json_real_value(json_object_get(g, "avg_residual"));
    assert_float_equal(c.avg_residual, avg, 1e-6 * avg);

    /* Packed bytes, byte for byte. */
    snprintf(name, sizeof name, "packed_%d.u8", nbits);
    uint8_t *packed_ref = (uint8_t *)read_golden(name, pb * (size_t)n);
    uint8_t *packed = malloc(pb * (size_t)n);
    uint32_t *codes2 = malloc(sizeof *codes2 * (size_t)n);
    assert_int_equal(jp_codec_compress(&c, vecs, (size_t)n, NULL, codes2, packed), 0);
    assert_memory_equal(codes2, codes_ref, sizeof *codes2 * (size_t)n);
    for (size_t i = 0; i < pb * (size_t)n; i++)
      if (packed[i] != packed_ref[i])
        fail_msg("nbits %d: packed byte %zu (vector %zu) is 0x%02x, reference 0x%02x", nbits, i,
                 i / pb, packed[i], packed_ref[i]);

    /* Decoding the reference bytes, both paths. */
    snprintf(name, sizeof name, "decoded_%d.f32", nbits);
    float *dec_ref = (float *)read_golden(name, sizeof(float) * (size_t)n * dim);
    for (int path = 0; path < 2; path++) {
      if (path == 0) jp_codec_decompress(&c, codes_ref, packed_ref, (size_t)n, dec);
      else jp_codec_decompress_ref(&c, codes_ref, packed_ref, (size_t)n, dec);
      for (size_t i = 0; i < (size_t)n * dim; i++)
        if (fabsf(dec[i] - dec_ref[i]) > 1e-6f)
          fail_msg("nbits %d %s: decoded value %zu is %.9g, reference %.9g", nbits,
                   path ? "ref" : "fast", i, dec[i], dec_ref[i]);
    }
    jp_free(dec_ref);
    jp_free(packed_ref);
    free(packed);
    free(codes2);
    jp_codec_fini(&c);
  }
  json_decref(m);
  jp_free(mtext);
  jp_free(vecs);
  jp_free(cent);
  jp_free(codes_ref);
  free(res);
  free(dec);
  free(codes);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(codec_matches_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
