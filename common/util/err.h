/* err.h: the one error table of JaPLAID.
 *
 * Every function that can fail returns int: 0 on success, a negative JP_E*
 * code on failure. The codes are stable: add new ones at the end, never
 * renumber or remove (a retired code becomes OBSOLETEn).
 *
 * A code says what kind of failure it is; the detail (which file, which
 * tensor, which byte) is recorded per thread by jp_err() at the point of
 * detection and read back with jp_errmsg(code) by whoever reports the error
 * to a human (CLI, RPC status, HTTP body). Thread-safety: the detail buffer is
 * thread-local. Allocation: none. */
#ifndef JP_ERR_H
#define JP_ERR_H

#define JP_ERR_MAP(XX)                                              \
  XX(NOMEM,       -1,  "out of memory")                             \
  XX(INVAL,       -2,  "invalid argument")                          \
  XX(IO,          -3,  "I/O error")                                 \
  XX(CORRUPT,     -4,  "data is malformed or corrupt")              \
  XX(NOTFOUND,    -5,  "not found")                                 \
  XX(TOOBIG,      -6,  "buffer too small or limit exceeded")        \
  XX(TIMEOUT,     -7,  "deadline exceeded")                         \
  XX(UNAVAIL,     -8,  "service unavailable")                       \
  XX(STORE,       -9,  "storage engine error")                      \
  XX(MISMATCH,    -10, "model or codebook mismatch")                \
  XX(UNSUPPORTED, -11, "not supported")                             \
  XX(EXISTS,      -12, "already exists")                            \
  XX(CANCELLED,   -13, "cancelled")                                 \
  XX(MPI,         -14, "MPI error")                                 \
  XX(NODEVICE,    -15, "no usable GPU")                             \
  XX(DEVICE,      -16, "GPU error")                                 \
  XX(INTERNAL,    -17, "internal error")                            \
  XX(RPC,         -18, "remote call failed")

enum jp_err_code {
  JP_OK = 0,
#define JP__ERR_ENUM(name, val, msg) JP_E##name = (val),
  JP_ERR_MAP(JP__ERR_ENUM)
#undef JP__ERR_ENUM
};

/* Short fixed description of a code ("out of memory"); never NULL. */
const char *jp_strerror(int code);
/* Symbolic name of a code ("JP_ENOMEM"); never NULL. */
const char *jp_errname(int code);

/* Record a detail message for this thread and return `code`, so a failing
 * path reads: `return jp_err(JP_EINVAL, "k must be in 1..%d", max);`.
 * Messages longer than the buffer (512 bytes) are cut. */
int jp_err(int code, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

/* The detail recorded for `code` on this thread, if the last jp_err() was
 * for that code; otherwise jp_strerror(code). Valid until the next jp_err()
 * on this thread. */
const char *jp_errmsg(int code);

/* Forget this thread's detail (call at the start of a request). */
void jp_err_clear(void);

/* Corruption found in on-disk or wire bytes: logs file:line, returns
 * JP_ECORRUPT with the detail (SQLite's SQLITE_CORRUPT_BKPT idea: one place
 * to put a breakpoint). */
#define JP_CORRUPT_AT(...) jp_err_at(JP_ECORRUPT, __FILE__, __LINE__, __VA_ARGS__)
int jp_err_at(int code, const char *file, int line, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

#endif /* JP_ERR_H */
