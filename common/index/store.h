/* store.h: one index partition stored in RocksDB (DESIGN §3), and the
 * searchable in-memory state kept in step with it.
 *
 * RocksDB is the durable truth. One database per partition directory, with
 * column families (all integers big-endian so keys sort numerically):
 *   meta      "schema" -> u32 schema version (JP_STORE_SCHEMA);
 *             "model"  -> JSON {"name","identity","path"};
 *             "settings" -> the build's settings JSON (jp_store_meta);
 *             "codec"  -> dim, nbits, ncentroids, cutoffs, weights, avg_residual;
 *             "centroids" -> f32 [ncentroids, dim] (identical in every partition);
 *             "partition" -> JSON {"id","count"};  "next_pid" -> u64; counters.
 *   passages  pid (u64) -> varint doclen | codes (u16 if ncentroids <= 65536,
 *             else u32, little-endian) | packed residuals
 *   ivf       centroid (u32) | segment (u64) -> sorted pids, delta-varint.
 *             Bulk builds write one segment per centroid (per writer);
 *             live writes append new segments; loading merges them and
 *             skips pids that no longer exist.
 *   docs      pid (u64) -> varint len | document id | varint len | text |
 *             metadata JSON (rest, may be empty)
 *   docids    document id -> pids, delta-varint
 * Passage ids: pid = (partition id << 40) | sequence, so ids are unique
 * across the cluster and a coordinator can tell which partition owns one.
 *
 * Opening loads the hot structures into a jp_part (codes, IVF, doclens,
 * document table; residuals too unless residuals_in_memory is 0, in which
 * case the final stage reads them through RocksDB's block cache -- not
 * implemented yet: jp_part has no read-through hook, so 0 is refused with
 * JP_EUNSUPPORTED). Every
 * write is one RocksDB WriteBatch (WAL, fsync'ed when opts.sync) and is
 * applied to the jp_part only after it committed, under a write lock;
 * searches take the read lock. So an acknowledged write survives kill -9,
 * and the next search sees it.
 *
 * A directory holding a store of another schema, another model identity, a
 * damaged or foreign RocksDB, or no store at all is refused with a clear
 * error (JP_EMISMATCH, JP_ECORRUPT, JP_ENOTFOUND), never opened half-way.
 *
 * Thread-safety: all functions on an open jp_store may be called from any
 * number of threads. */
#ifndef JP_STORE_H
#define JP_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "index/codec.h"
#include "index/part.h"
#include "util/arena.h"
#include "util/pool.h"

#define JP_STORE_SCHEMA 1
#define JP_PID_PARTITION_SHIFT 40

struct jp_store_meta {
  char model_name[128];
  char model_identity[33];
  uint32_t partition_id;          /* 0-based */
  uint32_t n_partitions;          /* >= 1 */
  /* Recorded at build for tools, never interpreted by the store ("" = none):
   * the model directory the index was built with (so `japlaid search` can
   * find the model without --model; the identity check still applies) and
   * the build's settings as a JSON object (passage splitting, so `japlaid
   * add` splits new documents the same way). */
  char model_path[1024];
  char settings_json[512];
};

struct jp_store_opts {
  int sync;                       /* fsync the WAL on every write (default 1) */
  int residuals_in_memory;        /* default 1 */
  int read_only;                  /* open for reading; writes give JP_EUNSUPPORTED */
  const char *expect_identity;    /* non-NULL: refuse a store of another model */
  size_t block_cache_bytes;       /* 0: 64 MiB */
};
void jp_store_opts_default(struct jp_store_opts *o);

typedef struct jp_store jp_store;

/* Create an empty store (fails with JP_EEXISTS if `dir` holds anything). */
int jp_store_create(const char *dir, const struct jp_store_meta *meta,
                    const struct jp_codec *codec, const struct jp_store_opts *o,
                    jp_store **out);
int jp_store_open(const char *dir, const struct jp_store_opts *o, jp_store **out);
void jp_store_close(jp_store *s);                   /* flushes; NULL is a no-op */

const struct jp_store_meta *jp_store_get_meta(const jp_store *s);
const struct jp_codec *jp_store_codec(const jp_store *s);

/* ---- writes --------------------------------------------------------------- */

/* A passage ready to store: its text and its kept vectors [n_vecs, dim]. */
struct jp_passage_in {
  const char *text;
  size_t text_len;
  const float *vecs;
  int n_vecs;
};

/* A document: id, optional metadata (a JSON object, or NULL), passages. */
struct jp_doc_in {
  const char *doc_id;
  size_t doc_id_len;
  const char *metadata_json;
  const struct jp_passage_in *passages;
  int n_passages;
};

/* Insert or replace documents (a document with an existing id replaces all
 * of its passages). Compresses against the partition's codec, commits one
 * WriteBatch, then updates memory. All or nothing per call. */
int jp_store_upsert(jp_store *s, const struct jp_doc_in *docs, int n, jp_pool *pool);

/* Delete documents by id; unknown ids are not an error. *n_deleted (may be
 * NULL) = documents that existed. */
int jp_store_delete(jp_store *s, const char *const *doc_ids, const size_t *lens, int n,
                    int *n_deleted);

/* ---- search --------------------------------------------------------------- */

struct jp_result {
  uint64_t passage_id;
  float score;
  int rank;                       /* 1-based */
  const char *document_id;        /* NUL-terminated, in the caller's arena */
  const char *content;            /* passage text */
  size_t content_len;
  const char *metadata_json;      /* NULL if the document has none */
};

/* PLAID (or exhaustive) search plus the content of the hits. Results and
 * their strings are allocated in `a` and live until it is reset. */
int jp_store_search(jp_store *s, const float *Q, int nq, const struct jp_search_params *sp,
                    const struct jp_restrict *r, jp_pool *pool, struct jp_arena *a,
                    struct jp_result **out, int *n_out);

/* ---- stats ---------------------------------------------------------------- */

struct jp_store_stats {
  uint64_t n_passages, n_docs, n_embeddings;
  int ncentroids, nbits, dim;
  uint64_t cf_bytes[5];           /* meta, passages, ivf, docs, docids (live SST + memtable) */
  uint64_t total_bytes;
  double bytes_per_embedding;     /* total_bytes / n_embeddings */
  double codebook_drift;          /* mean residual norm of live writes / at build (1 = no drift);
                                   * NaN when there is nothing to compare (no
                                   * bulk-built vectors, or no live writes yet) */
};
extern const char *const jp_store_cf_names[5];
int jp_store_get_stats(jp_store *s, struct jp_store_stats *out);

/* ---- bulk build ------------------------------------------------------------
 * Writes a new partition from scratch through RocksDB SST files (fast, no
 * WAL): passages are added in pid order, the IVF and the docids family are
 * written at finish, then ingested. The partition is built in `dir`.tmp and
 * renamed to `dir` only when complete, so a crash leaves no directory that
 * looks like a finished partition.
 *
 * For multi-process builds (MPI), each writer process uses a
 * jp_store_sstwriter for its own share of one partition (disjoint pid
 * ranges, its own IVF segment number) and one process ingests all the files
 * with jp_store_ingest. */

typedef struct jp_store_builder jp_store_builder;
int jp_store_build_begin(const char *dir, const struct jp_store_meta *meta,
                         const struct jp_codec *codec, jp_store_builder **out);
/* Compress and append documents; pids are assigned in order. */
int jp_store_build_add(jp_store_builder *b, const struct jp_doc_in *docs, int n, jp_pool *pool);
/* Write IVF/docids, ingest, publish `dir`. The builder is freed either way. */
int jp_store_build_finish(jp_store_builder *b);
void jp_store_build_abort(jp_store_builder *b);     /* removes the temporary directory */

typedef struct jp_store_sstwriter jp_store_sstwriter;
/* Files go to sst_dir with names prefixed by `tag`. pids are first_seq,
 * first_seq+1, ... of partition meta->partition_id; ivf_segment must be
 * unique among the writers of a partition. */
int jp_store_sstwriter_create(const char *sst_dir, const char *tag,
                              const struct jp_store_meta *meta, const struct jp_codec *codec,
                              uint64_t first_seq, uint64_t ivf_segment,
                              jp_store_sstwriter **out);
int jp_store_sstwriter_add(jp_store_sstwriter *w, const struct jp_doc_in *docs, int n,
                           jp_pool *pool);
/* Finish the files; *n_passages = passages written. Frees the writer. */
int jp_store_sstwriter_finish(jp_store_sstwriter *w, uint64_t *n_passages);
/* Create the partition in dir.tmp from the SST files of all writers (every
 * *.sst under sst_dir), then publish dir. Two writers adding the same
 * document id is JP_EEXISTS. */
int jp_store_ingest(const char *dir, const struct jp_store_meta *meta,
                    const struct jp_codec *codec, const char *sst_dir);

#endif /* JP_STORE_H */
