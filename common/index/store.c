/* store.c: the live partition store (store.h): open/create with every
 * check, loading into a jp_part, upsert/delete as one synced WriteBatch
 * each, search with result contents, stats.
 *
 * Concurrency: writers are serialised by `wmu` (pid allocation, the read of
 * existing document ids, counters and the commit); only after RocksDB has
 * committed does a writer take the rwlock for writing, apply the change to
 * the jp_part and move the read snapshot forward. Searches hold the read
 * lock while they run PLAID and fetch the hits' texts at that snapshot, so
 * the texts always belong to the state the part was searched in, and an
 * fsync never blocks searches.
 *
 * Allocation: jp_malloc for the store and per-call scratch; RocksDB
 * allocates its own objects. */
#include "index/store_int.h"

#include "util/err.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>

/* Scans at open read every record once: do not let them evict the block
 * cache, and read ahead in large steps (2 MiB, RocksDB's suggestion for
 * sequential scans on spinning and network disks alike). */
#define STORE_SCAN_READAHEAD ((size_t)2 << 20)
/* IVF compaction at open (compact_ivf): only when stale entries outnumber
 * live ones (so the rewrite at least halves the family) and are worth a
 * rewrite at all (4096 entries: a few KiB). Batches of 4 MiB keep memory
 * flat while amortising the synced commits. */
#define IVF_COMPACT_MIN 4096
#define IVF_COMPACT_BATCH ((size_t)4 << 20)

void jp_store_opts_default(struct jp_store_opts *o)
{
  memset(o, 0, sizeof *o);
  o->sync = 1;
  o->residuals_in_memory = 1;
}

const struct jp_store_meta *jp_store_get_meta(const jp_store *s) { return s ? &s->meta : NULL; }

const struct jp_codec *jp_store_codec(const jp_store *s) { return s ? &s->codec : NULL; }

/* ---- lifecycle ------------------------------------------------------------------- */

static int store_alloc(const char *dir, const struct jp_store_opts *o, jp_store **out)
{
  jp_store *s = jp_calloc(1, sizeof *s);
  *out = NULL;
  if (!s) return JP_ENOMEM;
  s->dir = jp_strdup(dir);
  if (!s->dir) { jp_free(s); return JP_ENOMEM; }
  pthread_rwlock_init(&s->lock, NULL);
  pthread_mutex_init(&s->wmu, NULL);
  s->read_only = o->read_only;
  s->sync = o->sync;
  *out = s;
  return 0;
}

void jp_store_close(jp_store *s)
{
  if (!s) return;
  if (s->db && !s->read_only) {
    /* Persist memtables so the next open does not replay the WAL, and so
     * sizes reported by stats are file sizes. Failure here loses nothing:
     * every acknowledged write is already in the WAL. */
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    for (int i = 0; i < CF_N; i++) {
      char *err = NULL;
      if (!s->cf[i]) continue;
      rocksdb_flush_cf(s->db, fo, s->cf[i], &err);
      if (err) {
        JP_LOG_WARN("index %s: flush at close failed: %s", s->dir, err);
        rocksdb_free(err);
      }
    }
    rocksdb_flushoptions_destroy(fo);
  }
  if (s->snap_ro) rocksdb_readoptions_destroy(s->snap_ro);
  if (s->snap) rocksdb_release_snapshot(s->db, s->snap);
  if (s->ro) rocksdb_readoptions_destroy(s->ro);
  if (s->wo) rocksdb_writeoptions_destroy(s->wo);
  store__close_db(s);
  store__free_options(s);
  jp_part_destroy(s->part);
  jp_codec_fini(&s->codec);
  pthread_rwlock_destroy(&s->lock);
  pthread_mutex_destroy(&s->wmu);
  jp_free(s->dir);
  jp_free(s);
}

/* A meta record: 0 = found (*val rocksdb-allocated), 1 = absent, < 0 error. */
static int meta_get(jp_store *s, const char *key, char **val, size_t *len)
{
  char *err = NULL;
  *val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, strlen(key), len, &err);
  if (err) return store__rerr(err, "reading index meta");
  return *val ? 0 : 1;
}

static int parse_json_obj(const char *v, size_t len, const char *what, const char *dir,
                          json_t **out)
{
  json_error_t e;
  *out = json_loadb(v, len, 0, &e);
  if (!*out || !json_is_object(*out)) {
    json_decref(*out);
    *out = NULL;
    return JP_CORRUPT_AT("index %s: meta '%s' record is not a JSON object", dir, what);
  }
  return 0;
}

static int copy_str(char *dst, size_t cap, const char *src, const char *what, const char *dir)
{
  size_t n = src ? strlen(src) : 0;
  if (n >= cap) return JP_CORRUPT_AT("index %s: meta %s is %zu bytes (limit %zu)", dir, what, n,
                                     cap - 1);
  memcpy(dst, src ? src : "", n + 1);
  return 0;
}

/* Read and check every meta record (see store_int.h). */
static int read_meta(jp_store *s, const char *expect_identity)
{
  char *v = NULL, *v2 = NULL;
  size_t len, len2;
  json_t *o = NULL;
  const char *str;
  int rc;

  if ((rc = meta_get(s, "schema", &v, &len)) < 0) return rc;
  if (rc == 1) return JP_CORRUPT_AT("index %s has no schema record (an unfinished build or a "
                                    "damaged index)", s->dir);
  if (len != 4) { rc = JP_CORRUPT_AT("index %s: schema record of %zu bytes", s->dir, len); goto out; }
  if (store__get_be32((const uint8_t *)v) != JP_STORE_SCHEMA) {
    rc = jp_err(JP_EMISMATCH, "index %s has schema version %u; this build reads version %d",
                s->dir, store__get_be32((const uint8_t *)v), JP_STORE_SCHEMA);
    goto out;
  }
  rocksdb_free(v);
  v = NULL;

  if ((rc = meta_get(s, "model", &v, &len)) != 0) {
    if (rc == 1) rc = JP_CORRUPT_AT("index %s has no model record", s->dir);
    goto out;
  }
  if ((rc = parse_json_obj(v, len, "model", s->dir, &o)) < 0) goto out;
  str = json_string_value(json_object_get(o, "name"));
  if ((rc = copy_str(s->meta.model_name, sizeof s->meta.model_name, str, "model name", s->dir)))
    goto out;
  str = json_string_value(json_object_get(o, "identity"));
  if (!str || !*str) { rc = JP_CORRUPT_AT("index %s: model record without identity", s->dir); goto out; }
  if ((rc = copy_str(s->meta.model_identity, sizeof s->meta.model_identity, str,
                     "model identity", s->dir)))
    goto out;
  str = json_string_value(json_object_get(o, "path"));
  if ((rc = copy_str(s->meta.model_path, sizeof s->meta.model_path, str, "model path", s->dir)))
    goto out;
  json_decref(o);
  o = NULL;
  rocksdb_free(v);
  v = NULL;
  if (expect_identity && strcmp(expect_identity, s->meta.model_identity)) {
    rc = jp_err(JP_EMISMATCH,
                "index %s was built with model '%s' (identity %s); the model given has "
                "identity %s: queries must be encoded by the model the index was built with",
                s->dir, s->meta.model_name, s->meta.model_identity, expect_identity);
    goto out;
  }

  if ((rc = meta_get(s, "codec", &v, &len)) != 0 ||
      (rc = meta_get(s, "centroids", &v2, &len2)) != 0) {
    if (rc == 1) rc = JP_CORRUPT_AT("index %s has no codec/centroids record", s->dir);
    goto out;
  }
  if ((rc = store__decode_codec((const uint8_t *)v, len, (const uint8_t *)v2, len2, &s->codec)) <
      0)
    goto out;
  rocksdb_free(v);
  rocksdb_free(v2);
  v = v2 = NULL;

  if ((rc = meta_get(s, "partition", &v, &len)) != 0) {
    if (rc == 1) rc = JP_CORRUPT_AT("index %s has no partition record", s->dir);
    goto out;
  }
  if ((rc = parse_json_obj(v, len, "partition", s->dir, &o)) < 0) goto out;
  {
    json_int_t id = json_integer_value(json_object_get(o, "id"));
    json_int_t cnt = json_integer_value(json_object_get(o, "count"));
    if (cnt < 1 || id < 0 || id >= cnt || (uint64_t)cnt > STORE_MAX_PARTITIONS) {
      rc = JP_CORRUPT_AT("index %s: partition %lld of %lld", s->dir, (long long)id,
                         (long long)cnt);
      goto out;
    }
    s->meta.partition_id = (uint32_t)id;
    s->meta.n_partitions = (uint32_t)cnt;
  }
  json_decref(o);
  o = NULL;
  rocksdb_free(v);
  v = NULL;

  if ((rc = meta_get(s, "settings", &v, &len)) < 0) goto out;
  if (rc == 0) {
    if (len >= sizeof s->meta.settings_json) {
      rc = JP_CORRUPT_AT("index %s: settings record of %zu bytes", s->dir, len);
      goto out;
    }
    memcpy(s->meta.settings_json, v, len);
    s->meta.settings_json[len] = '\0';
    rocksdb_free(v);
    v = NULL;
  }

  if ((rc = meta_get(s, "next_pid", &v, &len)) < 0) goto out;
  if (rc == 0) {
    if (len != 8) { rc = JP_CORRUPT_AT("index %s: next_pid record of %zu bytes", s->dir, len); goto out; }
    s->next_seq = store__get_be64((const uint8_t *)v);
    rocksdb_free(v);
    v = NULL;
  }
  if ((rc = meta_get(s, "next_segment", &v, &len)) < 0) goto out;
  if (rc == 0) {
    if (len != 8) { rc = JP_CORRUPT_AT("index %s: next_segment record of %zu bytes", s->dir, len); goto out; }
    s->next_segment = store__get_be64((const uint8_t *)v);
    rocksdb_free(v);
    v = NULL;
  }
  if ((rc = meta_get(s, "counts", &v, &len)) != 0) {
    if (rc == 1) rc = JP_CORRUPT_AT("index %s has no counts record", s->dir);
    goto out;
  }
  if (len != 16) { rc = JP_CORRUPT_AT("index %s: counts record of %zu bytes", s->dir, len); goto out; }
  s->n_passages = store__get_be64((const uint8_t *)v);
  s->n_docs = store__get_be64((const uint8_t *)v + 8);
  rocksdb_free(v);
  v = NULL;
  if ((rc = meta_get(s, "live_resid", &v, &len)) < 0) goto out;
  if (rc == 0) {
    uint64_t bits;
    if (len != 16) { rc = JP_CORRUPT_AT("index %s: live_resid record of %zu bytes", s->dir, len); goto out; }
    bits = store__get_be64((const uint8_t *)v);
    memcpy(&s->live_resid_sum, &bits, 8);
    s->live_resid_n = store__get_be64((const uint8_t *)v + 8);
    rocksdb_free(v);
    v = NULL;
  }

  /* Bulk writers' records: the drift baseline. */
  {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_META]);
    char *err = NULL;
    for (rocksdb_iter_seek(it, "writer/", 7); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
      size_t kl, vl;
      const char *k = rocksdb_iter_key(it, &kl), *val = rocksdb_iter_value(it, &vl);
      if (kl < 7 || memcmp(k, "writer/", 7)) break;
      if ((rc = parse_json_obj(val, vl, "writer", s->dir, &o)) < 0) break;
      s->build_resid_sum += json_number_value(json_object_get(o, "resid_sum"));
      s->build_resid_n += (uint64_t)json_integer_value(json_object_get(o, "n_vecs"));
      json_decref(o);
      o = NULL;
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err && rc == 0) rc = store__rerr(err, "reading index meta");
    else if (err) rocksdb_free(err);
    if (rc < 0) goto out;
  }
  rc = 0;
out:
  json_decref(o);
  if (v) rocksdb_free(v);
  if (v2) rocksdb_free(v2);
  return rc;
}

static void put_u64(rocksdb_writebatch_t *wb, rocksdb_column_family_handle_t *cf,
                    const char *key, uint64_t v);

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int pid_live(const uint64_t *pids, size_t n, uint64_t pid)
{
  return n && bsearch(&pid, pids, n, sizeof *pids, cmp_u64) != NULL;
}

static int iter_done(rocksdb_iterator_t *it, const char *what)
{
  char *err = NULL;
  rocksdb_iter_get_error(it, &err);
  return err ? store__rerr(err, what) : 0;
}

/* Rewrite the ivf family without the entries of passages that are gone
 * (replaced or deleted documents leave them behind; loading skips them,
 * but they cost bytes and open time). Each centroid's segments are merged
 * into one new segment, and its old keys deleted, in the same batch, so a
 * crash part-way leaves every centroid either old or rewritten: both are
 * valid. Memory: one centroid's list at a time. */
static int compact_ivf(jp_store *s, rocksdb_readoptions_t *ro, const uint64_t *live,
                       size_t n_live)
{
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_IVF]);
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
  uint64_t *list = NULL, seg = s->next_segment, n_keys = 0;
  size_t n = 0, cap = 0;
  uint32_t cur = UINT32_MAX;
  struct jp_buf b;
  char *err = NULL;
  int rc = 0;

  jp_buf_init(&b, 0);
  put_u64(wb, s->cf[CF_META], "next_segment", seg + 1);
  for (rocksdb_iter_seek_to_first(it);; rocksdb_iter_next(it)) {
    int valid = rocksdb_iter_valid(it);
    size_t kl = 0, vl = 0;
    const uint8_t *k = valid ? (const uint8_t *)rocksdb_iter_key(it, &kl) : NULL;
    uint32_t c = valid ? store__get_be32(k) : UINT32_MAX;
    if (c != cur && cur != UINT32_MAX) {      /* centroid `cur` complete */
      if (n) {
        uint8_t key[12];
        qsort(list, n, sizeof *list, cmp_u64);
        jp_buf_reset(&b);
        if ((rc = store__put_pid_list(&b, list, n)) < 0) break;
        store__be32(key, cur);
        store__be64(key + 4, seg);
        rocksdb_writebatch_put_cf(wb, s->cf[CF_IVF], (const char *)key, 12, b.data, b.len);
      }
      n = 0;
      size_t wb_bytes = 0;
      (void)rocksdb_writebatch_data(wb, &wb_bytes);
      if (wb_bytes > IVF_COMPACT_BATCH || !valid) {
        rocksdb_write(s->db, s->wo, wb, &err);
        if (err) { rc = store__rerr(err, "compacting the ivf family"); break; }
        rocksdb_writebatch_clear(wb);
      }
    }
    if (!valid) break;
    cur = c;
    n_keys++;
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_IVF], (const char *)k, kl);
    {
      const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl), *end = v + vl;
      uint64_t pid = 0, d;
      int first = 1;
      while (v < end && store__get_varint(&v, end, &d) == 0) {
        pid = first ? d : pid + d;
        first = 0;
        if (!pid_live(live, n_live, pid)) continue;
        if ((rc = jp_grow((void **)&list, &cap, n + 1, sizeof *list, 0)) < 0) break;
        list[n++] = pid;
      }
      if (rc < 0) break;
    }
  }
  if (rc == 0 && (rc = iter_done(it, "reading ivf")) == 0) {
    s->next_segment = seg + 1;
    /* Drop the deleted keys from the files now rather than at RocksDB's
     * leisure, so the space (and the stats) follow. */
    rocksdb_compact_range_cf(s->db, s->cf[CF_IVF], NULL, 0, NULL, 0);
    JP_LOG_INFO("index %s: ivf compacted (%" PRIu64 " keys merged)", s->dir, n_keys);
  }
  rocksdb_iter_destroy(it);
  rocksdb_writebatch_destroy(wb);
  jp_free(list);
  jp_buf_fini(&b);
  return rc;
}

/* Load passages + docs into a new jp_part and cross-check the ivf and
 * docids families against them (counts of live entries), so an index whose
 * families disagree is refused instead of answering inconsistently. */
static int load_part(jp_store *s)
{
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_iterator_t *ip = NULL, *id = NULL;
  uint64_t *live = NULL, expect_pairs = 0, got_pairs = 0, stale_pairs = 0, max_seq_plus1 = 0;
  size_t n_live = 0, live_cap = 0, codes_cap = 0;
  uint32_t *codes = NULL, *uniq = NULL;
  size_t uniq_cap = 0;
  struct jp_buf meta;
  int rc = 0;

  jp_buf_init(&meta, 0);
  rocksdb_readoptions_set_fill_cache(ro, 0);
  rocksdb_readoptions_set_readahead_size(ro, STORE_SCAN_READAHEAD);
  if ((rc = jp_part_create(&s->codec, &s->part)) < 0) goto out;

  ip = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_PASSAGES]);
  id = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_DOCS]);
  rocksdb_iter_seek_to_first(ip);
  rocksdb_iter_seek_to_first(id);
  for (; rocksdb_iter_valid(ip); rocksdb_iter_next(ip), rocksdb_iter_next(id)) {
    size_t kl, vl, dkl, dvl;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(ip, &kl);
    const uint8_t *v = (const uint8_t *)rocksdb_iter_value(ip, &vl);
    const uint8_t *packed, *dk, *dv;
    struct store_doc_view doc;
    uint64_t pid;
    int doclen;

    if (kl != 8) { rc = JP_CORRUPT_AT("index %s: passages key of %zu bytes", s->dir, kl); goto out; }
    pid = store__get_be64(k);
    if (pid >> JP_PID_PARTITION_SHIFT != s->meta.partition_id) {
      rc = JP_CORRUPT_AT("index %s: passage %" PRIu64 " belongs to partition %" PRIu64
                         ", this is partition %u", s->dir, pid, pid >> JP_PID_PARTITION_SHIFT,
                         s->meta.partition_id);
      goto out;
    }
    if (!rocksdb_iter_valid(id)) {
      if ((rc = iter_done(id, "reading docs")) == 0)
        rc = JP_CORRUPT_AT("index %s: passage %" PRIu64 " has no document record", s->dir, pid);
      goto out;
    }
    dk = (const uint8_t *)rocksdb_iter_key(id, &dkl);
    dv = (const uint8_t *)rocksdb_iter_value(id, &dvl);
    if (dkl != 8 || store__get_be64(dk) != pid) {
      rc = JP_CORRUPT_AT("index %s: passages and docs records disagree near passage %" PRIu64,
                         s->dir, pid);
      goto out;
    }
    if ((rc = store__decode_passage(&s->codec, pid, v, vl, &codes, &codes_cap, &doclen,
                                    &packed)) < 0 ||
        (rc = store__decode_doc(pid, dv, dvl, &doc)) < 0)
      goto out;
    jp_buf_reset(&meta);
    if (doc.meta && (rc = jp_buf_append(&meta, doc.meta, doc.meta_len)) < 0) goto out;
    if ((rc = jp_part_add(s->part, pid, doc.doc_id, doc.doc_id_len, doc.meta ? meta.data : NULL,
                          doclen, codes, packed)) < 0)
      goto out;
    if ((rc = jp_grow((void **)&live, &live_cap, n_live + 1, sizeof *live, 0)) < 0 ||
        (rc = jp_grow((void **)&uniq, &uniq_cap, (size_t)doclen + 1, sizeof *uniq, 0)) < 0)
      goto out;
    live[n_live++] = pid;   /* ascending: keys are big-endian */
    expect_pairs += (uint64_t)store__distinct_codes(codes, doclen, uniq);
    if ((pid & STORE_MAX_SEQ) + 1 > max_seq_plus1) max_seq_plus1 = (pid & STORE_MAX_SEQ) + 1;
  }
  if ((rc = iter_done(ip, "reading passages")) < 0 || (rc = iter_done(id, "reading docs")) < 0)
    goto out;
  if (rocksdb_iter_valid(id)) {
    rc = JP_CORRUPT_AT("index %s: a document record has no passage", s->dir);
    goto out;
  }
  if (max_seq_plus1 > s->next_seq) {
    rc = JP_CORRUPT_AT("index %s: passage sequence %" PRIu64 " is past next_pid %" PRIu64,
                       s->dir, max_seq_plus1 - 1, s->next_seq);
    goto out;
  }
  rocksdb_iter_destroy(ip);
  rocksdb_iter_destroy(id);
  ip = id = NULL;

  /* IVF: every (centroid, live pid) pair exactly once. */
  ip = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_IVF]);
  for (rocksdb_iter_seek_to_first(ip); rocksdb_iter_valid(ip); rocksdb_iter_next(ip)) {
    size_t kl, vl;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(ip, &kl);
    const uint8_t *v = (const uint8_t *)rocksdb_iter_value(ip, &vl), *end = v + vl;
    uint64_t pid = 0, prev = 0, d, seg;
    int first = 1;
    if (kl != 12 || store__get_be32(k) >= (uint32_t)s->codec.ncentroids) {
      rc = JP_CORRUPT_AT("index %s: bad ivf key", s->dir);
      goto out;
    }
    seg = store__get_be64(k + 4);
    if (seg + 1 > s->next_segment) s->next_segment = seg + 1;
    while (v < end) {
      if (store__get_varint(&v, end, &d) < 0 || (!first && d == 0)) {
        rc = JP_CORRUPT_AT("index %s: bad ivf list for centroid %u", s->dir, store__get_be32(k));
        goto out;
      }
      pid = first ? d : prev + d;
      first = 0;
      prev = pid;
      if (pid_live(live, n_live, pid)) got_pairs++;
      else stale_pairs++;
    }
  }
  if ((rc = iter_done(ip, "reading ivf")) < 0) goto out;
  if (got_pairs != expect_pairs) {
    rc = JP_CORRUPT_AT("index %s: ivf lists hold %" PRIu64 " entries of live passages, the "
                       "passages need %" PRIu64, s->dir, got_pairs, expect_pairs);
    goto out;
  }
  rocksdb_iter_destroy(ip);
  ip = NULL;

  /* docids: every live passage listed under its own document, and the
   * part holding exactly those passages for it. */
  {
    struct jp_part_stats st;
    uint64_t n_docs = 0, n_pids = 0, *lst = NULL, *got = NULL;
    size_t lst_cap = 0, got_cap = 0;
    ip = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_DOCIDS]);
    for (rocksdb_iter_seek_to_first(ip); rocksdb_iter_valid(ip) && rc == 0;
         rocksdb_iter_next(ip)) {
      size_t kl, vl, listed = 0;
      const char *k = rocksdb_iter_key(ip, &kl);
      const uint8_t *v = (const uint8_t *)rocksdb_iter_value(ip, &vl), *end = v + vl;
      uint64_t pid = 0, d;
      int n_in_part = 0;
      while (v < end && rc == 0) {
        if (store__get_varint(&v, end, &d) < 0 || (listed && d == 0)) {
          rc = JP_CORRUPT_AT("index %s: bad docids list", s->dir);
          break;
        }
        pid = listed ? pid + d : d;
        if ((rc = jp_grow((void **)&lst, &lst_cap, listed + 1, sizeof *lst, 0)) < 0) break;
        lst[listed++] = pid;
      }
      if (rc < 0) break;
      if (listed == 0 || listed > INT32_MAX) {
        rc = JP_CORRUPT_AT("index %s: document '%.*s' lists no passages", s->dir, (int)kl, k);
        break;
      }
      if ((rc = jp_grow((void **)&got, &got_cap, listed, sizeof *got, 0)) < 0) break;
      rc = jp_part_doc_pids(s->part, k, kl, got, (int)listed, &n_in_part);
      if (rc == JP_ETOOBIG) rc = 0;   /* more passages than listed: reported below */
      if (rc < 0) break;
      if ((size_t)n_in_part == listed) qsort(got, listed, sizeof *got, cmp_u64);
      if ((size_t)n_in_part != listed || memcmp(got, lst, listed * sizeof *lst)) {
        rc = JP_CORRUPT_AT("index %s: document '%.*s': docids lists %zu passages that do not "
                           "match the %d stored under it", s->dir, (int)kl, k, listed,
                           n_in_part);
        break;
      }
      n_docs++;
      n_pids += listed;
    }
    jp_free(lst);
    jp_free(got);
    if (rc < 0) goto out;
    if ((rc = iter_done(ip, "reading docids")) < 0) goto out;
    jp_part_get_stats(s->part, &st);
    if (st.n_docs != s->n_docs || st.n_passages != s->n_passages) {
      rc = JP_CORRUPT_AT("index %s holds %" PRIu64 " passages of %" PRIu64 " documents, but its "
                         "meta records %" PRIu64 " of %" PRIu64 ": files of the index are "
                         "missing or damaged", s->dir, st.n_passages, st.n_docs, s->n_passages,
                         s->n_docs);
      goto out;
    }
    if (n_docs != st.n_docs || n_pids != st.n_passages) {
      rc = JP_CORRUPT_AT("index %s: docids lists %" PRIu64 " documents / %" PRIu64
                         " passages, the passages hold %" PRIu64 " / %" PRIu64,
                         s->dir, n_docs, n_pids, st.n_docs, st.n_passages);
      goto out;
    }
  }
  if (!s->read_only && stale_pairs >= IVF_COMPACT_MIN && stale_pairs > got_pairs)
    rc = compact_ivf(s, ro, live, n_live);
out:
  if (ip) rocksdb_iter_destroy(ip);
  if (id) rocksdb_iter_destroy(id);
  rocksdb_readoptions_destroy(ro);
  jp_free(live);
  jp_free(codes);
  jp_free(uniq);
  jp_buf_fini(&meta);
  return rc;
}

/* Point the result reads at the current state (call with the write lock
 * held, or before the store is shared). Read-only stores never change and
 * read the latest state. */
static void refresh_snapshot(jp_store *s)
{
  const rocksdb_snapshot_t *old = s->snap;
  rocksdb_readoptions_t *old_ro = s->snap_ro;
  if (s->read_only) return;
  s->snap = rocksdb_create_snapshot(s->db);
  s->snap_ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_snapshot(s->snap_ro, s->snap);
  if (old_ro) rocksdb_readoptions_destroy(old_ro);
  if (old) rocksdb_release_snapshot(s->db, old);
}

static int finish_open(jp_store *s, const struct jp_store_opts *o)
{
  int rc;
  s->wo = rocksdb_writeoptions_create();
  s->ro = rocksdb_readoptions_create();
  rocksdb_writeoptions_set_sync(s->wo, (unsigned char)(o->sync ? 1 : 0));
  rocksdb_readoptions_set_verify_checksums(s->ro, 1);
  if ((rc = read_meta(s, o->expect_identity)) < 0) return rc;
  if ((rc = load_part(s)) < 0) return rc;
  refresh_snapshot(s);
  return 0;
}

int jp_store_open(const char *dir, const struct jp_store_opts *o, jp_store **out)
{
  struct jp_store_opts def;
  jp_store *s;
  int rc;

  if (!out) return jp_err(JP_EINVAL, "jp_store_open: out is NULL");
  *out = NULL;
  if (!dir || !*dir) return jp_err(JP_EINVAL, "index directory is empty");
  if (!o) { jp_store_opts_default(&def); o = &def; }
  if (!o->residuals_in_memory)
    return jp_err(JP_EUNSUPPORTED, "residuals_in_memory = 0: the partition search keeps "
                  "residuals in memory (no read-through path yet)");
  if ((rc = store_alloc(dir, o, &s)) < 0) return rc;
  if ((rc = store__make_options(s, o->block_cache_bytes, 0)) < 0 ||
      (rc = store__open_db(s, dir, 0, o->read_only)) < 0 || (rc = finish_open(s, o)) < 0) {
    jp_store_close(s);
    return rc;
  }
  *out = s;
  return 0;
}

int store__check_meta(const struct jp_store_meta *m, const struct jp_codec *c)
{
  if (!m || !c) return jp_err(JP_EINVAL, "store meta or codec is NULL");
  if (!memchr(m->model_identity, '\0', sizeof m->model_identity) || !m->model_identity[0])
    return jp_err(JP_EINVAL, "model identity is empty or not terminated");
  if (!memchr(m->model_name, '\0', sizeof m->model_name) ||
      !memchr(m->model_path, '\0', sizeof m->model_path) ||
      !memchr(m->settings_json, '\0', sizeof m->settings_json))
    return jp_err(JP_EINVAL, "store meta string not terminated");
  if (m->n_partitions < 1 || m->partition_id >= m->n_partitions ||
      m->n_partitions > STORE_MAX_PARTITIONS)
    return jp_err(JP_EINVAL, "partition %u of %u", m->partition_id, m->n_partitions);
  if (m->settings_json[0]) {
    json_error_t e;
    json_t *j = json_loads(m->settings_json, 0, &e);
    int ok = j && json_is_object(j);
    json_decref(j);
    if (!ok) return jp_err(JP_EINVAL, "settings_json is not a JSON object");
  }
  if (c->dim <= 0 || (c->nbits != 1 && c->nbits != 2 && c->nbits != 4 && c->nbits != 8) ||
      c->ncentroids < 1 || !c->centroids || (c->dim * c->nbits) % 8)
    return jp_err(JP_EINVAL, "codec: dim %d, nbits %d, %d centroids", c->dim, c->nbits,
                  c->ncentroids);
  return 0;
}

static int dir_is_empty_or_absent(const char *dir)
{
  struct stat st;
  DIR *d;
  struct dirent *e;
  int empty = 1;
  if (stat(dir, &st) != 0) return 1;
  if (!S_ISDIR(st.st_mode)) return 0;
  if (!(d = opendir(dir))) return 0;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { empty = 0; break; }
  closedir(d);
  return empty;
}

int jp_store_create(const char *dir, const struct jp_store_meta *meta,
                    const struct jp_codec *codec, const struct jp_store_opts *o, jp_store **out)
{
  struct jp_store_opts def;
  rocksdb_writebatch_t *wb = NULL;
  jp_store *s = NULL;
  uint8_t zero[8] = {0};
  char *err = NULL;
  int rc, made = 0;

  if (!out) return jp_err(JP_EINVAL, "jp_store_create: out is NULL");
  *out = NULL;
  if (!dir || !*dir) return jp_err(JP_EINVAL, "index directory is empty");
  if (!o) { jp_store_opts_default(&def); o = &def; }
  if (o->read_only) return jp_err(JP_EINVAL, "cannot create an index read-only");
  if ((rc = store__check_meta(meta, codec)) < 0) return rc;
  if (!dir_is_empty_or_absent(dir)) return jp_err(JP_EEXISTS, "%s exists and is not empty", dir);
  if ((rc = jp_mkdir_p(dir)) < 0) return rc;
  made = 1;   /* the directory is empty and ours: a failed create removes what it wrote */
  if ((rc = store_alloc(dir, o, &s)) < 0) return rc;
  if ((rc = store__make_options(s, o->block_cache_bytes, 1)) < 0 ||
      (rc = store__open_db(s, dir, 1, 0)) < 0)
    goto fail;
  wb = rocksdb_writebatch_create();
  if ((rc = store__put_static_meta(wb, s->cf[CF_META], meta, codec)) < 0) goto fail;
  rocksdb_writebatch_put_cf(wb, s->cf[CF_META], "next_pid", 8, (const char *)zero, 8);
  rocksdb_writebatch_put_cf(wb, s->cf[CF_META], "next_segment", 12, (const char *)zero, 8);
  store__put_counts(wb, s->cf[CF_META], 0, 0);
  {
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    rocksdb_write(s->db, wo, wb, &err);
    rocksdb_writeoptions_destroy(wo);
  }
  if (err) { rc = store__rerr(err, "writing index meta"); goto fail; }
  rocksdb_writebatch_destroy(wb);
  wb = NULL;
  if ((rc = finish_open(s, o)) < 0) goto fail;
  *out = s;
  return 0;
fail:
  if (wb) rocksdb_writebatch_destroy(wb);
  jp_store_close(s);
  if (made && jp_rm_rf(dir) == 0) (void)jp_mkdir_p(dir);
  return rc;
}

/* ---- writes ----------------------------------------------------------------------------- */

struct code_pid {
  uint32_t code;
  uint64_t pid;
};

static int cmp_code_pid(const void *a, const void *b)
{
  const struct code_pid *x = a, *y = b;
  if (x->code != y->code) return x->code < y->code ? -1 : 1;
  return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int writable(jp_store *s)
{
  if (!s) return jp_err(JP_EINVAL, "store is NULL");
  if (s->read_only) return jp_err(JP_EUNSUPPORTED, "index %s is open read-only", s->dir);
  return 0;
}

static int poisoned(jp_store *s)
{
  return s->poisoned ? jp_err(JP_EINTERNAL, "index %s: an earlier write was committed but could "
                              "not be applied in memory (%s); reopen the index", s->dir,
                              jp_strerror(s->poisoned))
                     : 0;
}

/* Existing passage lists of `n` document ids (rocksdb-allocated values;
 * NULL where absent), read at the latest state. */
static int get_docids(jp_store *s, const char *const *ids, const size_t *lens, size_t n,
                      char **vals, size_t *vlens)
{
  const rocksdb_column_family_handle_t **cfs = jp_malloc((n ? n : 1) * sizeof *cfs);
  char **errs = jp_calloc(n ? n : 1, sizeof *errs);
  int rc = 0;
  if (!cfs || !errs) { jp_free(cfs); jp_free(errs); return JP_ENOMEM; }
  for (size_t i = 0; i < n; i++) cfs[i] = s->cf[CF_DOCIDS];
  rocksdb_multi_get_cf(s->db, s->ro, cfs, n, ids, lens, vals, vlens, errs);
  for (size_t i = 0; i < n; i++)
    if (errs[i]) {
      if (rc == 0) rc = store__rerr(errs[i], "reading document ids");
      else rocksdb_free(errs[i]);
    }
  jp_free(cfs);
  jp_free(errs);
  return rc;
}

/* Delete the passages (passages + docs records) listed in a docids value. */
static int batch_delete_pids(jp_store *s, rocksdb_writebatch_t *wb, const char *v, size_t len,
                             uint64_t *n_deleted)
{
  const uint8_t *p = (const uint8_t *)v, *end = p + len;
  uint64_t pid = 0, d;
  int first = 1;
  while (p < end) {
    uint8_t key[8];
    if (store__get_varint(&p, end, &d) < 0) return JP_CORRUPT_AT("index %s: bad docids list", s->dir);
    pid = first ? d : pid + d;
    first = 0;
    store__be64(key, pid);
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_PASSAGES], (const char *)key, 8);
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_DOCS], (const char *)key, 8);
    (*n_deleted)++;
  }
  return 0;
}

static void put_u64(rocksdb_writebatch_t *wb, rocksdb_column_family_handle_t *cf,
                    const char *key, uint64_t v)
{
  uint8_t b[8];
  store__be64(b, v);
  rocksdb_writebatch_put_cf(wb, cf, key, strlen(key), (const char *)b, 8);
}

int jp_store_upsert(jp_store *s, const struct jp_doc_in *docs, int n, jp_pool *pool)
{
  const struct jp_codec *c;
  uint32_t *codes = NULL, *uniq = NULL;
  uint8_t *packed = NULL;
  size_t n_vecs = 0, n_pass = 0, n_pairs = 0, pb;
  double resid_sum = 0;
  struct code_pid *pairs = NULL;
  uint64_t *pids = NULL, seq, segment, gone_passages = 0, gone_docs = 0;
  const char **ids = NULL;
  size_t *id_lens = NULL, *old_lens = NULL;
  char **old = NULL, *err = NULL;
  rocksdb_writebatch_t *wb = NULL;
  struct jp_buf b;
  int rc, locked = 0;

  if ((rc = writable(s)) < 0) return rc;
  c = &s->codec;
  pb = jp_codec_packed_bytes(c);
  if ((rc = store__check_docs(docs, n, c->dim)) < 0 || n == 0) return rc;
  jp_buf_init(&b, 0);
  if ((rc = store__compress_docs(c, docs, n, pool, &codes, &packed, &n_vecs, &resid_sum)) < 0)
    goto out;
  for (int i = 0; i < n; i++) n_pass += (size_t)docs[i].n_passages;
  pids = jp_malloc(n_pass * sizeof *pids);
  pairs = jp_malloc((n_vecs + 1) * sizeof *pairs);
  uniq = jp_malloc((STORE_MAX_PASSAGE_VECS + 1) * sizeof *uniq);
  ids = jp_malloc((size_t)n * sizeof *ids);
  id_lens = jp_malloc((size_t)n * sizeof *id_lens);
  old = jp_calloc((size_t)n, sizeof *old);
  old_lens = jp_calloc((size_t)n, sizeof *old_lens);
  if (!pids || !pairs || !uniq || !ids || !id_lens || !old || !old_lens) { rc = JP_ENOMEM; goto out; }
  for (int i = 0; i < n; i++) {
    ids[i] = docs[i].doc_id;
    id_lens[i] = docs[i].doc_id_len;
  }

  pthread_mutex_lock(&s->wmu);
  locked = 1;
  if ((rc = poisoned(s)) < 0) goto out;
  if ((rc = get_docids(s, ids, id_lens, (size_t)n, old, old_lens)) < 0) goto out;
  wb = rocksdb_writebatch_create();
  for (int i = 0; i < n; i++) {
    if (!old[i]) continue;
    if ((rc = batch_delete_pids(s, wb, old[i], old_lens[i], &gone_passages)) < 0) goto out;
    gone_docs++;
  }

  seq = s->next_seq;
  segment = s->next_segment;
  {
    size_t pi = 0, vi = 0;
    for (int i = 0; i < n; i++) {
      const struct jp_doc_in *d = &docs[i];
      size_t meta_len = d->metadata_json ? strlen(d->metadata_json) : 0;
      for (int j = 0; j < d->n_passages; j++, pi++) {
        const struct jp_passage_in *p = &d->passages[j];
        uint8_t key[8];
        int nu;
        if (seq > STORE_MAX_SEQ) {
          rc = jp_err(JP_ETOOBIG, "index %s: passage ids of partition %u are exhausted", s->dir,
                      s->meta.partition_id);
          goto out;
        }
        pids[pi] = store__pid(s->meta.partition_id, seq++);
        store__be64(key, pids[pi]);
        jp_buf_reset(&b);
        if ((rc = store__encode_passage(&b, c, p->n_vecs, codes + vi, packed + vi * pb)) < 0)
          goto out;
        rocksdb_writebatch_put_cf(wb, s->cf[CF_PASSAGES], (const char *)key, 8, b.data, b.len);
        jp_buf_reset(&b);
        if ((rc = store__encode_doc(&b, d->doc_id, d->doc_id_len, p->text, p->text_len,
                                    d->metadata_json, meta_len)) < 0)
          goto out;
        rocksdb_writebatch_put_cf(wb, s->cf[CF_DOCS], (const char *)key, 8, b.data, b.len);
        nu = store__distinct_codes(codes + vi, p->n_vecs, uniq);
        for (int u = 0; u < nu; u++) {
          pairs[n_pairs].code = uniq[u];
          pairs[n_pairs].pid = pids[pi];
          n_pairs++;
        }
        vi += (size_t)p->n_vecs;
      }
      jp_buf_reset(&b);
      if ((rc = store__put_pid_list(&b, pids + pi - (size_t)d->n_passages,
                                    (size_t)d->n_passages)) < 0)
        goto out;
      rocksdb_writebatch_put_cf(wb, s->cf[CF_DOCIDS], d->doc_id, d->doc_id_len, b.data, b.len);
    }
  }
  /* One new IVF segment per centroid touched by this write. */
  qsort(pairs, n_pairs, sizeof *pairs, cmp_code_pid);
  for (size_t i = 0; i < n_pairs;) {
    size_t j = i;
    uint8_t key[12];
    uint64_t prev = 0;
    jp_buf_reset(&b);
    for (; j < n_pairs && pairs[j].code == pairs[i].code; j++) {
      if ((rc = store__put_varint(&b, j == i ? pairs[j].pid : pairs[j].pid - prev)) < 0) goto out;
      prev = pairs[j].pid;
    }
    store__be32(key, pairs[i].code);
    store__be64(key + 4, segment);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_IVF], (const char *)key, 12, b.data, b.len);
    i = j;
  }
  put_u64(wb, s->cf[CF_META], "next_pid", seq);
  put_u64(wb, s->cf[CF_META], "next_segment", segment + 1);
  store__put_counts(wb, s->cf[CF_META], s->n_passages - gone_passages + n_pass,
                    s->n_docs - gone_docs + (uint64_t)n);
  {
    uint8_t lr[16];
    double sum = s->live_resid_sum + resid_sum;
    uint64_t bits;
    memcpy(&bits, &sum, 8);
    store__be64(lr, bits);
    store__be64(lr + 8, s->live_resid_n + n_vecs);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_META], "live_resid", 10, (const char *)lr, 16);
  }
  rocksdb_write(s->db, s->wo, wb, &err);
  if (err) { rc = store__rerr(err, "committing an upsert"); goto out; }
  s->next_seq = seq;
  s->next_segment = segment + 1;
  s->n_passages = s->n_passages - gone_passages + n_pass;
  s->n_docs = s->n_docs - gone_docs + (uint64_t)n;
  s->live_resid_sum += resid_sum;
  s->live_resid_n += n_vecs;

  /* Committed: apply to memory. */
  pthread_rwlock_wrlock(&s->lock);
  {
    size_t pi = 0, vi = 0;
    int arc = 0;
    for (int i = 0; i < n && arc == 0; i++) {
      const struct jp_doc_in *d = &docs[i];
      if (old[i]) arc = jp_part_remove_doc(s->part, d->doc_id, d->doc_id_len, NULL);
      for (int j = 0; j < d->n_passages && arc == 0; j++, pi++) {
        const struct jp_passage_in *p = &d->passages[j];
        arc = jp_part_add(s->part, pids[pi], d->doc_id, d->doc_id_len, d->metadata_json,
                          p->n_vecs, codes + vi, packed + vi * pb);
        vi += (size_t)p->n_vecs;
      }
    }
    if (arc < 0) {
      s->poisoned = arc;
      JP_LOG_ERROR("index %s: committed upsert could not be applied in memory: %s", s->dir,
                   jp_errmsg(arc));
      rc = poisoned(s);
    }
    refresh_snapshot(s);
  }
  pthread_rwlock_unlock(&s->lock);
out:
  if (locked) pthread_mutex_unlock(&s->wmu);
  if (wb) rocksdb_writebatch_destroy(wb);
  if (old)
    for (int i = 0; i < n; i++)
      if (old[i]) rocksdb_free(old[i]);
  jp_free(old);
  jp_free(old_lens);
  jp_free(ids);
  jp_free(id_lens);
  jp_free(pids);
  jp_free(pairs);
  jp_free(uniq);
  jp_free(codes);
  jp_free(packed);
  jp_buf_fini(&b);
  return rc;
}

int jp_store_delete(jp_store *s, const char *const *doc_ids, const size_t *lens, int n,
                    int *n_deleted)
{
  size_t *ls = NULL, *old_lens = NULL;
  char **old = NULL, *err = NULL;
  rocksdb_writebatch_t *wb = NULL;
  int rc, locked = 0, any = 0, deleted = 0;
  uint64_t gone_passages = 0, gone_docs = 0;

  if (n_deleted) *n_deleted = 0;
  if ((rc = writable(s)) < 0) return rc;
  if (n < 0 || (n > 0 && !doc_ids)) return jp_err(JP_EINVAL, "bad document id array");
  if (n == 0) return 0;
  ls = jp_malloc((size_t)n * sizeof *ls);
  old = jp_calloc((size_t)n, sizeof *old);
  old_lens = jp_calloc((size_t)n, sizeof *old_lens);
  if (!ls || !old || !old_lens) { rc = JP_ENOMEM; goto out; }
  for (int i = 0; i < n; i++) {
    if (!doc_ids[i]) { rc = jp_err(JP_EINVAL, "document id %d is NULL", i); goto out; }
    ls[i] = lens ? lens[i] : strlen(doc_ids[i]);
  }
  pthread_mutex_lock(&s->wmu);
  locked = 1;
  if ((rc = poisoned(s)) < 0) goto out;
  if ((rc = get_docids(s, doc_ids, ls, (size_t)n, old, old_lens)) < 0) goto out;
  wb = rocksdb_writebatch_create();
  for (int i = 0; i < n; i++) {
    int dup = 0;
    if (!old[i]) continue;
    /* An id given twice is deleted (and counted) once. */
    for (int j = 0; j < i && !dup; j++)
      dup = old[j] && ls[j] == ls[i] && !memcmp(doc_ids[j], doc_ids[i], ls[i]);
    if (dup) continue;
    any = 1;
    if ((rc = batch_delete_pids(s, wb, old[i], old_lens[i], &gone_passages)) < 0) goto out;
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_DOCIDS], doc_ids[i], ls[i]);
    gone_docs++;
  }
  if (!any) goto out;
  store__put_counts(wb, s->cf[CF_META], s->n_passages - gone_passages, s->n_docs - gone_docs);
  rocksdb_write(s->db, s->wo, wb, &err);
  if (err) { rc = store__rerr(err, "committing a delete"); goto out; }
  s->n_passages -= gone_passages;
  s->n_docs -= gone_docs;
  pthread_rwlock_wrlock(&s->lock);
  for (int i = 0; i < n; i++) {
    int removed = 0, arc;
    if (!old[i]) continue;
    arc = jp_part_remove_doc(s->part, doc_ids[i], ls[i], &removed);
    if (arc < 0) {
      s->poisoned = arc;
      JP_LOG_ERROR("index %s: committed delete could not be applied in memory: %s", s->dir,
                   jp_errmsg(arc));
      rc = poisoned(s);
      break;
    }
    if (removed > 0) deleted++;   /* an id given twice counts once */
  }
  refresh_snapshot(s);
  pthread_rwlock_unlock(&s->lock);
  if (n_deleted && rc == 0) *n_deleted = deleted;
out:
  if (locked) pthread_mutex_unlock(&s->wmu);
  if (wb) rocksdb_writebatch_destroy(wb);
  if (old)
    for (int i = 0; i < n; i++)
      if (old[i]) rocksdb_free(old[i]);
  jp_free(old);
  jp_free(old_lens);
  jp_free(ls);
  return rc;
}

/* ---- search ------------------------------------------------------------------------------- */

int jp_store_search(jp_store *s, const float *Q, int nq, const struct jp_search_params *sp,
                    const struct jp_restrict *r, jp_pool *pool, struct jp_arena *a,
                    struct jp_result **out, int *n_out)
{
  struct jp_search_params p;
  struct jp_hit *hits;
  struct jp_result *res = NULL;
  const rocksdb_column_family_handle_t **cfs;
  const char **keys;
  size_t *klens, *vlens;
  char **vals, **errs;
  uint8_t *keybuf;
  int n = 0, rc;

  if (out) *out = NULL;
  if (n_out) *n_out = 0;
  if (!s || !Q || !sp || !a || !out || !n_out) return jp_err(JP_EINVAL, "jp_store_search: NULL argument");
  if (nq < 1 || nq > JP_MAX_QUERY_TOKENS)
    return jp_err(JP_EINVAL, "query has %d vectors (1..%d)", nq, JP_MAX_QUERY_TOKENS);
  p = *sp;
  jp_search_params_resolve(&p);
  if ((rc = jp_search_params_check(&p)) < 0) return rc;
  hits = jp_arena_alloc(a, (size_t)p.k * sizeof *hits);
  cfs = jp_arena_alloc(a, (size_t)p.k * sizeof *cfs);
  keys = jp_arena_alloc(a, (size_t)p.k * sizeof *keys);
  klens = jp_arena_alloc(a, (size_t)p.k * sizeof *klens);
  vlens = jp_arena_alloc(a, (size_t)p.k * sizeof *vlens);
  vals = jp_arena_calloc(a, (size_t)p.k, sizeof *vals);
  errs = jp_arena_calloc(a, (size_t)p.k, sizeof *errs);
  keybuf = jp_arena_alloc(a, (size_t)p.k * 8);
  if (!hits || !cfs || !keys || !klens || !vlens || !vals || !errs || !keybuf) return JP_ENOMEM;

  pthread_rwlock_rdlock(&s->lock);
  if ((rc = poisoned(s)) == 0)
    rc = jp_part_search(s->part, Q, nq, &p, r, pool, a, hits, &n);
  if (rc == 0 && n > 0) {
    for (int i = 0; i < n; i++) {
      store__be64(keybuf + 8 * i, hits[i].pid);
      keys[i] = (const char *)keybuf + 8 * i;
      klens[i] = 8;
      cfs[i] = s->cf[CF_DOCS];
    }
    rocksdb_multi_get_cf(s->db, s->snap_ro ? s->snap_ro : s->ro, cfs, (size_t)n, keys, klens,
                         vals, vlens, errs);
  }
  pthread_rwlock_unlock(&s->lock);

  if (rc == 0 && n > 0 && !(res = jp_arena_calloc(a, (size_t)n, sizeof *res))) rc = JP_ENOMEM;
  for (int i = 0; i < n; i++) {
    struct store_doc_view d;
    if (errs[i]) {
      if (rc == 0) rc = store__rerr(errs[i], "reading search results");
      else rocksdb_free(errs[i]);
      continue;
    }
    if (rc < 0) continue;
    if (!vals[i]) {
      rc = JP_CORRUPT_AT("index %s: passage %" PRIu64 " is searchable but has no document "
                         "record", s->dir, hits[i].pid);
      continue;
    }
    if ((rc = store__decode_doc(hits[i].pid, (const uint8_t *)vals[i], vlens[i], &d)) < 0)
      continue;
    res[i].passage_id = hits[i].pid;
    res[i].score = hits[i].score;
    res[i].rank = i + 1;
    res[i].document_id = jp_arena_strndup(a, d.doc_id, d.doc_id_len);
    res[i].content = jp_arena_strndup(a, d.text, d.text_len);
    res[i].content_len = d.text_len;
    res[i].metadata_json = d.meta ? jp_arena_strndup(a, d.meta, d.meta_len) : NULL;
    if (!res[i].document_id || !res[i].content || (d.meta && !res[i].metadata_json))
      rc = JP_ENOMEM;
  }
  for (int i = 0; i < n; i++)
    if (vals[i]) rocksdb_free(vals[i]);
  if (rc < 0) return rc;
  *out = res;
  *n_out = n;
  return 0;
}

/* ---- stats -------------------------------------------------------------------------------- */

int jp_store_get_stats(jp_store *s, struct jp_store_stats *out)
{
  struct jp_part_stats ps;
  if (!s || !out) return jp_err(JP_EINVAL, "jp_store_get_stats: NULL argument");
  memset(out, 0, sizeof *out);
  pthread_rwlock_rdlock(&s->lock);
  jp_part_get_stats(s->part, &ps);
  pthread_rwlock_unlock(&s->lock);
  out->n_passages = ps.n_passages;
  out->n_docs = ps.n_docs;
  out->n_embeddings = ps.n_embeddings;
  out->ncentroids = s->codec.ncentroids;
  out->nbits = s->codec.nbits;
  out->dim = s->codec.dim;
  /* Bytes per family: live SST files (what is on disk for the current
   * version) plus the memtables not yet flushed (their arena size, so a
   * just-written store is not reported as empty). WAL and LOG files are
   * not counted: they are transient and not part of the index. */
  for (int i = 0; i < CF_N; i++) {
    uint64_t sst = 0, mem = 0;
    if (rocksdb_property_int_cf(s->db, s->cf[i], "rocksdb.live-sst-files-size", &sst) != 0) sst = 0;
    if (rocksdb_property_int_cf(s->db, s->cf[i], "rocksdb.cur-size-all-mem-tables", &mem) != 0)
      mem = 0;
    out->cf_bytes[i] = sst + mem;
    out->total_bytes += out->cf_bytes[i];
  }
  out->bytes_per_embedding =
    out->n_embeddings ? (double)out->total_bytes / (double)out->n_embeddings : 0.0;
  pthread_mutex_lock(&s->wmu);
  if (s->build_resid_n && s->live_resid_n && s->build_resid_sum > 0)
    out->codebook_drift = (s->live_resid_sum / (double)s->live_resid_n) /
                          (s->build_resid_sum / (double)s->build_resid_n);
  else
    out->codebook_drift = NAN;
  pthread_mutex_unlock(&s->wmu);
  return 0;
}
