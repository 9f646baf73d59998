/* grpc_api.c: japlaid.v1.Search over gRPC (search.proto), on the
 * common/rpc server framework.
 *
 * The framework receives each call, enforces the per-method request cap,
 * unpacks the protobuf into the call's arena (malformed bytes ->
 * INVALID_ARGUMENT) and maps JP_E* codes to statuses (rpc/status.h). A
 * handler here only wraps the request in an operation and starts it; the
 * answer is sent from whichever thread finishes the operation
 * (rpc_ctx_finish), so no worker ever waits for a shard or the encoder.
 *
 * Thread-safety: handlers run on the server's workers; the done callback
 * on any thread, once. Allocation: the operation lives in the call's
 * arena. */
#include "coord.h"

#include "rpc/limits.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"

/* search.proto: "Whole message: at most 16 MiB" for Rerank and Encode. */
#define COORD_MAX_TEXTS_REQUEST_BYTES (16u << 20)

struct gop {
  struct cop op;
  struct rpc_ctx *rc;
};

static void grpc_done(struct cop *op)
{
  struct gop *g = (struct gop *)op;
  struct coord *co = op->co;
  grpc_status_code st = rpc_status_from_err(op->rc);
  metrics_request(co->met, ep_of_kind(op->kind), TR_GRPC, rpc_status_name(st),
                  (double)(jp_now_ns() - op->start_ns) / 1e9);
  if (op->rc < 0) {
    /* The detail is thread-local: record it on this thread for the
     * framework to read. */
    int rc = jp_err(op->rc, "%s", op->err);
    rpc_ctx_finish(g->rc, rc, NULL);
  } else {
    rpc_ctx_finish(g->rc, 0, op->resp);
  }
}

static int start(struct rpc_ctx *rc, const ProtobufCMessage *req, enum cop_kind kind,
                 uint32_t timeout_ms)
{
  struct jp_arena *a = rpc_ctx_arena(rc);
  struct gop *g = jp_arena_calloc(a, 1, sizeof *g);
  if (!g) return jp_err(JP_ENOMEM, "operation");
  g->rc = rc;
  g->op.kind = kind;
  g->op.co = rpc_ctx_app(rc);
  g->op.arena = a;
  g->op.req = req;
  g->op.parent = rc;
  g->op.timeout_ms = timeout_ms;
  g->op.done = grpc_done;
  /* g may be gone once cop_start returns (the call can finish at once). */
  cop_start(&g->op);
  return RPC_ASYNC;
}

static int h_search(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  (void)resp;
  return start(rc, req, COP_SEARCH, ((const Japlaid__V1__SearchRequest *)req)->timeout_ms);
}

static int h_rerank(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  (void)resp;
  return start(rc, req, COP_RERANK, 0);
}

static int h_encode(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  (void)resp;
  return start(rc, req, COP_ENCODE, 0);
}

static int h_upsert(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  (void)resp;
  return start(rc, req, COP_UPSERT, 0);
}

static int h_delete(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  (void)resp;
  return start(rc, req, COP_DELETE, 0);
}

static int h_stats(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  (void)resp;
  return start(rc, req, COP_STATS, 0);
}

const struct rpc_method coord_methods[] = {
  {"/japlaid.v1.Search/Search", h_search, &japlaid__v1__search_request__descriptor,
   JP_RPC_MAX_SEARCH_REQUEST_BYTES, 0},
  {"/japlaid.v1.Search/Rerank", h_rerank, &japlaid__v1__rerank_request__descriptor,
   COORD_MAX_TEXTS_REQUEST_BYTES, 0},
  {"/japlaid.v1.Search/Encode", h_encode, &japlaid__v1__encode_request__descriptor,
   COORD_MAX_TEXTS_REQUEST_BYTES, 0},
  /* Upsert: up to the server's message cap (64 MiB, search.proto). */
  {"/japlaid.v1.Search/Upsert", h_upsert, &japlaid__v1__upsert_request__descriptor, 0, 0},
  {"/japlaid.v1.Search/Delete", h_delete, &japlaid__v1__delete_request__descriptor,
   JP_RPC_MAX_DELETE_REQUEST_BYTES, 0},
  {"/japlaid.v1.Search/Stats", h_stats, &japlaid__v1__stats_request__descriptor,
   JP_RPC_MAX_SMALL_REQUEST_BYTES, 0},
};
const int coord_n_methods = (int)(sizeof coord_methods / sizeof coord_methods[0]);
