/* test_cluster.c: japlaid-coordinator in front of real japlaid-shard
 * processes on 127.0.0.1 (ephemeral ports), over HTTP/JSON and gRPC.
 *
 * Data (built once, in a temp dir): a static model M (`japlaid model
 * static`) and another one M2 (--seed 2); 120 JSQuAD passages as a JSONL
 * corpus with metadata; an index of them (`japlaid index`) cut into two
 * partitions sharing its codebook (jp_make_parts, routed by
 * jp_route_partition); a partition built with M2 (another model) and a
 * partition 1 built with M from other passages (another codebook).
 *
 * Cluster A: 2 partitions x 1 replica.
 *   - results equal the embedded CLI (`japlaid search --index Pp`) over
 *     the same partitions merged by score: same passages in the same
 *     order, scores within 1e-5, for PLAID defaults, exhaustive, a metadata
 *     filter and a doc_ids restriction; gRPC answers equal HTTP's;
 *   - rerank, encode, stats, healthz and metrics answer as specified;
 *   - an upsert (HTTP and gRPC) is found by the next search, long texts are
 *     split, a delete is gone;
 *   - malformed JSON / protobuf / HTTP, oversized bodies, k = 0 and huge,
 *     empty and 1 MB queries, unknown fields, endpoints and methods get a
 *     clear 4xx / INVALID_ARGUMENT naming the problem, and the coordinator
 *     keeps serving (also on the same keep-alive connection);
 *   - kill -9 of partition 1's shard: answers turn degraded with the right
 *     coverage and equal partition 0's embedded results (never an error),
 *     require_full_coverage gets 503 / UNAVAILABLE naming partition 1,
 *     writes to it are refused, healthz says 503; after the shard restarts
 *     on its port, answers are full again;
 *   - SIGTERM: exit status 0.
 * Cluster B: 2 partitions x 2 replicas, plus a replica built with M2 and
 * one with another codebook: both are refused (reported in stats and the
 * metrics, never queried: answers stay equal to the embedded ones and no
 * shard call fails); kill -9 of one replica of each partition during a
 * stream of queries: every answer is 200 with full coverage.
 * Bad cluster.json files: exit 2 with a message naming the problem.
 *
 * argv[1..3]: japlaid-shard, japlaid-coordinator, jp_make_parts; the CLI
 * comes from $JAPLAID_BIN, the data from $JP_DATA_DIR (skipped without). */
#include "test_helpers.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "itest.h"
#include "japlaid/v1/search.pb-c.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/mem.h"

#define N_DOCS 120          /* corpus passages (k-means of 4 iterations: seconds) */
#define N_OTHER 40          /* passages of the other-codebook partition */
#define NQ 8                /* test queries */
#define MAXK 32
#define T_MS 60000          /* generous: CI machines are slow and shared */

struct hit {
  uint64_t pid;
  float score;
  char doc[64];
  char content[2048];
};
struct hits {
  int n;
  struct hit h[MAXK];
};

struct shard_proc {
  pid_t pid;
  char dir[512];
  char addr[128];
  char log[512];
};

struct coord_proc {
  pid_t pid;
  char grpc[128], http[128];
  char log[512];
};

static struct {
  const char *shard_bin, *coord_bin, *parts_bin, *cli;
  char tmp[256];
  char model[512], model2[512], corpus[512], all[512], parts[512];
  char fpart[512], ypart[700];
  char bparts[512];
  char qfile[512];
  char *queries[NQ];
  int nq;
  char doc_ids[N_DOCS][64];
  rpc_client *rpc;
  struct shard_proc a[2];
  struct coord_proc ca;
  struct hits full[NQ];     /* expected: both partitions, k = 10 */
} G;

/* ---- small helpers --------------------------------------------------------------- */

static char *path_in(char *buf, size_t cap, const char *name)
{
  snprintf(buf, cap, "%s/%s", G.tmp, name);
  return buf;
}

static void run_ok(char *const argv[], const char *in, char **out)
{
  char log[600];
  path_in(log, sizeof log, "tools.log");
  int st = itest_run(argv, in, log, out, 5 * T_MS);
  if (st != 0) fail_msg("%s %s exited with %d (see %s)", argv[0], argv[1], st, log);
}

static json_t *parse_json(const char *s, const char *what)
{
  json_error_t e;
  json_t *j = json_loads(s, 0, &e);
  if (!j) fail_msg("%s: not JSON (%s): %.300s", what, e.text, s);
  return j;
}

/* An HTTP request on a fresh connection; the answer as JSON (NULL if the
 * body is not JSON) and its status. */
static json_t *http_json(const char *addr, const char *method, const char *path,
                         const char *body, int *status)
{
  char *resp = NULL;
  if (itest_http(addr, method, path, body, status, &resp, T_MS) < 0)
    fail_msg("HTTP %s %s: no answer from %s", method, path, addr);
  json_error_t e;
  json_t *j = json_loads(resp, 0, &e);
  free(resp);
  return j;
}

static const char *jstr(json_t *o, const char *k)
{
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

static long long jint(json_t *o, const char *k)
{
  return json_integer_value(json_object_get(o, k));
}

/* The value of a Prometheus sample "name{labels}" (or "name"), -1 if absent. */
static double metric(const char *text, const char *sample)
{
  size_t n = strlen(sample);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, sample, n) && p[n] == ' ') return atof(p + n + 1);
  return -1;
}

static char *metrics_text(const char *addr)
{
  int st;
  char *resp = NULL;
  if (itest_http(addr, "GET", "/metrics", NULL, &st, &resp, T_MS) < 0 || st != 200)
    fail_msg("GET /metrics failed (%d)", st);
  return resp;
}

/* ---- processes --------------------------------------------------------------------- */

/* Every server this test started and has not reaped: a failing check
 * leaves its test function early, and teardown must still stop them. */
#define MAX_PROCS 64
static pid_t g_procs[MAX_PROCS];

static void track(pid_t pid)
{
  for (int i = 0; i < MAX_PROCS; i++)
    if (g_procs[i] <= 0) {
      g_procs[i] = pid;
      return;
    }
}

static void untrack(pid_t pid)
{
  for (int i = 0; i < MAX_PROCS; i++)
    if (g_procs[i] == pid) g_procs[i] = 0;
}

/* kill -9, reap, forget; *pid becomes -1. */
static void kill9(pid_t *pid)
{
  if (*pid <= 0) return;
  itest_kill9(*pid);
  untrack(*pid);
  *pid = -1;
}

/* Exit status after SIGTERM (at most T_MS); the process is reaped. */
static int term_and_wait(pid_t *pid)
{
  kill(*pid, SIGTERM);
  int st = itest_wait_exit(*pid, T_MS);
  if (st < 0) itest_kill9(*pid);
  untrack(*pid);
  *pid = -1;
  return st;
}

static int shard_health(const char *addr)
{
  int st = -1;
  if (rpc_client_health(G.rpc, addr, "japlaid.v1.Shard", 2000, &st) < 0) return -1;
  return st;
}

static void shard_start(struct shard_proc *s, const char *dir, const char *listen)
{
  static int n;
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  snprintf(s->log, sizeof s->log, "%s/shard%d.log", G.tmp, n++);
  char *argv[] = {(char *)G.shard_bin, "--index", s->dir, "--listen", (char *)listen,
                  "--threads", "2", "--grace-ms", "2000", NULL};
  const char *pre[] = {"listening on "};
  char val[1][128], why[300];
  s->pid = itest_spawn(argv, s->log, 1, pre, val, T_MS, why, sizeof why);
  if (s->pid < 0) fail_msg("shard on %s: %s", dir, why);
  track(s->pid);
  snprintf(s->addr, sizeof s->addr, "%s", val[0]);
  for (int i = 0; i < 600 && shard_health(s->addr) != RPC_HEALTH_SERVING; i++) jp_sleep_ms(100);
  if (shard_health(s->addr) != RPC_HEALTH_SERVING) fail_msg("shard %s never SERVING", s->addr);
}

static void write_cluster(const char *path, int np, struct shard_proc *const *reps, const int *nr)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "{\"partitions\": [");
  for (int p = 0, k = 0; p < np; p++) {
    fprintf(f, "%s{\"id\": %d, \"replicas\": [", p ? ", " : "", p);
    for (int r = 0; r < nr[p]; r++, k++) fprintf(f, "%s\"%s\"", r ? ", " : "", reps[k]->addr);
    fprintf(f, "]}");
  }
  fprintf(f, "]}\n");
  fclose(f);
}

static void coord_start(struct coord_proc *c, const char *cluster, const char *tag,
                        const char *deadline_ms)
{
  snprintf(c->log, sizeof c->log, "%s/coord-%s.log", G.tmp, tag);
  char *argv[] = {(char *)G.coord_bin, "--cluster", (char *)cluster, "--model", G.model,
                  "--threads", "2", "--health-interval-ms", "200", "--deadline-ms",
                  (char *)deadline_ms, "--grace-ms", "3000", NULL};
  const char *pre[] = {"grpc listening on ", "http listening on "};
  char val[2][128], why[300];
  c->pid = itest_spawn(argv, c->log, 2, pre, val, T_MS, why, sizeof why);
  if (c->pid < 0) fail_msg("coordinator: %s", why);
  track(c->pid);
  snprintf(c->grpc, sizeof c->grpc, "%s", val[0]);
  snprintf(c->http, sizeof c->http, "%s", val[1]);
}

/* Wait until GET /healthz answers `want` (200 or 503). */
static void await_healthz(const char *http, int want)
{
  int st = 0;
  for (int i = 0; i < 400; i++) {
    json_t *j = http_json(http, "GET", "/healthz", NULL, &st);
    json_decref(j);
    if (st == want) return;
    jp_sleep_ms(100);
  }
  fail_msg("healthz never answered %d (last %d)", want, st);
}

/* ---- expected results: the embedded CLI ------------------------------------------------ */

static int hit_cmp(const void *a, const void *b)
{
  const struct hit *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static void hit_from(json_t *h, struct hit *out)
{
  out->pid = (uint64_t)json_integer_value(json_object_get(h, "passage_id"));
  out->score = (float)json_number_value(json_object_get(h, "score"));
  snprintf(out->doc, sizeof out->doc, "%s", jstr(h, "document_id"));
  snprintf(out->content, sizeof out->content, "%s", jstr(h, "content"));
}

/* `japlaid search` over each partition dir, merged by score then passage id. */
static void embedded(char *const *dirs, int n_dirs, int k, const char *const *extra,
                     struct hits *out)
{
  struct hit *all[NQ];
  int nall[NQ] = {0};
  for (int q = 0; q < G.nq; q++) all[q] = calloc((size_t)(n_dirs * MAXK), sizeof(struct hit));
  char ks[16];
  snprintf(ks, sizeof ks, "%d", k);
  for (int d = 0; d < n_dirs; d++) {
    char *argv[16];
    int a = 0;
    argv[a++] = (char *)G.cli;
    argv[a++] = "search";
    argv[a++] = "--index";
    argv[a++] = dirs[d];
    argv[a++] = "--model";
    argv[a++] = G.model;
    argv[a++] = "-k";
    argv[a++] = ks;
    for (int e = 0; extra && extra[e] && a < 15; e++) argv[a++] = (char *)extra[e];
    argv[a] = NULL;
    char *out_s = NULL;
    run_ok(argv, G.qfile, &out_s);
    char *line = out_s, *save = NULL;
    for (line = strtok_r(out_s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      json_t *j = parse_json(line, "japlaid search output");
      int q = atoi(jstr(j, "qid") + 1);
      assert_true(q >= 0 && q < G.nq);
      json_t *res = json_object_get(j, "results");
      for (size_t i = 0; i < json_array_size(res); i++)
        hit_from(json_array_get(res, i), &all[q][nall[q]++]);
      json_decref(j);
    }
    free(out_s);
  }
  for (int q = 0; q < G.nq; q++) {
    qsort(all[q], (size_t)nall[q], sizeof(struct hit), hit_cmp);
    out[q].n = nall[q] < k ? nall[q] : k;
    memcpy(out[q].h, all[q], (size_t)out[q].n * sizeof(struct hit));
    free(all[q]);
  }
}

/* Cluster hits (a JSON array of hit objects) against the expected ones:
 * the same passages at every rank (a swap is allowed only between scores
 * within 1e-5, a tie the two sides may break on float noise), scores
 * within 1e-5, ranks 1..n, and the same document id and text. */
static void compare(json_t *arr, const struct hits *e, const char *what)
{
  size_t n = json_array_size(arr);
  if ((int)n != e->n) fail_msg("%s: %zu hits, expected %d", what, n, e->n);
  for (size_t i = 0; i < n; i++) {
    struct hit h;
    json_t *jh = json_array_get(arr, i);
    hit_from(jh, &h);
    if (jint(jh, "rank") != (long long)i + 1)
      fail_msg("%s: rank %lld at %zu", what, jint(jh, "rank"), i);
    if (fabsf(h.score - e->h[i].score) > 1e-5f)
      fail_msg("%s: rank %zu score %.7f, expected %.7f", what, i + 1, h.score, e->h[i].score);
    int j = -1;
    for (int x = 0; x < e->n; x++)
      if (e->h[x].pid == h.pid) j = x;
    if (j < 0 || (j != (int)i && fabsf(e->h[j].score - e->h[i].score) > 1e-5f))
      fail_msg("%s: rank %zu is passage %llu (%s), expected %llu (%s)", what, i + 1,
               (unsigned long long)h.pid, h.doc, (unsigned long long)e->h[i].pid, e->h[i].doc);
    assert_string_equal(h.doc, e->h[j].doc);
    assert_string_equal(h.content, e->h[j].content);
  }
}

/* POST /v1/search with every test query; extra JSON members in `more`. */
static json_t *search_all(const char *http, int k, const char *more, int *status)
{
  json_t *body = json_object();
  json_t *qs = json_array();
  for (int q = 0; q < G.nq; q++) json_array_append_new(qs, json_string(G.queries[q]));
  json_object_set_new(body, "queries", qs);
  json_object_set_new(body, "k", json_integer(k));
  if (more) {
    json_t *m = parse_json(more, "test JSON");
    json_object_update(body, m);
    json_decref(m);
  }
  char *b = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  json_t *j = http_json(http, "POST", "/v1/search", b, status);
  free(b);
  return j;
}

static void check_coverage(json_t *j, int total, int answered)
{
  json_t *c = json_object_get(j, "coverage");
  assert_non_null(c);
  assert_int_equal(jint(c, "partitions_total"), total);
  assert_int_equal(jint(c, "partitions_answered"), answered);
  assert_int_equal(json_array_size(json_object_get(c, "failed")), total - answered);
  assert_true(json_is_true(json_object_get(j, "degraded")) == (answered < total));
}

/* ---- data -------------------------------------------------------------------------------- */

static void write_corpus(const char *path, int first, int n, int with_meta)
{
  char src[600];
  if (!jp_test_data(src, sizeof src, "jsquad/valid.corpus.tsv")) fail_msg("no JSQuAD corpus");
  FILE *in = fopen(src, "r"), *out = fopen(path, "w");
  assert_non_null(in);
  assert_non_null(out);
  char *line = NULL;
  size_t cap = 0;
  int i = 0;
  while (getline(&line, &cap, in) > 0 && i < first + n) {
    line[strcspn(line, "\n")] = '\0';
    char *id = line, *title = strchr(id, '\t');
    if (!title) continue;
    *title++ = '\0';
    char *text = strchr(title, '\t');
    if (!text) continue;
    *text++ = '\0';
    if (i >= first) {
      json_t *d = json_object();
      char full[8192];
      snprintf(full, sizeof full, "%s %s", title, text);
      json_object_set_new(d, "id", json_string(id));
      json_object_set_new(d, "text", json_string(full));
      if (with_meta) {
        json_t *m = json_object();
        char g[8];
        snprintf(g, sizeof g, "g%d", i % 3);
        json_object_set_new(m, "title", json_string(title));
        json_object_set_new(m, "group", json_string(g));
        json_object_set_new(d, "metadata", m);
        snprintf(G.doc_ids[i - first], sizeof G.doc_ids[0], "%s", id);
      }
      char *s = json_dumps(d, JSON_COMPACT);
      fprintf(out, "%s\n", s);
      free(s);
      json_decref(d);
    }
    i++;
  }
  free(line);
  fclose(in);
  fclose(out);
  assert_int_equal(i, first + n);
}

/* Questions whose passage is in the corpus (qid a10336p0q1 -> a10336p0). */
static void pick_queries(void)
{
  char src[600];
  if (!jp_test_data(src, sizeof src, "jsquad/valid.queries.tsv")) fail_msg("no JSQuAD queries");
  FILE *in = fopen(src, "r");
  char *line = NULL;
  size_t cap = 0;
  int step = 0;
  while (G.nq < NQ && getline(&line, &cap, in) > 0) {
    line[strcspn(line, "\n")] = '\0';
    char *tab = strchr(line, '\t');
    if (!tab) continue;
    *tab = '\0';
    char pid[64];
    snprintf(pid, sizeof pid, "%s", line);
    char *q = strrchr(pid, 'q');
    if (q) *q = '\0';
    int in_corpus = 0;
    for (int i = 0; i < N_DOCS && !in_corpus; i++) in_corpus = !strcmp(G.doc_ids[i], pid);
    /* Every 7th matching question: spread over the articles. */
    if (in_corpus && step++ % 7 == 0) G.queries[G.nq++] = strdup(tab + 1);
  }
  free(line);
  fclose(in);
  assert_int_equal(G.nq, NQ);
  FILE *f = fopen(G.qfile, "w");
  for (int i = 0; i < G.nq; i++) fprintf(f, "q%d\t%s\n", i, G.queries[i]);
  fclose(f);
}

static void copy_dir(const char *from, const char *to)
{
  char *argv[] = {"/bin/cp", "-r", (char *)from, (char *)to, NULL};
  run_ok(argv, NULL, NULL);
}

static int setup(void **state)
{
  (void)state;
  char vocab[600], buf[600];
  if (!jp_test_data(vocab, sizeof vocab, "bert-base-japanese-v3/vocab.txt") ||
      !jp_test_data(buf, sizeof buf, "jsquad/valid.corpus.tsv")) {
    fprintf(stderr, "skipped: no JP_DATA_DIR data\n");
    exit(JP_TEST_SKIP);
  }
  assert_non_null(jp_test_tmpdir(G.tmp, sizeof G.tmp));
  assert_int_equal(rpc_client_create(NULL, &G.rpc), 0);
  path_in(G.model, sizeof G.model, "M");
  path_in(G.model2, sizeof G.model2, "M2");
  path_in(G.corpus, sizeof G.corpus, "corpus.jsonl");
  path_in(G.all, sizeof G.all, "all");
  path_in(G.parts, sizeof G.parts, "parts");
  path_in(G.qfile, sizeof G.qfile, "queries.tsv");
  path_in(G.bparts, sizeof G.bparts, "b");

  char *m1[] = {(char *)G.cli, "model", "static", "--out", G.model, "--vocab-file", vocab, NULL};
  char *m2[] = {(char *)G.cli, "model", "static", "--out", G.model2, "--vocab-file", vocab,
                "--seed", "2", NULL};
  run_ok(m1, NULL, NULL);
  run_ok(m2, NULL, NULL);
  write_corpus(G.corpus, 0, N_DOCS, 1);
  pick_queries();
  char *ix[] = {(char *)G.cli, "index", "--model", G.model, "--corpus", G.corpus, "--index",
                G.all, "--threads", "2", "--kmeans-iters", "4", NULL};
  run_ok(ix, NULL, NULL);
  char *mp[] = {(char *)G.parts_bin, "--model", G.model, "--index", G.all, "--corpus", G.corpus,
                "--partitions", "2", "--out", G.parts, NULL};
  run_ok(mp, NULL, NULL);

  /* Another model: an index built with M2 (partition 0 of 1). */
  char other[600], fall[600];
  path_in(other, sizeof other, "other.jsonl");
  write_corpus(other, N_DOCS, N_OTHER, 0);
  path_in(G.fpart, sizeof G.fpart, "foreign");
  char *fx[] = {(char *)G.cli, "index", "--model", G.model2, "--corpus", other, "--index",
                G.fpart, "--threads", "2", "--kmeans-iters", "2", NULL};
  run_ok(fx, NULL, NULL);
  /* Another codebook: M, other passages, cut in 2 (its partition 1). */
  path_in(fall, sizeof fall, "yall");
  char *yx[] = {(char *)G.cli, "index", "--model", G.model, "--corpus", other, "--index", fall,
                "--threads", "2", "--kmeans-iters", "2", NULL};
  run_ok(yx, NULL, NULL);
  char ydir[600];
  path_in(ydir, sizeof ydir, "yparts");
  char *yp[] = {(char *)G.parts_bin, "--model", G.model, "--index", fall, "--corpus", other,
                "--partitions", "2", "--out", ydir, NULL};
  run_ok(yp, NULL, NULL);
  snprintf(G.ypart, sizeof G.ypart, "%s/p1", ydir);

  /* Untouched copies for cluster B (cluster A's partitions take writes). */
  char d[700], s[700];
  assert_int_equal(jp_mkdir_p(G.bparts), 0);
  const char *names[] = {"p0a", "p0b", "p1a", "p1b"};
  for (int i = 0; i < 4; i++) {
    snprintf(s, sizeof s, "%s/p%d", G.parts, i / 2);
    snprintf(d, sizeof d, "%s/%s", G.bparts, names[i]);
    copy_dir(s, d);
  }

  /* Expected answers before anything changes the partitions. */
  char p0[700], p1[700];
  snprintf(p0, sizeof p0, "%s/p0", G.parts);
  snprintf(p1, sizeof p1, "%s/p1", G.parts);
  char *both[] = {p0, p1};
  embedded(both, 2, 10, NULL, G.full);
  for (int q = 0; q < G.nq; q++) assert_int_equal(G.full[q].n, 10);

  /* Cluster A. */
  shard_start(&G.a[0], p0, "127.0.0.1:0");
  shard_start(&G.a[1], p1, "127.0.0.1:0");
  char cj[600];
  path_in(cj, sizeof cj, "cluster-a.json");
  struct shard_proc *reps[] = {&G.a[0], &G.a[1]};
  int nr[] = {1, 1};
  write_cluster(cj, 2, reps, nr);
  /* A long deadline: the equality checks must not see a timeout on a
   * loaded CI machine (deadlines are tested where they matter). */
  coord_start(&G.ca, cj, "a", "20000");
  await_healthz(G.ca.http, 200);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  for (int i = 0; i < MAX_PROCS; i++)
    if (g_procs[i] > 0) kill9(&g_procs[i]);
  rpc_client_destroy(G.rpc);
  for (int q = 0; q < G.nq; q++) free(G.queries[q]);
  if (!getenv("JP_KEEP_TMP")) jp_rm_rf(G.tmp);
  return 0;
}

/* ---- cluster A ------------------------------------------------------------------------- */

static void search_equals_embedded(void **state)
{
  (void)state;
  char p0[700], p1[700];
  snprintf(p0, sizeof p0, "%s/p0", G.parts);
  snprintf(p1, sizeof p1, "%s/p1", G.parts);
  char *both[] = {p0, p1};
  int st;

  /* PLAID defaults, k = 10. */
  json_t *j = search_all(G.ca.http, 10, NULL, &st);
  assert_int_equal(st, 200);
  check_coverage(j, 2, 2);
  json_t *res = json_object_get(j, "results");
  assert_int_equal(json_array_size(res), G.nq);
  for (int q = 0; q < G.nq; q++) compare(json_array_get(res, q), &G.full[q], "k=10");
  /* Both partitions contribute (the merge is not one partition's list). */
  int from[2] = {0, 0};
  for (int q = 0; q < G.nq; q++)
    for (int i = 0; i < G.full[q].n; i++) from[G.full[q].h[i].pid >> 40]++;
  assert_true(from[0] > 0 && from[1] > 0);
  json_decref(j);

  /* Exhaustive, k = 5. */
  struct hits e[NQ];
  const char *ex[] = {"--exhaustive", NULL};
  embedded(both, 2, 5, ex, e);
  j = search_all(G.ca.http, 5, "{\"exhaustive\": true}", &st);
  assert_int_equal(st, 200);
  for (int q = 0; q < G.nq; q++)
    compare(json_array_get(json_object_get(j, "results"), q), &e[q], "exhaustive");
  json_decref(j);

  /* A metadata filter, both spellings. */
  const char *fx[] = {"--filter", "group=g1", NULL};
  embedded(both, 2, 7, fx, e);
  const char *fjson[] = {"{\"filters\": {\"group\": \"g1\"}}",
                         "{\"filters\": [{\"key\": \"group\", \"value\": \"g1\"}]}"};
  for (int v = 0; v < 2; v++) {
    j = search_all(G.ca.http, 7, fjson[v], &st);
    assert_int_equal(st, 200);
    for (int q = 0; q < G.nq; q++) {
      json_t *arr = json_array_get(json_object_get(j, "results"), q);
      compare(arr, &e[q], "filter");
      for (size_t i = 0; i < json_array_size(arr); i++)
        assert_string_equal(jstr(json_object_get(json_array_get(arr, i), "document_metadata"),
                                 "group"), "g1");
    }
    json_decref(j);
  }

  /* doc_ids: every 4th document. */
  char ids[4096] = "";
  json_t *idarr = json_array();
  for (int i = 0; i < N_DOCS; i += 4) {
    snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%s", i ? "," : "", G.doc_ids[i]);
    json_array_append_new(idarr, json_string(G.doc_ids[i]));
  }
  const char *dx[] = {"--doc-ids", ids, NULL};
  embedded(both, 2, 6, dx, e);
  json_t *more = json_object();
  json_object_set_new(more, "doc_ids", idarr);
  char *ms = json_dumps(more, JSON_COMPACT);
  json_decref(more);
  j = search_all(G.ca.http, 6, ms, &st);
  free(ms);
  assert_int_equal(st, 200);
  for (int q = 0; q < G.nq; q++) compare(json_array_get(json_object_get(j, "results"), q), &e[q],
                                         "doc_ids");
  json_decref(j);

  /* One query ("query" form: a flat list). */
  json_t *one = json_pack("{s:s, s:i}", "query", G.queries[3], "k", 10);
  char *b = json_dumps(one, JSON_COMPACT);
  json_decref(one);
  j = http_json(G.ca.http, "POST", "/v1/search", b, &st);
  free(b);
  assert_int_equal(st, 200);
  compare(json_object_get(j, "results"), &G.full[3], "single query");
  json_decref(j);

  /* gRPC: the same answers. */
  Japlaid__V1__SearchRequest req = JAPLAID__V1__SEARCH_REQUEST__INIT;
  Japlaid__V1__SearchParams prm = JAPLAID__V1__SEARCH_PARAMS__INIT;
  req.n_queries = (size_t)G.nq;
  req.queries = G.queries;
  req.params = &prm;          /* k = 0: the default, 10 */
  ProtobufCMessage *m;
  grpc_status_code gst;
  int rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Search", &req.base,
                           &japlaid__v1__search_response__descriptor, NULL, T_MS, &m, &gst);
  if (rc < 0) fail_msg("gRPC Search: %s", jp_errmsg(rc));
  const Japlaid__V1__SearchResponse *r = (const Japlaid__V1__SearchResponse *)m;
  assert_int_equal(r->n_results, G.nq);
  assert_false(r->degraded);
  assert_int_equal(r->coverage->partitions_answered, 2);
  for (int q = 0; q < G.nq; q++) {
    assert_int_equal(r->results[q]->n_hits, G.full[q].n);
    for (size_t i = 0; i < r->results[q]->n_hits; i++) {
      assert_true(fabsf(r->results[q]->hits[i]->score - G.full[q].h[i].score) <= 1e-5f);
      assert_int_equal(r->results[q]->hits[i]->rank, i + 1);
    }
  }
  protobuf_c_message_free_unpacked(m, NULL);
}

static void rerank_encode_stats_health(void **state)
{
  (void)state;
  int st;
  /* Traffic of its own for the request counters checked below. */
  for (int i = 0; i < 5; i++) {
    json_t *j = search_all(G.ca.http, 3, NULL, &st);
    assert_int_equal(st, 200);
    json_decref(j);
  }
  /* Rerank: the text that is the query itself ranks first. */
  json_t *body = json_pack("{s:s, s:[s,s,s], s:i}", "query", "梅雨前線の停滞", "documents",
                           "ラオスの首都はヴィエンチャンである。", "梅雨前線が停滞すると長雨になる。",
                           "富士山は日本一高い山である。", "k", 2);
  char *b = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  json_t *j = http_json(G.ca.http, "POST", "/v1/rerank", b, &st);
  free(b);
  assert_int_equal(st, 200);
  json_t *res = json_object_get(j, "results");
  assert_int_equal(json_array_size(res), 2);
  assert_int_equal(jint(json_array_get(res, 0), "result_index"), 1);
  assert_int_equal(jint(json_array_get(res, 0), "rank"), 1);
  assert_true(json_number_value(json_object_get(json_array_get(res, 0), "score")) >
              json_number_value(json_object_get(json_array_get(res, 1), "score")));
  json_decref(j);

  /* Encode: query_maxlen x dim vectors for a query; rows of norm 1 or 0. */
  j = http_json(G.ca.http, "POST", "/v1/encode",
                "{\"texts\": [\"梅雨とは何か\"], \"kind\": \"query\"}", &st);
  assert_int_equal(st, 200);
  json_t *e0 = json_array_get(json_object_get(j, "embeddings"), 0);
  assert_int_equal(jint(e0, "n_tokens"), 32);
  assert_int_equal(jint(e0, "dim"), 128);
  json_t *rows = json_object_get(e0, "vectors");
  assert_int_equal(json_array_size(rows), 32);
  int unit = 0;
  for (size_t t = 0; t < 32; t++) {
    double s = 0;
    json_t *row = json_array_get(rows, t);
    assert_int_equal(json_array_size(row), 128);
    for (size_t d = 0; d < 128; d++) s += pow(json_number_value(json_array_get(row, d)), 2);
    assert_true(fabs(s - 1) < 1e-3 || s < 1e-6);
    unit += fabs(s - 1) < 1e-3;
  }
  assert_true(unit >= 3);            /* [CLS]-free real tokens of the text are unit rows */
  assert_int_equal(strlen(jstr(j, "model_identity")), 32);
  json_decref(j);
  j = http_json(G.ca.http, "POST", "/v1/encode", "{\"texts\": [\"梅雨とは何か\", \"富士山\"]}", &st);
  assert_int_equal(st, 200);
  assert_int_equal(json_array_size(json_object_get(j, "embeddings")), 2);
  assert_true(jint(json_array_get(json_object_get(j, "embeddings"), 1), "n_tokens") >= 1);
  json_decref(j);

  /* Stats: both partitions, the corpus' documents. */
  j = http_json(G.ca.http, "GET", "/v1/stats", NULL, &st);
  assert_int_equal(st, 200);
  assert_int_equal(jint(j, "n_documents"), N_DOCS);
  assert_int_equal(json_array_size(json_object_get(j, "partitions")), 2);
  check_coverage(j, 2, 2);
  json_t *reps = json_object_get(j, "replicas");
  assert_int_equal(json_array_size(reps), 2);
  assert_string_equal(jstr(json_array_get(reps, 0), "state"), "live");
  json_decref(j);
  Japlaid__V1__StatsRequest sreq = JAPLAID__V1__STATS_REQUEST__INIT;
  ProtobufCMessage *m;
  int rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Stats", &sreq.base,
                           &japlaid__v1__stats_response__descriptor, NULL, T_MS, &m, NULL);
  if (rc < 0) fail_msg("gRPC Stats: %s", jp_errmsg(rc));
  const Japlaid__V1__StatsResponse *sr = (const Japlaid__V1__StatsResponse *)m;
  assert_int_equal(sr->n_documents, N_DOCS);
  assert_int_equal(sr->n_partitions, 2);
  assert_int_equal(sr->partitions[1]->stats->partition_id, 1);
  protobuf_c_message_free_unpacked(m, NULL);

  /* Health over gRPC, healthz, metrics. */
  int hs = -1;
  assert_int_equal(rpc_client_health(G.rpc, G.ca.grpc, "japlaid.v1.Search", 5000, &hs), 0);
  assert_int_equal(hs, RPC_HEALTH_SERVING);
  j = http_json(G.ca.http, "GET", "/healthz", NULL, &st);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(j, "status"), "ok");
  json_decref(j);
  char *mt = metrics_text(G.ca.http);
  assert_true(metric(mt, "japlaid_requests_total{endpoint=\"search\",transport=\"http\","
                         "code=\"200\"}") >= 5);
  assert_true(metric(mt, "japlaid_requests_total{endpoint=\"search\",transport=\"grpc\","
                         "code=\"OK\"}") >= 1);
  assert_true(metric(mt, "japlaid_request_duration_seconds_count{endpoint=\"search\","
                         "transport=\"http\"}") >= 5);
  char up[300];
  snprintf(up, sizeof up, "japlaid_shard_up{partition=\"1\",address=\"%s\"}", G.a[1].addr);
  assert_true(metric(mt, up) == 1);
  assert_true(metric(mt, "japlaid_partitions_live") == 2);
  assert_true(metric(mt, "japlaid_encoder_queries_total") >= G.nq);
  free(mt);
}

/* The i-th test id that routes to partition p of 2. */
static void id_for(int p, int i, char *out, size_t cap)
{
  for (int salt = 0;; salt++) {
    snprintf(out, cap, "new-%d-%d", i, salt);
    if ((int)jp_route_partition(out, strlen(out), 2) == p) return;
  }
}

/* Top hit of one query: document id and score (HTTP). */
static void top1(const char *query, char *doc, size_t cap, int *n_hits)
{
  json_t *q = json_pack("{s:s, s:i}", "query", query, "k", 10);
  char *b = json_dumps(q, JSON_COMPACT);
  json_decref(q);
  int st;
  json_t *j = http_json(G.ca.http, "POST", "/v1/search", b, &st);
  free(b);
  assert_int_equal(st, 200);
  json_t *res = json_object_get(j, "results");
  *n_hits = (int)json_array_size(res);
  snprintf(doc, cap, "%s", *n_hits ? jstr(json_array_get(res, 0), "document_id") : "");
  json_decref(j);
}

static int found_in_top10(const char *query, const char *id)
{
  json_t *q = json_pack("{s:s, s:i}", "query", query, "k", 10);
  char *b = json_dumps(q, JSON_COMPACT);
  json_decref(q);
  int st, found = 0;
  json_t *j = http_json(G.ca.http, "POST", "/v1/search", b, &st);
  free(b);
  assert_int_equal(st, 200);
  json_t *res = json_object_get(j, "results");
  for (size_t i = 0; i < json_array_size(res); i++)
    found |= !strcmp(jstr(json_array_get(res, i), "document_id"), id);
  json_decref(j);
  return found;
}

static void upsert_found_delete_gone(void **state)
{
  (void)state;
  static const char *texts[] = {"宇宙猫が月面でラーメンを食べる不思議な物語。",
                                "深海の図書館で司書のタコが古文書を整理している。",
                                "砂漠の真ん中に氷の城を建てた職人の記録。"};
  char ids[3][64], doc[64];
  int st, n;
  id_for(0, 0, ids[0], sizeof ids[0]);
  id_for(1, 1, ids[1], sizeof ids[1]);
  id_for(1, 2, ids[2], sizeof ids[2]);
  json_t *docs = json_array();
  for (int i = 0; i < 2; i++)
    json_array_append_new(docs, json_pack("{s:s, s:s, s:{s:s}}", "id", ids[i], "text", texts[i],
                                          "metadata", "group", "new"));
  /* A long document: 30 sentences, more than one passage of 253 tokens. */
  char longt[16384] = "";
  for (int i = 0; i < 30; i++)
    snprintf(longt + strlen(longt), sizeof longt - strlen(longt),
             "長い文書の第%d文では、氷の城と砂漠の職人と古い道具について詳しく説明している。", i);
  json_array_append_new(docs, json_pack("{s:s, s:s}", "id", "long-doc", "text", longt));
  json_t *body = json_pack("{s:o}", "documents", docs);
  char *b = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  json_t *j = http_json(G.ca.http, "POST", "/v1/documents", b, &st);
  free(b);
  if (st != 200) fail_msg("upsert: %d %s", st, j ? jstr(j, "error") : "");
  assert_int_equal(jint(j, "n_documents"), 3);
  assert_true(jint(j, "n_passages") > 3);       /* the long one was split */
  json_decref(j);

  for (int i = 0; i < 2; i++) {
    top1(texts[i], doc, sizeof doc, &n);
    assert_string_equal(doc, ids[i]);
  }
  assert_true(found_in_top10("砂漠の職人と古い道具", "long-doc"));

  /* gRPC upsert of the third, then replace the first's text. */
  Japlaid__V1__Document d = JAPLAID__V1__DOCUMENT__INIT;
  Japlaid__V1__Document *dp = &d;
  d.id = ids[2];
  d.text = (char *)texts[2];
  d.metadata = "{\"group\":\"grpc\"}";
  Japlaid__V1__UpsertRequest ur = JAPLAID__V1__UPSERT_REQUEST__INIT;
  ur.n_documents = 1;
  ur.documents = &dp;
  ProtobufCMessage *m;
  int rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Upsert", &ur.base,
                           &japlaid__v1__upsert_response__descriptor, NULL, T_MS, &m, NULL);
  if (rc < 0) fail_msg("gRPC Upsert: %s", jp_errmsg(rc));
  assert_int_equal(((Japlaid__V1__UpsertResponse *)m)->n_documents, 1);
  protobuf_c_message_free_unpacked(m, NULL);
  top1(texts[2], doc, sizeof doc, &n);
  assert_string_equal(doc, ids[2]);

  /* Delete two over HTTP (plus an id that never existed). */
  json_t *del = json_pack("{s:[s,s,s]}", "ids", ids[0], ids[1], "never-existed");
  b = json_dumps(del, JSON_COMPACT);
  json_decref(del);
  j = http_json(G.ca.http, "DELETE", "/v1/documents", b, &st);
  free(b);
  assert_int_equal(st, 200);
  assert_int_equal(jint(j, "n_deleted"), 2);
  json_decref(j);
  assert_false(found_in_top10(texts[0], ids[0]));
  assert_false(found_in_top10(texts[1], ids[1]));
  /* ... and the rest over gRPC. */
  char *gids[] = {ids[2], "long-doc"};
  Japlaid__V1__DeleteRequest dr = JAPLAID__V1__DELETE_REQUEST__INIT;
  dr.n_document_ids = 2;
  dr.document_ids = gids;
  rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Delete", &dr.base,
                       &japlaid__v1__delete_response__descriptor, NULL, T_MS, &m, NULL);
  if (rc < 0) fail_msg("gRPC Delete: %s", jp_errmsg(rc));
  assert_int_equal(((Japlaid__V1__DeleteResponse *)m)->n_deleted, 2);
  protobuf_c_message_free_unpacked(m, NULL);
  assert_false(found_in_top10(texts[2], ids[2]));
  assert_false(found_in_top10("砂漠の職人と古い道具", "long-doc"));

  /* Back to the corpus: the original answers again. */
  json_t *all = search_all(G.ca.http, 10, NULL, &st);
  for (int q = 0; q < G.nq; q++)
    compare(json_array_get(json_object_get(all, "results"), q), &G.full[q], "after delete");
  json_decref(all);
}

struct bad {
  const char *method, *path, *body;
  int status;
  const char *needle;         /* in the error message */
};

static void assert_serving(const char *why)
{
  int st;
  json_t *j = http_json(G.ca.http, "POST", "/v1/search", "{\"query\": \"梅雨\", \"k\": 3}", &st);
  if (st != 200) fail_msg("not serving after %s (status %d)", why, st);
  assert_int_equal(json_array_size(json_object_get(j, "results")), 3);
  json_decref(j);
}

static void bad_requests_keep_serving(void **state)
{
  (void)state;
  /* A 1 MB query and a 65-query batch. */
  size_t big = 1u << 20;
  char *q1m = malloc(big + 64);
  strcpy(q1m, "{\"query\": \"");
  size_t o = strlen(q1m);
  memset(q1m + o, 'a', big);
  strcpy(q1m + o + big, "\"}");
  char many[2048] = "{\"queries\": [";
  for (int i = 0; i < 65; i++) strcat(many, i ? ",\"q\"" : "\"q\"");
  strcat(many, "]}");
  const struct bad cases[] = {
    {"POST", "/v1/search", "{\"query\": \"梅雨\", \"k\": ", 400, "invalid JSON"},
    {"POST", "/v1/search", "", 400, "invalid JSON"},
    {"POST", "/v1/search", "[1, 2]", 400, "expected a JSON object"},
    {"POST", "/v1/search", "{\"qeury\": \"x\"}", 400, "unknown field \"qeury\""},
    {"POST", "/v1/search", "{\"query\": \"x\", \"k\": 0}", 400, "k: 0 is outside 1..1000"},
    {"POST", "/v1/search", "{\"query\": \"x\", \"k\": 100000}", 400, "outside 1..1000"},
    {"POST", "/v1/search", "{\"query\": \"x\", \"k\": \"ten\"}", 400, "k: must be an integer"},
    {"POST", "/v1/search", "{\"query\": \"\"}", 400, "query: must not be empty"},
    {"POST", "/v1/search", q1m, 400, "the limit is 8192 bytes"},
    {"POST", "/v1/search", many, 400, "1..64"},
    {"POST", "/v1/search", "{\"query\": \"x\", \"queries\": [\"y\"]}", 400, "exactly one"},
    {"POST", "/v1/search", "{\"query\": 5}", 400, "query: must be a string"},
    {"POST", "/v1/search", "{\"query\": \"x\", \"filters\": 3}", 400, "filters"},
    {"POST", "/v1/search", "{\"query\": \"x\", \"ndocs\": 1000000}", 400, "ndocs"},
    {"POST", "/v1/search", "{\"query\": \"a\\u0000b\"}", 400, "NUL"},
    {"POST", "/v1/search", "{\"query\": \"x\", \"ncells\": 99999999}", 400, "ncells"},
    {"POST", "/v1/rerank", "{\"query\": \"x\", \"documents\": [\"a\"], \"k\": 2}", 400,
     "above the number of documents"},
    {"POST", "/v1/encode", "{\"texts\": [\"a\"], \"kind\": \"word\"}", 400, "kind"},
    {"POST", "/v1/documents", "{\"documents\": []}", 400, "documents"},
    {"POST", "/v1/documents", "{\"documents\": [{\"id\": \"a\", \"text\": \"x\"}, "
                              "{\"id\": \"a\", \"text\": \"y\"}]}", 400, "repeats"},
    {"POST", "/v1/documents", "{\"documents\": [{\"id\": \"a\", \"text\": \"x\", "
                              "\"metadata\": [1]}]}", 400, "metadata"},
    {"DELETE", "/v1/documents", "{\"ids\": \"a\"}", 400, "ids"},
    {"GET", "/v1/nothing", NULL, 404, "no endpoint"},
    {"PUT", "/v1/search", "{}", 405, "not allowed"},
    {"GET", "/v1/documents", NULL, 405, "POST, DELETE"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct bad *c = &cases[i];
    int st;
    json_t *j = http_json(G.ca.http, c->method, c->path, c->body, &st);
    if (st != c->status)
      fail_msg("case %zu (%s %s): status %d, expected %d", i, c->method, c->path, st, c->status);
    if (!j) fail_msg("case %zu: the error body is not JSON", i);
    if (!strstr(jstr(j, "error"), c->needle))
      fail_msg("case %zu: error '%s' lacks '%s'", i, jstr(j, "error"), c->needle);
    json_decref(j);
  }
  free(q1m);
  assert_serving("bad JSON requests");

  /* One keep-alive connection: good, bad, good - all answered on it. */
  struct itest_http_conn c;
  assert_int_equal(itest_http_connect(&c, G.ca.http, T_MS), 0);
  const char *seq[] = {"{\"query\": \"梅雨\", \"k\": 2}", "{nope", "{\"query\": \"梅雨\", \"k\": 2}"};
  const int want[] = {200, 400, 200};
  for (int i = 0; i < 3; i++) {
    int st;
    char *resp = NULL;
    assert_int_equal(itest_http_req(&c, "POST", "/v1/search", seq[i], strlen(seq[i]), &st, &resp,
                                    NULL, T_MS), 0);
    assert_int_equal(st, want[i]);
    free(resp);
  }
  /* Two requests in one write (pipelined). */
  const char *pb = "{\"query\": \"梅雨\", \"k\": 1}";
  char pipe2[512];
  snprintf(pipe2, sizeof pipe2,
           "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s"
           "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", strlen(pb), pb);
  int st, closes;
  char *resp = NULL;
  assert_int_equal(itest_http_raw(&c, pipe2, strlen(pipe2), &st, &resp, NULL, &closes, T_MS), 0);
  assert_int_equal(st, 200);
  assert_non_null(strstr(resp, "\"results\""));
  free(resp);
  assert_int_equal(itest_http_raw(&c, "", 0, &st, &resp, NULL, &closes, T_MS), 0);
  assert_int_equal(st, 200);
  assert_non_null(strstr(resp, "\"status\""));
  free(resp);
  itest_http_close(&c);

  /* Transport-level refusals: answered, then the connection is closed. */
  struct {
    const char *raw;
    int status;
  } raw[] = {
    {"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 9437184\r\n\r\n{", 413},
    {"POST /v1/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     411},
    {"THIS IS NOT HTTP\r\n\r\n", 400},
  };
  for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
    assert_int_equal(itest_http_connect(&c, G.ca.http, T_MS), 0);
    resp = NULL;
    if (itest_http_raw(&c, raw[i].raw, strlen(raw[i].raw), &st, &resp, NULL, &closes, T_MS) < 0)
      fail_msg("raw case %zu: no answer", i);
    assert_int_equal(st, raw[i].status);
    assert_true(closes);
    free(resp);
    itest_http_close(&c);
  }
  /* A real 9 MiB body, sent in full: 413 naming the limit. */
  size_t nb = 9u << 20;
  char *huge = malloc(nb + 1);
  memset(huge, ' ', nb);
  huge[nb] = '\0';
  json_t *j = http_json(G.ca.http, "POST", "/v1/search", huge, &st);
  free(huge);
  assert_int_equal(st, 413);
  assert_non_null(strstr(jstr(j, "error"), "8388608"));
  json_decref(j);
  assert_serving("transport refusals");

  /* gRPC: malformed protobuf, bad fields, too large, unknown method. */
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  rpc_call *call;
  int tag;
  struct rpc_call_opts co = {0};
  co.deadline_ns = rpc_deadline_in_ms(T_MS);
  const char garbage[] = "\xff\xff\xff\xff\x0f\x0a\x80";
  assert_int_equal(rpc_call_start_raw(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Search", garbage,
                                      sizeof garbage - 1, &co, cq, &tag, &call), 0);
  grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  assert_int_equal(ev.type, GRPC_OP_COMPLETE);
  const char *det;
  assert_int_equal(rpc_call_status(call, &det), GRPC_STATUS_INVALID_ARGUMENT);
  rpc_call_destroy(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);

  struct {
    uint32_t k;
    size_t qbytes;       /* 0: "梅雨" */
    size_t nq;
    grpc_status_code want;
    const char *needle;
  } gc[] = {
    {1001, 0, 1, GRPC_STATUS_INVALID_ARGUMENT, "k: 1001"},
    {10, 0, 0, GRPC_STATUS_INVALID_ARGUMENT, "queries"},
    {10, 1u << 20, 1, GRPC_STATUS_INVALID_ARGUMENT, "the limit is 8192"},
    {10, 5u << 20, 1, GRPC_STATUS_RESOURCE_EXHAUSTED, "limit"},
  };
  for (size_t i = 0; i < sizeof gc / sizeof gc[0]; i++) {
    Japlaid__V1__SearchRequest req = JAPLAID__V1__SEARCH_REQUEST__INIT;
    Japlaid__V1__SearchParams prm = JAPLAID__V1__SEARCH_PARAMS__INIT;
    char *q = gc[i].qbytes ? malloc(gc[i].qbytes + 1) : strdup("梅雨");
    if (gc[i].qbytes) {
      memset(q, 'a', gc[i].qbytes);
      q[gc[i].qbytes] = '\0';
    }
    prm.k = gc[i].k;
    req.params = &prm;
    req.n_queries = gc[i].nq;
    req.queries = &q;
    ProtobufCMessage *m = NULL;
    grpc_status_code gs;
    int rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Search", &req.base,
                             &japlaid__v1__search_response__descriptor, NULL, T_MS, &m, &gs);
    free(q);
    assert_true(rc < 0);
    if (gs != gc[i].want) fail_msg("gRPC case %zu: status %d, expected %d", i, gs, gc[i].want);
    if (!strstr(jp_errmsg(rc), gc[i].needle))
      fail_msg("gRPC case %zu: '%s' lacks '%s'", i, jp_errmsg(rc), gc[i].needle);
  }
  Japlaid__V1__StatsRequest sr = JAPLAID__V1__STATS_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  grpc_status_code gs;
  assert_true(rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Nope", &sr.base,
                              &japlaid__v1__stats_response__descriptor, NULL, T_MS, &m, &gs) < 0);
  assert_int_equal(gs, GRPC_STATUS_UNIMPLEMENTED);

  /* Still serving, on both transports. */
  assert_serving("gRPC errors");
  Japlaid__V1__SearchRequest req = JAPLAID__V1__SEARCH_REQUEST__INIT;
  req.n_queries = 1;
  req.queries = &G.queries[0];
  int rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Search", &req.base,
                           &japlaid__v1__search_response__descriptor, NULL, T_MS, &m, &gs);
  if (rc < 0) fail_msg("gRPC Search after errors: %s", jp_errmsg(rc));
  assert_int_equal(((Japlaid__V1__SearchResponse *)m)->results[0]->n_hits, 10);
  protobuf_c_message_free_unpacked(m, NULL);
  /* The errors were counted as such. */
  char *mt = metrics_text(G.ca.http);
  assert_true(metric(mt, "japlaid_requests_total{endpoint=\"search\",transport=\"http\","
                         "code=\"400\"}") >= 10);
  assert_true(metric(mt, "japlaid_request_errors_total{endpoint=\"search\","
                         "transport=\"grpc\"}") >= 2);
  free(mt);
}

static void shard_killed_degrades_then_recovers(void **state)
{
  (void)state;
  char p0[700];
  snprintf(p0, sizeof p0, "%s/p0", G.parts);
  char *only0[] = {p0};
  struct hits e0[NQ];
  embedded(only0, 1, 10, NULL, e0);
  int st;

  /* A hung shard (SIGSTOP): the request's own deadline ends the wait and
   * the partition is reported missing (by the deadline, or as down once
   * the health probe has timed out too). */
  kill(G.a[1].pid, SIGSTOP);
  json_t *hj = search_all(G.ca.http, 10, "{\"deadline_ms\": 1500}", &st);
  kill(G.a[1].pid, SIGCONT);
  if (st != 200) fail_msg("search with a hung shard: status %d", st);
  check_coverage(hj, 2, 1);
  json_t *hf = json_array_get(json_object_get(json_object_get(hj, "coverage"), "failed"), 0);
  assert_int_equal(jint(hf, "partition"), 1);
  if (!strstr(jstr(hf, "reason"), "deadline") && !strstr(jstr(hf, "reason"), "no live replica"))
    fail_msg("hung shard reason: %s", jstr(hf, "reason"));
  for (int q = 0; q < G.nq; q++)
    compare(json_array_get(json_object_get(hj, "results"), q), &e0[q], "hung shard");
  json_decref(hj);
  await_healthz(G.ca.http, 200);

  kill9(&G.a[1].pid);
  for (int round = 0; round < 5; round++) {
    json_t *j = search_all(G.ca.http, 10, NULL, &st);
    if (st != 200) fail_msg("search with a dead shard: status %d", st);
    check_coverage(j, 2, 1);
    json_t *f0 = json_array_get(json_object_get(json_object_get(j, "coverage"), "failed"), 0);
    assert_int_equal(jint(f0, "partition"), 1);
    assert_true(strlen(jstr(f0, "reason")) > 0);
    for (int q = 0; q < G.nq; q++)
      compare(json_array_get(json_object_get(j, "results"), q), &e0[q], "degraded");
    json_decref(j);
  }
  /* Full coverage demanded: an error naming the partition. */
  json_t *j = search_all(G.ca.http, 10, "{\"require_full_coverage\": true}", &st);
  assert_int_equal(st, 503);
  assert_non_null(strstr(jstr(j, "error"), "partition 1"));
  assert_non_null(json_object_get(j, "coverage"));
  json_decref(j);
  Japlaid__V1__SearchRequest req = JAPLAID__V1__SEARCH_REQUEST__INIT;
  req.n_queries = 1;
  req.queries = &G.queries[0];
  req.require_full_coverage = 1;
  ProtobufCMessage *m = NULL;
  grpc_status_code gs;
  int rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Search", &req.base,
                           &japlaid__v1__search_response__descriptor, NULL, T_MS, &m, &gs);
  assert_true(rc < 0);
  assert_int_equal(gs, GRPC_STATUS_UNAVAILABLE);
  assert_non_null(strstr(jp_errmsg(rc), "partition 1"));
  req.require_full_coverage = 0;
  rc = rpc_client_call(G.rpc, G.ca.grpc, "/japlaid.v1.Search/Search", &req.base,
                       &japlaid__v1__search_response__descriptor, NULL, T_MS, &m, &gs);
  if (rc < 0) fail_msg("degraded gRPC search: %s", jp_errmsg(rc));
  assert_true(((Japlaid__V1__SearchResponse *)m)->degraded);
  assert_int_equal(((Japlaid__V1__SearchResponse *)m)->coverage->failed[0]->partition, 1);
  protobuf_c_message_free_unpacked(m, NULL);

  /* Health and writes. */
  j = http_json(G.ca.http, "GET", "/healthz", NULL, &st);
  assert_int_equal(st, 503);
  json_decref(j);
  char id1[64];
  id_for(1, 7, id1, sizeof id1);
  json_t *body = json_pack("{s:[{s:s, s:s}]}", "documents", "id", id1, "text", "書けない文書");
  char *b = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  j = http_json(G.ca.http, "POST", "/v1/documents", b, &st);
  free(b);
  assert_int_equal(st, 503);
  assert_non_null(strstr(jstr(j, "error"), G.a[1].addr));
  json_decref(j);
  char *mt = metrics_text(G.ca.http);
  assert_true(metric(mt, "japlaid_degraded_answers_total") >= 6);
  assert_true(metric(mt, "japlaid_partitions_live") == 1);
  free(mt);

  /* Restart on the same port: full answers again. */
  char listen[128];
  snprintf(listen, sizeof listen, "%s", G.a[1].addr);
  char p1[700];
  snprintf(p1, sizeof p1, "%s/p1", G.parts);
  shard_start(&G.a[1], p1, listen);
  await_healthz(G.ca.http, 200);
  j = search_all(G.ca.http, 10, NULL, &st);
  assert_int_equal(st, 200);
  check_coverage(j, 2, 2);
  for (int q = 0; q < G.nq; q++)
    compare(json_array_get(json_object_get(j, "results"), q), &G.full[q], "recovered");
  json_decref(j);
}

static void sigterm_exits_zero(void **state)
{
  (void)state;
  assert_serving("before SIGTERM");
  assert_int_equal(term_and_wait(&G.ca.pid), 0);
}

/* ---- cluster B: replicas, failover, refusal --------------------------------------------- */

struct stream {
  const char *http;
  atomic_int n, bad, stop;
  char why[600];
};

static void *stream_main(void *arg)
{
  struct stream *s = arg;
  json_t *body = json_object();
  json_t *qs = json_array();
  for (int q = 0; q < G.nq; q++) json_array_append_new(qs, json_string(G.queries[q]));
  json_object_set_new(body, "queries", qs);
  char *b = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  struct itest_http_conn c;
  int connected = 0;
  while (!atomic_load(&s->stop)) {
    if (!connected && itest_http_connect(&c, s->http, T_MS) == 0) connected = 1;
    int st = 0;
    char *resp = NULL;
    int rc = connected ? itest_http_req(&c, "POST", "/v1/search", b, strlen(b), &st, &resp,
                                        NULL, T_MS)
                       : -1;
    const char *problem = NULL;
    json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
    if (rc < 0) problem = "no answer";
    else if (st != 200) problem = "status";
    else if (!j || json_is_true(json_object_get(j, "degraded"))) problem = "degraded";
    else {
      json_t *res = json_object_get(j, "results");
      for (int q = 0; q < G.nq && !problem; q++) {
        json_t *arr = json_array_get(res, q);
        if ((int)json_array_size(arr) != G.full[q].n) problem = "hit count";
        for (int i = 0; !problem && i < G.full[q].n; i++)
          if (fabsf((float)json_number_value(json_object_get(json_array_get(arr, i), "score")) -
                    G.full[q].h[i].score) > 1e-5f)
            problem = "scores";
      }
    }
    if (problem && atomic_fetch_add(&s->bad, 1) == 0)
      snprintf(s->why, sizeof s->why, "request %d: %s (status %d): %.400s", atomic_load(&s->n),
               problem, st, resp ? resp : "");
    if (rc < 0 && connected) {
      itest_http_close(&c);
      connected = 0;
    }
    json_decref(j);
    free(resp);
    atomic_fetch_add(&s->n, 1);
  }
  if (connected) itest_http_close(&c);
  free(b);
  return NULL;
}

static json_t *replica_of(json_t *stats, const char *addr)
{
  json_t *reps = json_object_get(stats, "replicas");
  for (size_t i = 0; i < json_array_size(reps); i++)
    if (!strcmp(jstr(json_array_get(reps, i), "address"), addr)) return json_array_get(reps, i);
  return NULL;
}

static void replicas_fail_over_and_refuse(void **state)
{
  (void)state;
  struct shard_proc b[6];
  const char *names[] = {"p0a", "p0b", "p1a", "p1b"};
  char dir[700];
  for (int i = 0; i < 4; i++) {
    snprintf(dir, sizeof dir, "%s/%s", G.bparts, names[i]);
    shard_start(&b[i], dir, "127.0.0.1:0");
  }
  shard_start(&b[4], G.fpart, "127.0.0.1:0");    /* another model */
  shard_start(&b[5], G.ypart, "127.0.0.1:0");    /* another codebook */
  char cj[600];
  path_in(cj, sizeof cj, "cluster-b.json");
  /* The odd replicas are listed last, so the tie-free vote is 4 to 1. */
  struct shard_proc *reps[] = {&b[0], &b[1], &b[4], &b[2], &b[3], &b[5]};
  int nr[] = {3, 3};
  write_cluster(cj, 2, reps, nr);
  struct coord_proc cb;
  coord_start(&cb, cj, "b", "20000");
  await_healthz(cb.http, 200);

  /* Both odd replicas are refused, with the reason. */
  int st;
  json_t *s = NULL;
  for (int i = 0; i < 100; i++) {
    json_decref(s);
    s = http_json(cb.http, "GET", "/v1/stats", NULL, &st);
    json_t *f = replica_of(s, b[4].addr), *y = replica_of(s, b[5].addr);
    if (f && y && !strcmp(jstr(f, "state"), "refused") && !strcmp(jstr(y, "state"), "refused"))
      break;
    jp_sleep_ms(100);
  }
  json_t *f = replica_of(s, b[4].addr), *y = replica_of(s, b[5].addr);
  assert_non_null(f);
  assert_non_null(y);
  assert_string_equal(jstr(f, "state"), "refused");
  assert_non_null(strstr(jstr(f, "reason"), "model identity"));
  assert_string_equal(jstr(y, "state"), "refused");
  assert_non_null(strstr(jstr(y, "reason"), "codebook"));
  for (int i = 0; i < 4; i++) assert_string_equal(jstr(replica_of(s, b[i].addr), "state"), "live");
  json_decref(s);
  char *log = NULL;
  {
    FILE *lf = fopen(cb.log, "r");
    assert_non_null(lf);
    log = calloc(1, 1 << 20);
    size_t nread = fread(log, 1, (1 << 20) - 1, lf);
    log[nread] = '\0';
    fclose(lf);
  }
  assert_non_null(strstr(log, " E "));        /* refusals are logged at error level */
  assert_non_null(strstr(log, "refused: model identity"));
  free(log);

  /* Never queried: answers equal the embedded ones, no shard call fails. */
  for (int r = 0; r < 10; r++) {
    json_t *j = search_all(cb.http, 10, NULL, &st);
    assert_int_equal(st, 200);
    check_coverage(j, 2, 2);
    for (int q = 0; q < G.nq; q++)
      compare(json_array_get(json_object_get(j, "results"), q), &G.full[q], "cluster B");
    json_decref(j);
  }
  char *mt = metrics_text(cb.http);
  assert_true(metric(mt, "japlaid_shard_call_errors_total") == 0);
  char g[300];
  snprintf(g, sizeof g, "japlaid_shard_refused{partition=\"0\",address=\"%s\"}", b[4].addr);
  assert_true(metric(mt, g) == 1);
  snprintf(g, sizeof g, "japlaid_shard_up{partition=\"1\",address=\"%s\"}", b[5].addr);
  assert_true(metric(mt, g) == 0);
  free(mt);
  /* Writes need every replica: a refused one blocks them (strict). */
  json_t *j = http_json(cb.http, "POST", "/v1/documents",
                        "{\"documents\": [{\"id\": \"x\", \"text\": \"y\"}]}", &st);
  assert_int_equal(st, 503);
  assert_non_null(strstr(jstr(j, "error"), "refused"));
  json_decref(j);

  /* kill -9 one replica of each partition during a stream of queries. */
  struct stream sm;
  memset(&sm, 0, sizeof sm);
  sm.http = cb.http;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, stream_main, &sm), 0);
  while (atomic_load(&sm.n) < 20) jp_sleep_ms(10);
  kill9(&b[2].pid);                           /* p1a */
  int n1 = atomic_load(&sm.n);
  while (atomic_load(&sm.n) < n1 + 30) jp_sleep_ms(10);
  kill9(&b[1].pid);                           /* p0b */
  int n2 = atomic_load(&sm.n);
  while (atomic_load(&sm.n) < n2 + 30) jp_sleep_ms(10);
  atomic_store(&sm.stop, 1);
  pthread_join(th, NULL);
  if (atomic_load(&sm.bad)) fail_msg("%d of %d requests failed; first: %s", atomic_load(&sm.bad),
                                     atomic_load(&sm.n), sm.why);
  s = http_json(cb.http, "GET", "/v1/stats", NULL, &st);
  assert_string_equal(jstr(replica_of(s, b[2].addr), "state"), "down");
  assert_string_equal(jstr(replica_of(s, b[0].addr), "state"), "live");
  json_decref(s);
  printf("stream: %d requests, 2 replicas killed, 0 failed\n", atomic_load(&sm.n));

  assert_int_equal(term_and_wait(&cb.pid), 0);
  for (int i = 0; i < 6; i++) kill9(&b[i].pid);
}

/* ---- configuration errors ------------------------------------------------------------- */

static void bad_cluster_json_exits_2(void **state)
{
  (void)state;
  struct {
    const char *json, *needle;
  } cases[] = {
    {"{\"partitions\": []}", "1.."},
    {"{\"partitions\": [{\"id\": 1, \"replicas\": [\"127.0.0.1:1\"]}]}", "outside 0..0"},
    {"{\"partitions\": [{\"id\": 0, \"replicas\": [\"127.0.0.1:1\"]}, "
     "{\"id\": 0, \"replicas\": [\"127.0.0.1:2\"]}]}", "listed twice"},
    {"{\"partitions\": [{\"id\": 0, \"replicas\": []}]}", "replicas"},
    {"{\"partitions\": [{\"id\": 0, \"replicas\": [\"nohostport\"]}]}", "host:port"},
    {"{\"partitions\": [{\"id\": 0, \"replicas\": [\"127.0.0.1:99999\"]}]}", "port"},
    {"{\"partitions\": [{\"id\": 0, \"replicas\": [\"127.0.0.1:5\", \"127.0.0.1:5\"]}]}",
     "twice"},
    {"{\"partitions\": ", "invalid JSON"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char cj[600], log[600];
    path_in(cj, sizeof cj, "bad-cluster.json");
    snprintf(log, sizeof log, "%s/bad-cluster-%zu.log", G.tmp, i);
    FILE *f = fopen(cj, "w");
    fputs(cases[i].json, f);
    fclose(f);
    char *argv[] = {(char *)G.coord_bin, "--cluster", cj, "--model", G.model, NULL};
    int st = itest_run(argv, NULL, log, NULL, T_MS);
    assert_int_equal(st, 2);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(jp_read_file(log, 1 << 20, &text, &len), 0);
    if (!strstr(text, cases[i].needle))
      fail_msg("case %zu: '%s' lacks '%s'", i, text, cases[i].needle);
    jp_free(text);
  }
}

int main(int argc, char **argv)
{
  if (argc < 4) {
    fprintf(stderr, "usage: %s japlaid-shard japlaid-coordinator jp_make_parts\n", argv[0]);
    return 2;
  }
  G.shard_bin = argv[1];
  G.coord_bin = argv[2];
  G.parts_bin = argv[3];
  G.cli = getenv("JAPLAID_BIN");
  if (!G.cli || access(G.cli, X_OK) != 0) {
    fprintf(stderr, "skipped: $JAPLAID_BIN (the japlaid CLI) is not set\n");
    return JP_TEST_SKIP;
  }
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(search_equals_embedded),
    cmocka_unit_test(rerank_encode_stats_health),
    cmocka_unit_test(upsert_found_delete_gone),
    cmocka_unit_test(bad_requests_keep_serving),
    cmocka_unit_test(shard_killed_degrades_then_recovers),
    cmocka_unit_test(sigterm_exits_zero),
    cmocka_unit_test(replicas_fail_over_and_refuse),
    cmocka_unit_test(bad_cluster_json_exits_2),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
