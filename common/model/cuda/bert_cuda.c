/* bert_cuda.c: the CUDA BERT backend (bert_cuda.h): device selection,
 * weight upload, workspace, and the device-operation table that runs
 * bert_cuda__encode() (bert_cuda_seq.c) with cuBLAS and the kernels of
 * bert_cuda_kern.cu.
 *
 * GEMMs: cublasGemmEx / cublasGemmStridedBatchedEx with BF16 A and B,
 * float32 (or BF16) C and CUBLAS_COMPUTE_32F, so tensor cores multiply and
 * float32 accumulates. BF16 rather than FP16: its 8-bit exponent holds any
 * float32 magnitude, so no activation or weight can overflow (BERT
 * intermediate activations and unscaled attention logits can exceed FP16's
 * 65504 with real checkpoints), and A100/H100 run both at the same rate.
 *
 * Memory: two device arenas (weights, workspace) carved by
 * bert_cuda__carve_*, one stream, one cuBLAS handle. Each CUDA/cuBLAS
 * failure becomes JP_EDEVICE with the runtime's message; create() releases
 * everything it made on any failure.
 *
 * Host side in C11 against the CUDA runtime's C API; the kernels are the
 * only C++ (bert_cuda_kern.cu, behind extern "C").
 *
 * Without a GPU, create() returns JP_ENODEVICE (the CUDA runtime's reason
 * in jp_errmsg) and bert_cuda_device_count() returns 0.
 *
 * Thread-safety: one backend is used by one thread at a time (forward()
 * writes its device workspace); it may move between threads, since
 * forward() selects its device itself. Separate backends (one per encoding
 * thread, or per MPI rank) are independent. Allocation: host and device
 * memory at create only; forward() allocates nothing. */
#include "model/bert_cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "model/cuda/bert_cuda_int.h"
#include "model/cuda/bert_cuda_kern.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

struct bert_cuda {
  struct bert_backend base;      /* first: the bert_backend pointer is this struct */
  int dev;                       /* CUDA device ordinal */
  int lmax;                      /* longest sequence the workspace holds */
  cudaStream_t stream;
  cublasHandle_t blas;
  void *dweights;                /* device arena of the weights */
  void *dwork;                   /* device arena of the workspace */
  struct bert_cuda__weights w;   /* pointers into dweights; w.layer is host memory */
  struct bert_cuda__work ws;     /* pointers into dwork */
  struct bert_cuda__ops ops;
  float *stage;                  /* device float32 staging, only during create */
  size_t stage_elems;
};

static int cuda_fail(cudaError_t e, const char *what)
{
  /* Reset the runtime's last-error slot (non-sticky errors) so a later,
   * unrelated check on this thread does not report this failure again. */
  (void)cudaGetLastError();
  return jp_err(JP_EDEVICE, "CUDA %s: %s (%s)", what, cudaGetErrorString(e),
                cudaGetErrorName(e));
}

/* cuBLAS is loaded on first use (dlopen), not linked. Linking it maps and
 * relocates libcublas and libcublasLt at every program start: about 150 MB
 * of resident memory in each shard, coordinator and CLI process, GPU or
 * not (measured with bench/encoder: 162 MB before the first forward, 12 MB
 * without). The CUDA runtime is linked statically and costs nothing until
 * called. The pointers are typed from cuBLAS's own prototypes. */
#define JP_STR_(x) #x
#define JP_STR(x) JP_STR_(x)
static struct {
  __typeof__(cublasCreate_v2) *create;
  __typeof__(cublasDestroy_v2) *destroy;
  __typeof__(cublasSetStream_v2) *set_stream;
  __typeof__(cublasGemmEx) *gemm;
  __typeof__(cublasGemmStridedBatchedEx) *gemm_batched;
  __typeof__(cublasGetStatusString) *status_string;
} cb;
static pthread_once_t cb_once = PTHREAD_ONCE_INIT;
static char cb_error[512];          /* "" once loaded */

static void cb_load(void)
{
  static const char *const names[] = {
#ifdef CUBLAS_VER_MAJOR
    "libcublas.so." JP_STR(CUBLAS_VER_MAJOR),
#endif
    "libcublas.so",
#ifdef JP_CUDA_LIBDIR
    /* The toolkit this was built with, when the loader does not know it. */
#ifdef CUBLAS_VER_MAJOR
    JP_CUDA_LIBDIR "/libcublas.so." JP_STR(CUBLAS_VER_MAJOR),
#endif
    JP_CUDA_LIBDIR "/libcublas.so",
#endif
  };
  void *h = NULL;
  for (size_t i = 0; i < sizeof names / sizeof *names && !h; i++)
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(cb_error, sizeof cb_error, "cannot load cuBLAS (%s): %s", names[0], dlerror());
    return;
  }
  /* dlsym returns void *; POSIX guarantees the conversion to a function
   * pointer works, and memcpy says so without a cast warning. */
  struct { void **slot; const char *sym; } want[] = {
    { (void **)&cb.create, "cublasCreate_v2" },
    { (void **)&cb.destroy, "cublasDestroy_v2" },
    { (void **)&cb.set_stream, "cublasSetStream_v2" },
    { (void **)&cb.gemm, "cublasGemmEx" },
    { (void **)&cb.gemm_batched, "cublasGemmStridedBatchedEx" },
    { (void **)&cb.status_string, "cublasGetStatusString" },
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    void *f = dlsym(h, want[i].sym);
    if (!f) {
      snprintf(cb_error, sizeof cb_error, "cuBLAS has no %s: %s", want[i].sym, dlerror());
      memset(&cb, 0, sizeof cb);
      return;
    }
    memcpy(want[i].slot, &f, sizeof f);
  }
}

static int cb_ready(void)
{
  pthread_once(&cb_once, cb_load);
  if (cb.create) return 0;
  return jp_err(JP_ENODEVICE, "%s", cb_error);
}

int bert_cuda_blas_load(void) { return cb_ready(); }

static int blas_fail(cublasStatus_t s, const char *what)
{
  return jp_err(JP_EDEVICE, "cuBLAS %s: %s", what, cb.status_string(s));
}

#define CU(call, what)                                    \
  do {                                                    \
    cudaError_t e_ = (call);                              \
    if (e_ != cudaSuccess) return cuda_fail(e_, (what));  \
  } while (0)

/* ---- the device-operation table ------------------------------------------ */

/* Batches per cuBLAS call: 65535 is the grid-dimension limit that some
 * batched GEMM kernels map the batch to; larger batches (e.g. many short
 * sequences: B * heads pairs) are issued in chunks. */
#define BERT_CUDA_MAX_BATCH 65535

static int op_gemm(void *ctx, const struct bert_cuda__gemm *g)
{
  struct bert_cuda *be = ctx;
  cublasOperation_t ta = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t tb = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cudaDataType_t ct = g->c_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  size_t c_size = g->c_bf16 ? sizeof(uint16_t) : sizeof(float);
  cublasStatus_t s;
  if (g->batch == 1) {
    s = cb.gemm(be->blas, ta, tb, g->m, g->n, g->k, &g->alpha, g->a, CUDA_R_16BF, g->lda,
                     g->b, CUDA_R_16BF, g->ldb, &g->beta, g->c, ct, g->ldc, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(s, "GemmEx");
    return 0;
  }
  for (int done = 0; done < g->batch; done += BERT_CUDA_MAX_BATCH) {
    int nb = g->batch - done < BERT_CUDA_MAX_BATCH ? g->batch - done : BERT_CUDA_MAX_BATCH;
    const uint16_t *a = g->a + (size_t)done * g->stride_a;
    const uint16_t *b = g->b + (size_t)done * g->stride_b;
    void *c = (char *)g->c + (size_t)done * g->stride_c * c_size;
    s = cb.gemm_batched(be->blas, ta, tb, g->m, g->n, g->k, &g->alpha, a, CUDA_R_16BF,
                                   g->lda, g->stride_a, b, CUDA_R_16BF, g->ldb, g->stride_b,
                                   &g->beta, c, ct, g->ldc, g->stride_c, nb, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(s, "GemmStridedBatchedEx");
  }
  return 0;
}

static int op_embed_ln(void *ctx, const int32_t *ids, int T, int L, const float *word,
                       const float *pos, const float *type0, const float *g, const float *b,
                       float eps, int H, float *x, uint16_t *xb)
{
  struct bert_cuda *be = ctx;
  CU(bert_cuda_k_embed_ln(be->stream, ids, T, L, word, pos, type0, g, b, eps, H, x, xb),
     "embedding kernel launch");
  return 0;
}

static int op_qkv_split(void *ctx, const float *y, const float *bias, int B, int L, int heads,
                        int dh, uint16_t *q, uint16_t *k, uint16_t *v)
{
  struct bert_cuda *be = ctx;
  CU(bert_cuda_k_qkv_split(be->stream, y, bias, B, L, heads, dh, q, k, v),
     "qkv_split kernel launch");
  return 0;
}

static int op_softmax(void *ctx, const float *s, const uint8_t *attn, int B, int heads, int L,
                      float scale, uint16_t *p)
{
  struct bert_cuda *be = ctx;
  CU(bert_cuda_k_softmax(be->stream, s, attn, B, heads, L, scale, p), "softmax kernel launch");
  return 0;
}

static int op_merge_heads(void *ctx, const uint16_t *ctxh, int B, int L, int heads, int dh,
                          uint16_t *ctx_out)
{
  struct bert_cuda *be = ctx;
  CU(bert_cuda_k_merge_heads(be->stream, ctxh, B, L, heads, dh, ctx_out),
     "merge_heads kernel launch");
  return 0;
}

static int op_bias_res_ln(void *ctx, const float *y, const float *bias, const float *g,
                          const float *b, float eps, int T, int H, float *x, uint16_t *xb)
{
  struct bert_cuda *be = ctx;
  CU(bert_cuda_k_bias_res_ln(be->stream, y, bias, g, b, eps, T, H, x, xb),
     "bias_res_ln kernel launch");
  return 0;
}

static int op_bias_gelu(void *ctx, const float *y, const float *bias, int T, int n, uint16_t *out)
{
  struct bert_cuda *be = ctx;
  CU(bert_cuda_k_bias_gelu(be->stream, y, bias, T, n, out), "bias_gelu kernel launch");
  return 0;
}

static int op_l2norm(void *ctx, float *y, int T, int d)
{
  struct bert_cuda *be = ctx;
  CU(bert_cuda_k_l2norm(be->stream, y, T, d), "l2norm kernel launch");
  return 0;
}

static int op_put_f32(void *ctx, void *dst, const float *src, size_t n)
{
  struct bert_cuda *be = ctx;
  CU(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, be->stream),
     "weight upload");
  return 0;
}

/* Through the float32 staging buffer (create() sizes it for the largest
 * linear weight), then one conversion kernel. Stream order makes reusing
 * the staging buffer for the next tensor safe. */
static int op_put_bf16(void *ctx, void *dst, const float *const *src, int parts, size_t n)
{
  struct bert_cuda *be = ctx;
  if ((size_t)parts * n > be->stage_elems)
    return jp_err(JP_EINTERNAL, "bert_cuda: %zu elements exceed the %zu of upload staging",
                  (size_t)parts * n, be->stage_elems);
  for (int i = 0; i < parts; i++)
    CU(cudaMemcpyAsync(be->stage + (size_t)i * n, src[i], n * sizeof(float),
                       cudaMemcpyHostToDevice, be->stream),
       "weight upload");
  CU(bert_cuda_k_f32_to_bf16(be->stream, be->stage, dst, (size_t)parts * n),
     "BF16 conversion kernel launch");
  return 0;
}

/* ---- backend ---------------------------------------------------------------- */

static void cuda_destroy(struct bert_backend *base)
{
  struct bert_cuda *be = (struct bert_cuda *)base;
  if (!be) return;
  /* Errors are ignored: nothing useful can be done with them while
   * releasing, and each release must still be attempted. A backend that
   * failed before touching the device (no GPU) makes no CUDA call here. */
  if (be->blas || be->stream || be->stage || be->dwork || be->dweights)
    (void)cudaSetDevice(be->dev);
  if (be->blas) (void)cb.destroy(be->blas);
  if (be->stream) (void)cudaStreamDestroy(be->stream);
  if (be->stage) (void)cudaFree(be->stage);
  if (be->dwork) (void)cudaFree(be->dwork);
  if (be->dweights) (void)cudaFree(be->dweights);
  jp_free(be->w.layer);
  jp_free(be);
}

static int cuda_forward(struct bert_backend *base, const int32_t *ids, const uint8_t *attn,
                        int B, int L, float *out)
{
  struct bert_cuda *be = (struct bert_cuda *)base;
  const struct bert_config *c = &be->w.cfg;
  int rc = bert_cuda__check_batch(c, be->base.max_tokens, be->lmax, ids, attn, B, L, out);
  if (rc < 0) return rc;
  size_t T = (size_t)B * L;

  /* The current device is per host thread; this thread may not be the one
   * that created the backend. */
  CU(cudaSetDevice(be->dev), "cudaSetDevice");
  CU(cudaMemcpyAsync(be->ws.ids, ids, T * sizeof(int32_t), cudaMemcpyHostToDevice, be->stream),
     "copy of the token ids");
  CU(cudaMemcpyAsync(be->ws.attn, attn, T, cudaMemcpyHostToDevice, be->stream),
     "copy of the attention mask");
  if ((rc = bert_cuda__encode(&be->ops, &be->w, &be->ws, B, L)) < 0) {
    /* Let queued work finish before the caller may reuse its buffers. */
    (void)cudaStreamSynchronize(be->stream);
    return rc;
  }
  CU(cudaMemcpyAsync(out, be->ws.out, T * (size_t)c->out_dim * sizeof(float),
                     cudaMemcpyDeviceToHost, be->stream),
     "copy of the embeddings");
  /* Kernel faults are reported here, by the first synchronising call. */
  CU(cudaStreamSynchronize(be->stream), "forward pass");
  return 0;
}

int bert_cuda_device_count(void)
{
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    /* No driver or no device: clear the error so later runtime calls on
     * this thread do not see it. */
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

static int create_on(struct bert_cuda *be, const struct bert_weights *w, int max_tokens,
                     int gpu)
{
  const struct bert_config *c = &w->cfg;
  struct bert_cuda__sizes sz;
  int rc, n = 0;
  cudaError_t e;
  cublasStatus_t bs;

  if ((rc = bert_cuda__plan(c, max_tokens, &sz)) < 0) return rc;
  if ((rc = bert_cuda__check_weights(w)) < 0) return rc;

  e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return jp_err(JP_ENODEVICE, "no usable CUDA device: %s (%s)%s", cudaGetErrorString(e),
                  cudaGetErrorName(e),
                  e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
                    ? "; is there an NVIDIA GPU and driver on this machine?" : "");
  }
  if (n <= 0) return jp_err(JP_ENODEVICE, "no CUDA device present");
  if (gpu < 0 || gpu >= n)
    return jp_err(JP_ENODEVICE, "CUDA device %d requested but only %d present (0..%d)", gpu, n,
                  n - 1);
  be->dev = gpu;
  be->lmax = sz.lmax;
  CU(cudaSetDevice(gpu), "cudaSetDevice");

  be->w.cfg = *c;
  be->w.layer = jp_calloc((size_t)c->layers, sizeof *be->w.layer);
  if (!be->w.layer) return JP_ENOMEM;

  CU(cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking), "stream creation");
  if ((rc = cb_ready()) < 0) return rc;
  if ((bs = cb.create(&be->blas)) != CUBLAS_STATUS_SUCCESS) {
    be->blas = NULL;
    return blas_fail(bs, "cublasCreate");
  }
  if ((bs = cb.set_stream(be->blas, be->stream)) != CUBLAS_STATUS_SUCCESS)
    return blas_fail(bs, "cublasSetStream");

  e = cudaMalloc(&be->dweights, sz.weights_bytes);
  if (e != cudaSuccess) {
    be->dweights = NULL;
    (void)cudaGetLastError();
    return jp_err(JP_EDEVICE, "CUDA: cannot allocate %zu MiB for the weights on device %d: %s",
                  sz.weights_bytes >> 20, gpu, cudaGetErrorString(e));
  }
  e = cudaMalloc(&be->dwork, sz.work_bytes);
  if (e != cudaSuccess) {
    be->dwork = NULL;
    (void)cudaGetLastError();
    return jp_err(JP_EDEVICE, "CUDA: cannot allocate %zu MiB of workspace for %d tokens on "
                              "device %d: %s",
                  sz.work_bytes >> 20, max_tokens, gpu, cudaGetErrorString(e));
  }
  bert_cuda__carve_weights(be->dweights, &be->w);
  bert_cuda__carve_work(be->dwork, c, max_tokens, sz.lmax, &be->ws);

  /* Staging for the float32 -> BF16 conversion: the largest linear weight
   * (fused QKV is 3H x H; intermediate/output are I x H). */
  size_t H = (size_t)c->hidden, big = 3 * H * H;
  if ((size_t)c->intermediate * H > big) big = (size_t)c->intermediate * H;
  if ((size_t)c->out_dim * H > big) big = (size_t)c->out_dim * H;
  e = cudaMalloc((void **)&be->stage, big * sizeof(float));
  if (e != cudaSuccess) {
    be->stage = NULL;
    (void)cudaGetLastError();
    return jp_err(JP_EDEVICE, "CUDA: cannot allocate %zu MiB of upload staging: %s",
                  big * sizeof(float) >> 20, cudaGetErrorString(e));
  }
  be->stage_elems = big;
  rc = bert_cuda__upload(&be->ops, w, &be->w);
  /* Wait either way: the staging buffer is freed next, and a fault in the
   * upload is then reported by create(), not by the first forward. */
  e = cudaStreamSynchronize(be->stream);
  if (rc == 0 && e != cudaSuccess) rc = cuda_fail(e, "weight upload");
  e = cudaFree(be->stage);
  be->stage = NULL;
  if (rc == 0 && e != cudaSuccess) rc = cuda_fail(e, "cudaFree of the staging buffer");
  return rc;
}

int bert_cuda_create(const struct bert_weights *w, int max_tokens, int gpu,
                     struct bert_backend **out)
{
  if (!out) return jp_err(JP_EINVAL, "bert_cuda_create: NULL out");
  *out = NULL;
  if (!w) return jp_err(JP_EINVAL, "bert_cuda_create: NULL weights");

  struct bert_cuda *be = jp_calloc(1, sizeof *be);
  if (!be) return JP_ENOMEM;
  be->base.name = "cuda";
  be->base.max_tokens = max_tokens;
  be->base.forward = cuda_forward;
  be->base.destroy = cuda_destroy;
  be->ops = (struct bert_cuda__ops){
    .ctx = be, .put_f32 = op_put_f32, .put_bf16 = op_put_bf16, .gemm = op_gemm,
    .embed_ln = op_embed_ln, .qkv_split = op_qkv_split,
    .softmax = op_softmax, .merge_heads = op_merge_heads, .bias_res_ln = op_bias_res_ln,
    .bias_gelu = op_bias_gelu, .l2norm = op_l2norm,
  };

  int rc = create_on(be, w, max_tokens, gpu);
  if (rc < 0) {
    cuda_destroy(&be->base);
    return rc;
  }
  JP_LOG_INFO("bert_cuda: device %d, %d layers x %d hidden, %d tokens per call", gpu,
              w->cfg.layers, w->cfg.hidden, max_tokens);
  *out = &be->base;
  return 0;
}
