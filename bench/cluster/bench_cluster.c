/* bench_cluster.c: the in-process halves of the cluster benchmark (run.sh
 * drives it, README.md explains the comparison).
 *
 *   bench_cluster embedded --model M --index DIR --queries FILE [--n N] [--k K]
 *                          [--out FILE]
 *       The embedded path, one query at a time, in this process: encode the
 *       query (jp_encode_queries), search every partition of DIR
 *       (DIR/part-NNNN, or DIR itself) with one thread each (as a shard
 *       searches), merge by score (ties: smaller passage id, the
 *       coordinator's rule). Per query it times the whole ("with
 *       encoding") and the part after encoding ("without encoding"), with
 *       the partitions searched at the same time on a pool of one thread
 *       per partition (the parallelism a cluster has); and the same
 *       searches with the partitions one after the other ("sequential",
 *       what `japlaid search` per partition amounts to). --order 0|1 picks
 *       which of the two search passes runs first.
 *   bench_cluster fanout --model M --cluster cluster.json --queries FILE
 *                        [--n N] [--k K] [--out FILE]
 *       The cluster path without encoding and without the coordinator: the
 *       queries are encoded first (not timed); then per query, Shard/Search
 *       of the pre-encoded vectors to the first replica of every partition
 *       at once (async gRPC on one completion queue, as the coordinator
 *       fans out), wait for all, merge. Times each query.
 * Both print one JSON line of percentiles in milliseconds; --out writes the
 * merged top-k passage ids per query (one line each), so run.sh can check
 * that both paths return the same answers.
 *
 * Not a test: no assertions; timings are whatever the machine gives. */
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "index/store.h"
#include "japlaid/v1/shard.pb-c.h"
#include "model/model.h"
#include "rpc/client.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/pool.h"

#define MAX_PARTS 64
#define MAX_K 1000
/* Queries run once, untimed, before the measured ones: page in the index,
 * warm the encoder's buffers and the gRPC connections. */
#define WARMUP_QUERIES 5
/* Per-query arena cap: k hits with their passages. */
#define ARENA_LIMIT ((size_t)64 << 20)
#define CALL_DEADLINE_MS 10000

struct opts {
  const char *model, *index, *cluster, *queries, *out;
  int n, k;
  int order;                          /* embedded: 0 parallel pass first, 1 sequential first */
};

struct hit {
  uint64_t pid;
  float score;
};

static int hit_cmp(const void *a, const void *b)
{
  const struct hit *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return (x->pid > y->pid) - (x->pid < y->pid);
}

static int dbl_cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
  if (n <= 0) return NAN;
  int r = (int)ceil(p * n);
  return v[r ? r - 1 : 0];
}

static int die(const char *what, int rc)
{
  fprintf(stderr, "bench_cluster: %s: %s\n", what, jp_errmsg(rc));
  return 1;
}

/* Up to n queries (qid<TAB>query or query per line). */
static int load_queries(const char *path, int n, char ***out, size_t **lens, int *nq)
{
  FILE *f = fopen(path, "r");
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  if (!f) return jp_err(JP_EIO, "cannot read %s", path);
  *out = jp_calloc((size_t)n, sizeof **out);
  *lens = jp_calloc((size_t)n, sizeof **lens);
  *nq = 0;
  if (!*out || !*lens) { fclose(f); return JP_ENOMEM; }
  while (*nq < n && (len = getline(&line, &cap, f)) >= 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    char *t = memchr(line, '\t', (size_t)len);
    t = t ? t + 1 : line;
    if (!*t) continue;
    if (!((*out)[*nq] = jp_strdup(t))) break;
    (*lens)[*nq] = strlen(t);
    (*nq)++;
  }
  free(line);
  fclose(f);
  return *nq ? 0 : jp_err(JP_EINVAL, "%s holds no query", path);
}

static void write_top(FILE *f, const struct hit *h, int n)
{
  for (int i = 0; i < n; i++) fprintf(f, "%s%" PRIu64, i ? "," : "", h[i].pid);
  fputc('\n', f);
}

static void print_pcts(const char *prefix, double *v, int n, int comma)
{
  qsort(v, (size_t)n, sizeof *v, dbl_cmp);
  printf("%s\"%s_p50\":%.3f,\"%s_p90\":%.3f,\"%s_p99\":%.3f", comma ? "," : "", prefix,
         pct(v, n, 0.5), prefix, pct(v, n, 0.9), prefix, pct(v, n, 0.99));
}

/* ---- embedded ------------------------------------------------------------------------ */

static int open_parts(const char *dir, jp_store **s, int *np)
{
  struct jp_store_opts so;
  char path[4096], current[4200];
  int rc;
  jp_store_opts_default(&so);
  so.read_only = 1;
  *np = 0;
  for (int p = 0; p < MAX_PARTS; p++) {
    snprintf(path, sizeof path, "%s/part-%04d", dir, p);
    snprintf(current, sizeof current, "%s/CURRENT", path);
    FILE *f = fopen(current, "r");
    if (!f) break;
    fclose(f);
    if ((rc = jp_store_open(path, &so, &s[*np])) < 0) return rc;
    (*np)++;
  }
  if (*np == 0) {
    if ((rc = jp_store_open(dir, &so, &s[0])) < 0) return rc;
    *np = 1;
  }
  return 0;
}

/* One partition's search of one query (a pool task). */
struct psearch {
  jp_store **s;
  const float *Q;
  int nq;
  const struct jp_search_params *sp;
  struct jp_arena *a;                 /* one per partition */
  struct jp_result **res;
  int *nr, *rc;
};

static void psearch_one(void *ctx, int p, int worker)
{
  struct psearch *ps = ctx;
  (void)worker;
  jp_arena_reset(&ps->a[p]);
  ps->rc[p] = jp_store_search(ps->s[p], ps->Q, ps->nq, ps->sp, NULL, NULL, &ps->a[p], &ps->res[p],
                              &ps->nr[p]);
}

/* Search every partition for query Q (parallel on the pool, or one after
 * the other) and merge into hits; returns the number of hits or a JP_E*
 * code. */
static int search_all(struct psearch *ps, jp_pool *pool, int np, int parallel, struct hit *hits)
{
  int nh = 0;
  if (parallel) {
    jp_pool_run(pool, np, psearch_one, ps);
  } else {
    for (int p = 0; p < np; p++) psearch_one(ps, p, 0);
  }
  for (int p = 0; p < np; p++) {
    if (ps->rc[p] < 0) return ps->rc[p];
    for (int j = 0; j < ps->nr[p]; j++)
      hits[nh++] = (struct hit){ps->res[p][j].passage_id, ps->res[p][j].score};
  }
  qsort(hits, (size_t)nh, sizeof *hits, hit_cmp);
  return nh;
}

static int cmd_embedded(const struct opts *o)
{
  jp_store *s[MAX_PARTS] = {0};
  jp_model *m = NULL;
  jp_encoder *enc = NULL;
  struct jp_model_opts mo;
  struct jp_search_params sp;
  struct jp_arena a[MAX_PARTS];
  struct jp_result *res[MAX_PARTS];
  int nr[MAX_PARTS], prc[MAX_PARTS];
  jp_pool *pool = NULL;
  char **qt;
  size_t *ql;
  int nq, np = 0, rc;
  FILE *out = NULL;

  if ((rc = load_queries(o->queries, o->n + WARMUP_QUERIES, &qt, &ql, &nq)) < 0)
    return die("queries", rc);
  jp_model_opts_default(&mo);
  if ((rc = jp_model_open(o->model, &mo, &m)) < 0) return die(o->model, rc);
  if ((rc = jp_encoder_create(m, &enc)) < 0) return die("encoder", rc);
  if ((rc = open_parts(o->index, s, &np)) < 0) return die(o->index, rc);
  const struct jp_model_info *mi = jp_model_get_info(m);
  size_t qsz = (size_t)mi->colbert.query_maxlen * (size_t)mi->colbert.dim;
  float *Q = jp_malloc((size_t)nq * qsz * sizeof *Q);
  struct hit *hits = jp_malloc((size_t)np * (size_t)o->k * sizeof *hits);
  double *t_enc = jp_calloc((size_t)nq, sizeof(double));
  double *t_par = jp_calloc((size_t)nq, sizeof(double));
  double *t_seq = jp_calloc((size_t)nq, sizeof(double));
  double *t_with = jp_calloc((size_t)nq, sizeof(double));
  if (!Q || !hits || !t_enc || !t_par || !t_seq || !t_with) return die("buffers", JP_ENOMEM);
  if (o->out && !(out = fopen(o->out, "w"))) return die(o->out, JP_EIO);
  if ((rc = jp_pool_create(np, &pool)) < 0) return die("pool", rc);
  jp_search_params_init(&sp, o->k);
  for (int p = 0; p < np; p++) jp_arena_init(&a[p], 0, ARENA_LIMIT);
  struct psearch ps = {s, NULL, mi->colbert.query_maxlen, &sp, a, res, nr, prc};
  /* Three passes over the queries, each query once per pass, so no timed
   * search runs on caches its own twin just warmed: encoding, then the
   * two ways of searching, in the order --order gives (run.sh alternates
   * it between runs). The first WARMUP_QUERIES of each pass are not
   * counted. */
  for (int i = 0; i < nq; i++) {
    uint64_t t0 = jp_now_ns();
    const char *text = qt[i];
    if ((rc = jp_encode_queries(enc, &text, &ql[i], 1, Q + (size_t)i * qsz)) < 0)
      return die("encode", rc);
    t_enc[i] = (double)(jp_now_ns() - t0) / 1e6;
  }
  for (int pass = 0; pass < 2; pass++) {
    int parallel = o->order ? pass == 1 : pass == 0;
    for (int i = 0; i < nq; i++) {
      ps.Q = Q + (size_t)i * qsz;
      uint64_t t0 = jp_now_ns();
      int nh = search_all(&ps, pool, np, parallel, hits);
      double ms = (double)(jp_now_ns() - t0) / 1e6;
      if (nh < 0) return die("search", nh);
      (parallel ? t_par : t_seq)[i] = ms;
      if (parallel && out && i >= WARMUP_QUERIES) write_top(out, hits, nh < o->k ? nh : o->k);
    }
  }
  int w = nq > WARMUP_QUERIES ? WARMUP_QUERIES : 0, measured = nq - w;
  for (int i = 0; i < measured; i++) t_with[i] = t_enc[w + i] + t_par[w + i];
  printf("{\"path\":\"embedded\",\"model\":\"%s\",\"partitions\":%d,\"queries\":%d", mi->name, np,
         measured);
  print_pcts("with", t_with, measured, 1);
  print_pcts("encode", t_enc + w, measured, 1);
  print_pcts("without", t_par + w, measured, 1);
  print_pcts("without_seq", t_seq + w, measured, 1);
  printf("}\n");
  if (out) fclose(out);
  for (int p = 0; p < np; p++) jp_arena_fini(&a[p]);
  jp_pool_destroy(pool);
  for (int p = 0; p < np; p++) jp_store_close(s[p]);
  jp_encoder_destroy(enc);
  jp_model_close(m);
  return 0;
}

/* ---- fan-out to the shards ----------------------------------------------------------- */

static int cmd_fanout(const struct opts *o)
{
  char addr[MAX_PARTS][256];
  json_error_t e;
  json_t *cj = json_load_file(o->cluster, 0, &e), *parts, *pj;
  size_t idx;
  int np = 0, rc, nq;
  char **qt;
  size_t *ql;

  if (!cj) {
    fprintf(stderr, "bench_cluster: %s: %s\n", o->cluster, e.text);
    return 1;
  }
  parts = json_object_get(cj, "partitions");
  json_array_foreach(parts, idx, pj) {
    json_int_t id = json_integer_value(json_object_get(pj, "id"));
    const char *a0 = json_string_value(json_array_get(json_object_get(pj, "replicas"), 0));
    if (id < 0 || id >= MAX_PARTS || !a0) return die("cluster.json", JP_EINVAL);
    snprintf(addr[id], sizeof addr[id], "%s", a0);
    np++;
  }
  json_decref(cj);
  if ((rc = load_queries(o->queries, o->n + WARMUP_QUERIES, &qt, &ql, &nq)) < 0)
    return die("queries", rc);

  /* Encode every query first: this path is timed without encoding. */
  struct jp_model_opts mo;
  jp_model *m;
  jp_encoder *enc;
  jp_model_opts_default(&mo);
  if ((rc = jp_model_open(o->model, &mo, &m)) < 0) return die(o->model, rc);
  if ((rc = jp_encoder_create(m, &enc)) < 0) return die("encoder", rc);
  const struct jp_model_info *mi = jp_model_get_info(m);
  size_t qsz = (size_t)mi->colbert.query_maxlen * (size_t)mi->colbert.dim;
  float *Q = jp_malloc((size_t)nq * qsz * sizeof *Q);
  if (!Q) return die("buffers", JP_ENOMEM);
  for (int i = 0; i < nq; i++)
    if ((rc = jp_encode_queries(enc, (const char *const *)&qt[i], &ql[i], 1, Q + (size_t)i * qsz)) <
        0)
      return die("encode", rc);

  rpc_client *cli;
  struct rpc_client_opts co;
  rpc_client_opts_default(&co);
  if ((rc = rpc_client_create(&co, &cli)) < 0) return die("rpc client", rc);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  struct hit *hits = jp_malloc((size_t)np * (size_t)o->k * sizeof *hits);
  double *t = jp_calloc((size_t)nq, sizeof *t);
  rpc_call *calls[MAX_PARTS];
  FILE *out = o->out ? fopen(o->out, "w") : NULL;
  if (!hits || !t || (o->out && !out)) return die("buffers", JP_ENOMEM);
  Japlaid__V1__SearchParams params = JAPLAID__V1__SEARCH_PARAMS__INIT;
  params.k = (uint32_t)o->k;
  int measured = 0;
  for (int i = 0; i < nq; i++) {
    Japlaid__V1__ShardSearchRequest req = JAPLAID__V1__SHARD_SEARCH_REQUEST__INIT;
    req.n_queries = 1;
    req.nq = (uint32_t)mi->colbert.query_maxlen;
    req.dim = (uint32_t)mi->colbert.dim;
    req.queries.data = (uint8_t *)(Q + (size_t)i * qsz);
    req.queries.len = qsz * sizeof(float);
    req.params = &params;
    req.model_identity = (char *)mi->identity;
    uint64_t t0 = jp_now_ns();
    struct rpc_call_opts copt = {0};
    copt.deadline_ns = rpc_deadline_in_ms(CALL_DEADLINE_MS);
    for (int p = 0; p < np; p++)
      if ((rc = rpc_call_start(cli, addr[p], "/japlaid.v1.Shard/Search", &req.base, &copt, cq,
                               &calls[p], &calls[p])) < 0)
        return die(addr[p], rc);
    int nh = 0;
    for (int left = np; left > 0; left--) {
      grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
      rpc_call **slot = ev.tag;
      ProtobufCMessage *msg;
      if ((rc = rpc_call_result(*slot, &japlaid__v1__shard_search_response__descriptor, NULL, &msg,
                                NULL)) < 0)
        return die("Shard/Search", rc);
      const Japlaid__V1__ShardSearchResponse *r = (const Japlaid__V1__ShardSearchResponse *)msg;
      for (size_t h = 0; r->n_results && h < r->results[0]->n_hits; h++)
        hits[nh++] = (struct hit){r->results[0]->hits[h]->passage_id,
                                  r->results[0]->hits[h]->score};
      protobuf_c_message_free_unpacked(msg, NULL);
      rpc_call_destroy(*slot);
    }
    qsort(hits, (size_t)nh, sizeof *hits, hit_cmp);
    uint64_t t1 = jp_now_ns();
    if (i < WARMUP_QUERIES && nq > WARMUP_QUERIES) continue;
    t[measured++] = (double)(t1 - t0) / 1e6;
    if (out) write_top(out, hits, nh < o->k ? nh : o->k);
  }
  printf("{\"path\":\"fanout\",\"model\":\"%s\",\"partitions\":%d,\"queries\":%d", mi->name, np,
         measured);
  print_pcts("without", t, measured, 1);
  printf("}\n");
  if (out) fclose(out);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  rpc_client_destroy(cli);
  jp_encoder_destroy(enc);
  jp_model_close(m);
  return 0;
}

int main(int argc, char **argv)
{
  struct opts o = {0};
  o.n = 200;
  o.k = 10;
  if (argc < 2) goto usage;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "--model")) o.model = v;
    else if (!strcmp(a, "--index")) o.index = v;
    else if (!strcmp(a, "--cluster")) o.cluster = v;
    else if (!strcmp(a, "--queries")) o.queries = v;
    else if (!strcmp(a, "--out")) o.out = v;
    else if (!strcmp(a, "--n")) o.n = atoi(v);
    else if (!strcmp(a, "--k")) o.k = atoi(v);
    else if (!strcmp(a, "--order")) o.order = atoi(v) != 0;
    else goto usage;
  }
  if (!o.model || !o.queries || o.n < 1 || o.k < 1 || o.k > MAX_K) goto usage;
  if (!strcmp(argv[1], "embedded") && o.index) return cmd_embedded(&o);
  if (!strcmp(argv[1], "fanout") && o.cluster) return cmd_fanout(&o);
usage:
  fprintf(stderr, "usage: bench_cluster embedded --model M --index DIR --queries F [--n N] [--k K] "
                  "[--out F] [--order 0|1]\n"
                  "       bench_cluster fanout --model M --cluster cluster.json --queries F "
                  "[--n N] [--k K] [--out F]\n");
  return 2;
}
