/* h_delete.c: Shard.Delete - delete documents by id (one WriteBatch).
 * Unknown ids are not an error; n_deleted counts the documents that
 * existed. */
#include "shard.h"

#include <string.h>

#include "rpc/check.h"
#include "rpc/limits.h"
#include "util/err.h"

int h_delete(struct rpc_ctx *rc, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
  struct shard *sh = rpc_ctx_app(rc);
  const Japlaid__V1__ShardDeleteRequest *r = (const Japlaid__V1__ShardDeleteRequest *)req;
  jp_store *st;
  int e;

  if ((e = shard_store(sh, &st)) < 0) return e;
  if ((e = rpc_check_count(r->n_document_ids, 1, JP_RPC_MAX_DOCS_PER_WRITE, "document_ids")) < 0)
    return e;
  size_t *lens = jp_arena_alloc(rpc_ctx_arena(rc), r->n_document_ids * sizeof *lens);
  if (!lens) return jp_err(JP_ENOMEM, "delete");
  for (size_t i = 0; i < r->n_document_ids; i++) {
    if ((e = rpc_check_str(r->document_ids[i], 1, JP_RPC_MAX_DOC_ID_BYTES, "document_ids[%zu]",
                           i)) < 0)
      return e;
    lens[i] = strlen(r->document_ids[i]);
  }
  if ((e = rpc_ctx_check(rc)) < 0) return e;
  int n_deleted = 0;
  if ((e = jp_store_delete(st, (const char *const *)r->document_ids, lens,
                           (int)r->n_document_ids, &n_deleted)) < 0)
    return e;

  Japlaid__V1__ShardDeleteResponse *out = (Japlaid__V1__ShardDeleteResponse *)rpc_ctx_new(
    rc, &japlaid__v1__shard_delete_response__descriptor);
  if (!out) return jp_err(JP_ENOMEM, "delete response");
  out->n_deleted = (uint32_t)n_deleted;
  out->partition_id = sh->meta.partition_id;
  *resp = &out->base;
  return 0;
}
