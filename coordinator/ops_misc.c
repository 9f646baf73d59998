/* ops_misc.c: Rerank, Encode (no index: the coordinator's model only) and
 * Stats (every partition, through one live replica each).
 *
 * Rerank scores caller-given texts against a query by exact MaxSim
 * (common/index/maxsim.h, the same floor-at-0 rule as search), texts
 * encoded as documents (cut at doc_maxlen, as RAGatouille's rerank does).
 * Both run on an encoding worker.
 *
 * Thread-safety / allocation: see coord.h (one thread at a time; arena). */
#include "coord.h"

#include <math.h>
#include <string.h>

#include "index/maxsim.h"
#include "rpc/check.h"
#include "rpc/limits.h"
#include "util/clock.h"
#include "util/err.h"

/* Texts per jp_encode_docs call (as common/index/build.c). */
#define ENC_BATCH 64

/* Encode n texts as documents into one arena block: *vecs holds
 * sum(doclens) rows. */
static int encode_docs(struct cop *op, jp_encoder *enc, char **texts, size_t n, float **vecs,
                       int32_t **doclens)
{
  struct coord *co = op->co;
  struct jp_arena *a = op->arena;
  const size_t dm = (size_t)co->mi->colbert.doc_maxlen, dim = (size_t)co->dim;
  size_t *lens = jp_arena_alloc(a, n * sizeof *lens);
  *doclens = jp_arena_alloc(a, n * sizeof **doclens);
  *vecs = jp_arena_alloc_aligned(a, n * dm * dim * sizeof(float));
  if (!lens || !*doclens || !*vecs) return jp_err(JP_ENOMEM, "encoding %zu texts", n);
  for (size_t i = 0; i < n; i++) lens[i] = strlen(texts[i]);
  size_t off = 0;
  for (size_t g = 0; g < n; g += ENC_BATCH) {
    if (jp_now_ns() >= op->deadline_ns)
      return jp_err(JP_ETIMEOUT, "deadline exceeded while encoding (%zu of %zu texts done)", g, n);
    int m = (int)(n - g < ENC_BATCH ? n - g : ENC_BATCH);
    /* Rows go straight after the previous batch's: the capacity left always
     * covers m texts of doc_maxlen rows. */
    int rc = jp_encode_docs(enc, (const char *const *)texts + g, lens + g, m,
                            *vecs + off * dim, n * dm - off, *doclens + g);
    if (rc < 0) return rc;
    for (int j = 0; j < m; j++) off += (size_t)(*doclens)[g + j];
  }
  return 0;
}

/* ---- rerank ------------------------------------------------------------------------ */

static int rerank_run(struct cop *op, jp_encoder *enc)
{
  struct coord *co = op->co;
  struct jp_arena *a = op->arena;
  const Japlaid__V1__RerankRequest *r = (const Japlaid__V1__RerankRequest *)op->req;
  size_t n = r->n_texts;
  int k = r->k ? (int)r->k : (int)n, rc;
  float *Q = jp_arena_alloc_aligned(a, (size_t)co->qlen * (size_t)co->dim * sizeof(float));
  struct jp_ranked *ranked = jp_arena_alloc(a, (size_t)k * sizeof *ranked);
  if (!Q || !ranked) return jp_err(JP_ENOMEM, "rerank");
  const char *qt = r->query;
  size_t ql = strlen(qt);
  if ((rc = jp_encode_queries(enc, &qt, &ql, 1, Q)) < 0) return rc;
  float *D;
  int32_t *doclens;
  if ((rc = encode_docs(op, enc, r->texts, n, &D, &doclens)) < 0) return rc;
  int n_out = 0;
  if ((rc = jp_maxsim_rank(Q, co->qlen, D, doclens, (int)n, co->dim, k, NULL, ranked, &n_out)) < 0)
    return rc;
  Japlaid__V1__RerankResponse *resp =
    (Japlaid__V1__RerankResponse *)cop_new(a, &japlaid__v1__rerank_response__descriptor);
  Japlaid__V1__RerankHit *hits = jp_arena_alloc(a, (size_t)(n_out ? n_out : 1) * sizeof *hits);
  if (!resp || !hits || !(resp->hits = jp_arena_alloc(a, (size_t)(n_out ? n_out : 1) *
                                                           sizeof *resp->hits)))
    return jp_err(JP_ENOMEM, "rerank response");
  for (int i = 0; i < n_out; i++) {
    japlaid__v1__rerank_hit__init(&hits[i]);
    hits[i].content = r->texts[ranked[i].index];
    hits[i].score = ranked[i].score;
    hits[i].rank = (uint32_t)(i + 1);
    hits[i].result_index = (uint32_t)ranked[i].index;
    resp->hits[i] = &hits[i];
  }
  resp->n_hits = (size_t)n_out;
  op->resp = &resp->base;
  return 0;
}

static void rerank_job(struct job *j, jp_encoder *enc)
{
  struct cop *op = j->ud;
  jp_err_clear();
  int rc = jp_now_ns() >= op->deadline_ns
             ? jp_err(JP_ETIMEOUT, "deadline exceeded while waiting for an encoding worker")
             : rerank_run(op, enc);
  if (rc < 0) cop_fail(op, rc);
  else cop_finish(op, op->resp);
}

void cop_rerank(struct cop *op)
{
  const Japlaid__V1__RerankRequest *r = (const Japlaid__V1__RerankRequest *)op->req;
  int rc;
  if ((rc = rpc_check_str(r->query, 1, JP_RPC_MAX_QUERY_BYTES, "query")) < 0 ||
      (rc = rpc_check_count(r->n_texts, 1, JP_RPC_MAX_RERANK_TEXTS, "documents (count)")) < 0) {
    cop_fail(op, rc);
    return;
  }
  for (size_t i = 0; i < r->n_texts; i++)
    if ((rc = rpc_check_str(r->texts[i], 0, JP_RPC_MAX_TEXT_BYTES, "documents[%zu]", i)) < 0) {
      cop_fail(op, rc);
      return;
    }
  if (r->k > r->n_texts) {
    cop_fail(op, jp_err(JP_EINVAL, "k: %u is above the number of documents (%zu)", r->k,
                        r->n_texts));
    return;
  }
  op->job.fn = rerank_job;
  op->job.ud = op;
  if ((rc = jobs_submit(op->co->jobs, &op->job)) < 0) cop_fail(op, rc);
}

/* ---- encode ------------------------------------------------------------------------ */

static int encode_run(struct cop *op, jp_encoder *enc)
{
  struct coord *co = op->co;
  struct jp_arena *a = op->arena;
  const Japlaid__V1__EncodeRequest *r = (const Japlaid__V1__EncodeRequest *)op->req;
  size_t n = r->n_texts, dim = (size_t)co->dim;
  int rc;
  float *V;
  int32_t *rows;
  if (r->kind == JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_QUERY) {
    size_t *lens = jp_arena_alloc(a, n * sizeof *lens);
    rows = jp_arena_alloc(a, n * sizeof *rows);
    V = jp_arena_alloc_aligned(a, n * (size_t)co->qlen * dim * sizeof(float));
    if (!lens || !rows || !V) return jp_err(JP_ENOMEM, "encoding %zu queries", n);
    for (size_t i = 0; i < n; i++) {
      lens[i] = strlen(r->texts[i]);
      rows[i] = co->qlen;
    }
    if ((rc = jp_encode_queries(enc, (const char *const *)r->texts, lens, (int)n, V)) < 0)
      return rc;
  } else if ((rc = encode_docs(op, enc, r->texts, n, &V, &rows)) < 0) {
    return rc;
  }
  Japlaid__V1__EncodeResponse *resp =
    (Japlaid__V1__EncodeResponse *)cop_new(a, &japlaid__v1__encode_response__descriptor);
  Japlaid__V1__Embedding *emb = jp_arena_alloc(a, n * sizeof *emb);
  if (!resp || !emb || !(resp->embeddings = jp_arena_alloc(a, n * sizeof *resp->embeddings)))
    return jp_err(JP_ENOMEM, "encode response");
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    japlaid__v1__embedding__init(&emb[i]);
    emb[i].n_tokens = (uint32_t)rows[i];
    emb[i].dim = (uint32_t)dim;
    emb[i].data.data = (uint8_t *)(V + off * dim);
    emb[i].data.len = (size_t)rows[i] * dim * sizeof(float);
    off += (size_t)rows[i];
    resp->embeddings[i] = &emb[i];
  }
  resp->n_embeddings = n;
  resp->model_identity = (char *)co->mi->identity;
  op->resp = &resp->base;
  return 0;
}

static void encode_job(struct job *j, jp_encoder *enc)
{
  struct cop *op = j->ud;
  jp_err_clear();
  int rc = jp_now_ns() >= op->deadline_ns
             ? jp_err(JP_ETIMEOUT, "deadline exceeded while waiting for an encoding worker")
             : encode_run(op, enc);
  if (rc < 0) cop_fail(op, rc);
  else cop_finish(op, op->resp);
}

void cop_encode(struct cop *op)
{
  const Japlaid__V1__EncodeRequest *r = (const Japlaid__V1__EncodeRequest *)op->req;
  int rc;
  int is_query = r->kind == JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_QUERY;
  if (r->kind != JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_QUERY &&
      r->kind != JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_DOCUMENT) {
    cop_fail(op, jp_err(JP_EINVAL, "kind: %d is not a known EncodeKind", (int)r->kind));
    return;
  }
  if ((rc = rpc_check_count(r->n_texts, 1, JP_RPC_MAX_ENCODE_TEXTS, "texts (count)")) < 0) {
    cop_fail(op, rc);
    return;
  }
  for (size_t i = 0; i < r->n_texts; i++)
    if ((rc = rpc_check_str(r->texts[i], is_query ? 1 : 0,
                            is_query ? JP_RPC_MAX_QUERY_BYTES : JP_RPC_MAX_TEXT_BYTES,
                            "texts[%zu]", i)) < 0) {
      cop_fail(op, rc);
      return;
    }
  op->job.fn = encode_job;
  op->job.ud = op;
  if ((rc = jobs_submit(op->co->jobs, &op->job)) < 0) cop_fail(op, rc);
}

/* ---- stats ------------------------------------------------------------------------- */

static void stats_fanned(struct fan *f)
{
  struct cop *op = f->ud;
  struct coord *co = op->co;
  struct jp_arena *a = op->arena;
  int rc, answered = 0;
  Japlaid__V1__StatsResponse *resp =
    (Japlaid__V1__StatsResponse *)cop_new(a, &japlaid__v1__stats_response__descriptor);
  if (!resp || !(resp->partitions = jp_arena_calloc(a, (size_t)f->n, sizeof *resp->partitions)) ||
      !(resp->coverage = cop_coverage(a, co, f, &answered))) {
    rc = jp_err(JP_ENOMEM, "stats response");
    goto fail;
  }
  resp->model_name = (char *)co->mi->name;
  resp->model_identity = (char *)co->mi->identity;
  resp->dim = (uint32_t)co->dim;
  for (int i = 0; i < f->n; i++) {
    const struct fan_slot *s = &f->slots[i];
    Japlaid__V1__PartitionReport *pr = (Japlaid__V1__PartitionReport *)cop_new(
      a, &japlaid__v1__partition_report__descriptor);
    if (!pr) {
      rc = jp_err(JP_ENOMEM, "stats response");
      goto fail;
    }
    pr->partition = (uint32_t)s->partition;
    pr->address = "";
    const Japlaid__V1__ShardStatsResponse *sr = (const Japlaid__V1__ShardStatsResponse *)s->resp;
    if (s->rc == 0 && sr->stats) {
      const char *addr = co->cl.parts[s->partition].replicas[s->replica].addr;
      pr->address = jp_arena_strndup(a, addr, strlen(addr));
      pr->stats = (Japlaid__V1__PartitionStats *)cop_copy_msg(a, &sr->stats->base);
      if (!pr->address || !pr->stats) {
        rc = jp_err(JP_ENOMEM, "stats response");
        goto fail;
      }
      resp->n_documents += pr->stats->n_documents;
      resp->n_passages += pr->stats->n_passages;
      resp->n_embeddings += pr->stats->n_embeddings;
      resp->total_bytes += pr->stats->total_bytes;
    }
    resp->partitions[resp->n_partitions++] = pr;
  }
  /* Every replica's state as this coordinator routes by it (what
   * /v1/stats shows under "replicas"). */
  if (!(resp->replicas = jp_arena_calloc(a, (size_t)co->cl.n_replicas, sizeof *resp->replicas))) {
    rc = jp_err(JP_ENOMEM, "stats response");
    goto fail;
  }
  for (int p = 0; p < co->cl.n_partitions; p++)
    for (int r = 0; r < co->cl.parts[p].n_replicas; r++) {
      struct replica_view v;
      const char *addr = co->cl.parts[p].replicas[r].addr;
      Japlaid__V1__ReplicaStatus *rs = (Japlaid__V1__ReplicaStatus *)cop_new(
        a, &japlaid__v1__replica_status__descriptor);
      cluster_view(&co->cl, p, r, &v);
      if (!rs || !(rs->address = jp_arena_strndup(a, addr, strlen(addr))) ||
          !(rs->reason = jp_arena_strndup(a, v.reason, strlen(v.reason))) ||
          !(rs->codebook = jp_arena_strndup(a, v.codebook, strlen(v.codebook)))) {
        rc = jp_err(JP_ENOMEM, "stats response");
        goto fail;
      }
      rs->partition = (uint32_t)p;
      rs->state = v.check == CHECK_REFUSED ? JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_REFUSED
                  : !v.up                  ? JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_DOWN
                  : v.check == CHECK_OK    ? JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_LIVE
                                           : JAPLAID__V1__REPLICA_STATE__REPLICA_STATE_UNVERIFIED;
      rs->outstanding = v.outstanding > 0 ? (uint32_t)v.outstanding : 0;
      resp->replicas[resp->n_replicas++] = rs;
    }
  fan_fini(f);
  cop_finish(op, &resp->base);
  return;
fail:
  fan_fini(f);
  cop_fail(op, rc);
}

void cop_stats(struct cop *op)
{
  static Japlaid__V1__ShardStatsRequest sreq = JAPLAID__V1__SHARD_STATS_REQUEST__INIT;
  int rc = cop_fan_all(op, "/japlaid.v1.Shard/Stats", &japlaid__v1__shard_stats_response__descriptor,
                       &sreq.base, stats_fanned);
  if (rc < 0) cop_fail(op, rc);
}
