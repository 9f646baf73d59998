/* rpc.c: the Shard method table and the request parts its handlers share
 * (see shard.h). Receiving, unpacking, size limits, deadlines and the
 * JP_E* -> gRPC status mapping are done once for all methods by
 * common/rpc/server.c; what is specific to a partition is here. */
#include "shard.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rpc/check.h"
#include "rpc/limits.h"
#include "util/err.h"
#include "util/hash.h"

const struct rpc_method shard_methods[] = {
  {"/japlaid.v1.Shard/Search", h_search, &japlaid__v1__shard_search_request__descriptor,
   JP_RPC_MAX_SHARD_SEARCH_REQUEST_BYTES, 0},
  /* Upsert: up to the server's whole message limit (--max-message-mb). */
  {"/japlaid.v1.Shard/Upsert", h_upsert, &japlaid__v1__shard_upsert_request__descriptor, 0, 0},
  {"/japlaid.v1.Shard/Delete", h_delete, &japlaid__v1__shard_delete_request__descriptor,
   JP_RPC_MAX_DELETE_REQUEST_BYTES, 0},
  {"/japlaid.v1.Shard/Stats", h_stats, &japlaid__v1__shard_stats_request__descriptor,
   JP_RPC_MAX_SMALL_REQUEST_BYTES, 0},
};
const int shard_n_methods = (int)(sizeof shard_methods / sizeof shard_methods[0]);

void shard_codebook_hash(const struct jp_codec *c, char out[33])
{
  struct jp_hasher *h = jp_hasher_create();
  if (!h) {
    snprintf(out, 33, "%s", "");
    return;
  }
  int32_t shape[3] = {c->dim, c->nbits, c->ncentroids};
  size_t nb = (size_t)1 << c->nbits;
  jp_hasher_update(h, shape, sizeof shape);
  jp_hasher_update(h, c->centroids, (size_t)c->ncentroids * (size_t)c->dim * sizeof(float));
  jp_hasher_update(h, c->cutoffs, (nb - 1) * sizeof(float));
  jp_hasher_update(h, c->weights, nb * sizeof(float));
  jp_hasher_hex(h, out);
  jp_hasher_destroy(h);
}

void shard_publish(struct shard *sh, jp_store *st)
{
  const struct jp_codec *c = jp_store_codec(st);
  sh->meta = *jp_store_get_meta(st);
  sh->dim = c->dim;
  sh->nbits = c->nbits;
  sh->ncentroids = c->ncentroids;
  shard_codebook_hash(c, sh->codebook_hash);
  /* Release: a handler that sees the store also sees the fields above. */
  atomic_store_explicit(&sh->store, st, memory_order_release);
}

int shard_store(struct shard *sh, jp_store **out)
{
  *out = atomic_load_explicit(&sh->store, memory_order_acquire);
  if (!*out) return jp_err(JP_EUNAVAIL, "the partition is still loading");
  return 0;
}

int shard_check_identity(const struct shard *sh, const char *identity)
{
  if (!identity || !*identity || strcmp(identity, sh->meta.model_identity) == 0) return 0;
  return jp_err(JP_EMISMATCH,
                "model_identity: the request was encoded with model %.40s, partition %u was "
                "built with %s",
                identity, sh->meta.partition_id, sh->meta.model_identity);
}

int shard_search_params(const Japlaid__V1__SearchParams *p, struct jp_search_params *out)
{
  if (!p) return jp_err(JP_EINVAL, "params: missing (k is required)");
  if (p->k < 1 || p->k > JP_MAX_K)
    return jp_err(JP_EINVAL, "params.k: %u is outside 1..%d", p->k, JP_MAX_K);
  if (p->ncells > INT_MAX) return jp_err(JP_EINVAL, "params.ncells: %u is too large", p->ncells);
  if (p->ndocs > JP_MAX_NDOCS)
    return jp_err(JP_EINVAL, "params.ndocs: %u is above %d", p->ndocs, JP_MAX_NDOCS);
  jp_search_params_init(out, (int)p->k);
  out->ncells = (int)p->ncells;
  out->ndocs = (int)p->ndocs;
  out->exhaustive = p->exhaustive ? 1 : 0;
  out->centroid_score_threshold = NAN;
  if (p->centroid_score_threshold_opt_case ==
      JAPLAID__V1__SEARCH_PARAMS__CENTROID_SCORE_THRESHOLD_OPT_CENTROID_SCORE_THRESHOLD) {
    if (!isfinite(p->centroid_score_threshold))
      return jp_err(JP_EINVAL, "params.centroid_score_threshold: not a finite number");
    out->centroid_score_threshold = p->centroid_score_threshold;
  }
  /* Check the knobs as the search will use them (defaults filled in). */
  struct jp_search_params resolved = *out;
  jp_search_params_resolve(&resolved);
  int rc = jp_search_params_check(&resolved);
  if (rc < 0) {
    char why[256];   /* jp_errmsg points at the buffer jp_err rewrites */
    snprintf(why, sizeof why, "%s", jp_errmsg(rc));
    return jp_err(rc, "params: %s", why);
  }
  return 0;
}

int shard_restrict(char **doc_ids, size_t n_doc_ids, Japlaid__V1__MetadataFilter **filters,
                   size_t n_filters, struct jp_arena *a, struct jp_restrict *out)
{
  int rc;
  memset(out, 0, sizeof *out);
  if ((rc = rpc_check_count(n_doc_ids, 0, JP_RPC_MAX_DOC_IDS, "doc_ids")) < 0) return rc;
  for (size_t i = 0; i < n_doc_ids; i++)
    if ((rc = rpc_check_str(doc_ids[i], 1, JP_RPC_MAX_DOC_ID_BYTES, "doc_ids[%zu]", i)) < 0)
      return rc;
  if ((rc = rpc_check_count(n_filters, 0, JP_RPC_MAX_FILTERS, "filters")) < 0) return rc;
  struct jp_filter *f = NULL;
  if (n_filters) {
    f = jp_arena_calloc(a, n_filters, sizeof *f);
    if (!f) return jp_err(JP_ENOMEM, "filters");
  }
  for (size_t i = 0; i < n_filters; i++) {
    if (!filters[i]) return jp_err(JP_EINVAL, "filters[%zu]: missing", i);
    if ((rc = rpc_check_str(filters[i]->key, 1, JP_RPC_MAX_FILTER_KEY_BYTES, "filters[%zu].key",
                            i)) < 0 ||
        (rc = rpc_check_str(filters[i]->value, 0, JP_RPC_MAX_FILTER_VALUE_BYTES,
                            "filters[%zu].value", i)) < 0)
      return rc;
    f[i].key = filters[i]->key;
    f[i].value = filters[i]->value ? filters[i]->value : "";
  }
  out->doc_ids = n_doc_ids ? (const char *const *)doc_ids : NULL;
  out->n_doc_ids = (int)n_doc_ids;
  out->filters = f;
  out->n_filters = (int)n_filters;
  return 0;
}
