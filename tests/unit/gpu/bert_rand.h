/* bert_rand.h: a random BERT (struct bert_weights) for the CUDA backend's
 * tests, and the comparison they share. Header-only: test code.
 *
 * Scales are chosen so every part of the network matters: linear weights
 * ~ N(0, 1/fan_in) keep activations near unit variance through each layer,
 * and the query weights get a gain so attention logits (q.k/sqrt(dh)) have a
 * standard deviation near 1.5, i.e. attention rows that are peaked but not
 * one-hot; masking or a head mix-up then changes the output visibly. */
#ifndef JP_TEST_BERT_RAND_H
#define JP_TEST_BERT_RAND_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/bert.h"
#include "util/hash.h"

struct rand_bert {
  struct bert_weights w;
  float *buf;                        /* all tensors, one allocation */
  struct bert_layer_weights *layers;
};

static inline float *rand_bert__fill(float **cur, size_t n, uint64_t *st, float mean, float sd)
{
  float *p = *cur;
  for (size_t i = 0; i < n; i++) p[i] = mean + sd * jp_randn(st);
  *cur += n;
  return p;
}

/* Fills rb; returns 0, or -1 when out of memory. */
static inline int rand_bert_make(struct rand_bert *rb, const struct bert_config *c,
                                 uint64_t seed)
{
  size_t H = (size_t)c->hidden, I = (size_t)c->intermediate;
  size_t per_layer = 4 * H * H + 4 * H + 2 * H + I * H + I + H * I + H + 2 * H;
  size_t n = (size_t)c->vocab_size * H + (size_t)c->max_position * H +
             (size_t)c->type_vocab * H + 2 * H + (size_t)c->layers * per_layer +
             (size_t)c->out_dim * H;
  memset(rb, 0, sizeof *rb);
  rb->buf = malloc(n * sizeof(float));
  rb->layers = calloc((size_t)c->layers, sizeof *rb->layers);
  if (!rb->buf || !rb->layers) {
    free(rb->buf);
    free(rb->layers);
    return -1;
  }
  uint64_t st = seed;
  float *cur = rb->buf;
  float wh = 1.0f / sqrtf((float)H), wi = 1.0f / sqrtf((float)I);
  /* Query gain: logits sd = gain * sqrt(dh) / sqrt(dh) ~ gain. */
  float qgain = 1.5f;
  rb->w.cfg = *c;
  rb->w.word_emb = rand_bert__fill(&cur, (size_t)c->vocab_size * H, &st, 0.0f, 0.5f);
  rb->w.pos_emb = rand_bert__fill(&cur, (size_t)c->max_position * H, &st, 0.0f, 0.5f);
  rb->w.type_emb = rand_bert__fill(&cur, (size_t)c->type_vocab * H, &st, 0.0f, 0.5f);
  rb->w.emb_ln_g = rand_bert__fill(&cur, H, &st, 1.0f, 0.1f);
  rb->w.emb_ln_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
  for (int l = 0; l < c->layers; l++) {
    struct bert_layer_weights *y = &rb->layers[l];
    y->q_w = rand_bert__fill(&cur, H * H, &st, 0.0f, qgain * wh);
    y->q_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
    y->k_w = rand_bert__fill(&cur, H * H, &st, 0.0f, wh);
    y->k_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
    y->v_w = rand_bert__fill(&cur, H * H, &st, 0.0f, wh);
    y->v_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
    y->ao_w = rand_bert__fill(&cur, H * H, &st, 0.0f, wh);
    y->ao_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
    y->ln1_g = rand_bert__fill(&cur, H, &st, 1.0f, 0.1f);
    y->ln1_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
    y->i_w = rand_bert__fill(&cur, I * H, &st, 0.0f, wh);
    y->i_b = rand_bert__fill(&cur, I, &st, 0.0f, 0.1f);
    y->o_w = rand_bert__fill(&cur, H * I, &st, 0.0f, wi);
    y->o_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
    y->ln2_g = rand_bert__fill(&cur, H, &st, 1.0f, 0.1f);
    y->ln2_b = rand_bert__fill(&cur, H, &st, 0.0f, 0.1f);
  }
  rb->w.layer = rb->layers;
  rb->w.proj_w = rand_bert__fill(&cur, (size_t)c->out_dim * H, &st, 0.0f, wh);
  return 0;
}

static inline void rand_bert_free(struct rand_bert *rb)
{
  free(rb->buf);
  free(rb->layers);
  memset(rb, 0, sizeof *rb);
}

/* A B x L batch: random ids in [7, vocab) (past the special ids), sequence b
 * attended for its first len[b] positions (len[b] <= L), then padding
 * (id 0, attn 0). len[b] == 0 gives an all-masked row (HF: uniform
 * attention), which the backends must reproduce too. */
static inline void rand_batch(int B, int L, const int *len, int vocab, uint64_t seed,
                              int32_t *ids, uint8_t *attn)
{
  uint64_t st = seed;
  for (int b = 0; b < B; b++)
    for (int i = 0; i < L; i++) {
      int real = i < len[b];
      ids[(size_t)b * L + i] = real ? 7 + (int32_t)(jp_rand64(&st) % (uint64_t)(vocab - 7)) : 0;
      attn[(size_t)b * L + i] = (uint8_t)real;
    }
}

/* Cosine of two vectors (0 if either is zero). */
static inline double vec_cosine(const float *a, const float *b, int d)
{
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < d; i++) {
    ab += (double)a[i] * b[i];
    aa += (double)a[i] * a[i];
    bb += (double)b[i] * b[i];
  }
  return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

/* Per-vector comparison of n vectors: the smallest cosine, the largest
 * absolute element difference and the largest deviation of a norm from 1. */
struct vec_cmp {
  double min_cos, max_abs, max_norm_err;
};

static inline struct vec_cmp vec_compare(const float *got, const float *want, size_t n, int d)
{
  struct vec_cmp r = { 1.0, 0.0, 0.0 };
  for (size_t v = 0; v < n; v++) {
    const float *g = got + v * d, *w = want + v * d;
    double c = vec_cosine(g, w, d), n2 = 0;
    if (c != c) c = -2.0;   /* NaN: worse than any real cosine */
    if (c < r.min_cos) r.min_cos = c;
    for (int i = 0; i < d; i++) {
      double e = fabs((double)g[i] - w[i]);
      if (e > r.max_abs || e != e) r.max_abs = e;
      n2 += (double)g[i] * g[i];
    }
    double ne = fabs(sqrt(n2) - 1.0);
    if (ne > r.max_norm_err || ne != ne) r.max_norm_err = ne;
  }
  return r;
}

#endif /* JP_TEST_BERT_RAND_H */
