/* fanout.c: shard calls for one operation, with failover, on one
 * completion queue polled by one thread (stack.md §2: many calls on one CQ
 * with a tag per call is the coordinator pattern).
 *
 * A fan has one slot per target: per partition for reads (any routable
 * replica, least outstanding first), per (partition, replica) for writes
 * (that replica only). A read slot whose call fails with a status that
 * another replica could answer differently (UNAVAILABLE above all; also
 * INTERNAL, DATA_LOSS, FAILED_PRECONDITION...) is retried on the next
 * routable replica not yet tried, while the deadline allows. Statuses that
 * describe the request (INVALID_ARGUMENT, RESOURCE_EXHAUSTED) or the time
 * (DEADLINE_EXCEEDED) end the slot: every replica would say the same.
 * UNAVAILABLE also marks the replica down (cluster_mark_down), so the next
 * requests avoid it before the health thread notices.
 *
 * Completion counting: pending starts at n + 1; each slot's final outcome
 * takes one, and fan_start itself takes the extra one after starting every
 * slot, so done() cannot run while the starter still walks the slots. A
 * slot is touched by one thread at a time (its starter, then the CQ thread
 * for each event), and only the thread that takes pending to zero reads
 * all of them (atomic_fetch_sub is acq_rel, ordering their writes).
 *
 * Every call carries the fan's deadline, and gRPC delivers each call's
 * event by its deadline at the latest, so a fan always completes; there
 * are no timers here. */
#include "coord.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

/* At shutdown, say what is being waited for if shard calls are still
 * running after this long (they end by their deadlines). */
#define FANOUT_STOP_WARN_NS 5000000000ull

/* Shard responses are unpacked with the project allocator (mem.h). */
static void *pb_alloc(void *ud, size_t n)
{
  (void)ud;
  return jp_malloc(n);
}
static void pb_free(void *ud, void *p)
{
  (void)ud;
  jp_free(p);
}
ProtobufCAllocator coord_pb_alloc = {pb_alloc, pb_free, NULL};

/* "deadline exceeded" for GRPC_STATUS_DEADLINE_EXCEEDED. */
static void status_words(grpc_status_code st, char *out, size_t cap)
{
  const char *n = rpc_status_name(st);
  size_t i = 0;
  for (; n[i] && i + 1 < cap; i++) out[i] = n[i] == '_' ? ' ' : (char)tolower((unsigned char)n[i]);
  out[i] = '\0';
}

/* Whether another replica might answer where this one failed. */
static int may_fail_over(grpc_status_code st)
{
  switch (st) {
  case GRPC_STATUS_OK:
  case GRPC_STATUS_INVALID_ARGUMENT:
  case GRPC_STATUS_OUT_OF_RANGE:
  case GRPC_STATUS_RESOURCE_EXHAUSTED:
  case GRPC_STATUS_DEADLINE_EXCEEDED:
    return 0;
  default:
    return 1;
  }
}

static void slot_done(struct fan_slot *s)
{
  struct fan *f = s->f;
  if (atomic_fetch_sub(&f->pending, 1) == 1) f->done(f);
}

/* Start the slot's next attempt, or end the slot when none is possible. */
static void slot_attempt(struct fan_slot *s)
{
  struct fan *f = s->f;
  struct coord *co = f->co;
  for (;;) {
    int r, rc;
    if (s->fixed) {
      if (s->attempts > 0) break;           /* writes are not retried elsewhere */
      r = s->replica;
      atomic_fetch_add(&co->cl.parts[s->partition].replicas[r].outstanding, 1);
    } else {
      if (jp_now_ns() >= f->deadline_ns) {
        if (s->attempts == 0 || s->status != GRPC_STATUS_DEADLINE_EXCEEDED) {
          char prev[sizeof s->reason];
          snprintf(prev, sizeof prev, "%s", s->reason);
          snprintf(s->reason, sizeof s->reason, "deadline exceeded%s%.560s",
                   s->attempts ? " after: " : "", s->attempts ? prev : "");
        }
        s->rc = JP_ETIMEOUT;
        s->status = GRPC_STATUS_DEADLINE_EXCEEDED;
        break;
      }
      if (cluster_pick(&co->cl, s->partition, &s->tried, &r) < 0) {
        if (s->attempts == 0) {
          cluster_why_unavailable(&co->cl, s->partition, s->reason, sizeof s->reason);
          s->rc = JP_EUNAVAIL;
          s->status = GRPC_STATUS_UNAVAILABLE;
        }
        /* else: keep the last attempt's error (no other replica left). */
        break;
      }
    }
    s->replica = r;
    s->attempts++;
    struct rpc_call_opts o = {0};
    o.deadline_ns = f->deadline_ns;
    o.wait_for_ready = 0;                   /* fail fast: failover instead of waiting */
    o.parent = f->parent;
    const char *addr = co->cl.parts[s->partition].replicas[r].addr;
    atomic_fetch_add(&co->calls_in_flight, 1);
    pthread_mutex_lock(&s->mu);
    rc = rpc_call_start(co->cli, addr, f->method, s->req, &o, co->cq, s, &s->call);
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) return;                    /* the CQ thread continues */
    atomic_fetch_sub(&co->calls_in_flight, 1);
    cluster_release(&co->cl, s->partition, r);
    s->rc = rc;
    s->status = GRPC_STATUS_INTERNAL;
    snprintf(s->reason, sizeof s->reason, "%s: %s", addr, jp_errmsg(rc));
    JP_LOG_ERROR("cannot start %s at %s: %s", f->method, addr, jp_errmsg(rc));
  }
  slot_done(s);
}

/* The event of a slot's call, on the CQ thread. */
static void slot_event(struct fan_slot *s)
{
  struct fan *f = s->f;
  struct coord *co = f->co;
  /* Wait for the starter to have stored s->call (see struct fan_slot). */
  pthread_mutex_lock(&s->mu);
  pthread_mutex_unlock(&s->mu);
  const char *addr = co->cl.parts[s->partition].replicas[s->replica].addr;
  ProtobufCMessage *m = NULL;
  grpc_status_code st = GRPC_STATUS_UNKNOWN;
  int rc = rpc_call_result(s->call, f->resp_desc, &coord_pb_alloc, &m, &st);
  const char *det = "";
  if (rc < 0) rpc_call_status(s->call, &det);
  char words[40];
  status_words(st, words, sizeof words);
  if (rc < 0) {
    if (st == GRPC_STATUS_OK)               /* the bytes did not parse */
      snprintf(s->reason, sizeof s->reason, "%s: malformed %s response", addr, f->method);
    else
      snprintf(s->reason, sizeof s->reason, "%s: %s%s%.300s", words, addr, *det ? ": " : "", det);
  }
  rpc_call_destroy(s->call);
  s->call = NULL;
  atomic_fetch_sub(&co->calls_in_flight, 1);
  cluster_release(&co->cl, s->partition, s->replica);
  if (rc == 0) {
    s->rc = 0;
    s->status = GRPC_STATUS_OK;
    s->reason[0] = '\0';
    s->resp = m;
    slot_done(s);
    return;
  }
  s->rc = rc;
  s->status = st == GRPC_STATUS_OK ? GRPC_STATUS_INTERNAL : st;
  metrics_shard_error(co->met);
  JP_LOG_DEBUG("%s at %s: %s", f->method, addr, s->reason);
  /* UNAVAILABLE: the process is gone or going (mark_down so it is avoided
   * at once); FAILED_PRECONDITION: it serves another model than when it was
   * verified (restarted on another index between health rounds), so it is
   * taken out and verified again. */
  if (st == GRPC_STATUS_UNAVAILABLE || st == GRPC_STATUS_FAILED_PRECONDITION)
    cluster_mark_down(&co->cl, s->partition, s->replica, s->reason);
  if (!s->fixed && may_fail_over(s->status)) {
    metrics_failover(co->met);
    slot_attempt(s);
    return;
  }
  slot_done(s);
}

void fan_start(struct fan *f)
{
  atomic_init(&f->pending, f->n + 1);
  for (int i = 0; i < f->n; i++) pthread_mutex_init(&f->slots[i].mu, NULL);
  for (int i = 0; i < f->n; i++) {
    struct fan_slot *s = &f->slots[i];
    s->f = f;
    s->call = NULL;
    s->resp = NULL;
    s->rc = 0;
    s->attempts = 0;
    s->status = GRPC_STATUS_OK;
    s->reason[0] = '\0';
    if (!s->fixed) {
      s->replica = -1;
      s->tried = 0;
    }
    slot_attempt(s);
  }
  if (atomic_fetch_sub(&f->pending, 1) == 1) f->done(f);
}

void fan_fini(struct fan *f)
{
  for (int i = 0; i < f->n; i++) {
    if (f->slots[i].resp) {
      protobuf_c_message_free_unpacked(f->slots[i].resp, &coord_pb_alloc);
      f->slots[i].resp = NULL;
    }
    pthread_mutex_destroy(&f->slots[i].mu);
  }
}

/* ---- the completion-queue thread ------------------------------------------------ */

static void *cq_main(void *arg)
{
  struct coord *co = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(co->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type == GRPC_OP_COMPLETE) slot_event(ev.tag);
  }
  return NULL;
}

int fanout_start(struct coord *co)
{
  co->cq = grpc_completion_queue_create_for_next(NULL);
  if (!co->cq) return jp_err(JP_ENOMEM, "completion queue");
  atomic_init(&co->calls_in_flight, 0);
  atomic_init(&co->searches_in_flight, 0);
  if (pthread_create(&co->cq_thread, NULL, cq_main, co) != 0) {
    grpc_completion_queue_destroy(co->cq);
    co->cq = NULL;
    return jp_err(JP_EINTERNAL, "cannot start the fan-out thread");
  }
  co->cq_thread_started = 1;
  return 0;
}

void fanout_stop(struct coord *co)
{
  if (!co->cq) return;
  /* Calls still in flight end by their deadlines; a queue must not be shut
   * down while calls can still post to it. */
  uint64_t warn_at = jp_now_ns() + FANOUT_STOP_WARN_NS;
  while (atomic_load(&co->calls_in_flight) > 0) {
    if (warn_at && jp_now_ns() > warn_at) {
      JP_LOG_WARN("waiting for %d shard call(s) to end", atomic_load(&co->calls_in_flight));
      warn_at = 0;
    }
    jp_sleep_ms(2);
  }
  grpc_completion_queue_shutdown(co->cq);
  if (co->cq_thread_started) pthread_join(co->cq_thread, NULL);
  co->cq_thread_started = 0;
  grpc_completion_queue_destroy(co->cq);
  co->cq = NULL;
}
