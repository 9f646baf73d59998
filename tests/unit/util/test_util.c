/* test_util.c: error table, allocator hook, arena, pool, fp16, json, hash. */
#include "test_helpers.h"
#include "util/arena.h"
#include "util/err.h"
#include "util/fp16.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/mem.h"
#include "util/pool.h"

#include <math.h>
#include <stdatomic.h>

static void err_detail_follows_code(void **state)
{
  (void)state;
  jp_err_clear();
  assert_string_equal(jp_errmsg(JP_EINVAL), "invalid argument");
  assert_int_equal(jp_err(JP_EINVAL, "k must be in 1..%d", 1000), JP_EINVAL);
  assert_string_equal(jp_errmsg(JP_EINVAL), "k must be in 1..1000");
  /* A different code does not pick up a stale detail. */
  assert_string_equal(jp_errmsg(JP_EIO), "I/O error");
  assert_string_equal(jp_errname(JP_ECORRUPT), "JP_ECORRUPT");
  assert_string_equal(jp_strerror(12345), "unknown error");
}

static void mem_fail_after_fails_exactly_once(void **state)
{
  (void)state;
  jp_mem_fail_after(2);
  void *a = jp_malloc(10);
  void *b = jp_malloc(10);
  void *c = jp_malloc(10);
  jp_mem_fail_after(0);
  assert_non_null(a);
  assert_null(b);
  assert_non_null(c);
  jp_free(a);
  jp_free(c);
}

static void grow_respects_limit(void **state)
{
  (void)state;
  int *v = NULL;
  size_t cap = 0;
  assert_int_equal(jp_grow((void **)&v, &cap, 10, sizeof *v, 100), 0);
  assert_true(cap >= 10);
  assert_int_equal(jp_grow((void **)&v, &cap, 101, sizeof *v, 100), JP_ETOOBIG);
  assert_int_equal(jp_grow((void **)&v, &cap, 100, sizeof *v, 100), 0);
  assert_int_equal(cap, 100);
  jp_free(v);
}

static void arena_aligns_resets_and_limits(void **state)
{
  (void)state;
  struct jp_arena a;
  jp_arena_init(&a, 128, 4096);
  char *p = jp_arena_alloc(&a, 3);
  float *q = jp_arena_alloc_aligned(&a, 1000);
  assert_non_null(p);
  assert_non_null(q);
  assert_int_equal(((uintptr_t)q) % 64, 0);
  memset(q, 1, 1000);
  assert_null(jp_arena_alloc(&a, 5000));  /* past the limit */
  jp_arena_reset(&a);
  assert_int_equal(a.used, 0);
  void *r = jp_arena_alloc(&a, 900);      /* reuses a kept block */
  assert_non_null(r);
  jp_arena_fini(&a);
}

static void arena_oom_is_clean(void **state)
{
  (void)state;
  for (long k = 1; k < 20; k++) {
    struct jp_arena a;
    jp_arena_init(&a, 64, 0);
    jp_mem_fail_after(k);
    int failed = 0;
    for (int i = 0; i < 10; i++)
      if (!jp_arena_alloc(&a, 100)) failed = 1;
    long made = jp_mem_fail_after(0);
    jp_arena_fini(&a);
    if (!failed) { assert_true(made < k); break; }
  }
}

struct sum_ctx {
  atomic_long sum;
  atomic_int max_worker;
};

static void add_i(void *ctx, int i, int worker)
{
  struct sum_ctx *c = ctx;
  atomic_fetch_add(&c->sum, i);
  int m = atomic_load(&c->max_worker);
  while (worker > m && !atomic_compare_exchange_weak(&c->max_worker, &m, worker)) {}
}

static void pool_runs_every_item_once(void **state)
{
  (void)state;
  jp_pool *p;
  assert_int_equal(jp_pool_create(3, &p), 0);
  assert_int_equal(jp_pool_size(p), 3);
  for (int rep = 0; rep < 50; rep++) {
    struct sum_ctx c;
    atomic_init(&c.sum, 0);
    atomic_init(&c.max_worker, 0);
    jp_pool_run(p, 1000, add_i, &c);
    assert_int_equal(atomic_load(&c.sum), 999L * 1000 / 2);
    assert_true(atomic_load(&c.max_worker) < 3);
  }
  jp_pool_destroy(p);
  /* NULL pool runs inline. */
  struct sum_ctx c;
  atomic_init(&c.sum, 0);
  atomic_init(&c.max_worker, 0);
  jp_pool_run(NULL, 10, add_i, &c);
  assert_int_equal(atomic_load(&c.sum), 45);
}

static void fp16_round_trips_and_rounds_to_even(void **state)
{
  (void)state;
  /* Every finite half converts to float and back exactly. */
  for (uint32_t h = 0; h < 65536; h++) {
    if (((h >> 10) & 0x1f) == 0x1f) continue;
    assert_int_equal(jp_f32_to_f16(jp_f16_to_f32((uint16_t)h)), h);
  }
  assert_int_equal(jp_f32_to_f16(1.0f), 0x3c00);
  assert_int_equal(jp_f32_to_f16(65504.0f), 0x7bff);
  assert_int_equal(jp_f32_to_f16(1e6f), 0x7c00);
  /* 1 + 2^-11 is halfway between 1 and the next half: ties to even (1). */
  assert_int_equal(jp_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);
  assert_int_equal(jp_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
  assert_true(isnan(jp_f16_to_f32(jp_f32_to_f16(NAN))));
  assert_true(jp_bf16_to_f32(jp_f32_to_bf16(3.0f)) == 3.0f);
  assert_int_equal(jp_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);   /* tie to even */
  assert_int_equal(jp_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
}

static void json_getters_reject_wrong_types(void **state)
{
  (void)state;
  json_t *o;
  int64_t i;
  const char *s;
  assert_int_equal(jp_json_loadb("{\"a\":3,\"b\":\"x\"}", 15, "t", &o), 0);
  assert_int_equal(jp_json_get_int(o, "a", 0, &i), 0);
  assert_int_equal(i, 3);
  assert_int_equal(jp_json_get_int(o, "zz", 7, &i), 0);
  assert_int_equal(i, 7);
  assert_int_equal(jp_json_get_int(o, "b", 0, &i), JP_EINVAL);
  assert_int_equal(jp_json_get_str(o, "b", NULL, &s), 0);
  assert_string_equal(s, "x");
  json_decref(o);
  assert_int_equal(jp_json_loadb("{\"a\":", 5, "t", &o), JP_EINVAL);
}

static void buf_escapes_json_and_replaces_bad_utf8(void **state)
{
  (void)state;
  struct jp_buf b;
  jp_buf_init(&b, 0);
  assert_int_equal(jp_buf_json_str(&b, "a\"\\\n\x01\xff日", 9), 0);
  assert_string_equal(b.data, "\"a\\\"\\\\\\n\\u0001\xef\xbf\xbd日\"");
  jp_buf_reset(&b);
  assert_int_equal(jp_buf_json_float(&b, 0.1f), 0);
  assert_string_equal(b.data, "0.1");
  jp_buf_fini(&b);
  jp_buf_init(&b, 4);
  assert_int_equal(jp_buf_puts(&b, "12345"), JP_ETOOBIG);
  jp_buf_fini(&b);
}

static void route_is_stable_and_in_range(void **state)
{
  (void)state;
  /* Fixed values: changing jp_route_partition moves every stored document. */
  assert_int_equal(jp_route_partition("doc-1", 5, 1), 0);
  uint32_t counts[4] = {0};
  char id[32];
  for (int i = 0; i < 4000; i++) {
    int n = snprintf(id, sizeof id, "doc-%d", i);
    uint32_t p = jp_route_partition(id, (size_t)n, 4);
    assert_true(p < 4);
    counts[p]++;
  }
  for (int i = 0; i < 4; i++) assert_in_range(counts[i], 850, 1150);
  assert_int_equal(jp_hash64("abc", 3), 0x78af5f94892f3950ull);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(err_detail_follows_code),
    cmocka_unit_test(mem_fail_after_fails_exactly_once),
    cmocka_unit_test(grow_respects_limit),
    cmocka_unit_test(arena_aligns_resets_and_limits),
    cmocka_unit_test(arena_oom_is_clean),
    cmocka_unit_test(pool_runs_every_item_once),
    cmocka_unit_test(fp16_round_trips_and_rounds_to_even),
    cmocka_unit_test(json_getters_reject_wrong_types),
    cmocka_unit_test(buf_escapes_json_and_replaces_bad_utf8),
    cmocka_unit_test(route_is_stable_and_in_range),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
