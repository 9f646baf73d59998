/* jobs.c: encoding workers for the long operations (Rerank, Encode,
 * Upsert), which encode documents: up to 1000 texts of up to doc_maxlen
 * tokens each. They run here rather than on the query batcher so a large
 * upsert never delays searches' query encoding, and rather than on gRPC or
 * libuv threads, which must stay free for I/O.
 *
 * Each worker owns one jp_encoder (encoders are per thread, model.h).
 * Thread-safety: jobs_submit from any thread. Allocation: the encoders, at
 * creation; jobs are the caller's. */
#include "coord.h"

#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

struct jobs {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct job *head, *tail;
  int queued, max_pending, stopping;
  int n;
  pthread_t *th;
  jp_encoder **enc;
  int n_started;
};

struct worker_arg {
  struct jobs *js;
  int i;
};

static void *worker_main(void *arg)
{
  struct jobs *js = ((struct worker_arg *)arg)->js;
  int i = ((struct worker_arg *)arg)->i;
  jp_free(arg);
  pthread_mutex_lock(&js->mu);
  for (;;) {
    while (!js->head && !js->stopping) pthread_cond_wait(&js->cv, &js->mu);
    if (!js->head) break;
    struct job *j = js->head;
    js->head = j->next;
    if (!js->head) js->tail = NULL;
    js->queued--;
    pthread_mutex_unlock(&js->mu);
    j->fn(j, js->enc[i]);
    pthread_mutex_lock(&js->mu);
  }
  pthread_mutex_unlock(&js->mu);
  return NULL;
}

int jobs_create(jp_model *m, int n_workers, int max_pending, struct jobs **out)
{
  *out = NULL;
  struct jobs *js = jp_calloc(1, sizeof *js);
  if (!js) return jp_err(JP_ENOMEM, "jobs");
  js->n = n_workers > 0 ? n_workers : 1;
  js->max_pending = max_pending > 0 ? max_pending : 1;
  pthread_mutex_init(&js->mu, NULL);
  pthread_cond_init(&js->cv, NULL);
  js->th = jp_calloc((size_t)js->n, sizeof *js->th);
  js->enc = jp_calloc((size_t)js->n, sizeof *js->enc);
  int rc = 0;
  if (!js->th || !js->enc) rc = jp_err(JP_ENOMEM, "jobs");
  for (int i = 0; rc == 0 && i < js->n; i++) rc = jp_encoder_create(m, &js->enc[i]);
  for (int i = 0; rc == 0 && i < js->n; i++) {
    struct worker_arg *a = jp_malloc(sizeof *a);
    if (!a) {
      rc = jp_err(JP_ENOMEM, "jobs");
      break;
    }
    a->js = js;
    a->i = i;
    if (pthread_create(&js->th[i], NULL, worker_main, a) != 0) {
      jp_free(a);
      rc = jp_err(JP_EINTERNAL, "cannot start an encoding worker");
      break;
    }
    js->n_started++;
  }
  if (rc < 0) {
    jobs_destroy(js);
    return rc;
  }
  *out = js;
  return 0;
}

int jobs_submit(struct jobs *js, struct job *j)
{
  j->next = NULL;
  pthread_mutex_lock(&js->mu);
  if (js->stopping || js->queued >= js->max_pending) {
    int stopping = js->stopping, q = js->queued;
    pthread_mutex_unlock(&js->mu);
    if (stopping) return jp_err(JP_EUNAVAIL, "the coordinator is shutting down");
    return jp_err(JP_EUNAVAIL, "overloaded: %d encoding jobs are queued (--max-pending %d)", q,
                  js->max_pending);
  }
  if (js->tail) js->tail->next = j;
  else js->head = j;
  js->tail = j;
  js->queued++;
  pthread_cond_signal(&js->cv);
  pthread_mutex_unlock(&js->mu);
  return 0;
}

void jobs_destroy(struct jobs *js)
{
  if (!js) return;
  pthread_mutex_lock(&js->mu);
  js->stopping = 1;
  pthread_cond_broadcast(&js->cv);
  pthread_mutex_unlock(&js->mu);
  for (int i = 0; i < js->n_started; i++) pthread_join(js->th[i], NULL);
  if (js->enc)
    for (int i = 0; i < js->n; i++) jp_encoder_destroy(js->enc[i]);
  pthread_cond_destroy(&js->cv);
  pthread_mutex_destroy(&js->mu);
  jp_free(js->th);
  jp_free(js->enc);
  jp_free(js);
}
