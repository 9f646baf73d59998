/* part.c: the mutable side of a jp_part (part.h, layout in part_int.h):
 * create/destroy, add a passage, remove a document, compaction, stats and
 * per-passage lookups. Search lives in search.c, the document table and
 * the metadata index in part_filter.c.
 *
 * jp_part_add is all-or-nothing: it first reserves every array it will
 * write (slots, embeddings, IVF lists, maps, document entry, postings) and
 * only then commits, with no failure point left, so an out-of-memory error
 * leaves the partition exactly as it was (the OOM test walks every
 * allocation).
 *
 * Compaction also gives back the arrays' doubling slack, so a caller that
 * bulk-loads a partition and then compacts holds about what it stores.
 *
 * Dead slots (removed passages) keep their embeddings until compaction;
 * jp_part_remove_doc compacts by itself once dead slots outnumber live ones
 * (and there are more than COMPACT_MIN), so memory stays within twice the
 * live size at an amortised O(1) cost per removed passage.
 *
 * Thread-safety: see part.h (no lock; writers need exclusive access).
 * Allocation: jp_malloc family; arrays grow by doubling. */
#include "index/part.h"
#include "index/part_int.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/mem.h"

#include <string.h>

/* Auto-compaction threshold: below this many dead slots compaction is not
 * worth rewriting the arrays. */
#define COMPACT_MIN 1024
/* Slot numbers are uint32 with UINT32_MAX reserved as "empty". */
#define MAX_SLOTS ((size_t)UINT32_MAX - 1)

/* ---- pid map ------------------------------------------------------------------ */

static inline size_t pid_home(const struct jp_part *p, uint64_t pid)
{
  return (size_t)jp_hash64(&pid, sizeof pid) & (p->pid_cap - 1);
}

static uint32_t pid_find(const struct jp_part *p, uint64_t pid)
{
  if (p->pid_cap == 0) return JP_PART_EMPTY;
  size_t mask = p->pid_cap - 1, i = pid_home(p, pid);
  for (;; i = (i + 1) & mask) {
    if (p->pid_vals[i] == JP_PART_EMPTY) return JP_PART_EMPTY;
    if (p->pid_keys[i] == pid) return p->pid_vals[i];
  }
}

static void pid_insert(struct jp_part *p, uint64_t pid, uint32_t slot)
{
  size_t mask = p->pid_cap - 1, i = pid_home(p, pid);
  while (p->pid_vals[i] != JP_PART_EMPTY) i = (i + 1) & mask;
  p->pid_keys[i] = pid;
  p->pid_vals[i] = slot;
  p->pid_count++;
}

static void pid_erase(struct jp_part *p, uint64_t pid)
{
  size_t mask = p->pid_cap - 1, i = pid_home(p, pid);
  for (;; i = (i + 1) & mask) {
    if (p->pid_vals[i] == JP_PART_EMPTY) return;
    if (p->pid_keys[i] == pid) break;
  }
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (p->pid_vals[j] == JP_PART_EMPTY) break;
    size_t k = pid_home(p, p->pid_keys[j]);
    int between = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (between) continue;
    p->pid_keys[i] = p->pid_keys[j];
    p->pid_vals[i] = p->pid_vals[j];
    i = j;
  }
  p->pid_vals[i] = JP_PART_EMPTY;
  p->pid_count--;
}

/* Rebuild the pid map from the live slots (sizes unchanged). */
static void pid_rehash(struct jp_part *p)
{
  for (size_t i = 0; i < p->pid_cap; i++) p->pid_vals[i] = JP_PART_EMPTY;
  p->pid_count = 0;
  for (uint32_t s = 0; s < p->n_slots; s++)
    if (!p->slot_dead[s]) pid_insert(p, p->slot_pid[s], s);
}

static int pid_reserve(struct jp_part *p, size_t need)
{
  size_t want = p->pid_count + need;
  if (p->pid_cap >= 16 && want * 2 <= p->pid_cap) return 0;
  size_t cap = p->pid_cap ? p->pid_cap : 16;
  while (want * 2 > cap) cap *= 2;
  uint64_t *k = jp_malloc(sizeof *k * cap);
  uint32_t *v = jp_malloc(sizeof *v * cap);
  if (!k || !v) {
    jp_free(k);
    jp_free(v);
    return JP_ENOMEM;
  }
  jp_free(p->pid_keys);
  jp_free(p->pid_vals);
  p->pid_keys = k;
  p->pid_vals = v;
  p->pid_cap = cap;
  pid_rehash(p);
  return 0;
}

/* ---- create / destroy -------------------------------------------------------------- */

int jp_part_create(const struct jp_codec *codec, jp_part **out)
{
  *out = NULL;
  if (!codec || !codec->centroids || codec->ncentroids <= 0 || codec->dim <= 0)
    return jp_err(JP_EINVAL, "part: codec is not initialised");
  jp_part *p = jp_calloc(1, sizeof *p);
  if (!p) return JP_ENOMEM;
  int rc = jp_codec_copy(&p->codec, codec);
  if (rc < 0) {
    jp_free(p);
    return rc;
  }
  p->ivf = jp_calloc((size_t)codec->ncentroids, sizeof *p->ivf);
  if (!p->ivf) {
    jp_codec_fini(&p->codec);
    jp_free(p);
    return JP_ENOMEM;
  }
  jp_codec_lut_init(&p->codec, &p->lut);
  p->pbytes = jp_codec_packed_bytes(&p->codec);
  p->code_bytes = codec->ncentroids <= 65536 ? 2 : 4;
  *out = p;
  return 0;
}

void jp_part_destroy(jp_part *p)
{
  if (!p) return;
  for (int c = 0; c < p->codec.ncentroids; c++) jp_free(p->ivf[c].slots);
  jp_free(p->ivf);
  for (uint32_t e = 0; e < p->n_docs; e++) {
    jp_free(p->docs[e].id);
    jp_free(p->docs[e].meta);
    jp_free(p->docs[e].slots);
  }
  jp_free(p->docs);
  jp_free(p->doc_tab);
  for (uint32_t q = 0; q < p->n_posts; q++) {
    jp_free(p->posts[q].kv);
    jp_free(p->posts[q].docs);
  }
  jp_free(p->posts);
  jp_free(p->post_tab);
  jp_free(p->pid_keys);
  jp_free(p->pid_vals);
  jp_free(p->slot_pid);
  jp_free(p->slot_off);
  jp_free(p->slot_len);
  jp_free(p->slot_doc);
  jp_free(p->slot_dead);
  jp_free(p->codes);
  jp_free(p->packed);
  jp_codec_fini(&p->codec);
  jp_free(p);
}

const struct jp_codec *jp_part_codec(const jp_part *p) { return &p->codec; }

/* ---- add -------------------------------------------------------------------------------- */

static int grow_slots(struct jp_part *p, size_t need)
{
  size_t cap;
  int rc;
  if (need <= p->cap_slots) return 0;
  if (need > MAX_SLOTS) return jp_err(JP_ETOOBIG, "part: more than %zu passage slots", MAX_SLOTS);
  /* Every slot array shares one capacity; grow each to the same new size. */
  size_t ncap = p->cap_slots ? p->cap_slots : 64;
  while (ncap < need) ncap = ncap > MAX_SLOTS / 2 ? MAX_SLOTS : ncap * 2;
#define GROW(arr)                                                              \
  do {                                                                         \
    cap = p->cap_slots;                                                        \
    rc = jp_grow((void **)&p->arr, &cap, ncap, sizeof *p->arr, ncap);          \
    if (rc < 0) return rc;                                                     \
  } while (0)
  GROW(slot_pid);
  GROW(slot_off);
  GROW(slot_len);
  GROW(slot_doc);
  GROW(slot_dead);
#undef GROW
  p->cap_slots = (uint32_t)ncap;
  return 0;
}

static int grow_emb(struct jp_part *p, uint64_t need)
{
  if (need <= p->cap_emb) return 0;
  uint64_t ncap = p->cap_emb ? p->cap_emb : 4096;
  while (ncap < need) ncap *= 2;
  if (ncap > SIZE_MAX / (p->pbytes > 4 ? p->pbytes : 4))
    return jp_err(JP_ETOOBIG, "part: %llu embeddings", (unsigned long long)need);
  void *c = jp_realloc(p->codes, (size_t)p->code_bytes * (size_t)ncap);
  if (!c) return JP_ENOMEM;
  p->codes = c;
  uint8_t *r = jp_realloc(p->packed, p->pbytes * (size_t)ncap);
  if (!r) return JP_ENOMEM;    /* codes grew, packed did not: capacity stays the old one */
  p->packed = r;
  p->cap_emb = ncap;
  return 0;
}

static int ivf_reserve(struct jp_part *p, uint32_t c)
{
  struct jp_ivf_list *l = &p->ivf[c];
  size_t cap = l->cap;
  int rc = jp_grow((void **)&l->slots, &cap, (size_t)l->n + 1, sizeof *l->slots, MAX_SLOTS);
  if (rc < 0) return rc;
  l->cap = (uint32_t)cap;
  return 0;
}

/* Reserve room for a new document entry (entry array, map, id copy). */
static int doc_new_reserve(struct jp_part *p, const char *doc_id, size_t len, char **id_copy)
{
  size_t cap = p->cap_docs;
  int rc;
  if (p->n_docs >= UINT32_MAX - 1) return jp_err(JP_ETOOBIG, "part: too many documents");
  rc = jp_grow((void **)&p->docs, &cap, (size_t)p->n_docs + 1, sizeof *p->docs, 0);
  if (rc < 0) return rc;
  p->cap_docs = (uint32_t)cap;
  rc = jp_part__doc_reserve(p, 1);
  if (rc < 0) return rc;
  *id_copy = jp_malloc(len + 1);
  if (!*id_copy) return JP_ENOMEM;
  memcpy(*id_copy, doc_id, len);
  (*id_copy)[len] = '\0';
  return 0;
}

int jp_part_add(jp_part *p, uint64_t pid, const char *doc_id, size_t doc_id_len,
                const char *metadata_json, int doclen, const uint32_t *codes,
                const uint8_t *packed)
{
  char **kvs = NULL, **old_kvs = NULL, *meta = NULL, *id_copy = NULL;
  size_t *kv_lens = NULL, *old_lens = NULL, nkv = 0, n_old = 0;
  uint32_t *post_ids = NULL, *new_slots = NULL;
  int rc;

  if (!p || !doc_id) return jp_err(JP_EINVAL, "part add: NULL argument");
  if (doclen < 0) return jp_err(JP_EINVAL, "part add: negative doclen %d", doclen);
  if (doclen > 0 && (!codes || !packed)) return jp_err(JP_EINVAL, "part add: NULL codes or residuals");
  for (int i = 0; i < doclen; i++)
    if (codes[i] >= (uint32_t)p->codec.ncentroids)
      return jp_err(JP_EINVAL, "part add: code %u out of range (%d centroids)", codes[i],
                    p->codec.ncentroids);
  if (pid_find(p, pid) != JP_PART_EMPTY)
    return jp_err(JP_EEXISTS, "part add: passage %llu already exists", (unsigned long long)pid);

  /* ---- reserve everything ---- */
  if (metadata_json) {
    rc = jp_part__meta_kvs(metadata_json, &kvs, &kv_lens, &nkv, &meta);
    if (rc < 0) return rc;
  }
  uint32_t e = jp_part__doc_find(p, doc_id, doc_id_len);
  const int new_doc = e == JP_PART_EMPTY;
  /* An existing document's metadata changes only when new metadata differs. */
  const int meta_change =
      new_doc ? meta != NULL : meta && (!p->docs[e].meta || strcmp(p->docs[e].meta, meta) != 0);
  if ((rc = grow_slots(p, (size_t)p->n_slots + 1)) < 0) goto out;
  if ((rc = grow_emb(p, p->n_emb + (uint64_t)doclen)) < 0) goto out;
  for (int i = 0; i < doclen; i++)
    if ((rc = ivf_reserve(p, codes[i])) < 0) goto out;
  if ((rc = pid_reserve(p, 1)) < 0) goto out;
  if (new_doc) {
    if ((rc = doc_new_reserve(p, doc_id, doc_id_len, &id_copy)) < 0) goto out;
    new_slots = jp_malloc(sizeof *new_slots * 4);
    if (!new_slots) {
      rc = JP_ENOMEM;
      goto out;
    }
  } else {
    struct jp_doc_ent *d = &p->docs[e];
    size_t cap = d->cap_slots;
    rc = jp_grow((void **)&d->slots, &cap, (size_t)d->n_slots + 1, sizeof *d->slots, MAX_SLOTS);
    if (rc < 0) goto out;
    d->cap_slots = (uint32_t)cap;
  }
  if (meta_change && nkv > 0) {
    post_ids = jp_malloc(sizeof *post_ids * nkv);
    if (!post_ids) {
      rc = JP_ENOMEM;
      goto out;
    }
    for (size_t i = 0; i < nkv; i++)
      if ((rc = jp_part__post_reserve(p, kvs[i], kv_lens[i], &post_ids[i])) < 0) goto out;
  }
  /* Replacing a document's metadata drops it from the postings of its old
   * values (a removal, which needs no memory once the old values are known). */
  if (meta_change && !new_doc && p->docs[e].meta) {
    char *old_compact = NULL;
    rc = jp_part__meta_kvs(p->docs[e].meta, &old_kvs, &old_lens, &n_old, &old_compact);
    jp_free(old_compact);
    if (rc < 0) goto out;
  }

  /* ---- commit: nothing below can fail ---- */
  uint32_t slot = p->n_slots++;
  if (new_doc) {
    e = p->n_docs++;
    struct jp_doc_ent *d = &p->docs[e];
    memset(d, 0, sizeof *d);
    d->id = id_copy;
    d->id_len = doc_id_len;
    d->slots = new_slots;
    d->cap_slots = 4;
    d->live = 1;
    id_copy = NULL;
    new_slots = NULL;
    jp_part__doc_insert(p, e);
    p->live_docs++;
  }
  struct jp_doc_ent *d = &p->docs[e];
  d->slots[d->n_slots++] = slot;
  if (meta_change) {
    for (size_t i = 0; i < n_old; i++) {
      uint32_t q = jp_part__post_find(p, old_kvs[i], old_lens[i]);
      if (q != JP_PART_EMPTY) jp_part__post_remove(p, q, e);
    }
    jp_free(d->meta);
    d->meta = meta;
    meta = NULL;
    for (size_t i = 0; i < nkv; i++) jp_part__post_add(p, post_ids[i], e);
  }
  p->slot_pid[slot] = pid;
  p->slot_off[slot] = p->n_emb;
  p->slot_len[slot] = doclen;
  p->slot_doc[slot] = e;
  p->slot_dead[slot] = 0;
  if (doclen > 0) {
    if (p->code_bytes == 4) {
      memcpy((uint32_t *)p->codes + p->n_emb, codes, sizeof *codes * (size_t)doclen);
    } else {
      uint16_t *dst = (uint16_t *)p->codes + p->n_emb;
      for (int i = 0; i < doclen; i++) dst[i] = (uint16_t)codes[i];
    }
    memcpy(p->packed + p->n_emb * p->pbytes, packed, p->pbytes * (size_t)doclen);
  }
  p->n_emb += (uint64_t)doclen;
  for (int i = 0; i < doclen; i++) {
    struct jp_ivf_list *l = &p->ivf[codes[i]];
    if (l->n == 0 || l->slots[l->n - 1] != slot) l->slots[l->n++] = slot;
  }
  pid_insert(p, pid, slot);
  p->live_passages++;
  p->live_emb += (uint64_t)doclen;
  if (doclen > 0) p->live_nonempty++;
  if (doclen > p->max_doclen) p->max_doclen = doclen;
  rc = 0;

out:
  jp_part__free_kvs(kvs, kv_lens, nkv);
  jp_part__free_kvs(old_kvs, old_lens, n_old);
  jp_free(post_ids);
  jp_free(new_slots);
  jp_free(meta);
  jp_free(id_copy);
  return rc;
}

/* ---- remove / compact ---------------------------------------------------------------------- */

int jp_part_remove_doc(jp_part *p, const char *doc_id, size_t doc_id_len, int *n_removed)
{
  if (n_removed) *n_removed = 0;
  if (!p || !doc_id) return jp_err(JP_EINVAL, "part remove: NULL argument");
  uint32_t e = jp_part__doc_find(p, doc_id, doc_id_len);
  if (e == JP_PART_EMPTY) return 0;
  struct jp_doc_ent *d = &p->docs[e];
  for (uint32_t i = 0; i < d->n_slots; i++) {
    uint32_t s = d->slots[i];
    p->slot_dead[s] = 1;
    pid_erase(p, p->slot_pid[s]);
    p->live_passages--;
    p->live_emb -= (uint64_t)p->slot_len[s];
    if (p->slot_len[s] > 0) p->live_nonempty--;
    p->dead_slots++;
  }
  if (n_removed) *n_removed = (int)d->n_slots;
  jp_part__doc_erase(p, e);
  d->live = 0;
  d->n_slots = 0;
  p->live_docs--;
  if (p->dead_slots > COMPACT_MIN && p->dead_slots > p->live_passages) {
    int rc = jp_part_compact(p);
    if (rc < 0)   /* the removal itself stands; compaction waits for the next chance */
      JP_LOG_WARN("part: compaction after remove failed: %s", jp_errmsg(rc));
  }
  return 0;
}

/* Shrink *arr (capacity *cap items) to n items (at least 1). A failed
 * shrink keeps the larger block: nothing is lost. */
static void shrink(uint32_t **arr, uint32_t n, uint32_t *cap)
{
  if (!*arr || n >= *cap) return;
  if (n == 0) n = 1;
  uint32_t *q = jp_realloc(*arr, sizeof *q * n);
  if (!q) return;
  *arr = q;
  *cap = n;
}

/* Give back the doubling slack of every array (after compaction, so a
 * bulk-loaded partition holds what it stores and little more). */
static void trim(struct jp_part *p)
{
  /* A failed shrink leaves a larger block, so after trying every array the
   * shared capacity n is a lower bound of all of them. */
  if (p->n_slots < p->cap_slots && p->n_slots > 0) {
    size_t n = p->n_slots;
    void *q;
    if ((q = jp_realloc(p->slot_pid, sizeof *p->slot_pid * n))) p->slot_pid = q;
    if ((q = jp_realloc(p->slot_off, sizeof *p->slot_off * n))) p->slot_off = q;
    if ((q = jp_realloc(p->slot_len, sizeof *p->slot_len * n))) p->slot_len = q;
    if ((q = jp_realloc(p->slot_doc, sizeof *p->slot_doc * n))) p->slot_doc = q;
    if ((q = jp_realloc(p->slot_dead, sizeof *p->slot_dead * n))) p->slot_dead = q;
    p->cap_slots = (uint32_t)n;
  }
  if (p->n_emb < p->cap_emb && p->n_emb > 0) {
    void *q;
    if ((q = jp_realloc(p->codes, (size_t)p->code_bytes * (size_t)p->n_emb))) p->codes = q;
    if ((q = jp_realloc(p->packed, p->pbytes * (size_t)p->n_emb))) p->packed = q;
    p->cap_emb = p->n_emb;
  }
  for (int c = 0; c < p->codec.ncentroids; c++)
    shrink(&p->ivf[c].slots, p->ivf[c].n, &p->ivf[c].cap);
  for (uint32_t e = 0; e < p->n_docs; e++)
    shrink(&p->docs[e].slots, p->docs[e].n_slots, &p->docs[e].cap_slots);
  for (uint32_t q = 0; q < p->n_posts; q++)
    shrink(&p->posts[q].docs, p->posts[q].n, &p->posts[q].cap);
}

int jp_part_compact(jp_part *p)
{
  if (!p) return jp_err(JP_EINVAL, "part compact: NULL");
  uint32_t *slot_map = jp_malloc(sizeof *slot_map * (p->n_slots ? p->n_slots : 1));
  uint32_t *doc_map = jp_malloc(sizeof *doc_map * (p->n_docs ? p->n_docs : 1));
  if (!slot_map || !doc_map) {
    jp_free(slot_map);
    jp_free(doc_map);
    return JP_ENOMEM;
  }
  /* Documents: keep live entries in order; free the dead ones. */
  uint32_t nd = 0;
  for (uint32_t e = 0; e < p->n_docs; e++) {
    if (!p->docs[e].live) {
      doc_map[e] = JP_PART_EMPTY;
      jp_free(p->docs[e].id);
      jp_free(p->docs[e].meta);
      jp_free(p->docs[e].slots);
      continue;
    }
    doc_map[e] = nd;
    if (nd != e) p->docs[nd] = p->docs[e];
    nd++;
  }
  p->n_docs = nd;
  /* Slots and embeddings: slide live ones down, in order. */
  uint32_t ns = 0;
  uint64_t ne = 0;
  int32_t maxlen = 0;
  for (uint32_t s = 0; s < p->n_slots; s++) {
    if (p->slot_dead[s]) {
      slot_map[s] = JP_PART_EMPTY;
      continue;
    }
    slot_map[s] = ns;
    int32_t len = p->slot_len[s];
    uint64_t off = p->slot_off[s];
    if (ne != off && len > 0) {
      const size_t cb = (size_t)p->code_bytes;
      memmove((uint8_t *)p->codes + ne * cb, (uint8_t *)p->codes + off * cb, cb * (size_t)len);
      memmove(p->packed + ne * p->pbytes, p->packed + off * p->pbytes, p->pbytes * (size_t)len);
    }
    p->slot_pid[ns] = p->slot_pid[s];
    p->slot_off[ns] = ne;
    p->slot_len[ns] = len;
    p->slot_doc[ns] = doc_map[p->slot_doc[s]];
    p->slot_dead[ns] = 0;
    if (len > maxlen) maxlen = len;
    ne += (uint64_t)len;
    ns++;
  }
  p->n_slots = ns;
  p->n_emb = ne;
  p->dead_slots = 0;
  p->max_doclen = maxlen;
  /* IVF lists and document slot lists: renumber, drop dead (order kept). */
  for (int c = 0; c < p->codec.ncentroids; c++) {
    struct jp_ivf_list *l = &p->ivf[c];
    uint32_t m = 0;
    for (uint32_t i = 0; i < l->n; i++)
      if (slot_map[l->slots[i]] != JP_PART_EMPTY) l->slots[m++] = slot_map[l->slots[i]];
    l->n = m;
  }
  for (uint32_t e = 0; e < p->n_docs; e++) {
    struct jp_doc_ent *d = &p->docs[e];
    for (uint32_t i = 0; i < d->n_slots; i++) d->slots[i] = slot_map[d->slots[i]];
  }
  /* Postings: renumber documents, drop dead ones; then the maps. */
  uint32_t nq = 0;
  for (uint32_t q = 0; q < p->n_posts; q++) {
    struct jp_kv_post *ps = &p->posts[q];
    uint32_t m = 0;
    for (uint32_t i = 0; i < ps->n; i++)
      if (doc_map[ps->docs[i]] != JP_PART_EMPTY) ps->docs[m++] = doc_map[ps->docs[i]];
    ps->n = m;
    if (m == 0) {
      jp_free(ps->kv);
      jp_free(ps->docs);
      continue;
    }
    if (nq != q) p->posts[nq] = *ps;
    nq++;
  }
  p->n_posts = nq;
  if (p->post_cap) jp_part__post_rehash(p);
  if (p->doc_cap) jp_part__doc_rehash(p);
  if (p->pid_cap) pid_rehash(p);
  jp_free(slot_map);
  jp_free(doc_map);
  trim(p);
  return 0;
}

/* ---- lookups and stats ------------------------------------------------------------------------- */

void jp_part_get_stats(const jp_part *p, struct jp_part_stats *out)
{
  memset(out, 0, sizeof *out);
  if (!p) return;
  out->n_passages = p->live_passages;
  out->n_docs = p->live_docs;
  out->n_embeddings = p->live_emb;
  out->n_dead_slots = p->dead_slots;
  uint64_t b = sizeof *p;
  b += (uint64_t)p->cap_slots * (sizeof *p->slot_pid + sizeof *p->slot_off + sizeof *p->slot_len +
                                 sizeof *p->slot_doc + sizeof *p->slot_dead);
  b += p->cap_emb * ((uint64_t)p->code_bytes + p->pbytes);
  b += (uint64_t)p->codec.ncentroids * (sizeof *p->ivf + (uint64_t)p->codec.dim * sizeof(float));
  for (int c = 0; c < p->codec.ncentroids; c++) b += (uint64_t)p->ivf[c].cap * sizeof(uint32_t);
  b += p->pid_cap * (sizeof *p->pid_keys + sizeof *p->pid_vals);
  b += (uint64_t)p->cap_docs * sizeof *p->docs + p->doc_cap * sizeof *p->doc_tab;
  for (uint32_t e = 0; e < p->n_docs; e++) {
    const struct jp_doc_ent *d = &p->docs[e];
    b += d->id_len + 1 + (uint64_t)d->cap_slots * sizeof(uint32_t);
    if (d->meta) b += strlen(d->meta) + 1;
  }
  b += (uint64_t)p->cap_posts * sizeof *p->posts + p->post_cap * sizeof *p->post_tab;
  for (uint32_t q = 0; q < p->n_posts; q++)
    b += p->posts[q].kv_len + 1 + (uint64_t)p->posts[q].cap * sizeof(uint32_t);
  out->mem_bytes = b;
}

int jp_part_doc_pids(const jp_part *p, const char *doc_id, size_t len, uint64_t *out, int cap,
                     int *n)
{
  *n = 0;
  if (!p || !doc_id || cap < 0) return jp_err(JP_EINVAL, "part doc_pids: bad argument");
  uint32_t e = jp_part__doc_find(p, doc_id, len);
  if (e == JP_PART_EMPTY) return 0;
  const struct jp_doc_ent *d = &p->docs[e];
  *n = (int)d->n_slots;
  for (uint32_t i = 0; i < d->n_slots && (int)i < cap; i++) out[i] = p->slot_pid[d->slots[i]];
  if ((int)d->n_slots > cap)
    return jp_err(JP_ETOOBIG, "part doc_pids: document has %u passages, room for %d", d->n_slots, cap);
  return 0;
}

int jp_part_passage_vectors(const jp_part *p, uint64_t pid, float *out, size_t cap, int *doclen)
{
  *doclen = 0;
  if (!p) return jp_err(JP_EINVAL, "part passage_vectors: NULL");
  uint32_t s = pid_find(p, pid);
  if (s == JP_PART_EMPTY)
    return jp_err(JP_ENOTFOUND, "passage %llu is not in this partition", (unsigned long long)pid);
  int32_t len = p->slot_len[s];
  *doclen = len;
  if ((size_t)len * (size_t)p->codec.dim > cap)
    return jp_err(JP_ETOOBIG, "passage %llu has %d vectors, room for %zu floats",
                  (unsigned long long)pid, len, cap);
  /* One vector at a time: the codec reads uint32 codes. */
  for (int32_t i = 0; i < len; i++) {
    uint64_t e = p->slot_off[s] + (uint64_t)i;
    uint32_t code = jp_part__code(p, e);
    jp_codec_decompress_lut(&p->codec, &p->lut, &code, p->packed + e * p->pbytes, 1,
                            out + (size_t)i * (size_t)p->codec.dim);
  }
  return 0;
}
