/* test_text_threads.c: one shared jp_tok, four threads each with its own
 * ctx, tokenising the JSQuAD corpus at the same time: every result equals
 * the single-threaded one. argv[1]: unidic or ipadic (77 if absent). */
#include "text_test.h"

#include <pthread.h>

#define N_THREADS 4
#define MAX_PARAS 2000

static jp_tok *g_tok;
static const char *g_para[MAX_PARAS];
static size_t g_plen[MAX_PARAS];
static int g_np;
/* Single-threaded results: doc ids + keep, and a hash of ids + offsets. */
static int32_t g_doc[MAX_PARAS][256];
static uint8_t g_keep[MAX_PARAS][256];
static int g_ndoc[MAX_PARAS];
static uint64_t g_sig[MAX_PARAS];

static uint64_t signature(jp_tok_ctx *c, const char *t, size_t len, int *rc)
{
  static __thread int32_t ids[8192];
  static __thread uint32_t offs[8192];
  size_t n = 0;
  *rc = jp_tok_ids(c, t, len, ids, 8192, &n, offs);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n && i < 8192; i++)
    h = (h ^ (uint64_t)ids[i] ^ ((uint64_t)offs[i] << 32)) * 1099511628211ull;   /* FNV-1a */
  return h ^ n;
}

struct worker {
  int id;
  int mismatches;
  int errors;
};

static void *run(void *arg)
{
  struct worker *w = arg;
  jp_tok_ctx *c = NULL;
  if (jp_tok_ctx_create(g_tok, &c) != 0) {
    w->errors++;
    return NULL;
  }
  /* Each thread starts at a different place so they work on different
   * texts at the same moment. */
  for (int k = 0; k < g_np; k++) {
    int i = (k + w->id * g_np / N_THREADS) % g_np;
    int32_t ids[256];
    uint8_t keep[256];
    int n = 0, tr = 0, rc;
    if (jp_tok_doc(c, g_para[i], g_plen[i], ids, keep, &n, &tr) != 0) w->errors++;
    if (n != g_ndoc[i] || memcmp(ids, g_doc[i], (size_t)n * sizeof *ids) != 0 ||
        memcmp(keep, g_keep[i], (size_t)n) != 0)
      w->mismatches++;
    if (signature(c, g_para[i], g_plen[i], &rc) != g_sig[i] || rc != 0) w->mismatches++;
  }
  jp_tok_ctx_destroy(c);
  return NULL;
}

static void threads_agree_with_single_thread(void **state)
{
  (void)state;
  jp_tok_ctx *c = NULL;
  assert_int_equal(jp_tok_ctx_create(g_tok, &c), 0);
  for (int i = 0; i < g_np; i++) {
    int tr, rc;
    assert_int_equal(jp_tok_doc(c, g_para[i], g_plen[i], g_doc[i], g_keep[i], &g_ndoc[i], &tr), 0);
    g_sig[i] = signature(c, g_para[i], g_plen[i], &rc);
    assert_int_equal(rc, 0);
  }
  jp_tok_ctx_destroy(c);
  pthread_t th[N_THREADS];
  struct worker w[N_THREADS];
  for (int t = 0; t < N_THREADS; t++) {
    w[t] = (struct worker){.id = t};
    assert_int_equal(pthread_create(&th[t], NULL, run, &w[t]), 0);
  }
  for (int t = 0; t < N_THREADS; t++) {
    pthread_join(th[t], NULL);
    assert_int_equal(w[t].errors, 0);
    assert_int_equal(w[t].mismatches, 0);
  }
}

int main(int argc, char **argv)
{
  const char *dicdir = argc > 1 && strcmp(argv[1], "unidic") == 0 ? TT_UNIDIC : TT_IPADIC;
  char p[4096];
  if (!tt_dict_present(dicdir) || !tt_vocab_path() ||
      !jp_test_data(p, sizeof p, "jsquad/valid.corpus.tsv")) {
    fprintf(stderr, "skipped: MeCab dictionary %s, vocab or JSQuAD missing\n", dicdir);
    return JP_TEST_SKIP;
  }
  char *data = tt_slurp(p, NULL);
  g_np = tt_jsquad_paragraphs(data, g_para, g_plen, MAX_PARAS);
  g_tok = tt_tok(dicdir, -1);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(threads_agree_with_single_thread),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  jp_tok_destroy(g_tok);
  free(data);
  return rc;
}
