/* pool.h: a fixed set of worker threads for data-parallel loops.
 *
 * jp_pool_run(pool, n, fn, ctx) calls fn(ctx, i, worker) for i in [0, n)
 * across the workers and the calling thread, and returns when all calls have
 * returned. `worker` is in [0, jp_pool_size(pool)) and is unique among the
 * calls of this one jp_pool_run() running at the same moment, so fn may use
 * scratch that the caller allocated for this loop, indexed by `worker`.
 *
 * Only one loop runs on a pool at a time. When a second thread calls
 * jp_pool_run while the pool is busy (several server threads searching at
 * once), it runs its loop alone on its own thread (always worker 0) instead
 * of waiting: the cores are already busy, and waiting would only add
 * latency. So never share per-worker scratch between callers.
 *
 * A NULL pool is valid and runs everything on the calling thread.
 * Kernels never create threads; their callers split work with this pool. */
#ifndef JP_POOL_H
#define JP_POOL_H

typedef struct jp_pool jp_pool;
typedef void (*jp_pool_fn)(void *ctx, int i, int worker);

/* n_threads <= 0 means one per online CPU. The pool has n_threads - 1
 * helper threads; the caller of jp_pool_run is the last worker. */
int  jp_pool_create(int n_threads, jp_pool **out);
void jp_pool_destroy(jp_pool *p);                /* NULL is a no-op */
int  jp_pool_size(const jp_pool *p);             /* 1 for NULL */
void jp_pool_run(jp_pool *p, int n, jp_pool_fn fn, void *ctx);

/* Online CPUs of this process (sched affinity aware), at least 1. */
int  jp_ncpus(void);

#endif /* JP_POOL_H */
