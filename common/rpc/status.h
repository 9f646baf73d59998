/* status.h: the one mapping between JaPLAID error codes (util/err.h) and
 * gRPC status codes.
 *
 * Servers answer a failed handler with rpc_status_from_err(rc) and the
 * detail text jp_errmsg(rc); clients turn a received status back into a
 * JP_E* code with rpc_err_from_status(). Both directions are tables in
 * status.c and nowhere else (style.md §2.4), so a new JP_E* code fails to
 * compile until it is given a status there.
 *
 * Thread-safety: pure functions. Allocation: none. */
#ifndef JP_RPC_STATUS_H
#define JP_RPC_STATUS_H
#include <grpc/status.h>

/* The gRPC status for `rc` (0 -> GRPC_STATUS_OK, a JP_E* code -> its
 * status, anything else -> GRPC_STATUS_UNKNOWN). */
grpc_status_code rpc_status_from_err(int rc);

/* The JP_E* code a client reports for a received status (OK -> 0). Statuses
 * that mean "the remote side or the network failed" (UNAVAILABLE, UNKNOWN,
 * ABORTED...) map to JP_EUNAVAIL or JP_ERPC; request errors to the
 * matching code (INVALID_ARGUMENT -> JP_EINVAL, ...). */
int rpc_err_from_status(grpc_status_code st);

/* "INVALID_ARGUMENT", ... for logs; "UNKNOWN_STATUS" for out-of-range. */
const char *rpc_status_name(grpc_status_code st);

#endif /* JP_RPC_STATUS_H */
