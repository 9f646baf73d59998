/* ix_encode.c: the encode and ingest phases of japlaid-index (ix.h).
 *
 * Encode: a rank reads its share again, encodes every passage (build.c's
 * batches) and hands each document to the SST writer of its partition for
 * the current chunk. A writer's pids start at the chunk's first_seq in
 * that partition (disjoint across ranks and chunks, in file order), its
 * IVF segment is the global chunk number, and its files are named by it
 * (tag "s<segment>"). When a chunk ends, its writers are finished, their
 * passage counts checked against the scan, and state/chunk-<seg>.done
 * records the chunk as complete with its per-partition counts. A resumed
 * job skips done chunks (their documents are read, not split or encoded)
 * and first deletes any files of its unfinished chunks.
 *
 * Ingest: partition p is ingested by rank p % R from all files under
 * sst/part-<p> (jp_store_ingest publishes tmp/part-<p> atomically), then
 * its SST directory is removed (ingestion hard-linked the files).
 *
 * Thread-safety: main thread (MPI); compression runs on the pool.
 * Allocation: freed before return. */
#include "ix.h"

#include "index/store.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TAG_ENCODE 103
#define TAG_INGEST 104

void ix_part_name(char *buf, size_t cap, uint32_t p)
{
  snprintf(buf, cap, "part-%04" PRIu32, p);
}

/* The store meta of partition p (as build.c records it for one partition). */
static void part_meta(const struct ix_ctx *c, uint32_t p, struct jp_store_meta *m)
{
  memset(m, 0, sizeof *m);
  snprintf(m->model_name, sizeof m->model_name, "%s", c->info->name);
  snprintf(m->model_identity, sizeof m->model_identity, "%s", c->info->identity);
  snprintf(m->model_path, sizeof m->model_path, "%s", c->model_abs);
  m->partition_id = p;
  m->n_partitions = (uint32_t)c->o.partitions;
  snprintf(m->settings_json, sizeof m->settings_json, "{\"max_document_length\":%d,\"split\":%s}",
           c->mdl, c->split ? "true" : "false");
}

static void chunk_marker_path(const struct ix_ctx *c, uint64_t seg, char *buf, size_t cap)
{
  ix_pathf(buf, cap, "%s/chunk-%012" PRIu64 ".done", c->state, seg);
}

static void sst_part_dir(const struct ix_ctx *c, uint32_t p, char *buf, size_t cap)
{
  char name[32];
  ix_part_name(name, sizeof name, p);
  ix_pathf(buf, cap, "%s/%s", c->sst, name);
}

struct enc_pass {
  struct ix_ctx *c;
  int want_cur, proc_cur;         /* chunk cursors: reader side, writer side */
  jp_store_sstwriter **w;         /* [P] writers of chunk proc_cur */
  uint64_t *emb, *ndoc, *npass;   /* [P] this chunk's counts so far */
  uint64_t *tot_pass, *tot_docs, *tot_emb;   /* [P] this rank's totals */
  uint64_t done;                  /* passages encoded or found done (progress) */
  struct ix_prog *pr;
};

/* A done marker's counts, added to the totals. 0 = read, < 0 = unusable. */
static int marker_read(struct enc_pass *ep, const struct ix_chunk *ch)
{
  struct ix_ctx *c = ep->c;
  char path[IX_PATH];
  json_t *o = NULL, *parts;
  size_t i;
  int rc;
  chunk_marker_path(c, ch->seg, path, sizeof path);
  if (!jp_path_exists(path)) return JP_ENOTFOUND;
  if ((rc = jp_json_load_file(path, &o)) < 0) return rc;
  parts = json_object_get(o, "parts");
  if (!json_is_array(parts) || json_integer_value(json_object_get(o, "seg")) != (json_int_t)ch->seg) {
    json_decref(o);
    return JP_ECORRUPT;
  }
  /* Check first, then add: a damaged marker must not count half. */
  for (int pass = 0; pass < 2; pass++)
    for (i = 0; i < json_array_size(parts); i++) {
      json_t *e = json_array_get(parts, i);
      json_int_t p = json_integer_value(json_array_get(e, 0));
      json_int_t np = json_integer_value(json_array_get(e, 1));
      if (json_array_size(e) != 4 || p < 0 || p >= c->o.partitions || np < 0 ||
          (uint64_t)np != ch->pass[p]) {
        json_decref(o);
        return JP_ECORRUPT;
      }
      if (pass == 1) {
        ep->tot_pass[p] += (uint64_t)np;
        ep->tot_docs[p] += (uint64_t)json_integer_value(json_array_get(e, 2));
        ep->tot_emb[p] += (uint64_t)json_integer_value(json_array_get(e, 3));
      }
    }
  json_decref(o);
  return 0;
}

/* Finish chunk i's writers, check its counts, mark it done. */
static int chunk_finish(struct enc_pass *ep, int i)
{
  struct ix_ctx *c = ep->c;
  struct ix_chunk *ch = &c->scan.chunks[i];
  const int P = c->o.partitions;
  char path[IX_PATH];
  struct jp_buf b;
  int rc = 0, first = 1;

  if (ch->done) return 0;
  for (int p = 0; p < P; p++) {
    uint64_t n = 0;
    if (ep->w[p]) {
      rc = jp_store_sstwriter_finish(ep->w[p], &n);
      ep->w[p] = NULL;
      if (rc < 0) return rc;
    }
    if (n != ch->pass[p])
      return jp_err(JP_EINVAL, "%s changed while it was being indexed (partition %d: %" PRIu64
                    " passages at the scan, %" PRIu64 " now)", c->o.corpus, p, ch->pass[p], n);
  }
  jp_buf_init(&b, 0);
  rc = jp_buf_printf(&b, "{\"seg\":%" PRIu64 ",\"rank\":%d,\"ranks\":%d,\"parts\":[", ch->seg,
                     c->rank, c->size);
  for (int p = 0; p < P && !rc; p++) {
    if (!ch->pass[p]) continue;
    rc = jp_buf_printf(&b, "%s[%d,%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", first ? "" : ",", p,
                       ep->npass[p], ep->ndoc[p], ep->emb[p]);
    first = 0;
  }
  if (!rc) rc = jp_buf_puts(&b, "]}\n");
  chunk_marker_path(c, ch->seg, path, sizeof path);
  if (!rc) rc = jp_write_file_atomic(path, b.data, b.len);
  jp_buf_fini(&b);
  if (rc < 0) return rc;
  for (int p = 0; p < P; p++) {
    ep->tot_pass[p] += ep->npass[p];
    ep->tot_docs[p] += ep->ndoc[p];
    ep->tot_emb[p] += ep->emb[p];
  }
  memset(ep->emb, 0, (size_t)P * sizeof *ep->emb);
  memset(ep->ndoc, 0, (size_t)P * sizeof *ep->ndoc);
  memset(ep->npass, 0, (size_t)P * sizeof *ep->npass);
  ch->done = 1;
  return ix_hook(c, "chunk");
}

/* Finish every chunk that ends at or before ordinal `ord`. */
static int advance_to(struct enc_pass *ep, uint64_t ord)
{
  const struct ix_scan *s = &ep->c->scan;
  int rc;
  while (ep->proc_cur < s->n_chunks && s->chunks[ep->proc_cur].ord1 <= ord) {
    if ((rc = chunk_finish(ep, ep->proc_cur)) < 0) return rc;
    ep->proc_cur++;
  }
  return 0;
}

static int enc_want(void *ctx, const struct ix_rdoc *d, uint64_t *user)
{
  struct enc_pass *ep = ctx;
  const struct ix_scan *s = &ep->c->scan;
  (void)user;
  if (d->ord >= s->n_ord)
    return jp_err(JP_EINVAL, "%s changed while it was being indexed (more documents than at "
                  "the scan)", ep->c->o.corpus);
  while (ep->want_cur < s->n_chunks && s->chunks[ep->want_cur].ord1 <= d->ord) ep->want_cur++;
  if (ep->want_cur >= s->n_chunks || s->chunks[ep->want_cur].done) return 0;
  return s->np[d->ord] > 0;
}

/* Remove the files of this rank's unfinished chunks left by a failed job
 * (a writer's file names start with "s<segment>."). */
static int clean_unfinished(struct ix_ctx *c)
{
  const struct ix_scan *s = &c->scan;
  for (int p = 0; p < c->o.partitions; p++) {
    char dir[IX_PATH];
    DIR *d;
    struct dirent *e;
    sst_part_dir(c, (uint32_t)p, dir, sizeof dir);
    if (!(d = opendir(dir))) {
      if (errno == ENOENT) continue;
      return jp_err(JP_EIO, "cannot read %s: %s", dir, strerror(errno));
    }
    while ((e = readdir(d))) {
      char *end, path[IX_PATH];
      uint64_t seg;
      if (e->d_name[0] != 's') continue;
      seg = strtoull(e->d_name + 1, &end, 10);
      if (*end != '.' || seg < c->seg0 || seg >= c->seg0 + (uint64_t)s->n_chunks ||
          s->chunks[seg - c->seg0].done)
        continue;
      ix_pathf(path, sizeof path, "%s/%s", dir, e->d_name);
      if (unlink(path) != 0 && errno != ENOENT) {
        int err = errno;
        closedir(d);
        return jp_err(JP_EIO, "cannot remove %s: %s", path, strerror(err));
      }
    }
    closedir(d);
  }
  return 0;
}

/* One batch: encode every passage, then give each document to its
 * partition's writer of its chunk, documents of one partition together. */
struct batch {
  struct ix_vecs vs;
  const char **texts;
  size_t *lens;
  int32_t *doclens;
  struct jp_passage_in *pin;
  size_t cap;
  struct jp_doc_in din[IX_READ_BATCH], grp[IX_READ_BATCH];
  int order[IX_READ_BATCH];
  const struct ix_rdoc *docs;
};

static void batch_fini(struct batch *b)
{
  jp_free(b->vs.v);
  jp_free(b->texts);
  jp_free(b->lens);
  jp_free(b->doclens);
  jp_free(b->pin);
}

static int cmp_part(const void *a, const void *b, void *ctx)
{
  const struct batch *bt = ctx;
  int x = *(const int *)a, y = *(const int *)b;
  uint32_t px = bt->docs[x].part, py = bt->docs[y].part;
  if (px != py) return px < py ? -1 : 1;
  return x < y ? -1 : x > y;      /* file order within a partition */
}

static int writer_for(struct enc_pass *ep, uint32_t p)
{
  struct ix_ctx *c = ep->c;
  const struct ix_chunk *ch = &c->scan.chunks[ep->proc_cur];
  struct jp_store_meta meta;
  char dir[IX_PATH], tag[32];
  if (ep->w[p]) return 0;
  part_meta(c, p, &meta);
  sst_part_dir(c, p, dir, sizeof dir);
  snprintf(tag, sizeof tag, "s%012" PRIu64, ch->seg);
  return jp_store_sstwriter_create(dir, tag, &meta, &c->codec, ch->first_seq[p], ch->seg, &ep->w[p]);
}

/* Hand docs[i0, i1) (all in chunk proc_cur) to their writers. */
static int add_segment(struct enc_pass *ep, struct batch *b, int i0, int i1)
{
  int n = i1 - i0, rc;
  for (int i = 0; i < n; i++) b->order[i] = i0 + i;
  qsort_r(b->order, (size_t)n, sizeof *b->order, cmp_part, b);
  for (int s = 0; s < n;) {
    uint32_t p = b->docs[b->order[s]].part;
    int e = s;
    while (e < n && b->docs[b->order[e]].part == p) {
      b->grp[e - s] = b->din[b->order[e]];
      e++;
    }
    if ((rc = writer_for(ep, p)) < 0 ||
        (rc = jp_store_sstwriter_add(ep->w[p], b->grp, e - s, ep->c->pool)) < 0)
      return rc;
    s = e;
  }
  return 0;
}

static int encode_batch(struct enc_pass *ep, struct ix_encoder *en, struct batch *b,
                        const struct ix_rdoc *docs, int n)
{
  struct ix_ctx *c = ep->c;
  size_t np = 0, p = 0, voff = 0;
  int rc, seg_start = 0;

  b->docs = docs;
  for (int i = 0; i < n; i++) {
    if (docs[i].rc < 0 || ix_doc_passages(&docs[i]) != c->scan.np[docs[i].ord])
      return jp_err(JP_EINVAL, "%s:%" PRIu64 ": the document splits differently than at the scan "
                    "(the file changed while it was being indexed?)", c->o.corpus, docs[i].line);
    np += (size_t)ix_doc_passages(&docs[i]);
  }
  if (np > INT_MAX) return jp_err(JP_ETOOBIG, "too many passages in one batch");
  if (np > b->cap) {
    jp_free(b->texts);
    jp_free(b->lens);
    jp_free(b->doclens);
    jp_free(b->pin);
    b->texts = jp_malloc(np * sizeof *b->texts);
    b->lens = jp_malloc(np * sizeof *b->lens);
    b->doclens = jp_malloc(np * sizeof *b->doclens);
    b->pin = jp_malloc(np * sizeof *b->pin);
    b->cap = b->texts && b->lens && b->doclens && b->pin ? np : 0;
    if (!b->cap) return JP_ENOMEM;
  }
  b->vs.dim = en->dim;
  b->vs.n = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < ix_doc_passages(&docs[i]); j++, p++) {
      ix_doc_passage(&docs[i], j, &b->pin[p].text, &b->pin[p].text_len, &b->lens[p]);
      b->texts[p] = b->pin[p].text;
    }
  if ((rc = ix_encode_texts(en, b->texts, b->lens, (int)np, &b->vs, b->doclens)) < 0) return rc;
  p = 0;
  for (int i = 0; i < n; i++) {
    const struct ix_rdoc *d = &docs[i];
    uint64_t vecs = 0;
    b->din[i].doc_id = d->id;
    b->din[i].doc_id_len = d->id_len;
    b->din[i].metadata_json = d->meta;
    b->din[i].passages = &b->pin[p];
    b->din[i].n_passages = ix_doc_passages(d);
    for (int j = 0; j < ix_doc_passages(d); j++, p++) {
      b->pin[p].vecs = b->vs.v + voff * (size_t)en->dim;
      b->pin[p].n_vecs = b->doclens[p];
      voff += (size_t)b->doclens[p];
      vecs += (uint64_t)b->doclens[p];
    }
    /* A document of a later chunk: first hand over the earlier ones. */
    if (c->scan.chunks[ep->proc_cur].ord1 <= d->ord) {
      if ((rc = add_segment(ep, b, seg_start, i)) < 0 || (rc = advance_to(ep, d->ord)) < 0)
        return rc;
      seg_start = i;
    }
    ep->emb[d->part] += vecs;
    ep->ndoc[d->part]++;
    ep->npass[d->part] += (uint64_t)ix_doc_passages(d);
    ep->done += (uint64_t)ix_doc_passages(d);
  }
  return add_segment(ep, b, seg_start, n);
}

int ix_encode_run(struct ix_ctx *c)
{
  struct ix_scan *s = &c->scan;
  const int P = c->o.partitions;
  struct enc_pass ep;
  struct ix_encoder en;
  struct ix_reader r;
  struct batch b;
  uint64_t global = 0, *sums;
  int n, rc = 0, remaining = 0;

  memset(&ep, 0, sizeof ep);
  memset(&b, 0, sizeof b);
  ep.c = c;
  ep.w = jp_calloc((size_t)P, sizeof *ep.w);
  sums = jp_calloc((size_t)P * 6, sizeof *sums);
  if (!ep.w || !sums) ix_fatal(c, JP_ENOMEM);
  ep.emb = sums;
  ep.ndoc = sums + P;
  ep.npass = sums + 2 * (size_t)P;
  ep.tot_pass = sums + 3 * (size_t)P;
  ep.tot_docs = sums + 4 * (size_t)P;
  ep.tot_emb = sums + 5 * (size_t)P;

  /* Which chunks are done (a resumed job). */
  for (int i = 0; i < s->n_chunks; i++) {
    struct ix_chunk *ch = &s->chunks[i];
    ch->done = c->resumed && marker_read(&ep, ch) == 0;
    if (ch->done) {
      for (int p = 0; p < P; p++) ep.done += ch->pass[p];
    } else {
      remaining++;
    }
  }
  if (c->resumed) {
    IX_TRY(c, clean_unfinished(c));
    if (s->n_chunks)
      JP_LOG_INFO("rank %d: %d of %d chunks already done", c->rank, s->n_chunks - remaining,
                  s->n_chunks);
  }
  IX_TRY(c, ix_prog_begin(c, "encode", "passages", c->plan.n_passages, TAG_ENCODE, &ep.pr));
  if (remaining) {
    IX_TRY(c, ix_encoder_init(&en, c->model));
    IX_TRY(c, ix_reader_open(&r, c, enc_want, &ep));
    r.quiet_bad = 1;
    while ((n = ix_reader_next(&r)) > 0) {
      if ((rc = ix_hook(c, "encode")) < 0 || (rc = encode_batch(&ep, &en, &b, r.docs, n)) < 0)
        break;
      ix_prog_tick(ep.pr, ep.done);
    }
    if (n < 0) rc = n;
    if (rc == 0 && r.next_ord != s->n_ord)
      rc = jp_err(JP_EINVAL, "%s changed while it was being indexed (%" PRIu64 " documents in "
                  "rank %d's share at the scan, %" PRIu64 " now)", c->o.corpus, s->n_ord, c->rank,
                  r.next_ord);
    if (rc == 0) rc = advance_to(&ep, UINT64_MAX);
    ix_reader_close(&r);
    ix_encoder_fini(&en);
    batch_fini(&b);
    if (rc < 0) ix_fatal(c, rc);
  }
  IX_TRY(c, ix_prog_end(ep.pr, ep.done, &global));
  if (global != c->plan.n_passages)
    ix_fatal(c, jp_err(JP_EINTERNAL, "encoded %" PRIu64 " passages, planned %" PRIu64, global,
                       c->plan.n_passages));

  /* Per-partition totals to rank 0. */
  if (c->rank == 0) {
    c->part_pass = jp_calloc((size_t)P * 3, sizeof *c->part_pass);
    if (!c->part_pass) ix_fatal(c, JP_ENOMEM);
    c->part_docs = c->part_pass + P;
    c->part_emb = c->part_pass + 2 * (size_t)P;
  }
  if ((uint64_t)P * 3 > INT_MAX) ix_fatal(c, JP_ETOOBIG);
  IX_TRY(c, ix_mpi_rc(MPI_Reduce(ep.tot_pass, c->part_pass, P * 3, MPI_UINT64_T, MPI_SUM, 0,
                                 c->comm), "partition counts"));
  jp_free(ep.w);
  jp_free(sums);
  return 0;
}

int ix_ingest_run(struct ix_ctx *c)
{
  const int P = c->o.partitions;
  struct ix_prog *pr = NULL;
  uint64_t mine = 0, global = 0;

  IX_TRY(c, ix_prog_begin(c, "ingest", "partitions", (uint64_t)P, TAG_INGEST, &pr));
  for (int p = c->rank; p < P; p += c->size) {
    struct jp_store_meta meta;
    char dir[IX_PATH], name[32], sst[IX_PATH], cur[IX_PATH + 16];
    ix_part_name(name, sizeof name, (uint32_t)p);
    ix_pathf(dir, sizeof dir, "%s/%s", c->tmp, name);
    snprintf(cur, sizeof cur, "%s/CURRENT", dir);
    sst_part_dir(c, (uint32_t)p, sst, sizeof sst);
    if (!jp_path_exists(cur)) {   /* else ingested by an earlier attempt */
      IX_TRY(c, ix_hook(c, "ingest"));
      part_meta(c, (uint32_t)p, &meta);
      IX_TRY(c, jp_mkdir_p(sst));   /* a partition no document went to: empty, still servable */
      IX_TRY(c, jp_store_ingest(dir, &meta, &c->codec, sst));
    }
    IX_TRY(c, jp_rm_rf(sst));
    ix_prog_tick(pr, ++mine);
  }
  IX_TRY(c, ix_prog_end(pr, mine, &global));
  return 0;
}
