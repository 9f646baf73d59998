/* lib.c: gRPC library lifetime, log routing and deadline clocks
 * (see rpc_int.h). */
#include "rpc/rpc_int.h"

#include <pthread.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>

#include "util/clock.h"
#include "util/log.h"

/* gRPC writes its own diagnostics with gpr_log (to stderr by default);
 * library code must log through util/log.h instead, so the program's level
 * and sink apply. gRPC's INFO lines are about its internals (pollers,
 * subchannels), hence debug here; its errors become warnings, because the
 * failures that matter (a port in use, a refused call) reach our callers as
 * error codes and are reported by them. */
static void gpr_to_jp_log(gpr_log_func_args *a)
{
  int level = a->severity == GPR_LOG_SEVERITY_ERROR  ? JP_LOG_LEVEL_WARN
              : a->severity == GPR_LOG_SEVERITY_INFO ? JP_LOG_LEVEL_DEBUG
                                                     : JP_LOG_LEVEL_TRACE;
  if (JP_LOG_ENABLED(level)) jp_log_write(level, a->file, a->line, "grpc: %s", a->message);
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void install_log(void)
{
  gpr_set_log_function(gpr_to_jp_log);
}

void rpc__lib_ref(void)
{
  pthread_once(&log_once, install_log);
  grpc_init();
}

void rpc__lib_unref(void)
{
  grpc_shutdown_blocking();
}

/* 1e9 s (~31 years) of timeout is "no deadline" for every purpose here, and
 * keeps the nanosecond arithmetic below far from overflow. */
#define RPC_FAR_S 1000000000LL

uint64_t rpc__deadline_to_ns(gpr_timespec d)
{
  if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0) return UINT64_MAX;
  gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC),
                                   gpr_now(GPR_CLOCK_MONOTONIC));
  uint64_t now = jp_now_ns();
  if (left.tv_sec >= RPC_FAR_S) return UINT64_MAX;
  int64_t left_ns = left.tv_sec * 1000000000LL + left.tv_nsec;
  if (left_ns >= 0) return now + (uint64_t)left_ns;
  uint64_t ago = (uint64_t)(-left_ns);
  return ago < now ? now - ago : 0;
}

gpr_timespec rpc__ns_to_deadline(uint64_t deadline_ns)
{
  if (deadline_ns == UINT64_MAX) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  uint64_t now = jp_now_ns();
  if (deadline_ns > now && deadline_ns - now >= (uint64_t)RPC_FAR_S * 1000000000ULL)
    return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  int64_t left_ns = deadline_ns >= now ? (int64_t)(deadline_ns - now) : -(int64_t)(now - deadline_ns);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(left_ns, GPR_TIMESPAN));
}
