/* h_search.c: Shard.Search - PLAID (or exhaustive) search of this
 * partition for a batch of encoded queries.
 *
 * Validates the whole request before any work (shape, dim, finite values,
 * knobs, restriction), then runs the queries one after another on this
 * worker thread, checking the deadline before each one: a batch whose
 * deadline passes midway stops and answers DEADLINE_EXCEEDED rather than
 * finishing work nobody waits for. Hits and their strings live in the
 * call's arena. */
#include "shard.h"

#include "rpc/check.h"
#include "rpc/limits.h"
#include "util/err.h"

/* The hits of one query as wire messages (strings point into the arena). */
static int to_hits(struct rpc_ctx *rc, const struct jp_result *res, int n,
                   Japlaid__V1__QueryHits **out)
{
  struct jp_arena *a = rpc_ctx_arena(rc);
  Japlaid__V1__QueryHits *qh =
    (Japlaid__V1__QueryHits *)rpc_ctx_new(rc, &japlaid__v1__query_hits__descriptor);
  Japlaid__V1__Hit *hits = n ? jp_arena_alloc(a, (size_t)n * sizeof *hits) : NULL;
  Japlaid__V1__Hit **ptrs = n ? jp_arena_alloc(a, (size_t)n * sizeof *ptrs) : NULL;
  if (!qh || (n && (!hits || !ptrs))) return jp_err(JP_ENOMEM, "search response");
  for (int i = 0; i < n; i++) {
    japlaid__v1__hit__init(&hits[i]);
    hits[i].content = (char *)res[i].content;
    hits[i].score = res[i].score;
    hits[i].rank = (uint32_t)res[i].rank;
    hits[i].document_id = (char *)res[i].document_id;
    hits[i].passage_id = res[i].passage_id;
    hits[i].document_metadata = (char *)(res[i].metadata_json ? res[i].metadata_json : "");
    ptrs[i] = &hits[i];
  }
  qh->n_hits = (size_t)n;
  qh->hits = ptrs;
  *out = qh;
  return 0;
}

int h_search(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  struct shard *sh = rpc_ctx_app(rc);
  const Japlaid__V1__ShardSearchRequest *r = (const Japlaid__V1__ShardSearchRequest *)req;
  jp_store *st;
  int e;

  if ((e = shard_store(sh, &st)) < 0) return e;
  if ((e = shard_check_identity(sh, r->model_identity)) < 0) return e;
  if ((e = rpc_check_count(r->n_queries, 1, JP_RPC_MAX_QUERIES, "n_queries")) < 0 ||
      (e = rpc_check_count(r->nq, 1, JP_MAX_QUERY_TOKENS, "nq")) < 0)
    return e;
  if (r->dim != (uint32_t)sh->dim)
    return jp_err(JP_EINVAL, "dim: %u, this partition's vectors have %d", r->dim, sh->dim);
  const size_t per_query = (size_t)r->nq * (size_t)r->dim;
  const float *Q;
  if ((e = rpc_check_f32(&r->queries, (size_t)r->n_queries * per_query, &Q,
                         "queries (n_queries %u x nq %u x dim %u)", r->n_queries, r->nq, r->dim)) < 0)
    return e;
  struct jp_search_params sp;
  if ((e = shard_search_params(r->params, &sp)) < 0) return e;
  struct jp_restrict restr;
  if ((e = shard_restrict(r->doc_ids, r->n_doc_ids, r->filters, r->n_filters, rpc_ctx_arena(rc),
                          &restr)) < 0)
    return e;

  Japlaid__V1__ShardSearchResponse *out = (Japlaid__V1__ShardSearchResponse *)rpc_ctx_new(
    rc, &japlaid__v1__shard_search_response__descriptor);
  Japlaid__V1__QueryHits **results =
    jp_arena_calloc(rpc_ctx_arena(rc), r->n_queries, sizeof *results);
  if (!out || !results) return jp_err(JP_ENOMEM, "search response");
  for (uint32_t q = 0; q < r->n_queries; q++) {
    if ((e = rpc_ctx_check(rc)) < 0) return e;
    struct jp_result *res;
    int n;
    e = jp_store_search(st, Q + (size_t)q * per_query, (int)r->nq, &sp, &restr, sh->pool,
                        rpc_ctx_arena(rc), &res, &n);
    if (e < 0) return e;
    if ((e = to_hits(rc, res, n, &results[q])) < 0) return e;
  }
  out->n_results = r->n_queries;
  out->results = results;
  out->partition_id = sh->meta.partition_id;
  *resp = &out->base;
  return 0;
}
