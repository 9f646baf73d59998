/* cmd_tokenize.c: `japlaid tokenize` -- one text per stdin line to the
 * model's ColBERT token ids (text/tokenizer.h), one JSON object per line.
 * This is what the PyTorch reference (tools/reference/) consumes, so the
 * reference never needs MeCab. */
#include "cli.h"
#include "model/model.h"
#include "util/err.h"
#include "util/json.h"
#include "util/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid tokenize --model DIR (--query | --doc) [--dicdir D] [--no-lite-compat]\n"
  "\n"
  "Reads one text per line on stdin (a trailing \\n or \\r\\n is removed) and writes\n"
  "one JSON object per line: {\"ids\":[...],\"tokens\":[...],\"mask\":[...]}.\n"
  "  --query  ids = [CLS] [Q] tokens [SEP] [MASK]... (exactly query_maxlen);\n"
  "           mask = attention (1 for real positions, 0 for [MASK] padding unless\n"
  "           the model attends to mask tokens).\n"
  "  --doc    ids = [CLS] [D] tokens [SEP] (at most doc_maxlen); mask = kept\n"
  "           (0 for ASCII punctuation when the model masks punctuation).\n"
  "  --dicdir D         MeCab dictionary directory (default: see the tokenizer)\n"
  "  --no-lite-compat   do not keep ASCII letter/digit runs whole\n"
  "A line that is not valid UTF-8 is reported with its line number (exit 1).\n";

int cmd_tokenize(int argc, char **argv)
{
  struct jp_model_opts o;
  const char *dir = NULL;
  int mode = -1, rc, status = CLI_OK;
  jp_model *m = NULL;
  jp_tok_ctx *tc = NULL;
  int32_t *ids = NULL;
  uint8_t *mask = NULL;
  char *line = NULL;
  size_t line_cap = 0;
  struct jp_buf b;

  jp_model_opts_default(&o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    }
    if (!strcmp(a, "--query")) mode = 1;
    else if (!strcmp(a, "--doc")) mode = 0;
    else if (!strcmp(a, "--no-lite-compat")) o.lite_compat = 0;
    else if (!strcmp(a, "--model") || !strcmp(a, "--dicdir")) {
      if (i + 1 >= argc) return cli_usage_error("tokenize", "%s needs a value", a);
      if (!strcmp(a, "--model")) dir = argv[++i];
      else o.mecab_dicdir = argv[++i];
    } else return cli_usage_error("tokenize", "unknown option %s", a);
  }
  if (!dir || mode < 0) return cli_usage_error("tokenize", "--model and --query or --doc are required");

  o.n_threads = 1;   /* nothing is encoded */
  rc = jp_model_open(dir, &o, &m);
  if (rc) return cli_fail("tokenize", rc);
  const struct jp_colbert_cfg *cb = &jp_model_get_info(m)->colbert;
  const jp_vocab *v = jp_tok_vocab(jp_model_tokenizer(m));
  int cap = mode ? cb->query_maxlen : cb->doc_maxlen;
  jp_buf_init(&b, 0);
  rc = jp_tok_ctx_create(jp_model_tokenizer(m), &tc);
  ids = jp_malloc((size_t)cap * sizeof *ids);
  mask = jp_malloc((size_t)cap);
  if (!rc && (!ids || !mask)) rc = JP_ENOMEM;
  if (rc) {
    status = cli_fail("tokenize", rc);
    goto out;
  }

  for (long lineno = 1;; lineno++) {
    ssize_t got = getline(&line, &line_cap, stdin);
    if (got < 0) break;
    size_t len = (size_t)got;
    if (len && line[len - 1] == '\n') len--;
    if (len && line[len - 1] == '\r') len--;
    int n = 0;
    rc = mode ? jp_tok_query(tc, line, len, ids, mask, NULL)
              : jp_tok_doc(tc, line, len, ids, mask, &n, NULL);
    if (rc) {
      fprintf(stderr, "japlaid tokenize: line %ld: %s\n", lineno, jp_errmsg(rc));
      status = CLI_ERR;
      goto out;
    }
    if (mode) n = cb->query_maxlen;
    jp_buf_reset(&b);
    rc = jp_buf_puts(&b, "{\"ids\":[");
    for (int i = 0; i < n && !rc; i++) rc = jp_buf_printf(&b, "%s%d", i ? "," : "", ids[i]);
    if (!rc) rc = jp_buf_puts(&b, "],\"tokens\":[");
    for (int i = 0; i < n && !rc; i++) {
      const char *t = jp_vocab_token(v, ids[i]);
      if (i) rc = jp_buf_putc(&b, ',');
      if (!rc) rc = jp_buf_json_str(&b, t ? t : "", t ? strlen(t) : 0);
    }
    if (!rc) rc = jp_buf_puts(&b, "],\"mask\":[");
    for (int i = 0; i < n && !rc; i++) rc = jp_buf_printf(&b, "%s%d", i ? "," : "", mask[i]);
    if (!rc) rc = jp_buf_puts(&b, "]}\n");
    if (rc) {
      status = cli_fail("tokenize", rc);
      goto out;
    }
    if (fwrite(b.data, 1, b.len, stdout) != b.len) {
      fprintf(stderr, "japlaid tokenize: cannot write to stdout\n");
      status = CLI_ERR;
      goto out;
    }
  }
  if (fflush(stdout) != 0) {
    fprintf(stderr, "japlaid tokenize: cannot write to stdout\n");
    status = CLI_ERR;
  }
out:
  free(line);   /* getline allocates with malloc */
  jp_buf_fini(&b);
  jp_free(ids);
  jp_free(mask);
  jp_tok_ctx_destroy(tc);
  jp_model_close(m);
  return status;
}
