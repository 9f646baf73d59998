/* test_part.c: jp_part mutation (part.h): add, remove, compaction, stats,
 * per-document and per-passage lookups, metadata replacement, automatic
 * compaction, argument errors, and all-or-nothing adds under OOM. */
#include "index/part.h"
#include "index/part_int.h"
#include "index_test_util.h"
#include "util/arena.h"
#include "util/err.h"

static struct itu_corpus g_corpus;
static struct jp_codec g_codec;

static int setup(void **state)
{
  (void)state;
  itu_corpus_make(&g_corpus, 32, 16, 200, 10, 0.4f, 42);
  itu_codec(&g_corpus, 2, 8, 43, &g_codec);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  jp_codec_fini(&g_codec);
  itu_corpus_free(&g_corpus);
  return 0;
}

/* Vectors of a passage as stored: compress + decompress of the input. */
static void expected_vectors(int p, float *out)
{
  int len = g_corpus.doclen[p];
  uint32_t codes[64];
  uint8_t packed[64 * 8];
  assert_int_equal(jp_codec_compress(&g_codec, g_corpus.vecs[p], (size_t)len, NULL, codes, packed), 0);
  jp_codec_decompress_ref(&g_codec, codes, packed, (size_t)len, out);
}

static void add_lookup_and_stats(void **state)
{
  (void)state;
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  uint64_t emb = 0;
  for (int p = 0; p < 30; p++) {
    assert_int_equal(itu_add(part, &g_corpus, p, 1000 + (uint64_t)p, 3, NULL), 0);
    emb += (uint64_t)g_corpus.doclen[p];
  }
  struct jp_part_stats st;
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_passages, 30);
  assert_int_equal(st.n_docs, 10);
  assert_int_equal(st.n_embeddings, emb);
  assert_int_equal(st.n_dead_slots, 0);
  assert_true(st.mem_bytes > emb * (4 + jp_codec_packed_bytes(&g_codec)));
  /* The codec was copied, not borrowed. */
  assert_ptr_not_equal(jp_part_codec(part)->centroids, g_codec.centroids);
  assert_memory_equal(jp_part_codec(part)->centroids, g_codec.centroids,
                      sizeof(float) * (size_t)g_codec.ncentroids * g_codec.dim);

  uint64_t pids[8];
  int n;
  assert_int_equal(jp_part_doc_pids(part, "doc4", 4, pids, 8, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(pids[0], 1012);
  assert_int_equal(pids[1], 1013);
  assert_int_equal(pids[2], 1014);
  assert_int_equal(jp_part_doc_pids(part, "doc4", 4, pids, 2, &n), JP_ETOOBIG);
  assert_int_equal(n, 3);
  assert_int_equal(jp_part_doc_pids(part, "nope", 4, pids, 8, &n), 0);
  assert_int_equal(n, 0);

  float got[64 * 32], want[64 * 32];
  int len;
  assert_int_equal(jp_part_passage_vectors(part, 1017, got, sizeof got / sizeof got[0], &len), 0);
  assert_int_equal(len, g_corpus.doclen[17]);
  expected_vectors(17, want);
  for (int i = 0; i < len * 32; i++) assert_float_equal(got[i], want[i], 1e-6);
  assert_int_equal(jp_part_passage_vectors(part, 1017, got, 10, &len), JP_ETOOBIG);
  assert_int_equal(jp_part_passage_vectors(part, 5, got, sizeof got / sizeof got[0], &len), JP_ENOTFOUND);

  /* A pid that exists is refused and changes nothing. */
  assert_int_equal(itu_add(part, &g_corpus, 40, 1005, 1, NULL), JP_EEXISTS);
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_passages, 30);
  jp_part_destroy(part);
}

static void bad_arguments_are_errors(void **state)
{
  (void)state;
  jp_part *part;
  struct jp_codec empty;
  memset(&empty, 0, sizeof empty);
  assert_int_equal(jp_part_create(&empty, &part), JP_EINVAL);
  assert_null(part);
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  uint32_t codes[2] = { 0, (uint32_t)g_codec.ncentroids };
  uint8_t packed[2 * 8] = { 0 };
  assert_int_equal(jp_part_add(part, 1, "d", 1, NULL, 2, codes, packed), JP_EINVAL);
  assert_int_equal(jp_part_add(part, 1, "d", 1, NULL, -1, codes, packed), JP_EINVAL);
  assert_int_equal(jp_part_add(part, 1, "d", 1, "[1,2]", 1, codes, packed), JP_EINVAL);
  assert_int_equal(jp_part_add(part, 1, "d", 1, "{broken", 1, codes, packed), JP_EINVAL);
  assert_int_equal(jp_part_add(part, 1, NULL, 0, NULL, 1, codes, packed), JP_EINVAL);
  struct jp_part_stats st;
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_passages, 0);
  assert_int_equal(st.n_docs, 0);
  /* doclen 0 is a passage (counted) without vectors. */
  assert_int_equal(jp_part_add(part, 2, "empty", 5, NULL, 0, NULL, NULL), 0);
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_passages, 1);
  assert_int_equal(st.n_embeddings, 0);
  jp_part_destroy(part);
  jp_part_destroy(NULL);
}

static void remove_compact_and_readd(void **state)
{
  (void)state;
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  for (int p = 0; p < 40; p++) assert_int_equal(itu_add(part, &g_corpus, p, (uint64_t)p, 4, NULL), 0);
  int removed = -1;
  assert_int_equal(jp_part_remove_doc(part, "doc2", 4, &removed), 0);
  assert_int_equal(removed, 4);
  assert_int_equal(jp_part_remove_doc(part, "doc2", 4, &removed), 0);
  assert_int_equal(removed, 0);
  assert_int_equal(jp_part_remove_doc(part, "unknown", 7, NULL), 0);
  struct jp_part_stats st;
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_passages, 36);
  assert_int_equal(st.n_docs, 9);
  assert_int_equal(st.n_dead_slots, 4);
  float buf[64 * 32];
  int len, n;
  assert_int_equal(jp_part_passage_vectors(part, 9, buf, sizeof buf / sizeof buf[0], &len), JP_ENOTFOUND);
  uint64_t pids[8];
  assert_int_equal(jp_part_doc_pids(part, "doc2", 4, pids, 8, &n), 0);
  assert_int_equal(n, 0);
  /* Its pids can be reused, and the document id too. */
  assert_int_equal(itu_add(part, &g_corpus, 9, 9, 4, NULL), 0);
  assert_int_equal(jp_part_doc_pids(part, "doc2", 4, pids, 8, &n), 0);
  assert_int_equal(n, 1);

  /* Compaction keeps every live passage and its vectors. */
  assert_int_equal(jp_part_compact(part), 0);
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_dead_slots, 0);
  assert_int_equal(st.n_passages, 37);
  assert_int_equal(st.n_docs, 10);
  for (int p = 0; p < 40; p++) {
    int rc = jp_part_passage_vectors(part, (uint64_t)p, buf, sizeof buf / sizeof buf[0], &len);
    if (p >= 8 && p < 12 && p != 9) {
      assert_int_equal(rc, JP_ENOTFOUND);
      continue;
    }
    assert_int_equal(rc, 0);
    float want[64 * 32];
    expected_vectors(p, want);
    assert_int_equal(len, g_corpus.doclen[p]);
    for (int i = 0; i < len * 32; i++) assert_float_equal(buf[i], want[i], 1e-6);
  }
  assert_int_equal(jp_part_doc_pids(part, "doc3", 4, pids, 8, &n), 0);
  assert_int_equal(n, 4);
  assert_int_equal(pids[0], 12);
  assert_int_equal(pids[3], 15);
  /* IVF lists: every live slot appears under each of its codes, in order. */
  for (int c = 0; c < g_codec.ncentroids; c++) {
    const struct jp_ivf_list *l = &part->ivf[c];
    for (uint32_t i = 1; i < l->n; i++) assert_true(l->slots[i - 1] < l->slots[i]);
    for (uint32_t i = 0; i < l->n; i++) assert_false(part->slot_dead[l->slots[i]]);
  }
  jp_part_destroy(part);
}

/* Removing most passages compacts by itself once dead slots dominate. */
static void removals_trigger_compaction(void **state)
{
  (void)state;
  jp_part *part;
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  const int n = 2400;
  /* itu_add names documents by passage index, so adding the same passage
   * again appends to its document: 200 documents of 12 passages. */
  for (int i = 0; i < n; i++)
    assert_int_equal(itu_add(part, &g_corpus, i % g_corpus.npass, (uint64_t)i, 1, NULL), 0);
  struct jp_part_stats st;
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_passages, n);
  assert_int_equal(st.n_docs, 200);
  char id[16];
  for (int d = 0; d < 150; d++) {
    snprintf(id, sizeof id, "doc%d", d);
    assert_int_equal(jp_part_remove_doc(part, id, strlen(id), NULL), 0);
  }
  jp_part_get_stats(part, &st);
  assert_int_equal(st.n_passages, 600);
  assert_int_equal(st.n_docs, 50);
  /* The 101st removal left 1212 dead > 1188 live: compacted then; the 49
   * removals after it left 588 dead slots. */
  assert_int_equal(st.n_dead_slots, 588);
  assert_int_equal(part->n_slots, st.n_passages + st.n_dead_slots);
  jp_part_destroy(part);
}

/* New metadata for an existing document replaces the old (postings too). */
static void metadata_is_replaced(void **state)
{
  (void)state;
  jp_part *part;
  struct jp_arena a;
  jp_arena_init(&a, 0, 0);
  assert_int_equal(jp_part_create(&g_codec, &part), 0);
  assert_int_equal(itu_add(part, &g_corpus, 0, 1, 2, "{\"lang\":\"ja\",\"n\":1}"), 0);
  assert_int_equal(itu_add(part, &g_corpus, 1, 2, 2, NULL), 0);           /* keeps metadata */
  struct jp_filter f = { "lang", "ja" };
  struct jp_restrict r = { NULL, 0, &f, 1 };
  uint32_t *slots;
  size_t n;
  int unr;
  assert_int_equal(jp_part__allowed_slots(part, &r, &a, &slots, &n, &unr), 0);
  assert_int_equal(unr, 0);
  assert_int_equal(n, 2);
  assert_int_equal(itu_add(part, &g_corpus, 2, 3, 2, "{\"lang\":\"en\"}"), 0);   /* doc1 */
  assert_int_equal(itu_add(part, &g_corpus, 3, 4, 2, "{\"lang\":\"en\"}"), 0);   /* doc1 */
  assert_int_equal(itu_add(part, &g_corpus, 4, 5, 2, "{\"lang\":\"de\"}"), 0);   /* doc2 */
  /* doc1 = passages 2 and 3 (pids 3, 4) now "en", doc0 still "ja". */
  assert_int_equal(jp_part__allowed_slots(part, &r, &a, &slots, &n, &unr), 0);
  assert_int_equal(n, 2);
  f.value = "en";
  assert_int_equal(jp_part__allowed_slots(part, &r, &a, &slots, &n, &unr), 0);
  assert_int_equal(n, 2);
  assert_int_equal(part->slot_pid[slots[0]], 3);
  f.key = "n";
  f.value = "1";
  assert_int_equal(jp_part__allowed_slots(part, &r, &a, &slots, &n, &unr), 0);
  assert_int_equal(n, 2);
  /* doc0 changes language: it leaves "ja" and "n=1" and joins "fr". */
  assert_int_equal(itu_add(part, &g_corpus, 5, 6, 6, "{\"lang\":\"fr\"}"), 0);  /* doc0 */
  assert_int_equal(jp_part__allowed_slots(part, &r, &a, &slots, &n, &unr), 0);
  assert_int_equal(n, 0);
  f.key = "lang";
  f.value = "ja";
  assert_int_equal(jp_part__allowed_slots(part, &r, &a, &slots, &n, &unr), 0);
  assert_int_equal(n, 0);
  f.value = "fr";
  assert_int_equal(jp_part__allowed_slots(part, &r, &a, &slots, &n, &unr), 0);
  assert_int_equal(n, 3);
  jp_part_destroy(part);
  jp_arena_fini(&a);
}

/* Each allocation of create/add may fail; afterwards the part is exactly as
 * before (an add is all-or-nothing) and still works. */
static void oom_add_is_all_or_nothing(void **state)
{
  (void)state;
  for (long fail = 1;; fail++) {
    jp_part *part = NULL;
    jp_mem_fail_after(fail);
    int rc = jp_part_create(&g_codec, &part);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      jp_part_destroy(part);
      assert_true(made < fail);
      break;
    }
    assert_int_equal(rc, JP_ENOMEM);
    assert_null(part);
  }
  /* Adds: a new document with metadata, then a passage of an existing one,
   * then a metadata change, each under a walking failure point. */
  const char *metas[3] = { "{\"k\":\"v\",\"x\":2}", NULL, "{\"k\":\"w\"}" };
  for (int step = 0; step < 3; step++) {
    for (long fail = 1;; fail++) {
      jp_part *part;
      assert_int_equal(jp_part_create(&g_codec, &part), 0);
      for (int p = 0; p < 20; p++)
        assert_int_equal(itu_add(part, &g_corpus, p, (uint64_t)p, 2, "{\"k\":\"v\"}"), 0);
      struct jp_part_stats before, after;
      jp_part_get_stats(part, &before);
      /* step 0: passage 20 -> new doc10; steps 1, 2: passage 21 -> doc10 after 20. */
      if (step > 0) assert_int_equal(itu_add(part, &g_corpus, 20, 20, 2, metas[0]), 0);
      jp_part_get_stats(part, &before);
      int p = step == 0 ? 20 : 21;
      uint32_t codes[64];
      uint8_t packed[64 * 8];
      assert_int_equal(jp_codec_compress(&g_codec, g_corpus.vecs[p], (size_t)g_corpus.doclen[p],
                                         NULL, codes, packed), 0);
      jp_mem_fail_after(fail);
      int rc = jp_part_add(part, (uint64_t)p, "doc10", 5, metas[step], g_corpus.doclen[p], codes, packed);
      long made = jp_mem_fail_after(0);
      jp_part_get_stats(part, &after);
      if (rc == 0) {
        assert_int_equal(after.n_passages, before.n_passages + 1);
        jp_part_destroy(part);
        assert_true(made < fail);
        break;
      }
      assert_int_equal(rc, JP_ENOMEM);
      assert_int_equal(after.n_passages, before.n_passages);
      assert_int_equal(after.n_docs, before.n_docs);
      assert_int_equal(after.n_embeddings, before.n_embeddings);
      /* Unchanged, and usable: the same add now succeeds. */
      assert_int_equal(jp_part_add(part, (uint64_t)p, "doc10", 5, metas[step], g_corpus.doclen[p],
                                   codes, packed), 0);
      int n;
      uint64_t pids[4];
      assert_int_equal(jp_part_doc_pids(part, "doc10", 5, pids, 4, &n), 0);
      assert_int_equal(n, step == 0 ? 1 : 2);
      jp_part_destroy(part);
    }
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(add_lookup_and_stats),
    cmocka_unit_test(bad_arguments_are_errors),
    cmocka_unit_test(remove_compact_and_readd),
    cmocka_unit_test(removals_trigger_compaction),
    cmocka_unit_test(metadata_is_replaced),
    cmocka_unit_test(oom_add_is_all_or_nothing),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
