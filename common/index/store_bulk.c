/* store_bulk.c: writing whole partitions through SST files (store.h, "bulk
 * build"): the per-process SST writer, the ingestion that turns the files
 * of all writers into a partition, and the single-process builder on top
 * of both.
 *
 * A writer streams passages and docs records straight into SST files (pids
 * only grow, so keys arrive sorted); it keeps in memory only the IVF lists
 * (delta-varint bytes per centroid) and a bounded buffer of document ids,
 * which is sorted and spilled as one docids SST whenever it fills. So a
 * writer's memory is O(IVF entries) + DOCIDS_CHUNK, never O(embeddings).
 *
 * Ingestion builds the partition in dir.tmp: static meta, every file
 * ingested into its family, pid ranges of the writers checked for overlap,
 * document ids checked for duplicates across writers (count of docids keys
 * vs the writers' document counts), next_pid/next_segment set, then the
 * directory is published with an atomic rename.
 *
 * Thread-safety: a writer or builder is used by one thread at a time.
 * Allocation: jp_malloc for our buffers; RocksDB allocates its own. */
#include "index/store_int.h"

#include "util/err.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Document ids buffered before a sorted docids SST is spilled: 64 MiB
 * holds ~1.5M typical ids, bounding a writer's memory on any corpus while
 * keeping the number of docids files (and L0 overlap) small. */
#define DOCIDS_CHUNK_BYTES ((size_t)64 << 20)
/* Path buffers: PATH_MAX-sized plus room for the suffixes we add. */
#define BULK_PATH 4200

struct ivf_list {
  uint8_t *data;
  size_t len, cap;
  uint64_t last;
};

struct docid_ent {
  size_t off;                   /* id bytes in idpool */
  size_t len;
  uint64_t first_pid;           /* a document's passages have consecutive pids */
  uint32_t n;
};

struct jp_store_sstwriter {
  char *sst_dir, *tag;
  struct jp_store_meta meta;
  struct jp_codec codec;
  uint64_t first_seq, next_seq, segment;
  struct jp_store opt;          /* holds only the per-family options */
  rocksdb_envoptions_t *env;
  rocksdb_sstfilewriter_t *w[CF_N];
  uint64_t n_in[CF_N];          /* keys in the open file of each family */
  int file_no[CF_N];
  struct ivf_list *ivf;         /* [ncentroids] */
  struct docid_ent *ids;
  size_t n_ids, ids_cap;
  struct jp_buf idpool;
  uint64_t n_passages, n_docs, n_vecs;
  double resid_sum;
  struct jp_buf b;
  uint32_t *uniq;
};

static void writer_free(jp_store_sstwriter *w)
{
  if (!w) return;
  for (int i = 0; i < CF_N; i++)
    if (w->w[i]) rocksdb_sstfilewriter_destroy(w->w[i]);
  if (w->env) rocksdb_envoptions_destroy(w->env);
  store__free_options(&w->opt);
  if (w->ivf)
    for (int c = 0; c < w->codec.ncentroids; c++) jp_free(w->ivf[c].data);
  jp_free(w->ivf);
  jp_free(w->ids);
  jp_buf_fini(&w->idpool);
  jp_buf_fini(&w->b);
  jp_free(w->uniq);
  jp_codec_fini(&w->codec);
  jp_free(w->sst_dir);
  jp_free(w->tag);
  jp_free(w);
}

int jp_store_sstwriter_create(const char *sst_dir, const char *tag,
                              const struct jp_store_meta *meta, const struct jp_codec *codec,
                              uint64_t first_seq, uint64_t ivf_segment, jp_store_sstwriter **out)
{
  jp_store_sstwriter *w;
  int rc;

  if (!out) return jp_err(JP_EINVAL, "jp_store_sstwriter_create: out is NULL");
  *out = NULL;
  if (!sst_dir || !tag || !*tag || strchr(tag, '/'))
    return jp_err(JP_EINVAL, "SST writer needs a directory and a tag without '/'");
  if ((rc = store__check_meta(meta, codec)) < 0) return rc;
  if (first_seq > STORE_MAX_SEQ) return jp_err(JP_EINVAL, "first_seq past the pid range");
  if (!jp_is_dir(sst_dir)) return jp_err(JP_ENOTFOUND, "SST directory %s does not exist", sst_dir);
  w = jp_calloc(1, sizeof *w);
  if (!w) return JP_ENOMEM;
  jp_buf_init(&w->idpool, 0);
  jp_buf_init(&w->b, 0);
  w->sst_dir = jp_strdup(sst_dir);
  w->tag = jp_strdup(tag);
  w->meta = *meta;
  w->first_seq = w->next_seq = first_seq;
  w->segment = ivf_segment;
  if (!w->sst_dir || !w->tag) { rc = JP_ENOMEM; goto fail; }
  if ((rc = jp_codec_copy(&w->codec, codec)) < 0) goto fail;
  w->ivf = jp_calloc((size_t)codec->ncentroids, sizeof *w->ivf);
  w->uniq = jp_malloc((STORE_MAX_PASSAGE_VECS + 1) * sizeof *w->uniq);
  if (!w->ivf || !w->uniq) { rc = JP_ENOMEM; goto fail; }
  if ((rc = store__make_options(&w->opt, 0, 0)) < 0) goto fail;
  w->env = rocksdb_envoptions_create();
  *out = w;
  return 0;
fail:
  writer_free(w);
  return rc;
}

static int file_close(jp_store_sstwriter *w, int cf)
{
  char *err = NULL;
  if (!w->w[cf]) return 0;
  rocksdb_sstfilewriter_finish(w->w[cf], &err);
  rocksdb_sstfilewriter_destroy(w->w[cf]);
  w->w[cf] = NULL;
  w->n_in[cf] = 0;
  w->file_no[cf]++;
  return err ? store__rerr(err, "finishing an SST file") : 0;
}

static int file_put(jp_store_sstwriter *w, int cf, const void *k, size_t kl, const void *v,
                    size_t vl)
{
  char *err = NULL;
  if (!w->w[cf]) {
    char path[BULK_PATH];
    if (snprintf(path, sizeof path, "%s/%s.%s.%d.sst", w->sst_dir, w->tag, jp_store_cf_names[cf],
                 w->file_no[cf]) >= (int)sizeof path)
      return jp_err(JP_ETOOBIG, "SST path too long");
    w->w[cf] = rocksdb_sstfilewriter_create(w->env, w->opt.cfopt[cf]);
    rocksdb_sstfilewriter_open(w->w[cf], path, &err);
    if (err) {
      rocksdb_sstfilewriter_destroy(w->w[cf]);
      w->w[cf] = NULL;
      return store__rerr(err, "creating an SST file");
    }
  }
  rocksdb_sstfilewriter_put(w->w[cf], k, kl, v, vl, &err);
  if (err) return store__rerr(err, "writing an SST file");
  w->n_in[cf]++;
  return 0;
}

static int cmp_docid(const void *a, const void *b, void *pool)
{
  const struct docid_ent *x = a, *y = b;
  const char *p = pool;
  int c = memcmp(p + x->off, p + y->off, x->len < y->len ? x->len : y->len);
  if (c) return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* Sort the buffered document ids and write them as one docids file. */
static int spill_docids(jp_store_sstwriter *w)
{
  int rc;
  if (w->n_ids == 0) return 0;
  qsort_r(w->ids, w->n_ids, sizeof *w->ids, cmp_docid, w->idpool.data);
  for (size_t i = 0; i < w->n_ids; i++) {
    const struct docid_ent *e = &w->ids[i];
    if (i && !cmp_docid(&w->ids[i - 1], e, w->idpool.data))
      return jp_err(JP_EEXISTS, "document id '%.*s' was added twice", (int)e->len,
                    w->idpool.data + e->off);
    jp_buf_reset(&w->b);
    if ((rc = store__put_varint(&w->b, e->first_pid)) < 0) return rc;
    for (uint32_t j = 1; j < e->n; j++)
      if ((rc = store__put_varint(&w->b, 1)) < 0) return rc;
    if ((rc = file_put(w, CF_DOCIDS, w->idpool.data + e->off, e->len, w->b.data, w->b.len)) < 0)
      return rc;
  }
  w->n_ids = 0;
  jp_buf_reset(&w->idpool);
  return file_close(w, CF_DOCIDS);
}

static int ivf_append(struct ivf_list *l, uint64_t pid)
{
  uint8_t tmp[10];
  uint64_t v = l->len ? pid - l->last : pid;
  int n = 0, rc;
  do {
    uint8_t byte = v & 0x7F;
    v >>= 7;
    tmp[n++] = (uint8_t)(byte | (v ? 0x80 : 0));
  } while (v);
  if ((rc = jp_grow((void **)&l->data, &l->cap, l->len + (size_t)n, 1, 0)) < 0) return rc;
  memcpy(l->data + l->len, tmp, (size_t)n);
  l->len += (size_t)n;
  l->last = pid;
  return 0;
}

int jp_store_sstwriter_add(jp_store_sstwriter *w, const struct jp_doc_in *docs, int n,
                           jp_pool *pool)
{
  const struct jp_codec *c;
  uint32_t *codes = NULL;
  uint8_t *packed = NULL;
  size_t n_vecs = 0, vi = 0, pb;
  double resid = 0;
  int rc;

  if (!w) return jp_err(JP_EINVAL, "SST writer is NULL");
  c = &w->codec;
  pb = jp_codec_packed_bytes(c);
  if ((rc = store__check_docs(docs, n, c->dim)) < 0 || n == 0) return rc;
  if ((rc = store__compress_docs(c, docs, n, pool, &codes, &packed, &n_vecs, &resid)) < 0)
    return rc;
  for (int i = 0; i < n; i++) {
    const struct jp_doc_in *d = &docs[i];
    size_t meta_len = d->metadata_json ? strlen(d->metadata_json) : 0;
    uint64_t first_pid = store__pid(w->meta.partition_id, w->next_seq);
    struct docid_ent *e;

    if (w->next_seq + (uint64_t)d->n_passages - 1 > STORE_MAX_SEQ) {
      rc = jp_err(JP_ETOOBIG, "passage ids of partition %u are exhausted", w->meta.partition_id);
      goto out;
    }
    for (int j = 0; j < d->n_passages; j++) {
      const struct jp_passage_in *p = &d->passages[j];
      uint64_t pid = store__pid(w->meta.partition_id, w->next_seq++);
      uint8_t key[8];
      int nu;
      store__be64(key, pid);
      jp_buf_reset(&w->b);
      if ((rc = store__encode_passage(&w->b, c, p->n_vecs, codes + vi, packed + vi * pb)) < 0 ||
          (rc = file_put(w, CF_PASSAGES, key, 8, w->b.data, w->b.len)) < 0)
        goto out;
      jp_buf_reset(&w->b);
      if ((rc = store__encode_doc(&w->b, d->doc_id, d->doc_id_len, p->text, p->text_len,
                                  d->metadata_json, meta_len)) < 0 ||
          (rc = file_put(w, CF_DOCS, key, 8, w->b.data, w->b.len)) < 0)
        goto out;
      nu = store__distinct_codes(codes + vi, p->n_vecs, w->uniq);
      for (int u = 0; u < nu; u++)
        if ((rc = ivf_append(&w->ivf[w->uniq[u]], pid)) < 0) goto out;
      vi += (size_t)p->n_vecs;
      w->n_passages++;
    }
    if (w->idpool.len + d->doc_id_len + w->n_ids * sizeof *w->ids > DOCIDS_CHUNK_BYTES &&
        (rc = spill_docids(w)) < 0)
      goto out;
    if ((rc = jp_grow((void **)&w->ids, &w->ids_cap, w->n_ids + 1, sizeof *w->ids, 0)) < 0)
      goto out;
    e = &w->ids[w->n_ids];
    e->off = w->idpool.len;
    e->len = d->doc_id_len;
    e->first_pid = first_pid;
    e->n = (uint32_t)d->n_passages;
    if ((rc = jp_buf_append(&w->idpool, d->doc_id, d->doc_id_len)) < 0) goto out;
    w->n_ids++;
    w->n_docs++;
  }
  w->n_vecs += n_vecs;
  w->resid_sum += resid;
out:
  jp_free(codes);
  jp_free(packed);
  return rc;
}

int jp_store_sstwriter_finish(jp_store_sstwriter *w, uint64_t *n_passages)
{
  json_t *o = NULL;
  char *js = NULL;
  uint8_t key[15];
  int rc = 0;

  if (n_passages) *n_passages = 0;
  if (!w) return jp_err(JP_EINVAL, "SST writer is NULL");
  if ((rc = spill_docids(w)) < 0) goto out;
  for (int c = 0; c < w->codec.ncentroids; c++) {
    uint8_t k[12];
    if (!w->ivf[c].len) continue;
    store__be32(k, (uint32_t)c);
    store__be64(k + 4, w->segment);
    if ((rc = file_put(w, CF_IVF, k, 12, w->ivf[c].data, w->ivf[c].len)) < 0) goto out;
  }
  o = json_pack("{s:I, s:I, s:I, s:I, s:f, s:s}", "first_seq", (json_int_t)w->first_seq,
                "n_passages", (json_int_t)w->n_passages, "n_docs", (json_int_t)w->n_docs,
                "n_vecs", (json_int_t)w->n_vecs, "resid_sum", w->resid_sum, "tag", w->tag);
  if (!o || !(js = json_dumps(o, JSON_COMPACT))) { rc = JP_ENOMEM; goto out; }
  memcpy(key, "writer/", 7);
  store__be64(key + 7, w->segment);
  if ((rc = file_put(w, CF_META, key, sizeof key, js, strlen(js))) < 0) goto out;
  for (int cf = 0; cf < CF_N; cf++)
    if ((rc = file_close(w, cf)) < 0) goto out;
  if (n_passages) *n_passages = w->n_passages;
out:
  free(js);
  json_decref(o);
  writer_free(w);
  return rc;
}

/* ---- publishing --------------------------------------------------------------------- */

static int parent_dir(const char *path, char *buf, size_t cap)
{
  const char *slash = strrchr(path, '/');
  if (!slash) return snprintf(buf, cap, ".") >= (int)cap ? JP_ETOOBIG : 0;
  if (slash == path) return snprintf(buf, cap, "/") >= (int)cap ? JP_ETOOBIG : 0;
  if ((size_t)(slash - path) >= cap) return JP_ETOOBIG;
  memcpy(buf, path, (size_t)(slash - path));
  buf[slash - path] = '\0';
  return 0;
}

int store__publish(const char *tmp, const char *dir)
{
  char parent[BULK_PATH];
  struct stat st;
  int rc;

  if ((rc = store__replaceable(dir)) < 0) return rc;
  if (stat(dir, &st) == 0) {
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
      /* tmp now holds the old index. */
      if ((rc = jp_rm_rf(tmp)) < 0) JP_LOG_WARN("could not remove the old index at %s", tmp);
    } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
      char old[BULK_PATH];
      if (snprintf(old, sizeof old, "%s.old", dir) >= (int)sizeof old) return JP_ETOOBIG;
      if ((rc = store__replaceable(old)) < 0) return rc;
      if ((rc = jp_rm_rf(old)) < 0) return rc;
      if (rename(dir, old) != 0)
        return jp_err(JP_EIO, "cannot move %s aside: %s", dir, strerror(errno));
      if (rename(tmp, dir) != 0) {
        int e = errno;
        if (rename(old, dir) != 0) JP_LOG_ERROR("the previous index is left at %s", old);
        return jp_err(JP_EIO, "cannot publish %s: %s", dir, strerror(e));
      }
      if (jp_rm_rf(old) < 0) JP_LOG_WARN("could not remove the old index at %s", old);
    } else {
      return jp_err(JP_EIO, "cannot replace %s: %s", dir, strerror(errno));
    }
  } else if (rename(tmp, dir) != 0) {
    return jp_err(JP_EIO, "cannot publish %s: %s", dir, strerror(errno));
  }
  if (parent_dir(dir, parent, sizeof parent) == 0) (void)jp_fsync_dir(parent);
  return 0;
}

/* ---- ingestion ------------------------------------------------------------------------------ */

struct sst_file {
  char *path;
  int cf;
};

static int cmp_sst(const void *a, const void *b)
{
  const struct sst_file *x = a, *y = b;
  return strcmp(x->path, y->path);
}

/* Family of "<tag>.<family>.<n>.sst", or -1. */
static int sst_family(const char *name)
{
  size_t len = strlen(name);
  const char *end, *p;
  if (len < 4 || strcmp(name + len - 4, ".sst")) return -1;
  end = name + len - 4;                          /* at ".sst" */
  p = end;
  while (p > name && p[-1] != '.') p--;          /* start of <n> */
  if (p == name || p == end) return -1;
  end = p - 1;                                   /* at ".<n>" */
  p = end;
  while (p > name && p[-1] != '.') p--;          /* start of <family> */
  if (p == name) return -1;
  for (int i = 0; i < CF_N; i++)
    if ((size_t)(end - p) == strlen(jp_store_cf_names[i]) &&
        !memcmp(p, jp_store_cf_names[i], (size_t)(end - p)))
      return i;
  return -1;
}

static int list_ssts(const char *sst_dir, struct sst_file **out, size_t *n_out)
{
  DIR *d = opendir(sst_dir);
  struct dirent *e;
  struct sst_file *v = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;

  *out = NULL;
  *n_out = 0;
  if (!d) return jp_err(errno == ENOENT ? JP_ENOTFOUND : JP_EIO, "cannot read %s: %s", sst_dir,
                        strerror(errno));
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    char path[BULK_PATH];
    int cf;
    if (l < 4 || strcmp(e->d_name + l - 4, ".sst")) continue;
    if ((cf = sst_family(e->d_name)) < 0) {
      rc = jp_err(JP_EINVAL, "%s/%s: not a name written by an SST writer "
                  "(<tag>.<family>.<n>.sst)", sst_dir, e->d_name);
      break;
    }
    if (snprintf(path, sizeof path, "%s/%s", sst_dir, e->d_name) >= (int)sizeof path) {
      rc = JP_ETOOBIG;
      break;
    }
    if ((rc = jp_grow((void **)&v, &cap, n + 1, sizeof *v, 0)) < 0) break;
    if (!(v[n].path = jp_strdup(path))) { rc = JP_ENOMEM; break; }
    v[n++].cf = cf;
  }
  closedir(d);
  if (rc < 0) {
    for (size_t i = 0; i < n; i++) jp_free(v[i].path);
    jp_free(v);
    return rc;
  }
  if (n) qsort(v, n, sizeof *v, cmp_sst);
  *out = v;
  *n_out = n;
  return 0;
}

struct writer_rec {
  uint64_t first_seq, n_passages, segment;
};

static int cmp_writer(const void *a, const void *b)
{
  const struct writer_rec *x = a, *y = b;
  return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

/* After a docids count mismatch: name a document id that two writers used
 * (its docids entry lost a passage that the docs family still holds). */
static int find_duplicate_id(struct jp_store *s, const rocksdb_readoptions_t *ro)
{
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_DOCS]);
  int rc = jp_err(JP_EEXISTS, "two writers added the same document id");
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t kl, vl, ll;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
    const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
    struct store_doc_view d;
    char *list, *err = NULL;
    int found = 0;
    if (kl != 8 || store__decode_doc(store__get_be64(k), v, vl, &d) < 0) continue;
    list = rocksdb_get_cf(s->db, ro, s->cf[CF_DOCIDS], d.doc_id, d.doc_id_len, &ll, &err);
    if (err) { rocksdb_free(err); continue; }
    if (list) {
      const uint8_t *p = (const uint8_t *)list, *end = p + ll;
      uint64_t pid = 0, dd;
      int first = 1;
      while (p < end && store__get_varint(&p, end, &dd) == 0) {
        pid = first ? dd : pid + dd;
        first = 0;
        if (pid == store__get_be64(k)) { found = 1; break; }
      }
      rocksdb_free(list);
    }
    if (!found) {
      rc = jp_err(JP_EEXISTS, "document id '%.*s' was added by more than one writer",
                  (int)d.doc_id_len, d.doc_id);
      break;
    }
  }
  rocksdb_iter_destroy(it);
  return rc;
}

static int ingest_into(struct jp_store *s, const struct jp_store_meta *meta,
                       const struct jp_codec *codec, const struct sst_file *files, size_t n_files)
{
  rocksdb_ingestexternalfileoptions_t *io = rocksdb_ingestexternalfileoptions_create();
  rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
  struct writer_rec *wr = NULL;
  size_t n_wr = 0, wr_cap = 0;
  uint64_t next_seq = 0, next_seg = 0, n_docs = 0, n_keys = 0, n_passages = 0;
  char *err = NULL;
  int rc = 0;

  rocksdb_writeoptions_set_sync(wo, 1);
  /* Hard-link the files in (same file system) instead of copying them. */
  rocksdb_ingestexternalfileoptions_set_move_files(io, 1);
  if ((rc = store__put_static_meta(wb, s->cf[CF_META], meta, codec)) < 0) goto out;
  rocksdb_write(s->db, wo, wb, &err);
  if (err) { rc = store__rerr(err, "writing index meta"); goto out; }
  /* One file per call: files of different writers may overlap (ivf,
   * docids), and RocksDB then needs them in separate ingestions. */
  for (size_t i = 0; i < n_files; i++) {
    const char *one[1] = {files[i].path};
    rocksdb_ingest_external_file_cf(s->db, s->cf[files[i].cf], one, 1, io, &err);
    if (err) {
      char what[BULK_PATH + 32];
      snprintf(what, sizeof what, "ingesting %s", files[i].path);
      rc = store__rerr(err, what);
      goto out;
    }
  }

  /* Writers' records: pid ranges must not overlap. */
  {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_META]);
    for (rocksdb_iter_seek(it, "writer/", 7); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
      size_t kl, vl;
      const char *k = rocksdb_iter_key(it, &kl), *v = rocksdb_iter_value(it, &vl);
      json_t *o;
      json_error_t e;
      if (kl < 7 || memcmp(k, "writer/", 7)) break;
      if (kl != 15 || !(o = json_loadb(v, vl, 0, &e))) {
        rc = JP_CORRUPT_AT("bad writer record in the SST files");
        break;
      }
      if ((rc = jp_grow((void **)&wr, &wr_cap, n_wr + 1, sizeof *wr, 0)) < 0) {
        json_decref(o);
        break;
      }
      wr[n_wr].first_seq = (uint64_t)json_integer_value(json_object_get(o, "first_seq"));
      wr[n_wr].n_passages = (uint64_t)json_integer_value(json_object_get(o, "n_passages"));
      wr[n_wr].segment = store__get_be64((const uint8_t *)k + 7);
      n_passages += wr[n_wr].n_passages;
      n_docs += (uint64_t)json_integer_value(json_object_get(o, "n_docs"));
      json_decref(o);
      n_wr++;
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err) { rc = store__rerr(err, "reading writer records"); goto out; }
    if (rc < 0) goto out;
  }
  if (n_wr) qsort(wr, n_wr, sizeof *wr, cmp_writer);
  for (size_t i = 0; i < n_wr; i++) {
    uint64_t end = wr[i].first_seq + wr[i].n_passages;
    if (i + 1 < n_wr && wr[i].n_passages && end > wr[i + 1].first_seq) {
      rc = jp_err(JP_EINVAL, "SST writers' passage ranges overlap (sequences %" PRIu64 "..%" PRIu64
                  " and from %" PRIu64 ")", wr[i].first_seq, end, wr[i + 1].first_seq);
      goto out;
    }
    if (end > next_seq) next_seq = end;
    if (wr[i].segment + 1 > next_seg) next_seg = wr[i].segment + 1;
  }

  /* Duplicate document ids across writers: the docids family then holds
   * fewer keys than the writers added documents. */
  {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_DOCIDS]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) n_keys++;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err) { rc = store__rerr(err, "counting document ids"); goto out; }
  }
  if (n_keys != n_docs) {
    rc = find_duplicate_id(s, ro);
    goto out;
  }

  rocksdb_writebatch_clear(wb);
  {
    uint8_t b[8];
    store__be64(b, next_seq);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_META], "next_pid", 8, (const char *)b, 8);
    store__be64(b, next_seg);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_META], "next_segment", 12, (const char *)b, 8);
    store__put_counts(wb, s->cf[CF_META], n_passages, n_docs);
  }
  rocksdb_write(s->db, wo, wb, &err);
  if (err) { rc = store__rerr(err, "writing index meta"); goto out; }
  {
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush_cf(s->db, fo, s->cf[CF_META], &err);
    rocksdb_flushoptions_destroy(fo);
    if (err) { rc = store__rerr(err, "flushing index meta"); goto out; }
  }
out:
  jp_free(wr);
  rocksdb_writebatch_destroy(wb);
  rocksdb_readoptions_destroy(ro);
  rocksdb_writeoptions_destroy(wo);
  rocksdb_ingestexternalfileoptions_destroy(io);
  return rc;
}

int jp_store_ingest(const char *dir, const struct jp_store_meta *meta,
                    const struct jp_codec *codec, const char *sst_dir)
{
  char tmp[BULK_PATH];
  struct sst_file *files = NULL;
  size_t n_files = 0;
  struct jp_store s;
  int rc;

  if (!dir || !*dir || !sst_dir) return jp_err(JP_EINVAL, "jp_store_ingest: no directory");
  if ((rc = store__check_meta(meta, codec)) < 0) return rc;
  if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
    return jp_err(JP_ETOOBIG, "index path too long");
  /* Fail before any work if the target or a stale tmp are not ours. */
  if ((rc = store__replaceable(dir)) < 0 || (rc = store__replaceable(tmp)) < 0) return rc;
  if ((rc = jp_rm_rf(tmp)) < 0) return rc;
  if ((rc = list_ssts(sst_dir, &files, &n_files)) < 0) return rc;

  memset(&s, 0, sizeof s);
  if ((rc = store__make_options(&s, 0, 1)) < 0 || (rc = jp_mkdir_p(tmp)) < 0 ||
      (rc = store__open_db(&s, tmp, 1, 0)) < 0)
    goto out;
  rc = ingest_into(&s, meta, codec, files, n_files);
  store__close_db(&s);
  if (rc < 0) goto out;
  if ((rc = jp_fsync_dir(tmp)) < 0) goto out;
  rc = store__publish(tmp, dir);
out:
  store__close_db(&s);
  store__free_options(&s);
  for (size_t i = 0; i < n_files; i++) jp_free(files[i].path);
  jp_free(files);
  if (rc < 0 && store__replaceable(tmp) == 0) (void)jp_rm_rf(tmp);
  return rc;
}

/* ---- single-process builder -------------------------------------------------------------------- */

struct jp_store_builder {
  char *dir;
  char sst_dir[BULK_PATH];
  char tmp[BULK_PATH];
  struct jp_store_meta meta;
  struct jp_codec codec;
  jp_store_sstwriter *w;
};

/* A stale SST directory of an interrupted build holds only *.sst files. */
static int sst_dir_replaceable(const char *path)
{
  DIR *d = opendir(path);
  struct dirent *e;
  int rc = 0;
  if (!d) return errno == ENOENT ? 0 : jp_err(JP_EIO, "cannot read %s: %s", path, strerror(errno));
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (l < 4 || strcmp(e->d_name + l - 4, ".sst")) {
      rc = jp_err(JP_EEXISTS, "%s holds files other than SST files; refusing to remove it", path);
      break;
    }
  }
  closedir(d);
  return rc;
}

static void builder_free(jp_store_builder *b)
{
  if (!b) return;
  jp_codec_fini(&b->codec);
  jp_free(b->dir);
  jp_free(b);
}

int jp_store_build_begin(const char *dir, const struct jp_store_meta *meta,
                         const struct jp_codec *codec, jp_store_builder **out)
{
  jp_store_builder *b;
  int rc;

  if (!out) return jp_err(JP_EINVAL, "jp_store_build_begin: out is NULL");
  *out = NULL;
  if (!dir || !*dir) return jp_err(JP_EINVAL, "index directory is empty");
  if ((rc = store__check_meta(meta, codec)) < 0) return rc;
  if ((rc = store__replaceable(dir)) < 0) return rc;
  b = jp_calloc(1, sizeof *b);
  if (!b) return JP_ENOMEM;
  b->meta = *meta;
  if (!(b->dir = jp_strdup(dir))) { rc = JP_ENOMEM; goto fail; }
  if (snprintf(b->sst_dir, sizeof b->sst_dir, "%s.tmp-sst", dir) >= (int)sizeof b->sst_dir ||
      snprintf(b->tmp, sizeof b->tmp, "%s.tmp", dir) >= (int)sizeof b->tmp) {
    rc = jp_err(JP_ETOOBIG, "index path too long");
    goto fail;
  }
  if ((rc = jp_codec_copy(&b->codec, codec)) < 0) goto fail;
  if ((rc = sst_dir_replaceable(b->sst_dir)) < 0 || (rc = jp_rm_rf(b->sst_dir)) < 0 ||
      (rc = jp_mkdir_p(b->sst_dir)) < 0)
    goto fail;
  if ((rc = jp_store_sstwriter_create(b->sst_dir, "build", meta, codec, 0, 0, &b->w)) < 0) {
    (void)jp_rm_rf(b->sst_dir);
    goto fail;
  }
  *out = b;
  return 0;
fail:
  builder_free(b);
  return rc;
}

int jp_store_build_add(jp_store_builder *b, const struct jp_doc_in *docs, int n, jp_pool *pool)
{
  if (!b || !b->w) return jp_err(JP_EINVAL, "builder is NULL or finished");
  return jp_store_sstwriter_add(b->w, docs, n, pool);
}

int jp_store_build_finish(jp_store_builder *b)
{
  uint64_t n;
  int rc;
  if (!b) return jp_err(JP_EINVAL, "builder is NULL");
  rc = jp_store_sstwriter_finish(b->w, &n);
  b->w = NULL;
  if (rc == 0) rc = jp_store_ingest(b->dir, &b->meta, &b->codec, b->sst_dir);
  (void)jp_rm_rf(b->sst_dir);
  builder_free(b);
  return rc;
}

void jp_store_build_abort(jp_store_builder *b)
{
  if (!b) return;
  writer_free(b->w);
  (void)jp_rm_rf(b->sst_dir);
  if (store__replaceable(b->tmp) == 0) (void)jp_rm_rf(b->tmp);
  builder_free(b);
}
