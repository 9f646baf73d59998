/* rpc_int.h: internals shared by the files of common/rpc only.
 *
 * gRPC library lifetime (grpc_init is reference counted: every server and
 * client holds one reference) and the conversion between gRPC deadlines and
 * the jp_now_ns() clock, which must happen in exactly one place because
 * gRPC's monotonic clock has its own origin. */
#ifndef JP_RPC_INT_H
#define JP_RPC_INT_H
#include <stdint.h>

#include <grpc/support/time.h>

/* grpc_init() (and, once per process, route gRPC's own log lines into
 * util/log.h). Pair with rpc__lib_unref(). */
void rpc__lib_ref(void);
/* grpc_shutdown_blocking(): the last reference waits for gRPC's threads. */
void rpc__lib_unref(void);

/* A gRPC deadline (any clock) as jp_now_ns() time; infinite -> UINT64_MAX. */
uint64_t rpc__deadline_to_ns(gpr_timespec d);
/* jp_now_ns() time as a gRPC monotonic deadline; UINT64_MAX -> infinite. */
gpr_timespec rpc__ns_to_deadline(uint64_t deadline_ns);

#endif /* JP_RPC_INT_H */
