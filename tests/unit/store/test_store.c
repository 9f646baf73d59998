/* test_store.c: the RocksDB partition store (index/store.h): round trips,
 * writes seen at once and after reopen, replace-by-id, deletes, identity
 * and schema checks, foreign and damaged directories refused with an
 * error (never a crash), bulk builds (builder vs two SST writers +
 * ingestion), stats and drift, bad input, OOM, concurrent readers. */
#include "test_helpers.h"
#include "store_fixture.h"
#include "index/store.h"
#include "util/arena.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[256];
static struct jp_codec g_codec;

static int setup(void **state)
{
  (void)state;
  fx_codec(&g_codec, 7);
  return jp_test_tmpdir(g_root, sizeof g_root) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  jp_codec_fini(&g_codec);
  jp_rm_rf(g_root);
  return 0;
}

static const char *path_in(const char *name)
{
  static char p[32][512];
  static int k;
  k = (k + 1) % 32;
  snprintf(p[k], sizeof p[k], "%s/%s", g_root, name);
  return p[k];
}

static jp_store *create_store(const char *dir)
{
  struct jp_store_meta m;
  jp_store *s = NULL;
  int rc;
  fx_meta(&m, FX_IDENTITY, 0, 1);
  jp_rm_rf(dir);
  if ((rc = jp_store_create(dir, &m, &g_codec, NULL, &s)) != 0)
    fail_msg("create: %s", jp_errmsg(rc));
  return s;
}

static jp_store *open_store(const char *dir, int read_only)
{
  struct jp_store_opts o;
  jp_store *s = NULL;
  int rc;
  jp_store_opts_default(&o);
  o.read_only = read_only;
  o.expect_identity = FX_IDENTITY;
  if ((rc = jp_store_open(dir, &o, &s)) != 0) fail_msg("open %s: %s", dir, jp_errmsg(rc));
  return s;
}

static void upsert_docs(jp_store *s, const char *prefix, int n, int ver)
{
  struct fx_doc *d = malloc((size_t)n * sizeof *d);
  struct jp_doc_in *in = malloc((size_t)n * sizeof *in);
  int rc;
  assert_non_null(d);
  assert_non_null(in);
  for (int i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof id, "%s%d", prefix, i);
    fx_doc(&d[i], id, ver, 1, &g_codec);
    in[i] = d[i].in;
  }
  rc = jp_store_upsert(s, in, n, NULL);
  if (rc) fail_msg("upsert: %s", jp_errmsg(rc));
  free(d);
  free(in);
}

/* The document is present with exactly the passages of version `ver`. */
static void expect_doc(jp_store *s, const char *id, int ver)
{
  struct fx_doc d;
  struct jp_arena a;
  struct jp_result *res;
  int n;
  char prefix[64];
  fx_doc(&d, id, ver, 1, &g_codec);
  jp_arena_init(&a, 0, 0);
  n = fx_find_doc(s, &d, &a, &res);
  if (n != d.in.n_passages) fail_msg("%s: %d passages found, expected %d", id, n, d.in.n_passages);
  snprintf(prefix, sizeof prefix, "%s#v%d:", id, ver);
  for (int i = 0; i < n; i++) {
    assert_string_equal(res[i].document_id, id);
    if (strncmp(res[i].content, prefix, strlen(prefix)))
      fail_msg("%s: content '%s' is not version %d", id, res[i].content, ver);
    assert_int_equal(res[i].rank, i + 1);
    assert_string_equal(res[i].metadata_json, d.meta);
    assert_int_equal(res[i].passage_id >> JP_PID_PARTITION_SHIFT, jp_store_get_meta(s)->partition_id);
  }
  /* The first passage's own vectors rank it first. */
  assert_string_equal(res[0].content, d.text[0]);
  jp_arena_fini(&a);
}

static void expect_absent(jp_store *s, const char *id)
{
  struct fx_doc d;
  struct jp_arena a;
  struct jp_result *res;
  fx_doc(&d, id, 1, 1, &g_codec);
  jp_arena_init(&a, 0, 0);
  assert_int_equal(fx_find_doc(s, &d, &a, &res), 0);
  jp_arena_fini(&a);
}

static void round_trip_create_upsert_reopen(void **state)
{
  (void)state;
  const char *dir = path_in("rt");
  jp_store *s = create_store(dir);
  struct jp_store_stats st;
  const struct jp_store_meta *m;
  upsert_docs(s, "doc", 20, 1);
  expect_doc(s, "doc3", 1);
  assert_int_equal(jp_store_get_stats(s, &st), 0);
  assert_int_equal(st.n_docs, 20);
  jp_store_close(s);

  s = open_store(dir, 1);
  m = jp_store_get_meta(s);
  assert_string_equal(m->model_name, "test/model");
  assert_string_equal(m->model_identity, FX_IDENTITY);
  assert_string_equal(m->model_path, "/models/test");
  assert_string_equal(m->settings_json, "{\"max_document_length\":64,\"split\":true}");
  assert_int_equal(m->n_partitions, 1);
  {
    const struct jp_codec *c = jp_store_codec(s);
    assert_int_equal(c->dim, FX_DIM);
    assert_int_equal(c->nbits, FX_NBITS);
    assert_int_equal(c->ncentroids, FX_NCENT);
    assert_memory_equal(c->centroids, g_codec.centroids, sizeof(float) * FX_NCENT * FX_DIM);
    assert_memory_equal(c->cutoffs, g_codec.cutoffs, sizeof(float) * 3);
    assert_memory_equal(c->weights, g_codec.weights, sizeof(float) * 4);
  }
  for (int i = 0; i < 20; i++) {
    char id[16];
    snprintf(id, sizeof id, "doc%d", i);
    expect_doc(s, id, 1);
  }
  {
    struct jp_store_stats st2;
    assert_int_equal(jp_store_get_stats(s, &st2), 0);
    assert_int_equal(st2.n_docs, 20);
    assert_int_equal(st2.n_passages, st.n_passages);
    assert_int_equal(st2.n_embeddings, st.n_embeddings);
    assert_int_equal(st2.ncentroids, FX_NCENT);
    /* After close the data is in SST files of every family we wrote. */
    assert_true(st2.cf_bytes[1] > 0 && st2.cf_bytes[2] > 0 && st2.cf_bytes[3] > 0 &&
                st2.cf_bytes[4] > 0);
    assert_true(st2.bytes_per_embedding > 0);
    /* Live writes only: nothing to compare drift with. */
    assert_true(isnan(st2.codebook_drift));
  }
  /* Read-only stores refuse writes. */
  {
    struct fx_doc d;
    int nd = 0;
    const char *ids[1] = {"doc1"};
    fx_doc(&d, "new", 1, 1, &g_codec);
    assert_int_equal(jp_store_upsert(s, &d.in, 1, NULL), JP_EUNSUPPORTED);
    assert_int_equal(jp_store_delete(s, ids, NULL, 1, &nd), JP_EUNSUPPORTED);
  }
  jp_store_close(s);
  /* create refuses a directory that holds anything. */
  {
    struct jp_store_meta mm;
    jp_store *s2;
    fx_meta(&mm, FX_IDENTITY, 0, 1);
    assert_int_equal(jp_store_create(dir, &mm, &g_codec, NULL, &s2), JP_EEXISTS);
  }
}

static void replace_and_delete_seen_at_once_and_after_reopen(void **state)
{
  (void)state;
  const char *dir = path_in("rd");
  jp_store *s = create_store(dir);
  struct jp_store_stats st;
  int nd = -1;
  upsert_docs(s, "d", 10, 1);
  /* Replace d2..d4 with version 2 (another passage count and vectors). */
  {
    struct fx_doc d[3];
    struct jp_doc_in in[3];
    for (int i = 0; i < 3; i++) {
      char id[8];
      snprintf(id, sizeof id, "d%d", i + 2);
      fx_doc(&d[i], id, 2, 1, &g_codec);
      in[i] = d[i].in;
    }
    assert_int_equal(jp_store_upsert(s, in, 3, NULL), 0);
  }
  expect_doc(s, "d2", 2);
  expect_doc(s, "d4", 2);
  expect_doc(s, "d5", 1);
  {
    const char *ids[] = {"d7", "nope", "d7", "d9"};
    assert_int_equal(jp_store_delete(s, ids, NULL, 4, &nd), 0);
    assert_int_equal(nd, 2);
  }
  expect_absent(s, "d7");
  expect_absent(s, "d9");
  assert_int_equal(jp_store_get_stats(s, &st), 0);
  assert_int_equal(st.n_docs, 8);
  jp_store_close(s);

  s = open_store(dir, 0);
  expect_doc(s, "d2", 2);
  expect_doc(s, "d3", 2);
  expect_doc(s, "d0", 1);
  expect_absent(s, "d7");
  {
    struct jp_store_stats st2;
    assert_int_equal(jp_store_get_stats(s, &st2), 0);
    assert_int_equal(st2.n_docs, 8);
    assert_int_equal(st2.n_passages, st.n_passages);
  }
  /* Deleting nothing that exists writes nothing and counts 0. */
  {
    const char *ids[] = {"d7"};
    assert_int_equal(jp_store_delete(s, ids, NULL, 1, &nd), 0);
    assert_int_equal(nd, 0);
  }
  /* A deleted id can come back. */
  upsert_docs(s, "d", 10, 3);
  expect_doc(s, "d7", 3);
  jp_store_close(s);
  s = open_store(dir, 1);
  expect_doc(s, "d7", 3);
  expect_doc(s, "d2", 3);
  jp_store_close(s);
}

static void identity_and_schema_mismatch_refused(void **state)
{
  (void)state;
  const char *dir = path_in("id");
  jp_store *s = create_store(dir);
  struct jp_store_opts o;
  upsert_docs(s, "x", 2, 1);
  jp_store_close(s);
  jp_store_opts_default(&o);
  o.expect_identity = "ffffffffffffffffffffffffffffffff";
  assert_int_equal(jp_store_open(dir, &o, &s), JP_EMISMATCH);
  assert_null(s);
  assert_non_null(strstr(jp_errmsg(JP_EMISMATCH), FX_IDENTITY));
  assert_non_null(strstr(jp_errmsg(JP_EMISMATCH), "ffffffffffffffffffffffffffffffff"));
  assert_non_null(strstr(jp_errmsg(JP_EMISMATCH), "test/model"));

  /* A store written by a future schema. */
  {
    rocksdb_options_t *ro = rocksdb_options_create();
    const char *names[6] = {"default", "meta", "passages", "ivf", "docs", "docids"};
    const rocksdb_options_t *opts[6] = {ro, ro, ro, ro, ro, ro};
    rocksdb_column_family_handle_t *h[6];
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char *err = NULL;
    const char two[4] = {0, 0, 0, 2};
    rocksdb_t *db = rocksdb_open_column_families(ro, dir, 6, names, opts, h, &err);
    assert_null(err);
    rocksdb_put_cf(db, wo, h[1], "schema", 6, two, 4, &err);
    assert_null(err);
    for (int i = 0; i < 6; i++) rocksdb_column_family_handle_destroy(h[i]);
    rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(ro);
  }
  assert_int_equal(jp_store_open(dir, NULL, &s), JP_EMISMATCH);
  assert_non_null(strstr(jp_errmsg(JP_EMISMATCH), "schema version 2"));
}

static void foreign_directories_refused(void **state)
{
  (void)state;
  jp_store *s = (jp_store *)1;
  /* Absent, empty, a plain file. */
  assert_int_equal(jp_store_open(path_in("absent"), NULL, &s), JP_ENOTFOUND);
  assert_null(s);
  assert_int_equal(jp_mkdir_p(path_in("empty")), 0);
  assert_int_equal(jp_store_open(path_in("empty"), NULL, &s), JP_ENOTFOUND);
  assert_non_null(strstr(jp_errmsg(JP_ENOTFOUND), "no japlaid index"));
  assert_int_equal(jp_write_file_atomic(path_in("plain"), "x", 1), 0);
  assert_int_equal(jp_store_open(path_in("plain"), NULL, &s), JP_ENOTFOUND);
  /* A RocksDB database that is not ours. */
  {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char *err = NULL;
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_t *db = rocksdb_open(o, path_in("foreign"), &err);
    assert_null(err);
    rocksdb_put(db, wo, "k", 1, "v", 1, &err);
    rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(o);
  }
  assert_int_equal(jp_store_open(path_in("foreign"), NULL, &s), JP_ENOTFOUND);
  assert_non_null(strstr(jp_errmsg(JP_ENOTFOUND), "not a japlaid index"));
  /* Our families but no records (an unfinished creation). */
  {
    rocksdb_options_t *o = rocksdb_options_create();
    const char *names[6] = {"default", "meta", "passages", "ivf", "docs", "docids"};
    const rocksdb_options_t *opts[6] = {o, o, o, o, o, o};
    rocksdb_column_family_handle_t *h[6];
    char *err = NULL;
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_create_missing_column_families(o, 1);
    rocksdb_t *db = rocksdb_open_column_families(o, path_in("bare"), 6, names, opts, h, &err);
    assert_null(err);
    for (int i = 0; i < 6; i++) rocksdb_column_family_handle_destroy(h[i]);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
  }
  assert_int_equal(jp_store_open(path_in("bare"), NULL, &s), JP_ECORRUPT);
  assert_non_null(strstr(jp_errmsg(JP_ECORRUPT), "schema"));
  /* Options the part cannot honour are refused, not ignored. */
  {
    struct jp_store_opts o;
    jp_store_opts_default(&o);
    o.residuals_in_memory = 0;
    assert_int_equal(jp_store_open(path_in("bare"), &o, &s), JP_EUNSUPPORTED);
  }
}

/* ---- damaged stores --------------------------------------------------------- */

static void copy_dir(const char *from, const char *to)
{
  DIR *d = opendir(from);
  struct dirent *e;
  assert_non_null(d);
  jp_rm_rf(to);
  assert_int_equal(jp_mkdir_p(to), 0);
  while ((e = readdir(d))) {
    char a[1200], b[1200], *buf;
    size_t len;
    if (e->d_name[0] == '.') continue;
    if (snprintf(a, sizeof a, "%s/%s", from, e->d_name) >= (int)sizeof a ||
        snprintf(b, sizeof b, "%s/%s", to, e->d_name) >= (int)sizeof b)
      fail_msg("path too long");
    if (jp_is_dir(a)) continue;
    assert_int_equal(jp_read_file(a, 0, &buf, &len), 0);
    FILE *f = fopen(b, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    jp_free(buf);
  }
  closedir(d);
}

/* Names of files in dir that start/end with the given strings. */
static int list_files(const char *dir, const char *prefix, const char *suffix, char names[][256],
                      int cap)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  assert_non_null(d);
  while ((e = readdir(d)) && n < cap) {
    size_t l = strlen(e->d_name), sl = strlen(suffix);
    if (strncmp(e->d_name, prefix, strlen(prefix)) || l < sl || strcmp(e->d_name + l - sl, suffix))
      continue;
    snprintf(names[n++], 256, "%s", e->d_name);
  }
  closedir(d);
  return n;
}

static void flip_bytes(const char *path, long off, int n)
{
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  for (int i = 0; i < n; i++) {
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, off + i), 1);
    c ^= 0x5a;
    assert_int_equal(pwrite(fd, &c, 1, off + i), 1);
  }
  close(fd);
}

static long file_size(const char *path)
{
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (long)st.st_size;
}

static void expect_refused(const char *dir, int code, const char *what)
{
  jp_store *s = (jp_store *)1;
  int rc = jp_store_open(dir, NULL, &s);
  if (rc != code) fail_msg("%s: open gave %s (%s), expected %s", what, jp_errname(rc),
                           rc ? jp_errmsg(rc) : "opened", jp_errname(code));
  assert_null(s);
}

static void damaged_stores_refused(void **state)
{
  (void)state;
  const char *good = path_in("good");
  const char *bad = path_in("bad");
  char names[32][256], p[1200];
  int n;
  jp_store *s = create_store(good);
  upsert_docs(s, "a", 30, 1);
  jp_store_close(s);
  s = open_store(good, 1);    /* the pristine copy opens */
  jp_store_close(s);

  n = list_files(good, "", ".sst", names, 32);
  assert_true(n >= 5);        /* one per written family, after the flush at close */
  for (int i = 0; i < n; i++) {
    /* Bytes flipped inside the data blocks (the front third of the file). */
    copy_dir(good, bad);
    if (snprintf(p, sizeof p, "%s/%s", bad, names[i]) >= (int)sizeof p) fail_msg("path too long");
    flip_bytes(p, file_size(p) / 3, 4);
    expect_refused(bad, JP_ECORRUPT, "flipped SST");
    /* Truncated to half. */
    copy_dir(good, bad);
    assert_int_equal(truncate(p, file_size(p) / 2), 0);
    expect_refused(bad, JP_ECORRUPT, "truncated SST");
    /* Missing. */
    copy_dir(good, bad);
    assert_int_equal(unlink(p), 0);
    expect_refused(bad, JP_ECORRUPT, "missing SST");
  }
  /* MANIFEST: flipped in the middle, and truncated. */
  assert_int_equal(list_files(good, "MANIFEST-", "", names, 32), 1);
  copy_dir(good, bad);
  if (snprintf(p, sizeof p, "%s/%s", bad, names[0]) >= (int)sizeof p) fail_msg("path too long");
  flip_bytes(p, file_size(p) / 2, 4);
  expect_refused(bad, JP_ECORRUPT, "flipped MANIFEST");
  /* A MANIFEST cut short may only lose its last edits; RocksDB then opens
   * the last complete version. Either that is refused, or every document
   * is there (never a store opened half-way). */
  for (int cut = 1; cut <= 7; cut++) {
    copy_dir(good, bad);
    assert_int_equal(truncate(p, file_size(p) * cut / 8), 0);
    s = NULL;
    int rc = jp_store_open(bad, NULL, &s);
    if (rc == 0) {
      struct jp_store_stats st;
      assert_int_equal(jp_store_get_stats(s, &st), 0);
      assert_int_equal(st.n_docs, 30);
      expect_doc(s, "a0", 1);
      expect_doc(s, "a29", 1);
      jp_store_close(s);
    } else if (rc != JP_ECORRUPT) {
      fail_msg("MANIFEST cut at %d/8: %s", cut, jp_errmsg(rc));
    }
  }
  /* CURRENT: pointing nowhere, garbage, empty. */
  copy_dir(good, bad);
  snprintf(p, sizeof p, "%s/CURRENT", bad);
  assert_int_equal(jp_write_file_atomic(p, "MANIFEST-999999\n", 16), 0);
  expect_refused(bad, JP_ECORRUPT, "CURRENT to a missing MANIFEST");
  flip_bytes(p, 2, 3);
  expect_refused(bad, JP_ECORRUPT, "flipped CURRENT");
  assert_int_equal(truncate(p, 0), 0);
  expect_refused(bad, JP_ECORRUPT, "empty CURRENT");
  jp_rm_rf(bad);
}

/* ---- bulk builds -------------------------------------------------------------- */

#define BULK_DOCS 40

static void make_bulk_docs(struct fx_doc *d, struct jp_doc_in *in)
{
  for (int i = 0; i < BULK_DOCS; i++) {
    char id[16];
    snprintf(id, sizeof id, "b%03d", i);
    fx_doc(&d[i], id, 1, 9, &g_codec);
    in[i] = d[i].in;
  }
}

/* Same answers from two stores: every document restricted, and free PLAID
 * and exhaustive queries. */
static void expect_same_store(jp_store *x, jp_store *y, const struct fx_doc *d)
{
  struct jp_arena a, b;
  struct jp_store_stats sx, sy;
  jp_arena_init(&a, 0, 0);
  jp_arena_init(&b, 0, 0);
  assert_int_equal(jp_store_get_stats(x, &sx), 0);
  assert_int_equal(jp_store_get_stats(y, &sy), 0);
  assert_int_equal(sx.n_passages, sy.n_passages);
  assert_int_equal(sx.n_docs, sy.n_docs);
  assert_int_equal(sx.n_embeddings, sy.n_embeddings);
  for (int i = 0; i < BULK_DOCS; i++)
    for (int ex = 0; ex < 2; ex++) {
      struct jp_search_params sp;
      struct jp_result *rx, *ry;
      int nx, ny;
      jp_arena_reset(&a);
      jp_arena_reset(&b);
      jp_search_params_init(&sp, 5);
      sp.exhaustive = ex;
      assert_int_equal(jp_store_search(x, d[i].vecs[0], d[i].pass[0].n_vecs, &sp, NULL, NULL, &a,
                                       &rx, &nx), 0);
      assert_int_equal(jp_store_search(y, d[i].vecs[0], d[i].pass[0].n_vecs, &sp, NULL, NULL, &b,
                                       &ry, &ny), 0);
      assert_int_equal(nx, ny);
      assert_true(nx > 0);
      for (int k = 0; k < nx; k++) {
        assert_true(rx[k].passage_id == ry[k].passage_id);
        assert_float_equal(rx[k].score, ry[k].score, 0);
        assert_string_equal(rx[k].content, ry[k].content);
        assert_string_equal(rx[k].document_id, ry[k].document_id);
      }
      if (ex) assert_string_equal(rx[0].content, d[i].text[0]);
    }
  jp_arena_fini(&a);
  jp_arena_fini(&b);
}

static void bulk_two_writers_equal_one_writer(void **state)
{
  (void)state;
  struct fx_doc *d = malloc(BULK_DOCS * sizeof *d);
  struct jp_doc_in in[BULK_DOCS];
  struct jp_store_meta m;
  jp_store_builder *b;
  jp_store_sstwriter *w1, *w2;
  jp_store *x, *y;
  uint64_t n1 = 0, n2 = 0, first_half = 0;
  const char *one = path_in("one"), *two = path_in("two"), *sst = path_in("sst");
  assert_non_null(d);
  make_bulk_docs(d, in);
  fx_meta(&m, FX_IDENTITY, 3, 8);

  /* One builder, added in three calls. */
  assert_int_equal(jp_store_build_begin(one, &m, &g_codec, &b), 0);
  assert_int_equal(jp_store_build_add(b, in, 10, NULL), 0);
  assert_int_equal(jp_store_build_add(b, in + 10, 5, NULL), 0);
  assert_int_equal(jp_store_build_add(b, in + 15, BULK_DOCS - 15, NULL), 0);
  assert_int_equal(jp_store_build_finish(b), 0);
  assert_false(jp_path_exists(path_in("one.tmp")));
  assert_false(jp_path_exists(path_in("one.tmp-sst")));

  /* Two writers in one process, contiguous pid ranges, then ingestion. */
  for (int i = 0; i < BULK_DOCS / 2; i++) first_half += (uint64_t)in[i].n_passages;
  jp_rm_rf(sst);
  assert_int_equal(jp_mkdir_p(sst), 0);
  assert_int_equal(jp_store_sstwriter_create(sst, "r0", &m, &g_codec, 0, 0, &w1), 0);
  assert_int_equal(jp_store_sstwriter_create(sst, "r1", &m, &g_codec, first_half, 1, &w2), 0);
  assert_int_equal(jp_store_sstwriter_add(w2, in + BULK_DOCS / 2, BULK_DOCS / 2, NULL), 0);
  assert_int_equal(jp_store_sstwriter_add(w1, in, BULK_DOCS / 2, NULL), 0);
  assert_int_equal(jp_store_sstwriter_finish(w1, &n1), 0);
  assert_int_equal(jp_store_sstwriter_finish(w2, &n2), 0);
  assert_int_equal(n1, first_half);
  assert_int_equal(jp_store_ingest(two, &m, &g_codec, sst), 0);

  x = open_store(one, 0);
  y = open_store(two, 0);
  assert_int_equal(jp_store_get_meta(y)->partition_id, 3);
  assert_int_equal(jp_store_get_meta(y)->n_partitions, 8);
  expect_same_store(x, y, d);
  /* Live writes continue after the bulk pids, identically in both. */
  upsert_docs(x, "live", 3, 1);
  upsert_docs(y, "live", 3, 1);
  expect_doc(y, "live1", 1);
  {
    struct jp_arena a;
    struct jp_result *r;
    struct fx_doc dd;
    jp_arena_init(&a, 0, 0);
    fx_doc(&dd, "live0", 1, 1, &g_codec);
    assert_true(fx_find_doc(y, &dd, &a, &r) > 0);
    assert_true((r[0].passage_id & ((1ull << JP_PID_PARTITION_SHIFT) - 1)) >= n1 + n2);
    jp_arena_fini(&a);
  }
  /* Drift: live vectors from the same distribution are near 1. */
  {
    struct jp_store_stats st;
    assert_int_equal(jp_store_get_stats(y, &st), 0);
    assert_true(st.codebook_drift > 0.8 && st.codebook_drift < 1.25);
  }
  jp_store_close(x);
  jp_store_close(y);

  /* Rebuilding over an existing index replaces it atomically. */
  assert_int_equal(jp_store_build_begin(one, &m, &g_codec, &b), 0);
  assert_int_equal(jp_store_build_add(b, in, 3, NULL), 0);
  assert_int_equal(jp_store_build_finish(b), 0);
  x = open_store(one, 1);
  {
    struct jp_store_stats st;
    assert_int_equal(jp_store_get_stats(x, &st), 0);
    assert_int_equal(st.n_docs, 3);
  }
  jp_store_close(x);
  free(d);
}

static void bulk_conflicts_refused(void **state)
{
  (void)state;
  struct fx_doc *d = malloc(BULK_DOCS * sizeof *d);
  struct jp_doc_in in[BULK_DOCS];
  struct jp_store_meta m;
  jp_store_sstwriter *w1, *w2;
  jp_store_builder *b;
  const char *dst = path_in("conf"), *sst = path_in("sst2");
  assert_non_null(d);
  make_bulk_docs(d, in);
  fx_meta(&m, FX_IDENTITY, 0, 1);

  /* The same document id from two writers. */
  jp_rm_rf(sst);
  assert_int_equal(jp_mkdir_p(sst), 0);
  assert_int_equal(jp_store_sstwriter_create(sst, "r0", &m, &g_codec, 0, 0, &w1), 0);
  assert_int_equal(jp_store_sstwriter_create(sst, "r1", &m, &g_codec, 1000, 1, &w2), 0);
  assert_int_equal(jp_store_sstwriter_add(w1, in, 5, NULL), 0);
  assert_int_equal(jp_store_sstwriter_add(w2, in + 4, 5, NULL), 0);   /* b004 twice */
  assert_int_equal(jp_store_sstwriter_finish(w1, NULL), 0);
  assert_int_equal(jp_store_sstwriter_finish(w2, NULL), 0);
  assert_int_equal(jp_store_ingest(dst, &m, &g_codec, sst), JP_EEXISTS);
  assert_non_null(strstr(jp_errmsg(JP_EEXISTS), "b004"));
  assert_false(jp_path_exists(dst));
  assert_false(jp_path_exists(path_in("conf.tmp")));

  /* Overlapping pid ranges. */
  jp_rm_rf(sst);
  assert_int_equal(jp_mkdir_p(sst), 0);
  assert_int_equal(jp_store_sstwriter_create(sst, "r0", &m, &g_codec, 0, 0, &w1), 0);
  assert_int_equal(jp_store_sstwriter_create(sst, "r1", &m, &g_codec, 2, 1, &w2), 0);
  assert_int_equal(jp_store_sstwriter_add(w1, in, 5, NULL), 0);
  assert_int_equal(jp_store_sstwriter_add(w2, in + 5, 5, NULL), 0);
  assert_int_equal(jp_store_sstwriter_finish(w1, NULL), 0);
  assert_int_equal(jp_store_sstwriter_finish(w2, NULL), 0);
  assert_int_equal(jp_store_ingest(dst, &m, &g_codec, sst), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "overlap"));
  assert_false(jp_path_exists(dst));

  /* One builder given the same id twice. */
  assert_int_equal(jp_store_build_begin(dst, &m, &g_codec, &b), 0);
  assert_int_equal(jp_store_build_add(b, in, 3, NULL), 0);
  assert_int_equal(jp_store_build_add(b, in + 1, 1, NULL), 0);
  assert_int_equal(jp_store_build_finish(b), JP_EEXISTS);
  assert_false(jp_path_exists(dst));
  assert_false(jp_path_exists(path_in("conf.tmp-sst")));

  /* Abort leaves nothing; a non-index directory is never replaced. */
  assert_int_equal(jp_store_build_begin(dst, &m, &g_codec, &b), 0);
  assert_int_equal(jp_store_build_add(b, in, 3, NULL), 0);
  jp_store_build_abort(b);
  assert_false(jp_path_exists(dst));
  assert_false(jp_path_exists(path_in("conf.tmp-sst")));
  assert_int_equal(jp_mkdir_p(path_in("notours")), 0);
  assert_int_equal(jp_write_file_atomic(path_in("notours/precious.txt"), "x", 1), 0);
  assert_int_equal(jp_store_build_begin(path_in("notours"), &m, &g_codec, &b), JP_EEXISTS);
  assert_true(jp_path_exists(path_in("notours/precious.txt")));
  free(d);
}

/* ---- bad input, OOM, concurrency -------------------------------------------------- */

static void bad_input_refused_and_nothing_written(void **state)
{
  (void)state;
  const char *dir = path_in("badin");
  jp_store *s = create_store(dir);
  struct fx_doc d[2];
  struct jp_doc_in in[2];
  struct jp_store_stats st;
  fx_doc(&d[0], "same", 1, 1, &g_codec);
  fx_doc(&d[1], "same", 1, 2, &g_codec);
  in[0] = d[0].in;
  in[1] = d[1].in;
  assert_int_equal(jp_store_upsert(s, in, 2, NULL), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "twice"));
  in[1].doc_id = "other";
  in[1].doc_id_len = 5;
  d[1].vecs[0][3] = NAN;
  assert_int_equal(jp_store_upsert(s, in, 2, NULL), JP_EINVAL);
  d[1].vecs[0][3] = 0.1f;
  in[1].metadata_json = "[1,2]";
  assert_int_equal(jp_store_upsert(s, in, 2, NULL), JP_EINVAL);
  in[1].metadata_json = NULL;
  in[1].doc_id_len = 0;
  assert_int_equal(jp_store_upsert(s, in, 2, NULL), JP_EINVAL);
  in[1].doc_id = "bad\xff";
  in[1].doc_id_len = 4;
  assert_int_equal(jp_store_upsert(s, in, 2, NULL), JP_EINVAL);
  in[1].doc_id = "ok";
  in[1].doc_id_len = 2;
  in[1].n_passages = 0;
  assert_int_equal(jp_store_upsert(s, in, 2, NULL), JP_EINVAL);
  assert_int_equal(jp_store_get_stats(s, &st), 0);
  assert_int_equal(st.n_docs, 0);
  /* Bad search parameters. */
  {
    struct jp_search_params sp;
    struct jp_arena a;
    struct jp_result *r;
    int n;
    jp_arena_init(&a, 0, 0);
    jp_search_params_init(&sp, 10);
    sp.k = 0;
    assert_int_equal(jp_store_search(s, d[0].vecs[0], 4, &sp, NULL, NULL, &a, &r, &n), JP_EINVAL);
    sp.k = 10;
    assert_int_equal(jp_store_search(s, d[0].vecs[0], 0, &sp, NULL, NULL, &a, &r, &n), JP_EINVAL);
    /* An empty store answers with no hits. */
    assert_int_equal(jp_store_search(s, d[0].vecs[0], 4, &sp, NULL, NULL, &a, &r, &n), 0);
    assert_int_equal(n, 0);
    jp_arena_fini(&a);
  }
  jp_store_close(s);
  s = open_store(dir, 1);
  assert_int_equal(jp_store_get_stats(s, &st), 0);
  assert_int_equal(st.n_docs, 0);
  jp_store_close(s);
}

static void oom_leaves_store_consistent(void **state)
{
  (void)state;
  const char *dir = path_in("oom");
  jp_store *s = create_store(dir);
  upsert_docs(s, "base", 5, 1);
  jp_store_close(s);
  /* Open under every allocation failure. */
  for (long k = 1;; k++) {
    struct jp_store_opts o;
    jp_store_opts_default(&o);
    jp_mem_fail_after(k);
    int rc = jp_store_open(dir, &o, &s);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      assert_true(made < k);
      jp_store_close(s);
      break;
    }
    assert_int_equal(rc, JP_ENOMEM);
    assert_true(k < 100000);
  }
  /* Upsert (a new document and a replacement) under every failure point:
   * afterwards the store reopens cleanly and holds each document whole,
   * in one version or the other. */
  for (long k = 1;; k++) {
    struct fx_doc d[2];
    struct jp_doc_in in[2];
    int rc, done;
    s = open_store(dir, 0);
    fx_doc(&d[0], "base1", 100 + (int)k, 1, &g_codec);
    fx_doc(&d[1], "new", 100 + (int)k, 1, &g_codec);
    in[0] = d[0].in;
    in[1] = d[1].in;
    jp_mem_fail_after(k);
    rc = jp_store_upsert(s, in, 2, NULL);
    long made = jp_mem_fail_after(0);
    done = rc == 0 && made < k;
    if (rc != 0 && rc != JP_ENOMEM && rc != JP_EINTERNAL)
      fail_msg("k=%ld: %s", k, jp_errmsg(rc));
    jp_store_close(s);
    s = open_store(dir, 1);
    {
      struct jp_arena a;
      struct jp_result *r;
      int n;
      jp_arena_init(&a, 0, 0);
      n = fx_find_doc(s, &d[0], &a, &r);
      assert_true(n >= 1);
      char prefix[64];
      snprintf(prefix, sizeof prefix, "base1#v%d:", 100 + (int)k);
      if (rc == 0) assert_int_equal(strncmp(r[0].content, prefix, strlen(prefix)), 0);
      jp_arena_fini(&a);
    }
    if (rc == 0) expect_doc(s, "new", 100 + (int)k);
    jp_store_close(s);
    if (done) break;
    assert_true(k < 100000);
  }
}

static void stale_ivf_entries_are_compacted(void **state)
{
  (void)state;
  const char *dir = path_in("compact");
  jp_store *s = create_store(dir);
  struct jp_store_stats before, after;
  for (int ver = 1; ver <= 5; ver++) upsert_docs(s, "v", 300, ver);
  jp_store_close(s);
  s = open_store(dir, 1);
  assert_int_equal(jp_store_get_stats(s, &before), 0);
  jp_store_close(s);
  s = open_store(dir, 0);     /* writable: compacts at open */
  jp_store_close(s);
  s = open_store(dir, 1);
  assert_int_equal(jp_store_get_stats(s, &after), 0);
  assert_int_equal(after.n_docs, 300);
  assert_int_equal(after.n_passages, before.n_passages);
  /* Four of five versions were stale: the family shrinks well below half. */
  assert_true(after.cf_bytes[2] * 2 < before.cf_bytes[2]);
  for (int i = 0; i < 300; i += 37) {
    char id[16];
    snprintf(id, sizeof id, "v%d", i);
    expect_doc(s, id, 5);
  }
  /* PLAID (which the IVF feeds) finds a passage by its own vectors. */
  {
    struct fx_doc d;
    struct jp_search_params sp;
    struct jp_arena a;
    struct jp_result *r;
    int n;
    fx_doc(&d, "v42", 5, 1, &g_codec);
    jp_search_params_init(&sp, 10);
    jp_arena_init(&a, 0, 0);
    assert_int_equal(jp_store_search(s, d.vecs[0], d.pass[0].n_vecs, &sp, NULL, NULL, &a, &r, &n), 0);
    assert_true(n > 0);
    assert_string_equal(r[0].content, d.text[0]);
    jp_arena_fini(&a);
  }
  jp_store_close(s);
  /* Live writes after the compaction use a fresh segment. */
  s = open_store(dir, 0);
  upsert_docs(s, "v", 3, 6);
  jp_store_close(s);
  s = open_store(dir, 1);
  expect_doc(s, "v1", 6);
  expect_doc(s, "v100", 5);
  jp_store_close(s);
}

struct conc {
  jp_store *s;
  atomic_int stop;
  atomic_long searches;
  atomic_int errors;
};

static void *reader_thread(void *arg)
{
  struct conc *c = arg;
  struct jp_arena a;
  uint64_t st = (uint64_t)(uintptr_t)&a;
  jp_arena_init(&a, 0, 0);
  while (!atomic_load(&c->stop)) {
    struct fx_doc d;
    struct jp_search_params sp;
    struct jp_result *r;
    char id[16];
    int n;
    snprintf(id, sizeof id, "c%d", (int)(jp_rand64(&st) % 20));
    fx_doc(&d, id, 1, 1, &g_codec);
    jp_search_params_init(&sp, 8);
    sp.exhaustive = (int)(jp_rand64(&st) & 1);
    jp_arena_reset(&a);
    if (jp_store_search(c->s, d.vecs[0], d.pass[0].n_vecs, &sp, NULL, NULL, &a, &r, &n) != 0) {
      atomic_fetch_add(&c->errors, 1);
      continue;
    }
    /* Every text belongs to the document it is reported under. */
    for (int i = 0; i < n; i++) {
      size_t l = strlen(r[i].document_id);
      if (strncmp(r[i].content, r[i].document_id, l) || r[i].content[l] != '#')
        atomic_fetch_add(&c->errors, 1);
    }
    atomic_fetch_add(&c->searches, 1);
  }
  jp_arena_fini(&a);
  return NULL;
}

static void concurrent_searches_during_writes(void **state)
{
  (void)state;
  struct conc c;
  pthread_t th[2];
  struct jp_store_opts o;
  const char *dir = path_in("conc");
  jp_store *s = create_store(dir);
  jp_store_close(s);
  jp_store_opts_default(&o);
  o.sync = 0;   /* the point here is interleaving, not durability */
  assert_int_equal(jp_store_open(dir, &o, &s), 0);
  upsert_docs(s, "c", 20, 1);
  c.s = s;
  atomic_init(&c.stop, 0);
  atomic_init(&c.searches, 0);
  atomic_init(&c.errors, 0);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, reader_thread, &c), 0);
  for (int round = 0; round < 30; round++) {
    char id[16];
    const char *ids[1] = {id};
    snprintf(id, sizeof id, "c%d", round % 20);
    upsert_docs(s, "c", 20, 2 + round);
    assert_int_equal(jp_store_delete(s, ids, NULL, 1, NULL), 0);
  }
  atomic_store(&c.stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&c.errors), 0);
  assert_true(atomic_load(&c.searches) > 0);
  jp_store_close(s);
  s = open_store(dir, 1);   /* and the result is a consistent store */
  jp_store_close(s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(round_trip_create_upsert_reopen),
    cmocka_unit_test(replace_and_delete_seen_at_once_and_after_reopen),
    cmocka_unit_test(identity_and_schema_mismatch_refused),
    cmocka_unit_test(foreign_directories_refused),
    cmocka_unit_test(damaged_stores_refused),
    cmocka_unit_test(bulk_two_writers_equal_one_writer),
    cmocka_unit_test(bulk_conflicts_refused),
    cmocka_unit_test(bad_input_refused_and_nothing_written),
    cmocka_unit_test(oom_leaves_store_consistent),
    cmocka_unit_test(stale_ivf_entries_are_compacted),
    cmocka_unit_test(concurrent_searches_during_writes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
