/* server.c: the unary gRPC server framework (see server.h).
 *
 * Life of a call. Each completion queue has requests posted for the
 * methods it serves (the work queues: every method not flagged
 * RPC_METHOD_CONTROL; the control queue: health Check, the control methods
 * and the generic request that catches unregistered methods). A request is
 * a heap "slot" whose address is the tag. When a call arrives (state
 * REQUESTED), the worker that dequeued it posts a replacement request first,
 * so the number waiting stays constant, then serves the call: checks,
 * unpack, handler, and one final batch (initial metadata, message, status,
 * RECV_CLOSE_ON_SERVER) tagged with the same slot in state FINISHING. When
 * that batch completes, whichever worker of the queue dequeues it releases
 * the call and returns the slot to the queue's free list. Slots are reused,
 * and so are call arenas, which come from a server-wide pool only while a
 * call is being served (posted requests hold none), so a warm server does
 * not allocate per call and idle requests cost a few hundred bytes.
 *
 * Shutdown: grpc_server_shutdown_and_notify; gRPC fails the posted
 * requests (success = 0: such slots are recycled, never re-posted) and
 * signals the shutdown tag once its connections are gone. That tag does
 * not wait for handlers still running, so the server also counts the tags
 * gRPC still owes it (`outstanding`: posted requests, owed final batches)
 * and shuts the queues down only when that count is zero: a request posted
 * or a batch started on a queue that is shutting down is a gRPC assertion
 * failure. */
#include "rpc/server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/limits.h"
#include "rpc/pb.h"
#include "rpc/rpc_int.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

#define RPC_HEALTH_CHECK_METHOD "/grpc.health.v1.Health/Check"
/* Health names: "" plus one per service; 32 is far more than any program
 * here registers, and keeps the table a fixed array. */
#define RPC_MAX_HEALTH_NAMES 32
#define RPC_MAX_SERVICE_NAME 128
/* A call whose arena grew past this gives its blocks back afterwards, so one
 * big request does not pin its memory in every pooled arena that ever
 * served one. */
#define RPC_ARENA_TRIM_BYTES ((size_t)4 << 20)
#define RPC_DEFAULT_ARENA_LIMIT ((size_t)256 << 20)
#define RPC_DEFAULT_THREADS 2            /* the machines here have 2 cores */
/* Posted requests per method per polling worker. Calls beyond the posted
 * requests wait unmatched inside gRPC, and grpc_server_shutdown cancels
 * those (the client sees CANCELLED) instead of letting them drain; matched
 * calls wait in our queue and are served during the drain. So post enough
 * for a burst: 16 per worker, at a few hundred bytes each. */
#define RPC_DEFAULT_REQUESTS_PER_METHOD 1
/* Clients may send keepalive pings this often without being disconnected
 * (gRPC's server default allows one per 5 minutes, which makes a client
 * with a shorter keepalive get GOAWAY "too_many_pings"). */
#define RPC_MIN_CLIENT_PING_MS 5000

enum slot_state { SLOT_REQUESTED = 0, SLOT_FINISHING = 1 };

struct rpc_queue;
struct rpc_slot;

struct rpc_ctx {
  rpc_server *srv;
  struct rpc_slot *slot;
  struct jp_arena *arena;             /* this call's memory (pooled, set while served) */
  ProtobufCAllocator pb_alloc;        /* unpacks into `arena`, notes exhaustion */
  int arena_exhausted;                /* an unpack allocation hit the arena limit */
  uint64_t start_ns;                  /* jp_now_ns() when the call was taken */
  uint64_t deadline_ns;               /* jp_now_ns() clock; UINT64_MAX = none */
  size_t request_bytes;
  atomic_int finished;                /* rpc_ctx_finish ran */
};

struct rpc_slot {
  enum slot_state state;
  struct rpc_queue *q;                /* the queue it was posted on */
  int mi;                             /* index into srv->methods; -1 = generic request */
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;             /* request metadata */
  grpc_call_details details;          /* generic requests only (method name) */
  grpc_byte_buffer *payload;          /* registered methods: the request */
  grpc_byte_buffer *response;         /* what the final batch sends */
  int cancelled;                      /* RECV_CLOSE_ON_SERVER result */
  struct rpc_ctx ctx;
  struct rpc_slot *next;              /* queue free list */
};

/* A completion queue, its posted requests' slots and the workers on it. */
struct rpc_queue {
  rpc_server *srv;
  grpc_completion_queue *cq;
  int control;                        /* the control queue */
  int n_workers;                      /* threads meant to poll it */
  int n_started;                      /* of which running */
  pthread_mutex_t mu;                 /* guards free */
  struct rpc_slot *free;
};

struct rpc_worker {
  struct rpc_queue *q;
  int index;
  pthread_t thread;
  int started;
};

/* A pooled call arena (first member, so the node is the arena). */
struct arena_node {
  struct jp_arena a;
  struct arena_node *next;
};

struct rpc_method_reg {
  struct rpc_method m;
  void *handle;                       /* grpc_server_register_method's */
};

struct health_entry {
  char name[RPC_MAX_SERVICE_NAME];
  int status;                         /* enum rpc_health */
};

enum srv_state { SRV_CREATED = 0, SRV_RUNNING, SRV_STOPPED };

struct rpc_server {
  struct rpc_server_opts o;
  char address[300];                  /* host:port with the bound port */
  int port;
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  struct rpc_method_reg *methods;     /* the caller's table + health Check */
  int n_methods;
  struct rpc_queue *queues;           /* n_cqs work queues, then the control queue */
  int n_queues;
  struct rpc_worker *workers;         /* n_threads workers, then the control thread */
  int n_workers;
  enum srv_state state;
  int all_started;                    /* every thread runs: every queue is polled */
  int shutdown_started;
  atomic_int force_stop;              /* grace expired: handlers should stop */
  atomic_uint_fast64_t calls_total;
  atomic_int in_flight;
  /* Tags gRPC still owes us (posted requests + started batches). The
   * queues may shut down only at zero: a worker that has just dequeued a
   * call is about to post a replacement and start a batch. */
  atomic_int outstanding;
  pthread_mutex_t arena_mu;           /* guards arenas */
  struct arena_node *arenas;          /* pooled call arenas */
  pthread_mutex_t health_mu;
  struct health_entry health[RPC_MAX_HEALTH_NAMES];
  int n_health;
};

static int h_health_check(struct rpc_ctx *rc, const ProtobufCMessage *req,
                          ProtobufCMessage **resp);

void rpc_server_opts_default(struct rpc_server_opts *o)
{
  memset(o, 0, sizeof *o);
  o->listen = "127.0.0.1:0";
  o->n_threads = RPC_DEFAULT_THREADS;
  o->n_cqs = 0;   /* one per worker */
  o->requests_per_method = RPC_DEFAULT_REQUESTS_PER_METHOD;
  o->max_message_bytes = JP_RPC_DEFAULT_MAX_MESSAGE_BYTES;
  o->arena_limit_bytes = RPC_DEFAULT_ARENA_LIMIT;
}

/* ---- addresses ------------------------------------------------------------ */

/* Split "host:port" / "[v6]:port" into host (no brackets); 0 or -1. */
static int addr_host(const char *addr, char *host, size_t cap)
{
  const char *h = addr, *end;
  if (addr[0] == '[') {
    end = strchr(addr, ']');
    if (!end || end[1] != ':') return -1;
    h = addr + 1;
  } else {
    end = strrchr(addr, ':');
    if (!end) return -1;
  }
  size_t n = (size_t)(end - h);
  if (n == 0 || n >= cap) return -1;
  memcpy(host, h, n);
  host[n] = '\0';
  return 0;
}

int rpc_addr_is_loopback(const char *addr)
{
  char host[256];
  if (!addr) return 0;
  if (strncmp(addr, "unix:", 5) == 0) return 1;
  /* gRPC accepts scheme-prefixed targets ("ipv4:127.0.0.1:1"). */
  if (strncmp(addr, "ipv4:", 5) == 0) addr += 5;
  else if (strncmp(addr, "ipv6:", 5) == 0) addr += 5;
  if (addr_host(addr, host, sizeof host) < 0) return 0;
  if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0) return 1;
  unsigned a, b, c, d;
  char extra;
  const char *v4 = host;
  if (strncmp(host, "::ffff:", 7) == 0) v4 = host + 7;
  if (sscanf(v4, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
      c < 256 && d < 256)
    return 1;
  return 0;
}

/* ---- health table ------------------------------------------------------------ */

static int health_find(rpc_server *s, const char *name)
{
  for (int i = 0; i < s->n_health; i++)
    if (strcmp(s->health[i].name, name) == 0) return i;
  return -1;
}

int rpc_server_set_health(rpc_server *s, const char *service, enum rpc_health st)
{
  if (st != RPC_HEALTH_SERVING && st != RPC_HEALTH_NOT_SERVING &&
      st != RPC_HEALTH_SERVICE_UNKNOWN && st != RPC_HEALTH_UNKNOWN)
    return jp_err(JP_EINVAL, "health status %d is not a ServingStatus", (int)st);
  if (service && strlen(service) >= RPC_MAX_SERVICE_NAME)
    return jp_err(JP_EINVAL, "health service name longer than %d bytes", RPC_MAX_SERVICE_NAME - 1);
  int rc = 0;
  pthread_mutex_lock(&s->health_mu);
  if (!service) {
    if (st == RPC_HEALTH_SERVICE_UNKNOWN) s->n_health = 0;
    for (int i = 0; i < s->n_health; i++) s->health[i].status = st;
  } else {
    int i = health_find(s, service);
    if (st == RPC_HEALTH_SERVICE_UNKNOWN) {
      if (i >= 0) s->health[i] = s->health[--s->n_health];
    } else if (i >= 0) {
      s->health[i].status = st;
    } else if (s->n_health < RPC_MAX_HEALTH_NAMES) {
      snprintf(s->health[s->n_health].name, RPC_MAX_SERVICE_NAME, "%s", service);
      s->health[s->n_health++].status = st;
    } else {
      rc = jp_err(JP_ETOOBIG, "more than %d health service names", RPC_MAX_HEALTH_NAMES);
    }
  }
  pthread_mutex_unlock(&s->health_mu);
  return rc;
}

/* grpc.health.v1.Health/Check. Unknown names answer NOT_FOUND, as
 * grpc/doc/health-checking.md specifies. */
static int h_health_check(struct rpc_ctx *rc, const ProtobufCMessage *req,
                          ProtobufCMessage **resp)
{
  const Grpc__Health__V1__HealthCheckRequest *r = (const Grpc__Health__V1__HealthCheckRequest *)req;
  rpc_server *s = rc->srv;
  const char *name = r->service ? r->service : "";
  int st = -1;
  pthread_mutex_lock(&s->health_mu);
  int i = health_find(s, name);
  if (i >= 0) st = s->health[i].status;
  pthread_mutex_unlock(&s->health_mu);
  if (st < 0) return jp_err(JP_ENOTFOUND, "unknown service \"%.128s\"", name);
  Grpc__Health__V1__HealthCheckResponse *out = (Grpc__Health__V1__HealthCheckResponse *)rpc_ctx_new(
    rc, &grpc__health__v1__health_check_response__descriptor);
  if (!out) return jp_err(JP_ENOMEM, "health response");
  out->status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
  *resp = &out->base;
  return 0;
}

/* ---- slots ------------------------------------------------------------------- */

static void *ctx_pb_alloc(void *ud, size_t n)
{
  struct rpc_ctx *c = ud;
  void *p = jp_arena_alloc(c->arena, n ? n : 1);
  if (!p) c->arena_exhausted = 1;
  return p;
}

static void ctx_pb_free(void *ud, void *p)
{
  (void)ud;
  (void)p;   /* released with the arena */
}

static struct jp_arena *arena_get(rpc_server *s)
{
  pthread_mutex_lock(&s->arena_mu);
  struct arena_node *n = s->arenas;
  if (n) s->arenas = n->next;
  pthread_mutex_unlock(&s->arena_mu);
  if (!n) {
    n = jp_malloc(sizeof *n);
    if (!n) return NULL;
    jp_arena_init(&n->a, 0, s->o.arena_limit_bytes);
  }
  return &n->a;
}

static void arena_put(rpc_server *s, struct jp_arena *a)
{
  struct arena_node *n = (struct arena_node *)a;
  if (a->used > RPC_ARENA_TRIM_BYTES) jp_arena_fini(a);   /* usable again: fini leaves it empty */
  else jp_arena_reset(a);
  pthread_mutex_lock(&s->arena_mu);
  n->next = s->arenas;
  s->arenas = n;
  pthread_mutex_unlock(&s->arena_mu);
}

static struct rpc_slot *slot_get(struct rpc_queue *q)
{
  pthread_mutex_lock(&q->mu);
  struct rpc_slot *sl = q->free;
  if (sl) q->free = sl->next;
  pthread_mutex_unlock(&q->mu);
  if (!sl) {
    sl = jp_calloc(1, sizeof *sl);
    if (!sl) return NULL;
    sl->q = q;
    grpc_metadata_array_init(&sl->md);
    grpc_call_details_init(&sl->details);
    sl->ctx.pb_alloc.alloc = ctx_pb_alloc;
    sl->ctx.pb_alloc.free = ctx_pb_free;
    sl->ctx.pb_alloc.allocator_data = &sl->ctx;
  }
  sl->next = NULL;
  sl->state = SLOT_REQUESTED;
  sl->ctx.srv = q->srv;
  sl->ctx.slot = sl;
  return sl;
}

static void slot_destroy(struct rpc_slot *sl)
{
  grpc_metadata_array_destroy(&sl->md);
  grpc_call_details_destroy(&sl->details);
  jp_free(sl);
}

static void slot_put(struct rpc_slot *sl)
{
  struct rpc_queue *q = sl->q;
  pthread_mutex_lock(&q->mu);
  sl->next = q->free;
  q->free = sl;
  pthread_mutex_unlock(&q->mu);
}

/* Release what one call held and keep the slot for the next. */
static void slot_recycle(struct rpc_slot *sl)
{
  if (sl->call) grpc_call_unref(sl->call);
  sl->call = NULL;
  grpc_metadata_array_destroy(&sl->md);
  grpc_metadata_array_init(&sl->md);
  grpc_call_details_destroy(&sl->details);
  grpc_call_details_init(&sl->details);
  if (sl->payload) grpc_byte_buffer_destroy(sl->payload);
  if (sl->response) grpc_byte_buffer_destroy(sl->response);
  sl->payload = sl->response = NULL;
  sl->cancelled = 0;
  if (sl->ctx.arena) arena_put(sl->q->srv, sl->ctx.arena);
  sl->ctx.arena = NULL;
  sl->ctx.arena_exhausted = 0;
  slot_put(sl);
}

/* Post one request for method mi (-1 = generic) on queue q. */
static void post_request(struct rpc_queue *q, int mi)
{
  rpc_server *s = q->srv;
  struct rpc_slot *sl = slot_get(q);
  if (!sl) {
    JP_LOG_ERROR("rpc: out of memory posting a request; one fewer is waiting");
    return;
  }
  sl->mi = mi;
  atomic_fetch_add(&s->outstanding, 1);
  grpc_call_error e;
  if (mi < 0)
    e = grpc_server_request_call(s->server, &sl->call, &sl->details, &sl->md, q->cq, q->cq, sl);
  else
    e = grpc_server_request_registered_call(s->server, s->methods[mi].handle, &sl->call,
                                            &sl->deadline, &sl->md, &sl->payload, q->cq, q->cq,
                                            sl);
  if (e != GRPC_CALL_OK) {
    JP_LOG_ERROR("rpc: posting a request for %s failed (grpc_call_error %d)",
                 mi < 0 ? "unknown methods" : s->methods[mi].m.name, (int)e);
    atomic_fetch_sub(&s->outstanding, 1);
    slot_put(sl);
  }
}

/* Does queue q serve method mi? */
static int queue_serves(const struct rpc_queue *q, const struct rpc_method_reg *m)
{
  return !!(m->m.flags & RPC_METHOD_CONTROL) == !!q->control;
}

/* ---- answering --------------------------------------------------------------- */

static int is_client_fault(grpc_status_code st)
{
  switch (st) {
  case GRPC_STATUS_INVALID_ARGUMENT: case GRPC_STATUS_NOT_FOUND: case GRPC_STATUS_ALREADY_EXISTS:
  case GRPC_STATUS_DEADLINE_EXCEEDED: case GRPC_STATUS_CANCELLED: case GRPC_STATUS_RESOURCE_EXHAUSTED:
  case GRPC_STATUS_FAILED_PRECONDITION: case GRPC_STATUS_UNIMPLEMENTED: case GRPC_STATUS_OUT_OF_RANGE:
  case GRPC_STATUS_UNAVAILABLE:
    return 1;
  default:
    return 0;
  }
}

/* Start the final batch. After grpc_call_start_batch the slot belongs to the
 * worker's queue and must not be touched. */
static void send_final(struct rpc_slot *sl, grpc_status_code st, const char *details)
{
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  n++;
  if (sl->response) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = sl->response;
    n++;
  }
  /* status_details is not retained past start_batch (grpc_types.h). */
  grpc_slice det = grpc_slice_from_copied_string(details ? details : "");
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = st;
  ops[n].data.send_status_from_server.status_details = details && *details ? &det : NULL;
  n++;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n].data.recv_close_on_server.cancelled = &sl->cancelled;
  n++;
  sl->state = SLOT_FINISHING;
  rpc_server *s = sl->q->srv;   /* this batch was counted in `outstanding` at dispatch */
  grpc_call_error e = grpc_call_start_batch(sl->call, ops, n, sl, NULL);
  grpc_slice_unref(det);
  if (e != GRPC_CALL_OK) {
    /* No tag will come for the failed batch. Cancel the call and start an
     * empty batch, whose tag gRPC posts at once, so the slot is still
     * recycled by its worker. */
    JP_LOG_ERROR("rpc: final batch refused (grpc_call_error %d); cancelling the call", (int)e);
    grpc_call_cancel(sl->call, NULL);
    e = grpc_call_start_batch(sl->call, NULL, 0, sl, NULL);
    if (e != GRPC_CALL_OK) {
      JP_LOG_ERROR("rpc: empty batch refused too (grpc_call_error %d); a call slot leaks", (int)e);
      atomic_fetch_sub(&s->outstanding, 1);
      atomic_fetch_sub(&s->in_flight, 1);
    }
  }
}

static void log_call(const struct rpc_ctx *c, grpc_status_code st, const char *details,
                     size_t resp_bytes)
{
  int level = st == GRPC_STATUS_OK   ? JP_LOG_LEVEL_DEBUG
              : is_client_fault(st) ? JP_LOG_LEVEL_WARN
                                    : JP_LOG_LEVEL_ERROR;
  if (!JP_LOG_ENABLED(level)) return;
  double ms = (double)(jp_now_ns() - c->start_ns) / 1e6;
  size_t idlen = 0;
  const char *id = rpc_ctx_metadata(c, "x-request-id", &idlen);
  jp_log_write(level, __FILE__, __LINE__, "%s %s %.2f ms in=%zu out=%zu%s%.*s%s%s",
               rpc_ctx_method(c), rpc_status_name(st), ms, c->request_bytes, resp_bytes,
               id ? " id=" : "", id ? (int)(idlen > 64 ? 64 : idlen) : 0, id ? id : "",
               st != GRPC_STATUS_OK ? ": " : "", st != GRPC_STATUS_OK && details ? details : "");
}

void rpc_ctx_finish(struct rpc_ctx *c, int code, ProtobufCMessage *resp)
{
  struct rpc_slot *sl = c->slot;
  rpc_server *s = c->srv;
  if (atomic_exchange(&c->finished, 1)) {
    JP_LOG_ERROR("rpc: %s finished twice (handler bug); second answer dropped", rpc_ctx_method(c));
    return;
  }
  if (code > 0) code = jp_err(JP_EINTERNAL, "handler returned %d", code);
  if (code == 0 && !resp) code = jp_err(JP_EINTERNAL, "handler returned no response");
  /* The caller stopped waiting at its deadline; a late answer would be
   * thrown away by gRPC anyway, so say what happened instead. */
  if (code == 0 && jp_now_ns() > c->deadline_ns)
    code = jp_err(JP_ETIMEOUT, "deadline exceeded while serving %s", rpc_ctx_method(c));
  size_t resp_bytes = 0;
  if (code == 0) {
    resp_bytes = protobuf_c_message_get_packed_size(resp);
    if (resp_bytes > s->o.max_message_bytes) {
      code = jp_err(JP_ETOOBIG, "response of %zu bytes exceeds the %zu-byte message limit",
                    resp_bytes, s->o.max_message_bytes);
    } else {
      sl->response = rpc_pb_to_bb(resp);
      if (!sl->response) code = jp_err(JP_ENOMEM, "packing a %zu-byte response", resp_bytes);
    }
  }
  grpc_status_code st = rpc_status_from_err(code);
  const char *details = code ? jp_errmsg(code) : NULL;
  log_call(c, st, details, code ? 0 : resp_bytes);
  send_final(sl, st, details);
}

/* Serve one call of a registered method (on the worker's thread). */
static void serve(struct rpc_slot *sl)
{
  rpc_server *s = sl->q->srv;
  struct rpc_ctx *c = &sl->ctx;
  const struct rpc_method *m = &s->methods[sl->mi].m;
  c->start_ns = jp_now_ns();
  c->deadline_ns = rpc__deadline_to_ns(sl->deadline);
  c->request_bytes = rpc_bb_length(sl->payload);
  atomic_store(&c->finished, 0);
  atomic_fetch_add(&s->calls_total, 1);
  atomic_fetch_add(&s->in_flight, 1);
  /* The final batch is owed from now on, also while an RPC_ASYNC handler
   * holds the call on another thread: count it before this worker lets go
   * of the request's own count. */
  atomic_fetch_add(&s->outstanding, 1);
  jp_err_clear();
  c->arena = arena_get(s);
  if (!c->arena) {
    rpc_ctx_finish(c, jp_err(JP_ENOMEM, "no memory for a call arena"), NULL);
    return;
  }

  size_t cap = m->max_request_bytes ? m->max_request_bytes : s->o.max_message_bytes;
  if (c->request_bytes > cap) {
    rpc_ctx_finish(c, jp_err(JP_ETOOBIG, "request of %zu bytes exceeds the %zu-byte limit of %s",
                             c->request_bytes, cap, m->name), NULL);
    return;
  }
  int rc = rpc_ctx_check(c);
  if (rc < 0) {
    rpc_ctx_finish(c, rc, NULL);
    return;
  }
  ProtobufCMessage *req = NULL;
  rc = rpc_pb_from_bb(sl->payload, m->request, &c->pb_alloc, &req);
  if (rc < 0) {
    if (c->arena_exhausted)
      rc = jp_err(JP_ETOOBIG, "request needs more than the %zu-byte per-call memory limit",
                  s->o.arena_limit_bytes);
    rpc_ctx_finish(c, rc, NULL);
    return;
  }
  /* The payload is parsed; give its memory back before the handler runs. */
  grpc_byte_buffer_destroy(sl->payload);
  sl->payload = NULL;

  ProtobufCMessage *resp = NULL;
  rc = m->handler(c, req, &resp);
  if (rc == RPC_ASYNC) return;
  rpc_ctx_finish(c, rc, resp);
}

static void serve_unknown(struct rpc_slot *sl)
{
  char msg[300];
  const grpc_slice *ms = &sl->details.method;
  int len = (int)GRPC_SLICE_LENGTH(*ms);
  snprintf(msg, sizeof msg, "unknown method %.*s", len > 200 ? 200 : len,
           (const char *)GRPC_SLICE_START_PTR(*ms));
  atomic_fetch_add(&sl->q->srv->calls_total, 1);
  atomic_fetch_add(&sl->q->srv->in_flight, 1);
  atomic_fetch_add(&sl->q->srv->outstanding, 1);   /* the final batch, as in serve() */
  JP_LOG_WARN("%s", msg);
  send_final(sl, GRPC_STATUS_UNIMPLEMENTED, msg);
}

static void *worker_main(void *arg)
{
  struct rpc_worker *w = arg;
  struct rpc_queue *q = w->q;
  rpc_server *s = q->srv;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    struct rpc_slot *sl = ev.tag;
    if (sl->state == SLOT_REQUESTED) {
      if (!ev.success) {
        /* The server is shutting down and failed this request: no call,
         * and nothing to re-post. */
        sl->call = NULL;
        slot_recycle(sl);
        atomic_fetch_sub(&s->outstanding, 1);
        continue;
      }
      /* Serve first, re-post after: while this worker is busy its queue
       * holds no request for the method, so gRPC hands the next call of the
       * same connection to another worker's queue instead of parking it
       * behind this one (see server.h, "Threads"). */
      int mi = sl->mi;
      if (mi < 0) serve_unknown(sl);
      else serve(sl);
      post_request(q, mi);
    } else {
      atomic_fetch_sub(&s->in_flight, 1);
      slot_recycle(sl);
    }
    /* Last: the replacement request and the owed final batch are already
     * counted, so the count cannot touch zero while work remains. */
    atomic_fetch_sub(&s->outstanding, 1);
  }
  return NULL;
}

/* ---- server life ------------------------------------------------------------- */

static int add_service_names(rpc_server *s)
{
  int rc = rpc_server_set_health(s, "", RPC_HEALTH_NOT_SERVING);
  for (int i = 0; rc == 0 && i < s->n_methods; i++) {
    const char *n = s->methods[i].m.name;   /* "/pkg.Svc/Method" */
    const char *slash = strchr(n + 1, '/');
    char svc[RPC_MAX_SERVICE_NAME];
    size_t len = (size_t)(slash - (n + 1));
    if (len >= sizeof svc) return jp_err(JP_EINVAL, "service name too long in %s", n);
    memcpy(svc, n + 1, len);
    svc[len] = '\0';
    if (strcmp(svc, "grpc.health.v1.Health") == 0) continue;
    if (health_find(s, svc) < 0) rc = rpc_server_set_health(s, svc, RPC_HEALTH_NOT_SERVING);
  }
  return rc;
}

static int check_table(const struct rpc_method *methods, int n)
{
  if (n < 0 || (n > 0 && !methods)) return jp_err(JP_EINVAL, "bad method table");
  for (int i = 0; i < n; i++) {
    const struct rpc_method *m = &methods[i];
    if (!m->name || m->name[0] != '/' || !strchr(m->name + 1, '/') || !m->handler || !m->request)
      return jp_err(JP_EINVAL, "method table entry %d is incomplete or not \"/pkg.Service/Method\"", i);
    for (int j = 0; j < i; j++)
      if (strcmp(methods[j].name, m->name) == 0)
        return jp_err(JP_EINVAL, "method %s is listed twice", m->name);
    if (strcmp(m->name, RPC_HEALTH_CHECK_METHOD) == 0)
      return jp_err(JP_EINVAL, "%s is built in", RPC_HEALTH_CHECK_METHOD);
  }
  return 0;
}

int rpc_server_create(const struct rpc_method *methods, int n_methods,
                      const struct rpc_server_opts *opts, rpc_server **out)
{
  struct rpc_server_opts o;
  *out = NULL;
  if (opts) o = *opts;
  else rpc_server_opts_default(&o);
  if (!o.listen || !*o.listen) o.listen = "127.0.0.1:0";
  if (o.n_threads <= 0) o.n_threads = RPC_DEFAULT_THREADS;
  if (o.n_cqs <= 0) o.n_cqs = o.n_threads;
  if (o.n_cqs > o.n_threads) o.n_cqs = o.n_threads;
  if (o.requests_per_method <= 0) o.requests_per_method = RPC_DEFAULT_REQUESTS_PER_METHOD;
  if (o.max_message_bytes == 0) o.max_message_bytes = JP_RPC_DEFAULT_MAX_MESSAGE_BYTES;
  if (o.max_message_bytes > (size_t)INT32_MAX)
    return jp_err(JP_EINVAL, "max message size %zu exceeds gRPC's 2 GiB", o.max_message_bytes);
  if (o.arena_limit_bytes == 0) o.arena_limit_bytes = RPC_DEFAULT_ARENA_LIMIT;
  int rc = check_table(methods, n_methods);
  if (rc < 0) return rc;
  if (!o.allow_remote && !rpc_addr_is_loopback(o.listen))
    return jp_err(JP_EINVAL,
                  "refusing to listen on %s: not a loopback address (the API has no "
                  "authentication; allow it explicitly to serve other hosts)", o.listen);

  rpc_server *s = jp_calloc(1, sizeof *s);
  if (!s) return jp_err(JP_ENOMEM, "rpc server");
  s->o = o;
  pthread_mutex_init(&s->health_mu, NULL);
  pthread_mutex_init(&s->arena_mu, NULL);
  s->n_methods = n_methods + 1;
  s->methods = jp_calloc((size_t)s->n_methods, sizeof *s->methods);
  s->n_queues = o.n_cqs + 1;
  s->queues = jp_calloc((size_t)s->n_queues, sizeof *s->queues);
  s->n_workers = o.n_threads + 1;
  s->workers = jp_calloc((size_t)s->n_workers, sizeof *s->workers);
  if (!s->methods || !s->queues || !s->workers) {
    rc = jp_err(JP_ENOMEM, "rpc server tables");
    goto fail_tables;
  }
  for (int i = 0; i < n_methods; i++) s->methods[i].m = methods[i];
  s->methods[n_methods].m = (struct rpc_method){
    RPC_HEALTH_CHECK_METHOD, h_health_check, &grpc__health__v1__health_check_request__descriptor,
    JP_RPC_MAX_SMALL_REQUEST_BYTES, RPC_METHOD_CONTROL};
  rc = add_service_names(s);
  if (rc < 0) goto fail_tables;
  for (int i = 0; i < s->n_queues; i++) {
    s->queues[i].srv = s;
    s->queues[i].control = i == s->n_queues - 1;
    pthread_mutex_init(&s->queues[i].mu, NULL);
  }
  for (int i = 0; i < s->n_workers; i++) {
    struct rpc_worker *w = &s->workers[i];
    w->index = i;
    /* Workers are dealt round-robin over the work queues; the last is the
     * control thread. */
    w->q = i == s->n_workers - 1 ? &s->queues[s->n_queues - 1] : &s->queues[i % o.n_cqs];
    w->q->n_workers++;
  }

  rpc__lib_ref();
  grpc_arg args[5];
  int na = 0;
  args[na++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                          {.integer = (int)o.max_message_bytes}};
  args[na++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                          {.integer = (int)o.max_message_bytes}};
  /* gRPC sets SO_REUSEPORT by default: a second server on the same port
   * would start silently and steal half the connections. */
  args[na++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}};
  args[na++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                          {.integer = RPC_MIN_CLIENT_PING_MS}};
  if (o.max_concurrent_streams > 0)
    args[na++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_CONCURRENT_STREAMS,
                            {.integer = o.max_concurrent_streams}};
  grpc_channel_args cargs = {(size_t)na, args};
  s->server = grpc_server_create(&cargs, NULL);
  s->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(s->server, s->shutdown_cq, NULL);
  for (int i = 0; i < s->n_queues; i++) {
    s->queues[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->queues[i].cq, NULL);
  }
  for (int i = 0; i < s->n_methods; i++) {
    s->methods[i].handle = grpc_server_register_method(
      s->server, s->methods[i].m.name, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (!s->methods[i].handle) {
      rc = jp_err(JP_EINVAL, "gRPC refused to register %s", s->methods[i].m.name);
      goto fail_server;
    }
  }
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  s->port = grpc_server_add_http2_port(s->server, o.listen, creds);
  grpc_server_credentials_release(creds);
  if (s->port <= 0) {
    rc = jp_err(JP_EUNAVAIL, "cannot listen on %s (address in use or invalid)", o.listen);
    goto fail_server;
  }
  if (strncmp(o.listen, "unix:", 5) == 0) {
    snprintf(s->address, sizeof s->address, "%s", o.listen);
  } else {
    char host[256];
    if (addr_host(o.listen, host, sizeof host) < 0) snprintf(host, sizeof host, "127.0.0.1");
    snprintf(s->address, sizeof s->address, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, s->port);
  }
  *out = s;
  return 0;

fail_server:
  rpc_server_destroy(s);
  return rc;
fail_tables:
  jp_free(s->methods);
  jp_free(s->queues);
  jp_free(s->workers);
  pthread_mutex_destroy(&s->health_mu);
  pthread_mutex_destroy(&s->arena_mu);
  jp_free(s);
  return rc;
}

int rpc_server_start(rpc_server *s)
{
  if (s->state != SRV_CREATED) return jp_err(JP_EINVAL, "server already started");
  grpc_server_start(s->server);
  s->state = SRV_RUNNING;
  /* Post before the threads run: each queue gets requests_per_method
   * requests per method it serves for every worker polling it, so every
   * worker can hold a call of any method at once. */
  for (int qi = 0; qi < s->n_queues; qi++) {
    struct rpc_queue *q = &s->queues[qi];
    int per = s->o.requests_per_method * q->n_workers;
    for (int mi = 0; mi < s->n_methods; mi++)
      if (queue_serves(q, &s->methods[mi]))
        for (int k = 0; k < per; k++) post_request(q, mi);
    if (q->control) post_request(q, -1);
  }
  for (int i = 0; i < s->n_workers; i++) {
    struct rpc_worker *w = &s->workers[i];
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      JP_LOG_ERROR("rpc: cannot start worker %d", i);
      rpc_server_shutdown(s, 0);
      return jp_err(JP_ENOMEM, "cannot start worker thread %d", i);
    }
    w->started = 1;
    w->q->n_started++;
  }
  s->all_started = 1;
  return 0;
}

int rpc_server_port(const rpc_server *s) { return s->port; }
const char *rpc_server_address(const rpc_server *s) { return s->address; }
uint64_t rpc_server_calls_total(const rpc_server *s)
{
  return atomic_load(&((rpc_server *)s)->calls_total);
}
int rpc_server_in_flight(const rpc_server *s) { return atomic_load(&((rpc_server *)s)->in_flight); }

/* Cancel what is still running: gRPC cancels the calls, and handlers see
 * JP_ECANCELLED from rpc_ctx_check(). */
static void force_stop(rpc_server *s)
{
  if (atomic_exchange(&s->force_stop, 1)) return;
  int n = rpc_server_in_flight(s);
  if (n > 0) JP_LOG_WARN("rpc: grace period over, cancelling %d call(s)", n);
  grpc_server_cancel_all_calls(s->server);
}

/* Wait for the shutdown tag, then for every call to be answered (the tag
 * only says the connections are gone: a handler may still be running, and
 * its final batch must start before the queues shut down). Past the grace
 * period, cancel and keep waiting. */
static void await_shutdown(rpc_server *s, int grace_ms)
{
  uint64_t until_ns = jp_now_ns() + (uint64_t)(grace_ms > 0 ? grace_ms : 0) * 1000000u;
  grpc_event ev = grpc_completion_queue_next(s->shutdown_cq, rpc__ns_to_deadline(until_ns), NULL);
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    force_stop(s);
    grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  }
  /* Polling is fine here: it runs once, at exit, for at most the grace
   * period plus the time handlers take to notice. */
  while (s->all_started && atomic_load(&s->outstanding) > 0) {
    if (jp_now_ns() >= until_ns) force_stop(s);
    jp_sleep_ms(2);
  }
}

/* Dequeue what is left on a queue nobody polls (a server never started). */
static void drain_unpolled(struct rpc_queue *q)
{
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type == GRPC_OP_COMPLETE) {
      struct rpc_slot *sl = ev.tag;
      sl->call = NULL;
      slot_recycle(sl);
    }
  }
}

void rpc_server_shutdown(rpc_server *s, int grace_ms)
{
  if (!s || s->shutdown_started) return;
  s->shutdown_started = 1;
  rpc_server_set_health(s, NULL, RPC_HEALTH_NOT_SERVING);
  if (s->server) {
    grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, s);
    await_shutdown(s, s->state == SRV_RUNNING ? grace_ms : 0);
  }
  for (int i = 0; i < s->n_queues; i++)
    if (s->queues[i].cq) grpc_completion_queue_shutdown(s->queues[i].cq);
  for (int i = 0; i < s->n_workers; i++) {
    if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
    s->workers[i].started = 0;
  }
  for (int i = 0; i < s->n_queues; i++)
    if (s->queues[i].cq && s->queues[i].n_started == 0) drain_unpolled(&s->queues[i]);
  for (int i = 0; i < s->n_queues; i++) {
    struct rpc_queue *q = &s->queues[i];
    while (q->free) {
      struct rpc_slot *sl = q->free;
      q->free = sl->next;
      slot_destroy(sl);
    }
  }
  s->state = SRV_STOPPED;
}

void rpc_server_destroy(rpc_server *s)
{
  if (!s) return;
  rpc_server_shutdown(s, 0);
  if (s->server) grpc_server_destroy(s->server);
  if (s->shutdown_cq) {
    grpc_completion_queue_shutdown(s->shutdown_cq);
    while (grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->shutdown_cq);
  }
  for (int i = 0; i < s->n_queues; i++) {
    if (s->queues[i].cq) grpc_completion_queue_destroy(s->queues[i].cq);
    pthread_mutex_destroy(&s->queues[i].mu);
  }
  int had_server = s->server != NULL;
  jp_free(s->methods);
  jp_free(s->queues);
  jp_free(s->workers);
  while (s->arenas) {
    struct arena_node *n = s->arenas;
    s->arenas = n->next;
    jp_arena_fini(&n->a);
    jp_free(n);
  }
  pthread_mutex_destroy(&s->health_mu);
  pthread_mutex_destroy(&s->arena_mu);
  jp_free(s);
  if (had_server) rpc__lib_unref();
}

/* ---- rpc_ctx ------------------------------------------------------------------ */

void *rpc_ctx_app(const struct rpc_ctx *rc) { return rc->srv->o.app; }
rpc_server *rpc_ctx_server(const struct rpc_ctx *rc) { return rc->srv; }
struct jp_arena *rpc_ctx_arena(struct rpc_ctx *rc) { return rc->arena; }
grpc_call *rpc_ctx_call(const struct rpc_ctx *rc) { return rc->slot->call; }
uint64_t rpc_ctx_deadline_ns(const struct rpc_ctx *rc) { return rc->deadline_ns; }

const char *rpc_ctx_method(const struct rpc_ctx *rc)
{
  return rc->slot->mi >= 0 ? rc->srv->methods[rc->slot->mi].m.name : "(unknown)";
}

ProtobufCMessage *rpc_ctx_new(struct rpc_ctx *rc, const ProtobufCMessageDescriptor *d)
{
  return rpc_pb_new(rc->arena, d);
}

int64_t rpc_ctx_time_left_ms(const struct rpc_ctx *rc)
{
  if (rc->deadline_ns == UINT64_MAX) return INT64_MAX;
  uint64_t now = jp_now_ns();
  if (now >= rc->deadline_ns) return -(int64_t)((now - rc->deadline_ns) / 1000000u);
  return (int64_t)((rc->deadline_ns - now) / 1000000u);
}

int rpc_ctx_check(const struct rpc_ctx *rc)
{
  if (atomic_load(&rc->srv->force_stop))
    return jp_err(JP_ECANCELLED, "server shutting down");
  if (rc->deadline_ns != UINT64_MAX) {
    uint64_t now = jp_now_ns();
    if (now > rc->deadline_ns)
      return jp_err(JP_ETIMEOUT, "deadline exceeded %.1f ms ago",
                    (double)(now - rc->deadline_ns) / 1e6);
  }
  return 0;
}

const char *rpc_ctx_metadata(const struct rpc_ctx *rc, const char *key, size_t *len)
{
  const grpc_metadata_array *md = &rc->slot->md;
  size_t kl = strlen(key);
  for (size_t i = 0; i < md->count; i++) {
    const grpc_slice *k = &md->metadata[i].key;
    if (GRPC_SLICE_LENGTH(*k) == kl && memcmp(GRPC_SLICE_START_PTR(*k), key, kl) == 0) {
      if (len) *len = GRPC_SLICE_LENGTH(md->metadata[i].value);
      return (const char *)GRPC_SLICE_START_PTR(md->metadata[i].value);
    }
  }
  if (len) *len = 0;
  return NULL;
}

const char *rpc_ctx_peer(struct rpc_ctx *rc)
{
  char *p = grpc_call_get_peer(rc->slot->call);
  if (!p) return "";
  char *copy = jp_arena_strndup(rc->arena, p, strlen(p));
  gpr_free(p);
  return copy ? copy : "";
}
