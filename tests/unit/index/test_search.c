/* test_search.c: PLAID and exhaustive search over a jp_part (part.h):
 * parameter defaults and validation, exhaustive = brute-force MaxSim on the
 * stored vectors, PLAID recall against exhaustive (defaults and an accurate
 * setting), writes visible at once, document-id restriction and metadata
 * filters, fewer than k only when fewer passages can match, widening when
 * ncells = 1 finds too few, compaction, ties by pid, thread safety, OOM. */
#include "index/maxsim.h"
#include "index/part.h"
#include "index_test_util.h"
#include "util/arena.h"
#include "util/err.h"
#include "util/pool.h"

#include <pthread.h>

#define DIM 128
#define NQ 32

static struct itu_corpus g_corpus;
static struct jp_codec g_codec;
static jp_pool *g_pool;

static int setup(void **state)
{
  (void)state;
  itu_corpus_make(&g_corpus, DIM, 256, 12000, 15, 0.8f, 7);
  itu_codec(&g_corpus, 2, 64, 8, &g_codec);
  return jp_pool_create(2, &g_pool);
}

static int teardown(void **state)
{
  (void)state;
  jp_pool_destroy(g_pool);
  jp_codec_fini(&g_codec);
  itu_corpus_free(&g_corpus);
  return 0;
}

static jp_part *make_part(int npass, int per_doc)
{
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  for (int p = 0; p < npass; p++) assert_int_equal(itu_add(part, &g_corpus, p, 100 + (uint64_t)p, per_doc, NULL), 0);
  return part;
}

static int search(const jp_part *part, const float *Q, const struct jp_search_params *sp,
                  const struct jp_restrict *r, struct jp_hit *hits)
{
  struct jp_arena a;
  int n = -1;
  jp_arena_init(&a, 0, 0);
  int rc = jp_part_search(part, Q, NQ, sp, r, g_pool, &a, hits, &n);
  jp_arena_fini(&a);
  assert_int_equal(rc, 0);
  return n;
}

static int search_k(const jp_part *part, const float *Q, int k, int exhaustive,
                    const struct jp_restrict *r, struct jp_hit *hits)
{
  struct jp_search_params sp;
  jp_search_params_init(&sp, k);
  sp.exhaustive = exhaustive;
  return search(part, Q, &sp, r, hits);
}

static void params_defaults_and_checks(void **state)
{
  (void)state;
  struct jp_search_params p;
  jp_search_params_init(&p, 10);
  assert_int_equal(p.ncells, 1);
  assert_float_equal(p.centroid_score_threshold, 0.5, 1e-7);
  assert_int_equal(p.ndocs, 256);
  jp_search_params_init(&p, 11);
  assert_int_equal(p.ncells, 2);
  assert_float_equal(p.centroid_score_threshold, 0.45, 1e-7);
  assert_int_equal(p.ndocs, 1024);
  jp_search_params_init(&p, 100);
  assert_int_equal(p.ndocs, 1024);
  jp_search_params_init(&p, 101);
  assert_int_equal(p.ncells, 4);
  assert_float_equal(p.centroid_score_threshold, 0.4, 1e-7);
  assert_int_equal(p.ndocs, 4096);
  jp_search_params_init(&p, 1000);
  assert_int_equal(p.ndocs, 4000 > 4096 ? 4000 : 4096);
  /* resolve fills only what is left at its marker. */
  p.k = 5;
  p.ncells = 3;
  p.centroid_score_threshold = NAN;
  p.ndocs = 0;
  jp_search_params_resolve(&p);
  assert_int_equal(p.ncells, 3);
  assert_float_equal(p.centroid_score_threshold, 0.5, 1e-7);
  assert_int_equal(p.ndocs, 256);
  assert_int_equal(jp_search_params_check(&p), 0);
  struct jp_search_params bad = p;
  bad.k = 0;
  assert_int_equal(jp_search_params_check(&bad), JP_EINVAL);
  bad.k = JP_MAX_K + 1;
  assert_int_equal(jp_search_params_check(&bad), JP_EINVAL);
  bad = p;
  bad.ncells = -1;
  assert_int_equal(jp_search_params_check(&bad), JP_EINVAL);
  bad = p;
  bad.centroid_score_threshold = INFINITY;
  assert_int_equal(jp_search_params_check(&bad), JP_EINVAL);
  bad = p;
  bad.ndocs = JP_MAX_NDOCS + 1;
  assert_int_equal(jp_search_params_check(&bad), JP_EINVAL);
  bad = p;
  bad.exhaustive = 2;
  assert_int_equal(jp_search_params_check(&bad), JP_EINVAL);
}

/* Exhaustive search = MaxSim (floored) of the stored vectors, ranked by
 * score then pid. */
static void exhaustive_is_brute_force(void **state)
{
  (void)state;
  jp_part *part = make_part(300, 1);
  uint64_t rng = 1;
  float Q[NQ * DIM];
  itu_query(&g_corpus, 17, NQ, 0.8f, &rng, Q);
  struct jp_hit hits[20];
  int n = search_k(part, Q, 20, 1, NULL, hits);
  assert_int_equal(n, 20);
  float scores[300], buf[64 * DIM];
  for (int p = 0; p < 300; p++) {
    int len;
    assert_int_equal(jp_part_passage_vectors(part, 100 + (uint64_t)p, buf, sizeof buf / sizeof buf[0], &len), 0);
    scores[p] = jp_maxsim_ref(Q, NQ, buf, len, DIM);
  }
  for (int i = 0; i < n; i++) {
    int p = (int)hits[i].pid - 100;
    assert_float_equal(hits[i].score, scores[p], 1e-4);
    /* Nothing outside the top 20 scores higher than the 20th. */
    if (i > 0) assert_true(hits[i - 1].score >= hits[i].score);
  }
  int above = 0;
  for (int p = 0; p < 300; p++) above += scores[p] > hits[n - 1].score + 1e-4f;
  assert_true(above <= n - 1);
  jp_part_destroy(part);
}

/* Recall@10 of PLAID against exhaustive over queries drawn around random
 * passages. Defaults: high; an accurate setting: essentially identical. */
static double recall(const jp_part *part, const struct jp_search_params *sp, int nqueries, int k)
{
  uint64_t rng = 12345;
  double total = 0;
  struct jp_hit a[100], b[100];
  float Q[NQ * DIM];
  for (int q = 0; q < nqueries; q++) {
    itu_query(&g_corpus, (int)(jp_rand64(&rng) % 12000), NQ, 1.2f, &rng, Q);
    int na = search(part, Q, sp, NULL, a);
    int nb = search_k(part, Q, k, 1, NULL, b);
    assert_int_equal(na, k);
    assert_int_equal(nb, k);
    int hit = 0;
    for (int i = 0; i < k; i++)
      for (int j = 0; j < k; j++) hit += a[i].pid == b[j].pid;
    total += (double)hit / k;
  }
  return total / nqueries;
}

static void plaid_recall_against_exhaustive(void **state)
{
  (void)state;
  jp_part *part = make_part(12000, 1);
  struct jp_search_params sp;
  jp_search_params_init(&sp, 10);
  double r_default = recall(part, &sp, 40, 10);
  sp.ncells = 4;
  sp.centroid_score_threshold = 0.4f;
  sp.ndocs = 4096;
  double r_accurate = recall(part, &sp, 40, 10);
  jp_search_params_init(&sp, 100);
  double r_100 = recall(part, &sp, 10, 100);
  print_message("recall@10 default %.3f accurate %.3f; recall@100 default %.3f\n", r_default,
                r_accurate, r_100);
  assert_true(r_default >= 0.9);
  assert_true(r_accurate >= 0.99);
  assert_true(r_100 >= 0.9);
  jp_part_destroy(part);
}

/* A passage made of the query's own tokens wins at once; removing its
 * document removes it at once. */
static void writes_are_visible_at_once(void **state)
{
  (void)state;
  jp_part *part = make_part(500, 1);
  uint64_t rng = 3;
  float Q[NQ * DIM];
  itu_query(&g_corpus, 42, NQ, 0.8f, &rng, Q);
  uint32_t codes[NQ];
  uint8_t packed[NQ * DIM * 2 / 8];
  assert_int_equal(jp_codec_compress(&g_codec, Q, NQ, NULL, codes, packed), 0);
  assert_int_equal(jp_part_add(part, 9999, "mirror", 6, NULL, NQ, codes, packed), 0);
  struct jp_hit hits[10];
  int n = search_k(part, Q, 10, 0, NULL, hits);
  assert_int_equal(n, 10);
  assert_int_equal(hits[0].pid, 9999);
  assert_int_equal(jp_part_remove_doc(part, "mirror", 6, NULL), 0);
  n = search_k(part, Q, 10, 0, NULL, hits);
  for (int i = 0; i < n; i++) assert_true(hits[i].pid != 9999);
  n = search_k(part, Q, 10, 1, NULL, hits);
  for (int i = 0; i < n; i++) assert_true(hits[i].pid != 9999);
  jp_part_destroy(part);
}

static int all_in(const struct jp_hit *h, int n, uint64_t lo, uint64_t hi)
{
  for (int i = 0; i < n; i++)
    if (h[i].pid < lo || h[i].pid >= hi) return 0;
  return 1;
}

/* doc_ids restriction: only those documents' passages, exactly scored. */
static void doc_id_restriction(void **state)
{
  (void)state;
  jp_part *part = make_part(400, 4);     /* 100 documents of 4 passages */
  uint64_t rng = 5;
  float Q[NQ * DIM];
  itu_query(&g_corpus, 7, NQ, 0.8f, &rng, Q);
  struct jp_hit hits[50], ex[50];
  const char *ids[] = { "doc10", "doc11", "nope", "doc10" };
  struct jp_restrict r = { ids, 4, NULL, 0 };
  for (int exh = 0; exh <= 1; exh++) {
    int n = search_k(part, Q, 50, exh, &r, hits);
    assert_int_equal(n, 8);                  /* duplicates and unknown ids ignored */
    assert_true(all_in(hits, n, 140, 148));
  }
  /* One document: all its passages, same order as an exhaustive search of it. */
  r.n_doc_ids = 1;
  int n = search_k(part, Q, 10, 0, &r, hits);
  assert_int_equal(n, 4);
  int m = search_k(part, Q, 10, 1, &r, ex);
  assert_int_equal(m, 4);
  for (int i = 0; i < 4; i++) assert_int_equal(hits[i].pid, ex[i].pid);
  /* Only unknown ids, or an empty list: nothing. */
  const char *none[] = { "nope" };
  struct jp_restrict r2 = { none, 1, NULL, 0 };
  assert_int_equal(search_k(part, Q, 10, 0, &r2, hits), 0);
  r2.n_doc_ids = 0;
  assert_int_equal(search_k(part, Q, 10, 0, &r2, hits), 0);
  /* A large restriction (more than ndocs passages) goes through PLAID with
   * the candidates filtered: results only from allowed documents, and
   * still k of them. */
  const char *many[80];
  char names[80][16];
  for (int i = 0; i < 80; i++) {
    snprintf(names[i], sizeof names[i], "doc%d", i);
    many[i] = names[i];
  }
  struct jp_restrict r3 = { many, 80, NULL, 0 };
  n = search_k(part, Q, 10, 0, &r3, hits);
  assert_int_equal(n, 10);
  assert_true(all_in(hits, n, 100, 420));
  jp_part_destroy(part);
}

/* Metadata filters: strings, integers, reals, booleans; AND of filters;
 * with doc ids; matching nothing or one document. */
static void metadata_filters(void **state)
{
  (void)state;
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  char meta[128];
  for (int p = 0; p < 600; p++) {
    int d = p / 2;
    snprintf(meta, sizeof meta, "{\"lang\":\"%s\",\"year\":%d,\"score\":%s,\"ok\":%s,\"tags\":[1]}",
             d % 3 == 0 ? "ja" : "en", 2000 + d % 5, d % 2 ? "0.5" : "1.0", d % 4 == 0 ? "true" : "false");
    assert_int_equal(itu_add(part, &g_corpus, p, 100 + (uint64_t)p, 2, meta), 0);
  }
  uint64_t rng = 9;
  float Q[NQ * DIM];
  itu_query(&g_corpus, 3, NQ, 0.8f, &rng, Q);
  struct jp_hit hits[1000];
  struct jp_filter f[2];
  struct jp_restrict r = { NULL, 0, f, 1 };
  struct { const char *k, *v; int expect; } cases[] = {
    { "lang", "ja", 200 },   { "lang", "en", 400 },  { "year", "2003", 120 },
    { "score", "0.5", 300 }, { "score", "1.0", 300 }, { "ok", "true", 150 },
    { "ok", "false", 450 },  { "lang", "fr", 0 },    { "year", "2003.0", 0 },
    { "tags", "1", 0 },      { "nokey", "x", 0 },     { "score", "1", 0 },
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    f[0].key = cases[c].k;
    f[0].value = cases[c].v;
    int n = search_k(part, Q, 1000, 1, &r, hits);
    if (n != cases[c].expect) fail_msg("filter %s=%s: %d hits, expected %d", cases[c].k, cases[c].v, n, cases[c].expect);
    /* PLAID (k = 10) returns min(10, matching) of the same set. */
    int m = search_k(part, Q, 10, 0, &r, hits);
    assert_int_equal(m, cases[c].expect < 10 ? cases[c].expect : 10);
  }
  /* AND: lang=ja and ok=true -> documents d with d%3==0 and d%4==0 (25). */
  f[0].key = "lang";
  f[0].value = "ja";
  f[1].key = "ok";
  f[1].value = "true";
  r.n_filters = 2;
  int n = search_k(part, Q, 1000, 1, &r, hits);
  assert_int_equal(n, 50);
  /* One matching document. */
  const char *ids[] = { "doc12", "doc13" };
  r.doc_ids = ids;
  r.n_doc_ids = 2;
  n = search_k(part, Q, 10, 0, &r, hits);
  assert_int_equal(n, 2);
  assert_true(all_in(hits, n, 124, 126));
  jp_part_destroy(part);
}

/* Fewer than k results only when fewer passages exist (empty passages
 * never match). */
static void tiny_partitions(void **state)
{
  (void)state;
  const int sizes[] = { 1, 3, 9 };
  uint64_t rng = 2;
  float Q[NQ * DIM];
  itu_query(&g_corpus, 0, NQ, 0.8f, &rng, Q);
  struct jp_hit hits[10];
  for (size_t s = 0; s < 3; s++) {
    jp_part *part = make_part(sizes[s], 1);
    assert_int_equal(jp_part_add(part, 1, "empty", 5, NULL, 0, NULL, NULL), 0);
    for (int exh = 0; exh <= 1; exh++) {
      int n = search_k(part, Q, 10, exh, NULL, hits);
      assert_int_equal(n, sizes[s]);
      for (int i = 0; i < n; i++) assert_true(hits[i].pid != 1);
    }
    jp_part_destroy(part);
  }
  /* An empty partition. */
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  assert_int_equal(search_k(part, Q, 10, 0, NULL, hits), 0);
  jp_part_destroy(part);
}

/* Every passage sits in its own cell, so ncells = 1 reaches one or two
 * passages; the search widens and still returns k. */
static void widening_returns_k(void **state)
{
  (void)state;
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  uint64_t rng = 4;
  float v[3 * DIM];
  for (int t = 0; t < 40; t++) {
    for (int i = 0; i < 3; i++) itu_near(g_corpus.topics + (size_t)t * DIM, 0.05f, DIM, &rng, v + i * DIM);
    uint32_t codes[3];
    uint8_t packed[3 * DIM * 2 / 8];
    assert_int_equal(jp_codec_compress(&g_codec, v, 3, NULL, codes, packed), 0);
    for (int i = 0; i < 3; i++) assert_int_equal(codes[i], (uint32_t)t);
    char id[16];
    snprintf(id, sizeof id, "t%d", t);
    assert_int_equal(jp_part_add(part, (uint64_t)t, id, strlen(id), NULL, 3, codes, packed), 0);
  }
  float Q[NQ * DIM];
  for (int i = 0; i < NQ; i++) itu_near(g_corpus.topics, 0.05f, DIM, &rng, Q + i * DIM);
  struct jp_hit hits[10], ex[10];
  struct jp_search_params sp;
  jp_search_params_init(&sp, 10);
  assert_int_equal(sp.ncells, 1);
  int n = search(part, Q, &sp, NULL, hits);
  assert_int_equal(n, 10);
  assert_int_equal(hits[0].pid, 0);
  int m = search_k(part, Q, 10, 1, NULL, ex);
  assert_int_equal(m, 10);
  assert_int_equal(ex[0].pid, 0);
  jp_part_destroy(part);
}

static void compaction_preserves_results(void **state)
{
  (void)state;
  jp_part *part = make_part(1000, 2);
  char id[16];
  for (int d = 0; d < 500; d += 3) {
    snprintf(id, sizeof id, "doc%d", d);
    assert_int_equal(jp_part_remove_doc(part, id, strlen(id), NULL), 0);
  }
  uint64_t rng = 6;
  float Q[NQ * DIM];
  struct jp_hit a[30], b[30];
  int na[5], nb;
  struct jp_hit before[5][30];
  for (int q = 0; q < 5; q++) {
    itu_query(&g_corpus, q * 100 + 1, NQ, 0.8f, &rng, Q);
    na[q] = search_k(part, Q, 30, 0, NULL, a);
    memcpy(before[q], a, sizeof a);
  }
  assert_int_equal(jp_part_compact(part), 0);
  rng = 6;
  for (int q = 0; q < 5; q++) {
    itu_query(&g_corpus, q * 100 + 1, NQ, 0.8f, &rng, Q);
    nb = search_k(part, Q, 30, 0, NULL, b);
    assert_int_equal(na[q], nb);
    for (int i = 0; i < nb; i++) {
      assert_int_equal(before[q][i].pid, b[i].pid);
      assert_float_equal(before[q][i].score, b[i].score, 1e-6);
    }
  }
  jp_part_destroy(part);
}

/* Equal scores rank by smaller pid, whatever the insertion order. */
static void ties_break_by_pid(void **state)
{
  (void)state;
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  uint32_t codes[8];
  uint8_t packed[8 * DIM * 2 / 8];
  assert_int_equal(jp_codec_compress(&g_codec, g_corpus.vecs[0], 8, NULL, codes, packed), 0);
  const uint64_t pids[] = { 50, 7, 30, 8 };
  for (int i = 0; i < 4; i++) {
    char id[8];
    snprintf(id, sizeof id, "d%d", i);
    assert_int_equal(jp_part_add(part, pids[i], id, strlen(id), NULL, 8, codes, packed), 0);
  }
  float Q[NQ * DIM];
  uint64_t rng = 1;
  itu_query(&g_corpus, 0, NQ, 0.8f, &rng, Q);
  struct jp_hit hits[4];
  for (int exh = 0; exh <= 1; exh++) {
    int n = search_k(part, Q, 4, exh, NULL, hits);
    assert_int_equal(n, 4);
    assert_int_equal(hits[0].pid, 7);
    assert_int_equal(hits[1].pid, 8);
    assert_int_equal(hits[2].pid, 30);
    assert_int_equal(hits[3].pid, 50);
    assert_true(hits[0].score == hits[3].score);
  }
  jp_part_destroy(part);
}

struct thread_arg {
  const jp_part *part;
  const float *Q;
  struct jp_hit hits[10];
  int n;
};

static void *search_thread(void *v)
{
  struct thread_arg *t = v;
  struct jp_arena a;
  struct jp_search_params sp;
  jp_arena_init(&a, 0, 0);
  jp_search_params_init(&sp, 10);
  for (int i = 0; i < 20; i++) {
    jp_arena_reset(&a);
    if (jp_part_search(t->part, t->Q, NQ, &sp, NULL, g_pool, &a, t->hits, &t->n) != 0) t->n = -1;
  }
  jp_arena_fini(&a);
  return NULL;
}

/* Concurrent searches on one part and one pool give the serial answer. */
static void concurrent_searches_agree(void **state)
{
  (void)state;
  jp_part *part = make_part(800, 1);
  float Q[NQ * DIM];
  uint64_t rng = 8;
  itu_query(&g_corpus, 77, NQ, 0.8f, &rng, Q);
  struct jp_hit want[10];
  int n = search_k(part, Q, 10, 0, NULL, want);
  struct thread_arg ta[3];
  pthread_t th[3];
  for (int i = 0; i < 3; i++) {
    ta[i].part = part;
    ta[i].Q = Q;
    assert_int_equal(pthread_create(&th[i], NULL, search_thread, &ta[i]), 0);
  }
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(ta[i].n, n);
    for (int j = 0; j < n; j++) assert_int_equal(ta[i].hits[j].pid, want[j].pid);
  }
  jp_part_destroy(part);
}

static void bad_queries_and_scratch_limits(void **state)
{
  (void)state;
  jp_part *part = make_part(200, 1);
  float Q[NQ * DIM];
  uint64_t rng = 8;
  itu_query(&g_corpus, 1, NQ, 0.8f, &rng, Q);
  struct jp_hit hits[10];
  struct jp_search_params sp;
  struct jp_arena a;
  int n;
  jp_search_params_init(&sp, 10);
  jp_arena_init(&a, 0, 0);
  assert_int_equal(jp_part_search(part, Q, 0, &sp, NULL, NULL, &a, hits, &n), JP_EINVAL);
  assert_int_equal(jp_part_search(part, Q, JP_MAX_QUERY_TOKENS + 1, &sp, NULL, NULL, &a, hits, &n), JP_EINVAL);
  Q[5] = NAN;
  assert_int_equal(jp_part_search(part, Q, NQ, &sp, NULL, NULL, &a, hits, &n), JP_EINVAL);
  Q[5] = 0.0f;
  sp.k = 0;
  assert_int_equal(jp_part_search(part, Q, NQ, &sp, NULL, NULL, &a, hits, &n), JP_EINVAL);
  sp.k = 10;
  struct jp_filter f = { NULL, "x" };
  struct jp_restrict r = { NULL, 0, &f, 1 };
  assert_int_equal(jp_part_search(part, Q, NQ, &sp, &r, NULL, &a, hits, &n), JP_EINVAL);
  jp_arena_fini(&a);
  /* A scratch arena too small for the query is an error, not a crash. */
  for (size_t limit = 1024; limit <= 4096 * 1024; limit *= 4) {
    jp_arena_init(&a, 0, limit);
    int rc = jp_part_search(part, Q, NQ, &sp, NULL, g_pool, &a, hits, &n);
    assert_true(rc == 0 || rc == JP_ENOMEM);
    if (rc == 0) assert_int_equal(n, 10);
    jp_arena_fini(&a);
  }
  jp_part_destroy(part);
}

/* More than 65536 centroids: codes are stored as uint32. PLAID and
 * exhaustive agree with brute force on the stored vectors; compaction and
 * per-passage vectors work the same. */
static void wide_codes_above_65536_centroids(void **state)
{
  (void)state;
  const int dim = 8, nc = 70000, npass = 300, len = 6, nq = 4;
  uint64_t rng = 77;
  struct jp_codec c;
  assert_int_equal(jp_codec_init(&c, dim, 2, nc), 0);
  itu_unit_rows(c.centroids, nc, dim, &rng);
  for (int i = 0; i < 3; i++) c.cutoffs[i] = -0.02f + 0.02f * (float)i;
  for (int i = 0; i < 4; i++) c.weights[i] = -0.03f + 0.02f * (float)i;
  jp_part *part;
  assert_int_equal(jp_part_create(&c, &part), 0);
  float v[6 * 8];
  for (int p = 0; p < npass; p++) {
    for (int i = 0; i < len; i++)
      itu_near(c.centroids + (size_t)(65536 + (p * 7 + i) % 4000) * dim, 0.1f, dim, &rng, v + i * dim);
    uint32_t codes[6];
    uint8_t packed[6 * 2];
    assert_int_equal(jp_codec_compress(&c, v, (size_t)len, NULL, codes, packed), 0);
    char id[16];
    snprintf(id, sizeof id, "w%d", p);
    assert_int_equal(jp_part_add(part, (uint64_t)p, id, strlen(id), NULL, len, codes, packed), 0);
  }
  /* Most codes are above 65535 (the passages sit near those centroids). */
  int high = 0;
  for (int p = 0; p < npass; p++) {
    float buf[6 * 8];
    int l;
    assert_int_equal(jp_part_passage_vectors(part, (uint64_t)p, buf, sizeof buf / sizeof buf[0], &l), 0);
    uint32_t codes[6];
    assert_int_equal(jp_codec_assign(&c, buf, (size_t)l, NULL, codes), 0);
    for (int i = 0; i < l; i++) high += codes[i] >= 65536;
  }
  assert_true(high > npass * len / 2);
  float Q[4 * 8];
  for (int i = 0; i < nq; i++) itu_near(c.centroids + (size_t)(65536 + i) * dim, 0.1f, dim, &rng, Q + i * dim);
  struct jp_arena a;
  jp_arena_init(&a, 0, 0);
  struct jp_hit h1[10], h2[10];
  int n1, n2;
  struct jp_search_params sp;
  jp_search_params_init(&sp, 10);
  sp.ncells = 8;
  assert_int_equal(jp_part_search(part, Q, nq, &sp, NULL, g_pool, &a, h1, &n1), 0);
  sp.exhaustive = 1;
  assert_int_equal(jp_part_search(part, Q, nq, &sp, NULL, g_pool, &a, h2, &n2), 0);
  assert_int_equal(n1, 10);
  assert_int_equal(n2, 10);
  float best = -1;
  for (int p = 0; p < npass; p++) {
    float buf[6 * 8];
    int l;
    assert_int_equal(jp_part_passage_vectors(part, (uint64_t)p, buf, sizeof buf / sizeof buf[0], &l), 0);
    float sc = jp_maxsim_ref(Q, nq, buf, l, dim);
    if (sc > best) best = sc;
  }
  assert_float_equal(h2[0].score, best, 1e-5);
  assert_int_equal(h1[0].pid, h2[0].pid);
  assert_int_equal(jp_part_remove_doc(part, "w0", 2, NULL), 0);
  assert_int_equal(jp_part_compact(part), 0);
  assert_int_equal(jp_part_search(part, Q, nq, &sp, NULL, g_pool, &a, h2, &n2), 0);
  assert_int_equal(n2, 10);
  for (int i = 0; i < n2; i++) assert_true(h2[i].pid != 0);
  jp_arena_fini(&a);
  jp_part_destroy(part);
  jp_codec_fini(&c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(params_defaults_and_checks),
    cmocka_unit_test(exhaustive_is_brute_force),
    cmocka_unit_test(plaid_recall_against_exhaustive),
    cmocka_unit_test(writes_are_visible_at_once),
    cmocka_unit_test(doc_id_restriction),
    cmocka_unit_test(metadata_filters),
    cmocka_unit_test(tiny_partitions),
    cmocka_unit_test(widening_returns_k),
    cmocka_unit_test(compaction_preserves_results),
    cmocka_unit_test(ties_break_by_pid),
    cmocka_unit_test(concurrent_searches_agree),
    cmocka_unit_test(bad_queries_and_scratch_limits),
    cmocka_unit_test(wide_codes_above_65536_centroids),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
