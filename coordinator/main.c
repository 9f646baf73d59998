/* main.c: japlaid-coordinator - the front door of a JaPLAID cluster.
 *
 *   japlaid-coordinator --cluster cluster.json --model DIR
 *       [--grpc-listen HOST:PORT] [--http-listen HOST:PORT] [--threads N]
 *       [--deadline-ms MS] [--write-deadline-ms MS] [--health-interval-ms MS]
 *       [--batch-queries N] [--batch-window-us US] [--max-pending N]
 *       [--max-body-bytes N] [--max-connections N] [--max-document-length N]
 *       [--no-split] [--grace-ms MS] [--allow-remote] [--log-level L]
 *
 * Order of events: signals are blocked (every thread inherits the mask, so
 * SIGTERM reaches only sigwait below); cluster.json is validated (exit 2
 * with the problem); the model is loaded (exit 1 if it cannot be); the
 * fan-out, encoder and worker threads start; one health round checks every
 * replica (SERVING, then Stats: model identity, codebook, partition) so the
 * first request already knows the cluster; the gRPC and HTTP servers bind
 * and print "grpc listening on H:P" and "http listening on H:P" (one
 * flushed line each, so a launcher can read ephemeral ports); then the
 * health thread keeps probing.
 *
 * SIGTERM / SIGINT: health turns NOT_SERVING, both servers stop accepting,
 * requests in flight get --grace-ms to finish, then the threads are
 * stopped in dependency order (servers, health, batcher and workers, then
 * the fan-out queue once every shard call has ended) and the process exits
 * 0.
 *
 * Thread-safety / allocation: main owns everything (coord.h). */
#include "coord.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/limits.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/pool.h"

#define DEF_GRPC_LISTEN "127.0.0.1:0"
#define DEF_HTTP_LISTEN "127.0.0.1:0"
/* Vespa's default query timeout is 0.5 s (distributed.md §1.2); PLAID on
 * a CPU partition plus encoding fits 1 s with room. */
#define DEF_DEADLINE_MS 1000
/* Upserts encode up to 1000 documents (seconds with a BERT model on a
 * CPU) and wait for every replica's fsync. */
#define DEF_WRITE_DEADLINE_MS 60000
#define DEF_HEALTH_INTERVAL_MS 500
/* Batching is mostly natural: queries that arrive while the encoder is
 * busy queue up and go out together in the next call. The window only
 * makes the first query of an idle spell wait a little for company; 0.5 ms
 * is small next to a search (~5 ms here), while 2 ms measurably raised
 * the latency of lone queries (p50 6.6 -> 9.5 ms, static model, 2 shards)
 * and only halved the number of encoder calls under 8 concurrent
 * clients. 32 queries x 32 tokens is one BERT forward of 1024 tokens,
 * within the encoder's default 4096-token batch. */
#define DEF_BATCH_QUERIES 32
#define DEF_BATCH_WINDOW_US 500
/* Queued queries (and queued encoding jobs) before the coordinator
 * refuses with UNAVAILABLE instead of queueing further (overload:
 * distributed.md §9 scenario 10, reject fast). */
#define DEF_MAX_PENDING 4096
/* Searches admitted at once. With one query costing ~5-10 ms of shard CPU
 * and a few cores per shard, 64 in flight is a few hundred ms of queue at
 * most, well inside the default deadline, and far above what a healthy
 * cluster holds (Little's law: 100 qps x 10 ms = 1). */
#define DEF_MAX_INFLIGHT_SEARCHES 64
#define DEF_MAX_BODY_BYTES (8u << 20)
#define DEF_MAX_CONNECTIONS 1024
/* distributed.md §9 scenario 15: in-flight queries complete within 5 s. */
#define DEF_GRACE_MS 5000
/* A restarted shard is reached again within about a second (gRPC's own
 * reconnect backoff grows to 2 minutes). */
#define COORD_RECONNECT_INITIAL_MS 100
#define COORD_RECONNECT_MAX_MS 1000
/* Room for [CLS] [D] ... [SEP] (common/index/build.c). */
#define DOC_SPECIAL_TOKENS 3

struct opts {
  const char *cluster, *model, *grpc_listen, *http_listen;
  int allow_remote, log_level, grace_ms, max_connections;
  long max_body;
  struct coord_opts co;
};

static void usage(FILE *f)
{
  fprintf(f,
    "usage: japlaid-coordinator --cluster cluster.json --model DIR [options]\n"
    "The front door of a JaPLAID cluster: japlaid.v1.Search over gRPC and the same\n"
    "operations as HTTP/JSON; encodes queries, fans out to one replica of every\n"
    "partition, merges, routes writes to every replica of a partition.\n"
    "\n"
    "  --cluster FILE            partitions and their replicas:\n"
    "                            {\"partitions\": [{\"id\": 0, \"replicas\": [\"host:port\", ...]}, ...]}\n"
    "  --model DIR               the checkpoint the index was built with\n"
    "  --grpc-listen HOST:PORT   gRPC address (default %s; port 0 = any free port)\n"
    "  --http-listen HOST:PORT   HTTP address (default %s)\n"
    "                            both print \"grpc|http listening on HOST:PORT\" on stdout\n"
    "  --allow-remote            allow non-loopback listen addresses (no authentication!)\n"
    "  --threads N               gRPC workers and document-encoding workers (default: CPUs)\n"
    "  --deadline-ms MS          default deadline of Search/Stats (default %d)\n"
    "  --write-deadline-ms MS    default deadline of Upsert/Delete/Rerank/Encode (default %d)\n"
    "  --health-interval-ms MS   replica health probe period (default %d)\n"
    "  --batch-queries N         queries per encoder batch (default %d)\n"
    "  --batch-window-us US      how long a query waits for batch company (default %d)\n"
    "  --max-pending N           queued queries / encoding jobs before refusing (default %d)\n"
    "  --max-inflight-searches N searches answered at once before refusing new ones\n"
    "                            with UNAVAILABLE \"overloaded\" (default %d)\n"
    "  --max-body-bytes N        largest HTTP request body (default %u)\n"
    "  --max-connections N       open HTTP connections (default %d)\n"
    "  --max-document-length N   upsert passage length in tokens incl. [CLS] [D] [SEP]\n"
    "                            (default: what each partition reports from its build,\n"
    "                            else the model's doc_maxlen; given, it overrides them)\n"
    "  --no-split                upsert each document as one (truncated) passage, as\n"
    "                            `japlaid index --no-split` (default: as each partition\n"
    "                            was built)\n"
    "  --grace-ms MS             on SIGTERM, time in-flight requests get (default %d)\n"
    "  --log-level L             error|warn|info|debug|trace (default info)\n"
    "  --help\n",
    DEF_GRPC_LISTEN, DEF_HTTP_LISTEN, DEF_DEADLINE_MS, DEF_WRITE_DEADLINE_MS,
    DEF_HEALTH_INTERVAL_MS, DEF_BATCH_QUERIES, DEF_BATCH_WINDOW_US, DEF_MAX_PENDING,
    DEF_MAX_INFLIGHT_SEARCHES, DEF_MAX_BODY_BYTES, DEF_MAX_CONNECTIONS, DEF_GRACE_MS);
}

static int parse_long(const char *opt, const char *s, long min, long max, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) {
    fprintf(stderr, "japlaid-coordinator: %s must be an integer in %ld..%ld, not '%s'\n", opt,
            min, max, s);
    return -1;
  }
  *out = v;
  return 0;
}

/* 0, 1 for --help, 2 on a usage error (reported). */
static int parse_args(int argc, char **argv, struct opts *o)
{
  enum { O_CLUSTER = 256, O_MODEL, O_GRPC, O_HTTP, O_REMOTE, O_THREADS, O_DEADLINE, O_WDEADLINE,
         O_HEALTH, O_BQ, O_BW, O_PENDING, O_INFLIGHT, O_BODY, O_CONNS, O_MDL, O_NOSPLIT, O_GRACE,
         O_LOG, O_HELP };
  static const struct option lo[] = {
    {"cluster", required_argument, NULL, O_CLUSTER},
    {"model", required_argument, NULL, O_MODEL},
    {"grpc-listen", required_argument, NULL, O_GRPC},
    {"http-listen", required_argument, NULL, O_HTTP},
    {"allow-remote", no_argument, NULL, O_REMOTE},
    {"threads", required_argument, NULL, O_THREADS},
    {"deadline-ms", required_argument, NULL, O_DEADLINE},
    {"write-deadline-ms", required_argument, NULL, O_WDEADLINE},
    {"health-interval-ms", required_argument, NULL, O_HEALTH},
    {"batch-queries", required_argument, NULL, O_BQ},
    {"batch-window-us", required_argument, NULL, O_BW},
    {"max-pending", required_argument, NULL, O_PENDING},
    {"max-inflight-searches", required_argument, NULL, O_INFLIGHT},
    {"max-body-bytes", required_argument, NULL, O_BODY},
    {"max-connections", required_argument, NULL, O_CONNS},
    {"max-document-length", required_argument, NULL, O_MDL},
    {"no-split", no_argument, NULL, O_NOSPLIT},
    {"grace-ms", required_argument, NULL, O_GRACE},
    {"log-level", required_argument, NULL, O_LOG},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
  };
  long v;
  int c;
  memset(o, 0, sizeof *o);
  o->grpc_listen = DEF_GRPC_LISTEN;
  o->http_listen = DEF_HTTP_LISTEN;
  o->log_level = -1;
  o->grace_ms = DEF_GRACE_MS;
  o->max_connections = DEF_MAX_CONNECTIONS;
  o->max_body = DEF_MAX_BODY_BYTES;
  o->co.threads = jp_ncpus();
  o->co.deadline_ms = DEF_DEADLINE_MS;
  o->co.write_deadline_ms = DEF_WRITE_DEADLINE_MS;
  o->co.health_interval_ms = DEF_HEALTH_INTERVAL_MS;
  o->co.batch_queries = DEF_BATCH_QUERIES;
  o->co.batch_window_us = DEF_BATCH_WINDOW_US;
  o->co.max_pending = DEF_MAX_PENDING;
  o->co.max_inflight_searches = DEF_MAX_INFLIGHT_SEARCHES;
  opterr = 0;
#define NUM(name, lo_, hi_, dst)                               \
  do {                                                         \
    if (parse_long(name, optarg, lo_, hi_, &v) < 0) return 2;  \
    dst = v;                                                   \
  } while (0)
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case O_CLUSTER: o->cluster = optarg; break;
    case O_MODEL: o->model = optarg; break;
    case O_GRPC: o->grpc_listen = optarg; break;
    case O_HTTP: o->http_listen = optarg; break;
    case O_REMOTE: o->allow_remote = 1; break;
    case O_THREADS: NUM("--threads", 1, 256, o->co.threads); break;
    case O_DEADLINE: NUM("--deadline-ms", 1, 3600000, o->co.deadline_ms); break;
    case O_WDEADLINE: NUM("--write-deadline-ms", 1, 3600000, o->co.write_deadline_ms); break;
    case O_HEALTH: NUM("--health-interval-ms", 10, 3600000, o->co.health_interval_ms); break;
    case O_BQ: NUM("--batch-queries", 1, 4096, o->co.batch_queries); break;
    case O_BW: NUM("--batch-window-us", 0, 1000000, o->co.batch_window_us); break;
    case O_PENDING: NUM("--max-pending", 1, 1000000, o->co.max_pending); break;
    case O_INFLIGHT: NUM("--max-inflight-searches", 1, 1000000, o->co.max_inflight_searches); break;
    case O_BODY: NUM("--max-body-bytes", 1024, 1L << 30, o->max_body); break;
    case O_CONNS: NUM("--max-connections", 1, 100000, o->max_connections); break;
    case O_MDL: NUM("--max-document-length", DOC_SPECIAL_TOKENS + 1, 100000,
                    o->co.max_document_length); break;
    case O_NOSPLIT: o->co.no_split = 1; break;
    case O_GRACE: NUM("--grace-ms", 0, 3600000, o->grace_ms); break;
    case O_LOG:
      o->log_level = jp_log_parse_level(optarg);
      if (o->log_level < 0) {
        fprintf(stderr, "japlaid-coordinator: --log-level must be error|warn|info|debug|trace\n");
        return 2;
      }
      break;
    case O_HELP: usage(stdout); return 1;
    default:
      fprintf(stderr, "japlaid-coordinator: unknown or incomplete option '%s'\n",
              argv[optind - 1]);
      usage(stderr);
      return 2;
    }
  }
#undef NUM
  if (optind < argc) {
    fprintf(stderr, "japlaid-coordinator: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (!o->cluster || !o->model) {
    fprintf(stderr, "japlaid-coordinator: --cluster FILE and --model DIR are required\n");
    usage(stderr);
    return 2;
  }
  return 0;
}

/* Stop whatever has been started (in dependency order). */
static void teardown(struct coord *co, struct http_server *http, int grace_ms)
{
  if (co->grpc) rpc_server_set_health(co->grpc, NULL, RPC_HEALTH_NOT_SERVING);
  /* Both servers drain at the same time: HTTP's loop thread by itself
   * while gRPC's shutdown blocks here; then HTTP is joined. */
  http_stop_begin(http, grace_ms);
  if (co->grpc) {
    rpc_server_shutdown(co->grpc, grace_ms);
    rpc_server_destroy(co->grpc);
    co->grpc = NULL;
  }
  http_stop(http, grace_ms);
  health_stop(co->health);
  co->health = NULL;
  batcher_destroy(co->bat);
  co->bat = NULL;
  jobs_destroy(co->jobs);
  co->jobs = NULL;
  fanout_stop(co);
  rpc_client_destroy(co->cli);
  co->cli = NULL;
  metrics_destroy(co->met);
  co->met = NULL;
  jp_model_close(co->model);
  co->model = NULL;
  cluster_fini(&co->cl);
}

int main(int argc, char **argv)
{
  struct opts o;
  int prc = parse_args(argc, argv, &o);
  if (prc == 1) return 0;
  if (prc) return 2;

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  jp_log_init_from_env();
  if (o.log_level >= 0) jp_log_set_level(o.log_level);
  jp_log_set_tag("coordinator");

  static struct coord co;
  memset(&co, 0, sizeof co);
  co.o = o.co;
  co.start_ns = jp_now_ns();
  int rc;
  if ((rc = cluster_load(o.cluster, &co.cl)) < 0) {
    fprintf(stderr, "japlaid-coordinator: %s\n", jp_errmsg(rc));
    return 2;
  }

  struct jp_model_opts mo;
  jp_model_opts_default(&mo);
  if ((rc = jp_model_open(o.model, &mo, &co.model)) < 0) {
    fprintf(stderr, "japlaid-coordinator: cannot load the model %s: %s\n", o.model,
            jp_errmsg(rc));
    cluster_fini(&co.cl);
    return 1;
  }
  co.mi = jp_model_get_info(co.model);
  co.qlen = co.mi->colbert.query_maxlen;
  co.dim = co.mi->colbert.dim;
  snprintf(co.cl.identity, sizeof co.cl.identity, "%s", co.mi->identity);
  co.cl.dim = co.dim;
  int dm = co.mi->colbert.doc_maxlen;
  int mdl = co.o.max_document_length ? co.o.max_document_length : dm;
  if (mdl > dm) {
    fprintf(stderr, "japlaid-coordinator: --max-document-length %d exceeds the model's "
            "doc_maxlen %d\n", mdl, dm);
    teardown(&co, NULL, 0);
    return 2;
  }
  JP_LOG_INFO("model %s (%s, identity %s): query_maxlen %d, doc_maxlen %d, dim %d; %d "
              "partition(s), %d replica(s)", o.model, co.mi->name, co.mi->identity, co.qlen, dm,
              co.dim, co.cl.n_partitions, co.cl.n_replicas);

  struct rpc_client_opts cio;
  rpc_client_opts_default(&cio);
  cio.initial_reconnect_backoff_ms = COORD_RECONNECT_INITIAL_MS;
  cio.max_reconnect_backoff_ms = COORD_RECONNECT_MAX_MS;
  struct http_server *http = NULL;
  if ((rc = metrics_create(&co.met)) < 0 || (rc = rpc_client_create(&cio, &co.cli)) < 0 ||
      (rc = fanout_start(&co)) < 0 ||
      (rc = batcher_create(&co, co.o.batch_queries, co.o.batch_window_us, co.o.max_pending,
                           &co.bat)) < 0 ||
      (rc = jobs_create(co.model, co.o.threads, co.o.max_pending, &co.jobs)) < 0) {
    fprintf(stderr, "japlaid-coordinator: %s\n", jp_errmsg(rc));
    teardown(&co, NULL, 0);
    return 1;
  }
  health_round(&co);
  for (int p = 0; p < co.cl.n_partitions; p++)
    if (cluster_live(&co.cl, p) == 0) {
      char why[600];
      cluster_why_unavailable(&co.cl, p, why, sizeof why);
      JP_LOG_WARN("partition %d: %s; answers will be degraded until one comes up", p, why);
    }
  if ((rc = health_start(&co, &co.health)) < 0) {
    fprintf(stderr, "japlaid-coordinator: %s\n", jp_errmsg(rc));
    teardown(&co, NULL, 0);
    return 1;
  }

  struct rpc_server_opts so;
  rpc_server_opts_default(&so);
  so.listen = o.grpc_listen;
  so.allow_remote = o.allow_remote;
  so.n_threads = co.o.threads;
  /* An upsert of 1000 passages holds 128 MiB of vectors in its arena. */
  so.arena_limit_bytes = (size_t)1 << 30;
  so.app = &co;
  if ((rc = rpc_server_create(coord_methods, coord_n_methods, &so, &co.grpc)) < 0 ||
      (rc = rpc_server_start(co.grpc)) < 0) {
    fprintf(stderr, "japlaid-coordinator: --grpc-listen %s: %s\n", o.grpc_listen, jp_errmsg(rc));
    teardown(&co, NULL, 0);
    return 1;
  }
  struct http_opts ho = {o.http_listen, o.allow_remote, (size_t)o.max_body, o.max_connections};
  if ((rc = http_start(&co, &ho, &http)) < 0) {
    fprintf(stderr, "japlaid-coordinator: %s\n", jp_errmsg(rc));
    teardown(&co, NULL, 0);
    return 1;
  }
  rpc_server_set_health(co.grpc, NULL, RPC_HEALTH_SERVING);
  rpc_server_set_health(co.grpc, COORD_SERVICE, RPC_HEALTH_SERVING);
  printf("grpc listening on %s\n", rpc_server_address(co.grpc));
  printf("http listening on %s\n", http_address(http));
  fflush(stdout);
  JP_LOG_INFO("serving: grpc %s, http %s, %d thread(s)", rpc_server_address(co.grpc),
              http_address(http), co.o.threads);

  int sig = 0;
  while (sigwait(&sigs, &sig) != 0) {
  }
  JP_LOG_INFO("%s: draining (grace %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM", o.grace_ms);
  teardown(&co, http, o.grace_ms);
  JP_LOG_INFO("stopped cleanly");
  return 0;
}
