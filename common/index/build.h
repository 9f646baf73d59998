/* build.h: the single-process indexing pipeline behind `japlaid index`, and
 * the add-documents path behind `japlaid add`.
 *
 * jp_index_build (shared/reference/plaid.md §2):
 *   1. scan: read the corpus, split long documents into passages of at most
 *      max_document_length - 3 tokens (overlap min(64, max/4)) with
 *      jp_split_passages, count passages N; duplicate document ids and
 *      untokenisable texts are bad lines (skipped with skip_bad, else the
 *      error names file:line);
 *   2. plan: sample size, nbits (jp_plan_default_nbits unless given);
 *   3. sample: a seeded uniform sample of passages (selection sampling in a
 *      second pass), encoded;
 *   4. k-means on the sample minus a held-out 5% (at most 50,000 vectors);
 *   5. codec: nearest centroids of the held-out vectors, residuals,
 *      jp_codec_train_buckets;
 *   6. encode all passages in batches (third pass) and hand them to the
 *      bulk builder (jp_store_build_add), which compresses and streams them
 *      into SST files; finish ingests and publishes the directory.
 * Memory is bounded by the sample, one batch of documents and the IVF
 * lists: the corpus is streamed and embeddings are never all held. The
 * corpus is read three times (splitting is deterministic, and a change of
 * the file between passes is detected by the passage count).
 *
 * No-split mode keeps each document as one passage: the stored content is
 * the whole text and the encoded part is its first max_document_length - 3
 * tokens (RAGatouille's split_documents=False truncates the same way).
 *
 * Thread-safety: one build per call; the calls are independent.
 * Allocation: everything is freed before return. */
#ifndef JP_BUILD_H
#define JP_BUILD_H
#include <stdint.h>
#include <stdio.h>

#include "index/store.h"
#include "model/model.h"
#include "util/pool.h"

struct jp_index_build_opts {
  const char *model_dir;          /* checkpoint directory (recorded in the index) */
  jp_model *model;                /* an open model of model_dir, or NULL to open it here */
  const char *corpus_path;
  const char *index_dir;
  int nbits;                      /* 0: by collection size (jp_plan_default_nbits) */
  int max_document_length;        /* 0: the model's doc_maxlen; must not exceed it */
  int no_split;                   /* 1: one passage per document, truncated */
  int overwrite;                  /* replace an existing index (atomically) */
  int skip_bad;                   /* skip and count bad corpus lines */
  int n_threads;                  /* <= 0: all cores */
  int kmeans_iters;               /* 0: by collection size (jp_plan_default_iters) */
  uint64_t seed;                  /* sampling and k-means init */
  FILE *progress;                 /* progress and phase lines; NULL: silent */
};

void jp_index_build_opts_default(struct jp_index_build_opts *o);

struct jp_index_build_report {
  uint64_t n_docs;                /* documents indexed */
  uint64_t n_passages;
  uint64_t n_embeddings;          /* stored vectors */
  uint64_t n_bad_lines;           /* skipped (skip_bad) */
  uint64_t n_split_docs;          /* documents cut into more than one passage */
  uint64_t n_sample;              /* sampled passages */
  uint64_t n_train_vecs, n_heldout_vecs;
  double avg_doclen;              /* kept vectors per sampled passage */
  int ncentroids, nbits, kmeans_iters, max_document_length;
  double t_scan, t_sample, t_kmeans, t_codec, t_encode, t_finish, t_total;  /* seconds */
};

/* Build an index. JP_EEXISTS if index_dir exists and overwrite is 0 (or it
 * exists and is not an index: never replaced). */
int jp_index_build(const struct jp_index_build_opts *o, struct jp_index_build_report *rep);

/* Splitting settings recorded in an index (jp_store_meta.settings_json):
 * {"max_document_length": N, "split": true|false}. */
struct jp_split_settings {
  int max_document_length;        /* 0: the model's doc_maxlen */
  int split;                      /* 1: split long documents; 0: truncate */
};
/* Parse settings ("" or NULL gives the defaults 0 / 1). */
int jp_split_settings_parse(const char *json, struct jp_split_settings *out);

struct jp_index_add_opts {
  const char *corpus_path;
  int skip_bad;
  int n_threads;                  /* splitting threads; <= 0: all cores */
  FILE *progress;                 /* NULL: silent */
};

struct jp_index_add_report {
  uint64_t n_docs, n_passages, n_embeddings, n_bad_lines;
};

/* Read a corpus, split it as the index was built (its settings), encode
 * with `m` (whose identity must be the index's) and upsert in batches, each
 * committed before the next is read: a document with an existing id
 * replaces it. An id repeated within the file is a bad line. */
int jp_index_add(jp_store *s, jp_model *m, const struct jp_index_add_opts *o,
                 struct jp_index_add_report *rep);

/* Open an index and the model to query or extend it with: `model_dir`, or
 * when NULL the model directory recorded in the index at build. The model
 * must have the index's identity (JP_EMISMATCH names both otherwise);
 * JP_ENOTFOUND when no model is given and none is recorded or it moved.
 * On success the caller owns both (jp_store_close, jp_model_close). */
int jp_index_open_with_model(const char *index_dir, const char *model_dir,
                             const struct jp_store_opts *so, const struct jp_model_opts *mo,
                             jp_store **out_store, jp_model **out_model);

#endif /* JP_BUILD_H */
