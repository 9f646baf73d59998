/* vocab.c: the WordPiece vocabulary (vocab.txt) and its lookup table.
 *
 * Why a custom table: WordPiece probes up to ~n^2/2 substrings per word over
 * whole corpora, so a lookup must be a hash of the byte slice with no copy
 * and no allocation. Continuation pieces ("##xyz") are keyed as (cont=1,
 * "xyz"), which lets WordPiece look up "##" + slice without building it.
 *
 * Layout: every token string lives NUL-terminated in one blob; the table is
 * open addressing with linear probing at load factor <= 1/2, each slot
 * holding the 64-bit hash (compared before the bytes) and the id.
 *
 * Thread-safety: immutable after jp_vocab_load; share freely.
 * Allocation: load allocates the blob and the tables; lookups allocate
 * nothing. */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "text/text_int.h"
#include "text/tokenizer.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"

/* Largest vocab.txt accepted. BERT vocabularies are 0.2-1 MB (32768 entries
 * here, 250k for multilingual models); 256 MiB stops a wrong path (a model
 * file) from being read whole. */
#define VOCAB_MAX_FILE_BYTES (256u << 20)

struct vslot {
  uint64_t h;           /* hash of the key bytes (seed = cont) */
  int32_t id;           /* token id, -1 = empty slot */
  int32_t cont;         /* 1: key is the token without its "##" prefix */
};

struct jp_vocab {
  int n;                /* number of tokens (lines) */
  char *blob;           /* all tokens, each NUL-terminated */
  uint32_t *off;        /* off[id]: start of token id in blob */
  uint32_t *len;        /* len[id]: bytes of token id */
  struct vslot *slots;  /* hash table, n_slots = mask + 1 (power of two) */
  size_t mask;
  size_t max_key[2];    /* longest key for cont 0 / 1 */
  struct jp_special_ids special;
};

static inline uint64_t key_hash(int cont, const char *s, size_t len)
{
  return XXH3_64bits_withSeed(s, len, (XXH64_hash_t)cont);
}

static inline const char *slot_key(const jp_vocab *v, const struct vslot *sl, size_t *klen)
{
  const char *t = v->blob + v->off[sl->id];
  size_t l = v->len[sl->id];
  if (sl->cont) {
    t += 2;
    l -= 2;
  }
  *klen = l;
  return t;
}

int32_t tok__vocab_find(const jp_vocab *v, int cont, const char *s, size_t len)
{
  if (len > v->max_key[cont ? 1 : 0]) return -1;
  uint64_t h = key_hash(cont ? 1 : 0, s, len);
  for (size_t i = (size_t)h & v->mask;; i = (i + 1) & v->mask) {
    const struct vslot *sl = &v->slots[i];
    if (sl->id < 0) return -1;
    if (sl->h != h || sl->cont != (cont ? 1 : 0)) continue;
    size_t kl;
    const char *k = slot_key(v, sl, &kl);
    if (kl == len && memcmp(k, s, len) == 0) return sl->id;
  }
}

size_t tok__vocab_max_key(const jp_vocab *v, int cont)
{
  return v->max_key[cont ? 1 : 0];
}

static void table_put(jp_vocab *v, int cont, int32_t id, uint64_t h)
{
  size_t i = (size_t)h & v->mask;
  while (v->slots[i].id >= 0) i = (i + 1) & v->mask;
  v->slots[i].h = h;
  v->slots[i].id = id;
  v->slots[i].cont = cont;
}

int jp_vocab_load(const char *path, jp_vocab **out)
{
  if (!path || !out) return jp_err(JP_EINVAL, "jp_vocab_load: NULL argument");
  *out = NULL;
  char *data = NULL;
  size_t size = 0;
  int rc = jp_read_file(path, VOCAB_MAX_FILE_BYTES, &data, &size);
  if (rc < 0) return rc;
  if (size == 0) {
    jp_free(data);
    return jp_err(JP_EINVAL, "vocab %s is empty", path);
  }

  /* Count lines: every "\n" ends one; a last line without "\n" counts too. */
  size_t n_lines = 0;
  for (size_t i = 0; i < size; i++) n_lines += data[i] == '\n';
  if (data[size - 1] != '\n') n_lines++;
  if (n_lines > (size_t)INT32_MAX / 4)
    return jp_free(data), jp_err(JP_ETOOBIG, "vocab %s has too many lines", path);

  jp_vocab *v = jp_calloc(1, sizeof *v);
  if (!v) return jp_free(data), JP_ENOMEM;
  v->n = (int)n_lines;
  v->off = jp_malloc(n_lines * sizeof *v->off);
  v->len = jp_malloc(n_lines * sizeof *v->len);
  size_t n_slots = 16;
  /* Two keys per "##" token at most, so 4x lines keeps the load <= 1/2. */
  while (n_slots < 4 * n_lines) n_slots <<= 1;
  v->slots = jp_malloc(n_slots * sizeof *v->slots);
  if (!v->off || !v->len || !v->slots) {
    rc = JP_ENOMEM;
    goto fail;
  }
  v->mask = n_slots - 1;
  for (size_t i = 0; i < n_slots; i++) v->slots[i].id = -1;

  /* The file buffer becomes the blob: line ends are overwritten with NUL. */
  v->blob = data;
  data = NULL;
  size_t pos = 0;
  for (size_t id = 0; id < n_lines; id++) {
    char *s = v->blob + pos;
    char *nl = memchr(s, '\n', size - pos);
    size_t l = nl ? (size_t)(nl - s) : size - pos;
    pos += l + (nl ? 1 : 0);
    if (l > 0 && s[l - 1] == '\r') l--;      /* "\r\n" line ends */
    s[l] = '\0';  /* overwrites '\n' or '\r'; the file buffer has a NUL at size */
    if (l == 0) {
      rc = jp_err(JP_EINVAL,
                  "vocab %s line %zu (id %zu) is empty; an intact vocab has no empty "
                  "lines (was whitespace stripped? id 15 of the JaColBERT vocab is \" \")",
                  path, id + 1, id);
      goto fail;
    }
    long bad = tok__utf8_find_bad(s, l);
    if (bad >= 0) {
      rc = jp_err(JP_EINVAL, "vocab %s line %zu (id %zu): invalid UTF-8 or NUL at byte %ld",
                  path, id + 1, id, bad);
      goto fail;
    }
    v->off[id] = (uint32_t)(s - v->blob);
    v->len[id] = (uint32_t)l;

    uint64_t h = key_hash(0, s, l);
    int32_t dup = tok__vocab_find(v, 0, s, l);
    if (dup >= 0) {
      rc = jp_err(JP_EINVAL, "vocab %s: token \"%s\" appears twice (ids %d and %zu)", path, s,
                  dup, id);
      goto fail;
    }
    /* max_key must cover the key before tok__vocab_find can see it. */
    if (l > v->max_key[0]) v->max_key[0] = l;
    table_put(v, 0, (int32_t)id, h);
    if (l > 2 && s[0] == '#' && s[1] == '#') {
      if (l - 2 > v->max_key[1]) v->max_key[1] = l - 2;
      table_put(v, 1, (int32_t)id, key_hash(1, s + 2, l - 2));
    }
  }

  static const char *const names[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  int32_t *dst[5] = {&v->special.pad, &v->special.unk, &v->special.cls, &v->special.sep,
                     &v->special.mask};
  for (int i = 0; i < 5; i++) {
    *dst[i] = tok__vocab_find(v, 0, names[i], strlen(names[i]));
    if (*dst[i] < 0) {
      rc = jp_err(JP_EINVAL, "vocab %s has no %s token (a BERT vocab needs [PAD] [UNK] "
                  "[CLS] [SEP] [MASK])", path, names[i]);
      goto fail;
    }
  }
  *out = v;
  return 0;

fail:
  jp_free(data);
  jp_vocab_free(v);
  return rc;
}

void jp_vocab_free(jp_vocab *v)
{
  if (!v) return;
  jp_free(v->blob);
  jp_free(v->off);
  jp_free(v->len);
  jp_free(v->slots);
  jp_free(v);
}

int jp_vocab_size(const jp_vocab *v)
{
  return v ? v->n : 0;
}

int32_t jp_vocab_id(const jp_vocab *v, const char *tok, size_t len)
{
  if (!v || (!tok && len)) return -1;
  return tok__vocab_find(v, 0, tok ? tok : "", len);
}

const char *jp_vocab_token(const jp_vocab *v, int32_t id)
{
  if (!v || id < 0 || id >= v->n) return NULL;
  return v->blob + v->off[id];
}

const struct jp_special_ids *jp_vocab_special(const jp_vocab *v)
{
  return v ? &v->special : NULL;
}
