/* kern.h: the dense row kernels of the CPU BERT forward (bert_cpu.c).
 *
 * Each kernel works on one row (or one small dense block) that the caller
 * hands it; the caller owns the threads and splits rows across the pool
 * (style.md §2.8). The big linear layers are OpenBLAS sgemm calls in
 * bert_cpu.c and are not here.
 *
 * Implementations: "ref" (kern_ref.c: plain scalar loops with libm, the
 * oracle, never removed) and "avx2" (kern_avx2.c: AVX2+FMA, compiled with
 * per-function target attributes and chosen at run time). Every fast kernel
 * has a parity test against "ref" in tests/unit/kern/.
 *
 * Semantics shared by all implementations:
 *   add_layernorm  x = LN(x + y + b) * g + beta over n values (y, b may be
 *                  NULL); biased variance, eps inside the square root, as
 *                  torch.nn.LayerNorm.
 *   bias_gelu      x = GELU_erf(x + b) (b may be NULL): 0.5 x (1 + erf(x/√2)),
 *                  HF's "gelu", not the tanh approximation.
 *   erf            x = erf(x) elementwise (exposed so its accuracy is tested
 *                  on its own; bias_gelu is built on it).
 *   softmax_masked s = softmax(s) over the positions where mask != 0; masked
 *                  positions get exactly 0. A row with no unmasked position
 *                  gets 1/n everywhere: HF adds float32's lowest value to
 *                  masked scores, which rounds every score of such a row to
 *                  the same number. mask NULL = nothing masked.
 *   l2norm         x /= max(||x||, 1e-12) (torch.nn.functional.normalize):
 *                  a zero row stays zero.
 *   gemm_nn        C[M,N] = A[M,K] B[K,N], all row-major with leading
 *                  dimensions (overwrites C): the small per-head attention
 *                  products (Q K^T with K packed transposed, and P V read in
 *                  place from the value matrix).
 *   gemm_nt        C[M,N] = A[M,K] W[N,K]^T, or C += that when accumulate
 *                  is nonzero (a residual add for free): a linear layer
 *                  with PyTorch-layout weights, for few rows (M up to ~64),
 *                  where OpenBLAS's packing of the streamed weights costs
 *                  more than the arithmetic. Callers split N across threads.
 *
 * Preconditions (asserted, the caller validated user input): n >= 1,
 * M, N, K >= 1, leading dimensions >= the row length. Pointers need no
 * particular alignment.
 *
 * Thread-safety: all kernels are pure functions of their arguments.
 * Allocation: none. */
#ifndef JP_KERN_H
#define JP_KERN_H
#include <stdint.h>

struct kern_ops {
  const char *name;                                     /* "ref", "avx2" */
  void (*add_layernorm)(float *x, const float *y, const float *b, const float *g,
                        const float *beta, int n, float eps);
  void (*bias_gelu)(float *x, const float *b, int n);
  void (*erf)(float *x, int n);
  void (*softmax_masked)(float *s, const uint8_t *mask, int n);
  void (*l2norm)(float *x, int n);
  void (*gemm_nn)(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc);
  void (*gemm_nt)(int M, int N, int K, const float *A, int lda, const float *W, int ldw,
                  float *C, int ldc, int accumulate);
};

/* The scalar reference (always available). */
const struct kern_ops *kern_ref(void);

/* The fastest implementation this CPU supports, chosen once (first call)
 * from the CPU's features. The environment variable JP_KERN=ref forces the
 * reference (for debugging and for measuring what the fast kernels buy). */
const struct kern_ops *kern_best(void);

/* An implementation by name ("ref", "avx2"), or NULL when it is not compiled
 * in or this CPU cannot run it. Tests iterate over these. */
const struct kern_ops *kern_by_name(const char *name);

/* The AVX2+FMA implementation, or NULL when it is not compiled in or this
 * CPU lacks AVX2/FMA (kern_by_name("avx2") is the same). */
const struct kern_ops *kern_avx2(void);

#endif /* JP_KERN_H */
