/* text_test.h: helpers shared by the tokenizer tests. Header-only. */
#ifndef JP_TEXT_TEST_H
#define JP_TEXT_TEST_H
#include "test_helpers.h"
#include "text/tokenizer.h"
#include "util/err.h"

#define TT_UNIDIC "/var/lib/mecab/dic/unidic"
#define TT_IPADIC "/var/lib/mecab/dic/ipadic-utf8"

/* Path of the JaColBERT vocab, or NULL (then the test skips). */
static inline const char *tt_vocab_path(void)
{
  static char buf[4096];
  return jp_test_data(buf, sizeof buf, "bert-base-japanese-v3/vocab.txt");
}

static inline int tt_dict_present(const char *dir)
{
  char p[4096];
  snprintf(p, sizeof p, "%s/sys.dic", dir);
  return access(p, R_OK) == 0;
}

/* A tokenizer on `dicdir` with lite_compat `lite` (-1/0/1); fails the test
 * on error. */
static inline jp_tok *tt_tok(const char *dicdir, int lite)
{
  jp_vocab *v = NULL;
  int rc = jp_vocab_load(tt_vocab_path(), &v);
  if (rc != 0) fail_msg("vocab: %s", jp_errmsg(rc));
  struct jp_tok_opts o;
  jp_tok_opts_default(&o);
  o.mecab_dicdir = dicdir;
  o.lite_compat = lite;
  jp_tok *t = NULL;
  rc = jp_tok_create(v, &o, &t);
  if (rc != 0) fail_msg("jp_tok_create(%s): %s", dicdir, jp_errmsg(rc));
  return t;
}

/* Words joined with '|' (for readable assertions). */
struct tt_words {
  char buf[8192];
  size_t len;
  int n;
};

static inline void tt_words_cb(void *ud, const char *s, size_t len)
{
  struct tt_words *w = ud;
  if (w->len + len + 2 >= sizeof w->buf) return;
  if (w->n++) w->buf[w->len++] = '|';
  memcpy(w->buf + w->len, s, len);
  w->len += len;
  w->buf[w->len] = '\0';
}

static inline const char *tt_words(jp_tok_ctx *c, const char *text, struct tt_words *w)
{
  memset(w, 0, sizeof *w);
  int rc = jp_tok_words(c, text, strlen(text), tt_words_cb, w);
  if (rc != 0) fail_msg("jp_tok_words: %s", jp_errmsg(rc));
  return w->buf;
}

/* Whole file into a malloc'd NUL-terminated buffer (test data). */
static inline char *tt_slurp(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b) {
    b[n] = '\0';
    if (len) *len = (size_t)n;
  }
  return b;
}

/* Paragraphs (column 3) of the JSQuAD corpus TSV, in place in `data`. */
static inline int tt_jsquad_paragraphs(char *data, const char **para, size_t *plen, int cap)
{
  int n = 0;
  char *line = data;
  while (*line && n < cap) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    char *t1 = strchr(line, '\t');
    char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (t2) {
      para[n] = t2 + 1;
      plen[n] = strlen(t2 + 1);
      n++;
    }
    if (!nl) break;
    line = nl + 1;
  }
  return n;
}

#endif
