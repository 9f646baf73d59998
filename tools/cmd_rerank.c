/* cmd_rerank.c: `japlaid rerank` -- score caller-given texts against a
 * query with exact MaxSim, no index (RAGatouille's rerank). Prints one JSON
 * line: {"results":[{"content","score","rank","result_index"},...]}, rank
 * 1-based, result_index the 0-based input line.
 *
 * With --server HOST:PORT the coordinator scores them (japlaid.v1.Search/
 * Rerank, with its model) and the output is the same. More documents than
 * one call takes are sent in chunks whose top k are merged by score (ties:
 * the earlier line, as jp_maxsim_rank). */
#include "cli.h"
#include "remote.h"
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
/* Documents per remote call: at most JP_RPC_MAX_RERANK_TEXTS (1000), and a
 * multiple of RERANK_CHUNK so the coordinator, which also encodes 64 at a
 * time, batches the same documents together as this command does. */
#define REMOTE_RERANK_TEXTS 960
/* Text bytes per remote call: under the method's 16 MiB request cap with
 * room for framing. */
#define REMOTE_RERANK_BYTES ((size_t)15 << 20)

static const char *const usage_text =
  "usage: japlaid rerank --model DIR [-k K] [--threads N] \"query\" < documents\n"
  "       japlaid rerank --server HOST:PORT [--deadline-ms MS] [-k K] \"query\" < documents\n"
  "\n"
  "Reads one document per stdin line (an empty line is an empty document) and\n"
  "ranks them for the query by exact MaxSim. Prints one JSON line:\n"
  "  {\"results\":[{\"content\",\"score\",\"rank\",\"result_index\"},...]}\n"
  "with the top K (default 10; all documents if fewer), result_index = the\n"
  "document's 0-based line.\n"
  "  --server HOST:PORT  score with a coordinator's model (its gRPC address) instead\n"
  "                      of loading one; same output\n"
  "  --deadline-ms MS    with --server: time allowed per call (up to 960 documents)\n";

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

/* Best first; ties: the earlier document. */
static int ranked_cmp(const void *a, const void *b)
{
  const struct jp_ranked *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return (x->index > y->index) - (x->index < y->index);
}

static int rerank_remote(const struct remote_opts *ro, const char *query, long k,
                         const struct docs *d)
{
  remote *r = NULL;
  struct jp_ranked *all = NULL;
  struct jp_buf b;
  size_t n_all = 0;
  int rc = 0, ret = CLI_OK;
  int k_out = (int)(k < d->n ? k : d->n);

  jp_buf_init(&b, 0);
  /* A chunk contributes at most k hits. */
  all = jp_malloc(((size_t)d->n + 1) * sizeof *all);
  if (!all) { ret = cli_fail("rerank", JP_ENOMEM); goto out; }
  if (d->n > 0 && (ret = remote_open("rerank", ro, REMOTE_READ_DEADLINE_MS, &r)) != 0) goto out;
  for (int g = 0; g < d->n;) {
    Japlaid__V1__RerankRequest req = JAPLAID__V1__RERANK_REQUEST__INIT;
    ProtobufCMessage *m;
    size_t bytes = 0;
    int n = 0;
    while (g + n < d->n && n < REMOTE_RERANK_TEXTS &&
           (n == 0 || bytes + d->len[g + n] <= REMOTE_RERANK_BYTES))
      bytes += d->len[g + n++];
    req.query = (char *)query;
    req.texts = d->text + g;
    req.n_texts = (size_t)n;
    req.k = (uint32_t)(k < n ? k : n);
    if ((ret = remote_call(r, "Rerank", &req.base, &japlaid__v1__rerank_response__descriptor,
                           &m)) != 0)
      goto out;
    const Japlaid__V1__RerankResponse *resp = (const Japlaid__V1__RerankResponse *)m;
    for (size_t i = 0; i < resp->n_hits; i++) {
      /* `all` holds d->n entries: a chunk of n documents may add n. */
      if (i >= (size_t)n || resp->hits[i]->result_index >= (uint32_t)n) {
        fprintf(stderr, "japlaid rerank: malformed answer (%zu hits, result_index %u) for %d "
                "documents\n", resp->n_hits, resp->hits[i]->result_index, n);
        remote_free(m);
        ret = CLI_ERR;
        goto out;
      }
      all[n_all].index = g + (int)resp->hits[i]->result_index;
      all[n_all].score = resp->hits[i]->score;
      n_all++;
    }
    remote_free(m);
    g += n;
  }
  qsort(all, n_all, sizeof *all, ranked_cmp);
  if ((size_t)k_out > n_all) k_out = (int)n_all;
  rc = jp_buf_puts(&b, "{\"results\":[");
  for (int i = 0; i < k_out && !rc; i++) {
    int idx = all[i].index;
    if (i) rc = jp_buf_putc(&b, ',');
    if (!rc) rc = jp_buf_puts(&b, "{\"content\":");
    if (!rc) rc = jp_buf_json_str(&b, d->text[idx], d->len[idx]);
    if (!rc) rc = jp_buf_puts(&b, ",\"score\":");
    if (!rc) rc = jp_buf_json_float(&b, all[i].score);
    if (!rc) rc = jp_buf_printf(&b, ",\"rank\":%d,\"result_index\":%d}", i + 1, idx);
  }
  if (!rc) rc = jp_buf_puts(&b, "]}\n");
  if (rc) ret = cli_fail("rerank", rc);
  else fwrite(b.data, 1, b.len, stdout);
out:
  remote_close(r);
  jp_free(all);
  jp_buf_fini(&b);
  return ret;
}

int cmd_rerank(int argc, char **argv)
{
  struct jp_model_opts mo;
  struct remote_opts ro = {0};
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
    int ro_rc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    } else if ((ro_rc = remote_opt("rerank", argc, argv, &i, &ro)) != 0) {
      if (ro_rc == CLI_USAGE) return CLI_USAGE;
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
  if (ro.server && model_dir)
    return cli_usage_error("rerank", "--server scores with the coordinator's model: --model "
                           "does not go with it");
  if (!ro.server && ro.deadline_ms)
    return cli_usage_error("rerank", "--deadline-ms needs --server");
  if (!ro.server && (!model_dir || !query))
    return cli_usage_error("rerank", "--model and a query are required");
  if (ro.server && !query) return cli_usage_error("rerank", "a query is required");

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
  if (ro.server) {
    int ret = rerank_remote(&ro, query, k, &d);
    free(line);
    docs_free(&d);
    jp_buf_fini(&b);
    return ret;
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
