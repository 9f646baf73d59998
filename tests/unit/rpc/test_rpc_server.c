/* test_rpc_server.c: the server framework and the client, in process, over
 * real gRPC on 127.0.0.1 with ephemeral ports.
 *
 * A toy service (test.Toy) reuses japlaid.v1.ShardDeleteRequest (a list
 * of strings) as its request and ShardDeleteResponse (numbers) as its
 * answer. The strings tell the handler what to do: "n:21" answers 42,
 * "fail" fails with INVALID_ARGUMENT, "sleep:300" sleeps, "spin" works
 * until rpc_ctx_check() says stop, "rid" answers the length of the
 * x-request-id metadata. No timing thresholds are asserted: deadlines are
 * chosen far apart from the sleeps so the outcome does not depend on load. */
#include "test_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "japlaid/v1/shard.pb-c.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

typedef Japlaid__V1__ShardDeleteRequest ToyReq;
typedef Japlaid__V1__ShardDeleteResponse ToyResp;
#define TOY_REQ (&japlaid__v1__shard_delete_request__descriptor)
#define TOY_RESP (&japlaid__v1__shard_delete_response__descriptor)

static atomic_int spin_stopped_with;     /* the code rpc_ctx_check gave "spin" */
static atomic_int meet_arrived;          /* handlers inside "meet" */
static atomic_int spin_running;
static atomic_int app_seen;              /* handlers saw the app pointer */
static int app_token = 7;

static int h_echo(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  const ToyReq *r = (const ToyReq *)req;
  if (rpc_ctx_app(rc) == &app_token) atomic_store(&app_seen, 1);
  ToyResp *out = (ToyResp *)rpc_ctx_new(rc, TOY_RESP);
  if (!out) return jp_err(JP_ENOMEM, "response");
  for (size_t i = 0; i < r->n_document_ids; i++) {
    const char *s = r->document_ids[i];
    if (strncmp(s, "n:", 2) == 0) {
      out->n_deleted += 2u * (unsigned)atoi(s + 2);
    } else if (strcmp(s, "fail") == 0) {
      return jp_err(JP_EINVAL, "document_ids[%zu]: told to fail", i);
    } else if (strncmp(s, "sleep:", 6) == 0) {
      jp_sleep_ms((unsigned)atoi(s + 6));
    } else if (strcmp(s, "spin") == 0) {
      int code;
      atomic_fetch_add(&spin_running, 1);
      while ((code = rpc_ctx_check(rc)) == 0) jp_sleep_ms(5);
      atomic_store(&spin_stopped_with, code);
      return code;
    } else if (strcmp(s, "meet") == 0) {
      /* Wait (up to 20 s) until a second call is inside a handler too:
       * answers 1 only if two workers held calls at the same time. */
      atomic_fetch_add(&meet_arrived, 1);
      for (int w = 0; w < 4000 && atomic_load(&meet_arrived) < 2; w++) jp_sleep_ms(5);
      out->n_deleted = atomic_load(&meet_arrived) >= 2;
    } else if (strcmp(s, "rid") == 0) {
      size_t len = 0;
      const char *v = rpc_ctx_metadata(rc, "x-request-id", &len);
      out->n_deleted = v ? (unsigned)len : 0;
    }
  }
  *resp = &out->base;
  return 0;
}

/* RPC_ASYNC: answer from another thread after a short wait. */
struct async_job {
  struct rpc_ctx *rc;
  unsigned value;
  unsigned delay_ms;
};

static void *async_main(void *arg)
{
  struct async_job *j = arg;
  jp_sleep_ms(j->delay_ms);
  ToyResp *out = (ToyResp *)rpc_ctx_new(j->rc, TOY_RESP);
  out->n_deleted = j->value + 1000;
  rpc_ctx_finish(j->rc, 0, &out->base);
  return NULL;
}

static int h_async(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  const ToyReq *r = (const ToyReq *)req;
  (void)resp;
  struct async_job *j = jp_arena_alloc(rpc_ctx_arena(rc), sizeof *j);
  if (!j) return jp_err(JP_ENOMEM, "job");
  j->rc = rc;
  j->value = (unsigned)r->n_document_ids;
  /* "slow" first: answer after 2 s (long enough to be seen in flight). */
  j->delay_ms = r->n_document_ids && strcmp(r->document_ids[0], "slow") == 0 ? 2000 : 30;
  pthread_t t;
  if (pthread_create(&t, NULL, async_main, j) != 0) return jp_err(JP_EINTERNAL, "thread");
  pthread_detach(t);
  return RPC_ASYNC;
}

static const struct rpc_method toy_methods[] = {
  {"/test.Toy/Echo", h_echo, TOY_REQ, 0, 0},
  {"/test.Toy/Small", h_echo, TOY_REQ, 64, 0},
  {"/test.Toy/Async", h_async, TOY_REQ, 0, 0},
};
#define N_TOY ((int)(sizeof toy_methods / sizeof toy_methods[0]))

struct fixture {
  rpc_server *srv;
  rpc_client *cli;
  char addr[64];
};

static rpc_server *start_server(int n_threads, size_t max_msg)
{
  struct rpc_server_opts o;
  rpc_server_opts_default(&o);
  o.n_threads = n_threads;
  o.max_message_bytes = max_msg;
  o.app = &app_token;
  rpc_server *s;
  int rc = rpc_server_create(toy_methods, N_TOY, &o, &s);
  if (rc < 0) fail_msg("rpc_server_create: %s", jp_errmsg(rc));
  assert_int_equal(rpc_server_start(s), 0);
  return s;
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  f->srv = start_server(2, 1024 * 1024);
  assert_true(rpc_server_port(f->srv) > 0);
  snprintf(f->addr, sizeof f->addr, "%s", rpc_server_address(f->srv));
  assert_int_equal(rpc_client_create(NULL, &f->cli), 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  rpc_client_destroy(f->cli);
  rpc_server_destroy(f->srv);
  free(f);
  return 0;
}

/* One blocking toy call; returns the status, *value the answer. */
static grpc_status_code toy_call(rpc_client *cli, const char *addr, const char *method,
                                 const char *const *ids, size_t n, int timeout_ms,
                                 unsigned *value, int *jp_rc)
{
  ToyReq req = JAPLAID__V1__SHARD_DELETE_REQUEST__INIT;
  req.n_document_ids = n;
  req.document_ids = (char **)ids;
  ProtobufCMessage *m = NULL;
  grpc_status_code st;
  int rc = rpc_client_call(cli, addr, method, &req.base, TOY_RESP, NULL, timeout_ms, &m, &st);
  if (jp_rc) *jp_rc = rc;
  if (value) *value = m ? ((ToyResp *)m)->n_deleted : 0;
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  return st;
}

static void server_answers_ok(void **state)
{
  struct fixture *f = *state;
  const char *ids[] = {"n:21"};
  unsigned v = 0;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", ids, 1, 5000, &v, NULL),
                   GRPC_STATUS_OK);
  assert_int_equal(v, 42);
  assert_int_equal(atomic_load(&app_seen), 1);
  assert_true(rpc_server_calls_total(f->srv) >= 1);
}

static void server_maps_errors_with_details(void **state)
{
  struct fixture *f = *state;
  const char *ids[] = {"n:1", "fail"};
  int rc;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", ids, 2, 5000, NULL, &rc),
                   GRPC_STATUS_INVALID_ARGUMENT);
  assert_int_equal(rc, JP_EINVAL);
  /* The client's detail carries the server's text. */
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "document_ids[1]: told to fail"));

  /* Same through the asynchronous API, reading the raw status. */
  ToyReq req = JAPLAID__V1__SHARD_DELETE_REQUEST__INIT;
  req.n_document_ids = 2;
  req.document_ids = (char **)ids;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  struct rpc_call_opts co = {rpc_deadline_in_ms(5000), -1, NULL, NULL};
  rpc_call *call;
  int tag;
  assert_int_equal(rpc_call_start(f->cli, f->addr, "/test.Toy/Echo", &req.base, &co, cq, &tag, &call), 0);
  grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  assert_int_equal(ev.type, GRPC_OP_COMPLETE);
  assert_ptr_equal(ev.tag, &tag);
  const char *det;
  assert_int_equal(rpc_call_status(call, &det), GRPC_STATUS_INVALID_ARGUMENT);
  assert_string_equal(det, "document_ids[1]: told to fail");
  rpc_call_destroy(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

static void server_deadline_exceeded(void **state)
{
  struct fixture *f = *state;
  /* The handler sleeps 10x past the deadline. */
  const char *slow[] = {"sleep:1000"};
  int rc;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", slow, 1, 100, NULL, &rc),
                   GRPC_STATUS_DEADLINE_EXCEEDED);
  assert_int_equal(rc, JP_ETIMEOUT);

  /* A handler that checks rpc_ctx_check() sees the deadline pass. */
  atomic_store(&spin_stopped_with, 0);
  const char *spin[] = {"spin"};
  /* (2 s: long enough that the call surely reaches the handler first.) */
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", spin, 1, 2000, NULL, NULL),
                   GRPC_STATUS_DEADLINE_EXCEEDED);
  for (int i = 0; i < 1000 && atomic_load(&spin_stopped_with) == 0; i++) jp_sleep_ms(10);
  assert_int_equal(atomic_load(&spin_stopped_with), JP_ETIMEOUT);

  /* The server keeps serving (wait out the sleeping worker first). */
  const char *ok[] = {"n:2"};
  unsigned v;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", ok, 1, 10000, &v, NULL),
                   GRPC_STATUS_OK);
  assert_int_equal(v, 4);
}

static void server_unknown_method_is_unimplemented(void **state)
{
  struct fixture *f = *state;
  const char *ids[] = {"n:1"};
  int rc;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Nope", ids, 1, 5000, NULL, &rc),
                   GRPC_STATUS_UNIMPLEMENTED);
  assert_int_equal(rc, JP_EUNSUPPORTED);
  assert_int_equal(toy_call(f->cli, f->addr, "/other.Svc/Echo", ids, 1, 5000, NULL, NULL),
                   GRPC_STATUS_UNIMPLEMENTED);
  /* Health Watch (streaming) is not served: clients fall back to Check. */
  assert_int_equal(toy_call(f->cli, f->addr, "/grpc.health.v1.Health/Watch", NULL, 0, 5000, NULL, NULL),
                   GRPC_STATUS_UNIMPLEMENTED);
}

static grpc_status_code raw_call(struct fixture *f, const char *method, const void *data,
                                 size_t len, const char **det_out, char *det, size_t cap)
{
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  struct rpc_call_opts co = {rpc_deadline_in_ms(10000), -1, NULL, NULL};
  rpc_call *call;
  int tag;
  assert_int_equal(rpc_call_start_raw(f->cli, f->addr, method, data, len, &co, cq, &tag, &call), 0);
  grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  assert_int_equal(ev.type, GRPC_OP_COMPLETE);
  const char *d;
  grpc_status_code st = rpc_call_status(call, &d);
  snprintf(det, cap, "%s", d);
  if (det_out) *det_out = det;
  rpc_call_destroy(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return st;
}

static void server_malformed_request_is_invalid_argument(void **state)
{
  struct fixture *f = *state;
  char det[512];
  const uint8_t huge_len[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'};
  const uint8_t bad_wire[] = {0x0f, 0x00, 0xff};
  const uint8_t garbage[] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x02};
  assert_int_equal(raw_call(f, "/test.Toy/Echo", huge_len, sizeof huge_len, NULL, det, sizeof det),
                   GRPC_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(det, "malformed japlaid.v1.ShardDeleteRequest"));
  assert_int_equal(raw_call(f, "/test.Toy/Echo", bad_wire, sizeof bad_wire, NULL, det, sizeof det),
                   GRPC_STATUS_INVALID_ARGUMENT);
  assert_int_equal(raw_call(f, "/test.Toy/Echo", garbage, sizeof garbage, NULL, det, sizeof det),
                   GRPC_STATUS_INVALID_ARGUMENT);
  /* Health Check gets the same protection. */
  assert_int_equal(raw_call(f, "/grpc.health.v1.Health/Check", huge_len, sizeof huge_len, NULL,
                            det, sizeof det),
                   GRPC_STATUS_INVALID_ARGUMENT);
  /* ... and the server is still fine. */
  const char *ok[] = {"n:5"};
  unsigned v;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", ok, 1, 5000, &v, NULL), GRPC_STATUS_OK);
  assert_int_equal(v, 10);
}

static void server_oversized_request_is_resource_exhausted(void **state)
{
  struct fixture *f = *state;
  /* Over the method's own cap (64 bytes). */
  char big[200];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  const char *ids[] = {big};
  int rc;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Small", ids, 1, 5000, NULL, &rc),
                   GRPC_STATUS_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(jp_errmsg(rc), "exceeds the 64-byte limit of /test.Toy/Small"));
  /* The same request is fine on a method without the cap. */
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", ids, 1, 5000, NULL, NULL),
                   GRPC_STATUS_OK);
  /* Over the server's message cap (1 MiB here): refused by gRPC itself. */
  size_t n = 2u * 1024 * 1024;
  char *huge = malloc(n + 1);
  memset(huge, 'b', n);
  huge[n] = '\0';
  const char *hids[] = {huge};
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", hids, 1, 10000, NULL, NULL),
                   GRPC_STATUS_RESOURCE_EXHAUSTED);
  free(huge);
  const char *ok[] = {"n:1"};
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Echo", ok, 1, 5000, NULL, NULL), GRPC_STATUS_OK);
}

static void server_health_check(void **state)
{
  struct fixture *f = *state;
  int st, rc;
  /* Everything starts NOT_SERVING until the program says otherwise. */
  assert_int_equal(rpc_client_health(f->cli, f->addr, "", 5000, &st), 0);
  assert_int_equal(st, RPC_HEALTH_NOT_SERVING);
  assert_int_equal(rpc_client_health(f->cli, f->addr, "test.Toy", 5000, &st), 0);
  assert_int_equal(st, RPC_HEALTH_NOT_SERVING);
  assert_int_equal(rpc_server_set_health(f->srv, NULL, RPC_HEALTH_SERVING), 0);
  assert_int_equal(rpc_client_health(f->cli, f->addr, "", 5000, &st), 0);
  assert_int_equal(st, RPC_HEALTH_SERVING);
  assert_int_equal(rpc_client_health(f->cli, f->addr, "test.Toy", 5000, &st), 0);
  assert_int_equal(st, RPC_HEALTH_SERVING);
  /* Per-name setting. */
  assert_int_equal(rpc_server_set_health(f->srv, "test.Toy", RPC_HEALTH_NOT_SERVING), 0);
  assert_int_equal(rpc_client_health(f->cli, f->addr, "test.Toy", 5000, &st), 0);
  assert_int_equal(st, RPC_HEALTH_NOT_SERVING);
  assert_int_equal(rpc_client_health(f->cli, f->addr, "", 5000, &st), 0);
  assert_int_equal(st, RPC_HEALTH_SERVING);
  /* Unknown service: NOT_FOUND (grpc health-checking.md). */
  rc = rpc_client_health(f->cli, f->addr, "no.Such", 5000, &st);
  assert_int_equal(rc, JP_ENOTFOUND);
  /* A name can be added and removed. */
  assert_int_equal(rpc_server_set_health(f->srv, "extra.Svc", RPC_HEALTH_SERVING), 0);
  assert_int_equal(rpc_client_health(f->cli, f->addr, "extra.Svc", 5000, &st), 0);
  assert_int_equal(st, RPC_HEALTH_SERVING);
  assert_int_equal(rpc_server_set_health(f->srv, "extra.Svc", RPC_HEALTH_SERVICE_UNKNOWN), 0);
  assert_int_equal(rpc_client_health(f->cli, f->addr, "extra.Svc", 5000, &st), JP_ENOTFOUND);
  assert_int_equal(rpc_server_set_health(f->srv, "x", (enum rpc_health)9), JP_EINVAL);
}

static void server_many_concurrent_calls(void **state)
{
  struct fixture *f = *state;
  enum { N = 256 };
  static char idbuf[N][16];
  static const char *idp[N];
  static ToyReq reqs[N];
  static rpc_call *calls[N];
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  struct rpc_call_opts co = {rpc_deadline_in_ms(60000), -1, NULL, NULL};
  for (int i = 0; i < N; i++) {
    snprintf(idbuf[i], sizeof idbuf[i], "n:%d", i);
    idp[i] = idbuf[i];
    japlaid__v1__shard_delete_request__init(&reqs[i]);
    reqs[i].n_document_ids = 1;
    reqs[i].document_ids = (char **)&idp[i];
    /* The tag is the index + 1 (never NULL). */
    assert_int_equal(rpc_call_start(f->cli, f->addr, "/test.Toy/Echo", &reqs[i].base, &co, cq,
                                    (void *)(uintptr_t)(i + 1), &calls[i]),
                     0);
  }
  int seen[N] = {0};
  for (int k = 0; k < N; k++) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    int i = (int)(uintptr_t)ev.tag - 1;
    assert_true(i >= 0 && i < N);
    assert_int_equal(seen[i], 0);
    seen[i] = 1;
    ProtobufCMessage *m;
    grpc_status_code st;
    assert_int_equal(rpc_call_result(calls[i], TOY_RESP, NULL, &m, &st), 0);
    assert_int_equal(st, GRPC_STATUS_OK);
    /* Each answer belongs to its own request. */
    assert_int_equal(((ToyResp *)m)->n_deleted, 2 * i);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_call_destroy(calls[i]);
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

static void server_async_handler(void **state)
{
  struct fixture *f = *state;
  const char *ids[] = {"a", "b", "c"};
  unsigned v;
  assert_int_equal(toy_call(f->cli, f->addr, "/test.Toy/Async", ids, 3, 5000, &v, NULL),
                   GRPC_STATUS_OK);
  assert_int_equal(v, 1003);
}

static void server_request_id_metadata(void **state)
{
  struct fixture *f = *state;
  const char *ids[] = {"rid"};
  ToyReq req = JAPLAID__V1__SHARD_DELETE_REQUEST__INIT;
  req.n_document_ids = 1;
  req.document_ids = (char **)ids;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  struct rpc_call_opts co = {rpc_deadline_in_ms(5000), -1, NULL, "req-12345"};
  rpc_call *call;
  int tag;
  assert_int_equal(rpc_call_start(f->cli, f->addr, "/test.Toy/Echo", &req.base, &co, cq, &tag, &call), 0);
  grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  ProtobufCMessage *m;
  assert_int_equal(rpc_call_result(call, TOY_RESP, NULL, &m, NULL), 0);
  assert_int_equal(((ToyResp *)m)->n_deleted, strlen("req-12345"));
  protobuf_c_message_free_unpacked(m, NULL);
  rpc_call_destroy(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

static void server_refuses_remote_and_busy_addresses(void **state)
{
  (void)state;
  assert_true(rpc_addr_is_loopback("127.0.0.1:0"));
  assert_true(rpc_addr_is_loopback("127.1.2.3:80"));
  assert_true(rpc_addr_is_loopback("localhost:5000"));
  assert_true(rpc_addr_is_loopback("[::1]:5000"));
  assert_true(rpc_addr_is_loopback("unix:/tmp/x.sock"));
  assert_true(rpc_addr_is_loopback("ipv4:127.0.0.1:9"));
  assert_false(rpc_addr_is_loopback("0.0.0.0:5000"));
  assert_false(rpc_addr_is_loopback("[::]:5000"));
  assert_false(rpc_addr_is_loopback("10.0.0.1:5000"));
  assert_false(rpc_addr_is_loopback("128.0.0.1:5000"));
  assert_false(rpc_addr_is_loopback("127.0.0.1"));
  assert_false(rpc_addr_is_loopback("example.com:80"));
  assert_false(rpc_addr_is_loopback(NULL));

  struct rpc_server_opts o;
  rpc_server_opts_default(&o);
  rpc_server *s = NULL;
  o.listen = "0.0.0.0:0";
  assert_int_equal(rpc_server_create(toy_methods, N_TOY, &o, &s), JP_EINVAL);
  assert_null(s);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "not a loopback address"));

  /* A port already taken is refused (no silent SO_REUSEPORT sharing). */
  rpc_server *a = start_server(1, 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(a));
  o.listen = addr;
  assert_int_equal(rpc_server_create(toy_methods, N_TOY, &o, &s), JP_EUNAVAIL);
  assert_null(s);
  rpc_server_destroy(a);

  /* Bad method tables. */
  const struct rpc_method dup[] = {toy_methods[0], toy_methods[0]};
  o.listen = "127.0.0.1:0";
  assert_int_equal(rpc_server_create(dup, 2, &o, &s), JP_EINVAL);
  const struct rpc_method noslash[] = {{"Echo", h_echo, TOY_REQ, 0, 0}};
  assert_int_equal(rpc_server_create(noslash, 1, &o, &s), JP_EINVAL);

  /* A server that is created but never started is destroyed cleanly. */
  assert_int_equal(rpc_server_create(toy_methods, N_TOY, &o, &s), 0);
  rpc_server_destroy(s);
}

static void client_dead_server_fails_fast_unavailable(void **state)
{
  (void)state;
  /* Take a free port, then close the server: nothing listens there. */
  rpc_server *s = start_server(1, 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(s));
  rpc_server_destroy(s);
  rpc_client *cli;
  assert_int_equal(rpc_client_create(NULL, &cli), 0);
  const char *ids[] = {"n:1"};
  int rc;
  /* A 30 s deadline: failing fast means UNAVAILABLE, not DEADLINE_EXCEEDED. */
  assert_int_equal(toy_call(cli, addr, "/test.Toy/Echo", ids, 1, 30000, NULL, &rc),
                   GRPC_STATUS_UNAVAILABLE);
  assert_int_equal(rc, JP_EUNAVAIL);
  int st;
  assert_int_equal(rpc_client_health(cli, addr, "", 30000, &st), JP_EUNAVAIL);
  rpc_client_destroy(cli);
}

/* Start n toy calls "sleep:ms" or "spin" on cq. */
static void start_calls(rpc_client *cli, const char *addr, grpc_completion_queue *cq, int n,
                        const char **id, ToyReq *reqs, rpc_call **calls)
{
  struct rpc_call_opts co = {rpc_deadline_in_ms(60000), -1, NULL, NULL};
  for (int i = 0; i < n; i++) {
    japlaid__v1__shard_delete_request__init(&reqs[i]);
    reqs[i].n_document_ids = 1;
    reqs[i].document_ids = (char **)id;
    assert_int_equal(rpc_call_start(cli, addr, "/test.Toy/Echo", &reqs[i].base, &co, cq,
                                    (void *)(uintptr_t)(i + 1), &calls[i]),
                     0);
  }
}

static void collect(grpc_completion_queue *cq, int n, rpc_call **calls, grpc_status_code *st)
{
  for (int k = 0; k < n; k++) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    int i = (int)(uintptr_t)ev.tag - 1;
    st[i] = rpc_call_status(calls[i], NULL);
    rpc_call_destroy(calls[i]);
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

static void server_shutdown_drains_calls_in_flight(void **state)
{
  (void)state;
  enum { N = 4 };
  rpc_server *s = start_server(N, 0);
  char addr[64];
  snprintf(addr, sizeof addr, "%s", rpc_server_address(s));
  rpc_client *cli;
  assert_int_equal(rpc_client_create(NULL, &cli), 0);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  const char *id[] = {"sleep:400"};
  ToyReq reqs[N];
  rpc_call *calls[N];
  start_calls(cli, addr, cq, N, id, reqs, calls);
  /* Wait until every call is inside its handler. */
  for (int i = 0; i < 2000 && rpc_server_in_flight(s) < N; i++) jp_sleep_ms(5);
  assert_int_equal(rpc_server_in_flight(s), N);
  /* A generous grace: the in-flight calls must all complete normally. */
  rpc_server_shutdown(s, 30000);
  assert_int_equal(rpc_server_in_flight(s), 0);
  grpc_status_code st[N];
  collect(cq, N, calls, st);
  for (int i = 0; i < N; i++) assert_int_equal(st[i], GRPC_STATUS_OK);
  /* After shutdown nothing answers. */
  const char *ok[] = {"n:1"};
  assert_int_equal(toy_call(cli, addr, "/test.Toy/Echo", ok, 1, 10000, NULL, NULL),
                   GRPC_STATUS_UNAVAILABLE);
  rpc_server_destroy(s);
  rpc_client_destroy(cli);
}

static void server_shutdown_waits_for_async_handlers(void **state)
{
  (void)state;
  enum { N = 3 };
  rpc_server *s = start_server(1, 0);
  char addr[64];
  snprintf(addr, sizeof addr, "%s", rpc_server_address(s));
  rpc_client *cli;
  assert_int_equal(rpc_client_create(NULL, &cli), 0);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  const char *id[] = {"slow"};
  ToyReq reqs[N];
  rpc_call *calls[N];
  struct rpc_call_opts co = {rpc_deadline_in_ms(60000), -1, NULL, NULL};
  for (int i = 0; i < N; i++) {
    japlaid__v1__shard_delete_request__init(&reqs[i]);
    reqs[i].n_document_ids = 1;
    reqs[i].document_ids = (char **)id;
    assert_int_equal(rpc_call_start(cli, addr, "/test.Toy/Async", &reqs[i].base, &co, cq,
                                    (void *)(uintptr_t)(i + 1), &calls[i]),
                     0);
  }
  /* One worker has handed all three to other threads. */
  for (int i = 0; i < 2000 && rpc_server_in_flight(s) < N; i++) jp_sleep_ms(5);
  assert_int_equal(rpc_server_in_flight(s), N);
  rpc_server_shutdown(s, 30000);
  grpc_status_code st[N];
  collect(cq, N, calls, st);
  for (int i = 0; i < N; i++) assert_int_equal(st[i], GRPC_STATUS_OK);
  rpc_server_destroy(s);
  rpc_client_destroy(cli);
}

static void server_shutdown_cancels_after_grace(void **state)
{
  (void)state;
  enum { N = 2 };
  rpc_server *s = start_server(N, 0);
  char addr[64];
  snprintf(addr, sizeof addr, "%s", rpc_server_address(s));
  rpc_client *cli;
  assert_int_equal(rpc_client_create(NULL, &cli), 0);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  const char *id[] = {"spin"};
  ToyReq reqs[N];
  rpc_call *calls[N];
  atomic_store(&spin_running, 0);
  atomic_store(&spin_stopped_with, 0);
  start_calls(cli, addr, cq, N, id, reqs, calls);
  for (int i = 0; i < 2000 && atomic_load(&spin_running) < N; i++) jp_sleep_ms(5);
  assert_int_equal(atomic_load(&spin_running), N);
  /* The spinning handlers never finish by themselves (60 s deadline): the
   * grace expires, the calls are cancelled and the handlers told to stop. */
  rpc_server_shutdown(s, 100);
  assert_int_equal(atomic_load(&spin_stopped_with), JP_ECANCELLED);
  grpc_status_code st[N];
  collect(cq, N, calls, st);
  for (int i = 0; i < N; i++) assert_int_not_equal(st[i], GRPC_STATUS_OK);
  rpc_server_destroy(s);
  rpc_client_destroy(cli);
}

/* Two calls over ONE connection reach two workers at once: a busy worker's
 * queue offers no request, so gRPC routes the second call elsewhere. */
static void server_spreads_one_connection_over_workers(void **state)
{
  (void)state;
  enum { N = 2 };
  rpc_server *s = start_server(2, 0);
  char addr[64];
  snprintf(addr, sizeof addr, "%s", rpc_server_address(s));
  rpc_client *cli;
  assert_int_equal(rpc_client_create(NULL, &cli), 0);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  const char *id[] = {"meet"};
  ToyReq reqs[N];
  rpc_call *calls[N];
  struct rpc_call_opts co = {rpc_deadline_in_ms(60000), -1, NULL, NULL};
  atomic_store(&meet_arrived, 0);
  for (int i = 0; i < N; i++) {
    japlaid__v1__shard_delete_request__init(&reqs[i]);
    reqs[i].n_document_ids = 1;
    reqs[i].document_ids = (char **)id;
    assert_int_equal(rpc_call_start(cli, addr, "/test.Toy/Echo", &reqs[i].base, &co, cq,
                                    (void *)(uintptr_t)(i + 1), &calls[i]),
                     0);
  }
  for (int k = 0; k < N; k++) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    int i = (int)(uintptr_t)ev.tag - 1;
    ProtobufCMessage *m = NULL;
    grpc_status_code st;
    assert_int_equal(rpc_call_result(calls[i], TOY_RESP, NULL, &m, &st), 0);
    assert_int_equal(st, GRPC_STATUS_OK);
    assert_int_equal(((ToyResp *)m)->n_deleted, 1);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_call_destroy(calls[i]);
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {}
  grpc_completion_queue_destroy(cq);
  rpc_server_shutdown(s, 5000);
  rpc_server_destroy(s);
  rpc_client_destroy(cli);
}

int main(void)
{
  /* Expected failures log at warn; keep the test output readable. */
  if (!getenv("JAPLAID_LOG")) jp_log_set_level(JP_LOG_LEVEL_ERROR);
  else jp_log_init_from_env();
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(server_answers_ok),
    cmocka_unit_test(server_maps_errors_with_details),
    cmocka_unit_test(server_deadline_exceeded),
    cmocka_unit_test(server_unknown_method_is_unimplemented),
    cmocka_unit_test(server_malformed_request_is_invalid_argument),
    cmocka_unit_test(server_oversized_request_is_resource_exhausted),
    cmocka_unit_test(server_health_check),
    cmocka_unit_test(server_many_concurrent_calls),
    cmocka_unit_test(server_spreads_one_connection_over_workers),
    cmocka_unit_test(server_async_handler),
    cmocka_unit_test(server_request_id_metadata),
  };
  const struct CMUnitTest solo[] = {
    cmocka_unit_test(server_refuses_remote_and_busy_addresses),
    cmocka_unit_test(client_dead_server_fails_fast_unavailable),
    cmocka_unit_test(server_shutdown_drains_calls_in_flight),
    cmocka_unit_test(server_shutdown_waits_for_async_handlers),
    cmocka_unit_test(server_shutdown_cancels_after_grace),
  };
  int rc = cmocka_run_group_tests_name("shared_server", tests, setup, teardown);
  rc += cmocka_run_group_tests_name("own_servers", solo, NULL, NULL);
  return rc;
}
