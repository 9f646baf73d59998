/* metrics.c: counters for GET /metrics (Prometheus text format 0.0.4).
 *
 *   japlaid_requests_total{endpoint,transport,code}     answered requests
 *   japlaid_request_errors_total{endpoint,transport}    of which not 2xx / not OK
 *   japlaid_request_duration_seconds{endpoint,transport} histogram
 *   japlaid_degraded_answers_total                      searches with partial coverage
 *   japlaid_shard_call_errors_total, japlaid_failovers_total
 *   japlaid_shard_up{partition,address}                 1 live, 0 not
 *   japlaid_shard_refused{partition,address}            1 refused (other model/codebook)
 *   japlaid_shard_outstanding{partition,address}        calls in flight
 *   japlaid_partitions_live / japlaid_partitions_total
 *   japlaid_encoder_batches_total, japlaid_encoder_queries_total
 *   japlaid_searches_in_flight                          admitted, not yet answered
 *   japlaid_uptime_seconds
 *
 * Thread-safety: one mutex around the tables (a few increments per
 * request; far below the cost of a request). Allocation: one struct. */
#include "coord.h"

#include <string.h>

#include "util/clock.h"
#include "util/err.h"
#include "util/mem.h"

/* Latency buckets in seconds: 1 ms (a cached health check) to 10 s (a
 * large upsert); the default search deadline (1 s) falls in the middle. */
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
#define N_BUCKETS ((int)(sizeof buckets / sizeof buckets[0]))
/* Distinct status codes tracked per endpoint and transport; more would
 * mean a bug, and they are folded into "other". */
#define N_CODES 16

static const char *const ep_names[EP_N] = {"search",  "rerank",  "encode",  "upsert", "delete",
                                            "stats",   "healthz", "metrics", "other"};
static const char *const tr_names[TR_N] = {"http", "grpc"};

struct series {
  char code[N_CODES][24];
  uint64_t count[N_CODES];
  int n_codes;
  uint64_t errors;
  uint64_t hist[N_BUCKETS + 1];
  double sum;
  uint64_t n;
};

struct metrics {
  pthread_mutex_t mu;
  struct series s[EP_N][TR_N];
  uint64_t degraded, failovers, shard_errors;
};

int metrics_create(struct metrics **out)
{
  struct metrics *m = jp_calloc(1, sizeof *m);
  if (!m) return jp_err(JP_ENOMEM, "metrics");
  pthread_mutex_init(&m->mu, NULL);
  *out = m;
  return 0;
}

void metrics_destroy(struct metrics *m)
{
  if (!m) return;
  pthread_mutex_destroy(&m->mu);
  jp_free(m);
}

enum ep ep_of_kind(enum cop_kind k)
{
  switch (k) {
  case COP_SEARCH: return EP_SEARCH;
  case COP_RERANK: return EP_RERANK;
  case COP_ENCODE: return EP_ENCODE;
  case COP_UPSERT: return EP_UPSERT;
  case COP_DELETE: return EP_DELETE;
  case COP_STATS: return EP_STATS;
  default: return EP_OTHER;
  }
}

void metrics_request(struct metrics *m, enum ep e, enum transport t, const char *code,
                     double seconds)
{
  if (!m || (unsigned)e >= EP_N || (unsigned)t >= TR_N) return;
  int err = t == TR_HTTP ? code[0] != '2' : strcmp(code, "OK") != 0;
  pthread_mutex_lock(&m->mu);
  struct series *s = &m->s[e][t];
  int i;
  for (i = 0; i < s->n_codes; i++)
    if (!strcmp(s->code[i], code)) break;
  if (i == s->n_codes) {
    if (s->n_codes < N_CODES - 1) {
      snprintf(s->code[i], sizeof s->code[i], "%s", code);
      s->n_codes++;
    } else {
      i = N_CODES - 1;
      snprintf(s->code[i], sizeof s->code[i], "other");
      if (s->n_codes < N_CODES) s->n_codes = N_CODES;
    }
  }
  s->count[i]++;
  s->errors += (uint64_t)err;
  int b = 0;
  while (b < N_BUCKETS && seconds > buckets[b]) b++;
  s->hist[b]++;
  s->sum += seconds;
  s->n++;
  pthread_mutex_unlock(&m->mu);
}

void metrics_degraded(struct metrics *m)
{
  pthread_mutex_lock(&m->mu);
  m->degraded++;
  pthread_mutex_unlock(&m->mu);
}

void metrics_failover(struct metrics *m)
{
  pthread_mutex_lock(&m->mu);
  m->failovers++;
  pthread_mutex_unlock(&m->mu);
}

void metrics_shard_error(struct metrics *m)
{
  pthread_mutex_lock(&m->mu);
  m->shard_errors++;
  pthread_mutex_unlock(&m->mu);
}

#define P(x)                        \
  do {                              \
    if ((rc = (x)) < 0) goto out;   \
  } while (0)

int metrics_render(struct coord *co, struct jp_buf *b)
{
  struct metrics *m = co->met;
  struct metrics snap;
  int rc = 0;
  /* Copy under the lock, format without it. */
  pthread_mutex_lock(&m->mu);
  memcpy(snap.s, m->s, sizeof snap.s);
  snap.degraded = m->degraded;
  snap.failovers = m->failovers;
  snap.shard_errors = m->shard_errors;
  pthread_mutex_unlock(&m->mu);

  P(jp_buf_puts(b, "# HELP japlaid_requests_total Requests answered, by endpoint, transport and "
                   "status (HTTP status or gRPC status name).\n"
                   "# TYPE japlaid_requests_total counter\n"));
  for (int e = 0; e < EP_N; e++)
    for (int t = 0; t < TR_N; t++)
      for (int i = 0; i < snap.s[e][t].n_codes; i++)
        P(jp_buf_printf(b, "japlaid_requests_total{endpoint=\"%s\",transport=\"%s\",code=\"%s\"} "
                        "%llu\n", ep_names[e], tr_names[t], snap.s[e][t].code[i],
                        (unsigned long long)snap.s[e][t].count[i]));
  P(jp_buf_puts(b, "# HELP japlaid_request_errors_total Requests answered with an error.\n"
                   "# TYPE japlaid_request_errors_total counter\n"));
  for (int e = 0; e < EP_N; e++)
    for (int t = 0; t < TR_N; t++)
      if (snap.s[e][t].n)
        P(jp_buf_printf(b, "japlaid_request_errors_total{endpoint=\"%s\",transport=\"%s\"} %llu\n",
                        ep_names[e], tr_names[t], (unsigned long long)snap.s[e][t].errors));
  P(jp_buf_puts(b, "# HELP japlaid_request_duration_seconds Time from request to answer.\n"
                   "# TYPE japlaid_request_duration_seconds histogram\n"));
  for (int e = 0; e < EP_N; e++)
    for (int t = 0; t < TR_N; t++) {
      const struct series *s = &snap.s[e][t];
      if (!s->n) continue;
      uint64_t cum = 0;
      for (int i = 0; i <= N_BUCKETS; i++) {
        cum += s->hist[i];
        if (i < N_BUCKETS)
          P(jp_buf_printf(b, "japlaid_request_duration_seconds_bucket{endpoint=\"%s\","
                          "transport=\"%s\",le=\"%g\"} %llu\n", ep_names[e], tr_names[t],
                          buckets[i], (unsigned long long)cum));
        else
          P(jp_buf_printf(b, "japlaid_request_duration_seconds_bucket{endpoint=\"%s\","
                          "transport=\"%s\",le=\"+Inf\"} %llu\n", ep_names[e], tr_names[t],
                          (unsigned long long)cum));
      }
      P(jp_buf_printf(b, "japlaid_request_duration_seconds_sum{endpoint=\"%s\",transport=\"%s\"} "
                      "%.6f\n", ep_names[e], tr_names[t], s->sum));
      P(jp_buf_printf(b, "japlaid_request_duration_seconds_count{endpoint=\"%s\","
                      "transport=\"%s\"} %llu\n", ep_names[e], tr_names[t],
                      (unsigned long long)s->n));
    }
  P(jp_buf_printf(b, "# HELP japlaid_degraded_answers_total Searches answered with partial "
                  "coverage.\n# TYPE japlaid_degraded_answers_total counter\n"
                  "japlaid_degraded_answers_total %llu\n"
                  "# HELP japlaid_shard_call_errors_total Shard calls that failed.\n"
                  "# TYPE japlaid_shard_call_errors_total counter\n"
                  "japlaid_shard_call_errors_total %llu\n"
                  "# HELP japlaid_failovers_total Shard calls retried on another replica.\n"
                  "# TYPE japlaid_failovers_total counter\njaplaid_failovers_total %llu\n",
                  (unsigned long long)snap.degraded, (unsigned long long)snap.shard_errors,
                  (unsigned long long)snap.failovers));

  /* Per-replica gauges. */
  static const char *const g[3][2] = {
    {"japlaid_shard_up", "1 when the replica is live (SERVING and verified)."},
    {"japlaid_shard_refused", "1 when the replica was refused (other model, codebook or "
                              "partition)."},
    {"japlaid_shard_outstanding", "Calls in flight to the replica."}};
  int live_parts = 0;
  for (int k = 0; k < 3; k++) {
    P(jp_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", g[k][0], g[k][1], g[k][0]));
    for (int p = 0; p < co->cl.n_partitions; p++) {
      int live = 0;
      for (int r = 0; r < co->cl.parts[p].n_replicas; r++) {
        struct replica_view v;
        cluster_view(&co->cl, p, r, &v);
        int val = k == 0 ? (v.up && v.check == CHECK_OK)
                  : k == 1 ? v.check == CHECK_REFUSED : v.outstanding;
        live += v.up && v.check == CHECK_OK;
        P(jp_buf_printf(b, "%s{partition=\"%d\",address=\"%s\"} %d\n", g[k][0], p,
                        co->cl.parts[p].replicas[r].addr, val));
      }
      if (k == 0) live_parts += live > 0;
    }
  }
  uint64_t nb = 0, nq = 0;
  batcher_counts(co->bat, &nb, &nq);
  P(jp_buf_printf(b, "# HELP japlaid_partitions_live Partitions with at least one live replica.\n"
                  "# TYPE japlaid_partitions_live gauge\njaplaid_partitions_live %d\n"
                  "# HELP japlaid_partitions_total Partitions in cluster.json.\n"
                  "# TYPE japlaid_partitions_total gauge\njaplaid_partitions_total %d\n"
                  "# HELP japlaid_encoder_batches_total Query encoder calls (batches).\n"
                  "# TYPE japlaid_encoder_batches_total counter\n"
                  "japlaid_encoder_batches_total %llu\n"
                  "# HELP japlaid_encoder_queries_total Queries encoded by the batcher.\n"
                  "# TYPE japlaid_encoder_queries_total counter\n"
                  "japlaid_encoder_queries_total %llu\n"
                  "# HELP japlaid_searches_in_flight Searches admitted and not yet answered.\n"
                  "# TYPE japlaid_searches_in_flight gauge\njaplaid_searches_in_flight %d\n"
                  "# HELP japlaid_uptime_seconds Seconds since the coordinator started.\n"
                  "# TYPE japlaid_uptime_seconds gauge\njaplaid_uptime_seconds %.3f\n",
                  live_parts, co->cl.n_partitions, (unsigned long long)nb,
                  (unsigned long long)nq, atomic_load(&co->searches_in_flight),
                  (double)(jp_now_ns() - co->start_ns) / 1e9));
out:
  return rc < 0 ? rc : 0;
}
