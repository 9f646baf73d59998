/* client.c: channel cache and unary calls (see client.h).
 *
 * A call is one batch of six ops (send initial metadata, send message,
 * close, receive initial metadata, receive message, receive status); what
 * the receive ops write to lives in the rpc_call, which must therefore
 * outlive the batch: the caller destroys it only after its event. */
#include "rpc/client.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/limits.h"
#include "rpc/pb.h"
#include "rpc/rpc_int.h"
#include "rpc/server.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

#define RPC_DEFAULT_INITIAL_BACKOFF_MS 250
#define RPC_DEFAULT_MAX_BACKOFF_MS 5000   /* distributed.md §9 scenario 5: reconnect within 5 s */
#define RPC_DEFAULT_KEEPALIVE_TIMEOUT_MS 5000
/* The blocking wrapper waits this long past the call's own deadline before
 * treating the missing event as a bug (gRPC always delivers by then). */
#define RPC_EVENT_SLACK_MS 5000

struct rpc_chan {
  char *addr;
  grpc_channel *ch;
  struct rpc_chan *next;
};

struct rpc_client {
  struct rpc_client_opts o;
  pthread_mutex_t mu;                 /* guards chans */
  struct rpc_chan *chans;
};

struct rpc_call {
  grpc_call *call;
  grpc_byte_buffer *send_bb;
  grpc_byte_buffer *recv_bb;
  grpc_metadata_array md_initial;
  grpc_metadata_array md_trailing;
  grpc_status_code status;
  grpc_slice details;
  char *details_str;                  /* NUL-terminated copy, made on demand */
  grpc_metadata send_md[1];
  size_t n_send_md;
  char method[128];                   /* for error messages (cut) */
  char addr[128];
};

void rpc_client_opts_default(struct rpc_client_opts *o)
{
  memset(o, 0, sizeof *o);
  o->max_message_bytes = JP_RPC_DEFAULT_MAX_MESSAGE_BYTES;
  o->initial_reconnect_backoff_ms = RPC_DEFAULT_INITIAL_BACKOFF_MS;
  o->max_reconnect_backoff_ms = RPC_DEFAULT_MAX_BACKOFF_MS;
  o->keepalive_timeout_ms = RPC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
}

int rpc_client_create(const struct rpc_client_opts *opts, rpc_client **out)
{
  *out = NULL;
  rpc_client *c = jp_calloc(1, sizeof *c);
  if (!c) return jp_err(JP_ENOMEM, "rpc client");
  if (opts) c->o = *opts;
  else rpc_client_opts_default(&c->o);
  if (!c->o.max_message_bytes) c->o.max_message_bytes = JP_RPC_DEFAULT_MAX_MESSAGE_BYTES;
  if (c->o.max_message_bytes > (size_t)INT32_MAX) c->o.max_message_bytes = INT32_MAX;
  if (c->o.initial_reconnect_backoff_ms <= 0)
    c->o.initial_reconnect_backoff_ms = RPC_DEFAULT_INITIAL_BACKOFF_MS;
  if (c->o.max_reconnect_backoff_ms <= 0) c->o.max_reconnect_backoff_ms = RPC_DEFAULT_MAX_BACKOFF_MS;
  if (c->o.keepalive_timeout_ms <= 0) c->o.keepalive_timeout_ms = RPC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
  pthread_mutex_init(&c->mu, NULL);
  rpc__lib_ref();
  *out = c;
  return 0;
}

void rpc_client_destroy(rpc_client *c)
{
  if (!c) return;
  struct rpc_chan *ch = c->chans;
  while (ch) {
    struct rpc_chan *n = ch->next;
    grpc_channel_destroy(ch->ch);
    jp_free(ch->addr);
    jp_free(ch);
    ch = n;
  }
  pthread_mutex_destroy(&c->mu);
  jp_free(c);
  rpc__lib_unref();
}

static grpc_channel *channel_new(const rpc_client *c, const char *addr)
{
  grpc_arg args[7];
  int n = 0;
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         {.integer = (int)c->o.max_message_bytes}};
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                         {.integer = c->o.initial_reconnect_backoff_ms}};
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                         {.integer = c->o.max_reconnect_backoff_ms}};
  /* Each address gets its own connection (gRPC would otherwise share
   * subchannels process-wide, coupling the backoff state of unrelated
   * clients, e.g. in tests that restart a server). */
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}};
  if (c->o.keepalive_ms > 0) {
    args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = c->o.keepalive_ms}};
    args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                           {.integer = c->o.keepalive_timeout_ms}};
    args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}};
  }
  grpc_channel_args cargs = {(size_t)n, args};
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(addr, creds, &cargs);
  grpc_channel_credentials_release(creds);
  return ch;
}

int rpc_client_channel(rpc_client *c, const char *addr, grpc_channel **out)
{
  *out = NULL;
  if (!addr || !*addr) return jp_err(JP_EINVAL, "empty server address");
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  struct rpc_chan *e;
  for (e = c->chans; e; e = e->next)
    if (strcmp(e->addr, addr) == 0) break;
  if (!e) {
    e = jp_calloc(1, sizeof *e);
    char *a = jp_strdup(addr);
    grpc_channel *ch = e && a ? channel_new(c, addr) : NULL;
    if (!ch) {
      jp_free(e);
      jp_free(a);
      rc = jp_err(JP_ENOMEM, "channel to %s", addr);
      e = NULL;
    } else {
      e->addr = a;
      e->ch = ch;
      e->next = c->chans;
      c->chans = e;
    }
  }
  if (e) *out = e->ch;
  pthread_mutex_unlock(&c->mu);
  return rc;
}

uint64_t rpc_deadline_in_ms(int64_t ms)
{
  uint64_t now = jp_now_ns();
  if (ms <= 0) return now;
  return now + (uint64_t)ms * 1000000u;
}

/* ---- calls ------------------------------------------------------------------- */

static void call_free(rpc_call *k)
{
  if (k->call) grpc_call_unref(k->call);
  if (k->send_bb) grpc_byte_buffer_destroy(k->send_bb);
  if (k->recv_bb) grpc_byte_buffer_destroy(k->recv_bb);
  grpc_metadata_array_destroy(&k->md_initial);
  grpc_metadata_array_destroy(&k->md_trailing);
  grpc_slice_unref(k->details);
  for (size_t i = 0; i < k->n_send_md; i++) grpc_slice_unref(k->send_md[i].value);
  jp_free(k->details_str);
  jp_free(k);
}

/* Start with a serialized request; takes ownership of bb. */
static int call_start_bb(rpc_client *c, const char *addr, const char *method,
                         grpc_byte_buffer *bb, const struct rpc_call_opts *o,
                         grpc_completion_queue *cq, void *tag, rpc_call **out)
{
  *out = NULL;
  if (!method || method[0] != '/') {
    grpc_byte_buffer_destroy(bb);
    return jp_err(JP_EINVAL, "method must be a full path \"/pkg.Service/Method\"");
  }
  grpc_channel *ch;
  int rc = rpc_client_channel(c, addr, &ch);
  if (rc < 0) {
    grpc_byte_buffer_destroy(bb);
    return rc;
  }
  rpc_call *k = jp_calloc(1, sizeof *k);
  if (!k) {
    grpc_byte_buffer_destroy(bb);
    return jp_err(JP_ENOMEM, "rpc call");
  }
  k->send_bb = bb;
  grpc_metadata_array_init(&k->md_initial);
  grpc_metadata_array_init(&k->md_trailing);
  k->details = grpc_empty_slice();
  snprintf(k->method, sizeof k->method, "%s", method);
  snprintf(k->addr, sizeof k->addr, "%s", addr);

  uint64_t dl = o && o->deadline_ns ? o->deadline_ns : UINT64_MAX;
  int wfr = o && o->wait_for_ready >= 0 ? o->wait_for_ready : c->o.wait_for_ready;
  grpc_call *parent = o && o->parent ? rpc_ctx_call(o->parent) : NULL;
  grpc_slice msl = grpc_slice_from_copied_string(method);
  k->call = grpc_channel_create_call(ch, parent, GRPC_PROPAGATE_DEFAULTS, cq, msl, NULL,
                                     rpc__ns_to_deadline(dl), NULL);
  grpc_slice_unref(msl);
  if (!k->call) {
    call_free(k);
    return jp_err(JP_ERPC, "cannot create a call to %s at %s", method, addr);
  }
  if (o && o->request_id && *o->request_id) {
    /* Keys must be lowercase or the batch is refused (stack.md §2). */
    k->send_md[0].key = grpc_slice_from_static_string("x-request-id");
    k->send_md[0].value = grpc_slice_from_copied_string(o->request_id);
    k->n_send_md = 1;
  }

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = k->n_send_md;
  ops[0].data.send_initial_metadata.metadata = k->n_send_md ? k->send_md : NULL;
  ops[0].flags = wfr ? GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                         GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET
                     : 0;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = k->send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &k->md_initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &k->recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &k->md_trailing;
  ops[5].data.recv_status_on_client.status = &k->status;
  ops[5].data.recv_status_on_client.status_details = &k->details;
  /* *out is written BEFORE the batch starts: once gRPC has the batch, the
   * event can come out of `cq` on another thread at once (connection
   * refused is instant), and that thread must already find the call. */
  *out = k;
  grpc_call_error e = grpc_call_start_batch(k->call, ops, 6, tag, NULL);
  if (e != GRPC_CALL_OK) {
    *out = NULL;
    call_free(k);
    return jp_err(JP_ERPC, "gRPC refused the call to %s at %s (grpc_call_error %d)", method, addr,
                  (int)e);
  }
  return 0;
}

int rpc_call_start(rpc_client *c, const char *addr, const char *method,
                   const ProtobufCMessage *req, const struct rpc_call_opts *o,
                   grpc_completion_queue *cq, void *tag, rpc_call **out)
{
  *out = NULL;
  grpc_byte_buffer *bb = rpc_pb_to_bb(req);
  if (!bb) return jp_err(JP_ENOMEM, "packing a %s", req->descriptor->name);
  return call_start_bb(c, addr, method, bb, o, cq, tag, out);
}

int rpc_call_start_raw(rpc_client *c, const char *addr, const char *method,
                       const void *data, size_t len, const struct rpc_call_opts *o,
                       grpc_completion_queue *cq, void *tag, rpc_call **out)
{
  *out = NULL;
  grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  if (!bb) return jp_err(JP_ENOMEM, "request buffer");
  return call_start_bb(c, addr, method, bb, o, cq, tag, out);
}

grpc_status_code rpc_call_status(const rpc_call *call, const char **details)
{
  if (details) {
    rpc_call *k = (rpc_call *)call;
    if (!k->details_str) {
      size_t n = GRPC_SLICE_LENGTH(k->details);
      k->details_str = jp_strndup((const char *)GRPC_SLICE_START_PTR(k->details), n);
    }
    *details = k->details_str ? k->details_str : "";
  }
  return call->status;
}

grpc_byte_buffer *rpc_call_response_bb(const rpc_call *call) { return call->recv_bb; }

int rpc_call_result(rpc_call *call, const ProtobufCMessageDescriptor *d,
                    ProtobufCAllocator *alloc, ProtobufCMessage **resp, grpc_status_code *st)
{
  *resp = NULL;
  const char *det;
  grpc_status_code s = rpc_call_status(call, &det);
  if (st) *st = s;
  if (s != GRPC_STATUS_OK)
    return jp_err(rpc_err_from_status(s), "%s at %s: %s: %s", call->method, call->addr,
                  rpc_status_name(s), det);
  int rc = rpc_pb_from_bb(call->recv_bb, d, alloc, resp);
  if (rc < 0)
    return jp_err(rc, "%s at %s: the response is not a valid %s", call->method, call->addr,
                  d->name);
  return 0;
}

void rpc_call_cancel(rpc_call *call)
{
  if (call && call->call) grpc_call_cancel(call->call, NULL);
}

void rpc_call_destroy(rpc_call *call)
{
  if (call) call_free(call);
}

int rpc_client_call(rpc_client *c, const char *addr, const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCAllocator *alloc, int timeout_ms, ProtobufCMessage **resp,
                    grpc_status_code *st)
{
  *resp = NULL;
  if (st) *st = GRPC_STATUS_UNKNOWN;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  struct rpc_call_opts o = {0};
  o.wait_for_ready = -1;
  o.deadline_ns = timeout_ms > 0 ? rpc_deadline_in_ms(timeout_ms) : UINT64_MAX;
  rpc_call *k;
  int tag_storage;
  int rc = rpc_call_start(c, addr, method, req, &o, cq, &tag_storage, &k);
  if (rc == 0) {
    gpr_timespec until = timeout_ms > 0
                           ? rpc__ns_to_deadline(o.deadline_ns + (uint64_t)RPC_EVENT_SLACK_MS * 1000000u)
                           : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_event ev = grpc_completion_queue_next(cq, until, NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
      /* gRPC promises the event by the deadline; cancel and collect it so
       * nothing refers to the call after it is freed. */
      JP_LOG_ERROR("rpc: no completion for %s at %s past its deadline; cancelling", method, addr);
      grpc_call_cancel(k->call, NULL);
      ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    rc = rpc_call_result(k, resp_desc, alloc, resp, st);
    rpc_call_destroy(k);
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return rc;
}

int rpc_client_health(rpc_client *c, const char *addr, const char *service, int timeout_ms,
                      int *status)
{
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)(service ? service : "");
  ProtobufCMessage *m;
  *status = RPC_HEALTH_UNKNOWN;
  int rc = rpc_client_call(c, addr, "/grpc.health.v1.Health/Check", &req.base,
                           &grpc__health__v1__health_check_response__descriptor, NULL, timeout_ms,
                           &m, NULL);
  if (rc < 0) return rc;
  *status = (int)((Grpc__Health__V1__HealthCheckResponse *)m)->status;
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
