/* store_codec.c: the partition store's byte layouts (keys and values, see
 * store_int.h), input validation, compression of incoming documents, and
 * the RocksDB plumbing (options, open with every column family, error
 * mapping) shared by the live store and the bulk writers.
 *
 * Thread-safety: all functions are reentrant. Allocation: buffers are the
 * caller's (jp_buf) except where a function says it allocates. */
#include "index/store_int.h"

#include "util/err.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const jp_store_cf_names[5] = {"meta", "passages", "ivf", "docs", "docids"};

/* RocksDB's own defaults are tuned for write-heavy servers; these are for an
 * index that is mostly read. 64 MiB block cache: the hot structures live in
 * the jp_part, the cache only serves result texts and doc-id lookups. */
#define STORE_DEFAULT_CACHE ((size_t)64 << 20)
/* 10 bits per key: RocksDB's standard bloom setting, ~1% false positives,
 * for the families read by point lookups (docs, docids). */
#define STORE_BLOOM_BITS 10
/* Keep RocksDB's LOG small: two files of at most 1 MiB (it lives in the
 * index directory and would otherwise grow without bound). */
#define STORE_LOG_FILES 2
#define STORE_LOG_BYTES ((size_t)1 << 20)

/* ---- varints and lists ------------------------------------------------------ */

int store__put_varint(struct jp_buf *b, uint64_t v)
{
  uint8_t tmp[10];
  int n = 0;
  do {
    uint8_t byte = v & 0x7F;
    v >>= 7;
    tmp[n++] = (uint8_t)(byte | (v ? 0x80 : 0));
  } while (v);
  return jp_buf_append(b, tmp, (size_t)n);
}

int store__get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
  uint64_t r = 0;
  int shift = 0;
  const uint8_t *q = *p;
  for (;;) {
    if (q >= end || shift > 63) return -1;
    uint8_t byte = *q++;
    if (shift == 63 && (byte & 0x7E)) return -1;     /* over 64 bits */
    r |= (uint64_t)(byte & 0x7F) << shift;
    if (!(byte & 0x80)) break;
    shift += 7;
  }
  *p = q;
  *v = r;
  return 0;
}

int store__put_pid_list(struct jp_buf *b, const uint64_t *pids, size_t n)
{
  uint64_t prev = 0;
  int rc;
  for (size_t i = 0; i < n; i++) {
    if ((rc = store__put_varint(b, i ? pids[i] - prev : pids[i])) < 0) return rc;
    prev = pids[i];
  }
  return 0;
}

/* ---- passages and docs values --------------------------------------------- */

static int codes_are_u16(const struct jp_codec *c) { return c->ncentroids <= 65536; }

int store__encode_passage(struct jp_buf *b, const struct jp_codec *c, int doclen,
                          const uint32_t *codes, const uint8_t *packed)
{
  size_t pb = jp_codec_packed_bytes(c);
  int rc;
  if ((rc = store__put_varint(b, (uint64_t)doclen)) < 0) return rc;
  for (int i = 0; i < doclen; i++) {
    uint8_t le[4] = {(uint8_t)codes[i], (uint8_t)(codes[i] >> 8), (uint8_t)(codes[i] >> 16),
                     (uint8_t)(codes[i] >> 24)};
    if ((rc = jp_buf_append(b, le, codes_are_u16(c) ? 2 : 4)) < 0) return rc;
  }
  return jp_buf_append(b, packed, (size_t)doclen * pb);
}

int store__decode_passage(const struct jp_codec *c, uint64_t pid, const uint8_t *v, size_t len,
                          uint32_t **codes_out, size_t *codes_cap, int *doclen,
                          const uint8_t **packed)
{
  const uint8_t *p = v, *end = v + len;
  size_t w = codes_are_u16(c) ? 2 : 4, pb = jp_codec_packed_bytes(c);
  uint64_t n;
  int rc;

  if (store__get_varint(&p, end, &n) < 0 || n > STORE_MAX_PASSAGE_VECS)
    return JP_CORRUPT_AT("passage %" PRIu64 ": bad vector count", pid);
  if ((size_t)(end - p) != n * (w + pb))
    return JP_CORRUPT_AT("passage %" PRIu64 ": %zu bytes for %" PRIu64 " vectors, expected %zu",
                         pid, (size_t)(end - p), n, (size_t)(n * (w + pb)));
  if ((rc = jp_grow((void **)codes_out, codes_cap, n ? n : 1, sizeof **codes_out, 0)) < 0)
    return rc;
  for (uint64_t i = 0; i < n; i++, p += w) {
    uint32_t code = w == 2 ? (uint32_t)p[0] | ((uint32_t)p[1] << 8)
                           : (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                               ((uint32_t)p[3] << 24);
    if (code >= (uint32_t)c->ncentroids)
      return JP_CORRUPT_AT("passage %" PRIu64 ": code %u >= %d centroids", pid, code,
                           c->ncentroids);
    (*codes_out)[i] = code;
  }
  *doclen = (int)n;
  *packed = p;
  return 0;
}

int store__encode_doc(struct jp_buf *b, const char *doc_id, size_t id_len, const char *text,
                      size_t text_len, const char *meta, size_t meta_len)
{
  int rc;
  if ((rc = store__put_varint(b, id_len)) < 0 || (rc = jp_buf_append(b, doc_id, id_len)) < 0 ||
      (rc = store__put_varint(b, text_len)) < 0 || (rc = jp_buf_append(b, text, text_len)) < 0)
    return rc;
  return meta_len ? jp_buf_append(b, meta, meta_len) : 0;
}

int store__decode_doc(uint64_t pid, const uint8_t *v, size_t len, struct store_doc_view *out)
{
  const uint8_t *p = v, *end = v + len;
  uint64_t n;

  if (store__get_varint(&p, end, &n) < 0 || n == 0 || n > (uint64_t)(end - p))
    return JP_CORRUPT_AT("docs record of passage %" PRIu64 ": bad document id", pid);
  out->doc_id = (const char *)p;
  out->doc_id_len = (size_t)n;
  p += n;
  if (store__get_varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
    return JP_CORRUPT_AT("docs record of passage %" PRIu64 ": bad text length", pid);
  out->text = (const char *)p;
  out->text_len = (size_t)n;
  p += n;
  out->meta = p < end ? (const char *)p : NULL;
  out->meta_len = (size_t)(end - p);
  return 0;
}

/* ---- meta values -------------------------------------------------------------- */

static void put_f32le(uint8_t *p, float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  p[0] = (uint8_t)u; p[1] = (uint8_t)(u >> 8); p[2] = (uint8_t)(u >> 16); p[3] = (uint8_t)(u >> 24);
}

static float get_f32le(const uint8_t *p)
{
  uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
               ((uint32_t)p[3] << 24);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

int store__encode_codec(struct jp_buf *b, const struct jp_codec *c)
{
  int nb = 1 << c->nbits, rc;
  uint8_t hdr[16], f[4];
  store__be32(hdr, (uint32_t)c->dim);
  store__be32(hdr + 4, (uint32_t)c->nbits);
  store__be32(hdr + 8, (uint32_t)c->ncentroids);
  put_f32le(hdr + 12, c->avg_residual);
  if ((rc = jp_buf_append(b, hdr, sizeof hdr)) < 0) return rc;
  for (int i = 0; i < nb - 1; i++) {
    put_f32le(f, c->cutoffs[i]);
    if ((rc = jp_buf_append(b, f, 4)) < 0) return rc;
  }
  for (int i = 0; i < nb; i++) {
    put_f32le(f, c->weights[i]);
    if ((rc = jp_buf_append(b, f, 4)) < 0) return rc;
  }
  return 0;
}

int store__encode_centroids(struct jp_buf *b, const struct jp_codec *c)
{
  size_t n = (size_t)c->ncentroids * (size_t)c->dim;
  uint8_t f[4];
  int rc;
  for (size_t i = 0; i < n; i++) {
    put_f32le(f, c->centroids[i]);
    if ((rc = jp_buf_append(b, f, 4)) < 0) return rc;
  }
  return 0;
}

int store__decode_codec(const uint8_t *v, size_t len, const uint8_t *cent, size_t cent_len,
                        struct jp_codec *c)
{
  uint32_t dim, nbits, nc;
  size_t nb;
  int rc;

  if (len < 16) return JP_CORRUPT_AT("meta 'codec' record is %zu bytes", len);
  dim = store__get_be32(v);
  nbits = store__get_be32(v + 4);
  nc = store__get_be32(v + 8);
  if (dim == 0 || dim > 65536 || (nbits != 1 && nbits != 2 && nbits != 4 && nbits != 8) ||
      nc == 0 || nc > (1u << 30) || (dim * nbits) % 8)
    return JP_CORRUPT_AT("meta 'codec' record: dim %u, nbits %u, %u centroids", dim, nbits, nc);
  nb = (size_t)1 << nbits;
  if (len != 16 + 4 * (2 * nb - 1))
    return JP_CORRUPT_AT("meta 'codec' record is %zu bytes, expected %zu", len,
                         16 + 4 * (2 * nb - 1));
  if (cent_len != (size_t)nc * dim * 4)
    return JP_CORRUPT_AT("meta 'centroids' record is %zu bytes, expected %zu", cent_len,
                         (size_t)nc * dim * 4);
  if ((rc = jp_codec_init(c, (int)dim, (int)nbits, (int)nc)) < 0) return rc;
  c->avg_residual = get_f32le(v + 12);
  for (size_t i = 0; i < nb - 1; i++) c->cutoffs[i] = get_f32le(v + 16 + 4 * i);
  for (size_t i = 0; i < nb; i++) c->weights[i] = get_f32le(v + 16 + 4 * (nb - 1) + 4 * i);
  for (size_t i = 0; i < (size_t)nc * dim; i++) {
    c->centroids[i] = get_f32le(cent + 4 * i);
    if (!isfinite(c->centroids[i])) {
      jp_codec_fini(c);
      return JP_CORRUPT_AT("meta 'centroids' holds a non-finite value");
    }
  }
  return 0;
}

int store__put_static_meta(rocksdb_writebatch_t *wb, rocksdb_column_family_handle_t *meta_cf,
                           const struct jp_store_meta *m, const struct jp_codec *c)
{
  struct jp_buf b;
  uint8_t schema[4];
  char *js = NULL;
  json_t *o = NULL;
  int rc = 0;

  jp_buf_init(&b, 0);
  store__be32(schema, JP_STORE_SCHEMA);
  rocksdb_writebatch_put_cf(wb, meta_cf, "schema", 6, (const char *)schema, 4);

  o = json_pack("{s:s, s:s, s:s}", "name", m->model_name, "identity", m->model_identity, "path",
                m->model_path);
  if (!o || !(js = json_dumps(o, JSON_COMPACT))) { rc = JP_ENOMEM; goto out; }
  rocksdb_writebatch_put_cf(wb, meta_cf, "model", 5, js, strlen(js));
  free(js);
  js = NULL;
  json_decref(o);
  o = json_pack("{s:I, s:I}", "id", (json_int_t)m->partition_id, "count",
                (json_int_t)m->n_partitions);
  if (!o || !(js = json_dumps(o, JSON_COMPACT))) { rc = JP_ENOMEM; goto out; }
  rocksdb_writebatch_put_cf(wb, meta_cf, "partition", 9, js, strlen(js));
  if (m->settings_json[0])
    rocksdb_writebatch_put_cf(wb, meta_cf, "settings", 8, m->settings_json,
                              strlen(m->settings_json));

  if ((rc = store__encode_codec(&b, c)) < 0) goto out;
  rocksdb_writebatch_put_cf(wb, meta_cf, "codec", 5, b.data, b.len);
  jp_buf_reset(&b);
  if ((rc = store__encode_centroids(&b, c)) < 0) goto out;
  rocksdb_writebatch_put_cf(wb, meta_cf, "centroids", 9, b.data, b.len);
out:
  free(js);
  json_decref(o);
  jp_buf_fini(&b);
  return rc;
}

void store__put_counts(rocksdb_writebatch_t *wb, rocksdb_column_family_handle_t *meta_cf,
                       uint64_t n_passages, uint64_t n_docs)
{
  uint8_t b[16];
  store__be64(b, n_passages);
  store__be64(b + 8, n_docs);
  rocksdb_writebatch_put_cf(wb, meta_cf, "counts", 6, (const char *)b, 16);
}

/* ---- input validation and compression --------------------------------------- */

struct id_ref {
  const char *id;
  size_t len;
};

static int cmp_id_ref(const void *x, const void *y)
{
  const struct id_ref *a = x, *b = y;
  int c = memcmp(a->id, b->id, a->len < b->len ? a->len : b->len);
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

int store__check_docs(const struct jp_doc_in *docs, int n, int dim)
{
  struct id_ref *ids;
  int rc = 0;

  if (n < 0 || (n > 0 && !docs)) return jp_err(JP_EINVAL, "bad document array (n = %d)", n);
  for (int i = 0; i < n; i++) {
    const struct jp_doc_in *d = &docs[i];
    if (!d->doc_id || d->doc_id_len == 0)
      return jp_err(JP_EINVAL, "document %d has an empty id", i);
    if (d->doc_id_len > STORE_MAX_DOC_ID)
      return jp_err(JP_EINVAL, "document %d: id of %zu bytes (limit %d)", i, d->doc_id_len,
                    STORE_MAX_DOC_ID);
    if (memchr(d->doc_id, '\0', d->doc_id_len) ||
        jp__utf8_invalid_at((const unsigned char *)d->doc_id, d->doc_id_len) != d->doc_id_len)
      return jp_err(JP_EINVAL, "document %d: id is not valid UTF-8 text", i);
    if (d->metadata_json) {
      size_t ml = strlen(d->metadata_json);
      json_error_t e;
      json_t *m;
      if (ml > STORE_MAX_METADATA)
        return jp_err(JP_EINVAL, "document '%.*s': metadata of %zu bytes (limit %zu)",
                      (int)d->doc_id_len, d->doc_id, ml, STORE_MAX_METADATA);
      m = json_loadb(d->metadata_json, ml, JSON_REJECT_DUPLICATES, &e);
      if (!m || !json_is_object(m)) {
        json_decref(m);
        return jp_err(JP_EINVAL, "document '%.*s': metadata is not a JSON object%s%s",
                      (int)d->doc_id_len, d->doc_id, m ? "" : ": ", m ? "" : e.text);
      }
      json_decref(m);
    }
    if (d->n_passages < 1 || !d->passages)
      return jp_err(JP_EINVAL, "document '%.*s' has no passages", (int)d->doc_id_len, d->doc_id);
    for (int j = 0; j < d->n_passages; j++) {
      const struct jp_passage_in *p = &d->passages[j];
      if ((p->text_len && !p->text) || p->text_len > STORE_MAX_TEXT)
        return jp_err(JP_EINVAL, "document '%.*s', passage %d: bad text", (int)d->doc_id_len,
                      d->doc_id, j);
      if (p->n_vecs < 0 || p->n_vecs > STORE_MAX_PASSAGE_VECS || (p->n_vecs && !p->vecs))
        return jp_err(JP_EINVAL, "document '%.*s', passage %d: %d vectors", (int)d->doc_id_len,
                      d->doc_id, j, p->n_vecs);
      for (size_t k = 0; k < (size_t)p->n_vecs * (size_t)dim; k++)
        if (!isfinite(p->vecs[k]))
          return jp_err(JP_EINVAL, "document '%.*s', passage %d: non-finite vector value",
                        (int)d->doc_id_len, d->doc_id, j);
    }
  }
  if (n < 2) return 0;
  ids = jp_malloc((size_t)n * sizeof *ids);
  if (!ids) return JP_ENOMEM;
  for (int i = 0; i < n; i++) {
    ids[i].id = docs[i].doc_id;
    ids[i].len = docs[i].doc_id_len;
  }
  qsort(ids, (size_t)n, sizeof *ids, cmp_id_ref);
  for (int i = 1; i < n; i++)
    if (!cmp_id_ref(&ids[i - 1], &ids[i])) {
      rc = jp_err(JP_EINVAL, "document id '%.*s' appears twice in one write", (int)ids[i].len,
                  ids[i].id);
      break;
    }
  jp_free(ids);
  return rc;
}

int store__compress_docs(const struct jp_codec *c, const struct jp_doc_in *docs, int n,
                         jp_pool *pool, uint32_t **codes, uint8_t **packed, size_t *n_vecs,
                         double *resid_sum)
{
  size_t total = 0, off = 0, pb = jp_codec_packed_bytes(c), dim = (size_t)c->dim;
  float *all = NULL;
  double sum = 0;
  int rc;

  *codes = NULL;
  *packed = NULL;
  *n_vecs = 0;
  *resid_sum = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < docs[i].n_passages; j++) total += (size_t)docs[i].passages[j].n_vecs;
  /* +1: zero-vector calls still get valid (unused) buffers. */
  *codes = jp_malloc((total + 1) * sizeof **codes);
  *packed = jp_malloc((total + 1) * pb);
  all = jp_malloc((total + 1) * dim * sizeof *all);
  if (!*codes || !*packed || !all) { rc = JP_ENOMEM; goto fail; }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < docs[i].n_passages; j++) {
      const struct jp_passage_in *p = &docs[i].passages[j];
      memcpy(all + off * dim, p->vecs, (size_t)p->n_vecs * dim * sizeof *all);
      off += (size_t)p->n_vecs;
    }
  if (total && (rc = jp_codec_compress(c, all, total, pool, *codes, *packed)) < 0) goto fail;
  for (size_t v = 0; v < total; v++) {
    const float *x = all + v * dim, *cen = c->centroids + (size_t)(*codes)[v] * dim;
    double s2 = 0;
    for (size_t d = 0; d < dim; d++) {
      double r = (double)x[d] - (double)cen[d];
      s2 += r * r;
    }
    sum += sqrt(s2);
  }
  jp_free(all);
  *n_vecs = total;
  *resid_sum = sum;
  return 0;
fail:
  jp_free(all);
  jp_free(*codes);
  jp_free(*packed);
  *codes = NULL;
  *packed = NULL;
  return rc;
}

static int cmp_u32(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

int store__distinct_codes(const uint32_t *codes, int n, uint32_t *out)
{
  int k = 0;
  if (n <= 0) return 0;
  memcpy(out, codes, (size_t)n * sizeof *out);
  qsort(out, (size_t)n, sizeof *out, cmp_u32);
  for (int i = 0; i < n; i++)
    if (k == 0 || out[k - 1] != out[i]) out[k++] = out[i];
  return k;
}

/* ---- RocksDB plumbing ----------------------------------------------------------- */

int store__rerr(char *err, const char *what)
{
  int code;
  if (!err) return 0;
  if (!strncmp(err, "Corruption", 10)) code = JP_ECORRUPT;
  else if (!strncmp(err, "IO error", 8)) code = JP_EIO;
  else code = JP_ESTORE;
  jp_err(code, "%s: %s", what, err);
  JP_LOG_DEBUG("rocksdb: %s: %s", what, err);
  rocksdb_free(err);
  return code;
}

/* Errors while opening an existing database: a file the MANIFEST names
 * being absent, or a damaged CURRENT/MANIFEST, means a damaged index
 * (JP_ECORRUPT); a held lock means another process has it open. */
static int open_err(char *err, const char *dir)
{
  int code;
  if (strstr(err, "While lock file") || strstr(err, "lock hold")) {
    code = jp_err(JP_EIO, "index %s is in use by another process (%s)", dir, err);
  } else if (!strncmp(err, "Corruption", 10) || strstr(err, "No such file") ||
             strstr(err, "CURRENT") || strstr(err, "MANIFEST") ||
             !strncmp(err, "Invalid argument", 16)) {
    code = jp_err(JP_ECORRUPT, "index %s is damaged: %s", dir, err);
  } else if (!strncmp(err, "IO error", 8)) {
    code = jp_err(JP_EIO, "cannot open index %s: %s", dir, err);
  } else {
    code = jp_err(JP_ESTORE, "cannot open index %s: %s", dir, err);
  }
  rocksdb_free(err);
  return code;
}

int store__make_options(struct jp_store *s, size_t block_cache_bytes, int create)
{
  rocksdb_options_t *o;

  s->cache = rocksdb_cache_create_lru(block_cache_bytes ? block_cache_bytes : STORE_DEFAULT_CACHE);
  for (int i = 0; i < 2; i++) {
    s->bbto[i] = rocksdb_block_based_options_create();
    if (!s->bbto[i] || !s->cache) return JP_ENOMEM;
    rocksdb_block_based_options_set_block_cache(s->bbto[i], s->cache);
  }
  rocksdb_block_based_options_set_filter_policy(
    s->bbto[0], rocksdb_filterpolicy_create_bloom(STORE_BLOOM_BITS));

  o = s->dbopt = rocksdb_options_create();
  if (!o) return JP_ENOMEM;
  rocksdb_options_set_create_if_missing(o, (unsigned char)create);
  rocksdb_options_set_create_missing_column_families(o, (unsigned char)create);
  /* Refuse to open (rather than serve wrong data) when a file is damaged,
   * and stop WAL replay at the first inconsistency: a torn tail after
   * kill -9 only ever holds unacknowledged writes. */
  rocksdb_options_set_paranoid_checks(o, 1);
  rocksdb_options_set_wal_recovery_mode(o, 2 /* kPointInTimeRecovery */);
  rocksdb_options_set_info_log_level(o, 2 /* WARN */);
  rocksdb_options_set_keep_log_file_num(o, STORE_LOG_FILES);
  rocksdb_options_set_max_log_file_size(o, STORE_LOG_BYTES);

  for (int i = 0; i < CF_N; i++) {
    o = s->cfopt[i] = rocksdb_options_create();
    if (!o) return JP_ENOMEM;
    /* Packed residuals and float centroids are incompressible; texts, doc
     * ids and delta-varint lists shrink well with the cheap LZ4. */
    rocksdb_options_set_compression(
      o, (i == CF_PASSAGES || i == CF_META) ? 0 /* none */ : 4 /* lz4 */);
    rocksdb_options_set_block_based_table_factory(
      o, s->bbto[(i == CF_DOCS || i == CF_DOCIDS) ? 0 : 1]);
  }
  s->otheropt = rocksdb_options_create();
  if (!s->otheropt) return JP_ENOMEM;
  rocksdb_options_set_block_based_table_factory(s->otheropt, s->bbto[1]);
  return 0;
}

void store__free_options(struct jp_store *s)
{
  for (int i = 0; i < CF_N; i++) {
    if (s->cfopt[i]) rocksdb_options_destroy(s->cfopt[i]);
    s->cfopt[i] = NULL;
  }
  if (s->otheropt) rocksdb_options_destroy(s->otheropt);
  if (s->dbopt) rocksdb_options_destroy(s->dbopt);
  for (int i = 0; i < 2; i++) {
    if (s->bbto[i]) rocksdb_block_based_options_destroy(s->bbto[i]);
    s->bbto[i] = NULL;
  }
  if (s->cache) rocksdb_cache_destroy(s->cache);
  s->otheropt = s->dbopt = NULL;
  s->cache = NULL;
}

const rocksdb_options_t *store__cf_options(const struct jp_store *s, const char *name)
{
  for (int i = 0; i < CF_N; i++)
    if (!strcmp(name, jp_store_cf_names[i])) return s->cfopt[i];
  return s->otheropt;
}

static int has_current(const char *dir)
{
  char path[4200];
  struct stat st;
  snprintf(path, sizeof path, "%s/CURRENT", dir);
  return stat(path, &st) == 0;
}

/* 1 if an OPTIONS-* file of the database (RocksDB writes one listing every
 * column family at each open) names our families: the directory was a
 * partition store even if its MANIFEST no longer says so. */
static int options_name_our_families(const char *dir)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int found = 0;
  if (!d) return 0;
  while (!found && (e = readdir(d))) {
    char path[4200], *text = NULL;
    size_t len;
    if (strncmp(e->d_name, "OPTIONS-", 8)) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    /* OPTIONS files are a few tens of KiB; 4 MiB is a generous bound. */
    if (jp_read_file(path, (size_t)4 << 20, &text, &len) < 0) continue;
    found = strstr(text, "[CFOptions \"passages\"]") && strstr(text, "[CFOptions \"meta\"]");
    jp_free(text);
  }
  closedir(d);
  return found;
}

int store__open_db(struct jp_store *s, const char *dir, int create, int read_only)
{
  const char *ours[CF_N + 1] = {"default"};
  char **names = NULL;
  const char **open_names = NULL;
  const rocksdb_options_t **opts = NULL;
  size_t n = 0;
  char *err = NULL;
  struct stat st;
  int rc = 0;

  for (int i = 0; i < CF_N; i++) ours[i + 1] = jp_store_cf_names[i];
  if (stat(dir, &st) != 0) {
    if (!create) return jp_err(JP_ENOTFOUND, "no index at %s", dir);
  } else if (!S_ISDIR(st.st_mode)) {
    return jp_err(JP_ENOTFOUND, "%s is not a directory, so not an index", dir);
  }
  if (create && !has_current(dir)) {
    n = CF_N + 1;
    open_names = jp_malloc(n * sizeof *open_names);
    if (!open_names) return JP_ENOMEM;
    memcpy(open_names, ours, n * sizeof *open_names);
  } else {
    if (!has_current(dir))
      return jp_err(JP_ENOTFOUND, "%s holds no japlaid index (no database in it)", dir);
    names = rocksdb_list_column_families(s->dbopt, dir, &n, &err);
    if (err) {
      /* The C API returns an (empty) array even on error. */
      if (names) rocksdb_list_column_families_destroy(names, 0);
      return open_err(err, dir);
    }
    for (int i = 0; i < CF_N; i++) {
      size_t j = 0;
      while (j < n && strcmp(names[j], jp_store_cf_names[i])) j++;
      if (j == n) {
        if (options_name_our_families(dir))
          rc = jp_err(JP_ECORRUPT, "index %s is damaged: its MANIFEST lost the column family "
                      "'%s' that its OPTIONS file lists", dir, jp_store_cf_names[i]);
        else
          rc = jp_err(JP_ENOTFOUND,
                      "%s is a RocksDB database but not a japlaid index (no column family '%s')",
                      dir, jp_store_cf_names[i]);
        goto out;
      }
    }
    open_names = jp_malloc(n * sizeof *open_names);
    if (!open_names) { rc = JP_ENOMEM; goto out; }
    for (size_t j = 0; j < n; j++) open_names[j] = names[j];
  }
  opts = jp_malloc(n * sizeof *opts);
  s->all_cf = jp_calloc(n, sizeof *s->all_cf);
  if (!opts || !s->all_cf) { rc = JP_ENOMEM; goto out; }
  for (size_t j = 0; j < n; j++) opts[j] = store__cf_options(s, open_names[j]);
  if (read_only)
    s->db = rocksdb_open_for_read_only_column_families(s->dbopt, dir, (int)n, open_names,
                                                       opts, s->all_cf, 0, &err);
  else
    s->db = rocksdb_open_column_families(s->dbopt, dir, (int)n, open_names, opts, s->all_cf,
                                         &err);
  if (err) {
    s->db = NULL;
    rc = open_err(err, dir);
    goto out;
  }
  s->n_all_cf = n;
  for (int i = 0; i < CF_N; i++)
    for (size_t j = 0; j < n; j++)
      if (!strcmp(open_names[j], jp_store_cf_names[i])) s->cf[i] = s->all_cf[j];
out:
  if (rc < 0) {
    jp_free(s->all_cf);
    s->all_cf = NULL;
  }
  if (names) rocksdb_list_column_families_destroy(names, n);
  jp_free(open_names);
  jp_free(opts);
  return rc;
}

void store__close_db(struct jp_store *s)
{
  if (s->db) {
    for (size_t j = 0; j < s->n_all_cf; j++)
      if (s->all_cf[j]) rocksdb_column_family_handle_destroy(s->all_cf[j]);
    rocksdb_close(s->db);
  }
  jp_free(s->all_cf);
  s->all_cf = NULL;
  s->n_all_cf = 0;
  s->db = NULL;
  for (int i = 0; i < CF_N; i++) s->cf[i] = NULL;
}

int store__replaceable(const char *dir)
{
  struct stat st;
  DIR *d;
  struct dirent *e;
  int empty = 1;
  rocksdb_options_t *o;
  char **names, *err = NULL;
  size_t n = 0;
  int has_meta = 0, has_passages = 0;

  if (lstat(dir, &st) != 0) return errno == ENOENT ? 0 : jp_err(JP_EIO, "cannot stat %s: %s",
                                                                  dir, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return jp_err(JP_EEXISTS, "%s exists and is not a directory; refusing to replace it", dir);
  if (!(d = opendir(dir))) return jp_err(JP_EIO, "cannot read %s: %s", dir, strerror(errno));
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { empty = 0; break; }
  closedir(d);
  if (empty) return 0;
  if (!has_current(dir))
    return jp_err(JP_EEXISTS, "%s exists and is not a japlaid index; refusing to replace it", dir);
  o = rocksdb_options_create();
  if (!o) return JP_ENOMEM;
  names = rocksdb_list_column_families(o, dir, &n, &err);
  rocksdb_options_destroy(o);
  if (err) {
    if (names) rocksdb_list_column_families_destroy(names, 0);
    rocksdb_free(err);
    return jp_err(JP_EEXISTS, "%s exists and its database is unreadable; refusing to replace it "
                  "(remove it by hand)", dir);
  }
  for (size_t j = 0; j < n; j++) {
    has_meta |= !strcmp(names[j], "meta");
    has_passages |= !strcmp(names[j], "passages");
  }
  rocksdb_list_column_families_destroy(names, n);
  if (!has_meta || !has_passages)
    return jp_err(JP_EEXISTS, "%s holds a database that is not a japlaid index; refusing to "
                  "replace it", dir);
  return 0;
}
