/* part_filter.c: the document table and the metadata index of a jp_part,
 * and the resolution of a search restriction (document ids, metadata
 * equality filters) into the allowed passage slots (part_int.h).
 *
 * Metadata is parsed once, when a passage is added: every top-level scalar
 * becomes a "key\0value" posting listing the document entries that carry
 * it. A filtered search intersects postings (the shortest one drives,
 * binary search in the others), so its cost follows the number of matching
 * documents, never the size of the partition; an unfiltered search does
 * not touch this index at all.
 *
 * Value text (what a filter's `value` must equal): a string is its text; an
 * integer its decimal form ("3", "-12"); a real the shortest form that reads
 * back to the same double, with ".0" when it would otherwise look like an
 * integer ("0.5", "3.0", "1e+20"); booleans "true"/"false". null, arrays
 * and objects are not indexed, so no filter matches them.
 *
 * Thread-safety: lookups are read-only; mutations need exclusive access
 * (see part.h). Allocation: table growth and posting growth (jp_malloc);
 * allowed-slot lists come from the caller's arena. */
#include "index/part_int.h"
#include "util/arena.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t jp_part__hash_bytes(const void *s, size_t n) { return jp_hash64(s, n); }

/* ---- document map ------------------------------------------------------------ */

static inline size_t doc_home(const struct jp_part *p, uint32_t e)
{
  return (size_t)jp_hash64(p->docs[e].id, p->docs[e].id_len) & (p->doc_cap - 1);
}

uint32_t jp_part__doc_find(const struct jp_part *p, const char *id, size_t len)
{
  if (p->doc_cap == 0) return JP_PART_EMPTY;
  size_t mask = p->doc_cap - 1, i = (size_t)jp_hash64(id, len) & mask;
  for (;; i = (i + 1) & mask) {
    uint32_t e = p->doc_tab[i];
    if (e == JP_PART_EMPTY) return JP_PART_EMPTY;
    if (p->docs[e].id_len == len && memcmp(p->docs[e].id, id, len) == 0) return e;
  }
}

void jp_part__doc_insert(struct jp_part *p, uint32_t e)
{
  size_t mask = p->doc_cap - 1, i = doc_home(p, e);
  while (p->doc_tab[i] != JP_PART_EMPTY) i = (i + 1) & mask;
  p->doc_tab[i] = e;
  p->doc_count++;
}

void jp_part__doc_erase(struct jp_part *p, uint32_t e)
{
  size_t mask = p->doc_cap - 1, i = doc_home(p, e);
  while (p->doc_tab[i] != e) {
    if (p->doc_tab[i] == JP_PART_EMPTY) return;   /* not present */
    i = (i + 1) & mask;
  }
  /* Backward-shift deletion: pull later members of the probe run into the
   * hole when their home position allows it, so no tombstones are needed. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    uint32_t f = p->doc_tab[j];
    if (f == JP_PART_EMPTY) break;
    size_t k = doc_home(p, f);
    int between = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (between) continue;
    p->doc_tab[i] = f;
    i = j;
  }
  p->doc_tab[i] = JP_PART_EMPTY;
  p->doc_count--;
}

static int doc_resize(struct jp_part *p, size_t cap)
{
  uint32_t *t = jp_malloc(sizeof *t * cap);
  if (!t) return JP_ENOMEM;
  jp_free(p->doc_tab);
  p->doc_tab = t;
  p->doc_cap = cap;
  jp_part__doc_rehash(p);
  return 0;
}

void jp_part__doc_rehash(struct jp_part *p)
{
  for (size_t i = 0; i < p->doc_cap; i++) p->doc_tab[i] = JP_PART_EMPTY;
  p->doc_count = 0;
  for (uint32_t e = 0; e < p->n_docs; e++)
    if (p->docs[e].live) jp_part__doc_insert(p, e);
}

int jp_part__doc_reserve(struct jp_part *p, size_t need)
{
  /* Load factor at most 1/2 keeps linear probing runs short. */
  size_t want = p->doc_count + need;
  if (p->doc_cap >= 16 && want * 2 <= p->doc_cap) return 0;
  size_t cap = p->doc_cap ? p->doc_cap : 16;
  while (want * 2 > cap) cap *= 2;
  if (cap == p->doc_cap) return 0;
  return doc_resize(p, cap);
}

/* ---- metadata key=value index --------------------------------------------------- */

static inline size_t post_home(const struct jp_part *p, uint32_t q)
{
  return (size_t)jp_hash64(p->posts[q].kv, p->posts[q].kv_len) & (p->post_cap - 1);
}

uint32_t jp_part__post_find(const struct jp_part *p, const char *kv, size_t len)
{
  if (p->post_cap == 0) return JP_PART_EMPTY;
  size_t mask = p->post_cap - 1, i = (size_t)jp_hash64(kv, len) & mask;
  for (;; i = (i + 1) & mask) {
    uint32_t q = p->post_tab[i];
    if (q == JP_PART_EMPTY) return JP_PART_EMPTY;
    if (p->posts[q].kv_len == len && memcmp(p->posts[q].kv, kv, len) == 0) return q;
  }
}

void jp_part__post_rehash(struct jp_part *p)
{
  size_t mask = p->post_cap - 1;
  for (size_t i = 0; i < p->post_cap; i++) p->post_tab[i] = JP_PART_EMPTY;
  for (uint32_t q = 0; q < p->n_posts; q++) {
    size_t i = post_home(p, q);
    while (p->post_tab[i] != JP_PART_EMPTY) i = (i + 1) & mask;
    p->post_tab[i] = q;
  }
}

int jp_part__post_reserve(struct jp_part *p, const char *kv, size_t len, uint32_t *post)
{
  uint32_t q = jp_part__post_find(p, kv, len);
  if (q == JP_PART_EMPTY) {
    size_t cap = p->cap_posts;
    if (p->n_posts == UINT32_MAX - 1) return jp_err(JP_ETOOBIG, "too many metadata values");
    int rc = jp_grow((void **)&p->posts, &cap, (size_t)p->n_posts + 1, sizeof *p->posts, 0);
    if (rc < 0) return rc;
    p->cap_posts = (uint32_t)cap;
    if (((size_t)p->n_posts + 1) * 2 > p->post_cap) {
      size_t ncap = p->post_cap ? p->post_cap * 2 : 64;
      uint32_t *t = jp_malloc(sizeof *t * ncap);
      if (!t) return JP_ENOMEM;
      jp_free(p->post_tab);
      p->post_tab = t;
      p->post_cap = ncap;
      jp_part__post_rehash(p);
    }
    char *copy = jp_malloc(len + 1);
    if (!copy) return JP_ENOMEM;
    memcpy(copy, kv, len);
    copy[len] = '\0';
    q = p->n_posts++;
    memset(&p->posts[q], 0, sizeof p->posts[q]);
    p->posts[q].kv = copy;
    p->posts[q].kv_len = len;
    size_t mask = p->post_cap - 1, i = post_home(p, q);
    while (p->post_tab[i] != JP_PART_EMPTY) i = (i + 1) & mask;
    p->post_tab[i] = q;
  }
  struct jp_kv_post *ps = &p->posts[q];
  size_t cap = ps->cap;
  int rc = jp_grow((void **)&ps->docs, &cap, (size_t)ps->n + 1, sizeof *ps->docs, UINT32_MAX);
  if (rc < 0) return rc;
  ps->cap = (uint32_t)cap;
  *post = q;
  return 0;
}

/* First position in a[0, n) holding a value >= v. */
static size_t lower_u32(const uint32_t *a, size_t n, uint32_t v)
{
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (a[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

void jp_part__post_add(struct jp_part *p, uint32_t q, uint32_t e)
{
  struct jp_kv_post *ps = &p->posts[q];
  size_t at = lower_u32(ps->docs, ps->n, e);
  if (at < ps->n && ps->docs[at] == e) return;
  memmove(ps->docs + at + 1, ps->docs + at, sizeof *ps->docs * (ps->n - at));
  ps->docs[at] = e;
  ps->n++;
}

void jp_part__post_remove(struct jp_part *p, uint32_t q, uint32_t e)
{
  struct jp_kv_post *ps = &p->posts[q];
  size_t at = lower_u32(ps->docs, ps->n, e);
  if (at >= ps->n || ps->docs[at] != e) return;
  memmove(ps->docs + at, ps->docs + at + 1, sizeof *ps->docs * (ps->n - at - 1));
  ps->n--;
}

/* Shortest text that reads back to the same double, JSON-styled. */
static void format_real(double v, char *buf, size_t cap)
{
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  if (!strpbrk(buf, ".eEni")) {      /* looks like an integer: mark it real */
    size_t l = strlen(buf);
    if (l + 3 <= cap) memcpy(buf + l, ".0", 3);
  }
}

void jp_part__free_kvs(char **kvs, size_t *lens, size_t n)
{
  if (kvs)
    for (size_t i = 0; i < n; i++) jp_free(kvs[i]);
  jp_free(kvs);
  jp_free(lens);
}

int jp_part__meta_kvs(const char *meta_json, char ***out, size_t **out_lens, size_t *n_out,
                      char **compact)
{
  json_t *root = NULL;
  char **kvs = NULL;
  size_t *lens = NULL, n = 0;
  int rc;

  *out = NULL;
  *out_lens = NULL;
  *n_out = 0;
  *compact = NULL;
  rc = jp_json_loadb(meta_json, strlen(meta_json), "passage metadata", &root);
  if (rc < 0) return rc;
  if (!json_is_object(root)) {
    json_decref(root);
    return jp_err(JP_EINVAL, "passage metadata must be a JSON object");
  }
  size_t cap = json_object_size(root);
  kvs = jp_calloc(cap ? cap : 1, sizeof *kvs);
  lens = jp_calloc(cap ? cap : 1, sizeof *lens);
  if (!kvs || !lens) {
    rc = JP_ENOMEM;
    goto fail;
  }
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    char num[64];
    const char *text;
    size_t tlen;
    if (json_is_string(val)) {
      text = json_string_value(val);
      tlen = json_string_length(val);
    } else if (json_is_integer(val)) {
      snprintf(num, sizeof num, "%" PRId64, (int64_t)json_integer_value(val));
      text = num;
      tlen = strlen(num);
    } else if (json_is_real(val)) {
      format_real(json_real_value(val), num, sizeof num);
      text = num;
      tlen = strlen(num);
    } else if (json_is_boolean(val)) {
      text = json_is_true(val) ? "true" : "false";
      tlen = strlen(text);
    } else {
      continue;
    }
    size_t klen = strlen(key);
    char *kv = jp_malloc(klen + 1 + tlen + 1);
    if (!kv) {
      rc = JP_ENOMEM;
      goto fail;
    }
    memcpy(kv, key, klen);
    kv[klen] = '\0';
    memcpy(kv + klen + 1, text, tlen);
    kv[klen + 1 + tlen] = '\0';
    kvs[n] = kv;
    lens[n] = klen + 1 + tlen;
    n++;
  }
  char *dumped = json_dumps(root, JSON_COMPACT);
  if (!dumped) {
    rc = JP_ENOMEM;
    goto fail;
  }
  *compact = jp_strdup(dumped);
  free(dumped);          /* jansson's allocator is the C library's */
  if (!*compact) {
    rc = JP_ENOMEM;
    goto fail;
  }
  json_decref(root);
  *out = kvs;
  *out_lens = lens;
  *n_out = n;
  return 0;

fail:
  jp_part__free_kvs(kvs, lens, n);
  json_decref(root);
  return rc;
}

/* ---- restriction ---------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int in_post(const struct jp_kv_post *ps, uint32_t e)
{
  size_t at = lower_u32(ps->docs, ps->n, e);
  return at < ps->n && ps->docs[at] == e;
}

int jp_part__allowed_slots(const struct jp_part *p, const struct jp_restrict *r,
                           struct jp_arena *a, uint32_t **slots_out, size_t *n_out,
                           int *unrestricted)
{
  *slots_out = NULL;
  *n_out = 0;
  *unrestricted = 0;
  if (!r || (!r->doc_ids && r->n_filters <= 0)) {
    if (r && r->n_filters < 0) return jp_err(JP_EINVAL, "n_filters is negative");
    *unrestricted = 1;
    return 0;
  }
  if (r->n_filters < 0 || (r->doc_ids && r->n_doc_ids < 0))
    return jp_err(JP_EINVAL, "restriction counts must not be negative");
  if (r->n_filters > 0 && !r->filters) return jp_err(JP_EINVAL, "filters is NULL");

  /* Postings of the filters; a value nobody has means an empty result. */
  const struct jp_kv_post **posts = NULL;
  int nf = r->n_filters, missing = 0;
  if (nf > 0) {
    posts = jp_arena_alloc(a, sizeof *posts * (size_t)nf);
    if (!posts) return JP_ENOMEM;
    for (int i = 0; i < nf; i++) {
      const struct jp_filter *f = &r->filters[i];
      if (!f->key || !f->value) return jp_err(JP_EINVAL, "filter %d has no key or value", i);
      size_t kl = strlen(f->key), vl = strlen(f->value);
      char *kv = jp_arena_alloc(a, kl + vl + 2);
      if (!kv) return JP_ENOMEM;
      memcpy(kv, f->key, kl);
      kv[kl] = '\0';
      memcpy(kv + kl + 1, f->value, vl);
      uint32_t q = jp_part__post_find(p, kv, kl + 1 + vl);
      if (q == JP_PART_EMPTY) missing = 1;
      else posts[i] = &p->posts[q];
    }
    if (missing) return 0;
    /* The shortest posting first: it drives the intersection. */
    for (int i = 1; i < nf; i++)
      if (posts[i]->n < posts[0]->n) {
        const struct jp_kv_post *t = posts[0];
        posts[0] = posts[i];
        posts[i] = t;
      }
  }

  uint32_t *docs;
  size_t nd = 0;
  if (r->doc_ids) {
    if (r->n_doc_ids == 0) return 0;
    docs = jp_arena_alloc(a, sizeof *docs * (size_t)r->n_doc_ids);
    if (!docs) return JP_ENOMEM;
    for (int i = 0; i < r->n_doc_ids; i++) {
      if (!r->doc_ids[i]) return jp_err(JP_EINVAL, "doc_ids[%d] is NULL", i);
      uint32_t e = jp_part__doc_find(p, r->doc_ids[i], strlen(r->doc_ids[i]));
      if (e == JP_PART_EMPTY) continue;
      int ok = 1;
      for (int f = 0; f < nf && ok; f++) ok = in_post(posts[f], e);
      if (ok) docs[nd++] = e;
    }
    qsort(docs, nd, sizeof *docs, cmp_u32);
    size_t u = 0;
    for (size_t i = 0; i < nd; i++)
      if (u == 0 || docs[u - 1] != docs[i]) docs[u++] = docs[i];
    nd = u;
  } else {
    docs = jp_arena_alloc(a, sizeof *docs * (posts[0]->n ? posts[0]->n : 1));
    if (!docs) return JP_ENOMEM;
    for (uint32_t i = 0; i < posts[0]->n; i++) {
      uint32_t e = posts[0]->docs[i];
      if (!p->docs[e].live) continue;
      int ok = 1;
      for (int f = 1; f < nf && ok; f++) ok = in_post(posts[f], e);
      if (ok) docs[nd++] = e;
    }
  }

  size_t total = 0;
  for (size_t i = 0; i < nd; i++) total += p->docs[docs[i]].n_slots;
  if (total == 0) return 0;
  uint32_t *slots = jp_arena_alloc(a, sizeof *slots * total);
  if (!slots) return JP_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < nd; i++) {
    const struct jp_doc_ent *d = &p->docs[docs[i]];
    memcpy(slots + n, d->slots, sizeof *slots * d->n_slots);
    n += d->n_slots;
  }
  qsort(slots, n, sizeof *slots, cmp_u32);
  *slots_out = slots;
  *n_out = n;
  return 0;
}
