/* test_text_tokenizer.c: the tokenizer on one MeCab dictionary, given as
 * argv[1] ("unidic" or "ipadic"); exits 77 (skipped) when that dictionary
 * is not installed. Dictionary-specific expectations document how Debian's
 * UniDic 3.1.1 (with and without unidic-lite compatibility) and IPAdic split
 * words (see the table in common/text/tokenizer.c). */
#include "text_test.h"
#include "text/text_int.h"
#include "util/hash.h"
#include "util/mem.h"

static int g_unidic;          /* 1: UniDic run, 0: IPAdic run */
static const char *g_dicdir;
static jp_tok *g_tok;         /* lite_compat default (-1) */
static jp_tok_ctx *g_ctx;

/* The HF unit test sentence of BertJapaneseTokenizer with unidic_lite. */
static const char k_hf[] = " \tｱｯﾌﾟﾙストアでiPhone８ が  \n 発売された　。  ";

static size_t ids_of(jp_tok_ctx *c, const char *text, int32_t *ids, size_t cap, uint32_t *offs)
{
  size_t n = 0;
  int rc = jp_tok_ids(c, text, strlen(text), ids, cap, &n, offs);
  if (rc != 0) fail_msg("jp_tok_ids: %s", jp_errmsg(rc));
  return n;
}

static void assert_ids(const int32_t *got, size_t n, const int32_t *want, size_t nw)
{
  char g[1024] = "", w[1024] = "";
  for (size_t i = 0; i < n; i++) snprintf(g + strlen(g), sizeof g - strlen(g), "%d ", got[i]);
  for (size_t i = 0; i < nw; i++) snprintf(w + strlen(w), sizeof w - strlen(w), "%d ", want[i]);
  if (n != nw || strcmp(g, w) != 0) fail_msg("ids: got [%s] want [%s]", g, w);
}

static void hf_test_sentence(void **state)
{
  (void)state;
  struct tt_words w;
  int32_t ids[64];
  size_t n = ids_of(g_ctx, k_hf, ids, 64, NULL);
  if (g_unidic) {
    /* unidic-lite compat (the default for UniDic): exactly HF's result. */
    assert_int_equal(jp_tok_lite_compat(g_tok), 1);
    assert_string_equal(tt_words(g_ctx, k_hf, &w), "アップル|ストア|で|iPhone|8|が|発売|さ|れ|た|。");
    const int32_t want[] = {28186, 18909, 457, 26697, 39, 430, 12627, 439, 494, 449, 385};
    assert_ids(ids, n, want, sizeof want / sizeof want[0]);
  } else {
    assert_int_equal(jp_tok_lite_compat(g_tok), 0);
    assert_string_equal(tt_words(g_ctx, k_hf, &w), "アップルストア|で|iPhone|8|が|発売|さ|れ|た|。");
    /* アップルストア -> アップル ##スト ##ア */
    const int32_t want[] = {28186, 12512, 7066, 457, 26697, 39, 430, 12627, 439, 494, 449, 385};
    assert_ids(ids, n, want, sizeof want / sizeof want[0]);
    assert_string_equal(jp_vocab_token(jp_tok_vocab(g_tok), 12512), "##スト");
  }
}

static void hf_test_sentence_unidic_without_compat(void **state)
{
  (void)state;
  if (!g_unidic) skip();
  jp_tok *t = tt_tok(g_dicdir, 0);
  jp_tok_ctx *c = NULL;
  assert_int_equal(jp_tok_ctx_create(t, &c), 0);
  struct tt_words w;
  assert_string_equal(tt_words(c, k_hf, &w), "アップル|ストア|で|i|Phone|8|が|発売|さ|れ|た|。");
  int32_t ids[64];
  size_t n = ids_of(c, k_hf, ids, 64, NULL);
  const int32_t want[] = {28186, 18909, 457, 88, 17557, 16704, 39, 430, 12627, 439, 494, 449, 385};
  assert_ids(ids, n, want, sizeof want / sizeof want[0]);
  jp_tok_ctx_destroy(c);
  jp_tok_destroy(t);
}

/* Word splits per dictionary: {input, UniDic, UniDic+compat, IPAdic}. */
static const char *const k_words[][4] = {
  {"iPhone", "i|Phone", "iPhone", "iPhone"},
  {"123", "1|2|3", "123", "123"},
  {"iPhone15Pro", "i|Phone|1|5|Pro", "iPhone|15|Pro", "iPhone|15|Pro"},
  {"2024年3月", "2|0|2|4|年|3|月", "2024|年|3|月", "2024|年|3|月"},
  {"COVID-19", "COVID|-|1|9", "COVID|-|19", "COVID|-|19"},
  {"東北大学", "東北|大学", "東北|大学", "東北大学"},
  {"株式会社", "株式|会社", "株式|会社", "株式会社"},
  {"アップルストア", "アップル|ストア", "アップル|ストア", "アップルストア"},
  {"ネットニュースサイト", "ネット|ニュース|サイト", "ネット|ニュース|サイト", "ネットニュースサイト"},
  {"研究所", "研究|所", "研究|所", "研究所"},
  {"一昨日から雨が降り続いている", "一昨|日|から|雨|が|降り|続い|て|いる",
   "一昨|日|から|雨|が|降り|続い|て|いる", "一昨日|から|雨|が|降り続い|て|いる"},
  {"東京都に住んでいる外国人が増えています。", "東京|都|に|住ん|で|いる|外国|人|が|増え|て|い|ます|。",
   "東京|都|に|住ん|で|いる|外国|人|が|増え|て|い|ます|。",
   "東京|都|に|住ん|で|いる|外国|人|が|増え|て|い|ます|。"},
  /* A literal special token is one word; a full-width one is not special. */
  {"title [SEP] 本文", "title|[SEP]|本文", "title|[SEP]|本文", "title|[SEP]|本文"},
  {"ａ［SEP］", "a|[|SEP|]", "a|[|SEP|]", "a|[|SEP|]"},
};

static void word_splits_per_dictionary(void **state)
{
  (void)state;
  jp_tok *t0 = g_unidic ? tt_tok(g_dicdir, 0) : NULL;
  jp_tok_ctx *c0 = NULL;
  if (t0) assert_int_equal(jp_tok_ctx_create(t0, &c0), 0);
  for (size_t i = 0; i < sizeof k_words / sizeof k_words[0]; i++) {
    struct tt_words w;
    if (g_unidic) {
      if (strcmp(tt_words(c0, k_words[i][0], &w), k_words[i][1]) != 0)
        fail_msg("UniDic %s: got %s want %s", k_words[i][0], w.buf, k_words[i][1]);
      if (strcmp(tt_words(g_ctx, k_words[i][0], &w), k_words[i][2]) != 0)
        fail_msg("UniDic+compat %s: got %s want %s", k_words[i][0], w.buf, k_words[i][2]);
    } else {
      if (strcmp(tt_words(g_ctx, k_words[i][0], &w), k_words[i][3]) != 0)
        fail_msg("IPAdic %s: got %s want %s", k_words[i][0], w.buf, k_words[i][3]);
    }
  }
  jp_tok_ctx_destroy(c0);
  jp_tok_destroy(t0);
}

static void wordpiece_pieces_and_unknowns(void **state)
{
  (void)state;
  const jp_vocab *v = jp_tok_vocab(g_tok);
  int32_t ids[256];
  /* IPAdic keeps 東北大学 whole; WordPiece cuts it into 東北 ##大 ##学. */
  if (!g_unidic) {
    size_t n = ids_of(g_ctx, "東北大学", ids, 256, NULL);
    assert_int_equal(n, 3);
    assert_string_equal(jp_vocab_token(v, ids[0]), "東北");
    assert_string_equal(jp_vocab_token(v, ids[1]), "##大");
    assert_string_equal(jp_vocab_token(v, ids[2]), "##学");
  }
  /* > 100 code points in one word -> one [UNK]; exactly 100 is pieced.
   * lite_compat = 1 keeps an ASCII run one MeCab word on any dictionary
   * (IPAdic alone cuts long unknown runs into several words). */
  jp_tok *tl = tt_tok(g_dicdir, 1);
  jp_tok_ctx *cl = NULL;
  assert_int_equal(jp_tok_ctx_create(tl, &cl), 0);
  char w[512];
  memset(w, 'x', 150);
  w[150] = '\0';
  struct tt_words ws;
  assert_string_equal(tt_words(cl, w, &ws), w);     /* one word */
  size_t n = ids_of(cl, w, ids, 256, NULL);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], 1);
  w[101] = '\0';
  assert_int_equal(ids_of(cl, w, ids, 256, NULL), 1);
  assert_int_equal(ids[0], 1);
  w[100] = '\0';
  n = ids_of(cl, w, ids, 256, NULL);
  assert_true(n > 1);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const char *p = jp_vocab_token(v, ids[i]);
    assert_int_not_equal(ids[i], 1);
    if (i) assert_memory_equal(p, "##", 2);
    total += strlen(p) - (i ? 2 : 0);
  }
  assert_int_equal(total, 100);                     /* the pieces spell the word */
  jp_tok_ctx_destroy(cl);
  jp_tok_destroy(tl);
  /* A character outside the vocab makes its whole word [UNK]. */
  n = ids_of(g_ctx, "😀", ids, 256, NULL);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], 1);
  n = ids_of(g_ctx, "café", ids, 256, NULL);   /* é is not in the alphabet */
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], 1);
  /* NFKC first: ㍿ -> 株式会社, ① -> 1, ｶﾞ -> ガ. */
  int32_t a[16], b[16];
  size_t na = ids_of(g_ctx, "㍿", a, 16, NULL), nb = ids_of(g_ctx, "株式会社", b, 16, NULL);
  assert_ids(a, na, b, nb);
  na = ids_of(g_ctx, "ｶﾞｽ", a, 16, NULL);
  nb = ids_of(g_ctx, "ガス", b, 16, NULL);
  assert_ids(a, na, b, nb);
}

static void special_tokens_in_text(void **state)
{
  (void)state;
  int32_t ids[64];
  size_t n = ids_of(g_ctx, "[CLS]文頭[MASK]と[UNK]と[PAD]", ids, 64, NULL);
  const int32_t want[] = {2, 2662, 7299, 4, 458, 1, 458, 0};
  assert_ids(ids, n, want, sizeof want / sizeof want[0]);
  /* A near miss is ordinary text. */
  n = ids_of(g_ctx, "[SEP", ids, 64, NULL);
  assert_true(n >= 2);
  assert_int_not_equal(ids[0], 3);
}

static void offsets_point_at_word_starts(void **state)
{
  (void)state;
  int32_t ids[64];
  uint32_t offs[64];
  size_t n = ids_of(g_ctx, k_hf, ids, 64, offs);
  const jp_vocab *v = jp_tok_vocab(g_tok);
  /* Each token's offset is where its word starts in the ORIGINAL text. */
  struct { const char *tok, *orig; } m[] = {
    {"アップル", "ｱｯﾌﾟﾙ"}, {"で", "で"}, {"iPhone", "iPhone"}, {"8", "８"},
    {"が", "が"}, {"発売", "発売"}, {"。", "。"}};
  for (size_t k = 0; k < sizeof m / sizeof m[0]; k++) {
    int found = 0;
    for (size_t i = 0; i < n; i++)
      if (strcmp(jp_vocab_token(v, ids[i]), m[k].tok) == 0) {
        assert_int_equal(offs[i], (uint32_t)(strstr(k_hf, m[k].orig) - k_hf));
        found = 1;
      }
    assert_true(found);
  }
  for (size_t i = 1; i < n; i++) assert_true(offs[i] >= offs[i - 1]);
  /* Continuation pieces share their word's offset (IPAdic: アップル ##スト ##ア). */
  if (!g_unidic) {
    assert_int_equal(offs[1], offs[0]);
    assert_int_equal(offs[2], offs[0]);
  }
  /* Writing stops at cap, counting does not. */
  int32_t few[3];
  size_t all = 0;
  assert_int_equal(jp_tok_ids(g_ctx, k_hf, strlen(k_hf), few, 3, &all, NULL), 0);
  assert_int_equal(all, n);
  assert_memory_equal(few, ids, sizeof few);
  assert_int_equal(jp_tok_ids(g_ctx, k_hf, strlen(k_hf), NULL, 0, &all, NULL), 0);
  assert_int_equal(all, n);
}

static void skiplist_is_the_first_id_of_each_punctuation_char(void **state)
{
  (void)state;
  /* model.md §3: ids 16-30, 41-47, 74-79, 106-109 in this vocab. */
  int n = 0;
  for (int32_t id = 0; id < jp_vocab_size(jp_tok_vocab(g_tok)); id++) {
    int want = (id >= 16 && id <= 30) || (id >= 41 && id <= 47) || (id >= 74 && id <= 79) ||
               (id >= 106 && id <= 109);
    if (jp_tok_is_skiplisted(g_tok, id) != want) fail_msg("id %d skiplisted %d", id, !want);
    n += want;
  }
  assert_int_equal(n, 32);
  assert_false(jp_tok_is_skiplisted(g_tok, 385));    /* 。 */
  assert_false(jp_tok_is_skiplisted(g_tok, -1));
  assert_false(jp_tok_is_skiplisted(g_tok, 1 << 20));
}

static void query_framing(void **state)
{
  (void)state;
  int32_t ids[32], tok[64];
  uint8_t attn[32];
  int nr = 0;
  assert_int_equal(jp_tok_query(g_ctx, k_hf, strlen(k_hf), ids, attn, &nr), 0);
  size_t n = ids_of(g_ctx, k_hf, tok, 64, NULL);
  assert_int_equal(nr, (int)n + 3);
  assert_int_equal(ids[0], 2);
  assert_int_equal(ids[1], 5);
  assert_memory_equal(ids + 2, tok, n * sizeof *tok);
  assert_int_equal(ids[n + 2], 3);
  for (int i = 0; i < 32; i++) {
    if (i >= nr) assert_int_equal(ids[i], 4);
    assert_int_equal(attn[i], i < nr ? 1 : 0);
  }
  /* Long query: 29 text tokens, [SEP] last, no [MASK]. */
  char longq[4096] = "";
  for (int i = 0; i < 40; i++) strcat(longq, "東京都に住む。");
  assert_int_equal(jp_tok_query(g_ctx, longq, strlen(longq), ids, attn, &nr), 0);
  assert_int_equal(nr, 32);
  assert_int_equal(ids[31], 3);
  n = ids_of(g_ctx, longq, tok, 64, NULL);
  assert_true(n > 29);
  assert_memory_equal(ids + 2, tok, 29 * sizeof *tok);
  /* Empty query: [CLS] [Q] [SEP] + 29 [MASK]. */
  assert_int_equal(jp_tok_query(g_ctx, "", 0, ids, attn, &nr), 0);
  assert_int_equal(nr, 3);
  assert_int_equal(ids[2], 3);
  assert_int_equal(ids[3], 4);
  assert_int_equal(ids[31], 4);

  /* attend_to_mask_tokens and another query_maxlen. */
  jp_vocab *v = NULL;
  assert_int_equal(jp_vocab_load(tt_vocab_path(), &v), 0);
  struct jp_tok_opts o;
  jp_tok_opts_default(&o);
  o.mecab_dicdir = g_dicdir;
  o.attend_to_mask_tokens = 1;
  o.query_maxlen = 8;
  jp_tok *t = NULL;
  jp_tok_ctx *c = NULL;
  assert_int_equal(jp_tok_create(v, &o, &t), 0);
  assert_int_equal(jp_tok_ctx_create(t, &c), 0);
  int32_t ids8[8];
  uint8_t attn8[8];
  assert_int_equal(jp_tok_query(c, "東京", 6, ids8, attn8, &nr), 0);
  assert_int_equal(nr, 4);
  const int32_t want[] = {2, 5, 12569, 3, 4, 4, 4, 4};
  assert_ids(ids8, 8, want, 8);
  for (int i = 0; i < 8; i++) assert_int_equal(attn8[i], 1);
  jp_tok_ctx_destroy(c);
  jp_tok_destroy(t);
}

static void doc_framing_and_keep_mask(void **state)
{
  (void)state;
  int32_t ids[256], tok[512];
  uint8_t keep[256];
  int n = 0, tr = -1;
  const char *d = "「東京」(とうきょう)は、日本の首都です! [PAD] ?";
  assert_int_equal(jp_tok_doc(g_ctx, d, strlen(d), ids, keep, &n, &tr), 0);
  size_t nt = ids_of(g_ctx, d, tok, 512, NULL);
  assert_int_equal(n, (int)nt + 3);
  assert_int_equal(tr, 0);
  assert_int_equal(ids[0], 2);
  assert_int_equal(ids[1], 6);
  assert_int_equal(ids[n - 1], 3);
  assert_memory_equal(ids + 2, tok, nt * sizeof *tok);
  int dropped = 0;
  for (int i = 0; i < n; i++) {
    int want = !jp_tok_is_skiplisted(g_tok, ids[i]) && ids[i] != 0;
    assert_int_equal(keep[i], want);
    dropped += !keep[i];
  }
  /* ( ) ! ? and the literal [PAD]; 「」、。 are kept. IPAdic makes "」(" one
   * word, so "(" becomes the continuation "##(", which is not the skiplist
   * id of "(" and is kept (as in ColBERT, which skips first ids only). */
  assert_int_equal(dropped, g_unidic ? 5 : 4);
  assert_int_equal(keep[0] + keep[1] + keep[n - 1], 3);

  /* Truncation: at most doc_maxlen - 3 = 253 text tokens. */
  char *big = malloc(20000);
  big[0] = '\0';
  for (int i = 0; i < 300; i++) strcat(big, "東京都に住む。");
  assert_int_equal(jp_tok_doc(g_ctx, big, strlen(big), ids, keep, &n, &tr), 0);
  assert_int_equal(n, 256);
  assert_int_equal(tr, 1);
  assert_int_equal(ids[255], 3);
  nt = ids_of(g_ctx, big, tok, 512, NULL);
  assert_memory_equal(ids + 2, tok, 253 * sizeof *tok);
  free(big);

  assert_int_equal(jp_tok_doc(g_ctx, " \n\t　", strlen(" \n\t　"), ids, keep, &n, &tr), 0);
  assert_int_equal(n, 3);
  assert_int_equal(tr, 0);
  assert_int_equal(ids[2], 3);
}

static void bad_input(void **state)
{
  (void)state;
  int32_t ids[300];
  uint8_t m[300];
  size_t n;
  int nr;
  int rc = jp_tok_ids(g_ctx, "abc\xFF", 4, ids, 300, &n, NULL);
  assert_int_equal(rc, JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(rc), "offset 3"));
  rc = jp_tok_query(g_ctx, "ab\0cd", 5, ids, m, &nr);
  assert_int_equal(rc, JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(rc), "NUL byte at byte offset 2"));
  assert_int_equal(jp_tok_doc(g_ctx, "\xE3\x81", 2, ids, m, &nr, NULL), JP_EINVAL);
  assert_int_equal(jp_tok_ids(g_ctx, NULL, 5, ids, 300, &n, NULL), JP_EINVAL);
  assert_int_equal(jp_tok_ids(g_ctx, NULL, 0, ids, 300, &n, NULL), 0);
  assert_int_equal(n, 0);
  assert_int_equal(jp_tok_ids(g_ctx, "   \n\t  ", 7, ids, 300, &n, NULL), 0);
  assert_int_equal(n, 0);
  /* The ctx still works after errors. */
  assert_int_equal(jp_tok_ids(g_ctx, "東京", 6, ids, 300, &n, NULL), 0);
  assert_int_equal(n, 1);

  /* max_text_bytes. */
  jp_vocab *v = NULL;
  assert_int_equal(jp_vocab_load(tt_vocab_path(), &v), 0);
  struct jp_tok_opts o;
  jp_tok_opts_default(&o);
  o.mecab_dicdir = g_dicdir;
  o.max_text_bytes = 100;
  jp_tok *t = NULL;
  jp_tok_ctx *c = NULL;
  assert_int_equal(jp_tok_create(v, &o, &t), 0);
  assert_int_equal(jp_tok_ctx_create(t, &c), 0);
  char txt[101];
  memset(txt, 'a', 101);
  assert_int_equal(jp_tok_ids(c, txt, 100, ids, 300, &n, NULL), 0);
  rc = jp_tok_ids(c, txt, 101, ids, 300, &n, NULL);
  assert_int_equal(rc, JP_ETOOBIG);
  assert_non_null(strstr(jp_errmsg(rc), "max_text_bytes"));
  assert_int_equal(jp_tok_query(c, txt, 101, ids, m, &nr), JP_ETOOBIG);
  jp_tok_ctx_destroy(c);
  jp_tok_destroy(t);
}

/* 1 MB of real text: ids counts everything; query and doc truncate. */
static void one_megabyte_text(void **state)
{
  (void)state;
  char p[4096];
  if (!jp_test_data(p, sizeof p, "jsquad/valid.corpus.tsv")) skip();
  size_t dl = 0;
  char *data = tt_slurp(p, &dl);
  assert_non_null(data);
  size_t cap = 1u << 20, len = 0;
  char *big = malloc(cap);
  while (len < cap) {
    size_t k = dl < cap - len ? dl : cap - len;
    memcpy(big + len, data, k);
    len += k;
  }
  while (len && ((unsigned char)big[len - 1] & 0xC0) == 0x80) len--;   /* whole chars */
  if (len && (unsigned char)big[len - 1] >= 0xC0) len--;
  /* This text has fewer tokens than bytes, so len ids are room enough
   * (jp_tok_ids would report more than cap otherwise). */
  int32_t *ids = malloc(len * sizeof *ids);
  uint32_t *offs = malloc(len * sizeof *offs);
  size_t n = 0;
  assert_int_equal(jp_tok_ids(g_ctx, big, len, ids, len, &n, offs), 0);
  assert_true(n > 200000 && n < len);
  assert_true(offs[n - 1] < len);
  for (size_t i = 1; i < n; i++) assert_true(offs[i] >= offs[i - 1]);
  int32_t q[32], d[256];
  uint8_t a[256];
  int nr = 0, tr = 0;
  assert_int_equal(jp_tok_query(g_ctx, big, len, q, a, &nr), 0);
  assert_int_equal(nr, 32);
  assert_memory_equal(q + 2, ids, 29 * sizeof *ids);
  assert_int_equal(jp_tok_doc(g_ctx, big, len, d, a, &nr, &tr), 0);
  assert_int_equal(nr, 256);
  assert_int_equal(tr, 1);
  assert_memory_equal(d + 2, ids, 253 * sizeof *ids);
  free(ids);
  free(offs);
  free(big);
  free(data);
}

/* A letter run longer than a MeCab piece (60 KiB) under lite-compat: every
 * piece is one node, and none may exceed MeCab's 16-bit node length (a
 * 64 KiB node wrapped to length 0 and its text vanished). */
struct len_sum {
  size_t bytes;
  int words;
};

static void sum_cb(void *ud, const char *s, size_t n)
{
  struct len_sum *ls = ud;
  (void)s;
  ls->bytes += n;
  ls->words++;
}

static void huge_letter_run_loses_no_text(void **state)
{
  (void)state;
  size_t len = 150000;
  char *t = malloc(len);
  memset(t, 'a', len);
  jp_tok *tl = tt_tok(g_dicdir, 1);
  jp_tok_ctx *cl = NULL;
  assert_int_equal(jp_tok_ctx_create(tl, &cl), 0);
  struct len_sum ls = {0, 0};
  assert_int_equal(jp_tok_words(cl, t, len, sum_cb, &ls), 0);
  assert_int_equal(ls.bytes, len);
  assert_int_equal(ls.words, 3);            /* 60 KiB pieces */
  size_t n = 0;
  int32_t ids[8];
  assert_int_equal(jp_tok_ids(cl, t, len, ids, 8, &n, NULL), 0);
  assert_int_equal(n, 3);
  for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], 1);   /* > 100 chars */
  jp_tok_ctx_destroy(cl);
  jp_tok_destroy(tl);
  free(t);
}

static void settings_are_reported(void **state)
{
  (void)state;
  assert_int_equal(jp_tok_dict_kind(g_tok), g_unidic ? JP_DICT_UNIDIC : JP_DICT_IPADIC);
  assert_string_equal(jp_tok_dicdir(g_tok), g_dicdir);
  const struct jp_tok_opts *o = jp_tok_get_opts(g_tok);
  assert_int_equal(o->query_maxlen, 32);
  assert_int_equal(o->doc_maxlen, 256);
  assert_int_equal(o->lite_compat, g_unidic);
  assert_int_equal(o->max_text_bytes, 4u << 20);
  /* $JAPLAID_MECAB_DICDIR is used when opts name no directory. */
  setenv("JAPLAID_MECAB_DICDIR", g_dicdir, 1);
  jp_vocab *v = NULL;
  assert_int_equal(jp_vocab_load(tt_vocab_path(), &v), 0);
  jp_tok *t = NULL;
  assert_int_equal(jp_tok_create(v, NULL, &t), 0);
  assert_string_equal(jp_tok_dicdir(t), g_dicdir);
  jp_tok_destroy(t);
  setenv("JAPLAID_MECAB_DICDIR", "/nonexistent/dic", 1);
  assert_int_equal(jp_vocab_load(tt_vocab_path(), &v), 0);
  int rc = jp_tok_create(v, NULL, &t);
  assert_int_equal(rc, JP_ENOTFOUND);
  assert_non_null(strstr(jp_errmsg(rc), "JAPLAID_MECAB_DICDIR"));
  unsetenv("JAPLAID_MECAB_DICDIR");
}

/* Random texts over characters that stress MeCab's constrained mode
 * (spaces before and after letter/digit runs, Latin letters, symbols,
 * kana, kanji, full-width and half-width forms, special tokens). MeCab
 * kills the process on an unsatisfiable constraint, so surviving is the
 * first check; ids and offsets are then checked for sanity. */
static void fuzz_lite_constraints_never_kill_mecab(void **state)
{
  (void)state;
  static const char *const atoms[] = {
    "a", "Z", "iPhone", "x", "0", "42", "é", "Ð", "×", "café", " ", "  ", "\t", "\n", "\v", "\r",
    "\f", "　", "、", "。", "あ", "ア", "ｱ", "ﾞ", "漢", "東京", "!", "?", "-", "'", "[SEP]",
    "[", "ＡＢ", "１２", "①", "㍿", "😀", "\xC2\xA0", "\xE2\x80\xA8", "\xCC\x81", "Ω", "д"};
  uint64_t rng = 7;
  jp_tok *t = tt_tok(g_dicdir, 1);
  jp_tok_ctx *c = NULL;
  assert_int_equal(jp_tok_ctx_create(t, &c), 0);
  char text[512];
  int32_t ids[512];
  uint32_t offs[512];
  for (int it = 0; it < 3000; it++) {
    size_t len = 0;
    int n_atoms = 1 + (int)(jp_rand64(&rng) % 16);
    for (int k = 0; k < n_atoms; k++) {
      const char *a = atoms[jp_rand64(&rng) % (sizeof atoms / sizeof atoms[0])];
      size_t l = strlen(a);
      memcpy(text + len, a, l);
      len += l;
    }
    size_t n = 0;
    int rc = jp_tok_ids(c, text, len, ids, 512, &n, offs);
    if (rc != 0) fail_msg("rc %d (%s) for \"%.*s\"", rc, jp_errmsg(rc), (int)len, text);
    assert_true(n <= 512);
    for (size_t i = 0; i < n; i++) {
      assert_true(ids[i] >= 0 && ids[i] < jp_vocab_size(jp_tok_vocab(t)));
      assert_true(offs[i] < len);
      if (i) assert_true(offs[i] >= offs[i - 1]);
    }
  }
  jp_tok_ctx_destroy(c);
  jp_tok_destroy(t);
}

/* jp_tok_create / jp_tok_ctx_create fail cleanly at every allocation. */
static void create_oom_is_clean(void **state)
{
  (void)state;
  int done = 0;
  for (long k = 1; k < 1000 && !done; k++) {
    jp_vocab *v = NULL;
    assert_int_equal(jp_vocab_load(tt_vocab_path(), &v), 0);
    struct jp_tok_opts o;
    jp_tok_opts_default(&o);
    o.mecab_dicdir = g_dicdir;
    jp_tok *t = NULL;
    jp_tok_ctx *c = NULL;
    jp_mem_fail_after(k);
    int rc = jp_tok_create(v, &o, &t);       /* owns v either way */
    if (rc == 0) rc = jp_tok_ctx_create(t, &c);
    if (rc == 0) {
      int32_t ids[32];
      size_t n = 0;
      rc = jp_tok_ids(c, k_hf, strlen(k_hf), ids, 32, &n, NULL);
    }
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      done = made < k;
    } else {
      assert_int_equal(rc, JP_ENOMEM);
    }
    jp_tok_ctx_destroy(c);
    jp_tok_destroy(t);
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
  g_unidic = argc > 1 && strcmp(argv[1], "unidic") == 0;
  g_dicdir = g_unidic ? TT_UNIDIC : TT_IPADIC;
  if (!tt_dict_present(g_dicdir)) {
    fprintf(stderr, "skipped: MeCab dictionary %s not installed\n", g_dicdir);
    return JP_TEST_SKIP;
  }
  if (!tt_vocab_path()) {
    fprintf(stderr, "skipped: no vocab under $JP_DATA_DIR\n");
    return JP_TEST_SKIP;
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(hf_test_sentence),
    cmocka_unit_test(hf_test_sentence_unidic_without_compat),
    cmocka_unit_test(word_splits_per_dictionary),
    cmocka_unit_test(wordpiece_pieces_and_unknowns),
    cmocka_unit_test(special_tokens_in_text),
    cmocka_unit_test(offsets_point_at_word_starts),
    cmocka_unit_test(skiplist_is_the_first_id_of_each_punctuation_char),
    cmocka_unit_test(query_framing),
    cmocka_unit_test(doc_framing_and_keep_mask),
    cmocka_unit_test(bad_input),
    cmocka_unit_test(one_megabyte_text),
    cmocka_unit_test(huge_letter_run_loses_no_text),
    cmocka_unit_test(settings_are_reported),
    cmocka_unit_test(fuzz_lite_constraints_never_kill_mecab),
    cmocka_unit_test(create_oom_is_clean),
  };
  return cmocka_run_group_tests_name(g_unidic ? "tokenizer_unidic" : "tokenizer_ipadic", tests,
                                     setup, teardown);
}
