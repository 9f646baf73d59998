/* test_build.c: the single-process pipeline (index/build.h) on small
 * corpora with the static model: splitting, repeated ids and bad lines,
 * refusing to clobber, no-split truncation, the settings recorded for
 * `add`, jp_index_add replacing by id, and the model identity checks.
 * Needs the vocabulary from JP_DATA_DIR (skipped, 77, without it). */
#include "test_helpers.h"
#include "index/build.h"
#include "index/store.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "util/arena.h"
#include "util/err.h"
#include "util/fs.h"

#include <math.h>
#include <string.h>

static char g_root[256];
static char g_model[512], g_model2[512];

static int setup(void **state)
{
  char vocab[512];
  (void)state;
  if (!jp_test_data(vocab, sizeof vocab, "bert-base-japanese-v3/vocab.txt")) return 0;
  if (!jp_test_tmpdir(g_root, sizeof g_root)) return -1;
  snprintf(g_model, sizeof g_model, "%s/static", g_root);
  snprintf(g_model2, sizeof g_model2, "%s/static2", g_root);
  if (jp_checkpoint_write_static(g_model, vocab, 128, 1) != 0) return -1;
  if (jp_checkpoint_write_static(g_model2, vocab, 128, 2) != 0) return -1;
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  if (g_root[0]) jp_rm_rf(g_root);
  return 0;
}

#define NEED_DATA() \
  do { if (!g_root[0]) skip(); } while (0)

static const char *path_in(const char *name)
{
  static char p[16][512];
  static int k;
  k = (k + 1) % 16;
  snprintf(p[k], sizeof p[k], "%s/%s", g_root, name);
  return p[k];
}

static const char *write_corpus(const char *name, const char *text)
{
  const char *p = path_in(name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return p;
}

/* A small corpus: 24 documents, one of them long enough to be split. */
static const char *small_corpus(void)
{
  static char buf[1 << 16];
  size_t n = 0;
  for (int i = 0; i < 24; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "d%02d\t文書%d\t日本の気象と地理について説明する。"
                          "これは第%d番目の文書であり、梅雨や台風の話を含む。\n", i, i, i);
  n += (size_t)snprintf(buf + n, sizeof buf - n, "long\t長い文書\t");
  for (int s = 0; s < 60; s++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "第%d文では富士山と琵琶湖と東京の歴史を述べる。", s);
  n += (size_t)snprintf(buf + n, sizeof buf - n, "\n");
  return write_corpus("small.tsv", buf);
}

static void build_opts(struct jp_index_build_opts *o, const char *corpus, const char *index)
{
  jp_index_build_opts_default(o);
  o->model_dir = g_model;
  o->corpus_path = corpus;
  o->index_dir = index;
  o->n_threads = 2;
  o->kmeans_iters = 4;   /* quality is not under test here */
}

static int count_doc_passages(jp_store *s, const char *id)
{
  struct jp_search_params sp;
  struct jp_restrict r = {0};
  struct jp_arena a;
  struct jp_result *res;
  const char *ids[1] = {id};
  float q[128] = {0};
  int n = -1;
  q[0] = 1;
  jp_search_params_init(&sp, 50);
  sp.exhaustive = 1;
  r.doc_ids = ids;
  r.n_doc_ids = 1;
  jp_arena_init(&a, 0, 0);
  assert_int_equal(jp_store_search(s, q, 1, &sp, &r, NULL, &a, &res, &n), 0);
  jp_arena_fini(&a);
  return n;
}

static void build_splits_records_and_refuses_to_clobber(void **state)
{
  (void)state;
  NEED_DATA();
  struct jp_index_build_opts o;
  struct jp_index_build_report rep;
  struct jp_store_stats st;
  struct jp_split_settings ss;
  jp_store *s;
  const char *corpus = small_corpus(), *idx = path_in("idx");

  build_opts(&o, corpus, idx);
  o.max_document_length = 64;
  assert_int_equal(jp_index_build(&o, &rep), 0);
  assert_int_equal(rep.n_docs, 25);
  assert_int_equal(rep.n_split_docs, 1);
  assert_true(rep.n_passages > 26);            /* "long" became several passages */
  assert_int_equal(rep.nbits, 8);              /* < 5,000 passages */
  assert_int_equal(rep.n_sample, rep.n_passages);   /* a tiny corpus is sampled whole */
  assert_true(rep.ncentroids >= 1);
  assert_true(rep.n_heldout_vecs >= 1);
  assert_int_equal(rep.max_document_length, 64);

  assert_int_equal(jp_store_open(idx, NULL, &s), 0);
  assert_int_equal(jp_store_get_stats(s, &st), 0);
  assert_int_equal(st.n_docs, 25);
  assert_int_equal(st.n_passages, rep.n_passages);
  assert_int_equal(st.n_embeddings, rep.n_embeddings);
  assert_int_equal(count_doc_passages(s, "long"), (int)(rep.n_passages - 24));
  assert_int_equal(count_doc_passages(s, "d03"), 1);
  {
    const struct jp_store_meta *m = jp_store_get_meta(s);
    struct jp_model *model;
    assert_int_equal(jp_model_open(g_model, NULL, &model), 0);
    assert_string_equal(m->model_identity, jp_model_get_info(model)->identity);
    jp_model_close(model);
    assert_non_null(strstr(m->model_path, "/static"));
    assert_int_equal(jp_split_settings_parse(m->settings_json, &ss), 0);
    assert_int_equal(ss.max_document_length, 64);
    assert_int_equal(ss.split, 1);
  }
  jp_store_close(s);

  /* An existing index is refused without overwrite, replaced with it. */
  assert_int_equal(jp_index_build(&o, &rep), JP_EEXISTS);
  assert_non_null(strstr(jp_errmsg(JP_EEXISTS), "overwrite"));
  o.overwrite = 1;
  o.no_split = 1;
  assert_int_equal(jp_index_build(&o, &rep), 0);
  assert_int_equal(rep.n_passages, 25);        /* one per document */
  assert_int_equal(jp_store_open(idx, NULL, &s), 0);
  assert_int_equal(count_doc_passages(s, "long"), 1);
  assert_int_equal(jp_split_settings_parse(jp_store_get_meta(s)->settings_json, &ss), 0);
  assert_int_equal(ss.split, 0);
  jp_store_close(s);
  /* A directory that is not an index is never replaced, even with
   * overwrite (and this is found before any work). */
  {
    const char *foreign = path_in("foreign");
    char keep[600];
    assert_int_equal(jp_mkdir_p(foreign), 0);
    snprintf(keep, sizeof keep, "%s/keep.txt", foreign);
    assert_int_equal(jp_write_file_atomic(keep, "x", 1), 0);
    o.index_dir = foreign;
    assert_int_equal(jp_index_build(&o, &rep), JP_EEXISTS);
    assert_true(jp_path_exists(keep));
    assert_int_equal(rep.n_passages, 0);
    o.index_dir = idx;
  }
  /* A length the model cannot encode is refused. */
  o.max_document_length = 100000;
  assert_int_equal(jp_index_build(&o, &rep), JP_EINVAL);
}

static void bad_lines_and_repeated_ids(void **state)
{
  (void)state;
  NEED_DATA();
  struct jp_index_build_opts o;
  struct jp_index_build_report rep;
  const char *corpus = write_corpus("bad.tsv",
                                    "a\t一つ目の文書\n"
                                    "b\t二つ目の文書\n"
                                    "broken line without a tab\n"
                                    "a\t同じ id の別の文書\n"
                                    "{\"id\": \"c\", \"text\": \"三つ目\", \"metadata\": {\"k\": 1}}\n");
  const char *idx = path_in("badidx");
  build_opts(&o, corpus, idx);
  assert_int_equal(jp_index_build(&o, &rep), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "bad.tsv:3:"));
  assert_false(jp_path_exists(idx));
  o.skip_bad = 1;
  assert_int_equal(jp_index_build(&o, &rep), 0);
  assert_int_equal(rep.n_docs, 3);
  assert_int_equal(rep.n_bad_lines, 2);        /* the broken line and the repeated id */
  /* Without skip_bad a repeated id names both lines. */
  corpus = write_corpus("dup.tsv", "a\tx\nb\ty\na\tz\n");
  build_opts(&o, corpus, path_in("dupidx"));
  assert_int_equal(jp_index_build(&o, &rep), JP_EEXISTS);
  assert_non_null(strstr(jp_errmsg(JP_EEXISTS), "dup.tsv:3: document id 'a' was already used on line 1"));
  /* Whole batches of bad lines are skipped through to the good ones. */
  {
    static char buf[1 << 14];
    size_t n = 0;
    for (int i = 0; i < 300; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "bad line %d\n", i);
    snprintf(buf + n, sizeof buf - n, "x\t最後の文書\ny\tもう一つ\n");
    build_opts(&o, write_corpus("mostlybad.tsv", buf), path_in("mbidx"));
    o.skip_bad = 1;
    assert_int_equal(jp_index_build(&o, &rep), 0);
    assert_int_equal(rep.n_docs, 2);
    assert_int_equal(rep.n_bad_lines, 300);
  }
  /* An empty corpus is an error, not an empty index. */
  build_opts(&o, write_corpus("empty.tsv", "\n\n"), path_in("emptyidx"));
  assert_int_equal(jp_index_build(&o, &rep), JP_EINVAL);
  assert_false(jp_path_exists(path_in("emptyidx")));
}

static void add_replaces_by_id_with_the_index_model(void **state)
{
  (void)state;
  NEED_DATA();
  struct jp_index_build_opts o;
  struct jp_index_build_report rep;
  struct jp_index_add_opts ao = {0};
  struct jp_index_add_report ar;
  struct jp_store_stats st;
  jp_store *s;
  jp_model *m;
  const char *idx = path_in("addidx");
  build_opts(&o, small_corpus(), idx);
  o.max_document_length = 64;
  assert_int_equal(jp_index_build(&o, &rep), 0);

  /* The model recorded in the index is found; another one is refused. */
  assert_int_equal(jp_index_open_with_model(idx, g_model2, NULL, NULL, &s, &m), JP_EMISMATCH);
  assert_non_null(strstr(jp_errmsg(JP_EMISMATCH), "identity"));
  assert_int_equal(jp_index_open_with_model(idx, NULL, NULL, NULL, &s, &m), 0);

  ao.corpus_path = write_corpus("add.jsonl",
                                "{\"id\": \"d01\", \"text\": \"置き換えられた文書\"}\n"
                                "{\"id\": \"fresh\", \"text\": \"新しい文書\", \"metadata\": {\"x\": \"y\"}}\n");
  ao.n_threads = 2;
  assert_int_equal(jp_index_add(s, m, &ao, &ar), 0);
  assert_int_equal(ar.n_docs, 2);
  assert_int_equal(jp_store_get_stats(s, &st), 0);
  assert_int_equal(st.n_docs, 26);
  assert_int_equal(st.n_passages, rep.n_passages + 1);
  assert_true(isfinite(st.codebook_drift) && st.codebook_drift > 0);
  {
    struct jp_search_params sp;
    struct jp_restrict r = {0};
    struct jp_arena a;
    struct jp_result *res;
    const char *ids[1] = {"d01"};
    float q[128] = {0};
    int n;
    q[0] = 1;
    jp_search_params_init(&sp, 5);
    sp.exhaustive = 1;
    r.doc_ids = ids;
    r.n_doc_ids = 1;
    jp_arena_init(&a, 0, 0);
    assert_int_equal(jp_store_search(s, q, 1, &sp, &r, NULL, &a, &res, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(res[0].content, "置き換えられた文書");
    jp_arena_fini(&a);
  }
  /* The same id twice in one file is a bad line. */
  ao.corpus_path = write_corpus("add2.jsonl", "{\"id\": \"z\", \"text\": \"a\"}\n"
                                              "{\"id\": \"z\", \"text\": \"b\"}\n");
  assert_int_equal(jp_index_add(s, m, &ao, &ar), JP_EEXISTS);
  assert_non_null(strstr(jp_errmsg(JP_EEXISTS), "add2.jsonl:2:"));
  jp_model_close(m);
  jp_store_close(s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(build_splits_records_and_refuses_to_clobber),
    cmocka_unit_test(bad_lines_and_repeated_ids),
    cmocka_unit_test(add_replaces_by_id_with_the_index_model),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
