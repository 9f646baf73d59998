/* main.c: japlaid-shard - serve one index partition over gRPC.
 *
 *   japlaid-shard --index DIR [--listen HOST:PORT] [--threads N]
 *                 [--search-threads N] [--max-message-mb M] [--grace-ms MS]
 *                 [--lame-duck-ms MS] [--log-level L] [--allow-remote]
 *
 * Order of events: signals are blocked (gRPC's threads inherit the mask,
 * so SIGTERM reaches only sigwait below); the server binds and starts, and
 * "listening on HOST:PORT" is printed on stdout (one flushed line, so a
 * launcher can read an ephemeral port); the partition loads on a helper
 * thread while health says NOT_SERVING and every method UNAVAILABLE; once
 * loaded, health turns SERVING. On SIGTERM/SIGINT: health NOT_SERVING; for
 * --lame-duck-ms the shard keeps serving, so coordinators that probe health
 * stop routing to it first (gRPC cancels calls that arrive after the
 * shutdown starts but before a worker takes them); then no new calls, and
 * in-flight calls get --grace-ms to finish (then are cancelled); RocksDB is
 * closed cleanly; exit 0. A partition that fails to load is
 * reported on stderr and the process exits 1; bad options exit 2.
 *
 * Thread-safety / allocation: main owns everything; see shard.h. */
#include "shard.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc/limits.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#define SHARD_DEFAULT_LISTEN "127.0.0.1:0"
/* distributed.md §9 scenario 15: SIGTERM under load completes in-flight
 * queries within a 5 s grace. */
#define SHARD_DEFAULT_GRACE_MS 5000
/* A message carries at most this many MiB whatever the option says: gRPC's
 * length fields are 32-bit signed. */
#define SHARD_MAX_MESSAGE_MB 2047

struct opts {
  const char *index;
  const char *listen;
  int threads;                 /* gRPC workers (searches at once) */
  int search_threads;          /* pool for one search: 1 = none */
  long max_message_mb;
  int grace_ms;
  int lame_duck_ms;            /* NOT_SERVING but still serving, before shutdown */
  int allow_remote;
  int log_level;
};

static void usage(FILE *f)
{
  fprintf(f,
          "usage: japlaid-shard --index DIR [options]\n"
          "Serve one index partition (a directory written by `japlaid index` or\n"
          "`japlaid-index build`) over gRPC (japlaid.v1.Shard + grpc.health.v1).\n"
          "\n"
          "  --index DIR          the partition directory (required)\n"
          "  --listen HOST:PORT   address to serve (default %s; port 0 = any free port);\n"
          "                       prints \"listening on HOST:PORT\" on stdout once bound\n"
          "  --allow-remote       allow a non-loopback --listen address (the API has no\n"
          "                       authentication: only on a trusted network)\n"
          "  --threads N          worker threads, i.e. calls served at once (default: CPUs)\n"
          "  --search-threads N   threads one search may use (default 1)\n"
          "  --max-message-mb M   largest request/response in MiB (default %u)\n"
          "  --grace-ms MS        on SIGTERM, time in-flight calls get to finish (default %d)\n"
          "  --lame-duck-ms MS    on SIGTERM, report NOT_SERVING but keep serving this long\n"
          "                       first, so health-checking clients move away (default 0)\n"
          "  --log-level L        error|warn|info|debug|trace (default info; debug logs\n"
          "                       one line per request)\n"
          "  --help\n",
          SHARD_DEFAULT_LISTEN, JP_RPC_DEFAULT_MAX_MESSAGE_BYTES >> 20, SHARD_DEFAULT_GRACE_MS);
}

static int parse_long(const char *opt, const char *s, long min, long max, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) {
    fprintf(stderr, "japlaid-shard: %s must be an integer in %ld..%ld, not '%s'\n", opt, min, max,
            s);
    return -1;
  }
  *out = v;
  return 0;
}

/* 0, or 2 (usage error, already reported), or 1 for --help (exit 0). */
static int parse_args(int argc, char **argv, struct opts *o)
{
  enum { O_INDEX = 256, O_LISTEN, O_THREADS, O_SEARCH_THREADS, O_MAXMSG, O_GRACE, O_LAME,
         O_REMOTE, O_LOG, O_HELP };
  static const struct option lo[] = {
    {"index", required_argument, NULL, O_INDEX},
    {"listen", required_argument, NULL, O_LISTEN},
    {"threads", required_argument, NULL, O_THREADS},
    {"search-threads", required_argument, NULL, O_SEARCH_THREADS},
    {"max-message-mb", required_argument, NULL, O_MAXMSG},
    {"grace-ms", required_argument, NULL, O_GRACE},
    {"lame-duck-ms", required_argument, NULL, O_LAME},
    {"allow-remote", no_argument, NULL, O_REMOTE},
    {"log-level", required_argument, NULL, O_LOG},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
  };
  long v;
  int c;
  memset(o, 0, sizeof *o);
  o->listen = SHARD_DEFAULT_LISTEN;
  o->threads = jp_ncpus();
  o->search_threads = 1;
  o->max_message_mb = (long)(JP_RPC_DEFAULT_MAX_MESSAGE_BYTES >> 20);
  o->grace_ms = SHARD_DEFAULT_GRACE_MS;
  o->log_level = -1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case O_INDEX: o->index = optarg; break;
    case O_LISTEN: o->listen = optarg; break;
    case O_THREADS:
      if (parse_long("--threads", optarg, 1, 256, &v) < 0) return 2;
      o->threads = (int)v;
      break;
    case O_SEARCH_THREADS:
      if (parse_long("--search-threads", optarg, 1, 256, &v) < 0) return 2;
      o->search_threads = (int)v;
      break;
    case O_MAXMSG:
      if (parse_long("--max-message-mb", optarg, 1, SHARD_MAX_MESSAGE_MB, &v) < 0) return 2;
      o->max_message_mb = v;
      break;
    case O_GRACE:
      if (parse_long("--grace-ms", optarg, 0, 3600 * 1000, &v) < 0) return 2;
      o->grace_ms = (int)v;
      break;
    case O_LAME:
      if (parse_long("--lame-duck-ms", optarg, 0, 3600 * 1000, &v) < 0) return 2;
      o->lame_duck_ms = (int)v;
      break;
    case O_REMOTE: o->allow_remote = 1; break;
    case O_LOG:
      o->log_level = jp_log_parse_level(optarg);
      if (o->log_level < 0) {
        fprintf(stderr, "japlaid-shard: --log-level must be error|warn|info|debug|trace\n");
        return 2;
      }
      break;
    case O_HELP: usage(stdout); return 1;
    default:
      fprintf(stderr, "japlaid-shard: unknown or incomplete option '%s'\n", argv[optind - 1]);
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "japlaid-shard: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (!o->index) {
    fprintf(stderr, "japlaid-shard: --index DIR is required\n");
    usage(stderr);
    return 2;
  }
  return 0;
}

/* The loader thread opens the partition while the server already answers
 * health checks (NOT_SERVING), so a large partition does not look like a
 * dead process. */
struct loader {
  const char *dir;
  struct shard *sh;
  rpc_server *srv;
  jp_store *store;
  int rc;
  char err[512];
};

static void *load_main(void *arg)
{
  struct loader *l = arg;
  struct jp_store_opts so;
  jp_store_opts_default(&so);
  double t0 = jp_now_s();
  l->rc = jp_store_open(l->dir, &so, &l->store);
  if (l->rc < 0) {
    snprintf(l->err, sizeof l->err, "%s", jp_errmsg(l->rc));
    /* Wake main's sigwait: the process has nothing to serve. */
    kill(getpid(), SIGTERM);
    return NULL;
  }
  shard_publish(l->sh, l->store);
  JP_LOG_INFO("partition %u/%u loaded from %s in %.2f s (model %s, %d centroids, codebook %s)",
              l->sh->meta.partition_id, l->sh->meta.n_partitions, l->dir, jp_now_s() - t0,
              l->sh->meta.model_identity, l->sh->ncentroids, l->sh->codebook_hash);
  rpc_server_set_health(l->srv, NULL, RPC_HEALTH_SERVING);
  return NULL;
}

int main(int argc, char **argv)
{
  struct opts o;
  int prc = parse_args(argc, argv, &o);
  if (prc == 1) return 0;
  if (prc) return 2;

  /* Before anything starts a thread (gRPC, the pool): they inherit this
   * mask, so the signals are delivered only to sigwait() below. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  jp_log_init_from_env();
  if (o.log_level >= 0) jp_log_set_level(o.log_level);
  jp_log_set_tag("shard");

  struct shard sh;
  memset(&sh, 0, sizeof sh);
  atomic_init(&sh.store, NULL);
  sh.start_ns = jp_now_ns();
  int rc = 0;
  if (o.search_threads > 1 && (rc = jp_pool_create(o.search_threads, &sh.pool)) < 0) {
    fprintf(stderr, "japlaid-shard: %s\n", jp_errmsg(rc));
    return 1;
  }

  struct rpc_server_opts so;
  rpc_server_opts_default(&so);
  so.listen = o.listen;
  so.allow_remote = o.allow_remote;
  so.n_threads = o.threads;
  so.max_message_bytes = (size_t)o.max_message_mb << 20;
  so.app = &sh;
  rpc_server *srv;
  if ((rc = rpc_server_create(shard_methods, shard_n_methods, &so, &srv)) < 0) {
    fprintf(stderr, "japlaid-shard: %s\n", jp_errmsg(rc));
    jp_pool_destroy(sh.pool);
    return 1;
  }
  if ((rc = rpc_server_start(srv)) < 0) {
    fprintf(stderr, "japlaid-shard: %s\n", jp_errmsg(rc));
    rpc_server_destroy(srv);
    jp_pool_destroy(sh.pool);
    return 1;
  }
  printf("listening on %s\n", rpc_server_address(srv));
  fflush(stdout);
  JP_LOG_INFO("serving %s on %s with %d worker(s)", o.index, rpc_server_address(srv), o.threads);

  struct loader ld = {o.index, &sh, srv, NULL, 0, ""};
  pthread_t lt;
  if (pthread_create(&lt, NULL, load_main, &ld) != 0) {
    fprintf(stderr, "japlaid-shard: cannot start the loader thread\n");
    rpc_server_destroy(srv);
    jp_pool_destroy(sh.pool);
    return 1;
  }

  int sig = 0;
  while (sigwait(&sigs, &sig) != 0) {
  }
  /* The loader must be done before the store can be closed; opening a
   * RocksDB cannot be interrupted, so a signal during load waits for it. */
  pthread_join(lt, NULL);
  int status = 0;
  if (ld.rc < 0) {
    fprintf(stderr, "japlaid-shard: cannot open %s: %s\n", o.index, ld.err);
    status = 1;
  } else {
    rpc_server_set_health(srv, NULL, RPC_HEALTH_NOT_SERVING);
    if (o.lame_duck_ms > 0) {
      JP_LOG_INFO("%s: NOT_SERVING, still answering for %d ms", sig == SIGINT ? "SIGINT" : "SIGTERM",
                  o.lame_duck_ms);
      jp_sleep_ms((unsigned)o.lame_duck_ms);
    }
    JP_LOG_INFO("%s: draining (grace %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM", o.grace_ms);
  }
  rpc_server_shutdown(srv, o.grace_ms);
  uint64_t calls = rpc_server_calls_total(srv);
  rpc_server_destroy(srv);
  jp_store_close(ld.store);
  jp_pool_destroy(sh.pool);
  if (status == 0) JP_LOG_INFO("stopped cleanly after %llu call(s)", (unsigned long long)calls);
  return status;
}
