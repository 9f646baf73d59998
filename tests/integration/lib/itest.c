/* itest.c: see itest.h. */
#include "itest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int actions_for(posix_spawn_file_actions_t *fa, const char *log_path, const char *in_path)
{
  posix_spawn_file_actions_init(fa);
  if (log_path)
    posix_spawn_file_actions_addopen(fa, 2, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(fa, 0, in_path ? in_path : "/dev/null", O_RDONLY, 0);
  return 0;
}

pid_t itest_spawn(char *const argv[], const char *log_path, int n, const char *const *prefixes,
                  char (*vals)[128], int timeout_ms, char *why, size_t why_cap)
{
  int fd[2];
  if (pipe(fd) != 0) {
    snprintf(why, why_cap, "pipe: %s", strerror(errno));
    return -1;
  }
  posix_spawn_file_actions_t fa;
  actions_for(&fa, log_path, NULL);
  posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
  posix_spawn_file_actions_addclose(&fa, fd[0]);
  posix_spawn_file_actions_addclose(&fa, fd[1]);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fd[1]);
  if (rc != 0) {
    close(fd[0]);
    snprintf(why, why_cap, "posix_spawn %s: %s", argv[0], strerror(rc));
    return -1;
  }
  char buf[4096];
  size_t len = 0;
  int found = 0;
  int *got = calloc((size_t)n + 1, sizeof *got);
  long until = now_ms() + timeout_ms;
  while (found < n) {
    long left = until - now_ms();
    struct pollfd p = {fd[0], POLLIN, 0};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
      snprintf(why, why_cap, "%s did not print its addresses within %d ms", argv[0], timeout_ms);
      break;
    }
    ssize_t r = read(fd[0], buf + len, sizeof buf - 1 - len);
    if (r <= 0) {
      snprintf(why, why_cap, "%s exited before printing its addresses (see %s)", argv[0],
               log_path ? log_path : "stderr");
      break;
    }
    len += (size_t)r;
    buf[len] = '\0';
    char *nl;
    while ((nl = strchr(buf, '\n'))) {
      *nl = '\0';
      for (int i = 0; i < n; i++) {
        size_t pl = strlen(prefixes[i]);
        if (!got[i] && !strncmp(buf, prefixes[i], pl)) {
          snprintf(vals[i], 128, "%s", buf + pl);
          got[i] = 1;
          found++;
        }
      }
      size_t rest = len - (size_t)(nl + 1 - buf);
      memmove(buf, nl + 1, rest);
      len = rest;
      buf[len] = '\0';
    }
    if (len == sizeof buf - 1) len = 0;   /* an absurd line: drop it */
  }
  free(got);
  close(fd[0]);
  if (found < n) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
  }
  return pid;
}

int itest_wait_exit(pid_t pid, int timeout_ms)
{
  long until = now_ms() + timeout_ms;
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (r < 0) return -1;
    if (now_ms() >= until) return -1;
    usleep(10000);
  }
}

void itest_kill9(pid_t pid)
{
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

int itest_run(char *const argv[], const char *in_path, const char *log_path, char **out,
              int timeout_ms)
{
  int fd[2];
  if (pipe(fd) != 0) return -1;
  posix_spawn_file_actions_t fa;
  actions_for(&fa, log_path, in_path);
  posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
  posix_spawn_file_actions_addclose(&fa, fd[0]);
  posix_spawn_file_actions_addclose(&fa, fd[1]);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fd[1]);
  if (rc != 0) {
    close(fd[0]);
    return -1;
  }
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  long until = now_ms() + timeout_ms;
  for (;;) {
    long left = until - now_ms();
    struct pollfd p = {fd[0], POLLIN, 0};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
    ssize_t r = read(fd[0], buf + len, cap - len - 1);
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd[0]);
  buf[len] = '\0';
  int st = itest_wait_exit(pid, 10000);
  if (st < 0) itest_kill9(pid);
  if (out) *out = buf;
  else free(buf);
  return st;
}

/* ---- HTTP ------------------------------------------------------------------------ */

int itest_http_connect(struct itest_http_conn *c, const char *addr, int timeout_ms)
{
  (void)timeout_ms;
  c->fd = -1;
  c->extra = NULL;
  c->n_extra = 0;
  snprintf(c->addr, sizeof c->addr, "%s", addr);
  const char *colon = strrchr(addr, ':');
  if (!colon) return -1;
  char host[64];
  snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  return 0;
}

void itest_http_close(struct itest_http_conn *c)
{
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->extra);
  c->extra = NULL;
  c->n_extra = 0;
}

static int send_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Case-insensitive header lookup in [h, end): value of name, or NULL. */
static const char *header(const char *h, const char *end, const char *name, size_t *vlen)
{
  size_t nl = strlen(name);
  while (h < end) {
    const char *eol = strstr(h, "\r\n");
    if (!eol || eol > end) eol = end;
    if ((size_t)(eol - h) > nl && !strncasecmp(h, name, nl) && h[nl] == ':') {
      const char *v = h + nl + 1;
      while (v < eol && *v == ' ') v++;
      *vlen = (size_t)(eol - v);
      return v;
    }
    h = eol + 2;
  }
  return NULL;
}

int itest_http_raw(struct itest_http_conn *c, const void *req, size_t len, int *status,
                   char **body, size_t *body_len, int *closes, int timeout_ms)
{
  *status = 0;
  if (body) *body = NULL;
  if (body_len) *body_len = 0;
  if (closes) *closes = 0;
  /* The server may answer (413, 411) and close before reading everything:
   * a failed send is not yet a failure. */
  int send_failed = send_all(c->fd, req, len) < 0;
  size_t cap = 65536 + c->n_extra, n = 0;
  char *buf = malloc(cap);
  long until = now_ms() + timeout_ms;
  size_t head_len = 0, need = 0;
  int have_head = 0;
  /* Start with what the previous call read past its response. */
  if (c->n_extra) {
    memcpy(buf, c->extra, c->n_extra);
    n = c->n_extra;
    free(c->extra);
    c->extra = NULL;
    c->n_extra = 0;
  }
  buf[n] = '\0';
  for (;;) {
    if (have_head && n >= need) break;
    if (!have_head && strstr(buf, "\r\n\r\n")) goto parse_head;
    long left = until - now_ms();
    struct pollfd p = {c->fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
      free(buf);
      return -1;
    }
    if (n + 65536 > cap) buf = realloc(buf, cap *= 2);
    ssize_t r = recv(c->fd, buf + n, cap - n - 1, 0);
    if (r <= 0) {
      if (have_head) break;
      free(buf);
      return -1;
    }
    n += (size_t)r;
    buf[n] = '\0';
  parse_head:
    if (!have_head) {
      char *e = strstr(buf, "\r\n\r\n");
      if (!e) continue;
      if (!strncmp(buf, "HTTP/1.1 100", 12)) {   /* interim: drop it */
        size_t drop = (size_t)(e + 4 - buf);
        memmove(buf, e + 4, n - drop);
        n -= drop;
        buf[n] = '\0';
        continue;
      }
      head_len = (size_t)(e + 4 - buf);
      have_head = 1;
      *status = atoi(buf + 9);
      size_t vl;
      const char *cl = header(buf, e, "Content-Length", &vl);
      need = head_len + (cl ? (size_t)atol(cl) : 0);
      const char *cn = header(buf, e, "Connection", &vl);
      if (closes) *closes = cn && vl >= 5 && !strncasecmp(cn, "close", 5);
    }
  }
  (void)send_failed;
  if (n > need) {                        /* the start of the next response */
    c->n_extra = n - need;
    c->extra = malloc(c->n_extra);
    memcpy(c->extra, buf + need, c->n_extra);
    n = need;
  }
  size_t bl = n - head_len;
  if (body) {
    *body = malloc(bl + 1);
    memcpy(*body, buf + head_len, bl);
    (*body)[bl] = '\0';
  }
  if (body_len) *body_len = bl;
  free(buf);
  return 0;
}

int itest_http_req(struct itest_http_conn *c, const char *method, const char *path,
                   const char *body, size_t len, int *status, char **resp, size_t *resp_len,
                   int timeout_ms)
{
  size_t hl = strlen(method) + strlen(path) + strlen(c->addr) + 200;
  char *req = malloc(hl + (body ? len : 0));
  int n = snprintf(req, hl, "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s%s", method, path, c->addr,
                   body ? "Content-Type: application/json\r\nContent-Length: " : "", "", "");
  if (body) n += snprintf(req + n, hl - (size_t)n, "%zu\r\n", len);
  n += snprintf(req + n, hl - (size_t)n, "\r\n");
  if (body) memcpy(req + n, body, len);
  int rc = itest_http_raw(c, req, (size_t)n + (body ? len : 0), status, resp, resp_len, NULL,
                          timeout_ms);
  free(req);
  return rc;
}

int itest_http(const char *addr, const char *method, const char *path, const char *body,
               int *status, char **resp, int timeout_ms)
{
  struct itest_http_conn c;
  if (itest_http_connect(&c, addr, timeout_ms) < 0) return -1;
  int rc = itest_http_req(&c, method, path, body, body ? strlen(body) : 0, status, resp, NULL,
                          timeout_ms);
  itest_http_close(&c);
  return rc;
}

int itest_free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
    close(fd);
    return -1;
  }
  int port = ntohs(sa.sin_port);
  close(fd);
  return port;
}
