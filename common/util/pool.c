/* pool.c: see pool.h.
 *
 * Workers sleep on a condition variable between loops, so an idle pool
 * costs nothing (unlike OpenMP's unbounded spin-wait, which fights OpenBLAS
 * and MPI ranks for the same cores). Before sleeping, a worker (and the
 * caller waiting for its helpers) polls for SPIN_NS: a BERT forward runs
 * about a hundred short loops back to back, and waking a sleeping thread
 * costs tens to hundreds of microseconds on a VM (a halted vCPU needs an
 * IPI), which made a 1 x 32 query forward up to twice as slow as its
 * compute. SPIN_NS bounds what an idle pool burns after its last loop.
 * Items are handed out with an atomic counter, which balances uneven items
 * (documents of different lengths) well. */
#include "util/pool.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/mem.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long a worker polls for the next loop (and the caller for its
 * helpers) before sleeping. */
#define SPIN_NS 100000u

struct jp_pool {
  int n_threads;                 /* workers including the caller */
  pthread_t *threads;            /* n_threads - 1 helpers */
  pthread_mutex_t run_lock;      /* held by the thread running a loop */
  pthread_mutex_t mu;
  pthread_cond_t start_cv;       /* helpers wait here for a loop */
  pthread_cond_t done_cv;        /* the caller waits here for helpers */
  atomic_ulong generation;       /* bumped per loop (under mu; polled without) */
  atomic_int stop;
  atomic_int busy_helpers;       /* helpers still inside the current loop (ditto) */
  /* The current loop. */
  jp_pool_fn fn;
  void *ctx;
  int n;
  atomic_int next;
};

struct helper_arg {
  jp_pool *p;
  int worker;
};

static void run_items(jp_pool *p, int worker)
{
  for (;;) {
    int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
    if (i >= p->n) break;
    p->fn(p->ctx, i, worker);
  }
}

/* Poll until *v != unchanged (or stop) for at most SPIN_NS: 1 if it changed. */
static int spin_until_changed(const atomic_ulong *v, unsigned long unchanged, const atomic_int *stop)
{
  uint64_t t0 = jp_now_ns();
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(v, memory_order_acquire) != unchanged ||
          atomic_load_explicit(stop, memory_order_relaxed))
        return 1;
      cpu_relax();
    }
    if (jp_now_ns() - t0 > SPIN_NS) return 0;
  }
}

static int spin_until_zero(const atomic_int *v)
{
  uint64_t t0 = jp_now_ns();
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(v, memory_order_acquire) == 0) return 1;
      cpu_relax();
    }
    if (jp_now_ns() - t0 > SPIN_NS) return 0;
  }
}

static void *helper_main(void *arg)
{
  struct helper_arg ha = *(struct helper_arg *)arg;
  jp_pool *p = ha.p;
  unsigned long seen = 0;

  jp_free(arg);
  for (;;) {
    (void)spin_until_changed(&p->generation, seen, &p->stop);
    /* The loop's fields were written under mu before generation moved, so
     * taking mu makes them visible whether or not the spin saw the move. */
    pthread_mutex_lock(&p->mu);
    while (!p->stop && atomic_load(&p->generation) == seen)
      pthread_cond_wait(&p->start_cv, &p->mu);
    if (p->stop) break;
    seen = atomic_load(&p->generation);
    pthread_mutex_unlock(&p->mu);
    run_items(p, ha.worker);
    pthread_mutex_lock(&p->mu);
    if (atomic_fetch_sub(&p->busy_helpers, 1) == 1)
      pthread_cond_signal(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int jp_ncpus(void)
{
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

int jp_pool_create(int n_threads, jp_pool **out)
{
  jp_pool *p;
  int i;

  *out = NULL;
  if (n_threads <= 0) n_threads = jp_ncpus();
  if (n_threads > 1024) return jp_err(JP_EINVAL, "thread count %d is too large", n_threads);
  p = jp_calloc(1, sizeof *p);
  if (!p) return JP_ENOMEM;
  p->n_threads = n_threads;
  pthread_mutex_init(&p->run_lock, NULL);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->start_cv, NULL);
  pthread_cond_init(&p->done_cv, NULL);
  atomic_init(&p->next, 0);
  atomic_init(&p->generation, 0);
  atomic_init(&p->stop, 0);
  atomic_init(&p->busy_helpers, 0);
  if (n_threads > 1) {
    p->threads = jp_calloc((size_t)n_threads - 1, sizeof *p->threads);
    if (!p->threads) goto fail;
  }
  for (i = 0; i < n_threads - 1; i++) {
    struct helper_arg *ha = jp_malloc(sizeof *ha);
    if (!ha) goto fail_threads;
    ha->p = p;
    ha->worker = i;
    if (pthread_create(&p->threads[i], NULL, helper_main, ha) != 0) {
      jp_free(ha);
      goto fail_threads;
    }
  }
  *out = p;
  return 0;

fail_threads:
  p->n_threads = i + 1;   /* only i helpers exist */
  jp_pool_destroy(p);
  return jp_err(JP_ENOMEM, "cannot start pool threads");
fail:
  jp_free(p);
  return JP_ENOMEM;
}

void jp_pool_destroy(jp_pool *p)
{
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->start_cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->n_threads - 1; i++)
    pthread_join(p->threads[i], NULL);
  jp_free(p->threads);
  pthread_cond_destroy(&p->start_cv);
  pthread_cond_destroy(&p->done_cv);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->run_lock);
  jp_free(p);
}

int jp_pool_size(const jp_pool *p) { return p ? p->n_threads : 1; }

void jp_pool_run(jp_pool *p, int n, jp_pool_fn fn, void *ctx)
{
  if (n <= 0) return;
  if (!p || p->n_threads == 1 || n == 1 || pthread_mutex_trylock(&p->run_lock) != 0) {
    for (int i = 0; i < n; i++) fn(ctx, i, 0);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->ctx = ctx;
  p->n = n;
  atomic_store(&p->next, 0);
  atomic_store(&p->busy_helpers, p->n_threads - 1);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->start_cv);
  pthread_mutex_unlock(&p->mu);

  run_items(p, p->n_threads - 1);

  (void)spin_until_zero(&p->busy_helpers);
  pthread_mutex_lock(&p->mu);
  while (p->busy_helpers > 0)
    pthread_cond_wait(&p->done_cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
  pthread_mutex_unlock(&p->run_lock);
}
