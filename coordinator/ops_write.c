/* ops_write.c: Upsert and Delete - route by document id, write to every
 * replica of the owning partition.
 *
 * Routing: jp_route_partition(id, P) (common/util/hash.h), the function the
 * indexer placed the documents with, so a document is always written to,
 * replaced in and deleted from the partition that holds it.
 *
 * Write policy (strict, simple): a write is acknowledged only when every
 * replica of every partition it touches has acknowledged it.
 *   - Before anything is sent, every such replica must be live (up and
 *     verified). If one is not, the write fails with UNAVAILABLE naming it,
 *     and nothing was written anywhere.
 *   - If a replica fails during the write, the write fails with UNAVAILABLE
 *     (INVALID_ARGUMENT if a shard refused the data) naming the partition
 *     and replica; the replicas that acknowledged keep the write (there is
 *     no rollback). Upserts replace whole documents and deletes of absent
 *     ids are no-ops, so the client retries the same request once the
 *     replica is back and every replica converges.
 * So replicas never silently diverge: a write that did not reach a replica
 * is never reported as done. The price is availability: writes to a
 * partition stop while one of its replicas is down (Elasticsearch instead
 * drops the failed copy from its in-sync set, which needs a master; this
 * cluster has none).
 *
 * Upsert splits each document into passages as the index build does
 * (common/index/build.c: max_document_length - 3 tokens, overlap min(64,
 * max/4), sentence-first cuts; a text with no cut point is one passage),
 * with the settings of the partition the document goes to: those its
 * shards report in Stats (settings_json, recorded at build), each
 * overridden by --max-document-length / --no-split when given, and the
 * model's doc_maxlen with splitting when a shard reports none (so a
 * document added through the cluster is stored as `japlaid add` would
 * store it in that partition). Encoding runs on an encoding worker. A
 * partition's documents go out in chunks of at most WRITE_CHUNK_BYTES of
 * vectors and text (one shard WriteBatch each), so a large upsert never
 * exceeds the shards' message limit.
 *
 * Thread-safety / allocation: see coord.h (one thread at a time; arena). */
#include "coord.h"

#include <string.h>

#include "rpc/check.h"
#include "rpc/limits.h"
#include "text/split.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/mem.h"

/* A shard request stays well under the 64 MiB default message limit. */
#define WRITE_CHUNK_BYTES (32u << 20)
/* Passages per jp_encode_docs call (as common/index/build.c). */
#define ENC_BATCH 64
/* Room for [CLS] [D] ... [SEP] (common/index/build.c). */
#define DOC_SPECIAL_TOKENS 3
/* Passage overlap: RAGatouille's min(64, max / 4) (common/index/build.c). */
#define SPLIT_OVERLAP_MAX 64

/* How the documents of one partition are cut into passages. */
struct split_plan {
  int split;                          /* 1: split long texts; 0: one passage each */
  int max_tokens;                     /* passage tokens (max_document_length - 3) */
  int overlap;                        /* tokens shared by neighbouring passages */
  int truncate_tokens;                /* no-split: encode at most this many (0: doc_maxlen) */
};

static void split_plan_for(struct coord *co, int p, struct split_plan *out)
{
  const int dm = co->mi->colbert.doc_maxlen;
  int mdl = 0, split = 1;
  cluster_split_settings(&co->cl, p, &mdl, &split);
  if (co->o.max_document_length) mdl = co->o.max_document_length;
  if (co->o.no_split) split = 0;
  /* The build refuses lengths outside this range for the model (one
   * identity, so the same doc_maxlen); anything else is not trusted. */
  if (mdl <= DOC_SPECIAL_TOKENS || mdl > dm) mdl = dm;
  out->split = split;
  out->max_tokens = mdl - DOC_SPECIAL_TOKENS;
  out->overlap = out->max_tokens / 4 < SPLIT_OVERLAP_MAX ? out->max_tokens / 4 : SPLIT_OVERLAP_MAX;
  out->truncate_tokens = !split && mdl < dm ? mdl - DOC_SPECIAL_TOKENS : 0;
}

/* ---- shared ------------------------------------------------------------------- */

/* Every replica of every partition with want[p] set must be live. */
static int write_precheck(struct coord *co, const uint8_t *want)
{
  char msg[900];
  size_t n = 0;
  int bad = 0;
  for (int p = 0; p < co->cl.n_partitions; p++) {
    if (!want[p]) continue;
    for (int r = 0; r < co->cl.parts[p].n_replicas; r++) {
      struct replica_view v;
      cluster_view(&co->cl, p, r, &v);
      if (v.up && v.check == CHECK_OK) continue;
      bad++;
      if (n < sizeof msg)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "%spartition %d replica %s (%s)",
                              bad > 1 ? "; " : "", p, co->cl.parts[p].replicas[r].addr,
                              v.reason[0] ? v.reason : "down");
    }
  }
  if (!bad) return 0;
  return jp_err(JP_EUNAVAIL, "write refused, nothing was written: every replica of a partition "
                "must be live to take a write (strict write policy), and %s", msg);
}

/* The failures of a write fan-out as one error. */
static int write_error(struct coord *co, const struct fan *f, const char *what)
{
  char msg[900];
  size_t n = 0;
  int code = JP_EUNAVAIL;
  for (int i = 0; i < f->n && n < sizeof msg; i++) {
    const struct fan_slot *s = &f->slots[i];
    if (s->rc == 0) continue;
    if (s->status == GRPC_STATUS_INVALID_ARGUMENT) code = JP_EINVAL;
    n += (size_t)snprintf(msg + n, sizeof msg - n, "%spartition %d replica %s: %s",
                          n ? "; " : "", s->partition,
                          co->cl.parts[s->partition].replicas[s->replica].addr, s->reason);
  }
  if (code == JP_EINVAL)
    return jp_err(code, "%s refused by a shard: %s", what, msg);
  return jp_err(code, "%s not acknowledged by every replica (replicas that acknowledged keep it; "
                "retrying the same request is safe): %s", what, msg);
}

static struct fan *write_fan(struct cop *op, int n_slots, fan_done_fn done, const char *method,
                             const ProtobufCMessageDescriptor *rd)
{
  struct fan *f = &op->fan;
  memset(f, 0, sizeof *f);
  f->co = op->co;
  f->method = method;
  f->resp_desc = rd;
  f->deadline_ns = cop_shard_deadline(op);
  f->parent = op->parent;
  f->n = n_slots;
  f->slots = jp_arena_calloc(op->arena, (size_t)(n_slots ? n_slots : 1), sizeof *f->slots);
  f->done = done;
  f->ud = op;
  return f->slots ? f : NULL;
}

/* ---- upsert ---------------------------------------------------------------------- */

struct upsert_st {
  const Japlaid__V1__UpsertRequest *r;
  int *part;                          /* partition of each document */
  uint8_t *want;                      /* partitions touched */
  int n_want;
  Japlaid__V1__EncodedDocument **edocs;
  size_t *edoc_bytes;
  uint32_t n_passages;
};

static int check_upsert(const Japlaid__V1__UpsertRequest *r)
{
  int rc;
  if ((rc = rpc_check_count(r->n_documents, 1, JP_RPC_MAX_DOCS_PER_WRITE, "documents (count)")) < 0)
    return rc;
  for (size_t i = 0; i < r->n_documents; i++) {
    const Japlaid__V1__Document *d = r->documents[i];
    if (!d) return jp_err(JP_EINVAL, "documents[%zu]: missing", i);
    if ((rc = rpc_check_str(d->id, 1, JP_RPC_MAX_DOC_ID_BYTES, "documents[%zu].id", i)) < 0 ||
        (rc = rpc_check_str(d->text, 0, JP_RPC_MAX_TEXT_BYTES, "documents[%zu].text", i)) < 0 ||
        (rc = rpc_check_json_object(d->metadata, JP_RPC_MAX_METADATA_BYTES,
                                    "documents[%zu].metadata", i)) < 0)
      return rc;
    /* O(n^2) over at most 1000 short ids: under a millisecond. */
    for (size_t j = 0; j < i; j++)
      if (!strcmp(r->documents[j]->id, d->id))
        return jp_err(JP_EINVAL, "documents[%zu].id: '%.100s' repeats documents[%zu].id", i,
                      d->id, j);
  }
  return 0;
}

/* Passage spans of one text, into the arena. */
static int passages_of(const struct split_plan *pl, jp_encoder *enc, struct jp_arena *a,
                       const char *text, size_t len, struct jp_span **out, int *n_out,
                       size_t *enc_len)
{
  *enc_len = len;
  if (pl->split) {
    struct jp_span *sp = NULL;
    int ns = 0;
    int rc = jp_split_passages(jp_encoder_tok(enc), text, len, pl->max_tokens, pl->overlap, &sp,
                               &ns);
    if (rc < 0) return rc;
    if (ns > 0) {
      *out = jp_arena_alloc(a, (size_t)ns * sizeof **out);
      if (*out) memcpy(*out, sp, (size_t)ns * sizeof **out);
      jp_free(sp);
      if (!*out) return JP_ENOMEM;
      *n_out = ns;
      return 0;
    }
    jp_free(sp);
  } else if (pl->truncate_tokens > 0) {
    /* One passage, encoded up to max_document_length - 3 tokens. */
    size_t cap = (size_t)pl->truncate_tokens + 1, n = 0;
    int32_t *ids = jp_arena_alloc(a, cap * sizeof *ids);
    uint32_t *offs = jp_arena_alloc(a, cap * sizeof *offs);
    if (!ids || !offs) return JP_ENOMEM;
    int rc = jp_tok_ids(jp_encoder_tok(enc), text, len, ids, cap, &n, offs);
    if (rc < 0) return rc;
    if (n > (size_t)pl->truncate_tokens) *enc_len = offs[pl->truncate_tokens];
  }
  /* No cut point (or no splitting): the whole text is one passage, so
   * every document stays findable. */
  *out = jp_arena_alloc(a, sizeof **out);
  if (!*out) return JP_ENOMEM;
  (*out)[0] = (struct jp_span){0, len};
  *n_out = 1;
  return 0;
}

static void upsert_fanned(struct fan *f)
{
  struct cop *op = f->ud;
  struct upsert_st *st = op->state;
  int failed = 0;
  for (int i = 0; i < f->n; i++) failed += f->slots[i].rc != 0;
  if (failed) {
    int rc = write_error(op->co, f, "upsert");
    fan_fini(f);
    cop_fail(op, rc);
    return;
  }
  fan_fini(f);
  Japlaid__V1__UpsertResponse *resp =
    (Japlaid__V1__UpsertResponse *)cop_new(op->arena, &japlaid__v1__upsert_response__descriptor);
  Japlaid__V1__Coverage *cov =
    (Japlaid__V1__Coverage *)cop_new(op->arena, &japlaid__v1__coverage__descriptor);
  if (!resp || !cov) {
    cop_fail(op, jp_err(JP_ENOMEM, "upsert response"));
    return;
  }
  cov->partitions_total = (uint32_t)st->n_want;
  cov->partitions_answered = (uint32_t)st->n_want;
  resp->n_documents = (uint32_t)st->r->n_documents;
  resp->n_passages = st->n_passages;
  resp->coverage = cov;
  JP_LOG_DEBUG("upsert: %zu documents, %u passages, %d partitions", st->r->n_documents,
               st->n_passages, st->n_want);
  cop_finish(op, &resp->base);
}

/* Encode every passage of every document, on an encoding worker. */
static int upsert_encode(struct cop *op, jp_encoder *enc)
{
  struct coord *co = op->co;
  struct upsert_st *st = op->state;
  struct jp_arena *a = op->arena;
  const Japlaid__V1__UpsertRequest *r = st->r;
  size_t nd = r->n_documents, np = 0;
  int rc;

  struct jp_span **spans = jp_arena_calloc(a, nd, sizeof *spans);
  int *nsp = jp_arena_calloc(a, nd, sizeof *nsp);
  size_t *enc_len = jp_arena_calloc(a, nd, sizeof *enc_len);
  st->edocs = jp_arena_calloc(a, nd, sizeof *st->edocs);
  st->edoc_bytes = jp_arena_calloc(a, nd, sizeof *st->edoc_bytes);
  struct split_plan *plan = jp_arena_calloc(a, (size_t)co->cl.n_partitions, sizeof *plan);
  if (!spans || !nsp || !enc_len || !st->edocs || !st->edoc_bytes || !plan)
    return jp_err(JP_ENOMEM, "upsert");
  for (int p = 0; p < co->cl.n_partitions; p++)
    if (st->want[p]) {
      split_plan_for(co, p, &plan[p]);
      JP_LOG_DEBUG("upsert to partition %d: %s, %d tokens per passage, overlap %d", p,
                   plan[p].split ? "split" : "no split", plan[p].max_tokens, plan[p].overlap);
    }
  for (size_t i = 0; i < nd; i++) {
    const Japlaid__V1__Document *d = r->documents[i];
    if ((rc = passages_of(&plan[st->part[i]], enc, a, d->text, strlen(d->text), &spans[i],
                          &nsp[i], &enc_len[i])) < 0) {
      char m[400];
      snprintf(m, sizeof m, "%s", jp_errmsg(rc));
      return jp_err(rc == JP_ENOMEM ? rc : JP_EINVAL, "documents[%zu].text: %s", i, m);
    }
    if (nsp[i] > JP_RPC_MAX_PASSAGES_PER_DOC)
      return jp_err(JP_EINVAL, "documents[%zu].text: %d passages after splitting, the limit is %d",
                    i, nsp[i], JP_RPC_MAX_PASSAGES_PER_DOC);
    np += (size_t)nsp[i];
  }
  /* Flat passage list, encoded ENC_BATCH at a time. */
  const char **texts = jp_arena_alloc(a, np * sizeof *texts);
  size_t *lens = jp_arena_alloc(a, np * sizeof *lens);
  int32_t *doclens = jp_arena_alloc(a, np * sizeof *doclens);
  float **vecs = jp_arena_alloc(a, np * sizeof *vecs);
  const size_t dm = (size_t)co->mi->colbert.doc_maxlen, dim = (size_t)co->dim;
  float *buf = jp_arena_alloc_aligned(a, (size_t)ENC_BATCH * dm * dim * sizeof(float));
  if (!texts || !lens || !doclens || !vecs || !buf) return jp_err(JP_ENOMEM, "upsert");
  size_t k = 0;
  for (size_t i = 0; i < nd; i++)
    for (int j = 0; j < nsp[i]; j++, k++) {
      texts[k] = r->documents[i]->text + spans[i][j].off;
      lens[k] = plan[st->part[i]].split ? spans[i][j].len : enc_len[i];
    }
  for (size_t g = 0; g < np; g += ENC_BATCH) {
    if (jp_now_ns() >= op->deadline_ns)
      return jp_err(JP_ETIMEOUT, "deadline exceeded while encoding (%zu of %zu passages done)",
                    g, np);
    int m = (int)(np - g < ENC_BATCH ? np - g : ENC_BATCH);
    if ((rc = jp_encode_docs(enc, texts + g, lens + g, m, buf, (size_t)ENC_BATCH * dm,
                             doclens + g)) < 0)
      return rc;
    size_t off = 0;
    for (int j = 0; j < m; j++) {
      size_t nb = (size_t)doclens[g + j] * dim * sizeof(float);
      vecs[g + j] = jp_arena_alloc(a, nb ? nb : 1);
      if (!vecs[g + j]) return jp_err(JP_ENOMEM, "upsert vectors");
      memcpy(vecs[g + j], buf + off * dim, nb);
      off += (size_t)doclens[g + j];
    }
  }
  /* Wire documents. */
  k = 0;
  for (size_t i = 0; i < nd; i++) {
    const Japlaid__V1__Document *d = r->documents[i];
    Japlaid__V1__EncodedDocument *ed = (Japlaid__V1__EncodedDocument *)cop_new(
      a, &japlaid__v1__encoded_document__descriptor);
    Japlaid__V1__EncodedPassage **pp = jp_arena_alloc(a, (size_t)nsp[i] * sizeof *pp);
    if (!ed || !pp) return jp_err(JP_ENOMEM, "upsert");
    ed->id = d->id;
    ed->metadata = d->metadata;
    ed->n_passages = (size_t)nsp[i];
    ed->passages = pp;
    size_t bytes = strlen(d->id) + strlen(d->metadata ? d->metadata : "") + 64;
    for (int j = 0; j < nsp[i]; j++, k++) {
      Japlaid__V1__EncodedPassage *ep = (Japlaid__V1__EncodedPassage *)cop_new(
        a, &japlaid__v1__encoded_passage__descriptor);
      if (!ep) return jp_err(JP_ENOMEM, "upsert");
      ep->text = jp_arena_strndup(a, d->text + spans[i][j].off, spans[i][j].len);
      if (!ep->text) return jp_err(JP_ENOMEM, "upsert");
      ep->n_vecs = (uint32_t)doclens[k];
      ep->vectors.data = (uint8_t *)vecs[k];
      ep->vectors.len = (size_t)doclens[k] * dim * sizeof(float);
      pp[j] = ep;
      bytes += spans[i][j].len + ep->vectors.len + 16;
    }
    st->edocs[i] = ed;
    st->edoc_bytes[i] = bytes;
  }
  st->n_passages = (uint32_t)np;
  return 0;
}

/* Chunks per partition (<= WRITE_CHUNK_BYTES each), one slot per replica. */
static int upsert_send(struct cop *op)
{
  struct coord *co = op->co;
  struct upsert_st *st = op->state;
  struct jp_arena *a = op->arena;
  size_t nd = st->r->n_documents;
  int P = co->cl.n_partitions, rc;

  /* Count chunks and slots first. */
  int n_slots = 0;
  for (int p = 0; p < P; p++) {
    if (!st->want[p]) continue;
    size_t cur = 0;
    int chunks = 0;
    for (size_t i = 0; i < nd; i++) {
      if (st->part[i] != p) continue;
      if (chunks == 0 || (cur > 0 && cur + st->edoc_bytes[i] > WRITE_CHUNK_BYTES)) {
        chunks++;
        cur = 0;
      }
      cur += st->edoc_bytes[i];
    }
    n_slots += chunks * co->cl.parts[p].n_replicas;
  }
  if ((rc = write_precheck(co, st->want)) < 0) return rc;
  struct fan *f = write_fan(op, n_slots, upsert_fanned, "/japlaid.v1.Shard/Upsert",
                            &japlaid__v1__shard_upsert_response__descriptor);
  if (!f) return jp_err(JP_ENOMEM, "upsert fan-out");
  int s = 0;
  for (int p = 0; p < P; p++) {
    if (!st->want[p]) continue;
    size_t i = 0;
    while (i < nd) {
      /* Next chunk of partition p starting at document i. */
      while (i < nd && st->part[i] != p) i++;
      if (i >= nd) break;
      size_t cnt = 0, cur = 0, j;
      for (j = i; j < nd; j++) {
        if (st->part[j] != p) continue;
        if (cnt > 0 && cur + st->edoc_bytes[j] > WRITE_CHUNK_BYTES) break;
        cur += st->edoc_bytes[j];
        cnt++;
      }
      Japlaid__V1__ShardUpsertRequest *sr = (Japlaid__V1__ShardUpsertRequest *)cop_new(
        a, &japlaid__v1__shard_upsert_request__descriptor);
      Japlaid__V1__EncodedDocument **docs = jp_arena_alloc(a, cnt * sizeof *docs);
      if (!sr || !docs) return jp_err(JP_ENOMEM, "upsert");
      size_t c = 0;
      for (size_t x = i; x < j; x++)
        if (st->part[x] == p) docs[c++] = st->edocs[x];
      sr->dim = (uint32_t)co->dim;
      sr->n_documents = cnt;
      sr->documents = docs;
      sr->model_identity = (char *)co->mi->identity;
      for (int r = 0; r < co->cl.parts[p].n_replicas; r++, s++) {
        f->slots[s].partition = p;
        f->slots[s].replica = r;
        f->slots[s].fixed = 1;
        f->slots[s].req = &sr->base;
      }
      i = j;
    }
  }
  fan_start(f);
  return 0;
}

static void upsert_job(struct job *j, jp_encoder *enc)
{
  struct cop *op = j->ud;
  int rc;
  jp_err_clear();
  if (jp_now_ns() >= op->deadline_ns)
    rc = jp_err(JP_ETIMEOUT, "deadline exceeded while waiting for an encoding worker");
  else if ((rc = upsert_encode(op, enc)) == 0)
    rc = upsert_send(op);
  if (rc < 0) cop_fail(op, rc);
}

void cop_upsert(struct cop *op)
{
  const Japlaid__V1__UpsertRequest *r = (const Japlaid__V1__UpsertRequest *)op->req;
  struct coord *co = op->co;
  int rc;
  if ((rc = check_upsert(r)) < 0) {
    cop_fail(op, rc);
    return;
  }
  struct upsert_st *st = jp_arena_calloc(op->arena, 1, sizeof *st);
  if (st) {
    st->part = jp_arena_calloc(op->arena, r->n_documents, sizeof *st->part);
    st->want = jp_arena_calloc(op->arena, (size_t)co->cl.n_partitions, 1);
  }
  if (!st || !st->part || !st->want) {
    cop_fail(op, jp_err(JP_ENOMEM, "upsert"));
    return;
  }
  st->r = r;
  op->state = st;
  for (size_t i = 0; i < r->n_documents; i++) {
    const char *id = r->documents[i]->id;
    st->part[i] = (int)jp_route_partition(id, strlen(id), (uint32_t)co->cl.n_partitions);
    st->n_want += !st->want[st->part[i]];
    st->want[st->part[i]] = 1;
  }
  /* Refuse at once rather than after encoding. */
  if ((rc = write_precheck(co, st->want)) < 0) {
    cop_fail(op, rc);
    return;
  }
  op->job.fn = upsert_job;
  op->job.ud = op;
  if ((rc = jobs_submit(co->jobs, &op->job)) < 0) cop_fail(op, rc);
}

/* ---- delete ---------------------------------------------------------------------- */

struct delete_st {
  int n_want;
  int *slot_part;
};

static void delete_fanned(struct fan *f)
{
  struct cop *op = f->ud;
  struct delete_st *st = op->state;
  struct coord *co = op->co;
  int failed = 0;
  for (int i = 0; i < f->n; i++) failed += f->slots[i].rc != 0;
  if (failed) {
    int rc = write_error(co, f, "delete");
    fan_fini(f);
    cop_fail(op, rc);
    return;
  }
  /* Replicas of one partition hold the same documents; should they
   * disagree on how many existed, the largest count is reported. */
  uint32_t total = 0;
  for (int i = 0; i < f->n;) {
    int p = f->slots[i].partition;
    uint32_t best = 0;
    for (; i < f->n && f->slots[i].partition == p; i++) {
      uint32_t n = ((const Japlaid__V1__ShardDeleteResponse *)f->slots[i].resp)->n_deleted;
      if (n > best) best = n;
    }
    total += best;
  }
  fan_fini(f);
  Japlaid__V1__DeleteResponse *resp =
    (Japlaid__V1__DeleteResponse *)cop_new(op->arena, &japlaid__v1__delete_response__descriptor);
  Japlaid__V1__Coverage *cov =
    (Japlaid__V1__Coverage *)cop_new(op->arena, &japlaid__v1__coverage__descriptor);
  if (!resp || !cov) {
    cop_fail(op, jp_err(JP_ENOMEM, "delete response"));
    return;
  }
  cov->partitions_total = cov->partitions_answered = (uint32_t)st->n_want;
  resp->n_deleted = total;
  resp->coverage = cov;
  cop_finish(op, &resp->base);
}

void cop_delete(struct cop *op)
{
  const Japlaid__V1__DeleteRequest *r = (const Japlaid__V1__DeleteRequest *)op->req;
  struct coord *co = op->co;
  struct jp_arena *a = op->arena;
  int P = co->cl.n_partitions, rc;
  if ((rc = rpc_check_count(r->n_document_ids, 1, JP_RPC_MAX_DOCS_PER_WRITE,
                            "document_ids (count)")) < 0) {
    cop_fail(op, rc);
    return;
  }
  for (size_t i = 0; i < r->n_document_ids; i++)
    if ((rc = rpc_check_str(r->document_ids[i], 1, JP_RPC_MAX_DOC_ID_BYTES, "document_ids[%zu]",
                            i)) < 0) {
      cop_fail(op, rc);
      return;
    }
  struct delete_st *st = jp_arena_calloc(a, 1, sizeof *st);
  int *part = jp_arena_calloc(a, r->n_document_ids, sizeof *part);
  size_t *count = jp_arena_calloc(a, (size_t)P, sizeof *count);
  uint8_t *want = jp_arena_calloc(a, (size_t)P, 1);
  if (!st || !part || !count || !want) {
    cop_fail(op, jp_err(JP_ENOMEM, "delete"));
    return;
  }
  op->state = st;
  for (size_t i = 0; i < r->n_document_ids; i++) {
    const char *id = r->document_ids[i];
    part[i] = (int)jp_route_partition(id, strlen(id), (uint32_t)P);
    count[part[i]]++;
    st->n_want += !want[part[i]];
    want[part[i]] = 1;
  }
  if ((rc = write_precheck(co, want)) < 0) {
    cop_fail(op, rc);
    return;
  }
  int n_slots = 0;
  for (int p = 0; p < P; p++)
    if (want[p]) n_slots += co->cl.parts[p].n_replicas;
  struct fan *f = write_fan(op, n_slots, delete_fanned, "/japlaid.v1.Shard/Delete",
                            &japlaid__v1__shard_delete_response__descriptor);
  if (!f) {
    cop_fail(op, jp_err(JP_ENOMEM, "delete fan-out"));
    return;
  }
  int s = 0;
  for (int p = 0; p < P; p++) {
    if (!want[p]) continue;
    Japlaid__V1__ShardDeleteRequest *sr = (Japlaid__V1__ShardDeleteRequest *)cop_new(
      a, &japlaid__v1__shard_delete_request__descriptor);
    char **ids = jp_arena_alloc(a, count[p] * sizeof *ids);
    if (!sr || !ids) {
      cop_fail(op, jp_err(JP_ENOMEM, "delete"));
      return;
    }
    size_t c = 0;
    for (size_t i = 0; i < r->n_document_ids; i++)
      if (part[i] == p) ids[c++] = r->document_ids[i];
    sr->n_document_ids = c;
    sr->document_ids = ids;
    /* Slots of one partition are adjacent (delete_fanned relies on it). */
    for (int rr = 0; rr < co->cl.parts[p].n_replicas; rr++, s++) {
      f->slots[s].partition = p;
      f->slots[s].replica = rr;
      f->slots[s].fixed = 1;
      f->slots[s].req = &sr->base;
    }
  }
  fan_start(f);
}
