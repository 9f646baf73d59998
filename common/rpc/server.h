/* server.h: a unary gRPC server on the C core, driven by a method table.
 *
 * A program describes its API as data (style.md §2.6):
 *
 *   static const struct rpc_method shard_methods[] = {
 *     { "/japlaid.v1.Shard/Search", h_search, &japlaid__v1__shard_search_request__descriptor,
 *       JP_RPC_MAX_SHARD_SEARCH_REQUEST_BYTES },
 *     ...
 *   };
 *
 * and the framework does the rest once, for every method: it receives the
 * call, refuses requests above the method's byte limit (RESOURCE_EXHAUSTED),
 * unpacks the protobuf into the call's arena (malformed bytes ->
 * INVALID_ARGUMENT, never a crash), refuses calls whose deadline has
 * already passed, runs the handler, maps its JP_E* result to a gRPC status
 * with the detail text from jp_errmsg (rpc/status.h), packs the response
 * and logs one line per call (debug level; failures at warn/error).
 * Unknown methods are answered UNIMPLEMENTED. grpc.health.v1.Health/Check
 * is built in (see rpc_server_set_health).
 *
 * Threads: one completion queue per worker thread (DESIGN §5), each with
 * one pre-posted request per method (stack.md §2). A handler runs on the
 * worker that received the call and blocks only that worker. One more
 * thread, the control thread, has its own queue and serves health checks,
 * methods flagged RPC_METHOD_CONTROL and unknown methods, so probes are
 * answered even when every worker is busy with long calls.
 *
 * Load balance: gRPC matches a connection's calls to the posted requests of
 * the queue that accepted the connection first, and moves on to another
 * queue only when that one has none left. A worker therefore re-posts its
 * request only AFTER serving the call: while it is busy its queue offers
 * nothing, and the next call of the same connection (a coordinator sends
 * everything over one) goes to an idle worker's queue, or waits in gRPC
 * until a worker is free. Re-posting first would park calls behind a busy
 * worker while others idle. n_cqs < n_threads shares queues between
 * workers; requests_per_method > 1 lets a queue accept calls ahead.
 *
 * Handlers have one signature:
 *
 *   int h_x(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp);
 *
 * `req` is the unpacked request (in the call's arena, read-only). On success
 * the handler sets *resp to a response message it built in the arena
 * (rpc_ctx_new) and returns 0. On failure it returns a negative JP_E* code
 * after recording the detail with jp_err() ("k: 0 is outside 1..1000");
 * the client receives rpc_status_from_err(code) and that detail. A handler
 * that cannot answer on the spot (it waits for other servers) returns
 * RPC_ASYNC and later calls rpc_ctx_finish() from any thread.
 *
 * Deadlines: rpc_ctx_check() / rpc_ctx_time_left_ms() tell a handler how
 * much of the caller's deadline is left; long handlers should check between
 * steps and stop with the JP_ETIMEOUT it returns. A response finished after
 * the deadline is replaced by DEADLINE_EXCEEDED (the caller has gone).
 *
 * Shutdown (rpc_server_shutdown): health turns NOT_SERVING, the server stops
 * accepting calls, in-flight calls finish within the grace period, then the
 * rest are cancelled (rpc_ctx_check returns JP_ECANCELLED to their handlers)
 * and the workers are joined. A program that handles SIGTERM must block the
 * signals before rpc_server_create (gRPC's threads inherit the mask; see
 * shard/main.c).
 *
 * Thread-safety: rpc_server_* calls are made by one controlling thread
 * (rpc_server_set_health and the counters may be used from any thread).
 * rpc_ctx_* calls are made by the handler, or by whoever the handler passed
 * the call to, never by two threads at once.
 * Allocation: a few hundred bytes per posted request, and a pool of call
 * arenas (one per call being served) that keep their blocks between calls
 * (trimmed after a large call). */
#ifndef JP_RPC_SERVER_H
#define JP_RPC_SERVER_H
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "util/arena.h"

struct rpc_ctx;                       /* one call being served; opaque */
typedef struct rpc_server rpc_server;

typedef int (*rpc_handler)(struct rpc_ctx *rc, const ProtobufCMessage *req,
                           ProtobufCMessage **resp);

/* Handler return value: the call stays open until rpc_ctx_finish(). Positive,
 * so it is never mistaken for an error (style.md §2.4). */
#define RPC_ASYNC 1

/* rpc_method.flags: serve on the control thread. Only for calls that never
 * block or take long (statistics, configuration reads). */
#define RPC_METHOD_CONTROL 1u

struct rpc_method {
  const char *name;                   /* full gRPC path, "/japlaid.v1.Shard/Search" */
  rpc_handler handler;
  const ProtobufCMessageDescriptor *request;   /* type of the request message */
  size_t max_request_bytes;           /* serialized request cap; 0 = the server's message cap */
  unsigned flags;                     /* RPC_METHOD_* */
};

/* grpc.health.v1 ServingStatus values. */
enum rpc_health {
  RPC_HEALTH_UNKNOWN = 0,
  RPC_HEALTH_SERVING = 1,
  RPC_HEALTH_NOT_SERVING = 2,
  RPC_HEALTH_SERVICE_UNKNOWN = 3,     /* set: forget the name (Check answers NOT_FOUND) */
};

struct rpc_server_opts {
  const char *listen;                 /* "host:port" (port 0 = ephemeral); default 127.0.0.1:0 */
  int allow_remote;                   /* 0: refuse a listen address that is not loopback */
  int n_threads;                      /* worker threads; <= 0: 2 */
  int n_cqs;                          /* completion queues they poll, 1..n_threads; <= 0: one per worker */
  int requests_per_method;            /* pre-posted per method per worker; <= 0: 1 */
  size_t max_message_bytes;           /* receive and send cap; 0: JP_RPC_DEFAULT_MAX_MESSAGE_BYTES */
  size_t arena_limit_bytes;           /* memory one call may take; 0: 256 MiB */
  int max_concurrent_streams;         /* per connection; 0: gRPC's default */
  void *app;                          /* handed to handlers by rpc_ctx_app() */
};

void rpc_server_opts_default(struct rpc_server_opts *o);

/* 1 if the "host:port" address is on this machine only: 127.0.0.0/8,
 * localhost, ::1, or a unix: socket. 0 for anything else (0.0.0.0, [::],
 * names, other addresses). */
int rpc_addr_is_loopback(const char *addr);

/* Create the server and bind its port. `methods` is copied (the strings and
 * descriptors it points to must outlive the server). Fails with JP_EINVAL
 * (bad table, bad or non-loopback address without allow_remote) or
 * JP_EUNAVAIL (the port cannot be bound, e.g. in use). Every health
 * service name ("" and each service of the table) starts NOT_SERVING. */
int rpc_server_create(const struct rpc_method *methods, int n_methods,
                      const struct rpc_server_opts *o, rpc_server **out);

/* Start the workers and accept calls. */
int rpc_server_start(rpc_server *s);

/* The bound port, and "host:port" with it (valid while s lives). */
int rpc_server_port(const rpc_server *s);
const char *rpc_server_address(const rpc_server *s);

/* Set the health of `service` ("" = the whole server; NULL = every known
 * name). A new name is added (up to 32 names). RPC_HEALTH_SERVICE_UNKNOWN
 * removes it. Safe from any thread. */
int rpc_server_set_health(rpc_server *s, const char *service, enum rpc_health st);

/* Calls received since start (all methods, health included) and calls
 * being served right now. Safe from any thread. */
uint64_t rpc_server_calls_total(const rpc_server *s);
int rpc_server_in_flight(const rpc_server *s);

/* Stop (see the top of this file). Blocks until every call is done and the
 * workers have exited: at most about grace_ms plus the time handlers take
 * to notice the cancellation. Idempotent. */
void rpc_server_shutdown(rpc_server *s, int grace_ms);

/* Shut down (grace 0) if still running, and free. NULL is a no-op. */
void rpc_server_destroy(rpc_server *s);

/* ---- inside a handler ------------------------------------------------------- */

void *rpc_ctx_app(const struct rpc_ctx *rc);
rpc_server *rpc_ctx_server(const struct rpc_ctx *rc);
const char *rpc_ctx_method(const struct rpc_ctx *rc);   /* full path */

/* The call's arena: everything the handler allocates for this call,
 * including the response, is released when the call completes. */
struct jp_arena *rpc_ctx_arena(struct rpc_ctx *rc);

/* A new message of type `d` in the call's arena (NULL when the arena's
 * limit is reached: return JP_ENOMEM). */
ProtobufCMessage *rpc_ctx_new(struct rpc_ctx *rc, const ProtobufCMessageDescriptor *d);

/* The caller's deadline on the jp_now_ns() clock; UINT64_MAX = none. */
uint64_t rpc_ctx_deadline_ns(const struct rpc_ctx *rc);

/* Milliseconds left before the deadline (<= 0: passed; INT64_MAX: none). */
int64_t rpc_ctx_time_left_ms(const struct rpc_ctx *rc);

/* 0 while the call should go on; JP_ETIMEOUT once its deadline has passed,
 * JP_ECANCELLED once the server is cancelling calls at shutdown (with a
 * detail naming which). Cheap: one clock read. */
int rpc_ctx_check(const struct rpc_ctx *rc);

/* A request metadata value ("x-request-id"; keys are lowercase), or NULL.
 * *len gets its length (values are not NUL-terminated). Valid until the
 * call completes. */
const char *rpc_ctx_metadata(const struct rpc_ctx *rc, const char *key, size_t *len);

/* The peer ("ipv4:127.0.0.1:53211"), copied into the call's arena. */
const char *rpc_ctx_peer(struct rpc_ctx *rc);

/* The underlying call, for clients that propagate deadline and
 * cancellation to downstream calls (rpc_call_opts.parent). */
grpc_call *rpc_ctx_call(const struct rpc_ctx *rc);

/* Answer an RPC_ASYNC call: code 0 sends `resp` (built in the call's arena),
 * a negative JP_E* code sends its status with jp_errmsg(code) as detail
 * (the detail recorded on the calling thread). Call exactly once; rc is
 * invalid afterwards. Safe from any thread. */
void rpc_ctx_finish(struct rpc_ctx *rc, int code, ProtobufCMessage *resp);

#endif /* JP_RPC_SERVER_H */
