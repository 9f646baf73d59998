/* cmd_loadgen.c: `japlaid loadgen` -- an open-loop load generator for a
 * coordinator (japlaid.v1.Search/Search over gRPC, or POST /v1/search over
 * HTTP/1.1).
 *
 * Open loop (distributed.md §7, §9): request i is due at t0 + i / qps,
 * whatever happened to the requests before it, and its latency is measured
 * from that INTENDED time, not from when it actually left. A closed-loop
 * client that waits for each answer before sending the next one sends less
 * while the server stalls and so never sees the stall in its percentiles
 * ("coordinated omission"); here a stall shows up in full in every request
 * that was due during it. If the generator itself falls behind (a send
 * leaves more than LG_LATE_NS after its time), that is counted and the
 * largest lag reported: the lag is part of the measured latency anyway.
 *
 * gRPC mode: C channels (one connection each: rpc_client uses a local
 * subchannel pool), calls assigned round robin, all on one completion
 * queue. The main thread sends on schedule (clock_nanosleep to the absolute
 * due time); a poller thread takes the completions. Each call's deadline is
 * its due time + --deadline-ms.
 * HTTP mode: C keep-alive connections driven by one thread with ppoll. A
 * request due while every connection is busy waits in a FIFO queue (counted
 * as "queued"; the wait is part of its latency); one that is still queued at
 * its deadline fails as a timeout without being sent. A request whose
 * answer has not come by its deadline fails as a timeout and its connection
 * is closed (it cannot be reused while an answer is pending).
 *
 * Latency percentiles are exact (sorted samples) over the answered requests
 * (degraded answers included) that were due in the measured window (after
 * --warmup); errors are counted by kind (gRPC status, HTTP status, connect
 * and transport errors, timeouts) and excluded from the percentiles.
 *
 * Thread-safety: the gRPC mode's two threads share the counters under one
 * mutex. Allocation: the schedule (16 bytes per request, at most
 * LG_MAX_REQUESTS) and the latency samples (4 bytes per request). */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "japlaid/v1/search.pb-c.h"
#include "rpc/client.h"
#include "rpc/limits.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/json.h"
#include "util/mem.h"

/* 10 million requests: 160 MB of schedule and 40 MB of samples, e.g.
 * 10,000 qps for 1000 s. */
#define LG_MAX_REQUESTS 10000000.0
/* A send more than 1 ms after its due time counts as late: well above the
 * scheduler's wake-up jitter, well below a search's latency. */
#define LG_LATE_NS 1000000u
/* Per-request deadline: 5x the coordinator's default search deadline. */
#define LG_DEFAULT_DEADLINE_MS 5000
/* The first request is due this long after start-up, so connecting and
 * thread creation are not charged to it. */
#define LG_START_DELAY_NS 100000000u
/* Distinct error kinds kept apart; more are counted as "other". */
#define LG_MAX_KINDS 32
/* Largest HTTP response accepted (k = 1000 hits with long passages). */
#define LG_HTTP_MAX_RESPONSE ((size_t)64 << 20)
/* Reconnect backoff of an HTTP connection whose connect failed. */
#define LG_BACKOFF_MIN_MS 50u
#define LG_BACKOFF_MAX_MS 1000u
/* How long each HTTP connection may take to open before the run starts. */
#define LG_PRECONNECT_MS 1000
/* Lines of the queries file: a bound against a wrong file. */
#define LG_MAX_QUERIES 10000000

static const char *const usage_text =
  "usage: japlaid loadgen --server HOST:PORT --queries FILE --qps N --duration S\n"
  "                       [--connections C] [--http] [--k K] [--warmup S]\n"
  "                       [--deadline-ms MS] [--json]\n"
  "\n"
  "Open-loop load: request i leaves at t0 + i/qps whatever the latency, and\n"
  "its latency is measured from that intended time (a stall is never hidden\n"
  "by sending less). Queries come from FILE (one per line, or qid<TAB>query),\n"
  "in order, repeated as needed.\n"
  "  --server HOST:PORT  the coordinator's gRPC address (HTTP address with --http)\n"
  "  --qps N             requests per second (may be fractional)\n"
  "  --duration S        seconds measured (after the warm-up)\n"
  "  --warmup S          seconds sent first and not measured (default 0)\n"
  "  --connections C     gRPC channels (default 1; calls round robin) or HTTP\n"
  "                      keep-alive connections (default 8; a request due when all\n"
  "                      are busy waits, and the wait counts)\n"
  "  --http              POST /v1/search over HTTP/1.1 instead of gRPC\n"
  "  --k K               hits per query (default 10)\n"
  "  --deadline-ms MS    per request, from its intended time (default 5000)\n"
  "  --json              one JSON object instead of the text report\n"
  "Reports achieved QPS, latency p50/p90/p99/p99.9 (exact, over answered\n"
  "requests), errors by kind, degraded answers (coverage below total), and\n"
  "whether the generator itself fell behind.\n";

struct lg_opts {
  const char *server, *queries;
  double qps, duration, warmup;
  int connections, http, k, json, deadline_ms;
};

struct lg_kind {
  char name[64];
  uint64_t n;
  char example[200];
};

/* Outcomes of the measured requests. */
struct lg_stats {
  pthread_mutex_t mu;
  uint64_t requests, ok, degraded, errors;
  struct lg_kind kinds[LG_MAX_KINDS];
  int n_kinds;
  float *lat_ms;                  /* answered requests' latencies */
  size_t n_lat;
  uint64_t late, queued, max_lag_ns;
  uint64_t window_start_ns, last_done_ns;
};

struct lg_queries {
  char **text;
  size_t *len;
  int n;
};

/* The schedule: request i is due at t0 + i * 1e9 / qps. */
struct lg_sched {
  uint64_t t0;
  double period_ns;
  uint64_t n;                     /* all requests, warm-up included */
  uint64_t first_measured;        /* index of the first measured request */
};

static uint64_t due(const struct lg_sched *s, uint64_t i)
{
  return s->t0 + (uint64_t)llround((double)i * s->period_ns);
}

/* ---- outcomes ---------------------------------------------------------------------- */

/* Count an error of `kind` (mutex held by the caller where threads share). */
static void stat_error(struct lg_stats *s, const char *kind, const char *example)
{
  struct lg_kind *k = NULL;
  s->errors++;
  for (int i = 0; i < s->n_kinds && !k; i++)
    if (!strcmp(s->kinds[i].name, kind)) k = &s->kinds[i];
  if (!k && s->n_kinds < LG_MAX_KINDS) {
    k = &s->kinds[s->n_kinds++];
    snprintf(k->name, sizeof k->name, "%s", kind);
    snprintf(k->example, sizeof k->example, "%s", example ? example : "");
  }
  if (!k) k = &s->kinds[LG_MAX_KINDS - 1];   /* folded into the last kind */
  k->n++;
}

/* One measured request ended at `done` (due at `t`): ok (degraded or not),
 * or an error of `kind`. */
static void stat_done(struct lg_stats *s, uint64_t t, uint64_t done, int ok, int degraded,
                      const char *kind, const char *example)
{
  s->requests++;
  if (done > s->last_done_ns) s->last_done_ns = done;
  if (!ok) {
    stat_error(s, kind, example);
    return;
  }
  s->ok++;
  s->degraded += degraded != 0;
  s->lat_ms[s->n_lat++] = (float)((double)(done > t ? done - t : 0) / 1e6);
}

static void stat_lag(struct lg_stats *s, uint64_t lag)
{
  if (lag > LG_LATE_NS) s->late++;
  if (lag > s->max_lag_ns) s->max_lag_ns = lag;
}

/* ---- queries ------------------------------------------------------------------------- */

static void queries_free(struct lg_queries *q)
{
  for (int i = 0; i < q->n; i++) jp_free(q->text[i]);
  jp_free(q->text);
  jp_free(q->len);
}

static int queries_load(const char *path, struct lg_queries *q)
{
  FILE *f = fopen(path, "r");
  char *line = NULL;
  size_t cap = 0, qcap = 0;
  ssize_t len;
  int rc = 0;
  memset(q, 0, sizeof *q);
  if (!f) return jp_err(JP_EIO, "cannot read %s: %s", path, strerror(errno));
  while ((len = getline(&line, &cap, f)) >= 0) {
    char *text = line, *tab;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    if ((tab = memchr(line, '\t', (size_t)len))) text = tab + 1;
    size_t tl = (size_t)(line + len - text);
    if (!tl) continue;
    if (q->n == LG_MAX_QUERIES) {
      rc = jp_err(JP_ETOOBIG, "%s: more than %d queries", path, LG_MAX_QUERIES);
      break;
    }
    if ((size_t)q->n == qcap) {
      size_t nc = qcap ? 2 * qcap : 256;
      char **nt = jp_realloc(q->text, nc * sizeof *nt);
      if (nt) q->text = nt;
      size_t *nl = nt ? jp_realloc(q->len, nc * sizeof *nl) : NULL;
      if (nl) q->len = nl;
      if (!nt || !nl) { rc = JP_ENOMEM; break; }
      qcap = nc;
    }
    if (!(q->text[q->n] = jp_strndup(text, tl))) { rc = JP_ENOMEM; break; }
    q->len[q->n++] = tl;
  }
  free(line);
  fclose(f);
  if (!rc && q->n == 0) rc = jp_err(JP_EINVAL, "%s holds no query", path);
  return rc;
}

/* ---- gRPC mode ---------------------------------------------------------------------- */

struct g_req {
  uint64_t t;                     /* due */
  rpc_call *call;
};

struct g_run {
  const struct lg_opts *o;
  const struct lg_sched *sc;
  struct lg_stats *st;
  rpc_client **cli;
  grpc_completion_queue *cq;
  struct g_req *req;
  uint8_t **packed;               /* a packed SearchRequest per query */
  size_t *packed_len;
  atomic_uint_fast64_t started;   /* calls whose event will come */
  atomic_int sending_done;
  uint64_t completed;             /* poller only */
};

static void *g_poller(void *arg)
{
  struct g_run *g = arg;
  for (;;) {
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis(100, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_next(g->cq, until, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
      if (atomic_load(&g->sending_done) && g->completed == atomic_load(&g->started)) break;
      continue;
    }
    if (ev.type != GRPC_OP_COMPLETE) break;
    struct g_req *r = ev.tag;
    uint64_t now = jp_now_ns(), i = (uint64_t)(r - g->req);
    const char *details = "";
    grpc_status_code code = rpc_call_status(r->call, &details);
    int ok = 0, degraded = 0;
    const char *kind = rpc_status_name(code);
    char example[200];
    snprintf(example, sizeof example, "%s", details ? details : "");
    if (code == GRPC_STATUS_OK) {
      ProtobufCMessage *m = NULL;
      if (rpc_call_result(r->call, &japlaid__v1__search_response__descriptor, NULL, &m, NULL) ==
          0) {
        const Japlaid__V1__SearchResponse *sr = (const Japlaid__V1__SearchResponse *)m;
        ok = 1;
        degraded = sr->degraded || (sr->coverage && sr->coverage->partitions_answered <
                                                      sr->coverage->partitions_total);
        protobuf_c_message_free_unpacked(m, NULL);
      } else {
        kind = "bad_response";
        snprintf(example, sizeof example, "the answer is not a SearchResponse");
      }
    }
    rpc_call_destroy(r->call);
    r->call = NULL;
    g->completed++;
    if (i >= g->sc->first_measured) {
      pthread_mutex_lock(&g->st->mu);
      stat_done(g->st, r->t, now, ok, degraded, kind, example);
      pthread_mutex_unlock(&g->st->mu);
    }
  }
  return NULL;
}

/* Sleep until the monotonic time t (ns). */
static void sleep_until(uint64_t t)
{
  struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static int run_grpc(const struct lg_opts *o, const struct lg_queries *q, struct lg_sched *sc,
                    struct lg_stats *st)
{
  struct g_run g;
  struct rpc_client_opts co;
  pthread_t poller;
  int rc = 0, have_poller = 0;

  memset(&g, 0, sizeof g);
  g.o = o;
  g.sc = sc;
  g.st = st;
  atomic_init(&g.started, 0);
  atomic_init(&g.sending_done, 0);
  g.cli = jp_calloc((size_t)o->connections, sizeof *g.cli);
  g.req = jp_calloc(sc->n, sizeof *g.req);
  g.packed = jp_calloc((size_t)q->n, sizeof *g.packed);
  g.packed_len = jp_calloc((size_t)q->n, sizeof *g.packed_len);
  if (!g.cli || !g.req || !g.packed || !g.packed_len) { rc = JP_ENOMEM; goto out; }
  /* Every query packed once: the generator's own cost per request is then
   * one copy and the call. */
  for (int i = 0; i < q->n; i++) {
    Japlaid__V1__SearchRequest req = JAPLAID__V1__SEARCH_REQUEST__INIT;
    Japlaid__V1__SearchParams params = JAPLAID__V1__SEARCH_PARAMS__INIT;
    char *text = q->text[i];
    params.k = (uint32_t)o->k;
    req.params = &params;
    req.queries = &text;
    req.n_queries = 1;
    g.packed_len[i] = protobuf_c_message_get_packed_size(&req.base);
    if (!(g.packed[i] = jp_malloc(g.packed_len[i] ? g.packed_len[i] : 1))) {
      rc = JP_ENOMEM;
      goto out;
    }
    protobuf_c_message_pack(&req.base, g.packed[i]);
  }
  rpc_client_opts_default(&co);
  /* Fail fast when nothing listens (counted as UNAVAILABLE), as a client
   * of a real service would see it. */
  co.wait_for_ready = 0;
  for (int c = 0; c < o->connections; c++)
    if ((rc = rpc_client_create(&co, &g.cli[c])) < 0) goto out;
  g.cq = grpc_completion_queue_create_for_next(NULL);
  /* Connect every channel before the clock starts. */
  for (int c = 0; c < o->connections; c++) {
    grpc_channel *ch;
    if ((rc = rpc_client_channel(g.cli[c], o->server, &ch)) < 0) goto out;
    grpc_channel_check_connectivity_state(ch, 1);
  }
  if (pthread_create(&poller, NULL, g_poller, &g) != 0) {
    rc = jp_err(JP_ENOMEM, "cannot start the poller thread");
    goto out;
  }
  have_poller = 1;
  sc->t0 = jp_now_ns() + LG_START_DELAY_NS;
  st->window_start_ns = due(sc, sc->first_measured);
  for (uint64_t i = 0; i < sc->n; i++) {
    uint64_t t = due(sc, i), now = jp_now_ns();
    if (now < t) {
      sleep_until(t);
      now = jp_now_ns();
    }
    struct rpc_call_opts co2 = {0};
    co2.deadline_ns = t + (uint64_t)o->deadline_ms * 1000000u;
    co2.wait_for_ready = 0;
    g.req[i].t = t;
    int qi = (int)(i % (uint64_t)q->n);
    int src = rpc_call_start_raw(g.cli[i % (uint64_t)o->connections], o->server,
                                 "/japlaid.v1.Search/Search", g.packed[qi], g.packed_len[qi], &co2,
                                 g.cq, &g.req[i], &g.req[i].call);
    pthread_mutex_lock(&st->mu);
    if (i >= sc->first_measured) stat_lag(st, now - t);
    if (src < 0 && i >= sc->first_measured)
      stat_done(st, t, jp_now_ns(), 0, 0, "call_not_started", jp_errmsg(src));
    pthread_mutex_unlock(&st->mu);
    if (src == 0) atomic_fetch_add(&g.started, 1);
  }
  atomic_store(&g.sending_done, 1);
out:
  if (have_poller) pthread_join(poller, NULL);
  if (g.cq) {
    grpc_completion_queue_shutdown(g.cq);
    while (grpc_completion_queue_next(g.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(g.cq);
  }
  for (int c = 0; g.cli && c < o->connections; c++) rpc_client_destroy(g.cli[c]);
  for (int i = 0; g.packed && i < q->n; i++) jp_free(g.packed[i]);
  jp_free(g.packed);
  jp_free(g.packed_len);
  jp_free(g.req);
  jp_free(g.cli);
  return rc;
}

/* ---- HTTP mode ---------------------------------------------------------------------- */

enum { H_DOWN, H_CONNECTING, H_IDLE, H_BUSY };

struct h_conn {
  int fd, state;
  uint64_t req;                   /* request in flight (H_CONNECTING / H_BUSY) */
  size_t w_off;                   /* request bytes written */
  char *buf;                      /* response bytes so far */
  size_t len, cap;
  uint64_t retry_at;              /* H_DOWN after a failed connect: not before */
  unsigned backoff_ms;
};

struct h_run {
  const struct lg_opts *o;
  const struct lg_sched *sc;
  struct lg_stats *st;
  struct addrinfo *ai;
  char **reqtext;                 /* a whole HTTP request per query */
  size_t *reqlen;
  int nq;
  struct h_conn *c;
  uint64_t *queue;                /* FIFO of due requests waiting for a connection */
  uint64_t qhead, qtail;
};

static void h_close(struct h_conn *c)
{
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->state = H_DOWN;
  c->len = 0;
}

/* Request i ended (ok or an error of `kind`). */
static void h_done(struct h_run *h, uint64_t i, int ok, int degraded, const char *kind,
                   const char *example)
{
  if (i >= h->sc->first_measured)
    stat_done(h->st, due(h->sc, i), jp_now_ns(), ok, degraded, kind, example);
}

static void h_fail(struct h_run *h, struct h_conn *c, const char *kind, const char *example)
{
  h_done(h, c->req, 0, 0, kind, example);
  h_close(c);
}

/* A connect failed: its request fails with it, and the connection waits
 * (doubling up to LG_BACKOFF_MAX_MS) before it is tried again, so a dead
 * server is not hammered in a busy loop. */
static void h_connect_failed(struct h_run *h, struct h_conn *c, int err)
{
  char ex[160];
  snprintf(ex, sizeof ex, "connect: %s", strerror(err));
  h_fail(h, c, "connect", ex);
  c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : LG_BACKOFF_MIN_MS;
  if (c->backoff_ms > LG_BACKOFF_MAX_MS) c->backoff_ms = LG_BACKOFF_MAX_MS;
  c->retry_at = jp_now_ns() + (uint64_t)c->backoff_ms * 1000000u;
}

/* Give request i to connection c (idle: write at once; down: connect). */
static void h_assign(struct h_run *h, struct h_conn *c, uint64_t i)
{
  c->req = i;
  c->w_off = 0;
  c->len = 0;
  if (c->state == H_IDLE) {
    c->state = H_BUSY;
    return;
  }
  int fd = socket(h->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    h_done(h, i, 0, 0, "connect", strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  if (connect(fd, h->ai->ai_addr, h->ai->ai_addrlen) == 0) {
    c->state = H_BUSY;
  } else if (errno == EINPROGRESS) {
    c->state = H_CONNECTING;
  } else {
    h_connect_failed(h, c, errno);
  }
}

/* A complete response in c->buf? Returns 1 (handled), 0 (need more), or
 * -1 (malformed: handled as an error). */
static int h_parse(struct h_run *h, struct h_conn *c)
{
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (!end) return c->len > 65536 ? (h_fail(h, c, "bad_response", "headers over 64 KiB"), -1) : 0;
  size_t hl = (size_t)(end - c->buf) + 4;
  int status = 0;
  if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1 || status < 100 || status > 999) {
    h_fail(h, c, "bad_response", "no HTTP status line");
    return -1;
  }
  long long clen = -1;
  int closes = 0;
  for (char *p = c->buf; p && p < end;) {
    char *nl = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    if (!nl) break;
    char *line = nl + 2;
    if (line < end && !strncasecmp(line, "content-length:", 15)) clen = atoll(line + 15);
    if (line < end && !strncasecmp(line, "connection:", 11)) {
      const char *v = line + 11;
      while (*v == ' ') v++;
      closes = !strncasecmp(v, "close", 5);
    }
    p = line;
  }
  if (clen < 0) {
    h_fail(h, c, "bad_response", "no Content-Length");
    return -1;
  }
  if (c->len < hl + (size_t)clen) return 0;
  const char *body = c->buf + hl;
  if (status == 200) {
    /* The coordinator's answer ends with "degraded":true|false (a string
     * value cannot contain the unescaped quotes of this pattern). */
    int degraded = memmem(body, (size_t)clen, "\"degraded\":true", 15) != NULL;
    h_done(h, c->req, 1, degraded, NULL, NULL);
  } else {
    char kind[32], ex[200];
    snprintf(kind, sizeof kind, "http_%d", status);
    snprintf(ex, sizeof ex, "%.*s", (int)(clen < 190 ? clen : 190), body);
    h_done(h, c->req, 0, 0, kind, ex);
  }
  if (closes) {
    h_close(c);
  } else {
    c->state = H_IDLE;
    c->len = 0;
  }
  return 1;
}

/* Before the clock starts: open connection c (at most LG_PRECONNECT_MS),
 * so the first requests are not charged the TCP handshake. A failure
 * leaves it down, to be retried when a request needs it. */
static void h_preconnect(struct h_run *h, struct h_conn *c)
{
  int fd = socket(h->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0) return;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, h->ai->ai_addr, h->ai->ai_addrlen) < 0) {
    struct pollfd p = {fd, POLLOUT, 0};
    int err = 0;
    socklen_t el = sizeof err;
    if (errno != EINPROGRESS || poll(&p, 1, LG_PRECONNECT_MS) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
      close(fd);
      return;
    }
  }
  c->fd = fd;
  c->state = H_IDLE;
}

static int h_resolve(const char *server, struct addrinfo **out)
{
  char host[256];
  const char *colon = strrchr(server, ':');
  if (!colon || colon == server || (size_t)(colon - server) >= sizeof host)
    return jp_err(JP_EINVAL, "--server wants HOST:PORT, got '%s'", server);
  memcpy(host, server, (size_t)(colon - server));
  host[colon - server] = '\0';
  if (host[0] == '[' && host[strlen(host) - 1] == ']') {
    memmove(host, host + 1, strlen(host));
    host[strlen(host) - 1] = '\0';
  }
  struct addrinfo hints = {0};
  hints.ai_socktype = SOCK_STREAM;
  int e = getaddrinfo(host, colon + 1, &hints, out);
  if (e) return jp_err(JP_EINVAL, "%s: %s", server, gai_strerror(e));
  return 0;
}

static int run_http(const struct lg_opts *o, const struct lg_queries *q, struct lg_sched *sc,
                    struct lg_stats *st)
{
  struct h_run h;
  struct pollfd *pfd = NULL;
  int *pconn = NULL, rc;
  const uint64_t dl_ns = (uint64_t)o->deadline_ms * 1000000u;

  memset(&h, 0, sizeof h);
  h.o = o;
  h.sc = sc;
  h.st = st;
  h.nq = q->n;
  if ((rc = h_resolve(o->server, &h.ai)) < 0) return rc;
  h.reqtext = jp_calloc((size_t)q->n, sizeof *h.reqtext);
  h.reqlen = jp_calloc((size_t)q->n, sizeof *h.reqlen);
  h.c = jp_calloc((size_t)o->connections, sizeof *h.c);
  h.queue = jp_malloc(sc->n * sizeof *h.queue);
  pfd = jp_calloc((size_t)o->connections, sizeof *pfd);
  pconn = jp_calloc((size_t)o->connections, sizeof *pconn);
  if (!h.reqtext || !h.reqlen || !h.c || !h.queue || !pfd || !pconn) { rc = JP_ENOMEM; goto out; }
  for (int i = 0; i < q->n; i++) {
    struct jp_buf body, req;
    jp_buf_init(&body, 0);
    jp_buf_init(&req, 0);
    rc = jp_buf_puts(&body, "{\"query\":");
    if (!rc) rc = jp_buf_json_str(&body, q->text[i], q->len[i]);
    if (!rc) rc = jp_buf_printf(&body, ",\"k\":%d}", o->k);
    if (!rc)
      rc = jp_buf_printf(&req, "POST /v1/search HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                         "application/json\r\nContent-Length: %zu\r\n\r\n%s", o->server, body.len,
                         body.data);
    jp_buf_fini(&body);
    if (rc) {
      jp_buf_fini(&req);
      goto out;
    }
    h.reqtext[i] = req.data;      /* ownership moves: freed with jp_free */
    h.reqlen[i] = req.len;
  }
  for (int i = 0; i < o->connections; i++) {
    h.c[i].fd = -1;
    h.c[i].state = H_DOWN;
    h_preconnect(&h, &h.c[i]);
  }
  sc->t0 = jp_now_ns() + LG_START_DELAY_NS;
  st->window_start_ns = due(sc, sc->first_measured);

  uint64_t next = 0;
  for (;;) {
    uint64_t now = jp_now_ns();
    /* Requests now due join the queue. */
    while (next < sc->n && due(sc, next) <= now) {
      int idle = 0;
      for (int i = 0; i < o->connections && !idle; i++) idle = h.c[i].state == H_IDLE;
      if (next >= sc->first_measured) {
        stat_lag(st, now - due(sc, next));
        if (!idle || h.qtail > h.qhead) st->queued++;
      }
      h.queue[h.qtail++] = next++;
    }
    /* Queued requests past their deadline fail unsent. */
    while (h.qhead < h.qtail && due(sc, h.queue[h.qhead]) + dl_ns <= now)
      h_done(&h, h.queue[h.qhead++], 0, 0, "timeout",
             "deadline passed while waiting for a free connection");
    /* Hand queued requests to idle connections, then to ones that may
     * (re)connect. */
    for (int pass = 0; pass < 2; pass++)
      for (int i = 0; i < o->connections && h.qhead < h.qtail; i++) {
        struct h_conn *c = &h.c[i];
        if ((pass == 0 && c->state == H_IDLE) ||
            (pass == 1 && c->state == H_DOWN && c->retry_at <= now))
          h_assign(&h, c, h.queue[h.qhead++]);
      }
    /* In-flight requests past their deadline. */
    for (int i = 0; i < o->connections; i++) {
      struct h_conn *c = &h.c[i];
      if ((c->state == H_BUSY || c->state == H_CONNECTING) && due(sc, c->req) + dl_ns <= now)
        h_fail(&h, c, "timeout", "no answer by the deadline");
    }
    int busy = 0;
    for (int i = 0; i < o->connections; i++)
      busy |= h.c[i].state == H_BUSY || h.c[i].state == H_CONNECTING;
    if (next >= sc->n && h.qhead == h.qtail && !busy) break;

    /* Wake at the next due time, deadline or reconnect time. */
    uint64_t wake = UINT64_MAX;
    if (next < sc->n) wake = due(sc, next);
    if (h.qhead < h.qtail) {
      uint64_t d = due(sc, h.queue[h.qhead]) + dl_ns;
      if (d < wake) wake = d;
    }
    int np = 0;
    for (int i = 0; i < o->connections; i++) {
      struct h_conn *c = &h.c[i];
      if (c->state == H_DOWN) {
        if (h.qhead < h.qtail && c->retry_at < wake) wake = c->retry_at;
        continue;
      }
      if (c->state != H_IDLE) {
        uint64_t d = due(sc, c->req) + dl_ns;
        if (d < wake) wake = d;
      }
      pfd[np].fd = c->fd;
      pfd[np].events = (short)(c->state == H_CONNECTING ? POLLOUT
                               : c->state == H_BUSY && c->w_off < h.reqlen[c->req % (uint64_t)h.nq]
                                 ? POLLOUT | POLLIN
                                 : POLLIN);
      pfd[np].revents = 0;
      pconn[np++] = i;
    }
    now = jp_now_ns();
    /* At least a millisecond: a request is queued by due time, not polled
     * for in a busy loop. */
    uint64_t wait_ns = wake == UINT64_MAX ? 1000000000u : wake > now ? wake - now : 0;
    struct timespec ts = {(time_t)(wait_ns / 1000000000u), (long)(wait_ns % 1000000000u)};
    int n = ppoll(pfd, (nfds_t)np, &ts, NULL);
    if (n < 0 && errno != EINTR) {
      rc = jp_err(JP_EIO, "poll: %s", strerror(errno));
      goto out;
    }
    for (int p = 0; p < np && n > 0; p++) {
      struct h_conn *c = &h.c[pconn[p]];
      short rev = pfd[p].revents;
      if (!rev) continue;
      if (c->state == H_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
          h_connect_failed(&h, c, err);
          continue;
        }
        c->backoff_ms = 0;
        c->state = H_BUSY;
        rev = POLLOUT;
      }
      if (c->state == H_IDLE) {
        /* Data or EOF on an idle keep-alive connection: the server closed
         * it (idle timeout) or misbehaves; either way start afresh. */
        h_close(c);
        continue;
      }
      size_t want = h.reqlen[c->req % (uint64_t)h.nq];
      if ((rev & POLLOUT) && c->w_off < want) {
        ssize_t w = send(c->fd, h.reqtext[c->req % (uint64_t)h.nq] + c->w_off, want - c->w_off,
                         MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          char ex[160];
          snprintf(ex, sizeof ex, "send: %s", strerror(errno));
          h_fail(&h, c, "send", ex);
          continue;
        }
        if (w > 0) c->w_off += (size_t)w;
      }
      if (rev & (POLLIN | POLLHUP | POLLERR)) {
        if (c->cap - c->len < 65536) {
          if (c->cap >= LG_HTTP_MAX_RESPONSE) {
            h_fail(&h, c, "bad_response", "response over 64 MiB");
            continue;
          }
          size_t nc = c->cap ? 2 * c->cap : 131072;
          char *nb = jp_realloc(c->buf, nc);
          if (!nb) { rc = JP_ENOMEM; goto out; }
          c->buf = nb;
          c->cap = nc;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
          char ex[160];
          snprintf(ex, sizeof ex, "%s", r == 0 ? "connection closed before the answer"
                                               : strerror(errno));
          h_fail(&h, c, "closed", ex);
          continue;
        }
        if (r > 0) {
          c->len += (size_t)r;
          c->buf[c->len] = '\0';
          h_parse(&h, c);
        }
      }
    }
  }
  rc = 0;
out:
  for (int i = 0; h.c && i < o->connections; i++) {
    h_close(&h.c[i]);
    jp_free(h.c[i].buf);
  }
  for (int i = 0; h.reqtext && i < q->n; i++) jp_free(h.reqtext[i]);
  jp_free(h.reqtext);
  jp_free(h.reqlen);
  jp_free(h.c);
  jp_free(h.queue);
  jp_free(pfd);
  jp_free(pconn);
  if (h.ai) freeaddrinfo(h.ai);
  return rc;
}

/* ---- report ----------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const float *v, size_t n, double p)
{
  if (!n) return NAN;
  size_t r = (size_t)ceil(p * (double)n);
  return v[r ? r - 1 : 0];
}

static int put_num(struct jp_buf *b, const char *key, double v, int comma)
{
  if (!isfinite(v)) return jp_buf_printf(b, "%s\"%s\":null", comma ? "," : "", key);
  return jp_buf_printf(b, "%s\"%s\":%.3f", comma ? "," : "", key, v);
}

static int report(const struct lg_opts *o, const struct lg_sched *sc, struct lg_stats *st)
{
  struct jp_buf b;
  int rc = 0;
  qsort(st->lat_ms, st->n_lat, sizeof *st->lat_ms, cmp_float);
  double sum = 0;
  for (size_t i = 0; i < st->n_lat; i++) sum += st->lat_ms[i];
  double mean = st->n_lat ? sum / (double)st->n_lat : NAN;
  double p50 = pct(st->lat_ms, st->n_lat, 0.50), p90 = pct(st->lat_ms, st->n_lat, 0.90);
  double p99 = pct(st->lat_ms, st->n_lat, 0.99), p999 = pct(st->lat_ms, st->n_lat, 0.999);
  double mn = st->n_lat ? st->lat_ms[0] : NAN, mx = st->n_lat ? st->lat_ms[st->n_lat - 1] : NAN;
  /* Answers per second over the window, or over the time the last answer
   * took to come if the server fell behind. */
  double span = o->duration;
  if (st->last_done_ns > st->window_start_ns) {
    double s = (double)(st->last_done_ns - st->window_start_ns) / 1e9;
    if (s > span) span = s;
  }
  double achieved = span > 0 ? (double)st->ok / span : 0;
  (void)sc;

  jp_buf_init(&b, 0);
  if (o->json) {
    rc = jp_buf_printf(&b, "{\"mode\":\"%s\",\"server\":", o->http ? "http" : "grpc");
    if (!rc) rc = jp_buf_json_str(&b, o->server, strlen(o->server));
    if (!rc)
      rc = jp_buf_printf(&b, ",\"target_qps\":%.3f,\"duration_s\":%.3f,\"warmup_s\":%.3f,"
                         "\"connections\":%d,\"k\":%d,\"deadline_ms\":%d,\"requests\":%" PRIu64
                         ",\"ok\":%" PRIu64 ",\"degraded\":%" PRIu64 ",\"errors\":%" PRIu64
                         ",\"achieved_qps\":%.3f,\"latency_ms\":{",
                         o->qps, o->duration, o->warmup, o->connections, o->k, o->deadline_ms,
                         st->requests, st->ok, st->degraded, st->errors, achieved);
    if (!rc) rc = put_num(&b, "min", mn, 0);
    if (!rc) rc = put_num(&b, "mean", mean, 1);
    if (!rc) rc = put_num(&b, "p50", p50, 1);
    if (!rc) rc = put_num(&b, "p90", p90, 1);
    if (!rc) rc = put_num(&b, "p99", p99, 1);
    if (!rc) rc = put_num(&b, "p999", p999, 1);
    if (!rc) rc = put_num(&b, "max", mx, 1);
    if (!rc) rc = jp_buf_puts(&b, "},\"errors_by_kind\":{");
    for (int i = 0; i < st->n_kinds && !rc; i++) {
      if (i) rc = jp_buf_putc(&b, ',');
      if (!rc) rc = jp_buf_json_str(&b, st->kinds[i].name, strlen(st->kinds[i].name));
      if (!rc) rc = jp_buf_printf(&b, ":%" PRIu64, st->kinds[i].n);
    }
    if (!rc) rc = jp_buf_puts(&b, "},\"error_examples\":{");
    for (int i = 0; i < st->n_kinds && !rc; i++) {
      if (i) rc = jp_buf_putc(&b, ',');
      if (!rc) rc = jp_buf_json_str(&b, st->kinds[i].name, strlen(st->kinds[i].name));
      if (!rc) rc = jp_buf_putc(&b, ':');
      if (!rc) rc = jp_buf_json_str(&b, st->kinds[i].example, strlen(st->kinds[i].example));
    }
    if (!rc)
      rc = jp_buf_printf(&b, "},\"generator\":{\"late_sends\":%" PRIu64 ",\"max_lag_ms\":%.3f,"
                         "\"queued\":%" PRIu64 "}}\n", st->late, (double)st->max_lag_ns / 1e6,
                         st->queued);
  } else {
    rc = jp_buf_printf(&b, "japlaid loadgen: %s %s, %.6g qps for %.6g s (+%.6g s warm-up), "
                       "%d connection(s), k %d, deadline %d ms\n"
                       "  requests %" PRIu64 ": ok %" PRIu64 " (degraded %" PRIu64 "), errors %"
                       PRIu64 "\n  achieved %.2f qps\n",
                       o->http ? "http" : "grpc", o->server, o->qps, o->duration, o->warmup,
                       o->connections, o->k, o->deadline_ms, st->requests, st->ok, st->degraded,
                       st->errors, achieved);
    if (!rc && st->n_lat)
      rc = jp_buf_printf(&b, "  latency ms from the intended send time: p50 %.2f  p90 %.2f  "
                         "p99 %.2f  p99.9 %.2f  (min %.2f, mean %.2f, max %.2f)\n",
                         p50, p90, p99, p999, mn, mean, mx);
    else if (!rc)
      rc = jp_buf_puts(&b, "  latency: no request was answered\n");
    if (!rc)
      rc = jp_buf_printf(&b, "  generator: %" PRIu64 " sends late by > %.0f ms (max lag %.2f ms)",
                         st->late, LG_LATE_NS / 1e6, (double)st->max_lag_ns / 1e6);
    if (!rc && o->http)
      rc = jp_buf_printf(&b, ", %" PRIu64 " queued for a connection", st->queued);
    if (!rc) rc = jp_buf_putc(&b, '\n');
    for (int i = 0; i < st->n_kinds && !rc; i++)
      rc = jp_buf_printf(&b, "  error %s: %" PRIu64 " (e.g. %s)\n", st->kinds[i].name,
                         st->kinds[i].n, st->kinds[i].example);
  }
  if (!rc) fwrite(b.data, 1, b.len, stdout);
  fflush(stdout);
  jp_buf_fini(&b);
  return rc;
}

/* ---- command ------------------------------------------------------------------------- */

int cmd_loadgen(int argc, char **argv)
{
  struct lg_opts o = {0};
  struct lg_queries q = {0};
  struct lg_stats st;
  struct lg_sched sc = {0};
  long v;
  double d;
  int rc;

  o.k = 10;
  o.deadline_ms = LG_DEFAULT_DEADLINE_MS;
  o.qps = -1;
  o.duration = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    } else if (!strcmp(a, "--http")) {
      o.http = 1;
      continue;
    } else if (!strcmp(a, "--json")) {
      o.json = 1;
      continue;
    } else if (!strcmp(a, "--server") && val) {
      o.server = val;
    } else if (!strcmp(a, "--queries") && val) {
      o.queries = val;
    } else if (!strcmp(a, "--qps")) {
      if (cli_parse_float("loadgen", a, val, 1e-3, 1e6, &d)) return CLI_USAGE;
      o.qps = d;
    } else if (!strcmp(a, "--duration")) {
      if (cli_parse_float("loadgen", a, val, 1e-3, 86400, &d)) return CLI_USAGE;
      o.duration = d;
    } else if (!strcmp(a, "--warmup")) {
      if (cli_parse_float("loadgen", a, val, 0, 86400, &d)) return CLI_USAGE;
      o.warmup = d;
    } else if (!strcmp(a, "--connections")) {
      if (cli_parse_int("loadgen", a, val, 1, 1024, &v)) return CLI_USAGE;
      o.connections = (int)v;
    } else if (!strcmp(a, "--k") || !strcmp(a, "-k")) {
      if (cli_parse_int("loadgen", a, val, 1, 1000, &v)) return CLI_USAGE;
      o.k = (int)v;
    } else if (!strcmp(a, "--deadline-ms")) {
      if (cli_parse_int("loadgen", a, val, 1, 3600000, &v)) return CLI_USAGE;
      o.deadline_ms = (int)v;
    } else {
      return cli_usage_error("loadgen", "unknown option %s (or it needs a value)", a);
    }
    i++;
  }
  if (!o.server || !o.queries || o.qps < 0 || o.duration < 0)
    return cli_usage_error("loadgen", "--server, --queries, --qps and --duration are required");
  if (!o.connections) o.connections = o.http ? 8 : 1;
  double total = ceil((o.warmup + o.duration) * o.qps);
  if (total > LG_MAX_REQUESTS)
    return cli_usage_error("loadgen", "(warmup + duration) x qps is %.0f requests; the limit is "
                           "%.0f", total, LG_MAX_REQUESTS);
  sc.n = total < 1 ? 1 : (uint64_t)total;
  sc.period_ns = 1e9 / o.qps;
  /* Measured: due at or after t0 + warmup. */
  sc.first_measured = (uint64_t)ceil(o.warmup * o.qps - 1e-9);
  if (sc.first_measured >= sc.n) sc.first_measured = sc.n - 1;

  if ((rc = queries_load(o.queries, &q)) < 0) return cli_fail("loadgen", rc);
  memset(&st, 0, sizeof st);
  pthread_mutex_init(&st.mu, NULL);
  if (!(st.lat_ms = jp_malloc((size_t)(sc.n - sc.first_measured) * sizeof *st.lat_ms))) {
    queries_free(&q);
    return cli_fail("loadgen", JP_ENOMEM);
  }
  signal(SIGPIPE, SIG_IGN);
  rc = o.http ? run_http(&o, &q, &sc, &st) : run_grpc(&o, &q, &sc, &st);
  if (rc == 0) rc = report(&o, &sc, &st);
  jp_free(st.lat_ms);
  pthread_mutex_destroy(&st.mu);
  queries_free(&q);
  return rc < 0 ? cli_fail("loadgen", rc) : CLI_OK;
}
