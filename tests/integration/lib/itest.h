/* itest.h: helpers for integration tests that run real server processes
 * on 127.0.0.1 (spawn, read the "listening on" lines, stop, run a CLI,
 * speak HTTP/1.1).
 *
 * Everything reports failure by return value (never aborts), so a test can
 * say what it was doing when something went wrong.
 *
 * Thread-safety: an itest_http_conn belongs to one thread; the rest is
 * reentrant. Allocation: bodies returned to the caller are malloc'd
 * (free()). */
#ifndef JP_ITEST_H
#define JP_ITEST_H
#include <stddef.h>
#include <sys/types.h>

/* Start argv[0] with stdout on a pipe and stderr appended to log_path
 * (NULL: inherited). Waits (at most timeout_ms) until it has printed one
 * line starting with each of the n prefixes, and copies the rest of each
 * such line to vals[i] (e.g. prefix "grpc listening on " -> "127.0.0.1:PORT").
 * Returns the pid, or -1 (the process is killed; *why says what
 * happened). */
pid_t itest_spawn(char *const argv[], const char *log_path, int n, const char *const *prefixes,
                  char (*vals)[128], int timeout_ms, char *why, size_t why_cap);

/* Exit status of pid (128 + signal if killed), waiting at most timeout_ms;
 * -1 if it is still running. */
int itest_wait_exit(pid_t pid, int timeout_ms);

/* SIGKILL and reap. */
void itest_kill9(pid_t pid);

/* Run argv to completion (at most timeout_ms), stdout into *out (malloc'd,
 * NUL-terminated; NULL to discard), stderr appended to log_path (NULL:
 * inherited); stdin from in_path (NULL: /dev/null). Returns the exit
 * status, or -1. */
int itest_run(char *const argv[], const char *in_path, const char *log_path, char **out,
              int timeout_ms);

/* One HTTP/1.1 connection (keep-alive). */
struct itest_http_conn {
  int fd;
  char addr[128];
  char *extra;            /* bytes read past the last response (pipelining) */
  size_t n_extra;
};

int  itest_http_connect(struct itest_http_conn *c, const char *addr, int timeout_ms);
void itest_http_close(struct itest_http_conn *c);

/* Send raw bytes and read one response: status, body (malloc'd) and
 * whether the server will close the connection (Connection: close).
 * Returns 0, or -1 on a connection error / timeout. */
int itest_http_raw(struct itest_http_conn *c, const void *req, size_t len, int *status,
                   char **body, size_t *body_len, int *closes, int timeout_ms);

/* A request with a Content-Length body (NULL: none). */
int itest_http_req(struct itest_http_conn *c, const char *method, const char *path,
                   const char *body, size_t len, int *status, char **resp, size_t *resp_len,
                   int timeout_ms);

/* One request on a fresh connection. */
int itest_http(const char *addr, const char *method, const char *path, const char *body,
               int *status, char **resp, int timeout_ms);

/* Free port of 127.0.0.1 (bound and released: good enough for a test). */
int itest_free_port(void);

#endif /* JP_ITEST_H */
