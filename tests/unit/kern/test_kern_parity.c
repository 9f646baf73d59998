/* test_kern_parity.c: every fast kernel (kern.h) against the scalar
 * reference on random and edge shapes, with stated tolerances; and the
 * reference itself against known values, so the oracle is checked too.
 *
 * Tolerances (max over all elements):
 *   erf            |fast - erff| <= 1e-6 (A&S 7.1.26 bound 1.5e-7 + float
 *                  rounding)
 *   bias_gelu      |fast - ref| <= 1e-6 * max(1, |z|)  (z = x + b)
 *   add_layernorm  |fast - ref| <= 1e-5 * (|g| + 1) for rows of O(1)
 *                  spread; 2e-3 * (|g| + 1) for rows offset by 1e3 (the
 *                  float mean of such a row is only good to ~1e-4 of the
 *                  spread, which is what torch's float LayerNorm gets too)
 *   softmax_masked |fast - ref| <= 1e-6 + 1e-5 * ref; masked entries exactly 0
 *   l2norm         |fast - ref| <= 1e-6 * max|ref|; zero rows stay exactly 0
 *   gemm_nn,       |fast - ref| <= 1e-5 * sum_k |A_ik B_kj| (float
 *   gemm_nt        accumulation against double; + 1e-5 when gemm_nt adds to
 *                  a unit-scale C); C outside [M, N] untouched
 * When the CPU has no AVX2 the parity cases are skipped (the reference
 * cases still run). */
#include "test_helpers.h"
#include "model/kern.h"
#include "util/hash.h"

#include <float.h>
#include <math.h>

static const struct kern_ops *fast(void)
{
  return kern_by_name("avx2");
}

static void fill(float *x, int n, uint64_t *rng, float scale, float offset)
{
  for (int i = 0; i < n; i++) x[i] = offset + scale * jp_randn(rng);
}

/* ---- the reference against known values ---------------------------------------- */

static void ref_matches_known_values(void **state)
{
  (void)state;
  const struct kern_ops *r = kern_ref();
  float e[4] = { 0.0f, 0.5f, 1.0f, -2.0f };
  r->erf(e, 4);
  assert_true(fabsf(e[0]) < 1e-7f);
  assert_true(fabsf(e[1] - 0.5204998778f) < 1e-6f);
  assert_true(fabsf(e[2] - 0.8427007929f) < 1e-6f);
  assert_true(fabsf(e[3] + 0.9953222650f) < 1e-6f);

  float g[3] = { 1.0f, -1.0f, 0.0f };
  r->bias_gelu(g, NULL, 3);
  assert_true(fabsf(g[0] - 0.8413447461f) < 1e-6f);
  assert_true(fabsf(g[1] + 0.1586552539f) < 1e-6f);
  assert_true(g[2] == 0.0f);

  float s[3] = { 1.0f, 2.0f, 100.0f };
  uint8_t m[3] = { 1, 1, 0 };
  r->softmax_masked(s, m, 3);
  assert_true(fabsf(s[0] - 0.2689414214f) < 1e-6f);
  assert_true(fabsf(s[1] - 0.7310585786f) < 1e-6f);
  assert_true(s[2] == 0.0f);

  float x[4] = { 1, 2, 3, 4 }, gam[4] = { 1, 1, 1, 2 }, bet[4] = { 0, 0, 0, 1 };
  r->add_layernorm(x, NULL, NULL, gam, bet, 4, 1e-12f);
  /* mean 2.5, biased variance 1.25 */
  assert_true(fabsf(x[0] + 1.5f / sqrtf(1.25f)) < 1e-6f);
  assert_true(fabsf(x[3] - (2.0f * 1.5f / sqrtf(1.25f) + 1.0f)) < 1e-6f);

  float v[2] = { 3, 4 };
  r->l2norm(v, 2);
  assert_true(fabsf(v[0] - 0.6f) < 1e-7f && fabsf(v[1] - 0.8f) < 1e-7f);

  float A[6] = { 1, 2, 3, 4, 5, 6 }, B[6] = { 1, 0, 0, 1, 1, 1 }, C[4];
  r->gemm_nn(2, 2, 3, A, 3, B, 2, C, 2);   /* [[1,2,3],[4,5,6]] x [[1,0],[0,1],[1,1]] */
  assert_true(C[0] == 4 && C[1] == 5 && C[2] == 10 && C[3] == 11);
}

/* ---- parity ---------------------------------------------------------------------- */

static void erf_parity(void **state)
{
  (void)state;
  const struct kern_ops *f = fast();
  if (!f) skip();
  enum { N = 24003 };   /* not a multiple of 8: the tail path runs too */
  static float x[N], a[N], b[N];
  for (int i = 0; i < N - 11; i++) x[i] = -6.0f + 12.0f * (float)i / (float)(N - 12);
  const float edge[11] = { 0.0f, -0.0f, 1e-30f, -1e-7f, 9.5f, -9.5f, 30.0f, -1e30f, FLT_MAX,
                           -FLT_MAX, 3.4e-3f };
  for (int i = 0; i < 11; i++) x[N - 11 + i] = edge[i];
  for (int n = 1; n <= N; n = n < 64 ? n + 1 : n * 3 + 1) {
    memcpy(a, x, sizeof(float) * (size_t)n);
    memcpy(b, x, sizeof(float) * (size_t)n);
    kern_ref()->erf(a, n);
    f->erf(b, n);
    for (int i = 0; i < n; i++)
      if (!(fabsf(a[i] - b[i]) <= 1e-6f)) fail_msg("erf(%g): ref %.9g fast %.9g", x[i], a[i], b[i]);
  }
  /* the whole grid in one call, edge values at the tail */
  memcpy(a, x, sizeof a);
  memcpy(b, x, sizeof b);
  kern_ref()->erf(a, N);
  f->erf(b, N);
  float worst = 0;
  for (int i = 0; i < N; i++) worst = fmaxf(worst, fabsf(a[i] - b[i]));
  print_message("erf: max abs error %.3g over [-6, 6] and edge values\n", worst);
  assert_true(worst <= 1e-6f);
  assert_true(fabsf(b[N - 11]) <= 2e-7f);              /* erf(0) ~ 0 */
  assert_true(b[N - 5] == 1.0f && b[N - 4] == -1.0f);   /* saturates exactly */
}

static void gelu_parity(void **state)
{
  (void)state;
  const struct kern_ops *f = fast();
  if (!f) skip();
  uint64_t rng = 11;
  const int sizes[] = { 1, 3, 7, 8, 9, 17, 768, 3072, 3077 };
  static float x[3077], bias[3077], a[3077], c[3077];
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    int n = sizes[s];
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      fill(x, n, &rng, 3.0f, 0.0f);
      fill(bias, n, &rng, 0.5f, 0.0f);
      if (n > 4) {   /* large and tiny magnitudes */
        x[0] = 40.0f;
        x[1] = -40.0f;
        x[2] = 1e-20f;
        x[3] = -6.5f;
      }
      memcpy(a, x, sizeof(float) * (size_t)n);
      memcpy(c, x, sizeof(float) * (size_t)n);
      kern_ref()->bias_gelu(a, with_bias ? bias : NULL, n);
      f->bias_gelu(c, with_bias ? bias : NULL, n);
      for (int i = 0; i < n; i++) {
        float z = with_bias ? x[i] + bias[i] : x[i];
        float tol = 1e-6f * fmaxf(1.0f, fabsf(z));
        if (!(fabsf(a[i] - c[i]) <= tol))
          fail_msg("gelu(%g) n=%d: ref %.9g fast %.9g", z, n, a[i], c[i]);
      }
    }
  }
}

static void layernorm_case(const struct kern_ops *f, int n, int use_y, int use_b, float offset,
                           float tol, uint64_t *rng)
{
  float *x = malloc(sizeof(float) * (size_t)n * 7);
  float *y = x + n, *b = y + n, *g = b + n, *be = g + n, *a = be + n, *c = a + n;
  fill(x, n, rng, 1.0f, offset);
  fill(y, n, rng, 0.5f, 0.0f);
  fill(b, n, rng, 0.1f, 0.0f);
  fill(g, n, rng, 0.2f, 1.0f);
  fill(be, n, rng, 0.1f, 0.0f);
  memcpy(a, x, sizeof(float) * (size_t)n);
  memcpy(c, x, sizeof(float) * (size_t)n);
  kern_ref()->add_layernorm(a, use_y ? y : NULL, use_b ? b : NULL, g, be, n, 1e-12f);
  f->add_layernorm(c, use_y ? y : NULL, use_b ? b : NULL, g, be, n, 1e-12f);
  for (int i = 0; i < n; i++)
    if (!(fabsf(a[i] - c[i]) <= tol * (fabsf(g[i]) + 1.0f)))
      fail_msg("layernorm n=%d y=%d b=%d offset=%g i=%d: ref %.9g fast %.9g", n, use_y, use_b,
               offset, i, a[i], c[i]);
  free(x);
}

static void layernorm_parity(void **state)
{
  (void)state;
  const struct kern_ops *f = fast();
  if (!f) skip();
  uint64_t rng = 12;
  const int sizes[] = { 1, 2, 7, 8, 9, 31, 64, 768, 1001 };
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
    for (int yb = 0; yb < 4; yb++) {
      layernorm_case(f, sizes[s], yb & 1, yb >> 1, 0.0f, 1e-5f, &rng);
      layernorm_case(f, sizes[s], yb & 1, yb >> 1, 1000.0f, 2e-3f, &rng);
    }
  /* n = 1: the row is its own mean, so the output is beta exactly. */
  float x = 5.0f, g = 2.0f, be = 0.25f;
  f->add_layernorm(&x, NULL, NULL, &g, &be, 1, 1e-12f);
  assert_true(x == 0.25f);
}

static void softmax_case(const struct kern_ops *f, int n, int mask_kind, float scale,
                         uint64_t *rng)
{
  float *s = malloc(sizeof(float) * (size_t)n * 3), *a = s + n, *c = a + n;
  uint8_t *m = malloc((size_t)n);
  fill(s, n, rng, scale, 0.0f);
  for (int i = 0; i < n; i++) {
    switch (mask_kind) {
    case 0: m[i] = 1; break;                                      /* none masked */
    case 1: m[i] = jp_randf(rng) < 0.7f ? (uint8_t)(1 + (jp_rand64(rng) & 3)) : 0; break;
    case 2: m[i] = 0; break;                                      /* all masked */
    default: m[i] = i == n - 1; break;                            /* only the last */
    }
  }
  memcpy(a, s, sizeof(float) * (size_t)n);
  memcpy(c, s, sizeof(float) * (size_t)n);
  kern_ref()->softmax_masked(a, mask_kind ? m : NULL, n);
  f->softmax_masked(c, mask_kind ? m : NULL, n);
  double sum = 0;
  int any = 0;
  for (int i = 0; i < n; i++) any |= m[i] != 0;
  for (int i = 0; i < n; i++) {
    if (!(fabsf(a[i] - c[i]) <= 1e-6f + 1e-5f * a[i]))
      fail_msg("softmax n=%d kind=%d scale=%g i=%d: ref %.9g fast %.9g", n, mask_kind, scale, i,
               a[i], c[i]);
    if (mask_kind && any && !m[i]) assert_true(c[i] == 0.0f);
    if (mask_kind && !any) assert_true(c[i] == 1.0f / (float)n);   /* HF's uniform row */
    sum += c[i];
  }
  assert_true(fabs(sum - 1.0) < 1e-5);
  free(s);
  free(m);
}

static void softmax_parity(void **state)
{
  (void)state;
  const struct kern_ops *f = fast();
  if (!f) skip();
  uint64_t rng = 13;
  const int sizes[] = { 1, 2, 5, 8, 13, 16, 64, 255, 512 };
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
    for (int kind = 0; kind < 4; kind++) {
      softmax_case(f, sizes[s], kind, 3.0f, &rng);
      softmax_case(f, sizes[s], kind, 1e4f, &rng);   /* most exps underflow */
    }
}

static void l2norm_parity(void **state)
{
  (void)state;
  const struct kern_ops *f = fast();
  if (!f) skip();
  uint64_t rng = 14;
  const int sizes[] = { 1, 7, 8, 9, 128, 129 };
  const float scales[] = { 1.0f, 1e-20f, 1e15f };
  float x[129], a[129], c[129];
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
    for (size_t k = 0; k < sizeof scales / sizeof *scales; k++) {
      int n = sizes[s];
      fill(x, n, &rng, scales[k], 0.0f);
      memcpy(a, x, sizeof(float) * (size_t)n);
      memcpy(c, x, sizeof(float) * (size_t)n);
      kern_ref()->l2norm(a, n);
      f->l2norm(c, n);
      float mx = 0;
      for (int i = 0; i < n; i++) mx = fmaxf(mx, fabsf(a[i]));
      for (int i = 0; i < n; i++)
        if (!(fabsf(a[i] - c[i]) <= 1e-6f * mx))
          fail_msg("l2norm n=%d scale=%g: ref %.9g fast %.9g", n, scales[k], a[i], c[i]);
    }
  memset(c, 0, sizeof c);
  f->l2norm(c, 129);
  for (int i = 0; i < 129; i++) assert_true(c[i] == 0.0f);
}

static void gemm_case(const struct kern_ops *f, int M, int N, int K, uint64_t *rng)
{
  int lda = K + 3, ldb = N + 5, ldc = N + 2;
  float *A = malloc(sizeof(float) * (size_t)M * lda), *B = malloc(sizeof(float) * (size_t)K * ldb);
  float *Ca = malloc(sizeof(float) * (size_t)M * ldc), *Cc = malloc(sizeof(float) * (size_t)M * ldc);
  fill(A, M * lda, rng, 1.0f, 0.0f);
  fill(B, K * ldb, rng, 1.0f, 0.0f);
  for (int i = 0; i < M * ldc; i++) Ca[i] = Cc[i] = 12345.0f;   /* sentinel */
  kern_ref()->gemm_nn(M, N, K, A, lda, B, ldb, Ca, ldc);
  f->gemm_nn(M, N, K, A, lda, B, ldb, Cc, ldc);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < ldc; j++) {
      float a = Ca[(size_t)i * ldc + j], c = Cc[(size_t)i * ldc + j];
      if (j >= N) {
        if (c != 12345.0f) fail_msg("gemm %dx%dx%d wrote outside C at (%d,%d)", M, N, K, i, j);
        continue;
      }
      double mag = 0;
      for (int k = 0; k < K; k++)
        mag += fabs((double)A[(size_t)i * lda + k] * B[(size_t)k * ldb + j]);
      if (!(fabs((double)a - c) <= 1e-5 * mag + 1e-30))
        fail_msg("gemm %dx%dx%d at (%d,%d): ref %.9g fast %.9g", M, N, K, i, j, a, c);
    }
  free(A);
  free(B);
  free(Ca);
  free(Cc);
}

static void gemm_parity(void **state)
{
  (void)state;
  const struct kern_ops *f = fast();
  if (!f) skip();
  uint64_t rng = 15;
  const int dims[] = { 1, 2, 5, 6, 7, 8, 9, 15, 16, 17, 24, 33, 64, 100 };
  int nd = (int)(sizeof dims / sizeof *dims);
  for (int a = 0; a < nd; a++)
    for (int b = 0; b < nd; b++)
      gemm_case(f, dims[a], dims[b], dims[(a + b) % nd], &rng);
  gemm_case(f, 48, 256, 64, &rng);    /* an attention block: Q K^T */
  gemm_case(f, 48, 64, 256, &rng);    /* and P V */
  gemm_case(f, 1, 1, 1, &rng);
}

static void gemm_nt_case(const struct kern_ops *f, int M, int N, int K, int accumulate,
                         uint64_t *rng)
{
  int lda = K + 1, ldw = K + 7, ldc = N + 3;
  float *A = malloc(sizeof(float) * (size_t)M * lda), *W = malloc(sizeof(float) * (size_t)N * ldw);
  float *Ca = malloc(sizeof(float) * (size_t)M * ldc), *Cc = malloc(sizeof(float) * (size_t)M * ldc);
  fill(A, M * lda, rng, 1.0f, 0.0f);
  fill(W, N * ldw, rng, 1.0f, 0.0f);
  for (int i = 0; i < M * ldc; i++) Ca[i] = Cc[i] = 12345.0f;
  if (accumulate)   /* C starts as a residual (in [M, N]; outside stays sentinel) */
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) Ca[(size_t)i * ldc + j] = Cc[(size_t)i * ldc + j] = jp_randn(rng);
  kern_ref()->gemm_nt(M, N, K, A, lda, W, ldw, Ca, ldc, accumulate);
  f->gemm_nt(M, N, K, A, lda, W, ldw, Cc, ldc, accumulate);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < ldc; j++) {
      float a = Ca[(size_t)i * ldc + j], c = Cc[(size_t)i * ldc + j];
      if (j >= N) {
        if (c != 12345.0f) fail_msg("gemm_nt %dx%dx%d wrote outside C at (%d,%d)", M, N, K, i, j);
        continue;
      }
      double mag = 0;
      for (int k = 0; k < K; k++)
        mag += fabs((double)A[(size_t)i * lda + k] * W[(size_t)j * ldw + k]);
      if (accumulate) mag += 1.0;   /* the residual's own rounding */
      if (accumulate) mag += 1.0;   /* the residual's own rounding */
      if (!(fabs((double)a - c) <= 1e-5 * mag + 1e-30))
        fail_msg("gemm_nt %dx%dx%d at (%d,%d): ref %.9g fast %.9g", M, N, K, i, j, a, c);
    }
  free(A);
  free(W);
  free(Ca);
  free(Cc);
}

static void gemm_nt_parity(void **state)
{
  (void)state;
  const struct kern_ops *f = fast();
  if (!f) skip();
  uint64_t rng = 16;
  const int dims[] = { 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 31, 64 };
  int nd = (int)(sizeof dims / sizeof *dims);
  for (int a = 0; a < nd; a++)
    for (int b = 0; b < nd; b++)
      gemm_nt_case(f, dims[a], dims[b], dims[(a + 2 * b) % nd], (a + b) & 1, &rng);
  gemm_nt_case(f, 32, 48, 768, 0, &rng);    /* a linear layer's slice; K in one block */
  gemm_nt_case(f, 32, 48, 768, 1, &rng);
  gemm_nt_case(f, 9, 7, 1700, 0, &rng);     /* K over three blocks with a tail */
  gemm_nt_case(f, 9, 7, 1700, 1, &rng);
}

static void best_is_fast_when_available(void **state)
{
  (void)state;
  const struct kern_ops *best = kern_best();
  assert_non_null(best);
  if (!getenv("JP_KERN") && fast()) assert_string_equal(best->name, "avx2");
  assert_null(kern_by_name("nope"));
  assert_ptr_equal(kern_by_name("ref"), kern_ref());
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(ref_matches_known_values),
    cmocka_unit_test(erf_parity),
    cmocka_unit_test(gelu_parity),
    cmocka_unit_test(layernorm_parity),
    cmocka_unit_test(softmax_parity),
    cmocka_unit_test(l2norm_parity),
    cmocka_unit_test(gemm_parity),
    cmocka_unit_test(gemm_nt_parity),
    cmocka_unit_test(best_is_fast_when_available),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
