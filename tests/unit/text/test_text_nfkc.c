/* test_text_nfkc.c: UTF-8 validation, Python whitespace, and NFKC with an
 * offset map, checked against utf8proc_map of the whole text. */
#include "text_test.h"
#include "text/text_int.h"
#include "util/hash.h"

#include <utf8proc.h>

#define NFKC_OPTS ((utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT))

static size_t enc(uint32_t cp, char *o)
{
  return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)o);
}

static void utf8_check_names_the_bad_byte(void **state)
{
  (void)state;
  struct { const char *s; size_t len; long bad; } c[] = {
    {"abc", 3, -1},
    {"あいう", 9, -1},
    {"\xF0\x9F\x98\x80", 4, -1},            /* U+1F600 */
    {"ab\xC0\x80", 4, 2},                    /* overlong NUL */
    {"a\xE0\x80\xAF", 4, 1},                 /* overlong '/' */
    {"xx\xED\xA0\x80", 5, 2},                /* surrogate U+D800 */
    {"\xF4\x90\x80\x80", 4, 0},              /* above U+10FFFF */
    {"ok\xE3\x81", 4, 2},                    /* truncated at end */
    {"\x80", 1, 0},                          /* lone continuation */
    {"a\xE3(b", 4, 1},                       /* bad continuation */
    {"\xF8\x88\x80\x80\x80", 5, 0},          /* 5-byte form */
    {"abc\0def", 7, 3},                      /* NUL */
  };
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    assert_int_equal(tok__utf8_find_bad(c[i].s, c[i].len), c[i].bad);
    int rc = tok__utf8_check(c[i].s, c[i].len);
    if (c[i].bad < 0) {
      assert_int_equal(rc, 0);
    } else {
      assert_int_equal(rc, JP_EINVAL);
      char want[64];
      snprintf(want, sizeof want, "offset %ld", c[i].bad);
      assert_non_null(strstr(jp_errmsg(rc), want));
    }
  }
}

/* Python 3.11: [c for c in range(0x110000) if chr(c).isspace()]. */
static const uint32_t k_pyspace[] = {
  0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000};

static void pyspace_matches_python_isspace(void **state)
{
  (void)state;
  size_t j = 0, n = sizeof k_pyspace / sizeof k_pyspace[0];
  for (uint32_t cp = 1; cp < 0x110000; cp++) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    char b[4];
    size_t l = enc(cp, b);
    int want = j < n && k_pyspace[j] == cp;
    if (want) j++;
    size_t got = tok__pyspace_len(b, b + l);
    if (got != (want ? l : 0)) fail_msg("U+%04X: pyspace %zu, want %d", cp, got, want);
  }
  assert_int_equal(j, n);
}

/* Normalise with tok__nfkc and compare with utf8proc_map of the whole text;
 * check the map: non-decreasing, every entry a character start. */
static void check_nfkc(struct tok_nfkc *nf, const char *s, size_t len)
{
  utf8proc_uint8_t *ref = NULL;
  utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &ref,
                                     NFKC_OPTS);
  assert_true(rl >= 0);
  assert_int_equal(tok__nfkc(nf, s, len, 1000), 0);
  if ((size_t)rl != nf->len || memcmp(ref, nf->buf, nf->len) != 0) {
    char hex[512] = "";
    for (size_t i = 0; i < len && i < 60; i++)
      snprintf(hex + strlen(hex), sizeof hex - strlen(hex), "%02X ", (unsigned char)s[i]);
    fail_msg("NFKC differs for input %s(%zu vs %zu bytes)", hex, (size_t)rl, nf->len);
  }
  assert_int_equal(nf->buf[nf->len], '\0');
  for (size_t i = 0; i < nf->len; i++) {
    uint32_t o = nf->map[i];
    assert_true(o >= 1000 && o < 1000 + len);
    assert_true(((unsigned char)s[o - 1000] & 0xC0) != 0x80);
    if (i) assert_true(o >= nf->map[i - 1]);
  }
  free(ref);
}

static void nfkc_equals_utf8proc_and_maps_offsets(void **state)
{
  (void)state;
  struct tok_nfkc nf;
  tok__nfkc_init(&nf);
  const char *cases[] = {
    "", "abc", " \tｱｯﾌﾟﾙストアでiPhone８ が  \n 発売された　。  ",
    "ｶﾞｷﾞｸﾞｹﾞｺﾞﾊﾟﾋﾟﾌﾟﾍﾟﾎﾟ", "か\xE3\x82\x99", "e\xCC\x81", "e\xCC\x81\xCC\xA3",
    "\xCC\x81" "abc", "㍿㌔①⑳ﬁﬃ", "ＡＢＣ１２３！？（）", "한국어 \xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8",
    "가\xE1\x86\xA8", "\xEF\xB7\xBA", "Å Å Å", "𠮷野家😀", "ǅǆ", "\xE0\xAD\x87\xE0\xAC\xBE",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_nfkc(&nf, cases[i], strlen(cases[i]));

  /* Exact offsets for a mixed text: "Ａ" -> "A" at 0, "ｶﾞ" -> "ガ" at 3 (the
   * dakuten joins the segment of ｶ), "x" at 9. */
  const char *t = "Ａｶﾞx";
  assert_int_equal(tok__nfkc(&nf, t, strlen(t), 0), 0);
  assert_string_equal(nf.buf, "Aガx");
  assert_int_equal(nf.map[0], 0);
  assert_int_equal(nf.map[1], 3);
  assert_int_equal(nf.map[3], 3);
  assert_int_equal(nf.map[4], 9);

  /* Random strings over characters that compose, reorder, expand or are
   * plain, so segment boundaries land everywhere. */
  static const uint32_t pool[] = {
    'a', 'e', 'A', ' ', '1', 0x301, 0x300, 0x323, 0x308, 0x345, 0x3099, 0x309A, 0xFF9E, 0xFF9F,
    0xFF76, 0xFF8A, 0x304B, 0x306F, 0x30A2, 0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01, 0x3131,
    0xFF21, 0xFF11, 0x337F, 0x2460, 0xFB01, 0xFDFA, 0x0B47, 0x0B3E, 0x0B57, 0x0DD9, 0x0DCF,
    0x0DCA, 0x1025, 0x102E, 0x00C5, 0x212B, 0x0344, 0x0F73, 0x1F600, 0x20BB7, 0x3000, 0x00A0,
    0x01C4, 0x1E0A, 0x0307, 0x0CC6, 0x0CC2, 0x0CD5, 0x09C7, 0x09BE, 0x09D7, 0x05B0, 0x05BC};
  uint64_t rng = 42;
  char buf[400];
  for (int it = 0; it < 20000; it++) {
    size_t l = 0;
    int n = 1 + (int)(jp_rand64(&rng) % 12);
    for (int k = 0; k < n; k++) l += enc(pool[jp_rand64(&rng) % (sizeof pool / sizeof pool[0])], buf + l);
    check_nfkc(&nf, buf, l);
  }
  tok__nfkc_fini(&nf);
}

/* For every BMP code point judged a safe segment start, normalising it
 * after each of a set of composing starters gives the two normal forms
 * concatenated (nothing composed or reordered across the boundary). */
static void safe_starts_never_join_the_previous_segment(void **state)
{
  (void)state;
  static const uint32_t before[] = {
    'a', 'e', 'A', 'o', 'u', 0x304B, 0x30AB, 0xFF76, 0x1100, 0xAC00, 0x0B47, 0x0DD9, 0x1025,
    0x0CC6, 0x09C7, 0x0BC6, 0x0D46, 0x1B05, 0x3046, 0x00E2, 0x01B0, 0x0391, 0x0415, 0x0627};
  int n_safe = 0, n_unsafe = 0;
  for (uint32_t cp = 0x20; cp < 0x10000; cp++) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (!tok__nfkc_safe_start(cp)) {
      n_unsafe++;
      continue;
    }
    n_safe++;
    /* utf8proc 2.8 composes LV + U+11A7 (the T base, not a T jamo) into LV,
     * dropping U+11A7; Python keeps it. Our segmenting starts a new segment
     * there and so keeps it, as Python does: the one place where we differ
     * from utf8proc_map on purpose. */
    if (cp == 0x11A7) continue;
    for (size_t i = 0; i < sizeof before / sizeof before[0]; i++) {
      char s[8];
      size_t la = enc(before[i], s), lb = enc(cp, s + la);
      utf8proc_uint8_t *ab = NULL, *a = NULL, *b = NULL;
      utf8proc_ssize_t nab = utf8proc_map((utf8proc_uint8_t *)s, (utf8proc_ssize_t)(la + lb), &ab, NFKC_OPTS);
      utf8proc_ssize_t na = utf8proc_map((utf8proc_uint8_t *)s, (utf8proc_ssize_t)la, &a, NFKC_OPTS);
      utf8proc_ssize_t nb = utf8proc_map((utf8proc_uint8_t *)s + la, (utf8proc_ssize_t)lb, &b, NFKC_OPTS);
      int ok = nab == na + nb && memcmp(ab, a, (size_t)na) == 0 && memcmp(ab + na, b, (size_t)nb) == 0;
      free(ab);
      free(a);
      free(b);
      if (!ok) fail_msg("U+%04X after U+%04X joins across a 'safe' start", cp, before[i]);
    }
  }
  /* Sanity: combining marks, kana voicing marks and Hangul V/T are unsafe. */
  assert_false(tok__nfkc_safe_start(0x301));
  assert_false(tok__nfkc_safe_start(0x3099));
  assert_false(tok__nfkc_safe_start(0xFF9E));
  assert_false(tok__nfkc_safe_start(0x1161));
  assert_false(tok__nfkc_safe_start(0x11A8));
  assert_true(tok__nfkc_safe_start(0x3042));
  if (!(n_safe > 50000 && n_unsafe > 500)) fail_msg("safe %d unsafe %d", n_safe, n_unsafe);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(utf8_check_names_the_bad_byte),
    cmocka_unit_test(pyspace_matches_python_isspace),
    cmocka_unit_test(nfkc_equals_utf8proc_and_maps_offsets),
    cmocka_unit_test(safe_starts_never_join_the_previous_segment),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
