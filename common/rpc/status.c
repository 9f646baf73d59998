/* status.c: JP_E* <-> gRPC status (see status.h). */
#include "rpc/status.h"

#include "util/err.h"

/* THE table: the gRPC status of each JP_E* code. It is expanded over
 * JP_ERR_MAP below, so adding a code to util/err.h without a row here is a
 * compile error ("RPC_ST_<NAME> undeclared"), never a silent UNKNOWN. */
enum {
  RPC_ST_NOMEM = GRPC_STATUS_RESOURCE_EXHAUSTED,
  RPC_ST_INVAL = GRPC_STATUS_INVALID_ARGUMENT,
  RPC_ST_IO = GRPC_STATUS_INTERNAL,                 /* the server's disk, not the caller */
  RPC_ST_CORRUPT = GRPC_STATUS_DATA_LOSS,
  RPC_ST_NOTFOUND = GRPC_STATUS_NOT_FOUND,
  RPC_ST_TOOBIG = GRPC_STATUS_RESOURCE_EXHAUSTED,   /* a size limit was hit */
  RPC_ST_TIMEOUT = GRPC_STATUS_DEADLINE_EXCEEDED,
  RPC_ST_UNAVAIL = GRPC_STATUS_UNAVAILABLE,         /* retry elsewhere / later */
  RPC_ST_STORE = GRPC_STATUS_INTERNAL,
  RPC_ST_MISMATCH = GRPC_STATUS_FAILED_PRECONDITION, /* other model / codebook */
  RPC_ST_UNSUPPORTED = GRPC_STATUS_UNIMPLEMENTED,
  RPC_ST_EXISTS = GRPC_STATUS_ALREADY_EXISTS,
  RPC_ST_CANCELLED = GRPC_STATUS_CANCELLED,
  RPC_ST_MPI = GRPC_STATUS_INTERNAL,
  RPC_ST_NODEVICE = GRPC_STATUS_FAILED_PRECONDITION, /* configured for a GPU it lacks */
  RPC_ST_DEVICE = GRPC_STATUS_INTERNAL,
  RPC_ST_INTERNAL = GRPC_STATUS_INTERNAL,
  RPC_ST_RPC = GRPC_STATUS_UNAVAILABLE,             /* a downstream call failed */
};

#define RPC__ST_ROW(name, val, msg) [-(val)] = (grpc_status_code)RPC_ST_##name,
static const grpc_status_code err_to_status[] = {
  [0] = GRPC_STATUS_OK,
  JP_ERR_MAP(RPC__ST_ROW)
};
#undef RPC__ST_ROW

grpc_status_code rpc_status_from_err(int rc)
{
  if (rc > 0 || rc < -(int)(sizeof err_to_status / sizeof err_to_status[0] - 1))
    return GRPC_STATUS_UNKNOWN;
  /* A value inside the range but not in JP_ERR_MAP would read as OK. */
  if (rc != 0 && err_to_status[-rc] == GRPC_STATUS_OK) return GRPC_STATUS_UNKNOWN;
  return err_to_status[-rc];
}

int rpc_err_from_status(grpc_status_code st)
{
  switch (st) {
  case GRPC_STATUS_OK: return 0;
  case GRPC_STATUS_CANCELLED: return JP_ECANCELLED;
  case GRPC_STATUS_INVALID_ARGUMENT: return JP_EINVAL;
  case GRPC_STATUS_OUT_OF_RANGE: return JP_EINVAL;
  case GRPC_STATUS_DEADLINE_EXCEEDED: return JP_ETIMEOUT;
  case GRPC_STATUS_NOT_FOUND: return JP_ENOTFOUND;
  case GRPC_STATUS_ALREADY_EXISTS: return JP_EEXISTS;
  case GRPC_STATUS_RESOURCE_EXHAUSTED: return JP_ETOOBIG;
  case GRPC_STATUS_FAILED_PRECONDITION: return JP_EMISMATCH;
  case GRPC_STATUS_UNIMPLEMENTED: return JP_EUNSUPPORTED;
  case GRPC_STATUS_DATA_LOSS: return JP_ECORRUPT;
  case GRPC_STATUS_UNAVAILABLE: return JP_EUNAVAIL;
  /* The peer failed in a way the caller cannot fix by changing the
   * request: report it as a failed remote call. */
  case GRPC_STATUS_PERMISSION_DENIED:
  case GRPC_STATUS_UNAUTHENTICATED:
  case GRPC_STATUS_ABORTED:
  case GRPC_STATUS_INTERNAL:
  case GRPC_STATUS_UNKNOWN:
  default: return JP_ERPC;
  }
}

const char *rpc_status_name(grpc_status_code st)
{
  static const char *const names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED"};
  if ((int)st < 0 || (unsigned)st >= sizeof names / sizeof names[0]) return "UNKNOWN_STATUS";
  return names[st];
}
