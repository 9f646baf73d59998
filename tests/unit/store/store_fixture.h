/* store_fixture.h: synthetic codecs and documents for the store tests.
 * Header-only (static functions) so each test program stays one file.
 *
 * Vectors are unit vectors near one of the codec's centroids (a "topic"),
 * so compression is realistic and a passage's own vectors find it first.
 * Passage texts start with their document id and version ("<id>#v<k>:"),
 * so a test can tell which write a fetched text came from. */
#ifndef JP_STORE_FIXTURE_H
#define JP_STORE_FIXTURE_H
#include "index/codec.h"
#include "index/store.h"
#include "util/hash.h"
#include "util/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FX_DIM 32
#define FX_NBITS 2
#define FX_NCENT 16
#define FX_MAX_PASS 4
#define FX_MAX_VECS 24
#define FX_IDENTITY "0123456789abcdef0123456789abcdef"

static void fx_unit(float *v, int dim)
{
  double s = 0;
  for (int d = 0; d < dim; d++) s += (double)v[d] * v[d];
  s = sqrt(s);
  for (int d = 0; d < dim; d++) v[d] = (float)(v[d] / (s > 0 ? s : 1));
}

/* A trained codec: random unit centroids, buckets from random residuals. */
static void fx_codec(struct jp_codec *c, uint64_t seed)
{
  uint64_t st = seed;
  float *res = malloc(2000 * FX_DIM * sizeof *res);
  if (jp_codec_init(c, FX_DIM, FX_NBITS, FX_NCENT) != 0 || !res) abort();
  for (int i = 0; i < FX_NCENT; i++) {
    for (int d = 0; d < FX_DIM; d++) c->centroids[i * FX_DIM + d] = jp_randn(&st);
    fx_unit(c->centroids + i * FX_DIM, FX_DIM);
  }
  for (int i = 0; i < 2000 * FX_DIM; i++) res[i] = 0.08f * jp_randn(&st);
  if (jp_codec_train_buckets(c, res, 2000) != 0) abort();
  free(res);
}

static void fx_meta(struct jp_store_meta *m, const char *identity, uint32_t part, uint32_t nparts)
{
  memset(m, 0, sizeof *m);
  snprintf(m->model_name, sizeof m->model_name, "test/model");
  snprintf(m->model_identity, sizeof m->model_identity, "%s", identity);
  snprintf(m->model_path, sizeof m->model_path, "/models/test");
  snprintf(m->settings_json, sizeof m->settings_json, "{\"max_document_length\":64,\"split\":true}");
  m->partition_id = part;
  m->n_partitions = nparts;
}

/* One document with owned buffers. */
struct fx_doc {
  char id[48];
  char meta[64];
  char text[FX_MAX_PASS][96];
  float vecs[FX_MAX_PASS][FX_MAX_VECS * FX_DIM];
  struct jp_passage_in pass[FX_MAX_PASS];
  struct jp_doc_in in;
};

/* Document `id`, version `ver`: 1..FX_MAX_PASS passages, each with 4..FX_MAX_VECS
 * vectors around a topic; all derived from (id, ver, seed). */
static void fx_doc(struct fx_doc *d, const char *id, int ver, uint64_t seed,
                   const struct jp_codec *c)
{
  uint64_t st = seed ^ jp_hash64(id, strlen(id)) ^ ((uint64_t)ver << 32);
  int np = 1 + (int)(jp_rand64(&st) % FX_MAX_PASS);
  memset(d, 0, sizeof *d);
  snprintf(d->id, sizeof d->id, "%s", id);
  snprintf(d->meta, sizeof d->meta, "{\"ver\":%d,\"lang\":\"ja\"}", ver);
  for (int p = 0; p < np; p++) {
    int nv = 4 + (int)(jp_rand64(&st) % (FX_MAX_VECS - 3));
    int topic = (int)(jp_rand64(&st) % FX_NCENT);
    snprintf(d->text[p], sizeof d->text[p], "%s#v%d:p%d 本文", id, ver, p);
    for (int v = 0; v < nv; v++) {
      float *x = d->vecs[p] + v * FX_DIM;
      for (int k = 0; k < FX_DIM; k++)
        x[k] = c->centroids[topic * FX_DIM + k] + 0.35f * jp_randn(&st);
      fx_unit(x, FX_DIM);
    }
    d->pass[p].text = d->text[p];
    d->pass[p].text_len = strlen(d->text[p]);
    d->pass[p].vecs = d->vecs[p];
    d->pass[p].n_vecs = nv;
  }
  d->in.doc_id = d->id;
  d->in.doc_id_len = strlen(d->id);
  d->in.metadata_json = d->meta;
  d->in.passages = d->pass;
  d->in.n_passages = np;
}

/* Exhaustive search restricted to one document with its first passage's
 * vectors as the query: fills *res (from a), returns the hit count. */
static int fx_find_doc(jp_store *s, const struct fx_doc *d, struct jp_arena *a,
                       struct jp_result **res)
{
  struct jp_search_params sp;
  struct jp_restrict r = {0};
  const char *ids[1] = {d->id};
  int n = -1;
  jp_search_params_init(&sp, 10);
  sp.exhaustive = 1;
  r.doc_ids = ids;
  r.n_doc_ids = 1;
  if (jp_store_search(s, d->vecs[0], d->pass[0].n_vecs, &sp, &r, NULL, a, res, &n) != 0)
    return -1;
  return n;
}

#endif
