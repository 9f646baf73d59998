/* bert_ref.c: the scalar reference forward pass of BERT + the ColBERT head
 * (bert.h; shared/reference/model.md §1, §3, §5).
 *
 * This is the oracle the fast CPU and CUDA backends are tested against, so
 * it is written for obviousness, not speed: one sequence at a time, plain
 * loops, dot products and LayerNorm statistics accumulated in double (so the
 * oracle is more accurate than any float32 backend it judges), exact erf
 * GELU, softmax with max subtraction.
 *
 * Masking follows PyTorch/HF exactly: a key position with attention 0 gets
 * the score plus float32's lowest value, which is what HF's extended
 * attention mask adds. In float32 that sum rounds to the lowest value
 * itself, so masked keys get weight exp(-huge) = 0, and a row whose keys are
 * all masked ends up with equal scores everywhere, i.e. uniform weights over
 * all L positions. The reference reproduces that edge case rather than
 * dividing by zero.
 *
 * Thread-safety: reentrant. Allocation: a per-call workspace (jp_malloc),
 * freed before returning. */
#include "model/bert.h"

#include "util/err.h"
#include "util/mem.h"

#include <float.h>
#include <math.h>
#include <string.h>

struct ref_ws {
  float *x;       /* [L, H] hidden state */
  float *q, *k, *v;
  float *ctx;     /* [L, H] attention context */
  float *tmp;     /* [L, H] dense outputs before the residual */
  float *inter;   /* [L, I] intermediate activations */
  double *p;      /* [L] one row of attention weights */
};

/* y[L, n_out] = x[L, n_in] W^T (+ b). W is [n_out, n_in] (PyTorch Linear). */
static void linear(const float *x, int L, int n_in, const float *W, const float *b, int n_out,
                   float *y)
{
  for (int i = 0; i < L; i++)
    for (int o = 0; o < n_out; o++) {
      double s = b ? b[o] : 0.0;
      const float *xi = x + (size_t)i * n_in, *w = W + (size_t)o * n_in;
      for (int k = 0; k < n_in; k++) s += (double)xi[k] * w[k];
      y[(size_t)i * n_out + o] = (float)s;
    }
}

static void layernorm(float *x, int n, const float *g, const float *b, float eps)
{
  double mean = 0, var = 0;
  for (int i = 0; i < n; i++) mean += x[i];
  mean /= n;
  for (int i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
  var /= n;   /* biased variance, as torch.nn.LayerNorm */
  double inv = 1.0 / sqrt(var + (double)eps);
  for (int i = 0; i < n; i++) x[i] = (float)(((double)x[i] - mean) * inv * g[i] + b[i]);
}

/* HF "gelu" = the exact erf form, not the tanh approximation. */
static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static void attention(const struct bert_config *c, const float *q, const float *k,
                      const float *v, const uint8_t *attn, int L, double *p, float *ctx)
{
  int H = c->hidden, hd = c->hidden / c->heads;
  double scale = 1.0 / sqrt((double)hd);
  int any = 0;
  for (int j = 0; j < L; j++) any |= attn[j] != 0;
  for (int h = 0; h < c->heads; h++) {
    for (int i = 0; i < L; i++) {
      const float *qi = q + (size_t)i * H + h * hd;
      double mx = -DBL_MAX, sum = 0;
      for (int j = 0; j < L; j++) {
        if (any && !attn[j]) { p[j] = -INFINITY; continue; }
        const float *kj = k + (size_t)j * H + h * hd;
        double s = 0;
        for (int d = 0; d < hd; d++) s += (double)qi[d] * kj[d];
        p[j] = any ? s * scale : 0.0;   /* all masked: equal scores (see the top) */
        if (p[j] > mx) mx = p[j];
      }
      for (int j = 0; j < L; j++) {
        p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - mx);
        sum += p[j];
      }
      float *out = ctx + (size_t)i * H + h * hd;
      for (int d = 0; d < hd; d++) {
        double s = 0;
        for (int j = 0; j < L; j++) s += p[j] * v[(size_t)j * H + h * hd + d];
        out[d] = (float)(s / sum);
      }
    }
  }
}

static void forward_one(const struct bert_weights *w, const int32_t *ids, const uint8_t *attn,
                        int L, struct ref_ws *ws, float *out)
{
  const struct bert_config *c = &w->cfg;
  int H = c->hidden, I = c->intermediate;

  for (int i = 0; i < L; i++) {
    float *xi = ws->x + (size_t)i * H;
    const float *we = w->word_emb + (size_t)ids[i] * H, *pe = w->pos_emb + (size_t)i * H;
    for (int d = 0; d < H; d++) xi[d] = we[d] + pe[d] + w->type_emb[d];   /* token type 0 */
    layernorm(xi, H, w->emb_ln_g, w->emb_ln_b, c->layer_norm_eps);
  }
  for (int l = 0; l < c->layers; l++) {
    const struct bert_layer_weights *lw = &w->layer[l];
    linear(ws->x, L, H, lw->q_w, lw->q_b, H, ws->q);
    linear(ws->x, L, H, lw->k_w, lw->k_b, H, ws->k);
    linear(ws->x, L, H, lw->v_w, lw->v_b, H, ws->v);
    attention(c, ws->q, ws->k, ws->v, attn, L, ws->p, ws->ctx);
    linear(ws->ctx, L, H, lw->ao_w, lw->ao_b, H, ws->tmp);
    for (int i = 0; i < L; i++) {
      float *xi = ws->x + (size_t)i * H, *ti = ws->tmp + (size_t)i * H;
      for (int d = 0; d < H; d++) xi[d] += ti[d];
      layernorm(xi, H, lw->ln1_g, lw->ln1_b, c->layer_norm_eps);
    }
    linear(ws->x, L, H, lw->i_w, lw->i_b, I, ws->inter);
    for (size_t e = 0; e < (size_t)L * I; e++) ws->inter[e] = gelu(ws->inter[e]);
    linear(ws->inter, L, I, lw->o_w, lw->o_b, H, ws->tmp);
    for (int i = 0; i < L; i++) {
      float *xi = ws->x + (size_t)i * H, *ti = ws->tmp + (size_t)i * H;
      for (int d = 0; d < H; d++) xi[d] += ti[d];
      layernorm(xi, H, lw->ln2_g, lw->ln2_b, c->layer_norm_eps);
    }
  }
  linear(ws->x, L, H, w->proj_w, NULL, c->out_dim, out);
  for (int i = 0; i < L; i++) {
    float *y = out + (size_t)i * c->out_dim;
    double n2 = 0;
    for (int d = 0; d < c->out_dim; d++) n2 += (double)y[d] * y[d];
    /* torch.nn.functional.normalize: divide by max(norm, 1e-12). */
    double inv = 1.0 / fmax(sqrt(n2), 1e-12);
    for (int d = 0; d < c->out_dim; d++) y[d] = (float)(y[d] * inv);
  }
}

int bert_forward_ref(const struct bert_weights *w, const int32_t *ids, const uint8_t *attn,
                     int B, int L, float *out)
{
  const struct bert_config *c = &w->cfg;
  struct ref_ws ws;
  int rc = 0;

  if (B <= 0 || L <= 0 || L > c->max_position)
    return jp_err(JP_EINVAL, "bert_forward_ref: batch %dx%d outside 1..%d positions", B, L,
                  c->max_position);
  if (c->heads <= 0 || c->hidden % c->heads != 0)
    return jp_err(JP_EINVAL, "bert_forward_ref: hidden %d not divisible by %d heads", c->hidden,
                  c->heads);
  for (size_t i = 0; i < (size_t)B * L; i++)
    if (ids[i] < 0 || ids[i] >= c->vocab_size)
      return jp_err(JP_EINVAL, "bert_forward_ref: token id %d outside the vocabulary (%d)",
                    ids[i], c->vocab_size);

  size_t LH = (size_t)L * c->hidden;
  memset(&ws, 0, sizeof ws);
  ws.x = jp_malloc(LH * sizeof(float));
  ws.q = jp_malloc(LH * sizeof(float));
  ws.k = jp_malloc(LH * sizeof(float));
  ws.v = jp_malloc(LH * sizeof(float));
  ws.ctx = jp_malloc(LH * sizeof(float));
  ws.tmp = jp_malloc(LH * sizeof(float));
  ws.inter = jp_malloc((size_t)L * c->intermediate * sizeof(float));
  ws.p = jp_malloc((size_t)L * sizeof(double));
  if (!ws.x || !ws.q || !ws.k || !ws.v || !ws.ctx || !ws.tmp || !ws.inter || !ws.p) {
    rc = JP_ENOMEM;
    goto out;
  }
  for (int b = 0; b < B; b++)
    forward_one(w, ids + (size_t)b * L, attn + (size_t)b * L, L, &ws,
                out + (size_t)b * L * c->out_dim);
out:
  jp_free(ws.x);
  jp_free(ws.q);
  jp_free(ws.k);
  jp_free(ws.v);
  jp_free(ws.ctx);
  jp_free(ws.tmp);
  jp_free(ws.inter);
  jp_free(ws.p);
  return rc;
}
