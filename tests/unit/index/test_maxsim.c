/* test_maxsim.c: MaxSim kernels (maxsim.h): fast vs scalar parity over odd
 * shapes, the floor at 0, many-document scoring, ranking with ties, and the
 * centroid-score kernel used by PLAID's first stage. */
#include "index/index_int.h"
#include "index/maxsim.h"
#include "index_test_util.h"
#include "util/err.h"
#include "util/pool.h"

static void parity_over_shapes(void **state)
{
  (void)state;
  uint64_t rng = 21;
  const int nqs[] = { 1, 5, 16, 32, 33, 100 };
  const int nds[] = { 0, 1, 5, 6, 7, 64, 200 };
  const int dims[] = { 1, 7, 128, 300 };
  float *Q = malloc(sizeof(float) * 100 * 300), *D = malloc(sizeof(float) * 200 * 300);
  for (size_t a = 0; a < sizeof nqs / sizeof nqs[0]; a++)
    for (size_t b = 0; b < sizeof nds / sizeof nds[0]; b++)
      for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++) {
        int nq = nqs[a], nd = nds[b], dim = dims[c];
        itu_unit_rows(Q, (size_t)nq, dim, &rng);
        itu_unit_rows(D, (size_t)nd, dim, &rng);
        float fast = jp_maxsim(Q, nq, D, nd, dim), ref = jp_maxsim_ref(Q, nq, D, nd, dim);
        assert_float_equal(fast, ref, 1e-4 * (1 + fabsf(ref)));
        if (nd == 0) assert_true(fast == 0.0f);
      }
  /* Wider than the stack transposition (dim 2000: scalar fallback path). */
  float *Q2 = malloc(sizeof(float) * 3 * 2000), *D2 = malloc(sizeof(float) * 4 * 2000);
  itu_unit_rows(Q2, 3, 2000, &rng);
  itu_unit_rows(D2, 4, 2000, &rng);
  assert_float_equal(jp_maxsim(Q2, 3, D2, 4, 2000), jp_maxsim_ref(Q2, 3, D2, 4, 2000), 1e-4);
  free(Q2);
  free(D2);
  free(Q);
  free(D);
}

/* A query token whose best match is negative contributes 0, not its max. */
static void floor_at_zero(void **state)
{
  (void)state;
  const float Q[2 * 2] = { 1, 0, 0, 1 };
  const float D[2 * 2] = { -1, 0, 0, 0.5f };
  /* token 0: max(-1, 0) -> floored 0; token 1: 0.5 */
  assert_float_equal(jp_maxsim_ref(Q, 2, D, 2, 2), 0.5, 1e-7);
  assert_float_equal(jp_maxsim(Q, 2, D, 2, 2), 0.5, 1e-7);
  const float Dn[2] = { -1, -1 };
  assert_float_equal(jp_maxsim(Q, 2, Dn, 1, 2), 0.0, 1e-7);
  assert_float_equal(jp_maxsim(Q, 2, D, 0, 2), 0.0, 0);
}

static void many_and_rank(void **state)
{
  (void)state;
  uint64_t rng = 31;
  const int n = 300, dim = 64, nq = 32;
  int32_t doclens[300];
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    doclens[i] = (int32_t)(jp_rand64(&rng) % 40);
    total += (size_t)doclens[i];
  }
  float *D = malloc(sizeof(float) * total * dim), Q[32 * 64];
  itu_unit_rows(D, total, dim, &rng);
  itu_unit_rows(Q, nq, dim, &rng);
  jp_pool *pool;
  assert_int_equal(jp_pool_create(2, &pool), 0);
  float *scores = malloc(sizeof(float) * n);
  jp_maxsim_many(Q, nq, D, doclens, n, dim, pool, scores);
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    assert_float_equal(scores[i], jp_maxsim_ref(Q, nq, D + off * dim, doclens[i], dim), 1e-4);
    off += (size_t)doclens[i];
  }
  struct jp_ranked top[300];
  int m;
  assert_int_equal(jp_maxsim_rank(Q, nq, D, doclens, n, dim, 300, pool, top, &m), 0);
  assert_int_equal(m, 300);
  for (int i = 1; i < m; i++) {
    assert_true(top[i - 1].score >= top[i].score);
    if (top[i - 1].score == top[i].score) assert_true(top[i - 1].index < top[i].index);
  }
  assert_int_equal(jp_maxsim_rank(Q, nq, D, doclens, n, dim, 5, NULL, top, &m), 0);
  assert_int_equal(m, 5);
  for (int i = 0; i < 5; i++) assert_float_equal(top[i].score, scores[top[i].index], 1e-6);
  /* Exact tie (the same document twice): the smaller index first. */
  int32_t dl2[2] = { 5, 5 };
  float D2[10 * 64];
  memcpy(D2, D, sizeof(float) * 5 * dim);
  memcpy(D2 + 5 * dim, D, sizeof(float) * 5 * dim);
  assert_int_equal(jp_maxsim_rank(Q, nq, D2, dl2, 2, dim, 2, pool, top, &m), 0);
  assert_int_equal(top[0].index, 0);
  assert_int_equal(top[1].index, 1);
  assert_true(top[0].score == top[1].score);
  int32_t bad[1] = { -1 };
  assert_int_equal(jp_maxsim_rank(Q, nq, D, bad, 1, dim, 1, pool, top, &m), JP_EINVAL);
  jp_pool_destroy(pool);
  free(scores);
  free(D);
}

/* PLAID's centroid scores: all dot products, zero padding columns. */
static void dots_match_brute_force(void **state)
{
  (void)state;
  uint64_t rng = 41;
  const int nq = 20, dim = 128, n = 37;
  float Q[20 * 128], R[37 * 128];
  itu_unit_rows(Q, nq, dim, &rng);
  itu_unit_rows(R, n, dim, &rng);
  int nqp = jp_maxsim_nqp(nq);
  assert_int_equal(nqp, 32);
  float *qt = malloc(sizeof(float) * (size_t)nqp * dim), *out = malloc(sizeof(float) * (size_t)nqp * n);
  jp_maxsim_qt_fill(Q, nq, dim, qt);
  jp_dots_qt(qt, nq, R, n, dim, out);
  for (int r = 0; r < n; r++)
    for (int q = 0; q < nqp; q++) {
      float want = q < nq ? itu_dot(R + r * dim, Q + q * dim, dim) : 0.0f;
      assert_float_equal(out[r * nqp + q], want, 1e-5);
    }
  free(qt);
  free(out);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(parity_over_shapes),
    cmocka_unit_test(floor_at_zero),
    cmocka_unit_test(many_and_rank),
    cmocka_unit_test(dots_match_brute_force),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
