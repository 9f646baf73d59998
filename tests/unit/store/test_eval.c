/* test_eval.c: qrels formats and the retrieval metrics, checked against
 * the definitions computed by hand for small rankings. */
#include "test_helpers.h"
#include "index/eval.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"

#include <math.h>
#include <string.h>

static char g_dir[256];

static int setup(void **state)
{
  (void)state;
  return jp_test_tmpdir(g_dir, sizeof g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  jp_rm_rf(g_dir);
  return 0;
}

static const char *write_file(const char *name, const char *data)
{
  static char path[512];
  FILE *f;
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  f = fopen(path, "wb");
  assert_non_null(f);
  fputs(data, f);
  fclose(f);
  return path;
}

static int eval_list(const jp_qrels *q, const char *qid, const char *const *docs, int n,
                     struct jp_eval_metrics *m)
{
  size_t lens[64];
  for (int i = 0; i < n; i++) lens[i] = strlen(docs[i]);
  return jp_eval_query(q, qid, strlen(qid), docs, lens, n, m);
}

static void qrels_formats_are_read(void **state)
{
  (void)state;
  jp_qrels *q;
  /* TSV pairs (JSQuAD), with a repeated line and CRLF. */
  assert_int_equal(jp_qrels_load(write_file("a.tsv", "q1\td1\nq1\td3\r\nq2\td2\nq1\td1\n"), &q), 0);
  assert_int_equal(jp_qrels_n_queries(q), 2);
  assert_int_equal(jp_qrels_n_relevant(q, "q1", 2), 2);
  assert_true(jp_qrels_is_relevant(q, "q1", 2, "d3", 2));
  assert_false(jp_qrels_is_relevant(q, "q2", 2, "d3", 2));
  assert_int_equal(jp_qrels_n_relevant(q, "q9", 2), 0);
  jp_qrels_free(q);
  /* TREC: grade 0 is not relevant. */
  assert_int_equal(jp_qrels_load(write_file("b.trec", "q1 0 d1 1\nq1 0 d2 0\nq2 0 d5 2\n"), &q), 0);
  assert_int_equal(jp_qrels_n_relevant(q, "q1", 2), 1);
  assert_false(jp_qrels_is_relevant(q, "q1", 2, "d2", 2));
  assert_true(jp_qrels_is_relevant(q, "q2", 2, "d5", 2));
  jp_qrels_free(q);
  /* BEIR TSV with a header line. */
  assert_int_equal(jp_qrels_load(write_file("c.tsv", "query-id\tcorpus-id\tscore\nq1\td4\t1\n"), &q), 0);
  assert_int_equal(jp_qrels_n_queries(q), 1);
  assert_true(jp_qrels_is_relevant(q, "q1", 2, "d4", 2));
  jp_qrels_free(q);
  /* Malformed lines name file:line. */
  assert_int_equal(jp_qrels_load(write_file("d.tsv", "q1\td1\nq1\n"), &q), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "d.tsv:2:"));
  assert_int_equal(jp_qrels_load(write_file("e.tsv", "q1\td1\t1\nq2\td2\tx\n"), &q), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "e.tsv:2:"));
  assert_int_equal(jp_qrels_load(write_file("f.tsv", "a b c d e f\n"), &q), JP_EINVAL);
}

static void metrics_follow_their_definitions(void **state)
{
  (void)state;
  jp_qrels *q;
  struct jp_eval_metrics m;
  assert_int_equal(jp_qrels_load(write_file("m.tsv", "q1\td1\nq1\td3\nq2\tz\n"), &q), 0);

  /* Relevant d1, d3. Ranking d2, d1, d1 (second passage of d1: counted
   * once), d4, d3 -> distinct documents d2 d1 d4 d3: hits at ranks 2, 4. */
  const char *r1[] = {"d2", "d1", "d1", "d4", "d3"};
  assert_int_equal(eval_list(q, "q1", r1, 5, &m), 1);
  double dcg = 1 / log2(3.0) + 1 / log2(5.0), idcg = 1 + 1 / log2(3.0);
  assert_float_equal(m.v[JP_EVAL_NDCG10], dcg / idcg, 1e-12);
  assert_float_equal(m.v[JP_EVAL_NDCG100], dcg / idcg, 1e-12);
  assert_float_equal(m.v[JP_EVAL_MRR10], 0.5, 1e-12);
  assert_float_equal(m.v[JP_EVAL_R1], 0.0, 1e-12);
  assert_float_equal(m.v[JP_EVAL_R5], 1.0, 1e-12);
  assert_float_equal(m.v[JP_EVAL_R10], 1.0, 1e-12);

  /* A relevant document at rank 11 counts for @100 only. */
  const char *r2[12];
  char names[12][8];
  for (int i = 0; i < 12; i++) {
    snprintf(names[i], sizeof names[i], "x%d", i);
    r2[i] = names[i];
  }
  r2[10] = "d3";
  assert_int_equal(eval_list(q, "q1", r2, 12, &m), 1);
  assert_float_equal(m.v[JP_EVAL_MRR10], 0.0, 1e-12);
  assert_float_equal(m.v[JP_EVAL_MRR100], 1.0 / 11, 1e-12);
  assert_float_equal(m.v[JP_EVAL_R10], 0.0, 1e-12);
  assert_float_equal(m.v[JP_EVAL_R100], 0.5, 1e-12);
  assert_float_equal(m.v[JP_EVAL_NDCG10], 0.0, 1e-12);
  assert_float_equal(m.v[JP_EVAL_NDCG100], (1 / log2(12.0)) / idcg, 1e-12);

  /* Perfect single-relevant query; then an unjudged query. */
  const char *r3[] = {"z"};
  assert_int_equal(eval_list(q, "q2", r3, 1, &m), 1);
  for (int i = 0; i < JP_EVAL_N; i++) assert_float_equal(m.v[i], 1.0, 1e-12);
  assert_int_equal(eval_list(q, "nope", r3, 1, &m), 0);

  /* Means are over judged queries only. */
  {
    struct jp_eval_acc acc;
    struct jp_eval_metrics a, b, mean;
    jp_eval_acc_init(&acc);
    jp_eval_acc_add(&acc, eval_list(q, "q1", r1, 5, &a), &a);
    jp_eval_acc_add(&acc, eval_list(q, "q2", r3, 1, &b), &b);
    jp_eval_acc_add(&acc, eval_list(q, "q7", r3, 1, &m), &m);
    jp_eval_acc_mean(&acc, &mean);
    assert_int_equal(acc.n_judged, 2);
    assert_int_equal(acc.n_unjudged, 1);
    assert_float_equal(mean.v[JP_EVAL_MRR10], (0.5 + 1.0) / 2, 1e-12);
    assert_float_equal(mean.v[JP_EVAL_R1], 0.5, 1e-12);
  }
  /* An empty ranking scores 0, and bad arguments are refused. */
  assert_int_equal(eval_list(q, "q1", r1, 0, &m), 1);
  assert_float_equal(m.v[JP_EVAL_R100], 0.0, 1e-12);
  assert_int_equal(jp_eval_query(q, "q1", 2, NULL, NULL, 3, &m), JP_EINVAL);
  assert_string_equal(jp_eval_names[JP_EVAL_NDCG10], "NDCG@10");
  assert_string_equal(jp_eval_names[JP_EVAL_R100], "R@100");
  jp_qrels_free(q);
}

static void qrels_oom_is_clean(void **state)
{
  (void)state;
  const char *p = write_file("oom.tsv", "q1\td1\nq1\td2\nq2\td3\nq3 0 d4 1\n");
  for (long k = 1; k < 1000; k++) {
    jp_qrels *q = NULL;
    jp_mem_fail_after(k);
    int rc = jp_qrels_load(p, &q);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      assert_true(made < k);
      assert_int_equal(jp_qrels_n_queries(q), 3);
      jp_qrels_free(q);
      return;
    }
    assert_int_equal(rc, JP_ENOMEM);
    assert_null(q);
  }
  fail_msg("never completed");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(qrels_formats_are_read),
    cmocka_unit_test(metrics_follow_their_definitions),
    cmocka_unit_test(qrels_oom_is_clean),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
