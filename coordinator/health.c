/* health.c: the replica prober.
 *
 * Every --health-interval-ms, grpc.health.v1.Health/Check("japlaid.v1.Shard")
 * goes to every replica at once (one completion queue, one deadline); the
 * answers update the cluster (cluster_health). A replica that answers
 * SERVING and is not verified since it (re)appeared is then asked for its
 * Shard/Stats, which cluster_verify compares with the coordinator's model
 * and the cluster's codebook. The C core has no health service built in;
 * the shards serve this one through common/rpc (stack.md §2).
 *
 * The probes share the data calls' channels (one rpc_client), so a probe
 * also nudges a disconnected channel to reconnect to a restarted shard.
 *
 * Thread-safety: one round at a time (start-up, then the thread).
 * Allocation: per round, one completion queue and the probe array. */
#include "coord.h"

#include <string.h>
#include <time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

/* A probe gets the interval to answer, but at least 100 ms (a loaded
 * machine) and at most 2 s (a hung shard must not stall the rounds). */
#define HEALTH_TIMEOUT_MIN_MS 100
#define HEALTH_TIMEOUT_MAX_MS 2000

struct health {
  struct coord *co;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
};

struct probe {
  int p, r;
  rpc_call *call;
};

/* Start one call per probe in [0, n) that has p >= 0, and wait for them all. */
static void run_calls(struct coord *co, grpc_completion_queue *cq, struct probe *pr, int n,
                      const char *method, const ProtobufCMessage *req, int timeout_ms)
{
  struct rpc_call_opts o = {0};
  o.deadline_ns = rpc_deadline_in_ms(timeout_ms);
  o.wait_for_ready = 0;
  int started = 0;
  for (int i = 0; i < n; i++) {
    pr[i].call = NULL;
    if (pr[i].p < 0) continue;
    const char *addr = co->cl.parts[pr[i].p].replicas[pr[i].r].addr;
    if (rpc_call_start(co->cli, addr, method, req, &o, cq, &pr[i], &pr[i].call) == 0) started++;
  }
  while (started > 0) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_OP_COMPLETE) started--;
  }
}

static void why_of(rpc_call *call, int rc, char *out, size_t cap)
{
  const char *det = "";
  grpc_status_code st = rpc_call_status(call, &det);
  if (rc == JP_EINVAL && st == GRPC_STATUS_OK) snprintf(out, cap, "malformed health answer");
  else snprintf(out, cap, "%s%s%.240s", rpc_status_name(st), *det ? ": " : "", det);
}

int health_round(struct coord *co)
{
  struct cluster *cl = &co->cl;
  int n = cl->n_replicas;
  int timeout = co->o.health_interval_ms;
  if (timeout < HEALTH_TIMEOUT_MIN_MS) timeout = HEALTH_TIMEOUT_MIN_MS;
  if (timeout > HEALTH_TIMEOUT_MAX_MS) timeout = HEALTH_TIMEOUT_MAX_MS;
  struct probe *pr = jp_calloc((size_t)n, sizeof *pr);
  int *need = jp_calloc((size_t)n, sizeof *need);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  if (!pr || !need || !cq) {
    jp_free(pr);
    jp_free(need);
    if (cq) grpc_completion_queue_destroy(cq);
    return jp_err(JP_ENOMEM, "health round");
  }
  int i = 0;
  for (int p = 0; p < cl->n_partitions; p++)
    for (int r = 0; r < cl->parts[p].n_replicas; r++, i++) {
      pr[i].p = p;
      pr[i].r = r;
    }

  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  hreq.service = "japlaid.v1.Shard";
  run_calls(co, cq, pr, n, "/grpc.health.v1.Health/Check", &hreq.base, timeout);
  int n_verify = 0;
  for (i = 0; i < n; i++) {
    char why[300] = "";
    int serving = 0;
    if (!pr[i].call) {
      snprintf(why, sizeof why, "cannot start a health check");
    } else {
      ProtobufCMessage *m = NULL;
      int rc = rpc_call_result(pr[i].call, &grpc__health__v1__health_check_response__descriptor,
                               &coord_pb_alloc, &m, NULL);
      if (rc == 0) {
        int st = (int)((Grpc__Health__V1__HealthCheckResponse *)m)->status;
        serving = st == RPC_HEALTH_SERVING;
        if (!serving)
          snprintf(why, sizeof why, "health: %s", st == RPC_HEALTH_NOT_SERVING ? "NOT_SERVING"
                                                                               : "UNKNOWN");
        protobuf_c_message_free_unpacked(m, &coord_pb_alloc);
      } else {
        why_of(pr[i].call, rc, why, sizeof why);
      }
      rpc_call_destroy(pr[i].call);
      pr[i].call = NULL;
    }
    need[i] = cluster_health(cl, pr[i].p, pr[i].r, serving, why);
    n_verify += need[i];
  }

  if (n_verify > 0) {
    Japlaid__V1__ShardStatsRequest sreq = JAPLAID__V1__SHARD_STATS_REQUEST__INIT;
    struct probe *vp = jp_calloc((size_t)n, sizeof *vp);
    if (vp) {
      for (i = 0; i < n; i++) vp[i] = need[i] ? pr[i] : (struct probe){-1, -1, NULL};
      run_calls(co, cq, vp, n, "/japlaid.v1.Shard/Stats", &sreq.base, timeout);
      for (i = 0; i < n; i++) {
        if (vp[i].p < 0) continue;
        char why[300] = "cannot start a Stats call";
        ProtobufCMessage *m = NULL;
        int rc = JP_EINTERNAL;
        if (vp[i].call) {
          rc = rpc_call_result(vp[i].call, &japlaid__v1__shard_stats_response__descriptor,
                               &coord_pb_alloc, &m, NULL);
          if (rc < 0) why_of(vp[i].call, rc, why, sizeof why);
          rpc_call_destroy(vp[i].call);
        }
        const Japlaid__V1__ShardStatsResponse *sr = (const Japlaid__V1__ShardStatsResponse *)m;
        if (rc == 0 && !sr->stats) snprintf(why, sizeof why, "Stats answer without stats");
        cluster_verify(cl, vp[i].p, vp[i].r, rc == 0 ? sr->stats : NULL, why);
        if (m) protobuf_c_message_free_unpacked(m, &coord_pb_alloc);
      }
      jp_free(vp);
    }
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  jp_free(pr);
  jp_free(need);
  return 0;
}

static void *health_main(void *arg)
{
  struct health *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stop) {
    pthread_mutex_unlock(&h->mu);
    uint64_t t0 = jp_now_ns();
    health_round(h->co);
    uint64_t until = t0 + (uint64_t)h->co->o.health_interval_ms * 1000000u;
    pthread_mutex_lock(&h->mu);
    while (!h->stop && jp_now_ns() < until) {
      struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
      pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

int health_start(struct coord *co, struct health **out)
{
  *out = NULL;
  struct health *h = jp_calloc(1, sizeof *h);
  if (!h) return jp_err(JP_ENOMEM, "health");
  h->co = co;
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&h->th, NULL, health_main, h) != 0) {
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    jp_free(h);
    return jp_err(JP_EINTERNAL, "cannot start the health thread");
  }
  *out = h;
  return 0;
}

void health_stop(struct health *h)
{
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  h->stop = 1;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->th, NULL);
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  jp_free(h);
}
