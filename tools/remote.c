/* remote.c: the CLI's client side of japlaid.v1.Search (see remote.h).
 *
 * One rpc_client (common/rpc/client.h) with one channel to the server, and
 * a private completion queue on which each call's single event is awaited,
 * so the status and its details reach the user verbatim.
 *
 * Thread-safety / allocation: see remote.h. */
#include "remote.h"

#include <grpc/grpc.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rpc/client.h"
#include "rpc/limits.h"
#include "rpc/pbjson.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/mem.h"

/* Longest deadline a user may ask for: a day bounds a typo while leaving
 * room for a huge upsert batch. */
#define REMOTE_MAX_DEADLINE_MS (24L * 3600L * 1000L)
/* gRPC delivers a call's event by its deadline; waiting this much longer
 * only guards against a bug turning into a hang. */
#define REMOTE_EVENT_SLACK_MS 5000

struct remote {
  const char *cmd;              /* "search", ... for messages */
  char addr[256];
  long deadline_ms;             /* per call */
  long user_deadline_ms;        /* --deadline-ms, 0 if not given */
  rpc_client *cli;
  grpc_completion_queue *cq;
};

int remote_opt(const char *cmd, int argc, char **argv, int *i, struct remote_opts *o)
{
  const char *a = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
  long v;
  if (!strcmp(a, "--server")) {
    if (!val || !*val) return cli_usage_error(cmd, "--server needs HOST:PORT");
    if (!strchr(val, ':'))
      return cli_usage_error(cmd, "--server wants HOST:PORT (the coordinator's gRPC address), "
                             "got '%s'", val);
    o->server = val;
  } else if (!strcmp(a, "--deadline-ms")) {
    if (cli_parse_int(cmd, a, val, 1, REMOTE_MAX_DEADLINE_MS, &v)) return CLI_USAGE;
    o->deadline_ms = v;
  } else {
    return 0;
  }
  (*i)++;
  return 1;
}

int remote_open(const char *cmd, const struct remote_opts *o, long default_deadline_ms,
                remote **out)
{
  struct rpc_client_opts co;
  remote *r;
  int rc;
  *out = NULL;
  if (!(r = jp_calloc(1, sizeof *r))) return cli_fail(cmd, JP_ENOMEM);
  r->cmd = cmd;
  snprintf(r->addr, sizeof r->addr, "%s", o->server);
  r->user_deadline_ms = o->deadline_ms;
  r->deadline_ms = o->deadline_ms ? o->deadline_ms : default_deadline_ms;
  rpc_client_opts_default(&co);
  /* Answers of searches with large k and long passages, and embeddings of
   * a thousand documents, exceed gRPC's 4 MiB default. */
  co.max_message_bytes = JP_RPC_DEFAULT_MAX_MESSAGE_BYTES;
  if ((rc = rpc_client_create(&co, &r->cli)) < 0) {
    jp_free(r);
    return cli_fail(cmd, rc);
  }
  r->cq = grpc_completion_queue_create_for_next(NULL);
  *out = r;
  return 0;
}

void remote_close(remote *r)
{
  if (!r) return;
  if (r->cq) {
    grpc_completion_queue_shutdown(r->cq);
    while (grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(r->cq);
  }
  rpc_client_destroy(r->cli);
  jp_free(r);
}

uint32_t remote_timeout_ms(const remote *r) { return (uint32_t)r->user_deadline_ms; }

int remote_call(remote *r, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
  char path[96];
  struct rpc_call_opts o = {0};
  rpc_call *call = NULL;
  int rc;
  *resp = NULL;
  snprintf(path, sizeof path, "/japlaid.v1.Search/%s", method);
  o.deadline_ns = rpc_deadline_in_ms(r->deadline_ms);
  o.wait_for_ready = 0;
  if ((rc = rpc_call_start(r->cli, r->addr, path, req, &o, r->cq, &call, &call)) < 0)
    return cli_fail(r->cmd, rc);
  gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                    gpr_time_from_millis(r->deadline_ms + REMOTE_EVENT_SLACK_MS,
                                                         GPR_TIMESPAN));
  grpc_event ev = grpc_completion_queue_next(r->cq, until, NULL);
  if (ev.type != GRPC_OP_COMPLETE) {
    /* Cannot happen with a deadline set; if it does, cancel and collect
     * the event so the call can be freed safely. */
    rpc_call_cancel(call);
    grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    rpc_call_destroy(call);
    fprintf(stderr, "japlaid %s: no answer from %s\n", r->cmd, r->addr);
    return CLI_ERR;
  }
  const char *details = "";
  grpc_status_code st = rpc_call_status(call, &details);
  if (st != GRPC_STATUS_OK) {
    fprintf(stderr, "japlaid %s: %s (%d) from %s: %s\n", r->cmd, rpc_status_name(st), (int)st,
            r->addr, details && *details ? details : "(no details)");
    rpc_call_destroy(call);
    return CLI_ERR;
  }
  rc = rpc_call_result(call, resp_desc, NULL, resp, NULL);
  rpc_call_destroy(call);
  if (rc < 0) return cli_fail(r->cmd, rc);
  return 0;
}

void remote_free(ProtobufCMessage *m)
{
  if (m) protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- JSON, as the coordinator's HTTP API writes it (coordinator/http_api.c) ---- */

#define P(x)                    \
  do {                          \
    if ((rc = (x)) < 0) return rc; \
  } while (0)

const char *remote_replica_state_name(Japlaid__V1__ReplicaState s)
{
  switch (s) {
  case JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_LIVE: return "live";
  case JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_UNVERIFIED: return "unverified";
  case JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_DOWN: return "down";
  case JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_REFUSED: return "refused";
  default: return "unknown";
  }
}

int remote_render_stats(struct jp_buf *b, const Japlaid__V1__StatsResponse *r)
{
  int rc;
  P(jp_buf_puts(b, "{\"model_name\":"));
  P(jp_pbjson_str(b, r->model_name));
  P(jp_buf_puts(b, ",\"model_identity\":"));
  P(jp_pbjson_str(b, r->model_identity));
  P(jp_buf_printf(b, ",\"dim\":%u,\"n_documents\":%llu,\"n_passages\":%llu,\"n_embeddings\":%llu,"
                  "\"total_bytes\":%llu,\"coverage\":",
                  r->dim, (unsigned long long)r->n_documents, (unsigned long long)r->n_passages,
                  (unsigned long long)r->n_embeddings, (unsigned long long)r->total_bytes));
  P(jp_pbjson_coverage(b, r->coverage));
  P(jp_buf_puts(b, ",\"partitions\":["));
  for (size_t i = 0; i < r->n_partitions; i++) {
    const Japlaid__V1__PartitionReport *pr = r->partitions[i];
    P(jp_buf_printf(b, "%s{\"partition\":%u,\"address\":", i ? "," : "", pr->partition));
    P(jp_pbjson_str(b, pr->address));
    P(jp_buf_puts(b, ",\"stats\":"));
    if (pr->stats) P(jp_pbjson_partition_stats(b, pr->stats));
    else P(jp_buf_puts(b, "null"));
    P(jp_buf_putc(b, '}'));
  }
  P(jp_buf_puts(b, "],\"replicas\":["));
  for (size_t i = 0; i < r->n_replicas; i++) {
    const Japlaid__V1__ReplicaStatus *s = r->replicas[i];
    P(jp_buf_printf(b, "%s{\"partition\":%u,\"address\":", i ? "," : "", s->partition));
    P(jp_pbjson_str(b, s->address));
    P(jp_buf_printf(b, ",\"state\":\"%s\",\"reason\":", remote_replica_state_name(s->state)));
    P(jp_pbjson_str(b, s->reason));
    P(jp_buf_puts(b, ",\"codebook\":"));
    P(jp_pbjson_str(b, s->codebook));
    P(jp_buf_printf(b, ",\"outstanding\":%u}", s->outstanding));
  }
  return jp_buf_puts(b, "]}");
}

void remote_warn_partial(const char *cmd, const Japlaid__V1__Coverage *c)
{
  if (!c) return;
  fprintf(stderr, "japlaid %s: warning: partial answer: %u of %u partitions answered", cmd,
          c->partitions_answered, c->partitions_total);
  for (size_t i = 0; i < c->n_failed; i++)
    fprintf(stderr, "%s partition %u: %s", i ? ";" : " (", c->failed[i]->partition,
            c->failed[i]->reason ? c->failed[i]->reason : "");
  fputs(c->n_failed ? ")\n" : "\n", stderr);
}
