/* bert_cuda_int.h: internals of the CUDA BERT backend, shared by its files
 * and its tests; not for other modules.
 *
 * The forward pass is written once, in bert_cuda_seq.c, as a sequence of
 * calls through a table of device operations (struct bert_cuda__ops): the
 * GEMMs with cuBLAS column-major semantics and the handful of elementwise /
 * row kernels. bert_cuda.c provides the real table (cuBLAS + the kernels of
 * bert_cuda_kern.cu); the unit test provides a scalar host table with the
 * same semantics, and a second one that runs the real kernels in a host
 * emulation of the CUDA thread model. So the parts that are easy to get
 * wrong and hard to see on a GPU (transposes, leading dimensions, batch
 * strides, head layouts, kernel indexing) are checked against
 * bert_forward_ref() on any machine; a GPU run confirms cuBLAS, the memory
 * transfers and the hardware.
 *
 * Buffers are "device" pointers to whatever memory the table works on.
 * BF16 values are carried as uint16_t (the bit pattern: the upper half of a
 * float32, rounded to nearest even), because this side is C11.
 *
 * Thread-safety: as the backend (one thread at a time per workspace).
 * Allocation: none here; callers own every buffer. */
#ifndef JP_BERT_CUDA_INT_H
#define JP_BERT_CUDA_INT_H
#include <stddef.h>
#include <stdint.h>

#include "model/bert.h"

/* Number of CUDA devices this process can use; 0 when there is no driver
 * or no device (never an error). The MPI indexer picks
 * local_rank % bert_cuda_device_count(). Public API: the prototype belongs
 * in model/bert_cuda.h (requested from its owner); declared here until
 * then so this module's tests and bench compile. */
int bert_cuda_device_count(void);

/* Alignment of every carved sub-buffer: 256 bytes is what cudaMalloc
 * guarantees for a fresh allocation, so a carved buffer is as aligned as
 * one of its own (cuBLAS picks its fastest kernels on 16-byte alignment). */
#define BERT_CUDA_ALIGN 256

/* One GEMM (batch == 1) or strided-batched GEMM, exactly as cuBLAS defines
 * it: column-major, C_i = alpha op(A_i) op(B_i) + beta C_i for i < batch,
 * A_i = a + i*stride_a (elements), op(A_i) is m x k, op(B_i) is k x n, C_i is
 * m x n with leading dimensions lda/ldb/ldc. A and B are BF16; C is float32
 * or BF16 (c_bf16); accumulation is float32. */
struct bert_cuda__gemm {
  int trans_a, trans_b;          /* 1 = transpose (CUBLAS_OP_T) */
  int m, n, k;
  float alpha, beta;
  const uint16_t *a;
  int lda;
  long long stride_a;
  const uint16_t *b;
  int ldb;
  long long stride_b;
  void *c;
  int c_bf16;                    /* 0: C is float32, 1: C is BF16 */
  int ldc;
  long long stride_c;
  int batch;                     /* >= 1 */
};

/* Device copies of the weights of one layer (row-major, PyTorch [out, in]). */
struct bert_cuda__layer {
  const uint16_t *wqkv;          /* BF16 [3H, H]: query, key, value rows stacked */
  const float *bqkv;             /* [3H] */
  const uint16_t *wao;           /* BF16 [H, H] attention.output.dense */
  const float *bao;              /* [H] */
  const float *ln1_g, *ln1_b;    /* [H] */
  const uint16_t *wi;            /* BF16 [I, H] intermediate.dense */
  const float *bi;               /* [I] */
  const uint16_t *wo;            /* BF16 [H, I] output.dense */
  const float *bo;               /* [H] */
  const float *ln2_g, *ln2_b;    /* [H] */
};

struct bert_cuda__weights {
  struct bert_config cfg;
  const float *word;             /* [vocab, H] float32 (gathered, not multiplied) */
  const float *pos;              /* [max_position, H] */
  const float *type0;            /* [H]: token type 0, the only one ColBERT uses */
  const float *emb_g, *emb_b;    /* [H] */
  struct bert_cuda__layer *layer;/* host array [layers] of device pointers */
  const uint16_t *proj;          /* BF16 [out_dim, H], ColBERT linear (no bias) */
};

/* Device workspace for T = max_tokens tokens; Lmax = min(max_tokens,
 * max_position). Sizes in elements. */
struct bert_cuda__work {
  int32_t *ids;                  /* [T] */
  uint8_t *attn;                 /* [T] */
  float *x;                      /* [T, H] residual stream, float32 */
  uint16_t *xb;                  /* [T, H] BF16 copy of x: the next GEMM's input */
  float *y;                      /* [T, max(3H, I, out_dim)] GEMM outputs */
  uint16_t *q, *k, *v;           /* [B, heads, L, head_dim] each */
  float *s;                      /* [B, heads, L, L] attention scores */
  uint16_t *p;                   /* [B, heads, L, L] softmax weights */
  uint16_t *ctxh;                /* [B, heads, L, head_dim] per-head context */
  uint16_t *ctx;                 /* [T, H] context, tokens x (head, dim) */
  uint16_t *hb;                  /* [T, I] GELU output */
  float *out;                    /* [T, out_dim] projected, L2-normalised */
};

/* Device operations; each returns 0 or a negative JP_E* code (with
 * jp_err detail). `ctx` is the table's own state. Semantics:
 *   gemm        struct bert_cuda__gemm above.
 *   embed_ln    x[t] = LN(word[ids[t]] + pos[t % L] + type0) (emb_g, emb_b,
 *               eps), t < T; xb = bf16(x).
 *   qkv_split   y is [T, 3H] (the fused QKV GEMM output, t = b*L + i);
 *               q/k/v[b, h, i, d] = bf16(y[t, part*H + h*dh + d] +
 *               bias[part*H + h*dh + d]) for part 0/1/2.
 *   softmax     for each of the B*heads*L rows r (b = r / (heads*L)) of
 *               length L: z_j = s[r, j]*scale, plus float32's lowest value
 *               where attn[b*L + j] == 0 (HF's additive mask: an all-masked
 *               row becomes uniform); p[r, j] = bf16(softmax(z)_j).
 *   merge_heads ctx[b*L + i, h*dh + d] = ctxh[b, h, i, d].
 *   bias_res_ln x[t] = LN(y[t] + bias + x[t]) (g, b, eps) over H values;
 *               xb = bf16(x).
 *   bias_gelu   out[t, j] = bf16(GELU_erf(y[t, j] + bias[j])), j < n.
 *   l2norm      y[t] /= max(||y[t]||, 1e-12) over d values (a zero row
 *               stays zero), t < T.
 *   put_f32     copy n float32 from host memory src to dst.
 *   put_bf16    dst[i*n + e] = bf16(src[i][e]) for i < parts, e < n: host
 *               float32 matrices, concatenated, to one BF16 tensor.
 * LayerNorm: mean, biased variance, (v - mean) / sqrt(var + eps) * g + b. */
struct bert_cuda__ops {
  void *ctx;
  int (*put_f32)(void *ctx, void *dst, const float *src, size_t n);
  int (*put_bf16)(void *ctx, void *dst, const float *const *src, int parts, size_t n);
  int (*gemm)(void *ctx, const struct bert_cuda__gemm *g);
  int (*embed_ln)(void *ctx, const int32_t *ids, int T, int L, const float *word,
                  const float *pos, const float *type0, const float *g, const float *b,
                  float eps, int H, float *x, uint16_t *xb);
  int (*qkv_split)(void *ctx, const float *y, const float *bias, int B, int L, int heads,
                   int dh, uint16_t *q, uint16_t *k, uint16_t *v);
  int (*softmax)(void *ctx, const float *s, const uint8_t *attn, int B, int heads, int L,
                 float scale, uint16_t *p);
  int (*merge_heads)(void *ctx, const uint16_t *ctxh, int B, int L, int heads, int dh,
                     uint16_t *ctx_out);
  int (*bias_res_ln)(void *ctx, const float *y, const float *bias, const float *g,
                     const float *b, float eps, int T, int H, float *x, uint16_t *xb);
  int (*bias_gelu)(void *ctx, const float *y, const float *bias, int T, int n, uint16_t *out);
  int (*l2norm)(void *ctx, float *y, int T, int d);
};

/* Byte sizes of the device weights and workspace, computed once so the
 * real backend and the test carve the same layout. */
struct bert_cuda__sizes {
  size_t weights_bytes;
  size_t work_bytes;
  int lmax;                      /* longest sequence the workspace holds */
};

/* Validate a config for this backend and compute the sizes. JP_EINVAL on a
 * bad config (non-positive sizes, hidden not divisible by heads),
 * JP_ETOOBIG if the workspace would overflow the int ranges the kernels and
 * cuBLAS take. */
int bert_cuda__plan(const struct bert_config *cfg, int max_tokens, struct bert_cuda__sizes *out);

/* Point the fields of `w` (except cfg and layer, which the caller sets;
 * layer must have cfg.layers entries) and `ws` into the two arenas of
 * plan's sizes (BERT_CUDA_ALIGN-aligned bases). Pure pointer arithmetic:
 * works on host or device addresses. */
void bert_cuda__carve_weights(void *base, struct bert_cuda__weights *w);
void bert_cuda__carve_work(void *base, const struct bert_config *cfg, int max_tokens,
                           int lmax, struct bert_cuda__work *ws);

/* Check the host weights before upload: every tensor present. JP_EINVAL
 * naming the first missing one. */
int bert_cuda__check_weights(const struct bert_weights *w);

/* Check one forward call: B, L >= 1, B*L <= max_tokens (JP_ETOOBIG),
 * L <= lmax and max_position, ids inside the vocabulary (JP_EINVAL). */
int bert_cuda__check_batch(const struct bert_config *cfg, int max_tokens, int lmax,
                           const int32_t *ids, const uint8_t *attn, int B, int L,
                           const float *out);

/* Copy the host weights `hw` into the carved device weights `w` (fused QKV
 * weight and bias, BF16 linear weights). Issues only ops. */
int bert_cuda__upload(const struct bert_cuda__ops *ops, const struct bert_weights *hw,
                      const struct bert_cuda__weights *w);

/* The encoder on ws->ids / ws->attn (already on the device) for a B x L
 * batch, leaving the L2-normalised [B*L, out_dim] result in ws->out.
 * Issues only ops; the caller synchronises and copies. */
int bert_cuda__encode(const struct bert_cuda__ops *ops, const struct bert_cuda__weights *w,
                      const struct bert_cuda__work *ws, int B, int L);

#endif /* JP_BERT_CUDA_INT_H */
