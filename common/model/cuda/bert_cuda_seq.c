/* bert_cuda_seq.c: the device-independent half of the CUDA backend: buffer
 * layout, argument checks, and the forward pass as a sequence of device
 * operations (bert_cuda_int.h explains why it is split out this way).
 *
 * Layouts. Activations are row-major [tokens, features] with token
 * t = b*L + i. cuBLAS is column-major, so a row-major [T, N] matrix is read
 * as its column-major transpose (N x T, leading dimension N), and a linear
 * layer y = x W^T (W row-major [N, K]) becomes the column-major product
 *   y^T (N x T) = op_T(W as K x N) * (x^T as K x T)
 * i.e. gemm(trans_a = T, trans_b = N, m = N, n = T, k = K, lda = K,
 * ldb = K, ldc = N): cuBLAS's "TN" case, the fastest one for tensor cores.
 *
 * Attention runs as strided-batched GEMMs over the B*heads (batch, head)
 * pairs, which needs one uniform stride per operand; hence qkv_split
 * writes q, k, v head-major as [B, heads, L, dh] (pair index b*heads + h,
 * stride L*dh), and merge_heads puts the context back to [T, H].
 *   scores s[i, j] = q_i . k_j, row-major [L(i), L(j)] per pair =
 *     column-major (L_j x L_i) = op_T(k as dh x L) * (q as dh x L)
 *   ctx[i, d] = sum_j p[i, j] v[j, d], row-major [L, dh] per pair =
 *     column-major (dh x L_i) = (v as dh x L_j) * (p as L_j x L_i)
 *
 * Thread-safety: pure functions. Allocation: none. */
#include "model/cuda/bert_cuda_int.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "util/err.h"

/* Walks an arena, handing out BERT_CUDA_ALIGN-aligned pieces; with base 0
 * it only measures. Integer addresses, so measuring does no arithmetic on
 * a null pointer. */
struct carver {
  uintptr_t base;
  size_t off;
};

static uintptr_t carve(struct carver *c, size_t bytes)
{
  uintptr_t p = c->base + c->off;
  c->off += (bytes + BERT_CUDA_ALIGN - 1) / BERT_CUDA_ALIGN * BERT_CUDA_ALIGN;
  return p;
}

#define CARVE_F32(c, n) ((float *)carve((c), (size_t)(n) * sizeof(float)))
#define CARVE_BF16(c, n) ((uint16_t *)carve((c), (size_t)(n) * sizeof(uint16_t)))

/* One function lays out the weights for both measuring (w == NULL) and
 * pointing, so the two can never disagree. */
static size_t layout_weights(uintptr_t base, const struct bert_config *c,
                             struct bert_cuda__weights *w)
{
  struct carver cv = { base, 0 };
  size_t H = (size_t)c->hidden, I = (size_t)c->intermediate;
  const float *word = CARVE_F32(&cv, (size_t)c->vocab_size * H);
  const float *pos = CARVE_F32(&cv, (size_t)c->max_position * H);
  const float *type0 = CARVE_F32(&cv, H);
  const float *eg = CARVE_F32(&cv, H), *eb = CARVE_F32(&cv, H);
  if (w) {
    w->word = word;
    w->pos = pos;
    w->type0 = type0;
    w->emb_g = eg;
    w->emb_b = eb;
  }
  for (int l = 0; l < c->layers; l++) {
    struct bert_cuda__layer ly;
    ly.wqkv = CARVE_BF16(&cv, 3 * H * H);
    ly.bqkv = CARVE_F32(&cv, 3 * H);
    ly.wao = CARVE_BF16(&cv, H * H);
    ly.bao = CARVE_F32(&cv, H);
    ly.ln1_g = CARVE_F32(&cv, H);
    ly.ln1_b = CARVE_F32(&cv, H);
    ly.wi = CARVE_BF16(&cv, I * H);
    ly.bi = CARVE_F32(&cv, I);
    ly.wo = CARVE_BF16(&cv, H * I);
    ly.bo = CARVE_F32(&cv, H);
    ly.ln2_g = CARVE_F32(&cv, H);
    ly.ln2_b = CARVE_F32(&cv, H);
    if (w) w->layer[l] = ly;
  }
  const uint16_t *proj = CARVE_BF16(&cv, (size_t)c->out_dim * H);
  if (w) w->proj = proj;
  return cv.off;
}

static size_t max3(size_t a, size_t b, size_t c)
{
  size_t m = a > b ? a : b;
  return m > c ? m : c;
}

static size_t layout_work(uintptr_t base, const struct bert_config *c, int max_tokens, int lmax,
                          struct bert_cuda__work *ws)
{
  struct carver cv = { base, 0 };
  size_t T = (size_t)max_tokens, H = (size_t)c->hidden, I = (size_t)c->intermediate;
  size_t S = T * (size_t)c->heads * (size_t)lmax;   /* B*heads*L*L <= T*heads*lmax */
  struct bert_cuda__work w;
  w.ids = (int32_t *)carve(&cv, T * sizeof(int32_t));
  w.attn = (uint8_t *)carve(&cv, T);
  w.x = CARVE_F32(&cv, T * H);
  w.xb = CARVE_BF16(&cv, T * H);
  w.y = CARVE_F32(&cv, T * max3(3 * H, I, (size_t)c->out_dim));
  w.q = CARVE_BF16(&cv, T * H);
  w.k = CARVE_BF16(&cv, T * H);
  w.v = CARVE_BF16(&cv, T * H);
  w.s = CARVE_F32(&cv, S);
  w.p = CARVE_BF16(&cv, S);
  w.ctxh = CARVE_BF16(&cv, T * H);
  w.ctx = CARVE_BF16(&cv, T * H);
  w.hb = CARVE_BF16(&cv, T * I);
  w.out = CARVE_F32(&cv, T * (size_t)c->out_dim);
  if (ws) *ws = w;
  return cv.off;
}

/* Limits chosen so that every element count and offset of the workspace
 * fits in the int (cuBLAS m, n, k, ld, batch count) or long long ranges
 * with room: no dimension above 2^20 and no buffer above 2^40 elements. */
#define BERT_CUDA_MAX_DIM (1 << 20)
#define BERT_CUDA_MAX_ELEMS (1ULL << 40)

int bert_cuda__plan(const struct bert_config *c, int max_tokens, struct bert_cuda__sizes *out)
{
  if (c->vocab_size <= 0 || c->hidden <= 0 || c->layers <= 0 || c->heads <= 0 ||
      c->intermediate <= 0 || c->max_position <= 0 || c->type_vocab <= 0 || c->out_dim <= 0)
    return jp_err(JP_EINVAL, "bert_cuda: config has a non-positive size (vocab %d, hidden %d, "
                             "layers %d, heads %d, intermediate %d, positions %d, types %d, "
                             "out_dim %d)",
                  c->vocab_size, c->hidden, c->layers, c->heads, c->intermediate,
                  c->max_position, c->type_vocab, c->out_dim);
  if (c->hidden % c->heads != 0)
    return jp_err(JP_EINVAL, "bert_cuda: hidden %d is not divisible by %d heads", c->hidden,
                  c->heads);
  if (!(c->layer_norm_eps >= 0.0f) || !isfinite(c->layer_norm_eps))
    return jp_err(JP_EINVAL, "bert_cuda: layer_norm_eps %g is not a finite value >= 0",
                  (double)c->layer_norm_eps);
  if (max_tokens <= 0) return jp_err(JP_EINVAL, "bert_cuda: max_tokens %d < 1", max_tokens);
  if (max_tokens > BERT_CUDA_MAX_DIM || c->hidden > BERT_CUDA_MAX_DIM ||
      c->intermediate > BERT_CUDA_MAX_DIM || c->out_dim > BERT_CUDA_MAX_DIM ||
      c->max_position > BERT_CUDA_MAX_DIM || c->layers > BERT_CUDA_MAX_DIM)
    return jp_err(JP_ETOOBIG, "bert_cuda: a dimension exceeds %d (max_tokens %d)",
                  BERT_CUDA_MAX_DIM, max_tokens);
  int lmax = max_tokens < c->max_position ? max_tokens : c->max_position;
  unsigned long long T = (unsigned long long)max_tokens;
  if (T * (unsigned long long)c->heads * (unsigned long long)lmax > BERT_CUDA_MAX_ELEMS ||
      (unsigned long long)c->vocab_size * (unsigned long long)c->hidden > BERT_CUDA_MAX_ELEMS ||
      T * (unsigned long long)c->intermediate > BERT_CUDA_MAX_ELEMS)
    return jp_err(JP_ETOOBIG, "bert_cuda: workspace for %d tokens is too large", max_tokens);
  out->weights_bytes = layout_weights(0, c, NULL);
  out->work_bytes = layout_work(0, c, max_tokens, lmax, NULL);
  out->lmax = lmax;
  return 0;
}

void bert_cuda__carve_weights(void *base, struct bert_cuda__weights *w)
{
  layout_weights((uintptr_t)base, &w->cfg, w);
}

void bert_cuda__carve_work(void *base, const struct bert_config *cfg, int max_tokens, int lmax,
                           struct bert_cuda__work *ws)
{
  layout_work((uintptr_t)base, cfg, max_tokens, lmax, ws);
}

int bert_cuda__check_weights(const struct bert_weights *w)
{
#define NEED(p, name) \
  do { if (!(p)) return jp_err(JP_EINVAL, "bert_cuda: weight %s is missing", name); } while (0)
  NEED(w->word_emb, "embeddings.word_embeddings");
  NEED(w->pos_emb, "embeddings.position_embeddings");
  NEED(w->type_emb, "embeddings.token_type_embeddings");
  NEED(w->emb_ln_g, "embeddings.LayerNorm.weight");
  NEED(w->emb_ln_b, "embeddings.LayerNorm.bias");
  NEED(w->layer, "encoder.layer");
  NEED(w->proj_w, "linear.weight");
  for (int l = 0; l < w->cfg.layers; l++) {
    const struct bert_layer_weights *y = &w->layer[l];
    const float *p[] = { y->q_w, y->q_b, y->k_w, y->k_b, y->v_w, y->v_b, y->ao_w, y->ao_b,
                         y->ln1_g, y->ln1_b, y->i_w, y->i_b, y->o_w, y->o_b, y->ln2_g, y->ln2_b };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
      if (!p[i])
        return jp_err(JP_EINVAL, "bert_cuda: layer %d is missing tensor %zu of 16 "
                                 "(q_w, q_b, k_w, ... ln2_b in bert_layer_weights order)",
                      l, i);
  }
#undef NEED
  return 0;
}

int bert_cuda__check_batch(const struct bert_config *cfg, int max_tokens, int lmax,
                           const int32_t *ids, const uint8_t *attn, int B, int L,
                           const float *out)
{
  if (!ids || !attn || !out) return jp_err(JP_EINVAL, "bert_cuda: NULL ids, attn or out");
  if (B <= 0 || L <= 0) return jp_err(JP_EINVAL, "bert_cuda: empty batch %dx%d", B, L);
  if (L > lmax || L > cfg->max_position)
    return jp_err(JP_EINVAL, "bert_cuda: sequence length %d exceeds %d", L,
                  lmax < cfg->max_position ? lmax : cfg->max_position);
  if ((long long)B * L > max_tokens)
    return jp_err(JP_ETOOBIG, "bert_cuda: batch %dx%d exceeds %d tokens per call", B, L,
                  max_tokens);
  for (long long t = 0; t < (long long)B * L; t++)
    if (ids[t] < 0 || ids[t] >= cfg->vocab_size)
      return jp_err(JP_EINVAL, "bert_cuda: token id %d at %lld is outside the vocabulary (%d)",
                    ids[t], t, cfg->vocab_size);
  return 0;
}

int bert_cuda__upload(const struct bert_cuda__ops *ops, const struct bert_weights *hw,
                      const struct bert_cuda__weights *w)
{
  const struct bert_config *c = &hw->cfg;
  size_t H = (size_t)c->hidden, I = (size_t)c->intermediate;
  void *o = ops->ctx;
  int rc;

#define PUT(dst, src, n) \
  do { if ((rc = ops->put_f32(o, (void *)(dst), (src), (n))) < 0) return rc; } while (0)
#define PUT_BF16(dst, srcs, parts, n) \
  do { if ((rc = ops->put_bf16(o, (void *)(dst), (srcs), (parts), (n))) < 0) return rc; } while (0)
  PUT(w->word, hw->word_emb, (size_t)c->vocab_size * H);
  PUT(w->pos, hw->pos_emb, (size_t)c->max_position * H);
  PUT(w->type0, hw->type_emb, H);
  PUT(w->emb_g, hw->emb_ln_g, H);
  PUT(w->emb_b, hw->emb_ln_b, H);
  for (int l = 0; l < c->layers; l++) {
    const struct bert_layer_weights *s = &hw->layer[l];
    const struct bert_cuda__layer *d = &w->layer[l];
    /* Fused QKV: the three [H, H] weights stacked to [3H, H] (one GEMM with
     * N = 3H instead of three with N = H), biases back to back alike. */
    const float *qkv[3] = { s->q_w, s->k_w, s->v_w };
    PUT_BF16(d->wqkv, qkv, 3, H * H);
    PUT(d->bqkv, s->q_b, H);
    PUT(d->bqkv + H, s->k_b, H);
    PUT(d->bqkv + 2 * H, s->v_b, H);
    PUT_BF16(d->wao, &s->ao_w, 1, H * H);
    PUT(d->bao, s->ao_b, H);
    PUT(d->ln1_g, s->ln1_g, H);
    PUT(d->ln1_b, s->ln1_b, H);
    PUT_BF16(d->wi, &s->i_w, 1, I * H);
    PUT(d->bi, s->i_b, I);
    PUT_BF16(d->wo, &s->o_w, 1, H * I);
    PUT(d->bo, s->o_b, H);
    PUT(d->ln2_g, s->ln2_g, H);
    PUT(d->ln2_b, s->ln2_b, H);
  }
  PUT_BF16(w->proj, &hw->proj_w, 1, (size_t)c->out_dim * H);
#undef PUT
#undef PUT_BF16
  return 0;
}

/* y[T, n_out] = x[T, n_in] W^T for a row-major W [n_out, n_in]: see the top. */
static int linear(const struct bert_cuda__ops *ops, const uint16_t *W, int n_out, int n_in,
                  const uint16_t *x, int T, float *y)
{
  struct bert_cuda__gemm g = {
    .trans_a = 1, .trans_b = 0, .m = n_out, .n = T, .k = n_in, .alpha = 1.0f, .beta = 0.0f,
    .a = W, .lda = n_in, .b = x, .ldb = n_in, .c = y, .c_bf16 = 0, .ldc = n_out, .batch = 1,
  };
  return ops->gemm(ops->ctx, &g);
}

int bert_cuda__encode(const struct bert_cuda__ops *ops, const struct bert_cuda__weights *w,
                      const struct bert_cuda__work *ws, int B, int L)
{
  const struct bert_config *c = &w->cfg;
  int H = c->hidden, I = c->intermediate, nh = c->heads, dh = H / nh, T = B * L;
  float eps = c->layer_norm_eps;
  /* 1/sqrt(head_dim), applied to the float32 scores inside the softmax. */
  float scale = (float)(1.0 / sqrt((double)dh));
  long long sq = (long long)L * dh, ss = (long long)L * L;
  int rc;

  rc = ops->embed_ln(ops->ctx, ws->ids, T, L, w->word, w->pos, w->type0, w->emb_g, w->emb_b,
                     eps, H, ws->x, ws->xb);
  if (rc < 0) return rc;
  for (int l = 0; l < c->layers; l++) {
    const struct bert_cuda__layer *ly = &w->layer[l];
    if ((rc = linear(ops, ly->wqkv, 3 * H, H, ws->xb, T, ws->y)) < 0) return rc;
    rc = ops->qkv_split(ops->ctx, ws->y, ly->bqkv, B, L, nh, dh, ws->q, ws->k, ws->v);
    if (rc < 0) return rc;
    struct bert_cuda__gemm sc = {
      .trans_a = 1, .trans_b = 0, .m = L, .n = L, .k = dh, .alpha = 1.0f, .beta = 0.0f,
      .a = ws->k, .lda = dh, .stride_a = sq, .b = ws->q, .ldb = dh, .stride_b = sq,
      .c = ws->s, .c_bf16 = 0, .ldc = L, .stride_c = ss, .batch = B * nh,
    };
    if ((rc = ops->gemm(ops->ctx, &sc)) < 0) return rc;
    if ((rc = ops->softmax(ops->ctx, ws->s, ws->attn, B, nh, L, scale, ws->p)) < 0) return rc;
    struct bert_cuda__gemm cx = {
      .trans_a = 0, .trans_b = 0, .m = dh, .n = L, .k = L, .alpha = 1.0f, .beta = 0.0f,
      .a = ws->v, .lda = dh, .stride_a = sq, .b = ws->p, .ldb = L, .stride_b = ss,
      .c = ws->ctxh, .c_bf16 = 1, .ldc = dh, .stride_c = sq, .batch = B * nh,
    };
    if ((rc = ops->gemm(ops->ctx, &cx)) < 0) return rc;
    if ((rc = ops->merge_heads(ops->ctx, ws->ctxh, B, L, nh, dh, ws->ctx)) < 0) return rc;
    if ((rc = linear(ops, ly->wao, H, H, ws->ctx, T, ws->y)) < 0) return rc;
    rc = ops->bias_res_ln(ops->ctx, ws->y, ly->bao, ly->ln1_g, ly->ln1_b, eps, T, H, ws->x,
                          ws->xb);
    if (rc < 0) return rc;
    if ((rc = linear(ops, ly->wi, I, H, ws->xb, T, ws->y)) < 0) return rc;
    if ((rc = ops->bias_gelu(ops->ctx, ws->y, ly->bi, T, I, ws->hb)) < 0) return rc;
    if ((rc = linear(ops, ly->wo, H, I, ws->hb, T, ws->y)) < 0) return rc;
    rc = ops->bias_res_ln(ops->ctx, ws->y, ly->bo, ly->ln2_g, ly->ln2_b, eps, T, H, ws->x,
                          ws->xb);
    if (rc < 0) return rc;
  }
  if ((rc = linear(ops, w->proj, c->out_dim, H, ws->xb, T, ws->out)) < 0) return rc;
  return ops->l2norm(ops->ctx, ws->out, T, c->out_dim);
}
