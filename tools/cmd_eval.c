/* cmd_eval.c: `japlaid eval` -- retrieval quality of an index on a query
 * set with relevance judgements (index/eval.h): runs every query through
 * the same search as `japlaid search` and prints a table, then one JSON
 * line with the metrics (the last line of stdout). */
#include "cli.h"
#include "index/build.h"
#include "index/eval.h"
#include "index/store.h"
#include "model/model.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/pool.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Queries encoded together (as `japlaid search`). */
#define EVAL_CHUNK 64
/* Per-query result arena cap, as in cmd_search.c. */
#define EVAL_ARENA_LIMIT ((size_t)256 << 20)
/* Queries files are small text files; 1 GiB is jp_read_file's default cap. */
#define EVAL_QUERIES_MAX ((size_t)1 << 30)

/* Defined in cmd_search.c. */
int cli_search_opt(const char *cmd, int argc, char **argv, int *i, struct jp_search_params *p);

static const char *const usage_text =
  "usage: japlaid eval --index DIR --queries Q.tsv --qrels QRELS [-k K] [--exhaustive]\n"
  "                    [--ncells N] [--centroid-score-threshold T] [--ndocs N]\n"
  "                    [--model DIR] [--threads N]\n"
  "\n"
  "Runs every query of Q.tsv (qid<TAB>query) and scores the rankings against\n"
  "QRELS (qid<TAB>docid, qid docid grade, or TREC qid 0 docid grade; relevance\n"
  "is per document id, a document counted once at its best passage).\n"
  "  -k K          results per query (default 100: enough for the @100 metrics)\n"
  "  --exhaustive  exact MaxSim over every passage instead of PLAID\n"
  "Prints a table, then one JSON line with NDCG@10, MRR@10, NDCG@100, MRR@100,\n"
  "R@1, R@5, R@10, R@100, the query counts and the time.\n";

struct qline {
  const char *qid, *text;
  size_t qid_len, len;
};

static int load_queries(const char *path, char **buf, struct qline **out, int *n_out)
{
  size_t len, cap = 0;
  struct qline *q = NULL;
  int n = 0, rc;
  uint64_t line_no = 0;
  char *p, *end;

  *out = NULL;
  *n_out = 0;
  if ((rc = jp_read_file(path, EVAL_QUERIES_MAX, buf, &len)) < 0) return rc;
  for (p = *buf, end = *buf + len; p < end;) {
    char *nl = memchr(p, '\n', (size_t)(end - p)), *tab;
    size_t l;
    if (!nl) nl = end;
    line_no++;
    l = (size_t)(nl - p);
    if (l && p[l - 1] == '\r') l--;
    if (l) {
      if (!(tab = memchr(p, '\t', l))) {
        jp_free(q);
        return jp_err(JP_EINVAL, "%s:%" PRIu64 ": expected qid<TAB>query", path, line_no);
      }
      if ((rc = jp_grow((void **)&q, &cap, (size_t)n + 1, sizeof *q, 0)) < 0) {
        jp_free(q);
        return rc;
      }
      q[n].qid = p;
      q[n].qid_len = (size_t)(tab - p);
      q[n].text = tab + 1;
      q[n].len = (size_t)(p + l - (tab + 1));
      n++;
    }
    p = nl + 1;
  }
  *out = q;
  *n_out = n;
  return 0;
}

int cmd_eval(int argc, char **argv)
{
  struct jp_search_params sp = {100, 0, NAN, 0, 0};
  struct jp_store_opts so;
  struct jp_model_opts mo;
  const char *index_dir = NULL, *model_dir = NULL, *queries = NULL, *qrels_path = NULL;
  jp_store *s = NULL;
  jp_model *m = NULL;
  jp_encoder *enc = NULL;
  jp_qrels *qrels = NULL;
  jp_pool *pool = NULL;
  const struct jp_model_info *info;
  struct qline *qs = NULL;
  struct jp_eval_acc acc;
  struct jp_eval_metrics mean;
  struct jp_arena arena;
  char *qbuf = NULL;
  float *Q = NULL;
  const char *ids[JP_MAX_K];
  size_t id_lens[JP_MAX_K];
  int nq = 0, rc;
  long v;
  double t0, secs;

  jp_store_opts_default(&so);
  so.read_only = 1;
  jp_model_opts_default(&mo);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    int k;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    }
    if ((k = cli_search_opt("eval", argc, argv, &i, &sp)) != 0) {
      if (k == CLI_USAGE) return CLI_USAGE;
      continue;
    }
    if (!strcmp(a, "--index") && val) index_dir = argv[++i];
    else if (!strcmp(a, "--model") && val) model_dir = argv[++i];
    else if (!strcmp(a, "--queries") && val) queries = argv[++i];
    else if (!strcmp(a, "--qrels") && val) qrels_path = argv[++i];
    else if (!strcmp(a, "--threads")) {
      if (cli_parse_int("eval", a, val, 1, 1024, &v)) return CLI_USAGE;
      mo.n_threads = (int)v;
      i++;
    } else {
      return cli_usage_error("eval", "unknown option %s (or it needs a value)", a);
    }
  }
  if (!index_dir || !queries || !qrels_path)
    return cli_usage_error("eval", "--index, --queries and --qrels are required");

  jp_arena_init(&arena, 0, EVAL_ARENA_LIMIT);
  jp_eval_acc_init(&acc);
  if ((rc = jp_qrels_load(qrels_path, &qrels)) < 0 ||
      (rc = load_queries(queries, &qbuf, &qs, &nq)) < 0 ||
      (rc = jp_index_open_with_model(index_dir, model_dir, &so, &mo, &s, &m)) < 0 ||
      (rc = jp_encoder_create(m, &enc)) < 0 || (rc = jp_pool_create(mo.n_threads, &pool)) < 0)
    goto out;
  info = jp_model_get_info(m);
  Q = jp_malloc((size_t)EVAL_CHUNK * (size_t)info->colbert.query_maxlen *
                (size_t)info->colbert.dim * sizeof *Q);
  if (!Q) { rc = JP_ENOMEM; goto out; }

  t0 = jp_now_s();
  for (int g = 0; g < nq; g += EVAL_CHUNK) {
    int n = nq - g < EVAL_CHUNK ? nq - g : EVAL_CHUNK;
    const char *texts[EVAL_CHUNK];
    size_t lens[EVAL_CHUNK];
    size_t qsz = (size_t)info->colbert.query_maxlen * (size_t)info->colbert.dim;
    for (int j = 0; j < n; j++) {
      texts[j] = qs[g + j].text;
      lens[j] = qs[g + j].len;
    }
    if ((rc = jp_encode_queries(enc, texts, lens, n, Q)) < 0) goto out;
    for (int j = 0; j < n; j++) {
      struct jp_result *res;
      struct jp_eval_metrics mq;
      int nr, judged;
      jp_arena_reset(&arena);
      if ((rc = jp_store_search(s, Q + (size_t)j * qsz, info->colbert.query_maxlen, &sp, NULL,
                                pool, &arena, &res, &nr)) < 0)
        goto out;
      for (int r = 0; r < nr; r++) {
        ids[r] = res[r].document_id;
        id_lens[r] = strlen(res[r].document_id);
      }
      judged = jp_eval_query(qrels, qs[g + j].qid, qs[g + j].qid_len, ids, id_lens, nr, &mq);
      if (judged < 0) { rc = judged; goto out; }
      jp_eval_acc_add(&acc, judged, &mq);
    }
  }
  secs = jp_now_s() - t0;
  jp_eval_acc_mean(&acc, &mean);
  {
    struct jp_search_params r = sp;
    jp_search_params_resolve(&r);
    printf("%-10s %s\n", "metric", "value");
    for (int i = 0; i < JP_EVAL_N; i++) printf("%-10s %.4f\n", jp_eval_names[i], mean.v[i]);
    printf("%" PRIu64 " judged queries (%" PRIu64 " without judgements left out), %.1f queries/s, "
           "%s k=%d", acc.n_judged, acc.n_unjudged, secs > 0 ? (double)nq / secs : 0.0,
           sp.exhaustive ? "exhaustive" : "plaid", r.k);
    if (!sp.exhaustive)
      printf(" ncells=%d centroid_score_threshold=%g ndocs=%d", r.ncells,
             (double)r.centroid_score_threshold, r.ndocs);
    printf("\n{\"mode\":\"%s\",\"k\":%d", sp.exhaustive ? "exhaustive" : "plaid", r.k);
    if (!sp.exhaustive)
      printf(",\"ncells\":%d,\"centroid_score_threshold\":%g,\"ndocs\":%d", r.ncells,
             (double)r.centroid_score_threshold, r.ndocs);
    printf(",\"queries\":%" PRIu64 ",\"unjudged\":%" PRIu64 ",\"seconds\":%.3f", acc.n_judged,
           acc.n_unjudged, secs);
    for (int i = 0; i < JP_EVAL_N; i++) printf(",\"%s\":%.4f", jp_eval_names[i], mean.v[i]);
    printf("}\n");
  }
out:
  jp_free(Q);
  jp_free(qs);
  jp_free(qbuf);
  jp_encoder_destroy(enc);
  jp_pool_destroy(pool);
  jp_model_close(m);
  jp_store_close(s);
  jp_qrels_free(qrels);
  jp_arena_fini(&arena);
  return rc < 0 ? cli_fail("eval", rc) : CLI_OK;
}
