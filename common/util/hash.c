/* hash.c: see hash.h. */
#include "util/hash.h"
#include "util/mem.h"

#include <math.h>
#include <stdio.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t jp_hash64(const void *data, size_t len) { return XXH3_64bits(data, len); }

uint32_t jp_route_partition(const char *doc_id, size_t len, uint32_t n_partitions)
{
  /* A plain modulo of a well-mixed 64-bit hash: uniform, and simple enough to
   * reimplement in any client that wants to route by itself. */
  if (n_partitions <= 1) return 0;
  return (uint32_t)(XXH3_64bits(doc_id, len) % n_partitions);
}

struct jp_hasher {
  XXH3_state_t st;
};

struct jp_hasher *jp_hasher_create(void)
{
  struct jp_hasher *h = jp_aligned_alloc(sizeof *h);
  if (!h) return NULL;
  XXH3_128bits_reset(&h->st);
  return h;
}

void jp_hasher_update(struct jp_hasher *h, const void *data, size_t len)
{
  XXH3_128bits_update(&h->st, data, len);
}

struct jp_hasher *jp_hasher_copy(const struct jp_hasher *h)
{
  struct jp_hasher *c = jp_aligned_alloc(sizeof *c);
  if (!c) return NULL;
  XXH3_copyState(&c->st, &h->st);
  return c;
}

void jp_hasher_hex(struct jp_hasher *h, char out[33])
{
  XXH128_hash_t d = XXH3_128bits_digest(&h->st);
  snprintf(out, 33, "%016llx%016llx", (unsigned long long)d.high64,
           (unsigned long long)d.low64);
}

void jp_hasher_destroy(struct jp_hasher *h) { jp_aligned_free(h); }

uint64_t jp_rand64(uint64_t *state)
{
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

float jp_randf(uint64_t *state)
{
  return (float)(jp_rand64(state) >> 40) * (1.0f / 16777216.0f);
}

float jp_randn(uint64_t *state)
{
  /* Box-Muller; u1 is kept away from 0 so log() is finite. */
  double u1 = ((double)(jp_rand64(state) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
  double u2 = (double)(jp_rand64(state) >> 11) * (1.0 / 9007199254740992.0);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
