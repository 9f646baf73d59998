/* ops_search.c: Search - encode the queries (batcher), ask one replica of
 * every partition (fan-out with failover), merge.
 *
 * Merge: each partition returns its own top k per query (a global top-k
 * hit is in the top k of its partition), so the union of the answers,
 * ordered by score and then by passage id (types.proto: ties go to the
 * smaller passage id), cut at k and renumbered 1..k is exactly the top k of
 * the partitions that answered.
 *
 * Coverage: a partition that failed (no live replica, every replica
 * failed, or the deadline) is listed in coverage.failed with the reason
 * and degraded is set. With require_full_coverage such an answer becomes
 * UNAVAILABLE naming the partitions. If no partition answered at all the
 * request fails (UNAVAILABLE, or DEADLINE_EXCEEDED when time ran out), as
 * Elasticsearch does when all shards fail: an empty "degraded" list would
 * read as "nothing matched". A request error reported by a shard
 * (INVALID_ARGUMENT: e.g. ncells above the index's centroid count) is the
 * caller's and is returned as such.
 *
 * Thread-safety / allocation: see coord.h (one thread at a time; arena). */
#include "coord.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index/part.h"
#include "rpc/check.h"
#include "rpc/limits.h"
#include "util/err.h"
#include "util/log.h"

/* RAGatouille's default k. */
#define SEARCH_DEFAULT_K 10

struct search_st {
  const Japlaid__V1__SearchRequest *r;
  const char **texts;
  size_t *lens;
  float *Q;
  Japlaid__V1__ShardSearchRequest sreq;
  Japlaid__V1__SearchParams params;
  int k;
};

int cop_check_search(const Japlaid__V1__SearchRequest *r)
{
  int rc;
  if ((rc = rpc_check_count(r->n_queries, 1, JP_RPC_MAX_QUERIES, "queries (count)")) < 0) return rc;
  for (size_t i = 0; i < r->n_queries; i++)
    if ((rc = rpc_check_str(r->queries[i], 1, JP_RPC_MAX_QUERY_BYTES, "queries[%zu]", i)) < 0)
      return rc;
  const Japlaid__V1__SearchParams *p = r->params;
  if (p) {
    if (p->k > JP_MAX_K) return jp_err(JP_EINVAL, "k: %u is outside 1..%d", p->k, JP_MAX_K);
    if (p->ndocs > JP_MAX_NDOCS)
      return jp_err(JP_EINVAL, "ndocs: %u is above the limit %d", p->ndocs, JP_MAX_NDOCS);
    if (p->centroid_score_threshold_opt_case ==
          JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD &&
        !isfinite(p->centroid_score_threshold))
      return jp_err(JP_EINVAL, "centroid_score_threshold: must be a finite number");
  }
  if ((rc = rpc_check_count(r->n_doc_ids, 0, JP_RPC_MAX_DOC_IDS, "doc_ids (count)")) < 0) return rc;
  for (size_t i = 0; i < r->n_doc_ids; i++)
    if ((rc = rpc_check_str(r->doc_ids[i], 1, JP_RPC_MAX_DOC_ID_BYTES, "doc_ids[%zu]", i)) < 0)
      return rc;
  if ((rc = rpc_check_count(r->n_filters, 0, JP_RPC_MAX_FILTERS, "filters (count)")) < 0) return rc;
  for (size_t i = 0; i < r->n_filters; i++) {
    const Japlaid__V1__MetadataFilter *f = r->filters[i];
    if (!f) return jp_err(JP_EINVAL, "filters[%zu]: missing", i);
    if ((rc = rpc_check_str(f->key, 1, JP_RPC_MAX_FILTER_KEY_BYTES, "filters[%zu].key", i)) < 0 ||
        (rc = rpc_check_str(f->value, 0, JP_RPC_MAX_FILTER_VALUE_BYTES, "filters[%zu].value",
                            i)) < 0)
      return rc;
  }
  return 0;
}

struct mhit {
  const Japlaid__V1__Hit *h;
};

static int mhit_cmp(const void *a, const void *b)
{
  const Japlaid__V1__Hit *x = ((const struct mhit *)a)->h, *y = ((const struct mhit *)b)->h;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return x->passage_id < y->passage_id ? -1 : x->passage_id > y->passage_id;
}

static char *dup(struct jp_arena *a, const char *s)
{
  return jp_arena_strndup(a, s ? s : "", s ? strlen(s) : 0);
}

/* Merged hits of query q into the arena. */
static int merge_query(struct cop *op, struct search_st *st, size_t q, Japlaid__V1__QueryHits **out)
{
  struct jp_arena *a = op->arena;
  const struct fan *f = &op->fan;
  size_t total = 0;
  for (int i = 0; i < f->n; i++)
    if (f->slots[i].rc == 0)
      total += ((const Japlaid__V1__ShardSearchResponse *)f->slots[i].resp)->results[q]->n_hits;
  Japlaid__V1__QueryHits *qh =
    (Japlaid__V1__QueryHits *)cop_new(a, &japlaid__v1__query_hits__descriptor);
  struct mhit *all = total ? jp_arena_alloc(a, total * sizeof *all) : NULL;
  if (!qh || (total && !all)) return jp_err(JP_ENOMEM, "merging search results");
  size_t n = 0;
  for (int i = 0; i < f->n; i++) {
    if (f->slots[i].rc) continue;
    const Japlaid__V1__QueryHits *ph =
      ((const Japlaid__V1__ShardSearchResponse *)f->slots[i].resp)->results[q];
    for (size_t h = 0; h < ph->n_hits; h++) all[n++].h = ph->hits[h];
  }
  qsort(all, n, sizeof *all, mhit_cmp);
  size_t k = n < (size_t)st->k ? n : (size_t)st->k;
  if (k) {
    Japlaid__V1__Hit *hits = jp_arena_alloc(a, k * sizeof *hits);
    qh->hits = jp_arena_alloc(a, k * sizeof *qh->hits);
    if (!hits || !qh->hits) return jp_err(JP_ENOMEM, "merging search results");
    for (size_t i = 0; i < k; i++) {
      const Japlaid__V1__Hit *src = all[i].h;
      japlaid__v1__hit__init(&hits[i]);
      hits[i].score = src->score;
      hits[i].rank = (uint32_t)(i + 1);
      hits[i].passage_id = src->passage_id;
      hits[i].content = dup(a, src->content);
      hits[i].document_id = dup(a, src->document_id);
      hits[i].document_metadata = dup(a, src->document_metadata);
      if (!hits[i].content || !hits[i].document_id || !hits[i].document_metadata)
        return jp_err(JP_ENOMEM, "merging search results");
      qh->hits[i] = &hits[i];
    }
  }
  qh->n_hits = k;
  *out = qh;
  return 0;
}

static void search_fanned(struct fan *f)
{
  struct cop *op = f->ud;
  struct search_st *st = op->state;
  struct coord *co = op->co;
  int rc, answered = 0;
  char line[sizeof op->err];

  /* An answer of the wrong shape counts as that partition failing. */
  for (int i = 0; i < f->n; i++) {
    struct fan_slot *s = &f->slots[i];
    if (s->rc) continue;
    const Japlaid__V1__ShardSearchResponse *r = (const Japlaid__V1__ShardSearchResponse *)s->resp;
    int bad = r->n_results != st->r->n_queries;
    for (size_t q = 0; !bad && q < r->n_results; q++) bad = !r->results[q];
    if (bad) {
      s->rc = JP_ERPC;
      s->status = GRPC_STATUS_INTERNAL;
      snprintf(s->reason, sizeof s->reason, "malformed answer (%zu result lists for %zu queries)",
               r->n_results, st->r->n_queries);
    }
  }
  if ((rc = cop_request_error(f)) < 0) goto fail;
  op->coverage = cop_coverage(op->arena, co, f, &answered);
  if (!op->coverage) {
    rc = jp_err(JP_ENOMEM, "coverage");
    goto fail;
  }
  if (answered < f->n) {
    cop_failures_line(f, line, sizeof line);
    int all_late = 1;
    for (int i = 0; i < f->n; i++)
      if (f->slots[i].rc && f->slots[i].status != GRPC_STATUS_DEADLINE_EXCEEDED) all_late = 0;
    if (answered == 0) {
      rc = jp_err(all_late ? JP_ETIMEOUT : JP_EUNAVAIL, "no partition answered (0 of %d): %s",
                  f->n, line);
      goto fail;
    }
    if (st->r->require_full_coverage) {
      rc = jp_err(JP_EUNAVAIL, "partial coverage (%d of %d partitions answered) and "
                  "require_full_coverage is set: %s", answered, f->n, line);
      goto fail;
    }
  }
  Japlaid__V1__SearchResponse *resp =
    (Japlaid__V1__SearchResponse *)cop_new(op->arena, &japlaid__v1__search_response__descriptor);
  if (!resp || !(resp->results = jp_arena_calloc(op->arena, st->r->n_queries,
                                                 sizeof *resp->results))) {
    rc = jp_err(JP_ENOMEM, "search response");
    goto fail;
  }
  for (size_t q = 0; q < st->r->n_queries; q++)
    if ((rc = merge_query(op, st, q, &resp->results[q])) < 0) goto fail;
  resp->n_results = st->r->n_queries;
  resp->coverage = op->coverage;
  resp->degraded = answered < f->n;
  if (resp->degraded) {
    metrics_degraded(co->met);
    JP_LOG_DEBUG("degraded answer: %d of %d partitions: %s", answered, f->n, line);
  }
  fan_fini(f);
  cop_finish(op, &resp->base);
  return;
fail:
  fan_fini(f);
  cop_fail(op, rc);
}

static void search_encoded(struct qenc *q, int rc, const char *err)
{
  struct cop *op = q->ud;
  struct search_st *st = op->state;
  struct coord *co = op->co;
  if (rc < 0) {
    cop_fail(op, jp_err(rc, "%s", err ? err : jp_strerror(rc)));
    return;
  }
  Japlaid__V1__ShardSearchRequest *sr = &st->sreq;
  japlaid__v1__shard_search_request__init(sr);
  sr->n_queries = (uint32_t)st->r->n_queries;
  sr->nq = (uint32_t)co->qlen;
  sr->dim = (uint32_t)co->dim;
  sr->queries.data = (uint8_t *)st->Q;
  sr->queries.len = st->r->n_queries * (size_t)co->qlen * (size_t)co->dim * sizeof(float);
  sr->params = &st->params;
  sr->n_doc_ids = st->r->n_doc_ids;
  sr->doc_ids = st->r->doc_ids;
  sr->n_filters = st->r->n_filters;
  sr->filters = st->r->filters;
  sr->model_identity = (char *)co->mi->identity;

  rc = cop_fan_all(op, "/japlaid.v1.Shard/Search", &japlaid__v1__shard_search_response__descriptor,
                   &sr->base, search_fanned);
  if (rc < 0) cop_fail(op, rc);
}

void cop_search(struct cop *op)
{
  const Japlaid__V1__SearchRequest *r = (const Japlaid__V1__SearchRequest *)op->req;
  struct coord *co = op->co;
  int rc;
  if ((rc = cop_check_search(r)) < 0) {
    cop_fail(op, rc);
    return;
  }
  /* Admission. Past the shards' capacity, searches queue at the shards
   * until every one of them waits out its deadline and nothing useful is
   * answered (measured: static model, 2 shards on 2 cores, 400 qps offered
   * -> 6 answered per second). Bounding the searches in flight bounds that
   * queue: the excess is refused at once, where a client can retry
   * elsewhere, and the admitted ones keep their latency. The encoder has its
   * own, deadline-aware admission (batcher.c). */
  int inflight = atomic_fetch_add(&co->searches_in_flight, 1);
  op->admitted = 1;
  if (inflight >= co->o.max_inflight_searches) {
    cop_fail(op, jp_err(JP_EUNAVAIL, "overloaded: %d searches in flight "
                        "(--max-inflight-searches %d)", inflight, co->o.max_inflight_searches));
    return;
  }
  struct search_st *st = jp_arena_calloc(op->arena, 1, sizeof *st);
  size_t n = r->n_queries;
  if (st) {
    st->texts = jp_arena_alloc(op->arena, n * sizeof *st->texts);
    st->lens = jp_arena_alloc(op->arena, n * sizeof *st->lens);
    st->Q = jp_arena_alloc_aligned(op->arena,
                                   n * (size_t)co->qlen * (size_t)co->dim * sizeof(float));
  }
  if (!st || !st->texts || !st->lens || !st->Q) {
    cop_fail(op, jp_err(JP_ENOMEM, "search state"));
    return;
  }
  st->r = r;
  op->state = st;
  japlaid__v1__search_params__init(&st->params);
  if (r->params) st->params = *r->params;
  st->params.base.unknown_fields = NULL;
  st->params.base.n_unknown_fields = 0;
  if (st->params.k == 0) st->params.k = SEARCH_DEFAULT_K;
  st->k = (int)st->params.k;
  for (size_t i = 0; i < n; i++) {
    st->texts[i] = r->queries[i];
    st->lens[i] = strlen(r->queries[i]);
  }
  op->enc = (struct qenc){st->texts, st->lens, (int)n, st->Q, op->deadline_ns, search_encoded,
                          op, NULL};
  if ((rc = batcher_submit(co->bat, &op->enc)) < 0) cop_fail(op, rc);
}
