/* test_text_reference.c: ids against an independent implementation.
 *
 * tests/data/tokenizer/ref_ids.jsonl was written by gen_reference.py in the
 * same folder: HF BertJapaneseTokenizer's algorithm in Python (unicodedata
 * NFKC, the `mecab` program, str.split, its own WordPiece), sharing no code
 * with common/text. It covers JSQuAD paragraphs and questions (read from
 * $JP_DATA_DIR by id) and hand-written edge cases, on UniDic without
 * unidic-lite compatibility and on IPAdic. argv[1] picks the dictionary;
 * exit 77 when it is not installed. */
#include "text_test.h"
#include "text/text_int.h"

#include <jansson.h>

static int g_unidic;

struct tsv {
  char *data;
  const char *id[8192];
  const char *text[8192];
  size_t len[8192];
  int n;
};

/* id<TAB>[title<TAB>]text lines; `text_col` is the 0-based text column. */
static int tsv_load(struct tsv *t, const char *rel, int text_col)
{
  char p[4096];
  if (!jp_test_data(p, sizeof p, rel)) return -1;
  t->data = tt_slurp(p, NULL);
  if (!t->data) return -1;
  t->n = 0;
  char *line = t->data;
  while (*line && t->n < 8192) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    char *cols[3] = {line, NULL, NULL};
    for (int c = 1; c <= text_col; c++) {
      cols[c] = strchr(cols[c - 1], '\t');
      if (!cols[c]) break;
      *cols[c]++ = '\0';
    }
    if (cols[text_col]) {
      t->id[t->n] = cols[0];
      t->text[t->n] = cols[text_col];
      t->len[t->n] = strlen(cols[text_col]);
      t->n++;
    }
    if (!nl) break;
    line = nl + 1;
  }
  return 0;
}

static const char *tsv_find(const struct tsv *t, const char *id, size_t *len)
{
  for (int i = 0; i < t->n; i++)
    if (strcmp(t->id[i], id) == 0) {
      *len = t->len[i];
      return t->text[i];
    }
  return NULL;
}

/* 1 if NFKC(text) has a character lite-compat constrains (a Latin letter or
 * an ASCII digit): only then may compat change the words. */
static int has_lite_chars(const char *text, size_t len)
{
  struct tok_nfkc nf;
  tok__nfkc_init(&nf);
  assert_int_equal(tok__nfkc(&nf, text, len, 0), 0);
  int found = 0;
  for (size_t i = 0; i < nf.len && !found;) {
    size_t k;
    uint32_t cp = tok__utf8_decode((const unsigned char *)nf.buf + i, &k);
    found = (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
            (cp >= 0xC0 && cp <= 0x236) || (cp >= 0x1E00 && cp <= 0x1EF9);
    i += k;
  }
  tok__nfkc_fini(&nf);
  return found;
}

static void ids_match_reference(void **state)
{
  (void)state;
  const char *src_dir = getenv("JP_SOURCE_DIR");
  if (!src_dir) skip();
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/data/tokenizer/ref_ids.jsonl", src_dir);
  char *ref = tt_slurp(path, NULL);
  assert_non_null(ref);
  static struct tsv paras, queries;
  assert_int_equal(tsv_load(&paras, "jsquad/valid.corpus.tsv", 2), 0);
  assert_int_equal(tsv_load(&queries, "jsquad/valid.queries.tsv", 1), 0);

  /* Compat off: the reference has no compat mode. Compat on (UniDic's
   * default) must agree on every text without Latin letters or digits. */
  const char *dicdir = g_unidic ? TT_UNIDIC : TT_IPADIC;
  jp_tok *t = tt_tok(dicdir, 0), *tl = tt_tok(dicdir, 1);
  jp_tok_ctx *c = NULL, *cl = NULL;
  assert_int_equal(jp_tok_ctx_create(t, &c), 0);
  assert_int_equal(jp_tok_ctx_create(tl, &cl), 0);
  static int32_t ids[65536];
  int n_cases = 0, n_lite_checked = 0, n_jsquad = 0;
  size_t n_tokens = 0;
  for (char *line = ref; *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    json_error_t jerr;
    json_t *rec = json_loads(line, 0, &jerr);
    if (!rec) fail_msg("ref_ids.jsonl: %s", jerr.text);
    const char *dict = json_string_value(json_object_get(rec, "dict"));
    if (strcmp(dict, g_unidic ? "unidic" : "ipadic") == 0) {
      const char *src = json_string_value(json_object_get(rec, "src"));
      const char *text = NULL;
      size_t len = 0;
      if (strncmp(src, "jsquad-p:", 9) == 0) text = tsv_find(&paras, src + 9, &len);
      else if (strncmp(src, "jsquad-q:", 9) == 0) text = tsv_find(&queries, src + 9, &len);
      else {
        text = json_string_value(json_object_get(rec, "text"));
        len = text ? strlen(text) : 0;
      }
      if (!text) fail_msg("%s: text not found", src);
      n_jsquad += strncmp(src, "jsquad", 6) == 0;
      json_t *want = json_object_get(rec, "ids");
      size_t nw = json_array_size(want), n = 0;
      assert_int_equal(jp_tok_ids(c, text, len, ids, 65536, &n, NULL), 0);
      for (size_t i = 0; i < n || i < nw; i++) {
        long w = i < nw ? (long)json_integer_value(json_array_get(want, i)) : -1;
        long g = i < n ? (long)ids[i] : -1;
        if (w != g)
          fail_msg("%s (%s): token %zu is %ld (%s), reference %ld (%s); %zu vs %zu tokens", src,
                   dict, i, g, g >= 0 ? jp_vocab_token(jp_tok_vocab(t), (int32_t)g) : "-", w,
                   w >= 0 ? jp_vocab_token(jp_tok_vocab(t), (int32_t)w) : "-", n, nw);
      }
      n_tokens += n;
      if (!has_lite_chars(text, len)) {
        size_t nl2 = 0;
        static int32_t ids2[65536];
        assert_int_equal(jp_tok_ids(cl, text, len, ids2, 65536, &nl2, NULL), 0);
        assert_int_equal(nl2, n);
        assert_memory_equal(ids2, ids, n * sizeof *ids);
        n_lite_checked++;
      }
      n_cases++;
    }
    json_decref(rec);
    if (!nl) break;
    line = nl + 1;
  }
  print_message("%d cases (%d from JSQuAD), %zu tokens, %d also with compat on\n", n_cases,
                n_jsquad, n_tokens, n_lite_checked);
  assert_true(n_cases >= 300);
  assert_true(n_lite_checked >= 100);
  jp_tok_ctx_destroy(c);
  jp_tok_ctx_destroy(cl);
  jp_tok_destroy(t);
  jp_tok_destroy(tl);
  free(paras.data);
  free(queries.data);
  free(ref);
}

int main(int argc, char **argv)
{
  g_unidic = argc > 1 && strcmp(argv[1], "unidic") == 0;
  if (!tt_dict_present(g_unidic ? TT_UNIDIC : TT_IPADIC)) {
    fprintf(stderr, "skipped: MeCab dictionary not installed\n");
    return JP_TEST_SKIP;
  }
  if (!tt_vocab_path()) {
    fprintf(stderr, "skipped: no vocab under $JP_DATA_DIR\n");
    return JP_TEST_SKIP;
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(ids_match_reference),
  };
  return cmocka_run_group_tests_name(g_unidic ? "reference_unidic" : "reference_ipadic", tests,
                                     NULL, NULL);
}
