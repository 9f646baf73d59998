/* http.c: the HTTP/1.1 front end on libuv + http-parser.
 *
 * The loop thread only moves bytes: it accepts, parses requests with
 * http-parser (headers and a Content-Length body up to --max-body-bytes),
 * and writes answers. Everything that takes time is elsewhere:
 *   1. a complete request goes to libuv's threadpool (uv_queue_work), which
 *      parses the JSON body, builds the japlaid.v1 request and starts the
 *      operation (cop_start: encoder batcher, fan-out, workers);
 *   2. the operation finishes on some other thread; its done callback puts
 *      the request on a mutex-protected list and wakes the loop with
 *      uv_async_send (a gRPC completion queue has no file descriptor to
 *      watch, stack.md §2/§5);
 *   3. the loop hands the response to the threadpool again to render the
 *      JSON (a 64 x 1000-hit answer is megabytes), then writes it.
 * One request per connection is served at a time: reading stops while a
 * request is in flight and resumes once its answer is written, and bytes
 * already received (a pipelined request) wait in the connection.
 *
 * Refusals (the connection is closed after the answer): a body larger
 * than the limit (413, before it is read when Content-Length says so),
 * chunked request bodies (411: send Content-Length), malformed HTTP (400),
 * a request line over 8 KiB (414). Unknown paths get 404 and known paths
 * with another method 405 with an Allow header; both keep the connection.
 * "Expect: 100-continue" (curl sends it for bodies over 1 KiB) is answered
 * before the body is read.
 *
 * Shutdown (http_stop): the listener closes, idle connections close, busy
 * ones close after their answer; after grace_ms the rest are closed. The
 * loop ends once every started operation has finished (they all end by
 * their deadlines), so no callback can reach a freed loop.
 *
 * Thread-safety: everything here runs on the loop thread except the
 * threadpool work functions (which touch only their request) and
 * http_done / http_stop (which use the mutex and uv_async_send).
 * Allocation: a struct per connection and per request; each request has
 * its own arena for the operation. */
#include "coord.h"

#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "rpc/status.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

/* Request line (URL) limit: paths here are short; 8 KiB is what most
 * servers allow (nginx's large_client_header_buffers default). */
#define HTTP_MAX_URL 8192
/* Memory one request's operation may take (an upsert of 1000 passages of
 * 256 vectors holds 128 MiB of vectors). */
#define HTTP_ARENA_LIMIT ((size_t)1 << 30)
/* Largest rendered answer: an Encode of 1000 documents as JSON numbers
 * is ~1 GB; past this the client is told to ask for less. */
#define HTTP_MAX_RESPONSE ((size_t)512 << 20)
/* An idle keep-alive connection is closed after this long (nginx's
 * keepalive_timeout is 75 s), so idle sockets cannot pile up. */
#define HTTP_IDLE_MS 60000
/* Lingering close: after the last answer on a connection the server stops
 * sending and reads (and drops) what the client still sends for at most
 * this long, so a client that is still uploading a refused body receives
 * the answer instead of a reset (nginx lingering_close). */
#define HTTP_LINGER_MS 2000
/* Pending connections the kernel queues before accept: SOMAXCONN's usual
 * value, plenty for one loop that accepts as fast as it reads. */
#define HTTP_BACKLOG 128

struct http_conn;

struct http_req {
  struct http_server *srv;
  struct http_conn *conn;             /* NULL once the connection is gone */
  int method;
  char path[256];
  char *body;
  size_t body_len;
  int keep_alive;
  int route;                          /* index in routes[], -1 none */
  enum ep ep;
  int single;
  struct jp_arena arena;
  struct cop op;
  int ready;                          /* status/out hold the answer */
  int parsed;                         /* the start work is over */
  int completed;                      /* the operation's done arrived on the loop */
  int status;
  char allow[64];                     /* 405: Allow header value ("" none) */
  struct jp_buf out;
  char head[512];
  uv_buf_t bufs[2];
  uv_write_t wr;
  uv_work_t work;
  uint64_t start_ns;
  struct http_req *next;              /* done list */
};

struct http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;                   /* idle timeout, then lingering close */
  uv_shutdown_t shut;
  int open_handles;                   /* tcp + timer not yet closed */
  int draining;                       /* lingering close: reads are dropped */
  http_parser parser;
  struct http_server *srv;
  struct http_conn *prev, *next;
  char url[HTTP_MAX_URL + 1];
  size_t url_len;
  struct jp_buf body;
  char hname[32];                     /* lowercased header name being read (cut) */
  size_t hname_len;
  int hvalue_expect;                  /* reading the value of "Expect" */
  char hval[32];
  size_t hval_len;
  int expect_continue;                /* "Expect: 100-continue" was sent */
  int eof;                            /* the client finished sending */
  int early;                          /* HTTP status to refuse with, 0 none */
  char early_msg[200];
  int busy;                           /* a request is being served */
  int writing;                        /* its answer is being written */
  int closing;
  char *pending;                      /* received, not yet parsed (while busy) */
  size_t pending_len;
  struct http_req *req;
};

struct http_server {
  struct coord *co;
  struct http_opts o;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t wake;
  uv_timer_t grace;
  pthread_t th;
  int th_started;
  pthread_mutex_t mu;
  struct http_req *done_head, *done_tail;   /* under mu */
  int stop_requested, grace_ms;              /* under mu */
  /* loop thread only: */
  struct http_conn *conns;
  int n_conns, n_reqs;
  int stopping, closed;
  char address[300];
  http_parser_settings ps;
};

static const struct route {
  const char *path;
  int method;
  enum ep ep;
  int kind;                           /* enum cop_kind, -1: answered here */
} routes[] = {
  {"/v1/search", HTTP_POST, EP_SEARCH, COP_SEARCH},
  {"/v1/rerank", HTTP_POST, EP_RERANK, COP_RERANK},
  {"/v1/encode", HTTP_POST, EP_ENCODE, COP_ENCODE},
  {"/v1/documents", HTTP_POST, EP_UPSERT, COP_UPSERT},
  {"/v1/documents", HTTP_DELETE, EP_DELETE, COP_DELETE},
  {"/v1/stats", HTTP_GET, EP_STATS, COP_STATS},
  {"/healthz", HTTP_GET, EP_HEALTHZ, -1},
  {"/metrics", HTTP_GET, EP_METRICS, -1},
};
#define N_ROUTES ((int)(sizeof routes / sizeof routes[0]))

static const char *reason_phrase(int s)
{
  switch (s) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 409: return "Conflict";
  case 411: return "Length Required";
  case 413: return "Payload Too Large";
  case 414: return "URI Too Long";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Status";
  }
}

static void check_done(struct http_server *h);
static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void conn_close(struct http_conn *c);
static void conn_linger(struct http_conn *c);
static void on_idle(uv_timer_t *t);
static void conn_feed(struct http_conn *c, const char *data, size_t len);

/* ---- requests ---------------------------------------------------------------- */

static struct http_req *req_new(struct http_conn *c)
{
  struct http_req *r = jp_calloc(1, sizeof *r);
  if (!r) return NULL;
  r->srv = c->srv;
  r->conn = c;
  r->route = -1;
  r->ep = EP_OTHER;
  r->start_ns = jp_now_ns();
  jp_arena_init(&r->arena, 0, HTTP_ARENA_LIMIT);
  jp_buf_init(&r->out, HTTP_MAX_RESPONSE);
  c->srv->n_reqs++;
  return r;
}

static void req_free(struct http_req *r)
{
  struct http_server *h = r->srv;
  jp_arena_fini(&r->arena);
  jp_buf_fini(&r->out);
  jp_free(r->body);
  jp_free(r);
  h->n_reqs--;
  check_done(h);
}

/* An error answer rendered on the spot (small). */
static void req_error(struct http_req *r, int status, const char *code, const char *msg)
{
  jp_buf_reset(&r->out);
  r->status = status;
  if (jp_buf_puts(&r->out, "{\"error\":") < 0 || jp_buf_json_str(&r->out, msg, strlen(msg)) < 0 ||
      jp_buf_printf(&r->out, ",\"code\":\"%s\",\"status\":%d}", code, status) < 0) {
    jp_buf_reset(&r->out);
    r->status = 500;
  }
  r->ready = 1;
}

static void on_written(uv_write_t *w, int status)
{
  struct http_req *r = w->data;
  struct http_conn *c = r->conn;
  int keep = r->keep_alive;
  req_free(r);
  if (!c) return;
  c->writing = 0;
  c->busy = 0;
  c->req = NULL;
  if (status < 0 || c->closing) {
    conn_close(c);
    return;
  }
  if (!keep || c->srv->stopping) {
    conn_linger(c);
    return;
  }
  uv_timer_start(&c->timer, on_idle, HTTP_IDLE_MS, 0);
  /* Serve what arrived meanwhile, then read again. */
  char *p = c->pending;
  size_t n = c->pending_len;
  c->pending = NULL;
  c->pending_len = 0;
  http_parser_pause(&c->parser, 0);
  if (p) {
    conn_feed(c, p, n);
    jp_free(p);
  }
  if (!c->busy && !c->closing) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void req_write(struct http_req *r)
{
  struct http_conn *c = r->conn;
  struct http_server *h = r->srv;
  char code[8];
  double secs = (double)(jp_now_ns() - r->start_ns) / 1e9;
  snprintf(code, sizeof code, "%d", r->status);
  metrics_request(h->co->met, r->ep, TR_HTTP, code, secs);
  JP_LOG_DEBUG("http %s %s %d %.2f ms in=%zu out=%zu", http_method_str((enum http_method)r->method),
               r->path, r->status, secs * 1e3, r->body_len, r->out.len);
  if (!c || c->closing) {
    req_free(r);
    if (c) {
      c->busy = 0;
      c->req = NULL;
      conn_close(c);
    }
    return;
  }
  int keep = r->keep_alive && !h->stopping && !c->eof;
  r->keep_alive = keep;
  int hn = snprintf(r->head, sizeof r->head,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s"
                    "Connection: %s\r\n\r\n",
                    r->status, reason_phrase(r->status),
                    r->ep == EP_METRICS && r->status == 200 ? "text/plain; version=0.0.4"
                                                            : "application/json",
                    r->out.len, r->allow[0] ? "Allow: " : "", r->allow,
                    r->allow[0] ? "\r\n" : "", keep ? "keep-alive" : "close");
  r->bufs[0] = uv_buf_init(r->head, (unsigned)hn);
  r->bufs[1] = uv_buf_init(r->out.data ? r->out.data : "", (unsigned)r->out.len);
  r->wr.data = r;
  c->writing = 1;
  if (uv_write(&r->wr, (uv_stream_t *)&c->tcp, r->bufs, 2, on_written) < 0) {
    c->writing = 0;
    c->busy = 0;
    c->req = NULL;
    req_free(r);
    conn_close(c);
  }
}

/* Render on the threadpool (the answer can be megabytes). */
static void render_work(uv_work_t *w)
{
  struct http_req *r = w->data;
  if (r->ready) return;
  int rc = api_render(&r->op, r->single, &r->out);
  if (rc < 0) {
    char m[300];
    snprintf(m, sizeof m, "cannot render the answer: %s", jp_errmsg(rc));
    req_error(r, rc == JP_ETOOBIG ? 413 : 500, rc == JP_ETOOBIG ? "RESOURCE_EXHAUSTED" : "INTERNAL",
              rc == JP_ETOOBIG ? "the answer is too large for JSON; ask for fewer texts or hits"
                               : m);
    return;
  }
  r->status = r->op.rc < 0 ? api_http_status(r->op.rc) : 200;
  r->ready = 1;
}

static void render_after(uv_work_t *w, int status)
{
  (void)status;
  req_write(w->data);
}

static void req_render(struct http_req *r)
{
  r->work.data = r;
  if (uv_queue_work(&r->srv->loop, &r->work, render_work, render_after) < 0) {
    render_work(&r->work);
    req_write(r);
  }
}

/* The operation is over (any thread). */
static void http_done(struct cop *op)
{
  struct http_req *r = op->ud;
  struct http_server *h = r->srv;
  pthread_mutex_lock(&h->mu);
  r->next = NULL;
  if (h->done_tail) h->done_tail->next = r;
  else h->done_head = r;
  h->done_tail = r;
  /* Sent under the lock: the loop frees r (and may then close the async
   * handle) only after taking the lock, hence after this send. */
  uv_async_send(&h->wake);
  pthread_mutex_unlock(&h->mu);
}

/* Parse the body and start the operation (threadpool). */
static void start_work(uv_work_t *w)
{
  struct http_req *r = w->data;
  struct coord *co = r->srv->co;
  const struct route *rt = &routes[r->route];
  int rc = 0;
  jp_err_clear();
  if (rt->ep == EP_HEALTHZ) {
    rc = api_render_healthz(co, &r->out);
    r->status = rc < 0 ? 500 : rc ? 200 : 503;
    r->ready = 1;
    return;
  }
  if (rt->ep == EP_METRICS) {
    rc = metrics_render(co, &r->out);
    r->status = rc < 0 ? 500 : 200;
    r->ready = 1;
    return;
  }
  struct cop *op = &r->op;
  memset(op, 0, sizeof *op);
  op->kind = (enum cop_kind)rt->kind;
  op->co = co;
  op->arena = &r->arena;
  op->done = http_done;
  op->ud = r;
  switch (op->kind) {
  case COP_SEARCH: {
    Japlaid__V1__SearchRequest *q = NULL;
    rc = api_parse_search(r->body, r->body_len, &r->arena, &q, &r->single);
    op->req = q ? &q->base : NULL;
    if (q) op->timeout_ms = q->timeout_ms;
    break;
  }
  case COP_RERANK: {
    Japlaid__V1__RerankRequest *q = NULL;
    rc = api_parse_rerank(r->body, r->body_len, &r->arena, &q);
    op->req = q ? &q->base : NULL;
    break;
  }
  case COP_ENCODE: {
    Japlaid__V1__EncodeRequest *q = NULL;
    rc = api_parse_encode(r->body, r->body_len, &r->arena, &q);
    op->req = q ? &q->base : NULL;
    break;
  }
  case COP_UPSERT: {
    Japlaid__V1__UpsertRequest *q = NULL;
    rc = api_parse_upsert(r->body, r->body_len, &r->arena, &q);
    op->req = q ? &q->base : NULL;
    break;
  }
  case COP_DELETE: {
    Japlaid__V1__DeleteRequest *q = NULL;
    rc = api_parse_delete(r->body, r->body_len, &r->arena, &q);
    op->req = q ? &q->base : NULL;
    break;
  }
  case COP_STATS: {
    static Japlaid__V1__StatsRequest sr = JAPLAID__V1__STATS_REQUEST__INIT;
    op->req = &sr.base;
    break;
  }
  default: rc = jp_err(JP_EINTERNAL, "route without an operation"); break;
  }
  /* The body is parsed; the request holds its own copies now. */
  jp_free(r->body);
  r->body = NULL;
  if (rc < 0) {
    grpc_status_code st = rpc_status_from_err(rc);
    req_error(r, api_http_status(rc), rpc_status_name(st), jp_errmsg(rc));
    return;
  }
  cop_start(op);          /* http_done follows, from whichever thread */
}

static void start_after(uv_work_t *w, int status)
{
  struct http_req *r = w->data;
  (void)status;
  r->parsed = 1;
  if (r->ready) req_write(r);
  else if (r->completed) req_render(r);
}

static void on_wake(uv_async_t *a);

/* A whole request has arrived (inside http_parser_execute). */
static void dispatch(struct http_conn *c)
{
  struct http_server *h = c->srv;
  struct http_req *r = req_new(c);
  if (!r) {
    conn_close(c);
    return;
  }
  r->method = c->parser.method;
  r->keep_alive = http_should_keep_alive(&c->parser);
  size_t pl = strcspn(c->url, "?#");
  snprintf(r->path, sizeof r->path, "%.*s", (int)(pl < sizeof r->path ? pl : sizeof r->path - 1),
           c->url);
  r->body = c->body.data;
  r->body_len = c->body.len;
  c->body.data = NULL;
  c->body.len = c->body.cap = 0;
  c->busy = 1;
  c->req = r;
  uv_timer_stop(&c->timer);
  /* Stop here: pipelined bytes after this message wait until the answer
   * is written. */
  http_parser_pause(&c->parser, 1);

  int path_known = 0;
  char allow[64] = "";
  for (int i = 0; i < N_ROUTES; i++) {
    if (strcmp(routes[i].path, r->path)) continue;
    path_known = 1;
    snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s", allow[0] ? ", " : "",
             http_method_str((enum http_method)routes[i].method));
    if (routes[i].method == r->method) r->route = i;
  }
  if (r->route < 0) {
    char m[400];
    if (path_known) {
      snprintf(r->allow, sizeof r->allow, "%s", allow);
      snprintf(m, sizeof m, "method %s is not allowed on %.200s (allowed: %s)",
               http_method_str((enum http_method)r->method), r->path, allow);
      req_error(r, 405, "UNIMPLEMENTED", m);
    } else {
      snprintf(m, sizeof m, "no endpoint %.200s (endpoints: POST /v1/search, POST /v1/rerank, "
               "POST /v1/encode, POST|DELETE /v1/documents, GET /v1/stats, GET /healthz, "
               "GET /metrics)", r->path);
      req_error(r, 404, "NOT_FOUND", m);
    }
    r->parsed = 1;
    req_write(r);
    return;
  }
  r->ep = routes[r->route].ep;
  uv_read_stop((uv_stream_t *)&c->tcp);
  r->work.data = r;
  if (uv_queue_work(&h->loop, &r->work, start_work, start_after) < 0) {
    req_error(r, 503, "UNAVAILABLE", "cannot queue the request");
    r->parsed = 1;
    req_write(r);
  }
}

/* ---- http-parser callbacks ------------------------------------------------------- */

static int on_message_begin(http_parser *p)
{
  struct http_conn *c = p->data;
  c->url_len = 0;
  c->url[0] = '\0';
  jp_buf_reset(&c->body);
  c->hname_len = 0;
  c->hvalue_expect = 0;
  c->hval_len = 0;
  c->expect_continue = 0;
  return 0;
}

/* The header being read is complete. */
static void header_end(struct http_conn *c)
{
  if (c->hvalue_expect && !strcmp(c->hval, "100-continue")) c->expect_continue = 1;
  c->hname_len = 0;
  c->hname[0] = '\0';
  c->hvalue_expect = 0;
  c->hval_len = 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
  struct http_conn *c = p->data;
  if (c->url_len + n > HTTP_MAX_URL) {
    c->early = 414;
    snprintf(c->early_msg, sizeof c->early_msg, "request line longer than %d bytes", HTTP_MAX_URL);
    http_parser_pause(p, 1);
    return 0;
  }
  memcpy(c->url + c->url_len, at, n);
  c->url_len += n;
  c->url[c->url_len] = '\0';
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
  struct http_conn *c = p->data;
  if (c->hvalue_expect || c->hval_len) header_end(c);   /* a new header starts */
  for (size_t i = 0; i < n && c->hname_len < sizeof c->hname - 1; i++) {
    char ch = at[i];
    c->hname[c->hname_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  c->hname[c->hname_len] = '\0';
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
  struct http_conn *c = p->data;
  if (!strcmp(c->hname, "expect")) {
    c->hvalue_expect = 1;
    for (size_t i = 0; i < n && c->hval_len < sizeof c->hval - 1; i++) {
      char ch = at[i];
      c->hval[c->hval_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    c->hval[c->hval_len] = '\0';
  } else {
    c->hval_len = 1;                         /* marks "in a value" for on_header_field */
    c->hval[0] = '\0';
  }
  return 0;
}

static void on_continue_written(uv_write_t *w, int status)
{
  (void)status;
  jp_free(w);
}

static int on_headers_complete(http_parser *p)
{
  struct http_conn *c = p->data;
  size_t max = c->srv->o.max_body_bytes;
  header_end(c);
  if (p->flags & F_CHUNKED) {
    c->early = 411;
    snprintf(c->early_msg, sizeof c->early_msg,
             "chunked request bodies are not supported: send the body with Content-Length");
    http_parser_pause(p, 1);
    return 0;
  }
  if (p->content_length != ULLONG_MAX && p->content_length > max) {
    c->early = 413;
    snprintf(c->early_msg, sizeof c->early_msg,
             "request body of %llu bytes exceeds the limit of %zu bytes (--max-body-bytes)",
             (unsigned long long)p->content_length, max);
    http_parser_pause(p, 1);
    return 0;
  }
  if (c->expect_continue) {
    static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_write_t *w = jp_malloc(sizeof *w);
    uv_buf_t b = uv_buf_init(cont, sizeof cont - 1);
    if (w && uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) < 0) jp_free(w);
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
  struct http_conn *c = p->data;
  if (jp_buf_append(&c->body, at, n) < 0) {
    c->early = 413;
    snprintf(c->early_msg, sizeof c->early_msg,
             "request body exceeds the limit of %zu bytes (--max-body-bytes)",
             c->srv->o.max_body_bytes);
    http_parser_pause(p, 1);
  }
  return 0;
}

static int on_message_complete(http_parser *p)
{
  struct http_conn *c = p->data;
  dispatch(c);
  return 0;
}

/* ---- connections ------------------------------------------------------------------- */

/* Answer with c->early and close. */
static void refuse(struct http_conn *c, int status, const char *msg)
{
  struct http_req *r = req_new(c);
  if (!r) {
    conn_close(c);
    return;
  }
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->busy = 1;
  c->req = r;
  r->keep_alive = 0;                  /* on_written closes the connection */
  r->parsed = 1;
  const char *code = status == 413 ? "RESOURCE_EXHAUSTED" : "INVALID_ARGUMENT";
  req_error(r, status, code, msg);
  req_write(r);
}

static void conn_feed(struct http_conn *c, const char *data, size_t len)
{
  size_t done = http_parser_execute(&c->parser, &c->srv->ps, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (c->early) {
    int st = c->early;
    c->early = 0;
    if (c->busy) return;              /* cannot happen: early stops before dispatch */
    refuse(c, st, c->early_msg);
    return;
  }
  if (e == HPE_PAUSED) {
    /* A request was dispatched; keep the rest for later. */
    if (done < len) {
      c->pending = jp_malloc(len - done);
      if (!c->pending) {
        conn_close(c);
        return;
      }
      memcpy(c->pending, data + done, len - done);
      c->pending_len = len - done;
    }
    return;
  }
  if (e != HPE_OK) {
    char m[200];
    snprintf(m, sizeof m, "malformed HTTP request: %s", http_errno_description(e));
    if (c->busy) {
      c->closing = 1;
      return;
    }
    refuse(c, 400, m);
    return;
  }
  if (c->parser.upgrade) {
    if (!c->busy) refuse(c, 400, "protocol upgrades are not supported");
  }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
  (void)hd;
  /* 64 KiB reads: a large body arrives in few callbacks. */
  size_t n = suggested > 65536 ? suggested : 65536;
  buf->base = jp_malloc(n);
  buf->len = buf->base ? n : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct http_conn *c = s->data;
  if (c->draining) {                     /* lingering close: drop, close at EOF */
    jp_free(buf->base);
    if (n < 0) conn_close(c);
    return;
  }
  if (n < 0) {
    jp_free(buf->base);
    uv_read_stop(s);
    if (!c->busy) conn_close(c);
    else if (n == UV_EOF) c->eof = 1;    /* answer, then close */
    else c->closing = 1;                 /* reset: the answer has nowhere to go */
    return;
  }
  if (n > 0 && !c->closing) {
    if (c->busy) {
      /* Data that raced the read stop: keep it. */
      char *p = jp_realloc(c->pending, c->pending_len + (size_t)n);
      if (p) {
        memcpy(p + c->pending_len, buf->base, (size_t)n);
        c->pending = p;
        c->pending_len += (size_t)n;
      }
    } else {
      uv_timer_start(&c->timer, on_idle, HTTP_IDLE_MS, 0);
      conn_feed(c, buf->base, (size_t)n);
    }
  }
  jp_free(buf->base);
}

static void on_conn_closed(uv_handle_t *hd)
{
  struct http_conn *c = hd->data;
  struct http_server *h = c->srv;
  if (--c->open_handles > 0) return;
  if (c->prev) c->prev->next = c->next;
  else h->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  h->n_conns--;
  jp_buf_fini(&c->body);
  jp_free(c->pending);
  jp_free(c);
  check_done(h);
}

static void conn_close(struct http_conn *c)
{
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  c->closing = 1;
  /* A request still being served loses its connection; a write in flight
   * keeps it until its callback (which libuv runs before the close one). */
  if (c->req && !c->writing) {
    c->req->conn = NULL;
    c->req = NULL;
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_idle(uv_timer_t *t)
{
  struct http_conn *c = t->data;
  if (!c->busy) conn_close(c);
}

static void on_shut(uv_shutdown_t *r, int status)
{
  (void)r;
  (void)status;
}

/* Stop sending, drop what still arrives, close at EOF or after
 * HTTP_LINGER_MS. */
static void conn_linger(struct http_conn *c)
{
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  c->draining = 1;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shut) < 0) {
    conn_close(c);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  uv_timer_start(&c->timer, on_idle, HTTP_LINGER_MS, 0);
}

static void on_connection(uv_stream_t *ls, int status)
{
  struct http_server *h = ls->data;
  if (status < 0) return;
  struct http_conn *c = jp_calloc(1, sizeof *c);
  if (!c) return;
  c->srv = h;
  jp_buf_init(&c->body, h->o.max_body_bytes);
  uv_tcp_init(&h->loop, &c->tcp);
  c->tcp.data = c;
  uv_timer_init(&h->loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 2;
  c->next = h->conns;
  if (h->conns) h->conns->prev = c;
  h->conns = c;
  h->n_conns++;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0 || h->stopping ||
      h->n_conns > h->o.max_connections) {
    if (h->n_conns > h->o.max_connections)
      JP_LOG_WARN("http: connection refused: %d connections open (limit %d)", h->n_conns - 1,
                  h->o.max_connections);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_timer_start(&c->timer, on_idle, HTTP_IDLE_MS, 0);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- the loop, wake-ups and shutdown --------------------------------------------------- */

static void on_handle_closed(uv_handle_t *hd) { (void)hd; }

static void check_done(struct http_server *h)
{
  if (!h->stopping || h->closed || h->n_conns > 0 || h->n_reqs > 0) return;
  h->closed = 1;
  uv_close((uv_handle_t *)&h->wake, on_handle_closed);
  uv_close((uv_handle_t *)&h->grace, on_handle_closed);
}

static void on_grace(uv_timer_t *t)
{
  struct http_server *h = t->data;
  if (h->n_conns > 0)
    JP_LOG_WARN("http: grace period over, closing %d connection(s)", h->n_conns);
  for (struct http_conn *c = h->conns; c; c = c->next) conn_close(c);
}

static void begin_stop(struct http_server *h, int grace_ms)
{
  if (h->stopping) return;
  h->stopping = 1;
  uv_close((uv_handle_t *)&h->listener, on_handle_closed);
  for (struct http_conn *c = h->conns; c; c = c->next)
    if (!c->busy) conn_close(c);
  uv_timer_start(&h->grace, on_grace, (uint64_t)(grace_ms > 0 ? grace_ms : 0), 0);
  check_done(h);
}

static void on_wake(uv_async_t *a)
{
  struct http_server *h = a->data;
  pthread_mutex_lock(&h->mu);
  struct http_req *list = h->done_head;
  h->done_head = h->done_tail = NULL;
  int stop = h->stop_requested, grace = h->grace_ms;
  pthread_mutex_unlock(&h->mu);
  while (list) {
    struct http_req *r = list;
    list = r->next;
    r->completed = 1;
    if (r->parsed) req_render(r);
  }
  if (stop) begin_stop(h, grace);
}

static void *loop_main(void *arg)
{
  struct http_server *h = arg;
  uv_run(&h->loop, UV_RUN_DEFAULT);
  return NULL;
}

static int parse_listen(const char *s, struct sockaddr_storage *ss)
{
  char host[256];
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || (size_t)(colon - s) >= sizeof host)
    return jp_err(JP_EINVAL, "--http-listen: expected HOST:PORT, not '%s'", s);
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || port < 0 || port > 65535)
    return jp_err(JP_EINVAL, "--http-listen: bad port in '%s'", s);
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  if (host[0] == '[') {
    size_t n = strlen(host);
    if (n < 2 || host[n - 1] != ']') return jp_err(JP_EINVAL, "--http-listen: bad IPv6 '%s'", s);
    host[n - 1] = '\0';
    if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss) != 0)
      return jp_err(JP_EINVAL, "--http-listen: bad IPv6 address '%s'", host + 1);
    return 0;
  }
  if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0)
    return jp_err(JP_EINVAL, "--http-listen: '%s' is not an IPv4 address (names are not "
                  "resolved)", host);
  return 0;
}

int http_start(struct coord *co, const struct http_opts *o, struct http_server **out)
{
  *out = NULL;
  if (!o->allow_remote && !rpc_addr_is_loopback(o->listen))
    return jp_err(JP_EINVAL, "--http-listen %s is not a loopback address; the API has no "
                  "authentication, so pass --allow-remote only on a trusted network", o->listen);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  int rc = parse_listen(o->listen, &ss);
  if (rc < 0) return rc;
  struct http_server *h = jp_calloc(1, sizeof *h);
  if (!h) return jp_err(JP_ENOMEM, "http server");
  h->co = co;
  h->o = *o;
  pthread_mutex_init(&h->mu, NULL);
  http_parser_settings_init(&h->ps);
  h->ps.on_message_begin = on_message_begin;
  h->ps.on_url = on_url;
  h->ps.on_header_field = on_header_field;
  h->ps.on_header_value = on_header_value;
  h->ps.on_headers_complete = on_headers_complete;
  h->ps.on_body = on_body;
  h->ps.on_message_complete = on_message_complete;
  if ((rc = uv_loop_init(&h->loop)) < 0) {
    pthread_mutex_destroy(&h->mu);
    jp_free(h);
    return jp_err(JP_EINTERNAL, "uv_loop_init: %s", uv_strerror(rc));
  }
  uv_tcp_init(&h->loop, &h->listener);
  h->listener.data = h;
  uv_async_init(&h->loop, &h->wake, on_wake);
  h->wake.data = h;
  uv_timer_init(&h->loop, &h->grace);
  h->grace.data = h;
  if ((rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&ss, 0)) < 0 ||
      (rc = uv_listen((uv_stream_t *)&h->listener, HTTP_BACKLOG, on_connection)) < 0) {
    int e = rc;
    uv_close((uv_handle_t *)&h->listener, NULL);
    uv_close((uv_handle_t *)&h->wake, NULL);
    uv_close((uv_handle_t *)&h->grace, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    uv_loop_close(&h->loop);
    pthread_mutex_destroy(&h->mu);
    jp_free(h);
    return jp_err(JP_EUNAVAIL, "--http-listen %s: %s", o->listen, uv_strerror(e));
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen);
  if (bound.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    snprintf(h->address, sizeof h->address, "[%s]:%d", ip, port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    snprintf(h->address, sizeof h->address, "%s:%d", ip, port);
  }
  if (pthread_create(&h->th, NULL, loop_main, h) != 0) {
    http_stop(h, 0);
    return jp_err(JP_EINTERNAL, "cannot start the HTTP thread");
  }
  h->th_started = 1;
  *out = h;
  return 0;
}

const char *http_address(const struct http_server *h) { return h->address; }

void http_stop_begin(struct http_server *h, int grace_ms)
{
  if (!h || !h->th_started) return;
  pthread_mutex_lock(&h->mu);
  if (!h->stop_requested) {
    h->stop_requested = 1;
    h->grace_ms = grace_ms;
    uv_async_send(&h->wake);
  }
  pthread_mutex_unlock(&h->mu);
}

void http_stop(struct http_server *h, int grace_ms)
{
  if (!h) return;
  if (h->th_started) {
    http_stop_begin(h, grace_ms);
    pthread_join(h->th, NULL);
  } else {
    begin_stop(h, 0);
    uv_run(&h->loop, UV_RUN_DEFAULT);
  }
  int rc = uv_loop_close(&h->loop);
  if (rc < 0) JP_LOG_WARN("http: uv_loop_close: %s", uv_strerror(rc));
  pthread_mutex_destroy(&h->mu);
  jp_free(h);
}
