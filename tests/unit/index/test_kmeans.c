/* test_kmeans.c: the plan formulas and k-means (kmeans.h): recovery of
 * separable blobs, agreement with a plain brute-force Lloyd (so the bound
 * skipping changes nothing), determinism across thread counts, k > n, the
 * reduce hook (two simulated ranks equal one process), progress, errors,
 * OOM. */
#include "index/kmeans.h"
#include "index_test_util.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/pool.h"

#include <pthread.h>

static void plan_formulas(void **state)
{
  (void)state;
  /* plaid.md §2.1: 10^5 passages -> 55 426 sampled; x 100 tokens -> 32 768. */
  assert_int_equal(jp_plan_sample_size(100000), 55426);
  assert_int_equal(jp_plan_sample_size(10), 10);
  assert_int_equal(jp_plan_sample_size(0), 0);
  assert_int_equal(jp_plan_centroids(100000, 100.0, 5000000), 32768);
  /* 16 sqrt(2e6) = 22 627 -> 2^14. */
  assert_int_equal(jp_plan_centroids(20000, 100.0, 1000000), 16384);
  /* Capped by the sample: at most as many centroids as sample vectors. */
  assert_int_equal(jp_plan_centroids(100000, 100.0, 1000), 512);
  assert_int_equal(jp_plan_centroids(100000, 100.0, 1024), 1024);
  assert_int_equal(jp_plan_centroids(0, 100.0, 10), 1);
  assert_int_equal(jp_plan_default_nbits(4999), 8);
  assert_int_equal(jp_plan_default_nbits(5000), 4);
  assert_int_equal(jp_plan_default_nbits(9999), 4);
  assert_int_equal(jp_plan_default_nbits(10000), 2);
  assert_int_equal(jp_plan_default_iters(50000), 20);
  assert_int_equal(jp_plan_default_iters(50001), 10);
  assert_int_equal(jp_plan_default_iters(100000), 10);
  assert_int_equal(jp_plan_default_iters(100001), 4);
}

#define BLOBS 8
#define PER_BLOB 100
#define BDIM 16

static void make_blobs(float *x, float *centers, uint64_t seed)
{
  uint64_t rng = seed;
  for (int b = 0; b < BLOBS; b++)
    for (int d = 0; d < BDIM; d++) centers[b * BDIM + d] = 10.0f * jp_randn(&rng);
  for (int i = 0; i < BLOBS * PER_BLOB; i++)
    for (int d = 0; d < BDIM; d++)
      x[i * BDIM + d] = centers[(i % BLOBS) * BDIM + d] + 0.1f * jp_randn(&rng);
}

static float dist2(const float *a, const float *b, int dim)
{
  float s = 0;
  for (int d = 0; d < dim; d++) s += (a[d] - b[d]) * (a[d] - b[d]);
  return s;
}

/* Random init with k = 64 on 8 blobs: every blob gets centroids, every
 * centroid sits at a blob's mean, and no cluster mixes blobs. */
static void blobs_are_recovered(void **state)
{
  (void)state;
  float x[BLOBS * PER_BLOB * BDIM], centers[BLOBS * BDIM], C[64 * BDIM];
  make_blobs(x, centers, 1);
  struct jp_kmeans_opts o = { .k = 64, .iters = 10, .seed = 123 };
  int k;
  double obj;
  assert_int_equal(jp_kmeans(x, BLOBS * PER_BLOB, BDIM, &o, NULL, C, &k, &obj), 0);
  assert_int_equal(k, 64);
  int owner[64], seen[BLOBS] = { 0 };
  for (int j = 0; j < 64; j++) {
    int best = 0;
    for (int b = 1; b < BLOBS; b++)
      if (dist2(C + j * BDIM, centers + b * BDIM, BDIM) < dist2(C + j * BDIM, centers + best * BDIM, BDIM)) best = b;
    owner[j] = best;
    seen[best] = 1;
    /* A cluster of blob points is within the noise of the blob center. */
    assert_true(dist2(C + j * BDIM, centers + best * BDIM, BDIM) < 0.5f);
  }
  for (int b = 0; b < BLOBS; b++) assert_true(seen[b]);
  /* Purity: each point's nearest centroid belongs to its own blob. */
  for (int i = 0; i < BLOBS * PER_BLOB; i++) {
    int best = 0;
    for (int j = 1; j < 64; j++)
      if (dist2(x + i * BDIM, C + j * BDIM, BDIM) < dist2(x + i * BDIM, C + best * BDIM, BDIM)) best = j;
    assert_int_equal(owner[best], i % BLOBS);
  }
  /* Objective: within-blob scatter only (noise 0.1 per coordinate -> 0.16 per point). */
  assert_true(obj < BLOBS * PER_BLOB * 0.16 * 1.5);
  /* With one init point per blob and k = 8, the centroids are the means. */
  float init[BLOBS * BDIM], C8[BLOBS * BDIM];
  for (int b = 0; b < BLOBS; b++) memcpy(init + b * BDIM, x + b * BDIM, sizeof(float) * BDIM);
  o.k = BLOBS;
  assert_int_equal(jp_kmeans(x, BLOBS * PER_BLOB, BDIM, &o, init, C8, &k, &obj), 0);
  for (int b = 0; b < BLOBS; b++) {
    float mean[BDIM] = { 0 };
    for (int i = b; i < BLOBS * PER_BLOB; i += BLOBS)
      for (int d = 0; d < BDIM; d++) mean[d] += x[i * BDIM + d] / PER_BLOB;
    for (int d = 0; d < BDIM; d++) assert_float_equal(C8[b * BDIM + d], mean[d], 1e-4);
  }
  /* normalize = 1 gives unit rows. */
  o.normalize = 1;
  assert_int_equal(jp_kmeans(x, BLOBS * PER_BLOB, BDIM, &o, init, C8, &k, &obj), 0);
  for (int b = 0; b < BLOBS; b++) assert_float_equal(itu_dot(C8 + b * BDIM, C8 + b * BDIM, BDIM), 1.0, 1e-5);
}

/* Plain Lloyd in double, brute force, same init: the reference for the
 * bound-skipping implementation. */
static void lloyd_ref(const float *x, int n, int dim, int k, int iters, float *C)
{
  int *a = malloc(sizeof(int) * n);
  double *s = malloc(sizeof(double) * k * dim);
  int *cnt = malloc(sizeof(int) * k);
  for (int it = 0; it < iters; it++) {
    for (int i = 0; i < n; i++) {
      int best = 0;
      double bd = INFINITY;
      for (int j = 0; j < k; j++) {
        double d2 = 0;
        for (int d = 0; d < dim; d++) d2 += ((double)x[i * dim + d] - C[j * dim + d]) * ((double)x[i * dim + d] - C[j * dim + d]);
        if (d2 < bd) {
          bd = d2;
          best = j;
        }
      }
      a[i] = best;
    }
    memset(s, 0, sizeof(double) * k * dim);
    memset(cnt, 0, sizeof(int) * k);
    for (int i = 0; i < n; i++) {
      cnt[a[i]]++;
      for (int d = 0; d < dim; d++) s[a[i] * dim + d] += x[i * dim + d];
    }
    for (int j = 0; j < k; j++)
      if (cnt[j])
        for (int d = 0; d < dim; d++) C[j * dim + d] = (float)(s[j * dim + d] / cnt[j]);
  }
  free(a);
  free(s);
  free(cnt);
}

static void matches_plain_lloyd(void **state)
{
  (void)state;
  uint64_t rng = 77;
  const int n = 3000, dim = 24, k = 40, iters = 15;
  float *x = malloc(sizeof(float) * n * dim), *init = malloc(sizeof(float) * k * dim);
  float *C = malloc(sizeof(float) * k * dim), *R = malloc(sizeof(float) * k * dim);
  /* Loosely clustered: 60 centers, wide noise, so points keep moving for a while. */
  float centers[60 * 24];
  itu_unit_rows(centers, 60, dim, &rng);
  for (int i = 0; i < n; i++) itu_near(centers + (jp_rand64(&rng) % 60) * dim, 1.0f, dim, &rng, x + i * dim);
  for (int j = 0; j < k; j++) memcpy(init + j * dim, x + (size_t)(j * 71) * dim, sizeof(float) * dim);
  memcpy(R, init, sizeof(float) * k * dim);
  lloyd_ref(x, n, dim, k, iters, R);
  struct jp_kmeans_opts o = { .k = k, .iters = iters, .seed = 1 };
  int kk;
  assert_int_equal(jp_kmeans(x, (size_t)n, dim, &o, init, C, &kk, NULL), 0);
  for (int i = 0; i < k * dim; i++) assert_float_equal(C[i], R[i], 1e-4);
  free(x);
  free(init);
  free(C);
  free(R);
}

/* Same seed: bit-identical centroids and objective with no pool, 1 and 2 threads. */
static void deterministic_across_threads(void **state)
{
  (void)state;
  uint64_t rng = 5;
  const size_t n = 6000;
  const int dim = 32, k = 100;
  float *x = malloc(sizeof(float) * n * dim);
  float centers[50 * 32];
  itu_unit_rows(centers, 50, dim, &rng);
  for (size_t i = 0; i < n; i++) itu_near(centers + (jp_rand64(&rng) % 50) * dim, 0.7f, dim, &rng, x + i * dim);
  float *C[3];
  double obj[3];
  jp_pool *p1, *p2;
  assert_int_equal(jp_pool_create(1, &p1), 0);
  assert_int_equal(jp_pool_create(2, &p2), 0);
  jp_pool *pools[3] = { NULL, p1, p2 };
  for (int t = 0; t < 3; t++) {
    C[t] = malloc(sizeof(float) * k * dim);
    struct jp_kmeans_opts o = { .k = k, .iters = 8, .seed = 99, .pool = pools[t], .normalize = 1 };
    int kk;
    assert_int_equal(jp_kmeans(x, n, dim, &o, NULL, C[t], &kk, &obj[t]), 0);
  }
  assert_memory_equal(C[0], C[1], sizeof(float) * k * dim);
  assert_memory_equal(C[0], C[2], sizeof(float) * k * dim);
  assert_true(obj[0] == obj[1] && obj[0] == obj[2]);
  /* Another seed gives another init. */
  struct jp_kmeans_opts o = { .k = k, .iters = 1, .seed = 100, .pool = p2 };
  float *D = malloc(sizeof(float) * k * dim);
  int kk;
  assert_int_equal(jp_kmeans(x, n, dim, &o, NULL, D, &kk, NULL), 0);
  assert_true(memcmp(C[0], D, sizeof(float) * k * dim) != 0);
  free(D);
  for (int t = 0; t < 3; t++) free(C[t]);
  jp_pool_destroy(p1);
  jp_pool_destroy(p2);
  free(x);
}

static void more_clusters_than_points(void **state)
{
  (void)state;
  uint64_t rng = 3;
  float x[5 * 8], C[10 * 8];
  itu_unit_rows(x, 5, 8, &rng);
  memset(C, 0x7f, sizeof C);
  struct jp_kmeans_opts o = { .k = 10, .iters = 3, .seed = 1 };
  int k;
  double obj;
  assert_int_equal(jp_kmeans(x, 5, 8, &o, NULL, C, &k, &obj), 0);
  assert_int_equal(k, 5);
  assert_float_equal(obj, 0.0, 1e-6);
  /* Each point is a centroid. */
  for (int i = 0; i < 5; i++) {
    int found = 0;
    for (int j = 0; j < 5; j++) found |= dist2(x + i * 8, C + j * 8, 8) < 1e-10f;
    assert_true(found);
  }
  for (int i = 5 * 8; i < 10 * 8; i++) assert_true(C[i] == 0.0f);
}

/* A duplicated init point leaves a cluster empty: it is re-seeded by a
 * split and ends up owning points. */
static void empty_cluster_is_reseeded(void **state)
{
  (void)state;
  float x[BLOBS * PER_BLOB * BDIM], centers[BLOBS * BDIM], C[BLOBS * BDIM], init[BLOBS * BDIM];
  make_blobs(x, centers, 2);
  for (int b = 0; b < BLOBS; b++) memcpy(init + b * BDIM, x + b * BDIM, sizeof(float) * BDIM);
  memcpy(init + 7 * BDIM, init, sizeof(float) * BDIM);      /* blob 7 has no init point */
  struct jp_kmeans_opts o = { .k = BLOBS, .iters = 20, .seed = 4 };
  int k;
  double obj;
  assert_int_equal(jp_kmeans(x, BLOBS * PER_BLOB, BDIM, &o, init, C, &k, &obj), 0);
  int used[BLOBS] = { 0 };
  for (int i = 0; i < BLOBS * PER_BLOB; i++) {
    int best = 0;
    for (int j = 1; j < BLOBS; j++)
      if (dist2(x + i * BDIM, C + j * BDIM, BDIM) < dist2(x + i * BDIM, C + best * BDIM, BDIM)) best = j;
    used[best]++;
  }
  for (int j = 0; j < BLOBS; j++) assert_true(used[j] > 0);
}

/* ---- two ranks in one process ------------------------------------------------------ */

struct ranks {
  pthread_barrier_t bar;
  double *sums[2];
  int64_t *counts[2];
  double *obj[2];
  size_t k_dim, k;
  int calls[2];
  int fail_at;          /* call number that returns an error (0: none) */
};

struct rank_ctx {
  struct ranks *r;
  int rank;
};

static int sum_hook(void *vctx, double *sums, int64_t *counts, size_t k_dim, size_t k, double *objective)
{
  struct rank_ctx *c = vctx;
  struct ranks *r = c->r;
  r->calls[c->rank]++;
  /* Wrong sizes still take part in the barriers (no hang), then fail. */
  int bad = k_dim != r->k_dim || k != r->k;
  if (bad) k_dim = k = 0;
  r->sums[c->rank] = sums;
  r->counts[c->rank] = counts;
  r->obj[c->rank] = objective;
  pthread_barrier_wait(&r->bar);
  /* Rank 0 sums into fresh buffers that both copy back after the second barrier. */
  static double s_tot[64 * 32];
  static int64_t c_tot[64];
  static double o_tot;
  if (c->rank == 0) {
    for (size_t i = 0; i < k_dim; i++) s_tot[i] = r->sums[0][i] + r->sums[1][i];
    for (size_t i = 0; i < k; i++) c_tot[i] = r->counts[0][i] + r->counts[1][i];
    o_tot = *r->obj[0] + *r->obj[1];
  }
  pthread_barrier_wait(&r->bar);
  memcpy(sums, s_tot, sizeof(double) * k_dim);
  memcpy(counts, c_tot, sizeof(int64_t) * k);
  *objective = o_tot;
  pthread_barrier_wait(&r->bar);
  if (bad) return JP_EINVAL;
  if (r->fail_at && r->calls[c->rank] == r->fail_at) return JP_EMPI;
  return 0;
}

struct rank_run {
  struct rank_ctx ctx;
  const float *x;
  size_t n;
  const float *init;
  float C[64 * 32];
  double obj;
  int rc;
};

#define RDIM 32
#define RK 64
#define RITERS 6

static void *rank_main(void *v)
{
  struct rank_run *rr = v;
  struct jp_kmeans_opts o = { .k = RK, .iters = RITERS, .seed = 7, .reduce = sum_hook, .reduce_ctx = &rr->ctx };
  int k;
  rr->rc = jp_kmeans(rr->x, rr->n, RDIM, &o, rr->init, rr->C, &k, &rr->obj);
  return NULL;
}

static void progress_hook(void *ctx, int iter, int iters, double objective)
{
  double *log = ctx;
  assert_int_equal(iters, RITERS);
  assert_true(iter >= 1 && iter <= RITERS);
  log[iter - 1] = objective;
  log[RITERS]++;
}

static void two_ranks_equal_one_process(void **state)
{
  (void)state;
  uint64_t rng = 13;
  const size_t n = 4000;
  float *x = malloc(sizeof(float) * n * RDIM), init[RK * RDIM], single[RK * RDIM];
  float centers[30 * RDIM];
  itu_unit_rows(centers, 30, RDIM, &rng);
  for (size_t i = 0; i < n; i++) itu_near(centers + (jp_rand64(&rng) % 30) * RDIM, 0.8f, RDIM, &rng, x + i * RDIM);
  for (int j = 0; j < RK; j++) memcpy(init + j * RDIM, x + (size_t)j * 37 * RDIM, sizeof(float) * RDIM);

  double plog[RITERS + 1] = { 0 };
  struct jp_kmeans_opts o = { .k = RK, .iters = RITERS, .seed = 7, .progress = progress_hook, .progress_ctx = plog };
  int k;
  double obj_single;
  assert_int_equal(jp_kmeans(x, n, RDIM, &o, init, single, &k, &obj_single), 0);
  assert_true(plog[RITERS] == RITERS);
  for (int i = 1; i < RITERS; i++) assert_true(plog[i] <= plog[i - 1] * (1 + 1e-6));
  assert_float_equal(plog[RITERS - 1], obj_single, 1e-9 * obj_single);

  for (int fail_at = 0; fail_at <= 3; fail_at += 3) {
    struct ranks r;
    memset(&r, 0, sizeof r);
    r.k_dim = (size_t)RK * RDIM;
    r.k = RK;
    r.fail_at = fail_at;
    pthread_barrier_init(&r.bar, NULL, 2);
    struct rank_run *rr = calloc(2, sizeof *rr);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
      rr[i].ctx.r = &r;
      rr[i].ctx.rank = i;
      rr[i].x = x + (i ? 1500 * RDIM : 0);   /* uneven split: 1500 and 2500 points */
      rr[i].n = i ? n - 1500 : 1500;
      rr[i].init = init;
      assert_int_equal(pthread_create(&th[i], NULL, rank_main, &rr[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&r.bar);
    if (fail_at) {
      /* The hook's error aborts k-means on both ranks with that code. */
      assert_int_equal(rr[0].rc, JP_EMPI);
      assert_int_equal(rr[1].rc, JP_EMPI);
      assert_int_equal(r.calls[0], fail_at);
    } else {
      for (int i = 0; i < 2; i++) {
        assert_int_equal(rr[i].rc, 0);
        assert_int_equal(r.calls[i], RITERS);
        assert_float_equal(rr[i].obj, obj_single, 1e-5 * obj_single);
        for (int j = 0; j < RK * RDIM; j++) assert_float_equal(rr[i].C[j], single[j], 1e-5);
      }
      assert_memory_equal(rr[0].C, rr[1].C, sizeof rr[0].C);
    }
    free(rr);
  }
  free(x);
}

static void bad_arguments_are_errors(void **state)
{
  (void)state;
  float x[4 * 4] = { 0 }, C[4 * 4];
  int k;
  struct jp_kmeans_opts o = { .k = 0, .iters = 1 };
  assert_int_equal(jp_kmeans(x, 4, 4, &o, NULL, C, &k, NULL), JP_EINVAL);
  o.k = 2;
  o.iters = 0;
  assert_int_equal(jp_kmeans(x, 4, 4, &o, NULL, C, &k, NULL), JP_EINVAL);
  o.iters = 1;
  assert_int_equal(jp_kmeans(x, 0, 4, &o, NULL, C, &k, NULL), JP_EINVAL);
  assert_int_equal(jp_kmeans(x, 4, 0, &o, NULL, C, &k, NULL), JP_EINVAL);
  o.reduce = sum_hook;
  assert_int_equal(jp_kmeans(x, 4, 4, &o, NULL, C, &k, NULL), JP_EINVAL);
}

static void oom_paths_are_clean(void **state)
{
  (void)state;
  uint64_t rng = 2;
  float x[300 * 8], C[20 * 8];
  itu_unit_rows(x, 300, 8, &rng);
  jp_pool *pool;
  assert_int_equal(jp_pool_create(2, &pool), 0);
  for (long fail = 1;; fail++) {
    struct jp_kmeans_opts o = { .k = 20, .iters = 3, .seed = 1, .pool = pool };
    int k;
    jp_mem_fail_after(fail);
    int rc = jp_kmeans(x, 300, 8, &o, NULL, C, &k, NULL);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      assert_true(made < fail);
      break;
    }
    assert_int_equal(rc, JP_ENOMEM);
  }
  jp_pool_destroy(pool);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(plan_formulas),
    cmocka_unit_test(blobs_are_recovered),
    cmocka_unit_test(matches_plain_lloyd),
    cmocka_unit_test(deterministic_across_threads),
    cmocka_unit_test(more_clusters_than_points),
    cmocka_unit_test(empty_cluster_is_reseeded),
    cmocka_unit_test(two_ranks_equal_one_process),
    cmocka_unit_test(bad_arguments_are_errors),
    cmocka_unit_test(oom_paths_are_clean),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
