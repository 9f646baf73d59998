/* ops.c: what every operation shares: start (deadline), finish, coverage,
 * and copying shard answers into the operation's arena.
 *
 * Deadlines: an operation's deadline is its request's timeout (Search's
 * timeout_ms, or --deadline-ms for reads and --write-deadline-ms for the
 * operations that encode documents), and never later than the gRPC
 * caller's own deadline. Shard calls get that deadline minus a small
 * reserve (shard_deadline), so that when a shard misses it the
 * coordinator still has time to merge and answer a degraded result before
 * its own caller gives up (distributed.md §0.3: a slice of the budget is
 * kept back so a partial answer arrives rather than nothing).
 *
 * Thread-safety: an operation is used by one thread at a time (coord.h).
 * Allocation: from the operation's arena. */
#include "coord.h"

#include <stdio.h>
#include <string.h>

#include "rpc/pb.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

/* The reserve kept back from shard calls: a tenth of what is left, at most
 * 20 ms (a merge of 64 x 1000 hits and its JSON take a few ms). */
#define SHARD_RESERVE_MAX_NS 20000000ull

const char *cop_kind_name(enum cop_kind k)
{
  static const char *const n[COP_N] = {"search", "rerank", "encode", "upsert", "delete", "stats"};
  return (unsigned)k < COP_N ? n[k] : "?";
}

ProtobufCMessage *cop_new(struct jp_arena *a, const ProtobufCMessageDescriptor *d)
{
  return rpc_pb_new(a, d);
}

/* An admitted search leaves the in-flight count as it is answered. */
static void cop_release(struct cop *op)
{
  if (op->admitted) {
    op->admitted = 0;
    atomic_fetch_sub(&op->co->searches_in_flight, 1);
  }
}

void cop_fail(struct cop *op, int rc)
{
  cop_release(op);
  if (rc >= 0) rc = jp_err(JP_EINTERNAL, "operation failed without an error code");
  snprintf(op->err, sizeof op->err, "%s", jp_errmsg(rc));
  op->rc = rc;
  op->resp = NULL;
  op->done(op);
}

void cop_finish(struct cop *op, ProtobufCMessage *resp)
{
  cop_release(op);
  op->rc = 0;
  op->err[0] = '\0';
  op->resp = resp;
  op->done(op);
}

void cop_start(struct cop *op)
{
  struct coord *co = op->co;
  op->start_ns = jp_now_ns();
  uint32_t ms = op->timeout_ms;
  if (!ms)
    ms = (uint32_t)(op->kind == COP_SEARCH || op->kind == COP_STATS ? co->o.deadline_ms
                                                                      : co->o.write_deadline_ms);
  op->deadline_ns = op->start_ns + (uint64_t)ms * 1000000u;
  if (op->parent) {
    uint64_t pd = rpc_ctx_deadline_ns(op->parent);
    if (pd < op->deadline_ns) op->deadline_ns = pd;
  }
  op->rc = 0;
  op->err[0] = '\0';
  op->resp = NULL;
  op->coverage = NULL;
  op->state = NULL;
  jp_err_clear();
  switch (op->kind) {
  case COP_SEARCH: cop_search(op); break;
  case COP_RERANK: cop_rerank(op); break;
  case COP_ENCODE: cop_encode(op); break;
  case COP_UPSERT: cop_upsert(op); break;
  case COP_DELETE: cop_delete(op); break;
  case COP_STATS: cop_stats(op); break;
  default: cop_fail(op, jp_err(JP_EINTERNAL, "unknown operation %d", (int)op->kind)); break;
  }
}

uint64_t cop_shard_deadline(const struct cop *op)
{
  uint64_t now = jp_now_ns();
  if (op->deadline_ns <= now) return op->deadline_ns;
  uint64_t left = op->deadline_ns - now;
  uint64_t reserve = left / 10 < SHARD_RESERVE_MAX_NS ? left / 10 : SHARD_RESERVE_MAX_NS;
  return op->deadline_ns - reserve;
}

Japlaid__V1__Coverage *cop_coverage(struct jp_arena *a, struct coord *co, const struct fan *f,
                                    int *answered)
{
  Japlaid__V1__Coverage *c =
    (Japlaid__V1__Coverage *)cop_new(a, &japlaid__v1__coverage__descriptor);
  if (!c) return NULL;
  int n_ok = 0, n_bad = 0;
  for (int i = 0; i < f->n; i++) n_ok += f->slots[i].rc == 0;
  n_bad = f->n - n_ok;
  c->partitions_total = (uint32_t)co->cl.n_partitions;
  c->partitions_answered = (uint32_t)n_ok;
  if (n_bad) {
    c->failed = jp_arena_calloc(a, (size_t)n_bad, sizeof *c->failed);
    if (!c->failed) return NULL;
    for (int i = 0; i < f->n; i++) {
      const struct fan_slot *s = &f->slots[i];
      if (s->rc == 0) continue;
      Japlaid__V1__PartitionFailure *pf = (Japlaid__V1__PartitionFailure *)cop_new(
        a, &japlaid__v1__partition_failure__descriptor);
      if (!pf) return NULL;
      pf->partition = (uint32_t)s->partition;
      pf->reason = jp_arena_strndup(a, s->reason, strlen(s->reason));
      pf->code = (int32_t)s->status;
      const char *addr =
        s->replica >= 0 ? co->cl.parts[s->partition].replicas[s->replica].addr : "";
      pf->address = jp_arena_strndup(a, addr, strlen(addr));
      if (!pf->reason || !pf->address) return NULL;
      c->failed[c->n_failed++] = pf;
    }
  }
  if (answered) *answered = n_ok;
  return c;
}

/* "partition 1: <reason>; partition 3: <reason>" into out. */
void cop_failures_line(const struct fan *f, char *out, size_t cap)
{
  size_t n = 0;
  out[0] = '\0';
  for (int i = 0; i < f->n && n < cap; i++) {
    const struct fan_slot *s = &f->slots[i];
    if (s->rc == 0) continue;
    n += (size_t)snprintf(out + n, cap - n, "%spartition %d: %s", n ? "; " : "", s->partition,
                          s->reason);
  }
}

/* A request error reported by a shard (every replica would say the same):
 * the operation fails with it. Returns the JP_E* code, or 0 if none. */
int cop_request_error(const struct fan *f)
{
  for (int i = 0; i < f->n; i++) {
    const struct fan_slot *s = &f->slots[i];
    if (s->rc == 0) continue;
    if (s->status == GRPC_STATUS_INVALID_ARGUMENT || s->status == GRPC_STATUS_OUT_OF_RANGE)
      return jp_err(JP_EINVAL, "partition %d refused the request: %s", s->partition, s->reason);
    if (s->status == GRPC_STATUS_RESOURCE_EXHAUSTED)
      return jp_err(JP_ETOOBIG, "partition %d: %s", s->partition, s->reason);
  }
  return 0;
}

ProtobufCMessage *cop_copy_msg(struct jp_arena *a, const ProtobufCMessage *m)
{
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = jp_arena_alloc(a, n ? n : 1);
  if (!buf) return NULL;
  protobuf_c_message_pack(m, buf);
  ProtobufCAllocator al;
  rpc_pb_arena_allocator(a, &al);
  ProtobufCMessage *out = NULL;
  if (rpc_pb_unpack(buf, n, m->descriptor, &al, &out) < 0) return NULL;
  return out;
}

int cop_fan_all(struct cop *op, const char *method, const ProtobufCMessageDescriptor *resp_desc,
                const ProtobufCMessage *req, void (*done)(struct fan *f))
{
  struct coord *co = op->co;
  struct fan *f = &op->fan;
  memset(f, 0, sizeof *f);
  f->co = co;
  f->method = method;
  f->resp_desc = resp_desc;
  f->deadline_ns = cop_shard_deadline(op);
  f->parent = op->parent;
  f->n = co->cl.n_partitions;
  f->slots = jp_arena_calloc(op->arena, (size_t)f->n, sizeof *f->slots);
  f->done = done;
  f->ud = op;
  if (!f->slots) return jp_err(JP_ENOMEM, "fan-out");
  for (int p = 0; p < f->n; p++) {
    f->slots[p].partition = p;
    f->slots[p].req = req;
  }
  fan_start(f);
  return 0;
}
