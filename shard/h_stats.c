/* h_stats.c: Shard.Stats - the partition's identity, size and drift. */
#include "shard.h"

#include "util/clock.h"
#include "util/err.h"

int h_stats(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  struct shard *sh = rpc_ctx_app(rc);
  struct jp_arena *a = rpc_ctx_arena(rc);
  jp_store *st;
  int e;
  (void)req;   /* ShardStatsRequest has no fields */

  if ((e = shard_store(sh, &st)) < 0) return e;
  struct jp_store_stats ss;
  if ((e = jp_store_get_stats(st, &ss)) < 0) return e;

  Japlaid__V1__ShardStatsResponse *out = (Japlaid__V1__ShardStatsResponse *)rpc_ctx_new(
    rc, &japlaid__v1__shard_stats_response__descriptor);
  Japlaid__V1__PartitionStats *ps =
    (Japlaid__V1__PartitionStats *)rpc_ctx_new(rc, &japlaid__v1__partition_stats__descriptor);
  const size_t n_cf = sizeof ss.cf_bytes / sizeof ss.cf_bytes[0];
  Japlaid__V1__ColumnFamilyBytes *cf = jp_arena_alloc(a, n_cf * sizeof *cf);
  Japlaid__V1__ColumnFamilyBytes **cfp = jp_arena_alloc(a, n_cf * sizeof *cfp);
  if (!out || !ps || !cf || !cfp) return jp_err(JP_ENOMEM, "stats response");

  ps->partition_id = sh->meta.partition_id;
  ps->n_partitions = sh->meta.n_partitions;
  ps->model_name = sh->meta.model_name;
  ps->model_identity = sh->meta.model_identity;
  ps->codebook_hash = sh->codebook_hash;
  ps->dim = (uint32_t)ss.dim;
  ps->nbits = (uint32_t)ss.nbits;
  ps->ncentroids = (uint32_t)ss.ncentroids;
  ps->n_passages = ss.n_passages;
  ps->n_documents = ss.n_docs;
  ps->n_embeddings = ss.n_embeddings;
  ps->total_bytes = ss.total_bytes;
  ps->bytes_per_embedding = ss.bytes_per_embedding;
  ps->codebook_drift = ss.codebook_drift;
  for (size_t i = 0; i < n_cf; i++) {
    japlaid__v1__column_family_bytes__init(&cf[i]);
    cf[i].name = (char *)jp_store_cf_names[i];
    cf[i].bytes = ss.cf_bytes[i];
    cfp[i] = &cf[i];
  }
  ps->n_column_families = n_cf;
  ps->column_families = cfp;
  /* The build's split settings, so a coordinator splits upserts as the
   * index was built (meta is copied at load and never changes). */
  ps->settings_json = sh->meta.settings_json;
  ps->uptime_s = (double)(jp_now_ns() - sh->start_ns) / 1e9;
  ps->requests_total = rpc_server_calls_total(rpc_ctx_server(rc));
  out->stats = ps;
  *resp = &out->base;
  return 0;
}
