/* kern_ref.c: the scalar reference kernels (kern.h) and the dispatch.
 *
 * Plain loops and libm (erff, expf, sqrt), written for obviousness: this is
 * the oracle the AVX2 kernels are tested against, so sums are accumulated
 * in double where that makes the reference the more accurate side. It also
 * runs the forward on CPUs without AVX2.
 *
 * Thread-safety: kernels are pure. kern_best() caches its choice in an
 * atomic pointer (a race only computes the same answer twice).
 * Allocation: none. */
#include "model/kern.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static void ref_add_layernorm(float *x, const float *y, const float *b, const float *g,
                              const float *beta, int n, float eps)
{
  double mean = 0, var = 0;

  assert(n >= 1);
  for (int i = 0; i < n; i++) {
    float t = x[i];
    if (y) t += y[i];
    if (b) t += b[i];
    x[i] = t;
    mean += t;
  }
  mean /= n;
  for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
  var /= n;
  double inv = 1.0 / sqrt(var + (double)eps);
  for (int i = 0; i < n; i++) x[i] = (float)((x[i] - mean) * inv * g[i] + beta[i]);
}

static void ref_bias_gelu(float *x, const float *b, int n)
{
  assert(n >= 1);
  for (int i = 0; i < n; i++) {
    float t = b ? x[i] + b[i] : x[i];
    x[i] = 0.5f * t * (1.0f + erff(t * 0.70710678118654752f));
  }
}

static void ref_erf(float *x, int n)
{
  assert(n >= 1);
  for (int i = 0; i < n; i++) x[i] = erff(x[i]);
}

static void ref_softmax_masked(float *s, const uint8_t *mask, int n)
{
  float mx = -INFINITY;
  double sum = 0;

  assert(n >= 1);
  for (int i = 0; i < n; i++)
    if ((!mask || mask[i]) && s[i] > mx) mx = s[i];
  if (mx == -INFINITY) {   /* every position masked: uniform, see kern.h */
    for (int i = 0; i < n; i++) s[i] = 1.0f / (float)n;
    return;
  }
  for (int i = 0; i < n; i++) {
    s[i] = (!mask || mask[i]) ? expf(s[i] - mx) : 0.0f;
    sum += s[i];
  }
  for (int i = 0; i < n; i++) s[i] = (float)(s[i] / sum);
}

static void ref_l2norm(float *x, int n)
{
  double n2 = 0;

  assert(n >= 1);
  for (int i = 0; i < n; i++) n2 += (double)x[i] * x[i];
  double inv = 1.0 / fmax(sqrt(n2), 1e-12);
  for (int i = 0; i < n; i++) x[i] = (float)(x[i] * inv);
}

static void ref_gemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc)
{
  assert(M >= 1 && N >= 1 && K >= 1 && lda >= K && ldb >= N && ldc >= N);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = 0;
      for (int k = 0; k < K; k++) s += (double)A[(size_t)i * lda + k] * B[(size_t)k * ldb + j];
      C[(size_t)i * ldc + j] = (float)s;
    }
}

static void ref_gemm_nt(int M, int N, int K, const float *A, int lda, const float *W, int ldw,
                        float *C, int ldc, int accumulate)
{
  assert(M >= 1 && N >= 1 && K >= 1 && lda >= K && ldw >= K && ldc >= N);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = 0;
      for (int k = 0; k < K; k++) s += (double)A[(size_t)i * lda + k] * W[(size_t)j * ldw + k];
      if (accumulate) s += C[(size_t)i * ldc + j];
      C[(size_t)i * ldc + j] = (float)s;
    }
}

static const struct kern_ops ref_ops = {
  .name = "ref",
  .add_layernorm = ref_add_layernorm,
  .bias_gelu = ref_bias_gelu,
  .erf = ref_erf,
  .softmax_masked = ref_softmax_masked,
  .l2norm = ref_l2norm,
  .gemm_nn = ref_gemm_nn,
  .gemm_nt = ref_gemm_nt,
};

const struct kern_ops *kern_ref(void) { return &ref_ops; }

const struct kern_ops *kern_by_name(const char *name)
{
  if (!name) return NULL;
  if (strcmp(name, "ref") == 0) return &ref_ops;
  if (strcmp(name, "avx2") == 0) return kern_avx2();
  return NULL;
}

const struct kern_ops *kern_best(void)
{
  static _Atomic(const struct kern_ops *) chosen;
  const struct kern_ops *k = atomic_load(&chosen);

  if (k) return k;
  const char *env = getenv("JP_KERN");
  if (env && *env) k = kern_by_name(env);
  if (!k) k = kern_avx2();
  if (!k) k = &ref_ops;
  atomic_store(&chosen, k);
  return k;
}
