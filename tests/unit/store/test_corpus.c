/* test_corpus.c: the corpus reader: TSV and JSONL records, true line
 * numbers, byte ranges that split a file without losing or repeating a
 * line, bad lines (fail naming file:line, or skipped and counted), and OOM. */
#include "test_helpers.h"
#include "index/corpus.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"

#include <string.h>

static char g_dir[256];

static int setup(void **state)
{
  (void)state;
  return jp_test_tmpdir(g_dir, sizeof g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  jp_rm_rf(g_dir);
  return 0;
}

static const char *write_file(const char *name, const char *data, size_t len)
{
  static char path[512];
  FILE *f;
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  fclose(f);
  return path;
}

struct rec {
  char id[64];
  char text[256];
  char meta[256];
  int has_meta;
  uint64_t line;
};

/* Read everything (optionally a byte range); returns the count, or the
 * negative error of the first failing call. */
static int read_all(const char *path, const struct jp_corpus_opts *o, struct rec *out, int cap,
                    uint64_t *bad)
{
  jp_corpus *c;
  struct jp_corpus_doc d;
  int n = 0, rc;
  if ((rc = jp_corpus_open(path, o, &c)) < 0) return rc;
  while ((rc = jp_corpus_next(c, &d)) == 1) {
    assert_true(n < cap);
    assert_true(d.id_len < sizeof out[n].id && d.text_len < sizeof out[n].text);
    memcpy(out[n].id, d.id, d.id_len);
    out[n].id[d.id_len] = '\0';
    memcpy(out[n].text, d.text, d.text_len);
    out[n].text[d.text_len] = '\0';
    out[n].has_meta = d.metadata_json != NULL;
    snprintf(out[n].meta, sizeof out[n].meta, "%s", d.metadata_json ? d.metadata_json : "");
    out[n].line = d.line;
    n++;
  }
  if (bad) *bad = jp_corpus_bad_lines(c);
  jp_corpus_close(c);
  return rc < 0 ? rc : n;
}

static void tsv_two_and_three_columns_with_true_line_numbers(void **state)
{
  (void)state;
  const char data[] = "\xEF\xBB\xBF" "a1\thello world\n"
                      "\n"
                      "b2\t梅雨\t日本の気象\r\n"
                      "c3\t\n"
                      "d4\tlast line without newline";
  struct rec r[8];
  const char *p = write_file("t.tsv", data, sizeof data - 1);
  int n = read_all(p, NULL, r, 8, NULL);
  assert_int_equal(n, 4);
  assert_string_equal(r[0].id, "a1");          /* BOM stripped */
  assert_string_equal(r[0].text, "hello world");
  assert_int_equal(r[0].line, 1);
  assert_string_equal(r[1].id, "b2");
  assert_string_equal(r[1].text, "梅雨 日本の気象");   /* title + " " + text, CR dropped */
  assert_int_equal(r[1].line, 3);
  assert_string_equal(r[2].text, "");               /* empty text is a document */
  assert_int_equal(r[2].line, 4);
  assert_string_equal(r[3].text, "last line without newline");
  assert_int_equal(r[3].line, 5);
  assert_false(r[0].has_meta);
}

static void jsonl_ids_texts_and_metadata(void **state)
{
  (void)state;
  const char data[] =
    "{\"id\": \"x\", \"text\": \"本文\", \"metadata\": {\"lang\": \"ja\", \"n\": 3}}\n"
    "{\"id\": 42, \"text\": \"t2\"}\n"
    "{\"text\": \"t3\", \"id\": \"y\", \"metadata\": null, \"extra\": [1]}\n";
  struct rec r[4];
  const char *p = write_file("t.jsonl", data, sizeof data - 1);
  int n = read_all(p, NULL, r, 4, NULL);
  assert_int_equal(n, 3);
  assert_string_equal(r[0].id, "x");
  assert_string_equal(r[0].text, "本文");
  assert_true(r[0].has_meta);
  assert_string_equal(r[0].meta, "{\"lang\":\"ja\",\"n\":3}");
  assert_string_equal(r[1].id, "42");
  assert_false(r[1].has_meta);
  assert_string_equal(r[2].id, "y");
  assert_false(r[2].has_meta);
  assert_int_equal(r[2].line, 3);
}

/* Each bad line: the read fails with JP_EINVAL naming file:line; with
 * skip_bad it is skipped and counted, and the good lines around it stay. */
static void bad_lines_fail_with_file_and_line_or_are_counted(void **state)
{
  (void)state;
  static const struct {
    const char *line;
    const char *why;
  } bad[] = {
    {"{\"id\": \"a\", \"text\": }", "invalid JSON"},
    {"[1, 2]", "got 1 column"},  /* starts with '[': read as TSV */
    {"{\"id\": \"a\"}", "missing \"text\""},
    {"{\"text\": \"t\"}", "missing \"id\""},
    {"{\"id\": 1.5, \"text\": \"t\"}", "\"id\" must be"},
    {"{\"id\": \"\", \"text\": \"t\"}", "\"id\" is empty"},
    {"{\"id\": \"a\", \"text\": 3}", "\"text\" must be"},
    {"{\"id\": \"a\", \"text\": \"t\", \"metadata\": [1]}", "\"metadata\" must be"},
    {"{\"id\": \"a\", \"id\": \"b\", \"text\": \"t\"}", "invalid JSON"},
    {"{\"id\": \"a\", \"text\": \"\xff\"}", "invalid JSON"},
    {"only-one-column", "got 1 column"},
    {"a\tb\tc\td", "at least 4 columns"},
    {"\ttext", "empty document id"},
    {"id\tbad \xc3\x28 utf8", "invalid UTF-8 at byte 8"},
    {"id\t\xed\xa0\x80 surrogate", "invalid UTF-8"},
    {"id\t\xc0\xaf overlong", "invalid UTF-8"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char data[512], expect[600];
    struct rec r[4];
    struct jp_corpus_opts o = {0};
    uint64_t nbad = 0;
    int n, len = snprintf(data, sizeof data, "ok1\tfirst\n%s\nok2\tlast\n", bad[i].line);
    const char *p = write_file("bad.tsv", data, (size_t)len);
    n = read_all(p, &o, r, 4, NULL);
    assert_int_equal(n, JP_EINVAL);
    snprintf(expect, sizeof expect, "%s:2: ", p);
    if (strncmp(jp_errmsg(JP_EINVAL), expect, strlen(expect)) ||
        !strstr(jp_errmsg(JP_EINVAL), bad[i].why))
      fail_msg("line '%s': message '%s' lacks '%s' / '%s'", bad[i].line, jp_errmsg(JP_EINVAL),
               expect, bad[i].why);
    o.skip_bad = 1;
    n = read_all(p, &o, r, 4, &nbad);
    assert_int_equal(n, 2);
    assert_int_equal(nbad, 1);
    assert_string_equal(r[0].id, "ok1");
    assert_string_equal(r[1].id, "ok2");
    assert_int_equal(r[1].line, 3);
  }
  /* A NUL byte inside a TSV line. */
  {
    const char data[] = "ok\tx\nid\tab\0cd\n";
    struct rec r[2];
    const char *p = write_file("nul.tsv", data, sizeof data - 1);
    assert_int_equal(read_all(p, NULL, r, 2, NULL), JP_EINVAL);
    assert_non_null(strstr(jp_errmsg(JP_EINVAL), ":2: NUL byte at column 6"));
  }
}

static void long_lines_are_bounded(void **state)
{
  (void)state;
  size_t big = 3 * 1024 * 1024 + 17;   /* over the chunk size, to cross reads */
  char *data = malloc(big + 64);
  struct jp_corpus_opts o = {0};
  struct rec r[4];
  uint64_t nbad;
  size_t len = 0;
  assert_non_null(data);
  len += (size_t)sprintf(data, "a\tshort\nb\t");
  memset(data + len, 'x', big);
  len += big;
  len += (size_t)sprintf(data + len, "\nc\tafter\n");
  const char *p = write_file("long.tsv", data, len);
  free(data);
  o.max_line_bytes = 1024 * 1024;
  assert_int_equal(read_all(p, &o, r, 4, NULL), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), ":2: line longer than"));
  o.skip_bad = 1;
  assert_int_equal(read_all(p, &o, r, 4, &nbad), 2);
  assert_int_equal(nbad, 1);
  assert_string_equal(r[1].id, "c");
  assert_int_equal(r[1].line, 3);
  /* With the default limit the long line is read whole. */
  o.max_line_bytes = 0;
  o.skip_bad = 0;
  {
    jp_corpus *c;
    struct jp_corpus_doc d;
    assert_int_equal(jp_corpus_open(p, &o, &c), 0);
    assert_int_equal(jp_corpus_next(c, &d), 1);
    assert_int_equal(jp_corpus_next(c, &d), 1);
    assert_int_equal(d.text_len, big);
    assert_int_equal(jp_corpus_next(c, &d), 1);
    assert_int_equal(jp_corpus_next(c, &d), 0);
    assert_int_equal(jp_corpus_bytes_read(c), len);
    jp_corpus_close(c);
  }
}

/* Every way of cutting a file into three byte ranges yields every document
 * exactly once, with its true line number. */
static void byte_ranges_partition_the_file(void **state)
{
  (void)state;
  const char data[] = "d0\tzero\n\nd1\tone one\n{\"id\":\"d2\",\"text\":\"two\"}\nd3\tthree\r\nd4\tfour";
  const size_t len = sizeof data - 1;
  const uint64_t lines[5] = {1, 3, 4, 5, 6};
  struct rec all[8];
  const char *p = write_file("r.tsv", data, len);
  assert_int_equal(read_all(p, NULL, all, 8, NULL), 5);
  for (size_t a = 0; a <= len; a++)
    for (size_t b = a; b <= len; b++) {
      const uint64_t cuts[4] = {0, a, b, len};
      int seen[5] = {0};
      for (int k = 0; k < 3; k++) {
        struct jp_corpus_opts o = {0};
        struct rec r[8];
        int n;
        o.begin = cuts[k];
        o.end = cuts[k + 1];
        if (o.end == 0) continue;   /* end 0 means EOF: an empty first range is skipped */
        n = read_all(p, &o, r, 8, NULL);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++) {
          int id = r[i].id[1] - '0';
          assert_int_equal(r[i].line, lines[id]);
          seen[id]++;
        }
      }
      for (int i = 0; i < 5; i++)
        if (seen[i] != 1) fail_msg("cuts %zu,%zu: d%d seen %d times", a, b, i, seen[i]);
    }
  /* A range starting past EOF is empty, and a reversed one is refused. */
  {
    struct jp_corpus_opts o = {0};
    struct rec r[2];
    jp_corpus *c;
    o.begin = len + 10;
    assert_int_equal(read_all(p, &o, r, 2, NULL), 0);
    o.begin = 5;
    o.end = 2;
    assert_int_equal(jp_corpus_open(p, &o, &c), JP_EINVAL);
  }
}

static void missing_and_directory_paths_are_refused(void **state)
{
  (void)state;
  jp_corpus *c;
  char path[512];
  snprintf(path, sizeof path, "%s/absent.tsv", g_dir);
  assert_int_equal(jp_corpus_open(path, NULL, &c), JP_ENOTFOUND);
  assert_int_equal(jp_corpus_open(g_dir, NULL, &c), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "directory"));
}

static void corpus_oom_is_clean(void **state)
{
  (void)state;
  const char data[] = "a\tx\n{\"id\":\"b\",\"text\":\"y\",\"metadata\":{\"k\":1}}\nc\tt\tz\n";
  const char *p = write_file("oom.tsv", data, sizeof data - 1);
  for (long k = 1; k < 200; k++) {
    struct rec r[4];
    jp_mem_fail_after(k);
    int n = read_all(p, NULL, r, 4, NULL);
    long made = jp_mem_fail_after(0);
    if (n == 3) {
      assert_true(made < k);   /* completed without reaching the failure */
      return;
    }
    assert_int_equal(n, JP_ENOMEM);
  }
  fail_msg("never completed");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(tsv_two_and_three_columns_with_true_line_numbers),
    cmocka_unit_test(jsonl_ids_texts_and_metadata),
    cmocka_unit_test(bad_lines_fail_with_file_and_line_or_are_counted),
    cmocka_unit_test(long_lines_are_bounded),
    cmocka_unit_test(byte_ranges_partition_the_file),
    cmocka_unit_test(missing_and_directory_paths_are_refused),
    cmocka_unit_test(corpus_oom_is_clean),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
