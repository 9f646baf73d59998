/* client.h: unary gRPC calls from C, for fan-out.
 *
 * An rpc_client caches one channel per address ("host:port"), created on
 * first use and kept until rpc_client_destroy; gRPC reconnects a channel by
 * itself (with backoff capped at max_reconnect_backoff_ms), so a restarted
 * server is reached again through the same channel.
 *
 * Calls are asynchronous and tag-based, on a completion queue the caller
 * owns, so a coordinator can start one call per partition on one queue and
 * then wait for all of them with its own deadline:
 *
 *   grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
 *   for (p = 0; p < n; p++)
 *     rpc_call_start(cli, addr[p], "/japlaid.v1.Shard/Search", &req.base, &co,
 *                    cq, &part[p], &part[p].call);
 *   for (left = n; left > 0; left--) {
 *     grpc_event ev = grpc_completion_queue_next(cq, until, NULL);
 *     if (ev.type == GRPC_QUEUE_TIMEOUT) ...;          // gRPC's deadline fires anyway
 *     struct part *pp = ev.tag;
 *     rc = rpc_call_result(pp->call, &japlaid__v1__shard_search_response__descriptor,
 *                          &alloc, &msg, &st);
 *     rpc_call_destroy(pp->call);
 *   }
 *
 * Every started call produces exactly one event on its queue, by its
 * deadline at the latest (gRPC enforces it), whatever happens to the
 * server. Without a deadline (UINT64_MAX) a call to a hung server waits
 * forever, so always give one.
 *
 * Fail fast: WAIT_FOR_READY is off by default, so a call to an address
 * where nothing listens fails at once with UNAVAILABLE instead of waiting
 * for its deadline (stack.md §2: 2 ms). Set wait_for_ready per client or per
 * call to wait for a server that is starting.
 *
 * Thread-safety: an rpc_client may be used from any number of threads. An
 * rpc_call belongs to one thread at a time. Allocation: a channel per
 * address (until destroy) and a small struct per call. */
#ifndef JP_RPC_CLIENT_H
#define JP_RPC_CLIENT_H
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

struct rpc_ctx;

struct rpc_client_opts {
  size_t max_message_bytes;           /* receive cap; 0: JP_RPC_DEFAULT_MAX_MESSAGE_BYTES */
  int wait_for_ready;                 /* default 0: fail fast with UNAVAILABLE */
  int initial_reconnect_backoff_ms;   /* 0: 250 */
  int max_reconnect_backoff_ms;       /* 0: 5000 (gRPC's own default is 120 s) */
  int keepalive_ms;                   /* ping idle connections this often; 0: off */
  int keepalive_timeout_ms;           /* drop a connection whose ping is unanswered; 0: 5000 */
};
void rpc_client_opts_default(struct rpc_client_opts *o);

typedef struct rpc_client rpc_client;

int  rpc_client_create(const struct rpc_client_opts *o, rpc_client **out);
/* Destroys the cached channels; every call must be destroyed first. */
void rpc_client_destroy(rpc_client *c);           /* NULL is a no-op */

/* The channel for `addr`, created and cached on first use (borrowed: valid
 * until rpc_client_destroy). JP_EINVAL for an empty address. */
int rpc_client_channel(rpc_client *c, const char *addr, grpc_channel **out);

/* Per-call options (NULL = defaults: no deadline, client's wait_for_ready). */
struct rpc_call_opts {
  uint64_t deadline_ns;               /* jp_now_ns() clock; 0 or UINT64_MAX = none */
  int wait_for_ready;                 /* -1: the client's setting; 0 / 1 */
  /* A call being served by this process (coordinator): the new call then
   * inherits its deadline when earlier, and is cancelled with it. */
  const struct rpc_ctx *parent;
  const char *request_id;             /* sent as "x-request-id" metadata; NULL = none */
};

/* Deadline helper: jp_now_ns() + ms. */
uint64_t rpc_deadline_in_ms(int64_t ms);

typedef struct rpc_call rpc_call;

/* Start a unary call of `method` ("/japlaid.v1.Shard/Search") with request
 * `req` on queue `cq` (created with grpc_completion_queue_create_for_next).
 * The completion comes out of `cq` with tag `tag`; then read it with
 * rpc_call_result / rpc_call_status and free it with rpc_call_destroy.
 * Returns 0 and *out, or JP_EINVAL / JP_ENOMEM / JP_ERPC (gRPC refused the
 * batch: no event will come, nothing to destroy). *out is set before the
 * call starts, so a thread polling `cq` that gets the event at once already
 * finds it (pass the address of the slot the poller reads). */
int rpc_call_start(rpc_client *c, const char *addr, const char *method,
                   const ProtobufCMessage *req, const struct rpc_call_opts *o,
                   grpc_completion_queue *cq, void *tag, rpc_call **out);

/* The same with an already serialized request (tests send malformed bytes
 * this way; a proxy forwards bytes unparsed). */
int rpc_call_start_raw(rpc_client *c, const char *addr, const char *method,
                       const void *data, size_t len, const struct rpc_call_opts *o,
                       grpc_completion_queue *cq, void *tag, rpc_call **out);

/* After the call's event: its gRPC status and details ("" if none; valid
 * until rpc_call_destroy). */
grpc_status_code rpc_call_status(const rpc_call *call, const char **details);

/* After the call's event: 0 and the unpacked response in *resp (memory from
 * `alloc`, NULL = malloc: free with protobuf_c_message_free_unpacked), or
 * the JP_E* code of a non-OK status (rpc_err_from_status) with a detail
 * "<method> at <addr>: <STATUS>: <details>", or JP_EINVAL if the response
 * bytes do not parse. *st (may be NULL) gets the gRPC status. */
int rpc_call_result(rpc_call *call, const ProtobufCMessageDescriptor *d,
                    ProtobufCAllocator *alloc, ProtobufCMessage **resp, grpc_status_code *st);

/* The raw response bytes (NULL if none), owned by the call. */
grpc_byte_buffer *rpc_call_response_bb(const rpc_call *call);

/* Ask gRPC to cancel (the event still comes, with CANCELLED). Any thread. */
void rpc_call_cancel(rpc_call *call);

/* Free a call whose event has come out of its queue. NULL is a no-op. */
void rpc_call_destroy(rpc_call *call);

/* Blocking convenience: one call on a private queue, waiting at most
 * timeout_ms (<= 0: no deadline). Returns as rpc_call_result. */
int rpc_client_call(rpc_client *c, const char *addr, const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCAllocator *alloc, int timeout_ms, ProtobufCMessage **resp,
                    grpc_status_code *st);

/* grpc.health.v1.Health/Check of `service` ("" = the server): 0 and *status
 * (enum rpc_health in server.h), or the call's error (JP_ENOTFOUND for an
 * unknown service, JP_EUNAVAIL when nothing answers). */
int rpc_client_health(rpc_client *c, const char *addr, const char *service, int timeout_ms,
                      int *status);

#endif /* JP_RPC_CLIENT_H */
