/* part_int.h: the inside of a jp_part, shared by part.c (mutation),
 * part_filter.c (document table lookups, metadata index, restrictions) and
 * search.c (PLAID). Internal to common/index and its tests.
 *
 * Layout (all arrays grow by doubling, capacities kept apart from counts so
 * that jp_part_add can reserve everything first and then commit without a
 * failure point, which makes it all-or-nothing):
 *   slots      dense passage slots in insertion order: pid, first embedding,
 *              doclen, document index, dead flag. A removed passage's slot
 *              is dead until compaction.
 *   embeddings codes[n_emb] and packed[n_emb * pbytes]; a slot owns the
 *              range [off, off + doclen). Codes are uint16 when the codebook
 *              has at most 65536 centroids (every ColBERT plan up to ~4e9
 *              embeddings), else uint32: 2 bytes per embedding saved, and
 *              half the bytes for stages 4 and 5 to stream.
 *   ivf        per centroid, the ascending slots whose passage uses it (each
 *              slot once). New slots are the largest, so add appends.
 *   pid map    open addressing (linear probing, backward-shift delete):
 *              pid -> slot, live passages only.
 *   documents  entries in creation order: id, compact metadata text, live
 *              slots. A removed document's entry stays (dead) until
 *              compaction; re-adding the id makes a new entry.
 *   doc map    open addressing: id -> entry, live documents only.
 *   kv index   "key\0value" -> ascending document entries whose metadata has
 *              that top-level scalar; dead entries are skipped when read. */
#ifndef JP_PART_INT_H
#define JP_PART_INT_H
#include <stddef.h>
#include <stdint.h>

#include "index/codec.h"
#include "index/index_int.h"
#include "index/part.h"

#define JP_PART_EMPTY UINT32_MAX   /* empty cell of the open-addressing tables */

struct jp_ivf_list {
  uint32_t *slots;
  uint32_t n, cap;
};

struct jp_doc_ent {
  char *id;                 /* NUL-terminated copy (ids may hold NULs: id_len rules) */
  size_t id_len;
  char *meta;               /* compact JSON object text, or NULL */
  uint32_t *slots;          /* live slots of this document, ascending */
  uint32_t n_slots, cap_slots;
  int live;
};

struct jp_kv_post {
  char *kv;                 /* key, NUL, value */
  size_t kv_len;
  uint32_t *docs;           /* ascending document entries */
  uint32_t n, cap;
};

struct jp_part {
  struct jp_codec codec;
  struct jp_codec_lut lut;
  size_t pbytes;            /* packed bytes per vector */

  uint32_t n_slots, cap_slots;
  uint64_t *slot_pid;
  uint64_t *slot_off;
  int32_t *slot_len;
  uint32_t *slot_doc;
  uint8_t *slot_dead;

  uint64_t n_emb, cap_emb;
  void *codes;              /* uint16_t or uint32_t [cap_emb], see code_bytes */
  int code_bytes;           /* 2 (ncentroids <= 65536) or 4 */
  uint8_t *packed;

  struct jp_ivf_list *ivf;  /* [ncentroids] */

  uint64_t *pid_keys;       /* [pid_cap] */
  uint32_t *pid_vals;       /* [pid_cap], JP_PART_EMPTY = free */
  size_t pid_cap, pid_count;

  struct jp_doc_ent *docs;
  uint32_t n_docs, cap_docs;
  uint32_t *doc_tab;        /* [doc_cap] document entries, JP_PART_EMPTY = free */
  size_t doc_cap, doc_count;

  struct jp_kv_post *posts;
  uint32_t n_posts, cap_posts;
  uint32_t *post_tab;       /* [post_cap] */
  size_t post_cap;

  uint64_t live_passages, live_docs, live_emb, dead_slots;
  uint64_t live_nonempty;   /* live passages with doclen > 0 (the only ones search returns) */
  int32_t max_doclen;       /* over all slots ever added (sizes search scratch) */
};

/* Code i of the embedding array. */
static inline uint32_t jp_part__code(const struct jp_part *p, uint64_t i)
{
  return p->code_bytes == 2 ? ((const uint16_t *)p->codes)[i] : ((const uint32_t *)p->codes)[i];
}

/* Codes [off, off + n) widened to uint32 (the codec's type). */
static inline void jp_part__codes32(const struct jp_part *p, uint64_t off, size_t n, uint32_t *out)
{
  if (p->code_bytes == 4) {
    const uint32_t *c = (const uint32_t *)p->codes + off;
    for (size_t i = 0; i < n; i++) out[i] = c[i];
  } else {
    const uint16_t *c = (const uint16_t *)p->codes + off;
    for (size_t i = 0; i < n; i++) out[i] = c[i];
  }
}

/* ---- part_filter.c ------------------------------------------------------------ */

uint64_t jp_part__hash_bytes(const void *s, size_t n);
/* Live document entry of an id, or JP_PART_EMPTY. */
uint32_t jp_part__doc_find(const struct jp_part *p, const char *id, size_t len);
/* Insert entry `e` (its id already set) into the document map; the map must
 * have room (jp_part__doc_reserve). */
void jp_part__doc_insert(struct jp_part *p, uint32_t e);
void jp_part__doc_erase(struct jp_part *p, uint32_t e);
int  jp_part__doc_reserve(struct jp_part *p, size_t need);
/* Rebuild the document map from the live entries (after compaction). */
void jp_part__doc_rehash(struct jp_part *p);

/* Canonical "key\0value" strings of an object's top-level scalars (strings
 * as their text, integers and reals in their shortest JSON form, booleans as
 * true/false; null, arrays and objects are not indexed). Allocates *out
 * (jp_free each string and the array). */
int  jp_part__meta_kvs(const char *meta_json, char ***out, size_t **lens, size_t *n,
                       char **compact);
void jp_part__free_kvs(char **kvs, size_t *lens, size_t n);
/* Find or create the posting of kv and reserve room for one more entry. */
int  jp_part__post_reserve(struct jp_part *p, const char *kv, size_t len, uint32_t *post);
/* Insert document entry e into a posting (sorted position); room reserved. */
void jp_part__post_add(struct jp_part *p, uint32_t post, uint32_t e);
void jp_part__post_remove(struct jp_part *p, uint32_t post, uint32_t e);
uint32_t jp_part__post_find(const struct jp_part *p, const char *kv, size_t len);
/* Rebuild the kv map (after compaction removed postings). */
void jp_part__post_rehash(struct jp_part *p);

/* The live slots a restriction allows, ascending, allocated in `a`.
 * *unrestricted = 1 (and nothing allocated) when r restricts nothing. */
int jp_part__allowed_slots(const struct jp_part *p, const struct jp_restrict *r,
                           struct jp_arena *a, uint32_t **slots, size_t *n, int *unrestricted);

#endif /* JP_PART_INT_H */
