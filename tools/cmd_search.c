/* cmd_search.c: `japlaid search` -- query an index with no server
 * (index/store.h + model/model.h). One JSON line per query on stdout, in
 * input order:
 *   {"qid": "...", "results": [{"content", "score", "rank", "document_id",
 *    "passage_id", "document_metadata"}, ...]}
 * ("qid" only when the input gave one; "document_metadata" only when the
 * document has metadata), as RAGatouille's result fields.
 *
 * With --server HOST:PORT the queries go to a coordinator
 * (japlaid.v1.Search/Search, up to 64 per call) and the output is the same,
 * over every partition of the cluster; an answer that misses partitions
 * gets "degraded":true and "coverage" appended to its line (and a warning
 * on stderr), or fails with --require-full-coverage.
 *
 * Also defines cli_search_opt(), the PLAID option parser that `japlaid
 * eval` shares. */
#include "cli.h"
#include "remote.h"
#include "rpc/pbjson.h"
#include "index/build.h"
#include "index/store.h"
#include "model/model.h"
#include "util/arena.h"
#include "util/err.h"
#include "util/json.h"
#include "util/mem.h"
#include "util/pool.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Queries encoded together: the encoder batches them; 64 x 32 x 128 floats
 * is 1 MiB of query vectors. */
#define QUERY_CHUNK 64
/* Result strings per query are bounded by k * passage size; a 256 MiB
 * arena cap stops a pathological index from eating the machine. */
#define SEARCH_ARENA_LIMIT ((size_t)256 << 20)

static const char *const usage_text =
  "usage: japlaid search --index DIR [-k K] [--exhaustive] [--doc-ids a,b,...]\n"
  "                      [--filter key=value]... [--ncells N]\n"
  "                      [--centroid-score-threshold T] [--ndocs N] [--model DIR]\n"
  "                      [--threads N] [\"query\"]\n"
  "       japlaid search --server HOST:PORT [--deadline-ms MS]\n"
  "                      [--require-full-coverage] [the same search options] [\"query\"]\n"
  "\n"
  "Searches with the query given as the last argument, or else with one query\n"
  "per stdin line (\"query\" or \"qid<TAB>query\"). Prints one JSON line per query:\n"
  "  {\"qid\":...,\"results\":[{\"content\",\"score\",\"rank\",\"document_id\",\n"
  "   \"passage_id\",\"document_metadata\"},...]}\n"
  "  -k K                     results per query (default 10)\n"
  "  --exhaustive             exact MaxSim over every passage (no PLAID stages)\n"
  "  --doc-ids a,b            only these documents (repeatable)\n"
  "  --filter key=value       only documents whose metadata has key == value\n"
  "  --ncells, --centroid-score-threshold, --ndocs: PLAID knobs (default by k:\n"
  "      k<=10: 1, 0.5, 256; k<=100: 2, 0.45, 1024; else 4, 0.4, max(4k, 4096))\n"
  "  --model DIR              model to encode queries (default: the one the index\n"
  "                           was built with; another model is refused)\n"
  "  --server HOST:PORT       ask a coordinator (its gRPC address) instead of\n"
  "                           opening an index: same output, over every partition;\n"
  "                           a partial answer adds \"degraded\":true,\"coverage\":{...}\n"
  "  --deadline-ms MS         with --server: time allowed per call of up to 64\n"
  "                           queries (default: the coordinator's)\n"
  "  --require-full-coverage  with --server: fail instead of a partial answer\n";

/* Shared with cmd_eval.c. Parses the PLAID options at argv[*i]: returns 1
 * (consumed, *i advanced past a value), 0 (not a search option) or
 * CLI_USAGE. */
int cli_search_opt(const char *cmd, int argc, char **argv, int *i, struct jp_search_params *p);
int cli_search_opt(const char *cmd, int argc, char **argv, int *i, struct jp_search_params *p)
{
  const char *a = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
  long v;
  double d;
  if (!strcmp(a, "-k") || !strcmp(a, "--k")) {
    if (cli_parse_int(cmd, a, val, 1, JP_MAX_K, &v)) return CLI_USAGE;
    p->k = (int)v;
  } else if (!strcmp(a, "--ncells")) {
    if (cli_parse_int(cmd, a, val, 1, 1 << 20, &v)) return CLI_USAGE;
    p->ncells = (int)v;
  } else if (!strcmp(a, "--ndocs")) {
    if (cli_parse_int(cmd, a, val, 1, JP_MAX_NDOCS, &v)) return CLI_USAGE;
    p->ndocs = (int)v;
  } else if (!strcmp(a, "--centroid-score-threshold")) {
    if (cli_parse_float(cmd, a, val, -1.0, 1.0, &d)) return CLI_USAGE;
    p->centroid_score_threshold = (float)d;
  } else if (!strcmp(a, "--exhaustive")) {
    p->exhaustive = 1;
    return 1;
  } else {
    return 0;
  }
  (*i)++;
  return 1;
}

struct restrict_args {
  char **doc_ids;
  int n_doc_ids;
  struct jp_filter *filters;
  int n_filters;
};

static void restrict_free(struct restrict_args *r)
{
  for (int i = 0; i < r->n_doc_ids; i++) jp_free(r->doc_ids[i]);
  jp_free(r->doc_ids);
  for (int i = 0; i < r->n_filters; i++) jp_free((char *)r->filters[i].key);
  jp_free(r->filters);
}

static int add_doc_ids(struct restrict_args *r, const char *list)
{
  const char *p = list;
  for (;;) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    if (len) {
      char **nv = jp_realloc(r->doc_ids, (size_t)(r->n_doc_ids + 1) * sizeof *nv);
      if (!nv) return JP_ENOMEM;
      r->doc_ids = nv;
      if (!(r->doc_ids[r->n_doc_ids] = jp_strndup(p, len))) return JP_ENOMEM;
      r->n_doc_ids++;
    }
    if (!c) return 0;
    p = c + 1;
  }
}

static int add_filter(struct restrict_args *r, const char *kv)
{
  const char *eq = strchr(kv, '=');
  struct jp_filter *nv;
  char *key;
  if (!eq || eq == kv) return JP_EINVAL;
  nv = jp_realloc(r->filters, (size_t)(r->n_filters + 1) * sizeof *nv);
  if (!nv) return JP_ENOMEM;
  r->filters = nv;
  /* One allocation: "key\0value". */
  if (!(key = jp_strdup(kv))) return JP_ENOMEM;
  key[eq - kv] = '\0';
  r->filters[r->n_filters].key = key;
  r->filters[r->n_filters].value = key + (eq - kv) + 1;
  r->n_filters++;
  return 0;
}

/* `extra` (NULL: none) is appended inside the object after "results"
 * (the remote mode's degraded answers). */
static int write_results(struct jp_buf *b, const char *qid, size_t qid_len,
                         const struct jp_result *res, int n, const char *extra)
{
  int rc = jp_buf_putc(b, '{');
  if (!rc && qid) {
    rc = jp_buf_puts(b, "\"qid\":");
    if (!rc) rc = jp_buf_json_str(b, qid, qid_len);
    if (!rc) rc = jp_buf_putc(b, ',');
  }
  if (!rc) rc = jp_buf_puts(b, "\"results\":[");
  for (int i = 0; i < n && !rc; i++) {
    if (i) rc = jp_buf_putc(b, ',');
    if (!rc) rc = jp_buf_puts(b, "{\"content\":");
    if (!rc) rc = jp_buf_json_str(b, res[i].content, res[i].content_len);
    if (!rc) rc = jp_buf_puts(b, ",\"score\":");
    if (!rc) rc = jp_buf_json_float(b, res[i].score);
    if (!rc) rc = jp_buf_printf(b, ",\"rank\":%d,\"document_id\":", res[i].rank);
    if (!rc) rc = jp_buf_json_str(b, res[i].document_id, strlen(res[i].document_id));
    if (!rc) rc = jp_buf_printf(b, ",\"passage_id\":%" PRIu64, res[i].passage_id);
    if (!rc && res[i].metadata_json) {
      rc = jp_buf_puts(b, ",\"document_metadata\":");
      if (!rc) rc = jp_buf_puts(b, res[i].metadata_json);
    }
    if (!rc) rc = jp_buf_putc(b, '}');
  }
  if (!rc) rc = jp_buf_putc(b, ']');
  if (!rc && extra) rc = jp_buf_puts(b, extra);
  if (!rc) rc = jp_buf_puts(b, "}\n");
  return rc;
}

struct query {
  char *qid;                    /* NULL when the input had none */
  size_t qid_len;
  char *text;
  size_t len;
};

static int run_chunk(jp_store *s, jp_encoder *enc, jp_pool *pool,
                     const struct jp_model_info *info, struct query *qs, int n,
                     const struct jp_search_params *sp,
                     const struct jp_restrict *r, float *Q, struct jp_arena *a, struct jp_buf *b)
{
  const char *texts[QUERY_CHUNK] = { 0 };   /* zeroed: n may be 0 */
  size_t lens[QUERY_CHUNK] = { 0 };
  size_t qsz = (size_t)info->colbert.query_maxlen * (size_t)info->colbert.dim;
  int rc;

  for (int i = 0; i < n; i++) {
    texts[i] = qs[i].text;
    lens[i] = qs[i].len;
  }
  if ((rc = jp_encode_queries(enc, texts, lens, n, Q)) < 0) return rc;
  for (int i = 0; i < n; i++) {
    struct jp_result *res;
    int nr;
    jp_arena_reset(a);
    if ((rc = jp_store_search(s, Q + (size_t)i * qsz, info->colbert.query_maxlen, sp, r, pool, a,
                              &res, &nr)) < 0)
      return rc;
    jp_buf_reset(b);
    if ((rc = write_results(b, qs[i].qid, qs[i].qid_len, res, nr, NULL)) < 0) return rc;
    fwrite(b->data, 1, b->len, stdout);
  }
  fflush(stdout);
  return 0;
}

/* ---- remote mode (--server) ---------------------------------------------------- */

struct remote_search {
  remote *r;
  Japlaid__V1__SearchRequest req;     /* queries set per chunk */
  Japlaid__V1__SearchParams params;
  Japlaid__V1__MetadataFilter *filt;
  Japlaid__V1__MetadataFilter **filtp;
  struct jp_result *res;              /* one query's hits, converted */
  size_t res_cap;
  struct jp_buf out, extra;
};

/* One SearchRequest of n queries; prints their lines. 0 or CLI_ERR
 * (reported). */
static int remote_chunk(struct remote_search *rs, struct query *qs, int n)
{
  char *texts[QUERY_CHUNK];
  ProtobufCMessage *m;
  int rc;
  for (int i = 0; i < n; i++) texts[i] = qs[i].text;
  rs->req.n_queries = (size_t)n;
  rs->req.queries = texts;
  if ((rc = remote_call(rs->r, "Search", &rs->req.base, &japlaid__v1__search_response__descriptor,
                        &m)) != 0)
    return rc;
  const Japlaid__V1__SearchResponse *resp = (const Japlaid__V1__SearchResponse *)m;
  if (resp->n_results != (size_t)n) {
    fprintf(stderr, "japlaid search: the server answered %zu result lists for %d queries\n",
            resp->n_results, n);
    remote_free(m);
    return CLI_ERR;
  }
  jp_buf_reset(&rs->extra);
  rc = 0;
  if (resp->degraded) {
    remote_warn_partial("search", resp->coverage);
    rc = jp_buf_puts(&rs->extra, ",\"degraded\":true,\"coverage\":");
    if (!rc) rc = jp_pbjson_coverage(&rs->extra, resp->coverage);
  }
  for (int i = 0; i < n && !rc; i++) {
    const Japlaid__V1__QueryHits *qh = resp->results[i];
    size_t nh = qh ? qh->n_hits : 0;
    if (nh > rs->res_cap) {
      struct jp_result *nr = jp_realloc(rs->res, nh * sizeof *nr);
      if (!nr) { rc = JP_ENOMEM; break; }
      rs->res = nr;
      rs->res_cap = nh;
    }
    for (size_t h = 0; h < nh; h++) {
      const Japlaid__V1__Hit *hit = qh->hits[h];
      rs->res[h] = (struct jp_result){hit->passage_id, hit->score, (int)hit->rank,
                                      hit->document_id, hit->content, strlen(hit->content),
                                      hit->document_metadata && *hit->document_metadata
                                        ? hit->document_metadata : NULL};
    }
    jp_buf_reset(&rs->out);
    rc = write_results(&rs->out, qs[i].qid, qs[i].qid_len, rs->res, (int)nh,
                       resp->degraded ? rs->extra.data : NULL);
    if (!rc) fwrite(rs->out.data, 1, rs->out.len, stdout);
  }
  fflush(stdout);
  remote_free(m);
  return rc < 0 ? cli_fail("search", rc) : 0;
}

static int search_remote(const struct remote_opts *ro, int full_coverage,
                         const struct jp_search_params *sp, const struct restrict_args *ra,
                         const char *query)
{
  struct remote_search rs;
  struct query qs[QUERY_CHUNK];
  char *line = NULL;
  size_t line_cap = 0;
  int rc = 0, nq = 0;
  uint64_t line_no = 0;

  memset(&rs, 0, sizeof rs);
  japlaid__v1__search_request__init(&rs.req);
  japlaid__v1__search_params__init(&rs.params);
  jp_buf_init(&rs.out, 0);
  jp_buf_init(&rs.extra, 0);
  rs.params.k = (uint32_t)sp->k;
  rs.params.ncells = (uint32_t)sp->ncells;
  rs.params.ndocs = (uint32_t)sp->ndocs;
  rs.params.exhaustive = sp->exhaustive != 0;
  if (!isnan(sp->centroid_score_threshold)) {
    rs.params.centroid_score_threshold_opt_case =
      JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD;
    rs.params.centroid_score_threshold = sp->centroid_score_threshold;
  }
  rs.req.params = &rs.params;
  rs.req.n_doc_ids = (size_t)ra->n_doc_ids;
  rs.req.doc_ids = ra->doc_ids;
  rs.req.require_full_coverage = full_coverage != 0;
  if (ra->n_filters) {
    rs.filt = jp_calloc((size_t)ra->n_filters, sizeof *rs.filt);
    rs.filtp = jp_calloc((size_t)ra->n_filters, sizeof *rs.filtp);
    if (!rs.filt || !rs.filtp) { rc = cli_fail("search", JP_ENOMEM); goto out; }
    for (int i = 0; i < ra->n_filters; i++) {
      japlaid__v1__metadata_filter__init(&rs.filt[i]);
      rs.filt[i].key = (char *)ra->filters[i].key;
      rs.filt[i].value = (char *)ra->filters[i].value;
      rs.filtp[i] = &rs.filt[i];
    }
    rs.req.n_filters = (size_t)ra->n_filters;
    rs.req.filters = rs.filtp;
  }
  if ((rc = remote_open("search", ro, REMOTE_READ_DEADLINE_MS, &rs.r)) != 0) goto out;
  rs.req.timeout_ms = remote_timeout_ms(rs.r);

  if (query) {
    qs[0] = (struct query){NULL, 0, (char *)query, strlen(query)};
    rc = remote_chunk(&rs, qs, 1);
    goto out;
  }
  ssize_t len;
  while ((len = getline(&line, &line_cap, stdin)) >= 0) {
    char *tab, *text = line;
    line_no++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    if (len == 0) continue;
    qs[nq] = (struct query){NULL, 0, NULL, 0};
    if ((tab = memchr(line, '\t', (size_t)len))) {
      qs[nq].qid = jp_strndup(line, (size_t)(tab - line));
      qs[nq].qid_len = (size_t)(tab - line);
      text = tab + 1;
    }
    qs[nq].len = (size_t)(line + len - text);
    qs[nq].text = jp_strndup(text, qs[nq].len);
    if (!qs[nq].text || (tab && !qs[nq].qid)) {
      jp_free(qs[nq].qid);
      jp_free(qs[nq].text);
      rc = cli_fail("search", JP_ENOMEM);
      goto out;
    }
    if (++nq == QUERY_CHUNK) {
      rc = remote_chunk(&rs, qs, nq);
      for (int i = 0; i < nq; i++) { jp_free(qs[i].qid); jp_free(qs[i].text); }
      nq = 0;
      if (rc) {
        fprintf(stderr, "japlaid search: in the queries up to stdin line %" PRIu64 "\n", line_no);
        goto out;
      }
    }
  }
  if (nq) rc = remote_chunk(&rs, qs, nq);
out:
  for (int i = 0; i < nq; i++) { jp_free(qs[i].qid); jp_free(qs[i].text); }
  free(line);
  remote_close(rs.r);
  jp_free(rs.filt);
  jp_free(rs.filtp);
  jp_free(rs.res);
  jp_buf_fini(&rs.out);
  jp_buf_fini(&rs.extra);
  return rc;
}

int cmd_search(int argc, char **argv)
{
  struct jp_search_params sp = {10, 0, NAN, 0, 0};
  struct restrict_args ra = {0};
  struct jp_restrict rs = {0};
  struct jp_store_opts so;
  struct jp_model_opts mo;
  struct remote_opts ro = {0};
  const char *index_dir = NULL, *model_dir = NULL, *query = NULL;
  jp_store *s = NULL;
  jp_model *m = NULL;
  jp_encoder *enc = NULL;
  jp_pool *pool = NULL;
  const struct jp_model_info *info;
  struct query qs[QUERY_CHUNK];
  struct jp_arena arena;
  struct jp_buf out;
  float *Q = NULL;
  char *line = NULL;
  size_t line_cap = 0;
  long v;
  int rc = 0, nq = 0, ret = CLI_OK, full_coverage = 0;
  uint64_t line_no = 0;

  jp_store_opts_default(&so);
  so.read_only = 1;
  jp_model_opts_default(&mo);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    int k;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      restrict_free(&ra);
      return CLI_OK;
    }
    if ((k = cli_search_opt("search", argc, argv, &i, &sp)) != 0 ||
        (k = remote_opt("search", argc, argv, &i, &ro)) != 0) {
      if (k == CLI_USAGE) { restrict_free(&ra); return CLI_USAGE; }
      continue;
    }
    if (!strcmp(a, "--require-full-coverage")) {
      full_coverage = 1;
    } else if (!strcmp(a, "--index") && val) {
      index_dir = argv[++i];
    } else if (!strcmp(a, "--model") && val) {
      model_dir = argv[++i];
    } else if (!strcmp(a, "--threads")) {
      if (cli_parse_int("search", a, val, 1, 1024, &v)) { restrict_free(&ra); return CLI_USAGE; }
      mo.n_threads = (int)v;
      i++;
    } else if (!strcmp(a, "--doc-ids") && val) {
      if (add_doc_ids(&ra, argv[++i]) < 0) { restrict_free(&ra); return cli_fail("search", JP_ENOMEM); }
    } else if (!strcmp(a, "--filter") && val) {
      if (add_filter(&ra, argv[++i]) < 0) {
        restrict_free(&ra);
        return cli_usage_error("search", "--filter wants key=value, got '%s'", argv[i]);
      }
    } else if (a[0] == '-' && a[1]) {
      restrict_free(&ra);
      return cli_usage_error("search", "unknown option %s (or it needs a value)", a);
    } else if (!query) {
      query = a;
    } else {
      restrict_free(&ra);
      return cli_usage_error("search", "more than one query given (quote the query)");
    }
  }
  if (ro.server) {
    if (index_dir || model_dir) {
      restrict_free(&ra);
      return cli_usage_error("search", "--server searches the cluster with its coordinator's "
                             "model: --index and --model do not go with it");
    }
    ret = search_remote(&ro, full_coverage, &sp, &ra, query);
    restrict_free(&ra);
    return ret;
  }
  if (ro.deadline_ms || full_coverage) {
    restrict_free(&ra);
    return cli_usage_error("search", "--deadline-ms and --require-full-coverage need --server");
  }
  if (!index_dir) { restrict_free(&ra); return cli_usage_error("search", "--index is required"); }
  rs.doc_ids = (const char *const *)ra.doc_ids;
  rs.n_doc_ids = ra.n_doc_ids;
  rs.filters = ra.filters;
  rs.n_filters = ra.n_filters;
  if (ra.n_doc_ids == 0 && ra.doc_ids == NULL) rs.doc_ids = NULL;

  jp_arena_init(&arena, 0, SEARCH_ARENA_LIMIT);
  jp_buf_init(&out, 0);
  if ((rc = jp_index_open_with_model(index_dir, model_dir, &so, &mo, &s, &m)) < 0) goto fail;
  info = jp_model_get_info(m);
  if ((rc = jp_encoder_create(m, &enc)) < 0 || (rc = jp_pool_create(mo.n_threads, &pool)) < 0)
    goto fail;
  Q = jp_malloc((size_t)QUERY_CHUNK * (size_t)info->colbert.query_maxlen *
                (size_t)info->colbert.dim * sizeof *Q);
  if (!Q) { rc = JP_ENOMEM; goto fail; }

  if (query) {
    qs[0] = (struct query){NULL, 0, (char *)query, strlen(query)};
    rc = run_chunk(s, enc, pool, info, qs, 1, &sp, &rs, Q, &arena, &out);
    if (rc < 0) goto fail;
  } else {
    ssize_t len;
    while ((len = getline(&line, &line_cap, stdin)) >= 0) {
      char *tab, *text = line;
      line_no++;
      while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
      if (len == 0) continue;
      qs[nq].qid = NULL;
      qs[nq].qid_len = 0;
      if ((tab = memchr(line, '\t', (size_t)len))) {
        qs[nq].qid = jp_strndup(line, (size_t)(tab - line));
        qs[nq].qid_len = (size_t)(tab - line);
        text = tab + 1;
      }
      qs[nq].len = (size_t)(line + len - text);
      qs[nq].text = jp_strndup(text, qs[nq].len);
      if (!qs[nq].text || (tab && !qs[nq].qid)) {
        jp_free(qs[nq].qid);
        jp_free(qs[nq].text);
        rc = JP_ENOMEM;
        goto fail;
      }
      if (++nq == QUERY_CHUNK) {
        rc = run_chunk(s, enc, pool, info, qs, nq, &sp, &rs, Q, &arena, &out);
        for (int i = 0; i < nq; i++) { jp_free(qs[i].qid); jp_free(qs[i].text); }
        nq = 0;
        if (rc < 0) {
          fprintf(stderr, "japlaid search: in the queries up to stdin line %" PRIu64 ":\n", line_no);
          goto fail;
        }
      }
    }
    if (nq) {
      rc = run_chunk(s, enc, pool, info, qs, nq, &sp, &rs, Q, &arena, &out);
      for (int i = 0; i < nq; i++) { jp_free(qs[i].qid); jp_free(qs[i].text); }
      nq = 0;
      if (rc < 0) goto fail;
    }
  }
  goto done;
fail:
  for (int i = 0; i < nq; i++) { jp_free(qs[i].qid); jp_free(qs[i].text); }
  ret = cli_fail("search", rc);
done:
  free(line);
  jp_free(Q);
  jp_encoder_destroy(enc);
  jp_pool_destroy(pool);
  jp_model_close(m);
  jp_store_close(s);
  jp_arena_fini(&arena);
  jp_buf_fini(&out);
  restrict_free(&ra);
  return ret;
}
