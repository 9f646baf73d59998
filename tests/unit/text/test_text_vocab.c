/* test_text_vocab.c: jp_vocab loading, lookups and bad vocab files. */
#include "text_test.h"
#include "text/text_int.h"
#include "util/fs.h"
#include "util/mem.h"

static char g_tmp[4096];

static const char *write_tmp(const char *name, const char *data, size_t len)
{
  static char p[4200];
  snprintf(p, sizeof p, "%s/%s", g_tmp, name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  fclose(f);
  return p;
}

static void real_vocab_layout(void **state)
{
  (void)state;
  if (!tt_vocab_path()) skip();
  jp_vocab *v = NULL;
  assert_int_equal(jp_vocab_load(tt_vocab_path(), &v), 0);
  assert_int_equal(jp_vocab_size(v), 32768);
  const struct jp_special_ids *sp = jp_vocab_special(v);
  assert_int_equal(sp->pad, 0);
  assert_int_equal(sp->unk, 1);
  assert_int_equal(sp->cls, 2);
  assert_int_equal(sp->sep, 3);
  assert_int_equal(sp->mask, 4);
  assert_int_equal(jp_vocab_id(v, "[unused0]", 9), 5);
  assert_int_equal(jp_vocab_id(v, "[unused1]", 9), 6);
  /* id 15 is a single space: only the line terminator is stripped. */
  assert_string_equal(jp_vocab_token(v, 15), " ");
  assert_int_equal(jp_vocab_id(v, " ", 1), 15);
  assert_string_equal(jp_vocab_token(v, 16), "!");
  assert_null(jp_vocab_token(v, 32768));
  assert_null(jp_vocab_token(v, -1));
  assert_int_equal(jp_vocab_id(v, "no such token", 13), -1);
  /* Lookup by byte slice: a prefix of a longer buffer. */
  assert_int_equal(jp_vocab_id(v, "[CLS]xyz", 5), 2);
  /* Every id round-trips, and "##x" entries are reachable as continuations. */
  int n_cont = 0;
  for (int32_t id = 0; id < jp_vocab_size(v); id++) {
    const char *t = jp_vocab_token(v, id);
    size_t l = strlen(t);
    assert_int_equal(jp_vocab_id(v, t, l), id);
    assert_int_equal(tok__vocab_find(v, 0, t, l), id);
    if (l > 2 && t[0] == '#' && t[1] == '#') {
      n_cont++;
      assert_int_equal(tok__vocab_find(v, 1, t + 2, l - 2), id);
    }
  }
  assert_int_equal(n_cont, 8778);          /* model.md §2 */
  assert_int_equal(tok__vocab_find(v, 1, "ア", 3), jp_vocab_id(v, "##ア", 5));
  /* "ア" as a continuation is "##ア", never the word-initial "ア". */
  assert_int_not_equal(tok__vocab_find(v, 1, "ア", 3), jp_vocab_id(v, "ア", 3));
  jp_vocab_free(v);
  jp_vocab_free(NULL);
}

static const char k_min[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n[unused0]\n[unused1]\n a\n##b\nab\n";

static void crlf_and_missing_final_newline(void **state)
{
  (void)state;
  jp_vocab *v = NULL;
  const char crlf[] = "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\n \r\n##x\r\nlast";
  assert_int_equal(jp_vocab_load(write_tmp("crlf.txt", crlf, sizeof crlf - 1), &v), 0);
  assert_int_equal(jp_vocab_size(v), 8);
  assert_string_equal(jp_vocab_token(v, 4), "[MASK]");
  assert_string_equal(jp_vocab_token(v, 5), " ");
  assert_int_equal(tok__vocab_find(v, 1, "x", 1), 6);
  assert_string_equal(jp_vocab_token(v, 7), "last");
  jp_vocab_free(v);

  assert_int_equal(jp_vocab_load(write_tmp("min.txt", k_min, sizeof k_min - 1), &v), 0);
  assert_int_equal(jp_vocab_size(v), 10);
  assert_string_equal(jp_vocab_token(v, 7), " a");   /* leading space kept */
  jp_vocab_free(v);
}

static void bad_vocab_files_give_clear_errors(void **state)
{
  (void)state;
  jp_vocab *v = (jp_vocab *)1;
  int rc = jp_vocab_load(write_tmp("empty.txt", "", 0), &v);
  assert_int_equal(rc, JP_EINVAL);
  assert_null(v);
  assert_non_null(strstr(jp_errmsg(rc), "empty"));

  const char nomask[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nfoo\n";
  rc = jp_vocab_load(write_tmp("nomask.txt", nomask, sizeof nomask - 1), &v);
  assert_int_equal(rc, JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(rc), "[MASK]"));

  const char dup[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nfoo\nbar\nfoo\n";
  rc = jp_vocab_load(write_tmp("dup.txt", dup, sizeof dup - 1), &v);
  assert_int_equal(rc, JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(rc), "\"foo\" appears twice (ids 5 and 7)"));

  const char badutf[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nok\nb\xC3(\n";
  rc = jp_vocab_load(write_tmp("utf.txt", badutf, sizeof badutf - 1), &v);
  assert_int_equal(rc, JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(rc), "line 7"));
  assert_non_null(strstr(jp_errmsg(rc), "byte 1"));

  const char nul[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\0b\n";
  rc = jp_vocab_load(write_tmp("nul.txt", nul, sizeof nul - 1), &v);
  assert_int_equal(rc, JP_EINVAL);

  /* The damaged copy of this vocab with line 16 stripped to "". */
  const char stripped[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n\n!\n";
  rc = jp_vocab_load(write_tmp("stripped.txt", stripped, sizeof stripped - 1), &v);
  assert_int_equal(rc, JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(rc), "line 6 (id 5) is empty"));

  char missing[4200];
  snprintf(missing, sizeof missing, "%s/does-not-exist.txt", g_tmp);
  rc = jp_vocab_load(missing, &v);
  assert_true(rc < 0);
  assert_null(v);
  assert_int_equal(jp_vocab_load(NULL, &v), JP_EINVAL);
}

static void tok_create_takes_vocab_and_checks_markers(void **state)
{
  (void)state;
  jp_vocab *v = NULL;
  assert_int_equal(jp_vocab_load(write_tmp("min2.txt", k_min, sizeof k_min - 1), &v), 0);
  struct jp_tok_opts o;
  jp_tok_opts_default(&o);
  o.q_marker_id = 10;             /* vocab has 10 entries: out of range */
  jp_tok *t = (jp_tok *)1;
  int rc = jp_tok_create(v, &o, &t);   /* frees v on failure */
  assert_int_equal(rc, JP_EINVAL);
  assert_null(t);
  assert_non_null(strstr(jp_errmsg(rc), "marker"));

  assert_int_equal(jp_vocab_load(write_tmp("min3.txt", k_min, sizeof k_min - 1), &v), 0);
  jp_tok_opts_default(&o);
  o.mecab_dicdir = g_tmp;         /* no dicrc there */
  rc = jp_tok_create(v, &o, &t);
  assert_int_equal(rc, JP_ENOTFOUND);
  assert_non_null(strstr(jp_errmsg(rc), "dicrc"));

  assert_int_equal(jp_vocab_load(write_tmp("min4.txt", k_min, sizeof k_min - 1), &v), 0);
  jp_tok_opts_default(&o);
  o.query_maxlen = 2;
  assert_int_equal(jp_tok_create(v, &o, &t), JP_EINVAL);
  jp_tok_destroy(NULL);
  jp_tok_ctx_destroy(NULL);
}

static void vocab_load_oom_is_clean(void **state)
{
  (void)state;
  const char *p = write_tmp("oom.txt", k_min, sizeof k_min - 1);
  int done = 0;
  for (long k = 1; k < 200 && !done; k++) {
    jp_vocab *v = NULL;
    jp_mem_fail_after(k);
    int rc = jp_vocab_load(p, &v);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      assert_non_null(v);
      assert_int_equal(jp_vocab_id(v, "ab", 2), 9);
      jp_vocab_free(v);
      done = made < k;        /* ran to the end without reaching k */
    } else {
      assert_int_equal(rc, JP_ENOMEM);
      assert_null(v);
    }
  }
  assert_true(done);
}

static int setup(void **state)
{
  (void)state;
  return jp_test_tmpdir(g_tmp, sizeof g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  jp_rm_rf(g_tmp);
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(real_vocab_layout),
    cmocka_unit_test(crlf_and_missing_final_newline),
    cmocka_unit_test(bad_vocab_files_give_clear_errors),
    cmocka_unit_test(tok_create_takes_vocab_and_checks_markers),
    cmocka_unit_test(vocab_load_oom_is_clean),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
