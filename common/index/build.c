/* build.c: the single-process indexing pipeline and the add path (build.h).
 *
 * Documents are read in batches of READ_BATCH_DOCS: copied into an arena,
 * checked for repeated ids, split into passages on the pool (one tokenizer
 * context per worker), then encoded ENC_BATCH passages at a time. Every
 * pass of jp_index_build reads the corpus through the same batch reader,
 * so the three passes see exactly the same passages.
 *
 * Thread-safety: reentrant. Allocation: jp_malloc; all freed before
 * return. */
#include "index/build.h"

#include "index/codec.h"
#include "index/corpus.h"
#include "index/kmeans.h"
#include "index/store_int.h"   /* store__replaceable: the same rule as the publish step */
#include "text/split.h"
#include "text/tokenizer.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/progress.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

/* 64 documents per read batch: enough passages to fill a few encoder calls
 * and keep every splitting thread busy, small enough that one batch's
 * vectors stay in the low megabytes. */
#define READ_BATCH_DOCS 64
/* Passages per jp_encode_docs call: the encoder sorts by length and
 * batches internally; 64 amortises the call without a large output
 * buffer (64 x doc_maxlen vectors). */
#define ENC_BATCH 64
/* Held-out share for the residual buckets, as ColBERT:
 * int(min(0.05 * n, 50000)) sample vectors. */
#define HELDOUT_FRAC 0.05
#define HELDOUT_MAX 50000
/* Passage overlap when splitting: RAGatouille's min(64, max / 4). */
#define SPLIT_OVERLAP_MAX 64
/* ColBERT's k-means seed (faiss.Kmeans(..., seed=123)). */
#define BUILD_DEFAULT_SEED 123
/* Room for [CLS] [D] ... [SEP]. */
#define DOC_SPECIAL_TOKENS 3

void jp_index_build_opts_default(struct jp_index_build_opts *o)
{
  memset(o, 0, sizeof *o);
  o->seed = BUILD_DEFAULT_SEED;
}

int jp_split_settings_parse(const char *json, struct jp_split_settings *out)
{
  json_t *o;
  int64_t mdl = 0;
  int split = 1, rc;
  out->max_document_length = 0;
  out->split = 1;
  if (!json || !*json) return 0;
  if ((rc = jp_json_loadb(json, strlen(json), "index settings", &o)) < 0) return rc;
  if ((rc = jp_json_get_int(o, "max_document_length", 0, &mdl)) == 0)
    rc = jp_json_get_bool(o, "split", 1, &split);
  json_decref(o);
  if (rc < 0) return rc;
  if (mdl < 0 || mdl > INT_MAX) return jp_err(JP_EINVAL, "index settings: bad max_document_length");
  out->max_document_length = (int)mdl;
  out->split = split;
  return 0;
}

/* ---- document id set (repeated ids are bad lines) --------------------------------- */

/* 128-bit hashes: a false "repeated id" needs a 128-bit collision. */
struct idset {
  uint64_t *h;                  /* [cap][2] */
  uint64_t *line;               /* [cap]; 0 = empty (lines are >= 1) */
  size_t cap, n;
};

static void idset_fini(struct idset *s)
{
  jp_free(s->h);
  jp_free(s->line);
  memset(s, 0, sizeof *s);
}

static int idset_grow(struct idset *s)
{
  size_t cap = s->cap ? s->cap * 2 : 1024;
  uint64_t *h = jp_calloc(cap * 2, sizeof *h), *line = jp_calloc(cap, sizeof *line);
  if (!h || !line) { jp_free(h); jp_free(line); return JP_ENOMEM; }
  for (size_t i = 0; i < s->cap; i++) {
    size_t j;
    if (!s->line[i]) continue;
    for (j = s->h[2 * i] & (cap - 1); line[j]; j = (j + 1) & (cap - 1)) {}
    h[2 * j] = s->h[2 * i];
    h[2 * j + 1] = s->h[2 * i + 1];
    line[j] = s->line[i];
  }
  jp_free(s->h);
  jp_free(s->line);
  s->h = h;
  s->line = line;
  s->cap = cap;
  return 0;
}

/* 0 = new, 1 = seen before (*prev = its line), < 0 error. */
static int idset_add(struct idset *s, const char *id, size_t len, uint64_t line, uint64_t *prev)
{
  XXH128_hash_t x = XXH3_128bits(id, len);
  size_t j;
  int rc;
  if (2 * (s->n + 1) > s->cap && (rc = idset_grow(s)) < 0) return rc;   /* load <= 1/2 */
  for (j = x.low64 & (s->cap - 1); s->line[j]; j = (j + 1) & (s->cap - 1))
    if (s->h[2 * j] == x.low64 && s->h[2 * j + 1] == x.high64) {
      *prev = s->line[j];
      return 1;
    }
  s->h[2 * j] = x.low64;
  s->h[2 * j + 1] = x.high64;
  s->line[j] = line;
  s->n++;
  return 0;
}

/* ---- batch reader ------------------------------------------------------------------------ */

struct bdoc {
  const char *id;
  size_t id_len;
  const char *text;
  size_t text_len;
  const char *meta;
  uint64_t line;
  struct jp_span *spans;        /* content spans (jp_malloc'd by the splitter) */
  int n_spans;
  size_t enc_len;               /* no-split: bytes of text that are encoded */
  int rc;                       /* splitting result, with its message: */
  char err[256];
};

struct reader {
  const char *path;
  jp_corpus *corpus;
  struct jp_arena arena;
  struct bdoc docs[READ_BATCH_DOCS];
  int n;
  jp_pool *pool;
  jp_tok_ctx **ctx;             /* one per pool worker */
  int32_t **ids_scratch;        /* no-split truncation: per worker */
  uint32_t **off_scratch;
  int n_ctx;
  int split, max_tokens, overlap, truncate;
  int skip_bad;
  int quiet;                    /* a later pass: bad lines were already reported */
  struct idset ids;
  uint64_t bad;                 /* our own bad lines (repeated ids, untokenisable text) */
  uint64_t n_read;              /* documents delivered */
  int eof;
};

static void reader_clear_batch(struct reader *r)
{
  for (int i = 0; i < r->n; i++) jp_free(r->docs[i].spans);
  r->n = 0;
  jp_arena_reset(&r->arena);
}

static void reader_close(struct reader *r)
{
  reader_clear_batch(r);
  jp_corpus_close(r->corpus);
  for (int i = 0; i < r->n_ctx; i++) {
    jp_tok_ctx_destroy(r->ctx[i]);
    if (r->ids_scratch) jp_free(r->ids_scratch[i]);
    if (r->off_scratch) jp_free(r->off_scratch[i]);
  }
  jp_free(r->ctx);
  jp_free(r->ids_scratch);
  jp_free(r->off_scratch);
  jp_arena_fini(&r->arena);
  idset_fini(&r->ids);
  memset(r, 0, sizeof *r);
}

/* split: 1 = cut into passages of max_tokens; 0 = one passage, encoded up
 * to max_tokens (truncate = 1 when that is below the model's own limit). */
static int reader_open(struct reader *r, const char *path, int skip_bad, int quiet,
                       const jp_tok *tok, jp_pool *pool, int split, int max_tokens, int truncate)
{
  struct jp_corpus_opts co = {0};
  int rc;

  memset(r, 0, sizeof *r);
  jp_arena_init(&r->arena, 0, 0);
  r->path = path;
  r->pool = pool;
  r->split = split;
  r->max_tokens = max_tokens;
  r->overlap = max_tokens / 4 < SPLIT_OVERLAP_MAX ? max_tokens / 4 : SPLIT_OVERLAP_MAX;
  r->truncate = truncate;
  r->skip_bad = skip_bad;
  r->quiet = quiet;
  co.skip_bad = skip_bad;
  co.quiet = quiet;
  r->n_ctx = jp_pool_size(pool);
  r->ctx = jp_calloc((size_t)r->n_ctx, sizeof *r->ctx);
  if (!r->ctx) { r->n_ctx = 0; rc = JP_ENOMEM; goto fail; }
  if (truncate) {
    r->ids_scratch = jp_calloc((size_t)r->n_ctx, sizeof *r->ids_scratch);
    r->off_scratch = jp_calloc((size_t)r->n_ctx, sizeof *r->off_scratch);
    if (!r->ids_scratch || !r->off_scratch) { rc = JP_ENOMEM; goto fail; }
  }
  for (int i = 0; i < r->n_ctx; i++) {
    if ((rc = jp_tok_ctx_create(tok, &r->ctx[i])) < 0) goto fail;
    if (truncate) {
      r->ids_scratch[i] = jp_malloc(((size_t)max_tokens + 1) * sizeof **r->ids_scratch);
      r->off_scratch[i] = jp_malloc(((size_t)max_tokens + 1) * sizeof **r->off_scratch);
      if (!r->ids_scratch[i] || !r->off_scratch[i]) { rc = JP_ENOMEM; goto fail; }
    }
  }
  if ((rc = jp_corpus_open(path, &co, &r->corpus)) < 0) goto fail;
  return 0;
fail:
  reader_close(r);
  return rc;
}

static void split_one(void *ctx, int i, int worker)
{
  struct reader *r = ctx;
  struct bdoc *d = &r->docs[i];
  d->rc = 0;
  d->spans = NULL;
  d->n_spans = 0;
  d->enc_len = d->text_len;
  if (r->split) {
    d->rc = jp_split_passages(r->ctx[worker], d->text, d->text_len, r->max_tokens, r->overlap,
                              &d->spans, &d->n_spans);
  } else if (r->truncate) {
    size_t n = 0;
    d->rc = jp_tok_ids(r->ctx[worker], d->text, d->text_len, r->ids_scratch[worker],
                       (size_t)r->max_tokens + 1, &n, r->off_scratch[worker]);
    if (d->rc == 0 && n > (size_t)r->max_tokens) d->enc_len = r->off_scratch[worker][r->max_tokens];
  }
  if (d->rc < 0) snprintf(d->err, sizeof d->err, "%s", jp_errmsg(d->rc));
}

static int reader_bad(struct reader *r, int code, uint64_t line, const char *msg)
{
  if (!r->skip_bad || (code != JP_EINVAL && code != JP_ETOOBIG && code != JP_EEXISTS))
    return jp_err(code, "%s:%" PRIu64 ": %s", r->path, line, msg);
  r->bad++;
  if (!r->quiet) JP_LOG_WARN("%s:%" PRIu64 ": %s (line skipped)", r->path, line, msg);
  return 0;
}

static int reader_next_batch(struct reader *r);

/* Read, check and split the next batch. Returns the number of documents
 * (0 at the end), or an error. */
static int reader_next(struct reader *r)
{
  int rc;
  /* A batch whose every line was bad yields nothing: read the next one. */
  while ((rc = reader_next_batch(r)) == 0 && !r->eof) {}
  return rc;
}

static int reader_next_batch(struct reader *r)
{
  struct jp_corpus_doc cd;
  int rc, w = 0;

  reader_clear_batch(r);
  while (r->n < READ_BATCH_DOCS) {
    struct bdoc *d = &r->docs[r->n];
    uint64_t prev;
    char msg[300];
    if ((rc = jp_corpus_next(r->corpus, &cd)) < 0) return rc;
    if (rc == 0) {
      r->eof = 1;
      break;
    }
    if ((rc = idset_add(&r->ids, cd.id, cd.id_len, cd.line, &prev)) < 0) return rc;
    if (rc == 1) {
      snprintf(msg, sizeof msg, "document id '%.*s' was already used on line %" PRIu64,
               (int)(cd.id_len > 200 ? 200 : cd.id_len), cd.id, prev);
      if ((rc = reader_bad(r, JP_EEXISTS, cd.line, msg)) < 0) return rc;
      continue;
    }
    memset(d, 0, sizeof *d);
    d->id = jp_arena_strndup(&r->arena, cd.id, cd.id_len);
    d->text = jp_arena_strndup(&r->arena, cd.text, cd.text_len);
    d->meta = cd.metadata_json ? jp_arena_strndup(&r->arena, cd.metadata_json,
                                                  strlen(cd.metadata_json)) : NULL;
    if (!d->id || !d->text || (cd.metadata_json && !d->meta)) return JP_ENOMEM;
    d->id_len = cd.id_len;
    d->text_len = cd.text_len;
    d->line = cd.line;
    r->n++;
  }
  if (r->n == 0) return 0;
  jp_pool_run(r->pool, r->n, split_one, r);
  for (int i = 0; i < r->n; i++) {
    struct bdoc *d = &r->docs[i];
    if (d->rc < 0) {
      if (d->rc == JP_ENOMEM) return JP_ENOMEM;
      if ((rc = reader_bad(r, d->rc, d->line, d->err)) < 0) return rc;
      jp_free(d->spans);
      continue;
    }
    if (r->split && d->n_spans == 0) {      /* keep every document findable */
      jp_free(d->spans);
      d->spans = NULL;
    }
    r->docs[w++] = *d;
  }
  for (int i = w; i < r->n; i++) r->docs[i].spans = NULL;
  r->n = w;
  r->n_read += (uint64_t)w;
  return w;
}

/* Passages of document i: content span j (offset, length), and the bytes
 * to encode. */
static int doc_n_passages(const struct bdoc *d) { return d->spans ? d->n_spans : 1; }

static void doc_passage(const struct bdoc *d, int j, const char **content, size_t *content_len,
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

/* ---- encoding -------------------------------------------------------------------------------- */

struct encoder {
  jp_encoder *e;
  int dim, doc_maxlen;
  float *out;                   /* ENC_BATCH * doc_maxlen vectors */
  int32_t *doclens;
};

static int encoder_init(struct encoder *en, jp_model *m)
{
  const struct jp_model_info *info = jp_model_get_info(m);
  int rc;
  memset(en, 0, sizeof *en);
  en->dim = info->colbert.dim;
  en->doc_maxlen = info->colbert.doc_maxlen;
  if ((rc = jp_encoder_create(m, &en->e)) < 0) return rc;
  en->out = jp_malloc((size_t)ENC_BATCH * (size_t)en->doc_maxlen * (size_t)en->dim * sizeof(float));
  en->doclens = jp_malloc(ENC_BATCH * sizeof *en->doclens);
  if (!en->out || !en->doclens) return JP_ENOMEM;
  return 0;
}

static void encoder_fini(struct encoder *en)
{
  jp_encoder_destroy(en->e);
  jp_free(en->out);
  jp_free(en->doclens);
  memset(en, 0, sizeof *en);
}

/* Growable vector store: vectors appended back to back. */
struct vecs {
  float *v;
  size_t n, cap;                /* in vectors */
  int dim;
};

static int vecs_append(struct vecs *s, const float *x, size_t n)
{
  int rc;
  size_t cap_f = s->cap * (size_t)s->dim;
  if (s->n + n > s->cap) {
    if ((rc = jp_grow((void **)&s->v, &cap_f, (s->n + n) * (size_t)s->dim, sizeof *s->v, 0)) < 0)
      return rc;
    s->cap = cap_f / (size_t)s->dim;
  }
  memcpy(s->v + s->n * (size_t)s->dim, x, n * (size_t)s->dim * sizeof *x);
  s->n += n;
  return 0;
}

/* Encode n texts in ENC_BATCH chunks, appending the kept vectors to vs and
 * each text's count to doclens[n]. */
static int encode_texts(struct encoder *en, const char *const *texts, const size_t *lens, int n,
                        struct vecs *vs, int32_t *doclens)
{
  int rc;
  for (int g = 0; g < n; g += ENC_BATCH) {
    int k = n - g < ENC_BATCH ? n - g : ENC_BATCH;
    size_t tot = 0;
    if ((rc = jp_encode_docs(en->e, texts + g, lens + g, k, en->out,
                             (size_t)ENC_BATCH * (size_t)en->doc_maxlen, en->doclens)) < 0)
      return rc;
    for (int j = 0; j < k; j++) {
      doclens[g + j] = en->doclens[j];
      tot += (size_t)en->doclens[j];
    }
    if ((rc = vecs_append(vs, en->out, tot)) < 0) return rc;
  }
  return 0;
}

/* One batch of documents, encoded, as jp_doc_in records for the store. */
struct batch_out {
  struct vecs vs;
  const char **texts;           /* encode views */
  size_t *enc_lens;
  int32_t *doclens;
  struct jp_passage_in *pin;
  struct jp_doc_in din[READ_BATCH_DOCS];
  size_t cap;                   /* passages the arrays hold */
  int n_docs;
  size_t n_passages;
};

static void batch_out_fini(struct batch_out *b)
{
  jp_free(b->vs.v);
  jp_free(b->texts);
  jp_free(b->enc_lens);
  jp_free(b->doclens);
  jp_free(b->pin);
  memset(b, 0, sizeof *b);
}

static int encode_batch(struct reader *r, struct encoder *en, struct batch_out *b)
{
  size_t np = 0, p = 0, voff = 0;
  int rc;

  for (int i = 0; i < r->n; i++) np += (size_t)doc_n_passages(&r->docs[i]);
  if (np > b->cap) {
    jp_free(b->texts);
    jp_free(b->enc_lens);
    jp_free(b->doclens);
    jp_free(b->pin);
    b->texts = jp_malloc(np * sizeof *b->texts);
    b->enc_lens = jp_malloc(np * sizeof *b->enc_lens);
    b->doclens = jp_malloc(np * sizeof *b->doclens);
    b->pin = jp_malloc(np * sizeof *b->pin);
    b->cap = b->texts && b->enc_lens && b->doclens && b->pin ? np : 0;
    if (!b->cap) return JP_ENOMEM;
  }
  if (np > INT_MAX) return jp_err(JP_ETOOBIG, "too many passages in one batch");
  b->vs.dim = en->dim;
  b->vs.n = 0;
  for (int i = 0; i < r->n; i++)
    for (int j = 0; j < doc_n_passages(&r->docs[i]); j++, p++) {
      doc_passage(&r->docs[i], j, &b->pin[p].text, &b->pin[p].text_len, &b->enc_lens[p]);
      b->texts[p] = b->pin[p].text;
    }
  if ((rc = encode_texts(en, b->texts, b->enc_lens, (int)np, &b->vs, b->doclens)) < 0) return rc;
  p = 0;
  for (int i = 0; i < r->n; i++) {
    const struct bdoc *d = &r->docs[i];
    b->din[i].doc_id = d->id;
    b->din[i].doc_id_len = d->id_len;
    b->din[i].metadata_json = d->meta;
    b->din[i].passages = &b->pin[p];
    b->din[i].n_passages = doc_n_passages(d);
    for (int j = 0; j < doc_n_passages(d); j++, p++) {
      b->pin[p].vecs = b->vs.v + voff * (size_t)en->dim;
      b->pin[p].n_vecs = b->doclens[p];
      voff += (size_t)b->doclens[p];
    }
  }
  b->n_docs = r->n;
  b->n_passages = np;
  return 0;
}

/* ---- the build ---------------------------------------------------------------------------- */

struct kmeans_progress {
  struct jp_progress pr;
};

static void on_kmeans(void *ctx, int iter, int iters, double objective)
{
  struct kmeans_progress *kp = ctx;
  (void)iters;
  (void)objective;
  jp_progress_update(&kp->pr, (uint64_t)iter);
}

static double uniform01(uint64_t *st) { return (double)(jp_rand64(st) >> 11) * 0x1.0p-53; }

static void phase_line(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void phase_line(FILE *f, const char *fmt, ...)
{
  va_list ap;
  if (!f) return;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fflush(f);
}

struct build {
  const struct jp_index_build_opts *o;
  struct jp_index_build_report *rep;
  jp_model *model;
  const struct jp_model_info *info;
  jp_pool *pool;
  struct encoder en;
  int max_tokens, truncate, split;
  uint64_t n_passages, n_docs;
  struct vecs sample;           /* sampled vectors */
  struct jp_codec codec;
};

/* Pass 1 reports bad lines; the later passes only skip them again. */
static int open_reader(struct build *b, struct reader *r, int quiet)
{
  return reader_open(r, b->o->corpus_path, b->o->skip_bad, quiet, jp_model_tokenizer(b->model),
                     b->pool, b->split, b->max_tokens, b->truncate);
}

/* Pass 1: count documents and passages. */
static int pass_scan(struct build *b)
{
  struct reader r;
  struct jp_progress pr;
  struct stat st;
  int rc;

  if ((rc = open_reader(b, &r, 0)) < 0) return rc;
  jp_progress_init(&pr, b->o->progress, "scan", "bytes",
                   stat(b->o->corpus_path, &st) == 0 ? (uint64_t)st.st_size : 0);
  while ((rc = reader_next(&r)) > 0) {
    for (int i = 0; i < r.n; i++) {
      int np = doc_n_passages(&r.docs[i]);
      b->n_passages += (uint64_t)np;
      b->rep->n_split_docs += np > 1;
    }
    jp_progress_update(&pr, jp_corpus_bytes_read(r.corpus));
  }
  if (rc == 0) {
    jp_progress_finish(&pr);
    b->n_docs = r.n_read;
    b->rep->n_bad_lines = r.bad + jp_corpus_bad_lines(r.corpus);
  }
  reader_close(&r);
  return rc;
}

/* Pass 2: encode a seeded uniform sample of n_sample passages
 * (selection sampling: passage g is taken with probability need/left). */
static int pass_sample(struct build *b, uint64_t n_sample)
{
  struct reader r;
  struct jp_progress pr;
  uint64_t g = 0, taken = 0, st = b->o->seed ^ 0x5a6d706c65ull;   /* "Smple": own stream */
  const char *texts[READ_BATCH_DOCS * 4];
  size_t lens[READ_BATCH_DOCS * 4];
  int32_t doclens[READ_BATCH_DOCS * 4];
  int rc, nt = 0;

  b->sample.dim = b->en.dim;
  if ((rc = open_reader(b, &r, 1)) < 0) return rc;
  jp_progress_init(&pr, b->o->progress, "sample", "passages", n_sample);
  while ((rc = reader_next(&r)) > 0) {
    for (int i = 0; i < r.n && rc >= 0; i++)
      for (int j = 0; j < doc_n_passages(&r.docs[i]); j++, g++) {
        const char *content;
        size_t clen, elen;
        if (g >= b->n_passages) continue;   /* the file grew: counted, reported below */
        if (uniform01(&st) * (double)(b->n_passages - g) >= (double)(n_sample - taken)) continue;
        doc_passage(&r.docs[i], j, &content, &clen, &elen);
        texts[nt] = content;
        lens[nt] = elen;
        nt++;
        taken++;
        if (nt == (int)(sizeof texts / sizeof texts[0])) {
          if ((rc = encode_texts(&b->en, texts, lens, nt, &b->sample, doclens)) < 0) break;
          nt = 0;
        }
      }
    if (rc < 0) break;
    if (nt && (rc = encode_texts(&b->en, texts, lens, nt, &b->sample, doclens)) < 0) break;
    nt = 0;
    jp_progress_update(&pr, taken);
  }
  if (rc == 0) jp_progress_finish(&pr);
  reader_close(&r);
  if (rc < 0) return rc;
  if (g != b->n_passages)
    return jp_err(JP_EINVAL, "%s changed while it was being indexed (%" PRIu64 " passages, "
                  "then %" PRIu64 ")", b->o->corpus_path, b->n_passages, g);
  b->rep->n_sample = taken;
  return 0;
}

/* k-means on the sample minus a held-out part, then the codec's buckets
 * from the held-out residuals. */
static int train_codec(struct build *b, int nbits)
{
  size_t n = b->sample.n, dim = (size_t)b->en.dim, nh, nt;
  float *x = b->sample.v, *held, *train, *cent = NULL, *resid = NULL, *tmp = NULL;
  uint32_t *codes = NULL;
  uint64_t st = b->o->seed ^ 0x686f6c646f7574ull;   /* "holdout": own stream */
  struct kmeans_progress kp;
  struct jp_kmeans_opts ko;
  int k, k_out = 0, rc;
  double t0 = jp_now_s();

  if (n == 0)
    return jp_err(JP_EINVAL, "the sampled passages have no vectors to cluster (every token was "
                  "punctuation or special?)");
  /* Shuffle rows (seeded Fisher-Yates) so the held-out part is random. */
  tmp = jp_malloc(dim * sizeof *tmp);
  if (!tmp) return JP_ENOMEM;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = (size_t)(jp_rand64(&st) % (uint64_t)(i + 1));
    if (j == i) continue;
    memcpy(tmp, x + i * dim, dim * sizeof *x);
    memcpy(x + i * dim, x + j * dim, dim * sizeof *x);
    memcpy(x + j * dim, tmp, dim * sizeof *x);
  }
  jp_free(tmp);
  nh = (size_t)fmin(HELDOUT_FRAC * (double)n, HELDOUT_MAX);
  if (nh == 0 && n >= 2) nh = 1;   /* tiny corpora: still hold one vector out */
  held = x;
  train = x + nh * dim;
  nt = n - nh;
  b->rep->n_train_vecs = nt;
  b->rep->n_heldout_vecs = nh;
  b->rep->avg_doclen = b->rep->n_sample ? (double)n / (double)b->rep->n_sample : 0.0;

  k = jp_plan_centroids(b->n_passages, b->rep->avg_doclen, nt);
  if (k < 1) return jp_err(JP_EINTERNAL, "plan gave %d centroids", k);
  memset(&ko, 0, sizeof ko);
  ko.k = k;
  ko.iters = b->o->kmeans_iters > 0 ? b->o->kmeans_iters : jp_plan_default_iters(b->n_passages);
  ko.seed = b->o->seed;
  ko.pool = b->pool;
  ko.normalize = 1;
  ko.progress = on_kmeans;
  ko.progress_ctx = &kp;
  jp_progress_init(&kp.pr, b->o->progress, "k-means", "iterations", (uint64_t)ko.iters);
  b->rep->kmeans_iters = ko.iters;
  cent = jp_malloc((size_t)k * dim * sizeof *cent);
  if (!cent) return JP_ENOMEM;
  if ((rc = jp_kmeans(train, nt, (int)dim, &ko, NULL, cent, &k_out, NULL)) < 0) goto out;
  jp_progress_finish(&kp.pr);
  b->rep->t_kmeans = jp_now_s() - t0;
  t0 = jp_now_s();

  if ((rc = jp_codec_init(&b->codec, (int)dim, nbits, k_out)) < 0) goto out;
  memcpy(b->codec.centroids, cent, (size_t)k_out * dim * sizeof *cent);
  if (nh == 0) {   /* a one-vector sample: its own residual is all there is */
    held = train;
    nh = nt;
  }
  codes = jp_malloc(nh * sizeof *codes);
  resid = jp_malloc(nh * dim * sizeof *resid);
  if (!codes || !resid) { rc = JP_ENOMEM; goto out; }
  if ((rc = jp_codec_assign(&b->codec, held, nh, b->pool, codes)) < 0) goto out;
  for (size_t i = 0; i < nh; i++)
    for (size_t d = 0; d < dim; d++)
      resid[i * dim + d] = held[i * dim + d] - b->codec.centroids[(size_t)codes[i] * dim + d];
  if ((rc = jp_codec_train_buckets(&b->codec, resid, nh)) < 0) goto out;
  b->rep->ncentroids = k_out;
  b->rep->t_codec = jp_now_s() - t0;
out:
  jp_free(cent);
  jp_free(codes);
  jp_free(resid);
  return rc;
}

/* Pass 3: encode everything and stream it into the builder. */
static int pass_encode(struct build *b, jp_store_builder *bld)
{
  struct reader r;
  struct batch_out bo;
  struct jp_progress pr;
  int rc;

  memset(&bo, 0, sizeof bo);
  if ((rc = open_reader(b, &r, 1)) < 0) return rc;
  jp_progress_init(&pr, b->o->progress, "encode", "passages", b->n_passages);
  while ((rc = reader_next(&r)) > 0) {
    if ((rc = encode_batch(&r, &b->en, &bo)) < 0) break;
    if ((rc = jp_store_build_add(bld, bo.din, bo.n_docs, b->pool)) < 0) break;
    b->rep->n_passages += bo.n_passages;
    b->rep->n_embeddings += bo.vs.n;
    jp_progress_update(&pr, b->rep->n_passages);
  }
  if (rc == 0) jp_progress_finish(&pr);
  b->rep->n_docs = r.n_read;
  reader_close(&r);
  batch_out_fini(&bo);
  if (rc == 0 && b->rep->n_passages != b->n_passages)
    rc = jp_err(JP_EINVAL, "%s changed while it was being indexed (%" PRIu64 " passages, then %"
                PRIu64 ")", b->o->corpus_path, b->n_passages, b->rep->n_passages);
  return rc;
}

int jp_index_build(const struct jp_index_build_opts *o, struct jp_index_build_report *rep)
{
  struct jp_index_build_report rep_local;
  struct build b;
  struct jp_model_opts mo;
  struct jp_store_meta meta;
  jp_store_builder *bld = NULL;
  double t_all = jp_now_s(), t0;
  int rc, nbits, mdl;

  if (!rep) rep = &rep_local;
  memset(rep, 0, sizeof *rep);
  memset(&b, 0, sizeof b);
  if (!o || !o->corpus_path || !o->index_dir || (!o->model && !o->model_dir))
    return jp_err(JP_EINVAL, "index build needs a model, a corpus and an index directory");
  if (o->nbits && o->nbits != 1 && o->nbits != 2 && o->nbits != 4 && o->nbits != 8)
    return jp_err(JP_EINVAL, "nbits must be 1, 2, 4 or 8 (got %d)", o->nbits);
  if (jp_path_exists(o->index_dir) && !o->overwrite)
    return jp_err(JP_EEXISTS, "%s already exists (use --overwrite to replace it)", o->index_dir);
  /* Refuse a directory that is not an index now, not after hours of work. */
  if ((rc = store__replaceable(o->index_dir)) < 0) return rc;
  b.o = o;
  b.rep = rep;

  if (o->model) {
    b.model = o->model;
  } else {
    jp_model_opts_default(&mo);
    mo.n_threads = o->n_threads;
    if ((rc = jp_model_open(o->model_dir, &mo, &b.model)) < 0) return rc;
  }
  b.info = jp_model_get_info(b.model);
  mdl = o->max_document_length ? o->max_document_length : b.info->colbert.doc_maxlen;
  if (mdl <= DOC_SPECIAL_TOKENS || mdl > b.info->colbert.doc_maxlen) {
    rc = jp_err(JP_EINVAL, "max document length %d must be in %d..%d (the model's doc_maxlen)",
                mdl, DOC_SPECIAL_TOKENS + 1, b.info->colbert.doc_maxlen);
    goto out;
  }
  rep->max_document_length = mdl;
  b.max_tokens = mdl - DOC_SPECIAL_TOKENS;
  b.split = !o->no_split;
  b.truncate = o->no_split && mdl < b.info->colbert.doc_maxlen;
  if ((rc = jp_pool_create(o->n_threads, &b.pool)) < 0) goto out;
  if ((rc = encoder_init(&b.en, b.model)) < 0) goto out;

  t0 = jp_now_s();
  if ((rc = pass_scan(&b)) < 0) goto out;
  rep->t_scan = jp_now_s() - t0;
  if (b.n_passages == 0) {
    rc = jp_err(JP_EINVAL, "%s has no documents to index", o->corpus_path);
    goto out;
  }
  nbits = o->nbits ? o->nbits : jp_plan_default_nbits(b.n_passages);
  rep->nbits = nbits;
  phase_line(o->progress, "plan: %" PRIu64 " documents, %" PRIu64 " passages (%" PRIu64
             " documents split), %" PRIu64 " bad lines skipped; nbits %d", b.n_docs,
             b.n_passages, rep->n_split_docs, rep->n_bad_lines, nbits);

  t0 = jp_now_s();
  if ((rc = pass_sample(&b, jp_plan_sample_size(b.n_passages))) < 0) goto out;
  rep->t_sample = jp_now_s() - t0;
  if ((rc = train_codec(&b, nbits)) < 0) goto out;
  phase_line(o->progress, "codec: %d centroids from %" PRIu64 " vectors of %" PRIu64
             " sampled passages (%.1f per passage), %" PRIu64 " held out",
             rep->ncentroids, rep->n_train_vecs, rep->n_sample, rep->avg_doclen,
             rep->n_heldout_vecs);

  memset(&meta, 0, sizeof meta);
  snprintf(meta.model_name, sizeof meta.model_name, "%s", b.info->name);
  snprintf(meta.model_identity, sizeof meta.model_identity, "%s", b.info->identity);
  if (o->model_dir) {
    char *abs = realpath(o->model_dir, NULL);   /* libc-allocated: freed with free() */
    snprintf(meta.model_path, sizeof meta.model_path, "%s", abs ? abs : o->model_dir);
    free(abs);
  }
  meta.partition_id = 0;
  meta.n_partitions = 1;
  snprintf(meta.settings_json, sizeof meta.settings_json,
           "{\"max_document_length\":%d,\"split\":%s}", mdl, b.split ? "true" : "false");

  t0 = jp_now_s();
  if ((rc = jp_store_build_begin(o->index_dir, &meta, &b.codec, &bld)) < 0) goto out;
  if ((rc = pass_encode(&b, bld)) < 0) goto out;
  rep->t_encode = jp_now_s() - t0;
  t0 = jp_now_s();
  rc = jp_store_build_finish(bld);
  bld = NULL;
  rep->t_finish = jp_now_s() - t0;
out:
  if (bld) jp_store_build_abort(bld);
  encoder_fini(&b.en);
  jp_free(b.sample.v);
  jp_codec_fini(&b.codec);
  jp_pool_destroy(b.pool);
  if (!o->model) jp_model_close(b.model);
  rep->t_total = jp_now_s() - t_all;
  return rc;
}

/* ---- add ----------------------------------------------------------------------------------- */

int jp_index_add(jp_store *s, jp_model *m, const struct jp_index_add_opts *o,
                 struct jp_index_add_report *rep)
{
  struct jp_index_add_report rep_local;
  struct jp_split_settings ss;
  const struct jp_model_info *info;
  const struct jp_store_meta *meta;
  struct encoder en;
  struct reader r;
  struct batch_out bo;
  struct jp_progress pr;
  struct stat st;
  jp_pool *pool = NULL;
  int rc, mdl, reader_ok = 0;

  if (!rep) rep = &rep_local;
  memset(rep, 0, sizeof *rep);
  memset(&bo, 0, sizeof bo);
  memset(&en, 0, sizeof en);
  if (!s || !m || !o || !o->corpus_path) return jp_err(JP_EINVAL, "jp_index_add: NULL argument");
  info = jp_model_get_info(m);
  meta = jp_store_get_meta(s);
  if (strcmp(info->identity, meta->model_identity))
    return jp_err(JP_EMISMATCH, "the index was built with model '%s' (identity %s); the model "
                  "given has identity %s", meta->model_name, meta->model_identity, info->identity);
  if (info->colbert.dim != jp_store_codec(s)->dim)
    return jp_err(JP_EMISMATCH, "model dim %d, index dim %d", info->colbert.dim,
                  jp_store_codec(s)->dim);
  if ((rc = jp_split_settings_parse(meta->settings_json, &ss)) < 0) return rc;
  mdl = ss.max_document_length ? ss.max_document_length : info->colbert.doc_maxlen;
  if (mdl <= DOC_SPECIAL_TOKENS || mdl > info->colbert.doc_maxlen)
    return jp_err(JP_EINVAL, "index max document length %d does not fit the model (doc_maxlen %d)",
                  mdl, info->colbert.doc_maxlen);
  if ((rc = jp_pool_create(o->n_threads, &pool)) < 0) return rc;
  if ((rc = encoder_init(&en, m)) < 0) goto out;
  if ((rc = reader_open(&r, o->corpus_path, o->skip_bad, 0, jp_model_tokenizer(m), pool, ss.split,
                        mdl - DOC_SPECIAL_TOKENS,
                        !ss.split && mdl < info->colbert.doc_maxlen)) < 0)
    goto out;
  reader_ok = 1;
  jp_progress_init(&pr, o->progress, "add", "bytes",
                   stat(o->corpus_path, &st) == 0 ? (uint64_t)st.st_size : 0);
  while ((rc = reader_next(&r)) > 0) {
    if ((rc = encode_batch(&r, &en, &bo)) < 0) break;
    if ((rc = jp_store_upsert(s, bo.din, bo.n_docs, pool)) < 0) break;
    rep->n_docs += (uint64_t)bo.n_docs;
    rep->n_passages += bo.n_passages;
    rep->n_embeddings += bo.vs.n;
    jp_progress_update(&pr, jp_corpus_bytes_read(r.corpus));
  }
  if (rc == 0) jp_progress_finish(&pr);
  rep->n_bad_lines = r.bad + jp_corpus_bad_lines(r.corpus);
out:
  if (reader_ok) reader_close(&r);
  batch_out_fini(&bo);
  encoder_fini(&en);
  jp_pool_destroy(pool);
  return rc;
}

/* ---- opening an index with its model ------------------------------------------------------- */

int jp_index_open_with_model(const char *index_dir, const char *model_dir,
                             const struct jp_store_opts *so, const struct jp_model_opts *mo,
                             jp_store **out_store, jp_model **out_model)
{
  struct jp_store_opts sopts;
  const struct jp_store_meta *meta;
  const struct jp_model_info *info;
  jp_store *s = NULL;
  jp_model *m = NULL;
  int rc;

  if (!out_store || !out_model) return jp_err(JP_EINVAL, "jp_index_open_with_model: NULL out");
  *out_store = NULL;
  *out_model = NULL;
  if (so) sopts = *so;
  else jp_store_opts_default(&sopts);
  /* The identity is checked here, against whichever model is chosen. */
  sopts.expect_identity = NULL;
  if ((rc = jp_store_open(index_dir, &sopts, &s)) < 0) return rc;
  meta = jp_store_get_meta(s);
  if (!model_dir) {
    if (!meta->model_path[0]) {
      rc = jp_err(JP_ENOTFOUND, "index %s does not record its model directory; give --model",
                  index_dir);
      goto fail;
    }
    if (!jp_is_dir(meta->model_path)) {
      rc = jp_err(JP_ENOTFOUND, "the model the index %s was built with (%s, directory %s) is "
                  "not there any more; give --model", index_dir, meta->model_name,
                  meta->model_path);
      goto fail;
    }
    model_dir = meta->model_path;
  }
  if ((rc = jp_model_open(model_dir, mo, &m)) < 0) goto fail;
  info = jp_model_get_info(m);
  if (strcmp(info->identity, meta->model_identity)) {
    rc = jp_err(JP_EMISMATCH,
                "index %s was built with model '%s' (identity %s); the model at %s is '%s' "
                "(identity %s): queries must be encoded by the model the index was built with",
                index_dir, meta->model_name, meta->model_identity, model_dir, info->name,
                info->identity);
    goto fail;
  }
  if (info->colbert.dim != jp_store_codec(s)->dim) {
    rc = jp_err(JP_EMISMATCH, "model dim %d, index dim %d", info->colbert.dim,
                jp_store_codec(s)->dim);
    goto fail;
  }
  *out_store = s;
  *out_model = m;
  return 0;
fail:
  jp_model_close(m);
  jp_store_close(s);
  return rc;
}
