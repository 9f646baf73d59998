/* cmd_rerank.c: `japlaid rerank` -- score caller-given texts against a
 * query with exact MaxSim, no index (RAGatouille's rerank). Prints one JSON
 * line: {"results":[{"content","score","rank","result_index"},...]}, rank
 * 1-based, result_index the 0-based input line. */
#include "cli.h"
#include "index/maxsim.h"
#include "model/model.h"
#include "util/err.h"
#include "util/json.h"
#include "util/mem.h"
#include "util/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Documents encoded per call (the encoder batches internally). */
#define RERANK_CHUNK 64

static const char *const usage_text =
  "usage: japlaid rerank --model DIR [-k K] [--threads N] \"query\" < documents\n"
  "\n"
  "Reads one document per stdin line (an empty line is an empty document) and\n"
  "ranks them for the query by exact MaxSim. Prints one JSON line:\n"
  "  {\"results\":[{\"content\",\"score\",\"rank\",\"result_index\"},...]}\n"
  "with the top K (default 10; all documents if fewer), result_index = the\n"
  "document's 0-based line.\n";

struct docs {
  char **text;
  size_t *len;
  int n, cap;
};

static void docs_free(struct docs *d)
{
  for (int i = 0; i < d->n; i++) jp_free(d->text[i]);
  jp_free(d->text);
  jp_free(d->len);
}

int cmd_rerank(int argc, char **argv)
{
  struct jp_model_opts mo;
  const char *model_dir = NULL, *query = NULL;
  jp_model *m = NULL;
  jp_encoder *enc = NULL;
  jp_pool *pool = NULL;
  const struct jp_model_info *info;
  struct docs d = {0};
  float *Q = NULL, *D = NULL;
  int32_t *doclens = NULL;
  struct jp_ranked *ranked = NULL;
  struct jp_buf b;
  char *line = NULL;
  size_t line_cap = 0, nvec = 0, cap_vec = 0;
  long v, k = 10;
  int rc = 0, n_out = 0;

  jp_model_opts_default(&mo);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    } else if (!strcmp(a, "--model") && val) {
      model_dir = argv[++i];
    } else if (!strcmp(a, "-k") || !strcmp(a, "--k")) {
      if (cli_parse_int("rerank", a, val, 1, 1 << 24, &k)) return CLI_USAGE;
      i++;
    } else if (!strcmp(a, "--threads")) {
      if (cli_parse_int("rerank", a, val, 1, 1024, &v)) return CLI_USAGE;
      mo.n_threads = (int)v;
      i++;
    } else if (a[0] == '-' && a[1]) {
      return cli_usage_error("rerank", "unknown option %s (or it needs a value)", a);
    } else if (!query) {
      query = a;
    } else {
      return cli_usage_error("rerank", "more than one query given (quote the query)");
    }
  }
  if (!model_dir || !query) return cli_usage_error("rerank", "--model and a query are required");

  jp_buf_init(&b, 0);
  for (;;) {
    ssize_t len = getline(&line, &line_cap, stdin);
    if (len < 0) break;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    if (d.n == d.cap) {
      int nc = d.cap ? d.cap * 2 : 64;
      char **nt = jp_realloc(d.text, (size_t)nc * sizeof *nt);
      if (!nt) { rc = JP_ENOMEM; goto out; }
      d.text = nt;
      size_t *nl = jp_realloc(d.len, (size_t)nc * sizeof *nl);
      if (!nl) { rc = JP_ENOMEM; goto out; }
      d.len = nl;
      d.cap = nc;
    }
    if (!(d.text[d.n] = jp_strndup(line, (size_t)len))) { rc = JP_ENOMEM; goto out; }
    d.len[d.n++] = (size_t)len;
  }
  if ((rc = jp_model_open(model_dir, &mo, &m)) < 0 || (rc = jp_encoder_create(m, &enc)) < 0 ||
      (rc = jp_pool_create(mo.n_threads, &pool)) < 0)
    goto out;
  info = jp_model_get_info(m);
  Q = jp_malloc((size_t)info->colbert.query_maxlen * (size_t)info->colbert.dim * sizeof *Q);
  doclens = jp_malloc(((size_t)d.n + 1) * sizeof *doclens);
  ranked = jp_malloc(((size_t)(k < d.n ? k : d.n) + 1) * sizeof *ranked);
  if (!Q || !doclens || !ranked) { rc = JP_ENOMEM; goto out; }
  {
    size_t qlen = strlen(query);
    const char *qt = query;
    if ((rc = jp_encode_queries(enc, &qt, &qlen, 1, Q)) < 0) goto out;
  }
  for (int g = 0; g < d.n; g += RERANK_CHUNK) {
    int n = d.n - g < RERANK_CHUNK ? d.n - g : RERANK_CHUNK;
    size_t need = nvec + (size_t)n * (size_t)info->colbert.doc_maxlen;
    if (need > cap_vec) {
      size_t cap_f = cap_vec * (size_t)info->colbert.dim;
      if ((rc = jp_grow((void **)&D, &cap_f, need * (size_t)info->colbert.dim, sizeof *D, 0)) < 0)
        goto out;
      cap_vec = cap_f / (size_t)info->colbert.dim;
    }
    if ((rc = jp_encode_docs(enc, (const char *const *)d.text + g, d.len + g, n,
                             D + nvec * (size_t)info->colbert.dim, cap_vec - nvec,
                             doclens + g)) < 0)
      goto out;
    for (int j = 0; j < n; j++) nvec += (size_t)doclens[g + j];
  }
  if (d.n > 0 &&
      (rc = jp_maxsim_rank(Q, info->colbert.query_maxlen, D ? D : Q, doclens, d.n,
                           info->colbert.dim, (int)(k < d.n ? k : d.n), pool, ranked, &n_out)) < 0)
    goto out;
  rc = jp_buf_puts(&b, "{\"results\":[");
  for (int i = 0; i < n_out && !rc; i++) {
    int idx = ranked[i].index;
    if (i) rc = jp_buf_putc(&b, ',');
    if (!rc) rc = jp_buf_puts(&b, "{\"content\":");
    if (!rc) rc = jp_buf_json_str(&b, d.text[idx], d.len[idx]);
    if (!rc) rc = jp_buf_puts(&b, ",\"score\":");
    if (!rc) rc = jp_buf_json_float(&b, ranked[i].score);
    if (!rc) rc = jp_buf_printf(&b, ",\"rank\":%d,\"result_index\":%d}", i + 1, idx);
  }
  if (!rc) rc = jp_buf_puts(&b, "]}\n");
  if (!rc) fwrite(b.data, 1, b.len, stdout);
out:
  free(line);
  docs_free(&d);
  jp_free(Q);
  jp_free(D);
  jp_free(doclens);
  jp_free(ranked);
  jp_buf_fini(&b);
  jp_pool_destroy(pool);
  jp_encoder_destroy(enc);
  jp_model_close(m);
  return rc < 0 ? cli_fail("rerank", rc) : CLI_OK;
}
