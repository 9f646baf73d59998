/* golden_common.h: what the golden tests share: loading the golden file and
 * comparing encoder output with reference embeddings. Header-only (each
 * golden test is one executable). */
#ifndef JP_GOLDEN_COMMON_H
#define JP_GOLDEN_COMMON_H
#include "test_helpers.h"
#include "util/json.h"

#include <limits.h>
#include <math.h>

/* The acceptance bar of the golden tests (issue 2): every vector within
 * cosine 0.9999 and max abs difference 1e-4 of the reference. Measured C vs
 * PyTorch float64 differences are around 2e-7. */
#define GOLDEN_MIN_COS 0.9999
#define GOLDEN_MAX_ABS 1e-4

static inline json_t *golden_load(void)
{
  char path[PATH_MAX];
  const char *src = getenv("JP_SOURCE_DIR");
  json_t *g = NULL;
  if (!src) fail_msg("JP_SOURCE_DIR is not set (run through ctest)");
  snprintf(path, sizeof path, "%s/tests/golden/model_tiny.json", src);
  if (jp_json_load_file(path, &g) != 0) fail_msg("cannot load %s", path);
  return g;
}

/* Compares n rows of `got` (row-major, dim wide) with the JSON rows. A zero
 * reference row (the static model's special tokens) must come back zero. */
static inline void golden_compare(const float *got, const json_t *rows, int n, int dim,
                                  const char *what, int index)
{
  if ((int)json_array_size(rows) != n)
    fail_msg("%s %d: %d vectors, reference has %zu", what, index, n, json_array_size(rows));
  for (int r = 0; r < n; r++) {
    const json_t *row = json_array_get(rows, (size_t)r);
    const float *g = got + (size_t)r * dim;
    double dot = 0, ng = 0, nr = 0, mx = 0;
    if ((int)json_array_size(row) != dim) fail_msg("%s %d row %d: width", what, index, r);
    for (int d = 0; d < dim; d++) {
      double ref = json_number_value(json_array_get(row, (size_t)d));
      dot += ref * g[d];
      ng += (double)g[d] * g[d];
      nr += ref * ref;
      if (fabs(ref - g[d]) > mx) mx = fabs(ref - g[d]);
    }
    if (mx > GOLDEN_MAX_ABS)
      fail_msg("%s %d row %d: max abs difference %g > %g", what, index, r, mx, GOLDEN_MAX_ABS);
    if (nr == 0) {
      if (ng > 1e-12) fail_msg("%s %d row %d: reference is zero, got norm %g", what, index, r,
                               sqrt(ng));
      continue;
    }
    double cos = dot / sqrt(ng * nr);
    if (cos < GOLDEN_MIN_COS)
      fail_msg("%s %d row %d: cosine %.6f < %g", what, index, r, cos, GOLDEN_MIN_COS);
  }
}

/* ids/mask arrays of a golden entry, copied out (caller frees). */
static inline int golden_ints(const json_t *arr, int32_t **ids, uint8_t **mask, const json_t *m)
{
  int n = (int)json_array_size(arr);
  *ids = malloc((size_t)n * sizeof **ids);
  *mask = malloc((size_t)n);
  assert_non_null(*ids);
  assert_non_null(*mask);
  for (int i = 0; i < n; i++) {
    (*ids)[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    (*mask)[i] = (uint8_t)json_integer_value(json_array_get(m, (size_t)i));
  }
  return n;
}

#endif
