/* encoder.c: jp_encoder -- texts (or token sequences) to ColBERT vectors
 * (model.h; plaid.md §1.3-1.4).
 *
 * Batching: inputs are taken in groups of ENC_GROUP, tokenised, sorted by
 * length (longest first) and cut into batches padded only to the longest
 * sequence of each batch, with B * L <= max_tokens -- ColBERT's
 * _sort_by_length, so a short document never pays for a long one's padding.
 * Outputs are scattered back in input order. Sorting within a group rather
 * than over all inputs keeps the buffers a fixed size (allocated once at
 * create) while groups of 256 already pack batches nearly perfectly.
 *
 * Padding positions get [PAD] and attention 0, so they change nothing for
 * the real tokens: a sequence encodes the same alone or in any batch (up to
 * the backend's summation order).
 *
 * Thread-safety: one encoder per thread. Allocation: jp_encoder_create
 * only; encoding writes into caller buffers. On an error, outputs already
 * written for earlier inputs are left in place. */
#include "model/model_int.h"

#include "util/err.h"
#include "util/mem.h"

#include <stdio.h>
#include <string.h>

/* Inputs sorted and batched together; see the top comment. 256 documents of
 * doc_maxlen 256 take 320 kB of token buffers. */
#define ENC_GROUP 256

struct enc_item {
  const int32_t *ids;
  const uint8_t *attn;    /* NULL: every one of the len positions is attended */
  const uint8_t *keep;    /* NULL: every position is output */
  int len;
  size_t out_off;         /* index of the item's first output vector */
};

struct jp_encoder {
  jp_model *m;
  jp_tok_ctx *tc;
  struct bert_backend *be;
  int max_tokens;           /* B*L budget of one forward call */
  int dim;
  int seq_cap;              /* longest tokenised text: max(query_maxlen, doc_maxlen) */
  int max_seq;              /* longest sequence the model accepts (positions) */
  int32_t pad_id;
  int32_t *g_ids;           /* [ENC_GROUP][seq_cap] tokenised texts of a group */
  uint8_t *g_mask;          /* [ENC_GROUP][seq_cap] */
  struct enc_item items[ENC_GROUP];
  int order[ENC_GROUP];
  int32_t *b_ids;           /* [max_tokens] one padded batch */
  uint8_t *b_attn;          /* [max_tokens] */
  float *b_out;             /* [max_tokens][dim] */
};

void jp_encoder_destroy(jp_encoder *e)
{
  if (!e) return;
  bert_backend_destroy(e->be);
  jp_tok_ctx_destroy(e->tc);
  jp_free(e->g_ids);
  jp_free(e->g_mask);
  jp_free(e->b_ids);
  jp_free(e->b_attn);
  jp_aligned_free(e->b_out);
  jp_free(e);
}

int jp_encoder_create(jp_model *m, jp_encoder **out)
{
  jp_encoder *e;
  int rc;

  *out = NULL;
  e = jp_calloc(1, sizeof *e);
  if (!e) return JP_ENOMEM;
  e->m = m;
  e->dim = m->info.colbert.dim;
  e->seq_cap = m->max_len;
  e->max_seq = m->info.kind == JP_MODEL_BERT ? m->w.cfg.max_position : JP_MODEL_STATIC_MAX_LEN;
  e->max_tokens = m->opts.max_batch_tokens ? m->opts.max_batch_tokens
                                           : JP_MODEL_DEFAULT_BATCH_TOKENS;
  /* One full-length text must always fit in a call. */
  if (e->max_tokens < e->seq_cap) e->max_tokens = e->seq_cap;
  e->pad_id = jp_vocab_special(jp_tok_vocab(m->tok))->pad;

  rc = jp_tok_ctx_create(m->tok, &e->tc);
  if (rc) goto fail;
  rc = model__backend_create(m, e->max_tokens, &e->be);
  if (rc) goto fail;
  e->g_ids = jp_malloc((size_t)ENC_GROUP * e->seq_cap * sizeof *e->g_ids);
  e->g_mask = jp_malloc((size_t)ENC_GROUP * e->seq_cap);
  e->b_ids = jp_malloc((size_t)e->max_tokens * sizeof *e->b_ids);
  e->b_attn = jp_malloc((size_t)e->max_tokens);
  e->b_out = jp_aligned_alloc((size_t)e->max_tokens * e->dim * sizeof *e->b_out);
  if (!e->g_ids || !e->g_mask || !e->b_ids || !e->b_attn || !e->b_out) {
    rc = JP_ENOMEM;
    goto fail;
  }
  *out = e;
  return 0;
fail:
  jp_encoder_destroy(e);
  return rc;
}

jp_tok_ctx *jp_encoder_tok(jp_encoder *e) { return e->tc; }

/* Prefix "what i: " to the current error detail. */
static int annotate(int rc, const char *what, int i)
{
  char msg[400];
  snprintf(msg, sizeof msg, "%s", jp_errmsg(rc));
  return jp_err(rc, "%s %d: %s", what, i, msg);
}

/* Encodes items[0..n) into out (vectors at each item's out_off). */
static int encode_group(jp_encoder *e, int n, float *out)
{
  struct enc_item *it = e->items;
  int *ord = e->order;

  /* Longest first, ties in input order: insertion sort, n <= ENC_GROUP, and
   * deterministic (the batches, hence the sums, do not depend on qsort). */
  for (int i = 0; i < n; i++) {
    int j = i;
    while (j > 0 && it[ord[j - 1]].len < it[i].len) {
      ord[j] = ord[j - 1];
      j--;
    }
    ord[j] = i;
  }
  for (int i = 0; i < n;) {
    int L = it[ord[i]].len, B = e->max_tokens / L;
    if (B > n - i) B = n - i;
    for (int b = 0; b < B; b++) {
      const struct enc_item *x = &it[ord[i + b]];
      int32_t *ids = e->b_ids + (size_t)b * L;
      uint8_t *at = e->b_attn + (size_t)b * L;
      memcpy(ids, x->ids, (size_t)x->len * sizeof *ids);
      if (x->attn) memcpy(at, x->attn, (size_t)x->len);
      else memset(at, 1, (size_t)x->len);
      for (int p = x->len; p < L; p++) {
        ids[p] = e->pad_id;
        at[p] = 0;
      }
    }
    int rc = e->be->forward(e->be, e->b_ids, e->b_attn, B, L, e->b_out);
    if (rc) return rc;
    for (int b = 0; b < B; b++) {
      const struct enc_item *x = &it[ord[i + b]];
      const float *src = e->b_out + (size_t)b * L * e->dim;
      float *dst = out + x->out_off * e->dim;
      for (int p = 0; p < x->len; p++, src += e->dim) {
        if (x->keep && !x->keep[p]) continue;
        memcpy(dst, src, (size_t)e->dim * sizeof *dst);
        dst += e->dim;
      }
    }
    i += B;
  }
  return 0;
}

int jp_encode_queries(jp_encoder *e, const char *const *texts, const size_t *lens, int n,
                      float *out)
{
  int qml = e->m->info.colbert.query_maxlen;
  if (n < 0 || (n && (!texts || !out))) return jp_err(JP_EINVAL, "jp_encode_queries: bad arguments");
  for (int g = 0; g < n; g += ENC_GROUP) {
    int k = n - g < ENC_GROUP ? n - g : ENC_GROUP;
    for (int j = 0; j < k; j++) {
      const char *t = texts[g + j];
      int32_t *ids = e->g_ids + (size_t)j * e->seq_cap;
      uint8_t *attn = e->g_mask + (size_t)j * e->seq_cap;
      if (!t) return jp_err(JP_EINVAL, "query %d: NULL text", g + j);
      int rc = jp_tok_query(e->tc, t, lens ? lens[g + j] : strlen(t), ids, attn, NULL);
      if (rc) return annotate(rc, "query", g + j);
      e->items[j] = (struct enc_item){ids, attn, NULL, qml, (size_t)(g + j) * qml};
    }
    int rc = encode_group(e, k, out);
    if (rc) return rc;
  }
  return 0;
}

int jp_encode_docs(jp_encoder *e, const char *const *texts, const size_t *lens, int n,
                   float *out, size_t cap_vecs, int32_t *doclens)
{
  size_t total = 0;
  if (n < 0 || (n && (!texts || !out || !doclens)))
    return jp_err(JP_EINVAL, "jp_encode_docs: bad arguments");
  for (int g = 0; g < n; g += ENC_GROUP) {
    int k = n - g < ENC_GROUP ? n - g : ENC_GROUP;
    for (int j = 0; j < k; j++) {
      const char *t = texts[g + j];
      int32_t *ids = e->g_ids + (size_t)j * e->seq_cap;
      uint8_t *keep = e->g_mask + (size_t)j * e->seq_cap;
      int len = 0, kept = 0;
      if (!t) return jp_err(JP_EINVAL, "document %d: NULL text", g + j);
      int rc = jp_tok_doc(e->tc, t, lens ? lens[g + j] : strlen(t), ids, keep, &len, NULL);
      if (rc) return annotate(rc, "document", g + j);
      for (int p = 0; p < len; p++) kept += keep[p] != 0;
      if (total + (size_t)kept > cap_vecs)
        return jp_err(JP_ETOOBIG, "document %d: output capacity of %zu vectors is too small",
                      g + j, cap_vecs);
      e->items[j] = (struct enc_item){ids, NULL, keep, len, total};
      doclens[g + j] = kept;
      total += (size_t)kept;
    }
    int rc = encode_group(e, k, out);
    if (rc) return rc;
  }
  return 0;
}

int jp_encode_seqs(jp_encoder *e, int is_query, const struct jp_token_seq *seqs, int n,
                   float *out, size_t cap_vecs, int32_t *out_lens)
{
  int vocab = e->m->info.bert.vocab_size;
  size_t total = 0;

  if (n < 0 || (n && (!seqs || !out))) return jp_err(JP_EINVAL, "jp_encode_seqs: bad arguments");
  /* Validate everything first: nothing is written for a bad request. */
  for (int i = 0; i < n; i++) {
    const struct jp_token_seq *s = &seqs[i];
    if (!s->ids || s->len < 1 || s->len > e->max_seq)
      return jp_err(JP_EINVAL, "sequence %d: length %d outside 1..%d", i, s->len, e->max_seq);
    if (s->len > e->max_tokens)
      return jp_err(JP_ETOOBIG, "sequence %d: %d tokens exceed the batch budget of %d", i,
                    s->len, e->max_tokens);
    for (int p = 0; p < s->len; p++)
      if (s->ids[p] < 0 || s->ids[p] >= vocab)
        return jp_err(JP_EINVAL, "sequence %d: token id %d at %d outside the vocabulary (%d)",
                      i, s->ids[p], p, vocab);
    int cnt = s->len;
    if (!is_query && s->mask) {
      cnt = 0;
      for (int p = 0; p < s->len; p++) cnt += s->mask[p] != 0;
    }
    total += (size_t)cnt;
  }
  if (total > cap_vecs)
    return jp_err(JP_ETOOBIG, "output needs %zu vectors, capacity is %zu", total, cap_vecs);

  total = 0;
  for (int g = 0; g < n; g += ENC_GROUP) {
    int k = n - g < ENC_GROUP ? n - g : ENC_GROUP;
    for (int j = 0; j < k; j++) {
      const struct jp_token_seq *s = &seqs[g + j];
      int cnt = s->len;
      if (!is_query && s->mask) {
        cnt = 0;
        for (int p = 0; p < s->len; p++) cnt += s->mask[p] != 0;
      }
      e->items[j] = (struct enc_item){s->ids, is_query ? s->mask : NULL,
                                      is_query ? NULL : s->mask, s->len, total};
      if (out_lens) out_lens[g + j] = cnt;
      total += (size_t)cnt;
    }
    int rc = encode_group(e, k, out);
    if (rc) return rc;
  }
  return 0;
}
