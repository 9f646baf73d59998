/* store_int.h: internals shared by the partition store's files
 * (store.c: open/close/load/writes/search/stats; store_codec.c: byte
 * layouts and RocksDB plumbing; store_bulk.c: SST writers, ingestion, bulk
 * builder). Not part of the public contract; include only from store*.c
 * (and build.c, for store__replaceable).
 *
 * Byte layouts (store.h lists the families):
 *   integers in keys and meta values: big-endian (keys sort numerically);
 *   varints: LEB128 (7 bits per byte, low group first);
 *   floats (centroids, codec scalars): IEEE-754 binary32 little-endian;
 *   meta "codec"      u32 dim | u32 nbits | u32 ncentroids | f32 avg_residual |
 *                     f32 cutoffs[2^nbits - 1] | f32 weights[2^nbits]
 *   meta "next_pid"   u64: next passage SEQUENCE number (pid = partition<<40 | seq)
 *   meta "next_segment" u64: next IVF segment for live writes
 *   meta "counts"     u64 passages | u64 documents: the live totals, written in
 *                     the same batch as every change, so a store whose data
 *                     files went missing (a damaged MANIFEST) is caught at
 *                     open even though what is left is self-consistent
 *   meta "live_resid" f64 bits (u64) | u64: sum and count of residual L2 norms
 *                     of vectors written live (codebook drift numerator)
 *   meta "writer/"+u64 segment: JSON {"first_seq","n_passages","n_docs",
 *                     "n_vecs","resid_sum"} of one bulk writer (drift baseline
 *                     and pid ranges)
 *   meta "settings"   the caller's settings JSON (jp_store_meta.settings_json)
 */
#ifndef JP_STORE_INT_H
#define JP_STORE_INT_H
#include <pthread.h>
#include <rocksdb/c.h>
#include <stddef.h>
#include <stdint.h>

#include "index/store.h"
#include "util/json.h"

enum { CF_META = 0, CF_PASSAGES, CF_IVF, CF_DOCS, CF_DOCIDS, CF_N };

/* Bounds on caller input (hostile or mistaken callers must get an error,
 * not an allocation spree). Document ids are keys: 4 KiB is far above any
 * real id (UUIDs are 36 bytes). A passage holds at most doc_maxlen vectors;
 * 65535 leaves room for any BERT length. Texts are bounded by the corpus
 * reader's 64 MiB line limit. */
#define STORE_MAX_DOC_ID 4096
#define STORE_MAX_PASSAGE_VECS 65535
#define STORE_MAX_TEXT ((size_t)64 << 20)
#define STORE_MAX_METADATA ((size_t)1 << 20)
#define STORE_MAX_SEQ (((uint64_t)1 << JP_PID_PARTITION_SHIFT) - 1)
/* Partition ids must fit the pid's high bits (64 - 40 = 24 bits). */
#define STORE_MAX_PARTITIONS ((uint32_t)1 << (64 - JP_PID_PARTITION_SHIFT))

struct jp_store {
  char *dir;
  rocksdb_t *db;
  rocksdb_options_t *dbopt;              /* DB-wide options */
  rocksdb_options_t *cfopt[CF_N];        /* per family (compression, filters) */
  rocksdb_options_t *otheropt;           /* "default" and unknown families */
  rocksdb_block_based_table_options_t *bbto[2];
  rocksdb_cache_t *cache;
  rocksdb_column_family_handle_t *cf[CF_N];
  rocksdb_column_family_handle_t **all_cf;   /* every handle opened (destroy all) */
  size_t n_all_cf;
  rocksdb_writeoptions_t *wo;
  rocksdb_readoptions_t *ro;             /* latest state */
  const rocksdb_snapshot_t *snap;        /* the state the jp_part reflects */
  rocksdb_readoptions_t *snap_ro;        /* reads at `snap` (search results) */

  struct jp_store_meta meta;
  struct jp_codec codec;
  jp_part *part;
  int read_only;
  int sync;

  pthread_rwlock_t lock;                 /* part + snapshot: searches read, apply writes */
  pthread_mutex_t wmu;                   /* serialises writers (pids, counters, batches) */
  int poisoned;                          /* a committed write failed to apply in memory */

  uint64_t next_seq;                     /* next passage sequence number */
  uint64_t n_passages, n_docs;           /* live totals, as in meta "counts" */
  uint64_t next_segment;                 /* next IVF segment for live writes */
  double build_resid_sum;                /* residual L2 norms of bulk-written vectors */
  uint64_t build_resid_n;
  double live_resid_sum;                 /* ... and of vectors written live */
  uint64_t live_resid_n;
};

/* ---- byte helpers (store_codec.c) ----------------------------------------- */

static inline void store__be32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void store__be64(uint8_t *p, uint64_t v)
{
  store__be32(p, (uint32_t)(v >> 32));
  store__be32(p + 4, (uint32_t)v);
}
static inline uint32_t store__get_be32(const uint8_t *p)
{
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t store__get_be64(const uint8_t *p)
{
  return ((uint64_t)store__get_be32(p) << 32) | store__get_be32(p + 4);
}

/* Append a varint. */
int store__put_varint(struct jp_buf *b, uint64_t v);
/* Read a varint from [*p, end); 0 or -1 (truncated / over 64 bits). */
int store__get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);

/* Delta-varint list of ascending u64 values: encode n values; decode by
 * calling store__get_varint and adding (first value is absolute). */
int store__put_pid_list(struct jp_buf *b, const uint64_t *pids, size_t n);

/* passages value: varint doclen | codes | packed residuals. */
int store__encode_passage(struct jp_buf *b, const struct jp_codec *c, int doclen,
                          const uint32_t *codes, const uint8_t *packed);
/* Decode into codes_out[cap] (as u32); *packed points into the value.
 * JP_ECORRUPT (naming pid) on any size mismatch. */
int store__decode_passage(const struct jp_codec *c, uint64_t pid, const uint8_t *v, size_t len,
                          uint32_t **codes_out, size_t *codes_cap, int *doclen,
                          const uint8_t **packed);

/* docs value: varint len | doc id | varint len | text | metadata JSON (rest). */
int store__encode_doc(struct jp_buf *b, const char *doc_id, size_t id_len, const char *text,
                      size_t text_len, const char *meta, size_t meta_len);
struct store_doc_view {
  const char *doc_id;
  size_t doc_id_len;
  const char *text;
  size_t text_len;
  const char *meta;             /* NULL if empty */
  size_t meta_len;
};
int store__decode_doc(uint64_t pid, const uint8_t *v, size_t len, struct store_doc_view *out);

/* meta values. */
int store__encode_codec(struct jp_buf *b, const struct jp_codec *c);
int store__encode_centroids(struct jp_buf *b, const struct jp_codec *c);
/* Fills c (jp_codec_init'ed here) from the two meta values. */
int store__decode_codec(const uint8_t *v, size_t len, const uint8_t *cent, size_t cent_len,
                        struct jp_codec *c);

/* ---- RocksDB plumbing (store_codec.c) ------------------------------------- */

/* Turn a RocksDB error string into a JP_E* code with a detail naming
 * `what` (and free it): Corruption -> JP_ECORRUPT, IO error -> JP_EIO,
 * anything else -> JP_ESTORE. */
int store__rerr(char *err, const char *what);

/* Options for a partition database: DB-wide + one per family. Filled into
 * s (s->dbopt, s->cfopt[], s->otheropt, s->cache, s->bbto). */
int store__make_options(struct jp_store *s, size_t block_cache_bytes, int create);
void store__free_options(struct jp_store *s);
/* The option set for a family name (one of ours, or "other"). */
const rocksdb_options_t *store__cf_options(const struct jp_store *s, const char *name);

/* Open the database of `dir` with every family it has (they must include
 * ours). create: make it (with our families) if missing. Fills s->db,
 * s->cf[], s->all_cf. Errors: JP_ENOTFOUND (not a store), JP_ECORRUPT,
 * JP_EIO, JP_ESTORE. */
int store__open_db(struct jp_store *s, const char *dir, int create, int read_only);
void store__close_db(struct jp_store *s);

/* 0 if `dir` can be replaced by a new partition: absent, an empty
 * directory, or a RocksDB database with our families. Else JP_EEXISTS
 * with a message (never delete what is not ours). Also used by build.c to
 * refuse early. */
int store__replaceable(const char *dir);

/* Write the static meta records (schema, model, codec, centroids,
 * partition, settings) into a batch. */
int store__put_static_meta(rocksdb_writebatch_t *wb, rocksdb_column_family_handle_t *meta_cf,
                           const struct jp_store_meta *m, const struct jp_codec *c);

/* Validate the meta and codec a caller hands to create/build/ingest. */
int store__check_meta(const struct jp_store_meta *m, const struct jp_codec *c);

/* Publish a finished partition: move `tmp` to `dir`, replacing an existing
 * index there atomically (renameat2 RENAME_EXCHANGE, falling back to two
 * renames on file systems without it), then fsync the parent. */
int store__publish(const char *tmp, const char *dir);

/* Put meta "counts". */
void store__put_counts(rocksdb_writebatch_t *wb, rocksdb_column_family_handle_t *meta_cf,
                       uint64_t n_passages, uint64_t n_docs);

/* Validate documents (ids, passages, vectors) for dim; JP_EINVAL with a
 * message naming the document. Duplicated ids in one call are JP_EINVAL. */
int store__check_docs(const struct jp_doc_in *docs, int n, int dim);

/* Compress every vector of `docs` (in order) against c: fills *codes and
 * *packed (jp_malloc'd, caller frees) and *resid_sum (sum of residual L2
 * norms). *n_vecs = total vectors. */
int store__compress_docs(const struct jp_codec *c, const struct jp_doc_in *docs, int n,
                         jp_pool *pool, uint32_t **codes, uint8_t **packed, size_t *n_vecs,
                         double *resid_sum);

/* Distinct codes of one passage into out (sorted); returns how many. */
int store__distinct_codes(const uint32_t *codes, int n, uint32_t *out);

/* Strict UTF-8 check (corpus.c): index of the first invalid byte, or n. */
size_t jp__utf8_invalid_at(const unsigned char *s, size_t n);

static inline uint64_t store__pid(uint32_t partition, uint64_t seq)
{
  return ((uint64_t)partition << JP_PID_PARTITION_SHIFT) | seq;
}

#endif /* JP_STORE_INT_H */
