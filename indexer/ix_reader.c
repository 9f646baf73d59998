/* ix_reader.c: a rank's byte range of the corpus in batches of documents,
 * split into passages exactly as build.c splits them (ix.h).
 *
 * Same settings as build.c: passages of at most max_document_length - 3
 * tokens, overlap min(64, max / 4), a document that yields no span is one
 * passage of its whole text, and --no-split truncates to the same number
 * of tokens (only when that is below the model's doc_maxlen). Documents
 * are split on the pool, one tokenizer context per worker, IX_READ_BATCH
 * at a time; encoding goes through the same jp_encode_docs batches of 64.
 *
 * Unlike build.c's reader this one does not check for repeated ids (the
 * scan does that across ranks) and does not decide what a failed split
 * means (the scan does): it numbers every document the corpus reader
 * returns (its ordinal in the range) and lets a callback choose which
 * documents to split and deliver, so later passes split only what they
 * need.
 *
 * Thread-safety: one reader per thread. Allocation: the arena and the
 * splitter's spans, freed at the next batch or on close. */
#include "ix.h"

#include "util/err.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/mem.h"

#include <string.h>

void ix_range(const struct ix_ctx *c, uint64_t *begin, uint64_t *end)
{
  /* Equal byte shares (the first size % R ranks one byte more); the
   * corpus reader moves each boundary to the next line start, so every
   * line belongs to exactly one rank. */
  uint64_t q = c->corpus_size / (uint64_t)c->size, rem = c->corpus_size % (uint64_t)c->size;
  uint64_t r = (uint64_t)c->rank;
  *begin = r * q + (r < rem ? r : rem);
  *end = *begin + q + (r < rem ? 1 : 0);
}

static void clear_batch(struct ix_reader *r)
{
  for (int i = 0; i < r->n; i++) {
    jp_free(r->docs[i].spans);
    r->docs[i].spans = NULL;
  }
  r->n = 0;
  jp_arena_reset(&r->arena);
}

void ix_reader_close(struct ix_reader *r)
{
  clear_batch(r);
  jp_corpus_close(r->corpus);
  for (int i = 0; i < r->n_tok; i++) {
    jp_tok_ctx_destroy(r->tok[i]);
    if (r->ids_scratch) jp_free(r->ids_scratch[i]);
    if (r->off_scratch) jp_free(r->off_scratch[i]);
  }
  jp_free(r->tok);
  jp_free(r->ids_scratch);
  jp_free(r->off_scratch);
  jp_arena_fini(&r->arena);
  memset(r, 0, sizeof *r);
}

int ix_reader_open(struct ix_reader *r, struct ix_ctx *c, ix_want_fn want, void *want_ctx)
{
  struct jp_corpus_opts co;
  const jp_tok *tok = jp_model_tokenizer(c->model);
  uint64_t begin, end;
  int rc;

  memset(r, 0, sizeof *r);
  jp_arena_init(&r->arena, 0, 0);
  r->c = c;
  r->want = want;
  r->want_ctx = want_ctx;
  r->n_tok = jp_pool_size(c->pool);
  r->tok = jp_calloc((size_t)r->n_tok, sizeof *r->tok);
  if (!r->tok) {
    r->n_tok = 0;
    rc = JP_ENOMEM;
    goto fail;
  }
  if (c->truncate) {
    r->ids_scratch = jp_calloc((size_t)r->n_tok, sizeof *r->ids_scratch);
    r->off_scratch = jp_calloc((size_t)r->n_tok, sizeof *r->off_scratch);
    if (!r->ids_scratch || !r->off_scratch) {
      rc = JP_ENOMEM;
      goto fail;
    }
  }
  for (int i = 0; i < r->n_tok; i++) {
    if ((rc = jp_tok_ctx_create(tok, &r->tok[i])) < 0) goto fail;
    if (c->truncate) {
      r->ids_scratch[i] = jp_malloc(((size_t)c->max_tokens + 1) * sizeof **r->ids_scratch);
      r->off_scratch[i] = jp_malloc(((size_t)c->max_tokens + 1) * sizeof **r->off_scratch);
      if (!r->ids_scratch[i] || !r->off_scratch[i]) {
        rc = JP_ENOMEM;
        goto fail;
      }
    }
  }
  ix_range(c, &begin, &end);
  if (begin >= end) return 0;     /* an empty share (more ranks than bytes): no reader */
  memset(&co, 0, sizeof co);
  co.skip_bad = c->o.skip_bad;
  co.begin = begin;
  co.end = c->rank == c->size - 1 ? 0 : end;
  if ((rc = jp_corpus_open(c->o.corpus, &co, &r->corpus)) < 0) goto fail;
  return 0;
fail:
  ix_reader_close(r);
  return rc;
}

static void split_one(void *ctx, int i, int worker)
{
  struct ix_reader *r = ctx;
  struct ix_ctx *c = r->c;
  struct ix_rdoc *d = &r->docs[i];
  int overlap = c->max_tokens / 4 < IX_SPLIT_OVERLAP_MAX ? c->max_tokens / 4 : IX_SPLIT_OVERLAP_MAX;
  d->rc = 0;
  d->spans = NULL;
  d->n_spans = 0;
  d->enc_len = d->text_len;
  if (c->split) {
    d->rc = jp_split_passages(r->tok[worker], d->text, d->text_len, c->max_tokens, overlap,
                              &d->spans, &d->n_spans);
    if (d->rc == 0 && d->n_spans == 0) {   /* keep every document findable (as build.c) */
      jp_free(d->spans);
      d->spans = NULL;
    }
  } else if (c->truncate) {
    size_t n = 0;
    d->rc = jp_tok_ids(r->tok[worker], d->text, d->text_len, r->ids_scratch[worker],
                       (size_t)c->max_tokens + 1, &n, r->off_scratch[worker]);
    if (d->rc == 0 && n > (size_t)c->max_tokens) d->enc_len = r->off_scratch[worker][c->max_tokens];
  }
  if (d->rc < 0) {
    snprintf(d->err, sizeof d->err, "%s", jp_errmsg(d->rc));
    jp_free(d->spans);
    d->spans = NULL;
  }
}

int ix_reader_next(struct ix_reader *r)
{
  struct jp_corpus_doc cd;
  int rc = 0, level;

  clear_batch(r);
  if (!r->corpus) return 0;
  /* The corpus reader warns about every bad line it skips; the scan has
   * reported them, so later passes read at error level. The pool is idle
   * while we read, so no worker logs during the switch. */
  level = jp_log_get_level();
  if (r->quiet_bad && (level == JP_LOG_LEVEL_WARN || level == JP_LOG_LEVEL_INFO))
    jp_log_set_level(JP_LOG_LEVEL_ERROR);
  while (r->n < IX_READ_BATCH) {
    struct ix_rdoc *d = &r->docs[r->n];
    uint64_t user = 0;
    if ((rc = jp_corpus_next(r->corpus, &cd)) <= 0) break;
    memset(d, 0, sizeof *d);
    d->ord = r->next_ord++;
    d->id = cd.id;
    d->id_len = cd.id_len;
    d->text = cd.text;
    d->text_len = cd.text_len;
    d->meta = cd.metadata_json;
    d->line = cd.line;
    d->part = jp_route_partition(cd.id, cd.id_len, (uint32_t)r->c->o.partitions);
    if ((rc = r->want(r->want_ctx, d, &user)) < 0) break;
    if (rc == 0) continue;
    /* The corpus record lives until the next read: keep copies. */
    d->user = user;
    d->id = jp_arena_strndup(&r->arena, cd.id, cd.id_len);
    d->text = jp_arena_strndup(&r->arena, cd.text, cd.text_len);
    d->meta = cd.metadata_json ? jp_arena_strndup(&r->arena, cd.metadata_json,
                                                  strlen(cd.metadata_json)) : NULL;
    if (!d->id || !d->text || (cd.metadata_json && !d->meta)) {
      rc = JP_ENOMEM;
      break;
    }
    r->n++;
  }
  jp_log_set_level(level);
  if (rc < 0) return rc;
  if (r->n == 0) return 0;
  jp_pool_run(r->c->pool, r->n, split_one, r);
  for (int i = 0; i < r->n; i++)
    if (r->docs[i].rc == JP_ENOMEM) return JP_ENOMEM;
  return r->n;
}

int ix_doc_passages(const struct ix_rdoc *d)
{
  return d->spans ? d->n_spans : 1;
}

void ix_doc_passage(const struct ix_rdoc *d, int j, const char **content, size_t *content_len,
                    size_t *enc_len)
{
  if (d->spans) {
    *content = d->text + d->spans[j].off;
    *content_len = d->spans[j].len;
    *enc_len = d->spans[j].len;
  } else {
    *content = d->text;
    *content_len = d->text_len;
    *enc_len = d->enc_len;
  }
}

/* ---- encoding ------------------------------------------------------------------------ */

int ix_encoder_init(struct ix_encoder *en, jp_model *m)
{
  const struct jp_model_info *info = jp_model_get_info(m);
  int rc;
  memset(en, 0, sizeof *en);
  en->dim = info->colbert.dim;
  en->doc_maxlen = info->colbert.doc_maxlen;
  if ((rc = jp_encoder_create(m, &en->e)) < 0) return rc;
  en->out = jp_malloc((size_t)IX_ENC_BATCH * (size_t)en->doc_maxlen * (size_t)en->dim *
                      sizeof *en->out);
  en->doclens = jp_malloc(IX_ENC_BATCH * sizeof *en->doclens);
  if (!en->out || !en->doclens) return JP_ENOMEM;
  return 0;
}

void ix_encoder_fini(struct ix_encoder *en)
{
  jp_encoder_destroy(en->e);
  jp_free(en->out);
  jp_free(en->doclens);
  memset(en, 0, sizeof *en);
}

static int vecs_append(struct ix_vecs *s, const float *x, size_t n)
{
  size_t cap_f = s->cap * (size_t)s->dim;
  int rc;
  if (s->n + n > s->cap) {
    if ((rc = jp_grow((void **)&s->v, &cap_f, (s->n + n) * (size_t)s->dim, sizeof *s->v, 0)) < 0)
      return rc;
    s->cap = cap_f / (size_t)s->dim;
  }
  memcpy(s->v + s->n * (size_t)s->dim, x, n * (size_t)s->dim * sizeof *x);
  s->n += n;
  return 0;
}

int ix_encode_texts(struct ix_encoder *en, const char *const *texts, const size_t *lens, int n,
                    struct ix_vecs *vs, int32_t *doclens)
{
  int rc;
  for (int g = 0; g < n; g += IX_ENC_BATCH) {
    int k = n - g < IX_ENC_BATCH ? n - g : IX_ENC_BATCH;
    size_t tot = 0;
    if ((rc = jp_encode_docs(en->e, texts + g, lens + g, k, en->out,
                             (size_t)IX_ENC_BATCH * (size_t)en->doc_maxlen, en->doclens)) < 0)
      return rc;
    for (int j = 0; j < k; j++) {
      doclens[g + j] = en->doclens[j];
      tot += (size_t)en->doclens[j];
    }
    if ((rc = vecs_append(vs, en->out, tot)) < 0) return rc;
  }
  return 0;
}
