/* shard.h: japlaid-shard, the server of one index partition
 * (japlaid.v1.Shard, proto/japlaid/v1/shard.proto).
 *
 * main.c parses the options, starts the gRPC server (common/rpc), loads the
 * partition with jp_store_open on a separate thread and turns health
 * SERVING once it is loaded; until then every method answers UNAVAILABLE.
 * rpc.c holds the method table and the request parts the handlers share
 * (search knobs, restrictions, the model-identity guard). One file per
 * handler: h_search.c, h_upsert.c, h_delete.c, h_stats.c.
 *
 * Thread-safety: a struct shard is built by main.c before the server
 * starts; afterwards only `store` changes (set once, atomically, when the
 * partition is loaded). jp_store is safe from any number of threads.
 * Handlers run on the server's worker threads. Allocation: handlers take
 * everything from the call's arena (rpc_ctx_arena). */
#ifndef JP_SHARD_H
#define JP_SHARD_H
#include <stdatomic.h>
#include <stdint.h>

#include "index/store.h"
#include "japlaid/v1/shard.pb-c.h"
#include "rpc/server.h"
#include "util/pool.h"

/* The health service name of this API (besides "" for the whole server). */
#define SHARD_SERVICE "japlaid.v1.Shard"

struct shard {
  _Atomic(jp_store *) store;          /* NULL while loading; then the open partition */
  jp_pool *pool;                      /* data-parallel help for one search (may be NULL) */
  struct jp_store_meta meta;          /* copied from the store at load */
  int dim, nbits, ncentroids;         /* the codec's shape */
  char codebook_hash[33];             /* see shard_codebook_hash */
  uint64_t start_ns;                  /* jp_now_ns() at process start */
};

/* The method table (rpc.c) and its length. */
extern const struct rpc_method shard_methods[];
extern const int shard_n_methods;

/* Record an open store in sh (meta, codec shape, codebook hash) and publish
 * it to the handlers. */
void shard_publish(struct shard *sh, jp_store *st);

/* The loaded store, or JP_EUNAVAIL ("partition is loading"). */
int shard_store(struct shard *sh, jp_store **out);

/* "" or the partition's model identity, else JP_EMISMATCH naming both. */
int shard_check_identity(const struct shard *sh, const char *identity);

/* XXH3-128 (hex) over dim, nbits, ncentroids, the centroids, bucket cutoffs
 * and weights: equal in every partition of one index. */
void shard_codebook_hash(const struct jp_codec *c, char out[33]);

/* Wire knobs -> jp_search_params, validated (k is required here). */
int shard_search_params(const Japlaid__V1__SearchParams *p, struct jp_search_params *out);

/* Wire doc_ids / filters -> jp_restrict with arrays in arena `a`. */
int shard_restrict(char **doc_ids, size_t n_doc_ids, Japlaid__V1__MetadataFilter **filters,
                   size_t n_filters, struct jp_arena *a, struct jp_restrict *out);

int h_search(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp);
int h_upsert(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp);
int h_delete(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp);
int h_stats(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp);

#endif /* JP_SHARD_H */
