/* test_text_split.c: jp_split_passages on one dictionary (argv[1]: unidic
 * or ipadic; exit 77 when it is not installed). */
#include "text_test.h"
#include "text/split.h"
#include "util/mem.h"

static const char *g_dicdir;
static jp_tok *g_tok;
static jp_tok_ctx *g_ctx;

static size_t count(const char *s, size_t len)
{
  size_t n = 0;
  int rc = jp_tok_ids(g_ctx, s, len, NULL, 0, &n, NULL);
  if (rc != 0) fail_msg("jp_tok_ids: %s", jp_errmsg(rc));
  return n;
}

static size_t cp_len(const char *s)
{
  unsigned char b = (unsigned char)*s;
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

/* The split.h guarantees, checked on any text. Returns the number of
 * consecutive pairs that overlap. */
static int check_spans(const char *text, size_t len, const struct jp_span *sp, int n, int max,
                       int overlap)
{
  assert_true(n >= 1);
  assert_int_equal(sp[0].off, 0);
  assert_int_equal(sp[n - 1].off + sp[n - 1].len, len);
  int n_overlap = 0;
  for (int i = 0; i < n; i++) {
    const char *s = text + sp[i].off;
    assert_true(sp[i].off + sp[i].len <= len);
    /* Spans start and end on character boundaries. */
    assert_true(((unsigned char)s[0] & 0xC0) != 0x80 || sp[i].len == 0);
    if (sp[i].off + sp[i].len < len)
      assert_true(((unsigned char)text[sp[i].off + sp[i].len] & 0xC0) != 0x80);
    size_t c = count(s, sp[i].len);
    /* At most max tokens, except one character whose NFKC form alone is
     * longer (split.h). */
    if (c > (size_t)max && cp_len(s) != sp[i].len)
      fail_msg("span %d (%zu bytes) has %zu tokens > %d", i, sp[i].len, c, max);
    if (i) {
      size_t prev_end = sp[i - 1].off + sp[i - 1].len;
      assert_true(sp[i].off > sp[i - 1].off);            /* advances */
      assert_true(sp[i].off <= prev_end);                /* no gap: no text lost */
      assert_true(sp[i].off + sp[i].len > prev_end);     /* adds new text */
      if (sp[i].off < prev_end) {
        n_overlap++;
        /* The overlap is whole units worth <= overlap tokens (counted
         * alone; counted together MeCab may differ by a token or two). */
        assert_true(count(text + sp[i].off, prev_end - sp[i].off) <= (size_t)overlap + 2);
      }
    }
  }
  return n_overlap;
}

/* 1 if a cut at `off` follows a sentence end: 。！？!? or a newline, then
 * maybe closing brackets/quotes and spaces (what split.c cuts after). */
static int is_sentence_cut(const char *t, size_t off)
{
  static const char *const tails[] = {" ", "\t", "　", ")", "）", "」", "』", "\"", "'"};
  static const char *const ends[] = {"\n", "\r", "!", "?", "。", "！", "？"};
  if (off == 0) return 1;
  size_t p = off;
  for (int moved = 1; moved && p > 0;) {
    moved = 0;
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
      size_t l = strlen(ends[i]);
      if (p >= l && memcmp(t + p - l, ends[i], l) == 0) return 1;
    }
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
      size_t l = strlen(tails[i]);
      if (p >= l && memcmp(t + p - l, tails[i], l) == 0) {
        p -= l;
        moved = 1;
        break;
      }
    }
  }
  return 0;
}

static char *jsquad_article(size_t *len, int n_paras)
{
  char p[4096];
  if (!jp_test_data(p, sizeof p, "jsquad/valid.corpus.tsv")) return NULL;
  char *data = tt_slurp(p, NULL);
  static const char *para[2000];
  static size_t plen[2000];
  int n = tt_jsquad_paragraphs(data, para, plen, 2000);
  char *out = malloc(1 << 20);
  size_t l = 0;
  for (int i = 0; i < n && i < n_paras; i++) {
    memcpy(out + l, para[i], plen[i]);
    l += plen[i];
    out[l++] = '\n';
  }
  out[l] = '\0';
  free(data);
  *len = l;
  return out;
}

static void short_and_empty_texts_are_one_span(void **state)
{
  (void)state;
  struct jp_span *sp = NULL;
  int n = 0;
  const char *t = "東京都に住んでいる外国人が増えています。二文目です。";
  assert_int_equal(jp_split_passages(g_ctx, t, strlen(t), 253, 64, &sp, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(sp[0].off, 0);
  assert_int_equal(sp[0].len, strlen(t));
  jp_free(sp);
  assert_int_equal(jp_split_passages(g_ctx, "", 0, 253, 64, &sp, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(sp[0].len, 0);
  jp_free(sp);
  /* Exactly at the limit still fits. */
  size_t c = count(t, strlen(t));
  assert_int_equal(jp_split_passages(g_ctx, t, strlen(t), (int)c, 0, &sp, &n), 0);
  assert_int_equal(n, 1);
  jp_free(sp);
  assert_int_equal(jp_split_passages(g_ctx, t, strlen(t), (int)c - 1, 0, &sp, &n), 0);
  assert_int_equal(n, 2);
  /* Cut at the sentence end. */
  assert_string_equal(t + sp[1].off, "二文目です。");
  jp_free(sp);
}

static void long_documents_pack_sentences_with_overlap(void **state)
{
  (void)state;
  size_t len = 0;
  char *doc = jsquad_article(&len, 40);
  if (!doc) skip();
  const int maxes[][2] = {{253, 63}, {61, 15}, {120, 0}, {300, 64}};
  for (size_t k = 0; k < sizeof maxes / sizeof maxes[0]; k++) {
    struct jp_span *sp = NULL;
    int n = 0, max = maxes[k][0], ov = maxes[k][1];
    assert_int_equal(jp_split_passages(g_ctx, doc, len, max, ov, &sp, &n), 0);
    size_t total = count(doc, len);
    assert_true((size_t)n >= total / (size_t)max);
    int n_overlap = check_spans(doc, len, sp, n, max, ov);
    /* Overlap is whole sentences: with passages of ~250 tokens most pairs
     * share one; with small ones few sentences fit into the overlap. */
    if (ov == 0) assert_int_equal(n_overlap, 0);
    else if (max >= 250) assert_true(n_overlap >= n / 2);
    else assert_true(n_overlap >= 1);
    /* Sentences are kept whole: a cut follows a sentence end, unless the
     * sentence it falls in is longer than max by itself. */
    for (int i = 1; i < n; i++) {
      size_t off = sp[i].off;
      if (is_sentence_cut(doc, off)) continue;
      size_t a = off, b = off;
      while (a > 0 && !is_sentence_cut(doc, a)) a--;
      while (b < len && !is_sentence_cut(doc, b)) b++;
      if (count(doc + a, b - a) <= (size_t)max)
        fail_msg("cut at %zu splits a sentence of <= %d tokens", off, max);
    }
    /* Passages are reasonably full: on average above half of max. */
    size_t sum = 0;
    for (int i = 0; i < n; i++) sum += count(doc + sp[i].off, sp[i].len);
    assert_true(sum / (size_t)n > (size_t)max / 2);
    jp_free(sp);
  }
  free(doc);
}

static void overlong_sentence_is_cut_at_word_starts(void **state)
{
  (void)state;
  /* One "sentence" of ~600 tokens with no sentence end. */
  char text[20000] = "";
  for (int i = 0; i < 60; i++) strcat(text, "東京都の大学で自然言語処理を研究する学生、");
  size_t len = strlen(text);
  size_t total = count(text, len);
  assert_true(total > 400);
  int32_t *ids = malloc(total * sizeof *ids);
  uint32_t *offs = malloc(total * sizeof *offs);
  size_t n_ids = 0;
  assert_int_equal(jp_tok_ids(g_ctx, text, len, ids, total, &n_ids, offs), 0);
  struct jp_span *sp = NULL;
  int n = 0;
  assert_int_equal(jp_split_passages(g_ctx, text, len, 100, 25, &sp, &n), 0);
  check_spans(text, len, sp, n, 100, 25);
  assert_true(n >= 5);
  for (int i = 1; i < n; i++) {
    int is_word_start = 0;
    for (size_t k = 0; k < n_ids && !is_word_start; k++) is_word_start = offs[k] == sp[i].off;
    if (!is_word_start) fail_msg("span %d starts at %zu, not at a word start", i, sp[i].off);
  }
  /* Pieces of one sentence do not overlap (overlap is whole sentences). */
  for (int i = 1; i < n; i++) assert_int_equal(sp[i].off, sp[i - 1].off + sp[i - 1].len);
  jp_free(sp);
  free(ids);
  free(offs);
}

static void tiny_limits_cut_inside_words(void **state)
{
  (void)state;
  /* max 1: every span is one token, except a character that alone gives
   * more (㍿ -> 株式会社); long words are cut between characters. */
  const char *t = "アップルストアで㍿の研究所。";
  struct jp_span *sp = NULL;
  int n = 0;
  assert_int_equal(jp_split_passages(g_ctx, t, strlen(t), 1, 0, &sp, &n), 0);
  check_spans(t, strlen(t), sp, n, 1, 0);
  int found_exception = 0;
  for (int i = 0; i < n; i++)
    if (count(t + sp[i].off, sp[i].len) > 1) {
      assert_memory_equal(t + sp[i].off, "㍿", 3);
      found_exception = 1;
    }
  assert_true(found_exception);
  jp_free(sp);
  assert_int_equal(jp_split_passages(g_ctx, t, strlen(t), 3, 1, &sp, &n), 0);
  check_spans(t, strlen(t), sp, n, 3, 1);
  jp_free(sp);
}

static void special_tokens_and_whitespace(void **state)
{
  (void)state;
  char text[8000] = "";
  for (int i = 0; i < 30; i++) strcat(text, "梅雨 [SEP] 梅雨は東アジアの気象現象である。  \n\n");
  strcat(text, "\n\n   \n");       /* trailing whitespace is not lost */
  size_t len = strlen(text);
  struct jp_span *sp = NULL;
  int n = 0;
  assert_int_equal(jp_split_passages(g_ctx, text, len, 40, 10, &sp, &n), 0);
  check_spans(text, len, sp, n, 40, 10);
  /* "[SEP]" is never cut in two. */
  for (int i = 0; i < n; i++) {
    const char *s = text + sp[i].off;
    assert_false(sp[i].len >= 1 && (strncmp(s, "SEP]", 4) == 0 || strncmp(s, "EP]", 3) == 0));
  }
  jp_free(sp);
}

static void bad_arguments(void **state)
{
  (void)state;
  struct jp_span *sp = (struct jp_span *)1;
  int n = 5;
  int rc = jp_split_passages(g_ctx, "ab\xFF", 3, 100, 10, &sp, &n);
  assert_int_equal(rc, JP_EINVAL);
  assert_null(sp);
  assert_int_equal(n, 0);
  assert_non_null(strstr(jp_errmsg(rc), "offset 2"));
  assert_int_equal(jp_split_passages(g_ctx, "a\0b", 3, 100, 10, &sp, &n), JP_EINVAL);
  assert_int_equal(jp_split_passages(g_ctx, "abc", 3, 0, 10, &sp, &n), JP_EINVAL);
  assert_int_equal(jp_split_passages(g_ctx, "abc", 3, 10, -1, &sp, &n), JP_EINVAL);
  assert_int_equal(jp_split_passages(NULL, "abc", 3, 10, 1, &sp, &n), JP_EINVAL);
  assert_int_equal(jp_split_passages(g_ctx, "abc", 3, 10, 1, NULL, &n), JP_EINVAL);
}

static void split_oom_is_clean(void **state)
{
  (void)state;
  char text[8000] = "";
  for (int i = 0; i < 20; i++) strcat(text, "東京都の大学で自然言語処理を研究する学生がいる。");
  for (int i = 0; i < 10; i++) strcat(text, "区切りのない長い文章を単語の境目で切る");
  int done = 0;
  for (long k = 1; k < 500 && !done; k++) {
    struct jp_span *sp = NULL;
    int n = 0;
    jp_mem_fail_after(k);
    int rc = jp_split_passages(g_ctx, text, strlen(text), 30, 8, &sp, &n);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      check_spans(text, strlen(text), sp, n, 30, 8);
      jp_free(sp);
      done = made < k;
    } else {
      assert_int_equal(rc, JP_ENOMEM);
      assert_null(sp);
    }
  }
  assert_true(done);
}

static int setup(void **state)
{
  (void)state;
  g_tok = tt_tok(g_dicdir, -1);
  return jp_tok_ctx_create(g_tok, &g_ctx);
}

static int teardown(void **state)
{
  (void)state;
  jp_tok_ctx_destroy(g_ctx);
  jp_tok_destroy(g_tok);
  return 0;
}

int main(int argc, char **argv)
{
  int unidic = argc > 1 && strcmp(argv[1], "unidic") == 0;
  g_dicdir = unidic ? TT_UNIDIC : TT_IPADIC;
  if (!tt_dict_present(g_dicdir) || !tt_vocab_path()) {
    fprintf(stderr, "skipped: MeCab dictionary %s or vocab missing\n", g_dicdir);
    return JP_TEST_SKIP;
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(short_and_empty_texts_are_one_span),
    cmocka_unit_test(long_documents_pack_sentences_with_overlap),
    cmocka_unit_test(overlong_sentence_is_cut_at_word_starts),
    cmocka_unit_test(tiny_limits_cut_inside_words),
    cmocka_unit_test(special_tokens_and_whitespace),
    cmocka_unit_test(bad_arguments),
    cmocka_unit_test(split_oom_is_clean),
  };
  return cmocka_run_group_tests_name(unidic ? "split_unidic" : "split_ipadic", tests, setup,
                                     teardown);
}
