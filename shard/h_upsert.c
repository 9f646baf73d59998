/* h_upsert.c: Shard.Upsert - insert or replace encoded documents.
 *
 * Every field is checked first (ids, routing, metadata, texts, vector
 * shapes and values) so that a bad request is refused whole, with the
 * field named, before anything is written. The write itself is one
 * jp_store_upsert: one RocksDB WriteBatch, durable before the answer. The
 * deadline is checked once, just before the commit; a write that has
 * started is not abandoned (it is all or nothing, and cheap to finish). */
#include "shard.h"

#include <string.h>

#include "rpc/check.h"
#include "rpc/limits.h"
#include "util/err.h"
#include "util/hash.h"

/* Check one wire document and turn it into a jp_doc_in (arrays in a). */
static int doc_in(const struct shard *sh, const Japlaid__V1__EncodedDocument *d, size_t i,
                  struct jp_arena *a, struct jp_doc_in *out, size_t *n_passages)
{
  int e;
  if (!d) return jp_err(JP_EINVAL, "documents[%zu]: missing", i);
  if ((e = rpc_check_str(d->id, 1, JP_RPC_MAX_DOC_ID_BYTES, "documents[%zu].id", i)) < 0) return e;
  size_t id_len = strlen(d->id);
  uint32_t owner = jp_route_partition(d->id, id_len, sh->meta.n_partitions);
  if (owner != sh->meta.partition_id)
    return jp_err(JP_EINVAL,
                  "documents[%zu].id: \"%.64s\" belongs to partition %u of %u, this is "
                  "partition %u",
                  i, d->id, owner, sh->meta.n_partitions, sh->meta.partition_id);
  if ((e = rpc_check_json_object(d->metadata, JP_RPC_MAX_METADATA_BYTES,
                                 "documents[%zu].metadata", i)) < 0)
    return e;
  if ((e = rpc_check_count(d->n_passages, 1, JP_RPC_MAX_PASSAGES_PER_DOC,
                           "documents[%zu].passages", i)) < 0)
    return e;
  struct jp_passage_in *ps = jp_arena_calloc(a, d->n_passages, sizeof *ps);
  if (!ps) return jp_err(JP_ENOMEM, "upsert");
  for (size_t j = 0; j < d->n_passages; j++) {
    const Japlaid__V1__EncodedPassage *p = d->passages[j];
    if (!p) return jp_err(JP_EINVAL, "documents[%zu].passages[%zu]: missing", i, j);
    if ((e = rpc_check_str(p->text, 0, JP_RPC_MAX_TEXT_BYTES, "documents[%zu].passages[%zu].text",
                           i, j)) < 0 ||
        (e = rpc_check_count(p->n_vecs, 0, JP_RPC_MAX_VECS_PER_PASSAGE,
                             "documents[%zu].passages[%zu].n_vecs", i, j)) < 0)
      return e;
    const float *v;
    if ((e = rpc_check_f32(&p->vectors, (size_t)p->n_vecs * (size_t)sh->dim, &v,
                           "documents[%zu].passages[%zu].vectors (n_vecs %u x dim %d)", i, j,
                           p->n_vecs, sh->dim)) < 0)
      return e;
    ps[j].text = p->text ? p->text : "";
    ps[j].text_len = strlen(ps[j].text);
    ps[j].vecs = v;
    ps[j].n_vecs = (int)p->n_vecs;
  }
  out->doc_id = d->id;
  out->doc_id_len = id_len;
  out->metadata_json = d->metadata && *d->metadata ? d->metadata : NULL;
  out->passages = ps;
  out->n_passages = (int)d->n_passages;
  *n_passages += d->n_passages;
  return 0;
}

int h_upsert(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  struct shard *sh = rpc_ctx_app(rc);
  const Japlaid__V1__ShardUpsertRequest *r = (const Japlaid__V1__ShardUpsertRequest *)req;
  struct jp_arena *a = rpc_ctx_arena(rc);
  jp_store *st;
  int e;

  if ((e = shard_store(sh, &st)) < 0) return e;
  if ((e = shard_check_identity(sh, r->model_identity)) < 0) return e;
  if (r->dim != (uint32_t)sh->dim)
    return jp_err(JP_EINVAL, "dim: %u, this partition's vectors have %d", r->dim, sh->dim);
  if ((e = rpc_check_count(r->n_documents, 1, JP_RPC_MAX_DOCS_PER_WRITE, "documents")) < 0)
    return e;
  struct jp_doc_in *docs = jp_arena_calloc(a, r->n_documents, sizeof *docs);
  if (!docs) return jp_err(JP_ENOMEM, "upsert");
  size_t n_passages = 0;
  for (size_t i = 0; i < r->n_documents; i++)
    if ((e = doc_in(sh, r->documents[i], i, a, &docs[i], &n_passages)) < 0) return e;

  if ((e = rpc_ctx_check(rc)) < 0) return e;
  if ((e = jp_store_upsert(st, docs, (int)r->n_documents, sh->pool)) < 0) return e;

  Japlaid__V1__ShardUpsertResponse *out = (Japlaid__V1__ShardUpsertResponse *)rpc_ctx_new(
    rc, &japlaid__v1__shard_upsert_response__descriptor);
  if (!out) return jp_err(JP_ENOMEM, "upsert response");
  out->n_documents = (uint32_t)r->n_documents;
  out->n_passages = (uint32_t)n_passages;
  out->partition_id = sh->meta.partition_id;
  *resp = &out->base;
  return 0;
}
