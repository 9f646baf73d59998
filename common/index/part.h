/* part.h: the in-memory, searchable state of one index partition, and
 * PLAID search over it (DESIGN §4, shared/reference/plaid.md §3).
 *
 * A jp_part holds what search touches on every query: the codec, each
 * passage's codes and packed residuals, doclens, the IVF (centroid -> sorted
 * passage slots), and the document table (document id -> passages, metadata
 * for filters). Passage texts are NOT here: they stay in the store and are
 * fetched for the final top k only.
 *
 * Passage ids (pid) are 64-bit, assigned by the store, unique in the
 * cluster (the partition number sits in the high bits, see store.h).
 * Internally passages live in dense slots; removing a passage frees its slot
 * lazily (dead slots are skipped and reclaimed by jp_part_compact()).
 *
 * Search (jp_part_search):
 *  1. S = C . Q^T (one sgemm);  2. candidates = union of the IVF lists of each
 *  query token's top-`ncells` centroids;  3. centroids whose best query score
 *  is below `centroid_score_threshold` are pruned;  4. approximate score from
 *  codes on unpruned centroids, keep `ndocs`;  5. score from all codes, keep
 *  ndocs/4;  6. decompress, exact MaxSim, top k.  MaxSim follows ColBERT's
 *  CPU rule (maxsim.h): each query token's best match is floored at 0.
 *  Defaults by k (ColBERT's table): k <= 10: ncells 1, threshold 0.5,
 *  ndocs 256; k <= 100: 2, 0.45, 1024; else 4, 0.4, max(4k, 4096).
 *  `exhaustive`: exact MaxSim of every live passage's stored (decompressed)
 *  vectors: the oracle for steps 1-5.
 *  Restrictions (document ids, metadata equality filters) are applied to the
 *  candidates before any scoring; when the allowed set is small (<= ndocs) it
 *  is scored exactly and completely. Fewer than k hits come back only when
 *  fewer than k passages are allowed: when the candidate stages find too
 *  few, ncells is widened until they do.
 *
 * Thread-safety: jp_part has no lock of its own. Any number of threads may
 * search concurrently; add/remove/compact need exclusive access (the store
 * wraps the part in a rwlock). Allocation: search takes its scratch from the
 * caller's arena; add/remove grow the arrays. */
#ifndef JP_PART_H
#define JP_PART_H
#include <stddef.h>
#include <stdint.h>

#include "index/codec.h"
#include "util/arena.h"
#include "util/pool.h"

/* Hard caps (a hostile request must not make a shard allocate without
 * bound): k is capped like Vespa's maxHits order of magnitude. */
#define JP_MAX_K 1000
#define JP_MAX_NDOCS 65536
#define JP_MAX_QUERY_TOKENS 512

struct jp_search_params {
  int k;                              /* 1..JP_MAX_K */
  int ncells;                         /* 0: default by k */
  float centroid_score_threshold;     /* NAN: default by k */
  int ndocs;                          /* 0: default by k */
  int exhaustive;                     /* 1: exact MaxSim over every passage */
};

/* Fill the knobs left at their "default" marker from k (table above). */
void jp_search_params_init(struct jp_search_params *p, int k);  /* k + all defaults */
void jp_search_params_resolve(struct jp_search_params *p);      /* fill defaults by p->k */
/* Validate ranges (k, ncells, threshold finite, ndocs): JP_EINVAL naming the knob. */
int  jp_search_params_check(const struct jp_search_params *p);

/* metadata[key] == value. A string value matches its text exactly; a number
 * or boolean matches when its JSON text equals `value` ("3", "true"). */
struct jp_filter {
  const char *key;
  const char *value;
};

struct jp_restrict {
  const char *const *doc_ids;         /* NULL: any document */
  int n_doc_ids;
  const struct jp_filter *filters;    /* all must hold */
  int n_filters;
};

struct jp_hit {
  uint64_t pid;
  float score;
};

typedef struct jp_part jp_part;

/* The codec is copied. */
int  jp_part_create(const struct jp_codec *codec, jp_part **out);
void jp_part_destroy(jp_part *p);
const struct jp_codec *jp_part_codec(const jp_part *p);

/* Add one passage of document doc_id (copied; metadata_json may be NULL,
 * else a JSON object, copied and parsed for filters). codes[doclen] and
 * packed[doclen * packed_bytes] are copied. A pid already present is
 * JP_EEXISTS. doclen 0 is allowed (a passage with no kept vectors never
 * matches but is still counted). */
int jp_part_add(jp_part *p, uint64_t pid, const char *doc_id, size_t doc_id_len,
                const char *metadata_json, int doclen, const uint32_t *codes,
                const uint8_t *packed);

/* Remove every passage of a document; *n_removed (may be NULL) = passages
 * removed (0 if the document is unknown: not an error). */
int jp_part_remove_doc(jp_part *p, const char *doc_id, size_t doc_id_len, int *n_removed);

/* Reclaim dead slots (rewrites the arrays; exclusive access). */
int jp_part_compact(jp_part *p);

struct jp_part_stats {
  uint64_t n_passages;                /* live */
  uint64_t n_docs;                    /* live */
  uint64_t n_embeddings;              /* live stored vectors */
  uint64_t n_dead_slots;
  uint64_t mem_bytes;                 /* hot structures */
};
void jp_part_get_stats(const jp_part *p, struct jp_part_stats *out);

/* Passage ids of a document (into out[cap]), in insertion order; *n = how
 * many exist (0 for an unknown document). JP_ETOOBIG when cap < *n (the
 * first cap are written). */
int jp_part_doc_pids(const jp_part *p, const char *doc_id, size_t len, uint64_t *out,
                     int cap, int *n);

/* Search. Q is [nq, dim] (unit rows; query_maxlen rows for ColBERT queries).
 * Writes up to sp->k hits to out (capacity >= sp->k), best first, ties broken
 * by smaller pid; *n_out = how many. Scratch comes from `scratch`. */
int jp_part_search(const jp_part *p, const float *Q, int nq, const struct jp_search_params *sp,
                   const struct jp_restrict *r, jp_pool *pool, struct jp_arena *scratch,
                   struct jp_hit *out, int *n_out);

/* Decompressed vectors of one passage (for tests and rerank-from-index):
 * writes doclen*dim floats to out (capacity cap floats). */
int jp_part_passage_vectors(const jp_part *p, uint64_t pid, float *out, size_t cap, int *doclen);

#endif /* JP_PART_H */
