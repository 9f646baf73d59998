/* kern_avx2.c: AVX2+FMA versions of the kern.h kernels.
 *
 * Every function carries __attribute__((target("avx2,fma"))) instead of the
 * whole file being compiled with -mavx2, so a portable build still contains
 * them and kern_best() picks them at run time (__builtin_cpu_supports).
 * Tails (n not a multiple of 8) use masked loads/stores, so a row is
 * processed by exactly the same arithmetic whatever its length.
 *
 * Numerics (parity bounds are in tests/unit/kern/):
 * - exp: Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, and the
 *   degree-7 Taylor polynomial of e^r (truncation error < 1e-8 relative),
 *   scaled by 2^k built in the exponent bits. Arguments are clamped to
 *   [-87.3, 88]: below that e^x is under float's normal range (and every
 *   caller only needs "about 0" there), above it 2^k would overflow.
 * - erf/erfc: Abramowitz & Stegun 7.1.26, erfc(x) = t P(t) e^{-x^2},
 *   t = 1/(1 + p x) for x >= 0, absolute error <= 1.5e-7 in exact
 *   arithmetic. GELU uses Phi(z) = 1 - erfc(z/√2)/2 for z >= 0 and
 *   erfc(|z|/√2)/2 for z < 0, so the negative tail (where 1 + erf(z)
 *   cancels) keeps its accuracy.
 * - LayerNorm, L2 norm: float vector accumulators, two passes (mean, then
 *   squared deviations), as accurate as torch's float path.
 *
 * Thread-safety: pure functions. Allocation: none. */
#include "jp_config.h"
#include "model/kern.h"

#include <assert.h>
#include <stddef.h>

#if JP_HAVE_AVX2 && defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* Lanes [0, r) set, for 0 <= r <= 8. */
AVX2_INLINE __m256i tail_mask(int r)
{
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), lane);
}

AVX2_INLINE float hsum(__m256 v)
{
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2_INLINE float hmax(__m256 v)
{
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2_INLINE __m256 exp256(__m256 x)
{
  /* ln2 split so that k * LN2_HI is exact for |k| <= 128. */
  const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.0f));
  __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
  /* Taylor coefficients 1/7! .. 1/0!, Horner. */
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)),
                                23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* erfc(a) for a >= 0 (A&S 7.1.26). */
AVX2_INLINE __m256 erfc_pos256(__m256 a)
{
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  __m256 e = exp256(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a));
  return _mm256_mul_ps(p, e);
}

AVX2_INLINE __m256 abs256(__m256 x)
{
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

AVX2_INLINE __m256 erf256(__m256 x)
{
  __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
  __m256 y = _mm256_sub_ps(_mm256_set1_ps(1.0f), erfc_pos256(abs256(x)));
  return _mm256_or_ps(y, sign);
}

AVX2_INLINE __m256 gelu256(__m256 z)
{
  __m256 h = _mm256_mul_ps(_mm256_set1_ps(0.5f),
                           erfc_pos256(_mm256_mul_ps(abs256(z),
                                                     _mm256_set1_ps(0.70710678118654752f))));
  __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
  __m256 phi = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), h), h, neg);
  return _mm256_mul_ps(z, phi);
}

/* ---- row kernels ------------------------------------------------------------ */

AVX2 static void avx2_add_layernorm(float *x, const float *y, const float *b, const float *g,
                                    const float *beta, int n, float eps)
{
  int i = 0, r = n & 7;
  __m256i m = tail_mask(r);
  __m256 acc = _mm256_setzero_ps();

  assert(n >= 1);
  for (; i + 8 <= n; i += 8) {
    __m256 t = _mm256_loadu_ps(x + i);
    if (y) t = _mm256_add_ps(t, _mm256_loadu_ps(y + i));
    if (b) t = _mm256_add_ps(t, _mm256_loadu_ps(b + i));
    _mm256_storeu_ps(x + i, t);
    acc = _mm256_add_ps(acc, t);
  }
  if (r) {
    __m256 t = _mm256_maskload_ps(x + i, m);
    if (y) t = _mm256_add_ps(t, _mm256_maskload_ps(y + i, m));
    if (b) t = _mm256_add_ps(t, _mm256_maskload_ps(b + i, m));
    _mm256_maskstore_ps(x + i, m, t);
    acc = _mm256_add_ps(acc, t);     /* masked lanes are 0 */
  }
  float mean = hsum(acc) / (float)n;
  __m256 vm = _mm256_set1_ps(mean);
  acc = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
    acc = _mm256_fmadd_ps(d, d, acc);
  }
  if (r) {
    __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vm),
                             _mm256_castsi256_ps(m));
    acc = _mm256_fmadd_ps(d, d, acc);
  }
  float var = hsum(acc) / (float)n;
  __m256 inv = _mm256_set1_ps(1.0f / __builtin_sqrtf(var + eps));
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), inv);
    _mm256_storeu_ps(x + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(g + i), _mm256_loadu_ps(beta + i)));
  }
  if (r) {
    __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vm), inv);
    _mm256_maskstore_ps(x + i, m,
                        _mm256_fmadd_ps(d, _mm256_maskload_ps(g + i, m),
                                        _mm256_maskload_ps(beta + i, m)));
  }
}

AVX2 static void avx2_bias_gelu(float *x, const float *b, int n)
{
  int i = 0, r = n & 7;

  assert(n >= 1);
  for (; i + 8 <= n; i += 8) {
    __m256 t = _mm256_loadu_ps(x + i);
    if (b) t = _mm256_add_ps(t, _mm256_loadu_ps(b + i));
    _mm256_storeu_ps(x + i, gelu256(t));
  }
  if (r) {
    __m256i m = tail_mask(r);
    __m256 t = _mm256_maskload_ps(x + i, m);
    if (b) t = _mm256_add_ps(t, _mm256_maskload_ps(b + i, m));
    _mm256_maskstore_ps(x + i, m, gelu256(t));
  }
}

AVX2 static void avx2_erf(float *x, int n)
{
  int i = 0, r = n & 7;

  assert(n >= 1);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, erf256(_mm256_loadu_ps(x + i)));
  if (r) {
    __m256i m = tail_mask(r);
    _mm256_maskstore_ps(x + i, m, erf256(_mm256_maskload_ps(x + i, m)));
  }
}

/* Lanes where mask[i..i+8) != 0 (only the first `cnt` bytes are read). */
AVX2_INLINE __m256 mask8(const uint8_t *mask, int cnt)
{
  uint64_t w = 0;
  if (cnt == 8) {
    __builtin_memcpy(&w, mask, 8);
  } else {
    for (int j = 0; j < cnt; j++) w |= (uint64_t)mask[j] << (8 * j);
  }
  __m256i v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)w));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(v, _mm256_setzero_si256()));
}

AVX2 static void avx2_softmax_masked(float *s, const uint8_t *mask, int n)
{
  int i, r = n & 7;
  const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
  __m256i tm = tail_mask(r);
  __m256 vmax = ninf, sum = _mm256_setzero_ps();

  assert(n >= 1);
  /* Masked lanes take -inf so they cannot win the max. Their exp below is
   * zeroed explicitly: exp256 clamps its argument, so it never returns 0. */
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(s + i);
    if (mask) v = _mm256_blendv_ps(ninf, v, mask8(mask + i, 8));
    vmax = _mm256_max_ps(vmax, v);
  }
  if (r) {
    __m256 keep = _mm256_castsi256_ps(tm);
    if (mask) keep = _mm256_and_ps(keep, mask8(mask + i, r));
    vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, _mm256_maskload_ps(s + i, tm), keep));
  }
  float mx = hmax(vmax);
  if (mx == -__builtin_inff()) {   /* every position masked: uniform, see kern.h */
    __m256 u = _mm256_set1_ps(1.0f / (float)n);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, u);
    if (r) _mm256_maskstore_ps(s + i, tm, u);
    return;
  }
  __m256 vm = _mm256_set1_ps(mx);
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
    if (mask) e = _mm256_and_ps(e, mask8(mask + i, 8));
    _mm256_storeu_ps(s + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (r) {
    __m256 keep = _mm256_castsi256_ps(tm);
    if (mask) keep = _mm256_and_ps(keep, mask8(mask + i, r));
    __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(s + i, tm), vm)), keep);
    _mm256_maskstore_ps(s + i, tm, e);
    sum = _mm256_add_ps(sum, e);
  }
  __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), inv));
  if (r) _mm256_maskstore_ps(s + i, tm, _mm256_mul_ps(_mm256_maskload_ps(s + i, tm), inv));
}

AVX2 static void avx2_l2norm(float *x, int n)
{
  int i, r = n & 7;
  __m256i m = tail_mask(r);
  __m256 acc = _mm256_setzero_ps();

  assert(n >= 1);
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  if (r) {
    __m256 v = _mm256_maskload_ps(x + i, m);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  float norm = __builtin_sqrtf(hsum(acc));
  __m256 inv = _mm256_set1_ps(1.0f / (norm > 1e-12f ? norm : 1e-12f));
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  if (r) _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
}

/* ---- small GEMM ----------------------------------------------------------------
 * C = A B with B row-major: a register tile of MR rows x (8 or 16) columns;
 * per k, one or two vectors of B's row k are loaded and each of the MR
 * values A[i][k] is broadcast into MR x NV FMAs. 6 x 16 uses 12 accumulators
 * + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers (the usual
 * Haswell/Zen shape). `tail` masks the last vector when N is not a multiple
 * of 8 (masked lanes are never read or written). mr, nv and tailed are
 * compile-time constants at every call site below, so the loops unroll and
 * the accumulators stay in registers. */
#define GEMM_MR 6

AVX2_INLINE void gemm_tile(const int mr, const int nv, const int tailed, int K, const float *A,
                           int lda, const float *B, int ldb, float *C, int ldc, __m256i tail)
{
  __m256 acc[GEMM_MR][2];

  /* The pragmas make GCC unroll at -O2 too; without them acc[] stays in
   * memory and the kernel runs 5x slower. */
#pragma GCC unroll 6
  for (int i = 0; i < mr; i++) {
    acc[i][0] = _mm256_setzero_ps();
    acc[i][1] = _mm256_setzero_ps();
  }
  for (int k = 0; k < K; k++) {
    const float *b = B + (size_t)k * ldb;
    __m256 b0, b1 = _mm256_setzero_ps();
    if (nv == 1) {
      b0 = tailed ? _mm256_maskload_ps(b, tail) : _mm256_loadu_ps(b);
    } else {
      b0 = _mm256_loadu_ps(b);
      b1 = tailed ? _mm256_maskload_ps(b + 8, tail) : _mm256_loadu_ps(b + 8);
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
      __m256 a = _mm256_broadcast_ss(A + (size_t)i * lda + k);
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      if (nv == 2) acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < mr; i++) {
    float *c = C + (size_t)i * ldc;
    if (nv == 1) {
      if (tailed) _mm256_maskstore_ps(c, tail, acc[i][0]);
      else _mm256_storeu_ps(c, acc[i][0]);
    } else {
      _mm256_storeu_ps(c, acc[i][0]);
      if (tailed) _mm256_maskstore_ps(c + 8, tail, acc[i][1]);
      else _mm256_storeu_ps(c + 8, acc[i][1]);
    }
  }
}

/* One column strip (nv vectors, the last possibly tailed) for all M rows. */
#define GEMM_STRIP(NV, TAILED)                                                              \
  AVX2 static void gemm_strip_##NV##_##TAILED(int M, int K, const float *A, int lda,       \
                                              const float *B, int ldb, float *C, int ldc,   \
                                              __m256i tail)                                 \
  {                                                                                         \
    int i = 0;                                                                              \
    for (; i + GEMM_MR <= M; i += GEMM_MR)                                                  \
      gemm_tile(GEMM_MR, NV, TAILED, K, A + (size_t)i * lda, lda, B, ldb,                   \
                C + (size_t)i * ldc, ldc, tail);                                            \
    const float *a = A + (size_t)i * lda;                                                   \
    float *c = C + (size_t)i * ldc;                                                         \
    switch (M - i) {                                                                        \
    case 5: gemm_tile(5, NV, TAILED, K, a, lda, B, ldb, c, ldc, tail); break;               \
    case 4: gemm_tile(4, NV, TAILED, K, a, lda, B, ldb, c, ldc, tail); break;               \
    case 3: gemm_tile(3, NV, TAILED, K, a, lda, B, ldb, c, ldc, tail); break;               \
    case 2: gemm_tile(2, NV, TAILED, K, a, lda, B, ldb, c, ldc, tail); break;               \
    case 1: gemm_tile(1, NV, TAILED, K, a, lda, B, ldb, c, ldc, tail); break;               \
    default: break;                                                                         \
    }                                                                                       \
  }
GEMM_STRIP(2, 0)
GEMM_STRIP(2, 1)
GEMM_STRIP(1, 0)
GEMM_STRIP(1, 1)

AVX2 static void avx2_gemm_nn(int M, int N, int K, const float *A, int lda, const float *B,
                              int ldb, float *C, int ldc)
{
  int j = 0;
  __m256i none = _mm256_setzero_si256();

  assert(M >= 1 && N >= 1 && K >= 1 && lda >= K && ldb >= N && ldc >= N);
  for (; j + 16 <= N; j += 16) gemm_strip_2_0(M, K, A, lda, B + j, ldb, C + j, ldc, none);
  int rest = N - j;
  if (rest > 8)
    gemm_strip_2_1(M, K, A, lda, B + j, ldb, C + j, ldc, tail_mask(rest - 8));
  else if (rest == 8)
    gemm_strip_1_0(M, K, A, lda, B + j, ldb, C + j, ldc, none);
  else if (rest > 0)
    gemm_strip_1_1(M, K, A, lda, B + j, ldb, C + j, ldc, tail_mask(rest));
}

/* ---- linear layer for few rows ----------------------------------------------------
 * C = A W^T with both operands read along K (dot-product form): a tile of
 * 4 rows of A x 3 rows of W keeps 12 accumulators + 3 W vectors + 1 A
 * vector in the 16 ymm registers, each k step loads 7 vectors for 12 FMAs,
 * and the 12 dot products are reduced horizontally once per K block. W is
 * streamed once per call (it does not fit in cache; A does); K is cut into
 * NT_KB blocks so the 3 W rows being reused across all A tiles (3 x 3 KB)
 * stay in L1 while A's block (M x 3 KB) comes from L2. 768 = bert-base's
 * hidden size: one block (one reduction) for most layers; min-of-300 timings
 * here put 512 about 15% and 256 about 25% slower at K = 3072. */
#define NT_MR 4
#define NT_NR 3
#define NT_KB 768

/* [sum(a), sum(b), sum(c), sum(d)] */
AVX2_INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d)
{
  __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

AVX2_INLINE void nt_tile(const int mr, const int nr, int K, const float *A, int lda,
                         const float *W, int ldw, float *C, int ldc, int accumulate)
{
  __m256 acc[NT_MR][NT_NR];
  int k = 0;

#pragma GCC unroll 4
  for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
    for (int j = 0; j < NT_NR; j++) acc[i][j] = _mm256_setzero_ps();
  for (; k + 8 <= K; k += 8) {
    __m256 w[NT_NR];
#pragma GCC unroll 3
    for (int j = 0; j < nr; j++) w[j] = _mm256_loadu_ps(W + (size_t)j * ldw + k);
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
      __m256 a = _mm256_loadu_ps(A + (size_t)i * lda + k);
#pragma GCC unroll 3
      for (int j = 0; j < nr; j++) acc[i][j] = _mm256_fmadd_ps(a, w[j], acc[i][j]);
    }
  }
  if (k < K) {   /* masked lanes load 0 and add nothing */
    __m256i m = tail_mask(K - k);
    __m256 w[NT_NR];
#pragma GCC unroll 3
    for (int j = 0; j < nr; j++) w[j] = _mm256_maskload_ps(W + (size_t)j * ldw + k, m);
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
      __m256 a = _mm256_maskload_ps(A + (size_t)i * lda + k, m);
#pragma GCC unroll 3
      for (int j = 0; j < nr; j++) acc[i][j] = _mm256_fmadd_ps(a, w[j], acc[i][j]);
    }
  }
  const __m128i lanes = _mm_cmpgt_epi32(_mm_set1_epi32(nr), _mm_setr_epi32(0, 1, 2, 3));
#pragma GCC unroll 4
  for (int i = 0; i < mr; i++) {
    __m128 s = hsum4(acc[i][0], acc[i][1], acc[i][2], _mm256_setzero_ps());
    float *c = C + (size_t)i * ldc;
    if (accumulate) s = _mm_add_ps(s, _mm_maskload_ps(c, lanes));
    _mm_maskstore_ps(c, lanes, s);
  }
}

#define NT_CASE(MR, NR)                                                                   \
  case (MR) * 4 + (NR): nt_tile(MR, NR, K, A, lda, W, ldw, C, ldc, accumulate); break;

AVX2 static void nt_any(int mr, int nr, int K, const float *A, int lda, const float *W, int ldw,
                        float *C, int ldc, int accumulate)
{
  switch (mr * 4 + nr) {
    NT_CASE(4, 3) NT_CASE(4, 2) NT_CASE(4, 1)
    NT_CASE(3, 3) NT_CASE(3, 2) NT_CASE(3, 1)
    NT_CASE(2, 3) NT_CASE(2, 2) NT_CASE(2, 1)
    NT_CASE(1, 3) NT_CASE(1, 2) NT_CASE(1, 1)
  default: break;
  }
}

AVX2 static void avx2_gemm_nt(int M, int N, int K, const float *A, int lda, const float *W,
                              int ldw, float *C, int ldc, int accumulate)
{
  assert(M >= 1 && N >= 1 && K >= 1 && lda >= K && ldw >= K && ldc >= N);
  /* W tiles outer, K blocks inside: each W row is then read front to back
   * once (a sequential stream the prefetcher follows), its current block
   * stays in L1 across all A tiles, and A's block (M x NT_KB) in L2. */
  for (int j = 0; j < N; j += NT_NR) {
    int nr = N - j < NT_NR ? N - j : NT_NR;
    for (int k0 = 0; k0 < K; k0 += NT_KB) {
      int kb = K - k0 < NT_KB ? K - k0 : NT_KB;
      int acc = accumulate || k0 > 0;
      const float *w = W + (size_t)j * ldw + k0;
      int i = 0;
      for (; i + NT_MR <= M; i += NT_MR) {
        if (nr == NT_NR)   /* the hot case, inlined */
          nt_tile(NT_MR, NT_NR, kb, A + (size_t)i * lda + k0, lda, w, ldw,
                  C + (size_t)i * ldc + j, ldc, acc);
        else
          nt_any(NT_MR, nr, kb, A + (size_t)i * lda + k0, lda, w, ldw, C + (size_t)i * ldc + j,
                 ldc, acc);
      }
      if (i < M)
        nt_any(M - i, nr, kb, A + (size_t)i * lda + k0, lda, w, ldw, C + (size_t)i * ldc + j,
               ldc, acc);
    }
  }
}

static const struct kern_ops avx2_ops = {
  .name = "avx2",
  .add_layernorm = avx2_add_layernorm,
  .bias_gelu = avx2_bias_gelu,
  .erf = avx2_erf,
  .softmax_masked = avx2_softmax_masked,
  .l2norm = avx2_l2norm,
  .gemm_nn = avx2_gemm_nn,
  .gemm_nt = avx2_gemm_nt,
};

const struct kern_ops *kern_avx2(void)
{
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2_ops;
  return NULL;
}

#else /* no AVX2 compiler support */

const struct kern_ops *kern_avx2(void) { return NULL; }

#endif
