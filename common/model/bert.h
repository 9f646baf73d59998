/* bert.h: the BERT encoder + ColBERT head, as plain weights and a forward
 * pass (shared/reference/model.md §1, §5).
 *
 * Layer math (post-LN BERT): x = LN(word[id] + pos[i] + type[0]); per layer
 * q,k,v = x W^T + b; scores = q k^T / sqrt(head_dim), masked where attention
 * is 0; softmax; ctx W_o^T + b; x = LN(x + that); h = GELU_erf(x W_i^T + b);
 * x = LN(x + h W_out^T + b). Then y = x W_proj^T (no bias), L2-normalised
 * per token (zero rows stay zero).
 *
 * Weights are float32, row-major, PyTorch layout ([out, in] for linear
 * layers). They are either views into an mmapped F32 checkpoint (zero copy)
 * or buffers converted from F16/BF16; bert_weights itself owns nothing.
 *
 * Backends (CPU here, CUDA in cuda/) implement the same forward. */
#ifndef JP_BERT_H
#define JP_BERT_H
#include <stdint.h>

#include "util/pool.h"

struct bert_config {
  int vocab_size;          /* 32768 for bert-base-japanese-v3 */
  int hidden;              /* 768 */
  int layers;              /* 12 */
  int heads;               /* 12 (head dim = hidden / heads) */
  int intermediate;        /* 3072 */
  int max_position;        /* 512 */
  int type_vocab;          /* 2 */
  float layer_norm_eps;    /* 1e-12 */
  int out_dim;             /* ColBERT projection width, 128 */
};

struct bert_layer_weights {
  const float *q_w, *q_b;        /* [hidden, hidden], [hidden] */
  const float *k_w, *k_b;
  const float *v_w, *v_b;
  const float *ao_w, *ao_b;      /* attention.output.dense */
  const float *ln1_g, *ln1_b;    /* attention.output.LayerNorm */
  const float *i_w, *i_b;        /* intermediate.dense [intermediate, hidden] */
  const float *o_w, *o_b;        /* output.dense [hidden, intermediate] */
  const float *ln2_g, *ln2_b;    /* output.LayerNorm */
};

struct bert_weights {
  struct bert_config cfg;
  const float *word_emb;         /* [vocab, hidden] */
  const float *pos_emb;          /* [max_position, hidden] */
  const float *type_emb;         /* [type_vocab, hidden] */
  const float *emb_ln_g, *emb_ln_b;
  struct bert_layer_weights *layer;   /* [layers] */
  const float *proj_w;           /* linear.weight [out_dim, hidden] */
};

/* A forward pass for a batch: ids and attn are [B, L] row-major (attn 1 =
 * attended, 0 = padding or unattended [MASK]); out is [B, L, out_dim],
 * L2-normalised rows. Rows at positions with attn 0 are still computed
 * (query [MASK] augmentation needs them). */
struct bert_backend {
  const char *name;              /* "cpu", "cuda" */
  int max_tokens;                /* B*L limit of one call */
  int (*forward)(struct bert_backend *be, const int32_t *ids, const uint8_t *attn, int B, int L,
                 float *out);
  void (*destroy)(struct bert_backend *be);
};

/* CPU backend over OpenBLAS + the pool (NULL pool = single thread). It
 * allocates its workspace once, for max_tokens tokens per call and
 * sequences up to cfg.max_position; forward() then allocates nothing.
 * Callers with more tokens split the batch. The weights must outlive it. */
int bert_cpu_create(const struct bert_weights *w, int max_tokens, jp_pool *pool,
                    struct bert_backend **out);

/* Scalar reference forward (plain loops, no BLAS, no threads): the oracle
 * for kernel tests. out as above. Slow: tests use tiny models. */
int bert_forward_ref(const struct bert_weights *w, const int32_t *ids, const uint8_t *attn,
                     int B, int L, float *out);

static inline void bert_backend_destroy(struct bert_backend *be)
{
  if (be) be->destroy(be);
}

#endif /* JP_BERT_H */
