/* batcher.c: the query-encoder batcher.
 *
 * Searches arriving at the same time each need their queries encoded; one
 * jp_encode_queries call over all of them costs about as much as one call
 * for the longest (the encoder batches sequences into one forward pass per
 * length group), so concurrent requests are collected and encoded together.
 * The first request waits at most window_us for company, or less once
 * max_queries queries are queued; a lone request thus pays at most the
 * window. A request is never split across batches (a batch can exceed
 * max_queries by one request's queries).
 *
 * If a batch fails (one text the tokenizer rejects), each request of it is
 * encoded alone, so one bad request cannot fail its neighbours.
 *
 * Admission: past the encoder's capacity a FIFO queue grows until every
 * request in it waits out its deadline, and then nothing useful is served
 * (measured: bert-base at 16 qps on 2 cores answered none). So the batcher
 * keeps a moving average of the encoder's cost per query and refuses a
 * request at once (JP_EUNAVAIL, "overloaded") when the queries ahead of it
 * plus its own cannot be encoded before its deadline; a request that can
 * no longer make its deadline when its batch starts is answered then and
 * not encoded, and a batch takes only as many requests as it can encode
 * before the earliest of their deadlines. The sustainable rate is served;
 * the rest fail fast, which a client can retry elsewhere.
 *
 * Thread-safety: batcher_submit from any thread; one batcher thread owns
 * the encoder and the batch buffers. The done callbacks run on the batcher
 * thread and must not block (they start fan-outs). Allocation: the batch
 * buffers grow to the largest batch and are kept. */
#include "coord.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

struct batcher {
  struct coord *co;
  pthread_mutex_t mu;
  pthread_cond_t cv;                  /* CLOCK_MONOTONIC, like jp_now_ns */
  struct qenc *head, *tail;
  int queued_queries, queued;
  uint64_t first_ns;                  /* arrival of the oldest queued request */
  int max_queries, window_us, max_pending;
  int stopping;
  pthread_t th;
  int started;
  jp_encoder *enc;
  float *out;
  size_t out_cap;                     /* floats */
  const char **texts;
  size_t *lens;
  int cap;                            /* texts/lens entries */
  atomic_ullong n_batches, n_queries;
  uint64_t ns_per_query;              /* moving average of encode cost; 0 = none yet (mu) */
};

/* Weight of the newest batch in the moving average of the cost per query:
 * about the last 8 batches count, so the estimate follows load changes
 * within a second or two. */
#define COST_EWMA_NEW 0.125

static int grow(struct batcher *b, int n)
{
  size_t per = (size_t)b->co->qlen * (size_t)b->co->dim;
  if (n > b->cap) {
    const char **t = jp_realloc(b->texts, (size_t)n * sizeof *t);
    if (!t) return JP_ENOMEM;
    b->texts = t;
    size_t *l = jp_realloc(b->lens, (size_t)n * sizeof *l);
    if (!l) return JP_ENOMEM;
    b->lens = l;
    b->cap = n;
  }
  if ((size_t)n * per > b->out_cap) {
    float *o = jp_realloc(b->out, (size_t)n * per * sizeof *o);
    if (!o) return JP_ENOMEM;
    b->out = o;
    b->out_cap = (size_t)n * per;
  }
  return 0;
}

/* Encode requests [list] (n_queries in all) and call their done. */
static void run_batch(struct batcher *b, struct qenc *list)
{
  size_t per = (size_t)b->co->qlen * (size_t)b->co->dim;
  uint64_t now = jp_now_ns();
  struct qenc *live = NULL, **tailp = &live;
  int n = 0, rc;

  /* A request whose deadline passed while queued, or that cannot make it
   * even if encoded first, is answered now. */
  pthread_mutex_lock(&b->mu);
  uint64_t cost = b->ns_per_query;
  pthread_mutex_unlock(&b->mu);
  while (list) {
    struct qenc *q = list;
    list = q->next;
    q->next = NULL;
    if (now + cost * (uint64_t)q->n >= q->deadline_ns) {
      q->done(q, JP_ETIMEOUT, "deadline exceeded while waiting for the query encoder");
      continue;
    }
    *tailp = q;
    tailp = &q->next;
    n += q->n;
  }
  if (!live) return;
  if ((rc = grow(b, n)) < 0) {
    for (struct qenc *q = live, *nx; q; q = nx) {
      nx = q->next;
      q->done(q, JP_ENOMEM, "out of memory for the encoder batch");
    }
    return;
  }
  int i = 0;
  for (struct qenc *q = live; q; q = q->next)
    for (int j = 0; j < q->n; j++, i++) {
      b->texts[i] = q->texts[j];
      b->lens[i] = q->lens[j];
    }
  rc = jp_encode_queries(b->enc, b->texts, b->lens, n, b->out);
  if (rc == 0) {
    uint64_t per_q = (jp_now_ns() - now) / (uint64_t)n;
    pthread_mutex_lock(&b->mu);
    b->ns_per_query = b->ns_per_query
                          ? (uint64_t)((1.0 - COST_EWMA_NEW) * (double)b->ns_per_query +
                                       COST_EWMA_NEW * (double)per_q)
                          : per_q;
    pthread_mutex_unlock(&b->mu);
  }
  atomic_fetch_add(&b->n_batches, 1);
  atomic_fetch_add(&b->n_queries, (unsigned long long)n);
  JP_LOG_TRACE("encoder batch: %d queries, rc %d", n, rc);
  size_t off = 0;
  for (struct qenc *q = live, *nx; q; q = nx) {
    nx = q->next;
    int qrc = rc;
    if (qrc == 0) {
      memcpy(q->out, b->out + off * per, (size_t)q->n * per * sizeof(float));
    } else if (live->next) {
      /* Alone, so the failure is this request's own (or nobody's). */
      qrc = jp_encode_queries(b->enc, q->texts, q->lens, q->n, q->out);
    }
    off += (size_t)q->n;
    q->done(q, qrc, qrc ? jp_errmsg(qrc) : NULL);
  }
}

static void *batcher_main(void *arg)
{
  struct batcher *b = arg;
  pthread_mutex_lock(&b->mu);
  for (;;) {
    while (!b->head && !b->stopping) pthread_cond_wait(&b->cv, &b->mu);
    if (!b->head) break;                       /* stopping and drained */
    uint64_t until = b->first_ns + (uint64_t)b->window_us * 1000u;
    while (!b->stopping && b->queued_queries < b->max_queries && jp_now_ns() < until) {
      struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
      pthread_cond_timedwait(&b->cv, &b->mu, &ts);
    }
    /* Take whole requests up to max_queries (at least one), and only as
     * many as can be encoded before the earliest deadline among them: one
     * batch too big for its deadlines (32 BERT queries take longer than
     * the default 1 s) would fail every request in it. */
    struct qenc *list = b->head, *last = b->head;
    int n = last->n;
    uint64_t now = jp_now_ns(), cost = b->ns_per_query, first_dl = last->deadline_ns;
    while (last->next && n + last->next->n <= b->max_queries) {
      uint64_t dl = last->next->deadline_ns < first_dl ? last->next->deadline_ns : first_dl;
      if (cost && now + cost * (uint64_t)(n + last->next->n) > dl) break;
      first_dl = dl;
      last = last->next;
      n += last->n;
    }
    b->head = last->next;
    if (!b->head) b->tail = NULL;
    last->next = NULL;
    for (struct qenc *q = list; q; q = q->next) b->queued--;
    b->queued_queries -= n;
    /* first_ns stays: whatever is left has waited its window already. */
    pthread_mutex_unlock(&b->mu);
    run_batch(b, list);
    pthread_mutex_lock(&b->mu);
  }
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

int batcher_create(struct coord *co, int max_queries, int window_us, int max_pending,
                   struct batcher **out)
{
  *out = NULL;
  struct batcher *b = jp_calloc(1, sizeof *b);
  if (!b) return jp_err(JP_ENOMEM, "batcher");
  b->co = co;
  b->max_queries = max_queries > 0 ? max_queries : 1;
  b->window_us = window_us >= 0 ? window_us : 0;
  b->max_pending = max_pending > 0 ? max_pending : 1;
  atomic_init(&b->n_batches, 0);
  atomic_init(&b->n_queries, 0);
  int rc = jp_encoder_create(co->model, &b->enc);
  if (rc < 0) {
    jp_free(b);
    return rc;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&b->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&b->mu, NULL);
  if (pthread_create(&b->th, NULL, batcher_main, b) != 0) {
    batcher_destroy(b);
    return jp_err(JP_EINTERNAL, "cannot start the encoder batcher thread");
  }
  b->started = 1;
  *out = b;
  return 0;
}

int batcher_submit(struct batcher *b, struct qenc *q)
{
  q->next = NULL;
  pthread_mutex_lock(&b->mu);
  if (b->stopping || b->queued_queries + q->n > b->max_pending) {
    int busy = b->queued_queries;
    int stopping = b->stopping;
    pthread_mutex_unlock(&b->mu);
    if (stopping) return jp_err(JP_EUNAVAIL, "the coordinator is shutting down");
    return jp_err(JP_EUNAVAIL, "overloaded: %d queries are waiting for the encoder "
                  "(--max-pending %d)", busy, b->max_pending);
  }
  uint64_t now = jp_now_ns();
  uint64_t wait = b->ns_per_query * (uint64_t)(b->queued_queries + q->n);
  if (b->ns_per_query && q->deadline_ns && now + wait > q->deadline_ns) {
    int busy = b->queued_queries;
    double left_ms = q->deadline_ns > now ? (double)(q->deadline_ns - now) / 1e6 : 0.0;
    pthread_mutex_unlock(&b->mu);
    return jp_err(JP_EUNAVAIL, "overloaded: %d queries are waiting for the encoder, about "
                  "%.0f ms of work, and the request has %.0f ms left", busy, (double)wait / 1e6,
                  left_ms);
  }
  if (!b->head) {
    b->head = q;
    b->first_ns = now;
  } else {
    b->tail->next = q;
  }
  b->tail = q;
  b->queued++;
  b->queued_queries += q->n;
  pthread_cond_signal(&b->cv);
  pthread_mutex_unlock(&b->mu);
  return 0;
}

void batcher_counts(struct batcher *b, uint64_t *batches, uint64_t *queries)
{
  *batches = atomic_load(&b->n_batches);
  *queries = atomic_load(&b->n_queries);
}

void batcher_destroy(struct batcher *b)
{
  if (!b) return;
  pthread_mutex_lock(&b->mu);
  b->stopping = 1;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
  if (b->started) pthread_join(b->th, NULL);   /* drains the queue first */
  pthread_cond_destroy(&b->cv);
  pthread_mutex_destroy(&b->mu);
  jp_encoder_destroy(b->enc);
  jp_free(b->out);
  jp_free(b->texts);
  jp_free(b->lens);
  jp_free(b);
}
