/* test_bert_cuda_emul.c: the CUDA backend's forward sequence, checked
 * without a GPU.
 *
 * bert_cuda__upload/encode (common/model/cuda/bert_cuda_seq.c) drive the
 * GPU through a table of device operations. Here that table is a scalar
 * host emulation with cuBLAS's column-major semantics (including BF16
 * rounding of every GEMM input and of the BF16 outputs), so this test
 * proves the layout work (fused QKV, transposes, leading dimensions, batch
 * strides, head split/merge, masks) and the upload mapping against the
 * reference forward on any machine. It also bounds the precision loss of
 * the BF16 design: the GPU can only differ from this emulation by float32
 * summation order.
 *
 * A second table runs the real kernels of bert_cuda_kern.cu, compiled for
 * the host and executed by a small emulation of the CUDA thread model
 * (kern_host_emu.cpp: each warp's 32 lanes are host threads that really
 * shuffle). Each kernel is compared with the scalar operation above, and a
 * forward pass with them against the reference: so the kernels' indexing,
 * warp reductions and grid-stride loops are checked without a GPU too.
 * Only cuBLAS itself, the CUDA memory calls and the GPU's arithmetic are
 * left for the GPU test.
 *
 * Plus the argument checks and, without a GPU, that bert_cuda_create()
 * fails cleanly with JP_ENODEVICE. */
#include "test_helpers.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "bert_rand.h"
#include "kern_emu_names.h"   /* before bert_cuda_kern.h: the host-emulated kernels */
#include "model/bert.h"
#include "model/bert_cuda.h"
#include "model/cuda/bert_cuda_int.h"
#include "model/cuda/bert_cuda_kern.h"
#include "util/err.h"
#include "util/fp16.h"
#include "util/mem.h"

/* ---- scalar device emulation ------------------------------------------------- */

static float bf(uint16_t h) { return jp_bf16_to_f32(h); }

/* Elements spanned by a column-major rows x cols matrix with leading
 * dimension ld. */
static size_t span(int rows, int cols, int ld) { return (size_t)(cols - 1) * ld + rows; }

static int emu_gemm(void *ctx, const struct bert_cuda__gemm *g)
{
  (void)ctx;
  /* Stored shapes: op(A) is m x k, so A is k x m when transposed. */
  int ar = g->trans_a ? g->k : g->m, ac = g->trans_a ? g->m : g->k;
  int br = g->trans_b ? g->n : g->k, bc = g->trans_b ? g->k : g->n;
  assert_true(g->lda >= ar && g->ldb >= br && g->ldc >= g->m);
  assert_true(g->batch >= 1);
  size_t na = span(ar, ac, g->lda), nb = span(br, bc, g->ldb);
  float *A = malloc(na * sizeof(float)), *Bm = malloc(nb * sizeof(float));
  assert_non_null(A);
  assert_non_null(Bm);
  for (int bi = 0; bi < g->batch; bi++) {
    const uint16_t *a = g->a + (size_t)bi * g->stride_a, *b = g->b + (size_t)bi * g->stride_b;
    for (size_t e = 0; e < na; e++) A[e] = bf(a[e]);
    for (size_t e = 0; e < nb; e++) Bm[e] = bf(b[e]);
    for (int j = 0; j < g->n; j++)
      for (int i = 0; i < g->m; i++) {
        float acc = 0.0f;
        for (int l = 0; l < g->k; l++) {
          float av = g->trans_a ? A[l + (size_t)i * g->lda] : A[i + (size_t)l * g->lda];
          float bv = g->trans_b ? Bm[j + (size_t)l * g->ldb] : Bm[l + (size_t)j * g->ldb];
          acc += av * bv;
        }
        size_t ci = (size_t)bi * g->stride_c + i + (size_t)j * g->ldc;
        if (g->c_bf16) {
          uint16_t *c = g->c;
          float old = g->beta != 0.0f ? bf(c[ci]) : 0.0f;
          c[ci] = jp_f32_to_bf16(g->alpha * acc + g->beta * old);
        } else {
          float *c = g->c;
          float old = g->beta != 0.0f ? c[ci] : 0.0f;
          c[ci] = g->alpha * acc + g->beta * old;
        }
      }
  }
  free(A);
  free(Bm);
  return 0;
}

static void emu_ln_row(float *x, uint16_t *xb, const float *g, const float *b, float eps, int H)
{
  double mean = 0, var = 0;
  for (int c = 0; c < H; c++) mean += x[c];
  mean /= H;
  for (int c = 0; c < H; c++) var += (x[c] - mean) * (x[c] - mean);
  var /= H;
  double inv = 1.0 / sqrt(var + eps);
  for (int c = 0; c < H; c++) {
    x[c] = (float)((x[c] - mean) * inv * g[c] + b[c]);
    xb[c] = jp_f32_to_bf16(x[c]);
  }
}

static int emu_embed_ln(void *ctx, const int32_t *ids, int T, int L, const float *word,
                        const float *pos, const float *type0, const float *g, const float *b,
                        float eps, int H, float *x, uint16_t *xb)
{
  (void)ctx;
  for (int t = 0; t < T; t++) {
    float *xr = x + (size_t)t * H;
    for (int c = 0; c < H; c++)
      xr[c] = word[(size_t)ids[t] * H + c] + pos[(size_t)(t % L) * H + c] + type0[c];
    emu_ln_row(xr, xb + (size_t)t * H, g, b, eps, H);
  }
  return 0;
}

static int emu_qkv_split(void *ctx, const float *y, const float *bias, int B, int L, int nh,
                         int dh, uint16_t *q, uint16_t *k, uint16_t *v)
{
  (void)ctx;
  int H = nh * dh;
  uint16_t *dst[3] = { q, k, v };
  for (int b = 0; b < B; b++)
    for (int i = 0; i < L; i++)
      for (int part = 0; part < 3; part++)
        for (int h = 0; h < nh; h++)
          for (int d = 0; d < dh; d++) {
            int c = part * H + h * dh + d;
            float val = y[((size_t)b * L + i) * 3 * H + c] + bias[c];
            dst[part][(((size_t)b * nh + h) * L + i) * dh + d] = jp_f32_to_bf16(val);
          }
  return 0;
}

static int emu_softmax(void *ctx, const float *s, const uint8_t *attn, int B, int nh, int L,
                       float scale, uint16_t *p)
{
  (void)ctx;
  double *z = malloc((size_t)L * sizeof(double));
  assert_non_null(z);
  for (size_t r = 0; r < (size_t)B * nh * L; r++) {
    const uint8_t *a = attn + r / ((size_t)nh * L) * L;
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < L; j++) {
      /* float arithmetic for the masked sum, as HF and the kernel do */
      float zj = s[r * L + j] * scale;
      if (!a[j]) zj += -FLT_MAX;
      z[j] = zj;
      if (z[j] > mx) mx = z[j];
    }
    for (int j = 0; j < L; j++) sum += (z[j] = exp(z[j] - mx));
    for (int j = 0; j < L; j++) p[r * L + j] = jp_f32_to_bf16((float)(z[j] / sum));
  }
  free(z);
  return 0;
}

static int emu_merge_heads(void *ctx, const uint16_t *ctxh, int B, int L, int nh, int dh,
                           uint16_t *out)
{
  (void)ctx;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < nh; h++)
      for (int i = 0; i < L; i++)
        for (int d = 0; d < dh; d++)
          out[((size_t)b * L + i) * nh * dh + h * dh + d] =
            ctxh[(((size_t)b * nh + h) * L + i) * dh + d];
  return 0;
}

static int emu_bias_res_ln(void *ctx, const float *y, const float *bias, const float *g,
                           const float *b, float eps, int T, int H, float *x, uint16_t *xb)
{
  (void)ctx;
  for (int t = 0; t < T; t++) {
    float *xr = x + (size_t)t * H;
    for (int c = 0; c < H; c++) xr[c] += y[(size_t)t * H + c] + bias[c];
    emu_ln_row(xr, xb + (size_t)t * H, g, b, eps, H);
  }
  return 0;
}

static int emu_bias_gelu(void *ctx, const float *y, const float *bias, int T, int n,
                         uint16_t *out)
{
  (void)ctx;
  for (size_t e = 0; e < (size_t)T * n; e++) {
    float v = y[e] + bias[e % n];
    out[e] = jp_f32_to_bf16(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
  }
  return 0;
}

static int emu_l2norm(void *ctx, float *y, int T, int d)
{
  (void)ctx;
  for (int t = 0; t < T; t++) {
    float *r = y + (size_t)t * d;
    double n2 = 0;
    for (int c = 0; c < d; c++) n2 += (double)r[c] * r[c];
    double inv = 1.0 / fmax(sqrt(n2), 1e-12);
    for (int c = 0; c < d; c++) r[c] = (float)(r[c] * inv);
  }
  return 0;
}

static int emu_put_f32(void *ctx, void *dst, const float *src, size_t n)
{
  (void)ctx;
  memcpy(dst, src, n * sizeof(float));
  return 0;
}

static int emu_put_bf16(void *ctx, void *dst, const float *const *src, int parts, size_t n)
{
  (void)ctx;
  for (int i = 0; i < parts; i++) jp_f32_to_bf16_n(src[i], (uint16_t *)dst + (size_t)i * n, n);
  return 0;
}

static const struct bert_cuda__ops emu_ops = {
  .ctx = NULL, .put_f32 = emu_put_f32, .put_bf16 = emu_put_bf16, .gemm = emu_gemm,
  .embed_ln = emu_embed_ln, .qkv_split = emu_qkv_split, .softmax = emu_softmax,
  .merge_heads = emu_merge_heads, .bias_res_ln = emu_bias_res_ln, .bias_gelu = emu_bias_gelu,
  .l2norm = emu_l2norm,
};

/* ---- the real kernels, host-emulated (kern_host_emu.cpp) ---------------------- */

static int kemu_ok(cudaError_t e)
{
  assert_int_equal(e, cudaSuccess);
  return 0;
}

static int kemu_put_bf16(void *ctx, void *dst, const float *const *src, int parts, size_t n)
{
  (void)ctx;
  float *tmp = malloc((size_t)parts * n * sizeof(float));
  assert_non_null(tmp);
  for (int i = 0; i < parts; i++) memcpy(tmp + (size_t)i * n, src[i], n * sizeof(float));
  int rc = kemu_ok(bert_cuda_k_f32_to_bf16(NULL, tmp, dst, (size_t)parts * n));
  free(tmp);
  return rc;
}

static int kemu_embed_ln(void *ctx, const int32_t *ids, int T, int L, const float *word,
                         const float *pos, const float *type0, const float *g, const float *b,
                         float eps, int H, float *x, uint16_t *xb)
{
  (void)ctx;
  return kemu_ok(bert_cuda_k_embed_ln(NULL, ids, T, L, word, pos, type0, g, b, eps, H, x, xb));
}

static int kemu_qkv_split(void *ctx, const float *y, const float *bias, int B, int L, int nh,
                          int dh, uint16_t *q, uint16_t *k, uint16_t *v)
{
  (void)ctx;
  return kemu_ok(bert_cuda_k_qkv_split(NULL, y, bias, B, L, nh, dh, q, k, v));
}

static int kemu_softmax(void *ctx, const float *s, const uint8_t *attn, int B, int nh, int L,
                        float scale, uint16_t *p)
{
  (void)ctx;
  return kemu_ok(bert_cuda_k_softmax(NULL, s, attn, B, nh, L, scale, p));
}

static int kemu_merge_heads(void *ctx, const uint16_t *ctxh, int B, int L, int nh, int dh,
                            uint16_t *out)
{
  (void)ctx;
  return kemu_ok(bert_cuda_k_merge_heads(NULL, ctxh, B, L, nh, dh, out));
}

static int kemu_bias_res_ln(void *ctx, const float *y, const float *bias, const float *g,
                            const float *b, float eps, int T, int H, float *x, uint16_t *xb)
{
  (void)ctx;
  return kemu_ok(bert_cuda_k_bias_res_ln(NULL, y, bias, g, b, eps, T, H, x, xb));
}

static int kemu_bias_gelu(void *ctx, const float *y, const float *bias, int T, int n,
                          uint16_t *out)
{
  (void)ctx;
  return kemu_ok(bert_cuda_k_bias_gelu(NULL, y, bias, T, n, out));
}

static int kemu_l2norm(void *ctx, float *y, int T, int d)
{
  (void)ctx;
  return kemu_ok(bert_cuda_k_l2norm(NULL, y, T, d));
}

static const struct bert_cuda__ops kemu_ops = {
  .ctx = NULL, .put_f32 = emu_put_f32, .put_bf16 = kemu_put_bf16, .gemm = emu_gemm,
  .embed_ln = kemu_embed_ln, .qkv_split = kemu_qkv_split, .softmax = kemu_softmax,
  .merge_heads = kemu_merge_heads, .bias_res_ln = kemu_bias_res_ln,
  .bias_gelu = kemu_bias_gelu, .l2norm = kemu_l2norm,
};

/* ---- the emulated backend ------------------------------------------------------ */

/* Small but not tiny: 4 layers, 4 heads of 64, every dimension distinct so a
 * swapped one cannot go unnoticed. */
static const struct bert_config test_cfg = {
  .vocab_size = 1000, .hidden = 256, .layers = 4, .heads = 4, .intermediate = 1024,
  .max_position = 96, .type_vocab = 2, .layer_norm_eps = 1e-12f, .out_dim = 128,
};
#define EMU_MAX_TOKENS 256

struct emu {
  struct rand_bert rb;
  struct bert_cuda__sizes sz;
  struct bert_cuda__weights w;
  struct bert_cuda__work ws;
  void *wmem, *wkmem;
};

static int emu_setup(void **state)
{
  struct emu *e = calloc(1, sizeof *e);
  assert_non_null(e);
  assert_int_equal(rand_bert_make(&e->rb, &test_cfg, 0x5eedULL), 0);
  assert_int_equal(bert_cuda__plan(&test_cfg, EMU_MAX_TOKENS, &e->sz), 0);
  assert_int_equal(e->sz.lmax, test_cfg.max_position);
  e->wmem = malloc(e->sz.weights_bytes);
  e->wkmem = malloc(e->sz.work_bytes);
  assert_non_null(e->wmem);
  assert_non_null(e->wkmem);
  e->w.cfg = test_cfg;
  e->w.layer = calloc((size_t)test_cfg.layers, sizeof *e->w.layer);
  assert_non_null(e->w.layer);
  bert_cuda__carve_weights(e->wmem, &e->w);
  bert_cuda__carve_work(e->wkmem, &test_cfg, EMU_MAX_TOKENS, e->sz.lmax, &e->ws);
  assert_int_equal(bert_cuda__check_weights(&e->rb.w), 0);
  assert_int_equal(bert_cuda__upload(&emu_ops, &e->rb.w, &e->w), 0);
  *state = e;
  return 0;
}

static int emu_teardown(void **state)
{
  struct emu *e = *state;
  rand_bert_free(&e->rb);
  free(e->w.layer);
  free(e->wmem);
  free(e->wkmem);
  free(e);
  return 0;
}

/* Runs one batch through the emulation and the reference; returns the
 * comparison. */
static struct vec_cmp emu_run_ops(const struct bert_cuda__ops *ops, const char *what,
                                  struct emu *e, int B, int L, const int *len, uint64_t seed)
{
  size_t T = (size_t)B * L, D = (size_t)test_cfg.out_dim;
  int32_t *ids = malloc(T * sizeof *ids);
  uint8_t *attn = malloc(T);
  float *got = malloc(T * D * sizeof(float)), *want = malloc(T * D * sizeof(float));
  assert_true(ids && attn && got && want);
  rand_batch(B, L, len, test_cfg.vocab_size, seed, ids, attn);
  assert_int_equal(bert_cuda__check_batch(&test_cfg, EMU_MAX_TOKENS, e->sz.lmax, ids, attn, B, L,
                                          got),
                   0);
  memcpy(e->ws.ids, ids, T * sizeof *ids);
  memcpy(e->ws.attn, attn, T);
  assert_int_equal(bert_cuda__encode(ops, &e->w, &e->ws, B, L), 0);
  memcpy(got, e->ws.out, T * D * sizeof(float));
  assert_int_equal(bert_forward_ref(&e->rb.w, ids, attn, B, L, want), 0);
  struct vec_cmp r = vec_compare(got, want, T, (int)D);
  printf("  %s %2dx%-3d: min cosine %.6f, max |diff| %.2e, max |norm-1| %.1e\n", what, B, L,
         r.min_cos, r.max_abs, r.max_norm_err);
  free(ids);
  free(attn);
  free(got);
  free(want);
  return r;
}

static struct vec_cmp emu_run(struct emu *e, int B, int L, const int *len, uint64_t seed)
{
  return emu_run_ops(&emu_ops, "emulated", e, B, L, len, seed);
}

/* Cosine floor per vector: BF16 GEMM inputs keep 8 significant bits
 * (relative rounding 2^-9), which over 4 layers costs well under 1e-3 of
 * cosine; a layout error (wrong head, wrong transpose, lost mask) drops it
 * far below. */
#define MIN_COSINE 0.999

static void emu_matches_reference(void **state)
{
  struct emu *e = *state;
  static const int len1[] = { 1 }, len2[] = { 7, 3 }, len3[] = { 37, 20, 1 },
                   len4[] = { 50, 0, 33, 49 }, len5[] = { 96 };
  struct { int B, L; const int *len; } cases[] = {
    { 1, 1, len1 },    /* one token */
    { 2, 7, len2 },    /* padding */
    { 3, 37, len3 },   /* odd length, a one-token sequence */
    { 4, 50, len4 },   /* an all-masked sequence: HF's uniform attention */
    { 1, 96, len5 },   /* max_position */
  };
  double worst = 1.0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct vec_cmp r = emu_run(e, cases[i].B, cases[i].L, cases[i].len, 100 + i);
    assert_true(r.min_cos >= MIN_COSINE);
    assert_true(r.max_norm_err < 1e-4);
    if (r.min_cos < worst) worst = r.min_cos;
  }
  printf("  emulated BF16 forward vs bert_forward_ref: min cosine over all vectors %.6f\n",
         worst);
}

/* The comparison is strict enough to fail: layer 1's key block of the fused
 * QKV weight overwritten with its value block (the kind of offset slip
 * this test exists to catch) must break the parity. */
static void emu_detects_a_layout_error(void **state)
{
  struct emu *e = *state;
  uint16_t *wqkv = (uint16_t *)e->w.layer[1].wqkv;
  size_t HH = (size_t)test_cfg.hidden * test_cfg.hidden;
  uint16_t *keep = malloc(HH * sizeof(uint16_t));
  assert_non_null(keep);
  memcpy(keep, wqkv + HH, HH * sizeof(uint16_t));
  memcpy(wqkv + HH, wqkv + 2 * HH, HH * sizeof(uint16_t));
  static const int len[] = { 30, 12 };
  struct vec_cmp r = emu_run(e, 2, 30, len, 7);
  memcpy(wqkv + HH, keep, HH * sizeof(uint16_t));
  free(keep);
  assert_true(r.min_cos < MIN_COSINE);
}

/* ---- the real kernels (host-emulated) against the scalar operations ------------- */

static void rand_fill(float *p, size_t n, uint64_t *st, float sd)
{
  for (size_t i = 0; i < n; i++) p[i] = sd * jp_randn(st);
}

/* BF16 results may differ by one unit in the last place: the kernels
 * compute in float32 where the scalar operations use double, and a value
 * near a rounding midpoint can round either way. */
static void assert_bf16_close(const uint16_t *got, const uint16_t *want, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float g = bf(got[i]), w = bf(want[i]);
    if (!(fabsf(g - w) <= ldexpf(fabsf(w), -7) + 1e-30f)) {
      printf("  element %zu: %g vs %g\n", i, (double)g, (double)w);
      fail();
    }
  }
}

static void assert_f32_close(const float *got, const float *want, size_t n, float rel)
{
  for (size_t i = 0; i < n; i++)
    if (!(fabsf(got[i] - want[i]) <= rel * (fabsf(want[i]) + 1.0f))) {
      printf("  element %zu: %.9g vs %.9g\n", i, (double)got[i], (double)want[i]);
      fail();
    }
}

static void kernels_match_scalar_ops(void **state)
{
  (void)state;
  uint64_t st = 99;
  enum { T = 37, L = 10, H = 96, V = 50, N = 160 };   /* T % L != 0: positions wrap */

  /* f32 -> bf16 conversion: exact (both round to nearest even). */
  {
    float src[N];
    uint16_t a[N], b[N];
    rand_fill(src, N, &st, 3.0f);
    src[0] = 0.0f;
    src[1] = -0.0f;
    src[2] = 1e-40f;   /* subnormal */
    src[3] = 3.0e38f;
    assert_int_equal(bert_cuda_k_f32_to_bf16(NULL, src, a, N), cudaSuccess);
    jp_f32_to_bf16_n(src, b, N);
    assert_memory_equal(a, b, sizeof a);
  }
  /* embeddings + LayerNorm, and bias + residual + LayerNorm */
  {
    static float word[V * H], pos[L * H], type0[H], g[H], b[H], y[T * H], bias[H];
    static float x1[T * H], x2[T * H];
    static uint16_t xb1[T * H], xb2[T * H];
    int32_t ids[T];
    rand_fill(word, V * H, &st, 1.0f);
    rand_fill(pos, L * H, &st, 1.0f);
    rand_fill(type0, H, &st, 1.0f);
    rand_fill(g, H, &st, 1.0f);
    rand_fill(b, H, &st, 1.0f);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(jp_rand64(&st) % V);
    assert_int_equal(bert_cuda_k_embed_ln(NULL, ids, T, L, word, pos, type0, g, b, 1e-12f, H, x1,
                                          xb1), cudaSuccess);
    emu_embed_ln(NULL, ids, T, L, word, pos, type0, g, b, 1e-12f, H, x2, xb2);
    assert_f32_close(x1, x2, T * H, 1e-5f);
    assert_bf16_close(xb1, xb2, T * H);

    rand_fill(y, T * H, &st, 2.0f);
    rand_fill(bias, H, &st, 1.0f);
    assert_int_equal(bert_cuda_k_bias_res_ln(NULL, y, bias, g, b, 1e-12f, T, H, x1, xb1),
                     cudaSuccess);
    emu_bias_res_ln(NULL, y, bias, g, b, 1e-12f, T, H, x2, xb2);
    assert_f32_close(x1, x2, T * H, 1e-5f);
    assert_bf16_close(xb1, xb2, T * H);
  }
  /* head split and merge: exact */
  {
    enum { B = 3, SL = 5, NH = 4, DH = 8, HH = NH * DH };
    static float y[B * SL * 3 * HH], bias[3 * HH];
    static uint16_t q1[B * SL * HH], k1[B * SL * HH], v1[B * SL * HH];
    static uint16_t q2[B * SL * HH], k2[B * SL * HH], v2[B * SL * HH];
    static uint16_t m1[B * SL * HH], m2[B * SL * HH];
    rand_fill(y, sizeof y / sizeof y[0], &st, 1.0f);
    rand_fill(bias, 3 * HH, &st, 1.0f);
    assert_int_equal(bert_cuda_k_qkv_split(NULL, y, bias, B, SL, NH, DH, q1, k1, v1),
                     cudaSuccess);
    emu_qkv_split(NULL, y, bias, B, SL, NH, DH, q2, k2, v2);
    assert_memory_equal(q1, q2, sizeof q1);
    assert_memory_equal(k1, k2, sizeof k1);
    assert_memory_equal(v1, v2, sizeof v1);
    assert_int_equal(bert_cuda_k_merge_heads(NULL, q1, B, SL, NH, DH, m1), cudaSuccess);
    emu_merge_heads(NULL, q1, B, SL, NH, DH, m2);
    assert_memory_equal(m1, m2, sizeof m1);
  }
  /* GELU and L2 norm */
  {
    enum { R = 5 };
    static float y[R * N], bias[N], n1[R * N], n2[R * N];
    static uint16_t o1[R * N], o2[R * N];
    rand_fill(y, R * N, &st, 3.0f);
    rand_fill(bias, N, &st, 1.0f);
    assert_int_equal(bert_cuda_k_bias_gelu(NULL, y, bias, R, N, o1), cudaSuccess);
    emu_bias_gelu(NULL, y, bias, R, N, o2);
    assert_bf16_close(o1, o2, R * N);
    memcpy(n1, y, sizeof y);
    memset(n1 + 2 * N, 0, N * sizeof(float));   /* a zero row stays zero */
    memcpy(n2, n1, sizeof n1);
    assert_int_equal(bert_cuda_k_l2norm(NULL, n1, R, N), cudaSuccess);
    emu_l2norm(NULL, n2, R, N);
    assert_f32_close(n1, n2, R * N, 1e-6f);
    for (int c = 0; c < N; c++) assert_true(n1[2 * N + c] == 0.0f);
  }
}

/* Every softmax variant (register rows of 1, 2, 4, 8, 16 values per lane
 * and the any-length one), with padding and an all-masked sequence. */
static void softmax_kernels_match_scalar_op(void **state)
{
  (void)state;
  static const int lens[] = { 1, 7, 33, 100, 200, 300, 513 };   /* widths 1 1 2 4 8 16, any */
  uint64_t st = 7;
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
    int L = lens[li], B = L > 64 ? 1 : 2, NH = L > 64 ? 1 : 2;
    size_t n = (size_t)B * NH * L * L;
    float *s = malloc(n * sizeof(float));
    uint16_t *p1 = malloc(n * sizeof(uint16_t)), *p2 = malloc(n * sizeof(uint16_t));
    uint8_t *attn = malloc((size_t)B * L);
    assert_true(s && p1 && p2 && attn);
    rand_fill(s, n, &st, 8.0f);
    for (int b = 0; b < B; b++)
      for (int j = 0; j < L; j++)   /* sequence 1 all masked; sequence 0 padded past 2/3 */
        attn[b * L + j] = (uint8_t)(b == 0 && (L == 1 || j < 2 * L / 3));
    assert_int_equal(bert_cuda_k_softmax(NULL, s, attn, B, NH, L, 0.125f, p1), cudaSuccess);
    emu_softmax(NULL, s, attn, B, NH, L, 0.125f, p2);
    assert_bf16_close(p1, p2, n);
    free(s);
    free(p1);
    free(p2);
    free(attn);
  }
}

/* A whole forward pass with the real kernels (and the scalar GEMM). */
static void host_kernels_forward_matches_reference(void **state)
{
  struct emu *e = *state;
  assert_int_equal(bert_cuda__upload(&kemu_ops, &e->rb.w, &e->w), 0);
  static const int len[] = { 20, 9 };
  struct vec_cmp r = emu_run_ops(&kemu_ops, "host kernels", e, 2, 20, len, 77);
  assert_true(r.min_cos >= MIN_COSINE);
  assert_true(r.max_norm_err < 1e-4);
}

/* ---- argument checks ------------------------------------------------------------ */

static void plan_rejects_bad_configs(void **state)
{
  (void)state;
  struct bert_cuda__sizes sz;
  struct bert_config c = test_cfg;
  c.heads = 3;   /* 256 % 3 != 0 */
  assert_int_equal(bert_cuda__plan(&c, 16, &sz), JP_EINVAL);
  c = test_cfg;
  c.layers = 0;
  assert_int_equal(bert_cuda__plan(&c, 16, &sz), JP_EINVAL);
  c = test_cfg;
  c.layer_norm_eps = NAN;
  assert_int_equal(bert_cuda__plan(&c, 16, &sz), JP_EINVAL);
  assert_int_equal(bert_cuda__plan(&test_cfg, 0, &sz), JP_EINVAL);
  assert_int_equal(bert_cuda__plan(&test_cfg, (1 << 20) + 1, &sz), JP_ETOOBIG);
  /* A workspace smaller than max_position limits the sequence length. */
  assert_int_equal(bert_cuda__plan(&test_cfg, 40, &sz), 0);
  assert_int_equal(sz.lmax, 40);
}

/* cuBLAS is dlopened, not linked (bert_cuda.c): the toolkit this was built
 * with must provide it, GPU or not, or CUDA encoding would fail only on the
 * GPU machine. Loading twice is harmless. */
static void cublas_loads_without_a_gpu(void **state)
{
  (void)state;
  int rc = bert_cuda_blas_load();
  if (rc < 0) fail_msg("%s", jp_errmsg(rc));
  assert_int_equal(bert_cuda_blas_load(), 0);
}

static void check_batch_rejects_bad_calls(void **state)
{
  (void)state;
  int32_t ids[8] = { 2, 8, 9, 10, 3, 0, 0, 0 };
  uint8_t attn[8] = { 1, 1, 1, 1, 1, 0, 0, 0 };
  float out[8] = { 0 };
  const struct bert_config *c = &test_cfg;
  assert_int_equal(bert_cuda__check_batch(c, 8, 8, ids, attn, 2, 4, out), 0);
  assert_int_equal(bert_cuda__check_batch(c, 6, 6, ids, attn, 2, 4, out), JP_ETOOBIG);
  assert_int_equal(bert_cuda__check_batch(c, 8, 3, ids, attn, 2, 4, out), JP_EINVAL);
  assert_int_equal(bert_cuda__check_batch(c, 8, 8, ids, attn, 0, 4, out), JP_EINVAL);
  assert_int_equal(bert_cuda__check_batch(c, 8, 8, NULL, attn, 2, 4, out), JP_EINVAL);
  ids[6] = test_cfg.vocab_size;
  assert_int_equal(bert_cuda__check_batch(c, 8, 8, ids, attn, 2, 4, out), JP_EINVAL);
  ids[6] = -1;
  assert_int_equal(bert_cuda__check_batch(c, 8, 8, ids, attn, 2, 4, out), JP_EINVAL);
}

static void check_weights_names_missing_tensor(void **state)
{
  struct emu *e = *state;
  struct bert_weights w = e->rb.w;
  struct bert_layer_weights *layers = malloc((size_t)test_cfg.layers * sizeof *layers);
  assert_non_null(layers);
  memcpy(layers, e->rb.layers, (size_t)test_cfg.layers * sizeof *layers);
  w.layer = layers;
  layers[2].ln2_b = NULL;
  assert_int_equal(bert_cuda__check_weights(&w), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "layer 2"));
  layers[2].ln2_b = e->rb.layers[2].ln2_b;
  w.proj_w = NULL;
  assert_int_equal(bert_cuda__check_weights(&w), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "linear.weight"));
  free(layers);
}

/* Without a GPU the public entry points fail cleanly; with one, a bad
 * ordinal does. Either way nothing is returned in *out. */
static void create_without_device_fails_cleanly(void **state)
{
  struct emu *e = *state;
  struct bert_backend *be = (struct bert_backend *)&be;   /* poison: must become NULL */
  int n = bert_cuda_device_count();
  assert_true(n >= 0);
  assert_int_equal(bert_cuda_create(NULL, 16, 0, &be), JP_EINVAL);
  assert_null(be);
  be = (struct bert_backend *)&be;
  int rc = bert_cuda_create(&e->rb.w, 16, n == 0 ? 0 : n, &be);
  assert_int_equal(rc, JP_ENODEVICE);
  assert_null(be);
  printf("  %d CUDA device(s); create on ordinal %d: %s\n", n, n, jp_errmsg(rc));
  assert_true(strlen(jp_errmsg(rc)) > strlen("no usable GPU"));
  /* The first host allocation failing is JP_ENOMEM, whatever the device. */
  be = (struct bert_backend *)&be;
  jp_mem_fail_after(1);
  rc = bert_cuda_create(&e->rb.w, 16, 0, &be);
  jp_mem_fail_after(0);
  assert_int_equal(rc, JP_ENOMEM);
  assert_null(be);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(emu_matches_reference),
    cmocka_unit_test(emu_detects_a_layout_error),
    cmocka_unit_test(kernels_match_scalar_ops),
    cmocka_unit_test(softmax_kernels_match_scalar_op),
    cmocka_unit_test(host_kernels_forward_matches_reference),
    cmocka_unit_test(plan_rejects_bad_configs),
    cmocka_unit_test(cublas_loads_without_a_gpu),
    cmocka_unit_test(check_batch_rejects_bad_calls),
    cmocka_unit_test(check_weights_names_missing_tensor),
    cmocka_unit_test(create_without_device_fails_cleanly),
  };
  return cmocka_run_group_tests(tests, emu_setup, emu_teardown);
}
