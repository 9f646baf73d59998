/* hash.h: stable hashes. jp_route_partition() is THE function that decides
 * which partition owns a document: the MPI indexer places documents with it
 * and the coordinator routes upserts/deletes with it, so both must agree
 * forever. Changing it changes the on-disk placement of every index.
 * Pure functions. */
#ifndef JP_HASH_H
#define JP_HASH_H
#include <stddef.h>
#include <stdint.h>

/* XXH3-64 with seed 0. */
uint64_t jp_hash64(const void *data, size_t len);

/* Partition in [0, n_partitions) that owns document `doc_id` (its bytes,
 * exactly as given by the user). n_partitions must be >= 1. */
uint32_t jp_route_partition(const char *doc_id, size_t len, uint32_t n_partitions);

/* 128-bit XXH3 of a sequence of buffers, as 32 lowercase hex chars + NUL. */
struct jp_hasher;
struct jp_hasher *jp_hasher_create(void);
void jp_hasher_update(struct jp_hasher *h, const void *data, size_t len);
void jp_hasher_hex(struct jp_hasher *h, char out[33]);
/* A copy of h's state (NULL when out of memory): hash a common prefix once,
 * finish two digests. */
struct jp_hasher *jp_hasher_copy(const struct jp_hasher *h);
void jp_hasher_destroy(struct jp_hasher *h);

/* splitmix64: the seeded PRNG used wherever results must be reproducible
 * (random checkpoints, k-means init, sampling). *state advances. */
uint64_t jp_rand64(uint64_t *state);
/* Uniform float in [0, 1). */
float jp_randf(uint64_t *state);
/* Standard normal (Box-Muller). */
float jp_randn(uint64_t *state);

#endif /* JP_HASH_H */
