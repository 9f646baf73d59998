/* test_bert_cpu.c: the fast CPU forward (bert_cpu_create) against the
 * scalar reference forward (bert_forward_ref) on a tiny random BERT
 * (2 layers, hidden 64, 4 heads), plus its input checks, allocation
 * failures and determinism.
 *
 * Parity bound, per output vector: cosine >= 0.9999 and max abs diff <=
 * 1e-4 against the reference, for B x L in {1x1, 1x32, 3x17, 4x64, 2x80}
 * (80 = the tiny model's max_position) with query [MASK] padding, batch
 * padding, a mask with holes and a sequence with no attended token, on no
 * pool and on pools of 2 and 3 threads, with OpenBLAS on its configured
 * thread count and on one thread (then bert_cpu splits GEMMs itself). */
#include "test_helpers.h"
#include "model/bert.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/mem.h"
#include "util/pool.h"

#include <cblas.h>
#include <math.h>

#define VOCAB 50
#define HID 64
#define LAYERS 2
#define HEADS 4
#define INTER 256
#define MAXPOS 80
#define OUT 32

struct tiny {
  struct bert_weights w;
  struct bert_layer_weights layer[LAYERS];
  float *mem;
};

static const float *take(float **p, size_t count, float scale, float offset, uint64_t *rng)
{
  float *q = *p;
  for (size_t i = 0; i < count; i++) q[i] = offset + scale * jp_randn(rng);
  *p += count;
  return q;
}

/* Weights at the scale of a trained model's activations (not 0.02 init):
 * matrices N(0, 1/in) so q.k scores spread over several units and the
 * softmax is far from uniform; LayerNorm gammas around 1, biases nonzero,
 * so a kernel that drops one of them fails. */
static void tiny_init(struct tiny *t, uint64_t seed)
{
  size_t per_layer = 4 * HID * HID + 4 * HID + 4 * HID + 2 * INTER * HID + INTER + HID;
  size_t n = (size_t)VOCAB * HID + MAXPOS * HID + 2 * HID + 2 * HID + LAYERS * per_layer +
             OUT * HID;
  float *p = t->mem = malloc(n * sizeof(float));
  uint64_t rng = seed;
  assert_non_null(p);
#define TAKE(count, scale, offset) take(&p, (size_t)(count), scale, offset, &rng)
  memset(&t->w, 0, sizeof t->w);
  t->w.cfg = (struct bert_config){ .vocab_size = VOCAB, .hidden = HID, .layers = LAYERS,
                                   .heads = HEADS, .intermediate = INTER, .max_position = MAXPOS,
                                   .type_vocab = 2, .layer_norm_eps = 1e-12f, .out_dim = OUT };
  float s_h = 1.0f / sqrtf(HID), s_i = 1.0f / sqrtf(INTER);
  t->w.word_emb = TAKE(VOCAB * HID, 1.0f, 0.0f);
  t->w.pos_emb = TAKE(MAXPOS * HID, 0.5f, 0.0f);
  t->w.type_emb = TAKE(2 * HID, 0.5f, 0.0f);
  t->w.emb_ln_g = TAKE(HID, 0.1f, 1.0f);
  t->w.emb_ln_b = TAKE(HID, 0.1f, 0.0f);
  for (int l = 0; l < LAYERS; l++) {
    struct bert_layer_weights *L = &t->layer[l];
    /* q and k a little larger than 1/sqrt(in): sharper attention */
    L->q_w = TAKE(HID * HID, 2.0f * s_h, 0.0f);
    L->q_b = TAKE(HID, 0.2f, 0.0f);
    L->k_w = TAKE(HID * HID, 2.0f * s_h, 0.0f);
    L->k_b = TAKE(HID, 0.2f, 0.0f);
    L->v_w = TAKE(HID * HID, s_h, 0.0f);
    L->v_b = TAKE(HID, 0.2f, 0.0f);
    L->ao_w = TAKE(HID * HID, s_h, 0.0f);
    L->ao_b = TAKE(HID, 0.1f, 0.0f);
    L->ln1_g = TAKE(HID, 0.1f, 1.0f);
    L->ln1_b = TAKE(HID, 0.1f, 0.0f);
    L->i_w = TAKE(INTER * HID, s_h, 0.0f);
    L->i_b = TAKE(INTER, 0.5f, 0.0f);
    L->o_w = TAKE(HID * INTER, s_i, 0.0f);
    L->o_b = TAKE(HID, 0.1f, 0.0f);
    L->ln2_g = TAKE(HID, 0.1f, 1.0f);
    L->ln2_b = TAKE(HID, 0.1f, 0.0f);
  }
  t->w.proj_w = TAKE(OUT * HID, s_h, 0.0f);
#undef TAKE
  assert_true((size_t)(p - t->mem) == n);
  t->w.layer = t->layer;
}

/* A batch: ids and attention for each of the shapes under test. */
struct batch {
  int B, L;
  int32_t *ids;
  uint8_t *attn;
};

enum mask_kind { M_FULL, M_QUERY, M_PAD, M_HOLES, M_NONE };

static void batch_init(struct batch *b, int B, int L, const enum mask_kind *kinds,
                       const int *lens, uint64_t seed)
{
  uint64_t rng = seed;
  b->B = B;
  b->L = L;
  b->ids = malloc(sizeof(int32_t) * (size_t)B * L);
  b->attn = malloc((size_t)B * L);
  for (int s = 0; s < B; s++)
    for (int i = 0; i < L; i++) {
      int32_t *id = &b->ids[s * L + i];
      uint8_t *a = &b->attn[s * L + i];
      *id = 5 + (int32_t)(jp_rand64(&rng) % (VOCAB - 5));
      switch (kinds[s]) {
      case M_FULL: *a = 1; break;
      case M_QUERY:   /* real tokens, then [MASK]=4 that nobody attends to */
        *a = i < lens[s];
        if (!*a) *id = 4;
        break;
      case M_PAD:     /* batch padding with [PAD]=0 */
        *a = i < lens[s];
        if (!*a) *id = 0;
        break;
      case M_HOLES: *a = jp_randf(&rng) < 0.6f || i == 0; break;
      case M_NONE: *a = 0; break;
      }
    }
}

static void batch_free(struct batch *b)
{
  free(b->ids);
  free(b->attn);
}

static double worst_cos = 1.0, worst_abs = 0.0;

static void check_against_ref(const struct tiny *t, struct bert_backend *be,
                              const struct batch *b)
{
  size_t n = (size_t)b->B * b->L;
  float *ref = malloc(n * OUT * sizeof(float)), *got = malloc(n * OUT * sizeof(float));
  assert_int_equal(bert_forward_ref(&t->w, b->ids, b->attn, b->B, b->L, ref), 0);
  for (size_t i = 0; i < n * OUT; i++) got[i] = NAN;
  assert_int_equal(be->forward(be, b->ids, b->attn, b->B, b->L, got), 0);
  for (size_t r = 0; r < n; r++) {
    const float *x = ref + r * OUT, *y = got + r * OUT;
    double dot = 0, nx = 0, ny = 0, mx = 0;
    for (int d = 0; d < OUT; d++) {
      dot += (double)x[d] * y[d];
      nx += (double)x[d] * x[d];
      ny += (double)y[d] * y[d];
      mx = fmax(mx, fabs((double)x[d] - y[d]));
    }
    double cosv = dot / sqrt(nx * ny);
    worst_cos = fmin(worst_cos, cosv);
    worst_abs = fmax(worst_abs, mx);
    if (!(cosv >= 0.9999 && mx <= 1e-4))
      fail_msg("%dx%d row %zu (seq %zu pos %zu): cosine %.7f max abs diff %.3g", b->B, b->L, r,
               r / b->L, r % b->L, cosv, mx);
    assert_true(fabs(ny - 1.0) < 1e-4);   /* L2-normalised */
  }
  free(ref);
  free(got);
}

static void forward_matches_reference(void **state)
{
  struct tiny t;
  tiny_init(&t, 1);
  enum { NCASES = 5 };
  struct batch cases[NCASES];
  {
    enum mask_kind k[1] = { M_FULL };
    batch_init(&cases[0], 1, 1, k, NULL, 100);
  }
  {
    enum mask_kind k[1] = { M_QUERY };
    int lens[1] = { 12 };
    batch_init(&cases[1], 1, 32, k, lens, 101);
  }
  {
    enum mask_kind k[3] = { M_PAD, M_PAD, M_PAD };
    int lens[3] = { 17, 9, 2 };
    batch_init(&cases[2], 3, 17, k, lens, 102);
  }
  {
    enum mask_kind k[4] = { M_FULL, M_QUERY, M_HOLES, M_NONE };
    int lens[4] = { 64, 40, 0, 0 };
    batch_init(&cases[3], 4, 64, k, lens, 103);
  }
  {   /* the longest sequence the model takes: attention scratch at its bound */
    enum mask_kind k[2] = { M_FULL, M_QUERY };
    int lens[2] = { MAXPOS, 50 };
    batch_init(&cases[4], 2, MAXPOS, k, lens, 104);
  }
  const int threads[3] = { 0, 2, 3 };   /* 0: no pool */
  for (int p = 0; p < 3; p++) {
    jp_pool *pool = NULL;
    if (threads[p]) assert_int_equal(jp_pool_create(threads[p], &pool), 0);
    struct bert_backend *be = NULL;
    assert_int_equal(bert_cpu_create(&t.w, 256, pool, &be), 0);
    assert_string_equal(be->name, "cpu");
    assert_int_equal(be->max_tokens, 256);
    for (int c = 0; c < NCASES; c++) check_against_ref(&t, be, &cases[c]);
    bert_backend_destroy(be);
    jp_pool_destroy(pool);
  }
  print_message("worst row: cosine %.8f, max abs diff %.3g\n", worst_cos, worst_abs);
  for (int c = 0; c < NCASES; c++) batch_free(&cases[c]);
  free(t.mem);
}

/* The same with OpenBLAS told to use one thread: bert_cpu then splits each
 * large GEMM over its own pool (blas_item), a different code path. The
 * thread count is restored in the teardown, which runs even on failure. */
static int saved_blas_threads;

static int blas1_setup(void **state)
{
  (void)state;
  saved_blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  return 0;
}

static int blas1_teardown(void **state)
{
  (void)state;
  openblas_set_num_threads(saved_blas_threads);
  return 0;
}

/* Batches over 1024 tokens run attention in groups of whole sequences
 * (bert_cpu.c ATT_GROUP_TOKENS): 20 x 64 makes groups of 16 and 4
 * sequences, 13 x 80 groups of 12 and 1. */
static void grouped_batches_match_reference(void **state)
{
  (void)state;
  struct tiny t;
  tiny_init(&t, 5);
  jp_pool *pool;
  assert_int_equal(jp_pool_create(2, &pool), 0);
  struct bert_backend *be;
  assert_int_equal(bert_cpu_create(&t.w, 2048, pool, &be), 0);
  enum mask_kind k[20];
  int lens[20];
  for (int i = 0; i < 20; i++) {
    k[i] = i % 3 == 0 ? M_FULL : i % 3 == 1 ? M_PAD : M_QUERY;
    lens[i] = 5 + 3 * i;
  }
  struct batch b;
  batch_init(&b, 20, 64, k, lens, 9);
  check_against_ref(&t, be, &b);
  batch_free(&b);
  batch_init(&b, 13, 80, k, lens, 10);
  check_against_ref(&t, be, &b);
  batch_free(&b);
  bert_backend_destroy(be);
  jp_pool_destroy(pool);
  free(t.mem);
}

/* A padded sequence in a batch encodes like the same sequence alone (its
 * real positions), and two calls give bit-identical results. */
static void padding_invariant_and_deterministic(void **state)
{
  (void)state;
  struct tiny t;
  tiny_init(&t, 2);
  jp_pool *pool;
  assert_int_equal(jp_pool_create(2, &pool), 0);
  struct bert_backend *be;
  assert_int_equal(bert_cpu_create(&t.w, 512, pool, &be), 0);
  enum mask_kind k[3] = { M_PAD, M_PAD, M_PAD };
  int lens[3] = { 30, 11, 23 };
  struct batch b;
  batch_init(&b, 3, 30, k, lens, 7);
  float *all = malloc(sizeof(float) * 90 * OUT), *again = malloc(sizeof(float) * 90 * OUT);
  float *one = malloc(sizeof(float) * 30 * OUT);
  assert_int_equal(be->forward(be, b.ids, b.attn, 3, 30, all), 0);
  assert_int_equal(be->forward(be, b.ids, b.attn, 3, 30, again), 0);
  assert_memory_equal(all, again, sizeof(float) * 90 * OUT);
  for (int s = 0; s < 3; s++) {
    assert_int_equal(be->forward(be, b.ids + s * 30, b.attn + s * 30, 1, lens[s], one), 0);
    for (int i = 0; i < lens[s] * OUT; i++)
      if (!(fabsf(one[i] - all[(size_t)s * 30 * OUT + i]) <= 1e-5f))
        fail_msg("seq %d elem %d: alone %.8g batched %.8g", s, i, one[i],
                 all[(size_t)s * 30 * OUT + i]);
  }
  free(all);
  free(again);
  free(one);
  batch_free(&b);
  bert_backend_destroy(be);
  jp_pool_destroy(pool);
  free(t.mem);
}

static void rejects_bad_input(void **state)
{
  (void)state;
  struct tiny t;
  tiny_init(&t, 3);
  struct bert_backend *be = NULL;
  int32_t ids[100] = { 0 };   /* 100 >= MAXPOS + 1: room for every call below */
  uint8_t attn[100];
  float out[100 * OUT];
  memset(attn, 1, sizeof attn);

  assert_int_equal(bert_cpu_create(&t.w, 0, NULL, &be), JP_EINVAL);
  assert_null(be);
  assert_int_equal(bert_cpu_create(NULL, 16, NULL, &be), JP_EINVAL);
  struct bert_weights bad = t.w;
  bad.cfg.heads = 5;   /* 64 % 5 != 0 */
  assert_int_equal(bert_cpu_create(&bad, 16, NULL, &be), JP_EINVAL);
  bad = t.w;
  bad.proj_w = NULL;
  assert_int_equal(bert_cpu_create(&bad, 16, NULL, &be), JP_EINVAL);
  struct bert_layer_weights badl[LAYERS];
  memcpy(badl, t.layer, sizeof badl);
  badl[1].o_b = NULL;
  bad = t.w;
  bad.layer = badl;
  assert_int_equal(bert_cpu_create(&bad, 16, NULL, &be), JP_EINVAL);
  assert_null(be);

  assert_int_equal(bert_cpu_create(&t.w, 100, NULL, &be), 0);
  assert_int_equal(be->forward(be, ids, attn, 1, MAXPOS + 1, out), JP_EINVAL);   /* > positions */
  assert_int_equal(be->forward(be, ids, attn, 2, 51, out), JP_ETOOBIG);          /* 102 > 100 */
  assert_int_equal(be->forward(be, ids, attn, 0, 5, out), JP_EINVAL);
  assert_int_equal(be->forward(be, ids, attn, 1, 0, out), JP_EINVAL);
  ids[3] = VOCAB;
  assert_int_equal(be->forward(be, ids, attn, 1, 8, out), JP_EINVAL);
  ids[3] = -1;
  assert_int_equal(be->forward(be, ids, attn, 1, 8, out), JP_EINVAL);
  ids[3] = 7;
  assert_int_equal(be->forward(be, ids, attn, 1, 8, out), 0);
  assert_int_equal(be->forward(be, ids, attn, 2, 50, out), 0);                  /* exactly 100 */
  bert_backend_destroy(be);
  bert_backend_destroy(NULL);
  free(t.mem);
}

/* Every allocation in create can fail; each failure is JP_ENOMEM with no
 * backend and nothing leaked (run under ASan to see leaks). */
static void create_survives_oom(void **state)
{
  (void)state;
  struct tiny t;
  tiny_init(&t, 4);
  jp_pool *pool;
  assert_int_equal(jp_pool_create(2, &pool), 0);
  int failures = 0;
  for (long n = 1;; n++) {
    struct bert_backend *be = NULL;
    jp_mem_fail_after(n);
    int rc = bert_cpu_create(&t.w, 64, pool, &be);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      bert_backend_destroy(be);
      assert_true(made < n);   /* succeeded without reaching the armed failure */
      break;
    }
    assert_int_equal(rc, JP_ENOMEM);
    assert_null(be);
    failures++;
  }
  assert_true(failures >= 3);
  jp_pool_destroy(pool);
  free(t.mem);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(forward_matches_reference),
    { "forward_matches_reference_blas1", forward_matches_reference, blas1_setup, blas1_teardown,
      NULL },
    cmocka_unit_test(grouped_batches_match_reference),
    cmocka_unit_test(padding_invariant_and_deterministic),
    cmocka_unit_test(rejects_bad_input),
    cmocka_unit_test(create_survives_oom),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
