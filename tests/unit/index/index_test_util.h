/* index_test_util.h: synthetic data for the common/index tests. Header-only
 * (each test is one executable).
 *
 * Clustered data on the unit sphere, like ColBERT token embeddings: "topic"
 * directions, and vectors drawn around a topic with Gaussian noise. */
#ifndef JP_INDEX_TEST_UTIL_H
#define JP_INDEX_TEST_UTIL_H
#include "test_helpers.h"
#include "util/hash.h"

#include <math.h>
#include <stdint.h>

static inline void itu_normalize(float *v, int dim)
{
  float s = 0.0f;
  for (int d = 0; d < dim; d++) s += v[d] * v[d];
  s = sqrtf(s);
  if (s > 0.0f)
    for (int d = 0; d < dim; d++) v[d] /= s;
}

/* n random unit vectors. */
static inline void itu_unit_rows(float *x, size_t n, int dim, uint64_t *rng)
{
  for (size_t i = 0; i < n; i++) {
    for (int d = 0; d < dim; d++) x[i * (size_t)dim + (size_t)d] = jp_randn(rng);
    itu_normalize(x + i * (size_t)dim, dim);
  }
}

/* A unit vector near `center`: center + noise * N(0, 1/dim) per coordinate. */
static inline void itu_near(const float *center, float noise, int dim, uint64_t *rng, float *out)
{
  float sc = noise / sqrtf((float)dim);
  for (int d = 0; d < dim; d++) out[d] = center[d] + sc * jp_randn(rng);
  itu_normalize(out, dim);
}

static inline float itu_dot(const float *a, const float *b, int dim)
{
  float s = 0.0f;
  for (int d = 0; d < dim; d++) s += a[d] * b[d];
  return s;
}

/* ---- a small clustered corpus in a jp_part ------------------------------------ */
#include "index/codec.h"
#include "index/part.h"
#include "util/mem.h"

#include <stdio.h>
#include <string.h>

struct itu_corpus {
  int dim, ntopics;
  float *topics;          /* [ntopics, dim] unit directions */
  int npass;
  int *doclen;            /* [npass] */
  int **ptopics;          /* per passage: its topics (ITU_TOPICS_PER_PASSAGE) */
  float **vecs;           /* per passage: [doclen, dim] */
};

#define ITU_TOPICS_PER_PASSAGE 4

/* Passages of 5..(5 + spread) tokens, each token near one of the passage's
 * topics (noise `noise`). */
static inline void itu_corpus_make(struct itu_corpus *c, int dim, int ntopics, int npass,
                                   int spread, float noise, uint64_t seed)
{
  uint64_t rng = seed;
  memset(c, 0, sizeof *c);
  c->dim = dim;
  c->ntopics = ntopics;
  c->npass = npass;
  c->topics = malloc(sizeof(float) * (size_t)ntopics * dim);
  itu_unit_rows(c->topics, (size_t)ntopics, dim, &rng);
  c->doclen = calloc((size_t)npass, sizeof(int));
  c->ptopics = calloc((size_t)npass, sizeof(int *));
  c->vecs = calloc((size_t)npass, sizeof(float *));
  for (int p = 0; p < npass; p++) {
    int len = 5 + (spread > 0 ? (int)(jp_rand64(&rng) % (uint64_t)spread) : 0);
    c->doclen[p] = len;
    c->ptopics[p] = malloc(sizeof(int) * ITU_TOPICS_PER_PASSAGE);
    for (int t = 0; t < ITU_TOPICS_PER_PASSAGE; t++)
      c->ptopics[p][t] = (int)(jp_rand64(&rng) % (uint64_t)ntopics);
    c->vecs[p] = malloc(sizeof(float) * (size_t)len * dim);
    for (int i = 0; i < len; i++) {
      int t = c->ptopics[p][jp_rand64(&rng) % ITU_TOPICS_PER_PASSAGE];
      itu_near(c->topics + (size_t)t * dim, noise, dim, &rng, c->vecs[p] + (size_t)i * dim);
    }
  }
}

static inline void itu_corpus_free(struct itu_corpus *c)
{
  for (int p = 0; p < c->npass; p++) {
    free(c->ptopics[p]);
    free(c->vecs[p]);
  }
  free(c->ptopics);
  free(c->vecs);
  free(c->doclen);
  free(c->topics);
}

/* A query of nq tokens near the topics of passage p (more noise). */
static inline void itu_query(const struct itu_corpus *c, int p, int nq, float noise, uint64_t *rng,
                             float *Q)
{
  for (int i = 0; i < nq; i++) {
    int t = c->ptopics[p][jp_rand64(rng) % ITU_TOPICS_PER_PASSAGE];
    itu_near(c->topics + (size_t)t * c->dim, noise, c->dim, rng, Q + (size_t)i * c->dim);
  }
}

/* A codec whose centroids are the topics (plus extra random directions) and
 * whose buckets come from the corpus residuals. */
static inline void itu_codec(const struct itu_corpus *c, int nbits, int extra, uint64_t seed,
                             struct jp_codec *codec)
{
  uint64_t rng = seed;
  int nc = c->ntopics + extra;
  assert_int_equal(jp_codec_init(codec, c->dim, nbits, nc), 0);
  memcpy(codec->centroids, c->topics, sizeof(float) * (size_t)c->ntopics * c->dim);
  if (extra > 0) itu_unit_rows(codec->centroids + (size_t)c->ntopics * c->dim, (size_t)extra, c->dim, &rng);
  size_t total = 0;
  for (int p = 0; p < c->npass && total < 20000; p++) total += (size_t)c->doclen[p];
  float *res = malloc(sizeof(float) * total * c->dim);
  uint32_t *codes = malloc(sizeof(uint32_t) * total);
  size_t at = 0;
  for (int p = 0; p < c->npass && at < total; p++) {
    memcpy(res + at * c->dim, c->vecs[p], sizeof(float) * (size_t)c->doclen[p] * c->dim);
    at += (size_t)c->doclen[p];
  }
  assert_int_equal(jp_codec_assign(codec, res, total, NULL, codes), 0);
  for (size_t i = 0; i < total; i++)
    for (int d = 0; d < c->dim; d++) res[i * c->dim + d] -= codec->centroids[codes[i] * c->dim + d];
  assert_int_equal(jp_codec_train_buckets(codec, res, total), 0);
  free(res);
  free(codes);
}

/* Add passage p as pid `pid` of document "doc<p / per_doc>". */
static inline int itu_add(jp_part *part, const struct itu_corpus *c, int p, uint64_t pid,
                          int per_doc, const char *meta)
{
  const struct jp_codec *codec = jp_part_codec(part);
  int len = c->doclen[p];
  uint32_t *codes = malloc(sizeof(uint32_t) * (size_t)(len ? len : 1));
  uint8_t *packed = malloc(jp_codec_packed_bytes(codec) * (size_t)(len ? len : 1));
  char id[32];
  int rc = jp_codec_compress(codec, c->vecs[p], (size_t)len, NULL, codes, packed);
  if (rc == 0) {
    snprintf(id, sizeof id, "doc%d", p / (per_doc > 0 ? per_doc : 1));
    rc = jp_part_add(part, pid, id, strlen(id), meta, len, codes, packed);
  }
  free(codes);
  free(packed);
  return rc;
}

#endif
