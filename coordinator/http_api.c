/* http_api.c: the HTTP/JSON contract, as conversions to and from the
 * japlaid.v1 messages (the same operations serve both transports).
 *
 * Requests are parsed strictly: a key the endpoint does not know is an
 * error (a misspelt "qeury" or "filter" would otherwise be ignored and
 * return plausible but wrong results), a value of the wrong type is an
 * error naming the key, and strings may not contain NUL (the wire strings
 * are C strings). Responses use RAGatouille's result fields.
 *
 * Thread-safety: pure functions of their arguments (renderers read the
 * cluster under its lock). Allocation: requests are built in the caller's
 * arena; output goes to a jp_buf. */
#include "coord.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "index/part.h"
#include "rpc/limits.h"
#include "rpc/pbjson.h"
#include "rpc/status.h"
#include "util/err.h"

/* deadline_ms accepted over HTTP: up to 10 minutes. */
#define API_MAX_DEADLINE_MS 600000

/* ---- parsing helpers ------------------------------------------------------------ */

static int load(const char *body, size_t len, json_t **out)
{
  int rc = jp_json_loadb(body, len, "request body", out);
  if (rc < 0) return rc;
  if (!json_is_object(*out)) {
    json_decref(*out);
    *out = NULL;
    return jp_err(JP_EINVAL, "request body: expected a JSON object");
  }
  return 0;
}

/* Every key of obj must be in known (NULL-terminated). */
static int only_keys(json_t *obj, const char *const *known)
{
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    int ok = 0;
    for (const char *const *k = known; *k && !ok; k++) ok = !strcmp(*k, key);
    if (!ok) {
      char list[400];
      size_t n = 0;
      for (const char *const *k = known; *k && n < sizeof list; k++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", k == known ? "" : ", ", *k);
      return jp_err(JP_EINVAL, "unknown field \"%.100s\" (this endpoint takes: %s)", key, list);
    }
  }
  return 0;
}

/* A JSON string into the arena; NUL inside is refused. */
static int str_of(json_t *v, struct jp_arena *a, char **out, const char *field_fmt, ...)
  __attribute__((format(printf, 4, 5)));

static int str_of(json_t *v, struct jp_arena *a, char **out, const char *field_fmt, ...)
{
  char field[160];
  va_list ap;
  va_start(ap, field_fmt);
  vsnprintf(field, sizeof field, field_fmt, ap);
  va_end(ap);
  if (!json_is_string(v)) return jp_err(JP_EINVAL, "%s: must be a string", field);
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  if (strlen(s) != n) return jp_err(JP_EINVAL, "%s: contains a NUL character", field);
  *out = jp_arena_strndup(a, s, n);
  return *out ? 0 : jp_err(JP_ENOMEM, "request");
}

/* An integer in [min, max] (absent: def). */
static int int_of(json_t *obj, const char *key, int64_t min, int64_t max, int64_t def,
                  int64_t *out)
{
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_integer(v)) return jp_err(JP_EINVAL, "%s: must be an integer", key);
  json_int_t x = json_integer_value(v);
  if (x < min || x > max)
    return jp_err(JP_EINVAL, "%s: %lld is outside %lld..%lld", key, (long long)x, (long long)min,
                  (long long)max);
  *out = x;
  return 0;
}

static int bool_of(json_t *obj, const char *key, protobuf_c_boolean *out)
{
  int b = 0;
  int rc = jp_json_get_bool(obj, key, 0, &b);
  *out = b;
  return rc;
}

/* An array of strings (each checked later by the operation). */
static int strs_of(json_t *obj, const char *key, size_t max, struct jp_arena *a, char ***out,
                   size_t *n_out)
{
  json_t *v = json_object_get(obj, key);
  *out = NULL;
  *n_out = 0;
  if (!v || json_is_null(v)) return 0;
  if (!json_is_array(v)) return jp_err(JP_EINVAL, "%s: must be an array of strings", key);
  size_t n = json_array_size(v);
  if (n > max) return jp_err(JP_EINVAL, "%s: %zu entries, the limit is %zu", key, n, max);
  char **s = jp_arena_alloc(a, (n ? n : 1) * sizeof *s);
  if (!s) return jp_err(JP_ENOMEM, "request");
  for (size_t i = 0; i < n; i++) {
    int rc = str_of(json_array_get(v, i), a, &s[i], "%s[%zu]", key, i);
    if (rc < 0) return rc;
  }
  *out = s;
  *n_out = n;
  return 0;
}

/* A filter value: a string as is, a number or boolean as its JSON text. */
static int filter_value(json_t *v, struct jp_arena *a, char **out, const char *field)
{
  if (json_is_string(v)) return str_of(v, a, out, "%s", field);
  if (json_is_number(v) || json_is_boolean(v)) {
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!t) return jp_err(JP_ENOMEM, "request");
    *out = jp_arena_strndup(a, t, strlen(t));
    free(t);
    return *out ? 0 : jp_err(JP_ENOMEM, "request");
  }
  return jp_err(JP_EINVAL, "%s: must be a string, number or boolean", field);
}

static int filters_of(json_t *obj, struct jp_arena *a, Japlaid__V1__MetadataFilter ***out,
                      size_t *n_out)
{
  json_t *v = json_object_get(obj, "filters");
  *out = NULL;
  *n_out = 0;
  if (!v || json_is_null(v)) return 0;
  size_t n = json_is_object(v) ? json_object_size(v) : json_is_array(v) ? json_array_size(v) : 0;
  if (!json_is_object(v) && !json_is_array(v))
    return jp_err(JP_EINVAL, "filters: must be {\"key\": \"value\", ...} or "
                  "[{\"key\": ..., \"value\": ...}, ...]");
  if (n > JP_RPC_MAX_FILTERS)
    return jp_err(JP_EINVAL, "filters: %zu given, the limit is %d", n, JP_RPC_MAX_FILTERS);
  Japlaid__V1__MetadataFilter **fs = jp_arena_alloc(a, (n ? n : 1) * sizeof *fs);
  if (!fs) return jp_err(JP_ENOMEM, "request");
  int rc;
  size_t i = 0;
  if (json_is_object(v)) {
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
      Japlaid__V1__MetadataFilter *f = (Japlaid__V1__MetadataFilter *)cop_new(
        a, &japlaid__v1__metadata_filter__descriptor);
      char field[300];
      if (!f || !(f->key = jp_arena_strndup(a, key, strlen(key))))
        return jp_err(JP_ENOMEM, "request");
      snprintf(field, sizeof field, "filters.%.200s", key);
      if ((rc = filter_value(val, a, &f->value, field)) < 0) return rc;
      fs[i++] = f;
    }
  } else {
    for (; i < n; i++) {
      json_t *e = json_array_get(v, i);
      static const char *const keys[] = {"key", "value", NULL};
      char field[64];
      Japlaid__V1__MetadataFilter *f = (Japlaid__V1__MetadataFilter *)cop_new(
        a, &japlaid__v1__metadata_filter__descriptor);
      if (!f) return jp_err(JP_ENOMEM, "request");
      if (!json_is_object(e))
        return jp_err(JP_EINVAL, "filters[%zu]: must be {\"key\": ..., \"value\": ...}", i);
      if ((rc = only_keys(e, keys)) < 0) return rc;
      if ((rc = str_of(json_object_get(e, "key"), a, &f->key, "filters[%zu].key", i)) < 0)
        return rc;
      snprintf(field, sizeof field, "filters[%zu].value", i);
      if ((rc = filter_value(json_object_get(e, "value"), a, &f->value, field)) < 0) return rc;
      fs[i] = f;
    }
  }
  *out = fs;
  *n_out = i;
  return 0;
}

/* ---- request parsers -------------------------------------------------------------- */

int api_parse_search(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__SearchRequest **out, int *single)
{
  static const char *const keys[] = {
    "query", "queries", "k", "ncells", "centroid_score_threshold", "ndocs", "exhaustive",
    "doc_ids", "filters", "require_full_coverage", "deadline_ms", NULL};
  json_t *j = NULL;
  int rc;
  int64_t x;
  if ((rc = load(body, len, &j)) < 0) return rc;
  Japlaid__V1__SearchRequest *r =
    (Japlaid__V1__SearchRequest *)cop_new(a, &japlaid__v1__search_request__descriptor);
  Japlaid__V1__SearchParams *p =
    (Japlaid__V1__SearchParams *)cop_new(a, &japlaid__v1__search_params__descriptor);
  if (!r || !p) {
    rc = jp_err(JP_ENOMEM, "request");
    goto out;
  }
  r->params = p;
  if ((rc = only_keys(j, keys)) < 0) goto out;
  json_t *q1 = json_object_get(j, "query"), *qn = json_object_get(j, "queries");
  if ((q1 && qn) || (!q1 && !qn)) {
    rc = jp_err(JP_EINVAL, "give exactly one of \"query\" (a string) or \"queries\" (an array "
                "of 1..%d strings)", JP_RPC_MAX_QUERIES);
    goto out;
  }
  *single = q1 != NULL;
  if (q1) {
    r->queries = jp_arena_alloc(a, sizeof *r->queries);
    if (!r->queries) {
      rc = jp_err(JP_ENOMEM, "request");
      goto out;
    }
    if ((rc = str_of(q1, a, &r->queries[0], "query")) < 0) goto out;
    r->n_queries = 1;
    /* Name the field the user sent, not the wire's queries[0]. */
    if (strlen(r->queries[0]) == 0) {
      rc = jp_err(JP_EINVAL, "query: must not be empty");
      goto out;
    }
    if (strlen(r->queries[0]) > JP_RPC_MAX_QUERY_BYTES) {
      rc = jp_err(JP_EINVAL, "query: %zu bytes, the limit is %d bytes", strlen(r->queries[0]),
                  JP_RPC_MAX_QUERY_BYTES);
      goto out;
    }
  } else {
    if (!json_is_array(qn)) {
      rc = jp_err(JP_EINVAL, "queries: must be an array of strings");
      goto out;
    }
    if (json_array_size(qn) == 0 || json_array_size(qn) > JP_RPC_MAX_QUERIES) {
      rc = jp_err(JP_EINVAL, "queries: %zu given, 1..%d allowed per request", json_array_size(qn),
                  JP_RPC_MAX_QUERIES);
      goto out;
    }
    if ((rc = strs_of(j, "queries", JP_RPC_MAX_QUERIES, a, &r->queries, &r->n_queries)) < 0)
      goto out;
  }
  if ((rc = int_of(j, "k", 1, JP_MAX_K, 10, &x)) < 0) goto out;
  p->k = (uint32_t)x;
  /* ncells cannot exceed the number of centroids (2^31 here); the shards
   * check the index's own count. */
  if ((rc = int_of(j, "ncells", 0, INT32_MAX, 0, &x)) < 0) goto out;
  p->ncells = (uint32_t)x;
  if ((rc = int_of(j, "ndocs", 0, JP_MAX_NDOCS, 0, &x)) < 0) goto out;
  p->ndocs = (uint32_t)x;
  json_t *thr = json_object_get(j, "centroid_score_threshold");
  if (thr && !json_is_null(thr)) {
    if (!json_is_number(thr) || !isfinite(json_number_value(thr))) {
      rc = jp_err(JP_EINVAL, "centroid_score_threshold: must be a finite number");
      goto out;
    }
    p->centroid_score_threshold_opt_case =
      JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD;
    p->centroid_score_threshold = (float)json_number_value(thr);
  }
  if ((rc = bool_of(j, "exhaustive", &p->exhaustive)) < 0 ||
      (rc = bool_of(j, "require_full_coverage", &r->require_full_coverage)) < 0)
    goto out;
  if ((rc = strs_of(j, "doc_ids", JP_RPC_MAX_DOC_IDS, a, &r->doc_ids, &r->n_doc_ids)) < 0 ||
      (rc = filters_of(j, a, &r->filters, &r->n_filters)) < 0)
    goto out;
  if ((rc = int_of(j, "deadline_ms", 1, API_MAX_DEADLINE_MS, 0, &x)) < 0) goto out;
  r->timeout_ms = (uint32_t)x;
  rc = cop_check_search(r);
  if (rc == 0) *out = r;
out:
  json_decref(j);
  return rc;
}

int api_parse_rerank(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__RerankRequest **out)
{
  static const char *const keys[] = {"query", "documents", "k", NULL};
  json_t *j = NULL;
  int64_t x;
  int rc;
  if ((rc = load(body, len, &j)) < 0) return rc;
  Japlaid__V1__RerankRequest *r =
    (Japlaid__V1__RerankRequest *)cop_new(a, &japlaid__v1__rerank_request__descriptor);
  if (!r) {
    rc = jp_err(JP_ENOMEM, "request");
    goto out;
  }
  if ((rc = only_keys(j, keys)) < 0) goto out;
  if ((rc = str_of(json_object_get(j, "query"), a, &r->query, "query")) < 0) goto out;
  if (!json_is_array(json_object_get(j, "documents"))) {
    rc = jp_err(JP_EINVAL, "documents: must be an array of strings");
    goto out;
  }
  if ((rc = strs_of(j, "documents", JP_RPC_MAX_RERANK_TEXTS, a, &r->texts, &r->n_texts)) < 0)
    goto out;
  if ((rc = int_of(j, "k", 1, JP_RPC_MAX_RERANK_TEXTS, 0, &x)) < 0) goto out;
  r->k = (uint32_t)x;
  *out = r;
out:
  json_decref(j);
  return rc;
}

int api_parse_encode(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__EncodeRequest **out)
{
  static const char *const keys[] = {"texts", "kind", NULL};
  json_t *j = NULL;
  int rc;
  if ((rc = load(body, len, &j)) < 0) return rc;
  Japlaid__V1__EncodeRequest *r =
    (Japlaid__V1__EncodeRequest *)cop_new(a, &japlaid__v1__encode_request__descriptor);
  const char *kind = "document";
  if (!r) {
    rc = jp_err(JP_ENOMEM, "request");
    goto out;
  }
  if ((rc = only_keys(j, keys)) < 0) goto out;
  if (!json_is_array(json_object_get(j, "texts"))) {
    rc = jp_err(JP_EINVAL, "texts: must be an array of strings");
    goto out;
  }
  if ((rc = strs_of(j, "texts", JP_RPC_MAX_ENCODE_TEXTS, a, &r->texts, &r->n_texts)) < 0 ||
      (rc = jp_json_get_str(j, "kind", "document", &kind)) < 0)
    goto out;
  if (!strcmp(kind, "query")) {
    r->kind = JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_QUERY;
  } else if (!strcmp(kind, "document")) {
    r->kind = JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_DOCUMENT;
  } else {
    rc = jp_err(JP_EINVAL, "kind: must be \"query\" or \"document\", not \"%.50s\"", kind);
    goto out;
  }
  *out = r;
out:
  json_decref(j);
  return rc;
}

int api_parse_upsert(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__UpsertRequest **out)
{
  static const char *const keys[] = {"documents", NULL};
  static const char *const dkeys[] = {"id", "text", "metadata", NULL};
  json_t *j = NULL;
  int rc;
  if ((rc = load(body, len, &j)) < 0) return rc;
  Japlaid__V1__UpsertRequest *r =
    (Japlaid__V1__UpsertRequest *)cop_new(a, &japlaid__v1__upsert_request__descriptor);
  json_t *docs = json_object_get(j, "documents");
  if (!r) {
    rc = jp_err(JP_ENOMEM, "request");
    goto out;
  }
  if ((rc = only_keys(j, keys)) < 0) goto out;
  if (!json_is_array(docs)) {
    rc = jp_err(JP_EINVAL, "documents: must be an array of {\"id\", \"text\", \"metadata\"}");
    goto out;
  }
  size_t n = json_array_size(docs);
  if (n == 0 || n > JP_RPC_MAX_DOCS_PER_WRITE) {
    rc = jp_err(JP_EINVAL, "documents: %zu given, 1..%d allowed per request", n,
                JP_RPC_MAX_DOCS_PER_WRITE);
    goto out;
  }
  r->documents = jp_arena_alloc(a, n * sizeof *r->documents);
  if (!r->documents) {
    rc = jp_err(JP_ENOMEM, "request");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_array_get(docs, i);
    Japlaid__V1__Document *doc =
      (Japlaid__V1__Document *)cop_new(a, &japlaid__v1__document__descriptor);
    if (!doc) {
      rc = jp_err(JP_ENOMEM, "request");
      goto out;
    }
    if (!json_is_object(d)) {
      rc = jp_err(JP_EINVAL, "documents[%zu]: must be an object", i);
      goto out;
    }
    if ((rc = only_keys(d, dkeys)) < 0) {
      char m[300];
      snprintf(m, sizeof m, "%s", jp_errmsg(rc));
      rc = jp_err(rc, "documents[%zu]: %s", i, m);
      goto out;
    }
    if ((rc = str_of(json_object_get(d, "id"), a, &doc->id, "documents[%zu].id", i)) < 0 ||
        (rc = str_of(json_object_get(d, "text"), a, &doc->text, "documents[%zu].text", i)) < 0)
      goto out;
    json_t *m = json_object_get(d, "metadata");
    if (m && !json_is_null(m)) {
      if (!json_is_object(m)) {
        rc = jp_err(JP_EINVAL, "documents[%zu].metadata: must be a JSON object", i);
        goto out;
      }
      char *t = json_dumps(m, JSON_COMPACT);
      if (!t) {
        rc = jp_err(JP_ENOMEM, "request");
        goto out;
      }
      doc->metadata = jp_arena_strndup(a, t, strlen(t));
      free(t);
      if (!doc->metadata) {
        rc = jp_err(JP_ENOMEM, "request");
        goto out;
      }
    }
    r->documents[i] = doc;
  }
  r->n_documents = n;
  *out = r;
out:
  json_decref(j);
  return rc;
}

int api_parse_delete(const char *body, size_t len, struct jp_arena *a,
                     Japlaid__V1__DeleteRequest **out)
{
  static const char *const keys[] = {"ids", NULL};
  json_t *j = NULL;
  int rc;
  if ((rc = load(body, len, &j)) < 0) return rc;
  Japlaid__V1__DeleteRequest *r =
    (Japlaid__V1__DeleteRequest *)cop_new(a, &japlaid__v1__delete_request__descriptor);
  if (!r) {
    rc = jp_err(JP_ENOMEM, "request");
    goto out;
  }
  if ((rc = only_keys(j, keys)) < 0) goto out;
  if (!json_is_array(json_object_get(j, "ids"))) {
    rc = jp_err(JP_EINVAL, "ids: must be an array of document id strings");
    goto out;
  }
  if ((rc = strs_of(j, "ids", JP_RPC_MAX_DOCS_PER_WRITE, a, &r->document_ids,
                    &r->n_document_ids)) < 0)
    goto out;
  if (r->n_document_ids == 0) {
    rc = jp_err(JP_EINVAL, "ids: 0 given, 1..%d allowed per request", JP_RPC_MAX_DOCS_PER_WRITE);
    goto out;
  }
  *out = r;
out:
  json_decref(j);
  return rc;
}

/* ---- rendering -------------------------------------------------------------------- */

#define P(x)                        \
  do {                              \
    if ((rc = (x)) < 0) return rc;  \
  } while (0)

static int render_hits(const Japlaid__V1__QueryHits *qh, struct jp_buf *b)
{
  int rc;
  P(jp_buf_putc(b, '['));
  for (size_t i = 0; qh && i < qh->n_hits; i++) {
    const Japlaid__V1__Hit *h = qh->hits[i];
    P(jp_buf_puts(b, i ? ",{\"content\":" : "{\"content\":"));
    P(jp_pbjson_str(b, h->content));
    P(jp_buf_puts(b, ",\"score\":"));
    P(jp_buf_json_float(b, h->score));
    P(jp_buf_printf(b, ",\"rank\":%u,\"document_id\":", h->rank));
    P(jp_pbjson_str(b, h->document_id));
    P(jp_buf_printf(b, ",\"passage_id\":%llu,\"document_metadata\":",
                    (unsigned long long)h->passage_id));
    P(jp_pbjson_json_text(b, h->document_metadata));
    P(jp_buf_putc(b, '}'));
  }
  return jp_buf_putc(b, ']');
}

static int render_search(const Japlaid__V1__SearchResponse *r, int single, struct jp_buf *b)
{
  int rc;
  P(jp_buf_puts(b, "{\"results\":"));
  if (single) {
    P(render_hits(r->n_results ? r->results[0] : NULL, b));
  } else {
    P(jp_buf_putc(b, '['));
    for (size_t q = 0; q < r->n_results; q++) {
      if (q) P(jp_buf_putc(b, ','));
      P(render_hits(r->results[q], b));
    }
    P(jp_buf_putc(b, ']'));
  }
  P(jp_buf_puts(b, ",\"coverage\":"));
  P(jp_pbjson_coverage(b, r->coverage));
  return jp_buf_printf(b, ",\"degraded\":%s}", r->degraded ? "true" : "false");
}

static int render_rerank(const Japlaid__V1__RerankResponse *r, struct jp_buf *b)
{
  int rc;
  P(jp_buf_puts(b, "{\"results\":["));
  for (size_t i = 0; i < r->n_hits; i++) {
    const Japlaid__V1__RerankHit *h = r->hits[i];
    P(jp_buf_puts(b, i ? ",{\"content\":" : "{\"content\":"));
    P(jp_pbjson_str(b, h->content));
    P(jp_buf_puts(b, ",\"score\":"));
    P(jp_buf_json_float(b, h->score));
    P(jp_buf_printf(b, ",\"rank\":%u,\"result_index\":%u}", h->rank, h->result_index));
  }
  return jp_buf_puts(b, "]}");
}

static int render_encode(const Japlaid__V1__EncodeResponse *r, struct jp_buf *b)
{
  int rc;
  P(jp_buf_puts(b, "{\"model_identity\":"));
  P(jp_pbjson_str(b, r->model_identity));
  P(jp_buf_puts(b, ",\"embeddings\":["));
  for (size_t i = 0; i < r->n_embeddings; i++) {
    const Japlaid__V1__Embedding *e = r->embeddings[i];
    const float *v = (const float *)(const void *)e->data.data;
    P(jp_buf_printf(b, "%s{\"n_tokens\":%u,\"dim\":%u,\"vectors\":[", i ? "," : "", e->n_tokens,
                    e->dim));
    for (uint32_t t = 0; t < e->n_tokens; t++) {
      P(jp_buf_puts(b, t ? ",[" : "["));
      for (uint32_t d = 0; d < e->dim; d++) {
        if (d) P(jp_buf_putc(b, ','));
        P(jp_buf_json_float(b, v[(size_t)t * e->dim + d]));
      }
      P(jp_buf_putc(b, ']'));
    }
    P(jp_buf_puts(b, "]}"));
  }
  return jp_buf_puts(b, "]}");
}

static const char *state_name(const struct replica_view *v)
{
  if (v->check == CHECK_REFUSED) return "refused";
  if (!v->up) return "down";
  return v->check == CHECK_OK ? "live" : "unverified";
}

int api_render_replicas(struct coord *co, struct jp_buf *b)
{
  int rc, first = 1;
  P(jp_buf_putc(b, '['));
  for (int p = 0; p < co->cl.n_partitions; p++)
    for (int r = 0; r < co->cl.parts[p].n_replicas; r++) {
      struct replica_view v;
      cluster_view(&co->cl, p, r, &v);
      P(jp_buf_printf(b, "%s{\"partition\":%d,\"address\":", first ? "" : ",", p));
      first = 0;
      P(jp_pbjson_str(b, co->cl.parts[p].replicas[r].addr));
      P(jp_buf_printf(b, ",\"state\":\"%s\",\"reason\":", state_name(&v)));
      P(jp_pbjson_str(b, v.reason));
      P(jp_buf_puts(b, ",\"codebook\":"));
      P(jp_pbjson_str(b, v.codebook));
      P(jp_buf_printf(b, ",\"outstanding\":%d}", v.outstanding));
    }
  return jp_buf_putc(b, ']');
}

static int render_stats(struct coord *co, const Japlaid__V1__StatsResponse *r, struct jp_buf *b)
{
  int rc;
  P(jp_buf_puts(b, "{\"model_name\":"));
  P(jp_pbjson_str(b, r->model_name));
  P(jp_buf_puts(b, ",\"model_identity\":"));
  P(jp_pbjson_str(b, r->model_identity));
  P(jp_buf_printf(b, ",\"dim\":%u,\"n_documents\":%llu,\"n_passages\":%llu,\"n_embeddings\":%llu,"
                  "\"total_bytes\":%llu,\"coverage\":",
                  r->dim, (unsigned long long)r->n_documents, (unsigned long long)r->n_passages,
                  (unsigned long long)r->n_embeddings, (unsigned long long)r->total_bytes));
  P(jp_pbjson_coverage(b, r->coverage));
  P(jp_buf_puts(b, ",\"partitions\":["));
  for (size_t i = 0; i < r->n_partitions; i++) {
    const Japlaid__V1__PartitionReport *pr = r->partitions[i];
    P(jp_buf_printf(b, "%s{\"partition\":%u,\"address\":", i ? "," : "", pr->partition));
    P(jp_pbjson_str(b, pr->address));
    P(jp_buf_puts(b, ",\"stats\":"));
    if (pr->stats) P(jp_pbjson_partition_stats(b, pr->stats));
    else P(jp_buf_puts(b, "null"));
    P(jp_buf_putc(b, '}'));
  }
  P(jp_buf_puts(b, "],\"replicas\":"));
  P(api_render_replicas(co, b));
  return jp_buf_putc(b, '}');
}

int api_render(const struct cop *op, int single, struct jp_buf *b)
{
  int rc;
  if (op->rc < 0) {
    grpc_status_code st = rpc_status_from_err(op->rc);
    P(jp_buf_puts(b, "{\"error\":"));
    P(jp_pbjson_str(b, op->err));
    P(jp_buf_printf(b, ",\"code\":\"%s\",\"status\":%d", rpc_status_name(st),
                    api_http_status(op->rc)));
    if (op->coverage) {
      P(jp_buf_puts(b, ",\"coverage\":"));
      P(jp_pbjson_coverage(b, op->coverage));
    }
    return jp_buf_putc(b, '}');
  }
  switch (op->kind) {
  case COP_SEARCH: return render_search((const Japlaid__V1__SearchResponse *)op->resp, single, b);
  case COP_RERANK: return render_rerank((const Japlaid__V1__RerankResponse *)op->resp, b);
  case COP_ENCODE: return render_encode((const Japlaid__V1__EncodeResponse *)op->resp, b);
  case COP_UPSERT: {
    const Japlaid__V1__UpsertResponse *r = (const Japlaid__V1__UpsertResponse *)op->resp;
    P(jp_buf_printf(b, "{\"n_documents\":%u,\"n_passages\":%u,\"coverage\":", r->n_documents,
                    r->n_passages));
    P(jp_pbjson_coverage(b, r->coverage));
    return jp_buf_putc(b, '}');
  }
  case COP_DELETE: {
    const Japlaid__V1__DeleteResponse *r = (const Japlaid__V1__DeleteResponse *)op->resp;
    P(jp_buf_printf(b, "{\"n_deleted\":%u,\"coverage\":", r->n_deleted));
    P(jp_pbjson_coverage(b, r->coverage));
    return jp_buf_putc(b, '}');
  }
  case COP_STATS: return render_stats(op->co, (const Japlaid__V1__StatsResponse *)op->resp, b);
  default: return jp_err(JP_EINTERNAL, "no renderer for %s", cop_kind_name(op->kind));
  }
}

int api_render_healthz(struct coord *co, struct jp_buf *b)
{
  int rc, ok = 1, live_parts = 0;
  struct jp_buf parts;
  jp_buf_init(&parts, 0);
  for (int p = 0; p < co->cl.n_partitions; p++) {
    int live = cluster_live(&co->cl, p);
    ok &= live > 0;
    live_parts += live > 0;
    if ((rc = jp_buf_printf(&parts, "%s{\"partition\":%d,\"live_replicas\":%d,\"replicas\":%d}",
                            p ? "," : "", p, live, co->cl.parts[p].n_replicas)) < 0) {
      jp_buf_fini(&parts);
      return rc;
    }
  }
  rc = jp_buf_printf(b, "{\"status\":\"%s\",\"partitions_total\":%d,\"partitions_live\":%d,"
                     "\"partitions\":[%s],\"replicas\":",
                     ok ? "ok" : "degraded", co->cl.n_partitions, live_parts,
                     parts.data ? parts.data : "");
  jp_buf_fini(&parts);
  if (rc < 0) return rc;
  P(api_render_replicas(co, b));
  P(jp_buf_putc(b, '}'));
  return ok;
}

int api_http_status(int rc)
{
  switch (rc) {
  case 0: return 200;
  case JP_EINVAL: return 400;
  case JP_ETOOBIG: return 413;
  case JP_ENOTFOUND: return 404;
  case JP_ETIMEOUT: return 504;
  case JP_EMISMATCH: return 409;
  case JP_EUNSUPPORTED: return 501;
  case JP_EUNAVAIL:
  case JP_ERPC:
  case JP_ECANCELLED:
  case JP_ENOMEM: return 503;
  default: return 500;
  }
}
